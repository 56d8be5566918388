//! The shim's thread-local state, in one block of the *initial-exec* TLS model: each access
//! is a read of the thread pointer plus a fixed offset, never a call to `__tls_get_addr`.
//! Rust's `thread_local!` in a shared library uses the general-dynamic model, whose
//! `__tls_get_addr` calls `malloc` when `dlopen` has grown the TLS generation (PyTorch loads
//! dozens of CUDA libraries with TLS): a `malloc` hook that reads a general-dynamic
//! thread-local then recurses until the stack overflows. Reading this block never calls
//! anything, so a nested `malloc` finds the guard taken and passes straight through.
//!
//! The block lives in `.tbss` (zero-filled in every new thread), so every field must be
//! valid as all-zero bytes and need no destructor. The shim is loaded at program start
//! (`LD_PRELOAD`), where static TLS is always available.

use crate::record::thread::ThreadState;
use std::cell::Cell;

/// Everything the shim keeps per thread.
#[repr(C)]
pub struct Block {
    /// The recording state (`record::thread`).
    pub state: ThreadState,
    /// This thread's stack as `(start, end)`, `(0, 0)` while unknown (`unwind`).
    pub stack: Cell<(u64, u64)>,
    /// Set while this thread looks a real function up (`real`).
    pub resolving: Cell<bool>,
}

/// Bytes reserved in `.tbss` for [`Block`].
const BLOCK_BYTES: usize = 64;
const _: () = assert!(std::mem::size_of::<Block>() <= BLOCK_BYTES);
const _: () = assert!(std::mem::align_of::<Block>() <= 16);
const _: () = assert!(!std::mem::needs_drop::<Block>());

#[cfg(target_arch = "x86_64")]
std::arch::global_asm!(
    ".pushsection .tbss,\"awT\",@nobits",
    ".p2align 4",
    ".globl leakscope_tls_block",
    ".hidden leakscope_tls_block",
    ".type leakscope_tls_block, @object",
    ".size leakscope_tls_block, 64",
    "leakscope_tls_block:",
    ".zero 64",
    ".popsection",
);

#[cfg(target_arch = "aarch64")]
std::arch::global_asm!(
    ".pushsection .tbss,\"awT\",%nobits",
    ".p2align 4",
    ".globl leakscope_tls_block",
    ".hidden leakscope_tls_block",
    ".type leakscope_tls_block, %object",
    ".size leakscope_tls_block, 64",
    "leakscope_tls_block:",
    ".zero 64",
    ".popsection",
);

/// The calling thread's block.
#[inline(always)]
pub fn block() -> &'static Block {
    let p: *const Block;
    // SAFETY: initial-exec access to this thread's copy of `leakscope_tls_block`: the GOT
    // slot holds the block's offset from the thread pointer (fs base). Reads memory only
    // (the GOT), has no side effects and leaves the stack and flags alone.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::asm!(
            "mov {p}, qword ptr [rip + leakscope_tls_block@GOTTPOFF]",
            "add {p}, qword ptr fs:0",
            p = out(reg) p,
            options(pure, readonly, nostack, preserves_flags),
        );
    }
    // SAFETY: as above, with aarch64's thread pointer register.
    #[cfg(target_arch = "aarch64")]
    unsafe {
        std::arch::asm!(
            "adrp {p}, :gottprel:leakscope_tls_block",
            "ldr {p}, [{p}, #:gottprel_lo12:leakscope_tls_block]",
            "mrs {t}, tpidr_el0",
            "add {p}, {p}, {t}",
            p = out(reg) p,
            t = out(reg) _,
            options(pure, readonly, nostack, preserves_flags),
        );
    }
    // SAFETY: the block is this thread's, 16-aligned, BLOCK_BYTES long and zero-filled at
    // thread start, and every field of `Block` is valid as zero bytes; `Block` is !Sync
    // (Cells), so the reference stays on this thread, whose TLS outlives every use (the
    // block is freed only after the thread's last destructor ran).
    unsafe { &*p }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_zeroed_and_is_per_thread() {
        let b = block();
        b.stack.set((1, 2));
        assert!(std::ptr::eq(b, block()));
        std::thread::spawn(|| {
            let other = block();
            assert_eq!(other.stack.get(), (0, 0));
            assert!(!other.resolving.get());
            assert!(!other.state.busy.get());
        })
        .join()
        .unwrap();
        assert_eq!(block().stack.get(), (1, 2));
    }
}
