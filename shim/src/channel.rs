//! The path of full batches from hooking threads to the sender thread: a bounded channel of
//! full batches, a pool of empty ones (a new batch is allocated only when the pool is
//! empty), the full-channel policy (bounded wait, then drop), the drop counters that the
//! sender reports as `Dropped` records, and the doorbell that wakes the sender. Nothing here
//! blocks without a bound.
//!
//! Hooking threads use the crossbeam channels only through `try_send`/`try_recv`, and the
//! sender never blocks inside crossbeam (it sleeps on the [`Doorbell`]): a send that finds
//! a receiver blocked in crossbeam asks `std::thread::current()` for the sending thread's
//! id, which allocates a thread handle through the hooked `malloc` (unrecorded: the guard
//! is held) and frees it at thread exit, after the thread's context was handed back (a
//! recorded free of a block never recorded).

use crate::env::OnFull;
use crate::record::clock;
use crate::record::raw::{Batch, Loss};
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Wakes the sender thread when work arrives while it sleeps: a futex word, touched by
/// hooking threads only when the sender is asleep. Allocates nothing, takes no lock.
pub struct Doorbell {
    /// Bumped by every ring that found the sender asleep (the futex word).
    word: AtomicU32,
    asleep: AtomicBool,
}

impl Default for Doorbell {
    fn default() -> Self {
        Self::new()
    }
}

impl Doorbell {
    pub const fn new() -> Doorbell {
        Doorbell {
            word: AtomicU32::new(0),
            asleep: AtomicBool::new(false),
        }
    }

    /// After publishing work for the sender: wakes it if it sleeps (one system call then,
    /// a fence and a load otherwise).
    #[inline]
    pub fn ring(&self) {
        // Pairs with the fence in `wait`: either the sender's readiness check sees the
        // work published before this fence, or this load sees it asleep.
        fence(Ordering::SeqCst);
        if self.asleep.load(Ordering::Relaxed) && self.asleep.swap(false, Ordering::AcqRel) {
            self.word.fetch_add(1, Ordering::Release);
            futex(
                &self.word,
                libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                1,
                None,
            );
        }
    }

    /// The sender: sleeps until the next ring or for at most `limit`, unless `ready()`
    /// says there is work already.
    pub fn wait(&self, limit: Duration, ready: impl Fn() -> bool) {
        let seen = self.word.load(Ordering::Acquire);
        self.asleep.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if !ready() {
            futex(
                &self.word,
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                seen,
                Some(limit),
            );
        }
        self.asleep.store(false, Ordering::Relaxed);
    }
}

/// One `futex` call on `word` (`FUTEX_WAIT` returns at once if the word is not `val`).
fn futex(word: &AtomicU32, op: libc::c_int, val: u32, limit: Option<Duration>) {
    let ts = limit.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), std::ptr::from_ref);
    // SAFETY: `word` is a live, aligned 32-bit atomic; `ts_ptr` is null or points to a
    // timespec on this stack; the remaining arguments are unused by WAIT and WAKE.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op,
            val,
            ts_ptr,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Full batches in flight to the sender thread.
pub const CHANNEL_BATCHES: usize = 64;
/// Empty batches kept for reuse.
const POOL_BATCHES: usize = 64;

/// Cumulative counts of events the shim had to drop.
#[derive(Default)]
pub struct DropCounters {
    allocs: AtomicU64,
    alloc_bytes: AtomicU64,
    frees: AtomicU64,
}

impl DropCounters {
    pub fn add(&self, l: Loss) {
        self.allocs.fetch_add(l.allocs, Ordering::Relaxed);
        self.alloc_bytes.fetch_add(l.alloc_bytes, Ordering::Relaxed);
        self.frees.fetch_add(l.frees, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Loss {
        Loss {
            allocs: self.allocs.load(Ordering::Relaxed),
            alloc_bytes: self.alloc_bytes.load(Ordering::Relaxed),
            frees: self.frees.load(Ordering::Relaxed),
        }
    }
}

/// What became of a submitted batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Submitted {
    Sent,
    /// Dropped and counted: any stack definitions it carried are lost too.
    Dropped,
}

/// One session's batch channel and pool.
pub struct Channel {
    full_tx: Sender<Box<Batch>>,
    full_rx: Receiver<Box<Batch>>,
    pool_tx: Sender<Box<Batch>>,
    pool_rx: Receiver<Box<Batch>>,
    /// Set when a bounded wait timed out: later full batches are dropped without waiting
    /// until the sender takes a batch again (a stalled collector costs one wait, not one
    /// per batch).
    congested: AtomicBool,
    on_full: OnFull,
    pub drops: DropCounters,
    /// Rung after every batch handed over and every end request.
    pub bell: Doorbell,
}

impl Channel {
    pub fn new(on_full: OnFull) -> Channel {
        let (full_tx, full_rx) = bounded(CHANNEL_BATCHES);
        let (pool_tx, pool_rx) = bounded(POOL_BATCHES);
        Channel {
            full_tx,
            full_rx,
            pool_tx,
            pool_rx,
            congested: AtomicBool::new(false),
            on_full,
            drops: DropCounters::default(),
            bell: Doorbell::new(),
        }
    }

