//! The commands that send nothing, and what `run` refuses before sending anything.

use crate::helpers::*;

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
