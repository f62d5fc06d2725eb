//! End-to-end tests of the scheduler view: timer-caused wake-ups are counted on the callsite
//! that armed the timer, and the expiry→run latency they report reacts to CPU contention.
//! Root only; `cargo xtask test` runs them serially with the other BPF tests.

mod common;

use std::time::Duration;

use common::{Report, Target, Tool};

use serde_json::Value;

const SECS: u32 = 5;

fn wakeups<'a>(report: &Report, site: &'a Value) -> &'a Value {
    let w = &site["wakeups"];
    assert!(
        w.is_object(),
        "callsite has no wakeups object; report:\n{report}"
    );
    w
}

/// Wake-ups/s of one callsite must match the target's known rate within 10%.
fn check_rate(target: &'static str, caller: &str, kind: &str, rate: f64) {
    let t = Target::spawn(target, &[]);
    let pid = t.pid();
    let report = common::snapshot(&[pid], SECS);
    let site = report.callsite(pid, caller, kind);
    let w = wakeups(&report, site);
    report.assert_near("wakeups.per_s", report.num(w, "per_s"), rate, 0.10);
    for key in [
        "slack_p50_s",
        "latency_p50_s",
        "latency_p99_s",
        "latency_max_s",
    ] {
        let v = report.num(w, key);
        assert!(
            v > 0.0 && v < 1.0,
            "{key} = {v} is not a plausible latency; report:\n{report}"
        );
    }
    assert!(
        report.num(w, "latency_p50_s") <= report.num(w, "latency_p99_s")
            && report.num(w, "latency_p99_s") <= report.num(w, "latency_max_s"),
        "latency quantiles out of order; report:\n{report}"
    );
    // The bucket counts agree with the count and the quantiles: cumulative, never above the
    // count, and the bucket whose bound is the first at or above p50 holds at least half.
    let count = report.num(w, "count");
    let buckets: Vec<f64> = w["latency_buckets"]
        .as_array()
        .expect("latency_buckets")
        .iter()
        .map(|v| v.as_f64().expect("a count"))
        .collect();
    assert_eq!(buckets.len(), 19, "19 bounds; report:\n{report}");
    assert!(
        buckets.windows(2).all(|p| p[0] <= p[1]) && buckets[18] <= count,
        "latency_buckets not cumulative up to count {count}: {buckets:?}"
    );
    const BOUNDS_S: [f64; 19] = [
        1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2,
        2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0,
    ];
    let p50 = report.num(w, "latency_p50_s");
    if let Some(i) = BOUNDS_S.iter().position(|&b| b >= p50) {
        assert!(
            buckets[i] >= count / 2.0,
            "p50 {p50} s but only {} of {count} wake-ups at most {} s: {buckets:?}",
            buckets[i],
            BOUNDS_S[i]
        );
    }
    let sum = report.num(w, "latency_sum_s");
    assert!(
        sum > 0.0 && sum <= count * report.num(w, "latency_max_s") * 1.0001,
        "latency_sum_s {sum} not within (0, count × max]; report:\n{report}"
    );
    // The process total includes this callsite.
    let total = &report.process(pid)["wakeups"];
    assert!(
        report.num(total, "count") >= report.num(w, "count"),
        "process wakeups below its callsite's; report:\n{report}"
    );
    assert_eq!(report.0["lost_events"], 0, "lost events; report:\n{report}");
}

#[test]
fn periodic_1ms_timerfd_wakes_its_reader_1000_times_a_second() {
    let Some(_serial) = common::start() else {
        return;
    };
    check_rate("periodic_timerfd", "wait_tick", "timerfd", 1000.0);
}

#[test]
fn clock_nanosleep_10ms_loop_wakes_100_times_a_second() {
    let Some(_serial) = common::start() else {
        return;
    };
    check_rate("clock_sleep_loop", "sleep_10ms", "sleep", 100.0);
}

fn p99(report: &Report, pid: u32) -> f64 {
    let site = report.callsite(pid, "wait_tick", "timerfd");
    report.num(wakeups(report, site), "latency_p99_s")
}

#[test]
fn cpu_contention_raises_expiry_to_run_latency() {
    let Some(_serial) = common::start() else {
        return;
    };
    let target = Target::spawn("periodic_timerfd", &[]);
    let pid = target.pid();
    let idle = common::snapshot(&[pid], 4);
    // A real-time hog on the target's CPU, busy 20 ms of every 40: about half the ticks wait for
    // the end of a burst, so p99 rises to ~20 ms whatever the fair scheduler decides.
    let hog = Target::spawn("cpu_hog", &[&pid.to_string()]);
    std::thread::sleep(Duration::from_millis(300));
    let busy = common::snapshot(&[pid], 4);
    drop(hog);
    let (p99_idle, p99_busy) = (p99(&idle, pid), p99(&busy, pid));
    assert!(
        p99_busy > 2.0 * p99_idle,
        "p99 expiry→run latency did not rise under contention: idle {p99_idle}s, busy \
         {p99_busy}s\nidle report:\n{idle}\nbusy report:\n{busy}"
    );
}

#[test]
fn wakeups_view_lists_the_callsite_and_exits_on_sigint() {
    let Some(_serial) = common::start() else {
        return;
    };
    let target = Target::spawn("periodic_timerfd", &[]);
    let pid = target.pid().to_string();
    // Programs of other timerwatch instances (if any) are not ours to judge.
    let before = common::our_program_ids();
    let mut tool = Tool::spawn(&["wakeups", "-p", &pid, "--count", "2"]);
    let done = tool.finish(common::ATTACH_TIMEOUT + Duration::from_secs(10));
    done.assert_no_panic();
    assert!(done.status.success(), "wakeups exited with {}", done.status);
    let out = &done.stdout;
    assert!(
        out.contains("WAKEUPS/s") && out.contains("wait_tick") && out.contains("timerfd"),
        "wakeups view lacks the target's row:\n{out}"
    );
    let leftover = || -> Vec<u64> {
        common::our_program_ids()
            .difference(&before)
            .copied()
            .collect()
    };
    assert!(
        common::wait_until(Duration::from_secs(2), || leftover().is_empty()),
        "programs still loaded after exit: {:?}",
        leftover()
    );
}
