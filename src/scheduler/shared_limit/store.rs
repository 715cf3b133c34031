//! The connection to the shared limit's Redis, and what its errors mean: a Redis that
//! is *away* (refused, reset, timed out, loading) may come back and is waited for a
//! little, then done without; a Redis that answers but is *misused* (a wrong password, a
//! key of the wrong type, a user without the right to run scripts) is the user's to fix,
//! and stops the run before anything is sent.

use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, Script};

use super::script::{Answer, Ask, LUA};
use crate::api::retry::{Backoff, RetryPolicy};
use crate::manifest::RedisUrl;

/// How long one connection attempt, or one answer, may take.
const TIMEOUT: Duration = Duration::from_secs(1);

/// How long a Redis that does not answer is tried, at least, before it is done without:
/// every process on the key outlasts a blip shorter than this alike, rather than some
/// falling back and others not (which would exceed the limit).
pub const AWAY_FOR: Duration = Duration::from_secs(1);

/// The usual backoff, short: its jittered waits space the tries at a Redis that is away.
pub fn away_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 20,
        base: Duration::from_millis(100),
        cap: Duration::from_millis(300),
        retry_after_cap: Duration::from_millis(300),
    }
}

/// The waits between the tries at a Redis that is away, from the first try on: jittered
/// as [`away_policy`]'s, until [`AWAY_FOR`] has passed; then `None`, and the caller falls
/// back.
pub struct AwayWaits {
    since: Instant,
    backoff: Backoff,
}

impl AwayWaits {
    /// Counting from now: call it before the first try.
    pub fn start() -> AwayWaits {
        AwayWaits {
            since: Instant::now(),
            backoff: away_policy().backoff(rand::random()),
        }
    }

    /// The wait before the next try, after a try that found Redis away.
    pub fn next_wait(&mut self) -> Option<Duration> {
        away_wait(self.since.elapsed(), &mut self.backoff)
    }
}

/// The wait before the next try at a Redis away for `waited` so far: the backoff's (its
/// cap once its tries ran out), none past [`AWAY_FOR`], so that the last try comes when
/// it has passed; `None` from then on.
fn away_wait(waited: Duration, backoff: &mut Backoff) -> Option<Duration> {
    let left = AWAY_FOR
        .checked_sub(waited)
        .filter(|left| !left.is_zero())?;
    let wait = backoff.next_wait(None).unwrap_or(away_policy().cap);
    Some(wait.min(left))
}

/// Whether `err` says the Redis is away (worth waiting for) rather than misused.
pub fn is_away(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || matches!(
            err.code(),
            Some("LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN" | "CLUSTERDOWN")
        )
}

/// The rights the shared limit needs: the script's commands, and the two that run it.
const NOPERM_HINT: &str =
    " (hint: the Redis user needs GET, SET, TIME, EVALSHA and SCRIPT LOAD on stembatch:limit:*)";

/// A hint for a misused Redis, when its fix is known.
pub fn hint(err: &RedisError) -> &'static str {
    match (err.kind(), err.code()) {
        (ErrorKind::AuthenticationFailed, _) | (_, Some("NOAUTH" | "WRONGPASS")) => {
            " (hint: check the password in limits.redis_url or STEMBATCH_REDIS_URL: redis://:PASSWORD@host:6379)"
        }
        (_, Some("WRONGTYPE")) => {
            " (hint: another program uses the same key names in this Redis database: give stembatch a database of its own, e.g. redis://host:6379/5)"
        }
        (_, Some("READONLY")) => {
            " (hint: this Redis is a read-only replica: point limits.redis_url or STEMBATCH_REDIS_URL at its primary)"
        }
        (_, Some("OOM")) => {
            " (hint: this Redis is out of memory and evicts nothing: raise maxmemory, or set maxmemory-policy volatile-lru)"
        }
        (_, Some("NOPERM")) => NOPERM_HINT,
        // A command the script runs and the user may not: Redis answers ERR, no code of
        // its own.
        (_, Some("ERR")) if err.detail().is_some_and(|d| d.contains("can't run this command")) => {
            NOPERM_HINT
        }
        (_, Some("STEMBATCH")) => {
            " (hint: another program wrote this key: give stembatch a Redis database of its own, e.g. redis://host:6379/5)"
        }
        _ => "",
    }
}

/// A connection to the shared limit's Redis with the script loaded on first use.
#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    script: Script,
}

impl Store {
    /// Connects to `url` (one attempt, with the connection manager's own quick retry).
    pub async fn connect(url: &RedisUrl) -> Result<Store, RedisError> {
        let client = redis::Client::open(url.expose())?;
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(200))
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT));
        let conn = ConnectionManager::new_with_config(client, config).await?;
        Ok(Store {
            conn,
            script: Script::new(LUA),
        })
    }

    /// `PING`: the password and the connection work.
    pub async fn ping(&self) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
    }

    /// Runs the script's check for `key`, writing to `scratch` ([`Ask::Check`]).
    pub async fn check(&self, key: &str, scratch: &str) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.script.key(key);
        invocation.key(scratch);
        for arg in Ask::Check.args(Duration::from_secs(1), Duration::ZERO) {
            invocation.arg(arg);
        }
        invocation.invoke_async::<i64>(&mut conn).await.map(drop)
    }

    /// Runs the script once for `key`.
    pub async fn run(
        &self,
        key: &str,
        ask: Ask,
        period: Duration,
        tolerance: Duration,
    ) -> Result<Answer, RedisError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.script.key(key);
        for arg in ask.args(period, tolerance) {
            invocation.arg(arg);
        }
        let micros: i64 = invocation.invoke_async(&mut conn).await?;
        Ok(Answer::of(micros))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With tries that fail at once, the waits add up to [`AWAY_FOR`] whatever the
    /// jitter: full jitter alone (four tries) waited about 0.35 s on average.
    #[test]
    fn a_redis_away_is_tried_for_a_second_whatever_the_jitter() {
        for seed in 1..200 {
            let mut backoff = away_policy().backoff(seed);
            let mut waited = Duration::ZERO;
            let mut tries = 1;
            while let Some(wait) = away_wait(waited, &mut backoff) {
                assert!(wait <= away_policy().cap, "seed {seed}: {wait:?}");
                waited += wait;
                tries += 1;
            }
            assert_eq!(waited, AWAY_FOR, "seed {seed}");
            assert!(tries >= 4, "seed {seed}: {tries} tries");
        }
        // A try that itself took the second (a hung Redis) is the last.
        let mut backoff = away_policy().backoff(1);
        assert_eq!(away_wait(AWAY_FOR, &mut backoff), None);
    }
}
