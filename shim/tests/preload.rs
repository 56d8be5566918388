//! End-to-end tests of the shim: small C programs (built with `gcc`) run with the shim
//! preloaded and a test collector (a Unix listener in this process) receiving their
//! streams, which are decoded with the protocol crate and checked record by record.

use leakscope_protocol::wire::Decoder;
use leakscope_protocol::{Alloc, Api, EndReason, MemoryKind, Origin, Pid, Record, StackId};
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The shim library, built next to this test binary. `cargo test` does not build a
/// `cdylib` for integration tests, so the first call builds it (same profile, same target
/// directory: cargo holds its build lock only while compiling, not while tests run).
fn shim() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("test binary path");
            let dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("target/<profile>");
            let mut cargo = Command::new(env!("CARGO"));
            cargo
                .args(["build", "--quiet", "-p", "leakscope-shim", "--target-dir"])
                .arg(dir.parent().expect("target dir"));
            if dir.file_name().is_some_and(|n| n == "release") {
                cargo.arg("--release");
            }
            let st = cargo.status().expect("cargo runs");
            assert!(st.success(), "building the shim failed");
            let so = dir.join("libleakscope_shim.so");
            assert!(so.exists(), "{} is missing after the build", so.display());
            so
        })
        .clone()
}

fn scratch_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("lks-preload-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Compiles `src` into an executable named `name`.
fn compile(name: &str, src: &str) -> PathBuf {
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
struct Sink {
    path: PathBuf,
    streams: Arc<Mutex<Vec<Vec<u8>>>>,
    open: Arc<Mutex<usize>>,
}

impl Sink {
    fn new(tag: &str) -> Sink {
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

    /// Runs `cmd` with the shim pointed at this sink.
    fn run(&self, cmd: &mut Command) -> Output {
        cmd.env("LD_PRELOAD", shim())
            .env("LEAKSCOPE_SOCKET", &self.path)
            .output()
            .expect("program runs")
    }

    /// Every stream received, decoded, once all connections have closed.
    fn streams(&self) -> Vec<Vec<Record>> {
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
}

/// Structural checks every stream must pass; returns its pid.
fn check_stream(recs: &[Record]) -> Pid {
    let Some(Record::Hello(h)) = recs.first() else {
        panic!("stream does not start with Hello: {:?}", recs.first());
    };
    assert_eq!(h.fingerprint, leakscope_protocol::BUILD_FINGERPRINT);
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
fn live_host(recs: &[Record]) -> HashMap<u64, Alloc> {
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
    let mut live = HashMap::new();
    for (_, _, r) in ev {
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

fn sizes_by_stack(live: &HashMap<u64, Alloc>) -> HashMap<StackId, Vec<u64>> {
    let mut m: HashMap<StackId, Vec<u64>> = HashMap::new();
    for a in live.values() {
        m.entry(a.stack).or_default().push(a.size);
    }
    m
}

const CHURN: &str = r#"
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/mman.h>
void * volatile sink;
__attribute__((noinline)) static void leak(void) { sink = malloc(1000); }
int main(void) {
  for (int i = 0; i < 20000; i++) { sink = malloc(16 + i % 500); free(sink); if (i % 400 == 0) leak(); }
  char *p = malloc(10); strcpy(p, "abc"); p = realloc(p, 5000); sink = p;
  void *q = calloc(10, 10); free(q);
  void *a = 0; if (posix_memalign(&a, 64, 100)) return 9; free(a);
  sink = aligned_alloc(128, 256);
  void *m = mmap(0, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  munmap(m, 4096);
  printf("ok\n");
  return 0;
}
"#;

#[test]
fn allocations_and_leaks_are_recorded_exactly() {
    let exe = compile("churn", CHURN);
    let sink = Sink::new("churn");
    let out = sink.run(&mut Command::new(&exe));
    assert!(out.status.success());
    assert_eq!(out.stdout, b"ok\n");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let streams = sink.streams();
    assert_eq!(streams.len(), 1);
    let recs = &streams[0];
    let pid = check_stream(recs);
    let Record::Hello(h) = &recs[0] else {
        unreachable!()
    };
    assert_eq!(h.origin, Origin::Exec);
    assert!(h.exe.ends_with("/churn"), "{}", h.exe);
    assert_eq!(h.argv.len(), 1);
    assert_eq!(
        recs.last(),
        Some(&Record::End(leakscope_protocol::End {
            ts: recs.last().and_then(Record::ts).unwrap(),
            reason: EndReason::Exit
        }))
    );
    assert!(pid.0 > 0);

    let mallocs = recs
        .iter()
        .filter(|r| matches!(r, Record::Alloc(a) if a.api == Api::Malloc))
        .count();
    assert!(mallocs >= 20_050, "{mallocs} mallocs");
    let live = live_host(recs);
    let by_stack = sizes_by_stack(&live);
    let leaks: Vec<_> = by_stack
        .values()
        .filter(|sizes| sizes.iter().all(|&s| s == 1000))
        .collect();
    assert_eq!(leaks.len(), 1, "one leaking site: {by_stack:?}");
    assert_eq!(leaks[0].len(), 50);
    // The realloc'd block: a Free of the old block and an Alloc of the new, both Realloc.
    assert!(live
        .values()
        .any(|a| a.size == 5000 && a.api == Api::Realloc));
    assert!(recs
        .iter()
        .any(|r| matches!(r, Record::Free(f) if f.api == Api::Realloc)));
    assert!(live
        .values()
        .any(|a| a.api == Api::AlignedAlloc && a.addr.0 % 128 == 0));
    assert!(!live
        .values()
        .any(|a| a.api == Api::PosixMemalign || a.api == Api::Calloc && a.size == 100));
    let mapped: Vec<_> = recs
        .iter()
        .filter_map(|r| match r {
            Record::Alloc(a) if a.kind == MemoryKind::Mapped && a.size == 1 << 20 => Some(a.addr),
            _ => None,
        })
        .collect();
    assert_eq!(mapped.len(), 1, "the anonymous mmap");
    assert!(recs.iter().any(|r| matches!(r,
        Record::Free(f) if f.kind == MemoryKind::Mapped && f.addr == mapped[0] && f.len == 4096)));
    // Stacks are real: the leak's stack has the program's frames, and modules were announced.
    let leak_stack = live.values().find(|a| a.size == 1000).unwrap().stack;
    let frames = recs
        .iter()
        .find_map(|r| match r {
            Record::Stack(s) if s.id == leak_stack => Some(s.frames.len()),
            _ => None,
        })
        .unwrap();
    assert!(frames >= 2, "leak stack has {frames} frames");
    assert!(recs
        .iter()
        .any(|r| matches!(r, Record::Module(m) if m.path.ends_with("/churn"))));
}

const THREADS: &str = r#"
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#define T 16
static void * volatile keep[T][10];
static void *run(void *arg) {
  long id = (long)arg; void *live[32] = {0};
  for (long i = 0; i < 20000; i++) {
    int k = i % 32; free(live[k]); live[k] = malloc(16 + (i % 200));
    if (i % 2000 == 0) keep[id][i / 2000] = calloc(1, 333);
  }
  for (int k = 0; k < 32; k++) free(live[k]);
  return 0;
}
int main(void) {
  pthread_t th[T];
  for (long i = 0; i < T; i++) pthread_create(&th[i], 0, run, (void *)i);
  for (int i = 0; i < T; i++) pthread_join(th[i], 0);
  for (int i = 0; i < T; i++) for (int j = 0; j < 5; j++) free(keep[i][j]);
  printf("threads done\n");
  return 0;
}
"#;

#[test]
fn concurrent_threads_lose_nothing() {
    let exe = compile("threads", THREADS);
    let sink = Sink::new("threads");
    let out = sink.run(&mut Command::new(&exe));
    assert!(out.status.success());
    let streams = sink.streams();
    assert_eq!(streams.len(), 1);
    let recs = &streams[0];
    check_stream(recs);
    let threads: HashSet<_> = recs
        .iter()
        .filter_map(|r| match r {
            Record::Alloc(a) => Some(a.thread),
            _ => None,
        })
        .collect();
    assert!(threads.len() >= 16, "{} threads", threads.len());
    let allocs = recs
        .iter()
        .filter(|r| matches!(r, Record::Alloc(_)))
        .count();
    assert!(allocs >= 16 * 20_000, "{allocs}");
    let live = live_host(recs);
    let kept = live
        .values()
        .filter(|a| a.size == 333 && a.api == Api::Calloc)
        .count();
    assert_eq!(
        kept,
        16 * 5,
        "half of each thread's kept blocks were freed by main"
    );
}

const FORKER: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
void * volatile keep;
int main(void) {
  for (int i = 0; i < 10; i++) { void *p = malloc(500); if (i < 3) keep = p; else free(p); }
  fflush(stdout);
  pid_t c = fork();
  if (c == 0) {
    for (int i = 0; i < 1000; i++) { void *p = malloc(64); keep = p; if (i % 100) free(p); }
    printf("child done\n");
    exit(7);
  }
  int st; waitpid(c, &st, 0);
  printf("parent: child exit %d\n", WEXITSTATUS(st));
  return 3;
}
"#;

#[test]
fn a_fork_child_gets_its_own_stream() {
    let exe = compile("forker", FORKER);
    let sink = Sink::new("forker");
    let out = sink.run(&mut Command::new(&exe));
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stdout, b"child done\nparent: child exit 7\n");
    let streams = sink.streams();
    assert_eq!(streams.len(), 2);
    let hello = |recs: &[Record]| match &recs[0] {
        Record::Hello(h) => h.clone(),
        r => panic!("{r:?}"),
    };
    let (parent, child): (Vec<_>, Vec<_>) = streams
        .iter()
        .partition(|s| hello(s).origin == Origin::Exec);
    let (parent, child) = (parent[0], child[0]);
    let ppid = check_stream(parent);
    let cpid = check_stream(child);
    assert_eq!(hello(child).origin, Origin::Fork { parent: ppid });
    let forks: Vec<_> = parent
        .iter()
        .filter_map(|r| match r {
            Record::Fork(f) => Some(f.child),
            _ => None,
        })
        .collect();
    assert_eq!(forks, vec![cpid]);
    let child_live = live_host(child);
    assert_eq!(child_live.values().filter(|a| a.size == 64).count(), 10);
    let small = child
        .iter()
        .filter(|r| matches!(r, Record::Alloc(a) if a.size == 64))
        .count();
    assert_eq!(small, 1000);
    let parent_live = live_host(parent);
    assert_eq!(parent_live.values().filter(|a| a.size == 500).count(), 3);
    assert!(!parent
        .iter()
        .any(|r| matches!(r, Record::Alloc(a) if a.size == 64)));
}

const EXECER: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
void * volatile keep;
int main(int argc, char **argv) {
  keep = malloc(111);
  char *bad[] = {"/nonexistent/program", 0};
  if (execv(bad[0], bad) == 0) return 1;
  keep = malloc(222);
  char *good[] = {argv[0], "again", 0};
  if (argc == 1) execv(argv[0], good);
  keep = malloc(333);
  return 0;
}
"#;

#[test]
fn exec_ends_the_stream_and_a_failed_exec_continues_it() {
    let exe = compile("execer", EXECER);
    let sink = Sink::new("execer");
    let out = sink.run(&mut Command::new(&exe));
    assert!(out.status.success());
    let streams = sink.streams();
    assert_eq!(streams.len(), 2);
    let first = streams
        .iter()
        .find(|s| matches!(&s[0], Record::Hello(h) if h.argv.len() == 1))
        .expect("the first image's stream");
    let second = streams
        .iter()
        .find(|s| matches!(&s[0], Record::Hello(h) if h.argv.len() == 2))
        .expect("the exec'd image's stream");
    assert_eq!(check_stream(first), check_stream(second), "same process");
    let ends: Vec<_> = first
        .iter()
        .filter_map(|r| match r {
            Record::End(e) => Some(e.reason),
            _ => None,
        })
        .collect();
    assert_eq!(ends, vec![EndReason::Exec, EndReason::Exec]);
    // The failed exec's End is followed by the allocation of 222 bytes.
    let first_end = first
        .iter()
        .position(|r| matches!(r, Record::End(_)))
        .unwrap();
    assert!(first[first_end..]
        .iter()
        .any(|r| matches!(r, Record::Alloc(a) if a.size == 222)));
    assert!(second
        .iter()
        .any(|r| matches!(r, Record::Alloc(a) if a.size == 333)));
    assert!(matches!(second.last(), Some(Record::End(e)) if e.reason == EndReason::Exit));
}

const CLOSER: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
void * volatile keep;
int main(void) {
  int closed = 0;
  for (int fd = 3; fd <= 1024; fd++) if (close(fd) == 0) closed++;
  for (int i = 0; i < 1000; i++) { keep = malloc(100); free(keep); }
  keep = malloc(12345);
  printf("closed %d\n", closed);
  return 0;
}
"#;

#[test]
fn closing_every_descriptor_keeps_the_stream_and_the_output() {
    let exe = compile("closer", CLOSER);
    let bare = Command::new(&exe).output().unwrap();
    let sink = Sink::new("closer");
    let out = sink.run(&mut Command::new(&exe));
    assert_eq!(
        out.stdout, bare.stdout,
        "the shim's socket is invisible to close()"
    );
    assert!(out.status.success());
    let streams = sink.streams();
    assert_eq!(streams.len(), 1);
    check_stream(&streams[0]);
    assert!(live_host(&streams[0]).values().any(|a| a.size == 12345));
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn without_a_collector_the_program_is_unchanged_but_for_one_line() {
    let exe = compile("forker_alone", FORKER);
    let bare = Command::new(&exe).output().unwrap();
    let missing = scratch_dir().join("nobody-listens.sock");
    let runs = [
        Command::new(&exe)
            .env("LD_PRELOAD", shim())
            .env_remove("LEAKSCOPE_SOCKET")
            .output()
            .unwrap(),
        Command::new(&exe)
            .env("LD_PRELOAD", shim())
            .env("LEAKSCOPE_SOCKET", &missing)
            .output()
            .unwrap(),
    ];
    for (run, why) in runs
        .iter()
        .zip(["is not set", "cannot reach the collector"])
    {
        assert_eq!(run.status.code(), bare.status.code());
        assert_eq!(run.stdout, bare.stdout);
        let lines = stderr_lines(run);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("leakscope: ") && lines[0].contains(why),
            "{lines:?}"
        );
        assert!(
            lines[0].ends_with("this process runs untracked"),
            "{lines:?}"
        );
    }
    let quiet = Command::new(&exe)
        .env("LD_PRELOAD", shim())
        .env("LEAKSCOPE_SOCKET", &missing)
        .env("LEAKSCOPE_QUIET", "1")
        .output()
        .unwrap();
    assert!(quiet.stderr.is_empty());
    assert_eq!(quiet.stdout, bare.stdout);
}

#[test]
fn a_collector_that_goes_away_costs_one_line() {
    let exe = compile("churn_lost", CHURN);
    let path = scratch_dir().join("hangs-up.sock");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn); // hang up at once
        }
    });
    let start = Instant::now();
    let out = Command::new(&exe)
        .env("LD_PRELOAD", shim())
        .env("LEAKSCOPE_SOCKET", &path)
        .output()
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(out.status.success());
    assert_eq!(out.stdout, b"ok\n");
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("lost the collector"), "{lines:?}");
}

const QUICK_EXIT: &str = r#"
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
void * volatile keep;
int main(void) {
  pid_t c = fork();
  if (c == 0) { for (int i = 0; i < 100; i++) keep = malloc(48); _exit(5); }
  int st; waitpid(c, &st, 0);
  return WEXITSTATUS(st) == 5 ? 0 : 1;
}
"#;

#[test]
fn underscore_exit_still_ends_the_stream() {
    let exe = compile("quick_exit", QUICK_EXIT);
    let sink = Sink::new("quick_exit");
    let out = sink.run(&mut Command::new(&exe));
    assert!(out.status.success());
    let streams = sink.streams();
    assert_eq!(streams.len(), 2);
    let child = streams
        .iter()
        .find(|s| matches!(&s[0], Record::Hello(h) if matches!(h.origin, Origin::Fork { .. })))
        .expect("the child's stream");
    check_stream(child);
    assert!(matches!(child.last(), Some(Record::End(e)) if e.reason == EndReason::Exit));
    assert_eq!(
        live_host(child).values().filter(|a| a.size == 48).count(),
        100
    );
}

const THREAD_CHURN: &str = r#"
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
static pthread_key_t key;
static void release(void *p) { free(p); }   /* runs after the shim's own thread-exit hook */
static void *run(void *arg) {
  (void)arg;
  for (int i = 0; i < 100; i++) { void * volatile p = malloc(64 + i); free(p); }
  pthread_setspecific(key, malloc(777));
  return 0;
}
int main(void) {
  pthread_key_create(&key, release);
  for (int round = 0; round < 200; round++) {
    pthread_t th[4];
    for (int i = 0; i < 4; i++) pthread_create(&th[i], 0, run, 0);
    for (int i = 0; i < 4; i++) pthread_join(th[i], 0);
  }
  printf("ok\n");
  return 0;
}
"#;

#[test]
fn thread_churn_and_frees_at_thread_exit_are_recorded() {
    let exe = compile("thread_churn", THREAD_CHURN);
    let sink = Sink::new("thread_churn");
    let out = sink.run(&mut Command::new(&exe));
    assert!(out.status.success());
    let streams = sink.streams();
    assert_eq!(streams.len(), 1);
    let recs = &streams[0];
    check_stream(recs);
    let per_thread = recs
        .iter()
        .filter(|r| matches!(r, Record::Alloc(a) if a.size == 777))
        .count();
    assert_eq!(per_thread, 800);
    let live = live_host(recs);
    assert!(
        !live.values().any(|a| a.size == 777),
        "blocks freed by a key destructor at thread exit must not look leaked"
    );
    let small = recs
        .iter()
        .filter(|r| matches!(r, Record::Alloc(a) if (64..164).contains(&a.size)))
        .count();
    assert!(small >= 800 * 100, "{small}");
}
