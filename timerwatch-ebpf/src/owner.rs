//! Timer ownership by address, and re-arms counted in the kernel.
//!
//! The owner of a timer is the task that set it up or first armed it in process context. Later
//! events on the same address (expiry in hardirq, re-arm from softirq or a kworker) are credited to
//! that owner, whoever `current` is, until the address is set up again.
//!
//! A re-arm of an armed timer is a cancel followed by a start (`timerfd_settime`, `mod_timer`,
//! `hrtimer_start` on a queued timer, all inside one locked section on one CPU). Sending both as
//! records is most of what a busy re-arming timer costs, and neither changes what is live. So a
//! cancel is held back, on its owner (`cancel_held`) and in a per-CPU slot: a start that finds it
//! from the same callsite counts one re-arm in the owner and sends nothing; otherwise the next
//! tracepoint on that CPU, whatever it is, sends the cancel first, stamped when it is sent (see
//! [`held_cancel_mark`]).
//! Counted re-arms go out as one `Rearms` record per [`REARMS_BATCH`] or [`REARMS_DELAY_JIFFIES`],
//! and before the timer's next cancel, expiry or change of owner.
//!
//! Nesting: classic tracepoint programs never nest on a CPU (one busy flag per CPU), but BTF raw
//! tracepoint programs are kept only from re-entering themselves, so an expiry in hardirq can
//! run inside a process-context program. The arm and cancel programs run with interrupts off
//! (under the timer base lock), so nothing interleaves with them; elsewhere (set-up, sched
//! events) an interrupting program can at worst send a held cancel early, which the start then
//! finds gone and records as a plain start: `send_cancel` clears `cancel_held` before it sends, so
//! a cancel is never sent twice.

use aya_ebpf::{
    helpers::{bpf_get_stack, bpf_jiffies64, bpf_ktime_get_ns},
    macros::map,
    maps::{LruHashMap, PerCpuArray},
    EbpfContext,
};
use timerwatch_common::{flags, Event, EventKind, IrqRanges, Owner, IRQ_RANGES, IRQ_STACK_DEPTH};

use crate::{
    filter::{current, current_task, current_traced, setting},
    output::{emit, emit_at, emit_with_stack},
    user_stack::user_regs_of,
};

/// Counted re-arms are sent at least every this many…
const REARMS_BATCH: u32 = 64;
/// …and at least every this many ticks while they keep coming, so totals lag by little: 10 ms
/// at HZ=1000, 100 ms at HZ=100. Ticks, not ns: a re-arm reads no clock (see
/// [`held_cancel_mark`]).
const REARMS_DELAY_JIFFIES: u64 = 10;

/// Set by the loader (see `timerwatch_common::IrqRanges`).
#[unsafe(export_name = "IRQ_RANGES")]
static IRQ_RANGE_TABLE: IrqRanges = [[0; 2]; IRQ_RANGES];

/// Scratch space for a kernel stack: too big for the 512-byte BPF stack.
#[map]
static KSTACK: PerCpuArray<[u64; IRQ_STACK_DEPTH]> = PerCpuArray::with_max_entries(1, 0);

/// LRU so that timers freed without a final cancel (the common case) age out on their own.
#[map]
pub static OWNERS: LruHashMap<u64, Owner> = LruHashMap::with_max_entries(1 << 18, 0);

/// The timer whose cancel a CPU holds back.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Held {
    /// 0: none.
    addr: u64,
    /// Its owner's process.
    tgid: u32,
    /// Non-zero once its owner set it up again (inside `timerfd_settime`/`timer_settime`),
    /// for the start that follows: kept here rather than in `Owner::set_up`, so that set-up
    /// costs no `OWNERS` lookup (see `on_init`).
    set_up: u32,
}

const NONE_HELD: Held = Held {
    addr: 0,
    tgid: 0,
    set_up: 0,
};

#[map]
static HELD_CANCEL: PerCpuArray<Held> = PerCpuArray::with_max_entries(1, 0);

/// Send the cancel this CPU holds back, unless it is `keep`'s (its start may follow); then
/// return this CPU's slot (null if the lookup failed) and what it holds if that is `keep`'s
/// (else a copy holding nothing). Every program calls this (or [`release_held`]) first, so
/// records leave in the order things happened on this CPU; callers that go on to change the
/// slot do so through the pointer returned, not a second lookup. Programs of one CPU never
/// nest, so the slot needs no atomics.
#[inline(always)]
pub fn release_held_except(keep: u64) -> (*mut Held, Held) {
    let Some(slot) = HELD_CANCEL.get_ptr_mut(0) else {
        return (core::ptr::null_mut(), NONE_HELD);
    };
    // SAFETY: this CPU's slot from a successful lookup; programs on one CPU never nest here.
    let held = unsafe { *slot };
    if held.addr == 0 {
        return (slot, NONE_HELD);
    }
    if held.addr == keep {
        return (slot, held);
    }
    // SAFETY: this CPU's slot from a successful lookup; programs on one CPU never nest here.
    unsafe { (*slot).addr = 0 };
    if let Some(o) = OWNERS.get_ptr_mut(held.addr) {
        // SAFETY: points into the map's preallocated storage for the whole run; the verifier bounds
        // each access, so a concurrent remove can at worst alias another entry, not fault.
        send_cancel(held.addr, unsafe { &mut *o });
    }
    (slot, NONE_HELD)
}

