//! Python frames end to end: `tests/scenarios/python/main.py` plants leaks in a package of
//! two modules, a class method, a `threading.Thread` worker and a ctypes call into libc's
//! malloc, churns through memory it frees, and has a native thread (from
//! `native_thread.c`) allocate with no Python frame. Under `leakscope run` each leak's site
//! must be attributed to the exact `file:line` of its marker comment (found in the source,
//! never hard-coded) with the exact bytes and blocks the scenario's constants give, the
//! churn site must hold nothing, and the native thread's site must have native frames only.
//!
//! One test per interpreter: `python3` (required), CPython 3.10, 3.12 and 3.13 and Debian's
//! statically linked `/usr/bin/python3.11` where installed (skipped, with a message, where
//! not).

mod common;

use common::*;
use serde::Deserialize;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The JSON report, as far as this test reads it (the shared harness's frames have no
/// `python` field).
#[derive(Debug, Deserialize)]
struct PyReport {
    processes: Vec<PyProcess>,
}

#[derive(Debug, Deserialize)]
struct PyProcess {
    argv: Vec<String>,
    stream: String,
    dropped: Dropped,
    notes: Vec<String>,
    sites: Vec<PySite>,
}

#[derive(Debug, Deserialize)]
struct PySite {
    memory: String,
    outstanding_bytes: u64,
    outstanding_count: u64,
    allocations: u64,
    allocated_bytes: u64,
    frames: Vec<PyFrame>,
}

#[derive(Debug, Deserialize)]
struct PyFrame {
    function: Option<String>,
    file: Option<String>,
    line: Option<u32>,
    module: Option<String>,
    #[serde(default)]
    python: bool,
}

impl PyFrame {
    fn describe(&self) -> String {
        format!(
            "{}{} {}:{} [{}]",
            if self.python { "py " } else { "" },
            self.function.as_deref().unwrap_or("??"),
            self.file.as_deref().unwrap_or("?"),
            self.line.map_or("?".to_owned(), |l| l.to_string()),
            self.module.as_deref().unwrap_or("-")
        )
    }
}

impl PySite {
    /// The innermost Python frame: where the site is attributed.
    fn headline(&self) -> Option<(usize, &PyFrame)> {
        self.frames.iter().enumerate().find(|(_, f)| f.python)
    }

    fn describe(&self) -> String {
        let mut s = format!(
            "{}: {} bytes in {} blocks outstanding, {} allocations of {} bytes\n",
            self.memory,
            self.outstanding_bytes,
            self.outstanding_count,
            self.allocations,
            self.allocated_bytes
        );
        for f in &self.frames {
            s.push_str(&format!("        {}\n", f.describe()));
        }
        s
    }
}

impl PyProcess {
    fn describe(&self) -> String {
        let mut s = format!("{:?} notes {:?}\n", self.argv, self.notes);
        for site in &self.sites {
            s.push_str(&format!("    {}", site.describe()));
        }
        s
    }
}

/// The scenario copied into the work folder (so that Python writes nothing into the
/// source tree, and file names in the report are the copy's).
struct App {
    dir: PathBuf,
    main: PathBuf,
    library: PathBuf,
}

fn copy_scenario(work: &Work) -> App {
    let src = scenario("python");
    let dir = work.join("app");
    std::fs::create_dir_all(dir.join("pkg")).expect("create the app folder");
    for file in ["main.py", "pkg/__init__.py", "pkg/store.py", "pkg/cache.py"] {
        std::fs::copy(src.join(file), dir.join(file))
            .unwrap_or_else(|e| panic!("copy {file}: {e}"));
    }
    let library = compile(
        "gcc",
        work,
        &[&src.join("native_thread.c")],
        "libnative_leak.so",
        &["-O2", "-g"],
        &["-shared", "-fPIC", "-pthread"],
    );
    let dir = dir.canonicalize().expect("canonical app folder");
    App {
        main: dir.join("main.py"),
        dir,
        library,
    }
}

/// The 1-based line of `file` holding the comment `# {marker}`.
fn marker_line(file: &Path, marker: &str) -> u32 {
    let text = std::fs::read_to_string(file).expect("read scenario source");
    let tag = format!("# {marker}");
    let found: Vec<u32> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim_end().ends_with(&tag))
        .map(|(i, _)| i as u32 + 1)
        .collect();
    assert_eq!(found.len(), 1, "marker {marker} in {file:?}");
    found[0]
}

