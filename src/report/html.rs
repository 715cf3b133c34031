//! `report.html`, the listening page: every variant of an output folder by stem, with its
//! parameters, its status and a player and a waveform per track, filterable and sortable
//! in the browser. Built from `results.csv` alone (read by column name, so columns added
//! later, such as the QC ones, are picked up when present and not needed when absent) and
//! the track files beside it: a track whose waveform the run did not draw as it landed
//! is decoded here (any format quality control reads, through the same decoder).
//!
//! Beyond results.csv the page knows of each stem what the run's manifest says, and what
//! differs between its variants ([`super::choosing`]).
//!
//! The page opens and stays usable however many variants the folder holds: it carries a
//! short index of every variant (what filters, sorts and the favourites' export read) and
//! builds cards only for what is on screen, from chunks of the full data that are inside
//! it for a small page, or beside it (`report-data/`) for a large one, loaded on demand
//! ([`super::page_data`]). The markup comes from the askama template
//! `templates/report.html` (checked at compile time), and the script and style are
//! inline; audio is referred to by relative paths. Writing it streams results.csv once
//! and never holds the variants. It never touches the journal or the network, and it is
//! written atomically (temporary file in the folder, fsync, rename; chunk files first).

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use askama::Template;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use serde::Serialize;

use super::choosing::{save_stems, saved_stems, Stems};
use super::csv::FILE_NAME as RESULTS_FILE;
use super::page_data::{remove_stale, Builder, DataFiles, SpoolText};
pub use crate::waveform::{waveform, WAVE_ALPHABET, WAVE_POINTS};

/// The page's name inside the output folder.
pub const FILE_NAME: &str = "report.html";

/// Why the page could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// The folder has no results.csv.
    #[error("{} has no {RESULTS_FILE}: not a stembatch output folder, or no run has ended there yet (hint: run `stembatch run MANIFEST --out {}` first)", dir.display(), dir.display())]
    NoResults {
        /// The folder.
        dir: PathBuf,
    },
    /// results.csv cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Csv {
        /// The file.
        path: PathBuf,
        /// Why.
        source: csv::Error,
    },
    /// results.csv lacks a column the page needs.
    #[error("{}: no column {column} (hint: is it a stembatch results.csv?)", path.display())]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column.
        column: &'static str,
    },
    /// The page cannot be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The template failed (a bug: its inputs are plain data).
    #[error("cannot render the listening page: {0}")]
    Render(#[from] askama::Error),
}

/// What a written page holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageSummary {
    /// Where it is.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Variants shown.
    pub variants: usize,
    /// Tracks shown.
    pub tracks: usize,
    /// Tracks with a waveform.
    pub waveforms: usize,
    /// The chunk files beside it (none for a page that holds its data).
    pub data: DataFiles,
    /// When it says it was written.
    pub written_at: String,
}

/// One track of a variant, as the page's script reads it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TrackView {
    /// The track number.
    pub n: String,
    /// The file, relative to the folder and percent-encoded: the player's `src`.
    pub src: String,
    /// The file as results.csv names it.
    pub file: String,
    /// Whether the file is on disk.
    pub exists: bool,
    /// The provider's duration, seconds.
    pub duration: Option<f64>,
    /// The decoded duration, seconds (QC column, when present).
    pub decoded: Option<f64>,
    /// Sample peak in dBFS (QC column, when present).
    pub peak_dbfs: Option<f64>,
    /// Integrated loudness (QC column, when present).
    pub lufs: Option<f64>,
    /// The QC verdict (when the column is present).
    pub qc: String,
    /// The waveform: [`WAVE_POINTS`] characters of [`WAVE_ALPHABET`], empty when the file
    /// is not a readable WAV.
    pub wave: String,
}

