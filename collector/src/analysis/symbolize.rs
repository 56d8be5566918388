//! Symbolization: runtime addresses to frames (function, source file and line, inlined
//! functions) through the module maps a process reported and the modules' ELF files, with
//! blazesym. Results are cached per module file and per address; each file is symbolized in
//! one batch per request. A file that is missing, changed since the run (build id mismatch)
//! or has no symbols still yields frames: module name and offset, function unknown.

use crate::analysis::frames::module_file_name;
use crate::analysis::model::Frame;
use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{CodeInfo, Input, Symbolized};
use leakscope_protocol::{FileOffset, ModuleId, ModuleMap, RuntimeAddr};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use thiserror::Error;

/// Why a module's file could not be used for symbolization.
#[derive(Debug, Error)]
pub enum SymbolizeError {
    #[error("cannot read build id of {path}: {source}")]
    Unreadable {
        path: String,
        #[source]
        source: super::build_id::BuildIdError,
    },
    #[error("{path} has changed since the run: build id {found}, the run's was {expected}")]
    BuildIdMismatch {
        path: String,
        expected: String,
        found: String,
    },
    #[error("{path} has changed since the run: it has no build id, the run's was {expected}")]
    BuildIdMissing { path: String, expected: String },
    #[error("cannot symbolize with {path}: {source}")]
    Symbolizer {
        path: String,
        #[source]
        source: blazesym::Error,
    },
}

/// A module file as the run saw it: the same path with another build id is another file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct FileKey {
    path: String,
    build_id: Vec<u8>,
}

/// What blazesym found for one offset: the frames, innermost first, without module and
/// address (those are added per use).
#[derive(Clone, Debug, Default)]
struct SourceFrame {
    function: Option<Arc<str>>,
    file: Option<Arc<str>>,
    line: Option<u32>,
    inlined: bool,
}

/// Per-file state: usable or not, and the offsets symbolized so far.
#[derive(Debug, Default)]
struct FileEntry {
    problem: Option<SymbolizeError>,
    checked: bool,
    offsets: HashMap<FileOffset, Vec<SourceFrame>>,
}

/// Where a runtime address lies: the module and the offset into the module's file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location<'m> {
    pub module: &'m ModuleMap,
    pub offset: FileOffset,
}

/// The segments of one process's modules, sorted for address lookup.
#[derive(Debug)]
pub struct ModuleIndex<'m> {
    /// (start, end, module), sorted by start, later modules after earlier ones at equal
    /// starts.
    segments: Vec<(RuntimeAddr, RuntimeAddr, FileOffset, &'m ModuleMap)>,
}

impl<'m> ModuleIndex<'m> {
    /// Indexes every segment of `modules`.
    pub fn new(modules: &'m crate::state::FxHashMap<ModuleId, ModuleMap>) -> Self {
        let mut segments: Vec<_> = modules
            .values()
            .flat_map(|m| {
                m.segments
                    .iter()
                    .filter(|s| s.start < s.end)
                    .map(move |s| (s.start, s.end, s.file_offset, m))
            })
            .collect();
        segments.sort_by_key(|&(start, _, _, m)| (start, m.id));
        ModuleIndex { segments }
    }

    /// The module containing `addr` and the file offset of `addr` in it. Where segments
    /// overlap (a module loaded where an unloaded one was), the latest module wins.
    pub fn locate(&self, addr: RuntimeAddr) -> Option<Location<'m>> {
        let candidates = self.segments.partition_point(|&(start, ..)| start <= addr);
        self.segments[..candidates]
            .iter()
            .filter(|&&(_, end, _, _)| addr < end)
            .max_by_key(|&&(_, _, _, m)| m.id)
            .map(|&(start, _, file_offset, module)| Location {
                module,
                offset: FileOffset(file_offset.0.saturating_add(addr.0 - start.0)),
            })
    }
}

/// Symbolizes addresses of any number of processes, caching per module file and offset.
pub struct Symbolizer {
    inner: blazesym::symbolize::Symbolizer,
    files: HashMap<FileKey, FileEntry>,
    /// Read the CPython interpreter's debug information (file and line of its own frames).
    interpreter_lines: bool,
}

