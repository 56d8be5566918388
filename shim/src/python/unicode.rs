//! Reading a CPython `str` without the C API: compact strings only (every `str` the
//! compiler makes for code objects), transcoded from Latin-1, UCS-2 or UCS-4 to UTF-8
//! with lone surrogates as U+FFFD, cut at a byte limit on a character boundary. Anything
//! else (a `str` subclass, a legacy string, not a `str`) reads as `?`.

use super::layout::{Layout, OB_TYPE, STR_ASCII, STR_COMPACT, STR_KIND_MASK, STR_KIND_SHIFT};
use super::layout::{STR_LENGTH, STR_STATE};
use super::mem;

const UNKNOWN: &[u8] = b"?";

/// A compact `str`'s data address, length in code points, and code-point width (0 for
/// ASCII, already UTF-8).
///
/// # Safety
/// `s` must be null or a live object of the interpreter `l` describes.
unsafe fn compact(l: &Layout, s: usize) -> Option<(usize, usize, u32)> {
    if s == 0 || s % 8 != 0 {
        return None;
    }
    // SAFETY: header fields of a live object, then of a live `str`.
    unsafe {
        if mem::usize_at(s + OB_TYPE) != l.unicode_type {
            return None;
        }
        let state = mem::u32_at(s + STR_STATE);
        if state & STR_COMPACT == 0 {
            return None;
        }
        let len = mem::usize_at(s + STR_LENGTH);
        if state & STR_ASCII != 0 {
            return Some((s + l.str_ascii_data, len, 0));
        }
        let kind = (state >> STR_KIND_SHIFT) & STR_KIND_MASK;
        matches!(kind, 1 | 2 | 4).then_some((s + l.str_compact_data, len, kind))
    }
}

/// The most bytes [`utf8_into`] writes for `s` with limit `cap`.
///
/// # Safety
/// As [`compact`].
pub unsafe fn utf8_bound(l: &Layout, s: usize, cap: usize) -> usize {
    // SAFETY: forwarded.
    match unsafe { compact(l, s) } {
        Some((_, len, 0)) => len.min(cap),
        Some((_, len, _)) => len.saturating_mul(4).min(cap),
        None => UNKNOWN.len(),
    }
}

/// Appends `s` as UTF-8 to `out`, at most `cap` bytes (cut on a character boundary).
/// Returns whether it was cut.
///
/// # Safety
/// As [`compact`].
pub unsafe fn utf8_into(l: &Layout, s: usize, cap: usize, out: &mut Vec<u8>) -> bool {
    // SAFETY: forwarded.
    let Some((data, len, kind)) = (unsafe { compact(l, s) }) else {
        out.extend_from_slice(UNKNOWN);
        return false;
    };
    let mut left = cap;
    for i in 0..len {
        // SAFETY: `i < len` code points of `kind` bytes each follow the header of a live
        // compact string.
        let cp = unsafe {
            match kind {
                0 | 1 => u32::from(mem::u8_at(data + i)),
                2 => u32::from(u16::from_ne_bytes([
                    mem::u8_at(data + 2 * i),
                    mem::u8_at(data + 2 * i + 1),
                ])),
                _ => mem::u32_at(data + 4 * i),
            }
        };
        let c = char::from_u32(cp).unwrap_or(char::REPLACEMENT_CHARACTER);
        let mut buf = [0u8; 4];
        let bytes = c.encode_utf8(&mut buf).as_bytes();
        if bytes.len() > left {
            return true;
        }
        left -= bytes.len();
        out.extend_from_slice(bytes);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::layout::{for_version, Symbols};
    use leakscope_protocol::PyVersion;

    /// A fake compact `str` of 3.12+ layout: 40-byte ASCII header or 56-byte compact one.
    fn fake(kind: u32, ascii: bool, units: &[u32], ty: usize) -> Vec<u64> {
        let header = if ascii { 40 } else { 56 };
        let width = if ascii { 1 } else { kind as usize };
        let mut bytes = vec![0u8; header + units.len() * width + 8];
        bytes[OB_TYPE..OB_TYPE + 8].copy_from_slice(&(ty as u64).to_ne_bytes());
        bytes[STR_LENGTH..STR_LENGTH + 8].copy_from_slice(&(units.len() as u64).to_ne_bytes());
        let state = STR_COMPACT | if ascii { STR_ASCII } else { 0 } | (kind << STR_KIND_SHIFT);
        bytes[STR_STATE..STR_STATE + 4].copy_from_slice(&state.to_ne_bytes());
        for (i, &u) in units.iter().enumerate() {
            let at = header + i * width;
            bytes[at..at + width].copy_from_slice(&u.to_ne_bytes()[..width]);
        }
        // As u64 words so the object is 8-aligned like a real one.
        bytes
            .chunks(8)
            .map(|c| {
                let mut w = [0u8; 8];
                w[..c.len()].copy_from_slice(c);
                u64::from_ne_bytes(w)
            })
            .collect()
    }

    fn read(obj: &[u64], ty: usize, cap: usize) -> (String, bool, usize) {
        let s = Symbols {
            unicode_type: ty,
            ..Symbols::default()
        };
        let l = for_version(
            PyVersion {
                major: 3,
                minor: 12,
            },
            &s,
        )
        .unwrap();
        let mut out = Vec::new();
        let p = obj.as_ptr() as usize;
        // SAFETY: `obj` is a well-formed fake string object.
        let (cut, bound) = unsafe { (utf8_into(&l, p, cap, &mut out), utf8_bound(&l, p, cap)) };
        assert!(out.len() <= bound, "bound {bound} < {}", out.len());
        (String::from_utf8(out).unwrap(), cut, bound)
    }

    #[test]
    fn kinds_transcode_to_utf8() {
        let ty = 0x1000;
        let ascii: Vec<u32> = "main.py".chars().map(|c| c as u32).collect();
        assert_eq!(read(&fake(1, true, &ascii, ty), ty, 100).0, "main.py");
        let latin: Vec<u32> = "café".chars().map(|c| c as u32).collect();
        assert_eq!(read(&fake(1, false, &latin, ty), ty, 100).0, "café");
        let ucs2 = [0x3b1, 0xd800, 0x3b2]; // a lone surrogate in the middle
        assert_eq!(read(&fake(2, false, &ucs2, ty), ty, 100).0, "α\u{fffd}β");
        let ucs4 = [0x1f600, 0x41];
        assert_eq!(read(&fake(4, false, &ucs4, ty), ty, 100).0, "😀A");
    }

    #[test]
    fn cuts_on_character_boundaries_and_refuses_other_objects() {
        let ty = 0x1000;
        let ucs4 = [0x1f600, 0x1f600];
        assert_eq!(
            read(&fake(4, false, &ucs4, ty), ty, 7),
            ("😀".to_owned(), true, 7)
        );
        let ascii: Vec<u32> = "abcdef".chars().map(|c| c as u32).collect();
        assert_eq!(read(&fake(1, true, &ascii, ty), ty, 4).0, "abcd");
        // Another type: `?`.
        assert_eq!(read(&fake(1, true, &ascii, ty), 0x2000, 100).0, "?");
    }
}
