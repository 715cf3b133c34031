//! The run's journal: an append-only file of JSON lines under `DIR/.stembatch/`, each
//! record fsync'd before anyone relies on it. It is what makes re-runs safe: the intent to
//! submit is durable before the submit goes out, the task id right after the answer, a
//! track only after its file is renamed into place.
//!
//! [`format`](mod@format) defines the versioned records, [`writer`] is the single-owner writer task,
//! [`replay`] (pure) folds the records of earlier runs into what the journal says of each
//! variant (what it does next is decided by `scheduler::start` and `scheduler::rerun`),
//! [`folded`] folds a folder's journals as they are read, and [`checkpoint`] keeps that
//! fold so that a folder opens by reading only the journals' tails.

pub mod checkpoint;
pub mod folded;
pub mod format;
pub mod replay;
pub mod stored;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The folder of stembatch's own files inside an output folder.
pub const STATE_DIR: &str = ".stembatch";
/// The journal's file name inside [`STATE_DIR`].
pub const JOURNAL_FILE: &str = "journal.jsonl";

/// `DIR/.stembatch`
pub fn state_dir(out_dir: &Path) -> PathBuf {
    out_dir.join(STATE_DIR)
}

/// Why the journal cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Reading or writing failed.
    #[error("journal {}: {cause}", path.display())]
    Io {
        /// The journal file.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// A line before the last is not a record: the file was damaged. The hint keeps the
    /// journal: it is the only record of the tasks already paid for.
    #[error("journal {}: line {line} is not a record: {message} (hint: each line is one JSON record; repair or delete line {line} by hand and run again; do not delete the journal: it holds the tasks already paid for)", path.display())]
    Corrupt {
        /// The journal file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The parse error.
        message: String,
    },
    /// Written by a newer stembatch.
    #[error("journal {}: line {line} has format version {version}, newer than this stembatch understands ({}) (hint: upgrade stembatch)", path.display(), format::VERSION)]
    TooNew {
        /// The journal file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The version found.
        version: u32,
    },
    /// A checkpoint written by a newer stembatch: its journals may hold records this one
    /// cannot read either, so nothing is decided from the folder.
    #[error("checkpoint {}: format version {version}, newer than this stembatch understands ({}) (hint: upgrade stembatch; or delete that file: it is derived from the journals, and rebuilt from them)", path.display(), checkpoint::VERSION)]
    CheckpointTooNew {
        /// The checkpoint file.
        path: PathBuf,
        /// The version found.
        version: u32,
    },
    /// A write or fsync failed. The file was cut back to its last durable record and the
    /// writer refuses every later record: nothing is written after a failed write.
    #[error("journal {}: cannot write ({cause}); nothing more is written to it{}", path.display(), write_failed_hint(cause))]
    WriteFailed {
        /// The journal file.
        path: PathBuf,
        /// The error of the failed write, shared by every record refused after it.
        cause: Arc<std::io::Error>,
    },
    /// A track's line, read when the folder was opened, no longer holds that track when
    /// it is read again for the rows: the file was changed or replaced during the run.
    #[error("{}: the line at byte {offset}, read when the folder was opened, {message} (hint: was the file edited or replaced while stembatch ran? run again: the folder is read afresh)", path.display())]
    Changed {
        /// The journal or checkpoint.
        path: PathBuf,
        /// Where the line begins.
        offset: u64,
        /// What is wrong with it.
        message: String,
    },
    /// The writer thread is gone.
    #[error("the journal writer has stopped")]
    Closed,
}

impl JournalError {
    /// Whether the disk is full (ENOSPC), so that the run can say so.
    pub fn is_disk_full(&self) -> bool {
        match self {
            JournalError::Io { cause, .. } => is_disk_full(cause),
            JournalError::WriteFailed { cause, .. } => is_disk_full(cause),
            JournalError::Corrupt { .. }
            | JournalError::TooNew { .. }
            | JournalError::CheckpointTooNew { .. }
            | JournalError::Changed { .. }
            | JournalError::Closed => false,
        }
    }
}

use crate::output_files::is_disk_full;

fn write_failed_hint(cause: &std::io::Error) -> &'static str {
    match is_disk_full(cause) {
        true => " (hint: the disk is full; free some space and run again: the journal keeps every record written before)",
        false => "",
    }
}
