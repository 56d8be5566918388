//! The GPU check's comparison logic (`scripts/gpu_check/compare.py`), which judges runs on a
//! real GPU, checked here without one: its self-test builds consistent made-up artifacts
//! (every scenario must pass) and nine planted inconsistencies (each must fail the row it
//! should), and parses compute-sanitizer's output in both of its number formats.

mod common;

use common::*;
use std::process::Command;

#[test]
fn gpu_check_comparisons_pass_consistent_runs_and_catch_planted_errors() {
    let script = repo_root().join("scripts/gpu_check/compare.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg("--self-test")
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "compare.py --self-test failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("self-test passed"));
}
