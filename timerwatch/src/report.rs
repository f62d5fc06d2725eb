//! The report: the public, versioned shape of what timerwatch found (`--json`, `/report`).
//! Field names are an interface (see README "JSON report"); add fields, never rename them.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

pub use crate::vocab::{Attribution, Kind, Source, Verdict, VerdictReason};
use crate::{histogram::Histogram, table::Table};

pub const SCHEMA: &str = "timerwatch.report/v1";

/// The schema of a report read back: [`SCHEMA`] itself, or another (a newer timerwatch's) kept
/// as read, for the reader to refuse by name.
fn deserialize_schema<'de, D: serde::Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    let s = String::deserialize(d)?;
    Ok(if s == SCHEMA {
        SCHEMA
    } else {
        crate::vocab::intern(&s)
    })
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    #[serde(deserialize_with = "deserialize_schema")]
    pub schema: &'static str,
    pub duration_s: f64,
    pub lost_events: u64,
    /// Events about timers whose start we never saw (armed before we attached, or lost).
    pub unattributed_events: u64,
    pub processes: Vec<ProcessReport>,
    /// Traced processes that exited during the window: their timers are gone with them.
    pub exited: Vec<ExitedReport>,
    /// Optional tracepoints this kernel lacks, and what is therefore not seen.
    pub missing_tracepoints: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ProcessReport {
    pub pid: u32,
    pub comm: String,
    pub exe: String,
    pub live: u64,
    pub pre_existing: PreExisting,
    /// The Go release of a traced Go binary ("go1.22.10"); null for other processes.
    pub go_version: Option<String>,
    /// Pending timers in the Go runtime's heaps at report time; null for non-Go processes.
    pub go_heap_timers: Option<u64>,
    /// Why the last walk of a Go process's memory was cut short: `time` or `bytes` (its
    /// budget spent), `torn` (the memory kept changing or was not a runtime's). With no
    /// `go_heap_timers` the process's census was left out; with them, only its goroutine walk
    /// was cut. Absent when the walk ran whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub go_walk_cut: Option<String>,
    /// Growth verdict of the process's total live count.
    pub verdict: Verdict,
    pub growth_per_s: Option<f64>,
    pub projected_live_1h: Option<f64>,
    /// All of the process's timer-caused wake-ups.
    pub wakeups: Option<WakeupReport>,
    pub callsites: Vec<CallsiteReport>,
}

/// Timers that existed before the probes attached: counted, without a callsite.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PreExisting {
    pub posix_timers: u64,
    /// Timers in a Go process's heaps that no probe attributed: created before attaching.
    pub go_timers: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CallsiteReport {
    pub source: Source,
    pub kind: Kind,
    pub timer_function: Option<String>,
    pub caller: Option<String>,
    pub frames: Vec<String>,
    /// How each of `frames` was named: `symtab`, `debuginfo`, `debuginfod`, `pclntab` or
    /// `none` (see `symbolize::Naming`); absent when the callsite has no frames.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub naming: Vec<String>,
    pub live: u64,
    pub created_total: u64,
    pub armed_total: u64,
    pub cancelled_total: u64,
    pub expired_total: u64,
    pub oldest_age_s: Option<f64>,
    /// `growing`, `stable`, `draining` or `unknown` (too few samples): see `verdict`.
    pub verdict: Verdict,
    /// Theil–Sen slope of the live count, timers/s, when `growing` or `draining`.
    pub growth_per_s: Option<f64>,
    /// How sure the trend test is (1 − p-value), unless `unknown`.
    pub confidence: Option<f64>,
    /// Live count expected in one hour at the current trend.
    pub projected_live_1h: Option<f64>,
    /// Where growth levels off, when the timers' lifetime is known: arrival rate × lifetime.
    pub plateau: Option<f64>,
    /// Wake-ups this callsite's timers caused; null when none were seen.
    pub wakeups: Option<WakeupReport>,
    /// How long its timers live, when every one of them expires by itself within a known time;
    /// null for timers that live until deleted (POSIX, interval) or on clocks not converted.
    #[serde(default)]
    pub lifetime: Option<LifetimeReport>,
    /// Why the verdict is what it is, where the live count alone would say otherwise:
    /// `filling` (`unknown`: the timers expire within `lifetime.max_s`, and the callsite has
    /// been watched for less than that, so its rise is the attach filling up), `at_plateau`
    /// (`stable`: it rose until its timers began to expire and stopped),
    /// `plateau_above_threshold` (`growing` while filling, towards a plateau above the
    /// threshold). Null otherwise.
    #[serde(default)]
    pub verdict_reason: Option<VerdictReason>,
    /// Go callsites: how the callsite got its name. `creation_stack`: uprobes saw the stack
    /// that created the timer (probes mode); census mode, from the runtime's memory alone:
    /// `callback` (an `AfterFunc`'s own function), `waiter` (the goroutine blocked on the
    /// timer's channel or sleeping on it), `signature` (only the timer's kind and period).
    /// Absent for kernel callsites.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribution: Option<Attribution>,
    /// Tickers: the period, seconds, when all the callsite's timers share one. Absent
    /// otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_s: Option<f64>,
    /// Go census callsites of one-shot timers: the longest time any of them had left to run
    /// when the census first saw it, seconds (close to the duration they were armed for).
    /// Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
}

