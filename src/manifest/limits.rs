//! `[limits]`: where the account's limits are shared between processes (a Redis URL),
//! and this process's place among the processes that share them, validated.
//!
//! The URL may hold a password: it is kept whole for connecting and shown only redacted
//! ([`RedisUrl`]'s `Display` and `Debug`), in problems and logs alike.

use std::fmt;
use std::num::NonZeroU32;

use super::raw::RawLimits;
use super::validate::Problems;

/// The environment variable that names the Redis of the shared limits; it overrides
/// `limits.redis_url`, as `VIDGO_BASE_URL` overrides `api.base_url`.
pub const REDIS_URL_ENV: &str = "STEMBATCH_REDIS_URL";

/// A Redis URL that the `redis` crate of this build can connect to: `redis://` (TCP) or
/// `unix://` / `redis+unix://` (a socket). Shown with its password redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Checks `text`; the error is a lowercase fragment that never holds a password.
    pub fn parse(text: &str) -> Result<RedisUrl, String> {
        let shown = redact(text);
        let url = url::Url::parse(text.trim())
            .map_err(|err| format!("{shown:?} is not a URL ({err})"))?;
        match url.scheme() {
            "redis" if url.host_str().is_some_and(|h| !h.is_empty()) => {}
            "redis" => return Err(format!("{shown:?} names no host (expected e.g. \"redis://redis.example.com:6379/0\")")),
            "unix" | "redis+unix" if !url.path().is_empty() => {}
            "rediss" => return Err(format!("{shown:?}: TLS (rediss://) is not supported by this build (hint: reach Redis over a private network or a TLS tunnel, and use redis://)")),
            other => return Err(format!("{shown:?} has the scheme {other:?} (expected redis:// or unix://)")),
        }
        Ok(RedisUrl(text.trim().to_owned()))
    }

    /// The URL as written, password included: for connecting only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

/// `text` with any password of a URL replaced by `***`; text that is no URL is shown
/// only up to its `@`, in case a password precedes it.
pub fn redact(text: &str) -> String {
    match url::Url::parse(text.trim()) {
        Ok(mut url) if url.password().is_some() => {
            if url.set_password(Some("***")).is_ok() {
                return url.to_string();
            }
            "<a URL with a password>".to_owned()
        }
        Ok(_) => text.trim().to_owned(),
        Err(_) => match text.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => text.trim().to_owned(),
        },
    }
}

/// This process's place among `count` processes (0-based `index`) that share one API
/// key: the shard of a sharded run, or `limits.share` of a manifest. When the shared
/// limit's store is away, each falls back to `1/count` of the limit, its slots offset by
/// `index/count` of its interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardPosition {
    /// 0-based, below `count`.
    pub index: u32,
    /// How many processes share the key.
    pub count: NonZeroU32,
}

impl ShardPosition {
    /// The one process of an unsharded run: 0 of 1.
    pub const SOLE: ShardPosition = ShardPosition {
        index: 0,
        count: NonZeroU32::MIN,
    };

    /// `index` of `count`; an error when `index` is not below `count`.
    pub fn new(index: u32, count: u32) -> Result<ShardPosition, String> {
        let count = NonZeroU32::new(count).ok_or("the count must be at least 1")?;
        if index >= count.get() {
            return Err(format!(
                "the index {index} is not below the count {count} (indexes are 0-based)"
            ));
        }
        Ok(ShardPosition { index, count })
    }

    /// Parses `I/N` (0-based I, I < N).
    pub fn parse(text: &str) -> Result<ShardPosition, String> {
        let expected =
            || format!("{text:?} is not I/N (expected e.g. \"0/3\": the first of three)");
        let (index, count) = text.split_once('/').ok_or_else(expected)?;
        let index = index.trim().parse().map_err(|_| expected())?;
        let count = count.trim().parse().map_err(|_| expected())?;
        ShardPosition::new(index, count).map_err(|problem| format!("{text:?}: {problem}"))
    }

    /// Shard `self` of a manifest that itself holds the place `share` among the manifests
    /// on one key: shard I of N of share i of m is process i·N + I of m·N.
    pub fn within(self, share: ShardPosition) -> ShardPosition {
        // Saturating: counts past u32 are nonsense, not worth a panic.
        let count = share.count.saturating_mul(self.count);
        let index = share
            .index
            .saturating_mul(self.count.get())
            .saturating_add(self.index)
            .min(count.get() - 1);
        ShardPosition { index, count }
    }
}

impl fmt::Display for ShardPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Where the Redis URL of the shared limits was given, named as the user wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedisUrlSource {
    /// `limits.redis_url` of the manifest.
    Manifest,
    /// The environment variable [`REDIS_URL_ENV`].
    Env,
}

