//! From a stack's Python part to report frames: each `(code, instruction)` entry becomes a
//! [`Frame`] marked `python` (function = qualname, file = filename, line from the line
//! table, cached per code key and instruction), grouped into evaluation-loop segments.

use crate::analysis::model::Frame;
use crate::analysis::python::lines;
use crate::state::{FxHashMap, FxHashSet};
use leakscope_protocol::{CodeKey, PyCode, PyFrame};
use std::sync::Arc;

/// Resolves the Python frames of one process's stacks against its code definitions.
#[derive(Debug)]
pub struct PyResolver<'c> {
    codes: &'c FxHashMap<CodeKey, Arc<PyCode>>,
    /// Interned texts per code key: (qualname, filename).
    names: FxHashMap<CodeKey, (Arc<str>, Arc<str>)>,
    lines: FxHashMap<(CodeKey, i32), Option<u32>>,
    /// Code keys named by Python frames that the stream never defined.
    undefined: FxHashSet<CodeKey>,
}

impl<'c> PyResolver<'c> {
    /// A resolver over the process's code definitions.
    pub fn new(codes: &'c FxHashMap<CodeKey, Arc<PyCode>>) -> Self {
        PyResolver {
            codes,
            names: FxHashMap::default(),
            lines: FxHashMap::default(),
            undefined: FxHashSet::default(),
        }
    }

    /// How many code keys the resolved frames named without a definition.
    pub fn undefined_codes(&self) -> u64 {
        self.undefined.len() as u64
    }

    /// The line `instr` of `code` runs: from the line table; `first_line` before the first
    /// instruction and where the table does not cover `instr` (a table the shim cut short,
    /// or a damaged one). `None` for a line below 0.
    pub fn line(&mut self, code: &PyCode, instr: i32) -> Option<u32> {
        *self.lines.entry((code.key, instr)).or_insert_with(|| {
            let format = code.version.line_table();
            let line = lines::decode(format, &code.line_table, code.first_line, instr)
                .unwrap_or(code.first_line);
            u32::try_from(line).ok()
        })
    }

    /// The report frame of one Python frame entry.
    pub fn frame(&mut self, key: CodeKey, instr: i32) -> Frame {
        let address: Arc<str> = if instr >= 0 {
            format!("{:#x}", i64::from(instr) * 2).into()
        } else {
            "0x0".into()
        };
        let Some(code) = self.codes.get(&key) else {
            self.undefined.insert(key);
            return Frame {
                function: None,
                file: None,
                line: None,
                module: None,
                address: format!("code {:#x}+{address}", key.0).into(),
                inlined: false,
                python: true,
            };
        };
        let code = Arc::clone(code);
        let line = self.line(&code, instr);
        let (function, file) = self
            .names
            .entry(key)
            .or_insert_with(|| (code.qualname.as_str().into(), code.filename.as_str().into()))
            .clone();
        Frame {
            function: Some(function),
            file: Some(file),
            line,
            module: None,
            address,
            inlined: false,
            python: true,
        }
    }

    /// The stack's Python frames split into evaluation-loop segments, innermost first: a
    /// segment ends at each [`PyFrame::Boundary`]; frames after the last boundary make a
    /// last segment of their own. Segments may be empty.
    pub fn segments(&mut self, python: &[PyFrame]) -> Vec<Vec<Frame>> {
        if python.is_empty() {
            return Vec::new();
        }
        let mut segments = vec![Vec::new()];
        for entry in python {
            match *entry {
                PyFrame::Code { code, instr } => {
                    let frame = self.frame(code, instr);
                    segments.last_mut().expect("never empty").push(frame);
                }
                PyFrame::Boundary => segments.push(Vec::new()),
            }
        }
        if segments.len() > 1 && segments.last().is_some_and(Vec::is_empty) {
            segments.pop();
        }
        segments
    }
}
