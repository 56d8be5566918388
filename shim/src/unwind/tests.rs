//! Tests of the unwinder in a normal process (the hooks are not built for tests): module
//! enumeration, announcements across `dlopen`/`dlclose`, unwinding through Rust, through C
//! built without frame pointers, and through a signal frame, the fork recovery, and an
//! ignored cost measurement (`cargo test -p leakscope-shim --release -- --ignored --nocapture`).

use super::modules;
use super::snapshot::{self, LoadedModule};
use super::{after_fork_child, init, on_dlclose, on_dlopen, ModuleAnnouncer, ThreadUnwinder};
use leakscope_protocol::{ModuleId, Record};
use std::ffi::{c_void, CStr, CString};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, Once};

/// Tests that load or unload libraries or fork run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn ensure_init() {
    static INIT: Once = Once::new();
    INIT.call_once(init);
}

/// A shared library compiled for a test, in its own temporary directory (removed on drop).
struct TempLibrary {
    so: PathBuf,
    dir: PathBuf,
}

impl Drop for TempLibrary {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Compiles `src` (C) into a shared library (`$CC`, else `cc`).
fn build_c_library(name: &str, src: &str, extra: &[&str]) -> TempLibrary {
    let dir =
        std::env::temp_dir().join(format!("leakscope-unwind-{}-{}", std::process::id(), name));
    std::fs::create_dir_all(&dir).unwrap();
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, src).unwrap();
    let so = dir.join(format!("lib{name}.so"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let status = Command::new(cc)
        .args(["-O2", "-fomit-frame-pointer", "-fPIC", "-shared", "-o"])
        .arg(&so)
        .arg(&c)
        .args(extra)
        .status()
        .expect("run cc");
    assert!(status.success(), "cc failed for {name}");
    TempLibrary { so, dir }
}

fn dlopen(path: &Path) -> *mut c_void {
    let c = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string; the libraries built here have no constructors.
    let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!h.is_null(), "dlopen {}", path.display());
    h
}

fn dlclose(h: *mut c_void) {
    // SAFETY: `h` came from dlopen and is closed once.
    assert_eq!(unsafe { libc::dlclose(h) }, 0);
}

fn dlsym(h: *mut c_void, name: &str) -> *mut c_void {
    let c = CString::new(name).unwrap();
    // SAFETY: a live handle and a valid C string.
    let p = unsafe { libc::dlsym(h, c.as_ptr()) };
    assert!(!p.is_null(), "dlsym {name}");
    p
}

/// The dynamic symbol containing `addr`, if any.
fn symbol_name(addr: u64) -> Option<String> {
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::uninit();
    // SAFETY: dladdr fills `info` when it returns non-zero.
    let info = unsafe {
        if libc::dladdr(addr as *const c_void, info.as_mut_ptr()) == 0 {
            return None;
        }
        info.assume_init()
    };
    if info.dli_sname.is_null() {
        return None;
    }
    // SAFETY: dli_sname is a C string in the loaded object's string table.
    Some(
        unsafe { CStr::from_ptr(info.dli_sname) }
            .to_string_lossy()
            .into_owned(),
    )
}

fn module_containing(addr: u64) -> Option<std::sync::Arc<LoadedModule>> {
    let snap = snapshot::current()?;
    snap.modules.iter().find(|m| m.contains(addr)).cloned()
}

fn unwinder(skip_own: bool) -> Box<ThreadUnwinder> {
    let mut u = ThreadUnwinder::new().expect("stack bounds of a normal thread");
    u.skip_own = skip_own;
    u
}

/// Whether `addr` (a lookup address) lies in the function starting at `start`: our test
/// functions are small, so anything within 1 KiB after the entry counts.
fn within(addr: u64, start: usize) -> bool {
    addr > start as u64 && addr < start as u64 + 1024
}

#[test]
fn enumeration_finds_libc_and_the_test_binary() {
    let _serial = serial();
    let en = modules::enumerate();
    assert!(en.counters.adds >= en.modules.len() as u64);

    let libc_mod = en
        .modules
        .iter()
        .find(|m| m.loader_name.ends_with(b"/libc.so.6"))
        .expect("libc is loaded");
    assert!(libc_mod.map.path.ends_with("/libc.so.6"));
    assert_eq!(
        libc_mod.map.build_id.len(),
        20,
        "Debian's libc has a SHA-1 build id"
    );
    assert!(libc_mod.eh_frame.is_some(), "libc has .eh_frame_hdr");
    assert_eq!(libc_mod.soname.as_deref(), Some(&b"libc.so.6"[..]));
    // SAFETY: dlsym with a valid C string.
    let malloc = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"malloc".as_ptr()) } as u64;
    assert!(libc_mod
        .code
        .iter()
        .any(|c| (c.start..c.end).contains(&malloc)));

    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    let main = &en.modules[0];
    assert!(main.loader_name.is_empty());
    assert_eq!(Path::new(&main.map.path), exe);
    assert!(
        !main.map.build_id.is_empty(),
        "the test binary has a build id"
    );
    let here = enumeration_finds_libc_and_the_test_binary as *const () as usize as u64;
    assert!(main.code.iter().any(|c| (c.start..c.end).contains(&here)));

    for m in &en.modules {
        assert!(!m.map.segments.is_empty(), "{}", m.map.path);
        for s in &m.map.segments {
            assert!(s.start.0 < s.end.0, "{}", m.map.path);
            assert!(m.range.start <= s.start.0 && s.end.0 <= m.range.end);
            // Segments are mapped page-congruent with their file offsets.
            assert_eq!(s.start.0 % 4096, s.file_offset.0 % 4096, "{}", m.map.path);
        }
        assert_eq!(
            m.code.len(),
            m.map.segments.iter().filter(|s| s.executable).count()
        );
        if let Some(eh) = &m.eh_frame {
            assert!(m.range.start <= eh.hdr.start && eh.hdr.end <= m.range.end);
            assert!(m.range.start <= eh.frame.start && eh.frame.end <= m.range.end);
            assert!(eh.frame.start < eh.frame.end);
        }
    }
    assert_eq!(en.modules.iter().filter(|m| m.is_vdso).count(), 1);
}

