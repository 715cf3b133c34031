//! The run's state: one [`VariantRecord`] per variant, changed only by [`RunState::apply`].
//! Pure: the coordinator feeds it events and decides when to write it out.

use chrono::{DateTime, Utc};

use crate::journal::format::{EndStatus, TrackEntry};
use crate::journal::replay::Prior;

/// What became of a variant (SPEC.md's `status` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VariantStatus {
    /// Every track downloaded.
    Finished,
    /// The provider said the task failed.
    Failed,
    /// Not finished or failed within `task_timeout`.
    Timeout,
    /// We could not complete it.
    Error,
    /// Not done when the run stopped.
    Pending,
}

impl VariantStatus {
    /// The CSV word.
    pub fn as_str(self) -> &'static str {
        match self {
            VariantStatus::Finished => "finished",
            VariantStatus::Failed => "failed",
            VariantStatus::Timeout => "timeout",
            VariantStatus::Error => "error",
            VariantStatus::Pending => "pending",
        }
    }
}

/// One downloaded track.
#[derive(Clone, Debug, PartialEq)]
pub struct TrackRecord {
    /// The provider's id.
    pub audio_id: String,
    /// Seconds, as the provider reports.
    pub duration_s: Option<f64>,
    /// Path relative to the output folder, with `/`.
    pub file: String,
    /// Bytes on disk.
    pub bytes: u64,
    /// Hex sha256 of the file.
    pub sha256: String,
    /// Where it was downloaded from.
    pub audio_url: String,
}

/// Everything known about one variant.
#[derive(Clone, Debug, PartialEq)]
pub struct VariantRecord {
    /// Where it is.
    pub status: VariantStatus,
    /// The provider's task, once submitted.
    pub task_id: Option<String>,
    /// When the submit was answered.
    pub submitted_at: Option<DateTime<Utc>>,
    /// When it reached its end status.
    pub finished_at: Option<DateTime<Utc>>,
    /// Submit calls made for it.
    pub attempts: u32,
    /// Why it failed, for failed, timeout and error.
    pub error: Option<String>,
    /// Its tracks, once finished.
    pub tracks: Vec<TrackRecord>,
}

impl Default for VariantRecord {
    fn default() -> Self {
        VariantRecord {
            status: VariantStatus::Pending,
            task_id: None,
            submitted_at: None,
            finished_at: None,
            attempts: 0,
            error: None,
            tracks: Vec::new(),
        }
    }
}

/// How a variant's work ended in this run.
#[derive(Clone, Debug, PartialEq)]
pub struct VariantEnd {
    /// The end status (`Pending` when the run stopped first).
    pub status: VariantStatus,
    /// The tracks, for `Finished`.
    pub tracks: Vec<TrackRecord>,
    /// Why, for anything but `Finished`.
    pub error: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// What workers report.
#[derive(Clone, Debug, PartialEq)]
pub enum WorkerEvent {
    /// A submit call is about to go out.
    Submitting {
        /// The variant's index in the manifest.
        index: usize,
    },
    /// A submit failed in a way that leaves open whether the provider created a task.
    SubmitOutcomeUnknown {
        /// The variant's index.
        index: usize,
    },
    /// The provider created the task.
    Submitted {
        /// The variant's index.
        index: usize,
        /// The provider's task.
        task_id: String,
        /// When the answer came.
        at: DateTime<Utc>,
    },
    /// The variant's work is over for this run.
    Ended {
        /// The variant's index.
        index: usize,
        /// How.
        end: VariantEnd,
    },
}

impl VariantRecord {
    /// The record an earlier run left, as the journal tells it.
    pub fn from_prior(prior: &Prior) -> Self {
        let end = prior.end.as_ref();
        let status = match end.map(|e| e.status) {
            None => VariantStatus::Pending,
            Some(EndStatus::Finished) => VariantStatus::Finished,
            Some(EndStatus::Failed) => VariantStatus::Failed,
            Some(EndStatus::Timeout) => VariantStatus::Timeout,
            Some(EndStatus::Error) => VariantStatus::Error,
        };
        let tracks = match (status, &prior.task) {
            (VariantStatus::Finished, Some(task)) => {
                task.tracks.iter().map(TrackRecord::from).collect()
            }
            _ => Vec::new(),
        };
        VariantRecord {
            status,
            task_id: prior.task.as_ref().map(|t| t.task_id.clone()),
            submitted_at: prior.task.as_ref().map(|t| t.submitted_at),
            finished_at: end.map(|e| e.at),
            attempts: prior.attempts,
            error: end.and_then(|e| e.error.clone()),
            tracks,
        }
    }
}

impl From<&TrackEntry> for TrackRecord {
    fn from(entry: &TrackEntry) -> Self {
        TrackRecord {
            audio_id: entry.audio_id.clone(),
            duration_s: entry.duration_s,
            file: entry.file.clone(),
            bytes: entry.bytes,
            sha256: entry.sha256.clone(),
            audio_url: entry.audio_url.clone(),
        }
    }
}

/// Every variant's record, in manifest order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunState {
    records: Vec<VariantRecord>,
    unknown_outcomes: usize,
}

