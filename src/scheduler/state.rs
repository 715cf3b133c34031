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
//!   `journal::rerun::orphans`) is polled and downloaded, never submitted, and takes no
//!   in-flight slot: it buys nothing;
//! - a finished variant whose tracks are downloaded again (a file missing or changed on
//!   disk) stays finished with its tracks, whatever becomes of the download again.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::events::{Action, Event, JournalFailure, StemFailure, StopReason, TrackFailure};
use super::poll::PollSchedule;
use crate::api::error::ApiError;
use crate::api::retry::{classify, AccountStop, CallKind, RetryPolicy, Verdict};
use crate::api::types::{TaskDetail, TaskStatus, TrackFile};
use crate::journal::replay::Start;
use crate::outcome::{StatusCounts, TrackRecord, VariantEnd, VariantRecord, VariantStatus};
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
}

impl Entry {
    /// A variant no earlier run knows: submitted.
    pub fn fresh(variant: &crate::variant::Variant) -> Self {
        Entry {
            id: variant.id.clone(),
            start: Start::Submit,
            record: VariantRecord::default(),
        }
    }
}

/// Where one variant is.
#[derive(Clone, Debug)]
enum Phase {
    /// Waiting for an in-flight slot.
    Queued(Start),
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
    /// Its work in this run is over (or there was none).
    Ended,
}

#[derive(Clone, Debug)]
struct Downloads {
    outstanding: usize,
    tracks: Vec<TrackRecord>,
    failures: Vec<String>,
    stopped: bool,
}

#[derive(Clone, Debug)]
struct VariantState {
    phase: Phase,
    record: VariantRecord,
    /// A paid task of a variant no longer in the manifest: collected, never in the
    /// report's rows or counts.
    orphan: bool,
    /// Finished before, its tracks downloaded again: it stays finished ([`keep_finished`]).
    restoring: bool,
}

/// Every variant's phase and record, and the run-level stops.
#[derive(Debug)]
pub struct RunState {
    policy: Policy,
    variants: HashMap<VariantId, VariantState>,
    /// Manifest order, for the report and the start order.
    order: Vec<VariantId>,
    queue: VecDeque<VariantId>,
    in_flight: usize,
    stops: Vec<StopReason>,
    submits_stopped: bool,
    work_stopped: bool,
    tasks_created: usize,
    unknown_outcomes: usize,
    /// Orphans being polled or downloaded (they hold no in-flight slot).
    collecting: usize,
    /// Whether any call of the run has reached the API.
    api_reached: bool,
    /// Why the base URL could not be used, when that stopped the run.
    unusable: Option<String>,
}

impl RunState {
    /// The state of a run over `entries`, in manifest order.
    pub fn new(policy: Policy, entries: Vec<Entry>) -> Self {
        let mut variants = HashMap::with_capacity(entries.len());
        let mut order = Vec::with_capacity(entries.len());
        let mut queue = VecDeque::new();
        for entry in entries {
            let restoring = matches!(entry.start, Start::Redownload { .. })
                && entry.record.status == VariantStatus::Finished;
            let phase = match entry.start {
                Start::Keep => Phase::Ended,
                start => {
                    queue.push_back(entry.id.clone());
                    Phase::Queued(start)
                }
            };
            order.push(entry.id.clone());
            let state = VariantState {
                phase,
                record: entry.record,
                orphan: false,
                restoring,
            };
            variants.insert(entry.id, state);
        }
        RunState {
            policy,
            variants,
            order,
            queue,
            in_flight: 0,
            stops: Vec::new(),
            submits_stopped: false,
            work_stopped: false,
            tasks_created: 0,
            unknown_outcomes: 0,
            collecting: 0,
            api_reached: false,
            unusable: None,
        }
    }

