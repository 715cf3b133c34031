//! Benchmarks of the client against the in-process simulator.
//!
//! `cargo run --release --example bench` runs every scenario and prints a table
//! (`-- --only NAME` runs one). Each
//! scenario's client runs in a child process (this same program, `--scenario NAME`), so
//! the CPU time and peak memory it reports are the client's alone; the simulator runs in
//! the parent. Scenarios:
//!
//! - `rate-120`, `rate-1200`: rate-limited runs; makespan ÷ ideal, where ideal is
//!   variants ÷ submit rate + task time (target ≤ 1.05).
//! - `faulty-1200`: as `rate-1200` with 10% of API calls answered 503 and 10% of
//!   downloads cut short (target ≤ 1.15).
//! - `unlimited`: 1,000 variants with the limits lifted: client CPU seconds, peak memory,
//!   detail queries per task. `unlimited-200k` (only with `--only`): the same with tracks
//!   of 200 KB, the `qc` scenario's, three rounds, each followed by `cat | sha256sum`
//!   over 2,000 such tracks: the client's user CPU against it (target ≤ 1.5).
//! - `three-on-one-key`: as `rate-1200`, split over three client processes on one API
//!   key that share the limit through a `redis-server` the benchmark starts on a free
//!   loopback port: makespan ÷ ideal (the same ideal as one process) and 429s (target 0).
//!   Where redis-server is not installed, the table says so.
//! - `paused`: as `rate-120`, with the client process stopped (SIGSTOP) for 3 s in the
//!   middle of the run and then continued, as a suspended VM or laptop is: 429s (target
//!   0) and the busiest one-second window next to its limit.
//! - `plan`: `plan` over a 100,000-variant matrix: time and peak memory (targets < 2 s,
//!   < 200 MB).
//! - `size` (only with `--only size`: it takes minutes): the `stembatch` binary built
//!   beside this program (`cargo build --profile profiling --bin stembatch --example
//!   bench`), run as a user would (`run -q`, under `/usr/bin/time`) against the in-process
//!   simulator with no limits, 0.2 s tasks and 0.05 s tracks, a one-stem matrix of 10,000
//!   and 100,000 variants (`--sizes 1000,10000` to choose): wall time, client CPU per
//!   variant and peak memory of the fresh run; then the same run twice again over the
//!   finished folder (it buys nothing: the second night, which opens from the checkpoint
//!   the first night's end wrote, and the third); and `validate`/`plan` over 1,000,000
//!   variants: time and peak memory. Targets in issue 16 / docs/benchmarks-size.md.
//! - `qc`: quality control (decode, levels, loudness, waveform: [`stembatch::qc::check`])
//!   over the tracks of 1,000 variants, 2,000 simulator WAVs of 200 KB (22.05 kHz mono),
//!   in a child process, one track after the other; and, side by side over the same
//!   files, `cat FILES | sha256sum`. User CPU seconds of each (the median of three
//!   rounds) and their ratio (target ≤ 1.5). `-- --only qc` runs it alone.
//!
//! Every row also shows the busiest one-second window of accepted submits next to the
//! simulator's one-second limit.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stembatch::api::{ApiClient, ApiKey};
use stembatch::journal::writer::JournalWriter;
use stembatch::manifest::{RedisUrl, ShardPosition};
use stembatch::scheduler::state::Entry;
use stembatch::scheduler::{self, Pacers, RunInputs, Stops};
use stembatch::sim::{Faults, SimConfig, SimHandle, WindowLimit};
use tokio_util::sync::CancellationToken;

/// One rate-limited or unlimited scenario.
struct Scenario {
    name: &'static str,
    variants: usize,
    submit_rate: &'static str,
    /// Variants submitted per second at `submit_rate`.
    per_second: f64,
    concurrency: usize,
    sim_submit_limits: &'static str,
    task: Duration,
    track_seconds: f64,
    /// Share of calls (API calls and downloads alike) that fail retryably.
    failing: f64,
    /// Client processes on one key, sharing the limit through Redis when more than one;
    /// `variants` is their total.
    processes: u32,
    /// Stop the client (SIGSTOP) this long after it starts, for the second duration,
    /// then continue it (SIGCONT).
    pause: Option<(Duration, Duration)>,
}

