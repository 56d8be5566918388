//! The per-process `gpu` section of the report (docs/gpu.md): per device the owned memory
//! by kind and the spaces kept apart from the totals (reserved addresses, mappings,
//! registrations, imported and retained handles), the owned sites summed per pool, memory
//! and device, the stream-ordered pools (with their readings over time), the capture count
//! and PyTorch's caching allocator (`torch_report.rs`). A process that made no GPU call
//! and sent no PyTorch record has none.

use crate::analysis::model::{
    Counts, GpuDevice, GpuReport, Memory, PoolTotals, Site, Space, StreamPool,
};
use crate::analysis::torch_model::StreamPoolPoint;
use crate::analysis::torch_report::torch_report;
use crate::state::{ProcessState, SiteKey, SiteStats};
use leakscope_protocol::{Api, DeviceOrdinal, GpuSpace};
use std::cmp::Reverse;
use std::collections::BTreeMap;

/// The counters of a state site.
pub fn counts(stats: &SiteStats) -> Counts {
    Counts {
        outstanding_bytes: stats.outstanding_bytes,
        outstanding_count: stats.outstanding_count,
        allocations: stats.allocations,
        allocated_bytes: stats.allocated_bytes,
        temporary: stats.temporary,
    }
}

/// The `gpu` section of `process`, whose merged sites (before any `top` limit) are
/// `sites`; `None` when it sent no GPU or PyTorch record and has no GPU site.
pub fn gpu_report(process: &ProcessState, sites: &[Site]) -> Option<GpuReport> {
    let has_gpu_sites = process.sites.keys().any(SiteKey::is_gpu);
    if process.gpu.is_none() && !has_gpu_sites && process.torch.is_none() {
        return None;
    }
    let gpu = process.gpu.clone().unwrap_or_default();
    let start = process.hello.start.0;
    let stream_pools = gpu
        .pools
        .iter()
        .map(|(handle, p)| StreamPool {
            handle: format!("{:#x}", handle.0),
            device: p.device.map(|d| d.0),
            created_by_program: p.created_by_program,
            destroyed: p.destroyed,
            reserved_bytes: p.reserved_bytes,
            used_bytes: p.used_bytes,
            readings: p.readings,
            series: {
                let mut s: Vec<StreamPoolPoint> = p
                    .series
                    .points()
                    .map(|r| StreamPoolPoint {
                        at_ns: r.ts.0.saturating_sub(start),
                        reserved_bytes: r.reserved,
                        used_bytes: r.used,
                    })
                    .collect();
                s.sort_by_key(|r| r.at_ns);
                s
            },
        })
        .collect();
    Some(GpuReport {
        devices: devices(process),
        pools: pools(sites),
        stream_pools,
        captures: gpu.captures,
        torch: torch_report(process),
    })
}

/// One entry per device the GPU sites name, known ordinals in order, the unknown one last.
fn devices(process: &ProcessState) -> Vec<GpuDevice> {
    let mut devices: BTreeMap<(bool, Option<DeviceOrdinal>), GpuDevice> = BTreeMap::new();
    for (key, stats) in process.sites.iter().filter(|(k, _)| k.is_gpu()) {
        let d = devices
            .entry((key.device.is_none(), key.device))
            .or_insert_with(|| GpuDevice {
                device: key.device.map(|d| d.0),
                ..GpuDevice::default()
            });
        let bytes = stats.outstanding_bytes;
        match key.space {
            Some(GpuSpace::Pointer | GpuSpace::Handle) if key.owned => d
                .by_memory
                .entry(Memory::from(key.kind))
                .or_default()
                .add(&counts(stats)),
            Some(GpuSpace::Handle) => {
                let live = stats.outstanding_count;
                match key.api {
                    Some(Api::CuMemImportFromShareableHandle) => {
                        d.imported_handles = d.imported_handles.saturating_add(live);
                    }
                    _ => d.retained_handles = d.retained_handles.saturating_add(live),
                }
            }
            Some(GpuSpace::Mapping) => d.mapped_bytes = d.mapped_bytes.saturating_add(bytes),
            Some(GpuSpace::Reservation) => {
                d.reserved_address_bytes = d.reserved_address_bytes.saturating_add(bytes);
            }
            Some(GpuSpace::Registration) => {
                d.registered_bytes = d.registered_bytes.saturating_add(bytes);
            }
            Some(GpuSpace::Pointer | GpuSpace::Pool) | None => {}
        }
    }
    devices.into_values().collect()
}

