//! The shim's configuration, read once from the environment contract in
//! `leakscope_protocol::env` (socket, full-channel policy, stack depth, quiet mode, what to track, reading interval).

use leakscope_protocol::env as keys;
use std::ffi::{OsStr, OsString};
use std::time::Duration;

/// Deepest stack the shim captures, whatever `LEAKSCOPE_MAX_FRAMES` says: a batch's frame
/// area must hold at least a few stacks of this depth.
pub const MAX_FRAMES_LIMIT: usize = 1024;

/// Bounds of the reading interval: more often than every 10 ms would cost the target
/// time; less often than daily would leave a day-long run with one reading.
pub const MIN_INTERVAL_MS: u64 = 10;
pub const MAX_INTERVAL_MS: u64 = 86_400_000;

/// What a hooking thread does when the channel to the sender thread is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFull {
    /// Wait this long for room, then drop the batch and count it.
    Wait(Duration),
    /// Drop the batch and count it at once.
    Drop,
}

/// Everything the shim reads from the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `LEAKSCOPE_SOCKET`, when set and not empty.
    pub socket: Option<String>,
    pub on_full: OnFull,
    /// Frames captured per stack, in `1..=MAX_FRAMES_LIMIT`.
    pub max_frames: usize,
    /// `LEAKSCOPE_QUIET=1`: print nothing on stderr.
    pub quiet: bool,
    /// Record the C heap and mappings (`LEAKSCOPE_TRACK` is not `gpu`).
    pub host: bool,
    /// Time between readings of state that has no events (`LEAKSCOPE_INTERVAL_MS`).
    pub interval: Duration,
    /// Capture Python frames (`LEAKSCOPE_PYTHON` is not `0`).
    pub python: bool,
    /// With Python frames, keep walking native frames past the innermost eval loop
    /// (`LEAKSCOPE_PYTHON=full`): the C frames between outer eval loops, at the cost of
    /// unwinding the whole interpreter stack on every allocation.
    pub python_full_native: bool,
}

impl Config {
    /// Reads the process environment. Malformed values fall back to the defaults: the shim
    /// may print only one line, and that line is reserved for an unreachable collector.
    pub fn from_env() -> Config {
        Config::from_lookup(|k| std::env::var_os(k))
    }

