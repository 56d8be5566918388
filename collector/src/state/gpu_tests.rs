//! Tests of the GPU accounting: each address space's rules (pointers, refcounted handles,
//! mapping and reservation ranges, registrations), capture windows, pool readings,
//! timestamp order across threads, fork children inheriting no GPU memory, hostile records.

use super::*;
use crate::test_records::Rng;
use leakscope_protocol::{
    Alloc, Capture, Fork, Free, GpuAlloc, Origin, PoolAction, PoolEvent, PoolHandle, Record,
    StackDef, ThreadId,
};

const C0: ConnId = ConnId(0);
const C1: ConnId = ConnId(1);
const DEV: MemoryKind = MemoryKind::Device;
const GPU0: Option<DeviceOrdinal> = Some(DeviceOrdinal(0));

fn hello(pid: u32, origin: Origin) -> Record {
    Record::Hello(Hello {
        pid: Pid(pid),
        ppid: Pid(1),
        origin,
        exe: "/bin/gpu".into(),
        argv: vec!["gpu".into()],
        start: Timestamp(0),
        start_unix_ns: 0,
        fingerprint: leakscope_protocol::BUILD_FINGERPRINT,
    })
}

fn one_process() -> RunState {
    let mut s = RunState::new(StateOptions::default());
    s.apply(C0, hello(10, Origin::Exec));
    for id in 1..=8 {
        s.apply(
            C0,
            Record::Stack(StackDef {
                id: StackId(id),
                frames: vec![RuntimeAddr(0x1000 + u64::from(id))],
                python: vec![],
            }),
        );
    }
    s
}

/// A GPU allocation on device 0 of `api`'s space.
fn galloc(ts: u64, thread: u32, addr: u64, size: u64, stack: u32, api: Api) -> Record {
    let kind = match api {
        Api::CudaHostAlloc | Api::CudaMallocHost | Api::CudaHostRegister => MemoryKind::Pinned,
        Api::CudaMallocManaged => MemoryKind::Managed,
        _ => DEV,
    };
    Record::GpuAlloc(GpuAlloc {
        ts: Timestamp(ts),
        thread: ThreadId(thread),
        addr: RuntimeAddr(addr),
        size,
        kind,
        api,
        stack: StackId(stack),
        device: GPU0,
    })
}

/// A GPU free (`len` for mappings and reservations).
fn gfree(ts: u64, thread: u32, addr: u64, len: u64, api: Api) -> Record {
    Record::Free(Free {
        ts: Timestamp(ts),
        thread: ThreadId(thread),
        addr: RuntimeAddr(addr),
        len,
        kind: DEV,
        api,
    })
}

fn capture(ts: u64, thread: u32, begin: bool) -> Record {
    Record::Capture(Capture {
        ts: Timestamp(ts),
        thread: ThreadId(thread),
        begin,
    })
}

/// The statistics of the device-0 site of `stack` calling `api` (`during_capture` as
/// given).
fn gsite(p: &ProcessState, stack: u32, api: Api, during_capture: bool) -> SiteStats {
    let kind = match api {
        Api::CudaHostAlloc | Api::CudaMallocHost | Api::CudaHostRegister => MemoryKind::Pinned,
        Api::CudaMallocManaged => MemoryKind::Managed,
        _ => DEV,
    };
    let key = SiteKey::gpu(StackId(stack), kind, api, GPU0, during_capture).unwrap();
    p.sites.get(&key).copied().unwrap_or_default()
}

fn gs(p: &ProcessState, stack: u32, api: Api) -> SiteStats {
    gsite(p, stack, api, false)
}

fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut p in permutations(&rest) {
            p.insert(0, first.clone());
            out.push(p);
        }
    }
    out
}

/// Sites and live tables agree on the bytes held.
fn check_tables(s: &RunState) {
    let live = s.router_live(0).outstanding_bytes();
    let sites: u64 = s.processes[0]
        .sites
        .values()
        .map(|v| v.outstanding_bytes)
        .sum();
    assert_eq!(live, sites, "tables vs sites");
}

