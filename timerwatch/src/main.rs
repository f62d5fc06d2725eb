use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use timerwatch::{
    cli::{
        self, Cli, Command, DiffArgs, Format, GoProbesArgs, RecordArgs, ReportArgs, SnapshotArgs,
        TopArgs,
    },
    export,
    failure::{one_line, Failure},
    output,
    record::{diff, file},
    report::Report,
    session::Tracer,
    tui::View,
};
use tokio::time::Instant;

fn attached_note(tracer: &Tracer, what: &str) {
    let mut err = std::io::stderr().lock();
    for tp in tracer.missing_tracepoints() {
        let _ = writeln!(
            err,
            "timerwatch: note: this kernel has no {tp}; timers it would show are not seen"
        );
    }
    // Scripts and tests wait for this line before starting a workload.
    let _ = writeln!(err, "timerwatch: attached, {what}");
}

fn terminal_rows() -> usize {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills a winsize; failure leaves it zeroed.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_row > 6 {
        ws.ws_row as usize - 6
    } else {
        40
    }
}

fn seconds(name: &str, v: f64) -> Result<Duration> {
    if !(v.is_finite() && v > 0.0 && v < 1e9) {
        return Err(Failure::bad_input(format!(
            "{name} must be a positive number of seconds, got {v}"
        ))
        .into());
    }
    Ok(Duration::from_secs_f64(v))
}

async fn snapshot(args: SnapshotArgs) -> Result<()> {
    let duration = seconds("--duration", args.duration)?;
    export::check_paths(&args.export)?;
    let mut tracer = Tracer::start(&args.trace)?;
    attached_note(
        &tracer,
        &format!("tracing for {:.1}s (Ctrl-C to stop early)", args.duration),
    );
    let countdown = std::io::stderr()
        .is_terminal()
        .then(|| tokio::spawn(count_down(Instant::now() + duration)));
    let report = tracer
        .run(Some(Instant::now() + duration), None, |_| true)
        .await;
    if let Some(task) = countdown {
        task.abort();
        // Erase the countdown line so the report starts on a clean line.
        eprint!("\r\x1b[K");
    }
    let report = report?;
    // The report first: a profile that cannot be written must not cost the user the trace.
    let text = export::render(&report, &args.export, args.trace.json, None, true);
    std::io::stdout().lock().write_all(text.as_bytes())?;
    export::write_files(&report, &args.export, export::unix_now_ns())?;
    if args.fail_on_growth && timerwatch::verdict::any_growing(&report) {
        return Err(Failure::growth(
            "timer growth detected (see the report's `growing` callsites)",
        )
        .into());
    }
    Ok(())
}

/// `snapshot`'s remaining time on a terminal's stderr, rewritten in place every second.
async fn count_down(deadline: Instant) {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        eprint!(
            "\r\x1b[Ktimerwatch: {}s left",
            left.as_secs_f64().ceil() as u64
        );
        let _ = std::io::stderr().flush();
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
    }
}

async fn top(args: TopArgs, view: View) -> Result<()> {
    let interval = seconds("--interval", args.interval)?;
    if args.count == Some(0) {
        return Err(Failure::bad_input("--count must be at least 1").into());
    }
    export::check_paths(&args.export)?;
    let mut tracer = Tracer::start(&args.trace)?;
    let tty = std::io::stdout().is_terminal();
    let json = args.trace.json || args.export.output == Format::Json;
    let interactive = tty
        && !args.plain
        && !json
        && args.export.output == Format::Text
        && args
            .export
            .group_by
            .is_none_or(|g| g == timerwatch::cli::GroupBy::Callsite);
    if interactive {
        attached_note(&tracer, "interactive view (q to quit, ? for keys)");
        let report = timerwatch::tui::run(&mut tracer, view, interval, args.count).await?;
        return export::write_files(&report, &args.export, export::unix_now_ns());
    }
    attached_note(&tracer, "refreshing every interval (Ctrl-C to stop)");
    let rows = args.rows.unwrap_or_else(terminal_rows);
    let mut frames = 0u64;
    let count = args.count;
    // A stream of frames states each exit once; a redrawn screen keeps them all in view.
    let mut exit_notes = output::text::ExitNotes::default();
    let export = args.export.clone();
    let report = tracer
        .run(None, Some(interval), |report| {
            let mut out = std::io::stdout().lock();
            let text = if json {
                output::json::render(report) + "\n"
            } else if export.output == Format::Folded {
                export::folded::render(report) + "\n"
            } else {
                let table = match (view, export.group_by) {
                    (View::Wakeups, _) => output::text::render_wakeups(report, Some(rows)),
                    (View::Timers, Some(by)) if by != timerwatch::cli::GroupBy::Callsite => {
                        export::group::render(report, by, Some(rows), true)
                    }
                    (View::Timers, _) if tty => output::text::render(report, Some(rows)),
                    (View::Timers, _) => {
                        output::text::render_noting(report, Some(rows), &mut |e| {
                            exit_notes.fresh(e)
                        })
                    }
                };
                // Home + clear: redraw in place like top(1).
                if tty {
                    format!("\x1b[H\x1b[2J{table}")
                } else {
                    table + "\n"
                }
            };
            let ok = out
                .write_all(text.as_bytes())
                .and_then(|_| out.flush())
                .is_ok();
            frames += 1;
            // A closed pipe (e.g. `| head`) ends the view instead of erroring.
            ok && count.is_none_or(|c| frames < c)
        })
        .await?;
    export::write_files(&report, &args.export, export::unix_now_ns())
}

