//! `leakscope report` on the recording of a command that is still running: the report is a
//! live snapshot (`"live": true`, the running process's stream `open`, exactly what was
//! recorded so far, no damage), reading it does not disturb the run, and once the command
//! has exited the same recording reports the whole run (`"live": false`).

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread::JoinHandle;
use std::time::Duration;

/// Bytes and blocks of the first batch of `slow_leak.c`.
const FIRST: (u64, u64) = (8_000, 8);
/// Bytes and blocks of both batches.
const BOTH: (u64, u64) = (20_000, 20);
/// How long any one wait of this test may take before it fails.
const LIMIT: Duration = Duration::from_secs(120);

/// Whatever happens, lets the program finish (creates `go`) and, when the test is failing,
/// kills the `leakscope run` process group (leakscope and the program).
struct Guard {
    go: PathBuf,
    group: i32,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.go, b"");
        if std::thread::panicking() {
            // SAFETY: kill(2) of the process group this test created for `leakscope run`.
            unsafe { libc::kill(-self.group, libc::SIGKILL) };
        }
    }
}

/// `leakscope report DIR` with `args`: its output, which must be a success.
fn report_with(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = leakscope_cmd();
    cmd.arg("report").arg(dir).args(args);
    let out = run_cmd(&mut cmd);
    assert_no_panic(&out, "leakscope report");
    assert_code(&out, 0, "leakscope report of the live recording");
    out
}

/// The JSON report of `dir`, raw and typed.
fn json_report(dir: &Path) -> (Value, Report, String) {
    let out = report_with(dir, &["--format", "json"]);
    let value: Value = serde_json::from_slice(&out.stdout).expect("the report is JSON");
    (value, parse_report(&out.stdout), text(&out.stderr))
}

/// The (bytes, blocks) `leak_block` holds in the one `slow_leak` process, if it is there.
fn leaked(rep: &Report) -> Option<(u64, u64)> {
    let procs = rep.by_program("slow_leak");
    assert!(procs.len() <= 1, "{}", rep.describe());
    procs
        .first()
        .map(|p| p.outstanding_where(|s| s.innermost_function() == Some("leak_block")))
}

/// Fails if anything in the report or its warnings speaks of damage.
fn assert_undamaged(value: &Value, stderr: &str) {
    let words = ["damage", "truncated", "cut off", "could not be read"];
    for w in value["warnings"].as_array().expect("warnings") {
        let w = w.as_str().unwrap_or_default();
        assert!(!words.iter().any(|d| w.contains(d)), "warning: {w}");
    }
    for p in value["processes"].as_array().expect("processes") {
        assert_eq!(p["stream_problem"], Value::Null, "{p}");
    }
    assert!(!words.iter().any(|d| stderr.contains(d)), "{stderr}");
}

#[test]
fn report_of_a_running_command_is_a_live_snapshot() {
    let work = Work::new("live");
    let prog = gcc(&work, &[&scenario("slow_leak.c")], "slow_leak", &[]);
    let sync = work.join("sync");
    std::fs::create_dir(&sync).expect("sync folder");
    let rec_dir = work.join("rec");

    let mut cmd: Command = leakscope_cmd();
    cmd.arg("run")
        .arg("--out")
        .arg(&rec_dir)
        .args(["--format", "json", "--"])
        .arg(&prog)
        .arg(&sync);
    let child = spawn_piped(&mut cmd);
    let _guard = Guard {
        go: sync.join("go"),
        group: child.id() as i32,
    };
    let run: JoinHandle<Output> =
        std::thread::spawn(move || wait_output(child, "leakscope run -- slow_leak"));

    wait_until_for("the program finishes its first batch", LIMIT, || {
        assert!(!run.is_finished(), "leakscope run ended early");
        sync.join("ready").exists()
    });
    // The shim sends in the background: read the live recording until the first batch is
    // in it. Every read on the way must succeed, live and undamaged.
    let mut reads = 0;
    wait_until_for("the first batch reaches the recording", LIMIT, || {
        reads += 1;
        let (value, rep, stderr) = json_report(&rec_dir);
        assert_eq!(value["live"], true, "read {reads} of a running command");
        assert_eq!(value["exit_status"], Value::Null);
        assert_undamaged(&value, &stderr);
        for p in rep.by_program("slow_leak") {
            assert_eq!(p.stream, "open", "{}", p.describe());
        }
        let got = leaked(&rep).unwrap_or((0, 0));
        assert!(got.0 <= FIRST.0, "more than the first batch: {got:?}");
        got == FIRST
    });
    // The program waits for `go` and allocates nothing meanwhile: the snapshot is exact.
    let (value, rep, stderr) = json_report(&rec_dir);
    assert_eq!(value["live"], true);
    assert_undamaged(&value, &stderr);
    let p = rep.one("slow_leak", "exec");
    assert_eq!(p.stream, "open", "{}", p.describe());
    assert_eq!(leaked(&rep), Some(FIRST), "{}", p.describe());
    // The text report says it is a snapshot.
    let out = report_with(&rec_dir, &[]);
    let shown = text(&out.stdout);
    assert!(
        shown.contains("live recording: the command is still running (snapshot at "),
        "{shown}"
    );
    assert!(shown.contains("still running when reported"), "{shown}");

    // Let the program finish; the run must not have noticed the reads.
    std::fs::write(sync.join("go"), b"").expect("go file");
    wait_until_for("leakscope run finishes", LIMIT, || run.is_finished());
    let out = run.join().expect("the waiting thread");
    assert_no_panic(&out, "leakscope run");
    assert_code(&out, 0, "leakscope run -- slow_leak");
    assert_eq!(text(&out.stdout), "batch1\nbatch2\n");

    let (value, rep, stderr) = json_report(&rec_dir);
    assert_eq!(value["live"], false);
    assert_eq!(value["exit_status"], 0);
    assert_undamaged(&value, &stderr);
    let p = rep.one("slow_leak", "exec");
    assert_eq!(p.stream, "clean", "{}", p.describe());
    assert_eq!(leaked(&rep), Some(BOTH), "{}", p.describe());
    let text_report = text(&report_with(&rec_dir, &[]).stdout);
    assert!(!text_report.contains("live recording"), "{text_report}");
    assert!(
        text_report.contains("command exited with status 0"),
        "{text_report}"
    );
}
