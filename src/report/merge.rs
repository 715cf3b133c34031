//! `stembatch report DIR`'s `results.csv` of a sharded folder, put together from the
//! folder's last `results.csv` (the base, in manifest order) and the shards' parts, with
//! no manifest: the files are all there is. Rows go from the files to the output as they
//! are read, so memory holds one variant's rows at a time and, for each variant of a
//! part, where its rows are (its id, the part, a byte range: about 30 bytes), never the
//! rows themselves.
//!
//! A part's variant replaces the base's, in the base's order; a variant no part holds
//! keeps the base's rows, and one the base does not list (the manifest dropped it) is
//! left out, unless there is no base (it was deleted): then every part's variants come in
//! the parts' order. When two parts hold a variant, the later one's rows win. Each file
//! holds a variant's rows one after the other, as every writer of `results.csv` does.
//!
//! It only reads: where the merged rows go is the caller's.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::csv::HEADER;
use crate::variant::VariantId;

/// The column of `variant_id` in [`HEADER`].
fn id_column() -> usize {
    HEADER
        .iter()
        .position(|&c| c == "variant_id")
        .expect("the header has variant_id")
}

/// Where one variant's rows are: bytes `start..start + len` of a file.
#[derive(Clone, Copy, Debug)]
struct Place {
    /// Which part (its position in the merge's list).
    part: u32,
    len: u32,
    start: u64,
}

/// A `results.csv` open for the merge. The file stays open until the merge ends, so a
/// part renamed over meanwhile (its shard still runs) is read as it was when opened.
struct RowsFile {
    path: PathBuf,
    file: File,
}

impl RowsFile {
    /// Opens `path`; `None` when there is no such file.
    fn open(path: &Path) -> std::io::Result<Option<Self>> {
        match File::open(path) {
            Ok(file) => Ok(Some(RowsFile {
                path: path.to_owned(),
                file,
            })),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(std::io::Error::new(
                err.kind(),
                format!("{}: {err}", path.display()),
            )),
        }
    }

    /// An error in the file's content, named by its path.
    fn invalid(&self, what: impl std::fmt::Display) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {what}", self.path.display()),
        )
    }

    /// Reads the file from its start, its header checked, and calls `each` with every
    /// variant's id and the bytes of its rows, in the file's order (`part` goes into
    /// each place). A variant's rows are the rows next to each other with its id, as
    /// stembatch writes them: a file edited by hand to split them gives each group apart.
    fn each_variant(
        &self,
        part: u32,
        mut each: impl FnMut(&str, Place) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let mut file = &self.file;
        file.seek(SeekFrom::Start(0))?;
        let mut reader = csv::Reader::from_reader(file);
        let headers = reader.headers().map_err(|e| self.invalid(e))?;
        if headers.iter().ne(HEADER.iter().copied()) {
            return Err(
                self.invalid("its header is not this stembatch's (written by another version?)")
            );
        }
        let id_col = id_column();
        let mut row = csv::StringRecord::new();
        // The variant being read: its id and where its first row starts.
        let mut current: Option<(String, u64)> = None;
        loop {
            let at = reader.position().byte();
            let more = reader.read_record(&mut row).map_err(|e| self.invalid(e))?;
            let id = row.get(id_col).unwrap_or_default();
            if more && current.as_ref().is_some_and(|(current, _)| current == id) {
                continue;
            }
            if let Some((current, start)) = current.take() {
                let len = u32::try_from(at - start)
                    .map_err(|_| self.invalid(format!("variant {current} has 4 GiB of rows")))?;
                each(&current, Place { part, len, start })?;
            }
            if !more {
                return Ok(());
            }
            current = Some((id.to_owned(), at));
        }
    }

    /// Writes the rows at `place` to `out`, as read back and written anew (the output
    /// is what the CSV writer makes of them, whatever the file's line ends).
    fn copy(
        &self,
        place: Place,
        buffer: &mut Vec<u8>,
        out: &mut csv::Writer<&mut dyn Write>,
    ) -> std::io::Result<()> {
        buffer.resize(place.len as usize, 0);
        self.file.read_exact_at(buffer, place.start)?;
        let mut rows = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(buffer.as_slice());
        let mut row = csv::ByteRecord::new();
        while rows
            .read_byte_record(&mut row)
            .map_err(|e| self.invalid(e))?
        {
            out.write_byte_record(&row)?;
        }
        Ok(())
    }
}

