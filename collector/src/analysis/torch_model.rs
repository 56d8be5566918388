//! The report model of PyTorch's CUDA caching allocator: the `gpu.torch` section of the JSON
//! contract (docs/gpu.md, "PyTorch blocks"). Block sites themselves are ordinary sites
//! (`space: "block"`, not owned); this section holds the allocator's figures per device and
//! pool, at the newest reading and over time, and the block counts.

use serde::Serialize;

/// PyTorch's caching allocator in one process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TorchReport {
    /// Complete readings of the allocator that came (at `--interval` and at exit); the
    /// series hold fewer on long runs (thinned evenly, the first and the newest kept).
    pub readings: u64,
    /// Nanoseconds from the first reading kept to the newest.
    pub span_ns: u64,
    pub blocks: TorchBlocks,
    /// Per device, its pools summed (the largest free block is the largest of any pool).
    pub devices: Vec<TorchDevice>,
    /// Per device and pool, most reserved first.
    pub pools: Vec<TorchPool>,
}

/// Block counts over the process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TorchBlocks {
    /// Blocks handed to tensors, and given back, as the allocator's callbacks said.
    pub allocations: u64,
    pub frees: u64,
    /// Blocks held at the end, and the bytes of those whose size a reading showed.
    pub live_blocks: u64,
    pub live_bytes: u64,
    /// Live blocks no reading showed (handed out after the last one): not in `live_bytes`.
    pub unsized_live_blocks: u64,
    /// Blocks the newest reading shows allocated that no tracked allocation holds (handed
    /// out before tracking began, or their event was lost).
    pub untracked_blocks: u64,
    pub untracked_bytes: u64,
    /// Frees of blocks never seen handed out.
    pub unknown_frees: u64,
}

/// One device's pools summed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TorchDevice {
    pub device: u32,
    pub latest: TorchFigures,
    /// One point per reading kept, oldest first.
    pub series: Vec<TorchFigures>,
}

/// One pool of one device.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TorchPool {
    pub device: u32,
    /// `pytorch-caching` (the default pool), `pytorch-expandable` (its expandable
    /// segments), `pytorch-graph-pool` (a CUDA graph's private pool),
    /// `pytorch-mempool` / `pytorch-mempool-pluggable` (a `torch.cuda.MemPool`, with the
    /// caching allocator's `cudaMalloc` or with an allocator of its own).
    pub pool: String,
    /// PyTorch's `MempoolId_t` (`segment_pool_id`).
    pub pool_id: [u64; 2],
    pub expandable: bool,
    /// The CUDA streams its segments serve at the newest reading (handle values, hex).
    pub streams: Vec<String>,
    pub latest: TorchFigures,
    /// One point per reading kept, oldest first (zeros while the pool had no segment).
    pub series: Vec<TorchFigures>,
}

/// A pool's (or device's) figures at one reading; the names in brackets are PyTorch's
/// `memory_stats()` keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TorchFigures {
    /// Nanoseconds since the process's stream started.
    pub at_ns: u64,
    /// Bytes of segments (`reserved_bytes`, `memory_reserved()`).
    pub reserved_bytes: u64,
    /// Bytes of blocks held by tensors (`allocated_bytes`, `memory_allocated()`).
    pub allocated_bytes: u64,
    /// What those tensors asked for, before rounding (`requested_bytes`).
    pub requested_bytes: u64,
    /// Blocks freed by their tensors, waiting for other streams to finish with them.
    pub awaiting_free_bytes: u64,
    /// Segments (`segment`).
    pub segments: u64,
    /// Blocks held by tensors (`allocation`).
    pub allocated_blocks: u64,
    /// Free (inactive) bytes: reserved, held by no tensor.
    pub free_bytes: u64,
    pub free_blocks: u64,
    /// The largest free block: the largest request served without a new segment.
    pub largest_free_bytes: u64,
    /// External fragmentation, `1 - largest_free_bytes / free_bytes`, per mille (rounded
    /// down; 0 without free bytes).
    pub external_fragmentation_permille: u32,
    /// Free bytes in segments split into several blocks (`inactive_split_bytes`), which
    /// `empty_cache()` cannot give back.
    pub inactive_split_bytes: u64,
}

/// One reading of a stream-ordered pool (`cudaMallocAsync`): reserved against used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StreamPoolPoint {
    /// Nanoseconds since the process's stream started.
    pub at_ns: u64,
    pub reserved_bytes: u64,
    pub used_bytes: u64,
}

/// A made-up section for the renderers' tests: one device, a default pool that fragmented
/// over two readings and a graph pool.
#[cfg(test)]
pub fn sample() -> TorchReport {
    const MIB: u64 = 1 << 20;
    let figures =
        |at_ns, reserved_bytes, allocated_bytes, free_bytes, largest_free_bytes| TorchFigures {
            at_ns,
            reserved_bytes,
            allocated_bytes,
            requested_bytes: allocated_bytes - 1000,
            awaiting_free_bytes: 0,
            segments: reserved_bytes / (20 * MIB),
            allocated_blocks: 7,
            free_bytes,
            free_blocks: 3,
            largest_free_bytes,
            external_fragmentation_permille: crate::analysis::torch_report::fragmentation_permille(
                largest_free_bytes,
                free_bytes,
            ),
            inactive_split_bytes: free_bytes / 2,
        };
    let early = figures(1_000_000_000, 40 * MIB, 30 * MIB, 10 * MIB, 8 * MIB);
    let late = figures(3_000_000_000, 100 * MIB, 40 * MIB, 60 * MIB, 6 * MIB);
    let graph = figures(3_000_000_000, 20 * MIB, 20 * MIB, 0, 0);
    let zero = TorchFigures {
        at_ns: 1_000_000_000,
        ..TorchFigures::default()
    };
    let mut device = late;
    device.reserved_bytes += graph.reserved_bytes;
    device.allocated_bytes += graph.allocated_bytes;
    device.requested_bytes += graph.requested_bytes;
    device.segments += graph.segments;
    device.allocated_blocks += graph.allocated_blocks;
    TorchReport {
        readings: 2,
        span_ns: 2_000_000_000,
        blocks: TorchBlocks {
            allocations: 120,
            frees: 100,
            live_blocks: 20,
            live_bytes: 60 * MIB,
            unsized_live_blocks: 1,
            untracked_blocks: 0,
            untracked_bytes: 0,
            unknown_frees: 0,
        },
        devices: vec![TorchDevice {
            device: 0,
            latest: device,
            series: vec![early, device],
        }],
        pools: vec![
            TorchPool {
                device: 0,
                pool: "pytorch-caching".to_owned(),
                pool_id: [0, 0],
                expandable: false,
                streams: vec!["0x0".to_owned()],
                latest: late,
                series: vec![early, late],
            },
            TorchPool {
                device: 0,
                pool: "pytorch-graph-pool".to_owned(),
                pool_id: [1, 0],
                expandable: false,
                streams: vec!["0x5a5a0000".to_owned()],
                latest: graph,
                series: vec![zero, graph],
            },
        ],
    }
}
