//! End-to-end tests of Go runtime timer tracing: timerwatch traces the Go programs in
//! tests/go_targets, built with each installed Go toolchain, and its report must match what
//! they are known to do. Root only, like every BPF test; `cargo xtask test` runs them with
//! --test-threads=1 and passes the toolchains in TIMERWATCH_GO_ROOTS.

mod common;

use std::time::Duration;

use common::go::{self, Running, Toolchain};
use common::Report;
use serde_json::Value;

/// Per version: short, since every version runs, but long enough that 10% is a couple of
/// dozen timers at the slowest rate.
const WINDOW_S: u32 = 4;

/// The Go callsite of `pid` that created timers from `caller`. Timers created before the
/// trace and re-armed from the same function form a second callsite (their stack is the
/// re-arm's), which this skips.
fn go_callsite<'r>(report: &'r Report, pid: u32, caller: &str) -> &'r Value {
    report.process(pid)["callsites"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["source"] == "go" && c["caller"] == caller)
        .max_by_key(|c| c["created_total"].as_u64())
        .unwrap_or_else(|| panic!("pid {pid} has no Go callsite {caller:?}; report:\n{report}"))
}

fn check_frames(report: &Report, site: &Value, caller: &str) {
    let frames: Vec<&str> = site["frames"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let named = frames
        .iter()
        .find(|f| f.starts_with(caller))
        .unwrap_or_else(|| panic!("no frame names {caller}; report:\n{report}"));
    assert!(
        named.contains("main.go:"),
        "frame {named:?} has no file:line; report:\n{report}"
    );
}

/// A target leaking at `rate` per second from `caller`, checked against the window traced.
struct Leak<'a> {
    pid: u32,
    caller: &'a str,
    kind: &'a str,
    rate: f64,
    /// Whether this runtime keeps the timers in its heap (else live stays near zero).
    kept: bool,
}

fn check_leak(report: &Report, leak: &Leak) {
    let site = go_callsite(report, leak.pid, leak.caller);
    assert_eq!(site["kind"], leak.kind, "wrong kind; report:\n{report}");
    check_frames(report, site, leak.caller);
    let expected = leak.rate * report.duration_s();
    let created = report.num(site, "created_total");
    report.assert_near("created_total", created, expected, 0.10);
    let live = report.num(site, "live");
    if leak.kept {
        report.assert_near("live", live, expected, 0.10);
        assert!(
            report.num(site, "oldest_age_s") >= report.duration_s() * 0.8,
            "the oldest leaked timer is younger than the window; report:\n{report}"
        );
    } else {
        assert!(
            live <= 3.0,
            "live = {live}, but this runtime drops timers nobody waits on; report:\n{report}"
        );
    }
    let process = report.process(leak.pid);
    assert!(
        report.num(process, "go_heap_timers") >= live,
        "the heap holds fewer timers than one callsite; report:\n{report}"
    );
}

/// Every target, built with `tc`, traced together for one window.
fn check_toolchain(minor: u32) {
    let Some(_serial) = common::start() else {
        return;
    };
    let Some(tc) = go::toolchain_for(minor) else {
        return;
    };
    let spawn = |program: &str, stripped: bool| Running::spawn(&go::build(&tc, program, stripped));
    let afterfunc = spawn("afterfunc_leak", false);
    let stripped = spawn("afterfunc_leak", true);
    let ticker = spawn("ticker_leak", false);
    let after = spawn("after_select", false);
    let control = spawn("bounded_control", false);
    let pids = [&afterfunc, &stripped, &ticker, &after, &control].map(Running::pid);
    let report = common::snapshot(&pids, WINDOW_S);
    check_report(&tc, &report, &pids);
}

fn check_report(tc: &Toolchain, report: &Report, pids: &[u32; 5]) {
    let [afterfunc, stripped, ticker, after, control] = *pids;
    for &pid in pids {
        let process = report.process(pid);
        assert_eq!(
            process["go_version"], tc.version,
            "wrong go_version; report:\n{report}"
        );
    }
    for pid in [afterfunc, stripped] {
        check_leak(
            report,
            &Leak {
                pid,
                caller: "main.leakAfterFunc",
                kind: "go_afterfunc",
                rate: 50.0,
                kept: true,
            },
        );
    }
    check_leak(
        report,
        &Leak {
            pid: ticker,
            caller: "main.leakTicker",
            kind: "go_ticker",
            rate: 20.0,
            kept: true,
        },
    );
    // go.mod's go line matches the toolchain, so 1.23+ gets synchronous channel timers.
    check_leak(
        report,
        &Leak {
            pid: after,
            caller: "main.pollWithTimeout",
            kind: "go_timer",
            rate: 50.0,
            kept: tc.minor <= 22,
        },
    );

    let site = go_callsite(report, control, "main.boundedTimers");
    assert_eq!(
        site["kind"], "go_afterfunc",
        "wrong kind; report:\n{report}"
    );
    let live = report.num(site, "live");
    assert!(
        live <= 5.0,
        "the control keeps at most 4 timers (+1 mid-swap), live = {live}; report:\n{report}"
    );
    let expected = 50.0 * report.duration_s();
    report.assert_near(
        "cancelled_total",
        report.num(site, "cancelled_total"),
        expected,
        0.10,
    );
    assert!(
        report.num(site, "armed_total") >= 1.8 * expected,
        "every round creates one timer and resets another; report:\n{report}"
    );
    // The control's first four timers were armed before tracing started.
    let pre = report.num(&report.process(control)["pre_existing"], "go_timers");
    assert!(
        pre <= 5.0,
        "pre_existing.go_timers = {pre}; report:\n{report}"
    );
}

#[test]
fn go_1_19() {
    check_toolchain(19);
}

#[test]
fn go_1_22() {
    check_toolchain(22);
}

