//! `upload.mode = "s3"` in a run: the bucket reached with the environment's credentials
//! before anything is sent, and its survey (what it already holds of the run's stems),
//! which says the run's start line for uploads and proves the credentials.

use std::collections::HashMap;
use std::time::Duration;

use crate::api::retry::AccountStop;
use crate::exit::ExpectedError;
use crate::journal::writer::JournalWriter;
use crate::manifest::{Manifest, S3Settings, UploadMode};
use crate::outcome::UploadedFile;
use crate::scheduler::bucket::{survey, BucketUploads, Survey, SurveyContext as AskContext};
use crate::scheduler::retrying::CallFailure;
use crate::storage::{Bucket, Credentials, ACCESS_KEY_ENV, SECRET_KEY_ENV};

/// The bucket of `upload.mode = "s3"`, reached with the environment's credentials, and
/// what the journal says it holds.
pub(super) struct PreparedBucket {
    pub bucket: Bucket,
    pub settings: S3Settings,
    pub journaled: HashMap<String, UploadedFile>,
}

/// What the bucket's survey needs of the run.
pub(super) struct SurveyContext<'a> {
    pub journal: &'a JournalWriter,
    pub retry: crate::api::retry::RetryPolicy,
    pub stop: &'a tokio_util::sync::CancellationToken,
    pub task_timeout: Duration,
}

/// The credentials, checked before anything is sent (a missing one is a usage error).
pub(super) fn open_bucket(manifest: &Manifest) -> anyhow::Result<Option<(Bucket, S3Settings)>> {
    let UploadMode::S3(settings) = &manifest.upload.mode else {
        return Ok(None);
    };
    let credentials = Credentials::from_env().map_err(ExpectedError::usage)?;
    let bucket =
        Bucket::new(settings, credentials).map_err(|err| ExpectedError::usage(err.to_string()))?;
    Ok(Some((bucket, settings.clone())))
}

/// The run's bucket, when `upload.mode = "s3"`: surveyed for the local stems of the
/// variants `entries` submits ([`survey_bucket`]).
pub(super) async fn bucket_for_run(
    prepared: Option<PreparedBucket>,
    variants: &crate::variant::VariantTable,
    entries: &[crate::scheduler::state::Entry],
    context: SurveyContext<'_>,
) -> (Option<BucketUploads>, Option<AccountStop>) {
    let Some(prepared) = prepared else {
        return (None, None);
    };
    let to_submit = crate::scheduler::local_stems_to_submit(variants.iter(), entries);
    let (uploads, stop) = survey_bucket(prepared, &to_submit, context).await;
    (Some(uploads), stop)
}

/// Asks the bucket what it holds of the files this run submits, and says it: the run's
/// start line for uploads. A refusal of the credentials stops the run before any submit;
/// a bucket that cannot be reached only warns (each upload asks again, and fails its
/// variant if the bucket stays away).
async fn survey_bucket(
    prepared: PreparedBucket,
    to_submit: &[crate::variant::LocalStem],
    context: SurveyContext<'_>,
) -> (BucketUploads, Option<AccountStop>) {
    let PreparedBucket {
        bucket,
        settings,
        journaled,
    } = prepared;
    let asking = AskContext {
        journal: Some(context.journal),
        retry: context.retry,
        stop: context.stop,
        journaled: &journaled,
        now: chrono::Utc::now(),
    };
    let surveyed = match to_submit.is_empty() {
        true => Ok(Survey::default()),
        false => survey(&bucket, &settings.prefix, to_submit, &asking).await,
    };
    let (found, stop) = match surveyed {
        Ok(found) => {
            tracing::info!(
                to_upload = found.to_upload,
                in_bucket = found.stored.len(),
                bucket = %bucket.id(),
                "stems: {} to upload, {} already in the bucket",
                found.to_upload,
                found.stored.len()
            );
            (found, None)
        }
        Err(CallFailure::Failed(err)) if err.refused_credentials() => {
            tracing::error!(
                "the bucket refused the credentials in {ACCESS_KEY_ENV}/{SECRET_KEY_ENV} ({err}): nothing was submitted"
            );
            (Survey::default(), Some(AccountStop::StorageRefused))
        }
        Err(CallFailure::Failed(err)) => {
            tracing::warn!(error = %err, "cannot ask the bucket what it holds; each upload asks again");
            (Survey::default(), None)
        }
        Err(CallFailure::Stopped) => (Survey::default(), None),
    };
    let uploads = BucketUploads::new(
        bucket,
        settings,
        context.task_timeout,
        context.journal.clone(),
        context.retry,
        found,
    );
    (uploads, stop)
}
