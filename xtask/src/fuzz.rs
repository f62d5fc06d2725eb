//! `cargo xtask fuzz [--time S] [TARGET…]`: build the fuzz targets (fuzz/, cargo-fuzz layout)
//! with libFuzzer's coverage instrumentation on the nightly, seed their corpora from real
//! inputs (Go binaries of every installed toolchain and their sections, this machine's `/proc`
//! files) and run each for S seconds. Bounds checked on top of "no panic": libFuzzer's RSS
//! and per-allocation limits (an allocation sized by a length read from the input fails the
//! run) and a per-input timeout (a loop without a bound does).
//!
//! What cargo-fuzz would do, without having to install it; `cargo fuzz run NAME` works too.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use xtask::util::{self, workspace_root};

#[derive(clap::Args)]
pub struct Args {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    time: u64,
    /// Targets to run (default: all of them).
    targets: Vec<String>,
}

impl Args {
    /// Every target for `secs` seconds, as `cargo xtask test` runs them.
    pub fn short(secs: u64) -> Args {
        Args {
            time: secs,
            targets: Vec::new(),
        }
    }
}

/// The names of fuzz/fuzz_targets/*.rs.
fn all_targets(fuzz: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(fuzz.join("fuzz_targets"))?
        .filter_map(|e| {
            let path = e.ok()?.path();
            (path.extension()? == "rs").then(|| path.file_stem()?.to_str().map(String::from))?
        })
        .collect();
    names.sort();
    Ok(names)
}

/// cargo-fuzz's instrumentation, without AddressSanitizer: the parsers are safe Rust, so
/// what a run looks for is panics, timeouts and allocations, which need no sanitizer.
const SANCOV: &[&str] = &[
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "--cfg=fuzzing",
    "-Cdebug-assertions",
    "-Coverflow-checks",
];

fn build(targets: &[String]) -> Result<PathBuf> {
    let triple = "x86_64-unknown-linux-gnu";
    let mut cmd = Command::new("rustup");
    cmd.current_dir(workspace_root())
        .args([
            "run",
            "nightly",
            "cargo",
            "build",
            "--release",
            "-p",
            "timerwatch-fuzz",
        ])
        .args(["--target", triple])
        // Its own directory: instrumented artifacts must not replace the normal ones.
        .args(["--target-dir", "target/fuzz"]);
    for t in targets {
        cmd.args(["--bin", t]);
    }
    // With an explicit --target, RUSTFLAGS reach only the target's crates, not build scripts
    // (and aya-build sets its own flags for the nested eBPF build).
    cmd.env("RUSTFLAGS", SANCOV.join(" "))
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    util::run(&mut cmd)?;
    Ok(workspace_root()
        .join("target/fuzz")
        .join(triple)
        .join("release"))
}

/// Copies `src` into `dir` under `name` unless a seed of that name is there already.
fn seed(dir: &Path, name: &str, data: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    if !path.exists() {
        std::fs::write(&path, data)?;
    }
    Ok(())
}

/// One section's bytes, by objcopy.
fn section(binary: &Path, name: &str) -> Option<Vec<u8>> {
    let out = binary.with_extension("section");
    let ok = Command::new("objcopy")
        .args(["-O", "binary", &format!("--only-section={name}")])
        .arg(binary)
        .arg(&out)
        .status()
        .is_ok_and(|s| s.success());
    let data = std::fs::read(&out).ok()?;
    (ok && !data.is_empty()).then_some(data)
}

const GO_SEED: &str = "package main\n\nimport (\n\t\"fmt\"\n\t\"time\"\n)\n\nfunc main() {\n\tt := time.AfterFunc(time.Hour, func() {})\n\tfmt.Println(t.Stop())\n}\n";

