//! One run per output folder: an OS file lock on `DIR/.stembatch/lock`, holding the
//! holder's pid. The OS releases it when the process dies, so a killed run never blocks
//! the next night.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside the state folder.
pub const LOCK_FILE: &str = "lock";

/// Held for the whole run; released on drop (or by the OS when the process dies).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("another stembatch run{} holds {}", pid.map(|p| format!(" (pid {p})")).unwrap_or_default(), dir.display())]
    Held {
        /// The holder's pid, as it wrote it.
        pid: Option<u32>,
        /// The output folder.
        dir: PathBuf,
    },
    /// The lock file could not be used.
    #[error("cannot lock {}: {cause}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
}

/// Takes the lock of the output folder `out_dir` whose state folder is `state_dir`.
pub fn acquire(state_dir: &Path, out_dir: &Path) -> Result<RunLock, LockError> {
    let path = state_dir.join(LOCK_FILE);
    let io = |cause| LockError::Io {
        path: path.clone(),
        cause,
    };
    // Not truncated on open: the holder's pid must survive until we hold the lock.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(LockError::Held {
                pid: text.trim().parse().ok(),
                dir: out_dir.to_owned(),
            });
        }
        Err(std::fs::TryLockError::Error(err)) => return Err(io(err)),
    }
    file.set_len(0).map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(RunLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_a_released_lock_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let held = acquire(dir.path(), Path::new("out")).unwrap();
        let err = acquire(dir.path(), Path::new("out")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "another stembatch run (pid {}) holds out",
                std::process::id()
            )
        );
        drop(held);
        acquire(dir.path(), Path::new("out")).unwrap();
    }
}
