//! The simulator's HTTP side: axum handlers over one shared, mutex-guarded state. Tasks
//! live in their ids ([`super::ticket`]); the state only counts, paces and rolls dice.
//!
//! Handlers never block the runtime they share with a `run --simulate`: track rendering
//! runs on a blocking thread ([`super::tracks`]), and no lock is held across an await.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::audio::Params;
use super::limits::SlidingWindows;
use super::ticket::{Fate, Ticket};
use super::tracks::{RenderCache, TrackSpec};
use super::{SimConfig, FAIL_MARKER, FAIL_MESSAGE, HANG_MARKER};
use crate::api::types::{
    Balance, Envelope, SubmitData, SubmitRequest, TaskDetail, TaskStatus, TrackFile, TASK_MODEL,
};

/// Counters of what the simulator has seen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SimStats {
    /// Submit calls, answered however.
    pub submit_calls: u64,
    /// Tasks created (each one billed).
    pub tasks_created: u64,
    /// Submit answers the client hung up on while the simulator held them back
    /// ([`super::Faults::submit_answer_delay`]): their tasks exist all the same.
    pub submit_answers_dropped: u64,
    /// Detail queries, answered however.
    pub detail_calls: u64,
    /// Track and cover downloads, answered however.
    pub download_calls: u64,
    /// Tracks rendered; a track served again from the cache is not rendered again.
    pub renders: u64,
    /// Upload calls, answered however.
    pub upload_calls: u64,
    /// Uploads accepted and kept.
    pub uploads: u64,
    /// Answers 429, all endpoints.
    pub rate_limited: u64,
    /// Answers 401.
    pub unauthorized: u64,
    /// Answers 402.
    pub no_credits: u64,
    /// Faults injected, all kinds.
    pub faults: u64,
    /// Stems fetched from a submit's `upload_url` elsewhere on this machine.
    pub stem_fetches: u64,
    /// Of those, fetches that did not serve an audio file (the task fails).
    pub stem_fetch_failures: u64,
}

/// What became of fetching a task's stem from its `upload_url`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum StemFetch {
    /// Not answered yet: the task waits for it.
    Pending,
    /// The URL served an audio file: this one.
    Served(Bytes),
    /// It did not: the task fails with this message.
    Failed(String),
}

/// One accepted submit.
#[derive(Clone, Debug)]
pub struct SubmitRecord {
    /// The task it created.
    pub task_id: String,
    /// When, from the simulator's start.
    pub at: Duration,
    /// What was sent.
    pub request: SubmitRequest,
}

/// A file uploaded to the simulator.
struct StoredUpload {
    url: String,
    bytes: Bytes,
    /// Its length, when it is a WAV the simulator can read.
    duration_ms: Option<u64>,
}

struct Inner {
    stats: SimStats,
    submissions: Vec<SubmitRecord>,
    uploads: Vec<StoredUpload>,
    submit_windows: SlidingWindows,
    detail_windows: SlidingWindows,
    upload_windows: SlidingWindows,
    credits: Option<u64>,
    dice: StdRng,
    expired_once: std::collections::HashSet<String>,
    /// By task id: the stems fetched from a URL elsewhere on this machine.
    stem_fetches: std::collections::HashMap<String, StemFetch>,
    /// By task id: its submit's `upload_url`, whose vocal its tracks mix in.
    task_stems: std::collections::HashMap<String, String>,
    /// Decoded vocals by `upload_url` (or `task:<id>` for a fetched one); `None` for a
    /// stem that is not a WAV the simulator reads.
    vocals: std::collections::HashMap<String, Option<Arc<Vec<f32>>>>,
}

pub(super) struct SimState {
    pub(super) config: SimConfig,
    base_url: String,
    started: Instant,
    inner: Mutex<Inner>,
    /// Fetches the stems of submits, as the provider does.
    fetcher: reqwest::Client,
    /// Apart from `inner`, so a lookup never waits behind the API's bookkeeping.
    renders: Mutex<RenderCache>,
}

