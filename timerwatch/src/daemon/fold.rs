//! From reports to a bounded set of series whose counters never go down.
//!
//! Cardinality: the `max_processes` processes with the most live timers keep their own series;
//! the others fold into `pid="other"`. Within a kept process, the `max_callsites` callsites
//! (by `source`, `kind` and `caller`) with the most live timers keep theirs; the rest fold into
//! `caller="other"` per source and kind. So a family holds at most
//! `max_processes × (max_callsites + sources × kinds) + sources × kinds` series.
//!
//! Monotonic counters although membership changes: each report's increase of a callsite's
//! cumulative totals is added to the series the callsite belongs to *now*, and a series keeps
//! what it accumulated while its process lives (a callsite that drops out of the top and comes
//! back continues where it was). A callsite whose totals went down is a new one (its PID was
//! reused): all of its totals count as increase.

use std::collections::{HashMap, HashSet};

use super::{
    latency::{Cumulative, LatencyHistogram},
    metadata::PodLabels,
};
use crate::report::{CallsiteId, CallsiteReport, Kind, ProcessReport, Report, Source, Verdict};

/// The label value of folded processes and callsites.
pub const OTHER: &str = "other";
/// The `caller` of callsites without a user stack.
pub const NO_CALLER: &str = "unknown";

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub processes: usize,
    pub callsites_per_process: usize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub created: u64,
    pub armed: u64,
    pub cancelled: u64,
    pub expired: u64,
}

impl Totals {
    fn of(c: &CallsiteReport) -> Self {
        Self {
            created: c.created_total,
            armed: c.armed_total,
            cancelled: c.cancelled_total,
            expired: c.expired_total,
        }
    }

    fn add(&mut self, o: &Totals) {
        self.created += o.created;
        self.armed += o.armed;
        self.cancelled += o.cancelled;
        self.expired += o.expired;
    }

    fn covers(&self, o: &Totals) -> bool {
        self.created >= o.created
            && self.armed >= o.armed
            && self.cancelled >= o.cancelled
            && self.expired >= o.expired
    }

    fn minus(&self, o: &Totals) -> Totals {
        Totals {
            created: self.created - o.created,
            armed: self.armed - o.armed,
            cancelled: self.cancelled - o.cancelled,
            expired: self.expired - o.expired,
        }
    }
}

/// One exported series.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// None for the folded processes.
    pub pid: Option<u32>,
    pub comm: String,
    pub pod: PodLabels,
    pub source: Source,
    pub kind: Kind,
    pub caller: String,
    pub live: u64,
    /// Sum over the series' callsites (0 for those without a trend).
    pub growth_per_s: f64,
    /// The most alarming verdict among the series' callsites.
    pub verdict: Verdict,
    /// Sum of the plateaus of its callsites that have one (timers that expire by themselves);
    /// None when none has.
    pub plateau: Option<f64>,
    pub totals: Totals,
    pub latency: LatencyHistogram,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Dest {
    pid: Option<u32>,
    source: Source,
    kind: Kind,
    /// None for the folded callsites.
    caller: Option<String>,
}

#[derive(Default)]
struct Acc {
    totals: Totals,
    latency: LatencyHistogram,
}

#[derive(Clone, Copy, Default)]
struct Seen {
    totals: Totals,
    latency: Cumulative,
}

fn caller_label(c: &CallsiteReport) -> &str {
    c.caller.as_deref().unwrap_or(NO_CALLER)
}

fn latency(c: &CallsiteReport) -> Cumulative {
    let Some(w) = c.wakeups.as_ref() else {
        return Cumulative::default();
    };
    Cumulative {
        at_most: w.latency_buckets,
        count: w.count,
        sum_s: w.latency_sum_s,
    }
}

/// This report's callsites sharing one identity, summed.
struct Pending {
    dest: Dest,
    seen: Seen,
}

