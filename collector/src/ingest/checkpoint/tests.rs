//! Tests of checkpoints: the state's round trip through serde (at every point of a run
//! that uses every kind of record, fork children waiting included), and the file's
//! atomic writing, fallback and damage checks.

use super::*;
use crate::analysis::{analyze, AnalysisOptions};
use crate::ingest::meta::RecordingMeta;
use crate::ingest::recording::stream_path;
use crate::state::{ConnClose, StateOptions};
use crate::test_records::{alloc_kind as alloc, free};
use leakscope_protocol::{
    Api, ArenaReading, CodeKey, DeviceOrdinal, End, EndReason, Fork, GpuAlloc, HeapReading, Hello,
    MachineReading, MemoryKind, ModuleId, ModuleMap, Origin, Pid, PoolAction, PoolEvent,
    PoolHandle, PyCode, PyFrame, PyVersion, Record, RuntimeAddr, Segment, StackDef, StackId,
    ThreadId, Timestamp, TorchBlock,
};
use std::time::{Duration, Instant};

const S: u64 = 1_000_000_000;

fn hello(pid: u32, origin: Origin) -> Record {
    Record::Hello(Hello {
        pid: Pid(pid),
        ppid: Pid(1),
        origin,
        exe: "/bin/app".into(),
        argv: vec!["app".into()],
        start: Timestamp(S),
        start_unix_ns: 2,
        fingerprint: leakscope_protocol::BUILD_FINGERPRINT,
    })
}

fn stack(id: u32, python: bool) -> Record {
    Record::Stack(StackDef {
        id: StackId(id),
        frames: vec![
            RuntimeAddr(0x40_1000 + u64::from(id)),
            RuntimeAddr(0x40_2000),
        ],
        python: if python {
            vec![
                PyFrame::Code {
                    code: CodeKey(7),
                    instr: 3,
                },
                PyFrame::Boundary,
            ]
        } else {
            vec![]
        },
    })
}

fn heap(ts: u64, rss: u64) -> Record {
    Record::Heap(HeapReading {
        ts: Timestamp(ts),
        rss,
        uss: rss / 2,
        arenas: vec![ArenaReading {
            system: rss,
            free: 100,
            free_chunks: 3,
            fastbin: 10,
            ..ArenaReading::default()
        }],
        mmap_chunks: 1,
        mmap_bytes: 4096,
    })
}

