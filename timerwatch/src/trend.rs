//! Growth detection: is a live-timer count growing, stable or draining?
//!
//! The input is one count per sampling interval (per callsite, per process). The hard part is not
//! detecting a rise but refusing to call a bounded population a leak: pools that fill and drain in
//! waves, bursts that expire, warm-up, one-off steps and randomly wandering pools all contain
//! stretches that rise as steeply as a leak. A stretch of samples is called `growing` only when
//! every one of these holds:
//!
//! 1. the Theil–Sen slope is at least `min_growth_per_s`;
//! 2. Mann–Kendall says it trends up (one-sided p < `alpha`), with ties corrected and the variance
//!    inflated for serial correlation (see `serial_correlation_inflation`);
//! 3. the floor rises: the minimum of each third is above the previous third's. A leak raises the
//!    floor; a sawtooth or a burst falls back to its base in every third that spans a period;
//! 4. the floor's total rise is at least `min_rise` timers and `min_relative_growth` of where it
//!    started, so a large pool breathing a little is not news;
//! 5. each floor step is what a line predicts (slope × span, within a factor of 2, and above the
//!    sample-to-sample jitter): warm-up and steps rise at once, not steadily;
//! 6. each half on its own trends up (p < `sustain_alpha`): a leak keeps leaking.
//!
//! Two stretches are judged: the whole window and its most recent `recent` samples, so a leak that
//! starts after a long flat stretch does not wait until it fills most of the window. `draining` is
//! the mirror image (the ceiling must fall). Everything is a pure function of the samples: no
//! randomness, no clock, so the same series always gets the same verdict.
//!
//! **Hysteresis.** A verdict feeds the next one ([`assess_after`]): a series that was `growing`
//! stays `growing` while its last `recent` samples, or its whole window, still rise — Theil–Sen
//! slope at least `min_growth_per_s`, Mann–Kendall one-sided p below `hold_alpha`, and the last
//! third's median above the first third's. Those are the guards that a leak cannot fail by chance; the stricter
//! ones above (each half trending, floor steps in line with the slope) exist to keep bounded
//! populations from being called leaks in the first place, and a noisy sample or a jittery heap
//! walk can fail them for one second on a blatant leak. So a linear leak whose noise is small
//! against its slope never flips to `stable`; it returns to `stable` only on evidence that growth
//! stopped: once about two thirds of the window are flat, neither stretch rises any more (40 s
//! after a leak stops, at the defaults).
//!
//! What no test on the samples alone can tell apart, and what therefore needs the caller's help or
//! patience:
//! - at start-up, a count that rose steadily over the first `min_samples` samples is a leak as far
//!   as the data shows, even if it is a pool filling up or the first tooth of a slow sawtooth;
//! - a pool of long-lived timers arriving at random wanders by about √(mean) with a correlation
//!   time of the timers' lifetime; a 30-sample rise of several √(mean) occasionally passes every
//!   test. The serial-correlation inflation makes this rare, not impossible.

use std::cell::OnceCell;
use std::collections::VecDeque;
use std::fmt;

use serde::Serialize;

/// Fewer samples than this make the half-window tests meaningless (three per half).
const MIN_SAMPLES: usize = 6;

/// Above this many samples the O(n²) statistics run on evenly spaced samples instead, which keeps
/// the cost per series bounded whatever window the caller asks for.
const MAX_EXACT: usize = 120;

/// How far each third's floor step may stray from what the slope predicts (slope × span): at least
/// this share of it, at most its inverse times it. A leak's floor follows its slope, give or take
/// noise; a floor that barely moved is noise, and one that moved far more than the slope says
/// jumped once (warm-up, a step) and merely dragged the slope along.
const FLOOR_STEP_FRACTION: f64 = 0.5;

/// Each third's floor must also clear this many times the sample-to-sample jitter ([`spread`]).
/// Minima of noise move by about the noise amplitude, i.e. about twice the jitter at most, so
/// two floor steps of twice the jitter each cannot both come from noise on a flat series.
const NOISE_MARGIN: f64 = 2.0;

/// Cap on the estimated lag-1 correlation: beyond it the inflation explodes on estimation noise
/// alone, and at 0.95 the test is already all but disabled for windows of 30–60 samples.
const MAX_PHI: f64 = 0.95;

const SECONDS_PER_HOUR: f64 = 3600.0;

/// A trend whose rise over the stretch is at least this many times the range of the residuals
/// around it is not corrected for serial correlation (see `serial_correlation_inflation`). A
/// bounded pool's wander *is* its apparent rise (ratio about 1); a sawtooth's residuals span its
/// whole amplitude.
const DOMINANT_TREND: f64 = 3.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Growing,
    Stable,
    Draining,
    /// Too few samples to judge.
    Unknown,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Growing => "growing",
            Self::Stable => "stable",
            Self::Draining => "draining",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Tuning of [`assess`]. Sample counts assume roughly regular sampling (the defaults assume 1 Hz);
