//! Reads a module file's GNU build id, to tell whether the file on disk is the one the run
//! loaded. Only a note owned by "GNU" of type `NT_GNU_BUILD_ID` counts: PyTorch's libraries
//! carry other notes of the same type number (blazesym's reader takes the first of any
//! owner, which made their build ids look changed). The file is read on demand, not whole:
//! CUDA libraries run to gigabytes.

use object::read::ReadCache;
use object::Object;
use std::fs::File;
use std::path::Path;

/// Why a build id could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BuildIdError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not a readable ELF file: {0}")]
    Elf(#[from] object::read::Error),
}

/// The file's build id, `None` when it has none.
pub fn read(path: &Path) -> Result<Option<Vec<u8>>, BuildIdError> {
    let cache = ReadCache::new(File::open(path)?);
    let file = object::File::parse(&cache)?;
    Ok(file.build_id()?.map(<[u8]>::to_vec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_blazesym_on_an_ordinary_file() {
        let exe = std::env::current_exe().unwrap();
        let ours = read(&exe).unwrap();
        let theirs = blazesym::helper::read_elf_build_id(&exe)
            .unwrap()
            .map(|b| b.to_vec());
        assert_eq!(ours, theirs);
    }

    #[test]
    fn a_file_that_is_no_elf_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("garbage.so");
        std::fs::write(&p, b"not an elf file at all").unwrap();
        assert!(matches!(read(&p), Err(BuildIdError::Elf(_))));
        assert!(matches!(
            read(&dir.path().join("missing.so")),
            Err(BuildIdError::Io(_))
        ));
    }
}
