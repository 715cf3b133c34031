//! What a variant's rows in `results.csv` show, as 64 bits: every field a row shows goes
//! in, and nothing else, so two equal digests mean the same rows. A run keeps last night's
//! rows of a variant whose digest has not changed instead of reading its tracks back and
//! rendering them again (`report::previous`): over a folder of a year of nights, most
//! variants did not change.
//!
//! A track's part is computed once, where its entry is read (the journal's fold keeps it
//! in `PriorTrack`, since the entry itself is not kept), and from a [`TrackRecord`] for a
//! track this run downloaded: both give the same number for the same entry.
//!
//! The hash is XXH3, a published, stable function: a digest written by one build is read
//! by the next. The report's own version is part of the index that stores the digests
//! (a release that renders rows differently starts afresh).

use xxhash_rust::xxh3::Xxh3;

use super::{TrackRecord, VariantRecord};
use crate::qc::Verdict;
use crate::variant::Variant;

/// What a track's rows show of its quality control.
pub type QcShown = (Option<f64>, Option<f64>, Option<f64>, Verdict);

/// The fields of a track that its row shows.
pub struct TrackShown<'a> {
    /// The track number.
    pub number: u32,
    /// The provider's id.
    pub audio_id: &'a str,
    /// Seconds, as the provider reported.
    pub duration_s: Option<f64>,
    /// Relative to the output folder.
    pub file: &'a str,
    /// Bytes on disk.
    pub bytes: u64,
    /// Hex sha256.
    pub sha256: &'a str,
    /// Where it came from.
    pub audio_url: &'a str,
    /// Decoded length, peak, loudness and verdict, when quality control ran.
    pub qc: Option<QcShown>,
}

/// The digest of one track's part of its variant's rows.
pub fn track(shown: TrackShown<'_>) -> u64 {
    let mut hasher = Fields::new(b"track");
    hasher.number(shown.number.into());
    hasher.text(shown.audio_id);
    hasher.float(shown.duration_s);
    hasher.text(shown.file);
    hasher.number(shown.bytes);
    hasher.text(shown.sha256);
    hasher.text(shown.audio_url);
    match shown.qc {
        None => hasher.number(0),
        Some((decoded_s, peak_dbfs, lufs, verdict)) => {
            hasher.number(1);
            hasher.float(decoded_s);
            hasher.float(peak_dbfs);
            hasher.float(lufs);
            hasher.text(verdict.as_str());
        }
    }
    hasher.finish()
}

impl TrackRecord {
    /// The digest of this track's part of its variant's rows ([`track`]).
    pub fn row_digest(&self) -> u64 {
        // Every field named: a new one is shown or not, never forgotten.
        let TrackRecord {
            number,
            audio_id,
            duration_s,
            file,
            bytes,
            sha256,
            audio_url,
            modified_ns: _,
            qc,
            wave: _,
        } = self;
        track(TrackShown {
            number: *number,
            audio_id,
            duration_s: *duration_s,
            file,
            bytes: *bytes,
            sha256,
            audio_url,
            qc: qc
                .as_ref()
                .map(|q| (q.decoded_s, q.peak_dbfs, q.lufs, q.verdict)),
        })
    }
}

/// The digest of `variant`'s rows: the variant's own columns, `record`'s (its tracks
/// aside) and its tracks' digests in row order ([`track`]). `record.tracks` is not read:
/// a kept variant's tracks are not in memory, only their digests.
pub fn rows(
    variant: &Variant,
    record: &VariantRecord,
    tracks: impl IntoIterator<Item = u64>,
) -> u64 {
    // Every field named: a new one is shown or not, never forgotten. The id stands for
    // what it is computed from: the stem's source, every parameter column and the take.
    let Variant {
        stem,
        name,
        take,
        params: _,
        id,
    } = variant;
    let VariantRecord {
        status,
        task_id,
        submitted_at,
        finished_at,
        attempts,
        error,
        tracks: _,
    } = record;
    let mut hasher = Fields::new(b"variant");
    hasher.text(id.as_str());
    hasher.text(&stem.name);
    hasher.text(name);
    hasher.number((*take).into());
    hasher.text(status.as_str());
    hasher.optional_text(task_id.as_deref());
    // As shown: to the second.
    for at in [submitted_at, finished_at] {
        match at {
            None => hasher.number(0),
            Some(at) => {
                hasher.number(1);
                hasher.number(at.timestamp() as u64);
            }
        }
    }
    hasher.number((*attempts).into());
    hasher.optional_text(error.as_deref());
    let mut count = 0u64;
    for digest in tracks {
        hasher.number(digest);
        count += 1;
    }
    hasher.number(count);
    hasher.finish()
}