#[test]
fn site_keys_carry_space_device_and_ownership() {
    let k = |api| SiteKey::gpu(StackId(1), DEV, api, GPU0, false);
    assert_eq!(k(Api::Malloc), None, "host api");
    assert_eq!(k(Api::CudaMemPoolCreate), None, "pool api");
    let owned = |api| k(api).unwrap().owned;
    assert!(owned(Api::CudaMalloc) && owned(Api::CuMemCreate));
    assert!(!owned(Api::CuMemImportFromShareableHandle));
    assert!(!owned(Api::CuMemRetainAllocationHandle));
    assert!(!owned(Api::CuMemMap) && !owned(Api::CuMemAddressReserve));
    assert!(!owned(Api::CudaHostRegister));
    assert_eq!(k(Api::CuMemMap).unwrap().space, Some(GpuSpace::Mapping));
    let host = SiteKey::host(StackId(1), MemoryKind::Host);
    assert!(host.owned && !host.is_gpu() && host.device.is_none());
    // Keys order by stack, then kind, whatever their api.
    let mut keys = [k(Api::CuMemMap).unwrap(), k(Api::CudaMalloc).unwrap(), host];
    keys.sort();
    assert_eq!(keys[0], host);
}

#[test]
fn no_gpu_record_means_no_gpu_state() {
    let mut s = one_process();
    s.apply(
        C0,
        Record::Alloc(Alloc {
            ts: Timestamp(1),
            thread: ThreadId(1),
            addr: RuntimeAddr(0x10),
            size: 8,
            kind: MemoryKind::Host,
            api: Api::Malloc,
            stack: StackId(1),
        }),
    );
    s.finish();
    assert_eq!(s.processes[0].gpu, None);
    let mut s = one_process();
    s.apply(C0, gfree(5, 1, 0x10, 0, Api::CudaFree));
    s.finish();
    assert!(s.processes[0].gpu.is_some(), "a GPU free is a GPU record");
    assert_eq!(s.processes[0].unknown_frees, 1);
}

#[test]
fn pointers_live_until_freed_in_their_space() {
    let mut s = one_process();
    s.apply(C0, galloc(10, 1, 0x7f00_0000, 1 << 20, 1, Api::CudaMalloc));
    s.apply(C0, galloc(11, 1, 0x7f10_0000, 4096, 2, Api::CudaHostAlloc));
    s.apply(
        C0,
        galloc(12, 1, 0x7f20_0000, 100, 3, Api::CudaMallocManaged),
    );
    // A handle with the same value as the device pointer is another address.
    s.apply(C0, galloc(13, 1, 0x7f00_0000, 2 << 20, 4, Api::CuMemCreate));
    s.apply(C0, gfree(20, 1, 0x7f10_0000, 0, Api::CudaFreeHost));
    s.apply(C0, gfree(21, 1, 0x7f00_0000, 0, Api::CudaFree));
    check_tables(&s);
    s.finish();
    let p = &s.processes[0];
    assert_eq!(gs(p, 1, Api::CudaMalloc).outstanding_bytes, 0);
    assert_eq!(gs(p, 1, Api::CudaMalloc).temporary, 1);
    assert_eq!(gs(p, 2, Api::CudaHostAlloc).outstanding_bytes, 0);
    assert_eq!(gs(p, 3, Api::CudaMallocManaged).outstanding_bytes, 100);
    assert_eq!(gs(p, 4, Api::CuMemCreate).outstanding_bytes, 2 << 20);
    assert_eq!(p.unknown_frees, 0);
    assert_eq!(p.anomalies, Anomalies::default());
}

/// Thread 1 gets a device pointer at t=5, thread 2 frees it at t=8, thread 3 gets the same
/// pointer at t=10 and keeps it: every arrival order ends with the second block alone.
#[test]
fn gpu_pointer_reuse_across_threads_in_every_arrival_order() {
    let events = [
        galloc(5, 1, 0x7f00_0000, 100, 1, Api::CudaMalloc),
        gfree(8, 2, 0x7f00_0000, 0, Api::CudaFree),
        galloc(10, 3, 0x7f00_0000, 7, 2, Api::CuMemAlloc),
    ];
    for order in permutations(&events) {
        let mut s = one_process();
        s.apply_all(C0, order.clone());
        check_tables(&s);
        s.finish();
        let p = &s.processes[0];
        assert_eq!(gs(p, 1, Api::CudaMalloc).outstanding_bytes, 0, "{order:?}");
        assert_eq!(gs(p, 2, Api::CuMemAlloc).outstanding_bytes, 7, "{order:?}");
        assert_eq!(gs(p, 2, Api::CuMemAlloc).outstanding_count, 1, "{order:?}");
        assert_eq!(p.unknown_frees, 0, "{order:?}");
        assert_eq!(p.anomalies.implied_frees, 0, "{order:?}");
    }
}

