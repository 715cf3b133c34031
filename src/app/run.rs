//! `stembatch run`: load the manifest, find the API (or start the simulator), run the
//! scheduler into the output folder, and turn the outcome into an exit code.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::api::retry::{classify, AccountStop, CallKind, Verdict};
use crate::api::ApiError;
use crate::api::{ApiClient, ApiKey};
use crate::cli::RunArgs;
use crate::exit::{ExpectedError, ACCOUNT, INCOMPLETE, INTERRUPTED, SUCCESS};
use crate::journal::format::SIMULATOR;
use crate::journal::stored::TrackStore;
use crate::journal::writer::JournalWriter;
use crate::manifest::{self, Manifest, Rate, RunSettings, ShardPosition, REDIS_URL_ENV};
use crate::outcome::UploadedFile;
use crate::report::csv::FILE_NAME;
use crate::report::progress::{self, Closing, Endpoint, Plan, Progress, View};
use crate::report::shards::ShardPart;
use crate::scheduler::events::StopReason;
use crate::scheduler::rerun;
use crate::scheduler::start::{Rerun, Start};
use crate::scheduler::state::{Entry, RunState};
use crate::scheduler::{self, shared_limit, watched, Pacers, RunEnd, RunInputs, Stops};
use crate::shard::Shard;
use crate::signal::Interrupts;
use crate::sim::{SimConfig, SimHandle, WindowLimit};
use crate::variant::{VariantId, VariantTable};

use super::bucket::{bucket_for_run, open_bucket, PreparedBucket, SurveyContext};
use super::resume;
use crate::folder::{FirstCheckpoint, Folder, FolderLocks};

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
    let dir = match out {
        Some(dir) => dir.to_owned(),
        None => {
            let dir = manifest
                .run
                .output_dir
                .replace("{date}", &today.format("%Y-%m-%d").to_string());
            manifest.dir().join(dir)
        }
    };
    // Said in every log line that names it: `out/demo`, not `examples/manifests/../../out/demo`.
    crate::stems::normalized(&dir)
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

pub(super) async fn run(args: RunArgs, view: View) -> anyhow::Result<u8> {
    let started = std::time::Instant::now();
    // First, so that a signal during the preparations still ends the run cleanly.
    let interrupts = Interrupts::listen()?;
    // Hashing stems and checking last night's files can take a while: a Ctrl-C there
    // stops at once, since nothing was sent yet.
    let prepared = tokio::select! {
        prepared = prepare(&args) => prepared?,
        _ = interrupts.first.cancelled() => {
            tracing::warn!("interrupted while preparing: nothing was submitted");
            return Ok(INTERRUPTED);
        }
    };
    let Prepared {
        manifest,
        variants,
        settings,
        out_dir,
        client,
        simulator: _simulator,
        api,
        locks,
        first_checkpoint,
        pacers,
        journal,
        entries,
        track_store,
        orphans,
        earlier_uploads,
        shard_part,
        bucket,
    } = prepared;
    tracing::info!(variants = variants.len(), out = %out_dir.display(), "run starts");
    let key_env = (!args.simulate).then(|| manifest.api.key_env.clone());
    let submits = entries.iter().any(|e| e.start == Start::Submit);
    let context = SurveyContext {
        journal: &journal,
        retry: crate::api::retry::RetryPolicy::new(settings.max_attempts),
        stop: &interrupts.first,
        task_timeout: settings.task_timeout,
    };
    let (bucket, storage_stop) = bucket_for_run(bucket, &variants, &entries, context).await;
    let (preflight_stop, api_checked) = match (submits, storage_stop) {
        (_, Some(stop)) => (Some(stop), None),
        (true, None) => tokio::select! {
            (stop, checked) = check_account(&client, key_env.as_deref()) => (stop, Some(checked)),
            _ = interrupts.first.cancelled() => (None, None),
        },
        (false, None) => (None, None),
    };
    let progress = Progress::new(
        view,
        Plan {
            submit_period: settings.submit_rate.period(),
            concurrency: settings.concurrency,
        },
    );
    let pacers = Pacers {
        submit: watched::watch(&progress, Endpoint::Submit, pacers.submit),
        poll: watched::watch(&progress, Endpoint::Poll, pacers.poll),
        upload: watched::watch(&progress, Endpoint::Upload, pacers.upload),
    };
    let inputs = RunInputs {
        shard_part,
        client,
        journal,
        api,
        upload_mode: manifest.upload.mode.clone(),
        earlier_uploads,
        bucket,
        pacers,
        progress: progress.clone(),
        stops: Stops {
            interrupted: interrupts.first.clone(),
            deadline: settings.deadline,
        },
        api_checked,
        stopped_before: match interrupts.first.is_cancelled() {
            true => Some(StopReason::Interrupted),
            false => preflight_stop.map(StopReason::Account),
        },
        settings,
        out_dir: out_dir.clone(),
        track_store,
    };
    let csv_path = out_dir.join(FILE_NAME);
    let state = tokio::select! {
        state = scheduler::run(Arc::clone(&variants), entries, orphans, inputs) => {
            progress.finish();
            state.with_context(|| format!("cannot write {}", csv_path.display()))?
        }
        _ = interrupts.second.cancelled() => {
            progress.finish();
            tracing::warn!("interrupted twice: stopping at once; the journal and the last results.csv are kept");
            return Ok(INTERRUPTED);
        }
    };
    log_closing(&state, &csv_path, started.elapsed(), view);
    log_orphans(&state.state);
    log_unrestored(&state.state, &variants);
    let code = exit_code(&state.state);
    // The run's memory is let go of first, and the fold is made on this thread, where
    // the run state lived: the allocator gives it the memory the run let go of (on a
    // blocking thread, its own arena added to the peak: 154 MiB instead of 134 at
    // 100,000 variants). The runtime has nothing left to run. Not after a signal: the
    // user wants the process gone, and the next run's open writes it.
    drop(state);
    let first_checkpoint = first_checkpoint.filter(|_| !interrupts.first.is_cancelled());
    if let Some(first) = first_checkpoint {
        match tokio::runtime::Handle::current().runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| first.write())
            }
            // A runtime of one thread (an embedder's) would panic in `block_in_place`,
            // and runs nothing else now anyway.
            _ => first.write(),
        }
    }
    drop(locks);
    // The last line of a run: where to listen.
    let page = out_dir.join(crate::report::html::FILE_NAME);
    tracing::info!("report: {}", page.display());
    Ok(code)
}

