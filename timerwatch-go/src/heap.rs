//! Read-only walk of a live Go process's per-P timer heaps: the ground truth for which timers are
//! pending right now (docs/go-runtime-timers.md §5.2).
//!
//! Nothing is locked and nothing in the target is written; the target keeps running while it is
//! read. Torn reads are caught by checking that each timer points back at the heap that listed it
//! and that the heap header did not change during the read; a P whose heap keeps changing is
//! retried a few times and then reported as `unstable_ps`.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::elf::Elf;
use super::layout::{RuntimeLayout, TimerLayout};
use super::{Error, GoBinary};
use timerwatch_proc::maps::Maps;
use timerwatch_proc::mem::ProcMem;

/// GOMAXPROCS has no hard cap since Go 1.10 (allp became a slice), but a count beyond this is a
/// wrong address, not a machine.
const MAX_PS: u64 = 1 << 16;
/// A sanity bound against reading garbage lengths, far above real heaps.
const MAX_HEAP_LEN: u64 = 1 << 22;
const ATTEMPTS: usize = 4;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapTimer {
    /// Runtime address of the `runtime.timer`.
    pub timer: u64,
    /// When it fires, CLOCK_MONOTONIC ns (legacy Modified timers: their pending `nextwhen`).
    pub when: i64,
    pub period: i64,
    /// Link-time code address of the callback (`*funcval` dereferenced, load bias removed):
    /// what `KindSymbols::classify` takes.
    pub f: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeapSnapshot {
    /// Pending timers only (stopped entries awaiting removal are left out).
    pub timers: Vec<HeapTimer>,
    /// Pending timers per P, indexed like `runtime.allp`.
    pub per_p: Vec<usize>,
}

/// A pending timer with the fields beyond `HeapTimer`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimerDetail {
    pub timer: HeapTimer,
    /// Runtime address of the `*funcval` itself.
    pub funcval: u64,
    /// Data word of `arg` (the channel, the AfterFunc `*funcval`, the sleeping `*g`, …).
    pub arg: u64,
    /// Index of the P whose heap holds it.
    pub p: usize,
    /// 1.23+: channel timer, and goroutines blocked on its channel.
    pub is_chan: Option<bool>,
    pub blocked: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DetailedSnapshot {
    pub timers: Vec<TimerDetail>,
    pub per_p: Vec<usize>,
    /// Entries still in a heap but stopped/fired (legacy Deleted, 1.23+ zombies).
    pub dead: usize,
    /// Ps whose heap changed under every attempt; their last consistent-looking entries are
    /// still included.
    pub unstable_ps: usize,
}

impl From<DetailedSnapshot> for HeapSnapshot {
    fn from(d: DetailedSnapshot) -> Self {
        HeapSnapshot {
            timers: d.timers.into_iter().map(|t| t.timer).collect(),
            per_p: d.per_p,
        }
    }
}

/// Runtime address minus link-time address for `path` mapped in `pid`: 0 for ordinary (ET_EXEC)
/// Go binaries, the ASLR slide for `-buildmode=pie`. `path` may be `/proc/PID/exe`.
pub fn load_bias(pid: u32, path: &Path) -> io::Result<u64> {
    let elf = Elf::open(path).map_err(|e| io::Error::other(e.to_string()))?;
    if !elf.is_pie() {
        return Ok(0);
    }
    let meta = fs::metadata(path)?;
    let maps = Maps::read(pid)?;
    let mappings = maps.entries();
    // Overlay filesystems may report a different device in maps than stat does, so the device
    // only breaks ties between equal inode numbers.
    let dev = format!(
        "{:02x}:{:02x}",
        libc::major(meta.dev()),
        libc::minor(meta.dev())
    );
    let mapping = mappings
        .iter()
        .find(|m| m.inode == meta.ino() && m.dev == dev)
        .or_else(|| mappings.iter().find(|m| m.inode == meta.ino()))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not mapped in process {pid}", path.display()),
            )
        })?;
    let page = page_size();
    let seg = elf
        .segments
        .iter()
        .find(|s| {
            let start = s.offset & !(page - 1);
            mapping.offset >= start && mapping.offset < s.offset + s.filesz.max(1)
        })
        .ok_or_else(|| io::Error::other("mapping does not match any PT_LOAD segment"))?;
    let link = (seg.vaddr & !(page - 1)) + (mapping.offset - (seg.offset & !(page - 1)));
    Ok(mapping.range.start.wrapping_sub(link))
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as u64
    } else {
        4096
    }
}