/// The lifetime of a callsite's timers (see README "Growth verdicts").
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LifetimeReport {
    /// Expected lifetime of one timer, seconds: armed durations, shortened by cancels and
    /// lengthened by re-arms.
    pub mean_s: f64,
    /// Longest armed duration (99th percentile), seconds: once the callsite has been watched
    /// this long, its live count no longer includes the attach's filling.
    pub max_s: f64,
    /// Timers that became live during the trace (arrivals).
    pub arrivals_total: u64,
    /// Arrivals per second over the last minute of samples; null before two samples.
    pub arrivals_per_s: Option<f64>,
    /// Seconds until the live count reaches `plateau` (0 once there); null with `plateau`.
    pub plateau_in_s: Option<f64>,
}

/// Timer-caused wake-ups: how many, how late the timers fired (slack), and how long the woken
/// task then waited for a CPU (latency).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WakeupReport {
    pub count: u64,
    pub per_s: f64,
    pub slack_p50_s: Option<f64>,
    pub slack_p99_s: Option<f64>,
    pub latency_p50_s: Option<f64>,
    pub latency_p99_s: Option<f64>,
    pub latency_max_s: Option<f64>,
    /// Wake-ups with latency at most each of [`LATENCY_BOUNDS_S`] (cumulative, to the
    /// histogram's resolution), so consumers can build real histograms (the daemon's
    /// Prometheus one); `count` is the +Inf bucket.
    pub latency_buckets: [u64; LATENCY_BOUNDS_S.len()],
    pub latency_sum_s: f64,
}

/// Upper bounds of `latency_buckets`, in seconds: 1 µs to 1 s in 1–2.5–5 steps, the range from
/// an idle CPU's wake-up to a starved one's.
pub const LATENCY_BOUNDS_S: [f64; 19] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2,
    5e-2, 0.1, 0.25, 0.5, 1.0,
];

fn ns_to_s(ns: u64) -> f64 {
    // Latencies are µs-scale: keep full resolution, unlike the ms-rounded report durations.
    ns as f64 / 1e9
}

