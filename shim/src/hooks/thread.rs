//! Hook of thread creation. Every thread's unwinder needs its stack bounds, and the only
//! way to have them, `pthread_getattr_np`, cannot be called from a hook: glibc holds the
//! thread's (non-recursive) lock while it allocates, so a hook running inside it would lock
//! again (Rust's runtime calls it at the start of every thread). So `pthread_create` starts
//! the program's routine through a trampoline that learns the new thread's bounds first,
//! with the reentrancy guard held, then calls the routine and returns its value unchanged.
//!
//! On x86_64 the trampoline is a few instructions of assembly that tail-jump into the
//! routine, so no Rust frame stays below it: `pthread_exit` and cancellation unwind the
//! thread with a forced unwind, which the landing pad of any Rust frame in this
//! `panic = "abort"` library would turn into an abort (CPython ends daemon threads that
//! way at shutdown).

use crate::real::Real;
use crate::record::{thread, Guard};
use crate::{alloc, session, unwind};
use libc::{c_int, c_void, pthread_attr_t, pthread_t};

/// `pthread_create` with the start routine as an opaque pointer (same ABI).
type CreateFn =
    unsafe extern "C" fn(*mut pthread_t, *const pthread_attr_t, *mut c_void, *mut c_void) -> c_int;
/// The program's start routine. `C-unwind`: a forced unwind (`pthread_exit`,
/// cancellation) passes through the trampoline's frame to glibc's `start_thread`.
type StartFn = unsafe extern "C-unwind" fn(*mut c_void) -> *mut c_void;

/// What the trampoline needs: the program's routine and its argument.
struct Start {
    routine: StartFn,
    arg: *mut c_void,
}

/// # Safety
/// `pthread_create`'s contract (`routine` is the program's `void *(*)(void *)`).
pub unsafe fn pthread_create(
    real: &Real<CreateFn>,
    out: *mut pthread_t,
    attr: *const pthread_attr_t,
    routine: *mut c_void,
    arg: *mut c_void,
) -> c_int {
    let Some(f) = real.get() else {
        return libc::EAGAIN;
    };
    if routine.is_null() || !session::wants_thread_stacks() {
        // SAFETY: forwarding.
        return unsafe { f(out, attr, routine, arg) };
    }
    // SAFETY: `routine` is a non-null pointer to a function of type `void *(*)(void *)`,
    // which `StartFn` describes (same size, same calling convention).
    let program = unsafe { std::mem::transmute::<*mut c_void, StartFn>(routine) };
    let Some(start) = alloc::try_box(Start {
        routine: program,
        arg,
    }) else {
        // SAFETY: forwarding.
        return unsafe { f(out, attr, routine, arg) };
    };
    let start = Box::into_raw(start);
    // SAFETY: `TRAMPOLINE` has the C signature of a start routine; the new thread owns
    // `start` if the call succeeds.
    let r = unsafe { f(out, attr, TRAMPOLINE as *mut c_void, start.cast()) };
    if r != 0 {
        // SAFETY: no thread was created, so `start` is still ours.
        drop(unsafe { Box::from_raw(start) });
    }
    r
}

/// The first part of every thread the program creates while the shim is on: learns the
/// thread's stack bounds, then gives back the program's routine and argument.
///
/// # Safety
/// `p` must be a `Box<Start>` turned into a raw pointer, whose ownership passes here.
unsafe fn prologue(p: *mut c_void) -> Start {
    // SAFETY: `pthread_create` above passed a `Box<Start>` and gave up ownership.
    let start = *unsafe { Box::from_raw(p.cast::<Start>()) };
    let saved = thread::errno::get();
    if let Some(_g) = Guard::enter_any_state() {
        // Guard held: `pthread_getattr_np`'s allocations are not the program's, and the
        // thread's first recorded event comes after its bounds are known.
        unwind::learn_thread_stack();
    }
    thread::errno::set(saved);
    start
}

/// The routine and argument in the two return registers (`rax`, `rdx`).
#[cfg(target_arch = "x86_64")]
#[repr(C)]
struct Jump {
    routine: usize,
    arg: *mut c_void,
}

/// Called by the assembly trampoline, which then jumps to the routine.
///
/// # Safety
/// As [`prologue`].
#[cfg(target_arch = "x86_64")]
unsafe extern "C" fn trampoline_prologue(p: *mut c_void) -> Jump {
    // SAFETY: forwarded.
    let Start { routine, arg } = unsafe { prologue(p) };
    Jump {
        routine: routine as usize,
        arg,
    }
}

// The start routine: keeps the stack aligned for the call, then tail-jumps to the
// program's routine with its argument, which returns straight to glibc's `start_thread`.
#[cfg(target_arch = "x86_64")]
std::arch::global_asm!(
    ".pushsection .text.leakscope_thread_start,\"ax\",@progbits",
    ".p2align 4",
    ".globl leakscope_thread_start",
    ".hidden leakscope_thread_start",
    ".type leakscope_thread_start, @function",
    "leakscope_thread_start:",
    ".cfi_startproc",
    "sub rsp, 8",
    ".cfi_adjust_cfa_offset 8",
    "call {prologue}",
    "add rsp, 8",
    ".cfi_adjust_cfa_offset -8",
    "mov rdi, rdx",
    "jmp rax",
    ".cfi_endproc",
    ".size leakscope_thread_start, . - leakscope_thread_start",
    ".popsection",
    prologue = sym trampoline_prologue,
);

#[cfg(target_arch = "x86_64")]
extern "C" {
    fn leakscope_thread_start(p: *mut c_void) -> *mut c_void;
}

#[cfg(target_arch = "x86_64")]
const TRAMPOLINE: unsafe extern "C" fn(*mut c_void) -> *mut c_void = leakscope_thread_start;

/// Elsewhere a Rust trampoline (a forced unwind through it aborts).
///
/// # Safety
/// As [`prologue`].
#[cfg(not(target_arch = "x86_64"))]
unsafe extern "C-unwind" fn trampoline(p: *mut c_void) -> *mut c_void {
    // SAFETY: forwarded.
    let Start { routine, arg } = unsafe { prologue(p) };
    // SAFETY: the program's routine with its own argument, as `pthread_create` would call it.
    unsafe { routine(arg) }
}

#[cfg(not(target_arch = "x86_64"))]
const TRAMPOLINE: unsafe extern "C-unwind" fn(*mut c_void) -> *mut c_void = trampoline;