impl SimState {
    pub(super) fn new(config: SimConfig, base_url: String) -> Self {
        let inner = Inner {
            stats: SimStats::default(),
            submissions: Vec::new(),
            uploads: Vec::new(),
            submit_windows: SlidingWindows::new(config.submit_limits.clone()),
            detail_windows: SlidingWindows::new(config.detail_limits.clone()),
            upload_windows: SlidingWindows::new(config.upload_limits.clone()),
            credits: config.credits,
            dice: StdRng::seed_from_u64(config.seed),
            expired_once: Default::default(),
            stem_fetches: Default::default(),
            task_stems: Default::default(),
            vocals: Default::default(),
        };
        SimState {
            config,
            base_url,
            started: Instant::now(),
            inner: Mutex::new(inner),
            fetcher: reqwest::Client::builder()
                .timeout(STEM_FETCH_TIMEOUT)
                .build()
                .unwrap_or_default(),
            renders: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A handler that panicked mid-update leaves counters, not broken invariants.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn stats(&self) -> SimStats {
        self.lock().stats.clone()
    }

    fn render_cache(&self) -> MutexGuard<'_, RenderCache> {
        // The cache is rebuilt from scratch on a miss: a poisoned one is still usable.
        self.renders
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn submissions(&self) -> Vec<SubmitRecord> {
        self.lock().submissions.clone()
    }

    pub(super) fn upload_urls(&self) -> Vec<String> {
        self.lock().uploads.iter().map(|u| u.url.clone()).collect()
    }

    /// The length of a stem the simulator holds itself, from a submit's `upload_url`: the
    /// generated tracks follow it.
    fn stem_duration_ms(&self, upload_url: &str) -> Option<u64> {
        let index: usize = upload_url
            .strip_prefix(&format!("{}/uploads/", self.base_url))?
            .split('/')
            .next()?
            .parse()
            .ok()?;
        self.lock().uploads.get(index.checked_sub(1)?)?.duration_ms
    }

    /// Track `track` of task `task_id`, with the task's vocal when the simulator holds it.
    pub(super) fn track_spec(&self, task_id: &str, track: u32) -> Option<TrackSpec> {
        let spec = TrackSpec::of(&self.config, task_id, track)?;
        Some(spec.with_vocal(self.vocal_of(task_id)))
    }

    /// The decoded vocal of a task's stem: uploaded here, or fetched for it.
    fn vocal_of(&self, task_id: &str) -> Option<Arc<Vec<f32>>> {
        let (key, bytes) = {
            let inner = self.lock();
            let url = inner.task_stems.get(task_id)?;
            if let Some(known) = inner.vocals.get(url) {
                return known.clone();
            }
            let fetched_key = format!("task:{task_id}");
            if let Some(known) = inner.vocals.get(&fetched_key) {
                return known.clone();
            }
            match inner.stem_fetches.get(task_id) {
                Some(StemFetch::Served(bytes)) => (fetched_key, bytes.clone()),
                Some(_) => return None,
                None => (url.clone(), self.uploaded(&inner, url)?),
            }
        };
        // Decoded outside the lock: a long stem takes a moment.
        let vocal = super::vocal::vocal_samples(&bytes).map(Arc::new);
        self.lock().vocals.insert(key, vocal.clone());
        vocal
    }

    /// The bytes of an upload of this simulator, by its URL.
    fn uploaded(&self, inner: &Inner, upload_url: &str) -> Option<Bytes> {
        let index: usize = upload_url
            .strip_prefix(&format!("{}/uploads/", self.base_url))?
            .split('/')
            .next()?
            .parse()
            .ok()?;
        Some(inner.uploads.get(index.checked_sub(1)?)?.bytes.clone())
    }

    /// Rolls the dice for a fault striking `share` of calls, and counts it.
    fn strikes(&self, share: f64) -> bool {
        if share <= 0.0 {
            return false;
        }
        let mut inner = self.lock();
        let hit = inner.dice.random::<f64>() < share;
        inner.stats.faults += u64::from(hit);
        hit
    }

    /// Creates (and bills) a task for an accepted submit, under the submit limits and the
    /// credits. Sync: a task exists as soon as this returns, whatever becomes of the answer.
    fn create_task(
        &self,
        request: SubmitRequest,
        fate: Fate,
        track_ms: u64,
    ) -> Result<Ticket, Refusal> {
        let now = Instant::now();
        let mut inner = self.lock();
        if let Err(wait) = inner.submit_windows.try_accept(now) {
            inner.stats.rate_limited += 1;
            return Err(Refusal::RateLimited(wait));
        }
        match inner.credits {
            Some(0) => {
                inner.stats.no_credits += 1;
                return Err(Refusal::NoCredits);
            }
            Some(left) => inner.credits = Some(left - 1),
            None => {}
        }
        inner.stats.tasks_created += 1;
        let number = inner.stats.tasks_created;
        let created_ms = now_ms();
        let ticket = Ticket {
            number,
            created_ms,
            params: Params::from_input(&request.input),
            seed: self.take_seed(number, created_ms, &request),
            fate,
            track_ms,
        };
        inner
            .task_stems
            .insert(ticket.to_string(), request.input.upload_url.clone());
        inner.submissions.push(SubmitRecord {
            task_id: ticket.to_string(),
            at: now.duration_since(self.started),
            request,
        });
        Ok(ticket)
    }

    /// The seed of a task's tracks: its own, so two submits of the same parameters (the
    /// takes of a variant) differ, yet fixed once the task exists (it is in the id).
    fn take_seed(&self, number: u64, created_ms: u64, request: &SubmitRequest) -> u64 {
        let mut hash = Sha256::new();
        hash.update(self.config.seed.to_le_bytes());
        hash.update(number.to_le_bytes());
        hash.update(created_ms.to_le_bytes());
        hash.update(request.input.tags.as_bytes());
        hash.update([0]);
        hash.update(request.input.negative_tags.as_bytes());
        u64::from_le_bytes(hash.finalize()[..8].try_into().unwrap_or_default())
    }

    fn detail(&self, id: &str, ticket: &Ticket) -> TaskDetail {
        let elapsed = now_ms().saturating_sub(ticket.created_ms) as f64 / 1000.0;
        let total = self.config.task_duration.as_secs_f64().max(1e-3);
        let fetch = self.lock().stem_fetches.get(id).cloned();
        let done =
            elapsed >= total && ticket.fate != Fate::Hang && fetch != Some(StemFetch::Pending);
        let fetch_failure = match fetch {
            Some(StemFetch::Failed(message)) => Some(message),
            _ => None,
        };
        let status = match (done, ticket.fate) {
            (true, _) if fetch_failure.is_some() => TaskStatus::Failed,
            (true, Fate::Fail) => TaskStatus::Failed,
            (true, _) => TaskStatus::Finished,
            (false, _) if elapsed < total * 0.1 => TaskStatus::NotStarted,
            (false, _) => TaskStatus::Running,
        };
        let progress = match status {
            TaskStatus::Finished => 100.0,
            TaskStatus::Running if ticket.fate == Fate::Hang => 50.0,
            TaskStatus::Running => (elapsed / total * 100.0).floor().min(99.0),
            _ => 0.0,
        };
        let files = if status == TaskStatus::Finished {
            (1..=self.config.tracks_per_task)
                .map(|n| TrackFile {
                    audio_id: format!("{id}-audio-{n}"),
                    audio_url: format!("{}/files/{id}/{n}.wav", self.base_url),
                    image_url: Some(format!("{}/files/{id}/{n}.png", self.base_url)),
                    title: None,
                    tags: None,
                    duration: Some(ticket.track_ms as f64 / 1000.0),
                    prompt: Some(String::new()),
                })
                .collect()
        } else {
            Vec::new()
        };
        TaskDetail {
            task_id: id.to_owned(),
            status,
            files,
            created_time: Some(provider_time(ticket.created_ms)),
            progress: Some(progress),
            error_message: (status == TaskStatus::Failed)
                .then(|| fetch_failure.unwrap_or_else(|| FAIL_MESSAGE.to_owned())),
        }
    }

    /// Whether the provider's fetch of `upload_url` is simulated: a URL elsewhere on this
    /// machine (the simulator never reaches out of it; its own uploads it holds).
    fn fetches(&self, upload_url: &str) -> bool {
        if upload_url.starts_with(&format!("{}/", self.base_url)) {
            return false;
        }
        let Ok(url) = url::Url::parse(upload_url) else {
            return false;
        };
        match url.host() {
            Some(url::Host::Domain(domain)) => domain == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        }
    }

    /// Fetches the stem of task `task_id` from `upload_url`, as the provider does after a
    /// submit: a URL that does not serve an audio file (expired, wrongly signed, gone)
    /// fails the task.
    fn fetch_stem(self: &Arc<Self>, task_id: String, upload_url: String) {
        self.lock()
            .stem_fetches
            .insert(task_id.clone(), StemFetch::Pending);
        let state = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(state.config.stem_fetch_delay).await;
            let outcome = match state.fetcher.get(&upload_url).send().await {
                Ok(answer) if answer.status().is_success() => match answer.bytes().await {
                    Ok(body) if crate::audio_format::sniff(&body).is_some() => {
                        StemFetch::Served(body)
                    }
                    Ok(_) => StemFetch::Failed("the file at upload_url is not audio".into()),
                    Err(err) => {
                        StemFetch::Failed(format!("cannot read upload_url: {}", err.without_url()))
                    }
                },
                Ok(answer) => {
                    StemFetch::Failed(format!("cannot fetch upload_url: HTTP {}", answer.status()))
                }
                // Without the URL: a presigned one carries the access key id.
                Err(err) => {
                    StemFetch::Failed(format!("cannot fetch upload_url: {}", err.without_url()))
                }
            };
            let mut inner = state.lock();
            inner.stats.stem_fetches += 1;
            inner.stats.stem_fetch_failures += u64::from(!matches!(outcome, StemFetch::Served(_)));
            inner.stem_fetches.insert(task_id, outcome);
        });
    }
}

