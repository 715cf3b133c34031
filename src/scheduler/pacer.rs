//! Pacing of API calls: one [`Pacer`] per endpoint spaces calls evenly at the configured
//! rate. A trait, so tests can swap the governor-backed pacer (which sleeps on its own
//! clock, not tokio's) for a fake.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

use crate::manifest::Rate;

/// Waits until the next call of one endpoint may go out.
pub trait Pacer: Send + Sync {
    /// Resolves when a call may be made now; each resolution uses up one call.
    fn ready(&self) -> BoxFuture<'_, ()>;

    /// The provider said to wait (429 with `Retry-After`): no call before `wait` from now.
    fn hold_off(&self, wait: Duration);
}

/// A GCRA limiter at exactly `rate`, with `burst` calls allowed back to back.
pub struct RatePacer {
    limiter: DefaultDirectRateLimiter,
    hold_until: Mutex<Option<Instant>>,
}

impl RatePacer {
    /// A pacer for `rate` with bursts of at most `burst`.
    pub fn new(rate: Rate, burst: NonZeroU32) -> Self {
        let period = rate.period().max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)
            .expect("the period is above zero")
            .allow_burst(burst);
        RatePacer {
            limiter: RateLimiter::direct(quota),
            hold_until: Mutex::new(None),
        }
    }

    fn held_until(&self) -> Option<Instant> {
        let hold = *self.hold_until.lock().unwrap_or_else(|p| p.into_inner());
        hold.filter(|&until| until > Instant::now())
    }
}

impl Pacer for RatePacer {
    fn ready(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            loop {
                if let Some(until) = self.held_until() {
                    tokio::time::sleep_until(until).await;
                }
                self.limiter.until_ready().await;
                // A hold that began while we queued applies to this call too.
                if self.held_until().is_none() {
                    return;
                }
            }
        })
    }

    fn hold_off(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut hold = self.hold_until.lock().unwrap_or_else(|p| p.into_inner());
        *hold = Some(hold.map_or(until, |current| current.max(until)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spaces_calls_evenly_without_a_burst() {
        let pacer = RatePacer::new(Rate::parse("20/s").unwrap(), NonZeroU32::MIN);
        let start = std::time::Instant::now();
        for _ in 0..5 {
            pacer.ready().await;
        }
        // The first call goes at once, the next four 50 ms apart.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(195), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(400), "{elapsed:?}");
    }

    #[tokio::test]
    async fn hold_off_delays_the_next_call() {
        let pacer = RatePacer::new(Rate::parse("1000/s").unwrap(), NonZeroU32::MIN);
        pacer.ready().await;
        pacer.hold_off(Duration::from_millis(150));
        let start = std::time::Instant::now();
        pacer.ready().await;
        assert!(start.elapsed() >= Duration::from_millis(140));
    }
}
