//! The line-table decoders against CPython's own `code.co_lines()`: every installed
//! interpreter (3.10–3.13; `python3` is required, the others are used where present) dumps
//! a few thousand code objects compiled from its standard library, each with its first
//! line, raw `co_linetable` and the line of every code unit, and every code unit is
//! decoded here and compared (code units whose line is `None` are skipped).

use super::lines::decode;
use leakscope_protocol::PyVersion;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

/// Code objects dumped per interpreter.
const CODE_OBJECTS: usize = 5000;

/// Dumps `{"version": [3, minor], "codes": [[co_firstlineno, co_linetable hex, [line or
/// null per code unit]], ...]}` for the first code objects (depth first) of the standard
/// library's top-level modules, compiled from source in name order.
const DUMP: &str = r#"
import json, os, sys, sysconfig
limit = int(sys.argv[1])
stdlib = sysconfig.get_paths()["stdlib"]
code_type = type(compile("", "", "exec"))
codes = []
def walk(co):
    codes.append(co)
    for c in co.co_consts:
        if isinstance(c, code_type):
            walk(c)
for name in sorted(os.listdir(stdlib)):
    if len(codes) >= limit:
        break
    if not name.endswith(".py"):
        continue
    try:
        with open(os.path.join(stdlib, name), "rb") as f:
            walk(compile(f.read(), name, "exec", dont_inherit=True))
    except (SyntaxError, ValueError):
        pass
out = []
for co in codes[:limit]:
    units = len(co.co_code) // 2
    lines = [None] * units
    for start, end, line in co.co_lines():
        for offset in range(start, min(end, 2 * units), 2):
            lines[offset // 2] = line
    out.append([co.co_firstlineno, co.co_linetable.hex(), lines])
json.dump({"version": list(sys.version_info[:2]), "codes": out}, sys.stdout)
"#;

#[derive(Deserialize)]
struct Dump {
    version: (u8, u8),
    codes: Vec<(i32, String, Vec<Option<i32>>)>,
}

/// The real executable behind `command` (`sys.executable`, past wrapper scripts such as
/// pyenv's shims), if it runs.
fn executable(command: &str) -> Option<PathBuf> {
    let out = Command::new(command)
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()?;
    let path = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
}

/// `python3` (required) and every other CPython 3.10–3.13 found: `python3.X` on `PATH`,
/// pyenv's versions, Debian's `/usr/bin/python3.X`.
fn interpreters() -> Vec<PathBuf> {
    let main = executable("python3").expect("python3 is needed for the line-table test");
    let mut candidates = vec![main.display().to_string()];
    let pyenv = std::env::var("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".pyenv")))
        .map(|p| p.join("versions"));
    for minor in 10..=13 {
        candidates.push(format!("python3.{minor}"));
        candidates.push(format!("/usr/bin/python3.{minor}"));
        if let Ok(dir) = &pyenv {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(&format!("3.{minor}.")) {
                    let exe = entry.path().join("bin").join(format!("python3.{minor}"));
                    candidates.push(exe.display().to_string());
                }
            }
        }
    }
    let mut seen = BTreeSet::new();
    candidates
        .iter()
        .filter_map(|c| executable(c))
        .filter_map(|p| {
            let canonical = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
            seen.insert(canonical).then_some(p)
        })
        .collect()
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn decoders_agree_with_co_lines_on_every_installed_interpreter() {
    let mut minors = BTreeSet::new();
    for python in interpreters() {
        let out = Command::new(&python)
            .args(["-c", DUMP, &CODE_OBJECTS.to_string()])
            .output()
            .expect("run the interpreter");
        assert!(
            out.status.success(),
            "{python:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dump: Dump = serde_json::from_slice(&out.stdout).expect("the dump's JSON");
        let (major, minor) = dump.version;
        if !(10..=13).contains(&minor) || major != 3 {
            eprintln!("{python:?}: {major}.{minor} is not a supported version, skipped");
            continue;
        }
        let format = PyVersion { major, minor }.line_table();
        let (mut checked, mut skipped, mut wrong) = (0u64, 0u64, 0u64);
        let mut mismatches = Vec::new();
        for (first_line, table, lines) in &dump.codes {
            let table = hex(table);
            for (instr, want) in lines.iter().enumerate() {
                let Some(want) = *want else {
                    skipped += 1;
                    continue;
                };
                checked += 1;
                let got = decode(format, &table, *first_line, instr as i32);
                if got != Some(want) {
                    wrong += 1;
                    if mismatches.len() < 10 {
                        mismatches.push((*first_line, instr, want, got));
                    }
                }
            }
        }
        eprintln!(
            "{python:?} {major}.{minor}: {} code objects, {checked} instructions checked, \
             {skipped} without a line skipped, {wrong} mismatches",
            dump.codes.len()
        );
        assert!(
            wrong == 0,
            "{python:?}: {wrong} mismatches, the first (first line, instruction, co_lines, decoded): {mismatches:?}"
        );
        assert_eq!(
            dump.codes.len(),
            CODE_OBJECTS,
            "{python:?}: too few code objects"
        );
        assert!(checked > 50_000, "{python:?}: only {checked} instructions");
        minors.insert(minor);
    }
    assert!(minors.contains(&11), "no 3.11 interpreter was tested");
}
