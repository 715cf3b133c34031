//! Issue 17, items 2 and 3: nothing paid is left behind. Tasks of variants that changed or
//! left the manifest while in flight are collected into `superseded/`; a finished variant
//! keeps its tracks when the provider's copies have expired, and a track file changed on
//! disk is moved aside, never overwritten in place.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crate::helpers::*;
use stembatch::sim::{SimConfig, SimHandle};

/// Six explicit variants of one stem, `v0`..`v5`, tagged `piano 0`..`piano 5`.
fn six_variants(head: &str) -> String {
    let mut text = format!("{head}\n[[stem]]\nurl = \"https://stems.example.com/a.wav\"\n");
    for i in 0..6 {
        text.push_str(&format!(
            "[[stem.variant]]\nname = \"v{i}\"\ntags = \"piano {i}\"\n"
        ));
    }
    text
}

/// `v0` and `v1` get new tags, `v2` leaves the manifest.
fn changed_and_removed(text: &str) -> String {
    text.replace("tags = \"piano 0\"", "tags = \"strings 0\"")
        .replace("tags = \"piano 1\"", "tags = \"strings 1\"")
        .replace("[[stem.variant]]\nname = \"v2\"\ntags = \"piano 2\"\n", "")
}

/// Item 2: a night killed with six tasks in flight; then two variants change their tags
/// and a third leaves the manifest. The three tasks already paid for are polled and their
/// tracks land in `superseded/` (their old variant ids in the names); `plan --out` and the
/// run's first lines count them; the next night does not ask about them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_paid_tasks_of_changed_and_removed_variants_are_collected_into_superseded() {
    let sim = start_sim(SimConfig {
        task_duration: Duration::from_secs(2),
        ..quick_sim()
    })
    .await;
    let (_dir, manifest, out, killed, old_ids) = a_night_killed_with_six_in_flight(&sim).await;
    assert_eq!(old_ids.len(), 6, "{killed:?}");
    let task_of_tags: HashMap<String, String> = sim
        .submissions()
        .into_iter()
        .map(|s| (s.request.input.tags, s.task_id))
        .collect();

    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, changed_and_removed(&text)).unwrap();
    let plan = stembatch(
        &["plan", path_str(&manifest), "--out", path_str(&out)],
        None,
    )
    .await;
    let said = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert_eq!(plan.status.code(), Some(0), "{}", stderr(&plan));
    assert!(
        said.contains("would submit 2 new tasks"),
        "the orphans are never bought again: {said}"
    );
    assert!(
        said.contains(
            "collect 3 paid tasks of variants that changed or left the manifest into superseded/"
        ),
        "{said}"
    );

    let second = run_against(&sim, &manifest, &out).await;
    let log = stderr(&second);
    assert_eq!(second.status.code(), Some(0), "{log}");
    let first_lines: String = log.lines().take(6).collect::<Vec<_>>().join("\n");
    assert!(first_lines.contains("collect=3"), "{first_lines}");
    assert!(
        log.contains("3 paid tasks of variants that changed or left the manifest: 3 collected"),
        "{log}"
    );
    assert_eq!(
        sim.stats().tasks_created,
        8,
        "two changed variants bought anew"
    );
    for (variant, tags) in [("v0", "piano 0"), ("v1", "piano 1"), ("v2", "piano 2")] {
        let old = &old_ids[variant];
        let task = &task_of_tags[tags];
        for track in 1..=2 {
            let path = out.join(format!("superseded/{old}-{track}.wav"));
            let bytes =
                std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}\n{log}", path.display()));
            assert!(
                Some(bytes) == sim.track_bytes(task, track),
                "{} is not track {track} of {task}",
                path.display()
            );
        }
    }
    let (_, rows) = read_results(&out);
    let variants: std::collections::BTreeSet<_> =
        rows.iter().map(|r| r["variant"].as_str()).collect();
    assert_eq!(
        variants.into_iter().collect::<Vec<_>>(),
        ["v0", "v1", "v3", "v4", "v5"],
        "results.csv lists the manifest's variants"
    );
    assert_all_finished_with_the_simulators_files(&sim, &out, 5);

    let polled = sim.stats().detail_calls;
    let third = run_against(&sim, &manifest, &out).await;
    assert_eq!(third.status.code(), Some(0), "{}", stderr(&third));
    assert_eq!(
        sim.stats().detail_calls,
        polled,
        "collected tasks are journaled and never asked about again"
    );
    assert_eq!(sim.stats().tasks_created, 8);
}

/// The superseded name of a track at `file` (`audio/<stem>/<name>.<ext>`) changed on disk.
fn changed_name(file: &str) -> String {
    let rest = file.strip_prefix("audio/").unwrap();
    let (name, ext) = rest.rsplit_once('.').unwrap();
    format!("superseded/{name}.changed.{ext}")
}