/// One variant (one or more rows of results.csv), as the page's script reads it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct VariantView {
    /// variant_id.
    pub id: String,
    /// The stem's name.
    pub stem: String,
    /// The variant's name.
    pub name: String,
    /// The take number.
    pub take: String,
    /// finished, failed, timeout, error, pending.
    pub status: String,
    /// Why it did not finish.
    pub error: String,
    /// The provider's task.
    pub task: String,
    /// The title sent.
    pub title: String,
    /// The tags sent.
    pub tags: String,
    /// The negative tags sent.
    pub negative_tags: String,
    /// The model.
    pub model: String,
    /// m, f or empty.
    pub gender: String,
    /// style_weight.
    pub style_weight: Option<f64>,
    /// weirdness_constraint.
    pub weirdness: Option<f64>,
    /// audio_weight.
    pub audio_weight: Option<f64>,
    /// finished_at.
    pub finished_at: String,
    /// Its tracks, in order.
    pub tracks: Vec<TrackView>,
}

/// Everything the page shows, read from a folder.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Variants in results.csv order (manifest order).
    pub variants: Vec<VariantView>,
    /// Whether results.csv has the `qc` column.
    pub has_qc: bool,
    /// What the manifest says of the stems, by name (empty when not known).
    pub stems: Stems,
}

/// Waveforms the run drew as tracks landed, by file relative to the folder: each is
/// taken once, by the track it belongs to.
pub trait KnownWaves {
    /// The waveform of `file`, if drawn.
    fn take(&mut self, file: &str) -> Option<String>;
}

impl KnownWaves for HashMap<String, String> {
    fn take(&mut self, file: &str) -> Option<String> {
        self.remove(file)
    }
}

/// Reads `DIR/results.csv` and the peaks of its WAV tracks.
pub fn read(dir: &Path) -> Result<Report, PageError> {
    read_with(dir, HashMap::new())
}

/// As [`read`], with the waveforms already drawn (by the run, as each track landed), by
/// file relative to `dir`: only the others are read from disk. Holds every variant: the
/// page itself is written from [`each_variant`].
pub fn read_with(dir: &Path, mut known: HashMap<String, String>) -> Result<Report, PageError> {
    let mut variants = Vec::new();
    let has_qc = each_variant(dir, &mut known, |variant| {
        variants.push(variant);
        Ok(())
    })?;
    Ok(Report {
        variants,
        has_qc,
        stems: Stems::new(),
    })
}

/// Streams the variants of `DIR/results.csv` to `each`, one at a time, in the file's
/// order, with their tracks; returns whether the file has the QC columns. A variant is
/// the run of consecutive rows with its `variant_id` (every producer of results.csv
/// writes a variant's rows together).
pub fn each_variant(
    dir: &Path,
    known: &mut dyn KnownWaves,
    mut each: impl FnMut(VariantView) -> Result<(), PageError>,
) -> Result<bool, PageError> {
    let path = dir.join(RESULTS_FILE);
    let csv_error = |source| PageError::Csv {
        path: path.clone(),
        source,
    };
    let mut reader = match csv::Reader::from_path(&path) {
        Ok(reader) => reader,
        Err(err) => match err.kind() {
            csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
                return Err(PageError::NoResults {
                    dir: dir.to_owned(),
                })
            }
            _ => return Err(csv_error(err)),
        },
    };
    let headers = reader.headers().map_err(csv_error)?.clone();
    let columns = Columns::new(&headers);
    for column in ["stem", "variant", "variant_id", "status"] {
        if columns.index(column).is_none() {
            return Err(PageError::MissingColumn { path, column });
        }
    }
    let mut current: Option<VariantView> = None;
    let mut row = csv::StringRecord::new();
    while reader.read_record(&mut row).map_err(csv_error)? {
        let get = |name: &str| columns.get(&row, name);
        let id = get("variant_id");
        if let Some(done) = current.take_if(|v| v.id != id) {
            each(done)?;
        }
        let variant = current.get_or_insert_with(|| variant_of(&get));
        if !get("file").is_empty() {
            variant.tracks.push(track_of(dir, &get, known));
        }
    }
    if let Some(last) = current {
        each(last)?;
    }
    Ok(columns.index("qc").is_some())
}

/// Column positions by name.
struct Columns(HashMap<String, usize>);

impl Columns {
    fn new(headers: &csv::StringRecord) -> Self {
        Columns(
            headers
                .iter()
                .enumerate()
                .map(|(i, h)| (h.to_owned(), i))
                .collect(),
        )
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.0.get(name).copied()
    }

