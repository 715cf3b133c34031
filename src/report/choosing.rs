//! What the listening page needs to help choose between the variants of a stem, beyond
//! `results.csv`: what the run's manifest says of each stem ([`StemInfo`]: its local
//! file, so that the page plays the vocal itself, and its length, the scale of its
//! waveforms), kept beside the journal (`.stembatch/page-stems.json`) so that
//! `stembatch report` draws the same page without the manifest; and which parameters
//! differ between a stem's variants ([`differences`], pure).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::html::{relative_url, VariantView};

/// What the page knows of a stem beyond results.csv, from the run's manifest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StemInfo {
    /// Its local file as a relative URL from the folder (the vocal player's `src`);
    /// `None` for a stem the provider fetches from a URL.
    pub vocal: Option<String>,
    /// Its length in seconds, when known.
    pub seconds: Option<f64>,
}

/// [`StemInfo`] by stem name.
pub type Stems = BTreeMap<String, StemInfo>;

/// Where the run keeps the page's [`Stems`] for `stembatch report`.
pub const STEMS_FILE: &str = "page-stems.json";

/// The [`StemInfo`] of every stem in `run_stems`, for a page in `dir`: a local stem's
/// path relative to `dir` and its length (read from the file's header, not decoded).
pub fn stem_infos(run_stems: &[std::sync::Arc<crate::variant::Stem>], dir: &Path) -> Stems {
    let mut stems = Stems::new();
    for stem in run_stems {
        if stems.contains_key(&stem.name) {
            continue;
        }
        let info = match &stem.source {
            crate::variant::StemSource::Local(local) => StemInfo {
                vocal: relative_to(dir, &local.path).map(|r| relative_url(&r)),
                seconds: crate::qc::header_seconds(&local.path),
            },
            crate::variant::StemSource::Url(_) => StemInfo::default(),
        };
        stems.insert(stem.name.clone(), info);
    }
    stems
}

