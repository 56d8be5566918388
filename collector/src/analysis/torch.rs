//! PyTorch block sites for the report: each block site of the state (allocating stack and
//! placement) becomes a report site of memory `device`, space `block`, never owned (its
//! bytes lie in segments counted where they were allocated), named after its pool, with
//! the allocator's own frames trimmed from its stack.
//!
//! **Pools.** The segment's pool id (PyTorch's `MempoolId_t`, `c10::cuda::MemPool`): `(0,
//! 0)` is the default pool, `pytorch-caching`, or `pytorch-expandable` for expandable
//! segments. A capture that makes its own private pool gets `(n, 0)` (`uuid_` counter): a
//! CUDA graph's pool, `pytorch-graph-pool`. User-created ids are `(0, n)` (`uid_` counter),
//! shared by `torch.cuda.MemPool()` and `torch.cuda.graph_pool_handle()`: the helper lists
//! every `MemPool` the program created, so a listed id is `pytorch-mempool` (or
//! `pytorch-mempool-pluggable` when created with an allocator of its own, as vLLM's
//! `CuMemAllocator`), and an unlisted one a graph pool from a handle. A block whose segment
//! no reading showed is `pytorch-unknown-pool`.
//!
//! **Trimming.** The stack of a block event is the allocator's callback: the shim's
//! function, ctypes and libffi, the interpreter running PyTorch's `fire_callbacks`
//! (`torch/_utils.py`), `libtorch_python`'s trace hook, then the caching allocator in
//! `libc10_cuda`, then whoever asked for the tensor. Everything up to the innermost run of
//! `libc10_cuda` frames is removed, that run included, so a site starts at the allocator's
//! caller. Without a `libc10_cuda` frame (a stand-in PyTorch, or a cut stack), the frames
//! up to the outermost of the innermost run of callback-machinery Python frames are
//! removed: `torch/_utils.py`, `torch/cuda/_gpu_trace.py`, leakscope's own helper files, and
//! `torch/_C/` (native in PyTorch itself; only a stand-in has Python there).

use crate::analysis::aging::series::{OnGrid, SiteHistory};
use crate::analysis::frames::{module_file_name, strip_allocator_frames};
use crate::analysis::model::{Frame, Space};
use crate::analysis::sites::SymbolizedSite;
use crate::state::{BlockSiteKey, SiteStats, TorchTrack};
use crate::state::{FxHashSet, SiteSeries};
use leakscope_protocol::torch::TorchPoolId;
use leakscope_protocol::{MemoryKind, StackId};

/// The pool name of a block in `pool` (an `expandable` segment or not) of `track`'s
/// process.
pub fn pool_name(track: &TorchTrack, pool: TorchPoolId, expandable: bool) -> &'static str {
    if pool == TorchPoolId(0, 0) {
        return if expandable {
            "pytorch-expandable"
        } else {
            "pytorch-caching"
        };
    }
    match track.mempool(pool) {
        Some(true) => "pytorch-mempool-pluggable",
        Some(false) => "pytorch-mempool",
        None => "pytorch-graph-pool",
    }
}

/// The block sites of `track` as report parts, before merging; `frames_of` gives a stack's
/// full symbolized frames (Python frames merged in), innermost first. A stack's live bytes
/// over time (`series`, kept per stack) go with the first of its sites.
pub fn block_parts(
    track: &TorchTrack,
    series: &SiteSeries,
    frames_of: &mut dyn FnMut(StackId) -> Vec<Frame>,
) -> Vec<SymbolizedSite> {
    let mut seen = FxHashSet::default();
    track
        .block_sites()
        .into_iter()
        .map(|(key, s)| SymbolizedSite {
            // A stack's series go to its first site (they are kept per stack).
            history: if seen.insert(key.stack) {
                SiteHistory {
                    outstanding: series.blocks(key.stack).map(OnGrid::of).unwrap_or_default(),
                    outlived: series.block_outlived(key.stack).map(OnGrid::of),
                }
            } else {
                SiteHistory::default()
            },
            kind: MemoryKind::Device,
            pool: block_pool(track, &key),
            device: key.placement.map(|p| p.device),
            space: Some(Space::Block),
            owned: false,
            during_capture: false,
            frames: trim_block_frames(frames_of(key.stack)),
            stats: SiteStats {
                outstanding_bytes: s.outstanding_bytes,
                outstanding_count: s.outstanding_count,
                allocations: s.allocations,
                allocated_bytes: s.allocated_bytes,
                peak_bytes: s.peak_bytes,
                temporary: s.temporary,
                // Kept per stack by the track (the series come from there).
                longest_held_ns: 0,
            },
        })
        .collect()
}

