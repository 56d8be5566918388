//! Hooks of the C heap. While a real function is being looked up on the calling thread,
//! allocations come from the bootstrap arena; arena blocks are never passed to libc.
//!
//! `realloc` records nothing before the call: the old block may survive (failure), and its
//! size is unknown here, so a `Free` recorded in advance could not be undone. Instead the
//! `Free` of the old block carries a timestamp taken *before* the real call and the `Alloc`
//! of the new one a timestamp taken after it, both appended once the call has succeeded.
//! The collector orders one address's events by timestamp, so another thread that receives
//! the old address still sorts after the `Free`. A failed `realloc` (NULL with size > 0)
//! records nothing; `realloc(p, 0)` returning NULL freed `p` (glibc) and records its `Free`.

use super::set_errno;
use crate::bootstrap;
use crate::real::Real;
use crate::record::{clock, Guard};
use leakscope_protocol::{Api, MemoryKind};
use libc::{c_int, c_void, size_t};

type MallocFn = unsafe extern "C" fn(size_t) -> *mut c_void;
type CallocFn = unsafe extern "C" fn(size_t, size_t) -> *mut c_void;
type ReallocFn = unsafe extern "C" fn(*mut c_void, size_t) -> *mut c_void;
type ReallocArrayFn = unsafe extern "C" fn(*mut c_void, size_t, size_t) -> *mut c_void;
type FreeFn = unsafe extern "C" fn(*mut c_void);
type PosixMemalignFn = unsafe extern "C" fn(*mut *mut c_void, size_t, size_t) -> c_int;
type AlignedFn = unsafe extern "C" fn(size_t, size_t) -> *mut c_void;

const PAGE: usize = 4096;
const HOST: MemoryKind = MemoryKind::Host;

#[inline(always)]
fn recorded(g: Guard, p: *mut c_void, size: usize, api: Api) -> *mut c_void {
    if !p.is_null() {
        g.alloc(p as u64, size as u64, HOST, api, clock::now());
    }
    p
}

fn from_arena(size: usize, align: usize) -> *mut c_void {
    let p = bootstrap::alloc(size, align).cast::<c_void>();
    if p.is_null() {
        set_errno(libc::ENOMEM);
    }
    p
}

/// # Safety
/// `malloc`'s contract.
#[inline]
pub unsafe fn malloc(real: &Real<MallocFn>, api: Api, size: size_t) -> *mut c_void {
    let Some(f) = real.get() else {
        return from_arena(size, 16);
    };
    let Some(g) = Guard::enter_host() else {
        // SAFETY: forwarding.
        return unsafe { f(size) };
    };
    // SAFETY: forwarding.
    recorded(g, unsafe { f(size) }, size, api)
}

/// # Safety
/// `calloc`'s contract.
pub unsafe fn calloc(real: &Real<CallocFn>, api: Api, n: size_t, size: size_t) -> *mut c_void {
    let Some(f) = real.get() else {
        return match n.checked_mul(size) {
            Some(total) => from_arena(total, 16),
            None => {
                set_errno(libc::ENOMEM);
                std::ptr::null_mut()
            }
        };
    };
    let Some(g) = Guard::enter_host() else {
        // SAFETY: forwarding.
        return unsafe { f(n, size) };
    };
    // SAFETY: forwarding.
    let p = unsafe { f(n, size) };
    recorded(g, p, n.saturating_mul(size), api)
}

/// # Safety
/// `free`'s contract.
#[inline]
pub unsafe fn free(real: &Real<FreeFn>, api: Api, p: *mut c_void) {
    if p.is_null() || bootstrap::contains(p.cast()) {
        return;
    }
    // Without the real free (only while this thread looks it up) the block is leaked.
    let Some(f) = real.get() else { return };
    let _g = Guard::enter_host()
        .inspect(|g| g.free(p as u64, 0, HOST, api, clock::now_before_release()));
    // SAFETY: forwarding; the guard stays held so allocations inside free pass through.
    unsafe { f(p) }
}

/// # Safety
/// `realloc`'s contract.
pub unsafe fn realloc(
    real: &Real<ReallocFn>,
    api: Api,
    p: *mut c_void,
    size: size_t,
) -> *mut c_void {
    if bootstrap::contains(p.cast()) {
        // SAFETY: `p` is an arena block.
        return unsafe { out_of_arena(p, size, api) };
    }
    let Some(f) = real.get() else {
        set_errno(libc::ENOMEM);
        return std::ptr::null_mut();
    };
    let Some(g) = Guard::enter_host() else {
        // SAFETY: forwarding.
        return unsafe { f(p, size) };
    };
    let before = clock::now_before_release();
    // SAFETY: forwarding.
    let q = unsafe { f(p, size) };
    record_resize(g, api, p, q, size, before);
    q
}