#[test]
fn handles_are_refcounted() {
    let mut s = one_process();
    let h = 0xabc;
    s.apply(C0, galloc(10, 1, h, 2 << 20, 1, Api::CuMemCreate));
    s.apply(
        C0,
        galloc(11, 1, h, 2 << 20, 2, Api::CuMemRetainAllocationHandle),
    );
    assert_eq!(s.router_live(0).gpu.handle_refs(h), 2);
    s.apply(C0, gfree(12, 1, h, 0, Api::CuMemRelease));
    let p = &s.processes[0];
    assert_eq!(
        gs(p, 1, Api::CuMemCreate).outstanding_bytes,
        2 << 20,
        "one ref left"
    );
    assert_eq!(
        gs(p, 2, Api::CuMemRetainAllocationHandle),
        SiteStats::default(),
        "a retain of a live handle is a reference, not an entry"
    );
    s.apply(C0, gfree(13, 1, h, 0, Api::CuMemRelease));
    assert_eq!(s.router_live(0).gpu.handle_refs(h), 0);
    check_tables(&s);
    s.finish();
    let p = &s.processes[0];
    let st = gs(p, 1, Api::CuMemCreate);
    assert_eq!((st.outstanding_bytes, st.outstanding_count), (0, 0));
    assert_eq!((st.allocations, st.allocated_bytes), (1, 2 << 20));
    assert_eq!(p.unknown_frees, 0);
}

#[test]
fn retains_of_unknown_handles_and_imports_are_entries_not_owned() {
    let mut s = one_process();
    // A handle created before tracking, retained from a mapped address.
    s.apply(
        C0,
        galloc(10, 1, 0x100, 4096, 1, Api::CuMemRetainAllocationHandle),
    );
    // A handle another process exported, imported twice (the driver returns it again).
    s.apply(
        C0,
        galloc(11, 1, 0x200, 8192, 2, Api::CuMemImportFromShareableHandle),
    );
    s.apply(
        C0,
        galloc(12, 1, 0x200, 8192, 3, Api::CuMemImportFromShareableHandle),
    );
    assert_eq!(s.router_live(0).gpu.handle_refs(0x200), 2);
    s.apply(C0, gfree(20, 1, 0x200, 0, Api::CuMemRelease));
    check_tables(&s);
    s.finish();
    let p = &s.processes[0];
    let retained = SiteKey::gpu(
        StackId(1),
        DEV,
        Api::CuMemRetainAllocationHandle,
        GPU0,
        false,
    );
    let retained = retained.unwrap();
    assert!(!retained.owned);
    assert_eq!(p.sites[&retained].outstanding_count, 1);
    let imported = gs(p, 2, Api::CuMemImportFromShareableHandle);
    assert_eq!(
        (imported.outstanding_bytes, imported.allocations),
        (8192, 1)
    );
    assert_eq!(
        gs(p, 3, Api::CuMemImportFromShareableHandle),
        SiteStats::default()
    );
    assert_eq!(p.unknown_frees, 0);
}

/// Create (t=10), retain (t=20, another thread), release (t=30), release (t=40, another
/// thread), then a new handle with the same value (t=50): every arrival order ends with
/// only the second handle live and nothing unknown.
#[test]
fn handle_events_are_ordered_by_timestamp_across_threads() {
    let h = 0x55;
    let events = [
        galloc(10, 1, h, 100, 1, Api::CuMemCreate),
        galloc(20, 2, h, 100, 2, Api::CuMemRetainAllocationHandle),
        gfree(30, 1, h, 0, Api::CuMemRelease),
        gfree(40, 2, h, 0, Api::CuMemRelease),
        galloc(50, 3, h, 7, 3, Api::CuMemCreate),
    ];
    for order in permutations(&events) {
        let mut s = one_process();
        s.apply_all(C0, order.clone());
        check_tables(&s);
        s.finish();
        let p = &s.processes[0];
        let first = gs(p, 1, Api::CuMemCreate);
        assert_eq!(
            (first.outstanding_bytes, first.allocations),
            (0, 1),
            "{order:?}"
        );
        assert_eq!(gs(p, 3, Api::CuMemCreate).outstanding_bytes, 7, "{order:?}");
        assert_eq!(
            gs(p, 2, Api::CuMemRetainAllocationHandle).allocations,
            0,
            "{order:?}"
        );
        assert_eq!(p.unknown_frees, 0, "{order:?}");
        assert_eq!(p.anomalies.implied_frees, 0, "{order:?}");
    }
}

