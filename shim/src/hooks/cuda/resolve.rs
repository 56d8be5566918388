//! Resolvers: the calls that hand out pointers to CUDA functions. `cuGetProcAddress[_v2]`
//! and `cudaGetDriverEntryPoint[ByVersion]` name a function by base name and CUDA version;
//! `dlsym` by exported symbol. When the real resolver succeeded and the function is in the
//! table at that version, the pointer it wrote or returned is swapped for a wrapper bound
//! to exactly that pointer (see `cuda::slots`); a pointer that already is the shim's is left
//! alone, so a resolver answering through another never wraps twice. `cuGetExportTable` is
//! not touched.

use super::super::REAL;
use super::ENTRIES;
use crate::real;
use libc::{c_char, c_int, c_uint, c_void};
use std::ffi::CStr;

/// The version `cudaGetDriverEntryPoint` asks for: the newest the runtime knows.
const NEWEST: u32 = u32::MAX - 1;

fn is_ours(p: usize) -> bool {
    ENTRIES.iter().any(|e| (e.owns)(p))
}

/// The pointer to hand out for `real`, found for base name `name` at CUDA `version`.
pub fn by_base(name: &[u8], version: u32, real: usize) -> usize {
    if is_ours(real) {
        return real;
    }
    ENTRIES
        .iter()
        .find(|e| {
            e.base
                .is_some_and(|(b, min, max)| b == name && (min..max).contains(&version))
        })
        .and_then(|e| (e.wrap)(real))
        .unwrap_or(real)
}

/// The pointer to hand out for `real`, found as the exported symbol `name`.
pub fn by_symbol(name: &[u8], real: usize) -> usize {
    if is_ours(real) {
        return real;
    }
    ENTRIES
        .iter()
        .find(|e| e.symbol == name)
        .and_then(|e| (e.wrap)(real))
        .unwrap_or(real)
}

/// Swaps the pointer a successful resolver wrote to `pfn`.
///
/// # Safety
/// `symbol` is null or NUL-terminated; `pfn` is null or points to the written pointer.
unsafe fn swap(symbol: *const c_char, pfn: *mut *mut c_void, version: u32) {
    if symbol.is_null() || pfn.is_null() {
        return;
    }
    // SAFETY: the caller's contract.
    let (name, p) = unsafe { (CStr::from_ptr(symbol).to_bytes(), pfn.read_unaligned()) };
    if !p.is_null() {
        // SAFETY: the caller's contract (`pfn` is writable: the resolver just wrote it).
        unsafe { pfn.write_unaligned(by_base(name, version, p as usize) as *mut c_void) };
    }
}

/// `cuGetProcAddress` (CUDA 11.3 to 11.8's ABI).
///
/// # Safety
/// The CUDA function's contract.
pub unsafe fn proc_address(
    f: unsafe extern "C" fn(*const c_char, *mut *mut c_void, c_int, u64) -> c_int,
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    version: c_int,
    flags: u64,
) -> c_int {
    // SAFETY: forwarding.
    let rc = unsafe { f(symbol, pfn, version, flags) };
    if rc == 0 {
        // SAFETY: the call succeeded, so `pfn` holds its answer.
        unsafe { swap(symbol, pfn, version.max(0) as u32) };
    }
    rc
}

/// `cuGetProcAddress_v2` (and `_ptsz`). The status is not read: a found symbol is a
/// non-null pointer.
///
/// # Safety
/// The CUDA function's contract.
pub unsafe fn proc_address_v2(
    f: unsafe extern "C" fn(*const c_char, *mut *mut c_void, c_int, u64, *mut c_int) -> c_int,
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    version: c_int,
    flags: u64,
    status: *mut c_int,
) -> c_int {
    // SAFETY: forwarding.
    let rc = unsafe { f(symbol, pfn, version, flags, status) };
    if rc == 0 {
        // SAFETY: the call succeeded, so `pfn` holds its answer.
        unsafe { swap(symbol, pfn, version.max(0) as u32) };
    }
    rc
}

/// `cudaGetDriverEntryPoint` (and `_ptsz`): the newest version the runtime knows. CUDA 11's
/// form has no status argument; it is passed on untouched and never read.
///
/// # Safety
/// The CUDA function's contract.
pub unsafe fn entry_point(
    f: unsafe extern "C" fn(*const c_char, *mut *mut c_void, u64, *mut c_void) -> c_int,
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    flags: u64,
    status: *mut c_void,
) -> c_int {
    // SAFETY: forwarding.
    let rc = unsafe { f(symbol, pfn, flags, status) };
    if rc == 0 {
        // SAFETY: the call succeeded, so `pfn` holds its answer.
        unsafe { swap(symbol, pfn, NEWEST) };
    }
    rc
}

/// `cudaGetDriverEntryPointByVersion` (and `_ptsz`).
///
/// # Safety
/// The CUDA function's contract.
pub unsafe fn entry_point_by_version(
    f: unsafe extern "C" fn(*const c_char, *mut *mut c_void, c_uint, u64, *mut c_void) -> c_int,
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    version: c_uint,
    flags: u64,
    status: *mut c_void,
) -> c_int {
    // SAFETY: forwarding.
    let rc = unsafe { f(symbol, pfn, version, flags, status) };
    if rc == 0 {
        // SAFETY: the call succeeded, so `pfn` holds its answer.
        unsafe { swap(symbol, pfn, version) };
    }
    rc
}

extern "C" fn unavailable() -> *mut c_void {
    std::ptr::null_mut()
}

/// Whether `dlsym(handle, name)` could need a wrapper: an explicit handle (RTLD_NEXT and
/// RTLD_DEFAULT depend on the caller, and RTLD_DEFAULT finds the shim's exports anyway) and
/// a name in the table.
///
/// # Safety
/// `name` is null or NUL-terminated.
unsafe fn wraps(handle: *mut c_void, name: *const c_char) -> bool {
    if handle.is_null() || handle == libc::RTLD_NEXT || name.is_null() {
        return false;
    }
    // SAFETY: the caller's contract.
    let name = unsafe { CStr::from_ptr(name) }.to_bytes();
    name.starts_with(b"cu") && ENTRIES.iter().any(|e| e.symbol == name)
}

/// Router of the `dlsym` trampoline (see `hooks/mod.rs`): the real `dlsym` itself, with the
/// program's return address, unless the answer may need a wrapper.
///
/// # Safety
/// `dlsym`'s contract (`name` is NUL-terminated).
pub unsafe extern "C" fn dlsym_route(handle: *mut c_void, name: *const c_char) -> usize {
    // The table's real `dlsym`, or the C library's while a lookup is under way on this
    // thread (the table's answers `None` then).
    match REAL.dlsym.get().or_else(real::real_dlsym) {
        // SAFETY: the caller's contract.
        Some(_) if unsafe { wraps(handle, name) } => dlsym_wrapped as *const () as usize,
        Some(f) => f as usize,
        None => unavailable as *const () as usize,
    }
}

/// `dlsym` for a CUDA function in an explicit handle: the library's own definition, then a
/// wrapper bound to it.
///
/// # Safety
/// `dlsym`'s contract.
unsafe extern "C" fn dlsym_wrapped(handle: *mut c_void, name: *const c_char) -> *mut c_void {
    // SAFETY: forwarding; an explicit handle's answer does not depend on the caller.
    let p = unsafe { real::dlsym(handle, name) };
    if p.is_null() {
        return p;
    }
    // SAFETY: `wraps` checked `name` is a NUL-terminated string.
    let name = unsafe { CStr::from_ptr(name) }.to_bytes();
    by_symbol(name, p as usize) as *mut c_void
}
