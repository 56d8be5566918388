//! Tests of the state rules: timestamp-ordered pairing at one address in every arrival
//! order, mapped ranges, fork seeding, temporary threshold, peaks, hostile streams.

use super::*;
use crate::test_records::Rng;
use leakscope_protocol::{
    Alloc, Api, End, EndReason, Fork, Free, ModuleUnload, Origin, Record, StackDef, ThreadId,
};

const C0: ConnId = ConnId(0);
const C1: ConnId = ConnId(1);
const C2: ConnId = ConnId(2);

fn hello(pid: u32, origin: Origin) -> Record {
    Record::Hello(Hello {
        pid: Pid(pid),
        ppid: Pid(1),
        origin,
        exe: "/bin/test".into(),
        argv: vec!["test".into()],
        start: Timestamp(0),
        start_unix_ns: 0,
        fingerprint: leakscope_protocol::BUILD_FINGERPRINT,
    })
}

fn stack(id: u32) -> Record {
    Record::Stack(StackDef {
        id: StackId(id),
        frames: vec![RuntimeAddr(0x1000 + u64::from(id))],
        python: vec![],
    })
}

fn alloc_k(ts: u64, thread: u32, addr: u64, size: u64, stack: u32, kind: MemoryKind) -> Record {
    Record::Alloc(Alloc {
        ts: Timestamp(ts),
        thread: ThreadId(thread),
        addr: RuntimeAddr(addr),
        size,
        kind,
        api: if kind == MemoryKind::Mapped {
            Api::Mmap
        } else {
            Api::Malloc
        },
        stack: StackId(stack),
    })
}

fn alloc(ts: u64, thread: u32, addr: u64, size: u64, stack: u32) -> Record {
    alloc_k(ts, thread, addr, size, stack, MemoryKind::Host)
}

fn free(ts: u64, thread: u32, addr: u64) -> Record {
    Record::Free(Free {
        ts: Timestamp(ts),
        thread: ThreadId(thread),
        addr: RuntimeAddr(addr),
        len: 0,
        kind: MemoryKind::Host,
        api: Api::Free,
    })
}

fn mmap(ts: u64, addr: u64, size: u64, stack: u32) -> Record {
    alloc_k(ts, 1, addr, size, stack, MemoryKind::Mapped)
}

fn munmap(ts: u64, addr: u64, len: u64) -> Record {
    Record::Free(Free {
        ts: Timestamp(ts),
        thread: ThreadId(1),
        addr: RuntimeAddr(addr),
        len,
        kind: MemoryKind::Mapped,
        api: Api::Munmap,
    })
}

fn site(p: &ProcessState, stack: u32, kind: MemoryKind) -> SiteStats {
    p.sites
        .get(&SiteKey::host(StackId(stack), kind))
        .copied()
        .unwrap_or_default()
}

fn host(p: &ProcessState, stack: u32) -> SiteStats {
    site(p, stack, MemoryKind::Host)
}

