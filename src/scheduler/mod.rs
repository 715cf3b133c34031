//! The concurrent scheduler: the run state decides ([`state`], pure), the coordinator
//! owns it and carries out its decisions through executors, one per action.
//!
//! Data flow of one variant: an [`state::Entry`] (from the manifest and the journal) →
//! `Submit` → `Submitted` → `Poll`… → `Polled(finished)` → `Download` per track →
//! `TrackDownloaded` → `End` → the journal's end record and its `results.csv` rows.
//!
//! Rates and concurrency are separate knobs: one [`pacer::Pacer`] per endpoint spaces the
//! calls, the run state caps the variants in flight, a semaphore caps downloads.

pub mod bucket;
mod coordinator;
pub mod events;
mod executor;
pub mod pacer;
pub mod poll;
pub mod rerun;
pub mod retrying;
pub mod shared_limit;
pub mod start;
pub mod state;
pub mod upload;
pub mod watched;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::api::retry::RetryPolicy;
use crate::api::ApiClient;
use crate::download::Downloader;
use crate::journal::stored::TrackStore;
use crate::journal::writer::JournalWriter;
use crate::manifest::{RunSettings, UploadMode};
use crate::outcome::UploadedFile;
use crate::report::progress::Progress;
use crate::report::results::Results;
use crate::report::shards::ShardPart;
use crate::variant::{LocalStem, StemSource, Variant, VariantTable};
pub use coordinator::{RunEnd, Stops};
use events::StopReason;
use pacer::{Pacer, RatePacer};
use start::Start;
use state::{Entry, Policy, RunState};
use upload::Uploads;

/// The pacers of one run, one per endpoint.
#[derive(Clone)]
pub struct Pacers {
    /// Submit calls.
    pub submit: Arc<dyn Pacer>,
    /// Detail queries.
    pub poll: Arc<dyn Pacer>,
    /// Uploads.
    pub upload: Arc<dyn Pacer>,
}

impl Pacers {
    /// GCRA pacers at the manifest's rates.
    pub fn from_settings(settings: &RunSettings) -> Self {
        Pacers {
            submit: Arc::new(RatePacer::new(settings.submit_rate, settings.burst)),
            poll: Arc::new(RatePacer::new(settings.poll_rate, settings.burst)),
            upload: Arc::new(RatePacer::new(settings.upload_rate, settings.burst)),
        }
    }
}

/// What a run needs besides its variants.
pub struct RunInputs {
    /// The API.
    pub client: ApiClient,
    /// The journal of the output folder.
    pub journal: JournalWriter,
    /// The run's knobs.
    pub settings: RunSettings,
    /// The pacers.
    pub pacers: Pacers,
    /// The API as the journal names it: the base URL, or the simulator.
    pub api: String,
    /// How local stems get a URL.
    pub upload_mode: UploadMode,
    /// Uploads earlier runs made, by content hash.
    pub earlier_uploads: HashMap<String, UploadedFile>,
    /// The bucket, in `upload.mode = "s3"`.
    pub bucket: Option<bucket::BucketUploads>,
    /// The output folder (must exist).
    pub out_dir: PathBuf,
    /// A shard's run: its part of `results.csv` (its state folder must exist).
    pub shard_part: Option<ShardPart>,
    /// What stops the run from outside.
    pub stops: Stops,
    /// A stop known before the first submit (the balance check refused the account).
    pub stopped_before: Option<StopReason>,
    /// What the balance check, the run's first call, found of the API, when it was asked:
    /// the run state's `Event::ApiChecked`.
    pub api_checked: Option<Result<(), crate::api::ApiError>>,
    /// The live view the coordinator reports to.
    pub progress: Progress,
    /// Where the kept variants' tracks' entries are (`Entry::kept_tracks`).
    pub track_store: Arc<TrackStore>,
}

/// The local stems of the variants this run will submit, in manifest order: the order
/// in which they are uploaded.
pub fn local_stems_to_submit<V: std::borrow::Borrow<Variant>>(
    variants: impl IntoIterator<Item = V>,
    entries: &[Entry],
) -> Vec<LocalStem> {
    let submitting: std::collections::HashSet<_> = entries
        .iter()
        .filter(|e| e.start == Start::Submit)
        .map(|e| &e.id)
        .collect();
    variants
        .into_iter()
        .filter(|v| submitting.contains(&v.borrow().id))
        .filter_map(|v| match &v.borrow().stem.source {
            StemSource::Local(local) => Some(local.clone()),
            StemSource::Url(_) => None,
        })
        .collect()
}

