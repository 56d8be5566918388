//! Shared support of the shim's tests: building the shim once, compiling the C test
//! programs, running them preloaded against an in-test listener (the `Sink`), and decoding
//! and inspecting the streams it receives.

use leakscope_protocol::wire::Decoder;
use leakscope_protocol::{Alloc, Hello, MemoryKind, Pid, Record, StackId, ThreadId};
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The shim under test and the protocol fingerprint it was built with.
pub struct BuiltShim {
    /// A private copy of the library (another build into the shared target directory
    /// cannot replace it while the tests run).
    pub so: PathBuf,
    /// `BUILD_FINGERPRINT` as compiled into this shim.
    pub fingerprint: u64,
}

/// Builds the shim: `cargo test` does not build a `cdylib` for integration tests, so the
/// first call runs `cargo build` for it, in the profile and target directory of this test
/// binary (cargo holds its build lock only while compiling, not while tests run). Where
/// the library landed and the fingerprint compiled into it come from cargo's own messages:
/// no assumption about the layout, and no false alarm when the protocol's sources changed
/// between compiling this test and running it (a long `cargo test` from the workspace
/// root, while someone edits): the shim is then newer than this binary's own
/// `BUILD_FINGERPRINT`, yet it is the shim the current sources make.
pub fn built() -> &'static BuiltShim {
    static BUILT: std::sync::OnceLock<BuiltShim> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let exe = std::env::current_exe().expect("test binary path");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>/deps/<test>");
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args([
                "build",
                "--quiet",
                "-p",
                "leakscope-shim",
                "--message-format=json",
            ])
            .arg("--target-dir")
            .arg(dir.parent().expect("target dir"))
            .stderr(Stdio::inherit());
        match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => {}
            Some("release") => {
                cargo.arg("--release");
            }
            Some(custom) => {
                cargo.args(["--profile", custom]);
            }
        }
        let out = cargo.output().expect("cargo runs");
        assert!(out.status.success(), "building the shim failed");
        let mut so = None;
        let mut fingerprint = None;
        for line in out.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(m) = serde_json::from_slice::<serde_json::Value>(line) else {
                continue;
            };
            let package = m["package_id"].as_str().unwrap_or("");
            match m["reason"].as_str() {
                Some("compiler-artifact") if m["target"]["name"] == "leakscope_shim" => {
                    so = m["filenames"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|f| f.as_str())
                        .find(|f| f.ends_with(".so"))
                        .map(PathBuf::from);
                }
                Some("build-script-executed") if package.contains("leakscope-protocol") => {
                    let out_dir = m["out_dir"].as_str().expect("out_dir");
                    let text = std::fs::read_to_string(Path::new(out_dir).join("fingerprint.rs"))
                        .expect("the protocol's fingerprint.rs");
                    let hex = text.trim().trim_start_matches("0x");
                    fingerprint = Some(u64::from_str_radix(hex, 16).expect("a hex fingerprint"));
                }
                _ => {}
            }
        }
        let so = so.expect("cargo names the shim library it built");
        let fingerprint = fingerprint.expect("cargo reports the protocol's build script");
        if fingerprint != leakscope_protocol::BUILD_FINGERPRINT {
            eprintln!(
                "note: the protocol's sources changed since this test was compiled; \
                 testing the shim they build now"
            );
        }
        let copy = scratch_dir().join("libleakscope_shim.so");
        std::fs::copy(&so, &copy)
            .unwrap_or_else(|e| panic!("copying {} failed: {e}", so.display()));
        BuiltShim {
            so: copy,
            fingerprint,
        }
    })
}

/// The shim library to preload.
pub fn shim() -> PathBuf {
    built().so.clone()
}

/// How long a test program may run before it counts as hung.
pub const HANG_LIMIT: Duration = Duration::from_secs(60);

/// Runs `cmd` to completion with its output captured, or kills it and fails after `limit`.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("program starts");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for the program") {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still runs after {limit:?}: hung");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

