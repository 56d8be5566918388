//! The CUDA hook table: every intercepted runtime and driver function, declared once. Each
//! entry yields
//! - the exported function of that name (its real function found by `CudaReal`),
//! - [`SLOT_COUNT`] wrappers, each calling the real pointer that a resolver handed out for
//!   this function (`Slots`), so pointers from `cuGetProcAddress`, `cudaGetDriverEntryPoint`
//!   and `dlsym` are intercepted with the ABI and stream flags their caller asked for,
//! - an [`Entry`] that `resolve` uses to swap such a pointer for a wrapper: by symbol name
//!   (`dlsym`) or by base name within a range of CUDA versions (the resolvers).
//!
//! Handlers (`memory`, `vmm`, `streams`, `resolve`) take the real function first and follow
//! guard -> real call -> record -> return; frees are recorded before the real call. Every
//! wrapped function returns a CUDA status code; 3 is "not initialized" in both the runtime
//! (`cudaErrorInitializationError`) and the driver (`CUDA_ERROR_NOT_INITIALIZED`).

mod memory;
pub mod resolve;
mod streams;
mod vmm;

use crate::cuda::query::AllocProp;
use crate::cuda::slots::{CudaReal, Lib, Slots, SLOT_COUNT};
use cudarc::driver::sys::{CUdeviceptr, CUmemGenericAllocationHandle as Handle};
use leakscope_protocol::{Api, MemoryKind};
use libc::{c_char, c_int, c_uint, c_void, size_t};
use memory::{Extent, PitchedPtr};

/// What a hook returns when no real function can be found.
const NOT_INITIALIZED: c_int = 3;

const DEVICE: MemoryKind = MemoryKind::Device;
const PINNED: MemoryKind = MemoryKind::Pinned;
const MANAGED: MemoryKind = MemoryKind::Managed;

/// A `CUstream`/`cudaStream_t`, `CUmemoryPool`/`cudaMemPool_t` or graph: opaque pointers.
type Opaque = *mut c_void;