fn module_records(records: &[Record]) -> Vec<(ModuleId, String)> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Module(m) => Some((m.id, m.path.clone())),
            _ => None,
        })
        .collect()
}

fn unload_records(records: &[Record]) -> Vec<ModuleId> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::ModuleUnload(u) => Some(u.id),
            _ => None,
        })
        .collect()
}

const TINY_LIB: &str = "int leakscope_tiny(int x) { return x * 7 + 1; }\n";

#[test]
fn announcer_announces_each_module_once_and_reports_unloads() {
    let _serial = serial();
    ensure_init();
    let lib = build_c_library("tiny", TINY_LIB, &[]);
    let so = &lib.so;
    let path = so.to_str().unwrap().to_owned();

    let mut announcer = ModuleAnnouncer::new();
    let mut records = Vec::new();
    announcer.poll(&mut records);
    let first = module_records(&records);
    assert!(first.iter().any(|(_, p)| p.ends_with("/libc.so.6")));
    assert!(first.iter().all(|(_, p)| !p.contains("linux-vdso")));
    let mut ids: Vec<_> = first.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), first.len(), "ids are unique");
    assert!(!first.iter().any(|(_, p)| *p == path));

    records.clear();
    announcer.poll(&mut records);
    assert!(records.is_empty(), "nothing new: {records:?}");

    let h = dlopen(so);
    on_dlopen();
    records.clear();
    announcer.poll(&mut records);
    let added = module_records(&records);
    let (tiny_id, _) = added
        .iter()
        .find(|(_, p)| *p == path)
        .cloned()
        .expect("the dlopened library is announced");
    assert!(unload_records(&records).is_empty());
    records.clear();
    announcer.poll(&mut records);
    assert!(
        module_records(&records).iter().all(|(_, p)| *p != path),
        "announced once"
    );

    // A second announcer (a new stream) announces it again.
    let mut other = ModuleAnnouncer::new();
    let mut other_records = Vec::new();
    other.poll(&mut other_records);
    assert!(module_records(&other_records).contains(&(tiny_id, path.clone())));

    on_dlclose(h);
    assert!(snapshot::is_closing(&path));
    assert!(module_containing(dlsym(h, "leakscope_tiny") as u64).is_none());
    dlclose(h);
    records.clear();
    announcer.poll(&mut records);
    assert_eq!(unload_records(&records), vec![tiny_id]);
    assert!(
        !snapshot::is_closing(&path),
        "the loader's list no longer has it"
    );
    records.clear();
    announcer.poll(&mut records);
    assert!(records.is_empty(), "{records:?}");
}

#[test]
fn a_dlclose_that_only_drops_a_reference_gives_the_module_back() {
    let _serial = serial();
    ensure_init();
    let lib = build_c_library("refcounted", TINY_LIB, &[]);
    let so = &lib.so;
    let path = so.to_str().unwrap().to_owned();
    let h1 = dlopen(so);
    let h2 = dlopen(so);
    on_dlopen();
    let f = dlsym(h1, "leakscope_tiny") as u64;
    let before = module_containing(f).expect("loaded").id;

    on_dlclose(h2);
    dlclose(h2);
    assert!(
        module_containing(f).is_none(),
        "excluded while the dlclose may run"
    );
    let mut announcer = ModuleAnnouncer::new();
    let mut records = Vec::new();
    announcer.poll(&mut records);
    assert!(!announced_at_end(&records, &path), "{records:?}");

    std::thread::sleep(std::time::Duration::from_nanos(
        snapshot::CLOSING_GRACE_NS + 20_000_000,
    ));
    records.clear();
    announcer.poll(&mut records);
    let back = module_containing(f).expect("still loaded, so back in the set");
    assert_ne!(back.id, before, "a new mapping record, under a new id");
    assert!(module_records(&records).contains(&(back.id, path.clone())));
    assert!(!snapshot::is_closing(&path));

    on_dlclose(h1);
    dlclose(h1);
    records.clear();
    announcer.poll(&mut records);
    assert_eq!(unload_records(&records), vec![back.id]);
}