/// slopes are per second of the timestamps given to [`Series::push`].
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// Samples judged at most (the most recent ones). 60: each third spans 20 samples, so a
    /// sawtooth or burst pattern with a period up to 20 s touches its base in every third and
    /// cannot raise the floor; a warm-up or a step has left the window after a minute; and a 1/s
    /// leak on a base of 500 rises by the 5% `min_relative_growth` asks for within the window.
    pub window: usize,
    /// Also judge the last `recent` samples on their own (0 = off; ignored unless between
    /// `min_samples` and the number of samples held). A leak starting after a long flat stretch
    /// is then found about 20 samples after it starts rather than 50: the floor test needs the leak
    /// to span the last two thirds of the stretch and a little more. 24 keeps patterns with
    /// periods up to 20 s from faking a rising floor at this scale too; a fill-then-expire tooth
    /// as long as the stretch itself (23 s) rises like a leak within it (kernel timers of such a
    /// pattern are protected by their known lifetime instead, see `verdict::judge`).
    pub recent: usize,
    /// Below this many samples the verdict is `unknown`. 12: a clean 20/s leak is called at the
    /// 12th sample, well inside a 20 s budget even with start-up delays, and a sawtooth dropping
    /// back to its base at least every 10 samples is never called growing, at any phase. Raising
    /// it protects slower sawtooths and fill-ups at start-up at the cost of detection latency.
    /// Values below 6 are raised to 6 (three samples per half).
    pub min_samples: usize,
    /// One-sided significance of Mann–Kendall over the whole stretch. 0.01: a bounded pool is
    /// assessed every second for as long as it lives, so false alarms must be rare per test.
    pub alpha: f64,
    /// Significance each half of the stretch must reach on its own. Looser than `alpha` because a
    /// half has half the samples: at 0.02, six samples in a row pass with one inversion (p ≈ 0.012)
    /// but not two (p ≈ 0.03), so the shortest stretch tolerates a little noise.
    pub sustain_alpha: f64,
    /// Smallest Theil–Sen slope (timers/s) called growth or drain. 0.5/s is 1800 timers an hour:
    /// worth reporting, and above the slope ±3 noise on a flat pool produces.
    pub min_growth_per_s: f64,
    /// Smallest rise of the floor across the stretch, in timers, so single-digit counts moving by
    /// a few timers are not called trends.
    pub min_rise: f64,
    /// Smallest rise of the floor across the stretch relative to where it started (0.05 = 5%).
    /// Higher values cut false alarms on large randomly wandering pools but delay slow leaks on
    /// large bases (a 1/s leak on 500 needs about 40 s at 5%).
    pub min_relative_growth: f64,
    /// One-sided Mann–Kendall significance the last `recent` samples must keep for a `growing`
    /// series to stay `growing` (see "Hysteresis" above). 0.05: loose, because it only keeps a
    /// verdict that the strict tests already gave, and a flat stretch of half the recent
    /// samples fails the slope guard long before it fails this one.
    pub hold_alpha: f64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            window: 60,
            recent: 24,
            min_samples: 12,
            alpha: 0.01,
            sustain_alpha: 0.02,
            min_growth_per_s: 0.5,
            min_rise: 5.0,
            min_relative_growth: 0.05,
            hold_alpha: 0.05,
        }
    }
}

/// A bounded ring of `(t_seconds, value)` samples, oldest first. Allocates once, at creation.
#[derive(Clone, Debug)]
pub struct Series {
    samples: VecDeque<(f64, f64)>,
    capacity: usize,
}

