//! What the trend test reads once a second: each callsite's identity, live count and lifetime,
//! taken straight from the sources (the table, the Go state) rather than from a report. A
//! report clones every callsite's names and reads /proc for the processes only Go knows; the
//! sample copies a few numbers per callsite, the identity being computed once per name.
//!
//! The samples are the report's rows reduced to what `verdict::Verdicts` reads, in the report's
//! order (`report::assemble`), so that verdicts are the ones a report would have produced: two
//! stacks named alike are one identity, and the first in the report's order is the one sampled.

use std::collections::HashMap;

use crate::{
    report::{round_ms, CallsiteId, CallsiteReport, ProcessReport, Report, Source},
    table::Table,
};

/// One callsite's sample.
#[derive(Clone, Debug, PartialEq)]
pub struct CallsiteSample {
    pub id: CallsiteId,
    pub live: u64,
    /// The report's second ordering key (see `report::sort_callsites`).
    pub armed_total: u64,
    /// As the report states it (`CallsiteReport::lifetime`, rounded alike).
    pub lifetime: Option<LifetimeSample>,
    /// A Go census callsite only its signature names (see `gotrace::window`).
    pub signature_only: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LifetimeSample {
    pub mean_s: f64,
    pub max_s: f64,
    pub arrivals_total: u64,
}

impl LifetimeSample {
    /// From a source's `lifetime_s()` (mean, longest) and its lives begun, rounded as the
    /// report rounds them, so a sample judges what the report will show.
    pub fn of(lifetime_s: Option<(f64, f64)>, arrivals_total: u64) -> Option<Self> {
        lifetime_s.map(|(mean, max)| Self {
            mean_s: round_ms(mean),
            max_s: round_ms(max),
            arrivals_total,
        })
    }
}

/// One process's sample: its callsites from every source, in the report's order.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessSample {
    pub pid: u32,
    pub live: u64,
    pub callsites: Vec<CallsiteSample>,
}

impl CallsiteSample {
    /// The sample of a report's row (reports read back, tests).
    pub fn of(c: &CallsiteReport, pid: u32) -> Self {
        CallsiteSample {
            id: c.id(pid),
            live: c.live,
            armed_total: c.armed_total,
            lifetime: c.lifetime.as_ref().map(|l| LifetimeSample {
                mean_s: l.mean_s,
                max_s: l.max_s,
                arrivals_total: l.arrivals_total,
            }),
            signature_only: c.source == Source::Go
                && c.attribution == Some(crate::report::Attribution::Signature),
        }
    }
}

impl ProcessSample {
    pub fn of(p: &ProcessReport) -> Self {
        ProcessSample {
            pid: p.pid,
            live: p.live,
            callsites: p
                .callsites
                .iter()
                .map(|c| CallsiteSample::of(c, p.pid))
                .collect(),
        }
    }
}

/// The samples of a whole report.
pub fn of_report(report: &Report) -> Vec<ProcessSample> {
    report.processes.iter().map(ProcessSample::of).collect()
}

/// The kernel source's samples: one per process of the table, as `report::kernel_rows` would
/// list its callsites.
pub fn kernel(table: &Table) -> Vec<ProcessSample> {
    table
        .processes()
        .map(|p| ProcessSample {
            pid: p.tgid,
            live: 0,
            callsites: table
                .callsites_of(p.tgid)
                .map(|c| CallsiteSample {
                    id: c.identity(),
                    live: c.live,
                    armed_total: c.armed_total,
                    lifetime: LifetimeSample::of(c.lifetime_s(), c.lives_total),
                    signature_only: false,
                })
                .collect(),
        })
        .collect()
}

/// The kernel's samples with the other sources' callsites added to the same process, as
/// `report::assemble` combines rows; callsites ordered as the report orders them.
pub fn combine(
    kernel: Vec<ProcessSample>,
    other: Vec<(u32, Vec<CallsiteSample>)>,
) -> Vec<ProcessSample> {
    let mut processes = kernel;
    if !other.is_empty() {
        let at: HashMap<u32, usize> = processes
            .iter()
            .enumerate()
            .map(|(i, p)| (p.pid, i))
            .collect();
        for (pid, callsites) in other {
            match at.get(&pid) {
                Some(&i) => processes[i].callsites.extend(callsites),
                None => processes.push(ProcessSample {
                    pid,
                    live: 0,
                    callsites,
                }),
            }
        }
    }
    for p in &mut processes {
        p.live = p.callsites.iter().map(|c| c.live).sum();
        p.callsites
            .sort_by(|a, b| b.live.cmp(&a.live).then(b.armed_total.cmp(&a.armed_total)));
    }
    processes
}
