//! The one retry path of calls that may be repeated (detail queries, uploads, downloads):
//! wait for the pacer's slot, call, ask the failure policy, back off (honouring a capped
//! `Retry-After`), all raced against a stop token. Submits never come through here:
//! whether a variant is submitted again is the run state's decision.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::pacer::{Pacer, MAX_LATE};
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
    loop {
        let Some(slot) = wait_for_slot(pacer, Duration::ZERO, stop).await else {
            return false;
        };
        match go_on_slot(pacer, slot, false, stop).await {
            Some(true) => return true,
            Some(false) => continue,
            None => return false,
        }
    }
}

/// At `slot`, just before its call: `Some(true)` when the call may go now (the pacer
/// recorded it), `Some(false)` when the slot lapsed and must be given up, `None` when
/// `stop` came first. Waits first when the call before went out late, to keep the
/// spacing ([`Pacer::take`]). `patient` (a submit whose intent is journaled) gives the
/// slot up only when a hold-off covers it or it is [`MAX_LATE`] behind.
pub async fn go_on_slot(
    pacer: &dyn Pacer,
    slot: Instant,
    patient: bool,
    stop: &CancellationToken,
) -> Option<bool> {
    loop {
        let now = Instant::now();
        let lapsed = match patient {
            false => pacer.lapsed(slot.into_std(), now.into_std()),
            // Only a hold-off or a stopped process: a slow fsync of the submit's intent
            // must never keep its call from going out, slot after slot.
            true => pacer.lapsed(slot.into_std(), slot.into_std()) || now - slot > MAX_LATE,
        };
        if lapsed {
            tracing::debug!(
                late_ms = (now - slot).as_millis() as u64,
                "a slot passed while the process could not send, or a hold-off covers it: given up for a new one"
            );
            return Some(false);
        }
        match pacer.take(slot.into_std(), now.into_std()) {
            None => return Some(true),
            Some(until) => {
                if !sleep_until(Instant::from_std(until), stop).await {
                    return None;
                }
            }
        }
    }
}

/// Reserves a slot at least `lead` from now and waits until `lead` before it; `None`
/// when `stop` comes first. A slot that lapsed meanwhile ([`Pacer::lapsed`]: it passed
/// while the process could not run, or a hold-off came since) is given up and another
/// reserved: woken together after a pause, the waiters then go out on fresh slots, spaced
/// as the limit wants, never together on their passed ones.
pub async fn wait_for_slot(
    pacer: &dyn Pacer,
    lead: Duration,
    stop: &CancellationToken,
) -> Option<Instant> {
    loop {
        let slot = reserve(pacer, Instant::now() + lead, stop).await?;
        if !sleep_until(slot - lead, stop).await {
            return None;
        }
        // Judged at the time the call would go out: `lead` from now, at the earliest.
        let due = (Instant::now() + lead).into_std();
        if !pacer.lapsed(slot.into_std(), due) {
            return Some(slot);
        }
        tracing::debug!(
            late_ms = due.saturating_duration_since(slot.into_std()).as_millis() as u64,
            "a slot passed while the process could not send, or a hold-off covers it: given up for a new one"
        );
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

    /// Eight waiters at 120/min, the process frozen for 3 s (the paused clock jumps, as
    /// the monotonic clock of a stopped process does): the slots that passed are given up
    /// and the waiters go out spaced as the limit wants, never together.
    #[tokio::test(start_paused = true)]
    async fn slots_that_passed_while_the_process_was_frozen_are_given_up() {
        use crate::manifest::Rate;
        use crate::scheduler::pacer::RatePacer;
        use std::sync::{Arc, Mutex};
        let pacer = Arc::new(RatePacer::new(
            Rate::parse("120/min").unwrap(),
            std::num::NonZeroU32::MIN,
        ));
        let stop = CancellationToken::new();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let t0 = Instant::now();
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let (pacer, stop, sent) = (Arc::clone(&pacer), stop.clone(), Arc::clone(&sent));
                tokio::spawn(async move {
                    assert!(take_slot(pacer.as_ref(), &stop).await);
                    sent.lock().unwrap().push(Instant::now() - t0);
                })
            })
            .collect();
        // Every waiter reserves its slot (0, 0.5 s, …, 3.5 s), then the process freezes.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        tokio::time::advance(Duration::from_secs(3)).await;
        for waiter in waiters {
            waiter.await.unwrap();
        }
        let mut sent = sent.lock().unwrap().clone();
        sent.sort();
        let spacing = crate::scheduler::pacer::spacing(Rate::parse("120/min").unwrap());
        let gaps: Vec<Duration> = sent.windows(2).map(|w| w[1] - w[0]).collect();
        // tokio's timer wakes on whole milliseconds, and each call is spaced from the
        // one before as it went: up to a millisecond more per call.
        let ms = Duration::from_millis(1);
        let near = |got: Duration, want: Duration| got >= want && got - want < ms * 8;
        assert!(
            gaps.iter().all(|gap| *gap + ms >= spacing),
            "sent at {sent:?}"
        );
        // Slots 1 to 5 passed during the freeze and were given up; 6 and 7, still ahead
        // when the process woke at 3 s, go on time; the given-up ones go after them.
        assert_eq!(sent[0], Duration::ZERO);
        assert!(near(sent[1], spacing * 6), "{sent:?}");
        assert!(near(sent[7], spacing * 12), "{sent:?}");
    }

    /// A hold-off told while waiters sleep on their slots is checked again when they wake:
    /// none goes before it ends.
    #[tokio::test(start_paused = true)]
    async fn a_hold_off_told_after_a_slot_was_reserved_holds_it_back() {
        use crate::manifest::Rate;
        use crate::scheduler::pacer::RatePacer;
        let pacer = RatePacer::new(Rate::parse("10/s").unwrap(), std::num::NonZeroU32::MIN);
        let stop = CancellationToken::new();
        let t0 = Instant::now();
        assert!(take_slot(&pacer, &stop).await);
        let waiting = take_slot(&pacer, &stop);
        let hold = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            hold_off(&pacer, Duration::from_secs(2), &stop).await;
        };
        let (taken, ()) = tokio::join!(waiting, hold);
        assert!(taken);
        assert!(
            Instant::now() - t0 >= Duration::from_millis(2010),
            "{:?}",
            Instant::now() - t0
        );
    }
}
