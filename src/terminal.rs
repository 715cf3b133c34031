//! Terminal habits: whether output may carry ANSI colors. `--color auto|always|never`
//! decides, as in cargo and ripgrep; under `auto`, colors need a terminal and a
//! `NO_COLOR` that is unset or empty (<https://no-color.org>), while an explicit
//! `--color always` wins over `NO_COLOR`, as that convention asks of command-line flags.
//! Pure functions: `main` hands in the environment and what stderr is.

use std::ffi::{OsStr, OsString};

use crate::cli::ColorWhen;

/// Whether to color output that goes to a stream that `is_terminal` or not, given
/// `--color` and the value of `NO_COLOR`.
pub fn colors_enabled(when: ColorWhen, no_color: Option<&OsStr>, is_terminal: bool) -> bool {
    match when {
        ColorWhen::Always => true,
        ColorWhen::Never => false,
        ColorWhen::Auto => is_terminal && no_color.is_none_or(OsStr::is_empty),
    }
}

/// The `--color` of a command line, found before clap parses it, because clap's own help
/// and usage errors are written while it parses: the last `--color WHEN` or
/// `--color=WHEN` before a `--`. A value clap would refuse counts as `auto` here; clap
/// then reports it.
pub fn color_in_args(args: impl IntoIterator<Item = OsString>) -> ColorWhen {
    let mut when = ColorWhen::Auto;
    let mut args = args.into_iter().skip(1);
    while let Some(arg) = args.next() {
        let value = match arg.to_str() {
            Some("--") => break,
            Some("--color") => args.next(),
            Some(other) => other.strip_prefix("--color=").map(OsString::from),
            None => None,
        };
        if let Some(value) = value {
            when = match value.to_str() {
                Some("always") => ColorWhen::Always,
                Some("never") => ColorWhen::Never,
                _ => ColorWhen::Auto,
            };
        }
    }
    when
}

impl ColorWhen {
    /// The same choice for clap's help and errors. clap's `auto` honours `NO_COLOR` and
    /// the terminal itself (anstream), by the rule of [`colors_enabled`].
    pub fn for_clap(self) -> clap::ColorChoice {
        match self {
            ColorWhen::Auto => clap::ColorChoice::Auto,
            ColorWhen::Always => clap::ColorChoice::Always,
            ColorWhen::Never => clap::ColorChoice::Never,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_output_is_colored() {
        let set = Some(OsStr::new("1"));
        let empty = Some(OsStr::new(""));
        // (--color, NO_COLOR, a terminal) -> colored
        let table = [
            (ColorWhen::Auto, None, true, true),
            (ColorWhen::Auto, None, false, false),
            (ColorWhen::Auto, set, true, false),
            (ColorWhen::Auto, empty, true, true),
            (ColorWhen::Always, set, false, true),
            (ColorWhen::Always, None, false, true),
            (ColorWhen::Never, None, true, false),
            (ColorWhen::Never, empty, true, false),
        ];
        for (when, no_color, terminal, colored) in table {
            assert_eq!(
                colors_enabled(when, no_color, terminal),
                colored,
                "{when:?} NO_COLOR={no_color:?} terminal={terminal}"
            );
        }
    }

    #[test]
    fn the_color_flag_is_found_before_clap_parses() {
        let args = |line: &str| -> Vec<OsString> { line.split(' ').map(OsString::from).collect() };
        let table = [
            ("stembatch run m.toml", ColorWhen::Auto),
            ("stembatch --color always run m.toml", ColorWhen::Always),
            ("stembatch run m.toml --color=never", ColorWhen::Never),
            (
                "stembatch --color never run --color always",
                ColorWhen::Always,
            ),
            ("stembatch --color purple run", ColorWhen::Auto),
            ("stembatch run -- --color always", ColorWhen::Auto),
            ("stembatch --color", ColorWhen::Auto),
        ];
        for (line, expected) in table {
            assert_eq!(color_in_args(args(line)), expected, "{line}");
        }
    }
}
