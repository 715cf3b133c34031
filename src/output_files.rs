//! Conventions of the files stembatch leaves in an output folder for the user: their mode,
//! the names of its temporary files (which a killed run may leave behind), and making a
//! new name survive a power loss.
//!
//! A rename or a new file lives in its folder, not in the file: until the folder itself is
//! fsynced, a power loss can undo it while the journal, already durable, says it happened
//! (SQLite and nextest's record store sync the folder for the same reason). Every new
//! file, rename and folder that must survive goes through [`sync_parent`],
//! [`persist_durably`] or [`create_dir_all_durably`].

use std::io;
use std::path::Path;

/// Output files are the user's to share: readable by all as far as the umask allows, not
/// the owner-only mode temporary files are created with.
pub fn permissions() -> std::fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    std::fs::Permissions::from_mode(0o644)
}

/// Prefix and suffix of a download's temporary file, beside its destination.
pub const DOWNLOAD_TEMP: (&str, &str) = (".download-", ".part");
/// Prefix and suffix of a report's temporary file, beside `results.csv`.
pub const REPORT_TEMP: (&str, &str) = (".results-", ".csv");

/// Prefix and suffix of the listening page's temporary file, beside `report.html`.
pub const PAGE_TEMP: (&str, &str) = (".report-", ".html");

/// Prefix and suffix of the temporary file of the shard layout, in the state folder.
pub const LAYOUT_TEMP: (&str, &str) = (".shards-", ".json");

/// Prefix and suffix of the temporary file of the page's stems, in the state folder.
pub const PAGE_STEMS_TEMP: (&str, &str) = (".page-stems-", ".json");

/// Prefix and suffix of the temporary file of a journal checkpoint, in its state folder.
pub const CHECKPOINT_TEMP: (&str, &str) = (".checkpoint-", ".jsonl");

/// Prefix and suffix of the temporary file of the last report's waveforms, in a state
/// folder (`report::previous`).
pub const WAVES_TEMP: (&str, &str) = (".results-waves-", ".tmp");

/// Prefix and suffix of the temporary file of the last report's index, in a state folder.
pub const INDEX_TEMP: (&str, &str) = (".results-index-", ".tmp");

/// Prefix and suffix of the temporary file of the page's stamp, in the state folder.
pub const PAGE_STAMP_TEMP: (&str, &str) = (".page-stamp-", ".tmp");

/// Whether `name` is one of stembatch's temporary files.
pub fn is_temporary(name: &str) -> bool {
    [
        DOWNLOAD_TEMP,
        REPORT_TEMP,
        PAGE_TEMP,
        LAYOUT_TEMP,
        PAGE_STEMS_TEMP,
        CHECKPOINT_TEMP,
        WAVES_TEMP,
        INDEX_TEMP,
        PAGE_STAMP_TEMP,
    ]
    .iter()
    .any(|(prefix, suffix)| name.starts_with(prefix) && name.ends_with(suffix))
}

/// Whether an I/O error says the disk is full (ENOSPC). Rust maps it to `StorageFull`;
/// the raw code is checked too for an error built from the number alone.
pub fn is_disk_full(cause: &std::io::Error) -> bool {
    /// ENOSPC on Linux and the BSDs (macOS included).
    const ENOSPC: i32 = 28;
    cause.kind() == std::io::ErrorKind::StorageFull
        || (cfg!(unix) && cause.raw_os_error() == Some(ENOSPC))
}

/// The folder that holds `path` (`.` for a bare name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Fsyncs the folder that holds `path`, so that `path`'s name in it (a new file, a rename
/// into place) survives a power loss. The error names the folder.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = parent_of(path);
    #[cfg(test)]
    synced::record(dir);
    std::fs::File::open(dir)
        .and_then(|folder| folder.sync_all())
        .map_err(|err| io::Error::new(err.kind(), format!("syncing {}: {err}", dir.display())))
}

/// Syncs `temp`'s content, renames it to `target` and syncs `target`'s folder: the atomic
/// write of a file that must survive a power loss whole, old or new, never empty.
pub fn persist_durably(temp: tempfile::NamedTempFile, target: &Path) -> io::Result<()> {
    temp.as_file().sync_all()?;
    temp.persist(target).map_err(|e| e.error)?;
    sync_parent(target)
}

/// Creates `dir` and its missing parents, then syncs the folder of each one it created,
/// from the outermost in.
pub fn create_dir_all_durably(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut current = dir;
    while !current.exists() {
        missing.push(current.to_owned());
        match current.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => current = parent,
            _ => break,
        }
    }
    std::fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        sync_parent(created)?;
    }
    Ok(())
}

/// In tests, which folders were synced: the proof that a write took the durable path.
#[cfg(test)]
pub(crate) mod synced {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    static SYNCED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    pub(super) fn record(dir: &Path) {
        SYNCED.lock().unwrap().push(dir.to_owned());
    }

    /// How many times `dir` was synced so far (tests run in parallel: each asks about
    /// its own temporary folder).
    pub(crate) fn count(dir: &Path) -> usize {
        SYNCED.lock().unwrap().iter().filter(|d| *d == dir).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_persisted_file_and_new_folders_sync_the_folders_that_hold_them() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("results.csv");
        let mut temp = tempfile::NamedTempFile::new_in(dir.path()).unwrap();
        io::Write::write_all(&mut temp, b"a,b\n").unwrap();
        persist_durably(temp, &target).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"a,b\n");
        assert_eq!(synced::count(dir.path()), 1);

        let nested = dir.path().join("audio").join("ballad");
        create_dir_all_durably(&nested).unwrap();
        assert!(nested.is_dir());
        assert_eq!(synced::count(dir.path()), 2, "the new audio/ in the folder");
        assert_eq!(
            synced::count(&dir.path().join("audio")),
            1,
            "ballad/ in audio/"
        );
        // Nothing new, nothing synced.
        create_dir_all_durably(&nested).unwrap();
        assert_eq!(synced::count(&dir.path().join("audio")), 1);

        let missing = dir.path().join("gone").join("x");
        assert!(sync_parent(&missing)
            .unwrap_err()
            .to_string()
            .contains("gone"));
    }
}
