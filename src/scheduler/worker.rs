//! One variant's way through the API: pace → submit → poll → download, journaling each
//! step that costs money or produces a file. Workers decide nothing about other variants;
//! they report events up to the coordinator.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::future::join_all;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument};

use super::pacer::Pacer;
use super::poll::PollSchedule;
use super::retrying::{back_off, call_with_retries, turn, CallFailure};
use super::state::{TrackRecord, VariantEnd, VariantStatus, WorkerEvent};
use super::upload::Uploads;
use crate::api::retry::{classify, AccountStop, CallKind, RetryPolicy, Verdict};
use crate::api::types::{
    SubmitData, SubmitInput, SubmitRequest, TaskDetail, TaskStatus, TrackFile, TASK_MODEL,
};
use crate::api::{ApiClient, ApiError};
use crate::download::{extension_of, DownloadError, Downloaded, Downloader, Expect};
use crate::journal::format::{Created, EndStatus, Record, TrackEntry};
use crate::journal::replay::Start;
use crate::journal::writer::JournalWriter;
use crate::manifest::RunSettings;
use crate::variant::{StemSource, Variant};

/// How long a submit already on the wire may take to answer after the run is told to
/// stop: its answer says whether a task was created, which saves a duplicate next run.
const SUBMIT_GRACE: Duration = Duration::from_secs(1);

/// What every worker shares.
pub(super) struct Context {
    pub client: ApiClient,
    pub uploads: Arc<Uploads>,
    pub downloader: Downloader,
    pub journal: JournalWriter,
    pub submit_pacer: Arc<dyn Pacer>,
    pub poll_pacer: Arc<dyn Pacer>,
    pub settings: RunSettings,
    pub retry: RetryPolicy,
    pub download_slots: Semaphore,
    pub out_dir: PathBuf,
    /// Cancelled when nothing more may be submitted.
    pub stop_submits: CancellationToken,
    /// Cancelled when no request at all may be sent.
    pub stop_all: CancellationToken,
    pub account_stop: Mutex<Option<AccountStop>>,
    pub events: mpsc::Sender<WorkerEvent>,
}

impl Context {
    async fn emit(&self, event: WorkerEvent) {
        // The coordinator outlives every worker; a send can only fail while the process
        // is going down, and then there is nobody left to tell.
        let _ = self.events.send(event).await;
    }

    /// Appends to the journal; a failure is logged, for records that only help a later
    /// run (the work itself has already happened).
    async fn journal_or_log(&self, record: Record) {
        if let Err(err) = self.journal.append(record).await {
            error!(error = %err, "cannot write the journal");
        }
    }

    /// The account cannot go on: a bad key stops every request, no credits stops submits.
    fn stop_account(&self, stop: AccountStop) {
        let mut current = self.account_stop.lock().unwrap_or_else(|p| p.into_inner());
        if current.is_none() || stop == AccountStop::BadKey {
            *current = Some(stop);
        }
        self.stop_submits.cancel();
        if stop == AccountStop::BadKey {
            self.stop_all.cancel();
        }
    }
}

/// Runs one variant from `start` to its end for this run and reports it.
pub(super) async fn run_variant(ctx: &Context, index: usize, variant: &Variant, start: Start) {
    let span = tracing::info_span!(
        "variant",
        variant_id = %variant.id,
        stem = %variant.stem.name,
        variant = %variant.name,
        take = variant.take,
    );
    async {
        let end = match start {
            Start::Keep => return,
            Start::Submit => match submit(ctx, index, variant).await {
                Ok(task_id) => follow(ctx, variant, &task_id, ctx.settings.poll_interval).await,
                Err(end) => end,
            },
            // A task from an earlier run is asked about at once; its detail also brings
            // fresh result URLs, since the journaled ones may have expired.
            Start::Poll { task_id } => {
                info!(task_id, "resuming a task submitted earlier");
                follow(ctx, variant, &task_id, Duration::ZERO).await
            }
            Start::Redownload { task_id, .. } => {
                info!(
                    task_id,
                    "a track file is missing or damaged: downloading again from its task"
                );
                follow(ctx, variant, &task_id, Duration::ZERO).await
            }
        };
        match &end.error {
            None => info!(
                status = end.status.as_str(),
                tracks = end.tracks.len(),
                "variant ended"
            ),
            Some(error) => warn!(status = end.status.as_str(), error = %error, "variant ended"),
        }
        if let Some(status) = journal_status(end.status) {
            ctx.journal_or_log(Record::Ended {
                variant_id: variant.id.clone(),
                status,
                error: end.error.clone(),
                at: end.at,
            })
            .await;
        }
        ctx.emit(WorkerEvent::Ended { index, end }).await;
    }
    .instrument(span)
    .await
}

