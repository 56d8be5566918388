//! The shim's Python frames, read straight from the recording's stream files (no report):
//! `tests/scenarios/python_shim/frames.py` allocates at known lines of known functions
//! and writes the interpreter's own view of them (names, files, bytecode lengths,
//! instruction-to-line maps) as ground truth. For every CPython 3.10–3.13 installed
//! (`python3` must be 3.11; others are skipped when absent, Debian's static
//! `/usr/bin/python3.11` included), the stacks of those allocations must name the
//! allocating function innermost, with the right line, the expected eval-loop segments,
//! and code definitions ahead of their first use; a native thread gets no Python frames;
//! daemon threads that allocate through interpreter shutdown change nothing; and
//! `--no-python` records none.

mod common;

use common::*;
use leakscope_protocol::wire::Decoder;
use leakscope_protocol::{Alloc, CodeKey, PyCode, PyFrame, Record, StackDef, StackId};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Allocation sizes of `frames.py` (a bytearray of n bytes mallocs n + 1).
const GROW: u64 = 1_234_567;
const NATIVE: u64 = 777_777;
const LEAF: u64 = 345_679;
const WORKER: u64 = 555_555;
const NATIVE_THREAD: u64 = 424_242;
const RECURSE: u64 = 232_323;
/// Python frames the shim keeps per stack (`shim/src/python/mod.rs`).
const MAX_PY_FRAMES: usize = 128;

/// One interpreter under test.
#[derive(Debug)]
struct Interp {
    exe: PathBuf,
    minor: u8,
    version: String,
}

/// `sys.executable` and version of `cmd`, if it runs.
fn probe(cmd: &Path) -> Option<Interp> {
    let mut c = Command::new(cmd);
    c.args([
        "-c",
        "import sys; print(sys.executable); print(sys.version_info[1]); print(sys.version.split()[0])",
    ]);
    scrub_env(&mut c);
    let out = c.output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = text(&out.stdout);
    let mut lines = text.lines();
    let exe = PathBuf::from(lines.next()?);
    let minor = lines.next()?.trim().parse().ok()?;
    let version = lines.next()?.trim().to_owned();
    Some(Interp {
        exe,
        minor,
        version,
    })
}

