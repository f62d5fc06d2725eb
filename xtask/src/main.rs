//! Developer and CI tasks for timerwatch: `cargo xtask setup|test|run|dist|image|fuzz|bench`.
//!
//! Everything a newcomer (or CI) needs beyond stable Rust is installed by `setup`, so that
//! `cargo xtask test` on a fresh Debian machine is the whole story.

mod bpf_linker;
mod daemon_deps;
mod dist;
mod fuzz;
mod image;
mod run;
mod setup;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use xtask::util;

#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Developer tasks for timerwatch"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install or check the nightly toolchain, bpf-linker, Debian packages and tracefs (idempotent).
    Setup,
    /// Setup, fmt, clippy, unit tests, then the integration tests (root only).
    Test(test::Args),
    /// Build timerwatch and run it as root with the arguments after `--`.
    Run(run::Args),
    /// Build a release tarball under dist/.
    Dist,
    /// Fuzz every parser of target-controlled input with libFuzzer (fuzz/): seeds the corpora
    /// from real Go binaries and /proc files and runs each target for --time seconds.
    Fuzz(fuzz::Args),
    /// Build the node agent's image (static binary, FROM scratch) with buildah into the local
    /// store as localhost/timerwatch:VERSION; --oci-archive FILE also exports it.
    Image(image::Args),
    /// Measure timerwatch's costs against no tracing, empty BPF programs and bpftrace (root
    /// only); prints Markdown and rewrites BENCHMARKS.md's results. Runs the timerwatch-bench
    /// crate with the arguments after `bench` (`cargo xtask bench --help` lists them).
    #[command(disable_help_flag = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// The benchmark is its own crate; built in release like the timerwatch it measures.
fn bench(args: &[String]) -> anyhow::Result<()> {
    let mut cmd = util::cargo();
    cmd.args([
        "run",
        "--quiet",
        "--release",
        "-p",
        "timerwatch-bench",
        "--",
    ])
    .args(args);
    util::run(&mut cmd)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run(setup::Verbosity::Normal),
        // `test` prints its own failure details and must end with the summary line, so it decides
        // the exit code itself instead of going through the error report below.
        Command::Test(args) => return test::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Dist => dist::run(),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Image(args) => image::run(&args),
        Command::Bench { args } => bench(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