#[test]
fn dlclose_also_excludes_private_dependencies() {
    let _serial = serial();
    ensure_init();
    let dep = build_c_library("leafdep", "int leaf_dep(int x) { return x + 2; }\n", &[]);
    let dir = dep.dir.to_str().unwrap().to_owned();
    let top = build_c_library(
        "topdep",
        "int leaf_dep(int);\nint top_dep(int x) { return leaf_dep(x) * 2; }\n",
        &[
            &format!("-L{dir}"),
            "-lleafdep",
            &format!("-Wl,-rpath,{dir}"),
        ],
    );
    let h = dlopen(&top.so);
    on_dlopen();
    let leaf = module_containing(dlsym(h, "leaf_dep") as u64).expect("dependency loaded");
    assert!(!leaf.startup);
    on_dlclose(h);
    assert!(snapshot::is_closing("/libtopdep.so"));
    assert!(snapshot::is_closing("/libleafdep.so"));
    dlclose(h);
    let mut announcer = ModuleAnnouncer::new();
    let mut records = Vec::new();
    announcer.poll(&mut records);
    assert!(!announced_at_end(&records, "/libleafdep.so"));
    assert!(!announced_at_end(&records, "/libtopdep.so"));
    assert!(
        !snapshot::is_closing("/libleafdep.so"),
        "unloaded with its user"
    );
    assert!(!snapshot::is_closing("/libtopdep.so"));
}

#[test]
fn startup_libraries_are_never_excluded() {
    let _serial = serial();
    ensure_init();
    on_dlopen();
    let settled = snapshot::current().unwrap() as *const snapshot::Snapshot;
    // libc is already loaded at startup: this dlopen only takes a reference, and neither it
    // nor the dlclose changes the set (no new snapshot is published, none leaked).
    let h = dlopen(Path::new("libc.so.6"));
    on_dlopen();
    on_dlclose(h);
    dlclose(h);
    assert!(std::ptr::eq(snapshot::current().unwrap(), settled));
    // SAFETY: dlsym with a valid C string.
    let malloc = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"malloc".as_ptr()) } as u64;
    let m = module_containing(malloc).expect("libc stays in the set");
    assert!(m.startup);
}

#[inline(never)]
fn chain_1(u: &mut ThreadUnwinder, out: &mut [u64]) -> usize {
    black_box(chain_2(black_box(u), out)) + black_box(0)
}
#[inline(never)]
fn chain_2(u: &mut ThreadUnwinder, out: &mut [u64]) -> usize {
    black_box(chain_3(black_box(u), out)) + black_box(0)
}
#[inline(never)]
fn chain_3(u: &mut ThreadUnwinder, out: &mut [u64]) -> usize {
    black_box(chain_4(black_box(u), out)) + black_box(0)
}
#[inline(never)]
fn chain_4(u: &mut ThreadUnwinder, out: &mut [u64]) -> usize {
    black_box(black_box(u).capture(out)) + black_box(0)
}

#[inline(never)]
fn stop_chain_1(u: &mut ThreadUnwinder, out: &mut [u64], stop: &std::ops::Range<u64>) -> usize {
    black_box(stop_chain_2(black_box(u), out, stop)) + black_box(0)
}
#[inline(never)]
fn stop_chain_2(u: &mut ThreadUnwinder, out: &mut [u64], stop: &std::ops::Range<u64>) -> usize {
    black_box(black_box(u).capture_until(out, stop)) + black_box(0)
}

#[test]
fn capture_until_ends_after_the_first_frame_in_the_stop_range() {
    ensure_init();
    let mut u = unwinder(false);
    let mut full = [0u64; 128];
    let n = stop_chain_1(&mut u, &mut full, &(0..0));
    let at = full[..n]
        .iter()
        .position(|&f| within(f, stop_chain_1 as *const () as usize))
        .unwrap_or_else(|| panic!("stop_chain_1 not found in {:x?}", &full[..n]));
    assert!(
        at + 1 < n,
        "frames continue past stop_chain_1 without a stop range"
    );
    // A stop range around stop_chain_1's lookup address: the walk ends right there.
    let f = full[at];
    let mut cut = [0u64; 128];
    let m = stop_chain_1(&mut u, &mut cut, &(f - 1..f + 1));
    assert_eq!(m, at + 1, "{:x?}", &cut[..m]);
    assert_eq!(cut[m - 1], f);
    assert_eq!(&cut[1..m], &full[1..m], "the same inner frames");
}

