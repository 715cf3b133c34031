//! The run state: every money decision of a run, in one pure machine.
//!
//! [`RunState::handle`] takes what the shell saw ([`Event`]) and says what to do next
//! ([`Action`]): submit, submit again, poll, download, end a variant, stop. It owns the
//! in-flight cap, the per-variant phase and record, and the run-level stops. The shell
//! (`coordinator`, `executor`) only carries actions out and reports events; nothing here
//! waits, sleeps, or touches the network or the disk, so every rule is tested without a
//! runtime.
//!
//! The money rules it keeps:
//! - a variant is submitted again only after a failure that proves no task was created
//!   (no connection, 429, 503), within `max_attempts`;
//! - a submit whose outcome is unknown (a 5xx after the request was sent, a timeout, a
//!   dropped connection, an unreadable 2xx) is never followed by another submit of that
//!   variant: it ends `error`, saying a task may exist;
//! - nothing is submitted after a run-level stop (401/402/403, an unreadable 2xx, a
//!   journal or disk failure, a signal, the deadline);
//! - while no call of the run has reached the API, a base URL that proves unusable
//!   (nothing answers, or what answers is not the API) stops the run at once: a typo must
//!   not cost the night in retries; once the API has answered, the same failures are
//!   outages, retried as usual;
//! - a variant whose task is known is polled, never submitted;
//! - a paid task of a variant no longer in the manifest (an orphan, chosen by
//!   `scheduler::rerun::orphans`) is polled and downloaded, never submitted, and takes no
//!   in-flight slot: it buys nothing;
//! - a finished variant whose tracks are downloaded again (a file missing or changed on
//!   disk) stays finished with its tracks, whatever becomes of the download again.
//!
//! At size (SPEC.md "Size"): the machine holds only the variants not yet ended. A variant
//! that ends leaves it through [`RunState::drain_ended`] (its record goes to the results
//! and the journal); the counts the live view shows are kept as the phases change, never
//! recounted; queue operations are O(1), and a stop drains the queue in one pass. An
//! ended orphan leaves too, counted apart ([`RunState::orphan_counts`]): it has no row.

use std::collections::{HashMap, HashSet, VecDeque};
use std::mem;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::events::{Action, Event, JournalFailure, StemFailure, StopReason, TrackFailure};
use super::poll::PollSchedule;
use super::start::Start;
use crate::api::error::ApiError;
use crate::api::retry::{classify, AccountStop, CallKind, RetryPolicy, Verdict};
use crate::api::types::{TaskDetail, TaskStatus, TrackFile};
use crate::journal::replay::PriorTrack;
pub use crate::outcome::PhaseCounts;
use crate::outcome::{StatusCounts, TrackRecord, VariantEnd, VariantRecord, VariantStatus};
use crate::qc::QcCounts;
use crate::variant::VariantId;

/// The knobs of the decisions.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Variants in flight at most.
    pub concurrency: usize,
    /// A task not finished or failed by then ends as `timeout`.
    pub task_timeout: Duration,
    /// First poll after a submit.
    pub poll_interval: Duration,
    /// The poll interval grows up to this.
    pub poll_interval_max: Duration,
    /// Submit calls per variant per run, when the failures prove no task was created.
    pub submit_retry: RetryPolicy,
}

/// One variant as the run starts it.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The variant.
    pub id: VariantId,
    /// What its work starts with.
    pub start: Start,
    /// What earlier runs left.
    pub record: VariantRecord,
    /// A kept finished variant's tracks, compact: `record` has none, and the shell reads
    /// their entries back (`journal::stored::TrackStore`) only when it writes its rows, so
    /// that a folder's kept tracks are never all in memory at once.
    pub kept_tracks: Vec<PriorTrack>,
}

impl Entry {
    /// A variant no earlier run knows: submitted.
    pub fn fresh(variant: &crate::variant::Variant) -> Self {
        Entry::new(variant.id.clone(), Start::Submit, VariantRecord::default())
    }

    /// `id`, starting with `start` after `record` (which holds its tracks, if any).
    pub fn new(id: VariantId, start: Start, record: VariantRecord) -> Self {
        Entry {
            id,
            start,
            record,
            kept_tracks: Vec::new(),
        }
    }
}

/// A variant that ended (or that the run keeps as it is), as it leaves the run state.
#[derive(Debug)]
pub struct Ended {
    /// The variant.
    pub id: VariantId,
    /// How it ended.
    pub record: VariantRecord,
    /// A kept variant's tracks, compact (see [`Entry::kept_tracks`]).
    pub kept_tracks: Vec<PriorTrack>,
}

/// Where one variant in flight is.
#[derive(Clone, Debug)]
enum Phase {
    /// A `Submit` action is out.
    Submitting { backoff: crate::api::retry::Backoff },
    /// A `Poll` action is out.
    Polling {
        task_id: String,
        since: Instant,
        schedule: PollSchedule,
    },
    /// `Download` actions are out.
    Downloading(Downloads),
}

