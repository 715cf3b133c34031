//! `upload.mode = "s3"` against a real S3 server (s3s-fs, [`super::s3_server`]): stems stored
//! once by content, found again by later runs, presigned URLs the simulator fetches as
//! the provider does, refused credentials, and secrets that never show.

use std::path::Path;
use std::process::Output;

use super::helpers::*;
use super::s3_server::{self, S3Server};
use stembatch::sim::{SimConfig, SimHandle};

/// A quick run's head whose tasks time out soon: `url_expiry` may then be short.
const SHORT_TASKS: &str = r#"
[run]
concurrency = 1
submit_rate = "1/s"
poll_rate = "12000/min"
poll_interval = "100ms"
poll_interval_max = "200ms"
task_timeout = "3s"

[defaults]
title = "{stem} {variant}"
tags = "piano"
negative_tags = ""
"#;

/// `run` against `sim` with the bucket's credentials (`secret` given, or the server's).
async fn run_s3(
    sim: &SimHandle,
    s3: &S3Server,
    secret: Option<&str>,
    manifest: &Path,
    out: &Path,
) -> Output {
    let mut command = run_command(sim, manifest, out, &[]);
    command
        .env("AWS_ACCESS_KEY_ID", &s3.key_id)
        .env("AWS_SECRET_ACCESS_KEY", secret.unwrap_or(&s3.secret))
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_REGION");
    tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .expect("stembatch finished in time")
        .expect("stembatch ran")
}

/// A manifest with `text` beside a.wav, one second of 440 Hz, which its stems name.
fn manifest_with_a_wav(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, manifest) = write_manifest(text);
    write_wav(&dir.path().join("a.wav"), 1.0, 440.0);
    (dir, manifest)
}

fn key_of(file: &Path) -> String {
    format!("stembatch/{}.wav", sha256_of(file))
}

