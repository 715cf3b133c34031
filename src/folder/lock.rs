//! One run per output folder: an OS file lock on `DIR/.stembatch/lock`, holding the
//! holder's pid and the time it took the lock. The OS releases it when the process dies,
//! so a killed run never blocks the next night. [`holder`] tells who holds it without
//! waiting for it and without writing anything, for `status`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

/// The lock file's name inside the state folder.
pub const LOCK_FILE: &str = "lock";

/// Held for the whole run; released on drop (or by the OS when the process dies).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// The run that holds a folder, as it wrote itself into the lock file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// Its process id.
    pub pid: u32,
    /// When it took the lock; `None` from a stembatch that wrote only its pid.
    pub since: Option<DateTime<Utc>>,
}

impl Holder {
    /// The lock file's content: the pid on the first line, the time (RFC 3339, UTC) on
    /// the second. Older stembatch versions wrote the first line only.
    fn encode(&self) -> String {
        match self.since {
            Some(since) => format!(
                "{}\n{}\n",
                self.pid,
                since.to_rfc3339_opts(SecondsFormat::Secs, true)
            ),
            None => format!("{}\n", self.pid),
        }
    }

    /// Reads what [`Holder::encode`] wrote; `None` when the pid is not there (yet).
    fn parse(text: &str) -> Option<Holder> {
        let mut lines = text.lines();
        let pid = lines.next()?.trim().parse().ok()?;
        let since = lines
            .next()
            .and_then(|line| DateTime::parse_from_rfc3339(line.trim()).ok())
            .map(|t| t.with_timezone(&Utc));
        Some(Holder { pid, since })
    }
}

/// Whether a run holds an output folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockState {
    /// No run holds it.
    Free,
    /// A run holds it; who, when the lock file says.
    Held(Option<Holder>),
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("another stembatch run{} holds {}", describe(holder.as_ref()), dir.display())]
    Held {
        /// The holder, as it wrote itself.
        holder: Option<Holder>,
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

/// " (pid 12, since 2025-01-01T01:00:00Z)", or nothing when the holder is unknown.
pub fn describe(holder: Option<&Holder>) -> String {
    match holder {
        Some(Holder {
            pid,
            since: Some(since),
        }) => format!(
            " (pid {pid}, since {})",
            since.to_rfc3339_opts(SecondsFormat::Secs, true)
        ),
        Some(Holder { pid, since: None }) => format!(" (pid {pid})"),
        None => String::new(),
    }
}

/// How often, and how far apart, a run tries a held lock again before exit 4: longer than
/// any `status` holds its shared lock, short enough that a second run still says at once
/// that the folder is taken.
const HELD_RETRIES: u32 = 10;
const HELD_RETRY_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// How a run holds a folder's lock file.
#[derive(Clone, Copy)]
enum Mode {
    /// Alone: a whole-folder run, or a shard in its own folder.
    Exclusive,
    /// Beside the other shards of the folder.
    Shared,
}

/// Opens the lock file in `state_dir` and locks it in `mode`. Not truncated on open: the
/// holder's pid must survive until we hold the lock.
fn lock_file(state_dir: &Path, out_dir: &Path, mode: Mode) -> Result<File, LockError> {
    let path = state_dir.join(LOCK_FILE);
    let io = |cause| LockError::Io {
        path: path.clone(),
        cause,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    // A `status` looks at the lock for an instant: a run that starts in that instant
    // tries a few more times before it calls the folder held, so that a monitoring
    // script can never cost a night.
    let mut tries = 0;
    loop {
        let locked = match mode {
            Mode::Exclusive => file.try_lock(),
            Mode::Shared => file.try_lock_shared(),
        };
        match locked {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if tries < HELD_RETRIES => {
                tries += 1;
                std::thread::sleep(HELD_RETRY_WAIT);
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    holder: read_holder(&mut file),
                    dir: out_dir.to_owned(),
                });
            }
            Err(std::fs::TryLockError::Error(err)) => return Err(io(err)),
        }
    }
}

