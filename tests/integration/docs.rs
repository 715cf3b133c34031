//! Docs that stay true: every TOML example in README.md and docs/*.md goes through the
//! manifest loader, and every relative link and anchor between them resolves. The
//! markers an example may carry are described in docs/design.md ("Docs that stay true").

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};
use stembatch::audio_format::AudioFormat;
use stembatch::manifest::{parse_with, ManifestError};
use stembatch::stems::{CheckedFile, LocalFiles};

/// The name the examples are loaded under, so that an error example's expected lines
/// read as a user would see them for their own `nightly.toml`.
const EXAMPLE_NAME: &str = "nightly.toml";

/// What a fragment is completed with: one stem that sets what `[defaults]` would.
const FRAGMENT_STEM: &str = "\n[[stem]]\nurl = \"https://stems.example.com/fragment.wav\"\ntags = \"\"\nnegative_tags = \"\"\n";

/// The repository's Markdown: README.md and every docs/*.md.
fn markdown_files() -> BTreeMap<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = BTreeMap::new();
    let mut paths = vec![PathBuf::from("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let name = PathBuf::from("docs").join(entry.unwrap().file_name());
        if name.extension().is_some_and(|e| e == "md") {
            paths.push(name);
        }
    }
    for path in paths {
        let text = std::fs::read_to_string(root.join(&path)).unwrap();
        files.insert(path, text);
    }
    files
}

/// What the marker before a ```toml fence says the example is.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    /// No marker: a whole manifest that loads.
    Manifest,
    /// `<!-- manifest: fragment -->`: part of a manifest; loads once a stem is added.
    Fragment,
    /// `<!-- manifest: error` and the exact problem lines, then `-->`.
    Error(Vec<String>),
}

/// One TOML example of a Markdown file.
#[derive(Debug)]
struct Example {
    /// 1-based line of its opening fence.
    line: usize,
    expect: Expect,
    body: String,
}

/// Every ```toml fence of `text` with what its marker expects; a marker that cannot be
/// read is an error naming its line.
fn toml_examples(text: &str) -> Result<Vec<Example>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut examples = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let trimmed = lines[i].trim_start();
        let Some(info) = trimmed.strip_prefix("```") else {
            i += 1;
            continue;
        };
        let indent = lines[i].len() - trimmed.len();
        let start = i;
        let mut body = String::new();
        i += 1;
        while i < lines.len() && !lines[i].trim_start().starts_with("```") {
            body.push_str(lines[i].get(indent..).unwrap_or(lines[i].trim_start()));
            body.push('\n');
            i += 1;
        }
        i += 1;
        if info.trim() == "toml" {
            examples.push(Example {
                line: start + 1,
                expect: marker_before(&lines, start)?,
                body,
            });
        }
    }
    Ok(examples)
}

/// The marker in the HTML comment that ends on the last non-blank line before `fence`.
fn marker_before(lines: &[&str], fence: usize) -> Result<Expect, String> {
    let Some(end) = (0..fence).rev().find(|&k| !lines[k].trim().is_empty()) else {
        return Ok(Expect::Manifest);
    };
    if !lines[end].trim_end().ends_with("-->") {
        return Ok(Expect::Manifest);
    }
    let Some(begin) = (0..=end).rev().find(|&k| lines[k].contains("<!--")) else {
        return Err(format!("line {}: a comment end without its start", end + 1));
    };
    let comment = lines[begin..=end].join("\n");
    let inner = comment
        .split_once("<!--")
        .map(|(_, rest)| rest)
        .and_then(|rest| rest.rsplit_once("-->"))
        .map(|(inner, _)| inner.trim())
        .unwrap_or_default();
    let Some(marker) = inner.strip_prefix("manifest:") else {
        return Ok(Expect::Manifest);
    };
    let mut marker_lines = marker.lines();
    match marker_lines.next().map(str::trim) {
        Some("fragment") => Ok(Expect::Fragment),
        Some("error") => {
            let expected: Vec<String> = marker_lines
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            if expected.is_empty() {
                return Err(format!("line {}: an error marker names no error", begin + 1));
            }
            Ok(Expect::Error(expected))
        }
        other => Err(format!(
            "line {}: unknown marker {other:?} (expected \"manifest: fragment\" or \"manifest: error\")",
            begin + 1
        )),
    }
}

/// Local files as the examples imagine them: every `path` is a WAV, every `glob` matches
/// two (named `a` and `b`), so that an example needs no stems on disk.
struct ImaginedStems;

impl LocalFiles for ImaginedStems {
    fn glob(&self, base: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
        Ok(["a", "b"]
            .iter()
            .map(|name| base.join(pattern.replace("**/", "").replace('*', name)))
            .collect())
    }