/// How long the provider's fetch of a stem may take.
const STEM_FETCH_TIMEOUT: Duration = Duration::from_secs(30);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The provider's zone-less timestamp format.
fn provider_time(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

type Shared = Arc<SimState>;

pub(super) fn router(state: Shared) -> Router {
    Router::new()
        .route("/api/generate/submit", post(submit))
        .route("/api/generate/detail/music", get(detail))
        .route("/api/user/balance", get(balance))
        .route("/files/{task_id}/{file}", get(file))
        .route(
            "/api/common/upload/stream",
            post(upload).layer(DefaultBodyLimit::max(UPLOAD_LIMIT_BYTES)),
        )
        .route("/uploads/{number}/{name}", get(uploaded_file))
        .with_state(state)
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = json!({ "code": status.as_u16(), "msg": message });
    (status, Json(body)).into_response()
}

fn rate_limited(wait: Duration) -> Response {
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut response = error(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded");
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, seconds.into());
    response
}

/// An answer whose connection breaks after the status line: the client cannot know
/// what the server did.
fn broken(status: StatusCode, first: Bytes) -> Response {
    let chunks = [
        Ok(first),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "simulated connection reset",
        )),
    ];
    let mut response = Response::new(Body::from_stream(futures::stream::iter(chunks)));
    *response.status_mut() = status;
    response
}

