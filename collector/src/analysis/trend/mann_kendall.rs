//! The Mann–Kendall trend test: S, Var(S) with the tie correction, the continuity-corrected
//! z, the two-sided p-value, and the Hamed & Rao (1998) variance correction for
//! autocorrelated series, each computed as pymannkendall 1.4.3 computes it
//! (`original_test`, `hamed_rao_modification_test`).
//!
//! Cost: S and the Hamed–Rao autocorrelation (all lags by default) are O(n²) time, O(n)
//! memory: about 5·10⁹ steps each at n = 10⁵.

use super::{normal, sen};

/// Which way a significant trend goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// |z| exceeds z_{1-α/2} and z > 0.
    Increasing,
    /// |z| exceeds z_{1-α/2} and z < 0.
    Decreasing,
    /// Not significant at α.
    NoTrend,
}

/// The result of a Mann–Kendall test.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MannKendall {
    /// Number of points.
    pub n: usize,
    /// Mann–Kendall score: Σ_{i<j} sign(x_j - x_i).
    pub s: i64,
    /// Var(S), tie-corrected, times [`Self::variance_factor`].
    pub var_s: f64,
    /// Hamed–Rao's n/n* (1 for the original test and wherever the correction is undefined).
    pub variance_factor: f64,
    /// (S ∓ 1)/sqrt(Var(S)), 0 when S = 0 or Var(S) is not positive.
    pub z: f64,
    /// Two-sided p-value 2·P(Z > |z|).
    pub p: f64,
    /// Direction at the α the test was run with.
    pub direction: Direction,
}

/// The Mann–Kendall score S. O(n²).
pub fn score(x: &[f64]) -> i64 {
    let mut s = 0i64;
    for (i, &xi) in x.iter().enumerate() {
        for &xj in &x[i + 1..] {
            s += i64::from(xj > xi) - i64::from(xj < xi);
        }
    }
    s
}

/// Var(S) = [n(n-1)(2n+5) - Σ t(t-1)(2t+5)]/18 over groups of t tied values.
pub fn variance(x: &[f64]) -> f64 {
    let mut sorted = x.to_vec();
    sorted.sort_by(f64::total_cmp);
    let term = |t: f64| t * (t - 1.0) * (2.0 * t + 5.0);
    let ties: f64 = sorted
        .chunk_by(|a, b| a == b)
        .map(|g| term(g.len() as f64))
        .sum();
    (term(x.len() as f64) - ties) / 18.0
}

/// The continuity-corrected z: (S-1)/σ for S > 0, (S+1)/σ for S < 0, 0 for S = 0. A
/// non-positive variance (which pymannkendall would turn into NaN) gives 0.
pub fn z_score(s: i64, var_s: f64) -> f64 {
    if s == 0 || var_s.is_nan() || var_s <= 0.0 {
        return 0.0;
    }
    let corrected = if s > 0 { s - 1 } else { s + 1 };
    corrected as f64 / var_s.sqrt()
}

fn finish(n: usize, s: i64, var_s: f64, variance_factor: f64, alpha: f64) -> MannKendall {
    let z = z_score(s, var_s);
    let p = normal::two_sided_p(z);
    let significant = z.abs() > normal::quantile(1.0 - alpha / 2.0);
    let direction = match (significant, z > 0.0) {
        (false, _) => Direction::NoTrend,
        (true, true) => Direction::Increasing,
        (true, false) => Direction::Decreasing,
    };
    MannKendall {
        n,
        s,
        var_s,
        variance_factor,
        z,
        p,
        direction,
    }
}

/// The original Mann–Kendall test at significance level `alpha`.
pub fn original_test(x: &[f64], alpha: f64) -> MannKendall {
    finish(x.len(), score(x), variance(x), 1.0, alpha)
}

/// The Hamed & Rao (1998) modified test at `alpha`, as pymannkendall does it: detrend with
/// Sen's slope (x_i - (i+1)·slope), rank the result (average ranks for ties), take the
/// autocorrelation of the ranks (the biased estimator: Σ y_t y_{t+k} / Σ y_t², y the
/// centred ranks) at lags 1..lag (all lags 1..n-1 when `lag` is `None`), keep only those
/// outside ±z_{1-α/2}/sqrt(n), and scale Var(S) by
/// n/n* = 1 + 2/(n(n-1)(n-2)) · Σ (n-k)(n-k-1)(n-k-2) ρ_k.
///
/// Where pymannkendall's arithmetic is undefined (n < 3, constant ranks) the factor is 1;
/// a non-positive corrected variance gives z = 0 and p = 1.
pub fn hamed_rao_test(x: &[f64], alpha: f64, lag: Option<usize>) -> MannKendall {
    let slope = sen::sens_slope(x).slope;
    hamed_rao_with_slope(x, alpha, lag, slope)
}