const SCENARIOS: [Scenario; 7] = [
    Scenario {
        name: "rate-120",
        variants: 40,
        submit_rate: "120/min",
        per_second: 2.0,
        concurrency: 16,
        sim_submit_limits: "120/60s,3/1s",
        task: Duration::from_secs(5),
        track_seconds: 5.0,
        failing: 0.0,
        processes: 1,
        pause: None,
    },
    Scenario {
        name: "rate-1200",
        variants: 200,
        submit_rate: "1200/min",
        per_second: 20.0,
        concurrency: 100,
        sim_submit_limits: "1200/60s,25/1s",
        task: Duration::from_secs(3),
        track_seconds: 2.0,
        failing: 0.0,
        processes: 1,
        pause: None,
    },
    Scenario {
        name: "faulty-1200",
        variants: 200,
        submit_rate: "1200/min",
        per_second: 20.0,
        concurrency: 100,
        sim_submit_limits: "1200/60s,25/1s",
        task: Duration::from_secs(3),
        track_seconds: 2.0,
        failing: 0.1,
        processes: 1,
        pause: None,
    },
    Scenario {
        name: "unlimited",
        variants: 1000,
        submit_rate: "100000/s",
        per_second: f64::INFINITY,
        concurrency: 200,
        sim_submit_limits: "none",
        task: Duration::from_secs(1),
        track_seconds: 0.5,
        failing: 0.0,
        processes: 1,
        pause: None,
    },
    // As `unlimited`, with the tracks of the QC target: 200 KB (4.5 s at 22.05 kHz mono),
    // so that the client's whole CPU (download, hashing, QC) can be set against the `qc`
    // scenario's `cat | sha256sum`. Not in the default run (the simulator renders 2,000
    // tracks of 4.5 s); `-- --only unlimited-200k`.
    Scenario {
        name: "unlimited-200k",
        variants: 1000,
        submit_rate: "100000/s",
        per_second: f64::INFINITY,
        concurrency: 200,
        sim_submit_limits: "none",
        task: Duration::from_secs(1),
        track_seconds: 4.5,
        failing: 0.0,
        processes: 1,
        pause: None,
    },
    Scenario {
        name: "three-on-one-key",
        variants: 210,
        submit_rate: "1200/min",
        per_second: 20.0,
        concurrency: 100,
        sim_submit_limits: "1200/60s,25/1s",
        task: Duration::from_secs(3),
        track_seconds: 2.0,
        failing: 0.0,
        processes: 3,
        pause: None,
    },
    Scenario {
        name: "paused",
        variants: 40,
        submit_rate: "120/min",
        per_second: 2.0,
        concurrency: 16,
        sim_submit_limits: "120/60s,3/1s",
        // Short tasks: most variants in flight wait for their submit slot when it stops.
        task: Duration::from_secs(1),
        track_seconds: 1.0,
        failing: 0.0,
        processes: 1,
        pause: Some((Duration::from_secs(6), Duration::from_secs(3))),
    },
];

/// The manifest of one client process (the `index`-th of the scenario's).
fn manifest_text(scenario: &Scenario, index: u32) -> String {
    let tags: Vec<String> = (0..scenario.variants / scenario.processes as usize)
        .map(|i| format!("\"piano {i}\""))
        .collect();
    format!(
        r#"[run]
concurrency = {concurrency}
submit_rate = "{rate}"
poll_rate = "100000/min"
poll_interval = "1s"
poll_interval_max = "5s"
task_timeout = "5m"
download_concurrency = 8

[defaults]
title = "{{stem}} {{variant}}"
tags = "piano"
negative_tags = ""

[[stem]]
url = "https://stems.example.com/bench-{index}.wav"
[stem.matrix]
tags = [{tags}]
"#,
        concurrency = scenario.concurrency,
        rate = scenario.submit_rate,
        tags = tags.join(", ")
    )
}

/// Peak resident memory of this process, in MiB (Linux).
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    kib / 1024.0
}

/// User + system CPU seconds of this process (Linux; clock ticks at 100 Hz).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Where a child shares its limits: Redis, and its place among the scenario's processes.
struct Sharing {
    redis: RedisUrl,
    position: ShardPosition,
}