    fn check(&self, path: &Path) -> Result<CheckedFile, String> {
        Ok(CheckedFile {
            sha256: hex::encode(Sha256::digest(path.display().to_string())),
            bytes: 1000,
            format: Ok(AudioFormat::Wav),
        })
    }
}

/// Loads one example as its marker says; `Err` says how it disagrees.
fn check_example(example: &Example) -> Result<(), String> {
    let text = match example.expect {
        Expect::Fragment => format!("{}{FRAGMENT_STEM}", example.body),
        _ => example.body.clone(),
    };
    let loaded = parse_with(Path::new(EXAMPLE_NAME), &text, &ImaginedStems);
    match (&example.expect, loaded) {
        (Expect::Error(expected), Ok(manifest)) => Err(format!(
            "marked as an error ({}) but it loads: {} variants",
            expected.join(" / "),
            manifest.variants.len()
        )),
        (Expect::Error(expected), Err(err)) => {
            let found: Vec<String> = problem_lines(&err);
            if &found == expected {
                Ok(())
            } else {
                Err(format!(
                    "gives another error than its marker says:\n  marker: {expected:?}\n  loader: {found:?}"
                ))
            }
        }
        (_, Ok(_)) => Ok(()),
        (_, Err(err)) => Err(format!(
            "does not load (mark it `<!-- manifest: error` with these lines if that is the point):\n{err}"
        )),
    }
}

/// The problem lines of a manifest error, as printed after its first line.
fn problem_lines(err: &ManifestError) -> Vec<String> {
    err.to_string()
        .lines()
        .skip(1)
        .map(|l| l.trim().to_owned())
        .collect()
}

/// Every example of every file that disagrees with the loader, named by file and line.
fn example_problems(files: &BTreeMap<PathBuf, String>) -> (usize, Vec<String>) {
    let mut checked = 0;
    let mut problems = Vec::new();
    for (path, text) in files {
        match toml_examples(text) {
            Err(err) => problems.push(format!("{}: {err}", path.display())),
            Ok(examples) => {
                for example in examples {
                    checked += 1;
                    if let Err(err) = check_example(&example) {
                        problems.push(format!("{}:{}: {err}", path.display(), example.line));
                    }
                }
            }
        }
    }
    (checked, problems)
}

/// The text of `text` outside code: fenced blocks blanked, inline code spans removed.
fn prose_lines(text: &str) -> Vec<String> {
    let mut fence = false;
    text.lines()
        .map(|line| {
            if line.trim_start().starts_with("```") {
                fence = !fence;
                return String::new();
            }
            if fence {
                return String::new();
            }
            // Odd-numbered pieces between backticks are code.
            line.split('`')
                .enumerate()
                .filter(|(k, _)| k % 2 == 0)
                .map(|(_, piece)| piece)
                .collect::<Vec<_>>()
                .join("")
        })
        .collect()
}

/// GitHub's anchor for a heading: the text as rendered (code marks, emphasis and link
/// targets dropped), lowercased, every character but letters, digits, `-`, `_` and
/// spaces removed, spaces turned into `-`; a repeated anchor gets `-1`, `-2`, ….
fn slug(heading: &str) -> String {
    let mut text = String::new();
    let mut rest = heading;
    // [text](target) renders as text.
    while let Some(open) = rest.find('[') {
        let (before, after) = rest.split_at(open);
        text.push_str(before);
        match after
            .find("](")
            .and_then(|mid| after[mid..].find(')').map(|close| (mid, mid + close)))
        {
            Some((mid, close)) => {
                text.push_str(&after[1..mid]);
                rest = &after[close + 1..];
            }
            None => {
                text.push('[');
                rest = &after[1..];
            }
        }
    }
    text.push_str(rest);
    text.chars()
        .filter(|c| *c != '`' && *c != '*')
        .flat_map(char::to_lowercase)
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every anchor a Markdown file offers: its headings' slugs (duplicates numbered) and
/// the ids of `<a id="…">`/`<a name="…">`.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut anchors = BTreeSet::new();
    let mut fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fence = !fence;
            continue;
        }
        if fence {
            continue;
        }
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if (1..=6).contains(&hashes) && line[hashes..].starts_with(' ') {
            let base = slug(line[hashes..].trim().trim_end_matches('#').trim());
            let count = seen.entry(base.clone()).or_default();
            anchors.insert(if *count == 0 {
                base.clone()
            } else {
                format!("{base}-{count}")
            });
            *count += 1;
        }
        for attr in ["id=\"", "name=\""] {
            let mut rest = line;
            while let Some(at) = rest.find("<a ") {
                rest = &rest[at + 3..];
                if let Some(start) = rest.find(attr) {
                    let value = &rest[start + attr.len()..];
                    if let Some(end) = value.find('"') {
                        anchors.insert(value[..end].to_owned());
                    }
                }
            }
        }
    }
    anchors
}

