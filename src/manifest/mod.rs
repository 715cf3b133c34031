//! The manifest: TOML in, a validated [`Manifest`] and its [`Variants`] out (each
//! [`Variant`](crate::variant::Variant) built by position when asked for).
//!
//! Three pure stages, each a function: `raw` mirrors the TOML, `validate` turns it into
//! typed settings and parameter layers while collecting *every* problem with its line and
//! key, `expand` crosses stems, variants, matrices and takes into the variants, checked
//! once and then built on demand (a million are never held at once). Only
//! [`load`] touches the file system.

mod expand;
mod limits;
mod raw;
mod settings;
mod sources;
mod toml_error;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::stems::{DiskFiles, LocalFiles};

pub use expand::Variants;
pub use limits::{redact, LimitSettings, RedisUrl, RedisUrlSource, ShardPosition, REDIS_URL_ENV};
pub use settings::{
    url_expiry_margin, ApiSettings, Rate, RunSettings, S3Settings, UploadMode, UploadSettings,
    DEFAULT_URL_EXPIRY,
};

/// A validated manifest with its variants in manifest order.
#[derive(Debug)]
pub struct Manifest {
    /// The manifest file as given.
    pub path: PathBuf,
    /// `[api]`
    pub api: ApiSettings,
    /// `[run]`
    pub run: RunSettings,
    /// `[upload]`
    pub upload: UploadSettings,
    /// `[limits]`
    pub limits: LimitSettings,
    /// Every (stem, variant, take), in manifest order, each built when asked for.
    pub variants: Variants,
    /// What was left out without making the manifest invalid (a glob's `readme.txt`), by
    /// line: each command that loads the manifest says each once.
    pub warnings: Vec<Problem>,
}

impl Manifest {
    /// The folder that relative paths of the manifest are relative to.
    pub fn dir(&self) -> &Path {
        folder_of(&self.path)
    }

    /// Each warning on one line, naming the manifest, the line and the key.
    pub fn warning_lines(&self) -> impl Iterator<Item = String> + '_ {
        let path = crate::stems::normalized(&self.path);
        self.warnings
            .iter()
            .map(move |w| format!("{}:{w}", path.display()))
    }
}

/// The folder of a manifest file: `.` for a bare file name.
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// One thing wrong with a manifest, located.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// 1-based line in the manifest.
    pub line: usize,
    /// The TOML key path, e.g. `stem[2].variant[1].style_weight`.
    pub field: String,
    /// What is wrong, as a lowercase fragment.
    pub message: String,
}

/// Why a manifest could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read manifest {}: {cause}", crate::stems::normalized(path).display())]
    Read {
        /// The manifest path.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// The file was read but is not a valid manifest.
    #[error("{}", render_problems(path, problems))]
    Invalid {
        /// The manifest path.
        path: PathBuf,
        /// Every problem found, by line.
        problems: Vec<Problem>,
    },
}

/// How many problems are printed before the rest are counted.
const PROBLEMS_SHOWN: usize = 50;

fn render_problems(path: &Path, problems: &[Problem]) -> String {
    let path = crate::stems::normalized(path);
    let mut out = format!(
        "manifest {} has {} problem{}:",
        path.display(),
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for problem in problems.iter().take(PROBLEMS_SHOWN) {
        out.push_str(&format!("\n  {}:{problem}", path.display()));
    }
    if problems.len() > PROBLEMS_SHOWN {
        out.push_str(&format!(
            "\n  ... and {} more",
            problems.len() - PROBLEMS_SHOWN
        ));
    }
    out
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.line, self.field, self.message)
    }
}

/// Reads, validates and expands the manifest at `path`.
pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|cause| ManifestError::Read {
        path: path.to_owned(),
        cause,
    })?;
    parse(path, &text)
}

/// Validates and expands manifest text; `path` names it in errors and anchors relative
/// paths, which are looked up on disk.
pub fn parse(path: &Path, text: &str) -> Result<Manifest, ManifestError> {
    parse_with(path, text, &DiskFiles)
}

/// [`parse`], with local stem files looked up through `files`.
pub fn parse_with(
    path: &Path,
    text: &str,
    files: &dyn LocalFiles,
) -> Result<Manifest, ManifestError> {
    let invalid = |problems| ManifestError::Invalid {
        path: path.to_owned(),
        problems,
    };
    let lines = validate::LineIndex::new(text);
    let raw: raw::RawManifest = toml::from_str(text)
        .map_err(|err| invalid(vec![toml_error::problem(text, &lines, &err)]))?;
    let mut problems = validate::Problems::new(&lines);
    let files = sources::Files {
        base: folder_of(path),
        disk: files,
    };
    let validated = validate::validate(&raw, &files, &mut problems);
    expand::check(&validated.stems, &mut problems);
    let warnings = problems.take_warnings();
    let problems = problems.into_sorted();
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    Ok(Manifest {
        path: path.to_owned(),
        api: validated.api,
        run: validated.run,
        upload: validated.upload,
        limits: validated.limits,
        variants: Variants::new(validated.stems),
        warnings,
    })
}

#[cfg(test)]
mod tests;
