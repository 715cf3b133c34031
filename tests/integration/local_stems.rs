//! A folder of stems: glob and path stems, uploads with a cache, base_url mode, the
//! upload limit, and the audio checks.

use std::collections::HashSet;
use std::time::Duration;

use crate::helpers::*;
use stembatch::sim::SimConfig;

/// Fast runs whose uploads are paced fast too.
fn head() -> String {
    FAST_RUN.replace("[run]", "[run]\nupload_rate = \"600/min\"")
}

const TWO_VARIANTS: &str =
    "[[stem.variant]]\nname = \"one\"\n[[stem.variant]]\nname = \"two\"\ntags = \"strings\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_is_uploaded_once_per_distinct_file_and_not_again_on_a_rerun() {
    let sim = start_sim(quick_sim()).await;
    let text = format!(
        "{}\n[[stem]]\nglob = \"stems/*.wav\"\n{TWO_VARIANTS}",
        head()
    );
    let (dir, manifest) = write_manifest(&text);
    let stems = dir.path().join("stems");
    write_wav(&stems.join("alto.wav"), 1.5, 440.0);
    write_wav(&stems.join("bass.wav"), 0.75, 110.0);
    write_wav(&stems.join("tenor.wav"), 1.0, 220.0);
    std::fs::copy(stems.join("alto.wav"), stems.join("alto-copy.wav")).unwrap();
    let out = dir.path().join("out");

    let output = run_against(&sim, &manifest, &out).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let stats = sim.stats();
    assert_eq!(stats.uploads, 3, "one upload per distinct file: {stats:?}");
    assert_eq!(stats.tasks_created, 8);
    let uploaded: HashSet<String> = sim.upload_urls().into_iter().collect();
    let submissions = sim.submissions();
    for submission in &submissions {
        assert!(
            uploaded.contains(&submission.request.input.upload_url),
            "{:?}",
            submission.request.input.upload_url
        );
    }
    let url_of = |stem: &str| {
        let title = format!("{stem} one");
        submissions
            .iter()
            .find(|s| s.request.input.title == title)
            .unwrap()
            .request
            .input
            .upload_url
            .clone()
    };
    assert_eq!(
        url_of("alto"),
        url_of("alto-copy"),
        "the same content is uploaded once"
    );
    assert_ne!(url_of("alto"), url_of("bass"));
    let (_, rows) = read_results(&out);
    let bass = rows.iter().find(|r| r["stem"] == "bass").unwrap();
    assert_eq!(
        bass["duration_s"], "0.75",
        "the tracks follow the stem's length"
    );

    let output = run_against(&sim, &manifest, &out).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let again = sim.stats();
    assert_eq!(
        (again.upload_calls, again.submit_calls),
        (stats.upload_calls, stats.submit_calls),
        "a re-run uploads and submits nothing"
    );

    // An edited file makes new variants: they are submitted, after a new upload.
    write_wav(&stems.join("bass.wav"), 0.5, 98.0);
    let output = run_against(&sim, &manifest, &out).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let edited = sim.stats();
    assert_eq!((edited.uploads, edited.tasks_created), (4, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_near_its_expiry_is_uploaded_again_and_a_fresh_one_is_not() {
    for (ttl, uploads_after_rerun) in [
        (Duration::from_secs(3600), 2),
        (Duration::from_secs(72 * 3600), 1),
    ] {
        let sim = start_sim(SimConfig {
            upload_ttl: ttl,
            ..quick_sim()
        })
        .await;
        let one = format!(
            "{}\n[[stem]]\npath = \"stems/solo.wav\"\n[[stem.variant]]\nname = \"one\"\n",
            head()
        );
        let (dir, manifest) = write_manifest(&one);
        write_wav(&dir.path().join("stems/solo.wav"), 0.5, 330.0);
        let out = dir.path().join("out");
        assert_eq!(
            run_against(&sim, &manifest, &out).await.status.code(),
            Some(0)
        );
        assert_eq!(sim.stats().uploads, 1);

        // A new variant needs a submit, so the cached upload is looked at.
        std::fs::write(
            &manifest,
            format!("{one}[[stem.variant]]\nname = \"two\"\ntags = \"drums\"\n"),
        )
        .unwrap();
        let output = run_against(&sim, &manifest, &out).await;
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert_eq!(
            sim.stats().uploads,
            uploads_after_rerun,
            "upload ttl {ttl:?}"
        );
        assert_eq!(sim.stats().tasks_created, 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_url_mode_sends_public_urls_and_uploads_nothing() {
    let sim = start_sim(quick_sim()).await;
    let text = format!(
        "{}\n[upload]\nmode = \"base_url\"\npublic_base_url = \"https://cdn.example.com/pub/\"\n[[stem]]\npath = \"vocals/my song #1.wav\"\n",
        head()
    );
    let (dir, manifest) = write_manifest(&text);
    write_wav(&dir.path().join("vocals/my song #1.wav"), 0.5, 262.0);
    let out = dir.path().join("out");
    let output = run_against(&sim, &manifest, &out).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let submissions = sim.submissions();
    assert_eq!(submissions.len(), 1);
    assert_eq!(
        submissions[0].request.input.upload_url,
        "https://cdn.example.com/pub/vocals/my%20song%20%231.wav"
    );
    assert_eq!(sim.stats().upload_calls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_keep_to_the_limit() {
    // At the provider's documented 5/min, with a burst of 5 both sides allow: at once.
    // And at a faster limit configured on both sides, evenly spaced.
    for (client, burst, provider) in [("5/min", 5, "5/60s"), ("120/min", 1, "120/60s,3/1s")] {
        let sim = start_sim(SimConfig {
            upload_limits: limits(provider),
            ..quick_sim()
        })
        .await;
        let head = FAST_RUN.replace(
            "[run]",
            &format!("[run]\nupload_rate = \"{client}\"\nburst = {burst}"),
        );
        let (dir, manifest) =
            write_manifest(&format!("{head}\n[[stem]]\nglob = \"stems/*.wav\"\n"));
        for i in 0..5 {
            write_wav(
                &dir.path().join(format!("stems/s{i}.wav")),
                0.25,
                200.0 + 50.0 * f64::from(i),
            );
        }
        let out = dir.path().join("out");
        let output = run_against(&sim, &manifest, &out).await;
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let stats = sim.stats();
        assert_eq!(
            (stats.uploads, stats.rate_limited),
            (5, 0),
            "{client}: {stats:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_glob_skips_dot_files_and_its_files_that_cannot_be_sent_do_not_stop_the_night() {
    let text = format!("{}\n[[stem]]\nglob = \"stems/*\"\n{TWO_VARIANTS}", head());
    let (dir, manifest) = write_manifest(&text);
    let stems = dir.path().join("stems");
    write_wav(&stems.join("ballad.wav"), 0.25, 440.0);
    // What macOS leaves beside a copied file: never stems, whatever they hold.
    std::fs::write(stems.join("._ballad.wav"), b"\0\x05\x16\x07AppleDouble").unwrap();
    std::fs::write(stems.join(".DS_Store"), b"\0\0\0\x01Bud1").unwrap();
    write_wav(&stems.join(".hidden/verse.wav"), 0.25, 330.0);
    std::fs::write(stems.join("x.wav"), b"").unwrap();
    std::fs::write(stems.join("lyrics.wav"), "la la la, these are the words").unwrap();

    let output = stembatch(&["validate", path_str(&manifest)], None).await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{err}");
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.starts_with("6 variants (3 stems); "), "{text}");
    let stems = stems.display();
    for expected in [
        format!("warning: stem \"x\": {stems}/x.wav is empty; its 2 variants will end `error` without being submitted"),
        format!("warning: stem \"lyrics\": {stems}/lyrics.wav is not audio (expected WAV, MP3, FLAC, OGG or M4A/AAC); its 2 variants will end `error` without being submitted"),
    ] {
        assert!(err.lines().any(|l| l == expected), "{expected:?} missing from:\n{err}");
    }
    assert!(!err.contains("ballad"), "{err}");

    let output = stembatch(&["plan", path_str(&manifest), "--csv"], None).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let plan = String::from_utf8(output.stdout).unwrap();
    let stems_and_variants: Vec<_> = plan
        .lines()
        .skip(1)
        .map(|l| l.split(',').take(2).collect::<Vec<_>>().join("/"))
        .collect();
    assert_eq!(
        stems_and_variants,
        [
            "ballad/one",
            "ballad/two",
            "lyrics/one",
            "lyrics/two",
            "x/one",
            "x/two"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_counts_in_words_and_prints_paths_normalised() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("manifests/one.toml");
    std::fs::create_dir_all(manifest.parent().unwrap()).unwrap();
    write_wav(&dir.path().join("stems/solo.wav"), 0.25, 262.0);
    let one = format!("{}\n[[stem]]\npath = \"../stems/solo.wav\"\n", head());
    std::fs::write(&manifest, &one).unwrap();
    let dotted = format!("{}/manifests/./../manifests/one.toml", dir.path().display());
    let output = stembatch(&["validate", &dotted], None).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        format!(
            "1 variant (1 stem); manifest {} is valid\n",
            manifest.display()
        )
    );

    let output = stembatch(&["plan", path_str(&manifest), "--csv"], None).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let plan = String::from_utf8(output.stdout).unwrap();
    let source = format!(",{}/stems/solo.wav,", dir.path().display());
    assert!(plan.contains(&source), "{source:?} missing from:\n{plan}");

    std::fs::write(&manifest, one.replace("solo.wav", "gone.wav")).unwrap();
    let output = stembatch(&["validate", path_str(&manifest)], None).await;
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    let gone = format!(
        "one.toml:{}: stem[1].path: {}/stems/gone.wav: No such file",
        line_of(&one, "solo.wav"),
        dir.path().display()
    );
    assert!(err.contains(&gone), "{gone:?} missing from:\n{err}");
    assert!(!err.contains(".."), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_files_empty_files_and_clashing_names_are_manifest_errors() {
    let text = format!(
        "{}\n[[stem]]\npath = \"stems/gone.wav\"\n[[stem]]\npath = \"stems/empty.wav\"\n[[stem]]\nglob = \"a/*.wav\"\n[[stem]]\nglob = \"b/*.wav\"\n[[stem]]\npath = \"stems/lyrics.wav\"\n",
        head()
    );
    let (dir, manifest) = write_manifest(&text);
    std::fs::create_dir_all(dir.path().join("stems")).unwrap();
    std::fs::write(dir.path().join("stems/empty.wav"), b"").unwrap();
    std::fs::write(dir.path().join("stems/lyrics.wav"), "la la la").unwrap();
    write_wav(&dir.path().join("a/same.wav"), 0.25, 300.0);
    write_wav(&dir.path().join("b/same.wav"), 0.25, 310.0);
    let output = stembatch(&["validate", path_str(&manifest)], None).await;
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    let fourth_stem = text
        .lines()
        .enumerate()
        .filter(|(_, l)| *l == "[[stem]]")
        .nth(3)
        .unwrap()
        .0
        + 1;
    for expected in [
        format!(":{}: stem[1].path: ", line_of(&text, "gone.wav")),
        "gone.wav: No such file".to_owned(),
        format!(":{}: stem[2].path: ", line_of(&text, "empty.wav")),
        "empty.wav is empty".to_owned(),
        format!(":{}: stem[5].path: ", line_of(&text, "lyrics.wav")),
        "lyrics.wav is not audio".to_owned(),
        format!(":{fourth_stem}: stem[4].name: two stems are named \"same\""),
    ] {
        assert!(err.contains(&expected), "{expected:?} missing from:\n{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_credits_run_out_no_file_is_uploaded_for_a_submit_that_cannot_come() {
    let sim = start_sim(SimConfig {
        credits: Some(2),
        ..quick_sim()
    })
    .await;
    // Uploads at the provider's 5/min: each one after the first waits 12 s for its turn.
    let head = FAST_RUN.replace("concurrency = 8", "concurrency = 2");
    let (dir, manifest) = write_manifest(&format!(
        "{head}\n[[stem]]\nglob = \"stems/*.wav\"\n{TWO_VARIANTS}"
    ));
    for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
        write_wav(
            &dir.path().join(format!("stems/{name}.wav")),
            0.25,
            200.0 + 40.0 * i as f64,
        );
    }
    let out = dir.path().join("out");
    let started = std::time::Instant::now();
    let output = run_against(&sim, &manifest, &out).await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    // The 402 comes with the first submit of stem b, which needed b's upload (12 s).
    // After it, c and d are not uploaded: that would take 12 s more each.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let stats = sim.stats();
    assert_eq!((stats.tasks_created, stats.uploads), (2, 2), "{stats:?}");
    let (_, rows) = read_results(&out);
    assert_eq!(
        rows.iter().filter(|r| r["status"] == "finished").count(),
        4,
        "two variants, two tracks each"
    );
    assert_eq!(rows.iter().filter(|r| r["status"] == "pending").count(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readme_beside_the_stems_of_a_glob_is_skipped_with_one_warning() {
    let sim = start_sim(quick_sim()).await;
    let text = format!("{}\n[[stem]]\nglob = \"incoming/*\"\n", head());
    let (dir, manifest) = write_manifest(&text);
    let incoming = dir.path().join("incoming");
    write_wav(&incoming.join("alto.wav"), 0.25, 440.0);
    write_wav(&incoming.join("bass.wav"), 0.25, 110.0);
    std::fs::write(incoming.join("readme.txt"), "drop tonight's stems here").unwrap();
    let out = dir.path().join("out");

    let output = run_against(&sim, &manifest, &out).await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{err}");
    let warnings: Vec<_> = err.lines().filter(|l| l.contains("readme.txt")).collect();
    assert_eq!(warnings.len(), 1, "one warning line:\n{err}");
    assert!(warnings[0].contains("skipped"), "{}", warnings[0]);
    assert!(
        warnings[0].contains("manifest.toml:"),
        "names the manifest: {}",
        warnings[0]
    );
    assert!(
        warnings[0].contains("stem[1].glob"),
        "names the field: {}",
        warnings[0]
    );
    let (_, rows) = read_results(&out);
    let mut stems: Vec<_> = rows.iter().map(|r| r["stem"].as_str()).collect();
    stems.dedup();
    assert_eq!(stems, ["alto", "bass"], "no row for the readme");
    assert!(rows.iter().all(|r| r["status"] == "finished"), "{rows:?}");

    // validate says it once too, and counts only the stems.
    let output = stembatch(&["validate", path_str(&manifest)], None).await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.contains("readme.txt")).count(),
        1,
        "{err}"
    );
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.starts_with("2 variants (2 stems); "), "{text}");
}
