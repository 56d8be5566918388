//! From one reading of PyTorch's caching allocator (the C API's arrays) to `TorchState`
//! records on the side path holding only what changed since the previous reading of the
//! same stream: segments that are new or differ (with all their blocks), and the segments
//! gone. The first reading of a stream (also in a fork child, whose stream is new), and the
//! first after a reading was dropped, is a full listing. What the previous reading held is
//! kept as one fingerprint per segment, not a copy.
//!
//! A large reading is split into several records of the same timestamp (`continues` set
//! on all but the last), so that no record comes near the wire's frame limit. Every
//! allocation here is fallible: out of memory, the reading is dropped.

use super::{LsBlock, LsMemPool, LsSegment, BLOCK_ALLOCATED, BLOCK_AWAITING_FREE, BLOCK_INACTIVE};
use super::{STATE_BUSY, STATE_DROPPED, STATE_OK};
use crate::{session, side};
use leakscope_protocol::torch::{
    BlockInfo, BlockState, MemPoolInfo, SegmentInfo, TorchPoolId, TorchState,
};
use leakscope_protocol::{DeviceOrdinal, Record, RuntimeAddr, Timestamp};
use std::sync::Mutex;

/// Most blocks one record carries (a block encodes in about 15 bytes).
const BLOCKS_PER_RECORD: usize = 1 << 16;

/// One reading as the C API received it.
pub struct Reading<'a> {
    pub segments: &'a [LsSegment],
    pub blocks: &'a [LsBlock],
    pub mempools: &'a [LsMemPool],
}

/// A segment's identity: device and start address.
type SegKey = (u32, u64);

/// What the previous reading of a stream sent.
struct Base {
    /// The session (stream) it was sent on; 0: none yet.
    stream: usize,
    pid: u32,
    /// A reading went out on this stream since the last reset: the next one may hold
    /// changes only.
    sent: bool,
    /// Fingerprint of every segment, sorted by key.
    segments: Vec<(SegKey, u64)>,
}

static BASE: Mutex<Base> = Mutex::new(Base {
    stream: 0,
    pid: 0,
    sent: false,
    segments: Vec::new(),
});

/// Sends `r`, taken at `ts` (a raw clock reading), as changes from the previous reading,
/// and returns a `STATE_*` status. The caller holds a `Guard`.
pub fn submit(r: &Reading<'_>, ts: u64) -> i32 {
    let Ok(mut base) = BASE.try_lock() else {
        return STATE_BUSY;
    };
    let stream = session::current().map_or(0, |s| s as *const session::Session as usize);
    let pid = std::process::id();
    if base.stream != stream || base.pid != pid {
        base.stream = stream;
        base.pid = pid;
        base.sent = false;
    }
    let full = !base.sent;
    let sent = plan(&base.segments, full, r, ts).is_some_and(|plan| {
        let ok = plan
            .records
            .into_iter()
            .all(|record| side::submit(Record::TorchState(record)));
        base.segments = plan.next;
        ok
    });
    base.sent = sent;
    if sent {
        STATE_OK
    } else {
        base.segments = Vec::new();
        STATE_DROPPED
    }
}

/// The records of one reading and the fingerprints to compare the next one with.
struct Plan {
    records: Vec<TorchState>,
    next: Vec<(SegKey, u64)>,
}

/// Builds the records of `r` against `previous` (sorted fingerprints). `full`: list
/// everything. `None` when memory ran out.
fn plan(previous: &[(SegKey, u64)], full: bool, r: &Reading<'_>, ts: u64) -> Option<Plan> {
    let mut next: Vec<(SegKey, u64)> = Vec::new();
    next.try_reserve_exact(r.segments.len()).ok()?;
    let mut changed: Vec<SegmentInfo> = Vec::new();
    for seg in r.segments {
        let Some(device) = u32::try_from(seg.device).ok() else {
            continue;
        };
        let Some(blocks) = blocks_of(seg, r.blocks) else {
            continue;
        };
        let key = (device, seg.address);
        let print = fingerprint(seg, blocks);
        next.push((key, print));
        let same = !full
            && previous
                .binary_search_by_key(&key, |e| e.0)
                .is_ok_and(|i| previous[i].1 == print);
        if !same {
            changed.try_reserve(1).ok()?;
            changed.push(segment_info(device, seg, blocks)?);
        }
    }
    next.sort_unstable_by_key(|e| e.0);
    next.dedup_by_key(|e| e.0);
    let mut removed = Vec::new();
    if !full {
        for (key, _) in previous {
            if next.binary_search_by_key(key, |e| e.0).is_err() {
                removed.try_reserve(1).ok()?;
                removed.push((DeviceOrdinal(key.0), RuntimeAddr(key.1)));
            }
        }
    }
    let mut mempools = Vec::new();
    mempools.try_reserve_exact(r.mempools.len()).ok()?;
    mempools.extend(r.mempools.iter().map(|m| MemPoolInfo {
        id: TorchPoolId(m.id_a, m.id_b),
        pluggable: m.pluggable != 0,
    }));
    let records = split(ts, full, changed, removed, mempools)?;
    Some(Plan { records, next })
}

