//! A copy of the user stack and registers at a syscall, for unwinding code built without frame
//! pointers by its `.eh_frame` CFI in userspace. Sent once per timer callsite, with its stack
//! record; the frame-pointer stack stays the fast path, this only adds bytes to that record.

use aya_ebpf::helpers::bpf_probe_read_user_buf;
use timerwatch_common::{flags, StackCopyEvent, USER_STACK_COPY};

/// `offsetof(struct pt_regs, sp)` on x86_64, the one architecture the stack scan supports.
#[cfg(bpf_target_arch = "x86_64")]
const PT_REGS_SP: usize = timerwatch_common::pt_regs::RSP as usize * 8;
#[cfg(bpf_target_arch = "x86_64")]
const PT_REGS_IP: usize = timerwatch_common::pt_regs::RIP as usize * 8;
#[cfg(bpf_target_arch = "x86_64")]
const PT_REGS_BP: usize = timerwatch_common::pt_regs::RBP as usize * 8;

/// Fill `out`'s registers and as many stack bytes from the user stack pointer as are mapped:
/// the stack's mapping may end within `USER_STACK_COPY` bytes (a thread started with a small
/// stack, a process just past `main`), and one faulting byte fails the whole read, so shorter
/// copies are tried in turn.
///
/// # Safety
/// `out` points at a writable `StackCopyEvent` (a ring-buffer reservation) that is ours alone.
#[inline(always)]
pub unsafe fn copy_user_stack(out: *mut StackCopyEvent) {
    // SAFETY: `out` is valid and exclusive (the caller's contract).
    let out = unsafe { &mut *out };
    out.len = 0;
    let UserRegs { ip, sp, bp } = user_regs();
    if sp == 0 {
        return;
    }
    out.ip = ip;
    out.sp = sp;
    out.bp = bp;
    // Unrolled with constant lengths: the verifier must see a bounded size at each read.
    let _ = try_copy(out, sp, USER_STACK_COPY)
        || try_copy(out, sp, USER_STACK_COPY / 2)
        || try_copy(out, sp, USER_STACK_COPY / 4)
        || try_copy(out, sp, USER_STACK_COPY / 8);
}

#[inline(always)]
fn try_copy(out: &mut StackCopyEvent, sp: u64, len: usize) -> bool {
    let len = len.min(USER_STACK_COPY);
    // SAFETY: the slice is within `out.bytes` (len <= its size).
    let dst = unsafe { core::slice::from_raw_parts_mut(out.bytes.as_mut_ptr(), len) };
    // SAFETY: a fault-checked copy from user memory; a bad address is an error value.
    if unsafe { bpf_probe_read_user_buf(sp as *const u8, dst) }.is_err() {
        return false;
    }
    out.len = len as u64;
    out.base.event.flags |= flags::HAS_STACK_COPY;
    true
}

/// The current task's user registers at its syscall (zeros where the architecture is not
/// supported).
#[derive(Clone, Copy, Default)]
pub(crate) struct UserRegs {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
}

/// The current task's user registers.
#[inline(always)]
pub(crate) fn user_regs() -> UserRegs {
    user_regs_of(core::ptr::null_mut())
}

/// The current task's user registers, through `task` where the caller already has the current
/// task's BTF pointer (`filter::Current::task`; null: ask for it).
#[inline(always)]
pub(crate) fn user_regs_of(task: *mut aya_ebpf::bindings::task_struct) -> UserRegs {
    #[cfg(bpf_target_arch = "x86_64")]
    // SAFETY: the helpers return a BTF-typed pointer that the verifier lets us load from directly;
    // loads through it are fault-checked.
    unsafe {
        use aya_ebpf::helpers::generated::{bpf_get_current_task_btf, bpf_task_pt_regs};
        let task = if task.is_null() {
            bpf_get_current_task_btf()
        } else {
            task
        };
        // The helper returns a BTF-typed `struct pt_regs *`: the verifier lets us load its
        // fields directly (as faulting-safe loads), three helper calls fewer per arm.
        let regs = bpf_task_pt_regs(task) as *const u8;
        if regs.is_null() {
            return UserRegs::default();
        }
        let read = |off: usize| core::ptr::read_volatile(regs.add(off).cast::<u64>());
        UserRegs {
            ip: read(PT_REGS_IP),
            sp: read(PT_REGS_SP),
            bp: read(PT_REGS_BP),
        }
    }
    #[cfg(not(bpf_target_arch = "x86_64"))]
    {
        let _ = task;
        UserRegs::default()
    }
}
