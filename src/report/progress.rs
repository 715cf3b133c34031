//! The live view of a run on stderr, and the closing summary. A consumer of what the
//! coordinator reports (STYLE §20): the coordinator tells it each state change of a
//! variant with a [`Snapshot`] of the counts; this module decides how that looks. It
//! decides nothing about the run and never reads the run state itself.
//!
//! Three [`View`]s:
//! - **bars** on a terminal (`--log-format text`): an overall bar with its ETA, the
//!   variants by phase with the tasks created, and what the run waits for; log lines go
//!   above the bars through `tracing-indicatif`, one per finished or failed variant;
//! - **lines** elsewhere (cron, a pipe, `--log-format json`): one line per state change and
//!   a summary line every [`SUMMARY_EVERY`], no escape codes;
//! - **off** with `-q`.
//!
//! Every line it writes is made by a pure function that returns a string
//! ([`change_line`], [`summary_line`], [`phases_line`], [`results_line`], [`waits_line`],
//! [`closing_summary`]), so that the words are snapshot-tested. The pacers report their
//! reserved slots to [`Waits`] (through the scheduler's watched pacer), which is how the view knows what the run waits for.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::Level;

use crate::cli::LogFormat;
use crate::outcome::{PhaseCounts, StatusCounts, VariantEnd, VariantRecord, VariantStatus};
use crate::qc::QcCounts;
use crate::variant::{Variant, VariantId};

/// How often the plain view writes a summary line.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(30);
/// How often the bars' waits and ETA are worked out again.
const BARS_EVERY: Duration = Duration::from_secs(1);
/// An error in a line above the bars is cut to this many characters (results.csv has it
/// whole), so that the line stays on one terminal row.
const ERROR_CHARS_ON_BARS: usize = 80;
/// A wait shorter than this is pacing as usual, not worth a word.
const WORTH_SAYING: Duration = Duration::from_secs(1);

/// A tracing event at a level known only at run time.
macro_rules! at_level {
    ($level:expr, $($rest:tt)+) => {
        match $level {
            Level::ERROR => tracing::error!($($rest)+),
            Level::WARN => tracing::warn!($($rest)+),
            Level::INFO => tracing::info!($($rest)+),
            Level::DEBUG => tracing::debug!($($rest)+),
            _ => tracing::trace!($($rest)+),
        }
    };
}
/// How much is logged: `-q`, nothing, `-v`, `-vv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verbosity {
    /// Errors only.
    Quiet,
    /// Info, or what `STEMBATCH_LOG` says.
    Normal,
    /// Debug: retries and waits.
    Verbose,
    /// Trace.
    Trace,
}

impl Verbosity {
    /// From the command line's `-q` and the count of `-v`.
    pub fn from_flags(quiet: bool, verbose: u8) -> Self {
        match (quiet, verbose) {
            (true, _) => Verbosity::Quiet,
            (false, 0) => Verbosity::Normal,
            (false, 1) => Verbosity::Verbose,
            (false, _) => Verbosity::Trace,
        }
    }
}

/// How the run shows itself on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// Nothing but the log lines `-q` lets through.
    Off,
    /// Plain lines: one per state change, a summary every [`SUMMARY_EVERY`].
    Lines {
        /// Lines are JSON objects with every count as a number.
        json: bool,
    },
    /// Progress bars, with one log line per finished or failed variant above them.
    Bars,
}

impl View {
    /// Bars only for people: text logs on a terminal (not a dumb one), and not `-q`.
    pub fn choose(format: LogFormat, verbosity: Verbosity, terminal: bool) -> Self {
        match (verbosity, format) {
            (Verbosity::Quiet, _) => View::Off,
            (_, LogFormat::Json) => View::Lines { json: true },
            (_, LogFormat::Text) if terminal => View::Bars,
            (_, LogFormat::Text) => View::Lines { json: false },
        }
    }
}

/// The log filter's directives. `-q`/`-v` set the level and win over a bare level in
/// `STEMBATCH_LOG`; its directives for targets (`stembatch::api=trace`) are kept. At the
/// info level, what the view already says is not said twice: the executors' own
/// "submitted" lines (and, under the bars, the uploads).
pub fn log_directives(env: Option<&str>, verbosity: Verbosity, view: View) -> String {
    let directives: Vec<&str> = env
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    let is_level = |d: &str| d.parse::<tracing::level_filters::LevelFilter>().is_ok();
    let env_level = directives.iter().rev().find(|d| is_level(d)).copied();
    let targeted: Vec<&str> = directives
        .iter()
        .filter(|d| !is_level(d))
        .copied()
        .collect();
    let level = match verbosity {
        Verbosity::Quiet => "error",
        Verbosity::Normal => env_level.unwrap_or("info"),
        Verbosity::Verbose => "debug",
        Verbosity::Trace => "trace",
    };
    let mut parts = vec![level];
    if level.eq_ignore_ascii_case("info") && targeted.is_empty() {
        parts.push(match view {
            View::Bars => "stembatch::scheduler=warn",
            _ => "stembatch::scheduler::executor=warn",
        });
    }
    parts.extend(targeted);
    parts.join(",")
}

