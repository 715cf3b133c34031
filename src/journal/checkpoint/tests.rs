use std::collections::HashMap;
use std::io::Write as _;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::folder::lock::{self, LockState, RunLock};
use crate::journal::folded::fold_journals;
use crate::journal::format::{encode, Created};
use crate::journal::replay::Details;
use crate::scheduler::rerun;
use crate::scheduler::start::{Rerun, Start};
use crate::variant::Variant;

/// An output folder's state: the whole folder's state folder and two shards'.
struct Folder {
    _dir: tempfile::TempDir,
    out: PathBuf,
    state: PathBuf,
    dirs: Vec<PathBuf>,
}

impl Folder {
    fn new() -> Folder {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().to_owned();
        let state = out.join(".stembatch");
        let dirs = vec![
            state.clone(),
            state.join("shard-0-of-2"),
            state.join("shard-1-of-2"),
        ];
        for dir in &dirs {
            std::fs::create_dir_all(dir).unwrap();
        }
        Folder {
            _dir: dir,
            out,
            state,
            dirs,
        }
    }

    fn journal(&self, j: usize) -> PathBuf {
        self.dirs[j].join(JOURNAL_FILE)
    }

    fn append_bytes(&self, j: usize, bytes: &[u8]) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.journal(j))
            .unwrap();
        file.write_all(bytes).unwrap();
    }

    fn append(&self, j: usize, records: &[Record]) {
        let text: String = records.iter().map(encode).collect();
        self.append_bytes(j, text.as_bytes());
    }

    /// What the journals say, replayed from their starts (`folded::fold_journals`).
    fn replayed(&self) -> Folded {
        let paths: Vec<PathBuf> = (0..self.dirs.len()).map(|j| self.journal(j)).collect();
        fold_journals(&paths).unwrap()
    }

    fn open(&self, writer: Option<Writer>) -> Opened {
        open(&self.state, &self.dirs, writer).unwrap()
    }

    /// An open by the run of journal `j`, writing as a run does: the checkpoint written.
    fn open_writing(&self, j: usize) -> Option<PathBuf> {
        let writer = Writer {
            over: OPEN_WRITE_OVER,
            ..self.writer(j)
        };
        self.open(Some(writer)).written
    }

    fn writer(&self, j: usize) -> Writer<'_> {
        Writer {
            own: &self.dirs[j],
            over: 0,
            released,
            when: crate::journal::checkpoint::WriterWhen::Opening,
        }
    }

    fn checkpoint(&self, j: usize) -> PathBuf {
        self.dirs[j].join(FILE_NAME)
    }
}

/// Whether a state folder's lock is free, as the folder module tells a writer.
fn released(dir: &Path) -> bool {
    matches!(lock::holder(dir), Ok(LockState::Free))
}

fn at(seconds: i64) -> DateTime<Utc> {
    let base: DateTime<Utc> = "2026-11-25T01:00:00Z".parse().unwrap();
    base + chrono::Duration::seconds(seconds)
}

fn started(seq: u64, seconds: i64) -> Record {
    Record::RunStarted {
        at: at(seconds),
        seq,
        api: "simulator".into(),
        pid: 1,
        version: "t".into(),
    }
}

/// The manifest's variants: six of them; records also name variants outside it.
fn manifest() -> Vec<Variant> {
    let text = "[defaults]\ntitle = \"{stem} {variant}\"\nnegative_tags = \"\"\n[[stem]]\nurl = \"https://x/take.wav\"\n[stem.matrix]\ntags = [\"a\", \"b\", \"c\"]\nstyle_weight = [0.2, 0.8]\n";
    crate::manifest::parse(Path::new("m.toml"), text)
        .unwrap()
        .variants
        .to_vec()
}

fn pool(variants: &[Variant]) -> Vec<VariantId> {
    let mut ids: Vec<VariantId> = variants.iter().map(|v| v.id.clone()).collect();
    ids.push(serde_json::from_value(serde_json::json!("gone1")).unwrap());
    ids.push(serde_json::from_value(serde_json::json!("gone2")).unwrap());
    ids
}

