//! What a re-run does with each variant of the manifest, which track files of earlier
//! variants it must move aside first, and which paid tasks of variants no longer in the
//! manifest it collects ([`orphans`]). Pure: the caller reads the journal and checks files.
//! Beside the run state with [`decide`], which it builds on: what
//! a run buys is decided here, not in the journal that records it.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::start::{decide, Rerun, Start, COLLECT_WITHIN};
use crate::journal::format::EndStatus;
use crate::journal::replay::{Prior, PriorTask};
use crate::variant::{Variant, VariantId};

/// What a run does with one variant, and what it costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Intent {
    /// Never submitted: bought.
    New,
    /// Its parameters or stem changed since an earlier run downloaded its tracks: bought
    /// anew, and the earlier tracks move to `superseded/`.
    Changed,
    /// Ended `error` before any task was created: bought again, unasked (nothing was
    /// paid for it).
    Retry,
    /// Failed, timed out or errored, and `--retry-failed` asked for it: bought again.
    RetryAsked,
    /// Its last submit's answer was lost, and `--retry-failed` asked for it: bought again,
    /// at the risk of paying twice.
    RetryAfterUnknown,
    /// Its task exists: polled, never bought again.
    Resume,
    /// Finished, but a track file is missing or damaged: downloaded again from its task.
    Redownload,
    /// Its earlier end stands.
    Keep,
    /// Its last submit's answer was lost: kept as `error` until `--retry-failed`.
    KeepUnknown,
    /// Its stem's file cannot be sent (a file a glob matched that is empty or not audio):
    /// it ends `error` unsent.
    Unusable,
}

impl Intent {
    /// Whether the run buys a task for it.
    pub fn buys(self) -> bool {
        matches!(
            self,
            Intent::New
                | Intent::Changed
                | Intent::Retry
                | Intent::RetryAsked
                | Intent::RetryAfterUnknown
        )
    }

    /// The word for logs and `plan --out`.
    pub fn word(self) -> &'static str {
        match self {
            Intent::New => "new",
            Intent::Changed => "changed",
            Intent::Retry => "retry",
            Intent::RetryAsked => "retry_asked",
            Intent::RetryAfterUnknown => "retry_after_unknown",
            Intent::Resume => "resume",
            Intent::Redownload => "redownload",
            Intent::Keep => "keep",
            Intent::KeepUnknown => "keep_unknown",
            Intent::Unusable => "unusable",
        }
    }

    /// Every intent, in the order summaries list them.
    pub const ALL: [Intent; 10] = [
        Intent::New,
        Intent::Changed,
        Intent::Retry,
        Intent::RetryAsked,
        Intent::RetryAfterUnknown,
        Intent::Resume,
        Intent::Redownload,
        Intent::Keep,
        Intent::KeepUnknown,
        Intent::Unusable,
    ];
}

/// A track file of an earlier variant that a changed variant would write over: it moves
/// to `DIR/superseded/` first, its old variant id in its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    /// Relative to the output folder.
    pub from: PathBuf,
    /// Relative to the output folder.
    pub to: PathBuf,
}

/// Where a track file sits: `audio/<stem>/<base>-<n>.<ext>` → (`<stem>`, `<base>`).
fn slot_of(file: &str) -> Option<(&str, &str)> {
    let rest = file.strip_prefix("audio/")?;
    let (stem, name) = rest.split_once('/')?;
    let (without_ext, _) = name.rsplit_once('.')?;
    let (base, number) = without_ext.rsplit_once('-')?;
    number.parse::<u32>().ok()?;
    Some((stem, base))
}

/// The superseded name of `file` (`audio/<stem>/<name>.<ext>`), tagged with `old` (the
/// variant id or the task it came from).
fn superseded_path(file: &str, old: &str) -> PathBuf {
    let rest = file.strip_prefix("audio/").unwrap_or(file);
    let path = Path::new(rest);
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("track");
    let name = match path.extension().and_then(|e| e.to_str()) {
        Some(ext) => format!("{stem}.{old}.{ext}"),
        None => format!("{stem}.{old}"),
    };
    Path::new("superseded")
        .join(path.parent().unwrap_or(Path::new("")))
        .join(name)
}

/// Where a track file that changed on disk (`audio/<stem>/<name>.<ext>`) moves before the
/// track is downloaded again: `superseded/<stem>/<name>.changed.<ext>` (numbered when
/// taken). It is never overwritten in place: it may be a user's edit.
pub fn changed_path(file: &str) -> PathBuf {
    superseded_path(file, "changed")
}

