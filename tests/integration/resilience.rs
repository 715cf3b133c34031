//! Surviving the night: injected faults, kill -9, a wrong key, credits running out,
//! SIGTERM. Every run is bounded by the helpers' timeout.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::helpers::*;
use stembatch::journal::format::decode_all;
use stembatch::journal::replay::replay;
use stembatch::sim::{Faults, SimConfig};

/// Fast runs with room for many retries: all faults at once fail a call often.
fn patient_run() -> String {
    FAST_RUN.replace("[run]", "[run]\nmax_attempts = 12")
}

fn with_faults(faults: Faults) -> SimConfig {
    SimConfig {
        faults,
        seed: 7,
        ..quick_sim()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_alone_and_all_together_still_finish_every_variant() {
    let slow = Faults {
        slow: 0.3,
        slow_by: Duration::from_millis(300),
        ..Faults::default()
    };
    // (name, faults, whether the client can tell that no task was created)
    let cases = [
        (
            "503s",
            Faults {
                unavailable: 0.3,
                ..Faults::default()
            },
            true,
        ),
        // A reset leaves the client unable to tell whether the task was created.
        (
            "connection resets",
            Faults {
                reset: 0.2,
                ..Faults::default()
            },
            false,
        ),
        // A body `code` of 500 is a 500: the task may exist.
        (
            "200 with an error body",
            Faults {
                error_body: 0.2,
                ..Faults::default()
            },
            false,
        ),
        (
            "429s",
            Faults {
                rate_limit: 0.2,
                ..Faults::default()
            },
            true,
        ),
        ("slow answers", slow, true),
        (
            "truncated downloads",
            Faults {
                truncate: 0.3,
                ..Faults::default()
            },
            true,
        ),
        (
            "error pages as downloads",
            Faults {
                not_audio: 0.3,
                ..Faults::default()
            },
            true,
        ),
        (
            "expired result URLs",
            Faults {
                expire_first_download: true,
                ..Faults::default()
            },
            true,
        ),
        (
            "500 after creation",
            Faults {
                submit_error_after_create: 0.3,
                ..Faults::default()
            },
            false,
        ),
        ("all together", Faults::all(0.1), false),
    ];
    const VARIANTS: usize = 8;
    for (name, faults, before_creation) in cases {
        let sim = start_sim(with_faults(faults)).await;
        let (dir, manifest) = write_manifest(&variants_manifest(&patient_run(), VARIANTS));
        let out = dir.path().join("out");
        let output = run_against(&sim, &manifest, &out).await;
        let stats = sim.stats();
        assert!(stats.faults > 0, "{name}: the fault never struck");
        // Nothing was bought twice: a fault that proves no task was created is retried,
        // a submit whose answer was lost is never made again.
        assert_eq!(most_tasks_of_one_variant(&sim), 1, "{name}: {stats:?}");
        let (_, rows) = read_results(&out);
        let lost: Vec<_> = rows
            .iter()
            .filter(|r| r["status"] == "error")
            .map(|r| r["variant_id"].clone())
            .collect();
        eprintln!(
            "{name}: {} faults injected, 0 duplicate tasks, {} variants with a lost answer",
            stats.faults,
            lost.len()
        );
        if before_creation || lost.is_empty() {
            assert_eq!(stats.tasks_created, VARIANTS as u64, "{name}: {stats:?}");
            assert_eq!(output.status.code(), Some(0), "{name}: {}", stderr(&output));
            assert_all_finished_with_the_simulators_files(&sim, &out, VARIANTS);
            continue;
        }
        assert_eq!(output.status.code(), Some(1), "{name}: {}", stderr(&output));
        for row in rows.iter().filter(|r| r["status"] == "error") {
            assert!(
                row["error"].contains("may have created a task"),
                "{name}: {row:?}"
            );
            // Its lost submit was its last: a submit made after it would have created a
            // second task of the variant (most_tasks_of_one_variant above). Attempts may
            // be more than one: a fault that proves no task was created (a 503, a 429)
            // can come before the lost answer, and is retried.
            assert_ne!(row["attempts"], "0", "{name}: {row:?}");
        }
        // The next night does not pay for them again unasked.
        let rerun = run_against(&sim, &manifest, &out).await;
        assert_eq!(rerun.status.code(), Some(1), "{name}: {}", stderr(&rerun));
        assert_eq!(sim.stats().tasks_created, stats.tasks_created, "{name}");
    }
}

/// The most tasks the simulator created for one variant (one set of parameters).
fn most_tasks_of_one_variant(sim: &stembatch::sim::SimHandle) -> usize {
    let mut per_variant = std::collections::HashMap::new();
    for submission in sim.submissions() {
        let key = serde_json::to_string(&submission.request).unwrap();
        *per_variant.entry(key).or_insert(0) += 1;
    }
    per_variant.into_values().max().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_then_a_rerun_pays_for_nothing_twice() {
    const VARIANTS: usize = 24;
    let sim = start_sim(SimConfig {
        task_duration: Duration::from_millis(1500),
        latency: Duration::from_millis(40),
        ..quick_sim()
    })
    .await;
    let head = FAST_RUN.replace("submit_rate = \"1200/min\"", "submit_rate = \"600/min\"");
    let (dir, manifest) = write_manifest(&variants_manifest(&head, VARIANTS));
    let out = dir.path().join("out");
    let mut child = run_command(&sim, &manifest, &out, &[])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("a third of the tasks", || sim.stats().tasks_created >= 8).await;
    child.start_kill().unwrap();
    let status = child.wait().await.unwrap();
    assert_eq!(status.code(), None, "killed by a signal");

    let journal = std::fs::read_to_string(out.join(".stembatch/journal.jsonl")).unwrap();
    let priors = replay(&decode_all(&journal, std::path::Path::new("journal")).unwrap());
    let in_flight = priors.values().filter(|p| p.submit_in_flight).count();
    let created_before = sim.stats().tasks_created;

    let output = run_against(&sim, &manifest, &out).await;
    let (_, rows) = read_results(&out);
    let lost = rows.iter().filter(|r| r["status"] == "error").count();
    eprintln!("kill -9 after {created_before} tasks: {in_flight} submits in flight, 0 duplicate tasks, {lost} variants kept as error");
    // A submit on the wire when the process died may have created a task: it is not
    // made again unasked, so nothing is paid twice.
    assert!(most_tasks_of_one_variant(&sim) <= 1, "{:?}", sim.stats());
    assert_eq!(lost, in_flight, "{rows:?}");
    let expected = if in_flight == 0 { 0 } else { 1 };
    assert_eq!(output.status.code(), Some(expected), "{}", stderr(&output));
    if in_flight > 0 {
        // Asked for, they are submitted again: at most one duplicate per lost answer.
        let retried = run_command(&sim, &manifest, &out, &["--retry-failed"])
            .output()
            .await
            .unwrap();
        assert_eq!(retried.status.code(), Some(0), "{}", stderr(&retried));
        let duplicates = sim.stats().tasks_created as usize - VARIANTS;
        assert!(duplicates <= in_flight, "{duplicates} > {in_flight}");
    }
    assert_all_finished_with_the_simulators_files(&sim, &out, VARIANTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_exits_3_within_seconds_sending_at_most_concurrency_requests() {
    let sim = start_sim(quick_sim()).await;
    let head = FAST_RUN.replace("concurrency = 8", "concurrency = 4");
    let (dir, manifest) = write_manifest(&variants_manifest(&head, 20));
    let out = dir.path().join("out");
    let started = Instant::now();
    let output = run_command(&sim, &manifest, &out, &[])
        .env("VIDGO_API_KEY", "not-the-key")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(started.elapsed() < Duration::from_secs(5));
    let stats = sim.stats();
    assert!(
        stats.unauthorized >= 1 && stats.unauthorized <= 4,
        "{stats:?}"
    );
    assert_eq!(
        stats.submit_calls, 0,
        "the balance check found the bad key first"
    );
    assert_eq!(stats.tasks_created, 0);
    let (_, rows) = read_results(&out);
    assert_eq!(rows.len(), 20);
    assert!(rows.iter().all(|r| r["status"] == "pending"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_credits_exits_3_after_finishing_what_was_in_flight() {
    let sim = start_sim(SimConfig {
        credits: Some(5),
        ..quick_sim()
    })
    .await;
    let head = FAST_RUN.replace("concurrency = 8", "concurrency = 3");
    let (dir, manifest) = write_manifest(&variants_manifest(&head, 12));
    let out = dir.path().join("out");
    let output = run_against(&sim, &manifest, &out).await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("no credits left"),
        "{}",
        stderr(&output)
    );
    let stats = sim.stats();
    assert_eq!(stats.tasks_created, 5);
    assert!(
        stats.no_credits >= 1 && stats.submit_calls <= 5 + 3,
        "{stats:?}"
    );
    let (_, rows) = read_results(&out);
    let finished: Vec<_> = rows.iter().filter(|r| r["status"] == "finished").collect();
    assert_eq!(
        finished.len(),
        5 * 2,
        "the five paid tasks finished with both tracks"
    );
    for row in finished {
        assert!(out.join(&row["file"]).is_file());
    }
    let pending: Vec<_> = rows.iter().filter(|r| r["status"] == "pending").collect();
    assert_eq!(pending.len(), 7);
    assert!(pending.iter().all(|r| r["task_id"].is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_130_with_pending_rows_then_resumes_without_duplicates() {
    const VARIANTS: usize = 6;
    let sim = start_sim(SimConfig {
        task_duration: Duration::from_secs(3),
        ..quick_sim()
    })
    .await;
    let (dir, manifest) = write_manifest(&variants_manifest(FAST_RUN, VARIANTS));
    let out = dir.path().join("out");
    let mut child = run_command(&sim, &manifest, &out, &[])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the first submits", || sim.stats().tasks_created >= 3).await;
    let signalled = Instant::now();
    assert_eq!(signal_and_wait(&mut child, "-TERM").await, Some(130));
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "{:?}",
        signalled.elapsed()
    );
    let (_, rows) = read_results(&out);
    assert_eq!(rows.len(), VARIANTS);
    assert!(rows.iter().all(|r| r["status"] == "pending"), "{rows:?}");
    let submitted = rows.iter().filter(|r| !r["task_id"].is_empty()).count();
    assert_eq!(submitted as u64, sim.stats().tasks_created);

    let output = run_against(&sim, &manifest, &out).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_all_finished_with_the_simulators_files(&sim, &out, VARIANTS);
    assert_eq!(sim.stats().tasks_created, VARIANTS as u64, "no duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_mid_run_stops_every_request_at_once() {
    let sim = start_sim(SimConfig {
        task_duration: Duration::from_secs(1),
        revoke_key_after_tasks: Some(4),
        ..quick_sim()
    })
    .await;
    let head = FAST_RUN.replace("concurrency = 8", "concurrency = 4");
    let (dir, manifest) = write_manifest(&variants_manifest(&head, 12));
    let out = dir.path().join("out");
    let started = Instant::now();
    let output = run_against(&sim, &manifest, &out).await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(started.elapsed() < Duration::from_secs(5));
    let stats = sim.stats();
    // After the first 401 nothing new goes out: at most the calls already on the wire.
    assert!(
        stats.unauthorized >= 1 && stats.unauthorized <= 4,
        "{stats:?}"
    );
    assert_eq!(stats.tasks_created, 4);
    let (_, rows) = read_results(&out);
    assert!(rows.iter().all(|r| r["status"] == "pending"), "{rows:?}");
    assert_eq!(
        rows.iter().filter(|r| !r["task_id"].is_empty()).count(),
        4,
        "the paid tasks are kept for the next run"
    );
}
