//! What to trace and how: the options every tracing subcommand shares. Owned by neither the
//! command line nor the daemon, so `cli → daemon → session` stays one-way and all three can
//! take them.

use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct TraceArgs {
    /// Trace only this process (repeatable). Timers it armed before tracing started are
    /// reported as pre-existing, without a callsite.
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Trace only tasks with this command name (repeatable; exact match, first 15 bytes).
    #[arg(long = "comm", value_name = "NAME")]
    pub comms: Vec<String>,
    /// Print JSON (schema timerwatch.report/v1, see README) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Do not attach the sched_waking/sched_switch probes: no wake-up counts or latencies, a
    /// little less overhead on busy hosts.
    #[arg(long)]
    pub no_wakeups: bool,
    /// Do not trace Go runtime timers. By default, each -p/--comm target whose executable is a
    /// Go binary (1.19–1.27) also gets uprobes on the runtime's timer functions and a walk of
    /// its timer heaps at every report; without -p/--comm Go timers are not traced.
    #[arg(long)]
    pub no_go: bool,
    /// Send every cancel and start of a re-armed timer to the daemon as its own record instead
    /// of counting re-arms in the kernel: totals exact at every instant, at about twice the
    /// cost per re-arm (BENCHMARKS.md measures both).
    #[arg(long)]
    pub no_rearm_counting: bool,
    /// On stderr, one line per Go uprobe attached: the runtime function and its file offset,
    /// to check the probe points or put another tool's probes on the same instructions.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Kernel→daemon ring buffer size in bytes (a power of two, at least 4096).
    #[arg(long, value_name = "BYTES", default_value_t = crate::probe::DEFAULT_RING_BYTES)]
    pub ring_buffer_size: u32,
    /// A callsite whose timers expire by themselves but which heads for at least this many
    /// live timers (arrival rate × lifetime) is `growing` while it fills up, with its plateau;
    /// below it, the rise of its first lifetime is `unknown` (filling). See README "Growth
    /// verdicts".
    #[arg(long, value_name = "TIMERS", default_value_t = crate::verdict::DEFAULT_PLATEAU_THRESHOLD, value_parser = timer_count)]
    pub plateau_threshold: f64,
}

/// A non-negative, finite number of timers.
fn timer_count(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number of timers (0 or more)")),
    }
}
