//! leakscope's protocol: everything the shim (inside the target process) and the
//! collector (the `leakscope` binary) must agree on.
//!
//! - [`ids`]: newtypes for process, thread, stack and module ids, runtime addresses,
//!   module-relative offsets and timestamps.
//! - [`event`]: the records a shim sends (`Hello`, module maps, stacks, allocations,
//!   frees, forks, drop counts, end of stream).
//! - [`wire`]: the only encoder and the only decoder of the byte stream (versioned header,
//!   length-prefixed frames). Nothing else in the workspace knows a byte offset.
//! - [`env`](mod@env): the environment variables through which `leakscope run` configures the shim.

pub mod env;
pub mod event;
pub mod ids;
pub mod wire;

pub use event::*;
pub use ids::*;

/// A fingerprint of this crate's source, computed at build time. The shim sends it in
/// [`event::Hello`]; a collector seeing another value knows the two were built apart.
pub const BUILD_FINGERPRINT: u64 = include!(concat!(env!("OUT_DIR"), "/fingerprint.rs"));
