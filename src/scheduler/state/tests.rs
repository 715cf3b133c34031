//! The run state without a runtime: tables of (state, event) → actions, and a property
//! test that drives random event sequences against the money rules.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::api::types::{TaskDetail, TaskStatus, TrackFile};
use crate::download::DownloadError;
use crate::journal::format::Record;
use crate::journal::replay::replay;
use crate::scheduler::events::{end_record, journal_record, submit_record};
use crate::scheduler::start::{decide, Rerun};

fn id(n: usize) -> VariantId {
    serde_json::from_value(serde_json::json!(format!("v{n}"))).unwrap()
}

fn policy(concurrency: usize) -> Policy {
    Policy {
        concurrency,
        task_timeout: Duration::from_secs(60),
        poll_interval: Duration::from_secs(5),
        poll_interval_max: Duration::from_secs(20),
        submit_retry: RetryPolicy::new(3),
    }
}

fn entry(n: usize, start: Start) -> Entry {
    Entry {
        id: id(n),
        start,
        record: VariantRecord::default(),
        kept_tracks: Vec::new(),
    }
}

fn fresh(count: usize, concurrency: usize) -> RunState {
    RunState::new(
        policy(concurrency),
        (0..count).map(|n| entry(n, Start::Submit)).collect(),
    )
}

fn at() -> DateTime<Utc> {
    "2026-11-25T01:00:00Z".parse().unwrap()
}

fn status(code: u16) -> ApiError {
    ApiError::Status {
        status: code,
        message: "m".into(),
        retry_after: None,
    }
}

fn detail(status: TaskStatus, tracks: u32) -> TaskDetail {
    TaskDetail {
        task_id: "t".into(),
        status,
        files: (1..=tracks)
            .map(|n| TrackFile {
                audio_id: format!("a{n}"),
                audio_url: format!("http://h/{n}.wav"),
                image_url: None,
                title: None,
                tags: None,
                duration: Some(1.0),
                prompt: None,
            })
            .collect(),
        error_message: None,
        progress: None,
        created_time: None,
    }
}

fn track(n: u32) -> TrackRecord {
    TrackRecord {
        wave: None,
        number: n,
        audio_id: format!("a{n}"),
        duration_s: Some(1.0),
        file: format!("audio/s/v-{n}.wav"),
        bytes: 10,
        sha256: "00".into(),
        audio_url: format!("http://h/{n}.wav"),
        modified_ns: None,
        qc: None,
    }
}

/// A compact view of actions for the tables.
fn kinds(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::Submit { id, after } => format!("submit {id} after {}ms", after.as_millis()),
            Action::Poll { id, after, .. } => format!("poll {id} after {}s", after.as_secs()),
            Action::Download { id, number, .. } => format!("download {id} #{number}"),
            Action::End { id, end } => format!("end {id} {}", end.status.as_str()),
            Action::Stop(reason) => format!("stop {reason:?}"),
        })
        .collect()
}

/// The answer to a detail query of variant `n`'s task, `after` its submit.
fn polled(
    state: &mut RunState,
    now: Instant,
    n: usize,
    status: TaskStatus,
    tracks: u32,
) -> Vec<Action> {
    state.handle(
        now,
        at(),
        Event::Polled {
            id: id(n),
            detail: detail(status, tracks),
        },
    )
}

fn submitted(state: &mut RunState, now: Instant, n: usize) -> Vec<Action> {
    state.handle(
        now,
        at(),
        Event::Submitted {
            id: id(n),
            task_id: format!("t{n}"),
            at: at(),
            unjournaled: None,
        },
    )
}

#[test]
fn the_in_flight_cap_holds_and_an_end_starts_the_next_variant() {
    let now = Instant::now();
    let mut state = fresh(3, 2);
    assert_eq!(
        kinds(&state.start(now, at())),
        ["submit v0 after 0ms", "submit v1 after 0ms"]
    );
    let error = status(422);
    let actions = state.handle(now, at(), Event::SubmitFailed { id: id(0), error });
    assert_eq!(kinds(&actions), ["end v0 error", "submit v2 after 0ms"]);
    assert_eq!(state.in_flight(), 2);
}

#[test]
fn a_variant_goes_submit_poll_download_finished() {
    let now = Instant::now();
    let mut state = fresh(1, 1);
    state.start(now, at());
    assert_eq!(kinds(&submitted(&mut state, now, 0)), ["poll v0 after 5s"]);
    let running = polled(
        &mut state,
        now + Duration::from_secs(5),
        0,
        TaskStatus::Running,
        0,
    );
    assert_eq!(kinds(&running), ["poll v0 after 7s"]);
    let finished = polled(
        &mut state,
        now + Duration::from_secs(12),
        0,
        TaskStatus::Finished,
        2,
    );
    assert_eq!(kinds(&finished), ["download v0 #1", "download v0 #2"]);
    let downloaded = |n| Event::TrackDownloaded {
        id: id(0),
        task_id: "t0".into(),
        track: track(n),
    };
    assert!(state.handle(now, at(), downloaded(2)).is_empty());
    let end = state.handle(now, at(), downloaded(1));
    assert_eq!(kinds(&end), ["end v0 finished"]);
    let record = state.record(&id(0)).unwrap();
    assert_eq!(
        record.tracks.iter().map(|t| t.number).collect::<Vec<_>>(),
        [1, 2],
        "tracks in their order, whatever order they landed in"
    );
    assert_eq!(
        (record.task_id.as_deref(), record.attempts),
        (Some("t0"), 1)
    );
    assert_eq!(state.tasks_created(), 1);
    assert!(state.is_done());
}

