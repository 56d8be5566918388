//! leakscope's protocol: everything the shim (inside the target process) and the
//! collector (the `leakscope` binary) must agree on.
//!
//! - [`ids`]: newtypes for process, thread, stack and module ids, runtime addresses,
//!   module-relative offsets and timestamps.
//! - [`api`]: the intercepted functions (C heap, mappings, CUDA runtime and driver) and
//!   which GPU address space each one's address names.
//! - [`event`]: the records a shim sends (`Hello`, module maps, stacks, allocations,
//!   frees, forks, drop counts, end of stream).
//! - [`gpu`]: the GPU records (allocations with their device, stream-ordered pool usage,
//!   CUDA-graph capture windows).
//! - [`python`]: the Python frames of a stack and the code objects they name.
//! - [`heap`]: readings of the C heap's arenas and the process's resident memory.
//! - [`machine`]: the collector's readings of the machine's memory (host, cgroup, GPUs).
//! - [`torch`]: PyTorch caching-allocator blocks and segments.
//! - [`wire`]: the only encoder and the only decoder of the byte stream (versioned header,
//!   length-prefixed frames). Nothing else in the workspace knows a byte offset.
//! - [`env`](mod@env): the environment variables through which `leakscope run` configures the shim.

pub mod api;
pub mod env;
pub mod event;
pub mod gpu;
pub mod heap;
pub mod ids;
pub mod machine;
pub mod python;
pub mod torch;
pub mod wire;

pub use event::*;
pub use ids::*;

/// A fingerprint of this crate's source, computed at build time. The shim sends it in
/// [`event::Hello`]; a collector seeing another value knows the two were built apart.
pub const BUILD_FINGERPRINT: u64 = include!(concat!(env!("OUT_DIR"), "/fingerprint.rs"));
