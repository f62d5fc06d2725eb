//! The nightly toolchain and a bpf-linker that shares its LLVM.
//!
//! timerwatch/build.rs (aya-build) compiles the eBPF crate with `rustup run nightly cargo … -Z
//! build-std=core`; rustc hands bpf-linker LLVM bitcode, which only an LLVM of the same major
//! version reads reliably. So bpf-linker is linked against the nightly's own libLLVM, found at run
//! time: a nightly update changes the soname, and the stamp then triggers a rebuild.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use xtask::install::Report;
use xtask::util;

/// LLVM majors bpf-linker has `llvm-N` features for; anything else is tried but probably fails.
const SUPPORTED_LLVM: &[u32] = &[21, 22, 23];

pub struct Nightly {
    release: String,
    llvm_version: String,
    llvm_major: u32,
    lib_dir: PathBuf,
    /// e.g. `libLLVM.so.22.1-rust-1.97.0-nightly`; file name and SONAME are the same.
    soname: String,
}

pub fn nightly(report: &Report) -> Result<Nightly> {
    if util::which("rustup").is_none() {
        bail!("rustup not found on PATH: the eBPF build needs `rustup run nightly`");
    }
    let toolchains = util::output(Command::new("rustup").args(["toolchain", "list"]))?;
    if !has_nightly(&toolchains) {
        report.action("installing the nightly toolchain with rust-src (eBPF build)");
        util::run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
        report.warn(&format!(
            "bpf-linker must support this nightly's LLVM (it has features for LLVM {})",
            supported_list()
        ));
    } else {
        let components = util::output(Command::new("rustup").args([
            "component",
            "list",
            "--toolchain",
            "nightly",
            "--installed",
        ]))?;
        if !components.lines().any(|l| l.trim() == "rust-src") {
            report
                .action("adding rust-src to the nightly toolchain (needed for -Z build-std=core)");
            util::run(Command::new("rustup").args([
                "component",
                "add",
                "rust-src",
                "--toolchain",
                "nightly",
            ]))?;
        }
    }

    let vv = util::output(Command::new("rustup").args(["run", "nightly", "rustc", "-vV"]))?;
    let release = field(&vv, "release").context("`rustc +nightly -vV` has no release line")?;
    let llvm_version =
        field(&vv, "LLVM version").context("`rustc +nightly -vV` has no LLVM version line")?;
    let llvm_major =
        major(&llvm_version).with_context(|| format!("odd LLVM version {llvm_version:?}"))?;
    let sysroot = util::output(
        Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]),
    )?;
    let lib_dir = Path::new(sysroot.trim()).join("lib");
    let names = std::fs::read_dir(&lib_dir)
        .with_context(|| format!("cannot list {}", lib_dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok());
    let soname = pick_soname(names, llvm_major).with_context(|| {
        format!(
            "no libLLVM.so.{llvm_major}.* in {} (nightly {release})",
            lib_dir.display()
        )
    })?;
    report.ok(&format!(
        "nightly toolchain {release} (LLVM {llvm_version}) with rust-src ok"
    ));
    if !SUPPORTED_LLVM.contains(&llvm_major) {
        report.warn(&format!(
            "nightly {release} uses LLVM {llvm_major}; bpf-linker has features only for LLVM {}",
            supported_list()
        ));
    }
    Ok(Nightly {
        release,
        llvm_version,
        llvm_major,
        lib_dir,
        soname,
    })
}

fn cargo_home() -> std::path::PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(Into::into)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cargo")))
        .unwrap_or_else(|| "/root/.cargo".into())
}

pub fn bpf_linker(report: &Report, nightly: &Nightly) -> Result<()> {
    // bpf-linker is installed once per machine (into CARGO_HOME/bin), so the prefix it keeps as
    // its RUNPATH and the stamp live beside it, not in one checkout's target/: a second clone
    // (CI's) must not trigger a rebuild or leave the binary pointing into a deleted tree.
    let xtask_dir = cargo_home().join("timerwatch-xtask");
    std::fs::create_dir_all(&xtask_dir)
        .with_context(|| format!("cannot create {}", xtask_dir.display()))?;
    let prefix = xtask_dir.join("llvm-prefix");
    // Recreated on every run, so a removed prefix makes the binary loadable again without a
    // rebuild.
    make_prefix(&prefix, nightly)?;
    let stamp = xtask_dir.join("bpf-linker.stamp");
    let stamped = std::fs::read_to_string(&stamp)
        .ok()
        .map(|s| s.trim().to_owned());

    let rebuild_reason = match util::which("bpf-linker") {
        None => Some("it is not on PATH".to_owned()),
        Some(path) => match version(&path) {
            Err(e) => Some(format!("{} does not run: {e:#}", path.display())),
            Ok(v) => match (linked_llvm(&path), &stamped) {
                (Some(linked), _) if linked != nightly.soname => {
                    Some(format!("it is linked against {linked}"))
                }
                (_, Some(s)) if *s != nightly.soname => Some(format!("it was built for {s}")),
                (_, Some(_)) => {
                    report.ok(&format!("{v} already built for {}", nightly.soname));
                    None
                }
                // Installed before this stamp existed (or `cargo clean` removed it); it runs and
                // is not linked against another libLLVM, so adopt it.
                (_, None) => {
                    write_stamp(&stamp, &nightly.soname)?;
                    report.ok(&format!(
                        "{v} already built for {} (stamp recorded)",
                        nightly.soname
                    ));
                    None
                }
            },
        },
    };
    let Some(reason) = rebuild_reason else {
        return Ok(());
    };

    report.action(&format!(
        "installing bpf-linker for {} (LLVM {}, nightly {}) because {reason}; this takes a minute or two",
        nightly.soname, nightly.llvm_version, nightly.release
    ));
    // --force: the same bpf-linker version may already be installed, built against another LLVM.
    util::run(
        util::cargo()
            .args([
                "install",
                "bpf-linker",
                "--force",
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{}", nightly.llvm_major))
            .env("LLVM_PREFIX", &prefix)
            .env(llvm_sys_prefix_var(nightly.llvm_major), &prefix),
    )?;
    let Some(path) = util::which("bpf-linker") else {
        bail!("bpf-linker was installed but is not on PATH: add cargo's bin directory (usually ~/.cargo/bin) to PATH");
    };
    let v = version(&path).context("freshly built bpf-linker does not run")?;
    write_stamp(&stamp, &nightly.soname)?;
    report.ok(&format!("{v} built for {}", nightly.soname));
    Ok(())
}

fn supported_list() -> String {
    SUPPORTED_LLVM
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join("/")
}

fn has_nightly(toolchain_list: &str) -> bool {
    // `rustup run nightly` means the undated channel; a dated `nightly-2025-01-01-…` does not count.
    toolchain_list.lines().any(|l| {
        l.split_whitespace()
            .next()
            .and_then(|name| name.strip_prefix("nightly-"))
            .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
    })
}

fn field(rustc_vv: &str, key: &str) -> Option<String> {
    rustc_vv.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_owned())
    })
}

