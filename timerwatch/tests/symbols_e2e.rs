//! Names on binaries built and shipped the way distributions do: `-O2` without frame pointers,
//! stripped, their debug info split into `.build-id/xx/rest.debug` under a debug directory.
//! With the debug file on disk, callers read as in the unstripped build; without it, as
//! `binary+0xOFFSET`, the same in every process. Root only.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::{Report, Tool};
use serde_json::Value;

const SECS: u64 = 3;

fn run_tool(cmd: &str, args: &[&std::ffi::OsStr]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The distribution-style builds of tests/targets/timerfd_leak.c.
struct Builds {
    /// `-O2 -g`, no frame pointers, not stripped: the names to match.
    full: PathBuf,
    /// The same binary stripped, with a `.gnu_debuglink` to its debug file.
    stripped: PathBuf,
    /// The split debug info, `.build-id/xx/rest.debug` under this directory when installed.
    debug: PathBuf,
    /// `.build-id/xx/rest.debug`, relative to a debug directory.
    build_id_path: PathBuf,
    pub build_id: String,
}

fn builds() -> &'static Builds {
    static BUILDS: OnceLock<Builds> = OnceLock::new();
    BUILDS.get_or_init(|| distro_build("timerfd_leak.c", "symbols-targets"))
}

/// tests/targets/deep_chain.c built the same way: frames above the wrapper's caller only CFI
/// unwinding can find.
fn deep_builds() -> &'static Builds {
    static BUILDS: OnceLock<Builds> = OnceLock::new();
    BUILDS.get_or_init(|| distro_build("deep_chain.c", "unwind-targets"))
}

/// `tests/targets/SOURCE` built `-O2 -g` without frame pointers into `CARGO_TARGET_TMPDIR/DIR`,
/// and its stripped copy and split debug file.
fn distro_build(source: &str, dir: &str) -> Builds {
    {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/targets")
            .join(source);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(dir);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the targets directory");
        let full = dir.join("leaker-full");
        run_tool(
            "gcc",
            &[
                "-O2".as_ref(),
                "-g".as_ref(),
                "-fomit-frame-pointer".as_ref(),
                "-Wl,--build-id".as_ref(),
                "-o".as_ref(),
                full.as_os_str(),
                src.as_os_str(),
            ],
        );
        let build_id = read_build_id(&full);
        let build_id_path = PathBuf::from(format!(
            ".build-id/{}/{}.debug",
            &build_id[..2],
            &build_id[2..]
        ));
        let debug = dir.join(build_id_path.file_name().unwrap());
        run_tool(
            "objcopy",
            &[
                "--only-keep-debug".as_ref(),
                full.as_os_str(),
                debug.as_os_str(),
            ],
        );
        // Named like the original so a `binary+0x…` name is recognisable in the report.
        let stripped_dir = dir.join("stripped");
        std::fs::create_dir_all(&stripped_dir).unwrap();
        let stripped = stripped_dir.join("leaker");
        run_tool(
            "strip",
            &[
                "--strip-unneeded".as_ref(),
                "--remove-section=.comment".as_ref(),
                "-o".as_ref(),
                stripped.as_os_str(),
                full.as_os_str(),
            ],
        );
        let link = format!("--add-gnu-debuglink={}", debug.display());
        run_tool("objcopy", &[link.as_ref(), stripped.as_os_str()]);
        assert_eq!(read_build_id(&stripped), build_id);
        Builds {
            full,
            stripped,
            debug,
            build_id_path,
            build_id,
        }
    }
}

fn read_build_id(path: &Path) -> String {
    let out = Command::new("readelf")
        .arg("-n")
        .arg(path)
        .output()
        .expect("run readelf");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .unwrap_or_else(|| panic!("no build ID in {}:\n{text}", path.display()))
        .trim()
        .to_string()
}

/// A debug directory laid out as `/usr/lib/debug` is, holding the debug file by build ID.
fn debug_dir(name: &str) -> PathBuf {
    debug_dir_of(builds(), name)
}

fn debug_dir_of(b: &Builds, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("symbols-debug")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let at = dir.join(&b.build_id_path);
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    std::fs::copy(&b.debug, &at).expect("install the debug file");
    dir
}