impl Series {
    /// Keeps the last `capacity` samples (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            samples: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Appends a sample, dropping the oldest when full. Refuses (returns false) non-finite input
    /// and a timestamp not after the last one: the statistics assume time order, and silently
    /// reordering would hide a caller's clock bug.
    pub fn push(&mut self, t: f64, value: f64) -> bool {
        if !t.is_finite() || !value.is_finite() {
            return false;
        }
        if self.samples.back().is_some_and(|&(last, _)| t <= last) {
            return false;
        }
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back((t, value));
        true
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn last(&self) -> Option<(f64, f64)> {
        self.samples.back().copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.samples.iter().copied()
    }

    pub fn clear(&mut self) {
        self.samples.clear();
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Assessment {
    pub verdict: Verdict,
    /// Theil–Sen slope, timers per second: of the scale that decided a `growing`/`draining`
    /// verdict, else of the whole window; 0 when `unknown`.
    pub growth_per_s: f64,
    /// `growing`/`draining`: 1 − the one-sided Mann–Kendall p-value in that direction (variance
    /// corrected for ties and serial correlation). `stable`: 1 − the two-sided p-value, i.e. how
    /// sure a monotonic trend of either sign is present even though the other guards rejected it.
    /// `unknown`: 0.
    pub confidence: f64,
    /// Current live count as estimated: the Theil–Sen line at the last sample when trending, the
    /// median of the window's last third when `stable`, the last sample when `unknown`.
    pub level: f64,
    /// Live count expected in one hour: `level` + `growth_per_s` × 3600 when trending (never
    /// below 0, never above `plateau`), `level` otherwise.
    pub projected_1h: f64,
    /// Where growth levels off, when the caller knows how long the timers live: timers created at
    /// a steady rate r and living L seconds settle at r × L. Only set when `growing`.
    pub plateau: Option<f64>,
    /// Samples judged.
    pub samples: usize,
}

/// Judges the most recent `params.window` samples of `series`.
///
/// `expected_lifetime_s`: how long the series' timers live, when known (e.g. every timer at a
/// callsite is armed for one hour). A steady stream of such timers grows exactly like a leak until
/// the first ones expire; the verdict stays `growing`, with `plateau` telling where it stops.
pub fn assess(series: &Series, params: &Params, expected_lifetime_s: Option<f64>) -> Assessment {
    assess_with(series, params, expected_lifetime_s, true)
}

/// [`assess`], with the shortcut for equal samples (`flat`) or without (to test it against).
fn assess_with(
    series: &Series,
    params: &Params,
    expected_lifetime_s: Option<f64>,
    shortcut: bool,
) -> Assessment {
    let min_samples = params.min_samples.max(MIN_SAMPLES);
    let window = params.window.max(min_samples);
    let n = series.len().min(window);
    let (t, x): (Vec<f64>, Vec<f64>) = series
        .samples
        .iter()
        .skip(series.len() - n)
        .copied()
        .unzip();
    if n < min_samples {
        let level = x.last().copied().unwrap_or(0.0);
        return Assessment {
            verdict: Verdict::Unknown,
            growth_per_s: 0.0,
            confidence: 0.0,
            level,
            projected_1h: level,
            plateau: None,
            samples: n,
        };
    }

    if let Some(flat) = flat(&x, n, params).filter(|_| shortcut) {
        return flat;
    }
    let full = Scale::new(&t, &x);
    if shortcut && within_min_rise(x.iter().copied(), params) {
        return stable_of(&full, &x, n);
    }
    let recent_len = (params.recent >= min_samples && params.recent < n).then_some(params.recent);
    let recent_cell = OnceCell::new();
    let recent = || {
        recent_len.map(|len| recent_cell.get_or_init(|| Scale::new(&t[n - len..], &x[n - len..])))
    };
    // Growth wins over drain when scales disagree: a leak that began after a drain is the news.
    for (dir, verdict) in [(1.0, Verdict::Growing), (-1.0, Verdict::Draining)] {
        let fit = full
            .trend(dir, params)
            .or_else(|| recent().and_then(|scale| scale.trend(dir, params)));
        if let Some(fit) = fit {
            return fit.assessment(verdict, n, expected_lifetime_s);
        }
    }

    stable_of(&full, &x, n)
}

/// `stable`, with the whole stretch's slope and two-sided confidence, at the median of the last
/// third of its `n` samples `x`.
fn stable_of(full: &Scale<'_>, x: &[f64], n: usize) -> Assessment {
    let level = median(&mut x[2 * n / 3..].to_vec()).unwrap_or(0.0);
    Assessment {
        verdict: Verdict::Stable,
        growth_per_s: full.slope,
        confidence: 1.0 - (2.0 * full.mk.p(1.0).min(full.mk.p(-1.0))).min(1.0),
        level,
        projected_1h: level,
        plateau: None,
        samples: n,
    }
}

/// Whether samples `x` span less than `min_rise`, by which the floor of every trend must move
/// (guard 4): then no stretch of them trends, in either direction.
fn within_min_rise(x: impl Iterator<Item = f64>, params: &Params) -> bool {
    if params.min_rise.is_nan() || params.min_rise <= 0.0 {
        return false;
    }
    let (lo, hi) = x.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    hi - lo < params.min_rise
}

/// What [`assess`] finds in `n` (at least `min_samples`) equal samples, without its O(n²)
/// statistics: most callsites of a node hold the same count sample after sample, and each is
/// judged every second. Every pairwise slope is 0, so the Theil–Sen slope is 0, below
/// `min_growth_per_s` in both directions; Mann–Kendall's S and its tie-corrected variance are 0,
/// so both one-sided p-values are ½ and the two-sided one 1: `stable` with confidence 0 at the
/// samples' value. `None` (judge in full) for samples that differ, or for a `min_growth_per_s`
/// that a zero slope could reach.
fn flat(x: &[f64], n: usize, params: &Params) -> Option<Assessment> {
    let (&first, rest) = x.split_first()?;
    if !(params.min_growth_per_s > 0.0 && first.is_finite() && rest.iter().all(|&v| v == first)) {
        return None;
    }
    Some(Assessment {
        verdict: Verdict::Stable,
        growth_per_s: 0.0,
        confidence: 0.0,
        level: first,
        projected_1h: first,
        plateau: None,
        samples: n,
    })
}

/// Whether [`assess`] must find `series` `stable` (and [`assess_after`] too, after any verdict
/// but `growing`), from its range alone: it holds enough samples, and they span less than
/// `min_rise`, by which the floor of every trend must move (guard 4), on either stretch and in
/// either direction. A callsite whose few timers come and go (0, 1, 2 live) is such a series for
/// as long as it lives, and needs none of the O(n²) statistics to be judged.
pub fn surely_stable(series: &Series, params: &Params) -> bool {
    let min_samples = params.min_samples.max(MIN_SAMPLES);
    let n = series.len().min(params.window.max(min_samples));
    let x = series
        .samples
        .iter()
        .skip(series.len() - n)
        .map(|&(_, v)| v);
    n >= min_samples && within_min_rise(x, params)
}

/// [`assess`] with memory: `previous` is the verdict the same series got at its previous sample.
/// A `growing` series stays `growing` while its recent samples still rise (module docs,
/// "Hysteresis"); every other verdict is judged afresh.
pub fn assess_after(
    series: &Series,
    params: &Params,
    previous: Verdict,
    expected_lifetime_s: Option<f64>,
) -> Assessment {
    let fresh = assess(series, params, expected_lifetime_s);
    if previous != Verdict::Growing || fresh.verdict == Verdict::Growing {
        return fresh;
    }
    let rising = still_rising(series, params, params.recent)
        .or_else(|| still_rising(series, params, params.window));
    match rising {
        Some(fit) => fit.assessment(Verdict::Growing, fresh.samples, expected_lifetime_s),
        None => fresh,
    }
}

/// Whether the last `len` samples (at least `min_samples`) still rise: the guards a leak cannot
/// fail by chance.
fn still_rising(series: &Series, params: &Params, len: usize) -> Option<Fit> {
    let min_samples = params.min_samples.max(MIN_SAMPLES);
    let len = len.max(min_samples).min(series.len());
    if len < min_samples {
        return None;
    }
    let (t, x): (Vec<f64>, Vec<f64>) = series
        .samples
        .iter()
        .skip(series.len() - len)
        .copied()
        .unzip();
    let scale = Scale::new(&t, &x);
    let p_value = scale.mk.p(1.0);
    if scale.slope < params.min_growth_per_s || p_value >= params.hold_alpha {
        return None;
    }
    // Medians, not minima: a single low sample (a heap walk racing the runtime) must not end a
    // leak's verdict.
    let mid = |v: &[f64]| median(&mut v.to_vec()).unwrap_or(0.0);
    if mid(&x[2 * len / 3..]) <= mid(&x[..len / 3]) {
        return None;
    }
    Some(Fit {
        slope: scale.slope,
        p_value,
        level: scale.level_at_last(),
    })
}

/// A trend that passed every guard. `slope` is signed (negative when draining).
struct Fit {
    slope: f64,
    p_value: f64,
    level: f64,
}

impl Fit {
    fn assessment(&self, verdict: Verdict, samples: usize, lifetime_s: Option<f64>) -> Assessment {
        let plateau = match lifetime_s {
            Some(life) if verdict == Verdict::Growing && life.is_finite() && life > 0.0 => {
                // The count cannot settle below where it already is.
                Some((self.slope * life).max(self.level))
            }
            _ => None,
        };
        let mut projected_1h = (self.level + self.slope * SECONDS_PER_HOUR).max(0.0);
        if let Some(p) = plateau {
            projected_1h = projected_1h.min(p);
        }
        Assessment {
            verdict,
            growth_per_s: self.slope,
            confidence: 1.0 - self.p_value,
            level: self.level,
            projected_1h,
            plateau,
            samples,
        }
    }
}

/// The direction-independent statistics of one stretch of samples.
struct Scale<'a> {
    /// All samples, for the floors.
    t: &'a [f64],
    x: &'a [f64],
    /// At most `MAX_EXACT` of them, for the O(n²) statistics.
    td: Vec<f64>,
    xd: Vec<f64>,
    slope: f64,
    /// Variance inflation of Mann–Kendall for serial correlation, applied to the halves too.
    inflation: f64,
    mk: MannKendall,
}

impl<'a> Scale<'a> {
    fn new(t: &'a [f64], x: &'a [f64]) -> Self {
        let (td, xd) = decimate(t, x);
        let slope = theil_sen(&td, &xd);
        let inflation = serial_correlation_inflation(&td, &xd, slope);
        let mk = MannKendall::of(&xd).inflated(inflation);
        Self {
            t,
            x,
            td,
            xd,
            slope,
            inflation,
            mk,
        }
    }

    /// Tests for a trend in direction `dir` (+1 up, −1 down). See the module docs for the guards;
    /// cheap ones run first.
    fn trend(&self, dir: f64, params: &Params) -> Option<Fit> {
        let (t, x, n) = (self.t, self.x, self.x.len());
        let rate = dir * self.slope;
        if rate < params.min_growth_per_s {
            return None;
        }
        let p_value = self.mk.p(dir);
        if p_value >= params.alpha {
            return None;
        }

        // Working on dir × x turns a drain into a rise, so one set of floor rules serves both.
        let (a, b) = (n / 3, 2 * n / 3);
        let floor =
            |r: std::ops::Range<usize>| x[r].iter().map(|v| dir * v).fold(f64::INFINITY, f64::min);
        let (f0, f1, f2) = (floor(0..a), floor(a..b), floor(b..n));
        if f1 <= f0 || f2 <= f1 {
            return None;
        }
        let needed = params.min_rise.max(params.min_relative_growth * f0.abs());
        if f2 - f0 < needed {
            return None;
        }
        // A line predicts each floor step as rate × span. Too little is noise; far too much means
        // the rise came at once (warm-up, a step, a burst) and the slope only reflects that jump.
        let noise = NOISE_MARGIN * spread(t, x, self.slope);
        let plausible = |step: f64, span: f64| {
            let predicted = rate * span;
            step >= (FLOOR_STEP_FRACTION * predicted).max(noise)
                && step <= predicted / FLOOR_STEP_FRACTION + noise
        };
        if !plausible(f1 - f0, t[a] - t[0]) || !plausible(f2 - f1, t[b] - t[a]) {
            return None;
        }

        let xd = &self.xd;
        let h = xd.len() / 2;
        let sustained = [&xd[..h], &xd[xd.len() - h..]].iter().all(|half| {
            MannKendall::of(half).inflated(self.inflation).p(dir) < params.sustain_alpha
        });
        if !sustained {
            return None;
        }

        Some(Fit {
            slope: self.slope,
            p_value,
            level: self.level_at_last(),
        })
    }

    /// The Theil–Sen line's value at the last sample, taken relative to it so that large
    /// timestamps (seconds since boot) cost no precision.
    fn level_at_last(&self) -> f64 {
        let last = self.t[self.t.len() - 1];
        let mut at_last: Vec<f64> = (self.td.iter().zip(&self.xd))
            .map(|(ti, xi)| xi + self.slope * (last - ti))
            .collect();
        median(&mut at_last).unwrap_or(0.0)
    }
}

/// How much serial correlation inflates the variance of Mann–Kendall's S: Hamed & Rao's (1998)
/// correction, with the rank autocorrelations modelled as AR(1), ρ_k = φ^k, and φ estimated from
/// the lag-1 autocorrelation of the ranks of the detrended series.
///
/// A bounded population of long-lived timers (requests with 10 s timeouts arriving at random)
/// wanders slowly, so consecutive samples are far from the independent draws plain Mann–Kendall
/// assumes, and such wandering reads as a significant trend. Hamed & Rao's usual estimate (every
/// lag whose autocorrelation is significant) needs far more than 30–60 samples to see a
/// correlation time of 10 s; one lag-1 estimate plus a model does better on short windows. The
/// estimate is raised by its small-sample bias, (1 + 4φ)/n, and only used when significant at 5%
/// so that white noise on a leak costs nothing. Never below 1: negative correlation would only
/// make verdicts bolder.
fn serial_correlation_inflation(t: &[f64], x: &[f64], slope: f64) -> f64 {
    let n = x.len();
    if n < 3 {
        return 1.0;
    }
    let residuals: Vec<f64> = t
        .iter()
        .zip(x)
        .map(|(ti, xi)| xi - slope * (ti - t[0]))
        .collect();
    // A line that rises far more than anything wanders around it: the wander cannot be what
    // makes it rise, whatever its correlation. Cumulative random arrivals (a leak of Poisson
    // timers) wander like a random walk around their line, which the inflation would otherwise
    // take for a pool's slow wander and delay the verdict by many seconds.
    let (lo, hi) = residuals
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &r| {
            (lo.min(r), hi.max(r))
        });
    if (slope * (t[n - 1] - t[0])).abs() >= DOMINANT_TREND * (hi - lo) {
        return 1.0;
    }
    let ranks = ranks(&residuals);
    let mean = (n as f64 + 1.0) / 2.0;
    let dev: Vec<f64> = ranks.iter().map(|r| r - mean).collect();
    let total: f64 = dev.iter().map(|d| d * d).sum();
    if total <= 0.0 {
        return 1.0;
    }
    let nf = n as f64;
    let rho1 = dev.iter().zip(&dev[1..]).map(|(a, b)| a * b).sum::<f64>() / total;
    if rho1 <= 1.96 / nf.sqrt() {
        return 1.0;
    }
    let phi = (rho1 + (1.0 + 4.0 * rho1) / nf).min(MAX_PHI);
    let mut weighted = 0.0;
    let mut rho = 1.0;
    for k in 1..n - 2 {
        rho *= phi;
        let m = (n - k) as f64;
        weighted += m * (m - 1.0) * (m - 2.0) * rho;
    }
    (1.0 + 2.0 * weighted / (nf * (nf - 1.0) * (nf - 2.0))).max(1.0)
}

/// Ranks from 1, ties sharing their average rank. Values closer than a relative 1e-9 count as tied:
/// detrending an exact line leaves rounding dust that would otherwise rank as structure.
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
    let scale = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let eps = 1e-9 * (1.0 + scale);
    let mut ranks = vec![0.0; v.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && v[order[end]] - v[order[end - 1]] <= eps {
            end += 1;
        }
        let shared = (start + end + 1) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = shared;
        }
        start = end;
    }
    ranks
}