/// [`hamed_rao_test`] with the Sen slope of `x` already known.
pub fn hamed_rao_with_slope(x: &[f64], alpha: f64, lag: Option<usize>, slope: f64) -> MannKendall {
    let n = x.len();
    let s = score(x);
    let factor = hamed_rao_factor(x, alpha, lag, slope);
    finish(n, s, variance(x) * factor, factor, alpha)
}

/// Hamed–Rao's n/n* for `x` detrended by `slope`.
pub fn hamed_rao_factor(x: &[f64], alpha: f64, lag: Option<usize>, slope: f64) -> f64 {
    let n = x.len();
    if n < 3 {
        return 1.0;
    }
    let detrended: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| v - (i + 1) as f64 * slope)
        .collect();
    let ranks = average_ranks(&detrended);
    let max_lag = lag.map_or(n - 1, |l| l.min(n - 1));
    let acf = autocorrelation(&ranks, max_lag);
    if acf.is_empty() {
        return 1.0;
    }
    let bound = normal::quantile(1.0 - alpha / 2.0) / (n as f64).sqrt();
    let nf = n as f64;
    let mut sni = 0.0;
    for (k, &r) in acf.iter().enumerate().skip(1) {
        if r > bound || r < -bound {
            let m = nf - k as f64;
            sni += m * (m - 1.0) * (m - 2.0) * r;
        }
    }
    1.0 + 2.0 / (nf * (nf - 1.0) * (nf - 2.0)) * sni
}

/// Ranks 1..n, ties sharing the average of their ranks (scipy's `rankdata` default).
pub fn average_ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut ranks = vec![0.0; x.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && x[order[end]] == x[order[start]] {
            end += 1;
        }
        // 1-based ranks start+1 ..= end share their mean.
        let avg = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = avg;
        }
        start = end;
    }
    ranks
}

/// Autocorrelation at lags 0..=max_lag, pymannkendall's `__acf`: acov_k = Σ y_t y_{t+k}/n
/// with y the mean-centred series, divided by acov_0. Empty when acov_0 is 0.
pub fn autocorrelation(x: &[f64], max_lag: usize) -> Vec<f64> {
    let n = x.len();
    if n == 0 {
        return Vec::new();
    }
    let mean = x.iter().sum::<f64>() / n as f64;
    let y: Vec<f64> = x.iter().map(|v| v - mean).collect();
    let acov = |k: usize| -> f64 { y.iter().zip(&y[k..]).map(|(a, b)| a * b).sum() };
    let c0 = acov(0);
    if c0 == 0.0 || !c0.is_finite() {
        return Vec::new();
    }
    (0..=max_lag.min(n - 1)).map(|k| acov(k) / c0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degenerate_series() {
        for x in [&[][..], &[3.0][..], &[2.0; 40][..]] {
            let r = hamed_rao_test(x, 0.01, None);
            assert_eq!(
                (r.s, r.z, r.p, r.direction),
                (0, 0.0, 1.0, Direction::NoTrend)
            );
            assert_eq!(original_test(x, 0.01).var_s, 0.0);
        }
    }

    #[test]
    fn two_points() {
        let r = original_test(&[1.0, 2.0], 0.05);
        assert_eq!((r.s, r.var_s, r.z), (1, 1.0, 0.0));
        assert_eq!(hamed_rao_test(&[2.0, 1.0], 0.05, None).s, -1);
    }

    #[test]
    fn ranks_and_ties() {
        assert_eq!(
            average_ranks(&[3.0, 1.0, 3.0, 2.0]),
            vec![3.5, 1.0, 3.5, 2.0]
        );
        // Var(S) for n = 4 with one pair tied: (4·3·13 - 2·1·9)/18.
        assert_eq!(variance(&[3.0, 1.0, 3.0, 2.0]), (156.0 - 18.0) / 18.0);
    }

    #[test]
    fn strictly_increasing_is_significant() {
        let x: Vec<f64> = (0..30).map(f64::from).collect();
        let r = original_test(&x, 0.01);
        assert_eq!(r.s, 435);
        assert_eq!(r.direction, Direction::Increasing);
        assert!(r.p < 1e-9);
    }
}