/// `(count, size)` from the scenario's `X_COUNT, X_SIZE = count, size` line.
fn constants(main: &Path, prefix: &str) -> (u64, u64) {
    let text = std::fs::read_to_string(main).expect("read main.py");
    let head = format!("{prefix}_COUNT, {prefix}_SIZE = ");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(&head))
        .unwrap_or_else(|| panic!("no {head} in main.py"));
    let numbers: Vec<u64> = line
        .split(',')
        .map(|n| n.trim().replace('_', "").parse().expect("a number"))
        .collect();
    (numbers[0], numbers[1])
}

fn same_file(a: &str, b: &Path) -> bool {
    Path::new(a)
        .canonicalize()
        .is_ok_and(|a| b.canonicalize().is_ok_and(|b| a == b))
}

/// One planted leak: its marker, the file holding it, the function it is in, and what
/// each block weighs.
struct Leak {
    marker: &'static str,
    file: PathBuf,
    function: &'static str,
    count: u64,
    block: u64,
}

/// Checks one leak: the host sites attributed to its line hold exactly its blocks, no site
/// attributed elsewhere holds blocks of its size, and the interpreter's evaluation-loop
/// frames were all replaced. Returns the attributed site holding the blocks.
fn check_leak<'p>(p: &'p PyProcess, leak: &Leak, full_native: bool) -> &'p PySite {
    let line = marker_line(&leak.file, leak.marker);
    let at_line = |s: &PySite| {
        s.headline().is_some_and(|(_, f)| {
            f.line == Some(line) && f.file.as_deref().is_some_and(|f| same_file(f, &leak.file))
        })
    };
    let of_size = |s: &PySite| {
        s.memory == "host"
            && s.outstanding_count > 0
            && s.outstanding_bytes == s.outstanding_count * leak.block
    };
    let holding: Vec<&PySite> = p.sites.iter().filter(|s| of_size(s)).collect();
    let (bytes, blocks) = holding
        .iter()
        .filter(|s| at_line(s))
        .fold((0, 0), |(b, n), s| {
            (b + s.outstanding_bytes, n + s.outstanding_count)
        });
    assert_eq!(
        (bytes, blocks),
        (leak.count * leak.block, leak.count),
        "{}: the blocks of {} bytes at {}:{line}\n{}",
        leak.marker,
        leak.block,
        leak.file.display(),
        p.describe()
    );
    let elsewhere: Vec<String> = holding
        .iter()
        .filter(|s| !at_line(s))
        .map(|s| s.describe())
        .collect();
    assert!(
        elsewhere.is_empty(),
        "{}: blocks of {} bytes attributed elsewhere:\n{}",
        leak.marker,
        leak.block,
        elsewhere.join("")
    );
    let site = holding
        .iter()
        .copied()
        .filter(|s| at_line(s))
        .max_by_key(|s| s.outstanding_bytes)
        .expect("a site");
    let (_, headline) = site.headline().expect("a Python frame");
    let function = headline.function.as_deref().unwrap_or("");
    assert!(
        function == leak.function || function.ends_with(&format!(".{}", leak.function)),
        "{}: function {function:?}, want {}\n{}",
        leak.marker,
        leak.function,
        site.describe()
    );
    assert!(
        !site.frames.iter().any(|f| f
            .function
            .as_deref()
            .is_some_and(|n| n.starts_with("_PyEval_EvalFrameDefault"))),
        "{}: an evaluation-loop frame was not replaced:\n{}",
        leak.marker,
        site.describe()
    );
    let outermost = site.frames.iter().rposition(|f| f.python).unwrap();
    if full_native {
        assert!(
            outermost + 1 < site.frames.len(),
            "{}: Python frames left at the outer end (not paired):\n{}",
            leak.marker,
            site.describe()
        );
    } else {
        // The native walk ends at the innermost eval loop: the Python frames are the
        // outer end of the stack.
        assert_eq!(
            outermost + 1,
            site.frames.len(),
            "{}: native frames past the innermost eval loop:\n{}",
            leak.marker,
            site.describe()
        );
    }
    site
}

