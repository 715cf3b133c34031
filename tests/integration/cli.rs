//! The commands that send nothing, and what `run` refuses before sending anything.

use crate::helpers::*;
use stembatch::sim::SimConfig;

const MANIFEST: &str = r#"
[defaults]
title = "{stem} {variant}"
tags = "pop"
negative_tags = ""
[[stem]]
url = "https://stems.example.com/ballad.wav"
takes = 2
  [[stem.variant]]
  name = "piano"
  style_weight = 0.65
[[stem]]
url = "https://stems.example.com/hook.wav"
  [stem.matrix]
  tags = ["a", "b", "c"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_prints_the_variant_count() {
    let (_dir, manifest) = write_manifest(MANIFEST);
    let output = stembatch(&["validate", path_str(&manifest)], None).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.starts_with("5 variants (2 stems)"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_lists_every_variant_with_its_parameters() {
    let (_dir, manifest) = write_manifest(MANIFEST);
    let output = stembatch(&["plan", path_str(&manifest), "--csv"], None).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let mut reader = csv::Reader::from_reader(output.stdout.as_slice());
    let header: Vec<_> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(&header[..4], ["stem", "variant", "take", "variant_id"]);
    let rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    let summary: Vec<_> = rows
        .iter()
        .map(|r| format!("{}/{}/{} {}", r[0], r[1], r[2], r[10]))
        .collect();
    assert_eq!(
        summary,
        [
            "ballad/piano/1 0.65",
            "ballad/piano/2 0.65",
            "hook/a/1 ",
            "hook/b/1 ",
            "hook/c/1 "
        ]
    );

    let output = stembatch(&["plan", path_str(&manifest)], None).await;
    let text = String::from_utf8(output.stdout).unwrap();
    assert_eq!(text.lines().count(), 6);
    assert!(
        text.lines()
            .next()
            .unwrap()
            .contains("style_weight=\"0.65\""),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_key_is_a_usage_error_and_sends_nothing() {
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = write_manifest(MANIFEST);
    let url = sim.url();
    let out = dir.path().join("out");
    let args = [
        "run",
        path_str(&manifest),
        "--base-url",
        &url,
        "--out",
        path_str(&out),
    ];
    let output = stembatch(&args, None).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("VIDGO_API_KEY"),
        "{}",
        stderr(&output)
    );
    assert_eq!(sim.stats().submit_calls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_is_never_printed_or_written() {
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = write_manifest(&format!(
        "{FAST_RUN}\n[[stem]]\nurl = \"https://stems.example.com/a.wav\"\n[[stem.variant]]\nname = \"x\"\n[[stem.variant]]\nname = \"y\"\ntags = \"sim:fail\"\n"
    ));
    let out = dir.path().join("out");
    let output = run_command(&sim, &manifest, &out, &["--log-format", "json"])
        .env("STEMBATCH_LOG", "trace")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let key = sim.key().as_bytes();
    let contains_key = |haystack: &[u8]| haystack.windows(key.len()).any(|w| w == key);
    assert!(!contains_key(&output.stdout) && !contains_key(&output.stderr));
    for entry in files_below(&out) {
        assert!(
            !contains_key(&std::fs::read(&entry).unwrap()),
            "{} holds the key",
            entry.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_manifests_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/manifests");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let output = stembatch(&["validate", path_str(&path)], None).await;
            assert_eq!(
                output.status.code(),
                Some(0),
                "{}: {}",
                path.display(),
                stderr(&output)
            );
            seen += 1;
        }
    }
    assert!(seen >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_an_output_folder_by_stem_and_status() {
    let sim = start_sim(quick_sim()).await;
    let text = format!(
        "{FAST_RUN}\n[[stem]]\nurl = \"https://stems.example.com/a.wav\"\n[[stem.variant]]\nname = \"x\"\n[[stem.variant]]\nname = \"y\"\ntags = \"sim:fail\"\n[[stem]]\nurl = \"https://stems.example.com/b.wav\"\n"
    );
    let (dir, manifest) = write_manifest(&text);
    let out = dir.path().join("out");
    assert_eq!(
        run_against(&sim, &manifest, &out).await.status.code(),
        Some(1)
    );
    let output = stembatch(&["status", path_str(&out)], None).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = String::from_utf8(output.stdout).unwrap();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["stem", "finished", "failed", "timeout", "error", "pending"]
    );
    assert_eq!(rows[1], ["a", "1", "1", "0", "0", "0"]);
    assert_eq!(rows[2], ["b", "1", "0", "0", "0", "0"]);
    assert_eq!(rows[3], ["total", "2", "1", "0", "0", "0"]);

    let output = stembatch(&["status", path_str(dir.path())], None).await;
    assert_eq!(
        output.status.code(),
        Some(2),
        "a folder without results is a usage error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_command_serves_the_api_and_prints_its_url() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_stembatch"))
        .args([
            "simulator",
            "--addr",
            "127.0.0.1:0",
            "--key",
            "k1",
            "--credits",
            "7",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let url = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line())
        .await
        .expect("the simulator prints its URL")
        .unwrap()
        .unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let client = stembatch::api::ApiClient::new(&url, stembatch::api::ApiKey::new("k1")).unwrap();
    assert_eq!(client.balance().await.unwrap().credits_amount, 7.0);
    let wrong = stembatch::api::ApiClient::new(&url, stembatch::api::ApiKey::new("k2")).unwrap();
    assert!(matches!(
        wrong.balance().await,
        Err(stembatch::api::ApiError::Status { status: 401, .. })
    ));
    child.kill().await.unwrap();
}

/// One variant of stem `a` finishes, one fails; stem `b` has one that finishes.
fn two_stems_one_failing() -> String {
    format!(
        "{FAST_RUN}\n[[stem]]\nurl = \"https://stems.example.com/a.wav\"\n[[stem.variant]]\nname = \"x\"\n[[stem.variant]]\nname = \"y\"\ntags = \"sim:fail\"\n[[stem]]\nurl = \"https://stems.example.com/b.wav\"\n"
    )
}

/// The counts object of `status --json`: finished, failed, timeout, error, pending.
fn counts(value: &serde_json::Value) -> [u64; 5] {
    ["finished", "failed", "timeout", "error", "pending"].map(|s| {
        value[s]
            .as_u64()
            .unwrap_or_else(|| panic!("no {s} in {value}"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_the_key_is_read_from_the_file_that_key_file_names() {
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = write_manifest(&two_stems_one_failing());
    let key = format!("{}\n", sim.key());

    let private = write_key_file(dir.path(), "private-key", &key, 0o600);
    let output = run_with_key_file(&sim, &manifest, &dir.path().join("out1"), &private).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(sim.stats().tasks_created, 3, "{}", stderr(&output));
    assert!(
        !stderr(&output).contains("readable by"),
        "{}",
        stderr(&output)
    );

    let open = write_key_file(dir.path(), "open-key", &key, 0o644);
    let output = run_with_key_file(&sim, &manifest, &dir.path().join("out2"), &open).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(sim.stats().tasks_created, 6, "{}", stderr(&output));
    let warning = stderr(&output)
        .lines()
        .find(|l| l.contains("readable by group or others"))
        .map(str::to_owned);
    let warning = warning.unwrap_or_else(|| panic!("no warning: {}", stderr(&output)));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains(path_str(&open)), "{warning}");
    assert!(warning.contains("chmod 600"), "{warning}");
    let key = sim.key().as_bytes();
    assert!(!contains_bytes(&output.stdout, key) && !contains_bytes(&output.stderr, key));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_a_missing_or_empty_key_file_is_exit_2_naming_it() {
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = write_manifest(&two_stems_one_failing());
    let out = dir.path().join("out");
    let missing = dir.path().join("no-such-key");
    let output = run_with_key_file(&sim, &manifest, &out, &missing).await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains(path_str(&missing)), "{text}");
    assert!(text.contains("VIDGO_API_KEY_FILE"), "{text}");
    assert!(text.contains("does not exist"), "{text}");

    let empty = write_key_file(dir.path(), "empty-key", " \n", 0o600);
    let output = run_with_key_file(&sim, &manifest, &out, &empty).await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains(path_str(&empty)), "{text}");
    assert!(text.contains("is empty"), "{text}");
    assert_eq!(sim.stats().submit_calls, 0);
    assert!(!out.exists(), "nothing was written: {}", out.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_no_readme_doc_or_example_puts_a_key_inline() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    files.extend(files_below(&root.join("docs")));
    files.extend(files_below(&root.join("examples")));
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        assert!(
            !contains_bytes(&bytes, b"VIDGO_API_KEY="),
            "{} puts a key inline (hint: use VIDGO_API_KEY_FILE)",
            file.display()
        );
    }
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains("VIDGO_API_KEY_FILE="),
        "the README shows the key file"
    );
}

/// Every subcommand clap knows; the test fails on a list that lost one of SPEC.md's.
fn subcommands() -> Vec<String> {
    use clap::CommandFactory;
    let names: Vec<String> = stembatch::cli::Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect();
    for expected in [
        "run",
        "validate",
        "plan",
        "status",
        "simulator",
        "completions",
        "man",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected}: {names:?}");
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_completions_and_the_man_page_name_every_subcommand() {
    let names = subcommands();
    // How each shell's script names a subcommand.
    let pattern = |shell: &str, name: &str| match shell {
        "bash" => format!("stembatch,{name})"),
        "zsh" => format!("'{name}:"),
        _ => format!("-a \"{name}\""),
    };
    for shell in ["bash", "zsh", "fish"] {
        let output = stembatch(&["completions", shell], None).await;
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let script = String::from_utf8(output.stdout).unwrap();
        assert!(script.len() > 500, "{shell}: {script}");
        for name in &names {
            assert!(
                script.contains(&pattern(shell, name)),
                "{shell} lacks {name}"
            );
        }
    }
    let output = stembatch(&["completions", "tcsh"], None).await;
    assert_eq!(
        output.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );

    let output = stembatch(&["man"], None).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let page = String::from_utf8(output.stdout).unwrap();
    assert!(page.contains(".TH stembatch 1"), "{page}");
    for name in &names {
        assert!(
            page.contains(&format!("stembatch\\-{name}(1)")),
            "man lacks {name}"
        );
    }
    assert!(page.contains(".SH \"EXIT STATUS\""), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_the_version_names_the_commit_when_git_knows_it() {
    let output = stembatch(&["--version"], None).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = String::from_utf8(output.stdout).unwrap();
    let version = text.trim_end();
    let expected = format!("stembatch {}", env!("CARGO_PKG_VERSION"));
    let root = env!("CARGO_MANIFEST_DIR");
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8(o.stdout).unwrap().trim().to_owned());
    match commit {
        Some(commit) => assert_eq!(version, format!("{expected} ({commit})")),
        None => assert_eq!(version, expected),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_status_json_counts_by_stem_from_results_csv() {
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = write_manifest(&two_stems_one_failing());
    let out = dir.path().join("out");
    let output = run_against(&sim, &manifest, &out).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let status = status_json(&out).await;
    assert_eq!(status["source"], "csv", "{status}");
    assert!(status["locked_by"].is_null(), "{status}");
    assert_eq!(counts(&status["total"]), [2, 1, 0, 0, 0], "{status}");
    assert_eq!(counts(&status["by_stem"]["a"]), [1, 1, 0, 0, 0], "{status}");
    assert_eq!(counts(&status["by_stem"]["b"]), [1, 0, 0, 0, 0], "{status}");
    assert_eq!(status["by_stem"].as_object().unwrap().len(), 2, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_status_reads_the_journal_when_results_csv_is_older_or_missing() {
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = write_manifest(&two_stems_one_failing());
    let out = dir.path().join("out");
    let output = run_against(&sim, &manifest, &out).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));

    // A results.csv from before the journal's last record: every variant still pending,
    // no track checked yet.
    let (header, rows) = read_results(&out);
    let csv_path = out.join("results.csv");
    let mut writer = csv::Writer::from_path(&csv_path).unwrap();
    writer.write_record(&header).unwrap();
    for row in &rows {
        let fields = header.iter().map(|h| match h.as_str() {
            "status" => "pending",
            "qc" => "",
            _ => row[h].as_str(),
        });
        writer.write_record(fields).unwrap();
    }
    writer.flush().unwrap();
    drop(writer);
    let journal = std::fs::metadata(out.join(".stembatch/journal.jsonl")).unwrap();
    let earlier = journal.modified().unwrap() - std::time::Duration::from_secs(3600);
    let file = std::fs::File::options()
        .write(true)
        .open(&csv_path)
        .unwrap();
    file.set_modified(earlier).unwrap();
    drop(file);
    let status = status_json(&out).await;
    assert_eq!(status["source"], "journal", "{status}");
    assert_eq!(counts(&status["total"]), [2, 1, 0, 0, 0], "{status}");
    assert_eq!(counts(&status["by_stem"]["a"]), [1, 1, 0, 0, 0], "{status}");
    assert_eq!(counts(&status["by_stem"]["b"]), [1, 0, 0, 0, 0], "{status}");
    // Issue 18: the tracks' verdicts come from the journal too.
    let tracks_ok = |status: &serde_json::Value| {
        let t = &status["tracks"];
        (
            t["total"].as_u64(),
            t["qc"]["ok"].as_u64(),
            t["qc"]["unchecked"].as_u64(),
        )
    };
    assert_eq!(tracks_ok(&status), (Some(4), Some(4), Some(0)), "{status}");

    // Without a CSV, stems come from the tracks' folders: the failed variant has none,
    // so it counts in the total only.
    std::fs::remove_file(&csv_path).unwrap();
    let status = status_json(&out).await;
    assert_eq!(status["source"], "journal", "{status}");
    assert_eq!(counts(&status["total"]), [2, 1, 0, 0, 0], "{status}");
    assert_eq!(counts(&status["by_stem"]["a"]), [1, 0, 0, 0, 0], "{status}");
    assert_eq!(counts(&status["by_stem"]["b"]), [1, 0, 0, 0, 0], "{status}");
    assert_eq!(tracks_ok(&status), (Some(4), Some(4), Some(0)), "{status}");
    let output = stembatch(&["status", path_str(&out)], None).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = String::from_utf8(output.stdout).unwrap();
    let unknown: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("(unknown)"))
        .unwrap_or_else(|| panic!("{text}"))
        .split_whitespace()
        .collect();
    assert_eq!(unknown, ["(unknown)", "0", "1", "0", "0", "0"], "{text}");
    assert!(text.contains("read from the journal"), "{text}");
    assert!(text.lines().any(|l| l == "4 tracks: 4 ok"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_status_names_the_run_that_holds_the_folder() {
    let sim = start_sim(SimConfig {
        task_duration: std::time::Duration::from_secs(60),
        ..quick_sim()
    })
    .await;
    let (dir, manifest) = write_manifest(&variants_manifest(FAST_RUN, 2));
    let out = dir.path().join("out");
    let mut child = run_command(&sim, &manifest, &out, &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id().expect("the run is going");
    let lock = out.join(".stembatch/lock");
    wait_until("the run's lock", || {
        std::fs::read_to_string(&lock).is_ok_and(|t| !t.is_empty())
    })
    .await;
    let started = chrono::Utc::now();
    let status = status_json(&out).await;
    child.kill().await.unwrap();
    assert_eq!(status["locked_by"]["pid"], pid, "{status}");
    let since: chrono::DateTime<chrono::Utc> = status["locked_by"]["since"]
        .as_str()
        .unwrap_or_else(|| panic!("{status}"))
        .parse()
        .unwrap();
    assert!(since <= started, "{since} {started}");
    assert!(
        started - since < chrono::Duration::seconds(30),
        "{since} {started}"
    );

    let status = status_json(&out).await;
    assert!(
        status["locked_by"].is_null(),
        "released when it died: {status}"
    );
}

/// A systemd unit file as (section, key, value) triples, in order; every line that is
/// not blank, a comment or a `[section]` must be `key=value` inside a section.
fn unit_entries(path: &std::path::Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut section: Option<String> = None;
    let mut entries = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.to_owned());
            continue;
        }
        let where_ = format!("{}:{}", path.display(), number + 1);
        let section = section
            .clone()
            .unwrap_or_else(|| panic!("{where_}: outside a section"));
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{where_}: not key=value: {line}"));
        assert!(
            !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric()),
            "{where_}: bad key {key:?}"
        );
        entries.push((section, key.to_owned(), value.trim().to_owned()));
    }
    entries
}

/// The values of `key` in `section`.
fn unit_values<'a>(
    entries: &'a [(String, String, String)],
    section: &str,
    key: &str,
) -> Vec<&'a str> {
    entries
        .iter()
        .filter(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_the_systemd_units_run_nightly_with_the_key_as_a_credential() {
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/systemd");
    let service = unit_entries(&folder.join("stembatch.service"));
    let one = |section: &str, key: &str| -> String {
        let values = unit_values(&service, section, key);
        assert_eq!(values.len(), 1, "[{section}] {key}: {values:?}");
        values[0].to_owned()
    };
    assert_eq!(one("Service", "Type"), "oneshot");
    assert_eq!(
        one("Service", "LoadCredential"),
        "vidgo-api-key:/etc/stembatch/api-key"
    );
    assert!(unit_values(&service, "Service", "Environment")
        .contains(&"VIDGO_API_KEY_FILE=%d/vidgo-api-key"));
    assert_eq!(one("Service", "KillSignal"), "SIGTERM");
    let stop = humantime::parse_duration(&one("Service", "TimeoutStopSec")).unwrap();
    assert!(
        stop > stembatch::api::client::REQUEST_TIMEOUT,
        "TimeoutStopSec {stop:?} must outlast the HTTP timeout"
    );
    assert_eq!(one("Service", "Nice"), "10");
    assert!(["idle", "best-effort"].contains(&one("Service", "IOSchedulingClass").as_str()));
    let exec = one("Service", "ExecStart");
    assert!(exec.contains("stembatch run "), "{exec}");
    assert!(
        service
            .iter()
            .all(|(_, _, v)| !v.contains("VIDGO_API_KEY=")),
        "no key inline"
    );

    let timer = unit_entries(&folder.join("stembatch.timer"));
    assert_eq!(unit_values(&timer, "Timer", "Persistent"), ["true"]);
    assert_eq!(unit_values(&timer, "Timer", "OnCalendar").len(), 1);
    assert_eq!(unit_values(&timer, "Timer", "Unit"), ["stembatch.service"]);
    assert_eq!(
        unit_values(&timer, "Install", "WantedBy"),
        ["timers.target"]
    );

    verify_with_systemd(&folder).await;
}

/// `systemd-analyze verify` on copies of the units whose ExecStart is this build's
/// binary (it checks that the command exists); skipped, with a note, without systemd.
async fn verify_with_systemd(folder: &std::path::Path) {
    let Ok(found) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("note: systemd-analyze is not installed; the unit files were only parsed");
        return;
    };
    assert!(found.status.success());
    let copies = tempfile::tempdir().unwrap();
    for name in ["stembatch.service", "stembatch.timer"] {
        let text = std::fs::read_to_string(folder.join(name)).unwrap();
        let text = text.replace("/usr/local/bin/stembatch", env!("CARGO_BIN_EXE_stembatch"));
        std::fs::write(copies.path().join(name), text).unwrap();
    }
    // --man=no: the man page of Documentation= is not installed on a build machine.
    let output = tokio::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(copies.path().join("stembatch.service"))
        .arg(copies.path().join("stembatch.timer"))
        .output()
        .await
        .unwrap();
    // verify exits 0 on a value it ignores, but says so on stderr.
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "systemd-analyze verify: {}",
        stderr(&output)
    );
}
