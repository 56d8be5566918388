//! The machine sampler of `leakscope run`: every interval, the host's memory
//! (`/proc/meminfo`), the memory of the cgroup the run lives in (v2, or v1's memory
//! controller) and each NVIDIA GPU's memory (NVML, when there is one), as a
//! [`MachineReading`]. A thread takes the readings until the run ends, appends each as a
//! frame to `DIR/machine.lks` (a wire stream, like the stream files) and hands it to the live
//! state.
//!
//! Sampling never fails the run: a figure that cannot be read is left out (logged once at
//! debug level), a recording file that cannot be written is a warning.
//!
//! The sampler thread never writes to stderr itself: its debug notes are collected and
//! logged once, by the thread that stops it.

use crate::ingest::recording::MACHINE_FILE;
use crate::run::native::{monotonic_now, Nvml};
use crossbeam_channel::{bounded, RecvTimeoutError, Sender};
use leakscope_protocol::wire::{encode_frame, encode_header};
use leakscope_protocol::{CgroupMemory, GpuMemory, MachineReading, Record};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// The host's memory figures.
pub const MEMINFO: &str = "/proc/meminfo";
/// The cgroups the collector (and so the command, which inherits them) belongs to.
pub const SELF_CGROUP: &str = "/proc/self/cgroup";
/// Where the cgroup file systems are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Shortest time between readings (a zero interval would spin).
const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// cgroup v1 reports "no limit" as a huge page-rounded number; anything this big is none.
const V1_NO_LIMIT: u64 = 1 << 62;

/// Why a figure could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("{path} names no cgroup with memory figures")]
    NoCgroup { path: PathBuf },
    #[error("NVML: {0}")]
    Nvml(String),
}

/// Why the sampler could not start.
#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    #[error("cannot start the machine memory sampler: {0}; machine memory is not recorded")]
    Thread(io::Error),
}

/// `MemTotal` and `MemAvailable`, bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meminfo {
    pub total: u64,
    pub available: u64,
}

/// Parses `/proc/meminfo` text (`Key:   value kB` lines).
pub fn parse_meminfo(text: &str) -> Result<Meminfo, String> {
    let field = |key: &str| -> Result<u64, String> {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .ok_or_else(|| format!("no {key} line"))?;
        let mut words = line.split_whitespace();
        let value: u64 = words
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{key} is not a number: {:?}", line.trim()))?;
        match words.next() {
            None => Ok(value),
            Some("kB") => Ok(value.saturating_mul(1024)),
            Some(unit) => Err(format!("{key} has an unknown unit {unit:?}")),
        }
    };
    Ok(Meminfo {
        total: field("MemTotal")?,
        available: field("MemAvailable")?,
    })
}

/// Reads the meminfo file at `path` (normally [`MEMINFO`]).
pub fn read_meminfo(path: &Path) -> Result<Meminfo, ReadError> {
    let text = read_text(path)?;
    parse_meminfo(&text).map_err(|detail| ReadError::Parse {
        path: path.to_owned(),
        detail,
    })
}

/// Where a process sits in the cgroup hierarchies (`/proc/self/cgroup`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupPaths {
    /// The unified (v2) hierarchy's path, from the `0::/path` line.
    pub v2: Option<String>,
    /// The v1 memory controller's path, from the `N:...memory...:/path` line.
    pub v1_memory: Option<String>,
}

/// Parses `/proc/self/cgroup` text.
pub fn parse_self_cgroup(text: &str) -> CgroupPaths {
    let mut paths = CgroupPaths::default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            paths.v2 = Some(path.to_owned());
        } else if controllers.split(',').any(|c| c == "memory") {
            paths.v1_memory = Some(path.to_owned());
        }
    }
    paths
}

/// Parses a byte count (`memory.current`, `memory.usage_in_bytes`).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    t.parse()
        .map_err(|_| format!("{t:?} is not a number of bytes"))
}

/// Parses cgroup v2 `memory.max`: `max` is no limit.
pub fn parse_v2_limit(text: &str) -> Result<Option<u64>, String> {
    match text.trim() {
        "max" => Ok(None),
        t => parse_bytes(t).map(Some),
    }
}

/// Parses cgroup v1 `memory.limit_in_bytes`: 2^62 or more is no limit.
pub fn parse_v1_limit(text: &str) -> Result<Option<u64>, String> {
    parse_bytes(text).map(|v| (v < V1_NO_LIMIT).then_some(v))
}

