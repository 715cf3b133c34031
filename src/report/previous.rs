//! What a run keeps of the report the last run left, so that a night over a folder where
//! little changed does not read back and render every variant of its history again.
//!
//! A run that writes `results.csv` with nothing in flight (its start, its end) also
//! leaves, in its state folder, an index of it (`results.index`: for each variant, the
//! digest of its rows (`outcome::digest`), where they are in `results.csv`, and where its
//! tracks' waveforms are in `results.waves`, the page's waveforms in the same order). The
//! next run opens both files and the `results.csv` the index describes: a variant whose
//! rows' digest is unchanged takes its rows (and waveforms) from there, unread until
//! they are written. When every variant of the manifest does, in the same order,
//! `results.csv` would be written again byte for byte: it is left as it is.
//!
//! The index names each file it describes by its size and a hash of its bytes (XXH3; a
//! read of each, about 0.1 s at 100,000 variants), and holds a hash of itself: a
//! `results.csv` rewritten since (by `stembatch report`, a shard's merge, a user), a
//! torn or foreign index, another release's, is not used, and the run renders every row
//! as before; a folder copied or restored keeps it. Each file is written to a temporary
//! name and renamed, the index last, so a kill at any point leaves an index that
//! describes its files or one that is not used.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::output_files::{permissions, persist_durably};

/// The index of the last `results.csv` written with nothing in flight, in a state folder.
pub const INDEX_FILE: &str = "results.index";
/// The waveforms of that `results.csv`'s tracks, in its order, in a state folder.
pub const WAVES_FILE: &str = "results.waves";

/// The index's first line: what it is and its layout's version.
const MAGIC: &[u8] = b"stembatch results index 1\n";

/// A file as the index names it: its size and the hash of its bytes. Not its inode or
/// time: a folder copied or restored from a backup holds the same report, and a time
/// stamp is as coarse as the kernel's tick while an inode is reused at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Content {
    len: u64,
    /// XXH3 of its bytes.
    hash: u64,
}

impl Content {
    /// The content of `file`, read from its start.
    pub(super) fn of(file: &File) -> std::io::Result<Self> {
        let mut hasher = Xxh3::new();
        let mut buffer = vec![0u8; 1 << 20];
        let mut len = 0;
        loop {
            let read = file.read_at(&mut buffer, len)?;
            if read == 0 {
                return Ok(Content {
                    len,
                    hash: hasher.digest(),
                });
            }
            hasher.update(&buffer[..read]);
            len += read as u64;
        }
    }

    /// The content of the file at `path`.
    pub(super) fn of_path(path: &Path) -> std::io::Result<Self> {
        Content::of(&File::open(path)?)
    }

    /// Whether `file` holds this content: its size first, then its bytes.
    fn is_in(&self, file: &File) -> std::io::Result<bool> {
        Ok(file.metadata()?.len() == self.len && Content::of(file)? == *self)
    }
}

/// Why the last report cannot be used: said at debug level, and every row is rendered.
#[derive(Debug, thiserror::Error)]
enum Unusable {
    #[error("cannot read {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the index is damaged: {0}")]
    Damaged(String),
    #[error("the index was written by stembatch {0}, with other columns")]
    OtherRelease(String),
    #[error("{0} changed since it was indexed")]
    Changed(std::path::PathBuf),
}

/// The index's header, after its first line.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    /// stembatch's version: another release may render rows differently.
    version: String,
    /// The hash of `results.csv`'s header ([`columns`]).
    columns: u64,
    /// The `results.csv` described.
    results: Content,
    /// Its header line's length: its first variant's rows start there.
    header_len: u64,
    /// The waveforms' file.
    waves: Content,
    /// How many entries follow.
    entries: u64,
}

/// One variant's rows in the indexed `results.csv`, and its waveforms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct IndexEntry {
    /// The variant's id ([`crate::variant::VariantId::bits`]).
    pub id: u64,
    /// Its rows' digest (`outcome::digest::rows`).
    pub digest: u64,
    /// Where its rows start in `results.csv`.
    pub rows_at: u64,
    /// Their length.
    pub rows: u32,
    /// Where its waveforms start in the waveforms' file.
    pub waves_at: u64,
    /// Their length (0: none).
    pub waves: u32,
}

