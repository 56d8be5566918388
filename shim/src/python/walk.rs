//! The hot path: the calling thread's Python frames, innermost first, as stack words
//! (`python/mod.rs`), read with plain loads from the thread's own frame chain, and the
//! finalization gate that keeps walks off thread states the interpreter frees at
//! shutdown.
//!
//! The thread's `PyThreadState` comes from the GILState TSS key in `_PyRuntime` through
//! `pthread_getspecific`: it is the thread's own (set and cleared only by the thread
//! itself), stays set while the GIL is released, and is null on threads without Python.
//! Only the owning thread links and unlinks its frames and every frame holds a strong
//! reference to its code object, so a hook reads live memory, GIL held or not. The one
//! exception is interpreter finalization, which frees other threads' states while daemon
//! threads may still run native code: the gate (a Dekker pair on [`OFF`] and the walker
//! counts) makes the first free after `_finalizing` is set switch walks off for good and
//! wait for the walks in flight.
//!
//! No allocation, lock, system call or interpreter API call; at most [`MAX_PY_FRAMES`]
//! frames; every frame and code pointer is checked for alignment and type first.

use super::discover::layout;
use super::layout::{Layout, Model, CO_NO_MONITORING_EVENTS, OB_SIZE, OB_TYPE, OWNED_BY_CSTACK};
use super::{code, mem, BOUNDARY_WORD, MAX_PY_FRAMES};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Set for good once the interpreter began finalizing (or after a fork child reset).
static OFF: AtomicBool = AtomicBool::new(false);

/// Walks in flight, striped by thread so that concurrent walkers do not share a line.
#[repr(align(64))]
struct Stripe(AtomicU32);
const STRIPES: usize = 32;
static WALKERS: [Stripe; STRIPES] = [const { Stripe(AtomicU32::new(0)) }; STRIPES];

/// How long the finalizing thread waits for walks in flight (they take nanoseconds; a
/// count that stays up belongs to a thread that can no longer finish).
const DRAIN_LIMIT_NS: u64 = 200_000_000;

/// One walk in flight on a stripe; dropping it ends the walk. Whoever holds it may still
/// read what the walk found (code objects): the interpreter's shutdown waits for it.
pub struct InFlight(&'static AtomicU32);

impl InFlight {
    #[inline(always)]
    fn enter(stripe: usize) -> InFlight {
        let c = &WALKERS[stripe % STRIPES].0;
        // SeqCst: pairs with the finalizer's store of OFF and its loads of the counts.
        c.fetch_add(1, Ordering::SeqCst);
        InFlight(c)
    }
}

impl Drop for InFlight {
    #[inline(always)]
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

/// Writes the calling thread's Python frames into `out` (words) and the code object of
/// each `Code` frame into `codes`; returns the words written and, when there are any,
/// the walk's hold on the gate (keep it while reading the code objects). 0 when no
/// supported interpreter runs, the thread has no Python state, or the interpreter is
/// finalizing. `stripe` spreads walkers over the gate's counters (the thread id).
#[inline]
pub fn capture(out: &mut [u64], codes: &mut [u64], stripe: usize) -> (usize, Option<InFlight>) {
    let Some(l) = layout() else { return (0, None) };
    let in_flight = InFlight::enter(stripe);
    if OFF.load(Ordering::SeqCst) {
        return (0, None);
    }
    // SAFETY: `l` describes the running interpreter (validated at discovery); the gate
    // is entered and not switched off, so no thread state of this thread has been freed
    // by finalization (see the module comment).
    let n = unsafe { walk(l, out, codes) };
    (n, (n > 0).then_some(in_flight))
}

/// Where the native walk of a thread may end: the interpreter's eval function, whose
/// frames and everything outside them the Python frames describe. `None` (walk
/// everything) when no supported interpreter runs or walks are off for good.
#[inline]
pub fn native_stop() -> Option<&'static std::ops::Range<u64>> {
    let l = layout()?;
    if OFF.load(Ordering::Relaxed) || l.eval.is_empty() {
        return None;
    }
    Some(&l.eval)
}

/// From the free and unmap hooks (guard held): once the interpreter is finalizing,
/// switches walks off for good and waits for those in flight, before the program's free
/// (possibly of a thread state) goes ahead.
#[inline]
pub fn before_free() {
    let Some(l) = layout() else { return };
    if OFF.load(Ordering::Relaxed) {
        return;
    }
    // SAFETY: `_PyRuntime` is a static of the loaded interpreter.
    if unsafe { finalizing(l) } {
        shut_off();
    }
}

/// # Safety
/// `l.runtime` must be the running interpreter's `_PyRuntime`.
#[inline(always)]
unsafe fn finalizing(l: &Layout) -> bool {
    // SAFETY: forwarded (a pointer-sized field of `_PyRuntime`).
    unsafe { mem::usize_at(l.runtime + l.finalizing) != 0 }
}

#[cold]
#[inline(never)]
fn shut_off() {
    if OFF.swap(true, Ordering::SeqCst) {
        return;
    }
    let start = crate::record::clock::monotonic_ns();
    for s in &WALKERS {
        let mut spins = 0u32;
        while s.0.load(Ordering::SeqCst) != 0 {
            if spins < 1000 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
                if crate::record::clock::monotonic_ns().saturating_sub(start) > DRAIN_LIMIT_NS {
                    return;
                }
            }
        }
    }
}

