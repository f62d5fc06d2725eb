//! Go census mode's cost (issue #11): what `timerwatch daemon` in its default mode (census: heap
//! walks at each report, no uprobes) costs the Go worst case, and what it costs itself per Go
//! process.
//!
//! (a) The `AfterFunc`+`Stop` loop (bench/afterfunc) untraced, then started after a daemon,
//! interleaved round by round; the ratio of the two rates is taken within each round. Its leak
//! variant (one `AfterFunc(time.Hour)` kept every 10 ms) must still be named by the daemon.
//! (b) What the census costs the daemon per Go process per report, with 1, 10 and 50 idle
//! processes of one Go binary holding leaked timers: the daemon counts its census walks and the
//! CPU time its thread spent in them (`timerwatch_go_census_{walks,cpu_seconds}_total`), so the
//! figure is the ratio of the two counters' rises over the window — the walks' own work, which
//! other load on the host does not move the way it moves the whole daemon's CPU (measured
//! beside it as context: (CPU with N − CPU with 0) / (N × reports)). Each N runs a fresh copy of
//! the binary (a new inode), so the daemon's analysis counter must rise by one for the whole set.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::cost::{LoopResult, GO_TARGET};
use super::proc::{expect_line, expect_stderr, Proc, SIGINT};
use super::stats::{self, show, Summary};
use super::{Env, ATTACH_TIMEOUT};

/// The issue's goal for the loop under the daemon's default mode.
pub const MIN_SPEED: f64 = 0.9;
/// Process counts of (b).
pub const COUNTS: [usize; 3] = [1, 10, 50];
/// The leak variant's callsite (bench/afterfunc: `leakOne`'s closure names its function).
const LEAK_CALLER: &str = "main.leakOne";
/// Seconds of leaking by each process of (b) before it idles: 100 timers it keeps.
const HELD_SECONDS: &str = "1";

pub struct Plan {
    pub rounds: usize,
    /// (a): each run of the loop, untraced and traced.
    pub window: f64,
    /// (b): daemon CPU measured over this many seconds per process count.
    pub cpu_window: f64,
}

impl Plan {
    pub fn new(quick: bool, rounds: usize) -> Self {
        if quick {
            Self {
                rounds: rounds.min(2),
                window: 5.0,
                cpu_window: 5.0,
            }
        } else {
            Self {
                rounds: rounds.min(3),
                window: 60.0,
                cpu_window: 20.0,
            }
        }
    }
}

#[derive(Default)]
pub struct SpeedRound {
    pub untraced: Option<LoopResult>,
    pub traced: Option<LoopResult>,
    /// The daemon reported the loop's process with its Go version: it was in the census.
    pub seen: bool,
}

#[derive(Clone, Debug, Default)]
pub struct LeakSeen {
    pub caller: String,
    pub attribution: String,
    pub live: f64,
    pub verdict: String,
    pub expected: f64,
}

#[derive(Clone, Debug)]
pub struct CpuRound {
    pub processes: usize,
    /// Daemon CPU seconds per report over the window, and with no Go process of ours.
    pub per_report: f64,
    pub baseline_per_report: f64,
    /// Analyses the daemon ran while the set started.
    pub analyses: f64,
    /// Census CPU seconds per process walk over the window (the counters' ratio).
    pub per_walk: Option<f64>,
}

pub struct GoCensus {
    pub plan: Plan,
    pub go_version: &'static str,
    pub speed: Vec<SpeedRound>,
    pub leak: Option<LeakSeen>,
    pub cpu: Vec<CpuRound>,
}

impl GoCensus {
    pub fn speed_ratio(&self, wall: bool) -> Option<Summary> {
        let rate = |r: &LoopResult| if wall { r.rate } else { r.cpu_rate() };
        let v: Vec<f64> = self
            .speed
            .iter()
            .filter_map(|r| Some(rate(r.traced.as_ref()?) / rate(r.untraced.as_ref()?)))
            .collect();
        Summary::of(&v)
    }

    /// Census CPU per Go process per report (one walk each), for `n` processes.
    pub fn per_walk(&self, n: usize) -> Option<Summary> {
        let v: Vec<f64> = self
            .cpu
            .iter()
            .filter(|c| c.processes == n)
            .filter_map(|c| c.per_walk)
            .collect();
        Summary::of(&v)
    }

