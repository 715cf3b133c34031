//! The account's limits shared between processes through Redis (`[limits] redis_url`,
//! `STEMBATCH_REDIS_URL`): every process on one API key takes its submit, poll and upload
//! slots from one GCRA per endpoint in Redis, so that several hosts or cron jobs together
//! keep to what one process alone would.
//!
//! What a user relies on: the keys name a hash of the API key, never the key
//! ([`keys`]); a Redis that answers but is misused stops the run before anything is sent
//! ([`SharedLimitError`], exit 2); a Redis that is away is waited for briefly, then each
//! process paces at 1/N of each limit on a grid shared through the wall clock ([`grid`]),
//! N and its place given by [`ShardPosition`](crate::manifest::ShardPosition), and says so once. The local pacer stays
//! the default when no Redis is configured.

pub mod grid;
pub mod keys;
mod pacer;
pub mod script;
mod setup;
mod store;

pub use keys::{account_id, limit_key};
pub use pacer::{SharedPacer, HORIZON};
pub use setup::{shared_pacers, SharedLimitError};