/// What every API endpoint does first: slow answers, the bearer check, injected faults
/// that strike before any work. `Some` is the answer to give instead of the real one.
async fn preamble(state: &SimState, headers: &HeaderMap) -> Option<Response> {
    let faults = &state.config.faults;
    if !state.config.latency.is_zero() {
        tokio::time::sleep(state.config.latency).await;
    }
    if state.strikes(faults.slow) {
        tokio::time::sleep(faults.slow_by).await;
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let revoked = state
        .config
        .revoke_key_after_tasks
        .is_some_and(|after| state.lock().stats.tasks_created >= after);
    if revoked || given.strip_prefix("Bearer ") != Some(state.config.key.as_str()) {
        state.lock().stats.unauthorized += 1;
        return Some(error(StatusCode::UNAUTHORIZED, "invalid api key"));
    }
    if state.strikes(faults.unavailable) {
        return Some(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "service unavailable",
        ));
    }
    if state.strikes(faults.rate_limit) {
        state.lock().stats.rate_limited += 1;
        return Some(rate_limited(Duration::from_secs(1)));
    }
    if state.strikes(faults.reset) {
        return Some(broken(StatusCode::OK, Bytes::from_static(br#"{"code":"#)));
    }
    if state.strikes(faults.error_body) {
        return Some(Json(json!({ "code": 500, "msg": "internal error" })).into_response());
    }
    None
}

/// Why a submit created no task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// Past the submit limits; a call fits again after this long.
    RateLimited(Duration),
    /// The account has no credits left.
    NoCredits,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::RateLimited(wait) => rate_limited(wait),
            // The provider reports this in the body of an HTTP 200.
            Refusal::NoCredits => {
                Json(json!({ "code": 402, "msg": "insufficient credits" })).into_response()
            }
        }
    }
}

