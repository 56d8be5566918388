//! GPU routes (docs/gpu.md): every way a program reaches CUDA allocation functions, with
//! stand-in CUDA libraries built from `tests/scenarios/cuda/` (CI has no GPU): a fake
//! `libcuda.so.1` that hands out made-up device addresses and prints its own account at exit,
//! a fake `libcudart.so.13` that reaches it only through `cuGetProcAddress_v2` pointers, a
//! `libnccl.so.2` with a hidden static copy of that runtime, a `libc10_cuda.so` with
//! PyTorch's class names, Python ctypes, and another `LD_PRELOAD` interposer.
//!
//! Each scenario plants leaks from functions of its own and frees everything else. The tests
//! check, against the JSON report (format_version 2): the exact outstanding bytes, blocks and
//! allocations per site, with its memory kind, device, pool, space, ownership and capture
//! mark; the `gpu` section (per-device figures, pools, stream-ordered pools, captures); the
//! process totals; and that the report's device, pinned and managed bytes equal the stand-in
//! driver's own account (each byte once: no double count, no miss). Every program must print
//! the same stdout with and without leakscope, and the driver must see the same allocation
//! calls both ways.
//!
//! Expectations read "function space memory device pool", bytes, blocks, allocations: the
//! GPU sites with a frame in that function, summed.

mod common;

use common::cuda::*;
use common::*;
use std::ffi::OsStr;
use std::path::Path;

const MIB: u64 = 1 << 20;

/// A work folder whose path cannot look like CuPy's, JAX's, XLA's or Triton's modules to
/// the pool classifier (docs/gpu.md names them by path).
fn gpu_work(name: &str) -> Work {
    loop {
        let work = Work::new(name);
        let path = work.path().to_string_lossy().to_lowercase();
        if !["xla", "jax", "triton", "cupy"]
            .iter()
            .any(|w| path.contains(w))
        {
            return work;
        }
    }
}

fn dev(d: u64) -> Option<u64> {
    Some(d)
}