/// The child side of a run scenario: runs the client against `url` and prints JSON.
async fn child_run(scenario: &Scenario, url: &str, key: &str, sharing: Option<Sharing>) {
    let index = sharing.as_ref().map_or(0, |s| s.position.index);
    let text = manifest_text(scenario, index);
    let manifest = stembatch::manifest::parse(Path::new("bench.toml"), &text)
        .expect("the bench manifest is valid");
    let client = ApiClient::new(url, ApiKey::new(key)).unwrap();
    let pacers = match sharing {
        None => Pacers::from_settings(&manifest.run),
        Some(sharing) => scheduler::shared_limit::shared_pacers(
            &sharing.redis,
            stembatch::manifest::RedisUrlSource::Env,
            &client.account_id(),
            sharing.position,
            &manifest.run,
        )
        .await
        .expect("the benchmark's Redis is usable"),
    };
    let out = tempfile::tempdir().unwrap();
    let (journal, _) = JournalWriter::open(&out.path().join("journal.jsonl")).unwrap();
    let inputs = RunInputs {
        client,
        journal,
        api: url.to_owned(),
        upload_mode: manifest.upload.mode.clone(),
        earlier_uploads: Default::default(),
        bucket: None,
        pacers,
        settings: manifest.run.clone(),
        out_dir: out.path().to_owned(),
        shard_part: None,
        stops: Stops {
            interrupted: CancellationToken::new(),
            deadline: None,
        },
        stopped_before: None,
        api_checked: None,
        progress: stembatch::report::progress::Progress::off(),
        track_store: Default::default(),
    };
    let started = Instant::now();
    let started_unix = unix_seconds();
    let variants = manifest.variants.to_vec();
    let entries = variants.iter().map(Entry::fresh).collect();
    let variants = Arc::new(stembatch::variant::VariantTable::new(Arc::new(variants)));
    let state = scheduler::run(variants, entries, Vec::new(), inputs)
        .await
        .unwrap();
    let makespan = started.elapsed().as_secs_f64();
    let counts = state.state.counts();
    assert!(counts.all_finished(), "{counts}");
    println!(
        "{}",
        serde_json::json!({
            "makespan_s": makespan,
            "started_unix_s": started_unix,
            "ended_unix_s": unix_seconds(),
            "cpu_s": cpu_seconds(),
            "user_s": user_seconds(true),
            "peak_rss_mib": peak_rss_mib(),
        })
    );
}

