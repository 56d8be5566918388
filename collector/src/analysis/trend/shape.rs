//! The shape of a growing memory series: [`Shape::Drift`] (steady growth spread over many
//! intervals, such as a small leak per request), [`Shape::Steps`] (growth in a few discrete
//! jumps with plateaus between them, such as an arena or a large buffer that appears at once
//! and stays, or a cache growing by whole segments) or [`Shape::Flat`] (no significant
//! growth). This module owns only the shape; whether a series grows is the trend test's call
//! (see the parent module), and [`classify`] takes its verdict as `growing`.
//!
//! # The rule
//!
//! For a series `x` of n points (oldest first) and its first differences `d_i = x[i+1] - x[i]`
//! (m = n - 1 of them):
//!
//! 1. **Rise.** `R` = median of the last `w` points − median of the first `w` points, where
//!    `w = max(3, ⌊n/10⌋)` ([`END_WINDOW_SHARE`], [`MIN_END_WINDOW`]).
//! 2. **Noise.** `σ = 1.4826 · MAD(d)`, the median absolute deviation of the differences
//!    from their median, scaled to a standard deviation for Gaussian noise. Churn of a site
//!    that also frees makes the differences noisy of either sign; the median ignores the few
//!    jumps themselves.
//! 3. **Jumps.** A difference is a jump when `|d_i| > t` with
//!    `t = max(`[`NOISE_MULTIPLE`]`·σ, `[`RISE_SHARE`]`·R)` = `max(4σ, 0.05·R)`: it stands
//!    clear of the noise *and* carries a meaningful part of the rise. Large drops count
//!    too (as negative jumps), so that a transient spike (a big buffer allocated and freed
//!    shortly after) cancels out instead of posing as a step.
//! 4. **Steps** when the net sum of the jumps is at least [`STEP_COVERAGE`] (70 %) of `R`
//!    and there are few of them: at most `max(3, ⌈m/10⌉)` ([`MAX_JUMPS_MIN`],
//!    [`MAX_JUMPS_SHARE`]). Otherwise **Drift**.
//!
//! So a staircase of a few large jumps over noisy plateaus is Steps (even with a slight
//! drift underneath, as long as the jumps carry 70 % of the rise), while a noisy ramp, a
//! ramp that grows by many small equal increments, or a ramp with one jump carrying less
//! than 70 % of the rise is Drift.
//!
//! Degenerate input is Drift when `growing` is true: fewer than [`MIN_POINTS`] points, a
//! non-finite value (NaN, ±∞, or an overflow along the way), or no positive rise `R`
//! (a constant series, or growth hidden in the end windows). Without `growing` the answer
//! is always [`Shape::Flat`]. Cost: O(n) expected (medians by selection), no panics.

use super::sen::median_in_place;

/// Fewer points than this cannot show plateaus; such a series is [`Shape::Drift`].
pub const MIN_POINTS: usize = 6;
/// The end windows hold this share of the points (rounded down)…
pub const END_WINDOW_SHARE: f64 = 0.10;
/// …and at least this many.
pub const MIN_END_WINDOW: usize = 3;
/// A jump exceeds this many noise standard deviations (σ = 1.4826 · MAD of the differences).
pub const NOISE_MULTIPLE: f64 = 4.0;
/// A jump exceeds this share of the rise.
pub const RISE_SHARE: f64 = 0.05;
/// Steps need the jumps to carry at least this share of the rise.
pub const STEP_COVERAGE: f64 = 0.70;
/// Steps allow at least this many jumps…
pub const MAX_JUMPS_MIN: usize = 3;
/// …or this share of the intervals (rounded up), whichever is more.
pub const MAX_JUMPS_SHARE: f64 = 0.10;

/// Scales a median absolute deviation to a standard deviation for Gaussian noise.
const MAD_TO_SIGMA: f64 = 1.4826;

/// How a series changes over time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// Steady growth spread over many intervals (a small leak per request), even if noisy.
    Drift,
    /// Growth in a few discrete jumps with plateaus between them (an arena or a large
    /// buffer appearing at once and staying; a cache growing by whole segments).
    Steps,
    /// No significant growth (the trend test did not find any).
    Flat,
}

/// The measurements behind the Steps/Drift decision (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepProfile {
    /// `R`: robust end level − robust start level (medians of the end windows).
    pub rise: f64,
    /// `σ`: 1.4826 · median absolute deviation of the first differences.
    pub noise: f64,
    /// `t`: the absolute difference a jump must exceed, `max(4σ, 0.05·R)`.
    pub threshold: f64,
    /// Number of jumps, up or down.
    pub jumps: usize,
    /// Net sum of the jumps (up-jumps minus drops).
    pub jump_rise: f64,
    /// Most jumps that still count as "few": `max(3, ⌈m/10⌉)` for m differences.
    pub max_jumps: usize,
}