/// Scenario a: a program linked against the runtime. Every runtime allocation function, two
/// devices, the default and created stream-ordered pools, a pool trimmed and one destroyed,
/// host registration of a malloc'd buffer, and a capture window. cudaMalloc reaches the
/// driver's cuMemAlloc_v2 through a (wrapped) pointer: it must count once, as cudaMalloc.
#[test]
fn runtime_app_every_allocation_once() {
    let work = gpu_work("gpu-rt");
    let libs = CudaLibs::build(&work);
    let prog = libs.program(&work, "rt_app.c", "rt_app", &["libcudart.so.13"]);
    let run = run_gpu(&work, "rec", &libs, &prog, &[], None);
    assert!(text(&run.bare.stdout).contains("rt_app done, 23 blocks kept"));
    let process = run.report.one("rt_app", "exec");
    process.assert_complete();
    process.assert_no_shim_frames();
    let p = GpuProcess::new(&run, process);
    let mut c = Checks::new(&p);

    c.sites(&[
        planted("rt_leak_device pointer device 0 direct", 3_000_000, 3, 3),
        planted("rt_leak_malloc_host pointer pinned - direct", 40_000, 1, 1),
        planted("rt_leak_host_alloc pointer pinned - direct", 24_690, 2, 2),
        planted("rt_leak_managed pointer managed 0 direct", 131_072, 2, 2),
        planted("rt_leak_pitch pointer device 0 direct", 30_720, 1, 1),
        planted("rt_leak_3d pointer device 0 direct", 25_600, 1, 1),
        planted(
            "rt_leak_async_default pointer device 0 cuda-async-pool",
            600_000,
            2,
            3,
        ),
        planted(
            "rt_leak_from_pool pointer device 0 cuda-async-pool",
            250_000,
            1,
            1,
        ),
        planted(
            "rt_leak_async_ptsz pointer device 0 cuda-async-pool",
            90_000,
            2,
            3,
        ),
        planted(
            "rt_leak_from_pool_ptsz pointer device 0 cuda-async-pool",
            35_000,
            1,
            1,
        ),
        planted("rt_pool_churn pointer device 0 cuda-async-pool", 0, 0, 2),
        planted(
            "rt_register_keep registration pinned - direct",
            65_536,
            1,
            1,
        ),
        planted("rt_register_churn registration pinned - direct", 0, 0, 1),
        planted("rt_alloc_in_capture pointer device 0 direct", 8_192, 2, 2).captured(),
        // Another thread, while the main thread's capture window is open: not captured.
        planted("rt_alloc_other_thread pointer device 0 direct", 3_000, 1, 1),
        planted("rt_leak_device1 pointer device 1 direct", 10_000_000, 2, 2),
        planted(
            "rt_leak_managed_dev1 pointer managed 1 direct",
            33_333,
            1,
            1,
        ),
        // 50 rounds, every allocation freed.
        planted("rt_churn pointer device 0 direct", 0, 0, 50),
        planted("rt_churn pointer pinned - direct", 0, 0, 50),
        planted("rt_churn pointer managed 0 direct", 0, 0, 50),
        planted("rt_churn pointer device 0 cuda-async-pool", 0, 0, 50),
    ]);
    c.devices(&[
        DeviceExpect {
            device: dev(0),
            device_mem: (4_042_512, 14),
            managed: (131_072, 2),
            ..DeviceExpect::default()
        },
        DeviceExpect {
            device: dev(1),
            device_mem: (10_000_000, 2),
            managed: (33_333, 1),
            ..DeviceExpect::default()
        },
        DeviceExpect {
            device: None,
            pinned: (64_690, 3),
            registered_bytes: 65_536,
            ..DeviceExpect::default()
        },
    ]);
    c.pools(&[
        ("direct", "device", dev(0), 3_067_512, 8),
        ("cuda-async-pool", "device", dev(0), 975_000, 6),
        ("direct", "device", dev(1), 10_000_000, 2),
        ("direct", "managed", dev(0), 131_072, 2),
        ("direct", "managed", dev(1), 33_333, 1),
        ("direct", "pinned", None, 64_690, 3),
    ]);
    // Device 0's default pool, the created pool (trimmed) and the destroyed one.
    c.stream_pools(
        &run.truth,
        &[(0, true, false), (0, false, false), (0, false, true)],
    );
    c.captures(1);
    c.matches_driver(&run);
    c.no_driver_host_memory();
    c.no_unknown_frees();
    let t = &run.truth;
    c.check(
        (t.total("device"), t.total("pinned"), t.total("managed")) == (14_042_512, 64_690, 164_405),
        "the driver's account of the planted leaks",
        format!("{:?}", t.totals),
    );
    let calls = [
        "cuMemAllocAsync_ptsz",
        "cuMemFreeAsync_ptsz",
        "cuMemAllocFromPoolAsync_ptsz",
    ]
    .map(|n| t.calls(n));
    c.check(
        calls == [3, 1, 1],
        "the runtime's _ptsz entry points reach the driver's _ptsz functions",
        format!("{calls:?}"),
    );
    // The registered buffer is still the program's host block, once.
    let host = process.outstanding_where(|s| {
        s.memory == "host" && s.innermost_function() == Some("rt_register_keep")
    });
    c.check(
        host == (65_536, 1),
        "the registered buffer's host block",
        format!("{host:?}, expected (65536, 1)"),
    );
    // Host blocks at addresses just freed as pinned memory: all freed, all counted.
    let churn: Vec<&Site> = process
        .sites
        .iter()
        .filter(|s| s.memory == "host" && s.innermost_function() == Some("rt_churn"))
        .collect();
    let held: u64 = churn.iter().map(|s| s.outstanding_bytes).sum();
    let made: u64 = churn.iter().map(|s| s.allocations).sum();
    c.check(
        held == 0 && made == 50,
        "rt_churn's host blocks",
        format!("{held} bytes held, {made} allocations (expected 0 and 50)"),
    );
    c.finish();
}

