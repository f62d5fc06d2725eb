//! Process and path helpers shared by the subcommands.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

pub fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // Canonical so paths we bake into artifacts (bpf-linker's RUNPATH) carry no `..`.
    root.canonicalize().unwrap_or(root)
}

pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// The cargo that is running us, so nested builds use the same toolchain as `cargo xtask`.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Shell-like rendering, for progress and error lines.
pub fn display(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program());
    // `CARGO` is a full toolchain path; the short name is what people would type.
    let program = match program.file_name() {
        Some(name) if name == "cargo" => OsStr::new("cargo"),
        _ => program.as_os_str(),
    };
    std::iter::once(program)
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs with inherited stdio and fails on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{}`", display(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", display(cmd));
    }
    Ok(())
}

/// Runs and returns stdout; stderr passes through so the user sees why it failed.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start `{}`", display(cmd)))?;
    if !out.status.success() {
        bail!("`{}` failed ({})", display(cmd), out.status);
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{}` printed non-UTF-8", display(cmd)))
}

pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

pub fn is_root() -> bool {
    // /proc/self/status gives the effective uid without pulling in libc for geteuid().
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| effective_uid(&s))
        .is_some_and(|uid| uid == 0)
}

fn effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `~/.cache/timerwatch` (or under `$XDG_CACHE_HOME`): what setup installs outside the system.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("timerwatch")
}

pub fn python() -> Option<PathBuf> {
    ["python3", "python"].into_iter().find_map(which)
}

/// `pip install --target DIR REQUIREMENT` from scratch: touches nothing system-wide.
pub fn pip_install_target(python: &Path, target: &Path, requirement: &str) -> Result<()> {
    // A half-finished earlier install would make pip refuse or mix versions.
    let _ = std::fs::remove_dir_all(target);
    run(Command::new(python)
        // A --target install touches nothing system-wide: pip's warning for root is noise.
        .env("PIP_ROOT_USER_ACTION", "ignore")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg("--target")
        .arg(target)
        .arg(requirement))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_uid_is_second_field() {
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Name:\tx\n"), None);
    }

    #[test]
    fn display_shortens_cargo_path() {
        let mut cmd = Command::new("/opt/rust/bin/cargo");
        cmd.args(["test", "-p", "xtask"]);
        assert_eq!(display(&cmd), "cargo test -p xtask");
    }
}
