//! Turns one batch of raw events into protocol records on the sender thread: stack hashes
//! become small sequential `StackId`s (a `Stack` record the first time a hash is seen in the
//! stream, with its Python frames), Python code definitions become `PyCode` records (the
//! first time a key is seen in the stream: every thread defines a key before its stacks
//! name it, so the first definition precedes every use) and raw timestamps become
//! monotonic nanoseconds.

use crate::python;
use crate::record::raw::NO_DEVICE;
use crate::record::raw::{Batch, Loss, RawEvent};
use crate::timebase::Timebase;
use leakscope_protocol::{
    Alloc, Capture, CodeKey, DeviceOrdinal, Fork, Free, GpuAlloc, Pid, PoolEvent, PoolHandle,
    PyCode, PyVersion, Record, RuntimeAddr, StackDef, StackId, ThreadId, Timestamp, TorchBlock,
};
use std::collections::hash_map::{Entry, HashMap};
use std::collections::HashSet;
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
    /// Code keys whose `PyCode` went out on this stream.
    codes: HashSet<u64, BuildHasherDefault<PassThrough>>,
    next_id: u32,
    pub timebase: Timebase,
}

impl Converter {
    pub fn new(timebase: Timebase) -> Converter {
        Converter {
            stacks: HashMap::default(),
            codes: HashSet::default(),
            next_id: 0,
            timebase,
        }
    }

    /// A `PyCode` record for the definition `bytes` of `key`, unless one went out already.
    fn code(&mut self, key: u64, bytes: &[u8], out: &mut Vec<Record>) {
        if self.codes.contains(&key) {
            return;
        }
        let Some(d) = python::code::parse(bytes) else {
            return;
        };
        self.codes.insert(key);
        out.push(Record::PyCode(PyCode {
            key: CodeKey(key),
            version: PyVersion {
                major: 3,
                minor: d.minor,
            },
            filename: String::from_utf8_lossy(d.filename).into_owned(),
            qualname: String::from_utf8_lossy(d.qualname).into_owned(),
            first_line: d.first_line,
            line_table: d.line_table.to_vec(),
            truncated: d.truncated,
        }));
    }

    /// Appends `b`'s records to `out`. Returns what had to be dropped: allocations whose
    /// stack was never defined in this stream (a bug if it happens).
    pub fn batch(&mut self, b: &Batch, out: &mut Vec<Record>) -> Loss {
        let mut lost = Loss::default();
        out.reserve(b.len());
        for e in b.events() {
            match *e {
                RawEvent::Stack {
                    hash,
                    first,
                    len,
                    py,
                } => {
                    if let Entry::Vacant(slot) = self.stacks.entry(hash) {
                        let id = StackId(self.next_id);
                        self.next_id += 1;
                        slot.insert(id);
                        // Frames whose code definition never reached this stream (lost
                        // with a dropped batch) are left out: a key is never named
                        // before its definition.
                        let mut python = Vec::new();
                        let words = b.frames(first.saturating_add(len), py);
                        python::decode_words(words, |k| self.codes.contains(&k), &mut python);
                        out.push(Record::Stack(StackDef {
                            id,
                            frames: b
                                .frames(first, len)
                                .iter()
                                .map(|&f| RuntimeAddr(f))
                                .collect(),
                            python,
                        }));
                    }
                }
                RawEvent::Code { key, first, len } => self.code(key, b.bytes(first, len), out),
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
                RawEvent::TorchBlock {
                    tid,
                    alloc,
                    addr,
                    stack,
                    ts,
                } => {
                    let stack = if alloc {
                        match self.stacks.get(&stack) {
                            Some(&id) => id,
                            None => continue,
                        }
                    } else {
                        StackId(0)
                    };
                    out.push(Record::TorchBlock(TorchBlock {
                        ts: Timestamp(self.timebase.convert(ts)),
                        thread: ThreadId(tid),
                        addr: RuntimeAddr(addr),
                        alloc,
                        stack,
                    }))
                }
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
        b.push_stack(0xaaa, &[1, 2], 0);
        b.push(alloc(0xaaa, 100));
        b.push_stack(0xaaa, &[1, 2], 0); // another thread's definition of the same stack
        b.push_stack(0xbbb, &[3], 0);
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
    fn code_definitions_precede_stacks_once_per_stream() {
        use leakscope_protocol::PyFrame;
        let def = |name: &'static [u8]| {
            python::code::encode(&python::code::Def {
                first_line: 7,
                minor: 11,
                truncated: false,
                filename: b"/app/main.py",
                qualname: name,
                line_table: b"\x80\x00",
            })
        };
        let mut c = Converter::new(Timebase::new(false, 0, 0));
        let mut b = Batch::try_new().unwrap();
        let d = def(b"grow");
        b.push_code(0x51, d.len(), |v| v.extend_from_slice(&d));
        // Another thread's definition of the same code object.
        b.push_code(0x51, d.len(), |v| v.extend_from_slice(&d));
        // Native 1, 2; Python: grow at 4, boundary, 0x99 (never defined) at 1, boundary.
        b.push_stack(0xccc, &[1, 2, 0x51, 4, 0, 0x99, 1, 0], 6);
        b.push(alloc(0xccc, 5));
        let mut out = Vec::new();
        assert_eq!(c.batch(&b, &mut out), Loss::default());
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(
            out[0],
            Record::PyCode(PyCode {
                key: CodeKey(0x51),
                version: PyVersion {
                    major: 3,
                    minor: 11
                },
                filename: "/app/main.py".into(),
                qualname: "grow".into(),
                first_line: 7,
                line_table: vec![0x80, 0],
                truncated: false,
            })
        );
        assert_eq!(
            out[1],
            Record::Stack(StackDef {
                id: StackId(0),
                frames: vec![RuntimeAddr(1), RuntimeAddr(2)],
                python: vec![
                    PyFrame::Code {
                        code: CodeKey(0x51),
                        instr: 4
                    },
                    PyFrame::Boundary,
                    PyFrame::Boundary,
                ],
            })
        );
        // A later batch's definition of the same key adds nothing.
        let mut b2 = Batch::try_new().unwrap();
        b2.push_code(0x51, d.len(), |v| v.extend_from_slice(&d));
        out.clear();
        c.batch(&b2, &mut out);
        assert!(out.is_empty(), "{out:?}");
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
