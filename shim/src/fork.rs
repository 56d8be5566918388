//! The fork protocol: before the real fork the forking thread hands every thread's pending
//! events to the sender (its own first, then every registered buffer, as the final flush
//! does, waiting a bounded time for each lock), so that everything that happened before the
//! fork precedes the `Fork` record in the stream; the parent then records `Fork{child}`
//! (the child starts from the parent's live allocations as they stand at that record); the
//! child starts its own session.
//!
//! Order: a buffer stolen here goes to the channel before `Fork` is even appended, and the
//! sender processes the channel before any buffer it steals later; a batch the sender stole
//! just before (it holds that buffer's lock while it counts the channel's earlier batches)
//! is processed before the ones submitted here.

use crate::record::{clock, Guard};
use crate::session;
use std::time::Duration;

/// How long the fork waits for each other thread's buffer lock (held only mid-append or
/// mid-steal); a buffer whose lock stays taken keeps its events until the sender's next
/// steal.
const FORK_LOCK_WAIT: Duration = Duration::from_millis(2);

/// Before the real `fork`.
pub fn before(g: &Guard) {
    g.flush();
    let Some(s) = session::current() else { return };
    for slot in s.registry.slots() {
        let Some(mut l) = slot.lock_within(FORK_LOCK_WAIT) else {
            continue;
        };
        let taken = l.take();
        drop(l);
        // A batch dropped here (the channel stayed full) is counted; the owning thread's
        // later events that use its stack definitions are dropped and counted by the sender.
        let _ = s.channel.submit_taken(taken, &session::is_active);
    }
}

/// In the parent, after `fork` returned `child`.
pub fn in_parent(g: &Guard, child: libc::pid_t) {
    g.fork(child as u32, clock::now());
}

/// In the child, after `fork` returned 0, before anything else runs.
pub fn in_child() {
    crate::side::discard();
    session::restart_in_fork_child();
}
