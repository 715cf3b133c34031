//! The listening page's data, produced as the variants of `results.csv` stream past, so
//! that writing the page takes memory bounded by the number of stems and distinct values
//! (not variants) and time linear in the variants.
//!
//! The page's script needs two things of the variants: what filters, sorts and the
//! favourites' export read, for all of them at once (the *index*: one short row a
//! variant, its repeated strings numbered); and everything a card shows, only for the
//! cards on screen (the *chunks*: the variants, [`CHUNK`] at a time, each chunk one
//! `SB(k, [...])` call of the page's script). The index goes to an unnamed spool file as
//! the variants arrive, and is copied into the page at the end. The chunks go to a spool
//! too while the page is small ([`INLINE_CHUNKS`]), to be copied into it; past that,
//! the spooled chunks become files and each later chunk is written straight to its own
//! file, in `DIR/report-data/<generation>/`, which the page loads with a `<script src>`
//! when a card of it is to be shown (a page opened from the file system may not `fetch`
//! its neighbours, but it may load scripts from them).
//!
//! A generation's files are complete (and synced) before the page that names them is
//! renamed into place; the other generations are removed after it, so an open page keeps
//! its data until the next one replaces it, and a crash leaves only a stale generation
//! that the next page's writing removes.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::choosing::{DifferenceTally, Differences, StemInfo, Stems};
use super::html::{script_json, Choice, StemSection, VariantView};

/// Variants per chunk: a chunk file is about 1 KiB a variant with two tracks, so a few
/// hundred KiB, quick to load for the 48 cards of a screen, and 400 files at 100,000.
pub const CHUNK: usize = 256;

/// Pages of at most this many chunks hold them inline: one self-contained file (about
/// 2 MB at most).
pub const INLINE_CHUNKS: usize = 8;

/// The most variants of a page that holds its chunks.
pub const INLINE_MAX: usize = INLINE_CHUNKS * CHUNK;

/// The folder of the chunk files, beside `report.html`.
pub const DATA_DIR: &str = "report-data";

/// The loudness floor of loudness matching (EBU R128's programme level): a track is
/// never turned down below it.
const FLOOR_LUFS: f64 = -23.0;

/// Strings that repeat between variants, by number in first-seen order.
#[derive(Default)]
struct Dict {
    numbers: HashMap<String, u32>,
    values: Vec<String>,
}

impl Dict {
    fn number(&mut self, value: &str) -> u32 {
        if let Some(n) = self.numbers.get(value) {
            return *n;
        }
        let n = self.values.len() as u32;
        self.numbers.insert(value.to_owned(), n);
        self.values.push(value.to_owned());
        n
    }
}

/// What is counted of one stem as its variants pass.
struct StemTally {
    section: StemSection,
    differences: DifferenceTally,
    /// Its longest track, seconds: the scale of its waveforms when its length is unknown.
    longest: f64,
}

/// Byte counts of what a spool holds so far.
struct Spool {
    out: BufWriter<File>,
    len: u64,
}

impl Spool {
    fn new(dir: &Path) -> std::io::Result<Self> {
        Ok(Spool {
            out: BufWriter::with_capacity(1 << 16, tempfile::tempfile_in(dir)?),
            len: 0,
        })
    }

    fn put(&mut self, text: &str) -> std::io::Result<()> {
        self.out.write_all(text.as_bytes())?;
        self.len += text.len() as u64;
        Ok(())
    }

    fn into_file(self) -> std::io::Result<File> {
        self.out.into_inner().map_err(|e| e.into_error())
    }
}

/// The page's data as the variants of `results.csv` arrive, in their order.
pub(super) struct Builder {
    pub variants: usize,
    pub tracks: usize,
    pub waveforms: usize,
    stems: Vec<StemTally>,
    stem_numbers: HashMap<String, usize>,
    statuses: Dict,
    models: Dict,
    tags: Dict,
    qcs: Dict,
    status_counts: BTreeMap<String, usize>,
    model_counts: BTreeMap<String, usize>,
    qc_counts: BTreeMap<String, usize>,
    /// Weights in hundredths (they have at most 2 decimals): sortable and exact.
    weight_counts: [BTreeMap<i64, usize>; 3],
    quietest_ok: Option<f64>,
    index: Spool,
    /// The chunks while the page may hold them.
    chunks: Spool,
    /// Where each chunk starts in the chunk spool.
    chunk_starts: Vec<u64>,
    /// The chunk files, once the page is too large to hold them.
    files: Option<ChunkFiles>,
    dir: PathBuf,
}

