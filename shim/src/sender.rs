//! The sender thread, one per stream (session start already wrote the stream header and
//! `Hello` with [`greet`]): announces the modules, then drains full batches, steals idle threads' pending events every few milliseconds, converts raw
//! events to records, announces modules before the stacks that need them, takes the heap
//! readings (`heapstate.rs`), reports drops,
//! and writes frames to the collector. On an end request (exec or exit) it steals every
//! buffer and writes `Dropped` and `End`. Between turns it sleeps on the channel's doorbell. If the collector goes away it disables the
//! session and from then on only discards, so no hooking thread ever waits on it.

use crate::convert::Converter;
use crate::heapstate;
use crate::record::raw::{Batch, Loss};
use crate::record::{clock, thread};
use crate::session::{self, Session};
use crate::side;
use crate::timebase::Timebase;
use crate::transport::{Conn, TransportError};
use crate::unwind;
use leakscope_protocol::wire::{encode_frame, encode_header};
use leakscope_protocol::{
    Dropped, End, EndReason, Hello, Pid, Record, Timestamp, BUILD_FINGERPRINT,
};
use std::ffi::c_void;
use std::io;
use std::time::{Duration, Instant};

/// How often idle threads' buffers are stolen and drops reported.
const TICK: Duration = Duration::from_millis(10);
/// The longest sleep of a sender that has lost the collector (it is woken by the doorbell).
const IDLE: Duration = Duration::from_secs(1);
/// How long the final flush waits for each buffer's lock.
const FINAL_LOCK_WAIT: Duration = Duration::from_millis(2);
/// Thread name (the kernel allows 15 characters).
const THREAD_NAME: &std::ffi::CStr = c"leakscope-send";

/// Why the sender thread could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the sender thread: {0}")]
pub struct SpawnError(io::Error);

struct Start {
    s: &'static Session,
    conn: Conn,
}

/// Starts the sender thread of session `s` on connection `conn`, with every signal blocked
/// (the program's signal handlers never run on it).
pub fn spawn(s: &'static Session, conn: Conn) -> Result<(), SpawnError> {
    let arg = Box::into_raw(Box::new(Start { s, conn }));
    // SAFETY: plain pthread calls on valid out-pointers; the new thread inherits the full
    // signal mask set around `pthread_create`, and owns `arg` if creation succeeds.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        libc::pthread_attr_init(&mut attr);
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        let mut tid: libc::pthread_t = std::mem::zeroed();
        let r = libc::pthread_create(&mut tid, &attr, entry, arg.cast());
        libc::pthread_attr_destroy(&mut attr);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if r != 0 {
            drop(Box::from_raw(arg));
            return Err(SpawnError(io::Error::from_raw_os_error(r)));
        }
    }
    Ok(())
}

extern "C" fn entry(arg: *mut c_void) -> *mut c_void {
    thread::mark_shim_thread();
    // SAFETY: `spawn` passed a `Box<Start>` and gave up ownership.
    let start = unsafe { Box::from_raw(arg.cast::<Start>()) };
    // SAFETY: naming the calling thread.
    unsafe { libc::pthread_setname_np(libc::pthread_self(), THREAD_NAME.as_ptr()) };
    let Start { s, conn } = *start;
    Sender::new(s, conn).run();
    std::ptr::null_mut()
}

struct Sender {
    s: &'static Session,
    conn: Conn,
    conv: Converter,
    modules: unwind::ModuleAnnouncer,
    records: Vec<Record>,
    out: Vec<u8>,
    reported: Loss,
    last_tick: Instant,
    heap: heapstate::Sampler,
}

impl Sender {
    fn new(s: &'static Session, conn: Conn) -> Sender {
        Sender {
            s,
            conn,
            conv: Converter::new(Timebase::new(clock::uses_tsc(), s.anchor_raw, s.start_ns)),
            modules: unwind::ModuleAnnouncer::new(),
            records: Vec::with_capacity(8192),
            out: Vec::with_capacity(1 << 20),
            reported: Loss::default(),
            last_tick: Instant::now(),
            heap: heapstate::Sampler::new(&s.config),
        }
    }

    fn run(mut self) {
        if let Err(e) = self.stream() {
            session::lost(self.s, &e);
            let s = self.s;
            drop(self);
            discard(s);
        }
    }

    /// The stream, until an exit request was served (Ok) or the collector is lost. Waits
    /// on the channel's doorbell, never inside crossbeam (see `channel.rs`).
    fn stream(&mut self) -> Result<(), TransportError> {
        self.hello()?;
        let (batches, requests) = (self.s.channel.receiver(), self.s.control.requests());
        loop {
            if let Ok(r) = requests.try_recv() {
                let done = self.end(r.reason);
                self.s.control.complete(r.seq);
                done?;
                if r.reason == EndReason::Exit {
                    return Ok(());
                }
            } else if let Ok(b) = batches.try_recv() {
                self.process(b)?;
            } else {
                let left = TICK.saturating_sub(self.last_tick.elapsed());
                wait_for_work(self.s, left);
            }
            self.s.control.note_progress();
            if self.last_tick.elapsed() >= TICK {
                self.tick()?;
            }
        }
    }

    /// The first modules (the header and `Hello` went out with [`greet`]).
    fn hello(&mut self) -> Result<(), TransportError> {
        self.modules.poll(&mut self.records);
        self.write()
    }

    /// Converts and writes one batch, then returns it to the pool.
    fn process(&mut self, b: Box<Batch>) -> Result<(), TransportError> {
        self.s.channel.note_progress();
        self.modules.poll(&mut self.records);
        let lost = self.conv.batch(&b, &mut self.records);
        if lost != Loss::default() {
            self.s.channel.drops.add(lost);
        }
        self.s.channel.recycle(b);
        self.write()
    }

