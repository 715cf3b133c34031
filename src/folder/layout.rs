//! Where the runs of one output folder keep their state, and how a run reads what all of
//! them wrote. A whole-folder run keeps `DIR/.stembatch/{journal.jsonl,lock}`; shard I of
//! N keeps its own in `DIR/.stembatch/shard-I-of-N/` (journal, lock, and its part of
//! `results.csv`), so that shards sharing a folder never write the same file.
//!
//! A run writes only its own journal but reads every journal of the folder: a variant's
//! identity is its id, not the shard that ran it, so a folder run with another shard count
//! (or none) tomorrow still knows every task paid for tonight. The journals are put
//! together run by run ([`merge_runs`], pure): each run's records stay in their order, and
//! runs are ordered by when they started.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::lock::{self, LockState};
use crate::journal::format::{decode_from, DecodeError, Record};
use crate::journal::{state_dir, JournalError, JOURNAL_FILE};
use crate::shard::Shard;

/// Inside the state folder: the shard count of the last sharded run, which says which
/// parts `report` merges. A whole-folder run removes it. One JSON object,
/// `{"v":1,"shard_count":N}`.
pub const SHARDS_FILE: &str = "shards";
/// The version of [`SHARDS_FILE`]'s format.
const LAYOUT_VERSION: u32 = 1;

/// What [`SHARDS_FILE`] holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct Layout {
    v: u32,
    shard_count: u32,
}

/// The state folder of a run: `DIR/.stembatch`, or `DIR/.stembatch/shard-I-of-N`.
pub fn run_dir(out_dir: &Path, shard: Option<Shard>) -> PathBuf {
    match shard {
        None => state_dir(out_dir),
        Some(shard) => state_dir(out_dir).join(shard.dir_name()),
    }
}

/// Every shard folder under `DIR/.stembatch`, by shard count then index.
pub fn shard_dirs(out_dir: &Path) -> std::io::Result<Vec<(Shard, PathBuf)>> {
    let mut dirs = Vec::new();
    let entries = match std::fs::read_dir(state_dir(out_dir)) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(dirs),
        Err(err) => return Err(err),
    };
    for entry in entries {
        let entry = entry?;
        let shard = entry.file_name().to_str().and_then(Shard::from_dir_name);
        if let Some(shard) = shard.filter(|_| entry.path().is_dir()) {
            dirs.push((shard, entry.path()));
        }
    }
    dirs.sort_by_key(|(shard, _)| (shard.count(), shard.index()));
    Ok(dirs)
}

/// The state folders of every run layout the folder has seen: the whole folder's first.
fn all_run_dirs(out_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut dirs = vec![state_dir(out_dir)];
    dirs.extend(shard_dirs(out_dir)?.into_iter().map(|(_, dir)| dir));
    Ok(dirs)
}

/// Every journal of the folder but `own` (the one the run opened for writing), read and
/// never written. A journal another run is writing right now ends, at worst, in a line cut
/// short, which is dropped like any torn tail.
pub fn read_other_journals(
    out_dir: &Path,
    own: Option<&Path>,
) -> Result<Vec<Vec<Record>>, JournalError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |cause| JournalError::Io { path, cause }
    };
    let dirs = all_run_dirs(out_dir).map_err(io(&state_dir(out_dir)))?;
    let mut journals = Vec::new();
    for path in dirs.iter().map(|dir| dir.join(JOURNAL_FILE)) {
        if Some(path.as_path()) == own {
            continue;
        }
        match std::fs::File::open(&path) {
            Ok(file) => match decode_from(std::io::BufReader::new(file), &path) {
                Ok(decoded) => journals.push(decoded.records),
                Err(DecodeError::Journal(err)) => return Err(err),
                Err(DecodeError::Io(cause)) => return Err(io(&path)(cause)),
            },
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(io(&path)(err)),
        }
    }
    Ok(journals)
}

/// Every journal of the folder folded, in the order [`read_all`] puts their records in:
/// from the best usable checkpoint and the journals' tails after it
/// (`journal::checkpoint`), reading only.
pub fn fold_all(out_dir: &Path) -> Result<crate::journal::folded::Folded, JournalError> {
    fold_all_writing(out_dir, None).map(|opened| opened.folded)
}

