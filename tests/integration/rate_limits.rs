//! Rate limits hold: evenly spaced submits at exactly the provider's limit see no 429.

use std::time::Duration;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_variants_at_120_per_minute_see_no_429() {
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
    let output = run_against(&sim, &manifest, &out).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let stats = sim.stats();
    assert_eq!(stats.rate_limited, 0, "{stats:?}");
    assert_eq!(stats.tasks_created, 40);
    let times: Vec<Duration> = sim.submissions().iter().map(|s| s.at).collect();
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // Evenly spaced: each submit on its own 500 ms slot, never ahead of it. A busy machine
    // may send one late; the next then still goes on its slot (a shorter gap after a longer
    // one), which is not a burst: no submit is ever earlier than its slot.
    for (k, at) in times.iter().enumerate() {
        let slot = times[0] + Duration::from_millis(500) * k as u32;
        assert!(
            *at + Duration::from_millis(60) >= slot,
            "submit {k} ahead of its slot: {gaps:?}"
        );
    }
    let shortest = gaps.iter().min().unwrap();
    assert!(*shortest > Duration::from_millis(250), "a burst: {gaps:?}");
    let span = times[39] - times[0];
    assert!(
        span >= Duration::from_millis(19_400) && span < Duration::from_millis(21_500),
        "{span:?}"
    );
}