/// Takes the lock of the output folder `out_dir` whose state folder is `state_dir`.
pub fn acquire(state_dir: &Path, out_dir: &Path) -> Result<RunLock, LockError> {
    let mut file = lock_file(state_dir, out_dir, Mode::Exclusive)?;
    let io = |cause| LockError::Io {
        path: state_dir.join(LOCK_FILE),
        cause,
    };
    let holder = Holder {
        pid: std::process::id(),
        since: Some(Utc::now()),
    };
    file.set_len(0).map_err(io)?;
    // One write, so that a reader sees the pid and the time together or neither.
    file.write_all(holder.encode().as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(RunLock { _file: file })
}

/// Takes the lock of the output folder `out_dir` *shared*: what every shard of a folder
/// holds for its whole run, so that a whole-folder run (of this stembatch or of one that
/// knows no shards) cannot take the folder while shards run in it. Writes nothing: the
/// shards name themselves in their own locks.
pub fn acquire_shared(state_dir: &Path, out_dir: &Path) -> Result<RunLock, LockError> {
    let file = lock_file(state_dir, out_dir, Mode::Shared)?;
    Ok(RunLock { _file: file })
}

/// Who holds the lock of the folder whose state folder is `state_dir`, without waiting
/// and without creating or writing anything: a folder with no lock file is free.
///
/// The check takes a shared lock for an instant, so two `status` calls never disturb each
/// other; a run that starts in that very instant tries again a few times before it calls
/// the folder held.
pub fn holder(state_dir: &Path) -> Result<LockState, LockError> {
    let path = state_dir.join(LOCK_FILE);
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(LockState::Free),
        Err(cause) => return Err(LockError::Io { path, cause }),
    };
    match file.try_lock_shared() {
        // Released when `file` is dropped.
        Ok(()) => Ok(LockState::Free),
        Err(std::fs::TryLockError::WouldBlock) => {
            // A holder writes itself just after it takes the lock: give it a moment.
            for _ in 0..HOLDER_READ_TRIES {
                if let Some(holder) = read_holder(&mut file) {
                    return Ok(LockState::Held(Some(holder)));
                }
                std::thread::sleep(HOLDER_READ_PAUSE);
            }
            Ok(LockState::Held(None))
        }
        Err(std::fs::TryLockError::Error(cause)) => Err(LockError::Io { path, cause }),
    }
}

/// How often [`holder`] reads a held lock file that does not name its holder yet.
const HOLDER_READ_TRIES: u32 = 20;
/// The pause between those reads.
const HOLDER_READ_PAUSE: Duration = Duration::from_millis(25);

/// The holder as the lock file names it, read from its start.
fn read_holder(file: &mut File) -> Option<Holder> {
    use std::io::Seek;
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    Holder::parse(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_a_released_lock_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let held = acquire(dir.path(), Path::new("out")).unwrap();
        let err = acquire(dir.path(), Path::new("out")).unwrap_err();
        let message = err.to_string();
        let prefix = format!("another stembatch run (pid {}, since ", std::process::id());
        assert!(message.starts_with(&prefix), "{message}");
        assert!(message.ends_with("Z) holds out"), "{message}");
        drop(held);
        acquire(dir.path(), Path::new("out")).unwrap();
    }

    #[test]
    fn the_holder_is_read_without_taking_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(holder(dir.path()).unwrap(), LockState::Free);
        assert!(
            !dir.path().join(LOCK_FILE).exists(),
            "looking creates nothing"
        );
        let before = Utc::now() - chrono::Duration::seconds(1);
        let held = acquire(dir.path(), Path::new("out")).unwrap();
        let LockState::Held(Some(found)) = holder(dir.path()).unwrap() else {
            panic!("the lock is held by this process");
        };
        assert_eq!(found.pid, std::process::id());
        let since = found.since.expect("the time is written");
        assert!(since >= before && since <= Utc::now(), "{since}");
        // Looking twice does not disturb the holder, nor does looking at all.
        assert!(matches!(holder(dir.path()).unwrap(), LockState::Held(_)));
        drop(held);
        assert_eq!(holder(dir.path()).unwrap(), LockState::Free);
        acquire(dir.path(), Path::new("out")).unwrap();
    }

    #[test]
    fn a_lock_file_of_an_older_stembatch_names_the_pid_only() {
        assert_eq!(
            Holder::parse("4242\n"),
            Some(Holder {
                pid: 4242,
                since: None
            })
        );
        let holder = Holder {
            pid: 7,
            since: Some("2025-03-04T01:02:03Z".parse().unwrap()),
        };
        assert_eq!(holder.encode(), "7\n2025-03-04T01:02:03Z\n");
        assert_eq!(Holder::parse(&holder.encode()), Some(holder));
        assert_eq!(Holder::parse(""), None);
        assert_eq!(Holder::parse("not a pid\n"), None);
    }
}
