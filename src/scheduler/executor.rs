//! The executors: each carries out one [`Action`] of the run state (submit, poll,
//! download) and reports one [`Event`]. They decide nothing about money: a failed submit
//! is reported, never repeated here; retries of calls that cost nothing go through the
//! one retry path ([`super::retrying`]). A track that landed is decoded and judged
//! ([`crate::qc`]) before it is reported. A track never overwrites a different file in
//! place: one of the manifest's moves it aside to `superseded/` first; an orphan's (a paid
//! task of a variant no longer in the manifest) lands in `superseded/` beside it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::events::{submit_record, Action, Event, JournalFailure, StemFailure, TrackFailure};
use super::pacer::Pacer;
use super::rerun;
use super::retrying::{
    go_on_slot, hold_off, sleep, sleep_until, wait_for_slot, with_retries, CallFailure,
};
use super::upload::{StemUrl, Uploads};
use crate::api::retry::{is_rate_limited, RetryPolicy};
use crate::api::types::{SubmitInput, SubmitRequest, TrackFile, TASK_MODEL};
use crate::api::{ApiClient, ApiError};
use crate::download::{extension_of, DownloadError, Downloaded, Downloader, Expect, Place};
use crate::journal::format::Record;
use crate::journal::writer::JournalWriter;
use crate::manifest::RunSettings;
use crate::outcome::TrackRecord;
use crate::qc::{self, TrackQc, Verdict};
use crate::variant::{StemSource, Variant, VariantId, VariantTable};

/// How long before its slot a submit's intent is journaled: one fsync with room to
/// spare. The call then goes out on its slot, and a crash leaves its outcome unknown only
/// within this window and the call itself.
const INTENT_LEAD: Duration = Duration::from_millis(50);

/// What every executor shares.
pub(super) struct Executor {
    pub variants: Arc<VariantTable>,
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
    /// Cancelled when nothing more may be submitted (nor uploaded for a submit).
    pub stop_submits: CancellationToken,
    /// Cancelled when polls and downloads stop too.
    pub stop_work: CancellationToken,
}

impl Executor {
    /// Carries out `action`; `None` for the actions the coordinator carries out itself.
    pub async fn execute(self: Arc<Self>, action: Action) -> Option<Event> {
        Some(match action {
            Action::Submit { id, after } => {
                // Built when it starts, dropped when its submit is done.
                let variant = self.variants.get(&id).expect("a variant of the run");
                self.submit(&variant, after).await
            }
            Action::Poll { id, task_id, after } => self.poll(id, &task_id, after).await,
            Action::Download {
                id,
                task_id,
                number,
                file,
            } => {
                let variant = self.variants.get(&id);
                self.download(id.clone(), variant.as_ref(), task_id, number, &file)
                    .await
            }
            Action::End { .. } | Action::Stop(_) => return None,
        })
    }

    /// Stem, slot, URL, intent, call: a presigned URL is minted when the slot comes, and
    /// the intent is journaled just before it; once the call is on the wire it is never cancelled: its answer says whether a task
    /// was created, which is worth waiting for (the HTTP timeout bounds the wait).
    async fn submit(&self, variant: &Variant, after: Duration) -> Event {
        let id = variant.id.clone();
        let withdrawn = |intent_journaled| Event::SubmitWithdrawn {
            id: id.clone(),
            intent_journaled,
        };
        if !sleep(after, &self.stop_submits).await {
            return withdrawn(false);
        }
        let stem = match self.stem_url(variant).await {
            Ok(stem) => stem,
            Err(CallFailure::Stopped) => return withdrawn(false),
            Err(CallFailure::Failed(error)) => return Event::StemUnavailable { id, error },
        };
        loop {
            // Never a slot sooner than the lead: the intent's fsync must fit before it, or
            // the call would go out late and squeeze the gap to the next one.
            let pacer = self.submit_pacer.as_ref();
            let Some(slot) = wait_for_slot(pacer, INTENT_LEAD, &self.stop_submits).await else {
                return withdrawn(false);
            };
            // Presigned now, not before the wait for the slot, which the URL must not spend.
            let upload_url = match self.uploads.url(stem.clone()).await {
                Ok(url) => url,
                Err(error) => return Event::StemUnavailable { id, error },
            };
            let request =
                submit_request(variant, upload_url, self.settings.callback_url.as_deref());
            let intent = Record::SubmitIntent {
                variant_id: id.clone(),
                at: Utc::now(),
            };
            if let Err(err) = self.journal.append(intent).await {
                error!(error = %err, "cannot journal the submit intent; submitting nothing more");
                return Event::JournalFailed {
                    id: Some(id),
                    disk_full: err.is_disk_full(),
                };
            }
            if !sleep_until(slot, &self.stop_submits).await {
                return withdrawn(true);
            }
            match go_on_slot(pacer, slot, true, &self.stop_submits).await {
                Some(true) => return self.call(id, &request).await,
                Some(false) => {}
                None => return withdrawn(true),
            }
            // The slot passed between the intent and the call (the process was stopped):
            // given up. The intent is withdrawn first, durably, so that it never reads as
            // a submit that may have gone out; the next slot gets an intent of its own.
            warn!("the submit slot passed while the process could not send: waiting for a new one");
            let withdrawal = Record::SubmitWithdrawn {
                variant_id: id.clone(),
            };
            if let Err(err) = self.journal.append(withdrawal).await {
                error!(error = %err, "cannot journal the withdrawn intent; submitting nothing more");
                return Event::JournalFailed {
                    id: Some(id),
                    disk_full: err.is_disk_full(),
                };
            }
        }
    }

