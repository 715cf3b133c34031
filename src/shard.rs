//! Shards: N processes split one manifest with no coordination. A variant belongs to shard
//! `hash(variant_id) mod N`, a stable hash, so every variant is in exactly one shard and
//! the split is the same every night. Pure: the environment is read through a function.
//!
//! The shard decides only which variants a process runs. A variant's identity stays its
//! `variant_id`, so a folder run with another N on another night resumes and keeps what
//! was paid for (`folder::layout` reads every shard's journal).

use std::fmt;

use sha2::{Digest, Sha256};

use crate::variant::VariantId;

/// Kubernetes Indexed Jobs: the pod's index.
pub const K8S_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// The shard count for a Kubernetes Indexed Job (Kubernetes does not give it to the pod).
pub const SHARD_COUNT_ENV: &str = "STEMBATCH_SHARD_COUNT";
/// Slurm job arrays: the task's id.
pub const SLURM_ID_ENV: &str = "SLURM_ARRAY_TASK_ID";
/// Slurm job arrays: the number of tasks.
pub const SLURM_COUNT_ENV: &str = "SLURM_ARRAY_TASK_COUNT";
/// Slurm job arrays: the lowest task id (`--array=1-4` starts at 1).
pub const SLURM_MIN_ENV: &str = "SLURM_ARRAY_TASK_MIN";
/// Slurm job arrays: the step between task ids (`--array=1-7:2` steps by 2).
pub const SLURM_STEP_ENV: &str = "SLURM_ARRAY_TASK_STEP";

/// Every variable [`Shard::resolve`] reads.
pub const ENV_VARS: [&str; 6] = [
    K8S_INDEX_ENV,
    SHARD_COUNT_ENV,
    SLURM_ID_ENV,
    SLURM_COUNT_ENV,
    SLURM_MIN_ENV,
    SLURM_STEP_ENV,
];

/// Shard `index` of `count` (0-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shard {
    index: u32,
    count: u32,
}

/// Why a shard cannot be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// Not `I/N`.
    #[error("--shard {text:?} is not I/N (hint: --shard 0/3 is the first of three shards)")]
    Syntax {
        /// What was given.
        text: String,
    },
    /// `I` is not below `N`, or `N` is 0.
    #[error("{source_name}: shard {index} of {count} does not exist: shards are numbered 0 to N-1, with N at least 1")]
    OutOfRange {
        /// Where the numbers came from.
        source_name: String,
        /// The index given.
        index: u64,
        /// The count given.
        count: u64,
    },
    /// An environment variable is not a number.
    #[error("{name}={value:?} is not a whole number")]
    NotANumber {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// A Kubernetes index without a count.
    #[error("{K8S_INDEX_ENV} is set but the shard count is not (hint: pass --shard-count N or set {SHARD_COUNT_ENV} to the Indexed Job's completions)")]
    NoCount,
    /// A count without an index: running the whole manifest on every host would buy
    /// every variant once per host.
    #[error("--shard-count {count} without a shard index: this process would run every variant (hint: pass --shard I/{count}, or run it as a Kubernetes Indexed Job or a Slurm array)")]
    NoIndex {
        /// The count given.
        count: u32,
    },
    /// A Slurm array whose step leaves this task out of the shard numbering.
    #[error("{SLURM_ID_ENV}={id} is not on the array's steps of {step} from {min} (hint: give --shard I/N)")]
    OffStep {
        /// The task id.
        id: u64,
        /// The array's first id.
        min: u64,
        /// The array's step.
        step: u64,
    },
}

impl Shard {
    /// Shard `index` of `count`; `from` names where the numbers came from, for the error.
    pub fn new(index: u64, count: u64, from: &str) -> Result<Shard, ShardError> {
        let out_of_range = || ShardError::OutOfRange {
            source_name: from.to_owned(),
            index,
            count,
        };
        let count32 = u32::try_from(count).map_err(|_| out_of_range())?;
        if count32 == 0 || index >= count {
            return Err(out_of_range());
        }
        Ok(Shard {
            index: index as u32,
            count: count32,
        })
    }

    /// `I/N`, as `--shard` takes it.
    pub fn parse(text: &str) -> Result<Shard, ShardError> {
        let syntax = || ShardError::Syntax {
            text: text.to_owned(),
        };
        let (index, count) = text.trim().split_once('/').ok_or_else(syntax)?;
        let number = |s: &str| s.trim().parse::<u64>().map_err(|_| syntax());
        Shard::new(number(index)?, number(count)?, &format!("--shard {text}"))
    }

