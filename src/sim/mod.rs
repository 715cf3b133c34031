//! The built-in simulator of the provider's API: the endpoints of API.md on loopback, with
//! the provider's JSON shapes, bearer check, sliding-window rate limits, tasks that finish
//! after a delay, and real WAV tracks. `stembatch simulator` serves it in the foreground,
//! `run --simulate` in-process, and every network test runs against it.
//!
//! It never fetches anything from elsewhere.

pub mod audio;
pub mod limits;
mod server;

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
    pub fn track_bytes(&self, task_id: &str, track: u32) -> Option<Vec<u8>> {
        self.state.track_bytes(task_id, track)
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