/// The owned GPU sites summed per (pool, memory, device), most outstanding first.
fn pools(sites: &[Site]) -> Vec<PoolTotals> {
    let mut sums: BTreeMap<(&str, Memory, Option<u32>), Counts> = BTreeMap::new();
    let owned_gpu = sites
        .iter()
        .filter(|s| s.owned && matches!(s.space, Some(Space::Pointer | Space::Handle)));
    for site in owned_gpu {
        sums.entry((site.pool.as_str(), site.memory, site.device))
            .or_default()
            .add(&site.counts());
    }
    let mut pools: Vec<PoolTotals> = sums
        .into_iter()
        .map(|((pool, memory, device), counts)| PoolTotals {
            pool: pool.to_owned(),
            memory,
            device,
            counts,
        })
        .collect();
    // Stable: ties keep the (pool, memory, device) order.
    pools.sort_by_key(|p| Reverse(p.counts.outstanding_bytes));
    pools
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ConnId, GpuState, PoolState};
    use leakscope_protocol::{Hello, MemoryKind, Origin, Pid, PoolHandle, StackId, Timestamp};

    fn process() -> ProcessState {
        let hello = Hello {
            pid: Pid(1),
            ppid: Pid(0),
            origin: Origin::Exec,
            exe: "/bin/app".to_owned(),
            argv: Vec::new(),
            start: Timestamp(0),
            start_unix_ns: 0,
            fingerprint: 0,
        };
        ProcessState::new(hello, ConnId(0))
    }

    fn stats(bytes: u64, count: u64) -> SiteStats {
        SiteStats {
            outstanding_bytes: bytes,
            outstanding_count: count,
            allocations: count,
            allocated_bytes: bytes,
            peak_bytes: bytes,
            temporary: 0,
            ..SiteStats::default()
        }
    }

    fn gpu(stack: u32, kind: MemoryKind, api: Api, device: Option<u32>) -> SiteKey {
        SiteKey::gpu(StackId(stack), kind, api, device.map(DeviceOrdinal), false).unwrap()
    }

    #[test]
    fn no_gpu_record_and_no_gpu_site_means_no_section() {
        let mut p = process();
        p.sites
            .insert(SiteKey::host(StackId(1), MemoryKind::Host), stats(10, 1));
        assert_eq!(gpu_report(&p, &[]), None);
        // A GPU record alone (a capture, say) makes an empty section.
        p.gpu = Some(GpuState::default());
        let r = gpu_report(&p, &[]).unwrap();
        assert!(r.devices.is_empty() && r.pools.is_empty() && r.stream_pools.is_empty());
    }

    #[test]
    fn devices_keep_owned_memory_and_spaces_apart() {
        let mut p = process();
        let d = MemoryKind::Device;
        for (key, s) in [
            (gpu(1, d, Api::CudaMalloc, Some(1)), stats(100, 1)),
            (gpu(2, d, Api::CuMemCreate, Some(1)), stats(1 << 21, 2)),
            (
                gpu(3, d, Api::CuMemAddressReserve, Some(1)),
                stats(1 << 30, 1),
            ),
            (gpu(4, d, Api::CuMemMap, Some(1)), stats(1 << 21, 2)),
            (
                gpu(5, d, Api::CuMemImportFromShareableHandle, Some(1)),
                stats(4096, 3),
            ),
            (
                gpu(6, d, Api::CuMemRetainAllocationHandle, Some(1)),
                stats(4096, 1),
            ),
            (
                gpu(7, MemoryKind::Managed, Api::CudaMallocManaged, Some(0)),
                stats(7, 1),
            ),
            (
                gpu(8, MemoryKind::Pinned, Api::CudaHostAlloc, None),
                stats(64, 1),
            ),
            (
                gpu(9, MemoryKind::Pinned, Api::CudaHostRegister, None),
                stats(8192, 1),
            ),
            (SiteKey::host(StackId(10), MemoryKind::Host), stats(5, 1)),
        ] {
            p.sites.insert(key, s);
        }
        let r = gpu_report(&p, &[]).unwrap();
        let ordinals: Vec<_> = r.devices.iter().map(|d| d.device).collect();
        assert_eq!(
            ordinals,
            vec![Some(0), Some(1), None],
            "unknown device last"
        );
        let one = &r.devices[1];
        assert_eq!(one.by_memory.len(), 1);
        assert_eq!(
            one.by_memory[&Memory::Device].outstanding_bytes,
            100 + (1 << 21)
        );
        assert_eq!(one.by_memory[&Memory::Device].outstanding_count, 3);
        assert_eq!(one.reserved_address_bytes, 1 << 30);
        assert_eq!(one.mapped_bytes, 1 << 21);
        assert_eq!(one.imported_handles, 3);
        assert_eq!(one.retained_handles, 1);
        assert_eq!(one.registered_bytes, 0);
        assert_eq!(
            r.devices[0].by_memory[&Memory::Managed].outstanding_bytes,
            7
        );
        let host = &r.devices[2];
        assert_eq!(host.by_memory[&Memory::Pinned].outstanding_bytes, 64);
        assert_eq!(host.registered_bytes, 8192);
    }

    /// The report fixture's GPU site (one block of `bytes`, allocated once).
    fn site(pool: &str, memory: Memory, device: Option<u32>, space: Space, bytes: u64) -> Site {
        crate::report::fixture::gpu_site(memory, pool, device, space, bytes)
    }

    #[test]
    fn pools_sum_owned_sites_per_pool_memory_and_device() {
        let d = Memory::Device;
        let sites = vec![
            site("pytorch-caching", d, Some(0), Space::Pointer, 10),
            site("pytorch-caching", d, Some(0), Space::Pointer, 30),
            site("pytorch-caching", d, Some(1), Space::Pointer, 5),
            site("pytorch-expandable", d, Some(0), Space::Handle, 100),
            // Not owned: the handle's memory is counted where it was created.
            site("pytorch-expandable", d, Some(0), Space::Mapping, 100),
            site("pytorch-expandable", d, Some(0), Space::Reservation, 1000),
        ];
        let mut p = process();
        p.gpu = Some(GpuState::default());
        let r = gpu_report(&p, &sites).unwrap();
        let got: Vec<_> = r
            .pools
            .iter()
            .map(|p| {
                (
                    p.pool.as_str(),
                    p.device,
                    p.counts.outstanding_bytes,
                    p.counts.allocations,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("pytorch-expandable", Some(0), 100, 1),
                ("pytorch-caching", Some(0), 40, 2),
                ("pytorch-caching", Some(1), 5, 1),
            ]
        );
    }

    #[test]
    fn stream_pools_and_captures() {
        use leakscope_protocol::{PoolAction, PoolEvent, ThreadId};
        let mut p = process();
        p.hello.start = Timestamp(1_000);
        let mut pool = PoolState::default();
        // Readings arrive out of order; the newest wins, the series is sorted by time.
        for (ts, action, reserved, used) in [
            (2_000, PoolAction::Created, 0, 0),
            (4_000, PoolAction::Sampled, 64 << 20, 1 << 20),
            (3_000, PoolAction::Sampled, 32 << 20, 2 << 20),
        ] {
            pool.apply(&PoolEvent {
                ts: Timestamp(ts),
                thread: ThreadId(1),
                pool: PoolHandle(0x5555_aaaa_0000),
                device: Some(DeviceOrdinal(2)),
                action,
                reserved,
                used,
            });
        }
        p.gpu = Some(GpuState {
            pools: BTreeMap::from([(PoolHandle(0x5555_aaaa_0000), pool)]),
            captures: 2,
        });
        let r = gpu_report(&p, &[]).unwrap();
        assert_eq!(r.captures, 2);
        assert_eq!(r.torch, None, "no PyTorch record");
        let point = |at_ns, reserved_bytes, used_bytes| StreamPoolPoint {
            at_ns,
            reserved_bytes,
            used_bytes,
        };
        assert_eq!(
            r.stream_pools,
            vec![StreamPool {
                handle: "0x5555aaaa0000".to_owned(),
                device: Some(2),
                created_by_program: true,
                destroyed: false,
                reserved_bytes: 64 << 20,
                used_bytes: 1 << 20,
                readings: 3,
                series: vec![
                    point(1_000, 0, 0),
                    point(2_000, 32 << 20, 2 << 20),
                    point(3_000, 64 << 20, 1 << 20),
                ],
            }]
        );
    }

    #[test]
    fn a_pytorch_record_alone_makes_a_section() {
        let mut p = process();
        p.torch = Some(crate::state::TorchTrack::default());
        let r = gpu_report(&p, &[]).unwrap();
        let t = r.torch.unwrap();
        assert_eq!((t.readings, t.blocks.live_blocks), (0, 0));
        assert!(t.pools.is_empty() && t.devices.is_empty());
    }
}
