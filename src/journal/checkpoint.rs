//! The folder's fold, kept: a checkpoint of what the journals say (`folded::Folded`) as of
//! a known position of each journal, so that opening a folder reads the checkpoint and
//! folds only what the journals hold after those positions, however many nights the
//! folder has seen.
//!
//! It is derived data: the journals stay the record of what was paid for, and whatever is
//! wrong with a checkpoint (missing, torn, older, of a journal since replaced or cut) makes
//! the open fold every journal from its start instead, said in one log line. Deleting one
//! is always safe.
//!
//! The file, `checkpoint.jsonl` in a run's state folder (`.stembatch/` or a shard's
//! folder), is JSON lines: a header (format version, and per journal the bytes and lines
//! it covers with a sha256 of the first and of the last 4 KiB of them), one line per
//! upload and per variant, and an end line with the count and sha256 of the lines before
//! it. It is written whole to a temporary file beside it, fsynced, renamed into place and
//! its folder fsynced: a crash leaves the old checkpoint or the new one, and a torn one
//! (a rename whose data never reached the disk) fails its sha256 and is not used.
//!
//! One writer per file: only the run holding a state folder's lock writes that folder's
//! checkpoint (shards share the output folder over NFS; the rename is the only publish
//! step). A reader takes the usable checkpoint that covers the most.
//!
//! What a checkpoint covers is a prefix of the folder's runs in their fold order (`seq`,
//! then start; see `layout::merge_runs`) made only of runs that can get no more records:
//! a run followed by another in its journal, or the last of a journal whose lock is free
//! (or the writer's own, at the start or the end of its run) and that ends with a whole
//! line. So the runs after it fold after it, in order; the open checks that they do (every
//! run after the covered positions comes after the last covered run) and replays the
//! folder from its start otherwise. The one record appended to an ended run is the
//! `shards_used` line a shard adds to the whole folder's journal; it only sets a flag, so
//! where it is folded changes nothing.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::folded::{io, read_segment, runs_of, Folded, JournalEnd, Segment};
use super::format::{EndStatus, Record, TrackEntry};
use super::replay::{LineAt, Prior, PriorEnd, PriorTask, PriorTrack};
use super::stored::{SourceKind, TrackStore};
use super::{JournalError, JOURNAL_FILE};
use crate::outcome::UploadedFile;
use crate::variant::VariantId;

/// The checkpoint's name in a run's state folder.
pub const FILE_NAME: &str = "checkpoint.jsonl";

/// The format version this stembatch reads and writes. A checkpoint of an older version
/// is not used (the journals are folded whole, and a new checkpoint written); a newer
/// one stops the open: that stembatch's journals may be beyond this one too.
pub const VERSION: u32 = 1;

/// Bytes hashed at each end of what a checkpoint covers of a journal: enough to tell a
/// replaced journal from the one it covered, without reading it.
const HASHED: u64 = 4096;

/// A run's open writes a checkpoint when at least this much of the journals, and a
/// quarter of the loaded checkpoint's size, is newly covered, or when it found no usable
/// checkpoint (a folder of an older release: it is upgraded). The open holds the fold
/// anyway; a run's end would fold the night's journal again, so only a new folder's
/// first run does (`folder::FirstCheckpoint`, [`WriterWhen::Ending`]). Rewriting costs the
/// checkpoint's size, so an old folder's is rewritten every few nights, not every night,
/// and an open folds at most a quarter of its size after it.
pub const OPEN_WRITE_OVER: u64 = 64 << 10;

/// Where a run stands among the folder's runs (as in `layout::merge_runs`).
type RunOrder = (u64, Option<DateTime<Utc>>);

/// What a checkpoint covers of one journal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Covered {
    /// The journal, relative to the state folder (`journal.jsonl`,
    /// `shard-0-of-3/journal.jsonl`).
    journal: String,
    /// Bytes covered from its start: whole lines.
    bytes: u64,
    /// Lines covered.
    lines: usize,
    /// Hex sha256 of the first `min(bytes, 4096)` bytes.
    head: String,
    /// Hex sha256 of the last `min(bytes, 4096)` bytes covered.
    tail: String,
}

