//! Loading the eBPF object, attaching it to the timer and sched tracepoints, and owning it.
//!
//! Nothing is pinned: every program, link and map lives in this process's file descriptors, so
//! dropping [`Probes`] (or any exit, even a crash) leaves nothing loaded behind.

pub mod btf;
pub mod format;
pub mod privileges;
pub mod startup_checks;
pub mod tracefs;

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use aya::{
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, TracePoint},
    Ebpf, EbpfLoader,
};
use timerwatch_common::{names, Config, IrqRanges, KernelOffsets, Owner, COMM_LEN, IRQ_RANGES};

use self::{
    btf::KernelBtf,
    format::{Format, Formats},
};

/// Environment variable that picks how the kernel probes attach: `classic`, `btf`, or `auto`
/// (unset: BTF-enabled raw tracepoints where the kernel has BTF, classic ones elsewhere).
pub const ATTACH_ENV: &str = "TIMERWATCH_ATTACH";

/// How the timer and scheduler programs are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttachPath {
    /// BTF-enabled raw tracepoints (`tp_btf`): no perf trace record is filled per event.
    Btf,
    /// Classic tracepoints reading the `format` record, and why BTF is not used.
    Classic(String),
}

impl std::fmt::Display for AttachPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttachPath::Btf => write!(
                f,
                "BTF raw tracepoints (tp_btf), struct offsets from {}",
                btf::VMLINUX_BTF
            ),
            AttachPath::Classic(why) => write!(f, "classic tracepoints ({why})"),
        }
    }
}

/// The kernel's types, for attaching `tp_btf` programs (aya) and for reading struct layouts.
struct BtfTypes {
    attach: aya::Btf,
    layout: KernelBtf,
    offsets: KernelOffsets,
}

/// What the kernel offers and what `TIMERWATCH_ATTACH` asks for → the path and, for BTF, the
/// kernel's types and the offsets the programs read.
fn choose_path(requested: Option<&str>) -> Result<(AttachPath, Option<BtfTypes>)> {
    let forced = match requested.unwrap_or("auto") {
        "auto" | "" => false,
        "btf" => true,
        "classic" => return Ok((AttachPath::Classic(format!("{ATTACH_ENV}=classic")), None)),
        other => {
            return Err(crate::failure::Failure::bad_input(format!(
                "{ATTACH_ENV}={other:?}: expected classic, btf or auto"
            ))
            .into())
        }
    };
    let open = || -> Result<_> {
        let path = Path::new(btf::VMLINUX_BTF);
        let layout = KernelBtf::open(path)?;
        let offsets = layout.offsets()?;
        let attach = aya::Btf::from_sys_fs().context("reading the kernel's BTF")?;
        Ok(BtfTypes {
            attach,
            layout,
            offsets,
        })
    };
    match open() {
        Ok(btf) => Ok((AttachPath::Btf, Some(btf))),
        Err(e) if forced => Err(e.context(format!("{ATTACH_ENV}=btf"))),
        Err(e) => Ok((
            AttachPath::Classic(format!("no usable kernel BTF: {e:#}")),
            None,
        )),
    }
}

/// Which processes to trace. Empty lists mean "all".
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub tgids: Vec<u32>,
    pub comms: Vec<String>,
    /// Attach the scheduler probes that attribute wake-ups to timers.
    pub wakeups: bool,
    /// Count re-arms in the kernel instead of sending each cancel and start.
    pub count_rearms: bool,
    /// Trace the children of traced processes too (`timerwatch run`).
    pub follow_children: bool,
    /// Copy user stacks at first arms for CFI unwinding (`--no-stack-copy` turns it off).
    pub copy_user_stack: bool,
}

/// Whether a tracepoint must exist for timerwatch to run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Need {
    Required,
    /// Missing on some kernels (syscall tracepoints need CONFIG_FTRACE_SYSCALLS): what it would
    /// show is reported as unseen.
    Optional,
    /// The scheduler view; skipped with `--no-wakeups`.
    Wakeups,
    /// Following children (`run` only): required there, not attached elsewhere.
    Follow,
}

/// One program and the tracepoints it may attach to, in order of preference.
struct Attachment {
    program: &'static str,
    category: &'static str,
    names: &'static [&'static str],
    need: Need,
}

const fn tp(
    program: &'static str,
    category: &'static str,
    names: &'static [&'static str],
    need: Need,
) -> Attachment {
    Attachment {
        program,
        category,
        names,
        need,
    }
}

use Need::{Follow, Optional, Required, Wakeups};

