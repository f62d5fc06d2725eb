//! Which timers wake which tasks, and how long the woken task waits for a CPU.
//!
//! `sched_switch` is the hottest tracepoint in the kernel, so the matching happens here and only
//! its result leaves: an owned timer's expiry marks this CPU (`crate::expiring`) until its callback
//! returns; a `sched_waking` inside that window marks the woken task (`WOKEN`); the switch into
//! that task emits one record with the expiry→run latency. A switch into any other task costs
//! one hash lookup that misses.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use timerwatch_common::{flags, Event, EventKind, Woken};

use crate::{filter::setting, output::emit};

/// LRU: a woken task that exits before it runs must not pin an entry.
#[map]
static WOKEN: LruHashMap<u32, Woken> = LruHashMap::with_max_entries(16384, 0);

#[tracepoint]
pub fn sched_waking(ctx: TracePointContext) -> u32 {
    crate::owner::release_held();
    let Some(e) = crate::expiring::current() else {
        return 0;
    };
    if e.active == 0 {
        return 0;
    }
    // SAFETY: the offset is this field's, from the tracepoint's `format` file; read_at copies
    // through bpf_probe_read_kernel, so a wrong offset yields a wrong value, never a fault.
    let pid: i32 = unsafe { ctx.read_at(setting!(offsets.sched_waking_pid) as usize) }.unwrap_or(0);
    if pid <= 0 {
        return 0;
    }
    let woken = Woken {
        timer: e.timer,
        ts_ns: e.ts_ns,
        tgid: e.tgid,
        timer_list: (e.active == 2) as u32,
    };
    let _ = WOKEN.insert(pid as u32, woken, 0);
    0
}

#[tracepoint]
pub fn sched_switch(ctx: TracePointContext) -> u32 {
    crate::owner::release_held();
    // SAFETY: the offset is this field's, from the tracepoint's `format` file; read_at copies
    // through bpf_probe_read_kernel, so a wrong offset yields a wrong value, never a fault.
    let next: i32 =
        unsafe { ctx.read_at(setting!(offsets.sched_switch_next_pid) as usize) }.unwrap_or(0);
    if next <= 0 {
        return 0;
    }
    let next = next as u32;
    // SAFETY: read at once; a concurrent insert or remove can make it wrong, never a fault.
    let Some(w) = (unsafe { WOKEN.get(next) }) else {
        return 0;
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
    0
}