/// Walks every P's timer heap of process `pid`, which runs `bin`. `load_bias` from
/// [`load_bias`].
pub fn walk(pid: u32, bin: &GoBinary, load_bias: u64) -> Result<HeapSnapshot, Error> {
    walk_detailed(pid, bin, load_bias).map(HeapSnapshot::from)
}

/// [`walk`] with every field timerwatch reads and the consistency counters.
pub fn walk_detailed(pid: u32, bin: &GoBinary, load_bias: u64) -> Result<DetailedSnapshot, Error> {
    walk_detailed_in(&ProcMem::new(pid), bin, load_bias)
}

/// [`walk_detailed`] through `mem`, whose budget (if any) bounds the walk: once spent, every
/// read fails and the walk ends with an error or unstable Ps.
pub fn walk_detailed_in(
    mem: &ProcMem,
    bin: &GoBinary,
    load_bias: u64,
) -> Result<DetailedSnapshot, Error> {
    let layout = &bin.layout;
    if layout.allp_vaddr == 0 {
        return Err(Error::Malformed("runtime.allp was not located".into()));
    }
    let header = mem.read_vec(layout.allp_vaddr.wrapping_add(load_bias), 16)?;
    let allp = word(&header, 0);
    let nps = word(&header, 8);
    if nps > MAX_PS {
        return Err(Error::Malformed(format!("allp has {nps} entries")));
    }
    let ps = mem.read_vec(allp, nps as usize * 8)?;
    let mut walker = Walker {
        mem,
        layout,
        runtime: &bin.runtime,
        load_bias,
        funcvals: HashMap::new(),
    };
    let mut snap = DetailedSnapshot::default();
    for (index, p) in ps.chunks_exact(8).map(|c| word(c, 0)).enumerate() {
        if p == 0 {
            snap.per_p.push(0);
            continue;
        }
        let pass = walker.walk_p(index, p)?;
        snap.per_p.push(pass.live.len());
        snap.dead += pass.dead;
        snap.unstable_ps += usize::from(!pass.stable);
        snap.timers.extend(pass.live);
    }
    Ok(snap)
}

/// The process-wide `asynctimerchan` GODEBUG as the runtime currently sees it (1.23–1.26;
/// includes the environment's GODEBUG). `None` where the setting does not exist.
pub fn read_async_timer_chan(
    pid: u32,
    bin: &GoBinary,
    load_bias: u64,
) -> Result<Option<i32>, Error> {
    let Some(addr) = bin.runtime.async_timer_chan_vaddr else {
        return Ok(None);
    };
    let mut b = [0u8; 4];
    ProcMem::new(pid).read(addr.wrapping_add(load_bias), &mut b)?;
    Ok(Some(i32::from_le_bytes(b)))
}

fn word(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

struct Walker<'a> {
    mem: &'a ProcMem,
    layout: &'a TimerLayout,
    runtime: &'a RuntimeLayout,
    load_bias: u64,
    /// funcval → code address; the same few callbacks repeat across thousands of timers.
    funcvals: HashMap<u64, u64>,
}

struct PPass {
    live: Vec<TimerDetail>,
    dead: usize,
    stable: bool,
}

enum Entry {
    Live(TimerDetail),
    Dead,
    /// Changing under us (or not what a heap entry must be): re-read the P.
    Torn,
}