    /// The value, or "" when the column or the field is missing.
    fn get(&self, row: &csv::StringRecord, name: &str) -> String {
        self.index(name)
            .and_then(|i| row.get(i))
            .unwrap_or("")
            .to_owned()
    }
}

fn number(text: &str) -> Option<f64> {
    text.trim().parse().ok().filter(|n: &f64| n.is_finite())
}

fn variant_of(get: &dyn Fn(&str) -> String) -> VariantView {
    VariantView {
        id: get("variant_id"),
        stem: get("stem"),
        name: get("variant"),
        take: get("take"),
        status: get("status"),
        error: get("error"),
        task: get("task_id"),
        title: get("title"),
        tags: get("tags"),
        negative_tags: get("negative_tags"),
        model: get("model"),
        gender: get("vocal_gender"),
        style_weight: number(&get("style_weight")),
        weirdness: number(&get("weirdness_constraint")),
        audio_weight: number(&get("audio_weight")),
        finished_at: get("finished_at"),
        tracks: Vec::new(),
    }
}

fn track_of(dir: &Path, get: &dyn Fn(&str) -> String, known: &mut dyn KnownWaves) -> TrackView {
    let file = get("file");
    let path = dir.join(&file);
    let exists = path.is_file();
    TrackView {
        n: get("track"),
        src: relative_url(&file),
        exists,
        duration: number(&get("duration_s")),
        decoded: number(&get("decoded_s")),
        peak_dbfs: number(&get("peak_dbfs")),
        lufs: number(&get("lufs")),
        qc: get("qc"),
        // Moved, not copied: each wave is one track's.
        wave: match (exists, known.take(&file)) {
            (true, Some(wave)) => wave,
            (true, None) => waveform(&path).unwrap_or_default(),
            (false, _) => String::new(),
        },
        file,
    }
}

/// Characters escaped in a path segment of a relative URL: what would end the segment or
/// start a query or fragment, and what is not plain ASCII.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'?')
    .add(b'<')
    .add(b'>')
    .add(b'\\')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b':');

/// `file` (relative, `/`-separated) as a relative URL, each segment percent-encoded.
pub fn relative_url(file: &str) -> String {
    file.split('/')
        .map(|segment| utf8_percent_encode(segment, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// A value offered by a filter, with how many variants have it.
pub struct Choice {
    /// The value, as the data holds it.
    pub value: String,
    /// Variants with it.
    pub count: usize,
}

/// One stem's section.
pub struct StemSection {
    /// Its name.
    pub name: String,
    /// Its variants.
    pub variants: usize,
    /// Its finished variants.
    pub finished: usize,
}

/// The template's inputs.
#[derive(Template)]
#[template(path = "report.html")]
struct Page<'a> {
    title: &'a str,
    generated_at: String,
    variants: usize,
    tracks: usize,
    stems: &'a [StemSection],
    statuses: &'a [Choice],
    models: &'a [Choice],
    style_weights: &'a [Choice],
    weirdness: &'a [Choice],
    audio_weights: &'a [Choice],
    qcs: &'a [Choice],
    has_qc: bool,
    /// The meta block, already safe inside a `<script>` element.
    meta: String,
    /// The index rows (safe inside a `<script>` element, as written).
    index: SpoolText<'a>,
    /// The chunks when they are inline, else nothing.
    chunks: SpoolText<'a>,
}

/// JSON that is safe inside a `<script>` element: no `<`, `>` or `&` at all (so no `</`
/// and no `<!--`), and no line separators that old parsers end a string at.
pub(super) fn script_json<T: Serialize + ?Sized>(value: &T) -> String {
    let json = serde_json::to_string(value).expect("the page data serialises");
    // One pass into one string: a chain of replaces would copy it once per replace.
    let mut safe = String::with_capacity(json.len() + json.len() / 64);
    for c in json.chars() {
        match c {
            '<' => safe.push_str("\\u003c"),
            '>' => safe.push_str("\\u003e"),
            '&' => safe.push_str("\\u0026"),
            '\u{2028}' => safe.push_str("\\u2028"),
            '\u{2029}' => safe.push_str("\\u2029"),
            c => safe.push(c),
        }
    }
    safe
}

/// The lock file that serialises the writers of a folder's page (the end of a run, a
/// shard's, `stembatch report`), in the state folder.
pub const PAGE_LOCK: &str = "page.lock";

/// Waits for the folder's page lock: a writer removes the chunk files its page does not
/// name, which must not be ones that another is writing.
fn lock_page(dir: &Path) -> Result<std::fs::File, PageError> {
    let state = crate::journal::state_dir(dir);
    let path = state.join(PAGE_LOCK);
    let fail = |source| PageError::Write {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(&state).map_err(fail)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(fail)?;
    // Bounded: a run ends holding its folder's locks, and a page writer that hangs (a
    // stuck `report`, a lock a dead NFS client holds) must not keep them, and with them
    // the next night, forever. The page is derived: `stembatch report` writes it later.
    let since = std::time::Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::Error(err)) => return Err(fail(err)),
            Err(std::fs::TryLockError::WouldBlock) if since.elapsed() >= PAGE_LOCK_WAIT => {
                return Err(fail(std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    format!(
                        "another process has been writing this folder's page for over {} s (its lock {}); run `stembatch report` later",
                        PAGE_LOCK_WAIT.as_secs(),
                        path.display()
                    ),
                )))
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                std::thread::sleep(std::time::Duration::from_millis(100))
            }
        }
    }
}

