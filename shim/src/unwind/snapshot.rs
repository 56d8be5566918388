//! The shared module set: an immutable [`Snapshot`] (modules, framehop unwinder, sorted
//! code ranges, the shim's own range) published through one atomic pointer, and the
//! rebuilds that replace it (at session start, after `dlopen`, before `dlclose`, and when
//! the announcer notices that the loader's list changed behind our back).
//!
//! Readers (`capture`, the announcer) do one `Acquire` load and use the snapshot without
//! any lock. Replaced snapshots are leaked, never freed: a reader may still be using one,
//! and they are small (module metadata and pointers into module memory; the unwind data
//! itself is never copied), while rebuilds happen only when the module list changes.
//!
//! ## Module identity
//! A module is one load of an object: the snapshot carries a module over (same `Arc`, same
//! [`ModuleId`]) only from the snapshot it replaces. A module held out for a `dlclose` is
//! in no snapshot, so what is found at its place afterwards (a new load of the same file at
//! the same address, or the same load after a `dlclose` that only dropped a reference) is
//! a new module with a new id: the announcer reports the old id unloaded and then the new
//! one. Every published snapshot stays reachable from the next one, so an announcer can
//! see a module that was loaded and unloaded between two of its polls, or before its first
//! ([`published_since`]).
//!
//! ## `dlclose`
//! [`before_dlclose`] publishes a set without the closing module, and without the modules
//! it depends on that were not loaded at startup (they may go away with it), before the
//! real `dlclose` runs. A correct program has no frames in a library it is closing (nor in
//! that library's private dependencies), so after that no unwind looks up an address in
//! them and none reads their unwind data. The removed modules are also remembered as
//! "closing", so that a rebuild racing with the real `dlclose` (another thread's `dlopen`,
//! or a `dlopen` from a destructor that the `dlclose` runs) does not put them back while
//! they may still be unmapped. A closing entry ends, before the loader's list is read, when
//! the real `dlclose` is known to be over:
//! - the `dlclose` hook's call has returned: the entry keeps where the shim's outermost
//!   frame of that call keeps its return address ([`HookFrame`]), and while the call runs
//!   (the real `dlclose`, destructors included, runs inside it) that slot holds that
//!   address; once it holds anything else, or is unmapped, the call is over (checked from
//!   any thread, with `process_vm_readv`, so a reload right after the `dlclose` is in the
//!   set at once);
//! - the module is gone from the loader's list (it is unmapped);
//! - it is [`CLOSING_GRACE_NS`] old and a call that takes the loader's lock (`dladdr`) has
//!   returned after that (the fallback where the hook's frame was not found, or its slot
//!   happens to hold the same address again);
//! - in a fork child, where no `dlclose` runs.
//!
//! What this does not cover: unloads that bypass the hooks (glibc's internal `dlclose`, as
//! iconv does for gconv modules) leave the module in the snapshot after it is unmapped,
//! until the announcer's next poll sees the loader's counters change and rebuilds. During
//! that window only an unwind through an address inside the unmapped range would read it,
//! which a correct program's frames cannot produce (a frame-pointer guess through code
//! without unwind information could; framehop then reads the stale module's
//! `.eh_frame_hdr`). The same holds if a thread stalls for longer than
//! [`CLOSING_GRACE_NS`] between our `dlclose` hook and the loader taking its lock, and its
//! hook frame was not found. Such an unload followed by a new load at the same place
//! before the next rebuild also keeps the old module (and id) for the new load.

use super::lock::ForkLock;
use super::modules::{self, CodeRange, Enumeration, LoadCounters, ModuleInfo};
use crate::record::clock;
use leakscope_protocol::ModuleId;
use std::ffi::CStr;
use std::ops::{Deref, Range};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// How long a module stays excluded after an unconfirmed `dlclose` at least.
pub(super) const CLOSING_GRACE_NS: u64 = 100_000_000;

/// A view of module memory (unwind sections), borrowed without copying.
pub(super) struct MappedBytes {
    ptr: *const u8,
    len: usize,
}

// SAFETY: MappedBytes is a read-only view of memory that the dynamic loader mapped; it is
// never written through, and whether it is still mapped does not depend on the thread.
unsafe impl Send for MappedBytes {}
// SAFETY: as above: shared reads only.
unsafe impl Sync for MappedBytes {}