fn block_pool(track: &TorchTrack, key: &BlockSiteKey) -> &'static str {
    match key.placement {
        Some(p) => pool_name(track, p.pool, p.expandable),
        None => "pytorch-unknown-pool",
    }
}

/// The stacks of every block site (for symbolization).
pub fn block_stacks(track: &TorchTrack) -> impl Iterator<Item = StackId> {
    let mut stacks: Vec<StackId> = track
        .block_sites()
        .into_iter()
        .map(|(k, _)| k.stack)
        .collect();
    stacks.sort_unstable();
    stacks.dedup();
    stacks.into_iter()
}

/// Removes the allocator callback's frames from a block stack (see the module
/// documentation).
pub fn trim_block_frames(frames: Vec<Frame>) -> Vec<Frame> {
    let mut frames = strip_allocator_frames(frames);
    let is_c10 = |f: &Frame| {
        !f.python
            && f.module
                .as_deref()
                .is_some_and(|m| module_file_name(m).starts_with("libc10_cuda"))
    };
    if let Some(first) = frames.iter().position(is_c10) {
        let run = frames[first..].iter().take_while(|f| is_c10(f)).count();
        frames.drain(..first + run);
        return frames;
    }
    let mut cut = None;
    for (i, f) in frames.iter().enumerate() {
        if !f.python {
            continue;
        }
        if is_machinery(f) {
            cut = Some(i + 1);
        } else if cut.is_some() {
            break;
        }
    }
    if let Some(cut) = cut {
        frames.drain(..cut);
    }
    frames
}

