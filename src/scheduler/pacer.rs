//! Pacing of API calls: one [`Pacer`] per endpoint hands out evenly spaced slots at the
//! configured rate (GCRA, the algorithm of governor and of Redis' `redis_rate`).
//!
//! A slot is *reserved* ahead of its time rather than waited for and taken, so that a
//! submit can make its intent durable in the journal just before its slot comes: the
//! call then goes out exactly on its slot, and the window in which a crash leaves its
//! outcome unknown is one fsync long instead of the whole wait. governor only grants a
//! slot that is due now, which is why the arithmetic lives here ([`Gcra`], pure).
//!
//! A slot reserved ahead can pass while the process cannot send: a stopped process, a
//! suspended VM or laptop. Every waiter then wakes at once; were each to send on its
//! passed slot, they would all go together and burst past the limit. So a caller asks
//! [`Pacer::lapsed`] when it wakes: a slot more than [`late_grace`] behind, or held back
//! by a hold-off told after it was reserved, is given up (lost, as any unused slot) and a
//! new one reserved.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use crate::manifest::Rate;

/// Hands out the call slots of one endpoint.
///
/// Both methods are futures because a shared limit asks a store (Redis) for its slots:
/// a reservation may take a round trip, or wait until the shared schedule has room. A
/// caller races them against its stop token; dropping a reservation loses at most its
/// slot, never gives it to two calls.
pub trait Pacer: Send + Sync {
    /// Reserves the next slot at or after `earliest`: the instant at which one call may
    /// go out. A slot reserved and not used is lost, never given to another call.
    fn reserve(&self, earliest: Instant) -> BoxFuture<'_, Instant>;

    /// The provider said to wait (429 with `Retry-After`): no slot before `now + wait`.
    /// This process's own slots are held back when the call returns; the future tells a
    /// shared schedule, and a caller races it against its stop token ([`hold_off`]).
    ///
    /// [`hold_off`]: super::retrying::hold_off
    fn hold_off(&self, now: Instant, wait: Duration) -> BoxFuture<'_, ()>;

    /// Whether `slot`, reserved earlier and waited for, may no longer be used at `now`:
    /// it passed more than [`late_grace`] ago (the process could not send: paused,
    /// starved), or a hold-off told since covers it. The caller then gives it up and
    /// reserves another.
    fn lapsed(&self, slot: Instant, now: Instant) -> bool;

    /// The call of `slot` is about to go out at `now`: `None` records it, and it goes;
    /// `Some(until)` says to wait until then first, because the call before it went out
    /// late and the spacing between the two must hold (then ask again). Only a pacer that
    /// sees every call of its limit can keep the spacing; the others let every call go.
    fn take(&self, slot: Instant, now: Instant) -> Option<Instant> {
        let _ = (slot, now);
        None
    }
}

/// The most a call may go out after its slot and still use it: half the spacing (a call
/// that late is still nearer its own slot than the next one's), and never more than
/// [`MAX_LATE`]. A slot later than this passed while the process could not send.
pub fn late_grace(period: Duration) -> Duration {
    (period / 2).clamp(MIN_LATE, MAX_LATE)
}

/// The least a call may be late on its slot, however fast the rate: a busy process wakes
/// a few milliseconds late, and at a thousand calls a second half the spacing is below
/// the timer's resolution, so every slot would lapse as it came and nothing would be
/// sent. 20 ms stays inside the spacing's margin for any window of 640 ms or more
/// ([`spacing`]).
pub const MIN_LATE: Duration = Duration::from_millis(20);

/// The longest a call may be late on its slot, whatever the spacing: past it, the process
/// was stopped or starved, not merely busy.
pub const MAX_LATE: Duration = Duration::from_millis(250);

/// How much wider than the limit's period the slots are spaced: 1/32. A call reaches
/// the provider a little after its slot (a busy machine wakes late, the answer of a
/// shared schedule takes a while), and processes that share a limit cannot see each
/// other's lateness; at exactly the period, a window of the provider's would then hold
/// one call too many (three processes at exactly 20/s drew five 429s in 150 submits from
/// a 20-per-second window). With the margin, any window of length W holds no more than
/// the limit allows as long as no call arrives more than W/32 (31 ms in a one-second
/// window) later than the one a window before it: that covers [`late_grace`] at 16
/// calls a second and more; slower rates keep their spacing within a process
/// ([`Pacer::take`]).
pub fn spacing(rate: Rate) -> Duration {
    let period = rate.period();
    period + period / 32
}

/// Whether `slot` lapsed at `now` for a limit spaced `period` apart whose latest hold-off
/// runs until `held_until`. Pure: the rule of [`Pacer::lapsed`] for every pacer.
pub fn lapsed(slot: Instant, now: Instant, period: Duration, held_until: Option<Instant>) -> bool {
    now.saturating_duration_since(slot) > late_grace(period)
        || held_until.is_some_and(|until| slot < until)
}

