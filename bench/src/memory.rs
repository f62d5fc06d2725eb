//! Daemon memory per live tracked timer, and time from start to the first report.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::json::{self, Fields};
use super::proc::{expect_line, expect_stderr, rss, Proc, SIGINT};
use super::{Env, ATTACH_TIMEOUT};

#[derive(Clone, Debug)]
pub struct MemoryRun {
    /// Run with `MALLOC_MMAP_THRESHOLD_` fixed, so glibc returns freed large blocks (the hash
    /// table before each doubling) to the OS: the table's own size, without the allocator's
    /// retention.
    pub fixed_mmap_threshold: bool,
    pub timers: f64,
    pub live: f64,
    pub lost: f64,
    pub rss_before: u64,
    pub rss_after: u64,
    pub anon_before: u64,
    pub anon_after: u64,
    /// From the target's "armed" line to a report showing them all (or the table settling).
    pub absorb_s: f64,
}

impl MemoryRun {
    pub fn rss_per_timer(&self) -> f64 {
        (self.rss_after as f64 - self.rss_before as f64) / self.live.max(1.0)
    }
    pub fn anon_per_timer(&self) -> f64 {
        (self.anon_after as f64 - self.anon_before as f64) / self.live.max(1.0)
    }
}

/// Live timers of the target's processes in one `top --json` line, and the lost events.
fn live_of(line: &str) -> Option<(f64, f64)> {
    let report = json::parse(line).ok()?;
    let live = report
        .arr("processes")
        .iter()
        .filter(|p| p.str("comm") == Some(TARGET))
        .filter_map(|p| p.num("live"))
        .sum();
    Some((live, report.num("lost_events").unwrap_or(0.0)))
}

/// Also its comm: the timers are spread over several processes of that name (see the source).
const TARGET: &str = "many_timers";

/// glibc's default threshold, 128 KiB; fixing it also turns off the dynamic raising that keeps
/// freed big blocks in the heap.
pub const MMAP_THRESHOLD: &str = "131072";

pub fn memory(env: &mut Env) -> Result<Vec<MemoryRun>> {
    let mut runs = Vec::new();
    for round in 0..env.plan.memory_rounds {
        for fixed in [false, true] {
            if fixed && round >= env.plan.memory_fixed_rounds {
                continue;
            }
            env.progress(&format!(
                "memory: round {}/{}: {} live timerfds{}",
                round + 1,
                env.plan.memory_rounds,
                env.plan.live_timers,
                if fixed {
                    format!(", MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD}")
                } else {
                    String::new()
                }
            ));
            runs.push(memory_once(env, fixed).context("memory per live timer")?);
        }
    }
    Ok(runs)
}

fn memory_once(env: &mut Env, fixed_mmap_threshold: bool) -> Result<MemoryRun> {
    let count = env.plan.live_timers;
    env.note_foreign_bpf()?;
    let mut target = Proc::spawn_workload(
        TARGET,
        Command::new(env.target(TARGET)).arg(count.to_string()),
    )?;
    let mut cmd = Command::new(&env.timerwatch);
    // --no-rearm-counting: the warm-up below must turn its re-arms into records. It changes
    // nothing in the daemon's memory per timer.
    cmd.args([
        "top",
        "--json",
        "-i",
        "0.2",
        "--comm",
        TARGET,
        "--no-rearm-counting",
    ]);
    if fixed_mmap_threshold {
        cmd.env("MALLOC_MMAP_THRESHOLD_", MMAP_THRESHOLD);
    }
    let mut tw = Proc::spawn("timerwatch", &mut cmd)?;
    expect_stderr(&mut tw, ATTACH_TIMEOUT, |l| {
        l.starts_with("timerwatch: attached")
    })?;
    let programs = tw.bpf_programs();
    expect_line(&mut tw, Duration::from_secs(10), |l| l.starts_with('{'))?;
    // Cycle records through the whole ring buffer first (150k re-arms are ≥ 8 MiB even as small
    // records), so its pages are resident before the baseline instead of counting as growth.
    target.send_line("warm 150000")?;
    expect_line(&mut target, Duration::from_secs(60), |l| l == "warmed")?;
    // A report that starts after "warmed" drains everything the warm-up queued; by then every
    // lazily built piece (runtime, report path, symbol caches) exists too.
    tw.stdout.available();
    expect_line(&mut tw, Duration::from_secs(10), |l| l.starts_with('{'))?;
    let line = expect_line(&mut tw, Duration::from_secs(10), |l| l.starts_with('{'))?;
    let lost_before = live_of(&line).map_or(0.0, |(_, lost)| lost);
    let (rss_before, anon_before) = rss(tw.pid()).context("reading timerwatch's memory")?;
    target.send_line("go")?;
    expect_line(&mut target, Duration::from_secs(120), |l| {
        l.starts_with("armed ")
    })?;
    let armed_at = Instant::now();
    let deadline = armed_at + Duration::from_secs(60);
    let mut last: Option<(f64, f64)> = None;
    let (live, lost) = loop {
        let Some(line) = tw.stdout.next_until(deadline) else {
            bail!(
                "timerwatch showed no settled live count within 60 s: last {last:?}; {}",
                tw.stderr_tail()
            );
        };
        let Some(now) = live_of(&line) else {
            continue;
        };
        // All of them, or two reports 200 ms apart that agree: the table has what it will get.
        if now.0 >= count as f64 || (now.0 > 0.0 && last == Some(now)) {
            break now;
        }
        last = Some(now);
    };
    let absorb_s = armed_at.elapsed().as_secs_f64();
    let (rss_after, anon_after) = rss(tw.pid()).context("reading timerwatch's memory")?;
    if let Err(threads) = tw.stop(SIGINT, Duration::from_secs(20)) {
        bail!("timerwatch did not exit within 20 s of SIGINT (killed; threads: {threads})");
    }
    env.wait_unloaded(&programs)?;
    target.finish(Duration::from_secs(20));
    Ok(MemoryRun {
        fixed_mmap_threshold,
        timers: count as f64,
        live,
        lost: lost - lost_before,
        rss_before,
        rss_after,
        anon_before,
        anon_after,
        absorb_s,
    })
}

