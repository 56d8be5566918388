//! Handlers of CUDA calls that hand out or take back memory by pointer: device, pinned and
//! managed allocations (runtime and driver forms share handlers, the pointer's C type being
//! a parameter), stream-ordered allocations (with a reading of the pool that served them),
//! and host registration. Each is guard -> real call -> record -> return; frees are recorded
//! before the real call. Nested calls (the runtime calling the driver through a wrapped
//! pointer) find the guard taken and pass straight through, so one allocation is recorded
//! once, under the API the program called.

use crate::cuda::query;
use crate::record::{clock, Guard};
use leakscope_protocol::{Api, MemoryKind, PoolAction};
use libc::{c_int, c_uint, c_void, size_t};

/// A pointer-sized address a CUDA call writes or takes: `void*` or `CUdeviceptr`.
pub trait Addr: Copy {
    fn bits(self) -> u64;
}

impl Addr for *mut c_void {
    fn bits(self) -> u64 {
        self as u64
    }
}

impl Addr for u64 {
    fn bits(self) -> u64 {
        self
    }
}

pub use cudarc::runtime::sys::{cudaExtent as Extent, cudaPitchedPtr as PitchedPtr};

/// The address a successful call wrote to `out` (0 if none).
///
/// # Safety
/// `out` is null or points to an `A` the call wrote.
unsafe fn written<A: Addr>(out: *mut A) -> u64 {
    if out.is_null() {
        return 0;
    }
    // SAFETY: the caller's contract; unaligned reads tolerate any output location.
    unsafe { out.read_unaligned() }.bits()
}

/// Records memory a successful call handed out at `addr` (nothing for a null address).
fn record(g: &Guard, addr: u64, size: u64, kind: MemoryKind, api: Api) {
    if addr == 0 {
        return;
    }
    let device = match kind {
        MemoryKind::Device | MemoryKind::Managed => query::device_of(addr),
        _ => None,
    };
    g.gpu_alloc(addr, size, kind, api, device);
}

/// Takes a reading of `pool` after an allocation or free from it, when one is due.
pub fn pool_reading(g: &Guard, pool: Option<u64>, device: Option<u32>, action: PoolAction) {
    let Some(pool) = pool else { return };
    if action == PoolAction::Sampled && !query::reading_due(pool, query::monotonic_ns()) {
        return;
    }
    let (reserved, used) = query::pool_usage(pool).unwrap_or((0, 0));
    g.pool(pool, device, action, reserved, used);
}

/// `cudaMalloc`, `cudaMallocHost`, `cuMemAlloc_v2`, `cuMemAllocHost_v2`.
///
/// # Safety
/// The CUDA function's contract.
pub unsafe fn alloc<A: Addr>(
    f: unsafe extern "C" fn(*mut A, size_t) -> c_int,
    api: Api,
    kind: MemoryKind,
    out: *mut A,
    size: size_t,
) -> c_int {
    let Some(g) = Guard::enter() else {
        // SAFETY: forwarding.
        return unsafe { f(out, size) };
    };
    // SAFETY: forwarding.
    let rc = unsafe { f(out, size) };
    if rc == 0 {
        // SAFETY: the call succeeded, so it wrote `out`.
        record(&g, unsafe { written(out) }, size as u64, kind, api);
    }
    rc
}

/// `cudaHostAlloc`, `cudaMallocManaged`, `cuMemHostAlloc`, `cuMemAllocManaged`.
///
/// # Safety
/// The CUDA function's contract.
pub unsafe fn alloc_flags<A: Addr>(
    f: unsafe extern "C" fn(*mut A, size_t, c_uint) -> c_int,
    api: Api,
    kind: MemoryKind,
    out: *mut A,
    size: size_t,
    flags: c_uint,
) -> c_int {
    let Some(g) = Guard::enter() else {
        // SAFETY: forwarding.
        return unsafe { f(out, size, flags) };
    };
    // SAFETY: forwarding.
    let rc = unsafe { f(out, size, flags) };
    if rc == 0 {
        // SAFETY: the call succeeded, so it wrote `out`.
        record(&g, unsafe { written(out) }, size as u64, kind, api);
    }
    rc
}

