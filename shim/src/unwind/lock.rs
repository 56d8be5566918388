//! The lock that serializes module-set rebuilds: a small spin lock (rebuilds are rare and
//! short) that a fork child can take back from a thread that vanished in the fork.
//!
//! The holder's process id is stored while the lock is held, so recovery is sound wherever
//! it is called: it only breaks a lock held by a thread of another process (the parent,
//! whose threads do not exist in the child). Data that such a thread may have left half
//! written is then discarded, never read: the next holder finds the value "poisoned" and
//! starts from `None` (the old value is leaked, not dropped).

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

pub(super) struct ForkLock<T> {
    locked: AtomicBool,
    /// Process id of the holder while `locked`; 0 between the acquisition and its store.
    holder: AtomicI32,
    poisoned: AtomicBool,
    value: UnsafeCell<Option<T>>,
}

// SAFETY: the value is only reached through a `ForkGuard`, and at most one guard exists at a
// time within a process (`locked` is acquired with a compare-exchange; `recover_after_fork`
// only breaks a lock whose holder is in another process, whose guard cannot be used here).
unsafe impl<T: Send> Sync for ForkLock<T> {}

pub(super) struct ForkGuard<'a, T> {
    lock: &'a ForkLock<T>,
}

impl<T> ForkLock<T> {
    pub const fn new() -> Self {
        ForkLock {
            locked: AtomicBool::new(false),
            holder: AtomicI32::new(0),
            poisoned: AtomicBool::new(false),
            value: UnsafeCell::new(None),
        }
    }

    /// Waits for the lock (yielding the CPU between attempts). Makes a `getpid` syscall.
    pub fn lock(&self) -> ForkGuard<'_, T> {
        loop {
            if let Some(guard) = self.try_lock() {
                return guard;
            }
            std::thread::yield_now();
        }
    }

    pub fn try_lock(&self) -> Option<ForkGuard<'_, T>> {
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        self.holder.store(current_pid(), Ordering::Relaxed);
        if self.poisoned.swap(false, Ordering::Relaxed) {
            // SAFETY: we hold the lock, so no other reference to the value exists.
            let stale = unsafe { (*self.value.get()).take() };
            // Its contents may be half-updated by a thread that vanished in a fork: never
            // read or drop them.
            std::mem::forget(stale);
        }
        Some(ForkGuard { lock: self })
    }

    /// In a fork child: if the lock is held by a thread of another process (a parent's
    /// thread that does not exist here), release it and poison the value. Anywhere else
    /// this does nothing. Makes a `getpid` syscall; never blocks, never allocates.
    pub fn recover_after_fork(&self) {
        if !self.locked.load(Ordering::Acquire) {
            return;
        }
        if self.holder.load(Ordering::Relaxed) == current_pid() {
            return;
        }
        self.poisoned.store(true, Ordering::Relaxed);
        self.holder.store(0, Ordering::Relaxed);
        self.locked.store(false, Ordering::Release);
    }
}

impl<T> ForkGuard<'_, T> {
    pub fn get(&mut self) -> &mut Option<T> {
        // SAFETY: the guard is the only way to the value and only one guard exists at a time
        // (see the `Sync` impl); `&mut self` keeps this borrow unique.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for ForkGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.holder.store(0, Ordering::Relaxed);
        self.lock.locked.store(false, Ordering::Release);
    }
}

fn current_pid() -> i32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn excludes_and_keeps_the_value() {
        let lock = Arc::new(ForkLock::<u64>::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let lock = Arc::clone(&lock);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        let mut g = lock.lock();
                        let v = g.get().get_or_insert(0);
                        *v += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*lock.lock().get(), Some(4000));
    }

    #[test]
    fn recovery_leaves_a_lock_of_this_process_alone() {
        let lock = ForkLock::<u32>::new();
        let mut g = lock.lock();
        *g.get() = Some(7);
        lock.recover_after_fork();
        assert!(
            lock.try_lock().is_none(),
            "a lock held in this process stays held"
        );
        drop(g);
        assert_eq!(*lock.lock().get(), Some(7));
    }

    #[test]
    fn recovery_breaks_a_lock_held_by_another_process() {
        let lock = ForkLock::<u32>::new();
        let mut g = lock.lock();
        *g.get() = Some(5);
        // Pretend the holder was a parent process's thread.
        lock.holder.store(current_pid() + 1, Ordering::Relaxed);
        std::mem::forget(g);
        lock.recover_after_fork();
        let mut g = lock.try_lock().expect("recovered");
        assert_eq!(*g.get(), None, "the value is discarded");
    }
}
