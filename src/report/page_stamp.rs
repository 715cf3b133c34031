//! The listening page kept from one run to the next. Writing it reads every variant of
//! `results.csv` (at 100,000 variants, about a second), so a run whose page would show
//! the same (the same `results.csv`, stems and folder name, the page's files as they were
//! written, as `page.stamp` in the state folder says) writes it again changing only the
//! time it says it was written ([`html::rewrite_written_time`]): SPEC.md's page "rewritten
//! at the end of every run", without the work.
//!
//! Everything is compared by content (`report::previous::Content`), so a copied or
//! restored folder keeps its page; anything that does not match, or a stamp that cannot
//! be read, writes the page whole.

use std::path::Path;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use super::choosing::Stems;
use super::html::{self, KnownWaves, PageError, PageSummary};
use super::previous::{temp_in, Content};
use crate::output_files::persist_durably;

/// What the listening page was written from, in the output folder's state folder.
pub const PAGE_STAMP_FILE: &str = "page.stamp";

/// How a run's page was written.
#[derive(Debug)]
pub enum PageWritten {
    /// Whole, from `results.csv`.
    Whole(PageSummary),
    /// As it was but for its time: nothing it shows had changed.
    TimeOnly,
}

/// Who writes a folder's page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageWriters {
    /// The folder's one run.
    One,
    /// Each shard, from the merged `results.csv`, maybe at once: a stamp could pair one
    /// shard's page with another's `results.csv`, so the page is written whole and not
    /// stamped.
    EachShard,
}

/// Writes `DIR/report.html` for the run's `stems`: whole from `results.csv` and the
/// waveforms `known`, or, when the stamp says the page there shows what it would, with
/// only its time changed.
pub fn write_page(
    dir: &Path,
    known: impl KnownWaves,
    stems: &Stems,
    writers: PageWriters,
) -> Result<PageWritten, PageError> {
    let state_dir = crate::journal::state_dir(dir);
    let was = (writers == PageWriters::One)
        .then(|| PageStamp::current(&state_dir, dir, stems))
        .flatten();
    if let Some(was) = was {
        if let Some(now) = html::rewrite_written_time(dir, stems, &was.written_at)? {
            // What it was written from is as checked: only the page itself is new.
            let page = Content::of_path(&dir.join(html::FILE_NAME));
            let restamped = page.and_then(|page| {
                let stamp = PageStamp {
                    page,
                    written_at: now,
                    ..was
                };
                stamp.record(&state_dir)
            });
            if let Err(err) = restamped {
                tracing::debug!(error = %err, "cannot stamp the listening page: the next run writes it whole");
            }
            return Ok(PageWritten::TimeOnly);
        }
    }
    PageStamp::forget(&state_dir);
    let page = html::write_file_with(dir, known, Some(stems))?;
    if writers == PageWriters::One {
        stamp(&state_dir, dir, stems, page.written_at.clone());
    }
    Ok(PageWritten::Whole(page))
}

/// Records that the page was just written; a stamp that cannot be written only costs
/// the next run a whole page.
fn stamp(state_dir: &Path, dir: &Path, stems: &Stems, written_at: String) {
    let recorded = PageStamp::now(dir, stems, written_at)
        .ok_or_else(|| std::io::Error::other("the page's files are not all there"))
        .and_then(|stamp| stamp.record(state_dir));
    if let Err(err) = recorded {
        tracing::debug!(error = %err, "cannot stamp the listening page: the next run writes it whole");
    }
}

/// What the listening page was written from.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PageStamp {
    version: String,
    /// Its title, the folder's name.
    title: String,
    /// The `results.csv` it was written from.
    results: Content,
    /// `report.html` as written.
    page: Content,
    /// Its chunk files as written (names and sizes, hashed), when it has some.
    data: Option<u64>,
    /// The stems it showed, hashed.
    stems: u64,
    /// The time it says it was written.
    written_at: String,
}

