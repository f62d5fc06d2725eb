//! Which tasks we trace: everything but ourselves and the idle task, narrowed by `-p`/`--comm`.

use aya_ebpf::{
    bindings::task_struct,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, generated::bpf_get_current_task_btf,
    },
    macros::map,
    maps::HashMap,
    Global,
};
use timerwatch_common::{Config, COMM_LEN};

#[unsafe(no_mangle)]
// SAFETY: `Config` is plain integers, for which all-zero is valid (the loader overwrites it).
pub static CONFIG: Global<Config> = Global::new(unsafe { core::mem::zeroed() });

/// Traced processes; with `Config::follow_children`, `sched.rs` adds forked children and
/// removes exited ones.
#[map]
pub static TGIDS: HashMap<u32, u8> = HashMap::with_max_entries(4096, 0);

#[map]
pub static COMMS: HashMap<[u8; COMM_LEN], u8> = HashMap::with_max_entries(64, 0);

/// One field of [`CONFIG`], e.g. `setting!(offsets.hrtimer_start_hrtimer)`. Not
/// `CONFIG.load()`: that copies the whole ~190-byte struct onto the BPF stack, several times per
/// event (measured: most of a small program's run time). Volatile, or the compiler would fold
/// the compiled-in zeros the loader replaces.
macro_rules! setting {
    ($($field:ident).+) => {
        $crate::filter::volatile(&$crate::filter::config().$($field).+)
    };
}
pub(crate) use setting;

#[inline(always)]
pub fn config() -> &'static Config {
    // SAFETY: `Global` is a transparent wrapper of an initialised `Config`.
    unsafe { &*(&CONFIG as *const Global<Config>).cast::<Config>() }
}

#[inline(always)]
pub fn volatile<T: Copy>(field: &T) -> T {
    // SAFETY: a reference to a field of the loaded `CONFIG`.
    unsafe { core::ptr::read_volatile(field) }
}

/// `current`: its ids and, where the loader has the kernel's BTF, the BTF-typed task pointer
/// they were read through (null otherwise), which an arm hands on to
/// [`crate::user_stack::user_regs_of`]: the helper that returns it is a call the verifier does
/// not inline, and the re-arm path would otherwise make it twice.
#[derive(Clone, Copy)]
pub struct Current {
    pub tgid: u32,
    pub tid: u32,
    pub task: *mut task_struct,
}

/// (tgid, tid) of `current`; see [`current_task`].
#[inline(always)]
pub fn current() -> (u32, u32) {
    let c = current_task();
    (c.tgid, c.tid)
}

/// `current`'s ids. Where the loader has the kernel's BTF, two plain loads from the current task
/// (through `bpf_get_current_task_btf`), not the `bpf_get_current_pid_tgid` helper call: every
/// program asks, several per re-arm. `CONFIG` is frozen, so the verifier sees which branch runs
/// and checks only that one.
#[inline(always)]
pub fn current_task() -> Current {
    let tgid_at = setting!(kernel.task_tgid);
    if tgid_at != 0 {
        // SAFETY: the helper has no preconditions; it returns a BTF-typed, trusted pointer to
        // the current task.
        let task = unsafe { bpf_get_current_task_btf() };
        let tgid: i32 = crate::kernel::field(task as u64, tgid_at);
        let pid: i32 = crate::kernel::field(task as u64, setting!(kernel.task_pid));
        return Current {
            tgid: tgid as u32,
            tid: pid as u32,
            task,
        };
    }
    let id = bpf_get_current_pid_tgid();
    Current {
        tgid: (id >> 32) as u32,
        tid: id as u32,
        task: core::ptr::null_mut(),
    }
}

/// Whether a process is one we trace, judged by tgid alone (for events that name a process other
/// than `current`, such as `itimer_expire`).
#[inline(always)]
pub fn tgid_traced(tgid: u32) -> bool {
    if tgid == 0 || tgid == setting!(self_tgid) {
        return false;
    }
    // SAFETY: read at once; a concurrent insert or remove can make it wrong, never a fault.
    setting!(filter_tgid) == 0 || unsafe { TGIDS.get(tgid) }.is_some()
}

/// Whether `current` may become the owner of a timer.
#[inline(always)]
pub fn current_traced(tgid: u32) -> bool {
    if !tgid_traced(tgid) {
        return false;
    }
    if setting!(filter_comm) == 0 {
        return true;
    }
    match bpf_get_current_comm() {
        // SAFETY: read at once; a concurrent insert or remove can make it wrong, never a fault.
        Ok(comm) => unsafe { COMMS.get(comm) }.is_some(),
        Err(_) => false,
    }
}
