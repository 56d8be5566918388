//! Hooks of anonymous memory mappings (`MemoryKind::Mapped`). File-backed mappings are not
//! recorded, nor are `PROT_NONE` mappings: they reserve address space, not memory (the CUDA
//! driver reserves gigabytes so). A `PROT_NONE` mapping placed with `MAP_FIXED` over
//! recorded memory releases it, and is recorded as that release. `munmap` and `mremap`
//! record once the call succeeded (a failed call changes nothing), with the `Free`
//! timestamp taken before the call, as for `realloc`.

use super::set_errno;
use crate::real::Real;
use crate::record::{clock, Guard};
use leakscope_protocol::{Api, MemoryKind};
use libc::{c_int, c_void, off_t, size_t, MAP_ANONYMOUS, MAP_FAILED, MAP_FIXED, PROT_NONE};

type MmapFn = unsafe extern "C" fn(*mut c_void, size_t, c_int, c_int, c_int, off_t) -> *mut c_void;
type MunmapFn = unsafe extern "C" fn(*mut c_void, size_t) -> c_int;
type MremapFn =
    unsafe extern "C" fn(*mut c_void, size_t, size_t, c_int, *mut c_void) -> *mut c_void;

const MAPPED: MemoryKind = MemoryKind::Mapped;

/// `mmap` and `mmap64` (the same function on 64-bit targets).
///
/// # Safety
/// `mmap`'s contract.
#[allow(clippy::too_many_arguments)] // mmap's six arguments, plus the table's two
pub unsafe fn mmap(
    real: &Real<MmapFn>,
    api: Api,
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: off_t,
) -> *mut c_void {
    let Some(f) = real.get() else {
        set_errno(libc::ENOSYS);
        return MAP_FAILED;
    };
    let g = if flags & MAP_ANONYMOUS != 0 {
        Guard::enter_host()
    } else {
        None
    };
    let before = clock::now_before_release();
    // SAFETY: forwarding.
    let p = unsafe { f(addr, len, prot, flags, fd, off) };
    if let Some(g) = g.filter(|_| p != MAP_FAILED) {
        if prot != PROT_NONE {
            g.alloc(p as u64, len as u64, MAPPED, api, clock::now());
        } else if flags & MAP_FIXED != 0 {
            g.free(p as u64, len as u64, MAPPED, api, before);
        }
    }
    p
}

/// # Safety
/// `munmap`'s contract.
pub unsafe fn munmap(real: &Real<MunmapFn>, api: Api, addr: *mut c_void, len: size_t) -> c_int {
    let Some(f) = real.get() else {
        set_errno(libc::ENOSYS);
        return -1;
    };
    let Some(g) = Guard::enter_host() else {
        // SAFETY: forwarding.
        return unsafe { f(addr, len) };
    };
    let before = clock::now_before_release();
    // SAFETY: forwarding.
    let r = unsafe { f(addr, len) };
    if r == 0 {
        g.free(addr as u64, len as u64, MAPPED, api, before);
    }
    r
}

/// # Safety
/// `mremap`'s contract (`new_addr` is read only with `MREMAP_FIXED`).
pub unsafe fn mremap(
    real: &Real<MremapFn>,
    api: Api,
    old: *mut c_void,
    old_len: size_t,
    new_len: size_t,
    flags: c_int,
    new_addr: *mut c_void,
) -> *mut c_void {
    let Some(f) = real.get() else {
        set_errno(libc::ENOSYS);
        return MAP_FAILED;
    };
    let Some(g) = Guard::enter_host() else {
        // SAFETY: forwarding.
        return unsafe { f(old, old_len, new_len, flags, new_addr) };
    };
    let before = clock::now_before_release();
    // SAFETY: forwarding.
    let p = unsafe { f(old, old_len, new_len, flags, new_addr) };
    if p != MAP_FAILED {
        g.free(old as u64, old_len as u64, MAPPED, api, before);
        g.alloc(p as u64, new_len as u64, MAPPED, api, clock::now());
    }
    p
}
