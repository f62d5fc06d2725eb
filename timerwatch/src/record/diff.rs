//! `diff A B`: what changed per callsite between two reports (the last of each recording).
//!
//! Callsites are matched by process name, source, kind and caller, never by PID: the point is
//! to compare before and after a restart or a fix, when PIDs have changed. Instances of one
//! program add up.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::report::{Kind, Report, Source, Verdict};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Appeared,
    Grew,
    Shrank,
    Disappeared,
    Same,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Appeared => "appeared",
            Status::Grew => "grew",
            Status::Shrank => "shrank",
            Status::Disappeared => "disappeared",
            Status::Same => "same",
        }
    }

    pub fn is_growth(self) -> bool {
        matches!(self, Status::Appeared | Status::Grew)
    }
}

impl Change {
    /// What `--fail-on-growth` fails on: more live timers in B than in A *and* B's trend test
    /// calls the callsite `growing`, as `snapshot --fail-on-growth` requires. A count that is
    /// merely higher at B's last instant (a sleep caught mid-flight) is not a leak.
    pub fn is_leak_growth(&self) -> bool {
        self.status.is_growth() && self.verdict_b == Some(Verdict::Growing)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Change {
    pub status: Status,
    pub comm: String,
    pub source: Source,
    pub kind: Kind,
    pub caller: String,
    pub live_a: u64,
    pub live_b: u64,
    pub delta: i64,
    /// The verdict in B (`-` when the callsite is gone).
    #[serde(serialize_with = "verdict_or_dash")]
    pub verdict_b: Option<Verdict>,
}

#[derive(Serialize)]
pub struct Diff {
    pub schema: &'static str,
    pub duration_a_s: f64,
    pub duration_b_s: f64,
    pub changes: Vec<Change>,
}

fn verdict_or_dash<S: serde::Serializer>(v: &Option<Verdict>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.map_or("-", Verdict::as_str))
}

type Key = (String, Source, Kind, String);

fn totals(report: &Report) -> BTreeMap<Key, (u64, Verdict)> {
    let mut out: BTreeMap<Key, (u64, Verdict)> = BTreeMap::new();
    for p in &report.processes {
        for c in &p.callsites {
            let key = (
                p.comm.clone(),
                c.source,
                c.kind,
                c.caller.clone().unwrap_or_else(|| "?".into()),
            );
            let e = out.entry(key).or_insert((0, c.verdict));
            e.0 += c.live;
            if c.verdict == Verdict::Growing {
                e.1 = c.verdict;
            }
        }
    }
    out
}

pub fn diff(a: &Report, b: &Report) -> Diff {
    let (ta, tb) = (totals(a), totals(b));
    let mut keys: Vec<&Key> = ta.keys().chain(tb.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut changes: Vec<Change> = keys
        .into_iter()
        .map(|k| {
            let (live_a, in_a) = ta.get(k).map_or((0, false), |v| (v.0, true));
            let (live_b, verdict_b) = tb.get(k).map_or((0, None), |v| (v.0, Some(v.1)));
            let status = match (in_a, tb.contains_key(k)) {
                (_, false) => Status::Disappeared,
                (false, true) if live_b > 0 => Status::Appeared,
                _ if live_b > live_a => Status::Grew,
                _ if live_b < live_a => Status::Shrank,
                _ => Status::Same,
            };
            Change {
                status,
                comm: k.0.clone(),
                source: k.1,
                kind: k.2,
                caller: k.3.clone(),
                live_a,
                live_b,
                delta: live_b as i64 - live_a as i64,
                verdict_b,
            }
        })
        .collect();
    // Biggest changes first, growth before shrinkage at equal size.
    changes.sort_by(|x, y| {
        y.delta
            .unsigned_abs()
            .cmp(&x.delta.unsigned_abs())
            .then(x.status.cmp(&y.status))
            .then(x.comm.cmp(&y.comm))
            .then(x.caller.cmp(&y.caller))
    });
    Diff {
        schema: "timerwatch.diff/v1",
        duration_a_s: a.duration_s,
        duration_b_s: b.duration_s,
        changes,
    }
}

/// The table; unchanged callsites are counted in the heading, not listed, unless `all`.
pub fn render(d: &Diff, all: bool) -> String {
    let count = |s: Status| d.changes.iter().filter(|c| c.status == s).count();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "timerwatch diff: {} appeared, {} grew, {} shrank, {} disappeared, {} unchanged (A {:.1}s, B {:.1}s traced)",
        count(Status::Appeared),
        count(Status::Grew),
        count(Status::Shrank),
        count(Status::Disappeared),
        count(Status::Same),
        d.duration_a_s,
        d.duration_b_s
    );
    let _ = writeln!(
        out,
        "{:<11} {:<15} {:<11} {:>8} {:>8} {:>8} {:<9}  CALLER",
        "CHANGE", "COMM", "KIND", "LIVE A", "LIVE B", "DELTA", "VERDICT B"
    );
    for c in d.changes.iter().filter(|c| all || c.status != Status::Same) {
        let _ = writeln!(
            out,
            "{:<11} {:<15} {:<11} {:>8} {:>8} {:>+8} {:<9}  {}",
            c.status.as_str(),
            c.comm,
            c.kind,
            c.live_a,
            c.live_b,
            c.delta,
            c.verdict_b.map_or("-", Verdict::as_str),
            c.caller
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{callsite, process, report};
    use crate::report::CallsiteReport;

    #[test]
    fn callsites_match_by_program_not_pid() {
        let a = report(vec![process(
            1,
            "app",
            vec![
                callsite("leak", 100),
                callsite("steady", 4),
                callsite("shrinks", 9),
            ],
        )]);
        let b = report(vec![
            process(
                2,
                "app",
                vec![
                    callsite("steady", 4),
                    callsite("shrinks", 3),
                    callsite("new", 2),
                ],
            ),
            process(3, "other", vec![callsite("idle", 0)]),
        ]);
        let d = diff(&a, &b);
        let status = |caller: &str| {
            d.changes
                .iter()
                .find(|c| c.caller == caller)
                .map(|c| (c.status, c.delta))
                .unwrap()
        };
        assert_eq!(status("leak"), (Status::Disappeared, -100));
        assert_eq!(status("shrinks"), (Status::Shrank, -6));
        assert_eq!(status("new"), (Status::Appeared, 2));
        assert_eq!(status("steady"), (Status::Same, 0));
        assert_eq!(status("idle"), (Status::Same, 0));
        assert_eq!(d.changes[0].caller, "leak");
        let text = render(&d, false);
        assert!(
            text.contains("1 appeared, 0 grew, 1 shrank, 1 disappeared, 2 unchanged"),
            "{text}"
        );
        assert!(!text.contains("steady"));
        assert!(d.changes.iter().any(|c| c.status.is_growth()));
        assert!(!diff(&b, &b).changes.iter().any(|c| c.status.is_growth()));
        // "new" appeared, but B has no growing verdict for it: not a failure.
        assert!(!d.changes.iter().any(Change::is_leak_growth));
    }

    #[test]
    fn growth_fails_only_with_a_growing_verdict() {
        let a = report(vec![process(1, "app", vec![callsite("leak", 10)])]);
        let leak = CallsiteReport {
            verdict: Verdict::Growing,
            ..callsite("leak", 50)
        };
        let b = report(vec![process(2, "app", vec![leak])]);
        let d = diff(&a, &b);
        assert_eq!(d.changes[0].status, Status::Grew);
        assert!(d.changes[0].is_leak_growth());
        assert!(!diff(&b, &a).changes[0].is_leak_growth());
    }
}
