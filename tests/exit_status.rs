//! Scenario 11: `leakscope run` exits with the traced command's status: its exit code, or
//! 128 + the signal that killed it.

mod common;

use common::*;
use std::ffi::OsStr;

#[test]
fn exit_code_passes_through() {
    let work = Work::new("exit3");
    let rec = record(
        &work,
        "rec",
        "sh",
        &[OsStr::new("-c"), OsStr::new("exit 3")],
    );
    assert_code(&rec.output, 3, "leakscope run -- sh -c 'exit 3'");
    let rep = report(&rec.dir);
    assert_eq!(rep.one("sh", "exec").stream, "clean", "{}", rep.describe());
}

#[test]
fn death_by_sigterm_is_143() {
    let work = Work::new("sigterm");
    let rec = record(
        &work,
        "rec",
        "sh",
        &[OsStr::new("-c"), OsStr::new("kill -TERM $$")],
    );
    assert_code(
        &rec.output,
        128 + libc::SIGTERM,
        "leakscope run of a SIGTERMed command",
    );
    // The report of the recording still works. The shell may die before its shim sent
    // anything; if its stream made it, it has no end record.
    let rep = report(&rec.dir);
    for sh in rep.by_program("sh") {
        assert_eq!(sh.stream, "cut_off", "{}", rep.describe());
    }
}

#[test]
fn success_is_zero() {
    let work = Work::new("exit0");
    let rec = record(&work, "rec", "true", &[]);
    assert_code(&rec.output, 0, "leakscope run -- true");
}
