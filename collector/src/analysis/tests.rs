//! Tests of [`analyze`] on hand-built run states whose modules are not on disk, so every
//! frame is an unknown one identified by module and offset.

use super::*;
use crate::analysis::model::{OriginName, StreamStatus};
use crate::state::{ConnId, SiteStats, StreamEnd};
use leakscope_protocol::{
    Dropped, EndReason, FileOffset, Hello, MemoryKind, ModuleId, ModuleMap, Origin, Pid, Segment,
    StackId, Timestamp,
};
use std::collections::HashMap;

const APP_BASE: u64 = 0x5555_0000_0000;
const SHIM_BASE: u64 = 0x7f00_0000_0000;

fn module(id: u32, path: &str, base: u64) -> ModuleMap {
    ModuleMap {
        id: ModuleId(id),
        path: path.to_owned(),
        build_id: vec![1, 2, 3, 4],
        segments: vec![Segment {
            start: RuntimeAddr(base),
            end: RuntimeAddr(base + 0x10000),
            file_offset: FileOffset(0x1000),
            executable: true,
        }],
    }
}

fn stats(outstanding: u64, allocations: u64) -> SiteStats {
    SiteStats {
        outstanding_bytes: outstanding,
        outstanding_count: u64::from(outstanding > 0),
        allocations,
        allocated_bytes: outstanding.max(allocations),
        peak_bytes: outstanding + 1,
        temporary: 0,
        ..SiteStats::default()
    }
}

fn process(pid: u32, origin: Origin, end: StreamEnd) -> ProcessState {
    let modules = [
        module(1, "/nonexistent/leakscope-test/app", APP_BASE),
        module(
            2,
            "/nonexistent/leakscope-test/libleakscope_shim.so",
            SHIM_BASE,
        ),
    ];
    let app = |off: u64| RuntimeAddr(APP_BASE + off);
    let shim = |off: u64| RuntimeAddr(SHIM_BASE + off);
    let stacks = HashMap::from([
        // Two stacks that differ only inside the shim: one site after stripping.
        (StackId(1), vec![shim(0x10), app(0x100), app(0x200)]),
        (StackId(2), vec![shim(0x20), app(0x100), app(0x200)]),
        (StackId(3), vec![app(0x300), app(0x200)]),
        (StackId(4), vec![app(0x400)]),
        // Outside every module.
        (StackId(5), vec![RuntimeAddr(0x42)]),
    ]);
    let host = |stack| SiteKey::host(StackId(stack), MemoryKind::Host);
    let sites = HashMap::from([
        (host(1), stats(100, 2)),
        (host(2), stats(50, 1)),
        (host(3), stats(400, 4)),
        (host(4), stats(0, 7)),
        (
            SiteKey::host(StackId(5), MemoryKind::Mapped),
            stats(8192, 2),
        ),
        // A stack the state never defined: reported without frames, no panic.
        (host(99), stats(1, 1)),
    ]);
    let hello = Hello {
        pid: Pid(pid),
        ppid: Pid(1),
        origin,
        exe: "/nonexistent/leakscope-test/app".to_owned(),
        argv: vec!["app".to_owned(), "--fast".to_owned()],
        start: Timestamp(0),
        start_unix_ns: 0,
        fingerprint: 0,
    };
    let mut p = ProcessState::new(hello, ConnId(pid));
    p.modules = modules.into_iter().map(|m| (m.id, m)).collect();
    p.stacks = stacks.into_iter().collect();
    p.sites = sites.into_iter().collect();
    p.dropped = Dropped {
        ts: Timestamp(5),
        allocs: 3,
        alloc_bytes: 300,
        frees: 1,
    };
    p.unknown_frees = 2;
    p.end = end;
    p.last_ts = Timestamp(10);
    p
}

fn run_state() -> RunState {
    let parent = process(100, Origin::Exec, StreamEnd::Clean(EndReason::Exit));
    let mut child = process(
        101,
        Origin::Fork { parent: Pid(100) },
        StreamEnd::Damaged("bad frame".to_owned()),
    );
    child.notes.push("inherited nothing".to_owned());
    child.anomalies.implied_frees = 4;
    let mut state = RunState::from_processes(vec![parent, child]);
    state.warnings.push("a stream never said Hello".to_owned());
    state
}

