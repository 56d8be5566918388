//! leakscope's `LD_PRELOAD` shim: intercepts the program's allocations and streams them to
//! the collector over a Unix socket (see `docs/architecture.md`).
//!
//! - `hooks/`: the exported C functions (one table for the C library, one for CUDA), each
//!   guard -> real call -> record.
//! - `cuda/`: where CUDA hooks' real functions come from, wrapper slots for pointers that
//!   resolvers hand out, and driver queries (device, pool).
//! - `real`, `bootstrap`: the real functions behind the hooks, and the arena that serves
//!   allocations while they are looked up.
//! - `alloc`: the shim's own allocator (the real functions, never recorded).
//! - `record/`: per-thread state, timestamps, event buffers and stack dedup.
//! - `unwind/`: stack capture and module maps.
//! - `python/`: CPython's frames in captured stacks (interpreter discovery, frame walk,
//!   code-object definitions).
//! - `channel`, `sender`, `convert`, `timebase`, `transport`: from buffers to the
//!   socket; `heapstate`: the heap and resident-memory readings the sender takes.
//! - `session`, `fork`, `diag`, `env`: lifecycle, configuration and the one stderr line.
//! - `torch/`: the C API of PyTorch block tracking (block events, allocator readings).
//!
//! Nothing in the shim may panic or abort the program (`panic = "abort"` is set in the
//! workspace profiles): hook paths use no `unwrap`, and allocations there fail softly.

// The unit-test harness has neither the hooks nor the constructor (it must run as a normal
// process), so the paths only they reach look unused there.
#![cfg_attr(test, allow(dead_code))]

mod alloc;
mod bootstrap;
mod channel;
mod convert;
mod cuda;
mod diag;
mod env;
mod fork;
mod heapstate;
#[cfg(not(test))]
mod hooks;
mod python;
mod real;
mod record;
mod sender;
mod session;
mod side;
mod timebase;
mod tls;
mod torch;
mod transport;
mod unwind;

#[cfg(not(test))]
#[global_allocator]
static GLOBAL: alloc::RealAlloc = alloc::RealAlloc;

/// Starts the session when the library is loaded (before the program's `main`).
#[cfg(not(test))]
#[ctor::ctor(unsafe)]
fn leakscope_init() {
    session::init();
}
