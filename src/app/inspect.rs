//! The commands that send nothing: `validate`, `plan`, `status`.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::path::Path;

use super::resume::{self, Resume};
use crate::exit::{ExpectedError, SUCCESS};
use crate::journal::replay::Rerun;
use crate::journal::rerun::Intent;
use crate::manifest;
use crate::report::csv::FILE_NAME;
use crate::variant::{GenerationParams, Variant, VariantId};

/// `validate`: the variant count on stdout; on stderr, each stem whose file cannot be sent
/// (a file a glob matched that is empty, not audio or too large), whose variants a run
/// ends `error` without submitting them.
pub(super) fn validate(path: &Path) -> anyhow::Result<u8> {
    let manifest = manifest::load(path)?;
    // Stem names are unique within a manifest: by name, its variants and its problem.
    let mut stems: BTreeMap<&str, (usize, Option<&str>)> = BTreeMap::new();
    for variant in &manifest.variants {
        let stem = &variant.stem;
        stems
            .entry(stem.name.as_str())
            .or_insert((0, stem.problem.as_deref()))
            .0 += 1;
    }
    for (name, (count, problem)) in &stems {
        if let Some(problem) = problem {
            eprintln!(
                "warning: stem {name:?}: {problem}; its {} will end `error` without being submitted",
                counted(*count, "variant"),
            );
        }
    }
    println!(
        "{} ({}); manifest {} is valid",
        counted(manifest.variants.len(), "variant"),
        counted(stems.len(), "stem"),
        crate::stems::normalized(path).display()
    );
    Ok(SUCCESS)
}

/// "1 stem", "2 stems".
fn counted(count: usize, noun: &str) -> String {
    format!("{count} {noun}{}", if count == 1 { "" } else { "s" })
}

/// `plan`: every variant with its resolved parameters, as text or CSV; with `out`, also
/// what a run into that folder would do with it, and what it would buy.
pub(super) async fn plan(path: &Path, csv: bool, out: Option<&Path>) -> anyhow::Result<u8> {
    let path_owned = path.to_owned();
    let manifest = tokio::task::spawn_blocking(move || manifest::load(&path_owned)).await??;
    let resume = match out {
        Some(dir) => Some(plan_against(&manifest, dir).await?),
        None => None,
    };
    let intents = resume.as_ref().map(|r| &r.intents);
    let written = write_plan(io::stdout().lock(), &manifest.variants, csv, intents);
    match written {
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => return Ok(SUCCESS),
        other => other?,
    }
    if let (Some(resume), Some(dir)) = (&resume, out) {
        // On stderr with --csv, so that stdout stays one clean table.
        let summary = cost_summary(resume, dir);
        match csv {
            true => eprintln!("{summary}"),
            false => println!("{summary}"),
        }
        if let Some(balance) = balance(&manifest).await {
            match csv {
                true => eprintln!("{balance}"),
                false => println!("{balance}"),
            }
        }
    }
    Ok(SUCCESS)
}

/// What a run into `dir` would do, from its journal, read and never written.
async fn plan_against(manifest: &manifest::Manifest, dir: &Path) -> anyhow::Result<Resume> {
    let journal = crate::journal::state_dir(dir).join(crate::journal::JOURNAL_FILE);
    let records = match std::fs::read(&journal) {
        Ok(bytes) => crate::journal::format::decode_all(bytes, &journal)
            .map_err(|err| ExpectedError::usage(err.to_string()))?,
        Err(err) if err.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(err) => return Err(anyhow::anyhow!("cannot read {}: {err}", journal.display())),
    };
    let rerun = Rerun {
        retry_failed: false,
        now: chrono::Utc::now(),
    };
    Ok(resume::prepare(&manifest.variants, &records, dir, rerun).await?)
}

/// One paragraph: how many tasks a run would buy, and what else it would do.
fn cost_summary(resume: &Resume, dir: &Path) -> String {
    let counts = resume.counts();
    let count = |intent: Intent| counts.get(&intent).copied().unwrap_or(0);
    let bought: Vec<String> = Intent::ALL
        .iter()
        .filter(|i| i.buys() && count(**i) > 0)
        .map(|i| format!("{} {}", count(*i), i.word()))
        .collect();
    let mut text = format!(
        "a run into {} would submit {} new tasks ({}); resume {}, keep {}",
        dir.display(),
        resume.new_tasks(),
        if bought.is_empty() {
            "none".to_owned()
        } else {
            bought.join(", ")
        },
        count(Intent::Resume) + count(Intent::Redownload),
        count(Intent::Keep) + count(Intent::KeepUnknown),
    );
    if !resume.moves.is_empty() {
        text.push_str(&format!(
            "; {} earlier tracks of changed variants would move to superseded/",
            resume.moves.len()
        ));
    }
    text.push_str("; each task is charged when it succeeds");
    text
}

