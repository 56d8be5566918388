//! Scenario 2: 16 threads allocating at once through one shared function, each leaking a
//! known set of blocks, with blocks freed by a different thread than the one that
//! allocated them; the report must match valgrind's leak check and the planted amounts.

mod common;

use common::*;

const OWN: &[&str] = &["threads.c"];

#[test]
fn sixteen_threads_match_valgrind() {
    let work = Work::new("threads");
    let prog = gcc(&work, &[&scenario("threads.c")], "threads", &["-pthread"]);

    let rec = record_unchanged(&work, "rec", &prog, &[]);
    let rep = report(&rec.dir);
    let ours = rep.one("threads", "exec");
    ours.assert_complete();

    // The planted leak, computed from the program's formula: 16 threads x blocks
    // 0, 40, ..., 360 of 24 + 8 * thread + j % 7 bytes.
    let mut bytes = 0;
    let mut blocks = 0;
    for t in 0..16u64 {
        for j in (0..400u64).step_by(40) {
            bytes += 24 + 8 * t + j % 7;
            blocks += 1;
        }
    }
    let (b, n) = ours.outstanding_where(|s| s.innermost_function() == Some("shared_alloc"));
    assert_eq!(
        (b, n),
        (bytes, blocks),
        "planted leak:\n{}",
        ours.describe()
    );
    // The shared function's site saw all 16 x 400 allocations.
    let allocs: u64 = ours
        .sites
        .iter()
        .filter(|s| s.innermost_function() == Some("shared_alloc"))
        .map(|s| s.allocations)
        .sum();
    assert_eq!(allocs, 16 * 400);
    let (b, n) = ours.outstanding_where(|s| s.innermost_function() == Some("grow_and_drop"));
    assert_eq!((b, n), (0, 0), "grow_and_drop frees its buffer");

    let vg = valgrind(&work, "threads", &prog, &[]);
    let vg = vg_one(&vg, "threads", false);
    // Blocks glibc allocates inside pthread_create (each thread's DTV, kept with the
    // cached stacks) are compared by count only: their size grows with the number of
    // loaded modules that have TLS, and the shim is one more such module.
    assert_matches_valgrind(ours, vg, OWN, LibraryKeys::BlocksOnly, |_| false);

    // Every free in this program is of a block allocated after tracking began, whichever
    // thread allocated it: none may be unknown.
    assert_eq!(ours.unknown_frees, 0, "unknown frees:\n{}", ours.describe());
}
