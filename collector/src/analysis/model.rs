//! The report model: what analysis hands to the renderers. Its `serde` form is leakscope's
//! JSON contract (`format_version` 2: GPU memory, see docs/gpu.md), so field names and their
//! meaning stay stable.
//!
//! Fields marked `#[serde(skip)]` are for renderers only and are not part of the contract.

use leakscope_protocol::{GpuSpace, MemoryKind};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Version of the JSON layout this build writes.
pub const FORMAT_VERSION: u32 = 2;

/// A whole report: the recorded command and every tracked process.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReportModel {
    /// Version of the leakscope that recorded the run.
    pub leakscope_version: String,
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The command as given to `leakscope run`.
    pub command: Vec<String>,
    /// The command's exit code (128 + signal when a signal ended it); `None` when unknown.
    pub exit_status: Option<i32>,
    /// The signal that ended the command, if one did.
    pub signal: Option<i32>,
    /// The report is a snapshot of a live recording: the command was still running (so
    /// `exit_status` is `None` and processes still running are `open`).
    pub live: bool,
    /// For a live report, when the recording was read (nanoseconds since the Unix epoch).
    #[serde(skip)]
    pub snapshot_unix_ns: Option<u64>,
    /// Processes in order of first appearance.
    pub processes: Vec<ProcessReport>,
    /// Problems not tied to one process.
    pub warnings: Vec<String>,
    /// The aging analysis's settings and the whole run's view (`docs/aging.md`).
    pub aging: Option<crate::analysis::aging_model::RunAging>,
    /// The per-process site limit analysis applied (`None`: every site is listed).
    #[serde(skip)]
    pub top: Option<usize>,
}

/// Which kind of memory a figure is about; serialized with [`MemoryKind::name`]'s names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Memory {
    Host,
    Mapped,
    Device,
    Pinned,
    Managed,
}

impl Memory {
    /// The lower-case name used in reports.
    pub fn name(self) -> &'static str {
        MemoryKind::from(self).name()
    }
}

impl From<MemoryKind> for Memory {
    fn from(kind: MemoryKind) -> Self {
        match kind {
            MemoryKind::Host => Memory::Host,
            MemoryKind::Mapped => Memory::Mapped,
            MemoryKind::Device => Memory::Device,
            MemoryKind::Pinned => Memory::Pinned,
            MemoryKind::Managed => Memory::Managed,
        }
    }
}

impl From<Memory> for MemoryKind {
    fn from(memory: Memory) -> Self {
        match memory {
            Memory::Host => MemoryKind::Host,
            Memory::Mapped => MemoryKind::Mapped,
            Memory::Device => MemoryKind::Device,
            Memory::Pinned => MemoryKind::Pinned,
            Memory::Managed => MemoryKind::Managed,
        }
    }
}

/// Which GPU address space a site's addresses name; serialized with [`GpuSpace::name`]'s
/// names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Space {
    /// Memory the call allocated (device, pinned or managed).
    Pointer,
    /// A physical allocation handle (created, imported or retained).
    Handle,
    /// A handle mapped into reserved addresses.
    Mapping,
    /// Reserved virtual addresses.
    Reservation,
    /// Host memory page-locked in place.
    Registration,
    /// Blocks of PyTorch's caching allocator: what tensors hold inside its segments (never
    /// owned: the segments are counted where they were allocated).
    Block,
}

impl Space {
    /// The lower-case name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Space::Pointer => "pointer",
            Space::Handle => "handle",
            Space::Mapping => "mapping",
            Space::Reservation => "reservation",
            Space::Registration => "registration",
            Space::Block => "block",
        }
    }

    /// The report's space for a state's; `None` for [`GpuSpace::Pool`], which names no
    /// memory.
    pub fn from_gpu(space: GpuSpace) -> Option<Space> {
        match space {
            GpuSpace::Pointer => Some(Space::Pointer),
            GpuSpace::Handle => Some(Space::Handle),
            GpuSpace::Mapping => Some(Space::Mapping),
            GpuSpace::Reservation => Some(Space::Reservation),
            GpuSpace::Registration => Some(Space::Registration),
            GpuSpace::Pool => None,
        }
    }
}

