//! Growth verdicts: the live count of every callsite and process, sampled once a second from the
//! reports themselves, judged by the trend test in [`crate::trend`].
//!
//! Working from reports rather than the table means every source (kernel timers, Go timers) gets
//! a verdict the same way, keyed by what the user sees: process, source, kind and callsite.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::{
    report::{CallsiteReport, Report},
    trend::{assess, Assessment, Params, Series, Verdict},
};

/// Samples older than this many missed observations are dropped with their series: a callsite
/// that left the report (its process exited) must not hold memory forever.
const FORGET_AFTER_S: f64 = 120.0;

struct Tracked {
    series: Series,
    last_seen_s: f64,
}

#[derive(Default)]
pub struct Verdicts {
    params: Params,
    callsites: HashMap<u64, Tracked>,
    processes: HashMap<u32, Tracked>,
}

/// A callsite's identity across reports (also the daemon's key for its counters).
pub(crate) fn callsite_key(pid: u32, c: &CallsiteReport) -> u64 {
    let mut h = DefaultHasher::new();
    (
        pid,
        c.source,
        c.kind,
        &c.caller,
        &c.frames,
        &c.timer_function,
    )
        .hash(&mut h);
    h.finish()
}

fn record<K: Hash + Eq>(map: &mut HashMap<K, Tracked>, key: K, window: usize, t: f64, v: f64) {
    let tracked = map.entry(key).or_insert_with(|| Tracked {
        series: Series::new(window),
        last_seen_s: t,
    });
    tracked.series.push(t, v);
    tracked.last_seen_s = t;
}

impl Verdicts {
    pub fn new(params: Params) -> Self {
        Self {
            params,
            ..Self::default()
        }
    }

    /// Record one sample per callsite and process of `report`, taken at `t_s` seconds.
    pub fn observe(&mut self, report: &Report, t_s: f64) {
        let window = self.params.window.max(1);
        for p in &report.processes {
            record(&mut self.processes, p.pid, window, t_s, p.live as f64);
            for c in &p.callsites {
                record(
                    &mut self.callsites,
                    callsite_key(p.pid, c),
                    window,
                    t_s,
                    c.live as f64,
                );
            }
        }
        let fresh = |t: &Tracked| t_s - t.last_seen_s <= FORGET_AFTER_S;
        self.callsites.retain(|_, t| fresh(t));
        self.processes.retain(|_, t| fresh(t));
    }

    fn judge(&self, t: Option<&Tracked>) -> Option<Assessment> {
        t.map(|t| assess(&t.series, &self.params, None))
    }

    /// Fill the verdict fields of `report` from the samples seen so far.
    pub fn annotate(&self, report: &mut Report) {
        for p in &mut report.processes {
            if let Some(a) = self.judge(self.processes.get(&p.pid)) {
                p.verdict = a.verdict.as_str();
                p.growth_per_s = trending(&a).then_some(round(a.growth_per_s));
                p.projected_live_1h = Some(a.projected_1h.round());
            }
            let pid = p.pid;
            for c in &mut p.callsites {
                let Some(a) = self.judge(self.callsites.get(&callsite_key(pid, c))) else {
                    continue;
                };
                c.verdict = a.verdict.as_str();
                c.growth_per_s = trending(&a).then_some(round(a.growth_per_s));
                c.confidence = (a.verdict != Verdict::Unknown).then_some(round(a.confidence));
                c.projected_live_1h = Some(a.projected_1h.round());
                c.plateau = a.plateau.map(f64::round);
            }
        }
    }

    /// Series currently held (bounded by the callsites and processes of the last two minutes).
    pub fn tracked(&self) -> usize {
        self.callsites.len() + self.processes.len()
    }
}

fn trending(a: &Assessment) -> bool {
    matches!(a.verdict, Verdict::Growing | Verdict::Draining)
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Whether any callsite of the report grows (for `snapshot --fail-on-growth`).
pub fn any_growing(report: &Report) -> bool {
    report
        .processes
        .iter()
        .flat_map(|p| &p.callsites)
        .any(|c| c.verdict == Verdict::Growing.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{callsite, process, report as report_of};

    fn report(pid: u32, leak: u64, pool: u64) -> Report {
        let callsites = vec![callsite("leak", leak), callsite("pool", pool)];
        report_of(vec![process(pid, "t", callsites)])
    }

    #[test]
    fn a_leak_grows_and_a_bounded_pool_does_not() {
        let mut v = Verdicts::default();
        let mut last = report(7, 0, 64);
        for t in 0..20u64 {
            last = report(7, 20 * t, 62 + (t * 7) % 5);
            v.observe(&last, t as f64);
        }
        v.annotate(&mut last);
        let by = |name: &str| {
            last.processes[0]
                .callsites
                .iter()
                .find(|c| c.caller.as_deref() == Some(name))
                .unwrap()
                .clone()
        };
        let (leak, pool) = (by("leak"), by("pool"));
        assert_eq!(leak.verdict, "growing");
        let g = leak.growth_per_s.unwrap();
        assert!((18.0..=22.0).contains(&g), "{g}");
        assert!(leak.confidence.unwrap() > 0.99);
        assert!(leak.projected_live_1h.unwrap() > 70_000.0);
        assert_ne!(pool.verdict, "growing");
        assert_eq!(pool.growth_per_s, None);
        assert_eq!(last.processes[0].verdict, "growing");
        assert!(any_growing(&last));
    }

    #[test]
    fn too_few_samples_stay_unknown_and_gone_callsites_are_forgotten() {
        let mut v = Verdicts::default();
        let mut r = report(7, 10, 64);
        v.observe(&r, 0.0);
        v.annotate(&mut r);
        assert!(r.processes[0]
            .callsites
            .iter()
            .all(|c| c.verdict == "unknown"));
        assert!(!any_growing(&r));
        assert_eq!(v.tracked(), 3);
        // Another process only, long after: the first one's series go.
        v.observe(&report(8, 0, 1), 1000.0);
        assert_eq!(v.tracked(), 3);
        assert!(v.processes.contains_key(&8) && !v.processes.contains_key(&7));
    }
}
