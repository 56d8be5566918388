//! Shared harness of the end-to-end tests: builds the `leakscope` binary and the shim once
//! per test process, compiles the scenario programs of `tests/scenarios/`, runs them bare,
//! under `leakscope run` and under valgrind's memcheck, parses the JSON report and
//! valgrind's XML, and compares the two per call stack.
//!
//! Set `LEAKSCOPE_TEST_KEEP=1` to keep every test's work folder (recordings, valgrind
//! XML, compiled scenarios) for a look after the run; their paths are printed. Set
//! `LEAKSCOPE_TEST_NO_BUILD=1` to test the binaries already in the target folder as they
//! are, without building them first.

#![allow(dead_code)]

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Longest any single command of a test may take before the harness kills it and fails
/// the test. A hang guard only: no test asserts anything about how long things take.
pub const HANG_LIMIT: Duration = Duration::from_secs(600);

// ---------------------------------------------------------------------------------------
// Locations and the binaries under test
// ---------------------------------------------------------------------------------------

/// The repository root (the root package's manifest folder).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/scenarios/`.
pub fn scenarios_dir() -> PathBuf {
    repo_root().join("tests").join("scenarios")
}

/// A file of `tests/scenarios/`.
pub fn scenario(name: &str) -> PathBuf {
    scenarios_dir().join(name)
}

/// The binaries under test.
#[derive(Debug)]
pub struct Binaries {
    /// The collector, `target/<profile>/leakscope`.
    pub leakscope: PathBuf,
    /// The shim, `target/<profile>/libleakscope_shim.so`.
    pub shim: PathBuf,
}

/// Builds the collector and the shim (once per test process, in the profile this test was
/// built in) and returns where they are.
pub fn binaries() -> &'static Binaries {
    static BINARIES: OnceLock<Binaries> = OnceLock::new();
    BINARIES.get_or_init(|| {
        let release = !cfg!(debug_assertions);
        let cargo = std::env::var_os("CARGO")
            .or_else(|| option_env!("CARGO").map(OsString::from))
            .unwrap_or_else(|| OsString::from("cargo"));
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(repo_root())
            .args(["build", "-p", "leakscope-shim", "-p", "leakscope"]);
        if release {
            cmd.arg("--release");
        }
        if std::env::var_os("LEAKSCOPE_TEST_NO_BUILD").is_none_or(|v| v != "1") {
            let out = cmd
                .output()
                .unwrap_or_else(|e| panic!("cannot run {cargo:?} build: {e}"));
            assert!(
                out.status.success(),
                "building the shim and the collector failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map(|p| {
                if p.is_absolute() {
                    p
                } else {
                    repo_root().join(p)
                }
            })
            .unwrap_or_else(|| repo_root().join("target"));
        let profile = target.join(if release { "release" } else { "debug" });
        let bins = Binaries {
            leakscope: profile.join("leakscope"),
            shim: profile.join("libleakscope_shim.so"),
        };
        assert!(
            bins.leakscope.is_file(),
            "{:?} missing after the build",
            bins.leakscope
        );
        assert!(
            bins.shim.is_file(),
            "{:?} missing after the build",
            bins.shim
        );
        bins
    })
}

// ---------------------------------------------------------------------------------------
// Work folders and running commands
// ---------------------------------------------------------------------------------------

