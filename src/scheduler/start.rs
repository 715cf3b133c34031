//! How each variant of a run starts, from what the journals say of it ([`Prior`], folded
//! by `journal::replay`): keep, submit, poll or download again. This is the money
//! decision of a re-run (submitting buys a task), so it lives here, beside the run state
//! that carries it out, as pure domain code: the journal only reads, writes and folds
//! records; it never decides. [`rerun`](super::rerun) builds each variant's plan and the
//! orphans on top of [`decide`]. Pure: no I/O, no clock (the caller passes `now`).

use chrono::{DateTime, Utc};

use crate::journal::format::EndStatus;
use crate::journal::replay::{Prior, PriorTask};

/// What a variant's work in this run starts with.
#[derive(Clone, Debug, PartialEq)]
pub enum Start {
    /// Nothing to do: its earlier end stands.
    Keep,
    /// Submit it (first time, or again).
    Submit,
    /// Its task exists: poll it, never submit again.
    Poll {
        /// The task.
        task_id: String,
    },
    /// Its stem's file cannot be sent (empty, not audio): it ends `error` unsent.
    Refuse {
        /// Why.
        reason: String,
    },
    /// Finished, but a track file is missing or damaged: download again from its task.
    Redownload {
        /// The task.
        task_id: String,
    },
}

/// How old a task may be and still be polled by a later run: the provider's result files
/// expire (its uploads live 72 h), so an older task is not worth asking about.
pub const COLLECT_WITHIN: chrono::TimeDelta = chrono::TimeDelta::hours(72);

/// What a re-run was asked to do, and when it runs.
#[derive(Clone, Copy, Debug)]
pub struct Rerun {
    /// `--retry-failed`: submit failed, timed-out and errored variants again.
    pub retry_failed: bool,
    /// Now, to tell how old a task is.
    pub now: DateTime<Utc>,
}