/// The chunk files of a page being written.
struct ChunkFiles {
    folder: PathBuf,
    written: DataFiles,
    /// The chunk being written.
    current: Option<(PathBuf, BufWriter<File>)>,
}

/// Why the data could not be written: the file, and the error.
pub(super) type DataError = (PathBuf, std::io::Error);

impl ChunkFiles {
    /// A new generation's folder under `DIR/report-data/`.
    fn new(dir: &Path) -> Result<Self, DataError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let relative = format!("{DATA_DIR}/{nanos:x}-{}", std::process::id());
        let folder = dir.join(&relative);
        crate::output_files::create_dir_all_durably(&folder).map_err(|e| (folder.clone(), e))?;
        Ok(ChunkFiles {
            folder,
            written: DataFiles {
                dir: relative,
                ..DataFiles::default()
            },
            current: None,
        })
    }

    /// Starts chunk `k`'s file.
    fn start(&mut self, k: usize) -> Result<(), DataError> {
        let path = self.folder.join(chunk_file(k));
        let file = File::create(&path).map_err(|e| (path.clone(), e))?;
        self.current = Some((path, BufWriter::with_capacity(1 << 16, file)));
        Ok(())
    }

    fn put(&mut self, text: &str) -> Result<(), DataError> {
        if let Some((path, out)) = &mut self.current {
            out.write_all(text.as_bytes())
                .map_err(|e| (path.clone(), e))?;
            self.written.bytes += text.len() as u64;
        }
        Ok(())
    }

    /// Ends the chunk being written: synced, since the page will name it.
    fn end(&mut self) -> Result<(), DataError> {
        if let Some((path, out)) = self.current.take() {
            let fail = |e| (path.clone(), e);
            let file = out.into_inner().map_err(|e| fail(e.into_error()))?;
            file.sync_all().map_err(fail)?;
            self.written.files += 1;
        }
        Ok(())
    }

    /// Every chunk written: the folder synced.
    fn finish(mut self) -> Result<DataFiles, DataError> {
        self.end()?;
        File::open(&self.folder)
            .and_then(|f| f.sync_all())
            .map_err(|e| (self.folder.clone(), e))?;
        Ok(self.written)
    }
}

/// The index row of a variant, as the page's script reads it (`light()` there).
type IndexRow<'a> = (
    &'a str,
    &'a str,
    &'a str,
    usize,
    u32,
    u32,
    u32,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    u32,
    Option<f64>,
);

impl Builder {
    /// A builder for the page of `dir`, whose spools are there.
    pub fn new(dir: &Path) -> Result<Self, DataError> {
        let spool = || Spool::new(dir).map_err(|e| (dir.to_owned(), e));
        Ok(Builder {
            variants: 0,
            tracks: 0,
            waveforms: 0,
            stems: Vec::new(),
            stem_numbers: HashMap::new(),
            statuses: Dict::default(),
            models: Dict::default(),
            tags: Dict::default(),
            qcs: Dict::default(),
            status_counts: BTreeMap::new(),
            model_counts: BTreeMap::new(),
            qc_counts: BTreeMap::new(),
            weight_counts: Default::default(),
            quietest_ok: None,
            index: spool()?,
            chunks: spool()?,
            chunk_starts: Vec::new(),
            files: None,
            dir: dir.to_owned(),
        })
    }

