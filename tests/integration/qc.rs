//! Issue 9, part 2: every downloaded track is decoded and judged; a bad one is kept,
//! finished, and flagged in the last four columns of results.csv.

use std::collections::HashMap;
use std::path::Path;

use crate::helpers::*;
use stembatch::sim::{Faults, SimConfig, SimHandle};

/// Tracks long enough for a loudness measurement and for a cut one to be short by
/// more than a second.
const TRACK_SECONDS: f64 = 4.0;
const VARIANTS: usize = 2;

fn sim_config(faults: Faults) -> SimConfig {
    SimConfig {
        track_seconds: TRACK_SECONDS,
        faults,
        ..quick_sim()
    }
}

/// A run of [`VARIANTS`] variants against `sim`: it exits 0 (a bad track still finishes the
/// variant), and every track is in place as the simulator served it. Returns the rows.
async fn run_and_read(sim: &SimHandle, out_parent: &Path) -> Vec<HashMap<String, String>> {
    let manifest = out_parent.join("manifest.toml");
    std::fs::write(&manifest, variants_manifest(FAST_RUN, VARIANTS)).unwrap();
    let out = out_parent.join("out");
    let output = run_against(sim, &manifest, &out).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_all_finished_with_the_simulators_files(sim, &out, VARIANTS);
    let (header, rows) = read_results(&out);
    assert_eq!(header.join(","), SPEC_HEADER);
    assert_eq!(rows.len(), VARIANTS * 2);
    rows
}

fn level(row: &HashMap<String, String>, column: &str) -> f64 {
    row[column]
        .parse()
        .unwrap_or_else(|e| panic!("{column} {:?}: {e}", row[column]))
}

/// A clean run: `ok` everywhere, with the measurements of the simulator's tracks (peaks
/// normalised to 0.8, i.e. -1.94 dBFS) and their full length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_a_clean_run_is_ok_everywhere_with_its_measurements() {
    let sim = start_sim(sim_config(Faults::default())).await;
    let dir = tempfile::tempdir().unwrap();
    let rows = run_and_read(&sim, dir.path()).await;
    let (header, _) = read_results(&dir.path().join("out"));
    assert_eq!(
        header[header.len() - 4..],
        ["decoded_s", "peak_dbfs", "lufs", "qc"]
    );
    for row in &rows {
        assert_eq!(row["qc"], "ok", "{row:?}");
        assert_eq!(row["duration_s"], "4");
        assert!(
            (level(row, "decoded_s") - TRACK_SECONDS).abs() < 0.01,
            "{row:?}"
        );
        // The simulator's mix peaks near -2 dBFS; each task's seed moves it a little.
        let peak = level(row, "peak_dbfs");
        assert!((-6.0..-0.5).contains(&peak), "{row:?}");
        let lufs = level(row, "lufs");
        assert!((-40.0..-3.0).contains(&lufs), "{row:?}");
    }
}

