//! The folder's journals folded as they are read: what a run, `plan` and `status` need of
//! the folder's history, without ever holding its records.
//!
//! A folder's journals (the whole folder's, each shard's) are put together run by run in
//! the order of their `seq` (`layout::merge_runs`). Read here in two passes, both
//! streamed: the first finds where each run begins in each journal (a look at each line's
//! kind; only the `run_started` lines are parsed), the second reads the runs in their
//! order, each record folded into [`Folded`] as it is read and then dropped. Memory is
//! the fold (one [`Prior`] per variant) and a few numbers per run; the result is the
//! fold of `merge_runs` over every record, record for record (tested against it).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::format::{decode_each, run_start_of, DecodeError, Record, Tail};
use super::replay::{fold_owned, LineAt, Prior};
use super::stored::TrackStore;
use super::JournalError;
use crate::outcome::UploadedFile;
use crate::variant::VariantId;

/// What the folder's journals say, folded.
#[derive(Debug, Default)]
pub struct Folded {
    /// Every variant the journals name, settled as `replay::replay` gives them (unsettled
    /// while a fold goes on: `checkpoint::open_to_go_on`).
    pub priors: HashMap<VariantId, Prior>,
    /// Where the priors' tracks' entries are.
    pub store: TrackStore,
    /// The latest upload of each file, by API (or bucket) and content hash.
    pub(super) uploads: HashMap<(String, String), UploadedFile>,
    pub(super) last_api: Option<String>,
    pub(super) highest_seq: u64,
    pub(super) shards_used: bool,
    pub(super) records: u64,
}

impl Folded {
    /// Folds one more record in, read from the line `at` of a file of [`Folded::store`]
    /// (its variant's prior stays unsettled until [`Folded::settle`]).
    pub(super) fn take(&mut self, record: Record, at: Option<LineAt>) {
        self.records += 1;
        match record {
            Record::RunStarted { seq, api, .. } => {
                self.highest_seq = self.highest_seq.max(seq);
                if !api.is_empty() {
                    self.last_api = Some(api);
                }
            }
            Record::Uploaded {
                api,
                sha256,
                file_url,
                expires_at,
                ..
            } => {
                let file = UploadedFile {
                    url: file_url,
                    expires_at,
                };
                self.uploads.insert((api, sha256), file);
            }
            Record::ShardsUsed { .. } => self.shards_used = true,
            record => fold_owned(&mut self.priors, record, at),
        }
    }

    pub(super) fn settle(&mut self) {
        for prior in self.priors.values_mut() {
            prior.settle();
        }
    }

    /// The API the journals' last run used, when it says (`replay::last_api`).
    pub fn last_api(&self) -> Option<&str> {
        self.last_api.as_deref()
    }

    /// The latest upload of each file to `api` (`replay::uploads`).
    pub fn uploads(&self, api: &str) -> HashMap<String, UploadedFile> {
        self.uploads
            .iter()
            .filter(|((to, _), _)| to == api)
            .map(|((_, sha256), file)| (sha256.clone(), file.clone()))
            .collect()
    }

    /// The `seq` of a run starting now (`layout::next_seq`).
    pub fn next_seq(&self) -> u64 {
        self.highest_seq + 1
    }

    /// Whether shards have run in the folder (`layout::shards_announced`).
    pub fn shards_announced(&self) -> bool {
        self.shards_used
    }

    /// Whether the journals hold no record at all: a new folder.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }
}

/// Two folds are equal when they say the same, each track compared by its whole entry
/// wherever each fold keeps it (a checkpoint's line, a journal's, memory): the tests'
/// comparison of a fold from a checkpoint with the journals' replay.
#[cfg(test)]
impl PartialEq for Folded {
    fn eq(&self, other: &Self) -> bool {
        self.uploads == other.uploads
            && self.last_api == other.last_api
            && self.highest_seq == other.highest_seq
            && self.shards_used == other.shards_used
            && self.records == other.records
            && self.held_priors() == other.held_priors()
    }
}

#[cfg(test)]
impl Folded {
    /// The priors, each track's entry held: read back from where the fold left it.
    pub fn held_priors(&self) -> HashMap<VariantId, Prior> {
        let hold = |task: &mut super::replay::PriorTask| {
            let entries = self
                .store
                .entries(&task.tracks)
                .expect("the fold's lines read back");
            for (track, entry) in task.tracks.iter_mut().zip(entries) {
                track.details = super::replay::Details::Held(Box::new(entry));
            }
        };
        let mut priors = self.priors.clone();
        for prior in priors.values_mut() {
            prior.task.iter_mut().for_each(hold);
            prior.replaced_task_mut().into_iter().for_each(hold);
        }
        priors
    }
}

