//! Median and spread over rounds, and the number formats of the tables.

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Summary {
    /// `None` for no (finite) samples.
    pub fn of(samples: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Self {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }

    /// "median (min–max)" with `f` formatting each number.
    pub fn show(&self, f: impl Fn(f64) -> String) -> String {
        if self.n == 1 {
            return f(self.median);
        }
        format!("{} ({}–{})", f(self.median), f(self.min), f(self.max))
    }
}

pub fn show(s: Option<Summary>, f: impl Fn(f64) -> String) -> String {
    s.map_or_else(|| "–".to_string(), |s| s.show(f))
}

/// 2.61M, 483k, 950.
pub fn rate(x: f64) -> String {
    let a = x.abs();
    if a >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", x / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// Nanoseconds with a precision that suits the size.
pub fn ns(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0} ns")
    } else {
        format!("{x:.1} ns")
    }
}

pub fn ratio(x: f64) -> String {
    format!("{x:.2}×")
}

pub fn secs(x: f64) -> String {
    if x < 1.0 {
        format!("{:.0} ms", x * 1e3)
    } else {
        format!("{x:.2} s")
    }
}

pub fn bytes(x: f64) -> String {
    format!("{x:.0} B")
}

pub fn mib(x: f64) -> String {
    format!("{:.1} MiB", x / (1 << 20) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread() {
        let s = Summary::of(&[3.0, 1.0, 2.0, f64::NAN]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        assert_eq!(Summary::of(&[1.0, 4.0]).unwrap().median, 2.5);
        assert!(Summary::of(&[]).is_none());
        assert_eq!(s.show(|x| format!("{x:.0}")), "2 (1–3)");
    }

    #[test]
    fn formats() {
        assert_eq!(rate(2_610_000.0), "2.61M");
        assert_eq!(rate(483_400.0), "483k");
        assert_eq!(rate(1_500.0), "1.5k");
        assert_eq!(ns(123.4), "123 ns");
        assert_eq!(ns(12.34), "12.3 ns");
        assert_eq!(secs(0.25), "250 ms");
    }
}
