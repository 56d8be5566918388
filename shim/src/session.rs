//! The session: everything one stream needs (channel, buffer registry, end-request
//! handshake with the sender thread) and the process-wide lifecycle as an atomic state:
//! Uninit -> Active -> (Disabled | Exiting -> Finished). Hooks record only while Active. A
//! fork child abandons its parent's session (its locks and channels may be in any state)
//! and starts a new one; exit and exec end the stream through the sender thread with a
//! bounded wait.

use crate::channel::{Channel, Doorbell};
use crate::diag;
use crate::env::Config;
use crate::record::slot::Registry;
use crate::record::{clock, thread, Guard};
use crate::transport::{self, TransportError};
use crate::{sender, unwind};
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use leakscope_protocol::{EndReason, Origin, Pid};
use std::ffi::{c_int, c_void};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

const UNINIT: u8 = 0;
const ACTIVE: u8 = 1;
const DISABLED: u8 = 2;
const EXITING: u8 = 3;
const FINISHED: u8 = 4;

/// How long exit and exec wait for the sender to write the end of the stream...
const END_TIMEOUT: Duration = Duration::from_secs(3);
/// ...unless the sender makes no progress at all for this long (a collector that stopped
/// reading): then the program goes on at once.
const END_STALL: Duration = Duration::from_millis(500);

static STATE: AtomicU8 = AtomicU8::new(UNINIT);
static CURRENT: AtomicPtr<Session> = AtomicPtr::new(std::ptr::null_mut());

/// Whether hooks record now.
#[inline(always)]
pub fn is_active() -> bool {
    STATE.load(Ordering::Acquire) == ACTIVE
}

/// Whether the C heap and mappings are recorded (`LEAKSCOPE_TRACK` is not `gpu`); set
/// before the session becomes active.
static HOST: AtomicBool = AtomicBool::new(true);

/// Whether host hooks record (a GPU-only session leaves them passing straight through).
#[inline(always)]
pub fn tracks_host() -> bool {
    HOST.load(Ordering::Relaxed)
}

/// Whether new threads should learn their stack bounds: the session is active, or not
/// started yet (a fork child in between, a thread made by an earlier constructor).
#[inline]
pub fn wants_thread_stacks() -> bool {
    matches!(STATE.load(Ordering::Acquire), UNINIT | ACTIVE)
}

/// The current session (set before the state first becomes Active).
#[inline(always)]
pub fn current() -> Option<&'static Session> {
    // SAFETY: sessions are leaked, never freed, once published here.
    unsafe { CURRENT.load(Ordering::Acquire).as_ref() }
}

/// A request to end the stream, answered by the sender thread.
#[derive(Clone, Copy, Debug)]
pub struct EndRequest {
    pub seq: u64,
    pub reason: EndReason,
}

/// The end-of-stream handshake between a hooking thread and the sender.
pub struct Control {
    tx: Sender<EndRequest>,
    rx: Receiver<EndRequest>,
    next: AtomicU64,
    done: AtomicU64,
    /// Bumped by the sender whenever it gets something done (a write, a loop turn).
    progress: AtomicU64,
}

impl Control {
    fn new() -> Control {
        let (tx, rx) = bounded(8);
        Control {
            tx,
            rx,
            next: AtomicU64::new(0),
            done: AtomicU64::new(0),
            progress: AtomicU64::new(0),
        }
    }

    /// The sender is alive and not stuck in a write.
    pub fn note_progress(&self) {
        self.progress.fetch_add(1, Ordering::Relaxed);
    }

    /// The sender's end.
    pub fn requests(&self) -> &Receiver<EndRequest> {
        &self.rx
    }

    /// The sender served request `seq` (or gave up on it).
    pub fn complete(&self, seq: u64) {
        self.done.fetch_max(seq, Ordering::AcqRel);
    }

