//! The node agent's own share (issue 18): `timerwatch daemon` with its default flags on a node
//! with a realistic load, its CPU as a share of one core and its memory, against the goals.
//!
//! The load: real servers from Debian packages (nginx with two workers, redis, memcached, and
//! Prometheus scraping node-exporter every second and the daemon every 5 s, as it would a node
//! agent), one client (`bench/node_client.c`) keeping the first three busy over keep-alive
//! connections, and C services (`bench/node_load.c`) that each re-arm and fire timerfds from 16
//! callsites at a paced rate. Their timer transitions per second (arms, cancels, expiries) are
//! what the daemon itself counted in its /report over the window.
//!
//! Each round starts a fresh daemon, lets it run `warmup` seconds (its first reports, the Go
//! census of the two Go servers, the verdict series filling), then measures its CPU time
//! (threads' schedstat, cross-checked with /proc/PID/stat) over `window` seconds and its VmRSS
//! every second. With `TIMERWATCH_BENCH_BASELINE=/path/to/timerwatch` each round also runs that
//! binary's daemon, in alternating order, so a change is measured against what it replaced under
//! the same load in the same run.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::go_census::{free_addr, CpuReading, Daemon};
use super::proc::{self, Proc};
use super::stats::{self, show, Summary};
use super::Env;

/// The issue's goals for the daemon beside the load.
pub const MAX_CPU_SHARE: f64 = 0.01;
pub const MAX_RSS: f64 = 64.0 * 1024.0 * 1024.0;
/// What makes the load realistic enough to count (the issue's floor).
pub const MIN_PROCESSES: usize = 25;
pub const MIN_TRANSITIONS: f64 = 20_000.0;

/// C services, operations per second each (about five timer transitions per operation: a
/// timerfd's cancel and start or start and expiry, and the pacing sleep's start and expiry).
const SERVICES: usize = 20;
const SERVICE_RATE: &str = "250";
/// Client rounds per second (an HTTP GET, a redis PING, a memcached get).
const CLIENT_RATE: &str = "200";
/// The environment variable naming a second `timerwatch` binary to measure beside this one.
pub const BASELINE_ENV: &str = "TIMERWATCH_BENCH_BASELINE";

pub struct Plan {
    pub rounds: usize,
    pub warmup: f64,
    pub window: f64,
}

