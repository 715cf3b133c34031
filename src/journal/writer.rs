//! The journal's single writer: one thread owns the file; callers enqueue records and
//! wait for the acknowledgement, which comes only once the record is on disk (fsync).
//! Records that arrive together share one fsync.
//!
//! A failed write or fsync fails the writer for good: the file is cut back to the end of
//! its last durable record, and that batch and every later record get the error. Records
//! written after a failed one could follow a partial line, or claim durability the disk
//! did not give; a run that cannot journal must stop paying for tasks instead.
//!
//! It must not decide anything about variants: it writes what it is given, in order.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::sync::{mpsc, oneshot};

use super::format::{decode_each, decode_from, encode, DecodeError, Record, Tail};
use super::JournalError;

/// Records written together at most, per fsync.
const BATCH: usize = 256;

/// The writer's answer for one record: durable, or the error that failed the writer.
type Outcome = Result<(), Arc<io::Error>>;

/// One record on its way to the writer thread.
struct Request {
    record: Record,
    ack: oneshot::Sender<Outcome>,
}

/// A handle to the journal writer; cheap to clone. The writer stops when the last handle
/// is dropped.
#[derive(Clone, Debug)]
pub struct JournalWriter {
    path: Arc<Path>,
    // Unbounded so that `enqueue` queues its record without awaiting, which is what fixes
    // the order of the records. It cannot grow without bound: every record is sent either
    // by a caller that then waits for its ack (one record in flight per worker), or by the
    // coordinator, whose records follow the events of at most `concurrency` variants.
    sender: mpsc::UnboundedSender<Request>,
}

impl JournalWriter {
    /// Opens (or creates) the journal at `path`: returns the records of earlier runs and a
    /// writer appending after them. A torn last line is cut off first, so that new records
    /// never follow a damaged one.
    pub fn open(path: &Path) -> Result<(JournalWriter, Vec<Record>), JournalError> {
        Self::open_with(path, |file| file)
    }

    /// [`JournalWriter::open`], with the writer thread's file operations going through
    /// `wrap`: the seam where tests inject failures.
    pub(crate) fn open_with<F: JournalFile>(
        path: &Path,
        wrap: impl FnOnce(File) -> F,
    ) -> Result<(JournalWriter, Vec<Record>), JournalError> {
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
        // The journal's name must outlive a power loss as its records do: a record acked
        // durable in a file whose creation was lost is lost with it.
        crate::output_files::sync_parent(path).map_err(io)?;
        let decoded = match decode_from(io::BufReader::new(&mut file), path) {
            Ok(decoded) => decoded,
            Err(DecodeError::Io(cause)) => return Err(io(cause)),
            Err(DecodeError::Journal(err)) => return Err(err),
        };
        let durable = repair_tail(&mut file, decoded.len, &decoded.tail).map_err(io)?;
        Self::start(path, wrap(file), durable).map(|writer| (writer, decoded.records))
    }

    /// Opens (or creates) the journal at `path` to append after what it holds, reading
    /// only its last line: whoever opens it so has read, and checked, the rest
    /// (`journal::folded`). A torn last line is cut off first, as [`JournalWriter::open`]
    /// does.
    pub fn open_append(path: &Path) -> Result<JournalWriter, JournalError> {
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
        // The journal's name must outlive a power loss as its records do: a record acked
        // durable in a file whose creation was lost is lost with it.
        crate::output_files::sync_parent(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let start = last_line_start(&mut file, len).map_err(io)?;
        file.seek(SeekFrom::Start(start)).map_err(io)?;
        // The line's number is not known here; the fold read it already, numbered.
        let tail = match decode_each(io::BufReader::new(&mut file), path, 0, |_, _| {}) {
            Ok((Tail::Torn { keep }, _)) => Tail::Torn { keep: start + keep },
            Ok((tail, _)) => tail,
            Err(DecodeError::Io(cause)) => return Err(io(cause)),
            Err(DecodeError::Journal(err)) => return Err(err),
        };
        let durable = repair_tail(&mut file, len, &tail).map_err(io)?;
        Self::start(path, file, durable)
    }

    /// Starts the writer thread over `file`, whose first `durable` bytes are whole lines.
    fn start<F: JournalFile>(
        path: &Path,
        file: F,
        durable: u64,
    ) -> Result<JournalWriter, JournalError> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let thread_path = path.to_owned();
        std::thread::Builder::new()
            .name("stembatch-journal".into())
            .spawn(move || write_loop(Writer::Open { file, durable }, &thread_path, receiver))
            .map_err(|cause| JournalError::Io {
                path: path.to_owned(),
                cause,
            })?;
        Ok(JournalWriter {
            path: path.into(),
            sender,
        })
    }

