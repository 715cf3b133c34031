//! Earlier runs' records folded into one [`Prior`] per variant: what the journal says of
//! it, and the record an earlier run left. Pure: the caller reads the journal. What a
//! variant does next with its prior is a money decision, made beside the run state
//! (`scheduler::start::decide`, `scheduler::rerun::plan`), never here.
//!
//! A folder's fold holds every track it ever downloaded, so a track is kept compact
//! ([`PriorTrack`]): what the decisions and the check of its file read. The rest (its
//! URL, the provider's id, the QC figures, the waveform), needed only when the rows and
//! the page are written, stays in the line it was read from (`stored::TrackStore` reads
//! it back).

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::format::{Created, EndStatus, Record, TrackEntry};
use crate::outcome::{UploadedFile, VariantRecord, VariantStatus};
use crate::qc::Verdict;
use crate::variant::VariantId;

/// A task the journal knows, with the tracks downloaded from it so far.
#[derive(Clone, Debug, PartialEq)]
pub struct PriorTask {
    /// The provider's task.
    pub task_id: String,
    /// When it was created.
    pub submitted_at: DateTime<Utc>,
    /// Tracks journaled as downloaded, by track number.
    pub tracks: Vec<PriorTrack>,
}

/// A downloaded track as the fold keeps it: what the re-run's decisions and the check of
/// its file read, and where the rest of its entry is.
#[derive(Clone, Debug, PartialEq)]
pub struct PriorTrack {
    /// 1-based track number.
    pub track: u32,
    /// Relative to the output folder.
    pub file: Box<str>,
    /// Bytes on disk.
    pub bytes: u64,
    /// Its sha256.
    pub sha256: Sha256Digest,
    /// The file's modification time once in place (ns since the Unix epoch).
    pub modified_ns: Option<u64>,
    /// The quality verdict, when quality control ran (counted by `status`).
    pub qc: Option<Verdict>,
    /// What its row shows, as the report compares it with last night's
    /// (`TrackEntry::row_digest`).
    pub row_digest: u64,
    /// The whole entry, or where it is.
    pub details: Details,
}

/// A track's sha256 as the fold keeps it: its 32 bytes (a journal's hex text takes three
/// times the room), or the text as journaled when it is not a sha256's hex.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sha256Digest {
    /// The digest.
    Bytes([u8; 32]),
    /// Whatever else the journal said.
    Text(Box<str>),
}

impl Sha256Digest {
    /// The digest of the hex text `hex` (as journaled).
    pub fn of_hex(hex: &str) -> Self {
        let mut bytes = [0u8; 32];
        match hex::decode_to_slice(hex, &mut bytes) {
            Ok(()) if hex.bytes().all(|b| !b.is_ascii_uppercase()) => Sha256Digest::Bytes(bytes),
            _ => Sha256Digest::Text(hex.into()),
        }
    }

    /// Whether it is the digest journaled as `hex`.
    pub fn is_hex(&self, hex: &str) -> bool {
        *self == Sha256Digest::of_hex(hex)
    }
}

/// Where a folded track's whole entry is.
#[derive(Clone, Debug, PartialEq)]
pub enum Details {
    /// In memory: records folded from no file (a shard's merge, the tests).
    Held(Box<TrackEntry>),
    /// In a line of a file the fold read (a journal's `track` record, or a checkpoint's
    /// line of its variant), read back by `stored::TrackStore`.
    Stored(LineAt),
}

/// A line of one of the files a fold read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineAt {
    /// Its first byte.
    pub offset: u64,
    /// Its length, newline included.
    pub len: u32,
    /// The file, as the fold's `TrackStore` numbers them.
    pub source: u16,
    /// In a checkpoint's line: the track is in the task an open submit replaced, not in
    /// the variant's task.
    pub replaced: bool,
}

