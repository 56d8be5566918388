//! Host heap over time: `tests/scenarios/fragment.c` frees every other one of 200 000
//! small blocks (holes trapped between live chunks) and must be reported fragmented, with
//! glibc's own figures (the program's `mallinfo2`, printed just before it exits) matching
//! the newest reading; its control frees the same number of blocks from the heap's end
//! (the heap trims) and must not be.
//!
//! The tolerance: once the program has freed its blocks it only sleeps, so between its
//! `mallinfo2` call and the final reading (taken as its stream ends) only the shim's own
//! threads touch the heap: mostly the sender thread, whose allocations come from an arena
//! of its own (glibc gives each new thread one). The free bytes and the system bytes may
//! therefore differ by at most what the arenas other than the main one hold from the
//! system (at either moment), plus [`MAIN_ARENA_SLACK`] for the few small blocks the exit
//! path allocates on the program's thread; free chunks by at most [`CHUNK_SLACK`].

mod common;

use common::*;
use serde_json::Value;

/// Bytes the main arena may change by between the program's `mallinfo2` and the final
/// reading (the shim's exit path allocates a few small blocks on the exiting thread).
const MAIN_ARENA_SLACK: u64 = 64 << 10;
/// Free chunks the shim's threads may make or use up meanwhile.
const CHUNK_SLACK: u64 = 64;

/// What the program printed: `held <bytes> <blocks>` and its `mallinfo2` fields.
struct Truth {
    held_bytes: u64,
    held_blocks: u64,
    mallinfo: std::collections::HashMap<String, u64>,
}

impl Truth {
    fn parse(stdout: &str) -> Truth {
        let mut held = None;
        let mut mallinfo = std::collections::HashMap::new();
        for line in stdout.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.first() {
                Some(&"held") => {
                    held = Some((words[1].parse().unwrap(), words[2].parse().unwrap()));
                }
                Some(&"mallinfo2") => {
                    for pair in words[1..].chunks(2) {
                        mallinfo.insert(pair[0].to_owned(), pair[1].parse().unwrap());
                    }
                }
                _ => panic!("unexpected output line {line:?}"),
            }
        }
        let (held_bytes, held_blocks) = held.unwrap_or_else(|| panic!("no held line: {stdout:?}"));
        Truth {
            held_bytes,
            held_blocks,
            mallinfo,
        }
    }

    fn mi(&self, field: &str) -> u64 {
        self.mallinfo[field]
    }
}

/// Runs `fragment <mode>` under `leakscope run --interval 100ms --format json` and
/// returns the program's ground truth and its process's report.
fn run(work: &Work, prog: &std::path::Path, mode: &str) -> (Truth, Value) {
    let dir = work.join(mode);
    let mut cmd = leakscope_cmd();
    cmd.arg("run")
        .arg("--out")
        .arg(&dir)
        .args(["--interval", "100ms", "--format", "json", "--"])
        .arg(prog)
        .arg(mode);
    let out = run_cmd(&mut cmd);
    assert_code(&out, 0, "leakscope run fragment");
    let report = run_report_json(&out.stderr);
    let processes = report["processes"].as_array().expect("processes");
    assert_eq!(processes.len(), 1, "{report:#}");
    (Truth::parse(&text(&out.stdout)), processes[0].clone())
}

fn u(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not an unsigned number: {v}"))
}

fn within(what: &str, ours: u64, truth: u64, tolerance: u64, heap: &Value) {
    assert!(
        ours.abs_diff(truth) <= tolerance,
        "{what}: leakscope {ours}, mallinfo2 {truth} (tolerance {tolerance})\n{heap:#}"
    );
}

