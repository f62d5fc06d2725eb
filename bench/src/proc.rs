//! Child processes for the benchmark: line-oriented output read with deadlines, signals, and
//! clean-up that cannot leave a tracer attached or a workload running.

use std::ffi::c_int;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use xtask::util;

pub const SIGINT: c_int = 2;
pub const SIGKILL: c_int = 9;
const PR_SET_PDEATHSIG: c_int = 1;
const RESIGNAL: Duration = Duration::from_secs(3);

extern "C" {
    fn kill(pid: c_int, sig: c_int) -> c_int;
    fn prctl(option: c_int, ...) -> c_int;
}

/// Lines of a child's stream, read on a thread so that every wait can have a deadline.
pub struct Lines {
    rx: Receiver<String>,
}

impl Lines {
    fn spawn(stream: impl Read + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { rx }
    }

    /// The next line, or `None` at EOF or once `deadline` has passed.
    pub fn next_until(&self, deadline: Instant) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.rx.recv_timeout(left).ok()
    }

    /// The first line satisfying `want`, skipping others (kept in `skipped` for error messages).
    pub fn wait_for(
        &self,
        deadline: Instant,
        skipped: &mut Vec<String>,
        want: impl Fn(&str) -> bool,
    ) -> Option<String> {
        while let Some(line) = self.next_until(deadline) {
            if want(&line) {
                return Some(line);
            }
            skipped.push(line);
        }
        None
    }

    /// Everything until EOF (or the deadline).
    pub fn rest(&self, deadline: Instant) -> Vec<String> {
        std::iter::from_fn(|| self.next_until(deadline)).collect()
    }

    /// What has arrived so far, without waiting.
    pub fn available(&self) -> Vec<String> {
        self.rx.try_iter().collect()
    }
}