    /// Counts `variant` and writes its index row and its chunk entry.
    pub fn add(&mut self, variant: &VariantView) -> Result<(), DataError> {
        let stem = self.stem_of(variant);
        let mut qcs: Vec<&str> = Vec::new();
        let mut duration: Option<f64> = None;
        for track in &variant.tracks {
            self.tracks += 1;
            self.waveforms += usize::from(!track.wave.is_empty());
            if !track.qc.is_empty() && !qcs.contains(&track.qc.as_str()) {
                qcs.push(&track.qc);
            }
            duration = Some(duration.unwrap_or(0.0).max(track.duration.unwrap_or(0.0)));
            let seconds = track.decoded.or(track.duration).unwrap_or(0.0);
            let tally = &mut self.stems[stem];
            tally.longest = tally.longest.max(seconds);
            if let Some(lufs) = track
                .lufs
                .filter(|_| track.qc.is_empty() || track.qc == "ok")
            {
                self.quietest_ok = Some(self.quietest_ok.map_or(lufs, |q| q.min(lufs)));
            }
        }
        qcs.sort_unstable();
        for qc in &qcs {
            *self.qc_counts.entry((*qc).to_owned()).or_default() += 1;
        }
        *self
            .status_counts
            .entry(variant.status.clone())
            .or_default() += 1;
        *self.model_counts.entry(variant.model.clone()).or_default() += 1;
        let weights = [
            variant.style_weight,
            variant.weirdness,
            variant.audio_weight,
        ];
        for (counts, weight) in self.weight_counts.iter_mut().zip(weights) {
            if let Some(w) = weight {
                *counts.entry((w * 100.0).round() as i64).or_default() += 1;
            }
        }
        let row: IndexRow = (
            &variant.id,
            &variant.name,
            &variant.take,
            stem,
            self.statuses.number(&variant.status),
            self.models.number(&variant.model),
            self.tags.number(&variant.tags),
            variant.style_weight,
            variant.weirdness,
            variant.audio_weight,
            self.qcs.number(&qcs.join(",")),
            duration,
        );
        let separator = if self.variants > 0 { ",\n" } else { "" };
        self.index
            .put(separator)
            .and_then(|()| self.index.put(&script_json(&row)))
            .map_err(|e| (self.dir.clone(), e))?;
        if self.variants.is_multiple_of(CHUNK) {
            self.start_chunk(self.variants / CHUNK)?;
        }
        // One variant a line: a line is whole UTF-8, which the copy into the page keeps.
        self.put_chunk(&script_json(variant))?;
        self.put_chunk(",\n")?;
        self.variants += 1;
        Ok(())
    }

    /// Ends chunk `k - 1` and starts chunk `k`; past [`INLINE_CHUNKS`], in files.
    fn start_chunk(&mut self, k: usize) -> Result<(), DataError> {
        if k > 0 {
            self.put_chunk("]);\n")?;
        }
        if let Some(files) = &mut self.files {
            files.end()?;
        } else if k == INLINE_CHUNKS {
            self.files = Some(self.spooled_to_files()?);
        }
        match &mut self.files {
            Some(files) => files.start(k)?,
            None => self.chunk_starts.push(self.chunks.len),
        }
        self.put_chunk(&format!("SB({k},[\n"))
    }

    fn put_chunk(&mut self, text: &str) -> Result<(), DataError> {
        match &mut self.files {
            Some(files) => files.put(text),
            None => self.chunks.put(text).map_err(|e| (self.dir.clone(), e)),
        }
    }

    /// The chunks spooled so far, each into its file: the page is too large to hold them.
    fn spooled_to_files(&mut self) -> Result<ChunkFiles, DataError> {
        let mut files = ChunkFiles::new(&self.dir)?;
        self.chunks.out.flush().map_err(|e| (self.dir.clone(), e))?;
        let ends = self.chunk_starts.iter().skip(1).copied();
        let ranges: Vec<(u64, u64)> = self
            .chunk_starts
            .iter()
            .copied()
            .zip(ends.chain([self.chunks.len]))
            .collect();
        let mut buffer = Vec::new();
        for (k, (start, end)) in ranges.into_iter().enumerate() {
            buffer.resize((end - start) as usize, 0);
            self.chunks
                .out
                .get_ref()
                .read_exact_at(&mut buffer, start)
                .map_err(|e| (self.dir.clone(), e))?;
            files.start(k)?;
            // Whole lines: each is whole UTF-8.
            files.put(std::str::from_utf8(&buffer).map_err(|e| {
                (
                    self.dir.clone(),
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                )
            })?)?;
            files.end()?;
        }
        Ok(files)
    }

