//! The byte stream: the one encoder and the one decoder of leakscope's wire format, used
//! for the socket between shim and collector and, unchanged, for recording files.
//!
//! ```text
//! stream  := header frame*
//! header  := "LKSC" version:u16le reserved:u16le            (HEADER_LEN bytes)
//! frame   := len:u32le payload[len]                          (len <= MAX_FRAME_LEN)
//! payload := bincode(base_ts:u64, count:u64, record*count)   (standard config, varints)
//! ```
//! Timed records store their timestamp relative to the frame's `base_ts` (small varints).
//! A stream that ends on a frame boundary is whole; one that ends inside a frame is
//! truncated, and every frame before the cut still decodes.

use crate::event::Record;
use crate::ids::Timestamp;
use bincode::config::{self, Configuration, LittleEndian, Varint};
use std::io::{self, Read};

/// The four bytes every stream starts with.
pub const MAGIC: [u8; 4] = *b"LKSC";
/// The version of the format this crate writes and reads.
pub const VERSION: u16 = 4;
/// Bytes in the stream header.
pub const HEADER_LEN: usize = 8;
/// Largest frame payload accepted; anything longer is treated as corruption.
pub const MAX_FRAME_LEN: u32 = 16 << 20;

const FRAME_PREFIX_LEN: usize = 4;

type Config = Configuration<LittleEndian, Varint, config::Limit<{ MAX_FRAME_LEN as usize }>>;

fn bincode_config() -> Config {
    config::standard().with_limit::<{ MAX_FRAME_LEN as usize }>()
}

/// What went wrong reading or writing a stream. Offsets count bytes from the stream start.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error(
        "not a leakscope stream: it starts with {found:02x?}, expected {MAGIC:02x?} (\"LKSC\")"
    )]
    BadMagic { found: Vec<u8> },
    #[error("stream format version {found} is not supported (this build reads version {VERSION}); record and report with the same leakscope build")]
    UnsupportedVersion { found: u16 },
    #[error("stream is shorter than its {HEADER_LEN}-byte header ({len} bytes)")]
    TruncatedHeader { len: usize },
    #[error("stream is truncated at byte {offset}: frame {frame} needs {needed} more bytes than the stream holds (the {frame} frames before it are intact)")]
    Truncated {
        offset: u64,
        frame: u64,
        needed: u64,
    },
    #[error("corrupt frame {frame} at byte {offset}: length {len} exceeds the {MAX_FRAME_LEN}-byte limit")]
    FrameTooLarge { offset: u64, frame: u64, len: u32 },
    #[error("corrupt frame {frame} at byte {offset}: {detail}")]
    Corrupt {
        offset: u64,
        frame: u64,
        detail: String,
    },
    #[error("cannot encode frame: {0}")]
    Encode(String),
    #[error("read error at byte {offset}: {source}")]
    Io { offset: u64, source: io::Error },
}

/// Appends the stream header to `out`.
pub fn encode_header(out: &mut Vec<u8>) {
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
}

/// Appends one frame holding `records` to `out`. An empty slice appends nothing.
pub fn encode_frame(records: &[Record], out: &mut Vec<u8>) -> Result<(), WireError> {
    if records.is_empty() {
        return Ok(());
    }
    let base = records
        .iter()
        .filter_map(Record::ts)
        .min()
        .unwrap_or_default();
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_PREFIX_LEN]);
    let cfg = bincode_config();
    let enc = |v: &dyn EncodeInto, out: &mut Vec<u8>| v.encode_into(out, cfg);
    enc(&base.0, out)?;
    enc(&(records.len() as u64), out)?;
    for r in records {
        if r.ts().is_some() {
            let mut rel = r.clone();
            if let Some(ts) = rel.ts_slot_mut() {
                *ts = Timestamp(ts.0.wrapping_sub(base.0));
            }
            enc(&rel, out)?;
        } else {
            enc(r, out)?;
        }
    }
    let len = out.len() - start - FRAME_PREFIX_LEN;
    if len > MAX_FRAME_LEN as usize {
        out.truncate(start);
        return Err(WireError::Encode(format!(
            "{} records make a {len}-byte frame, over the {MAX_FRAME_LEN}-byte limit",
            records.len()
        )));
    }
    out[start..start + FRAME_PREFIX_LEN].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Object-safe bridge to `bincode::encode_into_std_write` for the few types we encode.
