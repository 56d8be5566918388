//! Live accounting of what each tracked process holds, built by applying stream records in
//! arrival order: the live allocation table per process and statistics per call site.
//!
//! This is the contract between ingestion (which calls [`RunState::apply`]) and analysis
//! (which reads the finished [`ProcessState`]s).
//!
//! Files: `route.rs` sends each connection's records to its process (and holds fork
//! children back until their parent's fork is known), `process.rs` applies one record to one
//! process, `live.rs` / `mapped.rs` are the live tables, `fork.rs` the fork snapshots,
//! `sites.rs` the statistics updates, `hash.rs` the tables' hasher. GPU accounting is kept
//! apart from the host tables: `gpu.rs` applies GPU records to the GPU tables (`live.rs` and
//! `mapped.rs` again, `handles.rs` for refcounted handles, `capture.rs` for capture windows)
//! and `pools.rs` keeps the stream-ordered pools' readings. `heap.rs` keeps the host heap
//! readings over time, `aging.rs` every site's series over time (with `outlived.rs` for
//! the bytes of blocks that outlived their site's freed ones). `torch.rs` follows PyTorch's caching allocator block by block
//! (with `torch_figures.rs` for its pools' figures and `series.rs` for bounded series).

mod aging;
mod capture;
mod fork;
mod gpu;
mod handles;
mod hash;
mod heap;
mod live;
mod machine;
mod mapped;
mod outlived;
mod pools;
mod process;
mod route;
mod series;
mod sites;
mod torch;
mod torch_figures;

#[cfg(test)]
mod gpu_tests;
#[cfg(test)]
mod tests;

use leakscope_protocol::{
    Api, CodeKey, DeviceOrdinal, Dropped, GpuSpace, Hello, MemoryKind, ModuleId, ModuleMap, Pid,
    PyCode, PyFrame, RuntimeAddr, StackId, Timestamp,
};
use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

pub use aging::{BucketSeries, Grid, SeriesLimits, SiteSeries, DEFAULT_BUCKETS};
pub use gpu::GpuState;
pub use hash::{FxHashMap, FxHashSet, FxHasher};
pub use heap::{HeapPoint, HeapSeries};
#[cfg(test)]
pub(crate) use live::Horizon;
pub use machine::MachineSeries;
pub use pools::{PoolReading, PoolState};
pub use series::Series;
pub use torch::{BlockSiteKey, BlockSiteStats, Placement, TorchCounts, TorchReading, TorchTrack};
pub use torch_figures::{figures as torch_figures, PoolFigures, PoolKey};

/// A call site as the state knows it: one distinct stack, memory kind and (for GPU memory)
/// device, address space, ownership, capture mark and api. Analysis merges sites whose
/// symbolized frames (and everything but the stack and api) are the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SiteKey {
    pub stack: StackId,
    pub kind: MemoryKind,
    /// The device the memory lives on; `None` for host memory and where it is unknown.
    pub device: Option<DeviceOrdinal>,
    /// The GPU address space the site's addresses name; `None` for host memory.
    pub space: Option<GpuSpace>,
    /// Whether the memory is the process's own and counts toward its totals: host memory,
    /// and GPU pointers and handles the process created (not imported or retained handles,
    /// nor mappings, reservations or registrations, whose memory is accounted elsewhere).
    pub owned: bool,
    /// Allocated by a thread inside one of its CUDA-graph capture windows.
    pub during_capture: bool,
    /// The GPU api that allocated (pools and handle origins depend on it); `None` for host
    /// memory, whose sites are not split by api.
    pub api: Option<Api>,
}

impl SiteKey {
    /// A host site: `stack` allocating memory of `kind`.
    pub fn host(stack: StackId, kind: MemoryKind) -> Self {
        SiteKey {
            stack,
            kind,
            device: None,
            space: None,
            owned: true,
            during_capture: false,
            api: None,
        }
    }

    /// A GPU site: `stack` calling `api` for memory of `kind` on `device`. `None` when
    /// `api` names no GPU space, or names a stream-ordered pool (not an allocation).
    pub fn gpu(
        stack: StackId,
        kind: MemoryKind,
        api: Api,
        device: Option<DeviceOrdinal>,
        during_capture: bool,
    ) -> Option<Self> {
        let space = api.space().filter(|s| *s != GpuSpace::Pool)?;
        Some(SiteKey {
            stack,
            kind,
            device,
            space: Some(space),
            owned: matches!(space, GpuSpace::Pointer | GpuSpace::Handle) && api.owns(),
            during_capture,
            api: Some(api),
        })
    }

