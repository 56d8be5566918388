//! Tests of symbolization against a real C program compiled for the test, with module
//! maps taken from the program's own `/proc/self/maps`.

use super::*;
use crate::analysis::test_program::{compile_and_run, Traced};
use leakscope_protocol::Segment;
use std::process::Command;

/// Line numbers below refer to this source.
const PROGRAM: &str = r#"#include <stdio.h>
static void *where[2];
__attribute__((noinline)) void record(int i) { where[i] = __builtin_return_address(0); }
static inline __attribute__((always_inline)) void inner_helper(void) {
    record(1);
}
__attribute__((noinline)) void leaky_function(void) {
    record(0);
    inner_helper();
}
int main(void) {
    leaky_function();
    printf("%lx %lx\n", (unsigned long)where[0] - 1, (unsigned long)where[1] - 1);
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[4096];
    while (maps && fgets(line, sizeof line, maps)) fputs(line, stdout);
    return 0;
}
"#;
const RECORD_0_LINE: u32 = 8;
const INLINE_CALL_LINE: u32 = 9;
const RECORD_1_LINE: u32 = 5;

/// The program, run, with the lookup addresses of its two `record` calls.
struct Run {
    traced: Traced,
    record_0: RuntimeAddr,
    record_1: RuntimeAddr,
}

impl std::ops::Deref for Run {
    type Target = Traced;
    fn deref(&self) -> &Traced {
        &self.traced
    }
}

fn build_and_run(name: &str) -> Run {
    let traced = compile_and_run(name, PROGRAM);
    let [record_0, record_1] = traced.addrs[..] else {
        panic!("expected two addresses, got {:?}", traced.addrs);
    };
    Run {
        traced,
        record_0,
        record_1,
    }
}

fn modules(list: Vec<ModuleMap>) -> crate::state::FxHashMap<ModuleId, ModuleMap> {
    list.into_iter().map(|m| (m.id, m)).collect()
}

#[test]
fn symbolizes_function_file_line_and_inlined_frames() {
    let t = build_and_run("sym");
    let mods = modules(vec![t.module.clone()]);
    let index = ModuleIndex::new(&mods);
    let mut symbolizer = Symbolizer::new();
    let result = symbolizer.symbolize(&index, [t.record_0, t.record_1]);

    let plain = &result[&t.record_0];
    assert_eq!(plain.len(), 1, "{plain:?}");
    assert_eq!(plain[0].function.as_deref(), Some("leaky_function"));
    assert!(
        plain[0].file.as_deref().unwrap().ends_with("prog.c"),
        "{plain:?}"
    );
    assert_eq!(plain[0].line, Some(RECORD_0_LINE));
    assert_eq!(plain[0].module.as_deref(), Some("prog"));
    assert!(!plain[0].inlined);
    let offset = index.locate(t.record_0).unwrap().offset;
    assert_eq!(&*plain[0].address, format!("{:#x}", offset.0));

    let inlined = &result[&t.record_1];
    assert_eq!(inlined.len(), 2, "{inlined:?}");
    assert_eq!(inlined[0].function.as_deref(), Some("inner_helper"));
    assert_eq!(inlined[0].line, Some(RECORD_1_LINE));
    assert!(inlined[0].inlined);
    assert_eq!(inlined[1].function.as_deref(), Some("leaky_function"));
    assert_eq!(inlined[1].line, Some(INLINE_CALL_LINE));
    assert!(!inlined[1].inlined);
    assert!(symbolizer.problems().next().is_none());

    // Cached: asking again gives the same frames.
    let again = symbolizer.symbolize(&index, [t.record_0]);
    assert_eq!(&again[&t.record_0], plain);
}

#[test]
fn file_offset_follows_segments() {
    let t = build_and_run("offset");
    let mods = modules(vec![t.module.clone()]);
    let index = ModuleIndex::new(&mods);
    let loc = index.locate(t.record_0).expect("inside the program");
    let seg = t
        .module
        .segments
        .iter()
        .find(|s| s.start <= t.record_0 && t.record_0 < s.end)
        .unwrap();
    assert!(seg.executable);
    assert_eq!(loc.offset.0, t.record_0.0 - seg.start.0 + seg.file_offset.0);
    assert_eq!(loc.module.id, ModuleId(1));
}