/// Pending is not an end: a variant without an end record is resumed.
fn journal_status(status: VariantStatus) -> Option<EndStatus> {
    match status {
        VariantStatus::Finished => Some(EndStatus::Finished),
        VariantStatus::Failed => Some(EndStatus::Failed),
        VariantStatus::Timeout => Some(EndStatus::Timeout),
        VariantStatus::Error => Some(EndStatus::Error),
        VariantStatus::Pending => None,
    }
}

fn end(status: VariantStatus, error: impl Into<String>) -> VariantEnd {
    VariantEnd {
        status,
        tracks: Vec::new(),
        error: Some(error.into()),
        at: Utc::now(),
    }
}

/// The submit body for a variant whose stem is at `upload_url`.
fn submit_request(
    variant: &Variant,
    upload_url: String,
    callback_url: Option<&str>,
) -> SubmitRequest {
    let params = &variant.params;
    SubmitRequest {
        model: TASK_MODEL.to_owned(),
        callback_url: callback_url.map(str::to_owned),
        input: SubmitInput {
            upload_url,
            title: params.title.clone(),
            tags: params.tags.clone(),
            negative_tags: params.negative_tags.clone(),
            model: Some(params.model.as_str().to_owned()),
            vocal_gender: params.vocal_gender.map(|g| g.as_str().to_owned()),
            style_weight: params.style_weight.map(|w| w.as_f64()),
            weirdness_constraint: params.weirdness_constraint.map(|w| w.as_f64()),
            audio_weight: params.audio_weight.map(|w| w.as_f64()),
        },
    }
}

/// One submit call. When the run is told to stop while it is on the wire, its answer
/// still counts if it comes within [`SUBMIT_GRACE`]; `None` means it never came.
async fn submit_call(
    ctx: &Context,
    request: &SubmitRequest,
) -> Option<Result<SubmitData, ApiError>> {
    let call = ctx.client.submit(request);
    tokio::pin!(call);
    tokio::select! {
        result = &mut call => return Some(result),
        _ = ctx.stop_all.cancelled() => {}
    }
    tokio::time::timeout(SUBMIT_GRACE, call).await.ok()
}