impl Walker<'_> {
    fn walk_p(&mut self, index: usize, p: u64) -> Result<PPass, Error> {
        let l = self.layout;
        let timers = p + u64::from(l.p_timers);
        let header_addr = timers + u64::from(l.heap_in_timers.unwrap_or(0));
        let mut last = PPass {
            live: Vec::new(),
            dead: 0,
            stable: false,
        };
        for _ in 0..ATTEMPTS {
            let header = self.mem.read_vec(header_addr, 16)?;
            let (heap, len) = (word(&header, 0), word(&header, 8));
            if len > MAX_HEAP_LEN {
                continue;
            }
            let entry_size = l.heap_entry_size as usize;
            let Ok(entries) = self.mem.read_vec(heap, len as usize * entry_size) else {
                continue;
            };
            let mut pass = PPass {
                live: Vec::new(),
                dead: 0,
                stable: true,
            };
            // Legacy timers point at their P, 1.23+ timers at the P's `timers` struct.
            let owner = if l.heap_in_timers.is_some() {
                timers
            } else {
                p
            };
            // Every timer of the heap in a few batched reads: one system call per timer made a
            // walk of a large leak cost seconds.
            let ptrs: Vec<u64> = entries
                .chunks_exact(entry_size)
                .map(|e| word(e, 0))
                .collect();
            let read_len = self.runtime.timer_read_len(l);
            // `len` is the target's word: the buffer below is sized by it only within budget.
            self.mem.afford(ptrs.len() * read_len)?;
            let mut raws = vec![0u8; ptrs.len() * read_len];
            let mut reqs: Vec<(u64, &mut [u8])> = ptrs
                .iter()
                .copied()
                .zip(raws.chunks_exact_mut(read_len))
                .collect();
            let read = self.mem.read_many(&mut reqs);
            drop(reqs);
            for ((&t, raw), ok) in ptrs.iter().zip(raws.chunks_exact(read_len)).zip(read) {
                match self.entry(t, ok.then_some(raw), owner, index) {
                    Entry::Live(t) => pass.live.push(t),
                    Entry::Dead => pass.dead += 1,
                    Entry::Torn => pass.stable = false,
                }
            }
            let after = self.mem.read_vec(header_addr, 16)?;
            pass.stable &= after == header;
            if pass.stable {
                return Ok(pass);
            }
            last = pass;
        }
        Ok(last)
    }

    /// Timer `t`, whose first `timer_read_len` bytes are `raw` (`None`: unreadable).
    fn entry(&mut self, t: u64, raw: Option<&[u8]>, owner: u64, p: usize) -> Entry {
        let (l, r) = (self.layout, self.runtime);
        let Some(raw) = raw else {
            return Entry::Torn;
        };
        let field = |off: u32| word(raw, off as usize);
        if t == 0 || field(r.timer_owner) != owner {
            return Entry::Torn;
        }
        let status = match r.timer_status_size {
            1 => u32::from(raw[r.timer_status as usize]),
            _ => u32::from_le_bytes(raw[r.timer_status as usize..][..4].try_into().unwrap()),
        };
        let mut when = field(l.timer_when) as i64;
        if let Some(nextwhen) = r.timer_nextwhen {
            match status {
                1 => {}
                7 | 8 => when = field(nextwhen) as i64,
                3 => return Entry::Dead,
                // Running, Removing, Modifying, Moving: mid-transition. NoStatus/Removed:
                // cannot be in a heap, so the read is stale.
                _ => return Entry::Torn,
            }
        } else if status & 4 != 0 || when <= 0 {
            // Zombie: stopped or fired, waiting to be dropped; a zombie channel timer with
            // when > 0 has no receiver left and leaves the heap too.
            return Entry::Dead;
        }
        let funcval = field(l.timer_f);
        let f = self.code_address(funcval);
        Entry::Live(TimerDetail {
            timer: HeapTimer {
                timer: t,
                when,
                period: field(l.timer_period) as i64,
                f,
            },
            funcval,
            arg: field(l.timer_arg + 8),
            p,
            is_chan: r.timer_is_chan.map(|o| raw[o as usize] != 0),
            blocked: r
                .timer_blocked
                .map(|o| u32::from_le_bytes(raw[o as usize..][..4].try_into().unwrap())),
        })
    }

    fn code_address(&mut self, funcval: u64) -> u64 {
        if funcval == 0 {
            return 0;
        }
        if let Some(&pc) = self.funcvals.get(&funcval) {
            return pc;
        }
        let pc = self
            .mem
            .read_u64(funcval)
            .map(|pc| pc.wrapping_sub(self.load_bias))
            .unwrap_or(0);
        self.funcvals.insert(funcval, pc);
        pc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bias_maps_own_code_back_to_text() {
        let exe = std::env::current_exe().unwrap();
        let bias = load_bias(std::process::id(), &exe).unwrap();
        let here = bias_maps_own_code_back_to_text as *const () as u64;
        let elf = Elf::open(&exe).unwrap();
        let text = elf.section(".text").unwrap();
        let linked = here.wrapping_sub(bias);
        assert!(
            linked >= text.addr && linked < text.addr + text.size,
            "{linked:#x}"
        );
    }
}
