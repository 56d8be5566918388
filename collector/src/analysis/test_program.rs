//! Test support: compiles a small C program with `cc -g -O0`, runs it, and turns what it
//! prints (lookup addresses, then its own `/proc/self/maps`) into runtime addresses and a
//! module map of the program, as a shim would have reported them.

use leakscope_protocol::{FileOffset, ModuleId, ModuleMap, RuntimeAddr, Segment};
use std::fs;
use std::path::PathBuf;
use std::process::Command;

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir =
            std::env::temp_dir().join(format!("leakscope-{name}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir.canonicalize().expect("canonical temp dir"))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The compiled program, the addresses its first output line named, and its module map
/// from the same run.
pub struct Traced {
    _dir: TempDir,
    pub path: PathBuf,
    pub addrs: Vec<RuntimeAddr>,
    pub module: ModuleMap,
}

/// Compiles `source` as `prog.c` into a fresh directory (named after `name`) and runs it.
/// The program must print hex addresses separated by spaces on its first line, then copy
/// `/proc/self/maps` to its output.
pub fn compile_and_run(name: &str, source: &str) -> Traced {
    let dir = TempDir::new(name);
    let src = dir.0.join("prog.c");
    let path = dir.0.join("prog");
    fs::write(&src, source).expect("write source");
    let status = Command::new("cc")
        .args(["-g", "-O0", "-o"])
        .arg(&path)
        .arg(&src)
        .status()
        .expect("run cc");
    assert!(status.success(), "cc failed");
    let out = Command::new(&path).output().expect("run program");
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).expect("utf-8 output");
    let mut lines = stdout.lines();
    let addrs = lines
        .next()
        .expect("address line")
        .split_whitespace()
        .map(|a| RuntimeAddr(u64::from_str_radix(a, 16).expect("hex address")))
        .collect();

    let path_str = path.to_str().expect("utf-8 path").to_owned();
    let segments = lines
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() >= 6 && fields[5] == path_str).then(|| {
                let (start, end) = fields[0].split_once('-').expect("range");
                Segment {
                    start: RuntimeAddr(u64::from_str_radix(start, 16).unwrap()),
                    end: RuntimeAddr(u64::from_str_radix(end, 16).unwrap()),
                    file_offset: FileOffset(u64::from_str_radix(fields[2], 16).unwrap()),
                    executable: fields[1].contains('x'),
                }
            })
        })
        .collect::<Vec<_>>();
    assert!(
        segments.iter().any(|s| s.executable),
        "no executable segment"
    );
    let build_id = blazesym::helper::read_elf_build_id(&path)
        .expect("read build id")
        .map(|id| id.into_owned())
        .unwrap_or_default();
    Traced {
        _dir: dir,
        path,
        addrs,
        module: ModuleMap {
            id: ModuleId(1),
            path: path_str,
            build_id,
            segments,
        },
    }
}