/// [`release_held_except`] keeping nothing; returns this CPU's slot (null if the lookup failed).
#[inline(always)]
pub fn release_held() -> *mut Held {
    release_held_except(0).0
}

/// The start of the held timer consumed `slot`: it is free. Only `addr` is cleared (0 says
/// the rest is stale): a whole-struct store of zeros compiles to a call of the BPF build's
/// `memset`, a byte loop, which cost every re-arm ~16 iterations of it.
#[inline(always)]
fn clear_held(slot: *mut Held) {
    if !slot.is_null() {
        // SAFETY: this CPU's slot from a successful lookup; programs on one CPU never nest here.
        unsafe { (*slot).addr = 0 };
    }
}

/// The held timer's owner set it up again.
#[inline(always)]
fn mark_held_set_up(slot: *mut Held) {
    if !slot.is_null() {
        // SAFETY: this CPU's slot from a successful lookup; programs on one CPU never nest here.
        unsafe { (*slot).set_up = 1 };
    }
}

#[inline(always)]
fn list_flag(o: &Owner) -> u8 {
    if o.timer_list != 0 {
        flags::TIMER_LIST
    } else {
        0
    }
}

/// What a held cancel leaves in `Owner::cancel_held`: non-zero, and the jiffies (the verifier
/// inlines `bpf_jiffies64` to a load; tracing programs may not read the coarse clock). Not
/// `bpf_ktime_get_ns`: on the test VM a fine clock read (a TSC read in a VM behind a
/// retpolined clocksource call) was about a quarter of the cancel program's time, and most
/// held cancels are re-arms, for which the time only paces the `Rearms` records
/// ([`REARMS_DELAY_JIFFIES`]). A cancel that is sent takes the fine clock then
/// (`send_cancel`), so it is stamped late by the time until the next program on its CPU (at
/// most a tick on a running CPU, where the tick's own hrtimer expiry runs one), never early:
/// its record never precedes the arm before it, and a life it ends is never shorter than it
/// was.
#[inline(always)]
fn held_cancel_mark() -> u64 {
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_jiffies64() };
    now | 1
}

/// Send `o`'s held-back cancel, if no start took it meanwhile (on another CPU).
#[inline(always)]
fn send_cancel(addr: u64, o: &mut Owner) {
    if o.cancel_held == 0 {
        return;
    }
    o.cancel_held = 0;
    // SAFETY: the helper has no preconditions.
    let ts = unsafe { bpf_ktime_get_ns() };
    send_rearms(addr, o, ts, 0);
    emit_at(
        owner_event(addr, o, o.cancel_cur_tgid, EventKind::Cancel),
        ts,
    );
}

/// A record about owned timer `addr`, as seen from a task of `cur_tgid`.
#[inline(always)]
fn owner_event(addr: u64, o: &Owner, cur_tgid: u32, kind: EventKind) -> Event {
    Event {
        timer: addr,
        tgid: o.tgid,
        tid: o.tid,
        cur_tgid,
        kind: kind as u8,
        flags: list_flag(o),
        ..Event::default()
    }
}

/// Send the re-arms counted since the last `Rearms` record, if any. `cur_tgid` 0 outside the
/// re-arming context: such a record is no sign of the owner's life.
#[inline(always)]
fn send_rearms(addr: u64, o: &mut Owner, now: u64, cur_tgid: u32) {
    if o.rearms == o.rearms_sent {
        return;
    }
    o.rearms_sent = o.rearms;
    // SAFETY: the helper has no preconditions.
    o.rearms_sent_jiffies = unsafe { bpf_jiffies64() };
    emit_at(
        Event {
            expires: o.expires,
            arg: o.rearms as u64,
            ..owner_event(addr, o, cur_tgid, EventKind::Rearms)
        },
        now,
    );
}