impl Phase {
    /// The live view's counter this phase is counted under.
    fn counter(&self) -> usize {
        match self {
            Phase::Submitting { .. } => 0,
            Phase::Polling { .. } => 1,
            Phase::Downloading(_) => 2,
        }
    }
}

#[derive(Clone, Debug)]
struct Downloads {
    outstanding: usize,
    tracks: Vec<TrackRecord>,
    failures: Vec<String>,
    stopped: bool,
}

/// A variant in flight.
#[derive(Clone, Debug)]
struct VariantState {
    phase: Phase,
    record: VariantRecord,
    kind: Kind,
}

/// What a variant is besides its phase (both false for most).
#[derive(Clone, Copy, Debug, Default)]
struct Kind {
    /// A paid task of a variant no longer in the manifest: collected, holding no slot,
    /// never in the report's rows or counts.
    orphan: bool,
    /// Finished before, its tracks downloaded again: it stays finished ([`keep_finished`]).
    restoring: bool,
}

impl Kind {
    /// The kind of a manifest's variant that starts with `start`, after `record`.
    fn of(start: &Start, record: &VariantRecord) -> Self {
        Kind {
            orphan: false,
            restoring: matches!(start, Start::Redownload { .. })
                && record.status == VariantStatus::Finished,
        }
    }
}

/// A variant waiting for an in-flight slot, in the queue: its id and, for one that does
/// not start as a fresh submit, the rest. Most of a fresh run's variants wait as an id
/// alone (32 bytes and its text): the queue is the largest thing the machine holds.
#[derive(Clone, Debug)]
struct Waiting {
    id: VariantId,
    /// `None` for a variant no run knows: submitted, its record [`UNKNOWN`].
    known: Option<Box<Known>>,
}

/// How a waiting variant starts, and what earlier runs left of it.
#[derive(Clone, Debug)]
struct Known {
    start: Start,
    /// `None` for [`UNKNOWN`].
    record: Option<VariantRecord>,
}

/// How a variant no run knows starts.
static SUBMIT: Start = Start::Submit;

impl Waiting {
    fn new(id: VariantId, start: Start, record: VariantRecord) -> Self {
        let record = (record != UNKNOWN).then_some(record);
        let known = match (&start, &record) {
            (Start::Submit, None) => None,
            _ => Some(Box::new(Known { start, record })),
        };
        Waiting { id, known }
    }

    fn start(&self) -> &Start {
        self.known.as_ref().map_or(&SUBMIT, |known| &known.start)
    }

    /// What earlier runs left; `None` for a variant no run knows.
    fn record(&self) -> Option<&VariantRecord> {
        self.known.as_ref()?.record.as_ref()
    }

    /// Its id, how it starts, and its record.
    fn into_parts(self) -> (VariantId, Start, VariantRecord) {
        match self.known {
            None => (self.id, Start::Submit, VariantRecord::default()),
            Some(known) => {
                let Known { start, record } = *known;
                (self.id, start, record.unwrap_or_default())
            }
        }
    }
}

/// The record of a variant no run knows, borrowed by a fresh variant's slot.
static UNKNOWN: VariantRecord = VariantRecord::UNKNOWN;

/// The phase and record of every variant not yet ended, and the run-level stops.
#[derive(Debug)]
pub struct RunState {
    policy: Policy,
    /// In flight (at most `policy.concurrency`).
    active: HashMap<VariantId, VariantState>,
    /// Waiting for a slot, in start order.
    queue: VecDeque<Waiting>,
    in_flight: usize,
    /// Variants in flight by phase ([`Phase::counter`]), kept as the phases change.
    phases: [usize; 3],
    /// Every ended variant (those an earlier run left, too), by status.
    ended_counts: StatusCounts,
    /// Ended since the shell last drained them: their records leave the machine.
    ended: Vec<Ended>,
    stops: Vec<StopReason>,
    submits_stopped: bool,
    work_stopped: bool,
    tasks_created: usize,
    unknown_outcomes: usize,
    /// Orphans given by [`RunState::with_orphans`], polled at [`RunState::start`].
    orphans: Vec<Waiting>,
    /// Orphans being polled or downloaded (in `active`, holding no in-flight slot).
    collecting: usize,
    /// Every ended orphan, by status.
    orphan_counts: StatusCounts,
    /// The tracks of every ended variant of the manifest (earlier runs' too), by verdict.
    qc: QcCounts,
    /// The finished variants whose tracks could not all be downloaded again, with their
    /// note: few (a file missing or changed on disk), so kept to the end for the closing.
    unrestored: Vec<(VariantId, String)>,
    /// Whether any call of the run has reached the API.
    api_reached: bool,
    /// Why the base URL could not be used, when that stopped the run.
    unusable: Option<String>,
}

