//! Checkpoints: the state of a live run saved in the recording (`DIR/checkpoint.bin`), so
//! that `leakscope report` can start from it instead of from the first byte of every
//! stream, and so that the stream bytes before it can be given back to the file system
//! (`ingest::reclaim`, after each checkpoint: [`Checkpointer`]).
//!
//! A checkpoint is a short header (the magic `LKSCKPT\0`, [`FORMAT_VERSION`], the
//! leakscope version that wrote it), the bincode (serde) encoding of a [`Checkpoint`]: the
//! unfinished [`RunState`] and, per connection, the byte offset in its stream file just
//! after the last frame whose records the state holds, then a trailer (the payload's
//! length and FNV-1a hash) that tells a complete, intact file from a cut or damaged one.
//!
//! Writing is atomic: the new checkpoint goes to `checkpoint.bin.tmp`, is synced, the
//! current `checkpoint.bin` becomes `checkpoint.prev.bin` and the new file takes its name.
//! So there is always a complete checkpoint to fall back on, and the bytes of the streams
//! are only reclaimed up to the previous checkpoint's offsets: either checkpoint can be
//! replayed from.

use crate::ingest::reclaim::{punch_stream, Punched, BLOCK};
use crate::ingest::recording::stream_path;
use crate::state::{ConnId, FxHashMap, RunState};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The newest checkpoint of a recording.
pub const CHECKPOINT_FILE: &str = "checkpoint.bin";
/// The checkpoint before it, kept while the newest is written and after.
pub const PREVIOUS_FILE: &str = "checkpoint.prev.bin";
/// Where a checkpoint is written before it takes its name.
pub const TEMP_FILE: &str = "checkpoint.bin.tmp";

const MAGIC: [u8; 8] = *b"LKSCKPT\0";
/// The layout of the checkpoint file and of the state inside. A checkpoint of another
/// format (or written by another leakscope version, whose state may differ) is not used.
/// 2: sites keep their longest hold, and processes their outlived series.
pub const FORMAT_VERSION: u32 = 2;
/// Payload length and hash.
const TRAILER_LEN: usize = 16;

/// What a checkpoint holds.
#[derive(Debug, serde::Deserialize)]
pub struct Checkpoint {
    /// Per connection, the offset in its stream file just after the last frame applied to
    /// `state`. A connection not listed had nothing applied.
    pub offsets: Vec<(ConnId, u64)>,
    /// Connections whose end the state already knows (`RunState::end_stream` applied):
    /// nothing of them is to be read again.
    pub closed: Vec<ConnId>,
    /// The state, not finished.
    pub state: RunState,
}

/// [`Checkpoint`] by reference, for writing without a copy of the state (same encoding).
#[derive(serde::Serialize)]
struct CheckpointRef<'a> {
    offsets: &'a [(ConnId, u64)],
    closed: &'a [ConnId],
    state: &'a RunState,
}

impl Checkpoint {
    /// The offset of `conn`'s stream to read on from, `None` when nothing of it is applied.
    pub fn offset(&self, conn: ConnId) -> Option<u64> {
        self.offsets
            .iter()
            .find(|(c, _)| *c == conn)
            .map(|(_, o)| *o)
    }

    /// Whether `conn`'s end is already applied.
    pub fn is_closed(&self, conn: ConnId) -> bool {
        self.closed.contains(&conn)
    }
}

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot write {}: {source}", .path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read {}: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot encode the checkpoint {}: {detail}", .path.display())]
    Encode { path: PathBuf, detail: String },
    #[error("{} is not a leakscope checkpoint", .path.display())]
    BadMagic { path: PathBuf },
    #[error("{} is a checkpoint of format {found} written by leakscope {writer}; this is leakscope {} (format {FORMAT_VERSION})", .path.display(), env!("CARGO_PKG_VERSION"))]
    OtherVersion {
        path: PathBuf,
        found: u32,
        writer: String,
    },
    #[error("{} is cut short or damaged ({detail})", .path.display())]
    Damaged { path: PathBuf, detail: String },
}