/// `timer_init` / `hrtimer_setup`: a (re)initialised object. The address may have belonged to
/// another timer before; whoever sets it up now owns it. Returns whether it may be the
/// hrtimer of a `timer_create` in flight (see `posix`): set up by a traced task, and not an
/// armed timer set up again by its owner (its cancel held on this CPU), which is no new object.
#[inline(always)]
pub fn on_init(addr: u64, timer_list: bool) -> bool {
    // timerfd_settime: cancel, set-up, start; the cancel stays held for the start.
    let (slot, held) = release_held_except(addr);
    let (tgid, tid) = current();
    // Its owner setting it up again (a held cancel: an armed timer re-armed; none: a disarmed
    // timerfd re-armed, a new sleep on a reused stack slot) keeps what is known, and marks the
    // arm that follows as a user call whose fingerprint decides its callsite. Checked before the
    // filter, as this is the hot case; the held case, every re-arm of an armed timerfd or
    // POSIX timer, without even an `OWNERS` lookup (the cancel found the owner, and the start
    // follows inside the same locked section on this CPU). Memory reused for the other kind of
    // timer is a new timer: the owner's kind flags every record sent on its behalf.
    if held.addr == addr && held.tgid == tgid && tgid != 0 {
        mark_held_set_up(slot);
        return false;
    }
    let mut known = None;
    if let Some(o) = OWNERS.get_ptr_mut(addr) {
        // SAFETY: a map value pointer is valid for the program's run; a concurrent update can
        // make the fields stale, never the access a fault.
        let o = unsafe { &mut *o };
        if o.tgid == tgid && o.timer_list == timer_list as u8 {
            o.set_up = 1;
            return true;
        }
        known = Some(*o);
    }
    if current_traced(tgid) {
        let owner = Owner {
            timer_list: timer_list as u8,
            ..Owner::new(tgid, tid)
        };
        let _ = OWNERS.insert(addr, owner, 0);
        return true;
    } else if let Some(mut old) = known {
        // Memory a traced process used is now someone else's timer: tell the daemon to forget it
        // (after what it still holds for it).
        if old.cancel_held != 0 {
            send_cancel(addr, &mut old);
        } else {
            // SAFETY: the helper has no preconditions.
            send_rearms(addr, &mut old, unsafe { bpf_ktime_get_ns() }, 0);
        }
        let _ = OWNERS.remove(addr);
        emit(owner_event(addr, &old, tgid, EventKind::Forget));
    }
    false
}

/// An arm. Known timers cost one lookup and a small record; a timer's first arm in its owner's
/// process context also carries the user stack that names its callsite. `pinned` timers
/// (per-CPU, see `HRTIMER_MODE_PINNED`) are never given a new owner.
#[inline(always)]
// Inlined into each tracepoint: a parameter struct would only cost copies on the 512-byte stack.
#[allow(clippy::too_many_arguments)]
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
    let (slot, held) = release_held_except(addr);
    // This start consumes the slot: a cancel held for it is counted below (or sent, if the
    // callsite changed), and so is the set-up noted there.
    let set_up_here = held.addr == addr && held.set_up != 0;
    if held.addr == addr {
        clear_held(slot);
    }
    let cur = current_task();
    let (tgid, tid) = (cur.tgid, cur.tid);
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
    if let Some(owner) = OWNERS.get_ptr_mut(addr) {
        // SAFETY: points into the map's preallocated storage for the whole run; the verifier bounds
        // each access, so a concurrent remove can at worst alias another entry, not fault.
        let o = unsafe { &mut *owner };
        // A cancel not sent yet: this start re-arms the timer.
        let cancel_held = o.cancel_held;
        o.cancel_held = 0;
        o.expires = soft_expires;
        ev.tgid = o.tgid;
        ev.tid = o.tid;
        // Not set up since its last arm: the kernel re-arms it (timerfd `read()`, a callback,
        // signal dequeue), whoever's user code is running; the callsite stays. (An expiry
        // record cannot say this: tracepoint programs that fire while another runs on the same
        // CPU are skipped, so expiries are sometimes missed.)
        let rearmed_by_kernel = core::mem::replace(&mut o.set_up, 0) == 0 && !set_up_here;
        let same_callsite =
            if o.has_callsite != 0 && (o.fixed != 0 || o.tgid != tgid || rearmed_by_kernel) {
                true
            } else if o.tgid == tgid {
                // With the callback: memory set up again for another kind of timer (a freed
                // socket's slab reused for a TIME_WAIT socket) is another timer, even when the same
                // user context arms it. The exact registers first: equal ones are taken for the
                // same call path without reading user memory (see `UserRegs::key`).
                let regs = user_regs_of(cur.task);
                let key = regs.key() ^ function;
                if o.has_callsite != 0 && o.regs_key == key {
                    true
                } else {
                    let fingerprint = regs.fingerprint() ^ function;
                    let same = o.has_callsite != 0 && o.fingerprint == fingerprint;
                    o.fingerprint = fingerprint;
                    o.regs_key = key;
                    same
                }
            } else {
                false
            };
        if same_callsite {
            if cancel_held == 0 {
                emit(ev);
                return;
            }
            o.rearms = o.rearms.wrapping_add(1);
            // Signed: the mark's `| 1` may put it a tick "before" the last send.
            if o.rearms.wrapping_sub(o.rearms_sent) >= REARMS_BATCH
                || (cancel_held.wrapping_sub(o.rearms_sent_jiffies) as i64)
                    >= REARMS_DELAY_JIFFIES as i64
            {
                // SAFETY: the helper has no preconditions.
                send_rearms(addr, o, unsafe { bpf_ktime_get_ns() }, tgid);
            }
            return;
        }
        // Another callsite: what the old one holds goes first, then the counts start over.
        if cancel_held != 0 {
            o.cancel_held = cancel_held;
            send_cancel(addr, o);
        }
        o.rearms = 0;
        o.rearms_sent = 0;
        ev.flags |= flags::NEW_OWNER;
        if o.tgid == tgid {
            o.has_callsite = 1;
            emit_with_stack(ctx, ev, true);
        } else {
            // Set up by one process (e.g. a parent at fork), armed by another context: keep the
            // owner and wait for an arm in its own context for the stack.
            emit(ev);
        }
        return;
    }
    if pinned || !current_traced(tgid) || in_interrupt(ctx) {
        return;
    }
    let regs = user_regs_of(cur.task);
    let owner = Owner {
        has_callsite: 1,
        timer_list: timer_list as u8,
        expires: soft_expires,
        fingerprint: regs.fingerprint() ^ function,
        regs_key: regs.key() ^ function,
        ..Owner::new(tgid, tid)
    };
    let _ = OWNERS.insert(addr, owner, 0);
    ev.tgid = tgid;
    ev.tid = tid;
    ev.flags |= flags::NEW_OWNER;
    emit_with_stack(ctx, ev, true);
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
    // SAFETY: `frames` is this CPU's scratch array of IRQ_STACK_DEPTH words and the helper
    // writes at most that many bytes.
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
        // Indexed volatile reads of the loader-patched global, in the bounded loop shape the
        // verifier already accepts.
        #[allow(clippy::needless_range_loop)]
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

