//! The stack walk behind `ThreadUnwinder::capture` (x86_64): start registers from inline
//! assembly, framehop's `unwind_frame` step by step over the published snapshot, stack reads
//! confined to `[sp at capture, end of this thread's stack)`, the shim's own leading frames
//! dropped, signal frames crossed through the kernel's `ucontext`, and a stop at the first
//! address outside any known module's code (JIT code, garbage).
//!
//! Nothing here allocates, locks, blocks, makes a syscall or panics: framehop runs with
//! `MustNotAllocateDuringUnwind` and checks its arithmetic (one exception: a return address
//! read at `CFA - 8` where a DWARF expression yields a CFA below 8, an overflow panic in
//! builds with overflow checks only), every index here is checked, and memory is only read
//! on the current thread's stack (within bounds), in a known module's readable code, or in
//! a known module's unwind sections (through framehop).

use super::snapshot::Snapshot;
use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64};
use framehop::{FrameAddress, MustNotAllocateDuringUnwind, Unwinder as _};
use std::ops::Range;

pub(super) type Cache = CacheX86_64<MustNotAllocateDuringUnwind>;

/// Frames beyond the caller's buffer that a walk may spend on the shim's own frames.
const MAX_SKIPPED: usize = 64;

/// glibc's and musl's `__restore_rt`: `mov $15, %rax` (rt_sigreturn); `syscall`. A signal
/// handler returns to its first byte.
const SIGRETURN_TRAMPOLINE: [u8; 9] = [0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05];

/// Offsets in the `ucontext_t` that the kernel puts where a handler's return address points.
const UC_GREGS: u64 = (std::mem::offset_of!(libc::ucontext_t, uc_mcontext)
    + std::mem::offset_of!(libc::mcontext_t, gregs)) as u64;
const UC_RIP: u64 = UC_GREGS + 8 * libc::REG_RIP as u64;
const UC_RSP: u64 = UC_GREGS + 8 * libc::REG_RSP as u64;
const UC_RBP: u64 = UC_GREGS + 8 * libc::REG_RBP as u64;

/// The instruction pointer, stack pointer and frame pointer at this point of the caller
/// (inlined, so "this point" is inside the caller's body).
#[inline(always)]
pub(super) fn registers() -> (u64, u64, u64) {
    let (ip, sp, bp): (u64, u64, u64);
    // SAFETY: the asm only copies rip (of the next instruction), rsp and rbp into three
    // output registers: it touches no memory, does not move the stack and keeps the flags.
    unsafe {
        std::arch::asm!(
            "lea {ip}, [rip]",
            "mov {sp}, rsp",
            "mov {bp}, rbp",
            ip = out(reg) ip,
            sp = out(reg) sp,
            bp = out(reg) bp,
            options(nomem, nostack, preserves_flags),
        );
    }
    (ip, sp, bp)
}