/// Cuts the changed segments into records of at most [`BLOCKS_PER_RECORD`] blocks (a
/// segment is never cut); the first carries `full`, the removals and the pools.
fn split(
    ts: u64,
    full: bool,
    changed: Vec<SegmentInfo>,
    removed: Vec<(DeviceOrdinal, RuntimeAddr)>,
    mempools: Vec<MemPoolInfo>,
) -> Option<Vec<TorchState>> {
    let mut records: Vec<TorchState> = Vec::new();
    let record = |first: bool| TorchState {
        ts: Timestamp(ts),
        full: full && first,
        segments: Vec::new(),
        removed: Vec::new(),
        mempools: Vec::new(),
        continues: true,
    };
    records.try_reserve(1).ok()?;
    records.push(record(true));
    let mut blocks_here = 0usize;
    for seg in changed {
        if blocks_here > 0 && blocks_here + seg.blocks.len() > BLOCKS_PER_RECORD {
            records.try_reserve(1).ok()?;
            records.push(record(false));
            blocks_here = 0;
        }
        blocks_here += seg.blocks.len();
        let cur = records.last_mut()?;
        cur.segments.try_reserve(1).ok()?;
        cur.segments.push(seg);
    }
    records[0].removed = removed;
    records[0].mempools = mempools;
    if let Some(last) = records.last_mut() {
        last.continues = false;
    }
    Some(records)
}

/// The blocks of `seg`, or `None` when its range lies outside `blocks`.
fn blocks_of<'a>(seg: &LsSegment, blocks: &'a [LsBlock]) -> Option<&'a [LsBlock]> {
    let first = usize::try_from(seg.first_block).ok()?;
    let count = usize::try_from(seg.block_count).ok()?;
    blocks.get(first..first.checked_add(count)?)
}

fn segment_info(device: u32, seg: &LsSegment, blocks: &[LsBlock]) -> Option<SegmentInfo> {
    let mut out = Vec::new();
    out.try_reserve_exact(blocks.len()).ok()?;
    out.extend(blocks.iter().map(|b| BlockInfo {
        addr: RuntimeAddr(b.address),
        size: b.size,
        requested: b.requested_size,
        state: match b.state {
            BLOCK_ALLOCATED => BlockState::Allocated,
            BLOCK_AWAITING_FREE => BlockState::AwaitingFree,
            // BLOCK_INACTIVE, and anything unknown: free for reuse.
            _ => BlockState::Inactive,
        },
    }));
    Some(SegmentInfo {
        device: DeviceOrdinal(device),
        addr: RuntimeAddr(seg.address),
        size: seg.total_size,
        stream: seg.stream,
        pool: TorchPoolId(seg.pool_a, seg.pool_b),
        expandable: seg.expandable != 0,
        blocks: out,
    })
}