fn check_interpreter(python: &Path, full_native: bool) {
    let version = python_version(python);
    let work = Work::new(&format!("python-frames-{}.{}", version.0, version.1));
    let options: &[&str] = if full_native { &["--full-native"] } else { &[] };
    let app = copy_scenario(&work);
    let args: Vec<&OsStr> = vec![
        OsStr::new("-B"),
        app.main.as_os_str(),
        app.library.as_os_str(),
    ];
    let rec = record_unchanged_with(&work, "rec", options, python, &args);
    assert_code(&rec.output, 0, "leakscope run");
    assert!(
        text(&rec.output.stdout).contains("native thread failed: 0"),
        "{}",
        text(&rec.output.stdout)
    );
    let out = report_output(&rec.dir);
    assert_code(&out, 0, "leakscope report --format json");
    let rep: PyReport = serde_json::from_slice(&out.stdout).expect("the JSON report");
    let p = rep
        .processes
        .iter()
        .find(|p| p.argv.iter().any(|a| a.ends_with("main.py")))
        .unwrap_or_else(|| panic!("no process ran main.py: {rep:?}"));
    assert_eq!(p.stream, "clean", "{}", p.describe());
    assert_eq!(
        (p.dropped.allocs, p.dropped.frees),
        (0, 0),
        "{}",
        p.describe()
    );

    let main = app.main.clone();
    let bytearray = |prefix| {
        let (count, size) = constants(&main, prefix);
        (count, size + 1) // the trailing NUL
    };
    let leak = |marker, file: &str, function, (count, block)| Leak {
        marker,
        file: app.dir.join(file),
        function,
        count,
        block,
    };
    let a = check_leak(
        p,
        &leak("LEAK-A", "pkg/store.py", "remember", bytearray("A")),
        full_native,
    );
    // The caller in the other module is the next Python frame.
    let (i, _) = a.headline().unwrap();
    let caller = a.frames[i + 1..]
        .iter()
        .find(|f| f.python)
        .expect("a caller");
    assert_eq!(
        (caller.function.as_deref(), caller.line),
        (Some("main"), Some(marker_line(&main, "CALL-A"))),
        "{}",
        a.describe()
    );
    check_leak(
        p,
        &leak("LEAK-B", "pkg/cache.py", "add", bytearray("B")),
        full_native,
    );
    let t = check_leak(
        p,
        &leak("LEAK-T", "main.py", "worker", bytearray("T")),
        full_native,
    );
    assert!(
        t.frames
            .iter()
            .any(|f| f.python && f.function.as_deref().is_some_and(|n| n.ends_with("run"))),
        "the worker runs under Thread.run:\n{}",
        t.describe()
    );
    let c = check_leak(
        p,
        &leak("LEAK-C", "main.py", "malloc_blocks", constants(&main, "C")),
        full_native,
    );
    // The native frames that called malloc stay, inside the Python frame.
    let (i, _) = c.headline().unwrap();
    assert!(
        c.frames[..i].iter().any(|f| f
            .function
            .as_deref()
            .is_some_and(|n| n.contains("ffi_call"))),
        "libffi's frames are kept below the Python line:\n{}",
        c.describe()
    );

    // The churn site allocated everything at its line and holds nothing.
    let (count, block) = bytearray("CHURN");
    let churn_line = marker_line(&main, "CHURN");
    let churn: Vec<&PySite> = p
        .sites
        .iter()
        .filter(|s| {
            s.memory == "host"
                && s.allocations > 0
                && s.allocated_bytes == s.allocations * block
                && s.headline()
                    .is_some_and(|(_, f)| f.line == Some(churn_line))
        })
        .collect();
    let allocations: u64 = churn.iter().map(|s| s.allocations).sum();
    let outstanding: u64 = churn.iter().map(|s| s.outstanding_bytes).sum();
    assert_eq!(
        (allocations, outstanding),
        (count, 0),
        "churn at main.py:{churn_line}\n{}",
        p.describe()
    );

    // The native thread: its blocks are one site of native frames only.
    let (count, block) = constants(&main, "NATIVE");
    let native: Vec<&PySite> = p
        .sites
        .iter()
        .filter(|s| s.outstanding_count > 0 && s.outstanding_bytes == s.outstanding_count * block)
        .collect();
    assert_eq!(native.len(), 1, "{}", p.describe());
    let n = native[0];
    assert_eq!(
        (n.outstanding_bytes, n.outstanding_count),
        (count * block, count)
    );
    assert!(!n.frames.iter().any(|f| f.python), "{}", n.describe());
    assert_eq!(
        n.frames.first().and_then(|f| f.function.as_deref()),
        Some("native_leaker"),
        "{}",
        n.describe()
    );

    // The text report leads with the Python line.
    let mut cmd = leakscope_cmd();
    cmd.arg("report").arg(&rec.dir);
    let text_out = run_cmd(&mut cmd);
    assert_code(&text_out, 0, "leakscope report");
    let want = format!(
        "remember  {}:{}  (python)",
        app.dir.join("pkg/store.py").display(),
        marker_line(&app.dir.join("pkg/store.py"), "LEAK-A")
    );
    assert!(
        text(&text_out.stdout).lines().any(|l| l.trim() == want),
        "no line {want:?} in the text report:\n{}",
        text(&text_out.stdout)
    );
}

