//! Issue 12: several processes on one API key share its limits through a real Redis;
//! when Redis goes away they fall back to 1/N each, evenly spaced; a misused Redis stops
//! a run before anything is sent.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use stembatch::manifest::{Rate, RedisUrl, RedisUrlSource, RunSettings, ShardPosition};
use stembatch::scheduler::shared_limit::{self, account_id, limit_key};
use stembatch::sim::{SimConfig, SimHandle};

use crate::helpers::*;
use crate::redis_server::RedisServer;

/// The account's submit limit, which every process is configured with: 20/s evenly
/// spaced, 1,200 a minute, and the simulator's one-second window allows exactly that;
/// its minute cannot fill in a test this short. A process the machine starves for a
/// moment gives up the slots that passed rather than send them together.
const RATE: &str = "1200/min";
const PER_SECOND_ALLOWED: usize = 20;

fn account_sim() -> SimConfig {
    SimConfig {
        submit_limits: limits("1200/60s,20/1s"),
        detail_limits: limits("12000/60s,220/1s"),
        ..quick_sim()
    }
}

/// A manifest of `count` variants of the stem `stem`, at the account's rates, as the
/// process `share` of those on the key.
fn manifest(stem: &str, count: usize, share: Option<&str>) -> String {
    let tags: Vec<String> = (0..count).map(|i| format!("\"piano {i}\"")).collect();
    let share = share.map_or(String::new(), |s| format!("[limits]\nshare = \"{s}\"\n"));
    format!(
        r#"[run]
concurrency = 40
submit_rate = "{RATE}"
poll_rate = "12000/min"
poll_interval = "100ms"
poll_interval_max = "400ms"
task_timeout = "20s"

[defaults]
title = "{{stem}} {{variant}}"
tags = "piano"
negative_tags = ""
{share}
[[stem]]
url = "https://stems.example.com/{stem}.wav"
[stem.matrix]
tags = [{}]
"#,
        tags.join(", ")
    )
}

/// How often three submits came within 15 ms, under a third of a period: three
/// processes in lock-step send a few milliseconds apart, every third submit. Evenly
/// spaced ones come 50 ms apart; a machine that starves one process for a moment makes
/// it send late, which shortens one gap (seen under CI's load: a handful of triples
/// within 50 ms), but two gaps under 15 ms in a row are lock-step, not lateness.
fn crowded(sim: &SimHandle) -> usize {
    let times: Vec<Duration> = sim.submissions().iter().map(|s| s.at).collect();
    times
        .windows(3)
        .filter(|w| w[2] - w[0] < Duration::from_millis(15))
        .count()
}