/// A paid task whose variant is no longer in the manifest (its parameters changed, or it
/// was removed) while the task was in flight: the run collects it, never buys it again.
#[derive(Clone, Debug, PartialEq)]
pub struct Orphan {
    /// The variant it was bought for, as the journal names it.
    pub variant_id: VariantId,
    /// The provider's task.
    pub task_id: String,
    /// When it was created.
    pub submitted_at: chrono::DateTime<chrono::Utc>,
}

/// Where track `number` of an orphan's task lands: `superseded/<old variant_id>-<n>.<ext>`
/// (or a free numbered name beside it: nothing there is ever replaced). The journal does
/// not name an orphan's stem, so its old variant id is what says where it came from.
pub fn orphan_track_path(variant_id: &VariantId, number: u32, ext: &str) -> String {
    format!("superseded/{variant_id}-{number}.{ext}")
}

/// The paid tasks of variants that `listed` does not take (it takes every variant of the
/// manifest, all shards') that a run collects, oldest first:
///
/// - a task the journal names (a lost submit answer names none: nothing to ask about),
/// - not ended `finished` (collected) or `failed` (nothing to collect), so: still
///   running when its run stopped (`pending`), or ended `timeout`, or `error` (its
///   download kept failing),
/// - younger than [`COLLECT_WITHIN`]: past the provider's expiry of its result files,
///   asking costs a query and brings nothing.
///
/// Once collected, its end is journaled under its old variant id, which takes it out of
/// this list; a timeout or an error is asked about again by the next run while young
/// enough, as the manifest's own variants are.
pub fn orphans(
    listed: impl Fn(&VariantId) -> bool,
    priors: &HashMap<VariantId, Prior>,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<Orphan> {
    let mut found: Vec<Orphan> = priors
        .iter()
        .filter(|(id, _)| !listed(id))
        .filter_map(|(id, prior)| {
            let task = prior.task.as_ref()?;
            let open = match prior.end.as_ref().map(|e| e.status) {
                None | Some(EndStatus::Timeout) | Some(EndStatus::Error) => true,
                Some(EndStatus::Finished) | Some(EndStatus::Failed) => false,
            };
            let young = now - task.submitted_at < COLLECT_WITHIN;
            (open && young).then(|| Orphan {
                variant_id: id.clone(),
                task_id: task.task_id.clone(),
                submitted_at: task.submitted_at,
            })
        })
        .collect();
    found.sort_by(|a, b| (a.submitted_at, &a.task_id).cmp(&(b.submitted_at, &b.task_id)));
    found
}

/// A track file as the journal last knows it: its slot (`audio/<stem>/<base>-<n>.<ext>`:
/// stem and base), its path, and the variant and task that wrote it.
type Written<'a> = ((&'a str, &'a str), &'a str, &'a VariantId, &'a PriorTask);

/// Each variant's start and intent, in the order of `variants`, and the moves its new
/// tracks need, from the journal's `priors`. `intact` tells, per finished variant, whether
/// its tracks are whole. Each variant is looked at once and may be built as it comes
/// (a run's table builds it by position): no list of every variant is needed.
pub fn plan<V: Borrow<Variant>>(
    variants: impl IntoIterator<Item = V>,
    priors: &HashMap<VariantId, Prior>,
    intact: &HashMap<VariantId, bool>,
    rerun: Rerun,
) -> (Vec<(Start, Intent)>, Vec<Move>) {
    // Who wrote each track file last (of two that wrote the same path, the later task's
    // is what the file holds), in one list sorted by slot: a folder's fold holds every
    // track of every night, and a map by file and a list per slot cost twice as much.
    let mut written: Vec<Written<'_>> = priors
        .iter()
        .filter_map(|(id, prior)| Some((id, prior.task.as_ref()?)))
        .flat_map(|(id, task)| {
            task.tracks
                .iter()
                .filter_map(move |track| Some((slot_of(&track.file)?, &*track.file, id, task)))
        })
        .collect();
    written.sort_unstable_by(|a, b| {
        (a.1, std::cmp::Reverse(a.3.submitted_at), a.2).cmp(&(
            b.1,
            std::cmp::Reverse(b.3.submitted_at),
            b.2,
        ))
    });
    written.dedup_by(|later, latest| later.1 == latest.1);
    written.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let mut moves = Vec::new();
    let planned = variants
        .into_iter()
        .map(|variant| {
            let variant = variant.borrow();
            let prior = priors.get(&variant.id);
            let whole = intact.get(&variant.id).copied().unwrap_or(true);
            let start = match (decide(prior, whole, rerun), &variant.stem.problem) {
                (Start::Submit, Some(problem)) => Start::Refuse {
                    reason: format!("not submitted: {problem}"),
                },
                (start, _) => start,
            };
            let base = variant.file_base();
            let slot = (variant.stem.name.as_str(), base.as_str());
            let from = written.partition_point(|w| w.0 < slot);
            let to = from + written[from..].partition_point(|w| w.0 == slot);
            let here = &written[from..to];
            let others = here.iter().any(|(_, _, owner, _)| **owner != variant.id);
            let intent = intent_of(&start, prior, others);
            moves.extend(here.iter().filter_map(|&(_, file, owner, task)| {
                let tag = superseding(&start, owner == &variant.id, owner, task)?;
                Some(Move {
                    from: PathBuf::from(file),
                    to: superseded_path(file, &tag),
                })
            }));
            (start, intent)
        })
        .collect();
    (planned, moves)
}

