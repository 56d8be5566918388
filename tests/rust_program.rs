//! A Rust program: the bundled example (`examples/leaky_server.rs`) under `leakscope run`.
//! Its planted leak (2,000 session payloads of 1,024 bytes that are never evicted) must be
//! one site whose first frame is the example's `remember_session`: Rust's allocation path
//! (`alloc::`, `RawVec`, `Vec::from_elem`, inlined from the standard library) is removed.

mod common;

use common::*;
use std::process::Command;

#[test]
fn rust_example_leak_is_attributed_to_its_function() {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let mut build = Command::new(env!("CARGO"));
    build
        .current_dir(repo_root())
        .args(["build", "-q", "--example", "leaky_server"]);
    if profile == "release" {
        build.arg("--release");
    }
    let built = run_cmd(&mut build);
    assert_code(&built, 0, "cargo build --example leaky_server");
    let example = binaries()
        .leakscope
        .parent()
        .unwrap()
        .join("examples/leaky_server");

    let work = Work::new("rust_program");
    let rec = record_unchanged(&work, "rec", &example, &["5000".as_ref()]);
    assert!(
        text(&rec.output.stdout).starts_with("served 5000 requests"),
        "{}",
        text(&rec.output.stdout)
    );
    let rep = report(&rec.dir);
    let p = rep.one("leaky_server", "exec");
    p.assert_complete();
    p.assert_no_shim_frames();
    let leak = &p.sites[0];
    assert_eq!(
        (leak.outstanding_count, leak.outstanding_bytes),
        (500, 500 * 1024),
        "{}",
        p.describe()
    );
    let first = leak.innermost_function().unwrap_or("");
    assert!(
        first.ends_with("SessionCache::remember_session"),
        "first frame is {first:?}:\n{}",
        p.describe()
    );
    assert_eq!(
        leak.frames[0].file_name(),
        Some("leaky_server.rs"),
        "{}",
        p.describe()
    );
    // Every response buffer was freed again: churn, not outstanding.
    let (bytes, _) = p.outstanding_where(|s| s.mentions("render_response"));
    assert_eq!(bytes, 0, "{}", p.describe());
}