/// Where each variant of the parts has its rows, by id: the later part's when two hold
/// one. A computed id is its 64 bits; any other text (a hand-edited file) is kept whole.
#[derive(Default)]
struct PartsIndex {
    by_bits: HashMap<u64, Place>,
    by_text: HashMap<String, Place>,
}

impl PartsIndex {
    fn insert(&mut self, id: &str, place: Place) {
        match VariantId::bits_of(id) {
            Some(bits) => self.by_bits.insert(bits, place),
            None => self.by_text.insert(id.to_owned(), place),
        };
    }

    /// Where `id`'s rows are, taken out: each variant is written once.
    fn take(&mut self, id: &str) -> Option<Place> {
        match VariantId::bits_of(id) {
            Some(bits) => self.by_bits.remove(&bits),
            None => self.by_text.remove(id),
        }
    }
}

/// Writes the header and the merge of `base` (a `results.csv`, which may not exist) and
/// `parts` (those that do not exist are left out) to `out`; how many variants it wrote.
pub fn merge(base: &Path, parts: &[PathBuf], out: &mut dyn Write) -> std::io::Result<usize> {
    let base = RowsFile::open(base)?;
    let mut opened = Vec::with_capacity(parts.len());
    for path in parts {
        opened.extend(RowsFile::open(path)?);
    }
    let parts = opened;
    let mut index = PartsIndex::default();
    for (part, file) in parts.iter().enumerate() {
        file.each_variant(part as u32, |id, place| {
            index.insert(id, place);
            Ok(())
        })?;
    }
    let mut writer = csv::Writer::from_writer(out);
    writer.write_record(HEADER)?;
    let mut buffer = Vec::new();
    let mut written = 0;
    if let Some(base) = &base {
        base.each_variant(0, |id, place| {
            match index.take(id) {
                Some(from_part) => {
                    parts[from_part.part as usize].copy(from_part, &mut buffer, &mut writer)?
                }
                None => base.copy(place, &mut buffer, &mut writer)?,
            }
            written += 1;
            Ok(())
        })?;
    }
    // No base to order by: every part's variants, in the parts' order.
    if written == 0 {
        for part in &parts {
            part.each_variant(0, |id, _| {
                if let Some(place) = index.take(id) {
                    parts[place.part as usize].copy(place, &mut buffer, &mut writer)?;
                    written += 1;
                }
                Ok(())
            })?;
        }
    }
    writer.flush()?;
    Ok(written)
}

/// The merge as it was before it streamed: every file read whole into memory. The tests'
/// reference for [`merge`], and their reader of a `results.csv`.
#[cfg(test)]
pub(crate) mod in_memory {
    use std::collections::{HashMap, HashSet};
    use std::path::Path;

    use super::{id_column, HEADER};

    /// One variant's rows of `results.csv`, each with every column of [`HEADER`].
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct VariantRows {
        /// Its `variant_id`.
        pub id: String,
        /// Its rows: one per track, or one.
        pub rows: Vec<Vec<String>>,
    }

