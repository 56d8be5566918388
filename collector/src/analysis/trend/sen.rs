//! The Theil–Sen slope: the median of all pairwise slopes, the Kendall–Theil line's
//! intercept as pymannkendall computes it (Conover 1980), and the slope's rank-based
//! confidence interval (Gilbert 1987, §16.4; Hollander & Wolfe).
//!
//! Cost: every pair is materialised, n(n-1)/2 `f64`s, and medians and interval ends are
//! found by selection (expected linear time in the number of pairs). Up to
//! [`EXACT_LIMIT`] points that is at most ~2 million slopes (~16 MB, milliseconds), so the
//! thousands of series of one run fit;
//! longer series are thinned to [`EXACT_LIMIT`] evenly spaced points (each keeping its
//! original index, so slopes stay per unit index), which makes the slope an approximation.

use super::normal;

/// Series up to this many points use every pair; longer ones are thinned to this many.
pub const EXACT_LIMIT: usize = 2_000;

/// The Theil–Sen slope and the intercept of the Kendall–Theil line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SenSlope {
    /// Median of the pairwise slopes, per unit of index (0 for fewer than two points).
    pub slope: f64,
    /// median(x) - (n-1)/2 · slope, as pymannkendall computes it (0 for no points).
    pub intercept: f64,
}

/// How interval ranks that fall between two ordered slopes are turned into values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CiRule {
    /// Linear interpolation between the neighbouring ordered slopes (Gilbert 1987).
    Interpolated,
    /// Round half to even, as `scipy.stats.theilslopes` and R's `trend::sens.slope` do.
    Rounded,
}

/// The pairwise slopes of a series (possibly thinned, see the module documentation).
#[derive(Clone, Debug)]
pub struct PairwiseSlopes {
    slopes: Vec<f64>,
    /// The points the slopes were taken from (all of the series unless it was thinned).
    points: Vec<f64>,
}

impl PairwiseSlopes {
    /// All pairwise slopes (x_j - x_i)/(j - i), i < j.
    pub fn new(x: &[f64]) -> Self {
        let n = x.len();
        let idx: Vec<usize> = if n <= EXACT_LIMIT {
            (0..n).collect()
        } else {
            let m = EXACT_LIMIT;
            // Evenly spaced, strictly increasing, first and last included.
            (0..m).map(|k| k * (n - 1) / (m - 1)).collect()
        };
        let m = idx.len();
        let mut slopes = Vec::with_capacity(m * m.saturating_sub(1) / 2);
        for a in 0..m {
            let (i, xi) = (idx[a], x[idx[a]]);
            for &j in &idx[a + 1..] {
                slopes.push((x[j] - xi) / (j - i) as f64);
            }
        }
        let points = idx.iter().map(|&i| x[i]).collect();
        PairwiseSlopes { slopes, points }
    }

    /// Number of pairwise slopes, N'.
    pub fn len(&self) -> usize {
        self.slopes.len()
    }

    /// Whether there are no slopes (fewer than two points).
    pub fn is_empty(&self) -> bool {
        self.slopes.is_empty()
    }

    /// The points the slopes were taken from; `Var(S)` for [`Self::interval`] must be
    /// that of these points.
    pub fn points(&self) -> &[f64] {
        &self.points
    }

    /// The median slope (mean of the middle two for an even count); 0 when empty.
    pub fn median(&mut self) -> f64 {
        median_in_place(&mut self.slopes).unwrap_or(0.0)
    }

    /// The (1 - alpha) confidence interval of the slope: with C = z_{1-α/2}·sqrt(var_s),
    /// M1 = (N' - C)/2 and M2 = (N' + C)/2, the M1-th and (M2 + 1)-th smallest slopes
    /// (1-based, clamped to [1, N']). `var_s` is the variance of the Mann–Kendall S of
    /// [`Self::points`]; the caller chooses which (tie-corrected, or Hamed–Rao corrected).
    /// `None` when there are no slopes.
    pub fn interval(&mut self, var_s: f64, alpha: f64, rule: CiRule) -> Option<(f64, f64)> {
        if self.slopes.is_empty() {
            return None;
        }
        let n = self.slopes.len() as f64;
        let c = normal::quantile(1.0 - alpha / 2.0) * var_s.max(0.0).sqrt();
        let c = if c.is_finite() { c } else { n };
        let (m1, m2) = ((n - c) / 2.0, (n + c) / 2.0);
        let (lo, hi) = match rule {
            CiRule::Interpolated => (m1, m2 + 1.0),
            CiRule::Rounded => (m1.round_ties_even(), m2.round_ties_even() + 1.0),
        };
        Some((self.at_rank(lo), self.at_rank(hi)))
    }

