//! Faults around the tracer: targets that are stopped, traced by someone else, exiting,
//! exec'ing or reusing PIDs; tracefs missing at start; the daemon
//! killed outright. Each must end in a report (or a clean exit), never a hang, a crash or a
//! program left loaded. Root only (BPF), one at a time.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::daemon::Daemon;
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
    let Some(tc) = go::toolchains().pop() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but no Go toolchain is installed"
        );
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