/// Typical sample-to-sample jitter around the trend: the median absolute step once the slope is
/// taken out. The median ignores the few large steps of a burst, a step or a sawtooth's drop, so
/// this measures the noise the floor minima are subject to.
fn spread(t: &[f64], x: &[f64], slope: f64) -> f64 {
    let mut steps: Vec<f64> = t
        .windows(2)
        .zip(x.windows(2))
        .map(|(t, x)| (x[1] - x[0] - slope * (t[1] - t[0])).abs())
        .collect();
    median(&mut steps).unwrap_or(0.0)
}

/// At most `MAX_EXACT` evenly spaced samples, first and last included. Deterministic by design:
/// random pair sampling would make verdicts differ between identical runs.
fn decimate(t: &[f64], x: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let n = x.len();
    if n <= MAX_EXACT {
        return (t.to_vec(), x.to_vec());
    }
    (0..MAX_EXACT)
        .map(|i| i * (n - 1) / (MAX_EXACT - 1))
        .map(|i| (t[i], x[i]))
        .unzip()
}

/// Mann–Kendall S and its variance under the no-trend hypothesis, corrected for ties: live counts
/// are integers, and a stable pool repeats the same values constantly, which without the
/// correction would overstate the variance and hide trends.
struct MannKendall {
    s: f64,
    var: f64,
}

