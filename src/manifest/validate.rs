//! Raw TOML to typed settings and parameter layers, collecting every problem with the
//! line and the key it concerns. Pure: the caller hands in the parsed text.
//!
//! Each stem is first checked as a [`StemDraft`]: its sources, takes, listed variants and
//! matrix lists, never their product. The manifest's variants are counted from the drafts
//! and refused past [`MAX_VARIANTS`] before any variant spec is built.

use std::ops::Range;
use std::sync::Arc;

use toml::Spanned;

use super::limits::LimitSettings;
use super::raw::{RawManifest, RawMatrix, RawParams, RawStem, RawVariant};
use super::settings::{self, ApiSettings, RunSettings, UploadMode, UploadSettings};
use super::sources::{self, Files, Source};
use super::Problem;
use crate::variant::{LocalStem, Model, Stem, StemSource, VocalGender, Weight};

/// Longest title the provider accepts (V4_5PLUS and V5).
pub(super) const MAX_TITLE_CHARS: usize = 100;
/// Longest tags / negative tags the provider accepts.
const MAX_TAGS_CHARS: usize = 1000;
/// Most takes of one stem: a guard against a typo that would bill thousands of tasks.
const MAX_TAKES: i64 = 1000;
/// Most combinations one matrix may make.
const MAX_MATRIX_COMBINATIONS: u64 = 1_000_000;
/// Most variants one manifest may expand to, counted before any is built: a guard against
/// a typo that multiplies a matrix by takes, by stems or by the files of a glob.
const MAX_VARIANTS: u64 = 1_000_000;
/// The placeholders a title may use.
const TITLE_PLACEHOLDERS: [&str; 3] = ["stem", "variant", "take"];
/// The title of a variant for which no table sets one.
pub(super) const DEFAULT_TITLE: &str = "{stem} {variant}";

/// Byte offset to 1-based line.
pub(crate) struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub(crate) fn new(text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { starts }
    }

    pub(crate) fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&start| start <= offset).max(1)
    }
}

