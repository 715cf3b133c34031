//! Before a run: what earlier runs left in the output folder. Reads the journal's verdicts
//! (`scheduler::start`, `scheduler::rerun`), checks the track files of finished variants on
//! disk, moves the tracks of changed variants to `superseded/`, and turns all of it into
//! each variant's entry, and the paid tasks of variants no longer in the manifest into
//! entries to collect (`scheduler::rerun::orphans`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::download::modified_ns;
use crate::journal::format::EndStatus;
use crate::journal::replay::{Prior, PriorTrack, Sha256Digest};
use crate::journal::stored::TrackStore;
use crate::outcome::{VariantRecord, VariantStatus};
use crate::scheduler::rerun::{self, Intent, Move, Orphan};
use crate::scheduler::start::{Rerun, Start};
use crate::scheduler::state::Entry;
use crate::shard::Shard;
use crate::variant::{VariantId, VariantTable};

/// What a run will do, before it does it.
pub struct Resume {
    /// Each variant's entry, in manifest order.
    pub entries: Vec<Entry>,
    /// Each variant's intent, by id.
    pub intents: HashMap<VariantId, Intent>,
    /// The earlier tracks that changed variants would write over.
    pub moves: Vec<Move>,
    /// The paid tasks of variants no longer in the manifest (this shard's) to collect.
    pub orphans: Vec<Orphan>,
}

impl Resume {
    /// How many variants have each intent.
    pub fn counts(&self) -> BTreeMap<Intent, usize> {
        let mut counts = BTreeMap::new();
        for intent in self.intents.values() {
            *counts.entry(*intent).or_default() += 1;
        }
        counts
    }

    /// Tasks the run will buy, at most (orphans are never bought).
    pub fn new_tasks(&self) -> usize {
        self.intents.values().filter(|i| i.buys()).count()
    }

    /// The orphans as the run state takes them: each polls its task.
    pub fn orphan_entries(&self) -> Vec<Entry> {
        self.orphans
            .iter()
            .map(|orphan| Entry {
                id: orphan.variant_id.clone(),
                start: Start::Poll {
                    task_id: orphan.task_id.clone(),
                },
                record: VariantRecord {
                    task_id: Some(orphan.task_id.clone()),
                    submitted_at: Some(orphan.submitted_at),
                    ..VariantRecord::default()
                },
                kept_tracks: Vec::new(),
            })
            .collect()
    }
}

/// Decides every variant's start from what the journals say of it (`priors`, as
/// `journal::replay` folds them, their tracks' entries in `store`), reading (never
/// changing) the output folder. Each prior is dropped as its entry is made, so that the
/// two are never held whole together.
/// `variants` are the run's, each built as it is looked at and dropped. `listed` is every
/// variant of the manifest (all shards'): a paid task of a variant not among them is an
/// orphan, collected by the run of the `shard` it hashes to (or by the only run).
pub(super) async fn prepare(
    variants: &VariantTable,
    listed: &VariantTable,
    shard: Option<Shard>,
    priors: HashMap<VariantId, Prior>,
    store: &TrackStore,
    out_dir: &Path,
    rerun: Rerun,
) -> std::io::Result<Resume> {
    let mut orphans = rerun::orphans(|id| listed.contains(id), &priors, rerun.now);
    orphans.retain(|o| shard.is_none_or(|shard| shard.contains(&o.variant_id)));
    let (mut priors, intact) = check_finished_tracks(variants, priors, out_dir).await?;
    let (planned, moves) = rerun::plan(variants.iter(), &priors, &intact, rerun);
    let mut entries = Vec::with_capacity(variants.len());
    let mut intents = HashMap::with_capacity(variants.len());
    for ((index, id), (start, intent)) in variants.ids().enumerate().zip(planned) {
        if intent == Intent::RetryAfterUnknown {
            let variant = variants.at(index);
            warn!(
                variant_id = %variant.id, stem = %variant.stem.name, variant = %variant.name,
                "an earlier submit of this variant had an unknown outcome: submitting again (--retry-failed) may create a duplicate task"
            );
        }
        let (mut record, tracks) = match priors.remove(&id) {
            Some(prior) => prior.into_record(),
            None => (VariantRecord::default(), Vec::new()),
        };
        let kept_tracks = match start {
            // Read back when its rows are written: the folder's kept tracks are never
            // all in memory.
            Start::Keep => tracks,
            // Downloaded again: the run merges what lands into its tracks (few variants).
            _ => {
                record.tracks = store.records(&tracks).map_err(std::io::Error::other)?;
                Vec::new()
            }
        };
        if start == Start::Keep && record.status == VariantStatus::Finished {
            // Its tracks are whole again: an earlier night's note that one could not be
            // downloaded again no longer holds.
            record.error = None;
        }
        entries.push(Entry {
            id: id.clone(),
            start,
            record,
            kept_tracks,
        });
        intents.insert(id, intent);
    }
    Ok(Resume {
        entries,
        intents,
        moves,
        orphans,
    })
}