/// The generic cell rate algorithm over one "theoretical arrival time".
#[derive(Clone, Debug)]
pub struct Gcra {
    period: Duration,
    /// How far ahead of the theoretical arrival time a call may go: `(burst - 1) × period`.
    tolerance: Duration,
    /// The theoretical arrival time of the next call, when any call was made.
    tat: Option<Instant>,
    /// The end of the latest hold-off: a slot reserved before it and earlier than this
    /// lapsed.
    held_until: Option<Instant>,
    /// When the last call went out: a slot reserved before that call went late is held
    /// back to keep the spacing.
    last_taken: Option<Instant>,
}

impl Gcra {
    /// `rate`, with at most `burst` calls back to back.
    pub fn new(rate: Rate, burst: NonZeroU32) -> Self {
        Gcra::with_period(rate.period(), burst)
    }

    /// Calls `period` apart, with at most `burst` back to back.
    pub fn with_period(period: Duration, burst: NonZeroU32) -> Self {
        let period = period.max(Duration::from_nanos(1));
        Gcra {
            period,
            tolerance: period.saturating_mul(burst.get() - 1),
            tat: None,
            held_until: None,
            last_taken: None,
        }
    }

    /// Reserves the next slot at or after `now`.
    pub fn reserve(&mut self, now: Instant) -> Instant {
        let tat = self.tat.unwrap_or(now).max(now);
        let slot = tat.checked_sub(self.tolerance).unwrap_or(now).max(now);
        self.tat = Some(tat + self.period);
        slot
    }

    /// No slot before `until`.
    pub fn hold_until(&mut self, until: Instant) {
        self.held_until = Some(self.held_until.map_or(until, |held| held.max(until)));
        let tat = self.tat.map_or(until, |tat| tat.max(until));
        // With a burst, the slot is `tat - tolerance`: push the time so that it is `until`.
        self.tat = Some(tat.max(until + self.tolerance));
    }

    /// Whether `slot`, reserved from this schedule, lapsed at `now` ([`lapsed`]).
    pub fn lapsed(&self, slot: Instant, now: Instant) -> bool {
        lapsed(slot, now, self.period, self.held_until)
    }

    /// The call of a slot goes out at `now` ([`Pacer::take`]): without a burst, never
    /// sooner than a period after the call before it, which may have gone out late.
    pub fn take(&mut self, now: Instant) -> Option<Instant> {
        if self.tolerance.is_zero() {
            if let Some(due) = self.last_taken.map(|last| last + self.period) {
                if due > now {
                    return Some(due);
                }
            }
        }
        self.last_taken = Some(self.last_taken.map_or(now, |last| last.max(now)));
        None
    }
}

/// A [`Gcra`] behind a lock held for a few instructions.
pub struct RatePacer {
    gcra: Mutex<Gcra>,
}

impl RatePacer {
    /// A pacer for `rate` with bursts of at most `burst`, its slots [`spacing`] apart.
    pub fn new(rate: Rate, burst: NonZeroU32) -> Self {
        RatePacer {
            gcra: Mutex::new(Gcra::with_period(spacing(rate), burst)),
        }
    }

    fn gcra(&self) -> std::sync::MutexGuard<'_, Gcra> {
        self.gcra.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Pacer for RatePacer {
    fn reserve(&self, earliest: Instant) -> BoxFuture<'_, Instant> {
        let slot = self.gcra().reserve(earliest);
        Box::pin(std::future::ready(slot))
    }

    fn hold_off(&self, now: Instant, wait: Duration) -> BoxFuture<'_, ()> {
        self.gcra().hold_until(now + wait);
        Box::pin(std::future::ready(()))
    }

    fn lapsed(&self, slot: Instant, now: Instant) -> bool {
        self.gcra().lapsed(slot, now)
    }

    fn take(&self, _slot: Instant, now: Instant) -> Option<Instant> {
        self.gcra().take(now)
    }
}

/// A pacer for tests: every slot at once, and a count of its hold-offs.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct CountingPacer {
    holds: std::sync::atomic::AtomicU32,
    /// Whether a hold-off never finishes, as one told to a hung shared store.
    hangs: bool,
}

#[cfg(test)]
impl CountingPacer {
    /// A pacer whose hold-offs never finish.
    pub(crate) fn hanging() -> Self {
        CountingPacer {
            hangs: true,
            ..CountingPacer::default()
        }
    }

    /// How many hold-offs it was told.
    pub(crate) fn holds(&self) -> u32 {
        self.holds.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[cfg(test)]
impl Pacer for CountingPacer {
    fn reserve(&self, earliest: Instant) -> BoxFuture<'_, Instant> {
        Box::pin(std::future::ready(earliest))
    }

    fn hold_off(&self, _: Instant, _: Duration) -> BoxFuture<'_, ()> {
        self.holds.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match self.hangs {
            true => Box::pin(std::future::pending()),
            false => Box::pin(std::future::ready(())),
        }
    }

    fn lapsed(&self, _: Instant, _: Instant) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(text: &str) -> Rate {
        Rate::parse(text).unwrap()
    }

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn slots_are_evenly_spaced_without_a_burst() {
        let mut gcra = Gcra::new(rate("20/s"), NonZeroU32::MIN);
        let t0 = Instant::now();
        let slots: Vec<Duration> = (0..5).map(|_| gcra.reserve(t0) - t0).collect();
        assert_eq!(slots, [MS(0), MS(50), MS(100), MS(150), MS(200)]);
        // Idle time is not saved up: after a pause the next call goes at once, then 50 ms.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(gcra.reserve(later), later);
        assert_eq!(gcra.reserve(later) - later, MS(50));
    }

