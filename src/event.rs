//! The records a shim sends to the collector, in stream order. A stream is one process:
//! it starts with [`Hello`], defines modules and stacks before they are referred to, and
//! ends with [`End`] when the process exits cleanly (a stream without `End` was cut off).

pub use crate::api::Api;
pub use crate::gpu::{Capture, GpuAlloc, GpuSpace, PoolAction, PoolEvent};
pub use crate::heap::{ArenaReading, HeapReading};
use crate::ids::{FileOffset, ModuleId, Pid, RuntimeAddr, StackId, ThreadId, Timestamp};
pub use crate::machine::{CgroupMemory, GpuMemory, MachineReading};
pub use crate::python::{PyCode, PyFrame, PyVersion};
pub use crate::torch::{TorchBlock, TorchState};
use bincode::{Decode, Encode};

/// Which kind of memory an allocation is. JSON reports use [`MemoryKind::name`].
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Encode,
    Decode,
    serde::Serialize,
    serde::Deserialize,
)]
pub enum MemoryKind {
    /// The C heap (`malloc` and its relatives).
    Host,
    /// Anonymous `mmap` mappings, apart from the heap.
    Mapped,
    /// GPU device memory.
    Device,
    /// Page-locked host memory registered with or allocated by CUDA.
    Pinned,
    /// CUDA managed (unified) memory.
    Managed,
}

impl MemoryKind {
    /// Every kind, in report order.
    pub const ALL: [MemoryKind; 5] = [
        MemoryKind::Host,
        MemoryKind::Mapped,
        MemoryKind::Device,
        MemoryKind::Pinned,
        MemoryKind::Managed,
    ];

    /// The lower-case name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            MemoryKind::Host => "host",
            MemoryKind::Mapped => "mapped",
            MemoryKind::Device => "device",
            MemoryKind::Pinned => "pinned",
            MemoryKind::Managed => "managed",
        }
    }
}

/// How this process came to be tracked.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize)]
pub enum Origin {
    /// The shim was loaded at program start (the command itself, or an exec'd child).
    Exec,
    /// A child created by `fork` without `exec`: it inherited `parent`'s live allocations
    /// as they stood at the parent's [`Fork`] record for this child.
    Fork { parent: Pid },
}

/// First record of every stream.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize)]
pub struct Hello {
    pub pid: Pid,
    pub ppid: Pid,
    pub origin: Origin,
    /// `/proc/self/exe`, resolved.
    pub exe: String,
    /// The command line (`/proc/self/cmdline`).
    pub argv: Vec<String>,
    /// When tracking began, on the monotonic clock.
    pub start: Timestamp,
    /// When tracking began, in nanoseconds since the Unix epoch.
    pub start_unix_ns: u64,
    /// [`crate::BUILD_FINGERPRINT`] of the shim that sent the stream.
    pub fingerprint: u64,
}

/// One mapped segment of a module.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize)]
pub struct Segment {
    pub start: RuntimeAddr,
    pub end: RuntimeAddr,
    /// File offset of `start`.
    pub file_offset: FileOffset,
    pub executable: bool,
}

/// A module loaded in the process (at start or by `dlopen`).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize)]
pub struct ModuleMap {
    pub id: ModuleId,
    /// Path of the file as the loader opened it (the main executable's resolved path).
    pub path: String,
    /// The GNU build id, when the module has one (empty otherwise).
    pub build_id: Vec<u8>,
    pub segments: Vec<Segment>,
}

/// A module removed by `dlclose`; addresses in its range no longer belong to it.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize)]
pub struct ModuleUnload {
    pub id: ModuleId,
}

/// A distinct call stack: lookup addresses (a return address minus one, so it falls
/// inside the call instruction), innermost first, the shim's own frames already removed;
/// and, when the thread was running Python, its Python frames (innermost first, split
/// into evaluation-loop segments by [`PyFrame::Boundary`]).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize)]
pub struct StackDef {
    pub id: StackId,
    pub frames: Vec<RuntimeAddr>,
    pub python: Vec<PyFrame>,
}

/// Memory handed to the program.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize,
)]
pub struct Alloc {
    pub ts: Timestamp,
    pub thread: ThreadId,
    pub addr: RuntimeAddr,
    /// The size the program asked for.
    pub size: u64,
    pub kind: MemoryKind,
    pub api: Api,
    pub stack: StackId,
}