/// What a submit answers once its task exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SubmitAnswer {
    /// The task id, as documented.
    Created,
    /// A 500, though the task was created.
    ErrorAfterCreate,
    /// An HTTP 200 with `code` 200 and no readable task id: the API changed shape.
    Unreadable,
}

/// Counts a submit answer the client hung up on: armed once the task exists, disarmed
/// when the answer goes to axum. axum drops a handler's future when its client hangs up,
/// and dropping the future drops this.
struct AnswerWatch<'a> {
    state: &'a SimState,
    answered: bool,
}

impl<'a> AnswerWatch<'a> {
    fn arm(state: &'a SimState) -> Self {
        AnswerWatch {
            state,
            answered: false,
        }
    }

    fn disarm(mut self) {
        self.answered = true;
    }
}

impl Drop for AnswerWatch<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.state.lock().stats.submit_answers_dropped += 1;
        }
    }
}

async fn submit(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    state.lock().stats.submit_calls += 1;
    if let Some(response) = preamble(&state, &headers).await {
        return response;
    }
    let request: SubmitRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => return error(StatusCode::BAD_REQUEST, &format!("invalid body: {err}")),
    };
    if let Err(message) = check_submit(&request) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, &message);
    }
    let faults = &state.config.faults;
    let tags = request.input.tags.to_lowercase();
    let fate = if tags.contains(FAIL_MARKER) || state.strikes(faults.fail_tasks) {
        Fate::Fail
    } else if tags.contains(HANG_MARKER) || state.strikes(faults.hang_tasks) {
        Fate::Hang
    } else {
        Fate::Finish
    };
    let answer = if state.strikes(faults.submit_error_after_create) {
        SubmitAnswer::ErrorAfterCreate
    } else if state.strikes(faults.unreadable_submit) {
        SubmitAnswer::Unreadable
    } else {
        SubmitAnswer::Created
    };
    let track_ms = state
        .stem_duration_ms(&request.input.upload_url)
        .unwrap_or((state.config.track_seconds * 1000.0).round() as u64);
    let upload_url = request.input.upload_url.clone();
    // No await from here until the task exists: a client hanging up cannot undo it.
    let ticket = match state.create_task(request, fate, track_ms) {
        Ok(ticket) => ticket,
        Err(refusal) => return refusal.into_response(),
    };
    if state.fetches(&upload_url) {
        state.fetch_stem(ticket.to_string(), upload_url);
    }
    let watch = AnswerWatch::arm(&state);
    if !faults.submit_answer_delay.is_zero() {
        tokio::time::sleep(faults.submit_answer_delay).await;
    }
    watch.disarm();
    answer_submit(&ticket, answer)
}

