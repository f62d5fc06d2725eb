//! What one Go process's walk of its runtime memory (timer heaps, goroutines) may spend per
//! report, and the process-wide count of walks cut short, by reason, that the daemon's
//! `/metrics` exports. Everything such a walk reads (lengths, pointers, chains) is the target's
//! to choose, and it can rewrite them during the walk; the budget is ours.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use timerwatch_proc::budget::{Budget, Cut};

/// Time per process per walk. A census of 100 pending timers costs ~0.4 ms of CPU
/// (BENCHMARKS.md §6): a walk still going after 600 times that is being made to loop or wait,
/// and every report (and the verdicts, and the next report's events) waits for it.
pub const TIME: Duration = Duration::from_millis(250);

/// Bytes read per process per walk, which is also the most a walk allocates. A pending timer
/// costs ~100 bytes (heap entry and timer fields), a parked goroutine a few hundred plus its
/// stack's frames: 128 MiB covers a million leaked timers, beyond which a process is reported as
/// cut rather than let one target make the agent hold hundreds of MiB.
pub const BYTES: u64 = 128 << 20;

/// A fresh budget for one process's walk.
pub fn start() -> Arc<Budget> {
    Arc::new(Budget::new(TIME, BYTES))
}

/// Why a walk did not produce (all of) its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutShort {
    /// Its time budget ran out.
    Time,
    /// It would have read more than its bytes budget.
    Bytes,
    /// The memory kept changing under it, or was not what the runtime's structures must be
    /// (a heap whose header moved on every attempt, a timer not pointing back at its heap, an
    /// unreadable address), while the process stayed the same exec.
    Torn,
}

const REASONS: [CutShort; 3] = [CutShort::Time, CutShort::Bytes, CutShort::Torn];

impl CutShort {
    pub fn as_str(self) -> &'static str {
        match self {
            CutShort::Time => "time",
            CutShort::Bytes => "bytes",
            CutShort::Torn => "torn",
        }
    }

    /// Why `budget` stopped its walk; `None` when it did not.
    pub fn of(budget: &Budget) -> Option<CutShort> {
        budget.cut().map(|c| match c {
            Cut::Time => CutShort::Time,
            Cut::Bytes => CutShort::Bytes,
        })
    }
}

static CUT: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

/// Count one walk cut short.
pub fn count(why: CutShort) {
    CUT[why as usize].fetch_add(1, Ordering::Relaxed);
}

/// Walks cut short since start, by reason (every reason, zeros included, so the metric's
/// series exist from the first scrape).
pub fn walks_cut() -> [(&'static str, u64); 3] {
    REASONS.map(|r| (r.as_str(), CUT[r as usize].load(Ordering::Relaxed)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn budget_cuts_map_to_reasons_and_are_counted() {
        let fresh = start();
        assert_eq!(CutShort::of(&fresh), None);
        assert_eq!(fresh.spend(BYTES as usize), Ok(()));
        assert!(fresh.spend(1).is_err());
        assert_eq!(CutShort::of(&fresh), Some(CutShort::Bytes));
        let late = Budget::starting_at(Instant::now() - 2 * TIME, TIME, BYTES);
        assert!(late.spend(8).is_err());
        assert_eq!(CutShort::of(&late), Some(CutShort::Time));

        // Counters are process-wide and other tests may count too: compare before and after.
        let before = walks_cut();
        count(CutShort::Torn);
        count(CutShort::Torn);
        count(CutShort::Time);
        let after = walks_cut();
        let names: Vec<_> = after.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["time", "bytes", "torn"]);
        let grew: Vec<u64> = after.iter().zip(before).map(|(a, b)| a.1 - b.1).collect();
        assert!(grew[0] >= 1 && grew[2] >= 2, "{grew:?}");
    }
}