    fn stem_of(&mut self, variant: &VariantView) -> usize {
        let at = match self.stem_numbers.get(&variant.stem) {
            Some(at) => *at,
            None => {
                self.stem_numbers
                    .insert(variant.stem.clone(), self.stems.len());
                self.stems.push(StemTally {
                    section: StemSection {
                        name: variant.stem.clone(),
                        variants: 0,
                        finished: 0,
                    },
                    differences: DifferenceTally::default(),
                    longest: 0.0,
                });
                self.stems.len() - 1
            }
        };
        let tally = &mut self.stems[at];
        tally.section.variants += 1;
        tally.section.finished += usize::from(variant.status == "finished");
        tally.differences.add(variant);
        at
    }

    /// The data, complete: the spools flushed, the chunk files synced, what the header
    /// and the script need.
    pub fn finish(mut self, has_qc: bool, stems: &Stems) -> Result<Built, DataError> {
        if self.variants > 0 {
            self.put_chunk("]);\n")?;
        }
        let files = self.files.take().map(ChunkFiles::finish).transpose()?;
        let chunks_len = self.chunks.len;
        let index_len = self.index.len;
        let weight = |counts: &BTreeMap<i64, usize>| -> Vec<Choice> {
            counts
                .iter()
                .map(|(hundredths, count)| Choice {
                    value: format!("{}", *hundredths as f64 / 100.0),
                    count: *count,
                })
                .collect()
        };
        let choices = |counts: &BTreeMap<String, usize>| -> Vec<Choice> {
            counts
                .iter()
                .map(|(value, count)| Choice {
                    value: value.clone(),
                    count: *count,
                })
                .collect()
        };
        let meta = Meta {
            version: 3,
            has_qc,
            chunk: CHUNK,
            chunks: self.variants.div_ceil(CHUNK),
            dir: files.as_ref().map(|f| f.dir.clone()),
            target_lufs: self.quietest_ok.map(|q| q.max(FLOOR_LUFS)),
            stems: self
                .stems
                .iter()
                .map(|tally| {
                    let name = tally.section.name.clone();
                    let info = stems.get(&name).cloned();
                    let known = info.as_ref().and_then(|i| i.seconds).unwrap_or(0.0);
                    let data = StemData {
                        scale: known.max(tally.longest),
                        info,
                        differences: tally.differences.clone().finish(),
                    };
                    (name, data)
                })
                .collect(),
            dicts: Dicts {
                stems: self.stems.iter().map(|s| s.section.name.clone()).collect(),
                statuses: std::mem::take(&mut self.statuses.values),
                models: std::mem::take(&mut self.models.values),
                tags: std::mem::take(&mut self.tags.values),
                qcs: std::mem::take(&mut self.qcs.values),
            },
        };
        Ok(Built {
            variants: self.variants,
            tracks: self.tracks,
            waveforms: self.waveforms,
            statuses: choices(&self.status_counts),
            models: choices(&self.model_counts),
            qcs: choices(&self.qc_counts),
            style_weights: weight(&self.weight_counts[0]),
            weirdness: weight(&self.weight_counts[1]),
            audio_weights: weight(&self.weight_counts[2]),
            sections: self.stems.into_iter().map(|s| s.section).collect(),
            meta,
            index: (
                self.index.into_file().map_err(|e| (self.dir.clone(), e))?,
                index_len,
            ),
            chunks: (
                self.chunks.into_file().map_err(|e| (self.dir.clone(), e))?,
                chunks_len,
            ),
            files,
        })
    }
}

/// One stem as the page's script reads it.
#[derive(Serialize)]
struct StemData {
    #[serde(flatten)]
    info: Option<StemInfo>,
    #[serde(flatten)]
    differences: Differences,
    /// The seconds a waveform's full width stands for: the stem's length, or its longest
    /// track.
    scale: f64,
}

/// The numbered strings of the index.
#[derive(Serialize)]
struct Dicts {
    stems: Vec<String>,
    statuses: Vec<String>,
    models: Vec<String>,
    tags: Vec<String>,
    qcs: Vec<String>,
}

