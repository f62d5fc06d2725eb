//! Offsets for reading timers out of a live process: `runtime.timer` fields, where the per-P heap
//! sits in `runtime.p`, and where `runtime.allp` is.
//!
//! `runtime.timer` fields only change between releases, so they come from a table
//! (docs/go-runtime-timers.md §5.1, Appendix A). `p.timers` also depends on GOEXPERIMENT and
//! `allp` on the link, so both are decoded from machine code (§5.3), with the table as fallback.
//!
//! The goroutine walk ([`GoroutineLayout`], §9): `runtime.g`/`runtime.sudog` fields come from a
//! table; `allgs` is decoded from `runtime.forEachG` like `allp`; wait-reason numbers are read
//! from the binary's own `runtime.waitReasonStrings`, because releases renumber them.

use super::elf::Elf;
use super::pclntab::Pclntab;
use super::probes::{role_regs, ProbeRole, RoleRegs};
use super::version::GoVersion;
use super::x86::{self, Load};
use super::{BuildInfo, Error};

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TimerLayout {
    /// `runtime.timer.when`. In the legacy family a Modified timer's pending time is in
    /// `timer_nextwhen` instead.
    pub timer_when: u32,
    pub timer_period: u32,
    /// `*funcval` of the callback.
    pub timer_f: u32,
    /// `arg any`: type word here, data word at +8.
    pub timer_arg: u32,
    /// Offset of `timers` in `runtime.p`: the `[]*timer` slice (≤1.22) or the `runtime.timers`
    /// struct (1.23+).
    pub p_timers: u32,
    /// 1.23+: offset of the `heap []timerWhen` slice inside `runtime.timers`.
    pub heap_in_timers: Option<u32>,
    /// 8 (`*timer`) before 1.23, 16 (`timerWhen{timer, when}`) after.
    pub heap_entry_size: u32,
    /// Link-time address of the `runtime.allp` slice header (ptr, len, cap); 0 when it could
    /// not be found (then only the heap walk is unavailable).
    pub allp_vaddr: u64,
    pub regs: Vec<(ProbeRole, RoleRegs)>,
}

/// Further runtime offsets the heap walk and event decoding may need, beyond `TimerLayout`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RuntimeLayout {
    /// Field pointing back at the owner, used to validate a heap entry read without locks:
    /// legacy `pp` (== the P), 1.23+ `ts` (== &p.timers).
    pub timer_owner: u32,
    /// Legacy `status` (u32: 1 Waiting, 3 Deleted, 7/8 Modified…) or 1.23+ `state` (u8 bits:
    /// 1 heaped, 2 modified, 4 zombie).
    pub timer_status: u32,
    pub timer_status_size: u32,
    /// Legacy only: pending `when` of a Modified timer.
    pub timer_nextwhen: Option<u32>,
    /// 1.23+: `isChan` (u8) and `blocked` (u32, goroutines waiting on the channel).
    pub timer_is_chan: Option<u32>,
    pub timer_blocked: Option<u32>,
    /// `runtime.g.goid`, for naming the sleeper behind a `goroutineReady` timer.
    pub g_goid: u32,
    /// `runtime.g.timer` (`*timer`): the goroutine's Sleep timer, allocated on its first Sleep
    /// and reused after, so it is nil at the first `time.Sleep` of a goroutine.
    pub g_timer: u32,
    /// 1.23–1.26: link-time address of `runtime.debug.asynctimerchan` (i32), the live
    /// process-wide setting (env GODEBUG included).
    pub async_timer_chan_vaddr: Option<u64>,
    /// Whether `TimerLayout::p_timers` came from machine code (true) or from the version table.
    pub p_timers_decoded: bool,
}