/// The bytes of a pitched allocation (`pitch` rows of `height`), after the call wrote
/// `pitch`.
///
/// # Safety
/// `pitch` is null or points to a written `size_t`.
unsafe fn pitched(pitch: *const size_t, height: size_t) -> u64 {
    if pitch.is_null() {
        return 0;
    }
    // SAFETY: the caller's contract.
    (unsafe { pitch.read_unaligned() } as u64).saturating_mul(height as u64)
}

/// `cudaMallocPitch`.
///
/// # Safety
/// The CUDA function's contract.
pub unsafe fn alloc_pitch(
    f: unsafe extern "C" fn(*mut *mut c_void, *mut size_t, size_t, size_t) -> c_int,
    api: Api,
    out: *mut *mut c_void,
    pitch: *mut size_t,
    width: size_t,
    height: size_t,
) -> c_int {
    let Some(g) = Guard::enter() else {
        // SAFETY: forwarding.
        return unsafe { f(out, pitch, width, height) };
    };
    // SAFETY: forwarding.
    let rc = unsafe { f(out, pitch, width, height) };
    if rc == 0 {
        // SAFETY: the call succeeded, so it wrote `out` and `pitch`.
        let (addr, size) = unsafe { (written(out), pitched(pitch, height)) };
        record(&g, addr, size, MemoryKind::Device, api);
    }
    rc
}

/// `cuMemAllocPitch_v2`.
///
/// # Safety
/// The CUDA function's contract.
pub unsafe fn alloc_pitch_elem(
    f: unsafe extern "C" fn(*mut u64, *mut size_t, size_t, size_t, c_uint) -> c_int,
    api: Api,
    out: *mut u64,
    pitch: *mut size_t,
    width: size_t,
    height: size_t,
    elem: c_uint,
) -> c_int {
    let Some(g) = Guard::enter() else {
        // SAFETY: forwarding.
        return unsafe { f(out, pitch, width, height, elem) };
    };
    // SAFETY: forwarding.
    let rc = unsafe { f(out, pitch, width, height, elem) };
    if rc == 0 {
        // SAFETY: the call succeeded, so it wrote `out` and `pitch`.
        let (addr, size) = unsafe { (written(out), pitched(pitch, height)) };
        record(&g, addr, size, MemoryKind::Device, api);
    }
    rc
}

/// `cudaMalloc3D`: `pitch * height * depth` bytes.
///
/// # Safety
/// The CUDA function's contract.
pub unsafe fn alloc_3d(
    f: unsafe extern "C" fn(*mut PitchedPtr, Extent) -> c_int,
    api: Api,
    out: *mut PitchedPtr,
    extent: Extent,
) -> c_int {
    let Some(g) = Guard::enter() else {
        // SAFETY: forwarding.
        return unsafe { f(out, extent) };
    };
    // SAFETY: forwarding.
    let rc = unsafe { f(out, extent) };
    if rc == 0 && !out.is_null() {
        // SAFETY: the call succeeded, so it wrote `*out`.
        let pp = unsafe { out.read_unaligned() };
        let size = (pp.pitch as u64)
            .saturating_mul(extent.height as u64)
            .saturating_mul(extent.depth.max(1) as u64);
        record(&g, pp.ptr as u64, size, MemoryKind::Device, api);
    }
    rc
}

/// `cudaMallocAsync`, `cuMemAllocAsync` (and `_ptsz`): from the device's current pool.
///
/// # Safety
/// The CUDA function's contract.
pub unsafe fn alloc_async<A: Addr>(
    f: unsafe extern "C" fn(*mut A, size_t, *mut c_void) -> c_int,
    api: Api,
    out: *mut A,
    size: size_t,
    stream: *mut c_void,
) -> c_int {
    let Some(g) = Guard::enter() else {
        // SAFETY: forwarding.
        return unsafe { f(out, size, stream) };
    };
    // SAFETY: forwarding.
    let rc = unsafe { f(out, size, stream) };
    if rc == 0 {
        // SAFETY: the call succeeded, so it wrote `out`.
        let addr = unsafe { written(out) };
        if addr != 0 {
            let device = query::device_of(addr);
            g.gpu_alloc(addr, size as u64, MemoryKind::Device, api, device);
            pool_reading(&g, query::pool_of(addr), device, PoolAction::Sampled);
        }
    }
    rc
}