/// The tag under which a file at a variant's track path moves aside before the variant
/// writes there, if it must: another variant's track (whatever this one does next that
/// writes tracks), or this variant's own track from a task that a new submit replaces.
fn superseding(start: &Start, own: bool, owner: &VariantId, task: &PriorTask) -> Option<String> {
    let writes = matches!(
        start,
        Start::Submit | Start::Poll { .. } | Start::Redownload { .. }
    );
    match (writes, own, start) {
        (false, _, _) => None,
        (true, false, _) => Some(owner.to_string()),
        (true, true, Start::Submit) => Some(task.task_id.clone()),
        (true, true, _) => None,
    }
}

fn intent_of(start: &Start, prior: Option<&Prior>, replaces: bool) -> Intent {
    match (start, prior) {
        (Start::Keep, Some(p)) if p.last_outcome_unknown && p.task.is_none() => Intent::KeepUnknown,
        (Start::Keep, _) => Intent::Keep,
        (Start::Poll { .. }, _) => Intent::Resume,
        (Start::Redownload { .. }, _) => Intent::Redownload,
        (Start::Refuse { .. }, _) => Intent::Unusable,
        (Start::Submit, None) if replaces => Intent::Changed,
        // Never sent (or every intent withdrawn): new as far as money goes.
        (Start::Submit, None) => Intent::New,
        (Start::Submit, Some(p)) if p.attempts == 0 => Intent::New,
        (Start::Submit, Some(p)) if p.last_outcome_unknown => Intent::RetryAfterUnknown,
        (Start::Submit, Some(p)) if p.task.is_none() && !p.last_outcome_unknown => Intent::Retry,
        (Start::Submit, Some(_)) => Intent::RetryAsked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::format::TrackEntry;
    use crate::journal::replay::{PriorTask, PriorTrack};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn parsed(text: &str) -> crate::manifest::Manifest {
        let head = "[defaults]\ntitle = \"{stem} {variant}\"\nnegative_tags = \"\"\n";
        crate::manifest::parse(Path::new("m.toml"), &format!("{head}{text}")).unwrap()
    }

    fn variants(text: &str) -> Vec<Variant> {
        parsed(text).variants.to_vec()
    }

    fn finished_with_tracks(files: &[&str]) -> Prior {
        let at = "2026-11-25T01:00:00Z".parse().unwrap();
        known(KnownPrior {
            attempts: 1,
            task: Some(PriorTask {
                task_id: "t-old".into(),
                submitted_at: at,
                tracks: files
                    .iter()
                    .enumerate()
                    .map(|(i, file)| {
                        PriorTrack::new(TrackEntry::minimal(i as u32 + 1, "a", file), None)
                    })
                    .collect(),
            }),
            end: Some(crate::journal::replay::PriorEnd {
                status: crate::journal::format::EndStatus::Finished,
                error: None,
                at,
            }),
            ..KnownPrior::default()
        })
    }

    /// `prior` as the fold leaves a variant with no submit in flight (the fold's own
    /// bookkeeping is private to the journal).
    fn known(prior: KnownPrior) -> Prior {
        let mut folded = Prior::default();
        (
            folded.attempts,
            folded.last_outcome_unknown,
            folded.task,
            folded.end,
        ) = (
            prior.attempts,
            prior.last_outcome_unknown,
            prior.task,
            prior.end,
        );
        folded
    }

    /// The fields of a [`Prior`] that the decisions read.
    #[derive(Default)]
    struct KnownPrior {
        attempts: u32,
        last_outcome_unknown: bool,
        task: Option<PriorTask>,
        end: Option<crate::journal::replay::PriorEnd>,
    }

    fn rerun() -> Rerun {
        Rerun {
            retry_failed: false,
            now: "2026-11-25T02:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn a_changed_variant_moves_the_earlier_tracks_aside_and_says_so() {
        let stem = "[[stem]]\nurl = \"https://x/take.wav\"\n";
        let before = variants(&format!("{stem}tags = \"piano\"\n"));
        let after = variants(&format!("{stem}tags = \"strings\"\n"));
        let old = before[0].id.clone();
        let files = ["audio/take/default-1.wav", "audio/take/default-2.wav"];
        let priors = HashMap::from([(old.clone(), finished_with_tracks(&files))]);
        let (planned, moves) = plan(&after, &priors, &HashMap::new(), rerun());
        assert_eq!(planned, [(Start::Submit, Intent::Changed)]);
        assert_eq!(
            moves,
            [
                Move {
                    from: "audio/take/default-1.wav".into(),
                    to: format!("superseded/take/default-1.{old}.wav").into(),
                },
                Move {
                    from: "audio/take/default-2.wav".into(),
                    to: format!("superseded/take/default-2.{old}.wav").into(),
                },
            ]
        );
        // The unchanged variant keeps its tracks where they are.
        let (planned, moves) = plan(&before, &priors, &HashMap::new(), rerun());
        assert_eq!(planned, [(Start::Keep, Intent::Keep)]);
        assert!(moves.is_empty());
    }

    #[test]
    fn a_variant_changed_back_never_writes_over_the_track_that_replaced_it() {
        let stem = "[[stem]]\nurl = \"https://x/take.wav\"\n";
        let first = variants(&format!("{stem}tags = \"piano\"\n"));
        let second = variants(&format!("{stem}tags = \"strings\"\n"));
        let (a, b) = (first[0].id.clone(), second[0].id.clone());
        let file = "audio/take/default-1.wav";
        let mut later = finished_with_tracks(&[file]);
        later.task.as_mut().unwrap().submitted_at += chrono::TimeDelta::hours(24);
        let priors = HashMap::from([
            (a.clone(), finished_with_tracks(&[file])),
            (b.clone(), later),
        ]);
        // Back to the first parameters: its file now holds the second's track, so it is
        // damaged, downloaded again from its task, and the second's track moves first.
        let damaged = HashMap::from([(a.clone(), false)]);
        let (planned, moves) = plan(&first, &priors, &damaged, rerun());
        assert!(
            matches!(planned[0].0, Start::Redownload { .. }),
            "{planned:?}"
        );
        assert_eq!(
            moves,
            [Move {
                from: file.into(),
                to: format!("superseded/take/default-1.{b}.wav").into(),
            }]
        );
    }

    #[test]
    fn a_resubmit_asked_for_moves_the_variants_own_earlier_tracks_aside() {
        let stem = "[[stem]]\nurl = \"https://x/take.wav\"\n";
        let now = variants(&format!("{stem}tags = \"piano\"\n"));
        let mut partial = finished_with_tracks(&["audio/take/default-1.wav"]);
        partial.end.as_mut().unwrap().status = crate::journal::format::EndStatus::Error;
        let priors = HashMap::from([(now[0].id.clone(), partial)]);
        let asked = Rerun {
            retry_failed: true,
            ..rerun()
        };
        let (planned, moves) = plan(&now, &priors, &HashMap::new(), asked);
        assert_eq!(planned[0].0, Start::Submit);
        assert_eq!(
            moves,
            [Move {
                from: "audio/take/default-1.wav".into(),
                to: "superseded/take/default-1.t-old.wav".into(),
            }]
        );
        // Unasked, its task is polled again: its own track stays where it is.
        let (planned, moves) = plan(&now, &priors, &HashMap::new(), rerun());
        assert!(matches!(planned[0].0, Start::Poll { .. }), "{planned:?}");
        assert!(moves.is_empty());
    }

    #[test]
    fn only_the_same_slot_is_superseded_not_a_prefix_of_it() {
        assert_eq!(slot_of("audio/s/piano-t2-1.wav"), Some(("s", "piano-t2")));
        assert_eq!(slot_of("audio/s/piano-1.mp3"), Some(("s", "piano")));
        assert_eq!(slot_of("audio/s/piano.jpeg"), None);
        let stem = "[[stem]]\nurl = \"https://x/s.wav\"\nname = \"s\"\n[[stem.variant]]\nname = \"piano\"\n";
        let now = variants(&format!("{stem}tags = \"a\"\n"));
        let other: VariantId = serde_json::from_value(serde_json::json!("0123abcd")).unwrap();
        let priors = HashMap::from([(other, finished_with_tracks(&["audio/s/piano-t2-1.wav"]))]);
        let (planned, moves) = plan(&now, &priors, &HashMap::new(), rerun());
        assert_eq!(planned, [(Start::Submit, Intent::New)]);
        assert!(moves.is_empty());
    }

    fn id(text: &str) -> VariantId {
        serde_json::from_value(serde_json::json!(text)).unwrap()
    }

    /// One prior of each kind, by what its history was.
    fn prior(end: Option<EndStatus>, task: bool, age_hours: i64, unknown: bool) -> Prior {
        let now: chrono::DateTime<chrono::Utc> = "2026-11-25T02:00:00Z".parse().unwrap();
        let at = now - chrono::TimeDelta::hours(age_hours);
        known(KnownPrior {
            attempts: 1,
            last_outcome_unknown: unknown,
            task: task.then(|| PriorTask {
                task_id: format!("t-{age_hours}"),
                submitted_at: at,
                tracks: vec![PriorTrack::new(
                    TrackEntry::minimal(1, "a", "audio/s/v-1.wav"),
                    None,
                )],
            }),
            end: end.map(|status| crate::journal::replay::PriorEnd {
                status,
                error: None,
                at,
            }),
        })
    }

    /// Which tasks of variants no longer listed are collected: every open task the journal
    /// names, while younger than the provider's expiry; never one of a listed variant.
    #[test]
    fn orphans_are_the_open_young_tasks_of_variants_no_longer_listed() {
        use EndStatus::*;
        let now = rerun().now;
        // (end, a task is named, its age in hours, the last outcome unknown) → collected
        let table = [
            (None, true, 1, false, true),
            (Some(Timeout), true, 1, false, true),
            (Some(Error), true, 1, false, true),
            (Some(Finished), true, 1, false, false),
            (Some(Failed), true, 1, false, false),
            (None, true, 71, false, true),
            (None, true, 72, false, false),
            (Some(Timeout), true, 100, false, false),
            // A lost answer: a task may exist, but nothing names it.
            (None, false, 1, true, false),
            (Some(Error), false, 1, false, false),
        ];
        for (i, (end, task, age, unknown, collected)) in table.into_iter().enumerate() {
            let gone = id(&format!("gone{i}"));
            let priors = HashMap::from([(gone.clone(), prior(end, task, age, unknown))]);
            let found = orphans(|_| false, &priors, now);
            assert_eq!(found.len(), usize::from(collected), "row {i}: {found:?}");
            if collected {
                assert_eq!(found[0].variant_id, gone);
                assert_eq!(found[0].task_id, format!("t-{age}"));
            }
            // A variant still listed is the plan's, never an orphan.
            assert!(orphans(|id| id == &gone, &priors, now).is_empty());
        }
    }

    #[test]
    fn orphans_come_oldest_first_and_land_in_superseded_under_their_old_id() {
        let priors = HashMap::from([
            (id("b"), prior(None, true, 2, false)),
            (id("a"), prior(None, true, 5, false)),
        ]);
        let found = orphans(|_| false, &priors, rerun().now);
        let order: Vec<_> = found.iter().map(|o| o.variant_id.as_str()).collect();
        assert_eq!(order, ["a", "b"]);
        assert_eq!(orphan_track_path(&id("a"), 2, "wav"), "superseded/a-2.wav");
        assert_eq!(
            changed_path("audio/s/v-t2-1.wav"),
            PathBuf::from("superseded/s/v-t2-1.changed.wav")
        );
    }

    /// A manifest of a few stems, each a matrix of tags with takes; `earlier` sends other
    /// negative tags for the stems it names, so their variants keep their names (and track
    /// paths) under other ids: what a changed manifest leaves in the journal.
    fn random_manifest(rng: &mut StdRng, earlier: &[bool]) -> String {
        let mut text = String::new();
        for (stem, changed) in earlier.iter().enumerate() {
            let tags: Vec<String> = (0..rng.random_range(1..6))
                .map(|i| format!("\"t{i}\""))
                .collect();
            text.push_str(&format!(
                "[[stem]]\nurl = \"https://x/s{stem}.wav\"\ntakes = {}\nnegative_tags = \"{}\"\n[stem.matrix]\ntags = [{}]\n",
                rng.random_range(1..4),
                if *changed { "old" } else { "" },
                tags.join(", ")
            ));
        }
        text
    }

    /// A run holds its variants by id and builds each as it is looked at: over random
    /// manifests, random earlier nights (changed variants, variants gone, tracks missing)
    /// and any shard, the shard's table (chosen by id, built by position) is the shard's
    /// list, and the plan and the orphans over the tables are those over the lists.
    #[test]
    fn a_plan_over_a_table_by_position_is_the_plan_over_the_list() {
        let mut rng = StdRng::seed_from_u64(16);
        // What the rounds went through: moves, orphans, variants left to other shards.
        let (mut moved, mut collected, mut elsewhere) = (0, 0, 0);
        for round in 0..60 {
            let stems = rng.random_range(1..5);
            let changed: Vec<bool> = (0..stems).map(|_| rng.random_bool(0.5)).collect();
            let seed = rng.random::<u64>();
            let text =
                |earlier: &[bool]| random_manifest(&mut StdRng::seed_from_u64(seed), earlier);
            let manifest = parsed(&text(&vec![false; stems]));
            let list = manifest.variants.to_vec();
            let earlier = variants(&text(&changed));
            let mut priors = HashMap::new();
            let mut intact = HashMap::new();
            for variant in list.iter().chain(&earlier) {
                if rng.random_bool(0.3) {
                    continue;
                }
                let end = [None, Some(EndStatus::Finished), Some(EndStatus::Error)]
                    [rng.random_range(0..3)];
                let mut prior = prior(end, rng.random_bool(0.8), rng.random_range(0..100), false);
                if let Some(task) = &mut prior.task {
                    let file = format!("audio/{}/{}-1.wav", variant.stem.name, variant.file_base());
                    task.tracks = vec![PriorTrack::new(TrackEntry::minimal(1, "a", &file), None)];
                }
                intact.insert(variant.id.clone(), rng.random_bool(0.8));
                priors.insert(variant.id.clone(), prior);
            }
            let count = rng.random_range(1..4);
            let shard =
                crate::shard::Shard::new(rng.random_range(0..count), count, "test").unwrap();
            let listed = manifest.variants.table();
            let table = listed.subset(|id| shard.contains(id));
            let own: Vec<&Variant> = list.iter().filter(|v| shard.contains(&v.id)).collect();
            let key = |v: &Variant| {
                (
                    v.id.clone(),
                    v.stem.name.clone(),
                    v.name.clone(),
                    v.take,
                    v.params.clone(),
                )
            };
            let built: Vec<_> = table.iter().map(|v| key(&v)).collect();
            let expected: Vec<_> = own.iter().map(|v| key(v)).collect();
            assert_eq!(built, expected, "round {round}");
            let rerun = Rerun {
                retry_failed: rng.random_bool(0.5),
                ..rerun()
            };
            let by_position = plan(table.iter(), &priors, &intact, rerun);
            let over_list = plan(own.iter().copied(), &priors, &intact, rerun);
            assert_eq!(by_position, over_list, "round {round}");
            let now = rerun.now;
            let over_list = orphans(|id| list.iter().any(|v| &v.id == id), &priors, now);
            assert_eq!(orphans(|id| listed.contains(id), &priors, now), over_list);
            moved += by_position.1.len();
            collected += over_list.len();
            elsewhere += list.len() - own.len();
        }
        assert!(
            moved > 20 && collected > 20 && elsewhere > 20,
            "{moved} {collected} {elsewhere}"
        );
    }

    #[test]
    fn intents_say_what_is_bought() {
        let bought: Vec<_> = Intent::ALL
            .iter()
            .filter(|i| i.buys())
            .map(|i| i.word())
            .collect();
        assert_eq!(
            bought,
            [
                "new",
                "changed",
                "retry",
                "retry_asked",
                "retry_after_unknown"
            ]
        );
    }
}