/// [`fold_all`] by the run holding the lock of `writer.own`, which writes that folder's
/// checkpoint when it pays.
pub fn fold_all_writing(
    out_dir: &Path,
    writer: Option<crate::journal::checkpoint::Writer>,
) -> Result<crate::journal::checkpoint::Opened, JournalError> {
    let dirs = all_run_dirs(out_dir).map_err(|cause| JournalError::Io {
        path: state_dir(out_dir),
        cause,
    })?;
    crate::journal::checkpoint::open(&state_dir(out_dir), &dirs, writer)
}

/// [`fold_all`] unsettled, to go on with the records written after it by a
/// [`JournalCursors`] that starts where it stopped: a shard's merge of the folder's rows.
/// `own` is the shard's state folder.
pub fn fold_all_to_go_on(
    out_dir: &Path,
    own: &Path,
) -> Result<(crate::journal::folded::Folded, JournalCursors), JournalError> {
    let dirs = all_run_dirs(out_dir).map_err(|cause| JournalError::Io {
        path: state_dir(out_dir),
        cause,
    })?;
    let opened = crate::journal::checkpoint::open_to_go_on(&state_dir(out_dir), &dirs, own)?;
    let cursors = JournalCursors {
        read: opened.read.into_iter().collect(),
        primed: true,
    };
    Ok((opened.folded, cursors))
}

/// Every journal of the folder, put together run by run.
pub fn read_all(out_dir: &Path) -> Result<Vec<Record>, JournalError> {
    Ok(merge_runs(read_other_journals(out_dir, None)?))
}

/// What [`JournalCursors::read_new`] found.
#[derive(Debug)]
pub enum NewRecords {
    /// Every record of the folder, put together run by run ([`merge_runs`]): the first
    /// read, or a journal was rewritten since the last (the caller starts over).
    All(Vec<Record>),
    /// The records appended since the last read, journal by journal. Runs that write
    /// while others do are sibling shards, whose variants differ: the order between two
    /// journals' new records changes no variant's fold.
    Since(Vec<Record>),
}

/// Reads the folder's journals from where it last stopped, so that a shard that merges
/// the folder's results as it goes reads each record once, not the folder's whole
/// history on every tick.
#[derive(Debug, Default)]
pub struct JournalCursors {
    /// Per journal, the bytes of whole lines read.
    read: std::collections::HashMap<PathBuf, u64>,
    primed: bool,
}

impl JournalCursors {
    /// Whether a read has started (the next one gives what was appended since).
    pub fn primed(&self) -> bool {
        self.primed
    }

    /// The records written since the last call (see [`NewRecords`]).
    pub fn read_new(&mut self, out_dir: &Path) -> Result<NewRecords, JournalError> {
        use std::io::{BufReader, Seek, SeekFrom};
        let dirs = all_run_dirs(out_dir).map_err(|cause| JournalError::Io {
            path: state_dir(out_dir),
            cause,
        })?;
        let mut journals = Vec::new();
        let mut rewritten = false;
        for path in dirs.iter().map(|dir| dir.join(JOURNAL_FILE)) {
            let io = |cause| JournalError::Io {
                path: path.clone(),
                cause,
            };
            let mut file = match std::fs::File::open(&path) {
                Ok(file) => file,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => return Err(io(err)),
            };
            let len = file.metadata().map_err(io)?.len();
            let from = self.read.get(&path).copied().unwrap_or(0);
            let from = match len < from {
                true => {
                    rewritten = true;
                    0
                }
                false => from,
            };
            file.seek(SeekFrom::Start(from)).map_err(io)?;
            let decoded = match decode_from(BufReader::new(file), &path) {
                Ok(decoded) => decoded,
                Err(DecodeError::Journal(err)) => return Err(err),
                Err(DecodeError::Io(cause)) => return Err(io(cause)),
            };
            // A line another run is writing now is read, whole, next time.
            let whole = match decoded.tail {
                crate::journal::format::Tail::Torn { keep } => keep,
                _ => decoded.len,
            };
            self.read.insert(path, from + whole);
            journals.push(decoded.records);
        }
        if rewritten {
            self.read.clear();
            self.primed = false;
            return self.read_new(out_dir);
        }
        match std::mem::replace(&mut self.primed, true) {
            false => Ok(NewRecords::All(merge_runs(journals))),
            true => Ok(NewRecords::Since(journals.into_iter().flatten().collect())),
        }
    }
}