#[test]
fn handle_creates_over_live_handles_and_stray_releases() {
    let mut s = one_process();
    s.apply(C0, galloc(10, 1, 0x1, 100, 1, Api::CuMemCreate));
    // Its release was lost: the value is handed out again.
    s.apply(C0, galloc(20, 1, 0x1, 50, 2, Api::CuMemCreate));
    s.apply(C0, gfree(30, 1, 0x2, 0, Api::CuMemRelease));
    check_tables(&s);
    s.finish();
    let p = &s.processes[0];
    assert_eq!(gs(p, 1, Api::CuMemCreate).outstanding_bytes, 0);
    assert_eq!(gs(p, 2, Api::CuMemCreate).outstanding_bytes, 50);
    assert_eq!(p.anomalies.implied_frees, 1);
    assert_eq!(p.unknown_frees, 1);
}

#[test]
fn settled_handles_are_forgotten_after_the_window() {
    let mut s = RunState::new(StateOptions {
        temporary_ns: 1,
        reorder_window_ns: 1_000,
        ..StateOptions::default()
    });
    s.apply(C0, hello(10, Origin::Exec));
    s.apply(C0, gfree(5, 1, 0x999, 0, Api::CuMemRelease)); // no entry
    let mut ts = 100;
    for i in 0..5000u64 {
        ts += 10;
        s.apply(C0, galloc(ts, 1, 0x1000 + i, 8, 1, Api::CuMemCreate));
        s.apply(C0, gfree(ts + 1, 1, 0x1000 + i, 0, Api::CuMemRelease));
    }
    s.apply(C0, galloc(ts + 100, 1, 0x1, 10, 2, Api::CuMemCreate));
    let tracked = s.router_live(0).gpu.tracked_handles();
    assert!(tracked < 2500, "{tracked} handles remembered");
    s.end_stream(C0, ConnClose::Eof);
    assert_eq!(s.router_live(0).gpu.tracked_handles(), 1, "the live one");
    let p = &s.processes[0];
    let st = gs(p, 1, Api::CuMemCreate);
    assert_eq!((st.outstanding_bytes, st.allocations), (0, 5000));
    assert_eq!(gs(p, 2, Api::CuMemCreate).outstanding_bytes, 10);
    assert_eq!(p.unknown_frees, 1);
}

#[test]
fn mappings_are_ranges_unmapped_in_part() {
    let mut s = one_process();
    let base = 0x7000_0000_0000;
    s.apply(C0, galloc(10, 1, base, 4 << 20, 1, Api::CuMemMap));
    // Unmap the middle 2 MiB: two pieces of 1 MiB remain.
    s.apply(C0, gfree(20, 1, base + (1 << 20), 2 << 20, Api::CuMemUnmap));
    let st = gs(&s.processes[0], 1, Api::CuMemMap);
    assert_eq!((st.outstanding_bytes, st.outstanding_count), (2 << 20, 2));
    // One unmap over the rest and beyond.
    s.apply(C0, gfree(30, 1, base, 8 << 20, Api::CuMemUnmap));
    check_tables(&s);
    s.finish();
    let p = &s.processes[0];
    let st = gs(p, 1, Api::CuMemMap);
    assert_eq!((st.outstanding_bytes, st.outstanding_count), (0, 0));
    assert_eq!(st.peak_bytes, 4 << 20);
    assert_eq!(p.unknown_frees, 0);
}

