//! Scenario 5: processes that exec. A C program forks and execs another program: both
//! streams appear (the exec'd one through the inherited environment) and each matches
//! valgrind, which follows the exec too. A Python `multiprocessing` worker started with
//! the 'spawn' method leaks through ctypes' call of malloc and is attributed there.

mod common;

use common::*;

#[test]
fn fork_exec_child_is_tracked_and_matches_valgrind() {
    let work = Work::new("exec");
    let execer = gcc(&work, &[&scenario("execer.c")], "execer", &[]);
    let leaf = gcc(&work, &[&scenario("leaf.c")], "leaf", &[]);
    let args = [leaf.as_os_str()];

    let rec = record_unchanged(&work, "rec", &execer, &args);
    assert_eq!(
        text(&rec.output.stdout),
        "leaf done\nexecer: child exited 0\n"
    );
    let rep = report(&rec.dir);
    let parent = rep.one("execer", "exec");
    let child = rep.one("leaf", "exec");
    parent.assert_complete();
    child.assert_complete();
    assert_eq!(child.ppid, parent.pid, "{}", rep.describe());
    // Between fork and exec the child may have a stream of its own; if so, it ended
    // because of the exec, under the pid the exec'd program then had.
    for p in &rep.processes {
        if p.origin == "fork" {
            assert_eq!(p.stream, "exec", "{}", rep.describe());
            assert_eq!(p.pid, child.pid, "{}", rep.describe());
        }
    }
    assert!(rep.processes.len() <= 3, "{}", rep.describe());

    let site = |p: &Process, f: &str| p.outstanding_where(|s| s.innermost_function() == Some(f));
    assert_eq!(
        site(parent, "parent_leak"),
        (4 * 555, 4),
        "{}",
        parent.describe()
    );
    assert_eq!(
        site(child, "leaf_leak"),
        (7 * 1111, 7),
        "{}",
        child.describe()
    );
    assert_eq!(site(child, "leaf_churn"), (0, 0));
    // The exec'd image starts afresh: nothing of the parent's is in its report.
    assert_eq!(site(child, "parent_leak"), (0, 0));

    let vg = valgrind(&work, "exec", &execer, &args);
    let vg_parent = vg_one(&vg, "execer", false);
    let vg_child = vg_one(&vg, "leaf", true);
    assert_matches_valgrind(parent, vg_parent, &["execer.c"], LibraryKeys::Exact, |_| {
        false
    });
    assert_matches_valgrind(child, vg_child, &["leaf.c"], LibraryKeys::Exact, |_| false);
}

#[test]
fn multiprocessing_spawn_worker_leak_is_attributed() {
    let work = Work::new("spawn");
    let script = scenario("spawn_leak.py");
    let rec = record_unchanged(&work, "rec", python(), &[script.as_os_str()]);
    assert_eq!(
        text(&rec.output.stdout),
        "worker kept 37\nspawn done, worker exit 0\n"
    );
    let rep = report(&rec.dir);
    // The worker is a fresh interpreter exec'd by the parent: its command line names
    // multiprocessing's spawn entry point.
    let workers: Vec<&Process> = rep
        .processes
        .iter()
        .filter(|p| p.origin == "exec" && p.argv.iter().any(|a| a.contains("spawn_main")))
        .collect();
    assert_eq!(workers.len(), 1, "one spawn worker:\n{}", rep.describe());
    let worker = workers[0];
    worker.assert_complete();
    let main = rep
        .processes
        .iter()
        .find(|p| p.argv.iter().any(|a| a.ends_with("spawn_leak.py")))
        .unwrap_or_else(|| panic!("main interpreter missing:\n{}", rep.describe()));
    assert_eq!(main.stream, "clean");

    // ctypes calls malloc through libffi: the planted blocks sit under ffi_call.
    let (bytes, blocks) =
        worker.outstanding_where(|s| s.memory == "host" && s.mentions("ffi_call"));
    assert_eq!(blocks, 37, "{}", worker.describe());
    assert!(bytes >= 37 * 12345, "{}", worker.describe());
    // Nothing under ffi_call in the parent, which never called malloc through ctypes.
    assert_eq!(
        main.outstanding_where(|s| s.mentions("ffi_call")),
        (0, 0),
        "{}",
        main.describe()
    );
}