/// The closing summary: the counts, the unknown outcomes, and the variants that did not
/// finish, by name, with their error: what the morning needs first. The words are
/// `report::progress::closing_summary`'s; the first line carries every count as a field.
fn log_closing(end: &RunEnd, csv_path: &Path, elapsed: Duration, view: View) {
    let state = &end.state;
    // Pending variants are what a stop leaves: the stop was said once, and their count
    // is in the summary. The first ones in manifest order are named.
    let unfinished = &end.unfinished.listed;
    let counts = state.counts();
    let closing = Closing {
        elapsed,
        counts,
        tasks_created: state.tasks_created(),
        unknown_outcomes: state.unknown_outcomes(),
        tracks: state.qc_counts(),
        unfinished: unfinished
            .iter()
            .map(|(variant, record)| (progress::label(variant), record))
            .collect(),
        not_listed: end.unfinished.not_listed,
        results: csv_path,
    };
    let said = progress::closing_summary(&closing);
    if view != (View::Lines { json: true }) {
        // For people: the words have every number, and the line stays short.
        for (level, line) in said.lines() {
            match level {
                tracing::Level::WARN => tracing::warn!("{line}"),
                _ => tracing::info!("{line}"),
            }
        }
        return;
    }
    tracing::info!(
        variants = counts.finished + counts.failed + counts.timeout + counts.error + counts.pending,
        finished = counts.finished,
        failed = counts.failed,
        timeout = counts.timeout,
        error = counts.error,
        pending = counts.pending,
        tasks_created = closing.tasks_created,
        elapsed_s = elapsed.as_secs(),
        results = %csv_path.display(),
        "{}",
        said.counts
    );
    if let Some((level, line)) = &said.tracks {
        let t = &closing.tracks;
        let (ok, silent, clipped, short, undecodable, unchecked) = (
            t.ok,
            t.silent,
            t.clipped,
            t.short,
            t.undecodable,
            t.unchecked,
        );
        match *level {
            tracing::Level::WARN => {
                tracing::warn!(
                    tracks = t.total(),
                    ok,
                    silent,
                    clipped,
                    short,
                    undecodable,
                    unchecked,
                    "{line}"
                )
            }
            _ => {
                tracing::info!(
                    tracks = t.total(),
                    ok,
                    silent,
                    clipped,
                    short,
                    undecodable,
                    unchecked,
                    "{line}"
                )
            }
        }
    }
    if let Some(line) = &said.unknown {
        tracing::warn!(unknown_outcomes = closing.unknown_outcomes, "{line}");
    }
    for ((variant, record), line) in unfinished.iter().zip(&said.unfinished) {
        tracing::info!(variant_id = %variant.id, status = record.status.as_str(), "{line}");
    }
    if let Some(line) = &said.more {
        let more = unfinished.len() + end.unfinished.not_listed - said.unfinished.len();
        tracing::info!(more, "{line}");
    }
}