/// Each submit failure, by what it proves about the task, and what the machine does.
#[test]
fn submit_failures_table() {
    let cases: Vec<(&str, ApiError, Vec<&str>)> = vec![
        // No task can exist: submitted again after a backoff.
        ("503", status(503), vec!["submit v0 after"]),
        (
            "refused connection",
            ApiError::Connect("refused".into()),
            vec!["submit v0 after"],
        ),
        // A task may exist: never submitted again.
        ("500", status(500), vec!["end v0 error", "submit v2"]),
        (
            "timeout",
            ApiError::Timeout,
            vec!["end v0 error", "submit v2"],
        ),
        (
            "reset",
            ApiError::Transport("reset".into()),
            vec!["end v0 error", "submit v2"],
        ),
        // The API changed shape: stop submitting at once; polls go on.
        (
            "unreadable 2xx",
            ApiError::Decode("missing field task_id".into()),
            vec!["stop UnreadableSubmit", "end v2 pending", "end v0 error"],
        ),
        ("422", status(422), vec!["end v0 error", "submit v2"]),
        (
            "402",
            status(402),
            vec![
                "stop Account(NoCredits)",
                "end v2 pending",
                "end v0 pending",
            ],
        ),
        (
            "401",
            status(401),
            vec!["stop Account(BadKey)", "end v2 pending", "end v0 pending"],
        ),
    ];
    for (name, error, expected) in cases {
        let now = Instant::now();
        let mut state = fresh(3, 2);
        // The API answered the balance check: what follows is an outage, not a wrong URL.
        state.handle(now, at(), Event::ApiChecked { error: None });
        state.start(now, at());
        let actions = state.handle(now, at(), Event::SubmitFailed { id: id(0), error });
        let got = kinds(&actions);
        assert_eq!(got.len(), expected.len(), "{name}: {got:?}");
        for (got, want) in got.iter().zip(&expected) {
            assert!(got.starts_with(want), "{name}: {got} is not {want}");
        }
    }
}

#[test]
fn an_unknown_outcome_is_counted_and_its_error_says_a_task_may_exist() {
    let now = Instant::now();
    let mut state = fresh(1, 1);
    state.start(now, at());
    state.handle(
        now,
        at(),
        Event::SubmitFailed {
            id: id(0),
            error: status(502),
        },
    );
    let record = state.record(&id(0)).unwrap();
    assert_eq!(record.status, VariantStatus::Error);
    assert!(record
        .error
        .as_ref()
        .unwrap()
        .contains("may have created a task"));
    assert_eq!(state.unknown_outcomes(), 1);
}

#[test]
fn submits_that_create_nothing_are_retried_within_max_attempts() {
    let now = Instant::now();
    let mut state = fresh(1, 1);
    state.start(now, at());
    let fail = |state: &mut RunState| {
        kinds(&state.handle(
            now,
            at(),
            Event::SubmitFailed {
                id: id(0),
                error: status(503),
            },
        ))
    };
    assert!(fail(&mut state)[0].starts_with("submit v0"));
    assert!(fail(&mut state)[0].starts_with("submit v0"));
    assert_eq!(fail(&mut state), ["end v0 error"]);
    assert_eq!(state.record(&id(0)).unwrap().attempts, 3);
}

#[test]
fn a_signal_ends_queued_variants_and_lets_submits_on_the_wire_answer() {
    let now = Instant::now();
    let mut state = fresh(3, 2);
    state.start(now, at());
    let stop = state.handle(now, at(), Event::Stop(StopReason::Interrupted));
    assert_eq!(kinds(&stop), ["stop Interrupted", "end v2 pending"]);
    // The submit on the wire answers: its task is recorded, the variant stays pending.
    let answered = submitted(&mut state, now, 0);
    assert_eq!(kinds(&answered), ["end v0 pending"]);
    assert_eq!(state.record(&id(0)).unwrap().task_id.as_deref(), Some("t0"));
    let withdrawn = state.handle(
        now,
        at(),
        Event::SubmitWithdrawn {
            id: id(1),
            intent_journaled: true,
        },
    );
    assert_eq!(kinds(&withdrawn), ["end v1 pending"]);
    assert!(state.is_done());
    assert_eq!(state.stops(), [StopReason::Interrupted]);
}

#[test]
fn without_credits_what_was_bought_is_still_collected() {
    let now = Instant::now();
    let entries = vec![
        entry(0, Start::Submit),
        entry(1, Start::Submit),
        entry(
            2,
            Start::Poll {
                task_id: "old".into(),
            },
        ),
    ];
    let mut state = RunState::new(policy(1), entries);
    state.start(now, at());
    let actions = state.handle(
        now,
        at(),
        Event::SubmitFailed {
            id: id(0),
            error: status(402),
        },
    );
    assert_eq!(
        kinds(&actions),
        [
            "stop Account(NoCredits)",
            "end v1 pending",
            "end v0 pending",
            "poll v2 after 0s"
        ]
    );
}

#[test]
fn a_task_that_runs_past_its_timeout_ends_timeout() {
    let now = Instant::now();
    let mut state = fresh(1, 1);
    state.start(now, at());
    submitted(&mut state, now, 0);
    let late = polled(
        &mut state,
        now + Duration::from_secs(61),
        0,
        TaskStatus::Running,
        0,
    );
    assert_eq!(kinds(&late), ["end v0 timeout"]);
    // The next poll is never scheduled past the timeout.
    let mut state = fresh(1, 1);
    state.start(now, at());
    submitted(&mut state, now, 0);
    let near = polled(
        &mut state,
        now + Duration::from_secs(58),
        0,
        TaskStatus::Running,
        0,
    );
    assert_eq!(kinds(&near), ["poll v0 after 2s"]);
}

