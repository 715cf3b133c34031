//! The commands: each turns parsed arguments into work and an exit code. `main` only
//! sets up logging and the runtime and prints what comes back.

mod inspect;
mod report;
mod resume;
mod run;
mod simulator;

use crate::cli::{Cli, Command};
use crate::exit::{ExpectedError, USAGE};

pub use inspect::write_plan;
pub use run::resolve_output_dir;

/// Runs one command to its exit code; an error is printed by `main` and maps to its code.
pub async fn execute(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Run(args) => run::run(args).await,
        Command::Validate { manifest } => inspect::validate(&manifest),
        Command::Plan { manifest, csv, out } => inspect::plan(&manifest, csv, out.as_deref()).await,
        Command::Status { dir } => inspect::status(&dir),
        Command::Report { dir } => report::report(&dir).await,
        Command::Simulator(args) => simulator::serve(args).await,
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