#[test]
fn reservations_are_ranges_apart_from_mappings() {
    let mut s = one_process();
    let base = 0x7000_0000_0000;
    s.apply(
        C0,
        galloc(10, 1, base, 1 << 30, 1, Api::CuMemAddressReserve),
    );
    // A mapping inside it, unmapped: the reservation stays.
    s.apply(C0, galloc(11, 1, base, 2 << 20, 2, Api::CuMemMap));
    s.apply(C0, gfree(12, 1, base, 2 << 20, Api::CuMemUnmap));
    assert_eq!(
        gs(&s.processes[0], 1, Api::CuMemAddressReserve).outstanding_bytes,
        1 << 30
    );
    // Half of it freed, then the rest.
    s.apply(C0, gfree(20, 1, base, 1 << 29, Api::CuMemAddressFree));
    assert_eq!(
        gs(&s.processes[0], 1, Api::CuMemAddressReserve).outstanding_bytes,
        1 << 29
    );
    s.apply(
        C0,
        gfree(21, 1, base + (1 << 29), 1 << 29, Api::CuMemAddressFree),
    );
    // A free of an empty range changes nothing and is counted.
    s.apply(C0, gfree(22, 1, base, 0, Api::CuMemAddressFree));
    check_tables(&s);
    s.finish();
    let p = &s.processes[0];
    assert_eq!(gs(p, 1, Api::CuMemAddressReserve).outstanding_bytes, 0);
    assert_eq!(gs(p, 2, Api::CuMemMap).outstanding_bytes, 0);
    assert_eq!(p.anomalies.empty_ranges, 1);
    assert_eq!(p.unknown_frees, 1);
}

#[test]
fn registrations_live_until_unregistered() {
    let mut s = one_process();
    s.apply(C0, galloc(10, 1, 0x5000, 8192, 1, Api::CudaHostRegister));
    s.apply(C0, galloc(11, 1, 0x9000, 4096, 1, Api::CudaHostRegister));
    s.apply(C0, gfree(20, 1, 0x5000, 0, Api::CuMemHostUnregister));
    // A host free at the same address is another space.
    s.apply(
        C0,
        Record::Free(Free {
            ts: Timestamp(21),
            thread: ThreadId(1),
            addr: RuntimeAddr(0x9000),
            len: 0,
            kind: MemoryKind::Host,
            api: Api::Free,
        }),
    );
    check_tables(&s);
    s.finish();
    let p = &s.processes[0];
    let st = gs(p, 1, Api::CudaHostRegister);
    assert_eq!((st.outstanding_bytes, st.outstanding_count), (4096, 1));
    assert_eq!(p.unknown_frees, 1, "the host free");
}

#[test]
fn capture_windows_mark_allocations_of_their_thread() {
    let mut s = one_process();
    s.apply(C0, galloc(5, 1, 0x10, 1, 1, Api::CudaMalloc)); // before
    s.apply(C0, capture(10, 1, true));
    s.apply(C0, galloc(15, 1, 0x20, 2, 1, Api::CudaMalloc)); // inside
    s.apply(C0, galloc(16, 2, 0x30, 4, 1, Api::CudaMalloc)); // another thread
    s.apply(C0, capture(17, 1, true)); // nested
    s.apply(C0, capture(18, 1, false));
    s.apply(C0, galloc(19, 1, 0x40, 8, 1, Api::CudaMalloc)); // still inside
    s.apply(C0, capture(20, 1, false));
    s.apply(C0, galloc(25, 1, 0x50, 16, 1, Api::CudaMalloc)); // after
                                                              // Another window on thread 2; an end with no begin on thread 3.
    s.apply(C0, capture(30, 2, true));
    s.apply(C0, galloc(31, 2, 0x60, 32, 1, Api::CudaMalloc));
    s.apply(C0, capture(32, 3, false));
    s.finish();
    let p = &s.processes[0];
    assert_eq!(
        gsite(p, 1, Api::CudaMalloc, false).outstanding_bytes,
        1 + 4 + 16
    );
    assert_eq!(
        gsite(p, 1, Api::CudaMalloc, true).outstanding_bytes,
        2 + 8 + 32
    );
    assert_eq!(p.gpu.as_ref().unwrap().captures, 3);
}

