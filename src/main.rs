//! The `stembatch` binary: parse the command line, set up logging and the runtime, run
//! the command, and exit with its code. Everything else lives in the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use stembatch::cli::{Cli, Command, LogFormat};
use stembatch::report::progress::{log_directives, Verbosity, View};
use stembatch::terminal::{color_in_args, colors_enabled};
use tracing_indicatif::filter::{hide_indicatif_span_fields, IndicatifFilter};
use tracing_indicatif::IndicatifLayer;
use tracing_subscriber::fmt::format::DefaultFields;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Sets up the log lines (and, on a terminal, the bars under them); returns the view a
/// run shows.
fn init_logging(cli: &Cli) -> View {
    let format = match &cli.command {
        Command::Run(args) => args.log_format,
        _ => LogFormat::Text,
    };
    let verbosity = Verbosity::from_flags(cli.quiet, cli.verbose);
    let terminal = std::io::stderr().is_terminal()
        && std::env::var("TERM").map_or(true, |term| term != "dumb");
    let view = View::choose(format, verbosity, terminal);
    let colored = colors_enabled(cli.color, std::env::var_os("NO_COLOR").as_deref(), terminal);
    // The bars draw through `console`, which would otherwise decide on its own.
    console::set_colors_enabled_stderr(colored);
    let env = std::env::var("STEMBATCH_LOG").ok();
    let filter =
        || EnvFilter::builder().parse_lossy(log_directives(env.as_deref(), verbosity, view));
    let lines = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(colored);
    match (view, format) {
        (View::Bars, _) => {
            // Log lines go through the bars' writer, which lifts the bars while a line is
            // written, so that neither tears the other. Only our spans get a bar.
            let bars = IndicatifLayer::new()
                .with_span_field_formatter(hide_indicatif_span_fields(DefaultFields::new()));
            let lines = lines
                .compact()
                .without_time()
                .with_writer(bars.get_stderr_writer())
                .with_filter(filter());
            tracing_subscriber::registry()
                .with(lines)
                .with(bars.with_filter(IndicatifFilter::new(false)))
                .init();
        }
        (_, LogFormat::Json) => {
            let lines = lines
                .json()
                .with_writer(std::io::stderr)
                .with_filter(filter());
            tracing_subscriber::registry().with(lines).init();
        }
        (_, LogFormat::Text) => {
            let lines = lines
                .compact()
                .with_writer(std::io::stderr)
                .with_filter(filter());
            tracing_subscriber::registry().with(lines).init();
        }
    }
    view
}

fn main() -> ExitCode {
    // clap writes its help and usage errors while it parses, so --color is found first.
    let matches = Cli::command()
        .color(color_in_args(std::env::args_os()).for_clap())
        .get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    let view = init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("stembatch: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(stembatch::app::execute(cli, view));
    // Work still running here (a stem hashed for a run that was interrupted, a download
    // abandoned by a second signal) is not waited for: its state is already saved.
    runtime.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("stembatch: {err:#}");
            ExitCode::from(stembatch::app::exit_code_of(&err))
        }
    }
}