/// When any journal of the folder was last written; `None` when there is none.
pub fn newest_journal_time(out_dir: &Path) -> std::io::Result<Option<SystemTime>> {
    let mut newest = None;
    for path in all_run_dirs(out_dir)?.iter().map(|d| d.join(JOURNAL_FILE)) {
        match std::fs::metadata(&path).and_then(|m| m.modified()) {
            Ok(time) => newest = newest.max(Some(time)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    Ok(newest)
}

/// Where a run stands among the folder's runs: its `seq`, then its start time (which
/// orders only runs written before `seq` existed, all 0).
type RunOrder = (u64, Option<chrono::DateTime<chrono::Utc>>);

/// Several journals as one: each split into its runs (a run begins at its `RunStarted`),
/// the runs ordered by their `seq` (then start), each run's records in their own order.
/// Runs of one night's shards share a `seq` and interleave in time, but they hold
/// different variants, so their order says nothing about any variant; a variant's runs
/// on different nights are in order, whatever the hosts' clocks say.
pub fn merge_runs(journals: Vec<Vec<Record>>) -> Vec<Record> {
    let mut runs: Vec<(RunOrder, Vec<Record>)> = Vec::new();
    for journal in journals {
        for record in journal {
            match &record {
                Record::RunStarted { at, seq, .. } => runs.push(((*seq, Some(*at)), vec![record])),
                // Records before any start (none are written so) count as the oldest run.
                _ => match runs.last_mut() {
                    Some((_, run)) => run.push(record),
                    None => runs.push(((0, None), vec![record])),
                },
            }
        }
        // A journal's records never continue the last run of the journal before it.
        runs.push(((0, None), Vec::new()));
    }
    // Stable: runs of the same order keep the journals' order.
    runs.sort_by_key(|(order, _)| *order);
    runs.into_iter().flat_map(|(_, run)| run).collect()
}

/// The `seq` of a run starting now, after every run in `records`.
pub fn next_seq(records: &[Record]) -> u64 {
    let highest = records
        .iter()
        .filter_map(|record| match record {
            Record::RunStarted { seq, .. } => Some(*seq),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    // Runs written before `seq` existed count as 0: their successor must come after all
    // of them.
    highest + 1
}

/// Whether shards have run in the folder: the whole-folder journal says so to older
/// stembatch versions (see [`Record::ShardsUsed`]).
pub fn shards_announced(records: &[Record]) -> bool {
    records
        .iter()
        .any(|record| matches!(record, Record::ShardsUsed { .. }))
}

/// The runs holding a lock of this folder other than the one in `own` (a run's state
/// folder): their state folders and holders.
pub fn other_live_runs(out_dir: &Path, own: &Path) -> std::io::Result<Vec<(PathBuf, LockState)>> {
    let mut live = Vec::new();
    for dir in all_run_dirs(out_dir)? {
        if dir == own {
            continue;
        }
        match lock::holder(&dir) {
            Ok(LockState::Free) => {}
            Ok(held) => live.push((dir, held)),
            Err(err) => return Err(std::io::Error::other(err)),
        }
    }
    Ok(live)
}

/// Records the layout of the run starting now: the shard count, or none for a
/// whole-folder run.
pub fn write_layout(out_dir: &Path, shard: Option<Shard>) -> std::io::Result<()> {
    let path = state_dir(out_dir).join(SHARDS_FILE);
    match shard {
        // A removal must survive too: a layout back after a power loss would merge shards
        // that a whole-folder run has replaced.
        None => match std::fs::remove_file(&path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
            Err(_) => Ok(()),
            Ok(()) => crate::output_files::sync_parent(&path),
        },
        Some(shard) => {
            let layout = Layout {
                v: LAYOUT_VERSION,
                shard_count: shard.count(),
            };
            let mut temp = tempfile::Builder::new()
                .prefix(crate::output_files::LAYOUT_TEMP.0)
                .suffix(crate::output_files::LAYOUT_TEMP.1)
                .tempfile_in(state_dir(out_dir))?;
            serde_json::to_writer(&mut temp, &layout)?;
            crate::output_files::persist_durably(temp, &path)?;
            Ok(())
        }
    }
}

/// The shard count the last sharded run wrote, unless a whole-folder run came after it.
/// A file of a newer format is not read: `report` then leaves `results.csv` as it is.
pub fn read_layout(out_dir: &Path) -> Option<u32> {
    let text = std::fs::read(state_dir(out_dir).join(SHARDS_FILE)).ok()?;
    let layout: Layout = serde_json::from_slice(&text).ok()?;
    (layout.v <= LAYOUT_VERSION && layout.shard_count > 0).then_some(layout.shard_count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    /// A run started at `hour` by a stembatch from before `seq`.
    fn started(hour: u32) -> Record {
        started_seq(0, hour)
    }

    fn started_seq(seq: u64, hour: u32) -> Record {
        Record::RunStarted {
            at: Utc.with_ymd_and_hms(2026, 11, 1, hour, 0, 0).unwrap(),
            seq,
            api: "sim".into(),
            pid: hour,
            version: "t".into(),
        }
    }

    fn tasks(records: &[Record]) -> Vec<&str> {
        records
            .iter()
            .filter_map(|r| match r {
                Record::Submitted { task_id, .. } => Some(task_id.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn runs_follow_their_seq_whatever_the_hosts_clocks_say() {
        // Night 1 on a host whose clock is right; night 2 on a host 5 hours behind.
        let host_a = vec![started_seq(1, 9), submitted("a", "night 1")];
        let host_b = vec![started_seq(2, 4), submitted("a", "night 2")];
        let merged = merge_runs(vec![host_b, host_a]);
        assert_eq!(tasks(&merged), ["night 1", "night 2"]);
        assert_eq!(next_seq(&merged), 3);
        // Runs from before seq came first, ordered by time among themselves.
        let old = vec![
            started(23),
            submitted("a", "old 2"),
            started(22),
            submitted("a", "old 1"),
        ];
        let merged = merge_runs(vec![vec![started_seq(1, 1), submitted("a", "new")], old]);
        assert_eq!(tasks(&merged), ["old 1", "old 2", "new"]);
        assert_eq!(next_seq(&[]), 1);
    }

    fn submitted(id: &str, task: &str) -> Record {
        Record::Submitted {
            variant_id: serde_json::from_value(serde_json::json!(id)).unwrap(),
            task_id: task.into(),
            at: Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
        }
    }

    #[test]
    fn runs_are_ordered_by_their_start_and_keep_their_own_order() {
        // Night 1 whole (01:00), night 2 sharded (02:00, 03:00), night 3 whole again (04:00):
        // the whole folder's journal holds nights 1 and 3, the shards' journals night 2.
        let whole = vec![
            started(1),
            submitted("a", "t1"),
            started(4),
            submitted("a", "t4"),
        ];
        let shard0 = vec![started(2), submitted("a", "t2"), submitted("b", "t2b")];
        let shard1 = vec![started(3), submitted("c", "t3")];
        let merged = merge_runs(vec![whole, shard1, shard0]);
        assert_eq!(tasks(&merged), ["t1", "t2", "t2b", "t3", "t4"]);
        assert_eq!(merged.len(), 9);
    }

    #[test]
    fn records_before_any_start_count_as_the_oldest_run_of_their_own_journal() {
        let legacy = vec![submitted("a", "old")];
        let later = vec![started(5), submitted("a", "new")];
        let merged = merge_runs(vec![later, legacy]);
        assert_eq!(merged.last(), Some(&submitted("a", "new")));
    }

    #[test]
    fn the_layout_file_says_the_last_sharded_count_until_a_whole_run_removes_it() {
        let out = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(state_dir(out.path())).unwrap();
        assert_eq!(read_layout(out.path()), None);
        let shard = Shard::new(1, 3, "test").unwrap();
        write_layout(out.path(), Some(shard)).unwrap();
        assert_eq!(read_layout(out.path()), Some(3));
        write_layout(out.path(), None).unwrap();
        assert_eq!(read_layout(out.path()), None);
        write_layout(out.path(), None).unwrap();
    }

    #[test]
    fn shard_folders_are_found_and_other_files_ignored() {
        let out = tempfile::tempdir().unwrap();
        let state = state_dir(out.path());
        for name in [
            "shard-1-of-3",
            "shard-0-of-3",
            "shard-0-of-2",
            "shard-x-of-3",
        ] {
            std::fs::create_dir_all(state.join(name)).unwrap();
        }
        std::fs::write(state.join("shard-2-of-3"), "a file, not a folder").unwrap();
        let names: Vec<String> = shard_dirs(out.path())
            .unwrap()
            .into_iter()
            .map(|(shard, _)| shard.dir_name())
            .collect();
        assert_eq!(names, ["shard-0-of-2", "shard-0-of-3", "shard-1-of-3"]);
    }
}
