//! Trend statistics for memory series (groundwork for issue 5, not yet wired into reports):
//! a [`Trend`] verdict per series from the Hamed–Rao modified Mann–Kendall test, the
//! Theil–Sen slope with its confidence interval, and Benjamini–Hochberg FDR control across
//! all series of a run.
//!
//! A growth is `significant` only when the Mann–Kendall p-value is below α, the slope's
//! (1 - α) interval excludes zero, and Benjamini–Hochberg rejects at level q.
//!
//! - [`mann_kendall`]: S, Var(S), z, p and the Hamed–Rao correction.
//! - [`sen`]: the Theil–Sen slope, intercept and confidence interval.
//! - [`fdr`]: Benjamini–Hochberg FDR control across series.
//! - [`normal`]: the standard normal distribution (erfc, p-values, quantiles).

pub mod fdr;
pub mod mann_kendall;
pub mod normal;
#[cfg(test)]
mod reference_tests;
pub mod sen;
pub mod shape;

use mann_kendall::MannKendall;
use sen::{CiRule, PairwiseSlopes};

/// Levels of the significance rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrendOptions {
    /// Level of the Mann–Kendall test and of the slope interval (1 - α confidence).
    pub alpha: f64,
    /// False-discovery rate across all series.
    pub q: f64,
}

impl Default for TrendOptions {
    fn default() -> Self {
        TrendOptions {
            alpha: 0.01,
            q: 0.10,
        }
    }
}

/// The statistics of one series, before FDR control.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SeriesStats {
    /// Hamed–Rao modified Mann–Kendall test.
    pub test: MannKendall,
    /// Theil–Sen slope per unit of index.
    pub slope: f64,
    /// Lower end of the slope's (1 - α) interval.
    pub ci_low: f64,
    /// Upper end of the slope's (1 - α) interval.
    pub ci_high: f64,
}

/// The verdict on one series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Trend {
    /// Theil–Sen slope per unit of index.
    pub slope_per_unit: f64,
    /// Lower end of the slope's (1 - α) interval.
    pub ci_low: f64,
    /// Upper end of the slope's (1 - α) interval.
    pub ci_high: f64,
    /// Hamed–Rao modified Mann–Kendall two-sided p-value.
    pub p_value: f64,
    /// p < α, the interval excludes zero, and Benjamini–Hochberg rejects.
    pub significant: bool,
}

/// The statistics of one series at level `alpha`. Where the Hamed–Rao factor comes out
/// non-positive (its autocorrelation estimate broke down), the uncorrected Mann–Kendall
/// variance is used instead.
///
/// The slope interval uses the Hamed–Rao corrected Var(S) (the tie-corrected variance times
/// n/n*), so autocorrelation widens it as it weakens the test; ends are interpolated
/// ([`CiRule::Interpolated`]). For thinned long series (see [`sen`]) the variance is that
/// of the thinned points times the full series' n/n*.
pub fn series_stats(x: &[f64], alpha: f64) -> SeriesStats {
    let mut slopes = PairwiseSlopes::new(x);
    let slope = slopes.median();
    let mut test = mann_kendall::hamed_rao_with_slope(x, alpha, None, slope);
    if test.variance_factor <= 0.0 && test.s != 0 {
        // The autocorrelation estimate broke down (a staircase detrended by its own slope
        // is a sawtooth whose significant lags sum to n/n* <= 0, which pymannkendall turns
        // into NaN and would report as p = 1 for a plain growth): the test falls back to
        // the uncorrected variance.
        test = mann_kendall::original_test(x, alpha);
    }
    let ci_var = if slopes.points().len() == x.len() {
        test.var_s
    } else {
        mann_kendall::variance(slopes.points()) * test.variance_factor
    };
    let (ci_low, ci_high) = slopes
        .interval(ci_var, alpha, CiRule::Interpolated)
        .unwrap_or((0.0, 0.0));
    SeriesStats {
        test,
        slope,
        ci_low,
        ci_high,
    }
}

/// Verdicts for all series of a run, Benjamini–Hochberg applied across them.
pub fn trends<S: AsRef<[f64]>>(series: &[S], opts: TrendOptions) -> Vec<Trend> {
    let stats: Vec<SeriesStats> = series
        .iter()
        .map(|s| series_stats(s.as_ref(), opts.alpha))
        .collect();
    decide(&stats, opts)
}

/// Applies the significance rule to already computed statistics.
pub fn decide(stats: &[SeriesStats], opts: TrendOptions) -> Vec<Trend> {
    let p: Vec<f64> = stats.iter().map(|s| s.test.p).collect();
    let rejected = fdr::benjamini_hochberg(&p, opts.q);
    stats
        .iter()
        .zip(rejected)
        .map(|(s, bh)| Trend {
            slope_per_unit: s.slope,
            ci_low: s.ci_low,
            ci_high: s.ci_high,
            p_value: s.test.p,
            significant: s.test.p < opts.alpha && (s.ci_low > 0.0 || s.ci_high < 0.0) && bh,
        })
        .collect()
}

/// A `u64` series (byte counts) as `f64`s; exact below 2^53.
pub fn to_f64(x: &[u64]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_cases_are_not_significant() {
        let series: Vec<Vec<f64>> = vec![vec![], vec![1.0], vec![1.0, 2.0], vec![4.0; 100]];
        for t in trends(&series, TrendOptions::default()) {
            assert!(!t.significant);
            assert!(t.p_value >= 0.0 && t.p_value <= 1.0);
        }
        assert!(trends::<Vec<f64>>(&[], TrendOptions::default()).is_empty());
    }

    #[test]
    fn steady_growth_is_significant() {
        let grow = to_f64(
            &(0..200u64)
                .map(|i| 1000 + 64 * i + (i * 7919) % 50)
                .collect::<Vec<_>>(),
        );
        let flat: Vec<f64> = (0..200u32).map(|i| f64::from((i * 7919) % 50)).collect();
        let t = trends(&[grow, flat], TrendOptions::default());
        assert!(t[0].significant && t[0].ci_low > 0.0 && t[0].ci_low <= t[0].slope_per_unit);
        assert!((t[0].slope_per_unit - 64.0).abs() < 1.0);
        assert!(!t[1].significant);
    }

    #[test]
    fn a_long_staircase_is_not_lost_to_a_broken_correction() {
        // The step site of bench/aging_detect.py after 40 minutes: 1 MiB every 18 values
        // (3 minutes at 10 s), 234 values. Detrended by its own slope it is a sawtooth
        // whose significant lags drive Hamed-Rao's n/n* below zero (pymannkendall: Var(S)
        // -303000, z and p NaN).
        let x: Vec<f64> = (0..234u32)
            .map(|i| f64::from((i + 6) / 18) * 1_048_576.0)
            .collect();
        let factor = mann_kendall::hamed_rao_factor(&x, 0.01, None, sen::sens_slope(&x).slope);
        assert!(factor < 0.0, "{factor}");
        let s = series_stats(&x, 0.01);
        assert_eq!(s.test.variance_factor, 1.0);
        assert!(s.test.p < 1e-6, "{s:?} (factor {factor})");
        assert!(s.ci_low > 0.0, "{s:?}");
    }
}