impl Deref for MappedBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr..ptr + len` was checked, when the module was read, to lie inside one
        // readable PT_LOAD segment of a loaded module. The slice is only dereferenced while
        // unwinding through an address inside that module, found in a published snapshot.
        // The module is removed from the published snapshot before the real dlclose runs
        // (see `before_dlclose`), and a correct program has no frames inside a library it
        // is closing, so an unwind that reads this memory does so while it is mapped.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl MappedBytes {
    fn new(range: &Range<u64>) -> Option<MappedBytes> {
        Some(MappedBytes {
            ptr: range.start as *const u8,
            len: usize::try_from(range.end.checked_sub(range.start)?).ok()?,
        })
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) type Unwinder =
    framehop::x86_64::UnwinderX86_64<MappedBytes, framehop::MustNotAllocateDuringUnwind>;

/// A module in the set, with its framehop module (built once, shared by every snapshot
/// that holds the module: a snapshot's own memory is then a few pointers per module).
pub(super) struct LoadedModule {
    pub info: ModuleInfo,
    #[cfg(target_arch = "x86_64")]
    unwind: framehop::Module<MappedBytes>,
}

impl LoadedModule {
    fn new(info: ModuleInfo) -> LoadedModule {
        LoadedModule {
            #[cfg(target_arch = "x86_64")]
            unwind: framehop_module(&info),
            info,
        }
    }
}

impl Deref for LoadedModule {
    type Target = ModuleInfo;

    fn deref(&self) -> &ModuleInfo {
        &self.info
    }
}

/// One published state of the module set.
pub(super) struct Snapshot {
    /// Sorted by start address.
    pub modules: Vec<Arc<LoadedModule>>,
    /// Executable segments of all modules, sorted by start.
    pub code: Vec<CodeRange>,
    /// The address range of the module holding this code (the shim).
    pub own: Range<u64>,
    /// The loader's counters when the list was last read.
    pub counters: LoadCounters,
    #[cfg(target_arch = "x86_64")]
    pub unwinder: Unwinder,
    /// The snapshot this one replaced (set by `publish`; snapshots are never freed).
    prev: Option<&'static Snapshot>,
}

impl Snapshot {
    fn build(mut modules: Vec<Arc<LoadedModule>>, counters: LoadCounters) -> Snapshot {
        modules.sort_by_key(|m| m.range.start);
        let mut code: Vec<CodeRange> = modules
            .iter()
            .flat_map(|m| m.code.iter().copied())
            .collect();
        code.sort_by_key(|c| c.start);
        let marker = own_code_address();
        let own = modules
            .iter()
            .find(|m| m.contains(marker))
            .map_or(0..0, |m| m.range.clone());
        #[cfg(target_arch = "x86_64")]
        let unwinder = {
            use framehop::Unwinder as _;
            let mut unwinder = Unwinder::new();
            for m in &modules {
                unwinder.add_module(m.unwind.clone());
            }
            unwinder
        };
        Snapshot {
            modules,
            code,
            own,
            counters,
            #[cfg(target_arch = "x86_64")]
            unwinder,
            prev: None,
        }
    }

    /// The executable segment holding `addr`. Allocation- and lock-free.
    #[inline]
    pub fn code_range(&self, addr: u64) -> Option<&CodeRange> {
        let i = self.code.partition_point(|c| c.start <= addr);
        let c = self.code.get(i.checked_sub(1)?)?;
        (addr < c.end).then_some(c)
    }
}

#[cfg(target_arch = "x86_64")]
fn framehop_module(m: &ModuleInfo) -> framehop::Module<MappedBytes> {
    let svma = |r: &Range<u64>| (r.start - m.base)..(r.end - m.base);
    let eh = m.eh_frame.as_ref().and_then(|eh| {
        Some((
            svma(&eh.hdr),
            MappedBytes::new(&eh.hdr)?,
            svma(&eh.frame),
            MappedBytes::new(&eh.frame)?,
        ))
    });
    let (eh_frame_hdr_svma, eh_frame_hdr, eh_frame_svma, eh_frame) = match eh {
        Some((hs, h, fs, f)) => (Some(hs), Some(h), Some(fs), Some(f)),
        None => (None, None, None, None),
    };
    let info = framehop::ExplicitModuleSectionInfo::<MappedBytes> {
        base_svma: 0,
        text_svma: m.code.first().map(|c| svma(&(c.start..c.end))),
        text: None,
        stubs_svma: None,
        stub_helper_svma: None,
        got_svma: None,
        unwind_info: None,
        eh_frame_svma,
        eh_frame,
        eh_frame_hdr_svma,
        eh_frame_hdr,
        debug_frame: None,
        text_segment_svma: None,
        text_segment: None,
    };
    // The name is only for framehop's debugging; an empty one costs no allocation.
    framehop::Module::new(String::new(), m.range.clone(), m.base, info)
}

/// An address inside this module's code, to find the shim's own module.
fn own_code_address() -> u64 {
    own_code_address as fn() -> u64 as usize as u64
}

static CURRENT: AtomicPtr<Snapshot> = AtomicPtr::new(std::ptr::null_mut());

/// The published snapshot, if any. One `Acquire` load; never blocks or allocates.
#[inline]
pub(super) fn current() -> Option<&'static Snapshot> {
    let p = CURRENT.load(Ordering::Acquire);
    // SAFETY: every non-null value of CURRENT came from `Box::into_raw` in `publish`, with
    // the snapshot fully built before the Release half of the swap; snapshots are never
    // freed or mutated after publication, so a `'static` shared reference is valid.
    unsafe { p.as_ref() }
}