#[test]
fn poll_failures_table() {
    let cases: Vec<(ApiError, Vec<&str>)> = vec![
        (status(502), vec!["poll v0 after 7s"]),
        (status(404), vec!["end v0 error"]),
        (status(401), vec!["stop Account(BadKey)", "end v0 pending"]),
    ];
    for (error, expected) in cases {
        let now = Instant::now();
        let mut state = fresh(1, 1);
        state.start(now, at());
        submitted(&mut state, now, 0);
        let actions = state.handle(now, at(), Event::PollFailed { id: id(0), error });
        assert_eq!(kinds(&actions), expected);
    }
}

#[test]
fn stem_failures_table() {
    use crate::storage::error::{StorageError, StorageFailure};
    let storage = |failure| {
        StemFailure::Storage(StorageError {
            failure,
            message: "PUT of s3://b/k failed: InternalError".into(),
        })
    };
    let cases: Vec<(StemFailure, Vec<&str>)> = vec![
        // A failed upload paid for nothing: that variant ends error, the next starts.
        (
            StemFailure::Api(status(502)),
            vec!["end v0 error", "submit v1 after 0ms"],
        ),
        (
            storage(StorageFailure::Transient),
            vec!["end v0 error", "submit v1 after 0ms"],
        ),
        (
            storage(StorageFailure::Rejected),
            vec!["end v0 error", "submit v1 after 0ms"],
        ),
        // A refused key, of the provider or of the bucket: nothing more is submitted.
        (
            StemFailure::Api(status(401)),
            vec!["stop Account(BadKey)", "end v1 pending", "end v0 pending"],
        ),
        (
            storage(StorageFailure::Refused),
            vec![
                "stop Account(StorageRefused)",
                "end v1 pending",
                "end v0 pending",
            ],
        ),
    ];
    for (error, expected) in cases {
        let now = Instant::now();
        let mut state = fresh(2, 1);
        state.start(now, at());
        let actions = state.handle(now, at(), Event::StemUnavailable { id: id(0), error });
        assert_eq!(kinds(&actions), expected);
    }
    // The bucket's refusal stops submits only: a task already bought is still polled.
    assert!(!StopReason::Account(AccountStop::StorageRefused).stops_all_work());
}

#[test]
fn a_full_disk_stops_buying_and_keeps_the_task_for_the_next_run() {
    let now = Instant::now();
    let mut state = fresh(2, 1);
    state.start(now, at());
    submitted(&mut state, now, 0);
    polled(&mut state, now, 0, TaskStatus::Finished, 1);
    let full = DownloadError::Io {
        path: "x".into(),
        cause: std::io::Error::from_raw_os_error(28),
    };
    let actions = state.handle(
        now,
        at(),
        Event::TrackFailed {
            id: id(0),
            number: 1,
            failure: TrackFailure::Download(full),
        },
    );
    assert_eq!(
        kinds(&actions),
        [
            "stop Storage { disk_full: true }",
            "end v1 pending",
            "end v0 pending"
        ]
    );
    assert_eq!(state.record(&id(0)).unwrap().task_id.as_deref(), Some("t0"));
}

#[test]
fn a_track_that_keeps_failing_ends_error_with_its_number() {
    let now = Instant::now();
    let mut state = fresh(1, 1);
    state.start(now, at());
    submitted(&mut state, now, 0);
    polled(&mut state, now, 0, TaskStatus::Finished, 2);
    state.handle(
        now,
        at(),
        Event::TrackDownloaded {
            id: id(0),
            task_id: "t0".into(),
            track: track(1),
        },
    );
    let cut = DownloadError::Short {
        expected: 10,
        received: 5,
    };
    let actions = state.handle(
        now,
        at(),
        Event::TrackFailed {
            id: id(0),
            number: 2,
            failure: TrackFailure::Download(cut),
        },
    );
    assert_eq!(kinds(&actions), ["end v0 error"]);
    let error = state.record(&id(0)).unwrap().error.clone().unwrap();
    assert!(error.starts_with("track 2: download cut short"), "{error}");
}

#[test]
fn a_journal_that_cannot_take_an_intent_stops_every_submit() {
    let now = Instant::now();
    let mut state = fresh(3, 2);
    state.start(now, at());
    let actions = state.handle(
        now,
        at(),
        Event::JournalFailed {
            id: Some(id(0)),
            disk_full: false,
        },
    );
    assert_eq!(
        kinds(&actions),
        [
            "stop Storage { disk_full: false }",
            "end v2 pending",
            "end v0 pending"
        ]
    );
}

#[test]
fn kept_variants_take_no_slot_and_resumed_ones_are_polled_at_once() {
    let now = Instant::now();
    let entries = vec![
        entry(0, Start::Keep),
        entry(
            1,
            Start::Poll {
                task_id: "t1".into(),
            },
        ),
        entry(2, Start::Submit),
    ];
    let mut state = RunState::new(policy(1), entries);
    assert_eq!(kinds(&state.start(now, at())), ["poll v1 after 0s"]);
}

/// The shell in the property test: what the machine asked for and has not been answered.
#[derive(Default)]
struct Shell {
    outstanding: Vec<Action>,
    /// The journal records the coordinator and the executors would have written.
    journal: Vec<Record>,
    ends: HashMap<VariantId, usize>,
    unknown: HashSet<VariantId>,
    tasks: HashMap<VariantId, usize>,
}