/// The problems found so far, and the warnings: what was left out without making the
/// manifest invalid (a glob's `readme.txt`).
pub(crate) struct Problems<'a> {
    lines: &'a LineIndex,
    list: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl<'a> Problems<'a> {
    pub(crate) fn new(lines: &'a LineIndex) -> Self {
        Problems {
            lines,
            list: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, span: Range<usize>, field: &str, message: impl Into<String>) {
        let line = self.lines.line(span.start);
        self.push_at_line(line, field, message);
    }

    /// How many problems were found so far.
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    pub(crate) fn push_at_line(&mut self, line: usize, field: &str, message: impl Into<String>) {
        self.list.push(Problem {
            line,
            field: field.to_owned(),
            message: message.into(),
        });
    }

    /// Something left out that does not make the manifest invalid.
    pub(crate) fn warn(&mut self, span: Range<usize>, field: &str, message: impl Into<String>) {
        let line = self.lines.line(span.start);
        self.warnings.push(Problem {
            line,
            field: field.to_owned(),
            message: message.into(),
        });
    }

    /// The warnings, by line.
    pub(crate) fn take_warnings(&mut self) -> Vec<Problem> {
        let mut warnings = std::mem::take(&mut self.warnings);
        warnings.sort();
        warnings.dedup();
        warnings
    }

    pub(crate) fn line(&self, span: Range<usize>) -> usize {
        self.lines.line(span.start)
    }

    /// By line, duplicates removed.
    pub(crate) fn into_sorted(mut self) -> Vec<Problem> {
        self.list.sort();
        self.list.dedup();
        self.list
    }
}

/// A title template and where it was written.
#[derive(Clone, Debug)]
pub(super) struct TitleTemplate {
    pub text: String,
    /// The line and key that set it; `None` for [`DEFAULT_TITLE`], which no line sets.
    pub written: Option<(usize, String)>,
}

/// The generation parameters one table sets, validated; `None` inherits.
#[derive(Clone, Debug, Default)]
pub(super) struct ParamLayer {
    pub model: Option<Model>,
    pub title: Option<Arc<TitleTemplate>>,
    pub tags: Option<String>,
    pub negative_tags: Option<String>,
    pub vocal_gender: Option<VocalGender>,
    pub style_weight: Option<Weight>,
    pub weirdness_constraint: Option<Weight>,
    pub audio_weight: Option<Weight>,
}

impl ParamLayer {
    /// `upper` over `self`: what `upper` sets wins.
    pub(super) fn overlay(&self, upper: &ParamLayer) -> ParamLayer {
        ParamLayer {
            model: upper.model.or(self.model),
            title: upper.title.clone().or_else(|| self.title.clone()),
            tags: upper.tags.clone().or_else(|| self.tags.clone()),
            negative_tags: upper
                .negative_tags
                .clone()
                .or_else(|| self.negative_tags.clone()),
            vocal_gender: upper.vocal_gender.or(self.vocal_gender),
            style_weight: upper.style_weight.or(self.style_weight),
            weirdness_constraint: upper.weirdness_constraint.or(self.weirdness_constraint),
            audio_weight: upper.audio_weight.or(self.audio_weight),
        }
    }
}

/// One named parameter set of a stem, before takes: a listed variant, a matrix
/// combination, or both crossed.
#[derive(Clone, Debug)]
pub(super) struct VariantSpec {
    pub name: String,
    /// Where problems of this variant point.
    pub line: usize,
    pub field: String,
    /// Defaults, stem, variant and matrix layers already merged.
    pub layer: ParamLayer,
}

/// A stem with its variant specs, which it shares with the other files of its glob.
#[derive(Debug)]
pub(super) struct StemPlan {
    pub stem: Arc<Stem>,
    pub field: String,
    pub line: usize,
    pub specs: Arc<Specs>,
}

/// A stem's variant specs, built one at a time by position: the listed variants, the
/// matrix combinations, or each listed variant crossed with each combination; one variant
/// named "default" when there are neither. A million of them are never held at once.
#[derive(Debug)]
pub(super) struct Specs {
    field: String,
    line: usize,
    /// `[defaults]` and the stem's own parameters merged.
    layer: ParamLayer,
    listed: Option<Vec<VariantSpec>>,
    matrix: Option<Matrix>,
    /// How many; 0 for a manifest past [`MAX_VARIANTS`], whose specs are never built.
    len: usize,
}

impl Specs {
    /// How many specs.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The spec at `index` (below [`Specs::len`]), its layers merged: the same spec, in
    /// the same order, at every call.
    pub(super) fn spec(&self, index: usize) -> VariantSpec {
        let spec = match (&self.listed, &self.matrix) {
            (None, None) => VariantSpec {
                name: "default".into(),
                line: self.line,
                field: self.field.clone(),
                layer: ParamLayer::default(),
            },
            (Some(listed), None) => listed[index].clone(),
            (None, Some(matrix)) => {
                let (name, layer) = matrix.combination(index);
                VariantSpec {
                    name,
                    line: matrix.line,
                    field: matrix.field.clone(),
                    layer,
                }
            }
            (Some(listed), Some(matrix)) => {
                let combinations = matrix.len();
                let variant = &listed[index / combinations];
                let (name, layer) = matrix.combination(index % combinations);
                VariantSpec {
                    name: format!("{}_{name}", variant.name),
                    line: variant.line,
                    field: variant.field.clone(),
                    layer: variant.layer.overlay(&layer),
                }
            }
        };
        VariantSpec {
            layer: self.layer.overlay(&spec.layer),
            ..spec
        }
    }
}

/// Everything validation produces.
pub(super) struct Validated {
    pub api: ApiSettings,
    pub run: RunSettings,
    pub upload: UploadSettings,
    pub limits: LimitSettings,
    pub stems: Vec<StemPlan>,
}

pub(super) fn validate(raw: &RawManifest, files: &Files, problems: &mut Problems) -> Validated {
    if raw.stem.is_empty() {
        problems.push_at_line(1, "stem", "the manifest lists no [[stem]]");
    }
    let drafts = drafts(raw, files, problems);
    // Counted from the drafts' sizes alone: past the cap, no variant spec is built, so a
    // typo that multiplies a matrix costs a problem, not the memory of its product.
    let count = count_variants(&drafts, problems);
    let within_cap = count.is_some_and(|count| count <= MAX_VARIANTS);
    let stems = drafts
        .into_iter()
        .flat_map(|draft| draft.into_plans(within_cap))
        .collect::<Vec<_>>();
    let mut seen = std::collections::HashMap::new();
    for plan in &stems {
        if let Some(first) = seen.insert(plan.stem.name.clone(), plan.line) {
            problems.push_at_line(
                plan.line,
                &format!("{}.name", plan.field),
                format!(
                    "two stems are named {:?} (the other is on line {first}); set name to tell them apart",
                    plan.stem.name
                ),
            );
        }
    }
    let upload = settings::upload(raw.upload.as_ref(), problems);
    if matches!(upload.mode, UploadMode::BaseUrl(_)) {
        for plan in &stems {
            if let StemSource::Local(LocalStem {
                path,
                relative: None,
                ..
            }) = &plan.stem.source
            {
                problems.push_at_line(
                    plan.line,
                    &plan.field,
                    format!(
                        "{} lies outside the manifest's folder, so upload.mode = \"base_url\" cannot give it a URL",
                        crate::stems::normalized(path).display()
                    ),
                );
            }
        }
    }
    let api = settings::api(raw.api.as_ref(), problems);
    let run = settings::run(raw.run.as_ref(), problems);
    settings::check_url_expiry(&upload, &run, problems);
    Validated {
        api,
        run,
        upload,
        limits: super::limits::limits(raw.limits.as_ref(), problems),
        stems,
    }
}

/// One `[[stem]]` checked but not yet crossed out: the parts its variants are made of,
/// each checked, from which its variants are counted before any is built.
pub(super) struct StemDraft {
    field: String,
    line: usize,
    /// One for a url or a path, one per matching file for a glob.
    sources: Vec<Source>,
    takes: u32,
    /// `[defaults]` and the stem's own parameters merged.
    layer: ParamLayer,
    /// Its `[[stem.variant]]` tables that are usable; `None` when it has none.
    listed: Option<Vec<VariantSpec>>,
    matrix: Option<Matrix>,
}

/// A `[stem.matrix]` with every value checked, its combinations not yet built.
#[derive(Debug)]
struct Matrix {
    field: String,
    line: usize,
    /// Each list's values: slug and value. Empty when the matrix cannot be used (a
    /// problem was recorded), so that it makes no combination.
    axes: Vec<Vec<(Box<str>, AxisValue)>>,
}

/// One value of a matrix list, checked: the one parameter it sets. A list of 100,000
/// tags is held as 100,000 of these, not as as many whole parameter layers.
#[derive(Debug)]
enum AxisValue {
    /// A value that did not pass its check (a problem was recorded).
    Unset,
    Model(Model),
    Title(Arc<TitleTemplate>),
    Tags(Box<str>),
    NegativeTags(Box<str>),
    VocalGender(VocalGender),
    StyleWeight(Weight),
    WeirdnessConstraint(Weight),
    AudioWeight(Weight),
}

impl AxisValue {
    /// The value of a layer that sets one parameter at most (as a list's value does).
    fn of(layer: ParamLayer) -> Self {
        let ParamLayer {
            model,
            title,
            tags,
            negative_tags,
            vocal_gender,
            style_weight,
            weirdness_constraint,
            audio_weight,
        } = layer;
        let text = |s: String| s.into_boxed_str();
        (model.map(Self::Model))
            .or(title.map(Self::Title))
            .or(tags.map(text).map(Self::Tags))
            .or(negative_tags.map(text).map(Self::NegativeTags))
            .or(vocal_gender.map(Self::VocalGender))
            .or(style_weight.map(Self::StyleWeight))
            .or(weirdness_constraint.map(Self::WeirdnessConstraint))
            .or(audio_weight.map(Self::AudioWeight))
            .unwrap_or(Self::Unset)
    }

    /// Sets its parameter on `layer`.
    fn apply(&self, layer: &mut ParamLayer) {
        match self {
            Self::Unset => {}
            Self::Model(model) => layer.model = Some(*model),
            Self::Title(title) => layer.title = Some(Arc::clone(title)),
            Self::Tags(tags) => layer.tags = Some(tags.to_string()),
            Self::NegativeTags(tags) => layer.negative_tags = Some(tags.to_string()),
            Self::VocalGender(gender) => layer.vocal_gender = Some(*gender),
            Self::StyleWeight(weight) => layer.style_weight = Some(*weight),
            Self::WeirdnessConstraint(weight) => layer.weirdness_constraint = Some(*weight),
            Self::AudioWeight(weight) => layer.audio_weight = Some(*weight),
        }
    }
}

/// Every `[[stem]]` as a draft; a stem whose source is unusable has none.
pub(super) fn drafts(raw: &RawManifest, files: &Files, problems: &mut Problems) -> Vec<StemDraft> {
    let built_in = ParamLayer {
        title: Some(Arc::new(TitleTemplate {
            text: DEFAULT_TITLE.into(),
            written: None,
        })),
        ..ParamLayer::default()
    };
    let defaults = raw
        .defaults
        .as_ref()
        .map(|d| built_in.overlay(&params(&d.params(), "defaults", problems)))
        .unwrap_or(built_in);
    raw.stem
        .iter()
        .enumerate()
        .filter_map(|(i, stem)| draft(stem, i + 1, &defaults, files, problems))
        .collect()
}

fn draft(
    raw: &Spanned<RawStem>,
    index: usize,
    defaults: &ParamLayer,
    files: &Files,
    problems: &mut Problems,
) -> Option<StemDraft> {
    let field = format!("stem[{index}]");
    let line = problems.line(raw.span());
    let stem = raw.get_ref();
    let sources = sources::sources(stem, &field, line, files, problems)?;
    let takes = match &stem.takes {
        None => 1,
        Some(takes) if (1..=MAX_TAKES).contains(takes.get_ref()) => *takes.get_ref() as u32,
        Some(takes) => {
            problems.push(
                takes.span(),
                &format!("{field}.takes"),
                format!("{} is outside 1..{MAX_TAKES}", takes.get_ref()),
            );
            1
        }
    };
    let layer = defaults.overlay(&params(&stem.params(), &field, problems));
    let listed = stem.variant.as_ref().map(|variants| {
        variants
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                listed_variant(v, &format!("{field}.variant[{}]", i + 1), problems)
            })
            .collect()
    });
    let matrix = stem
        .matrix
        .as_ref()
        .map(|raw| matrix(raw, format!("{field}.matrix"), problems));
    Some(StemDraft {
        field,
        line,
        sources,
        takes,
        layer,
        listed,
        matrix,
    })
}

