//! The event vocabulary shared by the eBPF probes (`timerwatch-ebpf`) and the daemon (`timerwatch`).
//!
//! Like libbpf-tools' `*.h` headers, this is the single definition of every byte that crosses the
//! ring buffer or the loader's globals. Both sides compile this file, so a layout change cannot
//! drift between them; the size assertions at the bottom pin the wire format.
#![no_std]

/// `TASK_COMM_LEN` in the kernel.
pub const COMM_LEN: usize = 16;
/// User frames captured per callsite. Deep enough for C services and Go's scheduler-heavy stacks.
pub const MAX_STACK_DEPTH: usize = 64;
/// Words copied from the user stack pointer at a syscall. glibc's syscall wrappers set up no frame
/// pointer, so the return address into the application function that called the wrapper is not in
/// the frame-pointer chain; it sits in these words, and userspace picks it out (see `symbolize`).
/// 48 words: glibc 2.36's `timer_create` keeps it 19 words up (5 pushes, 0x70 bytes of locals).
pub const STACK_SCAN_WORDS: usize = 48;
/// Bytes of user stack copied from the stack pointer with a C callsite's stack record, for
/// unwinding code built without frame pointers by its `.eh_frame` CFI in userspace (as
/// `perf --call-graph dwarf` does). A few optimised C frames use far less; the record is sent
/// once per timer, not per arm.
pub const USER_STACK_COPY: usize = 4096;

/// What happened. One value per tracepoint family and transition.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A timer (hrtimer or timer_list) was armed.
    Start = 1,
    /// A timer was cancelled while armed.
    Cancel = 2,
    /// A timer's callback is about to run.
    Expire = 3,
    /// An address the daemon knows was re-initialised by a task we do not trace: forget it.
    Forget = 4,
    /// `setitimer`/`alarm` changed an interval timer (`timer` holds `which`).
    ItimerState = 5,
    /// An interval timer fired (`timer` holds `which`).
    ItimerExpire = 6,
    /// `timer_create` succeeded (`timer` holds the POSIX timer id, `arg` its hrtimer, if any).
    PosixCreate = 7,
    /// `timer_delete` was called (`timer` holds the POSIX timer id).
    PosixDelete = 8,
    /// The last thread of a process exited.
    ProcessExit = 9,
    /// A process called execve: its address space, symbols and comm changed.
    ProcessExec = 10,
    /// A task woken by an owned timer's expiry got a CPU: `timer` is the timer, `tgid` its
    /// owner, `tid` the woken task, `arg` the ns from expiry to running.
    Wakeup = 11,
    /// A Go runtime timer was created (`time.startTimer`, or `(*timer).modify` called by
    /// `time.newTimer`): `timer` is the `*runtime.timer`, `expires` its `when` (CLOCK_MONOTONIC
    /// ns), `arg` its period, `function` its `f` (a `*funcval`). Always carries a stack.
    GoCreate = 12,
    /// A Go timer was (re-)armed (`modtimer`, `(*timer).modify`). Carries a stack the first time
    /// the pointer is seen (a timer armed before we attached, a netpoll or Sleep timer).
    GoModify = 13,
    /// A Go timer was stopped (`deltimer`, `(*timer).stop`).
    GoStop = 14,
    /// A Go timer is about to run (`runOneTimer`, `(*timer).unlockAndRun`).
    GoFire = 15,
    /// `time.Sleep` with its goroutine's reusable timer: carries the stack that names the sleeper
    /// (where the arm itself runs on the system stack and has no user frames).
    GoSleep = 16,
    /// Re-arms of an armed timer (a cancel, then a start from the same callsite) that the probes
    /// counted in the kernel instead of sending as records: `arg` is the timer's cumulative count
    /// (wrapping u32, from 0 at its last `NEW_OWNER` start), `expires` the latest expiry. It
    /// changes no state (the timer was armed before and after), only the armed and cancelled
    /// totals, so it may arrive in any order relative to the timer's other records.
    Rearms = 17,
}

