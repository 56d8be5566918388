//! Running a program under valgrind's memcheck and parsing its XML leak check.

use super::process::{run_cmd, scrub_env, shell_code, text, Work};
use super::report::base_name;
use super::scenario::bare_run;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// One process's leak check, from valgrind's XML.
#[derive(Debug, Clone)]
pub struct VgProcess {
    pub pid: u32,
    pub ppid: u32,
    /// The client's argv[0] and arguments.
    pub argv: Vec<String>,
    pub leaks: Vec<VgLeak>,
}

/// One loss record.
#[derive(Debug, Clone)]
pub struct VgLeak {
    /// `Leak_DefinitelyLost`, `Leak_IndirectlyLost`, `Leak_PossiblyLost`,
    /// `Leak_StillReachable`.
    pub kind: String,
    /// Bytes of the record's own blocks. For a definitely or possibly lost record,
    /// `<leakedbytes>` also counts the blocks only it points to ("N (D direct, I indirect)
    /// bytes"), which valgrind reports again as indirectly lost records; this is D.
    pub bytes: u64,
    pub blocks: u64,
    pub frames: Vec<VgFrame>,
}

#[derive(Debug, Clone)]
pub struct VgFrame {
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub obj: Option<String>,
}

impl VgProcess {
    pub fn program(&self) -> &str {
        self.argv.first().map(|a| base_name(a)).unwrap_or("")
    }

    pub fn describe(&self) -> String {
        let mut s = format!(
            "valgrind pid {} ppid {} argv {:?}\n",
            self.pid, self.ppid, self.argv
        );
        for l in &self.leaks {
            let _ = writeln!(
                s,
                "    {}: {} bytes in {} blocks",
                l.kind, l.bytes, l.blocks
            );
            for f in &l.frames {
                let _ = writeln!(
                    s,
                    "      {} ({}:{}) [{}]",
                    f.function.as_deref().unwrap_or("??"),
                    f.file.as_deref().unwrap_or("?"),
                    f.line.map_or("?".to_owned(), |l| l.to_string()),
                    f.obj.as_deref().unwrap_or("?")
                );
            }
        }
        s
    }
}

/// Runs `prog args` under memcheck, following forks and execs, and returns one leak check
/// per process that ran a leak check. Also checks that stdout and the exit status are
/// those of a bare run.
///
/// Options beyond the usual leak-check set:
/// - `--run-libc-freeres=no`, `--run-cxx-freeres=no`: by default valgrind makes glibc and
///   libstdc++ free their internal memory at exit (cached thread stacks with their TLS
///   blocks, stdio buffers), which a real run never does; leakscope sees the real run.
/// - `--default-suppressions=no`: suppressed leaks are left out of the XML; we want all.
/// - `--keep-debuginfo=yes`: stacks through a `dlclose`d library stay symbolized.
pub fn valgrind(work: &Work, tag: &str, prog: &Path, args: &[&OsStr]) -> Vec<VgProcess> {
    let dir = work.join(&format!("valgrind-{tag}"));
    std::fs::create_dir_all(&dir).expect("valgrind output folder");
    let mut cmd = Command::new("valgrind");
    cmd.arg("--tool=memcheck")
        .arg("--leak-check=full")
        .arg("--show-leak-kinds=all")
        .arg("--num-callers=64")
        .arg("--error-limit=no")
        .arg("--xml=yes")
        .arg(format!("--xml-file={}/vg.%p.xml", dir.display()))
        .arg("--child-silent-after-fork=no")
        .arg("--trace-children=yes")
        .arg("--run-libc-freeres=no")
        .arg("--run-cxx-freeres=no")
        .arg("--default-suppressions=no")
        .arg("--keep-debuginfo=yes")
        .arg(prog)
        .args(args);
    scrub_env(&mut cmd);
    let out = run_cmd(&mut cmd);
    let bare = bare_run(prog, args);
    assert_eq!(
        text(&out.stdout),
        text(&bare.stdout),
        "stdout under valgrind differs from a bare run\n--- stderr\n{}",
        text(&out.stderr)
    );
    assert_eq!(
        shell_code(out.status),
        shell_code(bare.status),
        "exit status under valgrind differs from a bare run\n--- stderr\n{}",
        text(&out.stderr)
    );
    let mut procs = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("valgrind output folder")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let xml = std::fs::read_to_string(&path).expect("valgrind XML");
        if let Some(p) = parse_valgrind_xml(&xml, &path) {
            procs.push(p);
        }
    }
    assert!(
        !procs.is_empty(),
        "valgrind wrote no leak check into {dir:?}"
    );
    procs
}

