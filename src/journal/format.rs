//! The journal's records: one JSON object per line, `{"v":1,"kind":…,…}`.
//!
//! Compatibility: a reader refuses lines of a newer `v` (it cannot know what they mean)
//! and reads every older version it knows. New kinds of record need a new version.
//! A torn last line (a kill during a write, cut anywhere, even inside a UTF-8 character)
//! is dropped on read; a whole last record that only lacks its newline is kept.
//!
//! Readers ignore fields they do not know, so a new *optional* field keeps the version:
//! older readers of version 1 skip it, and newer readers default it when an older writer
//! left it out. That is how a track's quality control (`decoded_s`, `peak_dbfs`, `lufs`,
//! `qc`) joined version 1. A new word in a closed set (a `qc` verdict, a status) needs a
//! new version: a reader of this one would refuse the whole line as damaged.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::JournalError;
use crate::outcome::{TrackRecord, VariantStatus};
use crate::qc::{TrackQc, Verdict};
use crate::variant::VariantId;

/// The newest format version this stembatch reads and writes. Each record is written
/// with the lowest version that holds it ([`Record::version`]), so that an older
/// stembatch still reads a folder unless reading it wrongly would cost money.
pub const VERSION: u32 = 2;

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
    /// Decoded length in seconds (quality control; absent before it existed, and for an
    /// undecodable track).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoded_s: Option<f64>,
    /// Sample peak in dBFS: a number, or `"-inf"` for digital silence (JSON has no
    /// infinity).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "level")]
    pub peak_dbfs: Option<f64>,
    /// Integrated loudness in LUFS: a number, or `"-inf"`.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "level")]
    pub lufs: Option<f64>,
    /// The quality verdict; absent for a track journaled before quality control existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qc: Option<Verdict>,
    /// The waveform the listening page draws, kept so that a folder that grows night after
    /// night is not read whole for its page every night.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<String>,
}

/// A level in dB as journaled: a JSON number, or the string `"-inf"` (silence), since
/// JSON has no infinity and serde_json would write `null` for it.
mod level {
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    const MINUS_INFINITY: &str = "-inf";