/// One state change of a variant, as the coordinator reports it.
#[derive(Clone, Copy, Debug)]
pub enum Change<'a> {
    /// Its submit starts (after `after`): stem URL, slot, call.
    Submitting {
        /// The backoff before it, after a failure that created nothing.
        after: Duration,
    },
    /// The provider created its task.
    Submitted {
        /// The task.
        task_id: &'a str,
    },
    /// Its task finished; its tracks are being downloaded.
    Downloading,
    /// Its work in this run is over.
    Ended {
        /// How.
        end: &'a VariantEnd,
    },
}

/// The counts as the change left them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Variants by phase.
    pub counts: PhaseCounts,
    /// Tasks created in this run.
    pub tasks_created: usize,
}

/// A variant as lines name it: `stem/variant`, with its take when the stem has several.
pub fn label(variant: &Variant) -> String {
    match variant.stem.takes > 1 {
        true => format!(
            "{}/{} take {}",
            variant.stem.name, variant.name, variant.take
        ),
        false => format!("{}/{}", variant.stem.name, variant.name),
    }
}

/// The line of one change. `ended` is (variants ended in this run, variants this run
/// works on), said on ends; an error is cut to `error_chars` when given.
pub fn change_line(
    label: &str,
    change: &Change<'_>,
    ended: (usize, usize),
    error_chars: Option<usize>,
) -> String {
    match change {
        Change::Submitting { after } if after.is_zero() => format!("submitting {label}"),
        Change::Submitting { after } => {
            format!("submitting {label} again in {}", short_duration(*after))
        }
        Change::Submitted { task_id } => format!("submitted {label}: task {task_id}"),
        Change::Downloading => format!("downloading {label}"),
        Change::Ended { end } => {
            let (done, total) = ended;
            let what = match (&end.error, end.status) {
                (None, _) => format!("{} tracks", end.tracks.len()),
                (Some(error), _) => cut(error, error_chars),
            };
            format!(
                "{} {label}: {what} ({done} of {total} ended)",
                end.status.as_str()
            )
        }
    }
}

/// How loud a change is: ends loudest, and under the bars the steps in between are only
/// for `-v`.
pub fn change_level(change: &Change<'_>, view: View) -> Level {
    match change {
        Change::Ended { end } => match end.status {
            VariantStatus::Finished => Level::INFO,
            // What a stop leaves: the stop itself was said once.
            VariantStatus::Pending => Level::DEBUG,
            _ => Level::WARN,
        },
        Change::Submitting { .. } => Level::DEBUG,
        Change::Submitted { .. } | Change::Downloading => match view {
            View::Bars => Level::DEBUG,
            _ => Level::INFO,
        },
    }
}

/// The counts of this run: what had ended before it started is taken off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunCounts {
    /// Variants by phase, ended ones counting only those ended in this run.
    pub now: PhaseCounts,
    /// Variants this run works on.
    pub total: usize,
    /// Tasks created in this run.
    pub tasks_created: usize,
}

impl RunCounts {
    /// `snapshot` less what had ended at the start (`before`).
    pub fn of(snapshot: &Snapshot, before: &StatusCounts) -> Self {
        let mut now = snapshot.counts;
        let e = &mut now.ended;
        e.finished = e.finished.saturating_sub(before.finished);
        e.failed = e.failed.saturating_sub(before.failed);
        e.timeout = e.timeout.saturating_sub(before.timeout);
        e.error = e.error.saturating_sub(before.error);
        e.pending = e.pending.saturating_sub(before.pending);
        RunCounts {
            now,
            total: now.total(),
            tasks_created: snapshot.tasks_created,
        }
    }

    /// Variants ended in this run.
    pub fn ended(&self) -> usize {
        self.total - self.in_progress()
    }

    /// Variants not ended yet.
    pub fn in_progress(&self) -> usize {
        let n = &self.now;
        n.waiting + n.submitting + n.running + n.downloading
    }

    /// Failed, timed out or in error.
    pub fn not_finished(&self) -> usize {
        let e = &self.now.ended;
        e.failed + e.timeout + e.error
    }
}

/// The variants still at work, by phase: the bars' second line.
pub fn phases_line(counts: &RunCounts) -> String {
    let n = &counts.now;
    format!(
        "{} waiting · {} submitting · {} running · {} downloading",
        n.waiting, n.submitting, n.running, n.downloading
    )
}

/// The variants ended in this run and the tasks created: the bars' third line.
pub fn results_line(counts: &RunCounts) -> String {
    let e = &counts.now.ended;
    let mut line = format!("{} finished · {} failed", e.finished, counts.not_finished());
    if e.pending > 0 {
        line.push_str(&format!(" · {} left pending", e.pending));
    }
    line.push_str(&format!(" · {} tasks created", counts.tasks_created));
    line
}

/// The summary line of the plain view, every [`SUMMARY_EVERY`].
pub fn summary_line(counts: &RunCounts, eta: Eta, waits: Option<&str>) -> String {
    let mut line = format!(
        "progress: {} of {} ended; {}; {}; {}",
        counts.ended(),
        counts.total,
        phases_line(counts),
        results_line(counts),
        eta
    );
    if let Some(waits) = waits {
        line.push_str("; ");
        line.push_str(waits);
    }
    line
}

/// How long the rest of the run may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Eta {
    /// The estimate.
    pub left: Duration,
    /// Whether it leaves out how long tasks take (none has ended yet): then it is at least.
    pub lower_bound: bool,
}

