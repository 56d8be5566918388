//! `leakscope run` samples the machine's memory beside the process streams: a run of a
//! second at a 200 ms interval leaves `machine.lks` with several readings (host figures,
//! times increasing), and `leakscope report` still reads the recording. Runs without the
//! real shim (a stand-in file, as `run_cli.rs` does) and without a GPU.

use leakscope_protocol::wire::{Decoder, WireError};
use leakscope_protocol::{MachineReading, Record};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_leakscope");

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every reading of a machine file; a cut last frame is allowed, damage is not.
fn readings(bytes: &[u8]) -> Vec<MachineReading> {
    let mut d = Decoder::new(bytes).unwrap();
    let mut recs = Vec::new();
    loop {
        match d.next_frame(&mut recs) {
            Ok(true) => {}
            Ok(false) | Err(WireError::Truncated { .. }) => break,
            Err(e) => panic!("machine.lks is damaged: {e}"),
        }
    }
    recs.into_iter()
        .map(|r| match r {
            Record::Machine(m) => m,
            other => panic!("not a machine reading: {other:?}"),
        })
        .collect()
}

/// Waits for `cmd` at most `limit`; kills it (and fails) past that.
fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "leakscope did not finish within {limit:?}:\n{}",
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn run_samples_the_machine_and_report_reads_it() {
    let work = tempfile::tempdir().unwrap();
    let shim = work.path().join("fake_shim.so");
    std::fs::write(&shim, b"").unwrap();
    let dir = work.path().join("rec");
    let leakscope = || {
        let mut c = Command::new(EXE);
        c.env("LEAKSCOPE_SHIM", &shim).current_dir(work.path());
        c
    };
    // Debug logging on: the sampler's notes must not block on the stderr the run holds.
    let out = output_within(
        leakscope()
            .env("LEAKSCOPE_LOG", "debug")
            .args(["run", "--interval", "200ms", "-o"])
            .arg(&dir)
            .args(["--", "sleep", "1"]),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let got = readings(&std::fs::read(dir.join("machine.lks")).unwrap());
    assert!(got.len() >= 3, "{} readings: {got:?}", got.len());
    for r in &got {
        assert!(r.mem_total > 0, "{r:?}");
        assert!(r.mem_available <= r.mem_total, "{r:?}");
        if let Some(c) = &r.cgroup {
            assert!(c.limit.is_none_or(|l| l > 0), "{r:?}");
        }
    }
    assert!(
        got.windows(2).all(|w| w[0].ts < w[1].ts),
        "times do not increase: {:?}",
        got.iter().map(|r| r.ts.0).collect::<Vec<_>>()
    );

    let out = leakscope()
        .arg("report")
        .arg(&dir)
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(!err.contains("machine.lks"), "{err}");
    let _: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
}
