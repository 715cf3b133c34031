//! Raw TOML to typed settings and parameter layers, collecting every problem with the
//! line and the key it concerns. Pure: the caller hands in the parsed text.

use std::ops::Range;
use std::sync::Arc;

use toml::Spanned;

use super::raw::{RawManifest, RawMatrix, RawParams, RawStem, RawVariant};
use super::settings::{self, ApiSettings, RunSettings, UploadMode, UploadSettings};
use super::sources::{self, Files};
use super::Problem;
use crate::variant::{LocalStem, Model, Stem, StemSource, VocalGender, Weight};

/// Longest title the provider accepts (V4_5PLUS and V5).
pub(super) const MAX_TITLE_CHARS: usize = 100;
/// Longest tags / negative tags the provider accepts.
const MAX_TAGS_CHARS: usize = 1000;
/// Most takes of one stem: a guard against a typo that would bill thousands of tasks.
const MAX_TAKES: i64 = 1000;
/// Most variants one matrix may produce.
const MAX_MATRIX_COMBINATIONS: usize = 1_000_000;
/// The placeholders a title may use.
const TITLE_PLACEHOLDERS: [&str; 3] = ["stem", "variant", "take"];

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

    /// A TOML syntax or shape error (unknown key, wrong type) as a problem.
    pub(crate) fn toml_error(&self, err: &toml::de::Error) -> Problem {
        let message = err.message().trim().to_owned();
        // The toml crate names an unknown key in its message; the field we can name
        // ourselves is the one the error's span points at.
        let field = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
            .unwrap_or("toml")
            .to_owned();
        Problem {
            line: err.span().map_or(1, |span| self.line(span.start)),
            field,
            message,
        }
    }
}

/// The problems found so far.
pub(crate) struct Problems<'a> {
    lines: &'a LineIndex,
    list: Vec<Problem>,
}

impl<'a> Problems<'a> {
    pub(crate) fn new(lines: &'a LineIndex) -> Self {
        Problems {
            lines,
            list: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, span: Range<usize>, field: &str, message: impl Into<String>) {
        let line = self.lines.line(span.start);
        self.push_at_line(line, field, message);
    }

    pub(crate) fn push_at_line(&mut self, line: usize, field: &str, message: impl Into<String>) {
        self.list.push(Problem {
            line,
            field: field.to_owned(),
            message: message.into(),
        });
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
    pub line: usize,
    pub field: String,
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

/// A stem with its variant specs.
#[derive(Debug)]
pub(super) struct StemPlan {
    pub stem: Arc<Stem>,
    pub field: String,
    pub line: usize,
    pub specs: Vec<VariantSpec>,
}

/// Everything validation produces.
pub(super) struct Validated {
    pub api: ApiSettings,
    pub run: RunSettings,
    pub upload: UploadSettings,
    pub stems: Vec<StemPlan>,
}

pub(super) fn validate(raw: &RawManifest, files: &Files, problems: &mut Problems) -> Validated {
    let defaults = raw
        .defaults
        .as_ref()
        .map(|d| params(&d.params(), "defaults", problems))
        .unwrap_or_default();
    if raw.stem.is_empty() {
        problems.push_at_line(1, "stem", "the manifest lists no [[stem]]");
    }
    let stems = raw
        .stem
        .iter()
        .enumerate()
        .flat_map(|(i, stem)| self::stem(stem, i + 1, &defaults, files, problems))
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
                        path.display()
                    ),
                );
            }
        }
    }
    Validated {
        api: settings::api(raw.api.as_ref(), problems),
        run: settings::run(raw.run.as_ref(), problems),
        upload,
        stems,
    }
}

/// One raw stem to its plans: one for a url or a path, one per matching file for a glob.
fn stem(
    raw: &Spanned<RawStem>,
    index: usize,
    defaults: &ParamLayer,
    files: &Files,
    problems: &mut Problems,
) -> Vec<StemPlan> {
    let field = format!("stem[{index}]");
    let line = problems.line(raw.span());
    let stem = raw.get_ref();
    let Some(sources) = sources::sources(stem, &field, line, files, problems) else {
        return Vec::new();
    };
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
    let stem_layer = defaults.overlay(&params(&stem.params(), &field, problems));
    let specs: Vec<VariantSpec> = variant_specs(stem, &field, line, problems)
        .into_iter()
        .map(|spec| VariantSpec {
            layer: stem_layer.overlay(&spec.layer),
            ..spec
        })
        .collect();
    sources
        .into_iter()
        .map(|(name, source)| StemPlan {
            stem: Arc::new(Stem {
                name,
                source,
                takes,
            }),
            field: field.clone(),
            line,
            specs: specs.clone(),
        })
        .collect()
}