/// In a fork child: the only thread is the forking one (inside the fork hook, not
/// walking), so counts left by the parent's other threads are stale.
pub fn after_fork_child() {
    for s in &WALKERS {
        s.0.store(0, Ordering::Relaxed);
    }
}

/// Whether `p` can be a pointer to an object or frame (non-null, 8-aligned).
#[inline(always)]
fn plausible(p: usize) -> bool {
    p != 0 && p % 8 == 0
}

/// # Safety
/// `l` must describe the running interpreter and the gate must be held open (see
/// [`capture`]).
unsafe fn walk(l: &Layout, out: &mut [u64], codes: &mut [u64]) -> usize {
    let rt = l.runtime;
    // SAFETY: fields of `_PyRuntime`, the interpreter's static (caller's contract).
    let (finalizing, initialized, key) = unsafe {
        (
            finalizing(l),
            mem::u32_at(rt + l.tss),
            mem::u32_at(rt + l.tss + 4),
        )
    };
    if finalizing || initialized != 1 {
        return 0;
    }
    // SAFETY: `key` is a created pthread key (`_is_initialized` is 1); the call only reads
    // the calling thread's specific-data slot.
    let ts = unsafe { libc::pthread_getspecific(key) } as usize;
    if !plausible(ts) {
        return 0;
    }
    // SAFETY: every read below is of `ts` or of a frame or code object reached from it.
    // `ts` is this thread's live thread state (the TSS value is set and cleared by this
    // thread only, and cleared before the state is freed, finalization excepted by the
    // gate); its frames are linked and unlinked by this thread only, which is here, and
    // each holds its code object. pthread_self has no preconditions.
    unsafe {
        let me = libc::pthread_self() as usize;
        if mem::usize_at(ts + l.ts_thread_id) != me || mem::usize_at(ts + l.ts_interp) == 0 {
            return 0;
        }
        let mut f = match l.model {
            Model::V310 | Model::V313 => mem::usize_at(ts + l.ts_frame),
            Model::V311 | Model::V312 => {
                let cf = mem::usize_at(ts + l.ts_frame);
                if !plausible(cf) {
                    return 0;
                }
                mem::usize_at(cf + l.cframe_current)
            }
        };
        let mut n = 0;
        let mut nc = 0;
        // Boundaries of 3.12+ shim frames count towards the bound too.
        for _ in 0..2 * MAX_PY_FRAMES {
            if !plausible(f) {
                break;
            }
            if matches!(l.model, Model::V312 | Model::V313)
                && mem::u8_at(f + l.fr_owner) == OWNED_BY_CSTACK
            {
                if n == out.len() {
                    break;
                }
                out[n] = BOUNDARY_WORD;
                n += 1;
                f = mem::usize_at(f + l.fr_prev);
                continue;
            }
            let c = mem::usize_at(f + l.fr_code);
            if !plausible(c) || mem::usize_at(c + OB_TYPE) != l.code_type {
                break;
            }
            let skip = l.model == Model::V313
                && mem::u32_at(c + l.co_flags) & CO_NO_MONITORING_EVENTS != 0;
            if !skip {
                if n + 2 > out.len() || nc == codes.len() {
                    break;
                }
                out[n] = code::key(l, c);
                out[n + 1] = u64::from(instr(l, f, c) as u32);
                codes[nc] = c as u64;
                n += 2;
                nc += 1;
            }
            let ends_segment = match l.model {
                Model::V310 => true,
                Model::V311 => mem::u8_at(f + l.fr_is_entry) != 0,
                Model::V312 | Model::V313 => false,
            };
            if ends_segment {
                if n == out.len() {
                    break;
                }
                out[n] = BOUNDARY_WORD;
                n += 1;
            }
            f = mem::usize_at(f + l.fr_prev);
        }
        n
    }
}

/// The frame's instruction index in code units, -1 when not started (or out of range).
///
/// # Safety
/// `f` must be a live frame of this thread running the code object `c`.
#[inline(always)]
unsafe fn instr(l: &Layout, f: usize, c: usize) -> i32 {
    // SAFETY: fields of the live frame and code object (caller's contract).
    unsafe {
        if l.model == Model::V310 {
            return mem::u32_at(f + l.fr_instr) as i32;
        }
        let ip = mem::usize_at(f + l.fr_instr) as isize;
        let start = (c + l.co_code_adaptive) as isize;
        let idx = ip.wrapping_sub(start) / 2;
        let units = mem::usize_at(c + OB_SIZE) as isize;
        if (0..units).contains(&idx) {
            idx as i32
        } else {
            -1
        }
    }
}
