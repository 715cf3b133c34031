//! Issue 7, the money core: the nights nobody scripted. Each test here failed on the
//! scheduler before the pure run state took over the decisions.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::helpers::*;
use stembatch::sim::{Faults, SimConfig};

/// A SIGTERM while submits are on the wire waits for their answers: against a provider
/// that takes 2.5 s to answer, every task created is journaled, and the next run pays for
/// nothing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_7_a_signal_waits_for_the_submits_on_the_wire() {
    const VARIANTS: usize = 4;
    let sim = start_sim(SimConfig {
        faults: Faults {
            submit_answer_delay: Duration::from_millis(2500),
            ..Faults::default()
        },
        ..quick_sim()
    })
    .await;
    let (dir, manifest) = write_manifest(&variants_manifest(FAST_RUN, VARIANTS));
    let out = dir.path().join("out");
    let mut child = run_command(&sim, &manifest, &out, &[])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("every submit on the wire", || {
        sim.stats().tasks_created == VARIANTS as u64
    })
    .await;
    let signalled = Instant::now();
    assert_eq!(signal_and_wait(&mut child, "-TERM").await, Some(130));
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "bounded by the answers, not by the night: {:?}",
        signalled.elapsed()
    );
    let stats = sim.stats();
    assert_eq!(stats.submit_answers_dropped, 0, "no answer was abandoned");
    let (_, rows) = read_results(&out);
    assert_eq!(rows.len(), VARIANTS);
    for row in &rows {
        assert_eq!(row["status"], "pending", "{row:?}");
        assert!(
            !row["task_id"].is_empty(),
            "the task id was journaled: {row:?}"
        );
    }
    let rerun = run_against(&sim, &manifest, &out).await;
    assert_eq!(rerun.status.code(), Some(0), "{}", stderr(&rerun));
    assert_all_finished_with_the_simulators_files(&sim, &out, VARIANTS);
    assert_eq!(
        sim.stats().tasks_created,
        VARIANTS as u64,
        "no task bought twice"
    );
}

/// A 2xx submit answer without a task id (the provider's API changed shape) stops all
/// submitting at once: at most the submits already on the wire created tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_7_an_unreadable_submit_answer_stops_all_submitting_with_exit_3() {
    const CONCURRENCY: u64 = 3;
    let sim = start_sim(SimConfig {
        faults: Faults {
            unreadable_submit: 1.0,
            ..Faults::default()
        },
        ..quick_sim()
    })
    .await;
    let head = FAST_RUN.replace("concurrency = 8", "concurrency = 3");
    let (dir, manifest) = write_manifest(&variants_manifest(&head, 12));
    let out = dir.path().join("out");
    let output = run_against(&sim, &manifest, &out).await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let stats = sim.stats();
    assert!(
        stats.tasks_created >= 1 && stats.tasks_created <= CONCURRENCY,
        "{stats:?}"
    );
    let log = stderr(&output);
    let said: Vec<_> = log
        .lines()
        .filter(|l| l.contains("could not be read") && l.contains("changed shape"))
        .collect();
    assert!(!said.is_empty(), "{log}");
    let (_, rows) = read_results(&out);
    let errors = rows.iter().filter(|r| r["status"] == "error").count();
    assert_eq!(errors as u64, stats.tasks_created, "{rows:?}");
    assert!(rows
        .iter()
        .filter(|r| r["status"] != "error")
        .all(|r| r["status"] == "pending" && r["attempts"] == "0"));
    // The next night does not buy them again unasked either.
    let rerun = run_against(&sim, &manifest, &out).await;
    assert_eq!(rerun.status.code(), Some(3), "{}", stderr(&rerun));
    assert!(sim.stats().tasks_created <= 2 * CONCURRENCY);
}

/// Hashing a large stem before the run starts yields to Ctrl-C: nothing was sent, and
/// the process exits at once instead of after the hashing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_7_ctrl_c_during_the_preparation_exits_at_once() {
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = write_manifest(&format!("{FAST_RUN}\n[[stem]]\npath = \"big.wav\"\n"));
    // A WAV header and 90 MB of silence: seconds of hashing in a debug build.
    let big = dir.path().join("big.wav");
    write_wav(&big, 0.1, 440.0);
    let file = std::fs::OpenOptions::new().append(true).open(&big).unwrap();
    file.set_len(90 << 20).unwrap();
    let out = dir.path().join("out");
    let mut child = run_command(&sim, &manifest, &out, &[])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    assert_eq!(signal_and_wait(&mut child, "-INT").await, Some(130));
    assert!(
        signalled.elapsed() < Duration::from_millis(2000),
        "{:?}",
        signalled.elapsed()
    );
    assert_eq!(sim.stats().submit_calls, 0);
}

/// A folder whose `results.csv` cannot be written buys nothing: the report is written
/// once before the first submit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_7_a_report_that_cannot_be_written_stops_the_run_before_any_submit() {
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = write_manifest(&variants_manifest(FAST_RUN, 4));
    let out = dir.path().join("out");
    std::fs::create_dir_all(out.join("results.csv")).unwrap();
    let output = run_against(&sim, &manifest, &out).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("results.csv"),
        "{}",
        stderr(&output)
    );
    assert_eq!(sim.stats().submit_calls, 0);
}

/// A journal torn inside a UTF-8 character still opens; one damaged in the middle is
/// refused with its line number and a hint that keeps the paid tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_7_the_journal_survives_a_torn_tail_and_names_a_damaged_line() {
    const VARIANTS: usize = 3;
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = write_manifest(&variants_manifest(FAST_RUN, VARIANTS));
    let out = dir.path().join("out");
    let first = run_against(&sim, &manifest, &out).await;
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let journal = out.join(".stembatch/journal.jsonl");
    let good = std::fs::read(&journal).unwrap();
    let mut torn = good.clone();
    torn.extend_from_slice(b"{\"v\":1,\"kind\":\"run_started\",\"api\":\"caf\xC3");
    std::fs::write(&journal, &torn).unwrap();
    let rerun = run_against(&sim, &manifest, &out).await;
    assert_eq!(rerun.status.code(), Some(0), "{}", stderr(&rerun));
    assert_eq!(sim.stats().tasks_created, VARIANTS as u64);

    let text = String::from_utf8(std::fs::read(&journal).unwrap()).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.insert(2, "{\"v\":1,\"kind\":\"submitted\",\"variant_id\":");
    std::fs::write(&journal, lines.join("\n") + "\n").unwrap();
    let refused = run_against(&sim, &manifest, &out).await;
    let message = stderr(&refused);
    assert_eq!(refused.status.code(), Some(2), "{message}");
    assert!(message.contains("line 3"), "{message}");
    assert!(message.contains("do not delete the journal"), "{message}");
    assert_eq!(sim.stats().tasks_created, VARIANTS as u64);
}
