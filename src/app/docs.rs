//! `completions` and `man`: shell completion scripts and the man page, generated from the
//! clap definitions in [`crate::cli`], so that a new flag or command is in both at once.
//! They write to stdout and read nothing else.

use std::io::{self, Write};
use std::path::Path;

use anyhow::Context;

use clap::CommandFactory;
use roff::{bold, italic, roman, Roff};

use crate::cli::{Cli, CompletionShell};
use crate::exit::{ExpectedError, SUCCESS};

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

/// `man [COMMAND] [--out DIR]`: one page on stdout, or every page into `DIR`.
pub(super) fn man(name: Option<&str>, out: Option<&Path>) -> anyhow::Result<u8> {
    if let Some(dir) = out {
        for (file, page) in man_pages()? {
            let path = dir.join(&file);
            std::fs::write(&path, page)
                .with_context(|| format!("cannot write the man page {}", path.display()))?;
        }
        return Ok(SUCCESS);
    }
    let mut page = Vec::new();
    match name {
        None => write_man(&mut page)?,
        Some(name) => write_subcommand_man(name, &mut page)?,
    }
    finish(io::stdout().lock().write_all(&page))
}

/// The command tree as the man pages show it. Built, so that each subcommand knows its
/// page's name (`stembatch-run`), its synopsis (`stembatch run`) and carries the global
/// flags; without clap's `help` subcommand, which has no page of its own.
pub fn man_command() -> clap::Command {
    let mut command = command().disable_help_subcommand(true);
    command.build();
    command
}

/// Every man page, as (file name, roff): `stembatch.1`, then one per subcommand that the
/// main page names (`stembatch-run.1`, …), so that no name on it leads nowhere.
pub fn man_pages() -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut main = Vec::new();
    write_man(&mut main)?;
    let mut pages = vec![("stembatch.1".to_owned(), main)];
    for sub in man_command().get_subcommands() {
        let mut page = Vec::new();
        render_subcommand(sub, &mut page)?;
        pages.push((format!("stembatch-{}.1", sub.get_name()), page));
    }
    Ok(pages)
}

/// Writes the page of the subcommand `name` (`run` gives stembatch-run(1)); a name that is
/// not a subcommand is a usage error that lists them.
pub fn write_subcommand_man(name: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    let command = man_command();
    let Some(sub) = command.find_subcommand(name) else {
        let names: Vec<&str> = command.get_subcommands().map(|c| c.get_name()).collect();
        return Err(ExpectedError::usage(format!(
            "man: no subcommand {name:?} (expected one of: {})",
            names.join(", ")
        ))
        .into());
    };
    render_subcommand(sub, out)?;
    Ok(())
}

/// A subcommand's page: clap's sections (its flags, the global ones included), then a
/// pointer back to the main page, which has the exit codes, environment and files.
fn render_subcommand(sub: &clap::Command, out: &mut dyn Write) -> io::Result<()> {
    let man =
        clap_mangen::Man::new(sub.clone()).source(format!("stembatch {}", crate::cli::VERSION));
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    let mut extra = Roff::new();
    arguments_section(&mut extra, sub);
    extra.control("SH", ["SEE ALSO"]);
    extra.text([
        bold("stembatch"),
        roman("(1): the exit codes, the environment and the files of an output folder."),
    ]);
    // A subcommand carries no version of its own (clap_mangen's section would panic).
    extra.control("SH", ["VERSION"]);
    extra.text([roman(format!("v{}", crate::cli::VERSION))]);
    extra.to_writer(out)
}