    /// Adds the paid tasks of variants no longer in the manifest, to be collected: each
    /// entry's start is the poll of its task (anything else is ignored: an orphan is
    /// never bought). Before [`RunState::start`].
    pub fn with_orphans(mut self, orphans: impl IntoIterator<Item = Entry>) -> Self {
        for entry in orphans {
            if !matches!(entry.start, Start::Poll { .. }) || self.variants.contains_key(&entry.id) {
                continue;
            }
            let state = VariantState {
                phase: Phase::Queued(entry.start),
                record: entry.record,
                orphan: true,
                restoring: false,
            };
            self.variants.insert(entry.id, state);
        }
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

    /// Polls every orphan at once, unless the run already stopped all work.
    fn start_orphans(&mut self, now: Instant, at: DateTime<Utc>, actions: &mut Vec<Action>) {
        let mut queued: Vec<(VariantId, String)> = self
            .variants
            .iter()
            .filter(|(_, v)| v.orphan)
            .filter_map(|(id, v)| match &v.phase {
                Phase::Queued(Start::Poll { task_id }) => Some((id.clone(), task_id.clone())),
                _ => None,
            })
            .collect();
        queued.sort();
        for (id, task_id) in queued {
            if self.work_stopped {
                let why = "not polled: the run stopped first; the next run collects its task";
                self.pending(&id, why, at, actions);
                continue;
            }
            let schedule =
                PollSchedule::new(self.policy.poll_interval, self.policy.poll_interval_max);
            if let Some(variant) = self.variants.get_mut(&id) {
                variant.phase = Phase::Polling {
                    task_id: task_id.clone(),
                    since: now,
                    schedule,
                };
                self.collecting += 1;
                actions.push(Action::Poll {
                    id,
                    task_id,
                    after: Duration::ZERO,
                });
            }
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
        let Some(variant) = self.variants.get_mut(id) else {
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
        variant.phase = Phase::Polling {
            task_id: task_id.clone(),
            since: now,
            schedule,
        };
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
        let Some(variant) = self.variants.get_mut(id) else {
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
        let Some(variant) = self.variants.get_mut(id) else {
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
        let Some(Phase::Submitting { backoff }) = self.variants.get_mut(id).map(|v| &mut v.phase)
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
        let Some(Phase::Polling { task_id, .. }) = self.variants.get(id).map(|v| &v.phase) else {
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
        let Some(variant) = self.variants.get_mut(id) else {
            return;
        };
        variant.phase = Phase::Downloading(Downloads {
            outstanding: files.len(),
            tracks: Vec::new(),
            failures: Vec::new(),
            stopped: false,
        });
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
        let Some(Phase::Polling { task_id, .. }) = self.variants.get(id).map(|v| &v.phase) else {
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
        }) = self.variants.get_mut(id).map(|v| &mut v.phase)
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
        let restoring = self.variants.get(id).is_some_and(|v| v.restoring);
        let Some(Phase::Downloading(downloads)) = self.variants.get_mut(id).map(|v| &mut v.phase)
        else {
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
                tracks: std::mem::take(&mut downloads.tracks),
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
        let queued: Vec<VariantId> = self
            .queue
            .iter()
            .filter(|id| {
                work_stopped
                    || matches!(
                        self.variants.get(*id).map(|v| &v.phase),
                        Some(Phase::Queued(Start::Submit | Start::Refuse { .. }))
                    )
            })
            .cloned()
            .collect();
        self.queue.retain(|id| !queued.contains(id));
        for id in queued {
            let end = match &self.variants[&id].phase {
                Phase::Queued(Start::Refuse { reason }) => {
                    VariantEnd::with_error(VariantStatus::Error, reason.clone(), at)
                }
                Phase::Queued(Start::Submit) => VariantEnd::with_error(
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
            self.end(&id, end, actions);
        }
    }

    /// Starts queued variants while the in-flight cap allows.
    fn fill_slots(&mut self, now: Instant, at: DateTime<Utc>, actions: &mut Vec<Action>) {
        while self.in_flight < self.policy.concurrency {
            let Some(id) = self.queue.pop_front() else {
                return;
            };
            let variant = self.variants.get_mut(&id).expect("queued variants exist");
            let Phase::Queued(start) = &variant.phase else {
                continue;
            };
            match start.clone() {
                Start::Refuse { reason } => {
                    let end = VariantEnd::with_error(VariantStatus::Error, reason, at);
                    self.end(&id, end, actions);
                    continue;
                }
                Start::Submit => {
                    // A new submit: the record no longer names an earlier task.
                    variant.record.task_id = None;
                    variant.record.submitted_at = None;
                    let seed = seed_of(&id);
                    variant.phase = Phase::Submitting {
                        backoff: self.policy.submit_retry.backoff(seed),
                    };
                    actions.push(Action::Submit {
                        id,
                        after: Duration::ZERO,
                    });
                }
                // A task from an earlier run is asked about at once; its detail also
                // brings fresh result URLs, since the journaled ones may have expired.
                Start::Poll { task_id } | Start::Redownload { task_id, .. } => {
                    variant.phase = Phase::Polling {
                        task_id: task_id.clone(),
                        since: now,
                        schedule: PollSchedule::new(
                            self.policy.poll_interval,
                            self.policy.poll_interval_max,
                        ),
                    };
                    actions.push(Action::Poll {
                        id,
                        task_id,
                        after: Duration::ZERO,
                    });
                }
                Start::Keep => {
                    variant.phase = Phase::Ended;
                    continue;
                }
            }
            self.in_flight += 1;
        }
    }

    fn end(&mut self, id: &VariantId, end: VariantEnd, actions: &mut Vec<Action>) {
        let Some(variant) = self.variants.get_mut(id) else {
            return;
        };
        let held_a_slot = !matches!(variant.phase, Phase::Queued(_) | Phase::Ended);
        if matches!(variant.phase, Phase::Ended) {
            return;
        }
        let end = match variant.restoring {
            true => keep_finished(&variant.record, end),
            false => end,
        };
        variant.phase = Phase::Ended;
        variant.record.apply_end(&end);
        match (held_a_slot, variant.orphan) {
            (true, true) => self.collecting -= 1,
            (true, false) => self.in_flight -= 1,
            (false, _) => {}
        }
        actions.push(Action::End {
            id: id.clone(),
            end,
        });
    }

    /// Whether every variant's work is over.
    pub fn is_done(&self) -> bool {
        self.queue.is_empty() && self.in_flight == 0 && self.collecting == 0
    }

    /// The record of one variant.
    pub fn record(&self, id: &VariantId) -> Option<&VariantRecord> {
        self.variants.get(id).map(|v| &v.record)
    }

    /// Every record of the manifest's variants (not the orphans'), by variant.
    pub fn records(&self) -> HashMap<VariantId, VariantRecord> {
        self.variants
            .iter()
            .filter(|(_, v)| !v.orphan)
            .map(|(id, v)| (id.clone(), v.record.clone()))
            .collect()
    }

    /// How many of the manifest's variants have each status (orphans aside: they are
    /// not the manifest's, and do not decide the exit code).
    pub fn counts(&self) -> StatusCounts {
        StatusCounts::of(
            self.variants
                .values()
                .filter(|v| !v.orphan)
                .map(|v| &v.record),
        )
    }

    /// The finished variants of this run whose tracks could not all be downloaded again
    /// (a file missing or changed on disk, the provider's copy gone): still finished,
    /// their note in `error`.
    pub fn unrestored(&self) -> impl Iterator<Item = (&VariantId, &VariantRecord)> {
        self.order
            .iter()
            .map(|id| (id, &self.variants[id]))
            .filter(|(_, v)| {
                v.restoring && matches!(v.phase, Phase::Ended) && v.record.error.is_some()
            })
            .map(|(id, v)| (id, &v.record))
    }

    /// How many orphans (paid tasks of variants no longer in the manifest) ended with
    /// each status: `finished` is collected into `superseded/`.
    pub fn orphan_counts(&self) -> StatusCounts {
        StatusCounts::of(
            self.variants
                .values()
                .filter(|v| v.orphan)
                .map(|v| &v.record),
        )
    }

    /// Tracks of every variant (earlier runs' too) by QC verdict.
    pub fn qc_counts(&self) -> crate::qc::QcCounts {
        let mut counts = crate::qc::QcCounts::default();
        for track in self.variants.values().flat_map(|v| &v.record.tracks) {
            counts.add(track.qc.as_ref().map(|qc| qc.verdict));
        }
        counts
    }

    /// The variants that did not finish, in manifest order, with their records.
    pub fn unfinished(&self) -> impl Iterator<Item = (&VariantId, &VariantRecord)> {
        self.order
            .iter()
            .map(|id| (id, &self.variants[id].record))
            .filter(|(_, r)| r.status != VariantStatus::Finished)
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

    /// How many variants are in each phase, for the live view. Read-only, one pass over
    /// the variants; an ended variant counts under its status (those an earlier run
    /// finished, too).
    pub fn phase_counts(&self) -> PhaseCounts {
        let mut counts = PhaseCounts::default();
        for variant in self.variants.values().filter(|v| !v.orphan) {
            match &variant.phase {
                Phase::Queued(_) => counts.waiting += 1,
                Phase::Submitting { .. } => counts.submitting += 1,
                Phase::Polling { .. } => counts.running += 1,
                Phase::Downloading(_) => counts.downloading += 1,
                Phase::Ended => {
                    let ended = &mut counts.ended;
                    match variant.record.status {
                        VariantStatus::Finished => ended.finished += 1,
                        VariantStatus::Failed => ended.failed += 1,
                        VariantStatus::Timeout => ended.timeout += 1,
                        VariantStatus::Error => ended.error += 1,
                        VariantStatus::Pending => ended.pending += 1,
                    }
                }
            }
        }
        counts
    }
}

/// Variants by phase: where the work is now ([`RunState::phase_counts`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhaseCounts {
    /// Waiting for an in-flight slot.
    pub waiting: usize,
    /// Getting their stem's URL, waiting for a submit slot, or on the wire.
    pub submitting: usize,
    /// Their task runs at the provider: polled.
    pub running: usize,
    /// Their tracks are being downloaded.
    pub downloading: usize,
    /// Their work in this run is over, by status.
    pub ended: StatusCounts,
}

impl PhaseCounts {
    /// Every variant counted.
    pub fn total(&self) -> usize {
        let ended = &self.ended;
        let ended = ended.finished + ended.failed + ended.timeout + ended.error + ended.pending;
        self.waiting + self.submitting + self.running + self.downloading + ended
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