    fn tick(&mut self) -> Result<(), TransportError> {
        self.last_tick = Instant::now();
        self.conv.timebase.tick();
        self.steal_all(false)?;
        self.modules.poll(&mut self.records);
        self.drain_side();
        self.heap.poll(&mut self.records, &mut self.conv.timebase);
        self.report_drops();
        self.write()
    }

    /// The side path's records (`side.rs`), after the events stolen before them.
    fn drain_side(&mut self) {
        let tb = &mut self.conv.timebase;
        side::drain(&mut self.records, |raw| tb.convert(raw));
    }

    /// Takes the pending events of every buffer (only those whose lock is free right now,
    /// unless `last`: then waiting briefly for each). The channel's batches that a buffer
    /// sent before the steal are processed first, so each thread's events stay in order and
    /// a stack's definition always precedes its uses.
    fn steal_all(&mut self, last: bool) -> Result<(), TransportError> {
        let s = self.s;
        let rx = s.channel.receiver();
        for slot in s.registry.slots() {
            if !last && !slot.is_dirty() {
                continue;
            }
            let locked = if last {
                slot.lock_within(FINAL_LOCK_WAIT)
            } else {
                slot.try_lock()
            };
            let Some(mut l) = locked else { continue };
            let stolen = l.take();
            let earlier = rx.len();
            drop(l);
            for _ in 0..earlier {
                // Counted by `len`, so there (a send still being written is waited for
                // inside `try_recv`).
                match rx.try_recv() {
                    Ok(b) => self.process(b)?,
                    Err(_) => break,
                }
            }
            match stolen {
                Some(b) if !b.is_empty() => self.process(b)?,
                Some(b) => s.channel.recycle(b),
                None => {}
            }
        }
        Ok(())
    }

    /// Ends the stream: everything pending, then `Dropped` (if anything was) and `End`.
    fn end(&mut self, reason: EndReason) -> Result<(), TransportError> {
        self.steal_all(true)?;
        while let Ok(b) = self.s.channel.receiver().try_recv() {
            self.process(b)?;
        }
        self.modules.poll(&mut self.records);
        self.drain_side();
        self.heap.last(&mut self.records, &mut self.conv.timebase);
        self.report_drops();
        let ts = Timestamp(self.conv.timebase.now_ns());
        self.records.push(Record::End(End { ts, reason }));
        self.write()
    }

    fn report_drops(&mut self) {
        let now = self.s.channel.drops.snapshot();
        if now != self.reported {
            self.reported = now;
            let ts = Timestamp(self.conv.timebase.now_ns());
            self.records.push(Record::Dropped(Dropped {
                ts,
                allocs: now.allocs,
                alloc_bytes: now.alloc_bytes,
                frees: now.frees,
            }));
        }
    }

    /// Encodes the pending records as one frame (several if one would be too large) and
    /// writes everything buffered.
    fn write(&mut self) -> Result<(), TransportError> {
        if !self.records.is_empty() {
            if encode_frame(&self.records, &mut self.out).is_err() {
                for chunk in self.records.chunks(256) {
                    // A frame of 256 records stays far below the limit; one that does not
                    // (a module with a huge path list) is left out.
                    let _ = encode_frame(chunk, &mut self.out);
                }
            }
            self.records.clear();
        }
        if self.out.is_empty() {
            return Ok(());
        }
        let r = self.conn.write_all(&self.out);
        self.out.clear();
        self.s.control.note_progress();
        r
    }
}

/// Writes the stream header and `Hello` of session `s` on the freshly connected `conn`, at
/// once and on the calling thread (session start, guard held): a process killed before its
/// sender thread ever ran still appears in the recording. One small blocking write.
pub fn greet(s: &Session, conn: &Conn) -> Result<(), TransportError> {
    let argv = std::fs::read("/proc/self/cmdline")
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default();
    let exe = std::fs::read_link("/proc/self/exe")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let hello = Record::Hello(Hello {
        pid: Pid(s.pid),
        // SAFETY: getppid has no preconditions.
        ppid: Pid(unsafe { libc::getppid() } as u32),
        origin: s.origin.clone(),
        exe,
        argv,
        start: Timestamp(s.start_ns),
        start_unix_ns: s.start_unix_ns,
        fingerprint: BUILD_FINGERPRINT,
    });
    let mut out = Vec::with_capacity(512);
    encode_header(&mut out);
    let at = out.len();
    if encode_frame(std::slice::from_ref(&hello), &mut out).is_err() {
        // An argv too large for one frame: announce the process without it.
        out.truncate(at);
        if let Record::Hello(mut h) = hello {
            h.argv.clear();
            let _ = encode_frame(&[Record::Hello(h)], &mut out);
        }
    }
    conn.write_all(&out)
}

/// After the collector is lost: empties the channel forever (nothing may wait on it) and
/// answers end requests at once, until the exit request.
fn discard(s: &'static Session) {
    let (batches, requests) = (s.channel.receiver(), s.control.requests());
    loop {
        if let Ok(r) = requests.try_recv() {
            s.control.complete(r.seq);
            if r.reason == EndReason::Exit {
                return;
            }
        } else if let Ok(b) = batches.try_recv() {
            s.channel.recycle(b);
        } else {
            wait_for_work(s, IDLE);
        }
    }
}

/// Sleeps on the channel's doorbell for at most `limit`, until a batch or an end request is
/// waiting.
fn wait_for_work(s: &Session, limit: Duration) {
    let (batches, requests) = (s.channel.receiver(), s.control.requests());
    s.channel
        .bell
        .wait(limit, || !batches.is_empty() || !requests.is_empty());
}
