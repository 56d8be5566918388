//! Outstanding bytes over time, per call site: the series the aging analysis tests for
//! growth. Owns the tick grid of a process and the compacted series of its sites.
//!
//! Time is cut into ticks of the run's interval (`--interval`, default 10 s), counted on the
//! monotonic clock from 0, so the ticks of every process of a run line up. When the first
//! record stamped at or after a tick is applied, every site's outstanding bytes are taken as
//! its value at that tick (the state before that record; ticks the process skipped while
//! idle get the same values, since nothing changed).
//!
//! Bounded for long runs: ticks are grouped into buckets of 2^level ticks, aligned on the
//! tick count from 0, and a series keeps one value per bucket (the mean of its ticks). When
//! a process's span would exceed [`SeriesLimits::buckets`] buckets, the level goes up by one
//! and every series merges its buckets pairwise. Runs of equal values are stored once, so a
//! site that stopped changing (most start-up allocations) costs a few bytes however long
//! the run. Every site's series starts at the process's first tick (a site is worth 0
//! bytes before its first allocation), so series of one process can be summed bucket by
//! bucket.
//!
//! Sites that free whole blocks, and PyTorch block stacks that free, also get a series of
//! their outlived bytes (`outlived.rs`), sampled at the same ticks from the first tick
//! after their first free (0 before).

use crate::state::hash::FxHashMap;
use crate::state::outlived::{self, Holders};
use crate::state::{SiteKey, SiteStats, TorchTrack};
use leakscope_protocol::StackId;

/// Most buckets a process's series span before they are compacted, unless told otherwise.
pub const DEFAULT_BUCKETS: usize = 512;

/// How fine and how long the series are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SeriesLimits {
    /// Length of a tick, in nanoseconds (the run's interval).
    pub interval_ns: u64,
    /// Most buckets a series spans (at least 4); older data is merged beyond that.
    pub buckets: usize,
}

impl Default for SeriesLimits {
    fn default() -> Self {
        SeriesLimits {
            interval_ns: leakscope_protocol::env::DEFAULT_INTERVAL_MS * 1_000_000,
            buckets: DEFAULT_BUCKETS,
        }
    }
}

/// `len` consecutive buckets of the same value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Run {
    value: u64,
    len: u32,
}

/// One series of bucket values on its process's grid (see the module documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BucketSeries {
    /// Index of the first bucket, at the grid's level.
    start: u64,
    /// The closed buckets, as runs of equal values.
    runs: Vec<Run>,
    /// Buckets in `runs`.
    closed: u64,
    /// Sum and count of the ticks of the open (newest) bucket.
    acc: u128,
    acc_n: u64,
}

impl BucketSeries {
    fn starting_at(start: u64) -> Self {
        BucketSeries {
            start,
            ..BucketSeries::default()
        }
    }

    /// Index of the open bucket.
    fn open_bucket(&self) -> u64 {
        self.start + self.closed
    }

    fn push_run(&mut self, value: u64, len: u64) {
        let mut len = len;
        while len > 0 {
            let part = len.min(u64::from(u32::MAX));
            match self.runs.last_mut() {
                Some(r) if r.value == value && u64::from(r.len) + part <= u64::from(u32::MAX) => {
                    r.len += part as u32;
                }
                _ => self.runs.push(Run {
                    value,
                    len: part as u32,
                }),
            }
            self.closed += part;
            len -= part;
        }
    }

    fn last_closed(&self) -> Option<u64> {
        self.runs.last().map(|r| r.value)
    }

    /// Closes the open bucket (if it has ticks) and moves the open bucket to `bucket`;
    /// buckets in between (none in practice: the grid visits every tick) repeat the last
    /// value.
    fn move_to(&mut self, bucket: u64) {
        if bucket <= self.open_bucket() {
            return;
        }
        if self.acc_n > 0 {
            let mean = (self.acc / u128::from(self.acc_n)) as u64;
            self.push_run(mean, 1);
            self.acc = 0;
            self.acc_n = 0;
        }
        let gap = bucket.saturating_sub(self.open_bucket());
        if gap > 0 {
            let fill = self.last_closed().unwrap_or(0);
            self.push_run(fill, gap);
        }
    }