/// Publishes `snapshot` in place of the current one. Only under the rebuild lock, so the
/// snapshot it replaces is the one it links to.
fn publish(mut snapshot: Snapshot) {
    snapshot.prev = current();
    let p = Box::into_raw(Box::new(snapshot));
    // The previous snapshot is deliberately leaked: a capture on another thread may still
    // be walking with it, and knowing when none is would cost every capture a shared write.
    CURRENT.swap(p, Ordering::AcqRel);
}

/// How many snapshots back [`published_since`] looks at most.
const MAX_HISTORY: usize = 4096;

/// Address of the oldest snapshot that a new announcer goes through: 0 (the first one
/// published) in the process that started the session, the one current at the fork in a
/// fork child (which announces its modules on a stream of its own).
static HISTORY_FLOOR: AtomicUsize = AtomicUsize::new(0);

/// For an announcer: the snapshots published after the one at address `seen`, oldest
/// first, ending with the current one (none if `seen` is the current one). With `seen` 0
/// (nothing seen yet), the history from the session's start (or the fork) instead, so that
/// modules loaded and unloaded before the first poll are announced too. At most the last
/// [`MAX_HISTORY`]. Allocates.
pub(super) fn published_since(seen: usize) -> Vec<&'static Snapshot> {
    let floor = HISTORY_FLOOR.load(Ordering::Relaxed);
    let mut newer = Vec::new();
    let mut at = current();
    while let Some(s) = at {
        let addr = s as *const Snapshot as usize;
        if addr == seen {
            break;
        }
        newer.push(s);
        if (seen == 0 && addr == floor) || newer.len() == MAX_HISTORY {
            break;
        }
        at = s.prev;
    }
    newer.reverse();
    newer
}

/// Where the return address of the shim's outermost frame in a call chain (the hook the
/// program called) is kept, and that address. While the hook's call is still running the
/// slot holds `ra`; once the slot holds anything else (or is no longer mapped), the call has
/// returned.
#[derive(Clone, Copy, Debug)]
struct HookFrame {
    slot: u64,
    ra: u64,
}

impl HookFrame {
    fn returned(&self) -> bool {
        match read_word(self.slot) {
            Ok(word) => word != self.ra,
            // The stack that held the frame is gone, and its thread with it.
            Err(Unreadable::Unmapped) => true,
            Err(Unreadable::Other) => false,
        }
    }
}

/// Why [`read_word`] read nothing.
enum Unreadable {
    Unmapped,
    Other,
}

/// Reads one word of this process's memory without risking a fault (`process_vm_readv`):
/// for stack slots that may belong to another thread, or to no thread any more.
fn read_word(addr: u64) -> Result<u64, Unreadable> {
    let mut word = 0u64;
    let local = libc::iovec {
        iov_base: (&mut word as *mut u64).cast(),
        iov_len: 8,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: 8,
    };
    // SAFETY: `local` describes the 8 bytes of `word`, which live across the call; the kernel
    // checks `remote` itself and fails with EFAULT where it is not mapped readable.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    if n == 8 {
        Ok(word)
    } else if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EFAULT) {
        Err(Unreadable::Unmapped)
    } else {
        Err(Unreadable::Other)
    }
}

