//! The one way into an output folder: [`Folder`]. A run opens it once ([`Folder::open`]:
//! its locks, the sweep of what a killed run left, every journal folded, the run's own
//! opened for writing), decides what to buy from the fold, and, when the run goes ahead,
//! takes what it writes with ([`OpenFolder::go_ahead`]: the folder's layout recorded, the
//! journal, the shard's part of `results.csv`). `plan` and `status` read the same folder
//! through it and write nothing; `report` asks it which shards wrote last.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context as _;

use super::layout;
use super::lock::{self, LockState};
use super::open::{FirstCheckpoint, FolderLocks};
use crate::journal;
use crate::journal::folded::Folded;
use crate::journal::writer::JournalWriter;
use crate::report::shards::ShardPart;
use crate::shard::Shard;
use crate::variant::VariantTable;

/// An output folder, and the shard of it that a command works on (none: the whole
/// folder). Every command comes in through it (see the module's doc).
#[derive(Clone, Debug)]
pub struct Folder {
    pub(super) dir: PathBuf,
    pub(super) shard: Option<Shard>,
}

/// The output folder, taken by a run: its locks, the run's journal, and every journal of
/// the folder folded, run by run (never held as records: see `journal::folded`). Dropped
/// without [`OpenFolder::go_ahead`] (a refused run), it lets the folder go as it found
/// it, but for the run's start in its journal.
pub struct OpenFolder {
    /// What every earlier record of the folder says.
    pub folded: Folded,
    pub(super) locks: FolderLocks,
    pub(super) journal: JournalWriter,
    pub(super) folder: Folder,
    pub(super) first_checkpoint: Option<FirstCheckpoint>,
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
    /// The folder had no usable checkpoint: its first, to write at the run's end, with
    /// the locks still held.
    pub first_checkpoint: Option<FirstCheckpoint>,
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
        super::open::open(self.clone(), api).await
    }

    /// Every journal of the folder folded, as a run reads them; read, never written. A
    /// damaged one is the user's to see.
    pub fn read(&self) -> anyhow::Result<Folded> {
        layout::fold_all(&self.dir).map_err(super::open::usage_if_damaged)
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
    pub fn go_ahead(self, all: Option<Arc<VariantTable>>) -> anyhow::Result<RunFolder> {
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
            first_checkpoint: self.first_checkpoint,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::{ExpectedError, LOCKED, USAGE};

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
        let run = opened
            .go_ahead(Some(Arc::new(VariantTable::new(Arc::default()))))
            .unwrap();
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