/// Three processes, one key: each its own manifest (50 variants) and output folder, the
/// process `i` of 3, sharing through `redis_url`. Returns their outputs and the time
/// until the last ended; `meanwhile` runs while they do.
async fn three_processes(
    sim: &SimHandle,
    dir: &Path,
    redis_url: &str,
    meanwhile: impl std::future::Future<Output = ()>,
) -> (Vec<std::process::Output>, Duration) {
    let started = Instant::now();
    let children: Vec<_> = (0..3)
        .map(|i| {
            let path: PathBuf = dir.join(format!("m{i}.toml"));
            std::fs::write(
                &path,
                manifest(&format!("s{i}"), 50, Some(&format!("{i}/3"))),
            )
            .unwrap();
            let out = dir.join(format!("out{i}"));
            let mut command = run_command(sim, &path, &out, &[]);
            command.env("STEMBATCH_REDIS_URL", redis_url);
            command.stdout(std::process::Stdio::piped());
            command.stderr(std::process::Stdio::piped());
            command.spawn().expect("stembatch starts")
        })
        .collect();
    meanwhile.await;
    let mut outputs = Vec::new();
    for child in children {
        let output = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
            .await
            .expect("stembatch finished in time")
            .unwrap();
        outputs.push(output);
    }
    (outputs, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_on_one_key_keep_to_its_limit_as_fast_as_one() {
    let _alone = WINDOW_TESTS.write().await;
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    // One process alone, at the account's limit, with all 150 variants.
    let alone = start_sim(account_sim()).await;
    let (dir, path) = write_manifest(&manifest("alone", 150, None));
    let started = Instant::now();
    let output = run_alone_against(&alone, &path, &dir.path().join("out")).await;
    let one = started.elapsed();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(alone.stats().rate_limited, 0);

    let sim = start_sim(account_sim()).await;
    let (outputs, three) = three_processes(&sim, dir.path(), &redis.url(), async {}).await;
    for output in &outputs {
        assert_eq!(output.status.code(), Some(0), "{}", stderr(output));
        assert!(!stderr(output).contains("is away"), "{}", stderr(output));
        assert!(
            !stderr(output).contains("declares no place"),
            "{}",
            stderr(output)
        );
    }
    let stats = sim.stats();
    assert_eq!(stats.tasks_created, 150);
    assert_eq!(stats.rate_limited, 0, "{stats:?}");
    let second = busiest(&submit_times(&sim), Duration::from_secs(1));
    assert!(
        second <= PER_SECOND_ALLOWED,
        "{second} submits in one second"
    );
    let crowded = crowded(&sim);
    assert!(crowded <= 3, "three submits within 15 ms {crowded} times");
    let ratio = three.as_secs_f64() / one.as_secs_f64();
    eprintln!("three processes on one key: {three:?}; one alone: {one:?}; ratio {ratio:.3}");
    assert!(
        ratio <= 1.10,
        "three processes took {three:?}, one alone {one:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_that_lose_redis_fall_back_to_a_share_each_and_stay_under_the_limit() {
    let _alone = WINDOW_TESTS.write().await;
    let Some(mut redis) = RedisServer::start(None) else {
        return;
    };
    let sim = start_sim(account_sim()).await;
    let dir = tempfile::tempdir().unwrap();
    let url = redis.url();
    let (outputs, _) = three_processes(&sim, dir.path(), &url, async {
        wait_until("a third of the submits", || sim.submissions().len() >= 50).await;
        redis.kill();
    })
    .await;
    for output in &outputs {
        let said = stderr(output);
        assert_eq!(output.status.code(), Some(0), "{said}");
        assert_eq!(said.matches("is away").count(), 1, "said once: {said}");
        assert!(said.contains("1/3 of each limit"), "{said}");
    }
    let stats = sim.stats();
    assert_eq!(stats.tasks_created, 150);
    assert_eq!(stats.rate_limited, 0, "{stats:?}");
    let second = busiest(&submit_times(&sim), Duration::from_secs(1));
    assert!(
        second <= PER_SECOND_ALLOWED,
        "{second} submits in one second"
    );
    // Not in lock-step: three processes each at 1/3 that fell back together would send
    // three at once every 150 ms, some 30 times in the 100 submits after the kill.
    let crowded = crowded(&sim);
    assert!(crowded <= 3, "three submits within 15 ms {crowded} times");
}

/// A run with `redis_url` against a fresh simulator: its output, and whether the
/// simulator saw any call.
async fn run_with_redis(redis_url: &str) -> (std::process::Output, SimHandle, tempfile::TempDir) {
    let sim = start_sim(account_sim()).await;
    let (dir, path) = write_manifest(&manifest("a", 3, None));
    let mut command = run_command(&sim, &path, &dir.path().join("out"), &[]);
    command.env("STEMBATCH_REDIS_URL", redis_url);
    let output = tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .unwrap()
        .unwrap();
    (output, sim, dir)
}

/// A run with `redis_url` that a misused Redis stops at the start: exit 2, with nothing
/// sent to the simulator and nothing written to the output folder. Returns what it said.
async fn refused_before_anything_is_sent(redis_url: &str) -> String {
    let (output, sim, dir) = run_with_redis(redis_url).await;
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{said}");
    let stats = sim.stats();
    assert_eq!(
        (stats.submit_calls, stats.detail_calls, stats.upload_calls),
        (0, 0, 0)
    );
    assert!(!dir.path().join("out").exists(), "nothing written either");
    said
}

#[tokio::test]
async fn a_wrong_redis_password_is_a_clear_error_before_anything_is_sent() {
    let Some(redis) = RedisServer::start(Some("right-password")) else {
        return;
    };
    let url = redis.url().replace("right-password", "hunter2-wrong");
    let said = refused_before_anything_is_sent(&url).await;
    assert!(
        said.contains("the shared rate limit's Redis redis://:***@127.0.0.1"),
        "{said}"
    );
    assert!(said.contains("(from STEMBATCH_REDIS_URL)"), "{said}");
    assert!(said.contains("check the password"), "{said}");
    assert!(
        !said.contains("hunter2"),
        "the password is never shown: {said}"
    );
}

#[tokio::test]
async fn a_limit_key_of_the_wrong_type_is_a_clear_error_before_anything_is_sent() {
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    let key = limit_key(&account_id(quick_sim().key.as_str()), "detail");
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("field")
        .arg("value")
        .query(&mut redis.connection())
        .unwrap();
    let said = refused_before_anything_is_sent(&redis.url()).await;
    assert!(said.contains("WRONGTYPE"), "{said}");
    assert!(said.contains("a database of its own"), "{said}");
}

/// A read-only replica (its primary away, its data served stale) answers reads: the
/// start-up check writes as a reservation does, so the run stops with exit 2.
#[tokio::test]
async fn a_read_only_replica_is_a_clear_error_before_anything_is_sent() {
    let primary = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
        .to_string();
    let replica_of = ["--replicaof", "127.0.0.1", &primary];
    let Some(redis) = RedisServer::start_with(None, &replica_of) else {
        return;
    };
    let said = refused_before_anything_is_sent(&redis.url()).await;
    assert!(said.contains("read only replica"), "{said}");
    assert!(said.contains("at its primary"), "{said}");
}

/// A Redis user that may read and run scripts but not `SET`: exit 2 at the start, with
/// the commands it needs named.
#[tokio::test]
async fn a_redis_user_without_set_is_a_clear_error_before_anything_is_sent() {
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "limited", "on", ">pw", "~*", "+@all", "-set"])
        .query(&mut redis.connection())
        .unwrap();
    let url = redis.url().replace("redis://", "redis://limited:pw@");
    let said = refused_before_anything_is_sent(&url).await;
    assert!(said.contains("can't run this command"), "{said}");
    assert!(said.contains("EVALSHA and SCRIPT LOAD"), "{said}");
}

/// Two processes' pacers (built as a run builds them) on one key, asking in turns: their
/// slots interleave a period apart, a hold-off of one holds the other back, and Redis
/// holds a hash of the key, never the key.
#[tokio::test]
async fn pacers_on_one_key_hand_out_one_schedule_and_redis_never_holds_the_key() {
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    let url = RedisUrl::parse(&redis.url()).unwrap();
    let settings = RunSettings {
        submit_rate: Rate::parse("20/s").unwrap(),
        ..RunSettings::default()
    };
    let api_key = "sk-live-secret-0123456789";
    let account = account_id(api_key);
    let mut pacers = Vec::new();
    for index in 0..2 {
        let position = ShardPosition::new(index, 2).unwrap();
        pacers.push(
            shared_limit::shared_pacers(&url, RedisUrlSource::Env, &account, position, &settings)
                .await
                .unwrap(),
        );
    }
    let mut slots = Vec::new();
    for turn in 0..12 {
        slots.push(pacers[turn % 2].submit.reserve(Instant::now()).await);
    }
    slots.sort();
    let gaps: Vec<Duration> = slots.windows(2).map(|p| p[1] - p[0]).collect();
    // Each slot is mapped onto this clock when its answer arrives, which a busy machine
    // may delay by a few milliseconds; two pacers that did not share would hand out
    // slots at once.
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(35)),
        "{gaps:?}"
    );
    assert!(
        slots[11] - slots[0] >= Duration::from_millis(535),
        "{gaps:?}"
    );
    // A 429 that one process sees holds every process back.
    let now = Instant::now();
    pacers[0].submit.hold_off(now, Duration::from_secs(1)).await;
    let slot = pacers[1].submit.reserve(Instant::now()).await;
    assert!(slot >= now + Duration::from_millis(995), "{:?}", slot - now);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut redis.connection())
        .unwrap();
    // The start-up check's scratch key may not have expired yet.
    let mut keys = keys;
    keys.retain(|k| !k.ends_with(":check"));
    assert_eq!(keys, [format!("stembatch:limit:{account}:submit")]);
    let dump: Vec<String> = keys
        .iter()
        .map(|k| {
            redis::cmd("GET")
                .arg(k)
                .query(&mut redis.connection())
                .unwrap()
        })
        .collect();
    assert!(!format!("{keys:?}{dump:?}").contains("secret"));
}

