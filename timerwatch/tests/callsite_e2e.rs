//! One timer, one callsite: a periodic timer keeps the callsite of the function that created and
//! armed it, across the re-arms the kernel does for it elsewhere (a timerfd's in `read()`, a
//! POSIX interval timer's and a `setitimer` timer's at signal dequeue), and its wake-ups are
//! counted there. Traced from before the timer exists. Root only.

mod common;

use std::time::Duration;

use common::{Target, Tool};

const SECS: u64 = 5;

/// One trace of `consumed_elsewhere MODE` from before it creates its timer: its report and pid.
fn trace(mode: &str) -> (common::Report, u32) {
    let mut target = Target::spawn("consumed_elsewhere", &[mode]);
    let pid = target.pid().to_string();
    let secs = SECS.to_string();
    let mut tool = Tool::spawn(&["snapshot", "--json", "-p", &pid, "--duration", &secs]);
    tool.wait_attached();
    target.release();
    let done = tool.finish(common::ATTACH_TIMEOUT + Duration::from_secs(SECS + 30));
    (done.report(), target.pid())
}

/// The one callsite of `kind` in `report`, asserting there is exactly one.
fn only_site<'a>(
    report: &'a common::Report,
    pid: u32,
    mode: &str,
    kind: &str,
) -> &'a serde_json::Value {
    let sites: Vec<&serde_json::Value> = report.process(pid)["callsites"]
        .as_array()
        .expect("callsites")
        .iter()
        .filter(|c| c["kind"] == kind)
        .collect();
    assert_eq!(
        sites.len(),
        1,
        "the {mode} timer is split across callsites; report:\n{report}"
    );
    sites[0]
}

/// Traces `consumed_elsewhere MODE` from before it creates its timer; the one callsite of
/// `kind` must be `creator`'s, with one live timer and about 1000 wake-ups a second.
///
/// A report can land in the microseconds between an expiry and the re-arm that the consumer's
/// `read()` or signal dequeue makes: the timer is then truly not armed, and live is 0. That
/// instant is up to the scheduler (a few percent of reports on an idle VM), so a trace that
/// ends there is taken again, up to three times; a timer that is wrongly counted stays wrong
/// in every trace.
fn check(mode: &str, kind: &str, creator: &str) {
    let (mut report, mut pid) = trace(mode);
    for _ in 0..2 {
        if only_site(&report, pid, mode, kind)["live"] == 1 {
            break;
        }
        (report, pid) = trace(mode);
    }
    let site = only_site(&report, pid, mode, kind);
    assert_eq!(site["caller"], creator, "report:\n{report}");
    assert_eq!(site["live"], 1, "report:\n{report}");
    assert_eq!(site["created_total"], 1, "report:\n{report}");
    let w = &site["wakeups"];
    assert!(w.is_object(), "no wake-ups on {creator}; report:\n{report}");
    // The timer runs from the release to the end: slightly less than the traced duration.
    let per_s = report.num(w, "count") / (report.duration_s() - 0.2);
    assert!(
        (850.0..=1100.0).contains(&per_s),
        "{per_s:.0} wake-ups/s on {creator}, expected ~1000; report:\n{report}"
    );
    assert_eq!(report.0["lost_events"], 0, "report:\n{report}");
}

#[test]
fn periodic_timerfd_read_elsewhere_keeps_its_creating_callsite() {
    let Some(_serial) = common::start() else {
        return;
    };
    check("timerfd", "timerfd", "start_poll_clock");
}

#[test]
fn posix_interval_timer_taken_elsewhere_keeps_its_creating_callsite() {
    let Some(_serial) = common::start() else {
        return;
    };
    check("posix", "posix_timer", "start_signal_clock");
}

#[test]
fn setitimer_taken_elsewhere_keeps_its_creating_callsite() {
    let Some(_serial) = common::start() else {
        return;
    };
    check("itimer", "itimer", "start_alarm_clock");
}
