//! The rows of `results.csv` as a run goes: the one place a run's report is produced from.
//!
//! A variant's rows are rendered once, when it ends (or at the start, for the variants the
//! run keeps or has yet to start), and spooled to an unnamed temporary file beside the
//! report; memory keeps only where each variant's rows are (40 bytes a variant). Writing
//! `results.csv` streams the variants in manifest order, each from its spooled rows, or
//! from its record while it is in flight (a handful, given by the run state). This keeps
//! a run's memory independent of what its variants produced (rows, URLs, waveforms), and
//! takes the whole-report copy off the coordinator's loop: a snapshot is the slot table
//! and the in-flight records, and the file is written off the async threads.
//!
//! A variant whose rows are what they were in the last report written with nothing in
//! flight (`report::previous`: their digest is unchanged) is not rendered: its slot
//! points into that report's `results.csv`, and its waveforms into its waveforms' file.
//! A kept variant's tracks are then never read back. A report whose every slot is last
//! night's, in order, is that file: it is not written again.
//!
//! The waveforms drawn as tracks landed ride along in the spool, for the listening page
//! written at the end ([`Results::waves_in_order`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::journal::replay::PriorTrack;
use crate::journal::stored::TrackStore;
use crate::outcome::{digest, VariantRecord, VariantStatus};
use crate::variant::{Variant, VariantId, VariantTable};

use super::csv::{rows_of, write_atomically, HEADER};
use super::previous::{read_at, Hashing, IndexWriter, LastReport, Previous};

/// Unfinished variants the closing summary names at most (the CSV has them all).
pub const UNFINISHED_KEPT: usize = super::progress::UNFINISHED_LISTED;

/// Which file a slot's rows and waveforms are in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Held {
    /// This run's spool: the waveforms right after the rows.
    #[default]
    Spool,
    /// The last report: its `results.csv` and its waveforms' file.
    LastReport,
}

/// Where one variant's rows are; `rows == 0`: none yet.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    held: Held,
    rows_at: u64,
    waves_at: u64,
    rows: u32,
    waves: u32,
    /// What the rows show (`outcome::digest::rows`).
    digest: u64,
}

/// The run's results: every variant's rows, spooled, by manifest position.
pub struct Results {
    variants: Arc<VariantTable>,
    spool: Arc<File>,
    len: u64,
    /// How many variants were put so far.
    puts: u64,
    slots: Vec<Slot>,
    /// The last report written with nothing in flight, when it can be used.
    previous: Option<Previous>,
    /// Where a kept variant's tracks' entries are, read back when its rows are rendered.
    track_store: Arc<TrackStore>,
    /// The state folder, where the report's index is written.
    index_dir: PathBuf,
    /// The first unfinished variants (not pending) in manifest order, for the closing
    /// summary; `not_listed` counts the others.
    unfinished: BTreeMap<usize, (VariantId, VariantRecord)>,
    not_listed: usize,
}

/// The variants that did not finish (pending aside), as the closing summary names them.
#[derive(Debug, Default)]
pub struct Unfinished {
    /// The first [`UNFINISHED_KEPT`] in manifest order, with their variant and record.
    pub listed: Vec<(Variant, VariantRecord)>,
    /// How many more there are.
    pub not_listed: usize,
}

impl Results {
    /// Results over `variants`, spooled in `dir` (the folder `results.csv` is written
    /// to), indexed in `index_dir` (the run's state folder), kept variants' tracks read
    /// back from `track_store`. The last report indexed there is opened now.
    pub fn new(
        dir: &Path,
        index_dir: &Path,
        variants: Arc<VariantTable>,
        track_store: Arc<TrackStore>,
    ) -> std::io::Result<Self> {
        let spool = tempfile::tempfile_in(dir)?;
        Ok(Results {
            slots: vec![Slot::default(); variants.len()],
            variants,
            spool: Arc::new(spool),
            len: 0,
            puts: 0,
            previous: Previous::open(index_dir, dir),
            track_store,
            index_dir: index_dir.to_owned(),
            unfinished: BTreeMap::new(),
            not_listed: 0,
        })
    }

