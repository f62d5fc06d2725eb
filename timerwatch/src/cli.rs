//! Command-line interface, in the habits of bcc/bpftrace/Inspektor Gadget tools.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::export::group::GroupBy;

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
    /// Trace like `top`, writing every refresh's report to a file (gzipped JSON Lines with
    /// the host, kernel and start time in a header) for `report` and `diff` on any machine.
    Record(RecordArgs),
    /// Render a recording (or a `--json` report) without tracing: no root needed.
    Report(ReportArgs),
    /// Compare two recordings or `--json` reports: which callsites appeared, grew, shrank or
    /// disappeared.
    Diff(DiffArgs),
    /// Where the Go uprobes of a process would go, without tracing: for tools that put their
    /// own probes on the same instructions (the benchmark's floor).
    #[command(hide = true)]
    GoProbes(GoProbesArgs),
}

/// What stdout shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The table.
    Text,
    /// The JSON report (same as --json).
    Json,
    /// Folded stacks (`comm;outer;…;inner;kernel_callback LIVE`) for flamegraph.pl, inferno,
    /// speedscope.
    Folded,
}

/// Where the report goes besides stdout.
#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    /// Format of stdout.
    #[arg(long = "output", value_enum, default_value_t = Format::Text, value_name = "FORMAT")]
    pub output: Format,
    /// Also write the live timers per stack as a gzipped pprof profile (sample types
    /// live_timers, armed, wakeups) for `go tool pprof` or Pyroscope.
    #[arg(long, value_name = "FILE")]
    pub pprof: Option<PathBuf>,
    /// Also draw the live timers per stack as an SVG flame graph.
    #[arg(long, value_name = "FILE.svg")]
    pub flamegraph: Option<PathBuf>,
    /// Fold the table's rows: per callsite (default), caller, Go package, binary or pod (pods
    /// only while tracing: `report` of a recording shows `-`).
    #[arg(long, value_enum, value_name = "BY")]
    pub group_by: Option<GroupBy>,
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
    /// Print the table at every refresh even on a terminal, instead of the interactive view.
    #[arg(long)]
    pub plain: bool,
    #[command(flatten)]
    pub export: ExportArgs,
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
    #[command(flatten)]
    pub export: ExportArgs,
}

#[derive(Args, Debug)]
pub struct RecordArgs {
    #[command(flatten)]
    pub trace: TraceArgs,
    /// The recording to write (replaced if it exists).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub file: PathBuf,
    /// Seconds to record (default: until Ctrl-C).
    #[arg(short = 'd', long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Seconds between the reports written.
    #[arg(short = 'i', long, default_value_t = 1.0, value_name = "SECS")]
    pub interval: f64,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A file written by `record`, or a `--json` report.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Print JSON (the recording's last report) instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub export: ExportArgs,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The "before": a recording or a `--json` report (its last report is compared).
    #[arg(value_name = "A")]
    pub a: PathBuf,
    /// The "after".
    #[arg(value_name = "B")]
    pub b: PathBuf,
    /// Print JSON (schema timerwatch.diff/v1) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// List unchanged callsites too.
    #[arg(long)]
    pub all: bool,
    /// Exit with status 3 when a callsite appeared or grew and B's verdict for it is
    /// `growing` (as `snapshot --fail-on-growth`, which fails on `growing` verdicts).
    #[arg(long)]
    pub fail_on_growth: bool,
}
