//! Which pool a GPU site's memory came from (docs/gpu.md, "Pools"): decided from the api,
//! the capture mark and the stack, innermost frame first, skipping frames in `libcuda` and
//! `libcudart` (and the shim's). The rules, in order:
//!
//! 1. A stream-ordered api: `cuda-async-pool`.
//! 2. Symbol names, innermost frame first; the first frame naming one of PyTorch's
//!    allocators decides: `CUDAPluggableAllocator` (pluggable), `ExpandableSegment`
//!    (expandable), `CachingHostAllocator`/`CUDAHostAllocator` (pinned cache),
//!    `CUDACachingAllocator`/`DeviceCachingAllocator` (the caching allocator: its graph
//!    pool during capture).
//! 3. Module names, innermost frame first; the first module that is a known library's
//!    decides. PyTorch's (`libc10*`, `libtorch*`): pluggable when an application module lies
//!    inside it (an application's allocator called from PyTorch), expandable for the
//!    virtual-memory apis from `libc10_cuda`/`libtorch_cuda`, the pinned cache for pinned
//!    memory, otherwise the caching allocator (its graph pool during capture). Then
//!    `libnccl*`, `libcublasLt*`, `libcublas*` by file name, and CuPy (`cupy/`), JAX/XLA
//!    (`jaxlib`, `xla`, `jax_cuda`) and Triton (`triton/`) by path.
//! 4. Otherwise `direct`: the application called CUDA itself.
//!
//! Host sites keep their allocator's pool ([`crate::analysis::pool_for`]).

use crate::analysis::frames::{module_file_name, SHIM_MODULE};
use crate::analysis::model::Frame;
use crate::analysis::sites::pool_for;
use crate::state::SiteKey;
use leakscope_protocol::{GpuSpace, MemoryKind};

/// The pools of GPU memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GpuPool {
    CudaAsyncPool,
    PytorchMempoolPluggable,
    PytorchExpandable,
    PytorchPinnedCache,
    PytorchGraphPool,
    PytorchCaching,
    Nccl,
    Cublaslt,
    Cublas,
    CupyPool,
    Xla,
    Triton,
    Direct,
}

impl GpuPool {
    /// Every pool, in rule order.
    pub const ALL: [GpuPool; 13] = [
        GpuPool::CudaAsyncPool,
        GpuPool::PytorchMempoolPluggable,
        GpuPool::PytorchExpandable,
        GpuPool::PytorchPinnedCache,
        GpuPool::PytorchGraphPool,
        GpuPool::PytorchCaching,
        GpuPool::Nccl,
        GpuPool::Cublaslt,
        GpuPool::Cublas,
        GpuPool::CupyPool,
        GpuPool::Xla,
        GpuPool::Triton,
        GpuPool::Direct,
    ];

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            GpuPool::CudaAsyncPool => "cuda-async-pool",
            GpuPool::PytorchMempoolPluggable => "pytorch-mempool-pluggable",
            GpuPool::PytorchExpandable => "pytorch-expandable",
            GpuPool::PytorchPinnedCache => "pytorch-pinned-cache",
            GpuPool::PytorchGraphPool => "pytorch-graph-pool",
            GpuPool::PytorchCaching => "pytorch-caching",
            GpuPool::Nccl => "nccl",
            GpuPool::Cublaslt => "cublaslt",
            GpuPool::Cublas => "cublas",
            GpuPool::CupyPool => "cupy-pool",
            GpuPool::Xla => "xla",
            GpuPool::Triton => "triton",
            GpuPool::Direct => "direct",
        }
    }
}

/// What attribution reads of one frame: the function's name and the module's path (or
/// file name), each where known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolFrame<'a> {
    pub function: Option<&'a str>,
    pub module: Option<&'a str>,
}

impl<'a> From<&'a Frame> for PoolFrame<'a> {
    /// A symbolized frame, with its module's file name.
    fn from(f: &'a Frame) -> Self {
        PoolFrame {
            function: f.function.as_deref(),
            module: f.module.as_deref(),
        }
    }
}

