//! Growth verdicts: the live count of every callsite and process, sampled once a second as the
//! report would show it (`crate::sample`), judged by the trend test in [`crate::trend`].
//!
//! Working from the report's rows rather than the table means every source (kernel timers, Go
//! timers) gets a verdict the same way, keyed by what the user sees: process, source, kind and
//! callsite (`report::CallsiteId`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::Hash;

use crate::{
    report::{self, CallsiteId, ProcessReport, Report, VerdictReason},
    sample::{self, ProcessSample},
    trend::{assess_after, Assessment, Params, Series, Verdict},
};

/// Samples older than this many missed observations are dropped with their series: a callsite
/// that left the report (its process exited) must not hold memory forever.
const FORGET_AFTER_S: f64 = 120.0;

/// Default of `plateau_threshold`: a population heading for 10,000 live timers is worth
/// reporting even though it will stop by itself (`time.After(30 s)` at 2,000/s heads for
/// 60,000), while TIME_WAIT sockets of a server closing 8 connections a second (480) are not.
pub const DEFAULT_PLATEAU_THRESHOLD: f64 = 10_000.0;

/// How long the timers of a callsite live (see [`crate::table::Callsite::lifetime_s`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Life {
    /// Expected lifetime of one timer, seconds.
    pub mean_s: f64,
    /// The longest armed duration, seconds: after this long, nothing armed before the callsite
    /// was first seen is still live.
    pub max_s: f64,
}

/// A verdict and what lifetimes add to it.
#[derive(Clone, Debug, PartialEq)]
pub struct Judged {
    pub assessment: Assessment,
    /// See `CallsiteReport::verdict_reason`.
    pub reason: Option<VerdictReason>,
    pub arrivals_per_s: Option<f64>,
    /// Seconds until the plateau is reached (0 once there).
    pub plateau_in_s: Option<f64>,
}

/// Judges a callsite's live-count `series` (first seen at `first_seen_s`), given the verdict
/// of its previous sample (hysteresis, see [`crate::trend`]) and, when its timers expire by
/// themselves, their lifetime and arrival rate:
///
/// - `plateau` = arrival rate × mean lifetime (Little's law: what a steady stream of such
///   timers settles at), reached `max_s` after the callsite was first seen; and no population of
///   timers that each live at most `max_s` can exceed its *ceiling*, arrival rate × `max_s`
///   (give or take [`CEILING_MARGIN`] and Poisson noise);
/// - while watched for less than `max_s` the count is *filling*: timers armed before attaching
///   are invisible and new ones are seen, so it rises whatever happens. A rise then is
///   `unknown` (reason `filling`), unless the plateau it heads for is at least
///   `plateau_threshold` timers (then `growing`, reason `plateau_above_threshold`) or the count
///   is already above its ceiling (`growing`: its timers outlive their armed durations, e.g.
///   re-armed before they expire);
/// - once watched for `max_s`, only the samples taken since are judged, and a rise is `growing`
///   only above the ceiling: a population at its plateau is `stable` whatever its size and
///   however its random arrivals make it wander (reason `at_plateau` where the live count alone
///   would say `growing`).
pub fn judge(
    series: &Series,
    previous: Verdict,
    first_seen_s: f64,
    lifetime: Option<(Life, f64)>,
    params: &Params,
    plateau_threshold: f64,
) -> Judged {
    let raw = assess_after(series, params, previous, None);
    let (Some((life, rate)), Some((now, _))) = (lifetime, series.last()) else {
        return Judged {
            assessment: raw,
            reason: None,
            arrivals_per_s: None,
            plateau_in_s: None,
        };
    };
    let plateau = (rate * life.mean_s).max(0.0);
    let ceiling = (rate * life.max_s).max(0.0);
    // The count now (median of the last few samples), not a fitted line: a line through the
    // fill overshoots just after it ends.
    let recent: Vec<f64> = series.iter().map(|(_, v)| v).collect();
    let mut last = recent[recent.len().saturating_sub(5)..].to_vec();
    last.sort_by(f64::total_cmp);
    let current = last[last.len() / 2];
    let above_ceiling = |_: &Assessment| {
        current > CEILING_MARGIN * ceiling + 3.0 * ceiling.sqrt() + params.min_rise
    };
    let observed = now - first_seen_s;
    let mut reason = None;
    let mut assessment = if observed < life.max_s {
        match raw.verdict {
            Verdict::Growing if above_ceiling(&raw) => raw,
            Verdict::Growing if plateau >= plateau_threshold => {
                reason = Some(VerdictReason::PlateauAboveThreshold);
                raw
            }
            Verdict::Growing => {
                reason = Some(VerdictReason::Filling);
                unknown(raw)
            }
            _ => raw,
        }
    } else {
        let mut settled = Series::new(series.capacity());
        for (t, v) in series
            .iter()
            .filter(|&(t, _)| t >= first_seen_s + life.max_s)
        {
            settled.push(t, v);
        }
        let post = assess_after(&settled, params, previous, None);
        match post.verdict {
            Verdict::Growing if above_ceiling(&post) => post,
            Verdict::Growing => {
                reason = Some(VerdictReason::AtPlateau);
                stable(post)
            }
            Verdict::Unknown if raw.verdict == Verdict::Growing => {
                if above_ceiling(&raw) {
                    raw
                } else {
                    reason = Some(VerdictReason::Filling);
                    unknown(raw)
                }
            }
            Verdict::Unknown => raw,
            _ => {
                if raw.verdict == Verdict::Growing {
                    reason = Some(VerdictReason::AtPlateau);
                }
                post
            }
        }
    };
    assessment.plateau = Some(plateau);
    if assessment.verdict != Verdict::Unknown {
        assessment.projected_1h = assessment.projected_1h.min(plateau.max(assessment.level));
    }
    Judged {
        assessment,
        reason,
        arrivals_per_s: Some(rate),
        plateau_in_s: Some((life.max_s - observed).max(0.0)),
    }
}

