//! The GPU side of one process, kept apart from its host tables: applying GPU records
//! (allocations, frees whose api names a GPU space, pool events, capture marks) to the GPU
//! tables, and [`GpuState`], what analysis reads beyond the sites.
//!
//! Each GPU address space is its own namespace and table: pointers and registrations are
//! whole blocks (`live.rs`, keyed by space and address), handles are refcounted entries
//! (`handles.rs`), mappings and reservations are address ranges (`mapped.rs`, a free
//! carrying its length may cover part of one or several). Allocations are marked as made
//! during capture from the thread's capture windows (`capture.rs`). Sites record space and
//! ownership; which of them count toward the process's totals is analysis's business.
//!
//! GPU memory does not survive `fork` (CUDA does not work in a forked child), so a fork
//! snapshot takes nothing from here.

use crate::state::capture::CaptureWindows;
use crate::state::handles::{HandleOp, HandleTable};
use crate::state::live::{AddrSpace, Block, BlockKey, Horizon, LiveTable, Tally};
use crate::state::mapped::MappedTable;
use crate::state::pools::PoolState;
use crate::state::sites::SiteBook;
use crate::state::SiteKey;
use leakscope_protocol::{Api, Capture, Free, GpuAlloc, GpuSpace, PoolEvent, PoolHandle};
use std::collections::BTreeMap;

/// What a process did with GPUs that its sites do not show.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GpuState {
    /// Stream-ordered pools by handle.
    pub pools: BTreeMap<PoolHandle, PoolState>,
    /// CUDA-graph captures begun, on all threads together.
    pub captures: u64,
}

impl GpuState {
    /// Takes a pool event into account.
    pub(crate) fn pool_event(&mut self, event: &PoolEvent) {
        self.pools.entry(event.pool).or_default().apply(event);
    }
}

/// How a GPU record was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Applied {
    Done,
    /// A mapping, reservation or free of an empty range: nothing changed.
    EmptyRange,
    /// The record's api does not fit it: ignored.
    Malformed,
}

/// The GPU tables of one process (see the module documentation).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct GpuLive {
    /// Pointers and registrations.
    blocks: LiveTable,
    handles: HandleTable,
    mappings: MappedTable,
    reservations: MappedTable,
    captures: CaptureWindows,
}

/// Whether `api` gives memory or addresses back (and so cannot name an allocation).
fn releases(api: Api) -> bool {
    matches!(
        api,
        Api::CudaFree
            | Api::CudaFreeAsync
            | Api::CudaFreeHost
            | Api::CudaHostUnregister
            | Api::CuMemFree
            | Api::CuMemFreeAsync
            | Api::CuMemFreeHost
            | Api::CuMemHostUnregister
            | Api::CuMemRelease
            | Api::CuMemUnmap
            | Api::CuMemAddressFree
    )
}

fn block_key(space: GpuSpace, addr: u64) -> BlockKey {
    BlockKey {
        space: AddrSpace::Gpu(space),
        addr,
    }
}

impl GpuLive {
    /// Applies a GPU allocation.
    pub fn alloc(
        &mut self,
        a: &GpuAlloc,
        horizon: Horizon,
        book: &mut SiteBook<'_>,
        tally: &mut Tally,
    ) -> Applied {
        if releases(a.api) {
            return Applied::Malformed;
        }
        let during_capture = self.captures.contains(a.thread, a.ts.0);
        let Some(site) = SiteKey::gpu(a.stack, a.kind, a.api, a.device, during_capture) else {
            return Applied::Malformed;
        };
        let (addr, ts) = (a.addr.0, a.ts.0);
        let block = Block {
            ts,
            size: a.size,
            site,
        };
        let mapped = match site.space {
            Some(space @ (GpuSpace::Pointer | GpuSpace::Registration)) => {
                self.blocks
                    .alloc(block_key(space, addr), block, horizon, book);
                true
            }
            Some(GpuSpace::Handle) => {
                let op = match a.api {
                    Api::CuMemCreate => HandleOp::Create(block),
                    Api::CuMemRetainAllocationHandle | Api::CuMemImportFromShareableHandle => {
                        HandleOp::Reference(block)
                    }
                    _ => return Applied::Malformed,
                };
                self.handles.apply(addr, ts, op, horizon, book);
                true
            }
            Some(GpuSpace::Mapping) => self.mappings.map(addr, block, horizon, book, tally),
            Some(GpuSpace::Reservation) => self.reservations.map(addr, block, horizon, book, tally),
            Some(GpuSpace::Pool) | None => return Applied::Malformed,
        };
        if mapped {
            Applied::Done
        } else {
            Applied::EmptyRange
        }
    }

    /// Applies a free whose api names `space`.
    pub fn free(
        &mut self,
        f: &Free,
        space: GpuSpace,
        horizon: Horizon,
        book: &mut SiteBook<'_>,
        tally: &mut Tally,
    ) -> Applied {
        let (addr, ts) = (f.addr.0, f.ts.0);
        let unmapped = match space {
            GpuSpace::Pointer | GpuSpace::Registration => {
                self.blocks.free(block_key(space, addr), ts, horizon, book);
                true
            }
            GpuSpace::Handle => {
                self.handles
                    .apply(addr, ts, HandleOp::Release, horizon, book);
                true
            }
            GpuSpace::Mapping => self.mappings.unmap(addr, f.len, ts, horizon, book, tally),
            GpuSpace::Reservation => self
                .reservations
                .unmap(addr, f.len, ts, horizon, book, tally),
            GpuSpace::Pool => return Applied::Malformed,
        };
        if unmapped {
            Applied::Done
        } else {
            Applied::EmptyRange
        }
    }

    /// Applies a capture mark.
    pub fn capture(&mut self, c: &Capture, state: &mut GpuState, horizon: Horizon) {
        if self.captures.mark(c, horizon) {
            state.captures = state.captures.saturating_add(1);
        }
    }

    /// Settles the tables for good (see `ProcLive::finalize`).
    pub fn finalize(&mut self, book: &mut SiteBook<'_>, tally: &mut Tally) {
        for t in [self.blocks.finalize(), self.handles.finalize()] {
            tally.unknown_frees += t.unknown_frees;
            tally.implied_frees += t.implied_frees;
        }
        self.mappings.sweep(Horizon::END, book, tally);
        self.reservations.sweep(Horizon::END, book, tally);
    }

    /// The table of GPU pointers and host registrations (whole blocks).
    pub fn blocks(&self) -> &LiveTable {
        &self.blocks
    }

    /// Bytes the tables hold, every space together (for consistency checks).
    #[cfg(test)]
    pub fn outstanding_bytes(&self) -> u64 {
        let mut total = 0u64;
        self.blocks
            .for_each_outstanding(|_, b| total = total.saturating_add(b.size));
        self.handles
            .for_each_live(|_, _, size| total = total.saturating_add(size));
        for t in [&self.mappings, &self.reservations] {
            t.for_each_outstanding(|s, p| total = total.saturating_add(p.end - s));
        }
        total
    }

    /// The references the live entry at `handle` holds (0 when none is live).
    #[cfg(test)]
    pub fn handle_refs(&self, handle: u64) -> u64 {
        self.handles.refs(handle)
    }

    /// How many handles the handle table remembers.
    #[cfg(test)]
    pub fn tracked_handles(&self) -> usize {
        self.handles.tracked()
    }
}
