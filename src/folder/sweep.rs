//! The sweep of what a killed run left in the output folder: temporary files (downloads,
//! reports, parts of `results.csv`) that no rename ever put in place. Run only by a run
//! that took the folder with no other run in it, and only over files older than its
//! lock: a younger one belongs to a run that started since.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::journal;

/// Temporary files a killed run left behind (downloads, reports, parts of results.csv),
/// written before `since`, when this run took the folder with no other run in it: a file
/// younger than that belongs to a run that started since.
pub(super) fn remove_leftover_temporary_files(out_dir: &Path, since: SystemTime) {
    // The name first: an audio folder holds every track of every night, and a `stat`
    // of each was 6 % of a rerun over 100,000 variants.
    let is_leftover = |entry: &std::fs::DirEntry| {
        let name = entry.file_name();
        name.to_str().is_some_and(crate::output_files::is_temporary)
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|modified| modified < since)
    };
    for dir in folders_with_temporary_files(out_dir) {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if !is_leftover(&entry) {
                continue;
            }
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(file = %entry.path().display(), "removed a leftover temporary file")
                }
                Err(err) => {
                    tracing::warn!(file = %entry.path().display(), error = %err, "cannot remove a leftover temporary file")
                }
            }
        }
    }
}

/// The folders where stembatch writes temporary files: the output folder, each stem's
/// audio folder, the state folder and each shard's.
fn folders_with_temporary_files(out_dir: &Path) -> Vec<PathBuf> {
    let below = |dir: PathBuf| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.is_dir())
            .collect()
    };
    let mut dirs = vec![out_dir.to_owned(), journal::state_dir(out_dir)];
    dirs.extend(below(out_dir.join("audio")));
    dirs.extend(below(journal::state_dir(out_dir)));
    dirs
}
