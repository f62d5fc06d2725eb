//! POSIX timers as objects, from `timer_create` to `timer_delete`.
//!
//! A POSIX timer that is never armed, or uses `SIGEV_NONE`, never starts an hrtimer, yet it holds
//! kernel memory and a queued-signal slot. The syscall tracepoints see its whole life.

use aya_ebpf::{
    helpers::bpf_probe_read_user, macros::map, macros::tracepoint, maps::HashMap,
    programs::TracePointContext,
};
use timerwatch_common::{Event, EventKind, Owner};

use crate::{
    filter::{current, current_traced, setting},
    output::{emit, emit_with_stack},
    owner::OWNERS,
};

#[repr(C)]
#[derive(Clone, Copy)]
struct Pending {
    /// User pointer where the kernel writes the new timer id.
    id_ptr: u64,
    /// The hrtimer set up inside this `timer_create`, if any (CPU-clock timers have none).
    hrtimer: u64,
}

/// `timer_create` calls in flight, by thread id.
#[map]
static PENDING: HashMap<u32, Pending> = HashMap::with_max_entries(4096, 0);

#[tracepoint]
pub fn sys_enter_timer_create(ctx: TracePointContext) -> u32 {
    crate::owner::release_held();
    let (tgid, tid) = current();
    if !current_traced(tgid) {
        return 0;
    }
    // SAFETY: the offset is this field's, from the tracepoint's `format` file; read_at copies
    // through bpf_probe_read_kernel, so a wrong offset yields a wrong value, never a fault.
    let id_ptr: u64 =
        unsafe { ctx.read_at(setting!(offsets.timer_create_created_id) as usize) }.unwrap_or(0);
    let _ = PENDING.insert(tid, Pending { id_ptr, hrtimer: 0 }, 0);
    0
}

/// Called from the hrtimer set-up tracepoint: remember which hrtimer this `timer_create` made.
#[inline(always)]
pub fn note_hrtimer_setup(addr: u64) {
    let (_, tid) = current();
    if let Some(p) = PENDING.get_ptr_mut(tid) {
        // SAFETY: this thread's pending entry from a successful lookup; only this thread writes it.
        unsafe { (*p).hrtimer = addr };
    }
}

#[tracepoint]
pub fn sys_exit_timer_create(ctx: TracePointContext) -> u32 {
    crate::owner::release_held();
    let (tgid, tid) = current();
    // SAFETY: read at once; a concurrent insert or remove can make it wrong, never a fault.
    let Some(p) = (unsafe { PENDING.get(tid) }) else {
        return 0;
    };
    let pending = *p;
    let _ = PENDING.remove(tid);
    // SAFETY: the offset is this field's, from the tracepoint's `format` file; read_at copies
    // through bpf_probe_read_kernel, so a wrong offset yields a wrong value, never a fault.
    let ret: i64 =
        unsafe { ctx.read_at(setting!(offsets.timer_create_ret) as usize) }.unwrap_or(-1);
    if ret != 0 {
        return 0;
    }
    // SAFETY: a fault-checked copy from user memory; a bad address is an error value.
    let id: i32 = unsafe { bpf_probe_read_user(pending.id_ptr as *const i32) }.unwrap_or(-1);
    if id < 0 {
        return 0;
    }
    if pending.hrtimer != 0 {
        // The creation stack is the callsite: later arms of this hrtimer need no stack of their own.
        let owner = Owner::fixed_callsite(tgid, tid);
        let _ = OWNERS.insert(pending.hrtimer, owner, 0);
    }
    emit_with_stack(
        &ctx,
        Event {
            timer: id as u64,
            arg: pending.hrtimer,
            tgid,
            tid,
            cur_tgid: tgid,
            kind: EventKind::PosixCreate as u8,
            ..Event::default()
        },
        true,
    );
    0
}

#[tracepoint]
pub fn sys_enter_timer_delete(ctx: TracePointContext) -> u32 {
    crate::owner::release_held();
    let (tgid, tid) = current();
    if !current_traced(tgid) {
        return 0;
    }
    // SAFETY: the offset is this field's, from the tracepoint's `format` file; read_at copies
    // through bpf_probe_read_kernel, so a wrong offset yields a wrong value, never a fault.
    let id: u64 =
        unsafe { ctx.read_at(setting!(offsets.timer_delete_id) as usize) }.unwrap_or(u64::MAX);
    emit(Event {
        timer: id & 0xffff_ffff,
        tgid,
        tid,
        cur_tgid: tgid,
        kind: EventKind::PosixDelete as u8,
        ..Event::default()
    });
    0
}
