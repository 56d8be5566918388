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

/// Milliseconds between the readings the shim takes of state that changes without an
/// event of its own (heap arenas, resident memory, the PyTorch allocator's segments);
/// default [`DEFAULT_INTERVAL_MS`]. `leakscope run --interval` sets it.
pub const INTERVAL_MS: &str = "LEAKSCOPE_INTERVAL_MS";

/// Default for [`INTERVAL_MS`]: ten seconds.
pub const DEFAULT_INTERVAL_MS: u64 = 10_000;

/// `0` switches Python frames off (native stacks only); `full` keeps them and also every
/// native frame outside the innermost eval loop; anything else, or unset, leaves them on
/// (native frames up to the innermost eval loop, whose Python frames describe the rest)
/// wherever a supported CPython runs.
pub const PYTHON: &str = "LEAKSCOPE_PYTHON";

/// `0` switches block-level tracking of PyTorch's CUDA caching allocator off; on by
/// default in Python programs that import `torch`.
pub const TORCH_BLOCKS: &str = "LEAKSCOPE_TORCH_BLOCKS";