/// The first line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Header {
    /// The format version: first, so that it is read whatever follows.
    checkpoint: u32,
    journals: Vec<Covered>,
    /// The last covered run: every run after the covered positions must come after it.
    last_run: Option<RunOrder>,
    highest_seq: u64,
    last_api: Option<String>,
    shards_used: bool,
    records: u64,
}

impl Header {
    fn covered_bytes(&self) -> u64 {
        self.journals.iter().map(|j| j.bytes).sum()
    }

    fn covered(&self, journal: &str) -> (u64, usize) {
        self.journals
            .iter()
            .find(|c| c.journal == journal)
            .map_or((0, 0), |c| (c.bytes, c.lines))
    }
}

#[derive(Deserialize)]
struct VersionOnly {
    checkpoint: u32,
}

/// Every line after the header.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Upload {
        api: String,
        sha256: String,
        url: String,
        expires_at: DateTime<Utc>,
    },
    Prior(Box<PriorLine>),
    /// The last line: how many lines come before it, and their sha256.
    End {
        lines: u64,
        sha256: String,
    },
}

/// A variant's [`Prior`] as the fold left it, unsettled (a submit in flight stays so:
/// the records after the checkpoint may still answer it).
#[derive(Serialize, Deserialize)]
struct PriorLine {
    id: VariantId,
    #[serde(default, skip_serializing_if = "is_zero")]
    attempts: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    unknown_outcomes: u32,
    #[serde(default, skip_serializing_if = "is_false")]
    submit_in_flight: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    last_outcome_unknown: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    task: Option<TaskLine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end: Option<EndLine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    before_intent: Option<(Option<TaskLine>, Option<EndLine>, bool)>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Serialize, Deserialize)]
struct TaskLine {
    task_id: String,
    submitted_at: DateTime<Utc>,
    tracks: Vec<TrackEntry>,
}

#[derive(Serialize, Deserialize)]
struct EndLine {
    status: EndStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    at: DateTime<Utc>,
}

impl TaskLine {
    /// `task` with its tracks' whole entries, read back from `store`.
    fn new(task: &PriorTask, store: &TrackStore) -> Result<Self, JournalError> {
        Ok(TaskLine {
            task_id: task.task_id.clone(),
            submitted_at: task.submitted_at,
            tracks: store.entries(&task.tracks)?,
        })
    }

    /// The task, its tracks kept compact when their entries can stay in the line `at`.
    fn into_task(self, at: Option<LineAt>) -> PriorTask {
        // Exactly the room the tracks take: the fold holds every track of the folder.
        let mut tracks = Vec::with_capacity(self.tracks.len());
        tracks.extend(
            self.tracks
                .into_iter()
                .map(|entry| PriorTrack::new(entry, at)),
        );
        PriorTask {
            task_id: self.task_id,
            submitted_at: self.submitted_at,
            tracks,
        }
    }
}

/// The tracks of the variant's line `raw` of a checkpoint: of the task an open submit
/// replaced when `replaced`, else of its task.
pub(super) fn tracks_in_line(raw: &[u8], replaced: bool) -> Result<Vec<TrackEntry>, String> {
    let prior = match serde_json::from_slice(raw) {
        Ok(Line::Prior(prior)) => prior,
        Ok(_) => return Err("is not a variant's line".into()),
        Err(err) => return Err(format!("is damaged: {err}")),
    };
    let task = match replaced {
        true => prior.before_intent.and_then(|(task, _, _)| task),
        false => prior.task,
    };
    Ok(task.map(|task| task.tracks).unwrap_or_default())
}

impl From<&PriorEnd> for EndLine {
    fn from(end: &PriorEnd) -> Self {
        EndLine {
            status: end.status,
            error: end.error.clone(),
            at: end.at,
        }
    }
}

impl From<EndLine> for PriorEnd {
    fn from(end: EndLine) -> Self {
        PriorEnd {
            status: end.status,
            error: end.error,
            at: end.at,
        }
    }
}