/// A level as a track measures it: often one that prints with many digits.
fn level(rng: &mut StdRng) -> Option<f64> {
    match rng.random_range(0..4) {
        0 => None,
        1 => Some(f64::NEG_INFINITY),
        _ => Some(rng.random::<f64>() * -60.0),
    }
}

/// A record of a run, of every kind but its start.
fn random_record(rng: &mut StdRng, ids: &[VariantId], clock: i64) -> Record {
    let when = at(clock + rng.random_range(0..50));
    let variant_id = ids[rng.random_range(0..ids.len())].clone();
    match rng.random_range(0..9) {
        0 => Record::SubmitIntent {
            variant_id,
            at: when,
        },
        1 => Record::SubmitWithdrawn { variant_id },
        2 => Record::SubmitFailed {
            variant_id,
            created: [Created::No, Created::Unknown][rng.random_range(0..2)],
            error: "e".into(),
        },
        3 | 4 => Record::Submitted {
            variant_id,
            task_id: format!("t{}", rng.random_range(0..4)),
            at: when,
        },
        5 => {
            let mut entry = TrackEntry::minimal(
                rng.random_range(1..3),
                "a",
                &format!("audio/take/x-{}.wav", rng.random_range(1..3)),
            );
            entry.duration_s = level(rng).map(f64::abs);
            entry.decoded_s = level(rng).map(f64::abs);
            entry.peak_dbfs = level(rng);
            entry.lufs = level(rng);
            entry.qc = Some(crate::qc::Verdict::Ok);
            entry.wave = Some("0aZ_".into());
            Record::Track {
                variant_id,
                task_id: format!("t{}", rng.random_range(0..4)),
                entry,
            }
        }
        6 => Record::Uploaded {
            api: ["simulator", "s3:aws:eu/b"][rng.random_range(0..2)].into(),
            sha256: format!("s{}", rng.random_range(0..3)),
            file_url: format!("u{}", rng.random_range(0..100)),
            expires_at: when,
            at: when,
        },
        _ => Record::Ended {
            variant_id,
            status: [
                EndStatus::Finished,
                EndStatus::Failed,
                EndStatus::Timeout,
                EndStatus::Error,
            ][rng.random_range(0..4)],
            error: rng.random_bool(0.5).then(|| "why".into()),
            at: when,
        },
    }
}

/// How a crash leaves the checkpoint a writer was writing (over `old`, the file before).
fn crash(rng: &mut StdRng, path: &Path, old: Option<&[u8]>) -> &'static str {
    let new = std::fs::read(path).unwrap();
    let restore_old = || match old {
        Some(old) => std::fs::write(path, old).unwrap(),
        None => std::fs::remove_file(path).unwrap(),
    };
    match rng.random_range(0..5) {
        0 => {
            // Killed while writing the temporary file: the rename never happened.
            restore_old();
            let cut = rng.random_range(0..=new.len());
            let temp = path.parent().unwrap().join(".checkpoint-killed.jsonl");
            std::fs::write(temp, &new[..cut]).unwrap();
            "partial temporary file"
        }
        1 => {
            // Renamed, but its data never reached the disk whole.
            let cut = rng.random_range(0..new.len());
            std::fs::write(path, &new[..cut]).unwrap();
            "torn at a byte"
        }
        2 => {
            // Renamed, its last blocks never written: zeros.
            let mut zeroed = new.clone();
            let from = rng.random_range(0..new.len());
            zeroed[from..].fill(0);
            std::fs::write(path, zeroed).unwrap();
            "zero-filled end"
        }
        3 => {
            // Renamed without the folder's fsync: after the crash, the old name.
            restore_old();
            "rename lost"
        }
        _ => "rename kept",
    }
}