/// How this process came to be tracked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OriginName {
    /// Loaded the shim at program start.
    Exec,
    /// Forked without exec; inherited the parent's live allocations.
    Fork,
}

/// How the process's stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamStatus {
    /// Ended with an `End` record: the process exited normally.
    Clean,
    /// Ended with an `End` record because the process called `exec`.
    Exec,
    /// Stopped without an `End` record (killed, or the shim was cut off).
    CutOff,
    /// Still connected when the report was made.
    Open,
    /// Could not be read past some point (see `stream_problem`).
    Damaged,
}

/// Everything reported about one process.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProcessReport {
    pub pid: u32,
    pub ppid: u32,
    /// `argv` joined by spaces.
    pub command: String,
    pub argv: Vec<String>,
    pub exe: String,
    pub origin: OriginName,
    /// The forking parent's pid, for `origin: fork`.
    pub parent: Option<u32>,
    pub stream: StreamStatus,
    /// What went wrong reading a damaged stream.
    pub stream_problem: Option<String>,
    pub totals: Totals,
    pub dropped: DroppedCounts,
    /// Frees of blocks whose allocation was never seen.
    pub unknown_frees: u64,
    /// Sites ranked by outstanding bytes (at most `top` of them).
    pub sites: Vec<Site>,
    /// Sites left out of `sites` by the `top` limit.
    pub sites_omitted: usize,
    /// What a reader should know about this process: the state's notes and anomalies in
    /// words.
    pub notes: Vec<String>,
    /// GPU figures beyond the sites; `None` (`null`) for a process that made no GPU call.
    pub gpu: Option<GpuReport>,
    /// The host heap over time (glibc's arenas against live, resident and unique memory);
    /// `None` (`null`) when no reading came.
    pub heap: Option<HeapReport>,
    /// How the process's memory grows over time (`docs/aging.md`); `None` (`null`) only
    /// in reports built without the aging analysis.
    pub aging: Option<crate::analysis::aging_model::ProcessAging>,
}

/// Counters summed over sites.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub outstanding_bytes: u64,
    pub outstanding_count: u64,
    pub allocations: u64,
    pub allocated_bytes: u64,
    pub temporary: u64,
}

impl Counts {
    /// Adds `other` to `self`, saturating.
    pub fn add(&mut self, other: &Counts) {
        self.outstanding_bytes = self
            .outstanding_bytes
            .saturating_add(other.outstanding_bytes);
        self.outstanding_count = self
            .outstanding_count
            .saturating_add(other.outstanding_count);
        self.allocations = self.allocations.saturating_add(other.allocations);
        self.allocated_bytes = self.allocated_bytes.saturating_add(other.allocated_bytes);
        self.temporary = self.temporary.saturating_add(other.temporary);
    }
}

/// A process's totals over all its owned sites (before any `top` limit), overall and per
/// kind of memory; `by_memory` lists only the kinds present, in [`MemoryKind::ALL`] order.
/// GPU sites that are not owned (mappings, reservations, registrations, imported and
/// retained handles) are not counted: their memory is counted where it was allocated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    #[serde(flatten)]
    pub all: Counts,
    pub by_memory: BTreeMap<Memory, Counts>,
}

/// Events the shim had to drop, as last reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DroppedCounts {
    pub allocs: u64,
    pub alloc_bytes: u64,
    pub frees: u64,
}

impl DroppedCounts {
    /// Whether nothing was dropped.
    pub fn is_none(&self) -> bool {
        self.allocs == 0 && self.alloc_bytes == 0 && self.frees == 0
    }
}

