//! `stembatch simulator`: the built-in API simulator in the foreground until Ctrl-C.

use std::time::Duration;

use crate::cli::SimulatorArgs;
use crate::exit::{ExpectedError, SUCCESS};
use crate::sim::{Faults, SimConfig, SimHandle, WindowLimit};

pub(super) async fn serve(args: Box<SimulatorArgs>) -> anyhow::Result<u8> {
    let limits = |flag: &str, text: &str| {
        WindowLimit::parse_list(text).map_err(|e| ExpectedError::usage(format!("--{flag}: {e}")))
    };
    if !(args.task_seconds >= 0.0 && args.track_seconds > 0.0 && args.track_seconds <= 600.0) {
        return Err(ExpectedError::usage(
            "--task-seconds must be 0 or more, --track-seconds in (0, 600]",
        )
        .into());
    }
    let f = &args.faults;
    let shares = [
        f.unavailable,
        f.submit_500_after,
        f.unreadable_submit,
        f.reset,
        f.error_body,
        f.rate_limit_share,
        f.slow,
        f.truncate,
        f.not_audio,
        f.fail_share,
        f.hang_share,
        f.silent_tracks,
        f.clipped_tracks,
        f.short_tracks,
        f.undecodable_tracks,
    ];
    if shares.iter().any(|share| !(0.0..=1.0).contains(share)) {
        return Err(ExpectedError::usage("fault shares must be between 0 and 1").into());
    }
    let bad_tracks = f.silent_tracks + f.clipped_tracks + f.short_tracks + f.undecodable_tracks;
    if bad_tracks > 1.0 + 1e-9 {
        return Err(ExpectedError::usage(format!(
            "the bad-track shares (--silent-tracks, --clipped-tracks, --short-tracks, --undecodable-tracks) add up to {bad_tracks}, more than 1"
        ))
        .into());
    }
    let faults = Faults {
        unavailable: f.unavailable,
        submit_error_after_create: f.submit_500_after,
        unreadable_submit: f.unreadable_submit,
        submit_answer_delay: Duration::from_millis(f.submit_answer_delay_ms),
        reset: f.reset,
        error_body: f.error_body,
        rate_limit: f.rate_limit_share,
        slow: f.slow,
        slow_by: Duration::from_millis(f.slow_ms),
        truncate: f.truncate,
        not_audio: f.not_audio,
        expire_first_download: f.expire_first_download,
        fail_tasks: f.fail_share,
        hang_tasks: f.hang_share,
        silent_tracks: f.silent_tracks,
        clipped_tracks: f.clipped_tracks,
        short_tracks: f.short_tracks,
        undecodable_tracks: f.undecodable_tracks,
    };
    let config = SimConfig {
        key: args.key,
        task_duration: Duration::from_secs_f64(args.task_seconds),
        track_seconds: args.track_seconds,
        submit_limits: limits("submit-limit", &args.submit_limit)?,
        detail_limits: limits("detail-limit", &args.detail_limit)?,
        upload_limits: limits("upload-limit", &args.upload_limit)?,
        latency: Duration::from_millis(args.latency_ms),
        faults,
        credits: args.credits,
        seed: args.seed,
        upload_ttl: args.upload_ttl,
        ..SimConfig::default()
    };
    let sim = SimHandle::start(args.addr, config).await?;
    println!("{}", sim.url());
    eprintln!(
        "simulator listening on {} (point stembatch at it with --base-url {} and VIDGO_API_KEY set to its key); Ctrl-C stops it",
        sim.url(),
        sim.url()
    );
    tokio::signal::ctrl_c().await?;
    sim.stop();
    Ok(SUCCESS)
}
