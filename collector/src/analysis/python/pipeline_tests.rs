//! Python frames from records to report: a stream's code definitions and stacks with Python
//! parts go through the state (fork inheritance included) and analysis, against a real
//! compiled program whose functions carry the interpreter's names, so that symbolization
//! finds the evaluation-loop frames as it would in libpython.

use crate::analysis::model::{Frame, ProcessReport};
use crate::analysis::test_program::compile_and_run;
use crate::analysis::{analyze, AnalysisOptions};
use crate::ingest::meta::RecordingMeta;
use crate::state::{ConnClose, ConnId, RunState, StateOptions};
use leakscope_protocol::{
    Alloc, Api, CodeKey, End, EndReason, Fork, Hello, MemoryKind, Origin, Pid, PyCode, PyFrame,
    PyVersion, Record, RuntimeAddr, StackDef, StackId, ThreadId, Timestamp,
};

/// `main -> Py_RunMain -> _PyEval_EvalFrameDefault -> _PyFunction_Vectorcall ->
/// _PyEval_EvalFrameDefault -> PyByteArray_Resize`, which prints its 6 lookup addresses
/// (innermost first) and the program's maps.
const INTERPRETER_LIKE: &str = r#"#include <stdio.h>
static unsigned long where[6];
__attribute__((noinline)) void capture(void) {
    where[0] = (unsigned long)__builtin_return_address(0) - 1;
    where[1] = (unsigned long)__builtin_return_address(1) - 1;
    where[2] = (unsigned long)__builtin_return_address(2) - 1;
    where[3] = (unsigned long)__builtin_return_address(3) - 1;
    where[4] = (unsigned long)__builtin_return_address(4) - 1;
    where[5] = (unsigned long)__builtin_return_address(5) - 1;
}
__attribute__((noinline)) void PyByteArray_Resize(void) { capture(); }
void _PyEval_EvalFrameDefault(int depth);
__attribute__((noinline)) void _PyFunction_Vectorcall(int depth) {
    _PyEval_EvalFrameDefault(depth);
}
__attribute__((noinline)) void _PyEval_EvalFrameDefault(int depth) {
    if (depth > 1) _PyFunction_Vectorcall(depth - 1);
    else PyByteArray_Resize();
}
__attribute__((noinline)) void Py_RunMain(void) { _PyEval_EvalFrameDefault(2); }
int main(void) {
    Py_RunMain();
    for (int j = 0; j < 6; j++) printf("%lx ", where[j]);
    printf("\n");
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[4096];
    while (maps && fgets(line, sizeof line, maps)) fputs(line, stdout);
    return 0;
}
"#;

fn hello(pid: u32, origin: Origin) -> Record {
    Record::Hello(Hello {
        pid: Pid(pid),
        ppid: Pid(1),
        origin,
        exe: "/usr/bin/python3".into(),
        argv: vec!["python3".into(), "app.py".into()],
        start: Timestamp(0),
        start_unix_ns: 0,
        fingerprint: leakscope_protocol::BUILD_FINGERPRINT,
    })
}

/// A 3.11+ code object whose instructions `0..4` are on `first_line + 2` and `4..8` on
/// `first_line + 5`.
fn code(key: u64, qualname: &str, first_line: i32) -> Record {
    Record::PyCode(PyCode {
        key: CodeKey(key),
        version: PyVersion {
            major: 3,
            minor: 12,
        },
        filename: "/srv/app.py".into(),
        qualname: qualname.into(),
        first_line,
        // Kind 13 (line delta only), 4 units each: +2, then +3.
        line_table: vec![0x80 | (13 << 3) | 3, 4, 0x80 | (13 << 3) | 3, 6],
        truncated: false,
    })
}

fn at(code: u64, instr: i32) -> PyFrame {
    PyFrame::Code {
        code: CodeKey(code),
        instr,
    }
}

fn stack(id: u32, frames: &[RuntimeAddr], python: Vec<PyFrame>) -> Record {
    Record::Stack(StackDef {
        id: StackId(id),
        frames: frames.to_vec(),
        python,
    })
}

fn alloc(ts: u64, addr: u64, size: u64, stack: u32) -> Record {
    Record::Alloc(Alloc {
        ts: Timestamp(ts),
        thread: ThreadId(1),
        addr: RuntimeAddr(addr),
        size,
        kind: MemoryKind::Host,
        api: Api::Malloc,
        stack: StackId(stack),
    })
}

fn end(ts: u64) -> Record {
    Record::End(End {
        ts: Timestamp(ts),
        reason: EndReason::Exit,
    })
}

/// Function (Python ones as `py:name@line`) per frame.
fn names(frames: &[Frame]) -> Vec<String> {
    frames
        .iter()
        .map(|f| {
            let name = f.function.as_deref().unwrap_or("?");
            match (f.python, f.line) {
                (true, Some(line)) => format!("py:{name}@{line}"),
                (true, None) => format!("py:{name}"),
                (false, _) => name.to_owned(),
            }
        })
        .collect()
}

fn site_with(p: &ProcessReport, bytes: u64) -> Vec<String> {
    let site = p
        .sites
        .iter()
        .find(|s| s.outstanding_bytes == bytes)
        .unwrap_or_else(|| panic!("no site of {bytes} bytes: {:#?}", p.sites));
    names(&site.frames)
}