impl PageStamp {
    /// The stamp of the page now in `out_dir`, written at `written_at` from its
    /// `results.csv` and `stems`; `None` when a file of it is missing.
    fn now(out_dir: &Path, stems: &Stems, written_at: String) -> Option<Self> {
        let stems = serde_json::to_vec(stems).ok()?;
        Some(PageStamp {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            title: html::title_of(out_dir),
            results: Content::of_path(&out_dir.join(super::csv::FILE_NAME)).ok()?,
            page: Content::of_path(&out_dir.join(html::FILE_NAME)).ok()?,
            data: listing_hash(&out_dir.join(super::page_data::DATA_DIR)),
            stems: xxh3_64(&stems),
            written_at,
        })
    }

    /// The stamp in `state_dir`, when it says the page in `out_dir` is the one its
    /// `results.csv` and `stems` make.
    fn current(state_dir: &Path, out_dir: &Path, stems: &Stems) -> Option<PageStamp> {
        let raw = std::fs::read(state_dir.join(PAGE_STAMP_FILE)).ok()?;
        let recorded: PageStamp = serde_json::from_slice(&raw).ok()?;
        let now = Self::now(out_dir, stems, recorded.written_at.clone())?;
        (now == recorded).then_some(recorded)
    }

    /// Puts this stamp in place in `state_dir`.
    fn record(&self, state_dir: &Path) -> std::io::Result<()> {
        let mut temp = temp_in(state_dir, crate::output_files::PAGE_STAMP_TEMP)?;
        serde_json::to_writer(&mut temp, self).map_err(std::io::Error::other)?;
        persist_durably(temp, &state_dir.join(PAGE_STAMP_FILE))
    }

    /// Forgets the stamp: the page is being written.
    fn forget(state_dir: &Path) {
        let _ = std::fs::remove_file(state_dir.join(PAGE_STAMP_FILE));
    }
}

