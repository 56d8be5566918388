//! The GPU route scenarios' harness: builds the stand-in CUDA libraries of
//! `tests/scenarios/cuda/` (a fake `libcuda.so.1` with made-up device addresses, a fake
//! `libcudart.so.13` that reaches it only through `cuGetProcAddress_v2`, a `libnccl.so.2` with
//! its own hidden copy of that runtime, a `libc10_cuda.so` with PyTorch's class names, and a
//! second `LD_PRELOAD` interposer), runs a program bare and under `leakscope run` with the
//! same environment, and reads three things: the program's stdout (must not change), the
//! stand-in driver's ground truth (the `FAKE-DRIVER` lines it prints on stderr at exit) and
//! the JSON report's GPU fields (format_version 2, docs/gpu.md).
//!
//! No GPU is needed: CI machines have none.

use super::build::scenarios_dir;
use super::process::{assert_code, assert_no_panic, run_cmd, scrub_env, shell_code, text, Work};
use super::report::{base_name, parse_report, strip_params, Process, Report};
use super::scenario::{compile, leakscope_cmd, report_output};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `tests/scenarios/cuda/`.
pub fn cuda_dir() -> PathBuf {
    scenarios_dir().join("cuda")
}

fn cuda_src(name: &str) -> PathBuf {
    cuda_dir().join(name)
}

const OPT: &[&str] = &["-O2", "-g"];

/// The stand-in libraries, built into `<work>/lib`.
pub struct CudaLibs {
    /// The folder holding `libcuda.so.1`, `libcudart.so.13`, `libnccl.so.2`,
    /// `libc10_cuda.so` and `libcountalloc.so` (the other interposer).
    pub dir: PathBuf,
}

impl CudaLibs {
    /// Builds every stand-in library.
    pub fn build(work: &Work) -> CudaLibs {
        let dir = work.join("lib");
        std::fs::create_dir_all(&dir).expect("create the library folder");
        let inc = format!("-I{}", cuda_dir().display());
        let origin = "-Wl,-rpath,$ORIGIN";
        // -fno-ipa-icf: keep the internal functions that cuGetProcAddress hands out apart
        // from the exported ones.
        compile(
            "gcc",
            work,
            &[&cuda_src("fake_driver.c")],
            "lib/libcuda.so.1",
            OPT,
            &[
                "-shared",
                "-fPIC",
                "-fno-ipa-icf",
                &inc,
                "-Wl,-soname,libcuda.so.1",
                "-lpthread",
            ],
        );
        compile(
            "gcc",
            work,
            &[&cuda_src("fake_runtime.c")],
            "lib/libcudart.so.13",
            OPT,
            &[
                "-shared",
                "-fPIC",
                &inc,
                "-Wl,-soname,libcudart.so.13",
                origin,
                "-ldl",
                "-lpthread",
            ],
        );
        let rename = cuda_src("rt_rename.h");
        compile(
            "gcc",
            work,
            &[&cuda_src("fake_runtime.c"), &cuda_src("fake_nccl.c")],
            "lib/libnccl.so.2",
            OPT,
            &[
                "-shared",
                "-fPIC",
                "-fvisibility=hidden",
                "-include",
                rename.to_str().expect("utf-8 path"),
                &inc,
                "-Wl,-soname,libnccl.so.2",
                origin,
                "-ldl",
                "-lpthread",
            ],
        );
        let libdir = format!("-L{}", dir.display());
        compile(
            "g++",
            work,
            &[&cuda_src("fake_c10_cuda.cpp")],
            "lib/libc10_cuda.so",
            OPT,
            &[
                "-shared",
                "-fPIC",
                &inc,
                "-Wl,-soname,libc10_cuda.so",
                &libdir,
                "-l:libcudart.so.13",
                origin,
            ],
        );
        compile(
            "gcc",
            work,
            &[&cuda_src("interposer.c")],
            "lib/libcountalloc.so",
            OPT,
            &["-shared", "-fPIC", "-ldl"],
        );
        CudaLibs { dir }
    }