impl StemDraft {
    /// Its variant specs per source: listed variants times matrix combinations, each
    /// factor 1 when absent. `None` past `u64::MAX`.
    fn parameter_sets(&self) -> Option<u64> {
        let listed = self.listed.as_ref().map_or(1, |listed| listed.len() as u64);
        let combinations = self.matrix.as_ref().map_or(Some(1), Matrix::count)?;
        listed.checked_mul(combinations)
    }

    /// The variants it expands to: sources × parameter sets × takes. `None` past `u64::MAX`.
    fn variants(&self) -> Option<u64> {
        (self.sources.len() as u64)
            .checked_mul(self.parameter_sets()?)?
            .checked_mul(u64::from(self.takes))
    }

    /// One plan per source, all sharing its specs; none of them is built here, and
    /// none at all unless `within_cap` (the manifest's count is within [`MAX_VARIANTS`]).
    fn into_plans(self, within_cap: bool) -> Vec<StemPlan> {
        // Within the cap, the count fits in usize (it is at most MAX_VARIANTS).
        let len = match within_cap {
            true => self.parameter_sets().unwrap_or(0) as usize,
            false => 0,
        };
        let StemDraft {
            field,
            line,
            sources,
            takes,
            layer,
            listed,
            matrix,
        } = self;
        let specs = Arc::new(Specs {
            field: field.clone(),
            line,
            layer,
            listed,
            matrix,
            len,
        });
        sources
            .into_iter()
            .map(|source| StemPlan {
                stem: Arc::new(Stem {
                    name: source.name,
                    source: source.source,
                    takes,
                    problem: source.problem,
                }),
                field: field.clone(),
                line,
                specs: Arc::clone(&specs),
            })
            .collect()
    }
}

