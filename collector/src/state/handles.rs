//! The live table of one process for GPU physical-allocation handles: refcounted entries.
//! `cuMemCreate` makes an owned entry with one reference; `cuMemRetainAllocationHandle` and
//! `cuMemImportFromShareableHandle` add a reference to a live entry, or, for a handle not
//! known to be live, make a not-owned entry of their own (retained, imported) with one
//! reference; `cuMemRelease` drops one reference, and the entry dies at zero. A create at a
//! handle that is still live proves the old entry's releases were lost (an implied free).
//!
//! As in `live.rs`, one handle's events are applied in timestamp order whatever order they
//! arrive in (each thread's buffer is sent separately). A handle keeps the events of the
//! reordering window; an event that arrives in order is applied as a step, one that arrives
//! late is placed by undoing the window's effects on the sites and replaying them with it.
//! Events older than the window are folded into the handle's settled state; frees that
//! found no entry and implied frees are counted when they are folded.

use crate::state::hash::FxHashMap;
use crate::state::live::{Block, Horizon, Tally};
use crate::state::sites::SiteBook;
use crate::state::SiteKey;

/// Fewest handle events between two sweeps.
const SWEEP_MIN_EVENTS: u64 = 4096;

/// What a handle event does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum HandleOp {
    /// A new physical allocation (`cuMemCreate`): an owned entry.
    Create(Block),
    /// Another reference (`cuMemRetainAllocationHandle`, `cuMemImportFromShareableHandle`):
    /// to the live entry, or a not-owned entry of its own where none is live.
    Reference(Block),
    /// One reference less (`cuMemRelease`).
    Release,
}

#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
struct Event {
    ts: u64,
    op: HandleOp,
}

/// A live entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Entry {
    site: SiteKey,
    size: u64,
    refs: u64,
    ts: u64,
}

/// What replaying an event did to the sites and counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Effect {
    Count(SiteKey, u64),
    Hold(SiteKey, u64),
    Release(SiteKey, u64, Option<u64>),
    UnknownFree,
    ImpliedFree,
}

/// One handle: its settled entry and the events of the window after it.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct History {
    /// The entry after every folded event.
    base: Option<Entry>,
    /// Events after `base`, by timestamp (equal ones in arrival order).
    events: Vec<Event>,
    /// What replaying `events` from `base` did (applied to the sites).
    effects: Vec<Effect>,
    /// The entry after every event.
    current: Option<Entry>,
}

/// See the module documentation.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct HandleTable {
    handles: FxHashMap<u64, History>,
    /// Unknown and implied frees of folded events.
    settled: Tally,
    events_since_sweep: u64,
}

/// Applies `event` to the entry `cur`, recording what it did in `out`.
fn step(cur: &mut Option<Entry>, event: &Event, out: &mut Vec<Effect>) {
    let open = |block: &Block, out: &mut Vec<Effect>| {
        out.push(Effect::Count(block.site, block.size));
        out.push(Effect::Hold(block.site, block.size));
        Entry {
            site: block.site,
            size: block.size,
            refs: 1,
            ts: event.ts,
        }
    };
    match (event.op, cur.as_mut()) {
        (HandleOp::Create(block), old) => {
            if let Some(old) = old {
                // Its releases are late or were lost.
                out.push(Effect::Release(old.site, old.size, None));
                out.push(Effect::ImpliedFree);
            }
            *cur = Some(open(&block, out));
        }
        (HandleOp::Reference(_), Some(entry)) => entry.refs = entry.refs.saturating_add(1),
        (HandleOp::Reference(block), None) => *cur = Some(open(&block, out)),
        (HandleOp::Release, Some(entry)) if entry.refs > 1 => entry.refs -= 1,
        (HandleOp::Release, Some(entry)) => {
            let held = event.ts.saturating_sub(entry.ts);
            out.push(Effect::Release(entry.site, entry.size, Some(held)));
            *cur = None;
        }
        (HandleOp::Release, None) => out.push(Effect::UnknownFree),
    }
}

