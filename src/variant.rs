//! The words of the domain as types: a [`Variant`] is one set of generation parameters for
//! one stem and one take, identified by a [`VariantId`] that hashes everything sent for it.
//!
//! Pure: no I/O, no async. The manifest module builds these; everything after it reads them.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// A stable, short identity of a variant: the hash of what is sent for it and its take.
///
/// Two runs of the same manifest produce the same ids; changing any generation parameter
/// or the stem's source produces a new id, so the variant counts as new.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct VariantId(String);

impl VariantId {
    /// Hex digits kept from the sha256: 64 bits, plenty for one account's variants.
    const HEX_LEN: usize = 16;

    /// Computes the id of a variant from its source, parameters and take.
    pub fn compute(source: &StemSource, params: &GenerationParams, take: u32) -> Self {
        // serde_json gives an unambiguous encoding of the strings (quotes, escapes), so no
        // two different inputs hash the same text.
        let canonical = serde_json::json!([
            "stembatch-variant-v1",
            source.identity(),
            params.model.as_str(),
            params.title,
            params.tags,
            params.negative_tags,
            params.vocal_gender.map(VocalGender::as_str),
            params.style_weight.map(Weight::hundredths),
            params.weirdness_constraint.map(Weight::hundredths),
            params.audio_weight.map(Weight::hundredths),
            take,
        ]);
        let digest = Sha256::digest(canonical.to_string().as_bytes());
        let mut hex = hex::encode(digest);
        hex.truncate(Self::HEX_LEN);
        Self(hex)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VariantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The provider's model for add-instrumental.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Model {
    /// `V4_5PLUS`, the provider's default.
    #[default]
    V4_5Plus,
    /// `V5`.
    V5,
}

impl Model {
    /// The name the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Model::V4_5Plus => "V4_5PLUS",
            Model::V5 => "V5",
        }
    }

    /// Parses the API's name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "V4_5PLUS" => Some(Model::V4_5Plus),
            "V5" => Some(Model::V5),
            _ => None,
        }
    }
}

/// The vocal gender hint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VocalGender {
    /// `m`
    Male,
    /// `f`
    Female,
}

impl VocalGender {
    /// The letter the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            VocalGender::Male => "m",
            VocalGender::Female => "f",
        }
    }

    /// Parses the API's letter.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "m" => Some(VocalGender::Male),
            "f" => Some(VocalGender::Female),
            _ => None,
        }
    }
}

/// A weight in 0..=1 with at most two decimals, kept as hundredths so that it hashes,
/// compares and prints exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Weight(u8);

impl Weight {
    /// Accepts 0..=1 with at most two decimals.
    pub fn from_f64(value: f64) -> Result<Self, String> {
        if !(0.0..=1.0).contains(&value) {
            return Err(format!("{value} is outside 0..1"));
        }
        let scaled = value * 100.0;
        if (scaled - scaled.round()).abs() > 1e-6 {
            return Err(format!("{value} has more than 2 decimals"));
        }
        Ok(Weight(scaled.round() as u8))
    }

    /// The weight in hundredths (0..=100).
    pub fn hundredths(self) -> u8 {
        self.0
    }

    /// The weight as the API's number.
    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / 100.0
    }
}

impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_f64())
    }
}

/// Everything sent to the provider for one variant, fully resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationParams {
    /// The model.
    pub model: Model,
    /// The title, placeholders substituted.
    pub title: String,
    /// Styles wanted.
    pub tags: String,
    /// Styles to exclude.
    pub negative_tags: String,
    /// Optional vocal gender hint.
    pub vocal_gender: Option<VocalGender>,
    /// Optional style weight.
    pub style_weight: Option<Weight>,
    /// Optional weirdness constraint.
    pub weirdness_constraint: Option<Weight>,
    /// Optional audio weight.
    pub audio_weight: Option<Weight>,
}

