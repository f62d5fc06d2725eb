//! What the census costs the agent: CPU time of the walking thread and walks done, counted
//! process-wide for /metrics. Thread CPU time, not wall time, so the figure per process per
//! report is the walk's own work even on a host whose other load delays the agent.

use std::sync::atomic::{AtomicU64, Ordering};

static CPU_NS: AtomicU64 = AtomicU64::new(0);
static WALKS: AtomicU64 = AtomicU64::new(0);

/// CPU time this thread has used, ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID exists on every
    // Linux this tool supports, and a failure leaves `ts` zeroed (counted as no time).
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Run one process's census walk, counting it and its CPU time.
pub fn counted<T>(walk: impl FnOnce() -> T) -> T {
    let start = thread_cpu_ns();
    let out = walk();
    CPU_NS.fetch_add(thread_cpu_ns().saturating_sub(start), Ordering::Relaxed);
    WALKS.fetch_add(1, Ordering::Relaxed);
    out
}

/// CPU seconds spent in census walks since start.
pub fn cpu_seconds() -> f64 {
    CPU_NS.load(Ordering::Relaxed) as f64 / 1e9
}

/// Census walks of one process each, since start.
pub fn walks() -> u64 {
    WALKS.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walk_is_counted_with_its_cpu_time() {
        let (w0, c0) = (walks(), cpu_seconds());
        let spun = counted(|| {
            let mut x = 0u64;
            for i in 0..5_000_000u64 {
                x = std::hint::black_box(x.wrapping_add(i));
            }
            x
        });
        assert_ne!(spun, 1);
        assert!(walks() > w0);
        assert!(cpu_seconds() > c0, "a busy loop used no CPU time");
    }
}