/// A test's scratch folder, removed at the end unless `LEAKSCOPE_TEST_KEEP=1`.
pub struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    /// A new scratch folder named after the test.
    pub fn new(test: &str) -> Work {
        let mut dir = tempfile::Builder::new()
            .prefix(&format!("leakscope-e2e-{test}-"))
            .tempdir()
            .expect("cannot create a temporary folder");
        if std::env::var_os("LEAKSCOPE_TEST_KEEP").is_some_and(|v| v == "1") {
            dir.disable_cleanup(true);
            eprintln!("[{test}] work folder kept: {}", dir.path().display());
        }
        Work { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the folder.
    pub fn join(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Removes every variable through which leakscope (or an outer leakscope) could reach a
/// command, so that a test sees only what it sets itself.
pub fn scrub_env(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars_os() {
        let k_str = k.to_string_lossy();
        if k_str.starts_with("LEAKSCOPE_") || k_str == "LD_PRELOAD" {
            cmd.env_remove(&k);
        }
    }
    cmd
}

/// Runs `cmd` to completion, collecting its output, with stdin closed. The command gets a
/// process group of its own, which the harness kills whole if it outlives [`HANG_LIMIT`].
pub fn run_cmd(cmd: &mut Command) -> Output {
    let child = spawn_piped(cmd);
    wait_output(child, &format!("{cmd:?}"))
}

/// Spawns `cmd` with stdin closed, stdout and stderr piped, in its own process group.
pub fn spawn_piped(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

/// Waits for a child spawned by [`spawn_piped`], reading its output as it comes.
pub fn wait_output(mut child: Child, what: &str) -> Output {
    let mut out_pipe = child.stdout.take().expect("stdout piped");
    let mut err_pipe = child.stderr.take().expect("stderr piped");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let status = wait_with_deadline(&mut child, what);
    Output {
        status,
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
    }
}

/// Waits for `child`, killing its process group and failing the test past [`HANG_LIMIT`].
pub fn wait_with_deadline(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + HANG_LIMIT;
    loop {
        if let Some(status) = child.try_wait().expect("waitpid") {
            return status;
        }
        if Instant::now() > deadline {
            // SAFETY: kill(2) on the process group this harness created for the child.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            panic!("{what} did not finish within {HANG_LIMIT:?}; killed it");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `cond` until it holds, failing the test with `what` if it does not within
/// [`HANG_LIMIT`]. For waiting on another process's progress, never for measuring time.
pub fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    wait_until_for(what, HANG_LIMIT, cond)
}

/// [`wait_until`] with a shorter give-up point.
pub fn wait_until_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The exit code a shell would show: the code, or 128 + the signal.
pub fn shell_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .expect("a process ends with a code or a signal")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Fails with both outputs when a command did not exit with `code`.
pub fn assert_code(out: &Output, code: i32, what: &str) {
    assert_eq!(
        shell_code(out.status),
        code,
        "{what}: unexpected exit status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Fails if the output shows a Rust panic (the message, or exit code 101, or an abort
/// from `panic = "abort"`).
pub fn assert_no_panic(out: &Output, what: &str) {
    let stderr = text(&out.stderr);
    assert!(
        !stderr.contains("panicked at") && !stderr.contains("RUST_BACKTRACE"),
        "{what} panicked:\n{stderr}"
    );
    assert_ne!(
        out.status.code(),
        Some(101),
        "{what} exited 101 (panic):\n{stderr}"
    );
    assert_ne!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{what} aborted:\n{stderr}"
    );
    assert_ne!(
        out.status.signal(),
        Some(libc::SIGSEGV),
        "{what} crashed:\n{stderr}"
    );
}

// ---------------------------------------------------------------------------------------
// Compiling scenarios
// ---------------------------------------------------------------------------------------

/// Compiles C sources into `work/<out>` with gcc at -O2 -g (no frame pointers: the shim
/// must unwind through eh_frame), plus `extra` flags.
pub fn gcc(work: &Work, sources: &[&Path], out: &str, extra: &[&str]) -> PathBuf {
    compile("gcc", work, sources, out, &["-O2", "-g"], extra)
}

/// Like [`gcc`] for C++ with g++.
pub fn gxx(work: &Work, sources: &[&Path], out: &str, extra: &[&str]) -> PathBuf {
    compile("g++", work, sources, out, &["-O2", "-g"], extra)
}

/// Compiles with `compiler`, `opt` flags (optimization and debug info) and `extra` flags.
pub fn compile(
    compiler: &str,
    work: &Work,
    sources: &[&Path],
    out: &str,
    opt: &[&str],
    extra: &[&str],
) -> PathBuf {
    let exe = work.join(out);
    let mut cmd = Command::new(compiler);
    cmd.args(opt).arg("-Wall").arg("-o").arg(&exe);
    cmd.args(sources).args(extra);
    let o = run_cmd(&mut cmd);
    assert!(
        o.status.success(),
        "{compiler} failed for {sources:?}:\n{}",
        text(&o.stderr)
    );
    exe
}

/// The real Python interpreter (`sys.executable` of `python3` on PATH), so that runs do
/// not go through wrapper scripts such as pyenv's shims.
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let mut cmd = Command::new("python3");
            cmd.args(["-c", "import sys; print(sys.executable)"]);
            let out = run_cmd(&mut cmd);
            assert!(
                out.status.success(),
                "python3 is needed: {}",
                text(&out.stderr)
            );
            PathBuf::from(text(&out.stdout).trim())
        })
        .clone()
}

// ---------------------------------------------------------------------------------------
// Running under leakscope
// ---------------------------------------------------------------------------------------

/// Runs `prog args` without any instrumentation.
pub fn bare_run(prog: impl AsRef<OsStr>, args: &[&OsStr]) -> Output {
    let mut cmd = Command::new(prog);
    cmd.args(args);
    scrub_env(&mut cmd);
    run_cmd(&mut cmd)
}

/// A finished `leakscope run`.
pub struct Recording {
    /// The recording folder (`--out`).
    pub dir: PathBuf,
    /// What `leakscope run` printed and how it exited.
    pub output: Output,
}

/// `leakscope run --out <work>/<name> -- prog args`.
pub fn record(work: &Work, name: &str, prog: impl AsRef<OsStr>, args: &[&OsStr]) -> Recording {
    let dir = work.join(name);
    let mut cmd = leakscope_cmd();
    cmd.arg("run")
        .arg("--out")
        .arg(&dir)
        .arg("--")
        .arg(prog)
        .args(args);
    let output = run_cmd(&mut cmd);
    assert_no_panic(&output, "leakscope run");
    Recording { dir, output }
}

/// A `leakscope` command with a scrubbed environment.
pub fn leakscope_cmd() -> Command {
    let mut cmd = Command::new(&binaries().leakscope);
    scrub_env(&mut cmd);
    cmd
}

/// Runs the program bare and under `leakscope run`, checks that stdout and the exit status
/// are the same both ways, and returns the recording.
pub fn record_unchanged(
    work: &Work,
    name: &str,
    prog: impl AsRef<OsStr>,
    args: &[&OsStr],
) -> Recording {
    let prog = prog.as_ref();
    let bare = bare_run(prog, args);
    let rec = record(work, name, prog, args);
    assert_eq!(
        text(&rec.output.stdout),
        text(&bare.stdout),
        "stdout under leakscope differs from a bare run\n--- leakscope stderr\n{}",
        text(&rec.output.stderr)
    );
    assert_eq!(
        shell_code(rec.output.status),
        shell_code(bare.status),
        "exit status under leakscope differs from a bare run\n--- leakscope stderr\n{}",
        text(&rec.output.stderr)
    );
    rec
}

/// `leakscope report <dir> --format json`, raw.
pub fn report_output(dir: &Path) -> Output {
    let mut cmd = leakscope_cmd();
    cmd.arg("report").arg(dir).args(["--format", "json"]);
    let out = run_cmd(&mut cmd);
    assert_no_panic(&out, "leakscope report");
    out
}

/// `leakscope report <dir> --format json`, which must succeed, parsed.
pub fn report(dir: &Path) -> Report {
    let out = report_output(dir);
    assert_code(&out, 0, "leakscope report");
    parse_report(&out.stdout)
}

pub fn parse_report(json: &[u8]) -> Report {
    serde_json::from_slice(json).unwrap_or_else(|e| {
        panic!(
            "report is not the JSON of the contract: {e}\n{}",
            text(&json[..json.len().min(4000)])
        )
    })
}

// ---------------------------------------------------------------------------------------
// The JSON report (the contract's fields this suite reads)
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
pub struct Report {
    pub processes: Vec<Process>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    pub command: serde_json::Value,
    pub argv: Vec<String>,
    /// "exec" or "fork".
    pub origin: String,
    pub parent: Option<u32>,
    /// "clean", "exec", "cut_off", "open" or "damaged".
    pub stream: String,
    pub dropped: Dropped,
    pub unknown_frees: u64,
    pub totals: serde_json::Value,
    pub sites: Vec<Site>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct Dropped {
    pub allocs: u64,
    pub alloc_bytes: u64,
    pub frees: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Site {
    pub memory: String,
    pub pool: String,
    pub outstanding_bytes: u64,
    pub outstanding_count: u64,
    pub allocations: u64,
    pub allocated_bytes: u64,
    pub peak_bytes: u64,
    pub temporary: serde_json::Value,
    pub frames: Vec<Frame>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Frame {
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub module: Option<String>,
    pub address: serde_json::Value,
    #[serde(default)]
    pub inlined: bool,
}

impl Frame {
    /// The source file's base name, if known.
    pub fn file_name(&self) -> Option<&str> {
        self.file.as_deref().map(base_name)
    }

    /// The function name without a C++ parameter list.
    pub fn function_name(&self) -> Option<&str> {
        self.function.as_deref().map(strip_params)
    }

    pub fn describe(&self) -> String {
        format!(
            "{}{} ({}:{}) [{}]",
            self.function.as_deref().unwrap_or("??"),
            if self.inlined { " [inlined]" } else { "" },
            self.file.as_deref().unwrap_or("?"),
            self.line.map_or("?".to_owned(), |l| l.to_string()),
            self.module.as_deref().unwrap_or("?")
        )
    }
}

impl Site {
    /// Whether any frame's function name contains `needle`.
    pub fn mentions(&self, needle: &str) -> bool {
        self.frames
            .iter()
            .any(|f| f.function.as_deref().is_some_and(|n| n.contains(needle)))
    }

    /// Whether any frame lies in a source file of base name `file`.
    pub fn in_file(&self, file: &str) -> bool {
        self.frames.iter().any(|f| f.file_name() == Some(file))
    }

    /// The innermost frame's function, without parameters.
    pub fn innermost_function(&self) -> Option<&str> {
        self.frames.first().and_then(Frame::function_name)
    }

    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} / {}: {} bytes in {} blocks outstanding ({} allocations)\n",
            self.memory,
            self.pool,
            self.outstanding_bytes,
            self.outstanding_count,
            self.allocations
        );
        for f in &self.frames {
            let _ = writeln!(s, "      {}", f.describe());
        }
        s
    }
}

impl Process {
    /// The base name of argv[0].
    pub fn program(&self) -> &str {
        self.argv.first().map(|a| base_name(a)).unwrap_or("")
    }

    pub fn describe(&self) -> String {
        let mut s = format!(
            "pid {} ppid {} origin {} parent {:?} stream {} argv {:?} dropped {:?} unknown_frees {}\n",
            self.pid,
            self.ppid,
            self.origin,
            self.parent,
            self.stream,
            self.argv,
            self.dropped,
            self.unknown_frees
        );
        for site in &self.sites {
            let _ = write!(s, "    {}", site.describe());
        }
        s
    }

    /// Fails unless the stream ended cleanly and nothing was dropped.
    pub fn assert_complete(&self) {
        assert_eq!(
            self.stream,
            "clean",
            "stream of {:?} did not end cleanly:\n{}",
            self.argv,
            self.describe()
        );
        assert_eq!(
            self.dropped,
            Dropped {
                allocs: 0,
                alloc_bytes: 0,
                frees: 0
            },
            "the shim dropped events of {:?}",
            self.argv
        );
    }

    /// Fails if any frame of any site lies in the shim: the contract removes them all.
    pub fn assert_no_shim_frames(&self) {
        for site in &self.sites {
            assert!(
                !site.frames.iter().any(|f| f
                    .module
                    .as_deref()
                    .is_some_and(|m| base_name(m) == "libleakscope_shim.so")),
                "a site of {:?} keeps a frame of the shim:\n    {}",
                self.argv,
                site.describe()
            );
        }
    }

    /// Sum of outstanding (bytes, blocks) over the sites that satisfy `pred`.
    pub fn outstanding_where(&self, pred: impl Fn(&Site) -> bool) -> (u64, u64) {
        self.sites
            .iter()
            .filter(|s| pred(s))
            .fold((0, 0), |(b, n), s| {
                (b + s.outstanding_bytes, n + s.outstanding_count)
            })
    }
}

impl Report {
    /// The processes whose argv[0] has base name `program`.
    pub fn by_program(&self, program: &str) -> Vec<&Process> {
        self.processes
            .iter()
            .filter(|p| p.program() == program)
            .collect()
    }

    /// The one process with `origin` whose argv[0] has base name `program`.
    pub fn one(&self, program: &str, origin: &str) -> &Process {
        let found: Vec<_> = self
            .by_program(program)
            .into_iter()
            .filter(|p| p.origin == origin)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected one {origin} process of {program}, report has:\n{}",
            self.describe()
        );
        found[0]
    }

    pub fn describe(&self) -> String {
        self.processes.iter().map(Process::describe).collect()
    }
}

pub fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `foo(int, char*)` -> `foo`; names without a parameter list are returned whole.
pub fn strip_params(name: &str) -> &str {
    match name.find('(') {
        Some(i) if i > 0 => &name[..i],
        _ => name,
    }
}

// ---------------------------------------------------------------------------------------
// valgrind
// ---------------------------------------------------------------------------------------

/// One process's leak check, from valgrind's XML.
#[derive(Debug, Clone)]
pub struct VgProcess {
    pub pid: u32,
    pub ppid: u32,
    /// The client's argv[0] and arguments.
    pub argv: Vec<String>,
    pub leaks: Vec<VgLeak>,
}

/// One loss record.
#[derive(Debug, Clone)]
pub struct VgLeak {
    /// `Leak_DefinitelyLost`, `Leak_IndirectlyLost`, `Leak_PossiblyLost`,
    /// `Leak_StillReachable`.
    pub kind: String,
    /// Bytes of the record's own blocks. For a definitely or possibly lost record,
    /// `<leakedbytes>` also counts the blocks only it points to ("N (D direct, I indirect)
    /// bytes"), which valgrind reports again as indirectly lost records; this is D.
    pub bytes: u64,
    pub blocks: u64,
    pub frames: Vec<VgFrame>,
}

#[derive(Debug, Clone)]
pub struct VgFrame {
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub obj: Option<String>,
}

impl VgProcess {
    pub fn program(&self) -> &str {
        self.argv.first().map(|a| base_name(a)).unwrap_or("")
    }

    pub fn describe(&self) -> String {
        let mut s = format!(
            "valgrind pid {} ppid {} argv {:?}\n",
            self.pid, self.ppid, self.argv
        );
        for l in &self.leaks {
            let _ = writeln!(
                s,
                "    {}: {} bytes in {} blocks",
                l.kind, l.bytes, l.blocks
            );
            for f in &l.frames {
                let _ = writeln!(
                    s,
                    "      {} ({}:{}) [{}]",
                    f.function.as_deref().unwrap_or("??"),
                    f.file.as_deref().unwrap_or("?"),
                    f.line.map_or("?".to_owned(), |l| l.to_string()),
                    f.obj.as_deref().unwrap_or("?")
                );
            }
        }
        s
    }
}

/// Runs `prog args` under memcheck, following forks and execs, and returns one leak check
/// per process that ran a leak check. Also checks that stdout and the exit status are
/// those of a bare run.
///
/// Options beyond the usual leak-check set:
/// - `--run-libc-freeres=no`, `--run-cxx-freeres=no`: by default valgrind makes glibc and
///   libstdc++ free their internal memory at exit (cached thread stacks with their TLS
///   blocks, stdio buffers), which a real run never does; leakscope sees the real run.
/// - `--default-suppressions=no`: suppressed leaks are left out of the XML; we want all.
/// - `--keep-debuginfo=yes`: stacks through a `dlclose`d library stay symbolized.
pub fn valgrind(work: &Work, tag: &str, prog: &Path, args: &[&OsStr]) -> Vec<VgProcess> {
    let dir = work.join(&format!("valgrind-{tag}"));
    std::fs::create_dir_all(&dir).expect("valgrind output folder");
    let mut cmd = Command::new("valgrind");
    cmd.arg("--tool=memcheck")
        .arg("--leak-check=full")
        .arg("--show-leak-kinds=all")
        .arg("--num-callers=64")
        .arg("--error-limit=no")
        .arg("--xml=yes")
        .arg(format!("--xml-file={}/vg.%p.xml", dir.display()))
        .arg("--child-silent-after-fork=no")
        .arg("--trace-children=yes")
        .arg("--run-libc-freeres=no")
        .arg("--run-cxx-freeres=no")
        .arg("--default-suppressions=no")
        .arg("--keep-debuginfo=yes")
        .arg(prog)
        .args(args);
    scrub_env(&mut cmd);
    let out = run_cmd(&mut cmd);
    let bare = bare_run(prog, args);
    assert_eq!(
        text(&out.stdout),
        text(&bare.stdout),
        "stdout under valgrind differs from a bare run\n--- stderr\n{}",
        text(&out.stderr)
    );
    assert_eq!(
        shell_code(out.status),
        shell_code(bare.status),
        "exit status under valgrind differs from a bare run\n--- stderr\n{}",
        text(&out.stderr)
    );
    let mut procs = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("valgrind output folder")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let xml = std::fs::read_to_string(&path).expect("valgrind XML");
        if let Some(p) = parse_valgrind_xml(&xml, &path) {
            procs.push(p);
        }
    }
    assert!(
        !procs.is_empty(),
        "valgrind wrote no leak check into {dir:?}"
    );
    procs
}

/// Parses one valgrind XML file. Returns `None` for a process that never reached its
/// leak check (one that exec'd: its file holds only the preamble).
pub fn parse_valgrind_xml(xml: &str, path: &Path) -> Option<VgProcess> {
    let doc = roxmltree::Document::parse(xml)
        .unwrap_or_else(|e| panic!("valgrind XML {path:?} does not parse: {e}"));
    let root = doc.root_element();
    let child_text = |node: roxmltree::Node, name: &str| -> Option<String> {
        node.children()
            .find(|c| c.has_tag_name(name))
            .and_then(|c| c.text())
            .map(str::to_owned)
    };
    let pid: u32 = child_text(root, "pid")?.trim().parse().ok()?;
    let ppid: u32 = child_text(root, "ppid")
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    let mut argv = Vec::new();
    if let Some(args) = root.children().find(|c| c.has_tag_name("args")) {
        if let Some(a) = args.children().find(|c| c.has_tag_name("argv")) {
            for c in a.children().filter(|c| c.is_element()) {
                argv.push(c.text().unwrap_or("").to_owned());
            }
        }
    }
    // A file whose process ran its leak check has the closing status "FINISHED".
    let finished = root
        .children()
        .filter(|c| c.has_tag_name("status"))
        .any(|s| child_text(s, "state").as_deref() == Some("FINISHED"));
    if !finished {
        return None;
    }
    let mut leaks = Vec::new();
    for err in root.children().filter(|c| c.has_tag_name("error")) {
        let kind = child_text(err, "kind").unwrap_or_default();
        if !kind.starts_with("Leak_") {
            continue;
        }
        let xwhat = err
            .children()
            .find(|c| c.has_tag_name("xwhat"))
            .expect("a leak error has <xwhat>");
        let leaked: u64 = child_text(xwhat, "leakedbytes")
            .and_then(|t| t.trim().parse().ok())
            .expect("<leakedbytes>");
        let blocks: u64 = child_text(xwhat, "leakedblocks")
            .and_then(|t| t.trim().parse().ok())
            .expect("<leakedblocks>");
        let what = child_text(xwhat, "text").unwrap_or_default();
        let bytes = direct_bytes(&what).unwrap_or(leaked);
        let stack = err
            .children()
            .find(|c| c.has_tag_name("stack"))
            .expect("a leak error has <stack>");
        let frames = stack
            .children()
            .filter(|c| c.has_tag_name("frame"))
            .map(|f| VgFrame {
                function: child_text(f, "fn"),
                file: child_text(f, "file"),
                line: child_text(f, "line").and_then(|l| l.trim().parse().ok()),
                obj: child_text(f, "obj"),
            })
            .collect();
        leaks.push(VgLeak {
            kind,
            bytes,
            blocks,
            frames,
        });
    }
    Some(VgProcess {
        pid,
        ppid,
        argv,
        leaks,
    })
}

/// The `D` of "N (D direct, I indirect) bytes in ..." (numbers may have thousands
/// separators), or `None` when the text has no such split.
fn direct_bytes(what: &str) -> Option<u64> {
    let open = what.find('(')?;
    let rest = &what[open + 1..];
    let end = rest.find(" direct")?;
    rest[..end].replace(',', "").trim().parse().ok()
}

// ---------------------------------------------------------------------------------------
// Comparing a process's report with valgrind
// ---------------------------------------------------------------------------------------

/// A frame of the scenario's own code.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Loc {
    pub function: String,
    pub file: String,
    pub line: u32,
}

impl std::fmt::Display for Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}:{}", self.function, self.file, self.line)
    }
}