pub fn scratch_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("lks-preload-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Compiles `src` into an executable named `name`.
pub fn compile(name: &str, src: &str) -> PathBuf {
    let dir = scratch_dir();
    let c = dir.join(format!("{name}.c"));
    let exe = dir.join(name);
    std::fs::write(&c, src).expect("write C source");
    let out = Command::new("gcc")
        .args(["-O2", "-g", "-pthread", "-o"])
        .arg(&exe)
        .arg(&c)
        .output()
        .expect("gcc runs");
    assert!(
        out.status.success(),
        "gcc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// A test collector: accepts connections and keeps each one's bytes.
pub struct Sink {
    path: PathBuf,
    streams: Arc<Mutex<Vec<Vec<u8>>>>,
    open: Arc<Mutex<usize>>,
}

impl Sink {
    pub fn new(tag: &str) -> Sink {
        let path = scratch_dir().join(format!("{tag}.sock"));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind test socket");
        let streams = Arc::new(Mutex::new(Vec::new()));
        let open = Arc::new(Mutex::new(0usize));
        let (s2, o2) = (streams.clone(), open.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                *o2.lock().unwrap() += 1;
                let (s3, o3) = (s2.clone(), o2.clone());
                std::thread::spawn(move || {
                    let mut bytes = Vec::new();
                    let _ = conn.read_to_end(&mut bytes);
                    s3.lock().unwrap().push(bytes);
                    *o3.lock().unwrap() -= 1;
                });
            }
        });
        Sink {
            path,
            streams,
            open,
        }
    }

    /// Runs `exe` with the shim pointed at this sink (killed, failing the test, if it
    /// hangs).
    pub fn run(&self, exe: &Path) -> Output {
        let mut cmd = preloaded(exe);
        cmd.env("LEAKSCOPE_SOCKET", &self.path);
        output_within(&mut cmd, HANG_LIMIT)
    }

    /// Every stream received, decoded, once all connections have closed.
    pub fn streams(&self) -> Vec<Vec<Record>> {
        let start = Instant::now();
        while *self.open.lock().unwrap() > 0 {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "streams never closed"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(50));
        let mut out = Vec::new();
        for bytes in self.streams.lock().unwrap().iter() {
            let mut d = Decoder::new(&bytes[..]).expect("stream header");
            let mut recs = Vec::new();
            while d.next_frame(&mut recs).expect("whole frames") {}
            out.push(recs);
        }
        out
    }

    /// [`Sink::streams`], which must be `count` streams.
    pub fn streams_of(&self, count: usize) -> Vec<Vec<Record>> {
        let streams = self.streams();
        assert_eq!(streams.len(), count);
        streams
    }

    /// The one stream received, which must pass [`check_stream`], and its pid.
    pub fn only_stream(&self) -> (Vec<Record>, Pid) {
        let mut streams = self.streams_of(1);
        let recs = streams.pop().expect("one stream");
        let pid = check_stream(&recs);
        (recs, pid)
    }
}

/// A command running `exe` with the shim preloaded (and the environment otherwise as is).
pub fn preloaded(exe: &Path) -> Command {
    let mut cmd = Command::new(exe);
    cmd.env("LD_PRELOAD", shim());
    cmd
}

/// Compiles `src` into `name` and runs it once against a new sink named after it.
pub fn run_program(name: &str, src: &str) -> (Output, Sink) {
    let exe = compile(name, src);
    let sink = Sink::new(name);
    let out = sink.run(&exe);
    (out, sink)
}

/// The `Hello` a stream starts with.
pub fn hello(recs: &[Record]) -> &Hello {
    match &recs[0] {
        Record::Hello(h) => h,
        r => panic!("{r:?}"),
    }
}

/// The stream whose `Hello` satisfies `pred`; fails with `what` if there is none.
pub fn stream_where<'a>(
    streams: &'a [Vec<Record>],
    what: &str,
    pred: impl Fn(&Hello) -> bool,
) -> &'a [Record] {
    streams
        .iter()
        .find(|s| matches!(&s[0], Record::Hello(h) if pred(h)))
        .unwrap_or_else(|| panic!("{what}"))
}