/// `target` as a `/`-separated path relative to the folder `dir` (both made absolute
/// first); `None` when there is no such path (another drive).
pub fn relative_to(dir: &Path, target: &Path) -> Option<String> {
    let absolute = |p: &Path| {
        std::fs::canonicalize(p)
            .ok()
            .or_else(|| std::path::absolute(p).ok())
    };
    let (dir, target) = (absolute(dir)?, absolute(target)?);
    let from: Vec<_> = dir.components().collect();
    let to: Vec<_> = target.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    if common == 0 {
        return None;
    }
    let mut parts: Vec<String> = vec!["..".to_owned(); from.len() - common];
    parts.extend(
        to[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    Some(parts.join("/"))
}

/// The stems the run saved for the folder's page; none when it saved none.
pub(super) fn saved_stems(dir: &Path) -> Stems {
    let path = crate::journal::state_dir(dir).join(STEMS_FILE);
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// Saves `stems` for `stembatch report`, atomically; a failure only costs the vocal
/// players of a page written later without the manifest.
pub(super) fn save_stems(dir: &Path, stems: &Stems) {
    let state = crate::journal::state_dir(dir);
    let saved = tempfile::Builder::new()
        .prefix(crate::output_files::PAGE_STEMS_TEMP.0)
        .suffix(crate::output_files::PAGE_STEMS_TEMP.1)
        .tempfile_in(&state)
        .and_then(|mut temp| {
            temp.write_all(&serde_json::to_vec(stems).unwrap_or_default())?;
            temp.as_file().sync_all()?;
            temp.persist(state.join(STEMS_FILE)).map_err(|e| e.error)?;
            Ok(())
        });
    if let Err(err) = saved {
        tracing::debug!(error = %err, "cannot save the page's stems");
    }
}

/// The parameters the page compares, as the page's script names them, with their labels.
pub const PARAMETERS: [(&str, &str); 7] = [
    ("tags", "tags"),
    ("negative_tags", "not"),
    ("model", "model"),
    ("gender", "voice"),
    ("style_weight", "style"),
    ("weirdness", "weird"),
    ("audio_weight", "audio"),
];

/// How the variants of one stem compare: the parameters that differ between them (by
/// the script's names), and the value of each of the others, shown once.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Differences {
    /// Parameters with more than one value among the stem's variants.
    pub differ: Vec<&'static str>,
    /// The others: label and the one value ("–" when unset).
    pub shared: Vec<(&'static str, String)>,
}

/// One parameter of a variant as the page shows it.
fn parameter(variant: &VariantView, key: &str) -> String {
    let weight = |w: Option<f64>| w.map_or("–".to_owned(), |w| w.to_string());
    match key {
        "tags" => variant.tags.clone(),
        "negative_tags" => variant.negative_tags.clone(),
        "model" => variant.model.clone(),
        "gender" => variant.gender.clone(),
        "style_weight" => weight(variant.style_weight),
        "weirdness" => weight(variant.weirdness),
        "audio_weight" => weight(variant.audio_weight),
        _ => String::new(),
    }
}

/// What differs between `variants` (those of one stem).
pub fn differences<'v>(variants: impl IntoIterator<Item = &'v VariantView>) -> Differences {
    let mut tally = DifferenceTally::default();
    for variant in variants {
        tally.add(variant);
    }
    tally.finish()
}

/// What has been seen of one parameter so far: to tell "one value" from "more than one",
/// the first value is enough.
#[derive(Clone, Debug, Default)]
enum Seen {
    #[default]
    Nothing,
    One(String),
    Several,
}

/// [`differences`] counted as the variants of a stem stream past, in memory bounded by
/// one value per parameter: the page is written without holding a stem's variants.
#[derive(Clone, Debug, Default)]
pub struct DifferenceTally {
    seen: [Seen; PARAMETERS.len()],
}

impl DifferenceTally {
    /// Counts one variant of the stem.
    pub fn add(&mut self, variant: &VariantView) {
        for (seen, (key, _)) in self.seen.iter_mut().zip(PARAMETERS) {
            let value = parameter(variant, key);
            *seen = match std::mem::take(seen) {
                Seen::Nothing => Seen::One(value),
                Seen::One(first) if first == value => Seen::One(first),
                Seen::One(_) | Seen::Several => Seen::Several,
            };
        }
    }

    /// What differs between the variants counted.
    pub fn finish(self) -> Differences {
        let mut found = Differences::default();
        for (seen, (key, label)) in self.seen.into_iter().zip(PARAMETERS) {
            match seen {
                Seen::Nothing => {}
                Seen::One(value) => found.shared.push((
                    label,
                    if value.is_empty() {
                        "–".into()
                    } else {
                        value
                    },
                )),
                Seen::Several => found.differ.push(key),
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_differs_within_a_stem_is_named_and_the_rest_shown_once() {
        let base = VariantView {
            tags: "lofi, chill".into(),
            model: "V5".into(),
            style_weight: Some(0.4),
            audio_weight: None,
            ..VariantView::default()
        };
        let other = VariantView {
            tags: "jazz".into(),
            style_weight: Some(0.8),
            ..base.clone()
        };
        // (the stem's variants, what differs, what is shared)
        type Case<'a> = (Vec<&'a VariantView>, Vec<&'a str>, Vec<(&'a str, &'a str)>);
        let table: Vec<Case> = vec![
            (
                vec![&base, &other],
                vec!["tags", "style_weight"],
                vec![
                    ("not", "–"),
                    ("model", "V5"),
                    ("voice", "–"),
                    ("weird", "–"),
                    ("audio", "–"),
                ],
            ),
            (
                vec![&base],
                vec![],
                vec![
                    ("tags", "lofi, chill"),
                    ("not", "–"),
                    ("model", "V5"),
                    ("voice", "–"),
                    ("style", "0.4"),
                    ("weird", "–"),
                    ("audio", "–"),
                ],
            ),
            (vec![], vec![], vec![]),
        ];
        for (variants, differ, shared) in table {
            let found = differences(variants.iter().copied());
            assert_eq!(found.differ, differ);
            let shared: Vec<(&str, String)> =
                shared.into_iter().map(|(k, v)| (k, v.to_owned())).collect();
            assert_eq!(found.shared, shared);
        }
    }

    #[test]
    fn a_stem_file_is_found_from_the_folder_by_a_relative_path() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("runs/night 1");
        let stems = root.path().join("stems");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::create_dir_all(&stems).unwrap();
        let stem = stems.join("lead vocal.wav");
        std::fs::write(&stem, crate::sim::audio::encode_wav(&[0.1; 22_050], 22_050)).unwrap();
        let relative = relative_to(&out, &stem).unwrap();
        assert_eq!(relative, "../../stems/lead vocal.wav");
        assert!(out.join(&relative).is_file());
        assert_eq!(relative_url(&relative), "../../stems/lead%20vocal.wav");
        assert_eq!(relative_to(&out, &out.join("a/b.wav")).unwrap(), "a/b.wav");
        assert_eq!(crate::qc::header_seconds(&stem), Some(1.0));
        assert_eq!(crate::qc::header_seconds(&out), None);
    }
}