/// The frames of a small run, in arrival order: a parent (conn 0) with host, mapped, GPU,
/// pool, PyTorch, Python and heap records that forks a child (conn 1) whose stream arrives
/// before the fork record, and a growing site over a few minutes (for the series).
fn frames() -> Vec<(ConnId, Vec<Record>)> {
    let c0 = ConnId(0);
    let c1 = ConnId(1);
    let mut f = vec![
        (
            c0,
            vec![
                hello(10, Origin::Exec),
                Record::Module(ModuleMap {
                    id: ModuleId(0),
                    path: "/bin/app".into(),
                    build_id: vec![1, 2, 3],
                    segments: vec![Segment {
                        start: RuntimeAddr(0x40_0000),
                        end: RuntimeAddr(0x50_0000),
                        file_offset: leakscope_protocol::FileOffset(0),
                        executable: true,
                    }],
                }),
                Record::PyCode(PyCode {
                    key: CodeKey(7),
                    version: PyVersion {
                        major: 3,
                        minor: 12,
                    },
                    filename: "app.py".into(),
                    qualname: "main".into(),
                    first_line: 1,
                    line_table: vec![],
                    truncated: false,
                }),
                stack(1, false),
                stack(2, true),
                stack(3, false),
                alloc(S + 10, 0x10, 100, 1, MemoryKind::Host),
                alloc(S + 11, 0x20, 50, 1, MemoryKind::Host),
                free(S + 12, 0x20),
                alloc(S + 13, 0x10_0000, 0x2000, 2, MemoryKind::Mapped),
                heap(S + 14, 1 << 20),
            ],
        ),
        (
            c1,
            vec![
                hello(11, Origin::Fork { parent: Pid(10) }),
                stack(1, false),
                free(2 * S + 30, 0x10),
                alloc(2 * S + 31, 0x40, 5, 1, MemoryKind::Host),
            ],
        ),
        (
            c0,
            vec![
                Record::GpuAlloc(GpuAlloc {
                    ts: Timestamp(S + 15),
                    thread: ThreadId(1),
                    addr: RuntimeAddr(0x7f00_0000),
                    size: 1 << 20,
                    kind: MemoryKind::Device,
                    api: Api::CudaMalloc,
                    stack: StackId(3),
                    device: Some(DeviceOrdinal(0)),
                }),
                Record::Pool(PoolEvent {
                    ts: Timestamp(S + 16),
                    thread: ThreadId(1),
                    pool: PoolHandle(0xfeed),
                    device: Some(DeviceOrdinal(0)),
                    action: PoolAction::Created,
                    reserved: 0,
                    used: 0,
                }),
                Record::TorchBlock(TorchBlock {
                    ts: Timestamp(S + 17),
                    thread: ThreadId(1),
                    addr: RuntimeAddr(0x7f10_0000),
                    alloc: true,
                    stack: StackId(3),
                }),
                Record::Fork(Fork {
                    ts: Timestamp(S + 20),
                    thread: ThreadId(1),
                    child: Pid(11),
                }),
            ],
        ),
    ];
    // A leak of 1 kB a second for three minutes, and a site that churns.
    for i in 0..180u64 {
        let ts = 3 * S + i * S;
        let mut rs = vec![
            alloc(ts, 0x100_0000 + i * 0x1000, 1024, 2, MemoryKind::Host),
            alloc(
                ts + 1,
                0x200_0000 + (i % 4) * 0x1000,
                64,
                3,
                MemoryKind::Host,
            ),
        ];
        if i >= 4 {
            rs.push(free(ts + 2, 0x200_0000 + ((i + 1) % 4) * 0x1000));
        }
        if i % 10 == 0 {
            rs.push(heap(ts + 3, (1 << 20) + i * 1024));
        }
        f.push((c0, rs));
        if i % 30 == 0 {
            f.push((c1, vec![alloc(ts + 5, 0x50 + i, 7, 1, MemoryKind::Host)]));
        }
    }
    f.push((
        c0,
        vec![Record::End(End {
            ts: Timestamp(200 * S),
            reason: EndReason::Exit,
        })],
    ));
    f
}

fn machine(ts: u64) -> MachineReading {
    MachineReading {
        ts: Timestamp(ts),
        mem_total: 8 << 30,
        mem_available: 4 << 30,
        ..MachineReading::default()
    }
}

fn report_json(mut state: RunState) -> serde_json::Value {
    state.finish();
    let model = analyze(
        &state,
        &RecordingMeta::default(),
        &AnalysisOptions::default(),
    );
    serde_json::to_value(&model).expect("the model serializes")
}

fn round_trip(state: &RunState) -> RunState {
    let bytes = bincode::serde::encode_to_vec(state, bincode::config::standard()).unwrap();
    let (back, used): (RunState, usize) =
        bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
    assert_eq!(used, bytes.len());
    back
}

/// Applies `frames[range]`, with a machine reading after each.
fn apply(state: &mut RunState, frames: &[(ConnId, Vec<Record>)], from: usize) {
    for (i, (conn, records)) in frames.iter().enumerate() {
        state.apply_all(*conn, records.iter().cloned());
        state.apply_machine(machine((from + i) as u64 * S));
    }
}

fn end_all(state: &mut RunState) {
    state.end_stream(ConnId(0), ConnClose::Eof);
    state.end_stream(ConnId(1), ConnClose::StillOpen);
}

