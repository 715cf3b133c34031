//! The journal's records: one JSON object per line, `{"v":1,"kind":…,…}`.
//!
//! Compatibility: a reader refuses lines of a newer `v` (it cannot know what they mean)
//! and reads every older version it knows. New kinds of record need a new version.
//! A torn last line (a kill during a write) is dropped on read.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::JournalError;
use crate::variant::VariantId;

/// The format version this stembatch writes.
pub const VERSION: u32 = 1;

/// The `api` of runs against the built-in simulator (whose port changes every run).
pub const SIMULATOR: &str = "simulator";

/// What a failed submit says about the task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Created {
    /// The failure proves no task was created.
    No,
    /// The provider may have created (and billed) a task.
    Unknown,
}

/// How a variant ended, as journaled. `pending` is never journaled: it is what a variant
/// with no end record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndStatus {
    /// Every track downloaded.
    Finished,
    /// The provider failed the task.
    Failed,
    /// Not done within `task_timeout`.
    Timeout,
    /// We could not complete it.
    Error,
}

/// One downloaded track, journaled after its file was renamed into place.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrackEntry {
    /// 1-based track number.
    pub track: u32,
    /// The provider's id.
    pub audio_id: String,
    /// Relative to the output folder.
    pub file: String,
    /// Bytes on disk.
    pub bytes: u64,
    /// Hex sha256.
    pub sha256: String,
    /// Where it came from.
    pub audio_url: String,
    /// Seconds, as the provider reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// The file's modification time once in place (ns since the Unix epoch): a file whose
    /// size and time are unchanged is not hashed again on resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_ns: Option<u64>,
}

/// One journal record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// A run began (for people reading the file).
    RunStarted {
        /// When.
        at: DateTime<Utc>,
        /// The API it ran against: a base URL, or [`SIMULATOR`].
        #[serde(default)]
        api: String,
        /// The process.
        pid: u32,
        /// stembatch's version.
        version: String,
    },
    /// A submit call is about to go out.
    SubmitIntent {
        /// The variant.
        variant_id: VariantId,
        /// When.
        at: DateTime<Utc>,
    },
    /// A submit intent was given up before its call went out.
    SubmitWithdrawn {
        /// The variant.
        variant_id: VariantId,
    },
    /// A submit call failed.
    SubmitFailed {
        /// The variant.
        variant_id: VariantId,
        /// Whether a task may exist.
        created: Created,
        /// Why.
        error: String,
    },
    /// The provider created the task.
    Submitted {
        /// The variant.
        variant_id: VariantId,
        /// The provider's task.
        task_id: String,
        /// When the answer came.
        at: DateTime<Utc>,
    },
    /// A track was downloaded.
    Track {
        /// The variant.
        variant_id: VariantId,
        /// The task it came from.
        task_id: String,
        /// The track.
        #[serde(flatten)]
        entry: TrackEntry,
    },
    /// A local stem file was uploaded.
    Uploaded {
        /// The API it was uploaded to: a base URL, or [`SIMULATOR`].
        #[serde(default)]
        api: String,
        /// Hex sha256 of the file's content.
        sha256: String,
        /// The URL the provider gave it.
        file_url: String,
        /// When the provider deletes it.
        expires_at: DateTime<Utc>,
        /// When it was uploaded.
        at: DateTime<Utc>,
    },
    /// The variant reached an end status.
    Ended {
        /// The variant.
        variant_id: VariantId,
        /// The status.
        status: EndStatus,
        /// Why, unless finished.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// When.
        at: DateTime<Utc>,
    },
}

#[derive(Serialize)]
struct LineOut<'a> {
    v: u32,
    #[serde(flatten)]
    record: &'a Record,
}

#[derive(Deserialize)]
struct Version {
    v: u32,
}

#[derive(Deserialize)]
struct LineIn {
    #[serde(flatten)]
    record: Record,
}

/// The record as one line, with its newline.
pub fn encode(record: &Record) -> String {
    let mut line = serde_json::to_string(&LineOut { v: VERSION, record })
        .expect("journal records always serialise");
    line.push('\n');
    line
}

