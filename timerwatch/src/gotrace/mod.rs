//! Go runtime timers of the traced processes, in one of two modes.
//!
//! Go timers never reach the kernel's timer tracepoints: the runtime keeps them in per-P heaps
//! and sleeps until the earliest. [`discovery`] finds the Go processes a run admits, at start-up
//! and as they exec; `timerwatch_go` (binary analysis, cached per binary) gives layouts and probe
//! points. In probes mode (`-p`/`--comm` by default) [`attach`] puts the kernel's `go_timer`
//! program on the runtime's timer functions, [`state`] keeps per-callsite counts and [`merge`]
//! adds Go callsites with live counts from a heap walk. In census mode (unfiltered runs and the
//! daemon by default) nothing is attached: at every report [`census_walk`] reads the heaps and
//! [`census`] names each pending timer from its own fields. Every walk of a process's memory,
//! in either mode, stays within the time and bytes of [`walk_budget`].

mod attach;
mod binary;
pub mod census;
mod census_walk;
mod cost;
pub mod discovery;
mod rows;
pub mod state;
mod waiters;
pub mod walk_budget;
mod window;

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Weak};

use aya::Ebpf;
use serde::Serialize;
use timerwatch_common::EventKind;

use timerwatch_go::GoBinary;

use crate::{event::Record, report::SourceRow, sample::CallsiteSample};

pub use self::binary::{analyze as analyze_binary, binaries_analyzed, OpenError};
pub use self::cost::{cpu_seconds as census_cpu_seconds, walks as census_walks};
pub use self::walk_budget::walks_cut;
pub use self::window::wants_stacks;
use self::{
    binary::Target,
    census::WaiterWalk,
    census_walk::{CensusState, Incarnation},
    discovery::Discovery,
    state::GoState,
};

/// How Go timers are traced (see the module comment).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Uprobes on the runtime's timer functions: creation stacks and exact per-operation
    /// totals, at a trap per timer operation in the target.
    #[default]
    Probes,
    /// Heap walks at report time only: nothing runs in the target.
    Census,
}

struct GoProcess {
    target: Target,
    /// Census mode's memory of this process, and which exec of it that is; `None` in probes
    /// mode.
    census: Option<(CensusState, Incarnation)>,
    /// Census mode: what the last [`GoTracer::walk`] found; `None` when it was torn, which
    /// leaves the process out of the report rather than misreport it.
    census_now: Option<census_walk::Census>,
    state: GoState,
    /// Census mode: the creation-stack window open on it, and when the last one opened.
    window: Option<window::Open>,
    last_window_ns: Option<u64>,
    /// The last heap walk that succeeded: a walk can fail mid-way (a torn read while the
    /// runtime resizes a heap), and one failure should not blank the report.
    last_walk: Option<binary::Walk>,
}

/// Analyses kept after their last process exits (most recently used first).
const RECENT_BINARIES: usize = 8;

#[derive(Default)]
pub struct GoTracer {
    attacher: attach::Attacher,
    procs: HashMap<u32, GoProcess>,
    /// Analyses by (device, inode), failures included: the N children of one binary cost one
    /// analysis. Held weakly: an analysis (pclntab and all, megabytes for a large server)
    /// lives as long as a traced process of its binary, not for as long as the daemon runs
    /// after every such process has gone (a node that runs many short-lived Go binaries).
    binaries: HashMap<(u64, u64), Option<Weak<GoBinary>>>,
    /// The last few analyses used, held strongly past their processes: short-lived Go
    /// processes of one binary (a cron job, a crash-looping pod, a `go` command) would
    /// otherwise cost an analysis each. Bounded by [`RECENT_BINARIES`].
    recent: std::collections::VecDeque<Arc<GoBinary>>,
    /// Trace the Go binaries that traced processes exec (`run` follows descendants).
    follow: bool,
    verbose: bool,
    /// Attached before their exec: their next exec record is the one the probes wait for.
    awaiting_exec: HashSet<u32>,
    /// Exec'd since the last [`GoTracer::attach_execs`].
    execed: Vec<u32>,
    mode: Mode,
    /// Processes to pick up as they exec (`None`: only the ones given at start, and `run`'s).
    discovery: Option<Discovery>,
    /// Names the goroutines waiting on census timers, when one is installed.
    waiters: Option<WaiterWalk>,
    /// `--go-sample-window`, ns (0: no creation-stack windows).
    window_ns: u64,
    /// Links of windows whose process exited or exec'd, to detach.
    orphan_links: Vec<aya::programs::uprobe::UProbeLinkId>,
}

fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
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
    let opened = binary::analyze(Path::new(&format!("/proc/{pid}/exe")))
        .and_then(|bin| Target::running(pid, bin));
    match opened {
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
    /// Every Go process `discovery` admits, now and as they exec, traced in `mode`. What
    /// cannot be traced gets one line per binary on stderr (none for processes that are not
    /// Go at all) and kernel tracing only.
    pub fn discover(ebpf: &mut Ebpf, mode: Mode, discovery: Discovery, verbose: bool) -> Self {
        let mut tracer = Self {
            verbose,
            mode,
            waiters: Some(waiters::walk),
            ..Self::default()
        };
        let explicit = discovery.pids.clone();
        for pid in discovery.current() {
            match tracer.add(ebpf, pid) {
                Ok(()) | Err(OpenError::Gone) => {}
                Err(OpenError::NotGo) if explicit.contains(&pid) => {
                    eprintln!("timerwatch: note: pid {pid} is not a Go program: kernel timers only")
                }
                Err(OpenError::NotGo) => {}
                Err(OpenError::Unsupported(why)) => {
                    eprintln!("timerwatch: error: pid {pid}: Go timers not traced: {why}")
                }
            }
        }
        tracer.discovery = Some(discovery);
        tracer
    }

    /// Census mode: give processes whose growing callsites only a signature names a
    /// creation-stack window of `secs` (see `window`); 0 turns windows off.
    pub fn set_sample_window(&mut self, secs: f64) {
        self.window_ns = (secs.max(0.0) * 1e9) as u64;
    }

    pub fn samples_windows(&self) -> bool {
        self.window_ns > 0
    }

    /// Open a window on each census process of `wanting` (see `window::wants_stacks`) that
    /// may have one now.
    pub fn open_windows(&mut self, ebpf: &mut Ebpf, wanting: &[u32]) {
        if self.window_ns == 0 {
            return;
        }
        let now = crate::procfs::monotonic_ns();
        for &pid in wanting {
            let Some(p) = self.procs.get_mut(&pid) else {
                continue;
            };
            if p.census.is_none()
                || p.window.is_some()
                || !window::may_open(p.last_window_ns, now, self.window_ns)
            {
                continue;
            }
            p.last_window_ns = Some(now);
            let exe = format!("/proc/{}/exe", pid);
            let key = file_id(exe.as_ref()).map(|(dev, ino)| (dev, ino, p.target.bias()));
            match self
                .attacher
                .attach(ebpf, pid, &exe, &p.target.points(), key)
            {
                Ok(links) => {
                    if self.verbose {
                        eprintln!(
                            "timerwatch: pid {}: Go creation-stack window opened for {:.1} s",
                            pid,
                            self.window_ns as f64 / 1e9
                        );
                    }
                    p.window = Some(window::Open {
                        until_ns: now + self.window_ns,
                        links,
                        hits: 0,
                    });
                }
                Err(e) if self.verbose => {
                    eprintln!(
                        "timerwatch: pid {}: no Go creation-stack window: {e:#}",
                        pid
                    )
                }
                Err(_) => {}
            }
        }
    }

    /// Take the probes off every window that has run its time or spent its budget.
    pub fn close_windows(&mut self, ebpf: &mut Ebpf) {
        if !self.orphan_links.is_empty() {
            self.attacher
                .detach(ebpf, std::mem::take(&mut self.orphan_links));
        }
        let now = crate::procfs::monotonic_ns();
        for (pid, p) in &mut self.procs {
            if !p.window.as_ref().is_some_and(|w| w.due(now)) {
                continue;
            }
            let Some(w) = p.window.take() else { continue };
            if self.verbose {
                eprintln!(
                    "timerwatch: pid {pid}: Go creation-stack window closed after {} probe hits",
                    w.hits
                );
            }
            self.attacher.detach(ebpf, w.links);
        }
    }

    /// Analyse each target and attach to the Go ones. What cannot be traced gets one line on
    /// stderr and kernel tracing only; nothing here fails the session. `verbose`: one line per
    /// probe attached.
    pub fn start(ebpf: &mut Ebpf, pids: &[u32], verbose: bool) -> Self {
        let mut tracer = Self {
            verbose,
            ..Self::default()
        };
        for &pid in pids {
            match tracer.add(ebpf, pid) {
                Ok(()) | Err(OpenError::Gone) => {}
                Err(OpenError::NotGo) => {
                    eprintln!("timerwatch: note: pid {pid} is not a Go program: kernel timers only")
                }
                Err(OpenError::Unsupported(why)) => {
                    eprintln!("timerwatch: error: pid {pid}: Go timers not traced: {why}")
                }
            }
        }
        tracer
    }

    /// For `run`: `pid`, held before its exec of `exe`, traced from its first instruction
    /// (see [`GoTracer::prepare_exec`]), the running `others`, and every Go binary any traced
    /// process execs later.
    pub fn launch(ebpf: &mut Ebpf, others: &[u32], pid: u32, exe: &Path, verbose: bool) -> Self {
        let mut tracer = Self::start(ebpf, others, verbose);
        tracer.follow = true;
        if let Err(OpenError::Unsupported(why)) = tracer.prepare_exec(ebpf, pid, exe) {
            eprintln!(
                "timerwatch: error: {}: Go timers not traced: {why}",
                exe.display()
            );
        }
        tracer
    }

    /// The cached analysis of the binary `path` names.
    fn analysis(&mut self, path: &Path) -> Result<Arc<GoBinary>, OpenError> {
        let id = file_id(path).ok_or(OpenError::Gone)?;
        match self.binaries.get(&id) {
            Some(None) => return Err(OpenError::NotGo),
            Some(Some(bin)) => {
                if let Some(bin) = bin.upgrade() {
                    self.keep_recent(&bin);
                    return Ok(bin);
                }
            }
            None => {}
        }
        if !discovery::may_be_go(path) {
            self.binaries.insert(id, None);
            return Err(OpenError::NotGo);
        }
        let result = binary::analyze(path);
        match &result {
            Ok(bin) => {
                self.binaries.insert(id, Some(Arc::downgrade(bin)));
                self.keep_recent(bin);
            }
            // Said once, by the caller: later processes of this binary get NotGo, silently.
            Err(OpenError::Unsupported(_) | OpenError::NotGo) => {
                self.binaries.insert(id, None);
            }
            Err(OpenError::Gone) => {}
        }
        result
    }

    fn keep_recent(&mut self, bin: &Arc<GoBinary>) {
        self.recent.retain(|b| !Arc::ptr_eq(b, bin));
        if self.recent.len() == RECENT_BINARIES {
            self.recent.pop_back();
        }
        self.recent.push_front(bin.clone());
    }

    fn attach(
        &mut self,
        ebpf: &mut Ebpf,
        target: Target,
        exe: &str,
        id: Option<(u64, u64)>,
    ) -> Result<(), OpenError> {
        let pid = target.pid();
        if self.mode == Mode::Census {
            let found = Incarnation::of(&target).ok_or(OpenError::Gone)?;
            self.procs.insert(
                pid,
                GoProcess {
                    target,
                    census: Some((CensusState::default(), found)),
                    census_now: None,
                    state: GoState::default(),
                    window: None,
                    last_window_ns: None,
                    last_walk: None,
                },
            );
            return Ok(());
        }
        let points = target.points();
        let key = id.map(|(dev, ino)| (dev, ino, target.bias()));
        if let Err(e) = self.attacher.attach(ebpf, pid, exe, &points, key) {
            return Err(OpenError::Unsupported(format!("{e:#}")));
        }
        if self.verbose {
            for p in &points {
                eprintln!(
                    "timerwatch: pid {pid}: Go uprobe on {} at file offset {:#x} of {exe}",
                    p.name, p.file_offset
                );
            }
        }
        self.procs.insert(
            pid,
            GoProcess {
                target,
                census: None,
                census_now: None,
                state: GoState::default(),
                window: None,
                last_window_ns: None,
                last_walk: None,
            },
        );
        Ok(())
    }

    /// Trace the Go timers of `pid`, which runs its binary now.
    pub fn add(&mut self, ebpf: &mut Ebpf, pid: u32) -> Result<(), OpenError> {
        // `/proc/PID/exe` is the file the process maps, through its own mount namespace: a
        // container's binary, not whatever the host has at that path.
        let exe = format!("/proc/{pid}/exe");
        let id = file_id(exe.as_ref());
        let bin = self.analysis(exe.as_ref())?;
        let target = Target::running(pid, bin)?;
        self.attach(ebpf, target, &exe, id)
    }

    /// Trace the Go timers of `pid`, held before its exec of `path`, from its first
    /// instruction: uprobes registered for a pid on a file are planted when the exec maps it.
    /// A PIE binary's addresses are known only once mapped: it is attached at its exec record.
    fn prepare_exec(&mut self, ebpf: &mut Ebpf, pid: u32, path: &Path) -> Result<(), OpenError> {
        let bin = self.analysis(path)?;
        let Some(target) = Target::before_exec(pid, bin) else {
            return Ok(());
        };
        let exe = path.to_string_lossy().into_owned();
        self.attach(ebpf, target, &exe, file_id(path))?;
        self.awaiting_exec.insert(pid);
        Ok(())
    }

    pub fn apply(&mut self, r: &Record) {
        match r.kind {
            EventKind::ProcessExec if self.awaiting_exec.remove(&r.tgid) => {}
            EventKind::ProcessExit | EventKind::ProcessExec => {
                // An exec'd process runs another binary; the probes stay on the old inode,
                // harmless. A window's links are taken off at the next `close_windows`.
                if let Some(w) = self.procs.remove(&r.tgid).and_then(|p| p.window) {
                    self.orphan_links.extend(w.links);
                }
                self.awaiting_exec.remove(&r.tgid);
                let found = || self.discovery.as_ref().is_some_and(|d| d.admits(r.tgid));
                if r.kind == EventKind::ProcessExec && (self.follow || found()) {
                    self.execed.push(r.tgid);
                }
            }
            // Only the probes' own records: every kernel record of the host passes here, and a
            // window's hits count probe hits.
            EventKind::GoCreate
            | EventKind::GoModify
            | EventKind::GoStop
            | EventKind::GoFire
            | EventKind::GoSleep => {
                if let Some(p) = self.procs.get_mut(&r.tgid) {
                    if let Some(w) = &mut p.window {
                        w.hits += 1;
                    }
                    p.state.apply(r, &mut p.target);
                }
            }
            _ => {}
        }
    }

    /// Whether records should be applied within `session::PROMPT_DRAIN`: uprobes are
    /// attached to Go processes as they exec (the later, the more of their first timers are
    /// missed), or a creation-stack window is open (its hit budget is checked as records are
    /// applied, and every hit is a trap in the target).
    pub fn needs_prompt_drain(&self) -> bool {
        (self.mode == Mode::Probes && (self.follow || self.discovery.is_some()))
            || self.procs.values().any(|p| p.window.is_some())
    }

    /// Attach to the Go binaries exec'd since the last call (when following). Timers such a
    /// process creates between its exec and this attach are seen by the heap walk only, as
    /// pre-existing.
    pub fn attach_execs(&mut self, ebpf: &mut Ebpf) {
        for pid in std::mem::take(&mut self.execed) {
            match self.add(ebpf, pid) {
                Ok(()) | Err(OpenError::Gone | OpenError::NotGo) => {}
                Err(OpenError::Unsupported(why)) => {
                    eprintln!("timerwatch: error: pid {pid}: Go timers not traced: {why}")
                }
            }
        }
    }

    /// Read every traced Go process's runtime memory (timer heaps, and in census mode its
    /// goroutines): the I/O behind the next [`GoTracer::rows`], kept apart from it so that
    /// building a report reads nothing.
    pub fn walk(&mut self, now_ns: u64) {
        rows::walk(&mut self.procs, now_ns, self.waiters);
    }

    /// Every traced process's Go row from the last [`GoTracer::walk`], for
    /// `report::assemble`.
    pub fn rows(&self, now_ns: u64) -> Vec<SourceRow> {
        rows::rows(&self.procs, now_ns)
    }

    /// Every traced process's Go callsites from the last [`GoTracer::walk`], for the trend
    /// test (`crate::sample`).
    pub fn samples(&self) -> Vec<(u32, Vec<CallsiteSample>)> {
        rows::samples(&self.procs)
    }

    /// `pid`'s Go row as it exits, with `live` the timers still pending (see
    /// [`GoState::pending_at_exit`]); None for a process not traced as Go. Call before its
    /// exit record is applied.
    pub fn exit_row(&self, pid: u32, now_ns: u64) -> Option<SourceRow> {
        self.procs.get(&pid).map(|p| rows::exit_row(pid, p, now_ns))
    }
}
