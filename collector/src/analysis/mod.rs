//! Analysis: turns the finished run state into the report model. Symbolizes every stack a
//! site refers to, merges Python frames into it, attributes GPU sites to their pools,
//! removes allocator frames, merges sites with the same symbolized stack (and memory, pool,
//! device, space, ownership and capture mark), ranks them and describes each process.
//!
//! - [`symbolize`]: runtime addresses to frames through module maps and ELF files.
//! - [`python`]: Python line tables and the merge of Python frames into native stacks.
//! - [`frames`]: the allocator-frame table and stripping.
//! - [`sites`]: host pools, merging, ranking, `top`, totals.
//! - [`gpu_pool`]: the pool of a GPU site, from its api, capture mark and stack.
//! - [`gpu`]: the per-process `gpu` section (devices, pools, stream-ordered pools).
//! - [`torch`]: PyTorch block sites (pools, trimmed stacks); [`torch_report`] the
//!   `gpu.torch` section (the allocator's pools over time), [`torch_model`] its model.
//! - [`heap`]: the per-process `heap` section (host heap over time, fragmentation verdict).
//! - [`process`]: origin, stream status and notes of a process.
//! - [`model`]: the report model, leakscope's JSON contract.

pub mod aging;
pub mod aging_model;
pub mod build_id;
pub mod frames;
pub mod gpu;
pub mod gpu_pool;
pub mod heap;
pub mod model;
pub mod process;
pub mod python;
pub mod sites;
pub mod symbolize;
#[cfg(test)]
mod test_program;
pub mod torch;
pub mod torch_model;
pub mod torch_report;
pub mod trend;

use crate::ingest::meta::RecordingMeta;
use crate::state::{ProcessState, RunState, SiteKey};
use gpu_pool::PoolFrame;
use leakscope_protocol::{RuntimeAddr, StackId};
pub use model::ReportModel;
use model::{DroppedCounts, Frame, ProcessReport, Space};
pub use sites::pool_for;
use sites::SymbolizedSite;
use std::collections::HashMap;
use symbolize::{ModuleIndex, Symbolizer};

/// What analysis does beyond the defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AnalysisOptions {
    /// List at most this many sites per process (`None`: all of them).
    pub top: Option<usize>,
    /// Keep the allocator's own frames at the innermost end of each stack.
    pub keep_allocator_frames: bool,
    /// The aging analysis's levels, warm-up and whether to show the series.
    pub aging: aging::AgingOptions,
}

/// Builds the report model of a run.
pub fn analyze(state: &RunState, meta: &RecordingMeta, opts: &AnalysisOptions) -> ReportModel {
    // Where Python frames describe the interpreter's frames, its names are enough.
    let mut symbolizer = if state.processes.iter().any(|p| !p.py_codes.is_empty()) {
        Symbolizer::without_interpreter_lines()
    } else {
        Symbolizer::new()
    };
    let mut processes: Vec<ProcessReport> = state
        .processes
        .iter()
        .map(|p| analyze_process(p, &mut symbolizer, opts))
        .collect();
    // Tested before the `top` limit: the false-discovery control covers every series.
    let aging = aging::analyze_run(state, &mut processes, &opts.aging);
    let mut processes = in_start_order(state, processes);
    for p in &mut processes {
        sites::sort_sites(&mut p.sites);
        p.sites_omitted = sites::apply_top(&mut p.sites, opts.top);
    }
    let leakscope_version = if meta.leakscope_version.is_empty() {
        env!("CARGO_PKG_VERSION").to_owned()
    } else {
        meta.leakscope_version.clone()
    };
    ReportModel {
        leakscope_version,
        format_version: model::FORMAT_VERSION,
        command: meta.command.clone(),
        exit_status: meta.exit_status,
        signal: meta.signal,
        live: false,
        snapshot_unix_ns: None,
        processes,
        warnings: state.warnings.clone(),
        aging: Some(aging),
        top: opts.top,
    }
}

/// The reports in the order the processes started (then pid), whatever order their
/// streams reached the collector in: a recording read back gives the live run's report.
fn in_start_order(state: &RunState, reports: Vec<ProcessReport>) -> Vec<ProcessReport> {
    let mut keyed: Vec<_> = state
        .processes
        .iter()
        .map(|p| (p.hello.start, p.hello.pid))
        .zip(reports)
        .collect();
    // Stable: a pid reused at the same instant keeps its order of appearance.
    keyed.sort_by_key(|(key, _)| *key);
    keyed.into_iter().map(|(_, report)| report).collect()
}