impl PriorTrack {
    /// `entry` folded: held whole, or (read from the line `at`) kept compact.
    pub fn new(entry: TrackEntry, at: Option<LineAt>) -> Self {
        PriorTrack {
            track: entry.track,
            file: entry.file.as_str().into(),
            bytes: entry.bytes,
            sha256: Sha256Digest::of_hex(&entry.sha256),
            modified_ns: entry.modified_ns,
            qc: entry.qc,
            row_digest: entry.row_digest(),
            details: match at {
                Some(at) => Details::Stored(at),
                None => Details::Held(Box::new(entry)),
            },
        }
    }
}

/// How a variant ended in an earlier run.
#[derive(Clone, Debug, PartialEq)]
pub struct PriorEnd {
    /// The status.
    pub status: EndStatus,
    /// Why, unless finished.
    pub error: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Everything the journal says about one variant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Prior {
    /// Submit calls made for it, all runs together.
    pub attempts: u32,
    /// Submits whose outcome stayed unknown (each may have created a task).
    pub unknown_outcomes: u32,
    /// The last submit intent has no outcome: the process died while it was in flight.
    pub submit_in_flight: bool,
    /// The last submit's outcome is unknown (its answer was lost, or the process died
    /// while it was on the wire): a task may exist that the journal cannot name.
    pub last_outcome_unknown: bool,
    /// The current task.
    pub task: Option<PriorTask>,
    /// How it ended, when it did.
    pub end: Option<PriorEnd>,
    /// What an open submit intent replaced: restored when that submit is withdrawn or
    /// proves to have created nothing, so that a resubmit that never happened forgets
    /// neither the earlier task nor an earlier unknown outcome.
    pub(super) before_intent: Option<Box<Replaced>>,
}

/// What a submit intent replaces: the task, the end and whether the last outcome was
/// unknown.
type Replaced = (Option<PriorTask>, Option<PriorEnd>, bool);

impl Prior {
    /// The task an open submit intent replaced, if any (its tracks are folded tracks too).
    #[cfg(test)]
    pub(super) fn replaced_task_mut(&mut self) -> Option<&mut PriorTask> {
        self.before_intent.as_mut()?.0.as_mut()
    }

    /// Undoes what the open submit intent replaced: that submit created nothing.
    fn restore(&mut self) {
        if let Some(replaced) = self.before_intent.take() {
            (self.task, self.end, self.last_outcome_unknown) = *replaced;
        }
    }
}

/// Folds journal records into one [`Prior`] per variant.
pub fn replay(records: &[Record]) -> HashMap<VariantId, Prior> {
    let mut priors: HashMap<VariantId, Prior> = HashMap::new();
    fold(&mut priors, records);
    for prior in priors.values_mut() {
        prior.settle();
    }
    priors
}

impl Prior {
    /// What the fold leaves, read as the journals end here: a submit intent without an
    /// outcome is an outcome unknown (its process is gone, or may be).
    pub fn settle(&mut self) {
        if self.submit_in_flight {
            self.unknown_outcomes += 1;
            self.last_outcome_unknown = true;
        }
    }
}

/// Folds `records` into `priors`, unsettled: a fold can go on from where it stopped with
/// the records that follow (`fold(a ++ b)` is `fold(a)` then `fold(b)`), and
/// [`Prior::settle`] reads a copy when the records end there.
pub fn fold<'a>(
    priors: &mut HashMap<VariantId, Prior>,
    records: impl IntoIterator<Item = &'a Record>,
) {
    for record in records {
        match record {
            Record::RunStarted { .. } | Record::Uploaded { .. } | Record::ShardsUsed { .. } => {}
            Record::SubmitIntent { variant_id, .. } => {
                let prior = priors.entry(variant_id.clone()).or_default();
                if prior.submit_in_flight {
                    prior.unknown_outcomes += 1;
                }
                prior.attempts += 1;
                prior.submit_in_flight = true;
                // A new submit replaces whatever an earlier one produced, once it does.
                let replaced = (
                    prior.task.take(),
                    prior.end.take(),
                    prior.last_outcome_unknown,
                );
                prior.before_intent.get_or_insert(Box::new(replaced));
                prior.last_outcome_unknown = false;
            }
            Record::SubmitWithdrawn { variant_id } => {
                let prior = priors.entry(variant_id.clone()).or_default();
                if prior.submit_in_flight {
                    prior.submit_in_flight = false;
                    prior.attempts -= 1;
                }
                prior.restore();
            }
            Record::SubmitFailed {
                variant_id,
                created,
                ..
            } => {
                let prior = priors.entry(variant_id.clone()).or_default();
                prior.submit_in_flight = false;
                match created {
                    Created::Unknown => {
                        prior.unknown_outcomes += 1;
                        prior.last_outcome_unknown = true;
                        prior.before_intent = None;
                    }
                    // Nothing was created: what the earlier submits left still stands.
                    Created::No => prior.restore(),
                }
            }
            Record::Submitted {
                variant_id,
                task_id,
                at,
            } => {
                let prior = priors.entry(variant_id.clone()).or_default();
                prior.submit_in_flight = false;
                prior.before_intent = None;
                prior.task = Some(PriorTask {
                    task_id: task_id.clone(),
                    submitted_at: *at,
                    tracks: Vec::new(),
                });
            }
            Record::Track {
                variant_id,
                task_id,
                entry,
            } => {
                let prior = priors.entry(variant_id.clone()).or_default();
                put_track(prior, task_id, PriorTrack::new(entry.clone(), None));
            }
            Record::Ended {
                variant_id,
                status,
                error,
                at,
            } => {
                let prior = priors.entry(variant_id.clone()).or_default();
                // Finished stays finished with its tracks: a later end of the same task
                // (a download again that failed, written by a stembatch before issue 17)
                // only adds its reason. A new submit takes the end away first, so this
                // never outlives the task.
                if let Some(end) = prior
                    .end
                    .as_mut()
                    .filter(|e| e.status == EndStatus::Finished && *status != EndStatus::Finished)
                {
                    end.error = error.clone();
                    continue;
                }
                prior.end = Some(PriorEnd {
                    status: *status,
                    error: error.clone(),
                    at: *at,
                });
            }
        }
    }
}

