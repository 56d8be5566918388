//! Recording on the hooking thread: the reentrancy guard, and appending events (with the
//! stack definitions they need) to the thread's slot. The hot path takes no lock but the
//! slot's uncontended flag, makes no system call and allocates nothing after a thread's
//! first event.

pub mod clock;
pub mod raw;
pub mod slot;
pub mod stack;
pub mod thread;

use crate::channel::Submitted;
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
        let (slot, cache, frames): (&Slot, _, &[u64]) = match unsafe { self.t.ctx(s).as_mut() } {
            Some(ctx) => {
                let n = match ctx.unwinder.as_mut() {
                    Some(u) if stack => u.capture(&mut ctx.scratch),
                    _ => 0,
                };
                (
                    ctx.slot,
                    Some(&mut ctx.cache),
                    &ctx.scratch[..n.min(ctx.scratch.len())],
                )
            }
            None => (s.registry.orphan(), None, &[]),
        };
        let stack = stack.then(|| (stack_hash(frames), frames));
        push(s, slot, cache, ev(stack.map_or(0, |(h, _)| h)), stack);
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

/// Appends `ev` to `slot`, preceded by the definition of its stack when `cache` (the
/// thread's, `None` for the orphan slot) does not know the stack yet.
#[inline]
fn push(
    s: &Session,
    slot: &Slot,
    mut cache: Option<&mut StackCache>,
    ev: RawEvent,
    stack: Option<(u64, &[u64])>,
) {
    let mut l = slot.lock();
    let mut define = match (stack, cache.as_deref()) {
        (None, _) => false,
        (Some((h, _)), Some(c)) => !c.contains(h),
        (Some(_), None) => true,
    };
    let frames = stack.map_or(0, |(_, f)| f.len());
    let need = |define: bool| if define { (2, frames) } else { (1, 0) };
    let room = l.batch().as_ref().is_some_and(|b| {
        let (e, f) = need(define);
        b.has_room(e, f)
    });
    if !room && !rotate(s, &mut l, &mut cache, &mut define, stack.is_some()) {
        s.channel.drops.add(Loss::of(&ev));
        return;
    }
    let Some(b) = l.batch().as_mut() else { return };
    if define {
        if let Some((h, f)) = stack {
            b.push_stack(h, f);
            if let Some(c) = cache.as_mut() {
                c.insert(h);
            }
        }
    }
    b.push(ev);
    l.mark_dirty();
}

/// Replaces the slot's full (or stolen) batch with an empty one, sending the full one.
/// False when no empty batch could be had (memory exhausted).
#[cold]
#[inline(never)]
fn rotate(
    s: &Session,
    l: &mut slot::Locked<'_>,
    cache: &mut Option<&mut StackCache>,
    define: &mut bool,
    has_stack: bool,
) -> bool {
    let saved = thread::errno::get();
    if send_taken(s, l) {
        // The dropped batch may have carried definitions this cache vouches for.
        if let Some(c) = cache.as_mut() {
            c.clear();
        }
        *define = has_stack;
    }
    let fresh = s.channel.fresh_batch();
    let ok = fresh.is_some();
    *l.batch() = fresh;
    thread::errno::set(saved);
    ok
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
