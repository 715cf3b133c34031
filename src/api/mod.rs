//! The provider's HTTP API: wire types, a typed client, and the retry policy.

pub mod client;
pub mod error;
pub mod redact;
pub mod retry;
pub mod types;

pub use client::{ApiClient, ApiError, ApiKey};