/// Memory given back. Recorded before the real free runs. GPU frees use this record too:
/// their [`Api::space`] says which of the GPU address spaces `addr` names.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize,
)]
pub struct Free {
    pub ts: Timestamp,
    pub thread: ThreadId,
    pub addr: RuntimeAddr,
    /// For [`MemoryKind::Mapped`], and for GPU mappings and reservations, the length of the
    /// released range (a `munmap` may cover part of a mapping, or several); zero for every
    /// other kind (the whole block).
    pub len: u64,
    pub kind: MemoryKind,
    pub api: Api,
}

/// The parent's side of a `fork`: the child's stream starts from the parent's live
/// allocations as they stand at this record.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize,
)]
pub struct Fork {
    pub ts: Timestamp,
    pub thread: ThreadId,
    pub child: Pid,
}

/// Events the shim had to drop (channel full or buffer unavailable), cumulative since the
/// stream began: each `Dropped` supersedes the previous one.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize,
)]
pub struct Dropped {
    pub ts: Timestamp,
    pub allocs: u64,
    pub alloc_bytes: u64,
    pub frees: u64,
}

/// Why a stream ended.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize,
)]
pub enum EndReason {
    /// The process is exiting normally (`exit`, return from `main`).
    Exit,
    /// The process is replacing its image with `exec`; a new stream follows from the new
    /// image if it loads the shim.
    Exec,
}

/// Last record of a clean stream.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize,
)]
pub struct End {
    pub ts: Timestamp,
    pub reason: EndReason,
}

/// One record of a stream.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize)]
pub enum Record {
    Hello(Hello),
    Module(ModuleMap),
    ModuleUnload(ModuleUnload),
    Stack(StackDef),
    Alloc(Alloc),
    Free(Free),
    GpuAlloc(GpuAlloc),
    Pool(PoolEvent),
    Capture(Capture),
    PyCode(PyCode),
    Heap(HeapReading),
    TorchBlock(TorchBlock),
    TorchState(TorchState),
    Fork(Fork),
    Dropped(Dropped),
    End(End),
    /// A reading of the machine's memory: written by the collector into its own stream
    /// (`machine.lks`), never sent by a shim.
    Machine(MachineReading),
}

impl Record {
    /// The record's timestamp, for records that carry one.
    pub fn ts(&self) -> Option<Timestamp> {
        self.ts_slot().copied()
    }

    /// Mutable access to the timestamp (the wire format stores it relative to its frame;
    /// the shim converts clock readings in place).
    pub fn ts_slot_mut(&mut self) -> Option<&mut Timestamp> {
        match self {
            Record::Alloc(a) => Some(&mut a.ts),
            Record::Free(f) => Some(&mut f.ts),
            Record::GpuAlloc(a) => Some(&mut a.ts),
            Record::Pool(p) => Some(&mut p.ts),
            Record::Capture(c) => Some(&mut c.ts),
            Record::Heap(h) => Some(&mut h.ts),
            Record::TorchBlock(b) => Some(&mut b.ts),
            Record::TorchState(t) => Some(&mut t.ts),
            Record::Fork(f) => Some(&mut f.ts),
            Record::Dropped(d) => Some(&mut d.ts),
            Record::End(e) => Some(&mut e.ts),
            Record::Machine(m) => Some(&mut m.ts),
            Record::Hello(_)
            | Record::Module(_)
            | Record::ModuleUnload(_)
            | Record::Stack(_)
            | Record::PyCode(_) => None,
        }
    }

    fn ts_slot(&self) -> Option<&Timestamp> {
        match self {
            Record::Alloc(a) => Some(&a.ts),
            Record::Free(f) => Some(&f.ts),
            Record::GpuAlloc(a) => Some(&a.ts),
            Record::Pool(p) => Some(&p.ts),
            Record::Capture(c) => Some(&c.ts),
            Record::Heap(h) => Some(&h.ts),
            Record::TorchBlock(b) => Some(&b.ts),
            Record::TorchState(t) => Some(&t.ts),
            Record::Fork(f) => Some(&f.ts),
            Record::Dropped(d) => Some(&d.ts),
            Record::End(e) => Some(&e.ts),
            Record::Machine(m) => Some(&m.ts),
            Record::Hello(_)
            | Record::Module(_)
            | Record::ModuleUnload(_)
            | Record::Stack(_)
            | Record::PyCode(_) => None,
        }
    }
}