fn wakeup_report(latency: &Histogram, slack: &Histogram, duration_s: f64) -> Option<WakeupReport> {
    if latency.count() == 0 {
        return None;
    }
    Some(WakeupReport {
        count: latency.count(),
        per_s: if duration_s > 0.0 {
            (latency.count() as f64 / duration_s * 10.0).round() / 10.0
        } else {
            0.0
        },
        slack_p50_s: slack.quantile(0.5).map(ns_to_s),
        slack_p99_s: slack.quantile(0.99).map(ns_to_s),
        latency_p50_s: latency.quantile(0.5).map(ns_to_s),
        latency_p99_s: latency.quantile(0.99).map(ns_to_s),
        latency_max_s: latency.max().map(ns_to_s),
        latency_buckets: LATENCY_BOUNDS_S.map(|b| latency.count_at_most((b * 1e9).round() as u64)),
        latency_sum_s: ns_to_s(latency.sum()),
    })
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ExitedReport {
    pub pid: u32,
    pub comm: String,
    pub exited_after_s: f64,
}

pub(crate) fn round_ms(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

fn secs(ns: u64) -> f64 {
    (ns as f64 / 1e9 * 1000.0).round() / 1000.0
}

/// Inputs that do not live in the table.
pub struct Context<'a> {
    pub start_ns: u64,
    pub now_ns: u64,
    pub lost_events: u64,
    pub pre_existing: &'a HashMap<u32, PreExisting>,
    pub missing_tracepoints: &'a [String],
}

/// What sets a process row's growth verdicts (`verdict::Verdicts`): a trait, so that the
/// report, which the trend test reads, does not depend on it in turn.
pub trait Judge {
    fn judge(&self, p: &mut ProcessReport);
}

/// What the kernel source yields at a report: its rows (one per process it saw, callsites
/// unsorted) and the counts only it keeps.
pub struct KernelRows {
    pub processes: Vec<ProcessReport>,
    pub unattributed_events: u64,
    pub exited: Vec<ExitedReport>,
}

/// A non-kernel source's row for one process (today the Go runtime's): its callsites and the
/// per-process facts only it knows, for [`assemble`] to put beside the kernel's.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceRow {
    pub pid: u32,
    pub go_version: Option<String>,
    /// Pending timers in the Go runtime's heaps; None before a walk succeeded.
    pub go_heap_timers: Option<u64>,
    /// Heap timers no probe saw created; None where the source cannot tell (census mode).
    pub pre_existing_go_timers: Option<u64>,
    /// Why the last walk was cut short (see [`ProcessReport::go_walk_cut`]).
    pub go_walk_cut: Option<String>,
    pub callsites: Vec<CallsiteReport>,
}

impl SourceRow {
    /// A Go process of release `version` with nothing walked yet.
    pub fn go(pid: u32, version: String) -> SourceRow {
        SourceRow {
            pid,
            go_version: Some(version),
            go_heap_timers: None,
            pre_existing_go_timers: None,
            go_walk_cut: None,
            callsites: Vec::new(),
        }
    }
}

/// The kernel source's rows, from the table.
pub fn kernel_rows(table: &Table, ctx: &Context<'_>) -> KernelRows {
    let duration_s = secs(ctx.now_ns.saturating_sub(ctx.start_ns));
    let mut views = table.callsites_by_process();
    let processes: Vec<ProcessReport> = table
        .processes()
        .map(|p| {
            let views = views.remove(&p.tgid).unwrap_or_default();
            let (mut latency, mut slack) = (Histogram::default(), Histogram::default());
            for v in &views {
                latency.merge(&v.callsite.wakeup_latency);
                slack.merge(&v.callsite.slack);
            }
            let callsites: Vec<CallsiteReport> = views
                .iter()
                .map(|v| {
                    let c = v.callsite;
                    CallsiteReport {
                        timer_function: c.timer_function.clone(),
                        caller: c.caller.clone(),
                        frames: c.frames.clone(),
                        naming: c.naming.iter().map(|n| n.as_str().to_string()).collect(),
                        live: c.live,
                        created_total: c.created_total,
                        armed_total: c.armed_total,
                        cancelled_total: c.cancelled_total,
                        expired_total: c.expired_total,
                        // Ages are within the trace: a record from the attach itself may
                        // predate the window's start by a few ms.
                        oldest_age_s: v
                            .oldest_live_since_ns
                            .map(|s| secs(ctx.now_ns.saturating_sub(s.max(ctx.start_ns)))),
                        wakeups: wakeup_report(&c.wakeup_latency, &c.slack, duration_s),
                        lifetime: c.lifetime_s().map(|(mean, max)| LifetimeReport {
                            mean_s: round_ms(mean),
                            max_s: round_ms(max),
                            arrivals_total: c.lives_total,
                            arrivals_per_s: None,
                            plateau_in_s: None,
                        }),
                        ..CallsiteReport::empty(Source::Kernel, c.kind.into())
                    }
                })
                .collect();
            ProcessReport {
                pid: p.tgid,
                comm: p.comm.clone(),
                exe: p.exe.clone().unwrap_or_default(),
                live: callsites.iter().map(|c| c.live).sum(),
                pre_existing: ctx.pre_existing.get(&p.tgid).cloned().unwrap_or_default(),
                go_version: None,
                go_heap_timers: None,
                go_walk_cut: None,
                verdict: Verdict::Unknown,
                growth_per_s: None,
                projected_live_1h: None,
                wakeups: wakeup_report(&latency, &slack, duration_s),
                callsites,
            }
        })
        .collect();
    KernelRows {
        processes,
        unattributed_events: table.unmatched,
        exited: table
            .exited()
            .iter()
            .map(|e| ExitedReport {
                pid: e.tgid,
                comm: e.comm.clone(),
                exited_after_s: secs(e.at_ns.saturating_sub(ctx.start_ns)),
            })
            .collect(),
    }
}