/// A running target; killed and reaped when dropped.
struct Running(Child);

impl Running {
    fn spawn(path: &Path) -> Running {
        let child = Command::new(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", path.display()));
        Running(child)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `snapshot --json` of `pids` with `env` set for timerwatch.
fn snapshot(pids: &[u32], env: &[(&str, &std::ffi::OsStr)]) -> Report {
    snapshot_with(pids, env, &[])
}

/// [`snapshot`] with `args` added to timerwatch's command line.
fn snapshot_with(pids: &[u32], env: &[(&str, &std::ffi::OsStr)], args: &[&str]) -> Report {
    let mut cmd = Command::new(common::BIN);
    cmd.args(["snapshot", "--json", "--duration", &SECS.to_string()]);
    cmd.args(args);
    for pid in pids {
        cmd.args(["-p", &pid.to_string()]);
    }
    cmd.env_remove("TIMERWATCH_DEBUG_DIRS")
        .env_remove("DEBUGINFOD_URLS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Tool::spawn_command(&mut cmd)
        .finish(common::ATTACH_TIMEOUT + Duration::from_secs(SECS + 30))
        .report()
}

/// The one timerfd callsite of `pid`: (caller, frames, naming).
fn timerfd_site(report: &Report, pid: u32) -> (String, Vec<String>, Vec<String>) {
    let sites: Vec<&Value> = report.process(pid)["callsites"]
        .as_array()
        .expect("callsites")
        .iter()
        .filter(|c| c["kind"] == "timerfd")
        .collect();
    assert_eq!(
        sites.len(),
        1,
        "pid {pid}: one timerfd callsite expected; report:\n{report}"
    );
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    let site = sites[0];
    let caller = site["caller"].as_str().unwrap_or_default().to_string();
    (caller, strings(&site["frames"]), strings(&site["naming"]))
}

/// The frames up to and including the caller's: beyond it, a stack without frame pointers
/// holds whatever the registers did.
fn through_caller(caller: &str, frames: &[String]) -> Vec<String> {
    let at = frames
        .iter()
        .position(|f| f.starts_with(caller))
        .unwrap_or_else(|| panic!("no frame of caller {caller:?} in {frames:?}"));
    frames[..=at].to_vec()
}

#[test]
fn split_debug_info_names_a_stripped_binary_as_the_unstripped_build() {
    let Some(_serial) = common::start() else {
        return;
    };
    let b = builds();
    let full = Running::spawn(&b.full);
    let report = snapshot(&[full.0.id()], &[]);
    let (want_caller, want_frames, want_naming) = timerfd_site(&report, full.0.id());
    drop(full);
    assert_eq!(want_caller, "leak_timerfd", "report:\n{report}");
    let want = through_caller(&want_caller, &want_frames);
    assert!(
        want.last().unwrap().contains("timerfd_leak.c:"),
        "no file:line in the unstripped build; report:\n{report}"
    );
    assert_eq!(want_naming[want.len() - 1], "symtab", "report:\n{report}");

    let dir = debug_dir("installed");
    let stripped = Running::spawn(&b.stripped);
    let report = snapshot(
        &[stripped.0.id()],
        &[("TIMERWATCH_DEBUG_DIRS", dir.as_os_str())],
    );
    let (caller, frames, naming) = timerfd_site(&report, stripped.0.id());
    assert_eq!(caller, want_caller, "report:\n{report}");
    assert_eq!(through_caller(&caller, &frames), want, "report:\n{report}");
    assert_eq!(naming[want.len() - 1], "debuginfo", "report:\n{report}");
}

#[test]
fn without_debug_info_callers_are_file_offsets_equal_across_processes() {
    let Some(_serial) = common::start() else {
        return;
    };
    let b = builds();
    // Two processes of one binary: different ASLR bases, so any address would differ.
    let (one, two) = (Running::spawn(&b.stripped), Running::spawn(&b.stripped));
    let report = snapshot(&[one.0.id(), two.0.id()], &[]);
    let (caller_one, _, naming) = timerfd_site(&report, one.0.id());
    let (caller_two, _, _) = timerfd_site(&report, two.0.id());
    assert!(
        caller_one.starts_with("leaker+0x"),
        "caller {caller_one:?} is not binary+offset; report:\n{report}"
    );
    assert_eq!(caller_one, caller_two, "report:\n{report}");
    assert!(naming.iter().any(|n| n == "none"), "report:\n{report}");
    // The offset is where leak_timerfd is in the file: the unstripped build's symbol says so.
    let offset = u64::from_str_radix(caller_one.trim_start_matches("leaker+0x"), 16).unwrap();
    let (start, size) = symbol_file_range(&b.full, "leak_timerfd");
    assert!(
        (start..start + size).contains(&(offset - 1)),
        "{caller_one} is outside leak_timerfd (file offsets {start:#x}+{size:#x})"
    );
    let _ = &b.build_id;
}

/// File offset and size of function `name` in `path`, from its symbol table and segments.
fn symbol_file_range(path: &Path, name: &str) -> (u64, u64) {
    let out = Command::new("readelf")
        .args(["-W", "-s", "-l"])
        .arg(path)
        .output()
        .expect("run readelf");
    let text = String::from_utf8_lossy(&out.stdout);
    let (vaddr, size) = text
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 8 && f[7] == name && f[3] == "FUNC").then(|| {
                (
                    u64::from_str_radix(f[1], 16).unwrap(),
                    f[2].parse::<u64>().unwrap(),
                )
            })
        })
        .unwrap_or_else(|| panic!("no symbol {name} in {}", path.display()));
    let offset = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&"LOAD")).then(|| {
                let n = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
                (n(f[1]), n(f[2]), n(f[4]))
            })
        })
        .find(|&(_, v, filesz)| vaddr >= v && vaddr < v + filesz)
        .map(|(off, v, _)| vaddr - v + off)
        .expect("a LOAD segment holds the function");
    (offset, size)
}

