//! End-to-end tests of the shim: small C programs (built with `gcc`) run with the shim
//! preloaded and a test collector (a Unix listener in this process) receiving their
//! streams, which are decoded with the protocol crate and checked record by record.

mod support;

use leakscope_protocol::{Api, EndReason, MemoryKind, Origin, Record};
use std::os::unix::net::UnixListener;
use std::process::Command;
use support::*;

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
    let (out, sink) = run_program("churn", CHURN);
    assert!(out.status.success());
    assert_eq!(out.stdout, b"ok\n");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (recs, pid) = sink.only_stream();
    let recs = &recs;
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

    let mallocs = count_allocs(recs, |a| a.api == Api::Malloc);
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
    let (out, sink) = run_program("threads", THREADS);
    assert!(out.status.success());
    let recs = &sink.only_stream().0;
    let threads = alloc_threads(recs);
    assert!(threads.len() >= 16, "{} threads", threads.len());
    let allocs = count_allocs(recs, |_| true);
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
    let (out, sink) = run_program("forker", FORKER);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stdout, b"child done\nparent: child exit 7\n");
    let streams = sink.streams_of(2);
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
    let small = count_allocs(child, |a| a.size == 64);
    assert_eq!(small, 1000);
    let parent_live = live_host(parent);
    assert_eq!(parent_live.values().filter(|a| a.size == 500).count(), 3);
    assert!(!any_alloc(parent, |a| a.size == 64));
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
    let (out, sink) = run_program("execer", EXECER);
    assert!(out.status.success());
    let streams = sink.streams_of(2);
    let first = stream_where(&streams, "the first image's stream", |h| h.argv.len() == 1);
    let second = stream_where(&streams, "the exec'd image's stream", |h| h.argv.len() == 2);
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
    assert!(any_alloc(&first[first_end..], |a| a.size == 222));
    assert!(any_alloc(second, |a| a.size == 333));
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
    let out = sink.run(&exe);
    assert_eq!(
        out.stdout, bare.stdout,
        "the shim's socket is invisible to close()"
    );
    assert!(out.status.success());
    let (recs, _) = sink.only_stream();
    assert!(live_host(&recs).values().any(|a| a.size == 12345));
}

