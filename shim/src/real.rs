//! The real functions behind the hooks, found lazily with `dlsym(RTLD_NEXT, name)`: the first
//! `malloc` may arrive before any constructor ran. While a lookup runs on a thread, further
//! lookups on that thread report the function unavailable, so `dlsym`'s own `calloc` is
//! served from the bootstrap arena instead of recursing.
//!
//! The shim exports `dlsym` itself (CUDA routes), so its own lookups go to the real `dlsym`
//! directly ([`dlsym`] here), found with `dlvsym`: that keeps them out of the hook, and
//! `RTLD_NEXT` still means "after the shim".

use std::ffi::{c_void, CStr};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicPtr, Ordering};

/// A lazily resolved pointer to the next definition of a C function. `F` is the function
/// pointer type (`unsafe extern "C" fn(..) -> ..`).
pub struct Real<F> {
    name: &'static CStr,
    ptr: AtomicPtr<c_void>,
    _f: PhantomData<F>,
}

impl<F: Copy> Real<F> {
    /// A not yet resolved entry for the symbol `name`.
    pub const fn new(name: &'static CStr) -> Self {
        const {
            assert!(std::mem::size_of::<F>() == std::mem::size_of::<*mut c_void>());
        }
        Real {
            name,
            ptr: AtomicPtr::new(std::ptr::null_mut()),
            _f: PhantomData,
        }
    }

    /// The real function, resolving it on first use. `None` while this thread is inside
    /// another lookup, or when no later object defines the symbol.
    #[inline(always)]
    pub fn get(&self) -> Option<F> {
        let mut p = self.ptr.load(Ordering::Acquire);
        if p.is_null() {
            p = self.resolve();
            if p.is_null() {
                return None;
            }
        }
        // SAFETY: `p` is the non-null address `dlsym` returned for `name`, whose C type the
        // hook table declares as `F` (a function pointer of the same size, checked in `new`).
        Some(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
    }

    #[cold]
    #[inline(never)]
    fn resolve(&self) -> *mut c_void {
        let resolving = &crate::tls::block().resolving;
        let reentered = resolving.replace(true);
        if reentered {
            return std::ptr::null_mut();
        }
        // SAFETY: `name` is NUL-terminated; RTLD_NEXT asks for the definition after this
        // library in the search order, which is what an interposer forwards to.
        let p = unsafe { dlsym(libc::RTLD_NEXT, self.name.as_ptr()) };
        resolving.set(false);
        if !p.is_null() {
            self.ptr.store(p, Ordering::Release);
        }
        p
    }
}

type DlsymFn = unsafe extern "C" fn(*mut c_void, *const libc::c_char) -> *mut c_void;

/// The C library's `dlsym` (never the shim's export), resolved once.
pub fn real_dlsym() -> Option<DlsymFn> {
    static REAL_DLSYM: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());
    let mut p = REAL_DLSYM.load(Ordering::Acquire);
    if p.is_null() {
        for version in [c"GLIBC_2.34", c"GLIBC_2.2.5", c"GLIBC_2.17"] {
            // SAFETY: both strings are NUL-terminated; `dlvsym` is not hooked, and with
            // RTLD_NEXT it finds the definition after the shim: the C library's.
            p = unsafe { libc::dlvsym(libc::RTLD_NEXT, c"dlsym".as_ptr(), version.as_ptr()) };
            if !p.is_null() {
                break;
            }
        }
        if p.is_null() {
            return None;
        }
        REAL_DLSYM.store(p, Ordering::Release);
    }
    // SAFETY: `p` is the C library's `dlsym`, whose type is `DlsymFn`.
    Some(unsafe { std::mem::transmute::<*mut c_void, DlsymFn>(p) })
}

/// `dlsym` without the shim's hook. Null when the C library's `dlsym` cannot be found.
///
/// # Safety
/// `dlsym`'s contract: `handle` is a handle, RTLD_NEXT or RTLD_DEFAULT, and `name` a
/// NUL-terminated string. RTLD_NEXT means "after the shim" (the caller of the real `dlsym`
/// is this function).
pub unsafe fn dlsym(handle: *mut c_void, name: *const libc::c_char) -> *mut c_void {
    match real_dlsym() {
        // SAFETY: the caller upholds `dlsym`'s contract.
        Some(f) => unsafe { f(handle, name) },
        None => std::ptr::null_mut(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type StrlenFn = unsafe extern "C" fn(*const libc::c_char) -> usize;

    #[test]
    fn resolves_and_calls_the_next_definition() {
        static STRLEN: Real<StrlenFn> = Real::new(c"strlen");
        let f = STRLEN.get().expect("libc defines strlen");
        // SAFETY: strlen of a NUL-terminated literal.
        assert_eq!(unsafe { f(c"leak".as_ptr()) }, 4);
        assert!(STRLEN.get().is_some());
    }

    #[test]
    fn the_real_dlsym_is_found() {
        // SAFETY: a NUL-terminated name in the global scope.
        let p = unsafe { dlsym(libc::RTLD_DEFAULT, c"strlen".as_ptr()) };
        assert!(!p.is_null());
    }

    #[test]
    fn missing_symbol_is_none() {
        static NOPE: Real<StrlenFn> = Real::new(c"leakscope_no_such_function");
        assert!(NOPE.get().is_none());
    }

    #[test]
    fn nested_lookup_on_one_thread_is_refused() {
        static INNER: Real<StrlenFn> = Real::new(c"strnlen");
        crate::tls::block().resolving.set(true);
        assert!(INNER.get().is_none());
        crate::tls::block().resolving.set(false);
        assert!(INNER.get().is_some());
    }
}