    /// Whole-daemon CPU per Go process per report, for `n` processes (context: host noise).
    pub fn per_process(&self, n: usize) -> Option<Summary> {
        let v: Vec<f64> = self
            .cpu
            .iter()
            .filter(|c| c.processes == n)
            .map(|c| (c.per_report - c.baseline_per_report) / n as f64)
            .collect();
        Summary::of(&v)
    }

    pub fn analyses(&self, n: usize) -> Option<Summary> {
        let v: Vec<f64> = self
            .cpu
            .iter()
            .filter(|c| c.processes == n)
            .map(|c| c.analyses)
            .collect();
        Summary::of(&v)
    }
}

pub(crate) fn free_addr() -> Result<SocketAddr> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("binding an ephemeral port")?
        .port();
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// The body of `GET path` (HTTP/1.0: no chunked answers).
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    match text.split_once("\r\n\r\n") {
        Some((head, body))
            if head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200") =>
        {
            Ok(body.to_string())
        }
        _ => bail!(
            "GET {path} from {addr}: {}",
            text.lines().next().unwrap_or("")
        ),
    }
}

/// utime + stime of the whole process (exited threads included), in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the comm: state is field 3; utime and stime are fields 14 and 15.
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { sysconf(SC_CLK_TCK) } as f64;
    Some(ticks / hz.max(1.0))
}

const SC_CLK_TCK: std::ffi::c_int = 2;
extern "C" {
    fn sysconf(name: std::ffi::c_int) -> std::ffi::c_long;
}

/// A running `timerwatch daemon` (default mode) on a free loopback port.
pub(crate) struct Daemon {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Daemon {
    pub fn start(env: &Env, extra: &[&str]) -> Result<Self> {
        Self::start_binary(&env.timerwatch, extra)
    }

    /// The daemon of the `timerwatch` binary at `bin`.
    pub fn start_binary(bin: &Path, extra: &[&str]) -> Result<Self> {
        Self::start_at(bin, free_addr()?, extra)
    }

    /// The daemon of `bin` serving on `addr`.
    pub fn start_at(bin: &Path, addr: SocketAddr, extra: &[&str]) -> Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.arg("daemon")
            .arg(format!("--listen={addr}"))
            .args(extra);
        let mut proc = Proc::spawn("timerwatch daemon", &mut cmd)?;
        expect_stderr(&mut proc, ATTACH_TIMEOUT, |l| {
            l.starts_with("timerwatch: attached")
        })?;
        Ok(Self { proc, addr })
    }

    /// The last report; `Null` before the daemon's first interval has passed (503).
    pub fn report(&self) -> Result<Value> {
        match http_get(self.addr, "/report") {
            Err(e) if e.to_string().contains(" 503 ") => Ok(Value::Null),
            Err(e) => Err(e),
            Ok(body) => serde_json::from_str(&body).context("parsing the daemon's /report"),
        }
    }

