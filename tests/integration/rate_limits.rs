//! Rate limits hold: evenly spaced submits at exactly the provider's limit see no 429.

use std::time::Duration;

use crate::helpers::*;

/// How much earlier than it was sent the simulator may record a call, relative to the
/// call before it: the difference between the times its handler took to run for the two
/// (a stamp that is later than that is told by the gap before it: see
/// [`assert_evenly_spaced`]).
const HANDLER_JITTER: Duration = Duration::from_millis(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_variants_at_120_per_minute_see_no_429() {
    let _alone = WINDOW_TESTS.write().await;
    let sim = start_sim(stembatch::sim::SimConfig {
        submit_limits: limits("120/60s,3/1s"),
        detail_limits: limits("600/60s,20/1s"),
        ..quick_sim()
    })
    .await;
    let text = format!(
        "{}\n[[stem]]\nurl = \"https://stems.example.com/a.wav\"\n[stem.matrix]\ntags = [\"a\", \"b\", \"c\", \"d\", \"e\", \"f\", \"g\", \"h\"]\nstyle_weight = [0.1, 0.2, 0.3, 0.4, 0.5]\n",
        FAST_RUN
            .replace("submit_rate = \"1200/min\"", "submit_rate = \"120/min\"")
            .replace("poll_rate = \"12000/min\"", "poll_rate = \"600/min\"")
    );
    let (dir, manifest) = write_manifest(&text);
    let out = dir.path().join("out");
    let output = run_alone_against(&sim, &manifest, &out).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let stats = sim.stats();
    assert_eq!(stats.rate_limited, 0, "{stats:?}");
    assert_eq!(stats.tasks_created, 40);
    let times: Vec<Duration> = sim.submissions().iter().map(|s| s.at).collect();
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // Evenly spaced: each submit on its own 500 ms slot, never ahead of it, and never
    // closer than 500 ms to the one before: a busy machine that sends one late holds the
    // next back as long. What the simulator sees may differ from what was sent by the
    // time its own handler took to run (a few milliseconds on a loaded machine).
    for (k, at) in times.iter().enumerate() {
        let slot = times[0] + Duration::from_millis(500) * k as u32;
        assert!(
            *at + Duration::from_millis(60) >= slot,
            "submit {k} ahead of its slot: {gaps:?}"
        );
    }
    assert_evenly_spaced(&gaps, Duration::from_millis(500));
    assert!(busiest(&times, Duration::from_secs(1)) <= 3, "{gaps:?}");
    let span = times[39] - times[0];
    assert!(
        span >= Duration::from_millis(19_400) && span < Duration::from_millis(21_500),
        "{span:?}"
    );
}

/// Each gap between two accepted submits is at least `period`, or is short only because
/// the simulator stamped the submit before it late: its handler ran late on a loaded
/// machine, which lengthens the gap before that submit by as much as it shortens the gap
/// after it. So a short gap must make up a full two periods with the gap before it. A
/// burst (two sends together) cannot: its short gap follows a gap of one period.
fn assert_evenly_spaced(gaps: &[Duration], period: Duration) {
    for (k, gap) in gaps.iter().enumerate() {
        if *gap + HANDLER_JITTER >= period {
            continue;
        }
        let pair = k.checked_sub(1).map(|before| gaps[before] + *gap);
        assert!(
            pair.is_some_and(|pair| pair + HANDLER_JITTER >= period * 2),
            "gap {k} shorter than the period, not explained by a late stamp: {gaps:?}"
        );
    }
}

/// Issue 17: a process frozen for 3 s in the middle of a run (SIGSTOP, then SIGCONT, as a
/// suspended VM or laptop is) does not send the slots that passed meanwhile together
/// when it thaws: no 429, no one-second window over the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_frozen_for_three_seconds_keeps_to_the_limit_when_it_thaws() {
    let _alone = WINDOW_TESTS.write().await;
    let sim = start_sim(stembatch::sim::SimConfig {
        submit_limits: limits("120/60s,3/1s"),
        detail_limits: limits("600/60s,20/1s"),
        ..quick_sim()
    })
    .await;
    let head = FAST_RUN
        .replace("submit_rate = \"1200/min\"", "submit_rate = \"120/min\"")
        .replace("poll_rate = \"12000/min\"", "poll_rate = \"600/min\"");
    let (dir, manifest) = write_manifest(&variants_manifest(&head, 20));
    let out = dir.path().join("out");
    let child = run_command(&sim, &manifest, &out, &[])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("stembatch starts");
    wait_until("four submits", || sim.submissions().len() >= 4).await;
    let pid = child.id().expect("the child runs").to_string();
    let signal = |name: &str| {
        let sent = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    signal("-STOP");
    let frozen_at = sim.submissions().len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal("-CONT");
    let output = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
        .await
        .expect("stembatch finished in time")
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let stats = sim.stats();
    assert_eq!(stats.rate_limited, 0, "{stats:?}");
    assert_eq!(stats.tasks_created, 20);
    let times: Vec<Duration> = sim.submissions().iter().map(|s| s.at).collect();
    let second = busiest(&times, Duration::from_secs(1));
    assert!(second <= 3, "{second} submits in one second: {times:?}");
    assert!(frozen_at < 20, "the freeze came in the middle of the run");
    // The given-up slots left no intent that reads as a submit that may have gone out:
    // a re-run has nothing to submit or ask.
    let again = run_alone_against(&sim, &manifest, &out).await;
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(sim.stats().submit_calls, stats.submit_calls);
}

/// Limits far above what the machine can send (as a user lifts them for a private
/// deployment) still let every call through: at 100,000 a second the spacing is 10 µs,
/// far below the timer's resolution, and a pacer that gave up every slot that came a
/// little late sent nothing at all (found by `bench --only unlimited-200k`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_far_above_the_machine_s_pace_still_let_every_call_through() {
    let sim = start_sim(quick_sim()).await;
    let head = FAST_RUN
        .replace("concurrency = 8", "concurrency = 50")
        .replace("submit_rate = \"1200/min\"", "submit_rate = \"100000/s\"")
        .replace("poll_rate = \"12000/min\"", "poll_rate = \"100000/s\"");
    let (dir, manifest) = write_manifest(&variants_manifest(&head, 150));
    let out = dir.path().join("out");
    let output = run_against(&sim, &manifest, &out).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(sim.stats().tasks_created, 150);
    assert_all_finished_with_the_simulators_files(&sim, &out, 150);
}