#[test]
fn a_state_serialized_anywhere_in_a_run_gives_the_same_report() {
    let frames = frames();
    let mut whole = RunState::new(StateOptions::default());
    apply(&mut whole, &frames, 0);
    end_all(&mut whole);
    let expected = report_json(whole);
    assert!(
        expected["processes"]
            .as_array()
            .is_some_and(|p| p.len() == 2),
        "{expected}"
    );
    // Cut after the child's stream arrived but before its parent's fork (the child waits),
    // after the fork, in the middle of the series, and at the end.
    for cut in [0, 1, 2, 3, 50, 120, frames.len()] {
        let mut state = RunState::new(StateOptions::default());
        apply(&mut state, &frames[..cut], 0);
        let mut back = round_trip(&state);
        apply(&mut back, &frames[cut..], cut);
        end_all(&mut back);
        assert_eq!(report_json(back), expected, "cut after {cut} frames");
    }
}

#[test]
fn a_finished_state_round_trips_too() {
    let mut state = RunState::new(StateOptions::default());
    apply(&mut state, &frames(), 0);
    end_all(&mut state);
    state.finish();
    let back = round_trip(&state);
    assert_eq!(report_json(back), report_json(state));
}

fn state_after(n: usize) -> RunState {
    let mut state = RunState::new(StateOptions::default());
    apply(&mut state, &frames()[..n], 0);
    state
}

#[test]
fn written_checkpoints_read_back_and_the_previous_one_is_kept() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    assert!(load_latest(dir).0.is_none());
    let first = state_after(2);
    write(dir, &[(ConnId(0), 100)], &[], &first).unwrap();
    assert!(!dir.join(PREVIOUS_FILE).exists());
    assert!(!dir.join(TEMP_FILE).exists());
    let second = state_after(20);
    write(
        dir,
        &[(ConnId(0), 200), (ConnId(1), 50)],
        &[ConnId(1)],
        &second,
    )
    .unwrap();
    let newest = read(&dir.join(CHECKPOINT_FILE)).unwrap();
    assert_eq!(newest.offset(ConnId(0)), Some(200));
    assert_eq!(newest.offset(ConnId(1)), Some(50));
    assert_eq!(newest.offset(ConnId(2)), None);
    assert!(newest.is_closed(ConnId(1)));
    assert_eq!(report_json(newest.state), report_json(state_after(20)));
    let previous = read(&dir.join(PREVIOUS_FILE)).unwrap();
    assert_eq!(previous.offset(ConnId(0)), Some(100));
    assert_eq!(report_json(previous.state), report_json(first));
    let (found, problems) = load_latest(dir);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(found.unwrap().0, dir.join(CHECKPOINT_FILE));
}

#[test]
fn a_damaged_or_cut_checkpoint_is_refused_and_the_previous_one_used() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    write(dir, &[(ConnId(0), 100)], &[], &state_after(2)).unwrap();
    write(dir, &[(ConnId(0), 200)], &[], &state_after(30)).unwrap();
    let path = dir.join(CHECKPOINT_FILE);
    let good = fs::read(&path).unwrap();
    // Every cut, and a flipped bit in every region, is refused without a panic.
    let mut cuts: Vec<usize> = (0..64.min(good.len())).collect();
    cuts.extend((64..good.len()).step_by(97));
    for cut in cuts {
        fs::write(&path, &good[..cut]).unwrap();
        assert!(read(&path).is_err(), "cut at {cut}");
    }
    for at in (0..good.len()).step_by(31) {
        let mut bad = good.clone();
        bad[at] ^= 0x10;
        fs::write(&path, &bad).unwrap();
        assert!(read(&path).is_err(), "bit flipped at {at}");
    }
    let (found, problems) = load_latest(dir);
    let (used, c) = found.expect("falls back");
    assert_eq!(used, dir.join(PREVIOUS_FILE));
    assert_eq!(c.offset(ConnId(0)), Some(100));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("checkpoint.bin"), "{problems:?}");
    // Both damaged: none, two problems.
    fs::write(dir.join(PREVIOUS_FILE), b"LKSCKPT").unwrap();
    let (found, problems) = load_latest(dir);
    assert!(found.is_none());
    assert_eq!(problems.len(), 2, "{problems:?}");
    // Another format is named as such.
    let mut other = good.clone();
    other[8] = 99;
    fs::write(&path, &other).unwrap();
    let e = read(&path).unwrap_err();
    assert!(
        matches!(e, CheckpointError::OtherVersion { found: 99, .. }),
        "{e}"
    );
    fs::write(&path, b"something else entirely").unwrap();
    assert!(matches!(
        read(&path).unwrap_err(),
        CheckpointError::BadMagic { .. }
    ));
}

