//! Tests of the recording (round trip through the real encoder, damaged and missing files)
//! and of live ingestion over real sockets.

use crate::error::RecordingError;
use crate::ingest::meta::RecordingMeta;
use crate::ingest::pipeline::Pipeline;
use crate::ingest::recording::{contents, stream_path, Recording, META_FILE};
use crate::ingest::replay::load;
use crate::state::{ConnId, ProcessState, RunState, SiteKey, StateOptions, StreamEnd};
use crate::test_records::{alloc, free};
use leakscope_protocol::wire::{encode_frame, encode_header, HEADER_LEN};
use leakscope_protocol::{
    Api, End, EndReason, Fork, Hello, MemoryKind, Origin, Pid, Record, RuntimeAddr, StackDef,
    StackId, ThreadId, Timestamp,
};
use std::fs;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;

fn hello(pid: u32, origin: Origin) -> Record {
    Record::Hello(Hello {
        pid: Pid(pid),
        ppid: Pid(1),
        origin,
        exe: "/bin/app".into(),
        argv: vec!["app".into()],
        start: Timestamp(1),
        start_unix_ns: 2,
        fingerprint: leakscope_protocol::BUILD_FINGERPRINT,
    })
}

fn stack(id: u32) -> Record {
    Record::Stack(StackDef {
        id: StackId(id),
        frames: vec![RuntimeAddr(0x400000 + u64::from(id))],
        python: vec![],
    })
}

fn end(ts: u64) -> Record {
    Record::End(End {
        ts: Timestamp(ts),
        reason: EndReason::Exit,
    })
}

fn encode(frames: &[&[Record]]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_header(&mut out);
    for f in frames {
        encode_frame(f, &mut out).unwrap();
    }
    out
}

fn host(stack: u32) -> SiteKey {
    SiteKey::host(StackId(stack), MemoryKind::Host)
}

/// A parent (pid 10) that forks pid 11, and the child's stream.
fn parent_and_child() -> (Vec<Vec<Record>>, Vec<Vec<Record>>) {
    let parent = vec![
        vec![hello(10, Origin::Exec), stack(1), alloc(10, 0x10, 100, 1)],
        vec![
            Record::Fork(Fork {
                ts: Timestamp(20),
                thread: ThreadId(1),
                child: Pid(11),
            }),
            alloc(21, 0x20, 7, 1),
            end(30),
        ],
    ];
    let child = vec![
        vec![hello(11, Origin::Fork { parent: Pid(10) }), stack(2)],
        vec![alloc(25, 0x30, 5, 2), free(26, 0x10), end(40)],
    ];
    (parent, child)
}

fn write_recording(dir: &Path, streams: &[(u32, Vec<u8>)]) -> Recording {
    let rec = Recording::create(dir).unwrap();
    rec.write_meta(&RecordingMeta::starting(vec!["app".into()]))
        .unwrap();
    for (conn, bytes) in streams {
        let (mut f, _) = rec.create_stream(ConnId(*conn)).unwrap();
        f.write_all(bytes).unwrap();
    }
    rec
}

fn refs(frames: &[Vec<Record>]) -> Vec<&[Record]> {
    frames.iter().map(Vec::as_slice).collect()
}

fn check_family(state: &RunState) {
    assert_eq!(state.processes.len(), 2);
    let p = state.process(Pid(10)).unwrap();
    assert_eq!(p.end, StreamEnd::Clean(EndReason::Exit));
    assert_eq!(p.sites[&host(1)].outstanding_bytes, 107);
    let c = state.process(Pid(11)).unwrap();
    assert!(c.notes.is_empty(), "{:?}", c.notes);
    // The inherited stack has an id of the child's own (its stream numbers from 0 again).
    let inherited = c
        .stacks
        .iter()
        .find(|(_, f)| **f == vec![RuntimeAddr(0x400001)])
        .map(|(id, _)| *id)
        .unwrap();
    assert_ne!(inherited, StackId(1));
    let site = c.sites[&host(inherited.0)];
    assert_eq!(site.outstanding_bytes, 0, "freed its inherited block");
    assert_eq!(site.allocations, 0);
    assert_eq!(c.sites[&host(2)].outstanding_bytes, 5);
    assert_eq!(c.unknown_frees, 0);
    assert_eq!(c.stacks.len(), 2);
}

