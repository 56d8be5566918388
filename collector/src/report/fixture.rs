//! A hand-built report model shared by the renderers' tests.

use crate::analysis::model::{
    Counts, DroppedCounts, Frame, GpuDevice, GpuReport, Memory, OriginName, PoolTotals,
    ProcessReport, ReportModel, Site, Space, StreamPool, StreamStatus, Totals, FORMAT_VERSION,
};
use std::collections::BTreeMap;

fn frame(
    function: Option<&str>,
    file: Option<&str>,
    line: Option<u32>,
    module: Option<&str>,
    address: &str,
    inlined: bool,
) -> Frame {
    Frame {
        function: function.map(Into::into),
        file: file.map(Into::into),
        line,
        module: module.map(Into::into),
        address: address.into(),
        inlined,
        python: false,
    }
}

fn counts(
    outstanding_bytes: u64,
    outstanding_count: u64,
    allocations: u64,
    allocated_bytes: u64,
    temporary: u64,
) -> Counts {
    Counts {
        outstanding_bytes,
        outstanding_count,
        allocations,
        allocated_bytes,
        temporary,
    }
}

/// Two processes: one with a mapped site, a host site with an inlined frame and unknown
/// frames, and a churn site; one forked child with a damaged stream and drops.
pub fn model() -> ReportModel {
    let sites = vec![
        Site {
            memory: Memory::Mapped,
            pool: "mmap".to_owned(),
            device: None,
            space: None,
            owned: true,
            during_capture: false,
            outstanding_bytes: 1 << 20,
            outstanding_count: 1,
            allocations: 1,
            allocated_bytes: 1 << 20,
            peak_bytes: 1 << 20,
            temporary: 0,
            aging: Default::default(),
            history: Default::default(),
            frames: vec![frame(None, None, None, None, "0x42", false)],
        },
        Site {
            memory: Memory::Host,
            pool: "malloc".to_owned(),
            device: None,
            space: None,
            owned: true,
            during_capture: false,
            outstanding_bytes: 204_800,
            outstanding_count: 200,
            allocations: 200,
            allocated_bytes: 204_800,
            peak_bytes: 204_800,
            temporary: 0,
            aging: Default::default(),
            history: Default::default(),
            frames: vec![
                frame(
                    Some("fill_cache"),
                    Some("src/cache.c"),
                    Some(12),
                    Some("app"),
                    "0x1180",
                    true,
                ),
                frame(
                    Some("leak_here"),
                    Some("src/main.c"),
                    Some(20),
                    Some("app"),
                    "0x1180",
                    false,
                ),
                frame(
                    Some("main"),
                    Some("src/main.c"),
                    Some(30),
                    Some("app"),
                    "0x1234",
                    false,
                ),
                frame(None, None, None, Some("libgone.so"), "0x2040", false),
            ],
        },
        Site {
            memory: Memory::Host,
            pool: "malloc".to_owned(),
            device: None,
            space: None,
            owned: true,
            during_capture: false,
            outstanding_bytes: 0,
            outstanding_count: 0,
            allocations: 1000,
            allocated_bytes: 102_400,
            peak_bytes: 65_536,
            temporary: 990,
            aging: Default::default(),
            history: Default::default(),
            frames: vec![frame(
                Some("churn"),
                Some("src/main.c"),
                Some(40),
                Some("app"),
                "0x1300",
                false,
            )],
        },
    ];
    let parent = ProcessReport {
        pid: 4242,
        ppid: 1,
        command: "./app --leak".to_owned(),
        argv: vec!["./app".to_owned(), "--leak".to_owned()],
        exe: "/opt/app".to_owned(),
        origin: OriginName::Exec,
        parent: None,
        stream: StreamStatus::Clean,
        stream_problem: None,
        totals: Totals {
            all: counts(1_253_376, 201, 251, 1_355_776, 50),
            by_memory: BTreeMap::from([
                (Memory::Host, counts(204_800, 200, 250, 307_200, 50)),
                (Memory::Mapped, counts(1 << 20, 1, 1, 1 << 20, 0)),
            ]),
        },
        dropped: DroppedCounts::default(),
        unknown_frees: 0,
        sites,
        sites_omitted: 0,
        notes: Vec::new(),
        gpu: None,
        heap: None,
        aging: None,
    };
    let child = ProcessReport {
        pid: 4243,
        ppid: 4242,
        origin: OriginName::Fork,
        parent: Some(4242),
        stream: StreamStatus::Damaged,
        stream_problem: Some("truncated frame".to_owned()),
        totals: Totals::default(),
        dropped: DroppedCounts {
            allocs: 3,
            alloc_bytes: 300,
            frees: 1,
        },
        unknown_frees: 2,
        sites: Vec::new(),
        notes: vec!["inherited nothing: the parent's fork record never arrived".to_owned()],
        ..parent.clone()
    };
    ReportModel {
        leakscope_version: "0.1.0".to_owned(),
        format_version: FORMAT_VERSION,
        command: vec!["./app".to_owned(), "--leak".to_owned()],
        exit_status: Some(137),
        signal: Some(9),
        live: false,
        snapshot_unix_ns: None,
        processes: vec![parent, child],
        warnings: vec!["a stream never said Hello".to_owned()],
        aging: None,
        top: None,
    }
}

