//! Which timers wake which tasks, and how long the woken task waits for a CPU.
//!
//! `sched_switch` is the hottest tracepoint in the kernel, so the matching happens here and only
//! its result leaves: an owned timer's expiry marks this CPU (`crate::expiring`) until its callback
//! returns; a `sched_waking` inside that window marks the woken task (`WOKEN`); the switch into
//! that task emits one record with the expiry→run latency. A switch costs a hash lookup only
//! when an owned timer woke some task lately (`LAST_WOKEN`): on the ping-pong bench that
//! lookup, always a miss, was a fifth of the switch program's time.

//!
//! Both have a classic tracepoint and a BTF-enabled raw tracepoint twin (`*_btf`), as in `timers`.

use aya_ebpf::{
    helpers::{bpf_jiffies64, bpf_ktime_get_ns},
    macros::{btf_tracepoint, map, tracepoint},
    maps::{Array, LruHashMap},
    programs::{BtfTracePointContext, TracePointContext},
};
use timerwatch_common::{flags, Event, EventKind, Woken};

use crate::{
    filter::setting,
    kernel::{arg, field},
    output::emit,
};

/// LRU: a woken task that exits before it runs must not pin an entry.
#[map]
static WOKEN: LruHashMap<u32, Woken> = LruHashMap::with_max_entries(16384, 0);

/// When (jiffies) a task was last marked in `WOKEN`. A switch looks `WOKEN` up only within
/// [`WAIT_WINDOW`] of that (0: never; jiffies start far from 0): a plain store, which racing
/// CPUs cannot get wrong. (A count of the entries could, without the atomic add that Rust's
/// core lacks on BPF: tried, and a 1 kHz timer's wake-ups came out 18% short in a callsite
/// test on a loaded machine; not all of that need have been lost updates, but any is too many.)
#[map]
static LAST_WOKEN: Array<u64> = Array::with_max_entries(1, 0);

/// A task still not run this long after its timer woke it loses its `Wakeup` record: 60 s at
/// HZ=1000, longer at lower HZ.
const WAIT_WINDOW: u64 = 60_000;

/// Whether a task may be waiting in `WOKEN`.
#[inline(always)]
fn any_waiting() -> bool {
    let Some(last) = LAST_WOKEN.get(0) else {
        return true;
    };
    // SAFETY: a plain read of the array's one slot.
    let last = unsafe { core::ptr::read_volatile(last) };
    // Up to 2 jiffies "ahead" counts too: another CPU may have stored a tick this one has not
    // read yet.
    // SAFETY: the helper has no preconditions.
    last != 0
        && unsafe { bpf_jiffies64() }
            .wrapping_add(2)
            .wrapping_sub(last)
            < WAIT_WINDOW + 2
}

/// `pid`: the woken task's, read only inside an owned timer's callback.
#[inline(always)]
fn waking(pid: impl Fn() -> i32) {
    crate::owner::release_held();
    let Some(e) = crate::expiring::current() else {
        return;
    };
    if e.active == 0 {
        return;
    }
    let pid = pid();
    if pid <= 0 {
        return;
    }
    let woken = Woken {
        timer: e.timer,
        ts_ns: e.ts_ns,
        tgid: e.tgid,
        timer_list: (e.active == 2) as u32,
    };
    let _ = WOKEN.insert(pid as u32, woken, 0);
    if let Some(last) = LAST_WOKEN.get_ptr_mut(0) {
        // SAFETY: the array's one slot, valid for the whole run; racing stores all store a
        // recent time.
        unsafe { *last = bpf_jiffies64() };
    }
}

#[tracepoint]
pub fn sched_waking(ctx: TracePointContext) -> u32 {
    waking(|| {
        // SAFETY: the offset is this field's, from the tracepoint's `format` file; read_at copies
        // through bpf_probe_read_kernel, so a wrong offset yields a wrong value, never a fault.
        unsafe { ctx.read_at(setting!(offsets.sched_waking_pid) as usize) }.unwrap_or(0)
    });
    0
}

/// `sched_waking(struct task_struct *p)`.
#[btf_tracepoint(function = "sched_waking")]
pub fn sched_waking_btf(ctx: BtfTracePointContext) -> u32 {
    waking(|| field(arg(&ctx, 0), setting!(kernel.task_pid)));
    0
}

#[inline(always)]
fn switch_to(next: i32) {
    crate::owner::release_held();
    if next <= 0 {
        return;
    }
    if !any_waiting() {
        return;
    }
    let next = next as u32;
    // SAFETY: read at once; a concurrent insert or remove can make it wrong, never a fault.
    let Some(w) = (unsafe { WOKEN.get(next) }) else {
        return;
    };
    let w = *w;
    let _ = WOKEN.remove(next);
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    emit(Event {
        timer: w.timer,
        arg: now.saturating_sub(w.ts_ns),
        tgid: w.tgid,
        tid: next,
        // Not the owner's own context: must not count as a sign of life after its exit.
        cur_tgid: 0,
        kind: EventKind::Wakeup as u8,
        flags: if w.timer_list != 0 {
            flags::TIMER_LIST
        } else {
            0
        },
        ..Event::default()
    });
}

#[tracepoint]
pub fn sched_switch(ctx: TracePointContext) -> u32 {
    // SAFETY: the offset is this field's, from the tracepoint's `format` file; read_at copies
    // through bpf_probe_read_kernel, so a wrong offset yields a wrong value, never a fault.
    switch_to(
        unsafe { ctx.read_at(setting!(offsets.sched_switch_next_pid) as usize) }.unwrap_or(0),
    );
    0
}

/// `sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next, ...)`.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch_btf(ctx: BtfTracePointContext) -> u32 {
    switch_to(field(arg(&ctx, 2), setting!(kernel.task_pid)));
    0
}
