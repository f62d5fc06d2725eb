//! Ring-buffer output: small records for transitions, stack records for new callsites.

use aya_ebpf::{
    bindings::{BPF_F_USER_STACK, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_stack, bpf_ktime_get_ns, bpf_probe_read_user,
        bpf_probe_read_user_buf,
    },
    macros::map,
    maps::{PerCpuArray, RingBuf},
    EbpfContext,
};
use timerwatch_common::{
    flags, Event, StackCopyEvent, StackEvent, MAX_STACK_DEPTH, STACK_SCAN_WORDS,
};

use crate::{
    filter::setting,
    user_stack::{user_regs, UserRegs},
};

/// 8 MiB by default; the loader may resize it (`--ring-buffer-size`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// Records dropped because the ring buffer was full, per CPU.
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn count_lost() {
    if let Some(p) = LOST.get_ptr_mut(0) {
        // SAFETY: this CPU's slot from a successful lookup; programs on one CPU never nest here.
        unsafe { *p += 1 };
    }
}

/// Wake the reader only once a batch is queued: a wake-up per record makes the daemon's own epoll
/// timers dominate the trace and costs the traced thread a context switch.
#[inline(always)]
fn wakeup_flag() -> u64 {
    let queued = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    if queued >= setting!(wakeup_bytes) as u64 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

#[inline(always)]
pub fn emit(ev: Event) {
    // SAFETY: the helper has no preconditions.
    emit_at(ev, unsafe { bpf_ktime_get_ns() });
}

/// Emit `ev` stamped `ts_ns` (a `Rearms` record: when its re-arms were counted).
#[inline(always)]
pub fn emit_at(mut ev: Event, ts_ns: u64) {
    ev.ts_ns = ts_ns;
    match EVENTS.reserve::<Event>(0) {
        Some(mut entry) => {
            write_event(entry.as_mut_ptr(), ev);
            entry.submit(wakeup_flag());
        }
        None => count_lost(),
    }
}

const EVENT_WORDS: usize = core::mem::size_of::<Event>() / 8;
// `Event` is whole words with no padding, so it can be written as its words.
const _: () = assert!(core::mem::size_of::<Event>() == EVENT_WORDS * 8);
const _: () = assert!(core::mem::align_of::<Event>() == 8);

/// Write `ev` into a reservation word by word. A plain struct write let the compiler merge the
/// zero fields most records have into a call of the BPF build's `memset`, a byte loop (24
/// iterations per record); volatile word stores cannot be merged.
#[inline(always)]
fn write_event(out: *mut Event, ev: Event) {
    // SAFETY: `Event` is `repr(C)` integers filling exactly `EVENT_WORDS` words (checked above).
    let words: [u64; EVENT_WORDS] = unsafe { core::mem::transmute(ev) };
    let out = out.cast::<u64>();
    for (i, w) in words.iter().enumerate() {
        // SAFETY: `out` is an 8-byte aligned reservation of a whole `Event`, ours until submit,
        // and `i` is within its words.
        unsafe { core::ptr::write_volatile(out.add(i), *w) };
    }
}

/// Emit `ev` with `current`'s comm and user stack. Only call this in the owner's process context.
/// `scan_sp`: also copy the words at the user stack pointer (a syscall's frameless libc
/// wrapper), and the user stack itself for CFI unwinding (code without frame pointers); Go
/// code keeps frame pointers everywhere, so its probes skip both copies.
#[inline(always)]
pub fn emit_with_stack<C: EbpfContext>(ctx: &C, ev: Event, scan_sp: bool) {
    if scan_sp && setting!(copy_user_stack) != 0 {
        let Some(mut entry) = EVENTS.reserve::<StackCopyEvent>(0) else {
            count_lost();
            return;
        };
        let out = entry.as_mut_ptr();
        // SAFETY: `out` points at a ring-buffer reservation of a whole `StackCopyEvent`, ours
        // until submit.
        unsafe {
            fill_stack(ctx, &raw mut (*out).base, ev, true);
            crate::user_stack::copy_user_stack(out);
        }
        entry.submit(wakeup_flag());
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<StackEvent>(0) else {
        count_lost();
        return;
    };
    // SAFETY: a ring-buffer reservation of a whole `StackEvent`, ours until submit.
    unsafe { fill_stack(ctx, entry.as_mut_ptr(), ev, scan_sp) };
    entry.submit(wakeup_flag());
}

/// Write the stack record of `ev` into `out`.
///
/// # Safety
/// `out` points at a writable `StackEvent` (a ring-buffer reservation) that is ours alone.
#[inline(always)]
unsafe fn fill_stack<C: EbpfContext>(ctx: &C, out: *mut StackEvent, ev: Event, scan_sp: bool) {
    // SAFETY: `out` is valid and exclusive (the caller's contract); the helpers write within the
    // buffers and lengths given.
    unsafe {
        (*out).event = ev;
        (*out).event.ts_ns = bpf_ktime_get_ns();
        (*out).event.flags |= flags::HAS_STACK;
        (*out).comm = bpf_get_current_comm().unwrap_or_default();
        let stack = &mut (*out).stack;
        let n = bpf_get_stack(
            ctx.as_ptr(),
            stack.as_mut_ptr().cast(),
            (MAX_STACK_DEPTH * 8) as u32,
            BPF_F_USER_STACK as u64,
        );
        (*out).event.stack_len = if n > 0 { (n / 8) as u16 } else { 0 };
        (*out).user_sp = 0;
        (*out).scan = [0; STACK_SCAN_WORDS];
        if scan_sp {
            scan_user_stack(&mut (*out).user_sp, &mut (*out).scan);
        }
    }
}

/// How far above the stack pointer a frame pointer may point: the default stack limit. A
/// frame pointer outside [sp, sp + this) is not one.
const FRAME_SPAN: u64 = 8 << 20;

impl UserRegs {
    /// The exact user IP, stack pointer and frame pointer, mixed into one word: the same
    /// thread arming from the same place again has all three equal, and that is the re-arm
    /// loop's every iteration. An arm whose key matches the last one's is taken for the same
    /// call path without [`Self::fingerprint`]'s read of user memory (~125–160 ns on the test
    /// VM, a third of a re-arm's cost). What that gives up: two call paths of one thread that
    /// reach the syscall with identical ip, sp and bp — two callers at the same depth with
    /// frames of the same size, calling through one frameless wrapper — count as one, where
    /// the fingerprint would tell them apart by the innermost return address (in code with
    /// frame pointers; without them it cannot either). Threads have their own stacks, so
    /// another thread never matches: it takes the fingerprint, which threads share.
    #[inline(always)]
    pub fn key(&self) -> u64 {
        // Odd multipliers (from splitmix64): a match of unequal registers is a 2^-64 accident.
        (self.ip.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ self.sp.wrapping_mul(0xbf58_476d_1ce4_e5b9)
            ^ self.bp.wrapping_mul(0x94d0_49bb_1331_11eb))
            | 1
    }

    /// A cheap identity of the user call path of this syscall (see `Owner::fingerprint`): the
    /// user IP, the stack pointer's offset in its page (the call depth; thread stacks start at
    /// the same page offset, so threads arming from one place agree) and, where rbp is a frame
    /// pointer, the return address of the innermost frame. A frameless libc wrapper leaves rbp
    /// at its caller's frame, so that names the caller's call site. One 16-byte read of user
    /// memory (the saved frame pointer and the return address are adjacent), no stack walk;
    /// the words at the stack pointer are no good here, as wrappers keep changing locals there
    /// (clock_nanosleep's deadline).
    ///
    /// In a build without frame pointers (plain `-O2`, how distributions build) rbp is an
    /// ordinary register, often a small integer, and a read at it faults: a fault caught by
    /// the helper cost the traced thread about a microsecond on every arm (hrtimer_start ~1270
    /// ns against ~440 with frame pointers, bpf_stats, same run). So rbp is read only when it
    /// points into the stack just above sp, and its frame used only when the saved rbp does
    /// too.
    #[inline(always)]
    pub fn fingerprint(&self) -> u64 {
        let UserRegs { ip, sp, bp } = *self;
        if ip == 0 && sp == 0 {
            return 0;
        }
        let depth = (sp & 0xfff).rotate_left(40);
        let in_stack = |p: u64, above: u64| p > above && p - above < FRAME_SPAN && p & 7 == 0;
        if in_stack(bp, sp.wrapping_sub(1)) {
            // [saved rbp, return address] of the innermost frame.
            // SAFETY: a fault-checked copy from user memory; a bad address is an error value.
            let frame = unsafe { bpf_probe_read_user(bp as *const [u64; 2]) }.unwrap_or([0; 2]);
            if in_stack(frame[0], bp) {
                return (ip ^ frame[1].rotate_left(21) ^ depth) | 1;
            }
        }
        (ip ^ depth) | 1
    }
}

/// Copy the words at the user stack pointer. A frameless libc wrapper's return address into its
/// caller lives there and nowhere in the frame-pointer chain.
#[inline(always)]
unsafe fn scan_user_stack(sp_out: &mut u64, scan: &mut [u64; STACK_SCAN_WORDS]) {
    let sp = user_regs().sp;
    if sp == 0 {
        return;
    }
    *sp_out = sp;
    // SAFETY: `scan` is a valid, exclusively borrowed array of exactly this many bytes.
    let buf = unsafe {
        core::slice::from_raw_parts_mut(scan.as_mut_ptr().cast::<u8>(), STACK_SCAN_WORDS * 8)
    };
    // SAFETY: a fault-checked copy from user memory; a bad address is an error value.
    let _ = unsafe { bpf_probe_read_user_buf(sp as *const u8, buf) };
}
