//! The commands: each turns parsed arguments into work and an exit code. `main` only
//! sets up logging and the runtime and prints what comes back.

mod bucket;
mod docs;
mod inspect;
mod report;
mod resume;
mod run;
mod simulator;

use crate::cli::{Cli, Command};
use crate::exit::{ExpectedError, USAGE};
use crate::report::progress::View;

pub use inspect::write_plan;
pub use run::resolve_output_dir;

/// Runs one command to its exit code; an error is printed by `main` and maps to its code.
/// `view` is how a run shows itself, as `main` set up the logging for it.
pub async fn execute(cli: Cli, view: View) -> anyhow::Result<u8> {
    match cli.command {
        Command::Run(args) => run::run(args, view).await,
        Command::Validate { manifest } => inspect::validate(&manifest),
        Command::Plan {
            manifest,
            csv,
            out,
            shard,
        } => {
            let shard = shard
                .resolve()
                .map_err(|err| ExpectedError::usage(err.to_string()))?;
            inspect::plan(&manifest, csv, out.as_deref(), shard).await
        }
        Command::Status { dir, json } => inspect::status(&dir, json),
        Command::Report { dir } => report::report(&dir).await,
        Command::Simulator(args) => simulator::serve(args).await,
        Command::Completions { shell } => docs::completions(shell),
        Command::Man { command, out } => docs::man(command.as_deref(), out.as_deref()),
    }
}

/// The exit code an error maps to: its own when it is expected, else 1.
pub fn exit_code_of(err: &anyhow::Error) -> u8 {
    if let Some(expected) = err.downcast_ref::<ExpectedError>() {
        return expected.code;
    }
    if err
        .downcast_ref::<crate::manifest::ManifestError>()
        .is_some()
    {
        return USAGE;
    }
    crate::exit::INCOMPLETE
}
