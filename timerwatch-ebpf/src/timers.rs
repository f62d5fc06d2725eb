//! `timer:*` tracepoints: hrtimers, timer_list timers and interval timers.
//!
//! Each event has two programs: a classic tracepoint reading its `format` record at
//! `CONFIG.offsets`, and a BTF-enabled raw tracepoint (`*_btf`) reading the raw arguments and the
//! structs behind them at `CONFIG.kernel` (see `kernel`). The loader attaches one set; both feed
//! the same handlers, so what follows an event does not depend on how it was caught.

use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
    EbpfContext,
};
use timerwatch_common::{
    Event, EventKind, Owner, HRTIMER_MODE_HARD, HRTIMER_MODE_PINNED, TIMER_PINNED,
};

use crate::{
    filter::{current, current_traced, setting, tgid_traced},
    kernel::{arg, field as kfield, read},
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

#[inline(always)]
fn hrtimer_init_at(addr: u64) {
    // Only a traced task's new timer can be the hrtimer of a `timer_create` in flight: that
    // `PENDING` lookup is skipped for re-arms and for everyone else's timers.
    if on_init(addr, false) {
        posix::note_hrtimer_setup(addr);
    }
}

/// Attached to `timer:hrtimer_setup` (6.15+) or `timer:hrtimer_init` (older kernels).
#[tracepoint]
pub fn hrtimer_init(ctx: TracePointContext) -> u32 {
    hrtimer_init_at(field(&ctx, setting!(offsets.hrtimer_init_hrtimer)));
    0
}

/// `hrtimer_setup(struct hrtimer *, clockid_t, enum hrtimer_mode)` or `hrtimer_init(struct
/// hrtimer *, ...)`: the timer comes first in both.
#[btf_tracepoint(function = "hrtimer_setup")]
pub fn hrtimer_init_btf(ctx: BtfTracePointContext) -> u32 {
    hrtimer_init_at(arg(&ctx, 0));
    0
}

#[inline(always)]
fn hrtimer_start_at<C: EbpfContext>(
    ctx: &C,
    addr: u64,
    function: u64,
    expires: u64,
    soft: u64,
    mode: u32,
) {
    let kernel_only = mode & (HRTIMER_MODE_PINNED | HRTIMER_MODE_HARD) != 0;
    let pinned = kernel_only && function != setting!(sleeper_fn);
    on_start(
        ctx,
        addr,
        function,
        expires,
        mode as u64,
        false,
        pinned,
        soft,
    );
}

#[tracepoint]
pub fn hrtimer_start(ctx: TracePointContext) -> u32 {
    hrtimer_start_at(
        &ctx,
        field(&ctx, setting!(offsets.hrtimer_start_hrtimer)),
        field(&ctx, setting!(offsets.hrtimer_start_function)),
        field(&ctx, setting!(offsets.hrtimer_start_expires)),
        field(&ctx, setting!(offsets.hrtimer_start_softexpires)),
        field(&ctx, setting!(offsets.hrtimer_start_mode)),
    );
    0
}

/// `hrtimer_start(struct hrtimer *, enum hrtimer_mode, ...)`.
#[btf_tracepoint(function = "hrtimer_start")]
pub fn hrtimer_start_btf(ctx: BtfTracePointContext) -> u32 {
    let addr = arg(&ctx, 0);
    hrtimer_start_at(
        &ctx,
        addr,
        kfield(addr, setting!(kernel.hrtimer_function)),
        kfield(addr, setting!(kernel.hrtimer_expires)),
        kfield(addr, setting!(kernel.hrtimer_softexpires)),
        arg(&ctx, 1) as u32,
    );
    0
}

#[tracepoint]
pub fn hrtimer_cancel(ctx: TracePointContext) -> u32 {
    on_cancel(field(&ctx, setting!(offsets.hrtimer_cancel_hrtimer)));
    0
}

/// `hrtimer_cancel(struct hrtimer *)`.
#[btf_tracepoint(function = "hrtimer_cancel")]
pub fn hrtimer_cancel_btf(ctx: BtfTracePointContext) -> u32 {
    on_cancel(arg(&ctx, 0));
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

/// `hrtimer_expire_entry(struct hrtimer *, ktime_t *now)`.
#[btf_tracepoint(function = "hrtimer_expire_entry")]
pub fn hrtimer_expire_entry_btf(ctx: BtfTracePointContext) -> u32 {
    let addr = arg(&ctx, 0);
    let function: u64 = kfield(addr, setting!(kernel.hrtimer_function));
    let now: u64 = read(arg(&ctx, 1), 0);
    on_expire(addr, function, Some(now));
    0
}

#[inline(always)]
fn expire_exit() {
    release_held();
    crate::expiring::expired();
}

#[tracepoint]
pub fn hrtimer_expire_exit(_ctx: TracePointContext) -> u32 {
    expire_exit();
    0
}

#[btf_tracepoint(function = "hrtimer_expire_exit")]
pub fn hrtimer_expire_exit_btf(_ctx: BtfTracePointContext) -> u32 {
    expire_exit();
    0
}

#[tracepoint]
pub fn timer_init(ctx: TracePointContext) -> u32 {
    let _ = on_init(field(&ctx, setting!(offsets.timer_init_timer)), true);
    0
}

/// `timer_init(struct timer_list *)`.
#[btf_tracepoint(function = "timer_init")]
pub fn timer_init_btf(ctx: BtfTracePointContext) -> u32 {
    let _ = on_init(arg(&ctx, 0), true);
    0
}

#[inline(always)]
fn timer_start_at<C: EbpfContext>(ctx: &C, addr: u64, function: u64, expires: u64, flags: u32) {
    // `expires` is in jiffies: the jiffies of the arm let the daemon turn it into seconds.
    // SAFETY: the helper has no preconditions.
    let now = unsafe { aya_ebpf::helpers::bpf_jiffies64() };
    on_start(
        ctx,
        addr,
        function,
        expires,
        now,
        true,
        flags & TIMER_PINNED != 0,
        expires,
    );
}

#[tracepoint]
pub fn timer_start(ctx: TracePointContext) -> u32 {
    let flags: u32 = if setting!(offsets.timer_start_flags) != 0 {
        field(&ctx, setting!(offsets.timer_start_flags))
    } else {
        0
    };
    timer_start_at(
        &ctx,
        field(&ctx, setting!(offsets.timer_start_timer)),
        field(&ctx, setting!(offsets.timer_start_function)),
        field(&ctx, setting!(offsets.timer_start_expires)),
        flags,
    );
    0
}

/// `timer_start(struct timer_list *, unsigned long bucket_expiry)`.
#[btf_tracepoint(function = "timer_start")]
pub fn timer_start_btf(ctx: BtfTracePointContext) -> u32 {
    let addr = arg(&ctx, 0);
    timer_start_at(
        &ctx,
        addr,
        kfield(addr, setting!(kernel.timer_list_function)),
        kfield(addr, setting!(kernel.timer_list_expires)),
        kfield(addr, setting!(kernel.timer_list_flags)),
    );
    0
}

#[tracepoint]
pub fn timer_cancel(ctx: TracePointContext) -> u32 {
    on_cancel(field(&ctx, setting!(offsets.timer_cancel_timer)));
    0
}

/// `timer_cancel(struct timer_list *)`.
#[btf_tracepoint(function = "timer_cancel")]
pub fn timer_cancel_btf(ctx: BtfTracePointContext) -> u32 {
    on_cancel(arg(&ctx, 0));
    0
}

#[tracepoint]
pub fn timer_expire_entry(ctx: TracePointContext) -> u32 {
    let addr: u64 = field(&ctx, setting!(offsets.timer_expire_timer));
    let function: u64 = field(&ctx, setting!(offsets.timer_expire_function));
    on_expire(addr, function, None);
    0
}

/// `timer_expire_entry(struct timer_list *, unsigned long baseclk)`.
#[btf_tracepoint(function = "timer_expire_entry")]
pub fn timer_expire_entry_btf(ctx: BtfTracePointContext) -> u32 {
    let addr = arg(&ctx, 0);
    on_expire(
        addr,
        kfield(addr, setting!(kernel.timer_list_function)),
        None,
    );
    0
}

#[tracepoint]
pub fn timer_expire_exit(_ctx: TracePointContext) -> u32 {
    expire_exit();
    0
}

#[btf_tracepoint(function = "timer_expire_exit")]
pub fn timer_expire_exit_btf(_ctx: BtfTracePointContext) -> u32 {
    expire_exit();
    0
}

/// Key for an interval timer in `OWNERS`. Kernel addresses have the top bits set, so a key built
/// from small integers cannot collide with a real timer address.
#[inline(always)]
fn itimer_key(tgid: u32, which: u32) -> u64 {
    ((tgid as u64) << 8) | (which as u64 & 0xff) | (1 << 48)
}

/// `setitimer`/`alarm`, always in the owner's process context. `which` and the new value
/// (`value` and `interval`, ns) are read only once the task is known to be traced.
#[inline(always)]
fn itimer_state_at<C: EbpfContext>(ctx: &C, read_args: impl Fn() -> (i32, u64, u64)) {
    release_held();
    let (tgid, tid) = current();
    if !current_traced(tgid) {
        return;
    }
    let (which, value, interval) = read_args();
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
        emit_with_stack(ctx, ev, true);
    }
}

#[inline(always)]
fn ns(sec: i64, sub: i64, unit: u64) -> u64 {
    (sec as u64).wrapping_mul(1_000_000_000) + (sub as u64) * unit
}

#[tracepoint]
pub fn itimer_state(ctx: TracePointContext) -> u32 {
    itimer_state_at(&ctx, || {
        let unit = if setting!(offsets.itimer_state_usec) != 0 {
            1_000
        } else {
            1
        };
        (
            field(&ctx, setting!(offsets.itimer_state_which)),
            ns(
                field(&ctx, setting!(offsets.itimer_state_value_sec)),
                field(&ctx, setting!(offsets.itimer_state_value_nsec)),
                unit,
            ),
            ns(
                field(&ctx, setting!(offsets.itimer_state_interval_sec)),
                field(&ctx, setting!(offsets.itimer_state_interval_nsec)),
                unit,
            ),
        )
    });
    0
}

/// `itimer_state(int which, const struct itimerspec64 *value, unsigned long long expires)`.
#[btf_tracepoint(function = "itimer_state")]
pub fn itimer_state_btf(ctx: BtfTracePointContext) -> u32 {
    itimer_state_at(&ctx, || {
        let spec = arg(&ctx, 1);
        (
            arg(&ctx, 0) as i32,
            ns(
                read(spec, setting!(kernel.itimerspec_value_sec)),
                read(spec, setting!(kernel.itimerspec_value_nsec)),
                1,
            ),
            ns(
                read(spec, setting!(kernel.itimerspec_interval_sec)),
                read(spec, setting!(kernel.itimerspec_interval_nsec)),
                1,
            ),
        )
    });
    0
}

/// Fires in interrupt context (ITIMER_REAL) or on the tick (VIRTUAL/PROF): the event names the
/// process in its `pid` field, which is what we filter on.
#[inline(always)]
fn itimer_expire_at(pid: i32, which: i32) {
    release_held();
    if !tgid_traced(pid as u32) {
        return;
    }
    let (cur_tgid, _) = current();
    emit(Event {
        timer: which as u64,
        tgid: pid as u32,
        cur_tgid,
        kind: EventKind::ItimerExpire as u8,
        ..Event::default()
    });
}

#[tracepoint]
pub fn itimer_expire(ctx: TracePointContext) -> u32 {
    itimer_expire_at(
        field(&ctx, setting!(offsets.itimer_expire_pid)),
        field(&ctx, setting!(offsets.itimer_expire_which)),
    );
    0
}

/// `itimer_expire(int which, struct pid *pid, unsigned long long now)`.
#[btf_tracepoint(function = "itimer_expire")]
pub fn itimer_expire_btf(ctx: BtfTracePointContext) -> u32 {
    itimer_expire_at(
        read(arg(&ctx, 1), setting!(kernel.pid_nr)),
        arg(&ctx, 0) as i32,
    );
    0
}
