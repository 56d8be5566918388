//! Handlers of stream-ordered pool lifecycles (`cudaMemPoolCreate`, `cudaMemPoolDestroy`,
//! `cudaMemPoolTrimTo` and their driver forms), each followed by a reading of the pool,
//! and of CUDA-graph capture (`cudaStreamBeginCapture`, `cudaStreamEndCapture`), recorded as
//! the window in which a caching allocator's new memory serves the graph's private pool.

use super::memory::pool_reading;
use super::Opaque;
use crate::cuda::query::{self, AllocProp};
use crate::record::Guard;
use leakscope_protocol::{Api, PoolAction};
use libc::{c_int, size_t};

/// `cudaMemPoolCreate`, `cuMemPoolCreate`: `props` starts with the pool's location.
///
/// # Safety
/// The CUDA function's contract.
pub unsafe fn pool_create(
    f: unsafe extern "C" fn(*mut Opaque, *const AllocProp) -> c_int,
    _api: Api,
    out: *mut Opaque,
    props: *const AllocProp,
) -> c_int {
    let Some(g) = Guard::enter() else {
        // SAFETY: forwarding.
        return unsafe { f(out, props) };
    };
    // SAFETY: forwarding.
    let rc = unsafe { f(out, props) };
    if rc == 0 && !out.is_null() {
        // SAFETY: the call succeeded, so it wrote `out`; `props` is the caller's valid
        // pool description (its leading fields are laid out as `AllocProp`'s).
        let (pool, device) = unsafe {
            let device = (!props.is_null())
                .then(|| query::location(&props.read_unaligned()).1)
                .flatten();
            (out.read_unaligned() as u64, device)
        };
        pool_reading(&g, Some(pool), device, PoolAction::Created);
    }
    rc
}

/// `cudaMemPoolDestroy`, `cuMemPoolDestroy`.
///
/// # Safety
/// The CUDA function's contract.
pub unsafe fn pool_destroy(
    f: unsafe extern "C" fn(Opaque) -> c_int,
    _api: Api,
    pool: Opaque,
) -> c_int {
    let g = Guard::enter();
    // SAFETY: forwarding.
    let rc = unsafe { f(pool) };
    if let Some(g) = g.filter(|_| rc == 0) {
        g.pool(pool as u64, None, PoolAction::Destroyed, 0, 0);
    }
    rc
}

/// `cudaMemPoolTrimTo`, `cuMemPoolTrimTo`.
///
/// # Safety
/// The CUDA function's contract.
pub unsafe fn pool_trim(
    f: unsafe extern "C" fn(Opaque, size_t) -> c_int,
    _api: Api,
    pool: Opaque,
    keep: size_t,
) -> c_int {
    let g = Guard::enter();
    // SAFETY: forwarding.
    let rc = unsafe { f(pool, keep) };
    if let Some(g) = g.filter(|_| rc == 0) {
        pool_reading(&g, Some(pool as u64), None, PoolAction::Trimmed);
    }
    rc
}

/// `cudaStreamBeginCapture`, `cuStreamBeginCapture_v2` (and `_ptsz`).
///
/// # Safety
/// The CUDA function's contract.
pub unsafe fn capture_begin(
    f: unsafe extern "C" fn(Opaque, c_int) -> c_int,
    stream: Opaque,
    mode: c_int,
) -> c_int {
    let g = Guard::enter();
    // SAFETY: forwarding.
    let rc = unsafe { f(stream, mode) };
    if let Some(g) = g.filter(|_| rc == 0) {
        g.capture(true);
    }
    rc
}

/// `cudaStreamEndCapture`, `cuStreamEndCapture` (and `_ptsz`): the capture ends whatever
/// the call returns.
///
/// # Safety
/// The CUDA function's contract.
pub unsafe fn capture_end(
    f: unsafe extern "C" fn(Opaque, *mut Opaque) -> c_int,
    stream: Opaque,
    graph: *mut Opaque,
) -> c_int {
    let g = Guard::enter();
    // SAFETY: forwarding.
    let rc = unsafe { f(stream, graph) };
    if let Some(g) = g {
        g.capture(false);
    }
    rc
}
