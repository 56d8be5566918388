//! A live table for whole-block memory: for each address, the newest event seen there. A
//! process has one for its host memory (every kind but [`MemoryKind::Mapped`]) and one for
//! its GPU pointers and host registrations (`gpu.rs`); keys name the address space, so the
//! same number in two spaces is two addresses, and each block carries its full site.
//!
//! Events of different threads arrive out of timestamp order (each thread's buffer is sent
//! separately), but at one address allocations and frees alternate in time, so the block
//! holding an address at the end is the newest event there when that is an allocation. The
//! table keeps just that: an event newer than the address's newest replaces it (a newer
//! allocation releases the one it replaces, whose free is late or lost; a newer free
//! releases the allocation before it); an older event arrives too late to change who holds
//! the address, and only counts. So outstanding bytes are exact whatever the arrival order,
//! every event costs one hash lookup, and nothing is allocated per event. A free that
//! arrives before its allocation is paired with it when the allocation comes (for the
//! temporary count); other late pairs are not, so `temporary` can be an undercount under
//! heavy reordering. Frees whose allocation was never seen are counted from the totals when
//! the stream ends.
//!
//! A freed address is remembered until it is older than the reordering window, so that a
//! late allocation older than the free does not come back as outstanding.

use crate::state::hash::FxHashMap;
use crate::state::sites::SiteBook;
use crate::state::SiteKey;
use leakscope_protocol::{GpuSpace, MemoryKind};
use std::collections::hash_map::Entry;

/// Fewest events between two sweeps.
const SWEEP_MIN_EVENTS: u64 = 1 << 20;

/// One allocation as the tables keep it: when, how many bytes, and the site it counts for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Block {
    pub ts: u64,
    pub size: u64,
    pub site: SiteKey,
}

/// Events older than this (`Some(ts)`: timestamps below it; `None`: every event, the
/// stream has ended) can no longer be paired with anything arriving later.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Horizon(pub Option<u64>);

impl Horizon {
    pub const END: Horizon = Horizon(None);

    pub fn is_old(self, ts: u64) -> bool {
        self.0.is_none_or(|h| ts < h)
    }
}

/// Counts that settling produces, added to the process by the caller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Tally {
    /// Frees whose allocation never arrived.
    pub unknown_frees: u64,
    /// Allocations released without a free: a later allocation of the address proves
    /// they were freed, but the free was never seen.
    pub implied_frees: u64,
}

/// The namespace an address belongs to: host memory of one kind, or one GPU address space
/// (a handle value may equal a device pointer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub(crate) enum AddrSpace {
    Host(MemoryKind),
    Gpu(GpuSpace),
}

/// An address in one address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub(crate) struct BlockKey {
    pub space: AddrSpace,
    pub addr: u64,
}

/// The newest event at an address.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
enum Slot {
    /// An allocation, outstanding.
    Live(Block),
    /// A free at `ts`; `paired` when an allocation before it has been released by it.
    Freed { ts: u64, paired: bool },
}

/// See the module documentation.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct LiveTable {
    slots: FxHashMap<BlockKey, Slot>,
    /// Allocations and frees applied, and blocks inherited at fork.
    allocs: u64,
    frees: u64,
    inherited: u64,
    events_since_sweep: u64,
}

impl LiveTable {
    /// Applies an allocation.
    #[inline]
    pub fn alloc(
        &mut self,
        key: BlockKey,
        block: Block,
        horizon: Horizon,
        book: &mut SiteBook<'_>,
    ) {
        self.allocs += 1;
        book.count(block.site, block.size);
        match self.slots.entry(key) {
            Entry::Vacant(v) => {
                book.hold(block.site, block.size);
                v.insert(Slot::Live(block));
            }
            Entry::Occupied(mut o) => match *o.get() {
                Slot::Live(old) if block.ts >= old.ts => {
                    // Its free is late, or was lost.
                    book.release(old.site, old.size, None);
                    book.hold(block.site, block.size);
                    *o.get_mut() = Slot::Live(block);
                }
                Slot::Freed { ts, .. } if block.ts >= ts => {
                    book.hold(block.site, block.size);
                    *o.get_mut() = Slot::Live(block);
                }
                Slot::Freed { ts, paired: false } => {
                    // The free came first; this is the block it freed.
                    book.held(block.site, ts - block.ts);
                    *o.get_mut() = Slot::Freed { ts, paired: true };
                }
                // Too late to hold the address: only counted.
                Slot::Live(_) | Slot::Freed { .. } => {}
            },
        }
        self.maybe_sweep(horizon);
    }

