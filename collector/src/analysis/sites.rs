//! From the state's sites (one per distinct stack, memory kind and, for GPU memory, device,
//! space, ownership, capture mark and api) to report sites: the host pools, merging of sites
//! with the same symbolized stack, ranking, the `top` limit and per-process totals. GPU
//! pools are `gpu_pool.rs`'s.

use crate::analysis::aging::series::SiteHistory;
use crate::analysis::aging_model::Tested;
use crate::analysis::model::{Counts, Frame, Memory, Site, Space, Totals};
use crate::state::FxHashMap;
use crate::state::SiteStats;
use leakscope_protocol::{DeviceOrdinal, MemoryKind};
use std::cmp::Reverse;

/// The allocator pool a host allocation of `kind` came from (GPU sites get theirs from
/// [`crate::analysis::gpu_pool`]; the GPU names here are fallbacks).
pub fn pool_for(kind: MemoryKind) -> &'static str {
    match kind {
        MemoryKind::Host => "malloc",
        MemoryKind::Mapped => "mmap",
        MemoryKind::Device => "cuda",
        MemoryKind::Pinned => "cuda-host",
        MemoryKind::Managed => "cuda-managed",
    }
}

/// One state site after symbolization, before merging.
#[derive(Clone, Debug)]
pub struct SymbolizedSite {
    pub kind: MemoryKind,
    pub pool: &'static str,
    /// GPU only (`None`, `None`, owned and not captured for host memory).
    pub device: Option<DeviceOrdinal>,
    pub space: Option<Space>,
    pub owned: bool,
    pub during_capture: bool,
    /// Frames with allocator frames removed, innermost first.
    pub frames: Vec<Frame>,
    pub stats: SiteStats,
    /// Outstanding (and outlived) bytes over time, on the process's grid.
    pub history: SiteHistory,
}

/// What makes two frames the same source location. Where the line is known the address
/// is left out, so that several code addresses of one source line merge (for Python
/// frames: several instructions of one line, or several code objects of one function);
/// where it is not, the address is all that tells call sites apart.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct FrameIdentity<'f> {
    function: Option<&'f str>,
    file: Option<&'f str>,
    line: Option<u32>,
    module: Option<&'f str>,
    address: Option<&'f str>,
    inlined: bool,
    python: bool,
}

impl<'f> From<&'f Frame> for FrameIdentity<'f> {
    fn from(f: &'f Frame) -> Self {
        FrameIdentity {
            function: f.function.as_deref(),
            file: f.file.as_deref(),
            line: f.line,
            module: f.module.as_deref(),
            address: f.line.is_none().then_some(&*f.address),
            inlined: f.inlined,
            python: f.python,
        }
    }
}

/// Everything that keeps two sites apart but their frames.
type SiteClass = (
    MemoryKind,
    &'static str,
    Option<DeviceOrdinal>,
    Option<Space>,
    bool,
    bool,
);

type SiteIdentity<'f> = (SiteClass, Vec<FrameIdentity<'f>>);

/// Merges sites with the same memory kind, pool, device, space, ownership, capture mark and
/// symbolized frames: counts are summed,
/// and so are peaks (an upper bound of the merged site's real peak). The merged site shows
/// the frames (and so the addresses) of its first part in input order.
pub fn merge_sites(parts: &[SymbolizedSite]) -> Vec<Site> {
    let mut index: FxHashMap<SiteIdentity<'_>, usize> = FxHashMap::default();
    let mut merged: Vec<Site> = Vec::new();
    for part in parts {
        let class = (
            part.kind,
            part.pool,
            part.device,
            part.space,
            part.owned,
            part.during_capture,
        );
        let identity = (class, part.frames.iter().map(FrameIdentity::from).collect());
        let slot = *index.entry(identity).or_insert_with(|| {
            merged.push(Site {
                memory: Memory::from(part.kind),
                pool: part.pool.to_owned(),
                device: part.device.map(|d| d.0),
                space: part.space,
                owned: part.owned,
                during_capture: part.during_capture,
                outstanding_bytes: 0,
                outstanding_count: 0,
                allocations: 0,
                allocated_bytes: 0,
                peak_bytes: 0,
                temporary: 0,
                frames: part.frames.clone(),
                aging: Tested::default(),
                history: SiteHistory::default(),
            });
            merged.len() - 1
        });
        let site = &mut merged[slot];
        site.history.add(&part.history);
        let s = &part.stats;
        site.outstanding_bytes = site.outstanding_bytes.saturating_add(s.outstanding_bytes);
        site.outstanding_count = site.outstanding_count.saturating_add(s.outstanding_count);
        site.allocations = site.allocations.saturating_add(s.allocations);
        site.allocated_bytes = site.allocated_bytes.saturating_add(s.allocated_bytes);
        site.peak_bytes = site.peak_bytes.saturating_add(s.peak_bytes);
        site.temporary = site.temporary.saturating_add(s.temporary);
    }
    merged
}