/// How a resolver's answer for a function is swapped for a wrapper.
pub struct Entry {
    /// The exported symbol (as `dlsym` asks for it).
    pub symbol: &'static [u8],
    /// The name `cuGetProcAddress` and `cudaGetDriverEntryPoint` take, and the CUDA
    /// versions (`min..max`) whose answer has this entry's ABI.
    pub base: Option<(&'static [u8], u32, u32)>,
    /// The wrapper serving a real pointer (claiming a slot), `None` when all are taken.
    pub wrap: fn(usize) -> Option<usize>,
    /// Whether an address is this entry's export or one of its wrappers.
    pub owns: fn(usize) -> bool,
}

macro_rules! cuda_table {
    ($(
        $lib:ident fn $name:ident($($arg:ident: $ty:ty),*) => $handler:path [$($extra:expr),*]
            $(as $base:literal $min:literal $(.. $max:literal)?)?;
    )*) => {
        $(
            #[allow(non_snake_case)]
            mod $name {
                use super::*;

                pub type F = unsafe extern "C" fn($($ty),*) -> c_int;

                pub static REAL: CudaReal = CudaReal::new(
                    super::cstr(concat!(stringify!($name), "\0")),
                    Lib::$lib,
                );
                static SLOTS: Slots = Slots::new();

                /// Wrapper `K`: the handler over the real pointer in slot `K`.
                unsafe extern "C" fn slot<const K: usize>($($arg: $ty),*) -> c_int {
                    match SLOTS.real::<F>(K) {
                        // SAFETY: forwards the caller's arguments to the pointer the
                        // resolver returned for them, under the same contract.
                        Some(f) => unsafe { $handler(f, $($extra,)* $($arg),*) },
                        None => NOT_INITIALIZED,
                    }
                }

                const _: () = assert!(SLOT_COUNT == 8);
                static WRAPPERS: [F; SLOT_COUNT] = [
                    slot::<0>, slot::<1>, slot::<2>, slot::<3>,
                    slot::<4>, slot::<5>, slot::<6>, slot::<7>,
                ];

                pub fn wrap(real: usize) -> Option<usize> {
                    SLOTS.claim(real).map(|k| WRAPPERS[k] as usize)
                }

                pub fn owns(p: usize) -> bool {
                    p == super::$name as *const () as usize || WRAPPERS.iter().any(|&w| w as usize == p)
                }
            }

            /// Exported CUDA hook.
            ///
            /// # Safety
            /// The CUDA function's contract.
            #[no_mangle]
            #[allow(non_snake_case)]
            pub unsafe extern "C" fn $name($($arg: $ty),*) -> c_int {
                match $name::REAL.get::<$name::F>() {
                    // SAFETY: forwards the caller's arguments to the real function.
                    Some(f) => unsafe { $handler(f, $($extra,)* $($arg),*) },
                    None => NOT_INITIALIZED,
                }
            }
        )*

        /// Every entry of the table.
        pub static ENTRIES: &[Entry] = &[$(
            Entry {
                symbol: stringify!($name).as_bytes(),
                base: cuda_table!(@base $($base $min $(.. $max)?)?),
                wrap: $name::wrap,
                owns: $name::owns,
            },
        )*];
    };

    (@base) => { None };
    (@base $base:literal $min:literal) => { Some(($base.as_bytes(), $min, u32::MAX)) };
    (@base $base:literal $min:literal .. $max:literal) => { Some(($base.as_bytes(), $min, $max)) };
}

/// `concat!(name, "\0")` as a C string, at compile time.
const fn cstr(s: &'static str) -> &'static std::ffi::CStr {
    match std::ffi::CStr::from_bytes_with_nul(s.as_bytes()) {
        Ok(c) => c,
        Err(_) => panic!("CUDA hook name without a trailing NUL"),
    }
}

cuda_table! {
    // Runtime (libcudart): memory.
    Runtime fn cudaMalloc(p: *mut *mut c_void, size: size_t)
        => memory::alloc[Api::CudaMalloc, DEVICE];
    Runtime fn cudaMallocHost(p: *mut *mut c_void, size: size_t)
        => memory::alloc[Api::CudaMallocHost, PINNED];
    Runtime fn cudaHostAlloc(p: *mut *mut c_void, size: size_t, flags: c_uint)
        => memory::alloc_flags[Api::CudaHostAlloc, PINNED];
    Runtime fn cudaMallocManaged(p: *mut *mut c_void, size: size_t, flags: c_uint)
        => memory::alloc_flags[Api::CudaMallocManaged, MANAGED];
    Runtime fn cudaMallocPitch(p: *mut *mut c_void, pitch: *mut size_t, width: size_t, height: size_t)
        => memory::alloc_pitch[Api::CudaMallocPitch];
    Runtime fn cudaMalloc3D(p: *mut PitchedPtr, extent: Extent)
        => memory::alloc_3d[Api::CudaMalloc3D];
    Runtime fn cudaMallocAsync(p: *mut *mut c_void, size: size_t, stream: Opaque)
        => memory::alloc_async[Api::CudaMallocAsync];
    Runtime fn cudaMallocAsync_ptsz(p: *mut *mut c_void, size: size_t, stream: Opaque)
        => memory::alloc_async[Api::CudaMallocAsync];
    Runtime fn cudaMallocFromPoolAsync(p: *mut *mut c_void, size: size_t, pool: Opaque, stream: Opaque)
        => memory::alloc_from_pool[Api::CudaMallocFromPoolAsync];
    Runtime fn cudaMallocFromPoolAsync_ptsz(p: *mut *mut c_void, size: size_t, pool: Opaque, stream: Opaque)
        => memory::alloc_from_pool[Api::CudaMallocFromPoolAsync];
    Runtime fn cudaFree(p: *mut c_void) => memory::free[Api::CudaFree, DEVICE];
    Runtime fn cudaFreeHost(p: *mut c_void) => memory::free[Api::CudaFreeHost, PINNED];
    Runtime fn cudaFreeAsync(p: *mut c_void, stream: Opaque)
        => memory::free_async[Api::CudaFreeAsync];
    Runtime fn cudaFreeAsync_ptsz(p: *mut c_void, stream: Opaque)
        => memory::free_async[Api::CudaFreeAsync];
    Runtime fn cudaHostRegister(p: *mut c_void, size: size_t, flags: c_uint)
        => memory::register[Api::CudaHostRegister];
    Runtime fn cudaHostUnregister(p: *mut c_void) => memory::free[Api::CudaHostUnregister, PINNED];

    // Runtime: stream-ordered pools and graph capture.
    Runtime fn cudaMemPoolCreate(pool: *mut Opaque, props: *const AllocProp)
        => streams::pool_create[Api::CudaMemPoolCreate];
    Runtime fn cudaMemPoolDestroy(pool: Opaque) => streams::pool_destroy[Api::CudaMemPoolDestroy];
    Runtime fn cudaMemPoolTrimTo(pool: Opaque, keep: size_t)
        => streams::pool_trim[Api::CudaMemPoolTrimTo];
    Runtime fn cudaStreamBeginCapture(stream: Opaque, mode: c_int) => streams::capture_begin[];
    Runtime fn cudaStreamBeginCapture_ptsz(stream: Opaque, mode: c_int) => streams::capture_begin[];
    Runtime fn cudaStreamEndCapture(stream: Opaque, graph: *mut Opaque) => streams::capture_end[];
    Runtime fn cudaStreamEndCapture_ptsz(stream: Opaque, graph: *mut Opaque) => streams::capture_end[];

    // Runtime: entry-point getters (PyTorch's expandable segments reach the driver so).
    Runtime fn cudaGetDriverEntryPoint(symbol: *const c_char, pfn: *mut *mut c_void, flags: u64, status: *mut c_void)
        => resolve::entry_point[];
    Runtime fn cudaGetDriverEntryPoint_ptsz(symbol: *const c_char, pfn: *mut *mut c_void, flags: u64, status: *mut c_void)
        => resolve::entry_point[];
    Runtime fn cudaGetDriverEntryPointByVersion(symbol: *const c_char, pfn: *mut *mut c_void, version: c_uint, flags: u64, status: *mut c_void)
        => resolve::entry_point_by_version[];
    Runtime fn cudaGetDriverEntryPointByVersion_ptsz(symbol: *const c_char, pfn: *mut *mut c_void, version: c_uint, flags: u64, status: *mut c_void)
        => resolve::entry_point_by_version[];

    // Driver (libcuda): memory. `cuMemAlloc` below 3020 is the legacy 32-bit ABI: unwrapped.
    Driver fn cuMemAlloc_v2(p: *mut CUdeviceptr, size: size_t)
        => memory::alloc[Api::CuMemAlloc, DEVICE] as "cuMemAlloc" 3020;
    Driver fn cuMemAllocHost_v2(p: *mut *mut c_void, size: size_t)
        => memory::alloc[Api::CuMemAllocHost, PINNED] as "cuMemAllocHost" 3020;
    Driver fn cuMemHostAlloc(p: *mut *mut c_void, size: size_t, flags: c_uint)
        => memory::alloc_flags[Api::CuMemHostAlloc, PINNED] as "cuMemHostAlloc" 2020;
    Driver fn cuMemAllocManaged(p: *mut CUdeviceptr, size: size_t, flags: c_uint)
        => memory::alloc_flags[Api::CuMemAllocManaged, MANAGED] as "cuMemAllocManaged" 6000;
    Driver fn cuMemAllocPitch_v2(p: *mut CUdeviceptr, pitch: *mut size_t, width: size_t, height: size_t, elem: c_uint)
        => memory::alloc_pitch_elem[Api::CuMemAllocPitch] as "cuMemAllocPitch" 3020;
    Driver fn cuMemAllocAsync(p: *mut CUdeviceptr, size: size_t, stream: Opaque)
        => memory::alloc_async[Api::CuMemAllocAsync] as "cuMemAllocAsync" 11020;
    Driver fn cuMemAllocAsync_ptsz(p: *mut CUdeviceptr, size: size_t, stream: Opaque)
        => memory::alloc_async[Api::CuMemAllocAsync];
    Driver fn cuMemAllocFromPoolAsync(p: *mut CUdeviceptr, size: size_t, pool: Opaque, stream: Opaque)
        => memory::alloc_from_pool[Api::CuMemAllocFromPoolAsync] as "cuMemAllocFromPoolAsync" 11020;
    Driver fn cuMemAllocFromPoolAsync_ptsz(p: *mut CUdeviceptr, size: size_t, pool: Opaque, stream: Opaque)
        => memory::alloc_from_pool[Api::CuMemAllocFromPoolAsync];
    Driver fn cuMemFree_v2(p: CUdeviceptr) => memory::free[Api::CuMemFree, DEVICE] as "cuMemFree" 3020;
    Driver fn cuMemFreeHost(p: *mut c_void)
        => memory::free[Api::CuMemFreeHost, PINNED] as "cuMemFreeHost" 2000;
    Driver fn cuMemFreeAsync(p: CUdeviceptr, stream: Opaque)
        => memory::free_async[Api::CuMemFreeAsync] as "cuMemFreeAsync" 11020;
    Driver fn cuMemFreeAsync_ptsz(p: CUdeviceptr, stream: Opaque) => memory::free_async[Api::CuMemFreeAsync];
    Driver fn cuMemHostRegister_v2(p: *mut c_void, size: size_t, flags: c_uint)
        => memory::register[Api::CuMemHostRegister] as "cuMemHostRegister" 6050;
    Driver fn cuMemHostRegister(p: *mut c_void, size: size_t, flags: c_uint)
        => memory::register[Api::CuMemHostRegister] as "cuMemHostRegister" 4000..6050;
    Driver fn cuMemHostUnregister(p: *mut c_void)
        => memory::free[Api::CuMemHostUnregister, PINNED] as "cuMemHostUnregister" 4000;

    // Driver: virtual memory management (vLLM's cumem allocator, PyTorch's expandable
    // segments, NCCL >= 2.19).
    Driver fn cuMemCreate(handle: *mut Handle, size: size_t, prop: *const AllocProp, flags: u64)
        => vmm::create[] as "cuMemCreate" 10020;
    Driver fn cuMemRelease(handle: Handle) => vmm::release[] as "cuMemRelease" 10020;
    Driver fn cuMemRetainAllocationHandle(handle: *mut Handle, addr: *mut c_void)
        => vmm::retain[] as "cuMemRetainAllocationHandle" 11000;
    Driver fn cuMemImportFromShareableHandle(handle: *mut Handle, os_handle: *mut c_void, kind: c_int)
        => vmm::import[] as "cuMemImportFromShareableHandle" 10020;
    Driver fn cuMemMap(ptr: CUdeviceptr, size: size_t, offset: size_t, handle: Handle, flags: u64)
        => vmm::map[] as "cuMemMap" 10020;
    Driver fn cuMemUnmap(ptr: CUdeviceptr, size: size_t) => vmm::release_range[Api::CuMemUnmap] as "cuMemUnmap" 10020;
    Driver fn cuMemAddressReserve(p: *mut CUdeviceptr, size: size_t, align: size_t, addr: CUdeviceptr, flags: u64)
        => vmm::reserve[] as "cuMemAddressReserve" 10020;
    Driver fn cuMemAddressFree(ptr: CUdeviceptr, size: size_t) => vmm::release_range[Api::CuMemAddressFree] as "cuMemAddressFree" 10020;

    // Driver: stream-ordered pools and graph capture.
    Driver fn cuMemPoolCreate(pool: *mut Opaque, props: *const AllocProp)
        => streams::pool_create[Api::CuMemPoolCreate] as "cuMemPoolCreate" 11020;
    Driver fn cuMemPoolDestroy(pool: Opaque)
        => streams::pool_destroy[Api::CuMemPoolDestroy] as "cuMemPoolDestroy" 11020;
    Driver fn cuMemPoolTrimTo(pool: Opaque, keep: size_t)
        => streams::pool_trim[Api::CuMemPoolTrimTo] as "cuMemPoolTrimTo" 11020;
    Driver fn cuStreamBeginCapture_v2(stream: Opaque, mode: c_int)
        => streams::capture_begin[] as "cuStreamBeginCapture" 10010;
    Driver fn cuStreamBeginCapture_v2_ptsz(stream: Opaque, mode: c_int) => streams::capture_begin[];
    Driver fn cuStreamEndCapture(stream: Opaque, graph: *mut Opaque)
        => streams::capture_end[] as "cuStreamEndCapture" 10000;
    Driver fn cuStreamEndCapture_ptsz(stream: Opaque, graph: *mut Opaque) => streams::capture_end[];

    // Driver: the resolver itself (libcudart and static runtimes reach the driver through
    // it). The 4-argument ABI is CUDA 11.3 to 11.8's; 12.0 added the status argument.
    Driver fn cuGetProcAddress(symbol: *const c_char, pfn: *mut *mut c_void, version: c_int, flags: u64)
        => resolve::proc_address[] as "cuGetProcAddress" 11030..12000;
    Driver fn cuGetProcAddress_v2(symbol: *const c_char, pfn: *mut *mut c_void, version: c_int, flags: u64, status: *mut c_int)
        => resolve::proc_address_v2[] as "cuGetProcAddress" 12000;
    Driver fn cuGetProcAddress_v2_ptsz(symbol: *const c_char, pfn: *mut *mut c_void, version: c_int, flags: u64, status: *mut c_int)
        => resolve::proc_address_v2[];
}