    /// Applies a free of the whole block at `key`.
    #[inline]
    pub fn free(&mut self, key: BlockKey, ts: u64, horizon: Horizon, book: &mut SiteBook<'_>) {
        self.frees += 1;
        match self.slots.entry(key) {
            Entry::Vacant(v) => {
                v.insert(Slot::Freed { ts, paired: false });
            }
            Entry::Occupied(mut o) => match *o.get() {
                Slot::Live(b) if ts >= b.ts => {
                    book.release(b.site, b.size, Some(ts - b.ts));
                    *o.get_mut() = Slot::Freed { ts, paired: true };
                }
                Slot::Freed { ts: old, .. } if ts >= old => {
                    *o.get_mut() = Slot::Freed { ts, paired: false };
                }
                // Too late to change who holds the address: only counted.
                Slot::Live(_) | Slot::Freed { .. } => {}
            },
        }
        self.maybe_sweep(horizon);
    }

    fn maybe_sweep(&mut self, horizon: Horizon) {
        self.events_since_sweep += 1;
        if self.events_since_sweep >= SWEEP_MIN_EVENTS.max(self.slots.len() as u64) {
            self.sweep(horizon);
        }
    }

    /// Forgets freed addresses older than `horizon` (with [`Horizon::END`], all of them).
    pub fn sweep(&mut self, horizon: Horizon) {
        self.events_since_sweep = 0;
        self.slots.retain(|_, slot| match slot {
            Slot::Live(_) => true,
            Slot::Freed { ts, .. } => !horizon.is_old(*ts),
        });
    }

    /// Settles the table for good: what was never paired is counted from the totals.
    /// Every allocation (or inherited block) not outstanding was freed once; frees beyond
    /// those had no allocation seen, and allocations beyond the frees lost theirs.
    pub fn finalize(&mut self) -> Tally {
        self.sweep(Horizon::END);
        let live = self.slots.len() as u64;
        let freed = (self.allocs + self.inherited).saturating_sub(live);
        Tally {
            unknown_frees: self.frees.saturating_sub(freed),
            implied_frees: freed.saturating_sub(self.frees),
        }
    }

    /// The allocations that held an address at `ts` (for a fork at `ts`), as far as the
    /// newest events show.
    pub fn holders_at(&self, ts: u64) -> Vec<(BlockKey, Block)> {
        self.slots
            .iter()
            .filter_map(|(k, s)| match s {
                Slot::Live(b) if b.ts <= ts => Some((*k, *b)),
                _ => None,
            })
            .collect()
    }

    /// Adds an inherited outstanding block (fork seeding, into an empty table: a second
    /// block at the same address is ignored and `false` returned).
    pub fn inherit(&mut self, key: BlockKey, block: Block, book: &mut SiteBook<'_>) -> bool {
        match self.slots.entry(key) {
            Entry::Occupied(_) => false,
            Entry::Vacant(v) => {
                v.insert(Slot::Live(block));
                self.inherited += 1;
                book.hold(block.site, block.size);
                true
            }
        }
    }

    /// Calls `f` for every outstanding allocation, in no particular order.
    pub fn for_each_outstanding(&self, mut f: impl FnMut(BlockKey, &Block)) {
        for (k, s) in &self.slots {
            if let Slot::Live(b) = s {
                f(*k, b);
            }
        }
    }
}
