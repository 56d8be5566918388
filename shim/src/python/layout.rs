//! CPython's struct layouts, per minor version (x86_64 and other LP64 targets, default
//! build, not free-threaded): the table of `docs/python-frames.md`, and for 3.13 the
//! check of that table against the interpreter's own `_Py_DebugOffsets` at the start of
//! `_PyRuntime`. Offsets are in bytes.

use super::mem;
use leakscope_protocol::PyVersion;

/// How a version links and marks its frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Model {
    /// `PyFrameObject` chain from `tstate->frame`; one eval call per frame.
    V310,
    /// `_PyInterpreterFrame` chain from `tstate->cframe->current_frame`; `is_entry` ends
    /// a segment.
    V311,
    /// As 3.11, with a CSTACK-owned shim frame between eval loops.
    V312,
    /// `tstate->current_frame`, CSTACK shim frames, and `_Py_InitCleanup` frames to skip.
    V313,
}

/// Where the walk and the code copy find everything, in one interpreter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub version: PyVersion,
    pub model: Model,
    /// Address of `_PyRuntime`.
    pub runtime: usize,
    /// `_PyRuntime` → the GILState `Py_tss_t` (`int _is_initialized; pthread_key_t _key`).
    pub tss: usize,
    /// `_PyRuntime` → `_finalizing` (a `PyThreadState*`, 0 until `Py_FinalizeEx`).
    pub finalizing: usize,
    /// `PyThreadState` → `frame` (3.10), `cframe` (3.11, 3.12) or `current_frame` (3.13).
    pub ts_frame: usize,
    /// `_PyCFrame` → `current_frame` (3.11, 3.12 only).
    pub cframe_current: usize,
    pub ts_interp: usize,
    pub ts_thread_id: usize,
    /// Frame → code object (`f_code`, `f_executable`).
    pub fr_code: usize,
    /// Frame → outer frame (`f_back`, `previous`).
    pub fr_prev: usize,
    /// Frame → `f_lasti` (3.10, an `int`) or the instruction pointer (3.11+).
    pub fr_instr: usize,
    /// 3.11: the `is_entry` byte.
    pub fr_is_entry: usize,
    /// 3.12+: the `owner` byte (3 = owned by the C stack: an eval loop's shim frame).
    pub fr_owner: usize,
    pub co_filename: usize,
    /// `co_qualname` (3.11+), `co_name` (3.10).
    pub co_qualname: usize,
    pub co_linetable: usize,
    pub co_firstlineno: usize,
    pub co_flags: usize,
    /// Start of the bytecode (3.11+; `PyCode_Type.tp_basicsize`).
    pub co_code_adaptive: usize,
    /// `sizeof(PyCodeObject)` as `PyCode_Type.tp_basicsize` states it.
    pub code_basicsize: usize,
    /// Data of a compact ASCII `str` / of a compact non-ASCII `str`.
    pub str_ascii_data: usize,
    pub str_compact_data: usize,
    /// Type objects, compared with `ob_type`.
    pub code_type: usize,
    pub unicode_type: usize,
    pub bytes_type: usize,
    /// The code of `_PyEval_EvalFrameDefault`, where a native walk may end: the Python
    /// frames describe every eval loop outside it (empty when unknown).
    pub eval: std::ops::Range<u64>,
}

/// `_PyInterpreterFrame.owner` of an eval loop's shim frame (3.12, 3.13).
pub const OWNED_BY_CSTACK: u8 = 3;
/// 3.13 `CO_NO_MONITORING_EVENTS`: set on `_Py_InitCleanup`, the static code object the
/// specialized `Cls()` call pushes; its frame is no Python source.
pub const CO_NO_MONITORING_EVENTS: u32 = 0x0200_0000;