impl EventKind {
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Start,
            2 => Self::Cancel,
            3 => Self::Expire,
            4 => Self::Forget,
            5 => Self::ItimerState,
            6 => Self::ItimerExpire,
            7 => Self::PosixCreate,
            8 => Self::PosixDelete,
            9 => Self::ProcessExit,
            10 => Self::ProcessExec,
            11 => Self::Wakeup,
            12 => Self::GoCreate,
            13 => Self::GoModify,
            14 => Self::GoStop,
            15 => Self::GoFire,
            16 => Self::GoSleep,
            17 => Self::Rearms,
            _ => return None,
        })
    }
}

/// `Event::flags` bits.
pub mod flags {
    /// The record is a [`super::StackEvent`]: a user stack and comm follow the header.
    pub const HAS_STACK: u8 = 1 << 0;
    /// The timer is a `timer_list` (jiffies-based) timer, not an hrtimer.
    pub const TIMER_LIST: u8 = 1 << 1;
    /// First arm seen since the timer was set up (or since we attached): the daemon must drop any
    /// state it kept for this address, which a previous owner may have used.
    pub const NEW_OWNER: u8 = 1 << 2;
    /// On an expiry: `arg` holds the slack, ns from the requested (soft) expiry to the actual one.
    pub const SLACK: u8 = 1 << 3;
    /// The record is a [`super::StackCopyEvent`]: a copy of the user stack follows the stack.
    pub const HAS_STACK_COPY: u8 = 1 << 4;
}

/// Fixed header of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// Kernel address of the hrtimer/timer_list, the POSIX timer id, or the itimer `which`.
    pub timer: u64,
    /// Kernel callback address (0 where the tracepoint does not carry it).
    pub function: u64,
    /// Absolute expiry: ns on the timer's clock (hrtimers, itimers: the value), jiffies (timer_list).
    pub expires: u64,
    /// Kind-specific: hrtimer mode, itimer interval ns, the hrtimer address of a POSIX timer,
    /// `jiffies` at the arm of a timer_list timer (its `expires` is in jiffies).
    pub arg: u64,
    /// The process that owns the timer (not necessarily `current`, see `cur_tgid`).
    pub tgid: u32,
    /// The thread that armed it first.
    pub tid: u32,
    /// The task running when the tracepoint fired (interrupt context reports the interrupted task).
    pub cur_tgid: u32,
    /// An [`EventKind`].
    pub kind: u8,
    /// [`flags`] bits.
    pub flags: u8,
    /// Valid frames in [`StackEvent::stack`].
    pub stack_len: u16,
}

/// A header followed by the owner's comm and user stack. Sent once per timer (its first arm in
/// process context) and for POSIX timer creation, never for re-arms of a known timer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StackEvent {
    pub event: Event,
    pub comm: [u8; COMM_LEN],
    /// User stack pointer at the syscall (0 if unavailable).
    pub user_sp: u64,
    /// `STACK_SCAN_WORDS` words read from `user_sp` upwards.
    pub scan: [u64; STACK_SCAN_WORDS],
    /// Frame-pointer user stack, innermost first; `event.stack_len` entries are valid.
    pub stack: [u64; MAX_STACK_DEPTH],
}

impl Default for StackEvent {
    fn default() -> Self {
        Self {
            event: Event::default(),
            comm: [0; COMM_LEN],
            user_sp: 0,
            scan: [0; STACK_SCAN_WORDS],
            stack: [0; MAX_STACK_DEPTH],
        }
    }
}

/// A [`StackEvent`] followed by the user registers and stack bytes a CFI unwinder starts from
/// (flag [`flags::HAS_STACK_COPY`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StackCopyEvent {
    pub base: StackEvent,
    /// User `rip`, `rsp`, `rbp` at the syscall.
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// Valid bytes in `bytes` (0: the copy failed), read from `sp` upwards.
    pub len: u64,
    pub bytes: [u8; USER_STACK_COPY],
}

