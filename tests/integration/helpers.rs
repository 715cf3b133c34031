//! Starting the simulator, writing manifests, running the binary, reading results.csv.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use stembatch::sim::{SimConfig, SimHandle, WindowLimit};

/// Taken for writing by the tests that judge a limit's windows by the simulator's stamps,
/// and for reading by every other run of the binary through [`stembatch`] and every
/// browser: a window test runs with the machine to itself. The simulator stamps a call
/// when its handler runs, and other tests' client processes starving it on a two-core
/// machine made it stamp two submits sent 50 ms apart within half a millisecond (a 147 ms
/// gap, then 0.5 ms), then refuse the next as one too many. A window test runs the binary
/// through [`run_alone_against`] or [`run_command`], never [`stembatch`], which would wait
/// for its own lock.
pub static WINDOW_TESTS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// The longest any one invocation of the binary may take in a test.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(90);

/// A manifest head for quick runs: fast pacing and polling, short timeouts.
pub const FAST_RUN: &str = r#"
[run]
concurrency = 8
submit_rate = "1200/min"
poll_rate = "12000/min"
poll_interval = "100ms"
poll_interval_max = "400ms"
task_timeout = "20s"

[defaults]
title = "{stem} {variant}"
tags = "piano"
negative_tags = ""
"#;

/// A simulator with short tasks and tracks and no rate limits.
pub fn quick_sim() -> SimConfig {
    SimConfig {
        key: "test-key-0123456789".into(),
        task_duration: Duration::from_millis(300),
        track_seconds: 0.5,
        submit_limits: Vec::new(),
        detail_limits: Vec::new(),
        upload_limits: Vec::new(),
        ..SimConfig::default()
    }
}

/// Starts a simulator on a free loopback port.
pub async fn start_sim(config: SimConfig) -> SimHandle {
    SimHandle::start(([127, 0, 0, 1], 0).into(), config)
        .await
        .expect("the simulator starts")
}

/// Limits as the simulator parses them.
pub fn limits(text: &str) -> Vec<WindowLimit> {
    WindowLimit::parse_list(text).unwrap()
}

/// A temporary folder holding `manifest.toml` with `text`.
pub fn write_manifest(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manifest.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// Runs the binary with `args`, the API key of `sim` (when given) in the environment.
pub async fn stembatch(args: &[&str], sim: Option<&SimHandle>) -> Output {
    let _not_beside_a_window_test = WINDOW_TESTS.read().await;
    stembatch_now(args, sim).await
}

/// As [`stembatch`], without waiting for a window test: for the window tests themselves.
async fn stembatch_now(args: &[&str], sim: Option<&SimHandle>) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_stembatch"));
    command
        .args(args)
        .env_remove("VIDGO_BASE_URL")
        .env_remove("VIDGO_API_KEY");
    without_shard_env(&mut command);
    if let Some(sim) = sim {
        command.env("VIDGO_API_KEY", sim.key());
    }
    command.kill_on_drop(true);
    tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .expect("stembatch finished in time")
        .expect("stembatch ran")
}

/// The `run MANIFEST --out OUT --base-url SIM` command, not yet started.
pub fn run_command(
    sim: &SimHandle,
    manifest: &Path,
    out: &Path,
    extra: &[&str],
) -> tokio::process::Command {
    run_command_at(&sim.url(), sim.key(), manifest, out, extra)
}

/// The `run MANIFEST --out OUT --base-url URL` command with `key`, not yet started.
pub fn run_command_at(
    url: &str,
    key: &str,
    manifest: &Path,
    out: &Path,
    extra: &[&str],
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_stembatch"));
    command
        .args([
            "run",
            path_str(manifest),
            "--out",
            path_str(out),
            "--base-url",
            url,
        ])
        .args(extra)
        .env_remove("VIDGO_BASE_URL")
        .env("VIDGO_API_KEY", key)
        .kill_on_drop(true);
    without_shard_env(&mut command);
    command
}

/// A test runs the whole manifest unless it asks for a shard, even on a CI host that runs
/// in a Slurm array or a Kubernetes Indexed Job.
fn without_shard_env(command: &mut tokio::process::Command) {
    for var in stembatch::shard::ENV_VARS {
        command.env_remove(var);
    }
}

/// Sends `signal` (`-TERM`, `-INT`) to the child and waits, bounded, for its exit code.
pub async fn signal_and_wait(child: &mut tokio::process::Child, signal: &str) -> Option<i32> {
    let pid = child.id().expect("the child runs").to_string();
    let sent = std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    tokio::time::timeout(RUN_TIMEOUT, child.wait())
        .await
        .expect("the child exited in time")
        .unwrap()
        .code()
}

/// Waits (bounded) until `ready` holds.
pub async fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every variant finished, and every file is what the simulator serves.
pub fn assert_all_finished_with_the_simulators_files(sim: &SimHandle, out: &Path, variants: usize) {
    let (_, rows) = read_results(out);
    let ids: std::collections::HashSet<_> = rows.iter().map(|r| r["variant_id"].clone()).collect();
    assert_eq!(ids.len(), variants);
    for row in &rows {
        assert_eq!(row["status"], "finished", "{row:?}");
        let bytes = std::fs::read(out.join(&row["file"])).unwrap();
        assert_eq!(row["sha256"], sha256_of(&out.join(&row["file"])));
        let track: u32 = row["track"].parse().unwrap();
        assert!(
            Some(bytes) == sim.track_bytes(&row["task_id"], track),
            "{} differs from the simulator's",
            row["file"]
        );
    }
}

