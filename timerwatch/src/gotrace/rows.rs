//! The Go source's rows: per process, callsites with live counts from a fresh heap walk and
//! totals from the probes (probes mode) or callsites from the census (census mode), for
//! `report::assemble` to combine with the kernel's.

use std::collections::HashMap;

use crate::{
    report::{Attribution, CallsiteId, CallsiteReport, LifetimeReport, Source, SourceRow},
    sample::{CallsiteSample, LifetimeSample},
};

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

/// Each traced process's Go row from the last [`walk`]: its release always, and, once a walk
/// succeeded, its heap count and callsites (probes mode also counts the timers no probe saw
/// created). Reads nothing: the walk was the I/O.
pub(super) fn rows(procs: &HashMap<u32, GoProcess>, now_ns: u64) -> Vec<SourceRow> {
    procs
        .iter()
        .map(|(&pid, p)| {
            let mut row = SourceRow::go(pid, p.target.version.clone());
            if let Some((state, _)) = &p.census {
                row.go_walk_cut = state.cut.map(|c| c.as_str().into());
                if let Some(c) = &p.census_now {
                    row.go_heap_timers = Some(c.pending);
                    row.callsites = census_callsites(&c.groups, now_ns);
                }
            } else if let Some(walk) = &p.last_walk {
                row.go_heap_timers = Some(walk.timers.len() as u64);
                let live = p.state.live(&walk.timers);
                row.pre_existing_go_timers = Some(live.pre_existing);
                row.callsites = callsites(p, &live, now_ns);
            }
            row
        })
        .collect()
}

/// Each traced process's Go callsites from the last [`walk`] as the trend test samples them:
/// [`rows`] reduced to identities and counts, with no names copied.
pub(super) fn samples(procs: &HashMap<u32, GoProcess>) -> Vec<(u32, Vec<CallsiteSample>)> {
    procs
        .iter()
        .map(|(&pid, p)| {
            let callsites = if p.census.is_some() {
                p.census_now.as_ref().map_or_else(Vec::new, |c| {
                    c.groups
                        .iter()
                        .map(|g| CallsiteSample {
                            id: CallsiteId::of(
                                pid,
                                Source::Go,
                                g.key.kind,
                                Some(&g.key.caller),
                                &g.key.frames,
                                None,
                            ),
                            live: g.live,
                            armed_total: 0,
                            lifetime: None,
                            signature_only: g.key.attribution == Attribution::Signature,
                        })
                        .collect()
                })
            } else if let Some(walk) = &p.last_walk {
                let live = p.state.live(&walk.timers);
                p.state
                    .callsites()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| CallsiteSample {
                        id: CallsiteId::of(
                            pid,
                            Source::Go,
                            c.kind,
                            c.caller.as_deref(),
                            &c.frames,
                            None,
                        ),
                        live: live.by_callsite.get(&i).map_or(0, |&(n, _)| n),
                        armed_total: c.armed_total,
                        lifetime: LifetimeSample::of(c.lifetime_s(), c.lives_total),
                        signature_only: false,
                    })
                    .collect()
            } else {
                Vec::new()
            };
            (pid, callsites)
        })
        .collect()
}

fn callsites(p: &GoProcess, live: &Live, now_ns: u64) -> Vec<CallsiteReport> {
    let callsites = p.state.callsites().iter().enumerate();
    callsites
        .map(|(i, c)| {
            let (n, since) = live.by_callsite.get(&i).copied().unwrap_or((0, 0));
            CallsiteReport {
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
            }
        })
        .collect()
}

fn census_callsites(groups: &[Group], now_ns: u64) -> Vec<CallsiteReport> {
    groups
        .iter()
        .map(|g| {
            // Census mode sees what is pending, not the operations that made it so: no totals.
            CallsiteReport {
                caller: Some(g.key.caller.clone()),
                frames: g.key.frames.clone(),
                naming: vec![crate::symbolize::Naming::Pclntab.as_str().into(); g.key.frames.len()],
                live: g.live,
                oldest_age_s: Some(secs(now_ns.saturating_sub(g.oldest_since_ns))),
                attribution: Some(g.key.attribution),
                period_s: g.period_ns.map(|ns| secs(ns as u64)),
                duration_s: g.duration_ns.map(|ns| secs(ns as u64)),
                ..CallsiteReport::empty(Source::Go, g.key.kind)
            }
        })
        .collect()
}

/// `p`'s row as its process exits: its release and, in probes mode, the callsites of the
/// timers still pending then.
pub(super) fn exit_row(pid: u32, p: &GoProcess, now_ns: u64) -> SourceRow {
    let mut row = SourceRow::go(pid, p.target.version.clone());
    if p.census.is_some() {
        // The process is gone: nothing left to walk, and no probe saw what it held.
        return row;
    }
    let walk = p.last_walk.as_ref().map(|w| (w.timers.as_slice(), w.at_ns));
    let pending = p.state.pending_at_exit(walk);
    row.callsites = callsites(p, &pending, now_ns);
    row
}
