//! Go runtime timers of the traced processes: uprobes say who created, re-armed, stopped and
//! fired each timer; a walk of the runtime's timer heaps at every report says which are live.
//!
//! Go timers never reach the kernel's timer tracepoints: the runtime keeps them in per-P heaps
//! and sleeps until the earliest. So for each `-p`/`--comm` target whose executable is a Go
//! binary, `timerwatch_go` (binary analysis) gives the probe points and layouts, [`attach`]
//! puts the kernel's `go_timer` program on them, [`state`] keeps the per-callsite counts and
//! [`merge`] adds Go callsites to the report. Without a pid/comm filter there is no target list
//! to analyse up front, so Go tracing is off.

mod attach;
mod binary;
mod merge;
pub mod state;

use std::collections::HashMap;
use std::sync::Mutex;

use aya::Ebpf;
use serde::Serialize;
use timerwatch_common::EventKind;

use crate::{event::Record, report::Report};

use self::{binary::Target, state::GoState};

struct GoProcess {
    target: Target,
    state: GoState,
    /// The last heap walk that succeeded: a walk can fail mid-way (a torn read while the
    /// runtime resizes a heap), and one failure should not blank the report.
    last_walk: Mutex<Option<binary::Walk>>,
}

#[derive(Default)]
pub struct GoTracer {
    attacher: attach::Attacher,
    procs: HashMap<u32, GoProcess>,
}

/// One Go probe point of a process as `timerwatch go-probes --json` prints it: the runtime
/// function and the offset in `/proc/PID/exe` of the instruction the uprobe goes on. The same
/// points [`GoTracer::start`] attaches, since both come from [`Target::points`].
#[derive(Clone, Debug, Serialize)]
pub struct ProbeOffset {
    pub function: String,
    pub file_offset: u64,
}

/// Where timerwatch would put its Go uprobes in process `pid`, without loading anything.
pub fn probe_offsets(pid: u32) -> Result<Vec<ProbeOffset>, String> {
    match Target::open(pid) {
        Ok(target) => Ok(target
            .points()
            .into_iter()
            .map(|p| ProbeOffset {
                function: p.name,
                file_offset: p.file_offset,
            })
            .collect()),
        Err(binary::OpenError::NotGo) => Err(format!("pid {pid} is not a Go program")),
        Err(binary::OpenError::Gone) => Err(format!("no process {pid}")),
        Err(binary::OpenError::Unsupported(why)) => Err(format!("pid {pid}: {why}")),
    }
}

impl GoTracer {
    /// Analyse each target and attach to the Go ones. What cannot be traced gets one line on
    /// stderr and kernel tracing only; nothing here fails the session. `verbose`: one line per
    /// probe attached.
    pub fn start(ebpf: &mut Ebpf, pids: &[u32], verbose: bool) -> Self {
        let mut tracer = Self::default();
        for &pid in pids {
            match Target::open(pid) {
                Ok(target) => {
                    let points = target.points();
                    if let Err(e) = tracer.attacher.attach(ebpf, pid, &points) {
                        eprintln!("timerwatch: error: pid {pid}: Go timers not traced: {e:#}");
                        continue;
                    }
                    if verbose {
                        for p in &points {
                            eprintln!(
                                "timerwatch: pid {pid}: Go uprobe on {} at file offset {:#x} of /proc/{pid}/exe",
                                p.name, p.file_offset
                            );
                        }
                    }
                    tracer.procs.insert(
                        pid,
                        GoProcess {
                            target,
                            state: GoState::default(),
                            last_walk: Mutex::new(None),
                        },
                    );
                }
                Err(binary::OpenError::NotGo) => {
                    eprintln!("timerwatch: note: pid {pid} is not a Go program: kernel timers only")
                }
                Err(binary::OpenError::Gone) => {}
                Err(binary::OpenError::Unsupported(why)) => {
                    eprintln!("timerwatch: error: pid {pid}: Go timers not traced: {why}")
                }
            }
        }
        tracer
    }

    pub fn apply(&mut self, r: &Record) {
        if matches!(r.kind, EventKind::ProcessExit | EventKind::ProcessExec) {
            // An exec'd process runs another binary; the probes stay on the old inode, harmless.
            self.procs.remove(&r.tgid);
            return;
        }
        if let Some(p) = self.procs.get_mut(&r.tgid) {
            p.state.apply(r, &mut p.target);
        }
    }

    /// Add Go callsites, `go_version` and `go_heap_timers` to `report`'s processes.
    pub fn merge(&self, report: &mut Report, now_ns: u64) {
        merge::merge(&self.procs, report, now_ns);
    }
}
