//! Setting up the shared limit at the start of a run: the check that a misused Redis
//! fails before anything is sent, the wait for a Redis that is away, and the pacers of the
//! process. It decides nothing about a reservation ([`super::pacer`] does).

use std::sync::Arc;

use redis::RedisError;

use super::keys::limit_key;
use super::pacer::{Link, SharedPacer};
use super::store::{hint, is_away, AwayWaits, Store};
use crate::manifest::{RedisUrl, RedisUrlSource, RunSettings, ShardPosition};
use crate::scheduler::Pacers;

/// The names of the endpoints' limits, as their keys end.
const ENDPOINTS: [&str; 3] = ["submit", "detail", "upload"];

/// A Redis that answers but cannot be used as configured: the run stops before it sends
/// anything (exit 2).
#[derive(Debug, thiserror::Error)]
#[error(
    "the shared rate limit's Redis {url} (from {from}) cannot be used: {message}; nothing was sent"
)]
pub struct SharedLimitError {
    /// Shown without its password.
    pub url: RedisUrl,
    /// Where the URL was given: the manifest or the environment.
    pub from: RedisUrlSource,
    /// What Redis said, with a hint when the fix is known.
    pub message: String,
}

/// The pacers of a process whose limits are shared through the Redis at `url` (given
/// in `from`) by every process on the API key named `account_id`
/// ([`super::account_id`]); `position` is this process's place among them, for the
/// fallback. Checks Redis first (its password, the keys' types, that the script may
/// read, write and tell the time) and fails on a misused one; a Redis that stays away
/// for about a second gives pacers that are fallen back already (and it is said).
pub async fn shared_pacers(
    url: &RedisUrl,
    from: RedisUrlSource,
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
                from,
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