#[test]
fn without_a_collector_the_program_is_unchanged_but_for_one_line() {
    let exe = compile("forker_alone", FORKER);
    let bare = Command::new(&exe).output().unwrap();
    let missing = scratch_dir().join("nobody-listens.sock");
    let runs = [
        preloaded(&exe)
            .env_remove("LEAKSCOPE_SOCKET")
            .output()
            .unwrap(),
        preloaded(&exe)
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
    let quiet = preloaded(&exe)
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
    // No timing bound: the property is that it finishes (the hang guard) and says one line.
    let out = output_within(preloaded(&exe).env("LEAKSCOPE_SOCKET", &path), HANG_LIMIT);
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
    let (out, sink) = run_program("quick_exit", QUICK_EXIT);
    assert!(out.status.success());
    let streams = sink.streams_of(2);
    let child = stream_where(&streams, "the child's stream", |h| {
        matches!(h.origin, Origin::Fork { .. })
    });
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
    let (out, sink) = run_program("thread_churn", THREAD_CHURN);
    assert!(out.status.success());
    let recs = &sink.only_stream().0;
    let per_thread = count_allocs(recs, |a| a.size == 777);
    assert_eq!(per_thread, 800);
    let live = live_host(recs);
    assert!(
        !live.values().any(|a| a.size == 777),
        "blocks freed by a key destructor at thread exit must not look leaked"
    );
    let small = count_allocs(recs, |a| (64..164).contains(&a.size));
    assert!(small >= 800 * 100, "{small}");
}

/// What Rust's runtime does at the start of `main` and of every thread: the thread's first
/// allocation happens inside `pthread_getattr_np`, which holds the thread's lock (glibc
/// reads `/proc/self/maps` for the main thread, and reallocates a CPU set for any thread).
const STACK_PROBE: &str = r#"
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#define T 8
void * volatile keep[T + 1];
static int probe(void) {
  pthread_attr_t a; void *addr = 0; size_t size = 0;
  if (pthread_getattr_np(pthread_self(), &a)) return 1;
  int bad = pthread_attr_getstack(&a, &addr, &size) || size == 0;
  pthread_attr_destroy(&a);
  return bad;
}
__attribute__((noinline)) static void leak_in_main(void) { keep[T] = malloc(4141); }
__attribute__((noinline)) static void leak_in_thread(long i) { keep[i] = malloc(4242); }
static void *run(void *arg) {
  if (probe()) return (void *)1;
  leak_in_thread((long)arg);
  return 0;
}
int main(void) {
  if (probe()) return 1;
  leak_in_main();
  pthread_t th[T];
  for (long i = 0; i < T; i++) if (pthread_create(&th[i], 0, run, (void *)i)) return 2;
  long bad = 0;
  for (int i = 0; i < T; i++) { void *r; pthread_join(th[i], &r); bad += (long)r; }
  printf("probed %ld\n", bad);
  return 0;
}
"#;

#[test]
fn a_first_allocation_inside_pthread_getattr_np_does_not_deadlock() {
    let (out, sink) = run_program("stack_probe", STACK_PROBE);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"probed 0\n");
    let recs = &sink.only_stream().0;
    // The bounds learnt at session start (main) and in the thread-start trampoline (the
    // others) give every thread real stacks.
    let live = live_host(recs);
    let main_leak: Vec<_> = live.values().filter(|a| a.size == 4141).collect();
    assert_eq!(main_leak.len(), 1);
    assert!(frames_of(recs, main_leak[0].stack).len() >= 2);
    let thread_leaks: Vec<_> = live.values().filter(|a| a.size == 4242).collect();
    assert_eq!(thread_leaks.len(), 8);
    for a in thread_leaks {
        assert!(
            frames_of(recs, a.stack).len() >= 2,
            "a thread's stack has no frames"
        );
    }
}

const EXITING_THREADS: &str = r#"
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#define T 16
static void *given[T][64];
static void *run(void *arg) {
  long id = (long)arg; void *live[32] = {0};
  for (long i = 0; i < 30000; i++) {
    int k = i % 32; free(live[k]); live[k] = malloc(16 + (i % 300));
  }
  for (int k = 0; k < 32; k++) free(live[k]);
  for (int j = 0; j < 64; j++) given[id][j] = malloc(40 + j);  /* freed by main */
  return 0;
}
int main(void) {
  for (int round = 0; round < 2; round++) {
    pthread_t th[T];
    for (long i = 0; i < T; i++) pthread_create(&th[i], 0, run, (void *)i);
    for (int i = 0; i < T; i++) pthread_join(th[i], 0);
    for (int i = 0; i < T; i++) for (int j = 0; j < 64; j++) free(given[i][j]);
  }
  printf("ok\n");
  return 0;
}
"#;

/// Exiting threads free nothing the stream never saw allocated: the shim's own per-thread
/// bookkeeping (its thread-exit hook, and whatever its dependencies keep per thread) must
/// not leave glibc blocks that are freed, recorded, at thread exit.
#[test]
fn exiting_threads_make_no_unknown_frees() {
    let (out, sink) = run_program("exiting_threads", EXITING_THREADS);
    assert!(out.status.success(), "{out:?}");
    let recs = &sink.only_stream().0;
    let threads = alloc_threads(recs);
    assert!(threads.len() >= 32, "{} threads", threads.len());
    let unknown = unknown_host_frees(recs);
    assert!(
        unknown.is_empty(),
        "{} unknown frees: {unknown:x?}",
        unknown.len()
    );
    assert!(!live_host(recs)
        .values()
        .any(|a| (40..104).contains(&a.size)));
}