/// Ranks sites: outstanding bytes, then allocations, both descending; then by frames,
/// memory kind, pool, device, space, ownership and capture mark so that the order is fully
/// determined.
pub fn sort_sites(sites: &mut [Site]) {
    sites.sort_by(|a, b| {
        (Reverse(a.outstanding_bytes), Reverse(a.allocations))
            .cmp(&(Reverse(b.outstanding_bytes), Reverse(b.allocations)))
            .then_with(|| a.frames.cmp(&b.frames))
            .then_with(|| a.memory.cmp(&b.memory))
            .then_with(|| a.pool.cmp(&b.pool))
            .then_with(|| {
                (a.device, a.space, a.owned, a.during_capture).cmp(&(
                    b.device,
                    b.space,
                    b.owned,
                    b.during_capture,
                ))
            })
    });
}

/// Keeps the first `top` sites, and after them every other site whose growth is
/// significant; returns how many were left out.
pub fn apply_top(sites: &mut Vec<Site>, top: Option<usize>) -> usize {
    match top {
        Some(n) if n < sites.len() => {
            let before = sites.len();
            let mut i = 0usize;
            sites.retain(|s| {
                i += 1;
                i <= n || s.aging.trend.is_some_and(|t| t.significant)
            });
            before - sites.len()
        }
        _ => 0,
    }
}