/// The targets of the Markdown links and images of one line of prose.
fn link_targets(line: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let Some(close) = after.find(')') else { break };
        let target = after[..close].split_whitespace().next().unwrap_or_default();
        targets.push(target.to_owned());
        rest = &after[close..];
    }
    targets
}

/// `a/b/../c` as `a/c`, without asking the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Every relative link of `files` whose file is missing or whose anchor is not in it,
/// as "FILE:LINE: target: why". `exists` answers for files that are not Markdown.
fn link_problems(
    files: &BTreeMap<PathBuf, String>,
    exists: &dyn Fn(&Path) -> bool,
) -> (usize, Vec<String>) {
    let offered: BTreeMap<&PathBuf, BTreeSet<String>> =
        files.iter().map(|(p, t)| (p, anchors(t))).collect();
    let mut checked = 0;
    let mut problems = Vec::new();
    for (path, text) in files {
        for (number, line) in prose_lines(text).iter().enumerate() {
            for target in link_targets(line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (file, anchor) = match target.split_once('#') {
                    Some((file, anchor)) => (file, Some(anchor)),
                    None => (target.as_str(), None),
                };
                let resolved = if file.is_empty() {
                    path.clone()
                } else {
                    normalize(&path.parent().unwrap_or(Path::new("")).join(file))
                };
                let at = format!("{}:{}: {target}", path.display(), number + 1);
                match (offered.get(&resolved), anchor) {
                    (Some(anchors), Some(anchor)) if !anchors.contains(anchor) => {
                        problems.push(format!(
                            "{at}: no heading or anchor #{anchor} in {}",
                            resolved.display()
                        ));
                    }
                    (Some(_), _) => {}
                    (None, Some(_)) if resolved.extension().is_some_and(|e| e == "md") => {
                        problems.push(format!(
                            "{at}: {} is not among the checked files",
                            resolved.display()
                        ));
                    }
                    (None, _) if !exists(&resolved) => {
                        problems.push(format!("{at}: {} does not exist", resolved.display()));
                    }
                    (None, _) => {}
                }
            }
        }
    }
    (checked, problems)
}

#[test]
fn every_toml_example_in_the_docs_loads_as_its_marker_says() {
    let files = markdown_files();
    let (checked, problems) = example_problems(&files);
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    // The README's first manifest, the reference, the bucket and Redis fragments, the
    // error examples: a docs tree that lost them (or a parser that finds none) fails.
    assert!(checked >= 6, "only {checked} TOML examples found");
}

#[test]
fn every_relative_link_and_anchor_in_the_docs_resolves() {
    let files = markdown_files();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (checked, problems) = link_problems(&files, &|path| root.join(path).exists());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(checked >= 30, "only {checked} relative links found");
}

#[test]
fn every_command_and_flag_is_documented() {
    use clap::CommandFactory;
    let files = markdown_files();
    let readme = &files[Path::new("README.md")];
    let all: String = files.values().map(String::as_str).collect();
    let mut missing = Vec::new();
    for sub in stembatch::cli::Cli::command().get_subcommands() {
        // The README's command table names every command.
        if !readme.contains(&format!("| `{}", sub.get_name())) {
            missing.push(format!("README.md: the command {}", sub.get_name()));
        }
        for long in sub.get_arguments().filter_map(|a| a.get_long()) {
            if !all.contains(&format!("--{long}")) {
                missing.push(format!("{} --{long}", sub.get_name()));
            }
        }
    }
    assert!(missing.is_empty(), "not in README.md or docs/: {missing:?}");
}