    /// Asks the sender to end the stream (ringing `bell` to wake it) and waits for it: at
    /// most `limit`, and at most `stall` without any progress of the sender. False when it
    /// gave up.
    fn request(
        &self,
        bell: &Doorbell,
        reason: EndReason,
        limit: Duration,
        stall: Duration,
    ) -> bool {
        let seq = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut wait = Wait::new(limit, stall, &self.progress);
        let mut req = EndRequest { seq, reason };
        loop {
            match self.tx.try_send(req) {
                Ok(()) => {
                    bell.ring();
                    break;
                }
                Err(TrySendError::Full(r)) => req = r,
                Err(TrySendError::Disconnected(_)) => return false,
            }
            if !wait.pause() {
                return false;
            }
        }
        while self.done.load(Ordering::Acquire) < seq {
            if !wait.pause() {
                return false;
            }
        }
        true
    }
}

/// A bounded wait on the sender thread.
struct Wait<'a> {
    deadline: u64,
    stall_ns: u64,
    progress: &'a AtomicU64,
    seen: u64,
    seen_at: u64,
    nap_us: u64,
}

impl<'a> Wait<'a> {
    fn new(limit: Duration, stall: Duration, progress: &'a AtomicU64) -> Wait<'a> {
        let now = clock::monotonic_ns();
        Wait {
            deadline: now.saturating_add(limit.as_nanos() as u64),
            stall_ns: stall.as_nanos() as u64,
            progress,
            seen: progress.load(Ordering::Relaxed),
            seen_at: now,
            nap_us: 50,
        }
    }

    /// Sleeps a little (growing up to 1 ms); false once the wait is over.
    fn pause(&mut self) -> bool {
        let now = clock::monotonic_ns();
        let p = self.progress.load(Ordering::Relaxed);
        if p != self.seen {
            self.seen = p;
            self.seen_at = now;
        }
        if now >= self.deadline || now.saturating_sub(self.seen_at) >= self.stall_ns {
            return false;
        }
        std::thread::sleep(Duration::from_micros(self.nap_us));
        self.nap_us = (self.nap_us * 2).min(1000);
        true
    }
}

/// One stream's state. Leaked: a fork child may abandon it, never free it.
pub struct Session {
    pub pid: u32,
    pub origin: Origin,
    /// `CLOCK_MONOTONIC` at the start, read together with `anchor_raw`.
    pub start_ns: u64,
    pub start_unix_ns: u64,
    /// The event clock (`record::clock::now`) at the start.
    pub anchor_raw: u64,
    pub config: Config,
    pub channel: Channel,
    pub registry: Registry,
    pub control: Control,
}

impl Session {
    fn create(config: Config, origin: Origin) -> &'static Session {
        let anchor_raw = clock::now();
        let start_ns = clock::monotonic_ns();
        Box::leak(Box::new(Session {
            // SAFETY: getpid has no preconditions.
            pid: unsafe { libc::getpid() } as u32,
            origin,
            start_ns,
            start_unix_ns: clock::realtime_ns(),
            anchor_raw,
            channel: Channel::new(config.on_full),
            config,
            registry: Registry::new(),
            control: Control::new(),
        }))
    }
}

/// Starts the process's session: called once from the library constructor.
pub fn init() {
    let Some(_guard) = Guard::enter_any_state() else {
        return;
    };
    if STATE.load(Ordering::Acquire) != UNINIT {
        return;
    }
    clock::init();
    let s = Session::create(Config::from_env(), Origin::Exec);
    // With a NULL DSO handle this handler runs after every `atexit` handler registered
    // later and after the loader's finalizers: the frees those make are recorded.
    // SAFETY: `at_exit` is a valid handler for the life of the process (the shim is never
    // unloaded).
    unsafe { __cxa_atexit(at_exit, std::ptr::null_mut(), std::ptr::null_mut()) };
    start(s, || {
        thread::init_exit_key();
        unwind::init();
        // The constructor runs on the main thread, outside any hook: the one place where
        // its stack bounds can be learnt without risking glibc's thread lock.
        unwind::learn_thread_stack();
        crate::python::discover::at_start();
    });
}