/// Most shim frames between a hook's entry and the code that looks for it.
#[cfg(target_arch = "x86_64")]
const MAX_HOOK_FRAMES: usize = 64;

/// The calling thread's [`HookFrame`]: unwinds through the shim's own frames (framehop over
/// the shim's `.eh_frame`, stack read with [`read_word`]) up to the first return address
/// outside the shim. `None` if that fails.
#[cfg(target_arch = "x86_64")]
#[inline(never)]
fn hook_frame() -> Option<HookFrame> {
    use framehop::x86_64::UnwindRegsX86_64;
    use framehop::{FrameAddress, Unwinder as _};
    let snap = current()?;
    let (ip, sp, bp) = super::walk::registers();
    let mut regs = UnwindRegsX86_64::new(ip, sp, bp);
    let mut frame = FrameAddress::from_instruction_pointer(ip);
    let mut cache = super::walk::Cache::new_in();
    let mut read_stack = |addr: u64| -> Result<u64, ()> {
        if addr < sp {
            return Err(());
        }
        read_word(addr).map_err(|_| ())
    };
    for _ in 0..MAX_HOOK_FRAMES {
        if !snap.own.contains(&frame.address_for_lookup()) {
            return None;
        }
        let ra = snap
            .unwinder
            .unwind_frame(frame, &mut regs, &mut cache, &mut read_stack)
            .ok()??;
        let caller = FrameAddress::from_return_address(ra)?;
        if !snap.own.contains(&caller.address_for_lookup()) {
            // x86_64: the return address lies just below the caller's stack pointer (CFA).
            let slot = regs.sp().checked_sub(8)?;
            let found = read_word(slot).ok()? == ra;
            return found.then_some(HookFrame { slot, ra });
        }
        frame = caller;
    }
    None
}

#[cfg(not(target_arch = "x86_64"))]
fn hook_frame() -> Option<HookFrame> {
    None
}

/// A module removed from the published set by `before_dlclose`, for as long as the
/// `dlclose` may still unmap it.
struct Closing {
    base: u64,
    loader_name: Vec<u8>,
    /// CLOCK_MONOTONIC when it was removed.
    since_ns: u64,
    /// The `dlclose` hook's frame, if found: the entry is over once that call returned.
    frame: Option<HookFrame>,
}

impl Closing {
    /// Whether `m` is the module this entry holds out (a module loaded at the same address
    /// under the same name is the same module until the `dlclose` is known to be over).
    fn matches(&self, m: &ModuleInfo) -> bool {
        self.base == m.base && self.loader_name == m.loader_name
    }
}

#[derive(Default)]
struct RebuildState {
    closing: Vec<Closing>,
}

static REBUILD: ForkLock<RebuildState> = ForkLock::new();

/// Runs `f` on the rebuild state (created on first use) under the rebuild lock.
fn with_state<R>(f: impl FnOnce(&mut RebuildState) -> R) -> R {
    let mut guard = REBUILD.lock();
    f(guard.get().get_or_insert_with(RebuildState::default))
}

/// CLOCK_MONOTONIC of the oldest closing entry; 0 when there is none.
static OLDEST_CLOSING_NS: AtomicU64 = AtomicU64::new(0);
/// Set in a fork child that inherited closing entries: no `dlclose` is running there.
static RESOLVE_ALL_CLOSING: AtomicBool = AtomicBool::new(false);
static NEXT_MODULE_ID: AtomicU32 = AtomicU32::new(1);

fn next_module_id() -> ModuleId {
    ModuleId(NEXT_MODULE_ID.fetch_add(1, Ordering::Relaxed))
}

/// Builds and publishes the first snapshot (or refreshes it if one exists). Modules seen by
/// the first enumeration count as loaded at startup, which glibc never unloads.
pub(super) fn init() {
    with_state(|state| {
        let first = current().is_none();
        rebuild(state, modules::enumerate(), first);
    })
}

/// Re-reads the loader's list after a `dlopen`.
pub(super) fn refresh() {
    with_state(|state| {
        // Before reading the list: an entry found over here was over when the list was read.
        settle(state, 0);
        rebuild(state, modules::enumerate(), false);
    })
}