/// Worker threads fill their buffers and then wait while a thread created after them (so
/// the sender visits its buffer before theirs) forks: all of the workers' events happened
/// before the fork.
const FORK_WITH_THREADS: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#define T 4
static pthread_barrier_t ready, done;
void * volatile keep[T][8];
void * volatile mine;
static void *run(void *arg) {
  long id = (long)arg; void *live[16] = {0};
  for (long i = 0; i < 3000; i++) {
    int k = i % 16; free(live[k]); live[k] = malloc(24 + (i % 100));
  }
  for (int k = 0; k < 16; k++) free(live[k]);
  for (int j = 0; j < 8; j++) keep[id][j] = malloc(999);
  pthread_barrier_wait(&ready);
  pthread_barrier_wait(&done);
  return 0;
}
static void *forker(void *arg) {
  (void)arg;
  mine = malloc(321);
  pid_t c = fork();
  if (c == 0) _exit(0);
  int st; waitpid(c, &st, 0);
  return 0;
}
int main(void) {
  pthread_barrier_init(&ready, 0, T + 1);
  pthread_barrier_init(&done, 0, T + 1);
  pthread_t th[T], f;
  for (long i = 0; i < T; i++) pthread_create(&th[i], 0, run, (void *)i);
  pthread_barrier_wait(&ready);
  pthread_create(&f, 0, forker, 0);
  pthread_join(f, 0);
  pthread_barrier_wait(&done);
  for (int i = 0; i < T; i++) pthread_join(th[i], 0);
  printf("ok\n");
  return 0;
}
"#;

#[test]
fn every_event_before_a_fork_precedes_the_fork_record() {
    let exe = compile("fork_with_threads", FORK_WITH_THREADS);
    for _ in 0..3 {
        let sink = Sink::new("fork_with_threads");
        let out = sink.run(&exe);
        assert!(out.status.success(), "{out:?}");
        let streams = sink.streams_of(2);
        let parent = stream_where(&streams, "the parent's stream", |h| {
            h.origin == Origin::Exec
        });
        check_stream(parent);
        let (at, fork_ts) = parent
            .iter()
            .enumerate()
            .find_map(|(i, r)| match r {
                Record::Fork(f) => Some((i, f.ts.0)),
                _ => None,
            })
            .expect("a Fork record");
        let late: Vec<_> = parent[at..]
            .iter()
            .filter(|r| {
                matches!(r, Record::Alloc(_) | Record::Free(_))
                    && r.ts().is_some_and(|t| t.0 < fork_ts)
            })
            .collect();
        assert!(
            late.is_empty(),
            "{} events from before the fork follow the Fork record, e.g. {:?}",
            late.len(),
            late.first()
        );
        // What the collector seeds the child with: the parent's blocks at the Fork record.
        let before = live_host(&parent[..at]);
        assert_eq!(before.values().filter(|a| a.size == 999).count(), 32);
        assert!(!before.values().any(|a| (24..124).contains(&a.size)));
    }
}

const KILLED_AT_ONCE: &str = r#"
#include <signal.h>
#include <unistd.h>
int main(void) { kill(getpid(), SIGKILL); pause(); return 0; }
"#;

/// The stream header and `Hello` are written while the session starts: a process killed
/// before its sender thread ever ran is still in the recording.
#[test]
fn a_process_killed_at_once_still_says_hello() {
    let exe = compile("killed_at_once", KILLED_AT_ONCE);
    for _ in 0..5 {
        let sink = Sink::new("killed_at_once");
        let out = sink.run(&exe);
        assert!(!out.status.success());
        let streams = sink.streams_of(1);
        let Some(Record::Hello(h)) = streams[0].first() else {
            panic!("no Hello: {:?}", streams[0].first());
        };
        assert!(h.exe.ends_with("/killed_at_once"), "{}", h.exe);
        assert_eq!(h.fingerprint, built().fingerprint);
    }
}
