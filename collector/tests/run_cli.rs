//! The `leakscope` binary as a user runs it, without the real shim: a stand-in shim file
//! (an empty file, which the dynamic loader ignores with a message) and, where `python3`
//! exists, a command that plays the shim's part by sending a prepared stream to
//! `LEAKSCOPE_SOCKET`. Exit codes, signals, the recording and `leakscope report`.

use leakscope_protocol::wire::{encode_frame, encode_header};
use leakscope_protocol::{
    Alloc, Api, End, EndReason, Hello, MemoryKind, Origin, Pid, Record, RuntimeAddr, StackDef,
    StackId, ThreadId, Timestamp,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_leakscope");

struct Env {
    dir: tempfile::TempDir,
    shim: PathBuf,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let shim = dir.path().join("fake_shim.so");
        std::fs::write(&shim, b"").unwrap();
        Env { dir, shim }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(EXE);
        c.env("LEAKSCOPE_SHIM", &self.shim)
            .current_dir(self.dir.path());
        c
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs leakscope with `args` and waits for it.
    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts that leakscope's stderr mentions `what`.
fn assert_stderr_has(out: &Output, what: &str) {
    let err = text(&out.stderr);
    assert!(err.contains(what), "{what:?} missing from:\n{err}");
}

/// The JSON report `leakscope run --format json` wrote to stderr, between the loader's
/// complaint about the stand-in shim and leakscope's closing lines.
fn json_report_in_stderr(out: &Output) -> serde_json::Value {
    let err = text(&out.stderr);
    let start = err.find("\n{").map_or(0, |i| i + 1);
    let end = err.rfind("\n}").unwrap() + 2;
    serde_json::from_str(&err[start..end]).unwrap()
}

fn meta(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap()
}

#[test]
fn exit_code_and_recording() {
    let env = Env::new();
    let out = env.run(&["run", "--out", "rec", "--", "sh", "-c", "echo hi; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "hi\n",
        "the program's stdout stays its own"
    );
    let err = text(&out.stderr);
    assert!(err.contains("recording in rec"), "{err}");
    let m = meta(&env.path("rec"));
    assert_eq!(m["exit_status"], 3);
    assert_eq!(m["signal"], serde_json::Value::Null);
    assert_eq!(m["command"][0], "sh");
    assert!(env.path("rec/streams").is_dir());

    // The report again, as JSON on stdout.
    let out = env.run(&["report", "rec", "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["exit_status"], 3);
}

#[test]
fn killed_command_exits_128_plus_signal() {
    let env = Env::new();
    let out = env.run(&["run", "-o", "rec", "--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    let m = meta(&env.path("rec"));
    assert_eq!(m["exit_status"], 137);
    assert_eq!(m["signal"], 9);
}

#[test]
fn command_not_found_is_127_and_leaves_nothing() {
    let env = Env::new();
    let out = env.run(&["run", "-o", "rec", "--", "leakscope-no-such-command"]);
    assert_eq!(out.status.code(), Some(127));
    assert_stderr_has(&out, "leakscope-no-such-command: command not found");
    assert!(!env.path("rec").exists());
}

#[test]
fn refuses_a_non_empty_directory_and_a_missing_shim() {
    let env = Env::new();
    std::fs::create_dir(env.path("rec")).unwrap();
    std::fs::write(env.path("rec/keep"), b"x").unwrap();
    let out = env.run(&["run", "-o", "rec", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    assert_stderr_has(&out, "not empty");
    assert_eq!(std::fs::read(env.path("rec/keep")).unwrap(), b"x");

    let out = env
        .cmd()
        .env("LEAKSCOPE_SHIM", env.path("missing.so"))
        .args(["run", "-o", "rec2", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_stderr_has(&out, "LEAKSCOPE_SHIM");
}

#[test]
fn default_directory_is_named_after_the_command() {
    let env = Env::new();
    let out = env.run(&["run", "--", "true"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dirs: Vec<String> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("leakscope.true."))
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    assert!(dirs[0]["leakscope.true.".len()..].parse::<u32>().is_ok());
}

#[test]
fn sigterm_is_forwarded_and_the_report_still_prints() {
    let env = Env::new();
    let child = env
        .cmd()
        .args(["run", "-o", "rec", "--", "sleep", "30"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the command runs (meta.json is written just before it starts).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !env.path("rec/meta.json").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out: Output = child.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(143), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("recording in rec"));
    assert_eq!(meta(&env.path("rec"))["signal"], 15);
}

fn python3() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("python3"))
            .find(|p| p.is_file())
    })
}

fn stream(pid: u32, bytes_leaked: u64, end: bool) -> Vec<u8> {
    let mut recs = vec![
        Record::Hello(Hello {
            pid: Pid(pid),
            ppid: Pid(1),
            origin: Origin::Exec,
            exe: "/bin/fake".into(),
            argv: vec!["fake".into()],
            start: Timestamp(1),
            start_unix_ns: 1,
            fingerprint: leakscope_protocol::BUILD_FINGERPRINT,
        }),
        Record::Stack(StackDef {
            id: StackId(0),
            frames: vec![RuntimeAddr(0x1234)],
            python: vec![],
        }),
        Record::Alloc(Alloc {
            ts: Timestamp(5),
            thread: ThreadId(pid),
            addr: RuntimeAddr(0x1000),
            size: bytes_leaked,
            kind: MemoryKind::Host,
            api: Api::Malloc,
            stack: StackId(0),
        }),
    ];
    if end {
        recs.push(Record::End(End {
            ts: Timestamp(9),
            reason: EndReason::Exit,
        }));
    }
    let mut out = Vec::new();
    encode_header(&mut out);
    encode_frame(&recs, &mut out).unwrap();
    out
}

/// A command that connects and sends `file`, then (with `linger`) keeps the connection
/// open in a background process for `linger` seconds.
fn sender(file: &Path, linger: u32) -> String {
    format!(
        "import os,socket,sys,time\n\
         s=socket.socket(socket.AF_UNIX)\n\
         s.connect('\\0'+os.environ['LEAKSCOPE_SOCKET'][1:])\n\
         s.sendall(open({file:?},'rb').read())\n\
         if {linger} and os.fork()==0:\n    n=os.open('/dev/null',os.O_RDWR); os.dup2(n,1); os.dup2(n,2)\n    time.sleep({linger}); sys.exit(0)\n\
         s.close() if not {linger} else None\n"
    )
}

#[test]
fn streams_sent_to_the_socket_are_recorded_and_reported() {
    let Some(py) = python3() else {
        eprintln!("no python3: skipped");
        return;
    };
    let env = Env::new();
    let bytes = stream(4242, 777, true);
    std::fs::write(env.path("s.bin"), &bytes).unwrap();
    let out = env
        .cmd()
        .args(["run", "-o", "rec", "--format", "json", "--"])
        .arg(&py)
        .args(["-c", &sender(&env.path("s.bin"), 0)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(env.path("rec/streams/000000.lks")).unwrap(),
        bytes
    );
    let j = json_report_in_stderr(&out);
    assert_eq!(j["processes"][0]["pid"], 4242);
    assert_eq!(j["processes"][0]["stream"], "clean");
    assert_eq!(j["processes"][0]["sites"][0]["outstanding_bytes"], 777);
}

#[test]
fn a_process_still_connected_after_the_grace_period_is_open() {
    let Some(py) = python3() else {
        eprintln!("no python3: skipped");
        return;
    };
    let env = Env::new();
    // A whole frame and then the start of another, never finished: still streaming.
    let mut bytes = stream(4343, 5, false);
    let next = stream(4343, 6, false);
    bytes.extend_from_slice(&next[8..20]);
    std::fs::write(env.path("s.bin"), &bytes).unwrap();
    let started = Instant::now();
    let out = env
        .cmd()
        .args([
            "run", "-o", "rec", "--grace", "0.5", "--format", "json", "--",
        ])
        .arg(&py)
        .args(["-c", &sender(&env.path("s.bin"), 5)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "did not wait for the straggler"
    );
    assert_eq!(meta(&env.path("rec"))["open_streams"][0], 0);
    let rec = std::fs::read(env.path("rec/streams/000000.lks")).unwrap();
    assert_eq!(rec, bytes, "every byte received is recorded");
    let j = json_report_in_stderr(&out);
    assert_eq!(j["processes"][0]["stream"], "open", "{j}");
    // Read back: the unfinished frame is the collector's stop, not damage.
    let out = env.run(&["report", "rec", "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["processes"][0]["stream"], "open", "{j}");
    assert_eq!(j["processes"][0]["sites"][0]["outstanding_bytes"], 5);
}

#[test]
fn help_lists_every_option() {
    let out = Command::new(EXE).args(["run", "--help"]).output().unwrap();
    let help = text(&out.stdout);
    for opt in ["--out", "--format", "--top", "--grace", "COMMAND"] {
        assert!(help.contains(opt), "{opt} missing from:\n{help}");
    }
    let out = Command::new(EXE)
        .args(["report", "--help"])
        .output()
        .unwrap();
    let help = text(&out.stdout);
    for opt in ["DIR", "--format", "--top"] {
        assert!(help.contains(opt), "{opt} missing from:\n{help}");
    }
    let out = Command::new(EXE)
        .args(["report", "/nonexistent/leakscope-rec"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("does not exist"));
    let out = Command::new(EXE)
        .args(["run", "--bogus", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
