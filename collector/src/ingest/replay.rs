//! Reading a recording back into a [`RunState`]: every stream file, in connection order,
//! through the wire decoder. A damaged file keeps everything decoded before the problem and
//! marks its process damaged (unless `meta.json` lists the stream as still open when the
//! collector stopped, and it ends mid-frame: that was the collector's cut); fork children
//! whose file comes before their parent's are
//! held back by the state until the parent's fork record is applied, as they are live.
//!
//! A recording with a checkpoint (`ingest::checkpoint`) is read from the checkpoint's state
//! and offsets on; the stream bytes before them may have been given back to the file
//! system (`ingest::reclaim`).
//!
//! A live recording (its collector still running, [`RecordingMeta::is_live`]) is read as a
//! snapshot: every stream up to its last complete frame, each stream without an `End`
//! record (ending at a frame boundary or mid-frame, where the collector is appending)
//! still open. Files are only opened for reading, and nothing is locked, so the collector
//! goes on undisturbed.

use crate::error::RecordingError;
use crate::ingest::checkpoint::{self, Checkpoint};
use crate::ingest::decode::{decode_stream_from, decode_stream_offsets};
use crate::ingest::machine::load_machine_after;
use crate::ingest::meta::RecordingMeta;
use crate::ingest::reclaim::hole_after;
use crate::ingest::recording::{contents, stream_path};
use crate::state::{ConnClose, ConnId, RunState, StateOptions, StreamEnd};
use leakscope_protocol::Record;
use std::fs::File;
use std::path::Path;
use std::time::Duration;

/// A recording read back.
#[derive(Debug)]
pub struct Loaded {
    pub meta: RecordingMeta,
    /// The finished state; its `warnings` include the recording's own (missing metadata,
    /// stray files).
    pub state: RunState,
    /// The recording was live when read: its command still ran, and `state` is a snapshot.
    pub live: bool,
}

/// Reads the recording in `dir`.
pub fn load(dir: &Path, options: StateOptions) -> Result<Loaded, RecordingError> {
    load_until(dir, options, None)
}

/// Reads the recording in `dir` as it stood `until` after its first process started (all
/// of it with `None`): records stamped later are left out, processes that started later
/// too, and every stream still going then is open.
///
/// With a usable checkpoint (`checkpoint.bin`, or `checkpoint.prev.bin` when the newest is
/// damaged), reading starts from its state and each stream from the checkpoint's offset;
/// streams it does not know are read from their start. An `until` before the checkpoint's
/// newest event is read from the start of every stream, which only works while no stream
/// bytes were given back (otherwise [`RecordingError::UntilBeforeCheckpoint`]).
pub fn load_until(
    dir: &Path,
    options: StateOptions,
    until: Option<Duration>,
) -> Result<Loaded, RecordingError> {
    // A live run may write two checkpoints while a slow read is under way, and give back
    // bytes that the checkpoint read first still needs: then read again, from the newer.
    let mut attempt = 1;
    loop {
        match load_once(dir, options, until, attempt >= ATTEMPTS)? {
            Some(loaded) => return Ok(loaded),
            None => attempt += 1,
        }
    }
}

/// Reads of a live recording tried before its streams' holes are reported as they are.
const ATTEMPTS: usize = 3;

