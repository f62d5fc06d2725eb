//! Go census mode end to end: runs without -p/--comm (the daemon, `top`) find Go programs
//! started after them and name their pending timers from the runtime's heaps alone, with no
//! probe in the target; `--comm` runs find later processes too. The programs are the ones in
//! tests/go_targets, built with each installed toolchain. Root only (BPF), one at a time.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, Sample};
use common::go::{self, Running, Toolchain};
use common::{Tool, ATTACH_TIMEOUT};
use serde_json::Value;

/// The bound: a leak is named, counted and called growing within a minute.
const WITHIN: Duration = Duration::from_secs(60);

/// Ages below this make a one-report lag (1 s) a large share of the count.
const MIN_AGE: Duration = Duration::from_secs(20);

/// Tickers are named by the goroutine blocked on their channel (`main.leakTicker.func1`, a
/// closure, names its enclosing function), found by the read-only goroutine walk.
const TICKER_CALLER: &str = "main.leakTicker";

/// Channel timers abandoned by a `select` have no waiter and the callback `sendTime`: on Go ≤ 1.22
/// (which keeps them) the daemon's default creation-stack window names their function.
const AFTER_CALLER: &str = "main.pollWithTimeout";

/// What a census names a channel timer by with no waiter and no window (1.23+'s would-be series).
const UNNAMED_TIMER: &str = "<go_timer>";

/// Toolchains the acceptance names; a missing one is skipped with a note (a failure in CI).
const MINORS: [u32; 5] = [19, 22, 23, 25, 27];

/// A Go target leaking `rate` timers a second from `caller` since `started`.
struct Leak {
    run: Running,
    started: Instant,
    caller: &'static str,
    rate: f64,
}

impl Leak {
    fn spawn(path: &std::path::Path, caller: &'static str, rate: f64) -> Leak {
        Leak {
            run: Running::spawn(path),
            started: Instant::now(),
            caller,
            rate,
        }
    }

    fn pid(&self) -> u32 {
        self.run.pid()
    }

    /// What the runtime holds `lag` before now.
    fn expected(&self, lag: Duration) -> f64 {
        self.rate * self.started.elapsed().saturating_sub(lag).as_secs_f64()
    }
}

struct Version {
    tc: Toolchain,
    /// Each leak the runtime keeps; on ≤1.22 `time.After` in a select loop is one of them.
    leaks: Vec<Leak>,
    /// `time.After` in a select loop on 1.23+, whose runtime drops the abandoned timers.
    after: Option<Running>,
    control: Running,
}

fn sample<'a>(samples: &'a [Sample], name: &str, pid: u32, caller: &str) -> Option<&'a Sample> {
    let pid = pid.to_string();
    samples.iter().find(|s| {
        s.name == name
            && s.label("pid") == pid
            && s.label("caller") == caller
            && s.label("source") == "go"
    })
}

fn verdict(samples: &[Sample], pid: u32, caller: &str) -> String {
    let pid = pid.to_string();
    samples
        .iter()
        .find(|s| {
            s.name == "timerwatch_timer_verdict"
                && s.label("pid") == pid
                && s.label("caller") == caller
                && s.value == 1.0
        })
        .map_or_else(|| "-".into(), |s| s.label("verdict").to_string())
}

fn dump(samples: &[Sample], pids: &[u32]) -> String {
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    samples
        .iter()
        .filter(|s| pids.iter().any(|p| s.label("pid") == p) && s.label("source") == "go")
        .map(|s| format!("{} {:?} {}\n", s.name, s.labels, s.value))
        .collect()
}

