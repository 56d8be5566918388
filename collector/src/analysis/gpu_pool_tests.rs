//! Tests of pool attribution: every row of docs/gpu.md's table, by symbol and by module,
//! the rule order, and the frames that are skipped.

use super::*;
use leakscope_protocol::{Api, DeviceOrdinal, StackId};

fn key(api: Api, kind: MemoryKind, during_capture: bool) -> SiteKey {
    SiteKey::gpu(
        StackId(1),
        kind,
        api,
        Some(DeviceOrdinal(0)),
        during_capture,
    )
    .unwrap()
}

fn device(api: Api) -> SiteKey {
    key(api, MemoryKind::Device, false)
}

/// A frame: `function` (or unknown) in `module` (a path or a file name).
fn f<'a>(function: Option<&'a str>, module: &'a str) -> PoolFrame<'a> {
    PoolFrame {
        function,
        module: Some(module),
    }
}

fn pool(key: &SiteKey, frames: &[PoolFrame<'_>]) -> &'static str {
    gpu_pool(key, frames).name()
}

const CUDART: &str = "/usr/local/cuda/lib64/libcudart.so.13";
const LIBCUDA: &str = "/usr/lib/x86_64-linux-gnu/libcuda.so.1";
const C10_CUDA: &str = "/venv/lib/python3.12/site-packages/torch/lib/libc10_cuda.so";
const TORCH_CUDA: &str = "/venv/lib/python3.12/site-packages/torch/lib/libtorch_cuda.so";
const TORCH_PYTHON: &str = "/venv/lib/python3.12/site-packages/torch/lib/libtorch_python.so";
const APP: &str = "/srv/app/bin/server";

#[test]
fn names_are_distinct() {
    let mut names: Vec<_> = GpuPool::ALL.iter().map(|p| p.name()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), GpuPool::ALL.len());
}

#[test]
fn stream_ordered_apis_are_the_async_pool_whatever_the_stack() {
    let torch = [f(
        Some("c10::cuda::CUDACachingAllocator::CudaMallocAsync::mallocAsync"),
        C10_CUDA,
    )];
    for api in [
        Api::CudaMallocAsync,
        Api::CudaMallocFromPoolAsync,
        Api::CuMemAllocAsync,
        Api::CuMemAllocFromPoolAsync,
    ] {
        assert_eq!(pool(&device(api), &torch), "cuda-async-pool", "{api:?}");
        assert_eq!(pool(&device(api), &[]), "cuda-async-pool", "{api:?}");
    }
    assert_eq!(pool(&device(Api::CudaMalloc), &[]), "direct");
}

#[test]
fn pluggable_allocator_by_symbol_and_by_module() {
    let by_symbol = [
        f(Some("my_alloc"), "/srv/app/alloc.so"),
        f(
            Some("torch::cuda::CUDAPluggableAllocator::CUDAPluggableAllocator::malloc(void**, signed char, unsigned long, CUstream_st*)"),
            TORCH_PYTHON,
        ),
        f(Some("c10::cuda::CUDACachingAllocator::raw_alloc(unsigned long)"), C10_CUDA),
    ];
    assert_eq!(
        pool(&device(Api::CudaMalloc), &by_symbol),
        "pytorch-mempool-pluggable"
    );
    // Without symbols: an application module called from PyTorch's.
    let by_module = [
        f(None, CUDART),
        f(None, "/srv/app/alloc.so"),
        f(None, "/srv/app/alloc.so"),
        f(None, TORCH_PYTHON),
        f(None, C10_CUDA),
    ];
    assert_eq!(
        pool(&device(Api::CudaMalloc), &by_module),
        "pytorch-mempool-pluggable"
    );
    // vLLM-style: the pluggable allocator uses the driver's virtual-memory apis.
    let cumem = [
        f(None, "/venv/site-packages/vllm/cumem_allocator.abi3.so"),
        f(None, TORCH_CUDA),
    ];
    assert_eq!(
        pool(&device(Api::CuMemCreate), &cumem),
        "pytorch-mempool-pluggable"
    );
}

#[test]
fn expandable_segments_by_symbol_and_by_module() {
    let by_symbol = [
        f(
            Some("c10::cuda::CUDACachingAllocator::Native::ExpandableSegment::map(c10::cuda::CUDACachingAllocator::Native::SegmentRange)"),
            C10_CUDA,
        ),
        f(Some("c10::cuda::CUDACachingAllocator::Native::DeviceCachingAllocator::malloc"), C10_CUDA),
    ];
    assert_eq!(
        pool(&device(Api::CuMemCreate), &by_symbol),
        "pytorch-expandable"
    );
    // Symbols win over the capture mark.
    let captured = key(Api::CuMemMap, MemoryKind::Device, true);
    assert_eq!(pool(&captured, &by_symbol), "pytorch-expandable");
    // Without symbols: the virtual-memory apis from PyTorch's CUDA modules.
    for api in [Api::CuMemCreate, Api::CuMemMap, Api::CuMemAddressReserve] {
        for module in [C10_CUDA, TORCH_CUDA] {
            let frames = [f(None, LIBCUDA), f(None, module)];
            assert_eq!(pool(&device(api), &frames), "pytorch-expandable", "{api:?}");
        }
    }
}

#[test]
fn pinned_cache_by_symbol_and_by_module() {
    let pinned = key(Api::CudaHostAlloc, MemoryKind::Pinned, false);
    for name in [
        "at::cuda::(anonymous namespace)::CUDAHostAllocator::allocate_host_memory(unsigned long, void**)",
        "at::CachingHostAllocatorImpl<at::cuda::(anonymous namespace)::CUDACachingHostAllocatorImpl>::allocate(unsigned long)",
    ] {
        let frames = [f(Some(name), TORCH_CUDA), f(Some("main"), APP)];
        assert_eq!(pool(&pinned, &frames), "pytorch-pinned-cache", "{name}");
    }
    // Without symbols: pinned memory from any of PyTorch's modules.
    let frames = [f(None, TORCH_CUDA)];
    assert_eq!(pool(&pinned, &frames), "pytorch-pinned-cache");
    let registered = key(Api::CudaHostRegister, MemoryKind::Pinned, false);
    assert_eq!(
        pool(&registered, &[f(None, TORCH_PYTHON)]),
        "pytorch-pinned-cache"
    );
}

#[test]
fn caching_allocator_and_its_graph_pool() {
    let by_symbol = [
        f(Some("c10::cuda::CUDACachingAllocator::Native::DeviceCachingAllocator::alloc_block(c10::cuda::CUDACachingAllocator::Native::(anonymous namespace)::AllocParams&, bool, std::shared_ptr<c10::GatheredContext> const&, std::unique_lock<std::recursive_mutex>&)"), C10_CUDA),
        f(Some("at::native::empty_cuda"), TORCH_CUDA),
    ];
    let by_module = [f(None, CUDART), f(None, C10_CUDA), f(None, TORCH_CUDA)];
    for frames in [&by_symbol[..], &by_module[..]] {
        let plain = key(Api::CudaMalloc, MemoryKind::Device, false);
        let captured = key(Api::CudaMalloc, MemoryKind::Device, true);
        assert_eq!(pool(&plain, frames), "pytorch-caching");
        assert_eq!(pool(&captured, frames), "pytorch-graph-pool");
    }
}

#[test]
fn libraries_by_module_file_name() {
    let cases = [
        ("/venv/site-packages/nvidia/nccl/lib/libnccl.so.2", "nccl"),
        (
            "/venv/site-packages/nvidia/cublas/lib/libcublasLt.so.13",
            "cublaslt",
        ),
        (
            "/venv/site-packages/nvidia/cublas/lib/libcublas.so.13",
            "cublas",
        ),
        ("libcublasLt.so.12", "cublaslt"),
        ("libnccl.so.2", "nccl"),
    ];
    for (module, want) in cases {
        // Innermost the library, outermost PyTorch (a collective or a matmul PyTorch ran).
        let frames = [
            f(None, LIBCUDA),
            f(Some("ncclCommInitRank"), module),
            f(Some("c10d::ProcessGroupNCCL::getNCCLComm"), TORCH_CUDA),
        ];
        assert_eq!(pool(&device(Api::CudaMalloc), &frames), want, "{module}");
    }
}

#[test]
fn frameworks_by_module_path() {
    let cases = [
        (
            "/venv/site-packages/cupy/cuda/memory.cpython-312-x86_64-linux-gnu.so",
            "cupy-pool",
        ),
        ("/venv/site-packages/jaxlib/xla_extension.so", "xla"),
        (
            "/venv/site-packages/jax_cuda12_plugin/xla_cuda_plugin.so",
            "xla",
        ),
        ("/opt/xla/libpjrt_gpu.so", "xla"),
        ("/venv/site-packages/jax_cuda12_plugin/_cuda.so", "xla"),
        (
            "/venv/site-packages/triton/backends/nvidia/lib/cuda_utils.so",
            "triton",
        ),
    ];
    for (module, want) in cases {
        let frames = [
            f(None, CUDART),
            f(None, module),
            f(None, "/usr/lib/libpython3.12.so.1.0"),
        ];
        assert_eq!(pool(&device(Api::CuMemAlloc), &frames), want, "{module}");
    }
    // CuPy's api bindings are not `cupy/`: the pool outside them decides.
    let frames = [
        f(
            None,
            "/venv/site-packages/cupy_backends/cuda/api/runtime.cpython-312-x86_64-linux-gnu.so",
        ),
        f(
            None,
            "/venv/site-packages/cupy/cuda/memory.cpython-312-x86_64-linux-gnu.so",
        ),
    ];
    assert_eq!(pool(&device(Api::CudaMalloc), &frames), "cupy-pool");
}

#[test]
fn direct_when_nothing_matches() {
    let frames = [
        f(None, LIBCUDA),
        f(Some("cudaMalloc"), CUDART),
        f(Some("make_buffers"), APP),
        f(Some("main"), APP),
        f(Some("__libc_start_main"), "/usr/lib/libc.so.6"),
    ];
    assert_eq!(pool(&device(Api::CudaMalloc), &frames), "direct");
    assert_eq!(pool(&device(Api::CuMemAddressReserve), &frames), "direct");
    // Capture alone does not make a graph pool.
    let captured = key(Api::CudaMalloc, MemoryKind::Device, true);
    assert_eq!(pool(&captured, &frames), "direct");
    // Frames without a module tell nothing.
    let unknown = [PoolFrame {
        function: None,
        module: None,
    }];
    assert_eq!(pool(&device(Api::CudaMalloc), &unknown), "direct");
    assert_eq!(pool(&device(Api::CudaMalloc), &[]), "direct");
}

#[test]
fn cuda_library_and_shim_frames_are_skipped() {
    // A libcudart function named like an allocator is CUDA's, not PyTorch's.
    let frames = [
        f(Some("cudart::CUDACachingAllocatorShim"), CUDART),
        f(Some("cuda::ExpandableSegment"), LIBCUDA),
        f(Some("hook"), SHIM_MODULE),
        f(Some("make_buffers"), APP),
    ];
    assert_eq!(pool(&device(Api::CudaMalloc), &frames), "direct");
    // A libcudart module innermost does not hide the library that called it.
    let frames = [f(None, CUDART), f(None, "/opt/nccl/libnccl.so.2")];
    assert_eq!(pool(&device(Api::CudaMalloc), &frames), "nccl");
}

#[test]
fn symbols_come_before_modules_and_inner_before_outer() {
    // NCCL's allocator called from PyTorch's pluggable allocator (torch.cuda.MemPool with
    // NCCL's mem_allocator): the symbol decides.
    let frames = [
        f(Some("ncclMemAlloc"), "/opt/nccl/libnccl.so.2"),
        f(
            Some("torch::cuda::CUDAPluggableAllocator::CUDAPluggableAllocator::malloc"),
            TORCH_CUDA,
        ),
    ];
    assert_eq!(
        pool(&device(Api::CuMemCreate), &frames),
        "pytorch-mempool-pluggable"
    );
    // The innermost allocator's name wins.
    let frames = [
        f(
            Some("c10::cuda::CUDACachingAllocator::Native::ExpandableSegment::map"),
            C10_CUDA,
        ),
        f(
            Some("torch::cuda::CUDAPluggableAllocator::CUDAPluggableAllocator::malloc"),
            TORCH_CUDA,
        ),
    ];
    assert_eq!(pool(&device(Api::CuMemMap), &frames), "pytorch-expandable");
    // The innermost known module wins.
    let frames = [
        f(None, "/opt/nccl/libnccl.so.2"),
        f(None, "/venv/site-packages/cupy/x.so"),
    ];
    assert_eq!(pool(&device(Api::CudaMalloc), &frames), "nccl");
}

#[test]
fn frames_from_symbolized_report_frames() {
    let frame = Frame {
        function: Some("c10::cuda::CUDACachingAllocator::raw_alloc".into()),
        file: None,
        line: None,
        module: Some("libc10_cuda.so".into()),
        address: "0x10".into(),
        inlined: false,
        python: false,
    };
    let frames = [PoolFrame::from(&frame)];
    assert_eq!(
        site_pool(&device(Api::CudaMalloc), &frames),
        "pytorch-caching"
    );
    let host = SiteKey::host(StackId(1), MemoryKind::Host);
    assert_eq!(site_pool(&host, &frames), "malloc");
    let mapped = SiteKey::host(StackId(1), MemoryKind::Mapped);
    assert_eq!(site_pool(&mapped, &frames), "mmap");
}
