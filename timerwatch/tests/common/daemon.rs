//! Harness for the daemon tests: the daemon and a Prometheus server on free loopback ports, a
//! plain HTTP/1.0 client, an OpenMetrics text reader, fake pod cgroups and kubelet log trees,
//! and a forking load generator. Everything started here is killed (and every cgroup removed)
//! on drop.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{wait_until, Tool, BIN};

/// A port nobody listens on now; the kernel does not hand it out again right away.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// (status, body) of `GET path`; HTTP/1.0 so that no server answers in chunks.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One sample of an OpenMetrics exposition.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> &str {
        self.labels.get(key).map_or("", String::as_str)
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if key.is_empty() {
            return out;
        }
        assert_eq!(chars.next(), Some('"'), "label {key} not quoted in {s}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').to_string(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
}

/// The samples of an exposition (comments skipped).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (name, labels, rest) = match line.find('{') {
                Some(i) => {
                    let end = line.rfind('}').expect("closing brace");
                    (
                        &line[..i],
                        parse_labels(&line[i + 1..end]),
                        &line[end + 1..],
                    )
                }
                None => {
                    let (n, r) = line.split_once(' ').expect("name and value");
                    (n, BTreeMap::new(), r)
                }
            };
            let value = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no value in {line}"));
            Sample {
                name: name.to_string(),
                labels,
                value,
            }
        })
        .collect()
}

/// The pid of the process whose command line has all of `parts`, e.g. a daemon's unique
/// `--listen` address (the harness's `Tool` does not expose its child's pid).
pub fn find_pid(parts: &[&str]) -> Option<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .find(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<String> = cmd
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            args.first().is_some_and(|a| a.ends_with("timerwatch"))
                && parts.iter().all(|p| args.iter().any(|a| a.contains(p)))
        })
}

/// A `/proc/PID/status` field's first number (VmRSS in KiB, CapEff in hex as text).
pub fn status_field(pid: u32, key: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next().map(str::to_string))
}

/// A running `timerwatch daemon` on a free loopback port.
pub struct Daemon {
    pub tool: Tool,
    pub addr: SocketAddr,
}

impl Daemon {
    /// `timerwatch daemon --listen <free port> --interval 1 <extra…>`, attached.
    pub fn start(extra: &[&str]) -> Daemon {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut cmd = Command::new(BIN);
        cmd.args(Self::args(addr)).args(extra);
        Daemon::attach(&mut cmd, addr)
    }

    pub fn args(addr: SocketAddr) -> Vec<String> {
        vec![
            "daemon".into(),
            format!("--listen={addr}"),
            "--interval=1".into(),
        ]
    }

    /// Runs `cmd` (which must start a daemon listening on `addr`) until it has attached.
    pub fn attach(cmd: &mut Command, addr: SocketAddr) -> Daemon {
        let mut tool = Tool::spawn_command(cmd);
        tool.wait_attached();
        Daemon { tool, addr }
    }

