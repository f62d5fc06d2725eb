//! Wake-up latency as a Prometheus histogram, rebuilt from what the report carries.
//!
//! The report gives each callsite's cumulative wake-up count and its p50, p99 and max latency,
//! not bucket counts. Each report's new wake-ups are placed at those three points in their
//! proportions (50% at p50, 49% at p99, 1% at max): the exported `_count` is exact, and
//! `histogram_quantile(0.5|0.99, …)` over the buckets lands in the bucket of the true p50/p99 of
//! the callsite's whole trace, so a shift in latency shows with some lag. `_sum` is the same
//! three-point estimate.

/// Upper bounds in seconds: 1 µs to 1 s in 1–2.5–5 steps, the range from an idle CPU's wake-up
/// to a starved one's.
pub const BOUNDS_S: [f64; 19] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2,
    5e-2, 0.1, 0.25, 0.5, 1.0,
];

#[derive(Clone, Debug, Default, PartialEq)]
pub struct LatencyHistogram {
    /// Per bucket (not cumulative); the last one is +Inf.
    counts: [u64; BOUNDS_S.len() + 1],
    sum_s: f64,
    count: u64,
}

/// The three points a report's quantiles give, with the share of wake-ups each stands for.
pub struct Quantiles {
    pub p50_s: f64,
    pub p99_s: f64,
    pub max_s: f64,
}

impl LatencyHistogram {
    fn record(&mut self, v_s: f64, n: u64) {
        if n == 0 {
            return;
        }
        let i = BOUNDS_S
            .iter()
            .position(|&b| v_s <= b)
            .unwrap_or(BOUNDS_S.len());
        self.counts[i] += n;
        self.sum_s += v_s * n as f64;
        self.count += n;
    }

    /// Add `n` new wake-ups distributed like `q`.
    pub fn add(&mut self, n: u64, q: &Quantiles) {
        let at_p50 = n / 2;
        let at_max = n / 100;
        self.record(q.p50_s, at_p50);
        self.record(q.p99_s, n - at_p50 - at_max);
        self.record(q.max_s, at_max);
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
        BOUNDS_S
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

    #[test]
    fn counts_are_exact_and_land_in_their_buckets() {
        let mut h = LatencyHistogram::default();
        let q = Quantiles {
            p50_s: 20e-6,
            p99_s: 300e-6,
            max_s: 2.0,
        };
        h.add(1000, &q);
        h.add(1, &q);
        assert_eq!(h.count(), 1001);
        let b = h.buckets();
        assert_eq!(b.len(), BOUNDS_S.len() + 1);
        assert_eq!(b.iter().map(|(_, c)| c).sum::<u64>(), 1001);
        let at = |bound: f64| b.iter().find(|(u, _)| *u == bound).unwrap().1;
        assert_eq!(at(2.5e-5), 500);
        assert_eq!(at(5e-4), 491);
        assert_eq!(at(f64::INFINITY), 10);
        assert!((h.sum_s() - (500.0 * 20e-6 + 491.0 * 300e-6 + 20.0)).abs() < 1e-9);
        let mut m = LatencyHistogram::default();
        m.merge(&h);
        m.merge(&h);
        assert_eq!(m.count(), 2002);
    }
}