impl MannKendall {
    fn of(x: &[f64]) -> Self {
        let mut s: i64 = 0;
        for (i, xi) in x.iter().enumerate() {
            for xj in &x[i + 1..] {
                s += i64::from(xj > xi) - i64::from(xj < xi);
            }
        }
        let mut sorted = x.to_vec();
        sorted.sort_by(f64::total_cmp);
        let tie_term: f64 = sorted
            .chunk_by(|p, q| p == q)
            .map(|run| {
                let k = run.len() as f64;
                k * (k - 1.0) * (2.0 * k + 5.0)
            })
            .sum();
        let n = x.len() as f64;
        Self {
            s: s as f64,
            var: (n * (n - 1.0) * (2.0 * n + 5.0) - tie_term) / 18.0,
        }
    }

    fn inflated(self, factor: f64) -> Self {
        Self {
            var: self.var * factor,
            ..self
        }
    }

    /// Normal approximation with continuity correction.
    fn z(&self) -> f64 {
        if self.var <= 0.0 {
            return 0.0;
        }
        let sd = self.var.sqrt();
        if self.s > 0.0 {
            (self.s - 1.0) / sd
        } else if self.s < 0.0 {
            (self.s + 1.0) / sd
        } else {
            0.0
        }
    }

    fn p_up(&self) -> f64 {
        normal_upper_tail(self.z())
    }

    fn p_down(&self) -> f64 {
        normal_upper_tail(-self.z())
    }

    fn p(&self, dir: f64) -> f64 {
        if dir > 0.0 {
            self.p_up()
        } else {
            self.p_down()
        }
    }
}

