//! The library's error types: one enum per area ([`RecordingError`] for the recording
//! directory, [`RunError`] for `leakscope run`), each message naming the path or command
//! it is about and, where there is one, what to do.

use std::io;
use std::path::PathBuf;

/// Something wrong with a recording directory or one of its files.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("recording directory {} does not exist", .path.display())]
    Missing { path: PathBuf },
    #[error("{} is not a directory", .path.display())]
    NotADirectory { path: PathBuf },
    #[error("{} is not a leakscope recording: it has neither meta.json nor stream files", .path.display())]
    NotARecording { path: PathBuf },
    #[error("{} already exists and is not empty: choose another --out directory or remove it", .path.display())]
    NotEmpty { path: PathBuf },
    #[error("cannot create {}: {source}", .path.display())]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot read {}: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {}: {source}", .path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read the recording as it stood {until_s:.3} s after its start: its checkpoint {} holds events up to {newest_s:.3} s, and the stream bytes before it were given back to the file system; choose --until {newest_s:.0} s or later", .path.display())]
    UntilBeforeCheckpoint {
        path: PathBuf,
        until_s: f64,
        newest_s: f64,
    },
    #[error("cannot read the recording up to a time: its checkpoint {} holds the end of the damaged stream {}, which may still have been going at that time, and the stream bytes before the checkpoint were given back to the file system; read the recording without --until", .path.display(), .stream.display())]
    UntilDamagedInCheckpoint { path: PathBuf, stream: PathBuf },
    #[error("{} is not valid recording metadata: {source}", .path.display())]
    BadMeta {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Why `leakscope run` could not do its job. [`RunError::exit_code`] gives the status a
/// shell would use.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no command given: usage is `leakscope run [OPTIONS] -- COMMAND [ARGS...]`")]
    NoCommand,
    #[error("cannot find the leakscope shim (libleakscope_shim.so); tried: {}. Build it (cargo build) or set LEAKSCOPE_SHIM to its path", .tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    ShimNotFound { tried: Vec<PathBuf> },
    #[error("LEAKSCOPE_SHIM is set to {}, which is not a file", .path.display())]
    ShimFromEnvMissing { path: PathBuf },
    #[error("the shim's path {} contains a space or a colon, which LD_PRELOAD cannot carry: move it or set LEAKSCOPE_SHIM to another path", .path.display())]
    ShimPathUnusable { path: PathBuf },
    #[error("cannot find leakscope's own executable: {0}")]
    CurrentExe(io::Error),
    #[error("{command}: command not found")]
    CommandNotFound { command: String },
    #[error("{command}: permission denied")]
    CommandNotExecutable { command: String },
    #[error("cannot start {command}: {source}")]
    Spawn { command: String, source: io::Error },
    #[error("cannot wait for the command: {0}")]
    Wait(io::Error),
    #[error("cannot listen on a Unix socket for the shim: {0}")]
    Listen(io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
    #[error("cannot start an ingestion thread: {0}")]
    Thread(io::Error),
    #[error(transparent)]
    Recording(#[from] RecordingError),
    #[error("cannot write the report: {0}")]
    Report(io::Error),
}

impl RunError {
    /// The exit status for this error: 127 for a command that does not exist and 126 for
    /// one that cannot be executed (as a shell does), 2 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::CommandNotFound { .. } => 127,
            RunError::CommandNotExecutable { .. } => 126,
            _ => 2,
        }
    }
}
