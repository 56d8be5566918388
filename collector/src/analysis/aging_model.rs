//! The report model of the aging analysis (part of the JSON contract, see
//! [`crate::analysis::model`]): the trend of a series, the series itself on request, a
//! process's aging section (its totals, pools and the black-box view of its resident
//! memory) and the run's section (the test's settings and times to exhaustion).

use crate::analysis::trend::shape::Shape;
use serde::Serialize;

/// The verdict on one series: its Theil–Sen slope with the slope's (1 − α) interval, the
/// Hamed–Rao modified Mann–Kendall p-value, whether the growth is significant (p < α, the
/// interval excludes zero, and Benjamini–Hochberg across every series of the run rejects),
/// and its shape.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct TrendReport {
    pub slope_bytes_per_hour: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub p_value: f64,
    pub significant: bool,
    /// `drift` (steady growth), `steps` (growth in a few jumps) or `flat` (no significant
    /// growth).
    pub shape: Shape,
    /// For a site: which of its series the figures describe (`outstanding` bytes, or
    /// `outlived` bytes where that series showed a growth the outstanding bytes did not);
    /// absent for other series.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basis: Option<Basis>,
}

/// Which series of a site its trend describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// Its outstanding bytes.
    Outstanding,
    /// Its outlived bytes: live blocks far older than any block the site freed
    /// (docs/aging.md).
    Outlived,
}

/// A series as tested (warm-up excluded): evenly spaced values, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeriesReport {
    /// Seconds between the starts of consecutive values (the interval, or a multiple of it
    /// once a long run's older values were merged).
    pub step_s: f64,
    /// Seconds from the process's start to the start of the first value.
    pub start_s: f64,
    /// The values (bytes): the mean of each step's samples.
    pub values: Vec<f64>,
}

/// A tested series: its trend (`None` when it has too few values after the warm-up) and,
/// with `--series`, the values.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Tested {
    pub trend: Option<TrendReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series: Option<SeriesReport>,
}

/// The trend of one allocator pool of a process (sites summed by pool, memory kind and
/// device).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PoolAging {
    pub pool: String,
    pub memory: crate::analysis::model::Memory,
    pub device: Option<u32>,
    pub outstanding_bytes: u64,
    #[serde(flatten)]
    pub tested: Tested,
}

/// The trend of the process's own GPU memory on one device.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeviceAging {
    pub device: Option<u32>,
    pub outstanding_bytes: u64,
    #[serde(flatten)]
    pub tested: Tested,
}

/// The black-box view: a resident-memory figure the shim read at each interval, tested as
/// the published study did (medians of fixed windows, the same statistics).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ResidentAging {
    /// Latest reading, bytes.
    pub latest_bytes: u64,
    /// Length of the median windows, seconds.
    pub window_s: f64,
    #[serde(flatten)]
    pub tested: Tested,
}

/// When memory runs out at the current rate, in hours from the last reading: `hours` at the
/// slope, `hours_low`..`hours_high` at the ends of its interval (`None`: never, at that end,
/// since it does not grow).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Exhaustion {
    /// What runs out (`memory`: `host_available`, `cgroup` or `gpu` with its `index`).
    #[serde(flatten)]
    pub of: ExhaustionOf,
    /// Bytes left when the slope was taken.
    pub headroom_bytes: u64,
    /// The growth tested (bytes per hour), its slope and interval.
    pub slope_bytes_per_hour: f64,
    pub significant: bool,
    pub hours: Option<f64>,
    pub hours_low: Option<f64>,
    pub hours_high: Option<f64>,
}

/// Which memory an [`Exhaustion`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "memory")]
pub enum ExhaustionOf {
    /// The host's `MemAvailable`.
    HostAvailable,
    /// The cgroup's limit less its usage.
    Cgroup,
    /// A GPU's free memory (NVML), by NVML index.
    Gpu { index: u32 },
}

/// A process's aging section.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProcessAging {
    /// Seconds between the values of this process's series.
    pub step_s: f64,
    /// Values per series after the warm-up.
    pub points: usize,
    /// What the process's series hold in memory: series kept (one per state site and
    /// PyTorch block stack) and the runs of equal values they store in all (16 bytes each).
    pub stored_series: usize,
    pub stored_runs: usize,
    /// The process's own host memory (every owned host site).
    pub host: Tested,
    /// The process's own GPU memory, per device.
    pub devices: Vec<DeviceAging>,
    /// Per allocator pool.
    pub pools: Vec<PoolAging>,
    /// Black-box view: USS and RSS readings (`None` without readings).
    pub uss: Option<ResidentAging>,
    pub rss: Option<ResidentAging>,
    /// When the host (and each GPU) runs out at this process's rates.
    pub exhaustion: Vec<Exhaustion>,
}

/// The run's aging section: the settings of the test and the whole run's view.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunAging {
    /// Level of each test and of the slope intervals.
    pub alpha: f64,
    /// False-discovery rate across the run's series.
    pub q: f64,
    /// Seconds at the start of each process left out of the tests.
    pub warmup_s: f64,
    /// Series tested (those with enough values that are not constant: Benjamini–Hochberg's
    /// m), and of those, significant growths.
    pub tests: usize,
    pub significant: usize,
    /// Every process's own host memory summed.
    pub host: Tested,
    /// Every process's own GPU memory summed, per device.
    pub devices: Vec<DeviceAging>,
    /// When the host and each GPU run out at the whole run's rates (all processes' own
    /// memory summed).
    pub exhaustion: Vec<Exhaustion>,
    /// The latest machine reading (host and GPUs), if `leakscope run` took any.
    pub machine: Option<MachineFigures>,
    /// The machine's black-box view: host memory in use and each GPU's used memory, as
    /// 60-second medians of the readings.
    pub host_used: Option<MachineAging>,
    pub gpus_used: Vec<MachineAging>,
}

/// One machine figure over the run, tested.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MachineAging {
    /// The GPU's NVML index (`None` for host memory).
    pub index: Option<u32>,
    /// Latest reading, bytes.
    pub latest_bytes: u64,
    /// Length of the median windows, seconds.
    pub window_s: f64,
    #[serde(flatten)]
    pub tested: Tested,
}

/// The machine's memory at the latest reading.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MachineFigures {
    pub mem_total: u64,
    pub mem_available: u64,
    pub cgroup_limit: Option<u64>,
    pub cgroup_usage: Option<u64>,
    pub gpus: Vec<GpuFigures>,
}

/// One GPU at the latest reading (NVML).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GpuFigures {
    pub index: u32,
    pub uuid: String,
    pub total: u64,
    pub used: u64,
    pub free: u64,
}