/// The kernel-timer callsites (not the Go runtime's own) of `pid`.
fn kernel_sites(report: &Report, pid: u32) -> Vec<&Value> {
    report.process(pid)["callsites"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| {
            c["source"] == "kernel" && c["frames"].as_array().is_some_and(|f| !f.is_empty())
        })
        .collect()
}

#[test]
fn stripped_go_binary_kernel_timers_are_named_through_pclntab() {
    let Some(_serial) = common::start() else {
        return;
    };
    let Some(tc) = common::go::toolchains().into_iter().max_by_key(|t| t.minor) else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI=true but no Go toolchain is installed; run cargo xtask setup"
        );
        eprintln!("skipping: no Go toolchain installed");
        return;
    };
    let bin = common::go::build(&tc, "kernel_timers", true);
    let target = common::go::Running::spawn(&bin);
    let pid = target.pid();
    let report = snapshot(&[pid], &[]);
    let sites = kernel_sites(&report, pid);
    assert!(
        !sites.is_empty(),
        "no kernel timers from {pid}; report:\n{report}"
    );
    for site in &sites {
        let caller = site["caller"].as_str().unwrap_or_default();
        // A Go function: package path, dot, name; never an address or binary+offset.
        assert!(
            !caller.starts_with("0x") && !caller.contains("+0x") && caller.contains('.'),
            "caller {caller:?} is not a Go function; report:\n{report}"
        );
        let frames = site["frames"].as_array().unwrap();
        let naming = site["naming"].as_array().expect("naming");
        assert_eq!(frames.len(), naming.len(), "report:\n{report}");
    }
    // The client's connect and close arm the kernel's TCP timers from the application code.
    let dialer = sites.iter().any(|s| {
        s["frames"]
            .as_array()
            .unwrap()
            .iter()
            .zip(s["naming"].as_array().unwrap())
            .any(|(f, n)| {
                f.as_str()
                    .is_some_and(|f| f.starts_with("main.dialAndClose ("))
                    && n == "pclntab"
            })
    });
    assert!(
        dialer,
        "no kernel timer from main.dialAndClose; report:\n{report}"
    );
}

/// A real debuginfod (elfutils) serving `dir` on a free local port; stopped when dropped.
struct Debuginfod {
    child: Child,
    port: u16,
}

