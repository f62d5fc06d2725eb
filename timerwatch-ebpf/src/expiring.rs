//! The timer whose callback is running on this CPU, if we own it: set by the owner's expiry
//! (`owner`), cleared when the callback returns (`timers`), read by the wake-up matching
//! (`wakeup`). Its own module so that those three depend on it rather than on each other.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::map, maps::PerCpuArray};
use timerwatch_common::Expiring;

#[map]
static EXPIRING: PerCpuArray<Expiring> = PerCpuArray::with_max_entries(1, 0);

/// An owned timer's callback is about to run on this CPU.
#[inline(always)]
pub fn expiring(timer: u64, tgid: u32, timer_list: bool) {
    if let Some(e) = EXPIRING.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; programs of one CPU never nest on these paths.
        unsafe {
            *e = Expiring {
                timer,
                ts_ns: bpf_ktime_get_ns(),
                tgid,
                active: 1 + timer_list as u32,
            }
        };
    }
}

/// The callback returned (any timer's: clearing is cheaper than checking which).
#[inline(always)]
pub fn expired() {
    if let Some(e) = EXPIRING.get_ptr_mut(0) {
        // SAFETY: as in `expiring`.
        unsafe { (*e).active = 0 };
    }
}

/// This CPU's mark, active or not.
#[inline(always)]
pub fn current() -> Option<&'static Expiring> {
    EXPIRING.get(0)
}