    pub(super) fn serialize<S: Serializer>(value: &Option<f64>, out: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) if v.is_finite() => out.serialize_f64(*v),
            Some(v) if *v == f64::NEG_INFINITY => out.serialize_str(MINUS_INFINITY),
            // Never measured (NaN, +inf): as good as absent.
            _ => out.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        input: D,
    ) -> Result<Option<f64>, D::Error> {
        input.deserialize_any(LevelVisitor)
    }

    struct LevelVisitor;

    impl<'de> Visitor<'de> for LevelVisitor {
        type Value = Option<f64>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a level in dB (a number, or \"{MINUS_INFINITY}\")")
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            if v == MINUS_INFINITY {
                Ok(Some(f64::NEG_INFINITY))
            } else {
                Err(E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
}

/// One journal record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// A run began. Journals of one folder (a whole-folder run's, each shard's) are put
    /// together run by run in the order of `seq` (`folder::layout::merge_runs`).
    RunStarted {
        /// When.
        at: DateTime<Utc>,
        /// One more than the highest `seq` in the folder's journals when the run began:
        /// runs are ordered by it rather than by `at`, so that hosts whose clocks differ
        /// never reorder two nights. 0 in records written before it existed.
        #[serde(default)]
        seq: u64,
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
    /// A local stem file was uploaded (or, in `upload.mode = "s3"`, found in the bucket).
    Uploaded {
        /// The API it was uploaded to: a base URL, or [`SIMULATOR`]; or the bucket,
        /// `s3:<endpoint or aws:region>/<bucket>`, whose `file_url` is then `s3://bucket/key`
        /// (never a presigned URL) and whose `expires_at` is how long the record is
        /// trusted without asking the bucket again.
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
    /// Written into the whole-folder journal when shards first run in the folder, as
    /// version 2: a stembatch that knows no shards reads only that journal, and would
    /// submit again every variant the shards paid for; meeting this line, it stops with
    /// "upgrade stembatch" before sending anything.
    ShardsUsed {
        /// When.
        at: DateTime<Utc>,
        /// The shard count of the run that wrote it.
        shard_count: u32,
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

impl Record {
    /// The format version of this record: 1, but for what an older reader must refuse.
    pub fn version(&self) -> u32 {
        match self {
            Record::ShardsUsed { .. } => 2,
            _ => 1,
        }
    }
}

/// The record as one line, with its newline.
pub fn encode(record: &Record) -> String {
    let v = record.version();
    let mut line =
        serde_json::to_string(&LineOut { v, record }).expect("journal records always serialise");
    line.push('\n');
    line
}

/// Every record of a journal's bytes. A damaged last line is a write cut short and is
/// dropped; a damaged line before it is an error.
pub fn decode_all(bytes: impl AsRef<[u8]>, path: &Path) -> Result<Vec<Record>, JournalError> {
    decode(bytes.as_ref(), path).map(|decoded| decoded.records)
}

/// A journal's records and the state of its end.
#[derive(Debug)]
pub(crate) struct Decoded {
    /// Every record, in order.
    pub records: Vec<Record>,
    /// How the file ends.
    pub tail: Tail,
    /// The bytes read.
    pub len: u64,
}

/// How a journal file ends, so that the writer can append after a whole line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Tail {
    /// After a newline (or the file is empty).
    Clean,
    /// The last line is a whole record without its newline: the write was cut between
    /// the two. The record is kept (it may hold a task id that was paid for); the file
    /// needs the newline before anything is appended.
    MissingNewline,
    /// The last line is torn (a write cut short) and is dropped: the file must be cut
    /// back to this many bytes before anything is appended.
    Torn {
        /// The length of the whole lines before it.
        keep: u64,
    },
}

/// Decodes line by line from bytes, so that a tail cut inside a UTF-8 character is a torn
/// line like any other rather than an unreadable file.
pub(crate) fn decode(bytes: &[u8], path: &Path) -> Result<Decoded, JournalError> {
    decode_from(bytes, path).map_err(|err| match err {
        DecodeError::Journal(err) => err,
        DecodeError::Io(cause) => JournalError::Io {
            path: path.to_owned(),
            cause,
        },
    })
}

/// Why a journal could not be read from a reader.
#[derive(Debug)]
pub(crate) enum DecodeError {
    /// The journal is damaged or newer.
    Journal(JournalError),
    /// Reading failed.
    Io(std::io::Error),
}

/// As [`decode`], streamed from `reader` one line at a time: a journal is never held
/// whole in memory beside its records (it grows by some 2 KB a variant).
pub(crate) fn decode_from(
    reader: impl std::io::BufRead,
    path: &Path,
) -> Result<Decoded, DecodeError> {
    let mut records = Vec::new();
    let (tail, len) = decode_each(reader, path, 1, |record, _| records.push(record))?;
    records.shrink_to_fit();
    Ok(Decoded { records, tail, len })
}

/// Decodes `reader` line by line, handing each record to `take` as it is read: nothing
/// is kept. `first_line` is the 1-based number of the reader's first line in its file,
/// for the errors. Returns how the read ends and the bytes read.
pub(crate) fn decode_each(
    mut reader: impl std::io::BufRead,
    path: &Path,
    first_line: usize,
    mut take: impl FnMut(Record, LineSpan),
) -> Result<(Tail, u64), DecodeError> {
    let mut tail = Tail::Clean;
    let mut offset = 0u64;
    let mut raw = Vec::new();
    for line_number in first_line.. {
        raw.clear();
        let read = reader
            .read_until(b'\n', &mut raw)
            .map_err(DecodeError::Io)?;
        if read == 0 {
            break;
        }
        let line_start = offset;
        offset += read as u64;
        // Only the last line can lack its newline: the read stopped at the end.
        let terminated = raw.ends_with(b"\n");
        let line = raw.trim_ascii_end();
        if line.is_empty() && terminated {
            continue;
        }
        match decode_line(line) {
            Ok(record) => {
                take(
                    record,
                    LineSpan {
                        start: line_start,
                        len: read as u64,
                    },
                );
                if !terminated {
                    tail = Tail::MissingNewline;
                }
            }
            Err(LineError::TooNew(version)) => {
                return Err(DecodeError::Journal(JournalError::TooNew {
                    path: path.to_owned(),
                    line: line_number,
                    version,
                }))
            }
            // A kill mid-write leaves the last line cut anywhere, even inside a character,
            // but never with its newline: every record ends with one, written last. A
            // complete line that does not read is damage, and may be a paid task's record.
            Err(LineError::Invalid(_)) if !terminated => {
                tracing::warn!(path = %path.display(), line = line_number, "dropping a torn last journal line");
                tail = Tail::Torn { keep: line_start };
            }
            Err(LineError::Invalid(message)) => {
                return Err(DecodeError::Journal(JournalError::Corrupt {
                    path: path.to_owned(),
                    line: line_number,
                    message,
                }))
            }
        }
    }
    Ok((tail, offset))
}

/// When `line` is a whole [`Record::RunStarted`], its place among runs (`seq`, start);
/// read cheaply: the kind is looked for before anything is parsed.
pub(crate) fn run_start_of(line: &[u8]) -> Option<(u64, Option<DateTime<Utc>>)> {
    const KIND: &[u8] = b"\"kind\":\"run_started\"";
    let head = &line[..line.len().min(32)];
    let written_so = line.starts_with(b"{\"v\":");
    if written_so && !head.windows(KIND.len()).any(|w| w == KIND) {
        return None;
    }
    match decode_line(line.trim_ascii_end()) {
        Ok(Record::RunStarted { seq, at, .. }) => Some((seq, Some(at))),
        _ => None,
    }
}

/// Where a decoded record's line is in what was read: its first byte, and its length
/// with its newline.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LineSpan {
    pub start: u64,
    pub len: u64,
}

/// One line read back (its newline included or not) as a record, or why it is not one.
pub(crate) fn decode_line_of(raw: &[u8]) -> Result<Record, String> {
    decode_line(raw.trim_ascii_end()).map_err(|err| match err {
        LineError::TooNew(version) => {
            format!("has format version {version}, newer than this stembatch")
        }
        LineError::Invalid(message) => message,
    })
}

enum LineError {
    TooNew(u32),
    Invalid(String),
}

fn decode_line(line: &[u8]) -> Result<Record, LineError> {
    let line = std::str::from_utf8(line).map_err(|e| {
        LineError::Invalid(format!(
            "not UTF-8 text: byte {} of the line is invalid",
            e.valid_up_to() + 1
        ))
    })?;
    if line.trim().is_empty() {
        return Err(LineError::Invalid("blank".into()));
    }
    // What `encode` writes starts with the version: a known one is read in one pass (the
    // record's own fields, `v` ignored). Anything else takes the careful path below.
    if let Some(rest) = line.strip_prefix("{\"v\":") {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let known = rest[..digits].parse::<u32>().is_ok_and(|v| v <= VERSION);
        if known && rest[digits..].starts_with(',') {
            if let Ok(record) = serde_json::from_str::<Record>(line) {
                return Ok(record);
            }
        }
    }
    let version: Version =
        serde_json::from_str(line).map_err(|e| LineError::Invalid(e.to_string()))?;
    if version.v > VERSION {
        return Err(LineError::TooNew(version.v));
    }
    let parsed: LineIn =
        serde_json::from_str(line).map_err(|e| LineError::Invalid(e.to_string()))?;
    Ok(parsed.record)
}

/// The records of a variant submitted, answered with `task_id`, its one track `entry`
/// downloaded and ended finished: what tests of folds and read-backs journal.
#[cfg(test)]
pub(crate) fn finished_records(
    variant_id: &VariantId,
    task_id: &str,
    entry: TrackEntry,
    at: DateTime<Utc>,
) -> [Record; 4] {
    [
        Record::SubmitIntent {
            variant_id: variant_id.clone(),
            at,
        },
        Record::Submitted {
            variant_id: variant_id.clone(),
            task_id: task_id.into(),
            at,
        },
        Record::Track {
            variant_id: variant_id.clone(),
            task_id: task_id.into(),
            entry,
        },
        Record::Ended {
            variant_id: variant_id.clone(),
            status: EndStatus::Finished,
            error: None,
            at,
        },
    ]
}

#[cfg(test)]
impl TrackEntry {
    /// A track as the journal holds it with nothing measured: what tests of replay and
    /// of re-runs need.
    pub(crate) fn minimal(track: u32, audio_id: &str, file: &str) -> Self {
        TrackEntry {
            track,
            audio_id: audio_id.into(),
            file: file.into(),
            bytes: 1,
            sha256: "00".into(),
            audio_url: "u".into(),
            duration_s: None,
            modified_ns: None,
            decoded_s: None,
            peak_dbfs: None,
            lufs: None,
            qc: None,
            wave: None,
        }
    }
}

impl From<&TrackRecord> for TrackEntry {
    fn from(track: &TrackRecord) -> Self {
        TrackEntry {
            track: track.number,
            audio_id: track.audio_id.clone(),
            file: track.file.clone(),
            bytes: track.bytes,
            sha256: track.sha256.clone(),
            audio_url: track.audio_url.clone(),
            duration_s: track.duration_s,
            modified_ns: track.modified_ns,
            decoded_s: track.qc.as_ref().and_then(|qc| qc.decoded_s),
            peak_dbfs: track.qc.as_ref().and_then(|qc| qc.peak_dbfs),
            lufs: track.qc.as_ref().and_then(|qc| qc.lufs),
            qc: track.qc.as_ref().map(|qc| qc.verdict),
            wave: track.wave.clone(),
        }
    }
}

impl TrackEntry {
    /// The digest of this track's part of its variant's rows: the one its record gives
    /// (`TrackRecord::row_digest`), computed without making the record.
    pub fn row_digest(&self) -> u64 {
        // Every field named: a new one is shown or not, never forgotten.
        let TrackEntry {
            track,
            audio_id,
            file,
            bytes,
            sha256,
            audio_url,
            duration_s,
            modified_ns: _,
            decoded_s,
            peak_dbfs,
            lufs,
            qc,
            wave: _,
        } = self;
        crate::outcome::digest::track(crate::outcome::digest::TrackShown {
            number: *track,
            audio_id,
            duration_s: *duration_s,
            file,
            bytes: *bytes,
            sha256,
            audio_url,
            // As a record has them: measurements without a verdict are not a result.
            qc: qc.map(|verdict| (*decoded_s, *peak_dbfs, *lufs, verdict)),
        })
    }
}

impl From<TrackEntry> for TrackRecord {
    /// Moves the entry's strings over: a rerun turns every finished track of the folder
    /// into a record, and a copy of each would be the whole folder's tracks twice.
    fn from(entry: TrackEntry) -> Self {
        TrackRecord {
            number: entry.track,
            audio_id: entry.audio_id,
            duration_s: entry.duration_s,
            file: entry.file,
            bytes: entry.bytes,
            sha256: entry.sha256,
            audio_url: entry.audio_url,
            modified_ns: entry.modified_ns,
            wave: entry.wave,
            // The verdict is what says quality control ran; measurements without one are
            // not a result.
            qc: entry.qc.map(|verdict| TrackQc {
                decoded_s: entry.decoded_s,
                peak_dbfs: entry.peak_dbfs,
                lufs: entry.lufs,
                verdict,
            }),
        }
    }
}

impl From<&TrackEntry> for TrackRecord {
    fn from(entry: &TrackEntry) -> Self {
        TrackRecord::from(entry.clone())
    }
}

impl From<EndStatus> for VariantStatus {
    fn from(status: EndStatus) -> Self {
        match status {
            EndStatus::Finished => VariantStatus::Finished,
            EndStatus::Failed => VariantStatus::Failed,
            EndStatus::Timeout => VariantStatus::Timeout,
            EndStatus::Error => VariantStatus::Error,
        }
    }
}

/// Pending has no end record: a variant without one is pending.
impl TryFrom<VariantStatus> for EndStatus {
    type Error = VariantStatus;

    fn try_from(status: VariantStatus) -> Result<Self, VariantStatus> {
        match status {
            VariantStatus::Finished => Ok(EndStatus::Finished),
            VariantStatus::Failed => Ok(EndStatus::Failed),
            VariantStatus::Timeout => Ok(EndStatus::Timeout),
            VariantStatus::Error => Ok(EndStatus::Error),
            VariantStatus::Pending => Err(status),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                    decoded_s: Some(2.5),
                    peak_dbfs: Some(f64::NEG_INFINITY),
                    lufs: Some(f64::NEG_INFINITY),
                    qc: Some(Verdict::Silent),
                    wave: Some("00_V".into()),
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

    /// The one-pass read of what `encode` writes and the careful read of any other
    /// spelling of a line agree, record by record.
    #[test]
    fn the_one_pass_read_agrees_with_the_careful_one() {
        for record in sample() {
            let line = encode(&record);
            let fast = decode_all(&line, Path::new("j")).unwrap();
            // The same object with `v` last: the careful path.
            let prefix = format!("{{\"v\":{},", record.version());
            let body = line.trim_end().strip_prefix(&prefix).unwrap();
            let body = body.strip_suffix('}').unwrap();
            let moved = format!("{{{body},\"v\":{}}}\n", record.version());
            let careful = decode_all(&moved, Path::new("j")).unwrap();
            assert_eq!(fast, std::slice::from_ref(&record));
            assert_eq!(careful, [record]);
        }
        // A newer version is refused, never read by the one-pass path.
        let newer = r#"{"v":99,"kind":"submit_withdrawn","variant_id":"a1"}"#;
        let err = decode_all(format!("{newer}\n"), Path::new("j")).unwrap_err();
        assert!(
            matches!(err, JournalError::TooNew { version: 99, .. }),
            "{err}"
        );
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
    fn quality_control_is_journaled_with_silence_as_minus_inf() {
        let line = encode(&sample()[2]);
        assert!(
            line.contains(r#""decoded_s":2.5,"peak_dbfs":"-inf","lufs":"-inf","qc":"silent""#),
            "{line}"
        );
        let Record::Track { entry, .. } = &sample()[2] else {
            unreachable!()
        };
        let track = TrackRecord::from(entry);
        assert_eq!(
            track.qc,
            Some(TrackQc {
                decoded_s: Some(2.5),
                peak_dbfs: Some(f64::NEG_INFINITY),
                lufs: Some(f64::NEG_INFINITY),
                verdict: Verdict::Silent,
            })
        );
        assert_eq!(&TrackEntry::from(&track), entry);
        let measured = TrackEntry {
            peak_dbfs: Some(-1.94),
            lufs: Some(-16.0),
            qc: Some(Verdict::Ok),
            ..entry.clone()
        };
        let line = encode(&Record::Track {
            variant_id: id("a1"),
            task_id: "t1".into(),
            entry: measured.clone(),
        });
        assert!(
            line.contains(r#""peak_dbfs":-1.94,"lufs":-16.0,"qc":"ok""#),
            "{line}"
        );
        let read = decode_all(&line, Path::new("j")).unwrap();
        assert!(matches!(&read[..], [Record::Track { entry, .. }] if *entry == measured));
        let undecodable = TrackEntry {
            decoded_s: None,
            peak_dbfs: None,
            lufs: None,
            qc: Some(Verdict::Undecodable),
            ..entry.clone()
        };
        let track = TrackRecord::from(&undecodable);
        assert_eq!(track.qc, Some(TrackQc::undecodable()));
        assert_eq!(TrackEntry::from(&track), undecodable);
    }

    /// A line of a stembatch from before quality control reads with none; and since
    /// readers skip fields they do not know, such a stembatch reads the new lines too.
    #[test]
    fn old_track_lines_read_without_qc_and_unknown_fields_are_skipped() {
        let old = r#"{"v":1,"kind":"track","variant_id":"a1","task_id":"t1","track":1,"audio_id":"x","file":"audio/s/v-1.wav","bytes":10,"sha256":"ab","audio_url":"http://h/1.wav","duration_s":2.5}"#;
        let records = decode_all(old, Path::new("j")).unwrap();
        let [Record::Track { entry, .. }] = &records[..] else {
            panic!("{records:?}")
        };
        assert_eq!(
            (entry.qc, entry.decoded_s, entry.peak_dbfs),
            (None, None, None)
        );
        assert_eq!(TrackRecord::from(entry).qc, None);
        let newer = old.replace(
            r#""duration_s":2.5"#,
            r#""duration_s":2.5,"true_peak_dbtp":"-inf","loudness_range":7"#,
        );
        assert_eq!(decode_all(&newer, Path::new("j")).unwrap(), records);
        let unknown_word = old.replace(r#""duration_s":2.5"#, r#""qc":"too_loud""#);
        let err = decode_all(format!("{unknown_word}\n"), Path::new("j")).unwrap_err();
        assert!(
            matches!(err, JournalError::Corrupt { line: 1, .. }),
            "{err}"
        );
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
        let newer = format!("{}{{\"v\":3,\"kind\":\"future\"}}\n{}", lines[0], lines[1]);
        let err = decode_all(&newer, Path::new("j")).unwrap_err();
        assert!(
            matches!(
                err,
                JournalError::TooNew {
                    line: 2,
                    version: 3,
                    ..
                }
            ),
            "{err}"
        );
    }

    /// Only the record an older reader must refuse is written as version 2: every other
    /// stays readable by a stembatch of version 1.
    #[test]
    fn records_are_written_with_the_lowest_version_that_holds_them() {
        for record in sample() {
            assert!(encode(&record).starts_with(r#"{"v":1,"#), "{record:?}");
        }
        let announced = Record::ShardsUsed {
            at: Utc::now(),
            shard_count: 3,
        };
        let line = encode(&announced);
        assert!(line.starts_with(r#"{"v":2,"kind":"shards_used""#), "{line}");
        assert_eq!(decode_all(&line, Path::new("j")).unwrap(), [announced]);
    }

    #[test]
    fn the_corrupt_message_names_the_line_and_keeps_the_journal() {
        let lines: Vec<String> = sample().iter().map(encode).collect();
        let damaged = format!("{}{}garbage\n{}", lines[0], lines[1], lines[2]);
        let err = decode_all(&damaged, Path::new("/out/.stembatch/journal.jsonl")).unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("journal /out/.stembatch/journal.jsonl: line 3 "),
            "{message}"
        );
        assert!(message.contains("delete line 3 by hand"), "{message}");
        assert!(message.contains("do not delete the journal"), "{message}");
        assert!(!message.contains("aside"), "{message}");
        assert!(!message.contains("afresh"), "{message}");
        assert!(!message.ends_with('.'), "{message}");
    }

    /// A line whose write was cut between the two bytes of 'é'.
    fn cut_in_a_character() -> Vec<u8> {
        let whole = encode(&Record::SubmitFailed {
            variant_id: id("a2"),
            created: Created::No,
            error: "réseau".into(),
        });
        let cut = whole.find('é').unwrap() + 1;
        whole.as_bytes()[..cut].to_vec()
    }

    #[test]
    fn a_last_line_torn_inside_a_character_is_dropped_and_marked_for_cutting() {
        let mut bytes: Vec<u8> = sample().iter().map(encode).collect::<String>().into();
        let keep = bytes.len() as u64;
        bytes.extend(cut_in_a_character());
        let decoded = decode(&bytes, Path::new("j")).unwrap();
        assert_eq!(decoded.records, sample());
        assert_eq!(decoded.tail, Tail::Torn { keep });
        assert_eq!(decode_all(&bytes, Path::new("j")).unwrap(), sample());
    }

    #[test]
    fn a_whole_last_record_without_its_newline_is_kept() {
        let mut text: String = sample().iter().map(encode).collect();
        text.pop();
        let decoded = decode(text.as_bytes(), Path::new("j")).unwrap();
        assert_eq!(decoded.records, sample());
        assert_eq!(decoded.tail, Tail::MissingNewline);
    }

    #[test]
    fn invalid_utf8_before_the_last_line_is_corrupt_at_its_line() {
        let lines: Vec<String> = sample().iter().map(encode).collect();
        let mut bytes: Vec<u8> = format!("{}{}", lines[0], lines[1]).into();
        bytes.extend(cut_in_a_character());
        bytes.push(b'\n');
        bytes.extend(lines[2].as_bytes());
        let err = decode_all(&bytes, Path::new("j")).unwrap_err();
        assert!(
            matches!(err, JournalError::Corrupt { line: 3, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("not UTF-8"), "{err}");
        // As the last line too: a line that ends with its newline was written whole, so
        // damage there is corruption (it may be a paid task's record), never a torn tail.
        bytes.truncate(bytes.len() - lines[2].len());
        let err = decode_all(&bytes, Path::new("j")).unwrap_err();
        assert!(
            matches!(err, JournalError::Corrupt { line: 3, .. }),
            "{err}"
        );
    }
}
