//! Turns one batch of raw events into protocol records on the sender thread: stack hashes
//! become small sequential `StackId`s (a `Stack` record the first time a hash is seen in the
//! stream) and raw timestamps become monotonic nanoseconds.

use crate::record::raw::NO_DEVICE;
use crate::record::raw::{Batch, Loss, RawEvent};
use crate::timebase::Timebase;
use leakscope_protocol::{
    Alloc, Capture, DeviceOrdinal, Fork, Free, GpuAlloc, Pid, PoolEvent, PoolHandle, Record,
    RuntimeAddr, StackDef, StackId, ThreadId, Timestamp,
};
use std::collections::hash_map::{Entry, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// Stack hashes are already well mixed: use them as their own hash.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

fn ordinal(device: u8) -> Option<DeviceOrdinal> {
    (device != NO_DEVICE).then_some(DeviceOrdinal(u32::from(device)))
}

/// The per-stream conversion state.
pub struct Converter {
    stacks: HashMap<u64, StackId, BuildHasherDefault<PassThrough>>,
    next_id: u32,
    pub timebase: Timebase,
}

impl Converter {
    pub fn new(timebase: Timebase) -> Converter {
        Converter {
            stacks: HashMap::default(),
            next_id: 0,
            timebase,
        }
    }

    /// Appends `b`'s records to `out`. Returns what had to be dropped: allocations whose
    /// stack was never defined in this stream (a bug if it happens).
    pub fn batch(&mut self, b: &Batch, out: &mut Vec<Record>) -> Loss {
        let mut lost = Loss::default();
        out.reserve(b.len());
        for e in b.events() {
            match *e {
                RawEvent::Stack { hash, first, len } => {
                    if let Entry::Vacant(slot) = self.stacks.entry(hash) {
                        let id = StackId(self.next_id);
                        self.next_id += 1;
                        slot.insert(id);
                        out.push(Record::Stack(StackDef {
                            id,
                            frames: b
                                .frames(first, len)
                                .iter()
                                .map(|&f| RuntimeAddr(f))
                                .collect(),
                            python: Vec::new(),
                        }));
                    }
                }
                RawEvent::Alloc {
                    tid,
                    kind,
                    api,
                    device,
                    addr,
                    size,
                    stack,
                    ts,
                } => match self.stacks.get(&stack) {
                    Some(&id) if api.space().is_some() => out.push(Record::GpuAlloc(GpuAlloc {
                        ts: Timestamp(self.timebase.convert(ts)),
                        thread: ThreadId(tid),
                        addr: RuntimeAddr(addr),
                        size,
                        kind,
                        api,
                        stack: id,
                        device: ordinal(device),
                    })),
                    Some(&id) => out.push(Record::Alloc(Alloc {
                        ts: Timestamp(self.timebase.convert(ts)),
                        thread: ThreadId(tid),
                        addr: RuntimeAddr(addr),
                        size,
                        kind,
                        api,
                        stack: id,
                    })),
                    None => lost.add(Loss::of(e)),
                },
                RawEvent::Pool {
                    tid,
                    device,
                    action,
                    pool,
                    reserved,
                    used,
                    ts,
                } => out.push(Record::Pool(PoolEvent {
                    ts: Timestamp(self.timebase.convert(ts)),
                    thread: ThreadId(tid),
                    pool: PoolHandle(pool),
                    device: ordinal(device),
                    action,
                    reserved,
                    used,
                })),
                RawEvent::Capture { tid, begin, ts } => out.push(Record::Capture(Capture {
                    ts: Timestamp(self.timebase.convert(ts)),
                    thread: ThreadId(tid),
                    begin,
                })),
                RawEvent::Free {
                    tid,
                    kind,
                    api,
                    addr,
                    len,
                    ts,
                } => out.push(Record::Free(Free {
                    ts: Timestamp(self.timebase.convert(ts)),
                    thread: ThreadId(tid),
                    addr: RuntimeAddr(addr),
                    len,
                    kind,
                    api,
                })),
                RawEvent::Fork { tid, child, ts } => out.push(Record::Fork(Fork {
                    ts: Timestamp(self.timebase.convert(ts)),
                    thread: ThreadId(tid),
                    child: Pid(child),
                })),
            }
        }
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leakscope_protocol::{Api, MemoryKind};

    fn alloc(stack: u64, ts: u64) -> RawEvent {
        RawEvent::Alloc {
            tid: 5,
            kind: MemoryKind::Host,
            api: Api::Calloc,
            device: crate::record::raw::NO_DEVICE,
            addr: 0x10,
            size: 24,
            stack,
            ts,
        }
    }

    #[test]
    fn stacks_are_defined_once_then_referenced() {
        let mut c = Converter::new(Timebase::new(false, 0, 0));
        let mut b = Batch::try_new().unwrap();
        b.push_stack(0xaaa, &[1, 2]);
        b.push(alloc(0xaaa, 100));
        b.push_stack(0xaaa, &[1, 2]); // another thread's definition of the same stack
        b.push_stack(0xbbb, &[3]);
        b.push(alloc(0xbbb, 101));
        b.push(RawEvent::Free {
            tid: 6,
            kind: MemoryKind::Mapped,
            api: Api::Munmap,
            addr: 0x10,
            len: 4096,
            ts: 102,
        });
        b.push(RawEvent::Fork {
            tid: 5,
            child: 77,
            ts: 103,
        });
        let mut out = Vec::new();
        assert_eq!(c.batch(&b, &mut out), Loss::default());
        assert_eq!(
            out,
            vec![
                Record::Stack(StackDef {
                    id: StackId(0),
                    frames: vec![RuntimeAddr(1), RuntimeAddr(2)],
                    python: vec![]
                }),
                Record::Alloc(Alloc {
                    ts: Timestamp(100),
                    thread: ThreadId(5),
                    addr: RuntimeAddr(0x10),
                    size: 24,
                    kind: MemoryKind::Host,
                    api: Api::Calloc,
                    stack: StackId(0)
                }),
                Record::Stack(StackDef {
                    id: StackId(1),
                    frames: vec![RuntimeAddr(3)],
                    python: vec![]
                }),
                Record::Alloc(Alloc {
                    ts: Timestamp(101),
                    thread: ThreadId(5),
                    addr: RuntimeAddr(0x10),
                    size: 24,
                    kind: MemoryKind::Host,
                    api: Api::Calloc,
                    stack: StackId(1)
                }),
                Record::Free(Free {
                    ts: Timestamp(102),
                    thread: ThreadId(6),
                    addr: RuntimeAddr(0x10),
                    len: 4096,
                    kind: MemoryKind::Mapped,
                    api: Api::Munmap
                }),
                Record::Fork(Fork {
                    ts: Timestamp(103),
                    thread: ThreadId(5),
                    child: Pid(77)
                }),
            ]
        );
        // A later batch refers to the stack without redefining it.
        let mut b2 = Batch::try_new().unwrap();
        b2.push(alloc(0xbbb, 200));
        out.clear();
        c.batch(&b2, &mut out);
        assert!(matches!(
            out[..],
            [Record::Alloc(Alloc {
                stack: StackId(1),
                ..
            })]
        ));
    }

    #[test]
    fn undefined_stacks_are_dropped_and_counted() {
        let mut c = Converter::new(Timebase::new(false, 0, 0));
        let mut b = Batch::try_new().unwrap();
        b.push(alloc(0xdead, 1));
        let mut out = Vec::new();
        let lost = c.batch(&b, &mut out);
        assert!(out.is_empty());
        assert_eq!(
            lost,
            Loss {
                allocs: 1,
                alloc_bytes: 24,
                frees: 0
            }
        );
    }
}
