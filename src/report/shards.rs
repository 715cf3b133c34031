//! One `results.csv` for a folder that shards share. Each shard writes its part
//! (`DIR/.stembatch/shard-I-of-N/results.csv`, its own variants only) as it goes, and
//! the folder's `results.csv` is put together:
//!
//! - by a shard's run, at its start, as it goes and at its end: every variant of the
//!   manifest, in its order, as every journal of the folder tells it at that moment
//!   (the journals are the truth; a part can lag behind its own), each variant built,
//!   rendered by the run's own [`rows_of`], written and dropped in turn;
//! - by `stembatch report DIR`, which has no manifest: the folder's last `results.csv`
//!   (in manifest order) with the rows of every part of the last shard count that is as
//!   new as the journals, streamed from the files ([`super::merge`]).
//!
//! Neither holds the folder's rows: what a merge keeps is the fold of the journals (a
//! shard's) or where each part's variant is (`report`'s).
//!
//! Merges are serialised by a lock file held until the page is drawn, so the shard that
//! finishes last leaves the file and the page with every shard's final state.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::csv::{rows_of, write_atomically, FILE_NAME, HEADER};
use crate::folder::layout::{self, shard_dirs, JournalCursors, NewRecords};
use crate::folder::lock::{self, LockState};
use crate::journal::replay::{self, Prior};
use crate::journal::stored::TrackStore;
use crate::journal::{state_dir, JOURNAL_FILE};
use crate::outcome::VariantRecord;
use crate::shard::Shard;
use crate::variant::{VariantId, VariantTable};

/// The lock file that serialises merges, inside the state folder.
pub const MERGE_LOCK_FILE: &str = "merge.lock";

