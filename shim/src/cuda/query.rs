//! Questions the shim asks the CUDA driver about memory a hook just saw: which device a
//! pointer or a handle lives on, which stream-ordered pool served a pointer, and what that
//! pool holds. Every function here is called with the reentrancy guard held, after the
//! program's own call succeeded (so the driver is loaded and initialised); each answers
//! `None` when the driver cannot be asked, and the record goes without the fact.

use super::slots::{CudaReal, Lib};
use cudarc::driver::sys::{CUmemLocationType, CUmemPool_attribute, CUpointer_attribute};
use leakscope_protocol::MemoryKind;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicU64, Ordering};

const CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL: c_int =
    CUpointer_attribute::CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL as c_int;
const CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE: c_int =
    CUpointer_attribute::CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE as c_int;
const CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT: c_int =
    CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT as c_int;
const CU_MEMPOOL_ATTR_USED_MEM_CURRENT: c_int =
    CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_CURRENT as c_int;
const CU_MEM_LOCATION_TYPE_DEVICE: c_int = CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE as c_int;

type PointerGetAttributeFn = unsafe extern "C" fn(*mut c_void, c_int, u64) -> c_int;
type CtxGetDeviceFn = unsafe extern "C" fn(*mut c_int) -> c_int;
type PoolGetAttributeFn = unsafe extern "C" fn(u64, c_int, *mut c_void) -> c_int;
type PropertiesFromHandleFn = unsafe extern "C" fn(*mut AllocProp, u64) -> c_int;

static POINTER_GET_ATTRIBUTE: CudaReal = CudaReal::new(c"cuPointerGetAttribute", Lib::Driver);
static CTX_GET_DEVICE: CudaReal = CudaReal::new(c"cuCtxGetDevice", Lib::Driver);
static POOL_GET_ATTRIBUTE: CudaReal = CudaReal::new(c"cuMemPoolGetAttribute", Lib::Driver);
static PROPERTIES_FROM_HANDLE: CudaReal =
    CudaReal::new(c"cuMemGetAllocationPropertiesFromHandle", Lib::Driver);

/// `CUmemAllocationProp` (and the leading fields of `CUmemPoolProps`, which share them), with
/// plain integers where cudarc's binding has enums: a caller may pass a value newer than
/// the binding knows, which must not become an invalid Rust enum. Only the location is
/// read; the layout is checked against cudarc's in the tests.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AllocProp {
    pub alloc_type: c_int,
    pub handle_types: c_int,
    pub location_type: c_int,
    pub location_id: c_int,
    pub win32_metadata: usize,
    pub alloc_flags: [u8; 8],
}

/// Where memory described by `prop` lives: device memory on a device, or pinned host
/// memory (any host location).
pub fn location(prop: &AllocProp) -> (MemoryKind, Option<u32>) {
    if prop.location_type == CU_MEM_LOCATION_TYPE_DEVICE {
        (MemoryKind::Device, u32::try_from(prop.location_id).ok())
    } else {
        (MemoryKind::Pinned, None)
    }
}

/// The memory location of a physical allocation handle.
pub fn handle_location(handle: u64) -> Option<(MemoryKind, Option<u32>)> {
    let f = PROPERTIES_FROM_HANDLE.get::<PropertiesFromHandleFn>()?;
    let mut prop = AllocProp::default();
    // SAFETY: `prop` is a writable CUmemAllocationProp-sized struct; the driver validates
    // the handle.
    (unsafe { f(&mut prop, handle) } == 0).then(|| location(&prop))
}

/// The device a (device or managed) pointer lives on, else the calling thread's current
/// device.
pub fn device_of(ptr: u64) -> Option<u32> {
    if let Some(f) = POINTER_GET_ATTRIBUTE.get::<PointerGetAttributeFn>() {
        let mut ordinal: c_int = -1;
        // SAFETY: the attribute writes one int; the driver validates the pointer.
        let rc = unsafe {
            f(
                (&mut ordinal as *mut c_int).cast(),
                CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
                ptr,
            )
        };
        if rc == 0 {
            if let Ok(d) = u32::try_from(ordinal) {
                return Some(d);
            }
        }
    }
    current_device()
}

/// The calling thread's current device.
pub fn current_device() -> Option<u32> {
    let f = CTX_GET_DEVICE.get::<CtxGetDeviceFn>()?;
    let mut d: c_int = -1;
    // SAFETY: writes one int.
    (unsafe { f(&mut d) } == 0)
        .then_some(d)
        .and_then(|d| u32::try_from(d).ok())
}

