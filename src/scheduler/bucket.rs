//! Local stems in the user's own bucket (`upload.mode = "s3"`): which files are already
//! there, uploading the rest, and a presigned URL for each submit.
//!
//! Before the run, a survey asks the bucket (HEAD) about every file the run will submit
//! that the journal does not already know to be stored, so that the start line can say
//! how many will be uploaded, and a refused credential stops the run before any submit.
//! The journal's word is trusted for [`STORED_TRUST`]: a resumed run's survey does not ask
//! again, a run a day later does (a lifecycle rule may have removed the object since).
//! At least one HEAD is made every run, since minting URLs sends nothing and a bad secret
//! would otherwise only show as tasks the provider fails, and bills. A file known only
//! from the journal is still asked about (one HEAD) before its first URL of the run: a
//! URL to a removed object is a task the provider fails.
//!
//! During the run the uploads themselves are the [`super::upload::Uploads`]' (one per
//! file, prefetched, paced, stopped with the submits); this module does the calls and
//! keeps the URLs it minted, in memory only: a presigned URL carries the access key id,
//! so it is never journaled nor logged.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::pacer::Pacer;
use super::retrying::{with_retries, CallFailure, Retryable};
use crate::api::retry::RetryPolicy;
use crate::journal::format::Record;
use crate::journal::writer::JournalWriter;
use crate::manifest::{url_expiry_margin, S3Settings};
use crate::outcome::UploadedFile;
use crate::storage::error::StorageFailure;
use crate::storage::{
    keys, Bucket, StorageError, ACCESS_KEY_ENV, EXPIRATION_ENV, SECRET_KEY_ENV, SESSION_TOKEN_ENV,
};
use crate::variant::LocalStem;

/// How long the journal's word that a file is in the bucket is taken without asking.
pub const STORED_TRUST: Duration = Duration::from_secs(20 * 3600);

/// HEADs in flight at once during the survey.
const SURVEY_CONCURRENCY: usize = 8;

impl Retryable for StorageError {
    fn retry(&self) -> Option<Option<Duration>> {
        self.is_transient().then_some(None)
    }

    fn rate_limited(&self) -> bool {
        self.is_throttled()
    }
}

/// What the bucket holds of the files a run will submit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Survey {
    /// The keys of the files already stored.
    pub stored: HashSet<String>,
    /// Of those, the keys the journal vouches for that were not asked about this run:
    /// asked (HEAD) before their first URL, since a lifecycle rule may have removed them.
    pub vouched: HashSet<String>,
    /// Distinct files to upload.
    pub to_upload: usize,
}

/// The bucket of one run, with what it needs to journal and retry.
pub struct BucketUploads {
    bucket: Bucket,
    settings: S3Settings,
    task_timeout: Duration,
    journal: JournalWriter,
    retry: RetryPolicy,
    /// Keys known to be stored (the survey's, then this run's uploads).
    stored: Mutex<HashSet<String>>,
    /// Keys known only from the journal ([`Survey::vouched`]).
    vouched: Mutex<HashSet<String>>,
    /// The last URL minted for each key, and when it expires.
    minted: Mutex<HashMap<String, (String, DateTime<Utc>)>>,
}

impl BucketUploads {
    /// The run's bucket; `survey` says what it already holds.
    pub fn new(
        bucket: Bucket,
        settings: S3Settings,
        task_timeout: Duration,
        journal: JournalWriter,
        retry: RetryPolicy,
        survey: Survey,
    ) -> Self {
        BucketUploads {
            bucket,
            settings,
            task_timeout,
            journal,
            retry,
            stored: Mutex::new(survey.stored),
            vouched: Mutex::new(survey.vouched),
            minted: Mutex::new(HashMap::new()),
        }
    }

    /// The key of a file.
    pub fn key_of(&self, stem: &LocalStem) -> String {
        keys::stem_key(&self.settings.prefix, stem)
    }

    /// Makes sure the file is in the bucket (HEAD first, unless known) and returns its
    /// key. Each try takes a slot of `pacer`; the whole is raced against `stop`.
    pub async fn store(
        &self,
        stem: &LocalStem,
        pacer: &dyn Pacer,
        stop: &CancellationToken,
    ) -> Result<String, CallFailure<StorageError>> {
        let key = self.key_of(stem);
        let vouched_only = lock(&self.vouched).contains(&key);
        let known = self.lock_stored().contains(&key) && !vouched_only;
        if known {
            return Ok(key);
        }
        let file = crate::stems::normalized(&stem.path);
        let present = with_retries(None, &self.retry, stop, || self.bucket.contains(&key)).await?;
        if !present {
            info!(file = %file.display(), key = %key, bytes = stem.bytes, "uploading to the bucket");
            with_retries(Some(pacer), &self.retry, stop, || {
                self.bucket.upload(&key, &stem.path, &stem.sha256)
            })
            .await?;
            info!(file = %file.display(), key = %key, "uploaded to the bucket");
        }
        self.lock_stored().insert(key.clone());
        lock(&self.vouched).remove(&key);
        journal_stored(&self.journal, &self.bucket, &stem.sha256, &key).await;
        Ok(key)
    }