/// FNV-1a, 64 bits: enough to tell a damaged payload from the one written.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// A writer that counts and hashes what goes through it.
struct Hashing<W> {
    inner: W,
    len: u64,
    hash: Fnv,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn header() -> Vec<u8> {
    let version = env!("CARGO_PKG_VERSION").as_bytes();
    let mut h = Vec::with_capacity(MAGIC.len() + 6 + version.len());
    h.extend_from_slice(&MAGIC);
    h.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    // A version string is short; a longer one is cut, which only makes it not match.
    let len = u16::try_from(version.len()).unwrap_or(u16::MAX);
    h.extend_from_slice(&len.to_le_bytes());
    h.extend_from_slice(&version[..usize::from(len)]);
    h
}

/// Writes a checkpoint of `state` into `dir` atomically, the current one becoming the
/// previous one. Returns the checkpoint's size in bytes.
pub fn write(
    dir: &Path,
    offsets: &[(ConnId, u64)],
    closed: &[ConnId],
    state: &RunState,
) -> Result<u64, CheckpointError> {
    let tmp = dir.join(TEMP_FILE);
    let werr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CheckpointError::Write { path, source }
    };
    let file = File::create(&tmp).map_err(werr(&tmp))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&header()).map_err(werr(&tmp))?;
    let mut hashing = Hashing {
        inner: out,
        len: 0,
        hash: Fnv::new(),
    };
    let payload = CheckpointRef {
        offsets,
        closed,
        state,
    };
    bincode::serde::encode_into_std_write(&payload, &mut hashing, bincode::config::standard())
        .map_err(|e| match e {
            bincode::error::EncodeError::Io { inner, .. } => CheckpointError::Write {
                path: tmp.clone(),
                source: inner,
            },
            other => CheckpointError::Encode {
                path: tmp.clone(),
                detail: other.to_string(),
            },
        })?;
    let (len, hash) = (hashing.len, hashing.hash.0);
    let mut out = hashing.inner;
    out.write_all(&len.to_le_bytes()).map_err(werr(&tmp))?;
    out.write_all(&hash.to_le_bytes()).map_err(werr(&tmp))?;
    let file = out.into_inner().map_err(|e| werr(&tmp)(e.into_error()))?;
    file.sync_all().map_err(werr(&tmp))?;
    drop(file);
    let current = dir.join(CHECKPOINT_FILE);
    let previous = dir.join(PREVIOUS_FILE);
    match fs::rename(&current, &previous) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(werr(&previous)(e)),
    }
    fs::rename(&tmp, &current).map_err(werr(&current))?;
    // The renames are durable once the directory is synced.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(werr(dir))?;
    Ok(len + (header().len() + TRAILER_LEN) as u64)
}

/// Reads the checkpoint at `path`.
pub fn read(path: &Path) -> Result<Checkpoint, CheckpointError> {
    let rerr = |source| CheckpointError::Read {
        path: path.to_path_buf(),
        source,
    };
    let damaged = |detail: String| CheckpointError::Damaged {
        path: path.to_path_buf(),
        detail,
    };
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(rerr)?;
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        if bytes.len() < MAGIC.len() && MAGIC.starts_with(&bytes) {
            return Err(damaged(format!("{} bytes", bytes.len())));
        }
        return Err(CheckpointError::BadMagic {
            path: path.to_path_buf(),
        });
    }
    let fixed = MAGIC.len() + 6;
    if bytes.len() < fixed {
        return Err(damaged(format!("{} bytes", bytes.len())));
    }
    let format = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let vlen = usize::from(u16::from_le_bytes([bytes[12], bytes[13]]));
    let Some(writer) = bytes.get(fixed..fixed + vlen) else {
        return Err(damaged(format!("{} bytes", bytes.len())));
    };
    let writer = String::from_utf8_lossy(writer).into_owned();
    if format != FORMAT_VERSION || writer != env!("CARGO_PKG_VERSION") {
        return Err(CheckpointError::OtherVersion {
            path: path.to_path_buf(),
            found: format,
            writer,
        });
    }
    let start = fixed + vlen;
    if bytes.len() < start + TRAILER_LEN {
        return Err(damaged(format!("{} bytes, no trailer", bytes.len())));
    }
    let end = bytes.len() - TRAILER_LEN;
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(w)
    };
    let (len, hash) = (word(end), word(end + 8));
    let payload = &bytes[start..end];
    if len != payload.len() as u64 {
        return Err(damaged(format!(
            "{} payload bytes where {len} were written",
            payload.len()
        )));
    }
    let mut h = Fnv::new();
    h.update(payload);
    if h.0 != hash {
        return Err(damaged("its payload does not match its hash".into()));
    }
    let (checkpoint, used): (Checkpoint, usize) =
        bincode::serde::decode_from_slice(payload, bincode::config::standard())
            .map_err(|e| damaged(e.to_string()))?;
    if used != payload.len() {
        return Err(damaged(format!(
            "{} bytes after the state",
            payload.len() - used
        )));
    }
    Ok(checkpoint)
}

