//! Read-only walk of a live Go process's goroutines: which ones are parked on a channel receive,
//! a `select` or a `time.Sleep`, on which channels or Sleep timer, and from which code — a
//! goroutine dump taken from outside, with no pprof endpoint (docs/go-runtime-timers.md §9).
//!
//! `runtime.allgs` lists every goroutine ever created (gs are reused, never freed). A parked
//! goroutine's registers are in `g.sched`, saved by `mcall` from `gopark`; Go on amd64 always
//! keeps frame pointers, so its stack unwinds by following BP. Nothing is locked and the target
//! keeps running: a goroutine whose fields change between two reads of its `g`, or whose sudog
//! list does not point back at it, is skipped, never misreported. Every length and chain read
//! from the target is bounded by [`WalkLimits`].

use super::layout::{GoroutineLayout, WaitReasons};
use super::{go_caller, Error, GoBinary, GoFrame};
use timerwatch_proc::mem::ProcMem;

/// `_Gwaiting`: the same in every release, and without the `_Gscan` bit (a goroutine being
/// scanned may have its stack shrunk under us).
const G_WAITING: u32 = 4;

/// Bounds on what the target's memory can make the walk do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkLimits {
    /// More goroutines than this in `allgs` means a wrong address, not a process.
    pub max_goroutines: usize,
    /// Frames per stack, `gopark` included.
    pub max_depth: usize,
    /// Sudogs per goroutine: one per `select` case.
    pub max_chans: usize,
    /// Bytes of stack read per goroutine, from its saved SP up; frames beyond are not seen.
    pub max_stack_bytes: usize,
}

impl Default for WalkLimits {
    fn default() -> Self {
        Self {
            max_goroutines: 1 << 22,
            max_depth: 64,
            max_chans: 1024,
            max_stack_bytes: 256 << 10,
        }
    }
}

/// Why a goroutine is parked, among the parks that can be waits on a timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WaitKind {
    ChanReceive,
    Select,
    SelectNoCases,
    Sleep,
}

impl WaitKind {
    fn from_reason(w: &WaitReasons, reason: u8) -> Option<Self> {
        Some(match reason {
            r if r == w.chan_receive => Self::ChanReceive,
            r if r == w.select => Self::Select,
            r if r == w.select_no_cases => Self::SelectNoCases,
            r if r == w.sleep => Self::Sleep,
            _ => return None,
        })
    }
}

/// A goroutine parked where a timer may be what wakes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiter {
    pub goid: u64,
    /// Runtime address of the `runtime.g`.
    pub g: u64,
    pub kind: WaitKind,
    /// Channels (`*hchan`, runtime addresses) it is blocked on: one for a receive, one per case
    /// for a `select`. A channel timer's `arg` is its channel, so this joins with the heap walk.
    pub chans: Vec<u64>,
    /// In `time.Sleep`: its `g.timer`, the heap timer whose `arg` is this `g`.
    pub sleep_timer: Option<u64>,
    /// Return addresses, innermost (`runtime.gopark`) first, link-time (load bias removed).
    pub pcs: Vec<u64>,
}

impl Waiter {
    /// Every frame of the stack, inlined ones included, innermost first.
    pub fn frames(&self, bin: &GoBinary) -> Vec<GoFrame> {
        // A return address points past the call; the call itself is one byte before.
        self.pcs
            .iter()
            .flat_map(|&pc| bin.symbolize_inline(pc.wrapping_sub(1)))
            .collect()
    }

    /// The function that chose to wait, by the one rule for Go callsites ([`go_caller`]):
    /// `[runtime.gopark, runtime.selectgo, main.pollLoop, runtime.goexit]` → `main.pollLoop`.
    pub fn caller(&self, bin: &GoBinary) -> Option<String> {
        go_caller(&self.frames(bin))
    }
}

/// The goroutines of the process behind `mem`, which runs `bin`, that are parked on a channel
/// receive, a `select` or a `time.Sleep`. `load_bias` from [`crate::load_bias`]. Goroutines
/// that change while being read are left out; an unreadable `allgs` is an error.
pub fn waiters(
    mem: &ProcMem,
    bin: &GoBinary,
    load_bias: u64,
    limits: &WalkLimits,
) -> Result<Vec<Waiter>, Error> {
    let l = &bin.goroutines;
    if l.allgs_vaddr == 0 {
        return Err(Error::Malformed("runtime.allgs was not located".into()));
    }
    let Some(reasons) = l.wait else {
        return Err(Error::Unsupported(format!(
            "{} (goroutine wait reasons unknown)",
            bin.version_string
        )));
    };
    let header = mem.read_vec(l.allgs_vaddr.wrapping_add(load_bias), 16)?;
    let (ptr, len) = (word(&header, 0), word(&header, 8));
    if len > limits.max_goroutines as u64 {
        return Err(Error::Malformed(format!("allgs has {len} entries")));
    }
    let gs = mem.read_vec(ptr, len as usize * 8)?;
    let walker = Walker {
        mem,
        l,
        reasons,
        load_bias,
        limits,
    };
    Ok(gs
        .chunks_exact(8)
        .map(|c| word(c, 0))
        .filter(|&g| g != 0)
        .filter_map(|g| walker.waiter(g))
        .collect())
}