#[test]
fn pool_events_keep_the_newest_reading() {
    let mut s = one_process();
    let ev = |ts, pool, action, reserved, used| {
        Record::Pool(PoolEvent {
            ts: Timestamp(ts),
            thread: ThreadId(1),
            pool: PoolHandle(pool),
            device: GPU0,
            action,
            reserved,
            used,
        })
    };
    s.apply(C0, ev(10, 0xa, PoolAction::Created, 0, 0));
    s.apply(C0, ev(20, 0xa, PoolAction::Sampled, 64, 32));
    s.apply(C0, ev(15, 0xa, PoolAction::Sampled, 8, 8)); // late: not newer
    s.apply(C0, ev(30, 0xb, PoolAction::Sampled, 128, 1)); // a default pool
    s.apply(C0, ev(40, 0xa, PoolAction::Destroyed, 0, 0));
    s.finish();
    let gpu = s.processes[0].gpu.as_ref().unwrap();
    let a = &gpu.pools[&PoolHandle(0xa)];
    assert!(a.created_by_program && a.destroyed);
    assert_eq!((a.reserved_bytes, a.used_bytes, a.readings), (0, 0, 4));
    assert_eq!(a.device, GPU0);
    let b = &gpu.pools[&PoolHandle(0xb)];
    assert!(!b.created_by_program && !b.destroyed);
    assert_eq!((b.reserved_bytes, b.used_bytes, b.readings), (128, 1, 1));
    assert_eq!(gpu.captures, 0);
}

#[test]
fn fork_children_inherit_no_gpu_memory() {
    let mut s = RunState::new(StateOptions::default());
    s.apply(C0, hello(10, Origin::Exec));
    s.apply(
        C0,
        Record::Stack(StackDef {
            id: StackId(1),
            frames: vec![RuntimeAddr(0x1001)],
            python: vec![],
        }),
    );
    s.apply(
        C0,
        Record::Alloc(Alloc {
            ts: Timestamp(5),
            thread: ThreadId(1),
            addr: RuntimeAddr(0x10),
            size: 100,
            kind: MemoryKind::Host,
            api: Api::Malloc,
            stack: StackId(1),
        }),
    );
    s.apply(C0, galloc(6, 1, 0x7f00_0000, 1 << 20, 1, Api::CudaMalloc));
    s.apply(C0, galloc(7, 1, 0xabc, 2 << 20, 1, Api::CuMemCreate));
    s.apply(C0, galloc(8, 1, 0x7000_0000, 2 << 20, 1, Api::CuMemMap));
    s.apply(C0, capture(9, 1, true));
    s.apply(
        C0,
        Record::Fork(Fork {
            ts: Timestamp(10),
            thread: ThreadId(1),
            child: Pid(11),
        }),
    );
    s.apply_all(
        C1,
        [
            hello(11, Origin::Fork { parent: Pid(10) }),
            // The child frees what would be the parent's pointer: it never had it.
            gfree(20, 1, 0x7f00_0000, 0, Api::CudaFree),
        ],
    );
    s.finish();
    let c = s.process(Pid(11)).unwrap();
    assert!(c.notes.is_empty(), "{:?}", c.notes);
    assert!(c.sites.keys().all(|k| !k.is_gpu()), "{:?}", c.sites);
    let host: u64 = c.sites.values().map(|v| v.outstanding_bytes).sum();
    assert_eq!(host, 100, "host memory is inherited");
    assert_eq!(c.unknown_frees, 1);
    assert_eq!(c.gpu.as_ref().map(|g| g.captures), Some(0));
    let parent = s.process(Pid(10)).unwrap();
    assert_eq!(gs(parent, 1, Api::CudaMalloc).outstanding_bytes, 1 << 20);
}

