//! The simulator's HTTP side: axum handlers over one shared, mutex-guarded state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::limits::SlidingWindows;
use super::{audio, SimConfig, FAIL_MARKER, FAIL_MESSAGE, HANG_MARKER};
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
    /// Detail queries, answered however.
    pub detail_calls: u64,
    /// Track and cover downloads.
    pub download_calls: u64,
    /// Answers 429, all endpoints.
    pub rate_limited: u64,
    /// Answers 401.
    pub unauthorized: u64,
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

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fate {
    Finish,
    Fail,
    Hang,
}

#[derive(Debug)]
struct Task {
    created: Instant,
    tags: String,
    seed: u64,
    fate: Fate,
}

#[derive(Default)]
struct Inner {
    stats: SimStats,
    tasks: HashMap<String, Task>,
    submissions: Vec<SubmitRecord>,
    submit_windows: SlidingWindows,
    detail_windows: SlidingWindows,
}

pub(super) struct SimState {
    pub(super) config: SimConfig,
    base_url: String,
    started: Instant,
    inner: Mutex<Inner>,
}

impl SimState {
    pub(super) fn new(config: SimConfig, base_url: String) -> Self {
        let inner = Inner {
            submit_windows: SlidingWindows::new(config.submit_limits.clone()),
            detail_windows: SlidingWindows::new(config.detail_limits.clone()),
            ..Inner::default()
        };
        SimState {
            config,
            base_url,
            started: Instant::now(),
            inner: Mutex::new(inner),
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

    pub(super) fn submissions(&self) -> Vec<SubmitRecord> {
        self.lock().submissions.clone()
    }

    pub(super) fn track_bytes(&self, task_id: &str, track: u32) -> Option<Vec<u8>> {
        let (tags, seed) = {
            let inner = self.lock();
            let task = inner.tasks.get(task_id)?;
            (task.tags.clone(), task.seed)
        };
        (1..=self.config.tracks_per_task).contains(&track).then(|| {
            audio::render_wav(
                &tags,
                seed.wrapping_add(u64::from(track)),
                self.config.track_seconds,
            )
        })
    }

    fn detail(&self, id: &str, task: &Task, now: Instant) -> TaskDetail {
        let elapsed = now.duration_since(task.created).as_secs_f64();
        let total = self.config.task_duration.as_secs_f64().max(1e-3);
        let done = elapsed >= total && task.fate != Fate::Hang;
        let status = match (done, task.fate) {
            (true, Fate::Fail) => TaskStatus::Failed,
            (true, _) => TaskStatus::Finished,
            (false, _) if elapsed < total * 0.1 => TaskStatus::NotStarted,
            (false, _) => TaskStatus::Running,
        };
        let progress = match status {
            TaskStatus::Finished => 100.0,
            TaskStatus::Running if task.fate == Fate::Hang => 50.0,
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
                    tags: Some(task.tags.clone()),
                    duration: Some(self.config.track_seconds),
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
            created_time: Some(provider_time(task.created, self.started)),
            progress: Some(progress),
            error_message: (status == TaskStatus::Failed).then(|| FAIL_MESSAGE.to_owned()),
        }
    }
}

/// The provider's zone-less timestamp format.
fn provider_time(at: Instant, started: Instant) -> String {
    let wall = chrono::Utc::now()
        - chrono::Duration::from_std(started.elapsed()).unwrap_or_default()
        + chrono::Duration::from_std(at.duration_since(started)).unwrap_or_default();
    wall.format("%Y-%m-%dT%H:%M:%S").to_string()
}

type Shared = Arc<SimState>;

pub(super) fn router(state: Shared) -> Router {
    Router::new()
        .route("/api/generate/submit", post(submit))
        .route("/api/generate/detail/music", get(detail))
        .route("/api/user/balance", get(balance))
        .route("/files/{task_id}/{file}", get(file))
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

/// The bearer check every API endpoint starts with: the 401 answer when it fails.
fn unauthorized(state: &SimState, headers: &HeaderMap) -> Option<Response> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if given.strip_prefix("Bearer ") == Some(state.config.key.as_str()) {
        return None;
    }
    state.lock().stats.unauthorized += 1;
    Some(error(StatusCode::UNAUTHORIZED, "invalid api key"))
}

async fn slow(state: &SimState) {
    if !state.config.latency.is_zero() {
        tokio::time::sleep(state.config.latency).await;
    }
}

async fn submit(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    slow(&state).await;
    state.lock().stats.submit_calls += 1;
    if let Some(response) = unauthorized(&state, &headers) {
        return response;
    }
    let now = Instant::now();
    {
        let mut inner = state.lock();
        if let Err(wait) = inner.submit_windows.try_accept(now) {
            inner.stats.rate_limited += 1;
            return rate_limited(wait);
        }
    }
    let request: SubmitRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => return error(StatusCode::BAD_REQUEST, &format!("invalid body: {err}")),
    };
    if let Err(message) = check_submit(&request) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, &message);
    }
    let tags = request.input.tags.to_lowercase();
    let fate = if tags.contains(FAIL_MARKER) {
        Fate::Fail
    } else if tags.contains(HANG_MARKER) {
        Fate::Hang
    } else {
        Fate::Finish
    };
    let mut inner = state.lock();
    inner.stats.tasks_created += 1;
    let number = inner.stats.tasks_created;
    let task_id = format!("sim-{number:06}-{:08x}", rand::random::<u32>());
    inner.tasks.insert(
        task_id.clone(),
        Task {
            created: now,
            tags: request.input.tags.clone(),
            seed: number,
            fate,
        },
    );
    inner.submissions.push(SubmitRecord {
        task_id: task_id.clone(),
        at: now.duration_since(state.started),
        request,
    });
    let data = SubmitData {
        task_id,
        status: Some(TaskStatus::NotStarted),
        created_time: Some(provider_time(now, state.started)),
    };
    Json(Envelope::ok(data)).into_response()
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
    for weight in [
        input.style_weight,
        input.weirdness_constraint,
        input.audio_weight,
    ]
    .into_iter()
    .flatten()
    {
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
    slow(&state).await;
    state.lock().stats.detail_calls += 1;
    if let Some(response) = unauthorized(&state, &headers) {
        return response;
    }
    let now = Instant::now();
    let mut inner = state.lock();
    if let Err(wait) = inner.detail_windows.try_accept(now) {
        inner.stats.rate_limited += 1;
        return rate_limited(wait);
    }
    match inner.tasks.get(&query.task_id) {
        Some(task) => Json(Envelope::ok(state.detail(&query.task_id, task, now))).into_response(),
        None => error(StatusCode::NOT_FOUND, "task not found"),
    }
}

async fn balance(State(state): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(response) = unauthorized(&state, &headers) {
        return response;
    }
    let data = Balance {
        email: Some("sim@example.com".into()),
        credits_amount: 1_000_000.0,
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
    let Some((number, extension)) = file.split_once('.') else {
        return error(StatusCode::NOT_FOUND, "no such file");
    };
    let Ok(number) = number.parse::<u32>() else {
        return error(StatusCode::NOT_FOUND, "no such file");
    };
    match extension {
        "wav" => match state.track_bytes(&task_id, number) {
            Some(bytes) => ([(header::CONTENT_TYPE, "audio/wav")], bytes).into_response(),
            None => error(StatusCode::NOT_FOUND, "no such file"),
        },
        "png" if state.lock().tasks.contains_key(&task_id) => {
            ([(header::CONTENT_TYPE, "image/png")], COVER_PNG).into_response()
        }
        _ => error(StatusCode::NOT_FOUND, "no such file"),
    }
}