#[rustfmt::skip]
const ATTACHMENTS: &[Attachment] = &[
    // Renamed in 6.15; either carries the `hrtimer` address.
    tp("hrtimer_init", "timer", &["hrtimer_setup", "hrtimer_init"], Required),
    tp("hrtimer_start", "timer", &["hrtimer_start"], Required),
    tp("hrtimer_cancel", "timer", &["hrtimer_cancel"], Required),
    tp("hrtimer_expire_entry", "timer", &["hrtimer_expire_entry"], Required),
    tp("timer_init", "timer", &["timer_init"], Required),
    tp("timer_start", "timer", &["timer_start"], Required),
    tp("timer_cancel", "timer", &["timer_cancel"], Required),
    tp("timer_expire_entry", "timer", &["timer_expire_entry"], Required),
    tp("itimer_state", "timer", &["itimer_state"], Optional),
    tp("itimer_expire", "timer", &["itimer_expire"], Optional),
    tp("sched_process_exit", "sched", &["sched_process_exit"], Required),
    tp("sched_process_exec", "sched", &["sched_process_exec"], Required),
    tp("sched_process_fork", "sched", &["sched_process_fork"], Follow),
    // Without these POSIX timers count only while armed.
    tp("sys_enter_timer_create", "syscalls", &["sys_enter_timer_create"], Optional),
    tp("sys_exit_timer_create", "syscalls", &["sys_exit_timer_create"], Optional),
    tp("sys_enter_timer_delete", "syscalls", &["sys_enter_timer_delete"], Optional),
    tp("hrtimer_expire_exit", "timer", &["hrtimer_expire_exit"], Wakeups),
    tp("timer_expire_exit", "timer", &["timer_expire_exit"], Wakeups),
    tp("sched_waking", "sched", &["sched_waking"], Wakeups),
    tp("sched_switch", "sched", &["sched_switch"], Wakeups),
];

/// Whether `a` has a BTF-enabled raw tracepoint twin (`<program>_btf`). Syscall tracepoints
/// have none: their raw form is the one `sys_enter` for every syscall.
fn has_btf_twin(a: &Attachment) -> bool {
    a.category != "syscalls"
}

/// Which name of each tracepoint exists here.
fn resolve(tracefs: &Path, a: &Attachment) -> Option<(&'static str, String)> {
    a.names
        .iter()
        .find_map(|n| tracefs::read_format(tracefs, a.category, n).map(|text| (*n, text)))
}

fn read_formats(tracefs: &Path) -> Result<Formats> {
    let get = |program: &str| -> Option<Format> {
        let a = ATTACHMENTS.iter().find(|a| a.program == program)?;
        resolve(tracefs, a).map(|(_, text)| Format::parse(&text))
    };
    let req = |program: &str| -> Result<Format> {
        let a = ATTACHMENTS
            .iter()
            .find(|a| a.program == program)
            .expect("known program");
        get(program).ok_or_else(|| {
            anyhow!(
                "this kernel has no tracepoint {}:{}",
                a.category,
                a.names.join(" or ")
            )
        })
    };
    Ok(Formats {
        hrtimer_init: req("hrtimer_init")?,
        hrtimer_start: req("hrtimer_start")?,
        hrtimer_cancel: req("hrtimer_cancel")?,
        hrtimer_expire_entry: req("hrtimer_expire_entry")?,
        timer_init: req("timer_init")?,
        timer_start: req("timer_start")?,
        timer_cancel: req("timer_cancel")?,
        timer_expire_entry: req("timer_expire_entry")?,
        itimer_state: get("itimer_state"),
        itimer_expire: get("itimer_expire"),
        sched_process_exit: req("sched_process_exit")?,
        sched_process_fork: get("sched_process_fork"),
        sys_enter_timer_create: get("sys_enter_timer_create"),
        sys_exit_timer_create: get("sys_exit_timer_create"),
        sys_enter_timer_delete: get("sys_enter_timer_delete"),
        sched_waking: get("sched_waking"),
        sched_switch: get("sched_switch"),
    })
}

fn comm_key(comm: &str) -> [u8; COMM_LEN] {
    // The kernel keeps TASK_COMM_LEN - 1 bytes and a NUL; match what bpf_get_current_comm returns.
    let mut key = [0u8; COMM_LEN];
    let bytes = comm.as_bytes();
    let n = bytes.len().min(COMM_LEN - 1);
    key[..n].copy_from_slice(&bytes[..n]);
    key
}

