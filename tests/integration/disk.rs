//! A full output disk: the run stops buying what it cannot save, leaves no partial file,
//! keeps its tasks in the journal, and the run after the disk grew collects them without
//! paying for any variant twice.
//!
//! The disk is a real 3 MB tmpfs, so the ENOSPC comes from the kernel on whichever write
//! hits it first (a track, the journal, results.csv), as it would at night. Mounting needs
//! root: CI runs as root and must run this test; elsewhere it is skipped with a note.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use crate::helpers::*;
use stembatch::journal::writer::JournalWriter;
use stembatch::sim::{audio, SimConfig};

/// Variants of the manifest: far more than the small disk holds.
const VARIANTS: usize = 12;
/// Seconds per track: 15 s of 16-bit mono at 22.05 kHz is ~660 KB, so two variants (two
/// tracks each) fit on the small disk and the third one's download hits ENOSPC.
const TRACK_SECONDS: f64 = 15.0;
/// Low, so that the disk fills while most variants are not yet submitted: what the run
/// does next is what this test is about.
const CONCURRENCY: usize = 2;

/// A tmpfs mounted on a temporary folder, unmounted (lazily, so that a file still open
/// cannot block it) when dropped, a failed assertion included.
struct Tmpfs {
    /// The mount point; an `Option` so that `drop` can unmount before the folder goes.
    dir: Option<tempfile::TempDir>,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (mount's syntax: "3m"), or says why it cannot.
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("no temporary folder: {e}"))?;
        let options = format!("size={size}");
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &options, "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
                    .trim()
                    .replace('\n', " ")
            ));
        }
        Ok(Tmpfs { dir: Some(dir) })
    }

    fn path(&self) -> &Path {
        self.dir.as_ref().expect("mounted until dropped").path()
    }

    /// Grows (or shrinks) the mounted file system in place, its files kept.
    fn resize(&self, size: &str) {
        let options = format!("remount,size={size}");
        let status = Command::new("mount")
            .args(["-o", &options])
            .arg(self.path())
            .status()
            .expect("mount runs");
        assert!(status.success(), "mount -o {options}: {status}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let unmounted = Command::new("umount").arg("-l").arg(dir.path()).status();
            if !matches!(unmounted, Ok(s) if s.success()) {
                eprintln!("umount -l {} failed: {unmounted:?}", dir.path().display());
            }
            // Only the now empty mount point is left to remove.
            drop(dir);
        }
    }
}

