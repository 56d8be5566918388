//! Event timestamps as hooking threads take them: the TSC on x86_64 when it is invariant
//! (a few nanoseconds), `CLOCK_MONOTONIC` nanoseconds otherwise. The sender thread turns
//! TSC readings into monotonic nanoseconds (`crate::timebase`).

use std::sync::atomic::{AtomicBool, Ordering};

static USE_TSC: AtomicBool = AtomicBool::new(false);

/// Chooses the clock; call before any session becomes active.
pub fn init() {
    USE_TSC.store(tsc_is_usable(), Ordering::Relaxed);
}

/// Whether [`now`] returns TSC ticks (else monotonic nanoseconds).
pub fn uses_tsc() -> bool {
    USE_TSC.load(Ordering::Relaxed)
}

/// The current event timestamp, for events recorded after a call returned (allocations).
/// Fenced so that it cannot be read before the call's loads completed: the collector orders
/// one address's events across threads by these values.
#[inline(always)]
pub fn now() -> u64 {
    #[cfg(target_arch = "x86_64")]
    if USE_TSC.load(Ordering::Relaxed) {
        // SAFETY: LFENCE and RDTSC exist on every x86_64 CPU and touch no memory.
        return unsafe {
            core::arch::x86_64::_mm_lfence();
            core::arch::x86_64::_rdtsc()
        };
    }
    monotonic_ns()
}

/// The current event timestamp, for events recorded before the call that releases memory
/// (frees). No fence is needed: RDTSC executes before it retires, and the release's stores
/// become visible to other threads only after that. Half the cost of [`now`].
#[inline(always)]
pub fn now_before_release() -> u64 {
    #[cfg(target_arch = "x86_64")]
    if USE_TSC.load(Ordering::Relaxed) {
        // SAFETY: RDTSC exists on every x86_64 CPU and touches no memory.
        return unsafe { core::arch::x86_64::_rdtsc() };
    }
    monotonic_ns()
}

/// `CLOCK_MONOTONIC` in nanoseconds.
pub fn monotonic_ns() -> u64 {
    read_clock(libc::CLOCK_MONOTONIC)
}

/// `CLOCK_REALTIME` in nanoseconds since the Unix epoch.
pub fn realtime_ns() -> u64 {
    read_clock(libc::CLOCK_REALTIME)
}

fn read_clock(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; the clocks used always exist on Linux.
    unsafe { libc::clock_gettime(id, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// The TSC is usable when it ticks at a constant rate through sleep states (CPUID's
/// invariant-TSC bit) or when the kernel itself keeps time with it.
fn tsc_is_usable() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::__cpuid;
        let invariant =
            __cpuid(0x8000_0000).eax >= 0x8000_0007 && __cpuid(0x8000_0007).edx & (1 << 8) != 0;
        invariant
            || std::fs::read_to_string(
                "/sys/devices/system/clocksource/clocksource0/current_clocksource",
            )
            .is_ok_and(|s| s.trim() == "tsc")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_never_go_backwards_on_one_thread() {
        init();
        let mut last = now();
        for _ in 0..10_000 {
            let t = now();
            assert!(t >= last, "{t} < {last}");
            last = t;
        }
        let a = monotonic_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(monotonic_ns() - a >= 2_000_000);
        assert!(realtime_ns() > 1_600_000_000_000_000_000);
    }
}