    /// Adds `ticks` ticks of `value` to the open bucket, which is `bucket`.
    fn add(&mut self, bucket: u64, value: u64, ticks: u64) {
        self.move_to(bucket);
        self.acc += u128::from(value) * u128::from(ticks);
        self.acc_n += ticks;
    }

    /// Merges buckets pairwise: the grid's level went up by one (`ticks_per_bucket` is the
    /// old bucket's length in ticks).
    fn compact(&mut self, ticks_per_bucket: u64) {
        let values = self.closed_values();
        let open = self.open_bucket();
        let new_start = self.start >> 1;
        let mut merged = BucketSeries::starting_at(new_start);
        let mut i = 0usize;
        let mut index = self.start;
        while i < values.len() {
            let partner_in = index & 1 == 0 && i + 1 < values.len();
            if index & 1 == 0 && i + 1 == values.len() && open == index + 1 {
                // Its partner is the open bucket: both go into the new open bucket.
                merged.acc = u128::from(values[i]) * u128::from(ticks_per_bucket);
                merged.acc_n = ticks_per_bucket;
                i += 1;
                index += 1;
                continue;
            }
            let value = if partner_in {
                let sum = u128::from(values[i]) + u128::from(values[i + 1]);
                (sum / 2) as u64
            } else {
                values[i]
            };
            merged.push_run(value, 1);
            let step = if partner_in { 2 } else { 1 };
            i += step;
            index += step as u64;
        }
        merged.acc += self.acc;
        merged.acc_n += self.acc_n;
        *self = merged;
    }

    fn closed_values(&self) -> Vec<u64> {
        let mut out = Vec::with_capacity(self.closed as usize);
        for r in &self.runs {
            out.extend(std::iter::repeat_n(r.value, r.len as usize));
        }
        out
    }

    /// The bucket values, oldest first: the closed buckets and then the open one (the mean
    /// of its ticks so far) if it has any.
    pub fn values(&self) -> Vec<u64> {
        let mut out = self.closed_values();
        if self.acc_n > 0 {
            out.push((self.acc / u128::from(self.acc_n)) as u64);
        }
        out
    }

    /// Index of the first bucket at the grid's level.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Runs stored (the series's size).
    pub fn stored_runs(&self) -> usize {
        self.runs.len()
    }
}

/// The grid and the site series of one process.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct SiteSeries {
    limits: SeriesLimits,
    /// The first tick sampled; `None` until one is.
    first_tick: Option<u64>,
    /// The next tick to sample.
    next_tick: u64,
    /// Buckets are 2^level ticks.
    level: u32,
    /// Ticks sampled.
    ticks: u64,
    series: FxHashMap<SiteKey, BucketSeries>,
    /// PyTorch block sites' live bytes, per stack (`TorchTrack`'s blocks whose size a
    /// reading showed).
    blocks: FxHashMap<StackId, BucketSeries>,
    /// Scratch map for sampling the blocks.
    block_sums: FxHashMap<StackId, u64>,
    /// Outlived bytes of the sites that free whole blocks (`outlived.rs`).
    outlived: FxHashMap<SiteKey, BucketSeries>,
    /// Scratch map for sampling them.
    #[serde(skip)]
    outlived_sums: FxHashMap<SiteKey, u64>,
    /// Outlived bytes of PyTorch's blocks, per stack.
    block_outlived: FxHashMap<StackId, BucketSeries>,
    /// Scratch map for sampling them.
    #[serde(skip)]
    block_outlived_sums: FxHashMap<StackId, u64>,
    /// The latest resident-memory reading (RSS, USS), sampled at each tick like a site.
    resident: Option<(u64, u64)>,
    /// RSS and USS series, from the first tick after the first reading.
    rss: Option<BucketSeries>,
    uss: Option<BucketSeries>,
}

impl SiteSeries {
    /// Empty series on a grid of `limits`.
    pub fn new(limits: SeriesLimits) -> Self {
        SiteSeries {
            limits: SeriesLimits {
                interval_ns: limits.interval_ns.max(1),
                buckets: limits.buckets.max(4),
            },
            ..SiteSeries::default()
        }
    }

