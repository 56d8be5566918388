//! `leakscope run`: finds the shim, creates the recording, listens, starts the command with
//! the shim preloaded, takes every connection the command's processes open, waits for the
//! command and then (for a grace period) for streams still open, and reports.
//!
//! - [`shim`]: where the shim is.
//! - [`socket`]: the listening socket.
//! - [`signals`]: outliving Ctrl-C and forwarding SIGINT / SIGTERM to the command.
//! - [`child`]: starting the command, its exit code.
//! - [`pyhelper`]: the Python helper for PyTorch block tracking.
//! - [`machine`]: the machine memory sampler (host, cgroup, GPUs) and its thread.

pub mod child;
pub mod machine;
mod native;
pub mod pyhelper;
pub mod shim;
pub mod signals;
pub mod socket;

use crate::analysis::{analyze, AnalysisOptions};
use crate::error::RunError;
use crate::ingest::checkpoint::Checkpointer;
use crate::ingest::meta::RecordingMeta;
use crate::ingest::pipeline::{Ingested, Pipeline};
use crate::ingest::recording::Recording;
use crate::report::{render, Format};
use crate::state::StateOptions;
use socket::Listener;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// How often the run loop looks at the command while waiting for connections.
const POLL: Duration = Duration::from_millis(20);

/// Everything `leakscope run` needs to know.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The command and its arguments.
    pub command: Vec<OsString>,
    /// The recording directory; `None`: `./leakscope.<command>.<pid>`.
    pub out: Option<PathBuf>,
    pub format: Format,
    pub top: Option<usize>,
    /// The aging analysis's settings for the report at the end.
    pub aging: crate::analysis::aging::AgingOptions,
    /// How long to wait, after the command exits, for streams still open.
    pub grace: Duration,
    pub state: StateOptions,
    /// How often the state is saved in the recording (`ingest::checkpoint`), after which
    /// the stream bytes before the previous checkpoint are given back; `None`: never.
    pub checkpoint_every: Option<Duration>,
    /// How the shim is configured.
    pub shim: ShimSettings,
}

/// What `leakscope run` tells the shim (through the environment, `leakscope_protocol::env`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShimSettings {
    /// What the shim records (`LEAKSCOPE_TRACK`).
    pub track: Track,
    /// Time between readings of state without events of its own (`LEAKSCOPE_INTERVAL_MS`).
    pub interval: Duration,
    /// Python frames in stacks (`LEAKSCOPE_PYTHON`).
    pub python: bool,
    /// With Python frames, every native frame too, not only those inside the innermost
    /// eval loop (`LEAKSCOPE_PYTHON=full`).
    pub python_full_native: bool,
    /// Block-level tracking of PyTorch's CUDA caching allocator (`LEAKSCOPE_TORCH_BLOCKS`).
    pub torch_blocks: bool,
}

impl Default for ShimSettings {
    fn default() -> Self {
        ShimSettings {
            track: Track::All,
            interval: Duration::from_millis(leakscope_protocol::env::DEFAULT_INTERVAL_MS),
            python: true,
            python_full_native: false,
            torch_blocks: true,
        }
    }
}

impl ShimSettings {
    /// These settings with what leakscope's own environment switches off:
    /// `LEAKSCOPE_TORCH_BLOCKS=0` works like `--no-torch-blocks`.
    pub fn with_environment(self) -> ShimSettings {
        let off = std::env::var_os(leakscope_protocol::env::TORCH_BLOCKS).is_some_and(|v| v == "0");
        ShimSettings {
            torch_blocks: self.torch_blocks && !off,
            ..self
        }
    }

    /// The environment variables that carry these settings.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        use leakscope_protocol::env;
        let flag = |on: bool| if on { "1" } else { "0" }.to_string();
        vec![
            (env::TRACK, self.track.env_value().to_string()),
            (
                env::INTERVAL_MS,
                self.interval.as_millis().max(1).to_string(),
            ),
            (
                env::PYTHON,
                match (self.python, self.python_full_native) {
                    (false, _) => "0".to_string(),
                    (true, false) => "1".to_string(),
                    (true, true) => "full".to_string(),
                },
            ),
            (env::TORCH_BLOCKS, flag(self.torch_blocks)),
        ]
    }
}

/// What the shim records (`LEAKSCOPE_TRACK`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Track {
    /// Host (C heap, mappings) and GPU memory.
    #[default]
    All,
    /// CUDA memory only.
    Gpu,
}

impl Track {
    /// The value of `LEAKSCOPE_TRACK`.
    pub fn env_value(self) -> &'static str {
        match self {
            Track::All => "all",
            Track::Gpu => "gpu",
        }
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct RunOutcome {
    /// The command's exit code (128 + signal when a signal killed it).
    pub exit_code: i32,
    /// Where the recording is.
    pub dir: PathBuf,
    /// Things to tell the user besides the report (one line each).
    pub warnings: Vec<String>,
}

/// The default recording directory for `program`: `./leakscope.<basename>.<pid>`.
pub fn default_dir(program: &std::ffi::OsStr) -> PathBuf {
    let base = Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "command".into());
    PathBuf::from(format!("leakscope.{base}.{}", std::process::id()))
}

/// How often a run saves its state (`ingest::checkpoint`) unless told otherwise.
pub const DEFAULT_CHECKPOINT_EVERY: Duration = Duration::from_secs(600);

