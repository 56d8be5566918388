//! The recording's metadata file (`DIR/meta.json`): what was run and how it ended. Written
//! when a recording starts and rewritten when the command exits.

use serde::{Deserialize, Serialize};

/// Version of the metadata layout this build writes.
pub const META_VERSION: u32 = 1;

/// Contents of `meta.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingMeta {
    /// Version of the metadata layout; this build writes 1.
    pub meta_version: u32,
    /// Version of the leakscope that recorded.
    pub leakscope_version: String,
    /// The command as given to `leakscope run`.
    pub command: Vec<String>,
    /// When the recording started, nanoseconds since the Unix epoch.
    pub started_unix_ns: u64,
    /// The command's exit code, or 128 + signal number; `None` while it runs, or when
    /// the collector died before the command ended.
    pub exit_status: Option<i32>,
    /// The signal that ended the command, if one did.
    pub signal: Option<i32>,
    /// Streams (connection numbers, as in `streams/NNNNNN.lks`) still connected when the
    /// collector stopped listening: their processes were still running.
    #[serde(default)]
    pub open_streams: Vec<u32>,
}

impl RecordingMeta {
    /// The metadata of a recording of `command` starting now.
    pub fn starting(command: Vec<String>) -> Self {
        let started_unix_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        RecordingMeta {
            meta_version: META_VERSION,
            leakscope_version: env!("CARGO_PKG_VERSION").to_owned(),
            command,
            started_unix_ns,
            exit_status: None,
            signal: None,
            open_streams: Vec::new(),
        }
    }
}
