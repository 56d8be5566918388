//! Python frames in captured stacks (`docs/python-frames.md`): CPython 3.10–3.13 is found
//! once per module change (`discover`), its struct layout taken from a per-version table
//! checked against the running interpreter (`layout`); each stack capture then walks the
//! calling thread's interpreter frames with plain loads (`walk`), recording per frame a
//! code-object fingerprint ([`CodeKey`]) and an instruction index; the first time a
//! thread meets a code object in a stream its name, file and line table are copied into
//! the thread's batch (`code`, strings through `unicode`).
//!
//! This module also owns the word format of a stack's Python part in the batch's frame
//! area: a `Code` frame is two words (its non-zero key, then its instruction index as a
//! 32-bit two's-complement value), a `Boundary` is one zero word.

pub mod code;
pub mod discover;
pub mod layout;
mod unicode;
pub mod walk;

use leakscope_protocol::{CodeKey, PyFrame};

/// Python frames walked per stack at most (innermost first; outer ones are cut).
pub const MAX_PY_FRAMES: usize = 128;
/// Words a stack's Python part takes at most: two per frame, plus one boundary per frame
/// (3.10 ends a segment after every frame).
pub const PY_WORDS_MAX: usize = 3 * MAX_PY_FRAMES;

/// The word that stands for [`PyFrame::Boundary`]; keys are never zero.
pub const BOUNDARY_WORD: u64 = 0;

/// Decodes a stack's Python words into frames, keeping the `Code` frames whose key
/// `known` accepts (the sender drops frames whose definition never reached the stream).
pub fn decode_words(words: &[u64], known: impl Fn(u64) -> bool, out: &mut Vec<PyFrame>) {
    let mut i = 0;
    while let Some(&w) = words.get(i) {
        if w == BOUNDARY_WORD {
            out.push(PyFrame::Boundary);
            i += 1;
            continue;
        }
        let Some(&instr) = words.get(i + 1) else {
            break;
        };
        if known(w) {
            out.push(PyFrame::Code {
                code: CodeKey(w),
                instr: instr as u32 as i32,
            });
        }
        i += 2;
    }
}

/// The keys of the `Code` frames in a stack's Python words, in order.
pub fn keys(words: &[u64]) -> impl Iterator<Item = u64> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || loop {
        let w = *words.get(i)?;
        if w == BOUNDARY_WORD {
            i += 1;
            continue;
        }
        i += 2;
        return Some(w);
    })
}

/// Reads of the interpreter's memory (volatile: other threads may write some of it, such
/// as `_finalizing`), one load each when aligned, as they always are for the fields read.
/// Every caller states why the address is live.
mod mem {
    /// # Safety
    /// `addr` must be valid for reading 8 bytes.
    #[inline(always)]
    pub unsafe fn u64_at(addr: usize) -> u64 {
        if addr % 8 == 0 {
            // SAFETY: readable (caller's contract) and aligned.
            unsafe { std::ptr::read_volatile(addr as *const u64) }
        } else {
            // SAFETY: readable (caller's contract).
            unsafe { std::ptr::read_unaligned(addr as *const u64) }
        }
    }

    /// # Safety
    /// `addr` must be valid for reading 8 bytes.
    #[inline(always)]
    pub unsafe fn usize_at(addr: usize) -> usize {
        // SAFETY: forwarded.
        unsafe { u64_at(addr) as usize }
    }

    /// # Safety
    /// `addr` must be valid for reading 4 bytes.
    #[inline(always)]
    pub unsafe fn u32_at(addr: usize) -> u32 {
        if addr % 4 == 0 {
            // SAFETY: readable (caller's contract) and aligned.
            unsafe { std::ptr::read_volatile(addr as *const u32) }
        } else {
            // SAFETY: readable (caller's contract).
            unsafe { std::ptr::read_unaligned(addr as *const u32) }
        }
    }

    /// # Safety
    /// `addr` must be valid for reading 1 byte.
    #[inline(always)]
    pub unsafe fn u8_at(addr: usize) -> u8 {
        // SAFETY: the caller guarantees the byte is readable.
        unsafe { std::ptr::read_volatile(addr as *const u8) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_decode_to_frames_and_keys() {
        let words = [
            7,
            (-1i32) as u32 as u64,
            9,
            12,
            BOUNDARY_WORD,
            7,
            3,
            BOUNDARY_WORD,
        ];
        let mut out = Vec::new();
        decode_words(&words, |_| true, &mut out);
        assert_eq!(
            out,
            vec![
                PyFrame::Code {
                    code: CodeKey(7),
                    instr: -1
                },
                PyFrame::Code {
                    code: CodeKey(9),
                    instr: 12
                },
                PyFrame::Boundary,
                PyFrame::Code {
                    code: CodeKey(7),
                    instr: 3
                },
                PyFrame::Boundary,
            ]
        );
        assert_eq!(keys(&words).collect::<Vec<_>>(), vec![7, 9, 7]);
        out.clear();
        decode_words(&words, |k| k != 9, &mut out);
        assert_eq!(out.len(), 4, "the unknown key's frame is left out: {out:?}");
        // A cut pair (key without its index) ends the decoding.
        out.clear();
        decode_words(&[BOUNDARY_WORD, 5], |_| true, &mut out);
        assert_eq!(out, vec![PyFrame::Boundary]);
    }
}
