//! `cargo xtask image`: the node agent's container image, built offline.
//!
//! The binary is static (musl), so the image holds nothing else: no libc, no shell, no CA
//! bundle (timerwatch makes no TLS connection) and no time zones (it prints Unix time). No musl
//! rustup target can be downloaded here, so the standard library is built from the nightly's
//! rust-src (`-Z build-std`) for `x86_64-unknown-linux-musl` and linked by Debian's `musl-gcc`
//! against Debian's musl, with LLVM's libunwind built from rust-src as rustup's musl target
//! would ship it. deploy/Dockerfile runs `cargo xtask image --binary-only`,
//! so the registry-based build makes the same binary by the same recipe.
//!
//! The image is committed by buildah `FROM scratch` into the local store as
//! `localhost/timerwatch:VERSION` (podman on the same host sees it), and `--oci-archive FILE`
//! exports it for `podman load`, `skopeo copy` or `ctr images import`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::util::{self, target_dir, workspace_root};

#[derive(Parser)]
pub struct Args {
    /// Also write the image to FILE as an OCI archive.
    #[arg(long, value_name = "FILE")]
    oci_archive: Option<PathBuf>,
    /// Only build the static binary and print its path (what deploy/Dockerfile runs).
    #[arg(long)]
    binary_only: bool,
}

pub const REPOSITORY: &str = "localhost/timerwatch";

fn musl_triple() -> String {
    format!("{}-unknown-linux-musl", std::env::consts::ARCH)
}

/// `CARGO_TARGET_<TRIPLE>_…`: target-specific, so neither the build scripts nor aya-build's
/// nested eBPF build (its own target, its own CARGO_ENCODED_RUSTFLAGS) see these flags.
fn target_env(triple: &str, key: &str) -> String {
    format!(
        "CARGO_TARGET_{}_{key}",
        triple.to_uppercase().replace('-', "_")
    )
}

/// LLVM's libunwind, which std's `unwind` crate links as `libunwind.a` on musl: rustup's musl
/// target ships it prebuilt, build-std does not, so it is compiled here from the nightly's
/// rust-src with musl-gcc (the sources need only C headers), with the flags Rust's own build
/// uses. GCC's libgcc_eh.a cannot stand in: it calls glibc's `_dl_find_object`.
fn libunwind() -> Result<PathBuf> {
    let sysroot = util::output(
        Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]),
    )?;
    let src = Path::new(sysroot.trim()).join("lib/rustlib/src/rust/src/llvm-project/libunwind");
    if !src.join("src/libunwind.cpp").is_file() {
        bail!(
            "no libunwind sources under {}: run `cargo xtask setup` (adds the nightly's rust-src)",
            src.display()
        );
    }
    let dir = target_dir().join("musl-unwind");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut objects = Vec::new();
    for file in LIBUNWIND_SOURCES {
        let lang: &[&str] = match Path::new(file).extension().and_then(|e| e.to_str()) {
            Some("cpp") => &[
                "-x",
                "c++",
                "-std=c++17",
                "-nostdinc++",
                "-fno-exceptions",
                "-fno-rtti",
            ],
            Some("c") => &["-std=c99"],
            _ => &[],
        };
        let object = dir.join(format!("{file}.o"));
        util::run(
            Command::new("musl-gcc")
                .args(["-c", "-O2", "-fPIC", "-funwind-tables", "-fstrict-aliasing"])
                .args([
                    "-fvisibility=hidden",
                    "-D_LIBUNWIND_IS_NATIVE_ONLY",
                    "-DNDEBUG",
                ])
                .arg("-D_LIBUNWIND_HIDE_SYMBOLS")
                .arg("-I")
                .arg(src.join("include"))
                .args(lang)
                .arg(src.join("src").join(file))
                .arg("-o")
                .arg(&object),
        )?;
        objects.push(object);
    }
    util::run(
        Command::new("ar")
            .arg("rcs")
            .arg(dir.join("libunwind.a"))
            .args(&objects),
    )?;
    Ok(dir)
}

const LIBUNWIND_SOURCES: &[&str] = &[
    "libunwind.cpp",
    "Unwind-EHABI.cpp",
    "Unwind-seh.cpp",
    "UnwindLevel1.c",
    "UnwindLevel1-gcc-ext.c",
    "Unwind-sjlj.c",
    "UnwindRegistersRestore.S",
    "UnwindRegistersSave.S",
];