/// The checkpoint interval: [`DEFAULT_CHECKPOINT_EVERY`], or the milliseconds in
/// `LEAKSCOPE_CHECKPOINT_MS` (0: no checkpoints; for tests and for runs whose recording
/// must keep every byte).
pub fn checkpoint_every_from_env() -> Option<Duration> {
    match std::env::var("LEAKSCOPE_CHECKPOINT_MS") {
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(0) => None,
            Ok(ms) => Some(Duration::from_millis(ms)),
            Err(_) => {
                tracing::warn!(
                    "LEAKSCOPE_CHECKPOINT_MS={v} is not a number of milliseconds; ignored"
                );
                Some(DEFAULT_CHECKPOINT_EVERY)
            }
        },
        Err(_) => Some(DEFAULT_CHECKPOINT_EVERY),
    }
}

/// Runs the command under leakscope and writes the report to `report`.
pub fn run(opts: &RunOptions, report: &mut dyn Write) -> Result<RunOutcome, RunError> {
    let program = opts.command.first().ok_or(RunError::NoCommand)?;
    let shim = shim::locate()?;
    let dir = opts.out.clone().unwrap_or_else(|| default_dir(program));
    let recording = Recording::create(&dir)?;
    let command: Vec<String> = opts
        .command
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // Naming this collector lets `leakscope report` tell the recording is live meanwhile.
    let mut meta = RecordingMeta::starting(command).with_this_collector();
    let interval_ms = u64::try_from(opts.shim.interval.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    meta.interval_ms = Some(interval_ms);
    recording.write_meta(&meta)?;
    let listener = Listener::bind()?;
    let signals = signals::install().map_err(RunError::Signals)?;
    let mut state_options = opts.state;
    state_options.series.interval_ns = interval_ms.saturating_mul(1_000_000);
    let checkpoints = opts
        .checkpoint_every
        .map(|every| Checkpointer::new(&dir, every));
    let mut pipeline = Pipeline::start_with(state_options, checkpoints)?;
    let mut warnings = Vec::new();
    let settings = opts.shim.with_environment();
    let helper = python_helper(&settings, &dir, &mut warnings);
    let spawned = child::spawn(
        &opts.command,
        &shim,
        &listener.env_value(),
        &settings,
        helper.as_deref(),
    );
    let child = match spawned {
        Ok(c) => c,
        Err(e) => {
            if let Some(h) = &helper {
                pyhelper::remove(h);
            }
            drop(pipeline.finish());
            if recording.created_dir() {
                recording.remove_if_unused();
            }
            return Err(e);
        }
    };
    signals::set_child(child.id());
    let sampler = machine::start(&dir, settings.interval, pipeline.machine_sink())
        .map_err(|e| warnings.push(e.to_string()))
        .ok();
    let status = supervise(
        &listener,
        &mut pipeline,
        &recording,
        child,
        opts.grace,
        &mut warnings,
    );
    signals::clear_child();
    warnings.extend(
        sampler
            .map(machine::SamplerThread::stop)
            .unwrap_or_default(),
    );
    let status = status?;
    let Ingested { state, still_open } = pipeline.finish();
    let (exit_code, signal) = child::exit_code(status);
    meta.exit_status = Some(exit_code);
    meta.signal = signal;
    meta.open_streams = still_open.iter().map(|c| c.0).collect();
    if let Err(e) = recording.write_meta(&meta) {
        warnings.push(e.to_string());
    }
    let model = analyze(
        &state,
        &meta,
        &AnalysisOptions {
            top: opts.top,
            aging: opts.aging,
            ..AnalysisOptions::default()
        },
    );
    render(opts.format, &model, report).map_err(RunError::Report)?;
    drop(signals);
    warnings.extend(state.warnings);
    Ok(RunOutcome {
        exit_code,
        dir,
        warnings,
    })
}

/// Writes the PyTorch helper into the recording when block tracking is on; a failure is a
/// warning and leaves block tracking off.
fn python_helper(
    settings: &ShimSettings,
    dir: &Path,
    warnings: &mut Vec<String>,
) -> Option<PathBuf> {
    if !settings.torch_blocks {
        return None;
    }
    match pyhelper::write(dir) {
        Ok(h) => Some(h),
        Err(e) => {
            warnings.push(format!(
                "cannot write the PyTorch helper into {}: {e}; PyTorch blocks are not tracked",
                dir.display()
            ));
            None
        }
    }
}

/// Accepts connections until the command has exited and every stream is closed, or the
/// grace period after its exit is over.
fn supervise(
    listener: &Listener,
    pipeline: &mut Pipeline,
    recording: &Recording,
    mut child: Child,
    grace: Duration,
    warnings: &mut Vec<String>,
) -> Result<ExitStatus, RunError> {
    let mut exited: Option<(ExitStatus, Instant)> = None;
    loop {
        let pending = listener.wait(POLL);
        if pending {
            accept_all(listener, pipeline, recording, warnings);
        }
        if exited.is_none() {
            match child.try_wait() {
                Ok(Some(status)) => {
                    signals::clear_child();
                    exited = Some((status, Instant::now()));
                }
                Ok(None) => {}
                Err(e) => return Err(RunError::Wait(e)),
            }
        }
        if let Some((status, at)) = exited {
            let idle = pipeline.open_connections() == 0 && !listener.wait(Duration::ZERO);
            if idle || at.elapsed() >= grace {
                return Ok(status);
            }
        }
    }
}

fn accept_all(
    listener: &Listener,
    pipeline: &mut Pipeline,
    recording: &Recording,
    warnings: &mut Vec<String>,
) {
    loop {
        match listener.accept() {
            Ok(Some(stream)) => {
                if let Err(e) = pipeline.add(stream, recording) {
                    warnings.push(format!("a process's stream was refused: {e}"));
                }
            }
            Ok(None) => return,
            Err(e) => {
                // Out of descriptors, say: do not spin on a socket that stays readable.
                let w = format!("cannot accept a connection: {e}");
                if !warnings.contains(&w) {
                    warnings.push(w);
                }
                std::thread::sleep(POLL);
                return;
            }
        }
    }
}
