//! A whole run: every variant finished with its files, failed tasks, timeouts.

use std::collections::HashSet;

use crate::helpers::*;
use stembatch::sim::FAIL_MESSAGE;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_variant_finishes_and_the_csv_agrees_with_the_files() {
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = write_manifest(&format!(
        r#"{FAST_RUN}
[[stem]]
name = "ballad"
url = "https://stems.example.com/ballad.wav"
takes = 2
  [[stem.variant]]
  name = "piano"
  style_weight = 0.8
  [[stem.variant]]
  name = "strings"
  tags = "strings, slow"
  vocal_gender = "m"

[[stem]]
url = "https://stems.example.com/hook.mp3"
  [stem.matrix]
  tags = ["lofi, chill", "jazz"]
  audio_weight = [0.25, 0.75]
"#
    ));
    let out = dir.path().join("out");
    let output = run_against(&sim, &manifest, &out).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));

    let (header, rows) = read_results(&out);
    assert_eq!(header.join(","), SPEC_HEADER);
    // 4 ballad variants (2 variants × 2 takes) + 4 matrix combinations, 2 tracks each.
    assert_eq!(rows.len(), 16);
    let variant_ids: HashSet<_> = rows.iter().map(|r| r["variant_id"].clone()).collect();
    assert_eq!(variant_ids.len(), 8);
    for row in &rows {
        assert_eq!(row["status"], "finished", "{row:?}");
        let file = out.join(&row["file"]);
        let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(row["bytes"], bytes.len().to_string());
        assert_eq!(row["sha256"], sha256_of(&file));
        let track: u32 = row["track"].parse().unwrap();
        assert_eq!(
            Some(bytes),
            sim.track_bytes(&row["task_id"], track),
            "the file is what the simulator served"
        );
        assert!(row["submitted_at"].ends_with('Z') && row["finished_at"].ends_with('Z'));
        assert_eq!(row["attempts"], "1");
        assert_eq!(row["error"], "");
    }
    let names: HashSet<_> = rows.iter().map(|r| r["file"].clone()).collect();
    for expected in [
        "audio/ballad/piano-t1-1.wav",
        "audio/ballad/strings-t2-2.wav",
        "audio/hook/lofi-chill_0-25-1.wav",
        "audio/hook/jazz_0-75-2.wav",
    ] {
        assert!(
            names.contains(expected),
            "{expected} missing from {names:?}"
        );
    }
    // Nothing but the tracks and the report is left: no temporary files.
    let stray: Vec<_> = files_below(&out)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");

    // Exactly one task per variant, with the resolved parameters.
    let submissions = sim.submissions();
    assert_eq!(submissions.len(), 8);
    let strings = submissions
        .iter()
        .find(|s| s.request.input.title == "ballad strings")
        .unwrap();
    assert_eq!(strings.request.input.tags, "strings, slow");
    assert_eq!(strings.request.input.vocal_gender.as_deref(), Some("m"));
    assert_eq!(
        strings.request.input.upload_url,
        "https://stems.example.com/ballad.wav"
    );
    assert_eq!(strings.request.model, "add-instrumental");
    let jazz = submissions
        .iter()
        .find(|s| s.request.input.title == "hook jazz_0-75")
        .unwrap();
    assert_eq!(jazz.request.input.audio_weight, Some(0.75));
    assert_eq!(sim.stats().rate_limited, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_tasks_become_failed_rows_with_the_providers_message() {
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = write_manifest(&format!(
        r#"{FAST_RUN}
[[stem]]
url = "https://stems.example.com/a.wav"
  [[stem.variant]]
  name = "good"
  [[stem.variant]]
  name = "bad"
  tags = "piano, sim:fail"
"#
    ));
    let out = dir.path().join("out");
    let output = run_against(&sim, &manifest, &out).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let (_, rows) = read_results(&out);
    assert_eq!(rows.len(), 3, "two tracks for good, one row for bad");
    let bad = rows.iter().find(|r| r["variant"] == "bad").unwrap();
    assert_eq!(bad["status"], "failed");
    assert_eq!(bad["error"], FAIL_MESSAGE);
    assert!(!bad["task_id"].is_empty());
    assert_eq!((bad["file"].as_str(), bad["track"].as_str()), ("", ""));
    assert!(rows
        .iter()
        .filter(|r| r["variant"] == "good")
        .all(|r| r["status"] == "finished"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_never_finishes_ends_as_timeout() {
    let sim = start_sim(quick_sim()).await;
    let text = format!(
        "{}\n[[stem]]\nurl = \"https://stems.example.com/a.wav\"\ntags = \"sim:hang\"\n",
        FAST_RUN.replace("task_timeout = \"20s\"", "task_timeout = \"1s\"")
    );
    let (dir, manifest) = write_manifest(&text);
    let out = dir.path().join("out");
    let started = std::time::Instant::now();
    let output = run_against(&sim, &manifest, &out).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let (_, rows) = read_results(&out);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["status"], "timeout");
    assert!(
        rows[0]["error"].contains("not finished after 1s"),
        "{:?}",
        rows[0]["error"]
    );
    assert_eq!(sim.stats().tasks_created, 1, "a timeout is not resubmitted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_simulate_needs_no_key_and_produces_audio() {
    let (dir, manifest) = write_manifest(&format!(
        "{}\n[[stem]]\nurl = \"https://stems.example.com/a.wav\"\n",
        FAST_RUN.replace("[run]", "[run]\noutput_dir = \"nightly/{date}\"")
    ));
    let before = chrono::Local::now().date_naive();
    let output = stembatch(&["run", "--simulate", path_str(&manifest)], None).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let after = chrono::Local::now().date_naive();
    // The folder is named after the local date the run started on.
    let dates: Vec<_> = std::fs::read_dir(dir.path().join("nightly"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(dates.len(), 1);
    let date = chrono::NaiveDate::parse_from_str(&dates[0], "%Y-%m-%d").unwrap();
    assert!(before <= date && date <= after);
    let out = dir.path().join("nightly").join(&dates[0]);
    let (_, rows) = read_results(&out);
    assert_eq!(rows.len(), 2);
    for row in rows {
        let bytes = std::fs::read(out.join(&row["file"])).unwrap();
        assert_eq!(&bytes[..4], b"RIFF");
        let reader = hound::WavReader::new(std::io::Cursor::new(bytes)).unwrap();
        assert!(reader.duration() > 0);
    }
}
