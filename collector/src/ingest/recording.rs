//! The recording directory: `DIR/meta.json` ([`RecordingMeta`]) and `DIR/streams/NNNNNN.lks`,
//! one file per connection holding its raw bytes exactly as received (a wire stream). This
//! file creates the directory, writes the metadata (atomically: a crash mid-write leaves the
//! old file), creates stream files, and finds what a recording holds when reading it back.

use crate::error::RecordingError;
use crate::ingest::meta::RecordingMeta;
use crate::state::ConnId;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

/// Name of the metadata file.
pub const META_FILE: &str = "meta.json";
/// Name of the machine memory readings file (a wire stream of `Record::Machine` frames,
/// written by the run's sampler; see `run::machine`). Not a stream file: it lies beside
/// `streams/`, never in it.
pub const MACHINE_FILE: &str = "machine.lks";
/// Name of the folder of stream files.
pub const STREAMS_DIR: &str = "streams";
/// Extension of stream files.
pub const STREAM_EXT: &str = "lks";

/// A recording directory being written.
#[derive(Debug)]
pub struct Recording {
    dir: PathBuf,
    created: bool,
}

/// Path of the stream file of `conn` in `dir`.
pub fn stream_path(dir: &Path, conn: ConnId) -> PathBuf {
    dir.join(STREAMS_DIR).join(format!("{conn}.{STREAM_EXT}"))
}

impl Recording {
    /// Creates `dir` (and its parents) with an empty `streams/` in it. An existing empty
    /// directory is used; an existing non-empty one is refused.
    pub fn create(dir: &Path) -> Result<Self, RecordingError> {
        let mut created = false;
        match fs::read_dir(dir) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(RecordingError::NotEmpty {
                        path: dir.to_owned(),
                    });
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                fs::create_dir_all(dir).map_err(|source| RecordingError::Create {
                    path: dir.to_owned(),
                    source,
                })?;
                created = true;
            }
            Err(e) if e.kind() == ErrorKind::NotADirectory => {
                return Err(RecordingError::NotADirectory {
                    path: dir.to_owned(),
                })
            }
            Err(source) => {
                return Err(RecordingError::Read {
                    path: dir.to_owned(),
                    source,
                })
            }
        }
        let streams = dir.join(STREAMS_DIR);
        fs::create_dir(&streams).map_err(|source| RecordingError::Create {
            path: streams,
            source,
        })?;
        Ok(Recording {
            dir: dir.to_owned(),
            created,
        })
    }

    /// Whether [`Recording::create`] made the directory (rather than finding it empty).
    pub fn created_dir(&self) -> bool {
        self.created
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `meta.json`, replacing the previous one atomically.
    pub fn write_meta(&self, meta: &RecordingMeta) -> Result<(), RecordingError> {
        let path = self.dir.join(META_FILE);
        let tmp = self.dir.join(format!(".{META_FILE}.tmp"));
        let write_err = |source| RecordingError::Write {
            path: path.clone(),
            source,
        };
        let mut text =
            serde_json::to_vec_pretty(meta).map_err(|e| write_err(std::io::Error::other(e)))?;
        text.push(b'\n');
        let mut f = File::create(&tmp).map_err(write_err)?;
        f.write_all(&text).map_err(write_err)?;
        f.sync_data().map_err(write_err)?;
        fs::rename(&tmp, &path).map_err(write_err)
    }

    /// Creates the stream file of `conn` (it must not exist yet).
    pub fn create_stream(&self, conn: ConnId) -> Result<(File, PathBuf), RecordingError> {
        let path = stream_path(&self.dir, conn);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| RecordingError::Create {
                path: path.clone(),
                source,
            })?;
        Ok((file, path))
    }

    /// Removes the directory if it holds nothing recorded (the command never started).
    pub fn remove_if_unused(&self) {
        let streams = self.dir.join(STREAMS_DIR);
        if fs::remove_dir(&streams).is_ok() {
            let _ = fs::remove_file(self.dir.join(META_FILE));
            let _ = fs::remove_dir(&self.dir);
        }
    }
}

/// What a recording directory holds, as found on disk.
#[derive(Debug)]
pub struct Contents {
    /// The metadata; a default one when `meta.json` is missing or unreadable as JSON (a
    /// warning says so).
    pub meta: RecordingMeta,
    /// Stream files by connection number, in order.
    pub streams: Vec<(ConnId, PathBuf)>,
    /// Things found that a reader should know about.
    pub warnings: Vec<String>,
}

/// Finds the metadata and stream files of the recording in `dir`.
pub fn contents(dir: &Path) -> Result<Contents, RecordingError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(RecordingError::NotADirectory {
                path: dir.to_owned(),
            })
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(RecordingError::Missing {
                path: dir.to_owned(),
            })
        }
        Err(source) => {
            return Err(RecordingError::Read {
                path: dir.to_owned(),
                source,
            })
        }
    }
    let mut warnings = Vec::new();
    let streams = list_streams(dir, &mut warnings)?;
    let meta_path = dir.join(META_FILE);
    let meta = match fs::read(&meta_path) {
        Ok(bytes) => match serde_json::from_slice::<RecordingMeta>(&bytes) {
            Ok(meta) => meta,
            Err(source) if !streams.is_empty() => {
                warnings.push(format!(
                    "{} is not valid metadata ({source}); the command and its exit status are unknown",
                    meta_path.display()
                ));
                RecordingMeta::default()
            }
            Err(source) => {
                return Err(RecordingError::BadMeta {
                    path: meta_path,
                    source,
                })
            }
        },
        Err(e) if e.kind() == ErrorKind::NotFound => {
            if streams.is_empty() {
                return Err(RecordingError::NotARecording {
                    path: dir.to_owned(),
                });
            }
            warnings.push(format!(
                "{} is missing; the command and its exit status are unknown",
                meta_path.display()
            ));
            RecordingMeta::default()
        }
        Err(source) => {
            return Err(RecordingError::Read {
                path: meta_path,
                source,
            })
        }
    };
    Ok(Contents {
        meta,
        streams,
        warnings,
    })
}

fn list_streams(
    dir: &Path,
    warnings: &mut Vec<String>,
) -> Result<Vec<(ConnId, PathBuf)>, RecordingError> {
    let sdir = dir.join(STREAMS_DIR);
    let entries = match fs::read_dir(&sdir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            warnings.push(format!(
                "{} is missing: no streams recorded",
                sdir.display()
            ));
            return Ok(Vec::new());
        }
        Err(source) => return Err(RecordingError::Read { path: sdir, source }),
    };
    let mut streams = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| RecordingError::Read {
            path: sdir.clone(),
            source,
        })?;
        let path = entry.path();
        let conn = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(&format!(".{STREAM_EXT}")))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u32>().ok());
        match conn {
            Some(c) => streams.push((ConnId(c), path)),
            None => warnings.push(format!("ignored {}: not a stream file", path.display())),
        }
    }
    streams.sort();
    Ok(streams)
}