impl Shell {
    fn take(&mut self, state: &RunState, actions: Vec<Action>, starts: &HashMap<VariantId, Start>) {
        for action in actions {
            match &action {
                Action::Submit { id, .. } => {
                    assert!(
                        !self.unknown.contains(id),
                        "{id}: submitted after an unknown outcome"
                    );
                    assert!(
                        !self.tasks.contains_key(id),
                        "{id}: submitted with a known task"
                    );
                    assert_eq!(
                        starts[id],
                        Start::Submit,
                        "{id}: submitted though it has a task"
                    );
                    assert!(!self.ends.contains_key(id), "{id}: work after its end");
                }
                Action::End { id, end } => {
                    *self.ends.entry(id.clone()).or_default() += 1;
                    self.journal.extend(end_record(id, end));
                    continue;
                }
                Action::Stop(_) => continue,
                Action::Poll { id, .. } | Action::Download { id, .. } => {
                    assert!(!self.ends.contains_key(id), "{id}: work after its end");
                }
            }
            self.outstanding.push(action);
        }
        assert!(state.in_flight() <= 3, "the in-flight cap");
    }

    /// A random answer to a random outstanding action.
    fn answer(&mut self, rng: &mut StdRng, state: &RunState) -> Event {
        let i = rng.random_range(0..self.outstanding.len());
        let action = self.outstanding.swap_remove(i);
        let stopped = !state.stops().is_empty();
        match action {
            Action::Submit { id, .. } => {
                if stopped && rng.random_bool(0.5) {
                    return Event::SubmitWithdrawn {
                        id,
                        intent_journaled: false,
                    };
                }
                self.journal.push(Record::SubmitIntent {
                    variant_id: id.clone(),
                    at: at(),
                });
                match rng.random_range(0..8) {
                    0 => Event::SubmitFailed {
                        id,
                        error: status(503),
                    },
                    1 => Event::SubmitFailed {
                        id,
                        error: status(500),
                    },
                    2 => Event::SubmitFailed {
                        id,
                        error: ApiError::Timeout,
                    },
                    3 if rng.random_bool(0.2) => Event::SubmitFailed {
                        id,
                        error: ApiError::Decode("no task_id".into()),
                    },
                    4 if rng.random_bool(0.2) => Event::SubmitFailed {
                        id,
                        error: status(402),
                    },
                    _ => {
                        *self.tasks.entry(id.clone()).or_default() += 1;
                        Event::Submitted {
                            task_id: format!("task-{id}"),
                            id,
                            at: at(),
                            unjournaled: None,
                        }
                    }
                }
            }
            Action::Poll { id, .. } => match rng.random_range(0..6) {
                0 if stopped => Event::PollStopped { id },
                0 => Event::PollFailed {
                    id,
                    error: status(502),
                },
                1 => Event::Polled {
                    id,
                    detail: detail(TaskStatus::Failed, 0),
                },
                2 | 3 => Event::Polled {
                    id,
                    detail: detail(TaskStatus::Running, 0),
                },
                _ => Event::Polled {
                    id,
                    detail: detail(TaskStatus::Finished, rng.random_range(1..3)),
                },
            },
            Action::Download {
                id,
                task_id,
                number,
                ..
            } => match rng.random_range(0..6) {
                0 => Event::TrackFailed {
                    id,
                    number,
                    failure: if stopped {
                        TrackFailure::Stopped
                    } else {
                        TrackFailure::Download(DownloadError::Short {
                            expected: 2,
                            received: 1,
                        })
                    },
                },
                _ => Event::TrackDownloaded {
                    id,
                    task_id,
                    track: track(number),
                },
            },
            Action::End { .. } | Action::Stop(_) => unreachable!("never outstanding"),
        }
    }
}

/// A finished variant whose tracks are downloaded again.
fn restoring(n: usize) -> Entry {
    Entry {
        id: id(n),
        start: Start::Redownload {
            task_id: format!("old-{n}"),
        },
        record: VariantRecord {
            status: VariantStatus::Finished,
            task_id: Some(format!("old-{n}")),
            finished_at: Some(at()),
            tracks: vec![track(1)],
            ..VariantRecord::default()
        },
        kept_tracks: Vec::new(),
    }
}