/// Scenario b: vLLM's cumem allocator style, through the exported driver symbols: reserved
/// ranges, cuMemCreate'd handles mapped into them, sleep mode (unmap, release, address
/// free), retain + release pairs, a retained reference kept, an imported handle mapped.
/// Only owned handles count as memory, each once however many references it has; mappings,
/// reservations and imported handles are figures of their own.
#[test]
fn vllm_style_virtual_memory() {
    let work = gpu_work("gpu-cumem");
    let libs = CudaLibs::build(&work);
    let prog = libs.program(&work, "cumem_app.c", "cumem_app", &["libcuda.so.1"]);
    let run = run_gpu(&work, "rec", &libs, &prog, &[], None);
    let process = run.report.one("cumem_app", "exec");
    process.assert_complete();
    process.assert_no_shim_frames();
    let p = GpuProcess::new(&run, process);
    let mut c = Checks::new(&p);

    c.sites(&[
        // The 4 MiB block had a retain + release pair: still live.
        planted("alloc_weights handle device 0 direct", 10 * MIB, 2, 3),
        planted("alloc_weights mapping device 0 direct", 10 * MIB, 2, 3),
        // docs/gpu.md: a reservation has no pointer attributes and no properties, so its
        // device is the current context's.
        planted("alloc_weights reservation device 0 direct", 10 * MIB, 2, 3),
        // Location device 1, created while device 0 is current.
        planted(
            "leak_unmapped_handle handle device 1 direct",
            12 * MIB,
            1,
            1,
        ),
        // One block kept (retained once more, never released), one freed.
        planted("alloc_kv_cache handle device 1 direct", 8 * MIB, 1, 2),
        planted("alloc_kv_cache mapping device 1 direct", 8 * MIB, 1, 2),
        planted("alloc_kv_cache reservation device 1 direct", 8 * MIB, 1, 2),
        planted("import_peer_buffer handle device 1 direct", 0, 1, 1).not_owned(),
        planted("import_peer_buffer mapping device 1 direct", 2 * MIB, 1, 1),
        planted(
            "import_peer_buffer reservation device 1 direct",
            2 * MIB,
            1,
            1,
        ),
        // Handle values equal to device pointers: separate namespaces.
        planted("twin_pointer_kept pointer device 0 direct", 1_000_000, 1, 1),
        planted("twin_handle_released handle device 0 direct", 0, 0, 1),
        planted("twin_pointer_freed pointer device 0 direct", 0, 0, 1),
        planted("twin_handle_kept handle device 0 direct", 4 * MIB, 1, 1),
    ]);
    // Retains of handles whose creation was seen are more references to them (the
    // collector's retained_handles counts only handles retained without a seen creation).
    c.devices(&[
        DeviceExpect {
            device: dev(0),
            device_mem: (14 * MIB + 1_000_000, 4),
            reserved_address_bytes: 10 * MIB,
            mapped_bytes: 10 * MIB,
            ..DeviceExpect::default()
        },
        DeviceExpect {
            device: dev(1),
            device_mem: (20 * MIB, 2),
            reserved_address_bytes: 10 * MIB,
            mapped_bytes: 10 * MIB,
            imported_handles: 1,
            ..DeviceExpect::default()
        },
    ]);
    c.pools(&[
        ("direct", "device", dev(0), 14 * MIB + 1_000_000, 4),
        ("direct", "device", dev(1), 20 * MIB, 2),
    ]);
    c.stream_pools(&run.truth, &[]);
    c.captures(0);
    c.matches_driver(&run);
    c.no_unknown_frees();
    let t = &run.truth;
    c.check(
        (t.total("handles"), t.total("imported"), t.total("retained")) == (5, 1, 1),
        "the driver's handles",
        format!("{:?}", t.totals),
    );
    for d in 0..2 {
        let e = p.device_entry(Some(d as u64));
        let got = e.map(|e| (e.mapped_bytes, e.reserved_address_bytes));
        let want = (t.device(d, "mapped"), t.device(d, "reserved"));
        c.check(
            got == Some(want),
            &format!("device {d}: mapped and reserved bytes vs the driver's"),
            format!("report {got:?}, driver {want:?}"),
        );
    }
    c.finish();
}