    /// A library of the folder.
    pub fn lib(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Compiles a scenario program of `tests/scenarios/cuda/` (C, or C++ for `.cpp`) into
    /// `<work>/<out>`, linked against `libs` (file names in the library folder, found at run
    /// time through an RPATH to it).
    pub fn program(&self, work: &Work, source: &str, out: &str, libs: &[&str]) -> PathBuf {
        let compiler = if source.ends_with(".cpp") {
            "g++"
        } else {
            "gcc"
        };
        let mut extra = vec![
            format!("-I{}", cuda_dir().display()),
            format!("-L{}", self.dir.display()),
            format!("-Wl,-rpath,{}", self.dir.display()),
        ];
        extra.extend(libs.iter().map(|l| format!("-l:{l}")));
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        compile(compiler, work, &[&cuda_src(source)], out, OPT, &extra)
    }
}

/// A program run bare and under `leakscope run`, with what each showed.
pub struct GpuRun {
    pub bare: Output,
    /// `leakscope run`'s own output (the program's stderr included).
    pub traced: Output,
    /// The JSON report of the recording, whole.
    pub json: Value,
    /// The same, typed by the suite's common fields.
    pub report: Report,
    /// The stand-in driver's ground truth in the bare run and in the traced run.
    pub truth_bare: Truth,
    pub truth: Truth,
}

impl GpuRun {
    /// The JSON object of the process whose pid is `pid`.
    pub fn process_json(&self, pid: u32) -> &Value {
        self.json["processes"]
            .as_array()
            .and_then(|ps| {
                ps.iter()
                    .find(|p| p["pid"].as_u64() == Some(u64::from(pid)))
            })
            .unwrap_or_else(|| panic!("no process {pid} in the report"))
    }

    /// The traced run's stderr, for failure messages.
    pub fn stderr(&self) -> String {
        text(&self.traced.stderr)
    }
}

/// Runs `prog args` bare and under `leakscope run --out <work>/<name>`, both with
/// `LD_LIBRARY_PATH=<libs>` (where a system's libcuda.so.1 would be found) and, if given,
/// `LD_PRELOAD=<preload>` (leakscope puts its shim before it). Both runs must exit 0 with
/// the same stdout; the report must be format_version 2; both runs must print the driver's
/// ground truth.
pub fn run_gpu(
    work: &Work,
    name: &str,
    libs: &CudaLibs,
    prog: impl AsRef<OsStr>,
    args: &[&OsStr],
    preload: Option<&Path>,
) -> GpuRun {
    run_gpu_with(work, name, libs, prog, args, preload, &[])
}

/// [`run_gpu`] with extra options for `leakscope run` (before `--`).
pub fn run_gpu_with(
    work: &Work,
    name: &str,
    libs: &CudaLibs,
    prog: impl AsRef<OsStr>,
    args: &[&OsStr],
    preload: Option<&Path>,
    run_options: &[&str],
) -> GpuRun {
    let prog = prog.as_ref();
    let env = |cmd: &mut Command| {
        scrub_env(cmd);
        cmd.env("LD_LIBRARY_PATH", &libs.dir);
        if let Some(p) = preload {
            cmd.env("LD_PRELOAD", p);
        }
    };

    let mut cmd = Command::new(prog);
    cmd.args(args);
    env(&mut cmd);
    let bare = run_cmd(&mut cmd);
    assert_code(&bare, 0, &format!("bare run of {prog:?}"));

    let dir = work.join(name);
    let mut cmd = leakscope_cmd();
    env(&mut cmd);
    cmd.arg("run")
        .args(run_options)
        .arg("--out")
        .arg(&dir)
        .arg("--")
        .arg(prog)
        .args(args);
    let traced = run_cmd(&mut cmd);
    assert_no_panic(&traced, "leakscope run");
    assert_eq!(
        text(&traced.stdout),
        text(&bare.stdout),
        "stdout under leakscope differs from a bare run of {prog:?}\n--- leakscope stderr\n{}",
        text(&traced.stderr)
    );
    assert_eq!(
        shell_code(traced.status),
        shell_code(bare.status),
        "exit status under leakscope differs from a bare run of {prog:?}\n--- leakscope stderr\n{}",
        text(&traced.stderr)
    );

    let out = report_output(&dir);
    assert_code(&out, 0, "leakscope report");
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "report is not JSON: {e}\n{}",
            text(&out.stdout[..out.stdout.len().min(4000)])
        )
    });
    assert_eq!(
        json["format_version"].as_u64(),
        Some(2),
        "the report must be format_version 2 (docs/gpu.md)"
    );
    let report = parse_report(&out.stdout);
    let truth_bare = Truth::parse(&text(&bare.stderr));
    let truth = Truth::parse(&text(&traced.stderr));
    GpuRun {
        bare,
        traced,
        json,
        report,
        truth_bare,
        truth,
    }
}