/// A child with piped stdio. Dropping it kills and reaps it, so an early return (an error, a
/// failed assertion) never leaves a workload spinning or a tracer attached.
pub struct Proc {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    pub stdout: Lines,
    pub stderr: Lines,
    reaped: Option<ExitStatus>,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Self> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // If the bench itself dies (SIGKILL, a crash), its children follow at once
                // instead of tracing or spinning until their own time limits.
                prctl(PR_SET_PDEATHSIG, SIGKILL as std::ffi::c_ulong);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{}`", util::display(cmd)))?;
        let stdin = child.stdin.take();
        let stdout = Lines::spawn(child.stdout.take().expect("piped stdout"));
        let stderr = Lines::spawn(child.stderr.take().expect("piped stderr"));
        Ok(Self {
            name: name.to_string(),
            child,
            stdin,
            stdout,
            stderr,
            reaped: None,
        })
    }

    /// Starts a bench workload (bench/workload.h's protocol) and waits for its "ready".
    pub fn spawn_workload(name: &str, cmd: &mut Command) -> Result<Self> {
        let mut p = Self::spawn(name, cmd)?;
        expect_line(&mut p, Duration::from_secs(10), |l| l.starts_with("ready "))?;
        Ok(p)
    }

    /// EOF on stdin, which a workload exits on, then up to `timeout` for it to go (killed
    /// after that).
    pub fn finish(&mut self, timeout: Duration) {
        self.close_stdin();
        if self.wait_timeout(timeout).is_none() {
            self.kill();
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn send_line(&mut self, line: &str) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("{}: stdin already closed", self.name))?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .with_context(|| format!("{} exited early", self.name))
    }

    /// EOF on stdin: the bench targets exit on it.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    pub fn signal(&self, sig: c_int) {
        if self.reaped.is_none() {
            // SAFETY: kill(2) on our own child, not yet reaped, so the pid cannot be reused.
            unsafe { kill(self.child.id() as c_int, sig) };
        }
    }

    /// Waits until the child exits or `timeout` passes.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        while self.reaped.is_none() {
            match self.child.try_wait() {
                Ok(Some(status)) => self.reaped = Some(status),
                Ok(None) if Instant::now() < end => thread::sleep(Duration::from_millis(5)),
                _ => break,
            }
        }
        self.reaped
    }

    /// Sends `sig`, waits up to `timeout`, then kills. Returns the exit status if it exited on
    /// its own (in time); otherwise where its threads were waiting, for the error message.
    ///
    /// The signal is repeated every 3 s: bpftrace 0.17 can miss a SIGINT that lands between its
    /// exit-flag check and an unbounded `epoll_wait` (seen here about once in 50 stops). Not
    /// sooner: a second SIGINT also cuts short its printing of maps at exit.
    pub fn stop(&mut self, sig: c_int, timeout: Duration) -> Result<ExitStatus, String> {
        let end = Instant::now() + timeout;
        loop {
            self.signal(sig);
            let left = end.saturating_duration_since(Instant::now());
            if let Some(status) = self.wait_timeout(left.min(RESIGNAL)) {
                return Ok(status);
            }
            if left <= RESIGNAL {
                break;
            }
        }
        let stuck = self.where_waiting();
        self.kill();
        Err(stuck)
    }

    /// Each thread's state and kernel wait channel.
    fn where_waiting(&self) -> String {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return "gone".into();
        };
        tasks
            .flatten()
            .map(|t| {
                let read = |f: &str| std::fs::read_to_string(t.path().join(f)).unwrap_or_default();
                let stat = read("stat");
                let state = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_string))
                    .unwrap_or_default();
                format!(
                    "{} {} {state} {}",
                    t.file_name().to_string_lossy(),
                    read("comm").trim(),
                    read("wchan")
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn kill(&mut self) {
        if self.reaped.is_none() {
            let _ = self.child.kill();
            self.reaped = self.child.wait().ok();
        }
    }

    /// A one-line description of why the child failed, from what it printed on stderr.
    pub fn stderr_tail(&self) -> String {
        let lines = self.stderr.available();
        let tail: Vec<&str> = lines
            .iter()
            .map(String::as_str)
            .filter(|l| !l.trim().is_empty() && !l.contains("RLIMIT_MEMLOCK"))
            .rev()
            .take(3)
            .collect();
        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }

    /// CPU time (user + system) of all threads, from their schedstat (ns resolution, unlike the
    /// tick-based /proc/PID/stat).
    pub fn cpu_seconds(&self) -> Option<f64> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid())).ok()?;
        let mut ns = 0u64;
        for task in tasks.flatten() {
            let text = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
            ns += text.split_whitespace().next()?.parse::<u64>().ok()?;
        }
        Some(ns as f64 / 1e9)
    }

    /// The BPF programs this process holds (by program or link fd).
    pub fn bpf_programs(&self) -> Vec<u32> {
        let mut ids = Vec::new();
        let Ok(fds) = std::fs::read_dir(format!("/proc/{}/fdinfo", self.pid())) else {
            return ids;
        };
        for fd in fds.flatten() {
            let Ok(info) = std::fs::read_to_string(fd.path()) else {
                continue;
            };
            for line in info.lines() {
                if let Some(id) = line.strip_prefix("prog_id:") {
                    if let Ok(id) = id.trim().parse() {
                        ids.push(id);
                    }
                }
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stdin = None;
        self.kill();
    }
}

/// Reads the first line matching `want` from `proc`'s stdout, failing with what it said.
pub fn expect_line(
    proc: &mut Proc,
    timeout: Duration,
    want: impl Fn(&str) -> bool,
) -> Result<String> {
    let mut skipped = Vec::new();
    match proc
        .stdout
        .wait_for(Instant::now() + timeout, &mut skipped, want)
    {
        Some(line) => Ok(line),
        None => {
            let status = proc.wait_timeout(Duration::from_millis(100));
            bail!(
                "{} did not print the expected line within {:?} ({}); stdout: {:?}; stderr: {}",
                proc.name,
                timeout,
                status.map_or("still running".to_string(), |s| s.to_string()),
                skipped.iter().rev().take(3).collect::<Vec<_>>(),
                proc.stderr_tail()
            )
        }
    }
}

/// Reads stderr until `want` matches (a tracer's "attached" line); returns the lines before it.
pub fn expect_stderr(
    proc: &mut Proc,
    timeout: Duration,
    want: impl Fn(&str) -> bool,
) -> Result<Vec<String>> {
    let mut skipped = Vec::new();
    if proc
        .stderr
        .wait_for(Instant::now() + timeout, &mut skipped, want)
        .is_some()
    {
        return Ok(skipped);
    }
    let status = proc.wait_timeout(Duration::from_millis(100));
    bail!(
        "{} did not get ready within {:?} ({}): {}",
        proc.name,
        timeout,
        status.map_or("still running".to_string(), |s| s.to_string()),
        skipped
            .iter()
            .filter(|l| !l.contains("RLIMIT_MEMLOCK"))
            .rev()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join(" | ")
    )
}

/// Memory of a process from /proc/PID/status, in bytes: (VmRSS, RssAnon).
pub fn rss(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    };
    Some((field("VmRSS:")?, field("RssAnon:")?))
}
