//! Scenario 6: a Python program with planted leaks, attributed through native frames:
//! 100 blocks of 4096 bytes from libc's malloc called through ctypes, and 50 bytearrays of
//! 100,000 bytes leaked by an extra reference each.

mod common;

use common::*;

#[test]
fn python_planted_leaks_are_attributed() {
    let work = Work::new("python");
    let script = scenario("leak.py");
    let rec = record_unchanged(&work, "rec", python(), &[script.as_os_str()]);
    assert_eq!(
        text(&rec.output.stdout),
        "leak.py kept 100 blocks and 50 bytearrays\n"
    );
    let rep = report(&rec.dir);
    let py = rep
        .processes
        .iter()
        .find(|p| p.argv.iter().any(|a| a.ends_with("leak.py")))
        .unwrap_or_else(|| panic!("no process ran leak.py:\n{}", rep.describe()));
    py.assert_complete();

    // The ctypes blocks: every one of the 100 calls has the same native stack (valgrind
    // agrees: one stack for all), so they make exactly one site.
    let ffi: Vec<&Site> = py
        .sites
        .iter()
        .filter(|s| s.memory == "host" && s.mentions("ffi_call") && s.outstanding_count > 0)
        .collect();
    assert_eq!(ffi.len(), 1, "one ctypes malloc site:\n{}", py.describe());
    assert_eq!(
        (ffi[0].outstanding_count, ffi[0].outstanding_bytes),
        (100, 409_600),
        "{}",
        ffi[0].describe()
    );
    // Allocator frames are removed: the site starts at the caller of malloc (libffi's
    // trampoline or ffi_call), not in the shim or malloc.
    let first = ffi[0].frames[0].function.as_deref().unwrap_or("");
    assert!(
        !first.contains("malloc"),
        "allocator frame left at the top: {}",
        ffi[0].describe()
    );

    // The bytearrays: bytearray(100_000) allocates 100,001 bytes (a trailing NUL) in
    // PyByteArray_Resize.
    let (bytes, blocks) =
        py.outstanding_where(|s| s.memory == "host" && s.mentions("PyByteArray_"));
    assert!(
        bytes >= 5_000_000 && blocks >= 50,
        "bytearrays: {bytes} bytes in {blocks} blocks\n{}",
        py.describe()
    );
}