// ------------------------------------------------------------------ ground truth

/// One stream-ordered pool as the stand-in driver saw it at exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruthPool {
    pub handle: u64,
    pub device: u64,
    pub default: bool,
    pub destroyed: bool,
    pub reserved: u64,
    pub used: u64,
}

/// The stand-in driver's account at exit (the `FAKE-DRIVER` lines).
#[derive(Debug, Clone, Default)]
pub struct Truth {
    /// `totals`: device, pinned, managed (bytes), device_blocks, pinned_blocks,
    /// managed_blocks, legacy, handles (owned, live), imported, retained (extra references),
    /// registered (bytes), bad (rejected calls).
    pub totals: BTreeMap<String, u64>,
    /// Per device: device (pointers + owned handles), pointers, handle_bytes, managed,
    /// mapped, reserved.
    pub devices: [BTreeMap<String, u64>; 2],
    pub pools: Vec<TruthPool>,
    /// How many times each driver function variant was entered.
    pub calls: BTreeMap<String, u64>,
}

fn key_values<'a>(words: impl Iterator<Item = &'a str>) -> BTreeMap<String, &'a str> {
    words
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

fn num(map: &BTreeMap<String, &str>, key: &str, line: &str) -> u64 {
    let v = map
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in {line:?}"));
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    }
    .unwrap_or_else(|e| panic!("{key}={v} in {line:?}: {e}"))
}

impl Truth {
    /// Parses the one ground-truth block in `stderr`.
    pub fn parse(stderr: &str) -> Truth {
        let lines: Vec<&str> = stderr
            .lines()
            .filter_map(|l| l.strip_prefix("FAKE-DRIVER "))
            .collect();
        let totals_lines = lines.iter().filter(|l| l.starts_with("totals ")).count();
        assert_eq!(
            totals_lines, 1,
            "expected one ground-truth block from the stand-in driver:\n{stderr}"
        );
        let mut t = Truth::default();
        for line in lines {
            let mut words = line.split_whitespace();
            let tag = words.next().unwrap_or("");
            let kv = key_values(words);
            let all = |kv: &BTreeMap<String, &str>| -> BTreeMap<String, u64> {
                kv.keys().map(|k| (k.clone(), num(kv, k, line))).collect()
            };
            match tag {
                "totals" => t.totals = all(&kv),
                "dev0" => t.devices[0] = all(&kv),
                "dev1" => t.devices[1] = all(&kv),
                "calls" => t.calls = all(&kv),
                "pool" => t.pools.push(TruthPool {
                    handle: num(&kv, "handle", line),
                    device: num(&kv, "device", line),
                    default: num(&kv, "default", line) == 1,
                    destroyed: num(&kv, "destroyed", line) == 1,
                    reserved: num(&kv, "reserved", line),
                    used: num(&kv, "used", line),
                }),
                other => panic!("unknown ground-truth line {other:?}"),
            }
        }
        t
    }

    pub fn total(&self, key: &str) -> u64 {
        *self
            .totals
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in the ground truth"))
    }

    pub fn device(&self, dev: usize, key: &str) -> u64 {
        *self.devices[dev]
            .get(key)
            .unwrap_or_else(|| panic!("no {key} for device {dev} in the ground truth"))
    }

    pub fn calls(&self, name: &str) -> u64 {
        *self
            .calls
            .get(name)
            .unwrap_or_else(|| panic!("no call counter {name}"))
    }