/// Connects session `s` and starts its sender thread; on any failure, prints the one line
/// and disables recording for this process.
fn start(s: &'static Session, prepare_unwinder: fn()) {
    CURRENT.store(std::ptr::from_ref(s).cast_mut(), Ordering::Release);
    let quiet = s.config.quiet;
    let Some(target) = s.config.socket.as_deref() else {
        return untracked(
            quiet,
            format_args!(
                "{} is not set: this process runs untracked",
                leakscope_protocol::env::SOCKET
            ),
        );
    };
    let conn = match transport::connect(target) {
        Ok(c) => c,
        Err(e) => {
            return untracked(
                quiet,
                format_args!(
                    "cannot reach the collector at {target} ({e}): this process runs untracked"
                ),
            );
        }
    };
    if let Err(e) = sender::greet(s, &conn) {
        return untracked(
            quiet,
            format_args!("lost the collector at {target} ({e}): this process runs untracked"),
        );
    }
    prepare_unwinder();
    HOST.store(s.config.host, Ordering::Relaxed);
    match sender::spawn(s, conn) {
        Ok(()) => STATE.store(ACTIVE, Ordering::Release),
        Err(e) => untracked(quiet, format_args!("{e}: this process runs untracked")),
    }
}

/// Prints the one line and disables recording for this process.
fn untracked(quiet: bool, msg: fmt::Arguments<'_>) {
    diag::untracked(quiet, msg);
    STATE.store(DISABLED, Ordering::Release);
}

/// The sender lost the collector: recording stops for good.
pub fn lost(s: &Session, e: &TransportError) {
    let _ = STATE.compare_exchange(ACTIVE, DISABLED, Ordering::AcqRel, Ordering::Acquire);
    let target = s.config.socket.as_deref().unwrap_or("?");
    diag::untracked(
        s.config.quiet,
        format_args!(
            "lost the collector at {target} ({e}): the rest of this process runs untracked"
        ),
    );
}

/// Before `exec`: ends the stream (everything pending, then `End{Exec}`). If the exec
/// fails, the stream simply continues. Does nothing in a `vfork` child, which shares the
/// parent's memory: it must touch neither the parent's thread state nor its stream.
pub fn before_exec() {
    if !is_active() {
        return;
    }
    let Some(s) = current() else { return };
    if !in_own_process(s) {
        return;
    }
    if let Some(_guard) = Guard::enter() {
        s.control
            .request(&s.channel.bell, EndReason::Exec, END_TIMEOUT, END_STALL);
    }
}

/// In a fork child (the forking thread, guard held), when the parent was recording: starts
/// a new stream on a new connection.
pub fn restart_in_fork_child() {
    let Some(parent) = current() else { return };
    STATE.store(UNINIT, Ordering::Release);
    transport::abandon_inherited();
    unwind::after_fork_child();
    crate::python::walk::after_fork_child();
    crate::python::discover::after_fork_child();
    let s = Session::create(
        parent.config.clone(),
        Origin::Fork {
            parent: Pid(parent.pid),
        },
    );
    thread::after_fork_child(s);
    start(s, || {});
}

/// Whether the calling process is the one session `s` records (false in a `vfork` child,
/// which shares the parent's memory).
fn in_own_process(s: &Session) -> bool {
    // SAFETY: getpid has no preconditions (glibc does not cache it).
    (unsafe { libc::getpid() }) as u32 == s.pid
}

extern "C" fn at_exit(_: *mut c_void) {
    end_process();
}

/// The process is ending (`exit` after the handlers, or `_exit`): writes the rest of the
/// stream and `End{Exit}`, waiting a bounded time; afterwards hooks pass through.
pub fn end_process() {
    let Some(s) = current() else { return };
    // Checked first: a `vfork` child must not touch the parent's thread state.
    if !in_own_process(s) {
        return;
    }
    // Busy already when a signal handler interrupted a hook: go on all the same (the sender
    // waits only a bounded time for the interrupted thread's buffer).
    let _guard = Guard::enter_any_state();
    if STATE
        .compare_exchange(ACTIVE, EXITING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return;
    }
    s.control
        .request(&s.channel.bell, EndReason::Exit, END_TIMEOUT, END_STALL);
    STATE.store(FINISHED, Ordering::Release);
}

extern "C" {
    fn __cxa_atexit(
        func: extern "C" fn(*mut c_void),
        arg: *mut c_void,
        dso_handle: *mut c_void,
    ) -> c_int;
}