/// `python3` (required, 3.11), then every other 3.10–3.13 found: Debian's
/// `/usr/bin/python3.11`, `python3.1x` on PATH, pyenv's versions.
fn interpreters() -> Vec<Interp> {
    let main = probe(&python()).expect("python3 runs");
    assert_eq!(main.minor, 11, "python3 must be 3.11: {main:?}");
    let mut found = vec![main];
    let mut candidates: Vec<PathBuf> = vec![PathBuf::from("/usr/bin/python3.11")];
    for minor in 10..=13 {
        candidates.push(PathBuf::from(format!("python3.{minor}")));
    }
    let pyenv = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".pyenv")));
    if let Some(Ok(dir)) = pyenv.map(|p| std::fs::read_dir(p.join("versions"))) {
        let mut dirs: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        dirs.sort();
        candidates.extend(dirs.into_iter().map(|d| d.join("bin").join("python3")));
    }
    for c in candidates {
        if c.is_absolute() && !c.is_file() {
            continue;
        }
        let Some(i) = probe(&c) else { continue };
        let same =
            |f: &Interp| std::fs::canonicalize(&f.exe).ok() == std::fs::canonicalize(&i.exe).ok();
        if !(10..=13).contains(&i.minor) || found.iter().any(same) {
            continue;
        }
        found.push(i);
    }
    eprintln!(
        "interpreters: {}",
        found
            .iter()
            .map(|i| format!("{} ({})", i.version, i.exe.display()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    found
}

/// One decoded stream.
#[derive(Default)]
struct Stream {
    stacks: HashMap<StackId, StackDef>,
    codes: HashMap<CodeKey, PyCode>,
    allocs: Vec<Alloc>,
    ended: bool,
}

impl Stream {
    fn python(&self, a: &Alloc) -> &[PyFrame] {
        &self.stacks[&a.stack].python
    }

    /// The qualified names of a stack's Python `Code` frames, innermost first.
    fn names(&self, py: &[PyFrame]) -> Vec<&str> {
        py.iter()
            .filter_map(|f| match f {
                PyFrame::Code { code, .. } => Some(self.codes[code].qualname.as_str()),
                PyFrame::Boundary => None,
            })
            .collect()
    }

    fn describe(&self, py: &[PyFrame]) -> String {
        py.iter()
            .map(|f| match f {
                PyFrame::Code { code, instr } => {
                    let c = &self.codes[code];
                    format!("{}@{} ({})", c.qualname, instr, c.filename)
                }
                PyFrame::Boundary => "|".to_owned(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Decodes every stream of a recording, checking as it goes that each code key is
/// defined once per stream and before any stack names it.
fn read_streams(dir: &Path) -> Vec<Stream> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("streams"))
        .unwrap_or_else(|e| panic!("{dir:?} has no streams folder: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "lks"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no stream files in {dir:?}");
    let mut streams = Vec::new();
    for f in files {
        let mut d = Decoder::new(std::fs::File::open(&f).unwrap()).unwrap();
        let mut recs = Vec::new();
        while d
            .next_frame(&mut recs)
            .unwrap_or_else(|e| panic!("{f:?}: {e}"))
        {}
        let mut s = Stream::default();
        for r in recs {
            match r {
                Record::PyCode(c) => {
                    let key = c.key;
                    assert!(
                        s.codes.insert(key, c).is_none(),
                        "{f:?}: code {key:?} defined twice"
                    );
                }
                Record::Stack(st) => {
                    for fr in &st.python {
                        if let PyFrame::Code { code, .. } = fr {
                            assert!(
                                s.codes.contains_key(code),
                                "{f:?}: stack {:?} names {code:?} before its definition",
                                st.id
                            );
                        }
                    }
                    s.stacks.insert(st.id, st);
                }
                Record::Alloc(a) => s.allocs.push(a),
                Record::End(_) => s.ended = true,
                _ => {}
            }
        }
        streams.push(s);
    }
    streams
}

/// What `frames.py` wrote about its code objects.
#[derive(Deserialize, Debug)]
struct Truth {
    minor: u8,
    file: String,
    codes: BTreeMap<String, CodeTruth>,
}

#[derive(Deserialize, Debug)]
struct CodeTruth {
    filename: String,
    first_line: i32,
    units: i32,
    line_starts: Vec<(i32, i32)>,
    alloc_line: Option<i32>,
}

impl CodeTruth {
    /// The line of instruction `instr` (code units), as `dis.findlinestarts` maps them.
    fn line(&self, instr: i32) -> i32 {
        if instr < 0 {
            return self.first_line;
        }
        self.line_starts
            .iter()
            .take_while(|(at, _)| *at <= instr)
            .last()
            .map_or(self.first_line, |&(_, l)| l)
    }
}

/// The shim under test's helper library for `frames.py`.
fn native_lib(work: &Work) -> PathBuf {
    gcc(
        work,
        &[&scenario("python_shim/native.c")],
        "libnative.so",
        &["-shared", "-fPIC", "-pthread"],
    )
}

/// `leakscope run [--no-python] --out DIR -- py frames.py MODE TRUTH LIB`, checked to
/// end as a bare run does.
fn run_frames(
    work: &Work,
    name: &str,
    py: &Interp,
    mode: &str,
    lib: &Path,
    python_frames: bool,
) -> (Recording, PathBuf) {
    let truth = work.join(&format!("{name}.json"));
    let script = scenario("python_shim/frames.py");
    let args: Vec<&OsStr> = vec![
        script.as_os_str(),
        OsStr::new(mode),
        truth.as_os_str(),
        lib.as_os_str(),
    ];
    let bare = bare_run(&py.exe, &args);
    let dir = work.join(name);
    let mut cmd = leakscope_cmd();
    cmd.arg("run");
    if !python_frames {
        cmd.arg("--no-python");
    }
    cmd.arg("--out")
        .arg(&dir)
        .arg("--")
        .arg(&py.exe)
        .args(&args);
    let output = run_cmd(&mut cmd);
    assert_no_panic(&output, "leakscope run");
    let ctx = format!(
        "{} {mode}\n--- stderr\n{}",
        py.version,
        text(&output.stderr)
    );
    assert_eq!(text(&output.stdout), text(&bare.stdout), "{ctx}");
    assert_eq!(
        shell_code(output.status),
        shell_code(bare.status),
        "exit status differs from a bare run: {ctx}"
    );
    (Recording { dir, output }, truth)
}

/// The stream that recorded `frames.py` (the one with the marker allocations).
fn the_stream(streams: Vec<Stream>) -> Stream {
    let mut s: Vec<Stream> = streams
        .into_iter()
        .filter(|s| s.allocs.iter().any(|a| a.size == NATIVE))
        .collect();
    assert_eq!(s.len(), 1, "one stream has the scenario's allocations");
    s.pop().unwrap()
}

/// Allocations of `size` (or `size + 1`, a bytearray's terminator).
fn sized(s: &Stream, size: u64) -> Vec<&Alloc> {
    s.allocs
        .iter()
        .filter(|a| a.size == size || a.size == size + 1)
        .collect()
}

/// Checks the allocations of `size`: at least `count`, each with `chain` as its Python
/// functions (innermost first), `boundaries` segment ends, and the innermost frame at
/// the allocating line of `chain[0]`.
fn check_site(s: &Stream, t: &Truth, size: u64, count: usize, chain: &[&str], boundaries: usize) {
    let allocs = sized(s, size);
    assert!(
        allocs.len() >= count,
        "{} allocations of {size} bytes, expected {count}",
        allocs.len()
    );
    let want = &t.codes[chain[0]];
    for a in allocs {
        let py = s.python(a);
        let what = format!("3.{} {size}-byte allocation: {}", t.minor, s.describe(py));
        assert_eq!(s.names(py), chain, "{what}");
        assert_eq!(
            py.iter().filter(|f| **f == PyFrame::Boundary).count(),
            boundaries,
            "{what}"
        );
        assert_ne!(py[0], PyFrame::Boundary, "{what}");
        let PyFrame::Code { code, instr } = py[0] else {
            unreachable!()
        };
        let c = &s.codes[&code];
        assert_eq!(c.filename, t.file, "{what}");
        assert_eq!(c.filename, want.filename, "{what}");
        assert_eq!(c.first_line, want.first_line, "{what}");
        assert_eq!(c.version.minor, t.minor, "{what}");
        assert!(!c.truncated && !c.line_table.is_empty(), "{what}");
        assert!((0..want.units).contains(&instr), "{what}: instr {instr}");
        assert_eq!(
            Some(want.line(instr)),
            want.alloc_line,
            "{what}: instr {instr}"
        );
    }
}

/// Every `Code` frame of a function `frames.py` described: its instruction index lies in
/// `[-1, bytecode length)`, and its definition matches the interpreter's.
fn check_all_frames(s: &Stream, t: &Truth) -> usize {
    let mut seen = 0;
    for st in s.stacks.values() {
        for f in &st.python {
            let PyFrame::Code { code, instr } = *f else {
                continue;
            };
            let c = &s.codes[&code];
            let Some(want) = t.codes.get(&c.qualname) else {
                continue;
            };
            if c.filename != want.filename {
                continue;
            }
            seen += 1;
            assert_eq!(c.first_line, want.first_line, "{}", c.qualname);
            assert!(
                (-1..want.units).contains(&instr),
                "{}: instr {instr} outside [-1, {})",
                c.qualname,
                want.units
            );
        }
    }
    seen
}

#[test]
fn python_frames_name_the_allocating_function_in_every_version() {
    let work = Work::new("python-shim-frames");
    let lib = native_lib(&work);
    for py in interpreters() {
        let name = format!("frames-{}-{}", py.version, py.exe.to_string_lossy().len());
        let (rec, truth) = run_frames(&work, &name, &py, "frames", &lib, true);
        let t: Truth = serde_json::from_slice(&std::fs::read(&truth).unwrap()).unwrap();
        assert_eq!(t.minor, py.minor);
        let s = the_stream(read_streams(&rec.dir));
        assert!(s.ended, "{}: the stream ended cleanly", py.version);
        // 3.10 runs every Python frame in an eval call of its own; 3.11+ inline Python
        // calls, and a C function (`map`) calling Python starts a new eval loop.
        let per_frame = py.minor == 10;
        let seg = |frames: usize, loops: usize| if per_frame { frames } else { loops };
        let outer = ["frames", "main", "<module>"];
        let chain = |inner: &[&'static str]| -> Vec<&'static str> {
            inner.iter().chain(outer.iter()).copied().collect()
        };
        check_site(&s, &t, GROW, 3, &chain(&["grow"]), seg(4, 1));
        // libc's malloc called through ctypes, with the GIL released.
        check_site(&s, &t, NATIVE, 3, &chain(&["native"]), seg(4, 1));
        check_site(&s, &t, LEAF, 3, &chain(&["leaf", "mapped"]), seg(5, 2));
        for a in sized(&s, LEAF) {
            let frames = s.python(a);
            assert_eq!(
                frames[1],
                PyFrame::Boundary,
                "leaf runs in an eval loop of its own: {}",
                s.describe(frames)
            );
        }
        // 300 calls deep: the innermost frames, up to the shim's limit.
        let deep = sized(&s, RECURSE);
        assert_eq!(deep.len(), 1, "{}", py.version);
        let frames = s.python(deep[0]);
        let names = s.names(frames);
        assert_eq!(names.len(), MAX_PY_FRAMES, "{}", py.version);
        assert!(names.iter().all(|n| *n == "recurse"), "{names:?}");
        let PyFrame::Code { instr, .. } = frames[0] else {
            panic!("{}", s.describe(frames))
        };
        let r = &t.codes["recurse"];
        assert_eq!(Some(r.line(instr)), r.alloc_line, "{}", s.describe(frames));
        // A threading.Thread: its own frames, from the thread's bootstrap.
        let main_tid = sized(&s, GROW)[0].thread;
        let workers = sized(&s, WORKER);
        assert!(workers.len() >= 3);
        for a in &workers {
            assert_ne!(a.thread, main_tid);
            let frames = s.python(a);
            // 3.10 has no qualified names: `run`, not `Thread.run`.
            let names: Vec<&str> = s
                .names(frames)
                .into_iter()
                .map(|n| {
                    if py.minor == 10 {
                        n
                    } else {
                        n.trim_start_matches("Thread.")
                    }
                })
                .collect();
            let what = format!("{} worker thread: {}", py.version, s.describe(frames));
            assert_eq!(names.first(), Some(&"worker"), "{what}");
            assert_eq!(names.last(), Some(&"_bootstrap"), "{what}");
            assert!(names.contains(&"run"), "{what}");
            assert!(!names.contains(&"main"), "{what}");
            let PyFrame::Code { instr, .. } = frames[0] else {
                unreachable!()
            };
            let w = &t.codes["worker"];
            assert_eq!(Some(w.line(instr)), w.alloc_line, "{what}");
        }
        // A native thread without Python state: native frames only.
        let native_thread = sized(&s, NATIVE_THREAD);
        assert_eq!(native_thread.len(), 3, "{}", py.version);
        for a in native_thread {
            assert_ne!(a.thread, main_tid);
            assert!(s.python(a).is_empty(), "{}", s.describe(s.python(a)));
            assert!(!s.stacks[&a.stack].frames.is_empty());
        }
        assert!(check_all_frames(&s, &t) >= 5, "{}", py.version);
    }
}

#[test]
fn no_python_records_native_stacks_only() {
    let work = Work::new("python-shim-off");
    let lib = native_lib(&work);
    let py = probe(&python()).unwrap();
    let (rec, _) = run_frames(&work, "off", &py, "frames", &lib, false);
    let s = the_stream(read_streams(&rec.dir));
    assert!(s.codes.is_empty(), "no code definitions with --no-python");
    assert!(s.stacks.values().all(|st| st.python.is_empty()));
    let grow = sized(&s, GROW);
    assert!(grow.len() >= 3);
    assert!(grow.iter().all(|a| !s.stacks[&a.stack].frames.is_empty()));
}

#[test]
fn daemon_threads_allocating_through_shutdown_change_nothing() {
    let work = Work::new("python-shim-shutdown");
    let lib = native_lib(&work);
    for py in interpreters() {
        for round in 0..3 {
            let name = format!(
                "shutdown-{}-{}-{round}",
                py.version,
                py.exe.to_string_lossy().len()
            );
            let (rec, _) = run_frames(&work, &name, &py, "shutdown", &lib, true);
            assert_code(&rec.output, 3, &format!("{} shutdown", py.version));
            assert_eq!(text(&rec.output.stdout), "shutdown: main thread exits\n");
            let streams = read_streams(&rec.dir);
            assert_eq!(streams.len(), 1);
            let s = &streams[0];
            assert!(s.ended, "{}: the stream ended cleanly", py.version);
            // The daemon threads were walked: 30 recursive frames and more.
            let deep = s
                .allocs
                .iter()
                .filter(|a| a.size == 1000 || a.size == 4096)
                .map(|a| s.names(s.python(a)))
                .filter(|n| n.iter().filter(|q| **q == "deep").count() == 31)
                .count();
            assert!(
                deep > 0,
                "{}: no daemon allocation under deep()",
                py.version
            );
        }
    }
}