/// The listed variants, the matrix combinations, or each listed variant crossed with each
/// combination; one variant named "default" when there are neither.
fn variant_specs(
    stem: &RawStem,
    stem_field: &str,
    stem_line: usize,
    problems: &mut Problems,
) -> Vec<VariantSpec> {
    let listed: Vec<VariantSpec> = stem
        .variant
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, v)| {
            listed_variant(v, &format!("{stem_field}.variant[{}]", i + 1), problems)
        })
        .collect();
    let Some(matrix) = &stem.matrix else {
        if stem.variant.is_none() {
            return vec![VariantSpec {
                name: "default".into(),
                line: stem_line,
                field: stem_field.to_owned(),
                layer: ParamLayer::default(),
            }];
        }
        return listed;
    };
    let matrix_field = format!("{stem_field}.matrix");
    let matrix_line = problems.line(matrix.span());
    let combos = combinations(matrix.get_ref(), &matrix_field, matrix_line, problems);
    if stem.variant.is_none() {
        return combos
            .into_iter()
            .map(|(name, layer)| VariantSpec {
                name,
                line: matrix_line,
                field: matrix_field.clone(),
                layer,
            })
            .collect();
    }
    listed
        .iter()
        .flat_map(|variant| {
            combos.iter().map(move |(name, layer)| VariantSpec {
                name: format!("{}_{name}", variant.name),
                line: variant.line,
                field: variant.field.clone(),
                layer: variant.layer.overlay(layer),
            })
        })
        .collect()
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

/// Every combination of the matrix's lists, named by its slugged values joined by "_", in
/// a fixed key order (model, title, tags, negative_tags, vocal_gender, style_weight,
/// weirdness_constraint, audio_weight) so names do not depend on how the TOML is laid out.
fn combinations(
    matrix: &RawMatrix,
    field: &str,
    line: usize,
    problems: &mut Problems,
) -> Vec<(String, ParamLayer)> {
    let axes: Vec<Vec<(String, RawParams)>> = [
        axis(&matrix.model, "model", |p, v| p.model = Some(v)),
        axis(&matrix.title, "title", |p, v| p.title = Some(v)),
        axis(&matrix.tags, "tags", |p, v| p.tags = Some(v)),
        axis(&matrix.negative_tags, "negative_tags", |p, v| {
            p.negative_tags = Some(v)
        }),
        axis(&matrix.vocal_gender, "vocal_gender", |p, v| {
            p.vocal_gender = Some(v)
        }),
        axis(&matrix.style_weight, "style_weight", |p, v| {
            p.style_weight = Some(v)
        }),
        axis(
            &matrix.weirdness_constraint,
            "weirdness_constraint",
            |p, v| p.weirdness_constraint = Some(v),
        ),
        axis(&matrix.audio_weight, "audio_weight", |p, v| {
            p.audio_weight = Some(v)
        }),
    ]
    .into_iter()
    .filter_map(|axis| match axis {
        Axis::Absent => None,
        Axis::Empty(key, span) => {
            problems.push(
                span,
                &format!("{field}.{key}"),
                "a matrix list must not be empty",
            );
            None
        }
        Axis::Values(values) => Some(values),
    })
    .collect();
    if axes.is_empty() {
        problems.push_at_line(line, field, "the matrix lists no parameter");
        return Vec::new();
    }
    let total = axes
        .iter()
        .map(Vec::len)
        .try_fold(1usize, usize::checked_mul);
    if total.is_none_or(|total| total > MAX_MATRIX_COMBINATIONS) {
        problems.push_at_line(
            line,
            field,
            format!("the matrix has more than {MAX_MATRIX_COMBINATIONS} combinations"),
        );
        return Vec::new();
    }
    let axes: Vec<Vec<(String, ParamLayer)>> = axes
        .into_iter()
        .map(|values| {
            values
                .into_iter()
                .map(|(slug, raw)| (slug, params(&raw, field, problems)))
                .collect()
        })
        .collect();
    axes.iter().fold(
        vec![(String::new(), ParamLayer::default())],
        |combos, axis| {
            combos
                .iter()
                .flat_map(|(name, layer)| {
                    axis.iter().map(move |(slug, value)| {
                        let name = if name.is_empty() {
                            slug.clone()
                        } else {
                            format!("{name}_{slug}")
                        };
                        (name, layer.overlay(value))
                    })
                })
                .collect()
        },
    )
}

enum Axis {
    Absent,
    Empty(&'static str, Range<usize>),
    /// Each value's slug, and a parameter table holding just that value.
    Values(Vec<(String, RawParams)>),
}

fn axis<T: Clone + std::fmt::Display>(
    list: &Option<Spanned<Vec<Spanned<T>>>>,
    key: &'static str,
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
                    (slug(&value.get_ref().to_string()), params)
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
            line: problems.line(title.span()),
            field: key("title"),
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

    #[test]
    fn line_index_maps_offsets_to_lines() {
        let lines = LineIndex::new("a\nbb\n\nc");
        assert_eq!(lines.line(0), 1);
        assert_eq!(lines.line(2), 2);
        assert_eq!(lines.line(5), 3);
        assert_eq!(lines.line(6), 4);
    }
}