/// The threads that allocated anything in the stream.
pub fn alloc_threads(recs: &[Record]) -> HashSet<ThreadId> {
    recs.iter()
        .filter_map(|r| match r {
            Record::Alloc(a) => Some(a.thread),
            _ => None,
        })
        .collect()
}

/// How many `Alloc` records satisfy `pred`.
pub fn count_allocs(recs: &[Record], pred: impl Fn(&Alloc) -> bool) -> usize {
    recs.iter()
        .filter(|r| matches!(r, Record::Alloc(a) if pred(a)))
        .count()
}

/// Whether any `Alloc` record satisfies `pred`.
pub fn any_alloc(recs: &[Record], pred: impl Fn(&Alloc) -> bool) -> bool {
    recs.iter()
        .any(|r| matches!(r, Record::Alloc(a) if pred(a)))
}

/// The host `Alloc` and `Free` records in timestamp order (stream order among equal
/// timestamps), the order in which the collector replays them.
fn host_events(recs: &[Record]) -> Vec<&Record> {
    let mut ev: Vec<(u64, usize, &Record)> = recs
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            Record::Alloc(a) if a.kind == MemoryKind::Host => Some((a.ts.0, i, r)),
            Record::Free(f) if f.kind == MemoryKind::Host => Some((f.ts.0, i, r)),
            _ => None,
        })
        .collect();
    ev.sort_by_key(|&(ts, i, _)| (ts, i));
    ev.into_iter().map(|(_, _, r)| r).collect()
}

/// Structural checks every stream must pass; returns its pid.
pub fn check_stream(recs: &[Record]) -> Pid {
    let Some(Record::Hello(h)) = recs.first() else {
        panic!("stream does not start with Hello: {:?}", recs.first());
    };
    assert_eq!(h.fingerprint, built().fingerprint);
    let mut defined = HashSet::new();
    for r in recs {
        match r {
            Record::Stack(s) => {
                defined.insert(s.id);
            }
            Record::Alloc(a) => {
                assert!(defined.contains(&a.stack), "undefined stack {:?}", a.stack)
            }
            Record::Dropped(d) => panic!("events were dropped: {d:?}"),
            _ => {}
        }
    }
    assert!(
        matches!(recs.last(), Some(Record::End(_))),
        "stream does not end with End: {:?}",
        recs.last()
    );
    h.pid
}

/// Host blocks still live at the end, replaying each address's events in timestamp order
/// (as the collector does), keyed by address.
pub fn live_host(recs: &[Record]) -> HashMap<u64, Alloc> {
    let mut live = HashMap::new();
    for r in host_events(recs) {
        match r {
            Record::Alloc(a) => {
                live.insert(a.addr.0, *a);
            }
            Record::Free(f) => {
                live.remove(&f.addr.0);
            }
            _ => {}
        }
    }
    live
}

pub fn sizes_by_stack(live: &HashMap<u64, Alloc>) -> HashMap<StackId, Vec<u64>> {
    let mut m: HashMap<StackId, Vec<u64>> = HashMap::new();
    for a in live.values() {
        m.entry(a.stack).or_default().push(a.size);
    }
    m
}

/// Host frees of addresses not live at that moment, replaying each address's events in
/// timestamp order (as the collector does).
pub fn unknown_host_frees(recs: &[Record]) -> Vec<u64> {
    let mut live = HashSet::new();
    let mut unknown = Vec::new();
    for r in host_events(recs) {
        match r {
            Record::Alloc(a) => {
                live.insert(a.addr.0);
            }
            Record::Free(f) if !live.remove(&f.addr.0) => unknown.push(f.addr.0),
            _ => {}
        }
    }
    unknown
}

/// The frames of stack `id` as defined in `recs`.
pub fn frames_of(recs: &[Record], id: StackId) -> Vec<u64> {
    recs.iter()
        .find_map(|r| match r {
            Record::Stack(s) if s.id == id => Some(s.frames.iter().map(|f| f.0).collect()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("stack {id:?} is not defined"))
}

pub fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}