/// Totals over the owned `sites`, overall and per memory kind present.
pub fn totals(sites: &[Site]) -> Totals {
    let mut totals = Totals::default();
    for site in sites.iter().filter(|s| s.owned) {
        let counts = site.counts();
        totals.all.add(&counts);
        totals
            .by_memory
            .entry(site.memory)
            .or_insert_with(Counts::default)
            .add(&counts);
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, line: Option<u32>, address: &str) -> Frame {
        Frame {
            function: Some(function.into()),
            file: line.map(|_| "main.c".into()),
            line,
            module: Some("app".into()),
            address: address.into(),
            inlined: false,
            python: false,
        }
    }

    fn stats(outstanding: u64, count: u64, allocations: u64, peak: u64) -> SiteStats {
        SiteStats {
            outstanding_bytes: outstanding,
            outstanding_count: count,
            allocations,
            allocated_bytes: allocations * 10,
            peak_bytes: peak,
            temporary: 1,
            ..SiteStats::default()
        }
    }

    fn part(kind: MemoryKind, frames: Vec<Frame>, stats: SiteStats) -> SymbolizedSite {
        SymbolizedSite {
            kind,
            pool: pool_for(kind),
            device: None,
            space: None,
            owned: true,
            during_capture: false,
            frames,
            stats,
            history: SiteHistory::default(),
        }
    }

    #[test]
    fn merges_same_source_stack_and_sums_peaks() {
        let parts = vec![
            part(
                MemoryKind::Host,
                vec![
                    frame("leak", Some(3), "0x10"),
                    frame("main", Some(9), "0x40"),
                ],
                stats(100, 1, 2, 100),
            ),
            part(
                MemoryKind::Host,
                vec![
                    frame("leak", Some(3), "0x14"),
                    frame("main", Some(9), "0x40"),
                ],
                stats(50, 1, 3, 70),
            ),
            // Same frames, other kind: stays apart.
            part(
                MemoryKind::Mapped,
                vec![
                    frame("leak", Some(3), "0x10"),
                    frame("main", Some(9), "0x40"),
                ],
                stats(4096, 1, 1, 4096),
            ),
        ];
        let mut merged = merge_sites(&parts);
        assert_eq!(merged.len(), 2);
        sort_sites(&mut merged);
        assert_eq!(merged[0].memory, Memory::Mapped);
        assert_eq!(merged[0].pool, "mmap");
        let host = &merged[1];
        assert_eq!(host.pool, "malloc");
        assert_eq!(host.outstanding_bytes, 150);
        assert_eq!(host.outstanding_count, 2);
        assert_eq!(host.allocations, 5);
        assert_eq!(host.allocated_bytes, 50);
        assert_eq!(host.peak_bytes, 170);
        assert_eq!(host.temporary, 2);
        assert_eq!(&*host.frames[0].address, "0x10", "first part's frames");
    }

    #[test]
    fn frames_without_lines_merge_only_at_the_same_address() {
        let parts = vec![
            part(
                MemoryKind::Host,
                vec![frame("f", None, "0x10")],
                stats(1, 1, 1, 1),
            ),
            part(
                MemoryKind::Host,
                vec![frame("f", None, "0x20")],
                stats(1, 1, 1, 1),
            ),
            part(
                MemoryKind::Host,
                vec![frame("f", None, "0x10")],
                stats(1, 1, 1, 1),
            ),
        ];
        let merged = merge_sites(&parts);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].outstanding_bytes, 2);
        assert_eq!(merged[1].outstanding_bytes, 1);
    }

    #[test]
    fn python_frames_are_part_of_the_identity() {
        let py = |line: u32, address: &str| Frame {
            function: Some("handle".into()),
            file: Some("app.py".into()),
            line: Some(line),
            module: None,
            address: address.into(),
            inlined: false,
            python: true,
        };
        let native = || frame("PyByteArray_Resize", Some(7), "0x10");
        let parts = vec![
            part(
                MemoryKind::Host,
                vec![native(), py(3, "0x8")],
                stats(1, 1, 1, 1),
            ),
            // Another instruction of the same line: merges.
            part(
                MemoryKind::Host,
                vec![native(), py(3, "0xc")],
                stats(2, 1, 1, 2),
            ),
            // Another line under the same native frames: stays apart.
            part(
                MemoryKind::Host,
                vec![native(), py(4, "0x8")],
                stats(4, 1, 1, 4),
            ),
            // Same native frames without Python: apart too.
            part(MemoryKind::Host, vec![native()], stats(8, 1, 1, 8)),
        ];
        let merged = merge_sites(&parts);
        let bytes: Vec<u64> = merged.iter().map(|s| s.outstanding_bytes).collect();
        assert_eq!(bytes, vec![3, 4, 8]);
        assert_eq!(merged[0].headline().and_then(|f| f.line), Some(3));
        assert_eq!(merged[2].headline().and_then(|f| f.line), Some(7));
    }

    #[test]
    fn sorts_by_outstanding_then_allocations_then_frames() {
        let parts = vec![
            part(
                MemoryKind::Host,
                vec![frame("c", Some(1), "0x1")],
                stats(10, 1, 1, 10),
            ),
            part(
                MemoryKind::Host,
                vec![frame("b", Some(1), "0x1")],
                stats(10, 1, 5, 10),
            ),
            part(
                MemoryKind::Host,
                vec![frame("a", Some(1), "0x1")],
                stats(10, 1, 1, 10),
            ),
            part(
                MemoryKind::Host,
                vec![frame("z", Some(1), "0x1")],
                stats(99, 1, 1, 99),
            ),
            part(
                MemoryKind::Host,
                vec![frame("y", Some(1), "0x1")],
                stats(0, 0, 9, 10),
            ),
        ];
        let mut sites = merge_sites(&parts);
        sort_sites(&mut sites);
        let order: Vec<_> = sites
            .iter()
            .map(|s| s.frames[0].function.as_deref().unwrap())
            .collect();
        assert_eq!(order, vec!["z", "b", "a", "c", "y"]);
    }

    #[test]
    fn top_limits_and_counts_omitted() {
        let parts: Vec<_> = (0..5)
            .map(|i| {
                part(
                    MemoryKind::Host,
                    vec![frame("f", Some(i), "0x1")],
                    stats(u64::from(i), 1, 1, 1),
                )
            })
            .collect();
        let mut sites = merge_sites(&parts);
        assert_eq!(apply_top(&mut sites, None), 0);
        assert_eq!(sites.len(), 5);
        assert_eq!(apply_top(&mut sites, Some(10)), 0);
        assert_eq!(apply_top(&mut sites, Some(2)), 3);
        assert_eq!(sites.len(), 2);
    }

    #[test]
    fn gpu_fields_keep_sites_apart_and_unowned_sites_out_of_totals() {
        let frames = || vec![frame("step", Some(3), "0x10")];
        let gpu = |pool, device: Option<u32>, space, owned, capture| SymbolizedSite {
            kind: MemoryKind::Device,
            pool,
            device: device.map(DeviceOrdinal),
            space: Some(space),
            owned,
            during_capture: capture,
            frames: frames(),
            stats: stats(100, 1, 1, 100),
            history: SiteHistory::default(),
        };
        let parts = vec![
            gpu("pytorch-caching", Some(0), Space::Pointer, true, false),
            gpu("pytorch-caching", Some(0), Space::Pointer, true, false), // merges
            gpu("pytorch-caching", Some(1), Space::Pointer, true, false),
            gpu("pytorch-graph-pool", Some(0), Space::Pointer, true, true),
            gpu("pytorch-caching", Some(0), Space::Pointer, true, true),
            gpu("direct", Some(0), Space::Pointer, true, false),
            gpu("direct", Some(0), Space::Reservation, false, false),
            gpu("direct", Some(0), Space::Handle, false, false),
            part(MemoryKind::Host, frames(), stats(7, 1, 1, 7)),
        ];
        let mut merged = merge_sites(&parts);
        assert_eq!(merged.len(), parts.len() - 1);
        sort_sites(&mut merged);
        assert_eq!(merged[0].outstanding_bytes, 200);
        assert_eq!(merged[0].device, Some(0));
        let host = merged.iter().find(|s| s.memory == Memory::Host).unwrap();
        assert_eq!((host.device, host.space, host.owned), (None, None, true));
        let t = totals(&merged);
        assert_eq!(t.by_memory[&Memory::Device].outstanding_bytes, 600);
        assert_eq!(t.by_memory[&Memory::Device].outstanding_count, 6);
        assert_eq!(t.all.outstanding_bytes, 607);
    }

    #[test]
    fn totals_per_kind_present() {
        let parts = vec![
            part(
                MemoryKind::Host,
                vec![frame("a", Some(1), "0x1")],
                stats(10, 1, 2, 10),
            ),
            part(
                MemoryKind::Device,
                vec![frame("b", Some(1), "0x1")],
                stats(30, 3, 4, 30),
            ),
            part(
                MemoryKind::Host,
                vec![frame("c", Some(1), "0x1")],
                stats(5, 1, 1, 5),
            ),
        ];
        let t = totals(&merge_sites(&parts));
        assert_eq!(t.all.outstanding_bytes, 45);
        assert_eq!(t.all.allocations, 7);
        assert_eq!(t.by_memory.len(), 2);
        assert_eq!(t.by_memory[&Memory::Host].outstanding_bytes, 15);
        assert_eq!(t.by_memory[&Memory::Device].outstanding_count, 3);
        assert!(!t.by_memory.contains_key(&Memory::Mapped));
    }
}
