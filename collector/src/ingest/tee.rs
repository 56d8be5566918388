//! A reader that writes every byte it reads to a file before handing it on: the recording
//! of a live stream. Each read is written through at once (no buffering on the collector's
//! side), so whatever was received is on disk even if the target or the collector dies. A
//! failing write (disk full) stops the copying and is kept for the caller to report; the
//! stream itself goes on being read.

use std::fs::File;
use std::io::{self, Read, Write};

/// See the module documentation.
#[derive(Debug)]
pub struct Tee<R> {
    inner: R,
    file: Option<File>,
    written: u64,
    error: Option<io::Error>,
}

impl<R: Read> Tee<R> {
    /// Reads `inner`, copying to `file`.
    pub fn new(inner: R, file: File) -> Self {
        Tee {
            inner,
            file: Some(file),
            written: 0,
            error: None,
        }
    }

    /// Bytes written to the file so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The write error that stopped the copying, if one did.
    pub fn take_error(&mut self) -> Option<io::Error> {
        self.error.take()
    }
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(f) = &mut self.file {
            match f.write_all(&buf[..n]) {
                Ok(()) => self.written += n as u64,
                Err(e) => {
                    self.error = Some(e);
                    self.file = None;
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_every_read_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy");
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let mut tee = Tee::new(&data[..], File::create(&path).unwrap());
        let mut first = [0u8; 100];
        tee.read_exact(&mut first).unwrap();
        // Already on disk before the rest is read.
        assert_eq!(std::fs::read(&path).unwrap(), data[..100]);
        let mut rest = Vec::new();
        tee.read_to_end(&mut rest).unwrap();
        assert_eq!(tee.written(), 10_000);
        assert!(tee.take_error().is_none());
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[test]
    fn write_failure_is_kept_and_reading_goes_on() {
        let full = File::options().write(true).open("/dev/full");
        let Ok(full) = full else {
            return; // no /dev/full here: nothing to test against
        };
        let mut tee = Tee::new(&b"abcdef"[..], full);
        let mut out = Vec::new();
        tee.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abcdef");
        assert!(tee.take_error().is_some());
    }
}