/// What the page's script reads first (`id="meta"`).
#[derive(Serialize)]
pub(super) struct Meta {
    version: u32,
    has_qc: bool,
    /// Variants per chunk.
    chunk: usize,
    /// Chunks.
    chunks: usize,
    /// The chunk files' folder as a relative URL; `None`: the chunks are in the page.
    pub dir: Option<String>,
    /// The loudness every track is turned down to; `None`: nothing measured.
    target_lufs: Option<f64>,
    stems: BTreeMap<String, StemData>,
    dicts: Dicts,
}

/// The page's data, spooled and counted.
pub(super) struct Built {
    pub variants: usize,
    pub tracks: usize,
    pub waveforms: usize,
    pub sections: Vec<StemSection>,
    pub statuses: Vec<Choice>,
    pub models: Vec<Choice>,
    pub qcs: Vec<Choice>,
    pub style_weights: Vec<Choice>,
    pub weirdness: Vec<Choice>,
    pub audio_weights: Vec<Choice>,
    pub meta: Meta,
    index: (File, u64),
    chunks: (File, u64),
    /// The chunk files; `None`: the chunks go inside the page.
    pub files: Option<DataFiles>,
}

/// Side files written for a page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataFiles {
    /// Their folder, relative to the output folder (`report-data/<generation>`).
    pub dir: String,
    /// How many.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
}

impl Built {
    /// The index rows, to copy into the page.
    pub fn index(&self) -> SpoolText<'_> {
        SpoolText {
            file: &self.index.0,
            start: 0,
            end: self.index.1,
        }
    }

    /// The chunks, to copy into the page when it holds them (no chunk files); nothing
    /// otherwise.
    pub fn inline_chunks(&self) -> SpoolText<'_> {
        SpoolText {
            file: &self.chunks.0,
            start: 0,
            end: if self.files.is_none() {
                self.chunks.1
            } else {
                0
            },
        }
    }
}

/// The name of chunk `k`'s file, as the page's script spells it.
pub fn chunk_file(k: usize) -> String {
    format!("{k:05}.js")
}

/// Removes the chunk files of every generation but `keep` (all of them when `None`): the
/// page just written names no other. A failure is only said (debug): what is left is
/// removed by the next page.
pub(super) fn remove_stale(dir: &Path, keep: Option<&str>) {
    let data = dir.join(DATA_DIR);
    let Ok(entries) = std::fs::read_dir(&data) else {
        return;
    };
    let keep = keep.and_then(|k| k.strip_prefix(&format!("{DATA_DIR}/")));
    for entry in entries.flatten() {
        if Some(entry.file_name().to_string_lossy().as_ref()) == keep {
            continue;
        }
        if let Err(err) = std::fs::remove_dir_all(entry.path()) {
            tracing::debug!(error = %err, path = %entry.path().display(), "cannot remove stale page data");
        }
    }
    if keep.is_none() {
        let _ = std::fs::remove_dir(&data);
    }
}

/// A range of a spool, copied into the page as it is rendered (never held whole).
pub(super) struct SpoolText<'a> {
    file: &'a File,
    start: u64,
    end: u64,
}