/// Scenario b2: every exported driver allocation symbol called by name (plain, pitched,
/// managed, pinned, registered, stream-ordered with and without _ptsz, from the default and
/// from created pools, one destroyed), plus the exported resolvers: cuGetProcAddress (v1
/// signature) and cuGetProcAddress_v2 hand out pointers to INTERNAL driver functions that
/// must be wrapped too; the legacy ABI (version 3010) must be left alone and still work.
#[test]
fn driver_symbols_and_exported_resolvers() {
    let work = gpu_work("gpu-driver");
    let libs = CudaLibs::build(&work);
    let prog = libs.program(&work, "driver_app.c", "driver_app", &["libcuda.so.1"]);
    let run = run_gpu(&work, "rec", &libs, &prog, &[], None);
    let out = text(&run.bare.stdout);
    for line in [
        "legacy ptr 0x10000000 canary 0xc0ffee",
        "missing: result 500 status 1 fn (nil)",
        "too new: result 500 status 2 fn (nil)",
        "export table: result 801 table (nil)",
    ] {
        assert!(out.contains(line), "{line:?} missing in\n{out}");
    }
    let process = run.report.one("driver_app", "exec");
    process.assert_complete();
    process.assert_no_shim_frames();
    let p = GpuProcess::new(&run, process);
    let mut c = Checks::new(&p);

    c.sites(&[
        planted("driver_leak_device pointer device 0 direct", 524_288, 2, 3),
        planted("driver_leak_pitch pointer device 0 direct", 21_504, 1, 1),
        planted(
            "driver_leak_managed pointer managed 1 direct",
            100_000,
            2,
            2,
        ),
        planted(
            "driver_leak_host_alloc pointer pinned - direct",
            30_000,
            1,
            1,
        ),
        planted(
            "driver_leak_alloc_host pointer pinned - direct",
            14_000,
            2,
            2,
        ),
        planted("driver_pinned_churn pointer pinned - direct", 0, 0, 20),
        planted(
            "driver_register_keep registration pinned - direct",
            12_288,
            1,
            1,
        ),
        planted(
            "driver_register_churn registration pinned - direct",
            0,
            0,
            1,
        ),
        planted(
            "driver_async pointer device 0 cuda-async-pool",
            20_000,
            2,
            3,
        ),
        planted(
            "driver_async_ptsz pointer device 0 cuda-async-pool",
            20_000,
            1,
            2,
        ),
        planted(
            "driver_pool_alloc pointer device 1 cuda-async-pool",
            400_000,
            1,
            1,
        ),
        planted(
            "driver_pool_alloc_ptsz pointer device 1 cuda-async-pool",
            5_000,
            1,
            1,
        ),
        planted(
            "driver_pool_churn pointer device 0 cuda-async-pool",
            0,
            0,
            1,
        ),
        planted(
            "v1_resolver_managed pointer managed 0 direct",
            1_000_000,
            1,
            1,
        ),
        planted("v2_resolver_pinned pointer pinned - direct", 100_000, 1, 1),
        // cuMemAlloc at 3020 exactly, the v1 resolver handed out by pointer, dlsym with
        // RTLD_DEFAULT and with a dlopen handle.
        planted("boundary_v2_alloc pointer device 0 direct", 33_000, 1, 1),
        planted(
            "v1_resolver_by_pointer pointer device 0 direct",
            44_000,
            1,
            1,
        ),
        planted("rtld_default_alloc pointer device 0 direct", 66_000, 1, 1),
        planted("dlopen_handle_alloc pointer device 0 direct", 77_000, 1, 1),
    ]);
    c.no_site("v2_resolver_legacy", "the legacy ABI is not wrapped");
    c.devices(&[
        DeviceExpect {
            device: dev(0),
            device_mem: (805_792, 10),
            managed: (1_000_000, 1),
            ..DeviceExpect::default()
        },
        DeviceExpect {
            device: dev(1),
            device_mem: (405_000, 2),
            managed: (100_000, 2),
            ..DeviceExpect::default()
        },
        DeviceExpect {
            device: None,
            pinned: (144_000, 4),
            registered_bytes: 12_288,
            ..DeviceExpect::default()
        },
    ]);
    c.pools(&[
        ("direct", "device", dev(0), 765_792, 7),
        ("cuda-async-pool", "device", dev(0), 40_000, 3),
        ("cuda-async-pool", "device", dev(1), 405_000, 2),
        ("direct", "managed", dev(0), 1_000_000, 1),
        ("direct", "managed", dev(1), 100_000, 2),
        ("direct", "pinned", None, 144_000, 4),
    ]);
    c.stream_pools(
        &run.truth,
        &[(0, true, false), (1, false, false), (0, false, true)],
    );
    c.captures(0);
    c.matches_driver(&run);
    c.no_unknown_frees();
    c.no_driver_host_memory();
    // The legacy functions were reached (and the memory given back), the _ptsz ones too.
    let t = &run.truth;
    let calls = [
        "cuMemAlloc",
        "cuMemFree",
        "cuMemAllocAsync_ptsz",
        "cuMemFreeAsync_ptsz",
        "cuMemAllocFromPoolAsync_ptsz",
    ]
    .map(|n| t.calls(n));
    c.check(
        calls == [1, 1, 2, 1, 1] && t.total("legacy") == 0,
        "legacy and _ptsz callers reach their own functions",
        format!("{calls:?}, legacy bytes {}", t.total("legacy")),
    );
    c.finish();
}

