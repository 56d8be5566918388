//! Per-thread recording state: one const-initialized thread-local without a destructor
//! (reentrancy flag, cached tid, pointer to the thread's context), so it stays usable for
//! the whole life of the thread, thread-exit code included. The context (slot, stack cache,
//! stack scratch, unwinder) is created on the thread's first event and handed back at thread
//! exit by the destructor of a pthread key (created by the session constructor); events
//! after that go to the registry's orphan slot.
//!
//! The stack scratch holds a capture's native frames, then (with Python frames on) its
//! Python frame words; `py_codes` holds the code object of each Python `Code` frame of
//! the last capture, for the definitions a new stack needs.
//!
//! Why a key and not a thread-local with `Drop`: registering such a destructor makes glibc
//! `calloc` a list node (unrecorded: the guard is held) that it frees at thread exit after
//! the destructor ran, a recorded free of a block never recorded. The key is normally
//! among the first of the process (the preload constructor runs before the program's), below
//! `PTHREAD_KEY_2NDLEVEL_SIZE`, so setting it allocates nothing either.

use super::slot::Slot;
use super::stack::StackCache;
use crate::python::{MAX_PY_FRAMES, PY_WORDS_MAX};
use crate::session::Session;
use crate::unwind::ThreadUnwinder;
use std::cell::Cell;
use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// No event yet. Zero: a new thread's TLS block starts so (see `crate::tls`); no code
    /// path makes it.
    #[allow(dead_code)]
    Detached = 0,
    /// Owns a context.
    Attached,
    /// Its context is gone (the thread is exiting) or could not be made: events go to the
    /// orphan slot, without stacks.
    Orphan,
}

/// The calling thread's recording state, in the shim's initial-exec TLS block
/// (`crate::tls`): all-zero bytes are its initial value.
#[repr(C)]
pub struct ThreadState {
    /// Set while the thread is inside a hook (or inside the shim's own work).
    pub busy: Cell<bool>,
    phase: Cell<Phase>,
    tid: Cell<u32>,
    ctx: Cell<*mut ThreadCtx>,
}

// The state must have no destructor: it is read during thread teardown.
const _: () = assert!(!std::mem::needs_drop::<ThreadState>());

/// What a thread needs to record its events.
pub struct ThreadCtx {
    pub slot: &'static Slot,
    pub cache: StackCache,
    /// `native` words for native frames, then `PY_WORDS_MAX` for Python frames (none
    /// with Python frames off).
    pub scratch: Box<[u64]>,
    pub native: usize,
    pub py_codes: Box<[u64]>,
    pub unwinder: Option<Box<ThreadUnwinder>>,
}

/// `NO_KEY`, or the pthread key whose destructor hands a thread's context back.
static EXIT_KEY: AtomicU32 = AtomicU32::new(NO_KEY);
const NO_KEY: u32 = u32::MAX;

/// Creates the thread-exit key: once, from the session constructor (guard held). Without
/// it, threads other than the main thread record without stacks to the orphan slot.
pub fn init_exit_key() {
    if EXIT_KEY.load(Ordering::Acquire) != NO_KEY {
        return;
    }
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid out-pointer; `on_thread_exit` is a valid destructor for the
    // life of the process (the shim is never unloaded).
    if unsafe { libc::pthread_key_create(&mut key, Some(on_thread_exit)) } == 0 {
        EXIT_KEY.store(key, Ordering::Release);
    }
}

/// Arms the calling thread's exit hook. False if there is no key or setting it failed.
fn arm_exit_hook() -> bool {
    let key = EXIT_KEY.load(Ordering::Acquire);
    if key == NO_KEY {
        return false;
    }
    // Any non-null value: glibc calls the destructor for non-null values only.
    // SAFETY: `key` came from `pthread_key_create` and is never deleted.
    unsafe { libc::pthread_setspecific(key, ptr::NonNull::<u8>::dangling().as_ptr().cast()) == 0 }
}

/// The key's destructor: hands the exiting thread's context back. Runs after the thread's
/// `thread_local` destructors (whose events are still the thread's own) and before the
/// destructors of keys created later (the program's: their events go to the orphan slot).
extern "C" fn on_thread_exit(_: *mut c_void) {
    {
        let t = &crate::tls::block().state;
        let was_busy = t.busy.replace(true);
        t.phase.set(Phase::Orphan);
        let ctx = t.ctx.replace(ptr::null_mut());
        if !ctx.is_null() {
            // SAFETY: `ctx` came from `Box::into_raw` in `attach` and was just unlinked.
            let ctx = unsafe { Box::from_raw(ctx) };
            super::hand_over(ctx.slot);
            ctx.slot.release();
        }
        t.busy.set(was_busy);
    }
}

