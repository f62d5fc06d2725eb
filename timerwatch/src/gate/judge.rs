//! The gates of `run`: what was seen per callsite during the run, and which callsites fail.
//!
//! A callsite is named by (comm, kind, caller), not by pid, so that the N processes of one
//! binary are one callsite and a baseline written by one run matches the next. Pure: fed
//! reports, no I/O, unit-tested without a kernel.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::report::{CallsiteReport, Kind, ProcessReport, Report};

/// A callsite across processes and runs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key {
    pub comm: String,
    pub kind: Kind,
    /// The program's function that armed the timers; "?" when no stack was taken.
    pub caller: String,
}

impl Key {
    fn of(p: &ProcessReport, c: &CallsiteReport) -> Key {
        Key {
            comm: p.comm.clone(),
            kind: c.kind,
            caller: c.caller.clone().unwrap_or_else(|| "?".into()),
        }
    }
}

/// Whether live timers of `kind` left at the end are the program's leak: timers it created
/// for itself. A sleep in progress is not a leak, nor a timer the kernel armed on the task's
/// behalf (`kernel`, `other`: a pipe's or socket's delayed work may outlive the process).
pub fn counts_at_exit(kind: Kind) -> bool {
    !matches!(
        kind,
        Kind::Sleep | Kind::Kernel | Kind::Other | Kind::GoSleep
    )
}

/// What the run showed of one callsite.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Seen {
    pub frames: Vec<String>,
    pub pids: Vec<u32>,
    /// The steepest `growing` verdict seen during the run (timers/s), if any.
    pub growth_per_s: Option<f64>,
    /// Live when the workload was done: summed over its processes, each at its exit or, if
    /// still running, when the command exited.
    pub live_at_end: u64,
    pub created_total: u64,
    /// The largest live count seen in any report.
    pub peak_live: u64,
    pub oldest_age_s: Option<f64>,
}

/// Everything seen, per callsite.
#[derive(Default)]
pub struct Ledger {
    pub callsites: BTreeMap<Key, Seen>,
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

impl Ledger {
    fn entry(&mut self, p: &ProcessReport, c: &CallsiteReport) -> &mut Seen {
        let seen = self.callsites.entry(Key::of(p, c)).or_default();
        if seen.frames.is_empty() {
            seen.frames = c.frames.clone();
        }
        if !seen.pids.contains(&p.pid) {
            seen.pids.push(p.pid);
        }
        seen.peak_live = seen.peak_live.max(c.live);
        seen.oldest_age_s = max_opt(seen.oldest_age_s, c.oldest_age_s);
        if c.verdict == crate::report::Verdict::Growing {
            seen.growth_per_s = max_opt(seen.growth_per_s, c.growth_per_s.or(Some(0.0)));
        }
        seen
    }

    /// A report taken during the run: growth verdicts, peaks.
    pub fn observe(&mut self, report: &Report) {
        for p in &report.processes {
            for c in &p.callsites {
                self.entry(p, c);
            }
        }
    }

    /// Whether a callsite already fails the growth gate (nothing can undo that).
    pub fn any_growth_breach(&self, gates: &Gates) -> bool {
        self.callsites.iter().any(|(k, s)| {
            s.growth_per_s.is_some()
                && matches!(gates.judge(k, s), Verdict::Fail(b)
                    if b.iter().any(|b| matches!(b, Breach::Growth { .. })))
        })
    }

    /// A process's row when the workload was done with it (its exit, or the command's).
    pub fn finish(&mut self, p: &ProcessReport) {
        for c in &p.callsites {
            let seen = self.entry(p, c);
            if counts_at_exit(c.kind) {
                seen.live_at_end += c.live;
            }
            seen.created_total += c.created_total;
        }
    }
}

/// The gates asked for.
#[derive(Clone, Debug, Default)]
pub struct Gates {
    pub fail_on_growth: bool,
    /// Fail a callsite with more than this many timers live at the end.
    pub live_at_exit: Option<u64>,
    /// `--allow` patterns on the caller (`*` matches any run of characters).
    pub allow: Vec<String>,
    pub baseline: Option<Baseline>,
}

/// Why a callsite fails.
#[derive(Clone, Debug, PartialEq)]
pub enum Breach {
    Growth { per_s: f64 },
    LiveAtExit { live: u64, limit: u64 },
}

/// One callsite's judgement.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Pass,
    /// Accepted by `--allow` or the baseline: says which.
    Allowed(String),
    Fail(Vec<Breach>),
}

