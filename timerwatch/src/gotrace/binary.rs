//! The adapter between binary analysis (`timerwatch_go`) and tracing: a traced Go process's probe
//! points as kernel recipes, its heap walk, and names for its stacks and callbacks.

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use timerwatch_common::{pt_regs, EventKind, GoArg, GoRecipe};
use timerwatch_go::{self as go, heap, GoBinary, ProbeRole, Reg, RoleRegs};
use timerwatch_proc::mem::ProcMem;

use super::{attach::Point, state::Namer};
use crate::report::Kind;

pub enum OpenError {
    /// Not a Go binary at all: kernel tracing only, with a note.
    NotGo,
    /// The process exited before we looked.
    Gone,
    /// A Go binary we cannot trace (version, stripped of pclntab, malformed).
    Unsupported(String),
}

/// A heap walk's result: the `*runtime.timer` of every live heap entry.
#[derive(Clone, Debug, Default)]
pub struct Walk {
    pub timers: Vec<u64>,
    /// When it was taken (CLOCK_MONOTONIC ns): timers armed later are not in it.
    pub at_ns: u64,
}

pub struct Target {
    pid: u32,
    /// As recorded in the binary, e.g. "go1.22.10".
    pub version: String,
    bin: Arc<GoBinary>,
    /// Runtime address − link-time address (0 unless PIE).
    bias: u64,
    mem: ProcMem,
    kinds: HashMap<u64, Kind>,
}

fn arg(reg: Option<Reg>, offset: i64) -> GoArg {
    match reg {
        Some(r) => GoArg {
            reg: r.pt_regs_index() as u8 + 1,
            deref: 0,
            _pad: [0; 2],
            offset: offset as i32,
        },
        None => GoArg::default(),
    }
}

/// A field of the timer the probe got: `*(timer register + adjust + field)`.
fn field(regs: &RoleRegs, field: u32) -> GoArg {
    match regs.timer {
        Some(r) => GoArg {
            reg: r.pt_regs_index() as u8 + 1,
            deref: 1,
            _pad: [0; 2],
            offset: (regs.timer_adjust + i64::from(field)) as i32,
        },
        None => GoArg::default(),
    }
}

/// Full analyses of Go binaries this process ran (successful or not): the per-binary cache's
/// effect made visible, e.g. fifty pods of one image must cost one. Process-wide because the
/// daemon's /metrics reports it and tracers come and go with sessions.
static ANALYZED: AtomicU64 = AtomicU64::new(0);

/// How many Go binary analyses have run in this process.
pub fn binaries_analyzed() -> u64 {
    ANALYZED.load(Ordering::Relaxed)
}

thread_local! {
    /// Every analysis alive on this thread, by file (device, inode): the census and the
    /// symbolizer (which names the kernel-timer stacks of the same Go processes) share one
    /// rather than each holding its own pclntab (14 MiB for Prometheus). Weak: an analysis
    /// lives as long as one of its users holds it.
    static LIVE: RefCell<HashMap<(u64, u64), Weak<GoBinary>>> = RefCell::new(HashMap::new());
}

/// Analyse the binary at `path` (a file, `/proc/PID/exe`, a `map_files` link), or share the
/// analysis of the same file that is still in use.
pub fn analyze(path: &Path) -> Result<Arc<GoBinary>, OpenError> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Err(OpenError::Gone);
    };
    let id = (meta.dev(), meta.ino());
    if let Some(bin) = LIVE.with_borrow(|live| live.get(&id).and_then(Weak::upgrade)) {
        return Ok(bin);
    }
    ANALYZED.fetch_add(1, Ordering::Relaxed);
    let bin = go::analyze(path).map(Arc::new).map_err(|e| match e {
        go::Error::NotGo => OpenError::NotGo,
        other => OpenError::Unsupported(other.to_string()),
    })?;
    LIVE.with_borrow_mut(|live| {
        live.retain(|_, b| b.strong_count() > 0);
        live.insert(id, Arc::downgrade(&bin));
    });
    Ok(bin)
}

impl Target {
    /// `pid`, which runs `bin` now (its mappings give the load bias).
    pub fn running(pid: u32, bin: Arc<GoBinary>) -> Result<Target, OpenError> {
        let exe = format!("/proc/{pid}/exe");
        let bias = heap::load_bias(pid, exe.as_ref()).map_err(|_| OpenError::Gone)?;
        Ok(Self::with_bias(pid, bin, bias))
    }

    /// `pid`, which is about to exec `bin`: a fixed-address (non-PIE) binary's bias is 0
    /// before it is even mapped. `None` for PIE, whose bias exists only after the exec.
    pub fn before_exec(pid: u32, bin: Arc<GoBinary>) -> Option<Target> {
        (!bin.pie).then(|| Self::with_bias(pid, bin, 0))
    }

