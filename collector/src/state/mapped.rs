//! A live table of address ranges rather than blocks: a process has one for its
//! [`MemoryKind::Mapped`] memory, and one each for its GPU mappings (`cuMemMap`) and
//! reserved GPU addresses (`cuMemAddressReserve`); each piece carries its full site. An unmap may cover part of a mapping (the mapping is split; the pieces left
//! keep its site) or several mappings, and reduces outstanding bytes by exactly the bytes
//! it overlaps. An unmap applies to the mappings made before it; one that finds none waits
//! for a mapping still in flight. A mapping made over an older one that is never unmapped
//! (`MAP_FIXED` replacing it, or the unmap was dropped) cuts the older one once it is past
//! the reordering window.

use crate::state::live::{Block, Horizon, Tally};
use crate::state::sites::SiteBook;
use crate::state::SiteKey;
#[cfg(doc)]
use leakscope_protocol::MemoryKind;
use std::collections::BTreeMap;

/// Fewest mapped events between two sweeps.
const SWEEP_MIN_EVENTS: u64 = 4096;

/// One mapped range `[start, end)` (the start is the table key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Piece {
    pub end: u64,
    pub ts: u64,
    pub site: SiteKey,
    /// Still the whole mapping as made (never split), so its unmap can be temporary.
    pub whole: bool,
}

#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
struct PendingUnmap {
    start: u64,
    end: u64,
    ts: u64,
}

/// See the module documentation.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct MappedTable {
    /// Keyed by (start, sequence number): ranges may overlap while unmaps are in flight.
    pieces: BTreeMap<(u64, u64), Piece>,
    seq: u64,
    /// Longest piece ever inserted: bounds how far before a range an overlap can start.
    max_len: u64,
    pending: Vec<PendingUnmap>,
    events_since_sweep: u64,
}

fn key(p: &Piece) -> SiteKey {
    p.site
}

impl MappedTable {
    /// Applies a mapping (`block`: when, how many bytes, for which site) at `start`.
    /// Returns `false` (and changes nothing) for an empty range.
    pub fn map(
        &mut self,
        start: u64,
        block: Block,
        horizon: Horizon,
        book: &mut SiteBook<'_>,
        tally: &mut Tally,
    ) -> bool {
        let Block { ts, size, site } = block;
        let end = start.saturating_add(size);
        if end == start {
            return false;
        }
        let piece = Piece {
            end,
            ts,
            site,
            whole: true,
        };
        book.alloc(key(&piece), end - start);
        self.insert(start, piece);
        let mut i = 0;
        while i < self.pending.len() {
            let p = self.pending[i];
            if p.ts >= ts && p.start < end && start < p.end {
                self.cut(p.start, p.end, p.ts, book);
                self.pending.swap_remove(i);
            } else {
                i += 1;
            }
        }
        self.maybe_sweep(horizon, book, tally);
        true
    }

    /// Applies an unmap of `len` bytes at `start`. Returns `false` for an empty range.
    pub fn unmap(
        &mut self,
        start: u64,
        len: u64,
        ts: u64,
        horizon: Horizon,
        book: &mut SiteBook<'_>,
        tally: &mut Tally,
    ) -> bool {
        let end = start.saturating_add(len);
        if end == start {
            return false;
        }
        if !self.cut(start, end, ts, book) {
            self.pending.push(PendingUnmap { start, end, ts });
        }
        self.maybe_sweep(horizon, book, tally);
        true
    }

    fn insert(&mut self, start: u64, piece: Piece) {
        self.seq += 1;
        self.max_len = self.max_len.max(piece.end - start);
        self.pieces.insert((start, self.seq), piece);
    }

    /// Removes `[start, end)` from every piece made at or before `ts`; `true` if any
    /// piece overlapped.
    fn cut(&mut self, start: u64, end: u64, ts: u64, book: &mut SiteBook<'_>) -> bool {
        self.cut_where(start, end, Some(ts), |p| p.ts <= ts, book)
    }

    /// Removes `[start, end)` from every piece that `pick` selects; `ts` is when (unknown
    /// for an implied unmap). `true` if any piece overlapped.
    fn cut_where(
        &mut self,
        start: u64,
        end: u64,
        ts: Option<u64>,
        pick: impl Fn(&Piece) -> bool,
        book: &mut SiteBook<'_>,
    ) -> bool {
        let lo = start.saturating_sub(self.max_len);
        let hit: Vec<(u64, u64)> = self
            .pieces
            .range((lo, 0)..(end, 0))
            .filter(|(_, p)| p.end > start && pick(p))
            .map(|(k, _)| *k)
            .collect();
        for k in &hit {
            if let Some(p) = self.pieces.remove(k) {
                self.cut_piece(k.0, p, start, end, ts, book);
            }
        }
        !hit.is_empty()
    }

