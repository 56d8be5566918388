//! Time to exhaustion: when the host (its `MemAvailable`, or the cgroup's limit where one
//! applies) and each GPU (its free memory) run out if memory keeps growing at a tested
//! slope, with the interval the slope's confidence interval gives.

use crate::analysis::aging_model::{
    Exhaustion, ExhaustionOf, GpuFigures, MachineFigures, TrendReport,
};
use leakscope_protocol::MachineReading;

/// The machine figures of `reading`, for the report.
pub fn figures(reading: &MachineReading) -> MachineFigures {
    MachineFigures {
        mem_total: reading.mem_total,
        mem_available: reading.mem_available,
        cgroup_limit: reading.cgroup.as_ref().and_then(|c| c.limit),
        cgroup_usage: reading.cgroup.as_ref().map(|c| c.usage),
        gpus: reading
            .gpus
            .iter()
            .map(|g| GpuFigures {
                index: g.index,
                uuid: g.uuid.clone(),
                total: g.total,
                used: g.used,
                free: g.free,
            })
            .collect(),
    }
}

/// When `headroom` bytes are used up at `trend`'s slope: `hours` at the slope, the soonest
/// at the interval's upper end, the latest at its lower end (`None` where that end does not
/// grow).
pub fn at_rate(of: ExhaustionOf, headroom: u64, trend: &TrendReport) -> Exhaustion {
    let hours = |rate: f64| (rate > 0.0 && rate.is_finite()).then(|| headroom as f64 / rate);
    Exhaustion {
        of,
        headroom_bytes: headroom,
        slope_bytes_per_hour: trend.slope_bytes_per_hour,
        significant: trend.significant,
        hours: hours(trend.slope_bytes_per_hour),
        hours_low: hours(trend.ci_high),
        hours_high: hours(trend.ci_low),
    }
}

/// Host exhaustion at `trend`: against `MemAvailable`, and against the cgroup's limit when
/// the reading names one.
pub fn host(reading: &MachineReading, trend: &TrendReport) -> Vec<Exhaustion> {
    let mut out = vec![at_rate(
        ExhaustionOf::HostAvailable,
        reading.mem_available,
        trend,
    )];
    if let Some(cg) = &reading.cgroup {
        if let Some(limit) = cg.limit {
            out.push(at_rate(
                ExhaustionOf::Cgroup,
                limit.saturating_sub(cg.usage),
                trend,
            ));
        }
    }
    out
}

/// GPU exhaustion at `trend` for CUDA device `device`: against the free memory of the GPU
/// NVML numbers the same (CUDA and NVML agree unless `CUDA_VISIBLE_DEVICES` or
/// `CUDA_DEVICE_ORDER` reorder them); `None` when the reading has no such GPU.
pub fn gpu(reading: &MachineReading, device: u32, trend: &TrendReport) -> Option<Exhaustion> {
    let g = reading.gpus.iter().find(|g| g.index == device)?;
    Some(at_rate(ExhaustionOf::Gpu { index: g.index }, g.free, trend))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::trend::shape::Shape;
    use leakscope_protocol::{CgroupMemory, GpuMemory, Timestamp};

    fn trend(slope: f64, low: f64, high: f64) -> TrendReport {
        TrendReport {
            slope_bytes_per_hour: slope,
            ci_low: low,
            ci_high: high,
            p_value: 0.001,
            significant: low > 0.0,
            shape: Shape::Drift,
            basis: None,
        }
    }

    fn reading() -> MachineReading {
        MachineReading {
            ts: Timestamp(1),
            mem_total: 16 << 30,
            mem_available: 8 << 30,
            cgroup: Some(CgroupMemory {
                limit: Some(4 << 30),
                usage: 3 << 30,
            }),
            gpus: vec![GpuMemory {
                index: 0,
                uuid: "GPU-x".into(),
                total: 80 << 30,
                used: 60 << 30,
                free: 20 << 30,
            }],
        }
    }

    #[test]
    fn hours_come_from_the_slope_and_its_interval() {
        let gib = f64::from(1u32 << 30);
        let t = trend(gib, gib / 2.0, 2.0 * gib);
        let host = host(&reading(), &t);
        assert_eq!(host.len(), 2);
        assert_eq!(host[0].of, ExhaustionOf::HostAvailable);
        assert_eq!(host[0].hours, Some(8.0));
        assert_eq!(host[0].hours_low, Some(4.0));
        assert_eq!(host[0].hours_high, Some(16.0));
        assert_eq!(host[1].of, ExhaustionOf::Cgroup);
        assert_eq!(host[1].headroom_bytes, 1 << 30);
        assert_eq!(host[1].hours, Some(1.0));
        let g = gpu(&reading(), 0, &t).unwrap();
        assert_eq!(g.hours, Some(20.0));
        assert!(gpu(&reading(), 1, &t).is_none());
    }

    #[test]
    fn no_growth_never_runs_out() {
        let e = at_rate(ExhaustionOf::HostAvailable, 100, &trend(-5.0, -9.0, 1.0));
        assert_eq!(e.hours, None);
        assert_eq!(e.hours_high, None);
        assert_eq!(e.hours_low, Some(100.0));
        let flat = at_rate(ExhaustionOf::HostAvailable, 100, &trend(0.0, 0.0, 0.0));
        assert_eq!(
            (flat.hours, flat.hours_low, flat.hours_high),
            (None, None, None)
        );
    }
}