/// Random histories of a folder's three journals (nights of a whole-folder run, shards
/// of one night side by side, a shard still running, torn last lines, `shards_used`
/// lines, now and then a run out of order), each written over by checkpoints that
/// random crashes interrupt: every open folds what the journals, replayed from their
/// starts, say; the rerun plan from it never buys a task the journals know; and the
/// checkpoints are used unless the history was out of order.
#[test]
fn a_checkpoint_cut_anywhere_never_changes_the_fold() {
    let variants = manifest();
    let ids = pool(&variants);
    let mut rng = StdRng::seed_from_u64(1616);
    let mut checkpoints_used = 0;
    for case in 0..150 {
        let folder = Folder::new();
        let mut highest = 0u64;
        let mut clock = 0i64;
        let mut live: Option<(usize, RunLock)> = None;
        let mut torn = [false; 3];
        let mut disorder = false;
        for step in 0..rng.random_range(4..16) {
            clock += 100;
            let context = format!("case {case} step {step}");
            match rng.random_range(0..10) {
                // A run starts: a new night, or a sibling shard of the last.
                0..=3 => {
                    let j = rng.random_range(0..3);
                    if live.as_ref().is_some_and(|(l, _)| *l == j) {
                        continue;
                    }
                    let seq = match rng.random_range(0..10) {
                        0 => {
                            disorder = true;
                            rng.random_range(0..=highest)
                        }
                        1..=3 => highest.max(1),
                        _ => highest + 1,
                    };
                    highest = highest.max(seq);
                    if std::mem::take(&mut torn[j]) {
                        cut_torn_line(&folder.journal(j));
                    }
                    let mut run = vec![started(seq, clock)];
                    run.extend(
                        (0..rng.random_range(0..12)).map(|_| random_record(&mut rng, &ids, clock)),
                    );
                    folder.append(j, &run);
                    // Sometimes it goes on running (it holds its lock).
                    if j > 0 && live.is_none() && rng.random_bool(0.4) {
                        let lock = lock::acquire(&folder.dirs[j], &folder.out).unwrap();
                        live = Some((j, lock));
                    }
                }
                // The running shard writes more, or ends.
                4 => {
                    if let Some((j, _)) = &live {
                        let j = *j;
                        let more: Vec<Record> = (0..rng.random_range(1..6))
                            .map(|_| random_record(&mut rng, &ids, clock))
                            .collect();
                        folder.append(j, &more);
                        if rng.random_bool(0.3) {
                            live = None;
                        }
                    }
                }
                // A shard tells older versions, in the whole folder's journal.
                5 => {
                    if !torn[0] {
                        folder.append(
                            0,
                            &[Record::ShardsUsed {
                                at: at(clock),
                                shard_count: 2,
                            }],
                        );
                    }
                }
                // A run killed mid-write of a journal line (not the running one's).
                6 => {
                    let j = rng.random_range(0..3);
                    if !torn[j] && live.as_ref().is_none_or(|(l, _)| *l != j) {
                        folder.append_bytes(j, b"{\"v\":1,\"kind\":\"ended\",\"varia");
                        torn[j] = true;
                    }
                }
                // A run's open writes its checkpoint, and a crash may cut it.
                _ => {
                    let j = rng.random_range(0..3);
                    // The writer holds its own lock: a shard that was running is the one
                    // opening again.
                    if live.as_ref().is_some_and(|(l, _)| *l == j) {
                        live = None;
                    }
                    let path = folder.checkpoint(j);
                    let old = std::fs::read(&path).ok();
                    let opened = folder.open(Some(folder.writer(j)));
                    assert_eq!(opened.folded, folder.replayed(), "{context}: writing");
                    if opened.written.is_some() && rng.random_bool(0.6) {
                        let how = crash(&mut rng, &path, old.as_deref());
                        let opened = folder.open(None);
                        assert_eq!(opened.folded, folder.replayed(), "{context}: {how}");
                    }
                }
            }
            let opened = folder.open(None);
            let replayed = folder.replayed();
            assert_eq!(opened.folded, replayed, "{context}");
            checkpoints_used += usize::from(opened.used.is_some());
            if !disorder {
                let untrusted = opened
                    .not_used
                    .iter()
                    .find(|reason| reason.contains("folds before") || reason.contains("appended"));
                assert_eq!(untrusted, None, "{context}: the order was kept");
            }
            assert_never_buys_a_known_task(&variants, &opened.folded, &context);
        }
    }
    assert!(checkpoints_used > 300, "{checkpoints_used}");
}