/// Common to all versions.
pub const OB_TYPE: usize = 8;
pub const OB_SIZE: usize = 16;
pub const BYTES_SVAL: usize = 32;
pub const STR_LENGTH: usize = 16;
pub const STR_STATE: usize = 32;
pub const STR_KIND_SHIFT: u32 = 2;
pub const STR_KIND_MASK: u32 = 7;
pub const STR_COMPACT: u32 = 0x20;
pub const STR_ASCII: u32 = 0x40;
/// `PyTypeObject.tp_basicsize`.
pub const TP_BASICSIZE: usize = 32;

/// The addresses discovery found in the interpreter's module.
#[derive(Clone, Copy, Debug, Default)]
pub struct Symbols {
    pub runtime: usize,
    pub code_type: usize,
    pub unicode_type: usize,
    pub bytes_type: usize,
    pub type_type: usize,
    /// The code of `_PyEval_EvalFrameDefault` (empty when its size is unknown).
    pub eval: (u64, u64),
}

/// The table's layout for `version`, `None` for versions it has no column for.
pub fn for_version(version: PyVersion, s: &Symbols) -> Option<Layout> {
    if version.major != 3 {
        return None;
    }
    let base = Layout {
        version,
        model: Model::V310,
        runtime: s.runtime,
        tss: 0,
        finalizing: 0,
        ts_frame: 0,
        cframe_current: 0,
        ts_interp: 16,
        ts_thread_id: 0,
        fr_code: 0,
        fr_prev: 0,
        fr_instr: 0,
        fr_is_entry: 0,
        fr_owner: 0,
        co_filename: 112,
        co_qualname: 128,
        co_linetable: 136,
        co_firstlineno: 68,
        co_flags: 48,
        co_code_adaptive: 0,
        code_basicsize: 0,
        str_ascii_data: 40,
        str_compact_data: 56,
        code_type: s.code_type,
        unicode_type: s.unicode_type,
        bytes_type: s.bytes_type,
        eval: s.eval.0..s.eval.1,
    };
    Some(match version.minor {
        10 => Layout {
            model: Model::V310,
            tss: 584,
            finalizing: 16,
            ts_frame: 24,
            ts_thread_id: 176,
            fr_code: 32,
            fr_prev: 24,
            fr_instr: 96,
            co_filename: 104,
            co_qualname: 112,
            co_linetable: 120,
            co_firstlineno: 40,
            co_flags: 36,
            code_basicsize: 176,
            str_ascii_data: 48,
            str_compact_data: 72,
            ..base
        },
        11 => Layout {
            model: Model::V311,
            tss: 592,
            finalizing: 24,
            ts_frame: 56,
            cframe_current: 8,
            ts_thread_id: 152,
            fr_code: 32,
            fr_prev: 48,
            fr_instr: 56,
            fr_is_entry: 68,
            co_firstlineno: 72,
            co_code_adaptive: 184,
            code_basicsize: 184,
            str_ascii_data: 48,
            str_compact_data: 72,
            ..base
        },
        12 => Layout {
            model: Model::V312,
            tss: 1544,
            finalizing: 24,
            ts_frame: 56,
            cframe_current: 0,
            ts_thread_id: 136,
            fr_code: 0,
            fr_prev: 8,
            fr_instr: 56,
            fr_owner: 70,
            co_code_adaptive: 192,
            code_basicsize: 192,
            ..base
        },
        13 => Layout {
            model: Model::V313,
            tss: 2160,
            finalizing: 608,
            ts_frame: 72,
            ts_thread_id: 152,
            fr_code: 0,
            fr_prev: 8,
            fr_instr: 56,
            fr_owner: 70,
            co_code_adaptive: 200,
            code_basicsize: 200,
            ..base
        },
        _ => return None,
    })
}

/// Why a layout was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// A type object's `ob_type` is not `&PyType_Type` (a `Py_TRACE_REFS` build, or wrong
    /// symbols).
    TypeHeader,
    /// `PyCode_Type.tp_basicsize` differs from the table's.
    CodeSize,
    /// 3.13+: no `_Py_DebugOffsets` cookie, or another version in it.
    DebugCookie,
    /// 3.13+: a free-threaded build.
    FreeThreaded,
    /// 3.13+: a debug offset the walk uses differs from the table.
    DebugOffset,
}

