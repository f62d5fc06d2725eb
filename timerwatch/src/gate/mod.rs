//! `timerwatch run [filters…] -- CMD ARGS…`: timer leaks as a CI gate.
//!
//! The command is forked and held before its exec ([`child`]) while the probes attach with
//! its pid in the kernel filter and children followed, and Go uprobes are registered on the
//! binary it is about to exec; then it is released, so none of its timers pre-exist. While it
//! runs, every report feeds the [`judge::Ledger`]; each process's row is kept as it exits. When
//! the command exits (or is stopped) the report is printed and the gates decide the exit code.

pub mod child;
pub mod judge;
pub mod junit;

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::Notify,
    time::{sleep_until, Instant},
};

use crate::{
    cli::RunArgs,
    failure::{Failure, EXIT_GROWTH, EXIT_LIVE_AT_EXIT},
    output,
    session::{Launch, Tracer},
};

use self::judge::{Baseline, Gates, Ledger, Verdict};

/// How often the ledger sees a report (growth verdicts, peaks).
const OBSERVE_PERIOD: Duration = Duration::from_secs(1);

fn seconds(name: &str, v: f64) -> Result<Duration> {
    if !(v.is_finite() && (0.0..1e9).contains(&v)) {
        return Err(Failure::bad_input(format!(
            "{name} must be a non-negative number of seconds, got {v}"
        ))
        .into());
    }
    Ok(Duration::from_secs_f64(v))
}

fn gates(args: &RunArgs) -> Result<Gates> {
    let baseline = match &args.baseline {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure::bad_input(format!("--baseline {}: {e}", path.display())))?;
            Some(Baseline::parse(&text).map_err(|e| {
                Failure::bad_input(format!(
                    "--baseline {}: not a baseline: {e}",
                    path.display()
                ))
            })?)
        }
    };
    for p in &args.allow {
        if p.is_empty() {
            return Err(Failure::bad_input("--allow needs a non-empty pattern").into());
        }
    }
    Ok(Gates {
        fail_on_growth: args.fail_on_growth,
        live_at_exit: args.fail_on_live_at_exit,
        allow: args.allow.clone(),
        baseline,
    })
}