/// What the goroutine walk reads: where `runtime.allgs` is, and the `runtime.g` and
/// `runtime.sudog` fields that say whether, where and on what a goroutine is parked.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct GoroutineLayout {
    /// Link-time address of the `runtime.allgs` slice header (ptr, len, cap); 0 when it could
    /// not be found (then only the goroutine walk is unavailable).
    pub allgs_vaddr: u64,
    /// `g.stack.lo` / `g.stack.hi`: the bounds every frame pointer must stay within.
    pub g_stack_lo: u32,
    pub g_stack_hi: u32,
    /// `g.sched` (`gobuf`) `sp`, `pc` and `bp`: saved by `mcall` when the goroutine parked.
    pub g_sched_sp: u32,
    pub g_sched_pc: u32,
    pub g_sched_bp: u32,
    /// `g.atomicstatus` (u32).
    pub g_status: u32,
    pub g_goid: u32,
    /// `g.waitreason` (u8).
    pub g_waitreason: u32,
    /// `g.waiting` (`*sudog`): the channels a parked goroutine waits on, linked by `waitlink`.
    pub g_waiting: u32,
    /// `g.trackingSeq` (u8): bumped by every transition out of `_Grunning`, so a goroutine that
    /// woke and parked again in the same place while being read shows a different value.
    /// `None` where unmeasured (1.19, 1.20).
    pub g_tracking_seq: Option<u32>,
    pub g_timer: u32,
    pub sudog_g: u32,
    pub sudog_waitlink: u32,
    pub sudog_c: u32,
    /// `None` when neither the binary nor the version table gives them (then only the
    /// goroutine walk is unavailable).
    pub wait: Option<WaitReasons>,
    /// Whether `wait` came from the binary's `waitReasonStrings` (true) or the version table.
    pub wait_reasons_decoded: bool,
}

/// `runtime.waitReason` values of the parks that can be waits on a timer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct WaitReasons {
    pub chan_receive: u8,
    pub select: u8,
    pub select_no_cases: u8,
    pub sleep: u8,
}

impl GoroutineLayout {
    /// Bytes to read from a `g` to see every field the walk uses.
    pub fn g_read_len(&self) -> usize {
        [
            self.g_stack_hi,
            self.g_sched_sp,
            self.g_sched_pc,
            self.g_sched_bp,
            self.g_status,
            self.g_goid,
            self.g_waitreason,
            self.g_waiting,
            self.g_timer,
            self.g_tracking_seq.unwrap_or(0),
        ]
        .into_iter()
        .max()
        .unwrap_or(0) as usize
            + 8
    }

    pub fn sudog_read_len(&self) -> usize {
        [self.sudog_g, self.sudog_waitlink, self.sudog_c]
            .into_iter()
            .max()
            .unwrap_or(0) as usize
            + 8
    }
}

impl TimerLayout {
    pub fn regs_for(&self, role: ProbeRole) -> Option<&RoleRegs> {
        self.regs
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, regs)| regs)
    }
}