impl Debuginfod {
    fn serve(dir: &Path, db: &Path) -> Option<Debuginfod> {
        if Command::new("debuginfod")
            .arg("--version")
            .output()
            .is_err()
        {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "CI=true but debuginfod is not installed; run cargo xtask setup"
            );
            eprintln!("skipping: debuginfod is not installed (cargo xtask setup installs it)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("debuginfod")
            .args(["-F", "-c", "1", "-p", &port.to_string(), "-d"])
            .arg(db)
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(db.with_extension("log")).expect("debuginfod log"))
            .spawn()
            .expect("start debuginfod");
        Some(Debuginfod { child, port })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// HTTP status of GET `path` (debuginfod refuses HEAD), or None while the server does not
    /// answer.
    fn status(&self, path: &str) -> Option<u16> {
        Self::status_on(self.port, path)
    }

    fn status_on(port: u16, path: &str) -> Option<u16> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).ok()?;
        std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
    }
}

impl Drop for Debuginfod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn debuginfod_serves_the_names_of_a_stripped_binary_without_its_debug_file_on_disk() {
    let Some(_serial) = common::start() else {
        return;
    };
    let b = builds();
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("symbols-debuginfod");
    let _ = std::fs::remove_dir_all(&base);
    let served = base.join("served");
    std::fs::create_dir_all(&served).unwrap();
    std::fs::copy(&b.debug, served.join("leaker.debug")).unwrap();
    let Some(server) = Debuginfod::serve(&served, &base.join("db.sqlite")) else {
        return;
    };
    let path = format!("/buildid/{}/debuginfo", b.build_id);
    let indexed = common::wait_until(Duration::from_secs(60), || {
        server.status(&path) == Some(200)
    });
    assert!(indexed, "debuginfod did not serve {path} within 60 s");

    let cache = base.join("cache");
    let stripped = Running::spawn(&b.stripped);
    let report = snapshot(
        &[stripped.0.id()],
        &[
            ("DEBUGINFOD_URLS", server.url().as_ref()),
            ("TIMERWATCH_DEBUGINFOD_CACHE", cache.as_os_str()),
        ],
    );
    let (caller, frames, naming) = timerfd_site(&report, stripped.0.id());
    assert_eq!(caller, "leak_timerfd", "report:\n{report}");
    let named = through_caller(&caller, &frames);
    assert!(
        named.last().unwrap().contains("timerfd_leak.c:"),
        "no file:line; report:\n{report}"
    );
    assert_eq!(naming[named.len() - 1], "debuginfod", "report:\n{report}");
    assert!(
        cache.join(&b.build_id).join("debuginfo").is_file(),
        "the fetched file is not in the cache"
    );
}

/// Callers and frames of every kernel callsite of `pid` that are a runtime address.
fn address_names(report: &Report, pid: u32) -> Vec<String> {
    kernel_sites(report, pid)
        .iter()
        .flat_map(|s| {
            let frames = s["frames"].as_array().unwrap().iter();
            frames.chain(std::iter::once(&s["caller"]))
        })
        .filter_map(Value::as_str)
        .filter(|name| name.starts_with("0x"))
        .map(str::to_string)
        .collect()
}

