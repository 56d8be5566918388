//! Routing of records to processes: each connection's first `Hello` opens a process
//! (anything before it opens a placeholder), later records go to that process. A fork
//! child's records are held back until its parent's `Fork` record has been applied, so it
//! can start from the parent's snapshot; if the parent's stream ends without one (or at
//! [`RunState::finish`]), the child starts empty and a note says so. Releases run from a
//! work list, never by recursion, however deep a chain of forks.

use crate::state::fork::Snapshot;
use crate::state::hash::FxHashMap;
use crate::state::process::{placeholder_hello, ProcLive};
use crate::state::{
    ConnClose, ConnId, ProcessState, RunState, SiteSeries, StateOptions, StreamEnd,
};
use leakscope_protocol::{Hello, Origin, Pid, Record, BUILD_FINGERPRINT};

/// Something held back for a waiting fork child.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum Queued {
    Record(Record),
    Close(ConnClose),
}

/// A fork child waiting for its parent's `Fork` record.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Waiting {
    parent: Pid,
    queue: Vec<Queued>,
}

/// The state's private bookkeeping.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Router {
    opts: StateOptions,
    conns: FxHashMap<ConnId, usize>,
    /// Parallel to `RunState::processes`.
    live: Vec<ProcLive>,
    /// Fork snapshots not yet claimed, by child pid: (parent index, snapshot).
    snapshots: FxHashMap<Pid, (usize, Snapshot)>,
    /// Waiting fork children, by process index.
    waiting: FxHashMap<usize, Waiting>,
    /// Children to release, in order.
    releases: Vec<Release>,
}

/// A waiting child to release (by process index) and what it starts from.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Release {
    child: usize,
    from: Seed,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum Seed {
    /// The snapshot the parent (by process index) took at its `Fork` record.
    Parent(usize, Snapshot),
    /// Nothing: why the parent's snapshot will never come.
    Nothing(String),
}

impl Router {
    /// Holds fork child `child` (by process index) back until `parent`'s `Fork` record.
    fn wait(&mut self, child: usize, parent: Pid) {
        self.waiting.insert(
            child,
            Waiting {
                parent,
                queue: Vec::new(),
            },
        );
    }

    /// Whether a release of `child` (by process index) is already queued.
    fn release_queued(&self, child: usize) -> bool {
        self.releases.iter().any(|r| r.child == child)
    }

    pub fn new(opts: StateOptions) -> Self {
        Router {
            opts,
            ..Router::default()
        }
    }
}

impl RunState {
    /// Applies one record that arrived on `conn`.
    pub fn apply(&mut self, conn: ConnId, record: Record) {
        match self.router.conns.get(&conn) {
            None => self.first_record(conn, record),
            Some(&idx) => {
                if let Some(w) = self.router.waiting.get_mut(&idx) {
                    w.queue.push(Queued::Record(record));
                    return;
                }
                self.apply_to(idx, record);
            }
        }
        self.run_releases();
    }

    /// Applies `records`, in order, that arrived on `conn`.
    pub fn apply_all(&mut self, conn: ConnId, records: impl IntoIterator<Item = Record>) {
        for r in records {
            self.apply(conn, r);
        }
    }

    /// The transport of `conn` ended as `how`.
    pub fn end_stream(&mut self, conn: ConnId, how: ConnClose) {
        let Some(&idx) = self.router.conns.get(&conn) else {
            match how {
                ConnClose::Damaged(msg) => self.warnings.push(format!(
                    "stream {conn} could not be read and named no process: {msg}"
                )),
                // A connection that never sent a record: nothing to say.
                ConnClose::Eof | ConnClose::StillOpen => {}
            }
            return;
        };
        if let Some(w) = self.router.waiting.get_mut(&idx) {
            w.queue.push(Queued::Close(how));
            return;
        }
        self.close(idx, how);
        self.run_releases();
    }