/// One line on the paid tasks of variants no longer in the manifest, when there were any:
/// they have no row in `results.csv`, so this is where the morning sees them.
fn log_orphans(state: &RunState) {
    let counts = state.orphan_counts();
    let total = counts.finished + counts.failed + counts.timeout + counts.error + counts.pending;
    if total == 0 {
        return;
    }
    let line = format!(
        "{total} paid tasks of variants that changed or left the manifest: {} collected into superseded/, {} failed, {} timeout, {} error, {} pending (the next run asks again)",
        counts.finished, counts.failed, counts.timeout, counts.error, counts.pending
    );
    match counts.finished == total {
        true => tracing::info!(orphans = total, collected = counts.finished, "{line}"),
        false => tracing::warn!(orphans = total, collected = counts.finished, "{line}"),
    }
}

/// One warning per finished variant whose missing or changed track could not be
/// downloaded again: it stays finished (its exit code is not touched), so this is where
/// the morning learns that a file on disk is not what was paid for.
fn log_unrestored(state: &RunState, variants: &VariantTable) {
    // Few or none: said in manifest order.
    let mut notes: Vec<(usize, &VariantId, &str)> = state
        .unrestored()
        .filter_map(|(id, note)| Some((variants.index_of(id)?, id, note)))
        .collect();
    notes.sort_unstable_by_key(|(index, _, _)| *index);
    for (index, id, note) in notes {
        let variant = variants.at(index);
        tracing::warn!(variant_id = %id, "finished {}: {note}", progress::label(&variant));
    }
}

/// Everything a run needs before its first request.
struct Prepared {
    manifest: Manifest,
    /// The variants this run takes: all of the manifest's, or its shard's. It holds each
    /// variant's id, and builds a variant when it needs one.
    variants: Arc<VariantTable>,
    settings: RunSettings,
    out_dir: PathBuf,
    client: ApiClient,
    simulator: Option<SimHandle>,
    api: String,
    pacers: Pacers,
    locks: FolderLocks,
    /// The folder's first checkpoint, when it had none: written at the run's end.
    first_checkpoint: Option<FirstCheckpoint>,
    journal: JournalWriter,
    entries: Vec<Entry>,
    /// Where the kept variants' tracks' entries are.
    track_store: Arc<TrackStore>,
    /// Paid tasks of variants no longer in the manifest, to collect.
    orphans: Vec<Entry>,
    earlier_uploads: HashMap<String, UploadedFile>,
    /// A shard's run: its part of `results.csv`.
    shard_part: Option<ShardPart>,
    /// `upload.mode = "s3"`: the bucket.
    bucket: Option<PreparedBucket>,
}

