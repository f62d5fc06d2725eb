//! What every installer of `setup` shares: how it reports, and how it installs Debian packages.
//! Kept apart from `setup` so the installers it calls do not import it back.

use std::process::Command;

use anyhow::{bail, Result};

use crate::util;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    Normal,
    /// Only actions and warnings: `run` should not bury the tool's output under "ok" lines.
    Quiet,
}

pub struct Report(Verbosity);

impl Report {
    pub fn new(verbosity: Verbosity) -> Self {
        Self(verbosity)
    }

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

pub fn installed(package: &str) -> Result<bool> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stderr(std::process::Stdio::null())
        .output()?;
    // An unknown package makes dpkg-query exit non-zero: that is just "not installed".
    Ok(out.status.success() && out.stdout == b"install ok installed")
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
