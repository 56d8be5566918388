//! Decoding one stream, live or recorded: frames through the wire decoder, handed on as
//! they come, until the stream ends or cannot be read further. A damaged stream keeps
//! everything decoded before the problem; the source is handed back so that a live
//! stream's remaining bytes can still be recorded.

use crate::state::ConnClose;
use leakscope_protocol::wire::{Decoder, WireError, HEADER_LEN};
use leakscope_protocol::Record;
use std::io::{BufReader, Read, Seek, SeekFrom};

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
    decode_stream_offsets(source, name, |records, _| on_frame(records))
}

/// [`decode_stream`], telling `on_frame` also the stream offset just after the frame (the
/// bytes of the header and of every frame up to this one): where a checkpoint taken after
/// applying the frame reads on from.
pub fn decode_stream_offsets<R: Read>(
    source: R,
    name: &str,
    on_frame: impl FnMut(&mut Vec<Record>, u64),
) -> Ended<R> {
    let mut reader = BufReader::with_capacity(READ_BUFFER, source);
    let decoder = match Decoder::new(&mut reader) {
        Ok(d) => d,
        // Nothing at all: a connection that never sent a byte.
        Err(WireError::TruncatedHeader { len: 0 }) => {
            return ended(ConnClose::Eof, false, reader);
        }
        Err(e) => return ended(damaged(name, &e), is_cut(&e), reader),
    };
    let (close, truncated) = frames(decoder, name, on_frame);
    ended(close, truncated, reader)
}

/// [`decode_stream_offsets`] from `offset` on (a frame boundary that `on_frame` was told,
/// as a checkpoint keeps it), after checking the stream's header: the bytes between the
/// header and `offset` are not read (they may have been given back to the file system).
/// A stream shorter than `offset` is damaged.
pub fn decode_stream_from<R: Read + Seek>(
    source: R,
    name: &str,
    offset: u64,
    on_frame: impl FnMut(&mut Vec<Record>, u64),
) -> Ended<R> {
    let mut reader = BufReader::with_capacity(READ_BUFFER, source);
    match Decoder::new(&mut reader) {
        Ok(_) => {}
        Err(e) => return ended(damaged(name, &e), is_cut(&e), reader),
    }
    let offset = offset.max(HEADER_LEN as u64);
    let len = match reader.seek(SeekFrom::End(0)) {
        Ok(len) => len,
        Err(e) => return ended(seek_failed(name, &e), false, reader),
    };
    if len < offset {
        let close = ConnClose::Damaged(format!(
            "{name}: {len} bytes long, shorter than the checkpoint's offset {offset}"
        ));
        return ended(close, false, reader);
    }
    if let Err(e) = reader.seek(SeekFrom::Start(offset)) {
        return ended(seek_failed(name, &e), false, reader);
    }
    let (close, truncated) = frames(Decoder::resume(&mut reader, offset), name, on_frame);
    ended(close, truncated, reader)
}

fn frames<R: Read>(
    mut decoder: Decoder<R>,
    name: &str,
    mut on_frame: impl FnMut(&mut Vec<Record>, u64),
) -> (ConnClose, bool) {
    let mut batch = Vec::new();
    loop {
        batch.clear();
        match decoder.next_frame(&mut batch) {
            Ok(true) => on_frame(&mut batch, decoder.offset()),
            Ok(false) => break (ConnClose::Eof, false),
            Err(e) => break (damaged(name, &e), is_cut(&e)),
        }
    }
}

fn seek_failed(name: &str, e: &std::io::Error) -> ConnClose {
    ConnClose::Damaged(format!("{name}: cannot seek: {e}"))
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

    #[test]
    fn offsets_are_frame_ends_and_decoding_resumes_there() {
        let mut bytes = Vec::new();
        encode_header(&mut bytes);
        encode_frame(&[dropped(1), dropped(2)], &mut bytes).unwrap();
        let first = bytes.len() as u64;
        encode_frame(&[dropped(3)], &mut bytes).unwrap();
        encode_frame(&[dropped(4), dropped(5), dropped(6)], &mut bytes).unwrap();
        let mut ends = Vec::new();
        let e = decode_stream_offsets(&bytes[..], "s", |_, at| ends.push(at));
        assert_eq!(e.close, ConnClose::Eof);
        assert_eq!(ends[0], first);
        assert_eq!(*ends.last().unwrap(), bytes.len() as u64);
        // From the first frame's end, with the bytes before it zeroed (a punched hole).
        let mut holed = bytes.clone();
        holed[HEADER_LEN..first as usize].fill(0);
        let mut got = Vec::new();
        let e = decode_stream_from(std::io::Cursor::new(&holed), "s", first, |f, at| {
            got.push((f.len(), at));
        });
        assert_eq!(e.close, ConnClose::Eof);
        assert_eq!(got, vec![(1, ends[1]), (3, ends[2])]);
        // At the end: nothing more, a clean end.
        let e = decode_stream_from(std::io::Cursor::new(&bytes), "s", ends[2], |_, _| {
            panic!("no frames")
        });
        assert_eq!(e.close, ConnClose::Eof);
        // From offset 0: the whole stream.
        let mut n = 0;
        decode_stream_from(std::io::Cursor::new(&bytes), "s", 0, |_, _| n += 1);
        assert_eq!(n, 3);
        // Past the end, or a bad header: damage.
        let e = decode_stream_from(std::io::Cursor::new(&bytes), "s", ends[2] + 1, |_, _| {});
        assert!(
            matches!(e.close, ConnClose::Damaged(ref m) if m.contains("shorter")),
            "{:?}",
            e.close
        );
        let e = decode_stream_from(std::io::Cursor::new(&holed[1..]), "s", first, |_, _| {});
        assert!(matches!(e.close, ConnClose::Damaged(_)), "{:?}", e.close);
    }
}