#[test]
fn unwinds_a_rust_call_chain() {
    ensure_init();
    let mut u = unwinder(false);
    let mut frames = [0u64; 128];
    let n = chain_1(&mut u, &mut frames);
    let frames = &frames[..n];
    assert!(n > 6, "{frames:x?}");
    let capture = ThreadUnwinder::capture as *const () as usize;
    assert!(
        frames[0] >= capture as u64 && frames[0] < capture as u64 + 8192,
        "first frame inside capture"
    );
    let expected = [
        chain_4 as *const () as usize,
        chain_3 as *const () as usize,
        chain_2 as *const () as usize,
        chain_1 as *const () as usize,
    ];
    let at = frames
        .iter()
        .position(|&f| within(f, expected[0]))
        .unwrap_or_else(|| panic!("chain_4 not found in {frames:x?}"));
    for (k, &start) in expected.iter().enumerate() {
        assert!(
            within(frames[at + k], start),
            "frame {} of {frames:x?}",
            at + k
        );
    }
    let test_fn = unwinds_a_rust_call_chain as *const () as usize as u64;
    let after = frames[at + 4];
    assert!(
        after > test_fn && after < test_fn + 16384,
        "then the test function"
    );
    // The walk reaches the thread's start (or __libc_start_main) in libc.
    assert!(
        frames[at + 5..]
            .iter()
            .any(|&f| module_containing(f).is_some_and(|m| m.map.path.ends_with("/libc.so.6"))),
        "{frames:x?}"
    );

    // Dropping the shim's own frames: in this test binary every Rust frame is "own", so
    // the first frame left is the thread start in libc.
    let mut u = unwinder(true);
    let mut own_skipped = [0u64; 128];
    let m = chain_1(&mut u, &mut own_skipped);
    assert!(m >= 1 && m < n);
    let snap = snapshot::current().unwrap();
    assert!(
        snap.own.contains(&frames[0]),
        "the test binary is the 'own' module here"
    );
    assert!(!snap.own.contains(&own_skipped[0]));
    assert_eq!(&own_skipped[..m], &frames[n - m..], "the same outer frames");
}

#[test]
fn stops_at_the_buffer_length_and_refuses_unknown_stacks() {
    ensure_init();
    let mut u = unwinder(false);
    let mut two = [0u64; 2];
    assert_eq!(chain_1(&mut u, &mut two), 2);
    assert_eq!(chain_1(&mut u, &mut []), 0);
    // A stack range that does not hold the current sp: nothing is read at all.
    u.stack = 0x1000..0x2000;
    let mut frames = [0u64; 16];
    assert_eq!(chain_1(&mut u, &mut frames), 0);
}

const C_CHAIN: &str = r#"
#include <stdint.h>
typedef uint64_t (*callback_t)(void *);
#define NOINLINE __attribute__((noinline, noipa))
volatile uint64_t leakscope_sink;

NOINLINE uint64_t c5(callback_t cb, void *ctx, uint64_t x) {
    volatile char pad[40];
    pad[x % 40] = (char)x;
    uint64_t r = cb(ctx);
    leakscope_sink = pad[(x + 1) % 40];
    return r + x * 3 + leakscope_sink;
}
NOINLINE uint64_t c4(callback_t cb, void *ctx, uint64_t x) {
    volatile uint64_t a[5] = {x, x + 1, x + 2, x + 3, x + 4};
    uint64_t r = c5(cb, ctx, x + 1);
    return r + a[x % 5];
}
NOINLINE uint64_t c3(callback_t cb, void *ctx, uint64_t x) {
    /* Garbage in rbp for everything called from here: a frame-pointer walk cannot get
       past this frame, only the CFI can. */
    __asm__ volatile("movabs $0x5a5a5a5a5a5a5a5a, %%rbp" ::: "rbp");
    uint64_t r = c4(cb, ctx, x + 1);
    return r ^ leakscope_sink;
}
NOINLINE uint64_t c2(callback_t cb, void *ctx, uint64_t x) {
    uint64_t r = c3(cb, ctx, x * 2);
    return r + leakscope_sink;
}
NOINLINE uint64_t c1(callback_t cb, void *ctx, uint64_t x) {
    uint64_t r = c2(cb, ctx, x + 7);
    return r - leakscope_sink;
}
"#;

struct CallbackCtx {
    unwinder: Box<ThreadUnwinder>,
    frames: [u64; 64],
    n: usize,
}

extern "C" fn capture_callback(ctx: *mut c_void) -> u64 {
    // SAFETY: the test passes a live, exclusive `CallbackCtx`.
    let ctx = unsafe { &mut *ctx.cast::<CallbackCtx>() };
    ctx.n = ctx.unwinder.capture(&mut ctx.frames);
    ctx.n as u64
}

type CEntry = extern "C" fn(extern "C" fn(*mut c_void) -> u64, *mut c_void, u64) -> u64;

#[test]
fn unwinds_through_c_without_frame_pointers() {
    let _serial = serial();
    ensure_init();
    let lib = build_c_library("cchain", C_CHAIN, &[]);
    let h = dlopen(&lib.so);
    on_dlopen();
    // SAFETY: c1 has exactly the CEntry signature.
    let c1: CEntry = unsafe { std::mem::transmute::<*mut c_void, CEntry>(dlsym(h, "c1")) };
    let mut ctx = CallbackCtx {
        unwinder: unwinder(true),
        frames: [0; 64],
        n: 0,
    };
    let r = c1(capture_callback, (&mut ctx as *mut CallbackCtx).cast(), 1);
    black_box(r);
    let frames = &ctx.frames[..ctx.n];
    let names: Vec<Option<String>> = frames.iter().map(|&f| symbol_name(f)).collect();
    let expected = ["c5", "c4", "c3", "c2", "c1"];
    assert!(frames.len() > 6, "{names:?}");
    for (k, name) in expected.iter().enumerate() {
        assert_eq!(names[k].as_deref(), Some(*name), "frame {k}: {names:?}");
    }
    // Back in the Rust test function after the C frames.
    let test_fn = unwinds_through_c_without_frame_pointers as *const () as usize as u64;
    assert!(
        frames[5] > test_fn && frames[5] < test_fn + 16384,
        "{names:?}"
    );
    on_dlclose(h);
    dlclose(h);
}