/// Whether a Python frame runs the allocator's callback machinery (or, in a stand-in, the
/// allocator itself).
fn is_machinery(f: &Frame) -> bool {
    let Some(file) = f.file.as_deref() else {
        return false;
    };
    let file = file.replace('\\', "/");
    let name = file.rsplit('/').next().unwrap_or(&file);
    file.ends_with("torch/_utils.py")
        || file.ends_with("torch/cuda/_gpu_trace.py")
        || file.contains("torch/_C/")
        || name == "leakscope_torch.py"
        || name == "sitecustomize.py"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Placement;
    use leakscope_protocol::torch::{MemPoolInfo, TorchState};
    use leakscope_protocol::{DeviceOrdinal, Timestamp};

    fn native(function: &str, module: &str) -> Frame {
        Frame {
            function: Some(function.into()),
            file: None,
            line: None,
            module: Some(module.into()),
            address: "0x10".into(),
            inlined: false,
            python: false,
        }
    }

    fn py(function: &str, file: &str, line: u32) -> Frame {
        Frame {
            function: Some(function.into()),
            file: Some(file.into()),
            line: Some(line),
            module: None,
            address: "0x4".into(),
            inlined: false,
            python: true,
        }
    }

    fn names(frames: &[Frame]) -> Vec<&str> {
        frames
            .iter()
            .map(|f| f.function.as_deref().unwrap())
            .collect()
    }

    #[test]
    fn trims_through_the_caching_allocator() {
        let stack = vec![
            native(
                "leakscope_torch_block_alloc",
                crate::analysis::frames::SHIM_MODULE,
            ),
            native("ffi_call_unix64", "libffi.so.8"),
            py(
                "CallbackRegistry.fire_callbacks",
                "/v/torch/_utils.py",
                1092,
            ),
            native("torch::impl::concrete_trace_cuda", "libtorch_python.so"),
            native(
                "c10::cuda::CUDACachingAllocator::Native::NativeCachingAllocator::malloc",
                "libc10_cuda.so",
            ),
            native(
                "c10::cuda::CUDACachingAllocator::Native::NativeCachingAllocator::allocate",
                "libc10_cuda.so",
            ),
            native("at::detail::empty_generic", "libtorch_cpu.so"),
            py("build", "/app/model.py", 12),
            py("<module>", "/app/main.py", 3),
        ];
        assert_eq!(
            names(&trim_block_frames(stack)),
            vec!["at::detail::empty_generic", "build", "<module>"]
        );
    }

    #[test]
    fn stand_ins_trim_through_the_callback_machinery() {
        let stack = vec![
            native(
                "leakscope_torch_block_alloc",
                crate::analysis::frames::SHIM_MODULE,
            ),
            native("ffi_call", "libffi.so.8"),
            py("CallbackRegistry.fire_callbacks", "/s/torch/_utils.py", 20),
            native("_PyObject_Call", "libpython3.11.so.1.0"),
            py("Allocator.malloc", "/s/torch/_C/_allocator.py", 80),
            py("empty", "/s/torch/_C/__init__.py", 30),
            py("leak_weights", "/app/app.py", 14),
            py("CallbackRegistry.fire_callbacks", "/s/torch/_utils.py", 20),
            py("<module>", "/app/app.py", 40),
        ];
        assert_eq!(
            names(&trim_block_frames(stack)),
            vec![
                "leak_weights",
                "CallbackRegistry.fire_callbacks",
                "<module>"
            ]
        );
        // Nothing recognizable: only the shim's frames go.
        let plain = vec![
            native(
                "leakscope_torch_block_alloc",
                crate::analysis::frames::SHIM_MODULE,
            ),
            native("ffi_call", "libffi.so.8"),
        ];
        assert_eq!(names(&trim_block_frames(plain)), vec!["ffi_call"]);
    }

    #[test]
    fn pools_are_named_from_their_ids_and_the_mempool_list() {
        let mut t = TorchTrack::default();
        t.state(
            TorchState {
                ts: Timestamp(1),
                full: true,
                segments: vec![],
                removed: vec![],
                mempools: vec![
                    MemPoolInfo {
                        id: TorchPoolId(0, 1),
                        pluggable: true,
                    },
                    MemPoolInfo {
                        id: TorchPoolId(0, 2),
                        pluggable: false,
                    },
                ],
                continues: false,
            },
            crate::state::Horizon(Some(0)),
        );
        let name = |a, b, e| pool_name(&t, TorchPoolId(a, b), e);
        assert_eq!(name(0, 0, false), "pytorch-caching");
        assert_eq!(name(0, 0, true), "pytorch-expandable");
        assert_eq!(name(1, 0, false), "pytorch-graph-pool");
        assert_eq!(name(0, 1, false), "pytorch-mempool-pluggable");
        assert_eq!(name(0, 2, false), "pytorch-mempool");
        assert_eq!(
            name(0, 3, false),
            "pytorch-graph-pool",
            "graph_pool_handle()"
        );
        let key = BlockSiteKey {
            stack: StackId(1),
            placement: None,
        };
        assert_eq!(block_pool(&t, &key), "pytorch-unknown-pool");
        let placed = BlockSiteKey {
            placement: Some(Placement {
                device: DeviceOrdinal(0),
                pool: TorchPoolId(0, 1),
                expandable: false,
            }),
            ..key
        };
        assert_eq!(block_pool(&t, &placed), "pytorch-mempool-pluggable");
    }
}