/// The manifest's variant count, `None` past `u64::MAX`, from the drafts' sizes alone.
/// A count past [`MAX_VARIANTS`] is a problem at the stem whose variants take it past.
pub(super) fn count_variants(drafts: &[StemDraft], problems: &mut Problems) -> Option<u64> {
    let mut total = Some(0u64);
    let mut crossing = None;
    for draft in drafts {
        total = total.and_then(|total| total.checked_add(draft.variants()?));
        if crossing.is_none() && total.is_none_or(|total| total > MAX_VARIANTS) {
            crossing = Some(draft);
        }
    }
    if let Some(draft) = crossing {
        problems.push_at_line(
            draft.line,
            &draft.field,
            format!(
                "the manifest expands to {} variants, more than the {MAX_VARIANTS} allowed (this stem adds {} = {} × {} × {})",
                number(total),
                number(draft.variants()),
                counted(Some(draft.sources.len() as u64), "source"),
                counted(draft.parameter_sets(), "parameter set"),
                counted(Some(u64::from(draft.takes)), "take"),
            ),
        );
    }
    total
}

/// A count as a message says it: `None` stands for one past `u64::MAX`.
fn number(count: Option<u64>) -> String {
    count.map_or_else(|| format!("over {}", u64::MAX), |count| count.to_string())
}

