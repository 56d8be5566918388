//! Hooks that keep the program from closing the shim's socket. To the program the socket's
//! descriptor does not exist: `close` of it fails with `EBADF` (as it would without the
//! shim, so a loop closing every descriptor counts the same), `close_range` skips it.

use crate::real::Real;
use crate::transport;
use libc::{c_int, c_uint};

type CloseFn = unsafe extern "C" fn(c_int) -> c_int;
type CloseRangeFn = unsafe extern "C" fn(c_uint, c_uint, c_int) -> c_int;

/// # Safety
/// `close`'s contract.
pub unsafe fn close(real: &Real<CloseFn>, fd: c_int) -> c_int {
    if transport::is_our_fd(fd) {
        super::set_errno(libc::EBADF);
        return -1;
    }
    match real.get() {
        // SAFETY: forwarding.
        Some(f) => unsafe { f(fd) },
        // SAFETY: the system call itself, same contract.
        None => unsafe { libc::syscall(libc::SYS_close, fd) as c_int },
    }
}

/// # Safety
/// `close_range`'s contract.
pub unsafe fn close_range(
    real: &Real<CloseRangeFn>,
    first: c_uint,
    last: c_uint,
    flags: c_int,
) -> c_int {
    let call = |a: c_uint, b: c_uint| match real.get() {
        // SAFETY: forwarding.
        Some(f) => unsafe { f(a, b, flags) },
        // SAFETY: the system call itself (glibc before 2.34 has no wrapper).
        None => unsafe { libc::syscall(libc::SYS_close_range, a, b, flags) as c_int },
    };
    let ours = transport::our_fd();
    if ours < 0
        || first > last
        || !(first..=last).contains(&(ours as c_uint))
        || !transport::is_our_fd(ours)
    {
        return call(first, last);
    }
    let ours = ours as c_uint;
    if ours > first {
        let r = call(first, ours - 1);
        if r != 0 {
            return r;
        }
    }
    if ours < last {
        return call(ours + 1, last);
    }
    0
}
