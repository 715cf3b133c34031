//! What becomes of a variant: its status, its downloaded tracks, its record in
//! `results.csv`, and the uploaded files its submits used. Shared by the scheduler that
//! produces these facts, the journal that keeps them and the report that shows them, so
//! none of those needs to import another.
//!
//! Pure data: no I/O, no async.

use chrono::{DateTime, Utc};

use crate::qc::TrackQc;

pub mod digest;

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

/// One downloaded track, in place on disk.
#[derive(Clone, Debug, PartialEq)]
pub struct TrackRecord {
    /// 1-based track number within its task.
    pub number: u32,
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
    /// The file's modification time once in place (ns since the Unix epoch).
    pub modified_ns: Option<u64>,
    /// What decoding it found; `None` for a track journaled before quality control
    /// existed.
    pub qc: Option<TrackQc>,
    /// Its waveform for the listening page, drawn as the track landed and journaled with
    /// it (the page draws a track without one from the file).
    pub wave: Option<String>,
}

/// Everything known about one variant: one or more rows of `results.csv`.
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
    /// Submit calls made for it, all runs together.
    pub attempts: u32,
    /// Why it failed, for failed, timeout, error and pending.
    pub error: Option<String>,
    /// Its tracks, once finished.
    pub tracks: Vec<TrackRecord>,
}

impl VariantRecord {
    /// The record of a variant no run knows: pending, never submitted.
    pub const UNKNOWN: VariantRecord = VariantRecord {
        status: VariantStatus::Pending,
        task_id: None,
        submitted_at: None,
        finished_at: None,
        attempts: 0,
        error: None,
        tracks: Vec::new(),
    };
}

impl Default for VariantRecord {
    fn default() -> Self {
        Self::UNKNOWN
    }
}

impl VariantRecord {
    /// Takes in how the variant's work ended in this run.
    pub fn apply_end(&mut self, end: &VariantEnd) {
        self.status = end.status;
        self.tracks = end.tracks.clone();
        self.error = end.error.clone();
        self.finished_at = (end.status != VariantStatus::Pending).then_some(end.at);
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

impl VariantEnd {
    /// An end other than finished, with its reason.
    pub fn with_error(status: VariantStatus, error: impl Into<String>, at: DateTime<Utc>) -> Self {
        VariantEnd {
            status,
            tracks: Vec::new(),
            error: Some(error.into()),
            at,
        }
    }
}

/// An uploaded stem file's URL and how long it lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadedFile {
    /// What to give as `upload_url`.
    pub url: String,
    /// When the provider deletes it.
    pub expires_at: DateTime<Utc>,
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
    /// Counts the statuses of `records`.
    pub fn of<'a>(records: impl IntoIterator<Item = &'a VariantRecord>) -> Self {
        let mut counts = StatusCounts::default();
        for record in records {
            counts.add(record.status);
        }
        counts
    }

    /// Counts one more variant of `status`.
    pub fn add(&mut self, status: VariantStatus) {
        match status {
            VariantStatus::Finished => self.finished += 1,
            VariantStatus::Failed => self.failed += 1,
            VariantStatus::Timeout => self.timeout += 1,
            VariantStatus::Error => self.error += 1,
            VariantStatus::Pending => self.pending += 1,
        }
    }

    /// Whether every variant finished.
    pub fn all_finished(&self) -> bool {
        self.failed + self.timeout + self.error + self.pending == 0
    }
}

/// Variants by phase: where the work is now (the run state's `phase_counts`).
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
    fn an_end_fills_the_record_and_counts_follow() {
        let at = Utc::now();
        let mut record = VariantRecord {
            task_id: Some("t".into()),
            attempts: 2,
            ..VariantRecord::default()
        };
        record.apply_end(&VariantEnd::with_error(VariantStatus::Failed, "no", at));
        assert_eq!(
            (record.status, record.finished_at, record.attempts),
            (VariantStatus::Failed, Some(at), 2)
        );
        let pending = VariantRecord::default();
        let counts = StatusCounts::of([&record, &pending]);
        assert_eq!((counts.failed, counts.pending), (1, 1));
        assert!(!counts.all_finished());
        assert_eq!(
            counts.to_string(),
            "0 finished, 1 failed, 0 timeout, 0 error, 1 pending"
        );
        let mut stopped = VariantRecord::default();
        stopped.apply_end(&VariantEnd::with_error(VariantStatus::Pending, "stop", at));
        assert_eq!(stopped.finished_at, None, "pending is not an end");
    }
}
