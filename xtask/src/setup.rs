//! `cargo xtask setup`: make this machine able to build and test timerwatch.
//!
//! Every check prints one `setup: …` line; every action is announced before it starts. Nothing is
//! done when everything is already in place, so callers (`test`, `run`) can always call this.

use std::io::ErrorKind;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};

use crate::util::{self, is_root};
use crate::{bpf_linker, go_toolchains};

/// Debian packages the integration tests and benchmarks use; gcc/libc6-dev are also what
/// `cargo install bpf-linker` links with, which is why packages are handled first. musl-tools
/// links the static binary of `cargo xtask image`; buildah builds the image and podman runs it
/// (with runc: crun refuses hosts with hybrid cgroups) in the image test.
const PACKAGES: &[&str] = &[
    "bpftool",
    "bpftrace",
    "buildah",
    "gcc",
    "libc6-dev",
    "linux-perf",
    "musl-tools",
    "podman",
    "runc",
    "util-linux",
];

const TRACEFS: &str = "/sys/kernel/tracing";

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    Normal,
    /// Only actions and warnings: `run` should not bury the tool's output under "ok" lines.
    Quiet,
}

pub struct Report(Verbosity);

impl Report {
    pub fn ok(&self, msg: &str) {
        if self.0 == Verbosity::Normal {
            println!("setup: {msg}");
        }
    }

    pub fn action(&self, msg: &str) {
        println!("setup: {msg}");
    }

    pub fn warn(&self, msg: &str) {
        eprintln!("setup: warning: {msg}");
    }
}

pub fn run(verbosity: Verbosity) -> Result<()> {
    let report = Report(verbosity);
    packages(&report)?;
    tracefs(&report)?;
    let nightly = bpf_linker::nightly(&report)?;
    bpf_linker::bpf_linker(&report, &nightly)?;
    go_toolchains::install(&report)?;
    crate::daemon_deps::install(&report)?;
    Ok(())
}

pub fn installed(package: &str) -> Result<bool> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stderr(std::process::Stdio::null())
        .output()?;
    // An unknown package makes dpkg-query exit non-zero: that is just "not installed".
    Ok(out.status.success() && out.stdout == b"install ok installed")
}

fn packages(report: &Report) -> Result<()> {
    if util::which("dpkg-query").is_none() {
        report.warn(&format!(
            "dpkg-query not found (not Debian-based?): make sure these are installed: {}",
            PACKAGES.join(" ")
        ));
        return Ok(());
    }
    let mut missing = Vec::new();
    for package in PACKAGES {
        if !installed(package)? {
            missing.push(*package);
        }
    }
    if missing.is_empty() {
        report.ok(&format!("Debian packages ok ({})", PACKAGES.join(", ")));
        return Ok(());
    }
    let list = missing.join(" ");
    if !is_root() {
        bail!(
            "missing Debian packages: {list}; install them as root with:\n  \
             apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y {list}"
        );
    }
    report.action(&format!("installing Debian packages: {list}"));
    apt_install(&missing)?;
    report.ok(&format!("Debian packages installed ({list})"));
    Ok(())
}

/// `apt-get update` and a non-interactive install of `packages` (as root), then a check that
/// dpkg really has them.
pub fn apt_install(packages: &[&str]) -> Result<()> {
    util::run(Command::new("apt-get").arg("update"))?;
    util::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y"])
            .args(packages),
    )?;
    let still: Vec<_> = packages
        .iter()
        .filter(|p| !installed(p).unwrap_or(false))
        .collect();
    if !still.is_empty() {
        bail!("apt-get reported success but these are still not installed: {still:?}");
    }
    Ok(())
}

fn tracefs(report: &Report) -> Result<()> {
    let events = Path::new(TRACEFS).join("events");
    match std::fs::metadata(&events) {
        Ok(_) => report.ok(&format!("tracefs mounted at {TRACEFS}")),
        // tracefs is root-only (mode 0700): a normal user cannot tell whether it is mounted. Only
        // root-run things (the tool, integration tests) read it, and the tool mounts it itself.
        Err(e) if e.kind() == ErrorKind::PermissionDenied => report.ok(&format!(
            "tracefs at {TRACEFS} not readable as non-root (only root needs it)"
        )),
        Err(_) if !is_root() => report.warn(&format!(
            "tracefs is not mounted; as root run: mount -t tracefs nodev {TRACEFS} \
             (timerwatch also does this itself when it starts)"
        )),
        Err(_) => {
            report.action(&format!("mounting tracefs at {TRACEFS}"));
            util::run(Command::new("mount").args(["-t", "tracefs", "nodev", TRACEFS]))?;
            if !events.exists() {
                bail!("mounted tracefs but {} is still missing", events.display());
            }
            report.ok(&format!("tracefs mounted at {TRACEFS}"));
        }
    }
    Ok(())
}