    /// Whether the site is GPU memory (or GPU address space).
    pub fn is_gpu(&self) -> bool {
        self.space.is_some()
    }
}

impl PartialOrd for SiteKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SiteKey {
    /// By stack, kind, device, space, ownership, capture mark, then api in declaration
    /// order (`Api` itself has no order).
    fn cmp(&self, other: &Self) -> Ordering {
        let fields = |k: &Self| {
            (
                k.stack,
                k.kind,
                k.device,
                k.space,
                k.owned,
                k.during_capture,
            )
        };
        fields(self)
            .cmp(&fields(other))
            .then_with(|| self.api.map(|a| a as u16).cmp(&other.api.map(|a| a as u16)))
    }
}

/// Statistics of one site. Byte counts are the sizes the program asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SiteStats {
    /// Bytes still allocated from this site.
    pub outstanding_bytes: u64,
    /// Blocks still allocated from this site (for mapped memory: pieces, so a mapping
    /// split by a partial unmap counts twice).
    pub outstanding_count: u64,
    /// Allocations made from this site in total (blocks inherited at fork are outstanding
    /// but not counted here).
    pub allocations: u64,
    /// Bytes allocated from this site in total (churn).
    pub allocated_bytes: u64,
    /// Highest `outstanding_bytes` this site reached.
    pub peak_bytes: u64,
    /// Allocations freed within the temporary threshold of being made (for mapped memory:
    /// unmapped whole, at once).
    pub temporary: u64,
    /// The longest any whole block of this site was held before its free was seen, in
    /// nanoseconds (0: no such free yet). Blocks live well past it are `outlived.rs`'s.
    pub longest_held_ns: u64,
}

/// How a process's stream ended.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// Identifies one connection (one stream, one recording file `streams/NNNNNN.lks`), numbered
/// from 0 in order of arrival.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct ConnId(pub u32);

impl fmt::Display for ConnId {
    /// The six-digit form used in stream file names.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06}", self.0)
    }
}

/// How a connection's transport ended, as [`RunState::end_stream`] is told.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ConnClose {
    /// End of file: the process closed the stream (clean if an `End` record came).
    Eof,
    /// The bytes could not be decoded past some point; the message names the problem.
    Damaged(String),
    /// The collector stopped listening while the process was still connected.
    StillOpen,
}

/// Tunables of the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StateOptions {
    /// An allocation freed within this many nanoseconds is temporary. Default 1 ms.
    pub temporary_ns: u64,
    /// How late (in nanoseconds of event time, behind the newest event) an event may
    /// arrive and still be placed right: freed addresses and unmaps still waiting for their
    /// mapping are remembered this long. Default 5 s.
    pub reorder_window_ns: u64,
    /// The tick grid of the site series (the run's interval) and their bound.
    pub series: SeriesLimits,
}

impl Default for StateOptions {
    fn default() -> Self {
        StateOptions {
            temporary_ns: 1_000_000,
            reorder_window_ns: 5_000_000_000,
            series: SeriesLimits::default(),
        }
    }
}

/// Records a stream should not contain: counted, never fatal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Anomalies {
    /// Records that arrived before the stream's `Hello`.
    pub records_before_hello: u64,
    /// `Hello` records after the first one.
    pub extra_hellos: u64,
    /// Stack definitions that gave a defined id other frames (the first definition stays).
    pub stack_redefinitions: u64,
    /// Python code definitions that gave a defined key another code object (the first
    /// definition stays).
    pub code_redefinitions: u64,
    /// Sites whose stack id was never defined (set when the stream is finished).
    pub undefined_stacks: u64,
    /// Unloads of module ids never loaded.
    pub unknown_module_unloads: u64,
    /// Mapped allocations or unmaps of an empty range (zero length, or at the very top of
    /// the address space).
    pub empty_ranges: u64,
    /// Allocations whose free never arrived although a later allocation of the same
    /// address proves it happened (an event dropped, or a path the shim does not see);
    /// set when the stream is finished.
    pub implied_frees: u64,
    /// GPU records whose api does not fit them (a host or pool api on a GPU allocation, a
    /// freeing api on one, a pool api on a free): ignored.
    pub malformed_gpu_records: u64,
    /// Machine readings (`Record::Machine`, the collector's own record) inside a process's
    /// stream: ignored.
    pub machine_records_in_stream: u64,
    /// The shim was built from another protocol source than this collector.
    pub fingerprint_mismatch: bool,
}

