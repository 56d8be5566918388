//! Applying one record to one process: modules, stacks (with their Python parts), Python
//! code definitions, the live tables (through which the site statistics change), drop
//! counts and the end of the stream. GPU records (and frees whose api names a GPU space) go
//! to the GPU tables, `gpu.rs`. `Hello` and routing are `route.rs`'s; a `Fork` record is
//! handed back as a snapshot for it.

use crate::state::fork::Snapshot;
use crate::state::gpu::{Applied, GpuLive};
use crate::state::live::{AddrSpace, Block, BlockKey, Horizon, LiveTable, Tally};
use crate::state::mapped::MappedTable;
use crate::state::outlived::Holders;
use crate::state::sites::SiteBook;
use crate::state::FxHashSet;
use crate::state::{ProcessState, SiteKey, StateOptions, StreamEnd};
use leakscope_protocol::{CodeKey, MemoryKind, ModuleId, PyCode, Record, StackId, Timestamp};
use std::collections::hash_map::Entry;
use std::sync::Arc;

/// The private side of a [`ProcessState`]: its live tables and what routing needs.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct ProcLive {
    /// Host memory (every kind but mapped).
    pub blocks: LiveTable,
    /// Host mappings.
    pub maps: MappedTable,
    /// GPU memory and address spaces (never inherited at fork).
    pub gpu: GpuLive,
    /// Stack and module ids and Python code keys in order of definition (fork snapshots
    /// take a prefix).
    pub stack_order: Vec<StackId>,
    pub module_order: Vec<ModuleId>,
    pub code_order: Vec<CodeKey>,
    /// Code keys inherited at fork and not defined by this stream yet.
    pub inherited_codes: FxHashSet<CodeKey>,
    /// The transport ended (`end_stream` was applied).
    pub closed: bool,
    /// The tables were settled for good (unknown frees counted).
    pub finalized: bool,
    /// The `Hello` was made up because the stream did not start with one.
    pub placeholder: bool,
}

impl ProcLive {
    fn horizon(p: &ProcessState, opts: &StateOptions) -> Horizon {
        Horizon(Some(p.last_ts.0.saturating_sub(opts.reorder_window_ns)))
    }

    /// Applies `record` (anything but `Hello`). A `Fork` record yields the snapshot its
    /// child starts from.
    pub fn apply(
        &mut self,
        p: &mut ProcessState,
        record: Record,
        opts: &StateOptions,
    ) -> Option<(leakscope_protocol::Pid, Snapshot)> {
        if let Record::Machine(_) = record {
            // The collector's own record: no shim sends it, and its time is not the stream's.
            p.anomalies.machine_records_in_stream += 1;
            return None;
        }
        if let Some(ts) = record.ts() {
            let holders = Holders {
                tables: [&self.blocks, self.gpu.blocks()],
                reorder_window_ns: opts.reorder_window_ns,
            };
            p.aging
                .before(ts.0, &p.sites, p.torch.as_ref(), Some(holders));
            p.last_ts = p.last_ts.max(ts);
        }
        if matches!(p.end, StreamEnd::Clean(_)) && !matches!(record, Record::End(_)) {
            // `End{Exec}` and then more: the exec failed and the process goes on.
            p.end = StreamEnd::Open;
        }
        let mut tally = Tally::default();
        let mut forked = None;
        match record {
            Record::Alloc(a) => {
                let horizon = Self::horizon(p, opts);
                let mut book = SiteBook::new(&mut p.sites, opts);
                let block = Block {
                    ts: a.ts.0,
                    size: a.size,
                    site: SiteKey::host(a.stack, a.kind),
                };
                if a.kind == MemoryKind::Mapped {
                    if !self
                        .maps
                        .map(a.addr.0, block, horizon, &mut book, &mut tally)
                    {
                        p.anomalies.empty_ranges += 1;
                    }
                } else {
                    let key = BlockKey {
                        space: AddrSpace::Host(a.kind),
                        addr: a.addr.0,
                    };
                    self.blocks.alloc(key, block, horizon, &mut book);
                }
            }
            Record::Free(f) => {
                let horizon = Self::horizon(p, opts);
                let mut book = SiteBook::new(&mut p.sites, opts);
                if let Some(space) = f.api.space() {
                    p.gpu.get_or_insert_default();
                    let applied = self.gpu.free(&f, space, horizon, &mut book, &mut tally);
                    if applied == Applied::EmptyRange {
                        tally.unknown_frees += 1;
                    }
                    Self::note(p, applied);
                } else if f.kind == MemoryKind::Mapped {
                    if !self
                        .maps
                        .unmap(f.addr.0, f.len, f.ts.0, horizon, &mut book, &mut tally)
                    {
                        p.anomalies.empty_ranges += 1;
                        tally.unknown_frees += 1;
                    }
                } else {
                    let key = BlockKey {
                        space: AddrSpace::Host(f.kind),
                        addr: f.addr.0,
                    };
                    self.blocks.free(key, f.ts.0, horizon, &mut book);
                }
            }
            Record::GpuAlloc(a) => {
                let horizon = Self::horizon(p, opts);
                p.gpu.get_or_insert_default();
                let mut book = SiteBook::new(&mut p.sites, opts);
                let applied = self.gpu.alloc(&a, horizon, &mut book, &mut tally);
                Self::note(p, applied);
            }
            Record::Pool(e) => p.gpu.get_or_insert_default().pool_event(&e),
            Record::Capture(c) => {
                let horizon = Self::horizon(p, opts);
                self.gpu.capture(&c, p.gpu.get_or_insert_default(), horizon);
            }
            Record::PyCode(c) => self.define_code(p, c),
            Record::Heap(h) => {
                let live = crate::state::heap::live_host(&p.sites);
                p.aging.resident(h.rss, h.uss);
                p.heap.push(h, live);
            }
            Record::TorchBlock(b) => {
                let horizon = Self::horizon(p, opts);
                let track = p.torch.get_or_insert_default();
                track.block(&b, horizon, opts.temporary_ns);
            }
            Record::TorchState(s) => {
                let horizon = Self::horizon(p, opts);
                p.torch.get_or_insert_default().state(s, horizon);
            }
            Record::Stack(s) => match p.stacks.entry(s.id) {
                Entry::Vacant(v) => {
                    self.stack_order.push(s.id);
                    v.insert(s.frames);
                    if !s.python.is_empty() {
                        p.python_stacks.insert(s.id, s.python);
                    }
                }
                Entry::Occupied(o) => {
                    let python = p.python_stacks.get(&s.id).map_or(&[][..], Vec::as_slice);
                    if *o.get() != s.frames || python != s.python.as_slice() {
                        p.anomalies.stack_redefinitions += 1;
                    }
                }
            },
            Record::Module(m) => {
                let id = m.id;
                if p.modules.insert(id, m).is_none() {
                    self.module_order.push(id);
                }
            }
            Record::ModuleUnload(u) => {
                if p.modules.contains_key(&u.id) {
                    p.unloaded_modules.push(u.id);
                } else {
                    p.anomalies.unknown_module_unloads += 1;
                }
            }
            Record::Fork(f) => {
                forked = Some((f.child, Snapshot::take(self, f.ts)));
            }
            Record::Dropped(d) => {
                if d.ts >= p.dropped.ts {
                    p.dropped = d;
                }
            }
            Record::End(e) => p.end = StreamEnd::Clean(e.reason),
            Record::Hello(_) | Record::Machine(_) => {}
        }
        Self::add(p, tally);
        forked
    }

