//! `stembatch run`: load the manifest, find the API (or start the simulator), run the
//! scheduler into the output folder, and turn the outcome into an exit code.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::api::retry::{classify, AccountStop, CallKind, Verdict};
use crate::api::{ApiClient, ApiKey};
use crate::cli::RunArgs;
use crate::exit::{ExpectedError, ACCOUNT, INCOMPLETE, INTERRUPTED, LOCKED, SUCCESS};
use crate::journal;
use crate::journal::format::{Record, SIMULATOR};
use crate::journal::lock::{self, LockError, RunLock};
use crate::journal::replay::{self, Start};
use crate::journal::writer::JournalWriter;
use crate::manifest::{self, Manifest, Rate};
use crate::report::csv::FILE_NAME;
use crate::scheduler::{self, Pacers, RunInputs, RunOutcome};
use crate::signal::Interrupts;
use crate::sim::{SimConfig, SimHandle, WindowLimit};

use super::resume;

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
        // The simulator enforces exactly the limits the manifest declares, so the demo
        // shows them honoured for real.
        let limit = |rate: Rate| {
            vec![WindowLimit {
                count: rate.count.get(),
                window: rate.per,
            }]
        };
        let config = SimConfig {
            key: format!("sim-{:016x}", rand::random::<u64>()),
            submit_limits: limit(manifest.run.submit_rate),
            detail_limits: limit(manifest.run.poll_rate),
            upload_limits: limit(manifest.run.upload_rate),
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
    // First, so that a signal during the preparations still ends in a saved state.
    let interrupts = Interrupts::listen()?;
    let manifest = manifest::load(&args.manifest)?;
    let mut settings = manifest.run.clone();
    if let Some(concurrency) = args.concurrency {
        settings.concurrency = concurrency as usize;
    }
    settings.deadline = args.deadline.or(settings.deadline);
    let today = chrono::Local::now().date_naive();
    let out_dir = resolve_output_dir(args.out.as_deref(), &manifest, today);
    let (client, simulator) = connect(&args, &manifest).await?;
    let api = match &simulator {
        Some(_) => SIMULATOR.to_owned(),
        None => client.base_url().to_owned(),
    };
    let (_lock, journal, records) = open_output_folder(&out_dir, &api).await?;
    let resume = resume::prepare(&manifest.variants, &records, &out_dir, args.retry_failed).await?;
    // Each simulator starts empty: its earlier uploads are gone with it.
    let earlier_uploads = match &simulator {
        Some(_) => Default::default(),
        None => replay::uploads(&records, &api),
    };
    drop(records);

    let (stop_submits, stop_all) = stop_tokens(&interrupts, settings.deadline);
    let preflight_stop = match resume.starts.contains(&Start::Submit) {
        true => check_account(&client).await,
        false => None,
    };
    if preflight_stop.is_some() {
        stop_submits.cancel();
        if preflight_stop == Some(AccountStop::BadKey) {
            stop_all.cancel();
        }
    }

    tracing::info!(variants = manifest.variants.len(), out = %out_dir.display(), "run starts");
    let inputs = RunInputs {
        client,
        journal,
        api,
        upload_mode: manifest.upload.mode.clone(),
        earlier_uploads,
        pacers: Pacers::from_settings(&settings),
        settings,
        out_dir: out_dir.clone(),
        stop_submits,
        stop_all,
    };
    let csv_path = out_dir.join(FILE_NAME);
    let outcome = tokio::select! {
        outcome = scheduler::run(Arc::new(manifest.variants), resume, inputs) => {
            outcome.with_context(|| format!("cannot write {}", csv_path.display()))?
        }
        _ = interrupts.second.cancelled() => {
            tracing::warn!("interrupted twice: stopping at once; the journal and the last results.csv are kept");
            return Ok(INTERRUPTED);
        }
    };
    Ok(exit_code(
        &outcome,
        preflight_stop,
        interrupts.interrupted(),
        &csv_path,
    ))
}

/// Takes the output folder for this run: its lock, the sweep of what a killed run left,
/// and its journal, whose earlier records come back. Refuses a folder whose journal is
/// from another API.
async fn open_output_folder(
    out_dir: &Path,
    api: &str,
) -> anyhow::Result<(RunLock, JournalWriter, Vec<Record>)> {
    let state_dir = journal::state_dir(out_dir);
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("cannot create the output folder {}", out_dir.display()))?;
    let lock = lock::acquire(&state_dir, out_dir).map_err(|err| match err {
        LockError::Held { .. } => anyhow::Error::new(ExpectedError {
            code: LOCKED,
            message: err.to_string(),
        }),
        LockError::Io { .. } => anyhow::Error::new(err),
    })?;
    remove_leftover_temporary_files(out_dir);
    let (journal, records) = JournalWriter::open(&state_dir.join(journal::JOURNAL_FILE))
        .map_err(|err| ExpectedError::usage(err.to_string()))?;
    // Tasks and uploads of one API mean nothing to another: a folder that saw the
    // simulator would otherwise look finished to the real run.
    if let Some(earlier) = replay::last_api(&records).filter(|earlier| *earlier != api) {
        return Err(ExpectedError::usage(format!(
            "{} holds runs against {earlier}, and this run is against {api}: their tasks and uploads do not mix (hint: choose another folder with --out)",
            out_dir.display()
        ))
        .into());
    }
    journal
        .append(Record::RunStarted {
            at: chrono::Utc::now(),
            api: api.to_owned(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        })
        .await?;
    Ok((lock, journal, records))
}