/// A writer's kill leaves a torn line; the next writer of that journal cuts it first.
fn cut_torn_line(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    std::fs::write(path, &bytes[..keep]).unwrap();
}

/// `rerun::plan` over the fold never submits a variant whose paid task the journals
/// name, unless `--retry-failed` asked.
fn assert_never_buys_a_known_task(variants: &[Variant], folded: &Folded, context: &str) {
    let rerun = Rerun {
        retry_failed: false,
        now: at(0),
    };
    let (planned, _) = rerun::plan(variants, &folded.priors, &HashMap::new(), rerun);
    for (variant, (start, intent)) in variants.iter().zip(planned) {
        let prior = folded.priors.get(&variant.id);
        if prior.is_some_and(|p| p.task.is_some() || p.last_outcome_unknown) {
            assert_ne!(start, Start::Submit, "{context}: {}", variant.id);
            assert!(!intent.buys(), "{context}: {intent:?}");
        }
    }
}

/// A folder of two nights, the second a shard's, with the whole folder's checkpoint.
fn two_nights() -> Folder {
    let folder = Folder::new();
    let ids = pool(&manifest());
    let mut rng = StdRng::seed_from_u64(7);
    let mut night = vec![started(1, 0)];
    night.extend((0..40).map(|_| random_record(&mut rng, &ids, 0)));
    folder.append(0, &night);
    let mut night = vec![started(2, 1000)];
    night.extend((0..40).map(|_| random_record(&mut rng, &ids, 1000)));
    folder.append(1, &night);
    let opened = folder.open(Some(folder.writer(0)));
    assert_eq!(opened.written, Some(folder.checkpoint(0)));
    folder
}

/// What opening says, for each way a checkpoint meets the journals.
#[test]
fn a_checkpoint_is_used_only_while_it_describes_the_journals() {
    type Change = fn(&Folder);
    let grown: Change = |f| f.append(1, &[started(3, 2000), submitted("later")]);
    let shards_used: Change = |f| {
        f.append(
            0,
            &[Record::ShardsUsed {
                at: at(3000),
                shard_count: 2,
            }],
        )
    };
    let cut: Change = |f| {
        let path = f.journal(1);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    };
    let replaced: Change = |f| {
        // As long, other bytes: another folder's journal copied over this one.
        let path = f.journal(0);
        let text = std::fs::read_to_string(&path).unwrap();
        let at = text.rfind("\"at\":\"2026").unwrap() + "\"at\":\"202".len();
        let changed = format!("{}7{}", &text[..at], &text[at + 1..]);
        std::fs::write(&path, changed).unwrap();
    };
    let gone: Change = |f| std::fs::remove_file(f.journal(1)).unwrap();
    let older_version: Change = |f| set_version(&f.checkpoint(0), 0);
    let appended_to_an_ended_run: Change = |f| f.append(1, &[submitted("after the end")]);
    let a_run_out_of_order: Change = |f| f.append(0, &[started(1, 5), submitted("late")]);
    let torn: Change = |f| {
        let path = f.checkpoint(0);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    };
    let body_damaged: Change = |f| {
        let path = f.checkpoint(0);
        let text = std::fs::read_to_string(&path).unwrap();
        let changed = text.replacen("\"task_id\":\"t", "\"task_id\":\"T", 1);
        assert_ne!(changed, text);
        std::fs::write(&path, changed).unwrap();
    };
    let cases: [(&str, Change, Option<&str>); 10] = [
        ("the journals grew", grown, None),
        ("a shard announced itself", shards_used, None),
        ("a journal was cut", cut, Some("fewer than")),
        ("a journal was replaced", replaced, Some("was replaced")),
        ("a journal is gone", gone, Some("is gone")),
        ("an older format", older_version, Some("older than")),
        (
            "a record after an ended run",
            appended_to_an_ended_run,
            Some("appended"),
        ),
        (
            "a run out of order",
            a_run_out_of_order,
            Some("folds before"),
        ),
        ("a torn checkpoint", torn, Some("torn")),
        ("a damaged body", body_damaged, Some("does not match")),
    ];
    for (name, change, refused) in cases {
        let folder = two_nights();
        change(&folder);
        let opened = folder.open(None);
        assert_eq!(opened.folded, folder.replayed(), "{name}");
        match refused {
            None => {
                assert_eq!(opened.used, Some(folder.checkpoint(0)), "{name}");
                assert!(opened.not_used.is_empty(), "{name}: {:?}", opened.not_used);
            }
            Some(reason) => {
                assert_eq!(opened.used, None, "{name}");
                assert!(
                    opened.not_used.iter().any(|r| r.contains(reason)),
                    "{name}: {:?}",
                    opened.not_used
                );
            }
        }
    }
    // A newer format stops the open, naming the file.
    let folder = two_nights();
    set_version(&folder.checkpoint(0), VERSION + 1);
    let err = open(&folder.state, &folder.dirs, None).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, JournalError::CheckpointTooNew { version, .. } if version == VERSION + 1),
        "{message}"
    );
    assert!(
        message.contains(&folder.checkpoint(0).display().to_string()),
        "{message}"
    );
    assert!(message.contains("upgrade stembatch"), "{message}");
}