    /// Records how `id` ended (once a variant): its rows spooled, or last night's kept.
    /// A variant kept from earlier runs comes with its tracks compact (`kept_tracks`,
    /// `record.tracks` empty): they are read back only when its rows must be rendered.
    pub fn put_ended(
        &mut self,
        id: &VariantId,
        record: VariantRecord,
        kept_tracks: &[PriorTrack],
    ) -> std::io::Result<()> {
        if let Some(index) = self.put(id, &record, kept_tracks)? {
            self.note_unfinished(index, id, record);
        }
        Ok(())
    }

    /// Records what is known of a variant that has yet to start (its earlier runs'
    /// record): replaced when it ends.
    pub fn put_waiting(&mut self, id: &VariantId, record: &VariantRecord) -> std::io::Result<()> {
        // A variant no run knows is written as the pending row without a slot.
        if *record == VariantRecord::default() {
            return Ok(());
        }
        self.put(id, record, &[]).map(drop)
    }

    /// Puts `id`'s rows in its slot, replacing what was: last night's when they show the
    /// same, else rendered and spooled. Its manifest position, or `None` for a variant
    /// not in the table.
    fn put(
        &mut self,
        id: &VariantId,
        record: &VariantRecord,
        kept_tracks: &[PriorTrack],
    ) -> std::io::Result<Option<usize>> {
        let Some(index) = self.variants.index_of(id) else {
            return Ok(None);
        };
        self.puts += 1;
        let variant = self.variants.at(index);
        let digest = match kept_tracks.is_empty() {
            true => digest::rows(
                &variant,
                record,
                record.tracks.iter().map(|t| t.row_digest()),
            ),
            false => digest::rows(&variant, record, kept_tracks.iter().map(|t| t.row_digest)),
        };
        let last = self.previous.as_ref();
        if let Some(entry) = last.and_then(|p| p.find(self.variants.bits_at(index), digest)) {
            self.slots[index] = Slot {
                held: Held::LastReport,
                rows_at: entry.rows_at,
                waves_at: entry.waves_at,
                rows: entry.rows,
                waves: entry.waves,
                digest,
            };
            return Ok(Some(index));
        }
        let whole;
        let record = match kept_tracks.is_empty() {
            true => record,
            false => {
                let tracks = self.track_store.records(kept_tracks);
                whole = VariantRecord {
                    tracks: tracks.map_err(std::io::Error::other)?,
                    ..record.clone()
                };
                &whole
            }
        };
        self.slots[index] = self.spool(&variant, record, digest)?;
        Ok(Some(index))
    }

    /// Renders `variant`'s rows from its whole `record` and spools them, with its tracks'
    /// waveforms after them: the slot that says where.
    fn spool(
        &mut self,
        variant: &Variant,
        record: &VariantRecord,
        digest: u64,
    ) -> std::io::Result<Slot> {
        let rows = render(variant, record)?;
        let waves: Vec<(&str, &str)> = record
            .tracks
            .iter()
            .filter_map(|t| Some((t.file.as_str(), t.wave.as_deref()?)))
            .collect();
        let waves = match waves.is_empty() {
            true => Vec::new(),
            false => serde_json::to_vec(&waves).map_err(std::io::Error::other)?,
        };
        let offset = self.len;
        self.spool.write_all_at(&rows, offset)?;
        self.spool
            .write_all_at(&waves, offset + rows.len() as u64)?;
        self.len += (rows.len() + waves.len()) as u64;
        Ok(Slot {
            held: Held::Spool,
            rows_at: offset,
            waves_at: offset + rows.len() as u64,
            rows: rows.len() as u32,
            waves: waves.len() as u32,
            digest,
        })
    }

    fn note_unfinished(&mut self, index: usize, id: &VariantId, mut record: VariantRecord) {
        if matches!(
            record.status,
            VariantStatus::Finished | VariantStatus::Pending
        ) {
            return;
        }
        // The summary names the variant and says why: its tracks are not needed.
        record.tracks = Vec::new();
        self.unfinished.insert(index, (id.clone(), record));
        if self.unfinished.len() > UNFINISHED_KEPT {
            self.unfinished.pop_last();
            self.not_listed += 1;
        }
    }