static SIGNAL_UNWINDER: AtomicPtr<ThreadUnwinder> = AtomicPtr::new(std::ptr::null_mut());
static SIGNAL_FRAMES: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];
static SIGNAL_COUNT: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(_sig: libc::c_int) {
    let u = SIGNAL_UNWINDER.load(Ordering::Acquire);
    if u.is_null() {
        return;
    }
    let mut frames = [0u64; 64];
    // SAFETY: the test thread stored a live unwinder and does not use it while the handler
    // runs (the handler runs on that same thread, inside raise).
    let n = unsafe { &mut *u }.capture(&mut frames);
    for (slot, f) in SIGNAL_FRAMES.iter().zip(&frames[..n]) {
        slot.store(*f, Ordering::Relaxed);
    }
    SIGNAL_COUNT.store(n, Ordering::Release);
}

#[inline(never)]
fn raise_here() -> i32 {
    // SAFETY: raise has no preconditions; the handler is installed.
    black_box(unsafe { libc::raise(libc::SIGUSR2) }) + black_box(0)
}

#[test]
fn unwinds_through_a_signal_frame() {
    ensure_init();
    let mut u = unwinder(false);
    SIGNAL_UNWINDER.store(&mut *u, Ordering::Release);
    // SAFETY: installs a handler that only uses async-signal-safe operations (no
    // allocation, no locks); sigaction is given valid structures.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGUSR2, &action, std::ptr::null_mut()),
            0
        );
    }
    assert_eq!(raise_here(), 0);
    SIGNAL_UNWINDER.store(std::ptr::null_mut(), Ordering::Release);
    let n = SIGNAL_COUNT.load(Ordering::Acquire);
    let frames: Vec<u64> = SIGNAL_FRAMES[..n]
        .iter()
        .map(|f| f.load(Ordering::Relaxed))
        .collect();
    let handler = frames
        .iter()
        .position(|&f| within(f, on_signal as *const () as usize))
        .unwrap_or_else(|| panic!("handler frame missing: {frames:x?}"));
    let raiser = frames
        .iter()
        .position(|&f| within(f, raise_here as *const () as usize))
        .unwrap_or_else(|| panic!("frames past the signal frame missing: {frames:x?}"));
    assert!(handler < raiser);
    // Between them: the interrupted code in libc (raise / pthread_kill).
    assert!(frames[handler + 1..raiser]
        .iter()
        .any(|&f| { module_containing(f).is_some_and(|m| m.map.path.ends_with("/libc.so.6")) }));
    let test_fn = unwinds_through_a_signal_frame as *const () as usize as u64;
    assert!(frames[raiser + 1] > test_fn && frames[raiser + 1] < test_fn + 16384);
}

#[test]
fn a_fork_child_recovers_the_rebuild_lock() {
    let _serial = serial();
    ensure_init();
    // A lock held at the fork by a thread of the parent.
    let held = snapshot::hold_rebuild_lock_for_test();
    // SAFETY: the child only calls the code under test and _exit; fork has no other
    // preconditions.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        std::mem::forget(held);
        // SAFETY: alarm has no preconditions; it kills the child if the rebuild deadlocks.
        unsafe { libc::alarm(10) };
        after_fork_child();
        on_dlopen();
        let code = match ThreadUnwinder::new() {
            Some(mut u) => {
                let mut frames = [0u64; 32];
                if chain_1(&mut u, &mut frames) > 0 {
                    0
                } else {
                    2
                }
            }
            None => 3,
        };
        // SAFETY: ends the child without running the parent's test harness state.
        unsafe { libc::_exit(code) };
    }
    drop(held);
    assert!(pid > 0);
    let mut status = 0;
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "child killed: status {status}");
    assert_eq!(libc::WEXITSTATUS(status), 0);
}

#[inline(never)]
fn deep(depth: u32, u: &mut ThreadUnwinder, out: &mut [u64]) -> usize {
    if depth == 0 {
        black_box(u).capture(out)
    } else {
        black_box(deep(depth - 1, u, out)) + black_box(0)
    }
}

