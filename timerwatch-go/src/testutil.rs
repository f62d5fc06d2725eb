//! A small Go test program, built once per installed toolchain (see [`crate::toolchain`]) for
//! this crate's tests. Without any toolchain the tests skip, except under CI=true, where that is
//! a failure.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::thread;

use crate::toolchain::{installed, Toolchain};
use crate::version::GoVersion;

/// The test program. `afterfunc N`: N pending `time.AfterFunc(time.Hour)`. `ticker N`: N hourly
/// tickers, each with a goroutine blocked on its channel, because from 1.23 on (go.mod ≥ 1.23)
/// a channel timer is in a heap only while someone waits on it. It prints "ready" and then
/// waits for stdin to close. `inlinedHelper` is small enough to be inlined into `someFunc`, and
/// its call to `leaf` keeps inlined instructions that constant folding cannot merge away.
pub const PROGRAM: &str = r#"package main

import (
	"os"
	"strconv"
	"time"
)

var sink []any

//go:noinline
func leaf(n int) int {
	return n + 1
}

func inlinedHelper(n int) int {
	return leaf(n) * 7
}

//go:noinline
func someFunc(n int) int {
	x := inlinedHelper(n)
	return x * 3
}

func main() {
	mode, n := "", 0
	if len(os.Args) > 2 {
		mode = os.Args[1]
		n, _ = strconv.Atoi(os.Args[2])
	}
	time.Sleep(time.Millisecond)
	switch mode {
	case "afterfunc":
		for i := 0; i < n; i++ {
			sink = append(sink, time.AfterFunc(time.Hour, func() { os.Exit(3) }))
		}
	case "ticker":
		for i := 0; i < n; i++ {
			t := time.NewTicker(time.Hour)
			sink = append(sink, t)
			go func() {
				for range t.C {
				}
			}()
		}
	}
	os.Stdout.WriteString("ready " + strconv.Itoa(someFunc(n)) + "\n")
	var b [1]byte
	os.Stdin.Read(b[:])
}
"#;

/// Goroutines parked where the goroutine walk must find them, each in its own noinline
/// function: `tickLoop` in a two-case `select` on a Ticker's channel and a never-closed `done`
/// (one case would compile to a plain receive), `afterWait` receiving from `time.After`, and
/// `sleeper` in `time.Sleep`. Counts differ (3, 2, 4) so a mix-up shows. With `churn N`, N more
/// goroutines park and wake every 50 µs in `main.churn` (a `select` on a fast Ticker), so a walk
/// meets goroutines changing under it. It prints "ready" and waits for stdin to close.
pub const WAITERS_PROGRAM: &str = r#"package main

import (
	"os"
	"strconv"
	"time"
)

var sink []any

//go:noinline
func tickLoop(t *time.Ticker, done chan struct{}) {
	for {
		select {
		case <-t.C:
		case <-done:
			return
		}
	}
}

//go:noinline
func afterWait() {
	<-time.After(time.Hour)
}

//go:noinline
func sleeper() {
	time.Sleep(time.Hour)
}

//go:noinline
func churn(done chan struct{}) {
	t := time.NewTicker(50 * time.Microsecond)
	for {
		select {
		case <-t.C:
		case <-done:
			return
		}
	}
}

func main() {
	done := make(chan struct{})
	for i := 0; i < 3; i++ {
		t := time.NewTicker(time.Hour)
		sink = append(sink, t)
		go tickLoop(t, done)
	}
	for i := 0; i < 2; i++ {
		go afterWait()
	}
	for i := 0; i < 4; i++ {
		go sleeper()
	}
	if len(os.Args) > 2 && os.Args[1] == "churn" {
		n, _ := strconv.Atoi(os.Args[2])
		for i := 0; i < n; i++ {
			go churn(done)
		}
	}
	os.Stdout.WriteString("ready\n")
	var b [1]byte
	os.Stdin.Read(b[:])
	close(done)
}
"#;

/// Build outputs of [`PROGRAM`] for one toolchain.
pub struct Built {
    pub version: GoVersion,
    pub plain: PathBuf,
    /// `-ldflags="-s -w"`: no .symtab, no DWARF.
    pub stripped: PathBuf,
    /// `-buildmode=pie`, stripped; only for the newest toolchain (a PIE build compiles the
    /// standard library again, which is slow on a cold cache).
    pub pie: Option<PathBuf>,
    pub source: PathBuf,
}

/// Found once per test run.
pub fn toolchains() -> &'static [Toolchain] {
    static TOOLCHAINS: OnceLock<Vec<Toolchain>> = OnceLock::new();
    TOOLCHAINS.get_or_init(installed)
}

/// GOCACHE for the test builds. A cold cache costs ~9 s per toolchain (the standard library is
/// compiled on first use), so it should outlive the work tree: CI runs in a fresh clone.
/// `TIMERWATCH_GOCACHE` wins; then a dedicated directory under ~/.cache (so the user's own Go
/// cache is left alone); then target/.
fn gocache() -> PathBuf {
    if let Some(dir) = std::env::var_os("TIMERWATCH_GOCACHE") {
        return PathBuf::from(dir);
    }
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return Path::new(&home).join(".cache/timerwatch-go-test");
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("timerwatch-go-test-cache")
}