#[test]
fn python_frames_replace_eval_loops_through_state_fork_and_analysis() {
    let traced = compile_and_run("python-merge", INTERPRETER_LIKE);
    let native = &traced.addrs;
    assert_eq!(native.len(), 6);
    let mut s = RunState::new(StateOptions::default());
    s.apply_all(
        ConnId(0),
        [
            hello(10, Origin::Exec),
            Record::Module(traced.module.clone()),
            code(1, "Cache.fill", 100),
            code(2, "handle", 200),
            code(3, "<module>", 1),
            // Two segments (3.11+: the inner loop runs one frame, the outer two) for two
            // evaluation-loop frames.
            stack(
                1,
                native,
                vec![
                    at(1, 5),
                    PyFrame::Boundary,
                    at(2, 1),
                    at(3, -1),
                    PyFrame::Boundary,
                ],
            ),
            alloc(10, 0x1000, 1000, 1),
            // The same id with other Python frames: counted, the first kept.
            stack(1, native, vec![at(3, 0), PyFrame::Boundary]),
            // Three segments for two loops in a stack shorter than the longest (so not cut at
            // the depth limit), and a code object never defined.
            stack(
                2,
                &native[..5],
                vec![
                    at(1, 0),
                    PyFrame::Boundary,
                    at(9, 0),
                    PyFrame::Boundary,
                    at(3, 4),
                    PyFrame::Boundary,
                ],
            ),
            alloc(11, 0x2000, 300, 2),
            // The same in a stack as long as the longest: cut at the depth limit, no note.
            stack(
                3,
                native,
                vec![
                    at(1, 0),
                    PyFrame::Boundary,
                    at(2, 0),
                    PyFrame::Boundary,
                    at(3, 0),
                ],
            ),
            alloc(12, 0x4000, 77, 3),
            // Another definition for a defined key: counted, the first kept.
            code(1, "Other.thing", 7),
            Record::Fork(Fork {
                ts: Timestamp(20),
                thread: ThreadId(1),
                child: Pid(11),
            }),
            end(30),
        ],
    );
    // The child uses the codes it inherited without defining them again, and one of its own.
    s.apply_all(
        ConnId(1),
        [
            hello(11, Origin::Fork { parent: Pid(10) }),
            code(4, "child_work", 50),
            stack(
                1,
                native,
                vec![at(4, 6), PyFrame::Boundary, at(3, 2), PyFrame::Boundary],
            ),
            alloc(40, 0x3000, 64, 1),
            end(50),
        ],
    );
    s.end_stream(ConnId(0), ConnClose::Eof);
    s.end_stream(ConnId(1), ConnClose::Eof);
    s.finish();
    let model = analyze(&s, &RecordingMeta::default(), &AnalysisOptions::default());
    let (parent, child) = (&model.processes[0], &model.processes[1]);

    assert_eq!(
        site_with(parent, 1000),
        vec![
            "PyByteArray_Resize",
            "py:Cache.fill@105",
            "_PyFunction_Vectorcall",
            "py:handle@202",
            "py:<module>@1",
            "Py_RunMain",
            "main"
        ]
    );
    let fill = parent
        .sites
        .iter()
        .find(|s| s.outstanding_bytes == 1000)
        .unwrap();
    let headline = fill.headline().unwrap();
    assert_eq!(
        (
            headline.file.as_deref(),
            headline.line,
            headline.module.as_deref()
        ),
        (Some("/srv/app.py"), Some(105), None)
    );
    assert!(fill.frames[0].file.as_deref().unwrap().ends_with("prog.c"));
    // Paired innermost first; the third segment goes to the outer end.
    assert_eq!(
        site_with(parent, 300),
        vec![
            "PyByteArray_Resize",
            "py:Cache.fill@102",
            "_PyFunction_Vectorcall",
            "py:?",
            "Py_RunMain",
            "py:<module>@6"
        ]
    );
    assert_eq!(
        site_with(parent, 77),
        vec![
            "PyByteArray_Resize",
            "py:Cache.fill@102",
            "_PyFunction_Vectorcall",
            "py:handle@202",
            "Py_RunMain",
            "main",
            "py:<module>@3"
        ]
    );
    assert_eq!(
        parent.notes,
        vec![
            "conflicting stack definitions (the first was kept): 1".to_owned(),
            "conflicting Python code definitions (the first was kept): 1".to_owned(),
            "stacks whose Python frames did not pair one to one with the interpreter's native \
             frames (paired innermost first, the rest placed at the outer end): 1"
                .to_owned(),
            "Python code objects named by stacks but never defined (their frames are shown \
             without a name): 1"
                .to_owned(),
        ]
    );

    // The child's inherited blocks keep their Python frames; its own stack resolves both
    // its own code and an inherited one.
    assert_eq!(site_with(child, 1000), site_with(parent, 1000));
    assert_eq!(
        site_with(child, 64),
        vec![
            "PyByteArray_Resize",
            "py:child_work@55",
            "_PyFunction_Vectorcall",
            "py:<module>@3",
            "Py_RunMain",
            "main"
        ]
    );
    // It inherited the mismatched stack too, but not the parent's conflicting definitions.
    assert_eq!(site_with(child, 300), site_with(parent, 300));
    assert_eq!(child.notes, parent.notes[2..]);
}
