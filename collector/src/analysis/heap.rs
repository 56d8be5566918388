//! The per-process `heap` section: the host heap readings over time turned into figures
//! (what glibc's allocator holds from the system, what of it is free, what the program
//! holds, resident and unique memory) and a verdict on the newest reading, so a report
//! shows memory that was freed but never returned to the system.
//!
//! Verdict, on the newest reading (arena bytes: what the arenas hold from the system,
//! mmap'd chunks left out since freeing one returns it):
//! - `fragmented`: the free bytes in holes between chunks in use (free bytes but the top
//!   chunk) are at least [`MIN_KEPT_BYTES`] and [`MIN_KEPT_PERMILLE`] of the arena bytes,
//!   spread over at least [`MIN_FRAGMENT_CHUNKS`] free chunks. The allocator cannot give
//!   that memory back while its neighbours live: the "resident memory grows but nothing
//!   leaks" case.
//! - `retained`: not fragmented, but the free bytes (top chunk included) still reach both
//!   thresholds: kept at the heap's end (below the trim threshold, or above it until the
//!   next trim) or in a few large holes.
//! - `compact`: the allocator keeps less than that.
//! - `unknown`: the readings carry no allocator figures (not glibc's allocator, or only GPU
//!   memory was tracked); resident and unique memory are still reported.

use crate::analysis::model::{ArenaFigures, HeapFigures, HeapReport, HeapVerdict};
use crate::state::{HeapPoint, ProcessState};
use leakscope_protocol::ArenaReading;

/// Free bytes below this are never worth a verdict, whatever their share.
pub const MIN_KEPT_BYTES: u64 = 1 << 20;
/// Share of the arena bytes (per mille) the free bytes must reach: a quarter.
pub const MIN_KEPT_PERMILLE: u32 = 250;
/// Free chunks that make free bytes "spread", not a few large holes.
pub const MIN_FRAGMENT_CHUNKS: u64 = 64;

/// The heap section of `process`; `None` when no reading came.
pub fn heap_report(process: &ProcessState) -> Option<HeapReport> {
    let series = &process.heap;
    let start = process.hello.start.0;
    let figures = |p: &HeapPoint| figures(p, start);
    let series_figures: Vec<HeapFigures> = series.points().map(figures).collect();
    let latest = series_figures.last()?.clone();
    let first_ts = series.points().next().map_or(0, |p| p.ts.0);
    let last_ts = series.points().last().map_or(0, |p| p.ts.0);
    let arenas = series
        .latest()
        .map(|r| r.arenas.iter().map(arena).collect())
        .unwrap_or_default();
    Some(HeapReport {
        verdict: verdict(&latest),
        latest,
        arenas,
        readings: series.readings(),
        span_ns: last_ts.saturating_sub(first_ts),
        series: series_figures,
    })
}

