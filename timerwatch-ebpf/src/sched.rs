//! `sched:*` process lifecycle: exits drop a process's timers, execs drop its cached symbols,
//! and (for `timerwatch run`) forks of traced processes extend the trace to the child.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use timerwatch_common::{Event, EventKind};

use crate::{
    filter::{current, setting, tgid_traced, TGIDS},
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
    if setting!(follow_children) != 0 {
        // The fork probe cannot tell a thread from a process, so it adds every new task's id;
        // each leaves with its task, and the process's own id with the process.
        if tid != tgid {
            let _ = TGIDS.remove(tid);
        }
        if whole_process {
            let _ = TGIDS.remove(tgid);
        }
    }
    0
}

/// A task forked by a traced process is traced from its first instruction. Runs in the
/// parent's context, before the child can run.
#[tracepoint]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    if setting!(follow_children) == 0 {
        return 0;
    }
    let (tgid, _) = current();
    if !tgid_traced(tgid) {
        return 0;
    }
    let off = setting!(offsets.process_fork_child_pid);
    if off == 0 {
        return 0;
    }
    // SAFETY: a bounds-checked read of the tracepoint record at an offset from its `format`.
    if let Ok(child) = unsafe { ctx.read_at::<i32>(off as usize) } {
        if child > 0 {
            // A full map drops the child from the trace rather than failing the fork.
            let _ = TGIDS.insert(child as u32, 1, 0);
        }
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