/// A process that shares the limits but declares no place among those on the key is
/// warned at the start: should Redis go away, it would take the full limits.
#[tokio::test]
async fn a_process_with_no_place_on_a_shared_key_is_warned_at_the_start() {
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    let (output, sim, _dir) = run_with_redis(&redis.url()).await;
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{said}");
    assert_eq!(said.matches("declares no place").count(), 1, "{said}");
    assert!(said.contains("(limits.share or --shard)"), "{said}");
    assert_eq!(sim.stats().tasks_created, 3);
}

/// A key that holds something else than a time: exit 2, the hint found by the script's
/// own error code.
#[tokio::test]
async fn a_limit_key_holding_no_time_is_a_clear_error_before_anything_is_sent() {
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    let key = limit_key(&account_id(quick_sim().key.as_str()), "submit");
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("not a time")
        .query(&mut redis.connection())
        .unwrap();
    let said = refused_before_anything_is_sent(&redis.url()).await;
    assert!(said.contains("holds something else than a time"), "{said}");
    assert!(said.contains("another program wrote this key"), "{said}");
}

/// A Redis that refuses connections is tried for about a second (whatever the jitter)
/// before the pacers fall back: every process on the key outlasts a short blip alike.
#[tokio::test]
async fn a_redis_away_at_the_start_is_tried_for_a_second() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = RedisUrl::parse(&format!("redis://127.0.0.1:{port}")).unwrap();
    for _ in 0..3 {
        let started = Instant::now();
        let account = account_id("sk-away");
        shared_limit::shared_pacers(
            &url,
            RedisUrlSource::Env,
            &account,
            ShardPosition::SOLE,
            &RunSettings::default(),
        )
        .await
        .unwrap();
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(1), "{waited:?}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
    }
}