/// Scenario c: PyTorch's routes, through a libc10_cuda.so stand-in: expandable segments
/// (driver entry points from cudaGetDriverEntryPointByVersion only), the caching allocator
/// outside and inside a capture window, the pinned host cache; and direct use of entry
/// points: the v2 ABI, a resolver fetched as an entry point, the per-thread-stream flag
/// (must reach the _ptsz functions), the _ptsz getters, and the legacy ABI at version 3000
/// (must get the legacy function, unwrapped, and still work).
#[test]
fn pytorch_style_entry_points_and_pools() {
    let work = gpu_work("gpu-expandable");
    let libs = CudaLibs::build(&work);
    let prog = libs.program(
        &work,
        "expandable_app.cpp",
        "expandable_app",
        &["libc10_cuda.so", "libcudart.so.13"],
    );
    let run = run_gpu(&work, "rec", &libs, &prog, &[], None);
    let out = text(&run.bare.stdout);
    for line in [
        "legacy ptr 0x10000000 canary 0xc0ffee",
        "cuNoSuchFunction at 12000: result 0 status 1 fn (nil)",
        "cuMemCreate at 10000: result 0 status 2 fn (nil)",
        "cuMemAllocAsync at 11000: result 0 status 2 fn (nil)",
    ] {
        assert!(out.contains(line), "{line:?} missing in\n{out}");
    }
    let process = run.report.one("expandable_app", "exec");
    process.assert_complete();
    process.assert_no_shim_frames();
    let p = GpuProcess::new(&run, process);
    let mut c = Checks::new(&p);

    c.sites(&[
        planted(
            "grow_expandable handle device 0 pytorch-expandable",
            6 * MIB,
            3,
            5,
        ),
        planted(
            "grow_expandable mapping device 0 pytorch-expandable",
            6 * MIB,
            3,
            5,
        ),
        planted(
            "grow_expandable reservation device 0 pytorch-expandable",
            64 * MIB,
            1,
            1,
        ),
        planted(
            "eager_alloc pointer device 0 pytorch-caching",
            40 * MIB,
            2,
            2,
        ),
        planted(
            "graph_capture_alloc pointer device 0 pytorch-graph-pool",
            2 * MIB,
            1,
            1,
        )
        .captured(),
        planted(
            "pinned_cache_alloc pointer pinned - pytorch-pinned-cache",
            MIB,
            1,
            1,
        ),
        planted("direct_v2_entry pointer device 0 direct", 123_456, 1, 1),
        planted(
            "nested_resolver_alloc pointer device 0 direct",
            70_000,
            1,
            1,
        ),
        planted("entry_point_managed pointer managed 0 direct", 10_000, 1, 1),
        planted(
            "ptsz_async_alloc pointer device 0 cuda-async-pool",
            100_000,
            2,
            2,
        ),
        planted("ptsz_async_churn pointer device 0 cuda-async-pool", 0, 0, 1),
    ]);
    c.no_site("legacy_roundtrip", "the legacy ABI is not wrapped");
    c.devices(&[
        DeviceExpect {
            device: dev(0),
            device_mem: (50_625_104, 10),
            managed: (10_000, 1),
            reserved_address_bytes: 64 * MIB,
            mapped_bytes: 6 * MIB,
            ..DeviceExpect::default()
        },
        DeviceExpect {
            device: None,
            pinned: (MIB, 1),
            ..DeviceExpect::default()
        },
    ]);
    c.pools(&[
        ("pytorch-expandable", "device", dev(0), 6 * MIB, 3),
        ("pytorch-caching", "device", dev(0), 40 * MIB, 2),
        ("pytorch-graph-pool", "device", dev(0), 2 * MIB, 1),
        ("direct", "device", dev(0), 193_456, 2),
        ("cuda-async-pool", "device", dev(0), 100_000, 2),
        ("direct", "managed", dev(0), 10_000, 1),
        ("pytorch-pinned-cache", "pinned", None, MIB, 1),
    ]);
    c.stream_pools(&run.truth, &[(0, true, false)]);
    c.captures(1);
    c.matches_driver(&run);
    c.no_unknown_frees();
    c.no_driver_host_memory();
    let t = &run.truth;
    let calls = [
        "cuMemAllocAsync_ptsz",
        "cuMemFreeAsync_ptsz",
        "cuMemAllocAsync",
        "cuMemFreeAsync",
        "cuMemAlloc",
        "cuMemFree",
    ]
    .map(|n| t.calls(n));
    c.check(
        calls == [3, 1, 0, 0, 1, 1],
        "per-thread callers reach the _ptsz functions, legacy callers the legacy ones",
        format!("{calls:?}"),
    );
    c.finish();
}