#[test]
fn go_1_23() {
    check_toolchain(23);
}

#[test]
fn go_1_25() {
    check_toolchain(25);
}

#[test]
fn go_1_27() {
    check_toolchain(27);
}

/// Non-Go targets get kernel tracing and a note; Go stays off with --no-go.
#[test]
fn non_go_pid_is_noted_and_no_go_turns_go_off() {
    let Some(_serial) = common::start() else {
        return;
    };
    let target = common::Target::spawn("nanosleep_loop", &[]);
    let pid = target.pid().to_string();
    let out = common::run(
        &["snapshot", "--json", "-p", &pid, "-d", "1"],
        Duration::from_secs(60),
    );
    let report = out.report();
    assert!(
        out.stderr
            .lines()
            .any(|l| l.contains(&format!("pid {pid}")) && l.contains("not a Go program")),
        "no note about the non-Go pid; stderr:\n{}",
        out.stderr
    );
    let process = report.process(target.pid());
    assert!(process["go_version"].is_null(), "report:\n{report}");
    assert!(process["go_heap_timers"].is_null(), "report:\n{report}");

    let Some(tc) = go::toolchains().into_iter().last() else {
        return;
    };
    let leak = Running::spawn(&go::build(&tc, "afterfunc_leak", false));
    let gpid = leak.pid().to_string();
    let out = common::run(
        &["snapshot", "--json", "--no-go", "-p", &gpid, "-d", "1"],
        Duration::from_secs(60),
    );
    let report = out.report();
    let process = report.process(leak.pid());
    assert!(
        process["callsites"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|c| c["source"] != "go"),
        "--no-go still traced Go timers; report:\n{report}"
    );
}

/// A Go binary timerwatch cannot read gets one error line; the other targets are still traced.
#[test]
fn unsupported_go_binary_is_one_error_line_and_the_rest_works() {
    let Some(_serial) = common::start() else {
        return;
    };
    let Some(tc) = go::toolchains().into_iter().last() else {
        return;
    };
    let good = go::build(&tc, "afterfunc_leak", false);
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = go::unknown_version(&tc, &good, dir.path());

    let bad = Running::spawn(&bad);
    let good = Running::spawn(&good);
    let (bad_pid, good_pid) = (bad.pid().to_string(), good.pid().to_string());
    let before = common::our_program_ids();
    let mut tool = common::Tool::spawn(&[
        "snapshot", "--json", "-p", &bad_pid, "-p", &good_pid, "-d", "2",
    ]);
    tool.wait_attached();
    let ours: std::collections::BTreeSet<u64> = common::our_program_ids()
        .difference(&before)
        .copied()
        .collect();
    let out = tool.finish(Duration::from_secs(60));
    let report = out.report();
    // The Go uprobe program goes away with everything else.
    assert!(!ours.is_empty(), "no BPF programs seen while attached");
    common::assert_unloaded(&ours);
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains(&format!("pid {bad_pid}")) && l.contains("error"))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "expected one error line for the unsupported binary; stderr:\n{}",
        out.stderr
    );
    let site = go_callsite(&report, good.pid(), "main.leakAfterFunc");
    assert!(report.num(site, "live") > 0.0, "report:\n{report}");
}

/// The offsets in `--verbose`'s "Go uprobe on FUNCTION at file offset 0x… of /proc/PID/exe".
fn verbose_offsets(stderr: &str) -> Vec<u64> {
    stderr
        .lines()
        .filter(|l| l.contains(" Go uprobe on "))
        .filter_map(|l| {
            let hex = l
                .split(" at file offset 0x")
                .nth(1)?
                .split_whitespace()
                .next()?;
            u64::from_str_radix(hex, 16).ok()
        })
        .collect()
}

/// `go-probes --json` (what the benchmark's floor probes) lists exactly the points a traced run
/// attaches; a pid that is not Go is one error line and a bad-input exit.
#[test]
fn go_probes_json_lists_the_attached_points() {
    let Some(_serial) = common::start() else {
        return;
    };
    let Some(tc) = go::toolchains().into_iter().last() else {
        return;
    };
    let leak = Running::spawn(&go::build(&tc, "afterfunc_leak", false));
    let pid = leak.pid().to_string();
    let listed = std::process::Command::new(common::BIN)
        .args(["go-probes", "--json", "-p", &pid])
        .output()
        .expect("run timerwatch go-probes");
    assert!(
        listed.status.success(),
        "go-probes failed: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let points: Value = serde_json::from_slice(&listed.stdout).expect("go-probes --json is JSON");
    let mut listed: Vec<u64> = points
        .as_array()
        .expect("an array")
        .iter()
        .map(|p| {
            assert!(p["function"].as_str().is_some_and(|f| !f.is_empty()), "{p}");
            p["file_offset"].as_u64().expect("file_offset")
        })
        .collect();
    assert!(!listed.is_empty(), "no points listed");

    let traced = common::run(
        &["snapshot", "--json", "--verbose", "-p", &pid, "-d", "1"],
        Duration::from_secs(60),
    );
    let mut attached = verbose_offsets(&traced.stderr);
    listed.sort_unstable();
    attached.sort_unstable();
    assert_eq!(listed, attached, "stderr:\n{}", traced.stderr);

    let me = std::process::id().to_string();
    let not_go = std::process::Command::new(common::BIN)
        .args(["go-probes", "--json", "-p", &me])
        .output()
        .expect("run timerwatch go-probes");
    let stderr = String::from_utf8_lossy(&not_go.stderr);
    assert_eq!(not_go.status.code(), Some(2), "stderr: {stderr}");
    assert!(not_go.stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "stderr: {stderr}");
    assert!(stderr.contains("not a Go program"), "stderr: {stderr}");
}
