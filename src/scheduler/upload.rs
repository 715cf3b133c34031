//! URLs for local stems: the provider's upload endpoint with a cache, a public base URL,
//! or the user's own bucket ([`super::bucket`], presigned URLs).
//!
//! Uploads are lazy: a file is uploaded just before the first submit that needs it, so that
//! early uploads of a long run do not expire. The next file in manifest order is then
//! uploaded in the background (a task the run owns and ends), so uploads overlap with the
//! submits of other stems. Each distinct file (by content) is uploaded once per run: one
//! `OnceCell` per file, so a second submit waits for the first's upload without any lock
//! held across it. A URL from an earlier run is used again while it stays valid for
//! [`SAFETY_MARGIN`] more, because the provider fetches the stem some time after the submit.
//! In the bucket's mode the same cell holds the file's key, and each submit gets a
//! presigned URL for it, minted anew when the last one would not outlive the task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use tokio_util::sync::CancellationToken;
use tracing::info;

use tokio::sync::OnceCell;
use tokio::task::JoinSet;

use super::bucket::BucketUploads;
use super::events::StemFailure;
use super::pacer::Pacer;
use super::retrying::{with_retries, CallFailure};
use crate::api::retry::RetryPolicy;
use crate::api::{ApiClient, ApiError};
use crate::journal::format::Record;
use crate::journal::writer::JournalWriter;
use crate::manifest::UploadMode;
use crate::outcome::UploadedFile;
use crate::variant::LocalStem;

/// How long an uploaded URL must stay valid to be used for a submit.
pub const SAFETY_MARGIN: Duration = Duration::from_secs(6 * 3600);
/// The provider's documented lifetime of an upload, when its answer gives none.
pub const UPLOAD_LIFETIME: Duration = Duration::from_secs(72 * 3600);

/// Characters escaped in a path segment of a public URL.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b']')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// The URL of one file (by content hash) for this run, set once; in the bucket's mode,
/// its key.
type Slot = Arc<OnceCell<String>>;

/// Where the provider fetches a stem from, as known before the submit's slot.
#[derive(Clone)]
pub(super) enum StemUrl {
    /// The URL itself (the stem's own, the provider's upload, a public one).
    Ready(String),
    /// The key of a file in the bucket, presigned when the slot comes.
    Stored(String),
}

/// What a run needs to get URLs for its local stems.
pub struct Uploads {
    /// The API, as the journal names it.
    api: String,
    mode: UploadMode,
    client: ApiClient,
    pacer: Arc<dyn Pacer>,
    journal: JournalWriter,
    retry: RetryPolicy,
    stop: CancellationToken,
    /// What the journal knows, by content hash.
    earlier: HashMap<String, UploadedFile>,
    slots: Mutex<HashMap<String, Slot>>,
    /// For each file, the next distinct file in manifest order: the one to prefetch.
    next: HashMap<String, LocalStem>,
    /// Prefetches in the background; ended by [`Uploads::shutdown`] (each holds the
    /// uploads, so dropping them alone would not).
    prefetches: Mutex<JoinSet<()>>,
    /// The bucket, in `upload.mode = "s3"`.
    bucket: Option<BucketUploads>,
}

/// The public URL of a file published under `base` by its path relative to the manifest.
pub fn public_url(base: &str, relative: &str) -> String {
    let encoded: Vec<String> = relative
        .split('/')
        .map(|segment| utf8_percent_encode(segment, SEGMENT).to_string())
        .collect();
    format!("{}/{}", base.trim_end_matches('/'), encoded.join("/"))
}

/// The provider's `expires_at` (no zone: UTC), or the documented lifetime from now.
pub fn expiry_of(expires_at: Option<&str>, uploaded: DateTime<Utc>) -> DateTime<Utc> {
    expires_at
        .and_then(|text| {
            DateTime::parse_from_rfc3339(text)
                .map(|t| t.with_timezone(&Utc))
                .ok()
                .or_else(|| {
                    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                        .ok()
                        .map(|t| t.and_utc())
                })
        })
        .unwrap_or_else(|| uploaded + UPLOAD_LIFETIME)
}