/// The stream-ordered pool a pointer was allocated from.
pub fn pool_of(ptr: u64) -> Option<u64> {
    let f = POINTER_GET_ATTRIBUTE.get::<PointerGetAttributeFn>()?;
    let mut pool: u64 = 0;
    // SAFETY: the attribute writes one pool handle (pointer-sized).
    let rc = unsafe {
        f(
            (&mut pool as *mut u64).cast(),
            CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE,
            ptr,
        )
    };
    (rc == 0 && pool != 0).then_some(pool)
}

/// A pool's reserved and used bytes.
pub fn pool_usage(pool: u64) -> Option<(u64, u64)> {
    let f = POOL_GET_ATTRIBUTE.get::<PoolGetAttributeFn>()?;
    let (mut reserved, mut used) = (0u64, 0u64);
    // SAFETY: both attributes write one cuuint64_t; the driver validates the pool.
    let ok = unsafe {
        f(
            pool,
            CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT,
            (&mut reserved as *mut u64).cast(),
        ) == 0
            && f(
                pool,
                CU_MEMPOOL_ATTR_USED_MEM_CURRENT,
                (&mut used as *mut u64).cast(),
            ) == 0
    };
    ok.then_some((reserved, used))
}

/// Pools whose last reading is remembered, for [`reading_due`].
const READING_SLOTS: usize = 16;
/// Least time between two readings of one pool after allocations and frees.
const READING_INTERVAL_NS: u64 = 1_000_000;

struct LastReading {
    pool: AtomicU64,
    at: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const NEVER: LastReading = LastReading {
    pool: AtomicU64::new(0),
    at: AtomicU64::new(0),
};
static LAST_READINGS: [LastReading; READING_SLOTS] = [NEVER; READING_SLOTS];

/// Whether a pool reading after an allocation or free is due at `now_ns` (at most one per
/// pool per millisecond; two pools sharing a slot only make readings more frequent).
pub fn reading_due(pool: u64, now_ns: u64) -> bool {
    let slot = &LAST_READINGS[(pool.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 60) as usize];
    if slot.pool.swap(pool, Ordering::Relaxed) != pool {
        slot.at.store(now_ns, Ordering::Relaxed);
        return true;
    }
    let at = slot.at.load(Ordering::Relaxed);
    if now_ns.saturating_sub(at) >= READING_INTERVAL_NS || now_ns < at {
        slot.at.store(now_ns, Ordering::Relaxed);
        return true;
    }
    false
}

/// `CLOCK_MONOTONIC` in nanoseconds (a vDSO read, no system call).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes the timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prop_layout_matches_cuda() {
        use cudarc::driver::sys::{CUmemAllocationProp, CUmemLocation, CUmemPoolProps};
        use std::mem::{offset_of, size_of};
        assert_eq!(size_of::<AllocProp>(), size_of::<CUmemAllocationProp>());
        let location = offset_of!(CUmemAllocationProp, location);
        assert_eq!(offset_of!(AllocProp, location_type), location);
        assert_eq!(
            offset_of!(AllocProp, location_id),
            location + offset_of!(CUmemLocation, id)
        );
        assert_eq!(offset_of!(CUmemPoolProps, location), location);
        assert!(size_of::<CUmemPoolProps>() >= size_of::<AllocProp>());
    }

    #[test]
    fn location_device_or_host() {
        let mut p = AllocProp {
            location_type: 1,
            location_id: 2,
            ..AllocProp::default()
        };
        assert_eq!(location(&p), (MemoryKind::Device, Some(2)));
        p.location_type = 2;
        assert_eq!(location(&p), (MemoryKind::Pinned, None));
    }

    #[test]
    fn readings_are_rate_limited_per_pool() {
        let pool = 0xabc0_0000_1234;
        assert!(reading_due(pool, 10_000_000_000));
        assert!(!reading_due(pool, 10_000_500_000));
        assert!(reading_due(pool, 10_001_000_000));
        assert!(!reading_due(pool, 10_001_000_001));
    }

    #[test]
    fn no_driver_means_no_answer() {
        assert_eq!(pool_usage(1), None);
        assert_eq!(pool_of(0x1000), None);
        assert_eq!(handle_location(7), None);
        assert_eq!(device_of(0x1000), None);
    }
}
