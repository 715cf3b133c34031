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
//! the spooled chunks become files and each later chunk, once whole, goes to its own
//! file in `DIR/report-data/`, which the page loads with a `<script src>` when a card of
//! it is to be shown (a page opened from the file system may not `fetch` its neighbours,
//! but it may load scripts from them).
//!
//! A chunk file is named by its content (the first 128 bits of the SHA-256 of its
//! bytes): a rerun that changes nothing finds every file already there and writes none,
//! and one changed variant writes one file; a changed chunk always has a new name, so a
//! browser never shows a cached old one. A new file is written whole, synced and renamed
//! into its name, and the folder synced, before the page that names it is renamed into
//! place; the files no page names are removed after it (under the page lock), so an open
//! page keeps its data until the next one replaces it, and a crash leaves only extra
//! files, which the next page's writing removes.

use std::collections::{BTreeMap, HashMap, HashSet};
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
    /// The chunk being built: a file is named by its whole content.
    current: String,
    /// The chunk files, once the page is too large to hold them.
    files: Option<ChunkFiles>,
    dir: PathBuf,
}

/// The chunk files of a page being written.
struct ChunkFiles {
    /// `DIR/report-data`.
    folder: PathBuf,
    data: DataFiles,
}

/// Why the data could not be written: the file, and the error.
pub(super) type DataError = (PathBuf, std::io::Error);

impl ChunkFiles {
    /// The chunk files of a page of `dir`, in `DIR/report-data/`.
    fn new(dir: &Path) -> Result<Self, DataError> {
        let folder = dir.join(DATA_DIR);
        crate::output_files::create_dir_all_durably(&folder).map_err(|e| (folder.clone(), e))?;
        Ok(ChunkFiles {
            folder,
            data: DataFiles {
                dir: DATA_DIR.to_owned(),
                ..DataFiles::default()
            },
        })
    }