/// The parts of the shards of `count` that are as new as what they describe, in shard
/// order. A part is left out (its variants keep the base's rows) when a journal it does
/// not reflect is newer: its own (the shard was killed between two writes), unless the
/// shard runs now; or any of another layout (a whole-folder run or other shards ran
/// since).
fn fresh_parts(out_dir: &Path, count: u32) -> std::io::Result<Vec<PathBuf>> {
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
        parts.push(dir.join(FILE_NAME));
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

/// `stembatch report DIR`: rewrites `DIR/results.csv` from the fresh parts of the shards
/// of `count` over the folder's last `results.csv`, under the merge lock, streamed (see
/// [`super::merge`]).
pub fn merge_into_folder(out_dir: &Path, count: u32) -> std::io::Result<Merged> {
    let lock = lock_merges(out_dir)?;
    let parts = fresh_parts(out_dir, count)?;
    let mut variants = 0;
    write_atomically(out_dir, |out| {
        variants = super::merge::merge(&out_dir.join(FILE_NAME), &parts, out)?;
        Ok(())
    })?;
    Ok(Merged { variants, lock })
}

/// What a shard's run needs to write its part and the folder's `results.csv`.
#[derive(Clone, Debug)]
pub struct ShardPart {
    /// The shard's state folder, where its part goes.
    pub dir: PathBuf,
    /// Every variant of the manifest, in its order: their ids, each variant built when
    /// its rows are written.
    all: Arc<VariantTable>,
    /// The folder's journals as read so far: where each was left, and their fold.
    journals: Arc<Mutex<JournalsRead>>,
}

/// The folder's journals, folded as far as they were read.
#[derive(Debug, Default)]
struct JournalsRead {
    cursors: JournalCursors,
    /// Unsettled: the fold goes on with the next records.
    priors: HashMap<VariantId, Prior>,
    /// Where the fold's tracks' entries are.
    store: TrackStore,
}

/// The record of a settled prior whose tracks' entries are in `store` (a track whose line
/// cannot be read back is an error, never a row lost).
fn settled_record(prior: Prior, store: &TrackStore) -> std::io::Result<VariantRecord> {
    let (mut record, tracks) = prior.into_record();
    record.tracks = store.records(&tracks).map_err(std::io::Error::other)?;
    Ok(record)
}

impl JournalsRead {
    /// Reads what the journals gained since the last call and folds it in. The first
    /// read is the folder's fold as a run's open makes it (from the best checkpoint,
    /// each track compact in its line); then each journal is read from where it stopped.
    /// `own` is the shard's state folder.
    fn catch_up(&mut self, out_dir: &Path, own: &Path) -> std::io::Result<()> {
        if !self.cursors.primed() {
            match layout::fold_all_to_go_on(out_dir, own) {
                Ok((folded, cursors)) => {
                    self.priors = folded.priors;
                    self.store = folded.store;
                    self.cursors = cursors;
                }
                // The rows are what the journals say however they are read: read them
                // whole, as before the fold could be shared, rather than lose the run.
                Err(err) => {
                    tracing::warn!(error = %err, "cannot fold the folder's journals from its checkpoint for the merged results.csv: reading every journal whole");
                }
            }
        }
        match self
            .cursors
            .read_new(out_dir)
            .map_err(std::io::Error::other)?
        {
            // A journal was cut or replaced: the folder is folded again from its start.
            NewRecords::All(records) => {
                self.priors.clear();
                self.store = TrackStore::default();
                replay::fold(&mut self.priors, &records);
            }
            NewRecords::Since(records) => replay::fold(&mut self.priors, &records),
        }
        Ok(())
    }

    /// The record of a variant as the journals read so far tell it (none when no journal
    /// names it): the one conversion from the journals' fold to the rows.
    fn record_of(&self, id: &VariantId) -> std::io::Result<VariantRecord> {
        let Some(prior) = self.priors.get(id) else {
            return Ok(VariantRecord::UNKNOWN);
        };
        let mut prior = prior.clone();
        prior.settle();
        settled_record(prior, &self.store)
    }

    /// Writes the header and every variant's rows as the journals read so far tell them,
    /// in `variants`' order: each variant built, rendered, written and dropped in turn.
    fn write_rows(&self, variants: &VariantTable, out: &mut dyn Write) -> std::io::Result<()> {
        let mut writer = csv::Writer::from_writer(out);
        writer.write_record(HEADER)?;
        for variant in variants.iter() {
            let record = self.record_of(&variant.id)?;
            for row in rows_of(&variant, &record) {
                writer.write_record(row)?;
            }
        }
        writer.flush()
    }
}

impl ShardPart {
    /// The part of `shard` in `out_dir`; `all` is every variant of the manifest.
    pub fn new(out_dir: &Path, shard: Shard, all: Arc<VariantTable>) -> Self {
        ShardPart {
            dir: layout::run_dir(out_dir, Some(shard)),
            all,
            journals: Arc::default(),
        }
    }

    /// Rewrites `DIR/results.csv`: every variant of the manifest as every journal of the
    /// folder tells it now, under the merge lock. Each journal is read from where the
    /// last merge left it.
    pub fn merge_into(&self, out_dir: &Path) -> std::io::Result<Merged> {
        let lock = lock_merges(out_dir)?;
        let mut journals = self.journals.lock().unwrap_or_else(|p| p.into_inner());
        journals.catch_up(out_dir, &self.dir)?;
        write_atomically(out_dir, |out| journals.write_rows(&self.all, out))?;
        Ok(Merged {
            variants: self.all.len(),
            lock,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::journal::format::Record;
    use crate::report::merge::in_memory::{read_rows, VariantRows};
    use crate::variant::{Variant, VariantSource};

    /// Every variant's rows as `records` (every journal of the folder, read whole) tell
    /// them, in the order of `variants`: the tests' reference for a shard's merge.
    fn rows_as_journaled(variants: &[Variant], records: &[Record]) -> Vec<VariantRows> {
        let priors = replay::replay(records);
        variants
            .iter()
            .map(|variant| {
                let record = priors
                    .get(&variant.id)
                    .map(|prior| settled_record(prior.clone(), &TrackStore::default()).unwrap())
                    .unwrap_or_default();
                VariantRows {
                    id: variant.id.to_string(),
                    rows: rows_of(variant, &record),
                }
            })
            .collect()
    }

    /// A folder shared by two shards of a one-stem manifest (a tags matrix of `tags`),
    /// whose journals the tests write by hand.
    struct TwoShards {
        _dir: tempfile::TempDir,
        out: PathBuf,
        all: Vec<Variant>,
        shards: [Shard; 2],
        journals: [PathBuf; 2],
    }

    impl TwoShards {
        fn new(tags: &str) -> Self {
            let text = format!("[defaults]\ntitle = \"t\"\nnegative_tags = \"\"\n[[stem]]\nurl = \"https://h/s.wav\"\n[stem.matrix]\ntags = [{tags}]\n");
            let all = crate::manifest::parse(Path::new("m.toml"), &text)
                .unwrap()
                .variants
                .to_vec();
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().to_owned();
            let shards = [0, 1].map(|i| Shard::new(i, 2, "test").unwrap());
            let journals = shards.map(|shard| {
                let run_dir = layout::run_dir(&out, Some(shard));
                std::fs::create_dir_all(&run_dir).unwrap();
                run_dir.join(JOURNAL_FILE)
            });
            TwoShards {
                _dir: dir,
                out,
                all,
                shards,
                journals,
            }
        }

        fn append(&self, i: usize, text: &str) {
            use std::io::Write as _;
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.journals[i])
                .unwrap();
            file.write_all(text.as_bytes()).unwrap();
        }

        /// The first shard's part of the folder.
        fn part(&self) -> ShardPart {
            let table = VariantTable::new(Arc::new(self.all.clone()));
            ShardPart::new(&self.out, self.shards[0], Arc::new(table))
        }

        /// Merges `part` into the folder's results.csv, which must be what a read of
        /// every journal from its start says; the merged rows.
        fn check(&self, part: &ShardPart, when: &str) -> Vec<VariantRows> {
            part.merge_into(&self.out).unwrap();
            let merged = read_rows(&self.out.join(FILE_NAME)).unwrap().unwrap();
            let records = layout::read_all(&self.out).unwrap();
            assert_eq!(merged, rows_as_journaled(&self.all, &records), "{when}");
            merged
        }
    }

    fn at() -> chrono::DateTime<chrono::Utc> {
        "2026-11-25T01:00:00Z".parse().unwrap()
    }

    fn started(seq: u64) -> Record {
        Record::RunStarted {
            at: at(),
            seq,
            api: "sim".into(),
            pid: 1,
            version: "0".into(),
        }
    }

    /// A shard's merges read each journal from where the last one left it, and write
    /// what a read of every journal from its start would: with records appended between
    /// merges, a line being written, and a journal rewritten shorter.
    #[test]
    fn a_merge_reads_each_journal_from_where_the_last_left_it() {
        use crate::journal::format::{encode, EndStatus};
        let folder = TwoShards::new(r#""a", "b", "c", "d", "e", "f""#);
        let (all, out, at) = (&folder.all, folder.out.as_path(), at());
        let append = |i: usize, text: &str| folder.append(i, text);
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
        let part = folder.part();
        let check = |when: &str| drop(folder.check(&part, when));
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
            &folder.journals[1],
            [started(1), submitted(5)]
                .iter()
                .map(encode)
                .collect::<String>(),
        )
        .unwrap();
        check("a journal rewritten shorter");
    }

    /// A shard's first merge starts from the folder's fold as a run's open makes it
    /// (each track left in its journal line, read back for the rows), from a checkpoint
    /// when there is one, and goes on from where that fold stopped reading: a line being
    /// written then is read, whole, by the next merge, and nothing is folded twice.
    #[test]
    fn a_first_merge_starts_from_the_folded_journals_and_goes_on_where_it_stopped() {
        use crate::journal::format::{encode, finished_records, TrackEntry};
        let folder = TwoShards::new(r#""a", "b", "c", "d""#);
        let (all, out) = (&folder.all, folder.out.as_path());
        let finished = |n: usize| -> String {
            let mut entry =
                TrackEntry::minimal(1, &format!("a{n}"), &format!("audio/s/v{n}-1.wav"));
            entry.audio_url = format!("https://cdn.example.com/{n}.mp3");
            finished_records(&all[n].id, &format!("t{n}"), entry, at())
                .iter()
                .map(encode)
                .collect()
        };
        for i in 0..2 {
            folder.append(i, &encode(&started(1)));
            folder.append(i, &finished(i));
        }
        // The shard's own checkpoint, as its run's open writes it.
        let own = layout::run_dir(out, Some(folder.shards[0]));
        let writer = crate::journal::checkpoint::Writer {
            own: &own,
            over: 0,
            released: |_| true,
            when: crate::journal::checkpoint::WriterWhen::Opening,
        };
        let opened = layout::fold_all_writing(out, Some(writer)).unwrap();
        assert!(opened.written.is_some());
        let more = finished(3);
        let (first, rest) = more.split_at(more.len() - 20);
        folder.append(1, first);
        let part = folder.part();
        let merged = folder.check(&part, "first merge, a line half written");
        {
            let read = part.journals.lock().unwrap();
            let tracks = &read.priors[&all[0].id].task.as_ref().unwrap().tracks;
            assert!(
                matches!(
                    tracks[0].details,
                    crate::journal::replay::Details::Stored(_)
                ),
                "kept in its line: {tracks:?}"
            );
        }
        assert!(
            merged[1].rows[0]
                .iter()
                .any(|c| c == "https://cdn.example.com/1.mp3"),
            "the track read back: {merged:?}"
        );
        folder.append(1, rest);
        folder.append(0, &finished(2));
        let merged = folder.check(&part, "the line completed, more appended");
        assert!(merged[3].rows[0]
            .iter()
            .any(|c| c == "https://cdn.example.com/3.mp3"));
    }

    /// What a writer has been given so far, in bytes.
    struct Counting(Arc<std::sync::atomic::AtomicUsize>);

    impl Write for Counting {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .fetch_add(bytes.len(), std::sync::atomic::Ordering::SeqCst);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Builds each variant from one, and notes how much the writer had been given when
    /// each was built.
    #[derive(Debug)]
    struct Watched {
        like: Variant,
        written: Arc<std::sync::atomic::AtomicUsize>,
        when_built: Mutex<Vec<usize>>,
    }

    impl VariantSource for Watched {
        fn build(&self, _index: usize, id: &VariantId) -> Variant {
            let written = self.written.load(std::sync::atomic::Ordering::SeqCst);
            self.when_built.lock().unwrap().push(written);
            Variant {
                id: id.clone(),
                ..self.like.clone()
            }
        }

        fn stem_at(&self, _index: usize) -> Arc<crate::variant::Stem> {
            Arc::clone(&self.like.stem)
        }
    }

    /// A shard's merge writes each variant's rows before it builds the next ones: when
    /// variant k is built, the writer has been given the rows of those before it but for
    /// what the CSV writer buffers (8 KiB), so the rows of the folder are never held.
    #[test]
    fn a_shard_merge_writes_each_variant_before_it_builds_the_next() {
        let text = "[defaults]\ntitle = \"t\"\ntags = \"a\"\nnegative_tags = \"\"\n[[stem]]\nurl = \"https://h/s.wav\"\n";
        let like = crate::manifest::parse(Path::new("m.toml"), text)
            .unwrap()
            .variants
            .to_vec()
            .remove(0);
        let written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let source = Arc::new(Watched {
            like,
            written: Arc::clone(&written),
            when_built: Mutex::default(),
        });
        let count = 2000;
        let ids: Vec<VariantId> = (1..=count as u64).map(VariantId::from_bits).collect();
        let table = VariantTable::built(Arc::clone(&source) as _, ids.iter());
        JournalsRead::default()
            .write_rows(&table, &mut Counting(Arc::clone(&written)))
            .unwrap();
        let header = HEADER.join(",").len() + 1;
        let total = written.load(std::sync::atomic::Ordering::SeqCst);
        // Every variant is pending, one row of the same length (ids of 16 digits).
        let row = (total - header) / count;
        assert_eq!(header + row * count, total);
        let when_built = source.when_built.lock().unwrap();
        assert_eq!(when_built.len(), count);
        let buffered = 8 * 1024;
        for (k, &given) in when_built.iter().enumerate() {
            assert!(
                given + buffered >= header + k * row,
                "variant {k} built when {given} of {} bytes were written",
                header + k * row
            );
        }
    }
}