impl std::fmt::Debug for Symbolizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Symbolizer")
            .field("files", &self.files.len())
            .finish_non_exhaustive()
    }
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    /// A symbolizer with source locations, inlined functions and demangling enabled.
    pub fn new() -> Self {
        let inner = blazesym::symbolize::Symbolizer::builder()
            .enable_code_info(true)
            .enable_inlined_fns(true)
            .enable_demangling(true)
            .build();
        Symbolizer {
            inner,
            files: HashMap::new(),
            interpreter_lines: true,
        }
    }

    /// A symbolizer that names the CPython interpreter's own frames from its symbol table
    /// only, without file and line: for runs whose stacks have Python frames, where the
    /// interpreter's frames are folded around the Python frames that describe them, and
    /// reading its debug information (tens of megabytes) would cost every run a tenth of a
    /// second or more.
    pub fn without_interpreter_lines() -> Self {
        Symbolizer {
            interpreter_lines: false,
            ..Symbolizer::new()
        }
    }

    /// Frames for each of `addrs` (innermost first per address; an address inside inlined
    /// code gives several). Every address gets at least one frame.
    pub fn symbolize<I>(
        &mut self,
        index: &ModuleIndex<'_>,
        addrs: I,
    ) -> HashMap<RuntimeAddr, Vec<Frame>>
    where
        I: IntoIterator<Item = RuntimeAddr>,
    {
        let located: Vec<(RuntimeAddr, Option<Location<'_>>)> = addrs
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|addr| (addr, index.locate(addr)))
            .collect();

        let mut wanted: HashMap<FileKey, BTreeSet<FileOffset>> = HashMap::new();
        for (_, loc) in &located {
            if let Some(loc) = loc {
                wanted
                    .entry(file_key(loc.module))
                    .or_default()
                    .insert(loc.offset);
            }
        }
        for (key, offsets) in wanted {
            self.resolve_file(key, offsets);
        }

        located
            .into_iter()
            .map(|(addr, loc)| (addr, self.frames_for(addr, loc)))
            .collect()
    }

    /// Problems met with module files so far, by path.
    pub fn problems(&self) -> impl Iterator<Item = (&str, &SymbolizeError)> {
        self.files
            .iter()
            .filter_map(|(key, entry)| entry.problem.as_ref().map(|p| (key.path.as_str(), p)))
    }

    /// Checks the file once, then symbolizes the offsets not cached yet in one batch.
    fn resolve_file(&mut self, key: FileKey, offsets: BTreeSet<FileOffset>) {
        let entry = self.files.entry(key.clone()).or_default();
        if !entry.checked {
            entry.checked = true;
            entry.problem = check_build_id(&key).err();
            if let Some(problem) = &entry.problem {
                tracing::warn!("symbolization: {problem}");
            }
        }
        if entry.problem.is_some() {
            return;
        }
        let missing: Vec<u64> = offsets
            .into_iter()
            .filter(|o| !entry.offsets.contains_key(o))
            .map(|o| o.0)
            .collect();
        if missing.is_empty() {
            return;
        }
        let mut elf = Elf::new(&key.path);
        elf.debug_syms = self.interpreter_lines
            || !std::path::Path::new(&key.path)
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(crate::analysis::python::is_interpreter_module);
        let src = Source::Elf(elf);
        match self.inner.symbolize(&src, Input::FileOffset(&missing)) {
            Ok(results) => {
                for (offset, result) in missing.iter().zip(results) {
                    entry
                        .offsets
                        .insert(FileOffset(*offset), source_frames(&result));
                }
            }
            Err(source) => {
                let problem = SymbolizeError::Symbolizer {
                    path: key.path.clone(),
                    source,
                };
                tracing::warn!("symbolization: {problem}");
                entry.problem = Some(problem);
            }
        }
    }

    /// Frames of one address from the cache; an unknown frame where nothing was found.
    fn frames_for(&self, addr: RuntimeAddr, loc: Option<Location<'_>>) -> Vec<Frame> {
        let Some(loc) = loc else {
            return vec![Frame {
                function: None,
                file: None,
                line: None,
                module: None,
                address: format!("{:#x}", addr.0).into(),
                inlined: false,
                python: false,
            }];
        };
        let module: Arc<str> = module_file_name(&loc.module.path).into();
        let address: Arc<str> = format!("{:#x}", loc.offset.0).into();
        let found = self
            .files
            .get(&file_key(loc.module))
            .and_then(|entry| entry.offsets.get(&loc.offset))
            .filter(|frames| !frames.is_empty());
        let unknown = [SourceFrame::default()];
        let frames: &[SourceFrame] = found.map_or(&unknown[..], Vec::as_slice);
        frames
            .iter()
            .map(|f| Frame {
                function: f.function.clone(),
                file: f.file.clone(),
                line: f.line,
                module: Some(module.clone()),
                address: address.clone(),
                inlined: f.inlined,
                python: false,
            })
            .collect()
    }
}

fn file_key(module: &ModuleMap) -> FileKey {
    FileKey {
        path: module.path.clone(),
        build_id: module.build_id.clone(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fails when the run recorded a build id and the file on disk has another or none.
fn check_build_id(key: &FileKey) -> Result<(), SymbolizeError> {
    if key.build_id.is_empty() {
        return Ok(());
    }
    let found = super::build_id::read(Path::new(&key.path)).map_err(|source| {
        SymbolizeError::Unreadable {
            path: key.path.clone(),
            source,
        }
    })?;
    match found {
        Some(found) if *found == *key.build_id => Ok(()),
        Some(found) => Err(SymbolizeError::BuildIdMismatch {
            path: key.path.clone(),
            expected: hex(&key.build_id),
            found: hex(&found),
        }),
        None => Err(SymbolizeError::BuildIdMissing {
            path: key.path.clone(),
            expected: hex(&key.build_id),
        }),
    }
}

/// The frames of one blazesym result, innermost first: the inlined functions (blazesym
/// lists them outermost first) and then the function the address is in.
fn source_frames(result: &Symbolized<'_>) -> Vec<SourceFrame> {
    let Symbolized::Sym(sym) = result else {
        return vec![SourceFrame::default()];
    };
    let (file, line) = code_location(sym.code_info.as_deref());
    let outer = SourceFrame {
        function: (!sym.name.is_empty()).then(|| Arc::from(&*sym.name)),
        file: file.map(Arc::from),
        line,
        inlined: false,
    };
    sym.inlined
        .iter()
        .rev()
        .map(|f| {
            let (file, line) = code_location(f.code_info.as_ref());
            SourceFrame {
                function: (!f.name.is_empty()).then(|| Arc::from(&*f.name)),
                file: file.map(Arc::from),
                line,
                inlined: true,
            }
        })
        .chain(std::iter::once(outer))
        .collect()
}

fn code_location(info: Option<&CodeInfo<'_>>) -> (Option<String>, Option<u32>) {
    match info {
        Some(info) => (
            Some(info.to_path().to_string_lossy().into_owned()),
            info.line,
        ),
        None => (None, None),
    }
}

#[cfg(test)]
#[path = "symbolize_tests.rs"]
mod tests;
