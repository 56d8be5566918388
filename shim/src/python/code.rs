//! Code objects: the fingerprint that keys them (hot path), and their definitions
//! (file, qualified name, first line, raw line table) copied into a batch's byte area
//! the first time a thread names them in a stream, then turned into `PyCode` records by
//! the sender.
//!
//! The key hashes the code object's address with fields that never change after it is
//! made (`co_firstlineno`, the addresses of its file, name and line-table objects, the
//! line table's length and first bytes, the bytecode length), so a code object that dies
//! and is replaced at the same address gets a new key unless the replacement's name, file
//! and line table also sit at the old addresses with the same first bytes.
//!
//! Definition bytes: `first_line: i32`, `minor: u8`, `flags: u8` (bit 0: truncated),
//! three `u32` lengths (file, qualname, line table), then the three fields back to back.
//! All little-endian; [`parse`] is the only reader.

use super::layout::{Layout, BYTES_SVAL, OB_SIZE, OB_TYPE};
use super::{mem, unicode};

/// Bytes of `co_filename` kept (UTF-8).
pub const MAX_FILENAME: usize = 4096;
/// Bytes of `co_qualname` kept (UTF-8).
pub const MAX_QUALNAME: usize = 1024;
/// Bytes of `co_linetable` kept.
pub const MAX_LINETABLE: usize = 64 * 1024;
/// The header before the fields.
const HEADER: usize = 4 + 1 + 1 + 3 * 4;
/// The largest definition.
pub const MAX_DEF: usize = HEADER + MAX_FILENAME + MAX_QUALNAME + MAX_LINETABLE;

const FLAG_TRUNCATED: u8 = 1;

/// The code object's key (never zero).
///
/// # Safety
/// `c` must be a live code object of the interpreter `l` describes.
#[inline(always)]
pub unsafe fn key(l: &Layout, c: usize) -> u64 {
    // SAFETY: fields of a live code object; the line table is a bytes object the code
    // object holds, read within its length.
    unsafe {
        let lt = mem::usize_at(c + l.co_linetable);
        let (lt_len, lt_head) = if lt != 0 && lt % 8 == 0 {
            let len = mem::usize_at(lt + OB_SIZE);
            (len, head(lt + BYTES_SVAL, len))
        } else {
            (0, 0)
        };
        let words = [
            c as u64,
            u64::from(mem::u32_at(c + l.co_firstlineno)),
            mem::u64_at(c + l.co_filename),
            mem::u64_at(c + l.co_qualname),
            lt as u64,
            lt_len as u64,
            lt_head,
            mem::u64_at(c + OB_SIZE),
        ];
        mix(&words)
    }
}

/// Up to the first 8 bytes at `p` (of `len`), as a little-endian word.
///
/// # Safety
/// `min(len, 8)` bytes at `p` must be readable.
#[inline(always)]
unsafe fn head(p: usize, len: usize) -> u64 {
    if len >= 8 {
        // SAFETY: 8 readable bytes (caller's contract).
        return unsafe { mem::u64_at(p) };
    }
    let mut w = 0u64;
    for i in 0..len {
        // SAFETY: `i < len` readable bytes (caller's contract).
        w |= u64::from(unsafe { mem::u8_at(p + i) }) << (8 * i);
    }
    w
}

/// Combines the fingerprint words: each multiplied by an odd constant of its own (a
/// bijection, so keys that differ in one word never collide), the products folded with
/// xor (independent multiplies, no long dependency chain on the hot path), then mixed
/// down to the low bits the code cache indexes with.
#[inline(always)]
fn mix(words: &[u64; 8]) -> u64 {
    const K: [u64; 8] = [
        0x9e37_79b9_7f4a_7c15,
        0xbf58_476d_1ce4_e5b9,
        0x94d0_49bb_1331_11eb,
        0xd6e8_feb8_6659_fd93,
        0xa076_1d64_78bd_642f,
        0xe703_7ed1_a0b4_28db,
        0x8ebc_6af0_9c88_c6e3,
        0x5899_65cc_7537_4cc3,
    ];
    let mut h = 0u64;
    for i in 0..8 {
        h ^= words[i].wrapping_mul(K[i]).rotate_left(8 * i as u32);
    }
    h ^= h >> 31;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 29;
    if h == 0 {
        1
    } else {
        h
    }
}

/// A bound on the bytes [`write()`] produces for `c`, for the batch's room check.
///
/// # Safety
/// `c` must be a live code object of the interpreter `l` describes.
pub unsafe fn size_bound(l: &Layout, c: usize) -> usize {
    // SAFETY: fields of a live code object and the objects it holds.
    unsafe {
        let file = unicode::utf8_bound(l, mem::usize_at(c + l.co_filename), MAX_FILENAME);
        let qual = unicode::utf8_bound(l, mem::usize_at(c + l.co_qualname), MAX_QUALNAME);
        let lt = bytes_of(l, mem::usize_at(c + l.co_linetable)).map_or(0, |(_, n)| n);
        HEADER + file + qual + lt.min(MAX_LINETABLE)
    }
}