/// One call site after symbolization and merging.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Site {
    pub memory: Memory,
    /// The allocator pool the memory came from (`malloc`, `mmap`, and for GPU memory the
    /// pools of docs/gpu.md: `pytorch-caching`, `nccl`, `direct`, ...).
    pub pool: String,
    /// The GPU ordinal the memory lives on; `None` for host memory and where unknown.
    pub device: Option<u32>,
    /// The GPU address space of the site's addresses; `None` for host memory.
    pub space: Option<Space>,
    /// Whether the memory is the process's own and counts toward its totals (host memory,
    /// GPU pointers and created handles).
    pub owned: bool,
    /// Allocated inside a CUDA-graph capture window of the allocating thread.
    pub during_capture: bool,
    pub outstanding_bytes: u64,
    pub outstanding_count: u64,
    pub allocations: u64,
    pub allocated_bytes: u64,
    /// Highest outstanding bytes. For a site merged from several code addresses that share
    /// one symbolized stack this is the sum of the parts' peaks: an upper bound, since the
    /// parts need not have peaked at the same time.
    pub peak_bytes: u64,
    pub temporary: u64,
    /// The call stack, innermost first, allocator frames removed.
    pub frames: Vec<Frame>,
    /// The trend of the site's outstanding bytes (`trend`; `null` with too few values
    /// after the warm-up) and, with `--series`, the values (`series`).
    #[serde(flatten)]
    pub aging: crate::analysis::aging_model::Tested,
    /// The outstanding (and outlived) bytes over time, on the process's grid (analysis
    /// only).
    #[serde(skip)]
    pub history: crate::analysis::aging::series::SiteHistory,
}

impl Site {
    /// Where the site allocates, as a reader wants it first: the innermost Python frame
    /// when the stack has one (the Python line, not the interpreter's or a C extension's
    /// frames it called), otherwise the innermost frame.
    pub fn headline(&self) -> Option<&Frame> {
        self.frames
            .iter()
            .find(|f| f.python)
            .or(self.frames.first())
    }

    /// The site's counters without the peak.
    pub fn counts(&self) -> Counts {
        Counts {
            outstanding_bytes: self.outstanding_bytes,
            outstanding_count: self.outstanding_count,
            allocations: self.allocations,
            allocated_bytes: self.allocated_bytes,
            temporary: self.temporary,
        }
    }
}

/// One frame of a call stack. An address inside inlined code gives several frames, the
/// innermost inlined function first, each but the last with `inlined: true`.
///
/// A Python frame (`python: true`, the only frames that carry the field) names a line of
/// Python source: `function` is the code object's qualified name, `file` its file name,
/// `line` the line of the instruction it was running, `module` is `None` and `address`
/// the instruction's byte offset in the code object's bytecode. Python frames stand where
/// the interpreter's evaluation-loop frames that ran them stood.
///
/// The texts are shared (`Arc<str>`): one address's frames appear in every site whose stack
/// passes through it, and a PyTorch process has a hundred thousand such sites.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Frame {
    /// Demangled function name; `None` when it could not be found.
    pub function: Option<Arc<str>>,
    /// Source file, when debug information names it.
    pub file: Option<Arc<str>>,
    pub line: Option<u32>,
    /// File name of the module the address lies in; `None` when it lies in no known module.
    pub module: Option<Arc<str>>,
    /// Hex: the offset into the module's file when `module` is known (stable across runs
    /// despite address randomization), otherwise the runtime address.
    pub address: Arc<str>,
    /// Whether this function was inlined into the next frame.
    pub inlined: bool,
    /// Whether this is a Python frame (serialized only when true).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub python: bool,
}

/// A process's GPU figures beyond its sites.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GpuReport {
    /// One entry per device its GPU sites name (the unknown device last).
    pub devices: Vec<GpuDevice>,
    /// The owned sites summed per (pool, memory, device), most outstanding first.
    pub pools: Vec<PoolTotals>,
    /// The stream-ordered pools the shim read, by handle.
    pub stream_pools: Vec<StreamPool>,
    /// CUDA-graph captures begun.
    pub captures: u64,
    /// PyTorch's caching allocator block by block; `None` (`null`) when no PyTorch record
    /// came (see docs/gpu.md).
    pub torch: Option<crate::analysis::torch_model::TorchReport>,
}

/// What one device holds for the process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GpuDevice {
    /// The ordinal; `None` where unknown (and for pinned host memory).
    pub device: Option<u32>,
    /// Owned GPU memory (device, pinned, managed) summed over its sites; only the kinds
    /// present.
    pub by_memory: BTreeMap<Memory, Counts>,
    /// Virtual addresses reserved and not freed (`cuMemAddressReserve`).
    pub reserved_address_bytes: u64,
    /// Bytes of handles mapped into reserved addresses and not unmapped (`cuMemMap`).
    pub mapped_bytes: u64,
    /// Host bytes page-locked in place and not unregistered (`cudaHostRegister`).
    pub registered_bytes: u64,
    /// Live handles imported from another process.
    pub imported_handles: u64,
    /// Live handles retained without their creation having been seen.
    pub retained_handles: u64,
}