impl PriorLine {
    fn new(id: &VariantId, prior: &Prior, store: &TrackStore) -> Result<Self, JournalError> {
        let task = |task: &Option<PriorTask>| {
            task.as_ref()
                .map(|task| TaskLine::new(task, store))
                .transpose()
        };
        Ok(PriorLine {
            id: id.clone(),
            attempts: prior.attempts,
            unknown_outcomes: prior.unknown_outcomes,
            submit_in_flight: prior.submit_in_flight,
            last_outcome_unknown: prior.last_outcome_unknown,
            task: task(&prior.task)?,
            end: prior.end.as_ref().map(EndLine::from),
            before_intent: match prior.before_intent.as_deref() {
                Some((replaced, end, unknown)) => {
                    Some((task(replaced)?, end.as_ref().map(EndLine::from), *unknown))
                }
                None => None,
            },
        })
    }

    /// The prior, read from the line `at`: its tracks' entries stay there when given.
    fn into_prior(self, at: Option<LineAt>) -> (VariantId, Prior) {
        let replaced = at.map(|at| LineAt {
            replaced: true,
            ..at
        });
        let prior = Prior {
            attempts: self.attempts,
            unknown_outcomes: self.unknown_outcomes,
            submit_in_flight: self.submit_in_flight,
            last_outcome_unknown: self.last_outcome_unknown,
            task: self.task.map(|task| task.into_task(at)),
            end: self.end.map(PriorEnd::from),
            before_intent: self.before_intent.map(|(task, end, unknown)| {
                Box::new((
                    task.map(|task| task.into_task(replaced)),
                    end.map(PriorEnd::from),
                    unknown,
                ))
            }),
        };
        (self.id, prior)
    }
}

/// A run's claim to write its state folder's checkpoint: it holds that folder's lock.
#[derive(Clone, Copy, Debug)]
pub struct Writer<'a> {
    /// The run's state folder (its journal is there, and it holds its lock).
    pub own: &'a Path,
    /// Written only when at least this many journal bytes are newly covered.
    pub over: u64,
    /// Whether no run holds the state folder given (its lock is free): the folder
    /// module's to say, since it owns the locks.
    pub released: fn(&Path) -> bool,
    /// When in its run: what a replay of every journal is told.
    pub when: WriterWhen,
}

/// When in its run a writer writes a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriterWhen {
    /// At its open: a replay of every journal is said to the user, once a night.
    Opening,
    /// At its end, a new folder's first checkpoint: a replay is only noted.
    Ending,
}

/// What [`open`] did.
#[derive(Debug)]
pub struct Opened {
    /// Every journal of the folder, folded: settled, except by [`open_to_go_on`].
    pub folded: Folded,
    /// How far the fold read each journal: its whole lines (a line being written is read
    /// by whoever goes on from there).
    pub read: Vec<(PathBuf, u64)>,
    /// The checkpoint it started from, if one was usable.
    pub used: Option<PathBuf>,
    /// Why each checkpoint found was not used.
    pub not_used: Vec<String>,
    /// The checkpoint it wrote, if it wrote one.
    pub written: Option<PathBuf>,
}

/// One journal of the folder, opened for reading.
struct Journal {
    /// Relative to the state folder.
    name: String,
    /// Its state folder (whose lock its writer holds).
    dir: PathBuf,
    path: PathBuf,
    file: File,
}

/// Opens each journal of `dirs` (state folders; a missing journal is skipped).
fn open_journals(state_dir: &Path, dirs: &[PathBuf]) -> Result<Vec<Journal>, JournalError> {
    let mut journals = Vec::new();
    for dir in dirs {
        let path = dir.join(JOURNAL_FILE);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(cause) => return Err(io(&path, cause)),
        };
        let name = path
            .strip_prefix(state_dir)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        journals.push(Journal {
            name,
            dir: dir.clone(),
            path,
            file,
        });
    }
    Ok(journals)
}