/// Everything known about one tracked process.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ProcessState {
    pub hello: Hello,
    /// Every module the process loaded, unloaded ones included (stacks recorded while they
    /// were loaded still refer to them); see `unloaded_modules`.
    pub modules: FxHashMap<ModuleId, ModuleMap>,
    pub stacks: FxHashMap<StackId, Vec<RuntimeAddr>>,
    /// The Python part of the stacks recorded while Python code ran (innermost first,
    /// split into evaluation-loop segments); stacks without one are not listed.
    pub python_stacks: FxHashMap<StackId, Vec<PyFrame>>,
    /// The Python code objects the stacks name (own and inherited at fork).
    pub py_codes: FxHashMap<CodeKey, Arc<PyCode>>,
    /// Looked up for every allocation and free: a fast hasher, not SipHash.
    pub sites: FxHashMap<SiteKey, SiteStats>,
    /// Latest cumulative drop counts reported by the shim.
    pub dropped: Dropped,
    /// Frees whose allocation was never seen (made before tracking, or dropped).
    pub unknown_frees: u64,
    pub end: StreamEnd,
    /// Greatest timestamp of the records applied.
    pub last_ts: Timestamp,
    /// The connection (and recording file) the stream came on.
    pub stream: ConnId,
    /// Module ids unloaded (`dlclose`), in order.
    pub unloaded_modules: Vec<ModuleId>,
    /// Records the stream should not contain.
    pub anomalies: Anomalies,
    /// Things a reader of the report should know about this process (one sentence each),
    /// e.g. that a fork child could not inherit its parent's allocations.
    pub notes: Vec<String>,
    /// What the process did with GPUs beyond its sites (pools, captures); `None` while it
    /// has sent no GPU record. A fork child starts without (CUDA does not survive fork).
    pub gpu: Option<GpuState>,
    /// PyTorch's CUDA caching allocator, block by block (`torch.rs`); `None` while no
    /// PyTorch record came. Not inherited at fork.
    pub torch: Option<TorchTrack>,
    /// The host heap readings (glibc arenas, resident memory) over time.
    pub heap: HeapSeries,
    /// Every site's outstanding bytes over time, on the run's tick grid (`aging.rs`).
    pub aging: SiteSeries,
}

impl ProcessState {
    /// An empty process whose stream begins with `hello` on `stream`.
    pub fn new(hello: Hello, stream: ConnId) -> Self {
        ProcessState {
            hello,
            modules: FxHashMap::default(),
            stacks: FxHashMap::default(),
            python_stacks: FxHashMap::default(),
            py_codes: FxHashMap::default(),
            sites: FxHashMap::default(),
            dropped: Dropped::default(),
            unknown_frees: 0,
            end: StreamEnd::Open,
            last_ts: Timestamp(0),
            stream,
            unloaded_modules: Vec::new(),
            anomalies: Anomalies::default(),
            notes: Vec::new(),
            gpu: None,
            torch: None,
            heap: HeapSeries::default(),
            aging: SiteSeries::default(),
        }
    }
}

/// All processes of one run, keyed by pid. A pid reused by a later process gets a new
/// entry; `processes` keeps them in order of first appearance.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RunState {
    pub processes: Vec<ProcessState>,
    /// Problems not tied to one process (a stream that never said `Hello`, ...).
    pub warnings: Vec<String>,
    /// The machine's memory over the run (host, cgroup, GPUs), from the collector's sampler.
    pub machine: MachineSeries,
    /// Ingestion internals: live tables, connection routing, fork snapshots.
    router: route::Router,
}

impl RunState {
    /// An empty state with `options`.
    pub fn new(options: StateOptions) -> Self {
        RunState {
            processes: Vec::new(),
            warnings: Vec::new(),
            machine: MachineSeries::default(),
            router: route::Router::new(options),
        }
    }

    /// A finished state holding `processes` (for building reports in tests).
    pub fn from_processes(processes: Vec<ProcessState>) -> Self {
        RunState {
            processes,
            ..RunState::default()
        }
    }

    /// Adds a reading of the machine's memory (newest last).
    pub fn apply_machine(&mut self, reading: leakscope_protocol::MachineReading) {
        self.machine.push(reading);
    }

    /// The process whose stream is `pid`, latest first.
    pub fn process(&self, pid: Pid) -> Option<&ProcessState> {
        self.processes.iter().rev().find(|p| p.hello.pid == pid)
    }
}