/// Submits the variant and returns its task id, or how the variant ended.
///
/// Every attempt is journaled before it goes out and its outcome right after, so no
/// crash can hide a task (an intent whose call never went out is withdrawn). Failures that prove no task exists are retried freely; an
/// outcome left unknown (a 5xx other than 503, a timeout, a broken connection) is
/// journaled and counted as such before the submit is made again.
async fn submit(ctx: &Context, index: usize, variant: &Variant) -> Result<String, VariantEnd> {
    if ctx.stop_submits.is_cancelled() {
        return Err(end(
            VariantStatus::Pending,
            "not submitted: the run stopped first",
        ));
    }
    let upload_url = stem_url(ctx, variant).await?;
    let request = submit_request(variant, upload_url, ctx.settings.callback_url.as_deref());
    let pacer = ctx.submit_pacer.as_ref();
    let stop = &ctx.stop_submits;
    let variant_id = || variant.id.clone();
    let (mut attempts, mut unknown) = (0, 0);
    loop {
        if stop.is_cancelled() {
            return Err(end(
                VariantStatus::Pending,
                "not submitted: the run stopped first",
            ));
        }
        // The intent is made durable before waiting for the pacer, so that the call goes
        // out the moment its slot comes: an fsync between the two would make the spacing
        // on the wire as uneven as the disk is slow.
        let intent = Record::SubmitIntent {
            variant_id: variant_id(),
            at: Utc::now(),
        };
        if let Err(err) = ctx.journal.append(intent).await {
            return Err(end(VariantStatus::Error, format!("not submitted: {err}")));
        }
        if !turn(pacer, stop).await {
            ctx.journal_or_log(Record::SubmitWithdrawn {
                variant_id: variant_id(),
            })
            .await;
            return Err(end(
                VariantStatus::Pending,
                "not submitted: the run stopped first",
            ));
        }
        attempts += 1;
        ctx.emit(WorkerEvent::Submitting { index }).await;
        let err = match submit_call(ctx, &request).await {
            None => {
                // The intent stays open in the journal: the next run counts it unknown.
                return Err(end(
                    VariantStatus::Pending,
                    "the run stopped while a submit was on the wire; its outcome is unknown",
                ));
            }
            Some(Ok(data)) => {
                let at = Utc::now();
                let task_id = data.task_id;
                ctx.journal_or_log(Record::Submitted {
                    variant_id: variant_id(),
                    task_id: task_id.clone(),
                    at,
                })
                .await;
                ctx.emit(WorkerEvent::Submitted {
                    index,
                    task_id: task_id.clone(),
                    at,
                })
                .await;
                info!(task_id, "submitted");
                return Ok(task_id);
            }
            Some(Err(err)) => err,
        };
        let verdict = classify(&err, CallKind::Submit);
        let created = match verdict {
            Verdict::OutcomeUnknown => Created::Unknown,
            _ => Created::No,
        };
        ctx.journal_or_log(Record::SubmitFailed {
            variant_id: variant_id(),
            created,
            error: err.to_string(),
        })
        .await;
        match verdict {
            Verdict::OutcomeUnknown => {
                unknown += 1;
                warn!(error = %err, "submit outcome unknown: the provider may have created a task");
                ctx.emit(WorkerEvent::SubmitOutcomeUnknown { index }).await;
            }
            Verdict::Retry { .. } => {}
            Verdict::Reject => {
                return Err(end(VariantStatus::Error, format!("submit rejected: {err}")))
            }
            Verdict::Stop(account) => {
                ctx.stop_account(account);
                return Err(end(
                    VariantStatus::Pending,
                    format!("not submitted: the account stopped the run ({err})"),
                ));
            }
        }
        if !ctx.retry.allows_another(attempts) {
            let unknown_note = match unknown {
                0 => String::new(),
                n => format!(", {n} with an unknown outcome (a task may exist)"),
            };
            return Err(end(
                VariantStatus::Error,
                format!("submit failed {attempts} times{unknown_note}: {err} (hint: re-run with --retry-failed)"),
            ));
        }
        if !back_off(pacer, &ctx.retry, attempts, &err, stop).await {
            return Err(end(
                VariantStatus::Pending,
                "not submitted again: the run stopped first",
            ));
        }
    }
}

/// The URL the provider fetches the variant's stem from: its own, or its local file's,
/// uploaded or published first.
async fn stem_url(ctx: &Context, variant: &Variant) -> Result<String, VariantEnd> {
    let local = match &variant.stem.source {
        StemSource::Url(url) => return Ok(url.clone()),
        StemSource::Local(local) => local,
    };
    match ctx.uploads.url_for(local).await {
        Ok(url) => Ok(url),
        Err(CallFailure::Stopped) => Err(end(
            VariantStatus::Pending,
            "not submitted: the run stopped first",
        )),
        Err(CallFailure::Failed { err, verdict }) => {
            if let Verdict::Stop(account) = verdict {
                ctx.stop_account(account);
                return Err(end(
                    VariantStatus::Pending,
                    format!("not submitted: the account stopped the run ({err})"),
                ));
            }
            Err(end(
                VariantStatus::Error,
                format!(
                    "not submitted: the upload of {} failed: {err}",
                    local.path.display()
                ),
            ))
        }
    }
}

/// A detail query with retries; an account stop it meets stops the run.
async fn query(ctx: &Context, task_id: &str) -> Result<TaskDetail, CallFailure> {
    let result = call_with_retries(ctx.poll_pacer.as_ref(), &ctx.retry, &ctx.stop_all, || {
        ctx.client.detail(task_id)
    })
    .await;
    if let Err(CallFailure::Failed {
        verdict: Verdict::Stop(account),
        ..
    }) = &result
    {
        ctx.stop_account(*account);
    }
    result
}

