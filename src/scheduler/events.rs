//! The words between the run state and the shell: [`Event`]s flow up from the executors
//! (and from signals and the clock), [`Action`]s flow down from
//! [`RunState::handle`](super::state::RunState::handle). Pure data.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::api::error::ApiError;
use crate::api::retry::AccountStop;
use crate::api::types::{TaskDetail, TrackFile};
use crate::download::error::DownloadError;
use crate::journal::format::{Created, Record};
use crate::outcome::{TrackRecord, VariantEnd, VariantStatus};
use crate::storage::StorageError;
use crate::variant::VariantId;

/// What the shell saw.
#[derive(Debug)]
pub enum Event {
    /// The provider answered a submit with its task.
    Submitted {
        /// The variant.
        id: VariantId,
        /// The provider's task.
        task_id: String,
        /// When the answer came.
        at: DateTime<Utc>,
        /// Set when the task id could not be journaled: the next run cannot know it.
        unjournaled: Option<JournalFailure>,
    },
    /// A submit call went out and failed.
    SubmitFailed {
        /// The variant.
        id: VariantId,
        /// How.
        error: ApiError,
    },
    /// No submit call went out: the run stopped submitting first.
    SubmitWithdrawn {
        /// The variant.
        id: VariantId,
        /// Whether its intent had been journaled (and must now be withdrawn).
        intent_journaled: bool,
    },
    /// The stem's URL could not be had (its upload failed): no submit call went out.
    StemUnavailable {
        /// The variant.
        id: VariantId,
        /// Why.
        error: StemFailure,
    },
    /// A detail query answered.
    Polled {
        /// The variant.
        id: VariantId,
        /// The task as the provider sees it.
        detail: TaskDetail,
    },
    /// A detail query failed after its retries.
    PollFailed {
        /// The variant.
        id: VariantId,
        /// The last error.
        error: ApiError,
    },
    /// A wait for or a call of a detail query was cut short: the run stopped all work.
    PollStopped {
        /// The variant.
        id: VariantId,
    },
    /// A track is in place on disk.
    TrackDownloaded {
        /// The variant.
        id: VariantId,
        /// The task it came from.
        task_id: String,
        /// The track.
        track: TrackRecord,
    },
    /// A track could not be downloaded.
    TrackFailed {
        /// The variant.
        id: VariantId,
        /// The track number.
        number: u32,
        /// Why.
        failure: TrackFailure,
    },
    /// The journal could not be written: nothing more may be bought.
    JournalFailed {
        /// The variant whose submit intent could not be journaled (its call never went
        /// out), when that is what failed.
        id: Option<VariantId>,
        /// Whether the disk is full.
        disk_full: bool,
    },
    /// The run must stop (a signal, the deadline).
    Stop(StopReason),
    /// The first call of the run, the account's balance, before any submit: whether it
    /// reached the API (`None`), or how it failed after its few tries.
    ApiChecked {
        /// Why it failed, if it did.
        error: Option<ApiError>,
    },
}

/// Why a local stem got no URL.
#[derive(Debug)]
pub enum StemFailure {
    /// The provider's upload endpoint failed (or the file has no public URL).
    Api(ApiError),
    /// The bucket of `upload.mode = "s3"` failed.
    Storage(StorageError),
}

impl std::fmt::Display for StemFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StemFailure::Api(err) => err.fmt(f),
            StemFailure::Storage(err) => err.fmt(f),
        }
    }
}

/// A journal write that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalFailure {
    /// ENOSPC.
    pub disk_full: bool,
}

/// Why a track is not on disk.
#[derive(Debug)]
pub enum TrackFailure {
    /// The run stopped all work first.
    Stopped,
    /// The download kept failing.
    Download(DownloadError),
    /// The result URL expired, and no fresh one could be had from the task.
    NoFreshUrl {
        /// The download's error.
        download: DownloadError,
        /// Why no fresh URL.
        reason: String,
    },
}

impl TrackFailure {
    /// Whether it failed because the disk is full.
    pub fn disk_full(&self) -> bool {
        matches!(self, TrackFailure::Download(err) if err.is_disk_full())
    }
}

impl std::fmt::Display for TrackFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrackFailure::Stopped => f.write_str("the run stopped during the download"),
            TrackFailure::Download(err) => write!(f, "{err}"),
            TrackFailure::NoFreshUrl { download, reason } => {
                write!(f, "{download}; no fresh URL: {reason}")
            }
        }
    }
}

/// Why the run stops submitting, or stops all work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// SIGINT or SIGTERM.
    Interrupted,
    /// `--deadline` passed.
    Deadline,
    /// The account refused the key (401/403) or has no credits (402).
    Account(AccountStop),
    /// A 2xx submit answer could not be read: the provider's API changed shape.
    UnreadableSubmit,
    /// The journal or a result file could not be written.
    Storage {
        /// ENOSPC.
        disk_full: bool,
    },
    /// No call of the run had reached the API when the base URL proved unusable: nothing
    /// answers there, or what answers is not the API.
    UnusableBaseUrl,
}

