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

    /// The id's 64 bits, for an id as [`VariantId::compute`] writes it (16 lowercase hex
    /// digits): then the bits are the id, and two ids are equal when their bits are.
    /// `None` for any other text (an id read from a journal written by something else).
    pub fn bits(&self) -> Option<u64> {
        Self::bits_of(&self.0)
    }

    /// The bits of the id written `text` (see [`VariantId::bits`]), without making one.
    pub fn bits_of(text: &str) -> Option<u64> {
        let lower_hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
        match text.len() == Self::HEX_LEN && text.as_bytes().iter().all(lower_hex) {
            true => u64::from_str_radix(text, 16).ok(),
            false => None,
        }
    }

    /// The id whose [`VariantId::bits`] are `bits`.
    pub fn from_bits(bits: u64) -> Self {
        Self(format!("{bits:016x}"))
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

/// Where a [`VariantTable`]'s variants come from: each built by table position when
/// asked (the manifest's expansion), or a list held whole (tests, benchmarks).
pub trait VariantSource: fmt::Debug + Send + Sync {
    /// The variant at table position `index`, whose id is `id` (given, so that building
    /// one need not hash it again).
    fn build(&self, index: usize, id: &VariantId) -> Variant;

    /// The stem of the variant at table position `index`, without building the variant.
    fn stem_at(&self, index: usize) -> Arc<Stem>;
}

impl VariantSource for Vec<Variant> {
    fn build(&self, index: usize, _id: &VariantId) -> Variant {
        self[index].clone()
    }

    fn stem_at(&self, index: usize) -> Arc<Stem> {
        Arc::clone(&self[index].stem)
    }
}

/// The variants of a run in manifest order, found by id in O(1): shared by the
/// executors and the report. It holds each variant's id (8 bytes) and its position, not
/// the variant: one is built when asked for (when it starts, ends, or is reported) and
/// dropped after, so the run's memory does not hold a million names, titles and tags.
#[derive(Debug)]
pub struct VariantTable {
    source: Arc<dyn VariantSource>,
    /// Each variant's id ([`VariantId::bits`]), by position.
    ids: Vec<u64>,
    by_id: std::collections::HashMap<u64, u32>,
}

impl VariantTable {
    /// The table of `list`, held whole.
    pub fn new(list: Arc<Vec<Variant>>) -> Self {
        let ids: Vec<VariantId> = list.iter().map(|v| v.id.clone()).collect();
        Self::built(list, ids.iter())
    }

    /// The table of the variants `source` builds, whose ids are `ids`, by position.
    ///
    /// Every id must be one [`VariantId::compute`] made (all of a manifest's are).
    pub fn built<I: std::borrow::Borrow<VariantId>>(
        source: Arc<dyn VariantSource>,
        ids: impl IntoIterator<Item = I>,
    ) -> Self {
        let ids: Vec<u64> = ids
            .into_iter()
            .map(|id| {
                id.borrow()
                    .bits()
                    .expect("a computed variant id is 16 hex digits")
            })
            .collect();
        let by_id = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, i as u32))
            .collect();
        VariantTable { source, ids, by_id }
    }

    /// The variants, in manifest order, each built as it is reached.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Variant> + '_ {
        (0..self.len()).map(|index| self.at(index))
    }

    /// The ids, by position: no variant is built.
    pub fn ids(&self) -> impl ExactSizeIterator<Item = VariantId> + '_ {
        self.ids.iter().map(|&bits| VariantId::from_bits(bits))
    }

    /// The id of the variant at position `index`, as its 64 bits ([`VariantId::bits`]).
    pub fn bits_at(&self, index: usize) -> u64 {
        self.ids[index]
    }

    /// The table of those of its variants whose id `keep` takes (a shard's), in the same
    /// order, built by the same source: no variant is built to choose them.
    pub fn subset(&self, keep: impl Fn(&VariantId) -> bool) -> VariantTable {
        let (positions, ids): (Vec<u32>, Vec<VariantId>) = self
            .ids()
            .enumerate()
            .filter(|(_, id)| keep(id))
            .map(|(position, id)| (position as u32, id))
            .unzip();
        let source = Subset {
            source: Arc::clone(&self.source),
            positions,
        };
        Self::built(Arc::new(source), ids)
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The manifest position of `id`.
    pub fn index_of(&self, id: &VariantId) -> Option<usize> {
        self.by_id.get(&id.bits()?).map(|&i| i as usize)
    }

    /// The variant at position `index` (below [`VariantTable::len`]), built.
    pub fn at(&self, index: usize) -> Variant {
        self.source
            .build(index, &VariantId::from_bits(self.ids[index]))
    }

    /// The stems of its variants, in order, each once: no variant is built (a stem's
    /// variants are next to each other in manifest order).
    pub fn stems(&self) -> Vec<Arc<Stem>> {
        let mut stems: Vec<Arc<Stem>> = Vec::new();
        for index in 0..self.len() {
            let stem = self.source.stem_at(index);
            if !stems.last().is_some_and(|last| Arc::ptr_eq(last, &stem)) {
                stems.push(stem);
            }
        }
        stems
    }

    /// The variant `id`, built.
    pub fn get(&self, id: &VariantId) -> Option<Variant> {
        self.index_of(id).map(|i| self.at(i))
    }

    /// Whether `id` is one of its variants'.
    pub fn contains(&self, id: &VariantId) -> bool {
        self.index_of(id).is_some()
    }
}