    /// The one pool on `device` that is (or is not) a default pool and is (or is not)
    /// destroyed.
    pub fn pool(&self, device: u64, default: bool, destroyed: bool) -> &TruthPool {
        let found: Vec<&TruthPool> = self
            .pools
            .iter()
            .filter(|p| p.device == device && p.default == default && p.destroyed == destroyed)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one pool on device {device} default={default} destroyed={destroyed}: {:?}",
            self.pools
        );
        found[0]
    }

    /// The call counters of functions that allocate, free, map or manage pools: everything
    /// but the resolvers and the export table, which a tracer may call itself.
    pub fn allocation_calls(&self) -> BTreeMap<String, u64> {
        self.calls
            .iter()
            .filter(|(k, _)| !k.starts_with("cuGetProcAddress") && *k != "cuGetExportTable")
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

// ------------------------------------------------------------------ the report's GPU view

#[derive(Debug, Clone, Deserialize)]
pub struct GpuFrame {
    pub function: Option<String>,
    pub module: Option<String>,
}

/// A site with the format_version 2 fields.
#[derive(Debug, Clone, Deserialize)]
pub struct GpuSite {
    pub memory: String,
    pub pool: String,
    #[serde(default)]
    pub device: Option<u64>,
    #[serde(default)]
    pub space: Option<String>,
    #[serde(default)]
    pub owned: Option<bool>,
    #[serde(default)]
    pub during_capture: Option<bool>,
    pub outstanding_bytes: u64,
    pub outstanding_count: u64,
    pub allocations: u64,
    pub allocated_bytes: u64,
    pub frames: Vec<GpuFrame>,
}

impl GpuSite {
    /// Whether the site's memory is GPU memory (device, pinned or managed).
    pub fn is_gpu(&self) -> bool {
        matches!(self.memory.as_str(), "device" | "pinned" | "managed")
    }

    /// Whether a frame is the function `name` (a C name, or the last component of a C++
    /// qualified name).
    pub fn has_frame(&self, name: &str) -> bool {
        self.frames.iter().any(|f| {
            f.function.as_deref().is_some_and(|full| {
                let n = strip_params(full);
                n == name || n.ends_with(&format!("::{name}"))
            })
        })
    }

    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} / {} / device {:?} / space {:?} / owned {:?} / capture {:?}: {} bytes in {} \
             outstanding ({} allocations, {} bytes)\n",
            self.memory,
            self.pool,
            self.device,
            self.space,
            self.owned,
            self.during_capture,
            self.outstanding_bytes,
            self.outstanding_count,
            self.allocations,
            self.allocated_bytes
        );
        for f in &self.frames {
            let _ = writeln!(
                s,
                "        {} [{}]",
                f.function.as_deref().unwrap_or("??"),
                f.module.as_deref().unwrap_or("?")
            );
        }
        s
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct GpuDevice {
    pub device: Option<u64>,
    #[serde(default)]
    pub by_memory: BTreeMap<String, Value>,
    #[serde(default)]
    pub reserved_address_bytes: u64,
    #[serde(default)]
    pub mapped_bytes: u64,
    #[serde(default)]
    pub registered_bytes: u64,
    #[serde(default)]
    pub imported_handles: u64,
    #[serde(default)]
    pub retained_handles: u64,
}

