//! Names and lifetimes in the bucket, pure: the key a file is stored under, and whether
//! a presigned URL minted earlier still serves a submit made now.

use std::time::Duration;

/// The key of a file: `prefix` + its sha256 + its extension (lowercase, with its dot;
/// none when the file has none). The extension keeps the object's type readable for
/// a person browsing the bucket and for a provider that looks at the URL's ending.
pub fn object_key(prefix: &str, sha256: &str, file_name: &str) -> String {
    let extension = std::path::Path::new(file_name)
        .extension()
        .and_then(|e| e.to_str())
        .filter(|e| !e.is_empty() && e.chars().all(|c| c.is_ascii_alphanumeric()))
        .map(|e| format!(".{}", e.to_ascii_lowercase()))
        .unwrap_or_default();
    format!("{prefix}{sha256}{extension}")
}

/// The key of a local stem's file under `prefix`: [`object_key`] of its content hash and
/// its name. The one place a run, its survey and `inspect` name an object.
pub fn stem_key(prefix: &str, stem: &crate::variant::LocalStem) -> String {
    let name = stem.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    object_key(prefix, &stem.sha256, name)
}

/// How long a presigned URL must still be valid when it is handed to a submit: the
/// provider may fetch the stem at any time until the task times out, plus a margin for
/// clocks that disagree (a minute, or half the slack between `url_expiry` and
/// `task_timeout` when that is shorter, so that a URL minted now always qualifies).
pub fn validity_needed(task_timeout: Duration, url_expiry: Duration) -> Duration {
    let slack = url_expiry.saturating_sub(task_timeout);
    task_timeout + (slack / 2).min(Duration::from_secs(60))
}

/// Whether a URL with `left` validity remaining may be handed to a submit now.
pub fn still_serves(left: Duration, task_timeout: Duration, url_expiry: Duration) -> bool {
    left >= validity_needed(task_timeout, url_expiry)
}

/// How long a URL minted now may live: `url_expiry`, but never past the credentials'
/// expiry (`credentials_left`, when they are temporary), whole seconds.
pub fn presign_lifetime(url_expiry: Duration, credentials_left: Option<Duration>) -> Duration {
    let lifetime = credentials_left.map_or(url_expiry, |left| left.min(url_expiry));
    Duration::from_secs(lifetime.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn keys_are_prefix_hash_and_lowercase_extension() {
        assert_eq!(
            object_key("stembatch/", SHA, "My Ballad.WAV"),
            format!("stembatch/{SHA}.wav")
        );
        assert_eq!(object_key("", SHA, "take.flac"), format!("{SHA}.flac"));
        // Another name, same content: the same key.
        assert_eq!(
            object_key("p/", SHA, "other name.wav"),
            object_key("p/", SHA, "ballad.wav")
        );
        // No extension, or one that is not a plain word: none in the key.
        assert_eq!(object_key("p/", SHA, "README"), format!("p/{SHA}"));
        assert_eq!(object_key("p/", SHA, "a.w av"), format!("p/{SHA}"));
    }

    #[test]
    fn a_url_never_outlives_temporary_credentials() {
        let hour = Duration::from_secs(3600);
        assert_eq!(presign_lifetime(24 * hour, None), 24 * hour);
        assert_eq!(presign_lifetime(24 * hour, Some(hour)), hour);
        assert_eq!(
            presign_lifetime(hour, Some(Duration::from_millis(90_500))),
            Duration::from_secs(90)
        );
        assert_eq!(presign_lifetime(hour, Some(2 * hour)), hour);
        assert_eq!(presign_lifetime(hour, Some(Duration::ZERO)), Duration::ZERO);
    }

    #[test]
    fn a_url_serves_while_it_outlives_the_task_with_a_margin() {
        let minute = Duration::from_secs(60);
        let hour = 60 * minute;
        // The defaults: 24 h URLs, 30 min tasks: reused until 31 min are left.
        assert_eq!(validity_needed(30 * minute, 24 * hour), 31 * minute);
        assert!(still_serves(31 * minute, 30 * minute, 24 * hour));
        assert!(!still_serves(
            31 * minute - Duration::from_secs(1),
            30 * minute,
            24 * hour
        ));
        // Short lifetimes: the margin shrinks so that a fresh URL still serves.
        let (timeout, expiry) = (Duration::from_secs(2), Duration::from_secs(4));
        assert_eq!(validity_needed(timeout, expiry), Duration::from_secs(3));
        assert!(still_serves(expiry, timeout, expiry));
    }
}