/// Scenario d: NCCL's route: a library with its own hidden static runtime, reaching the
/// driver only through dlsym(libcuda, "cuGetProcAddress_v2") and its private
/// cudaGetDriverEntryPoint; no exported cuda* or cu* symbol is ever called. Pool `nccl`.
#[test]
fn nccl_static_runtime_reaches_the_driver_by_pointer() {
    let work = gpu_work("gpu-nccl");
    let libs = CudaLibs::build(&work);
    let prog = libs.program(&work, "nccl_app.c", "nccl_app", &["libnccl.so.2"]);
    let run = run_gpu(&work, "rec", &libs, &prog, &[], None);
    let process = run.report.one("nccl_app", "exec");
    process.assert_complete();
    process.assert_no_shim_frames();
    let p = GpuProcess::new(&run, process);
    let mut c = Checks::new(&p);

    c.sites(&[
        planted(
            "ncclFakeAllocBuffers pointer device 0 nccl",
            2_000_000,
            2,
            3,
        ),
        // A kept and a freed (retain, release, unmap, release, address free) cuMem buffer.
        planted("ncclFakeCumemAlloc handle device 0 nccl", 4 * MIB, 1, 2),
        planted("ncclFakeCumemAlloc mapping device 0 nccl", 4 * MIB, 1, 2),
        planted(
            "ncclFakeCumemAlloc reservation device 0 nccl",
            4 * MIB,
            1,
            2,
        ),
    ]);
    c.devices(&[DeviceExpect {
        device: dev(0),
        device_mem: (6_194_304, 3),
        reserved_address_bytes: 4 * MIB,
        mapped_bytes: 4 * MIB,
        ..DeviceExpect::default()
    }]);
    c.pools(&[("nccl", "device", dev(0), 6_194_304, 3)]);
    c.stream_pools(&run.truth, &[]);
    c.captures(0);
    c.matches_driver(&run);
    c.no_unknown_frees();
    c.finish();
}

/// Scenario e: Python ctypes: `CDLL(".../libcudart.so.13").cudaMalloc` and
/// `CDLL("libcuda.so.1").cuMemAlloc_v2` are found with dlsym on the libraries' handles, never
/// through a symbol an LD_PRELOAD library could interpose.
#[test]
fn python_ctypes_reaches_cuda_through_dlsym() {
    let work = gpu_work("gpu-ctypes");
    let libs = CudaLibs::build(&work);
    let script = cuda_dir().join("cuda_ctypes.py");
    let args = [script.as_os_str(), libs.dir.as_os_str()];
    let run = run_gpu(&work, "rec", &libs, python(), &args, None);
    assert!(text(&run.bare.stdout).contains("cuda_ctypes done"));
    let process = run
        .report
        .processes
        .iter()
        .find(|p| p.argv.iter().any(|a| a.ends_with("cuda_ctypes.py")))
        .unwrap_or_else(|| panic!("no process ran cuda_ctypes.py:\n{}", run.report.describe()));
    process.assert_complete();
    process.assert_no_shim_frames();
    let p = GpuProcess::new(&run, process);
    let mut c = Checks::new(&p);

    // ctypes' native stacks do not tell the calls apart; their kinds and devices do.
    for s in p.sites.iter().filter(|s| s.is_gpu()) {
        c.check(
            (
                s.space.as_deref(),
                s.pool.as_str(),
                s.owned,
                s.during_capture,
            ) == (Some("pointer"), "direct", Some(true), Some(false)),
            "ctypes sites are owned direct pointers",
            s.describe(),
        );
    }
    c.devices(&[
        DeviceExpect {
            device: dev(0),
            device_mem: (333_333, 3),
            ..DeviceExpect::default()
        },
        DeviceExpect {
            device: dev(1),
            device_mem: (444_444, 2),
            managed: (77_777, 1),
            ..DeviceExpect::default()
        },
        DeviceExpect {
            device: None,
            pinned: (54_321, 1),
            ..DeviceExpect::default()
        },
    ]);
    c.pools(&[
        ("direct", "device", dev(0), 333_333, 3),
        ("direct", "device", dev(1), 444_444, 2),
        ("direct", "managed", dev(1), 77_777, 1),
        ("direct", "pinned", None, 54_321, 1),
    ]);
    let allocations: u64 = p
        .sites
        .iter()
        .filter(|s| s.is_gpu())
        .map(|s| s.allocations)
        .sum();
    c.check(
        allocations == 8,
        "GPU allocations: 4 cudaMalloc + 1 cudaMallocHost + 2 cuMemAlloc_v2 + 1 managed \
         (the legacy cuMemAlloc is not recorded)",
        format!("{allocations}"),
    );
    let t = &run.truth;
    c.check(
        (
            t.calls("cuMemAlloc"),
            t.calls("cuMemFree"),
            t.total("legacy"),
        ) == (1, 1, 0),
        "the legacy cuMemAlloc/cuMemFree found with dlsym reach the legacy functions",
        format!("{:?}", t.calls),
    );
    c.matches_driver(&run);
    c.no_driver_host_memory();
    c.finish();
}