impl Uploads {
    /// The uploads of a run. `earlier` holds what the journal knows, by content hash;
    /// `order` the local files this run will submit, in manifest order.
    #[expect(
        clippy::too_many_arguments,
        reason = "one constructor wiring the run's shared parts"
    )]
    pub fn new(
        api: String,
        mode: UploadMode,
        client: ApiClient,
        pacer: Arc<dyn Pacer>,
        journal: JournalWriter,
        retry: RetryPolicy,
        stop: CancellationToken,
        earlier: HashMap<String, UploadedFile>,
        order: &[LocalStem],
        bucket: Option<BucketUploads>,
    ) -> Self {
        // By a set, not a scan of those seen: one pass over the variants' stems.
        let mut seen = std::collections::HashSet::new();
        let distinct: Vec<&LocalStem> = order
            .iter()
            .filter(|stem| seen.insert(stem.sha256.as_str()))
            .collect();
        let next = distinct
            .windows(2)
            .map(|pair| (pair[0].sha256.clone(), pair[1].clone()))
            .collect();
        Uploads {
            api,
            mode,
            client,
            pacer,
            journal,
            retry,
            stop,
            earlier,
            slots: Mutex::new(HashMap::new()),
            next,
            prefetches: Mutex::new(JoinSet::new()),
            bucket,
        }
    }

    /// Where to submit `stem` from; starts uploading the next file in the background.
    /// In the bucket's mode, the stored file's key: [`Uploads::url`] presigns it when
    /// the submit's slot comes, so that the wait for the slot does not eat the URL's life.
    pub(super) async fn url_for(
        self: &Arc<Self>,
        stem: &LocalStem,
    ) -> Result<StemUrl, CallFailure<StemFailure>> {
        let resolved = self.resolve(stem).await?;
        if let Some(next) = self.next.get(&stem.sha256).cloned() {
            let uploads = Arc::clone(self);
            let mut prefetches = self.prefetches.lock().unwrap_or_else(|p| p.into_inner());
            // Reap the finished ones, so the set holds only what still runs.
            while prefetches.try_join_next().is_some() {}
            prefetches.spawn(async move {
                // A failure here is met again, and reported, by the submit that needs it.
                let _ = uploads.resolve(&next).await;
            });
        }
        Ok(match self.bucket {
            Some(_) => StemUrl::Stored(resolved),
            None => StemUrl::Ready(resolved),
        })
    }

    /// The URL to hand the provider now: presigned (locally) for a stored file.
    pub(super) async fn url(&self, stem: StemUrl) -> Result<String, StemFailure> {
        match (stem, &self.bucket) {
            (StemUrl::Stored(key), Some(bucket)) => {
                bucket.url(&key).await.map_err(StemFailure::Storage)
            }
            (StemUrl::Ready(url) | StemUrl::Stored(url), _) => Ok(url),
        }
    }

    /// Ends the prefetches still running: the run is over, and nothing will submit with
    /// their URLs.
    pub(super) fn shutdown(&self) {
        let mut prefetches = self.prefetches.lock().unwrap_or_else(|p| p.into_inner());
        prefetches.abort_all();
    }

    async fn resolve(&self, stem: &LocalStem) -> Result<String, CallFailure<StemFailure>> {
        if let UploadMode::BaseUrl(base) = &self.mode {
            return match &stem.relative {
                Some(relative) => Ok(public_url(base, relative)),
                None => Err(CallFailure::Failed(StemFailure::Api(ApiError::Local(
                    format!(
                        "{} lies outside the manifest's folder, so it has no public URL",
                        crate::stems::normalized(&stem.path).display()
                    ),
                )))),
            };
        }
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(slots.entry(stem.sha256.clone()).or_default())
        };
        // One upload per file: whoever comes second waits for the first's and finds the
        // URL; a failed upload leaves the cell empty for the next submit to try again.
        slot.get_or_try_init(|| async {
            match &self.bucket {
                Some(bucket) => bucket
                    .store(stem, self.pacer.as_ref(), &self.stop)
                    .await
                    .map_err(|failure| wrap(failure, StemFailure::Storage)),
                None => self
                    .upload(stem)
                    .await
                    .map_err(|failure| wrap(failure, StemFailure::Api)),
            }
        })
        .await
        .cloned()
    }

    /// The earlier run's URL while it stays valid, else a fresh upload, journaled.
    async fn upload(&self, stem: &LocalStem) -> Result<String, CallFailure<ApiError>> {
        let margin = chrono::Duration::from_std(SAFETY_MARGIN).unwrap_or_default();
        let still_valid = self
            .earlier
            .get(&stem.sha256)
            .filter(|f| f.expires_at > Utc::now() + margin);
        if let Some(file) = still_valid {
            return Ok(file.url.clone());
        }
        let name = stem
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("stem")
            .to_owned();
        info!(file = %crate::stems::normalized(&stem.path).display(), "uploading");
        let upload = || self.client.upload(&stem.path, &name);
        let data = with_retries(Some(self.pacer.as_ref()), &self.retry, &self.stop, upload).await?;
        let uploaded = Utc::now();
        let expires_at = expiry_of(data.expires_at.as_deref(), uploaded);
        if let Err(err) = self
            .journal
            .append(Record::Uploaded {
                api: self.api.clone(),
                sha256: stem.sha256.clone(),
                file_url: data.file_url.clone(),
                expires_at,
                at: uploaded,
            })
            .await
        {
            tracing::error!(error = %err, "cannot write the journal");
        }
        info!(file = %crate::stems::normalized(&stem.path).display(), url = %data.file_url, %expires_at, "uploaded");
        Ok(data.file_url)
    }
}

/// A failure of one kind as a failure of a stem.
fn wrap<E>(failure: CallFailure<E>, kind: fn(E) -> StemFailure) -> CallFailure<StemFailure> {
    match failure {
        CallFailure::Stopped => CallFailure::Stopped,
        CallFailure::Failed(err) => CallFailure::Failed(kind(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_urls_are_percent_encoded_by_segment() {
        assert_eq!(
            public_url("https://cdn.example.com/stems/", "vocals/my song #2.wav"),
            "https://cdn.example.com/stems/vocals/my%20song%20%232.wav"
        );
        assert_eq!(
            public_url("https://cdn.example.com/s", "été.wav"),
            "https://cdn.example.com/s/%C3%A9t%C3%A9.wav"
        );
    }

    #[test]
    fn expiry_reads_the_providers_format_or_assumes_the_documented_lifetime() {
        let now: DateTime<Utc> = "2026-11-25T00:00:00Z".parse().unwrap();
        assert_eq!(
            expiry_of(Some("2026-01-01T13:09:04.731057"), now),
            "2026-01-01T13:09:04.731057Z"
                .parse::<DateTime<Utc>>()
                .unwrap()
        );
        assert_eq!(
            expiry_of(None, now),
            "2026-11-28T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(expiry_of(Some("soon"), now), now + UPLOAD_LIFETIME);
    }
}
