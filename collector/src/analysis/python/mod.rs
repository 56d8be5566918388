//! Python frames in native stacks: the interpreter's line tables ([`lines`]), turning a
//! stack's Python part into report frames against the process's code definitions
//! ([`resolve`]), and merging them into the symbolized native frames in place of the
//! evaluation loop's ([`mod@merge`]). Design: docs/python-frames.md.

pub mod lines;
pub mod merge;
pub mod resolve;

#[cfg(test)]
mod co_lines_tests;
#[cfg(test)]
mod merge_tests;
#[cfg(test)]
mod pipeline_tests;

pub use merge::{is_eval_function, merge, Merged};
pub use resolve::PyResolver;

/// Whether a module (file name) is a CPython interpreter: its shared library
/// (`libpython3.11.so.1.0`) or a statically linked executable (`python3.11`, `python3`).
/// Report formats fold its frames around Python frames; the JSON keeps them.
pub fn is_interpreter_module(module: &str) -> bool {
    let name = module.strip_prefix("lib").unwrap_or(module);
    name.strip_prefix("python")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_digit()))
}

/// Whether a merge that did not pair one to one is what a native stack cut at the depth
/// limit gives, not a problem: more segments than evaluation loops, in a native stack
/// (`native_len` addresses) as long as the process's longest (`longest`), the limit.
pub fn cut_at_depth_limit(merged: &Merged, native_len: usize, longest: usize) -> bool {
    merged.segments > merged.eval_frames && native_len >= longest
}

/// What merging found over one process's stacks, for its notes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeStats {
    /// Stacks whose Python segments and evaluation-loop frames did not pair one to one,
    /// other than by a native stack cut at the depth limit.
    pub mismatched_stacks: u64,
    /// Code objects named by Python frames that the stream never defined.
    pub undefined_codes: u64,
}

impl MergeStats {
    /// One sentence per kind of problem seen.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.mismatched_stacks > 0 {
            notes.push(format!(
                "stacks whose Python frames did not pair one to one with the interpreter's \
                 native frames (paired innermost first, the rest placed at the outer end): {}",
                self.mismatched_stacks
            ));
        }
        if self.undefined_codes > 0 {
            notes.push(format!(
                "Python code objects named by stacks but never defined (their frames are \
                 shown without a name): {}",
                self.undefined_codes
            ));
        }
        notes
    }
}
