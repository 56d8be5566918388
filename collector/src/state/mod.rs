//! Live accounting of what each tracked process holds, built by applying stream records in
//! arrival order: the live allocation table per process and statistics per call site.
//!
//! This is the contract between ingestion (which calls [`RunState::apply`]) and analysis
//! (which reads the finished [`ProcessState`]s).

use leakscope_protocol::{
    Dropped, Hello, MemoryKind, ModuleId, ModuleMap, Pid, RuntimeAddr, StackId, Timestamp,
};
use std::collections::HashMap;

/// A call site as the state knows it: one distinct stack and memory kind. Analysis merges
/// sites whose symbolized frames are the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SiteKey {
    pub stack: StackId,
    pub kind: MemoryKind,
}

/// Statistics of one site. Byte counts are the sizes the program asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SiteStats {
    /// Bytes still allocated from this site.
    pub outstanding_bytes: u64,
    /// Blocks still allocated from this site.
    pub outstanding_count: u64,
    /// Allocations made from this site in total.
    pub allocations: u64,
    /// Bytes allocated from this site in total (churn).
    pub allocated_bytes: u64,
    /// Highest `outstanding_bytes` this site reached.
    pub peak_bytes: u64,
    /// Allocations freed within the temporary threshold of being made.
    pub temporary: u64,
}

/// How a process's stream ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// Still connected (or the recording is being read while live).
    Open,
    /// An `End` record arrived.
    Clean(leakscope_protocol::EndReason),
    /// The stream stopped without an `End` record (process killed, shim cut off).
    CutOff,
    /// The stream could not be read past some point; the message names the problem.
    Damaged(String),
}

/// Everything known about one tracked process.
#[derive(Debug)]
pub struct ProcessState {
    pub hello: Hello,
    pub modules: HashMap<ModuleId, ModuleMap>,
    pub stacks: HashMap<StackId, Vec<RuntimeAddr>>,
    pub sites: HashMap<SiteKey, SiteStats>,
    /// Latest cumulative drop counts reported by the shim.
    pub dropped: Dropped,
    /// Frees whose allocation was never seen (made before tracking, or dropped).
    pub unknown_frees: u64,
    pub end: StreamEnd,
    /// Timestamp of the last record applied.
    pub last_ts: Timestamp,
}

/// All processes of one run, keyed by pid. A pid reused by a later process gets a new
/// entry; `processes` keeps them in order of first appearance.
#[derive(Debug, Default)]
pub struct RunState {
    pub processes: Vec<ProcessState>,
}

impl RunState {
    /// The process whose stream is `pid`, latest first.
    pub fn process(&self, pid: Pid) -> Option<&ProcessState> {
        self.processes.iter().rev().find(|p| p.hello.pid == pid)
    }
}
