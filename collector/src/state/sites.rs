//! Per-site statistics updates: every change to a [`SiteStats`] goes through here, so the
//! counters stay consistent (saturating on hostile sizes) whichever table made the change.

use crate::state::hash::FxHashMap;
use crate::state::{SiteKey, SiteStats, StateOptions};

/// The sites of one process and the threshold that makes a freed block temporary.
pub(crate) struct SiteBook<'a> {
    sites: &'a mut FxHashMap<SiteKey, SiteStats>,
    temporary_ns: u64,
}

impl<'a> SiteBook<'a> {
    /// The book of `sites`, with the temporary threshold of `opts`.
    pub fn new(sites: &'a mut FxHashMap<SiteKey, SiteStats>, opts: &StateOptions) -> Self {
        SiteBook {
            sites,
            temporary_ns: opts.temporary_ns,
        }
    }
}

impl SiteBook<'_> {
    fn site(&mut self, key: SiteKey) -> &mut SiteStats {
        self.sites.entry(key).or_default()
    }

    /// A new allocation of `size` bytes, outstanding.
    pub fn alloc(&mut self, key: SiteKey, size: u64) {
        self.count(key, size);
        self.hold(key, size);
    }

    /// An allocation of `size` bytes made (totals only).
    #[inline]
    pub fn count(&mut self, key: SiteKey, size: u64) {
        let s = self.site(key);
        s.allocations = s.allocations.saturating_add(1);
        s.allocated_bytes = s.allocated_bytes.saturating_add(size);
    }

    /// A block of `size` bytes now outstanding (made, or inherited at fork).
    #[inline]
    pub fn hold(&mut self, key: SiteKey, size: u64) {
        let s = self.site(key);
        s.outstanding_bytes = s.outstanding_bytes.saturating_add(size);
        s.outstanding_count = s.outstanding_count.saturating_add(1);
        s.peak_bytes = s.peak_bytes.max(s.outstanding_bytes);
    }

    /// A whole block of `size` bytes freed after `held_ns` (`None`: when is unknown, so it
    /// is never temporary).
    #[inline]
    pub fn release(&mut self, key: SiteKey, size: u64, held_ns: Option<u64>) {
        let temporary = self.is_temporary(held_ns);
        let s = self.site(key);
        s.outstanding_bytes = s.outstanding_bytes.saturating_sub(size);
        s.outstanding_count = s.outstanding_count.saturating_sub(1);
        if temporary {
            s.temporary = s.temporary.saturating_add(1);
        }
        if let Some(ns) = held_ns {
            s.longest_held_ns = s.longest_held_ns.max(ns);
        }
    }

    /// A block that was never counted outstanding turned out to have lived `held_ns` (its
    /// free arrived first).
    pub fn held(&mut self, key: SiteKey, held_ns: u64) {
        let temporary = self.is_temporary(Some(held_ns));
        let s = self.site(key);
        if temporary {
            s.temporary = s.temporary.saturating_add(1);
        }
        s.longest_held_ns = s.longest_held_ns.max(held_ns);
    }

    /// Part of a block (`bytes` of it) given back; the block itself stays.
    pub fn shrink(&mut self, key: SiteKey, bytes: u64) {
        let s = self.site(key);
        s.outstanding_bytes = s.outstanding_bytes.saturating_sub(bytes);
    }

    /// One outstanding block became two (a mapping split by a partial unmap).
    pub fn split(&mut self, key: SiteKey) {
        let s = self.site(key);
        s.outstanding_count = s.outstanding_count.saturating_add(1);
    }

    /// Undoes [`SiteBook::count`] (a handle's history replayed after a late event).
    pub fn uncount(&mut self, key: SiteKey, size: u64) {
        let s = self.site(key);
        s.allocations = s.allocations.saturating_sub(1);
        s.allocated_bytes = s.allocated_bytes.saturating_sub(size);
    }

    /// Undoes [`SiteBook::hold`] (the peak stays: it was reached).
    pub fn unhold(&mut self, key: SiteKey, size: u64) {
        let s = self.site(key);
        s.outstanding_bytes = s.outstanding_bytes.saturating_sub(size);
        s.outstanding_count = s.outstanding_count.saturating_sub(1);
    }

    /// Undoes [`SiteBook::release`] with the same arguments (the longest hold stays: a
    /// larger one only makes `outlived.rs` more cautious).
    pub fn unrelease(&mut self, key: SiteKey, size: u64, held_ns: Option<u64>) {
        let temporary = self.is_temporary(held_ns);
        let s = self.site(key);
        s.outstanding_bytes = s.outstanding_bytes.saturating_add(size);
        s.outstanding_count = s.outstanding_count.saturating_add(1);
        if temporary {
            s.temporary = s.temporary.saturating_sub(1);
        }
    }

    fn is_temporary(&self, held_ns: Option<u64>) -> bool {
        held_ns.is_some_and(|ns| ns <= self.temporary_ns)
    }
}