/// `part` per mille of `whole` (0 when `whole` is).
fn permille(part: u64, whole: u64) -> u32 {
    if whole == 0 {
        return 0;
    }
    let v = u128::from(part) * 1000 / u128::from(whole);
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn figures(p: &HeapPoint, start: u64) -> HeapFigures {
    HeapFigures {
        at_ns: p.ts.0.saturating_sub(start),
        arenas: p.arenas,
        system_bytes: p.system.saturating_add(p.mmap_bytes),
        arena_bytes: p.system,
        mmap_bytes: p.mmap_bytes,
        mmap_chunks: p.mmap_chunks,
        free_bytes: p.free,
        free_chunks: p.free_chunks,
        fastbin_bytes: p.fastbin,
        top_bytes: p.top,
        hole_bytes: p.free.saturating_sub(p.top),
        free_permille: permille(p.free, p.system),
        live_bytes: p.live_bytes,
        live_blocks: p.live_blocks,
        rss_bytes: p.rss,
        uss_bytes: p.uss,
    }
}

fn arena(a: &ArenaReading) -> ArenaFigures {
    ArenaFigures {
        system_bytes: a.system,
        free_bytes: a.free,
        free_chunks: a.free_chunks,
        fastbin_bytes: a.fastbin,
        top_bytes: a.top,
    }
}

/// The verdict on one reading (see the module documentation).
pub fn verdict(f: &HeapFigures) -> HeapVerdict {
    if f.arenas == 0 {
        return HeapVerdict::Unknown;
    }
    let kept =
        |bytes: u64| bytes >= MIN_KEPT_BYTES && permille(bytes, f.arena_bytes) >= MIN_KEPT_PERMILLE;
    if kept(f.hole_bytes) && f.free_chunks >= MIN_FRAGMENT_CHUNKS {
        HeapVerdict::Fragmented
    } else if kept(f.free_bytes) {
        HeapVerdict::Retained
    } else {
        HeapVerdict::Compact
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ConnId, HeapSeries};
    use leakscope_protocol::{HeapReading, Hello, Origin, Pid, Timestamp};

    const MIB: u64 = 1 << 20;

    fn process(readings: &[(u64, HeapReading, u64)]) -> ProcessState {
        let hello = Hello {
            pid: Pid(7),
            ppid: Pid(1),
            origin: Origin::Exec,
            exe: "/bin/app".into(),
            argv: vec!["app".into()],
            start: Timestamp(1_000),
            start_unix_ns: 0,
            fingerprint: 0,
        };
        let mut p = ProcessState::new(hello, ConnId(0));
        let mut series = HeapSeries::default();
        for (ts, r, live) in readings {
            let mut r = r.clone();
            r.ts = Timestamp(*ts);
            series.push(r, (*live, live / 256));
        }
        p.heap = series;
        p
    }

    /// One arena of `system` bytes, `free` of them free in `chunks` chunks, `top` of the
    /// free bytes at the end.
    fn reading(system: u64, free: u64, chunks: u64, top: u64) -> HeapReading {
        HeapReading {
            ts: Timestamp(0),
            rss: system + 8 * MIB,
            uss: system + 6 * MIB,
            arenas: vec![ArenaReading {
                system,
                free,
                free_chunks: chunks,
                fastbin: 0,
                top,
            }],
            mmap_chunks: 2,
            mmap_bytes: 3 * MIB,
        }
    }

    #[test]
    fn no_readings_no_section() {
        assert_eq!(heap_report(&process(&[])), None);
    }

    #[test]
    fn figures_and_series_of_a_fragmented_heap() {
        // 54 MiB of arena, 27 MiB of it free in 100 000 holes, 100 KiB of top.
        let frag = reading(54 * MIB, 27 * MIB, 100_001, 100 << 10);
        let early = reading(2 * MIB, 100 << 10, 3, 100 << 10);
        let p = process(&[(1_000, early, 1000), (2_001_000, frag, 25_600_000)]);
        let h = heap_report(&p).unwrap();
        assert_eq!(h.readings, 2);
        assert_eq!(h.span_ns, 2_000_000);
        assert_eq!(h.series.len(), 2);
        assert_eq!(h.series[0].at_ns, 0);
        assert_eq!(h.series[0].free_permille, 48);
        assert_eq!(verdict(&h.series[0]), HeapVerdict::Compact);
        let l = &h.latest;
        assert_eq!(*l, h.series[1]);
        assert_eq!(l.at_ns, 2_000_000);
        assert_eq!(l.system_bytes, 57 * MIB);
        assert_eq!(l.arena_bytes, 54 * MIB);
        assert_eq!(l.free_bytes, 27 * MIB);
        assert_eq!(l.hole_bytes, 27 * MIB - (100 << 10));
        assert_eq!(l.free_permille, 500);
        assert_eq!((l.live_bytes, l.live_blocks), (25_600_000, 100_000));
        assert_eq!((l.rss_bytes, l.uss_bytes), (62 * MIB, 60 * MIB));
        assert_eq!(h.verdict, HeapVerdict::Fragmented);
        assert_eq!(h.arenas.len(), 1);
        assert_eq!(h.arenas[0].free_chunks, 100_001);
    }

    fn verdict_of(system: u64, free: u64, chunks: u64, top: u64) -> HeapVerdict {
        heap_report(&process(&[(5_000, reading(system, free, chunks, top), 0)]))
            .unwrap()
            .verdict
    }

    #[test]
    fn verdict_thresholds() {
        // Exactly at the thresholds: a quarter of the arena, 1 MiB, 64 chunks.
        assert_eq!(verdict_of(4 * MIB, MIB, 64, 0), HeapVerdict::Fragmented);
        // Too few chunks: a few large holes are kept memory, not fragmentation.
        assert_eq!(verdict_of(4 * MIB, MIB, 63, 0), HeapVerdict::Retained);
        // Just under a quarter, or under 1 MiB.
        assert_eq!(
            verdict_of(4 * MIB + 8192, MIB, 5000, 0),
            HeapVerdict::Compact
        );
        assert_eq!(verdict_of(2 * MIB, MIB - 1, 5000, 0), HeapVerdict::Compact);
        // Free memory that is mostly the top chunk: retained, not fragmented.
        assert_eq!(
            verdict_of(40 * MIB, 30 * MIB, 500, 29 * MIB),
            HeapVerdict::Retained
        );
        // A large heap with little free.
        assert_eq!(
            verdict_of(400 * MIB, 10 * MIB, 9000, 0),
            HeapVerdict::Compact
        );
    }

    #[test]
    fn readings_without_arenas_are_unknown_but_keep_resident_memory() {
        let mut r = reading(0, 0, 0, 0);
        r.arenas.clear();
        r.mmap_bytes = 0;
        let h = heap_report(&process(&[(9_000, r, 4096)])).unwrap();
        assert_eq!(h.verdict, HeapVerdict::Unknown);
        assert_eq!(h.latest.rss_bytes, 8 * MIB);
        assert_eq!(h.latest.live_bytes, 4096);
        assert!(h.arenas.is_empty());
    }
}