/// A manifest of `count` variants of one stem, after `head`.
pub fn variants_manifest(head: &str, count: usize) -> String {
    let tags: Vec<String> = (0..count).map(|i| format!("\"piano {i}\"")).collect();
    format!(
        "{head}\n[[stem]]\nurl = \"https://stems.example.com/a.wav\"\n[stem.matrix]\ntags = [{}]\n",
        tags.join(", ")
    )
}

/// `run MANIFEST --out OUT --base-url SIM`.
pub async fn run_against(sim: &SimHandle, manifest: &Path, out: &Path) -> Output {
    run_against_with(sim, manifest, out, &[]).await
}

/// As [`run_against`], with `extra` arguments after the others.
pub async fn run_against_with(
    sim: &SimHandle,
    manifest: &Path,
    out: &Path,
    extra: &[&str],
) -> Output {
    let _not_beside_a_window_test = WINDOW_TESTS.read().await;
    run_now(sim, manifest, out, extra).await
}

/// As [`run_against`], for a test that holds [`WINDOW_TESTS`] for writing.
pub async fn run_alone_against(sim: &SimHandle, manifest: &Path, out: &Path) -> Output {
    run_now(sim, manifest, out, &[]).await
}

async fn run_now(sim: &SimHandle, manifest: &Path, out: &Path, extra: &[&str]) -> Output {
    let url = sim.url();
    let mut args = vec![
        "run",
        path_str(manifest),
        "--out",
        path_str(out),
        "--base-url",
        &url,
    ];
    args.extend_from_slice(extra);
    stembatch_now(&args, Some(sim)).await
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// stderr as text, for assertion messages.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The rows of a results.csv, as header → value maps, and the header.
pub fn read_results(dir: &Path) -> (Vec<String>, Vec<HashMap<String, String>>) {
    let mut reader = csv::Reader::from_path(dir.join("results.csv")).expect("results.csv exists");
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    let rows = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            header
                .iter()
                .cloned()
                .zip(r.iter().map(str::to_owned))
                .collect()
        })
        .collect();
    (header, rows)
}

/// SPEC.md's header, spelled out here independently of the code under test.
pub const SPEC_HEADER: &str = "stem,variant,take,variant_id,status,task_id,track,audio_id,title,tags,negative_tags,model,vocal_gender,style_weight,weirdness_constraint,audio_weight,duration_s,file,bytes,sha256,audio_url,submitted_at,finished_at,attempts,error,decoded_s,peak_dbfs,lufs,qc";

/// sha256 of a file, hex.
pub fn sha256_of(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// Every file below `dir`.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_below(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// Writes a mono WAV of `seconds` seconds of a sine at `hz` to `path` (folders made).
pub fn write_wav(path: &Path, seconds: f64, hz: f64) {
    let rate = 8000;
    let samples: Vec<f32> = (0..(seconds * f64::from(rate)) as usize)
        .map(|i| (0.5 * (std::f64::consts::TAU * hz * i as f64 / f64::from(rate)).sin()) as f32)
        .collect();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, stembatch::sim::audio::encode_wav(&samples, rate)).unwrap();
}

/// The 1-based line of `text` that holds `needle`.
pub fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .expect("the needle is in the text")
        + 1
}

/// Writes `content` to a key file `name` in `dir` with permission bits `mode`.
pub fn write_key_file(dir: &Path, name: &str, content: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// `run MANIFEST --out OUT --base-url SIM` with the key only in the file `key_file`
/// (through `VIDGO_API_KEY_FILE`), never in `VIDGO_API_KEY`.
pub async fn run_with_key_file(
    sim: &SimHandle,
    manifest: &Path,
    out: &Path,
    key_file: &Path,
) -> Output {
    let mut command = run_command(sim, manifest, out, &[]);
    command
        .env_remove("VIDGO_API_KEY")
        .env("VIDGO_API_KEY_FILE", key_file);
    tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .expect("stembatch finished in time")
        .expect("stembatch ran")
}

/// Whether `needle` occurs in `haystack`, byte for byte.
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `status DIR --json`, parsed; the command must succeed.
pub async fn status_json(dir: &Path) -> serde_json::Value {
    let output = stembatch(&["status", path_str(dir), "--json"], None).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    serde_json::from_slice(&output.stdout).expect("status --json prints one JSON object")
}

/// When the simulator accepted each submit, in order.
pub fn submit_times(sim: &SimHandle) -> Vec<Duration> {
    sim.submissions().iter().map(|s| s.at).collect()
}

/// The most submits the simulator accepted within any `window`.
pub fn busiest(times: &[Duration], window: Duration) -> usize {
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| **t < times[i] + window)
                .count()
        })
        .max()
        .unwrap_or(0)
}
