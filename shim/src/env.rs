//! The shim's configuration, read once from the environment contract in
//! `leakscope_protocol::env` (socket, full-channel policy, stack depth, quiet mode).

use leakscope_protocol::env as keys;
use std::ffi::OsStr;
use std::time::Duration;

/// Deepest stack the shim captures, whatever `LEAKSCOPE_MAX_FRAMES` says: a batch's frame
/// area must hold at least a few stacks of this depth.
pub const MAX_FRAMES_LIMIT: usize = 1024;

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
}

impl Config {
    /// Reads the process environment. Malformed values fall back to the defaults: the shim
    /// may print only one line, and that line is reserved for an unreachable collector.
    pub fn from_env() -> Config {
        let get = |k: &str| std::env::var_os(k);
        Config::from_values(
            get(keys::SOCKET).as_deref(),
            get(keys::ON_FULL).as_deref(),
            get(keys::MAX_FRAMES).as_deref(),
            get(keys::QUIET).as_deref(),
            get(keys::TRACK).as_deref(),
        )
    }

    /// Builds a configuration from raw variable values (`None`: unset).
    pub fn from_values(
        socket: Option<&OsStr>,
        on_full: Option<&OsStr>,
        max_frames: Option<&OsStr>,
        quiet: Option<&OsStr>,
        track: Option<&OsStr>,
    ) -> Config {
        Config {
            socket: socket
                .and_then(OsStr::to_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            on_full: text(on_full)
                .and_then(parse_on_full)
                .unwrap_or(OnFull::Wait(Duration::from_millis(
                    keys::DEFAULT_FULL_WAIT_MS,
                ))),
            max_frames: text(max_frames)
                .and_then(|s| s.parse::<usize>().ok())
                .map_or(keys::DEFAULT_MAX_FRAMES, |n| n.clamp(1, MAX_FRAMES_LIMIT)),
            quiet: text(quiet) == Some("1"),
            host: text(track) != Some("gpu"),
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

    fn cfg(socket: Option<&str>, on_full: Option<&str>, frames: Option<&str>) -> Config {
        Config::from_values(
            socket.map(OsStr::new),
            on_full.map(OsStr::new),
            frames.map(OsStr::new),
            None,
            None,
        )
    }

    #[test]
    fn defaults_when_unset() {
        let c = cfg(None, None, None);
        assert_eq!(c.socket, None);
        assert_eq!(c.on_full, OnFull::Wait(Duration::from_millis(1000)));
        assert_eq!(c.max_frames, 64);
        assert!(!c.quiet);
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
        let t =
            |v: Option<&str>| Config::from_values(None, None, None, None, v.map(OsStr::new)).host;
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
        let q = |v: &str| Config::from_values(None, None, None, Some(OsStr::new(v)), None).quiet;
        assert!(q("1"));
        assert!(!q("0"));
        assert!(!q("yes"));
    }
}