    /// How many variants were put so far (rendered or kept from the last report): two
    /// reports with the same figure and nothing in flight are the same file.
    pub fn puts(&self) -> u64 {
        self.puts
    }

    /// What the report shows now: the spooled rows, and `in_flight` over them.
    pub fn snapshot<'a>(
        &self,
        in_flight: impl Iterator<Item = (&'a VariantId, &'a VariantRecord)>,
    ) -> Snapshot {
        let in_flight = in_flight
            .filter_map(|(id, record)| Some((self.variants.index_of(id)?, record.clone())))
            .collect();
        Snapshot {
            files: self.files(),
            slots: self.slots.clone(),
            in_flight,
            index_dir: self.index_dir.clone(),
        }
    }

    fn files(&self) -> Files {
        Files {
            variants: Arc::clone(&self.variants),
            spool: Arc::clone(&self.spool),
            last: self.previous.as_ref().map(|p| Arc::clone(&p.files)),
        }
    }

    /// The waveforms of every spooled track, by file: the tests' reference for
    /// [`Results::waves_in_order`] (which never holds them all).
    #[cfg(test)]
    pub fn known_waves(&self) -> std::io::Result<HashMap<String, String>> {
        let files = self.files();
        let mut known = HashMap::new();
        for slot in self.slots.iter().filter(|s| s.waves > 0) {
            let waves: Vec<(String, String)> =
                serde_json::from_slice(&files.waves(slot)?).map_err(std::io::Error::other)?;
            known.extend(waves);
        }
        Ok(known)
    }

    /// The waveforms drawn as tracks landed, read from the spool as the page asks for
    /// them: the page reads results.csv in manifest order, the spool's order, so a window
    /// ahead of the last one asked for finds each, and memory never holds them all.
    pub fn waves_in_order(&self) -> WavesInOrder {
        WavesInOrder {
            files: self.files(),
            slots: self.slots.iter().filter(|s| s.waves > 0).copied().collect(),
            next: 0,
            seq: 0,
            order: VecDeque::new(),
            window: HashMap::new(),
        }
    }

    /// The unfinished variants the closing summary names.
    pub fn unfinished(&self) -> Unfinished {
        Unfinished {
            listed: self
                .unfinished
                .iter()
                .map(|(index, (_, record))| (self.variants.at(*index), record.clone()))
                .collect(),
            not_listed: self.not_listed,
        }
    }
}

/// The files a slot's bytes are read from.
struct Files {
    variants: Arc<VariantTable>,
    spool: Arc<File>,
    last: Option<Arc<LastReport>>,
}

impl Files {
    fn file_of(&self, slot: &Slot) -> std::io::Result<(&File, &File)> {
        match slot.held {
            Held::Spool => Ok((&self.spool, &self.spool)),
            Held::LastReport => {
                let last = self.last.as_deref().ok_or_else(|| {
                    std::io::Error::other("a slot of the last report, which is not open")
                })?;
                Ok((&last.results, &last.waves))
            }
        }
    }

    fn rows_into(&self, slot: &Slot, into: &mut Vec<u8>) -> std::io::Result<()> {
        read_at(self.file_of(slot)?.0, slot.rows_at, slot.rows, into)
    }

    fn waves(&self, slot: &Slot) -> std::io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        read_at(self.file_of(slot)?.1, slot.waves_at, slot.waves, &mut bytes)?;
        Ok(bytes)
    }
}

/// The report at one moment, to be written off the coordinator's loop.
pub struct Snapshot {
    files: Files,
    slots: Vec<Slot>,
    in_flight: HashMap<usize, VariantRecord>,
    index_dir: PathBuf,
}

impl Snapshot {
    /// Writes the header and every variant's rows, in manifest order, to `out`.
    pub fn write(&self, out: &mut dyn Write) -> std::io::Result<()> {
        self.write_indexed(out, None)
    }

