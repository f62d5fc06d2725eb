//! Harness for the root-only end-to-end tests: deciding whether BPF can be used, building and
//! running the C targets, running timerwatch with its output captured, and reading its report.
// Each test file compiles this module into its own binary and uses only part of it.
#![allow(dead_code)]

pub mod daemon;
pub mod go;

use std::collections::BTreeSet;
use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_timerwatch");

/// How long timerwatch may take to load and attach its programs before a test gives up.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);

/// The BPF programs timerwatch loads. The kernel keeps 15 bytes of a name; bpftool prints the
/// full name when BTF has it, the truncated one otherwise, so both forms are matched.
pub const PROGRAMS: [&str; 38] = [
    "hrtimer_init",
    "hrtimer_start",
    "hrtimer_cancel",
    "hrtimer_expire_entry",
    "timer_init",
    "timer_start",
    "timer_cancel",
    "timer_expire_entry",
    "itimer_state",
    "itimer_expire",
    "sys_enter_timer_create",
    "sys_exit_timer_create",
    "sys_enter_timer_delete",
    "sched_process_exit",
    "sched_process_exec",
    // `run` only: following children.
    "sched_process_fork",
    "hrtimer_expire_exit",
    "timer_expire_exit",
    "sched_waking",
    "sched_switch",
    // The Go runtime timer uprobe, loaded only when a Go target is traced.
    "go_timer",
    // The same timer and sched programs attached as BTF raw tracepoints (the default where the
    // kernel has BTF; TIMERWATCH_ATTACH=classic forces the ones above).
    "hrtimer_init_btf",
    "hrtimer_start_btf",
    "hrtimer_cancel_btf",
    "hrtimer_expire_entry_btf",
    "hrtimer_expire_exit_btf",
    "timer_init_btf",
    "timer_start_btf",
    "timer_cancel_btf",
    "timer_expire_entry_btf",
    "timer_expire_exit_btf",
    "itimer_state_btf",
    "itimer_expire_btf",
    "sched_process_exit_btf",
    "sched_process_exec_btf",
    "sched_process_fork_btf",
    "sched_waking_btf",
    "sched_switch_btf",
];

// All tests attach to the same kernel tracepoints, so they run one at a time even when the
// harness is not given --test-threads=1.
static LOCK: Mutex<()> = Mutex::new(());

/// Serializes the test and checks that BPF is usable; `None` means skip (never in CI).
pub fn start() -> Option<MutexGuard<'static, ()>> {
    // A failed test poisons the lock; the next test must still run.
    let guard = LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    require_bpf().then_some(guard)
}

/// False (after a note on stderr) when this machine cannot run BPF tests. In CI that is a
/// failure, never a skip: a green CI run must mean the probes really ran.
pub fn require_bpf() -> bool {
    static USABLE: OnceLock<Result<(), String>> = OnceLock::new();
    match USABLE.get_or_init(bpf_usable) {
        Ok(()) => true,
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but the BPF end-to-end tests cannot run: {why}")
        }
        Err(why) => {
            eprintln!("skipping BPF end-to-end test: {why}");
            false
        }
    }
}

