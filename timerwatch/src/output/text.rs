//! The human table: one row per callsite, busiest first, like `top`.

use std::fmt::Write as _;

use crate::report::{
    CallsiteReport, ExitedReport, ProcessReport, Report, VerdictReason, WakeupReport,
};

/// An age or duration as the tables show it (also the TUI's).
pub(crate) fn age(s: Option<f64>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s < 120.0 => format!("{s:.1}s"),
        Some(s) if s < 7200.0 => format!("{:.1}m", s / 60.0),
        Some(s) => format!("{:.1}h", s / 3600.0),
    }
}

/// `growing +20.0/s`, `draining -3.1/s`, `stable`, `unknown`; `filling` for an `unknown` whose
/// timers are still filling up since the trace began (see README "Growth verdicts").
fn verdict(c: &CallsiteReport) -> String {
    match (c.growth_per_s, c.verdict_reason) {
        (Some(g), _) => format!("{} {g:+.1}/s", c.verdict),
        (None, Some(VerdictReason::Filling)) => VerdictReason::Filling.to_string(),
        (None, _) => c.verdict.to_string(),
    }
}

fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let cut: String = s.chars().take(width.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// Render at most `max_rows` callsite rows (None: all).
pub fn render(report: &Report, max_rows: Option<usize>) -> String {
    render_noting(report, max_rows, &mut |_| true)
}

/// Which exits a stream of tables has noted: each once, in the first frame after it, since a
/// frame printed below the last (not redrawn over it) still shows the earlier notes.
#[derive(Default)]
pub struct ExitNotes {
    shown: std::collections::HashSet<(u32, u64)>,
}

impl ExitNotes {
    /// True the first time this exit is seen.
    pub fn fresh(&mut self, e: &ExitedReport) -> bool {
        self.shown.insert((e.pid, e.exited_after_s.to_bits()))
    }
}

/// [`render`], with a note for each exit that `note` accepts.
pub fn render_noting(
    report: &Report,
    max_rows: Option<usize>,
    note: &mut dyn FnMut(&ExitedReport) -> bool,
) -> String {
    let mut out = String::new();
    let live: u64 = report.processes.iter().map(|p| p.live).sum();
    let _ = writeln!(
        out,
        "timerwatch: {:.1}s traced, {} processes, {} live timers, {} lost events",
        report.duration_s,
        report.processes.len(),
        live,
        report.lost_events
    );
    let _ = writeln!(
        out,
        "{:>8} {:<15} {:>7} {:<16} {:<11} {:>8} {:>8} {:>8} {:>7}  {:<20} CALLER",
        "PID", "COMM", "LIVE", "VERDICT", "KIND", "ARMED", "CANCEL", "EXPIRE", "OLDEST", "FUNCTION"
    );
    let mut rows = 0;
    'outer: for p in &report.processes {
        for c in &p.callsites {
            if max_rows.is_some_and(|m| rows >= m) {
                break 'outer;
            }
            rows += 1;
            let _ = writeln!(
                out,
                "{:>8} {:<15} {:>7} {:<16} {:<11} {:>8} {:>8} {:>8} {:>7}  {:<20} {}",
                p.pid,
                clip(&p.comm, 15),
                c.live,
                verdict(c),
                c.kind,
                c.armed_total,
                c.cancelled_total,
                c.expired_total,
                age(c.oldest_age_s),
                clip(c.timer_function.as_deref().unwrap_or("-"), 20),
                c.caller.as_deref().unwrap_or("?"),
            );
        }
    }
    for p in &report.processes {
        for c in &p.callsites {
            let (Some(plateau), Some(life)) = (c.plateau, c.lifetime.as_ref()) else {
                continue;
            };
            // Sleeps and other one-at-a-time timers have plateaus of a few: only populations
            // worth a look, or whose verdict the plateau explains, get a line.
            if c.verdict_reason.is_none() && plateau < 100.0 {
                continue;
            }
            let when = match life.plateau_in_s {
                Some(s) if s > 0.0 => format!("in {}", age(Some(s))),
                _ => "reached".to_string(),
            };
            let _ = writeln!(
                out,
                "note: pid {} {}: timers live {} at {:.1}/s, plateau {plateau:.0} ({when})",
                p.pid,
                c.caller.as_deref().unwrap_or("?"),
                age(Some(life.mean_s)),
                life.arrivals_per_s.unwrap_or(0.0),
            );
        }
    }
    for p in report
        .processes
        .iter()
        .filter(|p| p.pre_existing.posix_timers > 0)
    {
        let _ = writeln!(
            out,
            "note: pid {} had {} POSIX timers before tracing started (no callsite known)",
            p.pid, p.pre_existing.posix_timers
        );
    }
    for e in report.exited.iter().filter(|e| note(e)) {
        let _ = writeln!(
            out,
            "note: pid {} ({}) exited after {:.1}s",
            e.pid, e.comm, e.exited_after_s
        );
    }
    out
}

/// A latency as the wake-up tables show it (also the TUI's).
pub(crate) fn micros(s: Option<f64>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s < 0.001 => format!("{:.0}µs", s * 1e6),
        Some(s) => format!("{:.1}ms", s * 1e3),
    }
}

