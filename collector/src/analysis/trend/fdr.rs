//! Benjamini–Hochberg false-discovery-rate control: which of a family of hypotheses the
//! step-up procedure rejects at level `q`.

/// Which hypotheses Benjamini–Hochberg rejects at FDR level `q`, in the order of `p`.
///
/// With the p-values sorted ascending as p(1) <= … <= p(m), the largest k with
/// p(k) <= k·q/m is found and the k smallest are rejected (tied p-values share a fate:
/// if one of a tie qualifies, all do). Empty input gives an empty answer; NaN p-values are
/// never rejected.
pub fn benjamini_hochberg(p: &[f64], q: f64) -> Vec<bool> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).filter(|&i| !p[i].is_nan()).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut last = 0;
    for (rank, &i) in order.iter().enumerate() {
        let k = rank + 1;
        if p[i] <= k as f64 * q / m as f64 {
            last = k;
        }
    }
    let mut rejected = vec![false; m];
    for &i in &order[..last] {
        rejected[i] = true;
    }
    rejected
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_cases() {
        assert!(benjamini_hochberg(&[], 0.1).is_empty());
        assert_eq!(benjamini_hochberg(&[0.05], 0.1), vec![true]);
        assert_eq!(benjamini_hochberg(&[0.2], 0.1), vec![false]);
        // Ties: both 0.1 at m=2, q=0.1: p(2)=0.1 <= 2·0.1/2, so both are rejected.
        assert_eq!(benjamini_hochberg(&[0.1, 0.1], 0.1), vec![true, true]);
        assert_eq!(benjamini_hochberg(&[f64::NAN, 0.0], 0.1), vec![false, true]);
    }

    #[test]
    fn step_up_rejects_below_a_larger_qualifying_rank() {
        // p(1)=0.04 > 0.1/3·1 but p(2)=0.05 <= 0.1·2/3: step-up rejects both.
        assert_eq!(
            benjamini_hochberg(&[0.5, 0.05, 0.04], 0.1),
            vec![false, true, true]
        );
    }
}