/// Loads the manifest (hashing its local stems off the async threads), finds the API,
/// takes the output folder and decides every variant's start.
async fn prepare(args: &RunArgs) -> anyhow::Result<Prepared> {
    let shard = args
        .shard
        .resolve()
        .map_err(|err| ExpectedError::usage(err.to_string()))?;
    let path = args.manifest.clone();
    let manifest = tokio::task::spawn_blocking(move || manifest::load(&path)).await??;
    for line in manifest.warning_lines() {
        tracing::warn!("{line}");
    }
    // No list of every variant is made: each is built when it is looked at.
    let listed = Arc::new(manifest.variants.table());
    let variants = match shard {
        Some(shard) => Arc::new(take_shard(&listed, shard)),
        None => Arc::clone(&listed),
    };
    let bucket = open_bucket(&manifest)?;
    let settings = settings_of(args, &manifest);
    let today = chrono::Local::now().date_naive();
    let out_dir = resolve_output_dir(args.out.as_deref(), &manifest, today);
    let (client, simulator) = connect(args, &manifest).await?;
    // Before the output folder is taken: a misused Redis sends nothing and writes nothing.
    let position = shard.map_or(ShardPosition::SOLE, |shard| ShardPosition {
        index: shard.index(),
        count: std::num::NonZeroU32::new(shard.count()).unwrap_or(std::num::NonZeroU32::MIN),
    });
    let pacers = pacers(&manifest, &settings, &client, position).await?;
    let api = match &simulator {
        Some(_) => SIMULATOR.to_owned(),
        None => client.base_url().to_owned(),
    };
    let mut folder = Folder::new(&out_dir, shard).open(&api).await?;
    let rerun = Rerun {
        retry_failed: args.retry_failed,
        now: chrono::Utc::now(),
    };
    // Every shard counts the whole manifest, so that they all refuse alike. Buying never
    // depends on whether finished tracks are whole: the files are not read.
    let shards_new_tasks = shard.map(|_| {
        let (planned, _) =
            rerun::plan(listed.iter(), &folder.folded.priors, &HashMap::new(), rerun);
        planned.iter().filter(|(_, intent)| intent.buys()).count()
    });
    let fresh_folder = folder.folded.is_empty();
    let priors = std::mem::take(&mut folder.folded.priors);
    let track_store = Arc::new(std::mem::take(&mut folder.folded.store));
    let resume = resume::prepare(
        &variants,
        &listed,
        shard,
        priors,
        &track_store,
        &out_dir,
        rerun,
    )
    .await?;
    resume::log_summary(&resume, fresh_folder);
    let new_tasks = shards_new_tasks.unwrap_or_else(|| resume.new_tasks());
    check_new_submits(new_tasks as u64, &settings, &args.manifest)?;
    // Only now, when the run goes ahead: a refused run leaves the folder's layout be.
    // A shard's part holds the manifest's ids, and builds each variant as it writes it.
    let folder = folder.go_ahead(shard.map(|_| Arc::clone(&listed)))?;
    move_superseded(&out_dir, &resume).await?;
    // Each simulator starts empty: its earlier uploads are gone with it.
    let earlier_uploads = match &simulator {
        Some(_) => Default::default(),
        None => folder.folded.uploads(&api),
    };
    let bucket = bucket.map(|(bucket, settings)| PreparedBucket {
        journaled: folder.folded.uploads(bucket.id()),
        bucket,
        settings,
    });
    Ok(Prepared {
        manifest,
        variants,
        settings,
        out_dir,
        client,
        simulator,
        api,
        pacers,
        locks: folder.locks,
        first_checkpoint: folder.first_checkpoint,
        journal: folder.journal,
        orphans: resume.orphan_entries(),
        entries: resume.entries,
        track_store,
        earlier_uploads,
        shard_part: folder.shard_part,
        bucket,
    })
}

/// The run's pacers: local, or shared through Redis when `limits.redis_url` or
/// `STEMBATCH_REDIS_URL` names one. `shard` is this process's shard of its manifest;
/// with `limits.share` (the manifest's place among those run on one key) it makes the
/// process's place among all on the key, which the fallback paces by. A process with no
/// place (no `limits.share`, no shard) is warned: its fallback takes the full limits.
async fn pacers(
    manifest: &Manifest,
    settings: &RunSettings,
    client: &ApiClient,
    shard: ShardPosition,
) -> anyhow::Result<Pacers> {
    let env = std::env::var(REDIS_URL_ENV).ok();
    let url = manifest
        .limits
        .redis_url(env.as_deref())
        .map_err(ExpectedError::usage)?;
    let Some((url, from)) = url else {
        return Ok(Pacers::from_settings(settings));
    };
    let position = manifest
        .limits
        .share
        .map_or(shard, |share| shard.within(share));
    if manifest.limits.share.is_none() && position.count.get() == 1 {
        tracing::warn!(
            redis = %url,
            "the rate limits are shared through Redis {url}, but this process declares no place among those on the key (limits.share or --shard): if Redis goes away, it paces itself at the full limits beside the others"
        );
    }
    shared_limit::shared_pacers(&url, from, &client.account_id(), position, settings)
        .await
        .map_err(|err| ExpectedError::usage(err.to_string()).into())
}

/// The manifest's run settings with the command line's overrides.
fn settings_of(args: &RunArgs, manifest: &Manifest) -> RunSettings {
    let mut settings = manifest.run.clone();
    if let Some(concurrency) = args.concurrency {
        settings.concurrency = concurrency as usize;
    }
    settings.deadline = args.deadline.or(settings.deadline);
    settings
}

/// Refuses, before anything is sent, a run that would buy more new tasks than
/// `run.max_new_submits` allows.
fn check_new_submits(
    new_tasks: u64,
    settings: &RunSettings,
    manifest: &Path,
) -> anyhow::Result<()> {
    if new_tasks <= settings.max_new_submits {
        return Ok(());
    }
    Err(ExpectedError::usage(format!(
        "this run would submit {new_tasks} new tasks, more than run.max_new_submits = {} allows; nothing was sent (hint: check the manifest for a matrix that grew by mistake; if the number is right, raise run.max_new_submits in {})",
        settings.max_new_submits,
        crate::stems::normalized(manifest).display()
    ))
    .into())
}