impl IndexEntry {
    const LEN: usize = 40;

    fn to_bytes(self) -> [u8; Self::LEN] {
        let mut bytes = [0u8; Self::LEN];
        bytes[0..8].copy_from_slice(&self.id.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.digest.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.rows_at.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.waves_at.to_le_bytes());
        bytes[32..36].copy_from_slice(&self.rows.to_le_bytes());
        bytes[36..40].copy_from_slice(&self.waves.to_le_bytes());
        bytes
    }

    fn from_bytes(bytes: &[u8]) -> Self {
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4"));
        IndexEntry {
            id: u64_at(0),
            digest: u64_at(8),
            rows_at: u64_at(16),
            waves_at: u64_at(24),
            rows: u32_at(32),
            waves: u32_at(36),
        }
    }
}

/// The files of the last indexed report, open: they stay readable however they are
/// replaced meanwhile.
#[derive(Debug)]
pub(super) struct LastReport {
    /// Its `results.csv`.
    pub results: File,
    /// Its waveforms.
    pub waves: File,
    /// The length of `results.csv`'s header line.
    pub header_len: u64,
    /// The length of `results.csv`.
    pub results_len: u64,
}

/// The last indexed report, open, and its index by variant.
#[derive(Debug)]
pub(super) struct Previous {
    pub files: Arc<LastReport>,
    /// Sorted by id.
    entries: Vec<IndexEntry>,
}

impl Previous {
    /// The report indexed in `state_dir`, whose `results.csv` is in `report_dir`; `None`
    /// (said at debug level) when there is none or it cannot be used.
    pub fn open(state_dir: &Path, report_dir: &Path) -> Option<Previous> {
        match Self::try_open(state_dir, report_dir) {
            Ok(previous) => previous,
            Err(why) => {
                tracing::debug!(index = %state_dir.join(INDEX_FILE).display(), %why, "the last results.csv cannot be reused: every row is rendered");
                None
            }
        }
    }

    fn try_open(state_dir: &Path, report_dir: &Path) -> Result<Option<Previous>, Unusable> {
        let index = state_dir.join(INDEX_FILE);
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| Unusable::Io { path, source }
        };
        let raw = match std::fs::read(&index) {
            Ok(raw) => raw,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(io(&index)(err)),
        };
        let (header, entries) = parse(&raw).map_err(Unusable::Damaged)?;
        if header.version != env!("CARGO_PKG_VERSION") || header.columns != columns() {
            return Err(Unusable::OtherRelease(header.version));
        }
        let open = |path: &Path, content: Content| -> Result<File, Unusable> {
            let file = File::open(path).map_err(io(path))?;
            match content.is_in(&file).map_err(io(path))? {
                true => Ok(file),
                false => Err(Unusable::Changed(path.to_owned())),
            }
        };
        let results = open(&report_dir.join(super::csv::FILE_NAME), header.results)?;
        let waves = open(&state_dir.join(WAVES_FILE), header.waves)?;
        let mut entries = entries;
        entries.sort_unstable_by_key(|e| e.id);
        Ok(Some(Previous {
            files: Arc::new(LastReport {
                results,
                waves,
                header_len: header.header_len,
                results_len: header.results.len,
            }),
            entries,
        }))
    }

    /// Where variant `id`'s rows are when their digest is still `digest`.
    pub fn find(&self, id: u64, digest: u64) -> Option<IndexEntry> {
        let at = self.entries.binary_search_by_key(&id, |e| e.id).ok()?;
        Some(self.entries[at]).filter(|e| e.digest == digest)
    }
}

/// The hash of `results.csv`'s header: rows of other columns are not this release's.
fn columns() -> u64 {
    xxh3_64(super::csv::HEADER.join(",").as_bytes())
}

