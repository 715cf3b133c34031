//! The pacer of one endpoint whose limit is shared through Redis, and its fallback.
//!
//! Within a process, one reservation at a time asks Redis (the others queue behind it,
//! in order): a process then costs Redis about one script run per slot, however many of
//! its calls wait. When Redis stays away for about a second, every endpoint of the
//! process falls back to its [`FallbackGrid`] for the rest of the run, and the process
//! says so once. It never goes back: a process pacing at the full limit through Redis
//! beside others still pacing at 1/N would together exceed the account's limit.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use redis::RedisError;
use tokio::sync::Semaphore;

use super::grid::FallbackGrid;
use super::script::{Answer, Ask};
use super::store::{is_away, AwayWaits, Store};
use crate::manifest::{Rate, RedisUrl, ShardPosition};
use crate::scheduler::pacer::Pacer;

/// How far ahead of Redis' now a slot may be handed out: room for a submit's intent
/// (50 ms) and a late wake-up. It also bounds what a process that falls back must wait
/// for, since no process got a slot from Redis later than this past its last answer.
pub const HORIZON: Duration = Duration::from_millis(250);

/// What the pacers of one process share: the store, and whether it is still used.
pub(super) struct Link {
    /// `None` when Redis was away from the start.
    pub store: Option<Store>,
    pub url: RedisUrl,
    pub position: ShardPosition,
    mode: Mutex<Mode>,
}

#[derive(Clone, Copy)]
enum Mode {
    Shared,
    Local(Fallen),
}

/// A process that fell back: local slots, none before `from`, laid on the wall clock
/// through `clock`.
#[derive(Clone, Copy)]
pub(super) struct Fallen {
    from: Instant,
    clock: WallClock,
}

/// An instant and the wall-clock time it is: the bridge between this process's clock
/// and the grid that every process lays on the wall clock.
#[derive(Clone, Copy)]
struct WallClock {
    instant: Instant,
    ns: u128,
}

impl WallClock {
    fn now() -> Self {
        let ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        WallClock {
            instant: Instant::now(),
            ns,
        }
    }

    fn wall(&self, at: Instant) -> u128 {
        match at.checked_duration_since(self.instant) {
            Some(later) => self.ns + later.as_nanos(),
            None => self
                .ns
                .saturating_sub(self.instant.duration_since(at).as_nanos()),
        }
    }

    fn instant(&self, ns: u128) -> Instant {
        let after = ns.saturating_sub(self.ns).min(u128::from(u64::MAX)) as u64;
        self.instant + Duration::from_nanos(after)
    }
}

impl Link {
    pub fn new(store: Option<Store>, url: RedisUrl, position: ShardPosition) -> Link {
        Link {
            store,
            url,
            position,
            mode: Mutex::new(Mode::Shared),
        }
    }

    fn mode(&self) -> MutexGuard<'_, Mode> {
        self.mode.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn local(&self) -> Option<Fallen> {
        match *self.mode() {
            Mode::Shared => None,
            Mode::Local(fallen) => Some(fallen),
        }
    }

    /// Stops using Redis for the rest of the run, and says so the first time. No local
    /// slot comes before the horizon has passed: Redis handed out none later than that.
    pub fn fall_back(&self, why: &str) -> Fallen {
        let mut mode = self.mode();
        if let Mode::Local(fallen) = *mode {
            return fallen;
        }
        let fallen = Fallen {
            from: Instant::now() + HORIZON,
            clock: WallClock::now(),
        };
        *mode = Mode::Local(fallen);
        let share = match self.position.count.get() {
            1 => "the full limits (no other process was declared on this key: limits.share or --shard)".to_owned(),
            n => format!(
                "1/{n} of each limit (its place: {} of {n}, from 0)",
                self.position.index
            ),
        };
        tracing::warn!(
            redis = %self.url,
            share = %self.position,
            "the shared rate limit's Redis {} is away ({why}): this process paces itself at {share} for the rest of the run",
            self.url
        );
        fallen
    }
}

/// One endpoint's limit, shared through Redis while it answers.
pub struct SharedPacer {
    link: Arc<Link>,
    key: String,
    period: Duration,
    tolerance: Duration,
    /// One reservation of this process asks Redis at a time.
    asking: Semaphore,
    fallback: Mutex<FallbackGrid>,
    /// The end of this process's latest hold-off: a slot reserved before it and earlier
    /// lapsed. (Another process's hold-off reaches this one through Redis, with its next
    /// reservation; a slot is handed out at most [`HORIZON`] ahead.)
    held_until: Mutex<Option<Instant>>,
}

impl SharedPacer {
    pub(super) fn new(
        link: Arc<Link>,
        key: String,
        rate: Rate,
        burst: std::num::NonZeroU32,
    ) -> Self {
        let period = crate::scheduler::pacer::spacing(rate).max(Duration::from_micros(1));
        let fallback = FallbackGrid::new(period.as_nanos(), link.position);
        SharedPacer {
            link,
            key,
            period,
            tolerance: period.saturating_mul(burst.get() - 1),
            asking: Semaphore::new(1),
            fallback: Mutex::new(fallback),
            held_until: Mutex::new(None),
        }
    }

