//! Hooks of process creation, replacement and end: `fork` (the parent records
//! `Fork{child}`, the child starts its own stream), the `exec` family (the stream ends with
//! `End{Exec}` before the real call; if the call fails the stream continues), and `_exit` /
//! `_Exit`, which skip the exit handlers but should still end the stream (multiprocessing
//! workers leave that way).

use super::set_errno;
use crate::real::Real;
use crate::record::Guard;
use crate::{fork as protocol, session};
use libc::{c_char, c_int, pid_t};

type ForkFn = unsafe extern "C" fn() -> pid_t;
type ExecFn = unsafe extern "C" fn(*const c_char, *const *const c_char) -> c_int;
type ExitFn = unsafe extern "C" fn(c_int);
type ExecEnvFn =
    unsafe extern "C" fn(*const c_char, *const *const c_char, *const *const c_char) -> c_int;

/// # Safety
/// `fork`'s contract.
pub unsafe fn fork(real: &Real<ForkFn>) -> pid_t {
    let Some(f) = real.get() else {
        set_errno(libc::ENOSYS);
        return -1;
    };
    let Some(g) = Guard::enter() else {
        // SAFETY: forwarding.
        return unsafe { f() };
    };
    protocol::before(&g);
    // SAFETY: forwarding.
    let pid = unsafe { f() };
    if pid == 0 {
        protocol::in_child();
    } else if pid > 0 {
        protocol::in_parent(&g, pid);
    }
    pid
}

/// `_exit` and `_Exit`. In a `vfork` child (another pid than the session's) nothing is
/// done; a thread inside a hook (a signal handler) passes straight through.
///
/// # Safety
/// The C function's contract.
pub unsafe fn exit_now(real: &Real<ExitFn>, status: c_int) {
    session::end_process();
    match real.get() {
        // SAFETY: forwarding; it does not return.
        Some(f) => unsafe { f(status) },
        // SAFETY: the system call itself.
        None => unsafe {
            libc::syscall(libc::SYS_exit_group, status);
        },
    }
}

/// `execv` and `execvp`.
///
/// # Safety
/// The C function's contract.
pub unsafe fn exec(real: &Real<ExecFn>, file: *const c_char, argv: *const *const c_char) -> c_int {
    let Some(f) = real.get() else {
        set_errno(libc::ENOSYS);
        return -1;
    };
    session::before_exec();
    // SAFETY: forwarding.
    unsafe { f(file, argv) }
}

/// `execve` and `execvpe`.
///
/// # Safety
/// The C function's contract.
pub unsafe fn exec_env(
    real: &Real<ExecEnvFn>,
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    let Some(f) = real.get() else {
        set_errno(libc::ENOSYS);
        return -1;
    };
    session::before_exec();
    // SAFETY: forwarding.
    unsafe { f(file, argv, envp) }
}
