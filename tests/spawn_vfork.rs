//! posix_spawn and vfork children: the shim stays out of the vfork child's way (it shares
//! the parent's memory until exec), both exec'd children are tracked through the inherited
//! environment, and the parent's own leak is exact.

mod common;

use common::*;

#[test]
fn posix_spawn_and_vfork_children_are_tracked() {
    let work = Work::new("spawn_vfork");
    let spawner = gcc(&work, &[&scenario("spawner.c")], "spawner", &[]);
    let leaf = gcc(&work, &[&scenario("leaf.c")], "leaf", &[]);
    let rec = record_unchanged(&work, "rec", &spawner, &[leaf.as_os_str()]);
    assert_eq!(
        text(&rec.output.stdout),
        "leaf done\nleaf done\nspawner: both children exited 0\n"
    );
    let rep = report(&rec.dir);
    let parent = rep.one("spawner", "exec");
    parent.assert_complete();
    let site = |p: &Process, f: &str| p.outstanding_where(|s| s.innermost_function() == Some(f));
    assert_eq!(
        site(parent, "spawner_leak"),
        (3 * 999, 3),
        "{}",
        parent.describe()
    );

    let leaves = rep.by_program("leaf");
    assert_eq!(
        leaves.len(),
        2,
        "two exec'd leaf processes:\n{}",
        rep.describe()
    );
    for child in leaves {
        child.assert_complete();
        assert_eq!(child.ppid, parent.pid, "{}", rep.describe());
        assert_eq!(
            site(child, "leaf_leak"),
            (7 * 1111, 7),
            "{}",
            child.describe()
        );
        assert_eq!(site(child, "leaf_churn"), (0, 0), "{}", child.describe());
    }
    // Nothing ran in the vfork child before its exec: no fork-origin stream.
    assert!(
        rep.processes.iter().all(|p| p.origin == "exec"),
        "{}",
        rep.describe()
    );
}
