//! PyTorch's CUDA caching allocator in one process, from the shim's records: `TorchBlock`
//! events (a block handed to a tensor, with the allocating stack, or given back) and
//! `TorchState` readings of the allocator's segments (each the changes since the previous
//! reading, or a full listing).
//!
//! - **Live blocks** by address. Events of different threads arrive out of timestamp order;
//!   as in `live.rs`, the newest event at an address decides who holds it (an older event
//!   arriving late only counts), a free arriving before its allocation pairs with it, and
//!   freed addresses are remembered for the reordering window.
//! - **Size and placement** come from the readings, since an event carries only the
//!   address: a block's size from the newest reading taken after it was handed out that
//!   shows its address allocated; its placement (device, pool) from the segment holding its
//!   address, in the latest reading known when the block was handed out or in the first
//!   that shows it. A block that lived and died between two readings has no known size,
//!   and if its segment was new it waits (summed per stack and address) for the next
//!   reading to be placed.
//! - **The mirror**: the allocator's segments and blocks as of the latest reading, and
//!   every `torch.cuda.MemPool` the program created. Per reading, the figures of every pool
//!   (`torch_figures.rs`) go into a bounded series.
//! - **Block sites**, per allocating stack and placement: a block's counts go to its site
//!   when it is freed; live blocks are added when the sites are asked for
//!   ([`TorchTrack::block_sites`]), so nothing needs settling at the end of the stream.
//!   Peaks are sampled at readings.
//!
//! Blocks are carved out of segments that the GPU tables already count (each segment is a
//! `cudaMalloc` or a mapping): block bytes are never added to a process's totals.

use crate::state::hash::FxHashMap;
use crate::state::live::Horizon;
use crate::state::series::Series;
use crate::state::torch_figures::{figures, PoolFigures, PoolKey};
use leakscope_protocol::torch::{BlockState, SegmentInfo, TorchBlock, TorchPoolId, TorchState};
use leakscope_protocol::{DeviceOrdinal, StackId, Timestamp};
use std::collections::hash_map::Entry;
use std::collections::BTreeMap;

/// Fewest events between two sweeps of freed addresses (readings sweep too).
const SWEEP_MIN_EVENTS: u64 = 1 << 20;

/// Where a block lies: its segment's device and pool.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Placement {
    pub device: DeviceOrdinal,
    pub pool: TorchPoolId,
    /// In an expandable segment.
    pub expandable: bool,
}

impl Placement {
    fn of(segment: &SegmentInfo) -> Placement {
        Placement {
            device: segment.device,
            pool: segment.pool,
            expandable: segment.expandable,
        }
    }
}

/// A block site: the stack that allocated, and where its blocks lie (`None`: no reading
/// showed the segment).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct BlockSiteKey {
    pub stack: StackId,
    pub placement: Option<Placement>,
}

/// The statistics of a block site; bytes are block sizes (what the allocator handed out,
/// after rounding).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlockSiteStats {
    /// Bytes of live blocks whose size is known.
    pub outstanding_bytes: u64,
    /// Live blocks.
    pub outstanding_count: u64,
    pub allocations: u64,
    /// Bytes of the allocations whose size is known (a lower bound of the churn).
    pub allocated_bytes: u64,
    /// Highest outstanding bytes at a reading, or now.
    pub peak_bytes: u64,
    /// Blocks freed within the temporary threshold.
    pub temporary: u64,
    /// Allocations whose size no reading showed (not in `allocated_bytes`).
    pub unsized_allocations: u64,
    /// Live blocks whose size no reading showed yet (not in `outstanding_bytes`).
    pub unsized_outstanding: u64,
}

impl BlockSiteStats {
    fn count(&mut self, size: Option<u64>) {
        self.allocations = self.allocations.saturating_add(1);
        match size {
            Some(n) => self.allocated_bytes = self.allocated_bytes.saturating_add(n),
            None => self.unsized_allocations = self.unsized_allocations.saturating_add(1),
        }
    }
}

/// Counts over all blocks of a process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TorchCounts {
    /// Block events received.
    pub allocs: u64,
    pub frees: u64,
    /// Frees of addresses whose block was never seen (handed out before tracking began)
    /// and that no late allocation paired; more may still be waiting ([`TorchTrack::unknown_frees`]).
    pub unknown_frees: u64,
    /// Blocks released because a later block at their address proved their free lost.
    pub implied_frees: u64,
    /// Complete readings applied.
    pub readings: u64,
}

/// One reading's figures: every pool's, by key.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TorchReading {
    pub ts: Timestamp,
    pub pools: Vec<(PoolKey, PoolFigures)>,
}

