//! Scenario 3: fork without exec. The child's report starts from what it inherited, frees
//! part of it and leaks more; the parent leaks on its own. Both processes must match
//! valgrind's per-process leak checks (valgrind follows the fork) exactly.

mod common;

use common::*;

const OWN: &[&str] = &["fork.c"];

#[test]
fn fork_child_inherits_and_matches_valgrind() {
    let work = Work::new("fork");
    let prog = gcc(&work, &[&scenario("fork.c")], "fork", &[]);

    let rec = record_unchanged(&work, "rec", &prog, &[]);
    let rep = report(&rec.dir);
    assert_eq!(rep.processes.len(), 2, "two processes:\n{}", rep.describe());
    let parent = rep.one("fork", "exec");
    let child = rep.one("fork", "fork");
    parent.assert_complete();
    child.assert_complete();
    assert_eq!(
        child.parent,
        Some(parent.pid),
        "child's parent:\n{}",
        rep.describe()
    );
    assert_eq!(child.ppid, parent.pid);
    assert_ne!(child.pid, parent.pid);

    // Planted amounts: A = 20 blocks of 1000 + i bytes; the child frees blocks 0..8.
    let a_all: u64 = (0..20).map(|i| 1000 + i).sum();
    let a_child: u64 = (8..20).map(|i| 1000 + i).sum();
    let site = |p: &Process, f: &str| p.outstanding_where(|s| s.innermost_function() == Some(f));
    assert_eq!(
        site(parent, "alloc_a"),
        (a_all, 20),
        "{}",
        parent.describe()
    );
    assert_eq!(site(parent, "parent_alloc_c"), (9000, 3));
    assert_eq!(site(parent, "child_alloc_b"), (0, 0));
    assert_eq!(
        site(child, "alloc_a"),
        (a_child, 12),
        "{}",
        child.describe()
    );
    assert_eq!(site(child, "child_alloc_b"), (10000, 5));
    assert_eq!(site(child, "parent_alloc_c"), (0, 0));
    // The child freed inherited blocks: those frees are of known allocations.
    assert_eq!(child.unknown_frees, 0, "{}", child.describe());

    let vg = valgrind(&work, "fork", &prog, &[]);
    let vg_parent = vg_one(&vg, "fork", false);
    let vg_child = vg_one(&vg, "fork", true);
    assert_eq!(vg_child.ppid, vg_parent.pid);
    assert_matches_valgrind(parent, vg_parent, OWN, LibraryKeys::Exact, |_| false);
    assert_matches_valgrind(child, vg_child, OWN, LibraryKeys::Exact, |_| false);
}
