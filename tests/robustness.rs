//! Scenario 9: robustness. A C++ program (new/delete, containers, leaks through new and
//! new[]) matched against valgrind; allocation while SIGALRM timers fire; a dlopen/dlclose
//! loop whose leaks stay attributed to the unloaded library's function; a program that
//! closes descriptors 3..1024 mid-run; a bash pipeline with unchanged output; and a hundred
//! dlopen'd TLS modules (glibc's `__tls_get_addr` then calls `malloc`: the shim's own
//! thread-local state must not go through it, or the hook recurses until the stack
//! overflows, as it did under PyTorch on glibc 2.39).

mod common;

use common::*;
use std::ffi::OsStr;

fn site(p: &Process, f: &str) -> (u64, u64) {
    p.outstanding_where(|s| s.innermost_function() == Some(f))
}

#[test]
fn cxx_new_delete_and_containers_match_valgrind() {
    let work = Work::new("cxx");
    let prog = gxx(&work, &[&scenario("cxx.cpp")], "cxx", &[]);
    let rec = record_unchanged(&work, "rec", &prog, &[]);
    let rep = report(&rec.dir);
    let p = rep.one("cxx", "exec");
    p.assert_complete();
    // sizeof(Widget) = 8 + 40 + 8; operator new's frames are removed, so the site starts
    // in the function that said `new`.
    assert_eq!(site(p, "leak_widgets"), (5 * 56, 5), "{}", p.describe());
    assert_eq!(site(p, "leak_array"), (400, 1), "{}", p.describe());
    assert_eq!(site(p, "churn"), (0, 0), "{}", p.describe());
    assert_eq!(
        p.outstanding_where(|s| s.in_file("cxx.cpp") && !s.mentions("leak_")),
        (0, 0),
        "containers and temporaries are all freed:\n{}",
        p.describe()
    );

    let vg = valgrind(&work, "cxx", &prog, &[]);
    let vg = vg_one(&vg, "cxx", false);
    assert_matches_valgrind(p, vg, &["cxx.cpp"], LibraryKeys::Exact, |_| false);
}

#[test]
fn allocation_under_sigalrm_timers() {
    let work = Work::new("sigalrm");
    let prog = gcc(&work, &[&scenario("sigalrm.c")], "sigalrm", &[]);
    let rec = record_unchanged(&work, "rec", &prog, &[]);
    assert_eq!(text(&rec.output.stdout), "signals done\n");
    let rep = report(&rec.dir);
    let p = rep.one("sigalrm", "exec");
    p.assert_complete();
    assert_eq!(
        site(p, "leak_after_signals"),
        (64_000, 100),
        "{}",
        p.describe()
    );
    assert_eq!(site(p, "churn_until_signals"), (0, 0), "{}", p.describe());
    assert_eq!(p.unknown_frees, 0, "{}", p.describe());
}

#[test]
fn dlopen_dlclose_loop_keeps_attribution() {
    let work = Work::new("dlopen");
    let plugin = gcc(
        &work,
        &[&scenario("plugin.c")],
        "libplugin.so",
        &["-shared", "-fPIC"],
    );
    let prog = gcc(&work, &[&scenario("dl.c")], "dl", &["-ldl"]);
    let args = [plugin.as_os_str()];
    let rec = record_unchanged(&work, "rec", &prog, &args);
    let rep = report(&rec.dir);
    let p = rep.one("dl", "exec");
    p.assert_complete();
    assert_eq!(site(p, "plugin_leak"), (20 * 333, 20), "{}", p.describe());
    assert_eq!(site(p, "plugin_churn"), (0, 0), "{}", p.describe());
    for s in p
        .sites
        .iter()
        .filter(|s| s.innermost_function() == Some("plugin_leak"))
    {
        assert_eq!(
            s.frames[0].file_name(),
            Some("plugin.c"),
            "{}",
            s.describe()
        );
        assert_eq!(
            s.frames[0].module.as_deref().map(base_name),
            Some("libplugin.so"),
            "{}",
            s.describe()
        );
        assert_eq!(
            s.frames[1].function_name(),
            Some("main"),
            "{}",
            s.describe()
        );
    }

    let vg = valgrind(&work, "dlopen", &prog, &args);
    let vg = vg_one(&vg, "dl", false);
    // dlopen's own bookkeeping blocks (made inside ld.so, from main's dlopen call) are
    // compared by count: their sizes grow with the number of loaded objects, and valgrind
    // preloads two libraries where leakscope preloads one.
    assert_matches_valgrind(
        p,
        vg,
        &["dl.c", "plugin.c"],
        LibraryKeys::BlocksOnly,
        |_| false,
    );
}