impl std::fmt::Display for Eta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.lower_bound {
            true => write!(f, "ETA over {}", short_duration(self.left)),
            false => write!(f, "ETA {}", short_duration(self.left)),
        }
    }
}

/// The submits still to make, spaced by the submit rate (or by the in-flight cap when
/// tasks are slow), plus one task's time for the last of them.
pub fn eta(
    counts: &RunCounts,
    submit_period: Duration,
    concurrency: usize,
    task_time: Option<Duration>,
) -> Eta {
    let n = &counts.now;
    let to_submit = (n.waiting + n.submitting) as u32;
    let in_flight = n.running + n.downloading;
    let spacing = match task_time {
        Some(task) => submit_period.max(task / concurrency.max(1) as u32),
        None => submit_period,
    };
    let tail = match (to_submit, in_flight, task_time) {
        (0, 0, _) => Duration::ZERO,
        (_, _, Some(task)) => task,
        (_, _, None) => Duration::ZERO,
    };
    Eta {
        left: spacing.saturating_mul(to_submit) + tail,
        lower_bound: task_time.is_none() && to_submit + in_flight as u32 > 0,
    }
}

/// `42s`, `3m 20s`, `2h 05m`.
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs_f64().round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

fn cut(text: &str, chars: Option<usize>) -> String {
    match chars {
        Some(max) if text.chars().count() > max => {
            let kept: String = text.chars().take(max.saturating_sub(1)).collect();
            format!("{kept}…")
        }
        _ => text.to_owned(),
    }
}

/// An endpoint a pacer spaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// Submit calls (money).
    Submit,
    /// Detail queries.
    Poll,
    /// Uploads of local stems.
    Upload,
}

impl Endpoint {
    fn word(self) -> &'static str {
        match self {
            Endpoint::Submit => "submit",
            Endpoint::Poll => "detail query",
            Endpoint::Upload => "upload",
        }
    }
}

/// The calls one endpoint's pacer has promised slots to, and a provider's hold-off.
#[derive(Clone, Debug, Default)]
pub struct EndpointWaits {
    slots: BinaryHeap<Reverse<Instant>>,
    held_until: Option<Instant>,
}

impl EndpointWaits {
    /// A call got the slot `slot`.
    pub fn reserved(&mut self, now: Instant, slot: Instant) {
        self.forget_past(now);
        self.slots.push(Reverse(slot));
    }

    /// The provider said to wait until `until` (429).
    pub fn held(&mut self, until: Instant) {
        self.held_until = Some(self.held_until.map_or(until, |h| h.max(until)));
    }

    fn forget_past(&mut self, now: Instant) {
        while self.slots.peek().is_some_and(|Reverse(slot)| *slot <= now) {
            self.slots.pop();
        }
    }

    /// What this endpoint waits for at `now`, worth saying: a hold-off, or a next slot at
    /// least [`WORTH_SAYING`] away.
    fn wait(&self, endpoint: Endpoint, now: Instant) -> Option<String> {
        let word = endpoint.word();
        if let Some(until) = self.held_until.filter(|u| *u > now) {
            let secs = short_duration(until - now);
            return Some(format!(
                "{word}: the provider asked to wait (429), {secs} left"
            ));
        }
        let waiting: Vec<Instant> = self
            .slots
            .iter()
            .map(|Reverse(s)| *s)
            .filter(|s| *s > now)
            .collect();
        let next = waiting.iter().min()?;
        let last = waiting.iter().max()?;
        if *last - now < WORTH_SAYING {
            return None;
        }
        let next_in = match *next - now {
            soon if soon < WORTH_SAYING => "under 1s".to_owned(),
            later => short_duration(later),
        };
        Some(match waiting.len() {
            1 => format!("{word} rate limit: next in {next_in}"),
            n => format!("{word} rate limit: next in {next_in} ({n} calls waiting)"),
        })
    }
}

/// What the run waits for, from the endpoints' slots and the tasks running at the
/// provider; `None` when it waits for nothing worth saying.
pub fn waits_line(
    now: Instant,
    endpoints: &[(Endpoint, EndpointWaits)],
    running: usize,
) -> Option<String> {
    let said: Vec<String> = endpoints
        .iter()
        .filter_map(|(endpoint, waits)| waits.wait(*endpoint, now))
        .collect();
    let mut said = said;
    match running {
        0 => {}
        1 => said.push("the provider (1 task running)".to_owned()),
        n => said.push(format!("the provider ({n} tasks running)")),
    }
    (!said.is_empty()).then(|| format!("waiting for: {}", said.join(" · ")))
}

/// The slots every pacer of the run has handed out, shared with the view.
#[derive(Default)]
pub struct Waits {
    endpoints: Mutex<Vec<(Endpoint, EndpointWaits)>>,
}

