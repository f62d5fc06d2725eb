//! `cargo xtask test`: the one command a newcomer and CI run.
//!
//! Steps run in a fixed order and stop at the first failure; the last line is always the
//! `xtask test: N steps passed, M failed` summary so CI logs end with the verdict.

use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::Result;

use crate::setup::{self, Verbosity};
use xtask::util::{self, cargo, is_root, workspace_root};

#[derive(clap::Args)]
pub struct Args {
    /// Skip the integration tests (which load BPF programs and need root).
    #[arg(long)]
    unit_only: bool,
    /// Extra `cargo test` arguments for every test step; a further `--` separates arguments
    /// for the test binaries, e.g. `cargo xtask test -- -- --nocapture`.
    #[arg(last = true)]
    extra: Vec<String>,
}

/// Returned by a failed step to stop the run; details are already printed.
struct Stop;

#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
}

impl Tally {
    fn step(&mut self, label: &str, f: impl FnOnce() -> Result<()>) -> Result<(), Stop> {
        println!("xtask test: ==> {label}");
        match f() {
            Ok(()) => {
                self.passed += 1;
                Ok(())
            }
            Err(e) => {
                self.failed += 1;
                eprintln!("xtask test: FAILED: {e:#}");
                Err(Stop)
            }
        }
    }

    fn command(&mut self, mut cmd: Command) -> Result<(), Stop> {
        self.step(&util::display(&cmd), || util::run(&mut cmd))
    }
}

pub fn run(args: &Args) -> ExitCode {
    let mut tally = Tally::default();
    let outcome = steps(args, &mut tally);
    println!(
        "xtask test: {} steps passed, {} failed",
        tally.passed, tally.failed
    );
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Stop) => ExitCode::FAILURE,
    }
}

