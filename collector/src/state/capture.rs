//! CUDA-graph capture windows, per thread: `Capture { begin: true }` opens one on its
//! thread, `Capture { begin: false }` closes it (captures begun while one is open nest, and
//! the window lasts until the outermost ends). A GPU allocation by a thread at a time inside
//! one of that thread's windows, ends included, is made during capture. Windows are kept
//! as spans of time, so an allocation placed by its timestamp is judged right even if it
//! arrives after the window closed; closed windows are forgotten once older than the
//! reordering window.

use crate::state::hash::FxHashMap;
use crate::state::live::Horizon;
use leakscope_protocol::{Capture, ThreadId};

/// One thread's windows.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Windows {
    /// Captures begun and not yet ended.
    depth: u64,
    /// `(begin, end)`; the last one has no end while `depth > 0`.
    spans: Vec<(u64, Option<u64>)>,
}

/// See the module documentation.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct CaptureWindows {
    threads: FxHashMap<ThreadId, Windows>,
}

impl CaptureWindows {
    /// Applies a capture mark; `true` when it began a capture.
    pub fn mark(&mut self, c: &Capture, horizon: Horizon) -> bool {
        let w = self.threads.entry(c.thread).or_default();
        let ts = c.ts.0;
        if c.begin {
            if w.depth == 0 {
                w.spans.push((ts, None));
            }
            w.depth = w.depth.saturating_add(1);
        } else if w.depth > 0 {
            w.depth -= 1;
            if w.depth == 0 {
                if let Some(last) = w.spans.last_mut() {
                    last.1 = Some(ts.max(last.0));
                }
            }
        }
        // An end without a begin: the capture began before tracking; nothing to close.
        self.forget(horizon);
        c.begin
    }

    /// Whether `thread` was inside one of its windows at `ts`.
    pub fn contains(&self, thread: ThreadId, ts: u64) -> bool {
        self.threads.get(&thread).is_some_and(|w| {
            w.spans
                .iter()
                .any(|&(begin, end)| begin <= ts && end.is_none_or(|end| ts <= end))
        })
    }

    /// Forgets windows that closed before `horizon`, and threads with none left.
    fn forget(&mut self, horizon: Horizon) {
        self.threads.retain(|_, w| {
            w.spans
                .retain(|(_, end)| end.is_none_or(|end| !horizon.is_old(end)));
            w.depth > 0 || !w.spans.is_empty()
        });
    }
}