/// "1 take", "3 takes".
fn counted(count: Option<u64>, noun: &str) -> String {
    let plural = if count == Some(1) { "" } else { "s" };
    format!("{} {noun}{plural}", number(count))
}

fn listed_variant(
    raw: &Spanned<RawVariant>,
    field: &str,
    problems: &mut Problems,
) -> Option<VariantSpec> {
    let line = problems.line(raw.span());
    let variant = raw.get_ref();
    let layer = params(&variant.params(), field, problems);
    let Some(name) = &variant.name else {
        problems.push_at_line(line, &format!("{field}.name"), "a variant needs a name");
        return None;
    };
    Some(VariantSpec {
        name: check_name(name, &format!("{field}.name"), problems)?,
        line: problems.line(name.span()),
        field: field.to_owned(),
        layer,
    })
}

/// The matrix's lists, each value checked, in a fixed key order (model, title, tags,
/// negative_tags, vocal_gender, style_weight, weirdness_constraint, audio_weight) so that
/// combination names do not depend on how the TOML is laid out. Counted, not crossed.
fn matrix(raw: &Spanned<RawMatrix>, field: String, problems: &mut Problems) -> Matrix {
    let line = problems.line(raw.span());
    let matrix = raw.get_ref();
    let mut axes: Vec<Vec<(Box<str>, AxisValue)>> = Vec::new();
    let mut check = |raw: RawParams| AxisValue::of(params(&raw, &field, problems));
    let lists = [
        axis(&matrix.model, "model", &mut check, |p, v| p.model = Some(v)),
        axis(&matrix.title, "title", &mut check, |p, v| p.title = Some(v)),
        axis(&matrix.tags, "tags", &mut check, |p, v| p.tags = Some(v)),
        axis(
            &matrix.negative_tags,
            "negative_tags",
            &mut check,
            |p, v| p.negative_tags = Some(v),
        ),
        axis(&matrix.vocal_gender, "vocal_gender", &mut check, |p, v| {
            p.vocal_gender = Some(v)
        }),
        axis(&matrix.style_weight, "style_weight", &mut check, |p, v| {
            p.style_weight = Some(v)
        }),
        axis(
            &matrix.weirdness_constraint,
            "weirdness_constraint",
            &mut check,
            |p, v| p.weirdness_constraint = Some(v),
        ),
        axis(&matrix.audio_weight, "audio_weight", &mut check, |p, v| {
            p.audio_weight = Some(v)
        }),
    ];
    for axis in lists {
        match axis {
            Axis::Absent => {}
            Axis::Empty(key, span) => problems.push(
                span,
                &format!("{field}.{key}"),
                "a matrix list must not be empty",
            ),
            Axis::Values(values) => axes.push(values),
        }
    }
    let mut matrix = Matrix { field, line, axes };
    if matrix.axes.is_empty() {
        problems.push_at_line(line, &matrix.field, "the matrix lists no parameter");
    } else {
        let count = matrix.count();
        if count.is_none_or(|count| count > MAX_MATRIX_COMBINATIONS) {
            problems.push_at_line(
                line,
                &matrix.field,
                format!(
                    "the matrix has {} combinations, more than the {MAX_MATRIX_COMBINATIONS} allowed",
                    number(count)
                ),
            );
            matrix.axes.clear();
        }
    }
    matrix
}