    /// The shard asked for: `--shard`, else a scheduler's environment (a Kubernetes
    /// Indexed Job, then a Slurm array); `None` runs every variant. `count` is
    /// `--shard-count`; `env` reads a variable.
    pub fn resolve(
        flag: Option<Shard>,
        count: Option<u32>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Shard>, ShardError> {
        if let Some(shard) = flag {
            return Ok(Some(shard));
        }
        let number = |name: &'static str| -> Result<Option<u64>, ShardError> {
            match env(name).filter(|v| !v.trim().is_empty()) {
                None => Ok(None),
                Some(value) => value
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| ShardError::NotANumber { name, value }),
            }
        };
        if let Some(index) = number(K8S_INDEX_ENV)? {
            let count = match count {
                Some(count) => u64::from(count),
                None => number(SHARD_COUNT_ENV)?.ok_or(ShardError::NoCount)?,
            };
            return Shard::new(index, count, K8S_INDEX_ENV).map(Some);
        }
        if let (Some(id), Some(tasks)) = (number(SLURM_ID_ENV)?, number(SLURM_COUNT_ENV)?) {
            let min = number(SLURM_MIN_ENV)?.unwrap_or(0);
            let step = number(SLURM_STEP_ENV)?.unwrap_or(1).max(1);
            let from = format!("{SLURM_ID_ENV}={id} ({SLURM_MIN_ENV}={min})");
            let offset = id.checked_sub(min).ok_or(ShardError::OutOfRange {
                source_name: from.clone(),
                index: id,
                count: tasks,
            })?;
            if offset % step != 0 {
                return Err(ShardError::OffStep { id, min, step });
            }
            let count = count.map_or(tasks, u64::from);
            return Shard::new(offset / step, count, &from).map(Some);
        }
        match count {
            Some(count) => Err(ShardError::NoIndex { count }),
            None => Ok(None),
        }
    }

    /// The 0-based index.
    pub fn index(self) -> u32 {
        self.index
    }

    /// How many shards there are.
    pub fn count(self) -> u32 {
        self.count
    }

    /// Whether the variant `id` is this shard's.
    pub fn contains(self, id: &VariantId) -> bool {
        shard_of(id, self.count) == self.index
    }

    /// The folder of this shard's state inside `DIR/.stembatch/`: `shard-I-of-N`.
    pub fn dir_name(self) -> String {
        format!("shard-{}-of-{}", self.index, self.count)
    }

    /// Reads a folder name written by [`Shard::dir_name`].
    pub fn from_dir_name(name: &str) -> Option<Shard> {
        let (index, count) = name.strip_prefix("shard-")?.split_once("-of-")?;
        Shard::new(index.parse().ok()?, count.parse().ok()?, name).ok()
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The shard of `count` that holds `id`: the first 8 bytes of its sha256, modulo `count`.
/// A hash of the id rather than the id's own hex digits, so that the split stays even
/// whatever the ids look like; sha256, so that it never changes between versions.
pub fn shard_of(id: &VariantId, count: u32) -> u32 {
    let digest = Sha256::digest(id.as_str().as_bytes());
    let head = u64::from_be_bytes(digest[..8].try_into().expect("a sha256 has 32 bytes"));
    (head % u64::from(count.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    fn id(text: String) -> VariantId {
        serde_json::from_value(serde_json::Value::String(text)).unwrap()
    }

    fn shard(index: u64, count: u64) -> Shard {
        Shard::new(index, count, "test").unwrap()
    }

    #[test]
    fn parses_i_of_n_and_refuses_what_is_not_a_shard() {
        assert_eq!(Shard::parse("0/3"), Ok(shard(0, 3)));
        assert_eq!(Shard::parse(" 2 / 3 "), Ok(shard(2, 3)));
        let cases = [
            ("3/3", "--shard 3/3: shard 3 of 3 does not exist: shards are numbered 0 to N-1, with N at least 1"),
            ("0/0", "--shard 0/0: shard 0 of 0 does not exist: shards are numbered 0 to N-1, with N at least 1"),
            ("1", "--shard \"1\" is not I/N (hint: --shard 0/3 is the first of three shards)"),
            ("a/3", "--shard \"a/3\" is not I/N (hint: --shard 0/3 is the first of three shards)"),
            ("-1/3", "--shard \"-1/3\" is not I/N (hint: --shard 0/3 is the first of three shards)"),
            ("1/3/4", "--shard \"1/3/4\" is not I/N (hint: --shard 0/3 is the first of three shards)"),
        ];
        for (bad, message) in cases {
            assert_eq!(
                Shard::parse(bad).unwrap_err().to_string(),
                message,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_count_without_an_index_is_refused_rather_than_running_everything() {
        assert_eq!(
            Shard::resolve(None, Some(3), env(&[])),
            Err(ShardError::NoIndex { count: 3 })
        );
    }

    #[test]
    fn a_slurm_array_with_a_step_numbers_its_tasks_in_steps() {
        let task = |id: &'static str| {
            env(&[
                (SLURM_ID_ENV, id),
                (SLURM_COUNT_ENV, "4"),
                (SLURM_MIN_ENV, "1"),
                (SLURM_STEP_ENV, "2"),
            ])
        };
        // --array=1-7:2 runs tasks 1, 3, 5, 7: shards 0 to 3 of 4.
        let shards: Vec<_> = ["1", "3", "5", "7"]
            .into_iter()
            .map(|id| {
                Shard::resolve(None, None, task(id))
                    .unwrap()
                    .unwrap()
                    .index()
            })
            .collect();
        assert_eq!(shards, [0, 1, 2, 3]);
        assert_eq!(
            Shard::resolve(None, None, task("4")),
            Err(ShardError::OffStep {
                id: 4,
                min: 1,
                step: 2
            })
        );
    }

    #[test]
    fn the_flag_wins_then_kubernetes_then_slurm() {
        let k8s = [(K8S_INDEX_ENV, "1"), (SHARD_COUNT_ENV, "4")];
        let slurm = [(SLURM_ID_ENV, "2"), (SLURM_COUNT_ENV, "3")];
        let both = [k8s.as_slice(), slurm.as_slice()].concat();
        assert_eq!(
            Shard::resolve(Some(shard(0, 2)), None, env(&both)),
            Ok(Some(shard(0, 2)))
        );
        assert_eq!(
            Shard::resolve(None, None, env(&both)),
            Ok(Some(shard(1, 4)))
        );
        assert_eq!(
            Shard::resolve(None, None, env(&slurm)),
            Ok(Some(shard(2, 3)))
        );
        assert_eq!(Shard::resolve(None, None, env(&[])), Ok(None));
        // --shard-count overrides the environment's count.
        assert_eq!(
            Shard::resolve(None, Some(8), env(&k8s)),
            Ok(Some(shard(1, 8)))
        );
    }

    #[test]
    fn a_slurm_array_that_starts_at_one_counts_from_its_first_task() {
        let vars = [
            (SLURM_ID_ENV, "3"),
            (SLURM_COUNT_ENV, "3"),
            (SLURM_MIN_ENV, "1"),
        ];
        assert_eq!(
            Shard::resolve(None, None, env(&vars)),
            Ok(Some(shard(2, 3)))
        );
    }

    #[test]
    fn an_index_without_a_count_or_out_of_range_is_a_clear_error() {
        assert_eq!(
            Shard::resolve(None, None, env(&[(K8S_INDEX_ENV, "0")])),
            Err(ShardError::NoCount)
        );
        let err = Shard::resolve(None, Some(2), env(&[(K8S_INDEX_ENV, "2")])).unwrap_err();
        assert!(err.to_string().contains("JOB_COMPLETION_INDEX"), "{err}");
        let err = Shard::resolve(None, None, env(&[(K8S_INDEX_ENV, "x")])).unwrap_err();
        assert!(err.to_string().contains("\"x\""), "{err}");
    }

    #[test]
    fn every_variant_is_in_exactly_one_shard_and_the_split_is_even() {
        let ids: Vec<VariantId> = (0..3000)
            .map(|i| id(format!("{:016x}", i * 7919)))
            .collect();
        for count in [1u32, 2, 3, 7] {
            let shards: Vec<Shard> = (0..count).map(|i| shard(i.into(), count.into())).collect();
            let mut sizes = vec![0usize; count as usize];
            for id in &ids {
                let owners: Vec<_> = shards.iter().filter(|s| s.contains(id)).collect();
                assert_eq!(owners.len(), 1, "{id:?} in {count} shards");
                sizes[owners[0].index() as usize] += 1;
            }
            let even = ids.len() / count as usize;
            assert!(
                sizes.iter().all(|&s| s.abs_diff(even) < even / 5 + 20),
                "{count} shards: {sizes:?}"
            );
        }
    }

    #[test]
    fn the_split_never_changes_between_versions() {
        // Computed apart (Python's hashlib): a stembatch that splits differently would
        // hand last night's variants to other hosts (harmless to money, confusing to people).
        let ids = [
            "0000000000000000",
            "0123456789abcdef",
            "ffffffffffffffff",
            "a1b2c3d4e5f60718",
            "5d41402abc4b2a76",
            "9e107d9d372bb682",
        ];
        let of3: Vec<u32> = ids
            .iter()
            .map(|id_text| shard_of(&id(id_text.to_string()), 3))
            .collect();
        assert_eq!(of3, RECORDED_OF_3);
    }

    const RECORDED_OF_3: [u32; 6] = [0, 0, 1, 2, 2, 0];

    #[test]
    fn the_folder_name_reads_back() {
        let s = shard(2, 5);
        assert_eq!(s.dir_name(), "shard-2-of-5");
        assert_eq!(Shard::from_dir_name("shard-2-of-5"), Some(s));
        assert_eq!(Shard::from_dir_name("shard-5-of-5"), None);
        assert_eq!(Shard::from_dir_name("journal.jsonl"), None);
    }
}