fn go_build(tc: &Toolchain, dir: &Path, out: &Path, extra: &[&str]) -> Result<(), String> {
    let output = Command::new(tc.goroot.join("bin/go"))
        .arg("build")
        .args(extra)
        .arg("-o")
        .arg(out)
        .arg(".")
        .current_dir(dir)
        .env_remove("GOROOT")
        .env_remove("GOEXPERIMENT")
        .env_remove("GOOS")
        .env_remove("GOARCH")
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("CGO_ENABLED", "0")
        .env("GOENV", "off")
        .env("GOTELEMETRY", "off")
        .env("GOCACHE", gocache())
        .env("GOPATH", dir.join("gopath"))
        .output()
        .map_err(|e| format!("running go {}: {e}", tc.version))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "go build {extra:?} with {} failed: {}",
            tc.version,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn build(tc: &Toolchain, dir: &Path, newest: bool) -> Result<Built, String> {
    build_program(tc, dir, PROGRAM, true, newest)
}

/// Builds `program` in `dir`; the stripped variant only when asked (each one links again; without
/// it `stripped` names the plain build) and the PIE one for the newest toolchain (a PIE build
/// compiles the standard library again).
fn build_program(
    tc: &Toolchain,
    dir: &Path,
    program: &str,
    stripped: bool,
    newest: bool,
) -> Result<Built, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let source = dir.join("main.go");
    std::fs::write(&source, program).map_err(|e| e.to_string())?;
    let gomod = format!("module twtest\n\ngo 1.{}\n", tc.version.minor);
    std::fs::write(dir.join("go.mod"), gomod).map_err(|e| e.to_string())?;
    let plain = dir.join("plain");
    go_build(tc, dir, &plain, &[])?;
    let stripped = if stripped {
        let path = dir.join("stripped");
        go_build(tc, dir, &path, &["-ldflags=-s -w"])?;
        path
    } else {
        plain.clone()
    };
    let pie = if newest {
        let pie = dir.join("pie");
        go_build(tc, dir, &pie, &["-buildmode=pie", "-ldflags=-s -w"])?;
        Some(pie)
    } else {
        None
    };
    Ok(Built {
        version: tc.version,
        plain,
        stripped,
        pie,
        source,
    })
}

/// Every toolchain's build of [`PROGRAM`], built once for the whole test run (in parallel).
/// `None` (after a note) when there is no toolchain outside CI.
pub fn builds() -> Option<&'static [Built]> {
    static BUILDS: OnceLock<(tempfile::TempDir, Vec<Built>)> = OnceLock::new();
    builds_of(&BUILDS, build)
}

/// Every toolchain's build of [`WAITERS_PROGRAM`]; only the newest toolchain's has a distinct
/// stripped build (elsewhere `stripped` is the plain build) and a PIE one.
pub fn waiter_builds() -> Option<&'static [Built]> {
    static BUILDS: OnceLock<(tempfile::TempDir, Vec<Built>)> = OnceLock::new();
    builds_of(&BUILDS, |tc, dir, newest| {
        build_program(tc, dir, WAITERS_PROGRAM, newest, newest)
    })
}

type BuildFn = fn(&Toolchain, &Path, bool) -> Result<Built, String>;

fn builds_of(
    cell: &'static OnceLock<(tempfile::TempDir, Vec<Built>)>,
    build: BuildFn,
) -> Option<&'static [Built]> {
    let tcs = toolchains();
    if tcs.is_empty() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "no Go toolchain found: set TIMERWATCH_GO_ROOTS (cargo xtask setup installs them)"
            );
        }
        eprintln!(
            "note: no Go toolchain found (TIMERWATCH_GO_ROOTS unset); skipping Go binary tests"
        );
        return None;
    }
    let (_, built) = cell.get_or_init(|| {
        let tmp = tempfile::tempdir().expect("tempdir");
        let newest = tcs.last().map(|t| t.version);
        let built = thread::scope(|s| {
            let jobs: Vec<_> = tcs
                .iter()
                .map(|tc| {
                    let dir = tmp.path().join(tc.version.to_string());
                    s.spawn(move || build(tc, &dir, Some(tc.version) == newest))
                })
                .collect();
            jobs.into_iter()
                .map(|j| {
                    j.join()
                        .expect("build thread")
                        .unwrap_or_else(|e| panic!("{e}"))
                })
                .collect()
        });
        (tmp, built)
    });
    Some(built)
}

/// A running test program, killed and reaped on drop.
pub struct Running {
    child: Child,
    _stdout: BufReader<ChildStdout>,
}

impl Running {
    pub fn start(path: &Path, args: &[&str]) -> Running {
        let mut child = Command::new(path)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", path.display()));
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("reading test program");
        assert!(line.starts_with("ready"), "{}: {line:?}", path.display());
        Running {
            child,
            _stdout: stdout,
        }
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