    /// [`Snapshot::write`], each variant's rows and waveforms told to `index` too.
    fn write_indexed(
        &self,
        out: &mut dyn Write,
        mut index: Option<&mut IndexWriter>,
    ) -> std::io::Result<()> {
        let header = header_line()?;
        out.write_all(&header)?;
        let mut at = header.len() as u64;
        let pending = VariantRecord::default();
        let mut buffer = Vec::new();
        for (position, slot) in self.slots.iter().enumerate() {
            if let Some(record) = self.in_flight.get(&position) {
                buffer = render(&self.files.variants.at(position), record)?;
            } else if slot.rows > 0 {
                self.files.rows_into(slot, &mut buffer)?;
                if let Some(index) = index.as_deref_mut() {
                    let id = self.files.variants.bits_at(position);
                    index.add(id, slot.digest, at, slot.rows, self.files.waves(slot));
                }
            } else {
                buffer = render(&self.files.variants.at(position), &pending)?;
            }
            out.write_all(&buffer)?;
            at += buffer.len() as u64;
        }
        Ok(())
    }

    /// Whether this report is the last one, byte for byte: every variant's rows are
    /// last night's, in order, end to end, and nothing is in flight.
    pub fn is_the_last_report(&self) -> bool {
        let Some(last) = &self.files.last else {
            return false;
        };
        let mut at = last.header_len;
        for slot in &self.slots {
            if slot.held != Held::LastReport || slot.rows == 0 || slot.rows_at != at {
                return false;
            }
            at += u64::from(slot.rows);
        }
        self.in_flight.is_empty() && at == last.results_len
    }

    /// Rewrites `DIR/results.csv` atomically from this snapshot. With nothing in flight,
    /// it is indexed for the next run (`report::previous`); an index that cannot be
    /// written is said, and only costs the next run its rendering.
    pub fn write_file(&self, dir: &Path) -> std::io::Result<()> {
        if !self.in_flight.is_empty() {
            return write_atomically(dir, |out| self.write(out));
        }
        let mut index = IndexWriter::new(&self.index_dir);
        let mut written = None;
        write_atomically(dir, |out| {
            let mut out = Hashing::new(out);
            self.write_indexed(&mut out, Some(&mut index))?;
            written = Some(out.content());
            Ok(())
        })?;
        let written = written.expect("write_atomically fills the file");
        let header_len = header_line()?.len() as u64;
        if let Err(err) = index.persist(&self.index_dir, written, header_len) {
            tracing::warn!(dir = %self.index_dir.display(), error = %err, "cannot index results.csv for the next run; it will render every row again");
        }
        Ok(())
    }
}

/// `results.csv`'s header line.
fn header_line() -> std::io::Result<Vec<u8>> {
    let mut header = csv::Writer::from_writer(Vec::new());
    header.write_record(HEADER).map_err(std::io::Error::other)?;
    header.into_inner().map_err(|e| e.into_error())
}

/// Waveforms read ahead of the page's writing at most: about 1 MB.
const WAVES_AHEAD: usize = 4096;

/// The spooled waveforms, in manifest order, for the page ([`Results::waves_in_order`]).
pub struct WavesInOrder {
    files: Files,
    slots: Vec<Slot>,
    next: usize,
    seq: u64,
    /// The window's files in spool order, with their place in it.
    order: VecDeque<(u64, String)>,
    window: HashMap<String, (u64, String)>,
}

impl WavesInOrder {
    /// Reads the next slot's waveforms into the window; false when there are no more. A
    /// slot that cannot be read is skipped: its tracks are decoded by the page instead.
    fn read_next(&mut self) -> bool {
        let Some(slot) = self.slots.get(self.next).copied() else {
            return false;
        };
        self.next += 1;
        let read = self
            .files
            .waves(&slot)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                serde_json::from_slice::<Vec<(String, String)>>(&bytes).map_err(|e| e.to_string())
            });
        match read {
            Ok(waves) => {
                for (file, wave) in waves {
                    self.order.push_back((self.seq, file.clone()));
                    self.window.insert(file, (self.seq, wave));
                    self.seq += 1;
                }
            }
            Err(err) => tracing::debug!(error = %err, "cannot read back a track's waveform"),
        }
        true
    }
}