impl GenerationParams {
    /// The names of [`GenerationParams::columns`], as the API and the CSV files name them.
    pub const COLUMNS: [&'static str; 8] = [
        "title",
        "tags",
        "negative_tags",
        "model",
        "vocal_gender",
        "style_weight",
        "weirdness_constraint",
        "audio_weight",
    ];

    /// The parameters as text, in [`GenerationParams::COLUMNS`] order; unset ones empty.
    pub fn columns(&self) -> [String; 8] {
        let text = |value: Option<String>| value.unwrap_or_default();
        [
            self.title.clone(),
            self.tags.clone(),
            self.negative_tags.clone(),
            self.model.as_str().to_owned(),
            text(self.vocal_gender.map(|g| g.as_str().to_owned())),
            text(self.style_weight.map(|w| w.to_string())),
            text(self.weirdness_constraint.map(|w| w.to_string())),
            text(self.audio_weight.map(|w| w.to_string())),
        ]
    }
}

/// Where a stem's audio comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StemSource {
    /// A URL the provider fetches itself.
    Url(String),
    /// A local file, uploaded (or published) before its first submit.
    Local(LocalStem),
}

impl StemSource {
    /// What identifies the source in a variant id: the URL, or the file's content, so an
    /// edited file makes new variants and a moved one does not.
    fn identity(&self) -> String {
        match self {
            StemSource::Url(url) => format!("url:{url}"),
            StemSource::Local(local) => format!("sha256:{}", local.sha256),
        }
    }

    /// How `plan` shows the source: the URL, or the file's path, lexically normalised
    /// (`stems/x.wav`, not `manifests/../stems/x.wav`).
    pub fn describe(&self) -> String {
        match self {
            StemSource::Url(url) => url.clone(),
            StemSource::Local(local) => crate::stems::normalized(&local.path).display().to_string(),
        }
    }
}

/// A stem file on disk, checked and hashed when the manifest was loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalStem {
    /// Where it is (the manifest's folder joined with what the manifest says).
    pub path: PathBuf,
    /// Its path relative to the manifest's folder, `/`-separated, when it lies inside it.
    pub relative: Option<String>,
    /// Hex sha256 of its content.
    pub sha256: String,
    /// Its size.
    pub bytes: u64,
}

/// A stem as the run needs it: shared by all of its variants.
#[derive(Debug, PartialEq)]
pub struct Stem {
    /// The stem's name: the folder of its tracks under `audio/`.
    pub name: String,
    /// Where its audio comes from.
    pub source: StemSource,
    /// How many takes of each variant are submitted.
    pub takes: u32,
    /// Why this stem's file cannot be sent (empty, not audio, too large), naming the file:
    /// only a file a glob matched can have one. Its variants end `error` without being
    /// submitted, and the rest of the run goes on. `None` for every stem that can be sent.
    pub problem: Option<String>,
}

/// One unit of work: a stem, a named parameter set, and a take.
#[derive(Clone, Debug)]
pub struct Variant {
    /// The stem it belongs to.
    pub stem: Arc<Stem>,
    /// The variant's name, unique within its stem.
    pub name: String,
    /// The take number, 1-based.
    pub take: u32,
    /// What is sent.
    pub params: GenerationParams,
    /// Its identity.
    pub id: VariantId,
}

impl Variant {
    /// The file name stem of its tracks: `<variant>[-t<take>]`, without the track number.
    pub fn file_base(&self) -> String {
        if self.stem.takes > 1 {
            format!("{}-t{}", self.name, self.take)
        } else {
            self.name.clone()
        }
    }
}

/// The variants of a run in manifest order, found by id in O(1): shared by the
/// executors and the report instead of a copy of every variant each.
#[derive(Debug)]
pub struct VariantTable {
    list: Arc<Vec<Variant>>,
    by_id: std::collections::HashMap<VariantId, u32>,
}

impl VariantTable {
    /// The table of `list`.
    pub fn new(list: Arc<Vec<Variant>>) -> Self {
        let by_id = list
            .iter()
            .enumerate()
            .map(|(i, v)| (v.id.clone(), i as u32))
            .collect();
        VariantTable { list, by_id }
    }