/// A live block.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
struct Live {
    ts: u64,
    stack: StackId,
    placement: Option<Placement>,
    size: Option<u64>,
}

/// The newest event at an address.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
enum Slot {
    Live(Live),
    /// A free at `ts`; `paired` once a block before it was released by it.
    Freed {
        ts: u64,
        paired: bool,
    },
}

/// See the module documentation.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct TorchTrack {
    slots: FxHashMap<u64, Slot>,
    /// Counts of the blocks freed, per site.
    finished: FxHashMap<BlockSiteKey, BlockSiteStats>,
    /// Counts of blocks freed before any reading showed their segment, per stack and
    /// address, placed at the next reading.
    unplaced: FxHashMap<(StackId, u64), BlockSiteStats>,
    /// Highest outstanding bytes per site at a reading.
    peaks: FxHashMap<BlockSiteKey, u64>,
    /// The segments of the latest reading, by start address.
    segments: BTreeMap<u64, SegmentInfo>,
    /// When the latest complete reading was taken.
    mirror_ts: Option<Timestamp>,
    /// `MemPool` ids the program created, and whether each has an allocator of its own.
    mempools: BTreeMap<TorchPoolId, bool>,
    readings: Series<TorchReading>,
    pub counts: TorchCounts,
    events_since_sweep: u64,
    /// The longest any block of each stack was held before its free was seen, in
    /// nanoseconds (stacks with no such free are absent): `outlived.rs`'s bar.
    longest_held: FxHashMap<StackId, u64>,
}

impl TorchTrack {
    /// Applies a block event. `temporary_ns`: a block freed this soon is temporary.
    pub(crate) fn block(&mut self, b: &TorchBlock, horizon: Horizon, temporary_ns: u64) {
        if b.alloc {
            self.alloc(b.addr.0, b.ts.0, b.stack, temporary_ns);
        } else {
            self.free(b.addr.0, b.ts.0, temporary_ns);
        }
        self.events_since_sweep += 1;
        if self.events_since_sweep >= SWEEP_MIN_EVENTS.max(self.slots.len() as u64) {
            self.sweep(horizon);
        }
    }

    fn alloc(&mut self, addr: u64, ts: u64, stack: StackId, temporary_ns: u64) {
        self.counts.allocs += 1;
        let block = Live {
            ts,
            stack,
            placement: self.placement_of(addr),
            size: self.mirror_size(addr, ts),
        };
        let mut finish = None;
        match self.slots.entry(addr) {
            Entry::Vacant(v) => {
                v.insert(Slot::Live(block));
            }
            Entry::Occupied(mut o) => match *o.get() {
                Slot::Live(old) if ts >= old.ts => {
                    // Its free is late, or was lost.
                    self.counts.implied_frees += 1;
                    finish = Some((old, None));
                    *o.get_mut() = Slot::Live(block);
                }
                Slot::Freed { ts: freed, .. } if ts >= freed => {
                    *o.get_mut() = Slot::Live(block);
                }
                Slot::Freed {
                    ts: freed,
                    paired: false,
                } => {
                    // The free came first; this is the block it freed.
                    finish = Some((block, Some(freed - ts)));
                    *o.get_mut() = Slot::Freed {
                        ts: freed,
                        paired: true,
                    };
                }
                // Too late to hold the address: a newer event there proves it freed.
                Slot::Live(_) | Slot::Freed { .. } => finish = Some((block, None)),
            },
        }
        if let Some((done, held)) = finish {
            self.finish(addr, done, held, temporary_ns);
        }
    }

    fn free(&mut self, addr: u64, ts: u64, temporary_ns: u64) {
        self.counts.frees += 1;
        let mut finish = None;
        match self.slots.entry(addr) {
            Entry::Vacant(v) => {
                v.insert(Slot::Freed { ts, paired: false });
            }
            Entry::Occupied(mut o) => match *o.get() {
                Slot::Live(b) if ts >= b.ts => {
                    finish = Some(b);
                    *o.get_mut() = Slot::Freed { ts, paired: true };
                }
                Slot::Freed { ts: old, paired } if ts >= old => {
                    if !paired {
                        self.counts.unknown_frees += 1;
                    }
                    *o.get_mut() = Slot::Freed { ts, paired: false };
                }
                // Too late to change who holds the address.
                Slot::Live(_) | Slot::Freed { .. } => {}
            },
        }
        if let Some(b) = finish {
            self.finish(addr, b, Some(ts - b.ts), temporary_ns);
        }
    }