/// One run with every track bad in one way: every row finished, with its verdict.
async fn every_track(faults: Faults, verdict: &str) -> Vec<HashMap<String, String>> {
    let sim = start_sim(sim_config(faults)).await;
    let dir = tempfile::tempdir().unwrap();
    let rows = run_and_read(&sim, dir.path()).await;
    for row in &rows {
        assert_eq!(row["status"], "finished", "{row:?}");
        assert_eq!(row["qc"], verdict, "{row:?}");
        assert_eq!(row["duration_s"], "4", "the provider's duration: {row:?}");
        assert_eq!(row["error"], "", "{row:?}");
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_silent_tracks_are_flagged_silent() {
    let faults = Faults {
        silent_tracks: 1.0,
        ..Faults::default()
    };
    for row in every_track(faults, "silent").await {
        assert!(
            (level(&row, "decoded_s") - TRACK_SECONDS).abs() < 0.01,
            "{row:?}"
        );
        assert!(level(&row, "peak_dbfs") < -60.0, "{row:?}");
        assert_eq!(row["lufs"], "-inf", "under the absolute gate: {row:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_clipped_tracks_are_flagged_clipped() {
    let faults = Faults {
        clipped_tracks: 1.0,
        ..Faults::default()
    };
    for row in every_track(faults, "clipped").await {
        assert!(
            (level(&row, "decoded_s") - TRACK_SECONDS).abs() < 0.01,
            "{row:?}"
        );
        assert!(level(&row, "peak_dbfs") > -0.01, "{row:?}");
        assert!(level(&row, "lufs").is_finite(), "{row:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_short_tracks_are_flagged_short() {
    let faults = Faults {
        short_tracks: 1.0,
        ..Faults::default()
    };
    for row in every_track(faults, "short").await {
        assert!((level(&row, "decoded_s") - 1.0).abs() < 0.01, "{row:?}");
        assert!(level(&row, "peak_dbfs") > -60.0, "{row:?}");
        assert!(level(&row, "lufs").is_finite(), "{row:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_undecodable_tracks_are_kept_and_flagged_without_measurements() {
    let faults = Faults {
        undecodable_tracks: 1.0,
        ..Faults::default()
    };
    for row in every_track(faults, "undecodable").await {
        assert_eq!(
            (
                &row["decoded_s"][..],
                &row["peak_dbfs"][..],
                &row["lufs"][..]
            ),
            ("", "", ""),
            "{row:?}"
        );
        assert_ne!(row["bytes"], "0", "kept as served: {row:?}");
    }
}

/// A resumed run keeps a finished track as it is, QC included: nothing is downloaded or
/// decoded again, and the verdict comes from the journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_a_kept_track_keeps_its_journaled_qc() {
    let sim = start_sim(sim_config(Faults {
        silent_tracks: 1.0,
        ..Faults::default()
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let first = run_and_read(&sim, dir.path()).await;
    let downloads = sim.stats().download_calls;
    let second = run_and_read(&sim, dir.path()).await;
    assert_eq!(
        sim.stats().download_calls,
        downloads,
        "nothing fetched again"
    );
    assert_eq!(second, first);
    assert!(second
        .iter()
        .all(|r| r["qc"] == "silent" && r["lufs"] == "-inf"));
}

/// The knobs of `stembatch simulator`: a bad share over 1 is refused, and a served
/// simulator with `--undecodable-tracks 1` serves tracks a run flags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_the_simulator_command_takes_the_bad_track_knobs() {
    use tokio::io::AsyncBufReadExt;
    let refused = stembatch(
        &[
            "simulator",
            "--silent-tracks",
            "0.6",
            "--short-tracks",
            "0.6",
        ],
        None,
    )
    .await;
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("more than 1"),
        "{}",
        stderr(&refused)
    );
    let too_much = stembatch(&["simulator", "--clipped-tracks", "1.5"], None).await;
    assert_eq!(too_much.status.code(), Some(2), "{}", stderr(&too_much));

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_stembatch"))
        .args(["simulator", "--key", "k1", "--task-seconds", "0.3"])
        .args(["--track-seconds", "2", "--undecodable-tracks", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line())
        .await
        .expect("the simulator prints its URL")
        .unwrap()
        .unwrap();
    let (dir, manifest) = write_manifest(&variants_manifest(FAST_RUN, 1));
    let out = dir.path().join("out");
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_stembatch"))
        .args(["run", path_str(&manifest), "--out", path_str(&out)])
        .args(["--base-url", &url])
        .env_remove("VIDGO_BASE_URL")
        .env("VIDGO_API_KEY", "k1")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(RUN_TIMEOUT, run)
        .await
        .expect("the run finished in time")
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let (_, rows) = read_results(&out);
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r["status"] == "finished" && r["qc"] == "undecodable"),
        "{rows:?}"
    );
    child.kill().await.unwrap();
}

/// Issue 18, part 2: the run's closing lines, `status` and `status --json` count the
/// tracks by verdict, alike, so that a cron mail shows bad audio without the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_18_the_closing_lines_and_status_count_tracks_by_verdict() {
    const MIXED: usize = 6;
    let sim = start_sim(sim_config(Faults {
        silent_tracks: 0.2,
        clipped_tracks: 0.2,
        short_tracks: 0.2,
        ..Faults::default()
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("manifest.toml");
    std::fs::write(&manifest, variants_manifest(FAST_RUN, MIXED)).unwrap();
    let out = dir.path().join("out");
    let output = run_against(&sim, &manifest, &out).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let (_, rows) = read_results(&out);
    let count = |verdict: &str| rows.iter().filter(|r| r["qc"] == verdict).count();
    let (ok, silent, clipped, short) = (
        count("ok"),
        count("silent"),
        count("clipped"),
        count("short"),
    );
    assert_eq!(ok + silent + clipped + short, MIXED * 2, "{rows:?}");
    assert!(ok < MIXED * 2, "some bad tracks to count: {rows:?}");
    let mut words = format!("{} tracks: {ok} ok", MIXED * 2);
    for (n, word) in [(silent, "silent"), (clipped, "clipped"), (short, "short")] {
        if n > 0 {
            words.push_str(&format!(", {n} {word}"));
        }
    }
    let log = stderr(&output);
    let line = log
        .lines()
        .find(|l| l.contains(&words))
        .unwrap_or_else(|| panic!("a closing line {words:?}:\n{log}"));
    assert!(line.contains("WARN"), "bad audio is a warning: {line}");

    let status = stembatch(&["status", path_str(&out)], None).await;
    assert_eq!(status.status.code(), Some(0), "{}", stderr(&status));
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(text.lines().any(|l| l == words), "{words:?} in:\n{text}");

    let json = stembatch(&["status", "--json", path_str(&out)], None).await;
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let tracks = &json["tracks"];
    assert_eq!(tracks["total"], MIXED * 2, "{json}");
    let qc = &tracks["qc"];
    assert_eq!(
        [
            &qc["ok"],
            &qc["silent"],
            &qc["clipped"],
            &qc["short"],
            &qc["undecodable"],
            &qc["unchecked"]
        ],
        [ok, silent, clipped, short, 0, 0]
            .map(serde_json::Value::from)
            .each_ref(),
        "{json}"
    );
}
