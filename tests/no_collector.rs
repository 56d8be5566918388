//! Scenario 7: the shim preloaded with no collector listening (LEAKSCOPE_SOCKET names an
//! abstract socket nobody bound): the program runs exactly as it does bare, and the shim
//! says so in exactly one line on stderr.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output};

/// Runs `prog` with the shim preloaded and no collector behind its socket.
fn without_collector(prog: &Path, quiet: bool) -> Output {
    let mut cmd = Command::new(prog);
    scrub_env(&mut cmd)
        .env("LD_PRELOAD", &binaries().shim)
        .env("LEAKSCOPE_SOCKET", "@nonexistent-xyz");
    if quiet {
        cmd.env("LEAKSCOPE_QUIET", "1");
    }
    run_cmd(&mut cmd)
}

#[test]
fn shim_without_collector_leaves_program_unchanged() {
    let work = Work::new("nocollector");
    let prog = gcc(&work, &[&scenario("threads.c")], "threads", &["-pthread"]);

    let bare = bare_run(&prog, &[]);
    let out = without_collector(&prog, false);

    assert_eq!(text(&out.stdout), text(&bare.stdout));
    assert_eq!(shell_code(out.status), shell_code(bare.status));
    assert_eq!(text(&bare.stdout), "threads done\n");
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr, got {stderr:?}");
    assert!(lines[0].starts_with("leakscope:"), "got {stderr:?}");

    // LEAKSCOPE_QUIET=1 silences that line.
    let out = without_collector(&prog, true);
    assert_eq!(text(&out.stdout), text(&bare.stdout));
    assert_eq!(shell_code(out.status), shell_code(bare.status));
    assert_eq!(
        text(&out.stderr),
        "",
        "LEAKSCOPE_QUIET=1 keeps stderr empty"
    );

    // A program that forks: output and status unchanged; anything on stderr is the
    // shim's one-line notice.
    let fork = gcc(&work, &[&scenario("fork.c")], "fork", &[]);
    let bare = bare_run(&fork, &[]);
    let out = without_collector(&fork, false);
    assert_eq!(text(&out.stdout), text(&bare.stdout));
    assert_eq!(shell_code(out.status), shell_code(bare.status));
    for line in text(&out.stderr).lines() {
        assert!(
            line.starts_with("leakscope:"),
            "unexpected stderr line {line:?}"
        );
    }
}