impl RunState {
    /// The state of a run over `entries`, in manifest order. The kept ones (nothing to
    /// do) are ended at once: the first [`RunState::drain_ended`] gives their records.
    pub fn new(policy: Policy, entries: Vec<Entry>) -> Self {
        let mut queue = VecDeque::new();
        let mut ended = Vec::new();
        let mut ended_counts = StatusCounts::default();
        let mut qc = QcCounts::default();
        for entry in entries {
            match entry.start {
                Start::Keep => {
                    ended_counts.add(entry.record.status);
                    count_tracks(&mut qc, &entry.record);
                    for track in &entry.kept_tracks {
                        qc.add(track.qc);
                    }
                    ended.push(Ended {
                        id: entry.id,
                        record: entry.record,
                        kept_tracks: entry.kept_tracks,
                    });
                }
                start => queue.push_back(Waiting::new(entry.id, start, entry.record)),
            }
        }
        RunState {
            policy,
            active: HashMap::new(),
            queue,
            in_flight: 0,
            phases: [0; 3],
            ended_counts,
            ended,
            stops: Vec::new(),
            submits_stopped: false,
            work_stopped: false,
            tasks_created: 0,
            unknown_outcomes: 0,
            orphans: Vec::new(),
            collecting: 0,
            orphan_counts: StatusCounts::default(),
            qc,
            unrestored: Vec::new(),
            api_reached: false,
            unusable: None,
        }
    }

    /// Adds the paid tasks of variants no longer in the manifest, to be collected: each
    /// entry's start is the poll of its task (anything else is ignored: an orphan is
    /// never bought, and a variant of the manifest is never an orphan). Before
    /// [`RunState::start`].
    pub fn with_orphans(mut self, orphans: impl IntoIterator<Item = Entry>) -> Self {
        let mut taken: HashSet<VariantId> = self.orphans.iter().map(|w| w.id.clone()).collect();
        let mut added: Vec<Waiting> = orphans
            .into_iter()
            .filter(|e| matches!(e.start, Start::Poll { .. }))
            .filter(|e| taken.insert(e.id.clone()))
            .map(|e| Waiting::new(e.id, e.start, e.record))
            .collect();
        if added.is_empty() {
            return self;
        }
        // One pass over the manifest's variants, once: few orphans, checked by a set.
        let ours: HashSet<&VariantId> = added.iter().map(|w| &w.id).collect();
        let manifest: HashSet<VariantId> = (self.queue.iter().map(|w| &w.id))
            .chain(self.ended.iter().map(|e| &e.id))
            .chain(self.active.keys())
            .filter(|id| ours.contains(id))
            .cloned()
            .collect();
        added.retain(|w| !manifest.contains(&w.id));
        self.orphans.append(&mut added);
        self
    }

    /// The first actions: every orphan's poll (they take no slot), then as many variants
    /// as the in-flight cap allows.
    pub fn start(&mut self, now: Instant, at: DateTime<Utc>) -> Vec<Action> {
        let mut actions = Vec::new();
        self.start_orphans(now, at, &mut actions);
        self.fill_slots(now, at, &mut actions);
        actions
    }

    /// Polls every orphan at once, unless the run already stopped all work (then each
    /// ends `pending`: the next run asks again).
    fn start_orphans(&mut self, now: Instant, at: DateTime<Utc>, actions: &mut Vec<Action>) {
        let mut orphans = mem::take(&mut self.orphans);
        orphans.sort_by(|a, b| a.id.cmp(&b.id));
        let kind = Kind {
            orphan: true,
            restoring: false,
        };
        for waiting in orphans {
            let (id, start, record) = waiting.into_parts();
            let Start::Poll { task_id } = start else {
                continue;
            };
            if self.work_stopped {
                let why = "not polled: the run stopped first; the next run collects its task";
                let end = VariantEnd::with_error(VariantStatus::Pending, why, at);
                self.end_record(id, record, end, kind, actions);
                continue;
            }
            let phase = Phase::Polling {
                task_id: task_id.clone(),
                since: now,
                schedule: PollSchedule::new(
                    self.policy.poll_interval,
                    self.policy.poll_interval_max,
                ),
            };
            actions.push(Action::Poll {
                id: id.clone(),
                task_id,
                after: Duration::ZERO,
            });
            self.active.insert(
                id,
                VariantState {
                    phase,
                    record,
                    kind,
                },
            );
            self.collecting += 1;
        }
    }