/// Walks the stack that starts at `start` (registers taken in the caller, whose frame must
/// still be live), writing lookup addresses into `out`. The walk ends after the first frame
/// whose lookup address lies in `stop` (that frame is written; an empty range never
/// matches). Returns the count written.
pub(super) fn walk(
    snap: &Snapshot,
    cache: &mut Cache,
    stack: &Range<u64>,
    start: (u64, u64, u64),
    skip_own: bool,
    stop: &Range<u64>,
    out: &mut [u64],
) -> usize {
    let (ip, sp, bp) = start;
    if out.is_empty() || !stack.contains(&sp) {
        // Not on this thread's known stack (sigaltstack, a coroutine stack): the stack's
        // extent is unknown, so nothing can be read safely.
        return 0;
    }
    let (lo, hi) = (sp, stack.end);
    let mut read_stack = |addr: u64| -> Result<u64, ()> {
        match addr.checked_add(8) {
            Some(end) if addr >= lo && end <= hi => {
                // SAFETY: [addr, addr + 8) lies in [sp at capture, end of this thread's
                // stack): memory of live frames of this thread, mapped and readable, which
                // no one writes while this thread is busy here.
                Ok(unsafe { std::ptr::read_unaligned(addr as *const u64) })
            }
            _ => Err(()),
        }
    };

    let mut regs = UnwindRegsX86_64::new(ip, sp, bp);
    let mut frame = FrameAddress::from_instruction_pointer(ip);
    let mut written = 0;
    let mut skipping = skip_own;
    let mut budget = out.len() + MAX_SKIPPED;
    loop {
        let lookup = frame.address_for_lookup();
        if skipping && snap.own.contains(&lookup) {
            // One of the shim's own frames: dropped.
        } else {
            skipping = false;
            let Some(slot) = out.get_mut(written) else {
                break;
            };
            *slot = lookup;
            written += 1;
            if written == out.len() || stop.contains(&lookup) {
                break;
            }
        }
        // Outside every known module's code: JIT code or a bad address. Whatever framehop's
        // frame-pointer fallback would find from here is a guess; stop.
        if snap.code_range(lookup).is_none() {
            break;
        }
        budget -= 1;
        if budget == 0 {
            break;
        }
        let sp_before = regs.sp();
        let return_address =
            match snap
                .unwinder
                .unwind_frame(frame, &mut regs, cache, &mut read_stack)
            {
                Ok(Some(ra)) => ra,
                Ok(None) | Err(_) => break,
            };
        if regs.sp() <= sp_before {
            break;
        }
        if is_signal_trampoline(snap, return_address) {
            // The handler returns into the kernel's sigreturn trampoline; the interrupted
            // context's registers are in the ucontext_t that starts at the current sp.
            let uc = regs.sp();
            let (Some(rip_at), Some(rsp_at), Some(rbp_at)) = (
                uc.checked_add(UC_RIP),
                uc.checked_add(UC_RSP),
                uc.checked_add(UC_RBP),
            ) else {
                break;
            };
            let (Ok(rip), Ok(rsp), Ok(rbp)) =
                (read_stack(rip_at), read_stack(rsp_at), read_stack(rbp_at))
            else {
                break;
            };
            if rsp <= uc {
                break;
            }
            regs = UnwindRegsX86_64::new(rip, rsp, rbp);
            // An interrupted instruction, not a return address: looked up as is.
            frame = FrameAddress::from_instruction_pointer(rip);
            continue;
        }
        frame = match FrameAddress::from_return_address(return_address) {
            Some(f) => f,
            None => break,
        };
    }
    written
}

/// Whether `addr` is the first byte of the `rt_sigreturn` trampoline.
fn is_signal_trampoline(snap: &Snapshot, addr: u64) -> bool {
    let Some(code) = snap.code_range(addr) else {
        return false;
    };
    let len = SIGRETURN_TRAMPOLINE.len() as u64;
    if !code.readable || addr.checked_add(len).is_none_or(|end| end > code.end) {
        return false;
    }
    // SAFETY: [addr, addr + 9) lies inside a readable executable PT_LOAD segment of a
    // module in the published snapshot, mapped for as long as the program can execute
    // there (see the dlclose reasoning on `MappedBytes`).
    let bytes =
        unsafe { std::slice::from_raw_parts(addr as *const u8, SIGRETURN_TRAMPOLINE.len()) };
    bytes == SIGRETURN_TRAMPOLINE
}

/// This thread's stack, from `pthread_getattr_np` (which, for the main thread, reads
/// `/proc/self/maps` and allocates, and always holds the thread's lock meanwhile: never call
/// it from a hook, see `learn_thread_stack`). None if it cannot be had or does not hold the
/// current stack pointer.
pub(super) fn thread_stack() -> Option<Range<u64>> {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
    let mut addr: *mut libc::c_void = std::ptr::null_mut();
    let mut size: libc::size_t = 0;
    // SAFETY: pthread_getattr_np initializes `attr` on success; only then is it read and
    // destroyed. pthread_attr_getstack writes the two outputs.
    unsafe {
        if libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) != 0 {
            return None;
        }
        let rc = libc::pthread_attr_getstack(attr.as_ptr(), &mut addr, &mut size);
        libc::pthread_attr_destroy(attr.as_mut_ptr());
        if rc != 0 {
            return None;
        }
    }
    let start = addr as u64;
    let stack = start..start.checked_add(size as u64)?;
    let here = registers().1;
    stack.contains(&here).then_some(stack)
}
