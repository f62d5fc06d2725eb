//! `cargo xtask run -- ARGS…`: build timerwatch and become it, as root.

use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::{bail, Result};

use crate::setup::{self, Purpose, Verbosity};
use xtask::util::{self, cargo, is_root, target_dir};

#[derive(clap::Args)]
pub struct Args {
    /// Build with the release profile (`--release false` for a debug build).
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    release: bool,
    /// Arguments for timerwatch.
    #[arg(last = true)]
    args: Vec<String>,
}

pub fn run(args: &Args) -> Result<()> {
    // Only what running needs: the test tools come with `cargo xtask test` or `setup`.
    setup::install(Verbosity::Quiet, Purpose::Run)?;
    let mut build = cargo();
    build.args(["build", "-p", "timerwatch"]);
    if args.release {
        build.arg("--release");
    }
    util::run(&mut build)?;

    let binary = target_dir()
        .join(if args.release { "release" } else { "debug" })
        .join("timerwatch");
    // Build as the invoking user (so target/ stays theirs) and elevate only the tool itself.
    let mut cmd = if is_root() {
        Command::new(&binary)
    } else if let Some(sudo) = util::which("sudo") {
        eprintln!("xtask run: timerwatch needs root; running it through sudo -E");
        let mut cmd = Command::new(sudo);
        cmd.arg("-E").arg(&binary);
        cmd
    } else {
        bail!(
            "timerwatch needs root (it loads BPF programs) and sudo is not installed; as root run: {} {}",
            binary.display(),
            args.args.join(" ")
        );
    };
    cmd.args(&args.args);
    // exec, not spawn: Ctrl-C and the exit status then belong to timerwatch alone.
    let err = cmd.exec();
    bail!("cannot exec `{}`: {err}", util::display(&cmd))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    fn parse(argv: &[&str]) -> super::Args {
        match crate::Cli::try_parse_from(argv).unwrap().command {
            crate::Command::Run(args) => args,
            _ => panic!("not parsed as run"),
        }
    }

    #[test]
    fn release_defaults_to_true() {
        let args = parse(&["xtask", "run", "--", "top", "--pid", "1"]);
        assert!(args.release);
        assert_eq!(args.args, ["top", "--pid", "1"]);
        assert!(parse(&["xtask", "run", "--release"]).release);
        assert!(!parse(&["xtask", "run", "--release", "false", "--", "x"]).release);
        assert!(!parse(&["xtask", "run", "--release=false"]).release);
    }
}