trait EncodeInto {
    fn encode_into(&self, out: &mut Vec<u8>, cfg: Config) -> Result<(), WireError>;
}
impl<T: bincode::Encode> EncodeInto for T {
    fn encode_into(&self, out: &mut Vec<u8>, cfg: Config) -> Result<(), WireError> {
        bincode::encode_into_std_write(self, out, cfg)
            .map(|_| ())
            .map_err(|e| WireError::Encode(e.to_string()))
    }
}

/// Reads a stream frame by frame.
pub struct Decoder<R> {
    reader: R,
    offset: u64,
    frames: u64,
    payload: Vec<u8>,
}

impl<R: Read> Decoder<R> {
    /// Reads and checks the header.
    pub fn new(mut reader: R) -> Result<Self, WireError> {
        let mut header = [0u8; HEADER_LEN];
        let got = read_full(&mut reader, &mut header)
            .map_err(|source| WireError::Io { offset: 0, source })?;
        if got < MAGIC.len() || header[..MAGIC.len()] != MAGIC {
            if got < MAGIC.len() && MAGIC.starts_with(&header[..got]) {
                return Err(WireError::TruncatedHeader { len: got });
            }
            return Err(WireError::BadMagic {
                found: header[..got.min(MAGIC.len())].to_vec(),
            });
        }
        if got < HEADER_LEN {
            return Err(WireError::TruncatedHeader { len: got });
        }
        let version = u16::from_le_bytes([header[4], header[5]]);
        if version != VERSION {
            return Err(WireError::UnsupportedVersion { found: version });
        }
        Ok(Decoder {
            reader,
            offset: HEADER_LEN as u64,
            frames: 0,
            payload: Vec::new(),
        })
    }

    /// Reads on a stream whose header was checked before (by [`Decoder::new`] on the same
    /// stream) from `offset`, the start of a frame as [`Decoder::offset`] gave it after an
    /// earlier frame: `reader` must be positioned there. Offsets in errors count from the
    /// start of the stream.
    pub fn resume(reader: R, offset: u64) -> Self {
        Decoder {
            reader,
            offset: offset.max(HEADER_LEN as u64),
            frames: 0,
            payload: Vec::new(),
        }
    }

    /// Bytes consumed so far (header and whole frames).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Frames decoded so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Decodes the next frame, appending its records to `out`. `Ok(false)` at a clean end
    /// of stream (on a frame boundary). On error nothing is appended.
    pub fn next_frame(&mut self, out: &mut Vec<Record>) -> Result<bool, WireError> {
        let (offset, frame) = (self.offset, self.frames);
        let mut prefix = [0u8; FRAME_PREFIX_LEN];
        let got = read_full(&mut self.reader, &mut prefix)
            .map_err(|source| WireError::Io { offset, source })?;
        if got == 0 {
            return Ok(false);
        }
        if got < FRAME_PREFIX_LEN {
            return Err(WireError::Truncated {
                offset,
                frame,
                needed: (FRAME_PREFIX_LEN - got) as u64,
            });
        }
        let len = u32::from_le_bytes(prefix);
        if len > MAX_FRAME_LEN {
            return Err(WireError::FrameTooLarge { offset, frame, len });
        }
        self.payload.resize(len as usize, 0);
        let got =
            read_full(&mut self.reader, &mut self.payload).map_err(|source| WireError::Io {
                offset: offset + FRAME_PREFIX_LEN as u64,
                source,
            })?;
        if got < len as usize {
            return Err(WireError::Truncated {
                offset,
                frame,
                needed: (len as usize - got) as u64,
            });
        }
        let corrupt = |detail: String| WireError::Corrupt {
            offset,
            frame,
            detail,
        };
        let before = out.len();
        if let Err(detail) = decode_payload(&self.payload, out) {
            out.truncate(before);
            return Err(corrupt(detail));
        }
        self.offset += (FRAME_PREFIX_LEN + len as usize) as u64;
        self.frames += 1;
        Ok(true)
    }

