//! The one way into an output folder: [`Folder`]. A run opens it once ([`Folder::open`]:
//! its locks, the sweep of what a killed run left, every journal folded, the run's own
//! opened for writing), decides what to buy from the fold, and, when the run goes ahead,
//! takes what it writes with ([`OpenFolder::go_ahead`]: the folder's layout recorded, the
//! journal, the shard's part of `results.csv`). `plan` and `status` read the same folder
//! through it and write nothing; `report` asks it which shards wrote last.
//!
//! Who may share a folder: the shards of one count, at once. Each holds its own lock
//! (`shard-I-of-N/lock`, naming it) and the whole folder's lock *shared*, so that a
//! whole-folder run, which takes that lock exclusively, cannot start while shards run,
//! nor shards while it runs; a shard of another count is refused by name. Nothing here
//! sends anything: every refusal comes before the first request.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context as _;

use crate::exit::{ExpectedError, LOCKED};
use crate::journal::folded::Folded;
use crate::journal::format::Record;
use crate::journal::writer::JournalWriter;
use crate::journal::{self, JournalError};
use crate::report::shards::ShardPart;
use crate::shard::Shard;
use crate::variant::Variant;

use super::layout;
use super::lock::{self, LockError, LockState, RunLock};

/// The locks a run holds until it ends.
#[derive(Debug)]
pub struct FolderLocks {
    _own: RunLock,
    /// A shard's shared hold on the whole folder's lock.
    _whole: Option<RunLock>,
}

/// An output folder, and the shard of it that a command works on (none: the whole
/// folder). Every command comes in through it (see the module's doc).
#[derive(Clone, Debug)]
pub struct Folder {
    dir: PathBuf,
    shard: Option<Shard>,
}

/// The output folder, taken by a run: its locks, the run's journal, and every journal of
/// the folder folded, run by run (never held as records: see `journal::folded`). Dropped
/// without [`OpenFolder::go_ahead`] (a refused run), it lets the folder go as it found
/// it, but for the run's start in its journal.
pub struct OpenFolder {
    /// What every earlier record of the folder says.
    pub folded: Folded,
    locks: FolderLocks,
    journal: JournalWriter,
    folder: Folder,
}

/// What a run that goes ahead writes with, and holds until it ends.
pub struct RunFolder {
    /// Held for the whole run.
    pub locks: FolderLocks,
    /// The run's own journal.
    pub journal: JournalWriter,
    /// What every earlier record of the folder says.
    pub folded: Folded,
    /// A shard's run: its part of `results.csv`.
    pub shard_part: Option<ShardPart>,
}

impl Folder {
    /// The folder `dir`, for shard `shard` of its manifest or (none) the whole of it.
    pub fn new(dir: &Path, shard: Option<Shard>) -> Self {
        Folder {
            dir: dir.to_owned(),
            shard,
        }
    }

    /// Takes the folder for a run against `api` and starts its journal (see
    /// [`OpenFolder`]). Refuses a folder whose journals are from another API.
    pub async fn open(&self, api: &str) -> anyhow::Result<OpenFolder> {
        let folder = self.clone();
        let open = tokio::task::spawn_blocking(move || open_blocking(folder)).await??;
        open.start(api).await
    }

    /// Every journal of the folder folded, as a run reads them; read, never written. A
    /// damaged one is the user's to see.
    pub fn read(&self) -> anyhow::Result<Folded> {
        layout::fold_all(&self.dir).map_err(usage_if_damaged)
    }

    /// Whether a run holds the folder: the whole folder's run, else the first shard's
    /// that does. Takes no lock and writes nothing.
    pub fn holder(&self) -> anyhow::Result<LockState> {
        let state_dir = journal::state_dir(&self.dir);
        let whole = lock::holder(&state_dir)?;
        if whole != LockState::Free {
            return Ok(whole);
        }
        let shards = layout::shard_dirs(&self.dir)
            .map_err(|err| anyhow::anyhow!("cannot read {}: {err}", state_dir.display()))?;
        for (_, shard_dir) in shards {
            let held = lock::holder(&shard_dir)?;
            if held != LockState::Free {
                return Ok(held);
            }
        }
        Ok(LockState::Free)
    }

    /// When any journal of the folder (every shard's) was last written; `None` when
    /// there is none.
    pub fn newest_journal_time(&self) -> anyhow::Result<Option<SystemTime>> {
        layout::newest_journal_time(&self.dir).map_err(|err| {
            let state_dir = journal::state_dir(&self.dir);
            anyhow::anyhow!("cannot read {}: {err}", state_dir.display())
        })
    }

    /// Whether stembatch has kept state in the folder (`DIR/.stembatch/`).
    pub fn has_state(&self) -> bool {
        journal::state_dir(&self.dir).is_dir()
    }

    /// The shard count of the last sharded run, unless a whole-folder run came after it:
    /// which parts `report` merges.
    pub fn shard_count(&self) -> Option<u32> {
        layout::read_layout(&self.dir)
    }
}