#[test]
#[ignore = "measurement; run with --release -- --ignored --nocapture"]
fn capture_cost() {
    ensure_init();
    let mut u = unwinder(false);
    let mut frames = [0u64; 128];
    let n = deep(10, &mut u, &mut frames);
    for _ in 0..10_000 {
        deep(10, &mut u, &mut frames);
    }
    let rounds = 200_000u32;
    let t = std::time::Instant::now();
    for _ in 0..rounds {
        black_box(deep(10, &mut u, &mut frames));
    }
    let ns = t.elapsed().as_nanos() as f64 / f64::from(rounds);
    println!(
        "capture: {n} frames, {ns:.0} ns per capture, {:.1} ns per frame (warm cache; includes 10 trivial calls)",
        ns / n as f64
    );
    let stats = u.cache.stats();
    println!(
        "rule cache: {} hits, {} misses",
        stats.hits(),
        stats.misses()
    );
    // The shim's own frames skipped, the whole stack still walked.
    let mut u = unwinder(true);
    for _ in 0..10_000 {
        deep(10, &mut u, &mut frames);
    }
    let t = std::time::Instant::now();
    for _ in 0..rounds {
        black_box(deep(10, &mut u, &mut frames));
    }
    let ns = t.elapsed().as_nanos() as f64 / f64::from(rounds);
    println!("capture with own frames skipped: {ns:.0} ns per capture");
}

/// The program side of the reload tests: a loop that opens a library, calls into it and
/// closes it, and a lone close, all through callbacks (as a program calls `dlopen` and
/// `dlclose`), so the shim's frames in `on_dlopen` / `on_dlclose` sit below C frames.
const RELOAD_HOST: &str = r#"
#include <stdint.h>
typedef uint64_t (*capture_t)(void *);
typedef uint64_t (*lib_fn_t)(capture_t, void *);
typedef void *(*open_t)(void *);
typedef lib_fn_t (*lookup_t)(void *, void *);
typedef int (*close_t)(void *, void *);
#define NOINLINE __attribute__((noinline, noipa))
volatile uint64_t host_sink;

NOINLINE int64_t host_loop(void *ctx, int rounds, open_t open, lookup_t lookup,
                           capture_t capture, close_t close) {
    for (int i = 0; i < rounds; i++) {
        void *h = open(ctx);
        if (h == 0)
            return -1;
        lib_fn_t f = lookup(ctx, h);
        if (f == 0)
            return -2;
        host_sink += f(capture, ctx);
        if (close(ctx, h) != 0)
            return -3;
    }
    return (int64_t)host_sink;
}

NOINLINE int host_close(void *ctx, void *h, close_t close) {
    int r = close(ctx, h);
    host_sink += (uint64_t)r;
    return r;
}
"#;

/// The reloaded library: its function calls back into the test, which captures.
const RELOADED_LIB: &str = r#"
#include <stdint.h>
typedef uint64_t (*capture_t)(void *);
volatile uint64_t reloaded_sink;
__attribute__((noinline, noipa)) uint64_t reloaded_fn(capture_t capture, void *ctx) {
    volatile char pad[24];
    pad[(uintptr_t)ctx % 24] = 1;
    uint64_t r = capture(ctx);
    reloaded_sink = pad[0];
    return r + reloaded_sink;
}
"#;

type HostLoop = extern "C" fn(
    *mut c_void,
    i32,
    extern "C" fn(*mut c_void) -> *mut c_void,
    extern "C" fn(*mut c_void, *mut c_void) -> *mut c_void,
    extern "C" fn(*mut c_void) -> u64,
    extern "C" fn(*mut c_void, *mut c_void) -> i32,
) -> i64;
type HostClose =
    extern "C" fn(*mut c_void, *mut c_void, extern "C" fn(*mut c_void, *mut c_void) -> i32) -> i32;

/// Loads the host library and returns it with its two functions.
fn reload_host() -> (TempLibrary, HostLoop, HostClose) {
    let lib = build_c_library("reloadhost", RELOAD_HOST, &[]);
    let h = dlopen(&lib.so);
    on_dlopen();
    // SAFETY: the functions have exactly these C signatures (RELOAD_HOST); the host library
    // stays loaded for the rest of the test process.
    let (run, close) = unsafe {
        (
            std::mem::transmute::<*mut c_void, HostLoop>(dlsym(h, "host_loop")),
            std::mem::transmute::<*mut c_void, HostClose>(dlsym(h, "host_close")),
        )
    };
    (lib, run, close)
}

/// The reload loop's state, shared with its callbacks (which must not panic: they are
/// called from C, so they note problems instead).
struct Reload {
    path: CString,
    unwinder: Box<ThreadUnwinder>,
    announcer: ModuleAnnouncer,
    records: Vec<Record>,
    frames: [u64; 64],
    n: usize,
    /// Loads closed so far.
    rounds: usize,
    /// The module holding `reloaded_fn`, per load.
    loads: Vec<ModuleId>,
    problems: Vec<String>,
}

fn reload_ctx<'a>(ctx: *mut c_void) -> &'a mut Reload {
    // SAFETY: the tests pass a live, exclusive `Reload` as the callbacks' context.
    unsafe { &mut *ctx.cast::<Reload>() }
}

