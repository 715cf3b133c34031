//! The one retry path of calls that may be repeated (detail queries, uploads, downloads):
//! wait for the pacer's slot, call, ask the failure policy, back off (honouring a capped
//! `Retry-After`), all raced against a stop token. Submits never come through here:
//! whether a variant is submitted again is the run state's decision.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::pacer::Pacer;
use crate::api::retry::{classify, CallKind, RetryPolicy, Verdict};
use crate::api::ApiError;
use crate::download::DownloadError;

/// Why a call with retries gave up.
#[derive(Debug)]
pub enum CallFailure<E> {
    /// The stop token was cancelled first.
    Stopped,
    /// The last error: not worth repeating, or the tries ran out.
    Failed(E),
}

/// What the failure policy makes of one failed try.
pub trait Retryable {
    /// `Some(retry_after)` when another try may succeed (`retry_after` as the answer
    /// asked); `None` when repeating is pointless or wrong.
    fn retry(&self) -> Option<Option<Duration>>;

    /// Whether the answer was "too many requests": the whole endpoint slows down.
    fn rate_limited(&self) -> bool;
}

impl Retryable for ApiError {
    fn retry(&self) -> Option<Option<Duration>> {
        match classify(self, CallKind::Idempotent) {
            Verdict::Retry { after } => Some(after),
            _ => None,
        }
    }

    fn rate_limited(&self) -> bool {
        crate::api::retry::is_rate_limited(self)
    }
}

impl Retryable for DownloadError {
    fn retry(&self) -> Option<Option<Duration>> {
        self.is_retryable().then(|| self.retry_after())
    }

    fn rate_limited(&self) -> bool {
        matches!(self, DownloadError::Status { status: 429, .. })
    }
}

/// Sleeps until `until`; false when `stop` comes first.
pub async fn sleep_until(until: Instant, stop: &CancellationToken) -> bool {
    tokio::select! {
        biased;
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep_until(until) => true,
    }
}

/// Sleeps `wait`; false when `stop` comes first.
pub async fn sleep(wait: Duration, stop: &CancellationToken) -> bool {
    sleep_until(Instant::now() + wait, stop).await
}

/// Reserves the pacer's next slot and waits for it; false when `stop` comes first (the
/// slot is then lost, never used twice).
pub async fn take_slot(pacer: &dyn Pacer, stop: &CancellationToken) -> bool {
    match reserve(pacer, Instant::now(), stop).await {
        Some(slot) => sleep_until(slot, stop).await,
        None => false,
    }
}

/// Reserves the pacer's next slot at or after `earliest` (a shared pacer may take a while
/// to answer); `None` when `stop` comes first.
pub async fn reserve(
    pacer: &dyn Pacer,
    earliest: Instant,
    stop: &CancellationToken,
) -> Option<Instant> {
    tokio::select! {
        biased;
        _ = stop.cancelled() => None,
        slot = pacer.reserve(earliest.into_std()) => Some(Instant::from_std(slot)),
    }
}

/// Holds the pacer's slots back until `wait` from now (the provider said to wait); the
/// shared schedule is told unless `stop` comes first (this process's own slots are held
/// back either way). False when `stop` came first.
pub async fn hold_off(pacer: &dyn Pacer, wait: Duration, stop: &CancellationToken) -> bool {
    let hold = pacer.hold_off(Instant::now().into_std(), wait);
    tokio::select! {
        biased;
        _ = stop.cancelled() => false,
        () = hold => true,
    }
}

/// One call that may be repeated, paced (when a pacer is given) and retried as the
/// policy allows; raced against `stop`, since dropping it costs nothing.
pub async fn with_retries<T, E, F, Fut>(
    pacer: Option<&dyn Pacer>,
    policy: &RetryPolicy,
    stop: &CancellationToken,
    mut call: F,
) -> Result<T, CallFailure<E>>
where
    E: Retryable + std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = policy.backoff(rand::random());
    loop {
        if let Some(pacer) = pacer {
            if !take_slot(pacer, stop).await {
                return Err(CallFailure::Stopped);
            }
        }
        let result = tokio::select! {
            biased;
            _ = stop.cancelled() => return Err(CallFailure::Stopped),
            result = call() => result,
        };
        let err = match result {
            Ok(value) => return Ok(value),
            Err(err) => err,
        };
        let Some(retry_after) = err.retry() else {
            return Err(CallFailure::Failed(err));
        };
        let Some(wait) = backoff.next_wait(retry_after) else {
            return Err(CallFailure::Failed(err));
        };
        if let (Some(pacer), true) = (pacer, err.rate_limited()) {
            if !hold_off(pacer, wait, stop).await {
                return Err(CallFailure::Stopped);
            }
        }
        tracing::debug!(attempt = backoff.failures(), error = %err, ?wait, "retrying");
        if !sleep(wait, stop).await {
            return Err(CallFailure::Stopped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::pacer::CountingPacer;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn status(status: u16, retry_after: Option<Duration>) -> ApiError {
        ApiError::Status {
            status,
            message: String::new(),
            retry_after,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_the_tries_run_out() {
        let calls = AtomicU32::new(0);
        let policy = RetryPolicy::new(3);
        let stop = CancellationToken::new();
        let result: Result<(), _> = with_retries(None, &policy, &stop, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(status(502, None))
        })
        .await;
        assert!(matches!(result, Err(CallFailure::Failed(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejected_call_is_not_repeated() {
        let calls = AtomicU32::new(0);
        let stop = CancellationToken::new();
        let result: Result<(), _> = with_retries(None, &RetryPolicy::new(6), &stop, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(status(404, None))
        })
        .await;
        assert!(matches!(result, Err(CallFailure::Failed(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_up_to_its_cap() {
        let calls = AtomicU32::new(0);
        let stop = CancellationToken::new();
        let started = Instant::now();
        let result = with_retries(None, &RetryPolicy::new(6), &stop, || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 => Err(status(429, Some(Duration::from_secs(86_400)))),
                _ => Ok(()),
            }
        })
        .await;
        assert!(result.is_ok());
        let waited = started.elapsed();
        assert_eq!(waited, RetryPolicy::new(6).retry_after_cap, "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_cuts_a_hung_hold_off_short() {
        // Its shared schedule never hears back, as from a hung Redis.
        let pacer = CountingPacer::hanging();
        let stop = CancellationToken::new();
        let canceller = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            canceller.cancel();
        });
        let policy = RetryPolicy::new(6);
        let call = with_retries(Some(&pacer), &policy, &stop, || async {
            Err::<(), _>(status(429, Some(Duration::from_secs(5))))
        });
        let result = tokio::time::timeout(Duration::from_secs(60), call).await;
        assert!(
            matches!(result, Ok(Err(CallFailure::Stopped))),
            "{result:?}"
        );
        assert_eq!(pacer.holds(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_cuts_the_backoff_short() {
        let stop = CancellationToken::new();
        let canceller = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            canceller.cancel();
        });
        let result: Result<(), _> = with_retries(None, &RetryPolicy::new(6), &stop, || async {
            Err(status(429, Some(Duration::from_secs(60))))
        })
        .await;
        assert!(matches!(result, Err(CallFailure::Stopped)));
    }
}