/// What the comparison groups by: the scenario frames of a stack, innermost first, and
/// whether the code that called the allocator is scenario code (`direct`) or a library
/// the scenario called (glibc's `pthread_create`, libstdc++'s vector growth, ...).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub direct: bool,
    pub frames: Vec<Loc>,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let frames: Vec<String> = self.frames.iter().map(Loc::to_string).collect();
        write!(
            f,
            "{}[{}]",
            if self.direct { "" } else { "(via library) " },
            frames.join(" < ")
        )
    }
}

/// Bytes and blocks outstanding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub bytes: u64,
    pub blocks: u64,
}

fn own_loc(
    function: Option<&str>,
    file: Option<&str>,
    line: Option<u32>,
    own: &[&str],
) -> Option<Loc> {
    let file = base_name(file?);
    if !own.contains(&file) {
        return None;
    }
    Some(Loc {
        function: strip_params(function.unwrap_or("??")).to_owned(),
        file: file.to_owned(),
        line: line.unwrap_or(0),
    })
}

/// Our host-heap sites, summed per [`Key`]; sites without any scenario frame are left out.
pub fn ours_by_key(process: &Process, own: &[&str]) -> BTreeMap<Key, Tally> {
    let mut map: BTreeMap<Key, Tally> = BTreeMap::new();
    for site in process.sites.iter().filter(|s| s.memory == "host") {
        if site.outstanding_count == 0 {
            continue;
        }
        let frames: Vec<Loc> = site
            .frames
            .iter()
            .filter_map(|f| own_loc(f.function.as_deref(), f.file.as_deref(), f.line, own))
            .collect();
        if frames.is_empty() {
            continue;
        }
        let direct = site
            .frames
            .first()
            .and_then(Frame::file_name)
            .is_some_and(|f| own.contains(&f));
        let t = map.entry(Key { direct, frames }).or_default();
        t.bytes += site.outstanding_bytes;
        t.blocks += site.outstanding_count;
    }
    map
}