/// Item 3: the provider's copies have expired (its CDN answers 404) when a track file of
/// a finished variant is found changed or missing. The variant stays `finished` with its
/// tracks in `results.csv`, the changed file is left as it is (never overwritten), and the
/// row says what could not be restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_a_finished_variant_keeps_its_tracks_when_the_providers_copies_expired() {
    const TTL: Duration = Duration::from_secs(3);
    let sim = start_sim(SimConfig {
        result_ttl: Some(TTL),
        ..quick_sim()
    })
    .await;
    let (dir, manifest) = write_manifest(&variants_manifest(FAST_RUN, 2));
    let out = dir.path().join("out");
    let started = std::time::Instant::now();
    let first = run_against(&sim, &manifest, &out).await;
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert!(
        started.elapsed() < TTL,
        "the first night downloaded in time"
    );
    let (_, before) = read_results(&out);
    assert_eq!(before.len(), 4);
    // A user's edit of one track (same size), and another track deleted.
    let edited = out.join(&before[0]["file"]);
    let mut bytes = std::fs::read(&edited).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    std::fs::write(&edited, &bytes).unwrap();
    std::fs::remove_file(out.join(&before[3]["file"])).unwrap();
    tokio::time::sleep(TTL.saturating_sub(started.elapsed()) + Duration::from_millis(500)).await;

    let second = run_against(&sim, &manifest, &out).await;
    let log = stderr(&second);
    assert_eq!(second.status.code(), Some(0), "{log}");
    let (_, after) = read_results(&out);
    assert_eq!(after.len(), 4, "no track dropped: {after:?}");
    for (row, earlier) in after.iter().zip(&before) {
        assert_eq!(row["status"], "finished", "{row:?}");
        assert_eq!(row["file"], earlier["file"]);
        assert_eq!(row["sha256"], earlier["sha256"]);
    }
    assert_eq!(std::fs::read(&edited).unwrap(), bytes, "never overwritten");
    let missing = &after[3];
    assert!(
        missing["error"].contains("could not be downloaded again"),
        "{missing:?}"
    );
    let said = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("could not be downloaded again"))
        .count();
    assert_eq!(
        said, 2,
        "one warning per variant in the closing lines: {log}"
    );
    // The next night still lists every track.
    let third = run_against(&sim, &manifest, &out).await;
    assert_eq!(third.status.code(), Some(0), "{}", stderr(&third));
    let (_, last) = read_results(&out);
    assert_eq!(last.len(), 4, "{last:?}");
    assert!(last.iter().all(|r| r["status"] == "finished"), "{last:?}");
    assert_eq!(sim.stats().tasks_created, 2, "nothing bought again");
}

/// Item 3: a track file changed on disk, while the provider still serves the track, is
/// moved to `superseded/<stem>/<name>.changed.<ext>` before the track is downloaded again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_a_track_changed_on_disk_is_moved_aside_before_the_download_again() {
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = write_manifest(&variants_manifest(FAST_RUN, 1));
    let out = dir.path().join("out");
    let first = run_against(&sim, &manifest, &out).await;
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let (_, rows) = read_results(&out);
    let file = rows[0]["file"].clone();
    let edited = b"RIFF a user's own edit".to_vec();
    std::fs::write(out.join(&file), &edited).unwrap();

    let second = run_against(&sim, &manifest, &out).await;
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert_all_finished_with_the_simulators_files(&sim, &out, 1);
    let aside = out.join(changed_name(&file));
    assert_eq!(
        std::fs::read(&aside).unwrap_or_default(),
        edited,
        "{} holds the edit",
        aside.display()
    );
    assert_eq!(sim.stats().tasks_created, 1);
}

/// Item 2 with shards: after a whole-folder night killed in flight, three variants leave
/// the manifest and two shards run the next night at once. Each orphan is collected by
/// the shard its old id hashes to, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_shards_collect_each_orphan_once() {
    let sim = start_sim(SimConfig {
        task_duration: Duration::from_secs(2),
        ..quick_sim()
    })
    .await;
    let (_dir, manifest, out, _, old_ids) = a_night_killed_with_six_in_flight(&sim).await;
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    for i in 2..5 {
        text = text.replace(
            &format!("[[stem.variant]]\nname = \"v{i}\"\ntags = \"piano {i}\"\n"),
            "",
        );
    }
    std::fs::write(&manifest, text).unwrap();

    let shards = (0..2).map(|i| {
        let mut command = run_command(&sim, &manifest, &out, &["--shard", &format!("{i}/2")]);
        async move {
            tokio::time::timeout(RUN_TIMEOUT, command.output())
                .await
                .expect("the shard finished in time")
                .expect("the shard ran")
        }
    });
    let mut collecting = 0;
    for run in futures::future::join_all(shards).await {
        let log = stderr(&run);
        assert_eq!(run.status.code(), Some(0), "{log}");
        let line = log.lines().find(|l| l.contains("starting from")).unwrap();
        let n = line
            .split("collect=")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        collecting += n.parse::<usize>().unwrap();
    }
    assert_eq!(collecting, 3, "each orphan by one shard");
    assert_eq!(sim.stats().tasks_created, 6, "nothing bought");
    let superseded = files_below(&out.join("superseded"));
    assert_eq!(superseded.len(), 6, "two tracks each, once: {superseded:?}");
    for variant in ["v2", "v3", "v4"] {
        let old = &old_ids[variant];
        for track in 1..=2 {
            assert!(out.join(format!("superseded/{old}-{track}.wav")).is_file());
        }
    }
}

/// A night of six variants killed with -9 once all six tasks are created: the folder,
/// its manifest and output, the rows the kill left and each variant's old id by name.
async fn a_night_killed_with_six_in_flight(
    sim: &SimHandle,
) -> (
    tempfile::TempDir,
    PathBuf,
    PathBuf,
    Vec<HashMap<String, String>>,
    HashMap<String, String>,
) {
    let (dir, manifest) = write_manifest(&six_variants(FAST_RUN));
    let out = dir.path().join("out");
    let mut child = run_command(sim, &manifest, &out, &[])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("six tasks in flight", || sim.stats().tasks_created == 6).await;
    // Let the journal's fsyncs of the answers land, then kill without a word.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(signal_and_wait(&mut child, "-KILL").await, None);
    let (_, killed) = read_results(&out);
    let old_ids: HashMap<String, String> = killed
        .iter()
        .map(|r| (r["variant"].clone(), r["variant_id"].clone()))
        .collect();
    (dir, manifest, out, killed, old_ids)
}