    #[test]
    fn a_burst_allows_that_many_calls_back_to_back_then_the_rate() {
        let mut gcra = Gcra::new(rate("10/s"), NonZeroU32::new(3).unwrap());
        let t0 = Instant::now();
        let slots: Vec<Duration> = (0..5).map(|_| gcra.reserve(t0) - t0).collect();
        assert_eq!(slots, [MS(0), MS(0), MS(0), MS(100), MS(200)]);
    }

    #[test]
    fn a_hold_off_moves_every_later_slot() {
        let mut gcra = Gcra::new(rate("10/s"), NonZeroU32::MIN);
        let t0 = Instant::now();
        assert_eq!(gcra.reserve(t0), t0);
        gcra.hold_until(t0 + MS(1000));
        assert_eq!(gcra.reserve(t0) - t0, MS(1000));
        assert_eq!(gcra.reserve(t0) - t0, MS(1100));
        // A hold that ends before the next slot changes nothing.
        gcra.hold_until(t0 + MS(500));
        assert_eq!(gcra.reserve(t0) - t0, MS(1200));
        let mut burst = Gcra::new(rate("10/s"), NonZeroU32::new(4).unwrap());
        burst.hold_until(t0 + MS(1000));
        assert_eq!(burst.reserve(t0) - t0, MS(1000));
    }

    /// Any window of the period's length holds at most `burst` slots, however the calls
    /// come: the property the provider's sliding windows check.
    #[test]
    fn no_window_ever_holds_more_slots_than_the_limit_allows() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for burst in [1u32, 2, 5] {
            let mut gcra = Gcra::new(rate("600/min"), NonZeroU32::new(burst).unwrap());
            let t0 = Instant::now();
            let mut now = t0;
            let mut slots = Vec::new();
            for _ in 0..2000 {
                now += MS(rng.random_range(0..150));
                if rng.random_range(0..20) == 0 {
                    gcra.hold_until(now + MS(rng.random_range(0..500)));
                }
                slots.push(gcra.reserve(now));
            }
            slots.sort();
            let window = Duration::from_secs(60);
            for (i, start) in slots.iter().enumerate() {
                let inside = slots[i..]
                    .iter()
                    .take_while(|s| **s < *start + window)
                    .count();
                assert!((inside as u32) < 600 + burst, "burst {burst}: {inside}");
            }
            for pair in slots.windows(2).skip(burst as usize) {
                assert!(pair[1] >= pair[0], "slots never go back in time");
            }
        }
    }

    #[test]
    fn a_slot_lapses_once_it_is_late_by_half_a_period_or_a_hold_covers_it() {
        let t0 = Instant::now();
        let mut gcra = Gcra::new(rate("120/min"), NonZeroU32::MIN);
        let slot = gcra.reserve(t0);
        assert!(!gcra.lapsed(slot, slot));
        assert!(!gcra.lapsed(slot, slot + MS(250)), "late, within the grace");
        assert!(gcra.lapsed(slot, slot + MS(251)));
        assert!(
            gcra.lapsed(slot, slot + Duration::from_secs(3)),
            "a frozen process"
        );
        // However slow the rate, a quarter of a second late is a process that was stopped.
        let slow = Gcra::new(rate("2/min"), NonZeroU32::MIN);
        assert!(slow.lapsed(t0, t0 + MS(251)));
        // Fast rates leave half their spacing.
        assert_eq!(late_grace(Duration::from_millis(50)), MS(25));
        // Faster ones keep the timer's due: a slot 10 µs apart must not lapse as it comes.
        assert_eq!(late_grace(Duration::from_micros(10)), MIN_LATE);
        // A hold-off told after the reservation covers the slot; one that ends before it
        // does not.
        let next = gcra.reserve(t0);
        gcra.hold_until(next - MS(1));
        assert!(!gcra.lapsed(next, next));
        gcra.hold_until(next + MS(1));
        assert!(gcra.lapsed(next, next));
        let after_hold = gcra.reserve(t0);
        assert!(!gcra.lapsed(after_hold, after_hold));
    }

    #[test]
    fn a_call_after_one_that_went_late_keeps_the_spacing() {
        let t0 = Instant::now();
        let mut gcra = Gcra::new(rate("120/min"), NonZeroU32::MIN);
        let (first, second) = (gcra.reserve(t0), gcra.reserve(t0));
        // The first went 100 ms late: the second waits as long, then goes.
        assert_eq!(gcra.take(first + MS(100)), None);
        assert_eq!(gcra.take(second), Some(second + MS(100)));
        assert_eq!(gcra.take(second + MS(100)), None);
        // With a burst, calls may go back to back.
        let mut burst = Gcra::new(rate("120/min"), NonZeroU32::new(3).unwrap());
        assert_eq!(burst.take(t0), None);
        assert_eq!(burst.take(t0), None);
    }
}