/// A `bytes` object's data and length, if `b` is one.
///
/// # Safety
/// `b` must be null or a live object of the interpreter `l` describes.
unsafe fn bytes_of(l: &Layout, b: usize) -> Option<(usize, usize)> {
    if b == 0 || b % 8 != 0 {
        return None;
    }
    // SAFETY: header fields of a live object.
    unsafe {
        if mem::usize_at(b + OB_TYPE) != l.bytes_type {
            return None;
        }
        Some((b + BYTES_SVAL, mem::usize_at(b + OB_SIZE)))
    }
}

/// Appends the definition of code object `c` to `out`, which has room for
/// [`size_bound`] more bytes; never writes more than that.
///
/// # Safety
/// `c` must be a live code object of the interpreter `l` describes.
pub unsafe fn write(l: &Layout, c: usize, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    // SAFETY: fields of a live code object and the objects it holds.
    let (f, q, t, truncated, first) = unsafe {
        let mut truncated = false;
        let before = out.len();
        truncated |= unicode::utf8_into(l, mem::usize_at(c + l.co_filename), MAX_FILENAME, out);
        let f = out.len() - before;
        let before = out.len();
        truncated |= unicode::utf8_into(l, mem::usize_at(c + l.co_qualname), MAX_QUALNAME, out);
        let q = out.len() - before;
        let t = match bytes_of(l, mem::usize_at(c + l.co_linetable)) {
            Some((data, len)) => {
                let n = len.min(MAX_LINETABLE);
                truncated |= n < len;
                out.extend_from_slice(std::slice::from_raw_parts(data as *const u8, n));
                n
            }
            None => 0,
        };
        let first = mem::u32_at(c + l.co_firstlineno) as i32;
        (f, q, t, truncated, first)
    };
    let h = &mut out[start..start + HEADER];
    h[0..4].copy_from_slice(&first.to_le_bytes());
    h[4] = l.version.minor;
    h[5] = if truncated { FLAG_TRUNCATED } else { 0 };
    h[6..10].copy_from_slice(&(f as u32).to_le_bytes());
    h[10..14].copy_from_slice(&(q as u32).to_le_bytes());
    h[14..18].copy_from_slice(&(t as u32).to_le_bytes());
}

/// A definition read back (on the sender thread).
#[derive(Debug, PartialEq, Eq)]
pub struct Def<'a> {
    pub first_line: i32,
    pub minor: u8,
    pub truncated: bool,
    pub filename: &'a [u8],
    pub qualname: &'a [u8],
    pub line_table: &'a [u8],
}

/// Reads what [`write()`] wrote; `None` if the bytes are not a whole definition.
pub fn parse(b: &[u8]) -> Option<Def<'_>> {
    let h = b.get(..HEADER)?;
    let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]) as usize;
    let (f, q, t) = (u32_at(6), u32_at(10), u32_at(14));
    let rest = &b[HEADER..];
    let filename = rest.get(..f)?;
    let qualname = rest.get(f..f + q)?;
    let line_table = rest.get(f + q..f + q + t)?;
    Some(Def {
        first_line: i32::from_le_bytes([h[0], h[1], h[2], h[3]]),
        minor: h[4],
        truncated: h[5] & FLAG_TRUNCATED != 0,
        filename,
        qualname,
        line_table,
    })
}

/// Encodes a definition as [`write()`] does (for tests of the readers).
#[cfg(test)]
pub fn encode(d: &Def<'_>) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&d.first_line.to_le_bytes());
    b.push(d.minor);
    b.push(if d.truncated { FLAG_TRUNCATED } else { 0 });
    for f in [d.filename, d.qualname, d.line_table] {
        b.extend_from_slice(&(f.len() as u32).to_le_bytes());
    }
    for f in [d.filename, d.qualname, d.line_table] {
        b.extend_from_slice(f);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_nonzero_and_field_sensitive() {
        let a = [
            0x7f00_1000u64,
            12,
            0x7f00_2000,
            0x7f00_3000,
            0x7f00_4000,
            40,
            0x0102,
            90,
        ];
        let ka = mix(&a);
        assert_ne!(ka, 0);
        for i in 0..a.len() {
            let mut b = a;
            b[i] ^= 1;
            assert_ne!(mix(&b), ka, "field {i}");
        }
    }

    #[test]
    fn short_heads_read_only_their_bytes() {
        let data = [1u8, 2, 3, 0xff, 0xff, 0xff, 0xff, 0xff];
        // SAFETY: 8 readable bytes.
        assert_eq!(unsafe { head(data.as_ptr() as usize, 3) }, 0x03_02_01);
        // SAFETY: as above.
        assert_eq!(
            unsafe { head(data.as_ptr() as usize, 8) },
            u64::from_le_bytes(data)
        );
    }

    #[test]
    fn definitions_parse_back() {
        let d = Def {
            first_line: -3,
            minor: 12,
            truncated: true,
            filename: b"a.p",
            qualname: b"y",
            line_table: b"f\x01",
        };
        let mut b = encode(&d);
        assert_eq!(b.len(), HEADER + 6);
        assert_eq!(parse(&b), Some(d));
        // One byte short of the stated lengths.
        b.pop();
        b.pop();
        assert_eq!(parse(&b), None);
        assert_eq!(parse(&b[..5]), None);
    }
}