/// Replays `events` from `base`: what they did, and the entry after them.
fn replay(base: Option<Entry>, events: &[Event]) -> (Vec<Effect>, Option<Entry>) {
    let mut cur = base;
    let mut effects = Vec::new();
    for e in events {
        step(&mut cur, e, &mut effects);
    }
    (effects, cur)
}

fn apply_effects(effects: &[Effect], book: &mut SiteBook<'_>) {
    for e in effects {
        match *e {
            Effect::Count(site, size) => book.count(site, size),
            Effect::Hold(site, size) => book.hold(site, size),
            Effect::Release(site, size, held) => book.release(site, size, held),
            Effect::UnknownFree | Effect::ImpliedFree => {}
        }
    }
}

fn undo_effects(effects: &[Effect], book: &mut SiteBook<'_>) {
    for e in effects.iter().rev() {
        match *e {
            Effect::Count(site, size) => book.uncount(site, size),
            Effect::Hold(site, size) => book.unhold(site, size),
            Effect::Release(site, size, held) => book.unrelease(site, size, held),
            Effect::UnknownFree | Effect::ImpliedFree => {}
        }
    }
}

impl HandleTable {
    /// Applies `op` on `handle` at `ts`.
    pub fn apply(
        &mut self,
        handle: u64,
        ts: u64,
        op: HandleOp,
        horizon: Horizon,
        book: &mut SiteBook<'_>,
    ) {
        let event = Event { ts, op };
        let h = self.handles.entry(handle).or_default();
        let pos = h.events.partition_point(|e| e.ts <= ts);
        if pos == h.events.len() {
            // In order: one step from the current entry.
            let from = h.effects.len();
            step(&mut h.current, &event, &mut h.effects);
            apply_effects(&h.effects[from..], book);
            h.events.push(event);
        } else {
            // Late: replay the window with it in place.
            undo_effects(&h.effects, book);
            h.events.insert(pos, event);
            let (effects, current) = replay(h.base, &h.events);
            apply_effects(&effects, book);
            h.effects = effects;
            h.current = current;
        }
        self.events_since_sweep += 1;
        if self.events_since_sweep >= SWEEP_MIN_EVENTS.max(self.handles.len() as u64) {
            self.sweep(horizon);
        }
    }

    /// Folds events older than `horizon` (with [`Horizon::END`], all of them) into their
    /// handles' settled state, and forgets handles with nothing live and nothing pending.
    pub fn sweep(&mut self, horizon: Horizon) {
        self.events_since_sweep = 0;
        let settled = &mut self.settled;
        self.handles.retain(|_, h| {
            let old = h.events.partition_point(|e| horizon.is_old(e.ts));
            if old > 0 {
                let (folded, base) = replay(h.base, &h.events[..old]);
                for e in &folded {
                    match e {
                        Effect::UnknownFree => settled.unknown_frees += 1,
                        Effect::ImpliedFree => settled.implied_frees += 1,
                        _ => {}
                    }
                }
                // Replay is sequential: the window's effects begin with the folded ones.
                h.effects.drain(..folded.len().min(h.effects.len()));
                h.events.drain(..old);
                h.base = base;
            }
            h.base.is_some() || !h.events.is_empty()
        });
    }

    /// Settles the table for good: every event folded, its unknown and implied frees
    /// returned.
    pub fn finalize(&mut self) -> Tally {
        self.sweep(Horizon::END);
        self.settled
    }

    /// Calls `f` for every live entry: its handle, site and bytes.
    #[cfg(test)]
    pub fn for_each_live(&self, mut f: impl FnMut(u64, SiteKey, u64)) {
        for (handle, h) in &self.handles {
            if let Some(e) = h.current {
                f(*handle, e.site, e.size);
            }
        }
    }

    /// How many handles the table remembers (live, or with events in the window).
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.handles.len()
    }

    /// The references the live entry at `handle` holds (0 when none is live).
    #[cfg(test)]
    pub fn refs(&self, handle: u64) -> u64 {
        self.handles
            .get(&handle)
            .and_then(|h| h.current)
            .map_or(0, |e| e.refs)
    }
}