    /// The base's variants in its order, each with the rows of the part that holds it;
    /// with no base, the parts' variants in the parts' order.
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
        if !in_base.is_empty() {
            return merged;
        }
        merged.extend(extra_order.into_iter().filter_map(|id| {
            let rows = from_parts.remove(&id)?;
            Some(VariantRows { id, rows })
        }));
        merged
    }

    /// Reads a `results.csv` into its variants, in order. `None` when there is no such
    /// file.
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
                csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(None)
                }
                _ => return Err(invalid(err.to_string())),
            },
        };
        let headers = reader.headers().map_err(|e| invalid(e.to_string()))?;
        if headers.iter().ne(HEADER.iter().copied()) {
            return Err(invalid("its header is not this stembatch's".into()));
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

    /// Writes `variants` as a `results.csv`.
    pub fn write(path: &Path, variants: &[VariantRows]) {
        let mut writer = csv::Writer::from_path(path).unwrap();
        writer.write_record(HEADER).unwrap();
        for row in variants.iter().flat_map(|v| &v.rows) {
            writer.write_record(row).unwrap();
        }
        writer.flush().unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::in_memory::{self, VariantRows};
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// A variant of `rows` rows, each with every column; `tag` marks which file it is in.
    fn variant(id: &str, tag: &str, rows: usize) -> VariantRows {
        VariantRows {
            id: id.into(),
            rows: (0..rows)
                .map(|n| {
                    HEADER
                        .iter()
                        .map(|&column| match column {
                            "variant_id" => id.to_owned(),
                            "status" => tag.to_owned(),
                            "track" => n.to_string(),
                            "error" if n % 3 == 2 => "a \"quoted\", error\nline".to_owned(),
                            _ => String::new(),
                        })
                        .collect()
                })
                .collect(),
        }
    }

    /// The streamed merge of files holding `base` and `parts` (`None`: no such file),
    /// read back; and the text it wrote.
    fn streamed(
        base: Option<&[VariantRows]>,
        parts: &[Option<Vec<VariantRows>>],
    ) -> (Vec<VariantRows>, usize, String) {
        let dir = tempfile::tempdir().unwrap();
        let base_path = dir.path().join("results.csv");
        if let Some(base) = base {
            in_memory::write(&base_path, base);
        }
        let part_paths: Vec<PathBuf> = parts
            .iter()
            .enumerate()
            .map(|(i, part)| {
                let path = dir.path().join(format!("part-{i}.csv"));
                if let Some(part) = part {
                    in_memory::write(&path, part);
                }
                path
            })
            .collect();
        let mut out = Vec::new();
        let written = merge(&base_path, &part_paths, &mut out).unwrap();
        let merged_path = dir.path().join("merged.csv");
        std::fs::write(&merged_path, &out).unwrap();
        let merged = in_memory::read_rows(&merged_path).unwrap().unwrap();
        (merged, written, String::from_utf8(out).unwrap())
    }

    fn ids(merged: &[VariantRows]) -> Vec<&str> {
        merged.iter().map(|v| v.id.as_str()).collect()
    }

    #[test]
    fn parts_replace_the_base_rows_of_their_variants_and_keep_the_base_order() {
        let base = [variant("a", "base", 1), variant("b", "base", 1)];
        let base = [base.as_slice(), &[variant("c", "base", 1)]].concat();
        let parts = [
            Some(vec![variant("c", "part", 2)]),
            None,
            Some(vec![variant("a", "failed", 1)]),
        ];
        let (merged, written, _) = streamed(Some(&base), &parts);
        assert_eq!(ids(&merged), ["a", "b", "c"]);
        assert_eq!(written, 3);
        assert_eq!(merged[0], variant("a", "failed", 1));
        assert_eq!(merged[1], variant("b", "base", 1));
        assert_eq!(merged[2], variant("c", "part", 2));
    }

    #[test]
    fn variants_the_base_does_not_list_are_left_out_unless_there_is_no_base() {
        let parts = [
            Some(vec![variant("z", "1", 1), variant("y", "1", 1)]),
            Some(vec![variant("a", "2", 1)]),
        ];
        // A part from a night whose manifest had z and y: the manifest has dropped them.
        let (merged, ..) = streamed(Some(&[variant("a", "x", 1)]), &parts);
        assert_eq!(ids(&merged), ["a"]);
        // No results.csv to order by (none, or only its header): every part's variants,
        // in the parts' order.
        for base in [None, Some(&[][..])] {
            let (merged, written, _) = streamed(base, &parts);
            assert_eq!(ids(&merged), ["z", "y", "a"]);
            assert_eq!(written, 3);
        }
    }

    #[test]
    fn a_part_written_by_another_header_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("shard-0-of-2").join("results.csv");
        std::fs::create_dir_all(part.parent().unwrap()).unwrap();
        std::fs::write(&part, "stem,variant\nx,y\n").unwrap();
        let base = dir.path().join("results.csv");
        in_memory::write(&base, &[variant("x", "base", 1)]);
        let err = merge(&base, &[part], &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("shard-0-of-2/results.csv") && err.contains("header"),
            "{err}"
        );
    }

    /// A file whose last row has no line end is merged whole, its rows not run together.
    #[test]
    fn a_last_row_without_a_line_end_stays_a_row() {
        let dir = tempfile::tempdir().unwrap();
        let (base, part) = (dir.path().join("base.csv"), dir.path().join("part.csv"));
        in_memory::write(&base, &[variant("a", "base", 1), variant("b", "base", 1)]);
        in_memory::write(&part, &[variant("a", "part", 2)]);
        let text = std::fs::read_to_string(&part).unwrap();
        std::fs::write(&part, text.trim_end()).unwrap();
        let mut out = Vec::new();
        assert_eq!(merge(&base, &[part], &mut out).unwrap(), 2);
        let merged = dir.path().join("merged.csv");
        std::fs::write(&merged, out).unwrap();
        let merged = in_memory::read_rows(&merged).unwrap().unwrap();
        assert_eq!(merged, [variant("a", "part", 2), variant("b", "base", 1)]);
    }

    /// Random bases and parts (parts that follow the base's order or not, hold variants
    /// it does not list, hold the same variant as another part, or are missing): the
    /// streamed merge writes, byte for byte, what the in-memory merge wrote.
    #[test]
    fn the_streamed_merge_writes_what_the_in_memory_merge_did() {
        let mut rng = StdRng::seed_from_u64(163);
        for case in 0..150 {
            let pool: Vec<String> = (0..rng.random_range(0..40))
                .map(|i| match rng.random_bool(0.8) {
                    true => VariantId::from_bits(rng.random::<u64>() ^ i).to_string(),
                    false => format!("hand-written {i}"),
                })
                .collect();
            let pick = |rng: &mut StdRng, tag: &str, share: f64| -> Vec<VariantRows> {
                let mut chosen = Vec::new();
                for id in pool
                    .iter()
                    .filter(|_| rng.random_bool(share))
                    .collect::<Vec<_>>()
                {
                    chosen.push(variant(id, tag, rng.random_range(1..4)));
                }
                if rng.random_bool(0.3) {
                    let len = chosen.len();
                    for i in 0..len {
                        chosen.swap(i, rng.random_range(0..len));
                    }
                }
                chosen
            };
            let base = match rng.random_range(0..5) {
                0 => None,
                1 => Some(Vec::new()),
                _ => Some(pick(&mut rng, "base", 0.8)),
            };
            let parts: Vec<Option<Vec<VariantRows>>> = (0..rng.random_range(0..4))
                .map(|n| {
                    rng.random_bool(0.9)
                        .then(|| pick(&mut rng, &format!("part {n}"), 0.4))
                })
                .collect();
            let expected = in_memory::merge(
                base.clone().unwrap_or_default(),
                parts.iter().flatten().cloned().collect(),
            );
            let mut want = Vec::new();
            {
                let mut writer = csv::Writer::from_writer(&mut want);
                writer.write_record(HEADER).unwrap();
                for row in expected.iter().flat_map(|v| &v.rows) {
                    writer.write_record(row).unwrap();
                }
            }
            let (_, written, text) = streamed(base.as_deref(), &parts);
            let shape = |file: &Option<Vec<VariantRows>>| {
                file.as_ref()
                    .map(|variants| ids(variants).join(" "))
                    .unwrap_or("(no file)".into())
            };
            let parts_shape: Vec<String> = parts.iter().map(shape).collect();
            assert_eq!(
                text,
                String::from_utf8(want).unwrap(),
                "case {case}: base {}, parts {parts_shape:?}",
                shape(&base)
            );
            assert_eq!(written, expected.len(), "case {case}");
        }
    }
}