fn bpf_usable() -> Result<(), String> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not running as root".into());
    }
    // Loading the smallest program there is (r0 = 0; exit) tells a kernel without BPF, or a
    // container that forbids it, apart from one where only timerwatch is broken.
    let insns: [u64; 2] = [0xb7, 0x95];
    let license = b"GPL\0";
    #[repr(C)]
    struct ProgLoadAttr {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
    }
    let attr = ProgLoadAttr {
        prog_type: 1, // BPF_PROG_TYPE_SOCKET_FILTER
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
    };
    // SAFETY: attr points to a valid, fully initialized prefix of union bpf_attr; the kernel
    // zero-fills the fields past its size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            5, // BPF_PROG_LOAD
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>() as u32,
        )
    };
    if fd < 0 {
        return Err(format!(
            "cannot load a trivial BPF program: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fd is a descriptor we own.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

/// Builds a C target the way every test needs it: frame pointers and no sibling calls keep
/// every C frame on the stack the probes see.
pub fn compile_c(src: &Path, out: &Path) {
    let result = Command::new("gcc")
        .args([
            "-O2",
            "-g",
            "-fno-omit-frame-pointer",
            "-fno-optimize-sibling-calls",
        ])
        .arg("-o")
        .arg(out)
        .arg(src)
        .output()
        .expect("run gcc");
    assert!(
        result.status.success(),
        "gcc failed for {}:\n{}",
        src.display(),
        String::from_utf8_lossy(&result.stderr)
    );
}

/// Path of a C target from tests/targets, built once per test-binary run.
pub fn target_path(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(build_targets).join(name)
}

fn build_targets() -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/targets");
    // Under cargo's per-target scratch directory rather than a fresh TempDir: a TempDir held in
    // a static is never dropped, so every run would leave a directory behind in /tmp.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("timerwatch-targets");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the targets directory");
    let sources = std::fs::read_dir(&src).expect("read tests/targets");
    for entry in sources {
        let path = entry.expect("list tests/targets").path();
        if path.extension().is_none_or(|e| e != "c") {
            continue;
        }
        let stem = path.file_stem().expect("a C file has a stem");
        compile_c(&path, &dir.join(stem));
    }
    dir
}

/// Polls `done` every 20 ms until it holds or `timeout` passes; returns its last value.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn send_signal(child: &Child, signal: libc::c_int) {
    // SAFETY: plain kill(2) on a child we have not reaped yet, so the pid is still ours.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    assert_eq!(
        rc,
        0,
        "kill({}, {signal}): {}",
        child.id(),
        std::io::Error::last_os_error()
    );
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let mut status = None;
    wait_until(timeout, || {
        status = child.try_wait().expect("wait for a child");
        status.is_some()
    });
    status
}

/// A running C target; killed and reaped when dropped so no test leaves a leaker behind.
pub struct Target {
    pub name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    reaped: bool,
}

impl Target {
    pub fn spawn(name: &'static str, args: &[&str]) -> Target {
        let mut child = Command::new(target_path(name))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start target {name}: {e}"));
        let stdin = child.stdin.take();
        Target {
            name,
            child,
            stdin,
            reaped: false,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets a target that waits on stdin (short_lived) begin its work.
    pub fn release(&mut self) {
        let mut stdin = self.stdin.take().expect("target released twice");
        stdin.write_all(b"go").expect("write to the target's stdin");
    }

    /// Waits for the target to exit by itself, reaping it so no zombie outlives the process.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let status = wait_timeout(&mut self.child, timeout)
            .unwrap_or_else(|| panic!("target {} still running after {timeout:?}", self.name));
        self.reaped = true;
        status
    }

    /// SIGTERM, then the target's stdout, for targets that report on their way out.
    pub fn terminate(&mut self) -> String {
        send_signal(&self.child, libc::SIGTERM);
        let status = self.wait(Duration::from_secs(5));
        let mut out = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            stdout
                .read_to_string(&mut out)
                .expect("read the target's stdout");
        }
        assert!(
            status.success(),
            "target {} exited with {status} after SIGTERM",
            self.name
        );
        out
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

type Buffer = Arc<Mutex<Vec<u8>>>;

fn drain(mut from: impl Read + Send + 'static) -> (Buffer, JoinHandle<()>) {
    let buf = Buffer::default();
    let to = Arc::clone(&buf);
    // Read concurrently: a child blocked on a full pipe would look like a hung timerwatch.
    let handle = thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match from.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => to
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    });
    (buf, handle)
}

fn text(buf: &Buffer) -> String {
    String::from_utf8_lossy(&buf.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
}

/// What a finished timerwatch run left behind.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// Exit 0 and no panic; returns the parsed report.
    pub fn report(&self) -> Report {
        assert!(
            self.status.success(),
            "timerwatch exited with {}; stderr:\n{}",
            self.status,
            self.stderr
        );
        self.assert_no_panic();
        Report::parse(&self.stdout, &self.stderr)
    }

    pub fn assert_no_panic(&self) {
        assert!(
            !self.stderr.contains("panicked"),
            "timerwatch panicked; stderr:\n{}",
            self.stderr
        );
    }
}