#[test]
fn daemon_without_filters_names_go_leaks_started_after_it() {
    let Some(_serial) = common::start() else {
        return;
    };
    let toolchains: Vec<Toolchain> = MINORS.into_iter().filter_map(go::toolchain_for).collect();
    assert!(!toolchains.is_empty(), "no Go toolchain installed");
    // Built first: `go build` is itself a Go program the daemon would census.
    let builds: Vec<_> = toolchains
        .iter()
        .map(|tc| {
            let b = |p: &str, stripped| go::build(tc, p, stripped);
            (
                tc.clone(),
                [
                    b("afterfunc_leak", false),
                    b("afterfunc_leak", true),
                    b("ticker_leak", false),
                    b("after_select", false),
                    b("bounded_control", false),
                ],
            )
        })
        .collect();
    let daemon = Daemon::start(&[]);
    let versions: Vec<Version> = builds
        .into_iter()
        .map(|(tc, [af, af_stripped, ticker, after, control])| {
            let mut leaks = vec![
                Leak::spawn(&af, "main.leakAfterFunc", 50.0),
                Leak::spawn(&af_stripped, "main.leakAfterFunc", 50.0),
                Leak::spawn(&ticker, TICKER_CALLER, 20.0),
            ];
            let after = if tc.minor <= 22 {
                leaks.push(Leak::spawn(&after, AFTER_CALLER, 50.0));
                None
            } else {
                Some(Running::spawn(&after))
            };
            Version {
                leaks,
                after,
                control: Running::spawn(&control),
                tc,
            }
        })
        .collect();
    let first = Instant::now();
    let all_pids: Vec<u32> = versions
        .iter()
        .flat_map(|v| {
            v.leaks
                .iter()
                .map(Leak::pid)
                .chain(v.after.iter().map(Running::pid))
                .chain([v.control.pid()])
        })
        .collect();

    // Every leak growing, and old enough that a report's lag is small against its count.
    let mut samples = Vec::new();
    let all_growing = |s: &[Sample]| {
        versions.iter().all(|v| {
            v.leaks
                .iter()
                .all(|l| verdict(s, l.pid(), l.caller) == "growing")
        })
    };
    while first.elapsed() < WITHIN {
        samples = daemon.metrics();
        if first.elapsed() >= MIN_AGE && all_growing(&samples) {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let read_at = Instant::now();
    let context = || {
        format!(
            "metrics of the targets:\n{}\ndaemon stderr:\n{}",
            dump(&samples, &all_pids),
            daemon.tool.stderr()
        )
    };
    for v in &versions {
        for l in &v.leaks {
            let live = sample(&samples, "timerwatch_live_timers", l.pid(), l.caller)
                .unwrap_or_else(|| {
                    panic!(
                        "{}: no live series for {} of pid {}; {}",
                        v.tc.version,
                        l.caller,
                        l.pid(),
                        context()
                    )
                })
                .value;
            // /metrics holds the last report, at most one interval (1 s) old.
            let (hi, lo) = (
                l.expected(read_at.elapsed()),
                l.expected(read_at.elapsed() + Duration::from_secs(1)),
            );
            assert!(
                live >= lo * 0.9 && live <= hi * 1.1,
                "{}: {} of pid {} has {live} live timers, the runtime holds {lo:.0}–{hi:.0}; {}",
                v.tc.version,
                l.caller,
                l.pid(),
                context()
            );
            assert_eq!(
                verdict(&samples, l.pid(), l.caller),
                "growing",
                "{}: {} of pid {} not growing within {WITHIN:?}; {}",
                v.tc.version,
                l.caller,
                l.pid(),
                context()
            );
        }
        let control = v.control.pid();
        let live = sample(
            &samples,
            "timerwatch_live_timers",
            control,
            "main.boundedTimers",
        )
        .map_or(0.0, |s| s.value);
        assert!(
            (1.0..=5.0).contains(&live),
            "{}: the control keeps 4 timers (+1 mid-swap), live = {live}; {}",
            v.tc.version,
            context()
        );
        assert_ne!(
            verdict(&samples, control, "main.boundedTimers"),
            "growing",
            "{}: the bounded control is called growing; {}",
            v.tc.version,
            context()
        );
        if let Some(after) = &v.after {
            // 1.23+: a channel timer nobody waits on is not kept, so not live under any name.
            for caller in [AFTER_CALLER, UNNAMED_TIMER] {
                let live = sample(&samples, "timerwatch_live_timers", after.pid(), caller)
                    .map_or(0.0, |s| s.value);
                assert!(
                    live <= 2.0,
                    "{}: {live} abandoned channel timers reported live as {caller}; {}",
                    v.tc.version,
                    context()
                );
            }
        }
    }

    // /report: the versions, and how each Go callsite was named.
    let (_, body) = daemon.get("/report");
    let report: Value = serde_json::from_str(&body).expect("/report is JSON");
    for v in &versions {
        for l in &v.leaks {
            let p = report["processes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["pid"] == l.pid())
                .unwrap_or_else(|| panic!("pid {} not in /report", l.pid()));
            assert_eq!(p["go_version"], v.tc.version.as_str(), "{p}");
            let site = p["callsites"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["source"] == "go" && c["caller"] == l.caller)
                .unwrap_or_else(|| panic!("no {} callsite: {p}", l.caller));
            match l.caller {
                "main.leakAfterFunc" => {
                    assert_eq!(site["attribution"], "callback", "{site}");
                    let frame = site["frames"][0].as_str().unwrap_or_default();
                    assert!(
                        frame.starts_with("main.leakAfterFunc.func1 (main.go:"),
                        "{site}"
                    );
                    // AfterFunc(time.Hour, …), first seen within a report of its creation.
                    let d = site["duration_s"].as_f64().unwrap_or_default();
                    assert!((3590.0..3601.0).contains(&d), "{site}");
                }
                AFTER_CALLER => {
                    // Named by the window's stacks, or by what it learned (their signature).
                    let how = site["attribution"].as_str().unwrap_or_default();
                    assert!(["creation_stack", "signature"].contains(&how), "{site}");
                    assert_eq!(site["kind"], "go_timer", "{site}");
                }
                _ => {
                    assert_eq!(site["attribution"], "waiter", "{site}");
                    assert_eq!(site["kind"], "go_ticker", "{site}");
                    assert_eq!(site["period_s"], 3600.0, "{site}");
                }
            }
        }
    }
}

/// Every report of a `top --json` run (one line each) lasting `secs`.
fn reports_of(mut tool: Tool, secs: u64) -> Vec<Value> {
    let done = tool.finish(ATTACH_TIMEOUT + Duration::from_secs(2 * secs + 30));
    assert!(done.status.success(), "timerwatch: {}", done.stderr);
    done.assert_no_panic();
    done.stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON report per line"))
        .collect()
}

fn go_site<'r>(report: &'r Value, pid: u32, caller: &str) -> Option<&'r Value> {
    report["processes"]
        .as_array()?
        .iter()
        .find(|p| p["pid"] == pid)?["callsites"]
        .as_array()?
        .iter()
        .find(|c| c["source"] == "go" && c["caller"] == caller)
}

/// The leak's live count against what its runtime held at the report (`duration_s` after
/// `attached`). With probes, timers the process made before they were attached (its first
/// instants after exec; longer on a busy host) have no creation stack and are counted as the
/// process's pre-existing Go timers: together they are what the runtime holds.
fn check_count(report: &Value, leak: &Leak, attached: Instant, what: &str) {
    let site = go_site(report, leak.pid(), leak.caller)
        .unwrap_or_else(|| panic!("{what}: no {} callsite; report:\n{report:#}", leak.caller));
    let offset = leak.started.duration_since(attached).as_secs_f64();
    let age = report["duration_s"].as_f64().unwrap() - offset;
    let expected = leak.rate * age;
    let before_probes = report["processes"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["pid"] == leak.pid()))
        .and_then(|p| p["pre_existing"]["go_timers"].as_f64())
        .unwrap_or(0.0);
    let live = site["live"].as_f64().unwrap() + before_probes;
    assert!(
        (live - expected).abs() <= 0.1 * expected,
        "{what}: live {live} ({before_probes} of them before the probes), the runtime held \
         ~{expected:.0}; site: {site:#}"
    );
}