impl RunState {
    /// A state starting from earlier runs' records.
    pub fn from_records(records: Vec<VariantRecord>) -> Self {
        RunState {
            records,
            unknown_outcomes: 0,
        }
    }

    /// Submits of this run whose outcome stayed unknown, so were made again.
    pub fn unknown_outcomes(&self) -> usize {
        self.unknown_outcomes
    }

    /// The records, in manifest order.
    pub fn records(&self) -> &[VariantRecord] {
        &self.records
    }

    /// Applies one event; returns whether a variant ended (the report is due).
    pub fn apply(&mut self, event: WorkerEvent) -> bool {
        match event {
            WorkerEvent::Submitting { index } => {
                self.records[index].attempts += 1;
                false
            }
            WorkerEvent::SubmitOutcomeUnknown { .. } => {
                self.unknown_outcomes += 1;
                false
            }
            WorkerEvent::Submitted { index, task_id, at } => {
                let record = &mut self.records[index];
                record.task_id = Some(task_id);
                record.submitted_at = Some(at);
                false
            }
            WorkerEvent::Ended { index, end } => {
                let record = &mut self.records[index];
                record.status = end.status;
                record.tracks = end.tracks;
                record.error = end.error;
                record.finished_at = (end.status != VariantStatus::Pending).then_some(end.at);
                true
            }
        }
    }

    /// How many variants have each status.
    pub fn counts(&self) -> StatusCounts {
        let mut counts = StatusCounts::default();
        for record in &self.records {
            match record.status {
                VariantStatus::Finished => counts.finished += 1,
                VariantStatus::Failed => counts.failed += 1,
                VariantStatus::Timeout => counts.timeout += 1,
                VariantStatus::Error => counts.error += 1,
                VariantStatus::Pending => counts.pending += 1,
            }
        }
        counts
    }
}

/// Variants by status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusCounts {
    /// finished
    pub finished: usize,
    /// failed
    pub failed: usize,
    /// timeout
    pub timeout: usize,
    /// error
    pub error: usize,
    /// pending
    pub pending: usize,
}

impl StatusCounts {
    /// Whether every variant finished.
    pub fn all_finished(&self) -> bool {
        self.failed + self.timeout + self.error + self.pending == 0
    }
}

impl std::fmt::Display for StatusCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} finished, {} failed, {} timeout, {} error, {} pending",
            self.finished, self.failed, self.timeout, self.error, self.pending
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_build_the_record() {
        let mut state = RunState::from_records(vec![VariantRecord::default(); 2]);
        let at = Utc::now();
        assert!(!state.apply(WorkerEvent::Submitting { index: 1 }));
        assert!(!state.apply(WorkerEvent::Submitting { index: 1 }));
        state.apply(WorkerEvent::Submitted {
            index: 1,
            task_id: "t".into(),
            at,
        });
        let end = VariantEnd {
            status: VariantStatus::Failed,
            tracks: vec![],
            error: Some("no".into()),
            at,
        };
        assert!(state.apply(WorkerEvent::Ended { index: 1, end }));
        let record = &state.records()[1];
        assert_eq!((record.attempts, record.task_id.as_deref()), (2, Some("t")));
        assert_eq!(
            (record.status, record.finished_at),
            (VariantStatus::Failed, Some(at))
        );
        assert_eq!(state.records()[0].status, VariantStatus::Pending);
        let counts = state.counts();
        assert_eq!((counts.failed, counts.pending), (1, 1));
        assert!(!counts.all_finished());
        assert_eq!(
            counts.to_string(),
            "0 finished, 1 failed, 0 timeout, 0 error, 1 pending"
        );
    }
}
