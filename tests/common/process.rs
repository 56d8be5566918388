//! Scratch work folders and running commands: spawning with a scrubbed environment in a
//! process group of their own, waiting under the hang guard, exit statuses and the
//! assertions on them.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// Longest any single command of a test may take before the harness kills it and fails
/// the test. A hang guard only: no test asserts anything about how long things take.
pub const HANG_LIMIT: Duration = Duration::from_secs(600);

/// A test's scratch folder, removed at the end unless `LEAKSCOPE_TEST_KEEP=1`.
pub struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    /// A new scratch folder named after the test.
    pub fn new(test: &str) -> Work {
        let mut dir = tempfile::Builder::new()
            .prefix(&format!("leakscope-e2e-{test}-"))
            .tempdir()
            .expect("cannot create a temporary folder");
        if std::env::var_os("LEAKSCOPE_TEST_KEEP").is_some_and(|v| v == "1") {
            dir.disable_cleanup(true);
            eprintln!("[{test}] work folder kept: {}", dir.path().display());
        }
        Work { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the folder.
    pub fn join(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Removes every variable through which leakscope (or an outer leakscope) could reach a
/// command, so that a test sees only what it sets itself.
pub fn scrub_env(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars_os() {
        let k_str = k.to_string_lossy();
        if k_str.starts_with("LEAKSCOPE_") || k_str == "LD_PRELOAD" {
            cmd.env_remove(&k);
        }
    }
    cmd
}

/// Runs `cmd` to completion, collecting its output, with stdin closed. The command gets a
/// process group of its own, which the harness kills whole if it outlives [`HANG_LIMIT`].
pub fn run_cmd(cmd: &mut Command) -> Output {
    let child = spawn_piped(cmd);
    wait_output(child, &format!("{cmd:?}"))
}

/// Spawns `cmd` with stdin closed, stdout and stderr piped, in its own process group.
pub fn spawn_piped(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

/// Waits for a child spawned by [`spawn_piped`], reading its output as it comes.
pub fn wait_output(mut child: Child, what: &str) -> Output {
    let mut out_pipe = child.stdout.take().expect("stdout piped");
    let mut err_pipe = child.stderr.take().expect("stderr piped");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let status = wait_with_deadline(&mut child, what);
    Output {
        status,
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
    }
}

/// Waits for `child`, killing its process group and failing the test past [`HANG_LIMIT`].
pub fn wait_with_deadline(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + HANG_LIMIT;
    loop {
        if let Some(status) = child.try_wait().expect("waitpid") {
            return status;
        }
        if Instant::now() > deadline {
            // SAFETY: kill(2) on the process group this harness created for the child.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            panic!("{what} did not finish within {HANG_LIMIT:?}; killed it");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `cond` until it holds, failing the test with `what` if it does not within
/// [`HANG_LIMIT`]. For waiting on another process's progress, never for measuring time.
pub fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    wait_until_for(what, HANG_LIMIT, cond)
}

/// [`wait_until`] with a shorter give-up point.
pub fn wait_until_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The exit code a shell would show: the code, or 128 + the signal.
pub fn shell_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .expect("a process ends with a code or a signal")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Fails with both outputs when a command did not exit with `code`.
pub fn assert_code(out: &Output, code: i32, what: &str) {
    assert_eq!(
        shell_code(out.status),
        code,
        "{what}: unexpected exit status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Fails if the output shows a Rust panic (the message, or exit code 101, or an abort
/// from `panic = "abort"`).
pub fn assert_no_panic(out: &Output, what: &str) {
    let stderr = text(&out.stderr);
    assert!(
        !stderr.contains("panicked at") && !stderr.contains("RUST_BACKTRACE"),
        "{what} panicked:\n{stderr}"
    );
    assert_ne!(
        out.status.code(),
        Some(101),
        "{what} exited 101 (panic):\n{stderr}"
    );
    assert_ne!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{what} aborted:\n{stderr}"
    );
    assert_ne!(
        out.status.signal(),
        Some(libc::SIGSEGV),
        "{what} crashed:\n{stderr}"
    );
}
