//! Golden files of the public renderings (and of `diff`): a report with every field filled
//! (kernel and Go callsites, every optional field), as JSON (`timerwatch.report/v1`), as the
//! text table, and as the daemon and the exports render it.
//! The JSON file is the schema's contract: reading it back and writing it again must give the
//! same bytes, and building the same report in code must too, whatever types hold the values.
//! `TIMERWATCH_BLESS=1 cargo test -p timerwatch --lib golden` rewrites the files after a
//! deliberate change.

use std::path::PathBuf;

use crate::report::{
    Attribution, CallsiteReport, ExitedReport, Kind, LifetimeReport, PreExisting, ProcessReport,
    Report, Source, Verdict, VerdictReason, WakeupReport, SCHEMA,
};

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// Compares `got` with the golden file `name`, or rewrites it when blessing.
/// Reads a report the way recordings are read (through an owned `Value`).
fn read(text: &str) -> Report {
    use serde::Deserialize;
    serde_json::from_str::<serde_json::Value>(text)
        .and_then(Report::deserialize)
        .unwrap()
}

fn check(name: &str, got: &str) {
    let path = golden(name);
    if std::env::var_os("TIMERWATCH_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (TIMERWATCH_BLESS=1 writes it)", path.display()));
    assert!(
        got == want,
        "{} differs:\n--- want\n{want}\n--- got\n{got}",
        path.display()
    );
}

fn wakeups() -> WakeupReport {
    WakeupReport {
        count: 12,
        per_s: 1.2,
        slack_p50_s: Some(5e-5),
        slack_p99_s: Some(0.000_25),
        latency_p50_s: Some(3e-6),
        latency_p99_s: Some(4.1e-5),
        latency_max_s: Some(0.0012),
        latency_buckets: [
            0, 1, 4, 6, 8, 9, 10, 10, 10, 10, 11, 11, 12, 12, 12, 12, 12, 12, 12,
        ],
        latency_sum_s: 0.001_734,
    }
}

