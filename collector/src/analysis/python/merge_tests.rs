//! Tests of the merge of Python frames into native stacks, and of resolving a stack's
//! Python part (segments, lines, undefined code objects).

use super::*;
use crate::analysis::model::Frame;
use crate::state::FxHashMap;
use leakscope_protocol::{CodeKey, PyCode, PyFrame, PyVersion};
use std::sync::Arc;

fn native(function: &str, module: &str) -> Frame {
    Frame {
        function: Some(function.into()),
        file: None,
        line: None,
        module: Some(module.into()),
        address: "0x10".into(),
        inlined: false,
        python: false,
    }
}

fn inlined(function: &str, module: &str) -> Frame {
    Frame {
        inlined: true,
        ..native(function, module)
    }
}

fn py(function: &str, line: u32) -> Frame {
    Frame {
        function: Some(function.into()),
        file: Some("app.py".into()),
        line: Some(line),
        module: None,
        address: "0x0".into(),
        inlined: false,
        python: true,
    }
}

const LIB: &str = "libpython3.11.so.1.0";

fn eval() -> Vec<Frame> {
    vec![native("_PyEval_EvalFrameDefault", LIB)]
}

/// The frames' functions, Python ones prefixed with `py:`.
fn names(frames: &[Frame]) -> Vec<String> {
    frames
        .iter()
        .map(|f| {
            let name = f.function.as_deref().unwrap_or("?");
            if f.python {
                format!("py:{name}")
            } else {
                name.to_owned()
            }
        })
        .collect()
}

fn run(addresses: &[Vec<Frame>], segments: Vec<Vec<Frame>>) -> Merged {
    merge(addresses.iter().map(Vec::as_slice), segments)
}

#[test]
fn eval_function_names() {
    assert!(is_eval_function("_PyEval_EvalFrameDefault"));
    assert!(is_eval_function("_PyEval_EvalFrameDefault.cold"));
    assert!(is_eval_function("_PyEval_EvalFrameDefault.cold.12"));
    assert!(!is_eval_function("_PyEval_EvalFrameDefaultX"));
    assert!(!is_eval_function("PyEval_EvalFrameDefault"));
    assert!(!is_eval_function("_PyEval_EvalFrame"));
    assert!(!is_eval_function("_PyEval_Vector"));
}

#[test]
fn interpreter_modules() {
    for m in [
        "libpython3.11.so.1.0",
        "libpython3.13.so",
        "python3.11",
        "python3",
        "python",
    ] {
        assert!(is_interpreter_module(m), "{m}");
    }
    for m in [
        "libffi.so.8",
        "_ctypes.cpython-311-x86_64-linux-gnu.so",
        "pythonista",
        "app",
    ] {
        assert!(!is_interpreter_module(m), "{m}");
    }
}

#[test]
fn equal_counts_pair_in_order() {
    // 3.11+: one eval loop per entry frame; an address inside inlined interpreter code is
    // one native frame and is replaced whole; `.cold` is the same function.
    let addresses = vec![
        vec![native("PyByteArray_Resize", LIB)],
        vec![
            inlined("do_call", LIB),
            native("_PyEval_EvalFrameDefault", LIB),
        ],
        vec![native("ext_call_back", "_ext.so")],
        vec![native("_PyEval_EvalFrameDefault.cold", LIB)],
        vec![native("Py_RunMain", LIB)],
        vec![native("main", "python3.11")],
    ];
    let m = run(
        &addresses,
        vec![
            vec![py("inner", 3), py("middle", 7)],
            vec![py("<module>", 20)],
        ],
    );
    assert!(!m.mismatched());
    assert_eq!((m.eval_frames, m.segments), (2, 2));
    assert_eq!(
        names(&m.frames),
        vec![
            "PyByteArray_Resize",
            "py:inner",
            "py:middle",
            "ext_call_back",
            "py:<module>",
            "Py_RunMain",
            "main"
        ]
    );
}

#[test]
fn one_frame_segments_of_3_10() {
    // 3.10: every Python frame runs in an eval loop of its own.
    let addresses = vec![
        vec![native("PyList_Append", LIB)],
        eval(),
        vec![native("_PyFunction_Vectorcall", LIB)],
        eval(),
        vec![native("_PyFunction_Vectorcall", LIB)],
        eval(),
        vec![native("main", "python3.10")],
    ];
    let segments = vec![vec![py("c", 1)], vec![py("b", 2)], vec![py("a", 3)]];
    let m = run(&addresses, segments);
    assert!(!m.mismatched());
    assert_eq!(
        names(&m.frames),
        vec![
            "PyList_Append",
            "py:c",
            "_PyFunction_Vectorcall",
            "py:b",
            "_PyFunction_Vectorcall",
            "py:a",
            "main"
        ]
    );
}

#[test]
fn fewer_eval_frames_put_the_rest_at_the_outer_end() {
    // A native stack cut at the depth limit: it kept the innermost loop only.
    let addresses = vec![
        vec![native("PyByteArray_Resize", LIB)],
        eval(),
        vec![native("x", LIB)],
    ];
    let m = run(
        &addresses,
        vec![vec![py("c", 1)], vec![py("b", 2)], vec![py("a", 3)]],
    );
    assert!(m.mismatched());
    assert_eq!((m.eval_frames, m.segments), (1, 3));
    assert_eq!(
        names(&m.frames),
        vec!["PyByteArray_Resize", "py:c", "x", "py:b", "py:a"]
    );
}