#[derive(Clone, Debug)]
pub struct StartupRun {
    pub timerwatch_attached: f64,
    pub timerwatch_report: f64,
    pub bpftrace_attached: f64,
    pub bpftrace_report: f64,
}

pub fn startup(env: &mut Env) -> Result<Vec<StartupRun>> {
    // bpftrace's script takes a PID; a target that waits on stdin is a quiet one to give it.
    let mut idle =
        Proc::spawn_workload("rearm", Command::new(env.target("rearm")).args(["1", "1"]))?;
    let script = std::fs::read_to_string(env.scripts.join("live_per_stack.bt"))
        .context("reading bench/live_per_stack.bt")?;
    // The same script, plus what makes a first report: a 100 ms interval that prints the
    // per-stack table once, like `timerwatch top -i 0.1 --count 1`.
    let script =
        format!("{script}\ninterval:ms:100 {{ printf(\"report\\n\"); print(@live); exit(); }}\n");
    let mut runs = Vec::new();
    for round in 0..env.plan.startup_rounds {
        env.progress(&format!(
            "start-up: round {}/{}",
            round + 1,
            env.plan.startup_rounds
        ));
        env.note_foreign_bpf()?;
        let (timerwatch_attached, timerwatch_report) = {
            let t0 = Instant::now();
            let mut tw = Proc::spawn(
                "timerwatch",
                Command::new(&env.timerwatch).args(["top", "--json", "-i", "0.1", "--count", "1"]),
            )?;
            expect_stderr(&mut tw, ATTACH_TIMEOUT, |l| {
                l.starts_with("timerwatch: attached")
            })?;
            let attached = t0.elapsed().as_secs_f64();
            let programs = tw.bpf_programs();
            expect_line(&mut tw, Duration::from_secs(30), |l| l.starts_with('{'))?;
            let report = t0.elapsed().as_secs_f64();
            if tw.wait_timeout(Duration::from_secs(10)).is_none() {
                let _ = tw.stop(SIGINT, Duration::from_secs(10));
            }
            env.wait_unloaded(&programs)?;
            (attached, report)
        };
        env.note_foreign_bpf()?;
        let (bpftrace_attached, bpftrace_report) = {
            let t0 = Instant::now();
            let mut bt = Proc::spawn(
                "bpftrace",
                Command::new("bpftrace")
                    .arg("-e")
                    .arg(&script)
                    .arg(idle.pid().to_string()),
            )?;
            expect_line(&mut bt, ATTACH_TIMEOUT, |l| l == "up")?;
            let attached = t0.elapsed().as_secs_f64();
            let programs = bt.bpf_programs();
            expect_line(&mut bt, Duration::from_secs(30), |l| l == "report")?;
            let report = t0.elapsed().as_secs_f64();
            if bt.wait_timeout(Duration::from_secs(10)).is_none() {
                let _ = bt.stop(SIGINT, Duration::from_secs(10));
            }
            env.wait_unloaded(&programs)?;
            (attached, report)
        };
        runs.push(StartupRun {
            timerwatch_attached,
            timerwatch_report,
            bpftrace_attached,
            bpftrace_report,
        });
    }
    // Killed, not released: on EOF it would first run its loop.
    idle.kill();
    Ok(runs)
}
