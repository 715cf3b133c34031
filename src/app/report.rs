//! `stembatch report DIR`: rewrites the listening page from what the folder holds, its
//! results.csv and the track files beside it. Sends nothing and needs no manifest.

use std::path::Path;

use crate::exit::{ExpectedError, SUCCESS};
use crate::folder::Folder;
use crate::report::csv::FILE_NAME;
use crate::report::html::{self, PageError};
use crate::report::shards;

/// Rewrites `DIR/report.html`; a folder without results.csv is a usage error (exit 2).
pub(super) async fn report(dir: &Path) -> anyhow::Result<u8> {
    let owned = dir.to_owned();
    let written = tokio::task::spawn_blocking(move || {
        // A sharded folder: results.csv first, from every shard's part.
        let mut merged = None;
        if let Some(count) = Folder::new(&owned, None).shard_count() {
            let path = owned.join(FILE_NAME);
            let done = shards::merge_into_folder(&owned, count)
                .map_err(|source| PageError::Write { path, source })?;
            println!(
                "results: {} ({} variants from the parts of {count} shards)",
                owned.join(FILE_NAME).display(),
                done.variants
            );
            // Held until the page is written from it.
            merged = Some(done);
        }
        let page = html::write_file(&owned);
        drop(merged);
        page
    })
    .await?;
    let summary = match written {
        Ok(summary) => summary,
        Err(err @ (PageError::NoResults { .. } | PageError::MissingColumn { .. })) => {
            return Err(ExpectedError::usage(err.to_string()).into())
        }
        Err(err) => return Err(err.into()),
    };
    println!(
        "report: {} ({} variants, {} tracks, {} KiB)",
        summary.path.display(),
        summary.variants,
        summary.tracks,
        summary.bytes.div_ceil(1024)
    );
    Ok(SUCCESS)
}