/// Asserts that no file below `dir` and no text of `outputs` holds `secret`.
fn assert_nowhere(secret: &str, dir: &Path, outputs: &[&Output]) {
    for file in files_below(dir) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !contains_bytes(&bytes, secret.as_bytes()),
            "{} holds a credential",
            file.display()
        );
    }
    for output in outputs {
        assert!(
            !contains_bytes(&output.stderr, secret.as_bytes()),
            "stderr holds a credential"
        );
        assert!(
            !contains_bytes(&output.stdout, secret.as_bytes()),
            "stdout holds a credential"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stem_is_uploaded_once_across_runs_and_names_and_no_credential_shows() {
    let Some(s3) = s3_server::start().await else {
        return;
    };
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = manifest_with_a_wav(&format!(
        "{FAST_RUN}\n[[stem]]\npath = \"a.wav\"\n[[stem]]\npath = \"b.wav\"\n{}",
        s3.upload_section("stembatch/")
    ));
    std::fs::copy(dir.path().join("a.wav"), dir.path().join("b.wav")).unwrap();
    let key = key_of(&dir.path().join("a.wav"));

    let first_out = dir.path().join("night1");
    let first = run_s3(&sim, &s3, None, &manifest, &first_out).await;
    let said = stderr(&first);
    assert_eq!(first.status.code(), Some(0), "{said}");
    assert!(
        said.contains("stems: 1 to upload, 0 already in the bucket"),
        "{said}"
    );
    assert_eq!(said.matches("uploaded to the bucket").count(), 1, "{said}");
    assert!(
        s3.bucket().contains(&key).await.unwrap(),
        "{key} is in the bucket"
    );
    // The provider (the simulator) fetched each submit's URL, and each served the file.
    let stats = sim.stats();
    assert_eq!(
        (
            stats.tasks_created,
            stats.stem_fetches,
            stats.stem_fetch_failures
        ),
        (2, 2, 0)
    );
    for submit in sim.submissions() {
        let url = &submit.request.input.upload_url;
        assert!(
            url.starts_with(&format!("{}/stems/{key}?", s3.endpoint)),
            "{url}"
        );
        assert!(url.contains("X-Amz-Signature="), "{url}");
    }

    // Another night, another folder (or host): the file is found, not sent again.
    let second_out = dir.path().join("night2");
    let second = run_s3(&sim, &s3, None, &manifest, &second_out).await;
    let said = stderr(&second);
    assert_eq!(second.status.code(), Some(0), "{said}");
    assert!(
        said.contains("stems: 0 to upload, 1 already in the bucket"),
        "{said}"
    );
    assert!(!said.contains("uploading to the bucket"), "{said}");
    assert_eq!(sim.stats().stem_fetch_failures, 0);

    for secret in [&s3.secret, &s3.key_id] {
        assert_nowhere(secret, &first_out, &[&first, &second]);
        assert_nowhere(secret, &second_out, &[]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_file_is_uploaded_anew() {
    let Some(s3) = s3_server::start().await else {
        return;
    };
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = write_manifest(&format!(
        "{FAST_RUN}\n[[stem]]\npath = \"a.wav\"\n{}",
        s3.upload_section("stembatch/")
    ));
    let stem = dir.path().join("a.wav");
    let out = dir.path().join("out");
    write_wav(&stem, 1.0, 440.0);
    let before = key_of(&stem);
    let first = run_s3(&sim, &s3, None, &manifest, &out).await;
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));

    write_wav(&stem, 1.0, 330.0);
    let after = key_of(&stem);
    assert_ne!(before, after);
    let second = run_s3(&sim, &s3, None, &manifest, &out).await;
    let said = stderr(&second);
    assert_eq!(second.status.code(), Some(0), "{said}");
    assert!(
        said.contains("stems: 1 to upload, 0 already in the bucket"),
        "{said}"
    );
    let bucket = s3.bucket();
    assert!(bucket.contains(&before).await.unwrap());
    assert!(bucket.contains(&after).await.unwrap());
    assert_eq!(sim.stats().stem_fetch_failures, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resumed_run_trusts_its_journal_but_still_asks_the_bucket_once() {
    let Some(s3) = s3_server::start().await else {
        return;
    };
    let sim = start_sim(quick_sim()).await;
    let head = format!("{FAST_RUN}\n[[stem]]\npath = \"a.wav\"\n");
    let (dir, manifest) = write_manifest(&format!("{head}{}", s3.upload_section("stembatch/")));
    let stem = dir.path().join("a.wav");
    write_wav(&stem, 1.0, 440.0);
    let out = dir.path().join("out");
    let first = run_s3(&sim, &s3, None, &manifest, &out).await;
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));

    // The object goes (a lifecycle rule); the journal still vouches for it, but the one
    // HEAD every run makes finds it gone, and a new variant's run uploads it again.
    s3.remove(&key_of(&stem));
    let more = format!(
        "{head}[[stem.variant]]\nname = \"more\"\ntags = \"jazz\"\n{}",
        s3.upload_section("stembatch/")
    );
    std::fs::write(&manifest, more).unwrap();
    let second = run_s3(&sim, &s3, None, &manifest, &out).await;
    let said = stderr(&second);
    assert_eq!(second.status.code(), Some(0), "{said}");
    assert!(
        said.contains("stems: 1 to upload, 0 already in the bucket"),
        "{said}"
    );
    assert!(s3.bucket().contains(&key_of(&stem)).await.unwrap());
    assert_eq!(sim.stats().stem_fetch_failures, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn urls_that_would_expire_before_the_task_can_fetch_them_are_minted_again() {
    // URLs live 5 s, tasks may run 3 s, and the provider fetches the stem 2 s after the
    // submit: a URL is reused for a second at most. Five submits a second apart: one URL
    // for all of them would have expired when the last one was fetched, failing its task.
    let Some(s3) = s3_server::start().await else {
        return;
    };
    let sim = start_sim(SimConfig {
        stem_fetch_delay: std::time::Duration::from_secs(2),
        ..quick_sim()
    })
    .await;
    let (dir, manifest) = manifest_with_a_wav(&format!(
        "{SHORT_TASKS}\n[[stem]]\npath = \"a.wav\"\n[stem.matrix]\ntags = [\"a\", \"b\", \"c\", \"d\", \"e\"]\n{}url_expiry = \"5s\"\n",
        s3.upload_section("stembatch/")
    ));
    let out = dir.path().join("out");
    let run = run_s3(&sim, &s3, None, &manifest, &out).await;
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let urls: std::collections::HashSet<String> = sim
        .submissions()
        .into_iter()
        .map(|s| s.request.input.upload_url)
        .collect();
    assert_eq!(sim.stats().tasks_created, 5);
    assert!(urls.len() >= 3, "minted again: {urls:#?}");
    assert_eq!(
        (sim.stats().stem_fetches, sim.stats().stem_fetch_failures),
        (5, 0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_credentials_stop_the_run_before_any_submit() {
    let Some(s3) = s3_server::start().await else {
        return;
    };
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = manifest_with_a_wav(&format!(
        "{FAST_RUN}\n[[stem]]\npath = \"a.wav\"\n{}",
        s3.upload_section("stembatch/")
    ));
    let out = dir.path().join("out");
    let wrong = "wrong-secret-0123456789abcdefghijklmnopqr";
    let run = run_s3(&sim, &s3, Some(wrong), &manifest, &out).await;
    let said = stderr(&run);
    assert_eq!(run.status.code(), Some(3), "{said}");
    assert!(
        said.contains(
            "the bucket refused the credentials in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        ),
        "{said}"
    );
    assert_eq!(sim.stats().submit_calls, 0, "nothing submitted");
    let (_, rows) = read_results(&out);
    assert!(rows.iter().all(|r| r["status"] == "pending"), "{rows:#?}");
    assert_nowhere(wrong, &out, &[&run]);
    assert_nowhere(&s3.key_id, &out, &[&run]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_credential_is_a_usage_error_before_anything_is_sent() {
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = manifest_with_a_wav(&format!(
        "{FAST_RUN}\n[[stem]]\npath = \"a.wav\"\n[upload]\nmode = \"s3\"\nbucket = \"stems\"\nendpoint = \"http://127.0.0.1:9\"\n"
    ));
    let out = dir.path().join("out");
    let mut command = run_command(&sim, &manifest, &out, &[]);
    command
        .env("AWS_ACCESS_KEY_ID", "AKIAONLYTHEID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN");
    let run = command.output().await.unwrap();
    let said = stderr(&run);
    assert_eq!(run.status.code(), Some(2), "{said}");
    assert!(
        said.contains("AWS_SECRET_ACCESS_KEY is not set: nothing was sent"),
        "{said}"
    );
    assert!(!said.contains("AKIAONLYTHEID"), "{said}");
    assert_eq!(
        sim.stats(),
        Default::default(),
        "not even the balance was asked"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_stem_goes_up_in_parts_and_only_a_valid_presigned_url_serves_it() {
    let Some(s3) = s3_server::start().await else {
        return;
    };
    let bucket = s3.bucket();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.wav");
    let content: Vec<u8> = (0..stembatch::storage::PART_SIZE + 1_000_000)
        .map(|i| (i % 251) as u8)
        .collect();
    std::fs::write(&file, &content).unwrap();
    // A file that no longer has the content it was hashed with is not stored.
    let err = bucket
        .upload("big.wav", &file, &"0".repeat(64))
        .await
        .unwrap_err();
    assert!(err.message.contains("changed since it was read"), "{err}");
    assert!(!bucket.contains("big.wav").await.unwrap());
    bucket
        .upload("big.wav", &file, &sha256_of(&file))
        .await
        .unwrap();
    assert!(bucket.contains("big.wav").await.unwrap());
    assert!(!bucket.contains("other.wav").await.unwrap());
    let url = bucket
        .presign("big.wav", std::time::Duration::from_secs(3))
        .await
        .unwrap();
    let served = reqwest::get(&url).await.unwrap();
    assert!(served.status().is_success(), "{served:?}");
    assert_eq!(
        served.headers()["content-type"],
        "audio/wav",
        "typed by its extension"
    );
    assert!(
        served.bytes().await.unwrap() == content,
        "the parts make up the file"
    );

    // A forged signature, and (once its seconds are over) an expired URL: refused. The
    // URL is signed to the second, so one of 1 s could expire before its first use.
    let last = url.chars().last().unwrap();
    let forged = format!(
        "{}{}",
        &url[..url.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    assert_eq!(reqwest::get(&forged).await.unwrap().status(), 403, "forged");
    tokio::time::sleep(std::time::Duration::from_millis(4100)).await;
    let expired = reqwest::get(&url).await.unwrap();
    assert_eq!(expired.status(), 403, "expired");
    assert!(expired.text().await.unwrap().contains("expired"));

    // The wrong secret: the storage refuses, in its words, and the secret is not in them.
    let wrong = s3.bucket_with("not-the-secret-value-0123456789");
    let err = wrong
        .upload("other.wav", &file, &sha256_of(&file))
        .await
        .unwrap_err();
    assert!(err.refused_credentials(), "{err}");
    assert!(err.message.contains("SignatureDoesNotMatch"), "{err}");
    assert!(!err.message.contains("not-the-secret-value"), "{err}");
    assert!(!err.message.contains(&s3.key_id), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_simulator_fails_a_task_whose_upload_url_does_not_serve_the_stem() {
    let sim = start_sim(quick_sim()).await;
    // A loopback port nothing listens on: the provider cannot fetch the stem.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (dir, manifest) = write_manifest(&format!(
        "{FAST_RUN}\n[[stem]]\nurl = \"http://{closed}/gone.wav\"\n"
    ));
    let out = dir.path().join("out");
    let run = run_against(&sim, &manifest, &out).await;
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    let (_, rows) = read_results(&out);
    assert_eq!(rows[0]["status"], "failed");
    assert!(
        rows[0]["error"].contains("cannot fetch upload_url"),
        "{rows:#?}"
    );
    assert_eq!(sim.stats().stem_fetch_failures, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_bucket_is_retried_then_fails_the_variant_and_the_next_run_uploads() {
    let Some(mut s3) = s3_server::start().await else {
        return;
    };
    let sim = start_sim(quick_sim()).await;
    let head = FAST_RUN.replace("[run]", "[run]\nmax_attempts = 3");
    let (dir, manifest) = manifest_with_a_wav(&format!(
        "{head}\n[[stem]]\npath = \"a.wav\"\n{}",
        s3.upload_section("stembatch/")
    ));
    let out = dir.path().join("out");

    // The bucket goes away: every call to it meets a refused connection.
    s3.stop();
    let mut command = run_command(&sim, &manifest, &out, &[]);
    command
        .env("AWS_ACCESS_KEY_ID", &s3.key_id)
        .env("AWS_SECRET_ACCESS_KEY", &s3.secret)
        .env("STEMBATCH_LOG", "debug")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_REGION");
    let down = tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .expect("stembatch finished in time")
        .expect("stembatch ran");
    let said = stderr(&down);
    assert_eq!(down.status.code(), Some(1), "{said}");
    // The survey's HEAD and the upload's HEAD: each tried 3 times under the policy.
    assert!(said.matches("retrying").count() >= 4, "{said}");
    let (_, rows) = read_results(&out);
    assert_eq!(rows[0]["status"], "error", "{rows:#?}");
    assert_eq!(sim.stats().submit_calls, 0, "nothing submitted");

    // The bucket is back: the next run uploads by itself.
    s3.restart().await;
    let up = run_s3(&sim, &s3, None, &manifest, &out).await;
    let said = stderr(&up);
    assert_eq!(up.status.code(), Some(0), "{said}");
    assert!(said.contains("uploaded to the bucket"), "{said}");
    let (_, rows) = read_results(&out);
    assert_eq!(rows[0]["status"], "finished", "{rows:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_url_is_presigned_when_its_submit_slot_comes_not_before_the_wait() {
    // URLs live 5 s, tasks 3 s; four submits 2 s apart. The fourth waits 6 s for its
    // slot: a URL minted before that wait would have expired when the provider fetched it.
    let Some(s3) = s3_server::start().await else {
        return;
    };
    let sim = start_sim(quick_sim()).await;
    let head = SHORT_TASKS
        .replace("concurrency = 1", "concurrency = 4")
        .replace("submit_rate = \"1/s\"", "submit_rate = \"30/min\"");
    let (dir, manifest) = manifest_with_a_wav(&format!(
        "{head}\n[[stem]]\npath = \"a.wav\"\n[stem.matrix]\ntags = [\"a\", \"b\", \"c\", \"d\"]\n{}url_expiry = \"5s\"\n",
        s3.upload_section("stembatch/")
    ));
    let out = dir.path().join("out");
    let run = run_s3(&sim, &s3, None, &manifest, &out).await;
    let said = stderr(&run);
    assert_eq!(run.status.code(), Some(0), "{said}");
    assert_eq!(sim.stats().tasks_created, 4);
    assert_eq!(
        (sim.stats().stem_fetches, sim.stats().stem_fetch_failures),
        (4, 0),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_answering_400_to_a_head_stops_the_run_naming_the_token_and_region() {
    // What S3 answers a HEAD signed with an expired session token or for another region.
    let (endpoint, requests) = s3_server::answering(400).await;
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = manifest_with_a_wav(&format!(
        "{FAST_RUN}\n[[stem]]\npath = \"a.wav\"\n[upload]\nmode = \"s3\"\nbucket = \"stems\"\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\n"
    ));
    let out = dir.path().join("out");
    let mut command = run_command(&sim, &manifest, &out, &[]);
    command
        .env("AWS_ACCESS_KEY_ID", "AKIATESTEXPIRED")
        .env("AWS_SECRET_ACCESS_KEY", "secret-expired-0123456789")
        .env("AWS_SESSION_TOKEN", "token-expired-0123456789")
        .env_remove("AWS_REGION");
    let run = tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .expect("stembatch finished in time")
        .expect("stembatch ran");
    let said = stderr(&run);
    assert_eq!(run.status.code(), Some(3), "{said}");
    assert!(said.contains("HTTP 400 Bad Request"), "{said}");
    assert!(said.contains("AWS_SESSION_TOKEN"), "{said}");
    assert!(said.contains("upload.region"), "{said}");
    assert_eq!(sim.stats().submit_calls, 0, "nothing submitted");
    assert_eq!(
        requests.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "refused once: not retried"
    );
    assert!(!said.contains("token-expired-0123456789"), "{said}");
}

#[tokio::test(flavor = "multi_thread")]
async fn presigned_urls_never_outlive_temporary_credentials() {
    let Some(s3) = s3_server::start().await else {
        return;
    };
    let sim = start_sim(quick_sim()).await;
    let (dir, manifest) = manifest_with_a_wav(&format!(
        "{SHORT_TASKS}\n[[stem]]\npath = \"a.wav\"\n{}url_expiry = \"1h\"\n",
        s3.upload_section("stembatch/")
    ));
    let run_expiring = |seconds: i64, out: &'static str| {
        let expiration = chrono::Utc::now() + chrono::Duration::seconds(seconds);
        let mut command = run_command(&sim, &manifest, &dir.path().join(out), &[]);
        command
            .env("AWS_ACCESS_KEY_ID", &s3.key_id)
            .env("AWS_SECRET_ACCESS_KEY", &s3.secret)
            .env("AWS_CREDENTIAL_EXPIRATION", expiration.to_rfc3339())
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_REGION");
        async move {
            tokio::time::timeout(RUN_TIMEOUT, command.output())
                .await
                .expect("stembatch finished in time")
                .expect("stembatch ran")
        }
    };

    // Credentials good for a minute: URLs live a minute at most, not the hour asked.
    let run = run_expiring(60, "out1").await;
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let url = sim.submissions()[0].request.input.upload_url.clone();
    let expires: u64 = url
        .split("X-Amz-Expires=")
        .nth(1)
        .and_then(|rest| rest.split('&').next())
        .and_then(|n| n.parse().ok())
        .expect("X-Amz-Expires");
    assert!((50..=60).contains(&expires), "{url}");

    // Credentials that expire before a task could fetch its stem: nothing is submitted.
    let run = run_expiring(2, "out2").await;
    let said = stderr(&run);
    assert_eq!(run.status.code(), Some(3), "{said}");
    let (_, rows) = read_results(&dir.path().join("out2"));
    assert_eq!(rows[0]["status"], "pending", "{rows:#?}");
    let why = &rows[0]["error"];
    assert!(why.contains("temporary credentials expire"), "{why}");
    assert!(why.contains("AWS_CREDENTIAL_EXPIRATION"), "{why}");
    assert_eq!(sim.stats().submit_calls, 1, "only the first run's submit");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_trusted_from_the_journal_is_asked_for_before_its_first_url() {
    let Some(s3) = s3_server::start().await else {
        return;
    };
    let sim = start_sim(quick_sim()).await;
    let upload = s3.upload_section("stembatch/");
    let first = format!("{FAST_RUN}\n[[stem]]\npath = \"a.wav\"\n[[stem]]\npath = \"b.wav\"\n");
    let (dir, manifest) = manifest_with_a_wav(&format!("{first}{upload}"));
    write_wav(&dir.path().join("b.wav"), 1.0, 330.0);
    let out = dir.path().join("out");
    let run = run_s3(&sim, &s3, None, &manifest, &out).await;
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));

    // b's object goes; the journal vouches for both, and the run's one HEAD goes to a.
    s3.remove(&key_of(&dir.path().join("b.wav")));
    let more = format!(
        "{first}[[stem]]\nname = \"a2\"\npath = \"a.wav\"\n[[stem]]\nname = \"b2\"\npath = \"b.wav\"\n{upload}"
    );
    std::fs::write(&manifest, more).unwrap();
    let run = run_s3(&sim, &s3, None, &manifest, &out).await;
    let said = stderr(&run);
    assert_eq!(run.status.code(), Some(0), "{said}");
    assert_eq!(sim.stats().stem_fetch_failures, 0, "{said}");
    assert!(s3
        .bucket()
        .contains(&key_of(&dir.path().join("b.wav")))
        .await
        .unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_answering_503_is_tried_under_the_policy_then_fails_the_variant() {
    let (endpoint, requests) = s3_server::answering(503).await;
    let sim = start_sim(quick_sim()).await;
    let head = FAST_RUN.replace("[run]", "[run]\nmax_attempts = 3");
    let (dir, manifest) = manifest_with_a_wav(&format!(
        "{head}\n[[stem]]\npath = \"a.wav\"\n[upload]\nmode = \"s3\"\nbucket = \"stems\"\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\n"
    ));
    let out = dir.path().join("out");
    let mut command = run_command(&sim, &manifest, &out, &[]);
    command
        .env("AWS_ACCESS_KEY_ID", "AKIATESTSLOWDOWN")
        .env("AWS_SECRET_ACCESS_KEY", "secret-slowdown-0123456789")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_REGION");
    let run = tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .expect("stembatch finished in time")
        .expect("stembatch ran");
    let said = stderr(&run);
    assert_eq!(run.status.code(), Some(1), "{said}");
    // The survey's HEAD and the upload's HEAD, three tries each.
    assert_eq!(
        requests.load(std::sync::atomic::Ordering::SeqCst),
        6,
        "{said}"
    );
    let (_, rows) = read_results(&out);
    assert_eq!(rows[0]["status"], "error", "{rows:#?}");
    assert!(rows[0]["error"].contains("HTTP 503"), "{rows:#?}");
    assert_eq!(sim.stats().submit_calls, 0);
}
