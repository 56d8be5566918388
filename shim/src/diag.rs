//! The shim's only output: at most one line on stderr per process, when the collector
//! cannot be reached or is lost (suppressed by `LEAKSCOPE_QUIET=1`).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

static SAID: AtomicBool = AtomicBool::new(false);

/// Prints `leakscope: <msg>` once per process, with one `write(2)` (never through Rust's
/// stderr lock, which a fork child may have inherited locked).
pub fn untracked(quiet: bool, msg: fmt::Arguments<'_>) {
    if quiet || SAID.swap(true, Ordering::Relaxed) {
        return;
    }
    let line = format!("leakscope: {msg}\n");
    let mut rest = line.as_bytes();
    while !rest.is_empty() {
        // SAFETY: `rest` is valid for its length; fd 2 may be closed, then this fails.
        let n = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
        if n <= 0 {
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        rest = &rest[n as usize..];
    }
}
