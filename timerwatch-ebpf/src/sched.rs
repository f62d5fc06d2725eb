//! `sched:*` process lifecycle: exits drop a process's timers, execs drop its cached symbols,
//! and (for `timerwatch run`) forks of traced processes extend the trace to the child.

//!
//! Each has a classic tracepoint and a BTF-enabled raw tracepoint twin (`*_btf`), as in `timers`.

use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use timerwatch_common::{Event, EventKind};

use crate::{
    filter::{current, setting, tgid_traced, TGIDS},
    kernel::{arg, read},
    output::emit,
};

/// `group_dead`: `None` on kernels whose event lacks it.
#[inline(always)]
fn process_exit(group_dead: impl Fn() -> Option<bool>) {
    crate::owner::release_held();
    let (tgid, tid) = current();
    if !tgid_traced(tgid) {
        return;
    }
    // Kernels without `group_dead` report only the leader's exit, which is close enough: the
    // leader is reaped last in the common case.
    let whole_process = group_dead().unwrap_or(tgid == tid);
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
}

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    process_exit(|| {
        let off = setting!(offsets.process_exit_group_dead);
        // SAFETY: the offset is this field's, from the tracepoint's `format` file; read_at copies
        // through bpf_probe_read_kernel, so a wrong offset yields a wrong value, never a fault.
        (off != 0).then(|| unsafe { ctx.read_at::<u8>(off as usize) }.unwrap_or(0) != 0)
    });
    0
}

/// `sched_process_exit(struct task_struct *p, bool group_dead)` (6.x); older kernels pass only
/// the task, and the loader then says so with `process_exit_group_dead` 0.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit_btf(ctx: BtfTracePointContext) -> u32 {
    process_exit(|| {
        (setting!(offsets.process_exit_group_dead) != 0).then(|| arg(&ctx, 1) as u8 != 0)
    });
    0
}

/// A task forked by a traced process is traced from its first instruction. Runs in the
/// parent's context, before the child can run.
#[inline(always)]
fn process_fork(child_pid: impl Fn() -> i32) {
    if setting!(follow_children) == 0 {
        return;
    }
    let (tgid, _) = current();
    if !tgid_traced(tgid) {
        return;
    }
    let child = child_pid();
    if child > 0 {
        // A full map drops the child from the trace rather than failing the fork.
        let _ = TGIDS.insert(child as u32, 1, 0);
    }
}

#[tracepoint]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    process_fork(|| {
        let off = setting!(offsets.process_fork_child_pid);
        if off == 0 {
            return 0;
        }
        // SAFETY: a bounds-checked read of the tracepoint record at an offset from its `format`.
        unsafe { ctx.read_at::<i32>(off as usize) }.unwrap_or(0)
    });
    0
}

/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork_btf(ctx: BtfTracePointContext) -> u32 {
    process_fork(|| read(arg(&ctx, 1), setting!(kernel.task_pid)));
    0
}

#[inline(always)]
fn process_exec() {
    crate::owner::release_held();
    let (tgid, tid) = current();
    if !tgid_traced(tgid) {
        return;
    }
    emit(Event {
        tgid,
        tid,
        cur_tgid: tgid,
        kind: EventKind::ProcessExec as u8,
        ..Event::default()
    });
}

#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    process_exec();
    0
}

#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec_btf(_ctx: BtfTracePointContext) -> u32 {
    process_exec();
    0
}