/// # Safety
/// `reallocarray`'s contract.
pub unsafe fn reallocarray(
    real: &Real<ReallocArrayFn>,
    api: Api,
    p: *mut c_void,
    n: size_t,
    size: size_t,
) -> *mut c_void {
    if bootstrap::contains(p.cast()) {
        let Some(total) = n.checked_mul(size) else {
            set_errno(libc::ENOMEM);
            return std::ptr::null_mut();
        };
        // SAFETY: `p` is an arena block.
        return unsafe { out_of_arena(p, total, api) };
    }
    let Some(f) = real.get() else {
        set_errno(libc::ENOMEM);
        return std::ptr::null_mut();
    };
    let Some(g) = Guard::enter_host() else {
        // SAFETY: forwarding.
        return unsafe { f(p, n, size) };
    };
    let before = clock::now_before_release();
    // SAFETY: forwarding.
    let q = unsafe { f(p, n, size) };
    record_resize(g, api, p, q, n.saturating_mul(size), before);
    q
}

/// Records a completed realloc-like call (see the module comment).
fn record_resize(g: Guard, api: Api, old: *mut c_void, new: *mut c_void, size: usize, before: u64) {
    if !new.is_null() {
        if !old.is_null() {
            g.free(old as u64, 0, HOST, api, before);
        }
        g.alloc(new as u64, size as u64, HOST, api, clock::now());
    } else if !old.is_null() && size == 0 {
        g.free(old as u64, 0, HOST, api, before);
    }
}

/// Moves an arena block into a real allocation (the arena block itself is never freed).
///
/// # Safety
/// `p` must be an arena block.
unsafe fn out_of_arena(p: *mut c_void, size: size_t, api: Api) -> *mut c_void {
    // SAFETY: an ordinary allocation through the hook path.
    let q = unsafe { malloc(&super::REAL.malloc, api, size) };
    if !q.is_null() {
        // SAFETY: `p` holds `block_size(p)` bytes and `q` at least `size`.
        unsafe {
            let n = bootstrap::block_size(p.cast()).min(size);
            std::ptr::copy_nonoverlapping(p.cast::<u8>(), q.cast::<u8>(), n);
        }
    }
    q
}

/// # Safety
/// `posix_memalign`'s contract.
pub unsafe fn posix_memalign(
    real: &Real<PosixMemalignFn>,
    api: Api,
    out: *mut *mut c_void,
    align: size_t,
    size: size_t,
) -> c_int {
    let Some(f) = real.get() else {
        if !align.is_power_of_two() || align % std::mem::size_of::<usize>() != 0 {
            return libc::EINVAL;
        }
        let p = bootstrap::alloc(size, align);
        if p.is_null() {
            return libc::ENOMEM;
        }
        // SAFETY: the caller passes a valid out-pointer.
        unsafe { *out = p.cast() };
        return 0;
    };
    let Some(g) = Guard::enter_host() else {
        // SAFETY: forwarding.
        return unsafe { f(out, align, size) };
    };
    // SAFETY: forwarding.
    let r = unsafe { f(out, align, size) };
    if r == 0 {
        // SAFETY: on success the real function stored the block in `*out`.
        recorded(g, unsafe { *out }, size, api);
    }
    r
}

/// `aligned_alloc` and `memalign`.
///
/// # Safety
/// The C function's contract.
pub unsafe fn aligned(
    real: &Real<AlignedFn>,
    api: Api,
    align: size_t,
    size: size_t,
) -> *mut c_void {
    let Some(f) = real.get() else {
        return from_arena(size, align);
    };
    let Some(g) = Guard::enter_host() else {
        // SAFETY: forwarding.
        return unsafe { f(align, size) };
    };
    // SAFETY: forwarding.
    recorded(g, unsafe { f(align, size) }, size, api)
}

/// `valloc` and `pvalloc`.
///
/// # Safety
/// The C function's contract.
pub unsafe fn page_aligned(real: &Real<MallocFn>, api: Api, size: size_t) -> *mut c_void {
    let Some(f) = real.get() else {
        return match size.checked_next_multiple_of(PAGE) {
            Some(rounded) => from_arena(rounded, PAGE),
            None => {
                set_errno(libc::ENOMEM);
                std::ptr::null_mut()
            }
        };
    };
    let Some(g) = Guard::enter_host() else {
        // SAFETY: forwarding.
        return unsafe { f(size) };
    };
    // SAFETY: forwarding.
    recorded(g, unsafe { f(size) }, size, api)
}