/// valgrind's loss records (every kind), summed per [`Key`]. valgrind's own allocator
/// replacements (the frames in its `vgpreload_*` library) are dropped from the innermost
/// end, as leakscope drops the allocator's frames.
pub fn valgrind_by_key(process: &VgProcess, own: &[&str]) -> BTreeMap<Key, Tally> {
    let mut map: BTreeMap<Key, Tally> = BTreeMap::new();
    for leak in &process.leaks {
        let skip = leak
            .frames
            .iter()
            .take_while(|f| f.obj.as_deref().is_some_and(|o| o.contains("vgpreload")))
            .count();
        let stack = &leak.frames[skip..];
        let frames: Vec<Loc> = stack
            .iter()
            .filter_map(|f| own_loc(f.function.as_deref(), f.file.as_deref(), f.line, own))
            .collect();
        if frames.is_empty() {
            continue;
        }
        let direct = stack
            .first()
            .and_then(|f| f.file.as_deref())
            .is_some_and(|f| own.contains(&base_name(f)));
        let t = map.entry(Key { direct, frames }).or_default();
        t.bytes += leak.bytes;
        t.blocks += leak.blocks;
    }
    map
}

/// How to compare keys whose allocation was made inside a library (not `direct`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibraryKeys {
    /// Bytes and blocks must match, like direct keys.
    Exact,
    /// Blocks must match; bytes may differ (a library's internal block sizes can depend
    /// on which libraries are loaded, and valgrind preloads two of its own).
    BlocksOnly,
}