/// A running timerwatch with stdout and stderr captured; killed and reaped when dropped.
pub struct Tool {
    child: Child,
    stdout: Buffer,
    stderr: Buffer,
    readers: Vec<JoinHandle<()>>,
    reaped: bool,
}

impl Tool {
    pub fn spawn(args: &[&str]) -> Tool {
        Tool::spawn_command(Command::new(BIN).args(args))
    }

    pub fn spawn_command(command: &mut Command) -> Tool {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {command:?}: {e}"));
        let (stdout, out_reader) = drain(child.stdout.take().expect("piped stdout"));
        let (stderr, err_reader) = drain(child.stderr.take().expect("piped stderr"));
        Tool {
            child,
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
            reaped: false,
        }
    }

    pub fn stdout(&self) -> String {
        text(&self.stdout)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        text(&self.stderr)
    }

    /// Waits for the "attached" line timerwatch prints once its probes are live, so that the
    /// test's next step happens inside the trace window.
    pub fn wait_attached(&mut self) {
        let mut exited = None;
        let attached = wait_until(ATTACH_TIMEOUT, || {
            exited = self.child.try_wait().expect("wait for timerwatch");
            self.stderr().contains("attached") || exited.is_some()
        });
        if let Some(status) = exited {
            self.join_readers();
            assert!(
                self.stderr().contains("attached"),
                "timerwatch exited with {status} before attaching; stderr:\n{}",
                self.stderr()
            );
        }
        assert!(
            attached,
            "timerwatch did not attach within {ATTACH_TIMEOUT:?}; stderr:\n{}",
            self.stderr()
        );
    }

    pub fn signal(&self, signal: libc::c_int) {
        send_signal(&self.child, signal);
    }

