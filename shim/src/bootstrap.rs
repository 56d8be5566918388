//! The bootstrap arena: a static bump allocator that serves allocations while the real
//! allocation functions are being looked up (`dlsym` may call `calloc`). Its blocks are never
//! handed to libc: `free` of one is a no-op and `realloc` copies it out (see `hooks::heap`).

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes in the arena. `dlsym` needs a few hundred bytes per lookup at most.
const ARENA_BYTES: usize = 256 << 10;
/// Every block starts on this boundary and is preceded by a header of this many bytes.
const MIN_ALIGN: usize = 16;

#[repr(C, align(4096))]
struct Arena(UnsafeCell<[u8; ARENA_BYTES]>);

// SAFETY: disjoint ranges of the arena are handed out by an atomic bump pointer; no byte is
// ever given to two callers, so shared access never aliases a write.
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena(UnsafeCell::new([0; ARENA_BYTES]));
static NEXT: AtomicUsize = AtomicUsize::new(0);

fn base() -> usize {
    ARENA.0.get() as usize
}

/// Allocates `size` bytes aligned to `align` (a power of two), zero-filled (the arena is
/// never reused). Null when the arena is exhausted or `align` is not a power of two.
pub fn alloc(size: usize, align: usize) -> *mut u8 {
    if !align.is_power_of_two() {
        return std::ptr::null_mut();
    }
    let align = align.max(MIN_ALIGN);
    let mut cur = NEXT.load(Ordering::Relaxed);
    loop {
        // Room for the size header in front of the block, then round up to `align`.
        let Some(start) = (base() + cur + MIN_ALIGN)
            .checked_next_multiple_of(align)
            .map(|a| a - base())
        else {
            return std::ptr::null_mut();
        };
        let Some(end) = start.checked_add(size.max(1)) else {
            return std::ptr::null_mut();
        };
        if end > ARENA_BYTES {
            return std::ptr::null_mut();
        }
        match NEXT.compare_exchange_weak(cur, end, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => {
                let p = (base() + start) as *mut u8;
                // SAFETY: `start - 8 .. end` lies inside the arena (start >= cur + 16) and was
                // just reserved for this caller alone; the header slot is 8-aligned.
                unsafe { p.cast::<usize>().sub(1).write(size) };
                return p;
            }
            Err(now) => cur = now,
        }
    }
}

/// Whether `p` points into the arena.
pub fn contains(p: *const u8) -> bool {
    let a = p as usize;
    a >= base() && a < base() + ARENA_BYTES
}

/// The size requested for the arena block at `p`.
///
/// # Safety
/// `p` must be a pointer returned by [`alloc`].
pub unsafe fn block_size(p: *const u8) -> usize {
    // SAFETY: `alloc` wrote the size in the 8 bytes before every block it returned.
    unsafe { p.cast::<usize>().sub(1).read() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_aligned_disjoint_and_sized() {
        let a = alloc(10, 8);
        let b = alloc(100, 64);
        let c = alloc(0, 4096);
        for (p, align) in [(a, 16), (b, 64), (c, 4096)] {
            assert!(!p.is_null());
            assert_eq!(p as usize % align, 0);
            assert!(contains(p));
        }
        assert!(b as usize >= a as usize + 10);
        assert!(c as usize >= b as usize + 100);
        // SAFETY: the pointers came from `alloc`.
        unsafe {
            assert_eq!(block_size(a), 10);
            assert_eq!(block_size(b), 100);
            assert_eq!(block_size(c), 0);
            assert_eq!(std::slice::from_raw_parts(b, 100), &[0u8; 100][..]);
        }
    }

    #[test]
    fn refuses_what_does_not_fit() {
        assert!(alloc(ARENA_BYTES + 1, 16).is_null());
        assert!(alloc(usize::MAX, 16).is_null());
        assert!(alloc(8, 24).is_null());
        let outside = Box::new(0u8);
        assert!(!contains(&*outside));
    }
}
