//! `cargo xtask setup`: make this machine able to build and test timerwatch.
//!
//! Every check prints one `setup: …` line; every action is announced before it starts. Nothing is
//! done when everything is already in place, so callers (`test`, `run`) can always call this.

use std::io::ErrorKind;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};

use crate::bpf_linker;
use xtask::go_toolchains;
pub use xtask::install::Verbosity;
use xtask::install::{apt_install, installed, Report};
use xtask::util::{self, is_root};

/// Debian packages the integration tests and benchmarks use; gcc/libc6-dev are also what
/// `cargo install bpf-linker` links with, which is why packages are handled first. musl-tools
/// links the static binary of `cargo xtask image`; buildah builds the image and podman runs it
/// (with runc: crun refuses hosts with hybrid cgroups) in the image test. debuginfod serves
/// split debug files to the symbols test. prometheus-node-exporter is a Go server no one here
/// wrote, stripped, that the Go servers test watches under load (Prometheus itself is the other).
/// nginx-light, redis-server and memcached are the real servers of the node-agent bench's load.
const PACKAGES: &[&str] = &[
    "bpftool",
    "bpftrace",
    "buildah",
    "debuginfod",
    "gcc",
    "libc6-dev",
    "linux-perf",
    "memcached",
    "musl-tools",
    "nginx-light",
    "podman",
    "prometheus-node-exporter",
    "redis-server",
    "runc",
    "util-linux",
];

/// What building and running the tool needs of `PACKAGES`: a C toolchain for the linker
/// (Rust's and bpf-linker's). `cargo xtask run` installs only these.
const RUN_PACKAGES: &[&str] = &["gcc", "libc6-dev"];

const TRACEFS: &str = "/sys/kernel/tracing";

/// What a caller is about to do, and so what it needs installed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Purpose {
    /// Build and run the tool: toolchains, bpf-linker, tracefs. No test-only tools (Go
    /// toolchains, Prometheus, kubernetes-validate, bpftrace…): on a fresh machine they took
    /// most of `run`'s first five minutes.
    Run,
    /// Build, run, test and benchmark: everything.
    Everything,
}

/// Everything (`cargo xtask setup`, `cargo xtask test`).
pub fn run(verbosity: Verbosity) -> Result<()> {
    install(verbosity, Purpose::Everything)
}

pub fn install(verbosity: Verbosity, purpose: Purpose) -> Result<()> {
    let report = Report::new(verbosity);
    packages(&report, packages_for(purpose))?;
    tracefs(&report)?;
    let nightly = bpf_linker::nightly(&report)?;
    bpf_linker::bpf_linker(&report, &nightly)?;
    if purpose == Purpose::Everything {
        go_toolchains::install(&report)?;
        crate::daemon_deps::install(&report)?;
    }
    Ok(())
}

fn packages_for(purpose: Purpose) -> &'static [&'static str] {
    match purpose {
        Purpose::Run => RUN_PACKAGES,
        Purpose::Everything => PACKAGES,
    }
}

fn packages(report: &Report, packages: &[&str]) -> Result<()> {
    if util::which("dpkg-query").is_none() {
        report.warn(&format!(
            "dpkg-query not found (not Debian-based?): make sure these are installed: {}",
            packages.join(" ")
        ));
        return Ok(());
    }
    let mut missing = Vec::new();
    for package in packages {
        if !installed(package)? {
            missing.push(*package);
        }
    }
    if missing.is_empty() {
        report.ok(&format!("Debian packages ok ({})", packages.join(", ")));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_needs_a_subset_of_everything() {
        let all = packages_for(Purpose::Everything);
        let run = packages_for(Purpose::Run);
        assert!(run.iter().all(|p| all.contains(p)));
        assert!(run.len() < all.len());
        assert!(!run.contains(&"bpftrace"));
    }
}
