//! The environment contract between `leakscope run` and the shim. The collector sets these
//! variables; the shim (and every process that inherits the environment: exec'd children,
//! `multiprocessing` spawn workers) reads them.

/// Path of the collector's Unix socket. A leading `@` names an abstract socket.
pub const SOCKET: &str = "LEAKSCOPE_SOCKET";

/// What a hooking thread does when the channel to the sender thread is full:
/// `wait:<milliseconds>` (bounded wait, then drop and count; the default is `wait:1000`)
/// or `drop` (drop and count at once). Drops are always reported.
pub const ON_FULL: &str = "LEAKSCOPE_ON_FULL";

/// Deepest native stack the shim captures (frames); default [`DEFAULT_MAX_FRAMES`].
pub const MAX_FRAMES: &str = "LEAKSCOPE_MAX_FRAMES";

/// When set to `1`, the shim stays silent on stderr (it otherwise prints one line when it
/// cannot reach or loses the collector).
pub const QUIET: &str = "LEAKSCOPE_QUIET";

/// What the shim records: `all` (the default: host and GPU memory) or `gpu` (CUDA memory
/// only; the C heap and `mmap` hooks pass straight through, so a host-heavy program runs at
/// its own speed).
pub const TRACK: &str = "LEAKSCOPE_TRACK";

/// Default for [`MAX_FRAMES`].
pub const DEFAULT_MAX_FRAMES: usize = 64;

/// Default bounded wait, in milliseconds, for [`ON_FULL`].
pub const DEFAULT_FULL_WAIT_MS: u64 = 1000;
