//! Timer ownership by address.
//!
//! The owner of a timer is the task that set it up or first armed it in process context. Later
//! events on the same address (expiry in hardirq, re-arm from softirq or a kworker) are credited to
//! that owner, whoever `current` is, until the address is set up again.

use aya_ebpf::{
    helpers::bpf_get_stack,
    macros::map,
    maps::{LruHashMap, PerCpuArray},
    EbpfContext,
};
use timerwatch_common::{flags, Event, EventKind, IrqRanges, Owner, IRQ_RANGES, IRQ_STACK_DEPTH};

use crate::{
    filter::{config, current, current_traced},
    output::{emit, emit_with_stack, user_fingerprint},
};

/// Set by the loader (see `timerwatch_common::IrqRanges`).
#[unsafe(export_name = "IRQ_RANGES")]
static IRQ_RANGE_TABLE: IrqRanges = [[0; 2]; IRQ_RANGES];

/// Scratch space for a kernel stack: too big for the 512-byte BPF stack.
#[map]
static KSTACK: PerCpuArray<[u64; IRQ_STACK_DEPTH]> = PerCpuArray::with_max_entries(1, 0);

/// LRU so that timers freed without a final cancel (the common case) age out on their own.
#[map]
pub static OWNERS: LruHashMap<u64, Owner> = LruHashMap::with_max_entries(1 << 18, 0);

/// `timer_init` / `hrtimer_setup`: a (re)initialised object. The address may have belonged to
/// another timer before; whoever sets it up now owns it.
#[inline(always)]
pub fn on_init(addr: u64, timer_list: bool) {
    let cfg = config();
    let (tgid, tid) = current();
    if current_traced(&cfg, tgid) {
        // timerfd_settime re-initialises its hrtimer on every arm: the same process setting
        // up the same address again keeps what is known (the fingerprint decides at the arm).
        if unsafe { OWNERS.get(&addr) }.is_some_and(|o| o.tgid == tgid) {
            return;
        }
        let owner = Owner {
            tgid,
            tid,
            has_callsite: 0,
            fixed: 0,
            expires: 0,
            fingerprint: 0,
        };
        let _ = OWNERS.insert(&addr, &owner, 0);
    } else if let Some(old) = unsafe { OWNERS.get(&addr) } {
        // Memory a traced process used is now someone else's timer: tell the daemon to forget it.
        let old = *old;
        let _ = OWNERS.remove(&addr);
        emit(Event {
            timer: addr,
            tgid: old.tgid,
            tid: old.tid,
            cur_tgid: tgid,
            kind: EventKind::Forget as u8,
            flags: if timer_list { flags::TIMER_LIST } else { 0 },
            ..Event::default()
        });
    }
}

/// An arm. Known timers cost one lookup and a small record; a timer's first arm in its owner's
/// process context also carries the user stack that names its callsite. `pinned` timers
/// (per-CPU, see `HRTIMER_MODE_PINNED`) are never given a new owner.
#[inline(always)]
pub fn on_start<C: EbpfContext>(
    ctx: &C,
    addr: u64,
    function: u64,
    expires: u64,
    arg: u64,
    timer_list: bool,
    pinned: bool,
    soft_expires: u64,
) {
    let (tgid, tid) = current();
    let mut ev = Event {
        timer: addr,
        function,
        expires,
        arg,
        cur_tgid: tgid,
        kind: EventKind::Start as u8,
        flags: if timer_list { flags::TIMER_LIST } else { 0 },
        ..Event::default()
    };
    if let Some(owner) = OWNERS.get_ptr_mut(&addr) {
        let o = unsafe { &mut *owner };
        o.expires = soft_expires;
        ev.tgid = o.tgid;
        ev.tid = o.tid;
        if o.has_callsite != 0 && (o.fixed != 0 || o.tgid != tgid) {
            emit(ev);
            return;
        }
        if o.tgid == tgid {
            let fingerprint = user_fingerprint();
            if o.has_callsite != 0 && o.fingerprint == fingerprint {
                emit(ev);
                return;
            }
            o.has_callsite = 1;
            o.fingerprint = fingerprint;
            ev.flags |= flags::NEW_OWNER;
            emit_with_stack(ctx, ev);
        } else {
            ev.flags |= flags::NEW_OWNER;
            // Set up by one process (e.g. a parent at fork), armed by another context: keep the
            // owner and wait for an arm in its own context for the stack.
            emit(ev);
        }
        return;
    }
    let cfg = config();
    if pinned || !current_traced(&cfg, tgid) || in_interrupt(ctx) {
        return;
    }
    let owner = Owner {
        tgid,
        tid,
        has_callsite: 1,
        fixed: 0,
        expires: soft_expires,
        fingerprint: user_fingerprint(),
    };
    let _ = OWNERS.insert(&addr, &owner, 0);
    ev.tgid = tgid;
    ev.tid = tid;
    ev.flags |= flags::NEW_OWNER;
    emit_with_stack(ctx, ev);
}

