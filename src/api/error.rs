//! What can go wrong with one API call, as data: the run state decides on it, so it lives
//! apart from the HTTP client that produces it. Pure.

use std::time::Duration;

/// What went wrong with one API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No connection was made: the request never left.
    #[error("could not connect: {0}")]
    Connect(String),
    /// The call took longer than its timeout; it may have been processed.
    #[error("timed out waiting for the answer")]
    Timeout,
    /// The connection broke (reset, closed) after it was made; it may have been processed.
    #[error("connection failed: {0}")]
    Transport(String),
    /// The provider answered with an error, by HTTP status or by the body's `code`.
    #[error("HTTP {status}: {message}")]
    Status {
        /// The HTTP status, or the body's `code` when the HTTP status was 200.
        status: u16,
        /// The provider's message.
        message: String,
        /// `Retry-After`, when given.
        retry_after: Option<Duration>,
    },
    /// A success status whose body could not be read.
    #[error("unreadable answer: {0}")]
    Decode(String),
    /// A local file to send could not be read; nothing was sent.
    #[error("cannot read {0}")]
    Local(String),
}
