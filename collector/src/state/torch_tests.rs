//! Tests of `torch.rs`: block events out of order, sizes and placements joined from
//! readings, readings as changes, sites, peaks and the counts.

use super::*;
use leakscope_protocol::torch::{BlockInfo, MemPoolInfo};
use leakscope_protocol::{RuntimeAddr, ThreadId};

const TEMP: u64 = 1_000;
const SEG: u64 = 0x7f00_0000_0000;
const MIB: u64 = 1 << 20;

fn ev(ts: u64, addr: u64, alloc: bool, stack: u32) -> TorchBlock {
    TorchBlock {
        ts: Timestamp(ts),
        thread: ThreadId(1),
        addr: RuntimeAddr(addr),
        alloc,
        stack: StackId(stack),
    }
}

fn blk(addr: u64, size: u64, state: BlockState) -> BlockInfo {
    BlockInfo {
        addr: RuntimeAddr(addr),
        size,
        requested: if state == BlockState::Allocated {
            size - 1
        } else {
            0
        },
        state,
    }
}

/// A 2 MiB segment at `addr` of `pool` whose blocks are `allocated` (address, size) and
/// free space between.
fn seg(addr: u64, pool: TorchPoolId, allocated: &[(u64, u64)]) -> SegmentInfo {
    let mut blocks = Vec::new();
    let mut at = addr;
    for &(a, size) in allocated {
        if a > at {
            blocks.push(blk(at, a - at, BlockState::Inactive));
        }
        blocks.push(blk(a, size, BlockState::Allocated));
        at = a + size;
    }
    if at < addr + 2 * MIB {
        blocks.push(blk(at, addr + 2 * MIB - at, BlockState::Inactive));
    }
    SegmentInfo {
        device: DeviceOrdinal(0),
        addr: RuntimeAddr(addr),
        size: 2 * MIB,
        stream: 0,
        pool,
        expandable: false,
        blocks,
    }
}

fn state(ts: u64, full: bool, segments: Vec<SegmentInfo>, removed: &[u64]) -> TorchState {
    TorchState {
        ts: Timestamp(ts),
        full,
        segments,
        removed: removed
            .iter()
            .map(|a| (DeviceOrdinal(0), RuntimeAddr(*a)))
            .collect(),
        mempools: Vec::new(),
        continues: false,
    }
}

const DEFAULT: TorchPoolId = TorchPoolId(0, 0);

fn place(pool: TorchPoolId) -> Option<Placement> {
    Some(Placement {
        device: DeviceOrdinal(0),
        pool,
        expandable: false,
    })
}

fn site(t: &TorchTrack, stack: u32) -> Vec<(Option<Placement>, BlockSiteStats)> {
    t.block_sites()
        .into_iter()
        .filter(|(k, _)| k.stack == StackId(stack))
        .map(|(k, s)| (k.placement, s))
        .collect()
}

#[test]
fn sizes_and_pools_come_from_readings() {
    let mut t = TorchTrack::default();
    let h = Horizon(Some(0));
    // Block 1 handed out before the first reading, which shows it; block 2 after it.
    t.block(&ev(10, SEG, true, 1), h, TEMP);
    t.state(
        state(20, true, vec![seg(SEG, DEFAULT, &[(SEG, 4096)])], &[]),
        h,
    );
    t.block(&ev(30, SEG + 4096, true, 2), h, TEMP);
    let one = site(&t, 1);
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].0, place(DEFAULT));
    assert_eq!(
        (one[0].1.outstanding_bytes, one[0].1.outstanding_count),
        (4096, 1)
    );
    assert_eq!(one[0].1.peak_bytes, 4096);
    // Block 2: placed from the mirror at once, size unknown until the next reading.
    let two = site(&t, 2);
    assert_eq!(two[0].0, place(DEFAULT));
    assert_eq!(
        (two[0].1.outstanding_bytes, two[0].1.unsized_outstanding),
        (0, 1)
    );
    t.state(
        state(
            40,
            false,
            vec![seg(SEG, DEFAULT, &[(SEG, 4096), (SEG + 4096, 512)])],
            &[],
        ),
        h,
    );
    let two = site(&t, 2);
    assert_eq!(
        (two[0].1.outstanding_bytes, two[0].1.unsized_outstanding),
        (512, 0)
    );
    assert_eq!(t.untracked(), (0, 0));
    assert_eq!(t.counts.readings, 2);
    assert_eq!(t.readings().pushed(), 2);
    let last = t.readings().last().unwrap();
    assert_eq!(last.ts, Timestamp(40));
    assert_eq!(last.pools[0].1.allocated, 4608);
    assert_eq!(last.pools[0].1.reserved, 2 * MIB);
}

