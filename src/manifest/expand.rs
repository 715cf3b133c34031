//! Stem plans to the variants, built on demand: resolve inheritance, apply takes and title
//! placeholders, compute ids. [`check`] goes over every variant once, keeping only compact
//! keys, to catch what only shows after expansion (duplicate names, identical parameter
//! sets, titles that grow too long); [`Variants`] then builds any of them again by
//! position, so that a million variants are never held at once.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::Arc;

use super::validate::{
    ParamLayer, Problems, StemPlan, VariantSpec, DEFAULT_TITLE, MAX_TITLE_CHARS,
};
use crate::variant::{GenerationParams, Stem, Variant, VariantId, VariantSource, VariantTable};

/// The variants of a valid manifest, in manifest order: every (stem, spec, take), built
/// when asked for. Cloning it shares the plans.
#[derive(Clone, Debug)]
pub struct Variants {
    plans: Arc<[StemPlan]>,
    /// The position of each plan's first variant, and the count after the last one.
    starts: Arc<[usize]>,
}

impl Variants {
    /// The variants of `plans`: only for plans that [`check`] found no problem in.
    pub(super) fn new(plans: Vec<StemPlan>) -> Self {
        let mut starts = Vec::with_capacity(plans.len() + 1);
        let mut total = 0;
        starts.push(total);
        for plan in &plans {
            total += plan_len(plan);
            starts.push(total);
        }
        Variants {
            plans: plans.into(),
            starts: starts.into(),
        }
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.starts.last().copied().unwrap_or(0)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The variant at manifest position `index`, built anew.
    pub fn get(&self, index: usize) -> Option<Variant> {
        self.build_at(index, None)
    }

    /// Those at `positions` (manifest positions, in order; `None` for all), as a run's
    /// table builds them.
    pub fn source(&self, positions: Option<Vec<u32>>) -> Arc<dyn VariantSource> {
        Arc::new(Chosen {
            variants: self.clone(),
            positions,
        })
    }

    /// The variant at `index`, its id computed or, when known, given.
    fn build_at(&self, index: usize, id: Option<&VariantId>) -> Option<Variant> {
        if index >= self.len() {
            return None;
        }
        let at = self.starts.partition_point(|&start| start <= index) - 1;
        let plan = &self.plans[at];
        let takes = plan.stem.takes as usize;
        let offset = index - self.starts[at];
        let spec = plan.specs.spec(offset / takes);
        let template = template(&spec).ok()?;
        let take = (offset % takes) as u32 + 1;
        let title = title(&plan.stem, &spec, &template, take);
        Some(match id {
            Some(id) => with_id(&plan.stem, &spec, &template, take, title, id.clone()),
            None => build(&plan.stem, &spec, &template, take, title),
        })
    }

    /// Every variant in manifest order, each built as the iterator reaches it.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Variant> + '_ {
        (0..self.len()).map(|index| {
            self.get(index)
                .expect("a checked manifest builds each variant")
        })
    }

    /// The table of every variant: each built once here, to learn its id, then again
    /// only when asked for.
    pub fn table(&self) -> VariantTable {
        VariantTable::built(self.source(None), self.iter().map(|v| v.id))
    }

    /// All of them in one list: for the callers that need every variant at once.
    pub fn to_vec(&self) -> Vec<Variant> {
        self.iter().collect()
    }

    /// Each stem, in manifest order, with how many variants it has.
    pub fn stems(&self) -> impl Iterator<Item = (&Arc<Stem>, usize)> + '_ {
        self.plans.iter().map(|plan| (&plan.stem, plan_len(plan)))
    }
}

/// A run's variants among a manifest's: [`Variants::source`].
#[derive(Debug)]
struct Chosen {
    variants: Variants,
    positions: Option<Vec<u32>>,
}

impl VariantSource for Chosen {
    fn build(&self, index: usize, id: &VariantId) -> Variant {
        let position = match &self.positions {
            Some(positions) => positions[index] as usize,
            None => index,
        };
        self.variants
            .build_at(position, Some(id))
            .expect("a position of the manifest")
    }

    fn stem_at(&self, index: usize) -> Arc<Stem> {
        let position = match &self.positions {
            Some(positions) => positions[index] as usize,
            None => index,
        };
        let at = self
            .variants
            .starts
            .partition_point(|&start| start <= position)
            - 1;
        Arc::clone(&self.variants.plans[at].stem)
    }
}

/// The variants one plan makes: its specs times its takes.
fn plan_len(plan: &StemPlan) -> usize {
    plan.specs.len() * plan.stem.takes as usize
}

