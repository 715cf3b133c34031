//! Issue 9: the listening page, `DIR/report.html`, opened in a real browser (headless
//! Chromium) whose DOM holds the page's own self-check; and `stembatch report DIR`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::helpers::*;

/// Where a Chromium is, if any: `STEMBATCH_BROWSER`, else the usual names. Without one
/// the browser tests are skipped, except under CI (`CI` set), where they fail.
fn browser() -> Option<PathBuf> {
    let named = std::env::var_os("STEMBATCH_BROWSER").map(PathBuf::from);
    let found = named.into_iter().chain(
        [
            "/usr/bin/chromium",
            "/usr/bin/chromium-browser",
            "/usr/bin/google-chrome",
        ]
        .map(PathBuf::from),
    );
    let found = found.into_iter().find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but no Chromium was found: .ci/run installs Debian's chromium"
        );
        eprintln!(
            "skipped: no Chromium at /usr/bin/chromium (nor STEMBATCH_BROWSER), and CI is unset"
        );
    }
    found
}

/// Opens `page#selfcheck` headless and returns the self-check's `data-*` attributes and
/// how long the browser took.
async fn self_check(browser: &Path, page: &Path) -> (HashMap<String, String>, Duration) {
    let profile = tempfile::tempdir().unwrap();
    let url = format!(
        "file://{}#selfcheck",
        page.canonicalize().unwrap().display()
    );
    let started = Instant::now();
    let mut command = tokio::process::Command::new(browser);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(&url)
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the browser finished in time")
        .expect("the browser ran");
    let took = started.elapsed();
    let dom = String::from_utf8_lossy(&output.stdout);
    let at = dom
        .find("<div id=\"selfcheck\"")
        .unwrap_or_else(|| panic!("no #selfcheck in the DOM: {}", stderr(&output)));
    let tag = &dom[at..at + dom[at..].find('>').unwrap()];
    let text_end = dom[at..].find("</div>").unwrap();
    let text = &dom[at + tag.len() + 1..at + text_end];
    let mut attributes: HashMap<String, String> = tag
        .split(" data-")
        .skip(1)
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            Some((key.to_owned(), value.trim_matches('"').to_owned()))
        })
        .collect();
    attributes.insert("text".into(), text.to_owned());
    (attributes, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_the_page_of_a_run_passes_its_self_check_in_a_browser() {
    let sim = start_sim(quick_sim()).await;
    let manifest = variants_manifest(FAST_RUN, 5)
        .replace("tags = [\"piano 0\"", "tags = [\"sim:fail\", \"piano 0\"");
    let (dir, manifest) = write_manifest(&manifest);
    let out = dir.path().join("out");
    let output = run_against(&sim, &manifest, &out).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let page = out.join("report.html");
    let log = stderr(&output);
    assert_eq!(
        log.lines()
            .rev()
            .find(|l| l.contains("report: "))
            .map(|l| l.contains(&format!("report: {}", page.display()))),
        Some(true),
        "the run's last line says where the page is"
    );
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained: nothing fetched from anywhere, audio by relative paths.
    for external in ["src=\"http", "href=", "<link", "@import", "url(", "fetch("] {
        assert!(!html.contains(external), "the page holds {external}");
    }
    assert!(html.contains("<script type=\"application/json\" id=\"data\">"));
    assert!(
        html.contains("\"src\":\"audio/a/piano-1-1.wav\""),
        "relative audio"
    );
    assert!(
        html.contains(stembatch::sim::FAIL_MESSAGE),
        "the failure's message"
    );
    assert!(!out.read_dir().unwrap().any(|e| {
        let name = e.unwrap().file_name();
        name.to_string_lossy().starts_with(".report-")
    }));

    let Some(browser) = browser() else { return };
    let (check, took) = self_check(&browser, &page).await;
    eprintln!("self-check of a run's page: {check:?} in {took:?}");
    assert_eq!(check["ok"], "true", "{check:?}");
    assert_eq!(check["variants"], "6");
    assert_eq!(
        check["players"], "10",
        "2 tracks for each of 5 finished variants"
    );
    assert_eq!(check["playable"], "10");
    assert_eq!(check["filters"], "2");

    // A track that went missing is found by the same check.
    std::fs::remove_file(out.join("audio/a/piano-3-2.wav")).unwrap();
    let (check, _) = self_check(&browser, &page).await;
    assert_eq!(check["ok"], "false", "{check:?}");
    assert_eq!(check["missing"], "1", "{check:?}");
    assert!(check["text"].contains("piano-3-2.wav"), "{check:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_report_rewrites_the_page_from_results_csv_alone() {
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = write_manifest(&variants_manifest(FAST_RUN, 3));
    let out = dir.path().join("out");
    let output = run_against(&sim, &manifest, &out).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let page = out.join("report.html");
    let first = std::fs::read_to_string(&page).unwrap();
    std::fs::remove_file(&page).unwrap();
    std::fs::remove_file(&manifest).unwrap();
    drop(sim);

    let output = stembatch(&["report", path_str(&out)], None).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with(&format!(
            "report: {} (3 variants, 6 tracks, ",
            page.display()
        )),
        "{stdout}"
    );
    let again = std::fs::read_to_string(&page).unwrap();
    let data = |html: &str| html[html.find("id=\"data\"").unwrap()..].to_owned();
    assert_eq!(
        data(&first),
        data(&again),
        "the same data as the run's page"
    );

    let empty = tempfile::tempdir().unwrap();
    let output = stembatch(&["report", path_str(empty.path())], None).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("has no results.csv"),
        "{}",
        stderr(&output)
    );
    assert!(!empty.path().join("report.html").exists());
}

