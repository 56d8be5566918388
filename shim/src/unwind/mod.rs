//! In-process stack unwinding and the module maps the collector symbolizes with.
//!
//! - [`ThreadUnwinder::capture`]: the calling thread's stack as lookup addresses, innermost
//!   first, the shim's own frames removed; framehop over `.eh_frame_hdr`/`.eh_frame` read in
//!   place in mapped memory, frame pointers where a module has no unwind information.
//! - [`init`], [`on_dlopen`], [`on_dlclose`], [`after_fork_child`]: keep the shared module
//!   snapshot (`snapshot.rs`) in step with the loader.
//! - [`ModuleAnnouncer`]: turns snapshot changes into `Module` / `ModuleUnload` records.
//! - [`learn_thread_stack`]: records the calling thread's stack bounds in a thread-local,
//!   outside any hook (the session constructor for the main thread, the thread-start
//!   trampoline of `hooks/thread.rs` for the others). A thread's unwinder only reads them:
//!   glibc's `pthread_getattr_np` allocates while holding the thread's non-recursive lock,
//!   so calling it from a hook deadlocks when the hook runs inside it. A thread whose bounds
//!   were never learnt (created before the shim was active, or by a raw `clone`) records
//!   empty stacks.
//!
//! Files: `modules.rs` reads modules from `dl_iterate_phdr`; `snapshot.rs` publishes the
//! module set and explains the `dlclose` safety argument; `lock.rs` is the fork-safe
//! rebuild lock; `walk.rs` is the stack walk (x86_64 only: on other architectures
//! [`ThreadUnwinder::new`] returns `None`, and module maps are still announced).
//!
//! The vDSO is used for unwinding but never announced (it has no file to symbolize from).

// Without the walk (other architectures), parts of the snapshot go unused.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

mod lock;
mod modules;
mod snapshot;
#[cfg(target_arch = "x86_64")]
mod walk;

#[cfg(test)]
mod tests;

use leakscope_protocol::{ModuleId, ModuleUnload, Record};
use std::ffi::c_void;
use std::ops::Range;

/// Learns the calling thread's stack bounds (`pthread_getattr_np`, which allocates and,
/// on the main thread, reads `/proc/self/maps`) and keeps them for its unwinder. Call with
/// the reentrancy guard held, and never from inside a hook: the hooked call may be running
/// inside `pthread_getattr_np` with the thread's lock held. False when they are unknown.
pub fn learn_thread_stack() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let Some(stack) = walk::thread_stack() else {
            return false;
        };
        crate::tls::block().stack.set((stack.start, stack.end));
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The calling thread's stack bounds, if [`learn_thread_stack`] found them.
#[cfg(target_arch = "x86_64")]
fn known_stack() -> Option<std::ops::Range<u64>> {
    let (start, end) = crate::tls::block().stack.get();
    (start < end).then_some(start..end)
}

/// Reads the loaded modules and publishes the first snapshot. Call once, early in session
/// start (modules present now are taken as loaded at startup, which glibc never unloads),
/// with the shim's reentrancy guard held: it allocates and calls into the loader.
pub fn init() {
    snapshot::init();
}

/// After a real `dlopen`/`dlmopen` returned non-null (guard held): re-reads the loader's list.
pub fn on_dlopen() {
    snapshot::refresh();
}

/// Before the real `dlclose(handle)` (guard held): stops unwinding through the module the
/// handle refers to and its non-startup dependencies, since `dlclose` may unmap them.
pub fn on_dlclose(handle: *mut c_void) {
    snapshot::before_dlclose(handle);
}

/// In a fork child, first thing: makes the unwind state usable even if a thread that no
/// longer exists held its lock at the fork. Never blocks or allocates (one `getpid`).
pub fn after_fork_child() {
    snapshot::fork_child();
}

/// Per-thread unwinding state: framehop's rule cache and this thread's stack bounds.
pub struct ThreadUnwinder {
    #[cfg(target_arch = "x86_64")]
    cache: walk::Cache,
    #[cfg(target_arch = "x86_64")]
    stack: std::ops::Range<u64>,
    /// Drop the leading frames inside the shim (always, outside this module's tests).
    #[cfg(target_arch = "x86_64")]
    skip_own: bool,
}

