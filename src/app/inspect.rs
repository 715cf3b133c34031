//! The commands that send nothing: `validate`, `plan`, `status`. None of them writes to an
//! output folder.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use super::resume::{self, Resume};
use crate::exit::{ExpectedError, SUCCESS};
use crate::folder::lock::{Holder, LockState};
use crate::folder::Folder;
use crate::journal::folded::Folded;
use crate::journal::replay::Prior;
use crate::manifest;
use crate::outcome::VariantStatus;
use crate::qc::QcCounts;
use crate::report::csv::FILE_NAME;
use crate::scheduler::rerun::Intent;
use crate::scheduler::start::Rerun;
use crate::shard::Shard;
use crate::variant::{GenerationParams, Variant, VariantId, VariantTable};

/// `validate`: the variant count on stdout; on stderr, each stem whose file cannot be sent
/// (a file a glob matched that is empty, not audio or too large), whose variants a run
/// ends `error` without submitting them.
pub(super) fn validate(path: &Path) -> anyhow::Result<u8> {
    let manifest = manifest::load(path)?;
    for line in manifest.warning_lines() {
        eprintln!("warning: {line}");
    }
    // Stem names are unique within a manifest: by name, its variants and its problem.
    // Counted by stem, so that no variant is built for it.
    let mut stems: BTreeMap<&str, (usize, Option<&str>)> = BTreeMap::new();
    for (stem, count) in manifest.variants.stems() {
        stems
            .entry(stem.name.as_str())
            .or_insert((0, stem.problem.as_deref()))
            .0 += count;
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
pub(super) async fn plan(
    path: &Path,
    csv: bool,
    out: Option<&Path>,
    shard: Option<Shard>,
) -> anyhow::Result<u8> {
    let path_owned = path.to_owned();
    let manifest = tokio::task::spawn_blocking(move || manifest::load(&path_owned)).await??;
    for line in manifest.warning_lines() {
        eprintln!("warning: {line}");
    }
    let own = |variant: &Variant| shard.is_none_or(|shard| shard.contains(&variant.id));
    // Each variant is built as it is looked at, and dropped: a million are never held.
    // Against a folder, the variants are held by id.
    let against = match out {
        Some(dir) => {
            // Every shard's variants: a paid task of a variant not among them is collected.
            let listed = Arc::new(manifest.variants.table());
            let mine = match shard {
                Some(shard) => Arc::new(listed.subset(|id| shard.contains(id))),
                None => Arc::clone(&listed),
            };
            let (resume, folded) = plan_against(&mine, &listed, shard, dir).await?;
            Some((mine, resume, folded))
        }
        None => None,
    };
    let intents = against.as_ref().map(|(_, resume, _)| &resume.intents);
    let variants = manifest.variants.iter().filter(|v| own(v));
    let written = write_plan(io::stdout().lock(), variants, csv, intents);
    match written {
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => return Ok(SUCCESS),
        other => other?,
    }
    if let (Some((mine, resume, folded)), Some(dir)) = (&against, out) {
        // On stderr with --csv, so that stdout stays one clean table.
        let summary = cost_summary(resume, dir);
        match csv {
            true => eprintln!("{summary}"),
            false => println!("{summary}"),
        }
        let lines = [
            bucket_summary(&manifest, mine, resume, folded).await?,
            balance(&manifest).await,
        ];
        for line in lines.into_iter().flatten() {
            match csv {
                true => eprintln!("{line}"),
                false => println!("{line}"),
            }
        }
    }
    Ok(SUCCESS)
}

/// What a run into `dir` would do, from its journals (every shard's), read and never
/// written; and the rest of their fold (the uploads they know).
async fn plan_against(
    variants: &VariantTable,
    listed: &VariantTable,
    shard: Option<Shard>,
    dir: &Path,
) -> anyhow::Result<(Resume, Folded)> {
    let mut folded = Folder::new(dir, shard).read()?;
    let rerun = Rerun {
        retry_failed: false,
        now: chrono::Utc::now(),
    };
    let priors = std::mem::take(&mut folded.priors);
    let resume =
        resume::prepare(variants, listed, shard, priors, &folded.store, dir, rerun).await?;
    Ok((resume, folded))
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
    if !resume.orphans.is_empty() {
        text.push_str(&format!(
            "; collect {} paid tasks of variants that changed or left the manifest into superseded/",
            resume.orphans.len()
        ));
    }
    text.push_str("; each task is charged when it succeeds");
    text
}

/// In `upload.mode = "s3"`: how many of the stems to submit the bucket holds, asked
/// (HEAD, as a run does) when the credentials are at hand; without them, an upper bound.
async fn bucket_summary(
    manifest: &manifest::Manifest,
    variants: &VariantTable,
    resume: &Resume,
    folded: &Folded,
) -> anyhow::Result<Option<String>> {
    let manifest::UploadMode::S3(settings) = &manifest.upload.mode else {
        return Ok(None);
    };
    let stems = crate::scheduler::local_stems_to_submit(variants.iter(), &resume.entries);
    let mut distinct: Vec<String> = stems
        .iter()
        .map(|stem| crate::storage::keys::stem_key(&settings.prefix, stem))
        .collect();
    distinct.sort_unstable();
    distinct.dedup();
    let Ok(Some((bucket, _))) = super::bucket::open_bucket(manifest) else {
        return Ok(Some(format!(
            "stems: up to {} to upload (the bucket was not asked: {} and {} are not both set)",
            distinct.len(),
            crate::storage::ACCESS_KEY_ENV,
            crate::storage::SECRET_KEY_ENV
        )));
    };
    let journaled = folded.uploads(bucket.id());
    let stop = tokio_util::sync::CancellationToken::new();
    let context = crate::scheduler::bucket::SurveyContext {
        // `plan` writes nothing.
        journal: None,
        retry: crate::api::retry::RetryPolicy::new(manifest.run.max_attempts),
        stop: &stop,
        journaled: &journaled,
        now: chrono::Utc::now(),
    };
    let surveyed =
        crate::scheduler::bucket::survey(&bucket, &settings.prefix, &stems, &context).await;
    Ok(Some(match surveyed {
        Ok(found) => format!(
            "stems: {} to upload, {} already in the bucket",
            found.to_upload,
            found.stored.len()
        ),
        Err(crate::scheduler::retrying::CallFailure::Failed(err)) => {
            format!(
                "stems: up to {} to upload (the bucket could not be asked: {err})",
                distinct.len()
            )
        }
        Err(crate::scheduler::retrying::CallFailure::Stopped) => return Ok(None),
    }))
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
    variants: impl IntoIterator<Item = Variant>,
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
    variants: impl IntoIterator<Item = Variant>,
    intents: Option<&HashMap<VariantId, Intent>>,
) -> io::Result<()> {
    let mut writer = ::csv::Writer::from_writer(out);
    writer.write_record(plan_header(intents.is_some()))?;
    for variant in variants {
        writer.write_record(plan_row(&variant, intents))?;
    }
    writer.flush()
}

fn write_plan_text(
    mut out: impl Write,
    variants: impl IntoIterator<Item = Variant>,
    intents: Option<&HashMap<VariantId, Intent>>,
) -> io::Result<()> {
    let header = plan_header(intents.is_some());
    let mut count = 0;
    for variant in variants {
        count += 1;
        let row = plan_row(&variant, intents);
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
    writeln!(out, "{}", counted(count, "variant"))?;
    out.flush()
}

/// `status`: the folder's variants by status and stem, and whether a run holds it now; as
/// a table, or with `json` as one JSON object.
pub(super) fn status(dir: &Path, json: bool) -> anyhow::Result<u8> {
    let folder = read_folder(dir)?;
    let mut out = io::stdout().lock();
    let written = match json {
        true => writeln!(out, "{}", folder.to_json()),
        false => folder.write_text(&mut out),
    };
    match written {
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(SUCCESS),
        other => {
            other?;
            Ok(SUCCESS)
        }
    }
}

/// The statuses, in the order of the table's columns and of the JSON's keys.
const STATUSES: [VariantStatus; 5] = [
    VariantStatus::Finished,
    VariantStatus::Failed,
    VariantStatus::Timeout,
    VariantStatus::Error,
    VariantStatus::Pending,
];

/// Variants by status, in the order of [`STATUSES`].
type Counts = [usize; 5];

/// Where `status` read the variants' statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// `results.csv`, as new as the journal.
    Csv,
    /// The journal, newer than `results.csv` (a run is going on, or was killed) or
    /// without one.
    Journal,
}

/// What `status` found in an output folder.
struct FolderStatus {
    source: Source,
    lock: LockState,
    /// Every variant: its stem, when known, and its status.
    variants: Vec<(Option<String>, VariantStatus)>,
    /// Their tracks by QC verdict.
    tracks: QcCounts,
}

/// One variant as `results.csv` lists it.
struct CsvVariant {
    id: String,
    stem: String,
    status: VariantStatus,
    /// Its tracks' `qc` words (empty when the CSV has no such column).
    qc: Vec<String>,
}

/// Reads an output folder without writing anything to it: the lock, and the statuses from
/// `results.csv`, or from the journal when the CSV is older than it (or missing).
fn read_folder(dir: &Path) -> anyhow::Result<FolderStatus> {
    let folder = Folder::new(dir, None);
    let csv_path = dir.join(FILE_NAME);
    let csv_time = modified(&csv_path)?;
    // Every shard's journal counts: a sharded folder's results.csv lags behind its shards.
    let journal_time = folder.newest_journal_time()?;
    if csv_time.is_none() && !folder.has_state() {
        return Err(ExpectedError::usage(format!(
            "{} is not a stembatch output folder: it holds neither {FILE_NAME} nor {}/",
            dir.display(),
            crate::journal::STATE_DIR
        ))
        .into());
    }
    let lock = folder.holder()?;
    let csv = match csv_time {
        Some(_) => read_csv_variants(&csv_path)?,
        None => Vec::new(),
    };
    let source = match (csv_time, journal_time) {
        (Some(csv), Some(journal)) if csv < journal => Source::Journal,
        (Some(_), _) => Source::Csv,
        (None, _) => Source::Journal,
    };
    let (variants, tracks) = match source {
        Source::Csv => {
            let mut tracks = QcCounts::default();
            for word in csv.iter().flat_map(|v| &v.qc) {
                tracks.add_word(word);
            }
            let variants = csv.into_iter().map(|v| (Some(v.stem), v.status)).collect();
            (variants, tracks)
        }
        Source::Journal => journal_variants(&csv, &folder.read()?.priors),
    };
    Ok(FolderStatus {
        source,
        lock,
        variants,
        tracks,
    })
}

/// When the file at `path` was last written; `None` when there is none.
fn modified(path: &Path) -> anyhow::Result<Option<std::time::SystemTime>> {
    match std::fs::metadata(path).and_then(|m| m.modified()) {
        Ok(time) => Ok(Some(time)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(anyhow::anyhow!("cannot read {}: {err}", path.display())),
    }
}

/// Each variant of `results.csv` once (a finished variant has a row per track).
fn read_csv_variants(path: &Path) -> anyhow::Result<Vec<CsvVariant>> {
    let mut reader = ::csv::Reader::from_path(path)
        .map_err(|e| ExpectedError::usage(format!("cannot read {}: {e}", path.display())))?;
    let headers = reader.headers()?.clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| ExpectedError::usage(format!("{}: no column {name}", path.display())))
    };
    let (stem_col, id_col, status_col) =
        (column("stem")?, column("variant_id")?, column("status")?);
    // Older files have no QC columns: their tracks count as not checked.
    let (file_col, qc_col) = (column("file").ok(), column("qc").ok());
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut variants: Vec<CsvVariant> = Vec::new();
    for row in reader.records() {
        let row = row?;
        let track = file_col.is_some_and(|c| row.get(c).is_some_and(|f| !f.is_empty()));
        let qc = || qc_col.and_then(|c| row.get(c)).unwrap_or("").to_owned();
        if let Some(&at) = seen.get(&row[id_col]) {
            if track {
                variants[at].qc.push(qc());
            }
            continue;
        }
        seen.insert(row[id_col].to_owned(), variants.len());
        variants.push(CsvVariant {
            qc: if track { vec![qc()] } else { Vec::new() },
            id: row[id_col].to_owned(),
            stem: row[stem_col].to_owned(),
            // A word this stembatch does not know is counted as not done.
            status: STATUSES
                .into_iter()
                .find(|s| s.as_str() == &row[status_col])
                .unwrap_or(VariantStatus::Pending),
        });
    }
    Ok(variants)
}

/// The variants with the journal's statuses. With a `results.csv` (older than the
/// journal), its variants are the ones counted: they are the last run's manifest, which
/// the journal, knowing variants by id only, cannot tell from the variants of earlier
/// manifests; each takes the journal's status when the journal knows it (a variant never
/// submitted keeps the CSV's). Without a CSV, every variant the journal knows is counted,
/// named after the stem folder of its tracks (`audio/<stem>/…`) when it has any.
fn journal_variants(
    csv: &[CsvVariant],
    priors: &HashMap<VariantId, Prior>,
) -> (Vec<(Option<String>, VariantStatus)>, QcCounts) {
    let mut tracks = QcCounts::default();
    let count = |tracks: &mut QcCounts, prior: &Prior| {
        let (status, verdicts) = prior.status_and_verdicts();
        verdicts.for_each(|verdict| tracks.add(verdict));
        status
    };
    if !csv.is_empty() {
        let by_id: HashMap<&str, _> = priors.iter().map(|(id, p)| (id.as_str(), p)).collect();
        let variants = csv
            .iter()
            .map(|v| {
                let status = match by_id.get(v.id.as_str()) {
                    Some(prior) => count(&mut tracks, prior),
                    // Never submitted since: the CSV's tracks are its own.
                    None => {
                        v.qc.iter().for_each(|word| tracks.add_word(word));
                        v.status
                    }
                };
                (Some(v.stem.clone()), status)
            })
            .collect();
        return (variants, tracks);
    }
    let mut variants: Vec<_> = priors
        .iter()
        .map(|(id, prior)| {
            let stem = prior
                .task
                .iter()
                .flat_map(|task| &task.tracks)
                .find_map(|track| stem_of_track(&track.file));
            let status = count(&mut tracks, prior);
            (id, stem, status)
        })
        .collect();
    // The journal's map has no order; a stable one keeps the output reproducible.
    variants.sort_by(|a, b| a.0.cmp(b.0));
    let variants = variants
        .into_iter()
        .map(|(_, stem, status)| (stem, status))
        .collect();
    (variants, tracks)
}

/// The stem of a track file `audio/<stem>/<name>`, relative to the output folder.
fn stem_of_track(file: &str) -> Option<String> {
    let (stem, _name) = file.strip_prefix("audio/")?.rsplit_once('/')?;
    (!stem.is_empty()).then(|| stem.to_owned())
}

impl FolderStatus {
    /// Counts in all, by stem, and of the variants whose stem is not known.
    fn counts(&self) -> (Counts, BTreeMap<&str, Counts>, Counts) {
        let (mut total, mut by_stem, mut unknown) =
            (Counts::default(), BTreeMap::new(), Counts::default());
        for (stem, status) in &self.variants {
            let slot = STATUSES.iter().position(|s| s == status).unwrap_or(4);
            total[slot] += 1;
            match stem {
                Some(stem) => {
                    by_stem.entry(stem.as_str()).or_insert_with(Counts::default)[slot] += 1
                }
                None => unknown[slot] += 1,
            }
        }
        (total, by_stem, unknown)
    }

    /// `{"source":…,"locked_by":…,"total":{…},"by_stem":{"<stem>":{…}}}`; variants
    /// whose stem is not known are in `total` only.
    fn to_json(&self) -> serde_json::Value {
        let counts = |counts: &Counts| {
            let map: serde_json::Map<_, _> = STATUSES
                .iter()
                .zip(counts)
                .map(|(s, c)| (s.as_str().to_owned(), serde_json::Value::from(*c)))
                .collect();
            serde_json::Value::Object(map)
        };
        let (total, by_stem, _) = self.counts();
        let by_stem: serde_json::Map<_, _> = by_stem
            .iter()
            .map(|(stem, c)| ((*stem).to_owned(), counts(c)))
            .collect();
        let locked_by = match &self.lock {
            LockState::Free => serde_json::Value::Null,
            LockState::Held(holder) => serde_json::json!({
                "pid": holder.as_ref().map(|h| h.pid),
                "since": holder.as_ref().and_then(|h| h.since).map(rfc3339),
            }),
        };
        serde_json::json!({
            "source": match self.source {
                Source::Csv => "csv",
                Source::Journal => "journal",
            },
            "locked_by": locked_by,
            "total": counts(&total),
            "by_stem": by_stem,
            "tracks": {
                "total": self.tracks.total(),
                "qc": self.tracks,
            },
        })
    }

    /// The table by stem, then where it was read from and whether a run holds the folder.
    fn write_text(&self, out: &mut impl Write) -> io::Result<()> {
        const UNKNOWN: &str = "(unknown)";
        let (total, by_stem, unknown) = self.counts();
        let width = by_stem
            .keys()
            .map(|s| s.len())
            .max()
            .unwrap_or(0)
            .max(UNKNOWN.len());
        let line = |out: &mut dyn Write, label: &str, cells: Vec<String>| {
            writeln!(out, "{label:width$}  {}", cells.join(""))
        };
        let numbers = |counts: &Counts| counts.map(|c| format!("{c:>9}")).to_vec();
        line(
            out,
            "stem",
            STATUSES.map(|s| format!("{:>9}", s.as_str())).to_vec(),
        )?;
        for (stem, counts) in &by_stem {
            line(out, stem, numbers(counts))?;
        }
        if unknown.iter().sum::<usize>() > 0 {
            line(out, UNKNOWN, numbers(&unknown))?;
        }
        line(out, "total", numbers(&total))?;
        writeln!(out, "{}", self.tracks)?;
        if self.source == Source::Journal {
            writeln!(
                out,
                "read from the journal: {FILE_NAME} is older or missing"
            )?;
        }
        match &self.lock {
            LockState::Free => writeln!(out, "no run holds this folder"),
            LockState::Held(Some(Holder { pid, since })) => writeln!(
                out,
                "a run holds this folder: pid {pid}{}",
                since
                    .map(|t| format!(", since {}", rfc3339(t)))
                    .unwrap_or_default()
            ),
            LockState::Held(None) => writeln!(out, "a run holds this folder"),
        }
    }
}

fn rfc3339(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stem_of_a_track_is_its_folder_under_audio() {
        assert_eq!(
            stem_of_track("audio/ballad/piano-1.mp3").as_deref(),
            Some("ballad")
        );
        assert_eq!(
            stem_of_track("audio/a b/x-t2-1.wav").as_deref(),
            Some("a b")
        );
        assert_eq!(stem_of_track("superseded/ballad/x.mp3"), None);
        assert_eq!(stem_of_track("audio/x.mp3"), None);
        assert_eq!(stem_of_track("audio//x.mp3"), None);
    }
}