/// A state with one process (pid 10, stacks 1..=4 defined) on connection 0.
fn one_process() -> RunState {
    let mut s = RunState::new(StateOptions::default());
    s.apply(C0, hello(10, Origin::Exec));
    for id in 1..=4 {
        s.apply(C0, stack(id));
    }
    s
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

#[test]
fn alloc_then_free_same_thread() {
    let mut s = one_process();
    s.apply(C0, alloc(100, 1, 0x10, 64, 1));
    s.apply(C0, alloc(110, 1, 0x20, 32, 1));
    s.apply(C0, free(5_000_000, 1, 0x10));
    s.end_stream(C0, ConnClose::Eof);
    s.finish();
    let p = &s.processes[0];
    let st = host(p, 1);
    assert_eq!(st.outstanding_bytes, 32);
    assert_eq!(st.outstanding_count, 1);
    assert_eq!(st.allocations, 2);
    assert_eq!(st.allocated_bytes, 96);
    assert_eq!(st.peak_bytes, 96);
    assert_eq!(st.temporary, 0);
    assert_eq!(p.unknown_frees, 0);
    assert_eq!(p.end, StreamEnd::CutOff);
}

/// Thread 1 allocates 0x40 from site 1 at t=5, thread 2 frees it at t=8, thread 3 gets the
/// same address from site 2 at t=10 and keeps it: whatever order the three events arrive
/// in, site 1 ends with nothing outstanding and site 2 with the block.
#[test]
fn reuse_across_threads_in_every_arrival_order() {
    let events = [
        alloc(5, 1, 0x40, 100, 1),
        free(8, 2, 0x40),
        alloc(10, 3, 0x40, 7, 2),
    ];
    for order in permutations(&events) {
        let mut s = one_process();
        s.apply_all(C0, order.clone());
        s.finish();
        let p = &s.processes[0];
        assert_eq!(host(p, 1).outstanding_bytes, 0, "{order:?}");
        assert_eq!(host(p, 1).outstanding_count, 0, "{order:?}");
        assert_eq!(host(p, 2).outstanding_bytes, 7, "{order:?}");
        assert_eq!(host(p, 2).outstanding_count, 1, "{order:?}");
        assert_eq!(host(p, 1).allocations + host(p, 2).allocations, 2);
        assert_eq!(p.unknown_frees, 0, "{order:?}");
        assert_eq!(p.anomalies.implied_frees, 0, "{order:?}");
    }
}

/// Two full lifetimes at one address (alloc 5 / free 8 from site 1, alloc 10 / free 15
/// from site 2, the frees on other threads), all 24 arrival orders: everything freed,
/// nothing unknown. Both are temporary (held 3 and 5 ns, threshold 5): counted exactly when
/// events arrive in time order, never over-counted otherwise.
#[test]
fn two_lifetimes_at_one_address_in_every_arrival_order() {
    let events = [
        alloc(5, 1, 0x40, 100, 1),
        free(8, 2, 0x40),
        alloc(10, 3, 0x40, 7, 2),
        free(15, 4, 0x40),
    ];
    for order in permutations(&events) {
        let mut s = RunState::new(StateOptions {
            temporary_ns: 5,
            ..StateOptions::default()
        });
        s.apply(C0, hello(10, Origin::Exec));
        s.apply_all(C0, order.clone());
        s.finish();
        let p = &s.processes[0];
        for id in [1, 2] {
            assert_eq!(host(p, id).outstanding_bytes, 0, "site {id}, {order:?}");
            assert_eq!(host(p, id).outstanding_count, 0, "site {id}, {order:?}");
            assert_eq!(host(p, id).allocations, 1, "site {id}, {order:?}");
            assert!(host(p, id).temporary <= 1, "site {id}, {order:?}");
            if order == events {
                assert_eq!(host(p, id).temporary, 1, "site {id}");
            }
        }
        assert_eq!(p.unknown_frees, 0, "{order:?}");
        assert_eq!(p.anomalies.implied_frees, 0, "{order:?}");
    }
}

#[test]
fn free_before_its_alloc_pairs_when_the_alloc_arrives() {
    let mut s = one_process();
    s.apply(C0, free(50, 2, 0x80));
    assert_eq!(host(&s.processes[0], 1).outstanding_bytes, 0);
    s.apply(C0, alloc(40, 1, 0x80, 10, 1));
    s.finish();
    let p = &s.processes[0];
    assert_eq!(host(p, 1).outstanding_bytes, 0);
    assert_eq!(host(p, 1).allocations, 1);
    assert_eq!(host(p, 1).temporary, 1);
    assert_eq!(p.unknown_frees, 0);
}

#[test]
fn frees_that_never_find_an_allocation_are_unknown() {
    let mut s = one_process();
    s.apply(C0, free(50, 2, 0x80));
    s.apply(C0, free(60, 2, 0x90));
    // An allocation after the free does not claim it.
    s.apply(C0, alloc(70, 1, 0x80, 10, 1));
    s.end_stream(C0, ConnClose::Eof);
    let p = &s.processes[0];
    assert_eq!(p.unknown_frees, 2);
    assert_eq!(host(p, 1).outstanding_bytes, 10);
}

#[test]
fn a_later_allocation_proves_a_dropped_free() {
    let mut s = one_process();
    s.apply(C0, alloc(10, 1, 0x80, 10, 1));
    // Its free was dropped; the address is handed out again.
    s.apply(C0, alloc(20, 1, 0x80, 30, 2));
    assert_eq!(host(&s.processes[0], 1).outstanding_bytes, 0, "replaced");
    s.end_stream(C0, ConnClose::Eof);
    let p = &s.processes[0];
    assert_eq!(host(p, 1).outstanding_bytes, 0);
    assert_eq!(host(p, 1).temporary, 0, "time of free unknown");
    assert_eq!(host(p, 2).outstanding_bytes, 30);
    assert_eq!(p.anomalies.implied_frees, 1);
}

#[test]
fn late_events_only_count() {
    let mut s = one_process();
    s.apply(C0, alloc(10, 1, 0x80, 8, 1));
    s.apply(C0, free(30, 1, 0x80));
    // An allocation (and the free before it) older than the address's newest free: the
    // block was already freed.
    s.apply(C0, alloc(20, 2, 0x80, 16, 2));
    s.apply(C0, free(15, 3, 0x80));
    // An allocation older than the address's newest allocation: already replaced.
    s.apply(C0, alloc(40, 1, 0x90, 1, 1));
    s.apply(C0, alloc(35, 2, 0x90, 2, 2));
    // A free older than the newest allocation: it freed an earlier block.
    s.apply(C0, free(39, 3, 0x90));
    s.end_stream(C0, ConnClose::Eof);
    let p = &s.processes[0];
    assert_eq!(host(p, 1).outstanding_bytes, 1);
    assert_eq!(host(p, 2).outstanding_bytes, 0);
    assert_eq!(host(p, 2).allocations, 2);
    assert_eq!(host(p, 2).allocated_bytes, 18);
    assert_eq!(p.unknown_frees, 0);
    assert_eq!(p.anomalies.implied_frees, 0);
}

#[test]
fn freed_addresses_are_remembered_for_the_reorder_window() {
    let mut s = RunState::new(StateOptions {
        temporary_ns: 1,
        reorder_window_ns: 1_000,
        ..StateOptions::default()
    });
    s.apply(C0, hello(10, Origin::Exec));
    s.apply(C0, alloc(10, 1, 0x80, 8, 1));
    s.apply(C0, free(20, 1, 0x80));
    // Within the window, a late allocation older than the free stays freed ...
    s.apply(C0, alloc(15, 2, 0x80, 4, 2));
    assert_eq!(host(&s.processes[0], 2).outstanding_bytes, 0);
    // ... and the table is swept of old frees without changing what is outstanding.
    let mut ts = 100;
    for i in 0..(1u64 << 20) {
        ts += 10;
        s.apply(C0, alloc(ts, 1, 0x1000 + i % 7 * 16, 1, 1));
        s.apply(C0, free(ts + 1, 1, 0x1000 + i % 7 * 16));
    }
    s.end_stream(C0, ConnClose::Eof);
    let p = &s.processes[0];
    assert_eq!(host(p, 1).outstanding_bytes, 0);
    assert_eq!(host(p, 2).outstanding_bytes, 0);
    assert_eq!(p.unknown_frees, 0);
}

#[test]
fn temporary_threshold_is_configurable() {
    for (threshold, expect) in [(1_000_000, 1), (100, 0)] {
        let mut s = RunState::new(StateOptions {
            temporary_ns: threshold,
            ..StateOptions::default()
        });
        s.apply(C0, hello(10, Origin::Exec));
        s.apply(C0, alloc(1_000, 1, 0x10, 8, 1));
        s.apply(C0, free(501_000, 1, 0x10)); // held 0.5 ms
        s.apply(C0, alloc(1_000_000, 1, 0x10, 8, 1));
        s.apply(C0, free(3_000_000, 1, 0x10)); // held 2 ms
        s.finish();
        assert_eq!(host(&s.processes[0], 1).temporary, expect, "{threshold}");
    }
}

#[test]
fn peak_is_the_highest_outstanding() {
    let mut s = one_process();
    s.apply(C0, alloc(1, 1, 0x10, 100, 1));
    s.apply(C0, alloc(2, 1, 0x20, 50, 1));
    s.apply(C0, free(3, 1, 0x10));
    s.apply(C0, alloc(4, 1, 0x30, 20, 1));
    s.finish();
    let st = host(&s.processes[0], 1);
    assert_eq!(st.peak_bytes, 150);
    assert_eq!(st.outstanding_bytes, 70);
    assert_eq!(st.outstanding_count, 2);
}

#[test]
fn partial_munmap_splits_and_keeps_the_site() {
    let mut s = one_process();
    let m = MemoryKind::Mapped;
    s.apply(C0, mmap(10, 0x10_000, 0x4000, 3));
    // Unmap the middle page: two pieces remain.
    s.apply(C0, munmap(20, 0x11_000, 0x1000));
    let st = site(&s.processes[0], 3, m);
    assert_eq!(st.outstanding_bytes, 0x3000);
    assert_eq!(st.outstanding_count, 2);
    // Unmap the first page and half of the tail (crossing the hole).
    s.apply(C0, munmap(30, 0x10_000, 0x2800));
    let st = site(&s.processes[0], 3, m);
    assert_eq!(st.outstanding_bytes, 0x1800);
    assert_eq!(st.outstanding_count, 1);
    // The rest in one unmap that also covers unmapped space.
    s.apply(C0, munmap(40, 0x0f_000, 0x10_000));
    s.finish();
    let p = &s.processes[0];
    let st = site(p, 3, m);
    assert_eq!(st.outstanding_bytes, 0);
    assert_eq!(st.outstanding_count, 0);
    assert_eq!(st.allocations, 1);
    assert_eq!(st.allocated_bytes, 0x4000);
    assert_eq!(st.peak_bytes, 0x4000);
    assert_eq!(st.temporary, 0, "split mappings are never temporary");
    assert_eq!(p.unknown_frees, 0);
}

#[test]
fn one_munmap_covering_several_mappings() {
    let mut s = one_process();
    let m = MemoryKind::Mapped;
    s.apply(C0, mmap(10, 0x10_000, 0x1000, 1));
    s.apply(C0, mmap(11, 0x11_000, 0x1000, 2));
    s.apply(C0, mmap(12, 0x14_000, 0x1000, 3));
    s.apply(C0, munmap(20, 0x10_800, 0x3000)); // half of 1, all of 2, none of 3
    s.finish();
    let p = &s.processes[0];
    assert_eq!(site(p, 1, m).outstanding_bytes, 0x800);
    assert_eq!(site(p, 1, m).outstanding_count, 1);
    assert_eq!(site(p, 2, m).outstanding_bytes, 0);
    assert_eq!(site(p, 2, m).outstanding_count, 0);
    assert_eq!(site(p, 2, m).temporary, 1, "whole and within 1 ms");
    assert_eq!(site(p, 3, m).outstanding_bytes, 0x1000);
}

#[test]
fn unaligned_mapping_size_is_reduced_by_exactly_the_overlap() {
    let mut s = one_process();
    s.apply(C0, mmap(10, 0x10_000, 4000, 1));
    s.apply(C0, munmap(20, 0x10_000, 4096));
    s.finish();
    let st = site(&s.processes[0], 1, MemoryKind::Mapped);
    assert_eq!(st.outstanding_bytes, 0);
    assert_eq!(st.outstanding_count, 0);
    assert_eq!(st.allocated_bytes, 4000);
}

#[test]
fn mremap_moves_the_mapping_to_the_new_site() {
    let mut s = one_process();
    let m = MemoryKind::Mapped;
    s.apply(C0, mmap(10, 0x10_000, 0x2000, 1));
    s.apply(
        C0,
        Record::Free(Free {
            ts: Timestamp(20),
            thread: ThreadId(1),
            addr: RuntimeAddr(0x10_000),
            len: 0x2000,
            kind: m,
            api: Api::Mremap,
        }),
    );
    s.apply(
        C0,
        Record::Alloc(Alloc {
            ts: Timestamp(20),
            thread: ThreadId(1),
            addr: RuntimeAddr(0x40_000),
            size: 0x8000,
            kind: m,
            api: Api::Mremap,
            stack: StackId(2),
        }),
    );
    s.finish();
    let p = &s.processes[0];
    assert_eq!(site(p, 1, m).outstanding_bytes, 0);
    assert_eq!(site(p, 2, m).outstanding_bytes, 0x8000);
    assert_eq!(site(p, 2, m).outstanding_count, 1);
    assert_eq!(p.unknown_frees, 0);
}

#[test]
fn munmap_arriving_before_its_mmap() {
    let mut s = one_process();
    s.apply(C0, munmap(20, 0x10_000, 0x1000));
    s.apply(C0, mmap(10, 0x10_000, 0x1000, 1));
    // A mapping made after the unmap is not affected by it.
    s.apply(C0, mmap(30, 0x10_000, 0x1000, 2));
    s.finish();
    let p = &s.processes[0];
    assert_eq!(site(p, 1, MemoryKind::Mapped).outstanding_bytes, 0);
    assert_eq!(site(p, 2, MemoryKind::Mapped).outstanding_bytes, 0x1000);
    assert_eq!(p.unknown_frees, 0);
}

#[test]
fn mapping_over_an_older_one_cuts_it_once_settled() {
    let mut s = one_process();
    let m = MemoryKind::Mapped;
    s.apply(C0, mmap(10, 0x10_000, 0x4000, 1));
    s.apply(C0, mmap(20, 0x11_000, 0x1000, 2)); // MAP_FIXED over the middle
    s.apply(C0, mmap(21, 0x13_000, 0x1000, 3)); // and over the tail
    s.finish();
    let p = &s.processes[0];
    assert_eq!(site(p, 1, m).outstanding_bytes, 0x2000);
    assert_eq!(site(p, 2, m).outstanding_bytes, 0x1000);
    assert_eq!(site(p, 3, m).outstanding_bytes, 0x1000);
}

fn forked_parent(s: &mut RunState) {
    s.apply(C0, hello(10, Origin::Exec));
    s.apply(C0, stack(1));
    s.apply(C0, stack(2));
    s.apply(C0, alloc(10, 1, 0x10, 100, 1)); // live at the fork
    s.apply(C0, alloc(11, 1, 0x20, 50, 1)); // freed before the fork
    s.apply(C0, free(12, 1, 0x20));
    s.apply(C0, mmap(13, 0x10_000, 0x2000, 2));
    s.apply(C0, alloc(14, 1, 0x30, 30, 2)); // freed after the fork
}

fn fork(ts: u64, child: u32) -> Record {
    Record::Fork(Fork {
        ts: Timestamp(ts),
        thread: ThreadId(1),
        child: Pid(child),
    })
}

/// The child's id for the parent's stack `parent_id`: found by frames.
fn inherited(c: &ProcessState, parent_id: u32) -> u32 {
    let frames = vec![RuntimeAddr(0x1000 + u64::from(parent_id))];
    let ids: Vec<u32> = c
        .stacks
        .iter()
        .filter(|(id, f)| **f == frames && id.0 > u32::MAX / 2)
        .map(|(id, _)| id.0)
        .collect();
    assert_eq!(ids.len(), 1, "{:?}", c.stacks);
    ids[0]
}

fn check_seeded_child(s: &RunState) {
    let c = s.process(Pid(11)).expect("child");
    assert!(c.notes.is_empty(), "{:?}", c.notes);
    assert_eq!(c.anomalies, Anomalies::default());
    let (s1, s2) = (inherited(c, 1), inherited(c, 2));
    assert_eq!(host(c, s1).outstanding_bytes, 100);
    assert_eq!(host(c, s1).outstanding_count, 1);
    assert_eq!(host(c, s1).allocations, 0, "inherited, not allocated");
    // 0x30 was live at the fork (the parent freed it later); the child freed its copy.
    assert_eq!(host(c, s2).outstanding_bytes, 0);
    assert_eq!(host(c, s2).outstanding_count, 0);
    assert_eq!(site(c, s2, MemoryKind::Mapped).outstanding_bytes, 0x2000);
    assert_eq!(c.stacks.len(), 4, "two inherited, two its own");
    // The child's own stack 1 is another stack than the parent's 1.
    assert_eq!(c.stacks[&StackId(1)], vec![RuntimeAddr(0x2001)]);
    // The child frees an inherited block and allocates its own.
    assert_eq!(host(c, 3).outstanding_bytes, 5);
    assert_eq!(c.unknown_frees, 0);
    let parent = s.process(Pid(10)).unwrap();
    assert_eq!(host(parent, 1).outstanding_bytes, 100);
    assert_eq!(host(parent, 2).outstanding_bytes, 0);
}

fn child_stream() -> Vec<Record> {
    vec![
        hello(11, Origin::Fork { parent: Pid(10) }),
        // The child numbers its stacks from the start again.
        Record::Stack(StackDef {
            id: StackId(1),
            frames: vec![RuntimeAddr(0x2001)],
            python: vec![],
        }),
        stack(3),
        free(30, 1, 0x30),
        alloc(31, 1, 0x40, 5, 3),
    ]
}

#[test]
fn fork_child_after_the_fork_record() {
    let mut s = RunState::new(StateOptions::default());
    forked_parent(&mut s);
    s.apply(C0, fork(20, 11));
    s.apply(C0, free(21, 1, 0x30));
    s.apply_all(C1, child_stream());
    s.end_stream(C1, ConnClose::Eof);
    s.end_stream(C0, ConnClose::Eof);
    s.finish();
    check_seeded_child(&s);
}

#[test]
fn fork_child_arriving_before_the_fork_record_waits() {
    let mut s = RunState::new(StateOptions::default());
    forked_parent(&mut s);
    s.apply_all(C1, child_stream());
    s.end_stream(C1, ConnClose::Eof);
    assert_eq!(
        host(s.process(Pid(11)).unwrap(), 3).allocations,
        0,
        "held back"
    );
    s.apply(C0, fork(20, 11));
    s.apply(C0, free(21, 1, 0x30));
    s.end_stream(C0, ConnClose::Eof);
    s.finish();
    check_seeded_child(&s);
    assert_eq!(s.process(Pid(11)).unwrap().end, StreamEnd::CutOff);
}

#[test]
fn fork_chain_resolves_when_the_root_arrives_last() {
    // Replay order: grandchild, child, then parent.
    let mut s = RunState::new(StateOptions::default());
    s.apply_all(
        C2,
        [
            hello(12, Origin::Fork { parent: Pid(11) }),
            stack(1),
            alloc(40, 1, 0x50, 1, 1),
        ],
    );
    s.end_stream(C2, ConnClose::Eof);
    s.apply_all(C1, child_stream());
    s.apply(C1, fork(35, 12));
    s.end_stream(C1, ConnClose::Eof);
    forked_parent(&mut s);
    s.apply(C0, fork(20, 11));
    s.apply(C0, free(21, 1, 0x30));
    s.end_stream(C0, ConnClose::Eof);
    s.finish();
    check_seeded_child(&s);
    let g = s.process(Pid(12)).unwrap();
    assert!(g.notes.is_empty(), "{:?}", g.notes);
    assert_eq!(g.anomalies, Anomalies::default());
    assert_eq!(
        host(g, inherited(g, 1)).outstanding_bytes,
        100,
        "from the grandparent"
    );
    assert_eq!(host(g, 1).outstanding_bytes, 1, "its own");
    let child_3 = g
        .stacks
        .iter()
        .find(|(id, f)| id.0 > u32::MAX / 2 && **f == vec![RuntimeAddr(0x1003)])
        .map(|(id, _)| id.0)
        .unwrap();
    assert_eq!(host(g, child_3).outstanding_bytes, 5, "the child's block");
}

#[test]
fn fork_child_whose_parent_never_reports_the_fork_starts_empty() {
    let mut s = RunState::new(StateOptions::default());
    forked_parent(&mut s);
    s.apply_all(C1, child_stream());
    s.end_stream(C0, ConnClose::Eof);
    let c = s.process(Pid(11)).unwrap();
    assert_eq!(host(c, 1).outstanding_bytes, 0);
    assert_eq!(host(c, 3).outstanding_bytes, 5);
    assert_eq!(c.unknown_frees, 0, "not settled while the child streams");
    assert!(
        c.notes[0].contains("ended without reporting this fork"),
        "{:?}",
        c.notes
    );

    // A parent never seen at all: released at finish.
    let mut s = RunState::new(StateOptions::default());
    s.apply_all(C1, child_stream());
    s.finish();
    let c = s.process(Pid(11)).unwrap();
    assert!(c.notes[0].contains("never seen"), "{:?}", c.notes);
    assert_eq!(host(c, 3).outstanding_bytes, 5);
    assert_eq!(
        c.unknown_frees, 1,
        "the free of an inherited block it never got"
    );
}

#[test]
fn exec_end_followed_by_records_continues_and_new_pid_stream_is_new_process() {
    let mut s = one_process();
    s.apply(
        C0,
        Record::End(End {
            ts: Timestamp(5),
            reason: EndReason::Exec,
        }),
    );
    assert_eq!(s.processes[0].end, StreamEnd::Clean(EndReason::Exec));
    s.apply(C0, alloc(6, 1, 0x10, 1, 1));
    assert_eq!(s.processes[0].end, StreamEnd::Open);
    s.apply(
        C0,
        Record::End(End {
            ts: Timestamp(7),
            reason: EndReason::Exec,
        }),
    );
    s.end_stream(C0, ConnClose::Eof);
    s.apply(C1, hello(10, Origin::Exec));
    s.apply(C1, alloc(8, 1, 0x10, 2, 1));
    s.end_stream(C1, ConnClose::StillOpen);
    s.finish();
    assert_eq!(s.processes.len(), 2);
    assert_eq!(s.processes[0].end, StreamEnd::Clean(EndReason::Exec));
    assert_eq!(s.processes[1].end, StreamEnd::Open);
    assert_eq!(s.process(Pid(10)).unwrap().stream, C1);
    assert_eq!(host(&s.processes[1], 1).outstanding_bytes, 2);
}

#[test]
fn latest_dropped_record_wins() {
    let mut s = one_process();
    let d = |ts, allocs| {
        Record::Dropped(Dropped {
            ts: Timestamp(ts),
            allocs,
            alloc_bytes: allocs * 8,
            frees: 1,
        })
    };
    s.apply(C0, d(10, 3));
    s.apply(C0, d(20, 7));
    s.apply(C0, d(15, 5)); // older, arrived late
    assert_eq!(s.processes[0].dropped.allocs, 7);
    assert_eq!(s.processes[0].dropped.alloc_bytes, 56);
}

#[test]
fn hostile_records_are_counted_not_fatal() {
    let mut s = RunState::new(StateOptions::default());
    // Records before Hello.
    s.apply(C0, alloc(1, 1, 0x10, u64::MAX, 9));
    s.apply(C0, alloc(2, 1, 0x20, u64::MAX - 1, 9));
    s.apply(C0, hello(10, Origin::Exec));
    s.apply(C0, hello(11, Origin::Exec));
    s.apply(C0, free(u64::MAX, 1, 0x999));
    s.apply(C0, mmap(3, u64::MAX - 10, u64::MAX, 1));
    s.apply(C0, mmap(4, u64::MAX, 5, 1));
    s.apply(C0, munmap(5, 0, 0));
    s.apply(C0, munmap(6, 0, u64::MAX));
    s.apply(C0, stack(1));
    s.apply(
        C0,
        Record::Stack(StackDef {
            id: StackId(1),
            frames: vec![],
            python: vec![],
        }),
    );
    s.apply(C0, Record::ModuleUnload(ModuleUnload { id: ModuleId(77) }));
    s.apply(C0, fork(7, 10)); // a fork of itself
    s.apply(C0, free(0, 1, 0x10));
    s.end_stream(C0, ConnClose::Damaged("garbage at byte 9".into()));
    s.end_stream(ConnId(5), ConnClose::Damaged("bad magic".into()));
    s.finish();
    let p = &s.processes[0];
    assert_eq!(p.hello.pid, Pid(10), "late Hello adopted");
    assert_eq!(p.anomalies.records_before_hello, 2);
    assert_eq!(p.anomalies.extra_hellos, 1);
    assert_eq!(p.anomalies.stack_redefinitions, 1);
    assert_eq!(p.anomalies.unknown_module_unloads, 1);
    assert_eq!(p.anomalies.empty_ranges, 2);
    assert_eq!(p.anomalies.undefined_stacks, 1, "stack 9");
    assert_eq!(host(p, 9).outstanding_bytes, u64::MAX, "saturated");
    assert_eq!(host(p, 9).allocated_bytes, u64::MAX, "saturated");
    assert_eq!(p.end, StreamEnd::Damaged("garbage at byte 9".into()));
    assert!(p.unknown_frees >= 2);
    assert_eq!(s.warnings.len(), 1);
    assert!(s.warnings[0].contains("000005"), "{:?}", s.warnings);
}

#[test]
fn shim_fingerprint_mismatch_is_noted() {
    let mut s = RunState::new(StateOptions::default());
    let Record::Hello(mut h) = hello(10, Origin::Exec) else {
        unreachable!()
    };
    h.fingerprint ^= 1;
    s.apply(C0, Record::Hello(h));
    let p = &s.processes[0];
    assert!(p.anomalies.fingerprint_mismatch);
    assert!(p.notes[0].contains("rebuild"), "{:?}", p.notes);
}

/// Random true histories at a few addresses (allocations and frees alternate, each on a
/// random thread); arrivals interleave the threads' event lists at random, each thread's
/// own events in order (as the shim sends them). Final outstanding bytes per site must be
/// the truth's, the sites must agree with the live tables, and no free may be unknown.
#[test]
fn random_cross_thread_histories_match_the_truth() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for round in 0..2000 {
        let threads = 1 + rng.below(3) as u32;
        let mut per_thread: Vec<Vec<Record>> = vec![Vec::new(); threads as usize];
        let mut truth: std::collections::HashMap<u32, u64> = std::collections::HashMap::new();
        let mut ts = 1u64;
        for addr in 0..3u64 {
            let lifetimes = 1 + rng.below(3);
            for l in 0..lifetimes {
                let stack = 1 + rng.below(4) as u32;
                let size = 1 + rng.below(100);
                ts += 1 + rng.below(5);
                let t = rng.below(u64::from(threads)) as u32;
                per_thread[t as usize].push(alloc(ts, t, 0x100 * (addr + 1), size, stack));
                if l + 1 == lifetimes && rng.below(2) == 0 {
                    *truth.entry(stack).or_default() += size;
                } else {
                    ts += 1 + rng.below(5);
                    let t = rng.below(u64::from(threads)) as usize;
                    per_thread[t].push(free(ts, t as u32, 0x100 * (addr + 1)));
                }
            }
        }
        // Each thread's events in time order, interleaved at random.
        for v in &mut per_thread {
            v.sort_by_key(|r| r.ts());
        }
        let mut cursors = vec![0usize; per_thread.len()];
        let mut order = Vec::new();
        loop {
            let open: Vec<usize> = (0..per_thread.len())
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
        let live_total = s.router_outstanding(0);
        let site_total: u64 = s.processes[0]
            .sites
            .values()
            .map(|v| v.outstanding_bytes)
            .sum();
        assert_eq!(
            live_total, site_total,
            "round {round}: tables vs sites {order:?}"
        );
        s.end_stream(C0, ConnClose::Eof);
        let p = &s.processes[0];
        for id in 1..=4 {
            assert_eq!(
                host(p, id).outstanding_bytes,
                truth.get(&id).copied().unwrap_or(0),
                "round {round}, site {id}, arrival {order:?}"
            );
        }
        assert_eq!(p.unknown_frees, 0, "round {round} {order:?}");
        assert_eq!(p.anomalies.implied_frees, 0, "round {round} {order:?}");
    }
}

impl RunState {
    fn router_outstanding(&self, idx: usize) -> u64 {
        self.router_live(idx).outstanding_bytes()
    }
}