extern "C" fn reload_open(ctx: *mut c_void) -> *mut c_void {
    let r = reload_ctx(ctx);
    // SAFETY: a valid C string; the library has no constructors.
    let h = unsafe { libc::dlopen(r.path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if !h.is_null() {
        on_dlopen();
        r.announcer.poll(&mut r.records);
    }
    h
}

extern "C" fn reload_lookup(_ctx: *mut c_void, h: *mut c_void) -> *mut c_void {
    // SAFETY: a live handle and a valid C string.
    unsafe { libc::dlsym(h, c"reloaded_fn".as_ptr()) }
}

extern "C" fn reload_capture(ctx: *mut c_void) -> u64 {
    let r = reload_ctx(ctx);
    r.n = r.unwinder.capture(&mut r.frames);
    r.n as u64
}

extern "C" fn reload_close(ctx: *mut c_void, h: *mut c_void) -> i32 {
    let r = reload_ctx(ctx);
    r.rounds += 1;
    // Checked while the library is still loaded (dladdr names its functions).
    let frames = &r.frames[..r.n];
    let names: Vec<Option<String>> = frames.iter().map(|&f| symbol_name(f)).collect();
    let expected = [Some("reloaded_fn"), Some("host_loop")];
    if names.len() < 3 || names[..2].iter().map(Option::as_deref).ne(expected) {
        r.problems
            .push(format!("load {}: frames {names:?}", r.rounds));
    }
    match frames.first().and_then(|&f| module_containing(f)) {
        Some(m) => r.loads.push(m.id),
        None => r
            .problems
            .push(format!("load {}: the library is not in the set", r.rounds)),
    }
    on_dlclose(h);
    // SAFETY: `h` came from dlopen and is closed once.
    unsafe { libc::dlclose(h) }
}

/// The dlopen/dlclose loop of scenario 9 (tests/scenarios/dl.c): every load of the same
/// file, at the same place, is a new module: in the set as soon as `dlopen` returned (the
/// capture inside it goes through it to its caller), announced after the previous load's
/// unload.
#[test]
fn a_library_reloaded_in_a_loop_is_a_new_module_each_time() {
    const ROUNDS: usize = 20;
    let _serial = serial();
    ensure_init();
    let (_host, host_loop, _) = reload_host();
    let lib = build_c_library("reloaded", RELOADED_LIB, &[]);
    let path = lib.so.to_str().unwrap().to_owned();
    let mut r = Reload {
        path: CString::new(path.clone()).unwrap(),
        unwinder: unwinder(true),
        announcer: ModuleAnnouncer::new(),
        records: Vec::new(),
        frames: [0; 64],
        n: 0,
        rounds: 0,
        loads: Vec::new(),
        problems: Vec::new(),
    };
    r.announcer.poll(&mut r.records);
    r.records.clear();
    let ctx = (&mut r as *mut Reload).cast::<c_void>();
    let rc = host_loop(
        ctx,
        ROUNDS as i32,
        reload_open,
        reload_lookup,
        reload_capture,
        reload_close,
    );
    assert!(rc >= 0, "host loop failed: {rc}");
    r.announcer.poll(&mut r.records);
    assert!(r.problems.is_empty(), "{:#?}", r.problems);
    assert_eq!(r.loads.len(), ROUNDS);
    let mut distinct = r.loads.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), ROUNDS, "a new id per load: {:?}", r.loads);

    // Module(load 1), Unload(load 1), Module(load 2), ...
    #[derive(Debug, PartialEq)]
    enum Ev {
        Load(ModuleId),
        Unload(ModuleId),
    }
    let events: Vec<Ev> = r
        .records
        .iter()
        .filter_map(|rec| match rec {
            Record::Module(m) if m.path == path => Some(Ev::Load(m.id)),
            Record::ModuleUnload(u) if r.loads.contains(&u.id) => Some(Ev::Unload(u.id)),
            _ => None,
        })
        .collect();
    let expected: Vec<Ev> = r
        .loads
        .iter()
        .flat_map(|&id| [Ev::Load(id), Ev::Unload(id)])
        .collect();
    assert_eq!(events, expected);
    assert!(!snapshot::is_closing("/libreloaded.so"));
}

static NESTED_SEEN: Mutex<Option<(bool, bool)>> = Mutex::new(None);
static NESTED_FN: AtomicU64 = AtomicU64::new(0);
static NESTED_EXTRA: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Runs inside the `dlclose` of libnested (its destructor): loads another library through
/// the hooks' path, which rebuilds the set while the `dlclose` is still running.
extern "C" fn nested_fini_hook() {
    let extra = NESTED_EXTRA.lock().ok().and_then(|p| p.clone());
    let Some(c) = extra.and_then(|p| CString::new(p.into_os_string().into_encoded_bytes()).ok())
    else {
        return;
    };
    // SAFETY: a valid C string; the library has no constructors.
    let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if h.is_null() {
        return;
    }
    on_dlopen();
    let held_out = module_containing(NESTED_FN.load(Ordering::Relaxed)).is_none();
    let closing = snapshot::is_closing("/libnested.so");
    if let Ok(mut seen) = NESTED_SEEN.lock() {
        *seen = Some((held_out, closing));
    }
    on_dlclose(h);
    // SAFETY: `h` came from dlopen just above and is closed once.
    unsafe { libc::dlclose(h) };
}