    /// A host-wide sample of the daemon's /metrics, e.g. `timerwatch_go_binaries_analyzed_total`.
    fn counter(&self, name: &str) -> Result<f64> {
        let body = http_get(self.addr, "/metrics")?;
        let prefix = format!("{name} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("no {name} in the daemon's /metrics"))
    }

    fn analyses(&self) -> Result<f64> {
        self.counter("timerwatch_go_binaries_analyzed_total")
    }

    /// (census walks, census CPU seconds) since the daemon started.
    fn census(&self) -> Result<(f64, f64)> {
        Ok((
            self.counter("timerwatch_go_census_walks_total")?,
            self.counter("timerwatch_go_census_cpu_seconds_total")?,
        ))
    }

    pub fn stop(mut self, env: &Env) -> Result<()> {
        let programs = self.proc.bpf_programs();
        match self.proc.stop(SIGINT, Duration::from_secs(20)) {
            Ok(_) => env.wait_unloaded(&programs),
            Err(stuck) => bail!("the daemon did not exit within 20 s of SIGINT: {stuck}"),
        }
    }
}

/// Pids among `pids` that the report shows with a Go version.
fn go_pids_in(report: &Value, pids: &[u32]) -> usize {
    report["processes"].as_array().map_or(0, |ps| {
        ps.iter()
            .filter(|p| {
                p["go_version"].is_string()
                    && p["pid"]
                        .as_u64()
                        .is_some_and(|pid| pids.contains(&(pid as u32)))
            })
            .count()
    })
}

/// Waits (up to `timeout`) until every one of `pids` is in the daemon's report as a Go process.
fn wait_seen(daemon: &Daemon, pids: &[u32], timeout: Duration) -> Result<bool> {
    let end = Instant::now() + timeout;
    loop {
        if go_pids_in(&daemon.report()?, pids) == pids.len() {
            return Ok(true);
        }
        if Instant::now() >= end {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn spawn(bin: &Path, seconds: &str, leak: bool) -> Result<Proc> {
    let mut cmd = Command::new(bin);
    cmd.arg(seconds).arg("-1");
    if leak {
        cmd.arg("leak");
    }
    Proc::spawn_workload(GO_TARGET, &mut cmd)
}

fn run_loop(env: &Env, seconds: f64) -> Result<(Proc, LoopResult)> {
    let mut p = spawn(&env.target(GO_TARGET), &seconds.to_string(), false)?;
    p.send_line("go")?;
    let line = expect_line(&mut p, Duration::from_secs_f64(seconds + 60.0), |l| {
        l.starts_with("iterations ")
    })?;
    Ok((p, LoopResult::parse(&line)?))
}

fn speed_round(env: &mut Env, plan: &Plan) -> Result<SpeedRound> {
    let mut round = SpeedRound::default();
    env.wait_quiet()?;
    let (mut p, r) = run_loop(env, plan.window)?;
    p.finish(Duration::from_secs(10));
    round.untraced = Some(r);

    let daemon = Daemon::start(env, &[])?;
    // Started after the daemon: found by discovery, as a pod would be.
    let (mut p, r) = run_loop(env, plan.window)?;
    round.traced = Some(r);
    // The default interval is 5 s: the loop's process is in a report within two.
    round.seen = wait_seen(&daemon, &[p.pid()], Duration::from_secs(15))?;
    p.finish(Duration::from_secs(10));
    daemon.stop(env)?;
    Ok(round)
}

fn leak_seen(env: &Env, plan: &Plan) -> Result<Option<LeakSeen>> {
    let daemon = Daemon::start(env, &[])?;
    let seconds = plan.window.max(20.0);
    let mut p = spawn(&env.target(GO_TARGET), &seconds.to_string(), true)?;
    p.send_line("go")?;
    let started = Instant::now();
    let pid = p.pid() as u64;
    let mut found = None;
    while started.elapsed().as_secs_f64() < seconds {
        std::thread::sleep(Duration::from_secs(1));
        let report = daemon.report()?;
        let callsite = report["processes"].as_array().and_then(|ps| {
            let proc = ps.iter().find(|q| q["pid"].as_u64() == Some(pid))?;
            proc["callsites"]
                .as_array()?
                .iter()
                .find(|c| c["source"] == "go" && c["caller"] == LEAK_CALLER)
                .cloned()
        });
        if let Some(c) = callsite {
            found = Some(LeakSeen {
                caller: LEAK_CALLER.to_string(),
                attribution: c["attribution"].as_str().unwrap_or("-").to_string(),
                live: c["live"].as_f64().unwrap_or(0.0),
                verdict: c["verdict"].as_str().unwrap_or("-").to_string(),
                expected: 100.0 * started.elapsed().as_secs_f64(),
            });
            if found.as_ref().is_some_and(|f| f.verdict == "growing")
                && started.elapsed() > Duration::from_secs(15)
            {
                break;
            }
        }
    }
    p.finish(Duration::from_secs(10));
    daemon.stop(env)?;
    Ok(found)
}

/// Daemon CPU seconds per report over `window` 1 s reports: see [`CpuReading`].
fn cpu_per_report(daemon: &Daemon, window: f64) -> Result<f64> {
    let start = CpuReading::of(daemon)?;
    std::thread::sleep(Duration::from_secs_f64(window));
    Ok(CpuReading::of(daemon)?.since(&start) / window)
}

/// The daemon's CPU time so far, two ways: the sum over its threads' schedstat (ns;
/// /proc/PID/stat's utime + stime count 10 ms ticks, coarser than one process's walk over a
/// short window), and the process total from /proc/PID/stat as a cross-check that no thread
/// exited with CPU time schedstat no longer shows.
pub(crate) struct CpuReading {
    fine: f64,
    ticks: f64,
}

impl CpuReading {
    pub fn of(daemon: &Daemon) -> Result<Self> {
        Ok(Self {
            fine: daemon
                .proc
                .cpu_seconds()
                .context("reading the daemon's schedstat")?,
            ticks: cpu_seconds(daemon.proc.pid()).context("reading the daemon's /proc/PID/stat")?,
        })
    }

    /// CPU seconds between `earlier` and this reading.
    pub fn since(&self, earlier: &Self) -> f64 {
        let (fine, ticks) = (self.fine - earlier.fine, self.ticks - earlier.ticks);
        // A thread that exited took its schedstat with it: trust the ticks then.
        if fine + 0.02 < ticks {
            ticks
        } else {
            fine
        }
    }
}

/// A fresh copy of the Go workload (a new inode): the daemon has not analysed it yet.
fn fresh_copy(env: &Env, tag: &str) -> Result<PathBuf> {
    let path = env.target(&format!("census-{tag}"));
    let _ = std::fs::remove_file(&path);
    std::fs::copy(env.target(GO_TARGET), &path)
        .with_context(|| format!("copying the Go workload to {}", path.display()))?;
    Ok(path)
}

fn cpu_round(env: &mut Env, plan: &Plan, daemon: &Daemon, round: usize) -> Result<Vec<CpuRound>> {
    let mut out = Vec::new();
    for n in COUNTS {
        // Next to each set: the host's own timer traffic (builds, tests) changes by the minute.
        let baseline = cpu_per_report(daemon, plan.cpu_window)?;
        env.progress(&format!(
            "Go census: daemon CPU with {n} Go processes, round {}/{}",
            round + 1,
            plan.rounds
        ));
        let bin = fresh_copy(env, &format!("{n}-{round}"))?;
        let analyses_before = daemon.analyses()?;
        let mut procs = Vec::with_capacity(n);
        for _ in 0..n {
            let mut p = spawn(&bin, HELD_SECONDS, true)?;
            p.send_line("go")?;
            procs.push(p);
        }
        // Each holds its 100 timers, then idles until stdin closes.
        for p in &mut procs {
            expect_line(p, Duration::from_secs(30), |l| l.starts_with("iterations "))?;
        }
        let pids: Vec<u32> = procs.iter().map(Proc::pid).collect();
        if !wait_seen(daemon, &pids, Duration::from_secs(30))? {
            bail!("the daemon did not report all {n} Go processes within 30 s");
        }
        let analyses = daemon.analyses()? - analyses_before;
        let (walks0, cpu0) = daemon.census()?;
        let per_report = cpu_per_report(daemon, plan.cpu_window)?;
        let (walks1, cpu1) = daemon.census()?;
        let per_walk = (walks1 > walks0).then(|| (cpu1 - cpu0) / (walks1 - walks0));
        for p in &mut procs {
            p.close_stdin();
        }
        for p in &mut procs {
            p.finish(Duration::from_secs(10));
        }
        let _ = std::fs::remove_file(&bin);
        out.push(CpuRound {
            processes: n,
            per_report,
            baseline_per_report: baseline,
            analyses,
            per_walk,
        });
    }
    Ok(out)
}

pub fn run(env: &mut Env, quick: bool) -> Result<GoCensus> {
    let plan = Plan::new(quick, env.plan.rounds);
    let mut speed = Vec::new();
    for round in 0..plan.rounds {
        env.progress(&format!(
            "Go census: AfterFunc+Stop loop untraced / under the daemon, {} s each, round {}/{}",
            plan.window,
            round + 1,
            plan.rounds
        ));
        speed.push(speed_round(env, &plan)?);
    }
    env.progress("Go census: the leak variant under the daemon");
    let leak = leak_seen(env, &plan)?;

    let daemon = Daemon::start(env, &["--interval=1"])?;
    let mut cpu = Vec::new();
    for round in 0..plan.rounds {
        cpu.extend(cpu_round(env, &plan, &daemon, round)?);
    }
    daemon.stop(env)?;
    Ok(GoCensus {
        plan,
        go_version: env.go_version,
        speed,
        leak,
        cpu,
    })
}

pub fn render(out: &mut String, r: &GoCensus) {
    let _ = writeln!(
        out,
        "### 6. Go census: the daemon's default mode on Go processes\n"
    );
    let _ = writeln!(
        out,
        "`bench/afterfunc` (Go {}, GOMAXPROCS=1), the Go worst case of §2, run for {} s untraced and \
         then for {} s started after `timerwatch daemon` (default mode: census, no uprobes, 5 s \
         reports), interleaved over {} rounds; the ratio is taken within each round. Rate per CPU \
         second of the loop (as in §2), and per wall second (which also pays for the daemon sharing \
         the 2 CPUs).\n",
        r.go_version, r.plan.window, r.plan.window, r.plan.rounds
    );
    let speed = r.speed_ratio(false);
    let status = match speed {
        Some(s) if s.median >= MIN_SPEED => "met",
        Some(_) => "**missed**",
        None => "–",
    };
    let seen = r.speed.iter().filter(|s| s.seen).count();
    let _ = writeln!(
        out,
        "| figure | measured | goal |\n|---|---|---|\n| loop speed under the daemon / untraced (per CPU s) | {} | ≥ {MIN_SPEED}× ({status}) |\n| the same per wall second | {} | |\n| untraced rate | {} | |\n| runs in which the daemon reported the loop's process (go_version) | {seen} of {} | all |",
        show(speed, stats::ratio),
        show(r.speed_ratio(true), stats::ratio),
        show(
            Summary::of(
                &r.speed
                    .iter()
                    .filter_map(|s| Some(s.untraced.as_ref()?.cpu_rate()))
                    .collect::<Vec<_>>()
            ),
            stats::rate
        ),
        r.speed.len(),
    );
    match &r.leak {
        Some(l) => {
            let _ = writeln!(
                out,
                "| leak variant (one AfterFunc(time.Hour) kept every 10 ms) | caller `{}`, attribution `{}`, {:.0} live of ~{:.0} kept, verdict `{}` | named |",
                l.caller, l.attribution, l.live, l.expected, l.verdict
            );
        }
        None => {
            let _ = writeln!(
                out,
                "| leak variant (one AfterFunc(time.Hour) kept every 10 ms) | **not named** `{LEAK_CALLER}` | named |"
            );
        }
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "What the census costs the daemon with `--interval 1`, over {} s per figure, with N idle \
         processes of one Go binary each holding 100 leaked AfterFunc timers (a fresh copy of the \
         binary per N, started after the daemon): the CPU time the daemon's thread spent in census \
         walks per walk of one process (one per process per report), from the rises of its own \
         `timerwatch_go_census_cpu_seconds_total` and `timerwatch_go_census_walks_total` over the \
         window; beside it, as context, the whole daemon's CPU (threads' schedstat, cross-checked \
         against `utime + stime`) minus the window just before with none, per process per report, \
         which the host's other timer traffic moves by more than a walk costs when N is small; and \
         how many binary analyses the daemon ran for the set \
         (`timerwatch_go_binaries_analyzed_total`; another Go program starting on the host \
         meanwhile adds one).\n",
        r.plan.cpu_window
    );
    let _ = writeln!(
        out,
        "| Go processes | census CPU per Go process per report | whole daemon, per Go process per report (context) | binary analyses for the set |\n|---|---|---|---|"
    );
    let us = |x: f64| format!("{:.0} µs", x * 1e6);
    for n in COUNTS {
        let _ = writeln!(
            out,
            "| {n} | **{}** | {} | {} |",
            show(r.per_walk(n), us),
            show(r.per_process(n), us),
            show(r.analyses(n), |x| format!("{x:.0}"))
        );
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_reads() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).is_some_and(|s| s >= 0.0));
        assert!(cpu_seconds(u32::MAX).is_none());
    }

    #[test]
    fn counts_go_processes_in_a_report() {
        let r: Value = serde_json::from_str(
            r#"{"processes":[{"pid":5,"go_version":"go1.23.1"},{"pid":6},{"pid":7,"go_version":"go1.22"}]}"#,
        )
        .unwrap();
        assert_eq!(go_pids_in(&r, &[5, 6]), 1);
        assert_eq!(go_pids_in(&r, &[5, 7]), 2);
    }
}
