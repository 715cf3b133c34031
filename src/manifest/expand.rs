//! Stem plans to the flat variant list: resolve inheritance, apply takes and title
//! placeholders, compute ids, and catch what only shows after expansion (duplicate names,
//! identical parameter sets, titles that grow too long).

use std::collections::HashMap;
use std::sync::Arc;

use super::validate::{
    ParamLayer, Problems, StemPlan, VariantSpec, DEFAULT_TITLE, MAX_TITLE_CHARS,
};
use crate::variant::{GenerationParams, Stem, Variant, VariantId};

pub(super) fn expand(stems: &[StemPlan], problems: &mut Problems) -> Vec<Variant> {
    let capacity = stems
        .iter()
        .map(|plan| plan.specs.len() * plan.stem.takes as usize)
        .sum();
    let mut variants = Vec::with_capacity(capacity);
    let mut owners: HashMap<VariantId, usize> = HashMap::with_capacity(capacity);
    for plan in stems {
        let mut names: HashMap<&str, usize> = HashMap::new();
        for spec in &plan.specs {
            if let Some(first) = names.insert(&spec.name, spec.line) {
                problems.push_at_line(
                    spec.line,
                    &format!("{}.name", spec.field),
                    format!(
                        "stem {:?} has two variants named {:?} (the other is on line {first})",
                        plan.stem.name, spec.name
                    ),
                );
                continue;
            }
            let Some(template) = resolve(&spec.layer, spec, problems) else {
                continue;
            };
            for take in 1..=plan.stem.takes {
                let Some(variant) = build(&plan.stem, spec, &template, take, problems) else {
                    continue;
                };
                if let Some(&first) = owners.get(&variant.id) {
                    let other: &Variant = &variants[first];
                    problems.push_at_line(
                        spec.line,
                        &spec.field,
                        format!(
                            "variant {:?} of stem {:?} sends exactly what variant {:?} of stem {:?} sends (hint: use takes to submit the same parameters again)",
                            variant.name, plan.stem.name, other.name, other.stem.name
                        ),
                    );
                    continue;
                }
                owners.insert(variant.id.clone(), variants.len());
                variants.push(variant);
            }
        }
    }
    variants
}

/// The parameters with the title still a template.
fn resolve(
    layer: &ParamLayer,
    spec: &VariantSpec,
    problems: &mut Problems,
) -> Option<GenerationParams> {
    let mut missing = Vec::new();
    if layer.tags.is_none() {
        missing.push("tags");
    }
    if layer.negative_tags.is_none() {
        missing.push("negative_tags");
    }
    for key in &missing {
        problems.push_at_line(
            spec.line,
            &format!("{}.{key}", spec.field),
            format!(
                "{key} is required and set neither here, in its stem nor in [defaults] (an empty string is allowed)"
            ),
        );
    }
    if !missing.is_empty() {
        return None;
    }
    Some(GenerationParams {
        model: layer.model.unwrap_or_default(),
        title: layer.title.as_ref()?.text.clone(),
        tags: layer.tags.clone()?,
        negative_tags: layer.negative_tags.clone()?,
        vocal_gender: layer.vocal_gender,
        style_weight: layer.style_weight,
        weirdness_constraint: layer.weirdness_constraint,
        audio_weight: layer.audio_weight,
    })
}

fn build(
    stem: &Arc<Stem>,
    spec: &VariantSpec,
    template: &GenerationParams,
    take: u32,
    problems: &mut Problems,
) -> Option<Variant> {
    let title = template
        .title
        .replace("{stem}", &stem.name)
        .replace("{variant}", &spec.name)
        .replace("{take}", &take.to_string());
    let chars = title.chars().count();
    if chars > MAX_TITLE_CHARS {
        let (line, field, hint) = match &spec.layer.title.as_ref()?.written {
            Some((line, field)) => (*line, field.as_str(), String::new()),
            None => (
                spec.line,
                spec.field.as_str(),
                format!(" (the default title {DEFAULT_TITLE:?}; hint: set a shorter title)"),
            ),
        };
        problems.push_at_line(
            line,
            field,
            format!(
                "the title of stem {:?} variant {:?} is {chars} characters, more than the provider's {MAX_TITLE_CHARS}: {title:?}{hint}",
                stem.name, spec.name
            ),
        );
        return None;
    }
    let params = GenerationParams {
        title,
        ..template.clone()
    };
    Some(Variant {
        id: VariantId::compute(&stem.source, &params, take),
        stem: Arc::clone(stem),
        name: spec.name.clone(),
        take,
        params,
    })
}