    /// Called before a record stamped `ts_ns` is applied: samples `sites` (and, with
    /// `holders`, their outlived bytes) at every tick from the next one up to `ts_ns` (the
    /// first call only sets where the ticks start).
    #[inline]
    pub(crate) fn before(
        &mut self,
        ts_ns: u64,
        sites: &FxHashMap<SiteKey, SiteStats>,
        torch: Option<&TorchTrack>,
        holders: Option<Holders<'_>>,
    ) {
        let tick = ts_ns / self.limits.interval_ns;
        if self.first_tick.is_none() {
            self.first_tick = Some(tick + 1);
            self.next_tick = tick + 1;
            return;
        }
        if tick >= self.next_tick {
            self.block_sums.clear();
            if let Some(track) = torch {
                track.outstanding_by_stack(&mut self.block_sums);
            }
            self.outlived_sums.clear();
            self.block_outlived_sums.clear();
            if let Some(h) = holders {
                let at = tick.saturating_mul(self.limits.interval_ns);
                let interval = self.limits.interval_ns;
                outlived::sum_by_site(&h, sites, interval, at, &mut self.outlived_sums);
                if let Some(track) = torch {
                    let sums = &mut self.block_outlived_sums;
                    let window = h.reorder_window_ns;
                    outlived::sum_blocks_by_stack(track, window, interval, at, sums);
                }
            }
            self.sample(tick, sites);
        }
    }

    /// Samples ticks `next_tick..=last` with the values of `sites` (and `block_sums`).
    fn sample(&mut self, last: u64, sites: &FxHashMap<SiteKey, SiteStats>) {
        let first = self.first_tick.unwrap_or(self.next_tick);
        while self.next_tick <= last {
            let level = self.level;
            let bucket = self.next_tick >> level;
            // Ticks of this bucket still to sample, up to `last`.
            let bucket_end = (bucket + 1) << level;
            let n = (last + 1).min(bucket_end) - self.next_tick;
            let start_bucket = first >> level;
            if let Some((rss, uss)) = self.resident {
                for (series, value) in [(&mut self.rss, rss), (&mut self.uss, uss)] {
                    series
                        .get_or_insert_with(|| BucketSeries::starting_at(bucket))
                        .add(bucket, value, n);
                }
            }
            for (key, stats) in sites {
                let s = self
                    .series
                    .entry(*key)
                    .or_insert_with(|| BucketSeries::starting_at(start_bucket));
                s.add(bucket, stats.outstanding_bytes, n);
            }
            let at = (start_bucket, bucket, n);
            add_sums(&mut self.blocks, &self.block_sums, at);
            add_sums(&mut self.outlived, &self.outlived_sums, at);
            add_sums(&mut self.block_outlived, &self.block_outlived_sums, at);
            // Block stacks with no live block now are worth 0.
            for (stack, s) in self.blocks.iter_mut() {
                if !self.block_sums.contains_key(stack) {
                    s.add(bucket, 0, n);
                }
            }
            self.next_tick += n;
            self.ticks += n;
            let span = (self.next_tick.saturating_sub(1) >> self.level) - (first >> self.level) + 1;
            if span as usize > self.limits.buckets {
                let old = 1u64 << self.level;
                self.level += 1;
                let gauges = self.rss.iter_mut().chain(self.uss.iter_mut());
                let blocks = self
                    .blocks
                    .values_mut()
                    .chain(self.outlived.values_mut())
                    .chain(self.block_outlived.values_mut());
                for s in self.series.values_mut().chain(blocks).chain(gauges) {
                    s.compact(old);
                }
            }
        }
    }

    /// A resident-memory reading (RSS, USS in bytes) arrived: later ticks sample it.
    pub fn resident(&mut self, rss: u64, uss: u64) {
        self.resident = Some((rss, uss));
    }

    /// The RSS and USS series (`None` before the first tick after the first reading).
    pub fn rss(&self) -> Option<&BucketSeries> {
        self.rss.as_ref()
    }