    /// Ends ingestion: fork children still waiting start empty, and every process's tables
    /// are settled (frees that never found their allocation counted). Idempotent.
    pub fn finish(&mut self) {
        let mut waiting: Vec<(usize, Pid)> = self
            .router
            .waiting
            .iter()
            .map(|(i, w)| (*i, w.parent))
            .collect();
        waiting.sort_unstable();
        for (idx, parent) in waiting {
            let known = self.processes.iter().any(|p| p.hello.pid == parent);
            let why = if known {
                format!("its parent (pid {}) never reported forking it", parent.0)
            } else {
                format!("its parent (pid {}) was never seen", parent.0)
            };
            self.router.releases.push(Release {
                child: idx,
                from: Seed::Nothing(why),
            });
        }
        self.run_releases();
        let opts = self.router.opts;
        for (p, l) in self.processes.iter_mut().zip(&mut self.router.live) {
            l.finalize(p, &opts);
        }
        self.router.snapshots.clear();
    }

    fn first_record(&mut self, conn: ConnId, record: Record) {
        match record {
            Record::Hello(h) => self.open(conn, h),
            other => {
                let idx = self.add_process(conn, placeholder_hello());
                self.router.live[idx].placeholder = true;
                self.processes[idx].notes.push(
                    "the stream did not start with Hello: which process it was is unknown".into(),
                );
                self.apply_to(idx, other);
            }
        }
    }

    fn add_process(&mut self, conn: ConnId, hello: Hello) -> usize {
        let idx = self.processes.len();
        let mut process = ProcessState::new(hello, conn);
        process.aging = SiteSeries::new(self.router.opts.series);
        self.processes.push(process);
        self.router.live.push(ProcLive::default());
        self.router.conns.insert(conn, idx);
        idx
    }

    fn check_fingerprint(p: &mut ProcessState) {
        if p.hello.fingerprint != BUILD_FINGERPRINT {
            p.anomalies.fingerprint_mismatch = true;
            p.notes.push(format!(
                "the shim was built from another protocol version (fingerprint {:016x}, this collector {:016x}): rebuild both together",
                p.hello.fingerprint, BUILD_FINGERPRINT
            ));
        }
    }

    fn open(&mut self, conn: ConnId, hello: Hello) {
        let origin = hello.origin.clone();
        let pid = hello.pid;
        let idx = self.add_process(conn, hello);
        Self::check_fingerprint(&mut self.processes[idx]);
        let Origin::Fork { parent } = origin else {
            return;
        };
        if let Some((pidx, snap)) = self.router.snapshots.remove(&pid) {
            if self.processes[pidx].hello.pid != parent {
                // Another parent's child with this pid; keep its snapshot for it.
                self.router.snapshots.insert(pid, (pidx, snap));
            } else {
                self.router.releases.push(Release {
                    child: idx,
                    from: Seed::Parent(pidx, snap),
                });
                self.router.wait(idx, parent);
                self.run_releases();
                return;
            }
        }
        let parent_idx = self.processes[..idx]
            .iter()
            .rposition(|p| p.hello.pid == parent);
        match parent_idx {
            Some(pi) if self.router.live[pi].closed => {
                self.processes[idx].notes.push(format!(
                    "its parent's stream (pid {}) ended without reporting this fork: it starts with nothing inherited",
                    parent.0
                ));
            }
            // Parent still streaming, or not seen yet: wait for its Fork record.
            _ => {
                self.router.wait(idx, parent);
            }
        }
    }