impl StopReason {
    /// Whether polls and downloads stop too, not only submits. Without credits or with an
    /// unreadable API, what was already bought is still collected.
    pub fn stops_all_work(self) -> bool {
        !matches!(
            self,
            StopReason::Account(AccountStop::NoCredits | AccountStop::StorageRefused)
                | StopReason::UnreadableSubmit
        )
    }

    /// One line for the log and the closing summary.
    pub fn describe(self) -> &'static str {
        match self {
            StopReason::Interrupted => {
                "interrupted: submitting nothing more; the submits on the wire were answered and journaled"
            }
            StopReason::Deadline => {
                "deadline reached: submitting nothing more; in-flight variants stay pending for the next run"
            }
            StopReason::Account(AccountStop::BadKey) => {
                "the API key was refused (401/403): nothing more was sent"
            }
            StopReason::Account(AccountStop::StorageRefused) => {
                "the bucket of upload.mode = \"s3\" refused its credentials: nothing more was submitted; what was in flight was collected"
            }
            StopReason::Account(AccountStop::NoCredits) => {
                "no credits left (402): nothing more was submitted; what was in flight was collected"
            }
            StopReason::UnreadableSubmit => {
                "the provider's answer to a submit could not be read (its API changed shape?): nothing more was submitted, since each such submit may have created a task"
            }
            StopReason::Storage { disk_full: true } => {
                "the disk is full: nothing more was bought; the tasks already created are journaled for the next run"
            }
            StopReason::Storage { disk_full: false } => {
                "the journal or a result file could not be written: nothing more was bought"
            }
            StopReason::UnusableBaseUrl => {
                "the base URL cannot be used: nothing more was sent"
            }
        }
    }
}

/// What the shell must do next.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Get the stem's URL, journal the intent, wait for a submit slot, submit.
    Submit {
        /// The variant.
        id: VariantId,
        /// Wait this long first (a backoff after a failure that created nothing).
        after: Duration,
    },
    /// Ask about the task after `after`.
    Poll {
        /// The variant.
        id: VariantId,
        /// The task.
        task_id: String,
        /// Wait this long first.
        after: Duration,
    },
    /// Download one track of a finished task.
    Download {
        /// The variant.
        id: VariantId,
        /// The task.
        task_id: String,
        /// 1-based track number.
        number: u32,
        /// The track as the provider lists it.
        file: TrackFile,
    },
    /// The variant's work is over for this run: journal it, report it.
    End {
        /// The variant.
        id: VariantId,
        /// How.
        end: VariantEnd,
    },
    /// Stop submitting (and, when the reason says so, all work).
    Stop(StopReason),
}

/// The journal record of a submit's outcome. The submit's executor writes it the moment
/// the answer arrives, as it wrote the intent just before the call: the two records that
/// bracket a money call never wait for anything else.
pub fn submit_record(id: &VariantId, outcome: Result<(&str, DateTime<Utc>), &ApiError>) -> Record {
    match outcome {
        Ok((task_id, at)) => Record::Submitted {
            variant_id: id.clone(),
            task_id: task_id.to_owned(),
            at,
        },
        Err(error) => Record::SubmitFailed {
            variant_id: id.clone(),
            created: created_by(error),
            error: error.to_string(),
        },
    }
}

/// The journal record an event adds to what the journal knows, if any (the submit's
/// intent and outcome are the executor's: [`submit_record`]).
pub fn journal_record(event: &Event) -> Option<Record> {
    match event {
        Event::SubmitWithdrawn {
            id,
            intent_journaled: true,
        } => Some(Record::SubmitWithdrawn {
            variant_id: id.clone(),
        }),
        Event::TrackDownloaded { id, task_id, track } => Some(Record::Track {
            variant_id: id.clone(),
            task_id: task_id.clone(),
            entry: track.into(),
        }),
        _ => None,
    }
}

/// The journal record of an end; `None` for pending, which is what a variant without an
/// end record is.
pub fn end_record(id: &VariantId, end: &VariantEnd) -> Option<Record> {
    let status = match end.status {
        VariantStatus::Pending => return None,
        status => status.try_into().ok()?,
    };
    Some(Record::Ended {
        variant_id: id.clone(),
        status,
        error: end.error.clone(),
        at: end.at,
    })
}

/// What a failed submit says about the task.
pub fn created_by(error: &ApiError) -> Created {
    use crate::api::retry::{classify, CallKind, Verdict};
    match classify(error, CallKind::Submit) {
        Verdict::OutcomeUnknown | Verdict::Unreadable => Created::Unknown,
        Verdict::Retry { .. } | Verdict::Reject | Verdict::Stop(_) => Created::No,
    }
}