impl RuntimeLayout {
    /// Bytes to read from a timer to see every field of both layouts.
    pub fn timer_read_len(&self, t: &TimerLayout) -> usize {
        let last = [
            t.timer_when,
            t.timer_period,
            t.timer_f,
            t.timer_arg + 8,
            self.timer_owner,
            self.timer_nextwhen.unwrap_or(0),
            self.timer_status,
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        last as usize + 8
    }
}

struct TimerFields {
    when: u32,
    period: u32,
    f: u32,
    arg: u32,
    owner: u32,
}

fn timer_fields(v: GoVersion) -> TimerFields {
    if !v.new_timers() {
        TimerFields {
            when: 8,
            period: 16,
            f: 24,
            arg: 32,
            owner: 0,
        }
    } else if !v.at_least(25) {
        TimerFields {
            when: 16,
            period: 24,
            f: 32,
            arg: 40,
            owner: 64,
        }
    } else {
        // 1.25 added `rand uint32` before `when`.
        TimerFields {
            when: 24,
            period: 32,
            f: 40,
            arg: 48,
            owner: 72,
        }
    }
}

/// `p.timers` with the default GOEXPERIMENT of each release, adjusted for the GC experiment that
/// flips its size. 1.20 was never measured, so it has no entry and relies on decoding.
fn p_timers_table(v: GoVersion, build: &BuildInfo) -> Option<u32> {
    Some(match v.minor {
        19 | 21 | 23 | 24 => 8840,
        22 => 8872,
        25 if build.has_experiment("greenteagc") => 13624,
        25 => 9392,
        26 | 27 if build.has_experiment("nogreenteagc") => 9416,
        26 | 27 => 13672,
        _ => return None,
    })
}

/// (`g.goid`, `g.timer`) per release, from DWARF (docs/go-runtime-timers.md Appendix A); 1.20
/// was never measured and is assumed to match 1.19.
fn g_fields(v: GoVersion) -> (u32, u32) {
    match v.minor {
        19 | 20 => (152, 368),
        21 | 22 => (152, 352),
        23 | 24 => (160, 360),
        25 => (152, 352),
        _ => (152, 360),
    }
}

/// `runtime.g` fields per release beyond `g_fields`: (`atomicstatus`, `waitreason`,
/// `waiting`, `trackingSeq`, offset of `bp` in `gobuf`), from DWARF (docs/go-runtime-timers.md
/// §9). 1.19/1.20 are inferred (`waiting` sits 40 bytes before `timer` in every measured
/// release), 1.24 from 1.23 and 1.26 from 1.27, whose `goid`/`waitreason`/`timer` they share.
fn g_walk_fields(v: GoVersion) -> (u32, u32, u32, Option<u32>, u32) {
    match v.minor {
        19 | 20 => (144, 176, 328, None, 48),
        21 => (144, 176, 312, Some(188), 48),
        22 => (144, 176, 312, Some(191), 48),
        23 | 24 => (152, 184, 320, Some(199), 48),
        // 1.25 dropped `gobuf.ret`.
        25 => (144, 176, 312, Some(191), 40),
        _ => (144, 176, 320, Some(191), 40),
    }
}

/// (`sudog.waitlink`, `sudog.c`). 1.27 made `elem` and `c` two-word `maybeTraceablePtr`s
/// (`vp` for the GC, then `vu`, "the source of truth", which the goroutine-leak GC keeps while
/// clearing `vp`), so `c` is read at its second word; 1.26 is assumed the same (the leak
/// profile experiment shipped with it).
fn sudog_fields(v: GoVersion) -> (u32, u32) {
    if v.at_least(26) {
        (72, 88 + 8)
    } else {
        (64, 80)
    }
}

/// Wait reasons of the releases whose DWARF constants were read; 1.25 inserted two before
/// `sleep`, 1.27 renumbered them all.
fn wait_reasons_table(v: GoVersion) -> Option<WaitReasons> {
    let (chan_receive, select, select_no_cases, sleep) = match v.minor {
        21..=23 => (14, 9, 10, 19),
        25 => (14, 9, 10, 20),
        27 => (19, 18, 17, 14),
        _ => return None,
    };
    Some(WaitReasons {
        chan_receive,
        select,
        select_no_cases,
        sleep,
    })
}

/// The goroutine walk's layout. `allgs_symbol` is the `.symtab` value when there is one.
pub fn goroutines(
    elf: &Elf,
    pcln: &Pclntab,
    version: GoVersion,
    allgs_symbol: Option<u64>,
) -> GoroutineLayout {
    let decoded_allgs = function_code(elf, pcln, "runtime.forEachG")
        .and_then(|(code, base)| first_slice_global(&code, base));
    let decoded_wait = decode_wait_reasons(elf);
    let wait_reasons_decoded = decoded_wait.is_some();
    let wait = decoded_wait.or_else(|| wait_reasons_table(version));
    let (g_goid, g_timer) = g_fields(version);
    let (g_status, g_waitreason, g_waiting, g_tracking_seq, gobuf_bp) = g_walk_fields(version);
    let (sudog_waitlink, sudog_c) = sudog_fields(version);
    // `g.stack` leads `g`; `g.sched` follows stackguard0/1, _panic, _defer and m.
    let sched = 56;
    GoroutineLayout {
        allgs_vaddr: allgs_symbol.or(decoded_allgs).unwrap_or(0),
        g_stack_lo: 0,
        g_stack_hi: 8,
        g_sched_sp: sched,
        g_sched_pc: sched + 8,
        g_sched_bp: sched + gobuf_bp,
        g_status,
        g_goid,
        g_waitreason,
        g_waiting,
        g_tracking_seq,
        g_timer,
        sudog_g: 0,
        sudog_waitlink,
        sudog_c,
        wait,
        wait_reasons_decoded,
    }
}

/// `runtime.waitReasonStrings` is a `[...]string` indexed by `waitReason`, so the index of each
/// name is its number in this very binary. The array is found in writable data by its first
/// three entries (`""`, `"GC assist marking"`, `"IO wait"`, the same in every release); its
/// pointers are link-time addresses in the file, PIE included.
fn decode_wait_reasons(elf: &Elf) -> Option<WaitReasons> {
    const MAX_REASONS: usize = 256;
    let string_at = |ptr: u64, len: u64| -> Option<Vec<u8>> {
        match len {
            0 => Some(Vec::new()),
            1..=64 => elf.read_vaddr(ptr, len as usize).ok(),
            _ => None,
        }
    };
    for seg in elf.segments.iter().filter(|s| s.flags & 2 != 0) {
        let Ok(data) = elf.read(seg.offset, seg.filesz as usize) else {
            continue;
        };
        let word = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?))
        };
        for at in (0..data.len().saturating_sub(48)).step_by(8) {
            if word(at + 8) != Some(0) || word(at + 24) != Some(17) || word(at + 40) != Some(7) {
                continue;
            }
            let named = |i: usize, name: &[u8]| {
                let (ptr, len) = (word(at + 16 * i)?, word(at + 16 * i + 8)?);
                Some(string_at(ptr, len)? == name)
            };
            if named(1, b"GC assist marking") != Some(true) || named(2, b"IO wait") != Some(true) {
                continue;
            }
            let mut found = [None::<u8>; 4];
            let names: [&[u8]; 4] = [b"chan receive", b"select", b"select (no cases)", b"sleep"];
            for i in 0..MAX_REASONS {
                let (Some(ptr), Some(len)) = (word(at + 16 * i), word(at + 16 * i + 8)) else {
                    break;
                };
                let Some(s) = string_at(ptr, len) else { break };
                if let Some(k) = names.iter().position(|n| *n == s.as_slice()) {
                    found[k] = found[k].or(u8::try_from(i).ok());
                }
            }
            let [Some(chan_receive), Some(select), Some(select_no_cases), Some(sleep)] = found
            else {
                return None;
            };
            return Some(WaitReasons {
                chan_receive,
                select,
                select_no_cases,
                sleep,
            });
        }
    }
    None
}