impl StepProfile {
    /// Share of the rise carried by the jumps, `jump_rise / rise` (can exceed 1 or be
    /// negative; `rise` is always positive here).
    pub fn share(&self) -> f64 {
        self.jump_rise / self.rise
    }

    /// The Steps verdict: the jumps carry at least 70 % of the rise and are few.
    pub fn is_steps(&self) -> bool {
        self.share() >= STEP_COVERAGE && self.jumps <= self.max_jumps
    }
}

/// The step measurements of `x`, or `None` for a degenerate series: fewer than
/// [`MIN_POINTS`] points, a non-finite value or intermediate, or no positive rise.
pub fn step_profile(x: &[f64]) -> Option<StepProfile> {
    let n = x.len();
    if n < MIN_POINTS || x.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let w = ((n as f64 * END_WINDOW_SHARE) as usize).max(MIN_END_WINDOW);
    let start = median_in_place(&mut x[..w].to_vec())?;
    let end = median_in_place(&mut x[n - w..].to_vec())?;
    let rise = end - start;
    if !rise.is_finite() || rise <= 0.0 {
        return None;
    }

    let d: Vec<f64> = x.windows(2).map(|p| p[1] - p[0]).collect();
    if d.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let centre = median_in_place(&mut d.clone())?;
    let mut dev: Vec<f64> = d.iter().map(|v| (v - centre).abs()).collect();
    let noise = MAD_TO_SIGMA * median_in_place(&mut dev)?;
    let threshold = (NOISE_MULTIPLE * noise).max(RISE_SHARE * rise);
    if !threshold.is_finite() {
        return None;
    }

    let mut jumps = 0;
    let mut jump_rise = 0.0;
    for &v in d.iter().filter(|v| v.abs() > threshold) {
        jumps += 1;
        jump_rise += v;
    }
    if !jump_rise.is_finite() {
        return None;
    }
    let max_jumps = ((d.len() as f64 * MAX_JUMPS_SHARE).ceil() as usize).max(MAX_JUMPS_MIN);
    Some(StepProfile {
        rise,
        noise,
        threshold,
        jumps,
        jump_rise,
        max_jumps,
    })
}

/// Share of the rise carried by jumps ([`StepProfile::share`]); 0 for a degenerate series.
pub fn step_share(x: &[f64]) -> f64 {
    step_profile(x).map_or(0.0, |p| p.share())
}

