//! The report: the public, versioned shape of what timerwatch found (`--json`, `/report`).
//! Field names are an interface (see README "JSON report"); add fields, never rename them.

use std::collections::HashMap;

use serde::Serialize;

use crate::table::Table;

pub const SCHEMA: &str = "timerwatch.report/v1";

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Report {
    pub schema: &'static str,
    pub duration_s: f64,
    pub lost_events: u64,
    /// Events about timers whose start we never saw (armed before we attached, or lost).
    pub unattributed_events: u64,
    pub processes: Vec<ProcessReport>,
    /// Traced processes that exited during the window: their timers are gone with them.
    pub exited: Vec<ExitedReport>,
    /// Optional tracepoints this kernel lacks, and what is therefore not seen.
    pub missing_tracepoints: Vec<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ProcessReport {
    pub pid: u32,
    pub comm: String,
    pub exe: String,
    pub live: u64,
    pub pre_existing: PreExisting,
    pub callsites: Vec<CallsiteReport>,
}

/// Timers that existed before the probes attached: counted, without a callsite.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct PreExisting {
    pub posix_timers: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CallsiteReport {
    pub source: &'static str,
    pub kind: &'static str,
    pub timer_function: Option<String>,
    pub caller: Option<String>,
    pub frames: Vec<String>,
    pub live: u64,
    pub created_total: u64,
    pub armed_total: u64,
    pub cancelled_total: u64,
    pub expired_total: u64,
    pub oldest_age_s: Option<f64>,
    pub verdict: &'static str,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ExitedReport {
    pub pid: u32,
    pub comm: String,
    pub exited_after_s: f64,
}

fn secs(ns: u64) -> f64 {
    (ns as f64 / 1e9 * 1000.0).round() / 1000.0
}

/// Inputs that do not live in the table.
pub struct Context<'a> {
    pub start_ns: u64,
    pub now_ns: u64,
    pub lost_events: u64,
    pub pre_existing: &'a HashMap<u32, PreExisting>,
    pub missing_tracepoints: &'a [String],
}

pub fn build(table: &Table, ctx: &Context<'_>) -> Report {
    let mut processes: Vec<ProcessReport> = table
        .processes()
        .map(|p| {
            let mut callsites: Vec<CallsiteReport> = table
                .callsites(p.tgid)
                .map(|v| {
                    let c = v.callsite;
                    CallsiteReport {
                        source: "kernel",
                        kind: c.kind.as_str(),
                        timer_function: c.timer_function.clone(),
                        caller: c.caller.clone(),
                        frames: c.frames.clone(),
                        live: c.live,
                        created_total: c.created_total,
                        armed_total: c.armed_total,
                        cancelled_total: c.cancelled_total,
                        expired_total: c.expired_total,
                        oldest_age_s: v
                            .oldest_live_since_ns
                            .map(|s| secs(ctx.now_ns.saturating_sub(s))),
                        verdict: "unknown",
                    }
                })
                .collect();
            callsites.sort_by(|a, b| b.live.cmp(&a.live).then(b.armed_total.cmp(&a.armed_total)));
            ProcessReport {
                pid: p.tgid,
                comm: p.comm.clone(),
                exe: p.exe.clone().unwrap_or_default(),
                live: callsites.iter().map(|c| c.live).sum(),
                pre_existing: ctx.pre_existing.get(&p.tgid).cloned().unwrap_or_default(),
                callsites,
            }
        })
        .collect();
    processes.sort_by(|a, b| b.live.cmp(&a.live).then(a.pid.cmp(&b.pid)));
    Report {
        schema: SCHEMA,
        duration_s: secs(ctx.now_ns.saturating_sub(ctx.start_ns)),
        lost_events: ctx.lost_events,
        unattributed_events: table.unmatched,
        processes,
        exited: table
            .exited()
            .iter()
            .map(|e| ExitedReport {
                pid: e.tgid,
                comm: e.comm.clone(),
                exited_after_s: secs(e.at_ns.saturating_sub(ctx.start_ns)),
            })
            .collect(),
        missing_tracepoints: ctx.missing_tracepoints.to_vec(),
    }
}
