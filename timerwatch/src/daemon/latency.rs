//! Wake-up latency as a Prometheus histogram, from the bucket counts the report carries.
//!
//! Each callsite's report has cumulative wake-up counts at the fixed bounds
//! [`LATENCY_BOUNDS_S`] (to the table's histogram resolution: a bucket holding a bound counts
//! whole) and the latency sum. A series adds each report's increase of those, so the exported
//! buckets, `_count` and `_sum` are the callsites' own counts.

use crate::report::LATENCY_BOUNDS_S;

pub const BUCKETS: usize = LATENCY_BOUNDS_S.len();

#[derive(Clone, Debug, Default, PartialEq)]
pub struct LatencyHistogram {
    /// Per bucket (not cumulative); the last one is +Inf.
    counts: [u64; BUCKETS + 1],
    sum_s: f64,
    count: u64,
}

/// A callsite's cumulative latency counts as of one report.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cumulative {
    /// Wake-ups at most each bound.
    pub at_most: [u64; BUCKETS],
    pub count: u64,
    pub sum_s: f64,
}

impl Cumulative {
    pub fn add(&mut self, o: &Cumulative) {
        for (a, b) in self.at_most.iter_mut().zip(&o.at_most) {
            *a += b;
        }
        self.count += o.count;
        self.sum_s += o.sum_s;
    }
}

impl LatencyHistogram {
    /// Add what happened between `before` and `now` (cumulative counts of the same callsites).
    pub fn add_increase(&mut self, now: &Cumulative, before: &Cumulative) {
        let mut below = 0;
        for i in 0..BUCKETS {
            let at_most = now.at_most[i].saturating_sub(before.at_most[i]);
            self.counts[i] += at_most.saturating_sub(below);
            below = below.max(at_most);
        }
        let n = now.count.saturating_sub(before.count);
        self.counts[BUCKETS] += n.saturating_sub(below);
        self.count += n;
        self.sum_s += (now.sum_s - before.sum_s).max(0.0);
    }

    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum_s += other.sum_s;
        self.count += other.count;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum_s(&self) -> f64 {
        self.sum_s
    }

    /// (upper bound, count in that bucket) pairs ending with +Inf, as the encoder wants them.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        LATENCY_BOUNDS_S
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cumulative counts with `n` wake-ups at each of the given bounds' buckets.
    fn cumulative(per_bound: &[(usize, u64)], above: u64, sum_s: f64) -> Cumulative {
        let mut c = Cumulative {
            sum_s,
            ..Cumulative::default()
        };
        for &(i, n) in per_bound {
            for slot in &mut c.at_most[i..] {
                *slot += n;
            }
            c.count += n;
        }
        c.count += above;
        c
    }

    #[test]
    fn increases_land_in_their_buckets_and_counts_are_exact() {
        let mut h = LatencyHistogram::default();
        // 2.5e-5 is bound 4, 5e-4 bound 8.
        let first = cumulative(&[(4, 500), (8, 490)], 10, 0.5);
        h.add_increase(&first, &Cumulative::default());
        assert_eq!(h.count(), 1000);
        let b = h.buckets();
        assert_eq!(b.len(), BUCKETS + 1);
        let at = |b: &[(f64, u64)], bound: f64| b.iter().find(|(u, _)| *u == bound).unwrap().1;
        assert_eq!(at(&b, 2.5e-5), 500);
        assert_eq!(at(&b, 5e-4), 490);
        assert_eq!(at(&b, f64::INFINITY), 10);
        // The next report: only the difference is added.
        let second = cumulative(&[(4, 600), (8, 490)], 12, 0.75);
        h.add_increase(&second, &first);
        let b = h.buckets();
        assert_eq!(h.count(), 1102);
        assert_eq!(
            (at(&b, 2.5e-5), at(&b, 5e-4), at(&b, f64::INFINITY)),
            (600, 490, 12)
        );
        assert!((h.sum_s() - 0.75).abs() < 1e-9);
        let mut m = LatencyHistogram::default();
        m.merge(&h);
        m.merge(&h);
        assert_eq!(m.count(), 2204);
    }
}