/// Builds the static binary; returns its path (debug info stripped, symbols kept).
pub fn static_binary() -> Result<PathBuf> {
    if util::which("musl-gcc").is_none() {
        bail!("musl-gcc not found: run `cargo xtask setup` (installs Debian's musl-tools)");
    }
    let triple = musl_triple();
    let unwind = libunwind()?;
    // Not static-pie: Debian's musl-gcc specs always add a dynamic linker to a PIE link.
    let rustflags = format!(
        "-C target-feature=+crt-static -C relocation-model=static -C link-self-contained=no \
         -L native={}",
        unwind.display()
    );
    let mut cmd = Command::new("rustup");
    cmd.current_dir(workspace_root())
        .args(["run", "nightly", "cargo", "build", "--release", "--locked"])
        .args(["-p", "timerwatch", "--target", &triple])
        .arg("-Zbuild-std=std,panic_unwind")
        .env(target_env(&triple, "LINKER"), "musl-gcc")
        .env(target_env(&triple, "RUSTFLAGS"), rustflags)
        // `cargo xtask` runs under the stable toolchain; these would pin it.
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO");
    util::run(&mut cmd)?;
    let built = target_dir().join(&triple).join("release/timerwatch");
    let elf = std::fs::read(&built).with_context(|| format!("cannot read {}", built.display()))?;
    if has_interpreter(&elf)? {
        bail!("{} is dynamically linked (has PT_INTERP)", built.display());
    }
    // The release profile keeps line tables for `cargo xtask dist`; the image needs none.
    let out = target_dir().join(&triple).join("timerwatch-image");
    util::run(
        Command::new("objcopy")
            .arg("--strip-debug")
            .arg(&built)
            .arg(&out),
    )?;
    Ok(out)
}

/// Whether an ELF64 little-endian file asks for a program interpreter (i.e. is not static).
pub fn has_interpreter(elf: &[u8]) -> Result<bool> {
    const PT_INTERP: u32 = 3;
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        bail!("not a 64-bit little-endian ELF file");
    }
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into()?) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let Some(p_type) = elf.get(at..at + 4) else {
            bail!("truncated program header table");
        };
        if u32::from_le_bytes(p_type.try_into()?) == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

fn version() -> Result<String> {
    let pkgid = util::output(util::cargo().args(["pkgid", "-p", "timerwatch"]))?;
    crate::dist::pkgid_version(&pkgid)
        .map(str::to_string)
        .with_context(|| format!("no version in `cargo pkgid` output {pkgid:?}"))
}

fn buildah(args: &[&str]) -> Result<String> {
    Ok(util::output(Command::new("buildah").args(args))?
        .trim()
        .to_string())
}

/// Commits `binary` as the only file of a `FROM scratch` image named `reference`.
fn commit(binary: &Path, reference: &str, version: &str) -> Result<()> {
    let container = buildah(&["from", "scratch"])?;
    let result = (|| {
        let binary = binary.to_str().context("non-UTF-8 binary path")?;
        buildah(&["copy", "--chmod", "0755", &container, binary, "/timerwatch"])?;
        let label = |k: &str, v: &str| format!("org.opencontainers.image.{k}={v}");
        buildah(&[
            "config",
            "--entrypoint",
            r#"["/timerwatch"]"#,
            "--cmd",
            "daemon --listen 0.0.0.0:9808",
            "--port",
            "9808/tcp",
            "--user",
            "0:0",
            "--label",
            &label("title", "timerwatch"),
            "--label",
            &label("version", version),
            &container,
        ])?;
        // A fixed timestamp: the same binary gives the same image.
        buildah(&[
            "commit",
            "--format",
            "oci",
            "--timestamp",
            "0",
            "--rm",
            &container,
            reference,
        ])
    })();
    if result.is_err() {
        let _ = Command::new("buildah").args(["rm", &container]).output();
    }
    result.map(drop)
}

pub fn run(args: &Args) -> Result<()> {
    let binary = static_binary()?;
    if args.binary_only {
        println!("{}", binary.display());
        return Ok(());
    }
    if util::which("buildah").is_none() {
        bail!("buildah not found: run `cargo xtask setup` (installs Debian's buildah)");
    }
    let version = version()?;
    let reference = format!("{REPOSITORY}:{version}");
    commit(&binary, &reference, &version)?;
    if let Some(file) = &args.oci_archive {
        let _ = std::fs::remove_file(file);
        let dest = format!("oci-archive:{}:{reference}", file.display());
        buildah(&["push", "--quiet", &reference, &dest])?;
        eprintln!("xtask image: wrote {}", file.display());
    }
    println!("{reference}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_env_names() {
        assert_eq!(
            target_env("x86_64-unknown-linux-musl", "RUSTFLAGS"),
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS"
        );
    }

    #[test]
    fn interpreter_from_program_headers() {
        // A minimal ELF64 header with one program header of the given type.
        let elf = |p_type: u32| {
            let mut b = vec![0u8; 64 + 56];
            b[..6].copy_from_slice(b"\x7fELF\x02\x01");
            b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
            b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
            b[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
            b[64..68].copy_from_slice(&p_type.to_le_bytes());
            b
        };
        assert!(has_interpreter(&elf(3)).unwrap());
        assert!(!has_interpreter(&elf(1)).unwrap());
        assert!(has_interpreter(b"#!/bin/sh\n").is_err());
        // The test binary itself is dynamically linked.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(has_interpreter(&me).unwrap());
    }
}
