//! Re-runs into the same output folder: what is skipped, resumed, downloaded again or
//! submitted again; the lock; a torn journal.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::helpers::*;
use stembatch::sim::SimConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_skips_finished_variants_and_downloads_damaged_files_again() {
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = write_manifest(&variants_manifest(FAST_RUN, 4));
    let out = dir.path().join("out");
    assert_eq!(
        run_against(&sim, &manifest, &out).await.status.code(),
        Some(0)
    );
    let first = sim.stats();

    let output = run_against(&sim, &manifest, &out).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let second = sim.stats();
    assert_eq!(
        (second.submit_calls, second.detail_calls),
        (first.submit_calls, first.detail_calls)
    );
    assert_all_finished_with_the_simulators_files(&sim, &out, 4);

    let (_, rows) = read_results(&out);
    let leftover = out
        .join(&rows[1]["file"])
        .with_file_name(".download-killed.part");
    std::fs::write(&leftover, b"RIFF half a track").unwrap();
    std::fs::remove_file(out.join(&rows[0]["file"])).unwrap();
    std::fs::write(out.join(&rows[3]["file"]), b"RIFF damaged").unwrap();
    // Damage of the same size: the changed modification time makes it be hashed.
    let same_size = out.join(&rows[5]["file"]);
    let mut bytes = std::fs::read(&same_size).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&same_size, bytes).unwrap();
    let output = run_against(&sim, &manifest, &out).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        sim.stats().submit_calls,
        first.submit_calls,
        "nothing submitted again"
    );
    assert_all_finished_with_the_simulators_files(&sim, &out, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_variants_are_submitted_again_only_with_retry_failed() {
    let sim = start_sim(quick_sim()).await;
    let text = format!("{FAST_RUN}\n[[stem]]\nurl = \"https://stems.example.com/a.wav\"\n[[stem.variant]]\nname = \"good\"\n[[stem.variant]]\nname = \"bad\"\ntags = \"sim:fail\"\n");
    let (dir, manifest) = write_manifest(&text);
    let out = dir.path().join("out");
    assert_eq!(
        run_against(&sim, &manifest, &out).await.status.code(),
        Some(1)
    );
    assert_eq!(sim.stats().tasks_created, 2);
    assert_eq!(
        run_against(&sim, &manifest, &out).await.status.code(),
        Some(1)
    );
    assert_eq!(
        sim.stats().tasks_created,
        2,
        "a failed variant is not submitted again by itself"
    );
    let output = run_command(&sim, &manifest, &out, &["--retry-failed"])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(
        sim.stats().tasks_created,
        3,
        "only the failed variant is submitted again"
    );
    let (_, rows) = read_results(&out);
    let bad = rows.iter().find(|r| r["variant"] == "bad").unwrap();
    assert_eq!(
        (bad["status"].as_str(), bad["attempts"].as_str()),
        ("failed", "2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_leaves_in_flight_variants_pending_and_the_next_run_resumes_them() {
    let sim = start_sim(SimConfig {
        task_duration: Duration::from_secs(2),
        ..quick_sim()
    })
    .await;
    let (dir, manifest) = write_manifest(&variants_manifest(FAST_RUN, 3));
    let out = dir.path().join("out");
    let started = Instant::now();
    let output = run_command(&sim, &manifest, &out, &["--deadline", "500ms"])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(started.elapsed() < Duration::from_secs(2));
    let (_, rows) = read_results(&out);
    assert!(
        rows.iter()
            .all(|r| r["status"] == "pending" && !r["task_id"].is_empty()),
        "{rows:?}"
    );

    let output = run_against(&sim, &manifest, &out).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(sim.stats().tasks_created, 3, "resumed, not submitted again");
    assert_all_finished_with_the_simulators_files(&sim, &out, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_journal_line_is_tolerated() {
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = write_manifest(&variants_manifest(FAST_RUN, 2));
    let out = dir.path().join("out");
    assert_eq!(
        run_against(&sim, &manifest, &out).await.status.code(),
        Some(0)
    );
    let mut journal = std::fs::OpenOptions::new()
        .append(true)
        .open(out.join(".stembatch/journal.jsonl"))
        .unwrap();
    journal.write_all(br#"{"v":1,"kind":"submit_int"#).unwrap();
    drop(journal);
    let output = run_against(&sim, &manifest, &out).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(sim.stats().tasks_created, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_on_a_locked_folder_exits_4_at_once_naming_the_holder() {
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = write_manifest(&variants_manifest(FAST_RUN, 2));
    let out = dir.path().join("out");
    let state = out.join(".stembatch");
    std::fs::create_dir_all(&state).unwrap();
    let _held = stembatch::folder::lock::acquire(&state, &out).unwrap();
    let started = Instant::now();
    let output = run_against(&sim, &manifest, &out).await;
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(
        stderr(&output).contains(&format!("pid {}", std::process::id())),
        "{}",
        stderr(&output)
    );
    assert_eq!(sim.stats().submit_calls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_of_simulated_runs_is_refused_to_a_real_run() {
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = write_manifest(&variants_manifest(FAST_RUN, 1));
    let out = dir.path().join("out");
    let simulated = stembatch(
        &[
            "run",
            "--simulate",
            path_str(&manifest),
            "--out",
            path_str(&out),
        ],
        None,
    )
    .await;
    assert_eq!(simulated.status.code(), Some(0), "{}", stderr(&simulated));
    let output = run_against(&sim, &manifest, &out).await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("holds runs against simulator"),
        "{}",
        stderr(&output)
    );
    assert_eq!(sim.stats().submit_calls, 0);
}