/// A results.csv of `count` variants over three stems, one WAV track each, with the QC
/// columns another branch adds at the end.
fn large_folder(dir: &Path, count: usize) {
    let mut writer = csv::Writer::from_path(dir.join("results.csv")).unwrap();
    let header = SPEC_HEADER.to_owned();
    writer.write_record(header.split(',')).unwrap();
    let styles = ["lofi, chill", "jazz, piano", "fast, drums", "slow, strings"];
    for i in 0..count {
        let stem = ["ballad", "hook", "verse"][i % 3];
        let variant = format!("v{i}");
        let file = format!("audio/{stem}/{variant}-1.wav");
        write_wav(&dir.join(&file), 0.25, 220.0 + i as f64);
        let (status, error, track, path) = match i % 50 {
            7 => ("failed", "content policy", "", ""),
            _ => ("finished", "", "1", file.as_str()),
        };
        let style_weight = format!("{}", (i % 10) as f64 / 10.0);
        let qc = if i % 97 == 0 { "silent" } else { "ok" };
        // Track columns are empty on a row without a track.
        let t = |value: &'static str| if path.is_empty() { "" } else { value };
        let id = format!("{i:016x}");
        let row = [
            stem,
            &variant,
            "1",
            &id,
            status,
            "task",
            track,
            t("audio"),
            "title",
            styles[i % 4],
            "",
            ["V4_5PLUS", "V5"][i % 2],
            "f",
            &style_weight,
            "",
            "0.5",
            t("0.25"),
            path,
            t("4044"),
            t("ff"),
            t("http://x/a.wav"),
            "",
            "",
            "1",
            error,
            t("0.25"),
            t("-6.0"),
            t("-14.0"),
            t(qc),
        ];
        writer.write_record(row).unwrap();
    }
    writer.flush().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_a_page_of_2000_variants_opens_and_filters_without_stalling() {
    let dir = tempfile::tempdir().unwrap();
    large_folder(dir.path(), 2000);
    let started = Instant::now();
    let output = stembatch(&["report", path_str(dir.path())], None).await;
    let wrote = started.elapsed();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let page = dir.path().join("report.html");
    let bytes = std::fs::metadata(&page).unwrap().len();
    eprintln!("2000 variants: report.html is {bytes} bytes, written in {wrote:?}");
    assert!(bytes < 2_000_000, "{bytes} bytes");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains("id=\"f-qc\""),
        "a qc filter, since the column is there"
    );

    let Some(browser) = browser() else { return };
    let (check, took) = self_check(&browser, &page).await;
    eprintln!("self-check of 2000 variants: {check:?} in {took:?}");
    assert_eq!(check["ok"], "true", "{check:?}");
    assert_eq!(check["variants"], "2000");
    assert_eq!(check["players"], "1960", "40 failed variants have no track");
    let ms = |key: &str| check[key].parse::<f64>().unwrap();
    // Opening renders only the first cards of each stem; a filter is over the data.
    assert!(ms("opened-ms") < 1500.0, "{check:?}");
    assert!(ms("filter-ms") < 1500.0, "{check:?}");
}
