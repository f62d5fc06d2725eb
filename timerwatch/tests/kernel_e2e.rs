//! End-to-end tests against the real kernel: timerwatch traces the C programs in
//! tests/targets and its report must match what they are known to do. They load BPF, so they
//! need root; `cargo xtask test` runs them with --test-threads=1.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Report, Target, Tool};
use serde_json::Value;

/// Long enough that a one-off hiccup stays well inside the 10% tolerances.
const LEAK_SECS: u32 = 6;

/// Live timers are counted over the trace window only, so the expected count is the target's
/// exact (deadline-paced) rate times the window the report says it traced.
struct Leak {
    target: &'static str,
    caller: &'static str,
    kind: &'static str,
    rate: f64,
}

/// Runs `leak.target` under a snapshot and checks everything a leak report must say; returns
/// the report and the target's pid for target-specific checks.
fn check_leak(leak: &Leak) -> (Report, u32) {
    let target = Target::spawn(leak.target, &[]);
    let pid = target.pid();
    let report = common::snapshot(&[pid], LEAK_SECS);
    check_identity(&report, pid, leak.target);
    assert_eq!(
        report.0["lost_events"], 0,
        "events were lost; report:\n{report}"
    );

    let site = report.callsite(pid, leak.caller, leak.kind);
    check_callsite_shape(&report, site, leak.caller);
    let live = report.num(site, "live");
    report.assert_near("live", live, leak.rate * report.duration_s(), 0.10);
    // Every timer here is set for an hour (or never armed) and never deleted.
    assert_eq!(
        site["expired_total"], 0,
        "a leaked timer expired; report:\n{report}"
    );
    assert_eq!(
        site["cancelled_total"], 0,
        "a leaked timer was cancelled; report:\n{report}"
    );
    (report, pid)
}

fn check_identity(report: &Report, pid: u32, target: &str) {
    let process = report.process(pid);
    assert_eq!(process["comm"], target, "wrong comm; report:\n{report}");
    let exe = process["exe"].as_str().unwrap_or_default();
    assert!(
        exe.ends_with(&format!("/{target}")),
        "wrong exe {exe:?}; report:\n{report}"
    );
}