/// Builds every variant once and records what is wrong with them; keeps per variant only
/// its id's 64 bits (the id is 16 hex digits: the key is the id, not a hash of it, so no
/// collision can hide a duplicate) and its position, and builds a first owner again to
/// name it.
pub(super) fn check(plans: &[StemPlan], problems: &mut Problems) {
    let total: usize = plans.iter().map(plan_len).sum();
    let mut owners: HashMap<u64, u32> = HashMap::with_capacity(total);
    let mut position = 0usize;
    for plan in plans {
        let mut names = Names::<std::hash::RandomState>::default();
        let takes = plan.stem.takes as usize;
        for index in 0..plan.specs.len() {
            let first_of_spec = position;
            position += takes;
            let spec = plan.specs.spec(index);
            let earlier = |index: usize| {
                let spec = plan.specs.spec(index);
                (spec.name, spec.line)
            };
            if let Some(first) = names.first(&spec.name, spec.line, index, earlier) {
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
            let Ok(template) = template(&spec) else {
                report_missing(&spec, problems);
                continue;
            };
            for take in 1..=plan.stem.takes {
                let title = title(&plan.stem, &spec, &template, take);
                if !title_fits(&plan.stem, &spec, &title, problems) {
                    continue;
                }
                let variant = build(&plan.stem, &spec, &template, take, title);
                let this = first_of_spec + (take - 1) as usize;
                match owners.get(&id_key(&variant.id)) {
                    Some(&first) => {
                        let other = variant_at(plans, first as usize);
                        problems.push_at_line(
                            spec.line,
                            &spec.field,
                            format!(
                                "variant {:?} of stem {:?} sends exactly what variant {:?} of stem {:?} sends (hint: use takes to submit the same parameters again)",
                                variant.name, plan.stem.name, other.name, other.stem.name
                            ),
                        );
                    }
                    None => {
                        owners.insert(id_key(&variant.id), this as u32);
                    }
                }
            }
        }
    }
}

/// The variant at `position` among `plans`, for naming the first owner of an id: that
/// owner was built without a problem, so it builds again.
fn variant_at(plans: &[StemPlan], position: usize) -> Variant {
    let mut offset = position;
    for plan in plans {
        let len = plan_len(plan);
        if offset < len {
            let takes = plan.stem.takes as usize;
            let spec = plan.specs.spec(offset / takes);
            let template = template(&spec).expect("the first owner resolved");
            let take = (offset % takes) as u32 + 1;
            let title = title(&plan.stem, &spec, &template, take);
            return build(&plan.stem, &spec, &template, take, title);
        }
        offset -= len;
    }
    unreachable!("a position recorded while checking the same plans")
}

/// A computed id's 64 bits. Every id of a manifest is computed, so this is its value
/// ([`VariantId::bits`]); any other text (none is made here) would fall back to a hash.
fn id_key(id: &VariantId) -> u64 {
    id.bits()
        .unwrap_or_else(|| BuildHasherDefault::<DefaultHasher>::default().hash_one(id.as_str()))
}

/// The names seen among one plan's specs, by a 64-bit hash and the spec's index (a
/// million names are not held as text); the rare name whose hash another name already
/// holds is kept whole, so that a collision never hides a duplicate.
#[derive(Default)]
struct Names<S> {
    hasher: S,
    by_hash: HashMap<u64, usize>,
    /// Names whose hash was taken by another name, with their line.
    colliding: HashMap<String, usize>,
}

impl<S: BuildHasher> Names<S> {
    /// The line of an earlier spec named `name`; `None` (and this one recorded) when it
    /// is the first. `earlier` gives the name and line of the spec at an index seen before.
    fn first(
        &mut self,
        name: &str,
        line: usize,
        index: usize,
        earlier: impl Fn(usize) -> (String, usize),
    ) -> Option<usize> {
        let hash = self.hasher.hash_one(name);
        let Some(&seen) = self.by_hash.get(&hash) else {
            self.by_hash.insert(hash, index);
            return None;
        };
        let (seen_name, seen_line) = earlier(seen);
        if seen_name == name {
            return Some(seen_line);
        }
        match self.colliding.get(name) {
            Some(&first) => Some(first),
            None => {
                self.colliding.insert(name.to_owned(), line);
                None
            }
        }
    }
}

/// The parameters with the title still a template; the keys that no layer sets when
/// some required one is missing.
fn template(spec: &VariantSpec) -> Result<GenerationParams, Vec<&'static str>> {
    let layer: &ParamLayer = &spec.layer;
    let mut missing = Vec::new();
    if layer.tags.is_none() {
        missing.push("tags");
    }
    if layer.negative_tags.is_none() {
        missing.push("negative_tags");
    }
    match (&layer.title, &layer.tags, &layer.negative_tags) {
        (Some(title), Some(tags), Some(negative_tags)) => Ok(GenerationParams {
            model: layer.model.unwrap_or_default(),
            title: title.text.clone(),
            tags: tags.clone(),
            negative_tags: negative_tags.clone(),
            vocal_gender: layer.vocal_gender,
            style_weight: layer.style_weight,
            weirdness_constraint: layer.weirdness_constraint,
            audio_weight: layer.audio_weight,
        }),
        _ => Err(missing),
    }
}