/// Folds every journal of the folder whose state folder is `state_dir` (`dirs`: the state
/// folders of its runs, the whole folder's first, as `layout` lists them): from the best
/// usable checkpoint and the journals' tails after it, else from the journals' starts.
/// With `writer`, writes the writer's checkpoint when it pays; a checkpoint that cannot
/// be written is only warned about (it is derived data).
pub fn open(
    state_dir: &Path,
    dirs: &[PathBuf],
    writer: Option<Writer>,
) -> Result<Opened, JournalError> {
    let mut opened = open_with(state_dir, dirs, writer, writer.map(|w| w.own))?;
    opened.folded.settle();
    Ok(opened)
}

/// As [`open`], without writing, for a fold that goes on with the records written after
/// [`Opened::read`] (a shard's merge of the folder's rows as it runs): unsettled. `own`
/// is the state folder of the run that reads it, whose checkpoint no other run replaces.
pub fn open_to_go_on(
    state_dir: &Path,
    dirs: &[PathBuf],
    own: &Path,
) -> Result<Opened, JournalError> {
    open_with(state_dir, dirs, None, Some(own))
}

/// [`open`], unsettled; `own` as in [`open_to_go_on`] (`None`: a read that ends before
/// any checkpoint can be replaced under it, as `plan` and `status` do).
fn open_with(
    state_dir: &Path,
    dirs: &[PathBuf],
    writer: Option<Writer>,
    own: Option<&Path>,
) -> Result<Opened, JournalError> {
    let journals = open_journals(state_dir, dirs)?;
    let mut not_used = Vec::new();
    let mut start = None;
    // A checkpoint no other run can replace while this one holds its fd: its own, or the
    // whole folder's (a shard holds that lock shared; only a whole-folder run, which
    // takes it alone, writes there). Over NFS a file renamed over by another host's run
    // is gone for this one's fd too, so another shard's is read whole.
    let stable = |path: &Path| {
        own.is_none_or(|own| {
            let dir = path.parent();
            dir == Some(own) || dir == Some(state_dir)
        })
    };
    let mut found = candidates(dirs, &mut not_used)?;
    if writer.is_none() && own.is_some() {
        // A merge that runs as long as its run holds what it reads: a checkpoint whose
        // lines stay where they are first, however much less it covers (the journals'
        // tails after it are folded compact too).
        found.sort_by_key(|(path, _)| !stable(path));
    }
    for (path, header) in found {
        let stable = stable(&path);
        let loaded = check(&header, &journals).and_then(|()| load(&path, &header, stable));
        match loaded {
            Ok(folded) => {
                start = Some((path, header, folded));
                break;
            }
            Err(reason) => not_used.push(format!("{}: {reason}", path.display())),
        }
    }
    let mut used = start.as_ref().map(|(path, _, _)| path.clone());
    let from = start.map(|(_, header, folded)| (header, folded));
    // No usable checkpoint (a folder of an older release, or one that failed its
    // checks): the whole fold is being paid for now, so it is kept, however small.
    let writer = writer.map(|w| match (&from, &used) {
        (Some(_), Some(path)) => {
            let size = std::fs::metadata(path).map_or(0, |m| m.len());
            Writer {
                over: w.over.max(size / 4),
                ..w
            }
        }
        _ => Writer { over: 1, ..w },
    });
    let (folded, read, written) = match fold_tails(&journals, from, writer) {
        Ok(done) => done,
        Err(Stop::Journal(err)) => return Err(err),
        Err(Stop::Untrusted(reason)) => {
            let path = used.take().unwrap_or_default();
            not_used.push(format!("{}: {reason}", path.display()));
            replay(&journals, writer.map(|w| Writer { over: 1, ..w }))?
        }
    };
    if used.is_none() && !journals.is_empty() {
        let why = match not_used.is_empty() {
            true => "none written yet".to_owned(),
            false => not_used.join("; "),
        };
        // Said once a night, by the run's open; a shard's merge and a run's end only
        // note it.
        let said = match (writer, own) {
            (Some(writer), _) => writer.when == WriterWhen::Opening,
            (None, own) => own.is_none(),
        };
        match said {
            true => {
                tracing::info!(folder = %state_dir.display(), "no usable journal checkpoint ({why}): replaying every journal of the folder")
            }
            false => {
                tracing::debug!(folder = %state_dir.display(), "no usable journal checkpoint ({why}): replaying every journal of the folder")
            }
        }
    } else if !not_used.is_empty() {
        tracing::info!(folder = %state_dir.display(), "journal checkpoints not used: {}", not_used.join("; "));
    }
    let read = journals
        .iter()
        .zip(read)
        .map(|(journal, bytes)| (journal.path.clone(), bytes))
        .collect();
    Ok(Opened {
        folded,
        read,
        used,
        not_used,
        written,
    })
}