impl Matrix {
    /// How many combinations it makes, from the lengths of its lists; `None` past
    /// `u64::MAX`.
    fn count(&self) -> Option<u64> {
        if self.axes.is_empty() {
            return Some(0);
        }
        self.axes
            .iter()
            .map(|axis| axis.len() as u64)
            .try_fold(1u64, u64::checked_mul)
    }

    /// How many combinations, for a matrix within [`MAX_MATRIX_COMBINATIONS`].
    fn len(&self) -> usize {
        self.count().unwrap_or(0) as usize
    }

    /// The combination at `index` (below [`Matrix::len`]), named by its slugged values
    /// joined by "_": the last list varies fastest, as when the lists are crossed in order.
    fn combination(&self, index: usize) -> (String, ParamLayer) {
        let mut picks = vec![0; self.axes.len()];
        let mut rest = index;
        for (pick, axis) in picks.iter_mut().zip(&self.axes).rev() {
            *pick = rest % axis.len();
            rest /= axis.len();
        }
        let mut name = String::new();
        let mut layer = ParamLayer::default();
        for (&pick, axis) in picks.iter().zip(&self.axes) {
            let (slug, value) = &axis[pick];
            if !name.is_empty() {
                name.push('_');
            }
            name.push_str(slug);
            value.apply(&mut layer);
        }
        (name, layer)
    }
}

