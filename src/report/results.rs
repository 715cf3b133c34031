//! The rows of `results.csv` as a run goes: the one place a run's report is produced from.
//!
//! A variant's rows are rendered once, when it ends (or at the start, for the variants the
//! run keeps or has yet to start), and spooled to an unnamed temporary file beside the
//! report; memory keeps only where each variant's rows are (16 bytes a variant). Writing
//! `results.csv` streams the variants in manifest order, each from its spooled rows, or
//! from its record while it is in flight (a handful, given by the run state). This keeps
//! a run's memory independent of what its variants produced (rows, URLs, waveforms), and
//! takes the whole-report copy off the coordinator's loop: a snapshot is the slot table
//! and the in-flight records, and the file is written off the async threads.
//!
//! The waveforms drawn as tracks landed ride along in the spool, for the listening page
//! written at the end ([`Results::waves_in_order`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::outcome::{VariantRecord, VariantStatus};
use crate::variant::{Variant, VariantId, VariantTable};

use super::csv::{rows_of, write_atomically, HEADER};

/// Unfinished variants the closing summary names at most (the CSV has them all).
pub const UNFINISHED_KEPT: usize = super::progress::UNFINISHED_LISTED;

/// Where one variant's rows are in the spool; `rows == 0`: none yet.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    offset: u64,
    rows: u32,
    waves: u32,
}

/// The run's results: every variant's rows, spooled, by manifest position.
pub struct Results {
    variants: Arc<VariantTable>,
    spool: Arc<File>,
    len: u64,
    slots: Vec<Slot>,
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
    /// Results over `variants`, spooled in `dir` (the folder `results.csv` is written to).
    pub fn new(dir: &Path, variants: Arc<VariantTable>) -> std::io::Result<Self> {
        let spool = tempfile::tempfile_in(dir)?;
        Ok(Results {
            slots: vec![Slot::default(); variants.len()],
            variants,
            spool: Arc::new(spool),
            len: 0,
            unfinished: BTreeMap::new(),
            not_listed: 0,
        })
    }

    /// Records how `id` ended (once a variant): rendered and spooled.
    pub fn put_ended(&mut self, id: &VariantId, record: &VariantRecord) -> std::io::Result<()> {
        if let Some(index) = self.put(id, record)? {
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
        self.put(id, record).map(drop)
    }

    /// Renders and spools `id`'s rows, replacing what was; its manifest position, or
    /// `None` for a variant not in the table.
    fn put(&mut self, id: &VariantId, record: &VariantRecord) -> std::io::Result<Option<usize>> {
        let Some(index) = self.variants.index_of(id) else {
            return Ok(None);
        };
        let rows = render(&self.variants.at(index), record)?;
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
        self.slots[index] = Slot {
            offset,
            rows: rows.len() as u32,
            waves: waves.len() as u32,
        };
        Ok(Some(index))
    }

    fn note_unfinished(&mut self, index: usize, id: &VariantId, record: &VariantRecord) {
        if matches!(
            record.status,
            VariantStatus::Finished | VariantStatus::Pending
        ) {
            return;
        }
        self.unfinished.insert(index, (id.clone(), record.clone()));
        if self.unfinished.len() > UNFINISHED_KEPT {
            self.unfinished.pop_last();
            self.not_listed += 1;
        }
    }

    /// How much has been spooled: it grows with every variant put, so two reports with
    /// the same figure and nothing in flight are the same file.
    pub fn spooled(&self) -> u64 {
        self.len
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
            variants: Arc::clone(&self.variants),
            spool: Arc::clone(&self.spool),
            slots: self.slots.clone(),
            in_flight,
        }
    }

    /// The waveforms of every spooled track, by file: the tests' reference for
    /// [`Results::waves_in_order`] (which never holds them all).
    #[cfg(test)]
    pub fn known_waves(&self) -> std::io::Result<HashMap<String, String>> {
        let mut known = HashMap::new();
        for slot in self.slots.iter().filter(|s| s.waves > 0) {
            let mut bytes = vec![0; slot.waves as usize];
            self.spool
                .read_exact_at(&mut bytes, slot.offset + slot.rows as u64)?;
            let waves: Vec<(String, String)> =
                serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
            known.extend(waves);
        }
        Ok(known)
    }

