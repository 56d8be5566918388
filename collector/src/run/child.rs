//! Starting the command with the shim preloaded (and, for PyTorch block tracking, the
//! Python helper first on `PYTHONPATH`), and turning how it ended into an exit code: its
//! own code, or 128 + the signal that killed it (as a shell reports it).

use super::{pyhelper, ShimSettings};
use crate::error::RunError;
use leakscope_protocol::env;
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::{Child, Command, ExitStatus};

/// Starts `command` with `LD_PRELOAD=<shim>` (before any preload already set),
/// `LEAKSCOPE_SOCKET=<socket>` and the variables of `settings`; with `python_helper` (the
/// folder `pyhelper::write` made) first on `PYTHONPATH` when `settings.torch_blocks`.
pub fn spawn(
    command: &[OsString],
    shim: &Path,
    socket: &str,
    settings: &ShimSettings,
    python_helper: Option<&Path>,
) -> Result<Child, RunError> {
    let (program, args) = command.split_first().ok_or(RunError::NoCommand)?;
    let preload = preload_value(shim, std::env::var_os("LD_PRELOAD").as_deref());
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("LD_PRELOAD", preload)
        .env(env::SOCKET, socket)
        .envs(settings.env());
    if let Some(dir) = python_helper.filter(|_| settings.torch_blocks) {
        let existing = std::env::var_os("PYTHONPATH");
        cmd.env("PYTHONPATH", pyhelper::pythonpath(dir, existing.as_deref()));
    }
    cmd.spawn().map_err(|source| {
        let command = program.to_string_lossy().into_owned();
        match source.kind() {
            std::io::ErrorKind::NotFound => RunError::CommandNotFound { command },
            std::io::ErrorKind::PermissionDenied => RunError::CommandNotExecutable { command },
            _ => RunError::Spawn { command, source },
        }
    })
}

/// `LD_PRELOAD` with the shim first.
pub fn preload_value(shim: &Path, existing: Option<&OsStr>) -> OsString {
    let mut v = shim.as_os_str().to_owned();
    if let Some(old) = existing.filter(|o| !o.is_empty()) {
        v.push(":");
        v.push(old);
    }
    v
}

/// The exit code and, if a signal ended it, the signal.
pub fn exit_code(status: ExitStatus) -> (i32, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => (code, None),
        (None, Some(sig)) => (128 + sig, Some(sig)),
        (None, None) => (128, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preload_goes_first() {
        let shim = Path::new("/x/libleakscope_shim.so");
        assert_eq!(
            preload_value(shim, None),
            OsStr::new("/x/libleakscope_shim.so")
        );
        assert_eq!(
            preload_value(shim, Some(OsStr::new(""))),
            OsStr::new("/x/libleakscope_shim.so")
        );
        assert_eq!(
            preload_value(shim, Some(OsStr::new("/a.so /b.so"))),
            OsStr::new("/x/libleakscope_shim.so:/a.so /b.so")
        );
    }

    #[test]
    fn missing_command_is_127_like_a_shell() {
        let e = spawn(
            &["/nonexistent/leakscope-no-such-command".into()],
            Path::new("/nonexistent.so"),
            "@x",
            &ShimSettings::default(),
            None,
        )
        .unwrap_err();
        assert!(matches!(e, RunError::CommandNotFound { .. }), "{e}");
        assert_eq!(e.exit_code(), 127);
        assert_eq!(
            e.to_string(),
            "/nonexistent/leakscope-no-such-command: command not found"
        );
        let e = spawn(
            &[],
            Path::new("/x.so"),
            "@x",
            &ShimSettings::default(),
            None,
        )
        .unwrap_err();
        assert!(matches!(e, RunError::NoCommand));
    }

    #[test]
    fn exit_codes_and_signals() {
        let st = Command::new("sh").args(["-c", "exit 3"]).status().unwrap();
        assert_eq!(exit_code(st), (3, None));
        let st = Command::new("sh")
            .args(["-c", "kill -9 $$"])
            .status()
            .unwrap();
        assert_eq!(exit_code(st), (137, Some(9)));
    }
}