#[test]
fn many_tls_modules_loaded_from_threads() {
    const COPIES: usize = 100;
    let work = Work::new("tls");
    let lib = gcc(
        &work,
        &[&scenario("tlslib.c")],
        "libtls0.so",
        &["-shared", "-fPIC"],
    );
    // Copies under other names are other modules, each with its own TLS block.
    for i in 1..COPIES {
        std::fs::copy(&lib, work.join(&format!("libtls{i}.so"))).expect("copy the library");
    }
    let prog = gcc(
        &work,
        &[&scenario("tls_dlopen.c")],
        "tls_dlopen",
        &["-ldl", "-lpthread"],
    );
    let count = COPIES.to_string();
    let dir = work.join("");
    let args = [dir.as_os_str(), OsStr::new(&count)];
    let rec = record_unchanged(&work, "rec", &prog, &args);
    let rep = report(&rec.dir);
    let p = rep.one("tls_dlopen", "exec");
    p.assert_complete();
    assert_eq!(
        site(p, "tls_leak"),
        (2 * COPIES as u64 * 48, 2 * COPIES as u64),
        "{}",
        p.describe()
    );
}

#[test]
fn threads_ending_by_pthread_exit_and_cancellation() {
    // glibc ends such threads with a forced unwind through every frame, the shim's thread
    // start routine included: a Rust frame there would abort the process.
    let work = Work::new("thread_exit");
    let prog = gcc(
        &work,
        &[&scenario("thread_exit.c")],
        "thread_exit",
        &["-pthread"],
    );
    let rec = record_unchanged(&work, "rec", &prog, &[]);
    assert!(
        text(&rec.output.stdout).contains("exit 7 cancelled 1 return 9"),
        "{}",
        text(&rec.output.stdout)
    );
    let rep = report(&rec.dir);
    let p = rep.one("thread_exit", "exec");
    p.assert_complete();
    assert_eq!(site(p, "exit_from_depth"), (1111, 1), "{}", p.describe());
    assert_eq!(site(p, "cancelled"), (2222, 1), "{}", p.describe());
    assert_eq!(site(p, "returner"), (3333, 1), "{}", p.describe());
}

#[test]
fn closing_all_descriptors_keeps_tracking() {
    let work = Work::new("closefds");
    let prog = gcc(&work, &[&scenario("closefds.c")], "closefds", &[]);
    let rec = record_unchanged(&work, "rec", &prog, &[]);
    assert_eq!(text(&rec.output.stdout), "closefds done\n");
    let rep = report(&rec.dir);
    let p = rep.one("closefds", "exec");
    // The shim keeps its socket out of the program's reach, so tracking goes on after
    // the program closed every descriptor it did not open.
    p.assert_complete();
    assert_eq!(site(p, "leak_before_close"), (3500, 5), "{}", p.describe());
    assert_eq!(site(p, "leak_after_close"), (6300, 7), "{}", p.describe());
    assert_eq!(site(p, "churn"), (0, 0), "{}", p.describe());
}

#[test]
fn bash_pipeline_output_unchanged() {
    let work = Work::new("pipeline");
    let args = [OsStr::new("-c"), OsStr::new("seq 1000 | sort -n | tail -1")];
    let rec = record_unchanged(&work, "rec", "bash", &args);
    assert_eq!(text(&rec.output.stdout), "1000\n");
    let rep = report(&rec.dir);
    for prog in ["seq", "sort", "tail"] {
        let p = rep.one(prog, "exec");
        p.assert_complete();
    }
    let bash = rep
        .processes
        .iter()
        .find(|p| p.program() == "bash" && p.origin == "exec")
        .unwrap_or_else(|| panic!("no bash process:\n{}", rep.describe()));
    assert_eq!(bash.stream, "clean", "{}", rep.describe());
    for p in &rep.processes {
        assert!(
            p.stream == "clean" || p.stream == "exec",
            "every process of the pipeline ended normally:\n{}",
            rep.describe()
        );
        assert_eq!(p.dropped.allocs, 0, "{}", p.describe());
    }
}