/// Writes the main man page to `out`: clap's sections (naming each subcommand's page),
/// then the exit codes, the environment and the files of an output folder, which clap
/// does not know.
pub fn write_man(out: &mut dyn Write) -> io::Result<()> {
    let man = clap_mangen::Man::new(man_command());
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

/// The command's positional arguments, with their help: clap_mangen's OPTIONS section
/// leaves them out, and a page should say what MANIFEST or DIR is.
fn arguments_section(roff: &mut Roff, command: &clap::Command) {
    let positionals: Vec<&clap::Arg> = command
        .get_positionals()
        .filter(|arg| !arg.is_hide_set())
        .collect();
    if positionals.is_empty() {
        return;
    }
    roff.control("SH", ["ARGUMENTS"]);
    for arg in positionals {
        let name = arg
            .get_value_names()
            .and_then(|names| names.first())
            .map_or_else(|| arg.get_id().to_string(), ToString::to_string);
        roff.control("TP", []);
        roff.text([italic(format!("<{name}>"))]);
        let mut text = arg
            .get_long_help()
            .or(arg.get_help())
            .map(ToString::to_string)
            .unwrap_or_default();
        let values: Vec<String> = arg
            .get_possible_values()
            .iter()
            .filter(|value| !value.is_hide_set())
            .map(|value| value.get_name().to_owned())
            .collect();
        if !values.is_empty() {
            // clap drops the help's closing period; the list is a sentence of its own.
            text.push_str(&format!(". One of: {}.", values.join(", ")));
        }
        roff.text([roman(text)]);
    }
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
    ("NO_COLOR", "when set and not empty, no colors unless --color always"),
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
        "DIR/report-data/",
        "the listening page's data, beside a page of more than 2,048 variants",
    ),
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

    /// How roff writes a flag: every `-` escaped.
    fn roff_flag(flag: &str) -> String {
        flag.replace('-', "\\-")
    }

    fn page(name: &str) -> String {
        let pages = man_pages().unwrap();
        let (_, page) = pages
            .iter()
            .find(|(file, _)| file == name)
            .unwrap_or_else(|| panic!("no page {name}"));
        String::from_utf8(page.clone()).unwrap()
    }

    #[test]
    fn every_page_the_main_page_names_exists() {
        let main = page("stembatch.1");
        let files: Vec<String> = man_pages().unwrap().into_iter().map(|(f, _)| f).collect();
        // Each `stembatch-NAME(1)` on the main page, read back out of the roff.
        let named: Vec<&str> = main
            .split("stembatch\\-")
            .skip(1)
            .filter_map(|rest| rest.split_once("(1)").map(|(name, _)| name))
            .collect();
        assert!(named.len() >= 8, "{named:?}\n{main}");
        for name in named {
            let file = format!("stembatch-{name}.1");
            assert!(
                files.contains(&file),
                "{file} is named but not written: {files:?}"
            );
        }
        assert!(!files.iter().any(|f| f == "stembatch-help.1"), "{files:?}");
    }

    #[test]
    fn each_subcommand_page_names_each_of_its_flags() {
        let command = man_command();
        let mut checked = 0;
        for sub in command.get_subcommands() {
            let page = page(&format!("stembatch-{}.1", sub.get_name()));
            assert!(
                page.contains(&format!(".TH stembatch-{} 1", sub.get_name())),
                "{page}"
            );
            for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
                let mut spellings = Vec::new();
                if let Some(long) = arg.get_long() {
                    spellings.push(roff_flag(&format!("--{long}")));
                }
                if let Some(short) = arg.get_short() {
                    spellings.push(roff_flag(&format!("-{short}")));
                }
                if arg.is_positional() {
                    let name = arg.get_value_names().unwrap()[0].to_string();
                    spellings.push(format!("\\fI<{name}>\\fR"));
                    let help = arg.get_help().unwrap().to_string();
                    spellings.push(roff_flag(&help));
                }
                for spelling in spellings {
                    assert!(
                        page.contains(&spelling),
                        "stembatch-{}.1 lacks {spelling}:\n{page}",
                        sub.get_name()
                    );
                    checked += 1;
                }
            }
        }
        // run, plan and the simulator alone have more than this: a tree that lost its
        // flags (or a test that found none) fails.
        assert!(checked > 60, "{checked}");
    }

    #[test]
    fn the_global_flags_are_on_every_subcommand_page() {
        for sub in man_command().get_subcommands() {
            let page = page(&format!("stembatch-{}.1", sub.get_name()));
            for flag in ["--color", "--quiet", "--verbose"] {
                assert!(
                    page.contains(&roff_flag(flag)),
                    "{}: {flag}",
                    sub.get_name()
                );
            }
        }
    }

    #[test]
    fn an_unknown_subcommand_has_no_page() {
        let err = write_subcommand_man("nosuch", &mut Vec::new()).unwrap_err();
        let expected = err.downcast_ref::<ExpectedError>().unwrap();
        assert_eq!(expected.code, crate::exit::USAGE);
        assert!(err.to_string().contains("run, validate, plan"), "{err}");
    }
}