/// The report: the only place sources' rows and verdicts are combined, so every other stage
/// only produces. A process either source saw gets one row (a Go process the kernel did not
/// report is named from /proc); callsites and processes are ordered once here, by live count.
/// `verdicts` None leaves every verdict `unknown` (the rows the trend test itself samples).
pub fn assemble(
    ctx: &Context<'_>,
    kernel: KernelRows,
    other: Vec<SourceRow>,
    verdicts: Option<&dyn Judge>,
) -> Report {
    let mut processes = kernel.processes;
    if !other.is_empty() {
        let at: HashMap<u32, usize> = processes
            .iter()
            .enumerate()
            .map(|(i, p)| (p.pid, i))
            .collect();
        for row in other {
            match at.get(&row.pid) {
                Some(&i) => add(&mut processes[i], row),
                None => {
                    let mut p = ProcessReport::empty(row.pid);
                    add(&mut p, row);
                    processes.push(p);
                }
            }
        }
    }
    for p in &mut processes {
        sort_callsites(&mut p.callsites);
        if let Some(v) = verdicts {
            v.judge(p);
        }
    }
    processes.sort_by(|a, b| b.live.cmp(&a.live).then(a.pid.cmp(&b.pid)));
    Report {
        schema: SCHEMA,
        duration_s: secs(ctx.now_ns.saturating_sub(ctx.start_ns)),
        lost_events: ctx.lost_events,
        unattributed_events: kernel.unattributed_events,
        processes,
        exited: kernel.exited,
        missing_tracepoints: ctx.missing_tracepoints.to_vec(),
    }
}

/// `report` with `verdicts` applied: for a report assembled without them before the trend
/// test took its sample.
pub fn judged(mut report: Report, verdicts: &dyn Judge) -> Report {
    for p in &mut report.processes {
        verdicts.judge(p);
    }
    report
}

/// A process's row as it exits: its kernel row (if the kernel saw it) judged, then the other
/// sources' callsites still pending at exit, which the trend test never sampled and so are
/// not judged.
pub fn assemble_exit(
    pid: u32,
    kernel: Option<ProcessReport>,
    other: Option<SourceRow>,
    verdicts: &dyn Judge,
) -> ProcessReport {
    let mut p = match kernel {
        Some(mut p) => {
            sort_callsites(&mut p.callsites);
            verdicts.judge(&mut p);
            p
        }
        None => ProcessReport::empty(pid),
    };
    if let Some(row) = other {
        add(&mut p, row);
        sort_callsites(&mut p.callsites);
    }
    p
}

/// `row`'s callsites and facts into `p`, the same process's row so far.
fn add(p: &mut ProcessReport, row: SourceRow) {
    if row.go_version.is_some() {
        p.go_version = row.go_version;
    }
    if row.go_heap_timers.is_some() {
        p.go_heap_timers = row.go_heap_timers;
    }
    if let Some(n) = row.pre_existing_go_timers {
        p.pre_existing.go_timers = n;
    }
    if row.go_walk_cut.is_some() {
        p.go_walk_cut = row.go_walk_cut;
    }
    p.live += row.callsites.iter().map(|c| c.live).sum::<u64>();
    p.callsites.extend(row.callsites);
}

