//! Python records: the interpreter frames a stack was captured under, and the definitions
//! of the code objects they name. The shim reads both from CPython's memory (no Python
//! call); the collector decodes line numbers and merges the frames into native stacks.

use crate::ids::CodeKey;
use bincode::{Decode, Encode};

/// One entry of a stack's Python part, innermost first.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode, serde::Serialize, serde::Deserialize,
)]
pub enum PyFrame {
    /// A frame running `code`, at instruction `instr` (in 16-bit code units from the start
    /// of the bytecode; 3.10: `f_lasti`); -1 when the frame has not started yet.
    Code { code: CodeKey, instr: i32 },
    /// The end of one evaluation-loop segment: the frames since the previous boundary ran
    /// in one native call of the interpreter's eval function (`_PyEval_EvalFrameDefault`).
    /// The n-th segment, innermost first, belongs to the n-th such native frame.
    Boundary,
}

/// A CPython version as `major.minor`.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Encode,
    Decode,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct PyVersion {
    pub major: u8,
    pub minor: u8,
}

impl PyVersion {
    /// Which `co_linetable` encoding this version writes.
    pub fn line_table(self) -> LineTableFormat {
        if (self.major, self.minor) >= (3, 11) {
            LineTableFormat::Locations
        } else {
            LineTableFormat::Pairs310
        }
    }
}

/// The encodings of `co_linetable`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum LineTableFormat {
    /// 3.10: `(bytecode-byte delta, signed line delta)` pairs (`Objects/lnotab_notes.txt`).
    Pairs310,
    /// 3.11 and later: the location table (`Objects/locations.md`).
    Locations,
}

/// A code object, sent the first time a stream names its [`CodeKey`]. The key stays
/// valid for the whole stream: a code object that dies and is replaced by another at the
/// same address gets a new key.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize)]
pub struct PyCode {
    pub key: CodeKey,
    pub version: PyVersion,
    /// `co_filename` (UTF-8; unpaired surrogates become U+FFFD).
    pub filename: String,
    /// `co_qualname` (3.11+), `co_name` before.
    pub qualname: String,
    pub first_line: i32,
    /// The raw `co_linetable` bytes, in [`PyVersion::line_table`]'s format.
    pub line_table: Vec<u8>,
    /// Whether a field was cut at the shim's length limits (lines past a cut line table
    /// fall back to `first_line`).
    pub truncated: bool,
}
