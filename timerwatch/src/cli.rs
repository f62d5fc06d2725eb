//! Command-line interface, in the habits of bcc/bpftrace/Inspektor Gadget tools.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

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
    /// Run a command and trace it and every process it starts from their first instruction;
    /// print the report when it exits and fail (exit code) on timer leaks: a CI gate.
    #[command(after_help = RUN_EXIT_CODES)]
    Run(RunArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout; `--subcommand run` for timerwatch-run(1).
    Man {
        #[arg(long, value_name = "NAME")]
        subcommand: Option<String>,
        /// Instead, write timerwatch.1 and timerwatch-SUBCOMMAND.1 for every subcommand here.
        #[arg(long, value_name = "DIR", conflicts_with = "subcommand")]
        dir: Option<PathBuf>,
    },
}

const RUN_EXIT_CODES: &str = "Exit status: the command's own (128+N if a signal N killed it) \
unless a gate fails: 3 with --fail-on-growth, 4 with --fail-on-live-at-exit (3 when both \
fail); 126 the command is not executable, 127 it was not found; 1 and 2 (timerwatch \
itself failed) as for every subcommand.";

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub trace: TraceArgs,
    /// Stop the command after this many seconds (SIGTERM, then SIGKILL after --kill-after);
    /// by default the run lasts as long as the command.
    #[arg(short = 'd', long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Seconds between the SIGTERM (or a forwarded SIGINT/SIGTERM) and the SIGKILL.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub kill_after: f64,
    /// Fail (exit 3) when any callsite was `growing` at any time during the run.
    #[arg(long)]
    pub fail_on_growth: bool,
    /// Fail (exit 4) when a callsite has more than N timers live when the workload is done:
    /// at each process's exit (Go: timers still pending in its runtime), or when the command
    /// exits for processes still running.
    #[arg(long, value_name = "N")]
    pub fail_on_live_at_exit: Option<u64>,
    /// Never fail a callsite whose caller matches this pattern (`*` matches anything;
    /// repeatable), e.g. `--allow 'net/http.*'`.
    #[arg(long = "allow", value_name = "CALLER")]
    pub allow: Vec<String>,
    /// Accept the callsites in this file (written by --write-baseline): they may grow and keep
    /// up to the live count recorded there; more, or a new callsite, fails.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Write the callsites that fail the gates (all of growth and live-at-exit if no gate is
    /// given) to FILE as a baseline, and do not fail on them.
    #[arg(long, value_name = "FILE")]
    pub write_baseline: Option<PathBuf>,
    /// Write the report (text, or JSON with --json) to FILE instead of stdout, which the
    /// command shares.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Write a JUnit XML report: one test case per callsite, failures with stack and counts.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// On failure, print each failing callsite's leak context (callsite, kind, live, growth,
    /// oldest, stack) on stderr.
    #[arg(long)]
    pub summary: bool,
    /// The command and its arguments (after `--`).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<OsString>,
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

/// A completion script for `shell`, from the clap definition.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "timerwatch", &mut out);
    out
}

/// The man page of timerwatch, or of one subcommand (`timerwatch-run(1)`), from the clap
/// definition. `None`: no such subcommand.
pub fn man_page(subcommand: Option<&str>) -> Option<Vec<u8>> {
    let cli = Cli::command();
    let cmd = match subcommand {
        None => cli,
        Some(name) => {
            let sub = cli.find_subcommand(name)?.clone();
            // clap names are 'static; this runs once per process.
            let full: &'static str = format!("timerwatch-{name}").leak();
            sub.name(full).bin_name(full)
        }
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out).ok()?;
    Some(out)
}

/// Every man page: `timerwatch.1` and one `timerwatch-NAME.1` per subcommand, in `dir`.
pub fn write_man_pages(dir: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let names: Vec<String> = Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    let mut written = Vec::new();
    for name in std::iter::once(None).chain(names.iter().map(|n| Some(n.as_str()))) {
        let file = dir.join(match name {
            None => "timerwatch.1".to_string(),
            Some(n) => format!("timerwatch-{n}.1"),
        });
        let page = man_page(name).ok_or_else(|| std::io::Error::other("man page"))?;
        std::fs::write(&file, page)?;
        written.push(file);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_the_command_after_its_options() {
        let cli = Cli::try_parse_from([
            "timerwatch",
            "run",
            "--fail-on-growth",
            "--",
            "sh",
            "-c",
            "exit 3",
        ])
        .unwrap();
        let Command::Run(a) = cli.command else {
            panic!("not run")
        };
        assert!(a.fail_on_growth);
        assert_eq!(a.command, ["sh", "-c", "exit 3"]);
    }

    #[test]
    fn completions_and_man_pages_name_the_subcommands() {
        let bash = String::from_utf8(completions(clap_complete::Shell::Bash)).unwrap();
        assert!(bash.contains("fail-on-live-at-exit"));
        let man = String::from_utf8(man_page(Some("run")).unwrap()).unwrap();
        assert!(
            man.contains("timerwatch\\-run") && man.contains("junit"),
            "{man}"
        );
        assert!(man_page(Some("nope")).is_none());
        let dir = tempfile::tempdir().unwrap();
        let pages = write_man_pages(dir.path()).unwrap();
        assert!(pages.iter().any(|p| p.ends_with("timerwatch-run.1")));
        assert!(pages.iter().any(|p| p.ends_with("timerwatch.1")));
    }
}