#[test]
fn blocks_freed_in_a_new_segment_are_placed_at_the_next_reading() {
    let mut t = TorchTrack::default();
    let h = Horizon(Some(0));
    let graph = TorchPoolId(1, 0);
    // Churn in a segment no reading has shown yet: placed when the next reading shows it.
    for i in 0..10 {
        t.block(&ev(10 + 2 * i, SEG, true, 7), h, TEMP);
        t.block(&ev(11 + 2 * i, SEG, false, 0), h, TEMP);
    }
    let seven = site(&t, 7);
    assert_eq!(seven.len(), 1);
    assert_eq!(seven[0].0, None, "no reading yet");
    t.state(state(100, true, vec![seg(SEG, graph, &[])], &[]), h);
    let seven = site(&t, 7);
    assert_eq!(seven.len(), 1);
    assert_eq!(seven[0].0, place(graph));
    assert_eq!(
        (
            seven[0].1.allocations,
            seven[0].1.temporary,
            seven[0].1.unsized_allocations
        ),
        (10, 10, 10)
    );
}

#[test]
fn a_reading_older_than_the_block_does_not_size_it() {
    let mut t = TorchTrack::default();
    let h = Horizon(Some(0));
    // The reading at 20 shows an older block at the address (freed at 25, handed out
    // again at 30): the new block must not take its size.
    t.block(&ev(10, SEG, true, 1), h, TEMP);
    t.block(&ev(25, SEG, false, 0), h, TEMP);
    t.block(&ev(30, SEG, true, 2), h, TEMP);
    t.state(
        state(20, true, vec![seg(SEG, DEFAULT, &[(SEG, 4096)])], &[]),
        h,
    );
    let two = site(&t, 2);
    assert_eq!(two[0].1.unsized_outstanding, 1);
    let one = site(&t, 1);
    assert_eq!(
        (
            one[0].1.allocations,
            one[0].1.outstanding_count,
            one[0].1.unsized_allocations
        ),
        (1, 0, 1),
        "freed before any reading: counted without a size"
    );
    // The allocated block the reading shows is held by block 2 (handed out after it): the
    // reading's block counts as untracked.
    assert_eq!(t.untracked(), (1, 4096));
}

#[test]
fn out_of_order_events_pair_and_count() {
    let mut t = TorchTrack::default();
    let h = Horizon(Some(0));
    t.state(state(5, true, vec![seg(SEG, DEFAULT, &[])], &[]), h);
    // The free arrives before its allocation (another thread's buffer): temporary.
    t.block(&ev(2000, SEG, false, 0), h, TEMP);
    t.block(&ev(2000 - TEMP / 2, SEG, true, 3), h, TEMP);
    // A newer allocation replaces one whose free was lost.
    t.block(&ev(2200, SEG + 512, true, 4), h, TEMP);
    t.block(&ev(2300, SEG + 512, true, 4), h, TEMP);
    // A free of a block never seen.
    t.block(&ev(2400, SEG + 1024, false, 0), h, TEMP);
    let three = site(&t, 3);
    assert_eq!(
        (
            three[0].1.allocations,
            three[0].1.temporary,
            three[0].1.outstanding_count
        ),
        (1, 1, 0)
    );
    let four = site(&t, 4);
    assert_eq!((four[0].1.allocations, four[0].1.outstanding_count), (2, 1));
    assert_eq!(t.counts.implied_frees, 1);
    assert_eq!(t.unknown_frees(), 1);
    assert_eq!((t.counts.allocs, t.counts.frees), (3, 2));
    // Past the reordering window, the unpaired free is counted for good.
    t.state(state(2500, false, vec![], &[]), Horizon(Some(2450)));
    assert_eq!((t.counts.unknown_frees, t.unknown_frees()), (1, 1));
}