/// Whether the kernel stack passes through the interrupt or softirq machinery. Costs a kernel
/// stack walk, so it runs only when an unknown timer is about to get an owner.
#[inline(always)]
fn in_interrupt<C: EbpfContext>(ctx: &C) -> bool {
    let Some(frames) = KSTACK.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a per-CPU slot; tracepoint programs do not nest on one CPU for this path.
    let frames = unsafe { &mut *frames };
    let n = unsafe {
        bpf_get_stack(
            ctx.as_ptr(),
            frames.as_mut_ptr().cast(),
            (IRQ_STACK_DEPTH * 8) as u32,
            0,
        )
    };
    if n <= 0 {
        return false;
    }
    let n = (n as usize / 8).min(IRQ_STACK_DEPTH);
    for (i, &addr) in frames.iter().enumerate() {
        if i >= n {
            break;
        }
        for r in 0..IRQ_RANGES {
            // SAFETY: a read-only global; volatile so the loader's value is read, not the zeros.
            let (start, end) = unsafe {
                (
                    core::ptr::read_volatile(&IRQ_RANGE_TABLE[r][0]),
                    core::ptr::read_volatile(&IRQ_RANGE_TABLE[r][1]),
                )
            };
            if addr >= start && addr < end {
                return true;
            }
        }
    }
    false
}

/// A cancel: forwarded only for timers we own.
#[inline(always)]
pub fn on_cancel(addr: u64, timer_list: bool) {
    let Some(owner) = (unsafe { OWNERS.get(&addr) }) else {
        return;
    };
    let (cur_tgid, _) = current();
    emit(Event {
        timer: addr,
        tgid: owner.tgid,
        tid: owner.tid,
        cur_tgid,
        kind: EventKind::Cancel as u8,
        flags: if timer_list { flags::TIMER_LIST } else { 0 },
        ..Event::default()
    });
}

/// An expiry of a timer we own. `now` is the timer's clock at expiry (hrtimers), so the slack
/// against the requested expiry travels with the record; wake-ups until the matching
/// expire_exit on this CPU are credited to this timer (see `wakeup`).
#[inline(always)]
pub fn on_expire(addr: u64, function: u64, now: Option<u64>, timer_list: bool) {
    let Some(owner) = (unsafe { OWNERS.get(&addr) }) else {
        return;
    };
    let (cur_tgid, _) = current();
    let mut ev = Event {
        timer: addr,
        function,
        tgid: owner.tgid,
        tid: owner.tid,
        cur_tgid,
        kind: EventKind::Expire as u8,
        flags: if timer_list { flags::TIMER_LIST } else { 0 },
        ..Event::default()
    };
    if let Some(now) = now {
        if owner.expires != 0 && now >= owner.expires {
            ev.arg = now - owner.expires;
            ev.flags |= flags::SLACK;
        }
    }
    crate::wakeup::expiring(addr, owner.tgid, timer_list);
    emit(ev);
}
