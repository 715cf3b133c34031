//! The built-in simulator of the provider's API: the endpoints of API.md on loopback, with
//! the provider's JSON shapes, bearer check, sliding-window rate limits, tasks that finish
//! after a delay, and real WAV tracks. `stembatch simulator` serves it in the foreground,
//! `run --simulate` in-process, and every network test runs against it.
//!
//! Like the provider, it puts the submitted vocal over the backing it generates
//! ([`vocal`]): the stem uploaded to it, or fetched from a URL on this machine.
//!
//! Like the provider, it fetches each submit's `upload_url` and fails the task when the URL
//! does not serve an audio file (expired, wrongly signed), so that a run's URLs are
//! checked for real; but only URLs on this machine (a test's S3 server): it never reaches
//! out of it, and a URL elsewhere is taken as served.

pub mod audio;
pub mod limits;
mod score;
mod server;
#[cfg(test)]
mod tests;
pub mod ticket;
mod tracks;
pub mod vocal;
mod voice;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use limits::WindowLimit;
pub use server::{SimStats, SubmitRecord};

/// Tags containing this word make a task fail.
pub const FAIL_MARKER: &str = "sim:fail";
/// Tags containing this word make a task run forever.
pub const HANG_MARKER: &str = "sim:hang";
/// The message of a task failed by [`FAIL_MARKER`], as the provider words it.
pub const FAIL_MESSAGE: &str = "The prompt violates our content policy";

/// Faults to inject, each as the share (0..1) of calls it strikes. They strike before a
/// task is created unless their doc says otherwise, so a client that retries them well
/// creates no duplicate task.
///
/// The bad-track shares (`silent_tracks`, `clipped_tracks`, `short_tracks`,
/// `undecodable_tracks`) are shares of the tracks of finished tasks, whose downloads
/// succeed: what is served is bad, not how. Each track's lot is drawn from its task's
/// seed, not from the dice, so a track is the same on every download, from the cache or
/// not, and on any simulator with the same shares. The shares add up in that order: past
/// 1, the later ones get what is left.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// API calls answered 503 before any work (no task is created).
    pub unavailable: f64,
    /// Submits answered 500 *after* the task was created (and billed).
    pub submit_error_after_create: f64,
    /// Submits answered *after* the task was created (and billed) with an HTTP 200 whose
    /// body has `code` 200 but no readable task id, as when the API changes shape:
    /// `{"code":200,"data":{"taskId":"…","state":"queued"}}`.
    pub unreadable_submit: f64,
    /// How long every submit waits between creating its task and answering. A client that
    /// hangs up meanwhile leaves the task created and billed, as with a real provider; the
    /// simulator counts it in [`SimStats::submit_answers_dropped`].
    pub submit_answer_delay: Duration,
    /// API calls whose connection breaks before the answer's body.
    pub reset: f64,
    /// API calls answered HTTP 200 with an error body (`{"code":500}`).
    pub error_body: f64,
    /// API calls answered 429 whatever the limits say.
    pub rate_limit: f64,
    /// API answers delayed by `slow_by`.
    pub slow: f64,
    /// The delay of a slow answer.
    pub slow_by: Duration,
    /// Downloads cut short (fewer bytes than `Content-Length`).
    pub truncate: f64,
    /// Downloads answered 200 with an HTML error page instead of audio.
    pub not_audio: f64,
    /// The first download of each track answers 410 Gone, as an expired URL does.
    pub expire_first_download: bool,
    /// Tasks that fail.
    pub fail_tasks: f64,
    /// Tasks that never finish.
    pub hang_tasks: f64,
    /// Tracks served as near silence (a hiss near -84 dBFS), full length.
    pub silent_tracks: f64,
    /// Tracks served four times too loud, flattened at full scale.
    pub clipped_tracks: f64,
    /// Tracks served at a quarter of the `duration` the task's detail reports.
    pub short_tracks: f64,
    /// Tracks served as a RIFF/WAVE header followed by noise: they pass a download's
    /// check for audio, but nothing decodes them.
    pub undecodable_tracks: f64,
}

impl Faults {
    /// Every survivable fault at once, each share at `share`, expired first downloads
    /// included; tasks still all finish. Left out: [`Faults::unreadable_submit`] (an
    /// unreadable 2xx submit answer stops all submitting, by design) and
    /// [`Faults::submit_answer_delay`] (past the client's timeout, every submit's outcome
    /// is unknown), and the bad tracks (they change what a run downloads, not whether it
    /// gets there); set those on their own.
    pub fn all(share: f64) -> Self {
        Faults {
            unavailable: share,
            submit_error_after_create: share,
            unreadable_submit: 0.0,
            submit_answer_delay: Duration::ZERO,
            reset: share,
            error_body: share,
            rate_limit: share,
            slow: share,
            slow_by: Duration::from_millis(300),
            truncate: share,
            not_audio: share,
            expire_first_download: true,
            fail_tasks: 0.0,
            hang_tasks: 0.0,
            silent_tracks: 0.0,
            clipped_tracks: 0.0,
            short_tracks: 0.0,
            undecodable_tracks: 0.0,
        }
    }
}

