//! Handlers of the driver's virtual memory management: physical handles (`cuMemCreate`,
//! `cuMemRelease`, retained and imported handles), mappings (`cuMemMap`, `cuMemUnmap`) and
//! reserved address ranges (`cuMemAddressReserve`, `cuMemAddressFree`), each recorded in its
//! own address space (see `Api::space`). Only created handles are the process's memory; the
//! collector keeps the rest apart.

use crate::cuda::query::{self, AllocProp};
use crate::record::{clock, Guard};
use leakscope_protocol::{Api, MemoryKind};
use libc::{c_int, c_void, size_t};

const DEVICE: MemoryKind = MemoryKind::Device;

/// The handle a successful call wrote (0 if none).
///
/// # Safety
/// `out` is null or points to a written handle.
unsafe fn written(out: *const u64) -> u64 {
    if out.is_null() {
        0
    } else {
        // SAFETY: the caller's contract.
        unsafe { out.read_unaligned() }
    }
}

/// `cuMemCreate`: a physical allocation where `prop` says (device memory, or pinned host
/// memory for a host location).
///
/// # Safety
/// The CUDA function's contract.
pub unsafe fn create(
    f: unsafe extern "C" fn(*mut u64, size_t, *const AllocProp, u64) -> c_int,
    out: *mut u64,
    size: size_t,
    prop: *const AllocProp,
    flags: u64,
) -> c_int {
    let Some(g) = Guard::enter() else {
        // SAFETY: forwarding.
        return unsafe { f(out, size, prop, flags) };
    };
    // SAFETY: forwarding.
    let rc = unsafe { f(out, size, prop, flags) };
    // SAFETY: the call succeeded, so it wrote `out`.
    let handle = if rc == 0 { unsafe { written(out) } } else { 0 };
    if handle != 0 {
        let (kind, device) = if prop.is_null() {
            (DEVICE, None)
        } else {
            // SAFETY: `prop` is the caller's valid allocation description.
            query::location(&unsafe { prop.read_unaligned() })
        };
        g.gpu_alloc(handle, size as u64, kind, Api::CuMemCreate, device);
    }
    rc
}

/// `cuMemRelease`: drops one reference to a handle.
///
/// # Safety
/// The CUDA function's contract.
pub unsafe fn release(f: unsafe extern "C" fn(u64) -> c_int, handle: u64) -> c_int {
    let _g = Guard::enter().inspect(|g| {
        g.free(
            handle,
            0,
            DEVICE,
            Api::CuMemRelease,
            clock::now_before_release(),
        )
    });
    // SAFETY: forwarding.
    unsafe { f(handle) }
}

/// `cuMemRetainAllocationHandle`: another reference to the handle mapped at `addr`.
///
/// # Safety
/// The CUDA function's contract.
pub unsafe fn retain(
    f: unsafe extern "C" fn(*mut u64, *mut c_void) -> c_int,
    out: *mut u64,
    addr: *mut c_void,
) -> c_int {
    let Some(g) = Guard::enter() else {
        // SAFETY: forwarding.
        return unsafe { f(out, addr) };
    };
    // SAFETY: forwarding.
    let rc = unsafe { f(out, addr) };
    // SAFETY: the call succeeded, so it wrote `out`.
    let handle = if rc == 0 { unsafe { written(out) } } else { 0 };
    if handle != 0 {
        let device = query::device_of(addr as u64);
        g.gpu_alloc(handle, 0, DEVICE, Api::CuMemRetainAllocationHandle, device);
    }
    rc
}

/// `cuMemImportFromShareableHandle`: a handle another process created.
///
/// # Safety
/// The CUDA function's contract.
pub unsafe fn import(
    f: unsafe extern "C" fn(*mut u64, *mut c_void, c_int) -> c_int,
    out: *mut u64,
    os_handle: *mut c_void,
    kind: c_int,
) -> c_int {
    let Some(g) = Guard::enter() else {
        // SAFETY: forwarding.
        return unsafe { f(out, os_handle, kind) };
    };
    // SAFETY: forwarding.
    let rc = unsafe { f(out, os_handle, kind) };
    // SAFETY: the call succeeded, so it wrote `out`.
    let handle = if rc == 0 { unsafe { written(out) } } else { 0 };
    if handle != 0 {
        let (kind, device) = query::handle_location(handle).unwrap_or((DEVICE, None));
        g.gpu_alloc(handle, 0, kind, Api::CuMemImportFromShareableHandle, device);
    }
    rc
}

/// `cuMemMap`: `handle` mapped at `[ptr, ptr + size)`.
///
/// # Safety
/// The CUDA function's contract.
pub unsafe fn map(
    f: unsafe extern "C" fn(u64, size_t, size_t, u64, u64) -> c_int,
    ptr: u64,
    size: size_t,
    offset: size_t,
    handle: u64,
    flags: u64,
) -> c_int {
    let Some(g) = Guard::enter() else {
        // SAFETY: forwarding.
        return unsafe { f(ptr, size, offset, handle, flags) };
    };
    // SAFETY: forwarding.
    let rc = unsafe { f(ptr, size, offset, handle, flags) };
    if rc == 0 && ptr != 0 {
        let (kind, device) = query::handle_location(handle).unwrap_or((DEVICE, None));
        g.gpu_alloc(ptr, size as u64, kind, Api::CuMemMap, device);
    }
    rc
}

/// `cuMemUnmap` and `cuMemAddressFree` (`api` says which): give `[ptr, ptr + size)` back,
/// a mapping or a reserved range.
///
/// # Safety
/// The CUDA function's contract.
pub unsafe fn release_range(
    f: unsafe extern "C" fn(u64, size_t) -> c_int,
    api: Api,
    ptr: u64,
    size: size_t,
) -> c_int {
    let _g = Guard::enter()
        .inspect(|g| g.free(ptr, size as u64, DEVICE, api, clock::now_before_release()));
    // SAFETY: forwarding.
    unsafe { f(ptr, size) }
}

/// `cuMemAddressReserve`: a range of virtual addresses, no memory, on the current
/// context's device.
///
/// # Safety
/// The CUDA function's contract.
pub unsafe fn reserve(
    f: unsafe extern "C" fn(*mut u64, size_t, size_t, u64, u64) -> c_int,
    out: *mut u64,
    size: size_t,
    align: size_t,
    addr: u64,
    flags: u64,
) -> c_int {
    let Some(g) = Guard::enter() else {
        // SAFETY: forwarding.
        return unsafe { f(out, size, align, addr, flags) };
    };
    // SAFETY: forwarding.
    let rc = unsafe { f(out, size, align, addr, flags) };
    // SAFETY: the call succeeded, so it wrote `out`.
    let base = if rc == 0 { unsafe { written(out) } } else { 0 };
    if base != 0 {
        // A reservation is made for the current context's device.
        let device = query::current_device();
        g.gpu_alloc(base, size as u64, DEVICE, Api::CuMemAddressReserve, device);
    }
    rc
}