/// How far above rate × longest lifetime a population must be before its rise is a leak: the
/// rate is measured over the last minute and the population integrates a different stretch.
pub const CEILING_MARGIN: f64 = 1.1;

/// `stable` at the level the samples show.
fn stable(a: Assessment) -> Assessment {
    let level = a.level;
    Assessment {
        verdict: Verdict::Stable,
        projected_1h: level,
        plateau: None,
        ..a
    }
}

/// `unknown`, keeping the level the samples show.
fn unknown(a: Assessment) -> Assessment {
    let level = a.level;
    Assessment {
        verdict: Verdict::Unknown,
        growth_per_s: 0.0,
        confidence: 0.0,
        projected_1h: level,
        plateau: None,
        ..a
    }
}

/// A series' verdict at its last sample.
#[derive(Clone, Debug)]
enum Judgement {
    Full(Judged),
    /// `stable` for certain without the statistics (`trend::surely_stable`): [`judge`]'s other
    /// inputs at that sample, for the rest of the verdict (confidence, level) to be computed
    /// only when a report shows it. Most callsites of a node hold a few timers that come and
    /// go, and a report comes every few samples.
    Stable {
        previous: Verdict,
        lifetime: Option<(Life, f64)>,
    },
}

struct Tracked {
    series: Series,
    /// Lives begun at each sample (callsites whose timers expire by themselves).
    arrivals: Series,
    first_seen_s: f64,
    last_seen_s: f64,
    judged: Option<Judgement>,
}

impl Tracked {
    fn previous(&self) -> Verdict {
        match &self.judged {
            None => Verdict::Unknown,
            Some(Judgement::Full(j)) => j.assessment.verdict,
            Some(Judgement::Stable { .. }) => Verdict::Stable,
        }
    }

    /// Judge the series at its last sample, given `lifetime` (see [`judge`]); the statistics
    /// are left for later where the verdict is surely `stable`.
    fn judge(
        &mut self,
        lifetime: Option<(Life, f64)>,
        params: &Params,
        plateau_threshold: f64,
        shortcut: bool,
    ) -> &Judgement {
        let previous = self.previous();
        let judgement = if shortcut
            && previous != Verdict::Growing
            && crate::trend::surely_stable(&self.series, params)
        {
            Judgement::Stable { previous, lifetime }
        } else {
            Judgement::Full(judge(
                &self.series,
                previous,
                self.first_seen_s,
                lifetime,
                params,
                plateau_threshold,
            ))
        };
        self.judged.insert(judgement)
    }