impl Mismatch {
    pub fn describe(self) -> &'static str {
        match self {
            Mismatch::TypeHeader => "unexpected object header (a debug build?)",
            Mismatch::CodeSize => "unexpected code object size",
            Mismatch::DebugCookie => "no matching _Py_DebugOffsets",
            Mismatch::FreeThreaded => "free-threaded build",
            Mismatch::DebugOffset => "_Py_DebugOffsets disagree with the known layout",
        }
    }
}

/// Checks `l` against the interpreter: type headers, the code object's size, and for
/// 3.13 every debug offset the walk and the code copy use.
///
/// # Safety
/// The addresses in `l` and `type_type` must be the interpreter's `_PyRuntime` and type
/// objects (mapped for the life of the module, which discovery pins: startup modules and
/// libpython are never unloaded while Python runs).
pub unsafe fn validate(l: &Layout, type_type: usize, hex: u64) -> Result<(), Mismatch> {
    for t in [l.code_type, l.unicode_type, l.bytes_type] {
        // SAFETY: `t` is a static type object of the interpreter (caller's contract).
        if unsafe { mem::usize_at(t + OB_TYPE) } != type_type {
            return Err(Mismatch::TypeHeader);
        }
    }
    // SAFETY: as above.
    if unsafe { mem::usize_at(l.code_type + TP_BASICSIZE) } != l.code_basicsize {
        return Err(Mismatch::CodeSize);
    }
    if l.model == Model::V313 {
        // SAFETY: `_PyRuntime` of 3.13 starts with `_Py_DebugOffsets` (caller's contract).
        unsafe { check_debug_offsets(l, hex) }?;
    }
    Ok(())
}

/// Offsets inside the 3.13 `_Py_DebugOffsets` (`internal/pycore_runtime.h`), each a u64.
mod dbg313 {
    pub const VERSION: usize = 8;
    pub const FREE_THREADED: usize = 16;
    pub const RT_FINALIZING: usize = 32;
    pub const TS_INTERP: usize = 176;
    pub const TS_CURRENT_FRAME: usize = 184;
    pub const TS_THREAD_ID: usize = 192;
    pub const FR_PREVIOUS: usize = 232;
    pub const FR_EXECUTABLE: usize = 240;
    pub const FR_INSTR_PTR: usize = 248;
    pub const FR_OWNER: usize = 264;
    pub const CO_FILENAME: usize = 280;
    pub const CO_QUALNAME: usize = 296;
    pub const CO_LINETABLE: usize = 304;
    pub const CO_FIRSTLINENO: usize = 312;
    pub const CO_CODE_ADAPTIVE: usize = 344;
    pub const OB_TYPE: usize = 360;
    pub const BYTES_OB_SIZE: usize = 520;
    pub const BYTES_OB_SVAL: usize = 528;
    pub const STR_STATE: usize = 544;
    pub const STR_LENGTH: usize = 552;
    pub const STR_ASCII_SIZE: usize = 560;
}