/// How long a page writer waits for another to finish: several times what writing the
/// page of 100,000 variants takes.
const PAGE_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Reads `DIR/results.csv` and rewrites `DIR/report.html` atomically, with the stems
/// the last run saved.
pub fn write_file(dir: &Path) -> Result<PageSummary, PageError> {
    write_file_with(dir, HashMap::new(), None)
}

/// The page's title: the name of the folder `dir`.
pub fn title_of(dir: &Path) -> String {
    std::fs::canonicalize(dir)
        .ok()
        .as_deref()
        .unwrap_or(dir)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

/// As [`write_file`], with the waveforms already drawn, by file (see [`read_with`]), and
/// the run's `stems` (saved for a later [`write_file`]; `None`: the saved ones).
///
/// Streamed: the variants pass one at a time from results.csv into spools
/// ([`super::page_data`]), which are copied into the page (and its chunk files) at the
/// end; memory holds what is counted per stem and per distinct value, not the variants.
pub fn write_file_with(
    dir: &Path,
    mut known: impl KnownWaves,
    stems: Option<&Stems>,
) -> Result<PageSummary, PageError> {
    let stems = match stems {
        Some(stems) => {
            save_stems(dir, stems);
            stems.clone()
        }
        None => saved_stems(dir),
    };
    let path = dir.join(FILE_NAME);
    let write_error = |source| PageError::Write {
        path: path.clone(),
        source,
    };
    if !dir.join(RESULTS_FILE).exists() {
        return Err(PageError::NoResults {
            dir: dir.to_owned(),
        });
    }
    // Held to the end: each writer removes the chunk files its page does not name.
    let _only_writer = lock_page(dir)?;
    let data_error = |(path, source)| PageError::Write { path, source };
    let mut builder = Builder::new(dir).map_err(data_error)?;
    let has_qc = each_variant(dir, &mut known, |variant| {
        builder.add(&variant).map_err(data_error)
    })?;
    drop(known);
    let built = builder.finish(has_qc, &stems).map_err(data_error)?;
    let title = title_of(dir);
    let written_at = written_now();
    let page = Page {
        title: &title,
        generated_at: written_at.clone(),
        variants: built.variants,
        tracks: built.tracks,
        stems: &built.sections,
        statuses: &built.statuses,
        models: &built.models,
        style_weights: &built.style_weights,
        weirdness: &built.weirdness,
        audio_weights: &built.audio_weights,
        qcs: &built.qcs,
        has_qc,
        meta: script_json(&built.meta),
        index: built.index(),
        chunks: built.inline_chunks(),
    };
    let mut temp = page_temp(dir).map_err(write_error)?;
    {
        let mut out = std::io::BufWriter::new(temp.as_file_mut());
        page.write_into(&mut out).map_err(write_error)?;
        out.flush().map_err(write_error)?;
    }
    drop(page);
    let bytes = temp.as_file().metadata().map_err(write_error)?.len();
    crate::output_files::persist_durably(temp, &path).map_err(write_error)?;
    remove_stale(dir, built.files.as_ref());
    Ok(PageSummary {
        bytes,
        variants: built.variants,
        tracks: built.tracks,
        waveforms: built.waveforms,
        data: built.files.clone().unwrap_or_default(),
        path,
        written_at,
    })
}

/// The time a page says it was written, as it says it.
fn written_now() -> String {
    chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string()
}

/// Writes `DIR/report.html` again as it is but for the time it says it was written
/// (`was`), and saves `stems` as [`write_file_with`] does: the page of an unchanged
/// results.csv (`report::page_stamp`), written without reading a variant. The new time,
/// or `None` when the page does not say `was` exactly once (then it is written whole).
pub fn rewrite_written_time(
    dir: &Path,
    stems: &Stems,
    was: &str,
) -> Result<Option<String>, PageError> {
    let path = dir.join(FILE_NAME);
    let write_error = |source| PageError::Write {
        path: path.clone(),
        source,
    };
    let _only_writer = lock_page(dir)?;
    let page = std::fs::read_to_string(&path).map_err(write_error)?;
    let said = |at: &str| format!("{WRITTEN}{at}</p>");
    let old = said(was);
    let mut found = page.match_indices(&old).map(|(at, _)| at);
    let (Some(at), None) = (found.next(), found.next()) else {
        return Ok(None);
    };
    save_stems(dir, stems);
    let now = written_now();
    let mut temp = page_temp(dir).map_err(write_error)?;
    {
        let mut out = std::io::BufWriter::new(temp.as_file_mut());
        out.write_all(&page.as_bytes()[..at]).map_err(write_error)?;
        out.write_all(said(&now).as_bytes()).map_err(write_error)?;
        out.write_all(&page.as_bytes()[at + old.len()..])
            .map_err(write_error)?;
        out.flush().map_err(write_error)?;
    }
    crate::output_files::persist_durably(temp, &path).map_err(write_error)?;
    Ok(Some(now))
}

/// A temporary file for the page, beside it.
fn page_temp(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(crate::output_files::PAGE_TEMP.0)
        .suffix(crate::output_files::PAGE_TEMP.1)
        .permissions(crate::output_files::permissions())
        .tempfile_in(dir)
}

/// What comes before the time a page says it was written (`templates/report.html`).
const WRITTEN: &str = "· written ";

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(path: &Path, samples: &[i16]) {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut writer = hound::WavWriter::create(path, spec).unwrap();
        for s in samples {
            writer.write_sample(*s).unwrap();
        }
        writer.finalize().unwrap();
    }

    #[test]
    fn a_silent_take_is_flat_and_a_clipped_one_reaches_the_top() {
        let dir = tempfile::tempdir().unwrap();
        let silent = dir.path().join("silent.wav");
        wav(&silent, &[0; 8000]);
        assert_eq!(waveform(&silent).unwrap(), "0".repeat(WAVE_POINTS));
        let clipped = dir.path().join("clipped.wav");
        let square: Vec<i16> = (0..8000)
            .map(|i| if i % 2 == 0 { i16::MAX } else { i16::MIN })
            .collect();
        wav(&clipped, &square);
        assert_eq!(waveform(&clipped).unwrap(), "_".repeat(WAVE_POINTS));
        let half = dir.path().join("half.wav");
        wav(&half, &[i16::MAX / 2; 8000]);
        let level = WAVE_ALPHABET.iter().position(|c| *c == b'V').unwrap();
        assert_eq!(level, 31);
        assert!(waveform(&half)
            .unwrap()
            .chars()
            .all(|c| c == 'W' || c == 'V'));
    }

    #[test]
    fn a_file_that_is_not_a_wav_has_no_waveform() {
        let dir = tempfile::tempdir().unwrap();
        let mp3 = dir.path().join("a.mp3");
        std::fs::write(&mp3, b"ID3\x04\x00\x00\x00\x00\x00\x00").unwrap();
        assert_eq!(waveform(&mp3), None);
        assert_eq!(waveform(&dir.path().join("absent.wav")), None);
    }

    #[test]
    fn the_embedded_json_cannot_end_its_script_element() {
        let json = script_json(&"</script><!-- & \u{2028}");
        assert!(!json.contains('<') && !json.contains('>') && !json.contains('&'));
        let back: String = serde_json::from_str(&json).unwrap();
        assert_eq!(back, "</script><!-- & \u{2028}");
    }

    #[test]
    fn paths_become_relative_urls_segment_by_segment() {
        assert_eq!(
            relative_url("audio/my song #1/a?b-1.wav"),
            "audio/my%20song%20%231/a%3Fb-1.wav"
        );
        assert_eq!(relative_url("audio/é/x.wav"), "audio/%C3%A9/x.wav");
    }

    const HEAD: &str = "stem,variant,take,variant_id,status,task_id,track,audio_id,title,tags,negative_tags,model,vocal_gender,style_weight,weirdness_constraint,audio_weight,duration_s,file,bytes,sha256,audio_url,submitted_at,finished_at,attempts,error";

    #[test]
    fn rows_become_variants_with_their_tracks_with_or_without_qc_columns() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("audio/s")).unwrap();
        wav(&dir.path().join("audio/s/a-1.wav"), &[100; 800]);
        let rows = "s,a,1,id1,finished,t1,1,x,s a,\"lofi, chill\",,V5,f,0.4,,0.6,20,audio/s/a-1.wav,1,ff,u,,,1,\n\
                    s,a,1,id1,finished,t1,2,y,s a,\"lofi, chill\",,V5,f,0.4,,0.6,20,audio/s/a-2.wav,1,ff,u,,,1,\n\
                    s,b,1,id2,failed,t2,,,s b,</script>,,V5,f,0.8,,,,,,,,,,1,content policy\n";
        for qc in [false, true] {
            let text = match qc {
                false => format!("{HEAD}\n{rows}"),
                true => format!(
                    "{HEAD},decoded_s,peak_dbfs,lufs,qc\n{}",
                    rows.replace('\n', ",19.9,-3.5,-14,ok\n")
                ),
            };
            std::fs::write(dir.path().join(RESULTS_FILE), text).unwrap();
            let report = read(dir.path()).unwrap();
            assert_eq!(report.has_qc, qc);
            let [a, b] = &report.variants[..] else {
                panic!("two variants: {:?}", report.variants)
            };
            assert_eq!((a.id.as_str(), a.tracks.len()), ("id1", 2));
            assert_eq!(a.style_weight, Some(0.4));
            assert_eq!(a.weirdness, None);
            assert!(a.tracks[0].exists && !a.tracks[1].exists);
            assert_eq!(a.tracks[0].wave.len(), WAVE_POINTS);
            assert_eq!(a.tracks[1].wave, "");
            assert_eq!(a.tracks[0].qc, if qc { "ok" } else { "" });
            assert_eq!(a.tracks[0].lufs, qc.then_some(-14.0));
            assert_eq!(
                (b.status.as_str(), b.error.as_str()),
                ("failed", "content policy")
            );
            assert!(b.tracks.is_empty());
            let summary = write_file(dir.path()).unwrap();
            assert_eq!(
                (summary.variants, summary.tracks, summary.waveforms),
                (2, 2, 1)
            );
            let html = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
            assert_eq!(
                html.matches("</script>").count(),
                4,
                "the data's </script> is escaped: meta, index, chunks, script"
            );
            assert!(html.contains(r#"<script type="application/json" id="meta">"#));
            assert!(html.contains(r#"<script type="application/json" id="index">"#));
            assert_eq!(html.contains(r#"id="f-qc""#), qc);
        }
    }

    #[test]
    fn a_folder_without_results_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_file(dir.path()).unwrap_err();
        assert!(matches!(err, PageError::NoResults { .. }), "{err}");
        assert!(err.to_string().contains("has no results.csv"), "{err}");
        assert!(!dir.path().join(FILE_NAME).exists());
    }
}
