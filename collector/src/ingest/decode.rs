//! Decoding one stream, live or recorded: frames through the wire decoder, handed on as
//! they come, until the stream ends or cannot be read further. A damaged stream keeps
//! everything decoded before the problem; the source is handed back so that a live
//! stream's remaining bytes can still be recorded.

use crate::state::ConnClose;
use leakscope_protocol::wire::{Decoder, WireError};
use leakscope_protocol::Record;
use std::io::{BufReader, Read};

/// Buffer between the source and the decoder (reads of the socket or file are this big).
const READ_BUFFER: usize = 256 << 10;

/// How a decoded stream ended.
#[derive(Debug)]
pub struct Ended<R> {
    /// How to tell the state.
    pub close: ConnClose,
    /// The stream stopped inside a frame (or its header): the writer was cut off mid-write.
    pub truncated: bool,
    /// The source, positioned somewhere after the last frame decoded.
    pub source: R,
}

/// Decodes `source`, calling `on_frame` with each frame's records. `name` (the stream
/// file's path) starts the message of a damaged stream. `on_frame` may take the records
/// (drain them, or swap the vector for another); whatever it leaves is cleared, and the
/// vector is reused for the next frame, so a long stream allocates no batch per frame.
pub fn decode_stream<R: Read>(
    source: R,
    name: &str,
    mut on_frame: impl FnMut(&mut Vec<Record>),
) -> Ended<R> {
    let mut reader = BufReader::with_capacity(READ_BUFFER, source);
    let mut decoder = match Decoder::new(&mut reader) {
        Ok(d) => d,
        // Nothing at all: a connection that never sent a byte.
        Err(WireError::TruncatedHeader { len: 0 }) => {
            return ended(ConnClose::Eof, false, reader);
        }
        Err(e) => return ended(damaged(name, &e), is_cut(&e), reader),
    };
    let mut batch = Vec::new();
    let (close, truncated) = loop {
        batch.clear();
        match decoder.next_frame(&mut batch) {
            Ok(true) => on_frame(&mut batch),
            Ok(false) => break (ConnClose::Eof, false),
            Err(e) => break (damaged(name, &e), is_cut(&e)),
        }
    };
    ended(close, truncated, reader)
}

fn ended<R: Read>(close: ConnClose, truncated: bool, reader: BufReader<R>) -> Ended<R> {
    Ended {
        close,
        truncated,
        source: reader.into_inner(),
    }
}

fn is_cut(e: &WireError) -> bool {
    matches!(
        e,
        WireError::Truncated { .. } | WireError::TruncatedHeader { .. }
    )
}

fn damaged(name: &str, e: &WireError) -> ConnClose {
    ConnClose::Damaged(format!("{name}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use leakscope_protocol::wire::{encode_frame, encode_header, HEADER_LEN};
    use leakscope_protocol::{Dropped, Timestamp};

    fn dropped(ts: u64) -> Record {
        Record::Dropped(Dropped {
            ts: Timestamp(ts),
            ..Dropped::default()
        })
    }

    #[test]
    fn frames_then_eof() {
        let mut bytes = Vec::new();
        encode_header(&mut bytes);
        encode_frame(&[dropped(1), dropped(2)], &mut bytes).unwrap();
        encode_frame(&[dropped(3)], &mut bytes).unwrap();
        let mut got = Vec::new();
        let e = decode_stream(&bytes[..], "s", |f| got.push(f.len()));
        assert_eq!(e.close, ConnClose::Eof);
        assert!(!e.truncated);
        assert_eq!(got, vec![2, 1]);
    }

    #[test]
    fn empty_source_is_a_plain_end_and_bad_magic_is_damage() {
        let e = decode_stream(&b""[..], "s", |_| panic!("no frames"));
        assert_eq!(e.close, ConnClose::Eof);
        let e = decode_stream(&b"GARBAGE-and-more"[..], "f.lks", |_| {});
        assert!(!e.truncated);
        match e.close {
            ConnClose::Damaged(m) => assert!(m.starts_with("f.lks: not a leakscope stream"), "{m}"),
            other => panic!("{other:?}"),
        }
        let mut bytes = Vec::new();
        encode_header(&mut bytes);
        let e = decode_stream(&bytes[..HEADER_LEN - 1], "s", |_| {});
        assert!(matches!(e.close, ConnClose::Damaged(_)), "{:?}", e.close);
        assert!(e.truncated);
    }
}