/// Most live first, then most armed; stable, so equal callsites keep their source's order
/// (the kernel's before the others').
fn sort_callsites(callsites: &mut [CallsiteReport]) {
    callsites.sort_by(|a, b| b.live.cmp(&a.live).then(b.armed_total.cmp(&a.armed_total)));
}

/// A callsite's identity across reports: what the user sees of it (process, source, kind,
/// caller, frames, timer function), hashed. Verdicts follow a callsite by it, and the daemon
/// its counters, so the two never disagree about which callsite is which.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CallsiteId(u64);

impl CallsiteId {
    /// The identity of a callsite named so, in process `pid`: what [`CallsiteReport::id`]
    /// gives its row, for sources that sample without building one (`crate::sample`).
    pub fn of(
        pid: u32,
        source: Source,
        kind: Kind,
        caller: Option<&str>,
        frames: &[String],
        timer_function: Option<&str>,
    ) -> CallsiteId {
        let mut h = std::hash::DefaultHasher::new();
        (pid, source, kind, caller, frames, timer_function).hash(&mut h);
        CallsiteId(h.finish())
    }
}

impl CallsiteReport {
    /// This callsite's identity, in process `pid`.
    pub fn id(&self, pid: u32) -> CallsiteId {
        CallsiteId::of(
            pid,
            self.source,
            self.kind,
            self.caller.as_deref(),
            &self.frames,
            self.timer_function.as_deref(),
        )
    }

    /// A callsite of `source` and `kind` with nothing counted, named or judged yet: each
    /// source fills in what it knows (`CallsiteReport { live, ..CallsiteReport::empty(…) }`),
    /// so a new field is defaulted here once.
    pub fn empty(source: Source, kind: Kind) -> CallsiteReport {
        CallsiteReport {
            source,
            kind,
            timer_function: None,
            caller: None,
            frames: Vec::new(),
            naming: Vec::new(),
            live: 0,
            created_total: 0,
            armed_total: 0,
            cancelled_total: 0,
            expired_total: 0,
            oldest_age_s: None,
            verdict: Verdict::Unknown,
            growth_per_s: None,
            confidence: None,
            projected_live_1h: None,
            plateau: None,
            wakeups: None,
            lifetime: None,
            verdict_reason: None,
            attribution: None,
            period_s: None,
            duration_s: None,
        }
    }
}

impl ProcessReport {
    /// A process with no callsite yet (e.g. a Go process the kernel side has not reported),
    /// named from /proc.
    pub fn empty(pid: u32) -> ProcessReport {
        ProcessReport::named(
            pid,
            crate::procfs::comm(pid).unwrap_or_default(),
            crate::procfs::exe(pid).unwrap_or_default(),
        )
    }

    /// A process with no callsite yet, named by the caller.
    pub fn named(pid: u32, comm: String, exe: String) -> ProcessReport {
        ProcessReport {
            pid,
            comm,
            exe,
            live: 0,
            pre_existing: PreExisting::default(),
            go_version: None,
            go_heap_timers: None,
            go_walk_cut: None,
            verdict: Verdict::Unknown,
            growth_per_s: None,
            projected_live_1h: None,
            wakeups: None,
            callsites: Vec::new(),
        }
    }
}