/// Every journal folded from its start: nothing is taken on trust, so nothing stops it
/// but a journal that cannot be read.
fn replay(journals: &[Journal], writer: Option<Writer>) -> Result<Folding, JournalError> {
    fold_tails(journals, None, writer).map_err(|stop| match stop {
        Stop::Journal(err) => err,
        Stop::Untrusted(reason) => JournalError::Io {
            path: journals
                .first()
                .map_or_else(PathBuf::new, |j| j.path.clone()),
            cause: std::io::Error::other(reason),
        },
    })
}

/// The checkpoints of `dirs` whose header reads, the most covering first; why the others
/// are not used goes to `not_used`. A newer version is an error.
fn candidates(
    dirs: &[PathBuf],
    not_used: &mut Vec<String>,
) -> Result<Vec<(PathBuf, Header)>, JournalError> {
    let mut found = Vec::new();
    for dir in dirs {
        let path = dir.join(FILE_NAME);
        match read_header(&path) {
            Ok(Some(header)) => found.push((path, header)),
            Ok(None) => {}
            Err(HeaderError::TooNew(version)) => {
                return Err(JournalError::CheckpointTooNew { path, version })
            }
            Err(HeaderError::Unusable(reason)) => {
                not_used.push(format!("{}: {reason}", path.display()))
            }
        }
    }
    found.sort_by_key(|(_, header)| std::cmp::Reverse(header.covered_bytes()));
    Ok(found)
}

enum HeaderError {
    TooNew(u32),
    Unusable(String),
}

/// The header of the checkpoint at `path`; `None` when there is none.
fn read_header(path: &Path) -> Result<Option<Header>, HeaderError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(HeaderError::Unusable(format!("cannot be read: {err}"))),
    };
    let mut line = Vec::new();
    BufReader::new(file)
        .read_until(b'\n', &mut line)
        .map_err(|err| HeaderError::Unusable(format!("cannot be read: {err}")))?;
    if !line.ends_with(b"\n") {
        return Err(HeaderError::Unusable(
            "torn: its header is cut short".into(),
        ));
    }
    let version: VersionOnly = serde_json::from_slice(&line)
        .map_err(|err| HeaderError::Unusable(format!("line 1 is not its header: {err}")))?;
    if version.checkpoint > VERSION {
        return Err(HeaderError::TooNew(version.checkpoint));
    }
    if version.checkpoint < VERSION {
        return Err(HeaderError::Unusable(format!(
            "format version {} is older than this stembatch's ({VERSION}): rebuilt from the journals",
            version.checkpoint
        )));
    }
    serde_json::from_slice(&line)
        .map(Some)
        .map_err(|err| HeaderError::Unusable(format!("line 1, its header: {err}")))
}

/// Why `header` does not describe the journals as they are now, if it does not: every
/// journal it covers must still hold what it covered (at least as long, the same bytes
/// at both ends of the covered part).
fn check(header: &Header, journals: &[Journal]) -> Result<(), String> {
    for covered in header.journals.iter().filter(|c| c.bytes > 0) {
        let Some(journal) = journals.iter().find(|j| j.name == covered.journal) else {
            return Err(format!("journal {} is gone", covered.journal));
        };
        let len = journal
            .file
            .metadata()
            .map_err(|err| format!("journal {}: {err}", covered.journal))?
            .len();
        if len < covered.bytes {
            return Err(format!(
                "journal {} holds {len} bytes, fewer than the {} it covered: it was cut or replaced",
                covered.journal, covered.bytes
            ));
        }
        let (head, tail) = end_hashes(&journal.file, covered.bytes)
            .map_err(|err| format!("journal {}: {err}", covered.journal))?;
        if head != covered.head || tail != covered.tail {
            return Err(format!(
                "journal {} is not the one it covered: it was replaced",
                covered.journal
            ));
        }
    }
    Ok(())
}

