//! `stembatch report DIR`: rewrites the listening page from what the folder holds, its
//! results.csv and the track files beside it. Sends nothing and needs no manifest.

use std::path::Path;

use crate::exit::{ExpectedError, SUCCESS};
use crate::report::html::{self, PageError};

/// Rewrites `DIR/report.html`; a folder without results.csv is a usage error (exit 2).
pub(super) async fn report(dir: &Path) -> anyhow::Result<u8> {
    let owned = dir.to_owned();
    let written = tokio::task::spawn_blocking(move || html::write_file(&owned)).await?;
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