async fn record(args: RecordArgs) -> Result<()> {
    let interval = seconds("--interval", args.interval)?;
    let duration = args
        .duration
        .map(|d| seconds("--duration", d))
        .transpose()?;
    let mut tracer = Tracer::start(&args.trace)?;
    // The window starts once attached, as for snapshot: attaching can take seconds.
    let deadline = duration.map(|d| Instant::now() + d);
    let header = file::Header::here(args.interval, &args.trace.pids, &args.trace.comms);
    let mut writer = file::Writer::create(&args.file, &header)?;
    attached_note(
        &tracer,
        &format!("recording to {} (Ctrl-C to stop)", args.file.display()),
    );
    let mut failed = None;
    let mut written = 0u64;
    let last = tracer
        .run(deadline, Some(interval), |report| {
            match writer.add(report) {
                Ok(()) => {
                    written += 1;
                    true
                }
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        })
        .await?;
    if let Some(e) = failed {
        return Err(e);
    }
    writer.add(&last)?;
    writer.finish()?;
    eprintln!(
        "timerwatch: wrote {} reports ({:.1}s) to {}",
        written + 1,
        last.duration_s,
        args.file.display()
    );
    Ok(())
}

fn report_file(args: ReportArgs) -> Result<()> {
    let rec = file::read(&args.file)?;
    if let Some(h) = &rec.header {
        eprintln!(
            "timerwatch: recording of host {} (kernel {}, timerwatch {}), started {}, {} reports",
            h.host,
            h.kernel,
            h.timerwatch_version,
            h.started,
            rec.reports.len()
        );
    }
    let report: &Report = rec.last();
    let end_ns = rec
        .header
        .as_ref()
        .map_or(0, |h| ((h.started_unix_s + report.duration_s) * 1e9) as i64);
    export::check_paths(&args.export)?;
    let text = export::render(report, &args.export, args.json, None, false);
    std::io::stdout().lock().write_all(text.as_bytes())?;
    export::write_files(report, &args.export, end_ns)
}

fn diff_files(args: DiffArgs) -> Result<()> {
    let a = file::read(&args.a)?;
    let b = file::read(&args.b)?;
    let d = diff::diff(a.last(), b.last());
    let text = if args.json {
        serde_json::to_string(&d)? + "\n"
    } else {
        diff::render(&d, args.all)
    };
    std::io::stdout().lock().write_all(text.as_bytes())?;
    let growing: Vec<&str> = d
        .changes
        .iter()
        .filter(|c| c.is_leak_growth())
        .map(|c| c.caller.as_str())
        .collect();
    if args.fail_on_growth && !growing.is_empty() {
        return Err(Failure::growth(format!(
            "timer growth from A to B: {} (more live timers and a `growing` verdict in B)",
            growing.join(", ")
        ))
        .into());
    }
    Ok(())
}

fn go_probes(args: GoProbesArgs) -> Result<()> {
    let points = timerwatch::gotrace::probe_offsets(args.pid).map_err(Failure::bad_input)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&points)?)?;
    } else {
        for p in &points {
            writeln!(out, "{} {:#x}", p.function, p.file_offset)?;
        }
    }
    Ok(())
}

/// The table's hash maps double as timers arrive, freeing the old table each time. glibc
/// raises its mmap threshold after the first large free, so from then on the freed tables stay
/// in the heap and in RSS for good (about half the memory per live timer at 100k timers,
/// BENCHMARKS.md). A fixed threshold (glibc's default, 128 KiB) keeps large blocks mmap'ed and
/// gives them back when freed. `MALLOC_MMAP_THRESHOLD_` in the environment still wins.
fn keep_large_frees_returnable() {
    #[cfg(target_env = "gnu")]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: mallopt only changes allocator parameters; called before any thread starts.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) };
    }
}

fn main() -> ExitCode {
    keep_large_frees_returnable();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("timerwatch: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            // The command's exit code, or a gate's.
            Command::Run(a) => return timerwatch::gate::run(a).await,
            Command::Completions { shell } => {
                std::io::stdout().write_all(&cli::completions(shell))?;
            }
            Command::Man { dir: Some(dir), .. } => {
                for page in cli::write_man_pages(&dir)? {
                    println!("{}", page.display());
                }
            }
            Command::Man { subcommand, .. } => {
                let page = cli::man_page(subcommand.as_deref()).ok_or_else(|| {
                    Failure::bad_input(format!(
                        "no subcommand {:?}",
                        subcommand.unwrap_or_default()
                    ))
                })?;
                std::io::stdout().write_all(&page)?;
            }
            Command::Snapshot(a) => snapshot(a).await?,
            Command::Top(a) => top(a, View::Timers).await?,
            Command::Wakeups(a) => {
                if a.trace.no_wakeups {
                    return Err(Failure::bad_input(
                        "`wakeups` needs the sched probes: drop --no-wakeups",
                    )
                    .into());
                }
                top(a, View::Wakeups).await?
            }
            Command::Daemon(a) => timerwatch::daemon::run(a).await?,
            Command::GoProbes(a) => go_probes(a)?,
            Command::Record(a) => record(a).await?,
            Command::Report(a) => report_file(a)?,
            Command::Diff(a) => diff_files(a)?,
        }
        Ok(0)
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let (code, line) = one_line(&e);
            eprintln!("timerwatch: {line}");
            ExitCode::from(code)
        }
    }
}