/// Report values for tests: every optional field empty, so a test states only what it checks
/// and a new field is added here once.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// A kernel timerfd callsite named `caller` with `live` timers.
    pub fn callsite(caller: &str, live: u64) -> CallsiteReport {
        CallsiteReport {
            timer_function: Some("timerfd_tmrproc".into()),
            caller: Some(caller.into()),
            frames: vec![caller.into()],
            live,
            created_total: live,
            armed_total: live,
            ..CallsiteReport::empty(Source::Kernel, Kind::Timerfd)
        }
    }

    pub fn process(pid: u32, comm: &str, callsites: Vec<CallsiteReport>) -> ProcessReport {
        ProcessReport {
            live: callsites.iter().map(|c| c.live).sum(),
            callsites,
            ..ProcessReport::named(pid, comm.into(), String::new())
        }
    }

    pub fn report(processes: Vec<ProcessReport>) -> Report {
        Report {
            schema: SCHEMA,
            duration_s: 1.0,
            lost_events: 0,
            unattributed_events: 0,
            processes,
            exited: vec![],
            missing_tracepoints: vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{callsite, process};
    use super::*;

    struct Growing;
    impl Judge for Growing {
        fn judge(&self, p: &mut ProcessReport) {
            p.verdict = Verdict::Growing;
            for c in &mut p.callsites {
                c.verdict = Verdict::Growing;
            }
        }
    }

    fn go(pid: u32, callsites: Vec<CallsiteReport>) -> SourceRow {
        SourceRow {
            go_heap_timers: Some(9),
            pre_existing_go_timers: Some(2),
            callsites,
            ..SourceRow::go(pid, "go1.22.10".into())
        }
    }

    fn go_callsite(caller: &str, live: u64) -> CallsiteReport {
        CallsiteReport {
            caller: Some(caller.into()),
            live,
            armed_total: live,
            ..CallsiteReport::empty(Source::Go, Kind::GoTimer)
        }
    }

    fn ctx() -> Context<'static> {
        Context {
            start_ns: 0,
            now_ns: 1_000_000_000,
            lost_events: 0,
            pre_existing: Box::leak(Box::default()),
            missing_tracepoints: &[],
        }
    }

    fn kernel(processes: Vec<ProcessReport>) -> KernelRows {
        KernelRows {
            processes,
            unattributed_events: 0,
            exited: vec![],
        }
    }

    #[test]
    fn sources_share_one_row_per_process_ordered_by_live_with_ties_kernel_first() {
        let k = kernel(vec![
            process(1, "small", vec![callsite("k1", 1)]),
            process(2, "mixed", vec![callsite("a", 3), callsite("b", 5)]),
        ]);
        let r = assemble(
            &ctx(),
            k,
            vec![go(2, vec![go_callsite("g3", 3), go_callsite("g9", 9)])],
            Some(&Growing),
        );
        let pids: Vec<u32> = r.processes.iter().map(|p| p.pid).collect();
        assert_eq!(pids, [2, 1]);
        let p = &r.processes[0];
        assert_eq!(p.live, 20);
        assert_eq!(p.go_version.as_deref(), Some("go1.22.10"));
        assert_eq!((p.go_heap_timers, p.pre_existing.go_timers), (Some(9), 2));
        let order: Vec<_> = p
            .callsites
            .iter()
            .map(|c| c.caller.clone().unwrap())
            .collect();
        assert_eq!(order, ["g9", "b", "a", "g3"]);
        assert!(p.callsites.iter().all(|c| c.verdict == Verdict::Growing));
        assert_eq!(r.processes[1].go_version, None);
    }

    #[test]
    fn without_verdicts_everything_stays_unknown_until_judged() {
        let k = kernel(vec![process(1, "p", vec![callsite("k", 1)])]);
        let r = assemble(&ctx(), k, vec![], None);
        assert_eq!(r.processes[0].verdict, Verdict::Unknown);
        assert_eq!(r.processes[0].callsites[0].verdict, Verdict::Unknown);
        let r = judged(r, &Growing);
        assert_eq!(r.processes[0].callsites[0].verdict, Verdict::Growing);
    }

    #[test]
    fn at_exit_only_the_kernel_row_is_judged_and_pending_go_timers_are_added() {
        let k = process(4, "p", vec![callsite("k", 1)]);
        let p = assemble_exit(4, Some(k), Some(go(4, vec![go_callsite("g", 2)])), &Growing);
        assert_eq!(p.live, 3);
        assert_eq!(p.verdict, Verdict::Growing);
        let v: Vec<_> = p.callsites.iter().map(|c| (c.live, c.verdict)).collect();
        assert_eq!(v, [(2, Verdict::Unknown), (1, Verdict::Growing)]);
    }
}