/// A Redis that is not there when the run starts: the run waits a moment, says so once,
/// and goes on alone at the limit its place allows.
#[tokio::test]
async fn a_redis_away_at_the_start_is_said_once_and_the_run_goes_on() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let started = Instant::now();
    let (output, sim, _dir) = run_with_redis(&format!("redis://127.0.0.1:{port}")).await;
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{said}");
    assert_eq!(said.matches("is away").count(), 1, "{said}");
    assert!(said.contains("at the start"), "{said}");
    assert!(
        said.contains("the full limits (no other process was declared"),
        "{said}"
    );
    assert_eq!(sim.stats().tasks_created, 3);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// The three shards of one manifest, into one folder, sharing the limit: when Redis goes
/// away, each falls back by its shard (`--shard I/3`), with no `limits.share` needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_that_lose_redis_fall_back_by_their_shard() {
    let _alone = WINDOW_TESTS.write().await;
    let Some(mut redis) = RedisServer::start(None) else {
        return;
    };
    let sim = start_sim(account_sim()).await;
    let (dir, path) = write_manifest(&manifest("all", 150, None));
    let out = dir.path().join("out");
    let children: Vec<_> = (0..3)
        .map(|i| {
            let shard = format!("{i}/3");
            let mut command = run_command(&sim, &path, &out, &["--shard", &shard]);
            command.env("STEMBATCH_REDIS_URL", redis.url());
            command.stdout(std::process::Stdio::piped());
            command.stderr(std::process::Stdio::piped());
            command.spawn().expect("stembatch starts")
        })
        .collect();
    wait_until("a third of the submits", || sim.submissions().len() >= 50).await;
    redis.kill();
    for (i, child) in children.into_iter().enumerate() {
        let output = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
            .await
            .expect("stembatch finished in time")
            .unwrap();
        let said = stderr(&output);
        assert_eq!(output.status.code(), Some(0), "{said}");
        assert_eq!(said.matches("is away").count(), 1, "said once: {said}");
        let place = format!("1/3 of each limit (its place: {i} of 3, from 0)");
        assert!(said.contains(&place), "{said}");
    }
    let stats = sim.stats();
    assert_eq!(stats.tasks_created, 150);
    assert_eq!(stats.rate_limited, 0, "{stats:?}");
    let crowded = crowded(&sim);
    assert!(crowded <= 3, "three submits within 15 ms {crowded} times");
}