#[test]
fn top_without_filters_finds_and_judges_a_later_go_leak() {
    let Some(_serial) = common::start() else {
        return;
    };
    let Some(tc) = go::toolchain_for(23) else {
        return;
    };
    let (leak_bin, control_bin) = (
        go::build(&tc, "afterfunc_leak", false),
        go::build(&tc, "bounded_control", false),
    );
    let secs = 30u64;
    let mut tool = Tool::spawn(&["top", "--json", "-i", "1", "-n", &secs.to_string()]);
    tool.wait_attached();
    let attached = Instant::now();
    let leak = Leak::spawn(&leak_bin, "main.leakAfterFunc", 50.0);
    let control = Running::spawn(&control_bin);
    let reports = reports_of(tool, secs);
    let last = reports.last().expect("at least one report");
    check_count(last, &leak, attached, "top --json");
    let site = go_site(last, leak.pid(), leak.caller).unwrap();
    assert_eq!(site["verdict"], "growing", "{site:#}");
    assert_eq!(site["attribution"], "callback", "{site:#}");
    let c = go_site(last, control.pid(), "main.boundedTimers")
        .unwrap_or_else(|| panic!("no control callsite; report:\n{last:#}"));
    assert_ne!(c["verdict"], "growing", "{c:#}");
    assert!(c["live"].as_u64().unwrap() <= 5, "{c:#}");
}