/// Random event sequences (faults, stops, late answers) against the money rules, checked
/// after every step; and the journal the run would have written, cut at random crash
/// points, never makes the next run pay again for a task it knows. Orphans (paid tasks of
/// variants no longer in the manifest) are never submitted and hold no slot; a finished
/// variant downloaded again always ends finished with tracks.
#[test]
fn random_runs_keep_the_money_rules() {
    let mut rng = StdRng::seed_from_u64(11);
    for case in 0..600 {
        let count = rng.random_range(1..10);
        let entries: Vec<Entry> = (0..count)
            .map(|n| match rng.random_range(0..7) {
                0 => entry(n, Start::Keep),
                1 => entry(
                    n,
                    Start::Poll {
                        task_id: format!("old-{n}"),
                    },
                ),
                2 => restoring(n),
                _ => entry(n, Start::Submit),
            })
            .collect();
        let orphans: Vec<Entry> = (0..rng.random_range(0..3))
            .map(|k| orphan(100 + k))
            .collect();
        let starts: HashMap<VariantId, Start> = entries
            .iter()
            .chain(&orphans)
            .map(|e| (e.id.clone(), e.start.clone()))
            .collect();
        let orphan_count = orphans.len();
        let mut state = RunState::new(policy(3), entries).with_orphans(orphans);
        let mut shell = Shell::default();
        let mut now = Instant::now();
        let actions = state.start(now, at());
        shell.take(&state, actions, &starts);
        let mut steps = 0;
        while !shell.outstanding.is_empty() {
            steps += 1;
            assert!(steps < 10_000, "case {case}: the run never ends");
            now += Duration::from_millis(rng.random_range(0..20_000));
            let event = if rng.random_range(0..40) == 0 {
                let reasons = [
                    StopReason::Interrupted,
                    StopReason::Deadline,
                    StopReason::Account(AccountStop::NoCredits),
                    StopReason::Storage { disk_full: true },
                ];
                Event::Stop(reasons[rng.random_range(0..reasons.len())])
            } else {
                shell.answer(&mut rng, &state)
            };
            let submits_stopped_before = !state.stops().is_empty();
            if let Event::SubmitFailed { id, error } = &event {
                if crate::scheduler::events::created_by(error)
                    == crate::journal::format::Created::Unknown
                {
                    shell.unknown.insert(id.clone());
                }
            }
            shell.journal.extend(journal_record(&event));
            // The submit's executor journals its outcome itself.
            match &event {
                Event::Submitted {
                    id, task_id, at, ..
                } => shell.journal.push(submit_record(id, Ok((task_id, *at)))),
                Event::SubmitFailed { id, error } => {
                    shell.journal.push(submit_record(id, Err(error)))
                }
                _ => {}
            }
            let actions = state.handle(now, at(), event);
            if submits_stopped_before {
                assert!(
                    !actions.iter().any(|a| matches!(a, Action::Submit { .. })),
                    "case {case}: a submit after a run-level stop"
                );
            }
            shell.take(&state, actions, &starts);
            assert_counts_kept(&state, count, case);
        }
        assert!(state.is_done(), "case {case}");
        assert!(
            state.queue.is_empty() && state.active.is_empty(),
            "case {case}: an ended variant stayed in the machine"
        );
        for (id, start) in &starts {
            let ends = shell.ends.get(id).copied().unwrap_or(0);
            match start {
                Start::Keep => assert_eq!(ends, 0, "case {case}: {id} kept, yet ended"),
                _ => assert_eq!(ends, 1, "case {case}: {id} ended {ends} times"),
            }
            assert!(
                shell.tasks.get(id).copied().unwrap_or(0) <= 1,
                "case {case}: {id} paid twice"
            );
            if let Start::Redownload { .. } = start {
                let record = state.record(id).unwrap();
                assert_eq!(record.status, VariantStatus::Finished, "case {case}: {id}");
                assert!(
                    !record.tracks.is_empty(),
                    "case {case}: {id} lost its tracks"
                );
            }
        }
        let counted = state.counts();
        let manifest =
            counted.finished + counted.failed + counted.timeout + counted.error + counted.pending;
        assert_eq!(
            manifest, count,
            "case {case}: orphans are not the manifest's"
        );
        let orphaned = state.orphan_counts();
        assert_eq!(
            orphaned.finished
                + orphaned.failed
                + orphaned.timeout
                + orphaned.error
                + orphaned.pending,
            orphan_count,
            "case {case}: every orphan ends once, counted apart"
        );
        // The QC counts kept as variants end equal a recount of the ended records.
        let mut qc = crate::qc::QcCounts::default();
        for ended in &state.ended {
            count_tracks(&mut qc, &ended.record);
            ended.kept_tracks.iter().for_each(|track| qc.add(track.qc));
        }
        assert_eq!(state.qc_counts(), qc, "case {case}");
        // Crash anywhere: the next run never submits a variant whose task it knows.
        let cut = rng.random_range(0..=shell.journal.len());
        let priors = replay(&shell.journal[..cut]);
        for (id, prior) in &priors {
            let rerun = Rerun {
                retry_failed: false,
                now: at(),
            };
            let start = decide(Some(prior), true, rerun);
            if prior.task.is_some() || prior.last_outcome_unknown {
                assert_ne!(
                    start,
                    Start::Submit,
                    "case {case}: {id} would be paid again"
                );
            }
            if prior.end.as_ref().map(|e| e.status)
                == Some(crate::journal::format::EndStatus::Finished)
            {
                assert_eq!(
                    start,
                    Start::Keep,
                    "case {case}: {id} finished, yet not kept"
                );
            }
        }
    }
}

#[test]
fn phase_counts_follow_each_variant_through_its_phases() {
    let now = Instant::now();
    let entries = vec![
        entry(0, Start::Keep),
        entry(1, Start::Submit),
        entry(2, Start::Submit),
        entry(3, Start::Submit),
    ];
    let mut state = RunState::new(policy(2), entries);
    let kept = PhaseCounts {
        waiting: 3,
        ended: StatusCounts {
            pending: 1,
            ..StatusCounts::default()
        },
        ..PhaseCounts::default()
    };
    assert_eq!(
        state.phase_counts(),
        kept,
        "a kept variant ended before the run"
    );
    state.start(now, at());
    let counts = state.phase_counts();
    assert_eq!((counts.waiting, counts.submitting), (1, 2));
    submitted(&mut state, now, 1);
    assert_eq!(state.phase_counts().running, 1);
    state.handle(
        now,
        at(),
        Event::Polled {
            id: id(1),
            detail: detail(TaskStatus::Finished, 2),
        },
    );
    assert_eq!(state.phase_counts().downloading, 1);
    let failed = Event::SubmitFailed {
        id: id(2),
        error: status(422),
    };
    state.handle(now, at(), failed);
    let counts = state.phase_counts();
    assert_eq!(
        (counts.waiting, counts.submitting, counts.downloading),
        (0, 1, 1),
        "the end of one started the next"
    );
    assert_eq!((counts.ended.error, counts.ended.pending), (1, 1));
    assert_eq!(counts.total(), 4);
}