/// The small disk, or `None` (skip) where this machine cannot mount one. In CI, which runs
/// as root, not mounting is a failure: the guard would silently stop guarding.
fn small_disk() -> Option<Tmpfs> {
    match Tmpfs::mount("3m") {
        Ok(disk) => Some(disk),
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("CI must run the full-disk test, but: {why}")
        }
        Err(why) => {
            eprintln!("skipping the full-disk test: {why} (it needs root; CI runs it)");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_submitting_leaves_no_partial_file_and_resumes() {
    let Some(disk) = small_disk() else {
        return;
    };
    let started = Instant::now();
    let sim = start_sim(SimConfig {
        track_seconds: TRACK_SECONDS,
        ..quick_sim()
    })
    .await;
    let head = FAST_RUN.replace("concurrency = 8", &format!("concurrency = {CONCURRENCY}"));
    // The manifest lives off the small disk: only the output folder fills it.
    let (_manifest_dir, manifest) = write_manifest(&variants_manifest(&head, VARIANTS));
    let out = disk.path().join("out");

    let first = run_against(&sim, &manifest, &out).await;
    let created_first = sim.stats().tasks_created;
    // 1: some variants are not finished. Never 2: a full disk is not a usage error, and 2
    // promises that nothing was sent, while tasks were bought.
    assert_eq!(
        first.status.code(),
        Some(1),
        "the run on a full disk: {}",
        stderr(&first)
    );
    let tracks_first = assert_no_partial_file(&out);
    assert!(
        tracks_first < 2 * VARIANTS,
        "the disk never filled ({tracks_first} tracks): the test guards nothing"
    );
    assert_the_journal_opens(&out).await;

    disk.resize("64m");
    let second = run_against(&sim, &manifest, &out).await;
    let created_second = sim.stats().tasks_created - created_first;
    eprintln!(
        "full disk: run 1 exited {:?} with {tracks_first} tracks on disk and {created_first} \
         tasks created; run 2 exited {:?} with {created_second} tasks created; \
         {VARIANTS} variants; {:.1} s",
        first.status.code(),
        second.status.code(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        second.status.code(),
        Some(0),
        "the run after the disk grew: {}",
        stderr(&second)
    );
    assert_all_finished_with_the_simulators_files(&sim, &out, VARIANTS);
    assert_eq!(
        (created_first + created_second) as usize,
        VARIANTS,
        "one task per variant over both runs: the second run collected the {created_first} \
         tasks of the first and submitted only what the first never did"
    );
    let submitted: std::collections::HashSet<_> = sim
        .submissions()
        .into_iter()
        .map(|s| s.request.input.tags)
        .collect();
    assert_eq!(submitted.len(), VARIANTS, "no variant was submitted twice");
    assert_no_partial_file(&out);

    // Checked last, so that a failure here still lets the rest of the contract be checked.
    // When the first track hits ENOSPC, at most `CONCURRENCY` variants are submitted and
    // not yet finished (that one included); nothing may be bought after it.
    let finished_first = tracks_first / 2;
    assert!(
        created_first as usize <= finished_first + CONCURRENCY,
        "the full disk did not stop the submits: run 1 bought {created_first} tasks for \
         {finished_first} variants it could save, with {CONCURRENCY} in flight at most \
         (results that cannot be saved should not be bought)"
    );
}

/// Asserts that no temporary or partial file is left below `out`, and that every track is
/// a complete WAV (matching its results.csv row, when the full disk let the row be
/// written). Returns the number of tracks.
fn assert_no_partial_file(out: &Path) -> usize {
    let files = files_below(out);
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy();
        assert!(
            !name.ends_with(".part") && !name.starts_with(".download-"),
            "a partial download is left: {}",
            file.display()
        );
        assert!(
            !name.starts_with(".results-"),
            "a temporary results.csv is left: {}",
            file.display()
        );
    }
    let rows = if out.join("results.csv").is_file() {
        read_results(out).1
    } else {
        Vec::new()
    };
    let tracks: Vec<&PathBuf> = files
        .iter()
        .filter(|f| f.starts_with(out.join("audio")))
        .collect();
    // The simulator's tracks are 16-bit mono: a 44-byte header, then two bytes a sample.
    let samples = (TRACK_SECONDS * f64::from(audio::SAMPLE_RATE)) as u64;
    for track in &tracks {
        let bytes = std::fs::read(track).unwrap();
        assert_eq!(
            bytes.len() as u64,
            44 + 2 * samples,
            "{} is not a complete track",
            track.display()
        );
        let relative = track.strip_prefix(out).unwrap().to_string_lossy();
        if let Some(row) = rows.iter().find(|r| r["file"] == relative) {
            assert_eq!(row["bytes"], bytes.len().to_string(), "{row:?}");
            assert_eq!(row["sha256"], sha256_of(track), "{row:?}");
        }
    }
    tracks.len()
}

/// The journal the full disk interrupted still opens, for `status` and for the library.
/// (Opening cuts off a torn last line, as the next run's opening would anyway.)
async fn assert_the_journal_opens(out: &Path) {
    let status: Output = stembatch(&["status", path_str(out)], None).await;
    assert_eq!(status.status.code(), Some(0), "status: {}", stderr(&status));
    let journal = out
        .join(".stembatch")
        .join(stembatch::journal::JOURNAL_FILE);
    let opened = JournalWriter::open(&journal);
    assert!(opened.is_ok(), "the journal opens: {:?}", opened.err());
}