/// The wall clock, which the client processes of one scenario share.
fn unix_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// The child side of the plan scenario.
fn child_plan() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.toml");
    let tags: Vec<String> = (0..100).map(|i| format!("\"style {i}\"")).collect();
    let weights = |n: usize| {
        (0..n)
            .map(|i| format!("{:.2}", i as f64 / 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = format!(
        "[defaults]\ntitle = \"{{stem}} {{variant}}\"\ntags = \"x\"\nnegative_tags = \"\"\n\
         [[stem]]\nurl = \"https://stems.example.com/big.wav\"\n[stem.matrix]\ntags = [{}]\nstyle_weight = [{}]\naudio_weight = [{}]\n",
        tags.join(", "),
        weights(10),
        weights(100)
    );
    std::fs::write(&path, text).unwrap();
    let started = Instant::now();
    let manifest = stembatch::manifest::load(&path).unwrap();
    let sink = std::fs::File::create("/dev/null").unwrap();
    stembatch::app::write_plan(sink, manifest.variants.iter(), false, None).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({ "variants": manifest.variants.len(), "seconds": seconds, "peak_rss_mib": peak_rss_mib() })
    );
}

fn spawn_child<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> serde_json::Value {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(args)
        .output()
        .expect("the benchmark child runs");
    child_result(output)
}

/// A `redis-server` on a free loopback port, without persistence, killed when dropped.
struct RedisServer {
    child: std::process::Child,
    url: String,
}

impl RedisServer {
    fn start() -> Result<RedisServer, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|_| {
                "skipped: redis-server is not installed (apt-get install redis-server)".to_owned()
            })?;
        let url = format!("redis://127.0.0.1:{port}");
        let server = RedisServer { child, url };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(5) {
                return Err("skipped: redis-server did not start".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the scenario's client processes against the simulator at `url`: their makespan
/// (from the first client's run starting to the last one's ending, measured as a single
/// client measures its own: process start-up left out), CPU seconds added up and the
/// highest peak memory. An error when a scenario cannot run here.
fn run_clients(scenario: &Scenario, url: &str) -> Result<serde_json::Value, String> {
    let args = |extra: &[String]| -> Vec<String> {
        let mut args: Vec<String> = [
            "--scenario",
            scenario.name,
            "--url",
            url,
            "--key",
            "bench-key",
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend_from_slice(extra);
        args
    };
    if let Some((after, frozen)) = scenario.pause {
        let child = Command::new(std::env::current_exe().unwrap())
            .args(args(&[]))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the benchmark child runs");
        let signal = |name: &str| {
            let sent = Command::new("kill")
                .args([name, &child.id().to_string()])
                .status()
                .expect("kill runs");
            assert!(sent.success(), "kill {name}");
        };
        std::thread::sleep(after);
        signal("-STOP");
        std::thread::sleep(frozen);
        signal("-CONT");
        return Ok(child_result(child.wait_with_output().unwrap()));
    }
    if scenario.processes == 1 {
        return Ok(spawn_child(&args(&[])));
    }
    let redis = RedisServer::start()?;
    let children: Vec<_> = (0..scenario.processes)
        .map(|index| {
            let extra = [
                "--redis".to_owned(),
                redis.url.clone(),
                "--index".to_owned(),
                index.to_string(),
            ];
            Command::new(std::env::current_exe().unwrap())
                .args(args(&extra))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("the benchmark child runs")
        })
        .collect();
    let results: Vec<serde_json::Value> = children
        .into_iter()
        .map(|child| child_result(child.wait_with_output().unwrap()))
        .collect();
    let sum = |field: &str| {
        results
            .iter()
            .filter_map(|r| r[field].as_f64())
            .sum::<f64>()
    };
    let max = |field: &str| {
        results
            .iter()
            .filter_map(|r| r[field].as_f64())
            .fold(f64::NAN, f64::max)
    };
    let extreme = |field: &str, pick: fn(f64, f64) -> f64| {
        results
            .iter()
            .filter_map(|r| r[field].as_f64())
            .reduce(pick)
            .unwrap_or(f64::NAN)
    };
    let makespan = extreme("ended_unix_s", f64::max) - extreme("started_unix_s", f64::min);
    Ok(serde_json::json!({
        "makespan_s": makespan,
        "cpu_s": sum("cpu_s"),
        "peak_rss_mib": max("peak_rss_mib"),
    }))
}

/// The most submits the simulator accepted within any one second.
fn busiest_second(sim: &SimHandle) -> usize {
    let times: Vec<Duration> = sim.submissions().iter().map(|s| s.at).collect();
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| **t < times[i] + Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// The JSON line a benchmark child printed last.
fn child_result(output: std::process::Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    serde_json::from_str(text.lines().last().unwrap_or("{}")).expect("the child prints JSON")
}

/// What `/usr/bin/time -f "%e %U %S %M"` said of one command.
struct Timed {
    wall_s: f64,
    cpu_s: f64,
    peak_mib: f64,
}

/// Runs `stembatch ARGS` (the binary beside this program) under `/usr/bin/time`.
fn timed_stembatch(args: &[&str], key: &str) -> Timed {
    let exe = std::env::current_exe().unwrap();
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("stembatch"))
        .expect("the program is in target/<profile>/examples");
    assert!(
        binary.exists(),
        "build the binary too: cargo build --profile profiling --bin stembatch --example bench"
    );
    let output = Command::new("/usr/bin/time")
        .args(["-f", "%e %U %S %M"])
        .arg(&binary)
        .args(args)
        .env("VIDGO_API_KEY", key)
        .env_remove("VIDGO_BASE_URL")
        .stdout(std::process::Stdio::null())
        .output()
        .expect("/usr/bin/time runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "stembatch {args:?}: {stderr}");
    let figures: Vec<f64> = stderr
        .lines()
        .last()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    assert_eq!(figures.len(), 4, "/usr/bin/time said {stderr}");
    Timed {
        wall_s: figures[0],
        cpu_s: figures[1] + figures[2],
        peak_mib: figures[3] / 1024.0,
    }
}

/// A one-stem manifest of `variants` variants (a tags matrix), with no client limits.
fn size_manifest(variants: usize) -> String {
    let tags: Vec<String> = (0..variants).map(|i| format!("\"piano {i}\"")).collect();
    format!(
        r#"[run]
concurrency = 200
submit_rate = "100000/s"
poll_rate = "100000/s"
upload_rate = "100000/s"
poll_interval = "1s"
poll_interval_max = "5s"
task_timeout = "5m"
download_concurrency = 16
max_new_submits = {variants}

[defaults]
title = "{{stem}} {{variant}}"
tags = "piano"
negative_tags = ""

[[stem]]
url = "https://stems.example.com/size.wav"
[stem.matrix]
tags = [{tags}]
"#,
        tags = tags.join(", ")
    )
}

/// Bytes of every file under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => bytes_under(&entry.path()),
            _ => entry.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// The size scenario (see the module's doc).
async fn size_scenario(sizes: &[usize]) -> String {
    let mut out = String::from(
        "| variants | wall | client CPU | CPU per variant | peak MiB | rerun wall | rerun peak MiB | next rerun wall | next rerun peak MiB | state on disk |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for &variants in sizes {
        let config = SimConfig {
            key: "bench-key".into(),
            task_duration: Duration::from_millis(200),
            track_seconds: 0.05,
            submit_limits: Vec::new(),
            detail_limits: Vec::new(),
            upload_limits: Vec::new(),
            ..SimConfig::default()
        };
        let sim = SimHandle::start(([127, 0, 0, 1], 0).into(), config)
            .await
            .unwrap();
        let url = sim.url();
        let (fresh, rerun, next, state) = tokio::task::spawn_blocking(move || {
            let dir = tempfile::tempdir().unwrap();
            let manifest = dir.path().join("size.toml");
            std::fs::write(&manifest, size_manifest(variants)).unwrap();
            let folder = dir.path().join("out");
            let args = [
                "run",
                manifest.to_str().unwrap(),
                "--out",
                folder.to_str().unwrap(),
                "--base-url",
                &url,
                "-q",
            ];
            let fresh = timed_stembatch(&args, "bench-key");
            // The second night opens from the checkpoint the first night's end wrote; the
            // third from one it did not write.
            let rerun = timed_stembatch(&args, "bench-key");
            let next = timed_stembatch(&args, "bench-key");
            (fresh, rerun, next, bytes_under(&folder.join(".stembatch")))
        })
        .await
        .unwrap();
        assert_eq!(
            sim.stats().tasks_created,
            variants as u64,
            "the rerun bought nothing"
        );
        out.push_str(&format!(
            "| {variants} | {:.1} s | {:.1} s | {:.2} ms | {:.0} | {:.2} s | {:.0} | {:.2} s | {:.0} | {:.1} MB |\n",
            fresh.wall_s,
            fresh.cpu_s,
            fresh.cpu_s * 1000.0 / variants as f64,
            fresh.peak_mib,
            rerun.wall_s,
            rerun.peak_mib,
            next.wall_s,
            next.peak_mib,
            state as f64 / 1e6,
        ));
    }
    // validate and plan over 1,000,000 variants: 1,000 tags × 10 style × 100 audio weights.
    let manifests = tokio::task::spawn_blocking(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("million.toml");
        let list = |n: usize, f: &dyn Fn(usize) -> String| {
            (0..n).map(f).collect::<Vec<_>>().join(", ")
        };
        let text = format!(
            "[defaults]\ntitle = \"{{stem}} {{variant}}\"\ntags = \"x\"\nnegative_tags = \"\"\n\
             [[stem]]\nurl = \"https://stems.example.com/big.wav\"\n[stem.matrix]\ntags = [{}]\nstyle_weight = [{}]\naudio_weight = [{}]\n",
            list(1000, &|i| format!("\"style {i}\"")),
            list(10, &|i| format!("{:.2}", i as f64 / 10.0)),
            list(100, &|i| format!("{:.2}", i as f64 / 100.0)),
        );
        std::fs::write(&path, text).unwrap();
        let path = path.to_str().unwrap().to_owned();
        let validate = timed_stembatch(&["validate", &path], "");
        let plan = timed_stembatch(&["plan", &path], "");
        (validate, plan)
    })
    .await
    .unwrap();
    for (name, timed) in [("validate", manifests.0), ("plan", manifests.1)] {
        out.push_str(&format!(
            "\n{name} over 1000000 variants: {:.1} s, peak {:.0} MiB",
            timed.wall_s, timed.peak_mib
        ));
    }
    out.push('\n');
    out
}

/// Tracks of the `qc` scenario: two per variant of 1,000.
const QC_TRACKS: usize = 2_000;
/// Seconds of each: 200 KB of 16-bit mono at 22.05 kHz.
const QC_TRACK_SECONDS: f64 = 4.5;
/// Distinct renders among them (rendering all 2,000 would take minutes; the files are
/// copies under their own names, read from the page cache like the others).
const QC_RENDERS: usize = 20;
/// Rounds of the `qc` scenario; the median counts.
const QC_ROUNDS: usize = 3;

/// Writes the `qc` scenario's tracks into `dir`; their paths.
fn write_qc_tracks(dir: &Path) -> Vec<std::path::PathBuf> {
    use stembatch::sim::audio::{encode_wav, render_samples, Params, Style, SAMPLE_RATE};
    let tags = [
        "piano",
        "lofi strings",
        "fast drums bass",
        "jazz piano",
        "slow ambient",
    ];
    let renders: Vec<Vec<u8>> = (0..QC_RENDERS)
        .map(|i| {
            let params = Params::of_style(Style::from_tags(tags[i % tags.len()]));
            let samples = render_samples(&params, i as u64, QC_TRACK_SECONDS);
            encode_wav(&samples, SAMPLE_RATE)
        })
        .collect();
    (0..QC_TRACKS)
        .map(|i| {
            let path = dir.join(format!("v{:04}-{}.wav", i / 2, i % 2 + 1));
            std::fs::write(&path, &renders[i % QC_RENDERS]).unwrap();
            path
        })
        .collect()
}

/// User CPU seconds of this process (`self_`) or of its waited-for children.
fn user_seconds(self_: bool) -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and cutime, in clock ticks of 100 Hz.
    let index = if self_ { 11 } else { 13 };
    fields
        .get(index)
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(f64::NAN, |ticks| ticks / 100.0)
}

/// The child side of the `qc` scenario: checks every `.wav` of `dir`, one after the
/// other, and prints its user CPU seconds.
fn child_qc(dir: &Path) {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    let started = user_seconds(true);
    let mut ok = 0;
    for path in &paths {
        let checked = stembatch::qc::check(path, Some(QC_TRACK_SECONDS));
        assert!(checked.wave.is_some(), "{}", path.display());
        ok += usize::from(checked.qc.verdict == stembatch::qc::Verdict::Ok);
    }
    assert_eq!(ok, paths.len(), "every generated track is ok");
    println!(
        "{}",
        serde_json::json!({ "tracks": paths.len(), "user_s": user_seconds(true) - started })
    );
}

/// The `qc` scenario's line: QC against `cat | sha256sum`, user CPU, over the same files.
fn qc_scenario() -> String {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_qc_tracks(dir.path());
    let bytes: u64 = paths
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let (mut qc, mut sha) = (Vec::new(), Vec::new());
    for _ in 0..QC_ROUNDS {
        let result = spawn_child(&[
            "--scenario".as_ref(),
            "qc".as_ref(),
            "--dir".as_ref(),
            dir.path().as_os_str(),
        ]);
        qc.push(result["user_s"].as_f64().unwrap_or(f64::NAN));
        sha.push(cat_sha256sum_seconds(&paths));
    }
    let (qc, sha) = (median(&mut qc), median(&mut sha));
    format!(
        "qc over {} tracks ({:.0} MB): {:.2} s user CPU; cat | sha256sum over the same files: {:.2} s; ratio {:.2} (target <= 1.5)",
        paths.len(),
        bytes as f64 / 1e6,
        qc,
        sha,
        qc / sha
    )
}

/// The simulator of a run scenario.
fn sim_config(scenario: &Scenario) -> SimConfig {
    SimConfig {
        key: "bench-key".into(),
        task_duration: scenario.task,
        track_seconds: scenario.track_seconds,
        submit_limits: WindowLimit::parse_list(scenario.sim_submit_limits).unwrap(),
        detail_limits: Vec::new(),
        // Retryable failures only: 503s before any work, downloads cut short.
        faults: Faults {
            unavailable: scenario.failing,
            truncate: scenario.failing,
            ..Faults::default()
        },
        ..SimConfig::default()
    }
}

/// User CPU seconds of `cat FILES | sha256sum` (bash and its children).
fn cat_sha256sum_seconds(paths: &[std::path::PathBuf]) -> f64 {
    let before = user_seconds(false);
    let status = Command::new("bash")
        .arg("-c")
        .arg(r#"cat "$@" | sha256sum > /dev/null"#)
        .arg("bash")
        .args(paths)
        .status()
        .expect("bash runs");
    assert!(status.success());
    user_seconds(false) - before
}

/// The median of `values`.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// `--only unlimited-200k`: the whole client over the `qc` scenario's 1,000 variants, and
/// right after each run, `cat | sha256sum` over 2,000 tracks like theirs (the `qc`
/// scenario's files, of the same size): the user CPU of each, per round and their medians,
/// and the ratio (issue 18's target: at most 1.5).
async fn whole_client_scenario(scenario: &'static Scenario) -> String {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_qc_tracks(dir.path());
    let (mut client, mut sha, mut lines) = (Vec::new(), Vec::new(), String::new());
    for round in 1..=QC_ROUNDS {
        let sim = SimHandle::start(([127, 0, 0, 1], 0).into(), sim_config(scenario))
            .await
            .unwrap();
        let url = sim.url();
        let result = tokio::task::spawn_blocking(move || run_clients(scenario, &url))
            .await
            .unwrap()
            .expect("one client process runs anywhere");
        let user = result["user_s"].as_f64().unwrap_or(f64::NAN);
        let paths = paths.clone();
        let cat = tokio::task::spawn_blocking(move || cat_sha256sum_seconds(&paths))
            .await
            .unwrap();
        lines.push_str(&format!(
            "round {round}: client user CPU {user:.2} s, makespan {:.2} s, peak {:.1} MiB; cat | sha256sum {cat:.2} s; ratio {:.2}\n",
            result["makespan_s"].as_f64().unwrap_or(f64::NAN),
            result["peak_rss_mib"].as_f64().unwrap_or(f64::NAN),
            user / cat
        ));
        client.push(user);
        sha.push(cat);
    }
    let (client, sha) = (median(&mut client), median(&mut sha));
    format!(
        "{lines}{}: client user CPU {client:.2} s (median of {QC_ROUNDS}); cat | sha256sum over 2,000 such tracks {sha:.2} s; ratio {:.2} (target <= 1.5)",
        scenario.name,
        client / sha
    )
}

async fn parent() {
    let mut report = String::new();
    let mut users = String::new();
    // `--only NAME` runs one scenario (for profiling); every scenario otherwise.
    let only = std::env::args().skip_while(|a| a != "--only").nth(1);
    if only.as_deref() == Some("size") {
        let sizes: Vec<usize> = std::env::args()
            .skip_while(|a| a != "--sizes")
            .nth(1)
            .map(|list| {
                list.split(',')
                    .map(|n| n.parse().expect("--sizes 1000,10000"))
                    .collect()
            })
            .unwrap_or_else(|| vec![10_000, 100_000]);
        print!("{}", size_scenario(&sizes).await);
        return;
    }
    if only.as_deref() == Some("unlimited-200k") {
        let scenario = SCENARIOS
            .iter()
            .find(|s| s.name == "unlimited-200k")
            .expect("the scenario is listed");
        println!("{}", whole_client_scenario(scenario).await);
        return;
    }
    if only.as_deref() == Some("qc") {
        println!(
            "{}",
            tokio::task::spawn_blocking(qc_scenario).await.unwrap()
        );
        return;
    }
    for scenario in SCENARIOS.iter().filter(|s| match only.as_deref() {
        Some(name) => name == s.name,
        None => s.name != "unlimited-200k",
    }) {
        let sim = SimHandle::start(([127, 0, 0, 1], 0).into(), sim_config(scenario))
            .await
            .unwrap();
        let url = sim.url();
        let measured = tokio::task::spawn_blocking(move || run_clients(scenario, &url))
            .await
            .unwrap();
        let result = match measured {
            Ok(result) => result,
            Err(why) => {
                report.push_str(&format!(
                    "| {} | {} | {why} |\n",
                    scenario.name, scenario.variants
                ));
                continue;
            }
        };
        let stats = sim.stats();
        let busiest = busiest_second(&sim);
        let second_limit = WindowLimit::parse_list(scenario.sim_submit_limits)
            .unwrap()
            .iter()
            .find(|l| l.window == Duration::from_secs(1))
            .map_or("-".to_owned(), |l| l.count.to_string());
        let makespan = result["makespan_s"].as_f64().unwrap_or(f64::NAN);
        // Without a rate limit there is no ideal to compare with.
        let ideal = match scenario.per_second.is_finite() {
            true => scenario.variants as f64 / scenario.per_second + scenario.task.as_secs_f64(),
            false => f64::NAN,
        };
        let line = format!(
            "| {} | {} | {:.2} s | {} | {} | {:.2} | {:.1} | {:.2} | {} | {busiest} / {second_limit} | {} |\n",
            scenario.name,
            scenario.variants,
            makespan,
            if ideal.is_finite() {
                format!("{ideal:.2} s")
            } else {
                "-".into()
            },
            if ideal.is_finite() {
                format!("{:.3}", makespan / ideal)
            } else {
                "-".into()
            },
            result["cpu_s"].as_f64().unwrap_or(f64::NAN),
            result["peak_rss_mib"].as_f64().unwrap_or(f64::NAN),
            stats.detail_calls as f64 / stats.tasks_created.max(1) as f64,
            stats.rate_limited,
            stats.faults,
        );
        report.push_str(&line);
        users.push_str(&format!(
            "{}: client user CPU {:.2} s\n",
            scenario.name,
            result["user_s"].as_f64().unwrap_or(f64::NAN)
        ));
    }
    let plan = tokio::task::spawn_blocking(|| spawn_child(&["--scenario", "plan"]))
        .await
        .unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "| scenario | variants | makespan | ideal | makespan/ideal | client CPU s | client peak MiB | detail queries/task | 429s | busiest 1 s / limit | faults |").unwrap();
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|").unwrap();
    write!(out, "{report}").unwrap();
    write!(out, "\n{users}").unwrap();
    writeln!(
        out,
        "\nplan over {} variants: {:.2} s, peak {:.1} MiB",
        plan["variants"],
        plan["seconds"].as_f64().unwrap_or(f64::NAN),
        plan["peak_rss_mib"].as_f64().unwrap_or(f64::NAN)
    )
    .unwrap();
    if only.is_none() {
        let qc = tokio::task::spawn_blocking(qc_scenario).await.unwrap();
        writeln!(out, "{qc}").unwrap();
    }
}

fn main() {
    // Named threads: a profile tells the simulator's work (the parent) from the client's.
    let parent = std::env::args().all(|a| a != "--scenario");
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(if parent { "sim" } else { "client" })
        .build()
        .expect("a runtime")
        .block_on(run());
}

async fn run() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    match value("--scenario").as_deref() {
        None => parent().await,
        Some("plan") => child_plan(),
        Some("qc") => child_qc(Path::new(&value("--dir").expect("--dir"))),
        Some(name) => {
            let scenario = SCENARIOS
                .iter()
                .find(|s| s.name == name)
                .expect("a known scenario");
            let (url, key) = (
                value("--url").expect("--url"),
                value("--key").expect("--key"),
            );
            let sharing = value("--redis").map(|redis| Sharing {
                redis: RedisUrl::parse(&redis).expect("--redis is a Redis URL"),
                position: ShardPosition::new(
                    value("--index").and_then(|i| i.parse().ok()).unwrap_or(0),
                    scenario.processes,
                )
                .expect("--index is below the scenario's processes"),
            });
            child_run(scenario, &url, &key, sharing).await;
        }
    }
}