/// What the kernel remembers per timer address, so that re-arms from interrupt or softirq context
/// (where `current` is whoever was interrupted) keep the owner that set the timer up.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Owner {
    pub tgid: u32,
    pub tid: u32,
    /// Non-zero once the daemon has the timer's callsite (a [`StackEvent`] was sent).
    pub has_callsite: u8,
    /// Non-zero when the callsite was fixed at creation (POSIX timers, interval timers): arms
    /// from elsewhere never move it.
    pub fixed: u8,
    /// Non-zero for a `timer_list` timer.
    pub timer_list: u8,
    /// Non-zero from a set-up of the timer by its owner (`hrtimer_setup`/`timer_setup`: what
    /// `timerfd_settime`, `timer_settime` and every new sleep do) until its next arm. An arm
    /// without one is the kernel re-arming the same timer (a periodic timerfd in `read()`, a
    /// callback, a signal dequeue) and keeps its callsite, whatever user code runs then.
    pub set_up: u8,
    /// Re-arms counted here instead of sent (see [`EventKind::Rearms`]): cumulative, wrapping.
    pub rearms: u32,
    /// `rearms` when the last `Rearms` record was sent.
    pub rearms_sent: u32,
    /// `cur_tgid` of the held-back cancel.
    pub cancel_cur_tgid: u32,
    /// Requested expiry of the last arm (hrtimers: soft expiry, ns on the timer's clock), for
    /// slack at expiry.
    pub expires: u64,
    /// Cheap fingerprint of the user context of the arm that gave the callsite (user IP, the
    /// stack pointer's page offset, and the innermost return address where rbp is a frame
    /// pointer), xor the timer's callback. A
    /// re-arm with the same fingerprint reuses the callsite without a stack walk; a different
    /// one (an on-stack sleeper reused by another function; a freed socket's memory set up again
    /// for a TIME_WAIT timer by the same user context) takes a new stack.
    pub fingerprint: u64,
    /// The exact user registers of that arm, mixed (`UserRegs::key` in the probes): a re-arm
    /// with the same key skips computing the fingerprint, which reads user memory.
    pub regs_key: u64,
    /// Non-zero while a cancel of this timer is held back (not sent yet): the jiffies of the
    /// cancel, | 1. A start that finds it set is a re-arm and counts in `rearms`; otherwise the
    /// next tracepoint on the cancelling CPU sends the cancel, stamped then.
    pub cancel_held: u64,
    /// When (jiffies) the last `Rearms` record was sent.
    pub rearms_sent_jiffies: u64,
}

impl Owner {
    /// An owner whose callsite was taken at creation and never moves (POSIX and interval
    /// timers): arms from other call paths keep it.
    pub const fn fixed_callsite(tgid: u32, tid: u32) -> Self {
        Self {
            tgid,
            tid,
            has_callsite: 1,
            fixed: 1,
            ..Self::new(tgid, tid)
        }
    }

    /// A newly owned timer with no callsite yet.
    pub const fn new(tgid: u32, tid: u32) -> Self {
        Self {
            tgid,
            tid,
            has_callsite: 0,
            fixed: 0,
            timer_list: 0,
            set_up: 0,
            rearms: 0,
            rearms_sent: 0,
            cancel_cur_tgid: 0,
            expires: 0,
            fingerprint: 0,
            regs_key: 0,
            cancel_held: 0,
            rearms_sent_jiffies: 0,
        }
    }
}

/// The owned timer whose callback runs on this CPU now: wake-ups inside it are its doing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Expiring {
    pub timer: u64,
    /// `bpf_ktime_get_ns()` at expiry entry.
    pub ts_ns: u64,
    pub tgid: u32,
    /// Non-zero between expire_entry and expire_exit.
    pub active: u32,
}

/// A task woken by a timer and not yet running, keyed by its tid.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Woken {
    pub timer: u64,
    pub ts_ns: u64,
    pub tgid: u32,
    pub timer_list: u32,
}

