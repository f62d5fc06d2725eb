//! Command-line interface, in the habits of bcc/bpftrace/Inspektor Gadget tools.

use clap::{Args, Parser, Subcommand};

// Every tracing subcommand shares these; they live beside no subcommand so that the daemon and
// the session loop can take them without importing the command line.
pub use crate::trace_args::TraceArgs;

#[derive(Parser, Debug)]
#[command(
    name = "timerwatch",
    version,
    about = "Find timer leaks in live processes from the kernel: every live timer by process and callsite",
    long_about = "timerwatch attaches eBPF programs to the kernel's timer:* and sched:* tracepoints and \
                  keeps a table of live timers per process and callsite (the user function that armed \
                  them). It never touches the traced processes. Needs root (CAP_BPF, CAP_PERFMON, \
                  CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Live view refreshing every interval, busiest callsites first.
    Top(TopArgs),
    /// Trace for --duration seconds (or until Ctrl-C), then print one report.
    Snapshot(SnapshotArgs),
    /// Live view of timer-caused wake-ups: how often each callsite's timers wake their tasks,
    /// how late the timers fire (slack) and how long the woken task waits for a CPU.
    Wakeups(TopArgs),
    /// Trace every process continuously and serve Prometheus metrics (with container and pod
    /// labels) on /metrics, the last report on /report and liveness on /healthz.
    Daemon(crate::daemon::DaemonArgs),
    /// Where the Go uprobes of a process would go, without tracing: for tools that put their
    /// own probes on the same instructions (the benchmark's floor).
    #[command(hide = true)]
    GoProbes(GoProbesArgs),
}

#[derive(Args, Debug)]
pub struct GoProbesArgs {
    /// The Go process.
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pub pid: u32,
    /// One JSON array of `{"function", "file_offset"}` instead of lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct TopArgs {
    #[command(flatten)]
    pub trace: TraceArgs,
    /// Seconds between refreshes.
    #[arg(short = 'i', long, default_value_t = 1.0, value_name = "SECS")]
    pub interval: f64,
    /// Stop after this many refreshes (default: until Ctrl-C).
    #[arg(short = 'n', long, value_name = "N")]
    pub count: Option<u64>,
    /// Callsite rows to show (default: fit the terminal).
    #[arg(long, value_name = "N")]
    pub rows: Option<usize>,
}

#[derive(Args, Debug)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub trace: TraceArgs,
    /// Seconds to trace before reporting.
    #[arg(short = 'd', long, default_value_t = 10.0, value_name = "SECS")]
    pub duration: f64,
    /// Exit with status 3 when any callsite's verdict is `growing` (for CI pipelines that run a
    /// workload under timerwatch and fail on timer leaks).
    #[arg(long)]
    pub fail_on_growth: bool,
}