/// Compares one process's report with valgrind's leak check for the same program, key by
/// key, over the keys on either side except those `skip` accepts. Panics with a table of
/// every key when anything differs.
pub fn assert_matches_valgrind(
    ours: &Process,
    vg: &VgProcess,
    own: &[&str],
    library: LibraryKeys,
    skip: impl Fn(&Key) -> bool,
) {
    ours.assert_no_shim_frames();
    let a = ours_by_key(ours, own);
    let b = valgrind_by_key(vg, own);
    let keys: BTreeSet<&Key> = a.keys().chain(b.keys()).filter(|k| !skip(k)).collect();
    let mut table = String::new();
    let mut bad = 0;
    for k in &keys {
        let x = a.get(k).copied().unwrap_or_default();
        let y = b.get(k).copied().unwrap_or_default();
        let same = if k.direct || library == LibraryKeys::Exact {
            x == y
        } else {
            x.blocks == y.blocks
        };
        if !same {
            bad += 1;
        }
        let _ = writeln!(
            table,
            "{} leakscope {:>8} B {:>5} blk | valgrind {:>8} B {:>5} blk  {}",
            if same { "  " } else { "!!" },
            x.bytes,
            x.blocks,
            y.bytes,
            y.blocks,
            k
        );
    }
    assert!(
        !keys.is_empty(),
        "no scenario frames on either side\n--- ours\n{}\n--- valgrind\n{}",
        ours.describe(),
        vg.describe()
    );
    assert!(
        bad == 0,
        "{bad} of {} keys differ between leakscope and valgrind for {:?}:\n{table}\n--- leakscope\n{}\n--- valgrind\n{}",
        keys.len(),
        ours.argv,
        ours.describe(),
        vg.describe()
    );
}

/// The valgrind process whose argv[0] has base name `program` and whose parent is (or is
/// not) another traced process.
pub fn vg_one<'a>(procs: &'a [VgProcess], program: &str, child: bool) -> &'a VgProcess {
    let pids: BTreeSet<u32> = procs.iter().map(|p| p.pid).collect();
    let found: Vec<_> = procs
        .iter()
        .filter(|p| p.program() == program && pids.contains(&p.ppid) == child)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {} valgrind process of {program}, got:\n{}",
        if child { "child" } else { "top-level" },
        procs.iter().map(VgProcess::describe).collect::<String>()
    );
    found[0]
}