/// Scenario f: another interposer of cuMemAlloc_v2 in LD_PRELOAD after leakscope's shim. Its
/// dlsym(RTLD_NEXT, "cuMemAlloc_v2") must still find the driver's function (not the shim's,
/// not itself), it must see every call, and the program must behave the same.
#[test]
fn another_interposer_after_the_shim_keeps_working() {
    let work = gpu_work("gpu-interposer");
    let libs = CudaLibs::build(&work);
    let prog = libs.program(
        &work,
        "interposed_app.c",
        "interposed_app",
        &["libcuda.so.1"],
    );
    let interposer = libs.lib("libcountalloc.so");
    let run = run_gpu(&work, "rec", &libs, &prog, &[], Some(&interposer));
    let line = "INTERPOSER cuMemAlloc_v2 calls=3";
    assert!(
        text(&run.bare.stderr).contains(line),
        "{}",
        text(&run.bare.stderr)
    );
    assert!(
        run.stderr().contains(line),
        "the other interposer saw a different number of calls under leakscope:\n{}",
        run.stderr()
    );
    let process = run.report.one("interposed_app", "exec");
    process.assert_complete();
    process.assert_no_shim_frames();
    let p = GpuProcess::new(&run, process);
    let mut c = Checks::new(&p);

    c.sites(&[
        planted("interposed_alloc pointer device 0 direct", 600_000, 2, 3),
        planted("resolved_alloc pointer device 0 direct", 50_000, 1, 1),
    ]);
    c.devices(&[DeviceExpect {
        device: dev(0),
        device_mem: (650_000, 3),
        ..DeviceExpect::default()
    }]);
    c.pools(&[("direct", "device", dev(0), 650_000, 3)]);
    c.matches_driver(&run);
    c.no_unknown_frees();
    c.finish();
}

/// Runs a stand-in program bare and returns the driver's account and the output.
fn bare(libs: &CudaLibs, prog: &Path, args: &[&OsStr], preload: Option<&Path>) -> Truth {
    let mut cmd = std::process::Command::new(prog);
    cmd.args(args);
    scrub_env(&mut cmd);
    cmd.env("LD_LIBRARY_PATH", &libs.dir);
    if let Some(p) = preload {
        cmd.env("LD_PRELOAD", p);
    }
    let out = run_cmd(&mut cmd);
    assert_code(&out, 0, &format!("{prog:?}"));
    if preload.is_some() {
        assert!(text(&out.stderr).contains("INTERPOSER cuMemAlloc_v2 calls=3"));
    }
    Truth::parse(&text(&out.stderr))
}