impl crate::report::html::KnownWaves for WavesInOrder {
    fn take(&mut self, file: &str) -> Option<String> {
        loop {
            if let Some((seq, wave)) = self.window.remove(file) {
                // Those before it were never asked for (in order, they would have been).
                while let Some((before, name)) = self.order.pop_front() {
                    if before == seq {
                        break;
                    }
                    self.window.remove(&name);
                }
                return Some(wave);
            }
            // A track without one (not decodable, another shard's): the window stops
            // growing, and the page decodes that track.
            if self.window.len() >= WAVES_AHEAD || !self.read_next() {
                return None;
            }
        }
    }
}

/// The CSV rows of one variant, as bytes.
fn render(variant: &Variant, record: &VariantRecord) -> std::io::Result<Vec<u8>> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    for row in rows_of(variant, record) {
        writer.write_record(row).map_err(std::io::Error::other)?;
    }
    writer.into_inner().map_err(|e| e.into_error())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::TrackRecord;

    fn table(count: usize) -> Arc<VariantTable> {
        let text = format!(
            "[run]\n[defaults]\ntitle = \"t\"\nnegative_tags = \"\"\n[[stem]]\nurl = \"https://h/s.wav\"\n[stem.matrix]\ntags = [{}]\n",
            (0..count)
                .map(|i| format!("\"t{i}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let manifest = crate::manifest::parse(Path::new("m.toml"), &text).unwrap();
        Arc::new(VariantTable::new(Arc::new(manifest.variants.to_vec())))
    }

    fn results_in(dir: &Path, variants: &Arc<VariantTable>) -> Results {
        Results::new(dir, dir, Arc::clone(variants), Arc::default()).unwrap()
    }

    fn finished(file: &str, wave: Option<&str>) -> VariantRecord {
        VariantRecord {
            status: VariantStatus::Finished,
            task_id: Some("t".into()),
            attempts: 1,
            tracks: vec![TrackRecord {
                number: 1,
                audio_id: "a".into(),
                duration_s: Some(1.0),
                file: file.into(),
                bytes: 3,
                sha256: "00".into(),
                audio_url: "http://h/a.wav".into(),
                modified_ns: None,
                qc: None,
                wave: wave.map(str::to_owned),
            }],
            ..VariantRecord::default()
        }
    }

    /// The spooled report is byte for byte what the whole-records writer writes.
    #[test]
    fn the_streamed_report_is_the_records_report() {
        let variants = table(5);
        let dir = tempfile::tempdir().unwrap();
        let mut results = results_in(dir.path(), &variants);
        let mut records = HashMap::new();
        let failed = VariantRecord {
            status: VariantStatus::Failed,
            error: Some("no, \"quoted\"\nline".into()),
            ..VariantRecord::default()
        };
        let ids: Vec<VariantId> = variants.iter().map(|v| v.id.clone()).collect();
        // Out of manifest order, one put twice (the later wins), one left in flight.
        results.put_ended(&ids[3], failed.clone(), &[]).unwrap();
        results.put_waiting(&ids[0], &failed).unwrap();
        results
            .put_ended(&ids[0], finished("audio/a.wav", Some("abc")), &[])
            .unwrap();
        records.insert(ids[3].clone(), failed.clone());
        records.insert(ids[0].clone(), finished("audio/a.wav", Some("abc")));
        let running = VariantRecord {
            task_id: Some("running".into()),
            ..VariantRecord::default()
        };
        records.insert(ids[2].clone(), running.clone());
        let in_flight = [(ids[2].clone(), running)];
        let snapshot = results.snapshot(in_flight.iter().map(|(i, r)| (i, r)));
        let mut streamed = Vec::new();
        snapshot.write(&mut streamed).unwrap();
        let mut whole = Vec::new();
        crate::report::csv::write(&mut whole, &variants.iter().collect::<Vec<_>>(), &records)
            .unwrap();
        assert_eq!(
            String::from_utf8(streamed).unwrap(),
            String::from_utf8(whole).unwrap()
        );
        snapshot.write_file(dir.path()).unwrap();
        assert!(dir.path().join(crate::report::csv::FILE_NAME).exists());
        assert_eq!(
            results.known_waves().unwrap(),
            HashMap::from([("audio/a.wav".to_owned(), "abc".to_owned())])
        );
    }

    /// Tomorrow's kept variant as the journal's fold hands it over: its tracks compact,
    /// their entries in a line of a file the (empty) store does not have, so that
    /// reading one back fails.
    fn kept(record: &VariantRecord) -> (VariantRecord, Vec<PriorTrack>) {
        use crate::journal::replay::LineAt;
        let nowhere = LineAt {
            offset: 0,
            len: 1,
            source: 9,
            replaced: false,
        };
        let tracks = record
            .tracks
            .iter()
            .map(|t| PriorTrack::new(t.into(), Some(nowhere)))
            .collect();
        let without = VariantRecord {
            tracks: Vec::new(),
            ..record.clone()
        };
        (without, tracks)
    }

    /// Last night's report, indexed: a variant whose rows show the same is not rendered
    /// (its kept tracks are never read back), and a report that is all last night's, in
    /// order, is that file. One variant changed: the report written is what rendering
    /// every variant writes, and the page finds every waveform, from either file.
    #[test]
    fn rows_unchanged_since_the_last_report_are_taken_from_it() {
        let variants = table(6);
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<VariantId> = variants.ids().collect();
        let failed = VariantRecord {
            status: VariantStatus::Failed,
            attempts: 1,
            error: Some("refused".into()),
            ..VariantRecord::default()
        };
        let mut records: Vec<VariantRecord> = (0..6)
            .map(|i| match i {
                4 => failed.clone(),
                _ => finished(&format!("audio/{i}.wav"), Some(&format!("w{i}"))),
            })
            .collect();
        let mut tonight = results_in(dir.path(), &variants);
        for i in (0..6).rev() {
            tonight.put_ended(&ids[i], records[i].clone(), &[]).unwrap();
        }
        tonight
            .snapshot(std::iter::empty())
            .write_file(dir.path())
            .unwrap();
        let results_csv = dir.path().join(crate::report::csv::FILE_NAME);
        let written = std::fs::read(&results_csv).unwrap();

        let mut tomorrow = results_in(dir.path(), &variants);
        for (id, record) in ids.iter().zip(&records) {
            let (record, tracks) = kept(record);
            tomorrow.put_ended(id, record, &tracks).unwrap();
        }
        assert_eq!(tomorrow.len, 0, "nothing rendered");
        let snapshot = tomorrow.snapshot(std::iter::empty());
        assert!(snapshot.is_the_last_report());
        let mut again = Vec::new();
        snapshot.write(&mut again).unwrap();
        assert_eq!(again, written);
        // In another order (a manifest reordered), the same rows are not the same file.
        let mut reordered = results_in(dir.path(), &variants);
        for (id, record) in ids.iter().zip(&records) {
            let (record, tracks) = kept(record);
            reordered.put_ended(id, record, &tracks).unwrap();
        }
        reordered.slots.swap(0, 1);
        assert!(!reordered.snapshot(std::iter::empty()).is_the_last_report());

        records[4].attempts = 2;
        let mut changed = results_in(dir.path(), &variants);
        for (id, record) in ids.iter().zip(&records) {
            let (record, tracks) = kept(record);
            changed.put_ended(id, record, &tracks).unwrap();
        }
        let snapshot = changed.snapshot(std::iter::empty());
        assert!(!snapshot.is_the_last_report());
        snapshot.write_file(dir.path()).unwrap();
        let by_id: HashMap<VariantId, VariantRecord> =
            ids.iter().cloned().zip(records.iter().cloned()).collect();
        let mut whole = Vec::new();
        crate::report::csv::write(&mut whole, &variants.iter().collect::<Vec<_>>(), &by_id)
            .unwrap();
        assert_eq!(
            String::from_utf8(std::fs::read(&results_csv).unwrap()).unwrap(),
            String::from_utf8(whole).unwrap()
        );
        let expected: HashMap<String, String> = (0..6)
            .filter(|&i| i != 4)
            .map(|i| (format!("audio/{i}.wav"), format!("w{i}")))
            .collect();
        assert_eq!(changed.known_waves().unwrap(), expected);

        // The index now describes the new file, its waveforms included.
        let mut next = results_in(dir.path(), &variants);
        for (id, record) in ids.iter().zip(&records) {
            let (record, tracks) = kept(record);
            next.put_ended(id, record, &tracks).unwrap();
        }
        assert!(next.snapshot(std::iter::empty()).is_the_last_report());
        assert_eq!(next.known_waves().unwrap(), expected);
    }

    /// An index that cannot be written (a state folder gone, a full disk) costs the next
    /// run its rendering, never this run its report.
    #[test]
    fn a_report_is_written_whatever_becomes_of_its_index() {
        let variants = table(2);
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("no-state-folder");
        let mut results =
            Results::new(dir.path(), &gone, Arc::clone(&variants), Arc::default()).unwrap();
        for id in variants.ids() {
            let record = finished("audio/a.wav", Some("w"));
            results.put_ended(&id, record, &[]).unwrap();
        }
        results
            .snapshot(std::iter::empty())
            .write_file(dir.path())
            .unwrap();
        let written = std::fs::read_to_string(dir.path().join("results.csv")).unwrap();
        assert_eq!(written.lines().count(), 3, "the header and two rows");
        assert!(!gone.exists());
    }

    /// A variant whose rows changed is rendered, and its kept tracks read back: with
    /// nothing to read them from, the put fails rather than writing rows without them.
    #[test]
    fn a_changed_kept_variant_reads_its_tracks_back() {
        let variants = table(1);
        let dir = tempfile::tempdir().unwrap();
        let (record, tracks) = kept(&finished("audio/0.wav", Some("w")));
        let mut results = results_in(dir.path(), &variants);
        let put = results.put_ended(&variants.at(0).id, record, &tracks);
        assert!(put.is_err(), "{put:?}");
    }

    /// The page asks for every track of results.csv in order, some without a waveform
    /// (not decodable, or another shard's): each drawn one is found, once, and the window
    /// stays bounded.
    #[test]
    fn the_page_reads_the_waveforms_in_order_through_a_bounded_window() {
        use crate::report::html::KnownWaves;
        let count = WAVES_AHEAD + 500;
        let variants = table(count);
        let dir = tempfile::tempdir().unwrap();
        let mut results = results_in(dir.path(), &variants);
        let ids: Vec<VariantId> = variants.iter().map(|v| v.id.clone()).collect();
        // Every third variant has no waveform; they end out of order.
        for i in (0..count).rev() {
            let file = format!("audio/{i}.wav");
            let wave = format!("w{i}");
            let record = finished(&file, (i % 3 != 0).then_some(wave.as_str()));
            results.put_ended(&ids[i], record.clone(), &[]).unwrap();
        }
        let mut waves = results.waves_in_order();
        assert_eq!(waves.take("audio/not-in-the-spool.wav"), None);
        for i in 0..count {
            let want = (i % 3 != 0).then(|| format!("w{i}"));
            assert_eq!(waves.take(&format!("audio/{i}.wav")), want, "track {i}");
            assert!(waves.window.len() <= WAVES_AHEAD + 1);
        }
        assert_eq!(waves.take("audio/1.wav"), None, "each taken once");
        assert!(waves.window.is_empty() && waves.order.is_empty());
    }

    #[test]
    fn the_closing_names_the_first_unfinished_and_counts_the_rest() {
        let variants = table(UNFINISHED_KEPT + 5);
        let dir = tempfile::tempdir().unwrap();
        let mut results = results_in(dir.path(), &variants);
        let error = VariantRecord {
            status: VariantStatus::Error,
            ..VariantRecord::default()
        };
        // The second was an error before this run, too.
        results.put_waiting(&variants.at(1).id, &error).unwrap();
        // Ended in reverse manifest order; the first one pending (not named).
        let list: Vec<_> = variants.iter().collect();
        for variant in list.iter().skip(1).rev() {
            results.put_ended(&variant.id, error.clone(), &[]).unwrap();
        }
        results
            .put_ended(&variants.at(0).id, VariantRecord::default(), &[])
            .unwrap();
        let unfinished = results.unfinished();
        let names: Vec<_> = unfinished.listed.iter().map(|(v, _)| &v.id).collect();
        let expected: Vec<_> = list
            .iter()
            .skip(1)
            .take(UNFINISHED_KEPT)
            .map(|v| &v.id)
            .collect();
        assert_eq!(names, expected, "the first ones in manifest order");
        assert_eq!(unfinished.not_listed, 4);
    }
}
