//! An exclusive lock on a synthesis folder: one process at a time runs, resumes or merges into
//! it. The lock is the operating system's advisory lock on `.synfer.lock` (`flock` on Unix,
//! `LockFileEx` on Windows), so it ends with the process that holds it, however that process
//! ends: a stale lock from a killed run cannot exist.

use std::path::Path;

use crate::error::{Error, Result};

/// The lock file's name inside the folder (empty; its lock is what counts).
pub const LOCK_FILE: &str = ".synfer.lock";

/// A held lock; released when dropped or when the process exits.
#[derive(Debug)]
pub struct FolderLock {
    _file: std::fs::File,
}

impl FolderLock {
    /// Creates `dir` if needed and locks it, or says which folder another process holds.
    pub fn acquire(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(FolderLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::request(
                "out",
                format!(
                    "{} is in use by another synfer process (it holds {LOCK_FILE}); wait for it \
                     to finish or stop it",
                    dir.display()
                ),
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_is_locked_once_until_the_holder_lets_go() {
        let dir = std::env::temp_dir().join(format!("synfer-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let held = FolderLock::acquire(&dir).unwrap();
        // A second open file description (as another process has) is refused, naming the folder.
        let err = FolderLock::acquire(&dir).unwrap_err().to_string();
        assert!(
            err.contains(&dir.display().to_string()) && err.contains("in use"),
            "{err}"
        );
        drop(held);
        FolderLock::acquire(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
