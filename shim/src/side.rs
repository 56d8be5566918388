//! The side path for records that are not per-thread events: state the shim reads at an
//! interval or is handed through its C API (heap readings, the PyTorch allocator's
//! segments). Producers build a whole [`Record`] off the hot path, guard held, with its
//! timestamp as a raw clock reading; the sender thread drains them on every tick,
//! converts the timestamp and writes them in stream order after the events already sent.
//! Bounded: when the sender falls behind, new records are dropped and the producer is
//! told (a producer that sends changes since its last record sends everything next).

use crate::record::clock;
use crossbeam_channel::{bounded, Receiver, Sender};
use leakscope_protocol::Record;
use std::sync::atomic::{AtomicPtr, Ordering};

/// Records the side path holds before it drops new ones.
const CAPACITY: usize = 4096;

struct Side {
    tx: Sender<Record>,
    rx: Receiver<Record>,
}

/// The queue, created on first use. Never freed once published (threads may hold it), and
/// never waited for: a lock-free publication, because a fork can happen at any moment and a
/// child must not wait on an initialization that a thread of its parent had begun.
static SIDE: AtomicPtr<Side> = AtomicPtr::new(std::ptr::null_mut());

fn fresh() -> *mut Side {
    let (tx, rx) = bounded(CAPACITY);
    Box::into_raw(Box::new(Side { tx, rx }))
}

fn side() -> &'static Side {
    let mut p = SIDE.load(Ordering::Acquire);
    if p.is_null() {
        let mine = fresh();
        p = match SIDE.compare_exchange(
            std::ptr::null_mut(),
            mine,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => mine,
            Err(theirs) => {
                // SAFETY: `mine` was never published: this thread owns it alone.
                drop(unsafe { Box::from_raw(mine) });
                theirs
            }
        };
    }
    // SAFETY: `p` is a published queue, leaked: valid for the rest of the process.
    unsafe { &*p }
}

/// Queues `record` for the sender. Its timestamp (if it has one) must be a raw
/// [`clock::now`] reading. Never blocks; false when the queue was full and the record was
/// dropped. The caller holds a `Guard` (building and queueing a record allocates).
pub fn submit(record: Record) -> bool {
    side().tx.try_send(record).is_ok()
}

/// A raw clock reading for a side record's timestamp.
pub fn now() -> u64 {
    clock::now()
}

/// Moves every queued record to `out`, converting raw timestamps with `convert`.
pub fn drain(out: &mut Vec<Record>, mut convert: impl FnMut(u64) -> u64) {
    let s = side();
    while let Ok(mut r) = s.rx.try_recv() {
        if let Some(ts) = r.ts_slot_mut() {
            ts.0 = convert(ts.0);
        }
        out.push(r);
    }
}

/// In a fork child (one thread, before anything else runs): the parent's queued records
/// are not the child's. The child gets a new, empty queue; the parent's copy is left alone
/// (not drained: a send that a parent thread was in the middle of at the fork would never
/// complete, and a receive would wait for it).
pub fn discard() {
    SIDE.store(fresh(), Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;
    use leakscope_protocol::{HeapReading, Timestamp};

    #[test]
    fn records_come_out_in_order_with_converted_timestamps_and_overflow_is_refused() {
        let mut out = Vec::new();
        drain(&mut out, |t| t);
        out.clear();
        let reading = |ts| {
            Record::Heap(HeapReading {
                ts: Timestamp(ts),
                ..HeapReading::default()
            })
        };
        assert!(submit(reading(5)));
        assert!(submit(reading(6)));
        drain(&mut out, |t| t * 10);
        assert_eq!(out, vec![reading(50), reading(60)]);
        let accepted = (0..CAPACITY as u64 + 3)
            .filter(|&i| submit(reading(i)))
            .count();
        assert_eq!(accepted, CAPACITY);
        discard();
        out.clear();
        drain(&mut out, |t| t);
        assert!(out.is_empty());
    }
}