    /// Takes one event in; returns what to do next. The only place that decides.
    pub fn handle(&mut self, now: Instant, at: DateTime<Utc>, event: Event) -> Vec<Action> {
        let mut actions = Vec::new();
        self.observe_api(&event, at, &mut actions);
        match event {
            Event::Submitted {
                id,
                task_id,
                at,
                unjournaled,
            } => match unjournaled {
                None => self.on_submitted(now, &id, task_id, at, &mut actions),
                Some(failure) => self.on_unjournaled(&id, task_id, at, failure, &mut actions),
            },
            Event::SubmitFailed { id, error } => {
                self.on_submit_failed(&id, &error, at, &mut actions)
            }
            Event::SubmitWithdrawn { id, .. } => self.pending(
                &id,
                "not submitted: the run stopped first",
                at,
                &mut actions,
            ),
            Event::StemUnavailable { id, error } => {
                self.on_stem_unavailable(&id, &error, at, &mut actions)
            }
            Event::Polled { id, detail } => self.on_polled(now, &id, detail, at, &mut actions),
            Event::PollFailed { id, error } => {
                self.on_poll_failed(now, &id, &error, at, &mut actions)
            }
            Event::PollStopped { id } => {
                let why = "the run stopped while the task was running; the next run collects it";
                self.pending(&id, why, at, &mut actions)
            }
            Event::TrackDownloaded { id, track, .. } => {
                self.on_track(&id, Ok(track), at, &mut actions)
            }
            Event::TrackFailed {
                id,
                number,
                failure,
            } => {
                if failure.disk_full() {
                    self.stop(StopReason::Storage { disk_full: true }, at, &mut actions);
                }
                self.on_track(&id, Err((number, failure)), at, &mut actions)
            }
            Event::JournalFailed { id, disk_full } => {
                self.stop(StopReason::Storage { disk_full }, at, &mut actions);
                if let Some(id) = id {
                    let why = "not submitted: the journal could not record the intent";
                    self.pending(&id, why, at, &mut actions);
                }
            }
            Event::Stop(reason) => self.stop(reason, at, &mut actions),
            // What it says of the API was taken in above.
            Event::ApiChecked { .. } => {}
        }
        self.fill_slots(now, at, &mut actions);
        actions
    }

    /// What an event says of the base URL: an answer of the API's proves it; while none
    /// has, an error that says the URL cannot be used stops the run before the first
    /// event's own handling (so a submit is not tried again, an upload not started).
    fn observe_api(&mut self, event: &Event, at: DateTime<Utc>, actions: &mut Vec<Action>) {
        let error = match event {
            Event::Submitted { .. } | Event::Polled { .. } | Event::ApiChecked { error: None } => {
                self.api_reached = true;
                return;
            }
            Event::SubmitFailed { error, .. }
            | Event::PollFailed { error, .. }
            | Event::StemUnavailable {
                error: StemFailure::Api(error),
                ..
            }
            | Event::ApiChecked { error: Some(error) } => error,
            _ => return,
        };
        if error.reached_api() {
            self.api_reached = true;
        } else if !self.api_reached && error.base_url_unusable() && self.unusable.is_none() {
            self.unusable = Some(error.to_string());
            self.stop(StopReason::UnusableBaseUrl, at, actions);
        }
    }

    /// Why the base URL could not be used, when that stopped the run: the error of the
    /// call that proved it.
    pub fn unusable_base_url(&self) -> Option<&str> {
        self.unusable.as_deref()
    }

    /// Ends a variant `pending`: what a stop leaves, for the next run.
    fn pending(&mut self, id: &VariantId, why: &str, at: DateTime<Utc>, actions: &mut Vec<Action>) {
        let end = VariantEnd::with_error(VariantStatus::Pending, why, at);
        self.end(id, end, actions);
    }

    fn on_submitted(
        &mut self,
        now: Instant,
        id: &VariantId,
        task_id: String,
        answered: DateTime<Utc>,
        actions: &mut Vec<Action>,
    ) {
        self.tasks_created += 1;
        let work_stopped = self.work_stopped;
        let poll_interval = self.policy.poll_interval;
        let schedule = PollSchedule::new(poll_interval, self.policy.poll_interval_max);
        let Some(variant) = self.active.get_mut(id) else {
            return;
        };
        variant.record.attempts += 1;
        variant.record.task_id = Some(task_id.clone());
        variant.record.submitted_at = Some(answered);
        if work_stopped {
            let why =
                "the run stopped after the submit was answered; the next run collects its task";
            let end = VariantEnd::with_error(VariantStatus::Pending, why, answered);
            self.end(id, end, actions);
            return;
        }
        let polling = Phase::Polling {
            task_id: task_id.clone(),
            since: now,
            schedule,
        };
        shift(&mut self.phases, variant, polling);
        actions.push(Action::Poll {
            id: id.clone(),
            task_id,
            after: poll_interval,
        });
    }

    /// A task was created, but the journal could not keep its id: buy nothing more, and
    /// say the id where the user will look.
    fn on_unjournaled(
        &mut self,
        id: &VariantId,
        task_id: String,
        answered: DateTime<Utc>,
        failure: JournalFailure,
        actions: &mut Vec<Action>,
    ) {
        self.tasks_created += 1;
        self.stop(
            StopReason::Storage {
                disk_full: failure.disk_full,
            },
            answered,
            actions,
        );
        let Some(variant) = self.active.get_mut(id) else {
            return;
        };
        variant.record.attempts += 1;
        variant.record.task_id = Some(task_id.clone());
        variant.record.submitted_at = Some(answered);
        let why = format!("task {task_id} was created but the journal could not record it, so the next run will not collect it (hint: keep this row: it is the only place its id is written)");
        let end = VariantEnd::with_error(VariantStatus::Error, why, answered);
        self.end(id, end, actions);
    }

