//! The failure policy as data: which outcomes are retried, how long to wait, and which
//! stop the whole account. Pure: no clock; the randomness of the jitter comes from the
//! caller's seed.
//!
//! Every call that may be repeated (detail queries, uploads, downloads) goes through one
//! [`Backoff`] made from one [`RetryPolicy`]; submits are never repeated here: whether a
//! variant is submitted again is the run state's decision.

use std::time::Duration;

use super::error::ApiError;

/// Whether repeating a call can create something twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallKind {
    /// Reads and downloads: repeating them is harmless.
    Idempotent,
    /// A submit: creates and bills a task, and the API has no idempotency key.
    Submit,
}

/// Why the account cannot go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountStop {
    /// 401/403: the key is missing, wrong or revoked.
    BadKey,
    /// 402: no credits left.
    NoCredits,
    /// The bucket of `upload.mode = "s3"` refused its credentials (401/403): no stem can
    /// get a URL, so nothing is submitted; the provider's key still works.
    StorageRefused,
}

/// What to do after a failed call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Try again, not before `after` when the provider said so.
    Retry {
        /// The provider's `Retry-After`.
        after: Option<Duration>,
    },
    /// The request itself is wrong (400, 404, 422): trying again gives the same answer.
    Reject,
    /// A submit may or may not have created a task: never repeated blindly.
    OutcomeUnknown,
    /// A submit answered 2xx with a body that could not be read: the task may well exist
    /// and the provider's API changed shape, so nothing more should be submitted.
    Unreadable,
    /// The account cannot go on.
    Stop(AccountStop),
}

/// Classifies one failed call.
///
/// A submit is repeated only when the failure proves no task was created: no connection
/// was made, the provider rate-limited it (429), or said it is unavailable (503, which the
/// provider answers before it accepts work). Any other server error, a timeout or a broken
/// connection leaves the outcome unknown.
pub fn classify(err: &ApiError, kind: CallKind) -> Verdict {
    let status = match err {
        ApiError::Connect(_) => return Verdict::Retry { after: None },
        ApiError::Local(_) => return Verdict::Reject,
        ApiError::Timeout | ApiError::Transport(_) => {
            return match kind {
                CallKind::Idempotent => Verdict::Retry { after: None },
                CallKind::Submit => Verdict::OutcomeUnknown,
            }
        }
        ApiError::Decode(_)
        | ApiError::NotApi {
            status: 200..=299, ..
        } => {
            return match kind {
                CallKind::Idempotent => Verdict::Retry { after: None },
                CallKind::Submit => Verdict::Unreadable,
            }
        }
        ApiError::NotApi { status, .. } => *status,
        ApiError::Status {
            status,
            retry_after,
            ..
        } => match status {
            429 | 503 => {
                return Verdict::Retry {
                    after: *retry_after,
                }
            }
            _ => *status,
        },
    };
    match (status, kind) {
        (401 | 403, _) => Verdict::Stop(AccountStop::BadKey),
        (402, _) => Verdict::Stop(AccountStop::NoCredits),
        (500..=599, CallKind::Idempotent) => Verdict::Retry { after: None },
        (500..=599, CallKind::Submit) => Verdict::OutcomeUnknown,
        (408, CallKind::Idempotent) => Verdict::Retry { after: None },
        (408, CallKind::Submit) => Verdict::OutcomeUnknown,
        _ => Verdict::Reject,
    }
}

/// Whether the provider rate-limited the call (429): the whole endpoint should slow down.
pub fn is_rate_limited(err: &ApiError) -> bool {
    matches!(err, ApiError::Status { status: 429, .. })
}

/// How often and how patiently one call is tried.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub max_attempts: u32,
    /// The first backoff's ceiling.
    pub base: Duration,
    /// No backoff is longer than this.
    pub cap: Duration,
    /// No `Retry-After` is honoured past this: a provider that answers `Retry-After:
    /// 86400` must not park the night.
    pub retry_after_cap: Duration,
}

impl RetryPolicy {
    /// The policy of a run with `max_attempts` tries.
    pub fn new(max_attempts: u32) -> Self {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            base: Duration::from_millis(200),
            cap: Duration::from_secs(30),
            retry_after_cap: Duration::from_secs(300),
        }
    }

    /// The waits between the tries of one call, jittered from `seed`.
    pub fn backoff(&self, seed: u64) -> Backoff {
        Backoff {
            policy: *self,
            failures: 0,
            rng: seed | 1,
        }
    }

    /// Whether another try follows the `attempt`-th (1-based).
    pub fn allows_another(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }

    /// The wait after the `attempt`-th try failed: capped exponential backoff with full
    /// jitter (`unit` in 0..1 picks the point), and never shorter than `retry_after` (itself
    /// capped at `retry_after_cap`).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(16);
        let ceiling = self.base.saturating_mul(1 << exponent).min(self.cap);
        let jittered = ceiling.mul_f64(unit.clamp(0.0, 1.0));
        let asked = retry_after.unwrap_or_default().min(self.retry_after_cap);
        jittered.max(asked)
    }
}