#[test]
fn snapshot_by_comm_finds_a_go_process_started_after_it_in_both_modes() {
    let Some(_serial) = common::start() else {
        return;
    };
    for (minor, mode) in [(22, "probes"), (25, "census")] {
        let Some(tc) = go::toolchain_for(minor) else {
            continue;
        };
        let bin = go::build(&tc, "afterfunc_leak", false);
        let secs = 8u64;
        let mut tool = Tool::spawn(&[
            "snapshot",
            "--json",
            "--comm",
            "afterfunc_leak",
            "--go-mode",
            mode,
            "--duration",
            &secs.to_string(),
        ]);
        tool.wait_attached();
        let attached = Instant::now();
        let leak = Leak::spawn(&bin, "main.leakAfterFunc", 50.0);
        let report = tool
            .finish(ATTACH_TIMEOUT + Duration::from_secs(2 * secs + 30))
            .report()
            .0;
        let report = &report;
        let what = format!("snapshot --comm, {mode}, {}", tc.version);
        check_count(report, &leak, attached, &what);
        let site = go_site(report, leak.pid(), leak.caller).unwrap();
        let attribution = if mode == "probes" {
            "creation_stack"
        } else {
            "callback"
        };
        assert_eq!(site["attribution"], attribution, "{what}: {site:#}");
    }
}

/// Bad input under census: a process that execs or exits around a walk is left out of that
/// report, never misreported, with no error line; a Go version timerwatch does not know gets
/// one line per binary however many processes run it, and kernel tracing only.
#[test]
fn census_skips_torn_processes_and_names_an_unknown_version_once() {
    let Some(_serial) = common::start() else {
        return;
    };
    let Some(tc) = go::toolchain_for(22) else {
        return;
    };
    // Stripped: the kernel side's symbolizer reads a binary's DWARF again after every exec,
    // which for ten execs a second is its cost, not the census's.
    let reexec = go::build(&tc, "reexec_batch", true);
    let dir = tempfile::tempdir().expect("tempdir");
    let old = go::unknown_version(&tc, &go::build(&tc, "afterfunc_leak", false), dir.path());
    let secs = 8u64;
    let mut tool = Tool::spawn(&["top", "--json", "-i", "1", "-n", &secs.to_string()]);
    tool.wait_attached();
    let looping = Running::spawn(&reexec);
    let olds = [Running::spawn(&old), Running::spawn(&old)];
    // Short-lived Go processes: three generations each, then exit.
    for _ in 0..10 {
        let status = Command::new(&reexec)
            .arg("3")
            .stdout(Stdio::null())
            .status()
            .expect("run reexec_batch");
        assert!(status.success());
    }
    let mut done = tool;
    let out = done.finish(ATTACH_TIMEOUT + Duration::from_secs(2 * secs + 30));
    assert!(out.status.success(), "timerwatch: {}", out.stderr);
    out.assert_no_panic();
    let reports: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON report per line"))
        .collect();
    let mut seen = 0;
    for r in &reports {
        if let Some(site) = go_site(r, looping.pid(), "main.armBatch") {
            seen += 1;
            let live = site["live"].as_u64().unwrap();
            assert!(
                live <= 100,
                "{live} live timers in a process that never holds more than 100: {site:#}"
            );
        }
    }
    assert!(
        seen > 0,
        "the re-exec'ing process was never counted in {} reports; stderr:\n{}",
        reports.len(),
        out.stderr
    );
    let errors: Vec<&str> = out.stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "stderr:\n{}", out.stderr);
    let [a, b] = olds.each_ref().map(Running::pid);
    assert!(
        errors[0].contains(&format!("pid {a}:")) || errors[0].contains(&format!("pid {b}:")),
        "{}",
        errors[0]
    );
    assert!(errors[0].contains("go1.10"), "{}", errors[0]);
}

