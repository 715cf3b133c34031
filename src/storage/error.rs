//! What the bucket answered when it did not do what was asked: pure data the run state
//! can decide on (a refusal of the credentials stops all submits; anything else fails
//! the one variant), with a message fit to print.

/// How a storage call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageFailure {
    /// 401/403: the credentials are wrong, or lack the permission (every later call
    /// would meet the same answer).
    Refused,
    /// A network failure, a 5xx or a 429: another try may succeed.
    Transient,
    /// A 503 (S3's `SlowDown`, whose body object_store does not read) or a 429: the
    /// bucket asks for fewer requests; another try may succeed, later.
    Throttled,
    /// Anything else: the request itself was refused (too large, bad bucket, …).
    Rejected,
}

/// A failed storage call, its message scrubbed of the credentials.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StorageError {
    /// What kind of failure.
    pub failure: StorageFailure,
    /// The storage's words (its error code and message), or the local cause.
    pub message: String,
}

impl StorageError {
    /// Whether the storage refused the credentials: nothing more should be submitted.
    pub fn refused_credentials(&self) -> bool {
        self.failure == StorageFailure::Refused
    }

    /// Whether another try may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.failure,
            StorageFailure::Transient | StorageFailure::Throttled
        )
    }

    /// Whether the bucket asked for fewer requests: the uploads should hold off.
    pub fn is_throttled(&self) -> bool {
        self.failure == StorageFailure::Throttled
    }
}