/// A hasher of fields: each one's length or tag goes in before it, so that no two lists
/// of fields make the same bytes.
struct Fields(Xxh3);

impl Fields {
    fn new(kind: &[u8]) -> Self {
        let mut fields = Fields(Xxh3::new());
        fields.0.update(b"stembatch-rows-v1");
        fields.0.update(kind);
        fields
    }

    fn number(&mut self, value: u64) {
        self.0.update(&value.to_le_bytes());
    }

    fn text(&mut self, value: &str) {
        self.number(value.len() as u64);
        self.0.update(value.as_bytes());
    }

    fn optional_text(&mut self, value: Option<&str>) {
        match value {
            None => self.number(0),
            Some(text) => {
                self.number(1);
                self.text(text);
            }
        }
    }

    fn float(&mut self, value: Option<f64>) {
        match value {
            None => self.number(0),
            Some(value) => {
                self.number(1);
                self.number(value.to_bits());
            }
        }
    }

    fn finish(&self) -> u64 {
        self.0.digest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::format::{decode_line_of, encode, Record, TrackEntry};
    use crate::outcome::VariantStatus;
    use crate::qc::TrackQc;
    use crate::variant::VariantId;

    fn track() -> TrackRecord {
        TrackRecord {
            number: 1,
            audio_id: "a1".into(),
            duration_s: Some(183.27),
            file: "audio/vox/one-1.mp3".into(),
            bytes: 4_417_000,
            sha256: "ab".repeat(32),
            audio_url: "https://cdn.example.com/a1.mp3".into(),
            modified_ns: Some(1_700_000_000_123_456_789),
            // Figures no decimal text holds exactly.
            qc: Some(TrackQc {
                decoded_s: Some(183.270_022_675_736_97),
                peak_dbfs: Some(-0.1 / 3.0),
                lufs: Some(f64::NEG_INFINITY),
                verdict: Verdict::Ok,
            }),
            wave: Some("0a1b".into()),
        }
    }

    fn variant() -> Variant {
        let text = "[defaults]\ntags = \"a\"\nnegative_tags = \"\"\n[[stem]]\nurl = \"https://x.com/s.mp3\"\n[[stem.variant]]\nname = \"one\"\n";
        crate::manifest::parse(std::path::Path::new("m.toml"), text)
            .unwrap()
            .variants
            .get(0)
            .unwrap()
    }

    /// A track downloaded tonight and the same track read back from the journal
    /// tomorrow have one digest: tomorrow's run finds tonight's rows.
    #[test]
    fn a_track_has_one_digest_in_memory_and_read_back_from_the_journal() {
        let record = track();
        let line = encode(&Record::Track {
            variant_id: VariantId::from_bits(7),
            task_id: "t".into(),
            entry: TrackEntry::from(&record),
        });
        let Record::Track { entry, .. } = decode_line_of(line.trim_end().as_bytes()).unwrap()
        else {
            panic!("a track line");
        };
        assert_eq!(entry.row_digest(), record.row_digest());
        assert_eq!(
            TrackRecord::from(entry),
            record,
            "every field read back exact"
        );
    }

    /// The rows `results.csv` shows of a variant with `track`.
    fn rows_with(track: TrackRecord) -> Vec<Vec<String>> {
        let record = VariantRecord {
            tracks: vec![track],
            ..VariantRecord::default()
        };
        crate::report::csv::rows_of(&variant(), &record)
    }

    /// Every field a track's row shows changes its digest; what no row shows (the file's
    /// time, the waveform) does not: the digest changes exactly when the rows do.
    #[test]
    fn a_tracks_digest_changes_with_every_shown_field_and_only_those() {
        let base = track().row_digest();
        let base_rows = rows_with(track());
        type Change = fn(&mut TrackRecord);
        let shown: [(&str, Change); 11] = [
            ("number", |t| t.number = 2),
            ("audio_id", |t| t.audio_id.push('x')),
            ("duration", |t| t.duration_s = None),
            ("file", |t| t.file.push('x')),
            ("bytes", |t| t.bytes += 1),
            ("sha256", |t| t.sha256 = "cd".repeat(32)),
            ("url", |t| t.audio_url.push('x')),
            ("decoded", |t| t.qc.as_mut().unwrap().decoded_s = Some(1.0)),
            ("peak", |t| t.qc.as_mut().unwrap().peak_dbfs = None),
            ("lufs", |t| t.qc.as_mut().unwrap().lufs = Some(-14.0)),
            ("verdict", |t| {
                t.qc.as_mut().unwrap().verdict = Verdict::Clipped
            }),
        ];
        for (field, change) in shown {
            let mut changed = track();
            change(&mut changed);
            assert_ne!(rows_with(changed.clone()), base_rows, "{field} is shown");
            assert_ne!(changed.row_digest(), base, "{field}");
        }
        let mut unshown = track();
        unshown.modified_ns = None;
        unshown.wave = None;
        assert_eq!(rows_with(unshown.clone()), base_rows);
        assert_eq!(unshown.row_digest(), base);
    }

    /// A variant's digest takes its names, its record's columns and its tracks' digests,
    /// not the tracks the record holds (a kept variant's are not in memory).
    #[test]
    fn a_variants_digest_changes_with_its_names_columns_and_tracks() {
        let variant = variant();
        let record = VariantRecord {
            status: VariantStatus::Finished,
            task_id: Some("t1".into()),
            submitted_at: Some(chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap()),
            finished_at: Some(chrono::DateTime::from_timestamp(1_700_000_100, 0).unwrap()),
            attempts: 1,
            error: None,
            tracks: Vec::new(),
        };
        let base = rows(&variant, &record, [1, 2]);
        assert_eq!(
            rows(
                &variant,
                &VariantRecord {
                    tracks: vec![track()],
                    ..record.clone()
                },
                [1, 2]
            ),
            base
        );
        assert_ne!(rows(&variant, &record, [2, 1]), base, "track order");
        assert_ne!(rows(&variant, &record, [1]), base, "track count");
        let mut renamed = variant.clone();
        renamed.name.push('x');
        assert_ne!(rows(&renamed, &record, [1, 2]), base, "variant name");
        let mut moved = variant.clone();
        moved.stem = std::sync::Arc::new(crate::variant::Stem {
            name: "other".into(),
            source: variant.stem.source.clone(),
            takes: variant.stem.takes,
            problem: None,
        });
        assert_ne!(rows(&moved, &record, [1, 2]), base, "stem name");
        type Change = fn(&mut VariantRecord);
        let columns: [(&str, Change); 6] = [
            ("status", |r| r.status = VariantStatus::Error),
            ("task", |r| r.task_id = None),
            ("submitted", |r| r.submitted_at = None),
            ("finished", |r| {
                r.finished_at = chrono::DateTime::from_timestamp(1_700_000_101, 0)
            }),
            ("attempts", |r| r.attempts = 2),
            ("error", |r| r.error = Some("refused".into())),
        ];
        let shown = |record: &VariantRecord| crate::report::csv::rows_of(&variant, record);
        for (column, change) in columns {
            let mut changed = record.clone();
            change(&mut changed);
            assert_ne!(shown(&changed), shown(&record), "{column} is shown");
            assert_ne!(rows(&variant, &changed, [1, 2]), base, "{column}");
        }
    }
}
