//! stembatch: a nightly batch runner for the Vidgo add-instrumental API.
//!
//! # Architecture
//!
//! ```text
//! manifest.toml ──manifest::load──▶ Vec<Variant> (pure: raw → validate → expand)
//! DIR/.stembatch/journal.jsonl ──journal::replay──▶ a Start per variant (pure)
//!                                        │
//!                 scheduler::run ◀───────┘
//!                   ├─ workers (≤ concurrency in flight, pulled lazily)
//!                   │    pace (Pacer per endpoint) → submit → poll (PollSchedule)
//!                   │    → download (temp file, verify, rename)        api::ApiClient
//!                   │    each step that costs money or makes a file ──▶ journal::writer
//!                   │         │ WorkerEvent (bounded mpsc)                (fsync, then ack)
//!                   └─ coordinator: owns RunState ──▶ report::csv (atomic rewrite)
//! ```
//!
//! `app` wires the commands: the run lock (`journal::lock`), signals (`signal`), the
//! deadline, and the exit codes of `exit`.
//!
//! The pure modules (`manifest`, `variant`, `api::retry`, `journal::replay`,
//! `scheduler::state`, `scheduler::poll`, `audio_format`) do no I/O; the I/O modules wrap them. `sim` is the
//! built-in simulator of the provider, used by `run --simulate` and by every network test.

pub mod api;
pub mod app;
pub mod audio_format;
pub mod cli;
pub mod download;
pub mod exit;
pub mod journal;
pub mod manifest;
pub mod outcome;
pub mod output_files;
pub mod report;
pub mod scheduler;
pub mod signal;
pub mod sim;
pub mod stems;
pub mod variant;