fn steps(args: &Args, tally: &mut Tally) -> Result<(), Stop> {
    let (cargo_extra, bin_extra) = split_extra(&args.extra);
    let test = |fixed: &[&str], bin_fixed: &[&str]| {
        let mut cmd = cargo();
        cmd.arg("test").args(fixed).args(cargo_extra);
        // The Go end-to-end tests build their targets with every toolchain setup installed.
        cmd.env("TIMERWATCH_GO_ROOTS", go_roots());
        if !bin_fixed.is_empty() || !bin_extra.is_empty() {
            cmd.arg("--").args(bin_fixed).args(bin_extra);
        }
        cmd
    };

    tally.step("cargo xtask setup", || setup::run(Verbosity::Normal))?;
    tally.command(cargo_with(&["fmt", "--all", "--check"]))?;
    tally.command(cargo_with(&[
        "clippy",
        "--workspace",
        "--exclude",
        "timerwatch-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    tally.command(ebpf_clippy())?;
    tally.command(test(
        &[
            "-p",
            "timerwatch-common",
            "-p",
            "timerwatch-proc",
            "-p",
            "timerwatch-go",
            "-p",
            "xtask",
            "-p",
            "timerwatch-bench",
            // Replays every kept fuzz input (fuzz/regressions, fuzz/corpus) without the fuzzer.
            "-p",
            "timerwatch-fuzz",
        ],
        &[],
    ))?;
    tally.command(test(&["-p", "timerwatch", "--lib", "--bins"], &[]))?;
    // A short run of every fuzz target with coverage: new inputs, not just the kept ones.
    tally.step("cargo xtask fuzz --time 10", || {
        crate::fuzz::run(&crate::fuzz::Args::short(10))
    })?;

    if args.unit_only {
        println!("xtask test: --unit-only: skipping integration tests");
        return Ok(());
    }
    let tests_dir = workspace_root().join("timerwatch/tests");
    let names = integration_tests(&tests_dir);
    if names.is_empty() {
        println!(
            "xtask test: no integration tests in {}",
            tests_dir.display()
        );
        return Ok(());
    }
    if !is_root() {
        if util::in_ci() {
            return tally.step("integration tests", || {
                anyhow::bail!("CI=true but not root: the integration tests load BPF programs and must run as root")
            });
        }
        println!(
            "xtask test: skipping {} integration tests: they load BPF programs and need root (rerun as root, or use --unit-only to silence this)",
            names.len()
        );
        return Ok(());
    }
    for name in &names {
        // The BPF tests attach to the same kernel tracepoints and count events system-wide, so
        // parallel tests would see each other's workloads.
        // The growth corpora and the repeated run print their figures: show them even when
        // they pass.
        let bin_args: &[&str] =
            if ["corpus_e2e", "verdict_corpus", "repeat_e2e"].contains(&name.as_str()) {
                &["--test-threads=1", "--nocapture"]
            } else {
                &["--test-threads=1"]
            };
        tally.command(test(&["-p", "timerwatch", "--test", name], bin_args))?;
    }
    Ok(())
}

fn go_roots() -> std::ffi::OsString {
    std::env::join_paths(xtask::go_toolchains::roots()).unwrap_or_default()
}

/// The eBPF crate builds only for the BPF target with the nightly (as aya-build compiles it), so
/// the host clippy above cannot see it.
fn ebpf_clippy() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.current_dir(workspace_root()).args([
        "run",
        "nightly",
        "cargo",
        "clippy",
        "-p",
        "timerwatch-ebpf",
        "--release",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]);
    // Set when xtask itself runs under cargo; they would pin the stable compiler.
    cmd.env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    // aya-build passes the probed architecture this way; without it the x86_64-only code paths
    // would not be linted at all.
    cmd.env(
        "RUSTFLAGS",
        format!("--cfg=bpf_target_arch=\"{}\"", std::env::consts::ARCH),
    );
    cmd
}

fn cargo_with(args: &[&str]) -> Command {
    let mut cmd = cargo();
    cmd.args(args);
    cmd
}

/// `tests/*.rs` stems, sorted; `common` is a helper module shared by the tests, not a test.
fn integration_tests(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| {
            let path = e.ok()?.path();
            if !path.is_file() || path.extension()? != "rs" {
                return None;
            }
            Some(path.file_stem()?.to_str()?.to_owned())
        })
        .filter(|name| name != "common")
        .collect();
    names.sort();
    names
}

/// Splits at the first `--`: before it go to cargo, after it to the test binaries.
fn split_extra(extra: &[String]) -> (&[String], &[String]) {
    match extra.iter().position(|a| a == "--") {
        Some(i) => (&extra[..i], &extra[i + 1..]),
        None => (extra, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_args_keep_a_second_double_dash() {
        use clap::Parser;
        let argv = [
            "xtask",
            "test",
            "--unit-only",
            "--",
            "--release",
            "--",
            "--nocapture",
        ];
        let crate::Command::Test(args) = crate::Cli::try_parse_from(argv).unwrap().command else {
            panic!("not parsed as test");
        };
        assert!(args.unit_only);
        assert_eq!(args.extra, ["--release", "--", "--nocapture"]);
    }

    #[test]
    fn split_extra_at_first_double_dash() {
        let v: Vec<String> = ["--release", "--", "--nocapture", "--", "x"]
            .map(String::from)
            .to_vec();
        let (cargo, bin) = split_extra(&v);
        assert_eq!(cargo, ["--release"]);
        assert_eq!(bin, ["--nocapture", "--", "x"]);
        let v: Vec<String> = vec!["name_filter".into()];
        assert_eq!(split_extra(&v), (&v[..], &[][..]));
    }

    #[test]
    fn discovers_rs_files_but_not_common() {
        let dir = std::env::temp_dir().join(format!("xtask-discover-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("common")).unwrap();
        std::fs::create_dir_all(dir.join("targets")).unwrap();
        for f in ["zeta.rs", "alpha.rs", "common.rs", "notes.md"] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        let names = integration_tests(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(names, ["alpha", "zeta"]);
    }
}
