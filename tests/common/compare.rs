//! Comparing one process's report with valgrind's leak check, key by key (the scenario's
//! own frames, direct or inside a library).

use super::report::{base_name, strip_params, Frame, Process};
use super::valgrind::VgProcess;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// A frame of the scenario's own code.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Loc {
    pub function: String,
    pub file: String,
    pub line: u32,
}

impl std::fmt::Display for Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}:{}", self.function, self.file, self.line)
    }
}

/// What the comparison groups by: the scenario frames of a stack, innermost first, and
/// whether the code that called the allocator is scenario code (`direct`) or a library
/// the scenario called (glibc's `pthread_create`, libstdc++'s vector growth, ...).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub direct: bool,
    pub frames: Vec<Loc>,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let frames: Vec<String> = self.frames.iter().map(Loc::to_string).collect();
        write!(
            f,
            "{}[{}]",
            if self.direct { "" } else { "(via library) " },
            frames.join(" < ")
        )
    }
}

/// Bytes and blocks outstanding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub bytes: u64,
    pub blocks: u64,
}

fn own_loc(
    function: Option<&str>,
    file: Option<&str>,
    line: Option<u32>,
    own: &[&str],
) -> Option<Loc> {
    let file = base_name(file?);
    if !own.contains(&file) {
        return None;
    }
    Some(Loc {
        function: strip_params(function.unwrap_or("??")).to_owned(),
        file: file.to_owned(),
        line: line.unwrap_or(0),
    })
}

/// Our host-heap sites, summed per [`Key`]; sites without any scenario frame are left out.
pub fn ours_by_key(process: &Process, own: &[&str]) -> BTreeMap<Key, Tally> {
    let mut map: BTreeMap<Key, Tally> = BTreeMap::new();
    for site in process.sites.iter().filter(|s| s.memory == "host") {
        if site.outstanding_count == 0 {
            continue;
        }
        let frames: Vec<Loc> = site
            .frames
            .iter()
            .filter_map(|f| own_loc(f.function.as_deref(), f.file.as_deref(), f.line, own))
            .collect();
        if frames.is_empty() {
            continue;
        }
        let direct = site
            .frames
            .first()
            .and_then(Frame::file_name)
            .is_some_and(|f| own.contains(&f));
        let t = map.entry(Key { direct, frames }).or_default();
        t.bytes += site.outstanding_bytes;
        t.blocks += site.outstanding_count;
    }
    map
}

/// valgrind's loss records (every kind), summed per [`Key`]. valgrind's own allocator
/// replacements (the frames in its `vgpreload_*` library) are dropped from the innermost
/// end, as leakscope drops the allocator's frames.
pub fn valgrind_by_key(process: &VgProcess, own: &[&str]) -> BTreeMap<Key, Tally> {
    let mut map: BTreeMap<Key, Tally> = BTreeMap::new();
    for leak in &process.leaks {
        let skip = leak
            .frames
            .iter()
            .take_while(|f| f.obj.as_deref().is_some_and(|o| o.contains("vgpreload")))
            .count();
        let stack = &leak.frames[skip..];
        let frames: Vec<Loc> = stack
            .iter()
            .filter_map(|f| own_loc(f.function.as_deref(), f.file.as_deref(), f.line, own))
            .collect();
        if frames.is_empty() {
            continue;
        }
        let direct = stack
            .first()
            .and_then(|f| f.file.as_deref())
            .is_some_and(|f| own.contains(&base_name(f)));
        let t = map.entry(Key { direct, frames }).or_default();
        t.bytes += leak.bytes;
        t.blocks += leak.blocks;
    }
    map
}

/// How to compare keys whose allocation was made inside a library (not `direct`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibraryKeys {
    /// Bytes and blocks must match, like direct keys.
    Exact,
    /// Blocks must match; bytes may differ (a library's internal block sizes can depend
    /// on which libraries are loaded, and valgrind preloads two of its own).
    BlocksOnly,
}

/// Compares one process's report with valgrind's leak check for the same program, key by
/// key, over the keys on either side except those `skip` accepts. Panics with a table of
/// every key when anything differs.
pub fn assert_matches_valgrind(
    ours: &Process,
    vg: &VgProcess,
    own: &[&str],
    library: LibraryKeys,
    skip: impl Fn(&Key) -> bool,
) {
    ours.assert_no_shim_frames();
    let a = ours_by_key(ours, own);
    let b = valgrind_by_key(vg, own);
    let keys: BTreeSet<&Key> = a.keys().chain(b.keys()).filter(|k| !skip(k)).collect();
    let mut table = String::new();
    let mut bad = 0;
    for k in &keys {
        let x = a.get(k).copied().unwrap_or_default();
        let y = b.get(k).copied().unwrap_or_default();
        let same = if k.direct || library == LibraryKeys::Exact {
            x == y
        } else {
            x.blocks == y.blocks
        };
        if !same {
            bad += 1;
        }
        let _ = writeln!(
            table,
            "{} leakscope {:>8} B {:>5} blk | valgrind {:>8} B {:>5} blk  {}",
            if same { "  " } else { "!!" },
            x.bytes,
            x.blocks,
            y.bytes,
            y.blocks,
            k
        );
    }
    assert!(
        !keys.is_empty(),
        "no scenario frames on either side\n--- ours\n{}\n--- valgrind\n{}",
        ours.describe(),
        vg.describe()
    );
    assert!(
        bad == 0,
        "{bad} of {} keys differ between leakscope and valgrind for {:?}:\n{table}\n--- leakscope\n{}\n--- valgrind\n{}",
        keys.len(),
        ours.argv,
        ours.describe(),
        vg.describe()
    );
}

/// The valgrind process whose argv[0] has base name `program` and whose parent is (or is
/// not) another traced process.
pub fn vg_one<'a>(procs: &'a [VgProcess], program: &str, child: bool) -> &'a VgProcess {
    let pids: BTreeSet<u32> = procs.iter().map(|p| p.pid).collect();
    let found: Vec<_> = procs
        .iter()
        .filter(|p| p.program() == program && pids.contains(&p.ppid) == child)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {} valgrind process of {program}, got:\n{}",
        if child { "child" } else { "top-level" },
        procs.iter().map(VgProcess::describe).collect::<String>()
    );
    found[0]
}