/// Median of the pairwise slopes: up to 29% of the samples can be arbitrary (bursts, glitches)
/// without dragging it, unlike least squares.
fn theil_sen(t: &[f64], x: &[f64]) -> f64 {
    let mut slopes = Vec::with_capacity(x.len() * x.len().saturating_sub(1) / 2);
    for i in 0..x.len() {
        for j in i + 1..x.len() {
            let dt = t[j] - t[i];
            if dt > 0.0 {
                slopes.push((x[j] - x[i]) / dt);
            }
        }
    }
    median(&mut slopes).unwrap_or(0.0)
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let (len, mid) = (v.len(), v.len() / 2);
    let (below, &mut hi, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    if len % 2 == 1 {
        return Some(hi);
    }
    let lo = below.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some((lo + hi) / 2.0)
}

/// P(Z > z) for a standard normal Z.
fn normal_upper_tail(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Complementary error function with fractional error below 1.2e-7 everywhere (Numerical Recipes'
/// Chebyshev fit). Relative rather than absolute accuracy matters here: the p-values compared with
/// `alpha` live in the tail, where 1 − erf(x) computed naively loses all digits.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * (-z * z + poly).exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_samples_are_judged_as_in_full() {
        let params = Params::default();
        for n in [12, 13, 30, 59, 60, 61, 200] {
            for value in [0.0, 1.0, 7.0, 12_345.0] {
                for step in [1.0, 0.37, 1.9] {
                    let mut series = Series::new(params.window.max(n));
                    for i in 0..n {
                        // Irregular spacing, as a busy daemon samples.
                        let jitter = if i % 3 == 0 { 0.05 } else { 0.0 };
                        series.push(1000.0 + i as f64 * step + jitter, value);
                    }
                    let fast = assess(&series, &params, None);
                    assert_eq!(
                        fast,
                        assess_with(&series, &params, None, false),
                        "{n} {value}"
                    );
                    assert_eq!(fast.verdict, Verdict::Stable);
                    assert!(flat(&[value; 12], 12, &params).is_some());
                }
            }
        }
        // Anything but equal samples is judged in full.
        assert!(flat(&[1.0, 1.0, 2.0], 3, &params).is_none());
        let zero_floor = Params {
            min_growth_per_s: 0.0,
            ..Params::default()
        };
        assert!(flat(&[1.0; 20], 20, &zero_floor).is_none());
    }

    /// Series within less than `min_rise` are `stable` as judged in full, however steeply and
    /// steadily they rise within that range; wider ones are never taken for sure.
    #[test]
    fn a_range_below_the_floor_rise_is_surely_stable() {
        let params = Params::default();
        let mut rng = Rng::new(18);
        let mut checked = 0;
        for case in 0..400u64 {
            let mut series = Series::new(params.window);
            let (amp, step) = ((case % 4) + 1, [1.0, 0.1, 0.02][(case % 3) as usize]);
            for i in 0..(case % 90) {
                // Noise, or a steady climb of 4.9 over the window (slope up to 245/s).
                let v = if case % 5 == 0 {
                    4.9 * i as f64 / 90.0
                } else {
                    (amp as f64 + rng.noise(amp)).max(0.0)
                };
                series.push(i as f64 * step, v);
            }
            let sure = surely_stable(&series, &params);
            let (lo, hi) = series
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), (_, v)| {
                    (lo.min(v), hi.max(v))
                });
            assert_eq!(
                sure,
                series.len() >= params.min_samples && hi - lo < params.min_rise,
                "{case}"
            );
            if sure {
                checked += 1;
                for previous in [Verdict::Stable, Verdict::Draining, Verdict::Unknown] {
                    let fast = assess_after(&series, &params, previous, None);
                    assert_eq!(fast.verdict, Verdict::Stable, "{case} {series:?}");
                }
                // Skipping the trend tests changes nothing of the assessment.
                assert_eq!(
                    assess(&series, &params, Some(10.0)),
                    assess_with(&series, &params, Some(10.0), false),
                    "{case}"
                );
            }
        }
        assert!(checked > 100, "{checked}");
    }

    /// xorshift64*: deterministic noise so every run sees the same series.
    struct Rng(u64);

    impl Rng {
        fn new(seed: u64) -> Self {
            Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }

        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        /// Uniform integer in [-amp, amp].
        fn noise(&mut self, amp: u64) -> f64 {
            (self.next() % (2 * amp + 1)) as f64 - amp as f64
        }
    }

    /// Verdict after each sample, sampled at 1 Hz from t = 0, each judged after the previous one
    /// (hysteresis): `out[i]` judges samples 0..=i.
    fn run(values: &[f64], params: &Params) -> Vec<Assessment> {
        let mut series = Series::new(params.window);
        let mut previous = Verdict::Unknown;
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                assert!(series.push(i as f64, v));
                let a = assess_after(&series, params, previous, None);
                previous = a.verdict;
                a
            })
            .collect()
    }

    fn first(values: &[f64], verdict: Verdict) -> Option<usize> {
        run(values, &Params::default())
            .iter()
            .position(|a| a.verdict == verdict)
            .map(|i| i + 1)
    }

    fn assert_never_growing(values: &[f64], what: &str) {
        if let Some(n) = first(values, Verdict::Growing) {
            panic!("{what}: growing after {n} samples: {:?}", &values[..n]);
        }
    }

    #[test]
    fn erfc_matches_reference_values() {
        for (x, want) in [
            (0.0, 1.0),
            (0.5, 0.479_500_122_186_953_5),
            (1.0, 0.157_299_207_050_285_1),
            (2.0, 0.004_677_734_981_047_266),
            (3.0, 2.209_049_699_858_544e-5),
            (-1.0, 1.842_700_792_949_715),
        ] {
            let got = erfc(x);
            assert!(
                ((got - want) / want).abs() < 2e-7,
                "erfc({x}) = {got}, want {want}"
            );
        }
        assert!((normal_upper_tail(1.959_963_985) - 0.025).abs() < 1e-8);
        assert!((normal_upper_tail(-3.0) - 0.998_650_101_968_369_9).abs() < 1e-8);
    }

    #[test]
    fn mann_kendall_corrects_for_ties() {
        let mk = MannKendall::of(&[1.0, 2.0, 2.0, 3.0]);
        assert_eq!(mk.s, 5.0);
        // (4·3·13 − 2·1·9) / 18
        assert!((mk.var - 138.0 / 18.0).abs() < 1e-12);
        let flat = MannKendall::of(&[7.0; 10]);
        assert_eq!((flat.s, flat.var), (0.0, 0.0));
        assert!((flat.p_up() - 0.5).abs() < 1e-7);
    }

    #[test]
    fn theil_sen_ignores_outliers() {
        let t: Vec<f64> = (0..20).map(f64::from).collect();
        let mut x: Vec<f64> = t.iter().map(|t| 3.0 * t + 10.0).collect();
        x[5] = 1000.0;
        x[13] = -1000.0;
        assert_eq!(theil_sen(&t, &x), 3.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn too_few_samples_is_unknown() {
        let params = Params::default();
        let empty = assess(&Series::new(60), &params, None);
        assert_eq!((empty.verdict, empty.samples), (Verdict::Unknown, 0));
        let values: Vec<f64> = (0..params.min_samples - 1)
            .map(|i| 100.0 * i as f64)
            .collect();
        let last = run(&values, &params).pop().unwrap();
        assert_eq!(last.verdict, Verdict::Unknown);
        assert_eq!((last.growth_per_s, last.confidence), (0.0, 0.0));
        assert_eq!(last.level, *values.last().unwrap());
    }

    #[test]
    fn steady_leak_is_growing_within_20_samples() {
        let values: Vec<f64> = (0..120).map(|i| 20.0 * i as f64).collect();
        let verdicts = run(&values, &Params::default());
        let at = verdicts
            .iter()
            .position(|a| a.verdict == Verdict::Growing)
            .unwrap()
            + 1;
        assert!(at <= 20, "growing only after {at} samples");
        for a in &verdicts[at - 1..] {
            assert_eq!(a.verdict, Verdict::Growing);
            assert!((a.growth_per_s - 20.0).abs() <= 2.0, "{a:?}");
            assert!(a.confidence > 0.99, "{a:?}");
        }
        let last = verdicts.last().unwrap();
        assert!((last.level - 20.0 * 119.0).abs() < 1.0, "{last:?}");
        assert!((last.projected_1h - (last.level + 72_000.0)).abs() < 1.0);
        assert_eq!(last.plateau, None);
    }

    #[test]
    fn noisy_leaks_are_growing() {
        for seed in 0..20 {
            let mut rng = Rng::new(seed);
            let fast: Vec<f64> = (0..40).map(|i| 20.0 * i as f64 + rng.noise(10)).collect();
            let at = first(&fast, Verdict::Growing).unwrap_or(usize::MAX);
            assert!(at <= 20, "seed {seed}: 20/s leak growing only after {at}");

            let slow: Vec<f64> = (0..60).map(|i| 500.0 + i as f64 + rng.noise(5)).collect();
            let verdicts = run(&slow, &Params::default());
            let last = verdicts.last().unwrap();
            assert_eq!(
                last.verdict,
                Verdict::Growing,
                "seed {seed}: slow leak {last:?}"
            );
            assert!(
                (last.growth_per_s - 1.0).abs() < 0.25,
                "seed {seed}: {last:?}"
            );
        }
    }

    #[test]
    fn leak_starting_after_a_flat_stretch_is_found_from_the_recent_samples() {
        let mut rng = Rng::new(7);
        let values: Vec<f64> = (0..200)
            .map(|i| 64.0 + rng.noise(3) + 20.0 * (i as f64 - 120.0).max(0.0))
            .collect();
        let verdicts = run(&values, &Params::default());
        assert!(verdicts[..120]
            .iter()
            .all(|a| a.verdict != Verdict::Growing));
        let at = verdicts[120..]
            .iter()
            .position(|a| a.verdict == Verdict::Growing)
            .unwrap();
        assert!(at <= 26, "growing only {at} s after the leak started");
    }

    #[test]
    fn bounded_pool_is_never_growing() {
        let params = Params::default();
        for seed in 0..40 {
            let mut rng = Rng::new(seed);
            let values: Vec<f64> = (0..200).map(|_| 64.0 + rng.noise(3)).collect();
            let verdicts = run(&values, &params);
            let (early, judged) = verdicts.split_at(params.min_samples - 1);
            assert!(early.iter().all(|a| a.verdict == Verdict::Unknown));
            for (i, a) in judged.iter().enumerate() {
                let n = i + params.min_samples;
                assert_eq!(
                    a.verdict,
                    Verdict::Stable,
                    "seed {seed}, {n} samples: {a:?}"
                );
                assert_eq!(a.projected_1h, a.level);
                assert!((a.level - 64.0).abs() <= 3.0);
            }
        }
    }

    /// One tooth of a sawtooth: the fill level (0..=1) at a fraction (0..1) of the period.
    type Shape = fn(f64) -> f64;

    /// Teeth from 10 to 210, `period` samples long, starting `phase` samples into a tooth.
    fn teeth(shape: Shape, period: usize, phase: usize, noise: u64, seed: u64) -> Vec<f64> {
        let mut rng = Rng::new(seed);
        (0..120)
            .map(|i| {
                let frac = ((i + phase) % period) as f64 / period as f64;
                (200.0 * shape(frac)).round() + 10.0 + rng.noise(noise)
            })
            .collect()
    }

    #[test]
    fn sawtooth_is_never_growing() {
        let shapes: [(&str, Shape); 3] = [
            // Filled at a steady rate, all expire together: the shape that rises like a leak.
            ("fill then expire", |f| f),
            ("armed at once, expiring one by one", |f| 1.0 - f),
            ("triangle", |f| 1.0 - (2.0 * f - 1.0).abs()),
        ];
        for (name, shape) in shapes {
            for period in 2..=10 {
                for phase in 0..period {
                    for (noise, seed) in [(0, 0), (3, period as u64 * 31 + phase as u64)] {
                        let values = teeth(shape, period, phase, noise, seed);
                        let what = format!("{name}, period {period}, phase {phase}, noise {noise}");
                        assert_never_growing(&values, &what);
                    }
                }
            }
        }
    }

    #[test]
    fn slower_sawtooth_is_never_growing_once_past_start_up() {
        // At start-up the first tooth of a slow sawtooth is a leak as far as the data shows; once
        // the window holds 30 samples, periods up to 20 s must never pass.
        for period in 11..=20 {
            for phase in 0..period {
                let values = teeth(|f| f, period, phase, 3, phase as u64);
                let verdicts = run(&values, &Params::default());
                if let Some(i) = verdicts[29..]
                    .iter()
                    .position(|a| a.verdict == Verdict::Growing)
                {
                    panic!(
                        "period {period}, phase {phase}: growing after {} samples",
                        i + 30
                    );
                }
            }
        }
    }

    /// Timers arriving at random (Poisson, `rate`/s), each expiring with probability 1 − e^(−1/life)
    /// per second: a bounded pool that wanders, starting at its mean.
    fn random_pool(rng: &mut Rng, rate: f64, life: f64, len: usize) -> Vec<f64> {
        let mut unit = || (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
        let keep = (-1.0 / life).exp();
        let mut live = (rate / (1.0 - keep)).round() as u64;
        (0..len)
            .map(|_| {
                let survivors = (0..live).filter(|_| unit() < keep).count() as u64;
                // Poisson arrivals by Knuth's product of uniforms.
                let (mut arrivals, mut p) = (0, unit());
                while p > (-rate).exp() {
                    arrivals += 1;
                    p *= unit();
                }
                live = survivors + arrivals;
                live as f64
            })
            .collect()
    }

    #[test]
    fn random_short_lived_pool_is_never_growing() {
        for seed in 0..20 {
            let values = random_pool(&mut Rng::new(seed), 20.0, 1.0, 180);
            assert_never_growing(&values, &format!("random pool, seed {seed}"));
        }
    }

    #[test]
    fn serial_correlation_inflates_the_variance() {
        let t: Vec<f64> = (0..60).map(f64::from).collect();
        let line: Vec<f64> = t.iter().map(|t| 20.0 * t).collect();
        assert_eq!(serial_correlation_inflation(&t, &line, 20.0), 1.0);
        let mut rng = Rng::new(1);
        let white: Vec<f64> = t.iter().map(|t| 20.0 * t + rng.noise(10)).collect();
        assert_eq!(serial_correlation_inflation(&t, &white, 20.0), 1.0);
        let wander = random_pool(&mut Rng::new(2), 20.0, 10.0, 60);
        let slope = theil_sen(&t, &wander);
        let inflation = serial_correlation_inflation(&t, &wander, slope);
        assert!(inflation > 3.0, "inflation {inflation}");
    }

    #[test]
    fn bursts_are_never_growing() {
        for phase in 0..15 {
            let mut rng = Rng::new(phase as u64);
            // +500 every 15 s, all expiring after 5 s.
            let square: Vec<f64> = (0..120)
                .map(|i| {
                    let burst = if (i + phase) % 15 < 5 { 500.0 } else { 0.0 };
                    20.0 + burst + rng.noise(2)
                })
                .collect();
            assert_never_growing(&square, &format!("square bursts, phase {phase}"));
            // The same bursts with expiries spread over 5 s.
            let decaying: Vec<f64> = (0..120)
                .map(|i| {
                    let age = (i + phase) % 15;
                    let burst = if age < 5 {
                        500.0 * (5 - age) as f64 / 5.0
                    } else {
                        0.0
                    };
                    20.0 + burst + rng.noise(2)
                })
                .collect();
            assert_never_growing(&decaying, &format!("decaying bursts, phase {phase}"));
        }
    }

    #[test]
    fn step_up_is_not_growth() {
        for seed in 0..20 {
            let mut rng = Rng::new(seed);
            let values: Vec<f64> = (0..120)
                .map(|i| 50.0 + if i >= 10 { 100.0 } else { 0.0 } + rng.noise(3))
                .collect();
            assert_never_growing(&values, &format!("step, seed {seed}"));
            let verdicts = run(&values, &Params::default());
            let at_90 = &verdicts[90];
            assert_eq!(at_90.verdict, Verdict::Stable, "seed {seed}: {at_90:?}");
            assert!((at_90.level - 150.0).abs() <= 3.0);
        }
    }

    #[test]
    fn warm_up_is_not_growth() {
        for seed in 0..50 {
            let mut rng = Rng::new(seed);
            // 0 → 64 over the first 3 s, then a bounded pool.
            let values: Vec<f64> = (0..120)
                .map(|i| {
                    if i < 3 {
                        (64 * i / 3) as f64
                    } else {
                        64.0 + rng.noise(3)
                    }
                })
                .collect();
            assert_never_growing(&values, &format!("warm-up, seed {seed}"));
        }
    }

    #[test]
    fn leak_that_stops_becomes_stable() {
        let values: Vec<f64> = (0..200).map(|i| 20.0 * (i as f64).min(60.0)).collect();
        let verdicts = run(&values, &Params::default());
        assert_eq!(verdicts[59].verdict, Verdict::Growing);
        assert_eq!(verdicts[199].verdict, Verdict::Stable);
        assert_eq!(verdicts[199].level, 1200.0);
    }

    #[test]
    fn linear_drain_is_draining() {
        let values: Vec<f64> = (0..=100).map(|i| 1000.0 - 10.0 * i as f64).collect();
        let verdicts = run(&values, &Params::default());
        let at = verdicts
            .iter()
            .position(|a| a.verdict == Verdict::Draining)
            .unwrap()
            + 1;
        assert!(at <= 20, "draining only after {at} samples");
        for a in &verdicts[at - 1..] {
            assert_eq!(a.verdict, Verdict::Draining);
            assert!((a.growth_per_s + 10.0).abs() < 0.5, "{a:?}");
            assert_eq!(a.projected_1h, 0.0);
            assert_eq!(a.plateau, None);
        }
    }

    #[test]
    fn long_lived_stream_grows_towards_its_plateau() {
        let params = Params::default();
        let mut series = Series::new(params.window);
        for i in 0..30 {
            series.push(i as f64, 20.0 * i as f64);
        }
        let hour = assess(&series, &params, Some(3600.0));
        assert_eq!(hour.verdict, Verdict::Growing);
        let plateau = hour.plateau.unwrap();
        assert!((plateau - 72_000.0).abs() < 1.0, "{hour:?}");
        assert_eq!(hour.projected_1h, plateau);

        let minute = assess(&series, &params, Some(60.0));
        assert_eq!(minute.verdict, Verdict::Growing);
        assert!((minute.plateau.unwrap() - 1200.0).abs() < 1.0, "{minute:?}");
        assert_eq!(minute.projected_1h, minute.plateau.unwrap());

        let unbounded = assess(&series, &params, None);
        assert_eq!(unbounded.plateau, None);
        assert!(unbounded.projected_1h > 72_000.0);
        assert_eq!(assess(&series, &params, Some(f64::NAN)).plateau, None);
    }

    #[test]
    fn wide_windows_are_decimated_deterministically() {
        let params = Params {
            window: 600,
            recent: 0,
            ..Params::default()
        };
        let mut rng = Rng::new(3);
        let mut series = Series::new(params.window);
        for i in 0..600 {
            series.push(i as f64, 1000.0 + 2.0 * i as f64 + rng.noise(20));
        }
        let a = assess(&series, &params, None);
        assert_eq!(a.verdict, Verdict::Growing);
        assert_eq!(a.samples, 600);
        assert!((a.growth_per_s - 2.0).abs() < 0.1, "{a:?}");
        assert_eq!(a, assess(&series.clone(), &params, None));
    }

    #[test]
    fn series_is_a_bounded_time_ordered_ring() {
        let mut series = Series::new(3);
        assert!(series.push(1.0, 10.0));
        assert!(!series.push(1.0, 11.0));
        assert!(!series.push(0.5, 11.0));
        assert!(!series.push(2.0, f64::NAN));
        assert!(!series.push(f64::INFINITY, 1.0));
        for t in 2..6 {
            assert!(series.push(t as f64, t as f64));
        }
        assert_eq!(series.len(), 3);
        assert_eq!(
            series.iter().collect::<Vec<_>>(),
            [(3.0, 3.0), (4.0, 4.0), (5.0, 5.0)]
        );
        assert_eq!(series.last(), Some((5.0, 5.0)));
    }

    #[test]
    fn verdict_names() {
        let names: Vec<&str> = [
            Verdict::Growing,
            Verdict::Stable,
            Verdict::Draining,
            Verdict::Unknown,
        ]
        .iter()
        .map(|v| v.as_str())
        .collect();
        assert_eq!(names, ["growing", "stable", "draining", "unknown"]);
        assert_eq!(
            serde_json::to_string(&Verdict::Growing).unwrap(),
            "\"growing\""
        );
        assert_eq!(Verdict::Draining.to_string(), "draining");
    }
}
