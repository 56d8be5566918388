//! PyTorch block tracking end to end, without a GPU or PyTorch: Python programs run bare and
//! under `leakscope run --interval 100ms` with the stand-in `torch` of
//! `tests/scenarios/torch_stub` (a caching allocator in Python that fires PyTorch's
//! GPU-trace callbacks and answers `torch.cuda.memory._snapshot()` like the real one).
//!
//! - Planted tensor leaks (`# LEAK-...` lines of `torch_apps/blocks_app.py`) are block sites
//!   at exactly their lines, with the stand-in's block counts, sizes, pools (default, graph,
//!   `MemPool` with and without an allocator of its own) and devices; block totals equal
//!   `memory_allocated()`, segment totals `memory_reserved()`, every pool's figures
//!   (fragmentation included) the stand-in's own computation, over several readings; blocks
//!   never count toward the process's totals.
//! - A program's own `sitecustomize` still runs, exactly once; a program that never imports
//!   torch is left alone; `--no-torch-blocks` and `LEAKSCOPE_TORCH_BLOCKS=0` switch blocks off.
//! - Stdout and exit status are the same with and without leakscope throughout.

mod common;

use common::*;
use serde_json::Value;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn app(name: &str) -> PathBuf {
    scenarios_dir().join("torch_apps").join(name)
}

/// `PYTHONPATH` with the stand-in torch (and `extra` after it).
fn pythonpath(extra: &[PathBuf]) -> OsString {
    let mut dirs = vec![scenarios_dir().join("torch_stub")];
    dirs.extend(extra.iter().cloned());
    std::env::join_paths(dirs).expect("paths without colons")
}

/// The line of `file` that carries `# <marker>`.
fn marker_line(file: &Path, marker: &str) -> u32 {
    let src = std::fs::read_to_string(file).expect("scenario source");
    let tag = format!("# {marker}");
    let lines: Vec<usize> = src
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim_end().ends_with(&tag))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(lines.len(), 1, "{marker} must mark exactly one line");
    lines[0] as u32
}

/// Runs `python script` bare and under `leakscope run --interval 100ms --format <format>
/// <extra>` with `path` as PYTHONPATH (and `env` in both), checks that stdout and the exit
/// status are the same, and returns the leakscope run's output and recording folder.
fn run_both(
    work: &Work,
    name: &str,
    script: &Path,
    path: &OsString,
    format: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Output, PathBuf) {
    let mut bare = Command::new(python());
    bare.arg(script)
        .env("PYTHONPATH", path)
        .envs(env.iter().copied());
    scrub_env(&mut bare);
    let bare = run_cmd(&mut bare);
    assert_code(&bare, 0, "bare run");
    let dir = work.join(name);
    let mut cmd = leakscope_cmd();
    cmd.args(["run", "--interval", "100ms", "--format", format, "--out"])
        .arg(&dir)
        .args(extra)
        .arg("--")
        .arg(python())
        .arg(script)
        .env("PYTHONPATH", path)
        .envs(env.iter().copied());
    let out = run_cmd(&mut cmd);
    assert_no_panic(&out, "leakscope run");
    assert_code(&out, 0, "leakscope run");
    assert_eq!(
        text(&out.stdout),
        text(&bare.stdout),
        "stdout under leakscope differs from a bare run\n--- leakscope stderr\n{}",
        tail(&out.stderr)
    );
    (out, dir)
}

fn tail(bytes: &[u8]) -> String {
    let t = text(bytes);
    let start = t.len().saturating_sub(6000);
    t[t.char_indices()
        .find(|(i, _)| *i >= start)
        .map_or(0, |(i, _)| i)..]
        .to_owned()
}

/// `leakscope report DIR --format json [--top N]`, parsed.
fn report_json(dir: &Path, top: Option<usize>) -> Value {
    let mut cmd = leakscope_cmd();
    cmd.arg("report").arg(dir).args(["--format", "json"]);
    if let Some(n) = top {
        cmd.args(["--top", &n.to_string()]);
    }
    let out = run_cmd(&mut cmd);
    assert_code(&out, 0, "leakscope report");
    serde_json::from_slice(&out.stdout).expect("the report is JSON")
}

/// The process that ran `script`.
fn process<'a>(report: &'a Value, script: &str) -> &'a Value {
    report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| {
            p["argv"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a.as_str().unwrap().ends_with(script))
        })
        .unwrap_or_else(|| panic!("no process ran {script}"))
}

fn block_sites(p: &Value) -> Vec<&Value> {
    p["sites"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["space"] == "block")
        .collect()
}

/// The innermost Python frame of a site: (file, line).
fn headline(site: &Value) -> Option<(String, u64)> {
    let f = site["frames"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["python"] == true)?;
    Some((f["file"].as_str()?.to_owned(), f["line"].as_u64()?))
}

