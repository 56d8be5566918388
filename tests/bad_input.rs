//! Scenario 10: bad input never panics. `leakscope report` on a missing folder, on a
//! recording whose stream file is garbage, and on a stream cut in half; `leakscope run`
//! with an unknown option (clap's usage error, exit 2) and with a command that does not
//! exist (exit 127 and a message naming it).

mod common;

use common::*;
use std::path::{Path, PathBuf};

/// The stream files of a recording (`DIR/streams/*.lks`), sorted.
fn stream_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("streams"))
        .unwrap_or_else(|e| panic!("{dir:?} has no streams folder: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "lks"))
        .collect();
    files.sort();
    files
}

/// A real single-process recording of the fork-free leaf scenario.
fn real_recording(work: &Work) -> PathBuf {
    let prog = gcc(work, &[&scenario("leaf.c")], "leaf", &[]);
    let rec = record_unchanged(work, "rec", &prog, &[]);
    let files = stream_files(&rec.dir);
    assert_eq!(files.len(), 1, "one stream file: {files:?}");
    rec.dir
}

fn copy_recording(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("streams")).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
    for path in stream_files(from) {
        std::fs::copy(&path, to.join("streams").join(path.file_name().unwrap())).unwrap();
    }
}

#[test]
fn report_on_missing_dir_is_a_clear_error() {
    let work = Work::new("missing");
    let missing = work.join("no-such-recording");
    let out = report_output(&missing);
    assert!(
        !out.status.success(),
        "report of a missing folder must fail"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("no-such-recording"),
        "the message names the folder: {stderr:?}"
    );
    assert!(
        out.stdout.is_empty(),
        "no report on stdout: {}",
        text(&out.stdout)
    );
}

#[test]
fn report_on_garbage_stream_does_not_panic() {
    let work = Work::new("garbage");
    let real = real_recording(&work);
    let bad = work.join("garbage");
    copy_recording(&real, &bad);
    let stream = stream_files(&bad).remove(0);
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&stream, garbage).unwrap();

    let out = report_output(&bad);
    let stderr = text(&out.stderr);
    if out.status.success() {
        // A report that marks the stream as damaged is acceptable...
        let rep = parse_report(&out.stdout);
        for p in &rep.processes {
            assert_eq!(p.stream, "damaged", "{}", rep.describe());
        }
    } else {
        // ...and so is a clear error that names the problem.
        assert!(!stderr.trim().is_empty(), "a failing report says why");
        let lower = stderr.to_lowercase();
        assert!(
            lower.contains("stream") || lower.contains(".lks") || lower.contains("leakscope"),
            "the message names the bad stream: {stderr:?}"
        );
    }
}

#[test]
fn report_on_truncated_stream_is_partial() {
    let work = Work::new("truncated");
    let real = real_recording(&work);
    let whole = report(&real);
    let leaf = whole.one("leaf", "exec");
    assert_eq!(leaf.stream, "clean");

    let cut = work.join("cut");
    copy_recording(&real, &cut);
    let stream = stream_files(&cut).remove(0);
    let bytes = std::fs::read(&stream).unwrap();
    std::fs::write(&stream, &bytes[..bytes.len() / 2]).unwrap();

    let out = report_output(&cut);
    assert_code(&out, 0, "report of a truncated recording");
    let rep = parse_report(&out.stdout);
    let p = rep.one("leaf", "exec");
    assert!(
        p.stream == "cut_off" || p.stream == "damaged",
        "a stream cut in half is not clean: {}",
        p.describe()
    );
    assert_eq!(p.pid, leaf.pid);
    // Whatever the first half held is still reported: never more than the whole run.
    assert!(
        p.sites.iter().map(|s| s.allocations).sum::<u64>()
            <= leaf.sites.iter().map(|s| s.allocations).sum::<u64>()
    );
}

#[test]
fn run_with_unknown_option_is_a_usage_error() {
    let mut cmd = leakscope_cmd();
    cmd.args(["run", "--no-such-option", "--", "true"]);
    let out = run_cmd(&mut cmd);
    assert_no_panic(&out, "leakscope run --no-such-option");
    assert_code(&out, 2, "leakscope run --no-such-option");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("--no-such-option"), "{stderr}");
    assert!(stderr.to_lowercase().contains("usage"), "{stderr}");
}

#[test]
fn run_of_missing_command_exits_127() {
    let work = Work::new("nocmd");
    let rec = record(&work, "rec", "/nonexistent/cmd", &[]);
    assert_code(&rec.output, 127, "leakscope run -- /nonexistent/cmd");
    let stderr = text(&rec.output.stderr);
    assert!(
        stderr.contains("/nonexistent/cmd"),
        "message names the command: {stderr}"
    );
}