/// The names and sizes of the files below `dir`, hashed; `None` when it is not there.
fn listing_hash(dir: &Path) -> Option<u64> {
    let mut listing = Vec::new();
    let mut folders = vec![dir.to_owned()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).ok()?.flatten() {
            let meta = entry.metadata().ok()?;
            match meta.is_dir() {
                true => folders.push(entry.path()),
                // Relative: a copied folder holds the same page.
                false => {
                    listing.push((entry.path().strip_prefix(dir).ok()?.to_owned(), meta.len()))
                }
            }
        }
    }
    listing.sort();
    let mut hasher = Xxh3::new();
    for (path, len) in listing {
        hasher.update(path.as_os_str().as_encoded_bytes());
        hasher.update(&len.to_le_bytes());
    }
    Some(hasher.digest())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn is_current(out: &Path, stems: &Stems) -> bool {
        PageStamp::current(out, out, stems).is_some()
    }

    fn record(out: &Path, stems: &Stems) {
        let stamp = PageStamp::now(out, stems, "2000-01-01 00:00 UTC".into()).unwrap();
        stamp.record(out).unwrap();
    }

    /// The page's stamp holds while its files and what it was written from are the same,
    /// in a copy of the folder of the same name too (the page's title is that name).
    #[test]
    fn a_page_is_current_until_its_results_its_files_or_its_stems_change() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let chunks = out.join(super::super::page_data::DATA_DIR).join("gen");
        std::fs::create_dir_all(&chunks).unwrap();
        std::fs::write(out.join("results.csv"), b"h\n").unwrap();
        std::fs::write(out.join("report.html"), b"<html>").unwrap();
        std::fs::write(chunks.join("a.js"), b"[]").unwrap();
        let stems = Stems::new();
        assert!(!is_current(&out, &stems), "no stamp yet");
        record(&out, &stems);
        assert!(is_current(&out, &stems));
        let mut other = stems.clone();
        other.insert("vox".into(), Default::default());
        assert!(!is_current(&out, &other), "other stems");

        let copy = dir.path().join("copy");
        std::fs::create_dir_all(copy.join(chunks.strip_prefix(&out).unwrap())).unwrap();
        let files = [
            "results.csv",
            "report.html",
            PAGE_STAMP_FILE,
            "report-data/gen/a.js",
        ];
        for name in files {
            std::fs::copy(out.join(name), copy.join(name)).unwrap();
        }
        assert!(!is_current(&copy, &stems), "its title is its folder's");
        let same_name = dir.path().join("elsewhere").join("out");
        std::fs::create_dir(dir.path().join("elsewhere")).unwrap();
        std::fs::rename(&copy, &same_name).unwrap();
        assert!(is_current(&same_name, &stems), "a copy");

        for rewritten in ["results.csv", "report.html", "report-data/gen/a.js"] {
            record(&out, &stems);
            std::fs::remove_file(out.join(rewritten)).unwrap();
            assert!(!is_current(&out, &stems), "{rewritten} gone");
            std::fs::write(out.join(rewritten), b"x").unwrap();
            assert!(!is_current(&out, &stems), "{rewritten} rewritten");
        }
    }

    /// A run whose page would show the same writes it again with only its time changed;
    /// a changed results.csv writes it whole, as does a sharded folder's run, which
    /// leaves no stamp.
    #[test]
    fn an_unchanged_page_is_written_again_with_its_time_only() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        std::fs::create_dir_all(crate::journal::state_dir(out)).unwrap();
        let header = super::super::csv::HEADER.join(",");
        let row = "s,a,1,id1,failed,t1,,,s a,lofi,,V5,,,,,,,,,,,,1,refused,,,,";
        std::fs::write(out.join("results.csv"), format!("{header}\n{row}\n")).unwrap();
        let stems = Stems::new();
        let waves = HashMap::<String, String>::new;
        let first = write_page(out, waves(), &stems, PageWriters::One).unwrap();
        assert!(matches!(first, PageWritten::Whole(_)), "{first:?}");
        // A sharded folder's run writes it whole and takes its stamp away.
        let sharded = write_page(out, waves(), &stems, PageWriters::EachShard).unwrap();
        assert!(matches!(sharded, PageWritten::Whole(_)), "{sharded:?}");
        let PageWritten::Whole(summary) =
            write_page(out, waves(), &stems, PageWriters::One).unwrap()
        else {
            panic!("a page without a stamp is written whole");
        };
        let page = std::fs::read_to_string(out.join("report.html")).unwrap();
        let second = write_page(out, waves(), &stems, PageWriters::One).unwrap();
        assert!(matches!(second, PageWritten::TimeOnly), "{second:?}");
        let state = crate::journal::state_dir(out);
        let now = PageStamp::current(&state, out, &stems)
            .expect("stamped again")
            .written_at;
        let said = |at: &str| format!("· written {at}</p>");
        assert!(page.contains(&said(&summary.written_at)));
        assert_eq!(
            std::fs::read_to_string(out.join("report.html")).unwrap(),
            page.replace(&said(&summary.written_at), &said(&now))
        );

        let more = format!("{header}\n{row}\n{}\n", row.replace("id1", "id2"));
        std::fs::write(out.join("results.csv"), more).unwrap();
        let third = write_page(out, waves(), &stems, PageWriters::One).unwrap();
        assert!(matches!(third, PageWritten::Whole(_)), "{third:?}");
        assert!(std::fs::read_to_string(out.join("report.html"))
            .unwrap()
            .contains("id2"));
    }

    /// A page that does not say its time as the stamp recorded it is not patched.
    #[test]
    fn a_page_without_its_time_is_not_rewritten_in_place() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("report.html"), b"<p>written elsewhere</p>").unwrap();
        let rewritten =
            html::rewrite_written_time(dir.path(), &Stems::new(), "2000-01-01 00:00 UTC");
        assert!(matches!(rewritten, Ok(None)), "{rewritten:?}");
    }
}
