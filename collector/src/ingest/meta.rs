//! The recording's metadata file (`DIR/meta.json`): what was run and how it ended. Written
//! when a recording starts and rewritten when the command exits. It also names the
//! collector process writing the recording, so that a reader can tell a live recording (its
//! collector still running, its streams still growing) from one that was cut off
//! ([`RecordingMeta::is_live`]).

use serde::{Deserialize, Serialize};

/// Version of the metadata layout this build writes.
pub const META_VERSION: u32 = 1;

/// Contents of `meta.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingMeta {
    /// Version of the metadata layout; this build writes 1.
    pub meta_version: u32,
    /// Version of the leakscope that recorded.
    pub leakscope_version: String,
    /// The command as given to `leakscope run`.
    pub command: Vec<String>,
    /// When the recording started, nanoseconds since the Unix epoch.
    pub started_unix_ns: u64,
    /// The command's exit code, or 128 + signal number; `None` while it runs, or when
    /// the collector died before the command ended.
    pub exit_status: Option<i32>,
    /// The signal that ended the command, if one did.
    pub signal: Option<i32>,
    /// Streams (connection numbers, as in `streams/NNNNNN.lks`) still connected when the
    /// collector stopped listening: their processes were still running.
    #[serde(default)]
    pub open_streams: Vec<u32>,
    /// Pid of the collector (`leakscope run`) writing the recording; `None` in recordings
    /// made before leakscope wrote it.
    #[serde(default)]
    pub collector_pid: Option<u32>,
    /// The collector's start time (field 22 of `/proc/PID/stat`, clock ticks since boot):
    /// with the pid, names the collector even after its pid could have been reused.
    #[serde(default)]
    pub collector_start_time: Option<u64>,
    /// The run's interval (`--interval`) in milliseconds: the tick of the series the aging
    /// analysis tests; `None` in recordings made before leakscope wrote it (the default
    /// interval is assumed).
    #[serde(default)]
    pub interval_ms: Option<u64>,
}

impl RecordingMeta {
    /// The metadata of a recording of `command` starting now.
    pub fn starting(command: Vec<String>) -> Self {
        let started_unix_ns = now_unix_ns();
        RecordingMeta {
            meta_version: META_VERSION,
            leakscope_version: env!("CARGO_PKG_VERSION").to_owned(),
            command,
            started_unix_ns,
            exit_status: None,
            signal: None,
            open_streams: Vec::new(),
            collector_pid: None,
            collector_start_time: None,
            interval_ms: None,
        }
    }

    /// This metadata naming the calling process as the recording's collector.
    pub fn with_this_collector(self) -> Self {
        let pid = std::process::id();
        RecordingMeta {
            collector_pid: Some(pid),
            collector_start_time: process_start_time(pid),
            ..self
        }
    }

    /// Whether the recording is live: the command has not ended yet (no exit status) and
    /// the collector named here still runs (same pid, same start time). Metadata without a
    /// collector (older recordings) or whose collector is gone (killed, or its pid reused)
    /// is not live.
    pub fn is_live(&self) -> bool {
        if self.exit_status.is_some() {
            return false;
        }
        match (self.collector_pid, self.collector_start_time) {
            (Some(pid), Some(start)) => process_start_time(pid) == Some(start),
            _ => false,
        }
    }
}

/// The current time in nanoseconds since the Unix epoch (0 before it).
pub fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The start time of the running process `pid` (field 22 of `/proc/PID/stat`, clock ticks
/// since boot); `None` when there is no such process, it has exited (a zombie), or `/proc`
/// cannot be read.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Field 22 of a `/proc/PID/stat` line, `None` for a zombie or a line that does not parse.
/// The command name (field 2) is in parentheses and may hold spaces and parentheses
/// itself: fields are counted from its last `)`.
fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // Field 3, the state: a zombie or dead process no longer runs.
    let state = fields.next()?;
    if matches!(state, "Z" | "X" | "x") {
        return None;
    }
    // Fields 4..=21 come before the start time.
    fields.nth(22 - 4)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> RecordingMeta {
        RecordingMeta::starting(vec!["app".into()]).with_this_collector()
    }

    #[test]
    fn our_own_process_is_a_live_collector() {
        let meta = running();
        assert_eq!(meta.collector_pid, Some(std::process::id()));
        assert!(meta.collector_start_time.is_some());
        assert!(meta.is_live());
    }

    #[test]
    fn a_finished_recording_is_not_live() {
        let mut meta = running();
        meta.exit_status = Some(0);
        assert!(!meta.is_live());
    }

    #[test]
    fn a_dead_or_reused_collector_is_not_live() {
        // A child that has exited and been reaped: its pid names no process (or, reused,
        // another process with another start time).
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("cannot start `true`");
        let pid = child.id();
        child.wait().expect("waitpid");
        let mut meta = running();
        meta.collector_pid = Some(pid);
        assert!(!meta.is_live());
        // Our pid with another start time: a process that reused the collector's pid.
        let mut meta = running();
        meta.collector_start_time = meta.collector_start_time.map(|t| t + 1);
        assert!(!meta.is_live());
    }

    #[test]
    fn metadata_without_a_collector_is_not_live_and_still_reads() {
        assert!(!RecordingMeta::starting(vec!["app".into()]).is_live());
        let old = r#"{"meta_version":1,"leakscope_version":"0.1.0","command":["app"],
            "started_unix_ns":5,"exit_status":null,"signal":null}"#;
        let meta: RecordingMeta = serde_json::from_str(old).expect("old metadata reads");
        assert_eq!(meta.collector_pid, None);
        assert!(!meta.is_live());
        let mut pid_only = running();
        pid_only.collector_start_time = None;
        assert!(!pid_only.is_live());
    }

    #[test]
    fn start_time_is_field_22_counted_after_the_name() {
        let line = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 \
                    10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0\n";
        assert_eq!(parse_start_time(line), Some(98765));
        let zombie = line.replacen(") S ", ") Z ", 1);
        assert_eq!(parse_start_time(&zombie), None);
        assert_eq!(parse_start_time("garbage"), None);
        assert_eq!(parse_start_time("1 (x) S 1 2"), None);
    }
}