impl fmt::Display for RedisUrlSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RedisUrlSource::Manifest => "limits.redis_url",
            RedisUrlSource::Env => REDIS_URL_ENV,
        })
    }
}

/// `[limits]`, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LimitSettings {
    /// `limits.redis_url`: the limits are shared through this Redis.
    pub redis_url: Option<RedisUrl>,
    /// `limits.share`: this manifest's place among the manifests run on one key.
    pub share: Option<ShardPosition>,
}

impl LimitSettings {
    /// The Redis to use: `STEMBATCH_REDIS_URL` when set and not empty (`env`), else
    /// `limits.redis_url`; with where it was given. The error names the variable.
    pub fn redis_url(
        &self,
        env: Option<&str>,
    ) -> Result<Option<(RedisUrl, RedisUrlSource)>, String> {
        match env.map(str::trim).filter(|v| !v.is_empty()) {
            Some(text) => RedisUrl::parse(text)
                .map(|url| Some((url, RedisUrlSource::Env)))
                .map_err(|problem| format!("{REDIS_URL_ENV}: {problem}")),
            None => Ok(self
                .redis_url
                .clone()
                .map(|url| (url, RedisUrlSource::Manifest))),
        }
    }
}

pub(super) fn limits(raw: Option<&RawLimits>, problems: &mut Problems) -> LimitSettings {
    let Some(raw) = raw else {
        return LimitSettings::default();
    };
    let redis_url =
        raw.redis_url
            .as_ref()
            .and_then(|value| match RedisUrl::parse(value.get_ref()) {
                Ok(url) => Some(url),
                Err(message) => {
                    problems.push(value.span(), "limits.redis_url", message);
                    None
                }
            });
    let share = raw
        .share
        .as_ref()
        .and_then(|value| match ShardPosition::parse(value.get_ref()) {
            Ok(share) => Some(share),
            Err(message) => {
                problems.push(value.span(), "limits.share", message);
                None
            }
        });
    LimitSettings { redis_url, share }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls_are_checked_and_never_show_their_password() {
        let url = RedisUrl::parse("redis://:s3cret@redis.example.com:6380/2").unwrap();
        assert_eq!(url.expose(), "redis://:s3cret@redis.example.com:6380/2");
        assert_eq!(url.to_string(), "redis://:***@redis.example.com:6380/2");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert!(RedisUrl::parse("unix:///run/redis.sock").is_ok());
        for (text, says) in [
            ("https://redis.example.com", "expected redis:// or unix://"),
            ("rediss://:s3cret@redis.example.com", "TLS"),
            ("redis://", "names no host"),
            ("localhost:6379", "expected redis://"),
            ("not a url :s3cret@host", "not a URL"),
        ] {
            let err = RedisUrl::parse(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
            assert!(!err.contains("s3cret"), "{text}: {err}");
        }
    }

    #[test]
    fn the_environment_overrides_the_manifest() {
        let settings = LimitSettings {
            redis_url: Some(RedisUrl::parse("redis://from-manifest").unwrap()),
            share: None,
        };
        let from = |env| {
            let (url, source) = settings.redis_url(env).unwrap().unwrap();
            format!("{url} from {source}")
        };
        assert_eq!(
            from(Some("redis://from-env:1")),
            "redis://from-env:1 from STEMBATCH_REDIS_URL"
        );
        assert_eq!(
            from(Some("  ")),
            "redis://from-manifest from limits.redis_url"
        );
        assert_eq!(from(None), "redis://from-manifest from limits.redis_url");
        let err = settings.redis_url(Some("http://x")).unwrap_err();
        assert!(err.starts_with("STEMBATCH_REDIS_URL: "), "{err}");
    }

    #[test]
    fn positions_parse_and_compose() {
        assert_eq!(
            ShardPosition::parse("1/3").unwrap(),
            ShardPosition::new(1, 3).unwrap()
        );
        assert!(ShardPosition::parse("3/3")
            .unwrap_err()
            .contains("not below"));
        assert!(ShardPosition::parse("0/0")
            .unwrap_err()
            .contains("at least 1"));
        assert!(ShardPosition::parse("one of three").is_err());
        // Two manifests on one key, each split in three shards: six distinct places.
        let mut places: Vec<u32> = (0..2)
            .flat_map(|share| {
                (0..3).map(move |shard| {
                    let placed = ShardPosition::new(shard, 3)
                        .unwrap()
                        .within(ShardPosition::new(share, 2).unwrap());
                    assert_eq!(placed.count.get(), 6);
                    placed.index
                })
            })
            .collect();
        places.sort();
        assert_eq!(places, [0, 1, 2, 3, 4, 5]);
        assert_eq!(
            ShardPosition::SOLE.within(ShardPosition::SOLE),
            ShardPosition::SOLE
        );
    }
}