/// The pool of the site `key` whose stack is `frames` (innermost first): a GPU pool's name
/// for GPU sites, the host allocator's otherwise.
pub fn site_pool(key: &SiteKey, frames: &[PoolFrame<'_>]) -> &'static str {
    if key.is_gpu() {
        gpu_pool(key, frames).name()
    } else {
        pool_for(key.kind)
    }
}

/// The pool of the GPU site `key` whose stack is `frames` (see the module documentation).
pub fn gpu_pool(key: &SiteKey, frames: &[PoolFrame<'_>]) -> GpuPool {
    if key.api.is_some_and(|api| api.is_stream_ordered()) {
        return GpuPool::CudaAsyncPool;
    }
    let frames: Vec<&PoolFrame<'_>> = frames
        .iter()
        .filter(|f| !f.module.is_some_and(is_skipped_module))
        .collect();
    if let Some(pool) = frames
        .iter()
        .find_map(|f| f.function.and_then(|name| by_symbol(key, name)))
    {
        return pool;
    }
    let mut application_inside = false;
    for path in frames.iter().filter_map(|f| f.module) {
        match classify(path) {
            Module::PyTorch { cuda } => {
                return if application_inside {
                    GpuPool::PytorchMempoolPluggable
                } else {
                    pytorch_pool(key, cuda)
                };
            }
            Module::Library(pool) => return pool,
            Module::Application => application_inside = true,
        }
    }
    GpuPool::Direct
}

/// Frames in CUDA's own libraries (and the shim) say nothing about who asked.
fn is_skipped_module(path: &str) -> bool {
    let name = module_file_name(path);
    name.starts_with("libcuda.") || name.starts_with("libcudart") || name == SHIM_MODULE
}

/// The caching allocator's pool: its graph pool during capture.
fn caching(key: &SiteKey) -> GpuPool {
    if key.during_capture {
        GpuPool::PytorchGraphPool
    } else {
        GpuPool::PytorchCaching
    }
}

/// The pool a function name shows, if it is one of PyTorch's allocators'.
fn by_symbol(key: &SiteKey, name: &str) -> Option<GpuPool> {
    let has = |parts: &[&str]| parts.iter().any(|p| name.contains(p));
    if has(&["CUDAPluggableAllocator"]) {
        Some(GpuPool::PytorchMempoolPluggable)
    } else if has(&["ExpandableSegment"]) {
        Some(GpuPool::PytorchExpandable)
    } else if has(&["CachingHostAllocator", "CUDAHostAllocator"]) {
        Some(GpuPool::PytorchPinnedCache)
    } else if has(&["CUDACachingAllocator", "DeviceCachingAllocator"]) {
        Some(caching(key))
    } else {
        None
    }
}

/// What a module is, for attribution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Module {
    /// One of PyTorch's libraries; `cuda` for `libc10_cuda`/`libtorch_cuda`.
    PyTorch { cuda: bool },
    /// A library whose allocations are its pool's.
    Library(GpuPool),
    /// Anything else: the application's own code (or a library not in the table).
    Application,
}

fn classify(path: &str) -> Module {
    let name = module_file_name(path);
    if name.starts_with("libc10") || name.starts_with("libtorch") {
        let cuda = name.starts_with("libc10_cuda") || name.starts_with("libtorch_cuda");
        return Module::PyTorch { cuda };
    }
    let pool = if name.starts_with("libnccl") {
        GpuPool::Nccl
    } else if name.starts_with("libcublasLt") {
        GpuPool::Cublaslt
    } else if name.starts_with("libcublas") {
        GpuPool::Cublas
    } else if path.contains("cupy/") {
        GpuPool::CupyPool
    } else if ["jaxlib", "xla", "jax_cuda"]
        .iter()
        .any(|p| path.contains(p))
    {
        GpuPool::Xla
    } else if path.contains("triton/") {
        GpuPool::Triton
    } else {
        return Module::Application;
    };
    Module::Library(pool)
}

/// The pool of memory PyTorch's module (`cuda`: a CUDA one) asked for itself.
fn pytorch_pool(key: &SiteKey, cuda: bool) -> GpuPool {
    let virtual_memory = matches!(
        key.space,
        Some(GpuSpace::Handle | GpuSpace::Mapping | GpuSpace::Reservation)
    );
    if virtual_memory && cuda {
        GpuPool::PytorchExpandable
    } else if key.kind == MemoryKind::Pinned {
        GpuPool::PytorchPinnedCache
    } else {
        caching(key)
    }
}

#[cfg(test)]
#[path = "gpu_pool_tests.rs"]
mod tests;