/// Ends the closing entries whose `dlclose` is known to be over: the hook's call returned,
/// or (`since_ns <= settle_before`) the grace period passed and the loader's lock was free.
/// Call before reading the loader's list. Returns whether any ended.
fn settle(state: &mut RebuildState, settle_before: u64) -> bool {
    let before = state.closing.len();
    state
        .closing
        .retain(|c| c.since_ns > settle_before && !c.frame.is_some_and(|f| f.returned()));
    update_oldest_closing(state);
    state.closing.len() != before
}

/// Whether `m` is never unloaded: the main program, the vDSO, the dynamic loader.
fn always_startup(m: &ModuleInfo, loader: u64) -> bool {
    m.is_vdso || m.loader_name.is_empty() || (loader != 0 && m.base == loader)
}

fn rebuild(state: &mut RebuildState, en: Enumeration, startup: bool) {
    let prev = current();
    let loader = modules::loader_base();
    // A module gone from the loader's list is unmapped: its entry has nothing left to do.
    state
        .closing
        .retain(|c| en.modules.iter().any(|m| c.matches(m)));
    update_oldest_closing(state);
    let mut out: Vec<Arc<LoadedModule>> = Vec::with_capacity(en.modules.len());
    for mut m in en.modules {
        if state.closing.iter().any(|c| c.matches(&m)) {
            continue;
        }
        // Only a module of the previous snapshot is carried over. One that a closing entry
        // held out is in no snapshot, so whatever is found at its place once the entry is
        // over (the same load after a dlclose that only dropped a reference, or a new load
        // of the same file) is a new module, under a new id.
        if let Some(old) = prev.and_then(|p| p.modules.iter().find(|o| o.same_mapping(&m))) {
            out.push(Arc::clone(old));
            continue;
        }
        m.id = next_module_id();
        m.map.id = m.id;
        m.startup = startup || always_startup(&m, loader);
        out.push(Arc::new(LoadedModule::new(m)));
    }
    if let Some(prev) = prev {
        // Nothing changed (a dlopen of a library already loaded): keep the snapshot rather
        // than leak an identical one.
        out.sort_by_key(|m| m.range.start);
        let same = prev.counters == en.counters
            && prev.modules.len() == out.len()
            && prev
                .modules
                .iter()
                .zip(&out)
                .all(|(a, b)| Arc::ptr_eq(a, b));
        if same {
            return;
        }
    }
    publish(Snapshot::build(out, en.counters));
}

fn update_oldest_closing(state: &RebuildState) {
    let oldest = state
        .closing
        .iter()
        .map(|c| c.since_ns.max(1))
        .min()
        .unwrap_or(0);
    OLDEST_CLOSING_NS.store(oldest, Ordering::Relaxed);
}

/// The public head of glibc's `struct link_map` (`<link.h>`), as `dlinfo` returns it.
#[repr(C)]
struct LinkMapHead {
    l_addr: usize,
    l_name: *const libc::c_char,
}

/// Called before the real `dlclose(handle)`: publishes a set without the module and its
/// non-startup dependencies, read afresh from the loader's list (so also when they were
/// loaded behind the hooks' back and are not in the set yet). Allocates; takes the
/// loader's lock (in `dlinfo`) before ours.
pub(super) fn before_dlclose(handle: *mut libc::c_void) {
    if handle.is_null() {
        return;
    }
    let mut lm: *const LinkMapHead = std::ptr::null();
    // SAFETY: the program is about to pass `handle` to dlclose, so it claims it is a live
    // handle from dlopen; RTLD_DI_LINKMAP writes one pointer to `lm`.
    let rc = unsafe {
        libc::dlinfo(
            handle,
            libc::RTLD_DI_LINKMAP,
            (&mut lm as *mut *const LinkMapHead).cast(),
        )
    };
    if rc != 0 || lm.is_null() {
        return;
    }
    // SAFETY: dlinfo returned the handle's link_map, whose public head is `LinkMapHead` and
    // which stays valid until the dlclose that follows; l_name is a C string or null.
    let (base, name) = unsafe {
        let lm = &*lm;
        let name = if lm.l_name.is_null() {
            Vec::new()
        } else {
            CStr::from_ptr(lm.l_name).to_bytes().to_vec()
        };
        (lm.l_addr as u64, name)
    };
    let frame = hook_frame();
    with_state(|state| {
        let Some(snap) = current() else {
            return;
        };
        settle(state, 0);
        let en = modules::enumerate();
        let loader = modules::loader_base();
        let startup: Vec<bool> = en
            .modules
            .iter()
            .map(|m| {
                always_startup(m, loader)
                    || snap.modules.iter().any(|o| o.startup && o.same_mapping(m))
            })
            .collect();
        let target = en
            .modules
            .iter()
            .position(|m| m.base == base && m.loader_name == name);
        if let Some(target) = target.filter(|&t| !startup[t]) {
            let now = clock::monotonic_ns();
            for i in unload_candidates(&en.modules, &startup, target) {
                let m = &en.modules[i];
                state.closing.push(Closing {
                    base: m.base,
                    loader_name: m.loader_name.clone(),
                    since_ns: now,
                    frame,
                });
            }
        }
        rebuild(state, en, false);
    })
}

