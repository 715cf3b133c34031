//! Terminal habits: `--color auto|always|never` and `NO_COLOR` for the log lines, the bars
//! and clap's own errors; flags that take the same thing name their value alike.

use std::collections::BTreeMap;
use std::process::Stdio;

use crate::helpers::*;

/// Whether `bytes` hold an ANSI color (SGR) sequence, `ESC [ digits;… m`; the cursor
/// moves with which the bars redraw themselves end in other letters and do not count.
fn has_color(bytes: &[u8]) -> bool {
    bytes.windows(2).enumerate().any(|(at, pair)| {
        pair == b"\x1b["
            && bytes[at + 2..]
                .iter()
                .find(|b| !(b.is_ascii_digit() || **b == b';'))
                .is_some_and(|end| *end == b'm')
    })
}

#[test]
fn the_color_detector_tells_colors_from_cursor_moves() {
    assert!(has_color(b"x \x1b[32m INFO\x1b[0m"));
    assert!(has_color(b"\x1b[1;31merror"));
    assert!(!has_color(b"\x1b[2K\x1b[1A\x1b[0G plain"));
    assert!(!has_color(b"no escapes"));
}

/// A one-variant manifest for a quick run against the simulator.
fn one_variant() -> (tempfile::TempDir, std::path::PathBuf) {
    write_manifest(&format!(
        "{FAST_RUN}\n[[stem]]\nurl = \"https://stems.example.com/ballad.wav\"\n"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_lines_are_colored_only_as_color_says() {
    let sim = start_sim(quick_sim()).await;
    for (flag, colored) in [
        (None, false),
        (Some("never"), false),
        (Some("always"), true),
    ] {
        let (dir, manifest) = one_variant();
        let out = dir.path().join("out");
        let extra: Vec<&str> = flag.iter().flat_map(|f| ["--color", *f]).collect();
        let output = run_command(&sim, &manifest, &out, &extra)
            .output()
            .await
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert!(stderr(&output).contains("run ended"), "{}", stderr(&output));
        // Off a terminal (a pipe here) `auto` means no color, as for cron's mail.
        assert_eq!(
            has_color(&output.stderr),
            colored,
            "--color {flag:?}: {:?}",
            stderr(&output)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clap_errors_follow_the_color_flag_too() {
    for (args, colored) in [
        (&["no-such-command"][..], false),
        (&["--color", "never", "no-such-command"][..], false),
        (&["--color", "always", "no-such-command"][..], true),
        (&["no-such-command", "--color=always"][..], true),
    ] {
        let output = stembatch(args, None).await;
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert_eq!(
            has_color(&output.stderr),
            colored,
            "{args:?}: {:?}",
            stderr(&output)
        );
    }
    let output = stembatch(&["--color", "purple", "status", "."], None).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("purple"), "{}", stderr(&output));
}

/// Runs `args` in a pseudo-terminal (util-linux `script`), with `NO_COLOR` as given;
/// `None` where there is no `script` to make one.
async fn in_a_terminal(args: &[&str], key: &str, no_color: Option<&str>) -> Option<Vec<u8>> {
    let quote = |arg: &str| format!("'{}'", arg.replace('\'', r"'\''"));
    let line: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_stembatch"))
        .chain(args.iter().copied())
        .map(quote)
        .collect();
    let mut command = tokio::process::Command::new("script");
    command
        .args(["-q", "-e", "-c", &line.join(" "), "/dev/null"])
        .env("TERM", "xterm-256color")
        .env("VIDGO_API_KEY", key)
        .env_remove("VIDGO_BASE_URL")
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for var in stembatch::shard::ENV_VARS {
        command.env_remove(var);
    }
    if let Some(value) = no_color {
        command.env("NO_COLOR", value);
    }
    let output = tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .expect("stembatch finished in time")
        .ok()?;
    Some(output.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_color_turns_colors_off_on_a_terminal_unless_color_always() {
    let sim = start_sim(quick_sim()).await;
    let url = sim.url();
    let mut seen = BTreeMap::new();
    for (no_color, flag) in [
        (None, "auto"),
        (Some("1"), "auto"),
        (Some(""), "auto"),
        (Some("1"), "always"),
    ] {
        let (dir, manifest) = one_variant();
        let out = dir.path().join("out");
        let args = [
            "run",
            path_str(&manifest),
            "--out",
            path_str(&out),
            "--base-url",
            &url,
            "--color",
            flag,
        ];
        let Some(text) = in_a_terminal(&args, sim.key(), no_color).await else {
            eprintln!("SKIPPED: no `script` (util-linux) to run stembatch in a terminal");
            return;
        };
        let shown = String::from_utf8_lossy(&text).into_owned();
        assert!(shown.contains("run ended"), "{shown}");
        seen.insert(
            format!("NO_COLOR={no_color:?} --color {flag}"),
            has_color(&text),
        );
    }
    let expected = BTreeMap::from([
        ("NO_COLOR=None --color auto".to_owned(), true),
        ("NO_COLOR=Some(\"1\") --color auto".to_owned(), false),
        ("NO_COLOR=Some(\"\") --color auto".to_owned(), true),
        ("NO_COLOR=Some(\"1\") --color always".to_owned(), true),
    ]);
    assert_eq!(seen, expected);
}

#[test]
fn flags_of_one_name_name_their_value_alike() {
    use clap::CommandFactory;
    let command = stembatch::cli::Cli::command();
    // long flag -> (value name, the subcommands that have it)
    let mut names: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for sub in command.get_subcommands() {
        for arg in sub.get_arguments() {
            let (Some(long), Some(values)) = (arg.get_long(), arg.get_value_names()) else {
                continue;
            };
            let value = values.iter().map(|v| v.to_string()).collect::<Vec<_>>();
            names
                .entry(long.to_owned())
                .or_default()
                .entry(value.join(" "))
                .or_default()
                .push(sub.get_name().to_owned());
        }
    }
    let out = &names["out"];
    assert_eq!(out.keys().collect::<Vec<_>>(), ["DIR"], "--out: {out:?}");
    assert!(out["DIR"].contains(&"run".to_owned()) && out["DIR"].contains(&"plan".to_owned()));
    let differing: Vec<_> = names.iter().filter(|(_, by)| by.len() > 1).collect();
    assert!(differing.is_empty(), "{differing:?}");
}
