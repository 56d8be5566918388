//! Reading a recording back into a [`RunState`]: every stream file, in connection order,
//! through the wire decoder. A damaged file keeps everything decoded before the problem and
//! marks its process damaged (unless `meta.json` lists the stream as still open when the
//! collector stopped, and it ends mid-frame: that was the collector's cut); fork children
//! whose file comes before their parent's are
//! held back by the state until the parent's fork record is applied, as they are live.

use crate::error::RecordingError;
use crate::ingest::decode::decode_stream;
use crate::ingest::meta::RecordingMeta;
use crate::ingest::recording::contents;
use crate::state::{ConnClose, RunState, StateOptions};
use std::fs::File;
use std::path::Path;

/// A recording read back.
#[derive(Debug)]
pub struct Loaded {
    pub meta: RecordingMeta,
    /// The finished state; its `warnings` include the recording's own (missing metadata,
    /// stray files).
    pub state: RunState,
}

/// Reads the recording in `dir`.
pub fn load(dir: &Path, options: StateOptions) -> Result<Loaded, RecordingError> {
    let found = contents(dir)?;
    let mut state = RunState::new(options);
    state.warnings.extend(found.warnings);
    for (conn, path) in &found.streams {
        let file = File::open(path).map_err(|source| RecordingError::Read {
            path: path.clone(),
            source,
        })?;
        let name = path.display().to_string();
        let ended = decode_stream(file, &name, |records| {
            state.apply_all(*conn, records.drain(..))
        });
        // A stream the collector stopped while its process ran may end mid-frame: that is
        // the cut, not damage.
        let still_open = found.meta.open_streams.contains(&conn.0);
        let close = match ended.close {
            ConnClose::Eof if still_open => ConnClose::StillOpen,
            ConnClose::Damaged(_) if still_open && ended.truncated => ConnClose::StillOpen,
            other => other,
        };
        state.end_stream(*conn, close);
    }
    state.finish();
    Ok(Loaded {
        meta: found.meta,
        state,
    })
}
