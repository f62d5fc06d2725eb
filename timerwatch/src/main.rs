use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use timerwatch::{
    cli::{self, Cli, Command, SnapshotArgs, TopArgs},
    failure::{one_line, Failure},
    output,
    session::Tracer,
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
    let mut tracer = Tracer::start(&args.trace)?;
    attached_note(
        &tracer,
        &format!("tracing for {:.1}s (Ctrl-C to stop early)", args.duration),
    );
    let report = tracer
        .run(Some(Instant::now() + duration), None, |_| true)
        .await?;
    let text = if args.trace.json {
        output::json::render(&report) + "\n"
    } else {
        output::text::render(&report, None)
    };
    std::io::stdout().lock().write_all(text.as_bytes())?;
    if args.fail_on_growth && timerwatch::verdict::any_growing(&report) {
        return Err(Failure::growth(
            "timer growth detected (see the report's `growing` callsites)",
        )
        .into());
    }
    Ok(())
}

/// Which table a live view draws.
#[derive(Clone, Copy)]
enum View {
    Timers,
    Wakeups,
}

async fn top(args: TopArgs, view: View) -> Result<()> {
    let interval = seconds("--interval", args.interval)?;
    let mut tracer = Tracer::start(&args.trace)?;
    attached_note(&tracer, "refreshing every interval (Ctrl-C to stop)");
    let tty = std::io::stdout().is_terminal();
    let json = args.trace.json;
    let rows = args.rows.unwrap_or_else(terminal_rows);
    let mut frames = 0u64;
    let count = args.count;
    tracer
        .run(None, Some(interval), |report| {
            let mut out = std::io::stdout().lock();
            let text = if json {
                output::json::render(report) + "\n"
            } else {
                let table = match view {
                    View::Timers => output::text::render(report, Some(rows)),
                    View::Wakeups => output::text::render_wakeups(report, Some(rows)),
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
