//! What to trace and how: the options every tracing subcommand shares. Owned by neither the
//! command line nor the daemon, so `cli → daemon → session` stays one-way and all three can
//! take them.

use clap::{Args, ValueEnum};

/// `--go-mode`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoMode {
    Auto,
    Census,
    Probes,
    Off,
}

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
    /// Do not trace Go runtime timers (the same as --go-mode off).
    #[arg(long)]
    pub no_go: bool,
    /// How Go runtime timers of Go processes (1.19–1.27) are traced. `census`: at every
    /// report, read each Go process's timer heaps and name pending timers by their callback
    /// (AfterFunc), waiting goroutine or kind and period; nothing runs in the target. `probes`:
    /// uprobes on the runtime's timer functions give creation stacks and exact totals, at a
    /// trap per timer operation in the target. `auto` (default): probes for -p/--comm runs,
    /// census for unfiltered runs and the daemon. Go processes started later are found as
    /// they exec, in every mode; `run` always probes. See README "Go runtime timers".
    #[arg(long, value_name = "MODE", value_enum, default_value_t = GoMode::Auto)]
    pub go_mode: GoMode,
    /// Census mode: when a Go callsite named only by its kind and period is growing, put the
    /// probes on its process for this many seconds to learn creation stacks, then take them off
    /// (at most one window per 30 window lengths per process, closed early after 5,000 probe
    /// hits). 0: never. `-p`/`--comm` runs in probe mode have creation stacks all along.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_SAMPLE_WINDOW_S, value_parser = window_secs)]
    pub go_sample_window: f64,
    /// Send every cancel and start of a re-armed timer to the daemon as its own record instead
    /// of counting re-arms in the kernel: totals exact at every instant, at about twice the
    /// cost per re-arm (BENCHMARKS.md measures both).
    #[arg(long)]
    pub no_rearm_counting: bool,
    /// Take no copy of the user stack at a C timer's first arm: frames above a function built
    /// without frame pointers are then lost, and each first arm sends ~1 KiB instead of ~5 KiB
    /// to the daemon (BENCHMARKS.md measures both).
    #[arg(long)]
    pub no_stack_copy: bool,
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

/// `--go-sample-window`'s default, on in census mode because the daemon is where unnamed Go ≤ 1.22
/// `time.After` leaks live: a window costs a leaking process at most 5,000 probe hits (~0.1 s of
/// trap time at ~19 µs each), one window a minute, ≤ 0.2% of a CPU; a few timers a second are
/// enough for it to learn the creation stack.
pub const DEFAULT_SAMPLE_WINDOW_S: f64 = 2.0;

/// A window length: 0 (off) to an hour.
fn window_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds from 0 to 3600")),
    }
}

/// A non-negative, finite number of timers.
fn timer_count(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number of timers (0 or more)")),
    }
}
