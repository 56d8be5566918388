//! GPU records: allocations through the CUDA runtime and driver (with the device they live
//! on), the state of stream-ordered pools, and CUDA-graph capture windows. GPU frees are
//! ordinary [`crate::Free`] records; their api says which address space they name.

use crate::api::Api;
use crate::event::MemoryKind;
use crate::ids::{DeviceOrdinal, PoolHandle, RuntimeAddr, StackId, ThreadId, Timestamp};
use bincode::{Decode, Encode};

/// What a GPU record's address names. Each space is its own namespace: a handle value may
/// equal a device pointer.
#[derive(
    Clone,
    Copy,
    Debug,
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
pub enum GpuSpace {
    /// A pointer to memory the call allocated (device, pinned or managed).
    Pointer,
    /// A physical allocation handle (`cuMemCreate`, imported or retained handles).
    Handle,
    /// A range of reserved virtual addresses (`cuMemAddressReserve`): no memory by itself.
    Reservation,
    /// A handle mapped into reserved addresses (`cuMemMap`): the memory is the handle's.
    Mapping,
    /// Host memory page-locked in place (`cudaHostRegister`): the memory belongs to the
    /// allocator that made it.
    Registration,
    /// A stream-ordered pool (`cudaMemPoolCreate`), reported by [`PoolEvent`].
    Pool,
}

impl GpuSpace {
    /// The lower-case name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            GpuSpace::Pointer => "pointer",
            GpuSpace::Handle => "handle",
            GpuSpace::Reservation => "reservation",
            GpuSpace::Mapping => "mapping",
            GpuSpace::Registration => "registration",
            GpuSpace::Pool => "pool",
        }
    }
}

/// Memory (or address space) handed out by a CUDA call. Its space is `api.space()`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize,
)]
pub struct GpuAlloc {
    pub ts: Timestamp,
    pub thread: ThreadId,
    /// The pointer, handle or range start, per `api.space()`.
    pub addr: RuntimeAddr,
    /// Bytes asked for (for pitched and 3-D allocations, the bytes allocated).
    pub size: u64,
    /// [`MemoryKind::Device`], [`MemoryKind::Pinned`] or [`MemoryKind::Managed`].
    pub kind: MemoryKind,
    pub api: Api,
    pub stack: StackId,
    /// The device the memory lives on; `None` for host memory and where it is unknown.
    pub device: Option<DeviceOrdinal>,
}

/// What happened to a stream-ordered pool.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize,
)]
pub enum PoolAction {
    Created,
    Destroyed,
    /// `cudaMemPoolTrimTo`: the pool gave cached memory back.
    Trimmed,
    /// A reading after allocations or frees from the pool.
    Sampled,
}

/// A stream-ordered pool's state after `action`: what it holds from the device
/// (`reserved`) and what of that is handed out (`used`). Both are zero where the driver
/// could not be asked.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize,
)]
pub struct PoolEvent {
    pub ts: Timestamp,
    pub thread: ThreadId,
    pub pool: PoolHandle,
    pub device: Option<DeviceOrdinal>,
    pub action: PoolAction,
    pub reserved: u64,
    pub used: u64,
}

/// A CUDA-graph capture beginning or ending on a thread (`cudaStreamBeginCapture`,
/// `cudaStreamEndCapture`). Allocations a caching allocator makes on that thread in
/// between serve the graph's private pool.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize,
)]
pub struct Capture {
    pub ts: Timestamp,
    pub thread: ThreadId,
    pub begin: bool,
}
