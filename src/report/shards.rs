//! One `results.csv` for a folder that shards share. Each shard writes its part
//! (`DIR/.stembatch/shard-I-of-N/results.csv`, its own variants only) as it goes, and
//! the folder's `results.csv` is put together:
//!
//! - by a shard's run, at its start, as it goes and at its end: every variant of the
//!   manifest, in its order, as every journal of the folder tells it at that moment
//!   (the journals are the truth; a part can lag behind its own);
//! - by `stembatch report DIR`, which has no manifest: the folder's last `results.csv`
//!   (in manifest order) with the rows of every part of the last shard count that is as
//!   new as the journals ([`merge`], pure).
//!
//! Merges are serialised by a lock file held until the page is drawn, so the shard that
//! finishes last leaves the file and the page with every shard's final state.

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::csv::{rows_of, write_atomically, FILE_NAME, HEADER};
use crate::folder::layout::{self, shard_dirs, JournalCursors, NewRecords};
use crate::folder::lock::{self, LockState};
use crate::journal::format::Record;
use crate::journal::replay::{self, Details, Prior};
use crate::journal::{state_dir, JOURNAL_FILE};
use crate::outcome::{TrackRecord, VariantRecord};
use crate::shard::Shard;
use crate::variant::{Variant, VariantId};

/// The lock file that serialises merges, inside the state folder.
pub const MERGE_LOCK_FILE: &str = "merge.lock";

/// One variant's rows of `results.csv`, each with every column of [`HEADER`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VariantRows {
    /// Its `variant_id`.
    pub id: String,
    /// Its rows: one per track, or one.
    pub rows: Vec<Vec<String>>,
}

/// The column of `variant_id` in [`HEADER`].
fn id_column() -> usize {
    HEADER
        .iter()
        .position(|&c| c == "variant_id")
        .expect("the header has variant_id")
}

/// The base's variants in its order, each with the rows of the part that holds it (the
/// base's own rows when no part does). The base lists the manifest's variants; only when
/// there is none (the folder's `results.csv` was deleted) do the parts' variants come in
/// the parts' order, since a part may hold a variant the manifest has dropped since.
pub fn merge(base: Vec<VariantRows>, parts: Vec<Vec<VariantRows>>) -> Vec<VariantRows> {
    let mut from_parts: HashMap<String, Vec<Vec<String>>> = HashMap::new();
    let mut extra_order = Vec::new();
    for variant in parts.into_iter().flatten() {
        if !from_parts.contains_key(&variant.id) {
            extra_order.push(variant.id.clone());
        }
        from_parts.insert(variant.id, variant.rows);
    }
    let in_base: HashSet<String> = base.iter().map(|v| v.id.clone()).collect();
    let mut merged: Vec<VariantRows> = base
        .into_iter()
        .map(|variant| match from_parts.remove(&variant.id) {
            Some(rows) => VariantRows {
                id: variant.id,
                rows,
            },
            None => variant,
        })
        .collect();
    if !in_base.is_empty() {
        return merged;
    }
    merged.extend(
        extra_order
            .into_iter()
            .filter(|id| !in_base.contains(id))
            .filter_map(|id| {
                let rows = from_parts.remove(&id)?;
                Some(VariantRows { id, rows })
            }),
    );
    merged
}

/// Reads a `results.csv` (a part or the folder's) into its variants, in order. `None`
/// when there is no such file.
pub fn read_rows(path: &Path) -> std::io::Result<Option<Vec<VariantRows>>> {
    let invalid = |what: String| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {what}", path.display()),
        )
    };
    let mut reader = match csv::Reader::from_path(path) {
        Ok(reader) => reader,
        Err(err) => match err.kind() {
            csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            _ => return Err(invalid(err.to_string())),
        },
    };
    let headers = reader.headers().map_err(|e| invalid(e.to_string()))?;
    if headers.iter().ne(HEADER.iter().copied()) {
        return Err(invalid(
            "its header is not this stembatch's (written by another version?)".into(),
        ));
    }
    let id_col = id_column();
    let mut variants: Vec<VariantRows> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for row in reader.records() {
        let row = row.map_err(|e| invalid(e.to_string()))?;
        let id = row[id_col].to_owned();
        let fields = row.iter().map(str::to_owned).collect();
        match at.get(&id) {
            Some(&i) => variants[i].rows.push(fields),
            None => {
                at.insert(id.clone(), variants.len());
                variants.push(VariantRows {
                    id,
                    rows: vec![fields],
                });
            }
        }
    }
    Ok(Some(variants))
}

