//! `stembatch run`: load the manifest, find the API (or start the simulator), run the
//! scheduler into the output folder, and turn the outcome into an exit code.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, ApiKey};
use crate::cli::RunArgs;
use crate::exit::{ExpectedError, ACCOUNT, INCOMPLETE, SUCCESS};
use crate::manifest::{self, Manifest};
use crate::report::csv::FILE_NAME;
use crate::scheduler::{self, Pacers, RunInputs};
use crate::sim::{SimConfig, SimHandle};

/// The provider's production URL.
pub const DEFAULT_BASE_URL: &str = "https://api.vidgo.ai";
/// Overrides `api.base_url`.
pub const BASE_URL_ENV: &str = "VIDGO_BASE_URL";

/// `--out`, else the manifest's `run.output_dir` with `{date}` as today's local date,
/// relative to the manifest's folder.
pub fn resolve_output_dir(
    out: Option<&Path>,
    manifest: &Manifest,
    today: chrono::NaiveDate,
) -> PathBuf {
    match out {
        Some(dir) => dir.to_owned(),
        None => {
            let dir = manifest
                .run
                .output_dir
                .replace("{date}", &today.format("%Y-%m-%d").to_string());
            manifest.dir().join(dir)
        }
    }
}

/// Where the API is, and with which key; the simulator when asked, kept alive by the
/// returned handle.
async fn connect(
    args: &RunArgs,
    manifest: &Manifest,
) -> anyhow::Result<(ApiClient, Option<SimHandle>)> {
    if args.simulate {
        let config = SimConfig {
            key: format!("sim-{:016x}", rand::random::<u64>()),
            ..SimConfig::default()
        };
        let sim = SimHandle::start(([127, 0, 0, 1], 0).into(), config)
            .await
            .context("cannot start the built-in simulator")?;
        tracing::info!(url = %sim.url(), "running against the built-in simulator");
        let client = ApiClient::new(&sim.url(), ApiKey::new(sim.key()))?;
        return Ok((client, Some(sim)));
    }
    let base_url = args
        .base_url
        .clone()
        .or_else(|| {
            std::env::var(BASE_URL_ENV)
                .ok()
                .filter(|u| !u.trim().is_empty())
        })
        .or_else(|| manifest.api.base_url.clone())
        .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
    match url::Url::parse(&base_url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => {}
        _ => {
            return Err(ExpectedError::usage(format!(
                "the base URL {base_url:?} is not an http(s) URL"
            ))
            .into())
        }
    }
    let key = ApiKey::from_env(&manifest.api.key_env).map_err(ExpectedError::usage)?;
    Ok((ApiClient::new(&base_url, key)?, None))
}

pub(super) async fn run(args: RunArgs) -> anyhow::Result<u8> {
    let manifest = manifest::load(&args.manifest)?;
    let mut settings = manifest.run.clone();
    if let Some(concurrency) = args.concurrency {
        settings.concurrency = concurrency as usize;
    }
    if args.deadline.is_some() {
        settings.deadline = args.deadline;
    }
    let out_dir = resolve_output_dir(
        args.out.as_deref(),
        &manifest,
        chrono::Local::now().date_naive(),
    );
    let (client, _simulator) = connect(&args, &manifest).await?;
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create the output folder {}", out_dir.display()))?;

    let stop_submits = CancellationToken::new();
    let stop_all = CancellationToken::new();
    if let Some(deadline) = settings.deadline {
        let (submits, all) = (stop_submits.clone(), stop_all.clone());
        tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            tracing::warn!(deadline = %humantime::format_duration(deadline), "deadline reached: submitting nothing more; in-flight variants stay pending");
            submits.cancel();
            all.cancel();
        });
    }
    let count = manifest.variants.len();
    tracing::info!(variants = count, out = %out_dir.display(), "run starts");
    let inputs = RunInputs {
        client,
        pacers: Pacers::from_settings(&settings),
        settings,
        out_dir: out_dir.clone(),
        stop_submits,
        stop_all,
    };
    let outcome = scheduler::run(Arc::new(manifest.variants), inputs)
        .await
        .with_context(|| format!("cannot write {}", out_dir.join(FILE_NAME).display()))?;
    let counts = outcome.state.counts();
    eprintln!(
        "{count} variants: {counts}; results in {}",
        out_dir.join(FILE_NAME).display()
    );
    Ok(match outcome.account_stop {
        Some(stop) => {
            eprintln!("the account stopped the run: {stop:?}");
            ACCOUNT
        }
        None if counts.all_finished() => SUCCESS,
        None => INCOMPLETE,
    })
}