fn submitted(task: &str) -> Record {
    Record::Submitted {
        variant_id: serde_json::from_value(serde_json::json!("v")).unwrap(),
        task_id: task.into(),
        at: at(1),
    }
}

fn set_version(path: &Path, version: u32) {
    let text = std::fs::read_to_string(path).unwrap();
    let changed = text.replacen(
        &format!("{{\"checkpoint\":{VERSION},"),
        &format!("{{\"checkpoint\":{version},"),
        1,
    );
    assert_ne!(changed, text);
    std::fs::write(path, changed).unwrap();
}

/// The shard still running is not covered: its run may get more records.
#[test]
fn a_running_shard_is_left_to_the_tail_and_the_writer_covers_what_ended() {
    let folder = Folder::new();
    folder.append(0, &[started(1, 0), submitted("night 1")]);
    folder.append(1, &[started(2, 100), submitted("shard 0")]);
    folder.append(2, &[started(2, 50), submitted("shard 1")]);
    let running = lock::acquire(&folder.dirs[2], &folder.out).unwrap();
    let opened = folder.open(Some(folder.writer(1)));
    let header = read_header(&folder.checkpoint(1)).ok().flatten().unwrap();
    // Shard 1's run folds before shard 0's, and still runs: only night 1 is covered.
    let covered: Vec<&str> = header.journals.iter().map(|c| c.journal.as_str()).collect();
    assert_eq!(covered, ["journal.jsonl"]);
    assert_eq!(opened.folded, folder.replayed());
    folder.append(2, &[submitted("shard 1 later")]);
    drop(running);
    let opened = folder.open(Some(folder.writer(1)));
    assert_eq!(opened.used, Some(folder.checkpoint(1)));
    let header = read_header(&folder.checkpoint(1)).ok().flatten().unwrap();
    assert_eq!(header.journals.len(), 3);
    assert_eq!(opened.folded, folder.replayed());
    // Nothing new: nothing written.
    assert_eq!(folder.open(Some(folder.writer(1))).written, None);
}