    /// Counts a block whose life ended, `held_ns` after it was handed out (`None`:
    /// unknown).
    fn finish(&mut self, addr: u64, b: Live, held_ns: Option<u64>, temporary_ns: u64) {
        let placement = b.placement.or_else(|| self.placement_of(addr));
        let s = match placement {
            Some(_) => self
                .finished
                .entry(BlockSiteKey {
                    stack: b.stack,
                    placement,
                })
                .or_default(),
            None => self.unplaced.entry((b.stack, addr)).or_default(),
        };
        s.count(b.size);
        if held_ns.is_some_and(|h| h < temporary_ns) {
            s.temporary = s.temporary.saturating_add(1);
        }
        if let Some(h) = held_ns {
            let longest = self.longest_held.entry(b.stack).or_default();
            *longest = (*longest).max(h);
        }
    }

    /// Each stack that freed a block whose lifetime is known, with the longest such
    /// lifetime (nanoseconds).
    pub(crate) fn longest_held(&self) -> &FxHashMap<StackId, u64> {
        &self.longest_held
    }

    /// Calls `f` with the stack, hand-out time and size of every live block whose size is
    /// known.
    pub(crate) fn for_each_sized_live(&self, mut f: impl FnMut(StackId, u64, u64)) {
        for slot in self.slots.values() {
            if let Slot::Live(Live {
                stack,
                ts,
                size: Some(n),
                ..
            }) = slot
            {
                f(*stack, *ts, *n);
            }
        }
    }

    /// Forgets freed addresses older than `horizon`; those no allocation paired are
    /// unknown frees.
    fn sweep(&mut self, horizon: Horizon) {
        self.events_since_sweep = 0;
        let mut unknown = 0u64;
        self.slots.retain(|_, slot| match *slot {
            Slot::Live(_) => true,
            Slot::Freed { ts, paired } => {
                let old = horizon.is_old(ts);
                if old && !paired {
                    unknown += 1;
                }
                !old
            }
        });
        self.counts.unknown_frees += unknown;
    }

    /// Applies a reading (or one record of a split reading).
    pub(crate) fn state(&mut self, s: TorchState, horizon: Horizon) {
        if s.full {
            self.segments.clear();
        }
        for (_, addr) in &s.removed {
            self.segments.remove(&addr.0);
        }
        for mut seg in s.segments {
            seg.blocks.sort_by_key(|b| b.addr);
            self.segments.insert(seg.addr.0, seg);
        }
        for m in s.mempools {
            *self.mempools.entry(m.id).or_default() |= m.pluggable;
        }
        if s.continues {
            return;
        }
        self.mirror_ts = Some(s.ts);
        self.counts.readings += 1;
        self.settle(s.ts.0);
        let pools = figures(self.segments.values()).into_iter().collect();
        self.readings.push(TorchReading { ts: s.ts, pools });
        self.sweep(horizon);
    }

    /// Gives the live blocks handed out before `ts` that the mirror shows allocated their
    /// size and placement, places the freed blocks that waited for it, and samples every
    /// site's outstanding bytes for its peak.
    fn settle(&mut self, ts: u64) {
        for ((stack, addr), counts) in std::mem::take(&mut self.unplaced) {
            let key = BlockSiteKey {
                stack,
                placement: self.placement_of(addr),
            };
            add(self.finished.entry(key).or_default(), &counts);
        }
        for seg in self.segments.values() {
            let placement = Placement::of(seg);
            for b in seg
                .blocks
                .iter()
                .filter(|b| b.state == BlockState::Allocated)
            {
                if let Some(Slot::Live(live)) = self.slots.get_mut(&b.addr.0) {
                    if live.ts <= ts {
                        live.size = Some(b.size);
                        live.placement = Some(placement);
                    }
                }
            }
        }
        let mut now: FxHashMap<BlockSiteKey, u64> = FxHashMap::default();
        for (addr, slot) in &self.slots {
            if let Slot::Live(b) = slot {
                let key = BlockSiteKey {
                    stack: b.stack,
                    placement: b.placement.or_else(|| self.placement_of(*addr)),
                };
                let bytes = now.entry(key).or_default();
                *bytes = bytes.saturating_add(b.size.unwrap_or(0));
            }
        }
        for (key, bytes) in now.into_iter().filter(|(_, b)| *b > 0) {
            let peak = self.peaks.entry(key).or_default();
            *peak = (*peak).max(bytes);
        }
    }

    /// The placement of the segment holding `addr` in the mirror.
    pub fn placement_of(&self, addr: u64) -> Option<Placement> {
        self.segment_of(addr).map(Placement::of)
    }

    fn segment_of(&self, addr: u64) -> Option<&SegmentInfo> {
        let (_, seg) = self.segments.range(..=addr).next_back()?;
        (addr - seg.addr.0 < seg.size).then_some(seg)
    }