/// `(major, minor)` of an interpreter.
fn python_version(python: &Path) -> (u32, u32) {
    let out = run_cmd(Command::new(python).args([
        "-c",
        "import sys; print(sys.version_info[0], sys.version_info[1])",
    ]));
    assert!(out.status.success(), "{python:?} does not run");
    let text = text(&out.stdout);
    let mut parts = text
        .split_whitespace()
        .map(|n| n.parse().expect("a number"));
    (parts.next().unwrap(), parts.next().unwrap())
}

/// The real executable of CPython 3.`minor`: `python3.X` on `PATH`, else pyenv's newest
/// 3.X; `None` when neither runs.
fn find_python(minor: u32) -> Option<PathBuf> {
    let real = |cmd: &Path| -> Option<PathBuf> {
        let out = Command::new(cmd)
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .ok()?;
        let path = String::from_utf8(out.stdout).ok()?.trim().to_owned();
        (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
    };
    let name = format!("python3.{minor}");
    if let Some(p) = real(Path::new(&name)) {
        return Some(p);
    }
    let root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pyenv")))?;
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root.join("versions"))
        .ok()?
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("3.{minor}."))
        })
        .map(|e| e.path().join("bin").join(&name))
        .collect();
    versions.sort();
    versions.iter().rev().find_map(|p| real(p))
}

fn optional(minor: u32) {
    match find_python(minor) {
        Some(python) => {
            assert_eq!(python_version(&python), (3, minor), "{python:?}");
            check_interpreter(&python, false);
        }
        None => eprintln!("skipped: no CPython 3.{minor} installed"),
    }
}

#[test]
fn python3_leaks_are_attributed_to_their_lines() {
    check_interpreter(&python(), false);
}

#[test]
fn python3_full_native_stacks_pair_every_eval_loop() {
    check_interpreter(&python(), true);
}

#[test]
fn python_3_10_leaks_are_attributed_to_their_lines() {
    optional(10);
}

#[test]
fn python_3_12_leaks_are_attributed_to_their_lines() {
    optional(12);
}

#[test]
fn python_3_13_leaks_are_attributed_to_their_lines() {
    optional(13);
}

/// Debian's `python3.11`: statically linked, its symbol table stripped (`.dynsym` only).
#[test]
fn debian_static_python_3_11_leaks_are_attributed_to_their_lines() {
    let python = Path::new("/usr/bin/python3.11");
    if python.exists() {
        check_interpreter(python, false);
    } else {
        eprintln!("skipped: no /usr/bin/python3.11");
    }
}