    /// Keeps a Python code definition. A key defined by this stream before keeps its first
    /// definition (another one is counted); one inherited at fork yields to the child's.
    fn define_code(&mut self, p: &mut ProcessState, code: PyCode) {
        match p.py_codes.entry(code.key) {
            Entry::Vacant(v) => {
                self.code_order.push(code.key);
                v.insert(Arc::new(code));
            }
            Entry::Occupied(mut o) => {
                if self.inherited_codes.remove(&code.key) {
                    o.insert(Arc::new(code));
                } else if **o.get() != code {
                    p.anomalies.code_redefinitions += 1;
                }
            }
        }
    }

    /// Counts a GPU record that changed nothing.
    fn note(p: &mut ProcessState, applied: Applied) {
        match applied {
            Applied::Done => {}
            Applied::EmptyRange => p.anomalies.empty_ranges += 1,
            Applied::Malformed => p.anomalies.malformed_gpu_records += 1,
        }
    }

    /// Adds what settling counted to the process.
    fn add(p: &mut ProcessState, tally: Tally) {
        p.unknown_frees = p.unknown_frees.saturating_add(tally.unknown_frees);
        p.anomalies.implied_frees = p
            .anomalies
            .implied_frees
            .saturating_add(tally.implied_frees);
    }

    /// Settles the tables for good: frees that never found their allocation are counted,
    /// allocations proven freed are released, sites with undefined stacks are counted.
    pub fn finalize(&mut self, p: &mut ProcessState, opts: &StateOptions) {
        if self.finalized {
            return;
        }
        self.finalized = true;
        let mut tally = Tally::default();
        let mut book = SiteBook::new(&mut p.sites, opts);
        let blocks = self.blocks.finalize();
        tally.unknown_frees += blocks.unknown_frees;
        tally.implied_frees += blocks.implied_frees;
        self.maps.sweep(Horizon::END, &mut book, &mut tally);
        self.gpu.finalize(&mut book, &mut tally);
        Self::add(p, tally);
        p.anomalies.undefined_stacks = p
            .sites
            .keys()
            .filter(|k| !p.stacks.contains_key(&k.stack))
            .count() as u64;
    }

    /// Outstanding bytes of the live tables, host and GPU (for consistency checks).
    #[cfg(test)]
    pub fn outstanding_bytes(&self) -> u64 {
        let mut total = 0u64;
        self.blocks
            .for_each_outstanding(|_, b| total = total.saturating_add(b.size));
        self.maps
            .for_each_outstanding(|s, p| total = total.saturating_add(p.end - s));
        total.saturating_add(self.gpu.outstanding_bytes())
    }
}

/// The `Hello` of a stream that did not start with one.
pub(crate) fn placeholder_hello() -> leakscope_protocol::Hello {
    leakscope_protocol::Hello {
        pid: leakscope_protocol::Pid(0),
        ppid: leakscope_protocol::Pid(0),
        origin: leakscope_protocol::Origin::Exec,
        exe: String::new(),
        argv: Vec::new(),
        start: Timestamp(0),
        start_unix_ns: 0,
        fingerprint: 0,
    }
}