/// Small Go programs built with every installed toolchain, stripped and not: the inputs the
/// binary parsers see in production.
fn seed_go(corpus: &Path) -> Result<()> {
    let work = util::target_dir().join("fuzz-seed");
    std::fs::create_dir_all(&work)?;
    std::fs::write(work.join("main.go"), GO_SEED)?;
    for root in xtask::go_toolchains::roots() {
        let version = std::fs::read_to_string(root.join("VERSION"))
            .ok()
            .and_then(|v| v.lines().next().map(String::from))
            .unwrap_or_else(|| "go".into());
        for (suffix, ldflags) in [("", ""), ("-stripped", "-s -w")] {
            let out = work.join(format!("{version}{suffix}.bin"));
            let status = Command::new(root.join("bin/go"))
                .current_dir(&work)
                .args(["build", "-trimpath", "-ldflags", ldflags, "-o"])
                .arg(&out)
                .arg("main.go")
                .env("GOROOT", &root)
                .env("GOCACHE", work.join("cache"))
                .env("GO111MODULE", "off")
                .env("GOTOOLCHAIN", "local")
                .status()?;
            if !status.success() {
                continue;
            }
            let name = format!("{version}{suffix}");
            seed(&corpus.join("go_binary"), &name, &std::fs::read(&out)?)?;
            if let Some(tab) = section(&out, ".gopclntab") {
                seed(&corpus.join("pclntab"), &name, &tab)?;
            }
            if let Some(info) = section(&out, ".go.buildinfo") {
                seed(&corpus.join("buildinfo"), &name, &info)?;
            }
            if let Some(text) = section(&out, ".text") {
                seed(
                    &corpus.join("x86"),
                    &name,
                    &text[..text.len().min(64 * 1024)],
                )?;
            }
        }
    }
    Ok(())
}

fn seed_proc(corpus: &Path) -> Result<()> {
    seed(
        &corpus.join("proc_maps"),
        "self",
        &std::fs::read("/proc/self/maps")?,
    )?;
    for file in ["status", "cgroup", "timers"] {
        if let Ok(data) = std::fs::read(format!("/proc/self/{file}")) {
            seed(&corpus.join("proc_text"), file, &data)?;
        }
    }
    Ok(())
}

pub fn run(args: &Args) -> Result<()> {
    let fuzz = workspace_root().join("fuzz");
    let known = all_targets(&fuzz)?;
    let targets = if args.targets.is_empty() {
        known.clone()
    } else {
        args.targets.clone()
    };
    if let Some(bad) = targets.iter().find(|t| !known.contains(t)) {
        bail!("no fuzz target {bad:?}; there are: {}", known.join(", "));
    }
    let bin_dir = build(&targets)?;
    let corpus = fuzz.join("corpus");
    seed_go(&corpus).context("seeding the corpus with Go binaries")?;
    seed_proc(&corpus)?;
    let mut failed = Vec::new();
    for t in &targets {
        let corpus_dir = corpus.join(t);
        let artifacts = fuzz.join("artifacts").join(t);
        std::fs::create_dir_all(&corpus_dir)?;
        std::fs::create_dir_all(&artifacts)?;
        println!("xtask fuzz: {t} for {} s", args.time);
        let mut cmd = Command::new(bin_dir.join(t));
        cmd.arg(&corpus_dir)
            .arg(fuzz.join("regressions").join(t))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg(format!("-max_total_time={}", args.time))
            // An input whose handling takes a second has a loop without a bound.
            .arg("-timeout=2")
            // 512 MiB in all and 64 MiB in one allocation: far above what the largest real
            // binary needs, far below what an unchecked length would ask for.
            .arg("-rss_limit_mb=512")
            .arg("-malloc_limit_mb=64")
            .arg("-max_len=4194304")
            .arg("-print_final_stats=1");
        if util::run(&mut cmd).is_err() {
            failed.push(t.clone());
        }
    }
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed: {} (inputs under fuzz/artifacts/; copy them to \
             fuzz/regressions/<target>/ once fixed, so the replay test keeps them)",
            failed.join(", ")
        );
    }
    Ok(())
}