/// The counters kept as the phases change equal a recount, and every variant is in
/// exactly one place: waiting, in flight, or ended (and then out of the maps).
fn assert_counts_kept(state: &RunState, count: usize, case: usize) {
    let mut recount = PhaseCounts {
        waiting: state.queue.len(),
        ended: StatusCounts::of(state.ended.iter().map(|e| &e.record)),
        ..PhaseCounts::default()
    };
    let mut collecting = 0;
    for variant in state.active.values() {
        if variant.kind.orphan {
            collecting += 1;
            continue;
        }
        match variant.phase {
            Phase::Submitting { .. } => recount.submitting += 1,
            Phase::Polling { .. } => recount.running += 1,
            Phase::Downloading(_) => recount.downloading += 1,
        }
    }
    assert_eq!(state.phase_counts(), recount, "case {case}");
    assert_eq!(
        state.active.len() - collecting,
        state.in_flight,
        "case {case}"
    );
    assert_eq!(
        collecting, state.collecting,
        "case {case}: orphans hold no slot"
    );
    assert_eq!(
        recount.total(),
        count,
        "case {case}: a variant lost or counted twice"
    );
    for Ended { id, .. } in &state.ended {
        assert!(
            !state.queue.iter().any(|w| &w.id == id) && !state.active.contains_key(id),
            "case {case}: {id} ended, yet still held"
        );
    }
}

#[test]
fn an_ended_variant_leaves_the_machine_with_its_record() {
    let now = Instant::now();
    let entries = vec![entry(0, Start::Keep), entry(1, Start::Submit)];
    let mut state = RunState::new(policy(1), entries);
    let kept: Vec<_> = state.drain_ended().map(|e| e.id).collect();
    assert_eq!(kept, [id(0)], "a kept variant leaves at the start");
    state.start(now, at());
    state.handle(
        now,
        at(),
        Event::SubmitFailed {
            id: id(1),
            error: status(422),
        },
    );
    let ended: Vec<_> = state.drain_ended().collect();
    assert_eq!(ended.len(), 1);
    assert_eq!(
        (
            &ended[0].id,
            ended[0].record.status,
            ended[0].record.attempts
        ),
        (&id(1), VariantStatus::Error, 1)
    );
    assert_eq!(state.record(&id(1)), None, "drained: no longer held");
    assert_eq!(state.counts().error, 1, "still counted");
    assert!(state.drain_ended().next().is_none());
}

#[test]
fn a_stop_keeps_the_tasks_to_collect_in_their_order() {
    let now = Instant::now();
    let poll = |n| {
        entry(
            n,
            Start::Poll {
                task_id: format!("t{n}"),
            },
        )
    };
    let entries = vec![
        entry(0, Start::Submit),
        poll(1),
        entry(2, Start::Submit),
        poll(3),
        poll(4),
    ];
    let mut state = RunState::new(policy(1), entries);
    state.start(now, at());
    let stopped = state.handle(
        now,
        at(),
        Event::Stop(StopReason::Account(AccountStop::NoCredits)),
    );
    assert_eq!(kinds(&stopped)[1..], ["end v2 pending"]);
    let queued: Vec<_> = state.queue.iter().map(|w| w.id.clone()).collect();
    assert_eq!(queued, [id(1), id(3), id(4)], "the polls stay, in order");
}

/// An orphan (a paid task of a variant no longer in the manifest) as the run takes it.
fn orphan(n: usize) -> Entry {
    Entry {
        id: id(n),
        start: Start::Poll {
            task_id: format!("t{n}"),
        },
        record: VariantRecord {
            task_id: Some(format!("t{n}")),
            ..VariantRecord::default()
        },
        kept_tracks: Vec::new(),
    }
}

/// Issue 17: an orphan is polled at once without taking an in-flight slot, never
/// submitted (whatever its poll says), journaled when it ends, and kept out of the
/// manifest's records and counts.
#[test]
fn orphans_take_no_slot_are_never_submitted_and_stay_out_of_the_report() {
    let now = Instant::now();
    let mut state = RunState::new(policy(1), vec![entry(0, Start::Submit)]).with_orphans([
        orphan(8),
        orphan(9),
        // Not a poll, or a variant of the manifest: never an orphan.
        entry(7, Start::Submit),
        orphan(0),
    ]);
    assert_eq!(
        kinds(&state.start(now, at())),
        [
            "poll v8 after 0s",
            "poll v9 after 0s",
            "submit v0 after 0ms"
        ]
    );
    assert_eq!(state.in_flight(), 1, "orphans hold no slot");
    assert!(state.record(&id(7)).is_none());
    assert_eq!(
        kinds(&polled(&mut state, now, 9, TaskStatus::Finished, 1)),
        ["download v9 #1"]
    );
    let landed = Event::TrackDownloaded {
        id: id(9),
        task_id: "t9".into(),
        track: track(1),
    };
    let actions = state.handle(now, at(), landed);
    assert_eq!(kinds(&actions), ["end v9 finished"]);
    let record = end_record(
        &id(9),
        match &actions[0] {
            Action::End { end, .. } => end,
            other => panic!("{other:?}"),
        },
    );
    assert!(
        matches!(
            record,
            Some(Record::Ended {
                status: crate::journal::format::EndStatus::Finished,
                ..
            })
        ),
        "journaled, so the next run does not ask again: {record:?}"
    );
    // A rejected query of the other ends it; nothing is ever submitted for it.
    let error = status(404);
    let actions = state.handle(now, at(), Event::PollFailed { id: id(8), error });
    assert_eq!(kinds(&actions), ["end v8 error"]);
    assert!(!state.is_done(), "the manifest's variant is still out");
    submitted(&mut state, now, 0);
    polled(&mut state, now, 0, TaskStatus::Failed, 0);
    assert!(state.is_done());
    assert!(
        !state.drain_ended().any(|ended| ended.id == id(9)),
        "no row in results.csv"
    );
    assert_eq!(state.counts().failed, 1);
    assert_eq!(state.counts().finished + state.counts().error, 0);
    let orphans = state.orphan_counts();
    assert_eq!((orphans.finished, orphans.error), (1, 1));
    assert_eq!(state.phase_counts().total(), 1);
}