fn word(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
        .unwrap_or(0)
}

struct Walker<'a> {
    mem: &'a ProcMem,
    l: &'a GoroutineLayout,
    reasons: WaitReasons,
    load_bias: u64,
    limits: &'a WalkLimits,
}

/// The fields of one `g` the walk depends on; two equal reads around the walk of its sudogs
/// and stack mean none of it moved in between.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
struct GState {
    status: u32,
    reason: u8,
    goid: u64,
    lo: u64,
    hi: u64,
    sp: u64,
    pc: u64,
    bp: u64,
    waiting: u64,
    timer: u64,
    /// `trackingSeq`, 0 where its offset is unknown.
    seq: u8,
}

impl Walker<'_> {
    fn read_g(&self, g: u64) -> Option<GState> {
        let l = self.l;
        let raw = self.mem.read_vec(g, l.g_read_len()).ok()?;
        let f = |off: u32| word(&raw, off as usize);
        let status = u32::from_le_bytes(raw.get(l.g_status as usize..)?[..4].try_into().ok()?);
        Some(GState {
            status,
            reason: *raw.get(l.g_waitreason as usize)?,
            goid: f(l.g_goid),
            lo: f(l.g_stack_lo),
            hi: f(l.g_stack_hi),
            sp: f(l.g_sched_sp),
            pc: f(l.g_sched_pc),
            bp: f(l.g_sched_bp),
            waiting: f(l.g_waiting),
            timer: f(l.g_timer),
            seq: match l.g_tracking_seq {
                Some(off) => *raw.get(off as usize)?,
                None => 0,
            },
        })
    }

    fn waiter(&self, g: u64) -> Option<Waiter> {
        let s = self.read_g(g)?;
        if s.status != G_WAITING {
            return None;
        }
        let kind = WaitKind::from_reason(&self.reasons, s.reason)?;
        let chans = self.chans(g, s.waiting)?;
        let pcs = self.unwind(&s);
        // Woken, re-parked, moved (stack copy) or reused while we read: skip it this time. A
        // goroutine re-parked in the same select reuses the same sudogs from its P's cache, so
        // only `trackingSeq` and a second, equal read of the chain tell.
        if self.read_g(g)? != s || pcs.is_empty() || self.chans(g, s.waiting)? != chans {
            return None;
        }
        Some(Waiter {
            goid: s.goid,
            g,
            kind,
            chans,
            sleep_timer: (kind == WaitKind::Sleep && s.timer != 0).then_some(s.timer),
            pcs,
        })
    }

    /// The `c` of each sudog on `g.waiting`; `None` if the chain is not this goroutine's.
    fn chans(&self, g: u64, first: u64) -> Option<Vec<u64>> {
        let l = self.l;
        let mut chans = Vec::new();
        let mut sg = first;
        while sg != 0 {
            if chans.len() >= self.limits.max_chans {
                return None;
            }
            let raw = self.mem.read_vec(sg, l.sudog_read_len()).ok()?;
            if word(&raw, l.sudog_g as usize) != g {
                return None;
            }
            // selectgo clears `c` of every case before unlinking them after a wake-up.
            let c = word(&raw, l.sudog_c as usize);
            if c == 0 {
                return None;
            }
            chans.push(c);
            sg = word(&raw, l.sudog_waitlink as usize);
        }
        Some(chans)
    }

    /// Return addresses from the saved PC up the frame-pointer chain. Each frame's BP slot holds
    /// the caller's BP and the word above it the return address; callers' frames lie at higher
    /// addresses, so the chain must climb and stay inside `[lo, hi)`.
    fn unwind(&self, s: &GState) -> Vec<u64> {
        let mut pcs = Vec::new();
        if s.pc == 0 {
            return pcs;
        }
        pcs.push(s.pc.wrapping_sub(self.load_bias));
        let start = s.sp.min(s.bp).max(s.lo);
        if s.lo >= s.hi || start >= s.hi {
            return pcs;
        }
        let len = (s.hi - start).min(self.limits.max_stack_bytes as u64);
        let Ok(stack) = self.mem.read_vec(start, len as usize) else {
            return pcs;
        };
        let end = start + len;
        let mut bp = s.bp;
        while pcs.len() < self.limits.max_depth {
            if bp < start || bp & 7 != 0 || bp.saturating_add(16) > end {
                break;
            }
            let at = (bp - start) as usize;
            let (next, ret) = (word(&stack, at), word(&stack, at + 8));
            if ret == 0 {
                break;
            }
            pcs.push(ret.wrapping_sub(self.load_bias));
            if next <= bp {
                break;
            }
            bp = next;
        }
        pcs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GO127: WaitReasons = WaitReasons {
        chan_receive: 19,
        select: 18,
        select_no_cases: 17,
        sleep: 14,
    };

    fn layout() -> GoroutineLayout {
        GoroutineLayout {
            allgs_vaddr: 0,
            g_stack_lo: 0,
            g_stack_hi: 8,
            g_sched_sp: 56,
            g_sched_pc: 64,
            g_sched_bp: 96,
            g_status: 144,
            g_goid: 152,
            g_waitreason: 176,
            g_waiting: 320,
            g_tracking_seq: Some(191),
            g_timer: 360,
            sudog_g: 0,
            sudog_waitlink: 72,
            sudog_c: 96,
            wait: Some(GO127),
            wait_reasons_decoded: false,
        }
    }

    /// A stack in this very process, read through ProcMem like a target's: frames are
    /// (caller's BP, return address) pairs.
    #[test]
    fn unwind_follows_frame_pointers_and_stops_on_hostile_chains() {
        let mut stack = vec![0u64; 64];
        let base = stack.as_ptr() as u64;
        let at = |i: usize| base + 8 * i as u64;
        let frames = |stack: &mut Vec<u64>, links: &[(usize, u64, u64)]| {
            stack.fill(0);
            for &(i, next, ret) in links {
                stack[i] = next;
                stack[i + 1] = ret;
            }
        };
        let mem = ProcMem::new(std::process::id());
        let l = layout();
        let mut limits = WalkLimits::default();
        let s = GState {
            lo: base,
            hi: at(64),
            sp: at(2),
            pc: 0x1010,
            bp: at(4),
            ..GState::default()
        };
        let unwind = |stack: &Vec<u64>, limits: &WalkLimits| {
            let w = Walker {
                mem: &mem,
                l: &l,
                reasons: GO127,
                load_bias: 0x10,
                limits,
            };
            // Keep the stack alive and unmoved while it is read.
            let pcs = w.unwind(&s);
            assert_eq!(stack.as_ptr() as u64, base);
            pcs
        };

        frames(
            &mut stack,
            &[(4, at(10), 0x1110), (10, at(20), 0x2220), (20, 0, 0x3330)],
        );
        assert_eq!(unwind(&stack, &limits), [0x1000, 0x1100, 0x2210, 0x3320]);

        // A frame pointing back down (a loop) ends the walk after that frame.
        frames(&mut stack, &[(4, at(10), 0x1110), (10, at(4), 0x2220)]);
        assert_eq!(unwind(&stack, &limits), [0x1000, 0x1100, 0x2210]);

        // Leaving the stack, or a misaligned BP, ends it too.
        frames(&mut stack, &[(4, at(10) + 4096, 0x1110)]);
        assert_eq!(unwind(&stack, &limits), [0x1000, 0x1100]);
        frames(&mut stack, &[(4, at(10) + 3, 0x1110)]);
        assert_eq!(unwind(&stack, &limits), [0x1000, 0x1100]);

        // Depth is bounded however long the chain.
        let chain: Vec<_> = (0..30).map(|k| (2 * k + 2, at(2 * k + 4), 0x10)).collect();
        frames(&mut stack, &chain);
        limits.max_depth = 5;
        assert_eq!(unwind(&stack, &limits).len(), 5);
    }

    #[test]
    fn wait_kinds_follow_the_binarys_numbers() {
        let go121 = WaitReasons {
            chan_receive: 14,
            select: 9,
            select_no_cases: 10,
            sleep: 19,
        };
        let go127 = GO127;
        // The same number means a sleep in one release and a channel receive in the other.
        assert_eq!(WaitKind::from_reason(&go121, 19), Some(WaitKind::Sleep));
        assert_eq!(
            WaitKind::from_reason(&go127, 19),
            Some(WaitKind::ChanReceive)
        );
        assert_eq!(
            WaitKind::from_reason(&go127, 17),
            Some(WaitKind::SelectNoCases)
        );
        // IO wait (2 everywhere) is no timer wait.
        assert_eq!(WaitKind::from_reason(&go127, 2), None);
        assert_eq!(WaitKind::from_reason(&go121, 2), None);
    }
}
