//! Live ingestion: one reader thread per connection tees the raw bytes into the
//! connection's stream file and decodes frames; every frame goes, as (connection, records),
//! over one bounded channel to the single state thread, which applies them in arrival order
//! (so the state needs no locks). A full channel makes readers wait, which in turn makes the
//! shim wait or drop and count.
//!
//! With checkpoints on, each frame goes with the stream offset just after it, and the state
//! thread writes a checkpoint of its state (with the offset of each stream's last frame
//! applied) every so often, between two messages (`ingest::checkpoint`).

use crate::error::RunError;
use crate::ingest::checkpoint::Checkpointer;
use crate::ingest::decode::decode_stream_offsets;
use crate::ingest::recording::Recording;
use crate::ingest::tee::Tee;
use crate::state::{ConnClose, ConnId, RunState, StateOptions};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use leakscope_protocol::{MachineReading, Record};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

/// Frames in flight between the readers and the state thread.
const CHANNEL_FRAMES: usize = 1024;

/// What readers tell the state thread.
#[derive(Debug)]
enum Msg {
    /// A frame's records and the stream offset just after the frame.
    Records(ConnId, Vec<Record>, u64),
    Closed(ConnId, ConnClose),
    Warning(String),
    Machine(MachineReading),
}

struct Conn {
    id: ConnId,
    /// A second handle on the socket, to stop a reader that is still connected.
    stream: UnixStream,
    stopped: Arc<AtomicBool>,
    reader: JoinHandle<()>,
}

/// See the module documentation.
pub struct Pipeline {
    tx: Sender<Msg>,
    /// Emptied record vectors, back from the state thread for the readers to refill: a
    /// frame's vector is large, and allocating one per frame costs page faults.
    spare: Receiver<Vec<Record>>,
    state: JoinHandle<RunState>,
    conns: Vec<Conn>,
    next: u32,
    open: Arc<AtomicUsize>,
}

/// What live ingestion produced.
#[derive(Debug)]
pub struct Ingested {
    pub state: RunState,
    /// Connections that were still open when ingestion stopped.
    pub still_open: Vec<ConnId>,
}

impl Pipeline {
    /// Starts the state thread.
    pub fn start(options: StateOptions) -> Result<Self, RunError> {
        Self::start_with(options, None)
    }