    /// Queues a record, now: records are written in the order of the calls. The returned
    /// [`JournalAck`] resolves once the record is durable, or its write failed.
    pub fn enqueue(&self, record: Record) -> JournalAck {
        let (ack, done) = oneshot::channel();
        // The writer thread only ends once every handle is gone, or if it panicked; a
        // failed send leaves `done` without a sender, which the ack reads as closed.
        let _ = self.sender.send(Request { record, ack });
        JournalAck {
            path: Arc::clone(&self.path),
            done,
        }
    }

    /// Appends a record; returns once it is durable.
    pub async fn append(&self, record: Record) -> Result<(), JournalError> {
        self.enqueue(record).await
    }
}

/// Where the last line of the file's first `len` bytes begins (a final newline ends it,
/// and does not begin another): read backwards, a block at a time.
fn last_line_start(file: &mut File, len: u64) -> io::Result<u64> {
    use std::io::Read as _;
    const BLOCK: u64 = 64 * 1024;
    let mut end = len.saturating_sub(1);
    let mut block = Vec::new();
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        block.resize((end - start) as usize, 0);
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut block)?;
        if let Some(at) = block.iter().rposition(|&b| b == b'\n') {
            return Ok(start + at as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Makes the file end after a whole line; returns its length then, the end of the last
/// durable record.
fn repair_tail(file: &mut File, len: u64, tail: &Tail) -> io::Result<u64> {
    let durable = match *tail {
        Tail::Clean => return Ok(len),
        Tail::MissingNewline => {
            file.write_all(b"\n")?;
            len + 1
        }
        Tail::Torn { keep } => {
            file.set_len(keep)?;
            file.seek(SeekFrom::End(0))?;
            keep
        }
    };
    file.sync_all()?;
    Ok(durable)
}

/// The acknowledgement of one [`JournalWriter::enqueue`]: resolves to `Ok` once the record
/// is durable (fsync'd), or to the error that failed the writer. Dropping it does not
/// withdraw the record, which is written all the same.
#[must_use = "a record is durable only once its ack says so"]
#[derive(Debug)]
pub struct JournalAck {
    path: Arc<Path>,
    done: oneshot::Receiver<Outcome>,
}

impl Future for JournalAck {
    type Output = Result<(), JournalError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        Poll::Ready(match ready!(Pin::new(&mut this.done).poll(cx)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(cause)) => Err(JournalError::WriteFailed {
                path: this.path.to_path_buf(),
                cause,
            }),
            Err(_) => Err(JournalError::Closed),
        })
    }
}

/// The file operations of the writer thread: the seam where tests inject failures.
pub(crate) trait JournalFile: Send + 'static {
    /// Writes the whole buffer at the end of the file (or fails, perhaps after part of it).
    fn append(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Makes what was written durable.
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the file back to `len` bytes and makes that durable.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

impl JournalFile for File {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.write_all(buf)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)?;
        self.sync_all()
    }
}

/// The writer thread's state.
enum Writer<F> {
    /// Writing; the file ends at `durable`, after the last fsync'd record.
    Open { file: F, durable: u64 },
    /// A write failed: the file is closed and every record gets this error.
    Failed(Arc<io::Error>),
}

impl<F: JournalFile> Writer<F> {
    /// Writes one batch and makes it durable, or fails the writer for good.
    fn write(&mut self, batch: &[Request], path: &Path) -> Outcome {
        let (file, durable) = match self {
            Writer::Open { file, durable } => (file, durable),
            Writer::Failed(cause) => return Err(Arc::clone(cause)),
        };
        let text: String = batch
            .iter()
            .map(|request| encode(&request.record))
            .collect();
        let Err(cause) = file.append(text.as_bytes()).and_then(|()| file.sync()) else {
            *durable += text.len() as u64;
            return Ok(());
        };
        tracing::error!(path = %path.display(), error = %cause, "cannot write the journal; nothing more is written to it");
        // Cut off what the failed write left (perhaps a partial line), so that the next
        // run reads exactly the records acknowledged as durable.
        if let Err(error) = file.truncate(*durable) {
            // The next open drops a torn last line; whole records of this batch would be
            // read back though never acknowledged, like those of a crash before the fsync.
            tracing::error!(path = %path.display(), %error, "cannot cut the journal back to its last durable record");
        }
        let cause = Arc::new(cause);
        // Dropping the file: it is never written again.
        *self = Writer::Failed(Arc::clone(&cause));
        Err(cause)
    }
}