/// The index's header and entries, when `raw` is a whole index.
fn parse(raw: &[u8]) -> Result<(Header, Vec<IndexEntry>), String> {
    let body = raw
        .strip_prefix(MAGIC)
        .ok_or("not a stembatch results index of this version")?;
    let (content, sum) = body
        .split_at_checked(body.len().saturating_sub(8))
        .filter(|(_, sum)| sum.len() == 8)
        .ok_or("torn")?;
    let whole_len = raw.len() - 8;
    if xxh3_64(&raw[..whole_len]).to_le_bytes() != sum {
        return Err("its hash does not match: torn or damaged".into());
    }
    let newline = content
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header")?;
    let header: Header =
        serde_json::from_slice(&content[..newline]).map_err(|e| format!("header: {e}"))?;
    let table = &content[newline + 1..];
    if table.len() as u64 != header.entries * IndexEntry::LEN as u64 {
        return Err("its entries do not add up".into());
    }
    let entries = table
        .chunks_exact(IndexEntry::LEN)
        .map(IndexEntry::from_bytes)
        .collect();
    Ok((header, entries))
}

/// The index of a `results.csv` being written, and its waveforms' file, in the state
/// folder: put in place by [`IndexWriter::persist`] once `results.csv` is. It never fails
/// the writing of `results.csv`: its first error is kept, and said by `persist`.
pub(super) struct IndexWriter {
    waves: Result<Hashing<BufWriter<tempfile::NamedTempFile>>, std::io::Error>,
    entries: Vec<IndexEntry>,
}

impl IndexWriter {
    /// A new index, its waveforms' temporary file in `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        let waves = temp_in(state_dir, crate::output_files::WAVES_TEMP);
        IndexWriter {
            waves: waves.map(|file| Hashing::new(BufWriter::new(file))),
            entries: Vec::new(),
        }
    }

    /// Variant `id`'s rows, at `rows_at` in `results.csv`, with its waveforms `waves` (or
    /// why they could not be read).
    pub fn add(
        &mut self,
        id: u64,
        digest: u64,
        rows_at: u64,
        rows: u32,
        waves: std::io::Result<Vec<u8>>,
    ) {
        let Ok(out) = &mut self.waves else {
            return;
        };
        self.entries.push(IndexEntry {
            id,
            digest,
            rows_at,
            rows,
            waves_at: out.len,
            waves: waves.as_ref().map_or(0, |w| w.len() as u32),
        });
        if let Err(err) = waves.and_then(|waves| out.write_all(&waves)) {
            self.waves = Err(err);
        }
    }

    /// Puts the waveforms and then the index in place in `state_dir`, for the
    /// `results.csv` just written with `results` (its header line `header_len` long).
    pub fn persist(
        self,
        state_dir: &Path,
        results: Content,
        header_len: u64,
    ) -> std::io::Result<()> {
        let waves = self.waves?;
        let waves_content = waves.content();
        let waves = waves.inner.into_inner().map_err(|e| e.into_error())?;
        persist_durably(waves, &state_dir.join(WAVES_FILE))?;
        let header = Header {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            columns: columns(),
            results,
            header_len,
            waves: waves_content,
            entries: self.entries.len() as u64,
        };
        let mut raw = MAGIC.to_vec();
        serde_json::to_writer(&mut raw, &header).map_err(std::io::Error::other)?;
        raw.push(b'\n');
        raw.reserve(self.entries.len() * IndexEntry::LEN + 8);
        for entry in &self.entries {
            raw.extend_from_slice(&entry.to_bytes());
        }
        raw.extend_from_slice(&xxh3_64(&raw).to_le_bytes());
        let mut index = temp_in(state_dir, crate::output_files::INDEX_TEMP)?;
        index.write_all(&raw)?;
        persist_durably(index, &state_dir.join(INDEX_FILE))
    }
}

/// A writer that counts and hashes what it passes on: a file's [`Content`] as it is
/// written, without reading it back.
pub(super) struct Hashing<W> {
    inner: W,
    hasher: Xxh3,
    len: u64,
}

impl<W> Hashing<W> {
    pub fn new(inner: W) -> Self {
        Hashing {
            inner,
            hasher: Xxh3::new(),
            len: 0,
        }
    }

    /// What was written so far.
    pub fn content(&self) -> Content {
        Content {
            len: self.len,
            hash: self.hasher.digest(),
        }
    }
}

impl<W: std::io::Write> std::io::Write for Hashing<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.hasher.update(&bytes[..written]);
        self.len += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

