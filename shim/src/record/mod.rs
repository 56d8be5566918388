//! Recording on the hooking thread: the reentrancy guard, and appending events (with the
//! stack and Python code definitions they need) to the thread's slot. A stack is the
//! native unwind followed by the Python frames (`crate::python`), hashed together. The hot
//! path takes no lock but the slot's uncontended flag, makes no system call and allocates
//! nothing after a thread's first event.

pub mod clock;
pub mod raw;
pub mod slot;
pub mod stack;
pub mod thread;

use crate::channel::Submitted;
use crate::python;
use crate::session::{self, Session};
use leakscope_protocol::{Api, MemoryKind, PoolAction};
use raw::{Loss, RawEvent, NO_DEVICE};
use slot::Slot;
use stack::{stack_hash, StackCache};
use std::marker::PhantomData;
use thread::ThreadState;

/// Proof that the calling thread is inside a hook and may record. Dropping it ends the hook.
pub struct Guard {
    t: &'static ThreadState,
    _not_send: PhantomData<*const ()>,
}

impl Guard {
    /// Enters a hook: `None` when the thread is already inside one, when no session is
    /// active, or when the thread's state is gone (very late thread teardown).
    #[inline(always)]
    pub fn enter() -> Option<Guard> {
        if !session::is_active() {
            return None;
        }
        Self::enter_any_state()
    }

    /// [`Guard::enter`] for the host hooks (C heap, mappings): also `None` in a GPU-only
    /// session.
    #[inline(always)]
    pub fn enter_host() -> Option<Guard> {
        if !session::tracks_host() {
            return None;
        }
        Self::enter()
    }

    /// Marks the thread busy whatever the session's state (for the shim's own work:
    /// session start, fork, exit). `None` when it already is.
    #[inline(always)]
    pub fn enter_any_state() -> Option<Guard> {
        let t = thread::current()?;
        if t.busy.get() {
            return None;
        }
        t.busy.set(true);
        Some(Guard {
            t,
            _not_send: PhantomData,
        })
    }

    /// Records memory handed to the program, with the calling thread's stack. `ts` is taken
    /// after the real call returned.
    #[inline]
    pub fn alloc(&self, addr: u64, size: u64, kind: MemoryKind, api: Api, ts: u64) {
        let Some(s) = session::current() else { return };
        let tid = self.t.tid();
        let ev = |stack| RawEvent::Alloc {
            tid,
            kind,
            api,
            device: NO_DEVICE,
            addr,
            size,
            stack,
            ts,
        };
        self.push_here(s, true, ev);
    }

    /// Records memory given back. `ts` is taken before the real call.
    #[inline]
    pub fn free(&self, addr: u64, len: u64, kind: MemoryKind, api: Api, ts: u64) {
        // Before the program's free goes ahead: it may be the interpreter freeing thread
        // states at shutdown, which Python frame walks must no longer read.
        python::walk::before_free();
        let tid = self.t.tid();
        self.record(RawEvent::Free {
            tid,
            kind,
            api,
            addr,
            len,
            ts,
        });
    }

    /// Records GPU memory (or address space) handed out by a CUDA call, with the calling
    /// thread's stack. `device` is the CUDA ordinal, `None` for host memory or unknown.
    pub fn gpu_alloc(&self, addr: u64, size: u64, kind: MemoryKind, api: Api, device: Option<u32>) {
        let Some(s) = session::current() else { return };
        let tid = self.t.tid();
        let device = device
            .and_then(|d| u8::try_from(d).ok())
            .filter(|&d| d != NO_DEVICE);
        let ts = clock::now();
        let ev = |stack| RawEvent::Alloc {
            tid,
            kind,
            api,
            device: device.unwrap_or(NO_DEVICE),
            addr,
            size,
            stack,
            ts,
        };
        self.push_here(s, true, ev);
    }

    /// Records a stream-ordered pool's state after `action`.
    pub fn pool(
        &self,
        pool: u64,
        device: Option<u32>,
        action: PoolAction,
        reserved: u64,
        used: u64,
    ) {
        let tid = self.t.tid();
        let device = device
            .and_then(|d| u8::try_from(d).ok())
            .unwrap_or(NO_DEVICE);
        self.record(RawEvent::Pool {
            tid,
            device,
            action,
            pool,
            reserved,
            used,
            ts: clock::now(),
        });
    }

    /// Records a CUDA-graph capture beginning or ending on this thread.
    pub fn capture(&self, begin: bool) {
        let tid = self.t.tid();
        self.record(RawEvent::Capture {
            tid,
            begin,
            ts: clock::now(),
        });
    }