    fn fallback(&self) -> MutexGuard<'_, FallbackGrid> {
        self.fallback.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot of the fallback grid at or after `earliest`, and a period after the last
    /// slot Redis can have handed out (by `from`).
    fn reserve_local(&self, earliest: Instant, fallen: Fallen) -> Instant {
        let Fallen { from, clock } = fallen;
        let slot = self
            .fallback()
            .reserve(clock.wall(earliest.max(from + self.period)));
        clock.instant(slot)
    }

    /// Runs the script, retrying a Redis that is away for about a second; `Err` once
    /// the process has fallen back (now, or meanwhile).
    async fn ask(&self, ask: Ask) -> Result<Answer, Fallen> {
        let mut backoff = AwayWaits::start();
        loop {
            if let Some(fallen) = self.link.local() {
                return Err(fallen);
            }
            let Some(store) = self.link.store.as_ref() else {
                return Err(self.link.fall_back("no connection"));
            };
            let err: RedisError = match store.run(&self.key, ask, self.period, self.tolerance).await
            {
                Ok(answer) => return Ok(answer),
                Err(err) => err,
            };
            // A Redis that turns misused in the middle of a run (its key overwritten) is
            // not worth stopping the night for: the fallback keeps under the limit.
            let wait = match is_away(&err) {
                true => backoff.next_wait(),
                false => None,
            };
            let Some(wait) = wait else {
                return Err(self.link.fall_back(&err.to_string()));
            };
            tracing::debug!(error = %err, ?wait, "the shared rate limit's Redis did not answer; trying again");
            tokio::time::sleep(wait).await;
        }
    }

    async fn reserve_shared(&self, earliest: Instant) -> Instant {
        // The lead the caller asked for holds from when the slot is handed out, however
        // long the turn took: a submit journals its intent in it.
        let lead = earliest.saturating_duration_since(Instant::now());
        let _turn = self.asking.acquire().await;
        loop {
            let ask = Ask::Reserve {
                lead: lead.max(earliest.saturating_duration_since(Instant::now())),
                horizon: HORIZON.max(lead),
            };
            match self.ask(ask).await {
                Ok(Answer::Slot(delay)) => return Instant::now() + delay,
                Ok(Answer::AskAgainIn(wait)) => tokio::time::sleep(wait).await,
                Err(fallen) => {
                    return self.reserve_local(earliest.max(Instant::now() + lead), fallen)
                }
            }
        }
    }
}

impl Pacer for SharedPacer {
    fn reserve(&self, earliest: Instant) -> BoxFuture<'_, Instant> {
        match self.link.local() {
            Some(fallen) => Box::pin(std::future::ready(self.reserve_local(earliest, fallen))),
            None => Box::pin(self.reserve_shared(earliest)),
        }
    }

    fn hold_off(&self, now: Instant, wait: Duration) -> BoxFuture<'_, ()> {
        // Kept locally at once, for the fallback, which would otherwise not know of it,
        // whether or not the caller waits for Redis to hear of it.
        let fallen = self.link.local();
        let clock = fallen.map_or_else(WallClock::now, |f| f.clock);
        self.fallback().hold_until(clock.wall(now + wait));
        {
            let mut held = self.held_until.lock().unwrap_or_else(|p| p.into_inner());
            *held = Some(held.map_or(now + wait, |until| until.max(now + wait)));
        }
        if fallen.is_some() {
            // A fallen-back process has nobody to tell.
            return Box::pin(std::future::ready(()));
        }
        Box::pin(async move {
            let left = (now + wait).saturating_duration_since(Instant::now());
            // Every process on the key backs off with this one.
            let _ = self.ask(Ask::Hold { wait: left }).await;
        })
    }

    fn lapsed(&self, slot: Instant, now: Instant) -> bool {
        let held = *self.held_until.lock().unwrap_or_else(|p| p.into_inner());
        crate::scheduler::pacer::lapsed(slot, now, self.period, held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hold-off whose future is dropped before Redis heard of it (a stop, a hung Redis)
    /// still holds this process's own slots back, for the fallback.
    #[tokio::test]
    async fn a_hold_off_holds_the_local_slots_back_before_redis_hears_of_it() {
        let url = RedisUrl::parse("redis://127.0.0.1:1").unwrap();
        let link = Arc::new(Link::new(None, url, ShardPosition::SOLE));
        let rate = Rate::parse("10/s").unwrap();
        let pacer = SharedPacer::new(link, "k".to_owned(), rate, std::num::NonZeroU32::MIN);
        let now = Instant::now();
        drop(pacer.hold_off(now, Duration::from_secs(2)));
        let slot = pacer.reserve(now).await;
        assert!(slot >= now + Duration::from_secs(2), "{:?}", slot - now);
    }
}