#[test]
fn missing_changed_and_unmapped_give_unknown_frames() {
    let t = build_and_run("unknown");
    let mut changed = t.module.clone();
    changed.id = ModuleId(2);
    changed.build_id = vec![0xde, 0xad, 0xbe, 0xef];
    let changed_base = RuntimeAddr(0x7000_0000_0000);
    let shift = |s: &Segment| Segment {
        start: RuntimeAddr(s.start.0 - t.module.segments[0].start.0 + changed_base.0),
        end: RuntimeAddr(s.end.0 - t.module.segments[0].start.0 + changed_base.0),
        ..s.clone()
    };
    changed.segments = t.module.segments.iter().map(shift).collect();
    let gone = ModuleMap {
        id: ModuleId(3),
        path: "/nonexistent/leakscope/libgone.so".to_owned(),
        build_id: Vec::new(),
        segments: vec![Segment {
            start: RuntimeAddr(0x1000_0000),
            end: RuntimeAddr(0x1001_0000),
            file_offset: FileOffset(0x2000),
            executable: true,
        }],
    };
    let mods = modules(vec![changed, gone]);
    let index = ModuleIndex::new(&mods);
    let in_changed = RuntimeAddr(t.record_0.0 - t.module.segments[0].start.0 + changed_base.0);
    let in_gone = RuntimeAddr(0x1000_0040);
    let outside = RuntimeAddr(0x42);
    let mut symbolizer = Symbolizer::new();
    let result = symbolizer.symbolize(&index, [in_changed, in_gone, outside]);

    let changed_frame = &result[&in_changed];
    assert_eq!(changed_frame.len(), 1);
    assert_eq!(changed_frame[0].function, None);
    assert_eq!(changed_frame[0].module.as_deref(), Some("prog"));

    assert_eq!(
        result[&in_gone],
        vec![Frame {
            function: None,
            file: None,
            line: None,
            module: Some("libgone.so".into()),
            address: "0x2040".into(),
            inlined: false,
            python: false,
        }]
    );
    assert_eq!(
        result[&outside],
        vec![Frame {
            function: None,
            file: None,
            line: None,
            module: None,
            address: "0x42".into(),
            inlined: false,
            python: false,
        }]
    );
    let problems: Vec<_> = symbolizer.problems().map(|(_, p)| p).collect();
    assert!(problems
        .iter()
        .any(|p| matches!(p, SymbolizeError::BuildIdMismatch { .. })));
    assert!(problems.iter().any(|p| matches!(
        p,
        SymbolizeError::Symbolizer { .. } | SymbolizeError::Unreadable { .. }
    )));
}

#[test]
fn stripped_binary_keeps_module_and_offset() {
    let t = build_and_run("stripped");
    let status = Command::new("strip")
        .arg("-s")
        .arg(&t.path)
        .status()
        .expect("run strip");
    assert!(status.success());
    let mut module = t.module.clone();
    module.build_id = blazesym::helper::read_elf_build_id(&t.path)
        .expect("read build id")
        .map(|id| id.into_owned())
        .unwrap_or_default();
    let mods = modules(vec![module]);
    let index = ModuleIndex::new(&mods);
    let mut symbolizer = Symbolizer::new();
    let result = symbolizer.symbolize(&index, [t.record_0]);
    let frames = &result[&t.record_0];
    assert!(!frames.is_empty());
    assert_ne!(frames[0].function.as_deref(), Some("leaky_function"));
    assert_eq!(frames[0].line, None);
    assert_eq!(frames[0].module.as_deref(), Some("prog"));
    let offset = index.locate(t.record_0).unwrap().offset;
    assert_eq!(&*frames[0].address, format!("{:#x}", offset.0));
}