/// Runs `load` in a loop on another thread until the returned guard is dropped.
fn under_load(load: impl Fn() + Send + 'static) -> impl Drop {
    struct Stop(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&stop);
    std::thread::spawn(move || {
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            load();
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    Stop(stop)
}

#[test]
fn distribution_servers_under_load_have_no_address_names() {
    let Some(_serial) = common::start() else {
        return;
    };
    // A C++ server from a Debian package, stripped and built without frame pointers, on its
    // Debian libraries (libmicrohttpd, libsqlite3, ...).
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("symbols-distribution");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(base.join("empty")).unwrap();
    let Some(server) = Debuginfod::serve(&base.join("empty"), &base.join("db.sqlite")) else {
        return;
    };
    assert!(
        common::wait_until(Duration::from_secs(30), || server
            .status("/buildid/00/debuginfo")
            .is_some()),
        "debuginfod did not answer"
    );
    let port = server.port;
    let load = under_load(move || {
        Debuginfod::status_on(port, "/buildid/0123456789abcdef/debuginfo");
    });
    let pid = server.child.id();
    let report = snapshot(&[pid], &[]);
    drop(load);
    assert!(!kernel_sites(&report, pid).is_empty(), "report:\n{report}");
    let raw = address_names(&report, pid);
    assert!(
        raw.is_empty(),
        "debuginfod: runtime addresses {raw:?}; report:\n{report}"
    );

    // A Go server from a Debian package: podman's API service.
    if Command::new("podman").arg("--version").output().is_err() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI=true but podman is not installed; run cargo xtask setup"
        );
        eprintln!("skipping the Go server: podman is not installed");
        return;
    }
    let socket = base.join("podman.sock");
    let podman = Running(
        Command::new("podman")
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start podman system service"),
    );
    let ping = {
        let socket = socket.clone();
        move || {
            use std::io::{Read, Write};
            let Ok(mut s) = std::os::unix::net::UnixStream::connect(&socket) else {
                return false;
            };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let sent = s.write_all(b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n");
            let mut buf = [0u8; 12];
            sent.is_ok() && s.read_exact(&mut buf).is_ok()
        }
    };
    assert!(
        common::wait_until(Duration::from_secs(30), &ping),
        "podman's API service did not answer"
    );
    let load = under_load(move || {
        ping();
    });
    let pid = podman.0.id();
    let report = snapshot(&[pid], &[]);
    drop(load);
    assert!(!kernel_sites(&report, pid).is_empty(), "report:\n{report}");
    let raw = address_names(&report, pid);
    assert!(
        raw.is_empty(),
        "podman: runtime addresses {raw:?}; report:\n{report}"
    );
    for site in kernel_sites(&report, pid) {
        let caller = site["caller"].as_str().unwrap_or_default();
        assert!(
            !caller.contains("+0x"),
            "podman: caller {caller:?} is not a Go function; report:\n{report}"
        );
    }
}

/// The frames of `pid`'s one timerfd callsite from `chain_leaf` to `main`, checked to be the
/// whole chain in order, each with file:line.
fn deep_chain_frames(report: &Report, pid: u32) -> Vec<String> {
    let (caller, frames, _) = timerfd_site(report, pid);
    assert_eq!(caller, "chain_leaf", "report:\n{report}");
    let want = ["chain_leaf", "chain_mid", "chain_top", "main"];
    let at = frames
        .iter()
        .position(|f| f.starts_with("chain_leaf "))
        .unwrap_or_else(|| panic!("no chain_leaf frame in {frames:?}"));
    let chain = frames[at..]
        .iter()
        .take(want.len())
        .cloned()
        .collect::<Vec<_>>();
    let names: Vec<&str> = chain
        .iter()
        .map(|f| f.split(' ').next().unwrap_or_default())
        .collect();
    assert_eq!(names, want, "frames {frames:?}; report:\n{report}");
    for f in &chain {
        assert!(
            f.contains("deep_chain.c:"),
            "frame {f:?} has no file:line; report:\n{report}"
        );
    }
    chain
}

#[test]
fn cfi_unwinding_names_every_frame_of_code_without_frame_pointers() {
    let Some(_serial) = common::start() else {
        return;
    };
    let b = deep_builds();
    let full = Running::spawn(&b.full);
    let report = snapshot(&[full.0.id()], &[]);
    let want = deep_chain_frames(&report, full.0.id());
    // Without the copy only frame pointers are left, and chain_leaf uses rbp as a plain
    // register: nothing above it is found.
    let report = snapshot_with(&[full.0.id()], &[], &["--no-stack-copy"]);
    let (caller, frames, _) = timerfd_site(&report, full.0.id());
    assert_eq!(caller, "chain_leaf", "report:\n{report}");
    assert!(
        !frames.iter().any(|f| f.starts_with("chain_mid ")),
        "frame pointers alone found chain_mid: {frames:?}"
    );
    drop(full);

    // Stripped, its debug file installed by build ID: the same frames, named from that file.
    let dir = debug_dir_of(b, "unwind-installed");
    let stripped = Running::spawn(&b.stripped);
    let report = snapshot(
        &[stripped.0.id()],
        &[("TIMERWATCH_DEBUG_DIRS", dir.as_os_str())],
    );
    assert_eq!(deep_chain_frames(&report, stripped.0.id()), want);
}
