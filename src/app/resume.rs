//! Before a run: what earlier runs left in the output folder. Reads the journal's verdicts
//! (`journal::replay`), checks the track files of finished variants on disk, and turns
//! both into each variant's start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::download::modified_ns;
use crate::journal::format::{EndStatus, Record, TrackEntry};
use crate::journal::replay::{decide, replay, Prior, Start};
use crate::outcome::VariantRecord;
use crate::scheduler::state::Entry;
use crate::variant::{Variant, VariantId};

/// Decides every variant's start from the journal's `records`, in manifest order.
pub(super) async fn prepare(
    variants: &[Variant],
    records: &[Record],
    out_dir: &Path,
    retry_failed: bool,
) -> std::io::Result<Vec<Entry>> {
    let priors = replay(records);
    let intact = check_finished_tracks(variants, &priors, out_dir).await?;
    let mut entries = Vec::with_capacity(variants.len());
    let mut counts: HashMap<&'static str, usize> = HashMap::new();
    for variant in variants {
        let prior = priors.get(&variant.id);
        let start = decide(
            prior,
            intact.get(&variant.id).copied().unwrap_or(true),
            retry_failed,
        );
        let label = match (&start, prior) {
            (Start::Keep, Some(prior)) if prior.last_outcome_unknown && prior.task.is_none() => {
                "kept as error: an earlier submit's outcome is unknown"
            }
            (Start::Keep, _) => "kept",
            (Start::Poll { .. }, _) => "resumed",
            (Start::Redownload { .. }, _) => "downloaded again",
            // Never sent (or every intent withdrawn): new as far as money goes.
            (Start::Submit, None) => "new",
            (Start::Submit, Some(prior)) if prior.attempts == 0 => "new",
            (Start::Submit, Some(prior)) if prior.last_outcome_unknown => {
                warn!(
                    variant_id = %variant.id, stem = %variant.stem.name, variant = %variant.name,
                    "an earlier submit of this variant had an unknown outcome: submitting again (--retry-failed) may create a duplicate task"
                );
                "submitted again after an unknown outcome"
            }
            (Start::Submit, Some(_)) => "submitted again",
        };
        *counts.entry(label).or_default() += 1;
        entries.push(Entry {
            id: variant.id.clone(),
            start,
            record: prior.map(VariantRecord::from).unwrap_or_default(),
        });
    }
    // Said on every run, so a folder that unexpectedly starts afresh (and pays for every
    // variant again) shows in the first lines of the log.
    let mut summary: Vec<_> = counts
        .into_iter()
        .map(|(label, n)| format!("{n} {label}"))
        .collect();
    summary.sort();
    let from = match records.is_empty() {
        true => "a new output folder",
        false => "the journal",
    };
    info!(variants = %summary.join(", "), "starting from {from}");
    Ok(entries)
}

/// For each finished variant, whether every journaled track file is on disk with its
/// size and sha256 (its size and modification time, when those are as journaled).
/// Hashing runs off the async threads.
async fn check_finished_tracks(
    variants: &[Variant],
    priors: &HashMap<VariantId, Prior>,
    out_dir: &Path,
) -> std::io::Result<HashMap<VariantId, bool>> {
    let to_check: Vec<(VariantId, Vec<TrackEntry>)> = variants
        .iter()
        .filter_map(|v| {
            let prior = priors.get(&v.id).filter(|p| {
                p.end
                    .as_ref()
                    .is_some_and(|e| e.status == EndStatus::Finished)
            })?;
            Some((v.id.clone(), prior.task.as_ref()?.tracks.clone()))
        })
        .collect();
    let out_dir: PathBuf = out_dir.to_owned();
    tokio::task::spawn_blocking(move || {
        to_check
            .into_iter()
            .map(|(id, tracks)| {
                let intact = !tracks.is_empty() && tracks.iter().all(|t| track_intact(&out_dir, t));
                (id, intact)
            })
            .collect()
    })
    .await
    .map_err(std::io::Error::other)
}

fn track_intact(out_dir: &Path, track: &TrackEntry) -> bool {
    let path = out_dir.join(&track.file);
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
    let same = hex::encode(hasher.finalize()) == track.sha256;
    if !same {
        info!(file = %track.file, "track file is damaged");
    }
    same
}