/// The answer to a submit that created the task `ticket`.
fn answer_submit(ticket: &Ticket, answer: SubmitAnswer) -> Response {
    let created_time = provider_time(ticket.created_ms);
    match answer {
        SubmitAnswer::Created => Json(Envelope::ok(SubmitData {
            task_id: ticket.to_string(),
            status: Some(TaskStatus::NotStarted),
            created_time: Some(created_time),
        }))
        .into_response(),
        SubmitAnswer::ErrorAfterCreate => {
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
        SubmitAnswer::Unreadable => Json(json!({
            "code": 200,
            "msg": "success",
            "data": { "taskId": ticket.to_string(), "state": "queued", "createdAt": created_time },
        }))
        .into_response(),
    }
}

/// The provider's documented input rules.
fn check_submit(request: &SubmitRequest) -> Result<(), String> {
    let input = &request.input;
    if request.model != TASK_MODEL {
        return Err(format!("unknown model {:?}", request.model));
    }
    if input.upload_url.is_empty() {
        return Err("upload_url is required".into());
    }
    if input.title.chars().count() > 100 {
        return Err("title is longer than 100 characters".into());
    }
    if input.tags.chars().count() > 1000 || input.negative_tags.chars().count() > 1000 {
        return Err("tags are longer than 1000 characters".into());
    }
    if let Some(model) = &input.model {
        if !["V4_5PLUS", "V5"].contains(&model.as_str()) {
            return Err(format!("unknown input model {model:?}"));
        }
    }
    if let Some(gender) = &input.vocal_gender {
        if !["m", "f"].contains(&gender.as_str()) {
            return Err(format!("unknown vocal_gender {gender:?}"));
        }
    }
    let weights = [
        input.style_weight,
        input.weirdness_constraint,
        input.audio_weight,
    ];
    for weight in weights.into_iter().flatten() {
        let hundredths = weight * 100.0;
        if !(0.0..=1.0).contains(&weight) || (hundredths - hundredths.round()).abs() > 1e-6 {
            return Err(format!(
                "weight {weight} must be 0..1 with at most 2 decimals"
            ));
        }
    }
    Ok(())
}

#[derive(Deserialize)]
struct DetailQuery {
    task_id: String,
}

async fn detail(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<DetailQuery>,
) -> Response {
    state.lock().stats.detail_calls += 1;
    if let Some(response) = preamble(&state, &headers).await {
        return response;
    }
    {
        let mut inner = state.lock();
        if let Err(wait) = inner.detail_windows.try_accept(Instant::now()) {
            inner.stats.rate_limited += 1;
            return rate_limited(wait);
        }
    }
    match Ticket::parse(&query.task_id) {
        Some(ticket) => Json(Envelope::ok(state.detail(&query.task_id, &ticket))).into_response(),
        None => error(StatusCode::NOT_FOUND, "task not found"),
    }
}

async fn balance(State(state): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(response) = preamble(&state, &headers).await {
        return response;
    }
    let credits = state.lock().credits;
    let data = Balance {
        email: Some("sim@example.com".into()),
        credits_amount: credits.map_or(1_000_000.0, |c| c as f64),
    };
    Json(Envelope::ok(data)).into_response()
}

/// A 1×1 PNG: covers only need to be real images.
const COVER_PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4,
    0x89, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0x60, 0x60, 0x60, 0xF8,
    0x0F, 0x00, 0x01, 0x04, 0x01, 0x00, 0x5F, 0xE5, 0xC3, 0x4B, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
];

async fn file(
    State(state): State<Shared>,
    Path((task_id, file)): Path<(String, String)>,
) -> Response {
    state.lock().stats.download_calls += 1;
    let not_found = || error(StatusCode::NOT_FOUND, "no such file");
    let Some((number, extension)) = file.split_once('.') else {
        return not_found();
    };
    let Ok(number) = number.parse::<u32>() else {
        return not_found();
    };
    if extension == "png" {
        return match Ticket::parse(&task_id) {
            Some(_) => ([(header::CONTENT_TYPE, "image/png")], COVER_PNG).into_response(),
            None => not_found(),
        };
    }
    let Some(spec) = (extension == "wav")
        .then(|| TrackSpec::of(&state.config, &task_id, number))
        .flatten()
    else {
        return not_found();
    };
    let expired = state.config.result_ttl.is_some_and(|ttl| {
        let created_ms = Ticket::parse(&task_id).map_or(0, |t| t.created_ms);
        now_ms().saturating_sub(created_ms) > ttl.as_millis() as u64
    });
    if expired {
        return error(StatusCode::NOT_FOUND, "this file has expired");
    }
    let faults = &state.config.faults;
    if faults.expire_first_download {
        let mut inner = state.lock();
        if inner.expired_once.insert(format!("{task_id}/{number}")) {
            inner.stats.faults += 1;
            return error(StatusCode::GONE, "this link has expired");
        }
    }
    if state.strikes(faults.not_audio) {
        let page = "<!DOCTYPE html><html><body>502 Bad Gateway</body></html>";
        return ([(header::CONTENT_TYPE, "text/html")], page).into_response();
    }
    let bytes = match track(&state, task_id, number, spec).await {
        Ok(bytes) => bytes,
        Err(err) => {
            tracing::error!(error = %err, "rendering a track failed");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    };
    if state.strikes(faults.truncate) {
        let mut response = broken(StatusCode::OK, bytes.slice(..bytes.len() / 2));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            "audio/wav".parse().expect("a valid header"),
        );
        headers.insert(header::CONTENT_LENGTH, bytes.len().into());
        return response;
    }
    ([(header::CONTENT_TYPE, "audio/wav")], bytes).into_response()
}