    /// The submit call itself, its outcome journaled the moment the answer arrives.
    async fn call(&self, id: VariantId, request: &SubmitRequest) -> Event {
        let answer = self.client.submit(request).await;
        let at = Utc::now();
        let outcome = answer.as_ref().map(|data| (data.task_id.as_str(), at));
        let unjournaled = match self.journal.append(submit_record(&id, outcome)).await {
            Ok(()) => None,
            Err(err) => {
                error!(variant_id = %id, error = %err, "cannot journal the submit's outcome; buying nothing more");
                Some(JournalFailure {
                    disk_full: err.is_disk_full(),
                })
            }
        };
        let error = match answer {
            Ok(data) => {
                info!(task_id = %data.task_id, "submitted");
                return Event::Submitted {
                    id,
                    task_id: data.task_id,
                    at,
                    unjournaled,
                };
            }
            Err(error) => error,
        };
        if is_rate_limited(&error) {
            let wait = self.retry.delay(1, retry_after(&error), 1.0);
            // Raced against the stop: the outcome is journaled and must be reported.
            hold_off(self.submit_pacer.as_ref(), wait, &self.stop_submits).await;
        }
        warn!(error = %error, "submit failed");
        match unjournaled {
            // An open intent reads as an unknown outcome: never bought again unasked.
            Some(failure) => Event::JournalFailed {
                id: Some(id),
                disk_full: failure.disk_full,
            },
            None => Event::SubmitFailed { id, error },
        }
    }

    /// The URL the provider fetches the variant's stem from: its own, or its local
    /// file's, uploaded or published first.
    async fn stem_url(&self, variant: &Variant) -> Result<StemUrl, CallFailure<StemFailure>> {
        match &variant.stem.source {
            StemSource::Url(url) => Ok(StemUrl::Ready(url.clone())),
            StemSource::Local(local) => self.uploads.url_for(local).await,
        }
    }

    async fn poll(&self, id: VariantId, task_id: &str, after: Duration) -> Event {
        if !sleep(after, &self.stop_work).await {
            return Event::PollStopped { id };
        }
        match self.query(task_id).await {
            Ok(detail) => Event::Polled { id, detail },
            Err(CallFailure::Stopped) => Event::PollStopped { id },
            Err(CallFailure::Failed(error)) => {
                warn!(task_id, error = %error, "task query failed");
                Event::PollFailed { id, error }
            }
        }
    }

    async fn query(
        &self,
        task_id: &str,
    ) -> Result<crate::api::types::TaskDetail, CallFailure<ApiError>> {
        let pacer = Some(self.poll_pacer.as_ref());
        with_retries(pacer, &self.retry, &self.stop_work, || {
            self.client.detail(task_id)
        })
        .await
    }

    /// One track: downloaded into place (and its cover, when asked). A result URL that
    /// answers 403, 404 or 410 has expired: the task's detail is asked for a fresh one once.
    /// `variant` is `None` for an orphan: its track lands in `superseded/` under its old
    /// variant id ([`rerun::orphan_track_path`]).
    async fn download(
        &self,
        id: VariantId,
        variant: Option<&Variant>,
        task_id: String,
        number: u32,
        file: &TrackFile,
    ) -> Event {
        let failed = |failure| Event::TrackFailed {
            id: id.clone(),
            number,
            failure,
        };
        let ext = extension_of(&file.audio_url, "mp3");
        let (base, relative, place) = match variant {
            Some(variant) => {
                let base = format!(
                    "audio/{}/{}-{number}",
                    variant.stem.name,
                    variant.file_base()
                );
                let relative = format!("{base}.{ext}");
                let aside = self.out_dir.join(rerun::changed_path(&relative));
                (Some(base), relative, Place::MoveAside(aside))
            }
            None => (
                None,
                rerun::orphan_track_path(&id, number, &ext),
                Place::Beside,
            ),
        };
        // The download makes the track's folder, in the blocking call that writes it.
        let fetched = self
            .fetch_track(&task_id, number, file, &relative, &place)
            .await;
        let (url, done) = match fetched {
            Ok(fetched) => fetched,
            Err(failure) => return failed(failure),
        };
        // Where it landed: beside a different file, an orphan's takes a free name.
        let relative = done
            .path
            .strip_prefix(&self.out_dir)
            .ok()
            .and_then(|p| p.to_str())
            .map_or(relative, |p| p.replace('\\', "/"));
        let (qc, wave) = check_quality(done.path.clone(), done.body, file.duration).await;
        if qc.verdict != Verdict::Ok {
            warn!(track = number, qc = %qc.verdict, file = %relative, "track failed quality control; kept");
        }
        if let (Some(image), Some(base)) = (file.image_url.as_deref(), base) {
            if self.settings.download_covers {
                let cover = format!("{base}.{}", extension_of(image, "jpeg"));
                let aside = Place::MoveAside(self.out_dir.join(rerun::changed_path(&cover)));
                if let Err(CallFailure::Failed(err)) =
                    self.fetch(image, &cover, Expect::Any, &aside).await
                {
                    warn!(track = number, error = %err, "cover not downloaded");
                }
            }
        }
        Event::TrackDownloaded {
            id,
            task_id,
            track: TrackRecord {
                number,
                audio_id: file.audio_id.clone(),
                duration_s: file.duration,
                file: relative,
                bytes: done.bytes,
                sha256: done.sha256,
                audio_url: url,
                modified_ns: done.modified_ns,
                qc: Some(qc),
                wave,
            },
        }
    }

