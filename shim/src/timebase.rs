//! Turns raw event timestamps into `CLOCK_MONOTONIC` nanoseconds on the sender thread.
//! With the TSC, the map is piecewise linear: each recalibration starts a new segment where
//! the previous one ends, with a slope that absorbs the drift against the real clock over
//! about one interval. The map is therefore continuous and strictly increasing, and a
//! timestamp converts to the same value whenever it is converted: the order of raw readings
//! (which the collector relies on across threads) survives conversion.

use crate::record::clock;
use std::collections::VecDeque;

/// Segments kept; older timestamps extrapolate from the oldest one.
const MAX_SEGMENTS: usize = 256;
/// Nanoseconds between recalibrations.
const RECALIBRATE_NS: u64 = 100_000_000;

#[derive(Clone, Copy, Debug)]
struct Segment {
    raw: u64,
    ns: u64,
    /// Nanoseconds per tick, 32.32 fixed point.
    mult: u64,
}

impl Segment {
    fn eval(&self, raw: u64) -> u64 {
        if raw >= self.raw {
            let d = ((raw - self.raw) as u128 * self.mult as u128) >> 32;
            self.ns.saturating_add(d as u64)
        } else {
            let d = ((self.raw - raw) as u128 * self.mult as u128) >> 32;
            self.ns.saturating_sub(d as u64)
        }
    }
}

/// The raw-to-nanoseconds map of one stream.
pub struct Timebase {
    tsc: bool,
    origin_raw: u64,
    origin_ns: u64,
    segments: VecDeque<Segment>,
    last_calibration_ns: u64,
    /// Largest raw value converted so far: segments start after it, so no converted value
    /// ever changes.
    max_converted: u64,
}

impl Timebase {
    /// A map anchored at a (raw, ns) pair read together when the session started. With
    /// `tsc` false raw values already are nanoseconds.
    pub fn new(tsc: bool, origin_raw: u64, origin_ns: u64) -> Timebase {
        Timebase {
            tsc,
            origin_raw,
            origin_ns,
            segments: VecDeque::new(),
            last_calibration_ns: origin_ns,
            max_converted: 0,
        }
    }

    /// Converts one raw timestamp.
    pub fn convert(&mut self, raw: u64) -> u64 {
        if !self.tsc {
            return raw;
        }
        if self.segments.is_empty() {
            let (r, n) = sample();
            self.calibrate(r, n);
        }
        self.max_converted = self.max_converted.max(raw);
        let Some(first) = self.segments.front() else {
            return self.origin_ns;
        };
        let seg = self
            .segments
            .iter()
            .rev()
            .find(|s| s.raw <= raw)
            .unwrap_or(first);
        seg.eval(raw)
    }

    /// The current time on this map.
    pub fn now_ns(&mut self) -> u64 {
        let raw = clock::now();
        self.convert(raw)
    }

    /// Recalibrates when an interval has passed since the last time.
    pub fn tick(&mut self) {
        if self.tsc
            && clock::monotonic_ns().saturating_sub(self.last_calibration_ns) >= RECALIBRATE_NS
        {
            let (r, n) = sample();
            self.calibrate(r, n);
        }
    }

    /// Starts a new segment at `(raw, ns)`, a reading of both clocks taken together.
    pub fn calibrate(&mut self, raw: u64, ns: u64) {
        if raw <= self.origin_raw || ns <= self.origin_ns {
            return;
        }
        self.last_calibration_ns = ns;
        let est = ((((ns - self.origin_ns) as u128) << 32) / (raw - self.origin_raw) as u128)
            .clamp(1, u64::MAX as u128) as u64;
        let Some(last) = self.segments.back().copied() else {
            self.segments.push_back(Segment {
                raw: self.origin_raw,
                ns: self.origin_ns,
                mult: est,
            });
            return;
        };
        if raw <= last.raw || raw <= self.max_converted {
            return;
        }
        let at = last.eval(raw);
        // Absorb the error over an interval as long as the last segment.
        let err = ns as i128 - at as i128;
        let horizon = (raw - last.raw) as i128;
        let mult = (est as i128 + (err << 32) / horizon)
            .clamp((est / 2).max(1) as i128, est as i128 * 2) as u64;
        self.segments.push_back(Segment { raw, ns: at, mult });
        if self.segments.len() > MAX_SEGMENTS {
            self.segments.pop_front();
        }
    }
}

/// Reads the raw clock and the monotonic clock as close together as three tries allow.
fn sample() -> (u64, u64) {
    let mut best = (u64::MAX, 0, 0);
    for _ in 0..3 {
        let a = clock::now();
        let ns = clock::monotonic_ns();
        let b = clock::now();
        let gap = b.saturating_sub(a);
        if gap < best.0 {
            best = (gap, a + gap / 2, ns);
        }
    }
    (best.1, best.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic TSC at 3 ticks per ns whose "real clock" runs `ppm` fast.
    fn real_ns(raw: u64, ppm: i64) -> u64 {
        let base = raw / 3;
        (base as i64 + base as i64 * ppm / 1_000_000) as u64
    }

    #[test]
    fn conversion_is_monotonic_and_stable_across_recalibrations() {
        let mut tb = Timebase::new(true, 3_000, 1_000);
        tb.calibrate(3_003_000, 1_001_003); // a slightly wrong first estimate
        let mut seen = Vec::new();
        let mut raw = 3_003_000;
        for _ in 0..40 {
            for _ in 0..50 {
                raw += 6_000_007;
                seen.push((raw, tb.convert(raw)));
            }
            raw += 1;
            tb.calibrate(raw, real_ns(raw, 200));
        }
        for w in seen.windows(2) {
            assert!(w[1].1 > w[0].1, "not increasing at raw {}", w[1].0);
        }
        for &(r, v) in &seen {
            assert_eq!(tb.convert(r), v, "value of raw {r} changed");
        }
        // A calibration behind an already converted value is ignored.
        let n = tb.segments.len();
        tb.calibrate(raw - 10, real_ns(raw - 10, 200));
        assert_eq!(tb.segments.len(), n);
    }

    #[test]
    fn tracks_the_real_clock() {
        let mut tb = Timebase::new(true, 0, 0);
        let ppm = 150;
        for k in 1..50u64 {
            let raw = k * 300_000_000; // 100 ms steps
            tb.calibrate(raw, real_ns(raw, ppm));
        }
        let raw = 50 * 300_000_000;
        let err = tb.convert(raw) as i64 - real_ns(raw, ppm) as i64;
        assert!(err.abs() < 2_000, "off by {err} ns after 5 s");
    }

    #[test]
    fn plain_clock_is_identity() {
        let mut tb = Timebase::new(false, 0, 0);
        assert_eq!(tb.convert(123_456_789), 123_456_789);
    }

    #[test]
    fn live_clock_is_close_to_monotonic() {
        clock::init();
        let (raw0, ns0) = sample();
        let mut tb = Timebase::new(clock::uses_tsc(), raw0, ns0);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let raw = clock::now();
        let ns = clock::monotonic_ns();
        let v = tb.convert(raw);
        assert!((v as i64 - ns as i64).abs() < 200_000, "{v} vs {ns}");
    }
}