/// The owned sites of one pool, memory kind and device, summed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PoolTotals {
    pub pool: String,
    pub memory: Memory,
    pub device: Option<u32>,
    #[serde(flatten)]
    pub counts: Counts,
}

/// A stream-ordered pool as the shim last read it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StreamPool {
    /// The pool's handle in the process, in hex (`0x...`).
    pub handle: String,
    pub device: Option<u32>,
    /// The program created the pool (otherwise: a device's default pool, or one made
    /// before tracking).
    pub created_by_program: bool,
    pub destroyed: bool,
    /// Bytes the pool holds from the device, at the newest reading.
    pub reserved_bytes: u64,
    /// Bytes of those handed out, at the newest reading.
    pub used_bytes: u64,
    /// How many readings came.
    pub readings: u64,
    /// The readings over time (thinned evenly on long runs), oldest first.
    pub series: Vec<crate::analysis::torch_model::StreamPoolPoint>,
}

/// A process's host heap over time: what glibc's allocator holds from the system, what of
/// it is free (freed by the program but not returned), what the program holds, and the
/// process's resident and unique memory. Readings are taken at `leakscope run --interval`
/// and at the end of the stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HeapReport {
    /// The verdict on the newest reading.
    pub verdict: HeapVerdict,
    /// The newest reading.
    pub latest: HeapFigures,
    /// The newest reading's arenas, the main arena first.
    pub arenas: Vec<ArenaFigures>,
    /// How many readings came; `series` holds fewer on long runs (thinned evenly, the
    /// first and the newest kept).
    pub readings: u64,
    /// Nanoseconds from the first reading kept to the newest.
    pub span_ns: u64,
    /// The readings kept, oldest first.
    pub series: Vec<HeapFigures>,
}

/// What the newest reading says of the heap (the thresholds are in `analysis/heap.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeapVerdict {
    /// Much free memory spread over many holes between chunks in use: freed but not
    /// returned, and not returnable while the neighbours live.
    Fragmented,
    /// Much free memory, but at the heap's end or in a few large holes.
    Retained,
    /// The allocator keeps little free memory.
    Compact,
    /// No allocator figures (not glibc's allocator, or only GPU memory tracked).
    Unknown,
}

/// One heap reading. Allocator figures are 0 when `arenas` is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HeapFigures {
    /// Nanoseconds since the process's stream started.
    pub at_ns: u64,
    /// glibc arenas read.
    pub arenas: u32,
    /// `arena_bytes` + `mmap_bytes`: everything the allocator holds from the system.
    pub system_bytes: u64,
    /// What the arenas hold from the system.
    pub arena_bytes: u64,
    /// Chunks served by their own mapping (returned when freed): bytes and count.
    pub mmap_bytes: u64,
    pub mmap_chunks: u64,
    /// Free bytes in the arenas: freed but not returned to the system.
    pub free_bytes: u64,
    pub free_chunks: u64,
    /// Of `free_bytes`: in fast bins.
    pub fastbin_bytes: u64,
    /// Of `free_bytes`: the top chunk, at the arenas' ends (trimming returns it).
    pub top_bytes: u64,
    /// Of `free_bytes`: in holes between chunks in use (all but the top chunk).
    pub hole_bytes: u64,
    /// `free_bytes` per mille of `arena_bytes`.
    pub free_permille: u32,
    /// Outstanding C heap bytes and blocks (memory `host`) when the reading arrived.
    pub live_bytes: u64,
    pub live_blocks: u64,
    /// Resident set size.
    pub rss_bytes: u64,
    /// Unique set size (private clean + private dirty); 0 where the kernel does not say.
    pub uss_bytes: u64,
}

/// One glibc arena at the newest reading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ArenaFigures {
    pub system_bytes: u64,
    pub free_bytes: u64,
    pub free_chunks: u64,
    pub fastbin_bytes: u64,
    pub top_bytes: u64,
}