/// `cudaMallocFromPoolAsync`, `cuMemAllocFromPoolAsync` (and `_ptsz`).
///
/// # Safety
/// The CUDA function's contract.
pub unsafe fn alloc_from_pool<A: Addr>(
    f: unsafe extern "C" fn(*mut A, size_t, *mut c_void, *mut c_void) -> c_int,
    api: Api,
    out: *mut A,
    size: size_t,
    pool: *mut c_void,
    stream: *mut c_void,
) -> c_int {
    let Some(g) = Guard::enter() else {
        // SAFETY: forwarding.
        return unsafe { f(out, size, pool, stream) };
    };
    // SAFETY: forwarding.
    let rc = unsafe { f(out, size, pool, stream) };
    if rc == 0 {
        // SAFETY: the call succeeded, so it wrote `out`.
        let addr = unsafe { written(out) };
        if addr != 0 {
            let device = query::device_of(addr);
            g.gpu_alloc(addr, size as u64, MemoryKind::Device, api, device);
            let pool = (!pool.is_null()).then_some(pool as u64);
            pool_reading(&g, pool, device, PoolAction::Sampled);
        }
    }
    rc
}

/// `cudaFree`, `cudaFreeHost`, `cudaHostUnregister`, `cuMemFree_v2`, `cuMemFreeHost`,
/// `cuMemHostUnregister`. `cudaFree(NULL)` (a common way to create the context) records
/// nothing.
///
/// # Safety
/// The CUDA function's contract.
pub unsafe fn free<A: Addr>(
    f: unsafe extern "C" fn(A) -> c_int,
    api: Api,
    kind: MemoryKind,
    p: A,
) -> c_int {
    let addr = p.bits();
    let _g = (addr != 0)
        .then(Guard::enter)
        .flatten()
        .inspect(|g| g.free(addr, 0, kind, api, clock::now_before_release()));
    // SAFETY: forwarding; the guard stays held so the runtime's driver call passes through.
    unsafe { f(p) }
}

/// `cudaFreeAsync`, `cuMemFreeAsync` (and `_ptsz`): the pool is asked before the free.
///
/// # Safety
/// The CUDA function's contract.
pub unsafe fn free_async<A: Addr>(
    f: unsafe extern "C" fn(A, *mut c_void) -> c_int,
    api: Api,
    p: A,
    stream: *mut c_void,
) -> c_int {
    let addr = p.bits();
    let Some(g) = (addr != 0).then(Guard::enter).flatten() else {
        // SAFETY: forwarding.
        return unsafe { f(p, stream) };
    };
    let pool = query::pool_of(addr);
    g.free(
        addr,
        0,
        MemoryKind::Device,
        api,
        clock::now_before_release(),
    );
    // SAFETY: forwarding.
    let rc = unsafe { f(p, stream) };
    if rc == 0 {
        pool_reading(&g, pool, None, PoolAction::Sampled);
    }
    rc
}

/// `cudaHostRegister`, `cuMemHostRegister[_v2]`: host memory page-locked in place.
///
/// # Safety
/// The CUDA function's contract.
pub unsafe fn register(
    f: unsafe extern "C" fn(*mut c_void, size_t, c_uint) -> c_int,
    api: Api,
    p: *mut c_void,
    size: size_t,
    flags: c_uint,
) -> c_int {
    let Some(g) = Guard::enter() else {
        // SAFETY: forwarding.
        return unsafe { f(p, size, flags) };
    };
    // SAFETY: forwarding.
    let rc = unsafe { f(p, size, flags) };
    if rc == 0 && !p.is_null() {
        g.gpu_alloc(p as u64, size as u64, MemoryKind::Pinned, api, None);
    }
    rc
}
