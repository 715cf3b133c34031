//! The journal's single writer: one thread owns the file; callers send records and wait
//! for the acknowledgement, which comes only once the record is on disk (fsync). Records
//! that arrive together share one fsync.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tokio::sync::{mpsc, oneshot};

use super::format::{decode_all, encode, Record};
use super::JournalError;

/// Records written together at most, per fsync.
const BATCH: usize = 256;

type Ack = oneshot::Sender<Result<(), String>>;

/// A handle to the journal writer; cheap to clone. The writer stops when the last handle
/// is dropped.
#[derive(Clone, Debug)]
pub struct JournalWriter {
    path: PathBuf,
    sender: mpsc::Sender<(Record, Ack)>,
}

impl JournalWriter {
    /// Opens (or creates) the journal at `path`: returns the records of earlier runs and a
    /// writer appending after them. A torn last line is cut off first, so that new records
    /// never follow a damaged one.
    pub fn open(path: &Path) -> Result<(JournalWriter, Vec<Record>), JournalError> {
        let io = |cause| JournalError::Io {
            path: path.to_owned(),
            cause,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(io)?;
        let records = decode_all(&text, path)?;
        let complete = text.rfind('\n').map_or(0, |i| i + 1);
        if complete < text.len() {
            file.set_len(complete as u64).map_err(io)?;
            file.seek(SeekFrom::End(0)).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        // Bounded: a worker waits for its ack anyway, so at most one record per worker
        // is queued; the bound only matters if that ever changes.
        let (sender, receiver) = mpsc::channel(1024);
        let thread_path = path.to_owned();
        std::thread::Builder::new()
            .name("stembatch-journal".into())
            .spawn(move || write_loop(file, &thread_path, receiver))
            .map_err(io)?;
        Ok((
            JournalWriter {
                path: path.to_owned(),
                sender,
            },
            records,
        ))
    }

    /// Appends a record; returns once it is durable.
    pub async fn append(&self, record: Record) -> Result<(), JournalError> {
        let (ack, done) = oneshot::channel();
        self.sender
            .send((record, ack))
            .await
            .map_err(|_| JournalError::Closed)?;
        match done.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(JournalError::Io {
                path: self.path.clone(),
                cause: std::io::Error::other(message),
            }),
            Err(_) => Err(JournalError::Closed),
        }
    }
}

fn write_loop(mut file: File, path: &Path, mut receiver: mpsc::Receiver<(Record, Ack)>) {
    while let Some(first) = receiver.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let text: String = batch.iter().map(|(record, _)| encode(record)).collect();
        let written = file
            .write_all(text.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|e| e.to_string());
        if let Err(message) = &written {
            tracing::error!(path = %path.display(), error = %message, "cannot write the journal");
        }
        for (_, ack) in batch {
            // The caller may have given up waiting (cancelled); nothing to do then.
            let _ = ack.send(written.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::format::Record;

    fn started(pid: u32) -> Record {
        Record::RunStarted {
            at: chrono::Utc::now(),
            api: "http://api".into(),
            pid,
            version: "t".into(),
        }
    }

    #[tokio::test]
    async fn appended_records_are_read_back_by_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let (writer, earlier) = JournalWriter::open(&path).unwrap();
        assert!(earlier.is_empty());
        for pid in 0..5 {
            writer.append(started(pid)).await.unwrap();
        }
        drop(writer);
        let (_writer, earlier) = JournalWriter::open(&path).unwrap();
        assert_eq!(earlier.len(), 5);
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        std::fs::write(
            &path,
            format!("{}{{\"v\":1,\"kind\":\"subm", encode(&started(1))),
        )
        .unwrap();
        let (writer, earlier) = JournalWriter::open(&path).unwrap();
        assert_eq!(earlier.len(), 1);
        writer.append(started(2)).await.unwrap();
        drop(writer);
        let (_writer, earlier) = JournalWriter::open(&path).unwrap();
        assert_eq!(
            earlier,
            vec![started_like(&earlier[0], 1), started_like(&earlier[1], 2)]
        );
    }

    /// The record with its own timestamp, so equality checks only the pid.
    fn started_like(record: &Record, pid: u32) -> Record {
        match record {
            Record::RunStarted {
                at, version, api, ..
            } => Record::RunStarted {
                at: *at,
                api: api.clone(),
                pid,
                version: version.clone(),
            },
            other => panic!("unexpected {other:?}"),
        }
    }
}