fn check_callsite_shape(report: &Report, site: &Value, caller: &str) {
    assert_eq!(site["source"], "kernel", "wrong source; report:\n{report}");
    assert_eq!(
        site["verdict"], "unknown",
        "wrong verdict; report:\n{report}"
    );
    let frames = site["frames"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    assert!(
        frames
            .iter()
            .any(|f| f.as_str().is_some_and(|f| f.contains(caller))),
        "no frame of the {caller} callsite names {caller}; report:\n{report}"
    );
}

#[test]
fn posix_timer_leak_is_attributed_to_its_caller() {
    let Some(_serial) = common::start() else {
        return;
    };
    let leak = Leak {
        target: "posix_leak",
        caller: "leak_posix_timer",
        kind: "posix_timer",
        rate: 50.0,
    };
    let (report, pid) = check_leak(&leak);
    let site = report.callsite(pid, leak.caller, leak.kind);
    // Each timer is armed exactly once, right after it is created.
    let live = report.num(site, "live");
    report.assert_near("armed_total", report.num(site, "armed_total"), live, 0.10);
}

#[test]
fn never_armed_sigev_none_timer_leak_is_seen() {
    let Some(_serial) = common::start() else {
        return;
    };
    check_leak(&Leak {
        target: "posix_none_leak",
        caller: "leak_sigev_none_timer",
        kind: "posix_timer",
        rate: 50.0,
    });
}

#[test]
fn timerfd_leak_is_attributed_to_its_caller() {
    let Some(_serial) = common::start() else {
        return;
    };
    check_leak(&Leak {
        target: "timerfd_leak",
        caller: "leak_timerfd",
        kind: "timerfd",
        rate: 50.0,
    });
}

#[test]
fn rearmed_timerfd_pool_stays_at_its_size() {
    let Some(_serial) = common::start() else {
        return;
    };
    let target = Target::spawn("timerfd_pool", &[]);
    let pid = target.pid();
    let report = common::snapshot(&[pid], LEAK_SECS);
    check_identity(&report, pid, "timerfd_pool");
    assert_eq!(
        report.0["lost_events"], 0,
        "events were lost; report:\n{report}"
    );
    let site = report.callsite(pid, "rearm_pool_timer", "timerfd");
    check_callsite_shape(&report, site, "rearm_pool_timer");
    let live = report.num(site, "live");
    assert!(
        (60.0..=68.0).contains(&live),
        "pool of 64 shows {live} live; report:\n{report}"
    );
    let armed = report.num(site, "armed_total");
    assert!(
        armed > 1000.0,
        "only {armed} re-arms counted; report:\n{report}"
    );
    // Re-arms are deadline-paced at 2000/s, so the count is exact, not just large.
    report.assert_near("armed_total", armed, 2000.0 * report.duration_s(), 0.10);
    assert_eq!(
        site["expired_total"], 0,
        "a pool timer fired; report:\n{report}"
    );
}

#[test]
fn nanosleep_loop_counts_every_sleep() {
    let Some(_serial) = common::start() else {
        return;
    };
    let mut target = Target::spawn("nanosleep_loop", &[]);
    let pid = target.pid();
    let report = common::snapshot(&[pid], LEAK_SECS);
    // Relative sleeps run below their nominal 100/s (overhead plus timer slack), so the
    // expectation comes from the loop's own count over its whole, steady, run.
    let summary = target.terminate();
    let mut words = summary.split_whitespace();
    let (iterations, seconds) = match (words.next(), words.next(), words.next(), words.next()) {
        (Some("iterations"), Some(n), Some("seconds"), Some(s)) => (
            n.parse::<f64>().expect("iteration count"),
            s.parse::<f64>().expect("elapsed seconds"),
        ),
        _ => panic!("nanosleep_loop printed {summary:?}"),
    };
    let rate = iterations / seconds;
    assert!(
        rate > 50.0,
        "nanosleep_loop only managed {rate:.1} sleeps/s"
    );

    check_identity(&report, pid, "nanosleep_loop");
    assert_eq!(
        report.0["lost_events"], 0,
        "events were lost; report:\n{report}"
    );
    let site = report.callsite(pid, "sleep_tick", "sleep");
    check_callsite_shape(&report, site, "sleep_tick");
    let live = report.num(site, "live");
    assert!(
        live <= 2.0,
        "a single sleeping thread shows {live} live sleeps; report:\n{report}"
    );
    let armed = report.num(site, "armed_total");
    report.assert_near("armed_total", armed, rate * report.duration_s(), 0.10);
    // Per-CPU and scheduler timers are armed in interrupt context while this process is
    // `current`; they belong to the CPU, never to the process.
    let process = report.process(pid);
    for c in process["callsites"].as_array().into_iter().flatten() {
        let f = c["timer_function"].as_str().unwrap_or_default();
        assert!(
            ![
                "tick_nohz_handler",
                "tick_sched_timer",
                "dl_task_timer",
                "hrtick",
                "sched_rt_period_timer"
            ]
            .contains(&f),
            "a per-CPU kernel timer ({f}) was credited to the process; report:\n{report}"
        );
    }
}

#[test]
fn process_exiting_mid_trace_is_listed_as_exited() {
    let Some(_serial) = common::start() else {
        return;
    };
    // short_lived waits on stdin, so its one second of leaking starts only once the tracer is
    // attached; starting the tracer second would race its start-up against the target's exit.
    let mut target = Target::spawn("short_lived", &[]);
    let pid = target.pid();
    let pid_arg = pid.to_string();
    let mut tool = Tool::spawn(&["snapshot", "--json", "-p", &pid_arg, "--duration", "4"]);
    tool.wait_attached();
    target.release();
    let status = target.wait(Duration::from_secs(5));
    assert!(status.success(), "short_lived failed: {status}");

    let report = tool.finish(Duration::from_secs(30)).report();
    assert!(
        report.find_process(pid).is_none(),
        "exited pid {pid} is still in processes; report:\n{report}"
    );
    let exited = report
        .find_exited(pid)
        .unwrap_or_else(|| panic!("pid {pid} not in exited; report:\n{report}"));
    assert_eq!(
        exited["comm"], "short_lived",
        "wrong comm; report:\n{report}"
    );
}

/// Starts `args` against a leaking target, checks the programs are loaded once attached,
/// interrupts it with `signal` after a second of tracing, and checks it exits 0 leaving no
/// program behind. Returns what it printed and the target's pid.
fn interrupt(
    args: &[&str],
    signal: libc::c_int,
    mut ready: impl FnMut(&Tool) -> bool,
) -> (common::Finished, u32) {
    let target = Target::spawn("posix_leak", &[]);
    let pid = target.pid().to_string();
    let before = common::our_program_ids();
    let mut full_args = args.to_vec();
    full_args.extend(["-p", pid.as_str()]);
    let mut tool = Tool::spawn(&full_args);
    tool.wait_attached();
    let ours: BTreeSet<u64> = common::our_program_ids()
        .difference(&before)
        .copied()
        .collect();
    // Without this the unload check below could pass vacuously.
    assert!(
        !ours.is_empty(),
        "no timerwatch BPF programs loaded while attached"
    );
    assert!(
        common::wait_until(Duration::from_secs(10), || ready(&tool)),
        "timerwatch showed nothing to interrupt; stdout:\n{}\nstderr:\n{}",
        tool.stdout(),
        tool.stderr()
    );

    tool.signal(signal);
    let done = tool.finish(Duration::from_secs(10));
    assert_eq!(
        done.status.code(),
        Some(0),
        "exit after signal {signal}; stderr:\n{}",
        done.stderr
    );
    done.assert_no_panic();
    common::assert_unloaded(&ours);
    (done, target.pid())
}

#[test]
fn sigint_stops_snapshot_early_with_a_report_and_unloads() {
    let Some(_serial) = common::start() else {
        return;
    };
    // A second of tracing gives the report something to show for the target.
    let mut attached = None;
    let (done, pid) = interrupt(
        &["snapshot", "--json", "--duration", "60"],
        libc::SIGINT,
        |_| attached.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(1),
    );
    let report = done.report();
    let duration = report.duration_s();
    assert!(
        duration < 30.0,
        "SIGINT did not stop the 60 s trace early ({duration} s); report:\n{report}"
    );
    let live = report.num(report.process(pid), "live");
    assert!(
        live > 0.0,
        "no live timers after a second of posix_leak; report:\n{report}"
    );
}

#[test]
fn sigterm_stops_top_and_unloads() {
    let Some(_serial) = common::start() else {
        return;
    };
    // Waiting for the target's row proves top refreshed at least once before the signal.
    interrupt(&["top"], libc::SIGTERM, |tool| {
        tool.stdout().contains("posix_leak")
    });
}

/// The single stderr line of a failed run, checked not to be a panic.
fn one_error_line(done: &common::Finished) -> String {
    done.assert_no_panic();
    let lines: Vec<&str> = done
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line on stderr, got:\n{}",
        done.stderr
    );
    lines[0].to_owned()
}