fn write_loop<F: JournalFile>(
    mut writer: Writer<F>,
    path: &Path,
    mut receiver: mpsc::UnboundedReceiver<Request>,
) {
    while let Some(first) = receiver.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let outcome = writer.write(&batch, path);
        for request in batch {
            // The caller may have given up waiting (cancelled); nothing to do then.
            let _ = request.ack.send(outcome.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::format::Record;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    /// A record whose encoding has the same length every time (a clock reading would not:
    /// its fraction of a second drops trailing zeros).
    fn started(pid: u32) -> Record {
        Record::RunStarted {
            at: "2026-11-25T01:00:00.123456789Z".parse().unwrap(),
            seq: 1,
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

    /// Opening to append after reading only the last line leaves the file as opening
    /// after reading it all does: whatever its end (clean, a newline missing, a tail torn,
    /// even inside a character, a single line, a line longer than a read block).
    #[tokio::test]
    async fn appending_after_the_last_line_alone_is_appending_after_all() {
        let long = Record::SubmitFailed {
            variant_id: serde_json::from_value(serde_json::json!("v")).unwrap(),
            created: crate::journal::format::Created::No,
            error: "x".repeat(200_000),
        };
        let one = encode(&started(1));
        let cut_in_a_character = format!("{one}{{\"v\":1,\"kind\":\"é");
        let ends: Vec<Vec<u8>> = vec![
            Vec::new(),
            one.clone().into(),
            format!("{one}{}", encode(&long)).into(),
            format!("{one}{}", encode(&long).trim_end()).into(),
            format!("{one}{{\"v\":1,\"kind\":\"subm").into(),
            cut_in_a_character.as_bytes()[..one.len() + 16].to_vec(),
            b"{\"v\":1,\"kind\":\"subm".to_vec(),
            format!("{one}{}", encode(&started(2)).trim_end()).into(),
        ];
        for (case, text) in ends.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let (whole, last) = (dir.path().join("whole"), dir.path().join("last"));
            std::fs::write(&whole, text).unwrap();
            std::fs::write(&last, text).unwrap();
            let (writer, _) = JournalWriter::open(&whole).unwrap();
            writer.append(started(3)).await.unwrap();
            let writer = JournalWriter::open_append(&last).unwrap();
            writer.append(started(3)).await.unwrap();
            assert_eq!(
                std::fs::read(&last).unwrap(),
                std::fs::read(&whole).unwrap(),
                "case {case}"
            );
        }
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

    #[tokio::test]
    async fn a_tail_torn_inside_a_multi_byte_character_is_cut_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let whole = encode(&Record::SubmitFailed {
            variant_id: serde_json::from_value(serde_json::json!("a1")).unwrap(),
            created: crate::journal::format::Created::No,
            error: "Überlastung".into(),
        });
        // Cut between the two bytes of 'Ü'.
        let cut = whole.find('Ü').unwrap() + 1;
        let mut bytes = encode(&started(1)).into_bytes();
        bytes.extend_from_slice(&whole.as_bytes()[..cut]);
        std::fs::write(&path, &bytes).unwrap();

        let (writer, earlier) = JournalWriter::open(&path).unwrap();
        assert_eq!(earlier.len(), 1);
        writer.append(started(2)).await.unwrap();
        drop(writer);
        let expected = encode(&started_like(&earlier[0], 1));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(&expected), "{text}");
        assert_eq!(text.lines().count(), 2, "{text}");
        let (_writer, earlier) = JournalWriter::open(&path).unwrap();
        assert_eq!(earlier.len(), 2);
    }

    /// The record with its own timestamp, so equality checks only the pid.
    fn started_like(record: &Record, pid: u32) -> Record {
        match record {
            Record::RunStarted {
                at,
                seq,
                version,
                api,
                ..
            } => Record::RunStarted {
                at: *at,
                seq: *seq,
                api: api.clone(),
                pid,
                version: version.clone(),
            },
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A journal file that fails on cue; what it does write goes to the real file.
    struct Faulty {
        file: File,
        plan: Plan,
        writes: usize,
        syncs: Arc<AtomicUsize>,
        /// The first sync waits for a message on it.
        gate: Option<std::sync::mpsc::Receiver<()>>,
    }

    impl Faulty {
        fn new(file: File, plan: Plan) -> Faulty {
            Faulty {
                file,
                plan,
                writes: 0,
                syncs: Arc::default(),
                gate: None,
            }
        }
    }

    #[derive(Clone, Copy)]
    struct Plan {
        /// The 1-based write that fails, after writing this many bytes of its buffer.
        fail_write: Option<(usize, usize)>,
        /// The 1-based sync that fails.
        fail_sync: Option<usize>,
        /// Whether cutting the file back fails too.
        fail_truncate: bool,
        /// The error of a failure.
        error: fn() -> io::Error,
    }

    impl Plan {
        const NONE: Plan = Plan {
            fail_write: None,
            fail_sync: None,
            fail_truncate: false,
            error: || io::Error::from_raw_os_error(5), // EIO
        };
    }

    impl JournalFile for Faulty {
        fn append(&mut self, buf: &[u8]) -> io::Result<()> {
            self.writes += 1;
            match self.plan.fail_write {
                Some((nth, written)) if nth == self.writes => {
                    self.file.write_all(&buf[..written])?;
                    Err((self.plan.error)())
                }
                _ => self.file.write_all(buf),
            }
        }

        fn sync(&mut self) -> io::Result<()> {
            if let Some(gate) = self.gate.take() {
                gate.recv().unwrap();
            }
            let syncs = self.syncs.fetch_add(1, Ordering::SeqCst) + 1;
            match self.plan.fail_sync == Some(syncs) {
                true => Err((self.plan.error)()),
                false => self.file.sync_data(),
            }
        }

        fn truncate(&mut self, len: u64) -> io::Result<()> {
            match self.plan.fail_truncate {
                true => Err((self.plan.error)()),
                false => self.file.truncate(len),
            }
        }
    }

    fn open_faulty(path: &Path, plan: Plan) -> JournalWriter {
        let (writer, _) = JournalWriter::open_with(path, |file| Faulty::new(file, plan)).unwrap();
        writer
    }

    fn lines_len(pids: std::ops::Range<u32>) -> u64 {
        pids.map(|pid| encode(&started(pid)).len() as u64).sum()
    }

    /// Appends pids 0..5 one by one; returns which were acknowledged.
    async fn append_five(writer: &JournalWriter) -> Vec<Result<(), JournalError>> {
        let mut acks = Vec::new();
        for pid in 0..5 {
            acks.push(writer.append(started(pid)).await);
        }
        acks
    }

    fn assert_refused_from(acks: &[Result<(), JournalError>], first_failed: usize) {
        for (i, ack) in acks.iter().enumerate() {
            match ack {
                Ok(()) => assert!(i < first_failed, "record {i} acknowledged"),
                Err(err @ JournalError::WriteFailed { .. }) => {
                    assert!(i >= first_failed, "record {i} refused: {err}")
                }
                Err(err) => panic!("record {i}: {err:?}"),
            }
        }
    }

    /// The writer left the file ending after pids 0..durable.
    fn assert_cut_back_to(path: &Path, durable: u32) {
        assert_eq!(
            std::fs::metadata(path).unwrap().len(),
            lines_len(0..durable)
        );
    }

    /// The journal re-opens with exactly pids 0..durable.
    fn assert_reopens_with(path: &Path, durable: u32) {
        let (_writer, earlier) = JournalWriter::open(path).unwrap();
        assert_cut_back_to(path, durable);
        assert_eq!(pids(&earlier), (0..durable).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_write_cut_short_is_cut_back_and_every_later_append_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let plan = Plan {
            fail_write: Some((4, 10)),
            ..Plan::NONE
        };
        let writer = open_faulty(&path, plan);
        let acks = append_five(&writer).await;
        assert_refused_from(&acks, 3);
        drop(writer);
        assert_cut_back_to(&path, 3);
        assert_reopens_with(&path, 3);
    }

    #[tokio::test]
    async fn a_failed_fsync_is_cut_back_and_every_later_append_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let plan = Plan {
            fail_sync: Some(3),
            ..Plan::NONE
        };
        let writer = open_faulty(&path, plan);
        let acks = append_five(&writer).await;
        assert_refused_from(&acks, 2);
        drop(writer);
        assert_cut_back_to(&path, 2);
        assert_reopens_with(&path, 2);
    }

    #[tokio::test]
    async fn a_failed_cut_back_still_refuses_every_later_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let plan = Plan {
            fail_write: Some((2, 7)),
            fail_truncate: true,
            ..Plan::NONE
        };
        let writer = open_faulty(&path, plan);
        let acks = append_five(&writer).await;
        assert_refused_from(&acks, 1);
        // Nothing after the failed write's own 7 bytes: the torn line is still the last.
        assert_eq!(std::fs::metadata(&path).unwrap().len(), lines_len(0..1) + 7);
        drop(writer);
        assert_reopens_with(&path, 1);
    }

    #[tokio::test]
    async fn a_full_disk_is_told_apart_from_other_failures() {
        let dir = tempfile::tempdir().unwrap();
        let full = dir.path().join("full.jsonl");
        let plan = Plan {
            fail_write: Some((1, 0)),
            error: || io::Error::from_raw_os_error(28), // ENOSPC
            ..Plan::NONE
        };
        let writer = open_faulty(&full, plan);
        for pid in 0..2 {
            let err = writer.append(started(pid)).await.unwrap_err();
            assert!(err.is_disk_full(), "{err:?}");
            assert!(err.to_string().contains("the disk is full"), "{err}");
        }
        let other = dir.path().join("other.jsonl");
        let plan = Plan {
            fail_sync: Some(1),
            ..Plan::NONE
        };
        let writer = open_faulty(&other, plan);
        let err = writer.append(started(0)).await.unwrap_err();
        assert!(!err.is_disk_full(), "{err:?}");
        assert!(!err.to_string().contains("disk is full"), "{err}");
        let kind = JournalError::WriteFailed {
            path: full,
            cause: Arc::new(io::ErrorKind::StorageFull.into()),
        };
        assert!(kind.is_disk_full());
    }

    fn pids(records: &[Record]) -> Vec<u32> {
        records
            .iter()
            .map(|record| match record {
                Record::RunStarted { pid, .. } => *pid,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn records_are_written_in_the_order_of_the_enqueue_calls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let (writer, _) = JournalWriter::open(&path).unwrap();
        // Many callers at once; the lock makes the order of the calls observable.
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut callers = tokio::task::JoinSet::new();
        for caller in 0..8u32 {
            let (writer, order) = (writer.clone(), Arc::clone(&order));
            callers.spawn(async move {
                let mut acks = Vec::new();
                for k in 0..250u32 {
                    let pid = caller * 1000 + k;
                    {
                        let mut order = order.lock().unwrap();
                        acks.push(writer.enqueue(started(pid)));
                        order.push(pid);
                    }
                    if k % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                futures::future::try_join_all(acks).await.unwrap();
            });
        }
        while let Some(caller) = callers.join_next().await {
            caller.unwrap();
        }
        drop(writer);
        let (_writer, earlier) = JournalWriter::open(&path).unwrap();
        let expected = order.lock().unwrap().clone();
        assert_eq!(expected.len(), 2000);
        assert_eq!(pids(&earlier), expected);
    }

    #[tokio::test]
    async fn records_that_arrive_together_share_one_fsync_and_a_dropped_ack_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let (release, gate) = std::sync::mpsc::channel();
        let syncs = Arc::new(AtomicUsize::new(0));
        let (writer, _) = JournalWriter::open_with(&path, |file| Faulty {
            syncs: Arc::clone(&syncs),
            gate: Some(gate),
            ..Faulty::new(file, Plan::NONE)
        })
        .unwrap();
        // The first fsync waits until all 100 are queued.
        let mut acks: Vec<JournalAck> = (0..100).map(|pid| writer.enqueue(started(pid))).collect();
        drop(acks.remove(50));
        release.send(()).unwrap();
        futures::future::try_join_all(acks).await.unwrap();
        assert!(syncs.load(Ordering::SeqCst) <= 2, "{syncs:?} fsyncs");
        drop(writer);
        let (_writer, earlier) = JournalWriter::open(&path).unwrap();
        assert_eq!(pids(&earlier), (0..100).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn opening_a_journal_syncs_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let (writer, _) = JournalWriter::open(&path).unwrap();
        assert!(path.is_file());
        assert_eq!(crate::output_files::synced::count(dir.path()), 1);
        writer.append(started(1)).await.unwrap();
    }
}
