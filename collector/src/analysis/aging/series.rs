//! Preparing series for the trend tests: the values of a state series on its process's
//! grid, the warm-up cut, sums of series, window medians (the black-box method) and series
//! of different processes brought onto one grid (the whole run's sum).

use crate::state::{BucketSeries, Grid};

/// A series ready to test: evenly spaced values, oldest first, after the warm-up.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Prepared {
    pub values: Vec<f64>,
    /// Nanoseconds between the starts of consecutive values.
    pub step_ns: u64,
    /// Start of the first value, on the monotonic clock (nanoseconds).
    pub start_ns: u64,
}

impl Prepared {
    /// The series from its first non-zero value on (empty if it has none).
    pub fn from_first_nonzero(self) -> Prepared {
        let skip = self
            .values
            .iter()
            .position(|&v| v != 0.0)
            .unwrap_or(self.values.len());
        Prepared {
            start_ns: self
                .start_ns
                .saturating_add(self.step_ns.saturating_mul(skip as u64)),
            values: self.values[skip..].to_vec(),
            step_ns: self.step_ns,
        }
    }
}

/// A site's series on its process's grid: its outstanding bytes, and its outlived bytes
/// where it has them (the state's `outlived.rs`: bytes of blocks far older than any block
/// the site freed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SiteHistory {
    pub outstanding: OnGrid,
    pub outlived: Option<OnGrid>,
}

impl SiteHistory {
    /// Adds `other` (a part of the same merged site, same grid).
    pub fn add(&mut self, other: &SiteHistory) {
        self.outstanding.add(&other.outstanding);
        if let Some(o) = &other.outlived {
            self.outlived.get_or_insert_with(OnGrid::default).add(o);
        }
    }
}

/// Bucket values of one grid, from its first bucket (`start` at the grid's level).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OnGrid {
    pub start: u64,
    pub values: Vec<u64>,
}

impl OnGrid {
    /// The values of `series`.
    pub fn of(series: &BucketSeries) -> Self {
        OnGrid {
            start: series.start(),
            values: series.values(),
        }
    }

    /// Adds `other` (same grid) bucket by bucket; a series is 0 outside its buckets.
    pub fn add(&mut self, other: &OnGrid) {
        if other.values.is_empty() {
            return;
        }
        if self.values.is_empty() {
            *self = other.clone();
            return;
        }
        let start = self.start.min(other.start);
        let end =
            (self.start + self.values.len() as u64).max(other.start + other.values.len() as u64);
        let mut out = vec![0u64; (end - start) as usize];
        for part in [&*self, other] {
            let offset = (part.start - start) as usize;
            for (slot, v) in out[offset..].iter_mut().zip(&part.values) {
                *slot = slot.saturating_add(*v);
            }
        }
        *self = OnGrid { start, values: out };
    }

    /// The values from the first bucket that starts at or after `from_ns` on the monotonic
    /// clock (the end of the warm-up), as a [`Prepared`] series.
    pub fn after(&self, grid: &Grid, from_ns: u64) -> Prepared {
        let step_ns = grid.bucket_ns();
        let first_ns = |i: usize| {
            let bucket = self.start + i as u64;
            let tick = (bucket << grid.level).max(grid.first_tick.unwrap_or(0));
            tick.saturating_mul(grid.interval_ns)
        };
        let skip = (0..self.values.len())
            .find(|&i| first_ns(i) >= from_ns)
            .unwrap_or(self.values.len());
        Prepared {
            values: self.values[skip..].iter().map(|&v| v as f64).collect(),
            step_ns,
            start_ns: if skip < self.values.len() {
                first_ns(skip)
            } else {
                0
            },
        }
    }

