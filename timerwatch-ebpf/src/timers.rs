//! `timer:*` tracepoints: hrtimers, timer_list timers and interval timers.
//!
//! Field offsets come from `CONFIG.offsets` (read from each tracepoint's `format` at load time).

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use timerwatch_common::{
    Event, EventKind, Owner, HRTIMER_MODE_HARD, HRTIMER_MODE_PINNED, TIMER_PINNED,
};

use crate::{
    filter::{current, current_traced, setting, tgid_traced},
    output::{emit, emit_with_stack},
    owner::{on_cancel, on_expire, on_init, on_start, release_held, OWNERS},
    posix,
};

#[inline(always)]
fn field<T>(ctx: &TracePointContext, off: u32) -> T
where
    T: Default,
{
    // SAFETY: the offset is this field's, from the tracepoint's `format` file; read_at copies
    // through bpf_probe_read_kernel, so a wrong offset yields a wrong value, never a fault.
    unsafe { ctx.read_at::<T>(off as usize) }.unwrap_or_default()
}

/// Attached to `timer:hrtimer_setup` (6.15+) or `timer:hrtimer_init` (older kernels).
#[tracepoint]
pub fn hrtimer_init(ctx: TracePointContext) -> u32 {
    let addr: u64 = field(&ctx, setting!(offsets.hrtimer_init_hrtimer));
    on_init(addr, false);
    posix::note_hrtimer_setup(addr);
    0
}

#[tracepoint]
pub fn hrtimer_start(ctx: TracePointContext) -> u32 {
    let addr: u64 = field(&ctx, setting!(offsets.hrtimer_start_hrtimer));
    let function: u64 = field(&ctx, setting!(offsets.hrtimer_start_function));
    let expires: u64 = field(&ctx, setting!(offsets.hrtimer_start_expires));
    let mode: u32 = field(&ctx, setting!(offsets.hrtimer_start_mode));
    let kernel_only = mode & (HRTIMER_MODE_PINNED | HRTIMER_MODE_HARD) != 0;
    let pinned = kernel_only && function != setting!(sleeper_fn);
    let soft: u64 = field(&ctx, setting!(offsets.hrtimer_start_softexpires));
    on_start(
        &ctx,
        addr,
        function,
        expires,
        mode as u64,
        false,
        pinned,
        soft,
    );
    0
}

#[tracepoint]
pub fn hrtimer_cancel(ctx: TracePointContext) -> u32 {
    let addr: u64 = field(&ctx, setting!(offsets.hrtimer_cancel_hrtimer));
    on_cancel(addr);
    0
}

#[tracepoint]
pub fn hrtimer_expire_entry(ctx: TracePointContext) -> u32 {
    let addr: u64 = field(&ctx, setting!(offsets.hrtimer_expire_hrtimer));
    let function: u64 = field(&ctx, setting!(offsets.hrtimer_expire_function));
    let now: u64 = field(&ctx, setting!(offsets.hrtimer_expire_now));
    on_expire(addr, function, Some(now));
    0
}

#[tracepoint]
pub fn hrtimer_expire_exit(_ctx: TracePointContext) -> u32 {
    release_held();
    crate::expiring::expired();
    0
}

#[tracepoint]
pub fn timer_init(ctx: TracePointContext) -> u32 {
    let addr: u64 = field(&ctx, setting!(offsets.timer_init_timer));
    on_init(addr, true);
    0
}

#[tracepoint]
pub fn timer_start(ctx: TracePointContext) -> u32 {
    let addr: u64 = field(&ctx, setting!(offsets.timer_start_timer));
    let function: u64 = field(&ctx, setting!(offsets.timer_start_function));
    let expires: u64 = field(&ctx, setting!(offsets.timer_start_expires));
    let flags: u32 = if setting!(offsets.timer_start_flags) != 0 {
        field(&ctx, setting!(offsets.timer_start_flags))
    } else {
        0
    };
    // `expires` is in jiffies: the jiffies of the arm let the daemon turn it into seconds.
    // SAFETY: the helper has no preconditions.
    let now = unsafe { aya_ebpf::helpers::bpf_jiffies64() };
    on_start(
        &ctx,
        addr,
        function,
        expires,
        now,
        true,
        flags & TIMER_PINNED != 0,
        expires,
    );
    0
}

