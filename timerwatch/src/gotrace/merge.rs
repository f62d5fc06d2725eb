//! Go callsites into the report: live counts from a fresh heap walk, totals from the probes
//! (probes mode) or callsites from the census (census mode).

use std::collections::HashMap;

use crate::report::{Attribution, CallsiteReport, LifetimeReport, ProcessReport, Report, Source};

use super::{
    census::{Group, WaiterWalk},
    census_walk,
    state::Live,
    GoProcess,
};

fn secs(ns: u64) -> f64 {
    (ns as f64 / 1e9 * 1000.0).round() / 1000.0
}

/// Each process's heaps (and, in census mode, its waiting goroutines) read now. A failed
/// probes-mode walk keeps the last good one: a torn read while the runtime resizes a heap
/// should not blank the report; a torn census is left out (see `census_walk::take`).
pub(super) fn walk(procs: &mut HashMap<u32, GoProcess>, now_ns: u64, waiters: Option<WaiterWalk>) {
    for p in procs.values_mut() {
        if let Some((state, found)) = &mut p.census {
            p.census_now = super::cost::counted(|| {
                census_walk::take(&p.target, found, state, &p.state, waiters, now_ns)
            });
        } else if let Ok(w) = p.target.walk() {
            p.last_walk = Some(w);
        }
    }
}

pub(super) fn merge(procs: &HashMap<u32, GoProcess>, report: &mut Report, now_ns: u64) {
    let mut missing: Vec<u32> = procs
        .keys()
        .filter(|pid| !report.processes.iter().any(|r| r.pid == **pid))
        .copied()
        .collect();
    missing.sort_unstable();
    report
        .processes
        .extend(missing.into_iter().map(ProcessReport::empty));
    for row in &mut report.processes {
        let Some(p) = procs.get(&row.pid) else {
            continue;
        };
        row.go_version = Some(p.target.version.clone());
        if let Some((state, _)) = &p.census {
            row.go_walk_cut = state.cut.map(|c| c.as_str().into());
            if let Some(c) = &p.census_now {
                row.go_heap_timers = Some(c.pending);
                push_census(&c.groups, row, now_ns);
            }
            continue;
        }
        let Some(walk) = &p.last_walk else {
            continue;
        };
        row.go_heap_timers = Some(walk.timers.len() as u64);
        let live = p.state.live(&walk.timers);
        row.pre_existing.go_timers = live.pre_existing;
        push_callsites(p, &live, row, now_ns);
        row.callsites
            .sort_by(|a, b| b.live.cmp(&a.live).then(b.armed_total.cmp(&a.armed_total)));
    }
    report
        .processes
        .sort_by(|a, b| b.live.cmp(&a.live).then(a.pid.cmp(&b.pid)));
}

fn push_callsites(p: &GoProcess, live: &Live, row: &mut ProcessReport, now_ns: u64) {
    for (i, c) in p.state.callsites().iter().enumerate() {
        let (n, since) = live.by_callsite.get(&i).copied().unwrap_or((0, 0));
        row.live += n;
        row.callsites.push(CallsiteReport {
            caller: c.caller.clone(),
            frames: c.frames.clone(),
            // Go runtime timers' stacks are named from the binary's pclntab only.
            naming: vec![crate::symbolize::Naming::Pclntab.as_str().into(); c.frames.len()],
            live: n,
            created_total: c.created_total,
            armed_total: c.armed_total,
            cancelled_total: c.cancelled_total,
            expired_total: c.expired_total,
            oldest_age_s: (n > 0).then(|| secs(now_ns.saturating_sub(since))),
            lifetime: c.lifetime_s().map(|(mean, max)| LifetimeReport {
                mean_s: (mean * 1000.0).round() / 1000.0,
                max_s: (max * 1000.0).round() / 1000.0,
                arrivals_total: c.lives_total,
                arrivals_per_s: None,
                plateau_in_s: None,
            }),
            attribution: Some(Attribution::CreationStack),
            ..CallsiteReport::empty(Source::Go, c.kind)
        });
    }
}

fn push_census(groups: &[Group], row: &mut ProcessReport, now_ns: u64) {
    for g in groups {
        row.live += g.live;
        // Census mode sees what is pending, not the operations that made it so: no totals.
        row.callsites.push(CallsiteReport {
            caller: Some(g.key.caller.clone()),
            frames: g.key.frames.clone(),
            naming: vec![crate::symbolize::Naming::Pclntab.as_str().into(); g.key.frames.len()],
            live: g.live,
            oldest_age_s: Some(secs(now_ns.saturating_sub(g.oldest_since_ns))),
            attribution: Some(g.key.attribution),
            period_s: g.period_ns.map(|ns| secs(ns as u64)),
            duration_s: g.duration_ns.map(|ns| secs(ns as u64)),
            ..CallsiteReport::empty(Source::Go, g.key.kind)
        });
    }
    row.callsites
        .sort_by(|a, b| b.live.cmp(&a.live).then(b.armed_total.cmp(&a.armed_total)));
}

/// `row` as its process exits: Go callsites with the timers still pending then.
pub(super) fn merge_exit(p: &GoProcess, row: &mut ProcessReport, now_ns: u64) {
    row.go_version = Some(p.target.version.clone());
    if p.census.is_some() {
        // The process is gone: nothing left to walk, and no probe saw what it held.
        return;
    }
    let walk = p.last_walk.as_ref().map(|w| (w.timers.as_slice(), w.at_ns));
    let pending = p.state.pending_at_exit(walk);
    push_callsites(p, &pending, row, now_ns);
    row.callsites
        .sort_by(|a, b| b.live.cmp(&a.live).then(b.armed_total.cmp(&a.armed_total)));
}
