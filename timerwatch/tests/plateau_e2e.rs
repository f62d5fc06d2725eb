//! Populations of timers that expire by themselves, traced from mid-stream: their visible count
//! rises for one lifetime (timers armed before attaching are invisible) and then stays flat.
//! That rise is the attach filling up, not a leak: never `growing`, and the report's `plateau`
//! is arrival rate × lifetime. Root only.

mod common;

use std::time::Duration;

use common::{Target, Tool};
use serde_json::Value;

/// Every report of `top --json -p PID -i 1 -n SECS`.
fn trace(pid: u32, secs: u64) -> Vec<Value> {
    let (pid, n) = (pid.to_string(), secs.to_string());
    let mut tool = Tool::spawn(&["top", "--json", "-i", "1", "-n", &n, "-p", &pid]);
    // Reports are paced by the tracer's timer: on a loaded machine they take longer than 1 s.
    let done = tool.finish(common::ATTACH_TIMEOUT + Duration::from_secs(2 * secs + 30));
    assert!(done.status.success(), "timerwatch top: {}", done.stderr);
    done.assert_no_panic();
    let reports: Vec<Value> = done
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON report per line"))
        .collect();
    assert_eq!(reports.len() as u64, secs, "one report a second");
    reports
}

fn process(report: &Value, pid: u32) -> Option<&Value> {
    report["processes"]
        .as_array()?
        .iter()
        .find(|p| p["pid"] == pid)
}

fn site(report: &Value, pid: u32, is_it: impl Fn(&Value) -> bool) -> Option<&Value> {
    process(report, pid)?["callsites"]
        .as_array()?
        .iter()
        .find(|c| is_it(c))
}

/// Checks a trace of a population that fills to `expected` and stays: never `growing` (callsite
/// nor process), and the last report's plateau within 20% of `expected`.
fn check_plateau(
    reports: &[Value],
    pid: u32,
    what: &str,
    expected: f64,
    is_it: impl Fn(&Value) -> bool,
) {
    let mut verdicts = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        let Some(c) = site(r, pid, &is_it) else {
            verdicts.push("-".to_string());
            continue;
        };
        let p = process(r, pid).expect("the process");
        verdicts.push(format!(
            "{}/{}",
            c["verdict"].as_str().unwrap_or("?"),
            c["live"]
        ));
        assert_ne!(
            c["verdict"],
            "growing",
            "{what} called growing at report {}: {c:#}\nverdicts so far: {verdicts:?}",
            i + 1
        );
        assert_ne!(
            p["verdict"],
            "growing",
            "the process of {what} called growing at report {}: {p:#}",
            i + 1
        );
    }
    let last = reports.last().expect("a report");
    let c = site(last, pid, &is_it).unwrap_or_else(|| panic!("no {what} callsite: {last:#}"));
    let plateau = c["plateau"]
        .as_f64()
        .unwrap_or_else(|| panic!("no plateau: {c:#}"));
    println!("{what}: plateau {plateau} (expected {expected}), verdicts {verdicts:?}");
    assert!(
        (plateau - expected).abs() <= 0.2 * expected,
        "{what}: plateau {plateau}, expected {expected} ± 20%: {c:#}"
    );
    assert_eq!(c["verdict"], "stable", "{what} at its plateau: {c:#}");
}

#[test]
fn time_wait_sockets_of_a_steady_server_fill_to_their_plateau_and_never_grow() {
    let Some(_serial) = common::start() else {
        return;
    };
    // 20 connections a second, each leaving a 60 s TIME_WAIT timer; traced from mid-stream.
    let target = Target::spawn("tw_server", &[]);
    std::thread::sleep(Duration::from_secs(10));
    let reports = trace(target.pid(), 90);
    check_plateau(&reports, target.pid(), "TIME_WAIT", 20.0 * 60.0, |c| {
        c["timer_function"] == "tw_timer_handler"
    });
    let last = reports.last().expect("a report");
    let c = site(last, target.pid(), |c| {
        c["timer_function"] == "tw_timer_handler"
    })
    .unwrap();
    let life = &c["lifetime"];
    assert!(
        (life["mean_s"].as_f64().unwrap_or(0.0) - 60.0).abs() < 3.0,
        "TIME_WAIT lasts 60 s: {c:#}"
    );
}

#[test]
fn go_time_after_30s_in_a_select_loop_fills_to_its_plateau() {
    let Some(_serial) = common::start() else {
        return;
    };
    // Go ≤ 1.22 keeps every time.After timer in the heap until it fires. In CI a missing
    // toolchain fails here (toolchain_for panics); elsewhere the test is skipped.
    let Some(tc) = common::go::toolchain_for(22) else {
        return;
    };
    let bin = common::go::build(&tc, "after_30s", false);
    let target = common::go::Running::spawn(&bin);
    std::thread::sleep(Duration::from_secs(5));
    let reports = trace(target.pid(), 45);
    check_plateau(
        &reports,
        target.pid(),
        "time.After(30 s)",
        100.0 * 30.0,
        |c| c["caller"] == "main.waitOrGiveUp",
    );
}
