//! A hand-built report model shared by the renderers' tests.

use crate::analysis::model::{
    Counts, DroppedCounts, Frame, Memory, OriginName, ProcessReport, ReportModel, Site,
    StreamStatus, Totals,
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
        function: function.map(str::to_owned),
        file: file.map(str::to_owned),
        line,
        module: module.map(str::to_owned),
        address: address.to_owned(),
        inlined,
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
            outstanding_bytes: 1 << 20,
            outstanding_count: 1,
            allocations: 1,
            allocated_bytes: 1 << 20,
            peak_bytes: 1 << 20,
            temporary: 0,
            frames: vec![frame(None, None, None, None, "0x42", false)],
        },
        Site {
            memory: Memory::Host,
            pool: "malloc".to_owned(),
            outstanding_bytes: 204_800,
            outstanding_count: 200,
            allocations: 200,
            allocated_bytes: 204_800,
            peak_bytes: 204_800,
            temporary: 0,
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
            outstanding_bytes: 0,
            outstanding_count: 0,
            allocations: 1000,
            allocated_bytes: 102_400,
            peak_bytes: 65_536,
            temporary: 990,
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
        format_version: 1,
        command: vec!["./app".to_owned(), "--leak".to_owned()],
        exit_status: Some(137),
        signal: Some(9),
        processes: vec![parent, child],
        warnings: vec!["a stream never said Hello".to_owned()],
        top: None,
    }
}