#[test]
fn readings_apply_as_changes_and_pools_and_peaks_follow() {
    let mut t = TorchTrack::default();
    let h = Horizon(Some(0));
    let graph = TorchPoolId(1, 0);
    let mempool = TorchPoolId(0, 1);
    let seg2 = SEG + 2 * MIB;
    let seg3 = SEG + 4 * MIB;
    t.block(&ev(1, SEG, true, 1), h, TEMP);
    t.block(&ev(2, seg2, true, 1), h, TEMP);
    t.block(&ev(3, seg3, true, 2), h, TEMP);
    let mut first = state(
        10,
        true,
        vec![
            seg(SEG, DEFAULT, &[(SEG, MIB)]),
            seg(seg2, graph, &[(seg2, MIB)]),
            seg(seg3, mempool, &[(seg3, 1000)]),
        ],
        &[],
    );
    first.mempools = vec![MemPoolInfo {
        id: mempool,
        pluggable: true,
    }];
    t.state(first, h);
    assert_eq!(t.mempool(mempool), Some(true));
    assert_eq!(t.mempool(graph), None);
    // Stack 1 has blocks in two pools: two sites.
    let one = site(&t, 1);
    assert_eq!(one.len(), 2);
    assert!(one.iter().all(|(_, s)| s.outstanding_bytes == MIB));
    // Frees, a segment given back (removed), the others unchanged.
    t.block(&ev(20, SEG, false, 0), h, TEMP);
    t.block(&ev(21, seg2, false, 0), h, TEMP);
    t.state(state(30, false, vec![seg(SEG, DEFAULT, &[])], &[seg2]), h);
    assert_eq!(t.segments().count(), 2);
    let one = site(&t, 1);
    assert!(one
        .iter()
        .all(|(_, s)| s.outstanding_bytes == 0 && s.peak_bytes == MIB && s.allocated_bytes == MIB));
    let last = t.readings().last().unwrap();
    let pools: Vec<TorchPoolId> = last.pools.iter().map(|(k, _)| k.pool).collect();
    assert_eq!(pools, vec![DEFAULT, mempool]);
    // A split reading: nothing is taken until its last record.
    let mut part = state(40, true, vec![seg(SEG, DEFAULT, &[])], &[]);
    part.continues = true;
    t.state(part, h);
    assert_eq!(t.readings().pushed(), 2);
    t.state(
        state(40, false, vec![seg(seg3, mempool, &[(seg3, 1000)])], &[]),
        h,
    );
    assert_eq!(t.readings().pushed(), 3);
    assert_eq!(t.segments().count(), 2);
    assert_eq!(t.latest_reading(), Some(Timestamp(40)));
}

/// PyTorch blocks have outlived bytes per stack: a stack that freed a block held 2 s has
/// its live sized blocks counted once older than twice that (plus the reordering window);
/// a stack that never freed has none.
#[test]
fn blocks_outliving_their_stacks_freed_ones_are_summed_per_stack() {
    const S: u64 = 1_000_000_000;
    let mut t = TorchTrack::default();
    let h = Horizon(Some(0));
    t.block(&ev(S, SEG, true, 1), h, TEMP);
    t.block(&ev(3 * S, SEG, false, 1), h, TEMP);
    t.block(&ev(4 * S, SEG + 4096, true, 1), h, TEMP);
    t.block(&ev(4 * S, SEG + 8192, true, 2), h, TEMP);
    t.state(
        state(
            5 * S,
            true,
            vec![seg(SEG, DEFAULT, &[(SEG + 4096, 512), (SEG + 8192, 1024)])],
            &[],
        ),
        h,
    );
    assert_eq!(t.longest_held().get(&StackId(1)), Some(&(2 * S)));
    assert_eq!(t.longest_held().get(&StackId(2)), None);
    let mut out = FxHashMap::default();
    let window = 5 * S;
    // Handed out at 4 s; bar 4 s; window 5 s: outlived after 13 s.
    crate::state::outlived::sum_blocks_by_stack(&t, window, S, 13 * S, &mut out);
    assert_eq!(out.get(&StackId(1)), Some(&0));
    assert_eq!(out.get(&StackId(2)), None);
    crate::state::outlived::sum_blocks_by_stack(&t, window, S, 13 * S + 1, &mut out);
    assert_eq!(out.get(&StackId(1)), Some(&512));
}