impl Waits {
    fn with<R>(&self, f: impl FnOnce(&mut Vec<(Endpoint, EndpointWaits)>) -> R) -> R {
        f(&mut self.endpoints.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn of(list: &mut Vec<(Endpoint, EndpointWaits)>, endpoint: Endpoint) -> &mut EndpointWaits {
        let at = match list.iter().position(|(e, _)| *e == endpoint) {
            Some(at) => at,
            None => {
                list.push((endpoint, EndpointWaits::default()));
                list.len() - 1
            }
        };
        &mut list[at].1
    }

    /// What the run waits for now.
    pub fn line(&self, now: Instant, running: usize) -> Option<String> {
        self.with(|list| {
            for (_, waits) in list.iter_mut() {
                waits.forget_past(now);
            }
            waits_line(now, list, running)
        })
    }
}

impl Waits {
    /// A pacer of `endpoint` handed out `slot` (the scheduler's watched pacer tells);
    /// a long wait is said at debug level (`-v`).
    pub fn reserved(&self, endpoint: Endpoint, slot: Instant) {
        // After the reservation: a shared pacer may have taken a while to answer.
        let now = Instant::now();
        self.with(|list| Waits::of(list, endpoint).reserved(now, slot));
        let wait = slot.saturating_duration_since(now);
        if wait >= WORTH_SAYING {
            let endpoint = endpoint.word();
            tracing::debug!(
                endpoint,
                wait_ms = wait.as_millis() as u64,
                "waiting {} for the {endpoint} rate limit",
                short_duration(wait)
            );
        }
    }

    /// The provider asked `endpoint`'s pacer to hold off for `wait` from `now`.
    pub fn held(&self, endpoint: Endpoint, now: Instant, wait: Duration) {
        self.with(|list| Waits::of(list, endpoint).held(now + wait));
        let endpoint = endpoint.word();
        tracing::debug!(
            endpoint,
            wait_ms = wait.as_millis() as u64,
            "the provider asked to wait {} before the next {endpoint} call",
            short_duration(wait)
        );
    }
}

/// What the view needs to know of the run before it starts.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// The submit rate's spacing.
    pub submit_period: Duration,
    /// Variants in flight at most.
    pub concurrency: usize,
}

/// The view of one run. Cheap to clone; every clone reports to the same view.
#[derive(Clone)]
pub struct Progress {
    shared: Option<Arc<Shared>>,
}

struct Shared {
    view: View,
    plan: Plan,
    waits: Arc<Waits>,
    live: Mutex<Live>,
    stop: CancellationToken,
}

struct Live {
    started: Instant,
    /// What had ended before the run began.
    before: StatusCounts,
    last: Snapshot,
    submitted_at: HashMap<VariantId, Instant>,
    /// Sum and count of submit-to-end times of the variants finished in this run.
    task_time: (Duration, u32),
    bars: Option<Bars>,
}

impl Live {
    fn counts(&self) -> RunCounts {
        RunCounts::of(&self.last, &self.before)
    }

    fn task_time(&self) -> Option<Duration> {
        let (sum, n) = self.task_time;
        (n > 0).then(|| sum / n)
    }
}

impl Progress {
    /// A view that shows nothing (the tests', and `-q`).
    pub fn off() -> Self {
        Progress { shared: None }
    }

    /// The view `view` of a run planned as `plan`.
    pub fn new(view: View, plan: Plan) -> Self {
        if view == View::Off {
            return Progress::off();
        }
        let live = Live {
            started: Instant::now(),
            before: StatusCounts::default(),
            last: Snapshot::default(),
            submitted_at: HashMap::new(),
            task_time: (Duration::ZERO, 0),
            bars: None,
        };
        Progress {
            shared: Some(Arc::new(Shared {
                view,
                plan,
                waits: Arc::default(),
                live: Mutex::new(live),
                stop: CancellationToken::new(),
            })),
        }
    }

    /// Where the pacers report their slots to this view (`None`: no view).
    pub fn waits(&self) -> Option<Arc<Waits>> {
        self.shared.as_ref().map(|shared| Arc::clone(&shared.waits))
    }

    /// The run starts from `snapshot`: what has ended already is not this run's. Starts
    /// the bars, or the summary lines' clock. Needs a tokio runtime.
    pub fn begin(&self, snapshot: Snapshot) {
        let Some(shared) = &self.shared else { return };
        {
            let mut live = shared.live();
            live.started = Instant::now();
            live.before = snapshot.counts.ended;
            live.last = snapshot;
            if shared.view == View::Bars {
                live.bars = Some(Bars::start());
            }
            shared.redraw(&mut live);
        }
        let every = match shared.view {
            View::Bars => BARS_EVERY,
            _ => SUMMARY_EVERY,
        };
        let ticking = Arc::clone(shared);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval.tick().await;
            loop {
                tokio::select! {
                    _ = interval.tick() => ticking.tick(),
                    _ = ticking.stop.cancelled() => return,
                }
            }
        });
    }

    /// A variant changed state; `snapshot` is the counts after the change.
    pub fn report(&self, variant: &Variant, change: Change<'_>, snapshot: Snapshot) {
        let Some(shared) = &self.shared else { return };
        let mut live = shared.live();
        live.last = snapshot;
        let now = Instant::now();
        match change {
            Change::Submitted { .. } => {
                live.submitted_at.insert(variant.id.clone(), now);
            }
            Change::Ended { end } => {
                if let Some(since) = live.submitted_at.remove(&variant.id) {
                    if end.status == VariantStatus::Finished {
                        live.task_time.0 += now - since;
                        live.task_time.1 += 1;
                    }
                }
            }
            _ => {}
        }
        let counts = live.counts();
        shared.redraw(&mut live);
        drop(live);
        shared.say(variant, &change, &counts);
    }

    /// The run is over: the bars are cleared (before the closing summary), the clock stops.
    pub fn finish(&self) {
        let Some(shared) = &self.shared else { return };
        shared.stop.cancel();
        shared.live().bars = None;
    }
}