/// Parses one valgrind XML file. Returns `None` for a process that never reached its
/// leak check (one that exec'd: its file holds only the preamble).
pub fn parse_valgrind_xml(xml: &str, path: &Path) -> Option<VgProcess> {
    let doc = roxmltree::Document::parse(xml)
        .unwrap_or_else(|e| panic!("valgrind XML {path:?} does not parse: {e}"));
    let root = doc.root_element();
    let child_text = |node: roxmltree::Node, name: &str| -> Option<String> {
        node.children()
            .find(|c| c.has_tag_name(name))
            .and_then(|c| c.text())
            .map(str::to_owned)
    };
    let pid: u32 = child_text(root, "pid")?.trim().parse().ok()?;
    let ppid: u32 = child_text(root, "ppid")
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    let mut argv = Vec::new();
    if let Some(args) = root.children().find(|c| c.has_tag_name("args")) {
        if let Some(a) = args.children().find(|c| c.has_tag_name("argv")) {
            for c in a.children().filter(|c| c.is_element()) {
                argv.push(c.text().unwrap_or("").to_owned());
            }
        }
    }
    // A file whose process ran its leak check has the closing status "FINISHED".
    let finished = root
        .children()
        .filter(|c| c.has_tag_name("status"))
        .any(|s| child_text(s, "state").as_deref() == Some("FINISHED"));
    if !finished {
        return None;
    }
    let mut leaks = Vec::new();
    for err in root.children().filter(|c| c.has_tag_name("error")) {
        let kind = child_text(err, "kind").unwrap_or_default();
        if !kind.starts_with("Leak_") {
            continue;
        }
        let xwhat = err
            .children()
            .find(|c| c.has_tag_name("xwhat"))
            .expect("a leak error has <xwhat>");
        let leaked: u64 = child_text(xwhat, "leakedbytes")
            .and_then(|t| t.trim().parse().ok())
            .expect("<leakedbytes>");
        let blocks: u64 = child_text(xwhat, "leakedblocks")
            .and_then(|t| t.trim().parse().ok())
            .expect("<leakedblocks>");
        let what = child_text(xwhat, "text").unwrap_or_default();
        let bytes = direct_bytes(&what).unwrap_or(leaked);
        let stack = err
            .children()
            .find(|c| c.has_tag_name("stack"))
            .expect("a leak error has <stack>");
        let frames = stack
            .children()
            .filter(|c| c.has_tag_name("frame"))
            .map(|f| VgFrame {
                function: child_text(f, "fn"),
                file: child_text(f, "file"),
                line: child_text(f, "line").and_then(|l| l.trim().parse().ok()),
                obj: child_text(f, "obj"),
            })
            .collect();
        leaks.push(VgLeak {
            kind,
            bytes,
            blocks,
            frames,
        });
    }
    Some(VgProcess {
        pid,
        ppid,
        argv,
        leaks,
    })
}

/// The `D` of "N (D direct, I indirect) bytes in ..." (numbers may have thousands
/// separators), or `None` when the text has no such split.
fn direct_bytes(what: &str) -> Option<u64> {
    let open = what.find('(')?;
    let rest = &what[open + 1..];
    let end = rest.find(" direct")?;
    rest[..end].replace(',', "").trim().parse().ok()
}
