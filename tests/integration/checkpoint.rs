//! The journal checkpoint over a folder that the previous release made
//! (`tests/fixtures/previous-release`: two nights of `run --simulate` by stembatch at
//! f661532, before checkpoints existed): the new release upgrades it without buying
//! anything again, and opens it from its checkpoint afterwards.

use std::collections::BTreeSet;
use std::path::Path;

use crate::helpers::{path_str, read_results, stderr, stembatch};

/// The fixture's manifest, stems and output folder, copied to a temporary folder.
fn previous_release_folder() -> tempfile::TempDir {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/previous-release");
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture, dir.path());
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        match entry.file_type().unwrap().is_dir() {
            true => copy_dir(&entry.path(), &target),
            false => {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
    }
}

fn count_lines(journal: &Path, kind: &str) -> usize {
    let needle = format!("\"kind\":\"{kind}\"");
    std::fs::read_to_string(journal)
        .unwrap()
        .lines()
        .filter(|line| line.contains(&needle))
        .count()
}

/// Each row of results.csv by what identifies a track, with what it says of it: also
/// what a rerun reads back from the journal's or the checkpoint's lines (the provider's
/// id and URL, the length, the QC figures), not held in its memory.
fn tracks(out: &Path) -> BTreeSet<Vec<String>> {
    let (_, rows) = read_results(out);
    let keep = [
        "variant_id",
        "status",
        "task_id",
        "track",
        "file",
        "sha256",
        "audio_id",
        "audio_url",
        "duration_s",
        "decoded_s",
        "peak_dbfs",
        "lufs",
        "qc",
    ];
    rows.iter()
        .map(|row| keep.iter().map(|k| row[*k].clone()).collect())
        .collect()
}

#[tokio::test]
async fn a_folder_of_the_previous_release_is_upgraded_without_buying_anything_again() {
    let dir = previous_release_folder();
    let manifest = dir.path().join("manifest.toml");
    let out = dir.path().join("folder");
    let journal = out.join(".stembatch/journal.jsonl");
    let checkpoint = out.join(".stembatch/checkpoint.jsonl");
    let intents = count_lines(&journal, "submit_intent");
    let before = tracks(&out);
    assert_eq!(before.len(), 12, "six variants of two tracks");
    assert!(!checkpoint.exists());

    let args = [
        "run",
        path_str(&manifest),
        "--simulate",
        "--out",
        path_str(&out),
    ];
    let first = stembatch(&args, None).await;
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("no usable journal checkpoint (none written yet)"),
        "{}",
        stderr(&first)
    );
    assert_eq!(
        count_lines(&journal, "submit_intent"),
        intents,
        "nothing bought again"
    );
    assert_eq!(tracks(&out), before, "results.csv is whole");
    assert!(checkpoint.is_file(), "the upgrade wrote a checkpoint");

    // From the checkpoint now; one more weight in the matrix buys only its two variants.
    let grown = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("[0.4, 0.8, 0.6]", "[0.4, 0.8, 0.6, 0.2]");
    std::fs::write(&manifest, grown).unwrap();
    let second = stembatch(&args, None).await;
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert!(
        !stderr(&second).contains("checkpoint"),
        "the checkpoint was used: {}",
        stderr(&second)
    );
    assert_eq!(count_lines(&journal, "submit_intent"), intents + 2);
    let after = tracks(&out);
    assert_eq!(after.len(), 16);
    assert!(after.is_superset(&before), "the earlier rows stand");
    assert!(after.iter().all(|row| row[1] == "finished"), "{after:?}");
}
