//! The fork protocol: before the real fork the forking thread hands its pending events to
//! the sender; the parent then records `Fork{child}` (the child starts from the parent's
//! live allocations as they stand at that record); the child starts its own session.

use crate::record::{clock, Guard};
use crate::session;

/// Before the real `fork`.
pub fn before(g: &Guard) {
    g.flush();
}

/// In the parent, after `fork` returned `child`.
pub fn in_parent(g: &Guard, child: libc::pid_t) {
    g.fork(child as u32, clock::now());
}

/// In the child, after `fork` returned 0, before anything else runs.
pub fn in_child() {
    session::restart_in_fork_child();
}