/// The bytes of a track: from the cache, or rendered on a blocking thread and then cached.
/// The render caches its result itself, so a download abandoned mid-render still spares
/// the next one the work.
async fn track(
    state: &Shared,
    task_id: String,
    number: u32,
    spec: TrackSpec,
) -> Result<Bytes, tokio::task::JoinError> {
    if let Some(bytes) = state.render_cache().get(&task_id, number) {
        return Ok(bytes);
    }
    let state = Arc::clone(state);
    tokio::task::spawn_blocking(move || {
        // The vocal is decoded here the first time, off the async threads.
        let spec = spec.with_vocal(state.vocal_of(&task_id));
        let bytes = Bytes::from(spec.render());
        state.lock().stats.renders += 1;
        state.render_cache().insert(&task_id, number, bytes.clone());
        bytes
    })
    .await
}

/// The largest upload the simulator takes: above stembatch's own stem limit.
const UPLOAD_LIMIT_BYTES: usize = 128 * 1024 * 1024;

/// `POST /api/common/upload/stream`: keeps the `file` part and answers with a URL on
/// the simulator itself.
async fn upload(State(state): State<Shared>, headers: HeaderMap, mut form: Multipart) -> Response {
    state.lock().stats.upload_calls += 1;
    if let Some(response) = preamble(&state, &headers).await {
        return response;
    }
    {
        let mut inner = state.lock();
        if let Err(wait) = inner.upload_windows.try_accept(Instant::now()) {
            inner.stats.rate_limited += 1;
            return rate_limited(wait);
        }
    }
    let mut file = None;
    loop {
        match form.next_field().await {
            Ok(Some(field)) if field.name() == Some("file") => {
                let name = field.file_name().unwrap_or("stem").to_owned();
                match field.bytes().await {
                    Ok(bytes) => file = Some((name, bytes)),
                    Err(err) => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            &format!("unreadable file part: {err}"),
                        )
                    }
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(err) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("invalid multipart body: {err}"),
                )
            }
        }
    }
    let Some((name, bytes)) = file else {
        return error(StatusCode::BAD_REQUEST, "the file part is missing");
    };
    let duration_ms = hound::WavReader::new(std::io::Cursor::new(&bytes[..]))
        .ok()
        .map(|reader| {
            u64::from(reader.duration()) * 1000 / u64::from(reader.spec().sample_rate.max(1))
        });
    let expires_at = chrono::Utc::now()
        + chrono::Duration::from_std(state.config.upload_ttl).unwrap_or_default();
    let mut inner = state.lock();
    let number = inner.uploads.len() + 1;
    let safe_name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let url = format!("{}/uploads/{number}/{safe_name}", state.base_url);
    let size = bytes.len();
    inner.uploads.push(StoredUpload {
        url: url.clone(),
        bytes,
        duration_ms,
    });
    inner.stats.uploads += 1;
    Json(json!({
        "success": true,
        "code": 200,
        "msg": "File uploaded successfully",
        "data": {
            "file_id": format!("{number:032x}"),
            "file_name": safe_name,
            "file_size": size,
            "mime_type": "audio/wav",
            "file_url": url,
            "download_url": url,
            "expires_at": expires_at.format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
            "original_name": name,
            "upload_path": "temp/stembatch",
            "upload_time": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
        }
    }))
    .into_response()
}

/// `GET /uploads/{number}/{name}`: an uploaded file, as the provider would serve it.
async fn uploaded_file(
    State(state): State<Shared>,
    Path((number, _name)): Path<(usize, String)>,
) -> Response {
    let inner = state.lock();
    match number.checked_sub(1).and_then(|i| inner.uploads.get(i)) {
        Some(upload) => upload.bytes.clone().into_response(),
        None => error(StatusCode::NOT_FOUND, "no such upload"),
    }
}