    /// The whole verdict at the last sample.
    fn judged(&self, params: &Params, plateau_threshold: f64) -> Option<Cow<'_, Judged>> {
        Some(match self.judged.as_ref()? {
            Judgement::Full(j) => Cow::Borrowed(j),
            Judgement::Stable { previous, lifetime } => Cow::Owned(judge(
                &self.series,
                *previous,
                self.first_seen_s,
                *lifetime,
                params,
                plateau_threshold,
            )),
        })
    }

    /// Arrivals per second over the samples held.
    fn arrival_rate(&self) -> Option<f64> {
        let (t0, a0) = self.arrivals.iter().next()?;
        let (t1, a1) = self.arrivals.last()?;
        (t1 > t0).then(|| ((a1 - a0) / (t1 - t0)).max(0.0))
    }
}

pub struct Verdicts {
    params: Params,
    plateau_threshold: f64,
    callsites: HashMap<CallsiteId, Tracked>,
    processes: HashMap<u32, Tracked>,
    /// Leave surely `stable` series' statistics until a report asks (off only to test that
    /// verdicts are the same either way).
    shortcut: bool,
}

impl Default for Verdicts {
    fn default() -> Self {
        Self::new(Params::default(), DEFAULT_PLATEAU_THRESHOLD)
    }
}

fn tracked<K: Hash + Eq>(
    map: &mut HashMap<K, Tracked>,
    key: K,
    window: usize,
    t: f64,
) -> &mut Tracked {
    let tracked = map.entry(key).or_insert_with(|| Tracked {
        series: Series::new(window),
        arrivals: Series::new(window),
        first_seen_s: t,
        last_seen_s: t,
        judged: None,
    });
    tracked.last_seen_s = t;
    tracked
}

impl Verdicts {
    pub fn new(params: Params, plateau_threshold: f64) -> Self {
        Self {
            params,
            plateau_threshold,
            callsites: HashMap::new(),
            processes: HashMap::new(),
            shortcut: true,
        }
    }

    /// Record one sample per callsite and process of `report`, taken at `t_s` seconds, and
    /// judge each (a verdict depends on the previous one, so judging happens once per sample).
    pub fn observe(&mut self, report: &Report, t_s: f64) {
        self.observe_samples(&sample::of_report(report), t_s);
    }

    /// [`Verdicts::observe`] of the samples the sources gave (`crate::sample`), which are
    /// the report's rows reduced to what is judged.
    pub fn observe_samples(&mut self, processes: &[ProcessSample], t_s: f64) {
        let window = self.params.window.max(1);
        for p in processes {
            let mut settling = false;
            for c in &p.callsites {
                let t = tracked(&mut self.callsites, c.id, window, t_s);
                t.series.push(t_s, c.live as f64);
                let lifetime = c.lifetime.as_ref().and_then(|l| {
                    t.arrivals.push(t_s, l.arrivals_total as f64);
                    let life = Life {
                        mean_s: l.mean_s,
                        max_s: l.max_s,
                    };
                    Some((life, t.arrival_rate()?))
                });
                let judged = t.judge(
                    lifetime,
                    &self.params,
                    self.plateau_threshold,
                    self.shortcut,
                );
                settling |= matches!(
                    judged,
                    Judgement::Full(Judged {
                        reason: Some(VerdictReason::Filling | VerdictReason::AtPlateau),
                        ..
                    })
                );
            }
            // A total that rises only because some callsites are still filling up (or just
            // filled) is not a leak the callsites would not show on their own.
            let growing_site = p.callsites.iter().any(|c| self.is_growing(c.id));
            let t = tracked(&mut self.processes, p.pid, window, t_s);
            t.series.push(t_s, p.live as f64);
            if let Judgement::Full(judged) = t.judge(None, &self.params, 0.0, self.shortcut) {
                if settling && !growing_site && judged.assessment.verdict == Verdict::Growing {
                    let mut judged = judged.clone();
                    judged.assessment = unknown(judged.assessment);
                    t.judged = Some(Judgement::Full(judged));
                }
            }
        }
        let fresh = |t: &Tracked| t_s - t.last_seen_s <= FORGET_AFTER_S;
        self.callsites.retain(|_, t| fresh(t));
        self.processes.retain(|_, t| fresh(t));
    }

    /// Whether callsite `id`'s last verdict is `growing`.
    pub fn is_growing(&self, id: CallsiteId) -> bool {
        self.callsites
            .get(&id)
            .is_some_and(|t| t.previous() == Verdict::Growing)
    }