/// The run's two stop tokens (submits; every request), cancelled by the first signal or
/// the deadline.
fn stop_tokens(
    interrupts: &Interrupts,
    deadline: Option<std::time::Duration>,
) -> (CancellationToken, CancellationToken) {
    let stop_submits = CancellationToken::new();
    let stop_all = CancellationToken::new();
    stop_on(
        interrupts.first.clone(),
        &stop_submits,
        &stop_all,
        "interrupted: submitting nothing more; saving state",
    );
    if let Some(deadline) = deadline {
        let reached = CancellationToken::new();
        let timer = reached.clone();
        tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            timer.cancel();
        });
        stop_on(reached, &stop_submits, &stop_all, "deadline reached: submitting nothing more; in-flight variants stay pending for the next run");
    }
    (stop_submits, stop_all)
}

/// Logs how the run ended and maps it to SPEC.md's exit code.
fn exit_code(
    outcome: &RunOutcome,
    preflight_stop: Option<AccountStop>,
    interrupted: bool,
    csv_path: &Path,
) -> u8 {
    let counts = outcome.state.counts();
    let count = outcome.state.records().len();
    tracing::info!(
        variants = count,
        finished = counts.finished,
        failed = counts.failed,
        timeout = counts.timeout,
        error = counts.error,
        pending = counts.pending,
        results = %csv_path.display(),
        "run ended: {count} variants: {counts}"
    );
    let unknown = outcome.state.unknown_outcomes();
    if unknown > 0 {
        tracing::warn!(
            unknown_outcomes = unknown,
            "{unknown} submits had an unknown outcome and were made again: each may have created a duplicate task"
        );
    }
    if interrupted {
        INTERRUPTED
    } else if let Some(stop) = outcome.account_stop.or(preflight_stop) {
        tracing::error!("the account stopped the run: {}", describe(stop));
        ACCOUNT
    } else if counts.all_finished() {
        SUCCESS
    } else {
        INCOMPLETE
    }
}

/// Asks the account's balance before the first submit: a refused key then costs one
/// request instead of one per variant in flight, and the credits are in the log. Any
/// other failure is only a warning: the balance is not needed to run.
async fn check_account(client: &ApiClient) -> Option<AccountStop> {
    let err = match client.balance().await {
        Ok(balance) if balance.credits_amount <= 0.0 => {
            tracing::warn!(
                credits = balance.credits_amount,
                "the account has no credits"
            );
            return Some(AccountStop::NoCredits);
        }
        Ok(balance) => {
            tracing::info!(credits = balance.credits_amount, "account balance");
            return None;
        }
        Err(err) => err,
    };
    match classify(&err, CallKind::Idempotent) {
        Verdict::Stop(stop) => {
            tracing::error!(error = %err, "the account cannot be used");
            Some(stop)
        }
        _ => {
            tracing::warn!(error = %err, "cannot read the account balance; going on");
            None
        }
    }
}

/// Temporary files a killed run left behind (downloads, reports). Safe while we hold the
/// lock: no other run writes into this folder.
fn remove_leftover_temporary_files(out_dir: &Path) {
    let is_leftover = |name: &str| {
        (name.starts_with(".download-") && name.ends_with(".part"))
            || (name.starts_with(".results-") && name.ends_with(".csv"))
    };
    let stem_dirs = std::fs::read_dir(out_dir.join("audio"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path());
    for dir in std::iter::once(out_dir.to_owned()).chain(stem_dirs) {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_name().to_str().is_some_and(is_leftover) {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => {
                        tracing::info!(file = %entry.path().display(), "removed a leftover temporary file")
                    }
                    Err(err) => {
                        tracing::warn!(file = %entry.path().display(), error = %err, "cannot remove a leftover temporary file")
                    }
                }
            }
        }
    }
}

fn describe(stop: AccountStop) -> &'static str {
    match stop {
        AccountStop::BadKey => "the API key was refused (401/403); nothing more was sent",
        AccountStop::NoCredits => {
            "no credits left (402); nothing more was submitted, what was in flight was finished"
        }
    }
}

/// When `trigger` is cancelled, stop submitting and stop every request.
fn stop_on(
    trigger: CancellationToken,
    stop_submits: &CancellationToken,
    stop_all: &CancellationToken,
    why: &'static str,
) {
    let (submits, all) = (stop_submits.clone(), stop_all.clone());
    tokio::spawn(async move {
        trigger.cancelled().await;
        if !all.is_cancelled() {
            tracing::warn!("{why}");
        }
        submits.cancel();
        all.cancel();
    });
}
