//! The machine's black-box series: host memory in use (`MemTotal` − `MemAvailable`) and
//! each GPU's used memory (NVML), from the readings `leakscope run` took at every interval,
//! as medians of 60-second windows (or the readings themselves once they are that sparse,
//! in a long run's thinned series).

use crate::analysis::aging::series::{median, Prepared};
use crate::analysis::aging::RESIDENT_WINDOW_NS;
use leakscope_protocol::MachineReading;

/// What a machine series measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MachineFigure {
    /// `MemTotal` − `MemAvailable`.
    HostUsed,
    /// Used memory of the GPU with this NVML index.
    GpuUsed(u32),
}

impl MachineFigure {
    /// The figure in `r` (`None`: the reading lacks it).
    pub fn of(self, r: &MachineReading) -> Option<u64> {
        match self {
            MachineFigure::HostUsed => {
                (r.mem_total > 0).then(|| r.mem_total.saturating_sub(r.mem_available))
            }
            MachineFigure::GpuUsed(index) => {
                r.gpus.iter().find(|g| g.index == index).map(|g| g.used)
            }
        }
    }
}

/// The figures the readings have: host memory, and every GPU any reading named.
pub fn figures<'a>(readings: impl Iterator<Item = &'a MachineReading>) -> Vec<MachineFigure> {
    let mut gpus: Vec<u32> = Vec::new();
    let mut host = false;
    for r in readings {
        host |= r.mem_total > 0;
        for g in &r.gpus {
            if !gpus.contains(&g.index) {
                gpus.push(g.index);
            }
        }
    }
    gpus.sort_unstable();
    host.then_some(MachineFigure::HostUsed)
        .into_iter()
        .chain(gpus.into_iter().map(MachineFigure::GpuUsed))
        .collect()
}

/// `figure` over the readings stamped at or after `from_ns`, as window medians.
pub fn series<'a>(
    readings: impl Iterator<Item = &'a MachineReading>,
    figure: MachineFigure,
    from_ns: u64,
) -> Prepared {
    let points: Vec<(u64, f64)> = readings
        .filter(|r| r.ts.0 >= from_ns)
        .filter_map(|r| figure.of(r).map(|v| (r.ts.0, v as f64)))
        .collect();
    let Some(&(t0, _)) = points.first() else {
        return Prepared::default();
    };
    let mut gaps: Vec<u64> = points
        .windows(2)
        .map(|w| w[1].0.saturating_sub(w[0].0))
        .collect();
    gaps.sort_unstable();
    let spacing = gaps.get(gaps.len() / 2).copied().unwrap_or(0);
    let window = RESIDENT_WINDOW_NS.max(spacing).max(1);
    let mut windows: Vec<(u64, Vec<f64>)> = Vec::new();
    for (ts, v) in points {
        let k = (ts - t0) / window;
        match windows.last_mut() {
            Some((last, values)) if *last == k => values.push(v),
            _ => windows.push((k, vec![v])),
        }
    }
    let values = windows
        .into_iter()
        .map(|(_, mut w)| median(&mut w))
        .collect();
    Prepared {
        values,
        step_ns: window,
        start_ns: t0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leakscope_protocol::{GpuMemory, Timestamp};

    fn reading(ts_s: u64, used: u64, gpu_used: Option<u64>) -> MachineReading {
        MachineReading {
            ts: Timestamp(ts_s * 1_000_000_000),
            mem_total: 1_000_000,
            mem_available: 1_000_000 - used,
            cgroup: None,
            gpus: gpu_used
                .map(|u| GpuMemory {
                    index: 2,
                    uuid: "GPU-x".into(),
                    total: 10_000,
                    used: u,
                    free: 10_000 - u,
                })
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn medians_of_minutes_after_the_warm_up() {
        // Readings every 10 s for 5 minutes; host use climbs by 1 per reading, with one
        // outlier that the median hides.
        let readings: Vec<MachineReading> = (0..30u64)
            .map(|i| {
                reading(
                    i * 10,
                    if i == 7 { 999 } else { i },
                    (i >= 6).then_some(100 + i),
                )
            })
            .collect();
        assert_eq!(
            figures(readings.iter()),
            vec![MachineFigure::HostUsed, MachineFigure::GpuUsed(2)]
        );
        let host = series(readings.iter(), MachineFigure::HostUsed, 0);
        assert_eq!(host.step_ns, 60_000_000_000);
        assert_eq!(host.values, vec![2.5, 9.5, 14.5, 20.5, 26.5]);
        let late = series(readings.iter(), MachineFigure::HostUsed, 120_000_000_000);
        assert_eq!(late.values.len(), 3);
        assert_eq!(late.start_ns, 120_000_000_000);
        let gpu = series(readings.iter(), MachineFigure::GpuUsed(2), 0);
        assert_eq!(gpu.values, vec![108.5, 114.5, 120.5, 126.5]);
        assert!(series(readings.iter(), MachineFigure::GpuUsed(5), 0)
            .values
            .is_empty());
    }

    #[test]
    fn sparse_readings_are_their_own_windows() {
        let readings: Vec<MachineReading> = (0..10u64).map(|i| reading(i * 600, i, None)).collect();
        let s = series(readings.iter(), MachineFigure::HostUsed, 0);
        assert_eq!(s.step_ns, 600_000_000_000);
        assert_eq!(s.values.len(), 10);
    }
}