/// The kernel's interrupt and softirq entry points (see `timerwatch_common::IrqRanges`).
const IRQ_FUNCTIONS: [&str; IRQ_RANGES] = [
    "hrtimer_interrupt",
    "__hrtimer_run_queues",
    "hrtimer_run_softirq",
    "handle_softirqs",
    "__do_softirq",
    "call_timer_fn",
    "__run_timers",
    "run_timer_softirq",
    "__sysvec_apic_timer_interrupt",
    "irq_exit_rcu",
    "common_interrupt",
    "tmigr_handle_remote",
];

/// Text symbols of /proc/kallsyms (root sees real addresses), sorted by address.
fn kallsyms() -> Vec<(u64, String)> {
    let text = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
    let mut syms: Vec<(u64, String)> = text
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let addr = u64::from_str_radix(parts.next()?, 16).ok()?;
            let kind = parts.next()?;
            let name = parts.next()?;
            (addr != 0 && matches!(kind, "t" | "T")).then(|| (addr, name.to_string()))
        })
        .collect();
    syms.sort_unstable();
    syms
}

/// [start, end) of each named function that exists, end being the next symbol's address.
fn function_ranges(syms: &[(u64, String)], names: &[&str]) -> IrqRanges {
    let mut out = [[0u64; 2]; IRQ_RANGES];
    let mut slots = out.iter_mut();
    for (i, (addr, name)) in syms.iter().enumerate() {
        if names.contains(&name.as_str()) {
            let end = syms[i + 1..].iter().map(|s| s.0).find(|&a| a > *addr);
            if let (Some(slot), Some(end)) = (slots.next(), end) {
                *slot = [*addr, end];
            }
        }
    }
    out
}

/// Loaded and attached probes. Dropping this detaches and unloads everything.
pub struct Probes {
    ebpf: Ebpf,
    /// How the timer and scheduler programs are attached (`--verbose` prints it).
    pub attach: AttachPath,
    /// Tracepoints that this kernel lacks (optional ones only); reported once at start-up.
    pub missing: Vec<String>,
}

pub const DEFAULT_RING_BYTES: u32 = 8 << 20;

impl Probes {
    pub fn load(filter: &Filter, ring_bytes: u32) -> Result<Self> {
        let tracefs = tracefs::ensure_mounted()?;
        let formats = read_formats(&tracefs)?;
        let (attach, btf) = choose_path(std::env::var(ATTACH_ENV).ok().as_deref())?;
        let syms = kallsyms();
        let irq_ranges = function_ranges(&syms, &IRQ_FUNCTIONS);
        let config = Config {
            self_tgid: std::process::id(),
            filter_tgid: (!filter.tgids.is_empty()) as u32,
            filter_comm: (!filter.comms.is_empty()) as u32,
            // A quarter of the ring: the reader also drains on a 50 ms timer, so this only matters
            // for bursts that would otherwise overflow the ring before the timer fires.
            wakeup_bytes: ring_bytes / 4,
            count_rearms: filter.count_rearms as u32,
            follow_children: filter.follow_children as u32,
            copy_user_stack: filter.copy_user_stack as u32,
            _pad: 0,
            sleeper_fn: syms
                .iter()
                .find(|s| s.1 == "hrtimer_wakeup")
                .map_or(0, |s| s.0),
            offsets: formats.offsets()?,
            kernel: btf.as_ref().map(|b| b.offsets).unwrap_or_default(),
        };
        let mut ebpf = EbpfLoader::new()
            .override_global(names::CONFIG, &config, true)
            .override_global(names::IRQ_RANGES, &irq_ranges, true)
            .map_max_entries(names::EVENTS, ring_bytes)
            .load(aya::include_bytes_aligned!(concat!(
                env!("OUT_DIR"),
                "/timerwatch"
            )))
            .context("loading the eBPF programs")?;

        {
            let mut tgids: HashMap<_, u32, u8> = HashMap::try_from(
                ebpf.map_mut(names::TGIDS)
                    .ok_or_else(|| anyhow!("map TGIDS missing"))?,
            )?;
            for &tgid in &filter.tgids {
                tgids.insert(tgid, 1, 0)?;
            }
        }
        {
            let mut comms: HashMap<_, [u8; COMM_LEN], u8> = HashMap::try_from(
                ebpf.map_mut(names::COMMS)
                    .ok_or_else(|| anyhow!("map COMMS missing"))?,
            )?;
            for comm in &filter.comms {
                comms.insert(comm_key(comm), 1, 0)?;
            }
        }

        let mut missing = Vec::new();
        for a in ATTACHMENTS {
            if (a.need == Wakeups && !filter.wakeups)
                || (a.need == Follow && !filter.follow_children)
            {
                continue;
            }
            let Some((name, _)) = resolve(&tracefs, a) else {
                if a.need == Required || a.need == Follow {
                    return Err(anyhow!(
                        "this kernel has no tracepoint {}:{}",
                        a.category,
                        a.names.join(" or ")
                    ));
                }
                missing.push(format!("{}:{}", a.category, a.names[0]));
                continue;
            };
            match &btf {
                Some(types) if has_btf_twin(a) => {
                    // The classic name that exists is the one to use; BTF must know it too.
                    if !types.layout.has_tracepoint(name) {
                        return Err(anyhow!(
                            "the kernel's BTF has no raw tracepoint {name} (try {ATTACH_ENV}=classic)"
                        ));
                    }
                    let program = format!("{}_btf", a.program);
                    let prog: &mut BtfTracePoint = ebpf
                        .program_mut(&program)
                        .ok_or_else(|| anyhow!("program {program} missing from the eBPF object"))?
                        .try_into()?;
                    prog.load(name, &types.attach)
                        .with_context(|| format!("loading program {program}"))?;
                    prog.attach()
                        .with_context(|| format!("attaching to raw tracepoint {name}"))?;
                }
                _ => {
                    let prog: &mut TracePoint = ebpf
                        .program_mut(a.program)
                        .ok_or_else(|| {
                            anyhow!("program {} missing from the eBPF object", a.program)
                        })?
                        .try_into()?;
                    prog.load()
                        .with_context(|| format!("loading program {}", a.program))?;
                    prog.attach(a.category, name)
                        .with_context(|| format!("attaching to {}:{}", a.category, name))?;
                }
            }
        }
        if btf.is_some() {
            // The two parses of the kernel's BTF (several MB of types each) are needed only to
            // load; without handing the freed heap back, a long-running daemon keeps ~15 MB
            // more resident than on the classic path.
            drop(btf);
            crate::heap::trim();
        }
        Ok(Self {
            ebpf,
            attach,
            missing,
        })
    }

