//! Hooks of the dynamic loader. `dlopen` and `dlmopen` decide whom a bare library name is
//! searched for (RPATH/RUNPATH, `$ORIGIN`) and which namespace it joins from their return
//! address, so wrapping them in an ordinary function would make every such call look like
//! the shim's own. Their exports are trampolines (see `hooks/mod.rs`): for a request that
//! depends on the caller (a name without `/`, or with `$`) they jump straight to the real
//! function and the sender thread's periodic `ModuleAnnouncer::poll` notices the new module
//! through the loader's counters; for any other request they continue in a wrapper that tells the
//! unwinder right away. `dlclose` tells the unwinder before the module goes away.

use super::REAL;
use crate::real::Real;
use crate::record::Guard;
use crate::unwind;
use libc::{c_char, c_int, c_long, c_void};

type DlcloseFn = unsafe extern "C" fn(*mut c_void) -> c_int;

/// Whether the loader's answer for `file` depends on the calling object.
fn depends_on_caller(file: *const c_char) -> bool {
    if file.is_null() {
        return false;
    }
    // SAFETY: `dlopen`'s contract: a non-null file is a NUL-terminated string.
    let name = unsafe { std::ffi::CStr::from_ptr(file) }.to_bytes();
    !name.contains(&b'/') || name.contains(&b'$')
}

extern "C" fn unavailable() -> *mut c_void {
    std::ptr::null_mut()
}

/// Router of the `dlopen` trampoline: where to continue with the original arguments.
///
/// # Safety
/// `dlopen`'s contract (`file` is null or a NUL-terminated string).
pub unsafe extern "C" fn dlopen_route(file: *const c_char, _mode: c_int) -> usize {
    match REAL.dlopen.get() {
        Some(f) if depends_on_caller(file) => f as usize,
        Some(_) => dlopen_tracked as *const () as usize,
        None => unavailable as *const () as usize,
    }
}

/// Router of the `dlmopen` trampoline.
///
/// # Safety
/// `dlmopen`'s contract (`file` is null or a NUL-terminated string).
pub unsafe extern "C" fn dlmopen_route(_ns: c_long, file: *const c_char, _mode: c_int) -> usize {
    match REAL.dlmopen.get() {
        Some(f) if depends_on_caller(file) => f as usize,
        Some(_) => dlmopen_tracked as *const () as usize,
        None => unavailable as *const () as usize,
    }
}

fn loaded(handle: *mut c_void) -> *mut c_void {
    if !handle.is_null() {
        if let Some(_g) = Guard::enter() {
            unwind::on_dlopen();
            crate::python::discover::after_dlopen(handle);
        }
    }
    handle
}

/// `dlopen` for a request that does not depend on the caller. No guard is held during the
/// real call: the new module's constructors are the program's code, and are recorded.
///
/// # Safety
/// `dlopen`'s contract.
unsafe extern "C" fn dlopen_tracked(file: *const c_char, mode: c_int) -> *mut c_void {
    match REAL.dlopen.get() {
        // SAFETY: forwarding.
        Some(f) => loaded(unsafe { f(file, mode) }),
        None => std::ptr::null_mut(),
    }
}

/// `dlmopen` for a request that does not depend on the caller (see [`dlopen_tracked`]).
///
/// # Safety
/// `dlmopen`'s contract.
unsafe extern "C" fn dlmopen_tracked(ns: c_long, file: *const c_char, mode: c_int) -> *mut c_void {
    match REAL.dlmopen.get() {
        // SAFETY: forwarding.
        Some(f) => loaded(unsafe { f(ns, file, mode) }),
        None => std::ptr::null_mut(),
    }
}

/// # Safety
/// `dlclose`'s contract.
pub unsafe fn dlclose(real: &Real<DlcloseFn>, handle: *mut c_void) -> c_int {
    let Some(f) = real.get() else { return -1 };
    if let Some(_g) = Guard::enter() {
        unwind::on_dlclose(handle);
    }
    // SAFETY: forwarding; the module's destructors run unguarded, as program code.
    unsafe { f(handle) }
}