/// Decides how a variant starts. `tracks_intact` tells, for a finished variant, whether
/// every journaled track file is on disk with its size and sha256.
///
/// - finished: kept when intact, else downloaded again from its task;
/// - failed: kept, or submitted again with `retry_failed`;
/// - timeout: its task is polled again (it was paid for, and asking costs nothing) while
///   younger than [`COLLECT_WITHIN`], else kept; submitted again only with `retry_failed`;
/// - error with a task (a download that kept failing): polled again while young enough;
/// - error before any task was created (an outage, a refused upload): submitted again,
///   since nothing was paid;
/// - its last submit's outcome is unknown (the answer was lost, or the process died
///   while it was on the wire): the provider may have created a task the journal cannot
///   name, so it is kept as `error`, and submitted again only with `retry_failed`;
/// - submitted and not ended: polled;
/// - unknown to the journal: submitted.
pub fn decide(prior: Option<&Prior>, tracks_intact: bool, rerun: Rerun) -> Start {
    let Some(prior) = prior else {
        return Start::Submit;
    };
    let retry = rerun.retry_failed;
    let task = prior.task.as_ref();
    let poll = |task: &PriorTask| Start::Poll {
        task_id: task.task_id.clone(),
    };
    let young = |task: &PriorTask| rerun.now - task.submitted_at < COLLECT_WITHIN;
    match (prior.end.as_ref().map(|e| e.status), task) {
        (Some(EndStatus::Finished), Some(task)) if !tracks_intact => Start::Redownload {
            task_id: task.task_id.clone(),
        },
        (Some(EndStatus::Finished), _) => Start::Keep,
        (Some(EndStatus::Error), Some(task)) if !retry && young(task) => poll(task),
        (Some(EndStatus::Timeout), Some(task)) if !retry && young(task) => poll(task),
        (Some(EndStatus::Error), None) if !prior.last_outcome_unknown => Start::Submit,
        (Some(_), _) if retry => Start::Submit,
        (Some(_), _) => Start::Keep,
        (None, Some(task)) => poll(task),
        (None, None) if prior.last_outcome_unknown && !retry => Start::Keep,
        (None, None) => Start::Submit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::format::TrackEntry;
    use crate::journal::format::{Created, Record};
    use crate::journal::replay::replay;
    use crate::outcome::VariantStatus;
    use crate::variant::VariantId;

    fn id() -> VariantId {
        serde_json::from_value(serde_json::json!("v1")).unwrap()
    }

    fn at() -> DateTime<Utc> {
        "2026-11-25T01:00:00Z".parse().unwrap()
    }

    fn intent() -> Record {
        Record::SubmitIntent {
            variant_id: id(),
            at: at(),
        }
    }

    fn failed(created: Created) -> Record {
        Record::SubmitFailed {
            variant_id: id(),
            created,
            error: "e".into(),
        }
    }

    fn submitted(task: &str) -> Record {
        Record::Submitted {
            variant_id: id(),
            task_id: task.into(),
            at: at(),
        }
    }

    fn ended(status: EndStatus) -> Record {
        Record::Ended {
            variant_id: id(),
            status,
            error: None,
            at: at(),
        }
    }

    fn track(task: &str, n: u32) -> Record {
        Record::Track {
            variant_id: id(),
            task_id: task.into(),
            entry: TrackEntry::minimal(n, &format!("a{n}"), &format!("audio/s/v-{n}.wav")),
        }
    }

    fn rerun(retry_failed: bool) -> Rerun {
        Rerun {
            retry_failed,
            now: at() + chrono::TimeDelta::hours(1),
        }
    }

    fn start(records: &[Record], intact: bool, retry_failed: bool) -> Start {
        let priors = replay(records);
        decide(priors.get(&id()), intact, rerun(retry_failed))
    }

    #[test]
    fn a_submitted_variant_is_polled_never_submitted_again() {
        let poll = Start::Poll {
            task_id: "t1".into(),
        };
        assert_eq!(start(&[intent(), submitted("t1")], true, false), poll);
        assert_eq!(
            start(&[intent(), submitted("t1"), track("t1", 1)], true, true),
            poll
        );
    }

    #[test]
    fn finished_variants_are_kept_or_downloaded_again() {
        let records = [
            intent(),
            submitted("t1"),
            track("t1", 1),
            track("t1", 2),
            ended(EndStatus::Finished),
        ];
        assert_eq!(start(&records, true, true), Start::Keep);
        assert_eq!(
            start(&records, false, false),
            Start::Redownload {
                task_id: "t1".into()
            }
        );
    }

    #[test]
    fn ended_variants_are_submitted_again_only_with_retry_failed() {
        let records = [intent(), submitted("t1"), ended(EndStatus::Failed)];
        assert_eq!(start(&records, true, false), Start::Keep);
        assert_eq!(start(&records, true, true), Start::Submit);
        let timed_out = [intent(), submitted("t1"), ended(EndStatus::Timeout)];
        assert_eq!(start(&timed_out, true, true), Start::Submit);
        // An error before any task was created cost nothing: submitted again unasked.
        let refused = [intent(), failed(Created::No), ended(EndStatus::Error)];
        assert_eq!(start(&refused, true, false), Start::Submit);
        // A lost answer may have created a task: only when asked.
        let lost = [intent(), failed(Created::Unknown), ended(EndStatus::Error)];
        assert_eq!(start(&lost, true, false), Start::Keep);
        assert_eq!(start(&lost, true, true), Start::Submit);
        // An error with a task (a download that kept failing) is re-polled for free.
        let download_error = [intent(), submitted("t1"), ended(EndStatus::Error)];
        assert_eq!(
            start(&download_error, true, false),
            Start::Poll {
                task_id: "t1".into()
            }
        );
    }

    #[test]
    fn a_timed_out_task_is_collected_for_free_while_young_enough() {
        let records = [intent(), submitted("t1"), ended(EndStatus::Timeout)];
        assert_eq!(
            start(&records, true, false),
            Start::Poll {
                task_id: "t1".into()
            }
        );
        let priors = replay(&records);
        let late = Rerun {
            retry_failed: false,
            now: at() + COLLECT_WITHIN,
        };
        assert_eq!(decide(priors.get(&id()), true, late), Start::Keep);
        let errored = replay(&[intent(), submitted("t1"), ended(EndStatus::Error)]);
        assert_eq!(decide(errored.get(&id()), true, late), Start::Keep);
    }

    #[test]
    fn a_submit_cut_off_by_a_crash_counts_as_unknown_and_is_not_submitted_again_unasked() {
        let priors = replay(&[intent()]);
        let prior = &priors[&id()];
        assert_eq!(
            (
                prior.attempts,
                prior.unknown_outcomes,
                prior.submit_in_flight,
                prior.last_outcome_unknown
            ),
            (1, 1, true, true)
        );
        assert_eq!(decide(Some(prior), true, rerun(false)), Start::Keep);
        assert_eq!(decide(Some(prior), true, rerun(true)), Start::Submit);
        let (record, _) = prior.clone().into_record();
        assert_eq!(record.status, VariantStatus::Error);
        assert!(record.error.unwrap().contains("--retry-failed"));
        // An answer lost in a run that then died before journaling the end: the same.
        let priors = replay(&[intent(), failed(Created::Unknown)]);
        assert_eq!(decide(priors.get(&id()), true, rerun(false)), Start::Keep);
        // A resubmit (asked for) that created nothing leaves the earlier unknown standing.
        for undone in [
            failed(Created::No),
            Record::SubmitWithdrawn { variant_id: id() },
        ] {
            let priors = replay(&[intent(), failed(Created::Unknown), intent(), undone]);
            assert_eq!(decide(priors.get(&id()), true, rerun(false)), Start::Keep);
        }
        // Known failures are not unknown outcomes; a crash after a retry's intent is.
        let priors = replay(&[
            intent(),
            failed(Created::No),
            intent(),
            failed(Created::Unknown),
            intent(),
        ]);
        assert_eq!(
            (priors[&id()].attempts, priors[&id()].unknown_outcomes),
            (3, 2)
        );
    }

    #[test]
    fn a_withdrawn_intent_is_no_attempt_and_no_unknown_outcome() {
        let withdrawn = Record::SubmitWithdrawn { variant_id: id() };
        let priors = replay(&[intent(), failed(Created::No), intent(), withdrawn]);
        let prior = &priors[&id()];
        assert_eq!(
            (
                prior.attempts,
                prior.unknown_outcomes,
                prior.submit_in_flight
            ),
            (1, 0, false)
        );
        assert_eq!(decide(Some(prior), true, rerun(false)), Start::Submit);
    }

    #[test]
    fn a_resubmit_that_never_happened_forgets_neither_task_nor_end() {
        let timed_out = [intent(), submitted("t1"), ended(EndStatus::Timeout)];
        for undone in [
            Record::SubmitWithdrawn { variant_id: id() },
            failed(Created::No),
        ] {
            let mut records = timed_out.to_vec();
            records.extend([intent(), undone]);
            assert_eq!(
                start(&records, true, false),
                Start::Poll {
                    task_id: "t1".into()
                },
                "the paid task is still collected"
            );
        }
    }

    /// Issue 17: a download again that failed once ended a finished variant `error`,
    /// and its tracks vanished from results.csv. Finished stays finished with its tracks;
    /// the failure is its note.
    #[test]
    fn a_finished_variant_stays_finished_with_its_tracks_whatever_ends_after() {
        let finished = [
            intent(),
            submitted("t1"),
            track("t1", 1),
            track("t1", 2),
            ended(EndStatus::Finished),
        ];
        for later in [EndStatus::Error, EndStatus::Timeout, EndStatus::Failed] {
            let mut records = finished.to_vec();
            records.push(Record::Ended {
                variant_id: id(),
                status: later,
                error: Some("track 2: download answered HTTP 404".into()),
                at: at(),
            });
            let priors = replay(&records);
            let (record, tracks) = priors[&id()].clone().into_record();
            assert_eq!(record.status, VariantStatus::Finished, "{later:?}");
            assert_eq!(tracks.len(), 2, "{later:?}");
            assert!(record.error.unwrap().contains("404"));
            assert_eq!(decide(priors.get(&id()), true, rerun(true)), Start::Keep);
            // Finished again: the note goes.
            records.push(ended(EndStatus::Finished));
            let (record, _) = replay(&records)[&id()].clone().into_record();
            assert_eq!(
                (record.status, record.error),
                (VariantStatus::Finished, None)
            );
        }
    }

    #[test]
    fn a_new_submit_replaces_the_old_task_and_end() {
        let records = [
            intent(),
            submitted("t1"),
            ended(EndStatus::Failed),
            intent(),
            submitted("t2"),
        ];
        assert_eq!(
            start(&records, true, false),
            Start::Poll {
                task_id: "t2".into()
            }
        );
        let priors = replay(&records);
        assert_eq!(priors[&id()].attempts, 2);
        assert_eq!(priors[&id()].end, None);
    }

    #[test]
    fn unknown_variants_are_submitted() {
        assert_eq!(decide(None, true, rerun(false)), Start::Submit);
    }

    /// A model of one variant's history, built alongside the records it produces, so the
    /// oracle never reads the records the code under test reads.
    #[derive(Default)]
    struct Oracle {
        calls: u32,
        unknown: u32,
        task: Option<String>,
        ended: Option<EndStatus>,
        /// The last submit's outcome is unknown.
        last_unknown: bool,
    }

    impl Oracle {
        /// A submit that created nothing: what it would have replaced stands.
        fn restore(&mut self, before: &mut Option<(Option<String>, Option<EndStatus>, bool)>) {
            if let Some((task, ended, last_unknown)) = before.take() {
                (self.task, self.ended, self.last_unknown) = (task, ended, last_unknown);
            }
        }
    }

    /// Random histories (submits failing, succeeding, withdrawn; tracks; ends; more
    /// submits after failures) cut at a random crash point: replay must agree with the
    /// oracle, and a variant whose live task is known is never submitted again.
    #[test]
    fn random_journals_cut_at_random_crash_points_agree_with_the_oracle() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        for case in 0..2000 {
            let mut records = Vec::new();
            let mut oracle = Oracle::default();
            let mut in_flight = false;
            let mut before = None;
            for step in 0..rng.random_range(1..12) {
                let retrying = oracle.task.is_none()
                    || matches!(oracle.ended, Some(EndStatus::Failed | EndStatus::Timeout));
                match rng.random_range(0..6) {
                    0 | 1 if retrying => {
                        records.push(intent());
                        in_flight = true;
                        before =
                            Some((oracle.task.take(), oracle.ended.take(), oracle.last_unknown));
                        oracle.last_unknown = false;
                        oracle.calls += 1;
                        match rng.random_range(0..5) {
                            0 => {
                                records.push(Record::SubmitWithdrawn { variant_id: id() });
                                oracle.calls -= 1;
                                in_flight = false;
                                oracle.restore(&mut before);
                            }
                            1 => {
                                records.push(failed(Created::No));
                                in_flight = false;
                                oracle.restore(&mut before);
                            }
                            2 => {
                                records.push(failed(Created::Unknown));
                                oracle.unknown += 1;
                                oracle.last_unknown = true;
                                in_flight = false;
                            }
                            3 => {
                                let task = format!("t{case}-{step}");
                                records.push(submitted(&task));
                                oracle.task = Some(task);
                                in_flight = false;
                            }
                            _ => {}
                        }
                    }
                    2 => {
                        if let Some(task) = oracle.task.clone().filter(|_| oracle.ended.is_none()) {
                            records.push(track(&task, rng.random_range(1..3)));
                        }
                    }
                    3 if oracle.task.is_some() && oracle.ended.is_none() && !in_flight => {
                        let status = [
                            EndStatus::Finished,
                            EndStatus::Failed,
                            EndStatus::Timeout,
                            EndStatus::Error,
                        ][rng.random_range(0..4)];
                        records.push(ended(status));
                        oracle.ended = Some(status);
                    }
                    _ => {}
                }
                if in_flight && rng.random_range(0..4) == 0 {
                    // The process dies with the submit on the wire.
                    break;
                }
                if in_flight {
                    // The answer came after all; record its outcome as known-failed.
                    records.push(failed(Created::No));
                    in_flight = false;
                    oracle.restore(&mut before);
                }
            }
            if in_flight {
                oracle.unknown += 1;
                oracle.last_unknown = true;
            }
            let priors = replay(&records);
            let Some(prior) = priors.get(&id()) else {
                assert!(records.is_empty() || oracle.calls == 0, "case {case}");
                continue;
            };
            assert_eq!(prior.attempts, oracle.calls, "case {case}: {records:#?}");
            assert_eq!(
                prior.unknown_outcomes, oracle.unknown,
                "case {case}: {records:#?}"
            );
            assert_eq!(
                prior.task.as_ref().map(|t| t.task_id.clone()),
                oracle.task,
                "case {case}"
            );
            for retry_failed in [false, true] {
                let start = decide(Some(prior), true, rerun(retry_failed));
                // --retry-failed buys failed, timed-out and errored variants again.
                let retried = match oracle.ended {
                    Some(EndStatus::Failed | EndStatus::Timeout | EndStatus::Error) => retry_failed,
                    _ => false,
                };
                let live_task = oracle.task.is_some()
                    && !matches!(oracle.ended, Some(EndStatus::Failed))
                    && !retried;
                if live_task {
                    assert_ne!(
                        start,
                        Start::Submit,
                        "case {case}: a known task would be paid twice"
                    );
                }
                if oracle.ended.is_some() && !retry_failed {
                    assert_ne!(
                        start,
                        Start::Submit,
                        "case {case}: resubmitted without --retry-failed"
                    );
                }
                if oracle.last_unknown && oracle.task.is_none() && !retry_failed {
                    assert_ne!(
                        start,
                        Start::Submit,
                        "case {case}: a submit whose task may exist was made again unasked"
                    );
                }
            }
        }
    }
}