    /// The track's audio into `relative`; when its URL has expired (403, 404, 410), from
    /// a fresh URL asked of the task. Returns the URL it came from.
    async fn fetch_track(
        &self,
        task_id: &str,
        number: u32,
        file: &TrackFile,
        relative: &str,
        place: &Place,
    ) -> Result<(String, Downloaded), TrackFailure> {
        let first = self
            .fetch(&file.audio_url, relative, Expect::Audio, place)
            .await;
        let download = match first {
            Ok(done) => return Ok((file.audio_url.clone(), done)),
            Err(CallFailure::Failed(err)) if err.is_gone() => err,
            Err(failure) => return Err(failure.into()),
        };
        warn!(track = number, error = %download, "result URL expired; asking the provider for a fresh one");
        let url = self
            .fresh_url(task_id, number, file)
            .await
            .map_err(|reason| TrackFailure::NoFreshUrl { download, reason })?;
        let done = self.fetch(&url, relative, Expect::Audio, place).await?;
        Ok((url, done))
    }

    /// One file, with a download slot, retried on transient failures with a fresh
    /// temporary file each time (a dropped download leaves nothing behind).
    async fn fetch(
        &self,
        url: &str,
        relative: &str,
        expect: Expect,
        place: &Place,
    ) -> Result<Downloaded, CallFailure<DownloadError>> {
        let dest = self.out_dir.join(relative);
        with_retries(None, &self.retry, &self.stop_work, || async {
            let _slot = self.download_slots.acquire().await;
            self.downloader.fetch(url, &dest, expect, place).await
        })
        .await
    }

    /// The current URL of a track, from a fresh detail query.
    async fn fresh_url(
        &self,
        task_id: &str,
        number: u32,
        file: &TrackFile,
    ) -> Result<String, String> {
        let detail = match self.query(task_id).await {
            Ok(detail) => detail,
            Err(CallFailure::Stopped) => return Err("the run stopped".into()),
            Err(CallFailure::Failed(err)) => return Err(err.to_string()),
        };
        let by_id = detail.files.iter().find(|f| f.audio_id == file.audio_id);
        let by_position = detail.files.get(number as usize - 1);
        by_id
            .or(by_position)
            .map(|f| f.audio_url.clone())
            .ok_or_else(|| format!("task {task_id} no longer lists track {number}"))
    }
}

/// Decodes a track that just landed, once, for its verdict and its waveform, on a
/// blocking thread: CPU work on a file, done while other tracks download rather than all
/// at the run's end; from its `body` when the download kept it, or else read from `path`.
/// A decoder that panics (a malformed file can find a bug) makes the track undecodable,
/// not the run fail.
async fn check_quality(
    path: PathBuf,
    body: Option<bytes::Bytes>,
    expected_duration: Option<f64>,
) -> (TrackQc, Option<String>) {
    let checked = tokio::task::spawn_blocking(move || {
        let checked = match body {
            Some(body) => qc::check_bytes(body, &path, expected_duration),
            None => qc::check(&path, expected_duration),
        };
        (checked.qc, checked.wave)
    });
    match checked.await {
        Ok(checked) => checked,
        Err(err) => {
            warn!(error = %err, "decoding the track failed; counted undecodable");
            (TrackQc::undecodable(), None)
        }
    }
}

impl From<CallFailure<DownloadError>> for TrackFailure {
    fn from(failure: CallFailure<DownloadError>) -> Self {
        match failure {
            CallFailure::Stopped => TrackFailure::Stopped,
            CallFailure::Failed(err) => TrackFailure::Download(err),
        }
    }
}

fn retry_after(error: &ApiError) -> Option<Duration> {
    match error {
        ApiError::Status { retry_after, .. } => *retry_after,
        _ => None,
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
