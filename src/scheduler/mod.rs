//! The concurrent scheduler: pulls variants lazily, at most `concurrency` in flight, each
//! through a worker (pace → submit → poll → download), while one coordinator owns the run
//! state and rewrites `results.csv` as variants end.
//!
//! Rates and concurrency are separate knobs: one [`pacer::Pacer`] per endpoint spaces the
//! calls, `buffer_unordered` caps the variants in flight, a semaphore caps downloads.

pub mod pacer;
pub mod poll;
mod retrying;
pub mod state;
pub mod upload;
mod worker;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::retry::{AccountStop, RetryPolicy};
use crate::api::ApiClient;
use crate::download::Downloader;
use crate::journal::replay::Start;
use crate::journal::writer::JournalWriter;
use crate::manifest::{RunSettings, UploadMode};
use crate::report;
use crate::variant::{LocalStem, StemSource, Variant};
use pacer::{Pacer, RatePacer};
use state::{RunState, WorkerEvent};
use upload::{UploadedFile, Uploads};

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
    /// Governor pacers at the manifest's rates.
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
    /// The output folder (must exist).
    pub out_dir: PathBuf,
    /// Cancel to stop submitting; what is in flight goes on.
    pub stop_submits: CancellationToken,
    /// Cancel to stop every request; in-flight variants end `pending`.
    pub stop_all: CancellationToken,
}

/// How a run ended.
#[derive(Debug)]
pub struct RunOutcome {
    /// Every variant's record.
    pub state: RunState,
    /// Set when the account stopped the run.
    pub account_stop: Option<AccountStop>,
}

/// Where each variant starts, and the records that earlier runs left.
pub struct Resume {
    /// One record per variant, in manifest order.
    pub records: Vec<state::VariantRecord>,
    /// One start per variant, in manifest order.
    pub starts: Vec<Start>,
}

impl Resume {
    /// A first run: every variant pending, to be submitted.
    pub fn fresh(count: usize) -> Self {
        Resume {
            records: vec![state::VariantRecord::default(); count],
            starts: vec![Start::Submit; count],
        }
    }
}

/// Runs every variant from its start and writes `results.csv`; an error only when the
/// report cannot be written.
pub async fn run(
    variants: Arc<Vec<Variant>>,
    resume: Resume,
    inputs: RunInputs,
) -> std::io::Result<RunOutcome> {
    let (events, received) = mpsc::channel(1024);
    let out_dir = inputs.out_dir.clone();
    let initial = RunState::from_records(resume.records);
    let coordinator = tokio::spawn(coordinate(
        Arc::clone(&variants),
        initial,
        out_dir,
        received,
    ));
    let concurrency = inputs.settings.concurrency;
    let retry = RetryPolicy::new(inputs.settings.max_attempts);
    let to_upload: Vec<LocalStem> = variants
        .iter()
        .zip(&resume.starts)
        .filter(|(_, start)| **start == Start::Submit)
        .filter_map(|(variant, _)| match &variant.stem.source {
            StemSource::Local(local) => Some(local.clone()),
            StemSource::Url(_) => None,
        })
        .collect();
    let uploads = Arc::new(Uploads::new(
        inputs.api,
        inputs.upload_mode,
        inputs.client.clone(),
        inputs.pacers.upload,
        inputs.journal.clone(),
        retry,
        // Uploads serve submits only: they stop when submits do.
        inputs.stop_submits.clone(),
        inputs.earlier_uploads,
        &to_upload,
    ));
    let ctx = worker::Context {
        uploads,
        downloader: Downloader::new().map_err(std::io::Error::other)?,
        retry,
        download_slots: Semaphore::new(inputs.settings.download_concurrency),
        submit_pacer: inputs.pacers.submit,
        poll_pacer: inputs.pacers.poll,
        client: inputs.client,
        journal: inputs.journal,
        settings: inputs.settings,
        out_dir: inputs.out_dir,
        stop_submits: inputs.stop_submits,
        stop_all: inputs.stop_all,
        account_stop: Mutex::new(None),
        events,
    };
    // Kept variants are skipped here, so they take no slot of the in-flight cap.
    let work = variants
        .iter()
        .zip(resume.starts)
        .enumerate()
        .filter(|(_, (_, start))| *start != Start::Keep);
    futures::stream::iter(work)
        .map(|(index, (variant, start))| worker::run_variant(&ctx, index, variant, start))
        .buffer_unordered(concurrency)
        .collect::<()>()
        .await;
    let account_stop = *ctx.account_stop.lock().unwrap_or_else(|p| p.into_inner());
    // Dropping the context drops the last event sender: the coordinator then finishes.
    drop(ctx);
    let state = coordinator.await.map_err(std::io::Error::other)??;
    Ok(RunOutcome {
        state,
        account_stop,
    })
}

/// The one owner of the run state: applies events, rewrites the CSV at most every
/// `REPORT_INTERVAL` (longer when writing is slow), and once more at the end.
async fn coordinate(
    variants: Arc<Vec<Variant>>,
    mut state: RunState,
    out_dir: PathBuf,
    mut events: mpsc::Receiver<WorkerEvent>,
) -> std::io::Result<RunState> {
    const REPORT_INTERVAL: Duration = Duration::from_secs(1);
    write_report(&variants, &out_dir, &state).await?;
    let mut interval = REPORT_INTERVAL;
    let mut next_write = Instant::now() + interval;
    let mut dirty = false;
    let total = variants.len();
    let mut ended = 0;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => {
                    if state.apply(event) {
                        dirty = true;
                        ended += 1;
                    }
                }
                None => break,
            },
            _ = tokio::time::sleep_until(next_write), if dirty => {
                let started = Instant::now();
                tracing::info!(ended, total, counts = %state.counts(), "progress");
                if let Err(err) = write_report(&variants, &out_dir, &state).await {
                    tracing::error!(error = %err, "cannot write results.csv; trying again later");
                }
                // Writing a huge report must not take over the run.
                interval = REPORT_INTERVAL.max(started.elapsed() * 10);
                next_write = Instant::now() + interval;
                dirty = false;
            }
        }
    }
    write_report(&variants, &out_dir, &state).await?;
    Ok(state)
}

async fn write_report(
    variants: &Arc<Vec<Variant>>,
    out_dir: &Path,
    state: &RunState,
) -> std::io::Result<()> {
    let variants = Arc::clone(variants);
    let dir = out_dir.to_owned();
    let records = state.records().to_vec();
    tokio::task::spawn_blocking(move || report::csv::write_file(&dir, &variants, &records))
        .await
        .map_err(std::io::Error::other)?
}
