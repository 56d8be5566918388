//! Checkpoints end to end: `tests/scenarios/aging.c` churns for ten seconds under
//! `leakscope run` with a checkpoint every second (`LEAKSCOPE_CHECKPOINT_MS`). The stream
//! files keep their logical size but the bytes before the previous checkpoint go back to
//! the file system, so the disk they take stays a small part of it; `leakscope report` of
//! the recording (from its checkpoint) is the report the run printed; `--until` before the
//! checkpoint says why it cannot be read; a damaged newest checkpoint falls back to the
//! previous one, and damaged checkpoints never crash the report.

mod common;

use common::*;
use serde_json::Value;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

/// Seconds the scenario runs.
const SECONDS: &str = "10";

/// `options` after the run's own analysis settings, so that its report and these compare.
fn with_run_settings<'a>(options: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["--warmup", "500ms"];
    all.extend_from_slice(options);
    all
}

fn report(dir: &Path, options: &[&str]) -> std::process::Output {
    report_output_with(dir, &with_run_settings(options))
}

fn report_json(dir: &Path, options: &[&str]) -> Value {
    report_json_with(dir, &with_run_settings(options))
}

/// The report without what differs between reading it live and reading it back.
fn comparable(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("live");
        o.remove("snapshot_unix_ns");
    }
    v
}

/// Logical bytes and bytes on disk of the stream files.
fn usage(dir: &Path) -> (u64, u64) {
    let Ok(entries) = std::fs::read_dir(dir.join("streams")) else {
        return (0, 0);
    };
    entries
        .filter_map(|e| e.ok()?.metadata().ok())
        .fold((0, 0), |(l, a), m| (l + m.len(), a + m.blocks() * 512))
}

#[test]
fn a_churning_run_gives_disk_back_and_reports_the_same_from_its_checkpoint() {
    let work = Work::new("checkpoint");
    let prog = gcc(&work, &[&scenario("aging.c")], "aging", &[]);
    let dir = work.join("rec");
    let mut cmd = leakscope_cmd();
    cmd.env("LEAKSCOPE_CHECKPOINT_MS", "1000")
        .arg("run")
        .arg("--out")
        .arg(&dir)
        .args([
            "--interval",
            "100ms",
            "--warmup",
            "500ms",
            "--format",
            "json",
        ])
        .arg("--")
        .arg(&prog)
        .arg(SECONDS);
    let child = spawn_piped(&mut cmd);
    let run = std::thread::spawn(move || wait_output(child, "leakscope run -- aging"));
    let mut samples = Vec::new();
    while !run.is_finished() {
        samples.push(usage(&dir));
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = run.join().expect("the waiting thread");
    assert_no_panic(&out, "leakscope run");
    assert_code(&out, 0, "leakscope run -- aging");
    let printed = comparable(run_report_json(&out.stderr));
    assert!(dir.join("checkpoint.bin").exists());
    assert!(dir.join("checkpoint.prev.bin").exists());

    // Disk: the logical size grew all along; what the files take did not follow.
    let (logical, on_disk) = usage(&dir);
    let late_peak = samples[samples.len() / 2..]
        .iter()
        .map(|(_, a)| *a)
        .max()
        .unwrap_or(0);
    eprintln!(
        "streams: {logical} bytes, {on_disk} on disk at the end, at most {late_peak} on disk in the second half"
    );
    assert!(logical > 1 << 20, "too little recorded to tell: {logical}");
    let punched = on_disk < logical / 2;
    if punched {
        assert!(
            late_peak < logical * 6 / 10,
            "{late_peak} on disk of {logical}"
        );
    } else {
        eprintln!("this file system kept every byte (no hole punching): disk bound not checked");
    }

    // The report read back (from the checkpoint) is the report the run printed.
    let read_back = report_json(&dir, &[]);
    assert_eq!(read_back["warnings"], Value::Array(vec![]), "{read_back}");
    assert_eq!(comparable(read_back), printed);

    // Up to a time after everything: the same again.
    assert_eq!(comparable(report_json(&dir, &["--until", "1h"])), printed);
    // Up to a time before the checkpoint: only while every byte is there.
    let early = report(&dir, &["--until", "2s"]);
    if punched {
        assert_ne!(early.status.code(), Some(0), "{}", text(&early.stderr));
        let e = text(&early.stderr);
        assert!(e.contains("checkpoint.bin") && e.contains("--until"), "{e}");
    } else {
        assert_code(&early, 0, "leakscope report --until 2s");
    }

    // A damaged newest checkpoint: the previous one is used, and the report says so.
    let newest = dir.join("checkpoint.bin");
    let mut bytes = std::fs::read(&newest).expect("checkpoint");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&newest, &bytes).expect("damaged checkpoint");
    let fallback = report_json(&dir, &[]);
    let warnings = fallback["warnings"].to_string();
    assert!(warnings.contains("checkpoint.bin"), "{warnings}");
    let mut without = comparable(fallback);
    without["warnings"] = Value::Array(vec![]);
    assert_eq!(without, printed);

    // Both cut short: no crash; the streams whose bytes are gone are named.
    std::fs::write(&newest, &bytes[..100]).expect("cut checkpoint");
    let previous = dir.join("checkpoint.prev.bin");
    let prev = std::fs::read(&previous).expect("previous checkpoint");
    std::fs::write(&previous, &prev[..prev.len() / 3]).expect("cut previous");
    let out = report(&dir, &[]);
    assert_code(&out, 0, "leakscope report without a usable checkpoint");
    let v: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    let warnings = v["warnings"].to_string();
    assert!(warnings.contains("checkpoint.prev.bin"), "{warnings}");
    if punched {
        assert!(warnings.contains("000000.lks"), "{warnings}");
        assert!(warnings.contains("given back"), "{warnings}");
    }
}