/// A stop known before the start (a refused key): orphans are not polled, and stay for
/// the next run (pending writes no end to the journal).
#[test]
fn orphans_are_left_for_the_next_run_when_all_work_stopped_first() {
    let now = Instant::now();
    let mut state =
        RunState::new(policy(2), vec![entry(0, Start::Submit)]).with_orphans([orphan(9)]);
    let stop = Event::Stop(StopReason::Account(AccountStop::BadKey));
    state.handle(now, at(), stop);
    let actions = state.start(now, at());
    assert_eq!(kinds(&actions), ["end v9 pending"]);
    assert!(state.is_done());
    let Action::End { end, .. } = &actions[0] else {
        unreachable!()
    };
    assert_eq!(end_record(&id(9), end), None);
}

/// A finished variant whose track file was missing or changed, downloaded again: it stays
/// finished with its tracks whatever happens, those that landed again replacing theirs.
#[test]
fn a_finished_variant_downloaded_again_stays_finished_with_its_tracks() {
    let earlier = |n| TrackRecord {
        sha256: "earlier".into(),
        ..track(n)
    };
    let finished_at: DateTime<Utc> = "2026-11-24T01:00:00Z".parse().unwrap();
    let restoring = || {
        let entry = Entry {
            id: id(0),
            start: Start::Redownload {
                task_id: "t0".into(),
            },
            record: VariantRecord {
                status: VariantStatus::Finished,
                task_id: Some("t0".into()),
                finished_at: Some(finished_at),
                attempts: 1,
                tracks: vec![earlier(1), earlier(2)],
                ..VariantRecord::default()
            },
            kept_tracks: Vec::new(),
        };
        let mut state = RunState::new(policy(1), vec![entry]);
        assert_eq!(
            kinds(&state.start(Instant::now(), at())),
            ["poll v0 after 0s"]
        );
        state
    };
    let landed = |n| Event::TrackDownloaded {
        id: id(0),
        task_id: "t0".into(),
        track: track(n),
    };
    let gone = |n| Event::TrackFailed {
        id: id(0),
        number: n,
        failure: TrackFailure::Download(DownloadError::Status {
            status: 404,
            retry_after: None,
        }),
    };
    let now = Instant::now();
    // (what happens after the poll, the sha256 of tracks 1 and 2 after, a note)
    type Happens = fn(&mut RunState, Instant, &dyn Fn(u32) -> Event, &dyn Fn(u32) -> Event);
    let table: [(&str, Happens, [&str; 2], bool); 6] = [
        (
            "both land again",
            |s, now, landed, _| {
                polled(s, now, 0, TaskStatus::Finished, 2);
                s.handle(now, at(), landed(1));
                s.handle(now, at(), landed(2));
            },
            ["00", "00"],
            false,
        ),
        (
            "the provider's copies expired",
            |s, now, _, gone| {
                polled(s, now, 0, TaskStatus::Finished, 2);
                s.handle(now, at(), gone(1));
                s.handle(now, at(), gone(2));
            },
            ["earlier", "earlier"],
            true,
        ),
        (
            "one lands, one expired",
            |s, now, landed, gone| {
                polled(s, now, 0, TaskStatus::Finished, 2);
                s.handle(now, at(), gone(2));
                s.handle(now, at(), landed(1));
            },
            ["00", "earlier"],
            true,
        ),
        (
            "the task is unknown now",
            |s, now, _, _| {
                s.handle(
                    now,
                    at(),
                    Event::PollFailed {
                        id: id(0),
                        error: status(404),
                    },
                );
            },
            ["earlier", "earlier"],
            true,
        ),
        (
            "the provider says failed",
            |s, now, _, _| {
                polled(s, now, 0, TaskStatus::Failed, 0);
            },
            ["earlier", "earlier"],
            true,
        ),
        (
            "the run stops",
            |s, now, _, _| {
                s.handle(now, at(), Event::Stop(StopReason::Interrupted));
                s.handle(now, at(), Event::PollStopped { id: id(0) });
            },
            ["earlier", "earlier"],
            true,
        ),
    ];
    for (case, happens, shas, noted) in table {
        let mut state = restoring();
        happens(&mut state, now, &landed, &gone);
        assert!(state.is_done(), "{case}");
        let record = state.record(&id(0)).unwrap();
        assert_eq!(record.status, VariantStatus::Finished, "{case}");
        let got: Vec<&str> = record.tracks.iter().map(|t| t.sha256.as_str()).collect();
        assert_eq!(got, shas, "{case}");
        assert_eq!(record.error.is_some(), noted, "{case}: {:?}", record.error);
        if noted {
            assert_eq!(record.finished_at, Some(finished_at), "{case}");
            assert!(record
                .error
                .as_ref()
                .unwrap()
                .contains("could not be downloaded again"));
        }
        assert_eq!(state.counts().finished, 1, "{case}");
        assert_eq!(state.unrestored().count(), usize::from(noted), "{case}");
    }
}