impl GpuDevice {
    /// (outstanding_bytes, outstanding_count) of one memory kind; zeros when absent.
    pub fn kind(&self, memory: &str) -> (u64, u64) {
        self.by_memory
            .get(memory)
            .map(|c| {
                (
                    c["outstanding_bytes"].as_u64().unwrap_or(0),
                    c["outstanding_count"].as_u64().unwrap_or(0),
                )
            })
            .unwrap_or((0, 0))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct GpuPool {
    pub pool: String,
    pub memory: String,
    pub device: Option<u64>,
    pub outstanding_bytes: u64,
    pub outstanding_count: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamPool {
    pub handle: String,
    pub device: Option<u64>,
    pub created_by_program: bool,
    pub destroyed: bool,
    pub reserved_bytes: u64,
    pub used_bytes: u64,
    pub readings: u64,
}

impl StreamPool {
    pub fn handle_value(&self) -> u64 {
        let h = self.handle.trim_start_matches("0x");
        u64::from_str_radix(h, 16)
            .unwrap_or_else(|e| panic!("stream pool handle {:?}: {e}", self.handle))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct GpuSection {
    pub devices: Vec<GpuDevice>,
    pub pools: Vec<GpuPool>,
    pub stream_pools: Vec<StreamPool>,
    pub captures: u64,
}

/// One process's GPU view of the report.
pub struct GpuProcess<'a> {
    pub process: &'a Process,
    pub json: &'a Value,
    pub sites: Vec<GpuSite>,
    pub gpu: GpuSection,
}

impl<'a> GpuProcess<'a> {
    pub fn new(run: &'a GpuRun, process: &'a Process) -> GpuProcess<'a> {
        let json = run.process_json(process.pid);
        let sites: Vec<GpuSite> = serde_json::from_value(json["sites"].clone())
            .unwrap_or_else(|e| panic!("sites of {:?}: {e}", process.argv));
        let gpu: GpuSection = serde_json::from_value(json["gpu"].clone()).unwrap_or_else(|e| {
            panic!(
                "the process's \"gpu\" section is not the one of docs/gpu.md: {e}\n{:#}",
                json["gpu"]
            )
        });
        GpuProcess {
            process,
            json,
            sites,
            gpu,
        }
    }

    pub fn describe(&self) -> String {
        let mut s = String::new();
        for site in self.sites.iter().filter(|s| s.is_gpu()) {
            let _ = write!(s, "    {}", site.describe());
        }
        let _ = writeln!(s, "gpu: {:#}", self.json["gpu"]);
        let _ = writeln!(s, "totals: {:#}", self.json["totals"]);
        s
    }

    /// `totals.by_memory.<memory>`: (outstanding_bytes, outstanding_count).
    pub fn totals(&self, memory: &str) -> (u64, u64) {
        let c = &self.json["totals"]["by_memory"][memory];
        (
            c["outstanding_bytes"].as_u64().unwrap_or(0),
            c["outstanding_count"].as_u64().unwrap_or(0),
        )
    }

    pub fn device_entry(&self, device: Option<u64>) -> Option<&GpuDevice> {
        self.gpu.devices.iter().find(|d| d.device == device)
    }
}

// ------------------------------------------------------------------ expectations

/// What the GPU sites of one planted function must show, summed over its sites of one
/// space, memory kind and pool (a function with several call sites has several sites).
#[derive(Debug, Clone)]
pub struct SiteExpect {
    pub function: &'static str,
    pub space: &'static str,
    pub memory: &'static str,
    pub pool: &'static str,
    pub device: Option<u64>,
    /// `None`: not checked (mappings, reservations and registrations, whose ownership
    /// docs/gpu.md leaves open).
    pub owned: Option<bool>,
    pub during_capture: bool,
    /// `None`: not checked (imported and retained handles, whose size docs/gpu.md does
    /// not define).
    pub bytes: Option<u64>,
    pub count: u64,
    pub allocations: u64,
}

/// An expected site, `what` being "function space memory device pool" (device `-` for
/// none): `bytes` in `count` blocks outstanding after `allocations` allocations. Pointers
/// and handles are expected owned, not made during capture.
pub fn planted(what: &'static str, bytes: u64, count: u64, allocations: u64) -> SiteExpect {
    let w: Vec<&'static str> = what.split_whitespace().collect();
    let [function, space, memory, device, pool] = w[..] else {
        panic!("{what:?} is not \"function space memory device pool\"");
    };
    SiteExpect {
        function,
        space,
        memory,
        pool,
        device: (device != "-").then(|| device.parse().expect("a device ordinal or -")),
        owned: matches!(space, "pointer" | "handle").then_some(true),
        during_capture: false,
        bytes: Some(bytes),
        count,
        allocations,
    }
}

impl SiteExpect {
    /// Made inside a capture window.
    pub fn captured(mut self) -> SiteExpect {
        self.during_capture = true;
        self
    }

    /// An imported or retained handle: not owned, size not checked.
    pub fn not_owned(mut self) -> SiteExpect {
        self.owned = Some(false);
        self.bytes = None;
        self
    }

    fn selects(&self, s: &GpuSite) -> bool {
        s.is_gpu()
            && s.space.as_deref() == Some(self.space)
            && s.memory == self.memory
            && s.pool == self.pool
            && s.has_frame(self.function)
    }

    fn describe(&self) -> String {
        format!(
            "{} ({} / {} / {})",
            self.function, self.space, self.memory, self.pool
        )
    }
}

/// One entry of `gpu.devices`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceExpect {
    pub device: Option<u64>,
    pub device_mem: (u64, u64),
    pub pinned: (u64, u64),
    pub managed: (u64, u64),
    pub reserved_address_bytes: u64,
    pub mapped_bytes: u64,
    pub registered_bytes: u64,
    pub imported_handles: u64,
    pub retained_handles: u64,
}

impl DeviceExpect {
    pub fn of(d: &GpuDevice) -> DeviceExpect {
        DeviceExpect {
            device: d.device,
            device_mem: d.kind("device"),
            pinned: d.kind("pinned"),
            managed: d.kind("managed"),
            reserved_address_bytes: d.reserved_address_bytes,
            mapped_bytes: d.mapped_bytes,
            registered_bytes: d.registered_bytes,
            imported_handles: d.imported_handles,
            retained_handles: d.retained_handles,
        }
    }

    fn is_empty(&self) -> bool {
        *self
            == DeviceExpect {
                device: self.device,
                ..DeviceExpect::default()
            }
    }
}

/// The checks of one process's GPU report. Each check notes what is wrong and goes on, so
/// that one run shows every disagreement; [`Checks::finish`] fails the test with all of
/// them and the process's GPU view.
pub struct Checks<'a> {
    p: &'a GpuProcess<'a>,
    failures: Vec<String>,
}

impl<'a> Checks<'a> {
    pub fn new(p: &'a GpuProcess<'a>) -> Checks<'a> {
        Checks {
            p,
            failures: Vec::new(),
        }
    }