/// Checks common to both modes: readings over time, resident memory, live bytes, and the
/// newest reading against the program's `mallinfo2`.
fn check_reading(truth: &Truth, p: &Value) -> Value {
    assert_eq!(p["stream"], "clean");
    let heap = &p["heap"];
    assert!(heap.is_object(), "no heap section: {p:#}");
    let series = heap["series"].as_array().expect("series");
    assert!(
        u(&heap["readings"]) >= 2 && series.len() >= 2,
        "fewer than two readings: {heap:#}"
    );
    let ats: Vec<u64> = series.iter().map(|s| u(&s["at_ns"])).collect();
    assert!(
        ats.windows(2).all(|w| w[0] < w[1]),
        "not over time: {ats:?}"
    );
    assert_eq!(u(&heap["span_ns"]), ats[ats.len() - 1] - ats[0]);
    // The program sleeps 700 ms after its work: readings at 100 ms cover it.
    assert!(u(&heap["span_ns"]) >= 500_000_000, "{heap:#}");
    let latest = heap["latest"].clone();
    assert_eq!(series.last(), Some(&latest));

    assert!(u(&latest["rss_bytes"]) > 0, "{latest:#}");
    assert!(u(&latest["uss_bytes"]) > 0, "{latest:#}");
    // What the program holds at the end, exactly: its kept blocks (it makes no other).
    assert_eq!(u(&latest["live_bytes"]), truth.held_bytes, "{latest:#}");
    assert_eq!(u(&latest["live_blocks"]), truth.held_blocks, "{latest:#}");
    assert!(u(&latest["rss_bytes"]) >= truth.held_bytes, "{latest:#}");

    let arenas = heap["arenas"].as_array().expect("arenas");
    assert_eq!(arenas.len() as u64, u(&latest["arenas"]));
    assert!(!arenas.is_empty(), "glibc's arenas were not read: {heap:#}");
    let sum = |k: &str| arenas.iter().map(|a| u(&a[k])).sum::<u64>();
    assert_eq!(sum("system_bytes"), u(&latest["arena_bytes"]));
    assert_eq!(sum("free_bytes"), u(&latest["free_bytes"]));
    assert_eq!(sum("free_chunks"), u(&latest["free_chunks"]));
    assert_eq!(
        u(&latest["system_bytes"]),
        u(&latest["arena_bytes"]) + u(&latest["mmap_bytes"])
    );

    // Against glibc's own figures (see the module documentation for the tolerance).
    let main_system = u(&arenas[0]["system_bytes"]);
    let others_now = u(&latest["arena_bytes"]) - main_system;
    let others_then = truth.mi("arena").saturating_sub(main_system);
    let tolerance = others_now.max(others_then) + MAIN_ARENA_SLACK;
    within(
        "free bytes",
        u(&latest["free_bytes"]),
        truth.mi("fordblks"),
        tolerance,
        heap,
    );
    within(
        "arena bytes",
        u(&latest["arena_bytes"]),
        truth.mi("arena"),
        tolerance,
        heap,
    );
    within(
        "free chunks",
        u(&latest["free_chunks"]),
        truth.mi("ordblks") + truth.mi("smblks"),
        CHUNK_SLACK,
        heap,
    );
    within(
        "main arena top",
        u(&arenas[0]["top_bytes"]),
        truth.mi("keepcost"),
        MAIN_ARENA_SLACK,
        heap,
    );
    // The sender's arena is small next to the heap the program made.
    assert!(tolerance <= 2 << 20, "tolerance {tolerance}: {heap:#}");
    latest
}

#[test]
fn fragmented_heap_is_reported_and_matches_mallinfo2() {
    let work = Work::new("heap-fragment");
    let prog = gcc(&work, &[&scenario("fragment.c")], "fragment", &[]);

    let (truth, p) = run(&work, &prog, "holes");
    let latest = check_reading(&truth, &p);
    let heap = &p["heap"];
    assert_eq!(heap["verdict"], "fragmented", "{heap:#}");
    // By construction: 100 000 chunks of 272 bytes freed between live ones (a few stay in
    // the thread cache, which glibc counts as in use).
    assert!(u(&latest["free_chunks"]) >= 99_000, "{latest:#}");
    assert!(u(&latest["hole_bytes"]) >= 99_000 * 272, "{latest:#}");

    // The control frees as many blocks, from the heap's end: they coalesce into the top
    // chunk and glibc trims it. A block the shim itself allocated on the program's thread
    // meanwhile can land above them and keep that one large hole from the top; glibc's
    // own figures tell which happened, and neither is fragmentation.
    let (truth, p) = run(&work, &prog, "trim");
    let latest = check_reading(&truth, &p);
    let heap = &p["heap"];
    assert_ne!(heap["verdict"], "fragmented", "{heap:#}");
    assert!(u(&latest["free_chunks"]) <= CHUNK_SLACK, "{latest:#}");
    if truth.mi("fordblks") < 1 << 20 {
        // Trimmed.
        assert_eq!(heap["verdict"], "compact", "{heap:#}");
        assert!(u(&latest["free_permille"]) < 50, "{latest:#}");
    }
}

#[test]
fn text_report_names_the_fragmentation() {
    let work = Work::new("heap-fragment-text");
    let prog = gcc(&work, &[&scenario("fragment.c")], "fragment", &[]);
    let dir = work.join("rec");
    let mut cmd = leakscope_cmd();
    cmd.arg("run")
        .arg("--out")
        .arg(&dir)
        .args(["--interval", "100ms", "--"])
        .arg(&prog)
        .arg("holes");
    let out = run_cmd(&mut cmd);
    assert_code(&out, 0, "leakscope run fragment");
    let report = text(&out.stderr);
    let line = |start: &str| {
        report
            .lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("no line starting {start:?}:\n{report}"))
            .to_owned()
    };
    let heap = line("host heap: ");
    assert!(
        heap.contains(" from the system, 24.41 MiB live, "),
        "{heap}"
    );
    assert!(heap.contains(" chunks ("), "{heap}");
    assert!(heap.contains("RSS ") && heap.contains("USS "), "{heap}");
    let verdict = line("fragmented: ");
    assert!(
        verdict.ends_with("freed but not returned, in holes between live chunks"),
        "{verdict}"
    );
    line("since the first reading: ");
}