#[test]
fn a_broken_example_or_a_wrong_marker_is_reported_with_its_line() {
    let doc = "intro\n\n```toml\n[defaults]\ntags = \"x\"\nnegative_tags = \"\"\nstyle_weight = 1.5\n[[stem]]\nurl = \"https://x.com/a.wav\"\n```\n\n<!-- manifest: error\nnightly.toml:99: defaults.style_weight: something else\n-->\n```toml\n[defaults]\ntags = \"x\"\nnegative_tags = \"\"\nstyle_weight = 1.5\n[[stem]]\nurl = \"https://x.com/a.wav\"\n```\n\n<!-- manifest: error\nnightly.toml:4: defaults.style_weight: 1.5 is outside 0..1\n-->\n```toml\n[defaults]\ntags = \"x\"\nnegative_tags = \"\"\nstyle_weight = 1.5\n[[stem]]\nurl = \"https://x.com/a.wav\"\n```\n\n<!-- manifest: fragment -->\n```toml\n[limits]\nshare = \"0/3\"\n```\n\n```toml\n[limits]\nshare = \"0/3\"\n```\n";
    let files = BTreeMap::from([(PathBuf::from("docs/x.md"), doc.to_owned())]);
    let (checked, problems) = example_problems(&files);
    assert_eq!(checked, 5);
    let lines: Vec<&str> = problems
        .iter()
        .map(|p| p.split(": ").next().unwrap())
        .collect();
    // The plain broken one, the one marked with another error, the bare fragment.
    assert_eq!(
        lines,
        ["docs/x.md:3", "docs/x.md:15", "docs/x.md:42"],
        "{problems:#?}"
    );
    assert!(
        problems[0].contains("1.5 is outside 0..1"),
        "{}",
        problems[0]
    );
    assert!(problems[1].contains("something else"), "{}", problems[1]);

    let unknown = "<!-- manifest: maybe -->\n```toml\n```\n";
    let files = BTreeMap::from([(PathBuf::from("y.md"), unknown.to_owned())]);
    let (_, problems) = example_problems(&files);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("unknown marker"), "{problems:?}");
}

#[test]
fn a_dangling_link_or_anchor_is_reported_with_its_line() {
    let readme = "# Title\n\n## Exit codes\n\nSee [the guide](docs/guide.md#cron), [codes](#exit-codes),\n[gone](docs/gone.md), [nowhere](#no-such-heading), `[code](#not-a-link)`,\n[web](https://example.com/#x) and ![png](docs/report.png).\n";
    let guide = "# Guide\n\n## Cron\n\n## Cron\n\n## Several hosts, one API key: the limits shared through Redis\n\nBack to [the codes](../README.md#exit-codes), [twice](#cron-1),\n[thrice](#cron-2), [redis](#several-hosts-one-api-key-the-limits-shared-through-redis).\n";
    let files = BTreeMap::from([
        (PathBuf::from("README.md"), readme.to_owned()),
        (PathBuf::from("docs/guide.md"), guide.to_owned()),
    ]);
    let exists = |path: &Path| path == Path::new("docs/report.png");
    let (checked, problems) = link_problems(&files, &exists);
    assert_eq!(checked, 9, "{problems:#?}");
    assert_eq!(
        problems,
        [
            "README.md:6: docs/gone.md: docs/gone.md does not exist",
            "README.md:6: #no-such-heading: no heading or anchor #no-such-heading in README.md",
            "docs/guide.md:10: #cron-2: no heading or anchor #cron-2 in docs/guide.md",
        ]
    );
}

#[test]
fn anchors_follow_githubs_slugs() {
    let table = [
        ("Failures, retries, and money", "failures-retries-and-money"),
        ("Several hosts: shards", "several-hosts-shards"),
        ("`--color` and `NO_COLOR`", "--color-and-no_color"),
        ("Re-runs and the journal", "re-runs-and-the-journal"),
        ("What **the** [guide](x.md) says", "what-the-guide-says"),
        ("Ça marche: 2× faster", "ça-marche-2-faster"),
    ];
    for (heading, expected) in table {
        assert_eq!(slug(heading), expected, "{heading}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn man_writes_a_page_for_every_subcommand_the_main_page_names() {
    use crate::helpers::{path_str, stderr, stembatch};
    let dir = tempfile::tempdir().unwrap();
    let output = stembatch(&["man", "--out", path_str(dir.path())], None).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let written: BTreeSet<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let main = std::fs::read_to_string(dir.path().join("stembatch.1")).unwrap();
    let named: BTreeSet<String> = main
        .split("stembatch\\-")
        .skip(1)
        .filter_map(|rest| rest.split_once("(1)"))
        .map(|(name, _)| format!("stembatch-{name}.1"))
        .collect();
    assert!(named.contains("stembatch-run.1"), "{named:?}");
    let mut expected = named.clone();
    expected.insert("stembatch.1".to_owned());
    assert_eq!(
        written, expected,
        "the pages written are those the main page names"
    );

    let output = stembatch(&["man", "run"], None).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let run = std::fs::read_to_string(dir.path().join("stembatch-run.1")).unwrap();
    assert_eq!(String::from_utf8(output.stdout).unwrap(), run);
    for flag in [
        "\\-\\-out",
        "\\-\\-retry\\-failed",
        "\\-\\-shard\\-count",
        "\\-\\-color",
    ] {
        assert!(run.contains(flag), "stembatch-run.1 lacks {flag}");
    }

    let output = stembatch(&["man", "nosuch"], None).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("run, validate"),
        "{}",
        stderr(&output)
    );
}