/// The parts of the shards of `count` that are as new as what they describe, in shard
/// order. A part is left out (its variants keep the base's rows) when a journal it does
/// not reflect is newer: its own (the shard was killed between two writes), unless the
/// shard runs now; or any of another layout (a whole-folder run or other shards ran
/// since).
fn fresh_parts(out_dir: &Path, count: u32) -> std::io::Result<Vec<Vec<VariantRows>>> {
    let shards = shard_dirs(out_dir)?;
    let journal_time = |dir: &Path| modified(&dir.join(JOURNAL_FILE));
    let mut others = vec![journal_time(&state_dir(out_dir))?];
    for (shard, dir) in &shards {
        if shard.count() != count {
            others.push(journal_time(dir)?);
        }
    }
    let newest_other = others.into_iter().flatten().max();
    let mut parts = Vec::new();
    for (shard, dir) in shards.iter().filter(|(shard, _)| shard.count() == count) {
        let Some(written) = modified(&dir.join(FILE_NAME))? else {
            continue;
        };
        let live = !matches!(lock::holder(dir), Ok(LockState::Free));
        let behind_own = journal_time(dir)?.is_some_and(|journal| journal > written);
        let behind_others = newest_other.is_some_and(|other| other > written);
        if (behind_own && !live) || behind_others {
            tracing::warn!(shard = %shard, "the part of shard {shard} is older than the journals: its variants keep the rows of results.csv");
            continue;
        }
        if let Some(part) = read_rows(&dir.join(FILE_NAME))? {
            parts.push(part);
        }
    }
    Ok(parts)
}