pub fn compute(
    elf: &Elf,
    pcln: &Pclntab,
    version: GoVersion,
    build: &BuildInfo,
    allp_symbol: Option<u64>,
) -> Result<(TimerLayout, RuntimeLayout), Error> {
    let fields = timer_fields(version);
    let new = version.new_timers();
    let sleep_until = function_code(elf, pcln, "runtime.timeSleepUntil");
    let decoded_allp = sleep_until
        .as_ref()
        .and_then(|(code, base)| first_slice_global(code, *base));
    let allp_vaddr = allp_symbol.or(decoded_allp).unwrap_or(0);

    let decoded_p_timers = if new {
        sleep_until
            .as_ref()
            .and_then(|(code, base)| decode_p_timers_new(code, *base))
    } else {
        function_code(elf, pcln, "runtime.doaddtimer")
            .and_then(|(code, base)| decode_p_timers_legacy(&code, base))
    };
    let (p_timers, p_timers_decoded) = match (decoded_p_timers, p_timers_table(version, build)) {
        (Some(d), _) => (d, true),
        (None, Some(t)) => (t, false),
        (None, None) => {
            return Err(Error::Unsupported(format!(
                "{version} (runtime.p.timers offset not found)"
            )))
        }
    };

    let async_timer_chan_vaddr = (new && !version.at_least(27))
        .then(|| function_code(elf, pcln, "runtime.(*timer).stop"))
        .flatten()
        .and_then(|(code, base)| x86::first_movl_global_ecx(&code, base))
        .filter(|&a| in_writable_memory(elf, a));

    let timers = TimerLayout {
        timer_when: fields.when,
        timer_period: fields.period,
        timer_f: fields.f,
        timer_arg: fields.arg,
        p_timers,
        heap_in_timers: new.then_some(8),
        heap_entry_size: if new { 16 } else { 8 },
        allp_vaddr,
        regs: role_regs(version),
    };
    let runtime = RuntimeLayout {
        timer_owner: fields.owner,
        timer_status: if new { 9 } else { 64 },
        timer_status_size: if new { 1 } else { 4 },
        timer_nextwhen: (!new).then_some(56),
        timer_is_chan: new.then_some(10),
        timer_blocked: new.then_some(12),
        g_goid: g_fields(version).0,
        g_timer: g_fields(version).1,
        async_timer_chan_vaddr,
        p_timers_decoded,
    };
    Ok((timers, runtime))
}

/// The code of a function and its link-time address.
fn function_code(elf: &Elf, pcln: &Pclntab, name: &str) -> Option<(Vec<u8>, u64)> {
    let f = pcln.func_by_name(name)?;
    let len = usize::try_from(f.end.checked_sub(f.entry)?).ok()?.min(4096);
    Some((elf.read_vaddr(f.entry, len).ok()?, f.entry))
}

