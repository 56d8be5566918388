//! Outlived bytes: for each site that frees, the bytes of its live blocks that have lived
//! far longer than any block of the site ever lived before being freed. Owns that rule
//! and the per-tick sums the aging series sample (`aging.rs`).
//!
//! A site that leaks a small share of what it allocates from the same stack as what it
//! frees (the realistic leak) hides the leak in its churn: its outstanding bytes wander by
//! about √(live blocks) × the mean size while the leak adds a few hundred bytes a minute.
//! The leaked blocks are different in one way: they are old. A block is *outlived* once
//! its age exceeds twice the longest hold of any freed block of its site (and at least one
//! interval), its age measured at the tick less the reordering window (a free may arrive
//! that late). In a stationary site the blocks still live are no older than the ones that
//! are freed, so its outlived bytes stay near zero; a leaking site's grow by what it leaks,
//! without its churn. The aging analysis tests that series beside the outstanding bytes.
//!
//! Whole blocks of the live tables count: host memory other than mappings, and GPU pointers
//! the process allocated. So do PyTorch's blocks, per allocating stack (their sites' series
//! are per stack too), once a reading has shown their size. Mappings, handles and
//! registrations have no outlived series.

use crate::state::hash::FxHashMap;
use crate::state::live::LiveTable;
use crate::state::{SiteKey, SiteStats, TorchTrack};
use leakscope_protocol::{GpuSpace, MemoryKind, StackId};

/// What sampling the outlived bytes needs from the process: its live tables of whole
/// blocks and how late a free may arrive.
#[derive(Clone, Copy)]
pub(crate) struct Holders<'a> {
    /// Host memory (every kind but mapped) and GPU pointers.
    pub tables: [&'a LiveTable; 2],
    /// The state's reordering window, nanoseconds.
    pub reorder_window_ns: u64,
}

/// Whether `key` names a site whose blocks live in a table of whole blocks (and so can
/// have an outlived series).
pub(crate) fn has_whole_blocks(key: &SiteKey) -> bool {
    match key.space {
        None => key.owned && key.kind != MemoryKind::Mapped,
        Some(space) => space == GpuSpace::Pointer && key.owned,
    }
}

/// The age past which a block of a site with `stats` is outlived (`None`: the site never
/// freed a block whose lifetime is known, so nothing tells a leak from a long life).
pub(crate) fn threshold_ns(stats: &SiteStats, interval_ns: u64) -> Option<u64> {
    (stats.longest_held_ns > 0).then(|| bar_ns(stats.longest_held_ns, interval_ns))
}

/// Twice the longest hold, and at least one interval.
fn bar_ns(longest_held_ns: u64, interval_ns: u64) -> u64 {
    longest_held_ns.saturating_mul(2).max(interval_ns)
}

/// Fills `out` (cleared first) with each site's outlived bytes at `at_ns`: sites that may
/// have an outlived series get an entry, 0 when none of their blocks is outlived.
pub(crate) fn sum_by_site(
    holders: &Holders<'_>,
    sites: &FxHashMap<SiteKey, SiteStats>,
    interval_ns: u64,
    at_ns: u64,
    out: &mut FxHashMap<SiteKey, u64>,
) {
    let bars = sites
        .iter()
        .filter(|(key, _)| has_whole_blocks(key))
        .filter_map(|(key, stats)| Some((*key, threshold_ns(stats, interval_ns)?)));
    let seen_at = at_ns.saturating_sub(holders.reorder_window_ns);
    sum(bars, seen_at, out, |add| {
        for table in holders.tables {
            table.for_each_outstanding(|_, b| add(b.site, b.ts, b.size));
        }
    });
}

/// Fills `out` (cleared first) with the outlived bytes of PyTorch's blocks at `at_ns`, per
/// allocating stack: every stack that freed a block whose lifetime is known gets an entry.
pub(crate) fn sum_blocks_by_stack(
    track: &TorchTrack,
    reorder_window_ns: u64,
    interval_ns: u64,
    at_ns: u64,
    out: &mut FxHashMap<StackId, u64>,
) {
    let bars = track
        .longest_held()
        .iter()
        .map(|(stack, &longest)| (*stack, bar_ns(longest, interval_ns)));
    let seen_at = at_ns.saturating_sub(reorder_window_ns);
    sum(bars, seen_at, out, |add| track.for_each_sized_live(add));
}