    pub fn pid(&self) -> u32 {
        let listen = format!("--listen={}", self.addr);
        let mut pid = None;
        wait_until(Duration::from_secs(5), || {
            pid = find_pid(&["daemon", &listen]);
            pid.is_some()
        });
        pid.unwrap_or_else(|| panic!("no daemon process listening on {}", self.addr))
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).unwrap_or_else(|e| {
            panic!(
                "GET {path} from the daemon: {e}; stderr:\n{}",
                self.tool.stderr()
            )
        })
    }

    /// Like `get`, retrying for up to a minute: a daemon catching up on a backlog of events
    /// may answer late.
    pub fn get_patiently(&self, path: &str) -> (u16, String) {
        let mut last = None;
        wait_until(Duration::from_secs(60), || {
            last = http_get(self.addr, path).ok();
            last.is_some()
        });
        last.unwrap_or_else(|| {
            panic!(
                "GET {path}: no answer within a minute; stderr:\n{}",
                self.tool.stderr()
            )
        })
    }

    pub fn metrics(&self) -> Vec<Sample> {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "/metrics answered {status}: {body}");
        assert!(
            body.ends_with("# EOF\n"),
            "not an OpenMetrics exposition:\n{body}"
        );
        parse_metrics(&body)
    }

    /// Polls /metrics (every 500 ms, up to `timeout`) until `pick` finds what it wants.
    pub fn wait_for<T>(
        &self,
        timeout: Duration,
        mut pick: impl FnMut(&[Sample]) -> Option<T>,
    ) -> Option<T> {
        let end = std::time::Instant::now() + timeout;
        loop {
            if let Some(found) = pick(&self.metrics()) {
                return Some(found);
            }
            if std::time::Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// A Prometheus server scraping `target` every second, with its storage in a tempdir.
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn start(target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir for Prometheus");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: timerwatch\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("start prometheus (cargo xtask setup installs Debian's): {e}")
            });
        let p = Prometheus { child, addr, dir };
        let ready = wait_until(Duration::from_secs(30), || {
            http_get(p.addr, "/-/ready").is_ok_and(|(s, _)| s == 200)
        });
        assert!(ready, "Prometheus not ready; log:\n{}", p.log());
        p
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The `data` of an instant query through the HTTP API; panics on an API error.
    pub fn query(&self, promql: &str) -> Value {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let (status, body) = http_get(self.addr, &path).expect("query Prometheus");
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("Prometheus answered {status} with non-JSON ({e}): {body}"));
        assert_eq!(v["status"], "success", "query {promql:?} failed: {body}");
        v["data"].clone()
    }

    /// The result vector of an instant query.
    pub fn vector(&self, promql: &str) -> Vec<Value> {
        self.query(promql)["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where a cgroup v2 hierarchy is mounted, and one v1 hierarchy if the host has any.
pub fn cgroup_mounts() -> (Option<PathBuf>, Option<PathBuf>) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v2 = None;
    let mut v1 = None;
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = left.split_whitespace().nth(4).map(PathBuf::from);
        match right.split_whitespace().next() {
            Some("cgroup2") if v2.is_none() => v2 = mount_point,
            Some("cgroup") if v1.is_none() => v1 = mount_point,
            _ => {}
        }
    }
    (v2, v1)
}

/// A cgroup path made by the test under `root`: created on `new`, emptied (its processes
/// killed) and removed, with every directory the test created, on drop.
pub struct FakeCgroup {
    created: Vec<PathBuf>,
}

impl FakeCgroup {
    pub fn new(root: &Path, relative: &str) -> FakeCgroup {
        let mut created = Vec::new();
        let mut dir = root.to_path_buf();
        for part in relative.trim_matches('/').split('/') {
            dir.push(part);
            if !dir.exists() {
                std::fs::create_dir(&dir)
                    .unwrap_or_else(|e| panic!("create cgroup {}: {e}", dir.display()));
                created.push(dir.clone());
            }
        }
        FakeCgroup { created }
    }

    pub fn leaf(&self) -> &Path {
        self.created.last().expect("the test created the leaf")
    }

    /// Moves a process into the leaf.
    pub fn add(&self, pid: u32) {
        std::fs::write(self.leaf().join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("move {pid} into {}: {e}", self.leaf().display()));
    }

    fn members(&self) -> Vec<i32> {
        std::fs::read_to_string(self.leaf().join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for FakeCgroup {
    fn drop(&mut self) {
        // Only the test's own processes are in here.
        wait_until(Duration::from_secs(5), || {
            let members = self.members();
            for pid in &members {
                // SAFETY: plain kill(2).
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
            members.is_empty()
        });
        for dir in self.created.iter().rev() {
            // A killed process leaves the cgroup only once reaped; retry for a moment.
            wait_until(Duration::from_secs(5), || std::fs::remove_dir(dir).is_ok());
        }
    }
}

/// A kubelet log tree: `pods/<ns>_<pod>_<uid>/<container>/0.log` and, with `link_id`,
/// `containers/<pod>_<ns>_<container>-<id>.log`.
pub fn fake_kubelet_pod(
    root: &Path,
    namespace: &str,
    pod: &str,
    uid: &str,
    container: &str,
    link_id: Option<&str>,
) {
    let dir = root.join(format!("pods/{namespace}_{pod}_{uid}/{container}"));
    std::fs::create_dir_all(&dir).expect("create the pod log dir");
    std::fs::write(dir.join("0.log"), "").expect("write a log file");
    if let Some(id) = link_id {
        let links = root.join("containers");
        std::fs::create_dir_all(&links).expect("create the containers dir");
        std::os::unix::fs::symlink(
            dir.join("0.log"),
            links.join(format!("{pod}_{namespace}_{container}-{id}.log")),
        )
        .expect("link the container log");
    }
}

/// The first child of `pid` (e.g. the program `unshare --fork` started).
pub fn child_of(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Forks `rate` children a second until SIGTERM; each child arms a timerfd (so it enters the
/// daemon's table, with a stack) and exits at once, except that with `GO_EVERY PROGRAM` every
/// GO_EVERY-th child execs PROGRAM instead. Prints "forked execed" counts when it ends.
const FORKER_C: &str = r#"
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

__attribute__((noinline)) static void arm_and_exit(void)
{
	struct itimerspec its = { .it_value = { .tv_sec = 60 } };
	int fd = timerfd_create(CLOCK_MONOTONIC, 0);
	if (fd >= 0)
		timerfd_settime(fd, 0, &its, NULL);
	_exit(0);
}

int main(int argc, char **argv)
{
	long rate = argc > 1 ? atol(argv[1]) : 1000;
	long every = argc > 3 ? atol(argv[2]) : 0;
	long long period = 1000000000LL / rate, forked = 0, execed = 0;
	struct timespec now, next;

	signal(SIGCHLD, SIG_IGN); /* children are reaped by the kernel */
	signal(SIGTERM, on_term);
	clock_gettime(CLOCK_MONOTONIC, &next);
	while (!stop) {
		int exec_it = every > 0 && forked % every == 0;
		pid_t pid = fork();
		if (pid == 0) {
			if (exec_it) {
				execl(argv[3], argv[3], (char *)NULL);
				_exit(127);
			}
			arm_and_exit();
		}
		if (pid > 0) {
			forked++;
			execed += exec_it;
		}
		next.tv_nsec += period;
		while (next.tv_nsec >= 1000000000L) {
			next.tv_nsec -= 1000000000L;
			next.tv_sec++;
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		/* Far behind (a stalled CPU): do not burst to catch up. */
		if (now.tv_sec > next.tv_sec + 1)
			next = now;
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
	}
	printf("%lld %lld\n", forked, execed);
	return 0;
}
"#;

/// The running forker; killed on drop so a failing test leaves no fork storm behind.
pub struct Forker {
    child: Child,
}

impl Forker {
    pub fn start(bin: &Path, rate: u32) -> Forker {
        Self::spawn(Command::new(bin).arg(rate.to_string()))
    }

    /// Every `every`-th child execs `program` instead of arming a timerfd.
    pub fn start_execing(bin: &Path, rate: u32, every: u32, program: &Path) -> Forker {
        Self::spawn(
            Command::new(bin)
                .arg(rate.to_string())
                .arg(every.to_string())
                .arg(program),
        )
    }

    fn spawn(cmd: &mut Command) -> Forker {
        let child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the forker");
        Forker { child }
    }

    /// Stops it and returns how many processes it forked, and how many of them exec'd.
    pub fn stop(mut self) -> (u64, u64) {
        // SAFETY: plain kill(2) on our unreaped child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let mut out = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            let _ = stdout.read_to_string(&mut out);
        }
        let mut n = out
            .split_whitespace()
            .map(|v| v.parse().expect("the forker's counts"));
        (n.next().expect("forked"), n.next().expect("exec'd"))
    }
}

impl Drop for Forker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds the forker into `dir`.
pub fn build_forker(dir: &Path) -> PathBuf {
    let src = dir.join("soak_forker.c");
    let bin = dir.join("soak_forker");
    std::fs::write(&src, FORKER_C).expect("write the forker source");
    super::compile_c(&src, &bin);
    bin
}

/// The `- NAME` items under `add:` in deploy/daemonset.yaml: the capabilities the manifest grants.
pub fn manifest_capabilities() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/daemonset.yaml");
    let text = std::fs::read_to_string(&path).expect("read deploy/daemonset.yaml");
    let mut lines = text.lines().skip_while(|l| l.trim() != "add:").skip(1);
    let mut caps = Vec::new();
    for line in lines.by_ref() {
        match line.trim().strip_prefix("- ") {
            Some(cap) => caps.push(cap.to_string()),
            None => break,
        }
    }
    assert!(
        !caps.is_empty(),
        "no capabilities.add list in {}",
        path.display()
    );
    caps
}

/// The daemon's memory as the soak and the churn sample it, KiB: its anonymous resident memory,
/// where a leak would show. Not VmRSS: that also counts the file pages of binaries the daemon
/// maps while it names a new callsite's stack (the test harness's own debug build, traced like
/// every process, adds 10-15 MiB of them for the fraction of a second until they are let go),
/// which a once-a-second sample catches or misses by chance.
pub fn anon_rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "RssAnon:").and_then(|v| v.parse().ok())
}

/// A long run's daemon memory, as the soak and the churn judge it: the highest sample of
/// [`anon_rss_kib`] of an early and of a late window, and how far the late one may rise above the early
/// one before it counts as growth (a fifth, or 10 MiB, allocator noise on a small daemon).
pub struct RssWindows {
    pub first: u64,
    pub last: u64,
    pub allowed: u64,
}

impl RssWindows {
    pub fn of(early: &[u64], late: &[u64]) -> Self {
        let first = *early.iter().max().expect("RSS samples in the early window");
        let last = *late.iter().max().expect("RSS samples in the late window");
        Self {
            first,
            last,
            allowed: first + (first / 5).max(10 * 1024),
        }
    }

    /// Fails unless the load ran at 80% of `rate` processes a second over `secs`, and the
    /// late window stayed within the bound; `rss` is every sample, for the message.
    pub fn assert_flat_under_load(&self, forked: u64, rate: u32, secs: u64, rss: &[u64]) {
        let Self {
            first,
            last,
            allowed,
        } = *self;
        assert!(
            forked as f64 >= 0.8 * f64::from(rate) * secs as f64,
            "the load reached only {forked} processes in {secs}s: it was not applied"
        );
        assert!(
            last <= allowed,
            "daemon RSS grew from {first} KiB to {last} KiB (bound {allowed} KiB): {rss:?}"
        );
    }
}