    /// The same values at a coarser `to_level` (from `level`): each new bucket is the mean
    /// of the old ones it covers.
    pub fn coarser(&self, level: u32, to_level: u32) -> OnGrid {
        if to_level <= level || self.values.is_empty() {
            return self.clone();
        }
        let shift = to_level - level;
        let start = self.start >> shift;
        let mut sums: Vec<(u128, u64)> = Vec::new();
        for (i, &v) in self.values.iter().enumerate() {
            let b = ((self.start + i as u64) >> shift) - start;
            let b = b as usize;
            if sums.len() <= b {
                sums.resize(b + 1, (0, 0));
            }
            sums[b].0 += u128::from(v);
            sums[b].1 += 1;
        }
        OnGrid {
            start,
            values: sums
                .into_iter()
                .map(|(s, n)| {
                    if n == 0 {
                        0
                    } else {
                        (s / u128::from(n)) as u64
                    }
                })
                .collect(),
        }
    }
}

/// Medians of consecutive windows of `per_window` values (the last, partial window
/// included when it has at least half of them).
pub fn window_medians(values: &[f64], per_window: usize) -> Vec<f64> {
    let per_window = per_window.max(1);
    values
        .chunks(per_window)
        .filter(|w| w.len() * 2 >= per_window)
        .map(|w| median(&mut w.to_vec()))
        .collect()
}

/// The median of `values` (sorted in place); 0 for none.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[mid],
        _ => (values[mid - 1] + values[mid]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_zeros_are_cut_and_the_start_moves_with_them() {
        let p = Prepared {
            values: vec![0.0, 0.0, 3.0, 0.0, 5.0],
            step_ns: 10,
            start_ns: 100,
        };
        let cut = p.from_first_nonzero();
        assert_eq!(cut.values, vec![3.0, 0.0, 5.0]);
        assert_eq!((cut.start_ns, cut.step_ns), (120, 10));
        let none = Prepared {
            values: vec![0.0; 4],
            step_ns: 10,
            start_ns: 0,
        };
        assert!(none.from_first_nonzero().values.is_empty());
    }

    fn grid(level: u32, first_tick: u64) -> Grid {
        Grid {
            interval_ns: 10,
            level,
            start_bucket: first_tick >> level,
            first_tick: Some(first_tick),
            ticks: 0,
        }
    }

    #[test]
    fn sums_align_on_bucket_indices() {
        let mut a = OnGrid {
            start: 2,
            values: vec![1, 2, 3],
        };
        a.add(&OnGrid {
            start: 3,
            values: vec![10, 10, 10],
        });
        assert_eq!(a.start, 2);
        assert_eq!(a.values, vec![1, 12, 13, 10]);
        a.add(&OnGrid::default());
        assert_eq!(a.values.len(), 4);
    }

    #[test]
    fn the_warm_up_cuts_whole_buckets() {
        let g = grid(1, 3); // buckets of 2 ticks of 10 ns; first tick 3
        let s = OnGrid {
            start: 1,
            values: vec![5, 6, 7, 8],
        };
        // Bucket 1 starts at tick 3 (30 ns), bucket 2 at 40 ns: the first at or after 35.
        let p = s.after(&g, 35);
        assert_eq!(p.values, vec![6.0, 7.0, 8.0]);
        assert_eq!(p.start_ns, 40);
        assert_eq!(p.step_ns, 20);
        assert!(s.after(&g, 1_000).values.is_empty());
        assert_eq!(s.after(&g, 0).values.len(), 4);
    }

    #[test]
    fn coarser_means_cover_aligned_pairs() {
        let s = OnGrid {
            start: 3,
            values: vec![1, 3, 5, 7],
        };
        let c = s.coarser(0, 1);
        // Buckets 3 | 4,5 | 6 at level 0 become 1 | 2 | 3 at level 1.
        assert_eq!(c.start, 1);
        assert_eq!(c.values, vec![1, 4, 7]);
        assert_eq!(s.coarser(1, 1), s);
    }

    #[test]
    fn medians_per_window() {
        let v = [5.0, 1.0, 3.0, 100.0, 2.0, 4.0, 9.0];
        assert_eq!(window_medians(&v, 3), vec![3.0, 4.0]);
        assert_eq!(window_medians(&v, 2), vec![3.0, 51.5, 3.0, 9.0]);
        assert!(window_medians(&[], 6).is_empty());
    }
}
