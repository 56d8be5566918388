//! Where a CUDA hook's real function comes from. Exported hooks resolve theirs lazily
//! ([`CudaReal`]): the next definition after the shim, or the one in a loaded CUDA library
//! (a library that Python loaded with `RTLD_LOCAL` is invisible to `RTLD_NEXT`, yet its
//! callers bind to the shim's export). Pointers handed out by resolvers (`cuGetProcAddress`,
//! `cudaGetDriverEntryPoint`, `dlsym`) are each bound to one wrapper slot ([`Slots`]): the
//! wrapper calls exactly the pointer the resolver returned, so the ABI version and stream
//! flags the caller asked for are kept.

use crate::real::{self, Real};
use std::ffi::{c_int, c_void, CStr};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// Wrappers per function: one per distinct real pointer (legacy and per-thread-stream
/// variants, several runtimes). A pointer beyond them is handed out unwrapped.
pub const SLOT_COUNT: usize = 8;

/// Which CUDA library defines a function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lib {
    Runtime,
    Driver,
}

impl Lib {
    /// The sonames to look in when `RTLD_NEXT` finds nothing, newest first.
    fn sonames(self) -> &'static [&'static CStr] {
        match self {
            Lib::Runtime => &[
                c"libcudart.so.13",
                c"libcudart.so.12",
                c"libcudart.so.11.0",
                c"libcudart.so",
            ],
            Lib::Driver => &[c"libcuda.so.1", c"libcuda.so"],
        }
    }
}

/// The C library's `dlclose` (the shim's export would tell the unwinder about a module
/// that stays loaded).
static DLCLOSE: Real<unsafe extern "C" fn(*mut c_void) -> c_int> = Real::new(c"dlclose");

/// Looks `name` up in an already loaded copy of `lib` (never loads one).
pub fn in_loaded(lib: Lib, name: &CStr) -> *mut c_void {
    for soname in lib.sonames() {
        // SAFETY: NUL-terminated soname; RTLD_NOLOAD only returns a handle to a library
        // that is already loaded, taking a reference that the dlclose below gives back.
        let h = unsafe { libc::dlopen(soname.as_ptr(), libc::RTLD_NOLOAD | libc::RTLD_LAZY) };
        if h.is_null() {
            continue;
        }
        // SAFETY: `h` is a live handle and `name` NUL-terminated.
        let p = unsafe { real::dlsym(h, name.as_ptr()) };
        if let Some(close) = DLCLOSE.get() {
            // SAFETY: gives back the reference the NOLOAD dlopen took; the library stays
            // loaded (something else loaded it first).
            unsafe { close(h) };
        }
        if !p.is_null() {
            return p;
        }
    }
    std::ptr::null_mut()
}

/// The real function behind an exported CUDA hook.
pub struct CudaReal {
    name: &'static CStr,
    lib: Lib,
    ptr: AtomicPtr<c_void>,
}

impl CudaReal {
    pub const fn new(name: &'static CStr, lib: Lib) -> Self {
        CudaReal {
            name,
            lib,
            ptr: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// The real function, resolved on first use; `None` while no CUDA library defines it.
    /// `F` must be the function's pointer type.
    pub fn get<F: Copy>(&self) -> Option<F> {
        const { assert!(std::mem::size_of::<F>() == std::mem::size_of::<*mut c_void>()) };
        let mut p = self.ptr.load(Ordering::Acquire);
        if p.is_null() {
            p = self.resolve();
            if p.is_null() {
                return None;
            }
        }
        // SAFETY: `p` is the address the loader gave for `name`, whose C type the CUDA
        // table declares as `F` (pointer-sized, checked above).
        Some(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
    }

    #[cold]
    fn resolve(&self) -> *mut c_void {
        // Lookups may allocate: keep that out of the recording.
        let _g = crate::record::Guard::enter_any_state();
        // SAFETY: NUL-terminated name; RTLD_NEXT from the shim is "the next definition".
        let mut p = unsafe { real::dlsym(libc::RTLD_NEXT, self.name.as_ptr()) };
        if p.is_null() {
            p = in_loaded(self.lib, self.name);
        }
        if !p.is_null() {
            self.ptr.store(p, Ordering::Release);
        }
        p
    }
}

/// The real pointers behind one function's wrappers, slot `k` serving wrapper `k`.
pub struct Slots([AtomicUsize; SLOT_COUNT]);

impl Slots {
    #[allow(clippy::new_without_default, clippy::declare_interior_mutable_const)]
    pub const fn new() -> Self {
        const EMPTY: AtomicUsize = AtomicUsize::new(0);
        Slots([EMPTY; SLOT_COUNT])
    }

    /// The real function of slot `k`, `None` while it is unclaimed. `F` must be the
    /// function's pointer type.
    #[inline]
    pub fn real<F: Copy>(&self, k: usize) -> Option<F> {
        const { assert!(std::mem::size_of::<F>() == std::mem::size_of::<usize>()) };
        let p = self.0.get(k)?.load(Ordering::Acquire);
        // SAFETY: a non-zero slot holds a pointer a resolver returned for this function
        // at an ABI version the table declares as `F`.
        (p != 0).then(|| unsafe { std::mem::transmute_copy::<usize, F>(&p) })
    }

    /// The slot serving `real`, claiming a free one if need be; `None` when all are taken
    /// by other pointers.
    pub fn claim(&self, real: usize) -> Option<usize> {
        for (k, slot) in self.0.iter().enumerate() {
            match slot.compare_exchange(0, real, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(k),
                Err(cur) if cur == real => return Some(k),
                Err(_) => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_slot_per_distinct_pointer_until_full() {
        let s = Slots::new();
        assert_eq!(s.claim(0x1000), Some(0));
        assert_eq!(s.claim(0x2000), Some(1));
        assert_eq!(s.claim(0x1000), Some(0));
        for i in 2..SLOT_COUNT {
            assert_eq!(s.claim(0x1000 * (i + 1)), Some(i));
        }
        assert_eq!(s.claim(0xdead), None);
        assert_eq!(s.real::<usize>(1), Some(0x2000));
    }

    #[test]
    fn unclaimed_slot_has_no_function() {
        let s = Slots::new();
        assert_eq!(s.real::<usize>(3), None);
        assert_eq!(s.real::<usize>(SLOT_COUNT), None);
    }

    #[test]
    fn libc_is_no_cuda_library() {
        assert!(in_loaded(Lib::Driver, c"cuMemAlloc_v2").is_null());
    }
}