/// `pattern` with `*` wildcards matches all of `text`.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Iterative matching with one backtrack point: linear in practice, never exponential.
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

impl Gates {
    pub fn any(&self) -> bool {
        self.fail_on_growth || self.live_at_exit.is_some()
    }

    /// The breaches of `seen` under these gates, before any allowance.
    fn breaches(&self, seen: &Seen, baseline_live: u64) -> Vec<Breach> {
        let mut out = Vec::new();
        if let (true, Some(per_s)) = (self.fail_on_growth, seen.growth_per_s) {
            out.push(Breach::Growth { per_s });
        }
        if let Some(n) = self.live_at_exit {
            let limit = n.max(baseline_live);
            if seen.live_at_end > limit {
                out.push(Breach::LiveAtExit {
                    live: seen.live_at_end,
                    limit,
                });
            }
        }
        out
    }

    pub fn judge(&self, key: &Key, seen: &Seen) -> Verdict {
        if let Some(p) = self.allow.iter().find(|p| glob(p, &key.caller)) {
            return Verdict::Allowed(format!("allowed by --allow {p}"));
        }
        let base = self.baseline.as_ref().and_then(|b| b.get(key));
        // A baselined callsite may grow (it is known) and keep up to its baseline's live
        // count; more than that is a new leak on top of the known one.
        let breaches = self.breaches(seen, base.map_or(0, |b| b.live));
        let breaches: Vec<Breach> = match base {
            Some(_) => breaches
                .into_iter()
                .filter(|b| matches!(b, Breach::LiveAtExit { .. }))
                .collect(),
            None => breaches,
        };
        match (breaches.is_empty(), base) {
            (false, _) => Verdict::Fail(breaches),
            (true, Some(_)) if self.breaches(seen, 0).is_empty() => Verdict::Pass,
            (true, Some(_)) => Verdict::Allowed("in the baseline".into()),
            (true, None) => Verdict::Pass,
        }
    }

    /// The callsites that would fail with no allowance: what `--write-baseline` records.
    pub fn baseline_of(&self, ledger: &Ledger) -> Baseline {
        let plain = Gates {
            fail_on_growth: self.fail_on_growth || !self.any(),
            live_at_exit: self.live_at_exit.or((!self.any()).then_some(0)),
            ..Gates::default()
        };
        Baseline {
            schema: BASELINE_SCHEMA.into(),
            callsites: ledger
                .callsites
                .iter()
                .filter(|(_, s)| !plain.breaches(s, 0).is_empty())
                .map(|(k, s)| BaselineEntry {
                    key: k.clone(),
                    live: s.live_at_end,
                })
                .collect(),
        }
    }
}

pub const BASELINE_SCHEMA: &str = "timerwatch.baseline/v1";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BaselineEntry {
    #[serde(flatten)]
    pub key: Key,
    /// Live at the end when the baseline was written: the most a later run may keep.
    pub live: u64,
}

/// Known, accepted callsites (`--write-baseline` writes it, `--baseline` reads it).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Baseline {
    pub schema: String,
    pub callsites: Vec<BaselineEntry>,
}

impl Baseline {
    pub fn parse(text: &str) -> Result<Baseline, String> {
        let b: Baseline = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if b.schema != BASELINE_SCHEMA {
            return Err(format!(
                "schema {:?}, expected {BASELINE_SCHEMA:?}",
                b.schema
            ));
        }
        Ok(b)
    }

    fn get(&self, key: &Key) -> Option<&BaselineEntry> {
        self.callsites.iter().find(|e| &e.key == key)
    }
}