#[test]
fn unknown_pid_is_bad_input() {
    let Some(_serial) = common::start() else {
        return;
    };
    let done = common::run(
        &["snapshot", "-p", "999999999", "--duration", "1"],
        common::ATTACH_TIMEOUT,
    );
    let line = one_error_line(&done);
    assert_eq!(
        done.status.code(),
        Some(2),
        "exit code for an unknown pid; stderr: {line}"
    );
    assert!(
        line.contains("999999999"),
        "error does not name the pid: {line}"
    );
}

#[test]
fn unprivileged_user_is_told_what_is_missing() {
    let Some(_serial) = common::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = common::binary_for_nobody(dir.path());
    // Our own pid exists, so the only thing wrong with this run is the missing privileges.
    let pid = std::process::id().to_string();
    let done = Tool::spawn_command(
        std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(&bin)
            .args(["snapshot", "-p", &pid, "--duration", "1"]),
    )
    .finish(common::ATTACH_TIMEOUT);
    let line = one_error_line(&done);
    assert_eq!(
        done.status.code(),
        Some(1),
        "exit code without privileges; stderr: {line}"
    );
    assert!(
        line.contains("CAP_") || line.contains("root"),
        "error does not say what is missing: {line}"
    );
}

/// `snapshot --fail-on-growth` is how a CI pipeline fails on a timer leak: exit 3 (with the
/// report still printed) when a callsite grows, 0 for a bounded population.
#[test]
fn fail_on_growth_exits_3_for_a_leak_and_0_for_a_bounded_pool() {
    let Some(_serial) = common::start() else {
        return;
    };
    // Long enough for the trend test (a 20/s leak is called after about 12 samples).
    let secs = "16";
    let timeout = common::ATTACH_TIMEOUT + Duration::from_secs(40);
    let leak = Target::spawn("timerfd_leak", &["20"]);
    let pid = leak.pid().to_string();
    let done = common::run(
        &[
            "snapshot",
            "--json",
            "--fail-on-growth",
            "-p",
            &pid,
            "--duration",
            secs,
        ],
        timeout,
    );
    done.assert_no_panic();
    assert_eq!(
        done.status.code(),
        Some(3),
        "a 20/s leak must fail the run; stderr:\n{}\nstdout:\n{}",
        done.stderr,
        done.stdout
    );
    let report = Report::parse(&done.stdout, &done.stderr);
    let site = report.callsite(leak.pid(), "leak_timerfd", "timerfd");
    assert_eq!(site["verdict"], "growing", "report:\n{report}");
    drop(leak);

    let pool = Target::spawn("timerfd_pool", &[]);
    let pid = pool.pid().to_string();
    let done = common::run(
        &[
            "snapshot",
            "--json",
            "--fail-on-growth",
            "-p",
            &pid,
            "--duration",
            secs,
        ],
        timeout,
    );
    assert!(
        done.status.success(),
        "a bounded pool must pass; exit {}; stdout:\n{}",
        done.status,
        done.stdout
    );
}