/// The stand-ins themselves, without leakscope: the driver's account matches what the
/// programs planted. (If this fails, the fault is in the stand-ins, not in leakscope.)
#[test]
fn stand_ins_plant_what_the_tests_expect() {
    let work = gpu_work("gpu-bare");
    let libs = CudaLibs::build(&work);

    let rt = libs.program(&work, "rt_app.c", "rt_app", &["libcudart.so.13"]);
    let t = bare(&libs, &rt, &[], None);
    let got = [
        t.device(0, "device"),
        t.device(1, "device"),
        t.total("pinned"),
        t.device(0, "managed"),
        t.device(1, "managed"),
        t.total("registered"),
        t.total("bad"),
    ];
    assert_eq!(
        got,
        [4_042_512, 10_000_000, 64_690, 131_072, 33_333, 65_536, 0]
    );
    // cudaMalloc went to the driver's cuMemAlloc_v2: 50 churn + 3 + 2 + 1 + 2.
    assert_eq!(t.calls("cuMemAlloc_v2"), 58);

    let cumem = libs.program(&work, "cumem_app.c", "cumem_app", &["libcuda.so.1"]);
    let t = bare(&libs, &cumem, &[], None);
    let got = [
        t.device(0, "device"),
        t.device(1, "device"),
        t.device(0, "mapped"),
        t.device(1, "mapped"),
        t.device(0, "reserved"),
        t.device(1, "reserved"),
    ];
    assert_eq!(
        got,
        [
            14 * MIB + 1_000_000,
            20 * MIB,
            10 * MIB,
            10 * MIB,
            10 * MIB,
            10 * MIB
        ]
    );
    let got = ["handles", "imported", "retained", "bad"].map(|k| t.total(k));
    assert_eq!(got, [5, 1, 1, 0]);

    let drv = libs.program(&work, "driver_app.c", "driver_app", &["libcuda.so.1"]);
    let t = bare(&libs, &drv, &[], None);
    let got = [
        t.device(0, "device"),
        t.device(1, "device"),
        t.total("pinned"),
        t.device(0, "managed"),
        t.device(1, "managed"),
        t.total("registered"),
        t.total("bad"),
    ];
    assert_eq!(
        got,
        [805_792, 405_000, 144_000, 1_000_000, 100_000, 12_288, 0]
    );

    let exp = libs.program(
        &work,
        "expandable_app.cpp",
        "expandable_app",
        &["libc10_cuda.so", "libcudart.so.13"],
    );
    let t = bare(&libs, &exp, &[], None);
    let got = [
        t.device(0, "device"),
        t.device(0, "handle_bytes"),
        t.total("pinned"),
        t.total("managed"),
        t.device(0, "reserved"),
        t.total("bad"),
    ];
    assert_eq!(got, [50_625_104, 6 * MIB, MIB, 10_000, 64 * MIB, 0]);

    let nccl = libs.program(&work, "nccl_app.c", "nccl_app", &["libnccl.so.2"]);
    let t = bare(&libs, &nccl, &[], None);
    let got = [t.device(0, "device"), t.total("retained"), t.total("bad")];
    assert_eq!(got, [6_194_304, 0, 0]);
    // NCCL's private runtime is not exported.
    let mut nm = std::process::Command::new("nm");
    nm.args(["-D", "--defined-only"])
        .arg(libs.lib("libnccl.so.2"));
    let nm = run_cmd(&mut nm);
    assert!(!text(&nm.stdout).contains("cuda"), "{}", text(&nm.stdout));

    let script = cuda_dir().join("cuda_ctypes.py");
    let t = bare(
        &libs,
        &python(),
        &[script.as_os_str(), libs.dir.as_os_str()],
        None,
    );
    let got = [
        t.device(0, "device"),
        t.device(1, "device"),
        t.total("pinned"),
        t.device(1, "managed"),
    ];
    assert_eq!(got, [333_333, 444_444, 54_321, 77_777]);

    let app = libs.program(
        &work,
        "interposed_app.c",
        "interposed_app",
        &["libcuda.so.1"],
    );
    let t = bare(&libs, &app, &[], Some(&libs.lib("libcountalloc.so")));
    assert_eq!(t.device(0, "device"), 650_000);
}

/// `leakscope run --track gpu`: the C heap and mmap hooks pass straight through (no host or
/// mapped site at all), while every GPU byte is still seen: the report's device, pinned and
/// managed totals equal the stand-in driver's own account.
#[test]
fn gpu_only_tracking_records_no_host_memory() {
    let work = gpu_work("gpu-only");
    let libs = CudaLibs::build(&work);
    let prog = libs.program(&work, "rt_app.c", "rt_app", &["libcudart.so.13"]);
    let run = run_gpu_with(&work, "rec", &libs, &prog, &[], None, &["--track", "gpu"]);
    let process = run.report.one("rt_app", "exec");
    process.assert_complete();
    let host: Vec<_> = process
        .sites
        .iter()
        .filter(|s| s.memory == "host" || s.memory == "mapped")
        .map(|s| s.describe())
        .collect();
    assert!(host.is_empty(), "host sites in a GPU-only run:\n{host:#?}");
    let sites = run.json["processes"][0]["sites"]
        .as_array()
        .expect("the report lists sites");
    for kind in ["device", "pinned", "managed"] {
        let ours: u64 = sites
            .iter()
            .filter(|s| s["memory"] == kind && s["owned"] == true)
            .filter_map(|s| s["outstanding_bytes"].as_u64())
            .sum();
        assert_eq!(
            Some(ours),
            run.truth.totals.get(kind).copied(),
            "{kind} bytes outstanding vs the driver's account\n{}",
            process.describe()
        );
    }
}
