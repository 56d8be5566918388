//! The Python helper that `leakscope run` injects into Python programs for block-level
//! tracking of PyTorch's CUDA caching allocator: `sitecustomize.py` and
//! `leakscope_torch.py` (sources in `collector/python/`, embedded in the binary), written
//! into the recording directory and put first on the command's `PYTHONPATH`. Children
//! inherit the variable, so `multiprocessing` spawn workers and exec'd Python programs run
//! it too. What the helper does is documented in the files themselves.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};

/// The folder inside the recording directory that holds the helper.
pub const DIR_NAME: &str = "python";

/// The helper's files: name and contents.
pub const FILES: [(&str, &str); 2] = [
    (
        "sitecustomize.py",
        include_str!("../../python/sitecustomize.py"),
    ),
    (
        "leakscope_torch.py",
        include_str!("../../python/leakscope_torch.py"),
    ),
];

/// Writes the helper into `recording/python/` and returns that folder's absolute path.
pub fn write(recording: &Path) -> io::Result<PathBuf> {
    let dir = std::path::absolute(recording.join(DIR_NAME))?;
    std::fs::create_dir_all(&dir)?;
    for (name, contents) in FILES {
        std::fs::write(dir.join(name), contents)?;
    }
    Ok(dir)
}

/// Removes what [`write()`] wrote (when the command could not be started).
pub fn remove(dir: &Path) {
    for (name, _) in FILES {
        let _ = std::fs::remove_file(dir.join(name));
    }
    let _ = std::fs::remove_dir(dir);
}

/// `PYTHONPATH` with `dir` first, before the entries already set.
pub fn pythonpath(dir: &Path, existing: Option<&OsStr>) -> OsString {
    let mut v = dir.as_os_str().to_owned();
    if let Some(old) = existing.filter(|o| !o.is_empty()) {
        v.push(":");
        v.push(old);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_helper_and_goes_first_on_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = write(tmp.path()).unwrap();
        assert!(dir.is_absolute());
        assert_eq!(dir, tmp.path().join(DIR_NAME));
        let site = std::fs::read_to_string(dir.join("sitecustomize.py")).unwrap();
        assert!(site.contains("_leakscope_chain"));
        assert!(dir.join("leakscope_torch.py").is_file());
        assert_eq!(
            pythonpath(&dir, Some(OsStr::new("/a:/b"))),
            OsString::from(format!("{}:/a:/b", dir.display()))
        );
        assert_eq!(pythonpath(&dir, Some(OsStr::new(""))), dir.as_os_str());
        remove(&dir);
        assert!(!dir.exists());
    }
}