impl fmt::Display for SpoolText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buffer = vec![0u8; 1 << 16];
        let mut carried = 0;
        let mut at = self.start;
        while at < self.end {
            let want = (buffer.len() - carried).min((self.end - at) as usize);
            let read = self
                .file
                .read_at(&mut buffer[carried..carried + want], at)
                .map_err(|_| fmt::Error)?;
            if read == 0 {
                return Err(fmt::Error);
            }
            at += read as u64;
            let filled = carried + read;
            // A character cut by the buffer's end waits for the next read.
            let valid = match std::str::from_utf8(&buffer[..filled]) {
                Ok(text) => text.len(),
                Err(err) if err.error_len().is_none() => err.valid_up_to(),
                Err(_) => return Err(fmt::Error),
            };
            f.write_str(std::str::from_utf8(&buffer[..valid]).map_err(|_| fmt::Error)?)?;
            buffer.copy_within(valid..filled, 0);
            carried = filled - valid;
        }
        match carried {
            0 => Ok(()),
            _ => Err(fmt::Error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::html::{write_file_with, FILE_NAME};

    const HEAD: &str = "stem,variant,take,variant_id,status,task_id,track,audio_id,title,tags,negative_tags,model,vocal_gender,style_weight,weirdness_constraint,audio_weight,duration_s,file,bytes,sha256,audio_url,submitted_at,finished_at,attempts,error,decoded_s,peak_dbfs,lufs,qc";

    /// A results.csv of `count` variants over three stems (in manifest order, a stem's
    /// variants together), two tracks each but every 50th failed; the waveforms as the
    /// run would have drawn them.
    fn folder(dir: &Path, count: usize) -> HashMap<String, String> {
        let mut text = format!("{HEAD}\n");
        let mut waves = HashMap::new();
        for i in 0..count {
            let stem = ["ballad", "hook", "verse"][i * 3 / count];
            let id = format!("{i:016x}");
            let tags = ["lofi, chill", "jazz, piano", "fast, drums"][i % 3];
            if i % 50 == 7 {
                text += &format!("{stem},v{i},1,{id},failed,t{i},,,{stem} v{i},\"{tags}\",,V5,f,0.{},,0.5,,,,,,,,1,content policy,,,,\n", i % 10);
                continue;
            }
            for n in 1..=2 {
                let file = format!("audio/{stem}/v{i}-{n}.wav");
                std::fs::create_dir_all(dir.join(format!("audio/{stem}"))).unwrap();
                std::fs::write(dir.join(&file), b"").unwrap();
                waves.insert(file.clone(), "W".repeat(crate::waveform::WAVE_POINTS));
                text += &format!("{stem},v{i},1,{id},finished,t{i},{n},a{i},{stem} v{i},\"{tags}\",,V5,f,0.{},,0.5,20,{file},4044,ff,http://x/{i}.wav,,,1,,19.9,-3.5,-1{},ok\n", i % 10, i % 10);
            }
        }
        std::fs::write(dir.join("results.csv"), text).unwrap();
        waves
    }

    /// The variant ids of a page's chunks, in order, each chunk checked for its number.
    fn chunk_ids(chunks: &[String]) -> Vec<String> {
        let mut ids = Vec::new();
        for (k, text) in chunks.iter().enumerate() {
            let body = text
                .strip_prefix(&format!("SB({k},[\n"))
                .and_then(|t| t.strip_suffix(",\n]);\n"))
                .unwrap_or_else(|| panic!("chunk {k} is one SB call: {}", &text[..40]));
            let variants: Vec<serde_json::Value> =
                serde_json::from_str(&format!("[{body}]")).unwrap();
            assert!(variants.len() <= CHUNK);
            ids.extend(
                variants
                    .iter()
                    .map(|v| v["id"].as_str().unwrap().to_owned()),
            );
        }
        ids
    }

    fn between<'a>(html: &'a str, start: &str, end: &str) -> &'a str {
        let at = html.find(start).unwrap() + start.len();
        &html[at..at + html[at..].find(end).unwrap()]
    }

    #[test]
    fn a_large_page_holds_an_index_and_puts_every_variant_in_one_chunk_file() {
        let dir = tempfile::tempdir().unwrap();
        let count = 5_000;
        let waves = folder(dir.path(), count);
        let summary = write_file_with(dir.path(), waves.clone(), Some(&Stems::new())).unwrap();
        let failed = count.div_ceil(50);
        assert_eq!(summary.variants, count);
        assert_eq!(summary.tracks, 2 * (count - failed));
        assert_eq!(summary.waveforms, summary.tracks);
        let files = count.div_ceil(CHUNK);
        assert_eq!(summary.data.files, files);
        let files_dir = dir.path().join(&summary.data.dir);
        let mut names: Vec<String> = std::fs::read_dir(&files_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, (0..files).map(chunk_file).collect::<Vec<_>>());

        // No variant lost, none twice, in results.csv's order: in the index and the chunks.
        let want: Vec<String> = (0..count).map(|i| format!("{i:016x}")).collect();
        let chunks: Vec<String> = names
            .iter()
            .map(|n| std::fs::read_to_string(files_dir.join(n)).unwrap())
            .collect();
        assert_eq!(chunk_ids(&chunks), want);
        let html = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        let index: Vec<serde_json::Value> =
            serde_json::from_str(between(&html, r#"id="index">"#, "</script>")).unwrap();
        let ids: Vec<&str> = index.iter().map(|r| r[0].as_str().unwrap()).collect();
        assert_eq!(ids, want);
        let meta: serde_json::Value =
            serde_json::from_str(between(&html, r#"id="meta">"#, "</script>")).unwrap();
        assert_eq!(meta["dir"], summary.data.dir.as_str());
        assert_eq!(
            (meta["chunk"].as_u64(), meta["chunks"].as_u64()),
            (Some(CHUNK as u64), Some(files as u64))
        );
        assert_eq!(
            meta["dicts"]["stems"],
            serde_json::json!(["ballad", "hook", "verse"])
        );
        assert_eq!(meta["target_lufs"], -19.0, "the quietest ok track");
        assert!(!html.contains("SB(0,"), "no chunk inside a large page");

        // Sizes: the page a short row a variant, the files the full data.
        let page_per_variant = summary.bytes as f64 / count as f64;
        let data_per_variant = summary.data.bytes as f64 / count as f64;
        eprintln!("{count} variants: report.html {} bytes ({page_per_variant:.0} a variant), {files} files of {} bytes ({data_per_variant:.0} a variant)", summary.bytes, summary.data.bytes);
        assert!(page_per_variant < 100.0, "{page_per_variant}");
        assert!(data_per_variant < 1_400.0, "{data_per_variant}");

        // Written again: one generation of files, the new one.
        let again = write_file_with(dir.path(), waves, Some(&Stems::new())).unwrap();
        assert_ne!(again.data.dir, summary.data.dir);
        assert_eq!(
            std::fs::read_dir(dir.path().join(DATA_DIR))
                .unwrap()
                .count(),
            1
        );
        assert!(dir
            .path()
            .join(&again.data.dir)
            .join(chunk_file(files - 1))
            .is_file());

        // A small page holds its chunks, and the files of the large one go.
        let small = tempfile::tempdir().unwrap();
        let waves = folder(small.path(), INLINE_MAX + 1);
        let large = write_file_with(small.path(), waves, None).unwrap();
        assert_eq!(large.data.files, (INLINE_MAX + 1).div_ceil(CHUNK));
        folder(small.path(), 300);
        let summary = write_file_with(small.path(), HashMap::new(), None).unwrap();
        assert_eq!((summary.variants, summary.data.files), (300, 0));
        assert!(!small.path().join(DATA_DIR).exists());
        let html = std::fs::read_to_string(small.path().join(FILE_NAME)).unwrap();
        let inline: Vec<String> = (0..2)
            .map(|k| {
                let start = format!("SB({k},[\n");
                let at = html.find(&start).unwrap();
                let end = html[at..].find("]);\n").unwrap() + 4;
                html[at..at + end].to_owned()
            })
            .collect();
        let want: Vec<String> = (0..300).map(|i| format!("{i:016x}")).collect();
        assert_eq!(chunk_ids(&inline), want);
    }

    /// Two writers at once (a run's end and `stembatch report`): one after the other,
    /// and the page left names a generation that is whole, the only one.
    #[test]
    fn two_writers_of_a_page_leave_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let count = INLINE_MAX + 3 * CHUNK;
        folder(dir.path(), count);
        for _ in 0..3 {
            let writers: Vec<_> = (0..2)
                .map(|_| {
                    let dir = dir.path().to_owned();
                    std::thread::spawn(move || write_file_with(&dir, HashMap::new(), None))
                })
                .collect();
            for writer in writers {
                assert_eq!(writer.join().unwrap().unwrap().variants, count);
            }
            let html = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
            let meta: serde_json::Value =
                serde_json::from_str(between(&html, r#"id="meta">"#, "</script>")).unwrap();
            let named = dir.path().join(meta["dir"].as_str().unwrap());
            assert_eq!(
                std::fs::read_dir(&named).unwrap().count(),
                count.div_ceil(CHUNK)
            );
            assert_eq!(
                std::fs::read_dir(dir.path().join(DATA_DIR))
                    .unwrap()
                    .count(),
                1
            );
        }
    }
}