    /// Records a PyTorch caching-allocator block handed out (with the calling thread's
    /// stack) or taken back.
    pub fn torch_block(&self, addr: u64, alloc: bool) {
        let Some(s) = session::current() else { return };
        let tid = self.t.tid();
        let ts = clock::now();
        let ev = |stack| RawEvent::TorchBlock {
            tid,
            alloc,
            addr,
            stack,
            ts,
        };
        self.push_here(s, alloc, ev);
    }

    /// Records the parent's side of a fork.
    pub fn fork(&self, child: u32, ts: u64) {
        let tid = self.t.tid();
        self.record(RawEvent::Fork { tid, child, ts });
    }

    #[inline]
    fn record(&self, ev: RawEvent) {
        let Some(s) = session::current() else { return };
        self.push_here(s, false, |_| ev);
    }

    /// Appends an event to this thread's slot, or to the orphan slot when the thread has
    /// no context. With `stack`, `ev` gets the hash of the calling thread's stack (empty
    /// in the orphan slot), defined ahead of it when need be; without, it gets 0 and no
    /// stack goes with it.
    #[inline]
    fn push_here(&self, s: &'static Session, stack: bool, ev: impl FnOnce(u64) -> RawEvent) {
        // SAFETY: we hold the guard (see `ThreadState::ctx`); the reference dies with it.
        let Some(ctx) = (unsafe { self.t.ctx(s).as_mut() }) else {
            let stack = stack.then(|| Captured::native(&[]));
            let hash = stack.map_or(0, |c| c.hash);
            return push(s, s.registry.orphan(), None, ev(hash), stack);
        };
        if !stack {
            return push(s, ctx.slot, Some(&mut ctx.cache), ev(0), None);
        }
        let native = ctx.native.min(ctx.scratch.len());
        let stop = python::walk::native_stop().filter(|_| !s.config.python_full_native);
        let n = match (ctx.unwinder.as_mut(), stop) {
            (Some(u), Some(stop)) => u.capture_until(&mut ctx.scratch[..native], stop),
            (Some(u), None) => u.capture(&mut ctx.scratch[..native]),
            (None, _) => 0,
        }
        .min(native);
        // Held until the code definitions are copied: the interpreter's shutdown waits
        // for it before freeing thread states.
        let (py, _gate) = python::walk::capture(
            &mut ctx.scratch[n..],
            &mut ctx.py_codes,
            self.t.tid() as usize,
        );
        let words = &ctx.scratch[..n + py];
        let c = Captured {
            hash: stack_hash(words, py),
            words,
            py,
            codes: &ctx.py_codes,
        };
        push(s, ctx.slot, Some(&mut ctx.cache), ev(c.hash), Some(c));
    }

    /// Hands this thread's pending events to the sender now (waiting per the full-channel
    /// policy if need be).
    pub fn flush(&self) {
        let Some(s) = session::current() else { return };
        // SAFETY: we hold the guard (see `ThreadState::ctx`); the reference dies with it.
        let Some(ctx) = (unsafe { self.t.ctx(s).as_mut() }) else {
            return;
        };
        if send_taken(s, &mut ctx.slot.lock()) {
            ctx.cache.clear();
        }
    }
}

impl Drop for Guard {
    #[inline(always)]
    fn drop(&mut self) {
        self.t.busy.set(false);
    }
}

/// A captured stack: its hash, its words (native frames, then `py` Python frame words)
/// and the code object of each Python `Code` frame, in order.
#[derive(Clone, Copy)]
struct Captured<'a> {
    hash: u64,
    words: &'a [u64],
    py: usize,
    codes: &'a [u64],
}