fn meta() -> RecordingMeta {
    RecordingMeta {
        meta_version: 1,
        leakscope_version: "9.9.9".to_owned(),
        command: vec!["app".to_owned(), "--fast".to_owned()],
        started_unix_ns: 1,
        exit_status: Some(137),
        signal: Some(9),
        ..RecordingMeta::default()
    }
}

#[test]
fn analyze_merges_ranks_and_describes_processes() {
    let model = analyze(&run_state(), &meta(), &AnalysisOptions::default());
    assert_eq!(model.leakscope_version, "9.9.9");
    assert_eq!(model.format_version, 2);
    assert_eq!(model.exit_status, Some(137));
    assert_eq!(model.signal, Some(9));
    assert_eq!(model.processes.len(), 2);

    let p = &model.processes[0];
    assert_eq!((p.pid, p.ppid), (100, 1));
    assert_eq!(p.command, "app --fast");
    assert_eq!(p.origin, OriginName::Exec);
    assert_eq!(p.parent, None);
    assert_eq!(p.stream, StreamStatus::Clean);
    assert_eq!(p.unknown_frees, 2);
    assert_eq!(p.dropped.allocs, 3);

    let ranked: Vec<(u64, u64)> = p
        .sites
        .iter()
        .map(|s| (s.outstanding_bytes, s.allocations))
        .collect();
    assert_eq!(ranked, vec![(8192, 2), (400, 4), (150, 3), (1, 1), (0, 7)]);
    assert_eq!(p.sites_omitted, 0);

    let mapped = &p.sites[0];
    assert_eq!(
        (mapped.memory, mapped.pool.as_str()),
        (model::Memory::Mapped, "mmap")
    );
    assert_eq!(mapped.frames.len(), 1);
    assert_eq!(mapped.frames[0].module, None);
    assert_eq!(&*mapped.frames[0].address, "0x42");

    let merged = &p.sites[2];
    assert_eq!(merged.peak_bytes, 101 + 51, "peaks of merged parts add up");
    let addresses: Vec<_> = merged.frames.iter().map(|f| &*f.address).collect();
    assert_eq!(addresses, vec!["0x1100", "0x1200"], "shim frame stripped");
    assert!(merged
        .frames
        .iter()
        .all(|f| f.module.as_deref() == Some("app")));
    assert!(merged.frames.iter().all(|f| f.function.is_none()));

    assert!(p.sites[3].frames.is_empty(), "undefined stack");

    assert_eq!(p.totals.all.outstanding_bytes, 8192 + 400 + 150 + 1);
    assert_eq!(p.totals.by_memory.len(), 2);

    let child = &model.processes[1];
    assert_eq!(child.origin, OriginName::Fork);
    assert_eq!(child.parent, Some(100));
    assert_eq!(child.stream, StreamStatus::Damaged);
    assert_eq!(child.stream_problem.as_deref(), Some("bad frame"));
    assert_eq!(child.notes.len(), 2);
    assert_eq!(child.notes[0], "inherited nothing");
    assert!(child.notes[1].ends_with(": 4"));
    assert!(p.notes.is_empty());
    assert_eq!(p.gpu, None, "no GPU record, no GPU site");
    assert!(p
        .sites
        .iter()
        .all(|s| s.owned && s.device.is_none() && s.space.is_none()));
    assert_eq!(model.warnings, vec!["a stream never said Hello".to_owned()]);
}