/// `target` and every non-startup module reachable from it through `DT_NEEDED`: what a
/// `dlclose` of `target` may unmap.
fn unload_candidates(modules: &[ModuleInfo], startup: &[bool], target: usize) -> Vec<usize> {
    let mut doomed = vec![target];
    let mut next = 0;
    while let Some(&i) = doomed.get(next) {
        next += 1;
        for name in &modules[i].needed {
            for (j, m) in modules.iter().enumerate() {
                if !startup[j] && !doomed.contains(&j) && m.answers_to(name) {
                    doomed.push(j);
                }
            }
        }
    }
    doomed
}

/// For the announcer's poll: rebuilds if the loader's list changed since the snapshot was
/// read (objects loaded or unloaded by paths that bypass the hooks: glibc's internal
/// `dlopen`, unloads of dependencies), or if closing entries are over. Cheap when nothing
/// changed (one short `dl_iterate_phdr`, and one `process_vm_readv` per closing entry).
pub(super) fn refresh_if_stale() {
    let Some(snap) = current() else {
        return;
    };
    let resolve_all = RESOLVE_ALL_CLOSING.swap(false, Ordering::Relaxed);
    let oldest = OLDEST_CLOSING_NS.load(Ordering::Relaxed);
    let now = clock::monotonic_ns();
    let settle_before = if resolve_all {
        u64::MAX
    } else if oldest != 0 && now.saturating_sub(oldest) >= CLOSING_GRACE_NS {
        // Wait for any dlclose in progress: dladdr takes the loader's lock, which glibc
        // holds for the whole of a dlclose. Not under our lock: a thread inside dlopen
        // (holding the loader's lock) may be waiting for ours.
        loader_barrier();
        now - CLOSING_GRACE_NS
    } else {
        0
    };
    if oldest == 0 && !resolve_all && modules::counters() == snap.counters {
        return;
    }
    with_state(|state| {
        let settled = settle(state, settle_before);
        if !settled && current().is_some_and(|s| modules::counters() == s.counters) {
            return;
        }
        rebuild(state, modules::enumerate(), false);
    })
}

fn loader_barrier() {
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::uninit();
    // SAFETY: dladdr writes a Dl_info to `info`; the address is any address (our own code).
    unsafe { libc::dladdr(own_code_address() as *const libc::c_void, info.as_mut_ptr()) };
}

/// In a fork child: take the rebuild lock back from a vanished thread, settle the closing
/// entries at the next poll (no `dlclose` is running in the child), and start the child's
/// announcement history here. Never blocks or allocates; one `getpid` syscall.
pub(super) fn fork_child() {
    REBUILD.recover_after_fork();
    let floor = current().map_or(0, |s| s as *const Snapshot as usize);
    HISTORY_FLOOR.store(floor, Ordering::Relaxed);
    if OLDEST_CLOSING_NS.load(Ordering::Relaxed) != 0 {
        RESOLVE_ALL_CLOSING.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
pub(super) fn is_closing(path_suffix: &str) -> bool {
    let mut guard = REBUILD.lock();
    guard.get().as_ref().is_some_and(|s| {
        s.closing
            .iter()
            .any(|c| c.loader_name.ends_with(path_suffix.as_bytes()))
    })
}

#[cfg(test)]
pub(super) fn hold_rebuild_lock_for_test() -> impl Drop {
    REBUILD.lock()
}