/// What the fold holds goes through the file unchanged: a submit in flight, what its
/// intent replaced, levels of many digits and silence.
#[test]
fn the_fold_goes_through_the_file_unchanged() {
    let folder = Folder::new();
    let ids = pool(&manifest());
    let mut rng = StdRng::seed_from_u64(3);
    let mut night = vec![started(1, 0)];
    night.extend((0..400).map(|_| random_record(&mut rng, &ids, 0)));
    night.push(Record::SubmitIntent {
        variant_id: ids[0].clone(),
        at: at(9),
    });
    folder.append(0, &night);
    let written = folder.open(Some(folder.writer(0)));
    assert!(written.written.is_some());
    let mode = std::fs::metadata(folder.checkpoint(0))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o644,
        "readable as the journals are"
    );
    let header = read_header(&folder.checkpoint(0)).ok().flatten().unwrap();
    let mut unsettled = load(&folder.checkpoint(0), &header, true).unwrap();
    assert!(unsettled.priors[&ids[0]].submit_in_flight);
    unsettled.settle();
    assert_eq!(unsettled, folder.replayed());
    assert_eq!(written.folded, unsettled);
}

/// A run's open writes the folder's first checkpoint however small (the night before's
/// journal), and then only once the journals have grown by [`OPEN_WRITE_OVER`].
#[test]
fn an_open_writes_the_first_checkpoint_then_when_it_pays() {
    let folder = Folder::new();
    folder.append(0, &[started(1, 0), submitted("night 1")]);
    assert_eq!(folder.open_writing(0), Some(folder.checkpoint(0)));
    folder.append(0, &[started(2, 100), submitted("night 2")]);
    assert_eq!(folder.open_writing(0), None);
    let opened = folder.open(None);
    assert_eq!(opened.used, Some(folder.checkpoint(0)));
    assert_eq!(opened.folded, folder.replayed());
    let line = encode(&submitted("more"));
    let many: String =
        std::iter::repeat_n(line.as_str(), OPEN_WRITE_OVER as usize / line.len() + 1).collect();
    folder.append_bytes(0, format!("{}{many}", encode(&started(3, 200))).as_bytes());
    assert_eq!(folder.open_writing(0), Some(folder.checkpoint(0)));
    let opened = folder.open(None);
    assert_eq!(opened.used, Some(folder.checkpoint(0)));
    assert_eq!(opened.folded, folder.replayed());
}

/// A large checkpoint is rewritten by a run's open only once the journals grew by a
/// quarter of its size: rewriting costs its size, and a night adds little to an old
/// folder, which would otherwise rewrite its whole history every night.
#[test]
fn a_large_checkpoint_is_rewritten_only_when_a_quarter_of_its_size_is_not_covered() {
    let folder = Folder::new();
    let variant = |i: usize| Record::Submitted {
        variant_id: serde_json::from_value(serde_json::json!(format!("v{i}"))).unwrap(),
        task_id: format!("task {i}"),
        at: at(1),
    };
    let first_night: Vec<Record> = std::iter::once(started(1, 0))
        .chain((0..20_000).map(variant))
        .collect();
    folder.append(0, &first_night);
    assert_eq!(folder.open_writing(0), Some(folder.checkpoint(0)));
    let size = std::fs::metadata(folder.checkpoint(0)).unwrap().len();
    assert!(
        size / 4 > 2 * OPEN_WRITE_OVER,
        "a checkpoint of {size} bytes"
    );
    let line = encode(&submitted("more"));
    let night = |seq: u64, bytes: u64| {
        let many = line.repeat(bytes as usize / line.len() + 1);
        format!("{}{many}", encode(&started(seq, 100 * seq as i64)))
    };
    // More than OPEN_WRITE_OVER, less than a quarter of the checkpoint: not rewritten, and
    // the open folds the tail after it.
    folder.append_bytes(0, night(2, 2 * OPEN_WRITE_OVER).as_bytes());
    assert_eq!(folder.open_writing(0), None);
    let opened = folder.open(None);
    assert_eq!(opened.used, Some(folder.checkpoint(0)));
    assert_eq!(opened.folded, folder.replayed());
    // Past a quarter: rewritten.
    folder.append_bytes(0, night(3, size / 4).as_bytes());
    assert_eq!(folder.open_writing(0), Some(folder.checkpoint(0)));
    assert_eq!(folder.open(None).folded, folder.replayed());
}