/// The sha256 of the first and of the last [`HASHED`] bytes of the first `bytes` of `file`.
fn end_hashes(file: &File, bytes: u64) -> std::io::Result<(String, String)> {
    let n = bytes.min(HASHED);
    let hash = |at: u64| -> std::io::Result<String> {
        let mut buf = vec![0; n as usize];
        file.read_exact_at(&mut buf, at)?;
        Ok(hex::encode(Sha256::digest(&buf)))
    };
    Ok((hash(0)?, hash(bytes - n)?))
}

/// Reads the whole checkpoint at `path` (whose header is `header`): the fold it holds,
/// unsettled, or why it cannot be used. Its tracks' entries stay in its lines when it is
/// `stable` (see [`open`]), else they are held.
fn load(path: &Path, header: &Header, stable: bool) -> Result<Folded, String> {
    let file = File::open(path).map_err(|err| format!("cannot be read: {err}"))?;
    let mut folded = Folded {
        last_api: header.last_api.clone(),
        highest_seq: header.highest_seq,
        shards_used: header.shards_used,
        records: header.records,
        ..Folded::default()
    };
    let source = folded
        .store
        .add(path, &file, SourceKind::Checkpoint)
        .map_err(|err| err.to_string())?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut hash = Sha256::new();
    let mut raw = Vec::new();
    let mut lines = 0u64;
    let mut offset = 0u64;
    loop {
        raw.clear();
        let read = reader
            .read_until(b'\n', &mut raw)
            .map_err(|err| format!("cannot be read: {err}"))?;
        if read == 0 || !raw.ends_with(b"\n") {
            return Err("torn: its end line is missing".into());
        }
        let at = LineAt {
            offset,
            len: u32::try_from(read).map_err(|_| format!("line {} is too long", lines + 1))?,
            source,
            replaced: false,
        };
        let at = stable.then_some(at);
        offset += read as u64;
        lines += 1;
        if lines == 1 {
            // Another writer may have renamed a new checkpoint in since the header was
            // read: the positions and the body must be one file's.
            let same = serde_json::from_slice::<Header>(&raw).is_ok_and(|h| h == *header);
            if !same {
                return Err("it changed while it was read".into());
            }
            hash.update(&raw);
            continue;
        }
        let line: Line = serde_json::from_slice(&raw)
            .map_err(|err| format!("line {lines} is damaged: {err}"))?;
        match line {
            Line::Upload {
                api,
                sha256,
                url,
                expires_at,
            } => {
                let file = UploadedFile { url, expires_at };
                folded.uploads.insert((api, sha256), file);
            }
            Line::Prior(prior) => {
                let (id, prior) = prior.into_prior(at);
                folded.priors.insert(id, prior);
            }
            Line::End {
                lines: count,
                sha256,
            } => {
                let whole = count == lines - 1 && sha256 == hex::encode(hash.finalize());
                let rest = reader
                    .fill_buf()
                    .map_err(|err| format!("cannot be read: {err}"))?;
                if !whole || !rest.is_empty() {
                    return Err("damaged: its end line does not match the lines before it".into());
                }
                folded.priors.shrink_to_fit();
                return Ok(folded);
            }
        }
        hash.update(&raw);
    }
}

/// Why a fold from a checkpoint stopped.
enum Stop {
    /// A journal cannot be read.
    Journal(JournalError),
    /// The journals after the checkpoint do not follow it: replay from the start.
    Untrusted(String),
}

/// A fold of the journals, unsettled: the fold, how far it read each journal, and the
/// checkpoint it wrote.
type Folding = (Folded, Vec<u64>, Option<PathBuf>);