    /// See [`SiteSeries::rss`].
    pub fn uss(&self) -> Option<&BucketSeries> {
        self.uss.as_ref()
    }

    /// The live bytes of the PyTorch blocks allocated from `stack`, over time.
    pub fn blocks(&self, stack: StackId) -> Option<&BucketSeries> {
        self.blocks.get(&stack)
    }

    /// The outlived bytes of `key` over time (`None`: the site has no outlived series, or
    /// freed its first block after the last tick sampled).
    pub fn outlived(&self, key: &SiteKey) -> Option<&BucketSeries> {
        self.outlived.get(key)
    }

    /// The outlived bytes of PyTorch's blocks allocated from `stack`, over time (`None`: the
    /// stack freed no block before the last tick sampled).
    pub fn block_outlived(&self, stack: StackId) -> Option<&BucketSeries> {
        self.block_outlived.get(&stack)
    }

    /// The series of `key` (`None`: the site appeared after the last tick sampled).
    pub fn get(&self, key: &SiteKey) -> Option<&BucketSeries> {
        self.series.get(key)
    }

    /// How the grid is laid out now.
    pub fn grid(&self) -> Grid {
        let first = self.first_tick.unwrap_or(0);
        Grid {
            interval_ns: self.limits.interval_ns,
            level: self.level,
            start_bucket: first >> self.level,
            first_tick: self.first_tick,
            ticks: self.ticks,
        }
    }

    /// Series kept, and the runs they store in all (their size).
    pub fn size(&self) -> (usize, usize) {
        (
            self.series.len() + self.blocks.len() + self.outlived.len() + self.block_outlived.len(),
            self.series
                .values()
                .chain(self.blocks.values())
                .chain(self.outlived.values())
                .chain(self.block_outlived.values())
                .map(|s| s.runs.len())
                .sum(),
        )
    }
}

/// Adds `n` ticks of each key's value in `sums` to its series, in `bucket` (`at`: the
/// process's first bucket, where a new series starts, then `bucket` and `n`).
fn add_sums<K: Copy + Eq + std::hash::Hash>(
    series: &mut FxHashMap<K, BucketSeries>,
    sums: &FxHashMap<K, u64>,
    (start_bucket, bucket, n): (u64, u64, u64),
) {
    for (key, value) in sums {
        series
            .entry(*key)
            .or_insert_with(|| BucketSeries::starting_at(start_bucket))
            .add(bucket, *value, n);
    }
}

/// Where a process's buckets lie in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Grid {
    /// Length of a tick, in nanoseconds.
    pub interval_ns: u64,
    /// Buckets are 2^level ticks.
    pub level: u32,
    /// Index (at `level`) of every series's first bucket.
    pub start_bucket: u64,
    /// The first tick sampled (`None`: none yet).
    pub first_tick: Option<u64>,
    /// Ticks sampled.
    pub ticks: u64,
}

impl Grid {
    /// Length of a bucket, in nanoseconds.
    pub fn bucket_ns(&self) -> u64 {
        self.interval_ns.saturating_mul(1u64 << self.level.min(63))
    }

