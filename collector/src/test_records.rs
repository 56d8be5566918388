//! Stream records for unit tests: host allocations and frees on thread 1, built one way
//! for every test module that feeds a state; and the small deterministic generator the
//! randomized ones draw from.

use leakscope_protocol::{
    Alloc, Api, Free, MemoryKind, Record, RuntimeAddr, StackId, ThreadId, Timestamp,
};

/// An allocation of `size` bytes of `kind` at `addr` from `stack` (api `mmap` for mapped
/// memory, `malloc` otherwise).
pub fn alloc_kind(ts: u64, addr: u64, size: u64, stack: u32, kind: MemoryKind) -> Record {
    Record::Alloc(Alloc {
        ts: Timestamp(ts),
        thread: ThreadId(1),
        addr: RuntimeAddr(addr),
        size,
        kind,
        api: if kind == MemoryKind::Mapped {
            Api::Mmap
        } else {
            Api::Malloc
        },
        stack: StackId(stack),
    })
}

/// A `malloc` of `size` bytes at `addr` from `stack`.
pub fn alloc(ts: u64, addr: u64, size: u64, stack: u32) -> Record {
    alloc_kind(ts, addr, size, stack, MemoryKind::Host)
}

/// A `free` of the C heap block at `addr`.
pub fn free(ts: u64, addr: u64) -> Record {
    Record::Free(Free {
        ts: Timestamp(ts),
        thread: ThreadId(1),
        addr: RuntimeAddr(addr),
        len: 0,
        kind: MemoryKind::Host,
        api: Api::Free,
    })
}

/// xorshift64: a tiny deterministic generator for the randomized tests (seed it non-zero).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