/// Go ≤ 1.22 keeps `time.After` timers abandoned by a `select` with no waiter and the callback
/// `sendTime`: the census names them by signature only. Growing, they earn one creation-stack
/// window (probes on, then off), whose stacks then name every such timer, before and after it.
#[test]
fn a_growing_signature_earns_one_creation_stack_window() {
    let Some(_serial) = common::start() else {
        return;
    };
    let Some(tc) = go::toolchain_for(22) else {
        return;
    };
    let bin = go::build(&tc, "after_select", false);
    let secs = 45u64;
    let mut tool = Tool::spawn(&[
        "top",
        "--json",
        "-v",
        "-i",
        "1",
        "-n",
        &secs.to_string(),
        // No --go-sample-window: census runs open windows of 2 s by default.
    ]);
    tool.wait_attached();
    let attached = Instant::now();
    let leak = Leak::spawn(&bin, "main.pollWithTimeout", 50.0);
    let pid = leak.pid();
    let done = tool.finish(ATTACH_TIMEOUT + Duration::from_secs(2 * secs + 30));
    assert!(done.status.success(), "timerwatch: {}", done.stderr);
    done.assert_no_panic();
    let reports: Vec<Value> = done
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON report per line"))
        .collect();
    let ours = |what: &str| {
        done.stderr
            .lines()
            .filter(|l| l.contains(&format!("pid {pid}: Go creation-stack window {what}")))
            .count()
    };
    assert_eq!(
        (ours("opened"), ours("closed")),
        (1, 1),
        "one window, opened and closed; stderr:\n{}",
        done.stderr
    );
    let sites = |r: &Value| -> Vec<Value> {
        r["processes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["pid"] == pid)
            .flat_map(|p| p["callsites"].as_array().cloned().unwrap_or_default())
            .filter(|c| c["source"] == "go" && c["caller"] == leak.caller)
            .collect()
    };
    assert!(
        reports
            .iter()
            .flat_map(&sites)
            .any(|c| c["attribution"] == "creation_stack"),
        "no callsite named by a creation stack; stderr:\n{}",
        done.stderr
    );
    let last = reports.last().expect("reports");
    let named = sites(last);
    let learned = named
        .iter()
        .find(|c| c["attribution"] == "signature")
        .unwrap_or_else(|| panic!("timers outside the window not named by it: {named:#?}"));
    assert_eq!(learned["verdict"], "growing", "{learned:#}");
    // Every abandoned timer is the leak's: the named callsites hold what the runtime holds.
    let live: f64 = named.iter().map(|c| c["live"].as_f64().unwrap()).sum();
    let age =
        last["duration_s"].as_f64().unwrap() - leak.started.duration_since(attached).as_secs_f64();
    let expected = 50.0 * age;
    assert!(
        (live - expected).abs() <= 0.1 * expected,
        "live {live}, the runtime held ~{expected:.0}: {named:#?}"
    );
}
