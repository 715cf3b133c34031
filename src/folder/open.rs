//! Taking the output folder for a run: its locks, the sweep of what a killed run left,
//! and the journals, the run's own opened for writing and every other one read.
//!
//! Who may share a folder: the shards of one count, at once. Each holds its own lock
//! (`shard-I-of-N/lock`, naming it) and the whole folder's lock *shared*, so that a
//! whole-folder run, which takes that lock exclusively, cannot start while shards run,
//! nor shards while it runs; a shard of another count is refused by name. Nothing here
//! sends anything: every refusal comes before the first request.

use std::path::Path;
use std::time::SystemTime;

use crate::exit::{ExpectedError, LOCKED};
use crate::journal::checkpoint::WriterWhen;
use crate::journal::format::Record;
use crate::journal::writer::JournalWriter;
use crate::journal::{self, JournalError};
use crate::shard::Shard;

use super::entry::{Folder, OpenFolder};
use super::layout;
use super::lock::{self, LockError, LockState, RunLock};

/// The locks a run holds until it ends.
#[derive(Debug)]
pub struct FolderLocks {
    _own: RunLock,
    /// A shard's shared hold on the whole folder's lock.
    _whole: Option<RunLock>,
}

/// Takes the output folder for this run (shard `shard`, or the whole folder) and starts
/// its journal. Refuses a folder whose journals are from another API.
pub(super) async fn open(taken: Folder, api: &str) -> anyhow::Result<OpenFolder> {
    let (dir, shard) = (taken.dir.clone(), taken.shard);
    let out_dir = dir.as_path();
    let folder = tokio::task::spawn_blocking(move || open_blocking(taken)).await??;
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
    // shard ran it. Read (and checked) before the own is opened to append after it; from
    // the folder's checkpoint, which the run brings up to date if the journals grew much
    // since (a run killed before its end wrote none).
    let writer = checkpoint_writer(&run_dir, WriterWhen::Opening);
    let opened = layout::fold_all_writing(out_dir, Some(writer)).map_err(usage_if_damaged)?;
    // A new folder (no journal yet): its first checkpoint comes with this run's end, so
    // that the next night opens from one like every night after, instead of folding this
    // night's journal whole. (An older folder's open writes one when it has none.)
    let first_checkpoint = opened.folded.is_empty().then(|| FirstCheckpoint {
        out_dir: out_dir.to_owned(),
        own: run_dir.clone(),
    });
    let folded = opened.folded;
    let own_path = run_dir.join(journal::JOURNAL_FILE);
    let journal = JournalWriter::open_append(&own_path).map_err(usage_if_damaged)?;
    Ok(OpenFolder {
        locks,
        journal,
        folded,
        folder,
        first_checkpoint,
    })
}

/// The claim to write the checkpoint of `run_dir`, whose lock this run holds, at `when`
/// in the run.
fn checkpoint_writer(run_dir: &Path, when: WriterWhen) -> journal::checkpoint::Writer<'_> {
    journal::checkpoint::Writer {
        own: run_dir,
        over: journal::checkpoint::OPEN_WRITE_OVER,
        released: |dir| matches!(lock::holder(dir), Ok(LockState::Free)),
        when,
    }
}

/// The first checkpoint of a new folder, written at its first run's end while the run
/// still holds the folder's locks: the night's journal folded once more (at 100,000
/// variants about 2 s, and the fresh run's peak: 134 MiB), so that the second night opens
/// like every later one.
#[derive(Debug)]
pub struct FirstCheckpoint {
    out_dir: std::path::PathBuf,
    own: std::path::PathBuf,
}

impl FirstCheckpoint {
    /// Folds the folder's journals and writes the checkpoint. One that cannot be written
    /// is said (as a run's open says it); the next run's open writes it.
    pub fn write(self) {
        let writer = checkpoint_writer(&self.own, WriterWhen::Ending);
        if let Err(err) = layout::fold_all_writing(&self.out_dir, Some(writer)) {
            tracing::debug!(error = %err, "cannot fold the new folder's journal for its first checkpoint; the next run writes it");
        }
    }
}

/// A damaged or newer journal needs the user before anything is sent; a disk that fails
/// to read it is not a usage error.
pub(super) fn usage_if_damaged(err: JournalError) -> anyhow::Error {
    match err {
        JournalError::Corrupt { .. }
        | JournalError::TooNew { .. }
        | JournalError::CheckpointTooNew { .. } => {
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