#[test]
fn malformed_gpu_records_are_counted_not_fatal() {
    let mut s = one_process();
    s.apply(C0, galloc(1, 1, 0x10, 8, 1, Api::Malloc)); // host api
    s.apply(C0, galloc(2, 1, 0x10, 8, 1, Api::CudaFree)); // freeing api
    s.apply(C0, galloc(3, 1, 0x10, 8, 1, Api::CudaMemPoolCreate)); // pool api
    s.apply(C0, galloc(4, 1, 0x10, 8, 1, Api::CuMemRelease));
    s.apply(C0, gfree(5, 1, 0x10, 0, Api::CuMemPoolDestroy));
    s.apply(C0, galloc(6, 1, u64::MAX - 1, u64::MAX, 1, Api::CuMemMap)); // saturates
    s.apply(C0, galloc(7, 1, 0x20, u64::MAX, 1, Api::CudaMalloc));
    s.apply(C0, galloc(8, 1, 0x30, u64::MAX, 1, Api::CudaMalloc));
    s.apply(C0, galloc(9, 1, u64::MAX, 5, 2, Api::CuMemAddressReserve)); // empty
    s.finish();
    let p = &s.processes[0];
    assert_eq!(p.anomalies.malformed_gpu_records, 5);
    assert_eq!(p.anomalies.empty_ranges, 1);
    assert_eq!(gs(p, 1, Api::CudaMalloc).outstanding_bytes, u64::MAX);
    assert_eq!(gs(p, 1, Api::CuMemMap).outstanding_bytes, 1);
}

/// Random true histories of a few handle values (creates, retains and releases on random
/// threads, the count never reaching zero before the last release), arriving with the
/// threads interleaved at random: the outstanding bytes per site are the truth's.
#[test]
fn random_handle_histories_match_the_truth() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    for round in 0..500 {
        let threads = 1 + rng.below(3) as usize;
        let mut per_thread: Vec<Vec<Record>> = vec![Vec::new(); threads];
        let mut truth: std::collections::HashMap<u32, u64> = std::collections::HashMap::new();
        let mut ts = 1u64;
        let mut push = |rng: &mut Rng, ts: &mut u64, mk: &dyn Fn(u64, u32) -> Record| {
            *ts += 1 + rng.below(3);
            let t = rng.below(threads as u64) as usize;
            per_thread[t].push(mk(*ts, t as u32));
        };
        for handle in 1..=2u64 {
            let lifetimes = 1 + rng.below(3);
            for l in 0..lifetimes {
                let stack = 1 + rng.below(4) as u32;
                let size = 1 + rng.below(100);
                push(&mut rng, &mut ts, &|ts, t| {
                    galloc(ts, t, handle, size, stack, Api::CuMemCreate)
                });
                let mut refs = 1;
                for _ in 0..rng.below(4) {
                    if refs > 1 && rng.below(2) == 0 {
                        refs -= 1;
                        push(&mut rng, &mut ts, &|ts, t| {
                            gfree(ts, t, handle, 0, Api::CuMemRelease)
                        });
                    } else {
                        refs += 1;
                        push(&mut rng, &mut ts, &|ts, t| {
                            galloc(ts, t, handle, size, 5, Api::CuMemRetainAllocationHandle)
                        });
                    }
                }
                let keep = l + 1 == lifetimes && rng.below(2) == 0;
                let releases = if keep { refs - 1 } else { refs };
                for _ in 0..releases {
                    push(&mut rng, &mut ts, &|ts, t| {
                        gfree(ts, t, handle, 0, Api::CuMemRelease)
                    });
                }
                if keep {
                    *truth.entry(stack).or_default() += size;
                }
            }
        }
        let mut cursors = vec![0usize; threads];
        let mut order = Vec::new();
        loop {
            let open: Vec<usize> = (0..threads)
                .filter(|&i| cursors[i] < per_thread[i].len())
                .collect();
            if open.is_empty() {
                break;
            }
            let i = open[rng.below(open.len() as u64) as usize];
            order.push(per_thread[i][cursors[i]].clone());
            cursors[i] += 1;
        }
        let mut s = one_process();
        s.apply_all(C0, order.clone());
        check_tables(&s);
        s.end_stream(C0, ConnClose::Eof);
        let p = &s.processes[0];
        for id in 1..=4 {
            assert_eq!(
                gs(p, id, Api::CuMemCreate).outstanding_bytes,
                truth.get(&id).copied().unwrap_or(0),
                "round {round}, site {id}, arrival {order:?}"
            );
        }
        assert_eq!(
            gs(p, 5, Api::CuMemRetainAllocationHandle).allocations,
            0,
            "round {round}: every retain found its handle live"
        );
        assert_eq!(p.unknown_frees, 0, "round {round} {order:?}");
        assert_eq!(p.anomalies.implied_frees, 0, "round {round} {order:?}");
    }
}