    /// Where bucket `i` of a series (counted from its first) starts and ends on the
    /// monotonic clock, in nanoseconds; the first bucket starts at the first tick.
    pub fn bucket_span_ns(&self, i: u64) -> (u64, u64) {
        let bucket = self.start_bucket + i;
        let start = (bucket << self.level).max(self.first_tick.unwrap_or(0));
        let end = (bucket + 1) << self.level;
        (
            start.saturating_mul(self.interval_ns),
            end.saturating_mul(self.interval_ns),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leakscope_protocol::{MemoryKind, StackId};

    fn key(n: u32) -> SiteKey {
        SiteKey::host(StackId(n), MemoryKind::Host)
    }

    fn sites(values: &[(u32, u64)]) -> FxHashMap<SiteKey, SiteStats> {
        values
            .iter()
            .map(|&(k, v)| {
                (
                    key(k),
                    SiteStats {
                        outstanding_bytes: v,
                        ..SiteStats::default()
                    },
                )
            })
            .collect()
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn samples_each_tick_before_the_record_that_crosses_it() {
        let mut s = SiteSeries::new(SeriesLimits {
            interval_ns: S,
            buckets: 64,
        });
        s.before(S / 2, &sites(&[]), None, None); // sets the first tick: 1
        s.before(S / 2 + 10, &sites(&[(1, 5)]), None, None);
        // Crosses tick 1 and 2 at once with value 7 (idle: nothing changed).
        s.before(2 * S + 1, &sites(&[(1, 7)]), None, None);
        s.before(3 * S, &sites(&[(1, 9), (2, 4)]), None, None);
        let v1 = s.get(&key(1)).unwrap().values();
        assert_eq!(v1, vec![7, 7, 9]);
        // A site that appeared later starts with zeros at the process's first tick.
        assert_eq!(s.get(&key(2)).unwrap().values(), vec![0, 0, 4]);
        assert_eq!(s.grid().ticks, 3);
        assert_eq!(s.grid().first_tick, Some(1));
    }

    #[test]
    fn compacts_pairwise_and_stays_bounded() {
        let mut s = SiteSeries::new(SeriesLimits {
            interval_ns: S,
            buckets: 8,
        });
        s.before(0, &sites(&[]), None, None);
        // Tick t has value t for site 1; site 2 is constant.
        for t in 1..=1000u64 {
            s.before(t * S + 1, &sites(&[(1, t - 1), (2, 42)]), None, None);
        }
        let grid = s.grid();
        let v = s.get(&key(1)).unwrap().values();
        assert!(v.len() <= 8 + 1, "{} buckets", v.len());
        assert!(grid.level >= 7, "level {}", grid.level);
        // Means of a ramp: strictly increasing.
        assert!(v.windows(2).all(|w| w[0] < w[1]), "{v:?}");
        // The constant site stores one run.
        assert_eq!(s.get(&key(2)).unwrap().stored_runs(), 1);
        assert!(s.get(&key(2)).unwrap().values().iter().all(|&x| x == 42));
        // Every bucket but the first and the open one is 2^level ticks: its mean is the
        // middle of its ticks' values (tick t has value t - 1).
        let w = 1u64 << grid.level;
        for (i, &val) in v.iter().enumerate().skip(1).take(v.len() - 2) {
            let b = grid.start_bucket + i as u64;
            let first_tick = b * w;
            let expect = (first_tick - 1) + (w - 1) / 2;
            assert!(val.abs_diff(expect) <= 1, "bucket {i}: {val} vs {expect}");
        }
        let (start, end) = grid.bucket_span_ns(0);
        assert_eq!(start, S);
        assert!(end > start);
    }

    #[test]
    fn resident_memory_is_sampled_from_the_first_reading_on() {
        let mut s = SiteSeries::new(SeriesLimits {
            interval_ns: S,
            buckets: 4,
        });
        s.before(0, &sites(&[]), None, None);
        s.before(S, &sites(&[(1, 1)]), None, None);
        assert!(s.rss().is_none());
        s.resident(100, 60);
        for t in 2..=20u64 {
            s.before(t * S, &sites(&[(1, 1)]), None, None);
            s.resident(100 + t, 60);
        }
        let grid = s.grid();
        let uss = s.uss().unwrap();
        assert!(uss.values().iter().all(|&v| v == 60));
        // The gauges start later than the sites and are compacted with them.
        assert!(uss.start() >= grid.start_bucket);
        let rss = s.rss().unwrap().values();
        assert!(rss.windows(2).all(|w| w[0] <= w[1]), "{rss:?}");
        assert!(rss.len() <= 5);
    }

    #[test]
    fn a_long_run_of_constant_values_is_cheap() {
        let mut s = SiteSeries::new(SeriesLimits {
            interval_ns: 10,
            buckets: 16,
        });
        s.before(0, &sites(&[]), None, None);
        // An idle gap of a million ticks at once.
        s.before(10_000_000, &sites(&[(1, 3)]), None, None);
        let v = s.get(&key(1)).unwrap();
        assert!(v.values().len() <= 17);
        assert!(v.values().iter().all(|&x| x == 3));
        assert_eq!(s.grid().ticks, 1_000_000);
    }
}
