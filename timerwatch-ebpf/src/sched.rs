//! `sched:*` process lifecycle: exits drop a process's timers, execs drop its cached symbols.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use timerwatch_common::{Event, EventKind};

use crate::{
    filter::{current, setting, tgid_traced},
    output::emit,
};

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    crate::owner::release_held();
    let (tgid, tid) = current();
    if !tgid_traced(tgid) {
        return 0;
    }
    let off = setting!(offsets.process_exit_group_dead);
    // Kernels without `group_dead` report only the leader's exit, which is close enough: the
    // leader is reaped last in the common case.
    let whole_process = if off != 0 {
        // SAFETY: the offset is this field's, from the tracepoint's `format` file; read_at copies
        // through bpf_probe_read_kernel, so a wrong offset yields a wrong value, never a fault.
        unsafe { ctx.read_at::<u8>(off as usize) }.unwrap_or(0) != 0
    } else {
        tgid == tid
    };
    if whole_process {
        emit(Event {
            tgid,
            tid,
            cur_tgid: tgid,
            kind: EventKind::ProcessExit as u8,
            ..Event::default()
        });
    }
    0
}

#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    crate::owner::release_held();
    let (tgid, tid) = current();
    if !tgid_traced(tgid) {
        return 0;
    }
    emit(Event {
        tgid,
        tid,
        cur_tgid: tgid,
        kind: EventKind::ProcessExec as u8,
        ..Event::default()
    });
    0
}
