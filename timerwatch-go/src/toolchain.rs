//! Installed Go toolchains, for the tests that build Go programs (this crate's and the
//! end-to-end tests'): one finder, so every test run means the same toolchains.
//!
//! Toolchains come from `TIMERWATCH_GO_ROOTS` (GOROOTs in `PATH` syntax, set by
//! `cargo xtask test`), else from the usual local installs (/usr/lib/go-1.*, /tmp/go1.*/go,
//! the `~/.cache/timerwatch/go-1.*/go` that `cargo xtask setup` installs, /usr/local/go). One
//! toolchain per minor release is kept (the newest patch), so a machine with many patch
//! releases does not multiply build times; releases timerwatch does not support are skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::version::GoVersion;

#[derive(Clone, Debug)]
pub struct Toolchain {
    pub goroot: PathBuf,
    pub version: GoVersion,
    /// As the toolchain spells it (its VERSION file), e.g. "go1.22.10": what it records in the
    /// binaries it builds.
    pub version_string: String,
}

fn version_of(goroot: &Path) -> Option<(GoVersion, String)> {
    let text = std::fs::read_to_string(goroot.join("VERSION"))
        .ok()
        .or_else(|| {
            let out = Command::new(goroot.join("bin/go"))
                .args(["env", "GOVERSION"])
                .env("GOTOOLCHAIN", "local")
                .output()
                .ok()?;
            String::from_utf8(out.stdout).ok()
        })?;
    let line = text.lines().next()?.trim();
    Some((GoVersion::parse(line)?, line.to_owned()))
}

fn candidate_roots() -> Vec<PathBuf> {
    if let Some(roots) = std::env::var_os("TIMERWATCH_GO_ROOTS").filter(|r| !r.is_empty()) {
        return std::env::split_paths(&roots)
            .filter(|r| !r.as_os_str().is_empty())
            .collect();
    }
    let mut out = Vec::new();
    let xtask_cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .map(|c| c.join("timerwatch"));
    let mut places = vec![
        (PathBuf::from("/usr/lib"), "go-1.", ""),
        (PathBuf::from("/tmp"), "go1.", "go"),
    ];
    places.extend(xtask_cache.map(|c| (c, "go-1.", "go")));
    for (dir, prefix, sub) in places {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mut found: Vec<PathBuf> = entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .map(|e| e.path().join(sub))
                .collect();
            found.sort();
            out.extend(found);
        }
    }
    out.push(PathBuf::from("/usr/local/go"));
    out
}

/// Supported toolchains found now, oldest minor release first.
pub fn installed() -> Vec<Toolchain> {
    let mut by_minor: BTreeMap<u32, Toolchain> = BTreeMap::new();
    for goroot in candidate_roots() {
        if !goroot.join("bin/go").is_file() {
            continue;
        }
        let Some((version, version_string)) = version_of(&goroot) else {
            continue;
        };
        if !version.is_supported() {
            continue;
        }
        if by_minor
            .get(&version.minor)
            .is_none_or(|t| t.version < version)
        {
            by_minor.insert(
                version.minor,
                Toolchain {
                    goroot,
                    version,
                    version_string,
                },
            );
        }
    }
    by_minor.into_values().collect()
}