/// Folds the journals after what `from` covers (from their starts without it), in the
/// folder's run order, unsettled; with `writer`, writes the writer's checkpoint at the
/// end of the runs that can get no more records, when it pays.
fn fold_tails(
    journals: &[Journal],
    from: Option<(Header, Folded)>,
    writer: Option<Writer>,
) -> Result<Folding, Stop> {
    let (header, mut folded) = match from {
        Some((header, folded)) => (Some(header), folded),
        None => (None, Folded::default()),
    };
    let mut sources = Vec::with_capacity(journals.len());
    for journal in journals {
        let source = folded
            .store
            .add(&journal.path, &journal.file, SourceKind::Journal)
            .map_err(Stop::Journal)?;
        sources.push(source);
    }
    let last_run = header.as_ref().and_then(|h| h.last_run);
    // Whether each journal's run has let go of it, asked before its length is measured
    // and again after: a shard that ended in between appended records after the measure,
    // and a checkpoint that took its last run for ended would be refused by the next
    // open (the records after it look appended to a covered run).
    let let_go = |journal: &Journal| {
        writer.is_some_and(|w| journal.dir == w.own || (w.released)(&journal.dir))
    };
    let free_before: Vec<bool> = match writer {
        Some(_) => journals.iter().map(let_go).collect(),
        None => Vec::new(),
    };
    let mut segments: Vec<(bool, Segment)> = Vec::new();
    let mut ends: Vec<JournalEnd> = Vec::new();
    let mut covered: Vec<(u64, usize)> = Vec::new();
    for (index, journal) in journals.iter().enumerate() {
        let (bytes, lines) = header.as_ref().map_or((0, 0), |h| h.covered(&journal.name));
        let (runs, end) = runs_of(&journal.file, index, bytes, lines + 1)
            .map_err(|cause| Stop::Journal(io(&journal.path, cause)))?;
        for segment in runs {
            // Records outside any run after a checkpoint: the rest of a run it covered,
            // or a journal's first lines. Only `shards_used` lines are written so.
            let loose = header.is_some() && !segment.opens_run;
            if !loose && last_run.is_some_and(|last| segment.order <= last) {
                return Err(Stop::Untrusted(format!(
                    "journal {} holds, after what it covered, a run that folds before its last",
                    journal.name
                )));
            }
            segments.push((loose, segment));
        }
        ends.push(end);
        covered.push((bytes, lines));
    }
    // Stable: runs of one order keep the journals' order, and their own. Loose records
    // (`shards_used` lines) first: they fold the same anywhere.
    segments.sort_by_key(|(loose, segment)| (!*loose, segment.order));
    let start = covered.clone();
    let mut boundary = 0;
    let mut new_last = last_run;
    if writer.is_some() {
        let closed: Vec<bool> = journals
            .iter()
            .zip(&free_before)
            .map(|(journal, before)| *before && let_go(journal))
            .collect();
        for (_, segment) in &segments {
            let j = segment.journal;
            let end = ends[j];
            let last_of_journal = segment.end == end.len;
            let ended = !last_of_journal || (end.clean && closed[j]);
            if segment.start != covered[j].0 || !ended {
                break;
            }
            covered[j] = (segment.end, segment.end_line - 1);
            if segment.opens_run {
                new_last = new_last.max(Some(segment.order));
            }
            boundary += 1;
        }
    }
    let mut read: Vec<u64> = start.iter().map(|(bytes, _)| *bytes).collect();
    let newly: u64 = covered.iter().zip(&start).map(|(c, s)| c.0 - s.0).sum();
    let write_at = writer.filter(|w| boundary > 0 && newly >= w.over.max(1));
    let mut written = None;
    for (i, (loose, segment)) in segments.iter().enumerate() {
        if i == boundary {
            if let Some(writer) = write_at {
                written = write_or_warn(writer.own, journals, &covered, new_last, &folded);
            }
        }
        let journal = &journals[segment.journal];
        let mut foreign = false;
        let source = sources[segment.journal];
        let whole = read_segment(
            &journal.file,
            &journal.path,
            segment,
            source,
            |record, at| {
                foreign |= *loose && !matches!(record, Record::ShardsUsed { .. });
                folded.take(record, at);
            },
        )
        .map_err(Stop::Journal)?;
        let read_to = &mut read[segment.journal];
        *read_to = (*read_to).max(segment.start + whole);
        if foreign {
            return Err(Stop::Untrusted(format!(
                "journal {} has records outside any run after what it covered (appended to a run it covered as ended?)",
                journal.name
            )));
        }
    }
    if boundary == segments.len() {
        if let Some(writer) = write_at {
            written = write_or_warn(writer.own, journals, &covered, new_last, &folded);
        }
    }
    Ok((folded, read, written))
}