/// The newest usable checkpoint of the recording in `dir`, with what was wrong with the
/// ones that could not be used (one message each). `None` when there is none to use.
pub fn load_latest(dir: &Path) -> (Option<(PathBuf, Checkpoint)>, Vec<String>) {
    let mut problems = Vec::new();
    for name in [CHECKPOINT_FILE, PREVIOUS_FILE] {
        let path = dir.join(name);
        match read(&path) {
            Ok(c) => return (Some((path, c)), problems),
            Err(CheckpointError::Read { source, .. })
                if source.kind() == io::ErrorKind::NotFound => {}
            Err(e) => problems.push(format!("{e}; not used")),
        }
    }
    (None, problems)
}

/// Takes a live run's checkpoints on the state thread, every `every` of wall time, and
/// after each gives back the stream bytes that the checkpoint before it covers.
#[derive(Debug)]
pub struct Checkpointer {
    dir: PathBuf,
    every: Duration,
    next: Instant,
    /// The offsets of the newest checkpoint written (the previous one once the next is
    /// written): the bytes before them can go then.
    last: Option<Vec<(ConnId, u64)>>,
    /// How far each stream was given back already.
    punched: FxHashMap<ConnId, u64>,
    /// The file system cannot punch holes (said once).
    unsupported: bool,
    /// Writing failed once (said once).
    failed: bool,
}

impl Checkpointer {
    /// Checkpoints of the recording in `dir`, the first `every` from now.
    pub fn new(dir: &Path, every: Duration) -> Self {
        Checkpointer {
            dir: dir.to_path_buf(),
            every,
            next: Instant::now() + every,
            last: None,
            punched: FxHashMap::default(),
            unsupported: false,
            failed: false,
        }
    }

    /// When the next checkpoint is due.
    pub fn deadline(&self) -> Instant {
        self.next
    }

    /// Writes a checkpoint of `state` if one is due, then gives stream bytes back.
    /// `offsets` are, per connection, the stream offset after its last frame applied to
    /// `state`, `closed` the connections whose end is applied. Returns a warning for the
    /// report the first time something fails (the recording then keeps every byte).
    pub fn tick(
        &mut self,
        state: &RunState,
        offsets: &BTreeMap<ConnId, u64>,
        closed: &BTreeSet<ConnId>,
    ) -> Option<String> {
        let now = Instant::now();
        if now < self.next {
            return None;
        }
        self.next = now + self.every;
        let offsets: Vec<(ConnId, u64)> = offsets.iter().map(|(c, o)| (*c, *o)).collect();
        let closed: Vec<ConnId> = closed.iter().copied().collect();
        if let Err(e) = write(&self.dir, &offsets, &closed, state) {
            tracing::warn!("checkpoint not written: {e}");
            return self.fail(format!(
                "a checkpoint could not be written ({e}); the recording keeps every byte since the last one"
            ));
        }
        let previous = self.last.replace(offsets);
        let warning = previous.and_then(|p| self.reclaim(&p));
        tracing::debug!("checkpoint written to {}", self.dir.display());
        warning
    }

    fn fail(&mut self, warning: String) -> Option<String> {
        (!std::mem::replace(&mut self.failed, true)).then_some(warning)
    }

    /// Gives back each stream's bytes before `upto`.
    fn reclaim(&mut self, upto: &[(ConnId, u64)]) -> Option<String> {
        if self.unsupported {
            return None;
        }
        for (conn, offset) in upto {
            let done = self.punched.get(conn).copied().unwrap_or(0);
            if *offset < done + BLOCK {
                continue;
            }
            let path = stream_path(&self.dir, *conn);
            let punched = fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| punch_stream(&f, *offset));
            match punched {
                Ok(Punched::Done) => {
                    self.punched.insert(*conn, *offset);
                }
                Ok(Punched::Unsupported) => {
                    self.unsupported = true;
                    tracing::warn!(
                        "{}: the file system cannot punch holes; stream files keep every byte",
                        path.display()
                    );
                    return None;
                }
                Err(e) => {
                    tracing::warn!("{}: cannot give bytes back: {e}", path.display());
                    return self.fail(format!(
                        "{}: stream bytes covered by a checkpoint could not be given back ({e})",
                        path.display()
                    ));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;