    fn on_submit_failed(
        &mut self,
        id: &VariantId,
        error: &ApiError,
        at: DateTime<Utc>,
        actions: &mut Vec<Action>,
    ) {
        let verdict = classify(error, CallKind::Submit);
        if matches!(verdict, Verdict::OutcomeUnknown | Verdict::Unreadable) {
            self.unknown_outcomes += 1;
        }
        let Some(variant) = self.active.get_mut(id) else {
            return;
        };
        variant.record.attempts += 1;
        let (status, why) = match verdict {
            Verdict::Retry { after } => match self.submit_again(id, after, error, actions) {
                Some(end) => end,
                None => return,
            },
            Verdict::OutcomeUnknown => (VariantStatus::Error, unknown_message(error)),
            Verdict::Unreadable => {
                self.stop(StopReason::UnreadableSubmit, at, actions);
                (
                    VariantStatus::Error,
                    format!("the provider answered the submit with a body that could not be read ({error}): a task may exist and will be billed if it succeeds; not submitted again (hint: check for a newer stembatch)"),
                )
            }
            Verdict::Reject => (VariantStatus::Error, format!("submit rejected: {error}")),
            Verdict::Stop(account) => {
                self.stop(StopReason::Account(account), at, actions);
                (
                    VariantStatus::Pending,
                    format!("not submitted: the account stopped the run ({error})"),
                )
            }
        };
        self.end(id, VariantEnd::with_error(status, why, at), actions);
    }

    /// After a failure that proves no task was created: submit again after a backoff, or
    /// say how the variant ends.
    fn submit_again(
        &mut self,
        id: &VariantId,
        retry_after: Option<Duration>,
        error: &ApiError,
        actions: &mut Vec<Action>,
    ) -> Option<(VariantStatus, String)> {
        let submits_stopped = self.submits_stopped;
        let Some(Phase::Submitting { backoff }) = self.active.get_mut(id).map(|v| &mut v.phase)
        else {
            return None;
        };
        match backoff.next_wait(retry_after) {
            Some(wait) if !submits_stopped => {
                actions.push(Action::Submit {
                    id: id.clone(),
                    after: wait,
                });
                None
            }
            Some(_) => Some((
                VariantStatus::Pending,
                format!("not submitted again: the run stopped first ({error})"),
            )),
            None => Some((
                VariantStatus::Error,
                format!(
                    "submit failed {} times, each time before a task was created: {error}",
                    backoff.failures()
                ),
            )),
        }
    }

    fn on_stem_unavailable(
        &mut self,
        id: &VariantId,
        error: &StemFailure,
        at: DateTime<Utc>,
        actions: &mut Vec<Action>,
    ) {
        let account = match error {
            StemFailure::Api(api) => match classify(api, CallKind::Idempotent) {
                Verdict::Stop(account) => Some(account),
                _ => None,
            },
            StemFailure::Storage(storage) if storage.refused_credentials() => {
                Some(AccountStop::StorageRefused)
            }
            StemFailure::Storage(_) => None,
        };
        let (status, why) = match account {
            Some(account) => {
                self.stop(StopReason::Account(account), at, actions);
                (
                    VariantStatus::Pending,
                    format!("not submitted: the account stopped the run ({error})"),
                )
            }
            // Nothing was paid: the next run submits it again by itself.
            None => (
                VariantStatus::Error,
                format!("not submitted: the stem's upload failed: {error}"),
            ),
        };
        self.end(id, VariantEnd::with_error(status, why, at), actions);
    }

    fn on_polled(
        &mut self,
        now: Instant,
        id: &VariantId,
        detail: TaskDetail,
        at: DateTime<Utc>,
        actions: &mut Vec<Action>,
    ) {
        if self.work_stopped {
            let why = "the run stopped while the task was running; the next run collects it";
            self.end(
                id,
                VariantEnd::with_error(VariantStatus::Pending, why, at),
                actions,
            );
            return;
        }
        let Some(Phase::Polling { task_id, .. }) = self.active.get(id).map(|v| &v.phase) else {
            return;
        };
        let task_id = task_id.clone();
        match detail.status {
            TaskStatus::Finished if detail.files.is_empty() => {
                let why = format!("task {task_id} finished without tracks");
                self.end(
                    id,
                    VariantEnd::with_error(VariantStatus::Error, why, at),
                    actions,
                );
            }
            TaskStatus::Finished => self.start_downloads(id, task_id, detail.files, actions),
            TaskStatus::Failed => {
                let why = detail
                    .error_message
                    .filter(|m| !m.trim().is_empty())
                    .unwrap_or_else(|| "the provider reported the task failed".into());
                self.end(
                    id,
                    VariantEnd::with_error(VariantStatus::Failed, why, at),
                    actions,
                );
            }
            TaskStatus::NotStarted | TaskStatus::Running | TaskStatus::Unknown => {
                self.poll_again(now, id, detail.progress, at, actions)
            }
        }
    }

    fn start_downloads(
        &mut self,
        id: &VariantId,
        task_id: String,
        files: Vec<TrackFile>,
        actions: &mut Vec<Action>,
    ) {
        let Some(variant) = self.active.get_mut(id) else {
            return;
        };
        let downloading = Phase::Downloading(Downloads {
            outstanding: files.len(),
            tracks: Vec::new(),
            failures: Vec::new(),
            stopped: false,
        });
        shift(&mut self.phases, variant, downloading);
        for (i, file) in files.into_iter().enumerate() {
            actions.push(Action::Download {
                id: id.clone(),
                task_id: task_id.clone(),
                number: i as u32 + 1,
                file,
            });
        }
    }