/// A PyTorch-like process: modules named like PyTorch's, NCCL's and the program's (not on
/// disk, so attribution goes by module path).
fn gpu_process() -> ProcessState {
    use leakscope_protocol::{Api, DeviceOrdinal};
    const TORCH: u64 = 0x7e00_0000_0000;
    const NCCL: u64 = 0x7d00_0000_0000;
    const CUDART: u64 = 0x7c00_0000_0000;
    let mut p = process(300, Origin::Exec, StreamEnd::Clean(EndReason::Exit));
    for m in [
        module(3, "/venv/site-packages/torch/lib/libc10_cuda.so", TORCH),
        module(4, "/venv/site-packages/nvidia/nccl/lib/libnccl.so.2", NCCL),
        module(
            5,
            "/venv/site-packages/nvidia/cuda_runtime/lib/libcudart.so.12",
            CUDART,
        ),
    ] {
        p.modules.insert(m.id, m);
    }
    let app = |off: u64| RuntimeAddr(APP_BASE + off);
    p.stacks.extend([
        // cudart inside PyTorch's caching allocator, from two places in it.
        (
            StackId(10),
            vec![
                RuntimeAddr(CUDART + 0x10),
                RuntimeAddr(TORCH + 0x100),
                app(0x200),
            ],
        ),
        (
            StackId(11),
            vec![
                RuntimeAddr(CUDART + 0x10),
                RuntimeAddr(TORCH + 0x100),
                app(0x200),
            ],
        ),
        (StackId(12), vec![RuntimeAddr(NCCL + 0x10), app(0x300)]),
        (StackId(13), vec![app(0x400)]),
    ]);
    let gpu = |stack, api, device: Option<u32>, capture| {
        SiteKey::gpu(
            StackId(stack),
            MemoryKind::Device,
            api,
            device.map(DeviceOrdinal),
            capture,
        )
        .unwrap()
    };
    p.sites.extend([
        (gpu(10, Api::CudaMalloc, Some(0), false), stats(1000, 2)),
        // Same stack and device through the driver: merged with the runtime's.
        (gpu(11, Api::CuMemAlloc, Some(0), false), stats(24, 1)),
        // Same stack on another device, and during capture: apart.
        (gpu(10, Api::CudaMalloc, Some(1), false), stats(500, 1)),
        (gpu(10, Api::CudaMalloc, Some(0), true), stats(300, 1)),
        (gpu(12, Api::CudaMalloc, Some(0), false), stats(200, 1)),
        (gpu(13, Api::CudaMallocAsync, Some(0), false), stats(100, 1)),
        // Address space, not memory: listed, not counted.
        (
            gpu(13, Api::CuMemAddressReserve, Some(0), false),
            stats(1 << 30, 1),
        ),
    ]);
    p.gpu = Some(crate::state::GpuState {
        captures: 1,
        ..Default::default()
    });
    p
}

#[test]
fn gpu_sites_get_pools_merge_apart_and_own_totals() {
    let state = RunState::from_processes(vec![gpu_process()]);
    let model = analyze(&state, &meta(), &AnalysisOptions::default());
    let p = &model.processes[0];
    let find = |pool: &str, device: Option<u32>, capture: bool| {
        p.sites
            .iter()
            .find(|s| s.pool == pool && s.device == device && s.during_capture == capture)
            .unwrap_or_else(|| panic!("no {pool} site on {device:?} in {:#?}", p.sites))
    };
    let caching = find("pytorch-caching", Some(0), false);
    assert_eq!(
        caching.outstanding_bytes, 1024,
        "runtime and driver calls merged"
    );
    assert_eq!(caching.space, Some(model::Space::Pointer));
    assert!(caching.owned);
    assert_eq!(
        find("pytorch-caching", Some(1), false).outstanding_bytes,
        500
    );
    assert_eq!(
        find("pytorch-graph-pool", Some(0), true).outstanding_bytes,
        300
    );
    assert_eq!(find("nccl", Some(0), false).outstanding_bytes, 200);
    assert_eq!(
        find("cuda-async-pool", Some(0), false).outstanding_bytes,
        100
    );
    let reserved = find("direct", Some(0), false);
    assert_eq!(reserved.space, Some(model::Space::Reservation));
    assert!(!reserved.owned);
    assert_eq!(reserved.outstanding_bytes, 1 << 30);
    // The host sites of `process` are there too, with their pools.
    assert!(p
        .sites
        .iter()
        .any(|s| s.pool == "malloc" && s.space.is_none()));

    let gpu_owned = 1024 + 500 + 300 + 200 + 100;
    let device = &p.totals.by_memory[&model::Memory::Device];
    assert_eq!(
        device.outstanding_bytes, gpu_owned,
        "the reservation is not counted"
    );
    assert_eq!(
        p.totals.all.outstanding_bytes,
        8192 + 400 + 150 + 1 + gpu_owned
    );

    let gpu = p.gpu.as_ref().expect("a gpu section");
    assert_eq!(gpu.captures, 1);
    let devices: Vec<_> = gpu.devices.iter().map(|d| d.device).collect();
    assert_eq!(devices, vec![Some(0), Some(1)]);
    assert_eq!(gpu.devices[0].reserved_address_bytes, 1 << 30);
    assert_eq!(
        gpu.devices[0].by_memory[&model::Memory::Device].outstanding_bytes,
        1024 + 300 + 200 + 100
    );
    let pools: Vec<_> = gpu
        .pools
        .iter()
        .map(|p| (p.pool.as_str(), p.device, p.counts.outstanding_bytes))
        .collect();
    assert_eq!(
        pools,
        vec![
            ("pytorch-caching", Some(0), 1024),
            ("pytorch-caching", Some(1), 500),
            ("pytorch-graph-pool", Some(0), 300),
            ("nccl", Some(0), 200),
            ("cuda-async-pool", Some(0), 100),
        ]
    );
}