    /// The ordered slope at 1-based rank `r`, clamped, interpolated between neighbours.
    fn at_rank(&mut self, r: f64) -> f64 {
        let n = self.slopes.len();
        let r = r.clamp(1.0, n as f64);
        let below = r.floor();
        let frac = r - below;
        let k = below as usize - 1;
        let low = kth(&mut self.slopes, k);
        if frac == 0.0 || k + 1 >= n {
            return low;
        }
        let high = kth(&mut self.slopes, k + 1);
        low + frac * (high - low)
    }
}

/// The Theil–Sen slope and intercept of `x`, as pymannkendall's `sens_slope`.
pub fn sens_slope(x: &[f64]) -> SenSlope {
    slope_and_intercept(x, &mut PairwiseSlopes::new(x))
}

/// The slope from `slopes` (taken from `x`) and the intercept from all of `x`.
pub fn slope_and_intercept(x: &[f64], slopes: &mut PairwiseSlopes) -> SenSlope {
    let slope = slopes.median();
    let mut sorted = x.to_vec();
    let intercept = match median_in_place(&mut sorted) {
        Some(med) => med - (x.len() - 1) as f64 / 2.0 * slope,
        None => 0.0,
    };
    SenSlope { slope, intercept }
}

/// The k-th smallest (0-based) by selection; `v` must be non-empty and `k < v.len()`.
fn kth(v: &mut [f64], k: usize) -> f64 {
    *v.select_nth_unstable_by(k, f64::total_cmp).1
}

/// The median (mean of the middle two for an even length), `None` when empty. Reorders.
pub(crate) fn median_in_place(v: &mut [f64]) -> Option<f64> {
    let n = v.len();
    if n == 0 {
        return None;
    }
    let upper = kth(v, n / 2);
    if n % 2 == 1 {
        return Some(upper);
    }
    // After selection, everything before n/2 is <= upper; its maximum is the lower middle.
    let lower = v[..n / 2].iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some((lower + upper) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_series() {
        assert_eq!(
            sens_slope(&[]),
            SenSlope {
                slope: 0.0,
                intercept: 0.0
            }
        );
        assert_eq!(sens_slope(&[5.0]).intercept, 5.0);
        assert_eq!(sens_slope(&[1.0, 4.0]).slope, 3.0);
        assert!(PairwiseSlopes::new(&[1.0])
            .interval(0.0, 0.05, CiRule::Interpolated)
            .is_none());
    }

    #[test]
    fn constant_and_linear() {
        let flat = vec![7.0; 50];
        assert_eq!(sens_slope(&flat).slope, 0.0);
        let line: Vec<f64> = (0..50).map(|i| 2.0 + 0.5 * f64::from(i)).collect();
        let s = sens_slope(&line);
        assert_eq!((s.slope, s.intercept), (0.5, 2.0));
        let (lo, hi) = PairwiseSlopes::new(&line)
            .interval(1e4, 0.01, CiRule::Interpolated)
            .unwrap();
        assert_eq!((lo, hi), (0.5, 0.5));
    }

    #[test]
    fn long_series_are_thinned_without_panic() {
        let x: Vec<f64> = (0..EXACT_LIMIT as u32 + 7)
            .map(|i| f64::from(i % 3) + 0.25 * f64::from(i))
            .collect();
        let mut p = PairwiseSlopes::new(&x);
        assert_eq!(p.points().len(), EXACT_LIMIT);
        let s = slope_and_intercept(&x, &mut p);
        assert!((s.slope - 0.25).abs() < 1e-3);
    }
}