/// Run the command under the probes; the exit code (the command's unless a gate fails).
pub async fn run(args: RunArgs) -> Result<u8> {
    let duration = args
        .duration
        .map(|d| seconds("--duration", d))
        .transpose()?;
    let kill_after = seconds("--kill-after", args.kill_after)?;
    let mut gates = gates(&args)?;
    let exe = child::resolve(&args.command[0], std::env::var_os("PATH"))
        .map_err(|e| Failure::new(e.code, e.message))?;
    // Before the fork: a signal from now on is forwarded, not fatal.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;

    let held = child::spawn_held(&exe, &args.command).context("cannot fork the command")?;
    let launch = Launch {
        pid: held.pid,
        exe: &exe,
    };
    let mut tracer = match Tracer::start_launch(&args.trace, launch) {
        Ok(t) => t,
        Err(e) => {
            held.abandon();
            return Err(e);
        }
    };
    let pid = held.pid;
    let mut cmd = held.release().map_err(|e| {
        let code = if e.kind() == std::io::ErrorKind::NotFound {
            127
        } else {
            126
        };
        Failure::new(code, format!("cannot run {}: {e}", exe.display()))
    })?;
    eprintln!(
        "timerwatch: attached, running {} (pid {pid}) and its descendants",
        exe.display()
    );

    let mut ledger = Ledger::default();
    // With --fail-on-growth the verdict is certain at the first growing callsite: stop the
    // command then rather than let a leaking service run forever.
    let growing = Notify::new();
    let stop = async {
        let far = Instant::now() + Duration::from_secs(86400 * 365);
        let deadline = duration.map(|d| Instant::now() + d);
        let mut stop = Stop {
            pid,
            kill_after,
            kill_at: None,
        };
        loop {
            tokio::select! {
                status = cmd.exited() => {
                    if stop.kill_at.is_some() {
                        // Stopping the command stops the rest of its process group too.
                        cmd.signal(libc::SIGKILL);
                    }
                    return status;
                }
                _ = sleep_until(deadline.unwrap_or(far)), if deadline.is_some() && stop.kill_at.is_none() => {
                    stop.begin(&cmd, libc::SIGTERM, "--duration reached");
                }
                _ = sleep_until(stop.kill_at.unwrap_or(far)), if stop.kill_at.is_some() => {
                    eprintln!("timerwatch: pid {pid} still running: sending SIGKILL");
                    cmd.signal(libc::SIGKILL);
                    stop.kill_at = Some(far);
                }
                _ = growing.notified(), if stop.kill_at.is_none() => {
                    stop.begin(&cmd, libc::SIGTERM, "a callsite is growing (--fail-on-growth)");
                }
                _ = sigint.recv() => stop.begin(&cmd, libc::SIGINT, "interrupted"),
                _ = sigterm.recv() => stop.begin(&cmd, libc::SIGTERM, "terminated"),
            }
        }
    };
    let (mut report, status) = tracer
        .run_until(stop, Some(OBSERVE_PERIOD), |r| {
            ledger.observe(r);
            if gates.fail_on_growth && ledger.any_growth_breach(&gates) {
                growing.notify_one();
            }
            true
        })
        .await?;
    let status = status
        .transpose()
        .context("waiting for the command")?
        .unwrap_or(0);
    let exits = tracer.take_exits();
    // Also the processes still running: the workload is done with them now.
    ledger.observe(&report);
    for row in exits.iter().chain(&report.processes) {
        ledger.finish(row);
    }
    // A process that exited keeps its row as it was then: the timers it left are the point.
    report
        .processes
        .extend(exits.into_iter().filter(|p| !p.callsites.is_empty()));

    let text = if args.trace.json {
        output::json::render(&report) + "\n"
    } else {
        output::text::render(&report, None)
    };
    match &args.output {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("cannot write the report {}", path.display()))?,
        None => std::io::stdout().lock().write_all(text.as_bytes())?,
    }

    if let Some(path) = &args.write_baseline {
        let base = gates.baseline_of(&ledger);
        let json = serde_json::to_string_pretty(&base)? + "\n";
        std::fs::write(path, json)
            .with_context(|| format!("cannot write the baseline {}", path.display()))?;
        eprintln!(
            "timerwatch: baseline of {} callsites written to {}",
            base.callsites.len(),
            path.display()
        );
        // What the baseline records is accepted in this run too.
        gates.baseline = Some(base);
    }
    let cases: Vec<_> = ledger
        .callsites
        .iter()
        .map(|(k, s)| (k, s, gates.judge(k, s)))
        .collect();
    if let Some(path) = &args.junit {
        std::fs::write(path, junit::render(&cases, report.duration_s))
            .with_context(|| format!("cannot write the JUnit report {}", path.display()))?;
    }
    let failed: Vec<_> = cases
        .iter()
        .filter_map(|(k, s, v)| match v {
            Verdict::Fail(b) => Some((*k, *s, b)),
            _ => None,
        })
        .collect();
    if failed.is_empty() {
        return Ok(child::exit_code(status));
    }
    let growth = failed.iter().any(|f| {
        f.2.iter()
            .any(|b| matches!(b, judge::Breach::Growth { .. }))
    });
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "timerwatch: gate failed: {} callsite(s) leak timers (command exited with {})",
        failed.len(),
        child::exit_code(status)
    );
    if args.summary {
        for (k, s, b) in &failed {
            let _ = writeln!(err, "timerwatch: leak: {}", judge::leak_context(k, s, b));
        }
    }
    Ok(if growth {
        EXIT_GROWTH
    } else {
        EXIT_LIVE_AT_EXIT
    })
}

/// Stopping the command: a signal, then SIGKILL once `kill_after` has passed.
struct Stop {
    pid: u32,
    kill_after: Duration,
    /// When the SIGKILL is due, once stopping began.
    kill_at: Option<Instant>,
}

impl Stop {
    fn begin(&mut self, cmd: &child::Child, signal: libc::c_int, why: &str) {
        eprintln!(
            "timerwatch: {why}: sending {} to pid {}",
            signal_name(signal),
            self.pid
        );
        cmd.signal(signal);
        self.kill_at.get_or_insert(Instant::now() + self.kill_after);
    }
}

fn signal_name(signal: libc::c_int) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGKILL => "SIGKILL",
        _ => "a signal",
    }
}