/// Byte offsets of the tracepoint fields the probes read, taken from each tracepoint's `format`
/// file at start-up, because layouts differ across kernels (`hrtimer_start` gained `was_armed`,
/// `hrtimer_init` became `hrtimer_setup`, `sched_process_exit` gained `group_dead`).
/// 0 means "this kernel has no such field".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    pub hrtimer_init_hrtimer: u32,
    pub hrtimer_start_hrtimer: u32,
    pub hrtimer_start_function: u32,
    pub hrtimer_start_expires: u32,
    pub hrtimer_start_softexpires: u32,
    pub hrtimer_start_mode: u32,
    pub hrtimer_cancel_hrtimer: u32,
    pub hrtimer_expire_hrtimer: u32,
    pub hrtimer_expire_function: u32,
    pub hrtimer_expire_now: u32,
    pub timer_init_timer: u32,
    pub timer_start_timer: u32,
    pub timer_start_function: u32,
    pub timer_start_expires: u32,
    pub timer_start_flags: u32,
    pub timer_cancel_timer: u32,
    pub timer_expire_timer: u32,
    pub timer_expire_function: u32,
    pub itimer_state_which: u32,
    pub itimer_state_value_sec: u32,
    pub itimer_state_value_nsec: u32,
    pub itimer_state_interval_sec: u32,
    pub itimer_state_interval_nsec: u32,
    /// 1 when the kernel reports microseconds (`value_usec`, before 4.17) instead of ns.
    pub itimer_state_usec: u32,
    pub itimer_expire_which: u32,
    pub itimer_expire_pid: u32,
    pub process_exit_group_dead: u32,
    pub timer_create_created_id: u32,
    pub timer_create_ret: u32,
    pub timer_delete_id: u32,
    pub sched_waking_pid: u32,
    pub sched_switch_next_pid: u32,
    /// `sched_process_fork`'s `child_pid`, for following children (`Config::follow_children`).
    pub process_fork_child_pid: u32,
}

/// Byte offsets of the kernel struct fields that the BTF-enabled raw tracepoint programs
/// (`tp_btf`) read. Those programs get the tracepoint's raw arguments (`struct hrtimer *`,
/// `struct timer_list *`, `struct task_struct *`), not the `format` record, so what a classic
/// tracepoint copies out for us they read from the structs, at offsets the loader takes from the
/// kernel's BTF (`/sys/kernel/btf/vmlinux`): layouts differ across kernels and configs.
/// Unused (all zero) on the classic path.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `hrtimer.node.expires`.
    pub hrtimer_expires: u32,
    /// `hrtimer._softexpires`.
    pub hrtimer_softexpires: u32,
    /// `hrtimer.function`.
    pub hrtimer_function: u32,
    /// `timer_list.expires`.
    pub timer_list_expires: u32,
    /// `timer_list.function`.
    pub timer_list_function: u32,
    /// `timer_list.flags`.
    pub timer_list_flags: u32,
    /// `task_struct.pid`.
    pub task_pid: u32,
    /// `task_struct.tgid`: with `task_pid`, what `bpf_get_current_pid_tgid` returns, read as
    /// two plain loads from the current task instead of a helper call on every event.
    pub task_tgid: u32,
    /// `itimerspec64.it_value.tv_sec` and `.tv_nsec`.
    pub itimerspec_value_sec: u32,
    pub itimerspec_value_nsec: u32,
    /// `itimerspec64.it_interval.tv_sec` and `.tv_nsec`.
    pub itimerspec_interval_sec: u32,
    pub itimerspec_interval_nsec: u32,
    /// `pid.numbers[0].nr`: the pid in the initial namespace, as `pid_nr()` reads it.
    pub pid_nr: u32,
    /// Keeps the size a multiple of 8 (no padding bytes in a `Pod`).
    pub _pad: u32,
}