/// The wake-up view: callsites whose timers woke a task, most wake-ups per second first.
pub fn render_wakeups(report: &Report, max_rows: Option<usize>) -> String {
    let mut rows: Vec<(&ProcessReport, &CallsiteReport, &WakeupReport)> = report
        .processes
        .iter()
        .flat_map(|p| {
            p.callsites
                .iter()
                .filter_map(move |c| c.wakeups.as_ref().map(|w| (p, c, w)))
        })
        .collect();
    rows.sort_by(|a, b| b.2.per_s.total_cmp(&a.2.per_s));
    // An empty f64 sum is -0.0, which would print as "-0".
    let total: f64 = rows.iter().map(|r| r.2.per_s).sum::<f64>() + 0.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "timerwatch: {:.1}s traced, {:.0} timer wake-ups/s, {} lost events",
        report.duration_s, total, report.lost_events
    );
    let _ = writeln!(
        out,
        "{:>8} {:<15} {:>9} {:<11} {:>9} {:>9} {:>9} {:>9}  CALLER",
        "PID", "COMM", "WAKEUPS/s", "KIND", "SLACK p50", "LAT p50", "LAT p99", "LAT max"
    );
    for (p, c, w) in rows.into_iter().take(max_rows.unwrap_or(usize::MAX)) {
        let _ = writeln!(
            out,
            "{:>8} {:<15} {:>9.1} {:<11} {:>9} {:>9} {:>9} {:>9}  {}",
            p.pid,
            clip(&p.comm, 15),
            w.per_s,
            c.kind,
            micros(w.slack_p50_s),
            micros(w.latency_p50_s),
            micros(w.latency_p99_s),
            micros(w.latency_max_s),
            c.caller.as_deref().unwrap_or("?"),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{callsite, process, report as report_of};
    use crate::report::{CallsiteReport, PreExisting};

    fn report() -> Report {
        let cs = |live, caller: &str| CallsiteReport {
            oldest_age_s: Some(150.0),
            frames: vec![],
            naming: Vec::new(),
            ..callsite(caller, live)
        };
        let leak = CallsiteReport {
            verdict: crate::report::Verdict::Growing,
            growth_per_s: Some(20.5),
            ..cs(10, "leak_timerfd")
        };
        let mut p = process(
            42,
            "a_very_long_process_name",
            vec![leak, cs(2, "other_fn")],
        );
        p.pre_existing = PreExisting {
            posix_timers: 3,
            ..PreExisting::default()
        };
        let mut r = report_of(vec![p]);
        r.duration_s = 5.0;
        r.exited = vec![ExitedReport {
            pid: 9,
            comm: "gone".into(),
            exited_after_s: 1.25,
        }];
        r
    }

    #[test]
    fn rows_notes_and_clipping() {
        let text = render(&report(), None);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("12 live timers"), "{text}");
        assert!(lines[1].contains("CALLER"));
        assert!(
            lines[2].contains("leak_timerfd") && lines[2].contains("2.5m"),
            "{text}"
        );
        assert!(lines[2].contains("a_very_long_pr…"), "{text}");
        assert!(lines[2].contains("growing +20.5/s"), "{text}");
        assert!(lines[3].contains("unknown"), "{text}");
        assert!(text.contains("pid 42 had 3 POSIX timers before tracing"));
        assert!(
            text.contains("pid 9 (gone) exited after 1.2s")
                || text.contains("pid 9 (gone) exited after 1.3s")
        );
    }

    #[test]
    fn filling_callsites_and_plateaus_are_shown() {
        let mut r = report();
        let c = &mut r.processes[0].callsites[1];
        c.verdict_reason = Some(VerdictReason::Filling);
        c.plateau = Some(480.0);
        c.lifetime = Some(crate::report::LifetimeReport {
            mean_s: 60.0,
            max_s: 60.0,
            arrivals_total: 96,
            arrivals_per_s: Some(8.0),
            plateau_in_s: Some(48.0),
        });
        let text = render(&r, None);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[3].contains("filling"), "{text}");
        assert!(
            text.contains(
                "note: pid 42 other_fn: timers live 60.0s at 8.0/s, plateau 480 (in 48.0s)"
            ),
            "{text}"
        );
    }

    #[test]
    fn wakeup_view_sorts_by_rate_and_formats_latencies() {
        let mut r = report();
        let w = |per_s| WakeupReport {
            count: 10,
            per_s,
            slack_p50_s: Some(0.000_052),
            slack_p99_s: None,
            latency_p50_s: Some(0.000_018),
            latency_p99_s: Some(0.0031),
            latency_max_s: Some(0.25),
            latency_buckets: [10; 19],
            latency_sum_s: 0.5,
        };
        r.processes[0].callsites[0].wakeups = Some(w(100.0));
        r.processes[0].callsites[1].wakeups = Some(w(999.5));
        let text = render_wakeups(&r, None);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("1100 timer wake-ups/s"), "{text}");
        assert!(
            lines[2].contains("other_fn") && lines[2].contains("999.5"),
            "{text}"
        );
        assert!(
            lines[2].contains("52µs") && lines[2].contains("18µs"),
            "{text}"
        );
        assert!(
            lines[2].contains("3.1ms") && lines[2].contains("250.0ms"),
            "{text}"
        );
        assert!(lines[3].contains("leak_timerfd"), "{text}");
    }

    #[test]
    fn a_stream_of_frames_notes_each_exit_once() {
        let mut notes = ExitNotes::default();
        let r = report();
        let first = render_noting(&r, None, &mut |e| notes.fresh(e));
        let second = render_noting(&r, None, &mut |e| notes.fresh(e));
        assert!(first.contains("pid 9 (gone) exited"), "{first}");
        assert!(!second.contains("exited"), "{second}");
        assert!(second.contains("leak_timerfd"), "{second}");
    }

    #[test]
    fn no_wakeups_is_zero_not_minus_zero() {
        let text = render_wakeups(&report_of(vec![]), None);
        assert!(text.contains(" 0 timer wake-ups/s"), "{text}");
    }

    #[test]
    fn max_rows_limits_callsites() {
        let text = render(&report(), Some(1));
        assert!(text.contains("leak_timerfd"));
        assert!(!text.contains("other_fn"));
    }
}