    /// Takes `[start, end)` out of piece `p` (at `p_start`), which it overlaps.
    fn cut_piece(
        &mut self,
        p_start: u64,
        p: Piece,
        start: u64,
        end: u64,
        ts: Option<u64>,
        book: &mut SiteBook<'_>,
    ) {
        let overlap = p.end.min(end) - p_start.max(start);
        let left = (p_start < start).then_some((p_start, start));
        let right = (p.end > end).then_some((end, p.end));
        let rest = |s: u64, e: u64| {
            (
                s,
                Piece {
                    end: e,
                    whole: false,
                    ..p
                },
            )
        };
        match (left, right) {
            (None, None) => {
                let held = ts.filter(|_| p.whole).map(|t| t.saturating_sub(p.ts));
                book.release(key(&p), overlap, held);
            }
            (Some((s, e)), None) | (None, Some((s, e))) => {
                book.shrink(key(&p), overlap);
                let (s, piece) = rest(s, e);
                self.insert(s, piece);
            }
            (Some((ls, le)), Some((rs, re))) => {
                book.shrink(key(&p), overlap);
                book.split(key(&p));
                let (s, piece) = rest(ls, le);
                self.insert(s, piece);
                let (s, piece) = rest(rs, re);
                self.insert(s, piece);
            }
        }
    }

    fn maybe_sweep(&mut self, horizon: Horizon, book: &mut SiteBook<'_>, tally: &mut Tally) {
        self.events_since_sweep += 1;
        if self.events_since_sweep >= SWEEP_MIN_EVENTS.max(self.pieces.len() as u64) {
            self.sweep(horizon, book, tally);
        }
    }

    /// Counts unmaps older than `horizon` that never found their mapping as unknown frees,
    /// and cuts older pieces overlapped by a newer piece that is past `horizon`.
    pub fn sweep(&mut self, horizon: Horizon, book: &mut SiteBook<'_>, tally: &mut Tally) {
        self.events_since_sweep = 0;
        let before = self.pending.len();
        self.pending.retain(|p| !horizon.is_old(p.ts));
        tally.unknown_frees += (before - self.pending.len()) as u64;
        // Overlapping pairs: sweep by start, comparing each piece with those after it that
        // begin before it ends.
        let all: Vec<((u64, u64), Piece)> = self.pieces.iter().map(|(k, p)| (*k, *p)).collect();
        let mut cuts: Vec<(Piece, u64, u64)> = Vec::new();
        for (i, (ka, a)) in all.iter().enumerate() {
            for (kb, b) in all[i + 1..].iter().take_while(|(kb, _)| kb.0 < a.end) {
                let (older, newer_start, newer) = if (a.ts, ka.1) < (b.ts, kb.1) {
                    (a, kb.0, b)
                } else {
                    (b, ka.0, a)
                };
                if horizon.is_old(newer.ts) && older.ts < newer.ts {
                    cuts.push((*older, newer_start, newer.end));
                }
            }
        }
        // An older piece may overlap several newer ones, and its first cut replaces it with
        // remnants: pick pieces by the older piece's identity (time and site), not its key.
        for (older, s, e) in cuts {
            self.cut_where(
                s,
                e,
                None,
                |p| p.ts == older.ts && p.site == older.site,
                book,
            );
        }
    }

    /// Pieces that existed at `ts` (for a fork at `ts`).
    pub fn pieces_at(&self, ts: u64) -> Vec<(u64, Piece)> {
        self.pieces
            .iter()
            .filter(|(_, p)| p.ts <= ts)
            .map(|(k, p)| (k.0, *p))
            .collect()
    }

    /// Adds an inherited piece (fork seeding).
    pub fn inherit(&mut self, start: u64, piece: Piece, book: &mut SiteBook<'_>) {
        book.hold(key(&piece), piece.end - start);
        self.insert(start, piece);
    }

    #[cfg(test)]
    /// Calls `f` for every outstanding piece.
    pub fn for_each_outstanding(&self, mut f: impl FnMut(u64, &Piece)) {
        for (k, p) in &self.pieces {
            f(k.0, p);
        }
    }
}
