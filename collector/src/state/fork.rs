//! Fork snapshots: what a parent held at a `Fork` record, and seeding a child's process
//! from it. The child gets the parent's outstanding blocks (they count as outstanding for
//! the child's sites, but not as its allocations) and the stacks (with their Python parts),
//! modules and Python code objects the parent had defined by then.
//!
//! Stack ids belong to one stream, and the child's stream numbers its own stacks from the
//! start again, so inherited stacks get ids of their own in the child: counting down from
//! `u32::MAX`, far from the child's (which count up from 0). Module ids come from the
//! process's module list, which the child inherits: they keep their ids. Python code keys
//! name code objects in the memory the child inherits, so they keep theirs too (a
//! definition the child's stream sends for such a key replaces the inherited one).

use crate::state::hash::FxHashMap;
use crate::state::live::{Block, BlockKey};
use crate::state::mapped::Piece;
use crate::state::process::ProcLive;
use crate::state::sites::SiteBook;
use crate::state::{ProcessState, StateOptions};
use leakscope_protocol::{StackId, Timestamp};

/// See the module documentation.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Snapshot {
    pub ts: Timestamp,
    blocks: Vec<(BlockKey, Block)>,
    pieces: Vec<(u64, Piece)>,
    /// How many of the parent's stack (module) definitions existed at the fork.
    stacks: usize,
    modules: usize,
    codes: usize,
}

impl Snapshot {
    /// What `live`'s host tables held at `ts`.
    pub fn take(live: &ProcLive, ts: Timestamp) -> Self {
        Snapshot {
            ts,
            blocks: live.blocks.holders_at(ts.0),
            pieces: live.maps.pieces_at(ts.0),
            stacks: live.stack_order.len(),
            modules: live.module_order.len(),
            codes: live.code_order.len(),
        }
    }

    /// Seeds the empty `child` from this snapshot of `parent`.
    pub fn seed(
        self,
        parent: (&ProcLive, &ProcessState),
        child: (&mut ProcLive, &mut ProcessState),
        opts: &StateOptions,
    ) {
        let (pl, pp) = parent;
        let (cl, cp) = child;
        let mut ids = Renumber::default();
        for id in pl.stack_order.iter().take(self.stacks) {
            if let Some(frames) = pp.stacks.get(id) {
                let new = ids.get(*id);
                cp.stacks.insert(new, frames.clone());
                cl.stack_order.push(new);
                if let Some(python) = pp.python_stacks.get(id) {
                    cp.python_stacks.insert(new, python.clone());
                }
            }
        }
        for key in pl.code_order.iter().take(self.codes) {
            if let Some(code) = pp.py_codes.get(key) {
                if cp.py_codes.insert(*key, code.clone()).is_none() {
                    cl.code_order.push(*key);
                    cl.inherited_codes.insert(*key);
                }
            }
        }
        for id in pl.module_order.iter().take(self.modules) {
            if let Some(m) = pp.modules.get(id) {
                cp.modules.insert(*id, m.clone());
                cl.module_order.push(*id);
            }
        }
        let mut book = SiteBook::new(&mut cp.sites, opts);
        for (key, mut block) in self.blocks {
            block.site.stack = ids.get(block.site.stack);
            cl.blocks.inherit(key, block, &mut book);
        }
        for (start, mut piece) in self.pieces {
            piece.site.stack = ids.get(piece.site.stack);
            cl.maps.inherit(start, piece, &mut book);
        }
        cp.last_ts = cp.last_ts.max(self.ts);
    }
}

/// The parent's stack ids to the child's ids for them.
#[derive(Default)]
struct Renumber {
    map: FxHashMap<StackId, StackId>,
}

impl Renumber {
    fn get(&mut self, parent: StackId) -> StackId {
        let next = StackId(u32::MAX - self.map.len() as u32);
        *self.map.entry(parent).or_insert(next)
    }
}