/// The memory of the cgroup that `self_cgroup` (normally [`SELF_CGROUP`]) names, under the
/// cgroup mount `root` (normally [`CGROUP_ROOT`]): v2 first, then v1's memory controller.
pub fn read_cgroup(self_cgroup: &Path, root: &Path) -> Result<CgroupMemory, ReadError> {
    let paths = parse_self_cgroup(&read_text(self_cgroup)?);
    let mut first_err = None;
    if let Some(p) = &paths.v2 {
        match cgroup_dir(root, p).map(|d| read_v2(&d)) {
            Some(Ok(m)) => return Ok(m),
            Some(Err(e)) => first_err = Some(e),
            None => {}
        }
    }
    if let Some(p) = &paths.v1_memory {
        let base = root.join("memory");
        // Inside a container without a cgroup namespace the path is the host's, and the
        // container's own cgroup is mounted at the controller's root.
        let dirs = [cgroup_dir(&base, p), Some(base.clone())];
        for dir in dirs.into_iter().flatten() {
            match read_v1(&dir) {
                Ok(m) => return Ok(m),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
    }
    Err(first_err.unwrap_or_else(|| ReadError::NoCgroup {
        path: self_cgroup.to_owned(),
    }))
}

/// `root/path`, or `None` when `path` leaves `root` (`..`, from another cgroup namespace).
fn cgroup_dir(root: &Path, path: &str) -> Option<PathBuf> {
    let rel = Path::new(path.trim_start_matches('/'));
    rel.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        .then(|| root.join(rel))
}

fn read_v2(dir: &Path) -> Result<CgroupMemory, ReadError> {
    let usage = read_parsed(&dir.join("memory.current"), parse_bytes)?;
    let limit = read_parsed(&dir.join("memory.max"), parse_v2_limit)?;
    Ok(CgroupMemory { limit, usage })
}

fn read_v1(dir: &Path) -> Result<CgroupMemory, ReadError> {
    let usage = read_parsed(&dir.join("memory.usage_in_bytes"), parse_bytes)?;
    let limit = read_parsed(&dir.join("memory.limit_in_bytes"), parse_v1_limit)?;
    Ok(CgroupMemory { limit, usage })
}

/// Every GPU's memory through `nvml` (none without it). Devices NVML will not describe are
/// left out, with their problem in `problems`.
pub fn read_gpus(nvml: Option<&Nvml>, problems: &mut Vec<ReadError>) -> Vec<GpuMemory> {
    let Some(nvml) = nvml else {
        return Vec::new();
    };
    match nvml.devices() {
        Ok(devices) => devices
            .into_iter()
            .filter_map(|d| d.map_err(|e| problems.push(ReadError::Nvml(e))).ok())
            .collect(),
        Err(e) => {
            problems.push(ReadError::Nvml(e));
            Vec::new()
        }
    }
}

fn read_text(path: &Path) -> Result<String, ReadError> {
    std::fs::read_to_string(path).map_err(|source| ReadError::Io {
        path: path.to_owned(),
        source,
    })
}

fn read_parsed<T>(path: &Path, parse: fn(&str) -> Result<T, String>) -> Result<T, ReadError> {
    parse(&read_text(path)?).map_err(|detail| ReadError::Parse {
        path: path.to_owned(),
        detail,
    })
}

/// Takes [`MachineReading`]s. Holds NVML, so it lives on the thread that uses it.
#[derive(Debug)]
pub struct MachineSampler {
    meminfo: PathBuf,
    self_cgroup: PathBuf,
    cgroup_root: PathBuf,
    nvml: Option<Nvml>,
    /// Which figures' problems were noted already (each is noted once).
    noted: [bool; 3],
    /// Debug notes not yet taken (see [`MachineSampler::take_notes`]).
    notes: Vec<String>,
}

impl MachineSampler {
    /// A sampler of this machine: the system's files, and NVML when it loads.
    pub fn new() -> Self {
        let mut s = MachineSampler::with_files(
            Path::new(MEMINFO),
            Path::new(SELF_CGROUP),
            Path::new(CGROUP_ROOT),
        );
        match Nvml::open() {
            Ok(n) => s.nvml = Some(n),
            Err(why) => s.notes.push(format!("no GPU memory readings: {why}")),
        }
        s
    }

    /// A sampler of the given files, without GPUs (for tests).
    pub fn with_files(meminfo: &Path, self_cgroup: &Path, cgroup_root: &Path) -> Self {
        MachineSampler {
            meminfo: meminfo.to_owned(),
            self_cgroup: self_cgroup.to_owned(),
            cgroup_root: cgroup_root.to_owned(),
            nvml: None,
            noted: [false; 3],
            notes: Vec::new(),
        }
    }

    /// Takes a reading now. Figures that cannot be read are left out (0, `None`, empty).
    pub fn read(&mut self) -> MachineReading {
        let ts = monotonic_now();
        let (mem_total, mem_available) = match read_meminfo(&self.meminfo) {
            Ok(m) => (m.total, m.available),
            Err(e) => {
                self.log_once(0, &e);
                (0, 0)
            }
        };
        let cgroup = match read_cgroup(&self.self_cgroup, &self.cgroup_root) {
            Ok(c) => Some(c),
            Err(e) => {
                self.log_once(1, &e);
                None
            }
        };
        let mut problems = Vec::new();
        let gpus = read_gpus(self.nvml.as_ref(), &mut problems);
        if let Some(e) = problems.first() {
            self.log_once(2, e);
        }
        MachineReading {
            ts,
            mem_total,
            mem_available,
            cgroup,
            gpus,
        }
    }

    /// The debug notes gathered since the last call: why figures are left out (each
    /// problem once per sampler), and why there are no GPU readings. The caller logs them
    /// (with [`log_notes`]) where logging cannot block.
    pub fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    fn log_once(&mut self, which: usize, e: &ReadError) {
        if !std::mem::replace(&mut self.noted[which], true) {
            self.notes
                .push(format!("machine memory: {e} (left out of the readings)"));
        }
    }
}

impl Default for MachineSampler {
    fn default() -> Self {
        MachineSampler::new()
    }
}

/// Appends readings to `machine.lks`; after a write error it records nothing more.
struct MachineFile {
    path: PathBuf,
    file: Option<File>,
    buf: Vec<u8>,
    warnings: Vec<String>,
}

impl MachineFile {
    /// Creates the file (it must not exist) and writes the stream header.
    fn create(path: PathBuf) -> Self {
        let mut f = MachineFile {
            path,
            file: None,
            buf: Vec::new(),
            warnings: Vec::new(),
        };
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&f.path);
        match opened {
            Ok(file) => {
                f.file = Some(file);
                encode_header(&mut f.buf);
                f.flush_buf();
            }
            Err(e) => f.fail(&e.to_string()),
        }
        f
    }

    fn append(&mut self, reading: &MachineReading) {
        if self.file.is_none() {
            return;
        }
        self.buf.clear();
        match encode_frame(&[Record::Machine(reading.clone())], &mut self.buf) {
            Ok(()) => self.flush_buf(),
            Err(e) => self.fail(&e.to_string()),
        }
    }

    fn flush_buf(&mut self) {
        let Some(file) = &mut self.file else { return };
        let res = file.write_all(&self.buf).and_then(|()| file.flush());
        self.buf.clear();
        if let Err(e) = res {
            self.fail(&e.to_string());
        }
    }

    fn fail(&mut self, why: &str) {
        self.file = None;
        self.warnings.push(format!(
            "cannot write {}: {why}; the machine memory readings after this are not recorded",
            self.path.display()
        ));
    }
}

/// Logs `notes` (from [`MachineSampler::take_notes`]) at debug level.
pub fn log_notes(notes: &[String]) {
    for n in notes {
        tracing::debug!("{n}");
    }
}

/// What the sampler thread hands back: warnings for the user, debug notes for the log.
type Finished = (Vec<String>, Vec<String>);

/// The sampler thread of a run; see [`start`]. Dropping it stops it too.
#[derive(Debug)]
pub struct SamplerThread {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<Finished>>,
}

/// Starts the thread that takes a reading now and then every `interval` until stopped,
/// appends each to `dir/machine.lks` and hands it to `sink`.
pub fn start(
    dir: &Path,
    interval: Duration,
    mut sink: impl FnMut(MachineReading) + Send + 'static,
) -> Result<SamplerThread, SamplerError> {
    let path = dir.join(MACHINE_FILE);
    let interval = interval.max(MIN_INTERVAL);
    let (stop, stopped) = bounded::<()>(1);
    let thread = thread::Builder::new()
        .name("leakscope-machine".into())
        .spawn(move || {
            let mut file = MachineFile::create(path);
            let mut sampler = MachineSampler::new();
            let mut take = |sampler: &mut MachineSampler| {
                let reading = sampler.read();
                file.append(&reading);
                sink(reading);
            };
            loop {
                take(&mut sampler);
                match stopped.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            // The last reading, as the run ends.
            take(&mut sampler);
            (file.warnings, sampler.take_notes())
        })
        .map_err(SamplerError::Thread)?;
    Ok(SamplerThread {
        stop: Some(stop),
        thread: Some(thread),
    })
}

impl SamplerThread {
    /// Stops the thread after one last reading and waits for it; logs its debug notes
    /// (on the calling thread) and returns its warnings.
    pub fn stop(mut self) -> Vec<String> {
        self.halt()
    }

    fn halt(&mut self) -> Vec<String> {
        // Dropping the sender wakes the thread at once.
        drop(self.stop.take());
        match self.thread.take().map(JoinHandle::join) {
            None => Vec::new(),
            Some(Ok((warnings, notes))) => {
                log_notes(&notes);
                warnings
            }
            Some(Err(_)) => vec!["the machine memory sampler failed".to_owned()],
        }
    }
}

impl Drop for SamplerThread {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leakscope_protocol::wire::Decoder;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    const MEMINFO_SAMPLE: &str = "\
MemTotal:       16316412 kB
MemFree:         1234567 kB
MemAvailable:    8000000 kB
Buffers:          123456 kB
HugePages_Total:       0
";

    #[test]
    fn meminfo_is_parsed_in_bytes() {
        let m = parse_meminfo(MEMINFO_SAMPLE).unwrap();
        assert_eq!(m.total, 16_316_412 * 1024);
        assert_eq!(m.available, 8_000_000 * 1024);
        let e = parse_meminfo("MemTotal: 5 kB\n").unwrap_err();
        assert!(e.contains("MemAvailable"), "{e}");
        let e = parse_meminfo("MemTotal: lots kB\nMemAvailable: 1 kB\n").unwrap_err();
        assert!(e.contains("MemTotal"), "{e}");
        // "MemTotalX" is not "MemTotal".
        assert!(parse_meminfo("MemTotalX: 1 kB\nMemAvailable: 1 kB\n").is_err());
    }

    #[test]
    fn self_cgroup_v2_v1_and_hybrid() {
        assert_eq!(
            parse_self_cgroup("0::/user.slice/session-1.scope\n"),
            CgroupPaths {
                v2: Some("/user.slice/session-1.scope".into()),
                v1_memory: None,
            }
        );
        let v1 = "12:pids:/\n4:memory:/process_api/47bb\n3:cpu,cpuacct:/x\n0::/\n";
        assert_eq!(
            parse_self_cgroup(v1),
            CgroupPaths {
                v2: Some("/".into()),
                v1_memory: Some("/process_api/47bb".into()),
            }
        );
        assert_eq!(
            parse_self_cgroup("5:blkio,memory:/a:b\n")
                .v1_memory
                .as_deref(),
            Some("/a:b")
        );
        assert_eq!(parse_self_cgroup("garbage\n"), CgroupPaths::default());
    }

    #[test]
    fn limits_and_no_limits() {
        assert_eq!(parse_v2_limit("max\n"), Ok(None));
        assert_eq!(parse_v2_limit("1073741824\n"), Ok(Some(1 << 30)));
        assert!(parse_v2_limit("lots").is_err());
        assert_eq!(parse_v1_limit("9223372036854771712\n"), Ok(None));
        assert_eq!(parse_v1_limit("4611686018427387904"), Ok(None));
        assert_eq!(parse_v1_limit("536870912\n"), Ok(Some(512 << 20)));
        assert_eq!(parse_bytes(" 42\n"), Ok(42));
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn cgroup_v2_files() {
        let t = tempfile::tempdir().unwrap();
        let own = t.path().join("self_cgroup");
        let root = t.path().join("cg");
        write(&own, "0::/app.slice/run\n");
        write(&root.join("app.slice/run/memory.current"), "1048576\n");
        write(&root.join("app.slice/run/memory.max"), "max\n");
        let m = read_cgroup(&own, &root).unwrap();
        assert_eq!(
            m,
            CgroupMemory {
                limit: None,
                usage: 1 << 20
            }
        );
        write(&root.join("app.slice/run/memory.max"), "2097152\n");
        assert_eq!(read_cgroup(&own, &root).unwrap().limit, Some(2 << 20));
    }

    #[test]
    fn cgroup_v1_files_and_fallbacks() {
        let t = tempfile::tempdir().unwrap();
        let own = t.path().join("self_cgroup");
        let root = t.path().join("cg");
        // Hybrid: the unified hierarchy has no memory figures, v1's memory controller has.
        write(&own, "4:memory:/docker/abc\n0::/\n");
        write(
            &root.join("memory/docker/abc/memory.usage_in_bytes"),
            "300\n",
        );
        write(
            &root.join("memory/docker/abc/memory.limit_in_bytes"),
            "9223372036854771712\n",
        );
        assert_eq!(
            read_cgroup(&own, &root).unwrap(),
            CgroupMemory {
                limit: None,
                usage: 300
            }
        );
        // The host's path is not visible: the controller's root is the container's cgroup.
        write(&own, "4:memory:/elsewhere\n");
        write(&root.join("memory/memory.usage_in_bytes"), "100\n");
        write(&root.join("memory/memory.limit_in_bytes"), "4096\n");
        assert_eq!(
            read_cgroup(&own, &root).unwrap(),
            CgroupMemory {
                limit: Some(4096),
                usage: 100
            }
        );
        // Nothing readable: an error, which the sampler turns into `None`.
        write(&own, "1:cpu:/\n");
        assert!(matches!(
            read_cgroup(&own, &root),
            Err(ReadError::NoCgroup { .. })
        ));
        assert!(read_cgroup(&t.path().join("absent"), &root).is_err());
        // A path that leaves the mount is not followed.
        assert_eq!(cgroup_dir(&root, "/../x"), None);
    }

    #[test]
    fn unreadable_files_give_missing_figures() {
        let t = tempfile::tempdir().unwrap();
        let meminfo = t.path().join("meminfo");
        write(&meminfo, MEMINFO_SAMPLE);
        let mut s = MachineSampler::with_files(&meminfo, &t.path().join("none"), t.path());
        let r = s.read();
        assert_eq!(r.mem_total, 16_316_412 * 1024);
        assert_eq!(r.cgroup, None);
        assert!(r.gpus.is_empty());
        let mut s = MachineSampler::with_files(&t.path().join("none"), &meminfo, t.path());
        let r2 = s.read();
        assert_eq!((r2.mem_total, r2.mem_available), (0, 0));
        assert!(r2.ts > r.ts);
        assert!(read_gpus(None, &mut Vec::new()).is_empty());
        // Each problem is noted once, not once per reading.
        s.read();
        let notes = s.take_notes();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes.iter().any(|n| n.contains("none")), "{notes:?}");
        assert!(s.take_notes().is_empty());
    }

    #[test]
    fn this_machine_reads() {
        let r = MachineSampler::new().read();
        assert!(r.mem_total > 0);
        assert!(r.mem_available <= r.mem_total);
        for g in &r.gpus {
            assert!(g.used <= g.total, "{g:?}");
        }
    }

    #[test]
    fn thread_records_hands_over_and_stops_promptly() {
        let t = tempfile::tempdir().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let sampler = start(t.path(), Duration::from_secs(3600), move |r| {
            sink.lock().unwrap().push(r)
        })
        .unwrap();
        // The first reading comes at once.
        let waited = Instant::now();
        while got.lock().unwrap().is_empty() && waited.elapsed() < Duration::from_secs(10) {
            thread::sleep(Duration::from_millis(5));
        }
        let stopping = Instant::now();
        assert!(sampler.stop().is_empty());
        assert!(stopping.elapsed() < Duration::from_secs(10));
        let got = got.lock().unwrap().clone();
        assert_eq!(got.len(), 2, "a first and a last reading");
        assert!(got[1].ts > got[0].ts);
        let bytes = std::fs::read(t.path().join(MACHINE_FILE)).unwrap();
        let mut d = Decoder::new(&bytes[..]).unwrap();
        let mut recs = Vec::new();
        while d.next_frame(&mut recs).unwrap() {}
        let recorded: Vec<MachineReading> = recs
            .into_iter()
            .filter_map(|r| match r {
                Record::Machine(m) => Some(m),
                _ => None,
            })
            .collect();
        assert_eq!(recorded, got);
    }

    #[test]
    fn an_existing_file_is_a_warning_not_a_failure() {
        let t = tempfile::tempdir().unwrap();
        write(&t.path().join(MACHINE_FILE), "taken");
        let count = Arc::new(Mutex::new(0));
        let c = count.clone();
        let sampler = start(t.path(), Duration::from_secs(3600), move |_| {
            *c.lock().unwrap() += 1
        })
        .unwrap();
        let w = sampler.stop();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains(MACHINE_FILE), "{w:?}");
        assert_eq!(*count.lock().unwrap(), 2);
    }
}