/// One failing callsite's "leak context": callsite, kind, live, growth, oldest.
pub fn leak_context(key: &Key, seen: &Seen, breaches: &[Breach]) -> String {
    let why: Vec<String> = breaches
        .iter()
        .map(|b| match b {
            Breach::Growth { per_s } => format!("growing {per_s:+.1}/s"),
            Breach::LiveAtExit { live, limit } => {
                format!("{live} live at exit (limit {limit})")
            }
        })
        .collect();
    let oldest = seen.oldest_age_s.map_or("-".into(), |s| format!("{s:.1}s"));
    let growth = seen
        .growth_per_s
        .map_or("-".into(), |g| format!("{g:+.1}/s"));
    let mut out = format!(
        "callsite={} kind={} comm={} live={} peak={} growth={growth} oldest={oldest} created={} pids={:?}: {}",
        key.caller,
        key.kind,
        key.comm,
        seen.live_at_end,
        seen.peak_live,
        seen.created_total,
        seen.pids,
        why.join("; ")
    );
    for f in &seen.frames {
        out.push_str("\n    at ");
        out.push_str(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(caller: &str) -> Key {
        Key {
            comm: "app".into(),
            kind: Kind::PosixTimer,
            caller: caller.into(),
        }
    }

    fn seen(growth: Option<f64>, live: u64) -> Seen {
        Seen {
            growth_per_s: growth,
            live_at_end: live,
            ..Seen::default()
        }
    }

    #[test]
    fn only_timers_a_program_made_for_itself_count_at_exit() {
        let mut ledger = Ledger::default();
        let c = |kind: Kind, live| CallsiteReport {
            caller: Some("f".into()),
            live,
            created_total: live,
            armed_total: live,
            ..CallsiteReport::empty(crate::report::Source::Kernel, kind)
        };
        let row = ProcessReport {
            callsites: vec![
                c(Kind::PosixTimer, 3),
                c(Kind::Kernel, 1),
                c(Kind::Sleep, 1),
            ],
            ..ProcessReport::named(1, "app".into(), String::new())
        };
        ledger.finish(&row);
        ledger.finish(&ProcessReport { pid: 2, ..row });
        let live = |kind: &str| {
            ledger
                .callsites
                .iter()
                .find(|(k, _)| k.kind.as_str() == kind)
                .map(|(_, s)| (s.live_at_end, s.pids.len()))
        };
        assert_eq!(live("posix_timer"), Some((6, 2)));
        assert_eq!(live("kernel"), Some((0, 2)));
        assert_eq!(live("sleep"), Some((0, 2)));
    }

    #[test]
    fn globs() {
        assert!(glob("main.*", "main.leak"));
        assert!(glob("*leak*", "leak_posix_timer"));
        assert!(glob("a*b*c", "aXbYbc"));
        assert!(!glob("main.*", "net/http.x"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
    }

    #[test]
    fn gates_fail_on_what_was_asked() {
        let g = Gates {
            fail_on_growth: true,
            live_at_exit: Some(2),
            ..Gates::default()
        };
        assert_eq!(g.judge(&key("f"), &seen(None, 2)), Verdict::Pass);
        assert_eq!(
            g.judge(&key("f"), &seen(Some(50.0), 3)),
            Verdict::Fail(vec![
                Breach::Growth { per_s: 50.0 },
                Breach::LiveAtExit { live: 3, limit: 2 }
            ])
        );
        let allowed = Gates {
            allow: vec!["f*".into()],
            ..g.clone()
        };
        assert!(matches!(
            allowed.judge(&key("foo"), &seen(Some(1.0), 9)),
            Verdict::Allowed(_)
        ));
    }

    #[test]
    fn a_baseline_accepts_its_leak_but_not_more() {
        let g = Gates {
            fail_on_growth: true,
            live_at_exit: Some(0),
            ..Gates::default()
        };
        let mut ledger = Ledger::default();
        ledger.callsites.insert(key("known"), seen(Some(5.0), 50));
        ledger.callsites.insert(key("quiet"), seen(None, 0));
        let base = g.baseline_of(&ledger);
        assert_eq!(base.callsites.len(), 1);
        let text = serde_json::to_string(&base).unwrap();
        let with = Gates {
            baseline: Some(Baseline::parse(&text).unwrap()),
            ..g
        };
        assert!(matches!(
            with.judge(&key("known"), &seen(Some(5.0), 50)),
            Verdict::Allowed(_)
        ));
        assert_eq!(
            with.judge(&key("known"), &seen(Some(5.0), 100)),
            Verdict::Fail(vec![Breach::LiveAtExit {
                live: 100,
                limit: 50
            }])
        );
        assert!(matches!(
            with.judge(&key("new"), &seen(Some(5.0), 1)),
            Verdict::Fail(_)
        ));
        assert!(Baseline::parse(r#"{"schema":"x","callsites":[]}"#).is_err());
    }
}