    /// Builds a configuration from a variable lookup (`None`: unset).
    pub fn from_lookup(get: impl Fn(&str) -> Option<OsString>) -> Config {
        let raw = |k: &str| get(k);
        let socket = raw(keys::SOCKET);
        let (on_full, max_frames) = (raw(keys::ON_FULL), raw(keys::MAX_FRAMES));
        let (quiet, track) = (raw(keys::QUIET), raw(keys::TRACK));
        let (interval, python) = (raw(keys::INTERVAL_MS), raw(keys::PYTHON));
        Config {
            socket: socket
                .as_deref()
                .and_then(OsStr::to_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            on_full: text(on_full.as_deref())
                .and_then(parse_on_full)
                .unwrap_or(OnFull::Wait(Duration::from_millis(
                    keys::DEFAULT_FULL_WAIT_MS,
                ))),
            max_frames: text(max_frames.as_deref())
                .and_then(|s| s.parse::<usize>().ok())
                .map_or(keys::DEFAULT_MAX_FRAMES, |n| n.clamp(1, MAX_FRAMES_LIMIT)),
            quiet: text(quiet.as_deref()) == Some("1"),
            host: text(track.as_deref()) != Some("gpu"),
            interval: Duration::from_millis(
                text(interval.as_deref())
                    .and_then(|s| s.parse::<u64>().ok())
                    .filter(|&ms| ms > 0)
                    .map_or(keys::DEFAULT_INTERVAL_MS, |ms| {
                        ms.clamp(MIN_INTERVAL_MS, MAX_INTERVAL_MS)
                    }),
            ),
            python: text(python.as_deref()) != Some("0"),
            python_full_native: text(python.as_deref()) == Some("full"),
        }
    }
}

/// A variable's value as trimmed UTF-8, if it is set and valid.
fn text(v: Option<&OsStr>) -> Option<&str> {
    v.and_then(OsStr::to_str).map(str::trim)
}

/// Parses `wait:<ms>` or `drop`.
fn parse_on_full(s: &str) -> Option<OnFull> {
    if s == "drop" {
        return Some(OnFull::Drop);
    }
    let ms = s.strip_prefix("wait:")?.trim().parse::<u64>().ok()?;
    Some(OnFull::Wait(Duration::from_millis(ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(vars: &[(&str, &str)]) -> Config {
        Config::from_lookup(|k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| OsString::from(v))
        })
    }

    fn cfg(socket: Option<&str>, on_full: Option<&str>, frames: Option<&str>) -> Config {
        let mut v = Vec::new();
        v.extend(socket.map(|s| (keys::SOCKET, s)));
        v.extend(on_full.map(|s| (keys::ON_FULL, s)));
        v.extend(frames.map(|s| (keys::MAX_FRAMES, s)));
        with(&v)
    }

    #[test]
    fn defaults_when_unset() {
        let c = cfg(None, None, None);
        assert_eq!(c.socket, None);
        assert_eq!(c.on_full, OnFull::Wait(Duration::from_millis(1000)));
        assert_eq!(c.max_frames, 64);
        assert!(!c.quiet);
        assert_eq!(c.interval, Duration::from_secs(10));
        assert!(c.python);
    }

    #[test]
    fn interval_is_clamped_and_python_is_off_only_for_zero() {
        let i = |v: &str| with(&[(keys::INTERVAL_MS, v)]).interval;
        assert_eq!(i("500"), Duration::from_millis(500));
        assert_eq!(i("1"), Duration::from_millis(MIN_INTERVAL_MS));
        assert_eq!(i("0"), Duration::from_secs(10));
        assert_eq!(i("soon"), Duration::from_secs(10));
        assert_eq!(i("999999999999"), Duration::from_millis(MAX_INTERVAL_MS));
        assert!(!with(&[(keys::PYTHON, "0")]).python);
        assert!(with(&[(keys::PYTHON, "1")]).python);
        assert!(!with(&[(keys::PYTHON, "1")]).python_full_native);
        let full = with(&[(keys::PYTHON, "full")]);
        assert!(full.python && full.python_full_native);
    }

    #[test]
    fn on_full_forms() {
        assert_eq!(cfg(None, Some("drop"), None).on_full, OnFull::Drop);
        assert_eq!(
            cfg(None, Some("wait:25"), None).on_full,
            OnFull::Wait(Duration::from_millis(25))
        );
        assert_eq!(
            cfg(None, Some("wait:x"), None).on_full,
            OnFull::Wait(Duration::from_millis(1000))
        );
        assert_eq!(
            cfg(None, Some("sometimes"), None).on_full,
            OnFull::Wait(Duration::from_millis(1000))
        );
    }

    #[test]
    fn max_frames_is_clamped() {
        assert_eq!(cfg(None, None, Some("8")).max_frames, 8);
        assert_eq!(cfg(None, None, Some("0")).max_frames, 1);
        assert_eq!(cfg(None, None, Some("100000")).max_frames, MAX_FRAMES_LIMIT);
        assert_eq!(cfg(None, None, Some("-3")).max_frames, 64);
    }

    #[test]
    fn host_tracking_is_off_only_for_gpu() {
        let t = |v: Option<&str>| {
            with(&v.map(|v| (keys::TRACK, v)).into_iter().collect::<Vec<_>>()).host
        };
        assert!(t(None));
        assert!(t(Some("all")));
        assert!(t(Some("bogus")));
        assert!(!t(Some("gpu")));
        assert!(!t(Some(" gpu ")));
    }

    #[test]
    fn empty_socket_is_unset_and_quiet_needs_one() {
        assert_eq!(cfg(Some(""), None, None).socket, None);
        assert_eq!(cfg(Some("@x"), None, None).socket.as_deref(), Some("@x"));
        let q = |v: &str| with(&[(keys::QUIET, v)]).quiet;
        assert!(q("1"));
        assert!(!q("0"));
        assert!(!q("yes"));
    }
}
