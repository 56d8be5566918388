//! Newtypes for identifiers and addresses, so a runtime address is never confused with a
//! module-relative offset and a stack id never with a thread id.

use bincode::{Decode, Encode};
use std::fmt;

macro_rules! newtype {
    ($(#[$m:meta])* $name:ident($inner:ty)) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Encode, Decode, serde::Serialize, serde::Deserialize)]
        pub struct $name(pub $inner);
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }
    };
}

newtype!(
    /// An operating-system process id.
    Pid(u32)
);
newtype!(
    /// A kernel thread id (`gettid`), unique within a process while the thread lives.
    ThreadId(u32)
);
newtype!(
    /// Identifies one distinct call stack within one stream. Defined by a
    /// [`crate::StackDef`] record before any record refers to it.
    StackId(u32)
);
newtype!(
    /// Identifies one loaded module (executable or shared object) within one stream.
    ModuleId(u32)
);
newtype!(
    /// A CUDA device ordinal, as the process numbers its visible devices.
    DeviceOrdinal(u32)
);
newtype!(
    /// A stream-ordered memory pool (`CUmemoryPool`/`cudaMemPool_t`), as the driver's
    /// opaque handle value in the target process.
    PoolHandle(u64)
);
newtype!(
    /// Identifies one Python code object within one stream. Defined by a
    /// [`crate::PyCode`] record before any stack refers to it.
    CodeKey(u64)
);
newtype!(
    /// Nanoseconds of `CLOCK_MONOTONIC`: shared by every process on the machine, so parent
    /// and child streams line up.
    Timestamp(u64)
);

/// An address in the target process's address space (framehop's "AVMA").
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Encode,
    Decode,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct RuntimeAddr(pub u64);

/// An offset into a module's file, as symbolizers look it up (not a runtime address).
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Encode,
    Decode,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct FileOffset(pub u64);

impl fmt::Debug for RuntimeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RuntimeAddr({:#x})", self.0)
    }
}
impl fmt::Debug for FileOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileOffset({:#x})", self.0)
    }
}

impl Timestamp {
    /// Nanoseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}