    /// The waveforms drawn as tracks landed, read from the spool as the page asks for
    /// them: the page reads results.csv in manifest order, the spool's order, so a window
    /// ahead of the last one asked for finds each, and memory never holds them all.
    pub fn waves_in_order(&self) -> WavesInOrder {
        WavesInOrder {
            spool: Arc::clone(&self.spool),
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

/// The report at one moment, to be written off the coordinator's loop.
pub struct Snapshot {
    variants: Arc<VariantTable>,
    spool: Arc<File>,
    slots: Vec<Slot>,
    in_flight: HashMap<usize, VariantRecord>,
}

impl Snapshot {
    /// Writes the header and every variant's rows, in manifest order, to `out`.
    pub fn write(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let mut header = csv::Writer::from_writer(Vec::new());
        header.write_record(HEADER).map_err(std::io::Error::other)?;
        out.write_all(&header.into_inner().map_err(|e| e.into_error())?)?;
        let pending = VariantRecord::default();
        let mut buffer = Vec::new();
        for (index, slot) in self.slots.iter().enumerate() {
            if let Some(record) = self.in_flight.get(&index) {
                out.write_all(&render(&self.variants.at(index), record)?)?;
            } else if slot.rows > 0 {
                buffer.resize(slot.rows as usize, 0);
                self.spool.read_exact_at(&mut buffer, slot.offset)?;
                out.write_all(&buffer)?;
            } else {
                out.write_all(&render(&self.variants.at(index), &pending)?)?;
            }
        }
        Ok(())
    }

    /// Rewrites `DIR/results.csv` atomically from this snapshot.
    pub fn write_file(&self, dir: &Path) -> std::io::Result<()> {
        write_atomically(dir, |out| self.write(out))
    }
}

/// Waveforms read ahead of the page's writing at most: about 1 MB.
const WAVES_AHEAD: usize = 4096;

/// The spooled waveforms, in manifest order, for the page ([`Results::waves_in_order`]).
pub struct WavesInOrder {
    spool: Arc<File>,
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
        let mut bytes = vec![0; slot.waves as usize];
        let read = self
            .spool
            .read_exact_at(&mut bytes, slot.offset + slot.rows as u64)
            .map_err(|e| e.to_string())
            .and_then(|()| {
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
        let mut results = Results::new(dir.path(), Arc::clone(&variants)).unwrap();
        let mut records = HashMap::new();
        let failed = VariantRecord {
            status: VariantStatus::Failed,
            error: Some("no, \"quoted\"\nline".into()),
            ..VariantRecord::default()
        };
        let ids: Vec<VariantId> = variants.iter().map(|v| v.id.clone()).collect();
        // Out of manifest order, one put twice (the later wins), one left in flight.
        results.put_ended(&ids[3], &failed).unwrap();
        results.put_waiting(&ids[0], &failed).unwrap();
        results
            .put_ended(&ids[0], &finished("audio/a.wav", Some("abc")))
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

    /// The page asks for every track of results.csv in order, some without a waveform
    /// (not decodable, or another shard's): each drawn one is found, once, and the window
    /// stays bounded.
    #[test]
    fn the_page_reads_the_waveforms_in_order_through_a_bounded_window() {
        use crate::report::html::KnownWaves;
        let count = WAVES_AHEAD + 500;
        let variants = table(count);
        let dir = tempfile::tempdir().unwrap();
        let mut results = Results::new(dir.path(), Arc::clone(&variants)).unwrap();
        let ids: Vec<VariantId> = variants.iter().map(|v| v.id.clone()).collect();
        // Every third variant has no waveform; they end out of order.
        for i in (0..count).rev() {
            let file = format!("audio/{i}.wav");
            let wave = format!("w{i}");
            let record = finished(&file, (i % 3 != 0).then_some(wave.as_str()));
            results.put_ended(&ids[i], &record).unwrap();
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
        let mut results = Results::new(dir.path(), Arc::clone(&variants)).unwrap();
        let error = VariantRecord {
            status: VariantStatus::Error,
            ..VariantRecord::default()
        };
        // The second was an error before this run, too.
        results.put_waiting(&variants.at(1).id, &error).unwrap();
        // Ended in reverse manifest order; the first one pending (not named).
        let list: Vec<_> = variants.iter().collect();
        for variant in list.iter().skip(1).rev() {
            results.put_ended(&variant.id, &error).unwrap();
        }
        results
            .put_ended(&variants.at(0).id, &VariantRecord::default())
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
