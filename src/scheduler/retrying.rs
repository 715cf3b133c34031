//! The retry loop shared by every call that may be repeated (detail queries, uploads):
//! wait for the pacer, call, classify, back off. Submits have their own loop in the worker,
//! because each of their attempts is journaled.

use std::future::Future;

use tokio_util::sync::CancellationToken;

use super::pacer::Pacer;
use crate::api::retry::{classify, is_rate_limited, CallKind, RetryPolicy, Verdict};
use crate::api::ApiError;

/// Why a call with retries gave up.
pub(super) enum CallFailure {
    /// `stop` was cancelled.
    Stopped,
    /// The provider refused it, the account stopped, or every attempt failed.
    Failed {
        /// The last error.
        err: ApiError,
        /// What the failure policy made of it.
        verdict: Verdict,
    },
}

/// Waits for the pacer's turn; false when `stop` comes first.
pub(super) async fn turn(pacer: &dyn Pacer, stop: &CancellationToken) -> bool {
    tokio::select! {
        biased;
        _ = stop.cancelled() => false,
        _ = pacer.ready() => true,
    }
}

/// Waits out the backoff after the `attempts`-th failure, and holds the whole endpoint
/// back on a 429; false when `stop` comes first.
pub(super) async fn back_off(
    pacer: &dyn Pacer,
    retry: &RetryPolicy,
    attempts: u32,
    err: &ApiError,
    stop: &CancellationToken,
) -> bool {
    let retry_after = match err {
        ApiError::Status { retry_after, .. } => *retry_after,
        _ => None,
    };
    let wait = retry.delay(attempts, retry_after, rand::random());
    if is_rate_limited(err) {
        pacer.hold_off(retry_after.unwrap_or(wait));
    }
    tracing::debug!(attempt = attempts, error = %err, ?wait, "retrying");
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

/// One call that may be repeated, paced and retried as the failure policy allows; raced
/// against `stop`, since dropping it costs nothing.
pub(super) async fn call_with_retries<T, F, Fut>(
    pacer: &dyn Pacer,
    retry: &RetryPolicy,
    stop: &CancellationToken,
    mut call: F,
) -> Result<T, CallFailure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let mut attempts = 0;
    loop {
        if !turn(pacer, stop).await {
            return Err(CallFailure::Stopped);
        }
        attempts += 1;
        let result = tokio::select! {
            result = call() => result,
            _ = stop.cancelled() => return Err(CallFailure::Stopped),
        };
        let err = match result {
            Ok(value) => return Ok(value),
            Err(err) => err,
        };
        match classify(&err, CallKind::Idempotent) {
            Verdict::Retry { .. } if retry.allows_another(attempts) => {
                if !back_off(pacer, retry, attempts, &err, stop).await {
                    return Err(CallFailure::Stopped);
                }
            }
            verdict => return Err(CallFailure::Failed { err, verdict }),
        }
    }
}