/// Every record of a journal's text. A damaged last line is a write cut short and is
/// dropped; a damaged line before it is an error.
pub fn decode_all(text: &str, path: &std::path::Path) -> Result<Vec<Record>, JournalError> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut records = Vec::with_capacity(lines.len());
    for (i, raw) in lines.iter().enumerate() {
        let is_last = i + 1 == lines.len();
        let line = raw.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        match decode_line(line) {
            Ok(record) => records.push(record),
            Err(LineError::TooNew(version)) => {
                return Err(JournalError::TooNew {
                    path: path.to_owned(),
                    line: i + 1,
                    version,
                })
            }
            // A kill mid-write leaves the last line cut anywhere.
            Err(LineError::Invalid(_)) if is_last => {
                tracing::warn!(path = %path.display(), line = i + 1, "dropping a torn last journal line");
            }
            Err(LineError::Invalid(message)) => {
                return Err(JournalError::Corrupt {
                    path: path.to_owned(),
                    line: i + 1,
                    message,
                })
            }
        }
    }
    Ok(records)
}

enum LineError {
    TooNew(u32),
    Invalid(String),
}

fn decode_line(line: &str) -> Result<Record, LineError> {
    let version: Version =
        serde_json::from_str(line).map_err(|e| LineError::Invalid(e.to_string()))?;
    if version.v > VERSION {
        return Err(LineError::TooNew(version.v));
    }
    let parsed: LineIn =
        serde_json::from_str(line).map_err(|e| LineError::Invalid(e.to_string()))?;
    Ok(parsed.record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn id(text: &str) -> VariantId {
        serde_json::from_value(serde_json::json!(text)).unwrap()
    }

    fn sample() -> Vec<Record> {
        let at = "2026-11-25T01:00:00Z".parse().unwrap();
        vec![
            Record::SubmitIntent {
                variant_id: id("a1"),
                at,
            },
            Record::Submitted {
                variant_id: id("a1"),
                task_id: "t1".into(),
                at,
            },
            Record::Track {
                variant_id: id("a1"),
                task_id: "t1".into(),
                entry: TrackEntry {
                    track: 1,
                    audio_id: "x".into(),
                    file: "audio/s/v-1.wav".into(),
                    bytes: 10,
                    sha256: "ab".into(),
                    audio_url: "http://h/1.wav".into(),
                    duration_s: Some(2.5),
                    modified_ns: Some(1_764_000_000_123_456_789),
                },
            },
            Record::Ended {
                variant_id: id("a1"),
                status: EndStatus::Finished,
                error: None,
                at,
            },
        ]
    }

    #[test]
    fn records_round_trip_as_versioned_lines() {
        let text: String = sample().iter().map(encode).collect();
        assert!(
            text.starts_with(r#"{"v":1,"kind":"submit_intent","variant_id":"a1","#),
            "{text}"
        );
        assert_eq!(decode_all(&text, Path::new("j")).unwrap(), sample());
    }

    #[test]
    fn a_torn_last_line_is_dropped() {
        let mut text: String = sample().iter().map(encode).collect();
        text.push_str(r#"{"v":1,"kind":"submitted","varia"#);
        assert_eq!(decode_all(&text, Path::new("j")).unwrap(), sample());
    }

    #[test]
    fn a_damaged_middle_line_or_a_newer_version_is_refused() {
        let lines: Vec<String> = sample().iter().map(encode).collect();
        let damaged = format!("{}garbage\n{}", lines[0], lines[1]);
        let err = decode_all(&damaged, Path::new("j")).unwrap_err();
        assert!(
            matches!(err, JournalError::Corrupt { line: 2, .. }),
            "{err}"
        );
        let newer = format!("{}{{\"v\":2,\"kind\":\"future\"}}\n{}", lines[0], lines[1]);
        let err = decode_all(&newer, Path::new("j")).unwrap_err();
        assert!(
            matches!(
                err,
                JournalError::TooNew {
                    line: 2,
                    version: 2,
                    ..
                }
            ),
            "{err}"
        );
    }
}
