//! The shim's own memory: a global allocator that calls the real libc functions directly,
//! so the shim's allocations never become events and never re-enter a hook, and
//! `try_box`, for allocations on hook paths that must fail softly instead of aborting.

use std::alloc::Layout;

/// Moves `v` to the heap, or `None` when memory is exhausted.
pub fn try_box<T>(v: T) -> Option<Box<T>> {
    let layout = Layout::new::<T>();
    if layout.size() == 0 {
        return Some(Box::new(v));
    }
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { std::alloc::alloc(layout) }.cast::<T>();
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` is a fresh allocation with `T`'s layout; `Box` frees it with that layout.
    unsafe {
        p.write(v);
        Some(Box::from_raw(p))
    }
}

#[cfg(not(test))]
pub use global::RealAlloc;

#[cfg(not(test))]
mod global {
    use crate::bootstrap;
    use crate::hooks::REAL;
    use std::alloc::{GlobalAlloc, Layout};
    use std::ffi::c_void;

    /// Alignment glibc's `malloc` guarantees on 64-bit targets.
    const MALLOC_ALIGN: usize = 16;

    /// Forwards to the real `malloc` family; falls back to the bootstrap arena only while a
    /// lookup of the real functions is under way on the calling thread.
    pub struct RealAlloc;

    /// # Safety
    /// `layout` must have a non-zero size.
    unsafe fn alloc_aligned(layout: Layout) -> *mut u8 {
        let Some(f) = REAL.posix_memalign.get() else {
            return bootstrap::alloc(layout.size(), layout.align());
        };
        let mut p: *mut c_void = std::ptr::null_mut();
        let align = layout.align().max(std::mem::size_of::<usize>());
        // SAFETY: `align` is a power of two and a multiple of the pointer size.
        if unsafe { f(&mut p, align, layout.size()) } == 0 {
            p.cast()
        } else {
            std::ptr::null_mut()
        }
    }

    // SAFETY: every block comes from the real allocator (or the never-freed arena) with at
    // least the requested size and alignment, and is given back to the function family that
    // made it.
    unsafe impl GlobalAlloc for RealAlloc {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if layout.align() > MALLOC_ALIGN {
                // SAFETY: GlobalAlloc callers pass non-zero sizes.
                return unsafe { alloc_aligned(layout) };
            }
            match REAL.malloc.get() {
                // SAFETY: plain malloc call.
                Some(f) => unsafe { f(layout.size()) }.cast(),
                None => bootstrap::alloc(layout.size(), layout.align()),
            }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            if layout.align() > MALLOC_ALIGN {
                // SAFETY: non-zero size; the block is at least `size` bytes long.
                unsafe {
                    let p = alloc_aligned(layout);
                    if !p.is_null() {
                        p.write_bytes(0, layout.size());
                    }
                    return p;
                }
            }
            match REAL.calloc.get() {
                // SAFETY: plain calloc call.
                Some(f) => unsafe { f(1, layout.size()) }.cast(),
                None => bootstrap::alloc(layout.size(), layout.align()),
            }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
            if bootstrap::contains(ptr) {
                return;
            }
            if let Some(f) = REAL.free.get() {
                // SAFETY: `ptr` came from the real allocator (it is not an arena block).
                unsafe { f(ptr.cast()) }
            }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            if !bootstrap::contains(ptr) && layout.align() <= MALLOC_ALIGN {
                if let Some(f) = REAL.realloc.get() {
                    // SAFETY: `ptr` came from the real allocator with malloc alignment.
                    return unsafe { f(ptr.cast(), new_size) }.cast();
                }
            }
            // SAFETY: `layout.align()` is a valid alignment and `new_size` is non-zero.
            let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
            // SAFETY: allocate, copy the common prefix, release the old block.
            unsafe {
                let new = self.alloc(new_layout);
                if !new.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                new
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn try_box_moves_values() {
        let b = try_box([7u64; 64]).unwrap();
        assert_eq!(b[63], 7);
        let z = try_box(()).unwrap();
        assert_eq!(*z, ());
    }
}
