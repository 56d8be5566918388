//! Machine memory readings: the host's memory, the memory of the cgroup the run lives in,
//! and each NVIDIA GPU's memory, taken by the collector (not by the shim) at a fixed
//! interval so a report can set the processes' own accounting against the black-box view
//! of the machine and estimate when memory runs out.

use crate::ids::Timestamp;
use bincode::{Decode, Encode};

/// The memory of a cgroup (v2 `memory.max` / `memory.current`, or v1
/// `memory.limit_in_bytes` / `memory.usage_in_bytes`).
#[derive(
    Clone, Debug, Default, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize,
)]
pub struct CgroupMemory {
    /// The limit in bytes; `None` when there is none (`max`, or a v1 value of 2^62 or more).
    pub limit: Option<u64>,
    /// Bytes charged to the cgroup now.
    pub usage: u64,
}

/// One GPU's memory as its driver reports it (NVML).
#[derive(
    Clone, Debug, Default, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize,
)]
pub struct GpuMemory {
    /// The driver's device index (NVML's, which need not be CUDA's ordinal).
    pub index: u32,
    /// The device's UUID (`GPU-...`), stable across index reordering.
    pub uuid: String,
    pub total: u64,
    pub used: u64,
    pub free: u64,
}

/// The machine's memory at one moment.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize,
)]
pub struct MachineReading {
    /// When the reading was taken (`CLOCK_MONOTONIC`, as the shim's event times).
    pub ts: Timestamp,
    /// `MemTotal` of `/proc/meminfo`, bytes; 0 when it could not be read.
    pub mem_total: u64,
    /// `MemAvailable` of `/proc/meminfo`, bytes; 0 when it could not be read.
    pub mem_available: u64,
    /// The memory of the cgroup the run lives in; `None` when none could be read.
    pub cgroup: Option<CgroupMemory>,
    /// Every NVIDIA GPU, by index; empty without NVML.
    pub gpus: Vec<GpuMemory>,
}