    fn on_poll_failed(
        &mut self,
        now: Instant,
        id: &VariantId,
        error: &ApiError,
        at: DateTime<Utc>,
        actions: &mut Vec<Action>,
    ) {
        let Some(Phase::Polling { task_id, .. }) = self.active.get(id).map(|v| &v.phase) else {
            return;
        };
        let task_id = task_id.clone();
        match classify(error, CallKind::Idempotent) {
            Verdict::Stop(AccountStop::BadKey) => {
                self.stop(StopReason::Account(AccountStop::BadKey), at, actions);
                let why = format!(
                    "the account stopped the run ({error}); the next run collects task {task_id}"
                );
                self.end(
                    id,
                    VariantEnd::with_error(VariantStatus::Pending, why, at),
                    actions,
                );
            }
            Verdict::Reject => {
                let why = format!("task {task_id} query rejected: {error}");
                self.end(
                    id,
                    VariantEnd::with_error(VariantStatus::Error, why, at),
                    actions,
                );
            }
            // The task exists and is paid for: keep asking until it times out.
            _ => self.poll_again(now, id, None, at, actions),
        }
    }

    /// The next poll of an unfinished task, or its timeout.
    fn poll_again(
        &mut self,
        now: Instant,
        id: &VariantId,
        progress: Option<f64>,
        at: DateTime<Utc>,
        actions: &mut Vec<Action>,
    ) {
        let timeout = self.policy.task_timeout;
        let Some(Phase::Polling {
            task_id,
            since,
            schedule,
        }) = self.active.get_mut(id).map(|v| &mut v.phase)
        else {
            return;
        };
        let deadline = *since + timeout;
        if now >= deadline {
            let why = format!(
                "task {task_id} not finished after {}",
                humantime::format_duration(timeout)
            );
            self.end(
                id,
                VariantEnd::with_error(VariantStatus::Timeout, why, at),
                actions,
            );
            return;
        }
        let after = schedule
            .after_query(now - *since, progress)
            .min(deadline - now);
        actions.push(Action::Poll {
            id: id.clone(),
            task_id: task_id.clone(),
            after,
        });
    }

    fn on_track(
        &mut self,
        id: &VariantId,
        result: Result<TrackRecord, (u32, TrackFailure)>,
        at: DateTime<Utc>,
        actions: &mut Vec<Action>,
    ) {
        let Some(variant) = self.active.get_mut(id) else {
            return;
        };
        let restoring = variant.kind.restoring;
        let Phase::Downloading(downloads) = &mut variant.phase else {
            return;
        };
        downloads.outstanding -= 1;
        match result {
            Ok(track) => downloads.tracks.push(track),
            Err((_, TrackFailure::Stopped)) => downloads.stopped = true,
            Err((_, failure)) if failure.disk_full() => downloads.stopped = true,
            Err((number, failure)) => downloads
                .failures
                .push(format!("track {number}: {failure}")),
        }
        if downloads.outstanding > 0 {
            return;
        }
        let mut downloads = downloads.clone();
        let mut end = if downloads.stopped {
            VariantEnd::with_error(
                VariantStatus::Pending,
                "the run stopped during the downloads; the next run collects the task",
                at,
            )
        } else if !downloads.failures.is_empty() {
            VariantEnd::with_error(VariantStatus::Error, downloads.failures.join("; "), at)
        } else {
            downloads.tracks.sort_by_key(|t| t.number);
            VariantEnd {
                status: VariantStatus::Finished,
                tracks: mem::take(&mut downloads.tracks),
                error: None,
                at,
            }
        };
        if restoring && end.status != VariantStatus::Finished {
            // What did land replaces its journaled track; the rest are kept.
            end.tracks = downloads.tracks;
        }
        self.end(id, end, actions);
    }

    /// A run-level stop: nothing more is submitted; with most reasons, no more work at all.
    fn stop(&mut self, reason: StopReason, at: DateTime<Utc>, actions: &mut Vec<Action>) {
        if self.stops.contains(&reason) {
            return;
        }
        self.stops.push(reason);
        self.submits_stopped = true;
        self.work_stopped |= reason.stops_all_work();
        actions.push(Action::Stop(reason));
        let work_stopped = self.work_stopped;
        // One pass: the queue keeps, in order, only what may still be worked on (a task
        // to poll when only submits stopped).
        let mut stopped = Vec::new();
        for waiting in mem::take(&mut self.queue) {
            match (waiting.start(), work_stopped) {
                (Start::Submit | Start::Refuse { .. }, _) | (_, true) => stopped.push(waiting),
                _ => self.queue.push_back(waiting),
            }
        }
        for waiting in stopped {
            let (id, start, record) = waiting.into_parts();
            let end = match &start {
                Start::Refuse { reason } => {
                    VariantEnd::with_error(VariantStatus::Error, reason.clone(), at)
                }
                Start::Submit => VariantEnd::with_error(
                    VariantStatus::Pending,
                    "not submitted: the run stopped first",
                    at,
                ),
                _ => VariantEnd::with_error(
                    VariantStatus::Pending,
                    "not polled: the run stopped first; the next run collects its task",
                    at,
                ),
            };
            let kind = Kind::of(&start, &record);
            self.end_record(id, record, end, kind, actions);
        }
    }

