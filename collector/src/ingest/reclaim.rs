//! Giving the disk space of stream bytes already covered by a checkpoint back to the file
//! system, and finding where that was done. A stream file's start (after its header) is
//! turned into a hole (`fallocate` with `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`): its
//! logical size and every offset in it stay as they were, the bytes read back as zeros and
//! take no blocks. Only bytes before the *previous* checkpoint's offsets are given back, so
//! that either of the two checkpoints kept can be replayed from.

use leakscope_protocol::wire::HEADER_LEN;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Punched ranges end on this boundary (the usual file-system block).
pub const BLOCK: u64 = 4096;

/// How a request to give bytes back went.
#[derive(Debug, PartialEq, Eq)]
pub enum Punched {
    /// The range is a hole now (or was too small to free a block).
    Done,
    /// The file system cannot punch holes: the bytes stay.
    Unsupported,
}

/// Gives back the bytes of `file` from the end of the stream header up to `upto`, rounded
/// down to [`BLOCK`]. `file` must be open for writing.
pub fn punch_stream(file: &File, upto: u64) -> io::Result<Punched> {
    let start = HEADER_LEN as u64;
    let end = upto - upto % BLOCK;
    if end <= start {
        return Ok(Punched::Done);
    }
    punch(file, start, end - start)
}

fn punch(file: &File, start: u64, len: u64) -> io::Result<Punched> {
    let (Ok(start), Ok(len)) = (libc::off_t::try_from(start), libc::off_t::try_from(len)) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    // SAFETY: fallocate only reads its integer arguments; the descriptor is owned by `file`,
    // which outlives the call. Punching a hole changes the file's contents, not memory.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            start,
            len,
        )
    };
    if rc == 0 {
        return Ok(Punched::Done);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Ok(Punched::Unsupported),
        _ => Err(e),
    }
}

/// The start of the first hole in `file` at or after `from`, `None` when there is none
/// before the end of the file (or the file system cannot tell, which means it cannot punch
/// either).
pub fn hole_after(file: &File, from: u64) -> io::Result<Option<u64>> {
    let len = file.metadata()?.len();
    if from >= len {
        return Ok(None);
    }
    let Ok(at) = libc::off_t::try_from(from) else {
        return Ok(None);
    };
    // SAFETY: lseek only reads its integer arguments; the descriptor is owned by `file`,
    // which outlives the call. It moves the file position, which no caller relies on (the
    // file is read with its own seek afterwards, or not at all).
    let hole = unsafe { libc::lseek(file.as_raw_fd(), at, libc::SEEK_HOLE) };
    if hole < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EINVAL) | Some(libc::ENXIO) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: as above; the position goes back to the start.
    unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_SET) };
    let hole = u64::try_from(hole).unwrap_or(u64::MAX);
    Ok((hole < len).then_some(hole))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn punching_keeps_the_size_and_the_rest_and_frees_blocks() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("s.lks");
        let data: Vec<u8> = (0..(64 * BLOCK + 100))
            .map(|i| (i % 251) as u8 + 1)
            .collect();
        let mut f = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
        assert_eq!(hole_after(&f, 0).unwrap(), None);
        let before = f.metadata().unwrap().blocks();
        let upto = 40 * BLOCK + 123;
        if punch_stream(&f, upto).unwrap() == Punched::Unsupported {
            return; // this file system keeps the bytes: nothing more to check
        }
        let meta = f.metadata().unwrap();
        assert_eq!(meta.len(), data.len() as u64);
        assert!(meta.blocks() < before, "{} -> {}", before, meta.blocks());
        let back = std::fs::read(&path).unwrap();
        assert_eq!(back[..HEADER_LEN], data[..HEADER_LEN]);
        assert!(back[HEADER_LEN..(40 * BLOCK) as usize]
            .iter()
            .all(|b| *b == 0));
        assert_eq!(back[(40 * BLOCK) as usize..], data[(40 * BLOCK) as usize..]);
        let hole = hole_after(&f, 0).unwrap().expect("a hole");
        assert!(hole <= BLOCK, "{hole}");
        assert_eq!(hole_after(&f, 40 * BLOCK).unwrap(), None);
        // Too little to punch: nothing happens.
        assert_eq!(punch_stream(&f, 100).unwrap(), Punched::Done);
    }
}