impl ThreadUnwinder {
    /// Creates the calling thread's unwinder (allocates, so hold the reentrancy guard) over
    /// the stack bounds [`learn_thread_stack`] recorded for it; makes no other call, so it
    /// is safe inside any hook. `None` if the bounds are unknown or the architecture is not
    /// supported. (The unit tests, which have no thread-start hook, learn them here.)
    pub fn new() -> Option<Box<ThreadUnwinder>> {
        #[cfg(target_arch = "x86_64")]
        {
            #[cfg(test)]
            if known_stack().is_none() {
                learn_thread_stack();
            }
            let stack = known_stack()?;
            Some(Box::new(ThreadUnwinder {
                cache: walk::Cache::new_in(),
                stack,
                skip_own: true,
            }))
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            None
        }
    }

    /// Captures the calling thread's stack as lookup addresses (return address - 1,
    /// framehop's `address_for_lookup`), innermost first, with the shim's own frames
    /// removed: the first frame is the program's code that called into the shim.
    ///
    /// Does not allocate, take locks, block, make syscalls or panic. Returns the number of
    /// frames written (at most `out.len()`); 0 before [`init`] or when the current stack
    /// is not this thread's known stack (a signal handler on an alternate stack).
    #[inline(never)]
    pub fn capture(&mut self, out: &mut [u64]) -> usize {
        self.walk_from_here(out, &(0..0))
    }

    /// [`ThreadUnwinder::capture`] that ends after the first frame whose lookup address
    /// lies in `stop` (that frame included): where everything outer is known another way,
    /// such as the interpreter's eval loop, whose frames the Python frames describe.
    #[inline(never)]
    pub fn capture_until(&mut self, out: &mut [u64], stop: &Range<u64>) -> usize {
        self.walk_from_here(out, stop)
    }

    /// The walk of both captures, inlined into each so the start registers are its frame's.
    #[inline(always)]
    fn walk_from_here(&mut self, out: &mut [u64], stop: &Range<u64>) -> usize {
        #[cfg(target_arch = "x86_64")]
        {
            let Some(snap) = snapshot::current() else {
                return 0;
            };
            let start = walk::registers();
            walk::walk(
                snap,
                &mut self.cache,
                &self.stack,
                start,
                self.skip_own,
                stop,
                out,
            )
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (out, stop);
            0
        }
    }
}

/// Tells one stream which modules exist: owned by the sender thread, one per stream (a fork
/// child makes a new one, which announces everything again).
pub struct ModuleAnnouncer {
    /// Ids announced on this stream and not unloaded since, sorted.
    announced: Vec<ModuleId>,
    /// Address of the last snapshot compared (snapshots are never freed, so an address
    /// is never reused for another snapshot).
    seen: usize,
}

impl Default for ModuleAnnouncer {
    fn default() -> Self {
        Self::new()
    }
}

impl ModuleAnnouncer {
    pub fn new() -> Self {
        ModuleAnnouncer {
            announced: Vec::new(),
            seen: 0,
        }
    }

    /// Appends `ModuleUnload` for announced modules that are gone, then `Module` for every
    /// module not yet announced on this stream. Also notices loader changes that bypassed
    /// the hooks (glibc-internal `dlopen`, dependencies unloaded with a library) and
    /// rebuilds the snapshot then, so call it regularly (allocates; may take locks).
    pub fn poll(&mut self, out: &mut Vec<Record>) {
        snapshot::refresh_if_stale();
        // Every snapshot published since the last poll, in order: a module loaded and
        // unloaded in between is still announced, then unloaded.
        let mut changed = false;
        for snap in snapshot::published_since(self.seen) {
            self.seen = snap as *const snapshot::Snapshot as usize;
            self.announce(snap, out);
            changed = true;
        }
        // Modules loaded by paths the hooks do not wrap may bring the interpreter.
        if changed {
            crate::python::discover::after_modules_changed();
        }
    }

    fn announce(&mut self, snap: &snapshot::Snapshot, out: &mut Vec<Record>) {
        let mut present: Vec<ModuleId> = snap
            .modules
            .iter()
            .filter(|m| !m.is_vdso)
            .map(|m| m.id)
            .collect();
        present.sort_unstable();
        self.announced.retain(|id| {
            let keep = present.binary_search(id).is_ok();
            if !keep {
                out.push(Record::ModuleUnload(ModuleUnload { id: *id }));
            }
            keep
        });
        for m in snap.modules.iter().filter(|m| !m.is_vdso) {
            if let Err(at) = self.announced.binary_search(&m.id) {
                self.announced.insert(at, m.id);
                out.push(Record::Module(m.map.clone()));
            }
        }
    }
}