impl Plan {
    pub fn new(quick: bool, rounds: usize) -> Self {
        if quick {
            Self {
                rounds: rounds.min(2),
                warmup: 10.0,
                window: 20.0,
            }
        } else {
            Self {
                rounds: rounds.min(3),
                warmup: 30.0,
                window: 60.0,
            }
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Run {
    /// CPU seconds per wall second over the window: the share of one core.
    pub cpu_share: f64,
    /// Highest VmRSS sampled over the window, and VmHWM at its end (bytes).
    pub rss_max: f64,
    pub hwm: f64,
    /// Arms, cancels and expiries per second the daemon counted: all processes / the load's.
    pub transitions: f64,
    pub load_transitions: f64,
    pub lost: f64,
    /// Processes and callsites in the last report, and the load's processes among them.
    pub processes: usize,
    pub callsites: usize,
    pub load_processes: usize,
}

pub struct NodeAgent {
    pub plan: Plan,
    /// Label of each binary measured (`this build`, then the baseline's path if any) and its runs.
    pub binaries: Vec<(String, Vec<Run>)>,
    pub load_started: usize,
}

/// The servers, the client and the services; dropped (killed) with it.
struct Load {
    procs: Vec<Proc>,
    _dir: TempDir,
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn port(addr: SocketAddr) -> String {
    addr.port().to_string()
}

/// Waits until something accepts connections on `addr`.
fn wait_listening(addr: SocketAddr, who: &Proc) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
        if Instant::now() >= end {
            bail!(
                "{} did not listen on {addr} within 30 s: {}",
                who.name,
                who.stderr_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn server(name: &str, cmd: &mut Command) -> Result<Proc> {
    Proc::spawn(name, cmd).with_context(|| {
        format!("starting {name} (`cargo xtask setup` installs the bench's Debian servers)")
    })
}

fn start_load(env: &Env, daemon: SocketAddr) -> Result<Load> {
    for tool in [
        "nginx",
        "redis-server",
        "memcached",
        "prometheus",
        "prometheus-node-exporter",
    ] {
        if xtask::util::which(tool).is_none() {
            bail!("`{tool}` is not installed; `cargo xtask setup` installs it");
        }
    }
    let dir = env.targets.join("node-load");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = TempDir(dir);
    let d = &dir.0;
    let (http, redis, mc, node, prom) = (
        free_addr()?,
        free_addr()?,
        free_addr()?,
        free_addr()?,
        free_addr()?,
    );
    let mut procs = Vec::new();

    std::fs::write(
        d.join("nginx.conf"),
        format!(
            "worker_processes 2;\npid {p}/nginx.pid;\nerror_log {p}/nginx-error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {p};\n  proxy_temp_path {p};\n\
             fastcgi_temp_path {p};\n  uwsgi_temp_path {p};\n  scgi_temp_path {p};\n\
             keepalive_requests 1000000;\n  keepalive_timeout 75s;\n\
             server {{\n    listen {http};\n    location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n",
            p = d.display()
        ),
    )?;
    let nginx = server(
        "nginx",
        Command::new("nginx")
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .args(["-e", "stderr", "-g", "daemon off;"]),
    )?;
    wait_listening(http, &nginx)?;
    procs.push(nginx);

    let redis_server = server(
        "redis-server",
        Command::new("redis-server")
            .args(["--port", &port(redis), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(d),
    )?;
    wait_listening(redis, &redis_server)?;
    procs.push(redis_server);

    let memcached = server(
        "memcached",
        Command::new("memcached").args([
            "-u",
            "root",
            "-l",
            "127.0.0.1",
            "-U",
            "0",
            "-p",
            &port(mc),
        ]),
    )?;
    wait_listening(mc, &memcached)?;
    procs.push(memcached);

    let exporter = server(
        "prometheus-node-exporter",
        Command::new("prometheus-node-exporter").arg(format!("--web.listen-address={node}")),
    )?;
    wait_listening(node, &exporter)?;
    procs.push(exporter);

    std::fs::write(
        d.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n\
             scrape_configs:\n  - job_name: node\n    scrape_interval: 1s\n    scrape_timeout: 1s\n\
             \x20   static_configs:\n      - targets: ['{node}']\n\
             \x20 - job_name: timerwatch\n    static_configs:\n      - targets: ['{daemon}']\n"
        ),
    )?;
    let prometheus = server(
        "prometheus",
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                d.join("prometheus.yml").display()
            ))
            .arg(format!("--storage.tsdb.path={}", d.join("tsdb").display()))
            .arg(format!("--web.listen-address={prom}")),
    )?;
    wait_listening(prom, &prometheus)?;
    procs.push(prometheus);

    procs.push(Proc::spawn_workload(
        "node_client",
        Command::new(env.target("node_client")).args([
            CLIENT_RATE,
            &port(http),
            &port(redis),
            &port(mc),
        ]),
    )?);
    for _ in 0..SERVICES {
        procs.push(Proc::spawn_workload(
            "node_load",
            Command::new(env.target("node_load")).arg(SERVICE_RATE),
        )?);
    }
    Ok(Load { procs, _dir: dir })
}

impl Load {
    /// Our processes and their children (nginx's workers), as running now.
    fn pids(&self) -> BTreeSet<u64> {
        let mut pids = BTreeSet::new();
        for p in &self.procs {
            let pid = p.pid();
            pids.insert(pid as u64);
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            pids.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u64>().ok()),
            );
        }
        pids
    }

    /// Fails if any of the load's processes died (a server that fails to start under a new
    /// package version must not pass as a lighter load).
    fn check(&mut self) -> Result<()> {
        for p in &mut self.procs {
            if let Some(status) = p.wait_timeout(Duration::ZERO) {
                bail!(
                    "{} exited ({status}) during the node-agent bench: {}",
                    p.name,
                    p.stderr_tail()
                );
            }
        }
        Ok(())
    }
}

impl Drop for Load {
    /// SIGINT first, on every path out (an error included): nginx's master then stops its
    /// workers, which a SIGKILL to the master would leave running.
    fn drop(&mut self) {
        for p in &mut self.procs {
            p.close_stdin();
            p.signal(proc::SIGINT);
        }
        for p in &mut self.procs {
            p.finish(Duration::from_secs(10));
        }
    }
}

/// Arms + cancels + expiries per process in a report.
fn transitions(report: &Value) -> Vec<(u64, f64)> {
    report["processes"].as_array().map_or(Vec::new(), |ps| {
        ps.iter()
            .filter_map(|p| {
                let n: f64 = p["callsites"]
                    .as_array()?
                    .iter()
                    .map(|c| {
                        ["armed_total", "cancelled_total", "expired_total"]
                            .iter()
                            .map(|k| c[*k].as_f64().unwrap_or(0.0))
                            .sum::<f64>()
                    })
                    .sum();
                Some((p["pid"].as_u64()?, n))
            })
            .collect()
    })
}

/// Transitions between two reports of the processes in both, of all and of `load`'s.
fn transitions_between(before: &Value, after: &Value, load: &BTreeSet<u64>) -> (f64, f64) {
    let before = transitions(before);
    let (mut all, mut ours) = (0.0, 0.0);
    for (pid, n) in transitions(after) {
        if let Some((_, m)) = before.iter().find(|(p, _)| *p == pid) {
            let d = (n - m).max(0.0);
            all += d;
            if load.contains(&pid) {
                ours += d;
            }
        }
    }
    (all, ours)
}

fn vm_hwm(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024.0)
}

/// A report newer than `after` (the daemon publishes one every interval).
fn next_report(daemon: &Daemon, after: Option<f64>) -> Result<Value> {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let r = daemon.report()?;
        let d = r["duration_s"].as_f64();
        if d.is_some() && d != after {
            return Ok(r);
        }
        if Instant::now() >= end {
            bail!("the daemon published no new report within 60 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn measure(env: &Env, plan: &Plan, bin: &Path, addr: SocketAddr, load: &mut Load) -> Result<Run> {
    let daemon = Daemon::start_at(bin, addr, &[])?;
    let pid = daemon.proc.pid();
    next_report(&daemon, None)?;
    std::thread::sleep(Duration::from_secs_f64(plan.warmup));
    // Reports are 5 s apart: the window runs from one to another.
    let first = daemon.report()?;
    let first = next_report(&daemon, first["duration_s"].as_f64())?;
    let start = Instant::now();
    let cpu0 = CpuReading::of(&daemon)?;
    let mut rss_max = 0.0f64;
    while start.elapsed().as_secs_f64() < plan.window {
        std::thread::sleep(Duration::from_secs(1));
        if let Some((rss, _)) = proc::rss(pid) {
            rss_max = rss_max.max(rss as f64);
        }
    }
    let last = next_report(&daemon, daemon.report()?["duration_s"].as_f64())?;
    let cpu = CpuReading::of(&daemon)?.since(&cpu0);
    let wall = start.elapsed().as_secs_f64();
    let hwm = vm_hwm(pid).unwrap_or(0.0);
    load.check()?;
    let span =
        last["duration_s"].as_f64().unwrap_or(0.0) - first["duration_s"].as_f64().unwrap_or(0.0);
    let (all, ours) = transitions_between(&first, &last, &load.pids());
    let processes = last["processes"].as_array().map_or(0, Vec::len);
    let load_pids = load.pids();
    let run = Run {
        cpu_share: cpu / wall,
        rss_max,
        hwm,
        transitions: all / span.max(1e-9),
        load_transitions: ours / span.max(1e-9),
        lost: last["lost_events"].as_f64().unwrap_or(0.0)
            - first["lost_events"].as_f64().unwrap_or(0.0),
        processes,
        callsites: last["processes"].as_array().map_or(0, |ps| {
            ps.iter()
                .map(|p| p["callsites"].as_array().map_or(0, Vec::len))
                .sum()
        }),
        load_processes: last["processes"].as_array().map_or(0, |ps| {
            ps.iter()
                .filter(|p| p["pid"].as_u64().is_some_and(|x| load_pids.contains(&x)))
                .count()
        }),
    };
    daemon.stop(env)?;
    Ok(run)
}

pub fn run(env: &mut Env, quick: bool) -> Result<NodeAgent> {
    let plan = Plan::new(quick, env.plan.rounds);
    let mut binaries = vec![(env.timerwatch.clone(), "this build".to_string())];
    if let Some(base) = std::env::var_os(BASELINE_ENV) {
        let base = PathBuf::from(base);
        if !base.is_file() {
            bail!("{BASELINE_ENV}={} is not a file", base.display());
        }
        binaries.push((base.clone(), format!("baseline `{}`", base.display())));
    }
    env.progress("node agent: starting the load (nginx, redis, memcached, Prometheus, node-exporter, client, services)");
    let addr = free_addr()?;
    let mut load = start_load(env, addr)?;
    let load_started = load.pids().len();
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); binaries.len()];
    for round in 0..plan.rounds {
        let mut order: Vec<usize> = (0..binaries.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            env.progress(&format!(
                "node agent: {} daemon, {} s warm-up + {} s window, round {}/{}",
                binaries[i].1,
                plan.warmup,
                plan.window,
                round + 1,
                plan.rounds
            ));
            runs[i].push(measure(env, &plan, &binaries[i].0, addr, &mut load)?);
        }
    }
    drop(load);
    Ok(NodeAgent {
        plan,
        binaries: binaries
            .into_iter()
            .zip(runs)
            .map(|((_, label), runs)| (label, runs))
            .collect(),
        load_started,
    })
}

fn summary(runs: &[Run], f: impl Fn(&Run) -> f64) -> Option<Summary> {
    Summary::of(&runs.iter().map(f).collect::<Vec<_>>())
}

fn percent(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn status(value: Option<Summary>, goal: f64) -> String {
    match value {
        Some(s) if s.median <= goal => format!("met, {:.2}× the goal", s.median / goal),
        Some(s) => format!("**missed**, {:.2}× the goal", s.median / goal),
        None => "–".to_string(),
    }
}

pub fn render(out: &mut String, r: &NodeAgent) {
    let _ = writeln!(
        out,
        "### 7. Node agent: the daemon beside a realistic node load\n"
    );
    let _ = writeln!(
        out,
        "`timerwatch daemon` with its default flags (5 s reports, Go census) beside nginx (2 \
         workers), redis, memcached, Prometheus (scraping node-exporter every second and the \
         daemon every 5 s), node-exporter, a client keeping nginx, redis and memcached busy \
         ({CLIENT_RATE} rounds/s) and {SERVICES} C services (`bench/node_load.c`, {SERVICE_RATE} \
         timerfd operations/s each over 16 callsites): {} processes started. Each round a fresh \
         daemon, {} s of warm-up, then its CPU (threads' schedstat, cross-checked with \
         /proc/PID/stat) over a {} s window as a share of one core, its VmRSS sampled every \
         second (and VmHWM), and the timer transitions (arms + cancels + expiries) its own \
         /report counted over the window; {} rounds. The probes' own cost runs in the traced \
         tasks and is §1's, not counted here.\n",
        r.load_started, r.plan.warmup, r.plan.window, r.plan.rounds
    );
    for (label, runs) in &r.binaries {
        let cpu = summary(runs, |x| x.cpu_share);
        let rss = summary(runs, |x| x.rss_max);
        let transitions = summary(runs, |x| x.transitions);
        let procs = summary(runs, |x| x.processes as f64);
        let load_ok = transitions.is_some_and(|t| t.median >= MIN_TRANSITIONS)
            && procs.is_some_and(|p| p.median >= MIN_PROCESSES as f64);
        let _ = writeln!(
            out,
            "{label}:\n\n| figure | measured | goal |\n|---|---|---|\n\
             | daemon CPU, share of one core | {} | ≤ {} ({}) |\n\
             | daemon VmRSS, highest sample | {} | ≤ {} ({}) |\n\
             | daemon VmHWM at the window's end | {} | |\n\
             | timer transitions/s, all processes (the load's) | {} ({}) | ≥ {} ({}) |\n\
             | processes in the report (the load's) | {} ({}) | ≥ {MIN_PROCESSES} |\n\
             | callsites in the report | {} | |\n\
             | lost events over the window | {} | 0 |\n",
            show(cpu, percent),
            percent(MAX_CPU_SHARE),
            status(cpu, MAX_CPU_SHARE),
            show(rss, stats::mib),
            stats::mib(MAX_RSS),
            status(rss, MAX_RSS),
            show(summary(runs, |x| x.hwm), stats::mib),
            show(transitions, stats::rate),
            show(summary(runs, |x| x.load_transitions), stats::rate),
            stats::rate(MIN_TRANSITIONS),
            if load_ok {
                "load as asked"
            } else {
                "**load too light**"
            },
            show(procs, |x| format!("{x:.0}")),
            show(summary(runs, |x| x.load_processes as f64), |x| format!(
                "{x:.0}"
            )),
            show(summary(runs, |x| x.callsites as f64), |x| format!("{x:.0}")),
            show(summary(runs, |x| x.lost), |x| format!("{x:.0}")),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_transitions_of_processes_in_both_reports() {
        let a: Value = serde_json::from_str(
            r#"{"processes":[{"pid":5,"callsites":[{"armed_total":10,"cancelled_total":5,"expired_total":1}]},
                             {"pid":6,"callsites":[{"armed_total":3,"cancelled_total":0,"expired_total":0}]}]}"#,
        )
        .unwrap();
        let b: Value = serde_json::from_str(
            r#"{"processes":[{"pid":5,"callsites":[{"armed_total":20,"cancelled_total":9,"expired_total":2},{"armed_total":4,"cancelled_total":0,"expired_total":0}]},
                             {"pid":7,"callsites":[{"armed_total":100,"cancelled_total":0,"expired_total":0}]}]}"#,
        )
        .unwrap();
        let load: BTreeSet<u64> = [5].into();
        // pid 5: 35 − 16; pid 6 left and pid 7 arrived: neither counts.
        assert_eq!(transitions_between(&a, &b, &load), (19.0, 19.0));
        assert_eq!(transitions_between(&a, &b, &BTreeSet::new()), (19.0, 0.0));
    }
}