fn describe(site: &Value) -> String {
    let mut s = format!(
        "{} dev {} space {}: {} bytes in {} blocks, {} allocations\n",
        site["pool"],
        site["device"],
        site["space"],
        site["outstanding_bytes"],
        site["outstanding_count"],
        site["allocations"]
    );
    for f in site["frames"].as_array().unwrap().iter().take(8) {
        s.push_str(&format!(
            "      {} {}:{} [{}]{}\n",
            f["function"],
            f["file"],
            f["line"],
            f["module"],
            if f["python"] == true { " py" } else { "" }
        ));
    }
    s
}

/// The stand-in's truth: the `TRUTH {json}` line of the program's stdout.
fn truth(stdout: &[u8]) -> Value {
    let out = text(stdout);
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("TRUTH "))
        .expect("the scenario prints its truth");
    serde_json::from_str(line).expect("truth is JSON")
}

const FIGURES: [&str; 11] = [
    "reserved_bytes",
    "allocated_bytes",
    "requested_bytes",
    "awaiting_free_bytes",
    "segments",
    "allocated_blocks",
    "free_bytes",
    "free_blocks",
    "largest_free_bytes",
    "external_fragmentation_permille",
    "inactive_split_bytes",
];

#[test]
fn planted_tensor_leaks_are_reported_at_their_lines_pools_and_devices() {
    let work = Work::new("torch-blocks");
    let script = app("blocks_app.py");
    // GPU-only tracking keeps the report small (the host hooks pass through); blocks and
    // readings are recorded either way (the sitecustomize test runs with everything on).
    let (out, dir) = run_both(
        &work,
        "rec",
        &script,
        &pythonpath(&[]),
        "json",
        &["--track", "gpu"],
        &[],
    );
    let truth = truth(&out.stdout);
    let report = report_json(&dir, None);
    let p = process(&report, "blocks_app.py");
    assert_eq!(p["stream"], "clean");
    assert_eq!(p["dropped"]["allocs"], 0);
    let blocks = block_sites(p);
    let all: String = blocks.iter().map(|s| describe(s)).collect();

    // Every planted leak: one site, at its line, with the stand-in's blocks, pool, device.
    let leaks = truth["leaks"].as_object().unwrap();
    assert_eq!(leaks.len(), 6);
    for (marker, want) in leaks {
        let line = u64::from(marker_line(&script, marker));
        let at_line: Vec<&&Value> = blocks
            .iter()
            .filter(|s| headline(s).is_some_and(|(f, l)| f.ends_with("blocks_app.py") && l == line))
            .collect();
        assert_eq!(
            at_line.len(),
            1,
            "{marker}: one block site at blocks_app.py:{line}\n{all}"
        );
        let site = at_line[0];
        let device = if marker == "LEAK-DEVICE1" { 1 } else { 0 };
        assert_eq!(site["pool"], want["pool"], "{marker}\n{}", describe(site));
        assert_eq!(site["device"], device, "{marker}\n{}", describe(site));
        assert_eq!(site["outstanding_count"], want["count"], "{marker}");
        assert_eq!(site["outstanding_bytes"], want["bytes"], "{marker}");
        assert_eq!(site["memory"], "device");
        assert_eq!(site["owned"], false, "blocks are never owned");
    }

    // Churn: every block freed, placed in the default pool although its segment was new.
    let churn = u64::from(marker_line(&script, "CHURN"));
    let churn: Vec<&&Value> = blocks
        .iter()
        .filter(|s| headline(s).is_some_and(|(_, l)| l == churn))
        .collect();
    assert_eq!(churn.len(), 1, "{all}");
    assert_eq!(
        (
            &churn[0]["allocations"],
            &churn[0]["outstanding_count"],
            &churn[0]["pool"]
        ),
        (
            &Value::from(300),
            &Value::from(0),
            &Value::from("pytorch-caching")
        ),
        "{}",
        describe(churn[0])
    );

    // Totals: blocks = memory_allocated(), segments = memory_reserved(), per device.
    let allocated: Vec<u64> = serde_json::from_value(truth["allocated"].clone()).unwrap();
    let reserved: Vec<u64> = serde_json::from_value(truth["reserved"].clone()).unwrap();
    let block_bytes: u64 = blocks
        .iter()
        .map(|s| s["outstanding_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(block_bytes, allocated.iter().sum::<u64>(), "{all}");
    let torch = &p["gpu"]["torch"];
    assert_eq!(torch["blocks"]["live_bytes"], block_bytes);
    for field in ["unsized_live_blocks", "untracked_blocks", "unknown_frees"] {
        assert_eq!(torch["blocks"][field], 0, "{field}: {}", torch["blocks"]);
    }
    let devices = torch["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2);
    for d in devices {
        let i = d["device"].as_u64().unwrap() as usize;
        assert_eq!(d["latest"]["allocated_bytes"], allocated[i], "device {i}");
        assert_eq!(d["latest"]["reserved_bytes"], reserved[i], "device {i}");
        let series = d["series"].as_array().unwrap();
        assert!(series.len() >= 2, "readings over time: {}", series.len());
        let at: Vec<u64> = series
            .iter()
            .map(|f| f["at_ns"].as_u64().unwrap())
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?}");
    }
    assert!(torch["readings"].as_u64().unwrap() >= 3);
    assert!(
        p["totals"]["by_memory"].get("device").is_none(),
        "blocks must not count as device memory: {}",
        p["totals"]
    );

    // Every pool's figures equal the stand-in's own computation.
    let pools = torch["pools"].as_array().unwrap();
    let want = truth["pools"].as_object().unwrap();
    assert_eq!(pools.len(), want.len(), "{pools:#?}");
    for pool in pools {
        let id = &pool["pool_id"];
        let key = format!("{}:{},{}", pool["device"], id[0], id[1]);
        let w = want
            .get(&key)
            .unwrap_or_else(|| panic!("pool {key} unknown to the stand-in"));
        for field in FIGURES {
            assert_eq!(pool["latest"][field], w[field], "{key} {field}");
        }
        let streams: Vec<String> = w["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| format!("{:#x}", s.as_u64().unwrap()))
            .collect();
        assert_eq!(pool["streams"], serde_json::json!(streams), "{key}");
        assert!(pool["series"].as_array().unwrap().len() >= 2, "{key}");
    }
    let names: Vec<&str> = pools.iter().map(|p| p["pool"].as_str().unwrap()).collect();
    for name in [
        "pytorch-caching",
        "pytorch-graph-pool",
        "pytorch-mempool-pluggable",
        "pytorch-mempool",
    ] {
        assert!(names.contains(&name), "{names:?}");
    }
    // The default pool holds split free space and a block waiting for another stream.
    let default0 = &want["0:0,0"];
    assert!(default0["inactive_split_bytes"].as_u64().unwrap() > 0);
    assert!(
        default0["external_fragmentation_permille"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(default0["awaiting_free_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn a_programs_own_sitecustomize_still_runs_once_with_everything_tracked() {
    let work = Work::new("torch-sitecustomize");
    let script = app("small_app.py");
    let path = pythonpath(&[app("user_site")]);
    let (out, dir) = run_both(&work, "rec", &script, &path, "text", &[], &[]);
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout
            .matches("user sitecustomize ran as sitecustomize")
            .count(),
        1,
        "{stdout}"
    );
    assert!(
        stdout.contains("allocated 10240 reserved 2097152"),
        "{stdout}"
    );
    // The text report lists the block site at the planted line.
    let report = text(&out.stderr);
    let line = marker_line(&script, "LEAK-SMALL");
    let tag = "[device · pytorch-caching · cuda:0 · block]";
    let at = report
        .lines()
        .position(|l| l.contains("10.00 KiB outstanding in 1 block") && l.ends_with(tag))
        .unwrap_or_else(|| panic!("no block site line in:\n{}", tail(&out.stderr)));
    let next = report.lines().nth(at + 1).unwrap_or("");
    assert!(
        next.trim_start()
            .starts_with(&format!("<module>  {}:{line}", script.display())),
        "{next}"
    );
    assert!(report.contains("PyTorch caching allocator ("), "{report}");
    let json = report_json(&dir, Some(1));
    let t = &process(&json, "small_app.py")["gpu"]["torch"];
    assert_eq!(t["blocks"]["live_blocks"], 1);
    assert_eq!(t["blocks"]["live_bytes"], 10240);
    assert_eq!(t["devices"][0]["latest"]["reserved_bytes"], 2 << 20);
}

#[test]
fn a_program_that_never_imports_torch_is_left_alone() {
    let work = Work::new("torch-none");
    let script = app("no_torch_app.py");
    let (out, dir) = run_both(&work, "rec", &script, &pythonpath(&[]), "text", &[], &[]);
    assert_eq!(
        text(&out.stdout),
        "threads 1\ntorch imported: False\n",
        "no helper thread, no torch"
    );
    let json = report_json(&dir, Some(1));
    let p = process(&json, "no_torch_app.py");
    assert!(
        p["gpu"].is_null() || p["gpu"]["torch"].is_null(),
        "{}",
        p["gpu"]
    );
}

#[test]
fn blocks_can_be_switched_off() {
    let work = Work::new("torch-off");
    let script = app("blocks_app.py");
    for (name, extra, env) in [
        (
            "flag",
            &["--track", "gpu", "--no-torch-blocks"][..],
            &[][..],
        ),
        (
            "env",
            &["--track", "gpu"][..],
            &[("LEAKSCOPE_TORCH_BLOCKS", "0")][..],
        ),
    ] {
        let (_, dir) = run_both(&work, name, &script, &pythonpath(&[]), "json", extra, env);
        let report = report_json(&dir, None);
        let p = process(&report, "blocks_app.py");
        assert!(block_sites(p).is_empty(), "{name}: block sites");
        assert!(
            p["gpu"].is_null() || p["gpu"]["torch"].is_null(),
            "{name}: {}",
            p["gpu"]
        );
        let helper = dir.join("python").join("sitecustomize.py");
        assert!(!helper.exists(), "{name}: helper written");
    }
}
