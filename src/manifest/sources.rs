//! Where each stem's audio comes from: its `url`, its `path`, or every file its `glob`
//! matches, checked through [`LocalFiles`] so that validation stays free of I/O.
//!
//! A `path` that cannot be sent (empty, not audio, too large) is a manifest problem: the
//! user named that file. A file a glob matched is not: a nightly folder may hold a stray
//! file, so that file's stem carries the problem and the rest of the night still runs.
//! A glob's match whose name is not an audio file's (`readme.txt`) is no stem at all: it
//! is left out with a warning, and makes no row.

use std::path::{Component, Path, PathBuf};

use toml::Spanned;

use super::raw::RawStem;
use super::settings::check_http_url;
use super::validate::{check_name, Problems};
use crate::audio_format::{has_audio_extension, AUDIO_EXTENSIONS};
use crate::stems::{normalized, LocalFiles};
use crate::variant::{LocalStem, StemSource};

/// One stem a `[[stem]]` table makes: one for a url or a path, one per matching file for
/// a glob.
#[derive(Clone, Debug)]
pub(super) struct Source {
    pub name: String,
    pub source: StemSource,
    /// Why its file cannot be sent; only a glob's file can have one.
    pub problem: Option<String>,
}

/// Where the manifest's local files are, and how to reach them.
pub(crate) struct Files<'a> {
    /// The manifest's folder: relative paths and globs start there.
    pub base: &'a Path,
    /// The file system, as the manifest sees it.
    pub disk: &'a dyn LocalFiles,
}

/// The stem's named sources: its url, its file, or every file its glob matches. `None`
/// when a problem was recorded.
pub(super) fn sources(
    stem: &RawStem,
    field: &str,
    line: usize,
    files: &Files,
    problems: &mut Problems,
) -> Option<Vec<Source>> {
    let given: Vec<(&str, &Spanned<String>)> = [
        ("url", &stem.url),
        ("path", &stem.path),
        ("glob", &stem.glob),
    ]
    .into_iter()
    .filter_map(|(key, value)| value.as_ref().map(|v| (key, v)))
    .collect();
    let (key, value) = match given.as_slice() {
        [one] => *one,
        [] => {
            problems.push_at_line(line, field, "needs exactly one of url, path, glob");
            return None;
        }
        _ => {
            let keys: Vec<_> = given.iter().map(|(key, _)| *key).collect();
            problems.push_at_line(
                line,
                field,
                format!(
                    "needs exactly one of url, path, glob, not {}",
                    keys.join(" and ")
                ),
            );
            return None;
        }
    };
    let key_field = format!("{field}.{key}");
    let given_name = match &stem.name {
        Some(name) if key == "glob" => {
            problems.push(
                name.span(),
                &format!("{field}.name"),
                "a glob stem is named after each matching file; name cannot be set",
            );
            return None;
        }
        Some(name) => Some(check_name(name, &format!("{field}.name"), problems)?),
        None => None,
    };
    let paths = match key {
        "url" => {
            if !check_http_url(value, &key_field, false, problems) {
                return None;
            }
            let Some(name) = given_name.or_else(|| name_from_url(value.get_ref())) else {
                problems.push(
                    value.span(),
                    &format!("{field}.name"),
                    "cannot derive a name from the url (hint: set name)",
                );
                return None;
            };
            return Some(vec![Source {
                name,
                source: StemSource::Url(value.get_ref().clone()),
                problem: None,
            }]);
        }
        "path" => vec![files.base.join(value.get_ref())],
        _ => match files.disk.glob(files.base, value.get_ref()) {
            Ok(paths) if paths.is_empty() => {
                problems.push(
                    value.span(),
                    &key_field,
                    format!("{:?} matches no file", value.get_ref()),
                );
                return None;
            }
            Ok(paths) => paths,
            Err(message) => {
                problems.push(value.span(), &key_field, message);
                return None;
            }
        },
    };
    Some(local_sources(
        paths, given_name, key, value, field, files, problems,
    ))
}