/// The waits between the tries of one call: `next_wait` after each failure, `None` once
/// the policy allows no more tries.
#[derive(Clone, Debug)]
pub struct Backoff {
    policy: RetryPolicy,
    failures: u32,
    rng: u64,
}

impl Backoff {
    /// The wait before the next try, after a failure whose answer asked for
    /// `retry_after`; `None` when that failure was the last try allowed.
    pub fn next_wait(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        self.failures += 1;
        if !self.policy.allows_another(self.failures) {
            return None;
        }
        let unit = self.next_unit();
        Some(self.policy.delay(self.failures, retry_after, unit))
    }

    /// Tries that failed so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// xorshift64: jitter needs spread, not quality, and a seed makes tests repeatable.
    fn next_unit(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.next_wait(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> ApiError {
        ApiError::Status {
            status,
            message: String::new(),
            retry_after: None,
        }
    }

    #[test]
    fn submits_repeat_only_when_no_task_can_exist() {
        use CallKind::*;
        let retry = Verdict::Retry { after: None };
        assert_eq!(
            classify(&ApiError::Connect("refused".into()), Submit),
            retry
        );
        assert_eq!(classify(&status(503), Submit), retry);
        assert_eq!(classify(&status(429), Submit), retry);
        assert_eq!(classify(&status(500), Submit), Verdict::OutcomeUnknown);
        assert_eq!(classify(&status(502), Submit), Verdict::OutcomeUnknown);
        assert_eq!(
            classify(&ApiError::Timeout, Submit),
            Verdict::OutcomeUnknown
        );
        assert_eq!(
            classify(&ApiError::Transport("reset".into()), Submit),
            Verdict::OutcomeUnknown
        );
        assert_eq!(classify(&status(422), Submit), Verdict::Reject);
        assert_eq!(classify(&status(400), Submit), Verdict::Reject);
        assert_eq!(
            classify(&ApiError::Decode("no task_id".into()), Submit),
            Verdict::Unreadable
        );
        assert_eq!(
            classify(&ApiError::Decode("no task_id".into()), Idempotent),
            Verdict::Retry { after: None }
        );
    }

    #[test]
    fn reads_repeat_on_every_transient_failure() {
        use CallKind::*;
        let retry = Verdict::Retry { after: None };
        for err in [
            status(500),
            status(502),
            status(504),
            ApiError::Timeout,
            ApiError::Transport("x".into()),
        ] {
            assert_eq!(classify(&err, Idempotent), retry, "{err:?}");
        }
        assert_eq!(classify(&status(404), Idempotent), Verdict::Reject);
    }

    #[test]
    fn account_errors_stop_everything() {
        for kind in [CallKind::Submit, CallKind::Idempotent] {
            assert_eq!(
                classify(&status(401), kind),
                Verdict::Stop(AccountStop::BadKey)
            );
            assert_eq!(
                classify(&status(403), kind),
                Verdict::Stop(AccountStop::BadKey)
            );
            assert_eq!(
                classify(&status(402), kind),
                Verdict::Stop(AccountStop::NoCredits)
            );
        }
    }

    #[test]
    fn retry_after_is_honoured_and_carried() {
        let err = ApiError::Status {
            status: 429,
            message: String::new(),
            retry_after: Some(Duration::from_secs(7)),
        };
        let verdict = classify(&err, CallKind::Submit);
        assert_eq!(
            verdict,
            Verdict::Retry {
                after: Some(Duration::from_secs(7))
            }
        );
        let policy = RetryPolicy::new(6);
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(7)), 0.5),
            Duration::from_secs(7)
        );
    }

    #[test]
    fn a_huge_retry_after_is_capped() {
        let policy = RetryPolicy::new(6);
        let day = Some(Duration::from_secs(86_400));
        assert_eq!(policy.delay(1, day, 0.0), policy.retry_after_cap);
    }

    #[test]
    fn the_backoff_iterator_stops_after_the_last_try_and_stays_under_the_ceilings() {
        let policy = RetryPolicy::new(4);
        let waits: Vec<Duration> = policy.backoff(7).collect();
        assert_eq!(waits.len(), 3, "4 tries: 3 waits between them");
        for (i, wait) in waits.iter().enumerate() {
            assert!(*wait <= policy.base * (1 << i), "{i}: {wait:?}");
        }
        assert_ne!(
            policy.backoff(7).collect::<Vec<_>>(),
            policy.backoff(8).collect::<Vec<_>>(),
            "the seed picks the jitter"
        );
        let mut backoff = policy.backoff(1);
        assert_eq!(
            backoff.next_wait(Some(Duration::from_secs(3))),
            Some(Duration::from_secs(3))
        );
        assert_eq!(backoff.failures(), 1);
    }

    #[test]
    fn backoff_grows_to_its_cap_with_full_jitter() {
        let policy = RetryPolicy::new(6);
        assert_eq!(policy.delay(1, None, 1.0), Duration::from_millis(200));
        assert_eq!(policy.delay(3, None, 1.0), Duration::from_millis(800));
        assert_eq!(policy.delay(30, None, 1.0), Duration::from_secs(30));
        assert_eq!(policy.delay(3, None, 0.0), Duration::ZERO);
        assert!(policy.allows_another(5));
        assert!(!policy.allows_another(6));
    }
}
