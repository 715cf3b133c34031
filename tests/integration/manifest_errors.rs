//! Every validation rule of SPEC.md: exit 2, a message naming the file, the line and the
//! field, and not one request sent.

use crate::helpers::*;

const STEM: &str = "[[stem]]\nurl = \"https://stems.example.com/a.wav\"\n";
const DEFAULTS: &str =
    "[defaults]\ntitle = \"{stem} {variant}\"\ntags = \"pop\"\nnegative_tags = \"\"\n";

/// (manifest text, the line, the field, a fragment of the message)
fn cases() -> Vec<(String, usize, &'static str, &'static str)> {
    vec![
        (
            format!("[defaults]\ntitle = \"t\"\ntags = \"pop\"\n{STEM}"),
            4,
            "stem[1].negative_tags",
            "negative_tags is required",
        ),
        (
            format!("{DEFAULTS}{STEM}style_weight = 1.2\n"),
            7,
            "stem[1].style_weight",
            "outside 0..1",
        ),
        (
            format!("{DEFAULTS}{STEM}weirdness_constraint = 0.333\n"),
            7,
            "stem[1].weirdness_constraint",
            "more than 2 decimals",
        ),
        (
            format!("{DEFAULTS}{STEM}model = \"V9\"\n"),
            7,
            "stem[1].model",
            "unknown model",
        ),
        (
            format!("{DEFAULTS}{STEM}vocal_gender = \"x\"\n"),
            7,
            "stem[1].vocal_gender",
            "unknown vocal gender",
        ),
        (
            format!(
                "{DEFAULTS}{STEM}[[stem.variant]]\nname = \"v\"\ntitle = \"{}\"\n",
                "y".repeat(101)
            ),
            9,
            "stem[1].variant[1].title",
            "more than the provider's 100",
        ),
        (
            format!(
                "{DEFAULTS}{STEM}[[stem.variant]]\nname = \"v\"\n[[stem.variant]]\nname = \"v\"\n"
            ),
            10,
            "stem[1].variant[2].name",
            "two variants named \"v\"",
        ),
        (
            format!("{DEFAULTS}{STEM}colour = \"red\"\n"),
            7,
            "stem[1].colour",
            "unknown key (the keys here are:",
        ),
        (
            format!("{DEFAULTS}[[stem]]\npath = \"missing.wav\"\n"),
            6,
            "stem[1].path",
            "missing.wav: No such file",
        ),
        (
            format!("{DEFAULTS}[[stem]]\nglob = \"in/*.wav\"\n"),
            6,
            "stem[1].glob",
            "matches no file",
        ),
        (
            format!("{DEFAULTS}style_weight = \"0.5\"\n{STEM}"),
            5,
            "defaults.style_weight",
            "expected a number, found a string (\"0.5\")",
        ),
        (
            format!("{DEFAULTS}[run]\nmax_new_submits = 0\n{STEM}"),
            6,
            "run.max_new_submits",
            "must be at least 1, not 0",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rule_exits_2_names_line_and_field_and_sends_nothing() {
    let sim = start_sim(quick_sim()).await;
    for (text, line, field, fragment) in cases() {
        let (dir, manifest) = write_manifest(&text);
        let out = dir.path().join("out");
        let output = run_against(&sim, &manifest, &out).await;
        let err = stderr(&output);
        assert_eq!(
            output.status.code(),
            Some(2),
            "manifest:\n{text}\nstderr: {err}"
        );
        let located = format!("{}:{line}: {field}: ", manifest.display());
        assert!(
            err.lines()
                .any(|l| l.contains(&located) && l.contains(fragment)),
            "manifest:\n{text}\nexpected a line with {located:?} and {fragment:?}, got:\n{err}"
        );
        assert!(!out.exists(), "no output folder for an invalid manifest");

        let output = stembatch(&["validate", path_str(&manifest)], None).await;
        assert_eq!(output.status.code(), Some(2));
        assert!(stderr(&output).contains(&located));
    }
    let stats = sim.stats();
    assert_eq!(
        (stats.submit_calls, stats.detail_calls, stats.download_calls),
        (0, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_problem_is_reported_in_one_go() {
    let text = format!("{DEFAULTS}{STEM}style_weight = 7.0\nmodel = \"V1\"\n{STEM}name = \"b\"\nvocal_gender = \"q\"\n");
    let (_dir, manifest) = write_manifest(&text);
    let output = stembatch(&["validate", path_str(&manifest)], None).await;
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(err.contains("has 3 problems"), "{err}");
    for field in [
        "7: stem[1].style_weight",
        "8: stem[1].model",
        "12: stem[2].vocal_gender",
    ] {
        assert!(err.contains(field), "{field} missing from:\n{err}");
    }
}

/// A `[stem.matrix]` of `tags` tags times `negative` negative tags, in three lines.
fn matrix(tags: usize, negative: usize) -> String {
    let list = |n: usize, prefix: &str| {
        (0..n)
            .map(|i| format!("\"{prefix}{i}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "[stem.matrix]\ntags = [{}]\nnegative_tags = [{}]\n",
        list(tags, "t"),
        list(negative, "n")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_past_a_million_variants_exits_2_at_once_with_its_count() {
    // 20 stems of five lines, 101,000 combinations each: the tenth (line 50) crosses the cap.
    let twenty: String = (1..=20)
        .map(|k| {
            format!(
                "[[stem]]\nurl = \"https://stems.example.com/s{k}.wav\"\n{}",
                matrix(101, 1000)
            )
        })
        .collect();
    let cases = [
        (
            format!("{DEFAULTS}{twenty}"),
            "manifest.toml:50: stem[10]: the manifest expands to 2020000 variants, more than the 1000000 allowed",
        ),
        (
            format!("{DEFAULTS}{STEM}takes = 1000\n{}", matrix(1000, 1000)),
            "manifest.toml:5: stem[1]: the manifest expands to 1000000000 variants, more than the 1000000 allowed",
        ),
    ];
    for (text, expected) in cases {
        let (_dir, manifest) = write_manifest(&text);
        let started = std::time::Instant::now();
        let output = stembatch(&["validate", path_str(&manifest)], None).await;
        let elapsed = started.elapsed();
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "stderr: {err}");
        assert!(err.contains(expected), "expected {expected:?} in:\n{err}");
        assert!(
            elapsed < std::time::Duration::from_secs(5),
            "validate took {elapsed:?}"
        );
    }
}
