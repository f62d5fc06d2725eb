//! `cargo xtask dist`: a release tarball a user can unpack and run.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::{self, cargo, target_dir, workspace_root};

pub fn run() -> Result<()> {
    util::run(cargo().args(["build", "--release", "-p", "timerwatch"]))?;
    let root = workspace_root();
    let pkgid = util::output(cargo().args(["pkgid", "-p", "timerwatch"]))?;
    let version = pkgid_version(&pkgid)
        .with_context(|| format!("no version in `cargo pkgid` output {pkgid:?}"))?;
    let name = format!("timerwatch-{version}-{}-linux", std::env::consts::ARCH);

    let dist = root.join("dist");
    let stage = dist.join(&name);
    if stage.exists() {
        std::fs::remove_dir_all(&stage)?;
    }
    std::fs::create_dir_all(&stage)?;
    copy(&target_dir().join("release/timerwatch"), &stage)?;
    let readme = root.join("README.md");
    if !readme.is_file() {
        bail!(
            "{} is missing; the tarball must explain how to use the tool",
            readme.display()
        );
    }
    copy(&readme, &stage)?;
    // The crates are dual-licensed, so there may be several LICENSE-* files, or none yet.
    let mut licenses: Vec<_> = std::fs::read_dir(&root)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("LICENSE"))
        })
        .collect();
    licenses.sort();
    for license in &licenses {
        copy(license, &stage)?;
    }

    let tarball = dist.join(format!("{name}.tar.gz"));
    // Fixed owner so the archive does not leak the builder's uid/user name.
    let tar = util::run(
        Command::new("tar")
            .args(["--owner=0", "--group=0", "--numeric-owner", "-czf"])
            .arg(&tarball)
            .arg("-C")
            .arg(&dist)
            .arg(&name),
    );
    std::fs::remove_dir_all(&stage)?;
    tar?;
    println!("{}", tarball.display());
    Ok(())
}

fn copy(file: &Path, dir: &Path) -> Result<()> {
    let dest = dir.join(file.file_name().context("file without a name")?);
    std::fs::copy(file, &dest)
        .with_context(|| format!("cannot copy {} to {}", file.display(), dest.display()))?;
    Ok(())
}

/// `path+file:///…/timerwatch#0.1.0` or, when the name differs from the directory,
/// `…#timerwatch@0.1.0`.
pub fn pkgid_version(pkgid: &str) -> Option<&str> {
    let fragment = pkgid.trim().rsplit_once('#')?.1;
    let version = fragment.rsplit_once('@').map_or(fragment, |(_, v)| v);
    (!version.is_empty()).then_some(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkgid_versions() {
        assert_eq!(
            pkgid_version("path+file:///work/main/timerwatch#0.1.0\n"),
            Some("0.1.0")
        );
        assert_eq!(
            pkgid_version("path+file:///x/tw#timerwatch@1.2.3"),
            Some("1.2.3")
        );
        assert_eq!(pkgid_version("garbage"), None);
    }
}
