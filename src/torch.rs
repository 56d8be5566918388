//! PyTorch caching-allocator records: blocks (what a tensor holds) as the allocator hands
//! them out and takes them back, and the allocator's segments and their blocks as it
//! reports them at an interval. A segment is the memory one `cudaMalloc` (or one
//! expandable mapping) gave the allocator; its blocks are carved out of it, so block bytes
//! are never added to device totals.

use crate::ids::{DeviceOrdinal, RuntimeAddr, StackId, ThreadId, Timestamp};
use bincode::{Decode, Encode};

/// A block handed to a tensor (`alloc`) or given back by it, with the allocating stack.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize,
)]
pub struct TorchBlock {
    pub ts: Timestamp,
    pub thread: ThreadId,
    pub addr: RuntimeAddr,
    /// True for an allocation, false for a free (then `stack` is meaningless).
    pub alloc: bool,
    pub stack: StackId,
}

/// A caching-allocator pool: PyTorch's `MempoolId_t` pair. `(0, 0)` is the default pool.
/// Other ids come from two counters (`c10::cuda::MemPool`): a private pool that a CUDA-graph
/// capture creates for itself is `(n, 0)`; a user-created id is `(0, n)`, which is either a
/// `torch.cuda.MemPool` or a pool handle for graphs (`torch.cuda.graph_pool_handle()`);
/// [`TorchState::mempools`] tells those apart.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Encode,
    Decode,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct TorchPoolId(pub u64, pub u64);

/// What a block is doing, as the allocator says.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode, serde::Serialize, serde::Deserialize,
)]
pub enum BlockState {
    /// In use by a tensor.
    Allocated,
    /// Freed by its tensor, waiting for other streams that used it.
    AwaitingFree,
    /// Cached, free for reuse.
    Inactive,
}

/// One block of a segment, in a [`TorchState`].
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize,
)]
pub struct BlockInfo {
    pub addr: RuntimeAddr,
    pub size: u64,
    /// The size the caller asked for (before rounding); 0 for inactive blocks.
    pub requested: u64,
    pub state: BlockState,
}

/// One segment and all its blocks.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize)]
pub struct SegmentInfo {
    pub device: DeviceOrdinal,
    pub addr: RuntimeAddr,
    pub size: u64,
    /// The CUDA stream the segment serves (its handle value).
    pub stream: u64,
    pub pool: TorchPoolId,
    /// Part of an expandable segment (`expandable_segments:True`).
    pub expandable: bool,
    pub blocks: Vec<BlockInfo>,
}

/// The allocator's segments at `ts`, as a change from the previous `TorchState` of the
/// stream (`full`: a complete listing that replaces everything known before).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize)]
pub struct TorchState {
    pub ts: Timestamp,
    pub full: bool,
    /// Segments that are new or changed since the previous state, with all their blocks.
    pub segments: Vec<SegmentInfo>,
    /// Start addresses (with their device) of segments gone since the previous state.
    pub removed: Vec<(DeviceOrdinal, RuntimeAddr)>,
    /// Every `torch.cuda.MemPool` the program has created so far (a complete list each
    /// time): user-created pool ids not listed are CUDA-graph pools.
    pub mempools: Vec<MemPoolInfo>,
    /// More records of the same reading follow (a large reading is split into several
    /// records with the same `ts`; only the first of a full listing has `full`).
    pub continues: bool,
}

/// A `torch.cuda.MemPool` the program created.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode, serde::Serialize, serde::Deserialize,
)]
pub struct MemPoolInfo {
    pub id: TorchPoolId,
    /// Created with an allocator of its own (`CUDAPluggableAllocator`, as vLLM's); otherwise
    /// its segments come from the caching allocator's `cudaMalloc`.
    pub pluggable: bool,
}