    /// Chunk `text`'s file, written only when no file of its name holds it already (its
    /// name says its bytes; the length is checked, as cheap proof it is not a stranger).
    fn store(&mut self, text: &str) -> Result<(), DataError> {
        let name = chunk_file(text.as_bytes());
        let path = self.folder.join(&name);
        let len = text.len() as u64;
        let present = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.len() == len);
        if !present {
            let fail = |e| (path.clone(), e);
            let mut temp = tempfile::Builder::new()
                .prefix(CHUNK_TEMP.0)
                .suffix(CHUNK_TEMP.1)
                .permissions(crate::output_files::permissions())
                .tempfile_in(&self.folder)
                .map_err(fail)?;
            temp.write_all(text.as_bytes()).map_err(fail)?;
            // Synced before its rename: a name in the folder always holds its whole bytes.
            temp.as_file().sync_all().map_err(fail)?;
            temp.persist(&path).map_err(|e| fail(e.error))?;
            self.data.written += 1;
            self.data.written_bytes += len;
        }
        self.data.files += 1;
        self.data.bytes += len;
        self.data.names.push(name);
        Ok(())
    }

    /// Every chunk stored: the folder synced, also when nothing new was written, since
    /// the files found may be the renames of a writer that crashed before its own sync.
    fn finish(self) -> Result<DataFiles, DataError> {
        File::open(&self.folder)
            .and_then(|f| f.sync_all())
            .map_err(|e| (self.folder.clone(), e))?;
        Ok(self.data)
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
            current: String::new(),
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
            if self.variants > 0 {
                self.end_chunk()?;
            }
            self.current
                .push_str(&format!("SB({},[\n", self.variants / CHUNK));
        }
        // One variant a line: a line is whole UTF-8, which the copy into the page keeps.
        self.current.push_str(&script_json(variant));
        self.current.push_str(",\n");
        self.variants += 1;
        Ok(())
    }

    /// Ends the chunk being built: into the spool while the page may hold it, else into
    /// its file; the spooled chunks become files when the page grows past
    /// [`INLINE_CHUNKS`].
    fn end_chunk(&mut self) -> Result<(), DataError> {
        self.current.push_str("]);\n");
        if self.files.is_none() && self.chunk_starts.len() == INLINE_CHUNKS {
            self.files = Some(self.spooled_to_files()?);
        }
        match &mut self.files {
            Some(files) => files.store(&self.current)?,
            None => {
                self.chunk_starts.push(self.chunks.len);
                self.chunks
                    .put(&self.current)
                    .map_err(|e| (self.dir.clone(), e))?;
            }
        }
        self.current.clear();
        Ok(())
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
        for (start, end) in ranges {
            buffer.resize((end - start) as usize, 0);
            self.chunks
                .out
                .get_ref()
                .read_exact_at(&mut buffer, start)
                .map_err(|e| (self.dir.clone(), e))?;
            // Whole chunks: each is whole UTF-8.
            files.store(std::str::from_utf8(&buffer).map_err(|e| {
                (
                    self.dir.clone(),
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                )
            })?)?;
        }
        self.chunk_starts.clear();
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
            self.end_chunk()?;
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
            version: 4,
            has_qc,
            chunk: CHUNK,
            chunks: self.variants.div_ceil(CHUNK),
            dir: files.as_ref().map(|f| f.dir.clone()),
            files: files.as_ref().map(|f| f.names.clone()).unwrap_or_default(),
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
    /// The chunk files' names in it, chunk by chunk; empty when the chunks are in the page.
    files: Vec<String>,
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

/// Side files of a page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataFiles {
    /// Their folder, relative to the output folder (`report-data`).
    pub dir: String,
    /// How many the page names.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// How many of them this write wrote (the others were there already).
    pub written: usize,
    /// The bytes of those.
    pub written_bytes: u64,
    /// Their names in `dir`, chunk by chunk.
    pub names: Vec<String>,
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

/// Prefix and suffix of a chunk file's temporary file, in `report-data/` (removed by the
/// next page's writing when a crash leaves one).
const CHUNK_TEMP: (&str, &str) = (".chunk-", ".js");

/// The name of the file of a chunk of these bytes: 128 bits of their SHA-256, which any
/// change of the bytes changes.
pub fn chunk_file(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(bytes);
    format!("{}.js", hex::encode(&digest[..16]))
}

/// Removes what `DIR/report-data/` holds that the page just written does not name
/// (`keep`; `None`: a page that holds its chunks, so the folder goes): older chunks, a
/// crashed writer's temporary files, the generation folders of earlier releases. A failure
/// is only said (debug): what is left is removed by the next page.
pub(super) fn remove_stale(dir: &Path, keep: Option<&DataFiles>) {
    let data = dir.join(DATA_DIR);
    let Ok(entries) = std::fs::read_dir(&data) else {
        return;
    };
    let keep: HashSet<&str> = keep
        .map(|k| k.names.iter().map(String::as_str).collect())
        .unwrap_or_default();
    for entry in entries.flatten() {
        let name = entry.file_name();
        if keep.contains(name.to_string_lossy().as_ref()) {
            continue;
        }
        let path = entry.path();
        let removed = match entry.file_type() {
            Ok(kind) if kind.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        if let Err(err) = removed {
            tracing::debug!(error = %err, path = %path.display(), "cannot remove stale page data");
        }
    }
    if keep.is_empty() {
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

    fn sorted(names: &[String]) -> Vec<String> {
        let mut names = names.to_vec();
        names.sort();
        names
    }

    /// What `DIR/report-data/` holds, sorted.
    fn on_disk(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join(DATA_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Each chunk file's inode and modification time, by name: what a write changes.
    fn stamps(dir: &Path) -> BTreeMap<String, (u64, std::time::SystemTime)> {
        use std::os::unix::fs::MetadataExt;
        std::fs::read_dir(dir.join(DATA_DIR))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let meta = e.metadata().unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    (meta.ino(), meta.modified().unwrap()),
                )
            })
            .collect()
    }

    /// The page's meta block, and the ids of the variants its chunk files hold, read in
    /// the order the page names them (each file it names must be there).
    fn page_on_disk(dir: &Path) -> (serde_json::Value, Vec<String>) {
        let html = std::fs::read_to_string(dir.join(FILE_NAME)).unwrap();
        let meta: serde_json::Value =
            serde_json::from_str(between(&html, r#"id="meta">"#, "</script>")).unwrap();
        let folder = dir.join(meta["dir"].as_str().unwrap());
        let chunks: Vec<String> = meta["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|name| {
                let path = folder.join(name.as_str().unwrap());
                std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{} named by the page: {e}", path.display()))
            })
            .collect();
        (meta, chunk_ids(&chunks))
    }

    /// Replaces `old` by `new` in results.csv (it must be there).
    fn edit_results(dir: &Path, old: &str, new: &str) {
        let path = dir.join("results.csv");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(old), "{old}");
        std::fs::write(&path, text.replace(old, new)).unwrap();
    }

    /// A rerun over an unchanged folder writes no chunk file; one changed variant writes
    /// its chunk's file alone, and the replaced file goes; a crash after the new chunk
    /// files but before the page's rename leaves the old page whole, and the next write
    /// removes the extra files (and the generation folders of the previous release).
    #[test]
    fn a_rewrite_writes_only_the_chunk_files_that_changed() {
        let dir = tempfile::tempdir().unwrap();
        let count: usize = 5_000;
        let files = count.div_ceil(CHUNK);
        let waves = folder(dir.path(), count);
        let want: Vec<String> = (0..count).map(|i| format!("{i:016x}")).collect();
        // The layout of the previous release: a generation folder.
        let generation = dir.path().join(DATA_DIR).join("18a0f-77");
        std::fs::create_dir_all(&generation).unwrap();
        std::fs::write(generation.join("00000.js"), "SB(0,[\n]);\n").unwrap();

        let first = write_file_with(dir.path(), waves.clone(), None).unwrap();
        assert_eq!((first.data.files, first.data.written), (files, files));
        assert_eq!(on_disk(dir.path()), sorted(&first.data.names));
        let before = stamps(dir.path());
        // Coarse file-system clocks: a rewrite would show in the modification time.
        std::thread::sleep(std::time::Duration::from_millis(20));

        let again = write_file_with(dir.path(), waves.clone(), None).unwrap();
        assert_eq!(again.data.names, first.data.names);
        assert_eq!((again.data.written, again.data.written_bytes), (0, 0));
        assert_eq!(again.data.bytes, first.data.bytes);
        assert_eq!(stamps(dir.path()), before, "no chunk file written again");
        assert_eq!(page_on_disk(dir.path()).1, want);

        // One variant of chunk 11 changes: chunk 11's file alone is new.
        edit_results(dir.path(), "hook v3000,", "hook v3000 (again),");
        let changed = write_file_with(dir.path(), waves.clone(), None).unwrap();
        assert_eq!(changed.data.written, 1);
        let k = 3000 / CHUNK;
        for (at, (old, new)) in first.data.names.iter().zip(&changed.data.names).enumerate() {
            assert_eq!(old == new, at != k, "chunk {at}");
        }
        let now = stamps(dir.path());
        assert_eq!(now.len(), files, "the replaced file is removed");
        assert!(!now.contains_key(&first.data.names[k]));
        for (name, stamp) in &now {
            if *name != changed.data.names[k] {
                assert_eq!(before[name], *stamp, "{name} kept as it was");
            }
        }
        let (meta, ids) = page_on_disk(dir.path());
        assert_eq!(ids, want);
        assert_eq!(meta["files"], serde_json::json!(changed.data.names));

        // A crash after the new chunk files, before the page: the data written, the page
        // never renamed into place.
        edit_results(dir.path(), "ballad v5,", "ballad v5 (again),");
        let mut builder = Builder::new(dir.path()).unwrap();
        let mut known = waves.clone();
        let has_qc = crate::report::html::each_variant(dir.path(), &mut known, |v| {
            builder.add(&v).unwrap();
            Ok(())
        })
        .unwrap();
        let crashed = builder.finish(has_qc, &Stems::new()).unwrap();
        let crashed = crashed.files.unwrap();
        assert_eq!(crashed.written, 1);
        assert_ne!(crashed.names[0], changed.data.names[0]);
        assert_eq!(stamps(dir.path()).len(), files + 1, "one extra file");
        let (meta, ids) = page_on_disk(dir.path());
        assert_eq!(ids, want, "the old page is whole");
        assert_eq!(meta["files"], serde_json::json!(changed.data.names));
        // A writer killed mid-file leaves a temporary file too.
        std::fs::write(
            dir.path()
                .join(DATA_DIR)
                .join(format!("{}x{}", CHUNK_TEMP.0, CHUNK_TEMP.1)),
            "SB(0,[",
        )
        .unwrap();

        // The next write finds the crashed writer's file, and leaves only what it names.
        let next = write_file_with(dir.path(), waves, None).unwrap();
        assert_eq!(next.data.names, crashed.names);
        assert_eq!(next.data.written, 0);
        assert_eq!(on_disk(dir.path()), sorted(&next.data.names));
        assert_eq!(page_on_disk(dir.path()).1, want);
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
        assert_eq!(summary.data.dir, DATA_DIR);
        assert_eq!(
            summary.data.written, files,
            "a first write writes every file"
        );
        assert_eq!(summary.data.written_bytes, summary.data.bytes);
        let files_dir = dir.path().join(&summary.data.dir);
        let names = summary.data.names.clone();
        assert_eq!(on_disk(dir.path()), sorted(&names));

        // No variant lost, none twice, in results.csv's order: in the index and the chunks.
        let want: Vec<String> = (0..count).map(|i| format!("{i:016x}")).collect();
        let chunks: Vec<String> = names
            .iter()
            .map(|n| std::fs::read_to_string(files_dir.join(n)).unwrap())
            .collect();
        assert_eq!(chunk_ids(&chunks), want);
        for (name, text) in names.iter().zip(&chunks) {
            assert_eq!(*name, chunk_file(text.as_bytes()), "named by its bytes");
        }
        let html = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        let index: Vec<serde_json::Value> =
            serde_json::from_str(between(&html, r#"id="index">"#, "</script>")).unwrap();
        let ids: Vec<&str> = index.iter().map(|r| r[0].as_str().unwrap()).collect();
        assert_eq!(ids, want);
        let meta: serde_json::Value =
            serde_json::from_str(between(&html, r#"id="meta">"#, "</script>")).unwrap();
        assert_eq!(meta["dir"], summary.data.dir.as_str());
        assert_eq!(meta["files"], serde_json::json!(names));
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
    /// and the page left names files that are all there, and nothing else is.
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
            assert_eq!(
                meta["files"].as_array().unwrap().len(),
                count.div_ceil(CHUNK)
            );
            assert_eq!(
                page_on_disk(dir.path()).1.len(),
                count,
                "every file the page names is there"
            );
            assert_eq!(
                std::fs::read_dir(dir.path().join(DATA_DIR))
                    .unwrap()
                    .count(),
                count.div_ceil(CHUNK),
                "only the files it names"
            );
        }
    }
}