fn major(version: &str) -> Option<u32> {
    version.split('.').next()?.parse().ok()
}

fn pick_soname(names: impl Iterator<Item = String>, llvm_major: u32) -> Option<String> {
    let want = format!("libLLVM.so.{llvm_major}.");
    let mut found: Vec<String> = names.filter(|n| n.starts_with(&want)).collect();
    found.sort();
    found.pop()
}

/// llvm-sys reads `LLVM_SYS_<major><minor>_PREFIX`, where the minor is always 1 in its versioning
/// (llvm-sys 221 is LLVM 22).
fn llvm_sys_prefix_var(llvm_major: u32) -> String {
    format!("LLVM_SYS_{llvm_major}1_PREFIX")
}

/// A fake LLVM install: `lib/libLLVM.so` for the linker at build time, `lib/<soname>` for the
/// loader at run time (bpf-linker's RUNPATH points here).
fn make_prefix(prefix: &Path, nightly: &Nightly) -> Result<()> {
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib).with_context(|| format!("cannot create {}", lib.display()))?;
    let target = nightly.lib_dir.join(&nightly.soname);
    let wanted = ["libLLVM.so", nightly.soname.as_str()];
    for entry in std::fs::read_dir(&lib)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        // A soname left from an older nightly would only confuse whoever looks in here.
        if name.starts_with("libLLVM") && !wanted.contains(&name.as_ref()) {
            std::fs::remove_file(lib.join(name.as_ref()))?;
        }
    }
    for name in wanted {
        let link = lib.join(name);
        if std::fs::read_link(&link).ok().as_deref() == Some(target.as_path()) {
            continue;
        }
        if link.symlink_metadata().is_ok() {
            std::fs::remove_file(&link)?;
        }
        std::os::unix::fs::symlink(&target, &link)
            .with_context(|| format!("cannot link {} -> {}", link.display(), target.display()))?;
    }
    Ok(())
}

fn version(bpf_linker: &Path) -> Result<String> {
    let out = Command::new(bpf_linker).arg("--version").output()?;
    if !out.status.success() {
        // Usually the loader's "cannot open shared object file", which says exactly what broke.
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!("{} ({})", stderr.trim(), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The libLLVM soname the binary loads, if it is dynamically linked against one. Checked even
/// with a stamp present, because someone may have reinstalled bpf-linker by hand since.
fn linked_llvm(bpf_linker: &Path) -> Option<String> {
    let out = Command::new("ldd").arg(bpf_linker).output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|w| w.starts_with("libLLVM"))
        .map(str::to_owned)
}

fn write_stamp(stamp: &Path, soname: &str) -> Result<()> {
    std::fs::write(stamp, format!("{soname}\n"))
        .with_context(|| format!("cannot write {}", stamp.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VV: &str = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nbinary: rustc\n\
                      host: x86_64-unknown-linux-gnu\nrelease: 1.97.0-nightly\nLLVM version: 22.1.4\n";

    #[test]
    fn parses_rustc_vv() {
        assert_eq!(field(VV, "release").as_deref(), Some("1.97.0-nightly"));
        assert_eq!(field(VV, "LLVM version").as_deref(), Some("22.1.4"));
        assert_eq!(major("22.1.4"), Some(22));
    }

    #[test]
    fn llvm_sys_var_name() {
        assert_eq!(llvm_sys_prefix_var(22), "LLVM_SYS_221_PREFIX");
        assert_eq!(llvm_sys_prefix_var(21), "LLVM_SYS_211_PREFIX");
    }

    #[test]
    fn picks_versioned_libllvm_only() {
        let names = [
            "libLLVM-22-rust-1.97.0-nightly.so",
            "libLLVM.so.22.1-rust-1.97.0-nightly",
            "librustc_driver-x.so",
        ]
        .map(String::from);
        assert_eq!(
            pick_soname(names.clone().into_iter(), 22).as_deref(),
            Some("libLLVM.so.22.1-rust-1.97.0-nightly")
        );
        assert_eq!(pick_soname(names.into_iter(), 21), None);
    }

    #[test]
    fn nightly_channel_not_dated() {
        assert!(has_nightly(
            "stable-x86_64-unknown-linux-gnu (active, default)\nnightly-x86_64-unknown-linux-gnu\n"
        ));
        assert!(!has_nightly(
            "stable-x86_64-unknown-linux-gnu\nnightly-2025-01-01-x86_64-unknown-linux-gnu\n"
        ));
    }
}