    /// Starts the state thread, which takes checkpoints with `checkpoints` (see
    /// `ingest::checkpoint`) when given.
    pub fn start_with(
        options: StateOptions,
        checkpoints: Option<Checkpointer>,
    ) -> Result<Self, RunError> {
        let (tx, rx) = bounded(CHANNEL_FRAMES);
        let (spare_tx, spare) = bounded(CHANNEL_FRAMES);
        let state = thread::Builder::new()
            .name("leakscope-state".into())
            .spawn(move || state_thread(rx, spare_tx, options, checkpoints))
            .map_err(RunError::Thread)?;
        Ok(Pipeline {
            tx,
            spare,
            state,
            conns: Vec::new(),
            next: 0,
            open: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Takes a new connection: creates its stream file in `recording` and starts its
    /// reader.
    pub fn add(&mut self, stream: UnixStream, recording: &Recording) -> Result<ConnId, RunError> {
        let id = ConnId(self.next);
        self.next += 1;
        let (file, path) = recording.create_stream(id)?;
        let handle = stream.try_clone().map_err(RunError::Thread)?;
        let stopped = Arc::new(AtomicBool::new(false));
        let (tx, open, stop) = (self.tx.clone(), self.open.clone(), stopped.clone());
        let spare = self.spare.clone();
        open.fetch_add(1, Ordering::SeqCst);
        let name = path.display().to_string();
        let reader = thread::Builder::new()
            .name(format!("leakscope-read-{id}"))
            .spawn(move || {
                read_connection(id, stream, file, &name, (&tx, &spare), &stop);
                open.fetch_sub(1, Ordering::SeqCst);
            });
        let reader = match reader {
            Ok(r) => r,
            Err(e) => {
                self.open.fetch_sub(1, Ordering::SeqCst);
                return Err(RunError::Thread(e));
            }
        };
        self.conns.push(Conn {
            id,
            stream: handle,
            stopped,
            reader,
        });
        Ok(id)
    }

    /// Hands machine readings to the state thread (for `run::machine`). Drop it before
    /// [`Pipeline::finish`], which waits for every sender.
    pub fn machine_sink(&self) -> impl FnMut(MachineReading) + Send + 'static {
        let tx = self.tx.clone();
        move |reading| {
            let _ = tx.send(Msg::Machine(reading));
        }
    }

    /// Connections whose reader has not finished.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Stops every reader still connected (their processes are reported as open), waits
    /// for all of them and for the state thread, and returns the finished state.
    pub fn finish(self) -> Ingested {
        let mut still_open = Vec::new();
        for c in &self.conns {
            if !c.reader.is_finished() {
                c.stopped.store(true, Ordering::SeqCst);
                let _ = c.stream.shutdown(Shutdown::Read);
                still_open.push(c.id);
            }
        }
        for c in self.conns {
            if c.reader.join().is_err() {
                still_open.retain(|id| *id != c.id);
            }
        }
        drop(self.tx);
        let state = self.state.join().unwrap_or_else(|_| {
            let mut s = RunState::default();
            s.warnings
                .push("the state thread failed: nothing could be accounted".into());
            s
        });
        Ingested { state, still_open }
    }
}

fn read_connection(
    id: ConnId,
    stream: UnixStream,
    file: std::fs::File,
    name: &str,
    (tx, spare): (&Sender<Msg>, &Receiver<Vec<Record>>),
    stopped: &AtomicBool,
) {
    let tee = Tee::new(stream, file);
    let ended = decode_stream_offsets(tee, name, |records, offset| {
        let full = std::mem::replace(records, spare.try_recv().unwrap_or_default());
        let _ = tx.send(Msg::Records(id, full, offset));
    });
    let mut tee = ended.source;
    let close = match ended.close {
        // Cut mid-frame by our own stop: the process is still running.
        _ if stopped.load(Ordering::SeqCst) => ConnClose::StillOpen,
        ConnClose::Damaged(m) => {
            // Undecodable, but every byte still goes to the recording.
            let _ = std::io::copy(&mut tee, &mut std::io::sink());
            ConnClose::Damaged(m)
        }
        other => other,
    };
    if let Some(e) = tee.take_error() {
        let _ = tx.send(Msg::Warning(format!(
            "{name}: recording stopped after {} bytes: {e}; the report is complete, the recording is not",
            tee.written()
        )));
    }
    let _ = tx.send(Msg::Closed(id, close));
}

fn state_thread(
    rx: Receiver<Msg>,
    spare: Sender<Vec<Record>>,
    options: StateOptions,
    mut checkpoints: Option<Checkpointer>,
) -> RunState {
    let mut state = RunState::new(options);
    // What a checkpoint needs: where each stream's applied frames end, which ended.
    let mut offsets = BTreeMap::new();
    let mut closed = BTreeSet::new();
    loop {
        let msg = match &checkpoints {
            Some(c) => match rx.recv_deadline(c.deadline()) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            },
            None => match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => break,
            },
        };
        match msg {
            Some(Msg::Records(conn, mut records, offset)) => {
                state.apply_all(conn, records.drain(..));
                offsets.insert(conn, offset);
                let _ = spare.try_send(records);
            }
            Some(Msg::Closed(conn, how)) => {
                state.end_stream(conn, how);
                closed.insert(conn);
            }
            Some(Msg::Warning(w)) => state.warnings.push(w),
            Some(Msg::Machine(m)) => state.apply_machine(m),
            None => {}
        }
        if let Some(c) = &mut checkpoints {
            if let Some(w) = c.tick(&state, &offsets, &closed) {
                state.warnings.push(w);
            }
        }
    }
    state.finish();
    state
}