    fn with_bias(pid: u32, bin: Arc<GoBinary>, bias: u64) -> Target {
        Target {
            pid,
            version: bin.version_string.clone(),
            bin,
            bias,
            mem: ProcMem::new(pid),
            kinds: HashMap::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn bias(&self) -> u64 {
        self.bias
    }

    pub fn binary(&self) -> &go::GoBinary {
        &self.bin
    }

    /// One word of the process's memory.
    pub fn read_u64(&self, addr: u64) -> std::io::Result<u64> {
        self.mem.read_u64(addr)
    }

    /// Every probe point with the recipe the kernel needs there.
    pub fn points(&self) -> Vec<Point> {
        let layout = &self.bin.layout;
        let sym = &self.bin.kinds;
        let pcs = [sym.send_time, sym.go_func].map(|a| a.map_or(0, |a| a + self.bias));
        self.bin
            .probes
            .iter()
            .filter_map(|p| {
                let regs = layout.regs_for(p.role)?;
                let get = |reg: Option<Reg>, off: u32| match reg {
                    Some(_) => arg(reg, 0),
                    None => field(regs, off),
                };
                let mut recipe = GoRecipe {
                    timer: arg(regs.timer, regs.timer_adjust),
                    when: get(regs.when, layout.timer_when),
                    period: get(regs.period, layout.timer_period),
                    f: get(regs.f, layout.timer_f),
                    ..GoRecipe::default()
                };
                recipe.kind = match p.role {
                    ProbeRole::Create => EventKind::GoCreate,
                    ProbeRole::Modify => EventKind::GoModify,
                    ProbeRole::Stop => EventKind::GoStop,
                    ProbeRole::Fire => EventKind::GoFire,
                    ProbeRole::Sleep => {
                        // The goroutine's timer: `g.timer`, with g in R14 throughout Go code.
                        recipe.timer = GoArg {
                            reg: pt_regs::R14 + 1,
                            deref: 1,
                            _pad: [0; 2],
                            // `runtime.g.timer`, the goroutine's reusable Sleep timer.
                            offset: self.bin.runtime.g_timer as i32,
                        };
                        recipe.when = GoArg::default();
                        recipe.period = GoArg::default();
                        recipe.f = GoArg::default();
                        EventKind::GoSleep
                    }
                } as u8;
                if p.role == ProbeRole::Modify && self.bin.version.new_timers() {
                    // 1.23+ has no creation hook with the pointer: `time.newTimer`'s call to
                    // modify is the only one passing package-time callbacks.
                    recipe.create_if_f = 1;
                    recipe.create_pcs = pcs;
                }
                Some(Point {
                    name: p.symbol.clone(),
                    file_offset: p.offset,
                    recipe,
                })
            })
            .collect()
    }

    pub fn walk(&self) -> Result<Walk, go::Error> {
        // Before reading: a timer armed during the walk may or may not be in it.
        let at_ns = crate::procfs::monotonic_ns();
        let budget = super::walk_budget::start();
        let mem = ProcMem::with_budget(self.pid, budget.clone());
        let snap = heap::walk_detailed_in(&mem, &self.bin, self.bias);
        if let Some(why) = super::walk_budget::CutShort::of(&budget) {
            super::walk_budget::count(why);
        }
        let snap = heap::HeapSnapshot::from(snap?);
        Ok(Walk {
            timers: snap.timers.iter().map(|t| t.timer).collect(),
            at_ns,
        })
    }
}

impl Namer for Target {
    fn kind(&mut self, timer: u64, f: u64, period: u64) -> Kind {
        // Reset and Sleep re-arms pass no callback: the timer's own is in its `f` field.
        let f = if f != 0 {
            f
        } else {
            self.mem
                .read_u64(timer + u64::from(self.bin.layout.timer_f))
                .unwrap_or(0)
        };
        let key = f ^ u64::from(period != 0);
        if let Some(&k) = self.kinds.get(&key) {
            return k;
        }
        let pc = if f == 0 {
            0
        } else {
            self.mem.read_u64(f).unwrap_or(0)
        };
        let kind = self
            .bin
            .kinds
            .classify(pc.wrapping_sub(self.bias), period as i64)
            .into();
        if pc != 0 {
            self.kinds.insert(key, kind);
        }
        kind
    }

    fn stack(&mut self, frames: &[u64]) -> (Option<String>, Vec<String>) {
        let resolved: Vec<go::GoFrame> = frames
            .iter()
            .enumerate()
            .flat_map(|(i, &pc)| {
                // Return addresses point after the call; the call's line is one byte back.
                let pc = pc.wrapping_sub(self.bias).wrapping_sub(u64::from(i > 0));
                self.bin.symbolize_inline(pc)
            })
            .collect();
        let names = resolved.iter().map(display).collect();
        (go::go_caller(&resolved), names)
    }
}

fn display(f: &go::GoFrame) -> String {
    let file = f.file.as_deref().map(|p| p.rsplit('/').next().unwrap_or(p));
    match (file, f.line) {
        (Some(file), Some(line)) => format!("{} ({file}:{line})", f.function),
        _ => f.function.clone(),
    }
}