/// One reading of the recording; `None` when the live run gave back bytes after the
/// checkpoint read (never on the `last_try`, which reports those streams as they are).
fn load_once(
    dir: &Path,
    options: StateOptions,
    until: Option<Duration>,
    last_try: bool,
) -> Result<Option<Loaded>, RecordingError> {
    let found = contents(dir)?;
    let until_ns = until.map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let live = found.meta.is_live();
    let mut options = options;
    if let Some(ms) = found.meta.interval_ms {
        options.series.interval_ns = ms.max(1).saturating_mul(1_000_000);
    }
    let (latest, problems) = checkpoint::load_latest(dir);
    let mut warnings = found.warnings;
    warnings.extend(problems);
    // The cut on the monotonic clock, set by the first process's `Hello`.
    let mut cutoff: Option<u64> = None;
    let checkpoint = match (latest, until_ns) {
        (None, _) => None,
        (Some((_, c)), None) => Some(c),
        (Some((path, c)), Some(after)) => match usable_until(&c, after) {
            Ok(cut) => {
                cutoff = Some(cut);
                let mut c = c;
                reopen_cut_off(&mut c);
                Some(c)
            }
            Err(why) => {
                let first = first_start(&c.state).unwrap_or(0);
                let refusal = match why {
                    Unusable::NoProcess => None,
                    Unusable::Later(newest) => Some(RecordingError::UntilBeforeCheckpoint {
                        path,
                        until_s: after as f64 / 1e9,
                        newest_s: newest.saturating_sub(first) as f64 / 1e9,
                    }),
                    Unusable::Damaged(conn) => Some(RecordingError::UntilDamagedInCheckpoint {
                        path,
                        stream: stream_path(dir, conn),
                    }),
                };
                // Read from the start instead: only if every byte is still there.
                if let Some(refusal) = refusal {
                    for (_, stream) in &found.streams {
                        let holed = File::open(stream).and_then(|f| hole_after(&f, 0)).map_err(
                            |source| RecordingError::Read {
                                path: stream.clone(),
                                source,
                            },
                        )?;
                        if holed.is_some() {
                            return Err(refusal);
                        }
                    }
                }
                None
            }
        },
    };
    let machine_after = checkpoint
        .as_ref()
        .and_then(|c| c.state.machine.latest().map(|m| m.ts.0));
    let (mut state, checkpoint) = match checkpoint {
        Some(c) => {
            let Checkpoint {
                offsets,
                closed,
                state,
            } = c;
            (state, Some((offsets, closed)))
        }
        None => (RunState::new(options), None),
    };
    state.warnings.extend(warnings);
    for (conn, path) in &found.streams {
        let mut from = None;
        if let Some((offsets, closed)) = &checkpoint {
            if closed.contains(conn) {
                continue; // the state has all of it, its end included
            }
            from = offsets.iter().find(|(c, _)| c == conn).map(|(_, o)| *o);
        }
        let file = File::open(path).map_err(|source| RecordingError::Read {
            path: path.clone(),
            source,
        })?;
        let name = path.display().to_string();
        let holed =
            hole_after(&file, from.unwrap_or(0)).map_err(|source| RecordingError::Read {
                path: path.clone(),
                source,
            })?;
        if let Some(at) = holed {
            if live && from.is_some() && !last_try {
                return Ok(None);
            }
            // What is left cannot be decoded: frames after a hole refer to definitions in
            // it, and where the next frame starts is unknown.
            let why = match from {
                Some(o) => format!(
                    "{name}: bytes from {at} on were given back to the file system although the checkpoint reads on from {o}; the rest of the stream is left out"
                ),
                None => format!(
                    "{name}: its bytes up to {at} or more were given back to the file system after a checkpoint, and no checkpoint could be used; this stream is left out"
                ),
            };
            state.end_stream(*conn, ConnClose::Damaged(why));
            continue;
        }
        let mut skipped = false;
        let mut on_frame = |records: &mut Vec<Record>, _: u64| match until_ns {
            None => state.apply_all(*conn, records.drain(..)),
            Some(after) => {
                for r in records.drain(..) {
                    if let Record::Hello(h) = &r {
                        let cut = *cutoff.get_or_insert(h.start.0.saturating_add(after));
                        skipped |= h.start.0 > cut;
                    }
                    let late = cutoff.is_some_and(|cut| r.ts().is_some_and(|t| t.0 > cut));
                    if !skipped && !late {
                        state.apply(*conn, r);
                    }
                }
            }
        };
        let ended = match from {
            Some(offset) => decode_stream_from(file, &name, offset, &mut on_frame),
            None => decode_stream_offsets(file, &name, &mut on_frame),
        };
        if skipped {
            continue;
        }
        // A stream the collector stopped while its process ran may end mid-frame: that is
        // the cut, not damage. In a live recording every stream may be mid-append.
        // Cut by `until`, a stream without its `End` by then was still going.
        let still_open = live || until_ns.is_some() || found.meta.open_streams.contains(&conn.0);
        let close = match ended.close {
            ConnClose::Eof if still_open => ConnClose::StillOpen,
            ConnClose::Damaged(_) if still_open && ended.truncated => ConnClose::StillOpen,
            other => other,
        };
        state.end_stream(*conn, close);
    }
    if let Some(w) = load_machine_after(dir, &mut state, machine_after, cutoff) {
        state.warnings.push(w);
    }
    state.finish();
    Ok(Some(Loaded {
        meta: found.meta,
        state,
        live,
    }))
}

/// The `Hello` time of the first connection's process: where `until` counts from.
fn first_start(state: &RunState) -> Option<u64> {
    state
        .processes
        .iter()
        .min_by_key(|p| p.stream)
        .map(|p| p.hello.start.0)
}

/// Why a checkpoint cannot be read on from up to a cut.
enum Unusable {
    /// It has no process to count the cut from.
    NoProcess,
    /// Its newest event (nanoseconds, monotonic) is after the cut.
    Later(u64),
    /// It applied the end of a stream that could not be read to its end: read up to a
    /// cut, the stream might have been still going.
    Damaged(ConnId),
}

/// The cut for `until` (nanoseconds after the first start) when checkpoint `c` can be read
/// on from: everything in its state is at or before the cut, and no stream whose end it
/// applied was damaged. Streams it closed without an `End` record were cut off; read up to
/// a cut they are still open, and [`reopen_cut_off`] says so.
fn usable_until(c: &Checkpoint, until: u64) -> Result<u64, Unusable> {
    let state = &c.state;
    let first = first_start(state).ok_or(Unusable::NoProcess)?;
    let cut = first.saturating_add(until);
    let newest = state
        .processes
        .iter()
        .map(|p| p.last_ts.0.max(p.hello.start.0))
        .chain(state.machine.latest().map(|m| m.ts.0))
        .max()
        .unwrap_or(0);
    if newest > cut {
        return Err(Unusable::Later(newest));
    }
    if let Some(p) = state
        .processes
        .iter()
        .find(|p| c.is_closed(p.stream) && matches!(p.end, StreamEnd::Damaged(_)))
    {
        return Err(Unusable::Damaged(p.stream));
    }
    Ok(cut)
}

/// Read up to a cut, a stream without its `End` record was still going then: the
/// processes a checkpoint saw cut off are open.
fn reopen_cut_off(c: &mut Checkpoint) {
    for p in &mut c.state.processes {
        if p.end == StreamEnd::CutOff {
            p.end = StreamEnd::Open;
        }
    }
}