/// When `path` was last written; `None` when there is no such file.
fn modified(path: &Path) -> std::io::Result<Option<SystemTime>> {
    match std::fs::metadata(path).and_then(|m| m.modified()) {
        Ok(time) => Ok(Some(time)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// Held while the folder's `results.csv` is merged and the page is drawn from it: a merge
/// that read older parts never renames its file (or its page) over a newer one.
#[derive(Debug)]
pub struct MergeLock {
    _file: std::fs::File,
}

/// A merged `results.csv`: how many variants it lists, and the lock to hold until the
/// page is written from it.
#[derive(Debug)]
pub struct Merged {
    /// Variants written.
    pub variants: usize,
    /// Released on drop.
    pub lock: MergeLock,
}

/// Takes the merge lock of `out_dir`, waiting for another merge to end.
fn lock_merges(out_dir: &Path) -> std::io::Result<MergeLock> {
    let path = state_dir(out_dir).join(MERGE_LOCK_FILE);
    let named =
        |err: std::io::Error| std::io::Error::new(err.kind(), format!("{}: {err}", path.display()));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(named)?;
    file.lock().map_err(named)?;
    Ok(MergeLock { _file: file })
}

/// Writes `variants` as the folder's `results.csv`.
fn write_variants(out_dir: &Path, variants: &[VariantRows]) -> std::io::Result<()> {
    write_atomically(out_dir, |out| {
        let mut writer = csv::Writer::from_writer(out);
        writer.write_record(HEADER)?;
        for row in variants.iter().flat_map(|v| &v.rows) {
            writer.write_record(row)?;
        }
        writer.flush()?;
        Ok(())
    })
}

/// `stembatch report DIR`: rewrites `DIR/results.csv` from the fresh parts of the shards
/// of `count` over the folder's last `results.csv`, under the merge lock.
pub fn merge_into_folder(out_dir: &Path, count: u32) -> std::io::Result<Merged> {
    let lock = lock_merges(out_dir)?;
    let base = read_rows(&out_dir.join(FILE_NAME))?.unwrap_or_default();
    let merged = merge(base, fresh_parts(out_dir, count)?);
    write_variants(out_dir, &merged)?;
    Ok(Merged {
        variants: merged.len(),
        lock,
    })
}

/// Every variant's rows of `results.csv` as `records` (every journal of the folder) tell
/// them, in the order of `variants`.
pub fn rows_as_journaled(variants: &[Variant], records: &[Record]) -> Vec<VariantRows> {
    let priors = replay::replay(records);
    variants
        .iter()
        .map(|variant| {
            let record = priors
                .get(&variant.id)
                .map(|prior| record_of(prior.clone()))
                .unwrap_or_default();
            VariantRows {
                id: variant.id.to_string(),
                rows: rows_of(variant, &record),
            }
        })
        .collect()
}

/// The record of a prior folded from records read into memory (`replay::fold`), whose
/// tracks are held whole.
fn record_of(prior: Prior) -> VariantRecord {
    let (mut record, tracks) = prior.into_record();
    record.tracks = tracks
        .into_iter()
        .filter_map(|track| match track.details {
            Details::Held(entry) => Some(TrackRecord::from(*entry)),
            // Only a fold of files keeps a line's place, and this one read none.
            Details::Stored(_) => None,
        })
        .collect();
    record
}

/// What a shard's run needs to write its part and the folder's `results.csv`.
#[derive(Clone, Debug)]
pub struct ShardPart {
    /// The shard's state folder, where its part goes.
    pub dir: PathBuf,
    /// Every variant of the manifest, in its order.
    pub all: Arc<Vec<Variant>>,
    /// The folder's journals as read so far: where each was left, and their fold.
    journals: Arc<Mutex<JournalsRead>>,
}

/// The folder's journals, folded as far as they were read.
#[derive(Debug, Default)]
struct JournalsRead {
    cursors: JournalCursors,
    /// Unsettled: the fold goes on with the next records.
    priors: HashMap<VariantId, Prior>,
}

impl JournalsRead {
    /// Reads what the journals gained since the last call and folds it in.
    fn catch_up(&mut self, out_dir: &Path) -> std::io::Result<()> {
        match self
            .cursors
            .read_new(out_dir)
            .map_err(std::io::Error::other)?
        {
            NewRecords::All(records) => {
                self.priors.clear();
                replay::fold(&mut self.priors, &records);
            }
            NewRecords::Since(records) => replay::fold(&mut self.priors, &records),
        }
        Ok(())
    }

    /// Every variant's rows as the journals read so far tell them, in `variants`' order.
    fn rows(&self, variants: &[Variant]) -> Vec<VariantRows> {
        variants
            .iter()
            .map(|variant| {
                let record = match self.priors.get(&variant.id) {
                    Some(prior) => {
                        let mut prior = prior.clone();
                        prior.settle();
                        record_of(prior)
                    }
                    None => VariantRecord::default(),
                };
                VariantRows {
                    id: variant.id.to_string(),
                    rows: rows_of(variant, &record),
                }
            })
            .collect()
    }
}

impl ShardPart {
    /// The part of `shard` in `out_dir`; `all` is every variant of the manifest.
    pub fn new(out_dir: &Path, shard: Shard, all: Vec<Variant>) -> Self {
        ShardPart {
            dir: layout::run_dir(out_dir, Some(shard)),
            all: Arc::new(all),
            journals: Arc::default(),
        }
    }

    /// Rewrites `DIR/results.csv`: every variant of the manifest as every journal of the
    /// folder tells it now, under the merge lock. Each journal is read from where the
    /// last merge left it.
    pub fn merge_into(&self, out_dir: &Path) -> std::io::Result<Merged> {
        let lock = lock_merges(out_dir)?;
        let mut journals = self.journals.lock().unwrap_or_else(|p| p.into_inner());
        journals.catch_up(out_dir)?;
        let rows = journals.rows(&self.all);
        drop(journals);
        write_variants(out_dir, &rows)?;
        Ok(Merged {
            variants: rows.len(),
            lock,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variant(id: &str, rows: &[&str]) -> VariantRows {
        VariantRows {
            id: id.into(),
            rows: rows
                .iter()
                .map(|r| vec![id.to_owned(), r.to_string()])
                .collect(),
        }
    }

    fn ids_and_rows(merged: &[VariantRows]) -> Vec<(String, usize)> {
        merged
            .iter()
            .map(|v| (v.id.clone(), v.rows.len()))
            .collect()
    }

    /// A shard's merges read each journal from where the last one left it, and write
    /// what a read of every journal from its start would: with records appended between
    /// merges, a line being written, and a journal rewritten shorter.
    #[test]
    fn a_merge_reads_each_journal_from_where_the_last_left_it() {
        use crate::journal::format::{encode, EndStatus};
        use std::io::Write as _;
        let text = "[defaults]\ntitle = \"t\"\nnegative_tags = \"\"\n[[stem]]\nurl = \"https://h/s.wav\"\n[stem.matrix]\ntags = [\"a\", \"b\", \"c\", \"d\", \"e\", \"f\"]\n";
        let all = crate::manifest::parse(Path::new("m.toml"), text)
            .unwrap()
            .variants
            .to_vec();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let shards = [0, 1].map(|i| Shard::new(i, 2, "test").unwrap());
        let journals = shards.map(|shard| {
            let run_dir = layout::run_dir(out, Some(shard));
            std::fs::create_dir_all(&run_dir).unwrap();
            run_dir.join(JOURNAL_FILE)
        });
        let append = |i: usize, text: &str| {
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&journals[i])
                .unwrap();
            file.write_all(text.as_bytes()).unwrap();
        };
        let at: chrono::DateTime<chrono::Utc> = "2026-11-25T01:00:00Z".parse().unwrap();
        let started = |seq| Record::RunStarted {
            at,
            seq,
            api: "sim".into(),
            pid: 1,
            version: "0".into(),
        };
        let submitted = |n: usize| Record::Submitted {
            variant_id: all[n].id.clone(),
            task_id: format!("t{n}"),
            at,
        };
        let ended = |n: usize| Record::Ended {
            variant_id: all[n].id.clone(),
            status: EndStatus::Failed,
            error: Some(format!("no {n}")),
            at,
        };
        let intent = |n: usize| Record::SubmitIntent {
            variant_id: all[n].id.clone(),
            at,
        };
        // Variants 0, 2, 4 in one journal, 1, 3, 5 in the other.
        for i in 0..2 {
            append(i, &encode(&started(1)));
            append(i, &encode(&submitted(i)));
        }
        let mut cursors = JournalCursors::default();
        assert!(matches!(cursors.read_new(out).unwrap(), NewRecords::All(r) if r.len() == 4));
        assert!(matches!(cursors.read_new(out).unwrap(), NewRecords::Since(r) if r.is_empty()));
        append(0, &encode(&ended(0)));
        let new = cursors.read_new(out).unwrap();
        assert!(
            matches!(new, NewRecords::Since(r) if r == [ended(0)]),
            "only what was added"
        );
        let part = ShardPart::new(out, shards[0], all.clone());
        let check = |when: &str| {
            part.merge_into(out).unwrap();
            let merged = read_rows(&out.join(FILE_NAME)).unwrap().unwrap();
            let records = layout::read_all(out).unwrap();
            assert_eq!(merged, rows_as_journaled(&all, &records), "{when}");
        };
        check("first merge");
        append(0, &encode(&intent(2)));
        append(1, &encode(&submitted(3)));
        check("records appended");
        let line = encode(&ended(3));
        let (first, rest) = line.split_at(line.len() / 2);
        append(1, first);
        check("a line half written");
        append(1, rest);
        append(0, &encode(&submitted(2)));
        check("the line completed");
        std::fs::write(
            &journals[1],
            [started(1), submitted(5)]
                .iter()
                .map(encode)
                .collect::<String>(),
        )
        .unwrap();
        check("a journal rewritten shorter");
    }

    #[test]
    fn parts_replace_the_base_rows_of_their_variants_and_keep_the_base_order() {
        let base = vec![
            variant("a", &["pending"]),
            variant("b", &["pending"]),
            variant("c", &["pending"]),
        ];
        let parts = vec![
            vec![variant("c", &["track 1", "track 2"])],
            vec![variant("a", &["failed"])],
        ];
        let merged = merge(base, parts);
        assert_eq!(
            ids_and_rows(&merged),
            [("a".into(), 1), ("b".into(), 1), ("c".into(), 2)]
        );
        assert_eq!(merged[0].rows[0][1], "failed");
        assert_eq!(merged[1].rows[0][1], "pending");
    }

    #[test]
    fn variants_the_base_does_not_list_are_left_out_unless_there_is_no_base() {
        let parts = || {
            vec![
                vec![variant("z", &["1"]), variant("y", &["1"])],
                vec![variant("a", &["2"])],
            ]
        };
        let ids = |merged: Vec<VariantRows>| -> Vec<String> {
            merged.into_iter().map(|v| v.id).collect()
        };
        // A part from a night whose manifest had z and y: the manifest has dropped them.
        assert_eq!(ids(merge(vec![variant("a", &["x"])], parts())), ["a"]);
        // No results.csv to order by: every part's variants, in the parts' order.
        assert_eq!(ids(merge(Vec::new(), parts())), ["z", "y", "a"]);
    }

    #[test]
    fn a_part_written_by_another_header_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, "stem,variant\nx,y\n").unwrap();
        let err = read_rows(&path).unwrap_err().to_string();
        assert!(
            err.contains("results.csv") && err.contains("header"),
            "{err}"
        );
        assert!(read_rows(&dir.path().join("missing.csv"))
            .unwrap()
            .is_none());
    }
}
