//! The C API of PyTorch block tracking, for the `leakscope_torch` helper that `leakscope
//! run` injects into Python programs (`collector/python/`). The helper finds these symbols
//! with ctypes in its own process (they exist only where the shim is loaded) and:
//!
//! - registers [`leakscope_torch_block_alloc`] / [`leakscope_torch_block_free`] themselves
//!   as PyTorch's GPU-trace memory callbacks: the caching allocator calls them with each
//!   block's address on the allocating thread, GIL held, and they record a `TorchBlock`
//!   with the calling thread's stack (no Python frame of the helper's in between);
//! - hands over the allocator's snapshot at an interval and at exit through
//!   [`leakscope_torch_state`], as arrays of the `#[repr(C)]` structs below (mirrored by
//!   `ctypes.Structure`s in the helper; [`leakscope_torch_api`] tells it their sizes).
//!   `readings.rs` turns them into `TorchState` records holding changes only.
//!
//! Nothing here panics or blocks: a bad argument, a busy or inactive session, or memory
//! exhaustion make a call return a non-zero status and record nothing.

mod readings;

use crate::record::Guard;
use readings::Reading;

/// The layout version of the structs below; the helper refuses any other.
pub const API_VERSION: u32 = 1;

/// One segment of the allocator's snapshot; its blocks are `blocks[first_block ..
/// first_block + block_count]` of the same call.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LsSegment {
    pub device: i64,
    pub address: u64,
    pub total_size: u64,
    /// The CUDA stream's handle value.
    pub stream: u64,
    /// `segment_pool_id`, PyTorch's `MempoolId_t` pair.
    pub pool_a: u64,
    pub pool_b: u64,
    /// Non-zero for an expandable segment.
    pub expandable: u64,
    pub first_block: u64,
    pub block_count: u64,
}

/// One block of a segment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LsBlock {
    pub address: u64,
    pub size: u64,
    pub requested_size: u64,
    /// [`BLOCK_ALLOCATED`], [`BLOCK_AWAITING_FREE`] or [`BLOCK_INACTIVE`].
    pub state: u64,
}

/// `active_allocated`: in use by a tensor.
pub const BLOCK_ALLOCATED: u64 = 0;
/// `active_pending_free` / `active_awaiting_free`: freed, waiting for other streams.
pub const BLOCK_AWAITING_FREE: u64 = 1;
/// `inactive`: cached, free.
pub const BLOCK_INACTIVE: u64 = 2;

/// A `torch.cuda.MemPool` the program created.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LsMemPool {
    pub id_a: u64,
    pub id_b: u64,
    /// Non-zero when created with an allocator of its own.
    pub pluggable: u64,
}

/// Status codes of [`leakscope_torch_state`].
pub const STATE_OK: i32 = 0;
/// No session records (no collector, or the process is exiting).
pub const STATE_NOT_RECORDING: i32 = 1;
/// A null pointer with a non-zero count, or a segment's blocks outside the array.
pub const STATE_BAD_ARGUMENTS: i32 = 2;
/// Another reading is being taken right now.
pub const STATE_BUSY: i32 = 3;
/// The side queue was full or memory ran out: this reading was dropped (the next one is a
/// full listing).
pub const STATE_DROPPED: i32 = 4;

/// The API version; writes the sizes of [`LsSegment`], [`LsBlock`] and [`LsMemPool`] to
/// `sizes[0..3]` (as many as `n` allows).
///
/// # Safety
/// `sizes` is null or valid for `n` writes of `u64`.
#[no_mangle]
pub unsafe extern "C" fn leakscope_torch_api(sizes: *mut u64, n: usize) -> u32 {
    let all = [
        std::mem::size_of::<LsSegment>() as u64,
        std::mem::size_of::<LsBlock>() as u64,
        std::mem::size_of::<LsMemPool>() as u64,
    ];
    if !sizes.is_null() {
        for (i, v) in all.iter().enumerate().take(n) {
            // SAFETY: the caller guarantees `n` writable slots; `i < n`.
            unsafe { sizes.add(i).write(*v) };
        }
    }
    API_VERSION
}

/// A block handed to a tensor (PyTorch's memory-allocation trace callback).
#[no_mangle]
pub extern "C" fn leakscope_torch_block_alloc(addr: u64) {
    if let Some(g) = Guard::enter() {
        g.torch_block(addr, true);
    }
}

/// A block given back by its tensor (PyTorch's memory-deallocation trace callback).
#[no_mangle]
pub extern "C" fn leakscope_torch_block_free(addr: u64) {
    if let Some(g) = Guard::enter() {
        g.torch_block(addr, false);
    }
}

/// The shim's clock, for [`leakscope_torch_state`]'s `ts`.
#[no_mangle]
pub extern "C" fn leakscope_torch_clock() -> u64 {
    crate::side::now()
}

/// Takes one reading of the allocator: every segment with its blocks, and every
/// `MemPool` the program created; `ts` is [`leakscope_torch_clock`] read just before the
/// helper asked PyTorch for the snapshot (a block handed out after it may be missing from
/// the snapshot, one handed out before it is in it). Returns a `STATE_*` status.
///
/// # Safety
/// Each pointer is null with a zero count, or valid for reading its count of elements for
/// the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn leakscope_torch_state(
    ts: u64,
    segments: *const LsSegment,
    n_segments: usize,
    blocks: *const LsBlock,
    n_blocks: usize,
    mempools: *const LsMemPool,
    n_mempools: usize,
) -> i32 {
    let Some(_guard) = Guard::enter() else {
        return STATE_NOT_RECORDING;
    };
    // SAFETY: the caller's contract, passed on.
    let (Some(segments), Some(blocks), Some(mempools)) = (unsafe {
        (
            slice(segments, n_segments),
            slice(blocks, n_blocks),
            slice(mempools, n_mempools),
        )
    }) else {
        return STATE_BAD_ARGUMENTS;
    };
    let reading = Reading {
        segments,
        blocks,
        mempools,
    };
    readings::submit(&reading, ts)
}

/// `ptr[..n]`, or `None` for a null pointer with a non-zero count.
///
/// # Safety
/// A non-null `ptr` is valid for reading `n` elements while the slice is used.
unsafe fn slice<'a, T>(ptr: *const T, n: usize) -> Option<&'a [T]> {
    if n == 0 {
        Some(&[])
    } else if ptr.is_null() {
        None
    } else {
        // SAFETY: the caller's contract.
        Some(unsafe { std::slice::from_raw_parts(ptr, n) })
    }
}