    /// The size of the block at `addr` if the mirror, taken at or after `ts`, shows it
    /// allocated.
    fn mirror_size(&self, addr: u64, ts: u64) -> Option<u64> {
        if self.mirror_ts.is_none_or(|m| m.0 < ts) {
            return None;
        }
        let seg = self.segment_of(addr)?;
        let i = seg.blocks.binary_search_by_key(&addr, |b| b.addr.0).ok()?;
        let b = &seg.blocks[i];
        (b.state == BlockState::Allocated).then_some(b.size)
    }

    /// Adds the bytes of every live block whose size is known to its stack's entry in
    /// `out` (the aging series sample this at each tick).
    pub fn outstanding_by_stack(&self, out: &mut FxHashMap<StackId, u64>) {
        self.for_each_sized_live(|stack, _, n| {
            let e = out.entry(stack).or_default();
            *e = e.saturating_add(n);
        });
    }

    /// Every block site with its statistics, live blocks included, sorted by key.
    pub fn block_sites(&self) -> Vec<(BlockSiteKey, BlockSiteStats)> {
        let mut sites = self.finished.clone();
        for ((stack, addr), counts) in &self.unplaced {
            let key = BlockSiteKey {
                stack: *stack,
                placement: self.placement_of(*addr),
            };
            add(sites.entry(key).or_default(), counts);
        }
        for (addr, slot) in &self.slots {
            let Slot::Live(b) = slot else { continue };
            let key = BlockSiteKey {
                stack: b.stack,
                placement: b.placement.or_else(|| self.placement_of(*addr)),
            };
            let s = sites.entry(key).or_default();
            s.count(b.size);
            s.outstanding_count = s.outstanding_count.saturating_add(1);
            match b.size {
                Some(n) => s.outstanding_bytes = s.outstanding_bytes.saturating_add(n),
                None => s.unsized_outstanding = s.unsized_outstanding.saturating_add(1),
            }
        }
        for (key, peak) in &self.peaks {
            if let Some(s) = sites.get_mut(key) {
                s.peak_bytes = s.peak_bytes.max(*peak);
            }
        }
        let mut out: Vec<_> = sites
            .into_iter()
            .map(|(k, mut s)| {
                s.peak_bytes = s.peak_bytes.max(s.outstanding_bytes);
                (k, s)
            })
            .collect();
        out.sort_unstable_by_key(|(k, _)| *k);
        out
    }

    /// The segments of the latest reading, by address.
    pub fn segments(&self) -> impl Iterator<Item = &SegmentInfo> {
        self.segments.values()
    }

    /// When the latest complete reading was taken.
    pub fn latest_reading(&self) -> Option<Timestamp> {
        self.mirror_ts
    }

    /// Whether `pool` is a `torch.cuda.MemPool` the program created, and if so whether it
    /// has an allocator of its own.
    pub fn mempool(&self, pool: TorchPoolId) -> Option<bool> {
        self.mempools.get(&pool).copied()
    }

    /// Every reading's figures (thinned evenly on long runs), oldest first.
    pub fn readings(&self) -> &Series<TorchReading> {
        &self.readings
    }

    /// Frees whose block was never seen, those still waiting for a late allocation
    /// included.
    pub fn unknown_frees(&self) -> u64 {
        let waiting = self
            .slots
            .values()
            .filter(|s| matches!(s, Slot::Freed { paired: false, .. }))
            .count() as u64;
        self.counts.unknown_frees.saturating_add(waiting)
    }

    /// Blocks the latest reading shows allocated that no tracked allocation holds (handed
    /// out before tracking began, or their event was lost): (blocks, bytes).
    pub fn untracked(&self) -> (u64, u64) {
        let Some(at) = self.mirror_ts else {
            return (0, 0);
        };
        let mut out = (0u64, 0u64);
        for seg in self.segments.values() {
            for b in seg
                .blocks
                .iter()
                .filter(|b| b.state == BlockState::Allocated)
            {
                let tracked = matches!(
                    self.slots.get(&b.addr.0),
                    Some(Slot::Live(l)) if l.ts <= at.0
                );
                if !tracked {
                    out.0 += 1;
                    out.1 = out.1.saturating_add(b.size);
                }
            }
        }
        out
    }
}

/// Adds the counts of freed blocks `b` to `a` (peaks are sampled separately).
fn add(a: &mut BlockSiteStats, b: &BlockSiteStats) {
    a.allocations = a.allocations.saturating_add(b.allocations);
    a.allocated_bytes = a.allocated_bytes.saturating_add(b.allocated_bytes);
    a.temporary = a.temporary.saturating_add(b.temporary);
    a.unsized_allocations = a.unsized_allocations.saturating_add(b.unsized_allocations);
}

#[cfg(test)]
#[path = "torch_tests.rs"]
mod tests;