    /// A URL for a submit made now: the last one minted for `key` while it still
    /// outlives the task ([`keys::still_serves`]), else a fresh one, which never outlives
    /// temporary credentials. Credentials that expire before a fresh URL could serve the
    /// task (with the margin `url_expiry` needs) are refused: every later submit would
    /// meet the same.
    pub async fn url(&self, key: &str) -> Result<String, StorageError> {
        let now = Utc::now();
        let expiry = self.settings.url_expiry;
        let cached = self.lock_minted().get(key).cloned();
        if let Some((url, expires_at)) = cached {
            let left = (expires_at - now).to_std().unwrap_or_default();
            if keys::still_serves(left, self.task_timeout, expiry) {
                return Ok(url);
            }
        }
        let credentials_left = self
            .bucket
            .credentials_expire()
            .map(|at| (at - now).to_std().unwrap_or_default());
        let lifetime = keys::presign_lifetime(expiry, credentials_left);
        if lifetime < self.task_timeout + url_expiry_margin(self.task_timeout) {
            return Err(StorageError {
                failure: StorageFailure::Refused,
                message: format!(
                    "the temporary credentials expire in {}, before a task could fetch its stem from a URL they sign (hint: export fresh {SESSION_TOKEN_ENV}, {ACCESS_KEY_ENV}, {SECRET_KEY_ENV} and {EXPIRATION_ENV})",
                    humantime::format_duration(lifetime)
                ),
            });
        }
        let url = self.bucket.presign(key, lifetime).await?;
        let expires_at = now + chrono::Duration::from_std(lifetime).unwrap_or_default();
        self.lock_minted()
            .insert(key.to_owned(), (url.clone(), expires_at));
        Ok(url)
    }

    fn lock_stored(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.stored.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_minted(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, DateTime<Utc>)>> {
        self.minted.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The guarded value, even after a panic elsewhere.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Journals that the file `sha256` is stored as `key`: a resumed run need not ask.
async fn journal_stored(journal: &JournalWriter, bucket: &Bucket, sha256: &str, key: &str) {
    let at = Utc::now();
    let record = Record::Uploaded {
        api: bucket.id().to_owned(),
        sha256: sha256.to_owned(),
        // Where it is, never a presigned URL: those carry the access key id.
        file_url: bucket.location(key),
        expires_at: at + chrono::Duration::from_std(STORED_TRUST).unwrap_or_default(),
        at,
    };
    if let Err(err) = journal.append(record).await {
        tracing::error!(error = %err, "cannot write the journal");
    }
}

/// What a survey needs of its run.
pub struct SurveyContext<'a> {
    /// Where the files found are journaled; none for `plan`, which writes nothing.
    pub journal: Option<&'a JournalWriter>,
    /// The run's retry policy, for each HEAD.
    pub retry: RetryPolicy,
    /// Cuts the survey short.
    pub stop: &'a CancellationToken,
    /// What the journal says the bucket holds, by content hash.
    pub journaled: &'a HashMap<String, UploadedFile>,
    /// The survey's time, against which the journal's word expires.
    pub now: DateTime<Utc>,
}

/// Asks the bucket about each distinct file of `stems` the journal does not vouch for;
/// at least one HEAD in any case, to prove the credentials. The files found are
/// journaled, when a journal is given.
pub async fn survey(
    bucket: &Bucket,
    prefix: &str,
    stems: &[LocalStem],
    context: &SurveyContext<'_>,
) -> Result<Survey, CallFailure<StorageError>> {
    let SurveyContext {
        journal,
        ref retry,
        stop,
        journaled,
        now,
    } = *context;
    let key_of = |stem: &LocalStem| keys::stem_key(prefix, stem);
    let mut distinct: Vec<&LocalStem> = Vec::new();
    for stem in stems {
        if !distinct.iter().any(|d| key_of(d) == key_of(stem)) {
            distinct.push(stem);
        }
    }
    let vouched = |stem: &&LocalStem| {
        journaled
            .get(&stem.sha256)
            .is_some_and(|file| file.expires_at > now && file.url == bucket.location(&key_of(stem)))
    };
    let (known, mut ask): (Vec<&LocalStem>, Vec<&LocalStem>) =
        distinct.iter().partition(|stem| vouched(stem));
    if ask.is_empty() {
        // The credentials' proof: one HEAD, on a file the journal vouches for.
        ask.extend(known.first().copied());
    }
    let found: Vec<(&LocalStem, bool)> = stream::iter(ask.iter().copied())
        .map(|stem| async move {
            let key = key_of(stem);
            with_retries(None, retry, stop, || bucket.contains(&key))
                .await
                .map(|present| (stem, present))
        })
        .buffer_unordered(SURVEY_CONCURRENCY)
        .try_collect()
        .await?;
    let mut stored: HashSet<String> = known.iter().map(|s| key_of(s)).collect();
    let mut vouched = stored.clone();
    for (stem, present) in found {
        let key = key_of(stem);
        vouched.remove(&key);
        if present {
            if let (true, Some(journal)) = (stored.insert(key.clone()), journal) {
                journal_stored(journal, bucket, &stem.sha256, &key).await;
            }
        } else {
            stored.remove(&key);
        }
    }
    Ok(Survey {
        to_upload: distinct.len() - stored.len(),
        stored,
        vouched,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::pacer::CountingPacer;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn failing(failure: StorageFailure) -> StorageError {
        StorageError {
            failure,
            message: "PUT of s3://b/k failed: HTTP 503 Service Unavailable".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_bucket_holds_the_uploads_and_is_tried_again() {
        for (failure, holds) in [
            (StorageFailure::Throttled, 1),
            (StorageFailure::Transient, 0),
        ] {
            let pacer = CountingPacer::default();
            let calls = AtomicU32::new(0);
            let stored = with_retries(
                Some(&pacer as &dyn Pacer),
                &RetryPolicy::new(3),
                &CancellationToken::new(),
                || async {
                    match calls.fetch_add(1, Ordering::SeqCst) {
                        0 => Err(failing(failure)),
                        _ => Ok(()),
                    }
                },
            )
            .await;
            assert!(stored.is_ok(), "{failure:?}");
            assert_eq!(pacer.holds(), holds, "{failure:?}");
        }
    }
}