impl Shared {
    fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bars (when shown) follow the counts.
    fn redraw(&self, live: &mut Live) {
        let counts = live.counts();
        let eta = eta(
            &counts,
            self.plan.submit_period,
            self.plan.concurrency,
            live.task_time(),
        );
        let waits = self.waits.line(Instant::now(), counts.now.running);
        if let Some(bars) = &live.bars {
            bars.show(&counts, eta, waits.as_deref());
        }
    }

    fn tick(&self) {
        let mut live = self.live();
        if self.stop.is_cancelled() {
            return;
        }
        match self.view {
            View::Bars => self.redraw(&mut live),
            View::Lines { json } => {
                let counts = live.counts();
                let task_time = live.task_time();
                drop(live);
                let eta = eta(
                    &counts,
                    self.plan.submit_period,
                    self.plan.concurrency,
                    task_time,
                );
                let waits = self.waits.line(Instant::now(), counts.now.running);
                let line = summary_line(&counts, eta, waits.as_deref());
                let n = &counts.now;
                match json {
                    true => tracing::info!(
                        ended = counts.ended(),
                        total = counts.total,
                        waiting = n.waiting,
                        submitting = n.submitting,
                        running = n.running,
                        downloading = n.downloading,
                        finished = n.ended.finished,
                        failed = n.ended.failed,
                        timeout = n.ended.timeout,
                        error = n.ended.error,
                        pending = n.ended.pending,
                        tasks_created = counts.tasks_created,
                        eta_s = eta.left.as_secs(),
                        "{line}"
                    ),
                    false => tracing::info!("{line}"),
                }
            }
            View::Off => {}
        }
    }

    /// The change's log line: the words only in text, with every field in JSON.
    fn say(&self, variant: &Variant, change: &Change<'_>, counts: &RunCounts) {
        let error_chars = (self.view == View::Bars).then_some(ERROR_CHARS_ON_BARS);
        let ended = (counts.ended(), counts.total);
        let line = change_line(&label(variant), change, ended, error_chars);
        let level = change_level(change, self.view);
        if self.view != (View::Lines { json: true }) {
            at_level!(level, "{line}");
            return;
        }
        let (id, stem, name, take) = (&variant.id, &variant.stem.name, &variant.name, variant.take);
        match change {
            Change::Submitting { after } => {
                let after_ms = after.as_millis() as u64;
                at_level!(level, variant_id = %id, stem = %stem, variant = %name, take, after_ms, "{line}")
            }
            Change::Submitted { task_id } => {
                at_level!(level, variant_id = %id, stem = %stem, variant = %name, take, task_id, "{line}")
            }
            Change::Downloading => {
                at_level!(level, variant_id = %id, stem = %stem, variant = %name, take, "{line}")
            }
            Change::Ended { end } => {
                let (status, tracks) = (end.status.as_str(), end.tracks.len());
                let error = end.error.as_deref().unwrap_or("");
                let (ended, total) = ended;
                at_level!(level, variant_id = %id, stem = %stem, variant = %name, take, status, tracks, error, ended, total, "{line}")
            }
        }
    }
}

/// The four bars, each a span that `tracing-indicatif` draws (only spans that carry
/// `indicatif.pb_show` get a bar). Dropping them clears the bars.
struct Bars {
    overall: tracing::Span,
    phases: tracing::Span,
    results: tracing::Span,
    waits: tracing::Span,
}

impl Bars {
    fn start() -> Self {
        use tracing_indicatif::span_ext::IndicatifSpanExt;
        use tracing_indicatif::style::ProgressStyle;
        let style = |template: &str| {
            ProgressStyle::with_template(template)
                .expect("the templates are valid")
                .progress_chars("=> ")
        };
        let bar = |name: &'static str, template: &str| {
            let span = match name {
                "run" => tracing::info_span!("run", indicatif.pb_show = tracing::field::Empty),
                "phases" => {
                    tracing::info_span!("phases", indicatif.pb_show = tracing::field::Empty)
                }
                "results" => {
                    tracing::info_span!("results", indicatif.pb_show = tracing::field::Empty)
                }
                _ => tracing::info_span!("waits", indicatif.pb_show = tracing::field::Empty),
            };
            span.pb_set_style(&style(template));
            span.pb_start();
            span
        };
        Bars {
            overall: bar(
                "run",
                "{spinner:.green} {elapsed:>4} [{wide_bar:.cyan/blue}] {pos}/{len} ended · {msg}",
            ),
            phases: bar("phases", "  {wide_msg}"),
            results: bar("results", "  {wide_msg}"),
            waits: bar("waits", "  {wide_msg:.dim}"),
        }
    }

    fn show(&self, counts: &RunCounts, eta: Eta, waits: Option<&str>) {
        use tracing_indicatif::span_ext::IndicatifSpanExt;
        self.overall.pb_set_length(counts.total as u64);
        self.overall.pb_set_position(counts.ended() as u64);
        self.overall.pb_set_message(&eta.to_string());
        self.phases.pb_set_message(&phases_line(counts));
        self.results.pb_set_message(&results_line(counts));
        self.waits
            .pb_set_message(waits.unwrap_or("waiting for: nothing"));
    }
}