    fn fail(&mut self, what: &str, detail: String) {
        self.failures.push(format!("[{what}]\n{detail}"));
    }

    /// Notes `what` unless `ok`.
    pub fn check(&mut self, ok: bool, what: &str, detail: String) {
        if !ok {
            self.fail(what, detail);
        }
    }

    /// Fails the test if any check failed.
    pub fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{} check(s) failed for {:?}:\n\n{}\n\nreport's GPU view of the process:\n{}",
            self.failures.len(),
            self.p.process.argv,
            self.failures.join("\n\n"),
            self.p.describe()
        );
    }

    /// Every expectation, summed over its sites; then no other GPU site may hold anything.
    pub fn sites(&mut self, expects: &[SiteExpect]) {
        let p = self.p;
        let mut failures = String::new();
        for e in expects {
            let sites: Vec<&GpuSite> = p.sites.iter().filter(|s| e.selects(s)).collect();
            if sites.is_empty() {
                let _ = writeln!(failures, "- no site {}", e.describe());
                continue;
            }
            let bytes: u64 = sites.iter().map(|s| s.outstanding_bytes).sum();
            let count: u64 = sites.iter().map(|s| s.outstanding_count).sum();
            let allocations: u64 = sites.iter().map(|s| s.allocations).sum();
            if count != e.count || e.bytes.is_some_and(|b| b != bytes) {
                let _ = writeln!(
                    failures,
                    "- {}: {bytes} bytes in {count} outstanding, expected {} in {}",
                    e.describe(),
                    e.bytes.map_or("(any)".to_owned(), |b| b.to_string()),
                    e.count
                );
            }
            if allocations != e.allocations {
                let _ = writeln!(
                    failures,
                    "- {}: {allocations} allocations, expected {}",
                    e.describe(),
                    e.allocations
                );
            }
            for s in &sites {
                let mut wrong = Vec::new();
                if s.device != e.device {
                    wrong.push(format!("device {:?} (expected {:?})", s.device, e.device));
                }
                if e.owned.is_some() && s.owned != e.owned {
                    wrong.push(format!("owned {:?} (expected {:?})", s.owned, e.owned));
                }
                if s.during_capture != Some(e.during_capture) {
                    wrong.push(format!(
                        "during_capture {:?} (expected {})",
                        s.during_capture, e.during_capture
                    ));
                }
                if !wrong.is_empty() {
                    let _ = writeln!(failures, "- {}: {}", e.describe(), wrong.join(", "));
                }
            }
        }
        for s in p
            .sites
            .iter()
            .filter(|s| s.is_gpu() && s.outstanding_count > 0)
        {
            if !expects.iter().any(|e| e.selects(s)) {
                let _ = writeln!(
                    failures,
                    "- unexpected GPU site holding memory:\n    {}",
                    s.describe()
                );
            }
        }
        if !failures.is_empty() {
            self.fail("sites differ from the planted ones", failures);
        }
    }

    /// No GPU site may have a frame in `function`: calls the shim must not record.
    pub fn no_site(&mut self, function: &str, why: &str) {
        let found: Vec<String> = self
            .p
            .sites
            .iter()
            .filter(|s| s.is_gpu() && s.has_frame(function))
            .map(GpuSite::describe)
            .collect();
        self.check(
            found.is_empty(),
            &format!("{function} must not be recorded ({why})"),
            found.join(""),
        );
    }

    /// `gpu.devices` must hold exactly `expects` (entries with nothing outstanding may be
    /// there besides).
    pub fn devices(&mut self, expects: &[DeviceExpect]) {
        let mut got: Vec<DeviceExpect> = self
            .p
            .gpu
            .devices
            .iter()
            .map(DeviceExpect::of)
            .filter(|d| !d.is_empty())
            .collect();
        got.sort_by_key(|d| d.device.map_or(-1, |v| v as i64));
        let mut want = expects.to_vec();
        want.sort_by_key(|d| d.device.map_or(-1, |v| v as i64));
        if got != want {
            let mut detail = String::new();
            for d in got.iter().filter(|d| !want.contains(d)) {
                let _ = writeln!(detail, "- report:   {d:?}");
            }
            for d in want.iter().filter(|d| !got.contains(d)) {
                let _ = writeln!(detail, "- expected: {d:?}");
            }
            self.fail("gpu.devices", detail);
        }
    }

    /// `gpu.pools` with something outstanding must be exactly `expects`:
    /// (pool, memory, device, outstanding_bytes, outstanding_count).
    pub fn pools(&mut self, expects: &[(&str, &str, Option<u64>, u64, u64)]) {
        let mut got: Vec<(String, String, Option<u64>, u64, u64)> = self
            .p
            .gpu
            .pools
            .iter()
            .filter(|x| x.outstanding_bytes > 0 || x.outstanding_count > 0)
            .map(|x| {
                (
                    x.pool.clone(),
                    x.memory.clone(),
                    x.device,
                    x.outstanding_bytes,
                    x.outstanding_count,
                )
            })
            .collect();
        got.sort();
        let mut want: Vec<(String, String, Option<u64>, u64, u64)> = expects
            .iter()
            .map(|&(a, b, c, d, e)| (a.to_owned(), b.to_owned(), c, d, e))
            .collect();
        want.sort();
        if got != want {
            let mut detail = String::new();
            for x in got.iter().filter(|x| !want.contains(x)) {
                let _ = writeln!(detail, "- report:   {x:?}");
            }
            for x in want.iter().filter(|x| !got.contains(x)) {
                let _ = writeln!(detail, "- expected: {x:?}");
            }
            self.fail(
                "gpu.pools (pool, memory, device, outstanding bytes, blocks)",
                detail,
            );
        }
    }

    /// `gpu.stream_pools` must be exactly the ground truth's pools that `expects` names
    /// (device, default pool?, destroyed?), with the driver's final reserved/used bytes for
    /// those not destroyed, and at least one reading each.
    pub fn stream_pools(&mut self, truth: &Truth, expects: &[(u64, bool, bool)]) {
        let p = self.p;
        let mut failures = String::new();
        for &(device, default, destroyed) in expects {
            let t = truth.pool(device, default, destroyed);
            let Some(r) = p
                .gpu
                .stream_pools
                .iter()
                .find(|s| s.handle_value() == t.handle)
            else {
                let _ = writeln!(
                    failures,
                    "- no stream pool with handle {:#x} (device {device}, default {default})",
                    t.handle
                );
                continue;
            };
            let mut wrong = Vec::new();
            if r.device != Some(device) {
                wrong.push(format!("device {:?} (expected {device})", r.device));
            }
            if r.created_by_program == default {
                wrong.push(format!(
                    "created_by_program {} (expected {})",
                    r.created_by_program, !default
                ));
            }
            if r.destroyed != destroyed {
                wrong.push(format!("destroyed {} (expected {destroyed})", r.destroyed));
            }
            if !destroyed && (r.reserved_bytes, r.used_bytes) != (t.reserved, t.used) {
                wrong.push(format!(
                    "reserved/used {}/{} (driver after the final trim: {}/{})",
                    r.reserved_bytes, r.used_bytes, t.reserved, t.used
                ));
            }
            if r.readings == 0 {
                wrong.push("no readings".to_owned());
            }
            if !wrong.is_empty() {
                let _ = writeln!(failures, "- pool {}: {}", r.handle, wrong.join(", "));
            }
        }
        if p.gpu.stream_pools.len() != expects.len() {
            let _ = writeln!(
                failures,
                "- {} stream pools reported, expected {}",
                p.gpu.stream_pools.len(),
                expects.len()
            );
        }
        if !failures.is_empty() {
            self.fail(
                &format!("gpu.stream_pools vs the driver's pools {:?}", truth.pools),
                failures,
            );
        }
    }

    /// Every free (host or GPU) found what it freed: a GPU free recorded twice, or a free
    /// of memory whose allocation was hidden, would not.
    pub fn no_unknown_frees(&mut self) {
        let n = self.p.process.unknown_frees;
        self.check(
            n == 0,
            "unknown_frees",
            format!("{n} frees of unknown blocks"),
        );
    }

    pub fn captures(&mut self, n: u64) {
        let got = self.p.gpu.captures;
        self.check(
            got == n,
            "gpu.captures",
            format!("{got} capture windows, expected {n}"),
        );
    }

    /// The report's outstanding device, pinned and managed bytes and blocks (process totals,
    /// and the sums of `gpu.devices`, and per device) must equal the stand-in driver's own
    /// account: nothing counted twice, nothing missed. The driver's account and its
    /// allocation call counters must also be the same in the bare and the traced run: the
    /// shim must not allocate, free or map anything itself.
    pub fn matches_driver(&mut self, run: &GpuRun) {
        let p = self.p;
        let t = &run.truth;
        self.check(
            t.total("bad") == 0,
            "the driver rejected calls under leakscope",
            format!("{:?}", t.totals),
        );
        self.check(
            t.totals == run.truth_bare.totals && t.devices == run.truth_bare.devices,
            "the driver's account differs between the traced and the bare run",
            format!(
                "traced {:?} {:?}\nbare   {:?} {:?}",
                t.totals, t.devices, run.truth_bare.totals, run.truth_bare.devices
            ),
        );
        let (traced, bare) = (t.allocation_calls(), run.truth_bare.allocation_calls());
        let differing: Vec<String> = traced
            .iter()
            .filter(|(k, v)| bare.get(*k) != Some(v))
            .map(|(k, v)| format!("{k}: traced {v}, bare {:?}", bare.get(k)))
            .collect();
        self.check(
            differing.is_empty(),
            "the driver's allocation functions were entered a different number of times",
            differing.join("\n"),
        );

        let driver_device = (
            t.total("device"),
            t.total("device_blocks") + t.total("handles"),
        );
        let driver_pinned = (t.total("pinned"), t.total("pinned_blocks"));
        let driver_managed = (t.total("managed"), t.total("managed_blocks"));
        let sum = |memory: &str| -> (u64, u64) {
            p.gpu.devices.iter().fold((0, 0), |(b, n), d| {
                let (db, dn) = d.kind(memory);
                (b + db, n + dn)
            })
        };
        let got = [
            ("totals.by_memory.device", p.totals("device"), driver_device),
            ("totals.by_memory.pinned", p.totals("pinned"), driver_pinned),
            (
                "totals.by_memory.managed",
                p.totals("managed"),
                driver_managed,
            ),
            ("sum of gpu.devices device", sum("device"), driver_device),
            ("sum of gpu.devices pinned", sum("pinned"), driver_pinned),
            ("sum of gpu.devices managed", sum("managed"), driver_managed),
        ];
        let mut failures = String::new();
        for (what, report, driver) in got {
            if report != driver {
                let _ = writeln!(
                    failures,
                    "- {what}: report {report:?} (bytes, blocks), driver {driver:?}"
                );
            }
        }
        for dev in 0..2u64 {
            let entry = p.device_entry(Some(dev));
            let b = entry.map_or(0, |d| d.kind("device").0);
            let m = entry.map_or(0, |d| d.kind("managed").0);
            let want_b = t.device(dev as usize, "device");
            let want_m = t.device(dev as usize, "managed");
            if (b, m) != (want_b, want_m) {
                let _ = writeln!(
                    failures,
                    "- device {dev}: report device/managed bytes {b}/{m}, driver {want_b}/{want_m}"
                );
            }
        }
        if !failures.is_empty() {
            self.fail(
                &format!(
                    "the report disagrees with the stand-in driver's account {:?}",
                    t.totals
                ),
                failures,
            );
        }
    }

    /// No host site may hold memory the stand-in driver allocated inside a CUDA call (its
    /// pinned buffers come from malloc inside `alloc_pinned`): docs/gpu.md, "each byte
    /// once".
    pub fn no_driver_host_memory(&mut self) {
        let leaked: Vec<String> = self
            .p
            .sites
            .iter()
            .filter(|s| {
                !s.is_gpu()
                    && s.outstanding_count > 0
                    && s.frames.iter().any(|f| {
                        f.module
                            .as_deref()
                            .is_some_and(|m| base_name(m) == "libcuda.so.1")
                            || f.function.as_deref().is_some_and(|n| n == "alloc_pinned")
                    })
            })
            .map(GpuSite::describe)
            .collect();
        self.check(
            leaked.is_empty(),
            "host memory allocated inside the driver is counted as the program's",
            leaked.join(""),
        );
    }
}