#[test]
fn recording_round_trip_in_either_file_order() {
    let (parent, child) = parent_and_child();
    for (pc, cc) in [(0, 1), (1, 0)] {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("rec");
        write_recording(
            &dir,
            &[(pc, encode(&refs(&parent))), (cc, encode(&refs(&child)))],
        );
        let loaded = load(&dir, StateOptions::default()).unwrap();
        assert_eq!(loaded.meta.command, vec!["app".to_owned()]);
        assert!(
            loaded.state.warnings.is_empty(),
            "{:?}",
            loaded.state.warnings
        );
        check_family(&loaded.state);
        assert_eq!(loaded.state.process(Pid(10)).unwrap().stream, ConnId(pc));
    }
}

/// GPU records through the real encoder, the recording, replay, analysis and the JSON
/// report.
#[test]
fn gpu_records_round_trip_into_the_report() {
    use crate::analysis::{analyze, AnalysisOptions};
    use crate::report::json::JsonReport;
    use crate::report::Report;
    use leakscope_protocol::{Capture, DeviceOrdinal, GpuAlloc, PoolAction, PoolEvent, PoolHandle};
    let gpu = |ts, addr, size, api| {
        Record::GpuAlloc(GpuAlloc {
            ts: Timestamp(ts),
            thread: ThreadId(1),
            addr: RuntimeAddr(addr),
            size,
            kind: MemoryKind::Device,
            api,
            stack: StackId(1),
            device: Some(DeviceOrdinal(0)),
        })
    };
    let stream = encode(&[
        &[hello(10, Origin::Exec), stack(1), alloc(1, 0x10, 8, 1)],
        &[
            gpu(2, 0x7f00_0000, 1 << 20, Api::CudaMalloc),
            gpu(3, 0x7000_0000, 1 << 30, Api::CuMemAddressReserve),
            Record::Capture(Capture {
                ts: Timestamp(4),
                thread: ThreadId(1),
                begin: true,
            }),
            gpu(5, 0x7f10_0000, 4096, Api::CudaMalloc),
            Record::Pool(PoolEvent {
                ts: Timestamp(6),
                thread: ThreadId(1),
                pool: PoolHandle(0xfeed),
                device: Some(DeviceOrdinal(0)),
                action: PoolAction::Created,
                reserved: 0,
                used: 0,
            }),
            end(7),
        ],
    ]);
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("rec");
    write_recording(&dir, &[(0, stream)]);
    let loaded = load(&dir, StateOptions::default()).unwrap();
    let model = analyze(&loaded.state, &loaded.meta, &AnalysisOptions::default());
    let mut out = Vec::new();
    JsonReport::default().render(&model, &mut out).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let p = &v["processes"][0];
    assert_eq!(v["format_version"], 2);
    assert_eq!(
        p["totals"]["by_memory"]["device"]["outstanding_bytes"],
        (1 << 20) + 4096
    );
    assert_eq!(p["totals"]["by_memory"]["host"]["outstanding_bytes"], 8);
    let gpu = &p["gpu"];
    assert_eq!(gpu["captures"], 1);
    assert_eq!(gpu["devices"][0]["device"], 0);
    assert_eq!(gpu["devices"][0]["reserved_address_bytes"], 1u64 << 30);
    assert_eq!(gpu["stream_pools"][0]["handle"], "0xfeed");
    assert_eq!(gpu["stream_pools"][0]["created_by_program"], true);
    let sites = p["sites"].as_array().unwrap();
    let captured: Vec<_> = sites
        .iter()
        .filter(|s| s["during_capture"] == true)
        .collect();
    assert_eq!(captured.len(), 1);
    assert_eq!(captured[0]["outstanding_bytes"], 4096);
    assert_eq!(captured[0]["pool"], "direct");
    assert!(sites
        .iter()
        .any(|s| s["space"] == "reservation" && s["owned"] == false));
}

