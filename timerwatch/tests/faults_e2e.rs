//! Faults around the tracer: targets that are stopped, traced by someone else, exiting,
//! exec'ing or reusing PIDs; tracefs missing at start; the ring buffer flooded; the daemon
//! killed outright. Each must end in a report (or a clean exit), never a hang, a crash or a
//! program left loaded. Root only (BPF), one at a time.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::daemon::{parse_metrics, Daemon};
use common::go::{self, Running};
use common::{assert_unloaded, our_program_ids, wait_until, Target, Tool, BIN};

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a PID this test started and still holds.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// A Go leak, traced with `snapshot -p` while stopped: the heap walk reads a process that does
/// not run, the uprobes see nothing, and the report still comes in time.
fn snapshot_of_stopped_go(stop: impl FnOnce(u32), resume: impl FnOnce(u32)) {
    let Some(_serial) = common::start() else {
        return;
    };
    let Some(tc) = go::newest() else {
        return;
    };
    let bin = go::build(&tc, "afterfunc_leak", false);
    let target = Running::spawn(&bin);
    let pid = target.pid();
    // 50 leaks a second for two seconds.
    std::thread::sleep(Duration::from_secs(2));
    stop(pid);
    let report = common::snapshot(&[pid], 2);
    resume(pid);
    let process = report.process(pid);
    let heap = report.num(process, "go_heap_timers");
    assert!(
        heap >= 80.0,
        "go_heap_timers = {heap} for a stopped process holding ~100 timers; report:\n{report}"
    );
    drop(target);
}

#[test]
fn sigstopped_go_target_is_walked_and_reported() {
    snapshot_of_stopped_go(
        |pid| signal(pid, libc::SIGSTOP),
        |pid| signal(pid, libc::SIGCONT),
    );
}

#[test]
fn ptrace_stopped_go_target_is_walked_and_reported() {
    // Another tracer holds the process (a debugger, a crash handler): our reads must not need
    // to attach, and must not wait for it.
    snapshot_of_stopped_go(
        |pid| {
            // SAFETY: PTRACE_SEIZE and PTRACE_INTERRUPT on a child of this test; no pointers.
            unsafe {
                assert_eq!(
                    libc::ptrace(libc::PTRACE_SEIZE, pid as libc::pid_t, 0usize, 0usize),
                    0,
                    "PTRACE_SEIZE"
                );
                assert_eq!(
                    libc::ptrace(libc::PTRACE_INTERRUPT, pid as libc::pid_t, 0usize, 0usize),
                    0,
                    "PTRACE_INTERRUPT"
                );
            }
        },
        |pid| {
            // SAFETY: as above; detaching lets the process run on.
            unsafe {
                libc::ptrace(libc::PTRACE_DETACH, pid as libc::pid_t, 0usize, 0usize);
            }
        },
    );
}

#[test]
fn processes_exiting_execing_and_reusing_pids_mid_window_cost_no_error() {
    let Some(_serial) = common::start() else {
        return;
    };
    // Thousands of processes that exec and exit within the window, so PIDs come back around
    // while their old owners' timers are still in the tables.
    let mut churn = Command::new("sh")
        .args([
            "-c",
            "while :; do sh -c 'exec sleep 0.001' & sh -c 'exec true'; wait; done",
        ])
        .spawn()
        .expect("start the churn");
    let mut tool = Tool::spawn(&["snapshot", "--json", "--duration", "4"]);
    let done = tool.finish(Duration::from_secs(90));
    let _ = churn.kill();
    let _ = churn.wait();
    assert!(
        done.status.success(),
        "exit {}; stderr:\n{}",
        done.status,
        done.stderr
    );
    let report = common::Report::parse(&done.stdout, &done.stderr);
    let processes = report.0["processes"].as_array().expect("processes array");
    assert!(!processes.is_empty(), "no process in an unfiltered window");
    for line in done.stderr.lines() {
        assert!(
            !line.contains("error") && !line.contains("panicked"),
            "churn produced an error line: {line}\nstderr:\n{}",
            done.stderr
        );
    }
}