/// One `snapshot -v` of `pid` with `TIMERWATCH_ATTACH` set to `attach` (unset: the default):
/// its stderr, the bpftool program type of its `hrtimer_start` program while attached, and
/// its report.
fn snapshot_on_path(pid: u32, attach: Option<&str>) -> (String, String, Report) {
    let pid_s = pid.to_string();
    let mut command = std::process::Command::new(common::BIN);
    command.args(["snapshot", "-v", "--json", "-p", &pid_s, "--duration", "3"]);
    match attach {
        Some(v) => command.env("TIMERWATCH_ATTACH", v),
        None => command.env_remove("TIMERWATCH_ATTACH"),
    };
    let mut tool = common::Tool::spawn_command(&mut command);
    tool.wait_attached();
    // Other tools (other test runs) may have programs of the same name loaded: only those whose
    // file descriptors this timerwatch holds are its own.
    let mut own = BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{}/fdinfo", tool.pid())).expect("fdinfo") {
        let info = std::fs::read_to_string(fd.expect("fdinfo entry").path()).unwrap_or_default();
        if let Some(id) = info.lines().find_map(|l| l.strip_prefix("prog_id:")) {
            own.insert(id.trim().parse::<u64>().expect("prog_id"));
        }
    }
    let out = std::process::Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .expect("run bpftool");
    let progs: Value = serde_json::from_slice(&out.stdout).expect("bpftool -j prints JSON");
    let prog_type = progs
        .as_array()
        .expect("an array of programs")
        .iter()
        .filter(|p| p["id"].as_u64().is_some_and(|id| own.contains(&id)))
        .find(|p| {
            p["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("hrtimer_start"))
        })
        .and_then(|p| p["type"].as_str())
        .unwrap_or("none")
        .to_owned();
    let done = tool.finish(Duration::from_secs(60));
    let report = done.report();
    (done.stderr, prog_type, report)
}

#[test]
fn probes_attach_as_btf_raw_tracepoints_and_classic_can_be_forced() {
    let Some(_serial) = common::start() else {
        return;
    };
    let mut target = Target::spawn("nanosleep_loop", &[]);
    let pid = target.pid();
    let rate = |report: &Report| {
        let site = report.callsite(pid, "sleep_tick", "sleep");
        report.num(site, "armed_total") / report.duration_s()
    };

    let has_btf = std::path::Path::new("/sys/kernel/btf/vmlinux").exists();
    let (stderr, prog_type, default) = snapshot_on_path(pid, None);
    if has_btf {
        assert!(
            stderr.contains("kernel probes: BTF raw tracepoints (tp_btf)"),
            "the default path on a kernel with BTF is not tp_btf; stderr:\n{stderr}"
        );
        assert_eq!(prog_type, "tracing", "stderr:\n{stderr}");
    } else {
        assert!(
            stderr.contains("kernel probes: classic tracepoints (no usable kernel BTF"),
            "stderr:\n{stderr}"
        );
    }

    let (stderr, prog_type, classic) = snapshot_on_path(pid, Some("classic"));
    assert!(
        stderr.contains("kernel probes: classic tracepoints (TIMERWATCH_ATTACH=classic)"),
        "stderr:\n{stderr}"
    );
    assert_eq!(prog_type, "tracepoint", "stderr:\n{stderr}");
    target.terminate();

    // Both paths see the same sleeps: the loop's steady rate, within the usual tolerance.
    for report in [&default, &classic] {
        assert_eq!(report.0["lost_events"], 0, "report:\n{report}");
    }
    let (a, b) = (rate(&default), rate(&classic));
    assert!(
        a > 50.0 && (a / b - 1.0).abs() < 0.10,
        "sleeps armed per second differ between paths: default {a:.1}, classic {b:.1}"
    );

    // A value that is neither is bad input, refused before anything loads.
    let done = common::Tool::spawn_command(
        std::process::Command::new(common::BIN)
            .args(["snapshot", "--duration", "1"])
            .env("TIMERWATCH_ATTACH", "sometimes"),
    )
    .finish(Duration::from_secs(30));
    assert_eq!(done.status.code(), Some(2), "stderr:\n{}", done.stderr);
    let line = one_error_line(&done);
    assert!(line.contains("TIMERWATCH_ATTACH"), "{line}");
}
