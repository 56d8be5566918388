//! Reading a recording back into a [`RunState`]: every stream file, in connection order,
//! through the wire decoder. A damaged file keeps everything decoded before the problem and
//! marks its process damaged (unless `meta.json` lists the stream as still open when the
//! collector stopped, and it ends mid-frame: that was the collector's cut); fork children
//! whose file comes before their parent's are
//! held back by the state until the parent's fork record is applied, as they are live.
//!
//! A live recording (its collector still running, [`RecordingMeta::is_live`]) is read as a
//! snapshot: every stream up to its last complete frame, each stream without an `End`
//! record (ending at a frame boundary or mid-frame, where the collector is appending)
//! still open. Files are only opened for reading, and nothing is locked, so the collector
//! goes on undisturbed.

use crate::error::RecordingError;
use crate::ingest::decode::decode_stream;
use crate::ingest::meta::RecordingMeta;
use crate::ingest::recording::contents;
use crate::state::{ConnClose, RunState, StateOptions};
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
pub fn load_until(
    dir: &Path,
    options: StateOptions,
    until: Option<Duration>,
) -> Result<Loaded, RecordingError> {
    let found = contents(dir)?;
    let until_ns = until.map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    // The cut on the monotonic clock, set by the first process's `Hello`.
    let mut cutoff: Option<u64> = None;
    let live = found.meta.is_live();
    let mut options = options;
    if let Some(ms) = found.meta.interval_ms {
        options.series.interval_ns = ms.max(1).saturating_mul(1_000_000);
    }
    let mut state = RunState::new(options);
    state.warnings.extend(found.warnings);
    for (conn, path) in &found.streams {
        let file = File::open(path).map_err(|source| RecordingError::Read {
            path: path.clone(),
            source,
        })?;
        let name = path.display().to_string();
        let mut skipped = false;
        let ended = decode_stream(file, &name, |records| match until_ns {
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
        });
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
    if let Some(w) = crate::ingest::machine::load_machine(dir, &mut state, cutoff) {
        state.warnings.push(w);
    }
    state.finish();
    Ok(Loaded {
        meta: found.meta,
        state,
        live,
    })
}