impl<'a> Captured<'a> {
    fn native(frames: &'a [u64]) -> Captured<'a> {
        Captured {
            hash: stack_hash(frames, 0),
            words: frames,
            py: 0,
            codes: &[],
        }
    }
}

/// Appends `ev` to `slot`, preceded by the definition of its stack (and of the Python
/// code objects it names) when `cache` (the thread's, `None` for the orphan slot) does
/// not know them yet.
#[inline]
fn push(
    s: &Session,
    slot: &Slot,
    mut cache: Option<&mut StackCache>,
    ev: RawEvent,
    stack: Option<Captured<'_>>,
) {
    let mut l = slot.lock();
    let mut define = match (stack, cache.as_deref()) {
        (None, _) => false,
        (Some(c), Some(cache)) => !cache.contains(c.hash),
        (Some(_), None) => true,
    };
    let frames = stack.map_or(0, |c| c.words.len());
    // Each pass either succeeds or follows a dropped batch (which empties the caches, so
    // everything is defined again in a fresh batch); a third drop in a row gives up.
    let mut passes = 0;
    loop {
        passes += 1;
        if passes > 3 {
            s.channel.drops.add(Loss::of(&ev));
            return;
        }
        if let (true, Some(c), Some(cache)) = (define, stack, cache.as_deref_mut()) {
            if c.py > 0 {
                match define_codes(s, &mut l, cache, c) {
                    Rotated::Fresh => {}
                    Rotated::AfterDrop => continue,
                    Rotated::Failed => {
                        s.channel.drops.add(Loss::of(&ev));
                        return;
                    }
                }
            }
        }
        let (e, f) = if define { (2, frames) } else { (1, 0) };
        if l.batch().as_ref().is_some_and(|b| b.has_room(e, f)) {
            break;
        }
        match rotate(s, &mut l, cache.as_deref_mut()) {
            Rotated::Fresh => break,
            Rotated::AfterDrop => {
                define = stack.is_some();
                if stack.is_some_and(|c| c.py > 0) {
                    continue;
                }
                break;
            }
            Rotated::Failed => {
                s.channel.drops.add(Loss::of(&ev));
                return;
            }
        }
    }
    let Some(b) = l.batch().as_mut() else { return };
    if define {
        if let Some(c) = stack {
            b.push_stack(c.hash, c.words, c.py);
            if let Some(cache) = cache.as_mut() {
                cache.insert(c.hash);
            }
        }
    }
    b.push(ev);
    l.mark_dirty();
}

/// Appends the definitions of the code objects `c` names that `cache` does not know, each
/// in a batch with room for it (rotating as need be). `Fresh` when all are in.
#[cold]
#[inline(never)]
fn define_codes(
    s: &Session,
    l: &mut slot::Locked<'_>,
    cache: &mut StackCache,
    c: Captured<'_>,
) -> Rotated {
    let Some(layout) = python::discover::layout() else {
        return Rotated::Fresh;
    };
    let py_words = &c.words[c.words.len() - c.py..];
    for (key, &code) in python::keys(py_words).zip(c.codes) {
        if cache.has_code(key) {
            continue;
        }
        let code = code as usize;
        // SAFETY: `code` was read from one of this thread's live frames during this hook,
        // and the frame (which holds a reference to it) is still there: only this thread
        // runs its frames, and it is here. The walk's gate is still held, so interpreter
        // shutdown has not freed anything yet.
        let bound = unsafe { python::code::size_bound(layout, code) };
        if !l.batch().as_ref().is_some_and(|b| b.has_room_bytes(bound)) {
            match rotate(s, l, Some(&mut *cache)) {
                Rotated::Fresh => {}
                other => return other,
            }
        }
        let Some(b) = l.batch().as_mut() else {
            return Rotated::Failed;
        };
        // SAFETY: as above; `write` appends at most `bound` bytes.
        b.push_code(key, bound, |out| unsafe {
            python::code::write(layout, code, out)
        });
        cache.insert_code(key);
        l.mark_dirty();
    }
    Rotated::Fresh
}

/// What became of a rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rotated {
    /// An empty batch is in place; the full one was sent (definitions still valid).
    Fresh,
    /// An empty batch is in place, but the full one was dropped and the caches cleared.
    AfterDrop,
    /// No empty batch could be had (memory exhausted).
    Failed,
}

/// Replaces the slot's full (or stolen) batch with an empty one, sending the full one.
#[cold]
#[inline(never)]
fn rotate(s: &Session, l: &mut slot::Locked<'_>, cache: Option<&mut StackCache>) -> Rotated {
    let saved = thread::errno::get();
    let dropped = send_taken(s, l);
    if dropped {
        // The dropped batch may have carried definitions this cache vouches for.
        if let Some(c) = cache {
            c.clear();
        }
    }
    let fresh = s.channel.fresh_batch();
    let ok = fresh.is_some();
    *l.batch() = fresh;
    thread::errno::set(saved);
    match (ok, dropped) {
        (false, _) => Rotated::Failed,
        (true, false) => Rotated::Fresh,
        (true, true) => Rotated::AfterDrop,
    }
}

/// Takes the slot's batch and hands it to the sender (an empty one goes back to the pool).
/// True when it had to be dropped.
fn send_taken(s: &Session, l: &mut slot::Locked<'_>) -> bool {
    s.channel.submit_taken(l.take(), &session::is_active) == Submitted::Dropped
}

/// Called when a thread hands its context back: its pending events go to the sender if
/// the channel has room at once, else they stay in the slot for the sender to steal.
fn hand_over(slot: &Slot) {
    let Some(s) = session::current() else { return };
    if !session::is_active() {
        return;
    }
    let mut l = slot.lock();
    if let Some(b) = l.take() {
        if b.is_empty() {
            s.channel.recycle(b);
        } else if let Err(b) = s.channel.try_submit(b) {
            *l.batch() = Some(b);
            l.mark_dirty();
        }
    }
}
