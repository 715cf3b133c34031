//! Issue 17: a base URL that never worked costs seconds, not the night. Nothing listening,
//! or a web server that is not the API: the run stops within 20 s, exit 1, says once on
//! one line which URL it could not use, and quotes what answered on one line.

use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::helpers::*;

/// The most a run against an unusable URL may take.
const WITHIN: Duration = Duration::from_secs(20);

/// A loopback URL where nothing listens: a port bound, then let go.
fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// A web server that is not the API: every path a 404 HTML page, over several lines,
/// unless `balance` answers the balance as the API would. Counts the requests.
async fn web_server(balance: bool) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&hits);
    let page = "<!DOCTYPE html>\n<html>\n<head><title>404 Not Found</title></head>\n<body>\n<h1>Not Found</h1>\n<p>The requested URL was not found on this server.</p>\n</body>\n</html>\n";
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let counted = Arc::clone(&counted);
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            if balance && uri.path() == "/api/user/balance" {
                let body = r#"{"code":200,"msg":"success","data":{"credits_amount":100.0}}"#;
                return (
                    axum::http::StatusCode::OK,
                    [("content-type", "application/json")],
                    body.to_owned(),
                );
            }
            (
                axum::http::StatusCode::NOT_FOUND,
                [("content-type", "text/html")],
                page.to_owned(),
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), hits)
}

/// Four variants of a stem at a URL, or of two local files uploaded to the API.
fn manifest_text(local: bool) -> String {
    let stems = match local {
        true => "[[stem]]\nglob = \"stems/*.wav\"\n[stem.matrix]\ntags = [\"a\", \"b\"]\n",
        false => "[[stem]]\nurl = \"https://stems.example.com/a.wav\"\n[stem.matrix]\ntags = [\"a\", \"b\", \"c\", \"d\"]\n",
    };
    format!("{FAST_RUN}\n{stems}")
}

/// Runs the manifest against `url`; its output and how long it took.
async fn run_at(url: &str, local: bool) -> (Output, Duration, tempfile::TempDir) {
    let (dir, manifest) = write_manifest(&manifest_text(local));
    if local {
        write_wav(&dir.path().join("stems/alto.wav"), 0.25, 440.0);
        write_wav(&dir.path().join("stems/bass.wav"), 0.25, 110.0);
    }
    let out = dir.path().join("out");
    let started = Instant::now();
    let output = run_command_at(url, "test-key-0123456789", &manifest, &out, &[])
        .output()
        .await
        .unwrap();
    (output, started.elapsed(), dir)
}

/// Exit 1 within 20 s, and one line, once, naming the URL.
fn assert_told_once_on_one_line(url: &str, output: &Output, took: Duration) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(took < WITHIN, "took {took:?}:\n{err}");
    let naming: Vec<&str> = err.lines().filter(|l| l.contains(url)).collect();
    assert_eq!(naming.len(), 1, "one line names {url}:\n{err}");
    assert!(naming[0].contains("cannot be used"), "{}", naming[0]);
}

/// Every row of results.csv, each error on one line.
fn assert_rows_on_one_line(out: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let (_, rows) = read_results(out);
    for row in &rows {
        assert!(!row["error"].contains('\n'), "{row:?}");
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_with_local_stems_to_upload_stops_within_20_s() {
    let url = closed_port_url();
    let (output, took, dir) = run_at(&url, true).await;
    assert_told_once_on_one_line(&url, &output, took);
    let rows = assert_rows_on_one_line(&dir.path().join("out"));
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r["status"] == "pending"), "{rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_with_url_stems_stops_within_20_s() {
    let url = closed_port_url();
    let (output, took, dir) = run_at(&url, false).await;
    assert_told_once_on_one_line(&url, &output, took);
    let rows = assert_rows_on_one_line(&dir.path().join("out"));
    assert!(rows.iter().all(|r| r["status"] == "pending"), "{rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_server_answering_404_pages_stops_the_run_within_20_s_and_sends_nothing_more() {
    let (url, hits) = web_server(false).await;
    let (output, took, dir) = run_at(&url, true).await;
    assert_told_once_on_one_line(&url, &output, took);
    let err = stderr(&output);
    assert!(
        !err.lines().any(|l| l.trim_start().starts_with('<')),
        "the page is not quoted over lines:\n{err}"
    );
    assert!(
        err.contains("HTTP 404 from something that is not the API: <!DOCTYPE html> <html> <head>"),
        "{err}"
    );
    // Only the first call (the balance), asked a few times over a few seconds.
    let asked = hits.load(Ordering::SeqCst);
    assert!((1..=6).contains(&asked), "{asked} requests");
    let rows = assert_rows_on_one_line(&dir.path().join("out"));
    assert!(rows.iter().all(|r| r["status"] == "pending"), "{rows:?}");
}

/// Once the API answered (here its balance), a page on another path is the API's error,
/// quoted on one line in the log and in results.csv.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_page_after_the_api_answered_is_each_variants_error_on_one_line() {
    let (url, _) = web_server(true).await;
    let (output, _, dir) = run_at(&url, false).await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        !err.lines().any(|l| l.trim_start().starts_with('<')),
        "{err}"
    );
    let rows = assert_rows_on_one_line(&dir.path().join("out"));
    assert_eq!(rows.len(), 4);
    for row in &rows {
        assert_eq!(row["status"], "error", "{row:?}");
        assert!(
            row["error"]
                .contains("HTTP 404 from something that is not the API: <!DOCTYPE html> <html>"),
            "{row:?}"
        );
    }
}