#[test]
fn meta_is_rewritten_and_open_streams_stay_open_on_replay() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("a").join("b");
    let rec = write_recording(
        &dir,
        &[(
            0,
            encode(&[&[hello(10, Origin::Exec), alloc(1, 0x10, 4, 1)]]),
        )],
    );
    let mut meta = RecordingMeta::starting(vec!["app".into(), "x y".into()]);
    meta.exit_status = Some(137);
    meta.signal = Some(9);
    meta.open_streams = vec![0];
    rec.write_meta(&meta).unwrap();
    let loaded = load(&dir, StateOptions::default()).unwrap();
    assert_eq!(loaded.meta, meta);
    assert_eq!(loaded.state.processes[0].end, StreamEnd::Open);
    // Without the note in meta.json the same stream was cut off.
    meta.open_streams.clear();
    rec.write_meta(&meta).unwrap();
    let loaded = load(&dir, StateOptions::default()).unwrap();
    assert_eq!(loaded.state.processes[0].end, StreamEnd::CutOff);
    assert!(!dir.join(".meta.json.tmp").exists());
}

#[test]
fn create_refuses_a_non_empty_directory_and_uses_an_empty_one() {
    let t = tempfile::tempdir().unwrap();
    fs::write(t.path().join("x"), b"").unwrap();
    let e = Recording::create(t.path()).unwrap_err();
    assert!(matches!(e, RecordingError::NotEmpty { .. }), "{e}");
    assert!(e.to_string().contains("not empty"), "{e}");
    let empty = t.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let rec = Recording::create(&empty).unwrap();
    assert!(!rec.created_dir());
    assert!(empty.join("streams").is_dir());
    let e = Recording::create(&t.path().join("x")).unwrap_err();
    assert!(matches!(e, RecordingError::NotADirectory { .. }), "{e}");
    // A stream file is never overwritten.
    rec.create_stream(ConnId(3)).unwrap();
    assert!(rec.create_stream(ConnId(3)).is_err());
    assert!(stream_path(&empty, ConnId(3)).ends_with("streams/000003.lks"));
}

#[test]
fn missing_and_unreadable_pieces_are_clear_errors() {
    let t = tempfile::tempdir().unwrap();
    let e = load(&t.path().join("nope"), StateOptions::default()).unwrap_err();
    assert!(matches!(e, RecordingError::Missing { .. }), "{e}");
    assert!(e.to_string().contains("does not exist"));

    let file = t.path().join("file");
    fs::write(&file, b"").unwrap();
    let e = load(&file, StateOptions::default()).unwrap_err();
    assert!(matches!(e, RecordingError::NotADirectory { .. }), "{e}");

    let e = load(t.path(), StateOptions::default()).unwrap_err();
    assert!(matches!(e, RecordingError::NotARecording { .. }), "{e}");

    let dir = t.path().join("bad-meta");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join(META_FILE), b"{not json").unwrap();
    let e = load(&dir, StateOptions::default()).unwrap_err();
    assert!(matches!(e, RecordingError::BadMeta { .. }), "{e}");

    let dir = t.path().join("meta-is-a-dir");
    fs::create_dir_all(dir.join(META_FILE)).unwrap();
    let e = load(&dir, StateOptions::default()).unwrap_err();
    assert!(matches!(e, RecordingError::Read { .. }), "{e}");
    assert!(e.to_string().contains("meta.json"), "{e}");
}