    /// Waits for exit (failing the test after `timeout`) and collects everything it printed.
    pub fn finish(&mut self, timeout: Duration) -> Finished {
        let Some(status) = wait_timeout(&mut self.child, timeout) else {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.reaped = true;
            self.join_readers();
            panic!(
                "timerwatch did not exit within {timeout:?}; stderr:\n{}",
                self.stderr()
            );
        };
        self.reaped = true;
        self.join_readers();
        Finished {
            status,
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }

    fn join_readers(&mut self) {
        // The pipes reach EOF once the child is gone, so this cannot block for long.
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

impl Drop for Tool {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `timerwatch args…` to completion; `timeout` bounds a hang, not the expected runtime.
pub fn run(args: &[&str], timeout: Duration) -> Finished {
    Tool::spawn(args).finish(timeout)
}

/// `snapshot --json` of `pids` for `duration_s` seconds; asserts a clean exit.
pub fn snapshot(pids: &[u32], duration_s: u32) -> Report {
    let mut args = vec!["snapshot".to_owned(), "--json".to_owned()];
    for pid in pids {
        args.extend(["-p".to_owned(), pid.to_string()]);
    }
    args.extend(["--duration".to_owned(), duration_s.to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let timeout = ATTACH_TIMEOUT + Duration::from_secs(u64::from(duration_s) + 30);
    run(&args, timeout).report()
}

/// A parsed `timerwatch.report/v1` document. Its Display is the whole pretty-printed JSON,
/// which every assertion message includes so a failure explains itself.
pub struct Report(pub Value);

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pretty = serde_json::to_string_pretty(&self.0).map_err(|_| fmt::Error)?;
        f.write_str(&pretty)
    }
}

impl Report {
    pub fn parse(stdout: &str, stderr: &str) -> Report {
        let value: Value = serde_json::from_str(stdout).unwrap_or_else(|e| {
            panic!("stdout is not one JSON document ({e}):\n{stdout}\nstderr:\n{stderr}")
        });
        let report = Report(value);
        assert_eq!(
            report.0["schema"], "timerwatch.report/v1",
            "wrong schema in report:\n{report}"
        );
        report
    }

    /// A numeric field of `obj` (a part of this report), failing with the report if absent.
    pub fn num(&self, obj: &Value, key: &str) -> f64 {
        obj[key]
            .as_f64()
            .unwrap_or_else(|| panic!("field {key:?} is not a number in {obj}\nreport:\n{self}"))
    }

    pub fn duration_s(&self) -> f64 {
        self.num(&self.0, "duration_s")
    }

    fn list(&self, key: &str) -> &[Value] {
        self.0[key]
            .as_array()
            .unwrap_or_else(|| panic!("field {key:?} is not an array in report:\n{self}"))
    }

    pub fn find_process(&self, pid: u32) -> Option<&Value> {
        self.list("processes").iter().find(|p| p["pid"] == pid)
    }

    pub fn process(&self, pid: u32) -> &Value {
        self.find_process(pid)
            .unwrap_or_else(|| panic!("pid {pid} not in processes; report:\n{self}"))
    }

    pub fn find_exited(&self, pid: u32) -> Option<&Value> {
        self.list("exited").iter().find(|p| p["pid"] == pid)
    }

    /// The `kind` callsite of `pid` whose first frame outside libc is `caller`. Kind is part of
    /// the key because one function can arm timers of several kinds (a sleep also re-arms the
    /// CPU's tick, for one).
    pub fn callsite(&self, pid: u32, caller: &str, kind: &str) -> &Value {
        self.process(pid)["callsites"]
            .as_array()
            .unwrap_or_else(|| {
                panic!(
                    "pid {pid} has no callsites array; report:
{self}"
                )
            })
            .iter()
            .find(|c| c["caller"] == caller && c["kind"] == kind)
            .unwrap_or_else(|| {
                panic!(
                    "pid {pid} has no {kind} callsite with caller {caller:?}; report:
{self}"
                )
            })
    }

    /// Asserts `actual` is within `tolerance` (a fraction) of `expected`.
    pub fn assert_near(&self, what: &str, actual: f64, expected: f64, tolerance: f64) {
        assert!(
            (actual - expected).abs() <= expected * tolerance,
            "{what} = {actual}, expected {expected:.1} ± {:.0}%; report:\n{self}",
            tolerance * 100.0
        );
    }
}

/// IDs of loaded BPF programs that carry one of timerwatch's program names.
pub fn our_program_ids() -> BTreeSet<u64> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .expect("run bpftool (the end-to-end tests need it to check that nothing stays loaded)");
    assert!(
        out.status.success(),
        "bpftool prog show failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let progs: Value = serde_json::from_slice(&out.stdout).expect("bpftool -j prints JSON");
    let ours = |name: &str| {
        PROGRAMS
            .iter()
            .any(|p| name == *p || name == p.get(..15).unwrap_or(p))
    };
    progs
        .as_array()
        .expect("bpftool prog show prints an array")
        .iter()
        .filter(|p| p["name"].as_str().is_some_and(ours))
        .filter_map(|p| p["id"].as_u64())
        .collect()
}

/// Asserts that none of `loaded` is still loaded; the kernel frees a program once its last
/// file and link are closed, which can trail the owner's exit by a moment.
pub fn assert_unloaded(loaded: &BTreeSet<u64>) {
    let mut still = BTreeSet::new();
    wait_until(Duration::from_secs(2), || {
        still = our_program_ids().intersection(loaded).copied().collect();
        still.is_empty()
    });
    assert!(
        still.is_empty(),
        "BPF programs {still:?} are still loaded after timerwatch exited"
    );
}

/// `BIN` itself when user `nobody` can reach it, else a copy in `dir` that it can.
pub fn binary_for_nobody(dir: &Path) -> PathBuf {
    let world_x = |p: &Path| {
        p.as_os_str().is_empty()
            || std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 != 0)
    };
    let bin = Path::new(BIN);
    if bin.ancestors().all(world_x) {
        return bin.to_owned();
    }
    let copy = dir.join("timerwatch");
    std::fs::copy(bin, &copy).expect("copy timerwatch for nobody");
    // tempfile creates private (0700) directories.
    for path in [dir, copy.as_path()] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .expect("make the copy reachable for nobody");
    }
    copy
}
