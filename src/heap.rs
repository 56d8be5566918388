//! Host heap readings: the C allocator's own view of its arenas (glibc `malloc_info`),
//! beside the process's resident memory, taken at a fixed interval so a report can show
//! memory that was freed but never returned to the system.

use crate::ids::Timestamp;
use bincode::{Decode, Encode};

/// One glibc arena (the main arena is index 0).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize,
)]
pub struct ArenaReading {
    /// Bytes the arena holds from the system (`<system type="current">`).
    pub system: u64,
    /// Bytes in free chunks: fast bins and regular bins, including the releasable top.
    pub free: u64,
    /// Free chunks, all bins (a count, for "many small holes").
    pub free_chunks: u64,
    /// Of `free`, the bytes in fast bins (never coalesced until consolidation).
    pub fastbin: u64,
    /// Of `free`, the top chunk: the free end of the arena, which trimming can give back
    /// to the system. The rest of `free` lies in holes between chunks in use.
    pub top: u64,
}

impl ArenaReading {
    /// Free bytes in holes between chunks in use (everything free but the top chunk):
    /// memory the allocator keeps and cannot return while its neighbours live.
    pub fn holes(&self) -> u64 {
        self.free.saturating_sub(self.top)
    }
}

/// The host heap and the process's memory at one moment.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize,
)]
pub struct HeapReading {
    pub ts: Timestamp,
    /// Resident set size (`/proc/self/statm`), bytes.
    pub rss: u64,
    /// Unique set size: private clean + private dirty (`/proc/self/smaps_rollup`); 0
    /// where the kernel does not provide it.
    pub uss: u64,
    /// The glibc arenas; empty when the C library is not glibc or would not say.
    pub arenas: Vec<ArenaReading>,
    /// Chunks served by their own `mmap` (above the mmap threshold): count and bytes.
    pub mmap_chunks: u64,
    pub mmap_bytes: u64,
}