/// Issue 17: while no call of the run has reached the API, an error that says the base
/// URL cannot be used stops the run at once, whichever call found it; once the API has
/// answered, the same error is an outage and is retried as usual.
#[test]
fn an_unusable_base_url_stops_the_run_only_before_the_api_answered() {
    let refused = || ApiError::Connect("tcp connect error: Connection refused".into());
    let page = || ApiError::NotApi {
        status: 404,
        excerpt: "<html> <body>Not Found</body> </html>".into(),
    };
    let stem = |error| Event::StemUnavailable {
        id: id(0),
        error: StemFailure::Api(error),
    };
    type Case = (&'static str, Vec<Event>, Event, Vec<&'static str>);
    let cases: Vec<Case> = vec![
        (
            "the balance check finds nothing listening",
            vec![],
            Event::ApiChecked {
                error: Some(refused()),
            },
            vec![
                "stop UnusableBaseUrl",
                "end v0 pending",
                "end v1 pending",
                "end v2 pending",
            ],
        ),
        (
            "a web server's 404 page answers the balance check",
            vec![],
            Event::ApiChecked {
                error: Some(page()),
            },
            vec![
                "stop UnusableBaseUrl",
                "end v0 pending",
                "end v1 pending",
                "end v2 pending",
            ],
        ),
        (
            "a submit finds nothing listening",
            vec![],
            Event::SubmitFailed {
                id: id(0),
                error: refused(),
            },
            vec!["stop UnusableBaseUrl", "end v2 pending", "end v0 pending"],
        ),
        (
            "an upload is answered by a web page",
            vec![],
            stem(page()),
            vec!["stop UnusableBaseUrl", "end v2 pending", "end v0 error"],
        ),
        (
            "the API answered the balance check before",
            vec![Event::ApiChecked { error: None }],
            Event::SubmitFailed {
                id: id(0),
                error: refused(),
            },
            vec!["submit v0 after"],
        ),
        (
            "the API's own error answered before",
            vec![Event::ApiChecked {
                error: Some(status(500)),
            }],
            Event::SubmitFailed {
                id: id(0),
                error: refused(),
            },
            vec!["submit v0 after"],
        ),
        (
            "a timeout says nothing of the URL",
            vec![Event::ApiChecked {
                error: Some(ApiError::Timeout),
            }],
            Event::SubmitFailed {
                id: id(0),
                error: status(503),
            },
            vec!["submit v0 after"],
        ),
    ];
    for (name, before, event, expected) in cases {
        let now = Instant::now();
        let mut state = fresh(3, 2);
        for event in before {
            state.handle(now, at(), event);
        }
        // The balance check comes before the first submit, as the coordinator hands it in.
        let got = match event {
            Event::ApiChecked { .. } => {
                let mut got = kinds(&state.handle(now, at(), event));
                got.extend(kinds(&state.start(now, at())));
                got
            }
            event => {
                state.start(now, at());
                kinds(&state.handle(now, at(), event))
            }
        };
        assert_eq!(got.len(), expected.len(), "{name}: {got:?}");
        for (got, want) in got.iter().zip(&expected) {
            assert!(got.starts_with(want), "{name}: {got} is not {want}");
        }
        let stopped = state.stops().contains(&StopReason::UnusableBaseUrl);
        assert_eq!(stopped, expected[0].starts_with("stop"), "{name}");
        assert_eq!(state.unusable_base_url().is_some(), stopped, "{name}");
    }
}

/// A fresh variant waits as its id alone; one an earlier run knows keeps how it starts
/// and its record, and both come out as they went in.
#[test]
fn a_fresh_variant_waits_as_its_id_alone() {
    assert!(std::mem::size_of::<Waiting>() <= 32);
    let fresh = Waiting::new(id(1), Start::Submit, VariantRecord::default());
    assert!(fresh.known.is_none());
    assert_eq!(fresh.start(), &Start::Submit);
    assert_eq!(fresh.record(), None);
    assert_eq!(
        fresh.into_parts(),
        (id(1), Start::Submit, VariantRecord::default())
    );
    let failed = VariantRecord {
        status: VariantStatus::Failed,
        attempts: 1,
        ..VariantRecord::default()
    };
    let poll = Start::Poll {
        task_id: "t1".into(),
    };
    for (start, record) in [
        (Start::Submit, failed.clone()),
        (poll.clone(), VariantRecord::default()),
        (poll, failed),
    ] {
        let waiting = Waiting::new(id(2), start.clone(), record.clone());
        assert!(waiting.known.is_some());
        assert_eq!(waiting.start(), &start);
        let known = (record != VariantRecord::default()).then_some(&record);
        assert_eq!(waiting.record(), known);
        assert_eq!(waiting.into_parts(), (id(2), start, record));
    }
}

/// A kept finished variant's tracks stay compact in the machine: its QC verdicts are
/// counted at the start, and its tracks leave with it, for the shell to read back.
#[test]
fn a_kept_variant_counts_its_tracks_and_hands_them_out_compact() {
    use crate::journal::format::TrackEntry;
    use crate::journal::replay::PriorTrack;
    let kept_track = |n: u32, verdict| {
        let mut entry = TrackEntry::minimal(n, "a", &format!("audio/s/v-{n}.wav"));
        entry.qc = Some(verdict);
        PriorTrack::new(entry, None)
    };
    let kept = Entry {
        record: VariantRecord {
            status: VariantStatus::Finished,
            ..VariantRecord::default()
        },
        kept_tracks: vec![
            kept_track(1, crate::qc::Verdict::Ok),
            kept_track(2, crate::qc::Verdict::Silent),
        ],
        ..entry(0, Start::Keep)
    };
    let mut state = RunState::new(policy(1), vec![kept, entry(1, Start::Submit)]);
    let mut expected = crate::qc::QcCounts::default();
    expected.add(Some(crate::qc::Verdict::Ok));
    expected.add(Some(crate::qc::Verdict::Silent));
    assert_eq!(state.qc_counts(), expected);
    assert_eq!(state.counts().finished, 1);
    let ended: Vec<Ended> = state.drain_ended().collect();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].id, id(0));
    assert!(ended[0].record.tracks.is_empty(), "read back by the shell");
    let numbers: Vec<u32> = ended[0].kept_tracks.iter().map(|t| t.track).collect();
    assert_eq!(numbers, [1, 2]);
}