#[test]
fn streams_without_meta_still_report_with_a_warning() {
    let (parent, child) = parent_and_child();
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("rec");
    write_recording(
        &dir,
        &[(0, encode(&refs(&parent))), (1, encode(&refs(&child)))],
    );
    fs::remove_file(dir.join(META_FILE)).unwrap();
    fs::write(dir.join("streams").join("notes.txt"), b"").unwrap();
    let loaded = load(&dir, StateOptions::default()).unwrap();
    check_family(&loaded.state);
    assert_eq!(loaded.meta, RecordingMeta::default());
    let w = &loaded.state.warnings;
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w.iter().any(|w| w.contains("meta.json is missing")),
        "{w:?}"
    );
    assert!(w.iter().any(|w| w.contains("notes.txt")), "{w:?}");

    // Corrupt metadata with streams present: also a warning, not an error.
    fs::write(dir.join(META_FILE), b"[1,2").unwrap();
    let loaded = load(&dir, StateOptions::default()).unwrap();
    let w = &loaded.state.warnings;
    assert!(w.iter().any(|w| w.contains("not valid metadata")), "{w:?}");
    check_family(&loaded.state);
}

/// A small stream cut at every byte: never a panic; every whole frame before the cut is
/// applied; a cut inside a frame (or the header) is reported as damage naming the file.
#[test]
fn truncated_at_every_byte() {
    let frames: Vec<Vec<Record>> = vec![
        vec![hello(10, Origin::Exec), stack(1)],
        vec![alloc(10, 0x10, 1, 1), alloc(11, 0x20, 2, 1)],
        vec![alloc(12, 0x30, 4, 1), free(13, 0x10)],
        vec![end(20)],
    ];
    let whole = encode(&refs(&frames));
    // Byte offsets where each frame ends.
    let mut ends = Vec::new();
    let mut len = HEADER_LEN;
    for f in &frames {
        let mut b = Vec::new();
        encode_frame(f, &mut b).unwrap();
        len += b.len();
        ends.push(len);
    }
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("rec");
    let rec = write_recording(&dir, &[]);
    let path = stream_path(rec.dir(), ConnId(0));
    for cut in 0..=whole.len() {
        fs::write(&path, &whole[..cut]).unwrap();
        let loaded = load(&dir, StateOptions::default()).unwrap();
        let state = &loaded.state;
        let whole_frames = ends.iter().filter(|&&e| e <= cut).count();
        let on_boundary = cut == HEADER_LEN || ends.contains(&cut);
        if whole_frames == 0 {
            assert!(state.processes.is_empty(), "cut {cut}");
            if cut > 0 && !on_boundary {
                assert_eq!(state.warnings.len(), 1, "cut {cut}");
                assert!(
                    state.warnings[0].contains("000000.lks"),
                    "{:?}",
                    state.warnings
                );
            }
            continue;
        }
        let p = &state.processes[0];
        let site = p.sites.get(&host(1)).copied().unwrap_or_default();
        let expect_allocs = [0, 2, 3, 3][whole_frames - 1];
        assert_eq!(site.allocations, expect_allocs, "cut {cut}");
        match (&p.end, on_boundary, whole_frames == frames.len()) {
            (StreamEnd::Clean(EndReason::Exit), true, true) => {}
            (StreamEnd::CutOff, true, false) => {}
            (StreamEnd::Damaged(m), false, false) => {
                assert!(m.contains("000000.lks") && m.contains("truncated"), "{m}");
            }
            other => panic!("cut {cut}: {other:?}"),
        }
    }
}

