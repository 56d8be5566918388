//! Finding the shim `leakscope run` preloads: `$LEAKSCOPE_SHIM` if set, else
//! `libleakscope_shim.so` next to the running executable (where cargo puts both), else
//! `<exe dir>/../lib/leakscope/libleakscope_shim.so` (an installed layout).

use crate::error::RunError;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Environment variable naming the shim to use instead of the one found next to leakscope.
pub const SHIM_ENV: &str = "LEAKSCOPE_SHIM";
/// File name of the shim.
pub const SHIM_FILE: &str = "libleakscope_shim.so";

/// Finds the shim for this executable and environment.
pub fn locate() -> Result<PathBuf, RunError> {
    let exe = std::env::current_exe().map_err(RunError::CurrentExe)?;
    locate_from(std::env::var_os(SHIM_ENV), &exe)
}

/// Finds the shim given the value of [`SHIM_ENV`] and the executable's path.
pub fn locate_from(env_value: Option<OsString>, exe: &Path) -> Result<PathBuf, RunError> {
    if let Some(v) = env_value.filter(|v| !v.is_empty()) {
        let path = PathBuf::from(v);
        if !path.is_file() {
            return Err(RunError::ShimFromEnvMissing { path });
        }
        return usable(path);
    }
    let dir = exe.parent().unwrap_or(Path::new("."));
    let tried = vec![
        dir.join(SHIM_FILE),
        dir.join("..").join("lib").join("leakscope").join(SHIM_FILE),
    ];
    match tried.iter().find(|p| p.is_file()) {
        Some(p) => usable(p.clone()),
        None => Err(RunError::ShimNotFound { tried }),
    }
}

/// An absolute path that `LD_PRELOAD` can carry (it splits on spaces and colons).
fn usable(path: PathBuf) -> Result<PathBuf, RunError> {
    let path = path.canonicalize().unwrap_or(path);
    let text = path.as_os_str().as_encoded_bytes();
    if text.contains(&b' ') || text.contains(&b':') {
        return Err(RunError::ShimPathUnusable { path });
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn order_of_places() {
        let t = tempfile::tempdir().unwrap();
        let bin = t.path().join("bin");
        let lib = t.path().join("lib").join("leakscope");
        fs::create_dir_all(&bin).unwrap();
        fs::create_dir_all(&lib).unwrap();
        let exe = bin.join("leakscope");

        // Nothing there: the error lists both places.
        let e = locate_from(None, &exe).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, RunError::ShimNotFound { ref tried } if tried.len() == 2));
        assert!(msg.contains("bin/libleakscope_shim.so"), "{msg}");
        assert!(msg.contains("lib/leakscope/libleakscope_shim.so"), "{msg}");
        assert!(msg.contains("LEAKSCOPE_SHIM"), "{msg}");

        fs::write(lib.join(SHIM_FILE), b"").unwrap();
        let found = locate_from(None, &exe).unwrap();
        assert_eq!(found, lib.join(SHIM_FILE).canonicalize().unwrap());

        fs::write(bin.join(SHIM_FILE), b"").unwrap();
        let found = locate_from(None, &exe).unwrap();
        assert_eq!(found, bin.join(SHIM_FILE).canonicalize().unwrap());

        let other = t.path().join("other.so");
        fs::write(&other, b"").unwrap();
        let found = locate_from(Some(other.clone().into()), &exe).unwrap();
        assert_eq!(found, other.canonicalize().unwrap());
        // An empty variable counts as unset.
        assert_eq!(
            locate_from(Some(OsString::new()), &exe).unwrap(),
            bin.join(SHIM_FILE).canonicalize().unwrap()
        );
    }

    #[test]
    fn env_naming_a_missing_file_or_an_unusable_path_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let exe = t.path().join("leakscope");
        let e = locate_from(Some(t.path().join("nope.so").into()), &exe).unwrap_err();
        assert!(matches!(e, RunError::ShimFromEnvMissing { .. }), "{e}");
        let spaced = t.path().join("a b.so");
        fs::write(&spaced, b"").unwrap();
        let e = locate_from(Some(spaced.into()), &exe).unwrap_err();
        assert!(matches!(e, RunError::ShimPathUnusable { .. }), "{e}");
    }
}
