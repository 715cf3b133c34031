//! `completions` and `man`: shell completion scripts and the man page, generated from the
//! clap definitions in [`crate::cli`], so that a new flag or command is in both at once.
//! They write to stdout and read nothing else.

use std::io::{self, Write};

use clap::CommandFactory;
use roff::{bold, roman, Roff};

use crate::cli::{Cli, CompletionShell};
use crate::exit::SUCCESS;

/// The command line as clap sees it, named as the binary is.
fn command() -> clap::Command {
    Cli::command()
}

/// `completions SHELL`: the script on stdout.
pub(super) fn completions(shell: CompletionShell) -> anyhow::Result<u8> {
    let mut script = Vec::new();
    write_completions(shell, &mut script);
    finish(io::stdout().lock().write_all(&script))
}

/// Writes the completion script of `shell` to `out`.
pub fn write_completions(shell: CompletionShell, out: &mut dyn Write) {
    let shell = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    let mut command = command();
    let name = command.get_name().to_owned();
    clap_complete::generate(shell, &mut command, name, out);
}

/// `man`: the roff page on stdout.
pub(super) fn man() -> anyhow::Result<u8> {
    let mut page = Vec::new();
    write_man(&mut page)?;
    finish(io::stdout().lock().write_all(&page))
}

/// Writes the man page to `out`: clap's sections, then the exit codes, the environment
/// and the files of an output folder, which clap does not know.
pub fn write_man(out: &mut dyn Write) -> io::Result<()> {
    let man = clap_mangen::Man::new(command());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    man.render_subcommands_section(out)?;
    let mut extra = Roff::new();
    section(&mut extra, "EXIT STATUS", EXIT_CODES);
    section(&mut extra, "ENVIRONMENT", ENVIRONMENT);
    section(&mut extra, "FILES", FILES);
    extra.to_writer(out)?;
    man.render_version_section(out)
}

/// One section of tagged paragraphs: the tag in bold, then its text.
fn section(roff: &mut Roff, title: &str, items: &[(&str, &str)]) {
    roff.control("SH", [title]);
    for (tag, text) in items {
        roff.control("TP", []);
        roff.text([bold(*tag)]);
        roff.text([roman(*text)]);
    }
}

/// SPEC.md's exit codes, as the README explains them.
const EXIT_CODES: &[(&str, &str)] = &[
    ("0", "every variant finished"),
    ("1", "the run ended, but some variants are failed, timeout, error or pending: see results.csv"),
    ("2", "usage or manifest error (a missing or unreadable API key, a misused shared-limit Redis too): nothing was sent"),
    ("3", "the account stopped the run (a refused key, no credits, an unreadable submit answer): nothing more was submitted; all state is saved"),
    ("4", "another stembatch run holds this output folder"),
    ("130", "interrupted by SIGINT or SIGTERM: state saved, the next run resumes"),
];

const ENVIRONMENT: &[(&str, &str)] = &[
    ("VIDGO_API_KEY", "the API key (or the variable the manifest's api.key_env names); never printed or logged"),
    ("VIDGO_API_KEY_FILE", "else, a file holding the key on one line (a systemd credential, a container secret); a file readable by group or others draws a warning"),
    ("VIDGO_BASE_URL", "the API's base URL, after --base-url and before api.base_url"),
    ("STEMBATCH_REDIS_URL", "the Redis through which every process on the API key shares its rate limits; before limits.redis_url"),
    ("STEMBATCH_LOG", "the log filter (default: info), e.g. debug"),
    (
        "JOB_COMPLETION_INDEX",
        "a Kubernetes Indexed Job's index: the shard, when --shard is not given",
    ),
    (
        "STEMBATCH_SHARD_COUNT",
        "the shard count with JOB_COMPLETION_INDEX, when --shard-count is not given",
    ),
    (
        "SLURM_ARRAY_TASK_ID",
        "a Slurm array task: the shard (minus SLURM_ARRAY_TASK_MIN), of SLURM_ARRAY_TASK_COUNT",
    ),
];

const FILES: &[(&str, &str)] = &[
    (
        "DIR/results.csv",
        "one row per generated track, and one per variant with no track",
    ),
    ("DIR/audio/<stem>/", "the downloaded tracks"),
    ("DIR/report.html", "the listening page"),
    (
        "DIR/.stembatch/",
        "the run's journal and lock: what makes re-runs safe; never delete it",
    ),
    (
        "DIR/.stembatch/shard-I-of-N/",
        "a shard's journal, lock and part of results.csv",
    ),
];

/// Output done: a closed pipe (`| head`) is success too.
fn finish(written: io::Result<()>) -> anyhow::Result<u8> {
    match written {
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(SUCCESS),
        other => {
            other?;
            Ok(SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_man_page_has_the_sections_clap_does_not_know() {
        let mut page = Vec::new();
        write_man(&mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(page.contains(".TH stembatch 1"), "{page}");
        for heading in [
            ".SH NAME",
            ".SH SYNOPSIS",
            ".SH \"EXIT STATUS\"",
            ".SH ENVIRONMENT",
            ".SH FILES",
            "VIDGO_API_KEY_FILE",
        ] {
            assert!(page.contains(heading), "{heading} missing:\n{page}");
        }
    }
}
