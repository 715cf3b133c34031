//! The process exit codes of SPEC.md, and the error type that carries one to `main`.

/// Every variant finished.
pub const SUCCESS: u8 = 0;
/// The run ended, but some variants are failed, timeout, error or pending.
pub const INCOMPLETE: u8 = 1;
/// A usage or manifest error: nothing was sent.
pub const USAGE: u8 = 2;
/// The account stopped the run (bad key, no credits).
pub const ACCOUNT: u8 = 3;
/// Another stembatch run holds the output folder.
pub const LOCKED: u8 = 4;
/// Interrupted by SIGINT or SIGTERM; state saved.
pub const INTERRUPTED: u8 = 130;

/// An error the user can act on, with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ExpectedError {
    /// The exit code.
    pub code: u8,
    /// What to tell the user.
    pub message: String,
}

impl ExpectedError {
    /// A usage or manifest error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        ExpectedError {
            code: USAGE,
            message: message.into(),
        }
    }
}
