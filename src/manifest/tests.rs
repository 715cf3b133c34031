//! Validation as tables of inline TOML and the exact problem they must produce.

use std::path::PathBuf;

use super::*;

const DEFAULTS: &str =
    "[defaults]\ntitle = \"{stem} {variant}\"\ntags = \"pop\"\nnegative_tags = \"\"\n";

fn parse_text(text: &str) -> Result<Manifest, ManifestError> {
    parse(Path::new("m.toml"), text)
}

fn problems_of(text: &str) -> Vec<String> {
    match parse_text(text) {
        Ok(_) => Vec::new(),
        Err(ManifestError::Invalid { problems, .. }) => {
            problems.iter().map(ToString::to_string).collect()
        }
        Err(other) => panic!("unexpected error {other}"),
    }
}

#[test]
fn every_rule_names_line_and_field() {
    let stem = "[[stem]]\nurl = \"https://x.com/a.mp3\"\n";
    let cases: &[(&str, &str)] = &[
        // A missing required parameter.
        (
            "[[stem]]\nurl = \"https://x.com/a.mp3\"\ntitle = \"t\"\nnegative_tags = \"\"\n",
            "1: stem[1].tags: tags is required and set neither here, in its stem nor in [defaults] (an empty string is allowed)",
        ),
        // Out of range and over-precise weights.
        (
            &format!("{DEFAULTS}{stem}style_weight = 1.5\n"),
            "7: stem[1].style_weight: 1.5 is outside 0..1",
        ),
        (
            &format!("{DEFAULTS}{stem}audio_weight = 0.555\n"),
            "7: stem[1].audio_weight: 0.555 has more than 2 decimals",
        ),
        // Unknown model and gender.
        (
            &format!("{DEFAULTS}{stem}model = \"V3\"\n"),
            "7: stem[1].model: unknown model \"V3\" (expected V4_5PLUS or V5)",
        ),
        (
            &format!("{DEFAULTS}{stem}vocal_gender = \"x\"\n"),
            "7: stem[1].vocal_gender: unknown vocal gender \"x\" (expected m or f)",
        ),
        // A title over 100 characters once resolved.
        (
            &format!("{DEFAULTS}{stem}title = \"{}\"\n", "x".repeat(101)),
            "7: stem[1].title: the title of stem \"a\" variant \"default\" is 101 characters, more than the provider's 100: \"",
        ),
        // Two variants of one stem with the same name.
        (
            &format!("{DEFAULTS}{stem}[[stem.variant]]\nname = \"v\"\n[[stem.variant]]\nname = \"v\"\ntags = \"x\"\n"),
            "10: stem[1].variant[2].name: stem \"a\" has two variants named \"v\" (the other is on line 8)",
        ),
        // An unknown key.
        (
            &format!("{DEFAULTS}{stem}stlye_weight = 0.5\n"),
            "7: stem[1].stlye_weight: unknown key (hint: did you mean `style_weight`?)",
        ),
        // A local file that is not there.
        (
            &format!("{DEFAULTS}[[stem]]\npath = \"missing.wav\"\n"),
            "6: stem[1].path: missing.wav: No such file or directory",
        ),
        (
            &format!("{DEFAULTS}[[stem]]\nglob = \"nowhere/*.wav\"\n"),
            "6: stem[1].glob: \"nowhere/*.wav\" matches no file",
        ),
        (
            &format!("{DEFAULTS}[[stem]]\nname = \"a\"\n"),
            "5: stem[1]: needs exactly one of url, path, glob",
        ),
        (
            &format!("{DEFAULTS}{stem}[stem.matrix]\ntags = []\n"),
            "8: stem[1].matrix.tags: a matrix list must not be empty",
        ),
        (
            &format!("{DEFAULTS}{stem}title = \"{{stem}} {{song}}\"\n"),
            "7: stem[1].title: unknown placeholder {song} (known: {stem} {variant} {take})",
        ),
        (
            &format!("{DEFAULTS}[run]\nsubmit_rate = \"fast\"\n{stem}"),
            "6: run.submit_rate: \"fast\" is not a rate",
        ),
        (
            &format!("{DEFAULTS}[run]\ntask_timeout = \"soon\"\n{stem}"),
            "6: run.task_timeout: \"soon\" is not a duration",
        ),
        (
            &format!("{DEFAULTS}[run]\nconcurrency = 0\n{stem}"),
            "6: run.concurrency: 0 is outside 1..100000",
        ),
        (
            &format!("{DEFAULTS}{stem}{stem}"),
            "7: stem[2].name: two stems are named \"a\" (the other is on line 5); set name to tell them apart",
        ),
        (
            &format!("{DEFAULTS}{stem}title = \"same\"\n[[stem.variant]]\nname = \"x\"\n[[stem.variant]]\nname = \"y\"\n"),
            "11: stem[1].variant[2]: variant \"y\" of stem \"a\" sends exactly what variant \"x\" of stem \"a\" sends",
        ),
        (
            &format!("{DEFAULTS}[[stem]]\nurl = \"ftp://x.com/a.mp3\"\n"),
            "6: stem[1].url: \"ftp://x.com/a.mp3\" must be an http:// or https:// URL",
        ),
        // The shared limit's Redis and this manifest's share of the key.
        (
            &format!("{DEFAULTS}{stem}[limits]\nredis_url = \"https://:pw@redis.example.com\"\n"),
            "8: limits.redis_url: \"https://:***@redis.example.com/\" has the scheme \"https\" (expected redis:// or unix://)",
        ),
        (
            &format!("{DEFAULTS}{stem}[limits]\nshare = \"2/2\"\n"),
            "8: limits.share: \"2/2\": the index 2 is not below the count 2 (indexes are 0-based)",
        ),
    ];
    for (text, expected) in cases {
        let problems = problems_of(text);
        assert!(
            problems.iter().any(|p| p.starts_with(expected)),
            "for manifest:\n{text}\nexpected a problem starting with\n  {expected}\ngot\n  {problems:#?}"
        );
    }
}