/// A stem per local file, checked and hashed. A file that cannot be sent is a problem
/// of the manifest when `key` is `path`, and the problem of its stem when it is `glob`.
fn local_sources(
    paths: Vec<PathBuf>,
    given_name: Option<String>,
    key: &str,
    value: &Spanned<String>,
    field: &str,
    files: &Files,
    problems: &mut Problems,
) -> Vec<Source> {
    let key_field = format!("{field}.{key}");
    let before = problems.len();
    let mut sources = Vec::with_capacity(paths.len());
    let matched = paths.len();
    for path in paths {
        if key == "glob" && !has_audio_extension(&path) {
            problems.warn(
                value.span(),
                &key_field,
                format!(
                    "{} skipped: its name is not an audio file's (.{})",
                    normalized(&path).display(),
                    AUDIO_EXTENSIONS.join(", .")
                ),
            );
            continue;
        }
        let checked = match files.disk.check(&path) {
            Ok(checked) => checked,
            Err(message) => {
                problems.push(value.span(), &key_field, message);
                continue;
            }
        };
        let problem = match checked.format {
            Ok(_) => None,
            Err(message) if key == "glob" => Some(message),
            Err(message) => {
                problems.push(value.span(), &key_field, message);
                continue;
            }
        };
        let Some(name) = given_name.clone().or_else(|| name_from_file(&path)) else {
            problems.push(
                value.span(),
                &format!("{field}.name"),
                format!(
                    "cannot derive a name from {} (hint: set name)",
                    normalized(&path).display()
                ),
            );
            continue;
        };
        let relative = relative_to(files.base, &path);
        sources.push(Source {
            name,
            source: StemSource::Local(LocalStem {
                path,
                relative,
                sha256: checked.sha256,
                bytes: checked.bytes,
            }),
            problem,
        });
    }
    if key == "glob" && matched > 0 && sources.is_empty() && problems.len() == before {
        problems.push(
            value.span(),
            &key_field,
            format!("{:?} matches no audio file", value.get_ref()),
        );
    }
    sources
}

/// The file name without its extension, when it makes a usable stem name.
fn name_from_file(path: &Path) -> Option<String> {
    let stem = path.file_stem()?.to_str()?.trim();
    (!stem.is_empty() && !stem.starts_with('.')).then(|| stem.to_owned())
}

/// `path` relative to `base`, `/`-separated, when it lies inside it.
fn relative_to(base: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(base).ok()?;
    let mut parts = Vec::new();
    for component in relative.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?.to_owned()),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// The last segment of the URL's path without its extension, percent-decoded.
fn name_from_url(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let segment = parsed.path_segments()?.rfind(|s| !s.is_empty())?;
    let decoded = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()?;
    let stem = match decoded.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem,
        _ => &decoded,
    };
    let stem = stem.trim();
    (!stem.is_empty() && !stem.starts_with('.') && !stem.contains(['/', '\\']))
        .then(|| stem.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_url_path() {
        assert_eq!(
            name_from_url("https://x.com/s/ballad.mp3").as_deref(),
            Some("ballad")
        );
        assert_eq!(
            name_from_url("https://x.com/s/my%20song.wav?sig=1").as_deref(),
            Some("my song")
        );
        assert_eq!(name_from_url("https://x.com/"), None);
    }

    #[test]
    fn relative_paths_stay_inside_the_base() {
        let base = Path::new("/m");
        assert_eq!(
            relative_to(base, Path::new("/m/stems/a b.wav")).as_deref(),
            Some("stems/a b.wav")
        );
        assert_eq!(relative_to(base, Path::new("/elsewhere/a.wav")), None);
        assert_eq!(relative_to(base, Path::new("/m/../x.wav")), None);
        assert_eq!(
            name_from_file(Path::new("/m/lead vocal.flac")).as_deref(),
            Some("lead vocal")
        );
    }
}