/// The shape of `x` given the trend test's verdict `growing`: [`Shape::Flat`] when not
/// growing, otherwise [`Shape::Steps`] or [`Shape::Drift`] by the rule of the module
/// documentation. Degenerate series (too short, constant, non-finite) are Drift.
pub fn classify(x: &[f64], growing: bool) -> Shape {
    if !growing {
        return Shape::Flat;
    }
    match step_profile(x) {
        Some(p) if p.is_steps() => Shape::Steps,
        _ => Shape::Drift,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = 1024.0 * 1024.0;
    const KIB: f64 = 1024.0;

    /// xorshift64*: small deterministic generator for the tests.
    struct Rng(u64);

    impl Rng {
        fn new(seed: u64) -> Self {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }
        fn next_u64(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        /// Uniform in [0, 1).
        fn unit(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }
        /// Uniform in [-a, a).
        fn sym(&mut self, a: f64) -> f64 {
            (2.0 * self.unit() - 1.0) * a
        }
        /// Uniform in [lo, hi).
        fn range(&mut self, lo: usize, hi: usize) -> usize {
            lo + (self.next_u64() % (hi - lo) as u64) as usize
        }
    }

    /// `k` distinct jump positions in `[lo, hi)`, sorted.
    fn positions(rng: &mut Rng, k: usize, lo: usize, hi: usize) -> Vec<usize> {
        let mut p: Vec<usize> = Vec::new();
        while p.len() < k {
            let i = rng.range(lo, hi);
            if !p.contains(&i) {
                p.push(i);
            }
        }
        p.sort_unstable();
        p
    }

    /// A plateau series at base 10 MiB with `jump` added at each of `at` (a jump at
    /// position i lifts x[i..]), a linear drift of `slope` per point, and ±`noise`.
    fn staircase(
        rng: &mut Rng,
        n: usize,
        at: &[usize],
        jump: f64,
        slope: f64,
        noise: f64,
    ) -> Vec<f64> {
        (0..n)
            .map(|i| {
                let steps = at.iter().filter(|&&p| p <= i).count() as f64;
                10.0 * MIB + steps * jump + slope * i as f64 + rng.sym(noise)
            })
            .collect()
    }

    fn ramp(rng: &mut Rng, n: usize, slope: f64, noise: f64) -> Vec<f64> {
        (0..n)
            .map(|i| 10.0 * MIB + slope * i as f64 + rng.sym(noise))
            .collect()
    }

    #[test]
    fn noisy_linear_ramp_is_drift() {
        for &n in &[100, 500, 2000] {
            for seed in 1..=50 {
                let mut rng = Rng::new(seed);
                let x = ramp(&mut rng, n, 100.0, 1000.0);
                let p = step_profile(&x).expect("ramp has a rise");
                assert!(p.share() < STEP_COVERAGE, "n={n} seed={seed}: {p:?}");
                assert_eq!(classify(&x, true), Shape::Drift, "n={n} seed={seed}: {p:?}");
            }
        }
    }

    #[test]
    fn noiseless_linear_ramp_is_drift() {
        let x: Vec<f64> = (0..200).map(|i| 64.0 * i as f64).collect();
        let p = step_profile(&x).unwrap();
        assert_eq!(p.jumps, 0);
        assert_eq!(classify(&x, true), Shape::Drift);
    }

    #[test]
    fn staircase_three_jumps_is_steps() {
        for &n in &[100, 400, 2000] {
            for seed in 1..=50 {
                let mut rng = Rng::new(seed);
                let at = positions(&mut rng, 3, n / 10 + 1, n - n / 10);
                let x = staircase(&mut rng, n, &at, MIB, 0.0, 4.0 * KIB);
                let p = step_profile(&x).expect("staircase has a rise");
                assert_eq!(p.jumps, 3, "n={n} seed={seed} at={at:?}: {p:?}");
                assert!((p.share() - 1.0).abs() < 0.05, "{p:?}");
                assert_eq!(classify(&x, true), Shape::Steps, "n={n} seed={seed}");
            }
        }
    }

    #[test]
    fn staircase_one_jump_is_steps() {
        for &n in &[20, 100, 1000] {
            for seed in 1..=50 {
                let mut rng = Rng::new(seed);
                let at = positions(&mut rng, 1, n / 10 + 1, n - n / 10);
                let x = staircase(&mut rng, n, &at, MIB, 0.0, 4.0 * KIB);
                let p = step_profile(&x).expect("staircase has a rise");
                assert_eq!(p.jumps, 1, "n={n} seed={seed} at={at:?}: {p:?}");
                assert_eq!(classify(&x, true), Shape::Steps, "n={n} seed={seed}");
            }
        }
    }

    #[test]
    fn staircase_jumps_near_the_ends_is_steps() {
        // Jumps inside the end windows make the robust rise smaller than the jumps' sum,
        // which only raises the share.
        let mut rng = Rng::new(7);
        let x = staircase(&mut rng, 100, &[2, 50, 97], MIB, 0.0, 4.0 * KIB);
        let p = step_profile(&x).unwrap();
        assert!(p.share() > 1.0, "{p:?}");
        assert_eq!(classify(&x, true), Shape::Steps);
    }

    #[test]
    fn staircase_eight_jumps_over_400_is_steps() {
        for seed in 1..=50 {
            let mut rng = Rng::new(seed);
            let at = positions(&mut rng, 8, 41, 360);
            let x = staircase(&mut rng, 400, &at, MIB, 0.0, 4.0 * KIB);
            let p = step_profile(&x).expect("staircase has a rise");
            assert_eq!(p.jumps, 8, "seed={seed} at={at:?}: {p:?}");
            assert_eq!(classify(&x, true), Shape::Steps, "seed={seed}");
        }
    }

    #[test]
    fn many_small_equal_jumps_is_drift() {
        // A 64-byte leak every other sample, with and without churn noise.
        for &n in &[20, 100, 500, 2000] {
            for &noise in &[0.0, 16.0] {
                let mut rng = Rng::new(n as u64);
                let x: Vec<f64> = (0..n)
                    .map(|i| 1.0 * MIB + 64.0 * (i / 2) as f64 + rng.sym(noise))
                    .collect();
                let p = step_profile(&x).expect("ramp has a rise");
                assert!(
                    p.jumps > p.max_jumps || p.share() < STEP_COVERAGE,
                    "n={n} noise={noise}: {p:?}"
                );
                assert_eq!(
                    classify(&x, true),
                    Shape::Drift,
                    "n={n} noise={noise}: {p:?}"
                );
            }
        }
    }

    #[test]
    fn ramp_with_one_jump_of_30_percent_is_drift() {
        // Noise ±5× and ±10× the per-step increase; at ±5× the jump always stands clear of
        // the noise (and is found), at ±10× it may drown in it for short series.
        for &noise in &[500.0, 1000.0] {
            for &n in &[100, 500, 2000] {
                for seed in 1..=50 {
                    let mut rng = Rng::new(seed);
                    let slope = 100.0;
                    // The linear part rises 0.7 of the total, the jump 0.3.
                    let jump = slope * n as f64 * 0.3 / 0.7;
                    let at = positions(&mut rng, 1, n / 10 + 1, n - n / 10);
                    let x = staircase(&mut rng, n, &at, jump, slope, noise);
                    let p = step_profile(&x).expect("ramp has a rise");
                    let ctx = format!("noise={noise} n={n} seed={seed}: {p:?}");
                    if noise == 500.0 {
                        assert_eq!(p.jumps, 1, "{ctx}");
                        assert!(p.share() > 0.2 && p.share() < 0.5, "{ctx}");
                    } else {
                        assert!(p.jumps <= 1 && p.share() < 0.5, "{ctx}");
                    }
                    assert_eq!(classify(&x, true), Shape::Drift, "{ctx}");
                }
            }
        }
    }

    #[test]
    fn steps_on_slight_drift_is_steps() {
        for &n in &[100, 400, 2000] {
            for seed in 1..=50 {
                let mut rng = Rng::new(seed);
                // Four 1 MiB steps are 90 % of the rise; the drift adds the other 10 %.
                let slope = 4.0 * MIB / 9.0 / n as f64;
                let at = positions(&mut rng, 4, n / 10 + 1, n - n / 10);
                let x = staircase(&mut rng, n, &at, MIB, slope, 4.0 * KIB);
                let p = step_profile(&x).expect("staircase has a rise");
                assert_eq!(p.jumps, 4, "n={n} seed={seed}: {p:?}");
                assert_eq!(classify(&x, true), Shape::Steps, "n={n} seed={seed}: {p:?}");
            }
        }
    }

    #[test]
    fn transient_spikes_on_a_ramp_are_drift() {
        // A 1 MiB buffer allocated and freed on the next sample, now and then, on a ramp.
        for seed in 1..=50 {
            let mut rng = Rng::new(seed);
            let mut x = ramp(&mut rng, 500, 100.0, 1000.0);
            for &i in &positions(&mut rng, 3, 10, 490) {
                x[i] += MIB;
            }
            let p = step_profile(&x).unwrap();
            assert!(p.jumps >= 2, "seed={seed}: {p:?}");
            assert!(p.share() < STEP_COVERAGE, "seed={seed}: {p:?}");
            assert_eq!(classify(&x, true), Shape::Drift, "seed={seed}");
        }
    }

    #[test]
    fn not_growing_is_flat() {
        let mut rng = Rng::new(3);
        let stairs = staircase(&mut rng, 100, &[30, 60], MIB, 0.0, 4.0 * KIB);
        let drift = ramp(&mut rng, 100, 100.0, 1000.0);
        for x in [
            &stairs[..],
            &drift[..],
            &[][..],
            &[1.0][..],
            &[f64::NAN, 1.0, f64::INFINITY][..],
        ] {
            assert_eq!(classify(x, false), Shape::Flat);
        }
        // The same data with `growing` is not Flat, so the flag decides.
        assert_eq!(classify(&stairs, true), Shape::Steps);
        assert_eq!(classify(&drift, true), Shape::Drift);
    }

    #[test]
    fn degenerate_series_are_drift() {
        let cases: [&[f64]; 6] = [
            &[],
            &[5.0],
            &[1.0, 2.0],
            &[1.0, 2.0, 3.0, 1000.0, 1000.0],
            &[7.0; 100],
            // Decreasing: no positive rise.
            &[9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0],
        ];
        for x in cases {
            assert_eq!(step_profile(x), None, "{x:?}");
            assert_eq!(step_share(x), 0.0);
            assert_eq!(classify(x, true), Shape::Drift, "{x:?}");
        }
    }

    #[test]
    fn non_finite_values_are_drift() {
        let mut rng = Rng::new(11);
        let stairs = staircase(&mut rng, 100, &[30, 60], MIB, 0.0, 4.0 * KIB);
        assert_eq!(classify(&stairs, true), Shape::Steps);
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            for &i in &[0, 50, 99] {
                let mut x = stairs.clone();
                x[i] = bad;
                assert_eq!(step_profile(&x), None);
                assert_eq!(classify(&x, true), Shape::Drift);
                assert_eq!(classify(&x, false), Shape::Flat);
            }
        }
        // Finite values whose differences overflow.
        let huge = [
            -f64::MAX,
            f64::MAX,
            -f64::MAX,
            f64::MAX,
            -f64::MAX,
            f64::MAX,
            f64::MAX,
        ];
        assert_eq!(step_profile(&huge), None);
        assert_eq!(classify(&huge, true), Shape::Drift);
    }

    #[test]
    fn serializes_lowercase() {
        assert_eq!(serde_json::to_string(&Shape::Drift).unwrap(), "\"drift\"");
        assert_eq!(serde_json::to_string(&Shape::Steps).unwrap(), "\"steps\"");
        assert_eq!(serde_json::to_string(&Shape::Flat).unwrap(), "\"flat\"");
    }
}
