//! Raw events and the batches that carry them from a hooking thread to the sender thread:
//! small fixed-size structs appended without allocation, plus a frame area for the stacks
//! that the batch defines and a byte area for the Python code objects it defines.

use leakscope_protocol::{Api, MemoryKind, PoolAction};

/// The `device` of an event whose memory lives on no device, or on an unknown one.
pub const NO_DEVICE: u8 = u8::MAX;

/// Events a batch holds.
pub const EVENT_CAP: usize = 4096;
/// Stack frames a batch holds (its stack definitions' frames, back to back).
pub const FRAME_CAP: usize = 8192;
/// Bytes of Python code definitions a batch holds (back to back).
pub const BYTE_CAP: usize = 128 * 1024;

/// One event as a hooking thread records it. Timestamps are raw clock readings
/// (`record::clock`); the sender converts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawEvent {
    Alloc {
        tid: u32,
        kind: MemoryKind,
        api: Api,
        /// CUDA device ordinal for GPU apis, [`NO_DEVICE`] otherwise.
        device: u8,
        addr: u64,
        size: u64,
        /// Hash of the stack, defined by an earlier `Stack` event of the same thread.
        stack: u64,
        ts: u64,
    },
    Free {
        tid: u32,
        kind: MemoryKind,
        api: Api,
        addr: u64,
        len: u64,
        ts: u64,
    },
    /// Defines the stack `hash`: `len` native frames at `first` in this batch's frame
    /// area, followed there by `py` words of Python frames (`crate::python`'s format).
    Stack {
        hash: u64,
        first: u32,
        len: u32,
        py: u32,
    },
    /// Defines the Python code object `key`: `len` bytes at `first` in this batch's byte
    /// area (`python::code`'s format).
    Code {
        key: u64,
        first: u32,
        len: u32,
    },
    Fork {
        tid: u32,
        child: u32,
        ts: u64,
    },
    /// A stream-ordered pool's state after `action`.
    Pool {
        tid: u32,
        device: u8,
        action: PoolAction,
        pool: u64,
        reserved: u64,
        used: u64,
        ts: u64,
    },
    /// A CUDA-graph capture beginning or ending on thread `tid`.
    Capture {
        tid: u32,
        begin: bool,
        ts: u64,
    },
    /// A PyTorch caching-allocator block handed out (`alloc`, with the stack) or taken
    /// back, as the shim's C API was told.
    TorchBlock {
        tid: u32,
        alloc: bool,
        addr: u64,
        stack: u64,
        ts: u64,
    },
}

const _: () = assert!(std::mem::size_of::<RawEvent>() <= 40);
const _: () =
    assert!(FRAME_CAP >= 4 * (crate::env::MAX_FRAMES_LIMIT + crate::python::PY_WORDS_MAX));
// Any one code definition fits in an empty batch.
const _: () = assert!(BYTE_CAP >= crate::python::code::MAX_DEF);

/// What dropping a batch loses, for the `Dropped` counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Loss {
    pub allocs: u64,
    pub alloc_bytes: u64,
    pub frees: u64,
}

impl Loss {
    /// What dropping `e` loses (nothing for stack and code definitions, forks, pool
    /// readings, capture marks and PyTorch blocks, which hold no memory of their own).
    pub fn of(e: &RawEvent) -> Loss {
        match *e {
            RawEvent::Alloc { size, .. } => Loss {
                allocs: 1,
                alloc_bytes: size,
                frees: 0,
            },
            RawEvent::Free { .. } => Loss {
                allocs: 0,
                alloc_bytes: 0,
                frees: 1,
            },
            RawEvent::Stack { .. }
            | RawEvent::Code { .. }
            | RawEvent::Fork { .. }
            | RawEvent::Pool { .. }
            | RawEvent::Capture { .. }
            | RawEvent::TorchBlock { .. } => Loss::default(),
        }
    }

    /// Adds `other` to these counts.
    pub fn add(&mut self, other: Loss) {
        self.allocs += other.allocs;
        self.alloc_bytes += other.alloc_bytes;
        self.frees += other.frees;
    }
}

/// A fixed-capacity run of events. Never grows: callers check [`Batch::has_room`] first.
pub struct Batch {
    events: Vec<RawEvent>,
    frames: Vec<u64>,
    bytes: Vec<u8>,
}

impl Batch {
    /// An empty batch, or `None` when memory is exhausted (the shim must not abort the
    /// program where its own allocation would have failed gracefully).
    pub fn try_new() -> Option<Box<Batch>> {
        let mut events = Vec::new();
        events.try_reserve_exact(EVENT_CAP).ok()?;
        let mut frames = Vec::new();
        frames.try_reserve_exact(FRAME_CAP).ok()?;
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(BYTE_CAP).ok()?;
        crate::alloc::try_box(Batch {
            events,
            frames,
            bytes,
        })
    }

    /// Whether `events` more events and `frames` more frames fit.
    #[inline]
    pub fn has_room(&self, events: usize, frames: usize) -> bool {
        self.events.len() + events <= EVENT_CAP && self.frames.len() + frames <= FRAME_CAP
    }

    /// Whether one more event with `bytes` more bytes of definition fits.
    #[inline]
    pub fn has_room_bytes(&self, bytes: usize) -> bool {
        self.events.len() < EVENT_CAP && self.bytes.len() + bytes <= BYTE_CAP
    }

    /// Appends an event; the caller checked `has_room(1, 0)`.
    #[inline]
    pub fn push(&mut self, e: RawEvent) {
        debug_assert!(self.has_room(1, 0));
        self.events.push(e);
    }