    /// Starts queued variants while the in-flight cap allows.
    fn fill_slots(&mut self, now: Instant, at: DateTime<Utc>, actions: &mut Vec<Action>) {
        while self.in_flight < self.policy.concurrency {
            let Some(waiting) = self.queue.pop_front() else {
                return;
            };
            let (id, start, mut record) = waiting.into_parts();
            let kind = Kind::of(&start, &record);
            let phase = match start {
                Start::Refuse { reason } => {
                    let end = VariantEnd::with_error(VariantStatus::Error, reason, at);
                    self.end_record(id, record, end, kind, actions);
                    continue;
                }
                Start::Submit => {
                    // A new submit: the record no longer names an earlier task.
                    record.task_id = None;
                    record.submitted_at = None;
                    let seed = seed_of(&id);
                    actions.push(Action::Submit {
                        id: id.clone(),
                        after: Duration::ZERO,
                    });
                    Phase::Submitting {
                        backoff: self.policy.submit_retry.backoff(seed),
                    }
                }
                // A task from an earlier run is asked about at once; its detail also
                // brings fresh result URLs, since the journaled ones may have expired.
                Start::Poll { task_id } | Start::Redownload { task_id, .. } => {
                    actions.push(Action::Poll {
                        id: id.clone(),
                        task_id: task_id.clone(),
                        after: Duration::ZERO,
                    });
                    Phase::Polling {
                        task_id,
                        since: now,
                        schedule: PollSchedule::new(
                            self.policy.poll_interval,
                            self.policy.poll_interval_max,
                        ),
                    }
                }
                Start::Keep => {
                    self.ended_counts.add(record.status);
                    count_tracks(&mut self.qc, &record);
                    self.ended.push(Ended {
                        id,
                        record,
                        kept_tracks: Vec::new(),
                    });
                    continue;
                }
            };
            self.phases[phase.counter()] += 1;
            self.active.insert(
                id,
                VariantState {
                    phase,
                    record,
                    kind,
                },
            );
            self.in_flight += 1;
        }
    }

    /// Ends a variant in flight: its record takes the end in, and leaves. (A waiting
    /// variant ends only through a stop, which has it in hand.)
    fn end(&mut self, id: &VariantId, end: VariantEnd, actions: &mut Vec<Action>) {
        let Some(variant) = self.active.remove(id) else {
            return;
        };
        if variant.kind.orphan {
            self.collecting -= 1;
        } else {
            self.phases[variant.phase.counter()] -= 1;
            self.in_flight -= 1;
        }
        self.end_record(id.clone(), variant.record, end, variant.kind, actions);
    }

    /// Takes a variant's end into its record and the counters: a manifest's variant's
    /// record waits in `ended` for [`RunState::drain_ended`]; an orphan's is counted
    /// apart and goes (journaled by its `End` action, never into the results).
    fn end_record(
        &mut self,
        id: VariantId,
        mut record: VariantRecord,
        end: VariantEnd,
        kind: Kind,
        actions: &mut Vec<Action>,
    ) {
        let end = match kind.restoring {
            true => keep_finished(&record, end),
            false => end,
        };
        record.apply_end(&end);
        if kind.orphan {
            self.orphan_counts.add(record.status);
        } else {
            self.ended_counts.add(record.status);
            count_tracks(&mut self.qc, &record);
            if kind.restoring {
                if let Some(note) = &end.error {
                    self.unrestored.push((id.clone(), note.clone()));
                }
            }
        }
        actions.push(Action::End {
            id: id.clone(),
            end,
        });
        if !kind.orphan {
            self.ended.push(Ended {
                id,
                record,
                kept_tracks: Vec::new(),
            });
        }
    }