    /// An empty batch from the pool, or a new one (`None` when memory is exhausted).
    pub fn fresh_batch(&self) -> Option<Box<Batch>> {
        self.pool_rx.try_recv().ok().or_else(Batch::try_new)
    }

    /// Empties `b` and keeps it for reuse (frees it when the pool is full).
    pub fn recycle(&self, mut b: Box<Batch>) {
        b.clear();
        let _ = self.pool_tx.try_send(b);
    }

    /// Counts `b`'s events as dropped and recycles it.
    pub fn discard(&self, b: Box<Batch>) {
        self.drops.add(b.loss());
        self.recycle(b);
    }

    /// Hands a full batch to the sender. When the channel is full, waits as `LEAKSCOPE_ON_FULL`
    /// says for as long as `may_wait()` holds, then drops and counts the batch.
    pub fn submit(&self, b: Box<Batch>, may_wait: &dyn Fn() -> bool) -> Submitted {
        let mut b = match self.full_tx.try_send(b) {
            Ok(()) => {
                self.bell.ring();
                return Submitted::Sent;
            }
            Err(TrySendError::Full(b)) => b,
            Err(TrySendError::Disconnected(b)) => {
                self.discard(b);
                return Submitted::Dropped;
            }
        };
        if let OnFull::Wait(limit) = self.on_full {
            if !self.congested.load(Ordering::Relaxed) {
                let deadline = clock::monotonic_ns().saturating_add(limit.as_nanos() as u64);
                let mut nap_us = 20u64;
                while may_wait() && clock::monotonic_ns() < deadline {
                    nap(nap_us);
                    nap_us = (nap_us * 2).min(1000);
                    b = match self.try_submit(b) {
                        Ok(()) => return Submitted::Sent,
                        Err(b) => b,
                    };
                }
                self.congested.store(true, Ordering::Relaxed);
            }
        }
        self.discard(b);
        Submitted::Dropped
    }

    /// A batch taken out of a slot: submitted if it holds events, recycled if empty.
    /// `Dropped` only when a submitted batch had to be dropped.
    pub fn submit_taken(&self, b: Option<Box<Batch>>, may_wait: &dyn Fn() -> bool) -> Submitted {
        match b {
            Some(b) if !b.is_empty() => self.submit(b, may_wait),
            Some(b) => {
                self.recycle(b);
                Submitted::Sent
            }
            None => Submitted::Sent,
        }
    }

    /// Hands a full batch to the sender if the channel has room right now.
    pub fn try_submit(&self, b: Box<Batch>) -> Result<(), Box<Batch>> {
        self.full_tx.try_send(b).map_err(|e| e.into_inner())?;
        self.bell.ring();
        Ok(())
    }

    /// The sender's end (use only `try_recv`, `len` and `is_empty`: see the module comment).
    pub fn receiver(&self) -> &Receiver<Box<Batch>> {
        &self.full_rx
    }

    /// The sender took a batch: waiting for room makes sense again.
    pub fn note_progress(&self) {
        if self.congested.load(Ordering::Relaxed) {
            self.congested.store(false, Ordering::Relaxed);
        }
    }
}

fn nap(us: u64) {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: (us * 1000) as libc::c_long,
    };
    // SAFETY: `ts` is a valid duration; an interrupted sleep just ends early.
    unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::raw::RawEvent;
    use leakscope_protocol::{Api, MemoryKind};
    use std::time::{Duration, Instant};