/// Runs every variant from its entry and writes `results.csv`; an error only when the
/// report cannot be written (or a bug made an executor panic). `orphans` are paid tasks of
/// variants no longer in the manifest ([`rerun::orphans`]): polled and downloaded
/// into `superseded/`, never bought, never in `results.csv`.
pub async fn run(
    variants: Arc<VariantTable>,
    entries: Vec<Entry>,
    orphans: Vec<Entry>,
    mut inputs: RunInputs,
) -> std::io::Result<RunEnd> {
    let retry = RetryPolicy::new(inputs.settings.max_attempts);
    // A child of the signal's token: the first signal stops every submit still waiting for
    // its slot at once, before the coordinator hears of it.
    let stop_submits = inputs.stops.interrupted.child_token();
    let to_upload = local_stems_to_submit(variants.iter(), &entries);
    let uploads = start_uploads(&mut inputs, &to_upload, retry, stop_submits.clone());
    let results = Results::new(
        &report_dir(&inputs),
        &report_state_dir(&inputs),
        Arc::clone(&variants),
        Arc::clone(&inputs.track_store),
    )?;
    let executor = Arc::new(executor(&inputs, variants, uploads, retry, stop_submits)?);
    let state = RunState::new(policy(&inputs.settings, retry), entries).with_orphans(orphans);
    let RunInputs {
        journal,
        out_dir,
        shard_part,
        progress,
        stops,
        stopped_before,
        api_checked,
        ..
    } = inputs;
    let parts = coordinator::Parts {
        journal,
        results,
        out_dir,
        shard_part,
        progress,
    };
    let coordinator = coordinator::Coordinator::new(state, Arc::clone(&executor), parts);
    let end = coordinator.run(stops, stopped_before, api_checked).await;
    executor.uploads.shutdown();
    end
}

/// What the run state needs of the run's settings.
fn policy(settings: &RunSettings, retry: RetryPolicy) -> Policy {
    Policy {
        concurrency: settings.concurrency,
        task_timeout: settings.task_timeout,
        poll_interval: settings.poll_interval,
        poll_interval_max: settings.poll_interval_max,
        submit_retry: retry,
    }
}

/// The uploads of the run's local stems (`to_upload`, in manifest order), which take the
/// inputs' API, upload mode, earlier uploads and bucket.
fn start_uploads(
    inputs: &mut RunInputs,
    to_upload: &[LocalStem],
    retry: RetryPolicy,
    stop_submits: CancellationToken,
) -> Arc<Uploads> {
    Arc::new(Uploads::new(
        std::mem::take(&mut inputs.api),
        inputs.upload_mode.clone(),
        inputs.client.clone(),
        Arc::clone(&inputs.pacers.upload),
        inputs.journal.clone(),
        retry,
        // Uploads serve submits only: they stop when submits do.
        stop_submits,
        std::mem::take(&mut inputs.earlier_uploads),
        to_upload,
        inputs.bucket.take(),
    ))
}

/// Where `results.csv` is written: the output folder, or a shard's part.
fn report_dir(inputs: &RunInputs) -> PathBuf {
    match &inputs.shard_part {
        Some(part) => part.dir.clone(),
        None => inputs.out_dir.clone(),
    }
}

/// The state folder of the run's `results.csv`, where it is indexed for the next run:
/// the output folder's, or the shard's.
fn report_state_dir(inputs: &RunInputs) -> PathBuf {
    match &inputs.shard_part {
        Some(part) => part.dir.clone(),
        None => crate::journal::state_dir(&inputs.out_dir),
    }
}

/// What every executor shares.
fn executor(
    inputs: &RunInputs,
    variants: Arc<VariantTable>,
    uploads: Arc<Uploads>,
    retry: RetryPolicy,
    stop_submits: CancellationToken,
) -> std::io::Result<executor::Executor> {
    let settings = inputs.settings.clone();
    Ok(executor::Executor {
        variants,
        client: inputs.client.clone(),
        uploads,
        downloader: Downloader::new().map_err(std::io::Error::other)?,
        journal: inputs.journal.clone(),
        submit_pacer: Arc::clone(&inputs.pacers.submit),
        poll_pacer: Arc::clone(&inputs.pacers.poll),
        download_slots: Semaphore::new(settings.download_concurrency),
        settings,
        retry,
        out_dir: inputs.out_dir.clone(),
        stop_submits,
        stop_work: CancellationToken::new(),
    })
}
