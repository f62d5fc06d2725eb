//! A budget of time and bytes for reading one target: what lets a walk of memory the target
//! controls (lengths, pointers, chains it can rewrite at will) stop at a bound the reader chose
//! rather than one the target did, so that one pathological process delays nothing else.
//!
//! Spending is checked before each read (and before the buffer for it is allocated); once
//! spent, every later read of the walk fails at once, and the budget says why.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// Why a walk was cut short.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cut {
    /// It ran past its time.
    Time,
    /// It would have read more than its bytes.
    Bytes,
}

impl Cut {
    /// The name reports and metric labels use.
    pub fn as_str(self) -> &'static str {
        match self {
            Cut::Time => "time",
            Cut::Bytes => "bytes",
        }
    }
}

const NOT_CUT: u8 = 0;
const CUT_TIME: u8 = 1;
const CUT_BYTES: u8 = 2;

/// Time and bytes one walk may spend. Shared by reference between the walks of one process
/// (timer heaps, then goroutines), so together they stay within it.
#[derive(Debug)]
pub struct Budget {
    deadline: Instant,
    max_bytes: u64,
    spent: AtomicU64,
    cut: AtomicU8,
}

impl Budget {
    /// A budget starting now.
    pub fn new(time: Duration, max_bytes: u64) -> Budget {
        Budget::starting_at(Instant::now(), time, max_bytes)
    }

    /// A budget that started at `start` (tests give one in the past to spend its time).
    pub fn starting_at(start: Instant, time: Duration, max_bytes: u64) -> Budget {
        Budget {
            deadline: start + time,
            max_bytes,
            spent: AtomicU64::new(0),
            cut: AtomicU8::new(NOT_CUT),
        }
    }

    /// Spend `len` bytes, or say why the walk must stop instead. A request that does not fit
    /// spends nothing but ends the walk: its buffer is never allocated.
    pub fn spend(&self, len: usize) -> Result<(), Cut> {
        self.afford(len)?;
        self.spent.fetch_add(len as u64, Ordering::Relaxed);
        Ok(())
    }

    /// [`Budget::spend`] without spending: whether `len` more bytes fit.
    pub fn afford(&self, len: usize) -> Result<(), Cut> {
        if let Some(cut) = self.cut() {
            return Err(cut);
        }
        let spent = self.spent.load(Ordering::Relaxed);
        if spent.saturating_add(len as u64) > self.max_bytes {
            return Err(self.stop(CUT_BYTES));
        }
        if Instant::now() >= self.deadline {
            return Err(self.stop(CUT_TIME));
        }
        Ok(())
    }

    /// Why the walk was cut short, if it was.
    pub fn cut(&self) -> Option<Cut> {
        match self.cut.load(Ordering::Relaxed) {
            CUT_TIME => Some(Cut::Time),
            CUT_BYTES => Some(Cut::Bytes),
            _ => None,
        }
    }

    /// Bytes read so far.
    pub fn spent(&self) -> u64 {
        self.spent.load(Ordering::Relaxed)
    }

    fn stop(&self, why: u8) -> Cut {
        // The first reason sticks: a walk cut for bytes that then also runs late was cut for
        // bytes.
        let _ = self
            .cut
            .compare_exchange(NOT_CUT, why, Ordering::Relaxed, Ordering::Relaxed);
        self.cut().unwrap_or(Cut::Bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_counted_until_a_read_would_pass_the_cap() {
        let b = Budget::new(Duration::from_secs(60), 100);
        assert_eq!(b.spend(60), Ok(()));
        assert_eq!(b.afford(40), Ok(()));
        assert_eq!(b.spend(40), Ok(()));
        assert_eq!(b.spent(), 100);
        assert_eq!(b.cut(), None);
        // Exactly full is allowed; one more byte is not, and is not spent.
        assert_eq!(b.spend(1), Err(Cut::Bytes));
        assert_eq!(b.spent(), 100);
        assert_eq!(b.cut(), Some(Cut::Bytes));
        // Once cut, even an empty read stops the walk.
        assert_eq!(b.spend(0), Err(Cut::Bytes));
    }

    #[test]
    fn an_oversized_request_is_refused_before_anything_is_spent() {
        let b = Budget::new(Duration::from_secs(60), 1 << 20);
        assert_eq!(b.spend(usize::MAX), Err(Cut::Bytes));
        assert_eq!(b.spent(), 0);
    }

    #[test]
    fn time_runs_out_and_the_first_reason_sticks() {
        let past = Instant::now() - Duration::from_secs(2);
        let late = Budget::starting_at(past, Duration::from_secs(1), 1 << 20);
        assert_eq!(late.spend(8), Err(Cut::Time));
        assert_eq!(late.cut(), Some(Cut::Time));
        // A later oversized read does not change why it stopped.
        assert_eq!(late.spend(usize::MAX), Err(Cut::Time));
        assert_eq!(Cut::Time.as_str(), "time");

        let full = Budget::starting_at(past, Duration::from_secs(1), 4);
        assert_eq!(full.spend(8), Err(Cut::Bytes));
        assert_eq!(full.spend(1), Err(Cut::Bytes));
        assert_eq!(Cut::Bytes.as_str(), "bytes");
    }
}