/// The account's balance, when a key is at hand; a line either way then.
async fn balance(manifest: &manifest::Manifest) -> Option<String> {
    let key = crate::api::ApiKey::from_env(&manifest.api.key_env).ok()?;
    let base_url = std::env::var(super::run::BASE_URL_ENV)
        .ok()
        .filter(|u| !u.trim().is_empty())
        .or_else(|| manifest.api.base_url.clone())
        .unwrap_or_else(|| super::run::DEFAULT_BASE_URL.to_owned());
    let client = crate::api::ApiClient::new(&base_url, key).ok()?;
    Some(match client.balance().await {
        Ok(balance) => format!("the account has {} credits", balance.credits_amount),
        Err(err) => format!("the account's balance is unknown: {err}"),
    })
}

/// Writes the plan of `variants`, as CSV or as text, to `out`; with `intents`, each
/// variant's intended action too.
pub fn write_plan(
    out: impl Write,
    variants: &[Variant],
    csv: bool,
    intents: Option<&HashMap<VariantId, Intent>>,
) -> io::Result<()> {
    if csv {
        write_plan_csv(out, variants, intents)
    } else {
        write_plan_text(io::BufWriter::new(out), variants, intents)
    }
}

/// The plan's columns: the variant's identity, its stem's source, its parameters.
fn plan_header(with_action: bool) -> Vec<&'static str> {
    let mut header = vec!["stem", "variant", "take", "variant_id", "source"];
    header.extend(GenerationParams::COLUMNS);
    if with_action {
        header.push("action");
    }
    header
}

fn plan_row(variant: &Variant, intents: Option<&HashMap<VariantId, Intent>>) -> Vec<String> {
    let mut row = vec![
        variant.stem.name.clone(),
        variant.name.clone(),
        variant.take.to_string(),
        variant.id.to_string(),
        variant.stem.source.describe(),
    ];
    row.extend(variant.params.columns());
    if let Some(intents) = intents {
        let intent = intents.get(&variant.id).copied().unwrap_or(Intent::New);
        row.push(intent.word().to_owned());
    }
    row
}

fn write_plan_csv(
    out: impl Write,
    variants: &[Variant],
    intents: Option<&HashMap<VariantId, Intent>>,
) -> io::Result<()> {
    let mut writer = ::csv::Writer::from_writer(out);
    writer.write_record(plan_header(intents.is_some()))?;
    for variant in variants {
        writer.write_record(plan_row(variant, intents))?;
    }
    writer.flush()
}

fn write_plan_text(
    mut out: impl Write,
    variants: &[Variant],
    intents: Option<&HashMap<VariantId, Intent>>,
) -> io::Result<()> {
    let header = plan_header(intents.is_some());
    for variant in variants {
        let row = plan_row(variant, intents);
        if intents.is_some() {
            write!(out, "{:<20} ", row[row.len() - 1])?;
        }
        write!(out, "{}/{} take {} [{}]", row[0], row[1], row[2], row[3])?;
        for (key, value) in header.iter().zip(&row).skip(4) {
            if *key == "action" {
                continue;
            }
            if !value.is_empty() || key.ends_with("tags") || *key == "title" {
                write!(out, " {key}={value:?}")?;
            }
        }
        writeln!(out)?;
    }
    writeln!(out, "{}", counted(variants.len(), "variant"))?;
    out.flush()
}

/// `status`: variants by status and stem, from the folder's results.csv.
pub(super) fn status(dir: &Path) -> anyhow::Result<u8> {
    let path = dir.join(FILE_NAME);
    let mut reader = ::csv::Reader::from_path(&path).map_err(|e| {
        ExpectedError::usage(format!(
            "{} is not a stembatch output folder: {e}",
            dir.display()
        ))
    })?;
    let headers = reader.headers()?.clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| ExpectedError::usage(format!("{}: no column {name}", path.display())))
    };
    let (stem_col, id_col, status_col) =
        (column("stem")?, column("variant_id")?, column("status")?);
    let statuses = ["finished", "failed", "timeout", "error", "pending"];
    let mut by_stem: BTreeMap<String, [usize; 5]> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for row in reader.records() {
        let row = row?;
        if !seen.insert(row[id_col].to_owned()) {
            continue;
        }
        let slot = statuses
            .iter()
            .position(|s| *s == &row[status_col])
            .unwrap_or(4);
        by_stem.entry(row[stem_col].to_owned()).or_default()[slot] += 1;
    }
    let mut out = io::stdout().lock();
    let width = by_stem.keys().map(String::len).max().unwrap_or(0).max(5);
    writeln!(
        out,
        "{:width$}  {}",
        "stem",
        statuses.map(|s| format!("{s:>8}")).join("")
    )?;
    let mut total = [0usize; 5];
    for (stem, counts) in &by_stem {
        writeln!(
            out,
            "{stem:width$}  {}",
            counts.map(|c| format!("{c:>8}")).join("")
        )?;
        for (t, c) in total.iter_mut().zip(counts) {
            *t += c;
        }
    }
    writeln!(
        out,
        "{:width$}  {}",
        "total",
        total.map(|c| format!("{c:>8}")).join("")
    )?;
    Ok(SUCCESS)
}