/// The fold read from a checkpoint holds each variant's tracks with no room to spare,
/// their entries left in the checkpoint's line and read back whole.
#[test]
fn a_read_checkpoint_holds_the_tracks_compactly() {
    let folder = two_nights();
    let v: VariantId = serde_json::from_value(serde_json::json!("v")).unwrap();
    let track = |n: u32| Record::Track {
        variant_id: v.clone(),
        task_id: "done".into(),
        entry: TrackEntry::minimal(n, "a", &format!("audio/take/v-{n}.wav")),
    };
    let ended = Record::Ended {
        variant_id: v.clone(),
        status: EndStatus::Finished,
        error: None,
        at: at(3001),
    };
    folder.append(
        0,
        &[
            started(3, 3000),
            submitted("done"),
            track(1),
            track(2),
            ended,
        ],
    );
    folder.open(Some(folder.writer(0)));
    let opened = folder.open(None);
    assert_eq!(opened.used, Some(folder.checkpoint(0)));
    let mut tracks = 0;
    for prior in opened.folded.priors.values() {
        for task in prior.task.iter() {
            assert_eq!(task.tracks.capacity(), task.tracks.len());
            tracks += task.tracks.len();
        }
    }
    assert!(tracks > 0, "the nights hold tracks");
    // Each track's entry stays in the checkpoint's line, and reads back whole.
    assert_eq!(opened.folded, folder.replayed());
}

/// A checkpoint written while a resubmit's intent is open keeps the replaced task's
/// tracks in the `before_intent` part of the variant's line; the submit that then proves
/// to have created nothing restores them, and their entries read back whole from there.
#[test]
fn the_tracks_of_a_task_an_open_submit_replaced_read_back_from_the_checkpoint() {
    let folder = Folder::new();
    let v: VariantId = serde_json::from_value(serde_json::json!("v")).unwrap();
    let track = |n: u32| {
        let mut entry = TrackEntry::minimal(n, &format!("a{n}"), &format!("audio/take/v-{n}.wav"));
        entry.audio_url = format!("https://cdn.example.com/{n}.mp3");
        entry.wave = Some(format!("wave{n}"));
        Record::Track {
            variant_id: v.clone(),
            task_id: "done".into(),
            entry,
        }
    };
    let night_one = [
        started(1, 0),
        Record::SubmitIntent {
            variant_id: v.clone(),
            at: at(1),
        },
        Record::Submitted {
            variant_id: v.clone(),
            task_id: "done".into(),
            at: at(2),
        },
        track(1),
        track(2),
        Record::Ended {
            variant_id: v.clone(),
            status: EndStatus::Finished,
            error: None,
            at: at(3),
        },
        started(2, 100),
        Record::SubmitIntent {
            variant_id: v.clone(),
            at: at(101),
        },
    ];
    folder.append(0, &night_one);
    // The run of night two is gone (its lock is free): the checkpoint covers its intent.
    assert_eq!(folder.open_writing(0), Some(folder.checkpoint(0)));
    folder.append(
        0,
        &[
            started(3, 200),
            Record::SubmitFailed {
                variant_id: v.clone(),
                created: Created::No,
                error: "refused".into(),
            },
        ],
    );
    let opened = folder.open(None);
    assert_eq!(opened.used, Some(folder.checkpoint(0)));
    let prior = &opened.folded.priors[&v];
    let tracks = &prior
        .task
        .as_ref()
        .expect("the earlier task is restored")
        .tracks;
    for track in tracks {
        assert!(
            matches!(track.details, Details::Stored(at) if at.replaced),
            "{track:?}"
        );
    }
    let whole = opened.folded.store.records(tracks).unwrap();
    let urls: Vec<&str> = whole.iter().map(|t| t.audio_url.as_str()).collect();
    assert_eq!(
        urls,
        [
            "https://cdn.example.com/1.mp3",
            "https://cdn.example.com/2.mp3"
        ]
    );
    assert_eq!(whole[1].wave.as_deref(), Some("wave2"));
    assert_eq!(opened.folded, folder.replayed());
}
