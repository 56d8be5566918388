//! The machine sampler's only foreign calls: NVML (`libnvidia-ml.so.1`), loaded at run time
//! with `dlopen` so that leakscope neither links against it nor needs it, and the monotonic
//! clock the shim stamps its events with. Every `unsafe` block of the sampler is here.
//!
//! cudarc 0.19 (the workspace's CUDA binding) has no NVML module, hence the few entry
//! points declared by hand below, from `nvml.h`.

use leakscope_protocol::{GpuMemory, Timestamp};
use std::ffi::{c_char, c_uint, c_ulonglong, c_void, CStr};

/// `CLOCK_MONOTONIC` now, in nanoseconds (the clock of the shim's event timestamps); 0 if
/// the clock cannot be read (it always can on Linux).
pub fn monotonic_now() -> Timestamp {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable `timespec` for the duration of the call, and
    // CLOCK_MONOTONIC is a clock id every Linux kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return Timestamp(0);
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    Timestamp(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

/// The NVML library leakscope looks for.
const LIBRARY: &CStr = c"libnvidia-ml.so.1";
/// `NVML_SUCCESS`.
const SUCCESS: c_uint = 0;
/// `NVML_DEVICE_UUID_V2_BUFFER_SIZE`: room for any UUID and its terminating NUL.
const UUID_BUFFER: usize = 96;

/// `nvmlDevice_t`: an opaque handle.
type Device = *mut c_void;

/// `nvmlMemory_t` (bytes).
#[repr(C)]
#[derive(Default)]
struct Memory {
    total: c_ulonglong,
    free: c_ulonglong,
    used: c_ulonglong,
}

type InitFn = unsafe extern "C" fn() -> c_uint;
type ShutdownFn = unsafe extern "C" fn() -> c_uint;
type CountFn = unsafe extern "C" fn(*mut c_uint) -> c_uint;
type HandleFn = unsafe extern "C" fn(c_uint, *mut Device) -> c_uint;
type MemoryFn = unsafe extern "C" fn(Device, *mut Memory) -> c_uint;
type UuidFn = unsafe extern "C" fn(Device, *mut c_char, c_uint) -> c_uint;

/// NVML, loaded and initialized; shut down when dropped. Not `Send`: it is opened and used
/// on the sampler thread only.
pub struct Nvml {
    shutdown: ShutdownFn,
    count: CountFn,
    handle: HandleFn,
    memory: MemoryFn,
    uuid: UuidFn,
    /// Keeps the library's handle (and so the function pointers above) alive.
    _lib: *mut c_void,
}

impl std::fmt::Debug for Nvml {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Nvml")
    }
}

impl Nvml {
    /// Loads and initializes NVML. `Err` says why not (no library: no NVIDIA driver); it
    /// prints nothing either way.
    pub fn open() -> Result<Nvml, String> {
        // SAFETY: `LIBRARY` is a NUL-terminated string; dlopen has no other precondition.
        // Loading runs the library's initializers, which is what loading NVML is for.
        let lib = unsafe { libc::dlopen(LIBRARY.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if lib.is_null() {
            return Err(format!("{} could not be loaded", LIBRARY.to_string_lossy()));
        }
        let sym = |name: &CStr| -> Result<*mut c_void, String> {
            // SAFETY: `lib` is a live handle from dlopen (never closed), `name` is
            // NUL-terminated.
            let p = unsafe { libc::dlsym(lib, name.as_ptr()) };
            if p.is_null() {
                Err(format!("NVML has no {}", name.to_string_lossy()))
            } else {
                Ok(p)
            }
        };
        let (init, shutdown, count, handle, memory, uuid) = (
            sym(c"nvmlInit_v2")?,
            sym(c"nvmlShutdown")?,
            sym(c"nvmlDeviceGetCount_v2")?,
            sym(c"nvmlDeviceGetHandleByIndex_v2")?,
            sym(c"nvmlDeviceGetMemoryInfo")?,
            sym(c"nvmlDeviceGetUUID")?,
        );
        // SAFETY: each symbol is the NVML entry point of that name, whose C signature (from
        // nvml.h) is the function type it is turned into; all are non-null.
        let nvml = unsafe {
            Nvml {
                shutdown: std::mem::transmute::<*mut c_void, ShutdownFn>(shutdown),
                count: std::mem::transmute::<*mut c_void, CountFn>(count),
                handle: std::mem::transmute::<*mut c_void, HandleFn>(handle),
                memory: std::mem::transmute::<*mut c_void, MemoryFn>(memory),
                uuid: std::mem::transmute::<*mut c_void, UuidFn>(uuid),
                _lib: lib,
            }
        };
        // SAFETY: as above for `init`, which takes no arguments.
        let rc = unsafe { std::mem::transmute::<*mut c_void, InitFn>(init)() };
        if rc != SUCCESS {
            // `nvml` is dropped without being initialized: do not shut it down.
            std::mem::forget(nvml);
            return Err(format!("nvmlInit_v2 failed (NVML error {rc})"));
        }
        Ok(nvml)
    }

    /// Every device's memory, by index; a device NVML will not describe is an `Err` in its
    /// place.
    pub fn devices(&self) -> Result<Vec<Result<GpuMemory, String>>, String> {
        let mut count: c_uint = 0;
        // SAFETY: NVML is initialized; `count` is a valid, writable unsigned int.
        let rc = unsafe { (self.count)(&mut count) };
        if rc != SUCCESS {
            return Err(format!("nvmlDeviceGetCount_v2 failed (NVML error {rc})"));
        }
        Ok((0..count).map(|i| self.device(i)).collect())
    }

    fn device(&self, index: c_uint) -> Result<GpuMemory, String> {
        let mut device: Device = std::ptr::null_mut();
        // SAFETY: NVML is initialized; `index` is below the device count; `device` is a
        // valid, writable handle slot.
        let rc = unsafe { (self.handle)(index, &mut device) };
        if rc != SUCCESS {
            return Err(format!(
                "GPU {index}: nvmlDeviceGetHandleByIndex_v2 failed (NVML error {rc})"
            ));
        }
        let mut mem = Memory::default();
        // SAFETY: `device` is a handle NVML just gave; `mem` is a valid, writable
        // `nvmlMemory_t` (v1 layout, which this entry point fills).
        let rc = unsafe { (self.memory)(device, &mut mem) };
        if rc != SUCCESS {
            return Err(format!(
                "GPU {index}: nvmlDeviceGetMemoryInfo failed (NVML error {rc})"
            ));
        }
        let mut buf: [c_char; UUID_BUFFER] = [0; UUID_BUFFER];
        // SAFETY: `device` is valid; `buf` is writable for the length passed, which NVML
        // does not exceed (it NUL-terminates within it).
        let rc = unsafe { (self.uuid)(device, buf.as_mut_ptr(), UUID_BUFFER as c_uint) };
        let uuid = if rc == SUCCESS {
            let bytes: Vec<u8> = buf
                .iter()
                .take_while(|&&c| c != 0)
                .map(|&c| c as u8)
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            String::new()
        };
        Ok(GpuMemory {
            index,
            uuid,
            total: mem.total,
            used: mem.used,
            free: mem.free,
        })
    }
}

impl Drop for Nvml {
    fn drop(&mut self) {
        // SAFETY: NVML was initialized by `open` (once per `Nvml`), so one shutdown is
        // due. The library itself stays loaded: NVML may keep threads of its own, and the
        // collector exits soon after.
        unsafe { (self.shutdown)() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_moves_forward() {
        let a = monotonic_now();
        let b = monotonic_now();
        assert!(a.0 > 0);
        assert!(b >= a);
    }

    #[test]
    fn nvml_opens_or_says_why_not() {
        // Without an NVIDIA driver (CI, this machine) opening fails quietly; with one, every
        // device reports consistent figures.
        match Nvml::open() {
            Err(why) => assert!(!why.is_empty()),
            Ok(nvml) => {
                for d in nvml.devices().unwrap_or_default().into_iter().flatten() {
                    assert!(d.used <= d.total, "{d:?}");
                }
            }
        }
    }
}