    fn apply_to(&mut self, idx: usize, record: Record) {
        let opts = self.router.opts;
        let (p, l) = (&mut self.processes[idx], &mut self.router.live[idx]);
        if let Record::Hello(h) = record {
            if l.placeholder {
                // The identity arrives late: adopt it (nothing can be inherited any more).
                l.placeholder = false;
                p.hello = h;
                p.notes.clear();
                p.notes.push(format!(
                    "Hello arrived after {} other records",
                    p.anomalies.records_before_hello
                ));
                Self::check_fingerprint(p);
            } else {
                p.anomalies.extra_hellos += 1;
            }
            return;
        }
        if l.placeholder {
            p.anomalies.records_before_hello += 1;
        }
        if let Some((child, snap)) = l.apply(p, record, &opts) {
            let parent_pid = p.hello.pid;
            let waiting_child = self.router.waiting.iter().find_map(|(ci, w)| {
                (w.parent == parent_pid && self.processes[*ci].hello.pid == child).then_some(*ci)
            });
            match waiting_child {
                Some(ci) if !self.router.release_queued(ci) => {
                    self.router.releases.push(Release {
                        child: ci,
                        from: Seed::Parent(idx, snap),
                    });
                }
                _ => {
                    self.router.snapshots.insert(child, (idx, snap));
                }
            }
        }
    }

    fn close(&mut self, idx: usize, how: ConnClose) {
        let opts = self.router.opts;
        let (p, l) = (&mut self.processes[idx], &mut self.router.live[idx]);
        p.end = match (how, &p.end) {
            (ConnClose::Damaged(msg), _) => StreamEnd::Damaged(msg),
            (_, StreamEnd::Clean(r)) => StreamEnd::Clean(*r),
            (ConnClose::Eof, _) => StreamEnd::CutOff,
            (ConnClose::StillOpen, _) => StreamEnd::Open,
        };
        l.closed = true;
        l.finalize(p, &opts);
        // Children still waiting for this process's Fork record will not get it (unless a
        // later process has the pid: the image it exec'd may still fork them).
        let pid = p.hello.pid;
        if self.processes.iter().rposition(|q| q.hello.pid == pid) != Some(idx) {
            return;
        }
        let mut orphans: Vec<usize> = self
            .router
            .waiting
            .iter()
            .filter(|(_, w)| w.parent == pid)
            .map(|(ci, _)| *ci)
            .collect();
        orphans.sort_unstable();
        for ci in orphans {
            if !self.router.release_queued(ci) {
                let why = format!(
                    "its parent's stream (pid {}) ended without reporting this fork",
                    pid.0
                );
                self.router.releases.push(Release {
                    child: ci,
                    from: Seed::Nothing(why),
                });
            }
        }
    }

    /// Seeds and replays released children until no release is left.
    fn run_releases(&mut self) {
        while !self.router.releases.is_empty() {
            let Release { child: idx, from } = self.router.releases.remove(0);
            let Some(w) = self.router.waiting.remove(&idx) else {
                continue;
            };
            match from {
                Seed::Parent(pidx, snap) => {
                    let opts = self.router.opts;
                    let (parent, child) = pair_mut(&mut self.processes, pidx, idx);
                    let (pl, cl) = pair_mut(&mut self.router.live, pidx, idx);
                    snap.seed((pl, parent), (cl, child), &opts);
                }
                Seed::Nothing(why) => self.processes[idx]
                    .notes
                    .push(format!("{why}: it starts with nothing inherited")),
            }
            for q in w.queue {
                match q {
                    Queued::Record(r) => self.apply_to(idx, r),
                    Queued::Close(c) => self.close(idx, c),
                }
            }
        }
    }
}

/// Shared access to element `a` and mutable access to element `b` (`a != b`).
fn pair_mut<T>(v: &mut [T], a: usize, b: usize) -> (&T, &mut T) {
    if a < b {
        let (lo, hi) = v.split_at_mut(b);
        (&lo[a], &mut hi[0])
    } else {
        let (lo, hi) = v.split_at_mut(a);
        (&hi[0], &mut lo[b])
    }
}

#[cfg(test)]
impl RunState {
    /// The live tables of process `idx` (tests check them against the sites).
    pub(crate) fn router_live(&self, idx: usize) -> &ProcLive {
        &self.router.live[idx]
    }
}
