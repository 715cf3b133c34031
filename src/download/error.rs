//! Why a download failed, and what the failure policy makes of it: data the run state
//! decides on, apart from the HTTP code that produces it. Pure.

use std::path::PathBuf;
use std::time::Duration;

#[cfg(doc)]
use super::{MAX_BYTES, TOTAL_TIMEOUT};

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The server answered with an error status.
    #[error("download answered HTTP {status}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// `Retry-After`, when given.
        retry_after: Option<Duration>,
    },
    /// The file is larger than [`MAX_BYTES`].
    #[error("download larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The download took longer than [`TOTAL_TIMEOUT`].
    #[error("download took longer than {}", humantime::format_duration(*limit))]
    TooSlow {
        /// The limit.
        limit: Duration,
    },
    /// The connection failed or broke.
    #[error("download failed: {0}")]
    Transport(String),
    /// Fewer (or more) bytes came than `Content-Length` announced.
    #[error("download cut short: {received} of {expected} bytes")]
    Short {
        /// Announced.
        expected: u64,
        /// Received.
        received: u64,
    },
    /// The body is not audio (an error page, an empty body, …).
    #[error("the download is not audio (it starts with {head:?})")]
    NotAudio {
        /// The first bytes, for the error message.
        head: String,
    },
    /// The file could not be written.
    #[error("cannot write {}: {cause}", path.display())]
    Io {
        /// The destination.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
}

impl DownloadError {
    /// Whether the URL has expired or is gone (403, 404, 410): a fresh URL may help.
    pub fn is_gone(&self) -> bool {
        matches!(
            self,
            DownloadError::Status {
                status: 403 | 404 | 410,
                ..
            }
        )
    }

    /// Whether the disk is full: nothing more should be bought until it is not.
    pub fn is_disk_full(&self) -> bool {
        match self {
            DownloadError::Io { cause, .. } => crate::output_files::is_disk_full(cause),
            _ => false,
        }
    }

    /// The wait the server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DownloadError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether another try may succeed: not for a disk error, or an answer that says the
    /// file is gone or forbidden.
    pub fn is_retryable(&self) -> bool {
        match self {
            DownloadError::Status { status, .. } => {
                *status == 429 || *status == 408 || *status >= 500
            }
            DownloadError::Transport(_)
            | DownloadError::Short { .. }
            | DownloadError::NotAudio { .. }
            | DownloadError::TooSlow { .. } => true,
            DownloadError::Io { .. } | DownloadError::TooLarge { .. } => false,
        }
    }
}
