//! The figures of PyTorch's caching allocator per device and pool, summed over its segments
//! as one reading shows them: what the allocator reserved, what its blocks hold, and how
//! its free space is cut up (PyTorch's `memory_stats()` names in brackets).

use leakscope_protocol::torch::{BlockState, SegmentInfo, TorchPoolId};
use leakscope_protocol::DeviceOrdinal;
use std::collections::BTreeMap;

/// A pool on one device. The default pool's expandable segments (`expandable_segments:True`)
/// are kept apart from its ordinary ones (the setting is process-wide, so in practice a
/// pool has one kind).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct PoolKey {
    pub device: DeviceOrdinal,
    pub pool: TorchPoolId,
    pub expandable: bool,
}

impl PoolKey {
    /// The pool of `segment`.
    pub fn of(segment: &SegmentInfo) -> PoolKey {
        PoolKey {
            device: segment.device,
            pool: segment.pool,
            expandable: segment.expandable,
        }
    }
}

/// One pool's figures at one reading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PoolFigures {
    /// Bytes of its segments (`reserved_bytes`).
    pub reserved: u64,
    /// Bytes of blocks held by tensors (`allocated_bytes`).
    pub allocated: u64,
    /// Bytes those tensors asked for, before rounding (`requested_bytes`).
    pub requested: u64,
    /// Bytes of blocks freed by their tensors and waiting for other streams (`active_bytes`
    /// minus `allocated_bytes`).
    pub awaiting_free: u64,
    /// Segments (`segment`).
    pub segments: u64,
    /// Blocks held by tensors (`allocation`).
    pub allocated_blocks: u64,
    /// Bytes of free (inactive) blocks: reserved, not in use.
    pub free: u64,
    /// Free blocks.
    pub free_blocks: u64,
    /// The largest free block: the largest request the pool serves without a new segment.
    pub largest_free: u64,
    /// Bytes of free blocks in segments split into more than one block
    /// (`inactive_split_bytes`): free space that `empty_cache()` cannot give back.
    pub inactive_split: u64,
}

impl PoolFigures {
    /// Adds `segment` (of this pool).
    pub fn add(&mut self, segment: &SegmentInfo) {
        self.reserved = self.reserved.saturating_add(segment.size);
        self.segments += 1;
        let split = segment.blocks.len() > 1;
        for b in &segment.blocks {
            match b.state {
                BlockState::Allocated => {
                    self.allocated = self.allocated.saturating_add(b.size);
                    self.requested = self.requested.saturating_add(b.requested);
                    self.allocated_blocks += 1;
                }
                BlockState::AwaitingFree => {
                    self.awaiting_free = self.awaiting_free.saturating_add(b.size);
                }
                BlockState::Inactive => {
                    self.free = self.free.saturating_add(b.size);
                    self.free_blocks += 1;
                    self.largest_free = self.largest_free.max(b.size);
                    if split {
                        self.inactive_split = self.inactive_split.saturating_add(b.size);
                    }
                }
            }
        }
    }

    /// Adds another pool's figures (for totals; the largest free block is the larger one).
    pub fn merge(&mut self, o: &PoolFigures) {
        self.reserved = self.reserved.saturating_add(o.reserved);
        self.allocated = self.allocated.saturating_add(o.allocated);
        self.requested = self.requested.saturating_add(o.requested);
        self.awaiting_free = self.awaiting_free.saturating_add(o.awaiting_free);
        self.segments = self.segments.saturating_add(o.segments);
        self.allocated_blocks = self.allocated_blocks.saturating_add(o.allocated_blocks);
        self.free = self.free.saturating_add(o.free);
        self.free_blocks = self.free_blocks.saturating_add(o.free_blocks);
        self.largest_free = self.largest_free.max(o.largest_free);
        self.inactive_split = self.inactive_split.saturating_add(o.inactive_split);
    }
}

/// The figures of every pool the segments belong to.
pub fn figures<'a>(
    segments: impl IntoIterator<Item = &'a SegmentInfo>,
) -> BTreeMap<PoolKey, PoolFigures> {
    let mut out: BTreeMap<PoolKey, PoolFigures> = BTreeMap::new();
    for s in segments {
        out.entry(PoolKey::of(s)).or_default().add(s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use leakscope_protocol::torch::BlockInfo;
    use leakscope_protocol::RuntimeAddr;

    fn block(addr: u64, size: u64, state: BlockState) -> BlockInfo {
        BlockInfo {
            addr: RuntimeAddr(addr),
            size,
            requested: if state == BlockState::Allocated {
                size - 3
            } else {
                0
            },
            state,
        }
    }

    fn segment(addr: u64, pool: TorchPoolId, blocks: Vec<BlockInfo>) -> SegmentInfo {
        SegmentInfo {
            device: DeviceOrdinal(0),
            addr: RuntimeAddr(addr),
            size: blocks.iter().map(|b| b.size).sum(),
            stream: 0,
            pool,
            expandable: false,
            blocks,
        }
    }

    #[test]
    fn sums_per_pool_with_split_free_space() {
        use BlockState::*;
        let default = TorchPoolId(0, 0);
        let graph = TorchPoolId(1, 0);
        let segs = [
            // Split: 1000 allocated, 3000 free, 500 awaiting, 2000 free.
            segment(
                0x10000,
                default,
                vec![
                    block(0x10000, 1000, Allocated),
                    block(0x10400, 3000, Inactive),
                    block(0x11000, 500, AwaitingFree),
                    block(0x11200, 2000, Inactive),
                ],
            ),
            // Whole and free: not split.
            segment(0x20000, default, vec![block(0x20000, 8000, Inactive)]),
            segment(0x30000, graph, vec![block(0x30000, 4096, Allocated)]),
        ];
        let f = figures(&segs);
        let key = |pool| PoolKey {
            device: DeviceOrdinal(0),
            pool,
            expandable: false,
        };
        let d = f[&key(default)];
        assert_eq!(d.reserved, 14500);
        assert_eq!(
            (d.allocated, d.requested, d.allocated_blocks),
            (1000, 997, 1)
        );
        assert_eq!(d.awaiting_free, 500);
        assert_eq!(d.segments, 2);
        assert_eq!((d.free, d.free_blocks, d.largest_free), (13000, 3, 8000));
        assert_eq!(d.inactive_split, 5000);
        let g = f[&key(graph)];
        assert_eq!(
            (g.reserved, g.allocated, g.free, g.segments),
            (4096, 4096, 0, 1)
        );
        let mut total = d;
        total.merge(&g);
        assert_eq!(
            (total.reserved, total.allocated, total.largest_free),
            (18596, 5096, 8000)
        );
    }
}
