//! Go runtime timers, from entry-only uprobes on the runtime's timer functions.
//!
//! Go timers never reach the kernel's timer tracepoints: the runtime keeps them in per-P heaps
//! and sleeps in futex/epoll until the earliest. The daemon attaches this one program at each
//! probe point of each traced Go binary (after the function's prologue, so the frame-pointer
//! chain includes the caller), with an attach cookie selecting the [`GoRecipe`] that says which
//! registers hold what for that Go version. Return probes are never used: they replace the
//! return address on the goroutine stack, which Go's stack copying and traceback do not expect.

use aya_ebpf::{
    helpers::{bpf_probe_read_user, generated::bpf_get_attach_cookie},
    macros::{map, uprobe},
    maps::{Array, LruHashMap},
    programs::ProbeContext,
    EbpfContext,
};
use timerwatch_common::{
    flags, go_seen, pt_regs, Event, EventKind, GoArg, GoKey, GoRecipe, GO_RECIPES_MAX,
};

use crate::{
    filter::current,
    output::{emit, emit_with_stack},
};

/// Filled by the daemon; the attach cookie is the index.
#[map]
static GO_RECIPES: Array<GoRecipe> = Array::with_max_entries(GO_RECIPES_MAX, 0);

/// Timers whose callsite the daemon has ([`go_seen`] bits). LRU: a collected timer's entry ages
/// out, and a creation at a reused address overwrites it.
#[map]
static GO_SEEN: LruHashMap<GoKey, u32> = LruHashMap::with_max_entries(1 << 18, 0);

/// A register by its `struct pt_regs` word index. Context reads must use constant offsets, hence
/// the match rather than an indexed read.
#[inline(always)]
fn reg(ctx: &ProbeContext, index: u8) -> u64 {
    // SAFETY: a uprobe's context always points at the probed task's saved `pt_regs`, valid for
    // the whole program run.
    let r = unsafe { &*ctx.regs };
    match index {
        pt_regs::R15 => r.r15,
        pt_regs::R14 => r.r14,
        pt_regs::R13 => r.r13,
        pt_regs::R12 => r.r12,
        pt_regs::RBP => r.rbp,
        pt_regs::RBX => r.rbx,
        pt_regs::R11 => r.r11,
        pt_regs::R10 => r.r10,
        pt_regs::R9 => r.r9,
        pt_regs::R8 => r.r8,
        pt_regs::RAX => r.rax,
        pt_regs::RCX => r.rcx,
        pt_regs::RDX => r.rdx,
        pt_regs::RSI => r.rsi,
        pt_regs::RDI => r.rdi,
        pt_regs::RSP => r.rsp,
        _ => 0,
    }
}

#[inline(always)]
fn read(ctx: &ProbeContext, a: &GoArg) -> u64 {
    if a.reg == 0 || a.reg > pt_regs::COUNT {
        return 0;
    }
    let addr = reg(ctx, a.reg - 1).wrapping_add(a.offset as i64 as u64);
    if a.deref == 0 {
        return addr;
    }
    if addr == 0 {
        return 0;
    }
    // SAFETY: bpf_probe_read_user copies from user memory through the kernel's fault-checked
    // path; a bad address is an error value, never a fault.
    unsafe { bpf_probe_read_user(addr as *const u64) }.unwrap_or(0)
}

/// Whether `f` (a `*funcval`) runs one of the recipe's creation callbacks.
#[inline(always)]
fn creates(recipe: &GoRecipe, f: u64) -> bool {
    if recipe.create_if_f == 0 || f == 0 {
        return false;
    }
    // SAFETY: as in `read`: a fault-checked copy from user memory.
    let Ok(pc) = (unsafe { bpf_probe_read_user(f as *const u64) }) else {
        return false;
    };
    pc != 0 && (pc == recipe.create_pcs[0] || pc == recipe.create_pcs[1])
}

#[uprobe]
pub fn go_timer(ctx: ProbeContext) -> u32 {
    crate::owner::release_held();
    // SAFETY: the helper only reads the cookie of the program's own attachment from `ctx`.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) } as u32;
    let Some(recipe) = GO_RECIPES.get(cookie) else {
        return 0;
    };
    let timer = read(&ctx, &recipe.timer);
    if timer == 0 {
        // A goroutine's first Sleep: its timer is allocated further in, and the arm that
        // follows reports it.
        return 0;
    }
    let f = read(&ctx, &recipe.f);
    let (tgid, tid) = current();
    let mut ev = Event {
        timer,
        function: f,
        expires: read(&ctx, &recipe.when),
        arg: read(&ctx, &recipe.period),
        tgid,
        tid,
        cur_tgid: tgid,
        kind: recipe.kind,
        ..Event::default()
    };
    let key = GoKey {
        tgid,
        _pad: 0,
        timer,
    };
    if recipe.kind == EventKind::GoCreate as u8 || creates(recipe, f) {
        // A new timer, possibly at the address of a collected one: always its own callsite.
        ev.kind = EventKind::GoCreate as u8;
        ev.flags = flags::NEW_OWNER;
        let _ = GO_SEEN.insert(key, go_seen::CALLSITE, 0);
        emit_with_stack(&ctx, ev, false);
        return 0;
    }
    let sleep = recipe.kind == EventKind::GoSleep as u8;
    match GO_SEEN.get_ptr_mut(key) {
        Some(seen) => {
            // SAFETY: a map value pointer from a successful lookup is valid for this run.
            let seen = unsafe { &mut *seen };
            if !sleep {
                emit(ev);
            } else if *seen & go_seen::SLEEP == 0 {
                // Seen before only at its arm, which in Go 1.25+ runs on the system stack with
                // the user frames cut off: `time.Sleep` names the sleeper.
                *seen |= go_seen::SLEEP | go_seen::CALLSITE;
                emit_with_stack(&ctx, ev, false);
            }
        }
        None if recipe.kind == EventKind::GoModify as u8 || sleep => {
            // First sight of a timer created before we attached, or of one the runtime arms
            // itself (Sleep, netpoll deadlines): this stack is its callsite.
            let bits = if sleep {
                go_seen::CALLSITE | go_seen::SLEEP
            } else {
                go_seen::CALLSITE
            };
            let _ = GO_SEEN.insert(key, bits, 0);
            ev.flags = flags::NEW_OWNER;
            emit_with_stack(&ctx, ev, false);
        }
        // Stops and fires of timers we never saw armed: the heap walk counts those.
        None => {}
    }
    0
}