/// Every value the report's enum-like fields take today, each at least once.
fn report() -> Report {
    let kernel_leak = CallsiteReport {
        timer_function: Some("timerfd_tmrproc".into()),
        caller: Some("leak_timerfd".into()),
        frames: vec![
            "timerfd_settime".into(),
            "leak_timerfd (timerfd_leak.c:21)".into(),
            "main".into(),
        ],
        naming: vec!["symtab".into(), "debuginfo".into(), "none".into()],
        live: 40,
        created_total: 41,
        armed_total: 45,
        cancelled_total: 1,
        expired_total: 4,
        oldest_age_s: Some(9.5),
        verdict: Verdict::Growing,
        growth_per_s: Some(4.0),
        confidence: Some(0.999),
        projected_live_1h: Some(14440.0),
        wakeups: Some(wakeups()),
        ..CallsiteReport::empty(Source::Kernel, Kind::Timerfd)
    };
    let kernel_sleep = CallsiteReport {
        timer_function: Some("hrtimer_wakeup".into()),
        caller: Some("nanosleep_loop".into()),
        frames: vec!["clock_nanosleep".into(), "nanosleep_loop".into()],
        naming: vec!["symtab".into(), "symtab".into()],
        live: 1,
        created_total: 10,
        armed_total: 10,
        expired_total: 9,
        oldest_age_s: Some(0.1),
        verdict: Verdict::Stable,
        confidence: Some(0.5),
        projected_live_1h: Some(1.0),
        plateau: Some(1.0),
        lifetime: Some(LifetimeReport {
            mean_s: 0.1,
            max_s: 0.1,
            arrivals_total: 10,
            arrivals_per_s: Some(10.0),
            plateau_in_s: Some(0.0),
        }),
        verdict_reason: Some(VerdictReason::AtPlateau),
        ..CallsiteReport::empty(Source::Kernel, Kind::Sleep)
    };
    let kernel_kinds =
        [Kind::PosixTimer, Kind::Itimer, Kind::Kernel, Kind::Other].map(|kind| CallsiteReport {
            live: 1,
            ..CallsiteReport::empty(Source::Kernel, kind)
        });
    let kernel_filling = CallsiteReport {
        caller: Some("tcp_keepalive".into()),
        live: 3,
        verdict_reason: Some(VerdictReason::Filling),
        lifetime: Some(LifetimeReport {
            mean_s: 7200.0,
            max_s: 7200.0,
            arrivals_total: 3,
            arrivals_per_s: None,
            plateau_in_s: None,
        }),
        ..CallsiteReport::empty(Source::Kernel, Kind::Kernel)
    };
    let mut kernel = vec![kernel_leak, kernel_sleep, kernel_filling];
    kernel.extend(kernel_kinds);
    let c = |kind: Kind, attribution: Attribution, verdict: Verdict| CallsiteReport {
        caller: Some(format!("main.{kind}")),
        frames: vec![format!("main.{kind}"), "main.main".into()],
        naming: vec!["pclntab".into(), "pclntab".into()],
        live: 2,
        oldest_age_s: Some(3.25),
        verdict,
        attribution: Some(attribution),
        ..CallsiteReport::empty(Source::Go, kind)
    };
    let go = vec![
        CallsiteReport {
            created_total: 500,
            armed_total: 500,
            growth_per_s: Some(50.0),
            confidence: Some(0.98),
            projected_live_1h: Some(180_000.0),
            plateau: Some(15_000.0),
            verdict_reason: Some(VerdictReason::PlateauAboveThreshold),
            ..c(Kind::GoAfterFunc, Attribution::Callback, Verdict::Growing)
        },
        CallsiteReport {
            period_s: Some(3600.0),
            ..c(Kind::GoTicker, Attribution::Waiter, Verdict::Draining)
        },
        CallsiteReport {
            duration_s: Some(30.0),
            ..c(Kind::GoTimer, Attribution::Signature, Verdict::Unknown)
        },
        c(Kind::GoSleep, Attribution::CreationStack, Verdict::Stable),
        c(Kind::GoNetpoll, Attribution::Signature, Verdict::Unknown),
        c(Kind::GoOther, Attribution::Signature, Verdict::Unknown),
    ];
    let kernel_process = ProcessReport {
        live: kernel.iter().map(|c| c.live).sum(),
        pre_existing: PreExisting {
            posix_timers: 2,
            go_timers: 0,
        },
        verdict: Verdict::Growing,
        growth_per_s: Some(4.0),
        projected_live_1h: Some(14449.0),
        wakeups: Some(wakeups()),
        callsites: kernel,
        ..ProcessReport::named(4242, "timerfd_leak".into(), "/tmp/timerfd_leak".into())
    };
    let go_process = ProcessReport {
        live: go.iter().map(|c| c.live).sum(),
        pre_existing: PreExisting {
            posix_timers: 0,
            go_timers: 7,
        },
        go_version: Some("go1.22.10".into()),
        go_heap_timers: Some(19),
        verdict: Verdict::Draining,
        growth_per_s: Some(-0.5),
        projected_live_1h: Some(0.0),
        callsites: go,
        ..ProcessReport::named(4343, "afterfunc_leak".into(), "/tmp/afterfunc_leak".into())
    };
    let quiet = ProcessReport::named(4444, "idle".into(), String::new());
    Report {
        schema: SCHEMA,
        duration_s: 10.001,
        lost_events: 3,
        unattributed_events: 17,
        processes: vec![kernel_process, go_process, quiet],
        exited: vec![ExitedReport {
            pid: 4545,
            comm: "short_lived".into(),
            exited_after_s: 2.5,
        }],
        missing_tracepoints: vec!["syscalls:sys_enter_timer_create".into()],
    }
}

#[test]
fn golden_report_json() {
    let json = super::json::render(&report());
    check("report_v1.json", &format!("{json}\n"));
}

#[test]
fn golden_report_json_reads_back_byte_identical() {
    let text = std::fs::read_to_string(golden("report_v1.json")).unwrap();
    let read = read(&text);
    assert_eq!(format!("{}\n", super::json::render(&read)), text);
    assert_eq!(read, report());
}

#[test]
fn golden_report_text() {
    check("report_v1.txt", &super::text::render(&report(), None));
    check(
        "wakeups_v1.txt",
        &super::text::render_wakeups(&report(), None),
    );
}

