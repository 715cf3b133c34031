//! The command line, as clap derive types only. SPEC.md is the contract for every flag.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::shard::{Shard, ShardError};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Turns a TOML manifest of vocal stems and variants into add-instrumental tasks on the
/// Vidgo API, under its rate limits, and leaves the audio and a results.csv behind.
#[derive(Debug, Parser)]
#[command(name = "stembatch", version = VERSION, about, max_term_width = 100)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Errors only: no progress, no summary (the exit code says how the run ended).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More: retries and waits (-v), everything (-vv). Wins over a level in STEMBATCH_LOG.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// When to color the output: auto (a terminal, and NO_COLOR unset or empty), always,
    /// never. Covers the log lines, the progress bars and the help and usage errors.
    #[arg(long, global = true, value_enum, value_name = "WHEN", default_value_t = ColorWhen::Auto)]
    pub color: ColorWhen,
}

/// `--color`: when output may carry ANSI colors, as in cargo and ripgrep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ColorWhen {
    /// Color when the output is a terminal and NO_COLOR is unset or empty.
    #[default]
    Auto,
    /// Always color, even into a pipe or a file (and whatever NO_COLOR says).
    Always,
    /// Never color.
    Never,
}

/// The version `--version` prints: the package's, with the git commit it was built from
/// when the build could ask git ("0.1.0 (abc1234)"); see build.rs.
pub const VERSION: &str = env!("STEMBATCH_VERSION");

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Submit every variant of a manifest, poll, download, and write results.csv.
    Run(RunArgs),
    /// Parse, check and expand a manifest; print the variant count; send nothing.
    Validate {
        /// The manifest.
        manifest: PathBuf,
    },
    /// Print every variant with its resolved parameters; send nothing. With --out, also
    /// what a run into that folder would do with each (submit, resume, keep) and how many
    /// tasks it would buy.
    Plan {
        /// The manifest.
        manifest: PathBuf,
        /// Print CSV instead of text.
        #[arg(long)]
        csv: bool,
        /// The output folder a run would use: say what it would do there.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Which shard's variants.
        #[command(flatten)]
        shard: ShardArgs,
    },
    /// Show what an output folder holds: done, failed, pending, by stem; and whether a
    /// run holds it now.
    Status {
        /// The output folder.
        dir: PathBuf,
        /// Print one JSON object, for scripts and monitoring.
        #[arg(long)]
        json: bool,
    },
    /// Rewrite the folder's listening page, report.html, from its results.csv and track
    /// files; sends nothing and needs no manifest.
    Report {
        /// The output folder.
        dir: PathBuf,
    },
    /// Serve the built-in API simulator in the foreground.
    Simulator(Box<SimulatorArgs>),
    /// Print a shell completion script to stdout.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Print a man page (roff) to stdout: the main page, stembatch(1), or a subcommand's;
    /// or write every page into a folder.
    Man {
        /// The subcommand whose page to print, e.g. "run" for stembatch-run(1).
        #[arg(value_name = "COMMAND", conflicts_with = "out")]
        command: Option<String>,
        /// Write stembatch.1 and a page for each subcommand (stembatch-run.1, …) into
        /// this folder, e.g. /usr/local/share/man/man1.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

/// The shells `completions` writes scripts for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    /// bash
    Bash,
    /// zsh
    Zsh,
    /// fish
    Fish,
}

/// `stembatch run`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The manifest.
    pub manifest: PathBuf,
    /// The output folder, relative to the current folder (default: the manifest's
    /// run.output_dir, relative to the manifest's folder).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Run against the built-in simulator, in this process, with its own key.
    #[arg(long)]
    pub simulate: bool,
    /// The API's base URL (before VIDGO_BASE_URL and api.base_url).
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// Variants in flight at most (overrides run.concurrency).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: Option<u32>,
    /// Submit nothing new after this long, e.g. "6h" (overrides run.deadline).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub deadline: Option<Duration>,
    /// Submit again the variants that ended failed, timeout or error in an earlier run.
    #[arg(long)]
    pub retry_failed: bool,
    /// Which shard's variants to run.
    #[command(flatten)]
    pub shard: ShardArgs,
    /// How log lines on stderr look.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Which shard of the manifest a process takes.
#[derive(Clone, Copy, Debug, Default, Args)]
pub struct ShardArgs {
    /// Only the variants of shard I of N (0-based), by a stable hash of variant_id
    /// (default: from JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT).
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<Shard>,
    /// The shard count N with JOB_COMPLETION_INDEX (else STEMBATCH_SHARD_COUNT).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub shard_count: Option<u32>,
}

impl ShardArgs {
    /// The shard this process takes, from the flags and the scheduler's environment.
    pub fn resolve(self) -> Result<Option<Shard>, ShardError> {
        Shard::resolve(self.shard, self.shard_count, |name| {
            std::env::var(name).ok()
        })
    }
}