#[test]
fn damaged_streams_keep_what_came_before() {
    let good = encode(&[&[hello(10, Origin::Exec), stack(1), alloc(1, 0x10, 3, 1)]]);
    let mut garbage_after = good.clone();
    garbage_after.extend_from_slice(&[
        9, 0, 0, 0, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa, 0xf9, 0xf8, 0xf7,
    ]);
    let mut wrong_version = good.clone();
    wrong_version[4] = 99;
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("rec");
    write_recording(
        &dir,
        &[
            (0, garbage_after),
            (1, wrong_version),
            (2, b"not a leakscope stream at all".to_vec()),
            (3, Vec::new()),
        ],
    );
    let loaded = load(&dir, StateOptions::default()).unwrap();
    let s = &loaded.state;
    assert_eq!(s.processes.len(), 1);
    let p = &s.processes[0];
    assert_eq!(p.sites[&host(1)].outstanding_bytes, 3);
    match &p.end {
        StreamEnd::Damaged(m) => assert!(
            m.contains("000000.lks") && m.contains("corrupt frame 1"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
    assert!(s.warnings[0].contains("000001.lks") && s.warnings[0].contains("version 99"));
    assert!(
        s.warnings[1].contains("000002.lks") && s.warnings[1].contains("not a leakscope stream")
    );
}

#[test]
fn live_connections_are_recorded_byte_for_byte() {
    let (parent, child) = parent_and_child();
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("rec");
    let rec = Recording::create(&dir).unwrap();
    let mut pipeline = Pipeline::start(StateOptions::default()).unwrap();
    // The child's stream connects first and sends before its parent's Fork arrives.
    let mut sent = Vec::new();
    let mut writers = Vec::new();
    for frames in [&child, &parent] {
        let (ours, theirs) = UnixStream::pair().unwrap();
        pipeline.add(ours, &rec).unwrap();
        let bytes = encode(&refs(frames));
        sent.push(bytes.clone());
        writers.push(std::thread::spawn(move || {
            let mut theirs = theirs;
            // Dribble the bytes to cross frame boundaries at odd places.
            for chunk in bytes.chunks(7) {
                theirs.write_all(chunk).unwrap();
            }
        }));
    }
    for w in writers {
        w.join().unwrap();
    }
    // A third process still connected at the end.
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    pipeline.add(ours, &rec).unwrap();
    let open = encode(&[&[hello(12, Origin::Exec), alloc(1, 0x99, 9, 1)]]);
    theirs.write_all(&open).unwrap();
    theirs.write_all(&[1, 2, 3]).unwrap(); // half a frame
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while pipeline.open_connections() > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(pipeline.open_connections(), 1);
    let ingested = pipeline.finish();
    assert_eq!(ingested.still_open, vec![ConnId(2)]);
    check_family_live(&ingested.state);
    let still = ingested.state.process(Pid(12)).unwrap();
    assert_eq!(still.end, StreamEnd::Open);
    for (i, bytes) in sent.iter().enumerate() {
        assert_eq!(
            &fs::read(stream_path(&dir, ConnId(i as u32))).unwrap(),
            bytes
        );
    }
    let mut partial = open.clone();
    partial.extend_from_slice(&[1, 2, 3]);
    assert_eq!(fs::read(stream_path(&dir, ConnId(2))).unwrap(), partial);
    drop(theirs);
    // And the recording reads back to the same.
    let mut meta = RecordingMeta::starting(vec!["app".into()]);
    meta.open_streams = ingested.still_open.iter().map(|c| c.0).collect();
    rec.write_meta(&meta).unwrap();
    assert_eq!(contents(&dir).unwrap().streams.len(), 3);
    let loaded = load(&dir, StateOptions::default()).unwrap();
    check_family_live(&loaded.state);
    assert_eq!(loaded.state.process(Pid(12)).unwrap().end, StreamEnd::Open);
}

fn check_family_live(state: &RunState) {
    assert_eq!(state.processes.len(), 3);
    let p = state.process(Pid(10)).unwrap();
    assert_eq!(p.sites[&host(1)].outstanding_bytes, 107);
    let c = state.process(Pid(11)).unwrap();
    assert!(c.notes.is_empty(), "{:?}", c.notes);
    assert_eq!(c.sites[&host(2)].outstanding_bytes, 5);
    assert_eq!(c.unknown_frees, 0);
}

/// A synthetic single-process stream of about `n` records in frames of 1000: 64 threads'
/// buffers interleaved, 2000 stacks, addresses reused as an allocator would (most blocks
/// freed soon by the thread that made them, some by another thread, some kept).
/// Outstanding bytes of `p`, summed over its sites.
fn outstanding_bytes(p: &ProcessState) -> u64 {
    p.sites.values().map(|s| s.outstanding_bytes).sum()
}

fn synthetic_stream(n: usize, seed: u64) -> (Vec<Vec<Record>>, Vec<u8>) {
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut frames = vec![vec![hello(10, Origin::Exec)]];
    frames[0].extend((0..2000).map(stack));
    let mut free_addrs: Vec<u64> = Vec::new();
    let mut live: Vec<(u64, u32)> = Vec::new(); // (addr, thread)
    let mut fresh = 0x5555_0000_0000u64;
    let mut ts = 1_000_000u64;
    let mut frame = Vec::with_capacity(1000);
    let mut count = 0;
    while count < n {
        ts += 1 + next() % 200;
        let r = next();
        if live.is_empty() || r % 100 < 52 {
            let addr = free_addrs.pop().unwrap_or_else(|| {
                fresh += 64;
                fresh
            });
            let thread = (next() % 64) as u32;
            live.push((addr, thread));
            let mut a = alloc(ts, addr, 16 + next() % 512, 1 + (next() % 2000) as u32);
            if let Record::Alloc(a) = &mut a {
                a.thread = ThreadId(thread);
            }
            frame.push(a);
        } else {
            // Mostly the newest blocks, sometimes any.
            let i = if r % 10 == 0 {
                (next() % live.len() as u64) as usize
            } else {
                live.len() - 1 - (next() % live.len().min(8) as u64) as usize
            };
            let (addr, thread) = live.swap_remove(i);
            let mut f = free(ts, addr);
            if let Record::Free(f) = &mut f {
                f.thread = ThreadId(if r % 7 == 0 { thread + 1 } else { thread });
            }
            frame.push(f);
            free_addrs.push(addr);
        }
        count += 1;
        if frame.len() == 1000 {
            frames.push(std::mem::replace(&mut frame, Vec::with_capacity(1000)));
        }
    }
    frames.push(frame);
    let bytes = encode(&refs(&frames));
    (frames, bytes)
}

/// Throughput of the state alone, of decoding plus state, and of the whole pipeline with
/// four processes streaming at once over sockets. Run with
/// `cargo test --release -p leakscope --lib ingest_throughput -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement; run explicitly in release mode"]
fn ingest_throughput() {
    use std::time::Instant;
    let n = 4_000_000;
    let (frames, bytes) = synthetic_stream(n, 0x9e37_79b9_7f4a_7c15);
    let records: usize = frames.iter().map(Vec::len).sum();
    println!("stream: {records} records, {} bytes", bytes.len());

    let copy = frames.clone();
    let t = Instant::now();
    let mut state = RunState::new(StateOptions::default());
    for f in copy {
        state.apply_all(ConnId(0), f);
    }
    state.finish();
    let dt = t.elapsed().as_secs_f64();
    println!(
        "state only:      {:.1} M records/s",
        records as f64 / dt / 1e6
    );
    let outstanding = outstanding_bytes(&state.processes[0]);

    let t = Instant::now();
    let mut state = RunState::new(StateOptions::default());
    let ended = crate::ingest::decode::decode_stream(&bytes[..], "mem", |r| {
        state.apply_all(ConnId(0), r.drain(..))
    });
    assert_eq!(ended.close, crate::state::ConnClose::Eof);
    state.finish();
    let dt = t.elapsed().as_secs_f64();
    println!(
        "decode + state:  {:.1} M records/s",
        records as f64 / dt / 1e6
    );
    assert_eq!(outstanding_bytes(&state.processes[0]), outstanding);

    for streams in [1usize, 4] {
        let dir = tempfile::tempdir().unwrap();
        let rec = Recording::create(&dir.path().join("rec")).unwrap();
        let mut pipeline = Pipeline::start(StateOptions::default()).unwrap();
        let t = Instant::now();
        let mut writers = Vec::new();
        for _ in 0..streams {
            let (ours, mut theirs) = UnixStream::pair().unwrap();
            pipeline.add(ours, &rec).unwrap();
            let bytes = bytes.clone();
            writers.push(std::thread::spawn(move || {
                theirs.write_all(&bytes).unwrap()
            }));
        }
        for w in writers {
            w.join().unwrap();
        }
        while pipeline.open_connections() > 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let ingested = pipeline.finish();
        let dt = t.elapsed().as_secs_f64();
        println!(
            "pipeline, {streams} stream(s) (socket, tee to disk, decode, state): {:.1} M records/s",
            streams as f64 * records as f64 / dt / 1e6
        );
        assert_eq!(ingested.state.processes.len(), streams);
        for p in &ingested.state.processes {
            assert_eq!(outstanding_bytes(p), outstanding);
        }
    }
}

#[test]
fn a_live_recording_reads_every_cut_as_still_open_and_garbage_as_damage() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("rec");
    let first: &[Record] = &[hello(10, Origin::Exec), stack(1), alloc(1, 0x10, 4, 1)];
    let second: &[Record] = &[alloc(2, 0x20, 6, 1)];
    let whole = encode(&[first, second]);
    let first_end = encode(&[first]).len();
    let rec = write_recording(&dir, &[(0, whole.clone())]);
    let path = stream_path(&dir, ConnId(0));
    let mut meta = RecordingMeta::starting(vec!["app".into()]).with_this_collector();
    rec.write_meta(&meta).unwrap();
    // The collector may be anywhere in a write: every prefix is a snapshot, never damage.
    for cut in 0..=whole.len() {
        fs::write(&path, &whole[..cut]).unwrap();
        let loaded = load(&dir, StateOptions::default()).unwrap();
        assert!(loaded.live);
        assert!(loaded.state.warnings.is_empty(), "cut at {cut}");
        let Some(p) = loaded.state.process(Pid(10)) else {
            assert!(cut < first_end, "cut at {cut}: no process");
            continue;
        };
        assert_eq!(p.end, StreamEnd::Open, "cut at {cut}");
        let held = if cut == whole.len() { 10 } else { 4 };
        assert_eq!(outstanding_bytes(p), held, "cut at {cut}");
    }
    // A process that ended is clean even while the recording is live.
    fs::write(&path, encode(&[first, &[end(3)]])).unwrap();
    let loaded = load(&dir, StateOptions::default()).unwrap();
    let p = loaded.state.process(Pid(10)).unwrap();
    assert!(matches!(p.end, StreamEnd::Clean(_)), "{:?}", p.end);
    // Garbage inside a stream is damage, live or not.
    let mut bad = encode(&[first]);
    bad.extend_from_slice(&[3, 0, 0, 0, 0xff, 0xff, 0xff]);
    let mut rest = Vec::new();
    encode_frame(second, &mut rest).unwrap();
    bad.extend_from_slice(&rest);
    fs::write(&path, &bad).unwrap();
    let loaded = load(&dir, StateOptions::default()).unwrap();
    let p = loaded.state.process(Pid(10)).unwrap();
    assert!(matches!(p.end, StreamEnd::Damaged(_)), "{:?}", p.end);
    assert_eq!(outstanding_bytes(p), 4);
    // Once the run has ended, the same cut is the collector's cut-off again.
    fs::write(&path, &whole[..whole.len() - 1]).unwrap();
    meta.exit_status = Some(0);
    rec.write_meta(&meta).unwrap();
    let loaded = load(&dir, StateOptions::default()).unwrap();
    assert!(!loaded.live);
    let p = loaded.state.process(Pid(10)).unwrap();
    assert!(matches!(p.end, StreamEnd::Damaged(_)), "{:?}", p.end);
}
