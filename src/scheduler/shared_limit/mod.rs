//! The account's limits shared between processes through Redis (`[limits] redis_url`,
//! `STEMBATCH_REDIS_URL`): every process on one API key takes its submit, poll and upload
//! slots from one GCRA per endpoint in Redis, so that several hosts or cron jobs together
//! keep to what one process alone would.
//!
//! What a user relies on: the keys name a hash of the API key, never the key
//! ([`keys`]); a Redis that answers but is misused stops the run before anything is sent
//! ([`SharedLimitError`], exit 2); a Redis that is away is waited for briefly, then each
//! process paces at 1/N of each limit on a grid shared through the wall clock ([`grid`]),
//! N and its place given by [`ShardPosition`], and says so once. The local pacer stays
//! the default when no Redis is configured.

pub mod grid;
pub mod keys;
mod pacer;
pub mod script;
mod store;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::RedisError;

use super::Pacers;
use crate::manifest::{RedisUrl, RunSettings, ShardPosition};
pub use keys::{account_id, limit_key};
use pacer::Link;
pub use pacer::SharedPacer;
use store::{hint, is_away, AwayWaits, Store};

/// How far ahead of Redis' now a slot may be handed out: room for a submit's intent
/// (50 ms) and a late wake-up. It also bounds what a process that falls back must wait
/// for, since no process got a slot from Redis later than this past its last answer.
pub const HORIZON: Duration = Duration::from_millis(250);

/// The names of the endpoints' limits, as their keys end.
const ENDPOINTS: [&str; 3] = ["submit", "detail", "upload"];

/// A Redis that answers but cannot be used as configured: the run stops before it sends
/// anything (exit 2).
#[derive(Debug)]
pub struct SharedLimitError {
    /// Shown without its password.
    pub url: RedisUrl,
    /// What Redis said, with a hint when the fix is known.
    pub message: String,
}

impl fmt::Display for SharedLimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the shared rate limit's Redis {} cannot be used: {}; nothing was sent",
            self.url, self.message
        )
    }
}

impl std::error::Error for SharedLimitError {}

/// The pacers of a process whose limits are shared through the Redis at `url` by every
/// process on the API key named `account_id` ([`account_id`]); `position` is this
/// process's place among them, for the fallback. Checks Redis first (its password, the
/// keys' types, the script) and fails on a misused one; a Redis that stays away through
/// about a second gives pacers that are fallen back already (and it is said).
pub async fn shared_pacers(
    url: &RedisUrl,
    account_id: &str,
    position: ShardPosition,
    settings: &RunSettings,
) -> Result<Pacers, SharedLimitError> {
    let keys = ENDPOINTS.map(|endpoint| limit_key(account_id, endpoint));
    let scratch = limit_key(account_id, "check");
    let mut backoff = AwayWaits::start();
    let mut away = String::new();
    let store = loop {
        let err = match check(url, &keys, &scratch).await {
            Ok(store) => break Some(store),
            Err(err) => err,
        };
        away = err.to_string();
        if !is_away(&err) {
            return Err(SharedLimitError {
                url: url.clone(),
                message: format!("{err}{}", hint(&err)),
            });
        }
        match backoff.next_wait() {
            Some(wait) => tokio::time::sleep(wait).await,
            None => break None,
        }
    };
    let link = Arc::new(Link::new(store, url.clone(), position));
    match link.store {
        Some(_) => tracing::info!(redis = %url, "the rate limits are shared through Redis {url}"),
        None => {
            link.fall_back(&format!("at the start: {away}"));
        }
    }
    let [submit, detail, upload] = keys;
    let pacer = |key, rate| {
        Arc::new(SharedPacer::new(
            Arc::clone(&link),
            key,
            rate,
            settings.burst,
        ))
    };
    Ok(Pacers {
        submit: pacer(submit, settings.submit_rate),
        poll: pacer(detail, settings.poll_rate),
        upload: pacer(upload, settings.upload_rate),
    })
}

/// Connects, pings and runs the script's check on every key, which reads and writes as a
/// reservation does (the writes to the account's scratch key, `check`): a misused Redis
/// says so here, before anything is sent.
async fn check(url: &RedisUrl, keys: &[String], scratch: &str) -> Result<Store, RedisError> {
    let store = Store::connect(url).await?;
    store.ping().await?;
    for key in keys {
        store.check(key, scratch).await?;
    }
    Ok(store)
}