/// The sums for keys with `bars` (each key's age bar): an entry per key, adding the size of
/// every live block `blocks` reports (key, allocation time, size) that was older than its
/// key's bar at `seen_at`.
fn sum<K: Copy + Eq + std::hash::Hash>(
    bars: impl Iterator<Item = (K, u64)>,
    seen_at: u64,
    out: &mut FxHashMap<K, u64>,
    blocks: impl FnOnce(&mut dyn FnMut(K, u64, u64)),
) {
    out.clear();
    // Blocks allocated before its cutoff are a key's outlived ones; a key without one has
    // none yet.
    let mut cutoffs: FxHashMap<K, u64> = FxHashMap::default();
    for (key, bar) in bars {
        out.insert(key, 0);
        if seen_at > bar {
            cutoffs.insert(key, seen_at - bar);
        }
    }
    if cutoffs.is_empty() {
        return;
    }
    blocks(&mut |key, ts, size| {
        if cutoffs.get(&key).is_some_and(|&cutoff| ts < cutoff) {
            if let Some(sum) = out.get_mut(&key) {
                *sum = sum.saturating_add(size);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::live::{AddrSpace, Block, BlockKey, Horizon};
    use crate::state::sites::SiteBook;
    use crate::state::StateOptions;
    use leakscope_protocol::StackId;

    const S: u64 = 1_000_000_000;

    fn host(stack: u32) -> SiteKey {
        SiteKey::host(StackId(stack), MemoryKind::Host)
    }

    fn key(addr: u64) -> BlockKey {
        BlockKey {
            space: AddrSpace::Host(MemoryKind::Host),
            addr,
        }
    }

    /// A churning site whose blocks live 2 s, one of which is never freed, beside a site
    /// that never frees: only the churning site's old block is outlived, once it is older
    /// than twice 2 s (and the interval) plus the reordering window.
    #[test]
    fn a_block_far_older_than_its_sites_freed_ones_is_outlived() {
        let opts = StateOptions::default();
        let mut sites = FxHashMap::default();
        let mut table = LiveTable::default();
        let horizon = Horizon(Some(0));
        let churn = host(1);
        let keeps = host(2);
        {
            let mut book = SiteBook::new(&mut sites, &opts);
            for i in 0..10u64 {
                let block = Block {
                    ts: i * S,
                    size: 100,
                    site: churn,
                };
                table.alloc(key(i), block, horizon, &mut book);
                if i != 3 {
                    table.free(key(i), i * S + 2 * S, horizon, &mut book);
                }
            }
            let kept = Block {
                ts: 0,
                size: 7,
                site: keeps,
            };
            table.alloc(key(100), kept, horizon, &mut book);
        }
        assert_eq!(sites[&churn].longest_held_ns, 2 * S);
        assert_eq!(threshold_ns(&sites[&keeps], S), None);
        assert_eq!(threshold_ns(&sites[&churn], S), Some(4 * S));
        assert_eq!(threshold_ns(&sites[&churn], 10 * S), Some(10 * S));
        let empty = LiveTable::default();
        let holders = Holders {
            tables: [&table, &empty],
            reorder_window_ns: 5 * S,
        };
        let mut out = FxHashMap::default();
        // Block 3 was made at 3 s: outlived after 3 + 4 + 5 = 12 s, not at 12 s.
        sum_by_site(&holders, &sites, S, 12 * S, &mut out);
        assert_eq!(out.get(&churn), Some(&0));
        assert_eq!(out.get(&keeps), None);
        sum_by_site(&holders, &sites, S, 12 * S + 1, &mut out);
        assert_eq!(out.get(&churn), Some(&100));
        // A longer interval raises the bar.
        sum_by_site(&holders, &sites, 10 * S, 17 * S, &mut out);
        assert_eq!(out.get(&churn), Some(&0));
        sum_by_site(&holders, &sites, 10 * S, 19 * S, &mut out);
        assert_eq!(out.get(&churn), Some(&100));
    }

    /// What one tick's sums cost over a large table (run with `--ignored --nocapture`, in
    /// release for figures worth quoting): a million live blocks from 10,000 sites that
    /// all free.
    #[test]
    #[ignore]
    fn cost_of_the_sums_over_a_million_blocks() {
        let opts = StateOptions::default();
        let mut sites = FxHashMap::default();
        let mut table = LiveTable::default();
        let horizon = Horizon(Some(0));
        {
            let mut book = SiteBook::new(&mut sites, &opts);
            for i in 0..1_010_000u64 {
                let block = Block {
                    ts: i * 1000,
                    size: 48,
                    site: host((i % 10_000) as u32),
                };
                table.alloc(key(i), block, horizon, &mut book);
                if i < 10_000 {
                    table.free(key(i), i * 1000 + S, horizon, &mut book);
                }
            }
        }
        let empty = LiveTable::default();
        let holders = Holders {
            tables: [&table, &empty],
            reorder_window_ns: 5 * S,
        };
        let mut out = FxHashMap::default();
        let start = std::time::Instant::now();
        let rounds = 10;
        for r in 0..rounds {
            sum_by_site(&holders, &sites, S, 60 * S + r, &mut out);
        }
        let per_tick = start.elapsed() / rounds as u32;
        let outlived: u64 = out.values().sum();
        assert_eq!(outlived, 1_000_000 * 48);
        println!("outlived sums over 1,000,000 blocks of 10,000 sites: {per_tick:?} per tick");
    }

    #[test]
    fn only_whole_owned_blocks_have_outlived_series() {
        assert!(has_whole_blocks(&host(1)));
        assert!(!has_whole_blocks(&SiteKey::host(
            StackId(1),
            MemoryKind::Mapped
        )));
        let gpu = |api| {
            SiteKey::gpu(StackId(1), MemoryKind::Device, api, None, false).expect("a gpu site")
        };
        assert!(has_whole_blocks(&gpu(leakscope_protocol::Api::CudaMalloc)));
        assert!(!has_whole_blocks(&gpu(
            leakscope_protocol::Api::CuMemCreate
        )));
        assert!(!has_whole_blocks(&gpu(
            leakscope_protocol::Api::CudaHostRegister
        )));
    }
}