    /// Gives the reader back.
    pub fn into_inner(self) -> R {
        self.reader
    }
}

/// Appends the payload's records to `out` (which the caller truncates on error).
fn decode_payload(payload: &[u8], out: &mut Vec<Record>) -> Result<(), String> {
    let cfg = bincode_config();
    let mut pos = 0usize;
    let take = |pos: &mut usize| -> Result<u64, String> {
        let (v, n): (u64, usize) =
            bincode::decode_from_slice(&payload[*pos..], cfg).map_err(|e| e.to_string())?;
        *pos += n;
        Ok(v)
    };
    let base = take(&mut pos)?;
    let count = take(&mut pos)?;
    if count > (payload.len() - pos) as u64 {
        return Err(format!(
            "claims {count} records in {} bytes",
            payload.len() - pos
        ));
    }
    out.reserve(count as usize);
    for i in 0..count {
        let (mut r, n): (Record, usize) = bincode::decode_from_slice(&payload[pos..], cfg)
            .map_err(|e| format!("record {i} of {count}: {e}"))?;
        pos += n;
        if let Some(ts) = r.ts_slot_mut() {
            *ts = Timestamp(ts.0.wrapping_add(base));
        }
        out.push(r);
    }
    if pos != payload.len() {
        return Err(format!(
            "{} bytes left over after {count} records",
            payload.len() - pos
        ));
    }
    Ok(())
}

