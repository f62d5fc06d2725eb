//! What the daemon's end-to-end tests need beyond the tracing tests: a real Prometheus server
//! (Debian `prometheus`) that scrapes the daemon, and `kubernetes-validate` (PyPI, with the
//! Kubernetes JSON schemas bundled, so validation works offline) for the manifests in deploy/.
//!
//! `kubernetes-validate` goes under `~/.cache/timerwatch/kubernetes-validate-<version>` with
//! `pip --target`, touching nothing system-wide; timerwatch/tests/common/daemon.rs looks for it
//! there.

use std::path::PathBuf;

use anyhow::{bail, Result};

use xtask::install::{self, Report};
use xtask::util::{self, is_root};

const PROMETHEUS: &str = "prometheus";

/// Pinned so the schemas (and the test's verdict) do not change under us.
pub const KUBERNETES_VALIDATE: &str = "1.37.0";

fn validator_dir() -> PathBuf {
    util::cache_dir().join(format!("kubernetes-validate-{KUBERNETES_VALIDATE}"))
}

pub fn install(report: &Report) -> Result<()> {
    prometheus(report)?;
    kubernetes_validate(report)
}

fn prometheus(report: &Report) -> Result<()> {
    if install::installed(PROMETHEUS)? {
        report.ok("Prometheus ok (Debian prometheus)");
        return Ok(());
    }
    if util::which("apt-get").is_none() || !is_root() {
        // Like the tracing tests, the daemon tests need root: without it they skip anyway.
        report.warn(&format!(
            "Debian package {PROMETHEUS} missing (the daemon tests scrape with it); as root run: \
             apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y {PROMETHEUS}"
        ));
        return Ok(());
    }
    report.action("installing Prometheus (Debian prometheus)");
    install::apt_install(&[PROMETHEUS])?;
    report.ok("Prometheus installed");
    Ok(())
}

fn kubernetes_validate(report: &Report) -> Result<()> {
    let target = validator_dir();
    if target.join("kubernetes_validate").is_dir() {
        report.ok(&format!("kubernetes-validate ok ({})", target.display()));
        return Ok(());
    }
    let Some(python) = util::python() else {
        report.warn("no python3 to install kubernetes-validate with (the manifest test needs it)");
        return Ok(());
    };
    report.action(&format!(
        "installing kubernetes-validate {KUBERNETES_VALIDATE} (PyPI) into {}",
        target.display()
    ));
    util::pip_install_target(
        &python,
        &target,
        &format!("kubernetes-validate=={KUBERNETES_VALIDATE}"),
    )?;
    if !target.join("kubernetes_validate").is_dir() {
        bail!(
            "pip installed kubernetes-validate but {} has no kubernetes_validate package",
            target.display()
        );
    }
    report.ok("kubernetes-validate installed");
    Ok(())
}
