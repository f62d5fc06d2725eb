//! End to end: how many events per second reach timerwatch's table with none lost, pushed by N
//! parallel copies of the re-arm loop, and where loss starts (also with a deliberately small
//! ring buffer, in case this machine cannot outrun the default one).

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use super::cost::{last_report, start_timerwatch, stop_tool, Counts, LoopResult};
use super::proc::{expect_line, Proc};
use super::Env;

/// timerfds each copy re-arms round-robin: several known timers per process, as a service has.
const FDS_PER_COPY: &str = "8";

#[derive(Clone, Debug)]
pub struct E2eRun {
    pub copies: usize,
    pub ring_bytes: Option<u32>,
    /// Tracepoint events per second the loops caused (iterations × events per iteration).
    pub offered: f64,
    /// Records per second timerwatch applied to the traced processes' callsites.
    pub received: f64,
    pub counts: Counts,
    pub min_cpu_share: f64,
}

impl E2eRun {
    pub fn lost(&self) -> bool {
        self.counts.lost > 0.0
    }
}

pub fn run(env: &mut Env, events_per_iteration: f64) -> Result<Vec<E2eRun>> {
    let mut configs: Vec<(usize, Option<u32>)> =
        env.plan.e2e_copies.iter().map(|&n| (n, None)).collect();
    configs.extend(
        env.plan
            .e2e_small_ring_copies
            .iter()
            .map(|&n| (n, Some(SMALL_RING))),
    );
    let mut runs = Vec::new();
    for round in 0..env.plan.e2e_rounds {
        env.wait_quiet()?;
        for &(copies, ring) in &configs {
            env.progress(&format!(
                "end to end: round {}/{}: {copies} cop{}{}",
                round + 1,
                env.plan.e2e_rounds,
                if copies == 1 { "y" } else { "ies" },
                ring.map_or(String::new(), |r| format!(", --ring-buffer-size {r}"))
            ));
            let run = run_once(env, copies, ring, events_per_iteration)
                .with_context(|| format!("end to end with {copies} copies"))?;
            runs.push(run);
        }
    }
    Ok(runs)
}

/// Small enough that one 50 ms drain period of a single loop overflows it.
pub const SMALL_RING: u32 = 256 << 10;

fn run_once(
    env: &mut Env,
    copies: usize,
    ring: Option<u32>,
    events_per_iteration: f64,
) -> Result<E2eRun> {
    env.note_foreign_bpf()?;
    let mut loops = Vec::new();
    for _ in 0..copies {
        loops.push(Proc::spawn_workload(
            "rearm",
            Command::new(env.target("rearm"))
                .arg(env.plan.loop_seconds.to_string())
                .arg(FDS_PER_COPY),
        )?);
    }
    let pids: Vec<u32> = loops.iter().map(Proc::pid).collect();
    let ring_arg = ring.map(|r| r.to_string());
    let extra: Vec<&str> = match &ring_arg {
        Some(r) => vec!["--ring-buffer-size", r],
        None => Vec::new(),
    };
    // Every event a record: the ring buffer and the drain loop are what is measured.
    let (mut tw, _) = start_timerwatch(env, &pids, &["--no-rearm-counting"], &extra)?;
    let programs = tw.bpf_programs();
    for p in &mut loops {
        p.send_line("go")?;
    }
    let mut results = Vec::new();
    for p in &mut loops {
        let line = expect_line(
            p,
            Duration::from_secs_f64(env.plan.loop_seconds + 30.0),
            |l| l.starts_with("iterations "),
        )?;
        results.push(LoopResult::parse(&line)?);
    }
    let out = stop_tool(env, &mut tw, &programs)?;
    let counts = Counts::from_report(&last_report(&out)?, &pids);
    // EOF to every loop before waiting on any, so they exit together.
    for p in &mut loops {
        p.close_stdin();
    }
    for p in &mut loops {
        p.finish(Duration::from_secs(10));
    }
    let seconds = results.iter().map(|r| r.seconds).fold(0.0, f64::max);
    let iterations: f64 = results.iter().map(|r| r.iterations).sum();
    let min_cpu_share = results.iter().map(|r| r.cpu_share).fold(1.0, f64::min);
    Ok(E2eRun {
        copies,
        ring_bytes: ring,
        offered: iterations * events_per_iteration / seconds,
        received: counts.records() / seconds,
        counts,
        min_cpu_share,
    })
}