/// Where one run's records are in its journal.
#[derive(Clone, Debug)]
pub(super) struct Segment {
    /// Its place among the folder's runs: `seq`, then start (as `merge_runs` orders).
    pub order: (u64, Option<chrono::DateTime<chrono::Utc>>),
    pub journal: usize,
    pub start: u64,
    pub end: u64,
    pub first_line: usize,
    /// The line after its last.
    pub end_line: usize,
    /// It begins with its run's `run_started` (else: records before any start, or the
    /// rest of a run whose beginning was read before `from`).
    pub opens_run: bool,
}

/// How a journal ends, as [`runs_of`] read it.
#[derive(Clone, Copy, Debug)]
pub(super) struct JournalEnd {
    /// Its length.
    pub len: u64,
    /// Empty, or its last byte is a newline: no record is being written at its end.
    pub clean: bool,
}

/// Folds the journals at `paths` (absent ones are skipped), in `merge_runs`' order, from
/// their starts: the tests' reference for what a checkpoint and the tails after it fold.
#[cfg(test)]
pub fn fold_journals(paths: &[std::path::PathBuf]) -> Result<Folded, JournalError> {
    let mut files = Vec::new();
    let mut segments = Vec::new();
    for path in paths {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(cause) => return Err(io(path, cause)),
        };
        let journal = files.len();
        let (runs, _) = runs_of(&file, journal, 0, 1).map_err(|cause| io(path, cause))?;
        segments.extend(runs);
        files.push((path, file));
    }
    // Stable: runs of the same order keep the journals' order, and their own.
    segments.sort_by_key(|segment| segment.order);
    let mut folded = Folded::default();
    let mut sources = Vec::new();
    for (path, file) in &files {
        let kind = super::stored::SourceKind::Journal;
        sources.push(folded.store.add(path, file, kind)?);
    }
    for segment in segments {
        let (path, file) = &files[segment.journal];
        let source = sources[segment.journal];
        read_segment(file, path, &segment, source, |record, at| {
            folded.take(record, at)
        })?;
    }
    folded.settle();
    Ok(folded)
}

/// Hands each record of `segment` of the journal `file` (at `path`, numbered `source` in
/// the fold's store) to `take`, with its line. Returns the bytes of whole lines read (a
/// torn last line, being written, is not).
pub(super) fn read_segment(
    mut file: &File,
    path: &Path,
    segment: &Segment,
    source: u16,
    mut take: impl FnMut(Record, Option<LineAt>),
) -> Result<u64, JournalError> {
    file.seek(SeekFrom::Start(segment.start))
        .map_err(|cause| io(path, cause))?;
    let reader = BufReader::new(file.take(segment.end - segment.start));
    decode_each(reader, path, segment.first_line, |record, span| {
        // A line of 4 GiB or more (none is written so) is held rather than re-read.
        let at = u32::try_from(span.len).ok().map(|len| LineAt {
            offset: segment.start + span.start,
            len,
            source,
            replaced: false,
        });
        take(record, at)
    })
    .map(|(tail, len)| match tail {
        Tail::Torn { keep } => keep,
        _ => len,
    })
    .map_err(|err| match err {
        DecodeError::Journal(err) => err,
        DecodeError::Io(cause) => io(path, cause),
    })
}

pub(super) fn io(path: &Path, cause: std::io::Error) -> JournalError {
    JournalError::Io {
        path: path.to_owned(),
        cause,
    }
}

