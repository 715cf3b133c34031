//! Issue 8, what a producer keeps: re-runs never overwrite paid audio, collect what was
//! paid for, submit again what cost nothing, and let one bad file pass.

use std::time::Duration;

use crate::helpers::*;
use stembatch::sim::{SimConfig, SimHandle};

/// Quick runs whose stems are local WAVs (uploaded to the simulator).
const LOCAL_RUN: &str = r#"
[run]
concurrency = 4
submit_rate = "1200/min"
poll_rate = "12000/min"
upload_rate = "1200/min"
poll_interval = "100ms"
poll_interval_max = "400ms"
task_timeout = "20s"
max_attempts = 2

[defaults]
tags = "piano"
negative_tags = ""
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_8_a_changed_variant_moves_last_nights_tracks_to_superseded() {
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = write_manifest(&format!(
        "{LOCAL_RUN}\n[[stem]]\npath = \"stems/take.wav\"\n"
    ));
    write_wav(&dir.path().join("stems/take.wav"), 0.5, 220.0);
    let out = dir.path().join("out");
    let first = run_against(&sim, &manifest, &out).await;
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let (_, before) = read_results(&out);
    let old_id = before[0]["variant_id"].clone();
    let old_bytes: Vec<Vec<u8>> = before
        .iter()
        .map(|r| std::fs::read(out.join(&r["file"])).unwrap())
        .collect();

    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace("tags = \"piano\"", "tags = \"strings\""),
    )
    .unwrap();
    let second = run_against(&sim, &manifest, &out).await;
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("superseded"),
        "{}",
        stderr(&second)
    );
    let (_, after) = read_results(&out);
    assert_ne!(after[0]["variant_id"], old_id);
    for (row, bytes) in before.iter().zip(&old_bytes) {
        let name = std::path::Path::new(&row["file"]);
        let kept = out.join("superseded/take").join(format!(
            "{}.{old_id}.wav",
            name.file_stem().unwrap().to_str().unwrap()
        ));
        assert_eq!(&std::fs::read(&kept).unwrap(), bytes, "{}", kept.display());
    }
    assert_all_finished_with_the_simulators_files(&sim, &out, 1);
    assert_eq!(sim.stats().tasks_created, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_8_a_timed_out_task_is_collected_by_the_next_run_for_free() {
    let sim = start_sim(SimConfig {
        task_duration: Duration::from_secs(4),
        ..quick_sim()
    })
    .await;
    let head = FAST_RUN.replace("task_timeout = \"20s\"", "task_timeout = \"1s\"");
    let (dir, manifest) = write_manifest(&variants_manifest(&head, 2));
    let out = dir.path().join("out");
    let first = run_against(&sim, &manifest, &out).await;
    assert_eq!(first.status.code(), Some(1), "{}", stderr(&first));
    let (_, rows) = read_results(&out);
    assert!(rows.iter().all(|r| r["status"] == "timeout"), "{rows:?}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let second = run_against(&sim, &manifest, &out).await;
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert_all_finished_with_the_simulators_files(&sim, &out, 2);
    assert_eq!(sim.stats().tasks_created, 2, "collected, not bought again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_8_variants_that_failed_before_any_task_are_submitted_again_unasked() {
    // Nothing listens on the port at first: uploads fail, nothing is paid.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let (dir, manifest) = write_manifest(&format!(
        "{LOCAL_RUN}\n[[stem]]\npath = \"stems/take.wav\"\n"
    ));
    write_wav(&dir.path().join("stems/take.wav"), 0.5, 220.0);
    let out = dir.path().join("out");
    let url = format!("http://127.0.0.1:{port}");
    let outage = run_command_at(&url, &quick_sim().key, &manifest, &out, &[])
        .output()
        .await
        .unwrap();
    assert_eq!(outage.status.code(), Some(1), "{}", stderr(&outage));
    let (_, rows) = read_results(&out);
    // Issue 17: no call reached the API, so the URL is unusable and the run stopped:
    // the variant is left pending, unpaid.
    assert_eq!(rows[0]["status"], "pending", "{rows:?}");
    assert_eq!(rows[0]["task_id"], "");

    // The provider is back on the same address: the next run buys it, unasked.
    let sim = SimHandle::start(([127, 0, 0, 1], port).into(), quick_sim())
        .await
        .unwrap();
    let back = run_against(&sim, &manifest, &out).await;
    assert_eq!(back.status.code(), Some(0), "{}", stderr(&back));
    assert_all_finished_with_the_simulators_files(&sim, &out, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_8_one_bad_file_in_a_glob_gets_error_rows_and_the_night_runs() {
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = write_manifest(&format!(
        "{LOCAL_RUN}\n[[stem]]\nglob = \"incoming/*.wav\"\n"
    ));
    let incoming = dir.path().join("incoming");
    write_wav(&incoming.join("ballad.wav"), 0.5, 220.0);
    write_wav(&incoming.join("hook.wav"), 0.5, 330.0);
    std::fs::write(incoming.join("empty.wav"), b"").unwrap();
    std::fs::write(
        incoming.join("._ballad.wav"),
        b"\0\x05\x16\x07 mac metadata",
    )
    .unwrap();
    let out = dir.path().join("out");
    let output = run_against(&sim, &manifest, &out).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let (_, rows) = read_results(&out);
    let stems: std::collections::BTreeSet<_> = rows.iter().map(|r| r["stem"].clone()).collect();
    assert_eq!(
        stems.into_iter().collect::<Vec<_>>(),
        ["ballad", "empty", "hook"],
        "dot files never match"
    );
    for row in &rows {
        match row["stem"].as_str() {
            "empty" => {
                assert_eq!(row["status"], "error");
                assert!(row["error"].contains("empty"), "{row:?}");
                assert_eq!(row["attempts"], "0", "never sent");
            }
            _ => assert_eq!(row["status"], "finished", "{row:?}"),
        }
    }
    assert_eq!(sim.stats().tasks_created, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_8_a_run_that_would_buy_more_than_max_new_submits_sends_nothing() {
    let sim = start_sim(quick_sim()).await;
    let head = FAST_RUN.replace("[run]", "[run]\nmax_new_submits = 5");
    let (dir, manifest) = write_manifest(&variants_manifest(&head, 12));
    let out = dir.path().join("out");
    let output = run_against(&sim, &manifest, &out).await;
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(message.contains("12 new tasks"), "{message}");
    assert!(message.contains("run.max_new_submits = 5"), "{message}");
    assert_eq!(sim.stats().submit_calls + sim.stats().upload_calls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_8_plan_out_says_what_a_run_would_do_and_buy() {
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = write_manifest(&variants_manifest(FAST_RUN, 3));
    let out = dir.path().join("out");
    let fresh = stembatch(
        &["plan", path_str(&manifest), "--out", path_str(&out)],
        None,
    )
    .await;
    let text = String::from_utf8_lossy(&fresh.stdout).into_owned();
    assert_eq!(fresh.status.code(), Some(0), "{}", stderr(&fresh));
    assert!(text.contains("would submit 3 new tasks (3 new)"), "{text}");
    assert!(!out.exists(), "plan writes nothing");

    let first = run_against(&sim, &manifest, &out).await;
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let grown = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("\"piano 2\"]", "\"piano 2\", \"piano 3\"]");
    std::fs::write(&manifest, grown).unwrap();
    let plan = stembatch(
        &[
            "plan",
            path_str(&manifest),
            "--out",
            path_str(&out),
            "--csv",
        ],
        None,
    )
    .await;
    let csv = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert!(csv.lines().next().unwrap().ends_with(",action"), "{csv}");
    assert_eq!(
        csv.lines().filter(|l| l.ends_with(",keep")).count(),
        3,
        "{csv}"
    );
    assert_eq!(
        csv.lines().filter(|l| l.ends_with(",new")).count(),
        1,
        "{csv}"
    );
    assert!(
        stderr(&plan).contains("would submit 1 new tasks (1 new); resume 0, keep 3"),
        "{}",
        stderr(&plan)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_8_json_logs_count_with_numbers_and_a_wrong_key_says_one_line() {
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = write_manifest(&variants_manifest(FAST_RUN, 3));
    let out = dir.path().join("out");
    let url = sim.url();
    let output = run_command(&sim, &manifest, &out, &["--log-format", "json"])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let log = stderr(&output);
    let start: serde_json::Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("starting from"))
        })
        .expect("a start line");
    assert_eq!(start["fields"]["new"], 3, "{start}");
    assert_eq!(start["fields"]["new_tasks"], 3, "{start}");

    let other = dir.path().join("other");
    let wrong = run_command_at(&url, "not-the-key", &manifest, &other, &[])
        .output()
        .await
        .unwrap();
    assert_eq!(wrong.status.code(), Some(3));
    let log = stderr(&wrong);
    let errors: Vec<_> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(errors[0].contains("VIDGO_API_KEY"), "{log}");
    assert!(!log.contains("not-the-key"), "the key is never printed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_8_an_output_folder_that_cannot_be_made_is_a_usage_error() {
    let sim = start_sim(quick_sim()).await;
    let (_dir, manifest) = write_manifest(&variants_manifest(FAST_RUN, 1));
    // A folder inside a file cannot be made.
    let out = manifest.join("out");
    let output = run_against(&sim, &manifest, &out).await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("cannot create the output folder"));
    assert_eq!(sim.stats().submit_calls, 0);
}

/// A rerun with nothing to do opens the folder from the checkpoint the first night's end
/// wrote, and leaves `results.csv` as the night before left it (the same
/// file, not rewritten: at 100,000 variants, 95 MB) and writes the page again with only its
/// time changed; `status` still reads the report, newer than the journal. An edited or
/// deleted report is written again; a rerun with work writes them with that work, each
/// kept variant's rows byte for byte what rendering them again writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_that_keeps_everything_leaves_the_report_as_it_was() {
    use std::os::unix::fs::MetadataExt;
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = write_manifest(&variants_manifest(LOCAL_RUN, 3));
    let out = dir.path().join("out");
    let first = run_against(&sim, &manifest, &out).await;
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    // The new folder's first checkpoint came with its first night's end, quietly: the
    // second night opens from it like every later one.
    assert!(out.join(".stembatch/checkpoint.jsonl").is_file());
    let replays = "no usable journal checkpoint";
    assert!(!stderr(&first).contains(replays), "{}", stderr(&first));
    let inode = |name: &str| std::fs::metadata(out.join(name)).unwrap().ino();
    let csv_inode = inode("results.csv");
    let before = std::fs::read(out.join("results.csv")).unwrap();
    let verbose = |manifest| run_against_with(&sim, manifest, &out, &["-v"]);
    let kept_csv = "results.csv holds this report already: not written again";
    let kept_page = "report.html shows this results.csv already: only its time written";

    let second = verbose(&manifest).await;
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert!(stderr(&second).contains(kept_csv), "{}", stderr(&second));
    assert!(stderr(&second).contains(kept_page), "{}", stderr(&second));
    assert!(!stderr(&second).contains(replays), "{}", stderr(&second));
    assert_eq!(inode("results.csv"), csv_inode);
    assert_eq!(std::fs::read(out.join("results.csv")).unwrap(), before);
    assert_eq!(status_json(&out).await["source"], "csv");

    // A user's edit of results.csv and a deleted page are not kept over.
    std::fs::write(out.join("results.csv"), b"edited\n").unwrap();
    std::fs::remove_file(out.join("report.html")).unwrap();
    let third = verbose(&manifest).await;
    assert_eq!(third.status.code(), Some(0), "{}", stderr(&third));
    assert!(!stderr(&third).contains(kept_page), "{}", stderr(&third));
    assert_eq!(std::fs::read(out.join("results.csv")).unwrap(), before);
    assert!(out.join("report.html").exists());

    std::fs::write(&manifest, variants_manifest(LOCAL_RUN, 4)).unwrap();
    let fourth = verbose(&manifest).await;
    assert_eq!(fourth.status.code(), Some(0), "{}", stderr(&fourth));
    assert!(!stderr(&fourth).contains(kept_page), "{}", stderr(&fourth));
    let (_, rows) = read_results(&out);
    let variants: std::collections::HashSet<&str> =
        rows.iter().map(|r| r["variant_id"].as_str()).collect();
    assert_eq!(variants.len(), 4);
    assert!(rows.iter().all(|r| r["status"] == "finished"), "{rows:?}");
    assert_eq!(sim.stats().tasks_created, 4);
    let page = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(page.contains("piano 3"), "the page shows the new variant");

    // Without the index, every row is rendered from the journal: the same bytes.
    let with_kept_rows = std::fs::read(out.join("results.csv")).unwrap();
    let kept_inode = inode("results.csv");
    std::fs::remove_file(out.join(".stembatch/results.index")).unwrap();
    let fifth = verbose(&manifest).await;
    assert_eq!(fifth.status.code(), Some(0), "{}", stderr(&fifth));
    assert_ne!(inode("results.csv"), kept_inode, "written again");
    let rendered = std::fs::read(out.join("results.csv")).unwrap();
    assert_eq!(rendered, with_kept_rows);
}