#[tracepoint]
pub fn timer_cancel(ctx: TracePointContext) -> u32 {
    let addr: u64 = field(&ctx, setting!(offsets.timer_cancel_timer));
    on_cancel(addr);
    0
}

#[tracepoint]
pub fn timer_expire_entry(ctx: TracePointContext) -> u32 {
    let addr: u64 = field(&ctx, setting!(offsets.timer_expire_timer));
    let function: u64 = field(&ctx, setting!(offsets.timer_expire_function));
    on_expire(addr, function, None);
    0
}

#[tracepoint]
pub fn timer_expire_exit(_ctx: TracePointContext) -> u32 {
    release_held();
    crate::expiring::expired();
    0
}

/// Key for an interval timer in `OWNERS`. Kernel addresses have the top bits set, so a key built
/// from small integers cannot collide with a real timer address.
#[inline(always)]
fn itimer_key(tgid: u32, which: u32) -> u64 {
    ((tgid as u64) << 8) | (which as u64 & 0xff) | (1 << 48)
}

/// `setitimer`/`alarm`, always in the owner's process context.
#[tracepoint]
pub fn itimer_state(ctx: TracePointContext) -> u32 {
    release_held();
    let (tgid, tid) = current();
    if !current_traced(tgid) {
        return 0;
    }
    let which: i32 = field(&ctx, setting!(offsets.itimer_state_which));
    let unit = if setting!(offsets.itimer_state_usec) != 0 {
        1_000
    } else {
        1
    };
    let value_sec: i64 = field(&ctx, setting!(offsets.itimer_state_value_sec));
    let value_sub: i64 = field(&ctx, setting!(offsets.itimer_state_value_nsec));
    let interval_sec: i64 = field(&ctx, setting!(offsets.itimer_state_interval_sec));
    let interval_sub: i64 = field(&ctx, setting!(offsets.itimer_state_interval_nsec));
    let value = (value_sec as u64).wrapping_mul(1_000_000_000) + (value_sub as u64) * unit;
    let interval = (interval_sec as u64).wrapping_mul(1_000_000_000) + (interval_sub as u64) * unit;
    let ev = Event {
        timer: which as u64,
        expires: value,
        arg: interval,
        tgid,
        tid,
        cur_tgid: tgid,
        kind: EventKind::ItimerState as u8,
        ..Event::default()
    };
    let key = itimer_key(tgid, which as u32);
    // SAFETY: read at once; a concurrent insert or remove can make it wrong, never a fault.
    let known = unsafe { OWNERS.get(key) }.is_some();
    if value == 0 || known {
        emit(ev);
    } else {
        let owner = Owner::fixed_callsite(tgid, tid);
        let _ = OWNERS.insert(key, owner, 0);
        emit_with_stack(&ctx, ev, true);
    }
    0
}

/// Fires in interrupt context (ITIMER_REAL) or on the tick (VIRTUAL/PROF): the event names the
/// process in its `pid` field, which is what we filter on.
#[tracepoint]
pub fn itimer_expire(ctx: TracePointContext) -> u32 {
    release_held();
    let pid: i32 = field(&ctx, setting!(offsets.itimer_expire_pid));
    if !tgid_traced(pid as u32) {
        return 0;
    }
    let which: i32 = field(&ctx, setting!(offsets.itimer_expire_which));
    let (cur_tgid, _) = current();
    emit(Event {
        timer: which as u64,
        tgid: pid as u32,
        cur_tgid,
        kind: EventKind::ItimerExpire as u8,
        ..Event::default()
    });
    0
}
