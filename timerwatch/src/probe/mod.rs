//! Loading the eBPF object, attaching it to the timer and sched tracepoints, and owning it.
//!
//! Nothing is pinned: every program, link and map lives in this process's file descriptors, so
//! dropping [`Probes`] (or any exit, even a crash) leaves nothing loaded behind.

pub mod format;
pub mod privileges;
pub mod tracefs;

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use aya::{
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
    Ebpf, EbpfLoader,
};
use timerwatch_common::{names, Config, Owner, COMM_LEN};

use self::format::{Format, Formats};

/// Which processes to trace. Empty lists mean "all".
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub tgids: Vec<u32>,
    pub comms: Vec<String>,
}

/// One program and the tracepoints it may attach to, in order of preference.
struct Attachment {
    program: &'static str,
    category: &'static str,
    names: &'static [&'static str],
    required: bool,
}

const ATTACHMENTS: &[Attachment] = &[
    // Renamed in 6.15; either carries the `hrtimer` address.
    Attachment {
        program: "hrtimer_init",
        category: "timer",
        names: &["hrtimer_setup", "hrtimer_init"],
        required: true,
    },
    Attachment {
        program: "hrtimer_start",
        category: "timer",
        names: &["hrtimer_start"],
        required: true,
    },
    Attachment {
        program: "hrtimer_cancel",
        category: "timer",
        names: &["hrtimer_cancel"],
        required: true,
    },
    Attachment {
        program: "hrtimer_expire_entry",
        category: "timer",
        names: &["hrtimer_expire_entry"],
        required: true,
    },
    Attachment {
        program: "timer_init",
        category: "timer",
        names: &["timer_init"],
        required: true,
    },
    Attachment {
        program: "timer_start",
        category: "timer",
        names: &["timer_start"],
        required: true,
    },
    Attachment {
        program: "timer_cancel",
        category: "timer",
        names: &["timer_cancel"],
        required: true,
    },
    Attachment {
        program: "timer_expire_entry",
        category: "timer",
        names: &["timer_expire_entry"],
        required: true,
    },
    Attachment {
        program: "itimer_state",
        category: "timer",
        names: &["itimer_state"],
        required: false,
    },
    Attachment {
        program: "itimer_expire",
        category: "timer",
        names: &["itimer_expire"],
        required: false,
    },
    Attachment {
        program: "sched_process_exit",
        category: "sched",
        names: &["sched_process_exit"],
        required: true,
    },
    Attachment {
        program: "sched_process_exec",
        category: "sched",
        names: &["sched_process_exec"],
        required: true,
    },
    // Syscall tracepoints need CONFIG_FTRACE_SYSCALLS; without them POSIX timers count only while armed.
    Attachment {
        program: "sys_enter_timer_create",
        category: "syscalls",
        names: &["sys_enter_timer_create"],
        required: false,
    },
    Attachment {
        program: "sys_exit_timer_create",
        category: "syscalls",
        names: &["sys_exit_timer_create"],
        required: false,
    },
    Attachment {
        program: "sys_enter_timer_delete",
        category: "syscalls",
        names: &["sys_enter_timer_delete"],
        required: false,
    },
];

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
        sys_enter_timer_create: get("sys_enter_timer_create"),
        sys_exit_timer_create: get("sys_exit_timer_create"),
        sys_enter_timer_delete: get("sys_enter_timer_delete"),
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

/// Address of a kernel function from /proc/kallsyms (root sees real addresses).
fn kallsyms_address(name: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/kallsyms").ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.split_whitespace();
        let addr = parts.next()?;
        let _kind = parts.next()?;
        (parts.next()? == name)
            .then(|| u64::from_str_radix(addr, 16).ok())
            .flatten()
    })
}

/// Loaded and attached probes. Dropping this detaches and unloads everything.
pub struct Probes {
    ebpf: Ebpf,
    /// Tracepoints that this kernel lacks (optional ones only); reported once at start-up.
    pub missing: Vec<String>,
}

pub const DEFAULT_RING_BYTES: u32 = 8 << 20;

impl Probes {
    pub fn load(filter: &Filter, ring_bytes: u32) -> Result<Self> {
        let tracefs = tracefs::ensure_mounted()?;
        let formats = read_formats(&tracefs)?;
        let config = Config {
            self_tgid: std::process::id(),
            filter_tgid: (!filter.tgids.is_empty()) as u32,
            filter_comm: (!filter.comms.is_empty()) as u32,
            // A quarter of the ring: the reader also drains on a 50 ms timer, so this only matters
            // for bursts that would otherwise overflow the ring before the timer fires.
            wakeup_bytes: ring_bytes / 4,
            sleeper_fn: kallsyms_address("hrtimer_wakeup").unwrap_or(0),
            offsets: formats.offsets()?,
        };
        let mut ebpf = EbpfLoader::new()
            .override_global(names::CONFIG, &config, true)
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
            let Some((name, _)) = resolve(&tracefs, a) else {
                if a.required {
                    return Err(anyhow!(
                        "this kernel has no tracepoint {}:{}",
                        a.category,
                        a.names.join(" or ")
                    ));
                }
                missing.push(format!("{}:{}", a.category, a.names[0]));
                continue;
            };
            let prog: &mut TracePoint = ebpf
                .program_mut(a.program)
                .ok_or_else(|| anyhow!("program {} missing from the eBPF object", a.program))?
                .try_into()?;
            prog.load()
                .with_context(|| format!("loading program {}", a.program))?;
            prog.attach(a.category, name)
                .with_context(|| format!("attaching to {}:{}", a.category, name))?;
        }
        Ok(Self { ebpf, missing })
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