/// The calling thread's state.
#[inline(always)]
pub fn current() -> Option<&'static ThreadState> {
    Some(&crate::tls::block().state)
}

impl ThreadState {
    /// The kernel thread id (read once).
    #[inline]
    pub fn tid(&self) -> u32 {
        let t = self.tid.get();
        if t != 0 {
            return t;
        }
        // SAFETY: gettid has no preconditions.
        let t = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
        self.tid.set(t);
        t
    }

    /// This thread's context in session `s`, made on first use; null: use the orphan slot.
    /// A non-null pointer is a live box owned by this thread until it exits; dereference it
    /// only while holding the guard, which makes that reference the only one.
    #[inline]
    pub fn ctx(&self, s: &'static Session) -> *mut ThreadCtx {
        match self.phase.get() {
            Phase::Attached => self.ctx.get(),
            Phase::Orphan => ptr::null_mut(),
            Phase::Detached => self.attach(s),
        }
    }

    #[cold]
    fn attach(&self, s: &'static Session) -> *mut ThreadCtx {
        let saved = errno::get();
        let tid = self.tid();
        let made = s.registry.claim().and_then(|slot| {
            let ctx = make_ctx(slot, s.config.max_frames, s.config.python);
            if ctx.is_none() {
                slot.release();
            }
            ctx
        });
        let mut p = ptr::null_mut();
        if let Some(ctx) = made {
            // The main thread keeps its context to the end; other threads hand theirs back
            // from the exit key's destructor.
            if tid == s.pid || arm_exit_hook() {
                p = Box::into_raw(ctx);
            } else {
                ctx.slot.release();
            }
        }
        self.ctx.set(p);
        self.phase.set(if p.is_null() {
            Phase::Orphan
        } else {
            Phase::Attached
        });
        errno::set(saved);
        p
    }
}

fn make_ctx(slot: &'static Slot, max_frames: usize, python: bool) -> Option<Box<ThreadCtx>> {
    let (py_words, py_frames) = if python {
        (PY_WORDS_MAX, MAX_PY_FRAMES)
    } else {
        (0, 0)
    };
    crate::alloc::try_box(ThreadCtx {
        slot,
        cache: StackCache::try_new()?,
        scratch: zeroed(max_frames + py_words)?,
        native: max_frames,
        py_codes: zeroed(py_frames)?,
        unwinder: ThreadUnwinder::new(),
    })
}

/// `n` zero words, or `None` when memory is exhausted.
fn zeroed(n: usize) -> Option<Box<[u64]>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).ok()?;
    v.resize(n, 0);
    Some(v.into_boxed_slice())
}

/// In a fork child, on the forking thread (the only one): move its context to the new
/// session `s` with an empty stack cache, and forget the cached tid.
pub fn after_fork_child(s: &'static Session) {
    let t = &crate::tls::block().state;
    {
        t.tid.set(0);
        let p = t.ctx.get();
        if p.is_null() {
            return;
        }
        // SAFETY: the forking thread holds its guard (we run inside the fork hook), so this
        // is the only reference to its context.
        let ctx = unsafe { &mut *p };
        match s.registry.claim() {
            Some(slot) => {
                ctx.slot = slot;
                ctx.cache.clear();
            }
            None => {
                t.ctx.set(ptr::null_mut());
                t.phase.set(Phase::Orphan);
                // SAFETY: unlinked above; nothing else refers to it.
                drop(unsafe { Box::from_raw(p) });
            }
        }
    }
}

/// `errno`, saved around the shim's cold paths so hooks leave it as the real call set it.
pub mod errno {
    pub fn get() -> i32 {
        // SAFETY: __errno_location returns this thread's errno slot.
        unsafe { *libc::__errno_location() }
    }

    pub fn set(v: i32) {
        // SAFETY: as above.
        unsafe { *libc::__errno_location() = v };
    }
}

/// Marks the calling thread as the shim's own (the sender): it never records.
pub fn mark_shim_thread() {
    crate::tls::block().state.busy.set(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_threads_state_is_the_initial_one() {
        // Every field's initial value is the all-zero bit pattern a new TLS block has.
        assert_eq!(Phase::Detached as u8, 0);
        std::thread::spawn(|| {
            let t = &crate::tls::block().state;
            assert!(!t.busy.get());
            assert_eq!(t.phase.get(), Phase::Detached);
            assert_eq!(t.tid.get(), 0);
            assert!(t.ctx.get().is_null());
        })
        .join()
        .unwrap();
    }
}
