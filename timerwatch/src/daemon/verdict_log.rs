//! Verdict changes as JSON lines, for log pipelines that alert without Prometheus.
//!
//! A line is written when a callsite's verdict changes to or from `growing` or `draining` (a
//! callsite seen for the first time counts as coming from `unknown`); `unknown` ↔ `stable`
//! changes are every callsite's warm-up and would only be noise.

use std::collections::HashMap;

use serde::Serialize;

use super::metadata::PodLabels;
use crate::report::{CallsiteId, Kind, Report, Source, Verdict};

/// One log line; field order is the order on the line, time and event first.
#[derive(Serialize)]
struct VerdictEvent<'a> {
    ts: f64,
    event: &'static str,
    pid: u32,
    comm: &'a str,
    source: Source,
    kind: Kind,
    caller: Option<&'a str>,
    timer_function: Option<&'a str>,
    from: Verdict,
    to: Verdict,
    growth_per_s: Option<f64>,
    live: u64,
    #[serde(flatten)]
    pod: &'a PodLabels,
}

#[derive(Default)]
pub struct VerdictLog {
    last: HashMap<CallsiteId, Verdict>,
}

fn notable(v: Verdict) -> bool {
    matches!(v, Verdict::Growing | Verdict::Draining)
}

impl VerdictLog {
    /// The lines for the changes since the previous report; `ts` is Unix time in seconds.
    pub fn changes(
        &mut self,
        report: &Report,
        pods: &HashMap<u32, PodLabels>,
        ts: f64,
    ) -> Vec<String> {
        let mut lines = Vec::new();
        let mut now = HashMap::with_capacity(self.last.len());
        for p in &report.processes {
            let pod = pods.get(&p.pid).cloned().unwrap_or_default();
            for c in &p.callsites {
                let key = c.id(p.pid);
                let from = self.last.get(&key).copied().unwrap_or(Verdict::Unknown);
                now.insert(key, c.verdict);
                if from == c.verdict || !(notable(from) || notable(c.verdict)) {
                    continue;
                }
                let line = VerdictEvent {
                    ts: (ts * 1000.0).round() / 1000.0,
                    event: "verdict",
                    pid: p.pid,
                    comm: &p.comm,
                    source: c.source,
                    kind: c.kind,
                    caller: c.caller.as_deref(),
                    timer_function: c.timer_function.as_deref(),
                    from,
                    to: c.verdict,
                    growth_per_s: c.growth_per_s,
                    live: c.live,
                    pod: &pod,
                };
                // Plain data with string keys always serialises.
                lines.push(serde_json::to_string(&line).expect("verdict event serialises"));
            }
        }
        // Callsites that left the report (their process exited) are forgotten.
        self.last = now;
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{fixtures, CallsiteReport};

    fn report(verdict: Verdict) -> Report {
        let site = CallsiteReport {
            timer_function: None,
            frames: vec![],
            naming: Vec::new(),
            verdict,
            growth_per_s: (verdict == Verdict::Growing).then_some(20.0),
            ..fixtures::callsite("leak_timerfd", 1)
        };
        fixtures::report(vec![fixtures::process(7, "leaky", vec![site])])
    }

    #[test]
    fn logs_changes_that_matter_once() {
        let mut log = VerdictLog::default();
        let pods = HashMap::new();
        assert!(log
            .changes(&report(Verdict::Unknown), &pods, 1.0)
            .is_empty());
        assert!(log.changes(&report(Verdict::Stable), &pods, 2.0).is_empty());
        let lines = log.changes(&report(Verdict::Growing), &pods, 3.0);
        assert_eq!(lines.len(), 1);
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["event"], "verdict");
        assert_eq!(v["from"], "stable");
        assert_eq!(v["to"], "growing");
        assert_eq!(v["caller"], "leak_timerfd");
        assert_eq!(v["pid"], 7);
        assert_eq!(v["growth_per_s"], 20.0);
        assert!(lines[0].starts_with("{\"ts\":3.0,\"event\":\"verdict\",\"pid\":7,"));
        assert_eq!(v["container_id"], "");
        assert!(log
            .changes(&report(Verdict::Growing), &pods, 4.0)
            .is_empty());
        assert_eq!(log.changes(&report(Verdict::Stable), &pods, 5.0).len(), 1);
    }
}
