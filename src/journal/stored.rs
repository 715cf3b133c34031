//! The folded tracks' entries where the fold read them: the journals and the checkpoint,
//! kept open, so that a folder's fold holds each track compact ([`PriorTrack`]) and its
//! whole entry (URL, the provider's id, QC figures, waveform) is read back only when a
//! variant's rows, its page data or a new checkpoint are written, one variant at a time.
//!
//! The files are append-only (journals) or replaced only by a rename (checkpoints), so a
//! line read by the fold stays where it was for as long as its file is open here.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use super::checkpoint;
use super::format::{decode_line_of, Record, TrackEntry};
use super::replay::{Details, LineAt, PriorTrack};
use super::JournalError;
use crate::outcome::TrackRecord;

/// What kind of file a source is: how its lines are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SourceKind {
    /// A journal: a track's line is its `track` record.
    Journal,
    /// A checkpoint: a track's line is its variant's line.
    Checkpoint,
}

#[derive(Debug)]
struct Source {
    path: PathBuf,
    file: File,
    kind: SourceKind,
}

/// The files a fold read its tracks from, open.
#[derive(Debug, Default)]
pub struct TrackStore {
    sources: Vec<Source>,
}

impl TrackStore {
    /// Adds `file` (at `path`), returning its number for [`LineAt::source`].
    pub(super) fn add(
        &mut self,
        path: &Path,
        file: &File,
        kind: SourceKind,
    ) -> Result<u16, JournalError> {
        let number = u16::try_from(self.sources.len()).map_err(|_| JournalError::Io {
            path: path.to_owned(),
            cause: std::io::Error::other("more than 65,535 journals in one folder"),
        })?;
        let file = file.try_clone().map_err(|cause| JournalError::Io {
            path: path.to_owned(),
            cause,
        })?;
        self.sources.push(Source {
            path: path.to_owned(),
            file,
            kind,
        });
        Ok(number)
    }

    /// The whole entries of `tracks`, in their order. Tracks read from one line (a
    /// variant's line of a checkpoint holds all its tracks) share one read of it.
    pub fn entries<'a>(
        &self,
        tracks: impl IntoIterator<Item = &'a PriorTrack>,
    ) -> Result<Vec<TrackEntry>, JournalError> {
        let mut entries = Vec::new();
        let mut line: Option<(LineAt, Vec<TrackEntry>)> = None;
        for track in tracks {
            let at = match &track.details {
                Details::Held(entry) => {
                    entries.push((**entry).clone());
                    continue;
                }
                Details::Stored(at) => *at,
            };
            if !line.as_ref().is_some_and(|(read, _)| *read == at) {
                line = Some((at, self.entries_at(at)?));
            }
            let (_, in_line) = line.as_mut().expect("just read");
            let found = in_line.iter().position(|entry| {
                entry.track == track.track
                    && *entry.file == *track.file
                    && track.sha256.is_hex(&entry.sha256)
            });
            match found {
                Some(index) => entries.push(in_line.swap_remove(index)),
                None => {
                    let message = format!("no longer holds track {} ({})", track.track, track.file);
                    return Err(self.changed(at, message));
                }
            }
        }
        Ok(entries)
    }

    /// `tracks` as a record's tracks, whole.
    pub fn records(&self, tracks: &[PriorTrack]) -> Result<Vec<TrackRecord>, JournalError> {
        Ok(self
            .entries(tracks)?
            .into_iter()
            .map(TrackRecord::from)
            .collect())
    }

    /// The track entries in the line `at`.
    fn entries_at(&self, at: LineAt) -> Result<Vec<TrackEntry>, JournalError> {
        let source = self.source(at)?;
        let mut raw = vec![0; at.len as usize];
        source
            .file
            .read_exact_at(&mut raw, at.offset)
            .map_err(|cause| JournalError::Io {
                path: source.path.clone(),
                cause,
            })?;
        match source.kind {
            SourceKind::Journal => match decode_line_of(&raw) {
                Ok(Record::Track { entry, .. }) => Ok(vec![entry]),
                Ok(_) => Err(self.changed(at, "is not a track record".into())),
                Err(message) => Err(self.changed(at, format!("is not a record: {message}"))),
            },
            SourceKind::Checkpoint => checkpoint::tracks_in_line(&raw, at.replaced)
                .map_err(|message| self.changed(at, message)),
        }
    }

    fn source(&self, at: LineAt) -> Result<&Source, JournalError> {
        // Lines come only from the fold that filled this store: another number is a bug,
        // said as an error rather than a panic in the middle of a night's run.
        self.sources
            .get(usize::from(at.source))
            .ok_or_else(|| JournalError::Io {
                path: PathBuf::from(format!("<file {} of the fold>", at.source)),
                cause: std::io::Error::other("a track's line names a file the fold did not read"),
            })
    }

    fn changed(&self, at: LineAt, message: String) -> JournalError {
        let path = self
            .sources
            .get(usize::from(at.source))
            .map(|s| s.path.clone());
        JournalError::Changed {
            path: path.unwrap_or_default(),
            offset: at.offset,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::folded::fold_journals;
    use crate::journal::format::{encode, finished_records};
    use crate::variant::VariantId;

    fn records(sha256: &str) -> String {
        let id: VariantId = serde_json::from_value(serde_json::json!("v1")).unwrap();
        let at = "2026-11-25T01:00:00Z".parse().unwrap();
        let mut entry = TrackEntry::minimal(1, "a1", "audio/s/v-1.wav");
        entry.sha256 = sha256.into();
        entry.audio_url = "https://cdn.example.com/a1.mp3".into();
        entry.wave = Some("abc".into());
        finished_records(&id, "t1", entry, at)
            .iter()
            .map(encode)
            .collect()
    }

    /// A fold keeps a journal's track compact, and reads its whole entry back from its
    /// line; a line changed under it (the file edited in place) is refused by name, not
    /// read as another track.
    #[test]
    fn a_track_reads_back_from_its_line_and_a_changed_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        std::fs::write(&path, records(&"ab".repeat(32))).unwrap();
        let folded = fold_journals(std::slice::from_ref(&path)).unwrap();
        let tracks = &folded
            .priors
            .values()
            .next()
            .unwrap()
            .task
            .as_ref()
            .unwrap()
            .tracks;
        assert!(matches!(tracks[0].details, Details::Stored(_)));
        let whole = folded.store.records(tracks).unwrap();
        assert_eq!(whole[0].audio_url, "https://cdn.example.com/a1.mp3");
        assert_eq!(whole[0].wave.as_deref(), Some("abc"));
        // The same length, another track: written over the journal in place.
        std::fs::write(&path, records(&"cd".repeat(32))).unwrap();
        let err = folded.store.records(tracks).unwrap_err();
        assert!(
            matches!(&err, JournalError::Changed { path: named, .. } if *named == path),
            "{err}"
        );
        assert!(err.to_string().contains("no longer holds track 1"), "{err}");
    }
}