/// Polls a submitted task, first after `first_delay`, until it ends or times out, then
/// downloads its tracks. The timeout counts from now: the submit, or the resume of a task
/// from an earlier run.
async fn follow(
    ctx: &Context,
    variant: &Variant,
    task_id: &str,
    first_delay: Duration,
) -> VariantEnd {
    let started = Instant::now();
    let deadline = started + ctx.settings.task_timeout;
    let mut schedule =
        PollSchedule::new(ctx.settings.poll_interval, ctx.settings.poll_interval_max);
    let mut delay = first_delay;
    loop {
        let wake = (Instant::now() + delay).min(deadline);
        tokio::select! {
            _ = ctx.stop_all.cancelled() => {
                return end(VariantStatus::Pending, "the run stopped while the task was running");
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
        match query(ctx, task_id).await {
            Ok(detail) => match detail.status {
                TaskStatus::Finished => {
                    return download_tracks(ctx, variant, task_id, &detail.files).await
                }
                TaskStatus::Failed => {
                    let message = detail
                        .error_message
                        .filter(|m| !m.trim().is_empty())
                        .unwrap_or_else(|| "the provider reported the task failed".into());
                    return end(VariantStatus::Failed, message);
                }
                TaskStatus::NotStarted | TaskStatus::Running | TaskStatus::Unknown => {
                    delay = schedule.after_query(started.elapsed(), detail.progress);
                }
            },
            Err(CallFailure::Stopped) => {
                return end(
                    VariantStatus::Pending,
                    "the run stopped while the task was running",
                );
            }
            Err(CallFailure::Failed {
                err,
                verdict: Verdict::Stop(AccountStop::BadKey),
            }) => {
                return end(
                    VariantStatus::Pending,
                    format!("the account stopped the run ({err})"),
                );
            }
            Err(CallFailure::Failed {
                err,
                verdict: Verdict::Reject,
            }) => {
                return end(
                    VariantStatus::Error,
                    format!("task {task_id} query rejected: {err}"),
                );
            }
            Err(CallFailure::Failed { err, .. }) => {
                // The task exists and is paid for: keep asking until it times out.
                warn!(task_id, error = %err, "task query failed; trying again later");
                delay = schedule.after_query(started.elapsed(), None);
            }
        }
        if Instant::now() >= deadline {
            return end(
                VariantStatus::Timeout,
                format!(
                    "task {task_id} not finished after {}",
                    humantime::format_duration(ctx.settings.task_timeout)
                ),
            );
        }
    }
}

/// Why one track could not be downloaded.
enum TrackFailure {
    Stopped,
    Failed(String),
}

/// Downloads every track of a finished task (and covers when asked).
async fn download_tracks(
    ctx: &Context,
    variant: &Variant,
    task_id: &str,
    files: &[TrackFile],
) -> VariantEnd {
    if files.is_empty() {
        return end(VariantStatus::Error, "the task finished without tracks");
    }
    let folder = ctx.out_dir.join("audio").join(&variant.stem.name);
    if let Err(err) = tokio::fs::create_dir_all(&folder).await {
        return end(
            VariantStatus::Error,
            format!("cannot create {}: {err}", folder.display()),
        );
    }
    let downloads = files
        .iter()
        .enumerate()
        .map(|(i, file)| download_track(ctx, variant, task_id, i as u32 + 1, file));
    let mut tracks = Vec::with_capacity(files.len());
    let mut failures = Vec::new();
    for result in join_all(downloads).await {
        match result {
            Ok(track) => tracks.push(track),
            Err(TrackFailure::Stopped) => {
                return end(
                    VariantStatus::Pending,
                    "the run stopped during the downloads",
                );
            }
            Err(TrackFailure::Failed(message)) => failures.push(message),
        }
    }
    if !failures.is_empty() {
        return end(VariantStatus::Error, failures.join("; "));
    }
    VariantEnd {
        status: VariantStatus::Finished,
        tracks,
        error: None,
        at: Utc::now(),
    }
}

/// One track: downloaded, and journaled once its file is in place. A result URL that
/// answers 403, 404 or 410 has expired: the task's detail is asked for a fresh one once.
async fn download_track(
    ctx: &Context,
    variant: &Variant,
    task_id: &str,
    number: u32,
    file: &TrackFile,
) -> Result<TrackRecord, TrackFailure> {
    let name = format!(
        "{}-{number}.{}",
        variant.file_base(),
        extension_of(&file.audio_url, "mp3")
    );
    let relative = format!("audio/{}/{name}", variant.stem.name);
    let failed = |message: String| TrackFailure::Failed(format!("track {number}: {message}"));
    let mut url = file.audio_url.clone();
    let done = match download_with_retries(ctx, &url, &relative, Expect::Audio).await {
        Ok(done) => done,
        Err(DownloadFailure::Failed(err)) if err.is_gone() => {
            warn!(track = number, error = %err, "result URL expired; asking the provider for a fresh one");
            url = fresh_url(ctx, task_id, number, file)
                .await
                .map_err(|message| failed(format!("{err}; no fresh URL: {message}")))?;
            download_with_retries(ctx, &url, &relative, Expect::Audio)
                .await
                .map_err(|failure| failure.into_track(number))?
        }
        Err(failure) => return Err(failure.into_track(number)),
    };
    if let Some(image) = file
        .image_url
        .as_deref()
        .filter(|_| ctx.settings.download_covers)
    {
        let cover = format!(
            "audio/{}/{}-{number}.{}",
            variant.stem.name,
            variant.file_base(),
            extension_of(image, "jpeg")
        );
        if let Err(DownloadFailure::Failed(err)) =
            download_with_retries(ctx, image, &cover, Expect::Any).await
        {
            warn!(track = number, error = %err, "cover not downloaded");
        }
    }
    let entry = TrackEntry {
        track: number,
        audio_id: file.audio_id.clone(),
        file: relative,
        bytes: done.bytes,
        sha256: done.sha256,
        audio_url: url,
        duration_s: file.duration,
        modified_ns: done.modified_ns,
    };
    ctx.journal_or_log(Record::Track {
        variant_id: variant.id.clone(),
        task_id: task_id.to_owned(),
        entry: entry.clone(),
    })
    .await;
    Ok(TrackRecord::from(&entry))
}

/// The current URL of a track, from a fresh detail query.
async fn fresh_url(
    ctx: &Context,
    task_id: &str,
    number: u32,
    file: &TrackFile,
) -> Result<String, String> {
    let detail = match query(ctx, task_id).await {
        Ok(detail) => detail,
        Err(CallFailure::Stopped) => return Err("the run stopped".into()),
        Err(CallFailure::Failed { err, .. }) => return Err(err.to_string()),
    };
    let by_id = detail.files.iter().find(|f| f.audio_id == file.audio_id);
    let by_position = detail.files.get(number as usize - 1);
    by_id
        .or(by_position)
        .map(|f| f.audio_url.clone())
        .ok_or_else(|| format!("task {task_id} no longer lists track {number}"))
}

/// Why a download with retries gave up.
enum DownloadFailure {
    Stopped,
    Failed(DownloadError),
}

impl DownloadFailure {
    fn into_track(self, number: u32) -> TrackFailure {
        match self {
            DownloadFailure::Stopped => TrackFailure::Stopped,
            DownloadFailure::Failed(err) => TrackFailure::Failed(format!("track {number}: {err}")),
        }
    }
}

/// One file, with a download slot, retried on transient failures with a fresh temporary
/// file each time; raced against `stop_all` (a dropped download leaves nothing behind).
async fn download_with_retries(
    ctx: &Context,
    url: &str,
    relative: &str,
    expect: Expect,
) -> Result<Downloaded, DownloadFailure> {
    let dest = ctx.out_dir.join(relative);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = tokio::select! {
            _ = ctx.stop_all.cancelled() => return Err(DownloadFailure::Stopped),
            result = async {
                let _slot = ctx.download_slots.acquire().await;
                ctx.downloader.fetch(url, &dest, expect).await
            } => result,
        };
        match result {
            Ok(done) => return Ok(done),
            Err(err) if err.is_retryable() && ctx.retry.allows_another(attempt) => {
                warn!(attempt, error = %err, file = relative, "download failed; retrying");
                let wait = ctx.retry.delay(attempt, None, rand::random());
                tokio::select! {
                    _ = ctx.stop_all.cancelled() => return Err(DownloadFailure::Stopped),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            Err(err) => return Err(DownloadFailure::Failed(err)),
        }
    }
}