    /// The variants, in manifest order.
    pub fn list(&self) -> &[Variant] {
        &self.list
    }

    /// The variants, in manifest order.
    pub fn iter(&self) -> std::slice::Iter<'_, Variant> {
        self.list.iter()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The manifest position of `id`.
    pub fn index_of(&self, id: &VariantId) -> Option<usize> {
        self.by_id.get(id).map(|&i| i as usize)
    }

    /// The variant `id`.
    pub fn get(&self, id: &VariantId) -> Option<&Variant> {
        self.index_of(id).map(|i| &self.list[i])
    }
}

impl std::ops::Index<usize> for VariantTable {
    type Output = Variant;
    fn index(&self, index: usize) -> &Variant {
        &self.list[index]
    }
}

impl std::ops::Index<&VariantId> for VariantTable {
    type Output = Variant;
    fn index(&self, id: &VariantId) -> &Variant {
        self.get(id).expect("a variant of the run")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> GenerationParams {
        GenerationParams {
            model: Model::V5,
            title: "t".into(),
            tags: "piano".into(),
            negative_tags: String::new(),
            vocal_gender: Some(VocalGender::Female),
            style_weight: Some(Weight::from_f64(0.5).unwrap()),
            weirdness_constraint: None,
            audio_weight: None,
        }
    }

    #[test]
    fn a_local_source_is_described_by_its_normalised_path() {
        let local = StemSource::Local(LocalStem {
            path: "manifests/../stems/./x.wav".into(),
            relative: None,
            sha256: "aa".into(),
            bytes: 1,
        });
        assert_eq!(local.describe(), "stems/x.wav");
        let url = StemSource::Url("https://x/../a.mp3".into());
        assert_eq!(url.describe(), "https://x/../a.mp3");
    }

    #[test]
    fn weight_accepts_two_decimals_and_rejects_more() {
        assert_eq!(Weight::from_f64(0.65).unwrap().hundredths(), 65);
        assert_eq!(Weight::from_f64(1.0).unwrap().hundredths(), 100);
        assert_eq!(Weight::from_f64(0.0).unwrap().to_string(), "0");
        assert_eq!(Weight::from_f64(0.07).unwrap().to_string(), "0.07");
        assert_eq!(
            Weight::from_f64(0.123).unwrap_err(),
            "0.123 has more than 2 decimals"
        );
        assert_eq!(Weight::from_f64(1.5).unwrap_err(), "1.5 is outside 0..1");
        assert!(Weight::from_f64(f64::NAN).is_err());
    }

    #[test]
    fn variant_id_changes_with_every_sent_parameter_and_take() {
        let source = StemSource::Url("https://x/a.mp3".into());
        let base = VariantId::compute(&source, &params(), 1);
        assert_eq!(base, VariantId::compute(&source, &params(), 1));
        assert_eq!(base.as_str().len(), 16);
        assert_ne!(base, VariantId::compute(&source, &params(), 2));
        let other_source = StemSource::Url("https://x/b.mp3".into());
        assert_ne!(base, VariantId::compute(&other_source, &params(), 1));
        let local = |path: &str, sha256: &str| {
            StemSource::Local(LocalStem {
                path: path.into(),
                relative: None,
                sha256: sha256.into(),
                bytes: 1,
            })
        };
        // A moved file keeps its variants; an edited one makes new ones.
        let here = VariantId::compute(&local("a.wav", "aa"), &params(), 1);
        assert_eq!(
            here,
            VariantId::compute(&local("moved/b.wav", "aa"), &params(), 1)
        );
        assert_ne!(
            here,
            VariantId::compute(&local("a.wav", "ab"), &params(), 1)
        );
        let mut changed = params();
        changed.style_weight = Some(Weight::from_f64(0.51).unwrap());
        assert_ne!(base, VariantId::compute(&source, &changed, 1));
        let mut changed = params();
        changed.vocal_gender = None;
        assert_ne!(base, VariantId::compute(&source, &changed, 1));
    }
}
