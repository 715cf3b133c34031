//! The commands that send nothing: `validate`, `plan`, `status`.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;

use crate::exit::{ExpectedError, SUCCESS};
use crate::manifest;
use crate::report::csv::FILE_NAME;
use crate::variant::{GenerationParams, Variant};

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

/// `plan`: every variant with its resolved parameters, as text or CSV.
pub(super) fn plan(path: &Path, csv: bool) -> anyhow::Result<u8> {
    let manifest = manifest::load(path)?;
    match write_plan(io::stdout().lock(), &manifest.variants, csv) {
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(SUCCESS),
        other => other.map(|()| SUCCESS).map_err(Into::into),
    }
}

/// Writes the plan of `variants`, as CSV or as text, to `out`.
pub fn write_plan(out: impl Write, variants: &[Variant], csv: bool) -> io::Result<()> {
    if csv {
        write_plan_csv(out, variants)
    } else {
        write_plan_text(io::BufWriter::new(out), variants)
    }
}

/// The plan's columns: the variant's identity, its stem's source, its parameters.
fn plan_header() -> Vec<&'static str> {
    let mut header = vec!["stem", "variant", "take", "variant_id", "source"];
    header.extend(GenerationParams::COLUMNS);
    header
}

fn plan_row(variant: &Variant) -> Vec<String> {
    let mut row = vec![
        variant.stem.name.clone(),
        variant.name.clone(),
        variant.take.to_string(),
        variant.id.to_string(),
        variant.stem.source.describe(),
    ];
    row.extend(variant.params.columns());
    row
}

fn write_plan_csv(out: impl Write, variants: &[Variant]) -> io::Result<()> {
    let mut writer = ::csv::Writer::from_writer(out);
    writer.write_record(plan_header())?;
    for variant in variants {
        writer.write_record(plan_row(variant))?;
    }
    writer.flush()
}

fn write_plan_text(mut out: impl Write, variants: &[Variant]) -> io::Result<()> {
    for variant in variants {
        let row = plan_row(variant);
        write!(out, "{}/{} take {} [{}]", row[0], row[1], row[2], row[3])?;
        for (key, value) in plan_header().iter().zip(&row).skip(4) {
            if !value.is_empty() || key.ends_with("tags") || *key == "title" {
                write!(out, " {key}={value:?}")?;
            }
        }
        writeln!(out)?;
    }
    writeln!(out, "{} variants", variants.len())?;
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
