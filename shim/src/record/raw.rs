//! Raw events and the batches that carry them from a hooking thread to the sender thread:
//! small fixed-size structs appended without allocation, plus a frame area for the stacks
//! that the batch defines.

use leakscope_protocol::{Api, MemoryKind, PoolAction};

/// The `device` of an event whose memory lives on no device, or on an unknown one.
pub const NO_DEVICE: u8 = u8::MAX;

/// Events a batch holds.
pub const EVENT_CAP: usize = 4096;
/// Stack frames a batch holds (its stack definitions' frames, back to back).
pub const FRAME_CAP: usize = 8192;

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
    /// Defines the stack `hash`: `len` frames at `first` in this batch's frame area.
    Stack {
        hash: u64,
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
}

const _: () = assert!(std::mem::size_of::<RawEvent>() <= 40);
const _: () = assert!(FRAME_CAP >= 4 * crate::env::MAX_FRAMES_LIMIT);

/// What dropping a batch loses, for the `Dropped` counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Loss {
    pub allocs: u64,
    pub alloc_bytes: u64,
    pub frees: u64,
}

impl Loss {
    /// What dropping `e` loses (nothing for stack definitions, forks, pool readings and
    /// capture marks).
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
            | RawEvent::Fork { .. }
            | RawEvent::Pool { .. }
            | RawEvent::Capture { .. } => Loss::default(),
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
}

impl Batch {
    /// An empty batch, or `None` when memory is exhausted (the shim must not abort the
    /// program where its own allocation would have failed gracefully).
    pub fn try_new() -> Option<Box<Batch>> {
        let mut events = Vec::new();
        events.try_reserve_exact(EVENT_CAP).ok()?;
        let mut frames = Vec::new();
        frames.try_reserve_exact(FRAME_CAP).ok()?;
        crate::alloc::try_box(Batch { events, frames })
    }

    /// Whether `events` more events and `frames` more frames fit.
    #[inline]
    pub fn has_room(&self, events: usize, frames: usize) -> bool {
        self.events.len() + events <= EVENT_CAP && self.frames.len() + frames <= FRAME_CAP
    }

    /// Appends an event; the caller checked `has_room(1, 0)`.
    #[inline]
    pub fn push(&mut self, e: RawEvent) {
        debug_assert!(self.has_room(1, 0));
        self.events.push(e);
    }

    /// Appends a stack definition; the caller checked `has_room(1, frames.len())`.
    #[inline]
    pub fn push_stack(&mut self, hash: u64, frames: &[u64]) {
        debug_assert!(self.has_room(1, frames.len()));
        let first = self.frames.len() as u32;
        self.frames.extend_from_slice(frames);
        self.events.push(RawEvent::Stack {
            hash,
            first,
            len: frames.len() as u32,
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

    /// Empties the batch, keeping its memory.
    pub fn clear(&mut self) {
        self.events.clear();
        self.frames.clear();
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
        b.push_stack(9, &[1, 2, 3]);
        b.push_stack(10, &[4]);
        assert_eq!(b.frames(0, 3), &[1, 2, 3]);
        assert_eq!(b.frames(3, 1), &[4]);
        assert_eq!(b.frames(3, 5), &[] as &[u64]);
        assert_eq!(b.events.capacity(), evc, "a batch never reallocates");
    }

    #[test]
    fn loss_counts_allocs_bytes_and_frees() {
        let mut b = Batch::try_new().unwrap();
        b.push(alloc(10));
        b.push(alloc(32));
        b.push_stack(3, &[1]);
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