/// How the simulator behaves.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The only key it accepts.
    pub key: String,
    /// From submit to `finished`.
    pub task_duration: Duration,
    /// Length of each generated track.
    pub track_seconds: f64,
    /// Tracks per finished task.
    pub tracks_per_task: u32,
    /// Limits of `POST /api/generate/submit`.
    pub submit_limits: Vec<WindowLimit>,
    /// Limits of `GET /api/generate/detail/music`.
    pub detail_limits: Vec<WindowLimit>,
    /// Limits of `POST /api/common/upload/stream`.
    pub upload_limits: Vec<WindowLimit>,
    /// Added before every API answer: a slow provider.
    pub latency: Duration,
    /// Faults to inject.
    pub faults: Faults,
    /// Credits of the account: each task costs one; `None` is unlimited.
    pub credits: Option<u64>,
    /// Seed of the fault dice, so a faulty run can be repeated.
    pub seed: u64,
    /// How long an uploaded file lives (its `expires_at`).
    pub upload_ttl: Duration,
    /// The key stops working once this many tasks exist, as a revoked key does.
    pub revoke_key_after_tasks: Option<u64>,
    /// How long after a submit the stem is fetched from its `upload_url` (the provider
    /// fetches it when the task starts, not at once); the task finishes no sooner.
    pub stem_fetch_delay: Duration,
    /// How long a finished task's result files are served: past this age (from the
    /// task's creation) its track downloads answer 404, as a provider's CDN copies expire
    /// while the task's detail still lists them. `None`: served forever.
    pub result_ttl: Option<Duration>,
}

impl Default for SimConfig {
    fn default() -> Self {
        let limits = |text| WindowLimit::parse_list(text).expect("built-in limits parse");
        SimConfig {
            key: "sim-key".into(),
            task_duration: Duration::from_secs(5),
            track_seconds: 20.0,
            tracks_per_task: 2,
            submit_limits: limits("120/60s,3/1s"),
            detail_limits: limits("600/60s,20/1s"),
            upload_limits: limits("5/60s"),
            latency: Duration::ZERO,
            faults: Faults::default(),
            credits: None,
            seed: 1,
            upload_ttl: Duration::from_secs(72 * 3600),
            revoke_key_after_tasks: None,
            stem_fetch_delay: Duration::ZERO,
            result_ttl: None,
        }
    }
}

/// A running simulator. Dropping it stops the server.
pub struct SimHandle {
    addr: SocketAddr,
    state: Arc<server::SimState>,
    shutdown: CancellationToken,
}

impl SimHandle {
    /// Binds `addr` (port 0 picks a free one) and serves on the current tokio runtime.
    pub async fn start(addr: SocketAddr, config: SimConfig) -> std::io::Result<SimHandle> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(server::SimState::new(config, format!("http://{addr}")));
        let shutdown = CancellationToken::new();
        let router = server::router(Arc::clone(&state));
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(err) = served {
                tracing::error!(error = %err, "simulator stopped");
            }
        });
        Ok(SimHandle {
            addr,
            state,
            shutdown,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The key it accepts.
    pub fn key(&self) -> &str {
        &self.state.config.key
    }

    /// What it has seen so far.
    pub fn stats(&self) -> SimStats {
        self.state.stats()
    }

    /// Every accepted submit, in arrival order.
    pub fn submissions(&self) -> Vec<SubmitRecord> {
        self.state.submissions()
    }

    /// The exact bytes the simulator serves for a track of a task (1-based), if it exists.
    /// Rendered afresh on the calling thread, bypassing the simulator's cache (and its
    /// [`SimStats::renders`] count), so it is an independent reference for tests; it blocks
    /// for the length of a render.
    pub fn track_bytes(&self, task_id: &str, track: u32) -> Option<Vec<u8>> {
        self.state
            .track_spec(task_id, track)
            .map(|spec| spec.render())
    }

    /// The URLs of every upload so far, in order.
    pub fn upload_urls(&self) -> Vec<String> {
        self.state.upload_urls()
    }

    /// Stops serving.
    pub fn stop(&self) {
        self.shutdown.cancel();
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