/// The first pass over one journal, from byte `from` (line `first_line`): where each run
/// begins. Records before the first start (none are written so) count as the oldest run.
pub(super) fn runs_of(
    mut file: &File,
    journal: usize,
    from: u64,
    first_line: usize,
) -> std::io::Result<(Vec<Segment>, JournalEnd)> {
    file.seek(SeekFrom::Start(from))?;
    let mut reader = BufReader::new(file);
    let mut starts = vec![((0, None), from, first_line, false)];
    let (mut offset, mut line) = (from, first_line);
    let mut raw = Vec::new();
    let mut clean = true;
    loop {
        raw.clear();
        let read = reader.read_until(b'\n', &mut raw)?;
        if read == 0 {
            break;
        }
        if let Some(order) = run_start_of(&raw) {
            starts.push((order, offset, line, true));
        }
        clean = raw.ends_with(b"\n");
        offset += read as u64;
        line += 1;
    }
    let end = offset;
    let mut segments = Vec::with_capacity(starts.len());
    for (i, &(order, start, first_line, opens_run)) in starts.iter().enumerate() {
        let (next, end_line) = starts.get(i + 1).map_or((end, line), |s| (s.1, s.2));
        if next > start {
            segments.push(Segment {
                order,
                journal,
                start,
                end: next,
                first_line,
                end_line,
                opens_run,
            });
        }
    }
    Ok((segments, JournalEnd { len: end, clean }))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::folder::layout::{merge_runs, next_seq, shards_announced};
    use crate::journal::format::{encode, Created, EndStatus, TrackEntry};
    use crate::journal::replay::{last_api, replay, uploads};

    fn id(n: u32) -> VariantId {
        serde_json::from_value(serde_json::json!(format!("v{n}"))).unwrap()
    }

    /// A random record, of every kind.
    fn random_record(rng: &mut StdRng) -> Record {
        let at: chrono::DateTime<chrono::Utc> = "2026-11-25T01:00:00Z".parse().unwrap();
        let at = at + chrono::Duration::seconds(rng.random_range(0..100_000));
        let variant_id = id(rng.random_range(0..6));
        match rng.random_range(0..10) {
            0 => Record::RunStarted {
                at,
                seq: rng.random_range(0..4),
                api: ["", "sim", "https://api"][rng.random_range(0..3)].into(),
                pid: 1,
                version: "0".into(),
            },
            1 => Record::SubmitIntent { variant_id, at },
            2 => Record::SubmitWithdrawn { variant_id },
            3 => Record::SubmitFailed {
                variant_id,
                created: [Created::No, Created::Unknown][rng.random_range(0..2)],
                error: "e".into(),
            },
            4 => Record::Submitted {
                variant_id,
                task_id: format!("t{}", rng.random_range(0..3)),
                at,
            },
            5 => Record::Uploaded {
                api: ["sim", "https://api"][rng.random_range(0..2)].into(),
                sha256: format!("s{}", rng.random_range(0..3)),
                file_url: format!("u{}", rng.random_range(0..100)),
                expires_at: at,
                at,
            },
            6 => Record::ShardsUsed { at, shard_count: 2 },
            7 => Record::Track {
                variant_id,
                task_id: format!("t{}", rng.random_range(0..3)),
                entry: TrackEntry::minimal(rng.random_range(1..4), "a", "audio/s/v.wav"),
            },
            _ => Record::Ended {
                variant_id,
                status: [EndStatus::Finished, EndStatus::Failed, EndStatus::Error]
                    [rng.random_range(0..3)],
                error: None,
                at,
            },
        }
    }

    /// Random folders of one to three journals: the streamed fold says what the records,
    /// merged run by run, say.
    #[test]
    fn the_streamed_fold_is_the_fold_of_the_merged_records() {
        let mut rng = StdRng::seed_from_u64(16);
        for case in 0..300 {
            let dir = tempfile::tempdir().unwrap();
            let mut journals = Vec::new();
            let mut paths = Vec::new();
            for j in 0..rng.random_range(1..4) {
                let records: Vec<Record> = (0..rng.random_range(0..40))
                    .map(|_| random_record(&mut rng))
                    .collect();
                let path = dir.path().join(format!("j{j}.jsonl"));
                let mut file = File::create(&path).unwrap();
                for record in &records {
                    file.write_all(encode(record).as_bytes()).unwrap();
                }
                journals.push(records);
                paths.push(path);
            }
            // Now and then a torn last line, which both reads drop.
            if rng.random_bool(0.3) {
                let mut file = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&paths[0])
                    .unwrap();
                file.write_all(b"{\"v\":1,\"kind\":\"ended\",\"vari")
                    .unwrap();
            }
            paths.push(dir.path().join("absent.jsonl"));
            let merged = merge_runs(journals);
            let folded = fold_journals(&paths).unwrap();
            assert_eq!(folded.held_priors(), replay(&merged), "case {case}");
            for prior in folded.priors.values() {
                // Exactly the room the tracks take, each track's entry left in its line.
                for task in prior.task.iter() {
                    assert_eq!(task.tracks.capacity(), task.tracks.len(), "case {case}");
                    for track in &task.tracks {
                        assert!(
                            matches!(track.details, super::super::replay::Details::Stored(_)),
                            "case {case}"
                        );
                    }
                }
            }
            assert_eq!(folded.last_api(), last_api(&merged), "case {case}");
            assert_eq!(folded.next_seq(), next_seq(&merged), "case {case}");
            assert_eq!(folded.shards_announced(), shards_announced(&merged));
            assert_eq!(folded.is_empty(), merged.is_empty(), "case {case}");
            for api in ["sim", "https://api"] {
                assert_eq!(folded.uploads(api), uploads(&merged, api), "case {case}");
            }
        }
    }

    #[test]
    fn a_damaged_line_is_named_by_its_line_in_its_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let started = Record::RunStarted {
            at: "2026-11-25T01:00:00Z".parse().unwrap(),
            seq: 1,
            api: "sim".into(),
            pid: 1,
            version: "0".into(),
        };
        let text = format!(
            "{}{}not json\n{}",
            encode(&started),
            encode(&started),
            encode(&started)
        );
        std::fs::write(&path, text).unwrap();
        let err = fold_journals(&[path]).unwrap_err();
        assert!(
            matches!(err, JournalError::Corrupt { line: 3, .. }),
            "{err}"
        );
    }
}
