//! Event buffers ("slots") and their registry. A slot holds one batch behind an atomic lock
//! flag: its owning thread takes the flag around each append (one uncontended exchange), the
//! sender thread takes it to steal pending events. Slots are never freed: a thread's slot
//! goes back to the registry when the thread exits and the next new thread reuses it, so
//! thread churn does not grow memory. One extra "orphan" slot, shared under the same lock,
//! takes the events of threads whose own slot is already released (thread-exit code).

use super::raw::Batch;
use std::cell::UnsafeCell;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::time::{Duration, Instant};

/// One event buffer.
pub struct Slot {
    lock: AtomicBool,
    claimed: AtomicBool,
    /// Hint that the batch holds events (set by appenders, cleared by whoever takes it).
    dirty: AtomicBool,
    batch: UnsafeCell<Option<Box<Batch>>>,
    next: AtomicPtr<Slot>,
}

// SAFETY: `batch` is only reached through `Locked`, which exists only while `lock` is held
// (acquire on take, release on drop), so accesses to it never overlap.
unsafe impl Sync for Slot {}

/// Exclusive access to a slot's batch; releases the lock when dropped.
pub struct Locked<'a> {
    slot: &'a Slot,
}

impl Locked<'_> {
    /// The slot's current batch (`None` after a steal, until the next append).
    pub fn batch(&mut self) -> &mut Option<Box<Batch>> {
        // SAFETY: this `Locked` holds the slot's lock, so no other reference to the batch
        // exists; the borrow is tied to `&mut self`.
        unsafe { &mut *self.slot.batch.get() }
    }

    /// Takes the batch out of the slot.
    pub fn take(&mut self) -> Option<Box<Batch>> {
        self.slot.dirty.store(false, Ordering::Relaxed);
        self.batch().take()
    }

    /// Notes that the batch now holds events.
    pub fn mark_dirty(&self) {
        self.slot.dirty.store(true, Ordering::Relaxed);
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.slot.lock.store(false, Ordering::Release);
    }
}

impl Slot {
    const fn new(claimed: bool) -> Slot {
        Slot {
            lock: AtomicBool::new(false),
            claimed: AtomicBool::new(claimed),
            dirty: AtomicBool::new(false),
            batch: UnsafeCell::new(None),
            next: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// Takes the lock, waiting for a holder that is mid-append or mid-steal (both short).
    #[inline]
    pub fn lock(&self) -> Locked<'_> {
        if !self.lock.swap(true, Ordering::Acquire) {
            return Locked { slot: self };
        }
        self.lock_contended()
    }

    #[cold]
    fn lock_contended(&self) -> Locked<'_> {
        let mut spins = 0u32;
        loop {
            if !self.lock.load(Ordering::Relaxed) && !self.lock.swap(true, Ordering::Acquire) {
                return Locked { slot: self };
            }
            spins = spins.saturating_add(1);
            if spins < 128 {
                std::hint::spin_loop();
            } else {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
        }
    }

    /// Takes the lock if it is free right now.
    pub fn try_lock(&self) -> Option<Locked<'_>> {
        // Not `then_some`: it would build (and drop, so unlock) a `Locked` on failure too.
        if self.lock.swap(true, Ordering::Acquire) {
            None
        } else {
            Some(Locked { slot: self })
        }
    }

    /// Takes the lock, giving up after `limit`.
    pub fn lock_within(&self, limit: Duration) -> Option<Locked<'_>> {
        let start = Instant::now();
        loop {
            if let Some(l) = self.try_lock() {
                return Some(l);
            }
            if start.elapsed() >= limit {
                return None;
            }
            // SAFETY: sched_yield has no preconditions.
            unsafe { libc::sched_yield() };
        }
    }

    /// Whether the slot's batch may hold events (a hint, read without the lock).
    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Relaxed)
    }

    /// Gives the slot back to the registry; a later thread may claim it (and keep
    /// appending to the batch it holds).
    pub fn release(&self) {
        self.claimed.store(false, Ordering::Release);
    }
}

/// All slots of one session: a push-only lock-free list plus the orphan slot.
pub struct Registry {
    head: AtomicPtr<Slot>,
    orphan: Slot,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub const fn new() -> Registry {
        Registry {
            head: AtomicPtr::new(ptr::null_mut()),
            orphan: Slot::new(true),
        }
    }

    /// A slot for a new thread: a released one if any, else a new one. `None` only when
    /// memory is exhausted.
    pub fn claim(&self) -> Option<&'static Slot> {
        for s in self.list() {
            if !s.claimed.load(Ordering::Relaxed)
                && s.claimed
                    .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return Some(s);
            }
        }
        let fresh: &'static Slot = Box::leak(crate::alloc::try_box(Slot::new(true))?);
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            fresh.next.store(head, Ordering::Relaxed);
            match self.head.compare_exchange_weak(
                head,
                ptr::from_ref(fresh).cast_mut(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(fresh),
                Err(now) => head = now,
            }
        }
    }

    /// The shared slot for threads without one of their own.
    pub fn orphan(&self) -> &Slot {
        &self.orphan
    }

    /// Every registered slot, then the orphan slot last (thread-exit events go there after
    /// the exiting thread's own slot, and the sender steals in this order).
    pub fn slots(&'static self) -> impl Iterator<Item = &'static Slot> {
        self.list().chain(std::iter::once(&self.orphan))
    }

    fn list(&self) -> impl Iterator<Item = &'static Slot> {
        let mut cur = self.head.load(Ordering::Acquire);
        std::iter::from_fn(move || {
            // SAFETY: list nodes are leaked `Slot`s, published with release ordering after
            // their `next` was set, and never freed.
            let s: &'static Slot = unsafe { cur.as_ref()? };
            cur = s.next.load(Ordering::Relaxed);
            Some(s)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_slots_are_reused() {
        let r: &'static Registry = Box::leak(Box::new(Registry::new()));
        let a = r.claim().unwrap();
        let b = r.claim().unwrap();
        assert!(!ptr::eq(a, b));
        a.release();
        let c = r.claim().unwrap();
        assert!(ptr::eq(a, c), "a released slot is claimed again");
        assert_eq!(r.slots().count(), 3, "two slots plus the orphan");
        assert!(ptr::eq(r.slots().last().unwrap(), r.orphan()));
    }

    #[test]
    fn lock_excludes_and_carries_the_batch() {
        let s = Slot::new(true);
        {
            let mut l = s.lock();
            assert!(s.try_lock().is_none());
            assert!(s.lock_within(Duration::from_millis(5)).is_none());
            *l.batch() = Batch::try_new();
            l.mark_dirty();
        }
        assert!(s.is_dirty());
        let mut l = s.try_lock().expect("free after drop");
        assert!(l.take().is_some());
        assert!(l.take().is_none());
        drop(l);
        assert!(!s.is_dirty());
    }

    #[test]
    fn concurrent_claims_and_appends_lose_nothing() {
        let r: &'static Registry = Box::leak(Box::new(Registry::new()));
        let counter = r.orphan();
        {
            let mut l = counter.lock();
            *l.batch() = Batch::try_new();
        }
        let threads: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(move || {
                    let mine = r.claim().unwrap();
                    for i in 0..400u64 {
                        let mut l = r.orphan().lock();
                        if let Some(b) = l.batch().as_mut() {
                            b.push_stack(i, &[], 0);
                        }
                    }
                    mine.release();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(counter.lock().batch().as_ref().unwrap().len(), 3200);
        assert!(r.slots().count() <= 9);
    }
}