/// Everything the closing summary says.
pub struct Closing<'a> {
    /// How long the run took.
    pub elapsed: Duration,
    /// Every variant of the manifest, by status.
    pub counts: StatusCounts,
    /// Tasks created in this run.
    pub tasks_created: usize,
    /// Submits whose outcome stayed unknown.
    pub unknown_outcomes: usize,
    /// The tracks in the folder for this manifest, by QC verdict.
    pub tracks: QcCounts,
    /// The variants that did not finish (not pending), in manifest order: label, record
    /// (the first ones, at least [`UNFINISHED_LISTED`] when there are more).
    pub unfinished: Vec<(String, &'a VariantRecord)>,
    /// How many more did not finish than `unfinished` holds.
    pub not_listed: usize,
    /// The report.
    pub results: &'a Path,
}

/// Unfinished variants named in the closing summary at most; the CSV has them all.
pub const UNFINISHED_LISTED: usize = 20;

/// The closing summary's lines, by what each says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClosingLines {
    /// How many variants ended how, the tasks created, where the report is (info).
    pub counts: String,
    /// The tracks by QC verdict, when there are any: a warning when some failed.
    pub tracks: Option<(Level, String)>,
    /// Submits whose outcome stayed unknown (a warning).
    pub unknown: Option<String>,
    /// The variants that did not finish, each with its error (info), at most
    /// [`UNFINISHED_LISTED`].
    pub unfinished: Vec<String>,
    /// How many more did not finish (info).
    pub more: Option<String>,
}

impl ClosingLines {
    /// Every line with its level, in order.
    pub fn lines(&self) -> Vec<(Level, &str)> {
        let mut lines = vec![(Level::INFO, self.counts.as_str())];
        lines.extend(self.tracks.iter().map(|(level, l)| (*level, l.as_str())));
        lines.extend(self.unknown.iter().map(|l| (Level::WARN, l.as_str())));
        lines.extend(self.unfinished.iter().map(|l| (Level::INFO, l.as_str())));
        lines.extend(self.more.iter().map(|l| (Level::INFO, l.as_str())));
        lines
    }
}

/// "1 task", "2 tasks".
fn counted(count: usize, noun: &str) -> String {
    format!("{count} {noun}{}", if count == 1 { "" } else { "s" })
}