/// Says, on every run, what it will do with its variants: a folder that unexpectedly
/// starts afresh (and pays for every variant again) shows in the first lines of the log.
pub(super) fn log_summary(resume: &Resume, fresh_folder: bool) {
    let counts = resume.counts();
    let count = |intent| counts.get(&intent).copied().unwrap_or(0);
    let from = match fresh_folder {
        true => "a new output folder",
        false => "the journal",
    };
    info!(
        new = count(Intent::New),
        changed = count(Intent::Changed),
        retry = count(Intent::Retry) + count(Intent::RetryAsked) + count(Intent::RetryAfterUnknown),
        resume = count(Intent::Resume) + count(Intent::Redownload),
        keep = count(Intent::Keep) + count(Intent::KeepUnknown),
        unusable = count(Intent::Unusable),
        collect = resume.orphans.len(),
        new_tasks = resume.new_tasks(),
        "starting from {from}",
    );
    if !resume.orphans.is_empty() {
        info!(
            orphans = resume.orphans.len(),
            "collecting {} paid tasks of variants that changed or left the manifest into superseded/ (never bought again)",
            resume.orphans.len()
        );
    }
}

/// Moves the earlier tracks of changed variants to `superseded/` before anything new can
/// land on their paths: paid audio is never overwritten or deleted.
pub(super) async fn move_superseded(out_dir: &Path, moves: Vec<Move>) -> std::io::Result<usize> {
    let out_dir = out_dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut moved = 0;
        for Move { from, to } in moves {
            let (from, to) = (out_dir.join(from), out_dir.join(to));
            if !from.is_file() {
                continue;
            }
            if let Some(parent) = to.parent() {
                crate::output_files::create_dir_all_durably(parent)?;
            }
            let to = free_name(to);
            std::fs::rename(&from, &to)?;
            crate::output_files::sync_parent(&to)?;
            crate::output_files::sync_parent(&from)?;
            info!(from = %from.display(), to = %to.display(), "a changed variant's earlier track moved aside");
            moved += 1;
        }
        Ok(moved)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// `path`, or `path.1`, `path.2`, … when it is taken: nothing in `superseded/` is ever
/// replaced either.
fn free_name(path: PathBuf) -> PathBuf {
    if !path.exists() {
        return path;
    }
    (1..)
        .map(|n| {
            let mut name = path.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        })
        .find(|candidate| !candidate.exists())
        .expect("some name is free")
}

/// The finished variants of `variants` whose tracks are not whole on disk, each `false`
/// (as `rerun::plan` reads it): whole is every journaled track file on disk with its size
/// and sha256 (its size and modification time, when those are as journaled). Hashing
/// runs off the async threads; `priors` goes to the blocking thread and comes back,
/// rather than a copy of every track.
async fn check_finished_tracks(
    variants: &VariantTable,
    priors: HashMap<VariantId, Prior>,
    out_dir: &Path,
) -> std::io::Result<(HashMap<VariantId, Prior>, HashMap<VariantId, bool>)> {
    let finished = |prior: &Prior| {
        prior
            .end
            .as_ref()
            .is_some_and(|e| e.status == EndStatus::Finished)
    };
    let to_check: Vec<VariantId> = variants
        .ids()
        .filter(|id| {
            priors
                .get(id)
                .is_some_and(|p| finished(p) && p.task.is_some())
        })
        .collect();
    let out_dir: PathBuf = out_dir.to_owned();
    tokio::task::spawn_blocking(move || {
        // Only the broken ones are named (`rerun::plan` takes a variant it does not find
        // as intact): a finished folder's check holds no map of every variant.
        let broken_in = |ids: &[VariantId]| -> Vec<(VariantId, bool)> {
            ids.iter()
                .filter(|id| {
                    let tracks = priors[*id].task.as_ref().map_or(&[][..], |t| &t.tracks[..]);
                    tracks.is_empty() || !tracks.iter().all(|t| track_intact(&out_dir, t))
                })
                .map(|id| (id.clone(), false))
                .collect()
        };
        // A folder's tracks are checked on several threads (one a core, eight at most): a
        // `stat` each is the kernel's path lookup, and a year of nights is hundreds of
        // thousands of files.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        let chunk = to_check.len().div_ceil(threads).max(1);
        let broken = std::thread::scope(|scope| {
            let checks: Vec<_> = to_check
                .chunks(chunk)
                .map(|ids| scope.spawn(|| broken_in(ids)))
                .collect();
            checks
                .into_iter()
                .flat_map(|check| check.join().expect("a track check does not panic"))
                .collect()
        });
        (priors, broken)
    })
    .await
    .map_err(std::io::Error::other)
}

fn track_intact(out_dir: &Path, track: &PriorTrack) -> bool {
    let path = out_dir.join(&*track.file);
    let Ok(metadata) = std::fs::metadata(&path) else {
        info!(file = %track.file, "track file missing");
        return false;
    };
    if metadata.len() != track.bytes {
        info!(file = %track.file, "track file has the wrong size");
        return false;
    }
    // Unchanged size and time: trusted without reading it, as git and rsync do, so that
    // a folder that grows night after night is not hashed whole every night.
    if track.modified_ns.is_some() && modified_ns(&metadata) == track.modified_ns {
        return true;
    }
    let Ok(mut file) = std::fs::File::open(&path) else {
        return false;
    };
    let mut hasher = Sha256::new();
    if std::io::copy(&mut file, &mut hasher).is_err() {
        return false;
    }
    let same = track.sha256 == Sha256Digest::Bytes(hasher.finalize().into());
    if !same {
        info!(file = %track.file, "track file is damaged");
    }
    same
}