/// A 64-bit fingerprint of everything a segment's record would carry.
fn fingerprint(seg: &LsSegment, blocks: &[LsBlock]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |w: u64| {
        h = (h ^ w).wrapping_mul(0x0000_0100_0000_01b3);
        h ^= h >> 29;
    };
    for w in [
        seg.total_size,
        seg.stream,
        seg.pool_a,
        seg.pool_b,
        seg.expandable,
        blocks.len() as u64,
    ] {
        eat(w);
    }
    for b in blocks {
        eat(b.address);
        eat(b.size);
        eat(b.requested_size);
        eat(b.state.min(BLOCK_INACTIVE));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(address: u64, first: u64, count: u64) -> LsSegment {
        LsSegment {
            device: 0,
            address,
            total_size: 2 << 20,
            stream: 7,
            pool_a: 0,
            pool_b: 0,
            expandable: 0,
            first_block: first,
            block_count: count,
        }
    }

    fn block(address: u64, size: u64, state: u64) -> LsBlock {
        LsBlock {
            address,
            size,
            requested_size: size - 1,
            state,
        }
    }

    #[test]
    fn first_reading_is_full_then_only_changes_and_removals() {
        let blocks = [
            block(0x1000, 512, BLOCK_ALLOCATED),
            block(0x1200, (2 << 20) - 512, BLOCK_INACTIVE),
            block(0x9000, 2 << 20, BLOCK_INACTIVE),
        ];
        let segs = [seg(0x1000, 0, 2), seg(0x9000, 2, 1)];
        let pools = [LsMemPool {
            id_a: 0,
            id_b: 3,
            pluggable: 1,
        }];
        let r = Reading {
            segments: &segs,
            blocks: &blocks,
            mempools: &pools,
        };
        let p = plan(&[], true, &r, 5).unwrap();
        assert_eq!(p.records.len(), 1);
        let rec = &p.records[0];
        assert!(rec.full && !rec.continues);
        assert_eq!(rec.ts, Timestamp(5));
        assert_eq!(rec.segments.len(), 2);
        assert_eq!(rec.segments[0].blocks[0].state, BlockState::Allocated);
        assert_eq!(rec.segments[0].blocks[0].requested, 511);
        assert_eq!(rec.segments[0].blocks[1].state, BlockState::Inactive);
        assert_eq!(rec.segments[0].stream, 7);
        assert_eq!(
            rec.mempools,
            vec![MemPoolInfo {
                id: TorchPoolId(0, 3),
                pluggable: true
            }]
        );

        // Unchanged: an empty change record.
        let again = plan(&p.next, false, &r, 6).unwrap();
        assert_eq!(again.records.len(), 1);
        assert!(!again.records[0].full);
        assert!(again.records[0].segments.is_empty() && again.records[0].removed.is_empty());

        // The first segment's block freed, the second segment gone.
        let blocks2 = [
            block(0x1000, 512, BLOCK_INACTIVE),
            block(0x1200, (2 << 20) - 512, BLOCK_INACTIVE),
        ];
        let segs2 = [seg(0x1000, 0, 2)];
        let r2 = Reading {
            segments: &segs2,
            blocks: &blocks2,
            mempools: &[],
        };
        let changed = plan(&again.next, false, &r2, 7).unwrap();
        let rec = &changed.records[0];
        assert_eq!(rec.segments.len(), 1);
        assert_eq!(rec.segments[0].addr, RuntimeAddr(0x1000));
        assert_eq!(rec.removed, vec![(DeviceOrdinal(0), RuntimeAddr(0x9000))]);
    }

    #[test]
    fn bad_block_ranges_and_devices_are_skipped() {
        let blocks = [block(0x1000, 512, 0)];
        let mut bad_device = seg(0x5000, 0, 1);
        bad_device.device = -1;
        let segs = [seg(0x1000, 0, 2), bad_device, seg(0x2000, 0, 1)];
        let r = Reading {
            segments: &segs,
            blocks: &blocks,
            mempools: &[],
        };
        let p = plan(&[], true, &r, 1).unwrap();
        let addrs: Vec<_> = p.records[0].segments.iter().map(|s| s.addr.0).collect();
        assert_eq!(addrs, vec![0x2000]);
    }

    #[test]
    fn large_readings_are_split_without_cutting_a_segment() {
        let per = BLOCKS_PER_RECORD / 2 + 1;
        let blocks: Vec<LsBlock> = (0..3 * per as u64)
            .map(|i| block(0x10_0000 + i * 512, 512, 0))
            .collect();
        let segs: Vec<LsSegment> = (0..3u64)
            .map(|i| seg(0x10_0000 + i * per as u64 * 512, i * per as u64, per as u64))
            .collect();
        let r = Reading {
            segments: &segs,
            blocks: &blocks,
            mempools: &[],
        };
        let p = plan(&[], true, &r, 9).unwrap();
        assert_eq!(p.records.len(), 3);
        assert!(p.records[0].full && !p.records[1].full);
        assert!(p.records[0].continues && p.records[1].continues && !p.records[2].continues);
        assert!(p
            .records
            .iter()
            .all(|r| r.segments.len() == 1 && r.ts == Timestamp(9)));
    }
}