/// Moves the earlier tracks of changed variants to `superseded/`, and says so.
async fn move_superseded(out_dir: &Path, resume: &resume::Resume) -> anyhow::Result<()> {
    let moved = resume::move_superseded(out_dir, resume.moves.clone())
        .await
        .with_context(|| {
            format!(
                "cannot move earlier tracks to {}",
                out_dir.join("superseded").display()
            )
        })?;
    if moved > 0 {
        tracing::warn!(
            moved,
            "{moved} tracks of changed variants moved to superseded/: never overwritten"
        );
    }
    Ok(())
}

/// The variants of `listed` (every variant of the manifest) that `shard` takes, chosen
/// by id: none is built to choose them.
fn take_shard(listed: &VariantTable, shard: Shard) -> VariantTable {
    let own = listed.subset(|id| shard.contains(id));
    tracing::info!(
        variants = own.len(),
        of = listed.len(),
        "this run takes shard {shard} of the manifest"
    );
    own
}

/// Maps how the run ended to SPEC.md's exit code.
fn exit_code(state: &RunState) -> u8 {
    let counts = state.counts();
    let stops = state.stops();
    if stops.contains(&StopReason::Interrupted) {
        INTERRUPTED
    } else if stops
        .iter()
        .any(|s| matches!(s, StopReason::Account(_) | StopReason::UnreadableSubmit))
    {
        // The stop was said when it happened.
        ACCOUNT
    } else if counts.all_finished()
        && !stops
            .iter()
            .any(|s| matches!(s, StopReason::Storage { .. }))
    {
        // A journal that failed to take the last records is not a success for cron.
        SUCCESS
    } else {
        INCOMPLETE
    }
}

/// Asks the account's balance before the first submit: a refused key then costs one
/// request instead of one per variant in flight, and the credits are in the log. Also
/// the run's first call: what it says of the base URL goes to the run state
/// (`Event::ApiChecked`), which stops the run when the URL cannot be used. Any other
/// failure is only a warning: the balance is not needed to run.
async fn check_account(
    client: &ApiClient,
    key_env: Option<&str>,
) -> (Option<AccountStop>, Result<(), ApiError>) {
    let err = match balance_with_patience(client).await {
        Ok(balance) if balance.credits_amount <= 0.0 => {
            tracing::warn!(
                credits = balance.credits_amount,
                "the account has no credits"
            );
            return (Some(AccountStop::NoCredits), Ok(()));
        }
        Ok(balance) => {
            tracing::info!(credits = balance.credits_amount, "account balance");
            return (None, Ok(()));
        }
        Err(err) => err,
    };
    let stop = match classify(&err, CallKind::Idempotent) {
        Verdict::Stop(AccountStop::BadKey) => {
            let key = key_env.map_or("the simulator's key".to_owned(), |env| {
                format!("the API key in {env}")
            });
            tracing::error!("{key} was refused ({err}): nothing was sent");
            Some(AccountStop::BadKey)
        }
        Verdict::Stop(stop) => {
            tracing::error!(error = %err, "the account cannot be used: nothing was submitted");
            Some(stop)
        }
        // The run state says it, once, naming the URL.
        _ if err.base_url_unusable() => None,
        _ => {
            tracing::warn!(error = %err, "cannot read the account balance; going on");
            None
        }
    };
    (stop, Err(err))
}

/// How long the first call is tried again while the base URL looks unusable: a blip at
/// the start does not cost the night, and a wrong URL is told within 20 s (a try that
/// hangs is cut at the connect timeout, 10 s).
const UNUSABLE_PATIENCE: Duration = Duration::from_secs(8);

/// The balance, asked again (0.5 s, 1 s, 2 s, … apart, within [`UNUSABLE_PATIENCE`])
/// while nothing answers at the base URL or what answers is not the API.
async fn balance_with_patience(client: &ApiClient) -> Result<crate::api::types::Balance, ApiError> {
    let started = std::time::Instant::now();
    let mut wait = Duration::from_millis(500);
    loop {
        match client.balance().await {
            Err(err) if err.base_url_unusable() && started.elapsed() + wait < UNUSABLE_PATIENCE => {
                tracing::debug!(error = %err, ?wait, "the base URL did not answer as the API; trying again");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            answer => return answer,
        }
    }
}
