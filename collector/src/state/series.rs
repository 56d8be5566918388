//! A bounded series of points over time, thinned evenly as it grows: points are numbered in
//! arrival order and one is kept when its number is a multiple of the stride (1 at first);
//! when the series would grow past its limit the stride doubles and the points off it are
//! dropped. So a series spans the whole run with between half its limit and its limit
//! points, always with the first point, and always ending with the newest.

/// Most points a series keeps unless told otherwise.
pub const MAX_POINTS: usize = 1024;

/// See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Series<T> {
    /// Kept points with their numbers, oldest first; the last is the newest, on the stride
    /// or not.
    points: Vec<(u64, T)>,
    pushed: u64,
    stride: u64,
    limit: usize,
}

impl<T> Default for Series<T> {
    fn default() -> Self {
        Series::with_limit(MAX_POINTS)
    }
}

impl<T> Series<T> {
    /// An empty series of at most `limit` points (at least 2).
    pub fn with_limit(limit: usize) -> Self {
        Series {
            points: Vec::new(),
            pushed: 0,
            stride: 1,
            limit: limit.max(2),
        }
    }

    /// Adds the newest point.
    pub fn push(&mut self, point: T) {
        let n = self.pushed;
        self.pushed += 1;
        if let Some(&(last, _)) = self.points.last() {
            if last % self.stride != 0 {
                // Kept only while it was the newest.
                self.points.pop();
            }
        }
        self.points.push((n, point));
        while self.points.len() > self.limit {
            self.stride = self.stride.saturating_mul(2);
            let stride = self.stride;
            self.points.retain(|&(i, _)| i % stride == 0 || i == n);
        }
    }

    /// The kept points, oldest first, the newest last.
    pub fn points(&self) -> impl ExactSizeIterator<Item = &T> + DoubleEndedIterator {
        self.points.iter().map(|(_, p)| p)
    }

    /// The newest point.
    pub fn last(&self) -> Option<&T> {
        self.points.last().map(|(_, p)| p)
    }

    /// How many points were pushed (the series may have thinned them).
    pub fn pushed(&self) -> u64 {
        self.pushed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thins_evenly_and_keeps_first_and_newest() {
        let mut s = Series::with_limit(8);
        for i in 0..8u64 {
            s.push(i);
        }
        assert_eq!(
            s.points().copied().collect::<Vec<_>>(),
            (0..8).collect::<Vec<_>>()
        );
        s.push(8);
        assert_eq!(s.points().copied().collect::<Vec<_>>(), vec![0, 2, 4, 6, 8]);
        s.push(9);
        assert_eq!(
            s.points().copied().collect::<Vec<_>>(),
            vec![0, 2, 4, 6, 8, 9]
        );
        s.push(10);
        assert_eq!(
            s.points().copied().collect::<Vec<_>>(),
            vec![0, 2, 4, 6, 8, 10]
        );
        for i in 11..100u64 {
            s.push(i);
        }
        let kept: Vec<u64> = s.points().copied().collect();
        assert!(kept.len() <= 8 && kept.len() >= 4, "{kept:?}");
        assert_eq!(kept[0], 0);
        assert_eq!(*kept.last().unwrap(), 99);
        assert_eq!(s.last(), Some(&99));
        assert_eq!(s.pushed(), 100);
        let gaps: Vec<u64> = kept.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps[..gaps.len() - 1].windows(2).all(|g| g[0] == g[1]),
            "{kept:?}"
        );
    }
}
