//! One `results.csv` for a folder that shards share. Each shard writes its part
//! (`DIR/.stembatch/shard-I-of-N/results.csv`, its own variants only) as it goes; the
//! folder's `results.csv` is put together from the parts of the last shard count, at the
//! start and end of every shard's run and by `stembatch report DIR`.
//!
//! The merge itself ([`merge`]) is pure: a *base* list of variants in manifest order (the
//! manifest's own, from a run; the folder's last `results.csv`, from `report`) whose rows
//! each part replaces for the variants it holds; variants only a part knows come after.
//! Merges are serialised by a lock file, so the shard that finishes last always writes a
//! file with every other shard's final state.

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use super::csv::{write_atomically, FILE_NAME, HEADER};
use crate::journal::layout::shard_dirs;
use crate::journal::state_dir;

/// The lock file that serialises merges, inside the state folder.
pub const MERGE_LOCK_FILE: &str = "merge.lock";

/// One variant's rows of `results.csv`, each with every column of [`HEADER`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VariantRows {
    /// Its `variant_id`.
    pub id: String,
    /// Its rows: one per track, or one.
    pub rows: Vec<Vec<String>>,
}

/// The column of `variant_id` in [`HEADER`].
fn id_column() -> usize {
    HEADER
        .iter()
        .position(|&c| c == "variant_id")
        .expect("the header has variant_id")
}

/// The base's variants in its order, each with the rows of the part that holds it (the
/// base's own rows when no part does), then the variants of the parts that the base does
/// not list, in the parts' order.
pub fn merge(base: Vec<VariantRows>, parts: Vec<Vec<VariantRows>>) -> Vec<VariantRows> {
    let mut from_parts: HashMap<String, Vec<Vec<String>>> = HashMap::new();
    let mut extra_order = Vec::new();
    for variant in parts.into_iter().flatten() {
        if !from_parts.contains_key(&variant.id) {
            extra_order.push(variant.id.clone());
        }
        from_parts.insert(variant.id, variant.rows);
    }
    let in_base: HashSet<String> = base.iter().map(|v| v.id.clone()).collect();
    let mut merged: Vec<VariantRows> = base
        .into_iter()
        .map(|variant| match from_parts.remove(&variant.id) {
            Some(rows) => VariantRows {
                id: variant.id,
                rows,
            },
            None => variant,
        })
        .collect();
    merged.extend(
        extra_order
            .into_iter()
            .filter(|id| !in_base.contains(id))
            .filter_map(|id| {
                let rows = from_parts.remove(&id)?;
                Some(VariantRows { id, rows })
            }),
    );
    merged
}

/// Reads a `results.csv` (a part or the folder's) into its variants, in order. `None`
/// when there is no such file.
pub fn read_rows(path: &Path) -> std::io::Result<Option<Vec<VariantRows>>> {
    let invalid = |what: String| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {what}", path.display()),
        )
    };
    let mut reader = match csv::Reader::from_path(path) {
        Ok(reader) => reader,
        Err(err) => match err.kind() {
            csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            _ => return Err(invalid(err.to_string())),
        },
    };
    let headers = reader.headers().map_err(|e| invalid(e.to_string()))?;
    if headers.iter().ne(HEADER.iter().copied()) {
        return Err(invalid(
            "its header is not this stembatch's (written by another version?)".into(),
        ));
    }
    let id_col = id_column();
    let mut variants: Vec<VariantRows> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for row in reader.records() {
        let row = row.map_err(|e| invalid(e.to_string()))?;
        let id = row[id_col].to_owned();
        let fields = row.iter().map(str::to_owned).collect();
        match at.get(&id) {
            Some(&i) => variants[i].rows.push(fields),
            None => {
                at.insert(id.clone(), variants.len());
                variants.push(VariantRows {
                    id,
                    rows: vec![fields],
                });
            }
        }
    }
    Ok(Some(variants))
}

/// The parts of the shards of `count`, in shard order; shards that wrote none yet are
/// left out.
fn read_parts(out_dir: &Path, count: u32) -> std::io::Result<Vec<Vec<VariantRows>>> {
    let mut parts = Vec::new();
    for (shard, dir) in shard_dirs(out_dir)? {
        if shard.count() == count {
            if let Some(part) = read_rows(&dir.join(FILE_NAME))? {
                parts.push(part);
            }
        }
    }
    Ok(parts)
}