    fn batch_with_alloc(ch: &Channel, size: u64) -> Box<Batch> {
        let mut b = ch.fresh_batch().unwrap();
        b.push(RawEvent::Alloc {
            tid: 1,
            kind: MemoryKind::Host,
            api: Api::Malloc,
            device: crate::record::raw::NO_DEVICE,
            addr: 16,
            size,
            stack: 1,
            ts: 0,
        });
        b
    }

    fn fill(ch: &Channel) {
        for _ in 0..CHANNEL_BATCHES {
            assert_eq!(
                ch.submit(batch_with_alloc(ch, 1), &|| true),
                Submitted::Sent
            );
        }
    }

    #[test]
    fn drop_policy_counts_without_waiting() {
        let ch = Channel::new(OnFull::Drop);
        fill(&ch);
        let t = Instant::now();
        assert_eq!(
            ch.submit(batch_with_alloc(&ch, 100), &|| true),
            Submitted::Dropped
        );
        assert!(t.elapsed() < Duration::from_millis(50));
        let d = ch.drops.snapshot();
        assert_eq!((d.allocs, d.alloc_bytes, d.frees), (1, 100, 0));
    }

    #[test]
    fn bounded_wait_then_drop_then_no_more_waiting() {
        let ch = Channel::new(OnFull::Wait(Duration::from_millis(30)));
        fill(&ch);
        let t = Instant::now();
        assert_eq!(
            ch.submit(batch_with_alloc(&ch, 7), &|| true),
            Submitted::Dropped
        );
        let waited = t.elapsed();
        assert!(waited >= Duration::from_millis(30), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        // Congested: the next one drops at once.
        let t = Instant::now();
        assert_eq!(
            ch.submit(batch_with_alloc(&ch, 7), &|| true),
            Submitted::Dropped
        );
        assert!(t.elapsed() < Duration::from_millis(25));
        assert_eq!(ch.drops.snapshot().allocs, 2);
        // The sender makes progress: a waiting submit succeeds once room appears.
        ch.note_progress();
        let b = ch.receiver().try_recv().unwrap();
        ch.recycle(b);
        assert_eq!(
            ch.submit(batch_with_alloc(&ch, 7), &|| true),
            Submitted::Sent
        );
    }

    #[test]
    fn wait_ends_when_waiting_is_no_longer_allowed() {
        let ch = Channel::new(OnFull::Wait(Duration::from_secs(60)));
        fill(&ch);
        let t = Instant::now();
        assert_eq!(
            ch.submit(batch_with_alloc(&ch, 1), &|| false),
            Submitted::Dropped
        );
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn waiting_submit_gets_through_when_the_sender_drains() {
        let ch: &'static Channel =
            Box::leak(Box::new(Channel::new(OnFull::Wait(Duration::from_secs(5)))));
        fill(ch);
        let drainer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            ch.receiver().recv().unwrap()
        });
        assert_eq!(
            ch.submit(batch_with_alloc(ch, 1), &|| true),
            Submitted::Sent
        );
        drainer.join().unwrap();
        assert_eq!(ch.drops.snapshot(), Loss::default());
    }

    #[test]
    fn doorbell_wakes_a_sleeper_and_times_out_without_a_ring() {
        let bell: &'static Doorbell = Box::leak(Box::new(Doorbell::new()));
        let t = Instant::now();
        bell.wait(Duration::from_millis(20), || false);
        assert!(t.elapsed() >= Duration::from_millis(15));
        let t = Instant::now();
        bell.wait(Duration::from_secs(5), || true);
        assert!(t.elapsed() < Duration::from_secs(1), "ready: no sleep");
        let ringer = std::thread::spawn(move || {
            while !bell.asleep.load(Ordering::Relaxed) {
                std::thread::yield_now();
            }
            bell.ring();
        });
        let t = Instant::now();
        bell.wait(Duration::from_secs(10), || false);
        assert!(t.elapsed() < Duration::from_secs(5), "woken by the ring");
        ringer.join().unwrap();
    }

    #[test]
    fn pool_reuses_batches() {
        let ch = Channel::new(OnFull::Drop);
        let b = batch_with_alloc(&ch, 1);
        let addr = &*b as *const Batch;
        ch.recycle(b);
        let again = ch.fresh_batch().unwrap();
        assert_eq!(&*again as *const Batch, addr);
        assert!(again.is_empty());
    }
}