    /// Series currently held (bounded by the callsites and processes of the last two minutes).
    pub fn tracked(&self) -> usize {
        self.callsites.len() + self.processes.len()
    }
}

impl report::Judge for Verdicts {
    /// Set `p`'s and its callsites' verdicts from the samples so far. Only `report::assemble`
    /// (and `report::judged`) call it: verdicts enter the report in one place.
    fn judge(&self, p: &mut ProcessReport) {
        let process = self.processes.get(&p.pid);
        if let Some(j) = process.and_then(|t| t.judged(&self.params, 0.0)) {
            let a = &j.assessment;
            p.verdict = a.verdict.into();
            p.growth_per_s = trending(a).then_some(round(a.growth_per_s));
            p.projected_live_1h = Some(a.projected_1h.round());
        }
        let pid = p.pid;
        for c in &mut p.callsites {
            let key = c.id(pid);
            let tracked = self.callsites.get(&key);
            let Some(j) = tracked.and_then(|t| t.judged(&self.params, self.plateau_threshold))
            else {
                continue;
            };
            let a = &j.assessment;
            c.verdict = a.verdict.into();
            c.growth_per_s = trending(a).then_some(round(a.growth_per_s));
            c.confidence = (a.verdict != Verdict::Unknown).then_some(round(a.confidence));
            c.projected_live_1h = Some(a.projected_1h.round());
            c.plateau = a.plateau.map(f64::round);
            c.verdict_reason = j.reason;
            if let Some(l) = c.lifetime.as_mut() {
                l.arrivals_per_s = j.arrivals_per_s.map(round);
                l.plateau_in_s = j.plateau_in_s.map(round);
            }
        }
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
        .any(|c| c.verdict == report::Verdict::Growing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{callsite, process, report as report_of};
    use crate::report::LifetimeReport;
    use std::collections::HashSet;

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
        let last = report::judged(last, &v);
        let by = |name: &str| {
            last.processes[0]
                .callsites
                .iter()
                .find(|c| c.caller.as_deref() == Some(name))
                .unwrap()
                .clone()
        };
        let (leak, pool) = (by("leak"), by("pool"));
        assert_eq!(leak.verdict, report::Verdict::Growing);
        let g = leak.growth_per_s.unwrap();
        assert!((18.0..=22.0).contains(&g), "{g}");
        assert!(leak.confidence.unwrap() > 0.99);
        assert!(leak.projected_live_1h.unwrap() > 70_000.0);
        assert_ne!(pool.verdict, report::Verdict::Growing);
        assert_eq!(pool.growth_per_s, None);
        assert_eq!(last.processes[0].verdict, report::Verdict::Growing);
        assert!(any_growing(&last));
    }

    /// Verdicts of a callsite whose timers live `life` seconds, arriving at `rate`/s, watched
    /// from mid-stream: the visible count is min(t, life) × rate.
    fn fill(rate: f64, life: f64, secs: usize, extra_per_s: f64) -> Vec<Judged> {
        let params = Params::default();
        let mut series = Series::new(params.window);
        let mut previous = Verdict::Unknown;
        (1..=secs)
            .map(|t| {
                let t = t as f64;
                series.push(t, rate * t.min(life) + extra_per_s * t);
                let lifetime = Life {
                    mean_s: life,
                    max_s: life,
                };
                let j = judge(
                    &series,
                    previous,
                    0.0,
                    Some((lifetime, rate)),
                    &params,
                    DEFAULT_PLATEAU_THRESHOLD,
                );
                previous = j.assessment.verdict;
                j
            })
            .collect()
    }

    #[test]
    fn a_population_filling_to_its_plateau_is_not_a_leak() {
        // TIME_WAIT sockets: 8/s for 60 s each.
        let v = fill(8.0, 60.0, 150, 0.0);
        assert!(v.iter().all(|j| j.assessment.verdict != Verdict::Growing));
        let at_30 = &v[29];
        assert_eq!(
            (at_30.assessment.verdict, at_30.reason),
            (Verdict::Unknown, Some(VerdictReason::Filling))
        );
        assert_eq!(at_30.assessment.plateau, Some(480.0));
        assert_eq!(at_30.plateau_in_s, Some(30.0));
        let last = v.last().unwrap();
        assert_eq!(last.assessment.verdict, Verdict::Stable);
        assert_eq!(last.plateau_in_s, Some(0.0));
        assert_eq!(last.assessment.projected_1h, 480.0);
        // Just after the fill, the whole window still rises: at_plateau says why it is stable.
        assert!(v[60..150]
            .iter()
            .any(|j| j.reason == Some(VerdictReason::AtPlateau)
                && j.assessment.verdict == Verdict::Stable));
    }

    #[test]
    fn a_plateau_above_the_threshold_is_flagged_while_filling() {
        // time.After(30 s) at 2000/s heads for 60,000.
        let v = fill(2000.0, 30.0, 25, 0.0);
        let first = v
            .iter()
            .position(|j| j.assessment.verdict == Verdict::Growing)
            .unwrap();
        assert!(first < 20, "growing only at {first}");
        let last = v.last().unwrap();
        assert_eq!(last.reason, Some(VerdictReason::PlateauAboveThreshold));
        assert_eq!(last.assessment.plateau, Some(60_000.0));
        assert!(last.assessment.projected_1h <= 60_000.0);
    }

    #[test]
    fn timers_outliving_their_armed_duration_are_a_leak() {
        // Armed for 5 s, but 20/s more stay live (re-armed before they expire).
        let v = fill(20.0, 5.0, 40, 20.0);
        let last = v.last().unwrap();
        assert_eq!(last.assessment.verdict, Verdict::Growing, "{last:?}");
        assert_eq!(last.reason, None);
    }

    /// Leaving surely stable series' statistics for the report changes no verdict, reason,
    /// confidence or level, in any report, for callsites that wander, leak, fill up, drain,
    /// come and go.
    #[test]
    fn verdicts_are_the_same_with_the_statistics_left_for_the_report() {
        let (mut lazy, mut full) = (Verdicts::default(), Verdicts::default());
        full.shortcut = false;
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut noise = |amp: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % (amp + 1)
        };
        let (mut stable_left, mut seen) = (0, HashSet::new());
        for t in 0..240u64 {
            let mut callsites = vec![
                callsite("few", noise(3)),
                callsite("wide", 40 + noise(12)),
                callsite("leak", t / 2 + noise(2)),
                callsite("drain", 400u64.saturating_sub(3 * t) + noise(1)),
                callsite("steps", if (t / 30) % 2 == 0 { 1 } else { 9 }),
            ];
            // Timers that live 20 s, arriving at 2/s: fills up to 40, then stays.
            let mut filling = callsite("filling", (2 * t).min(40) + noise(2));
            filling.lifetime = Some(LifetimeReport {
                mean_s: 20.0,
                max_s: 20.0,
                arrivals_total: 2 * t,
                arrivals_per_s: None,
                plateau_in_s: None,
            });
            callsites.push(filling);
            if (t / 50) % 2 == 0 {
                callsites.push(callsite("comes_and_goes", noise(1)));
            }
            let r = report_of(vec![process(7, "t", callsites), process(9, "u", vec![])]);
            lazy.observe(&r, t as f64);
            full.observe(&r, t as f64);
            stable_left += lazy
                .callsites
                .values()
                .filter(|t| matches!(t.judged, Some(Judgement::Stable { .. })))
                .count();
            let judged = report::judged(r.clone(), &lazy);
            assert_eq!(judged, report::judged(r, &full), "at {t}");
            for c in &judged.processes[0].callsites {
                seen.insert((c.verdict, c.verdict_reason));
            }
        }
        assert!(stable_left > 300, "{stable_left}");
        // The cases judged in full as well.
        for v in [report::Verdict::Growing, report::Verdict::Draining] {
            assert!(seen.contains(&(v, None)), "{v:?}: {seen:?}");
        }
        assert!(seen.contains(&(report::Verdict::Unknown, Some(VerdictReason::Filling))));
    }

    #[test]
    fn too_few_samples_stay_unknown_and_gone_callsites_are_forgotten() {
        let mut v = Verdicts::default();
        let r = report(7, 10, 64);
        v.observe(&r, 0.0);
        let r = report::judged(r, &v);
        assert!(r.processes[0]
            .callsites
            .iter()
            .all(|c| c.verdict == report::Verdict::Unknown));
        assert!(!any_growing(&r));
        assert_eq!(v.tracked(), 3);
        // Another process only, long after: the first one's series go.
        v.observe(&report(8, 0, 1), 1000.0);
        assert_eq!(v.tracked(), 3);
        assert!(v.processes.contains_key(&8) && !v.processes.contains_key(&7));
    }
}