/// A recording from a newer timerwatch may hold values this build does not know: they are
/// read and written back as they were.
#[test]
fn unknown_values_read_back_as_they_were() {
    let text = std::fs::read_to_string(golden("report_v1.json")).unwrap();
    let newer = text
        .replacen("\"kind\":\"other\"", "\"kind\":\"some_future_kind\"", 1)
        .replacen("\"verdict\":\"draining\"", "\"verdict\":\"oscillating\"", 1)
        .replacen(
            "\"attribution\":\"signature\"",
            "\"attribution\":\"some_future_rule\"",
            1,
        )
        .replacen("\"source\":\"go\"", "\"source\":\"jvm\"", 1)
        .replacen(
            "\"verdict_reason\":\"filling\"",
            "\"verdict_reason\":\"some_future_reason\"",
            1,
        );
    for new in [
        "some_future_kind",
        "oscillating",
        "some_future_rule",
        "jvm",
        "some_future_reason",
    ] {
        assert!(newer.contains(new), "{new} not substituted");
    }
    let read = read(&newer);
    assert_eq!(format!("{}\n", super::json::render(&read)), newer);
}

/// The daemon's renderings of the same report: the OpenMetrics exposition after folding (two
/// processes kept, three callsites each, so the rest fold into `other` series), and the
/// verdict log's lines for a first sight of every callsite.
#[test]
fn golden_daemon_exposition_and_verdict_log() {
    use crate::daemon::{fold, metrics, snapshot::Shared, verdict_log::VerdictLog};
    use std::collections::HashMap;

    let report = report();
    let mut pods = HashMap::new();
    pods.insert(
        4343,
        crate::daemon::metadata::PodLabels {
            pod: "web-0".into(),
            namespace: "shop".into(),
            ..Default::default()
        },
    );
    let mut folder = fold::Fold::new(fold::Limits {
        processes: 2,
        callsites_per_process: 3,
    });
    let shared = Shared::default();
    {
        let mut s = shared.lock();
        s.series = folder.update(&report, &pods);
        s.lost_events = report.lost_events;
        s.unattributed_events = report.unattributed_events;
        s.processes = report.processes.len() as u64;
    }
    // The Go counters (binaries analysed, census walks and their CPU time, walks cut) are
    // process-wide: other tests move them.
    let text: String = metrics::render(&metrics::registry(shared))
        .lines()
        .map(|l| match l.rsplit_once(' ') {
            Some((sample, _)) if l.starts_with("timerwatch_go_") => format!("{sample} N\n"),
            _ => format!("{l}\n"),
        })
        .collect();
    check("metrics_v1.txt", &text);
    let lines = VerdictLog::default().changes(&report, &pods, 1_700_000_000.5);
    check("verdict_log_v1.jsonl", &(lines.join("\n") + "\n"));
}

/// The exports that name kinds and verdicts: folded stacks, pprof (its labels) and the
/// `--group-by` tables.
#[test]
fn golden_exports() {
    use crate::export::{folded, group, pprof};

    let report = report();
    check("folded_v1.txt", &folded::render(&report));
    let profile = pprof::build(&report, 1_700_000_000_000_000_000);
    check("pprof_v1.txt", &format!("{profile:#?}\n"));
    let mut tables = String::new();
    for by in [
        group::GroupBy::Callsite,
        group::GroupBy::Caller,
        group::GroupBy::Package,
        group::GroupBy::Binary,
    ] {
        tables += &group::render(&report, by, None, false);
    }
    check("groups_v1.txt", &tables);
}

/// `diff` of two recordings' reports (its own schema, `timerwatch.diff/v1`): one callsite grew,
/// one shrank, one appeared, one disappeared.
#[test]
fn golden_diff() {
    use crate::record::diff;

    let mut a = report();
    let mut b = report();
    b.processes[0].callsites[0].live += 10;
    b.processes[1].callsites[0].live = 0;
    b.processes[1].callsites.remove(1);
    a.processes[0].callsites.remove(1);
    let d = diff::diff(&a, &b);
    check("diff_v1.json", &(serde_json::to_string(&d).unwrap() + "\n"));
    check("diff_v1.txt", &diff::render(&d, true));
}