pub(super) fn temp_in(
    dir: &Path,
    (prefix, suffix): (&str, &str),
) -> std::io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(prefix)
        .suffix(suffix)
        .permissions(permissions())
        .tempfile_in(dir)
}

/// Reads `len` bytes at `at` of `file`.
pub(super) fn read_at(file: &File, at: u64, len: u32, into: &mut Vec<u8>) -> std::io::Result<()> {
    into.resize(len as usize, 0);
    file.read_exact_at(into, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state folder with an index of a two-variant `results.csv`.
    fn indexed() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("results.csv"), b"h\na,1\nb,2\n").unwrap();
        let mut index = IndexWriter::new(dir.path());
        index.add(7, 70, 2, 4, Ok(b"[]".to_vec()));
        index.add(3, 30, 6, 4, Ok(Vec::new()));
        let results = Content::of_path(&dir.path().join("results.csv")).unwrap();
        index.persist(dir.path(), results, 2).unwrap();
        dir
    }

    #[test]
    fn an_index_finds_each_variant_by_id_and_digest() {
        let dir = indexed();
        let previous = Previous::open(dir.path(), dir.path()).expect("usable");
        let first = previous.find(7, 70).unwrap();
        assert_eq!(
            (first.rows_at, first.rows, first.waves_at, first.waves),
            (2, 4, 0, 2)
        );
        assert_eq!(previous.find(3, 30).unwrap().waves_at, 2);
        assert_eq!(
            previous.find(7, 71),
            None,
            "another digest: its rows changed"
        );
        assert_eq!(previous.find(8, 70), None);
        assert_eq!(
            (previous.files.header_len, previous.files.results_len),
            (2, 10)
        );
    }

    /// An index cut anywhere (a disk that lost its end, a copy cut short) or with a byte
    /// changed is not used.
    #[test]
    fn a_torn_or_damaged_index_is_not_used() {
        let dir = indexed();
        let path = dir.path().join(INDEX_FILE);
        let whole = std::fs::read(&path).unwrap();
        for len in 0..whole.len() {
            std::fs::write(&path, &whole[..len]).unwrap();
            assert!(
                Previous::open(dir.path(), dir.path()).is_none(),
                "cut at {len}"
            );
        }
        for at in [0, MAGIC.len() + 3, whole.len() - 20] {
            let mut damaged = whole.clone();
            damaged[at] ^= 1;
            std::fs::write(&path, &damaged).unwrap();
            assert!(
                Previous::open(dir.path(), dir.path()).is_none(),
                "byte {at}"
            );
        }
        std::fs::write(&path, &whole).unwrap();
        assert!(Previous::open(dir.path(), dir.path()).is_some());
    }

    /// A `results.csv` or waveforms' file written since the index (a shard's merge,
    /// `stembatch report`, a user's edit, a kill between the files' renames) makes it
    /// unusable, even when its size, inode and time come out the same; a copy of the
    /// folder keeps it.
    #[test]
    fn an_index_of_files_changed_since_is_not_used() {
        for changed in ["results.csv", WAVES_FILE] {
            let dir = indexed();
            let path = dir.path().join(changed);
            let before = std::fs::metadata(&path).unwrap();
            let mut bytes = std::fs::read(&path).unwrap();
            *bytes.last_mut().unwrap() ^= 1;
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .write_all_at(&bytes, 0)
                .unwrap();
            let times = std::fs::FileTimes::new().set_modified(before.modified().unwrap());
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_times(times).unwrap();
            let after = std::fs::metadata(&path).unwrap();
            assert_eq!(
                (after.len(), after.modified().unwrap()),
                (before.len(), before.modified().unwrap())
            );
            assert!(
                Previous::open(dir.path(), dir.path()).is_none(),
                "{changed}"
            );
        }
        let dir = indexed();
        let copy = tempfile::tempdir().unwrap();
        for name in ["results.csv", WAVES_FILE, INDEX_FILE] {
            std::fs::copy(dir.path().join(name), copy.path().join(name)).unwrap();
        }
        assert!(Previous::open(copy.path(), copy.path()).is_some(), "a copy");
    }
}