/// A GPU site of `bytes` outstanding in one block, allocated once.
pub fn gpu_site(memory: Memory, pool: &str, device: Option<u32>, space: Space, bytes: u64) -> Site {
    Site {
        memory,
        pool: pool.to_owned(),
        device,
        space: Some(space),
        owned: matches!(space, Space::Pointer | Space::Handle),
        during_capture: false,
        outstanding_bytes: bytes,
        outstanding_count: 1,
        allocations: 1,
        allocated_bytes: bytes,
        peak_bytes: bytes,
        temporary: 0,
        aging: Default::default(),
        history: Default::default(),
        frames: vec![frame(
            Some("train_step"),
            Some("train.cpp"),
            Some(7),
            Some("trainer"),
            "0x2000",
            false,
        )],
    }
}

/// [`model`] with a third process that used a GPU: PyTorch's caching allocator (one site
/// during capture), an expandable segment's handle and its reservation, pinned memory, a
/// stream-ordered pool and two captures.
pub fn gpu_model() -> ReportModel {
    let mut model = model();
    let (d, p) = (Memory::Device, Memory::Pinned);
    let mut captured = gpu_site(d, "pytorch-graph-pool", Some(0), Space::Pointer, 64 << 20);
    captured.during_capture = true;
    let sites = vec![
        gpu_site(d, "direct", Some(0), Space::Reservation, 4 << 30),
        gpu_site(d, "pytorch-caching", Some(0), Space::Pointer, 1 << 30),
        captured,
        gpu_site(p, "pytorch-pinned-cache", None, Space::Pointer, 16 << 20),
        gpu_site(d, "pytorch-expandable", Some(0), Space::Handle, 2 << 20),
    ];
    let one = |bytes| counts(bytes, 1, 1, bytes, 0);
    let device0 = counts(
        (1 << 30) + (64 << 20) + (2 << 20),
        3,
        3,
        (1 << 30) + (66 << 20),
        0,
    );
    let gpu = GpuReport {
        devices: vec![
            GpuDevice {
                device: Some(0),
                by_memory: BTreeMap::from([(d, device0)]),
                reserved_address_bytes: 4 << 30,
                mapped_bytes: 2 << 20,
                registered_bytes: 0,
                imported_handles: 1,
                retained_handles: 0,
            },
            GpuDevice {
                device: None,
                by_memory: BTreeMap::from([(p, one(16 << 20))]),
                ..GpuDevice::default()
            },
        ],
        pools: vec![
            PoolTotals {
                pool: "pytorch-caching".to_owned(),
                memory: d,
                device: Some(0),
                counts: one(1 << 30),
            },
            PoolTotals {
                pool: "pytorch-graph-pool".to_owned(),
                memory: d,
                device: Some(0),
                counts: one(64 << 20),
            },
            PoolTotals {
                pool: "pytorch-pinned-cache".to_owned(),
                memory: p,
                device: None,
                counts: one(16 << 20),
            },
            PoolTotals {
                pool: "pytorch-expandable".to_owned(),
                memory: d,
                device: Some(0),
                counts: one(2 << 20),
            },
        ],
        stream_pools: vec![StreamPool {
            handle: "0x5555aaaa0000".to_owned(),
            device: Some(0),
            created_by_program: true,
            destroyed: false,
            reserved_bytes: 32 << 20,
            used_bytes: 8 << 20,
            readings: 12,
            series: Vec::new(),
        }],
        captures: 2,
        torch: None,
    };
    let mut totals = Totals::default();
    for (memory, c) in [(d, device0), (p, one(16 << 20))] {
        totals.all.add(&c);
        totals.by_memory.insert(memory, c);
    }
    let parent = &model.processes[0];
    let trainer = ProcessReport {
        pid: 5000,
        ppid: 1,
        command: "python train.py".to_owned(),
        argv: vec!["python".to_owned(), "train.py".to_owned()],
        exe: "/usr/bin/python3.12".to_owned(),
        totals,
        sites,
        gpu: Some(gpu),
        ..parent.clone()
    };
    model.processes.push(trainer);
    model
}

/// A fragmented host heap: three readings, the first and the newest kept.
pub fn heap_report() -> crate::analysis::model::HeapReport {
    use crate::analysis::model::{ArenaFigures, HeapFigures, HeapReport, HeapVerdict};
    const MIB: u64 = 1 << 20;
    let first = HeapFigures {
        at_ns: 1_000_000,
        arenas: 1,
        system_bytes: 2 * MIB,
        arena_bytes: 2 * MIB,
        free_bytes: 100 << 10,
        free_chunks: 3,
        top_bytes: 100 << 10,
        free_permille: 48,
        live_bytes: 1000,
        live_blocks: 4,
        rss_bytes: 10 * MIB,
        uss_bytes: 8 * MIB,
        ..HeapFigures::default()
    };
    let latest = HeapFigures {
        at_ns: 2_501_000_000,
        arenas: 1,
        system_bytes: 57 * MIB,
        arena_bytes: 54 * MIB,
        mmap_bytes: 3 * MIB,
        mmap_chunks: 2,
        free_bytes: 27 * MIB,
        free_chunks: 100_001,
        fastbin_bytes: 0,
        top_bytes: 100 << 10,
        hole_bytes: 27 * MIB - (100 << 10),
        free_permille: 500,
        live_bytes: 25_600_000,
        live_blocks: 100_000,
        rss_bytes: 62 * MIB,
        uss_bytes: 60 * MIB,
    };
    HeapReport {
        verdict: HeapVerdict::Fragmented,
        arenas: vec![ArenaFigures {
            system_bytes: latest.arena_bytes,
            free_bytes: latest.free_bytes,
            free_chunks: latest.free_chunks,
            fastbin_bytes: 0,
            top_bytes: latest.top_bytes,
        }],
        readings: 3,
        span_ns: latest.at_ns - first.at_ns,
        series: vec![first, latest.clone()],
        latest,
    }
}