/// As [`fold`], one record taken by value, read from the line `at` of a file: a track is
/// kept compact, its entry left in that line (a folder's journals hold every track of
/// every night).
pub fn fold_owned(priors: &mut HashMap<VariantId, Prior>, record: Record, at: Option<LineAt>) {
    match record {
        Record::Track {
            variant_id,
            task_id,
            entry,
        } => {
            let prior = priors.entry(variant_id).or_default();
            put_track(prior, &task_id, PriorTrack::new(entry, at));
        }
        record => fold(priors, std::iter::once(&record)),
    }
}

/// Puts `track` in `prior`'s task when it is `task_id`'s: a track of an older task is
/// ignored, and a track journaled twice is the later one.
fn put_track(prior: &mut Prior, task_id: &str, track: PriorTrack) {
    if let Some(task) = prior.task.as_mut().filter(|t| t.task_id == task_id) {
        task.tracks.retain(|t| t.track != track.track);
        // Exactly the room it needs: the fold holds every track of the folder.
        task.tracks.reserve_exact(1);
        task.tracks.push(track);
        task.tracks.sort_by_key(|t| t.track);
    }
}

/// The message of a variant whose last submit's outcome is unknown.
pub const UNKNOWN_OUTCOME: &str = "an earlier submit's answer was lost (the connection dropped, or the run was killed while it was on the wire): the provider may have created a task, which is billed if it succeeds, so it is not submitted again (hint: re-run with --retry-failed to submit it again, at the risk of paying twice)";

impl Prior {
    /// The record an earlier run left, as the journal tells it, but for its tracks: those
    /// of a finished variant come apart, compact (`stored::TrackStore::records` makes
    /// them whole when its rows are written).
    pub fn into_record(self) -> (VariantRecord, Vec<PriorTrack>) {
        let (status, error) = status_of(&self);
        let finished_at = self.end.as_ref().map(|e| e.at);
        let (task_id, submitted_at, tracks) = match self.task {
            Some(task) => {
                let tracks = match status {
                    VariantStatus::Finished => task.tracks,
                    _ => Vec::new(),
                };
                (Some(task.task_id), Some(task.submitted_at), tracks)
            }
            None => (None, None, Vec::new()),
        };
        let record = VariantRecord {
            status,
            task_id,
            submitted_at,
            finished_at,
            attempts: self.attempts,
            error,
            tracks: Vec::new(),
        };
        (record, tracks)
    }