pub struct Fold {
    limits: Limits,
    seen: HashMap<CallsiteId, Seen>,
    acc: HashMap<Dest, Acc>,
    /// Last report's kept processes and named callsites: ties keep their place, so equal counts
    /// do not make series flap.
    kept: HashSet<u32>,
    named: HashSet<Dest>,
}

impl Fold {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            seen: HashMap::new(),
            acc: HashMap::new(),
            kept: HashSet::new(),
            named: HashSet::new(),
        }
    }

    /// The series for `report`; `pods` has the labels of each of its processes.
    pub fn update(&mut self, report: &Report, pods: &HashMap<u32, PodLabels>) -> Vec<Series> {
        let kept = self.choose_processes(report);
        let mut named = HashSet::new();
        let mut pending: HashMap<CallsiteId, Pending> = HashMap::new();
        let mut gauges: HashMap<Dest, Series> = HashMap::new();
        for p in &report.processes {
            let keep = kept.contains(&p.pid);
            let top = if keep {
                self.choose_callsites(p)
            } else {
                HashSet::new()
            };
            for c in &p.callsites {
                let caller = caller_label(c);
                let dest = Dest {
                    pid: keep.then_some(p.pid),
                    source: c.source,
                    kind: c.kind,
                    caller: (keep && top.contains(&(c.source, c.kind, caller)))
                        .then(|| caller.to_string()),
                };
                if dest.caller.is_some() {
                    named.insert(dest.clone());
                }
                self.gauge(&mut gauges, &dest, p, pods, c);
                let entry = pending.entry(c.id(p.pid)).or_insert(Pending {
                    dest,
                    seen: Seen::default(),
                });
                entry.seen.totals.add(&Totals::of(c));
                entry.seen.latency.add(&latency(c));
            }
        }
        self.accumulate(pending);
        let live_pids: HashSet<u32> = report.processes.iter().map(|p| p.pid).collect();
        self.acc
            .retain(|d, _| d.pid.is_none_or(|pid| live_pids.contains(&pid)));
        self.kept = kept;
        self.named = named;
        let mut series: Vec<Series> = gauges
            .into_iter()
            .map(|(dest, mut s)| {
                if let Some(acc) = self.acc.get(&dest) {
                    s.totals = acc.totals;
                    s.latency = acc.latency.clone();
                }
                s
            })
            .collect();
        series.sort_by(|a, b| {
            (a.pid.is_none(), a.pid, a.source, a.kind, &a.caller).cmp(&(
                b.pid.is_none(),
                b.pid,
                b.source,
                b.kind,
                &b.caller,
            ))
        });
        series
    }

    fn choose_processes(&self, report: &Report) -> HashSet<u32> {
        let mut order: Vec<&ProcessReport> = report.processes.iter().collect();
        order.sort_by_key(|p| {
            (
                std::cmp::Reverse(p.live),
                !self.kept.contains(&p.pid),
                p.pid,
            )
        });
        order
            .iter()
            .take(self.limits.processes)
            .map(|p| p.pid)
            .collect()
    }

    fn choose_callsites<'a>(&self, p: &'a ProcessReport) -> HashSet<(Source, Kind, &'a str)> {
        let mut groups: HashMap<(Source, Kind, &'a str), (u64, u64)> = HashMap::new();
        for c in &p.callsites {
            let g = groups
                .entry((c.source, c.kind, caller_label(c)))
                .or_default();
            g.0 += c.live;
            g.1 += c.armed_total;
        }
        let was_named = |k: &(Source, Kind, &str)| {
            self.named.contains(&Dest {
                pid: Some(p.pid),
                source: k.0,
                kind: k.1,
                caller: Some(k.2.to_string()),
            })
        };
        let mut order: Vec<_> = groups.into_iter().collect();
        order.sort_by(|(ka, (la, aa)), (kb, (lb, ab))| {
            lb.cmp(la)
                .then(was_named(kb).cmp(&was_named(ka)))
                .then(ab.cmp(aa))
                .then(ka.cmp(kb))
        });
        order
            .into_iter()
            .take(self.limits.callsites_per_process)
            .map(|(k, _)| k)
            .collect()
    }

    fn gauge(
        &self,
        gauges: &mut HashMap<Dest, Series>,
        dest: &Dest,
        p: &ProcessReport,
        pods: &HashMap<u32, PodLabels>,
        c: &CallsiteReport,
    ) {
        let s = gauges.entry(dest.clone()).or_insert_with(|| {
            let (comm, pod) = match dest.pid {
                Some(pid) => (p.comm.clone(), pods.get(&pid).cloned().unwrap_or_default()),
                None => (OTHER.to_string(), PodLabels::default()),
            };
            Series {
                pid: dest.pid,
                comm,
                pod,
                source: dest.source,
                kind: dest.kind,
                caller: dest.caller.clone().unwrap_or_else(|| OTHER.to_string()),
                live: 0,
                growth_per_s: 0.0,
                verdict: Verdict::Unknown,
                plateau: None,
                totals: Totals::default(),
                latency: LatencyHistogram::default(),
            }
        });
        s.live += c.live;
        s.growth_per_s += c.growth_per_s.unwrap_or(0.0);
        if let Some(p) = c.plateau {
            s.plateau = Some(s.plateau.unwrap_or(0.0) + p);
        }
        if c.verdict.alarm() > s.verdict.alarm() {
            s.verdict = c.verdict;
        }
    }

    fn accumulate(&mut self, pending: HashMap<CallsiteId, Pending>) {
        let mut seen = HashMap::with_capacity(pending.len());
        for (id, p) in pending {
            let before = self.seen.get(&id).copied().unwrap_or_default();
            let reused = !p.seen.totals.covers(&before.totals)
                || p.seen.latency.count < before.latency.count;
            let base = if reused { Seen::default() } else { before };
            let acc = self.acc.entry(p.dest).or_default();
            acc.totals.add(&p.seen.totals.minus(&base.totals));
            acc.latency.add_increase(&p.seen.latency, &base.latency);
            seen.insert(id, p.seen);
        }
        self.seen = seen;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{fixtures, WakeupReport};

    fn cs(caller: &str, live: u64, created: u64) -> CallsiteReport {
        CallsiteReport {
            created_total: created,
            armed_total: created,
            verdict: Verdict::Stable,
            ..fixtures::callsite(caller, live)
        }
    }

    fn process(pid: u32, callsites: Vec<CallsiteReport>) -> ProcessReport {
        fixtures::process(pid, &format!("p{pid}"), callsites)
    }

    use crate::report::fixtures::report;

    fn find<'a>(s: &'a [Series], pid: Option<u32>, caller: &str) -> &'a Series {
        s.iter()
            .find(|x| x.pid == pid && x.caller == caller)
            .unwrap_or_else(|| panic!("no series {pid:?}/{caller} in {s:#?}"))
    }

    fn limits(processes: usize, callsites_per_process: usize) -> Limits {
        Limits {
            processes,
            callsites_per_process,
        }
    }

    #[test]
    fn top_callsites_keep_names_and_the_rest_fold() {
        let mut f = Fold::new(limits(10, 2));
        let r = report(vec![process(
            7,
            vec![
                cs("a", 50, 50),
                cs("b", 40, 40),
                cs("c", 1, 9),
                cs("d", 2, 3),
            ],
        )]);
        let s = f.update(&r, &HashMap::new());
        assert_eq!(s.len(), 3);
        assert_eq!(find(&s, Some(7), "a").live, 50);
        let other = find(&s, Some(7), OTHER);
        assert_eq!((other.live, other.totals.created), (3, 12));
    }

    #[test]
    fn counters_stay_monotonic_when_membership_changes() {
        let mut f = Fold::new(limits(10, 1));
        let pods = HashMap::new();
        // "b" starts folded, then overtakes "a".
        let s1 = f.update(
            &report(vec![process(7, vec![cs("a", 10, 100), cs("b", 5, 50)])]),
            &pods,
        );
        assert_eq!(find(&s1, Some(7), "a").totals.created, 100);
        assert_eq!(find(&s1, Some(7), OTHER).totals.created, 50);
        let s2 = f.update(
            &report(vec![process(7, vec![cs("a", 10, 110), cs("b", 20, 70)])]),
            &pods,
        );
        // "b"'s 20 new creations count for it; "a"'s 10 for the fold it joined.
        assert_eq!(find(&s2, Some(7), "b").totals.created, 20);
        assert_eq!(find(&s2, Some(7), OTHER).totals.created, 60);
        let s3 = f.update(
            &report(vec![process(7, vec![cs("a", 30, 120), cs("b", 20, 75)])]),
            &pods,
        );
        // "a" is back on top and continues from its 100.
        assert_eq!(find(&s3, Some(7), "a").totals.created, 110);
        assert_eq!(find(&s3, Some(7), OTHER).totals.created, 65);
    }

    #[test]
    fn processes_beyond_the_limit_fold_and_exited_ones_are_forgotten() {
        let mut f = Fold::new(limits(1, 10));
        let pods = HashMap::from([(
            8,
            PodLabels {
                pod: "web-0".into(),
                ..PodLabels::default()
            },
        )]);
        let s = f.update(
            &report(vec![
                process(7, vec![cs("a", 1, 1)]),
                process(8, vec![cs("b", 9, 9)]),
            ]),
            &pods,
        );
        assert_eq!(find(&s, Some(8), "b").pod.pod, "web-0");
        let folded = find(&s, None, OTHER);
        assert_eq!((folded.comm.as_str(), folded.live), (OTHER, 1));
        f.update(&report(vec![]), &pods);
        assert!(f.acc.keys().all(|d| d.pid.is_none()));
        assert!(f.seen.is_empty());
    }

    #[test]
    fn a_reused_pid_counts_from_zero_and_verdicts_take_the_worst() {
        let mut f = Fold::new(limits(10, 1));
        let pods = HashMap::new();
        f.update(&report(vec![process(7, vec![cs("a", 10, 100)])]), &pods);
        let mut grow = cs("z", 1, 5);
        grow.verdict = Verdict::Growing;
        grow.growth_per_s = Some(2.5);
        let s = f.update(&report(vec![process(7, vec![cs("a", 10, 3), grow])]), &pods);
        assert_eq!(find(&s, Some(7), "a").totals.created, 103);
        let other = find(&s, Some(7), OTHER);
        assert_eq!((other.verdict, other.growth_per_s), (Verdict::Growing, 2.5));
    }

    #[test]
    fn wakeups_feed_the_latency_histogram_by_increase() {
        let mut f = Fold::new(limits(10, 10));
        // `fast` wake-ups within 10 µs (bound 3), the rest of `count` above 1 s.
        let with = |count: u64, fast: u64| {
            let mut c = cs("a", 1, 1);
            let mut buckets = [0; 19];
            for b in &mut buckets[3..] {
                *b = fast;
            }
            c.wakeups = Some(WakeupReport {
                count,
                per_s: 0.0,
                slack_p50_s: None,
                slack_p99_s: None,
                latency_p50_s: Some(10e-6),
                latency_p99_s: Some(1e-3),
                latency_max_s: Some(2e-3),
                latency_buckets: buckets,
                latency_sum_s: count as f64 * 1e-3,
            });
            report(vec![process(7, vec![c])])
        };
        f.update(&with(100, 90), &HashMap::new());
        let s = f.update(&with(300, 250), &HashMap::new());
        let h = &find(&s, Some(7), "a").latency;
        assert_eq!(h.count(), 300);
        let b = h.buckets();
        assert_eq!((b[3], b[19]), ((1e-5, 250), (f64::INFINITY, 50)));
        assert!((h.sum_s() - 0.3).abs() < 1e-9);
    }
}