#[test]
fn top_limits_sites_but_not_totals() {
    let opts = AnalysisOptions {
        top: Some(2),
        ..AnalysisOptions::default()
    };
    let model = analyze(&run_state(), &meta(), &opts);
    assert_eq!(model.top, Some(2));
    let p = &model.processes[0];
    assert_eq!(p.sites.len(), 2);
    assert_eq!(p.sites_omitted, 3);
    assert_eq!(p.totals.all.outstanding_bytes, 8192 + 400 + 150 + 1);
}

#[test]
fn keep_allocator_frames_keeps_shim_frames() {
    let opts = AnalysisOptions {
        keep_allocator_frames: true,
        ..AnalysisOptions::default()
    };
    let model = analyze(&run_state(), &meta(), &opts);
    let p = &model.processes[0];
    assert_eq!(p.sites.len(), 6, "stacks differing in the shim stay apart");
    assert!(p.sites.iter().any(|s| s
        .frames
        .first()
        .is_some_and(|f| f.module.as_deref() == Some(frames::SHIM_MODULE))));
}

#[test]
fn empty_state_gives_empty_report() {
    let model = analyze(
        &RunState::default(),
        &RecordingMeta::default(),
        &AnalysisOptions::default(),
    );
    assert!(model.processes.is_empty());
    assert_eq!(model.leakscope_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(model.exit_status, None);
}

/// Two allocations through `xmalloc` from one source line of `make`: two stacks that differ
/// only in code addresses.
const SAME_LINE_PROGRAM: &str = r#"#include <stdio.h>
static unsigned long where[2][3];
__attribute__((noinline)) void capture(int i) {
    where[i][0] = (unsigned long)__builtin_return_address(0) - 1;
    where[i][1] = (unsigned long)__builtin_return_address(1) - 1;
    where[i][2] = (unsigned long)__builtin_return_address(2) - 1;
}
__attribute__((noinline)) void *xmalloc(int i) { capture(i); return 0; }
__attribute__((noinline)) void make(void) {
    xmalloc(0); xmalloc(1);
}
int main(void) {
    make();
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++) printf("%lx ", where[i][j]);
    printf("\n");
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[4096];
    while (maps && fgets(line, sizeof line, maps)) fputs(line, stdout);
    return 0;
}
"#;

#[test]
fn real_stacks_on_one_source_line_merge_after_stripping() {
    let traced = test_program::compile_and_run("merge", SAME_LINE_PROGRAM);
    assert_eq!(traced.addrs.len(), 6);
    let (first, second) = traced.addrs.split_at(3);
    assert_ne!(first[1], second[1], "two call instructions");
    let mut p = process(200, Origin::Exec, StreamEnd::Clean(EndReason::Exit));
    p.modules = [(traced.module.id, traced.module.clone())]
        .into_iter()
        .collect();
    p.stacks = [(StackId(1), first.to_vec()), (StackId(2), second.to_vec())]
        .into_iter()
        .collect();
    let host = |stack| SiteKey::host(StackId(stack), MemoryKind::Host);
    p.sites = [(host(1), stats(100, 1)), (host(2), stats(50, 1))]
        .into_iter()
        .collect();
    let state = RunState::from_processes(vec![p]);
    let model = analyze(&state, &meta(), &AnalysisOptions::default());
    let sites = &model.processes[0].sites;
    assert_eq!(sites.len(), 1, "{sites:#?}");
    let site = &sites[0];
    assert_eq!(site.outstanding_bytes, 150);
    assert_eq!(site.peak_bytes, 101 + 51);
    let frames: Vec<_> = site
        .frames
        .iter()
        .map(|f| (f.function.as_deref(), f.line, f.module.as_deref()))
        .collect();
    assert_eq!(
        frames,
        vec![
            (Some("make"), Some(10), Some("prog")),
            (Some("main"), Some(13), Some("prog")),
        ]
    );
    assert!(site.frames[0].file.as_deref().unwrap().ends_with("prog.c"));
}