#[test]
fn a_walk_that_ended_at_the_innermost_eval_loop_is_not_a_mismatch() {
    // The shim's default for Python threads: the native walk stops at the first eval loop.
    let addresses = vec![
        vec![native("malloc", "libc.so.6")],
        vec![native("PyByteArray_Resize", LIB)],
        eval(),
    ];
    let m = run(
        &addresses,
        vec![
            vec![py("make", 4)],
            vec![py("serve", 9)],
            vec![py("<module>", 16)],
        ],
    );
    assert!(m.cut_at_eval && !m.mismatched());
    assert_eq!(
        names(&m.frames),
        vec![
            "malloc",
            "PyByteArray_Resize",
            "py:make",
            "py:serve",
            "py:<module>"
        ]
    );
    // Fewer segments than eval loops is still a mismatch, cut or not.
    let m = run(
        &[eval(), vec![native("call", LIB)], eval()],
        vec![vec![py("f", 1)]],
    );
    assert!(m.cut_at_eval && m.mismatched());
}

#[test]
fn no_eval_frames_at_all() {
    // An interpreter without symbols: nothing to pair, Python frames go after the native.
    let addresses = vec![
        vec![native("malloc", "libc.so.6")],
        vec![native("?", "python3")],
    ];
    let m = run(&addresses, vec![vec![py("f", 1), py("<module>", 2)]]);
    assert!(m.mismatched());
    assert_eq!(names(&m.frames), vec!["malloc", "?", "py:f", "py:<module>"]);
}

#[test]
fn more_eval_frames_keep_the_unpaired_ones() {
    // A Python walk cut short: the outer loop has no segment and stays native.
    let addresses = vec![eval(), vec![native("call", LIB)], eval()];
    let m = run(&addresses, vec![vec![py("f", 1)]]);
    assert!(m.mismatched());
    assert_eq!(
        names(&m.frames),
        vec!["py:f", "call", "_PyEval_EvalFrameDefault"]
    );
}

#[test]
fn empty_innermost_segment() {
    // 3.12+: an eval loop entered but not yet running a frame has an empty segment.
    let addresses = vec![
        vec![native("alloc", LIB)],
        eval(),
        vec![native("call", LIB)],
        eval(),
    ];
    let m = run(&addresses, vec![vec![], vec![py("f", 4)]]);
    assert!(!m.mismatched());
    assert_eq!(names(&m.frames), vec!["alloc", "call", "py:f"]);
}

#[test]
fn no_python_frames_leave_native_frames_alone() {
    let addresses = vec![
        vec![native("worker", "app")],
        vec![native("start_thread", "libc.so.6")],
    ];
    let m = run(&addresses, vec![]);
    assert!(!m.mismatched());
    assert_eq!(names(&m.frames), vec!["worker", "start_thread"]);
}

fn code(key: u64, minor: u8, first_line: i32, table: Vec<u8>, truncated: bool) -> PyCode {
    PyCode {
        key: CodeKey(key),
        version: PyVersion { major: 3, minor },
        filename: "/srv/app/handlers.py".into(),
        qualname: "Handler.get".into(),
        first_line,
        line_table: table,
        truncated,
    }
}

#[test]
fn resolver_segments_lines_and_undefined_codes() {
    // 3.11 table: 2 units on +1, 3 units on +2 (kind 12, two column bytes), then nothing.
    let table = vec![0x80 | (11 << 3) | 1, 0, 1, 0x80 | (12 << 3) | 2, 0, 1];
    let codes: FxHashMap<CodeKey, Arc<PyCode>> = [
        (CodeKey(1), Arc::new(code(1, 11, 40, table.clone(), false))),
        (CodeKey(2), Arc::new(code(2, 11, 40, table, true))),
    ]
    .into_iter()
    .collect();
    let mut r = PyResolver::new(&codes);
    let at = |c, instr| PyFrame::Code {
        code: CodeKey(c),
        instr,
    };
    let python = vec![
        PyFrame::Boundary, // an empty innermost segment
        at(1, 3),
        at(1, -1),
        PyFrame::Boundary,
        at(2, 9), // past a cut table: the first line
        at(9, 0), // never defined
        PyFrame::Boundary,
    ];
    let segments = r.segments(&python);
    assert_eq!(segments.len(), 3, "{segments:?}");
    assert!(segments[0].is_empty());
    let lines = |s: &[Frame]| s.iter().map(|f| f.line).collect::<Vec<_>>();
    assert_eq!(lines(&segments[1]), vec![Some(43), Some(40)]);
    assert_eq!(lines(&segments[2]), vec![Some(40), None]);
    let f = &segments[1][0];
    assert!(f.python && !f.inlined && f.module.is_none());
    assert_eq!(f.function.as_deref(), Some("Handler.get"));
    assert_eq!(f.file.as_deref(), Some("/srv/app/handlers.py"));
    assert_eq!(&*f.address, "0x6", "byte offset of instruction 3");
    assert!(segments[2][1].python && segments[2][1].function.is_none());
    assert_eq!(r.undefined_codes(), 1);
    // Past the end of a whole table (a shim bug): the first line too, never a panic.
    assert_eq!(r.line(&codes[&CodeKey(1)], 1000), Some(40));
    assert_eq!(r.line(&codes[&CodeKey(1)], 0), Some(41));
    // Frames after the last boundary make a segment; no Python at all makes none.
    assert_eq!(r.segments(&[at(1, 0)]).len(), 1);
    assert!(r.segments(&[]).is_empty());
    // 3.10 tables decode as pairs.
    let old = code(3, 10, 7, vec![6, 1, 4, 2], false);
    assert_eq!(
        [
            r.line(&old, 0),
            r.line(&old, 2),
            r.line(&old, 3),
            r.line(&old, 4)
        ],
        [Some(8), Some(8), Some(10), Some(10)]
    );
}

#[test]
fn negative_first_line_has_no_line() {
    let codes = FxHashMap::default();
    let mut r = PyResolver::new(&codes);
    assert_eq!(r.line(&code(4, 12, -1, vec![], false), -1), None);
}
