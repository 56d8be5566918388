//! Compiling the C/C++ scenarios, finding Python, and running a program bare and under
//! `leakscope run` / `leakscope report`.

use super::build::binaries;
use super::process::{assert_code, assert_no_panic, run_cmd, scrub_env, shell_code, text, Work};
use super::report::{parse_report, Report};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Compiles C sources into `work/<out>` with gcc at -O2 -g (no frame pointers: the shim
/// must unwind through eh_frame), plus `extra` flags.
pub fn gcc(work: &Work, sources: &[&Path], out: &str, extra: &[&str]) -> PathBuf {
    compile("gcc", work, sources, out, &["-O2", "-g"], extra)
}

/// Like [`gcc`] for C++ with g++.
pub fn gxx(work: &Work, sources: &[&Path], out: &str, extra: &[&str]) -> PathBuf {
    compile("g++", work, sources, out, &["-O2", "-g"], extra)
}

/// Compiles with `compiler`, `opt` flags (optimization and debug info) and `extra` flags.
pub fn compile(
    compiler: &str,
    work: &Work,
    sources: &[&Path],
    out: &str,
    opt: &[&str],
    extra: &[&str],
) -> PathBuf {
    let exe = work.join(out);
    let mut cmd = Command::new(compiler);
    cmd.args(opt).arg("-Wall").arg("-o").arg(&exe);
    cmd.args(sources).args(extra);
    let o = run_cmd(&mut cmd);
    assert!(
        o.status.success(),
        "{compiler} failed for {sources:?}:\n{}",
        text(&o.stderr)
    );
    exe
}

/// The real Python interpreter (`sys.executable` of `python3` on PATH), so that runs do
/// not go through wrapper scripts such as pyenv's shims.
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let mut cmd = Command::new("python3");
            cmd.args(["-c", "import sys; print(sys.executable)"]);
            let out = run_cmd(&mut cmd);
            assert!(
                out.status.success(),
                "python3 is needed: {}",
                text(&out.stderr)
            );
            PathBuf::from(text(&out.stdout).trim())
        })
        .clone()
}

/// Runs `prog args` without any instrumentation.
pub fn bare_run(prog: impl AsRef<OsStr>, args: &[&OsStr]) -> Output {
    let mut cmd = Command::new(prog);
    cmd.args(args);
    scrub_env(&mut cmd);
    run_cmd(&mut cmd)
}

/// A finished `leakscope run`.
pub struct Recording {
    /// The recording folder (`--out`).
    pub dir: PathBuf,
    /// What `leakscope run` printed and how it exited.
    pub output: Output,
}

/// `leakscope run --out <work>/<name> -- prog args`.
pub fn record(work: &Work, name: &str, prog: impl AsRef<OsStr>, args: &[&OsStr]) -> Recording {
    record_with(work, name, &[], prog, args)
}

/// `leakscope run --out <work>/<name> <options> -- prog args`.
pub fn record_with(
    work: &Work,
    name: &str,
    options: &[&str],
    prog: impl AsRef<OsStr>,
    args: &[&OsStr],
) -> Recording {
    let dir = work.join(name);
    let mut cmd = leakscope_cmd();
    cmd.arg("run")
        .arg("--out")
        .arg(&dir)
        .args(options)
        .arg("--")
        .arg(prog)
        .args(args);
    let output = run_cmd(&mut cmd);
    assert_no_panic(&output, "leakscope run");
    Recording { dir, output }
}

/// A `leakscope` command with a scrubbed environment.
pub fn leakscope_cmd() -> Command {
    let mut cmd = Command::new(&binaries().leakscope);
    scrub_env(&mut cmd);
    cmd
}

/// Runs the program bare and under `leakscope run`, checks that stdout and the exit status
/// are the same both ways, and returns the recording.
pub fn record_unchanged(
    work: &Work,
    name: &str,
    prog: impl AsRef<OsStr>,
    args: &[&OsStr],
) -> Recording {
    record_unchanged_with(work, name, &[], prog, args)
}

/// [`record_unchanged`] with `leakscope run` options.
pub fn record_unchanged_with(
    work: &Work,
    name: &str,
    options: &[&str],
    prog: impl AsRef<OsStr>,
    args: &[&OsStr],
) -> Recording {
    let prog = prog.as_ref();
    let bare = bare_run(prog, args);
    let rec = record_with(work, name, options, prog, args);
    assert_eq!(
        text(&rec.output.stdout),
        text(&bare.stdout),
        "stdout under leakscope differs from a bare run\n--- leakscope stderr\n{}",
        text(&rec.output.stderr)
    );
    assert_eq!(
        shell_code(rec.output.status),
        shell_code(bare.status),
        "exit status under leakscope differs from a bare run\n--- leakscope stderr\n{}",
        text(&rec.output.stderr)
    );
    rec
}

/// `leakscope report <dir> --format json`, raw.
pub fn report_output(dir: &Path) -> Output {
    report_output_with(dir, &[])
}

/// `leakscope report --format json <options> <dir>`, raw.
pub fn report_output_with(dir: &Path, options: &[&str]) -> Output {
    let mut cmd = leakscope_cmd();
    cmd.arg("report")
        .args(["--format", "json"])
        .args(options)
        .arg(dir);
    let out = run_cmd(&mut cmd);
    assert_no_panic(&out, "leakscope report");
    out
}

/// `leakscope report --format json <options> <dir>`, which must succeed, as JSON.
pub fn report_json_with(dir: &Path, options: &[&str]) -> serde_json::Value {
    let out = report_output_with(dir, options);
    assert_code(&out, 0, "leakscope report");
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

/// The JSON report `leakscope run --format json` printed on `stderr` (it comes first,
/// before leakscope's line about the recording).
pub fn run_report_json(stderr: &[u8]) -> serde_json::Value {
    serde_json::Deserializer::from_slice(stderr)
        .into_iter()
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("no JSON report on stderr:\n{}", text(stderr)))
}

/// `leakscope report <dir> --format json`, which must succeed, parsed.
pub fn report(dir: &Path) -> Report {
    let out = report_output(dir);
    assert_code(&out, 0, "leakscope report");
    parse_report(&out.stdout)
}