/// Some of a table's variants: [`VariantTable::subset`].
#[derive(Debug)]
struct Subset {
    source: Arc<dyn VariantSource>,
    /// Each variant's position in the table it was chosen from.
    positions: Vec<u32>,
}

impl VariantSource for Subset {
    fn build(&self, index: usize, id: &VariantId) -> Variant {
        self.source.build(self.positions[index] as usize, id)
    }

    fn stem_at(&self, index: usize) -> Arc<Stem> {
        self.source.stem_at(self.positions[index] as usize)
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
    fn a_computed_id_is_its_bits_and_no_other_text_has_bits() {
        let source = StemSource::Url("https://x/a.mp3".into());
        let id = VariantId::compute(&source, &params(), 1);
        let bits = id.bits().unwrap();
        assert_eq!(VariantId::from_bits(bits), id);
        assert_eq!(VariantId::from_bits(255).as_str(), "00000000000000ff");
        for text in [
            "00000000000000FF",
            "ff",
            "00000000000000ff0",
            "0x000000000000ff",
        ] {
            assert_eq!(VariantId(text.into()).bits(), None, "{text}");
        }
    }

    #[test]
    fn a_table_finds_and_builds_its_variants_by_id() {
        let source = StemSource::Url("https://x/a.mp3".into());
        let stem = Arc::new(Stem {
            name: "a".into(),
            source: source.clone(),
            takes: 3,
            problem: None,
        });
        let list: Vec<Variant> = (1..=3)
            .map(|take| Variant {
                stem: Arc::clone(&stem),
                name: "v".into(),
                take,
                params: params(),
                id: VariantId::compute(&source, &params(), take),
            })
            .collect();
        let table = VariantTable::new(Arc::new(list.clone()));
        assert_eq!(table.len(), 3);
        for (index, variant) in list.iter().enumerate() {
            assert_eq!(table.index_of(&variant.id), Some(index));
            assert_eq!(table.get(&variant.id).unwrap().take, variant.take);
        }
        let takes: Vec<u32> = table.iter().map(|v| v.take).collect();
        assert_eq!(takes, [1, 2, 3]);
        let elsewhere = VariantId::compute(&source, &params(), 4);
        assert_eq!(table.index_of(&elsewhere), None);
        assert_eq!(table.index_of(&VariantId("not an id".into())), None);
        // A shard's table: the kept ones, in order, each built from its own position.
        let odd = table.subset(|id| id != &list[1].id);
        let kept: Vec<VariantId> = odd.ids().collect();
        assert_eq!(kept, [list[0].id.clone(), list[2].id.clone()]);
        let built: Vec<(VariantId, u32)> = odd.iter().map(|v| (v.id, v.take)).collect();
        assert_eq!(built, [(kept[0].clone(), 1), (kept[1].clone(), 3)]);
        assert_eq!(odd.index_of(&list[2].id), Some(1));
        assert!(!odd.contains(&list[1].id) && table.contains(&list[1].id));
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
