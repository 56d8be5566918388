//! Scenario 8: the collector is SIGKILLed while the traced program runs. The program (the
//! collector's child) must survive and finish with its normal output and exit status, and
//! `leakscope report` on the partial recording must show what was recorded before the
//! kill, with the stream marked as cut off or damaged.

mod common;

use common::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Creates the file when dropped.
struct Release(PathBuf);

impl Drop for Release {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, b"");
    }
}

#[test]
fn program_survives_collector_kill_and_partial_recording_reports() {
    let work = Work::new("killed");
    let prog = gcc(&work, &[&scenario("killme.c")], "killme", &[]);
    let sync = work.join("sync");
    std::fs::create_dir(&sync).unwrap();
    let rec_dir = work.join("rec");
    // However the test ends, release the program from its wait.
    let _release = Release(sync.join("go"));

    // sh records the program's exit status, since the program's parent (the collector)
    // will be gone when it exits.
    let mut cmd = Command::new(&binaries().leakscope);
    scrub_env(&mut cmd)
        .arg("run")
        .arg("--out")
        .arg(&rec_dir)
        .arg("--")
        .args(["sh", "-c", "\"$0\" \"$1\"; echo $? > \"$1/status\""])
        .arg(&prog)
        .arg(&sync);
    let mut collector = spawn_piped(&mut cmd);
    let mut out_pipe = collector.stdout.take().unwrap();
    let stdout_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out_pipe, &mut s);
        s
    });
    let mut err_pipe = collector.stderr.take().unwrap();
    let stderr_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err_pipe, &mut s);
        s
    });

    wait_until("the program reaches its pause", || {
        sync.join("ready").exists()
    });
    // Wait until the recording holds the phase-1 allocations (the shim sends them in the
    // background), reading the live recording.
    wait_until_for(
        "phase-1 allocations reach the recording",
        Duration::from_secs(120),
        || {
            let out = report_output(&rec_dir);
            if !out.status.success() {
                return false;
            }
            let rep = parse_report(&out.stdout);
            rep.by_program("killme").iter().any(|p| {
                p.outstanding_where(|s| s.innermost_function() == Some("phase1_alloc"))
                    == (15_000, 10)
            })
        },
    );

    // SAFETY: kill(2) of the collector process this test started.
    assert_eq!(
        unsafe { libc::kill(collector.id() as i32, libc::SIGKILL) },
        0
    );
    let status = collector.wait().unwrap();
    assert_eq!(shell_code(status), 128 + libc::SIGKILL);
    std::fs::write(sync.join("go"), b"").unwrap();

    wait_until("the program finishes", || sync.join("status").exists());
    // stdout reaches EOF once the program and sh have exited.
    let stdout = stdout_reader.join().unwrap();
    let stderr = stderr_reader.join().unwrap();
    assert_eq!(stdout, "phase1\nphase2\n", "stderr: {stderr}");
    assert!(sync.join("done").exists());
    let code = std::fs::read_to_string(sync.join("status")).unwrap();
    assert_eq!(
        code.trim(),
        "0",
        "the program's exit status; stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // The partial recording reports what was recorded before the kill.
    let rep = report(&rec_dir);
    let p = rep.one("killme", "exec");
    assert!(
        p.stream == "cut_off" || p.stream == "damaged",
        "stream of a process whose collector died: {}",
        p.describe()
    );
    assert_eq!(
        p.outstanding_where(|s| s.innermost_function() == Some("phase1_alloc")),
        (15_000, 10),
        "{}",
        p.describe()
    );
    assert_eq!(
        p.outstanding_where(|s| s.innermost_function() == Some("phase2_alloc")),
        (0, 0),
        "nothing after the kill can have been recorded: {}",
        p.describe()
    );
}