/// Held while the folder's `results.csv` is merged and the page is drawn from it: a merge
/// that read older parts never renames its file (or its page) over a newer one.
#[derive(Debug)]
pub struct MergeLock {
    _file: std::fs::File,
}

/// A merged `results.csv`: how many variants it lists, and the lock to hold until the
/// page is written from it.
#[derive(Debug)]
pub struct Merged {
    /// Variants written.
    pub variants: usize,
    /// Released on drop.
    pub lock: MergeLock,
}

/// Rewrites `DIR/results.csv` from the parts of the shards of `count` over `base` (the
/// folder's last `results.csv` when `None`), under the merge lock.
pub fn merge_into_folder(
    out_dir: &Path,
    count: u32,
    base: Option<&[VariantRows]>,
) -> std::io::Result<Merged> {
    let lock_path = state_dir(out_dir).join(MERGE_LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)?;
    lock.lock()?;
    let base = match base {
        Some(base) => base.to_vec(),
        None => read_rows(&out_dir.join(FILE_NAME))?.unwrap_or_default(),
    };
    let merged = merge(base, read_parts(out_dir, count)?);
    write_atomically(out_dir, |out| {
        let mut writer = csv::Writer::from_writer(out);
        writer.write_record(HEADER)?;
        for row in merged.iter().flat_map(|v| &v.rows) {
            writer.write_record(row)?;
        }
        writer.flush()?;
        Ok(())
    })?;
    Ok(Merged {
        variants: merged.len(),
        lock: MergeLock { _file: lock },
    })
}

/// What a shard's run needs to write its part and merge the folder's `results.csv`.
#[derive(Clone, Debug)]
pub struct ShardPart {
    /// The shard's state folder, where its part goes.
    pub dir: PathBuf,
    /// The shard count whose parts are merged.
    pub count: u32,
    /// Every variant of the manifest, in its order, with its rows as the journals said at
    /// the start: what the folder's file says of variants whose shard wrote no part yet.
    pub base: Vec<VariantRows>,
}

impl ShardPart {
    /// The part of `shard` in `out_dir`, over `base`.
    pub fn new(out_dir: &Path, shard: crate::shard::Shard, base: Vec<VariantRows>) -> Self {
        ShardPart {
            dir: crate::journal::layout::run_dir(out_dir, Some(shard)),
            count: shard.count(),
            base,
        }
    }

    /// Rewrites `DIR/results.csv` from every part of this shard count.
    pub fn merge_into(&self, out_dir: &Path) -> std::io::Result<Merged> {
        merge_into_folder(out_dir, self.count, Some(&self.base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variant(id: &str, rows: &[&str]) -> VariantRows {
        VariantRows {
            id: id.into(),
            rows: rows
                .iter()
                .map(|r| vec![id.to_owned(), r.to_string()])
                .collect(),
        }
    }

    fn ids_and_rows(merged: &[VariantRows]) -> Vec<(String, usize)> {
        merged
            .iter()
            .map(|v| (v.id.clone(), v.rows.len()))
            .collect()
    }

    #[test]
    fn parts_replace_the_base_rows_of_their_variants_and_keep_the_base_order() {
        let base = vec![
            variant("a", &["pending"]),
            variant("b", &["pending"]),
            variant("c", &["pending"]),
        ];
        let parts = vec![
            vec![variant("c", &["track 1", "track 2"])],
            vec![variant("a", &["failed"])],
        ];
        let merged = merge(base, parts);
        assert_eq!(
            ids_and_rows(&merged),
            [("a".into(), 1), ("b".into(), 1), ("c".into(), 2)]
        );
        assert_eq!(merged[0].rows[0][1], "failed");
        assert_eq!(merged[1].rows[0][1], "pending");
    }

    #[test]
    fn variants_only_a_part_knows_come_after_the_base_in_part_order() {
        let merged = merge(
            vec![variant("a", &["x"])],
            vec![
                vec![variant("z", &["1"]), variant("y", &["1"])],
                vec![variant("a", &["2"])],
            ],
        );
        let ids: Vec<&str> = merged.iter().map(|v| v.id.as_str()).collect();
        assert_eq!(ids, ["a", "z", "y"]);
    }

    #[test]
    fn a_part_written_by_another_header_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, "stem,variant\nx,y\n").unwrap();
        let err = read_rows(&path).unwrap_err().to_string();
        assert!(
            err.contains("results.csv") && err.contains("header"),
            "{err}"
        );
        assert!(read_rows(&dir.path().join("missing.csv"))
            .unwrap()
            .is_none());
    }
}
