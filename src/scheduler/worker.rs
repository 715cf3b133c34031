//! One variant's way through the API: pace → submit → poll → download. Workers decide
//! nothing about other variants; they report events up to the coordinator.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex;

use chrono::Utc;
use futures::future::try_join_all;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use super::pacer::Pacer;
use super::poll::PollSchedule;
use super::state::{TrackRecord, VariantEnd, VariantStatus, WorkerEvent};
use crate::api::retry::{classify, AccountStop, CallKind, RetryPolicy, Verdict};
use crate::api::types::{SubmitInput, SubmitRequest, TaskStatus, TrackFile, TASK_MODEL};
use crate::api::{ApiClient, ApiError};
use crate::download::{extension_of, Downloaded, Downloader, Expect};
use crate::manifest::RunSettings;
use crate::variant::{StemSource, Variant};

/// What every worker shares.
pub(super) struct Context {
    pub client: ApiClient,
    pub downloader: Downloader,
    pub submit_pacer: std::sync::Arc<dyn Pacer>,
    pub poll_pacer: std::sync::Arc<dyn Pacer>,
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

/// Why a call with retries gave up.
struct CallFailure {
    /// The last error; `None` when cancelled before a call went out.
    err: Option<ApiError>,
    verdict: Verdict,
    attempts: u32,
}

impl CallFailure {
    fn describe(&self) -> String {
        match &self.err {
            Some(err) => err.to_string(),
            None => "cancelled".into(),
        }
    }
}

/// Runs one variant to its end for this run and reports it.
pub(super) async fn run_variant(ctx: &Context, index: usize, variant: &Variant) {
    let span = tracing::info_span!(
        "variant",
        variant_id = %variant.id,
        stem = %variant.stem.name,
        variant = %variant.name,
        take = variant.take,
    );
    async {
        let end = match submit(ctx, index, variant).await {
            Ok((task_id, submitted)) => follow(ctx, variant, &task_id, submitted).await,
            Err(end) => end,
        };
        match &end.error {
            None => info!(
                status = end.status.as_str(),
                tracks = end.tracks.len(),
                "variant ended"
            ),
            Some(error) => warn!(status = end.status.as_str(), error = %error, "variant ended"),
        }
        ctx.emit(WorkerEvent::Ended { index, end }).await;
    }
    .instrument(span)
    .await
}

fn end(status: VariantStatus, error: impl Into<String>) -> VariantEnd {
    VariantEnd {
        status,
        tracks: Vec::new(),
        error: Some(error.into()),
        at: Utc::now(),
    }
}

/// The submit body for a variant.
pub(crate) fn submit_request(variant: &Variant, callback_url: Option<&str>) -> SubmitRequest {
    let params = &variant.params;
    let upload_url = match &variant.stem.source {
        StemSource::Url(url) => url.clone(),
    };
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

/// Makes one API call, paced, as often as the failure policy allows; gives up at once
/// when `stop` is cancelled.
async fn call_with_retries<T, F, Fut>(
    ctx: &Context,
    pacer: &dyn Pacer,
    kind: CallKind,
    stop: &CancellationToken,
    mut call: F,
) -> Result<T, CallFailure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let mut attempts = 0;
    let cancelled = |attempts, err| CallFailure {
        err,
        verdict: Verdict::Reject,
        attempts,
    };
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return Err(cancelled(attempts, None)),
            _ = pacer.ready() => {}
        }
        attempts += 1;
        let err = match call().await {
            Ok(value) => return Ok(value),
            Err(err) => err,
        };
        let verdict = classify(&err, kind);
        match verdict {
            Verdict::Retry { after } if ctx.retry.allows_another(attempts) => {
                if let Some(after) = after {
                    pacer.hold_off(after);
                }
                let wait = ctx.retry.delay(attempts, after, rand::random());
                tracing::debug!(attempt = attempts, error = %err, ?wait, "retrying");
                tokio::select! {
                    _ = stop.cancelled() => return Err(cancelled(attempts, Some(err))),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            verdict => {
                if let Verdict::Stop(account) = verdict {
                    ctx.stop_account(account);
                }
                return Err(CallFailure {
                    err: Some(err),
                    verdict,
                    attempts,
                });
            }
        }
    }
}

/// Submits the variant; the task id and when it was created, or how the variant ended.
async fn submit(
    ctx: &Context,
    index: usize,
    variant: &Variant,
) -> Result<(String, Instant), VariantEnd> {
    let request = submit_request(variant, ctx.settings.callback_url.as_deref());
    let attempt = || async {
        ctx.emit(WorkerEvent::Submitting { index }).await;
        ctx.client.submit(&request).await
    };
    let stop = &ctx.stop_submits;
    match call_with_retries(ctx, ctx.submit_pacer.as_ref(), CallKind::Submit, stop, attempt).await {
        Ok(data) => {
            let submitted = Instant::now();
            ctx.emit(WorkerEvent::Submitted {
                index,
                task_id: data.task_id.clone(),
                at: Utc::now(),
            })
            .await;
            info!(task_id = %data.task_id, "submitted");
            Ok((data.task_id, submitted))
        }
        Err(failure) => Err(match (failure.err.is_none(), failure.verdict) {
            (true, _) => end(VariantStatus::Pending, "not submitted: the run stopped first"),
            (false, Verdict::Stop(_)) => end(
                VariantStatus::Pending,
                format!("not submitted: the account stopped the run ({})", failure.describe()),
            ),
            (false, Verdict::OutcomeUnknown) => end(
                VariantStatus::Error,
                format!(
                    "submit outcome unknown ({}); the provider may have created a task: re-run with --retry-failed to submit again",
                    failure.describe()
                ),
            ),
            (false, Verdict::Retry { .. }) => end(
                VariantStatus::Error,
                format!("submit failed after {} attempts: {}", failure.attempts, failure.describe()),
            ),
            (false, Verdict::Reject) => {
                end(VariantStatus::Error, format!("submit rejected: {}", failure.describe()))
            }
        }),
    }
}

/// Polls a submitted task until it ends or times out, then downloads its tracks.
async fn follow(ctx: &Context, variant: &Variant, task_id: &str, submitted: Instant) -> VariantEnd {
    let deadline = submitted + ctx.settings.task_timeout;
    let mut schedule =
        PollSchedule::new(ctx.settings.poll_interval, ctx.settings.poll_interval_max);
    let mut delay = schedule.first_delay();
    loop {
        let wake = (Instant::now() + delay).min(deadline);
        tokio::select! {
            _ = ctx.stop_all.cancelled() => {
                return end(VariantStatus::Pending, "the run stopped while the task was running");
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
        let query = || ctx.client.detail(task_id);
        let stop = &ctx.stop_all;
        match call_with_retries(
            ctx,
            ctx.poll_pacer.as_ref(),
            CallKind::Idempotent,
            stop,
            query,
        )
        .await
        {
            Ok(detail) => match detail.status {
                TaskStatus::Finished => return download_tracks(ctx, variant, &detail.files).await,
                TaskStatus::Failed => {
                    let message = detail
                        .error_message
                        .filter(|m| !m.trim().is_empty())
                        .unwrap_or_else(|| "the provider reported the task failed".into());
                    return end(VariantStatus::Failed, message);
                }
                TaskStatus::NotStarted | TaskStatus::Running | TaskStatus::Unknown => {
                    delay = schedule.after_query(submitted.elapsed(), detail.progress);
                }
            },
            Err(failure) if failure.err.is_none() || ctx.stop_all.is_cancelled() => {
                return end(
                    VariantStatus::Pending,
                    format!(
                        "the run stopped while the task was running ({})",
                        failure.describe()
                    ),
                );
            }
            Err(failure) if failure.verdict == Verdict::Reject => {
                return end(
                    VariantStatus::Error,
                    format!("task query rejected: {}", failure.describe()),
                );
            }
            Err(failure) => {
                // The task exists and is paid for: keep asking until it times out.
                warn!(task_id, error = %failure.describe(), "task query failed; trying again later");
                delay = schedule.after_query(submitted.elapsed(), None);
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

/// Downloads every track of a finished task (and covers when asked).
async fn download_tracks(ctx: &Context, variant: &Variant, files: &[TrackFile]) -> VariantEnd {
    if files.is_empty() {
        return end(VariantStatus::Error, "the task finished without tracks");
    }
    let folder = PathBuf::from("audio").join(&variant.stem.name);
    if let Err(err) = tokio::fs::create_dir_all(ctx.out_dir.join(&folder)).await {
        return end(
            VariantStatus::Error,
            format!("cannot create {}: {err}", folder.display()),
        );
    }
    let base = &variant.file_base();
    let downloads = files.iter().enumerate().map(|(i, file)| {
        let number = i + 1;
        let name = format!("{base}-{number}.{}", extension_of(&file.audio_url, "mp3"));
        let relative = format!("audio/{}/{name}", variant.stem.name);
        async move {
            let done = download_with_retries(ctx, &file.audio_url, &relative, Expect::Audio)
                .await
                .map_err(|err| format!("track {number}: {err}"))?;
            if let Some(image) = file
                .image_url
                .as_deref()
                .filter(|_| ctx.settings.download_covers)
            {
                let cover = format!(
                    "audio/{}/{base}-{number}.{}",
                    variant.stem.name,
                    extension_of(image, "jpeg")
                );
                if let Err(err) = download_with_retries(ctx, image, &cover, Expect::Any).await {
                    warn!(track = number, error = %err, "cover not downloaded");
                }
            }
            Ok::<_, String>(TrackRecord {
                audio_id: file.audio_id.clone(),
                duration_s: file.duration,
                file: relative,
                bytes: done.bytes,
                sha256: done.sha256,
                audio_url: file.audio_url.clone(),
            })
        }
    });
    match try_join_all(downloads).await {
        Ok(tracks) => VariantEnd {
            status: VariantStatus::Finished,
            tracks,
            error: None,
            at: Utc::now(),
        },
        Err(message) => end(VariantStatus::Error, message),
    }
}

/// One file, with a download slot, retried on transient failures with a fresh temporary
/// file each time.
async fn download_with_retries(
    ctx: &Context,
    url: &str,
    relative: &str,
    expect: Expect,
) -> Result<Downloaded, String> {
    let dest = ctx.out_dir.join(relative);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = {
            let _slot = ctx
                .download_slots
                .acquire()
                .await
                .map_err(|e| e.to_string())?;
            ctx.downloader.fetch(url, &dest, expect).await
        };
        match result {
            Ok(done) => return Ok(done),
            Err(err) if err.is_retryable() && ctx.retry.allows_another(attempt) => {
                warn!(attempt, error = %err, file = relative, "download failed; retrying");
                tokio::time::sleep(ctx.retry.delay(attempt, None, rand::random())).await;
            }
            Err(err) => return Err(format!("{err} (after {attempt} attempts)")),
        }
    }
}
