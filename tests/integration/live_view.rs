//! Issue 9: what a run shows on stderr. Off a terminal (cron, a pipe): plain lines, no
//! escape codes, one line per state change; in JSON every count is a number; `-q` says
//! errors only. On a terminal (through `script`, when it is there): the bars.

use crate::helpers::*;

/// Four variants, one of which the simulator fails.
fn manifest() -> String {
    format!(
        "{FAST_RUN}\n[[stem]]\nurl = \"https://stems.example.com/a.wav\"\n[stem.matrix]\ntags = [\"piano 0\", \"piano 1\", \"piano 2\", \"sim:fail\"]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_off_a_terminal_plain_lines_one_per_change_and_no_escape_codes() {
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = write_manifest(&manifest());
    let out = dir.path().join("out");
    let output = run_against(&sim, &manifest, &out).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let log = stderr(&output);
    assert!(
        !log.contains("\x1b["),
        "no escape codes off a terminal:\n{log}"
    );
    let (_, rows) = read_results(&out);
    let mut variants: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                format!("{}/{}", r["stem"], r["variant"]),
                r["status"].clone(),
            )
        })
        .collect();
    variants.dedup();
    assert_eq!(variants.len(), 4, "{rows:?}");
    for (label, status) in &variants {
        let ended = format!("{status} {label}: ");
        let lines = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
        assert_eq!(lines(&ended), 1, "one {ended:?} line:\n{log}");
        assert_eq!(lines(&format!("submitted {label}: task ")), 1, "{log}");
    }
    assert_eq!(
        variants.iter().filter(|(_, s)| s == "finished").count(),
        3,
        "{variants:?}"
    );
    assert!(log.contains("failed a/sim-fail: "), "{log}");
    assert!(log.contains("run ended after"), "{log}");
    assert!(log.contains("3 finished, 1 failed"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_json_lines_all_parse_and_every_count_is_a_number() {
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = write_manifest(&manifest());
    let out = dir.path().join("out");
    let output = run_command(&sim, &manifest, &out, &["--log-format", "json"])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let log = stderr(&output);
    assert!(!log.contains("\x1b["), "{log}");
    const COUNTS: [&str; 16] = [
        "variants",
        "finished",
        "failed",
        "timeout",
        "error",
        "pending",
        "tasks_created",
        "new",
        "new_tasks",
        "ended",
        "total",
        "tracks",
        "take",
        "elapsed_s",
        "changed",
        "keep",
    ];
    let mut ended = 0;
    for line in log.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let fields = value["fields"].as_object().expect("fields");
        for (key, field) in fields {
            if COUNTS.contains(&key.as_str()) && !(key == "error" && field.is_string()) {
                assert!(field.is_u64(), "{key} is not a number: {line}");
            }
            if key != "message" {
                let looks_counted = field.as_str().is_some_and(|s| {
                    let mut words = s.split(' ');
                    let first = words.next().unwrap_or("");
                    !first.is_empty()
                        && first.chars().all(|c| c.is_ascii_digit())
                        && words.next().is_some()
                });
                assert!(!looks_counted, "{key} holds a count as text: {line}");
            }
        }
        if fields.get("status").is_some() && fields.get("ended").is_some() {
            ended += 1;
            assert!(fields["total"] == 4, "{line}");
        }
    }
    assert_eq!(ended, 4, "one end line per variant:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_quiet_says_errors_only_and_verbose_says_the_waits() {
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = write_manifest(&variants_manifest(FAST_RUN, 2));
    let out = dir.path().join("out");
    let quiet = run_command(&sim, &manifest, &out, &["-q"])
        .output()
        .await
        .unwrap();
    assert_eq!(quiet.status.code(), Some(0), "{}", stderr(&quiet));
    assert_eq!(
        stderr(&quiet),
        "",
        "nothing but errors, and there were none"
    );

    // -v is global: accepted before the command too, and by the other commands.
    let head = FAST_RUN.replace("1200/min", "60/min");
    let (dir, manifest) = write_manifest(&variants_manifest(&head, 3));
    let out = dir.path().join("out");
    let verbose = stembatch(
        &[
            "-v",
            "run",
            path_str(&manifest),
            "--out",
            path_str(&out),
            "--base-url",
            &sim.url(),
        ],
        Some(&sim),
    )
    .await;
    assert_eq!(verbose.status.code(), Some(0), "{}", stderr(&verbose));
    let log = stderr(&verbose);
    assert!(log.contains("DEBUG"), "{log}");
    assert!(log.contains("for the submit rate limit"), "{log}");
    let validate = stembatch(&["validate", path_str(&manifest), "-q"], None).await;
    assert_eq!(validate.status.code(), Some(0), "{}", stderr(&validate));
}

/// On a terminal (a pseudo-terminal made by util-linux `script`): the bars appear, and
/// the run still ends well. Skipped where `script` is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_on_a_terminal_the_bars_show() {
    let has_script = std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_script {
        eprintln!("skipped: no util-linux script here");
        return;
    }
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = write_manifest(&manifest());
    let out = dir.path().join("out");
    let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let command = [
        env!("CARGO_BIN_EXE_stembatch"),
        "run",
        path_str(&manifest),
        "--out",
        path_str(&out),
        "--base-url",
        &sim.url(),
    ]
    .map(quote)
    .join(" ");
    let output = tokio::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("VIDGO_API_KEY", sim.key())
        .env("TERM", "xterm")
        .env_remove("VIDGO_BASE_URL")
        .env_remove("STEMBATCH_LOG")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let screen = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{screen}");
    assert!(
        screen.contains("\x1b["),
        "a terminal gets the bars:\n{screen}"
    );
    assert!(screen.contains("/4 ended"), "{screen}");
    assert!(screen.contains("tasks created"), "{screen}");
    assert!(screen.contains("failed a/sim-fail: "), "{screen}");
    assert!(screen.contains("run ended after"), "{screen}");
    assert!(
        !screen.contains("submitted a/"),
        "steps stay in the bars:\n{screen}"
    );
}