enum Axis {
    Absent,
    Empty(&'static str, Range<usize>),
    /// Each value's slug, and the value as `check` made it.
    Values(Vec<(Box<str>, AxisValue)>),
}

/// A matrix list, each value `check`ed as it is reached in a parameter table holding just
/// that value (a table per value of a 100,000-value list is never held at once).
fn axis<T: Clone + std::fmt::Display>(
    list: &Option<Spanned<Vec<Spanned<T>>>>,
    key: &'static str,
    check: &mut impl FnMut(RawParams) -> AxisValue,
    set: impl Fn(&mut RawParams, Spanned<T>),
) -> Axis {
    match list {
        None => Axis::Absent,
        Some(list) if list.get_ref().is_empty() => Axis::Empty(key, list.span()),
        Some(list) => Axis::Values(
            list.get_ref()
                .iter()
                .map(|value| {
                    let mut params = RawParams::default();
                    set(&mut params, value.clone());
                    let slug = slug(&value.get_ref().to_string()).into_boxed_str();
                    (slug, check(params))
                })
                .collect(),
        ),
    }
}

/// Lowercase letters and digits kept, every other run of characters one "-".
pub(super) fn slug(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed = out.trim_matches('-');
    if trimmed.is_empty() {
        "empty".into()
    } else {
        trimmed.to_owned()
    }
}

fn params(raw: &RawParams, prefix: &str, problems: &mut Problems) -> ParamLayer {
    let key = |name: &str| format!("{prefix}.{name}");
    let mut layer = ParamLayer::default();
    if let Some(model) = &raw.model {
        layer.model = Model::parse(model.get_ref());
        if layer.model.is_none() {
            problems.push(
                model.span(),
                &key("model"),
                format!(
                    "unknown model {:?} (expected V4_5PLUS or V5)",
                    model.get_ref()
                ),
            );
        }
    }
    if let Some(gender) = &raw.vocal_gender {
        layer.vocal_gender = VocalGender::parse(gender.get_ref());
        if layer.vocal_gender.is_none() {
            problems.push(
                gender.span(),
                &key("vocal_gender"),
                format!(
                    "unknown vocal gender {:?} (expected m or f)",
                    gender.get_ref()
                ),
            );
        }
    }
    for (value, name, target) in [
        (&raw.style_weight, "style_weight", &mut layer.style_weight),
        (
            &raw.weirdness_constraint,
            "weirdness_constraint",
            &mut layer.weirdness_constraint,
        ),
        (&raw.audio_weight, "audio_weight", &mut layer.audio_weight),
    ] {
        if let Some(value) = value {
            match Weight::from_f64(*value.get_ref()) {
                Ok(weight) => *target = Some(weight),
                Err(message) => problems.push(value.span(), &key(name), message),
            }
        }
    }
    for (value, name, target) in [
        (&raw.tags, "tags", &mut layer.tags),
        (
            &raw.negative_tags,
            "negative_tags",
            &mut layer.negative_tags,
        ),
    ] {
        if let Some(value) = value {
            let chars = value.get_ref().chars().count();
            if chars > MAX_TAGS_CHARS {
                problems.push(
                    value.span(),
                    &key(name),
                    format!("{chars} characters, more than the provider's {MAX_TAGS_CHARS}"),
                );
            }
            *target = Some(value.get_ref().clone());
        }
    }
    if let Some(title) = &raw.title {
        for placeholder in placeholders(title.get_ref()) {
            if !TITLE_PLACEHOLDERS.contains(&placeholder) {
                problems.push(
                    title.span(),
                    &key("title"),
                    format!("unknown placeholder {{{placeholder}}} (known: {{stem}} {{variant}} {{take}})"),
                );
            }
        }
        layer.title = Some(Arc::new(TitleTemplate {
            text: title.get_ref().clone(),
            written: Some((problems.line(title.span()), key("title"))),
        }));
    }
    layer
}

/// The names between braces in a title template.
fn placeholders(template: &str) -> impl Iterator<Item = &str> {
    template
        .split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
}

/// A stem or variant name becomes a folder or file name: keep it to one safe segment.
pub(super) fn check_name(
    name: &Spanned<String>,
    field: &str,
    problems: &mut Problems,
) -> Option<String> {
    let text = name.get_ref();
    let problem = if text.trim().is_empty() {
        Some("must not be empty".to_owned())
    } else if text.starts_with('.')
        || text.contains(['/', '\\'])
        || text.chars().any(char::is_control)
    {
        Some(format!(
            "{text:?} cannot be a file name (no leading '.', '/', '\\' or control characters)"
        ))
    } else if text.chars().count() > 100 {
        Some("longer than 100 characters".to_owned())
    } else {
        None
    };
    match problem {
        Some(message) => {
            problems.push(name.span(), field, message);
            None
        }
        None => Some(text.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_file_safe_and_stable() {
        assert_eq!(slug("lofi, chill"), "lofi-chill");
        assert_eq!(slug("0.3"), "0-3");
        assert_eq!(slug("  Jazz!! "), "jazz");
        assert_eq!(slug(""), "empty");
    }

    /// Each parameter a list can set is kept as one value and set again as it was.
    #[test]
    fn a_list_value_sets_again_the_one_parameter_it_held() {
        let weight = Weight::from_f64(0.3).unwrap();
        let title = Arc::new(TitleTemplate {
            text: "{stem}".into(),
            written: Some((3, "stem[1].matrix.title".into())),
        });
        let layers = [
            ParamLayer {
                model: Some(Model::V5),
                ..ParamLayer::default()
            },
            ParamLayer {
                title: Some(title),
                ..ParamLayer::default()
            },
            ParamLayer {
                tags: Some("lofi".into()),
                ..ParamLayer::default()
            },
            ParamLayer {
                negative_tags: Some("drums".into()),
                ..ParamLayer::default()
            },
            ParamLayer {
                vocal_gender: Some(VocalGender::Female),
                ..ParamLayer::default()
            },
            ParamLayer {
                style_weight: Some(weight),
                ..ParamLayer::default()
            },
            ParamLayer {
                weirdness_constraint: Some(weight),
                ..ParamLayer::default()
            },
            ParamLayer {
                audio_weight: Some(weight),
                ..ParamLayer::default()
            },
            ParamLayer::default(),
        ];
        for layer in layers {
            let mut again = ParamLayer::default();
            AxisValue::of(layer.clone()).apply(&mut again);
            assert_eq!(format!("{again:?}"), format!("{layer:?}"));
        }
    }

    #[test]
    fn line_index_maps_offsets_to_lines() {
        let lines = LineIndex::new("a\nbb\n\nc");
        assert_eq!(lines.line(0), 1);
        assert_eq!(lines.line(2), 2);
        assert_eq!(lines.line(5), 3);
        assert_eq!(lines.line(6), 4);
    }
}