#[test]
fn all_problems_are_reported_at_once() {
    let text = format!(
        "{DEFAULTS}[[stem]]\nurl = \"https://x.com/a.mp3\"\nstyle_weight = 2.0\nmodel = \"V9\"\n[[stem]]\nurl = \"https://x.com/b.mp3\"\nvocal_gender = \"q\"\n"
    );
    let problems = problems_of(&text);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems[0].starts_with("7: stem[1].style_weight"));
    assert!(problems[1].starts_with("8: stem[1].model"));
    assert!(problems[2].starts_with("11: stem[2].vocal_gender"));
}

#[test]
fn the_error_names_the_file() {
    let err = parse_text("[[stem]]\nurl = 3\n").unwrap_err().to_string();
    assert!(
        err.starts_with("manifest m.toml has 1 problem:\n  m.toml:2: "),
        "{err}"
    );
}

#[test]
fn inheritance_matrix_variants_and_takes_expand_in_order() {
    let text = format!(
        "{DEFAULTS}style_weight = 0.5\nvocal_gender = \"f\"\n\
         [[stem]]\nurl = \"https://x.com/ballad.mp3\"\ntags = \"soft\"\ntakes = 2\n\
         [[stem.variant]]\nname = \"piano\"\ntags = \"piano\"\nstyle_weight = 0.8\n\
         [[stem.variant]]\nname = \"plain\"\n\
         [[stem]]\nname = \"hook\"\nurl = \"https://x.com/h.mp3\"\n\
         [stem.matrix]\nstyle_weight = [0.3, 0.8]\ntags = [\"lofi, chill\", \"jazz\"]\n"
    );
    let manifest = parse_text(&text).unwrap();
    let summary: Vec<_> = manifest
        .variants
        .iter()
        .map(|v| {
            format!(
                "{}/{}/t{} {} [{}] {}",
                v.stem.name,
                v.name,
                v.take,
                v.params.title,
                v.params.tags,
                v.params.style_weight.unwrap()
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            "ballad/piano/t1 ballad piano [piano] 0.8",
            "ballad/piano/t2 ballad piano [piano] 0.8",
            "ballad/plain/t1 ballad plain [soft] 0.5",
            "ballad/plain/t2 ballad plain [soft] 0.5",
            "hook/lofi-chill_0-3/t1 hook lofi-chill_0-3 [lofi, chill] 0.3",
            "hook/lofi-chill_0-8/t1 hook lofi-chill_0-8 [lofi, chill] 0.8",
            "hook/jazz_0-3/t1 hook jazz_0-3 [jazz] 0.3",
            "hook/jazz_0-8/t1 hook jazz_0-8 [jazz] 0.8",
        ]
    );
    assert!(manifest
        .variants
        .iter()
        .all(|v| v.params.vocal_gender == Some(crate::variant::VocalGender::Female)));
    assert_eq!(manifest.variants.get(0).unwrap().file_base(), "piano-t1");
    assert_eq!(
        manifest.variants.get(4).unwrap().file_base(),
        "lofi-chill_0-3"
    );
}

#[test]
fn listed_variants_cross_with_the_matrix() {
    let text = format!(
        "{DEFAULTS}[[stem]]\nurl = \"https://x.com/a.mp3\"\n\
         [[stem.variant]]\nname = \"v1\"\n[[stem.variant]]\nname = \"v2\"\nmodel = \"V5\"\n\
         [stem.matrix]\ntags = [\"a\", \"b\"]\n"
    );
    let names: Vec<_> = parse_text(&text)
        .unwrap()
        .variants
        .iter()
        .map(|v| format!("{} {}", v.name, v.params.model.as_str()))
        .collect();
    assert_eq!(
        names,
        ["v1_a V4_5PLUS", "v1_b V4_5PLUS", "v2_a V5", "v2_b V5"]
    );
}

#[test]
fn run_settings_default_as_the_spec_says() {
    let manifest = parse_text(&format!(
        "{DEFAULTS}[[stem]]\nurl = \"https://x.com/a.mp3\"\n"
    ))
    .unwrap();
    assert_eq!(manifest.run, RunSettings::default());
    assert_eq!(manifest.run.concurrency, 8);
    assert_eq!(
        manifest.run.submit_rate.period(),
        std::time::Duration::from_secs(3)
    );
    assert_eq!(manifest.api.key_env, "VIDGO_API_KEY");
    assert_eq!(manifest.variants.len(), 1);
    assert_eq!(manifest.variants.get(0).unwrap().name, "default");
}

#[test]
fn variant_ids_are_stable_across_parses_and_change_with_parameters() {
    let text = format!("{DEFAULTS}[[stem]]\nurl = \"https://x.com/a.mp3\"\n");
    let first = parse_text(&text)
        .unwrap()
        .variants
        .get(0)
        .unwrap()
        .id
        .clone();
    assert_eq!(
        first,
        parse_text(&text).unwrap().variants.get(0).unwrap().id
    );
    let changed = text.replace("tags = \"pop\"", "tags = \"rock\"");
    assert_ne!(
        first,
        parse_text(&changed).unwrap().variants.get(0).unwrap().id
    );
}

/// A `[stem.matrix]` of `tags` tags times `negative` negative tags: their product in
/// combinations, written in three lines.
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

/// `count` url stems of five lines each (stem k on line 5k after `DEFAULTS`), each with a
/// `tags` × `negative` matrix.
fn url_stems(count: usize, tags: usize, negative: usize) -> String {
    (1..=count)
        .map(|k| {
            format!(
                "[[stem]]\nurl = \"https://x.com/s{k}.mp3\"\n{}",
                matrix(tags, negative)
            )
        })
        .collect()
}

/// A file system where every glob matches `.0` audio files, none of them read.
struct ManyFiles(usize);

impl LocalFiles for ManyFiles {
    fn glob(&self, base: &Path, _pattern: &str) -> Result<Vec<PathBuf>, String> {
        Ok((1..=self.0)
            .map(|i| base.join(format!("in/g{i}.wav")))
            .collect())
    }

    fn check(&self, path: &Path) -> Result<crate::stems::CheckedFile, String> {
        Ok(crate::stems::CheckedFile {
            sha256: path.display().to_string(),
            bytes: 1000,
            format: Ok(crate::audio_format::AudioFormat::Wav),
        })
    }
}

fn problems_with(text: &str, files: &dyn LocalFiles) -> Vec<String> {
    match parse_with(Path::new("m.toml"), text, files) {
        Ok(manifest) => vec![format!("no problem, {} variants", manifest.variants.len())],
        Err(ManifestError::Invalid { problems, .. }) => {
            problems.iter().map(ToString::to_string).collect()
        }
        Err(other) => panic!("unexpected error {other}"),
    }
}

#[test]
fn a_manifest_past_a_million_variants_is_a_problem_found_before_expanding() {
    let cases: &[(String, &str)] = &[
        // One matrix at its own cap, times 1000 takes: a problem, not a 144 GB allocation.
        (
            format!("{DEFAULTS}[[stem]]\nurl = \"https://x.com/a.mp3\"\ntakes = 1000\n{}", matrix(1000, 1000)),
            "5: stem[1]: the manifest expands to 1000000000 variants, more than the 1000000 allowed (this stem adds 1000000000 = 1 source × 1000000 parameter sets × 1000 takes)",
        ),
        // 20 stems of 101,000 combinations each: the tenth crosses the cap.
        (
            format!("{DEFAULTS}{}", url_stems(20, 101, 1000)),
            "50: stem[10]: the manifest expands to 2020000 variants, more than the 1000000 allowed (this stem adds 101000 = 1 source × 101000 parameter sets × 1 take)",
        ),
        // Listed variants cross the matrix.
        (
            format!("{DEFAULTS}[[stem]]\nurl = \"https://x.com/a.mp3\"\n[[stem.variant]]\nname = \"x\"\n[[stem.variant]]\nname = \"y\"\n{}", matrix(1000, 501)),
            "5: stem[1]: the manifest expands to 1002000 variants, more than the 1000000 allowed (this stem adds 1002000 = 1 source × 1002000 parameter sets × 1 take)",
        ),
        // A glob stem counts once per matching file.
        (
            format!("{DEFAULTS}[[stem]]\nurl = \"https://x.com/a.mp3\"\n[[stem]]\nglob = \"in/*.wav\"\ntakes = 3\n{}", matrix(1000, 1000)),
            "7: stem[2]: the manifest expands to 12000001 variants, more than the 1000000 allowed (this stem adds 12000000 = 4 sources × 1000000 parameter sets × 3 takes)",
        ),
        // One matrix past the cap is named as such, and counted no further.
        (
            format!("{DEFAULTS}[[stem]]\nurl = \"https://x.com/a.mp3\"\n{}", matrix(1001, 1000)),
            "7: stem[1].matrix: the matrix has 1001000 combinations, more than the 1000000 allowed",
        ),
    ];
    for (text, expected) in cases {
        let started = std::time::Instant::now();
        let problems = problems_with(text, &ManyFiles(4));
        assert_eq!(
            problems,
            [*expected],
            "for the manifest starting\n{}",
            &text[..300]
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
}

#[test]
fn a_matrix_whose_count_overflows_is_refused() {
    let axis = |key: &str| {
        let values: Vec<String> = (0..300).map(|i| format!("\"{i}\"")).collect();
        format!("{key} = [{}]\n", values.join(", "))
    };
    let weights = |key: &str| format!("{key} = [{}]\n", vec!["0.5"; 300].join(", "));
    // 300^8 combinations, past u64::MAX.
    let text = format!(
        "{DEFAULTS}[[stem]]\nurl = \"https://x.com/a.mp3\"\n[stem.matrix]\n{}{}",
        ["model", "title", "tags", "negative_tags", "vocal_gender"]
            .map(axis)
            .concat(),
        ["style_weight", "weirdness_constraint", "audio_weight"]
            .map(weights)
            .concat(),
    );
    let problems = problems_of(&text);
    assert!(
        problems.contains(&format!(
            "7: stem[1].matrix: the matrix has over {} combinations, more than the 1000000 allowed",
            u64::MAX
        )),
        "{problems:#?}"
    );
}

/// The variant count of a manifest, from the raw stage to the count and no further.
fn count_of(text: &str, files: &dyn LocalFiles) -> (Option<u64>, Vec<String>) {
    let lines = validate::LineIndex::new(text);
    let raw: raw::RawManifest = toml::from_str(text).unwrap();
    let mut problems = validate::Problems::new(&lines);
    let files = sources::Files {
        base: Path::new("."),
        disk: files,
    };
    let drafts = validate::drafts(&raw, &files, &mut problems);
    let count = validate::count_variants(&drafts, &mut problems);
    let problems = problems
        .into_sorted()
        .iter()
        .map(ToString::to_string)
        .collect();
    (count, problems)
}

#[test]
fn exactly_a_million_variants_are_allowed_and_one_more_is_not() {
    let million = format!(
        "{DEFAULTS}[[stem]]\nurl = \"https://x.com/a.mp3\"\n{}",
        matrix(1000, 1000)
    );
    assert_eq!(
        count_of(&million, &DiskFiles),
        (Some(1_000_000), Vec::new())
    );
    let spread = format!("{DEFAULTS}{}", url_stems(10, 100, 1000));
    assert_eq!(count_of(&spread, &DiskFiles), (Some(1_000_000), Vec::new()));
    let one_more = format!("{million}[[stem]]\nurl = \"https://x.com/b.mp3\"\n");
    assert_eq!(
        count_of(&one_more, &DiskFiles),
        (
            Some(1_000_001),
            vec!["10: stem[2]: the manifest expands to 1000001 variants, more than the 1000000 allowed (this stem adds 1 = 1 source × 1 parameter set × 1 take)".to_owned()]
        )
    );
}

#[test]
fn the_count_is_what_expansion_builds() {
    let cases = [
        format!("{DEFAULTS}[[stem]]\nurl = \"https://x.com/a.mp3\"\n"),
        format!("{DEFAULTS}[[stem]]\nurl = \"https://x.com/a.mp3\"\ntakes = 3\n[[stem.variant]]\nname = \"x\"\n[[stem.variant]]\nname = \"y\"\n"),
        format!("{DEFAULTS}[[stem]]\nglob = \"in/*.wav\"\ntakes = 2\n[[stem.variant]]\nname = \"x\"\n[[stem.variant]]\nname = \"y\"\n{}", matrix(3, 2)),
        format!("{DEFAULTS}{}[[stem]]\nglob = \"in/*.wav\"\n{}", url_stems(3, 4, 5), matrix(2, 2)),
    ];
    for text in cases {
        let expanded = parse_with(Path::new("m.toml"), &text, &ManyFiles(3))
            .unwrap()
            .variants
            .len() as u64;
        assert_eq!(
            count_of(&text, &ManyFiles(3)),
            (Some(expanded), Vec::new()),
            "{text}"
        );
    }
}

/// Each variant is built again, the same, from its position alone: across stems, the
/// files of a glob, listed variants crossed with a matrix, and takes.
#[test]
fn a_variant_built_by_position_is_the_one_iteration_builds() {
    let text = format!(
        "{DEFAULTS}{}[[stem]]\nglob = \"in/*.wav\"\ntakes = 2\n\
         [[stem.variant]]\nname = \"x\"\n[[stem.variant]]\nname = \"y\"\n{}",
        url_stems(2, 2, 3),
        matrix(3, 2)
    );
    let variants = parse_with(Path::new("m.toml"), &text, &ManyFiles(3))
        .unwrap()
        .variants;
    let key = |v: &crate::variant::Variant| {
        format!(
            "{}/{}/t{} {} {}",
            v.stem.name, v.name, v.take, v.params.tags, v.id
        )
    };
    let iterated: Vec<String> = variants.iter().map(|v| key(&v)).collect();
    assert_eq!(iterated.len(), 2 * 6 + 3 * 2 * 6 * 2);
    assert_eq!(variants.len(), iterated.len());
    // Backwards, so that no position leans on the one before it.
    for index in (0..variants.len()).rev() {
        assert_eq!(key(&variants.get(index).unwrap()), iterated[index]);
    }
    assert!(variants.get(variants.len()).is_none());
    assert_eq!(
        iterated[12],
        format!("g1/x_t0_n0/t1 t0 {}", variants.get(12).unwrap().id)
    );
    assert_eq!(
        iterated[13],
        format!("g1/x_t0_n0/t2 t0 {}", variants.get(13).unwrap().id)
    );
    let ids: std::collections::HashSet<_> = variants.iter().map(|v| v.id).collect();
    assert_eq!(ids.len(), variants.len());
    let stems: Vec<_> = variants
        .stems()
        .map(|(stem, count)| format!("{} {count}", stem.name))
        .collect();
    assert_eq!(stems, ["s1 6", "s2 6", "g1 24", "g2 24", "g3 24"]);
    // A shard's run: a table over some positions, each built with its known id.
    let positions = vec![0, 13, 40, 83];
    let chosen: Vec<_> = positions
        .iter()
        .map(|&p| variants.get(p as usize).unwrap())
        .collect();
    let source = variants.source(Some(positions));
    let table = crate::variant::VariantTable::built(source, chosen.iter().map(|v| &v.id));
    for (index, variant) in chosen.iter().enumerate() {
        assert_eq!(table.index_of(&variant.id), Some(index));
        assert_eq!(key(&table.at(index)), key(variant));
    }
    // Its stems, each once, found without building a variant; a subset's are its own.
    let names = |table: &crate::variant::VariantTable| -> Vec<String> {
        table.stems().iter().map(|s| s.name.clone()).collect()
    };
    assert_eq!(names(&table), ["s1", "g1", "g2", "g3"]);
    let all = variants.source(None);
    let table = crate::variant::VariantTable::built(all, variants.to_vec().iter().map(|v| &v.id));
    let rebuilt: Vec<String> = table.iter().map(|v| key(&v)).collect();
    assert_eq!(rebuilt, iterated);
    assert_eq!(names(&table), ["s1", "s2", "g1", "g2", "g3"]);
    let last_two = table.subset(|id| iterated[40..].iter().any(|k| k.ends_with(id.as_str())));
    assert_eq!(names(&last_two), ["g2", "g3"]);
}

/// Matrix values whose slugs coincide make two combinations of one name: each is found,
/// naming the line of the first.
#[test]
fn matrix_values_of_one_slug_are_duplicate_names() {
    let text = format!(
        "{DEFAULTS}[[stem]]\nurl = \"https://x.com/a.mp3\"\n\
         [stem.matrix]\ntags = [\"a b\", \"c\", \"a-b\"]\nstyle_weight = [0.1, 0.2]\n"
    );
    assert_eq!(
        problems_of(&text),
        [
            "7: stem[1].matrix.name: stem \"a\" has two variants named \"a-b_0-1\" (the other is on line 7)",
            "7: stem[1].matrix.name: stem \"a\" has two variants named \"a-b_0-2\" (the other is on line 7)",
        ]
    );
}

#[test]
fn a_value_of_the_wrong_type_names_its_key_in_plain_words() {
    let cases: &[(&str, &str)] = &[
        (
            "[defaults]\nstyle_weight = \"0.5\"\n",
            "2: defaults.style_weight: expected a number, found a string (\"0.5\")",
        ),
        (
            "[run]\nconcurrency = 8.5\n",
            "2: run.concurrency: expected an integer, found a number (8.5)",
        ),
        (
            "[run]\nmax_new_submits = \"5\"\n",
            "2: run.max_new_submits: expected an integer, found a string (\"5\")",
        ),
        (
            "[run]\ndownload_covers = \"yes\"\n",
            "2: run.download_covers: expected a boolean, found a string (\"yes\")",
        ),
        (
            "[defaults]\ntags = 3\n",
            "2: defaults.tags: expected a string, found an integer (3)",
        ),
        (
            "[defaults]\ntags = [\"a\"]\n",
            "2: defaults.tags: expected a string, found an array",
        ),
        (
            "[defaults]\ntags = { a = 1 }\n",
            "2: defaults.tags: expected a string, found a table",
        ),
        (
            "defaults = 3\n",
            "1: defaults: expected a table, found an integer (3)",
        ),
        (
            "stem = \"x\"\n",
            "1: stem: expected an array, found a string (\"x\")",
        ),
        (
            "[[stem]]\nurl = \"u\"\n[[stem]]\nurl = \"u\"\n[[stem.variant]]\nname = \"a\"\n[[stem.variant]]\nname = true\n",
            "8: stem[2].variant[2].name: expected a string, found a boolean (true)",
        ),
        (
            "[[stem]]\nurl = \"u\"\nvariant = [{ name = \"a\" }, { name = 4 }]\n",
            "3: stem[1].variant[2].name: expected a string, found an integer (4)",
        ),
        (
            "[[stem]]\nurl = \"u\"\n[stem.matrix]\nstyle_weight = [0.5, \"a\"]\n",
            "4: stem[1].matrix.style_weight[2]: expected a number, found a string (\"a\")",
        ),
        (
            "[[stem]]\nurl = \"u\"\n[stem.matrix]\nstyle_weight = 0.5\n",
            "4: stem[1].matrix.style_weight: expected an array, found a number (0.5)",
        ),
        (
            "[[stem]]\nurl = \"u\"\ntakes = 1979-05-27\n",
            "3: stem[1].takes: expected an integer, found a date or time (1979-05-27)",
        ),
        (
            "[[stem]]\nurl = \"u\"\ntakes = -99999999999999999999\n",
            "3: stem[1].takes: -99999999999999999999 is out of range",
        ),
        (
            "defaults.audio_weight = \"high\"\n",
            "1: defaults.audio_weight: expected a number, found a string (\"high\")",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(problems_of(text), [*expected], "for manifest:\n{text}");
    }
    let err = parse_text("[defaults]\nstyle_weight = \"0.5\"\n")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "manifest m.toml has 1 problem:\n  m.toml:2: defaults.style_weight: expected a number, found a string (\"0.5\")"
    );
}

#[test]
fn max_new_submits_is_an_integer_of_at_least_one() {
    let stem = "[[stem]]\nurl = \"https://x.com/a.mp3\"\n";
    let parsed = |run: &str| parse_text(&format!("{DEFAULTS}[run]\n{run}\n{stem}"));
    assert_eq!(parsed("").unwrap().run.max_new_submits, 1000);
    assert_eq!(
        parsed("max_new_submits = 1").unwrap().run.max_new_submits,
        1
    );
    assert_eq!(
        parsed("max_new_submits = 250000")
            .unwrap()
            .run
            .max_new_submits,
        250_000
    );
    for (value, expected) in [
        ("0", "6: run.max_new_submits: must be at least 1, not 0"),
        ("-3", "6: run.max_new_submits: must be at least 1, not -3"),
        (
            "12.5",
            "6: run.max_new_submits: expected an integer, found a number (12.5)",
        ),
    ] {
        assert_eq!(
            problems_of(&format!(
                "{DEFAULTS}[run]\nmax_new_submits = {value}\n{stem}"
            )),
            [expected]
        );
    }
}

#[test]
fn output_dir_defaults_to_one_fixed_folder_and_title_to_stem_and_variant() {
    let text = "[defaults]\ntags = \"pop\"\nnegative_tags = \"\"\n\
        [[stem]]\nurl = \"https://x.com/a.mp3\"\n[[stem.variant]]\nname = \"piano\"\n\
        [[stem.variant]]\nname = \"own\"\ntitle = \"{variant} of {stem}\"\n\
        [[stem]]\nurl = \"https://x.com/b.mp3\"\ntitle = \"{stem}, take {take}\"\n";
    let manifest = parse_text(text).unwrap();
    assert_eq!(manifest.run.output_dir, "out");
    let titles: Vec<_> = manifest.variants.iter().map(|v| v.params.title).collect();
    assert_eq!(titles, ["a piano", "own of a", "b, take 1"]);
    // [defaults] may set its own title over the built-in one.
    let text = format!("{DEFAULTS}[[stem]]\nurl = \"https://x.com/a.mp3\"\n")
        .replace("{stem} {variant}", "{stem}!");
    assert_eq!(
        parse_text(&text)
            .unwrap()
            .variants
            .get(0)
            .unwrap()
            .params
            .title,
        "a!"
    );
    // The built-in title can grow too long too: the problem points at the variant.
    let text = format!(
        "[defaults]\ntags = \"pop\"\nnegative_tags = \"\"\n[[stem]]\nname = \"{}\"\nurl = \"https://x.com/a.mp3\"\n[[stem.variant]]\nname = \"{}\"\n",
        "s".repeat(60),
        "v".repeat(40)
    );
    assert_eq!(
        problems_of(&text),
        [format!(
            "8: stem[1].variant[1]: the title of stem \"{s}\" variant \"{v}\" is 101 characters, more than the provider's 100: \"{s} {v}\" (the default title \"{{stem}} {{variant}}\"; hint: set a shorter title)",
            s = "s".repeat(60),
            v = "v".repeat(40)
        )]
    );
}

/// A temporary manifest folder holding `files` (relative path, content).
fn folder_with(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

const WAV: &[u8] = b"RIFF\x04\0\0\0WAVEdata";

#[test]
fn a_globbed_file_that_cannot_be_sent_still_expands_and_carries_its_problem() {
    let dir = folder_with(&[
        ("in/ballad.wav", WAV),
        ("in/._ballad.wav", b"\0\x05\x16\x07 apple double"),
        ("in/.DS_Store", b"\0\0\0\x01Bud1"),
        ("in/empty.wav", b""),
        ("in/lyrics.wav", b"la la la"),
    ]);
    let manifest_path = dir.path().join("m.toml");
    let text = format!(
        "{DEFAULTS}[[stem]]\nglob = \"in/*\"\n[[stem.variant]]\nname = \"one\"\n[[stem.variant]]\nname = \"two\"\ntags = \"jazz\"\n"
    );
    let manifest = parse(&manifest_path, &text).unwrap();
    let summary: Vec<_> = manifest
        .variants
        .iter()
        .map(|v| format!("{}/{} {:?}", v.stem.name, v.name, v.stem.problem))
        .collect();
    let base = dir.path().display();
    let empty = format!("Some(\"{base}/in/empty.wav is empty\")");
    let lyrics = format!(
        "Some(\"{base}/in/lyrics.wav is not audio (expected WAV, MP3, FLAC, OGG or M4A/AAC)\")"
    );
    assert_eq!(
        summary,
        [
            "ballad/one None".to_owned(),
            "ballad/two None".to_owned(),
            format!("empty/one {empty}"),
            format!("empty/two {empty}"),
            format!("lyrics/one {lyrics}"),
            format!("lyrics/two {lyrics}"),
        ]
    );
    // Their ids come from their content, as every local stem's do.
    use sha2::Digest;
    let lyrics = &manifest.variants.get(4).unwrap();
    let crate::variant::StemSource::Local(local) = &lyrics.stem.source else {
        panic!("a local stem")
    };
    assert_eq!(local.sha256, hex::encode(sha2::Sha256::digest(b"la la la")));
    assert_eq!(
        lyrics.id,
        crate::variant::VariantId::compute(&lyrics.stem.source, &lyrics.params, 1)
    );
}

#[test]
fn an_explicit_path_that_cannot_be_sent_and_a_glob_of_dot_files_are_manifest_errors() {
    let dir = folder_with(&[
        ("manifests/.keep", b""),
        ("in/empty.wav", b""),
        ("in/lyrics.wav", b"la la la"),
        ("hidden/._a.wav", WAV),
    ]);
    let manifest_path = dir.path().join("manifests/m.toml");
    let base = dir.path().display();
    for (stem, expected) in [
        (
            "path = \"../in/empty.wav\"",
            format!("6: stem[1].path: {base}/in/empty.wav is empty"),
        ),
        (
            "path = \"../in/lyrics.wav\"",
            format!("6: stem[1].path: {base}/in/lyrics.wav is not audio (expected WAV, MP3, FLAC, OGG or M4A/AAC)"),
        ),
        (
            "path = \"../in/gone.wav\"",
            format!("6: stem[1].path: {base}/in/gone.wav: No such file or directory (os error 2)"),
        ),
        (
            "glob = \"../hidden/*.wav\"",
            "6: stem[1].glob: \"../hidden/*.wav\" matches no file".to_owned(),
        ),
    ] {
        let text = format!("{DEFAULTS}[[stem]]\n{stem}\n");
        let problems = match parse(&manifest_path, &text) {
            Err(ManifestError::Invalid { problems, .. }) => problems,
            other => panic!("{stem}: {other:?}"),
        };
        let problems: Vec<_> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems, [expected], "{stem}");
    }
}

#[test]
fn the_s3_mode_is_checked_key_by_key() {
    let stem = "[[stem]]\nurl = \"https://x.com/a.mp3\"\n";
    let with = |upload: &str| format!("{DEFAULTS}{stem}[upload]\nmode = \"s3\"\n{upload}");
    let cases: Vec<(String, &str)> = vec![
        (with(""), "8: upload.bucket: mode \"s3\" needs bucket"),
        (
            with("bucket = \"b\"\nurl_expiry = \"30m\"\n"),
            "10: upload.url_expiry: url_expiry (30m) must be at least run.task_timeout (30m) and 1m more (31m): the provider may fetch the stem until the task times out",
        ),
        (
            with("bucket = \"b\"\nurl_expiry = \"30m 59s\"\n"),
            "10: upload.url_expiry: url_expiry (30m 59s) must be at least run.task_timeout (30m) and 1m more (31m): the provider may fetch the stem until the task times out",
        ),
        (
            format!("[run]\ntask_timeout = \"4s\"\n{}", with("bucket = \"b\"\nurl_expiry = \"5s\"\n")),
            "12: upload.url_expiry: url_expiry (5s) must be at least run.task_timeout (4s) and 2s more (6s): the provider may fetch the stem until the task times out",
        ),
        (
            with("bucket = \"b\"\nurl_expiry = \"1h 500ms\"\n"),
            "10: upload.url_expiry: url_expiry (1h 500ms) must be whole seconds: a presigned URL's lifetime is counted in seconds",
        ),
        (
            format!("[run]\ntask_timeout = \"2h\"\n{}", with("bucket = \"b\"\nurl_expiry = \"1h\"\n")),
            "12: upload.url_expiry: url_expiry (1h) must be at least run.task_timeout (2h) and 1m more (2h 1m): the provider may fetch the stem until the task times out",
        ),
        (
            with("bucket = \"b\"\nurl_expiry = \"8days\"\n"),
            "10: upload.url_expiry: 8days is longer than the 7 days a presigned URL may live",
        ),
        (
            with("bucket = \"b\"\nprefix = \"/stems/\"\n"),
            "10: upload.prefix: \"/stems/\" must not start with \"/\" (keys have no leading slash)",
        ),
        (
            with("bucket = \"b\"\nprefix = \"a//b/\"\n"),
            "10: upload.prefix: \"a//b/\" has an empty, \".\" or \"..\" segment",
        ),
        (
            with("bucket = \"b\"\nendpoint = \"minio:9000\"\n"),
            "10: upload.endpoint: \"minio:9000\" must be an http:// or https:// URL",
        ),
        (
            with("bucket = \"b\"\nsecret = \"x\"\n"),
            "10: upload.secret: unknown key",
        ),
        (
            format!("{DEFAULTS}{stem}[upload]\nbucket = \"b\"\n"),
            "8: upload.bucket: only applies to mode = \"s3\"",
        ),
    ];
    for (text, expected) in cases {
        let problems = problems_of(&text);
        assert!(
            problems.iter().any(|p| p.starts_with(expected)),
            "{text}\nexpected {expected}\ngot {problems:#?}"
        );
    }
}

#[test]
fn the_s3_mode_defaults_its_url_expiry_to_a_day() {
    let text = format!(
        "{DEFAULTS}[[stem]]\nurl = \"https://x.com/a.mp3\"\n[upload]\nmode = \"s3\"\nbucket = \"stems\"\nprefix = \"stembatch/\"\nregion = \"auto\"\nendpoint = \"https://acc.r2.cloudflarestorage.com\"\n"
    );
    let manifest = parse_text(&text).unwrap();
    let UploadMode::S3(s3) = &manifest.upload.mode else {
        panic!("not s3: {:?}", manifest.upload.mode);
    };
    assert_eq!(
        (s3.bucket.as_str(), s3.prefix.as_str(), s3.region.as_deref()),
        ("stems", "stembatch/", Some("auto"))
    );
    assert_eq!(
        s3.endpoint.as_deref(),
        Some("https://acc.r2.cloudflarestorage.com")
    );
    assert_eq!(s3.url_expiry, DEFAULT_URL_EXPIRY);
}

#[test]
fn a_globbed_file_not_named_as_audio_is_no_stem_but_a_warning() {
    let dir = folder_with(&[
        ("in/ballad.wav", WAV),
        ("in/readme.txt", b"drop the stems here"),
        ("notes/readme.txt", b"nothing but notes"),
    ]);
    let manifest_path = dir.path().join("m.toml");
    let text = format!("{DEFAULTS}[[stem]]\nglob = \"in/*\"\n");
    let manifest = parse(&manifest_path, &text).unwrap();
    let names: Vec<_> = manifest
        .variants
        .iter()
        .map(|v| v.stem.name.clone())
        .collect();
    assert_eq!(names, ["ballad"]);
    let line = text.lines().position(|l| l.starts_with("glob")).unwrap() + 1;
    let base = dir.path().display();
    assert_eq!(
        manifest.warning_lines().collect::<Vec<_>>(),
        [format!(
            "{base}/m.toml:{line}: stem[1].glob: {base}/in/readme.txt skipped: its name is not an audio file's (.wav, .wave, .mp3, .flac, .ogg, .oga, .opus, .m4a, .mp4, .aac)"
        )]
    );

    // A glob that matches nothing but such files matches no stem: a manifest problem.
    let text = format!("{DEFAULTS}[[stem]]\nglob = \"notes/*\"\n");
    let err = parse(&manifest_path, &text).unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "{line}: stem[1].glob: \"notes/*\" matches no audio file"
        )),
        "{err}"
    );
}