fn in_writable_memory(elf: &Elf, vaddr: u64) -> bool {
    elf.segments
        .iter()
        .any(|s| s.flags & 2 != 0 && vaddr >= s.vaddr && vaddr - s.vaddr < s.memsz)
}

/// A global slice read by a loop over it: two consecutive RIP-relative loads of X and X+8
/// (slice pointer and length) give the slice header at X. `timeSleepUntil` iterates `allp`
/// first; `forEachG` iterates `allgs` right after taking `allglock`.
fn first_slice_global(code: &[u8], base: u64) -> Option<u64> {
    let globals: Vec<u64> = x86::loads(code, base)
        .into_iter()
        .filter_map(|(_, l)| match l {
            Load::Global(a) => Some(a),
            Load::Field(_) => None,
        })
        .collect();
    globals.windows(2).find(|w| w[1] == w[0] + 8).map(|w| w[0])
}

/// 1.23+: after the allp loads, `timeSleepUntil` reads `pp.timers.minWhenModified` and
/// `minWhenHeap` (offsets 56 and 48 in `runtime.timers`): p.timers = the lower of the pair − 48.
fn decode_p_timers_new(code: &[u8], base: u64) -> Option<u32> {
    let loads = x86::loads(code, base);
    let allp_at = loads.windows(2).position(|w| match (w[0].1, w[1].1) {
        (Load::Global(a), Load::Global(b)) => b == a + 8,
        _ => false,
    })?;
    let fields: Vec<u32> = loads[allp_at + 2..]
        .iter()
        .filter_map(|(_, l)| match l {
            Load::Field(d) => Some(*d),
            Load::Global(_) => None,
        })
        .collect();
    let pair = fields.windows(2).find(|w| w[0].abs_diff(w[1]) == 8)?;
    plausible_p_offset(pair[0].min(pair[1]).checked_sub(48)?)
}

/// ≤1.22: `doaddtimer(pp, t)` appends to `pp.timers`, loading its pointer, length and capacity:
/// three field loads at D, D+8, D+16 give p.timers = D.
fn decode_p_timers_legacy(code: &[u8], base: u64) -> Option<u32> {
    let fields: Vec<u32> = x86::loads(code, base)
        .into_iter()
        .filter_map(|(_, l)| match l {
            Load::Field(d) => Some(d),
            Load::Global(_) => None,
        })
        .collect();
    let has = |d: u32| fields.contains(&d);
    let d = fields
        .iter()
        .copied()
        .filter(|&d| has(d + 8) && has(d + 16))
        .min()?;
    plausible_p_offset(d)
}

/// `p.timers` lies deep in `runtime.p` (past runq and the mcaches) and is 8-aligned.
fn plausible_p_offset(d: u32) -> Option<u32> {
    (d & 7 == 0 && (4096..65536).contains(&d)).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_tracks_gc_experiment() {
        let plain = BuildInfo::default();
        let mut gt = BuildInfo::default();
        gt.settings
            .push(("GOEXPERIMENT".into(), "greenteagc".into()));
        let mut nogt = BuildInfo::default();
        nogt.settings
            .push(("GOEXPERIMENT".into(), "nogreenteagc".into()));
        let v = |m| GoVersion::new(1, m, 0);
        assert_eq!(p_timers_table(v(25), &plain), Some(9392));
        assert_eq!(p_timers_table(v(25), &gt), Some(13624));
        assert_eq!(p_timers_table(v(26), &nogt), Some(9416));
        assert_eq!(p_timers_table(v(27), &plain), Some(13672));
        assert_eq!(p_timers_table(v(22), &plain), Some(8872));
        assert_eq!(p_timers_table(v(20), &plain), None);
    }

    #[test]
    fn decodes_legacy_p_timers_triple() {
        // MOVQ 0x2288(AX),CX; MOVQ 0x2290(AX),DX; MOVQ 0x2298(AX),BX
        let mut code = Vec::new();
        for d in [0x2290u32, 0x2288, 0x2298] {
            code.extend_from_slice(&[0x48, 0x8b, 0x88]);
            code.extend_from_slice(&d.to_le_bytes());
        }
        code.push(0x90);
        assert_eq!(decode_p_timers_legacy(&code, 0), Some(0x2288));
    }
}