/// The bytes of each connection's stream, as the shim would send them.
fn streams(frames: &[(ConnId, Vec<Record>)]) -> [Vec<u8>; 2] {
    let mut out = [Vec::new(), Vec::new()];
    for s in &mut out {
        leakscope_protocol::wire::encode_header(s);
    }
    for (conn, records) in frames {
        leakscope_protocol::wire::encode_frame(records, &mut out[conn.0 as usize]).unwrap();
    }
    out
}

fn meta(live: bool) -> RecordingMeta {
    let m = RecordingMeta::starting(vec!["app".into()]);
    if live {
        m.with_this_collector()
    } else {
        RecordingMeta {
            exit_status: Some(0),
            ..m
        }
    }
}

fn loaded_json(dir: &Path, until: Option<Duration>) -> serde_json::Value {
    let loaded = crate::ingest::replay::load_until(dir, StateOptions::default(), until).unwrap();
    let model = analyze(&loaded.state, &loaded.meta, &AnalysisOptions::default());
    serde_json::to_value(&model).unwrap()
}

/// A live run through the pipeline with a checkpoint every few milliseconds: the report
/// read back from its checkpoint and what is left of its streams is the one of the same
/// bytes read from scratch, the streams' starts were given back, and `--until` works from
/// the checkpoint or says why it cannot.
#[test]
fn live_checkpoints_replay_to_the_same_report_and_give_bytes_back() {
    use crate::ingest::pipeline::Pipeline;
    use crate::ingest::recording::Recording;
    use std::io::Write as _;
    use std::os::unix::net::UnixStream;

    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("rec");
    let rec = Recording::create(&dir).unwrap();
    rec.write_meta(&meta(true)).unwrap();
    let checkpoints = Checkpointer::new(&dir, Duration::from_millis(20));
    let mut pipeline = Pipeline::start_with(StateOptions::default(), Some(checkpoints)).unwrap();
    let frames = frames();
    let bytes = streams(&frames);
    let mut sockets = Vec::new();
    for _ in 0..2 {
        let (ours, theirs) = UnixStream::pair().unwrap();
        pipeline.add(ours, &rec).unwrap();
        sockets.push(theirs);
    }
    // Frame by frame, slowly enough for many checkpoints in between.
    let mut sent = [leakscope_protocol::wire::HEADER_LEN; 2];
    for s in 0..2 {
        sockets[s].write_all(&bytes[s][..sent[s]]).unwrap();
    }
    for (i, (conn, records)) in frames.iter().enumerate() {
        let c = conn.0 as usize;
        let mut one = Vec::new();
        leakscope_protocol::wire::encode_frame(records, &mut one).unwrap();
        assert_eq!(bytes[c][sent[c]..sent[c] + one.len()], one[..]);
        sockets[c].write_all(&one).unwrap();
        sent[c] += one.len();
        std::thread::sleep(Duration::from_millis(2));
        if i == frames.len() / 2 {
            // A report of the live recording meanwhile reads, whatever checkpoint is there.
            let loaded = crate::ingest::replay::load(&dir, StateOptions::default()).unwrap();
            assert!(loaded.live);
            assert_eq!(loaded.state.processes.len(), 2);
            assert!(
                !loaded
                    .state
                    .warnings
                    .iter()
                    .any(|w| w.contains("checkpoint")),
                "{:?}",
                loaded.state.warnings
            );
        }
    }
    drop(sockets);
    let deadline = Instant::now() + Duration::from_secs(10);
    while pipeline.open_connections() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    // One more checkpoint with both streams ended.
    std::thread::sleep(Duration::from_millis(50));
    let ingested = pipeline.finish();
    rec.write_meta(&meta(false)).unwrap();
    assert!(dir.join(CHECKPOINT_FILE).exists());
    assert!(dir.join(PREVIOUS_FILE).exists());

    // The same bytes, never checkpointed.
    let copy = t.path().join("copy");
    fs::create_dir_all(copy.join("streams")).unwrap();
    for (c, b) in bytes.iter().enumerate() {
        let path = stream_path(&dir, ConnId(c as u32));
        assert_eq!(fs::metadata(&path).unwrap().len(), b.len() as u64);
        fs::write(stream_path(&copy, ConnId(c as u32)), b).unwrap();
    }
    fs::copy(dir.join("meta.json"), copy.join("meta.json")).unwrap();

    let scratch = loaded_json(&copy, None);
    assert_eq!(loaded_json(&dir, None), scratch);
    let live = analyze(&ingested.state, &meta(false), &AnalysisOptions::default());
    assert_eq!(serde_json::to_value(&live).unwrap(), scratch);

    let parent = File::open(stream_path(&dir, ConnId(0))).unwrap();
    let holed = crate::ingest::reclaim::hole_after(&parent, 0)
        .unwrap()
        .is_some();
    // `--until` after everything the checkpoint holds reads on from it.
    let late = Some(Duration::from_secs(500));
    assert_eq!(loaded_json(&dir, late), loaded_json(&copy, late));
    // Before: from scratch, which only works while the bytes are there.
    let early = Duration::from_secs(60);
    match crate::ingest::replay::load_until(&dir, StateOptions::default(), Some(early)) {
        Ok(_) => assert!(!holed, "read although bytes were given back"),
        Err(e) => {
            assert!(holed, "{e}");
            assert!(e.to_string().contains("--until"), "{e}");
        }
    }
    if !holed {
        assert_eq!(
            loaded_json(&dir, Some(early)),
            loaded_json(&copy, Some(early))
        );
    }

    // Without a usable checkpoint, a stream with holes is named and left out; nothing
    // panics.
    if holed {
        fs::write(dir.join(CHECKPOINT_FILE), b"LKSCKPT\0\x01").unwrap();
        fs::write(dir.join(PREVIOUS_FILE), b"").unwrap();
        let loaded = crate::ingest::replay::load(&dir, StateOptions::default()).unwrap();
        let w = loaded.state.warnings.join("\n");
        assert!(w.contains("checkpoint.bin"), "{w}");
        assert!(w.contains("000000.lks"), "{w}");
        assert!(w.contains("given back"), "{w}");
    }
}

/// What a checkpoint of a large state costs (run with `--ignored --nocapture`, in release
/// for figures worth quoting): a million live blocks from 10,000 sites.
#[test]
#[ignore]
fn cost_of_a_large_checkpoint() {
    let mut state = RunState::new(StateOptions::default());
    let c = ConnId(0);
    state.apply(c, hello(10, Origin::Exec));
    for id in 0..10_000 {
        state.apply(c, stack(id, false));
    }
    for i in 0..1_000_000u64 {
        state.apply(
            c,
            alloc(
                S + i * 1000,
                0x1000_0000 + i * 64,
                48,
                (i % 10_000) as u32,
                MemoryKind::Host,
            ),
        );
    }
    let t = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let bytes = write(t.path(), &[(c, 1 << 30)], &[], &state).unwrap();
    let wrote = started.elapsed();
    let started = Instant::now();
    let back = read(&t.path().join(CHECKPOINT_FILE)).unwrap();
    let read_in = started.elapsed();
    println!(
        "checkpoint of 1M live blocks, 10k sites: {} MB, written in {wrote:?}, read in {read_in:?}",
        bytes >> 20
    );
    assert_eq!(back.state.processes.len(), 1);
}