impl OpenFolder {
    /// The run goes ahead (what it would buy was checked): records the folder's layout,
    /// which tells `report` which parts to merge, and hands over what the run writes
    /// with. `all` is every variant of the manifest, for a shard's part of `results.csv`.
    pub fn go_ahead(self, all: Option<Vec<Variant>>) -> anyhow::Result<RunFolder> {
        let Folder { dir, shard } = self.folder;
        layout::write_layout(&dir, shard).with_context(|| {
            let file = journal::state_dir(&dir).join(layout::SHARDS_FILE);
            format!("cannot write {}", file.display())
        })?;
        Ok(RunFolder {
            locks: self.locks,
            journal: self.journal,
            folded: self.folded,
            shard_part: shard
                .zip(all)
                .map(|(shard, all)| ShardPart::new(&dir, shard, all)),
        })
    }

    /// Checks the folder's API and starts the run's journal.
    async fn start(self, api: &str) -> anyhow::Result<OpenFolder> {
        let folder = self;
        let (out_dir, shard) = (folder.folder.dir.as_path(), folder.folder.shard);
        // Tasks and uploads of one API mean nothing to another: a folder that saw the
        // simulator would otherwise look finished to the real run.
        if let Some(earlier) = folder.folded.last_api().filter(|earlier| *earlier != api) {
            return Err(ExpectedError::usage(format!(
                "{} holds runs against {earlier}, and this run is against {api}: their tasks and uploads do not mix (hint: choose another folder with --out)",
                out_dir.display()
            ))
            .into());
        }
        if shard.is_some() && !folder.folded.shards_announced() {
            announce_shards(out_dir, shard).await?;
        }
        folder
            .journal
            .append(Record::RunStarted {
                at: chrono::Utc::now(),
                seq: folder.folded.next_seq(),
                api: api.to_owned(),
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .await?;
        Ok(folder)
    }
}

/// Tells a stembatch that knows no shards that this folder has them (see
/// [`Record::ShardsUsed`]): it reads only the whole folder's journal, which gets the line.
async fn announce_shards(out_dir: &Path, shard: Option<Shard>) -> anyhow::Result<()> {
    let path = journal::state_dir(out_dir).join(journal::JOURNAL_FILE);
    let (whole, _) = JournalWriter::open(&path).map_err(usage_if_damaged)?;
    whole
        .append(Record::ShardsUsed {
            at: chrono::Utc::now(),
            shard_count: shard.map_or(1, Shard::count),
        })
        .await?;
    Ok(())
}

fn open_blocking(folder: Folder) -> anyhow::Result<OpenFolder> {
    let (out_dir, shard) = (folder.dir.as_path(), folder.shard);
    let run_dir = layout::run_dir(out_dir, shard);
    crate::output_files::create_dir_all_durably(&run_dir).map_err(|err| {
        // Nothing was sent: a folder that cannot be made is the user's to fix.
        ExpectedError::usage(format!(
            "cannot create the output folder {}: {err}",
            out_dir.display()
        ))
    })?;
    let (locks, alone) = take_locks(out_dir, &run_dir, shard)?;
    // Sibling shards write into the same folders: what looks left over may be theirs.
    if alone {
        let since = lock_time(&run_dir);
        super::sweep::remove_leftover_temporary_files(out_dir, since);
    }
    // Every journal of the folder, the run's own too: a variant is the same whichever
    // shard ran it. Read (and checked) before the own is opened to append after it.
    let folded = layout::fold_all(out_dir).map_err(usage_if_damaged)?;
    let own_path = run_dir.join(journal::JOURNAL_FILE);
    let journal = JournalWriter::open_append(&own_path).map_err(usage_if_damaged)?;
    Ok(OpenFolder {
        locks,
        journal,
        folded,
        folder,
    })
}

/// A damaged or newer journal needs the user before anything is sent; a disk that fails
/// to read it is not a usage error.
fn usage_if_damaged(err: JournalError) -> anyhow::Error {
    match err {
        JournalError::Corrupt { .. } | JournalError::TooNew { .. } => {
            anyhow::Error::new(ExpectedError::usage(err.to_string()))
        }
        other => anyhow::Error::new(other),
    }
}

/// Takes the run's locks (see the module's doc), and says whether no other run holds any
/// lock of the folder.
fn take_locks(
    out_dir: &Path,
    run_dir: &Path,
    shard: Option<Shard>,
) -> anyhow::Result<(FolderLocks, bool)> {
    let state_dir = journal::state_dir(out_dir);
    let own =
        lock::acquire(run_dir, out_dir).map_err(|err| refused(out_dir, run_dir, shard, err))?;
    let whole = match shard {
        Some(_) => Some(
            lock::acquire_shared(&state_dir, out_dir)
                .map_err(|err| refused(out_dir, run_dir, shard, err))?,
        ),
        None => None,
    };
    let others = layout::other_live_runs(out_dir, run_dir)?;
    if let Some((dir, holder)) = others.iter().find(|(dir, _)| !is_sibling_shard(dir, shard)) {
        return Err(overlap(out_dir, dir, holder, shard));
    }
    let locks = FolderLocks {
        _own: own,
        _whole: whole,
    };
    Ok((locks, others.is_empty()))
}

/// A lock that could not be taken: exit 4 when another run holds it, naming that run
/// (a whole-folder run kept out by shards names a shard: they write their names only in
/// their own locks).
fn refused(out_dir: &Path, run_dir: &Path, shard: Option<Shard>, err: LockError) -> anyhow::Error {
    if let LockError::Io { .. } = err {
        return anyhow::Error::new(err);
    }
    let others = layout::other_live_runs(out_dir, run_dir).unwrap_or_default();
    if let Some((dir, holder)) = others.iter().find(|(dir, _)| !is_sibling_shard(dir, shard)) {
        return overlap(out_dir, dir, holder, shard);
    }
    let message = match shard {
        Some(shard) => format!("shard {shard}: {err}"),
        None => err.to_string(),
    };
    anyhow::Error::new(ExpectedError {
        code: LOCKED,
        message,
    })
}

/// Exit 4: a run whose variants overlap this one's holds the folder.
fn overlap(out_dir: &Path, dir: &Path, holder: &LockState, shard: Option<Shard>) -> anyhow::Error {
    let who = match holder {
        LockState::Held(holder) => lock::describe(holder.as_ref()),
        LockState::Free => String::new(),
    };
    let them = match dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(Shard::from_dir_name)
    {
        Some(theirs) => format!("shard {theirs}"),
        None => "a whole-folder run".to_owned(),
    };
    let us = shard.map_or("a whole-folder run".to_owned(), |s| format!("shard {s}"));
    anyhow::Error::new(ExpectedError {
        code: LOCKED,
        message: format!(
            "{them}{who} holds {} ({}): {us} must not run beside it, their variants overlap (hint: run every shard with the same N, or wait for it to end)",
            out_dir.display(),
            dir.display(),
        ),
    })
}

/// Whether the run holding the state folder `dir` is another shard of the same count as
/// `shard`: the only run that may share a folder with this one.
fn is_sibling_shard(dir: &Path, shard: Option<Shard>) -> bool {
    let theirs = dir
        .file_name()
        .and_then(|name| name.to_str())
        .and_then(Shard::from_dir_name);
    matches!((theirs, shard), (Some(theirs), Some(ours)) if theirs.count() == ours.count())
}

/// When the run took its lock, by the clock of the folder's file system.
fn lock_time(run_dir: &Path) -> SystemTime {
    std::fs::metadata(run_dir.join(lock::LOCK_FILE))
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::USAGE;

    fn code(err: &anyhow::Error) -> u8 {
        err.downcast_ref::<ExpectedError>().expect("expected").code
    }

    /// The one way in, as a run uses it: opening holds the folder (status sees it, a
    /// shard of another count is refused), a run refused by its money check leaves the
    /// layout as it was, going ahead records it and gives the shard's part, and reading
    /// takes no lock and writes nothing.
    #[tokio::test]
    async fn a_run_takes_the_folder_once_and_records_its_layout_only_when_it_goes_ahead() {
        let out = tempfile::tempdir().unwrap();
        let shard = Shard::new(1, 2, "test").unwrap();
        let folder = Folder::new(out.path(), Some(shard));
        assert_eq!(folder.holder().unwrap(), LockState::Free);
        assert!(!folder.has_state());
        let opened = folder.open("sim").await.unwrap();
        assert!(matches!(folder.holder().unwrap(), LockState::Held(Some(_))));
        let other = Folder::new(out.path(), Some(Shard::new(0, 3, "test").unwrap()));
        let refused = other.open("sim").await.err().expect("shards of two counts");
        assert_eq!(code(&refused), LOCKED, "{refused:#}");
        // Refused by what it would buy: dropped without going ahead.
        drop(opened);
        assert_eq!(folder.holder().unwrap(), LockState::Free);
        assert_eq!(folder.shard_count(), None);
        let opened = folder.open("sim").await.unwrap();
        assert_eq!(
            opened.folded.next_seq(),
            2,
            "the refused run's start is journaled"
        );
        let run = opened.go_ahead(Some(Vec::new())).unwrap();
        assert_eq!(folder.shard_count(), Some(2));
        let part = run.shard_part.as_ref().expect("a shard's run has a part");
        assert_eq!(part.dir, layout::run_dir(out.path(), Some(shard)));
        let read = folder.read().unwrap();
        assert_eq!(read.next_seq(), 3);
        assert!(matches!(folder.holder().unwrap(), LockState::Held(Some(_))));
        drop(run);
        let elsewhere = folder.open("https://api.example").await.err();
        let elsewhere = elsewhere.expect("a folder of another API");
        assert_eq!(code(&elsewhere), USAGE, "{elsewhere:#}");
        assert!(elsewhere.to_string().contains("holds runs against sim"));
    }
}
