//! A process's host heap readings over time (`Record::Heap`), each kept with the C heap
//! bytes the live table held when it was applied, so analysis can set what the allocator
//! keeps against what the program holds.
//!
//! Memory stays bounded on long runs: each reading is summed over its arenas on arrival
//! (only the newest reading keeps its arenas one by one), and the points go into a
//! [`Series`] of at most `series::MAX_POINTS`: thinned evenly as it grows, always with the first
//! reading and ending with the newest (see `series.rs`).

use crate::state::hash::FxHashMap;
use crate::state::series::Series;
use crate::state::{SiteKey, SiteStats};
use leakscope_protocol::{ArenaReading, HeapReading, MemoryKind, Timestamp};

/// One reading summed over its arenas, with the program's C heap at that moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeapPoint {
    pub ts: Timestamp,
    pub rss: u64,
    pub uss: u64,
    /// How many arenas the reading had (0: no allocator figures).
    pub arenas: u32,
    /// The arenas' figures, summed ([`ArenaReading`]'s fields).
    pub system: u64,
    pub free: u64,
    pub free_chunks: u64,
    pub fastbin: u64,
    pub top: u64,
    pub mmap_chunks: u64,
    pub mmap_bytes: u64,
    /// Outstanding C heap bytes and blocks (memory kind `host`) when the reading was
    /// applied.
    pub live_bytes: u64,
    pub live_blocks: u64,
}

impl HeapPoint {
    /// `reading` summed, with `live` (bytes, blocks) held by the program.
    pub fn new(reading: &HeapReading, live: (u64, u64)) -> Self {
        let sum = |f: fn(&ArenaReading) -> u64| {
            reading
                .arenas
                .iter()
                .fold(0u64, |acc, a| acc.saturating_add(f(a)))
        };
        HeapPoint {
            ts: reading.ts,
            rss: reading.rss,
            uss: reading.uss,
            arenas: u32::try_from(reading.arenas.len()).unwrap_or(u32::MAX),
            system: sum(|a| a.system),
            free: sum(|a| a.free),
            free_chunks: sum(|a| a.free_chunks),
            fastbin: sum(|a| a.fastbin),
            top: sum(|a| a.top),
            mmap_chunks: reading.mmap_chunks,
            mmap_bytes: reading.mmap_bytes,
            live_bytes: live.0,
            live_blocks: live.1,
        }
    }
}

/// Outstanding (bytes, blocks) of the C heap (memory kind `host`) over `sites`.
pub(crate) fn live_host(sites: &FxHashMap<SiteKey, SiteStats>) -> (u64, u64) {
    sites
        .iter()
        .filter(|(k, _)| k.kind == MemoryKind::Host && !k.is_gpu())
        .fold((0u64, 0u64), |(b, n), (_, s)| {
            (
                b.saturating_add(s.outstanding_bytes),
                n.saturating_add(s.outstanding_count),
            )
        })
}

/// The heap readings of one process (see the module documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeapSeries {
    points: Series<HeapPoint>,
    /// The newest reading, every arena.
    latest: Option<HeapReading>,
}

impl HeapSeries {
    /// Adds `reading`, taken while the program held `live` (bytes, blocks) of C heap.
    pub fn push(&mut self, reading: HeapReading, live: (u64, u64)) {
        self.points.push(HeapPoint::new(&reading, live));
        self.latest = Some(reading);
    }

    /// The kept points, oldest first, the newest reading last.
    pub fn points(&self) -> impl ExactSizeIterator<Item = &HeapPoint> {
        self.points.points()
    }

    /// The newest reading as it came, arenas one by one.
    pub fn latest(&self) -> Option<&HeapReading> {
        self.latest.as_ref()
    }

    /// How many readings were applied (the series may have thinned them).
    pub fn readings(&self) -> u64 {
        self.points.pushed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::series::MAX_POINTS;

    fn reading(ts: u64) -> HeapReading {
        HeapReading {
            ts: Timestamp(ts),
            rss: 10 * ts,
            uss: 9 * ts,
            arenas: vec![
                ArenaReading {
                    system: 1000,
                    free: 300,
                    free_chunks: 7,
                    fastbin: 20,
                    top: 100,
                },
                ArenaReading {
                    system: 500,
                    free: 50,
                    free_chunks: 2,
                    fastbin: 0,
                    top: 50,
                },
            ],
            mmap_chunks: 1,
            mmap_bytes: 4096,
        }
    }

    #[test]
    fn a_point_sums_the_arenas_and_keeps_the_live_heap() {
        let mut s = HeapSeries::default();
        s.push(reading(5), (800, 3));
        let p = *s.points().next().unwrap();
        assert_eq!(
            p,
            HeapPoint {
                ts: Timestamp(5),
                rss: 50,
                uss: 45,
                arenas: 2,
                system: 1500,
                free: 350,
                free_chunks: 9,
                fastbin: 20,
                top: 150,
                mmap_chunks: 1,
                mmap_bytes: 4096,
                live_bytes: 800,
                live_blocks: 3,
            }
        );
        assert_eq!(s.latest(), Some(&reading(5)));
        assert_eq!(s.readings(), 1);
    }

    #[test]
    fn long_runs_are_thinned_evenly_keeping_first_and_newest() {
        let mut s = HeapSeries::default();
        let total = 10 * MAX_POINTS as u64 + 37;
        for i in 0..total {
            s.push(reading(i), (i, 1));
            assert!(s.points().len() <= MAX_POINTS);
            assert_eq!(
                s.points().last().unwrap().ts,
                Timestamp(i),
                "newest is last"
            );
        }
        assert_eq!(s.readings(), total);
        let ts: Vec<u64> = s.points().map(|p| p.ts.0).collect();
        assert!(ts.len() >= MAX_POINTS / 2, "{} points", ts.len());
        assert_eq!(ts[0], 0, "the first reading stays");
        // Every kept point but the newest is one stride after the one before it.
        let gaps: Vec<u64> = ts[..ts.len() - 1].windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|&g| g == gaps[0]), "uneven: {gaps:?}");
        assert_eq!(gaps[0], 16, "10 × the limit needs a stride of 16");
        assert!(ts[ts.len() - 1] - ts[ts.len() - 2] <= gaps[0]);
        assert_eq!(s.latest().unwrap().ts, Timestamp(total - 1));
    }

    #[test]
    fn short_runs_keep_every_reading() {
        let mut s = HeapSeries::default();
        for i in 0..MAX_POINTS as u64 {
            s.push(reading(i), (0, 0));
        }
        let ts: Vec<u64> = s.points().map(|p| p.ts.0).collect();
        assert_eq!(ts, (0..MAX_POINTS as u64).collect::<Vec<_>>());
    }
}