/// Reads until `buf` is full or the reader reports end of file; returns bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::*;
    use crate::ids::*;

    fn sample() -> Vec<Record> {
        vec![
            Record::Hello(Hello {
                pid: Pid(42),
                ppid: Pid(1),
                origin: Origin::Fork { parent: Pid(41) },
                exe: "/bin/true".into(),
                argv: vec!["true".into(), "--x".into()],
                start: Timestamp(1_000_000_000_000),
                start_unix_ns: 1_700_000_000_000_000_000,
                fingerprint: crate::BUILD_FINGERPRINT,
            }),
            Record::Module(ModuleMap {
                id: ModuleId(0),
                path: "/usr/lib/libc.so.6".into(),
                build_id: vec![0xde, 0xad],
                segments: vec![Segment {
                    start: RuntimeAddr(0x7f00_0000_0000),
                    end: RuntimeAddr(0x7f00_0010_0000),
                    file_offset: FileOffset(0x1000),
                    executable: true,
                }],
            }),
            Record::Stack(StackDef {
                id: StackId(7),
                frames: vec![RuntimeAddr(0x401000), RuntimeAddr(0x402000)],
                python: vec![],
            }),
            Record::Alloc(Alloc {
                ts: Timestamp(1_000_000_000_500),
                thread: ThreadId(42),
                addr: RuntimeAddr(0x5555_0000_1000),
                size: 1000,
                kind: MemoryKind::Host,
                api: Api::Calloc,
                stack: StackId(7),
            }),
            Record::Free(Free {
                ts: Timestamp(1_000_000_000_400),
                thread: ThreadId(43),
                addr: RuntimeAddr(0x5555_0000_1000),
                len: 0,
                kind: MemoryKind::Host,
                api: Api::Free,
            }),
            Record::GpuAlloc(GpuAlloc {
                ts: Timestamp(1_000_000_000_600),
                thread: ThreadId(42),
                addr: RuntimeAddr(0x7f10_0000_0000),
                size: 2 << 20,
                kind: MemoryKind::Device,
                api: Api::CuMemCreate,
                stack: StackId(7),
                device: Some(DeviceOrdinal(3)),
            }),
            Record::Free(Free {
                ts: Timestamp(1_000_000_000_700),
                thread: ThreadId(42),
                addr: RuntimeAddr(0x7f20_0000_0000),
                len: 2 << 20,
                kind: MemoryKind::Device,
                api: Api::CuMemUnmap,
            }),
            Record::Pool(PoolEvent {
                ts: Timestamp(1_000_000_000_800),
                thread: ThreadId(44),
                pool: PoolHandle(0x5555_aaaa_0000),
                device: None,
                action: PoolAction::Trimmed,
                reserved: 64 << 20,
                used: 1 << 20,
            }),
            Record::Capture(Capture {
                ts: Timestamp(1_000_000_000_900),
                thread: ThreadId(42),
                begin: true,
            }),
            Record::Stack(StackDef {
                id: StackId(8),
                frames: vec![RuntimeAddr(0x401000)],
                python: vec![
                    PyFrame::Code {
                        code: CodeKey(0xfeed_beef_0000_0001),
                        instr: 14,
                    },
                    PyFrame::Boundary,
                    PyFrame::Code {
                        code: CodeKey(3),
                        instr: -1,
                    },
                ],
            }),
            Record::PyCode(PyCode {
                key: CodeKey(0xfeed_beef_0000_0001),
                version: PyVersion {
                    major: 3,
                    minor: 12,
                },
                filename: "/srv/app/server.py".into(),
                qualname: "Cache.put".into(),
                first_line: 41,
                line_table: vec![0x80, 0x00, 0xd8, 0x04],
                truncated: false,
            }),
            Record::Heap(HeapReading {
                ts: Timestamp(1_000_000_000_950),
                rss: 64 << 20,
                uss: 60 << 20,
                arenas: vec![ArenaReading {
                    system: 1 << 20,
                    free: 4096,
                    free_chunks: 3,
                    fastbin: 64,
                    top: 2048,
                }],
                mmap_chunks: 1,
                mmap_bytes: 1 << 21,
            }),
            Record::TorchBlock(TorchBlock {
                ts: Timestamp(1_000_000_000_960),
                thread: ThreadId(42),
                addr: RuntimeAddr(0x7f00_0200_0000),
                alloc: true,
                stack: StackId(8),
            }),
            Record::TorchState(TorchState {
                ts: Timestamp(1_000_000_000_970),
                full: true,
                segments: vec![crate::torch::SegmentInfo {
                    device: DeviceOrdinal(0),
                    addr: RuntimeAddr(0x7f00_0200_0000),
                    size: 2 << 20,
                    stream: 0,
                    pool: crate::torch::TorchPoolId(0, 0),
                    expandable: false,
                    blocks: vec![crate::torch::BlockInfo {
                        addr: RuntimeAddr(0x7f00_0200_0000),
                        size: 512,
                        requested: 500,
                        state: crate::torch::BlockState::Allocated,
                    }],
                }],
                removed: vec![(DeviceOrdinal(1), RuntimeAddr(0x7f00_0400_0000))],
                mempools: vec![crate::torch::MemPoolInfo {
                    id: crate::torch::TorchPoolId(0, 1),
                    pluggable: true,
                }],
                continues: false,
            }),
            Record::Fork(Fork {
                ts: Timestamp(1_000_000_001_000),
                thread: ThreadId(42),
                child: Pid(99),
            }),
            Record::Dropped(Dropped {
                ts: Timestamp(1_000_000_002_000),
                allocs: 3,
                alloc_bytes: 300,
                frees: 1,
            }),
            Record::Machine(MachineReading {
                ts: Timestamp(1_000_000_003_000),
                mem_total: 64 << 30,
                mem_available: 40 << 30,
                cgroup: Some(CgroupMemory {
                    limit: Some(16 << 30),
                    usage: 3 << 30,
                }),
                gpus: vec![GpuMemory {
                    index: 0,
                    uuid: "GPU-0b4c2d1e-aaaa-bbbb-cccc-0123456789ab".into(),
                    total: 80 << 30,
                    used: 1 << 30,
                    free: 79 << 30,
                }],
            }),
            Record::ModuleUnload(ModuleUnload { id: ModuleId(0) }),
            Record::End(End {
                ts: Timestamp(u64::MAX - 5),
                reason: EndReason::Exit,
            }),
        ]
    }

    fn stream(frames: &[&[Record]]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_header(&mut out);
        for f in frames {
            encode_frame(f, &mut out).unwrap();
        }
        out
    }

    fn decode_all(bytes: &[u8]) -> (Vec<Record>, Result<(), WireError>) {
        let mut got = Vec::new();
        let mut d = match Decoder::new(bytes) {
            Ok(d) => d,
            Err(e) => return (got, Err(e)),
        };
        loop {
            match d.next_frame(&mut got) {
                Ok(true) => {}
                Ok(false) => return (got, Ok(())),
                Err(e) => return (got, Err(e)),
            }
        }
    }

    #[test]
    fn round_trip_every_record_kind() {
        let recs = sample();
        let bytes = stream(&[&recs[..4], &recs[4..]]);
        let (got, res) = decode_all(&bytes);
        res.unwrap();
        assert_eq!(got, recs);
    }

    #[test]
    fn relative_timestamps_keep_small_frames() {
        let a = |ts: u64| {
            Record::Alloc(Alloc {
                ts: Timestamp(ts),
                thread: ThreadId(1),
                addr: RuntimeAddr(16),
                size: 8,
                kind: MemoryKind::Host,
                api: Api::Malloc,
                stack: StackId(1),
            })
        };
        let recs: Vec<_> = (0..100).map(|i| a(5_000_000_000_000 + i * 10)).collect();
        let mut out = Vec::new();
        encode_frame(&recs, &mut out).unwrap();
        // Without frame-relative timestamps each record would carry a 9-byte time.
        assert!(out.len() < 100 * 10, "frame is {} bytes", out.len());
        let mut whole = Vec::new();
        encode_header(&mut whole);
        whole.extend_from_slice(&out);
        assert_eq!(decode_all(&whole).0, recs);
    }

    #[test]
    fn machine_readings_round_trip() {
        let reading = |ts: u64, cgroup: Option<CgroupMemory>, gpus: Vec<GpuMemory>| {
            Record::Machine(MachineReading {
                ts: Timestamp(ts),
                mem_total: 32 << 30,
                mem_available: (32 << 30) - ts % (1 << 30),
                cgroup,
                gpus,
            })
        };
        let gpu = |index: u32| GpuMemory {
            index,
            uuid: format!("GPU-{index:08x}-0000-0000-0000-000000000000"),
            total: 24 << 30,
            used: u64::from(index) << 20,
            free: (24 << 30) - (u64::from(index) << 20),
        };
        let recs = [
            reading(7_000_000_000_000, None, vec![]),
            reading(
                7_010_000_000_000,
                Some(CgroupMemory {
                    limit: None,
                    usage: 5 << 20,
                }),
                vec![gpu(0), gpu(1)],
            ),
            reading(
                7_020_000_000_000,
                Some(CgroupMemory {
                    limit: Some(u64::MAX),
                    usage: 0,
                }),
                vec![gpu(3)],
            ),
        ];
        // One frame holding all three (relative times), then one frame each.
        let bytes = stream(&[&recs[..], &recs[..1], &recs[1..2], &recs[2..]]);
        let (got, res) = decode_all(&bytes);
        res.unwrap();
        assert_eq!(got.len(), 6);
        assert_eq!(got[..3], recs[..]);
        assert_eq!(got[3..], recs[..]);
        assert_eq!(got[1].ts(), Some(Timestamp(7_010_000_000_000)));
    }

    #[test]
    fn version_is_four() {
        // Version 4 added `Record::Machine`.
        let mut out = Vec::new();
        encode_header(&mut out);
        assert_eq!(VERSION, 4);
        assert_eq!(out[4..6], 4u16.to_le_bytes());
    }

    #[test]
    fn empty_frame_writes_nothing() {
        let mut out = Vec::new();
        encode_frame(&[], &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn bad_magic_is_named() {
        let (_, res) = decode_all(b"GARBAGE!garbage");
        let e = res.unwrap_err();
        assert!(matches!(e, WireError::BadMagic { .. }), "{e}");
        assert!(e.to_string().contains("not a leakscope stream"));
    }

    #[test]
    fn other_version_is_refused() {
        let mut bytes = stream(&[&sample()]);
        bytes[4..6].copy_from_slice(&(VERSION + 1).to_le_bytes());
        let e = decode_all(&bytes).1.unwrap_err();
        assert!(
            matches!(e, WireError::UnsupportedVersion { found } if found == VERSION + 1),
            "{e}"
        );
    }

    #[test]
    fn short_header_is_truncation() {
        let e = decode_all(b"LKS").1.unwrap_err();
        assert!(matches!(e, WireError::TruncatedHeader { len: 3 }), "{e}");
        let e = decode_all(b"LKSC\x01").1.unwrap_err();
        assert!(matches!(e, WireError::TruncatedHeader { len: 5 }), "{e}");
    }

    #[test]
    fn truncation_keeps_earlier_frames() {
        let recs = sample();
        let bytes = stream(&[&recs[..3], &recs[3..]]);
        let first_len = {
            let mut b = Vec::new();
            encode_frame(&recs[..3], &mut b).unwrap();
            b.len()
        };
        for cut in HEADER_LEN + first_len + 1..bytes.len() {
            let (got, res) = decode_all(&bytes[..cut]);
            assert_eq!(got, recs[..3], "cut at {cut}");
            match res.unwrap_err() {
                WireError::Truncated {
                    frame: 1, offset, ..
                } => assert_eq!(offset as usize, HEADER_LEN + first_len),
                e => panic!("cut at {cut}: {e}"),
            }
        }
        let (got, res) = decode_all(&bytes[..HEADER_LEN + first_len]);
        res.unwrap();
        assert_eq!(got, recs[..3]);
    }

    #[test]
    fn garbage_frames_are_errors_not_panics() {
        let mut bytes = stream(&[]);
        bytes.extend_from_slice(&[5, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff]);
        let e = decode_all(&bytes).1.unwrap_err();
        assert!(matches!(e, WireError::Corrupt { frame: 0, .. }), "{e}");

        let mut bytes = stream(&[]);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        let e = decode_all(&bytes).1.unwrap_err();
        assert!(matches!(e, WireError::FrameTooLarge { .. }), "{e}");

        // Deterministic pseudo-random garbage after a valid header never panics.
        let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let mut bytes = stream(&[]);
            let n = (s % 64) as usize;
            for _ in 0..n {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                bytes.push(s as u8);
            }
            let len = (bytes.len() - HEADER_LEN).saturating_sub(4) as u32;
            if bytes.len() >= HEADER_LEN + 4 {
                bytes[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&len.to_le_bytes());
            }
            let _ = decode_all(&bytes);
        }
    }

    #[test]
    fn huge_vec_length_is_rejected_without_allocating() {
        // A Stack record whose frame count claims 2^40 entries.
        let mut payload = Vec::new();
        let cfg = bincode_config();
        bincode::encode_into_std_write(0u64, &mut payload, cfg).unwrap();
        bincode::encode_into_std_write(1u64, &mut payload, cfg).unwrap();
        bincode::encode_into_std_write(3u32, &mut payload, cfg).unwrap(); // Record::Stack
        bincode::encode_into_std_write(1u32, &mut payload, cfg).unwrap(); // id
        bincode::encode_into_std_write(1u64 << 40, &mut payload, cfg).unwrap();
        let mut bytes = stream(&[]);
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&payload);
        let e = decode_all(&bytes).1.unwrap_err();
        assert!(matches!(e, WireError::Corrupt { .. }), "{e}");
    }
}