#[test]
fn tracefs_unmounted_at_start_is_mounted_by_the_tool() {
    let Some(_serial) = common::start() else {
        return;
    };
    let target = Target::spawn("timerfd_leak", &["20"]);
    // A private mount namespace: the rest of the machine keeps its tracefs.
    let script = format!(
        "umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug/tracing 2>/dev/null; \
         if grep -q ' tracefs ' /proc/self/mounts; then echo still mounted >&2; exit 99; fi; \
         exec {BIN} snapshot --json --duration 2 -p {}",
        target.pid()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("run unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {}; stderr:\n{stderr}",
        out.status
    );
    let report = common::Report::parse(&stdout, &stderr);
    let site = report.callsite(target.pid(), "leak_timerfd", "timerfd");
    assert!(report.num(site, "live") >= 20.0, "report:\n{report}");
}

#[test]
fn sigkill_of_the_daemon_leaves_no_program_loaded() {
    let Some(_serial) = common::start() else {
        return;
    };
    let before = our_program_ids();
    let daemon = Daemon::start(&[]);
    let mut loaded = BTreeSet::new();
    wait_until(Duration::from_secs(10), || {
        loaded = our_program_ids().difference(&before).copied().collect();
        !loaded.is_empty()
    });
    assert!(
        !loaded.is_empty(),
        "the daemon attached but no program of ours is loaded"
    );
    daemon.tool.signal(libc::SIGKILL);
    assert_unloaded(&loaded);
}

/// Sum of a metric's samples, for one pid's callsite if given.
fn metric_of(text: &str, name: &str, site: Option<(u32, &str)>) -> f64 {
    parse_metrics(text)
        .iter()
        .filter(|s| {
            s.name == name
                && site.is_none_or(|(pid, caller)| {
                    s.label("pid") == pid.to_string() && s.label("caller") == caller
                })
        })
        .map(|s| s.value)
        .sum()
}

/// Open timerfds of a process, from its fd table: the ground truth for its live timers.
fn open_timerfds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy().contains("timerfd"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Eight threads arm new timers as fast as they can into a 1 MiB ring buffer for
/// TIMERWATCH_FLOOD_SECS (10 s by default; 60 for the minute): losses are counted. Then
/// relief: once the daemon has drained what the storm left (the loss count stays still for
/// three seconds), a leak started afresh is counted exactly, against its open timerfds.
///
/// Why this order and size: a C timer's first arm carries a copy of its user stack (~5 KiB),
/// so a 64 KiB buffer holds a dozen of them. A leak started while the daemon was still
/// draining the storm's backlog, or into a buffer a busy drain lets fill in a fraction of a
/// second, lost its own first records, and the loss counter kept climbing after the storm.
/// 1 MiB holds four seconds of the 50-a-second leak's first arms, and the storm (hundreds of
/// thousands of arms a second) still overflows it.
#[test]
fn a_flooded_ring_buffer_counts_its_losses_and_is_exact_again_after() {
    let Some(_serial) = common::start() else {
        return;
    };
    let secs: u64 = std::env::var("TIMERWATCH_FLOOD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    // Filtered in the kernel to the two targets, so the rest of the machine (other tests,
    // other tracers' loads) adds no losses of its own.
    let daemon = Daemon::start(&[
        "--ring-buffer-size=1048576",
        "--comm=timer_storm",
        "--comm=timerfd_leak",
    ]);
    let lost_now = || {
        let (_, text) = daemon.get("/metrics");
        metric_of(&text, "timerwatch_lost_events_total", None)
    };
    let storm = Target::spawn("timer_storm", &["8"]);
    std::thread::sleep(Duration::from_secs(secs));
    let lost = lost_now();
    assert!(
        lost > 0.0,
        "{secs} s of an 8-thread storm into 1 MiB lost nothing"
    );
    drop(storm);

    // Relief: the backlog drained, no loss for three seconds in a row.
    let (mut last, mut still_since) = (lost_now(), std::time::Instant::now());
    let settled = wait_until(Duration::from_secs(60), || {
        std::thread::sleep(Duration::from_millis(500));
        let now = lost_now();
        if now != last {
            (last, still_since) = (now, std::time::Instant::now());
        }
        still_since.elapsed() >= Duration::from_secs(3)
    });
    assert!(
        settled,
        "losses still climbing a minute after the storm: {lost} -> {last}"
    );

    let leak = Target::spawn("timerfd_leak", &["50"]);
    let pid = leak.pid();
    std::thread::sleep(Duration::from_secs(3));
    signal(pid, libc::SIGSTOP);
    let truth = open_timerfds(pid) as f64;
    let mut live = 0.0;
    let exact = wait_until(Duration::from_secs(15), || {
        let (_, text) = daemon.get("/metrics");
        live = metric_of(&text, "timerwatch_live_timers", Some((pid, "leak_timerfd")));
        live == truth
    });
    signal(pid, libc::SIGCONT);
    let after = lost_now();
    eprintln!(
        "flood: {secs} s, {lost} records lost during the storm, {last} once drained, \
         {after} after the leak; leak: {live} live reported, {truth} timerfds open"
    );
    assert!(
        exact && truth >= 100.0,
        "after the flood: {live} live timers reported, {truth} timerfds open"
    );
    assert_eq!(after, last, "records lost after the storm was over");
    drop(leak);
}