fn parse_shard(text: &str) -> Result<Shard, String> {
    Shard::parse(text).map_err(|err| err.to_string())
}

/// The log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// `stembatch simulator`
#[derive(Debug, Args)]
pub struct SimulatorArgs {
    /// Where to listen (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub addr: SocketAddr,
    /// The API key it accepts.
    #[arg(long, default_value = "sim-key")]
    pub key: String,
    /// Seconds from submit to finished.
    #[arg(long, default_value_t = 5.0)]
    pub task_seconds: f64,
    /// Length of each generated track, in seconds.
    #[arg(long, default_value_t = 20.0)]
    pub track_seconds: f64,
    /// Submit limits, e.g. "120/60s,3/1s" ("none" for none).
    #[arg(long, default_value = "120/60s,3/1s")]
    pub submit_limit: String,
    /// Detail query limits.
    #[arg(long, default_value = "600/60s,20/1s")]
    pub detail_limit: String,
    /// Upload limits.
    #[arg(long, default_value = "5/60s")]
    pub upload_limit: String,
    /// Milliseconds added before every API answer.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Credits of the account (each task costs one); unlimited when not given.
    #[arg(long)]
    pub credits: Option<u64>,
    /// Seed of the fault dice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How long uploaded files live (their expires_at).
    #[arg(long, default_value = "72h", value_parser = parse_duration)]
    pub upload_ttl: Duration,
    /// Injected faults.
    #[command(flatten)]
    pub faults: FaultArgs,
}

/// The simulator's fault knobs: each a share of calls from 0 to 1, or a delay in milliseconds.
#[derive(Debug, Args)]
pub struct FaultArgs {
    /// Share of API calls answered 503 before any work.
    #[arg(long, default_value_t = 0.0, value_name = "SHARE")]
    pub unavailable: f64,
    /// Share of submits answered 500 after the task was created.
    #[arg(long, default_value_t = 0.0, value_name = "SHARE")]
    pub submit_500_after: f64,
    /// Share of submits answered 200 without a readable task id (as if the API changed
    /// shape) after the task was created.
    #[arg(long, default_value_t = 0.0, value_name = "SHARE")]
    pub unreadable_submit: f64,
    /// Milliseconds every submit waits between creating its task and answering; a client
    /// that hangs up meanwhile leaves the task created.
    #[arg(long, default_value_t = 0)]
    pub submit_answer_delay_ms: u64,
    /// Share of API calls whose connection breaks before the answer.
    #[arg(long, default_value_t = 0.0, value_name = "SHARE")]
    pub reset: f64,
    /// Share of API calls answered 200 with an error body.
    #[arg(long, default_value_t = 0.0, value_name = "SHARE")]
    pub error_body: f64,
    /// Share of API calls answered 429.
    #[arg(long, default_value_t = 0.0, value_name = "SHARE")]
    pub rate_limit_share: f64,
    /// Share of API answers delayed by --slow-ms.
    #[arg(long, default_value_t = 0.0, value_name = "SHARE")]
    pub slow: f64,
    /// The delay of a slow answer.
    #[arg(long, default_value_t = 2000)]
    pub slow_ms: u64,
    /// Share of downloads cut short.
    #[arg(long, default_value_t = 0.0, value_name = "SHARE")]
    pub truncate: f64,
    /// Share of downloads answered with an HTML error page.
    #[arg(long, default_value_t = 0.0, value_name = "SHARE")]
    pub not_audio: f64,
    /// The first download of each track answers 410, as an expired URL does.
    #[arg(long)]
    pub expire_first_download: bool,
    /// Share of tasks that fail.
    #[arg(long, default_value_t = 0.0, value_name = "SHARE")]
    pub fail_share: f64,
    /// Share of tasks that never finish.
    #[arg(long, default_value_t = 0.0, value_name = "SHARE")]
    pub hang_share: f64,
    /// Share of tracks served as near silence (a faint hiss), full length.
    #[arg(long, default_value_t = 0.0, value_name = "SHARE")]
    pub silent_tracks: f64,
    /// Share of tracks served too loud, flattened at full scale.
    #[arg(long, default_value_t = 0.0, value_name = "SHARE")]
    pub clipped_tracks: f64,
    /// Share of tracks served at a quarter of the duration the task's detail reports.
    #[arg(long, default_value_t = 0.0, value_name = "SHARE")]
    pub short_tracks: f64,
    /// Share of tracks served as a WAV header followed by noise: they look like audio
    /// but do not decode.
    #[arg(long, default_value_t = 0.0, value_name = "SHARE")]
    pub undecodable_tracks: f64,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration ({e}; e.g. \"6h\", \"90m\")"))
}