fn analyze_process(
    process: &ProcessState,
    symbolizer: &mut Symbolizer,
    opts: &AnalysisOptions,
) -> ProcessReport {
    let index = ModuleIndex::new(&process.modules);
    let mut py = python::PyResolver::new(&process.py_codes);
    let mut mismatched = crate::state::FxHashSet::default();
    let longest = process.stacks.values().map(Vec::len).max().unwrap_or(0);
    let stack_addrs = |id: StackId| {
        process
            .stacks
            .get(&id)
            .map(Vec::as_slice)
            .unwrap_or_default()
    };
    let stacks = |key: &SiteKey| stack_addrs(key.stack);
    let block_stacks: Vec<StackId> = process.torch.iter().flat_map(torch::block_stacks).collect();
    let addrs = (process.sites.keys().map(|k| k.stack))
        .chain(block_stacks.iter().copied())
        .flat_map(|id| stack_addrs(id).iter().copied());
    let symbols = symbolizer.symbolize(&index, addrs);

    // A stack's symbolized frames, innermost first, with its Python frames merged in.
    let mut full_frames = |stack: StackId| -> Vec<Frame> {
        let native = stack_addrs(stack)
            .iter()
            .map(|addr: &RuntimeAddr| symbols.get(addr).map(Vec::as_slice).unwrap_or_default());
        match process.python_stacks.get(&stack) {
            Some(python) => {
                let merged = python::merge(native, py.segments(python));
                let cut = python::cut_at_depth_limit(&merged, stack_addrs(stack).len(), longest);
                if merged.mismatched() && !cut {
                    mismatched.insert(stack);
                }
                merged.frames
            }
            None => native.flatten().cloned().collect(),
        }
    };

    // Sorted by key so that merging (which keeps the first part's frames) is deterministic.
    let mut keys: Vec<_> = process.sites.keys().copied().collect();
    keys.sort();
    let mut parts: Vec<SymbolizedSite> = keys
        .iter()
        .map(|key| {
            let full = full_frames(key.stack);
            let pool = if key.is_gpu() {
                gpu_pool::site_pool(key, &pool_frames(stacks(key), &index, &symbols))
            } else {
                pool_for(key.kind)
            };
            let frames = if opts.keep_allocator_frames {
                full
            } else {
                frames::strip_allocator_frames(full)
            };
            SymbolizedSite {
                kind: key.kind,
                pool,
                device: key.device,
                space: key.space.and_then(Space::from_gpu),
                owned: key.owned,
                during_capture: key.during_capture,
                frames,
                stats: process.sites[key],
                history: aging::series::SiteHistory {
                    outstanding: process
                        .aging
                        .get(key)
                        .map(aging::series::OnGrid::of)
                        .unwrap_or_default(),
                    outlived: process.aging.outlived(key).map(aging::series::OnGrid::of),
                },
            }
        })
        .collect();
    // PyTorch's blocks: sites of their own, never owned (docs/gpu.md).
    if let Some(track) = &process.torch {
        parts.extend(torch::block_parts(track, &process.aging, &mut full_frames));
    }

    let py_stats = python::MergeStats {
        mismatched_stacks: mismatched.len() as u64,
        undefined_codes: py.undefined_codes(),
    };
    let merged = sites::merge_sites(&parts);
    let totals = sites::totals(&merged);
    let gpu = gpu::gpu_report(process, &merged);

    let hello = &process.hello;
    let (origin, parent) = process::origin(process);
    let (stream, stream_problem) = process::stream(process);
    ProcessReport {
        pid: hello.pid.0,
        ppid: hello.ppid.0,
        command: hello.argv.join(" "),
        argv: hello.argv.clone(),
        exe: hello.exe.clone(),
        origin,
        parent,
        stream,
        stream_problem,
        totals,
        dropped: DroppedCounts {
            allocs: process.dropped.allocs,
            alloc_bytes: process.dropped.alloc_bytes,
            frees: process.dropped.frees,
        },
        unknown_frees: process.unknown_frees,
        sites: merged,
        sites_omitted: 0,
        notes: process::notes(process)
            .into_iter()
            .chain(py_stats.notes())
            .collect(),
        gpu,
        heap: heap::heap_report(process),
        aging: None,
    }
}

/// What pool attribution reads of `stack`: each address's symbolized frames (innermost
/// first), with the path of the module the address lies in (CuPy, JAX and Triton are told
/// apart by directory, which symbolized frames do not keep).
fn pool_frames<'a>(
    stack: &[RuntimeAddr],
    index: &ModuleIndex<'a>,
    symbols: &'a HashMap<RuntimeAddr, Vec<Frame>>,
) -> Vec<PoolFrame<'a>> {
    let mut out = Vec::with_capacity(stack.len());
    for addr in stack {
        let path = index.locate(*addr).map(|l| l.module.path.as_str());
        let symbolized = symbols.get(addr).map(Vec::as_slice).unwrap_or_default();
        if symbolized.is_empty() {
            out.push(PoolFrame {
                function: None,
                module: path,
            });
        }
        out.extend(symbolized.iter().map(|f| PoolFrame {
            function: f.function.as_deref(),
            module: path.or(f.module.as_deref()),
        }));
    }
    out
}

#[cfg(test)]
mod tests;
