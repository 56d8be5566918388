//! The hook table: every intercepted C function, declared once, with the real function
//! behind it (`REAL`, resolved lazily by `crate::real`) and its handler in the file of its
//! family. Each handler is guard -> real call -> record -> return.
//!
//! Two kinds of export:
//! - `call`: an ordinary function that calls `handler(&REAL.<name>, [extra args,] args..)`.
//! - `tail`: a naked trampoline that asks `handler(args..)` (an `extern "C"` function) for
//!   the address to continue at and jumps there with the original arguments and return
//!   address, so that the callee sees the program's caller as its own (used for `dlopen`,
//!   whose search path and namespace depend on who called it).

pub mod cuda;
mod dl;
mod fd;
mod heap;
mod mmap;
mod proc;
mod thread;

use crate::real::Real;
use leakscope_protocol::Api;
use libc::{
    c_char, c_int, c_long, c_uint, c_void, off64_t, off_t, pid_t, pthread_attr_t, pthread_t, size_t,
};
use std::ffi::CStr;

/// `concat!(name, "\0")` as a C string, at compile time.
const fn cstr(s: &'static str) -> &'static CStr {
    match CStr::from_bytes_with_nul(s.as_bytes()) {
        Ok(c) => c,
        Err(_) => panic!("hook name without a trailing NUL"),
    }
}

/// The trampoline of a `tail` hook: saves the argument registers, calls the router with
/// them, restores them and jumps to the address it returned.
#[cfg(target_arch = "x86_64")]
macro_rules! tail_trampoline {
    () => {
        concat!(
            "push rdi\n push rsi\n push rdx\n push rcx\n push r8\n push r9\n",
            "sub rsp, 8\n",
            "call {route}\n",
            "add rsp, 8\n",
            "pop r9\n pop r8\n pop rcx\n pop rdx\n pop rsi\n pop rdi\n",
            "jmp rax\n",
        )
    };
}

#[cfg(target_arch = "aarch64")]
macro_rules! tail_trampoline {
    () => {
        concat!(
            "stp x29, x30, [sp, #-80]!\n mov x29, sp\n",
            "stp x0, x1, [sp, #16]\n stp x2, x3, [sp, #32]\n",
            "stp x4, x5, [sp, #48]\n stp x6, x7, [sp, #64]\n",
            "bl {route}\n mov x16, x0\n",
            "ldp x0, x1, [sp, #16]\n ldp x2, x3, [sp, #32]\n",
            "ldp x4, x5, [sp, #48]\n ldp x6, x7, [sp, #64]\n",
            "ldp x29, x30, [sp], #80\n",
            "br x16\n",
        )
    };
}

macro_rules! hook_table {
    ($(
        $(#[$doc:meta])*
        fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty => $kind:ident $handler:path $([$($extra:expr),*])?;
    )*) => {
        /// The real function behind every hook (fields named as the C functions).
        #[allow(clippy::type_complexity, non_snake_case)]
        pub struct RealFns {
            $(pub $name: Real<unsafe extern "C" fn($($ty),*) -> $ret>,)*
        }

        /// The real functions, resolved on first use.
        pub static REAL: RealFns = RealFns {
            $($name: Real::new(cstr(concat!(stringify!($name), "\0"))),)*
        };

        $(hook_table!(@export $kind $(#[$doc])* fn $name($($arg: $ty),*) -> $ret => $handler $([$($extra),*])?);)*
    };

    (@export call $(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty => $handler:path $([$($extra:expr),*])?) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// The C function's contract.
        #[no_mangle]
        #[allow(clippy::unused_unit)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            // SAFETY: forwards the C caller's arguments, under the same contract.
            unsafe { $handler(&REAL.$name, $($($extra,)*)? $($arg),*) }
        }
    };

    (@export tail $(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty => $handler:path) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// The C function's contract.
        #[unsafe(naked)]
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            core::arch::naked_asm!(tail_trampoline!(), route = sym $handler)
        }
    };
}

hook_table! {
    // The C heap (heap.rs).
    fn malloc(size: size_t) -> *mut c_void => call heap::malloc[Api::Malloc];
    fn calloc(n: size_t, size: size_t) -> *mut c_void => call heap::calloc[Api::Calloc];
    fn realloc(p: *mut c_void, size: size_t) -> *mut c_void => call heap::realloc[Api::Realloc];
    fn reallocarray(p: *mut c_void, n: size_t, size: size_t) -> *mut c_void
        => call heap::reallocarray[Api::ReallocArray];
    fn free(p: *mut c_void) -> () => call heap::free[Api::Free];
    fn posix_memalign(out: *mut *mut c_void, align: size_t, size: size_t) -> c_int
        => call heap::posix_memalign[Api::PosixMemalign];
    fn aligned_alloc(align: size_t, size: size_t) -> *mut c_void
        => call heap::aligned[Api::AlignedAlloc];
    fn memalign(align: size_t, size: size_t) -> *mut c_void => call heap::aligned[Api::Memalign];
    fn valloc(size: size_t) -> *mut c_void => call heap::page_aligned[Api::Valloc];
    fn pvalloc(size: size_t) -> *mut c_void => call heap::page_aligned[Api::Pvalloc];

    // Anonymous mappings (mmap.rs).
    fn mmap(addr: *mut c_void, len: size_t, prot: c_int, flags: c_int, fd: c_int, off: off_t)
        -> *mut c_void => call mmap::mmap[Api::Mmap];
    fn mmap64(addr: *mut c_void, len: size_t, prot: c_int, flags: c_int, fd: c_int, off: off64_t)
        -> *mut c_void => call mmap::mmap[Api::Mmap];
    fn munmap(addr: *mut c_void, len: size_t) -> c_int => call mmap::munmap[Api::Munmap];
    // SAFETY: `mremap` is variadic in C (`new_address` is read only with MREMAP_FIXED).
    // Declaring the fifth argument explicitly is ABI-compatible on x86_64 and aarch64 Linux:
    // variadic integer arguments travel in the same registers as fixed ones, and the callee
    // reads the register only when the flag asks for it.
    fn mremap(old: *mut c_void, old_len: size_t, new_len: size_t, flags: c_int, new_addr: *mut c_void)
        -> *mut c_void => call mmap::mremap[Api::Mremap];

    // Processes (proc.rs).
    fn fork() -> pid_t => call proc::fork;
    fn execve(path: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int
        => call proc::exec_env;
    fn execv(path: *const c_char, argv: *const *const c_char) -> c_int => call proc::exec;
    fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int => call proc::exec;
    fn execvpe(file: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int
        => call proc::exec_env;

    // Threads (thread.rs): the start routine is passed on as an opaque pointer.
    fn pthread_create(out: *mut pthread_t, attr: *const pthread_attr_t, routine: *mut c_void,
        arg: *mut c_void) -> c_int => call thread::pthread_create;

    fn _exit(status: c_int) -> () => call proc::exit_now;
    fn _Exit(status: c_int) -> () => call proc::exit_now;

    // The shim's socket (fd.rs).
    fn close(fd: c_int) -> c_int => call fd::close;
    fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int => call fd::close_range;

    // Modules (dl.rs).
    fn dlopen(file: *const c_char, mode: c_int) -> *mut c_void => tail dl::dlopen_route;
    fn dlmopen(ns: c_long, file: *const c_char, mode: c_int) -> *mut c_void
        => tail dl::dlmopen_route;
    fn dlclose(handle: *mut c_void) -> c_int => call dl::dlclose;
    // CUDA functions looked up by name (ctypes, cuda-python, runtimes fetching
    // `cuGetProcAddress_v2`): see `cuda/resolve.rs`.
    fn dlsym(handle: *mut c_void, name: *const c_char) -> *mut c_void
        => tail cuda::resolve::dlsym_route;
}

/// Sets `errno` for a hook that cannot reach its real function.
fn set_errno(e: c_int) {
    crate::record::thread::errno::set(e);
}