    /// Appends a stack definition: `frames` holds the native frames, then `py` words of
    /// Python frames; the caller checked `has_room(1, frames.len())`.
    #[inline]
    pub fn push_stack(&mut self, hash: u64, frames: &[u64], py: usize) {
        debug_assert!(self.has_room(1, frames.len()) && py <= frames.len());
        let first = self.frames.len() as u32;
        self.frames.extend_from_slice(frames);
        self.events.push(RawEvent::Stack {
            hash,
            first,
            len: (frames.len() - py) as u32,
            py: py as u32,
        });
    }

    /// Appends the definition of code object `key`, which `write` appends to the byte
    /// area it is given; the caller checked `has_room_bytes(bound)`, and `write` appends
    /// at most `bound` bytes (more would be cut off, the area never grows).
    #[inline]
    pub fn push_code(&mut self, key: u64, bound: usize, write: impl FnOnce(&mut Vec<u8>)) {
        debug_assert!(self.has_room_bytes(bound));
        let first = self.bytes.len();
        write(&mut self.bytes);
        self.bytes.truncate(first + bound.min(BYTE_CAP - first));
        self.events.push(RawEvent::Code {
            key,
            first: first as u32,
            len: (self.bytes.len() - first) as u32,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn events(&self) -> &[RawEvent] {
        &self.events
    }

    /// The frames of a `Stack` event of this batch (empty if out of range).
    pub fn frames(&self, first: u32, len: u32) -> &[u64] {
        let (first, len) = (first as usize, len as usize);
        self.frames.get(first..first + len).unwrap_or(&[])
    }

    /// The bytes of a `Code` event of this batch (empty if out of range).
    pub fn bytes(&self, first: u32, len: u32) -> &[u8] {
        let (first, len) = (first as usize, len as usize);
        self.bytes.get(first..first + len).unwrap_or(&[])
    }

    /// Empties the batch, keeping its memory.
    pub fn clear(&mut self) {
        self.events.clear();
        self.frames.clear();
        self.bytes.clear();
    }

    /// The allocations and frees this batch carries.
    pub fn loss(&self) -> Loss {
        let mut l = Loss::default();
        for e in &self.events {
            l.add(Loss::of(e));
        }
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(size: u64) -> RawEvent {
        RawEvent::Alloc {
            tid: 1,
            kind: MemoryKind::Host,
            api: Api::Malloc,
            device: NO_DEVICE,
            addr: 0x1000,
            size,
            stack: 7,
            ts: 1,
        }
    }

    #[test]
    fn room_accounts_for_events_and_frames() {
        let mut b = Batch::try_new().unwrap();
        assert!(b.is_empty());
        for _ in 0..EVENT_CAP - 1 {
            b.push(alloc(1));
        }
        assert!(b.has_room(1, 0));
        assert!(!b.has_room(2, 0));
        b.clear();
        assert!(b.has_room(1, FRAME_CAP));
        assert!(!b.has_room(1, FRAME_CAP + 1));
        let evc = b.events.capacity();
        b.push_stack(9, &[1, 2, 3], 0);
        b.push_stack(10, &[4, 7, 8], 2);
        assert_eq!(b.frames(0, 3), &[1, 2, 3]);
        assert_eq!(b.frames(3, 1), &[4]);
        assert_eq!(b.frames(3, 5), &[] as &[u64]);
        assert_eq!(
            b.events()[1],
            RawEvent::Stack {
                hash: 10,
                first: 3,
                len: 1,
                py: 2
            }
        );
        assert_eq!(b.events.capacity(), evc, "a batch never reallocates");
    }

    #[test]
    fn code_definitions_fill_the_byte_area_without_growing_it() {
        let mut b = Batch::try_new().unwrap();
        let cap = b.bytes.capacity();
        assert!(b.has_room_bytes(BYTE_CAP));
        assert!(!b.has_room_bytes(BYTE_CAP + 1));
        b.push_code(5, 4, |v| v.extend_from_slice(b"abc"));
        // A writer that overshoots its bound is cut back to it.
        b.push_code(6, 2, |v| v.extend_from_slice(b"xyz"));
        assert_eq!(
            b.events(),
            &[
                RawEvent::Code {
                    key: 5,
                    first: 0,
                    len: 3
                },
                RawEvent::Code {
                    key: 6,
                    first: 3,
                    len: 2
                }
            ]
        );
        assert_eq!(b.bytes(0, 3), b"abc");
        assert_eq!(b.bytes(3, 2), b"xy");
        assert_eq!(b.bytes(4, 2), b"" as &[u8]);
        assert!(b.has_room_bytes(BYTE_CAP - 5) && !b.has_room_bytes(BYTE_CAP - 4));
        b.clear();
        assert!(b.has_room_bytes(BYTE_CAP));
        assert_eq!(b.bytes.capacity(), cap);
    }

    #[test]
    fn loss_counts_allocs_bytes_and_frees() {
        let mut b = Batch::try_new().unwrap();
        b.push(alloc(10));
        b.push(alloc(32));
        b.push_stack(3, &[1], 0);
        b.push(RawEvent::Free {
            tid: 1,
            kind: MemoryKind::Host,
            api: Api::Free,
            addr: 0x1000,
            len: 0,
            ts: 2,
        });
        assert_eq!(
            b.loss(),
            Loss {
                allocs: 2,
                alloc_bytes: 42,
                frees: 1
            }
        );
    }
}