    /// The records of the variants ended since the last call (at the first call, also
    /// those the run keeps as they are): they leave the machine.
    pub fn drain_ended(&mut self) -> std::vec::Drain<'_, Ended> {
        self.ended.drain(..)
    }

    /// The records of the variants waiting for a slot that earlier runs left.
    pub fn waiting_records(&self) -> impl Iterator<Item = (&VariantId, &VariantRecord)> {
        self.queue.iter().filter_map(|w| Some((&w.id, w.record()?)))
    }

    /// The records of the manifest's variants in flight (not the orphans': they have no
    /// row), for a report written while they run.
    pub fn in_flight_records(&self) -> impl Iterator<Item = (&VariantId, &VariantRecord)> {
        self.active
            .iter()
            .filter(|(_, v)| !v.kind.orphan)
            .map(|(id, v)| (id, &v.record))
    }

    /// Whether every variant's work is over (the orphans' too).
    pub fn is_done(&self) -> bool {
        self.queue.is_empty()
            && self.in_flight == 0
            && self.collecting == 0
            && self.orphans.is_empty()
    }

    /// The record of one variant not yet drained: in flight, waiting or ended since the
    /// last [`RunState::drain_ended`] (a linear search of the last two: for tests).
    pub fn record(&self, id: &VariantId) -> Option<&VariantRecord> {
        self.active
            .get(id)
            .map(|v| &v.record)
            .or_else(|| {
                let waiting = self.queue.iter().find(|w| &w.id == id)?;
                Some(waiting.record().unwrap_or(&UNKNOWN))
            })
            .or_else(|| self.ended.iter().find(|e| &e.id == id).map(|e| &e.record))
    }

    /// How many of the manifest's variants have each status: the ended ones by their
    /// end, the others as pending (at the end of a run, every variant has ended). Orphans
    /// aside: they are not the manifest's, and do not decide the exit code.
    pub fn counts(&self) -> StatusCounts {
        let mut counts = self.ended_counts;
        counts.pending += self.queue.len() + self.in_flight;
        counts
    }

    /// How many orphans (paid tasks of variants no longer in the manifest) ended with
    /// each status: `finished` is collected into `superseded/`.
    pub fn orphan_counts(&self) -> StatusCounts {
        self.orphan_counts
    }

    /// The tracks of every ended variant of the manifest (earlier runs' too) by QC
    /// verdict: kept as variants end, like the other counts.
    pub fn qc_counts(&self) -> QcCounts {
        self.qc
    }

    /// The finished variants of this run whose tracks could not all be downloaded again
    /// (a file missing or changed on disk, the provider's copy gone), in the order they
    /// ended: still finished, with this note in their `error`.
    pub fn unrestored(&self) -> impl Iterator<Item = (&VariantId, &str)> {
        self.unrestored.iter().map(|(id, note)| (id, note.as_str()))
    }

    /// The run-level stops, first first.
    pub fn stops(&self) -> &[StopReason] {
        &self.stops
    }

    /// Tasks the provider created in this run (each is billed when it succeeds).
    pub fn tasks_created(&self) -> usize {
        self.tasks_created
    }

    /// Submits of this run whose outcome stayed unknown (each may have created a task).
    pub fn unknown_outcomes(&self) -> usize {
        self.unknown_outcomes
    }

    /// Variants in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// How many variants are in each phase, for the live view: kept as the phases
    /// change, O(1). An ended variant counts under its status (those an earlier run
    /// finished, too).
    pub fn phase_counts(&self) -> PhaseCounts {
        PhaseCounts {
            waiting: self.queue.len(),
            submitting: self.phases[0],
            running: self.phases[1],
            downloading: self.phases[2],
            ended: self.ended_counts,
        }
    }
}

/// Moves a variant in flight to its next phase, and its count with it (an orphan is not
/// counted: the live view shows the manifest's variants).
fn shift(phases: &mut [usize; 3], variant: &mut VariantState, to: Phase) {
    if !variant.kind.orphan {
        phases[variant.phase.counter()] -= 1;
        phases[to.counter()] += 1;
    }
    variant.phase = to;
}

/// Adds a record's tracks to the counts by QC verdict.
fn count_tracks(counts: &mut QcCounts, record: &VariantRecord) {
    for track in &record.tracks {
        counts.add(track.qc.as_ref().map(|qc| qc.verdict));
    }
}

/// How a finished variant whose tracks were downloaded again ends: finished, with its
/// journaled tracks, those that landed again in their place, and the reason the rest did
/// not (the provider's copies expired, the run stopped) as its note. A track file on disk
/// never leaves the record because the provider no longer serves it.
fn keep_finished(record: &VariantRecord, end: VariantEnd) -> VariantEnd {
    if end.status == VariantStatus::Finished && end.error.is_none() {
        return end;
    }
    let mut tracks = record.tracks.clone();
    for track in end.tracks {
        match tracks.iter_mut().find(|t| t.number == track.number) {
            Some(kept) => *kept = track,
            None => tracks.push(track),
        }
    }
    tracks.sort_by_key(|t| t.number);
    let why = end.error.unwrap_or_else(|| "the run stopped first".into());
    VariantEnd {
        status: VariantStatus::Finished,
        tracks,
        error: Some(format!(
            "a track file missing or changed on disk could not be downloaded again ({why}); the tracks downloaded before are kept"
        )),
        at: record.finished_at.unwrap_or(end.at),
    }
}

/// The error of a submit whose outcome is unknown.
fn unknown_message(error: &ApiError) -> String {
    format!("the submit's answer was lost ({error}): the provider may have created a task, which is billed if it succeeds, so it is not submitted again (hint: re-run with --retry-failed to submit it again, at the risk of paying twice)")
}

/// A per-variant jitter seed, so that retries of different variants spread out.
fn seed_of(id: &VariantId) -> u64 {
    id.as_str().bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

#[cfg(test)]
mod tests;