/// Loader-set configuration (an eBPF global, fixed for the program's lifetime).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Our own process: never traced, or the tracer would trace its own epoll/timer wake-ups.
    pub self_tgid: u32,
    /// Non-zero: only processes in the `TGIDS` map are traced.
    pub filter_tgid: u32,
    /// Non-zero: only tasks whose comm is in the `COMMS` map are traced.
    pub filter_comm: u32,
    /// Queued bytes above which a record wakes the reader; below it the reader polls, so a busy
    /// timer does not wake us per event.
    pub wakeup_bytes: u32,
    /// Non-zero: count re-arms in the kernel (see `EventKind::Rearms`); zero: send every cancel
    /// and start as a record.
    pub count_rearms: u32,
    /// Non-zero: a child forked by a process in `TGIDS` joins `TGIDS` (and leaves it at exit),
    /// so `timerwatch run` traces a command and all its descendants from their first instruction.
    pub follow_children: u32,
    /// Non-zero: a C callsite's stack record also carries a copy of the user stack
    /// ([`StackCopyEvent`]) for CFI unwinding of code without frame pointers.
    pub copy_user_stack: u32,
    pub _pad: u32,
    /// Address of `hrtimer_wakeup` (0 if unknown): sleeps are user timers even in hard mode.
    pub sleeper_fn: u64,
    pub offsets: Offsets,
    pub kernel: KernelOffsets,
}

/// The `IRQ_RANGES` global: [start, end) of the kernel's interrupt and softirq machinery
/// (`hrtimer_interrupt`, `__hrtimer_run_queues`, `handle_softirqs`, ...). A first arm with one
/// of these on the kernel stack happens in interrupt context, on behalf of no task (on 6.18 even
/// the restart of a periodic hrtimer after its callback is traced as `hrtimer_start`). Unused
/// slots are [0, 0). Kept apart from [`Config`], which the probes copy onto their small stack.
pub type IrqRanges = [[u64; 2]; IRQ_RANGES];
pub const IRQ_RANGES: usize = 12;
/// Kernel frames inspected for them: a TCP timer armed in receive softirq sits ~14 frames above
/// `handle_softirqs`, so a dozen is not enough.
pub const IRQ_STACK_DEPTH: usize = 64;

/// `HRTIMER_MODE_PINNED`: a per-CPU hrtimer (the tick, watchdog, scheduler bandwidth). These
/// belong to a CPU, not a task, and are often armed in interrupt context while some unrelated
/// task is `current`, so they never get a process owner.
pub const HRTIMER_MODE_PINNED: u32 = 0x02;
/// `HRTIMER_MODE_HARD`: expiry in hardirq even on PREEMPT_RT. Only kernel-internal timers ask for
/// it (scheduler bandwidth and deadline servers, hrtick, perf), except that PREEMPT_RT gives it
/// to real-time tasks' sleeps, which `Config::sleeper_fn` lets through.
pub const HRTIMER_MODE_HARD: u32 = 0x08;
/// `TIMER_PINNED` in `timer_list::flags`, for the same reason.
pub const TIMER_PINNED: u32 = 0x0010_0000;

/// Where a Go uprobe finds one value: a register (Go's ABIInternal passes arguments in
/// registers), plus an offset, optionally dereferenced in user memory.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoArg {
    /// 1 + the word index of the register in x86_64 `struct pt_regs` (see [`pt_regs`]); 0: absent.
    pub reg: u8,
    /// Non-zero: the value is the u64 at user address `reg + offset`; else it is `reg + offset`.
    pub deref: u8,
    pub _pad: [u8; 2],
    pub offset: i32,
}