/// The closing summary: the counts, the unknown outcomes, and the variants that did not
/// finish with their errors.
pub fn closing_summary(closing: &Closing<'_>) -> ClosingLines {
    let c = &closing.counts;
    let count = c.finished + c.failed + c.timeout + c.error + c.pending;
    let counts = format!(
        "run ended after {}: {}: {c}; {} created (each is charged when it succeeds); results in {}",
        short_duration(closing.elapsed),
        counted(count, "variant"),
        counted(closing.tasks_created, "task"),
        closing.results.display()
    );
    let unknown = (closing.unknown_outcomes > 0).then(|| {
        format!(
            "{} submits had an unknown outcome: each may have created a task that is charged; they were not submitted again",
            closing.unknown_outcomes
        )
    });
    let tracks = (closing.tracks.total() > 0).then(|| {
        let level = match closing.tracks.bad() {
            0 => Level::INFO,
            _ => Level::WARN,
        };
        let mut line = closing.tracks.to_string();
        if closing.tracks.bad() > 0 {
            line.push_str(" (kept; the qc column of results.csv and the page flag them)");
        }
        (level, line)
    });
    let unfinished = closing
        .unfinished
        .iter()
        .take(UNFINISHED_LISTED)
        .map(|(label, record)| {
            format!(
                "not finished: {label}: {}: {}",
                record.status.as_str(),
                record.error.as_deref().unwrap_or("")
            )
        })
        .collect();
    let more = closing.unfinished.len().saturating_sub(UNFINISHED_LISTED) + closing.not_listed;
    let more = (more > 0).then(|| format!("… and {more} more not finished (see results.csv)"));
    ClosingLines {
        counts,
        tracks,
        unknown,
        unfinished,
        more,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::TrackRecord;

    fn at() -> chrono::DateTime<chrono::Utc> {
        "2026-11-25T01:00:00Z".parse().unwrap()
    }

    fn track(number: u32) -> TrackRecord {
        TrackRecord {
            wave: None,
            number,
            audio_id: format!("a{number}"),
            duration_s: Some(20.0),
            file: format!("audio/ballad/piano-{number}.wav"),
            bytes: 1,
            sha256: String::new(),
            audio_url: String::new(),
            modified_ns: None,
            qc: None,
        }
    }

    fn counts(
        waiting: usize,
        submitting: usize,
        running: usize,
        downloading: usize,
    ) -> PhaseCounts {
        PhaseCounts {
            waiting,
            submitting,
            running,
            downloading,
            ended: StatusCounts::default(),
        }
    }

    fn run_counts(now: PhaseCounts, tasks_created: usize) -> RunCounts {
        let snapshot = Snapshot {
            counts: now,
            tasks_created,
        };
        RunCounts::of(&snapshot, &StatusCounts::default())
    }

    /// What cron sees of one variant's life, and of the others' ends, line by line.
    #[test]
    fn the_plain_lines_of_a_run() {
        let finished = VariantEnd {
            status: VariantStatus::Finished,
            tracks: vec![track(1), track(2)],
            error: None,
            at: at(),
        };
        let failed = VariantEnd::with_error(
            VariantStatus::Failed,
            "the provider refused the content (policy)",
            at(),
        );
        let unknown = VariantEnd::with_error(
            VariantStatus::Error,
            "the submit's answer was lost (HTTP 500): the provider may have created a task, which is billed if it succeeds, so it is not submitted again",
            at(),
        );
        let timeout = VariantEnd::with_error(
            VariantStatus::Timeout,
            "task t9 not finished after 30m",
            at(),
        );
        let stopped = VariantEnd::with_error(
            VariantStatus::Pending,
            "not submitted: the run stopped first",
            at(),
        );
        let changes = [
            (
                "ballad/piano",
                Change::Submitting {
                    after: Duration::ZERO,
                },
            ),
            (
                "ballad/piano",
                Change::Submitting {
                    after: Duration::from_millis(1600),
                },
            ),
            (
                "ballad/piano",
                Change::Submitted {
                    task_id: "sim-000001-ok",
                },
            ),
            ("ballad/piano", Change::Downloading),
            ("ballad/piano", Change::Ended { end: &finished }),
            ("hook/jazz_0-8 take 2", Change::Ended { end: &failed }),
            ("hook/lofi_0-4", Change::Ended { end: &unknown }),
            ("verse/slow", Change::Ended { end: &timeout }),
            ("verse/fast", Change::Ended { end: &stopped }),
        ];
        let mut text = String::new();
        for (n, (label, change)) in changes.iter().enumerate() {
            let lines = change_level(change, View::Lines { json: false });
            let bars = change_level(change, View::Bars);
            let line = change_line(label, change, (n.saturating_sub(3), 24), None);
            text.push_str(&format!("{lines:>5} (bars: {bars:>5}) {line}\n"));
        }
        text.push_str("under the bars, errors are cut:\n");
        let line = change_line(
            "hook/lofi_0-4",
            &Change::Ended { end: &unknown },
            (3, 24),
            Some(80),
        );
        text.push_str(&line);
        insta::assert_snapshot!(text);
    }

    #[test]
    fn the_summary_lines() {
        let start = run_counts(counts(16, 8, 0, 0), 0);
        let mut middle = run_counts(counts(3, 1, 8, 2), 12);
        middle.now.ended.finished = 9;
        middle.now.ended.failed = 1;
        middle.total = 24;
        let mut stopped = run_counts(counts(0, 0, 0, 0), 20);
        stopped.now.ended = StatusCounts {
            finished: 18,
            failed: 1,
            timeout: 0,
            error: 1,
            pending: 4,
        };
        stopped.total = 24;
        let t0 = Instant::now();
        let mut submit = EndpointWaits::default();
        submit.reserved(t0, t0 + Duration::from_millis(11_200));
        submit.reserved(t0, t0 + Duration::from_millis(14_200));
        let waits = waits_line(t0, &[(Endpoint::Submit, submit)], 8);
        let lines = [
            summary_line(&start, eta(&start, Duration::from_secs(3), 8, None), None),
            summary_line(
                &middle,
                eta(
                    &middle,
                    Duration::from_secs(3),
                    8,
                    Some(Duration::from_secs(40)),
                ),
                waits.as_deref(),
            ),
            summary_line(
                &stopped,
                eta(&stopped, Duration::from_secs(3), 8, None),
                None,
            ),
        ];
        insta::assert_snapshot!(lines.join("\n"));
    }

    #[test]
    fn what_the_run_waits_for() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut submit = EndpointWaits::default();
        submit.reserved(t0, t0 + s(11));
        let mut upload = EndpointWaits::default();
        upload.reserved(t0, t0 + s(32));
        let mut held = EndpointWaits::default();
        held.reserved(t0, t0 + Duration::from_millis(200));
        held.held(t0 + s(20));
        let mut soon = EndpointWaits::default();
        soon.reserved(t0, t0 + Duration::from_millis(400));
        let lines = [
            waits_line(t0, &[(Endpoint::Submit, submit.clone())], 0),
            waits_line(
                t0,
                &[
                    (Endpoint::Submit, submit.clone()),
                    (Endpoint::Upload, upload),
                ],
                3,
            ),
            waits_line(t0, &[(Endpoint::Submit, held)], 0),
            waits_line(t0, &[(Endpoint::Poll, soon)], 1),
            waits_line(t0, &[(Endpoint::Poll, EndpointWaits::default())], 5),
            waits_line(t0 + s(12), &[(Endpoint::Submit, submit)], 0),
        ];
        let text: Vec<String> = lines
            .iter()
            .map(|l| l.clone().unwrap_or_else(|| "(nothing)".into()))
            .collect();
        insta::assert_snapshot!(text.join("\n"));
    }

    #[test]
    fn the_closing_summary() {
        let failed = VariantRecord {
            status: VariantStatus::Failed,
            error: Some("the provider refused the content (policy)".into()),
            ..VariantRecord::default()
        };
        let lost = VariantRecord {
            status: VariantStatus::Error,
            error: Some(
                "the submit's answer was lost (HTTP 500): the provider may have created a task"
                    .into(),
            ),
            ..VariantRecord::default()
        };
        let all_fine = Closing {
            elapsed: Duration::from_secs(24),
            counts: StatusCounts {
                finished: 24,
                ..StatusCounts::default()
            },
            tasks_created: 24,
            unknown_outcomes: 0,
            tracks: QcCounts {
                ok: 48,
                ..QcCounts::default()
            },
            unfinished: Vec::new(),
            not_listed: 0,
            results: Path::new("out/demo/results.csv"),
        };
        let mut unfinished = vec![
            ("hook/jazz_0-8".to_owned(), &failed),
            ("hook/lofi_0-4".to_owned(), &lost),
        ];
        for n in 0..21 {
            unfinished.push((format!("verse/v{n}"), &failed));
        }
        let some_not = Closing {
            elapsed: Duration::from_secs(3 * 3600 + 25 * 60),
            counts: StatusCounts {
                finished: 977,
                failed: 22,
                timeout: 0,
                error: 1,
                pending: 0,
            },
            tasks_created: 1000,
            unknown_outcomes: 1,
            tracks: QcCounts {
                ok: 1947,
                silent: 3,
                clipped: 2,
                short: 2,
                ..QcCounts::default()
            },
            unfinished,
            not_listed: 0,
            results: Path::new("out/2026-11-25/results.csv"),
        };
        let render = |closing: &Closing<'_>| -> String {
            closing_summary(closing)
                .lines()
                .into_iter()
                .map(|(level, line)| format!("{level:>5} {line}"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        insta::assert_snapshot!(format!("{}\n---\n{}", render(&all_fine), render(&some_not)));
    }

    #[test]
    fn eta_follows_the_submit_rate_then_the_task_time() {
        let s = Duration::from_secs;
        let waiting = run_counts(counts(20, 4, 0, 0), 0);
        // Before any variant ended: the submits alone, a lower bound.
        assert_eq!(
            eta(&waiting, s(3), 8, None),
            Eta {
                left: s(72),
                lower_bound: true
            }
        );
        // Tasks of 40 s with 8 in flight: 5 s a variant, slower than the rate.
        let known = eta(&waiting, s(3), 8, Some(s(40)));
        assert_eq!((known.left, known.lower_bound), (s(24 * 5 + 40), false));
        let last = run_counts(counts(0, 0, 2, 0), 22);
        assert_eq!(eta(&last, s(3), 8, Some(s(40))).left, s(40));
        let done = run_counts(counts(0, 0, 0, 0), 24);
        assert_eq!(eta(&done, s(3), 8, None).left, Duration::ZERO);
        assert_eq!(eta(&done, s(3), 8, None).to_string(), "ETA 0s");
        assert_eq!(short_duration(s(200)), "3m 20s");
        assert_eq!(short_duration(s(7500)), "2h 05m");
    }

    #[test]
    fn counts_leave_out_what_had_ended_before_the_run() {
        let before = StatusCounts {
            finished: 5,
            error: 1,
            ..StatusCounts::default()
        };
        let mut now = counts(2, 1, 1, 0);
        now.ended = StatusCounts {
            finished: 7,
            error: 1,
            failed: 1,
            ..StatusCounts::default()
        };
        let counts = RunCounts::of(
            &Snapshot {
                counts: now,
                tasks_created: 3,
            },
            &before,
        );
        assert_eq!(
            (counts.total, counts.ended(), counts.in_progress()),
            (7, 3, 4)
        );
        assert_eq!(counts.not_finished(), 1);
    }

    #[test]
    fn the_view_and_the_log_filter() {
        use Verbosity::*;
        let text = LogFormat::Text;
        assert_eq!(View::choose(text, Normal, true), View::Bars);
        assert_eq!(
            View::choose(text, Verbose, false),
            View::Lines { json: false }
        );
        assert_eq!(
            View::choose(LogFormat::Json, Normal, true),
            View::Lines { json: true }
        );
        assert_eq!(View::choose(text, Quiet, true), View::Off);
        assert_eq!(Verbosity::from_flags(false, 2), Trace);
        let lines = View::Lines { json: false };
        let table = [
            (
                None,
                Normal,
                lines,
                "info,stembatch::scheduler::executor=warn",
            ),
            (None, Normal, View::Bars, "info,stembatch::scheduler=warn"),
            (None, Quiet, View::Off, "error"),
            (None, Verbose, lines, "debug"),
            (Some("debug"), Normal, lines, "debug"),
            (Some("debug"), Quiet, View::Off, "error"),
            (
                Some("warn,stembatch::api=trace"),
                Verbose,
                lines,
                "debug,stembatch::api=trace",
            ),
            (
                Some("stembatch::api=trace"),
                Normal,
                lines,
                "info,stembatch::api=trace",
            ),
            (
                Some("INFO"),
                Normal,
                lines,
                "INFO,stembatch::scheduler::executor=warn",
            ),
        ];
        for (env, verbosity, view, expected) in table {
            assert_eq!(
                log_directives(env, verbosity, view),
                expected,
                "{env:?} {verbosity:?}"
            );
        }
    }
}
