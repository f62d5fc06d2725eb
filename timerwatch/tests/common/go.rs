//! Go toolchains and Go targets for the end-to-end tests.
//!
//! `cargo xtask setup` installs one toolchain per family of Go timer internals;
//! `timerwatch_go::toolchain` finds them (the same finder the Go crate's own tests use). Targets live in tests/go_targets/NAME/main.go and are built per toolchain
//! with a go.mod whose `go` line matches it, since that line decides which timer semantics a
//! binary gets (docs/go-runtime-timers.md §6).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// An installed Go toolchain.
#[derive(Clone, Debug)]
pub struct Toolchain {
    pub root: PathBuf,
    /// e.g. "go1.22.10".
    pub version: String,
    /// The minor release: 22 for go1.22.10.
    pub minor: u32,
}

/// Installed toolchains, by minor release.
pub fn toolchains() -> Vec<Toolchain> {
    timerwatch_go::toolchain::installed()
        .into_iter()
        .map(|t| Toolchain {
            root: t.goroot,
            version: t.version_string,
            minor: t.version.minor,
        })
        .collect()
}

/// The newest installed toolchain. None means skip; in CI a missing toolchain fails instead.
pub fn newest() -> Option<Toolchain> {
    let newest = toolchains().pop();
    assert!(
        newest.is_some() || std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but no Go toolchain is installed"
    );
    newest
}

/// The toolchain for Go 1.`minor`. Missing means skip, with a note; in CI every version the
/// tests name must be there, since a green run must mean they all ran.
pub fn toolchain_for(minor: u32) -> Option<Toolchain> {
    let found = toolchains().into_iter().find(|t| t.minor == minor);
    if found.is_none() {
        let have: Vec<String> = toolchains().into_iter().map(|t| t.version).collect();
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "CI=true but Go 1.{minor} is not installed (have {have:?}); run cargo xtask setup"
            );
        }
        eprintln!(
            "skipping Go 1.{minor}: not installed (have {have:?}); cargo xtask setup installs it"
        );
    }
    found
}

/// Builds serialise: the Go build cache is shared and test threads may race.
static BUILD: Mutex<()> = Mutex::new(());

/// Path of tests/go_targets/`program` built with `tc`, cached per version and flavour.
/// `stripped` links with `-s -w`: no symbol table, only pclntab names the functions.
pub fn build(tc: &Toolchain, program: &str, stripped: bool) -> PathBuf {
    let _serial = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/go_targets")
        .join(program)
        .join("main.go");
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-targets");
    let flavour = if stripped { "-stripped" } else { "" };
    let dir = base.join(&tc.version).join(format!("{program}{flavour}"));
    let out = dir.join(program);
    let fresh = |p: &Path| {
        let (Ok(a), Ok(b)) = (std::fs::metadata(p), std::fs::metadata(&src)) else {
            return false;
        };
        a.modified().ok() >= b.modified().ok()
    };
    if fresh(&out) {
        return out;
    }
    std::fs::create_dir_all(&dir).expect("create the Go target directory");
    std::fs::copy(&src, dir.join("main.go")).expect("copy main.go");
    std::fs::write(
        dir.join("go.mod"),
        format!("module {program}\n\ngo 1.{}\n", tc.minor),
    )
    .expect("write go.mod");
    let mut cmd = Command::new(tc.root.join("bin/go"));
    cmd.current_dir(&dir)
        .args(["build", "-o"])
        .arg(&out)
        .env("GOROOT", &tc.root)
        // Never download another toolchain for a go line: test exactly this one.
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "")
        .env("GOCACHE", base.join("cache"))
        .env("GOPATH", base.join("gopath"));
    if stripped {
        cmd.arg("-ldflags=-s -w");
    }
    cmd.arg(".");
    let result = cmd.output().expect("run go build");
    assert!(
        result.status.success(),
        "go build of {program} with {} failed:\n{}",
        tc.version,
        String::from_utf8_lossy(&result.stderr)
    );
    out
}

/// A running Go target; killed and reaped when dropped.
pub struct Running {
    child: std::process::Child,
}

impl Running {
    pub fn spawn(path: &Path) -> Running {
        let child = Command::new(path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", path.display()));
        Running { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `good`, a Go binary built with `tc`, with the version its buildinfo records changed to
/// go1.10: it still runs (the runtime never reads it), but no layout timerwatch knows applies.
pub fn unknown_version(tc: &Toolchain, good: &Path, dir: &Path) -> PathBuf {
    let bytes = std::fs::read(good).expect("read the Go target");
    let from = tc.version.as_bytes();
    let at = bytes
        .windows(from.len() + 1)
        .position(|w| w[0] as usize == from.len() && &w[1..] == from)
        .expect("the buildinfo version string");
    let mut patched = bytes.clone();
    let fake = format!("go1.10{}", &tc.version[6..]);
    patched[at + 1..at + 1 + from.len()].copy_from_slice(fake.as_bytes());
    let out = dir.join("old_go");
    std::fs::write(&out, patched).expect("write the patched binary");
    std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    out
}