/// `struct pt_regs` word indices on x86_64, for [`GoArg::reg`] (stored + 1) and the stack scan:
/// the one definition of that order, used by the Go analysis to name registers and by the
/// probes to read them.
pub mod pt_regs {
    pub const R15: u8 = 0;
    pub const R14: u8 = 1;
    pub const R13: u8 = 2;
    pub const R12: u8 = 3;
    pub const RBP: u8 = 4;
    pub const RBX: u8 = 5;
    pub const R11: u8 = 6;
    pub const R10: u8 = 7;
    pub const R9: u8 = 8;
    pub const R8: u8 = 9;
    pub const RAX: u8 = 10;
    pub const RCX: u8 = 11;
    pub const RDX: u8 = 12;
    pub const RSI: u8 = 13;
    pub const RDI: u8 = 14;
    pub const ORIG_RAX: u8 = 15;
    pub const RIP: u8 = 16;
    pub const CS: u8 = 17;
    pub const EFLAGS: u8 = 18;
    pub const RSP: u8 = 19;
    pub const SS: u8 = 20;
    /// Words in `struct pt_regs`.
    pub const COUNT: u8 = 21;
}

/// What one Go uprobe reads and reports, in the `GO_RECIPES` array at the index passed as its
/// attach cookie. Versions differ in which register holds what, so the daemon decides per binary.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoRecipe {
    pub timer: GoArg,
    pub when: GoArg,
    pub period: GoArg,
    pub f: GoArg,
    /// The [`EventKind`] this probe reports (`GoCreate` … `GoSleep`).
    pub kind: u8,
    /// Non-zero: an arm whose `f` code pointer is one of `create_pcs` is a creation: only
    /// `time.newTimer` passes package-time callbacks to `(*timer).modify` (Go 1.23+).
    pub create_if_f: u8,
    pub _pad: [u8; 6],
    /// Code addresses (as mapped in the process) of `time.sendTime` and `time.goFunc`.
    pub create_pcs: [u64; 2],
}

/// Key of the kernel's Go timer map: timer pointers are per address space.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GoKey {
    pub tgid: u32,
    pub _pad: u32,
    pub timer: u64,
}

/// `GO_SEEN` value bits.
pub mod go_seen {
    /// The daemon has the timer's callsite.
    pub const CALLSITE: u32 = 1 << 0;
    /// The callsite came from `time.Sleep` (which names the sleeper on every Go version).
    pub const SLEEP: u32 = 1 << 1;
}

/// Slots in `GO_RECIPES`: a handful of probes per traced Go process.
pub const GO_RECIPES_MAX: u32 = 4096;

/// Names of the maps and globals, shared so a rename cannot break the loader.
pub mod names {
    pub const GO_RECIPES: &str = "GO_RECIPES";
    pub const GO_SEEN: &str = "GO_SEEN";
    /// The one uprobe program every Go probe point runs.
    pub const GO_TIMER: &str = "go_timer";
    pub const EVENTS: &str = "EVENTS";
    pub const OWNERS: &str = "OWNERS";
    pub const TGIDS: &str = "TGIDS";
    pub const COMMS: &str = "COMMS";
    pub const LOST: &str = "LOST";
    pub const WOKEN: &str = "WOKEN";
    pub const CONFIG: &str = "CONFIG";
    pub const IRQ_RANGES: &str = "IRQ_RANGES";
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are #[repr(C)] plain integers with explicit padding and no invalid bit patterns.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::Owner {}
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::StackEvent {}
    unsafe impl aya::Pod for super::StackCopyEvent {}
    unsafe impl aya::Pod for super::GoRecipe {}
    unsafe impl aya::Pod for super::GoKey {}
}

// The wire format: a change here is a change to both sides, on purpose.
const _: () = assert!(core::mem::size_of::<Event>() == 56);
const _: () = assert!(
    core::mem::size_of::<StackEvent>()
        == 56 + COMM_LEN + 8 + 8 * (STACK_SCAN_WORDS + MAX_STACK_DEPTH)
);
const _: () = assert!(
    core::mem::size_of::<StackCopyEvent>()
        == core::mem::size_of::<StackEvent>() + 4 * 8 + USER_STACK_COPY
);
const _: () = assert!(core::mem::size_of::<Owner>() == 64);
const _: () = assert!(core::mem::size_of::<GoRecipe>() == 4 * 8 + 8 + 16);
const _: () = assert!(core::mem::size_of::<GoKey>() == 16);
