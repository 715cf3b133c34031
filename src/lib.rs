//! stembatch: a nightly batch runner for the Vidgo add-instrumental API.
//!
//! # Architecture
//!
//! ```text
//! manifest.toml ──manifest::load──▶ manifest::Variants (pure: raw → validate → count → check;
//!                                   each Variant built by position when asked for)
//! DIR/.stembatch/{checkpoint,journal}.jsonl ──journal::checkpoint + journal::folded (replay)──▶ a Prior per variant
//!                     ──scheduler::start::decide, scheduler::rerun::plan──▶ an Entry (start + record) per variant (pure)
//!                                        │
//!                 scheduler::run ◀───────┘
//!                   coordinator: one select! loop, owns scheduler::state::RunState (pure)
//!                     event ──▶ RunState::handle ──▶ actions
//!                     Submit / Poll / Download ──▶ executors (one task per action) ──▶ event
//!                     End, and each event's fact ──▶ journal::writer (fsync, then ack)
//!                                                 ──▶ report::csv (atomic rewrite)
//!                   executors: stem URL (scheduler::upload: provider upload, base URL, or
//!                              scheduler::bucket → storage: the user's S3 bucket, presigned);
//!                              pacer slot (GCRA per endpoint: local, or in Redis with
//!                              [limits] redis_url: scheduler::shared_limit) → api::ApiClient;
//!                              download (temp file, verify, rename), then qc::check on a
//!                              blocking thread (one decode: peak, loudness, waveform,
//!                              verdict); one retry path
//! ```
//!
//! `app` wires the commands: the output folder (`folder`: its layout, locks, sweep and
//! journals, entered through `folder::Folder`), signals (`signal`), the
//! preparation (raced against Ctrl-C), and the exit codes of `exit`. `outcome` holds the
//! facts every layer shares (a variant's status, record, tracks), so that the journal and
//! the report never import the scheduler.
//!
//! The pure modules (`manifest`, `variant`, `outcome`, `api::retry`, `journal::replay`,
//! `scheduler::start` and `::rerun` (the re-run's money decisions), `scheduler::state`,
//! `scheduler::events`, `scheduler::poll`, `scheduler::shared_limit::grid`
//! and `::keys`, `storage::keys`, `storage::error`, `audio_format`) do no I/O;
//! the I/O modules wrap them. `qc` is pure but for `qc::check` (and `qc::analyze`, `qc::header_seconds`), which read one file. `sim` is the built-in simulator of the provider, used by
//! `run --simulate` and by every network test.

pub mod api;
pub mod app;
pub mod audio_format;
pub mod cli;
pub mod download;
pub mod exit;
pub mod folder;
pub mod journal;
pub mod manifest;
pub mod outcome;
pub mod output_files;
pub mod qc;
pub mod report;
pub mod scheduler;
pub mod shard;
pub mod signal;
pub mod sim;
pub mod stems;
pub mod storage;
pub mod terminal;
pub mod variant;
pub mod waveform;
