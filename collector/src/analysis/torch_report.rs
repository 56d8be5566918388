//! The `gpu.torch` section: PyTorch's caching allocator per device and pool, at the newest
//! reading and over time (reserved, allocated, requested, segments, free bytes, largest free
//! block, external fragmentation, inactive split bytes), and the block counts.

use crate::analysis::torch::pool_name;
use crate::analysis::torch_model::{
    TorchBlocks, TorchDevice, TorchFigures, TorchPool, TorchReport,
};
use crate::state::{BlockSiteStats, ProcessState};
use crate::state::{PoolFigures, PoolKey, TorchTrack};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

/// The section of `process`; `None` when no PyTorch record came.
pub fn torch_report(process: &ProcessState) -> Option<TorchReport> {
    let track = process.torch.as_ref()?;
    let start = process.hello.start.0;
    let points: Vec<_> = track.readings().points().collect();
    let at = |ts: u64| ts.saturating_sub(start);
    let latest_at = track.latest_reading().map_or(0, |t| at(t.0));

    // Every pool any kept reading, or the mirror, names.
    let latest = crate::state::torch_figures(track.segments());
    let mut keys: BTreeSet<PoolKey> = latest.keys().copied().collect();
    for p in &points {
        keys.extend(p.pools.iter().map(|(k, _)| *k));
    }
    let series_of = |want: &dyn Fn(&PoolKey) -> bool| -> Vec<TorchFigures> {
        points
            .iter()
            .map(|p| {
                let sum = p.pools.iter().filter(|(k, _)| want(k)).fold(
                    PoolFigures::default(),
                    |mut acc, (_, f)| {
                        acc.merge(f);
                        acc
                    },
                );
                figures(&sum, at(p.ts.0))
            })
            .collect()
    };
    let streams = streams(track);
    let mut pools: Vec<TorchPool> = keys
        .iter()
        .map(|k| TorchPool {
            device: k.device.0,
            pool: pool_name(track, k.pool, k.expandable).to_owned(),
            pool_id: [k.pool.0, k.pool.1],
            expandable: k.expandable,
            streams: streams
                .get(k)
                .map(|s| s.iter().map(|h| format!("{h:#x}")).collect())
                .unwrap_or_default(),
            latest: figures(&latest.get(k).copied().unwrap_or_default(), latest_at),
            series: series_of(&|x| x == k),
        })
        .collect();
    pools.sort_by_key(|p| Reverse(p.latest.reserved_bytes));
    let devices: BTreeSet<u32> = keys.iter().map(|k| k.device.0).collect();
    let devices = devices
        .into_iter()
        .map(|d| {
            let sum = latest.iter().filter(|(k, _)| k.device.0 == d).fold(
                PoolFigures::default(),
                |mut acc, (_, f)| {
                    acc.merge(f);
                    acc
                },
            );
            TorchDevice {
                device: d,
                latest: figures(&sum, latest_at),
                series: series_of(&|k| k.device.0 == d),
            }
        })
        .collect();
    let first = points.first().map_or(0, |p| p.ts.0);
    let last = points.last().map_or(0, |p| p.ts.0);
    Some(TorchReport {
        readings: track.counts.readings,
        span_ns: last.saturating_sub(first),
        blocks: blocks(track),
        devices,
        pools,
    })
}

/// The report's figures of `f`, at `at_ns`.
pub fn figures(f: &PoolFigures, at_ns: u64) -> TorchFigures {
    TorchFigures {
        at_ns,
        reserved_bytes: f.reserved,
        allocated_bytes: f.allocated,
        requested_bytes: f.requested,
        awaiting_free_bytes: f.awaiting_free,
        segments: f.segments,
        allocated_blocks: f.allocated_blocks,
        free_bytes: f.free,
        free_blocks: f.free_blocks,
        largest_free_bytes: f.largest_free,
        external_fragmentation_permille: fragmentation_permille(f.largest_free, f.free),
        inactive_split_bytes: f.inactive_split,
    }
}

/// `1 - largest / free`, per mille, rounded down; 0 when nothing is free.
pub fn fragmentation_permille(largest: u64, free: u64) -> u32 {
    if free == 0 {
        return 0;
    }
    let rest = u128::from(free.saturating_sub(largest.min(free)));
    u32::try_from(rest * 1000 / u128::from(free)).unwrap_or(1000)
}

/// The streams of each pool's segments in the mirror.
fn streams(track: &TorchTrack) -> BTreeMap<PoolKey, BTreeSet<u64>> {
    let mut out: BTreeMap<PoolKey, BTreeSet<u64>> = BTreeMap::new();
    for s in track.segments() {
        out.entry(PoolKey::of(s)).or_default().insert(s.stream);
    }
    out
}

fn blocks(track: &TorchTrack) -> TorchBlocks {
    let live =
        track
            .block_sites()
            .into_iter()
            .fold(BlockSiteStats::default(), |mut acc, (_, s)| {
                acc.outstanding_count = acc.outstanding_count.saturating_add(s.outstanding_count);
                acc.outstanding_bytes = acc.outstanding_bytes.saturating_add(s.outstanding_bytes);
                acc.unsized_outstanding = acc
                    .unsized_outstanding
                    .saturating_add(s.unsized_outstanding);
                acc
            });
    let (untracked_blocks, untracked_bytes) = track.untracked();
    TorchBlocks {
        allocations: track.counts.allocs,
        frees: track.counts.frees,
        live_blocks: live.outstanding_count,
        live_bytes: live.outstanding_bytes,
        unsized_live_blocks: live.unsized_outstanding,
        untracked_blocks,
        untracked_bytes,
        unknown_frees: track.unknown_frees(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragmentation_is_one_minus_largest_over_free() {
        assert_eq!(fragmentation_permille(0, 0), 0);
        assert_eq!(fragmentation_permille(100, 100), 0);
        assert_eq!(fragmentation_permille(8000, 13000), 384);
        assert_eq!(fragmentation_permille(1, 3), 666);
        assert_eq!(fragmentation_permille(0, 5), 1000);
    }
}