/// A cancel of a timer we own: held back (see the module comment).
#[inline(always)]
pub fn on_cancel(addr: u64) {
    let slot = release_held();
    let Some(owner) = OWNERS.get_ptr_mut(addr) else {
        return;
    };
    // SAFETY: points into the map's preallocated storage for the whole run; the verifier bounds
    // each access, so a concurrent remove can at worst alias another entry, not fault.
    let o = unsafe { &mut *owner };
    // Held on another CPU and not taken by a start: it goes now.
    send_cancel(addr, o);
    let (cur_tgid, _) = current();
    if setting!(count_rearms) == 0 {
        emit(owner_event(addr, o, cur_tgid, EventKind::Cancel));
        return;
    }
    o.cancel_held = held_cancel_mark();
    o.cancel_cur_tgid = cur_tgid;
    if !slot.is_null() {
        // SAFETY: this CPU's slot from a successful lookup; programs on one CPU never nest here.
        unsafe {
            *slot = Held {
                addr,
                tgid: o.tgid,
                set_up: 0,
            }
        };
    }
}

/// An expiry of a timer we own. `now` is the timer's clock at expiry (hrtimers), so the slack
/// against the requested expiry travels with the record; wake-ups until the matching
/// expire_exit on this CPU are credited to this timer (see `wakeup`).
#[inline(always)]
pub fn on_expire(addr: u64, function: u64, now: Option<u64>) {
    release_held();
    let Some(owner) = OWNERS.get_ptr_mut(addr) else {
        return;
    };
    // SAFETY: points into the map's preallocated storage for the whole run; the verifier bounds
    // each access, so a concurrent remove can at worst alias another entry, not fault.
    let owner = unsafe { &mut *owner };
    if owner.rearms != owner.rearms_sent {
        // SAFETY: the helper has no preconditions.
        send_rearms(addr, owner, unsafe { bpf_ktime_get_ns() }, 0);
    }
    let (cur_tgid, _) = current();
    let mut ev = Event {
        function,
        ..owner_event(addr, owner, cur_tgid, EventKind::Expire)
    };
    if let Some(now) = now {
        if owner.expires != 0 && now >= owner.expires {
            ev.arg = now - owner.expires;
            ev.flags |= flags::SLACK;
        }
    }
    crate::expiring::expiring(addr, owner.tgid, owner.timer_list != 0);
    emit(ev);
}