extern "C" fn close_through_hook(_ctx: *mut c_void, h: *mut c_void) -> i32 {
    on_dlclose(h);
    // SAFETY: the test's handle from dlopen, closed once.
    unsafe { libc::dlclose(h) }
}

/// A rebuild from inside the `dlclose` (a destructor that loads a library) keeps the
/// closing module out: its `dlclose` is still running, and unmaps it afterwards.
#[test]
fn a_rebuild_inside_the_dlclose_keeps_the_module_out() {
    let _serial = serial();
    ensure_init();
    let (_host, _, host_close) = reload_host();
    let extra = build_c_library("nestedextra", TINY_LIB, &[]);
    *NESTED_EXTRA.lock().unwrap() = Some(extra.so.clone());
    let lib = build_c_library(
        "nested",
        "typedef void (*hook_t)(void);\n\
         hook_t nested_fini_hook;\n\
         int nested_fn(int x) { return x * 3 + 1; }\n\
         __attribute__((destructor)) static void nested_fini(void) {\n\
             if (nested_fini_hook) nested_fini_hook();\n\
         }\n",
        &[],
    );
    let h = dlopen(&lib.so);
    on_dlopen();
    let f = dlsym(h, "nested_fn") as u64;
    NESTED_FN.store(f, Ordering::Relaxed);
    assert!(module_containing(f).is_some());
    let hook = dlsym(h, "nested_fini_hook").cast::<extern "C" fn()>();
    // SAFETY: `nested_fini_hook` is a function-pointer variable of the loaded library.
    unsafe { hook.write(nested_fini_hook) };
    assert_eq!(host_close(std::ptr::null_mut(), h, close_through_hook), 0);
    let seen = NESTED_SEEN.lock().unwrap().take();
    assert_eq!(
        seen,
        Some((true, true)),
        "(held out, closing) during its dlclose"
    );
    let mut announcer = ModuleAnnouncer::new();
    let mut records = Vec::new();
    announcer.poll(&mut records);
    assert!(!snapshot::is_closing("/libnested.so"));
    assert!(!announced_at_end(&records, "/libnested.so"), "{records:?}");
}

/// Whether a module whose path ends with `suffix` is announced and not unloaded by the end
/// of `records`.
fn announced_at_end(records: &[Record], suffix: &str) -> bool {
    let unloaded = unload_records(records);
    module_records(records)
        .iter()
        .any(|(id, p)| p.ends_with(suffix) && !unloaded.contains(id))
}

/// Once the `dlclose` hook's call returned, a module that the `dlclose` only dropped a
/// reference to is back at the next poll (no grace period), as a new module.
#[test]
fn a_returned_dlclose_gives_a_still_loaded_module_back_at_once() {
    let _serial = serial();
    ensure_init();
    let (_host, _, host_close) = reload_host();
    let lib = build_c_library("refreturned", TINY_LIB, &[]);
    let h1 = dlopen(&lib.so);
    let h2 = dlopen(&lib.so);
    on_dlopen();
    let f = dlsym(h1, "leakscope_tiny") as u64;
    let before = module_containing(f).expect("loaded").id;
    assert_eq!(host_close(std::ptr::null_mut(), h2, close_through_hook), 0);
    assert!(module_containing(f).is_none(), "held out by the dlclose");
    let mut announcer = ModuleAnnouncer::new();
    let mut records = Vec::new();
    announcer.poll(&mut records);
    let back = module_containing(f).expect("back after the dlclose returned");
    assert_ne!(back.id, before);
    assert!(!snapshot::is_closing("/librefreturned.so"));
    on_dlclose(h1);
    dlclose(h1);
}

/// Loads and unloads between two polls stay visible to an announcer through the snapshots'
/// history, in order.
#[test]
fn the_history_shows_every_load_in_order() {
    let _serial = serial();
    ensure_init();
    let (_host, _, host_close) = reload_host();
    let lib = build_c_library("history", TINY_LIB, &[]);
    let path = lib.so.to_str().unwrap().to_owned();
    on_dlopen();
    let seen = snapshot::current().unwrap() as *const snapshot::Snapshot as usize;
    for _ in 0..3 {
        let h = dlopen(&lib.so);
        on_dlopen();
        assert_eq!(host_close(std::ptr::null_mut(), h, close_through_hook), 0);
    }
    let history = snapshot::published_since(seen);
    assert!(std::ptr::eq(
        *history.last().unwrap(),
        snapshot::current().unwrap()
    ));
    let mut ids: Vec<ModuleId> = Vec::new();
    for s in &history {
        if let Some(m) = s.modules.iter().find(|m| m.map.path == path) {
            if ids.last() != Some(&m.id) {
                ids.push(m.id);
            }
        }
    }
    assert_eq!(ids.len(), 3, "three loads: {ids:?}");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    // A new announcer goes through everything since the start.
    assert!(snapshot::published_since(0).len() > history.len());
    let now = snapshot::current().unwrap() as *const snapshot::Snapshot as usize;
    assert!(snapshot::published_since(now).is_empty());
}