fn report_missing(spec: &VariantSpec, problems: &mut Problems) {
    let missing = match template(spec) {
        Err(missing) => missing,
        Ok(_) => return,
    };
    for key in missing {
        problems.push_at_line(
            spec.line,
            &format!("{}.{key}", spec.field),
            format!(
                "{key} is required and set neither here, in its stem nor in [defaults] (an empty string is allowed)"
            ),
        );
    }
}

/// The title with its placeholders filled in.
fn title(stem: &Stem, spec: &VariantSpec, template: &GenerationParams, take: u32) -> String {
    template
        .title
        .replace("{stem}", &stem.name)
        .replace("{variant}", &spec.name)
        .replace("{take}", &take.to_string())
}

/// Whether `title` is within the provider's length; a problem where it was written if not.
fn title_fits(stem: &Stem, spec: &VariantSpec, title: &str, problems: &mut Problems) -> bool {
    let chars = title.chars().count();
    if chars <= MAX_TITLE_CHARS {
        return true;
    }
    let Some(written) = spec.layer.title.as_ref().map(|t| &t.written) else {
        return false;
    };
    let (line, field, hint) = match written {
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
    false
}

fn build(
    stem: &Arc<Stem>,
    spec: &VariantSpec,
    template: &GenerationParams,
    take: u32,
    title: String,
) -> Variant {
    let mut variant = with_id(stem, spec, template, take, title, VariantId::from_bits(0));
    variant.id = VariantId::compute(&stem.source, &variant.params, take);
    variant
}

/// [`build`], with the id already known.
fn with_id(
    stem: &Arc<Stem>,
    spec: &VariantSpec,
    template: &GenerationParams,
    take: u32,
    title: String,
    id: VariantId,
) -> Variant {
    Variant {
        id,
        stem: Arc::clone(stem),
        name: spec.name.clone(),
        take,
        params: GenerationParams {
            title,
            ..template.clone()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name hashes alike: each lookup is a collision.
    #[derive(Default)]
    struct Colliding;

    impl BuildHasher for Colliding {
        type Hasher = Zero;
        fn build_hasher(&self) -> Zero {
            Zero
        }
    }

    struct Zero;

    impl std::hash::Hasher for Zero {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, _: &[u8]) {}
    }

    /// Names on lines 10, 11, ...: a duplicate is found whether its hash is shared with
    /// its twin only or with every other name too.
    fn duplicates<S: BuildHasher + Default>(names: &[&str]) -> Vec<(usize, usize)> {
        let mut seen = Names::<S>::default();
        let earlier = |index: usize| (names[index].to_owned(), 10 + index);
        names
            .iter()
            .enumerate()
            .filter_map(|(i, name)| {
                let first = seen.first(name, 10 + i, i, earlier)?;
                Some((10 + i, first))
            })
            .collect()
    }

    #[test]
    fn a_hash_collision_neither_hides_nor_invents_a_duplicate() {
        let names = ["a", "b", "a", "c", "b", "c", "d"];
        let expected = vec![(12, 10), (14, 11), (15, 13)];
        assert_eq!(duplicates::<std::hash::RandomState>(&names), expected);
        assert_eq!(duplicates::<Colliding>(&names), expected);
        assert!(duplicates::<Colliding>(&["x", "y", "z"]).is_empty());
    }

    #[test]
    fn a_computed_id_is_its_own_key() {
        let id = |text: &str| serde_json::from_value::<VariantId>(text.into()).unwrap();
        assert_eq!(id_key(&id("00000000000000ff")), 255);
        assert_eq!(id_key(&id("ffffffffffffffff")), u64::MAX);
        assert_eq!(id_key(&id("not hex")), id_key(&id("not hex")));
    }
}
