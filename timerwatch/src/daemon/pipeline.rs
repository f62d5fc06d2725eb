//! What happens to each report: labels, pod filters, verdict log, folding, publication.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::{
    fold::Fold,
    metadata::{Metadata, PodFilter},
    snapshot::Shared,
    verdict_log::VerdictLog,
};
use crate::report::Report;

pub struct Pipeline {
    pub metadata: Metadata,
    pub filter: PodFilter,
    pub fold: Fold,
    pub verdicts: VerdictLog,
    pub shared: Shared,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Pipeline {
    pub fn tick(&mut self, report: &Report) {
        let pods: HashMap<_, _> = report
            .processes
            .iter()
            .map(|p| (p.pid, self.metadata.labels(p.pid, &p.comm)))
            .collect();
        self.metadata
            .retain(&pods.keys().copied().collect::<HashSet<_>>());
        let mut report = report.clone();
        report
            .processes
            .retain(|p| pods.get(&p.pid).is_some_and(|l| self.filter.admits(l)));

        let lines = self.verdicts.changes(&report, &pods, unix_now());
        if !lines.is_empty() {
            let mut out = std::io::stdout().lock();
            // A closed stdout must not stop the exporter: the log is a convenience.
            let _ = out
                .write_all((lines.join("\n") + "\n").as_bytes())
                .and_then(|_| out.flush());
        }

        let series = self.fold.update(&report, &pods);
        let mut snap = self.shared.lock();
        snap.series = series;
        snap.lost_events = report.lost_events;
        snap.unattributed_events = report.unattributed_events;
        snap.processes = report.processes.len() as u64;
        snap.report = Some(report);
        snap.last_tick = Some(Instant::now());
    }
}