    /// The loaded object, for attachments decided after load (Go uprobes, per process).
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// The event ring buffer; call once.
    pub fn take_ring(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map(names::EVENTS)
            .ok_or_else(|| anyhow!("ring buffer already taken"))?;
        Ok(RingBuf::try_from(map)?)
    }

    /// Records the kernel dropped because the ring buffer was full, summed over CPUs.
    pub fn lost_events(&self) -> Result<u64> {
        let lost: PerCpuArray<_, u64> = PerCpuArray::try_from(
            self.ebpf
                .map(names::LOST)
                .ok_or_else(|| anyhow!("map LOST missing"))?,
        )?;
        Ok(lost.get(&0, 0)?.iter().sum())
    }

    /// Drop kernel-side ownership of timers whose process exited, so a recycled address or PID
    /// starts clean instead of waiting for LRU eviction.
    pub fn forget_timers(&mut self, addrs: &[u64]) {
        let Some(map) = self.ebpf.map_mut(names::OWNERS) else {
            return;
        };
        let Ok(mut owners) = HashMap::<_, u64, Owner>::try_from(map) else {
            return;
        };
        for addr in addrs {
            let _ = owners.remove(addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_path_follows_the_switch() {
        let (path, btf) = choose_path(Some("classic")).unwrap();
        assert!(matches!(path, AttachPath::Classic(ref why) if why.contains("classic")));
        assert!(btf.is_none());
        let Err(e) = choose_path(Some("bogus")) else {
            panic!("a bad value was taken")
        };
        let e = e.to_string();
        assert!(e.contains("bogus") && e.contains(ATTACH_ENV), "{e}");
        // This kernel has BTF: auto and btf take it.
        assert_eq!(choose_path(None).unwrap().0, AttachPath::Btf);
        assert_eq!(choose_path(Some("btf")).unwrap().0, AttachPath::Btf);
    }

    #[test]
    fn function_ranges_end_at_the_next_distinct_symbol() {
        let syms: Vec<(u64, String)> = [
            (0x100, "a"),
            (0x180, "hrtimer_interrupt"),
            (0x180, "alias"),
            (0x200, "b"),
        ]
        .iter()
        .map(|(a, n)| (*a, n.to_string()))
        .collect();
        let r = function_ranges(&syms, &["hrtimer_interrupt", "missing"]);
        assert_eq!(r[0], [0x180, 0x200]);
        assert_eq!(r[1], [0, 0]);
    }
}
