//! Merging a stack's Python frames into its symbolized native frames, as memray and
//! py-spy do: each native frame of the interpreter's evaluation loop
//! (`_PyEval_EvalFrameDefault`, or a part of it such as `.cold`) is replaced by the Python
//! frames that loop was running (one evaluation-loop segment); native frames in between
//! (C extensions, libraries, the interpreter's call machinery) stay where they are.

use crate::analysis::model::Frame;

/// Whether `name` is the interpreter's evaluation function or a part of it.
pub fn is_eval_function(name: &str) -> bool {
    name.strip_prefix("_PyEval_EvalFrameDefault")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// Whether the frames of one native address (inlined functions first) are an evaluation
/// loop's.
fn is_eval_address(frames: &[Frame]) -> bool {
    frames
        .iter()
        .any(|f| !f.python && f.function.as_deref().is_some_and(is_eval_function))
}

/// A merged stack and how well its two halves fitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Merged {
    /// Innermost first.
    pub frames: Vec<Frame>,
    /// Native evaluation-loop frames found.
    pub eval_frames: usize,
    /// Python evaluation-loop segments recorded.
    pub segments: usize,
    /// The native stack ended in an evaluation loop: the shim's walk stopped there on
    /// purpose (its default for Python threads), so the outer segments have no native
    /// frame to replace and go to the outer end as they are.
    pub cut_at_eval: bool,
}

impl Merged {
    /// Whether segments and evaluation-loop frames did not pair one to one (a native stack
    /// cut at the depth limit, an interpreter without symbols, a Python walk cut short),
    /// other than by a walk that ended at an evaluation loop on purpose.
    pub fn mismatched(&self) -> bool {
        self.eval_frames != self.segments && !(self.cut_at_eval && self.segments > self.eval_frames)
    }
}

/// Merges `segments` (Python frames per evaluation-loop segment, innermost first) into
/// `native` (the symbolized frames of each native address, innermost first). The n-th
/// segment replaces the n-th evaluation-loop address, innermost first; when there are
/// more segments than such addresses, the rest go to the outer end (where a native stack
/// cut at the depth limit lost their loops); evaluation-loop addresses left without a
/// segment stay as native frames.
pub fn merge<'a, I>(native: I, segments: Vec<Vec<Frame>>) -> Merged
where
    I: IntoIterator<Item = &'a [Frame]>,
{
    let count = segments.len();
    let mut segments = segments.into_iter();
    let mut frames = Vec::new();
    let mut eval_frames = 0;
    let mut last_is_eval = false;
    for address in native {
        last_is_eval = is_eval_address(address);
        if last_is_eval {
            eval_frames += 1;
            if let Some(segment) = segments.next() {
                frames.extend(segment);
                continue;
            }
        }
        frames.extend(address.iter().cloned());
    }
    frames.extend(segments.flatten());
    Merged {
        frames,
        eval_frames,
        segments: count,
        cut_at_eval: last_is_eval,
    }
}