/// # Safety
/// `l.runtime` must be 3.13's `_PyRuntime`.
unsafe fn check_debug_offsets(l: &Layout, hex: u64) -> Result<(), Mismatch> {
    let at = |off: usize| {
        // SAFETY: every offset read lies inside the 584-byte `_Py_DebugOffsets` at the
        // start of `_PyRuntime` (caller's contract).
        unsafe { mem::u64_at(l.runtime + off) }
    };
    // SAFETY: as above (the 8-byte cookie).
    let cookie = unsafe { std::ptr::read_volatile(l.runtime as *const [u8; 8]) };
    if &cookie != b"xdebugpy" || at(dbg313::VERSION) >> 16 != hex >> 16 {
        return Err(Mismatch::DebugCookie);
    }
    if at(dbg313::FREE_THREADED) != 0 {
        return Err(Mismatch::FreeThreaded);
    }
    let expect = [
        (dbg313::RT_FINALIZING, l.finalizing),
        (dbg313::TS_INTERP, l.ts_interp),
        (dbg313::TS_CURRENT_FRAME, l.ts_frame),
        (dbg313::TS_THREAD_ID, l.ts_thread_id),
        (dbg313::FR_PREVIOUS, l.fr_prev),
        (dbg313::FR_EXECUTABLE, l.fr_code),
        (dbg313::FR_INSTR_PTR, l.fr_instr),
        (dbg313::FR_OWNER, l.fr_owner),
        (dbg313::CO_FILENAME, l.co_filename),
        (dbg313::CO_QUALNAME, l.co_qualname),
        (dbg313::CO_LINETABLE, l.co_linetable),
        (dbg313::CO_FIRSTLINENO, l.co_firstlineno),
        (dbg313::CO_CODE_ADAPTIVE, l.co_code_adaptive),
        (dbg313::OB_TYPE, OB_TYPE),
        (dbg313::BYTES_OB_SIZE, OB_SIZE),
        (dbg313::BYTES_OB_SVAL, BYTES_SVAL),
        (dbg313::STR_STATE, STR_STATE),
        (dbg313::STR_LENGTH, STR_LENGTH),
        (dbg313::STR_ASCII_SIZE, l.str_ascii_data),
    ];
    if expect.iter().all(|&(off, want)| at(off) == want as u64) {
        Ok(())
    } else {
        Err(Mismatch::DebugOffset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(minor: u8) -> PyVersion {
        PyVersion { major: 3, minor }
    }

    #[test]
    fn table_columns_match_the_design_note() {
        let s = Symbols::default();
        let l10 = for_version(v(10), &s).unwrap();
        assert_eq!(
            (l10.tss, l10.finalizing, l10.ts_frame, l10.ts_thread_id),
            (584, 16, 24, 176)
        );
        assert_eq!((l10.fr_code, l10.fr_prev, l10.fr_instr), (32, 24, 96));
        assert_eq!(
            (
                l10.co_filename,
                l10.co_qualname,
                l10.co_linetable,
                l10.co_firstlineno
            ),
            (104, 112, 120, 40)
        );
        assert_eq!((l10.str_ascii_data, l10.str_compact_data), (48, 72));
        let l11 = for_version(v(11), &s).unwrap();
        assert_eq!(
            (l11.tss, l11.finalizing, l11.ts_frame, l11.cframe_current),
            (592, 24, 56, 8)
        );
        assert_eq!(
            (l11.fr_code, l11.fr_prev, l11.fr_instr, l11.fr_is_entry),
            (32, 48, 56, 68)
        );
        assert_eq!((l11.co_firstlineno, l11.co_code_adaptive), (72, 184));
        let l12 = for_version(v(12), &s).unwrap();
        assert_eq!(
            (l12.tss, l12.ts_frame, l12.cframe_current, l12.ts_thread_id),
            (1544, 56, 0, 136)
        );
        assert_eq!((l12.fr_code, l12.fr_prev, l12.fr_owner), (0, 8, 70));
        assert_eq!(
            (l12.co_firstlineno, l12.co_code_adaptive, l12.str_ascii_data),
            (68, 192, 40)
        );
        let l13 = for_version(v(13), &s).unwrap();
        assert_eq!(
            (l13.tss, l13.finalizing, l13.ts_frame, l13.ts_thread_id),
            (2160, 608, 72, 152)
        );
        assert_eq!(l13.model, Model::V313);
        assert_eq!(l13.code_basicsize, 200);
        assert!(for_version(v(9), &s).is_none());
        assert!(for_version(v(14), &s).is_none());
        assert!(for_version(PyVersion { major: 2, minor: 7 }, &s).is_none());
    }
}