    /// Its status as `results.csv` says it, and its tracks' verdicts (finished only):
    /// what `status` counts, without its tracks' entries.
    pub fn status_and_verdicts(
        &self,
    ) -> (VariantStatus, impl Iterator<Item = Option<Verdict>> + '_) {
        let (status, _) = status_of(self);
        let tracks = match (status, &self.task) {
            (VariantStatus::Finished, Some(task)) => &task.tracks[..],
            _ => &[],
        };
        (status, tracks.iter().map(|t| t.qc))
    }
}

/// A prior's status and error as `results.csv` says them.
fn status_of(prior: &Prior) -> (VariantStatus, Option<String>) {
    let end = prior.end.as_ref();
    let mut status = end.map_or(VariantStatus::Pending, |e| e.status.into());
    let mut error = end.and_then(|e| e.error.clone());
    if end.is_none() && prior.task.is_none() && prior.last_outcome_unknown {
        status = VariantStatus::Error;
        error = Some(UNKNOWN_OUTCOME.to_owned());
    }
    (status, error)
}

/// The API the journal's last run used, when it says.
pub fn last_api(records: &[Record]) -> Option<&str> {
    records.iter().rev().find_map(|record| match record {
        Record::RunStarted { api, .. } if !api.is_empty() => Some(api.as_str()),
        _ => None,
    })
}

/// The latest upload of each file (by content hash) to `api` that the journal knows.
pub fn uploads(records: &[Record], api: &str) -> HashMap<String, UploadedFile> {
    records
        .iter()
        .filter_map(|record| match record {
            Record::Uploaded {
                api: uploaded_to,
                sha256,
                file_url,
                expires_at,
                ..
            } if uploaded_to == api => Some((
                sha256.clone(),
                UploadedFile {
                    url: file_url.clone(),
                    expires_at: *expires_at,
                },
            )),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn submitted(task: &str) -> Record {
        Record::Submitted {
            variant_id: id(),
            task_id: task.into(),
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

    /// A track's sha256 is kept as its bytes, and matches only the text it was read from
    /// (a file's digest is compared as the journal's lowercase hex was).
    #[test]
    fn a_sha256_is_kept_as_its_bytes_and_matches_only_its_own_text() {
        let hex = "ab".repeat(32);
        let digest = Sha256Digest::of_hex(&hex);
        assert_eq!(digest, Sha256Digest::Bytes([0xab; 32]));
        assert!(digest.is_hex(&hex));
        assert!(
            !digest.is_hex(&"AB".repeat(32)),
            "the journal writes lowercase"
        );
        assert!(!digest.is_hex(&"cd".repeat(32)));
        assert_eq!(Sha256Digest::of_hex("00"), Sha256Digest::Text("00".into()));
        assert!(Sha256Digest::of_hex("00").is_hex("00"));
    }

    #[test]
    fn tracks_of_an_older_task_are_ignored() {
        let priors = replay(&[
            intent(),
            submitted("t2"),
            track("t1", 1),
            track("t2", 2),
            track("t2", 2),
        ]);
        let task = priors[&id()].task.as_ref().unwrap();
        assert_eq!(task.tracks.len(), 1);
        assert_eq!(task.tracks[0].track, 2);
    }

    #[test]
    fn the_latest_upload_of_each_file_is_kept() {
        let upload = |sha: &str, url: &str| Record::Uploaded {
            api: "https://api".into(),
            sha256: sha.into(),
            file_url: url.into(),
            expires_at: at(),
            at: at(),
        };
        let records = [
            upload("a", "u1"),
            intent(),
            upload("b", "u2"),
            upload("a", "u3"),
        ];
        let found = uploads(&records, "https://api");
        assert_eq!(found.len(), 2);
        assert_eq!(found["a"].url, "u3");
        assert!(
            uploads(&records, "simulator").is_empty(),
            "uploads to another API are not used"
        );
    }
}