fn write_or_warn(
    own: &Path,
    journals: &[Journal],
    covered: &[(u64, usize)],
    last_run: Option<RunOrder>,
    folded: &Folded,
) -> Option<PathBuf> {
    match write(own, journals, covered, last_run, folded) {
        Ok(path) => {
            tracing::debug!(checkpoint = %path.display(), variants = folded.priors.len(), "journal checkpoint written");
            Some(path)
        }
        Err(err) => {
            tracing::warn!(folder = %own.display(), error = %err, "cannot write the journal checkpoint: the next run replays the journals instead");
            None
        }
    }
}

/// The lines written so far, and their sha256.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    lines: u64,
}

impl<W: std::io::Write> Hashing<W> {
    fn line(&mut self, value: &impl Serialize) -> std::io::Result<()> {
        let mut bytes = serde_json::to_vec(value)?;
        bytes.push(b'\n');
        self.hash.update(&bytes);
        self.lines += 1;
        self.inner.write_all(&bytes)
    }
}

/// Writes `folded` (unsettled, as of the `covered` positions of `journals`) as the
/// checkpoint of the state folder `own`, atomically.
fn write(
    own: &Path,
    journals: &[Journal],
    covered: &[(u64, usize)],
    last_run: Option<RunOrder>,
    folded: &Folded,
) -> std::io::Result<PathBuf> {
    let mut covers = Vec::new();
    for (journal, &(bytes, lines)) in journals.iter().zip(covered) {
        if bytes == 0 {
            continue;
        }
        let (head, tail) = end_hashes(&journal.file, bytes)?;
        covers.push(Covered {
            journal: journal.name.clone(),
            bytes,
            lines,
            head,
            tail,
        });
    }
    let header = Header {
        checkpoint: VERSION,
        journals: covers,
        last_run,
        highest_seq: folded.highest_seq,
        last_api: folded.last_api.clone(),
        shards_used: folded.shards_used,
        records: folded.records,
    };
    let mut temp = tempfile::Builder::new()
        .prefix(crate::output_files::CHECKPOINT_TEMP.0)
        .suffix(crate::output_files::CHECKPOINT_TEMP.1)
        .tempfile_in(own)?;
    // Readable as the journals are: shards run by other users of a shared folder read it.
    temp.as_file()
        .set_permissions(crate::output_files::permissions())?;
    {
        let mut out = Hashing {
            inner: BufWriter::with_capacity(1 << 16, temp.as_file_mut()),
            hash: Sha256::new(),
            lines: 0,
        };
        out.line(&header)?;
        for ((api, sha256), file) in &folded.uploads {
            out.line(&Line::Upload {
                api: api.clone(),
                sha256: sha256.clone(),
                url: file.url.clone(),
                expires_at: file.expires_at,
            })?;
        }
        for (id, prior) in &folded.priors {
            let line = PriorLine::new(id, prior, &folded.store).map_err(std::io::Error::other)?;
            out.line(&Line::Prior(Box::new(line)))?;
        }
        let end = Line::End {
            lines: out.lines,
            sha256: hex::encode(out.hash.finalize_reset()),
        };
        out.line(&end)?;
        out.inner.flush()?;
    }
    let path = own.join(FILE_NAME);
    crate::output_files::persist_durably(temp, &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests;
