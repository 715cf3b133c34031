//! The serde mirror of the manifest's TOML.
//!
//! Nothing here interprets a value: every leaf is kept as written, with its byte span, so
//! that `validate` can name the line of any problem. Unknown keys are rejected by serde
//! (`deny_unknown_fields`) before validation starts.

use serde::Deserialize;
use toml::Spanned;

/// The whole manifest file as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawManifest {
    pub api: Option<RawApi>,
    pub run: Option<RawRun>,
    pub defaults: Option<RawParams>,
    pub upload: Option<RawUpload>,
    pub limits: Option<RawLimits>,
    #[serde(default)]
    pub stem: Vec<Spanned<RawStem>>,
}

/// `[api]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApi {
    pub base_url: Option<Spanned<String>>,
    pub key_env: Option<Spanned<String>>,
}

/// `[run]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRun {
    pub output_dir: Option<Spanned<String>>,
    pub concurrency: Option<Spanned<i64>>,
    pub submit_rate: Option<Spanned<String>>,
    pub poll_rate: Option<Spanned<String>>,
    pub upload_rate: Option<Spanned<String>>,
    pub burst: Option<Spanned<i64>>,
    pub download_concurrency: Option<Spanned<i64>>,
    pub max_attempts: Option<Spanned<i64>>,
    pub max_new_submits: Option<Spanned<i64>>,
    pub task_timeout: Option<Spanned<String>>,
    pub poll_interval: Option<Spanned<String>>,
    pub poll_interval_max: Option<Spanned<String>>,
    pub deadline: Option<Spanned<String>>,
    pub callback_url: Option<Spanned<String>>,
    pub download_covers: Option<Spanned<bool>>,
}

/// `[upload]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpload {
    pub mode: Option<Spanned<String>>,
    pub public_base_url: Option<Spanned<String>>,
    pub bucket: Option<Spanned<String>>,
    pub prefix: Option<Spanned<String>>,
    pub endpoint: Option<Spanned<String>>,
    pub region: Option<Spanned<String>>,
    pub url_expiry: Option<Spanned<String>>,
}

/// `[limits]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub redis_url: Option<Spanned<String>>,
    pub share: Option<Spanned<String>>,
}

/// Declares a struct holding the generation parameters plus the given extra fields, so the
/// three places that accept them (`[defaults]`, a stem, a variant) cannot drift apart.
macro_rules! with_generation_params {
    ($(#[$meta:meta])* struct $name:ident { $($field:ident : $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct $name {
            $(pub $field: $ty,)*
            pub model: Option<Spanned<String>>,
            pub title: Option<Spanned<String>>,
            pub tags: Option<Spanned<String>>,
            pub negative_tags: Option<Spanned<String>>,
            pub vocal_gender: Option<Spanned<String>>,
            pub style_weight: Option<Spanned<f64>>,
            pub weirdness_constraint: Option<Spanned<f64>>,
            pub audio_weight: Option<Spanned<f64>>,
        }

        impl $name {
            /// The generation parameters of this table, without its other keys.
            pub(crate) fn params(&self) -> RawParams {
                RawParams {
                    model: self.model.clone(),
                    title: self.title.clone(),
                    tags: self.tags.clone(),
                    negative_tags: self.negative_tags.clone(),
                    vocal_gender: self.vocal_gender.clone(),
                    style_weight: self.style_weight.clone(),
                    weirdness_constraint: self.weirdness_constraint.clone(),
                    audio_weight: self.audio_weight.clone(),
                }
            }
        }
    };
}

with_generation_params! {
    /// `[defaults]`, and the parameter part of a stem or variant.
    struct RawParams {}
}

with_generation_params! {
    /// One `[[stem]]`.
    struct RawStem {
        name: Option<Spanned<String>>,
        url: Option<Spanned<String>>,
        path: Option<Spanned<String>>,
        glob: Option<Spanned<String>>,
        takes: Option<Spanned<i64>>,
        variant: Option<Vec<Spanned<RawVariant>>>,
        matrix: Option<Spanned<RawMatrix>>,
    }
}

with_generation_params! {
    /// One `[[stem.variant]]`.
    struct RawVariant {
        name: Option<Spanned<String>>,
    }
}

/// `[stem.matrix]`: every generation parameter, as a list of values.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMatrix {
    pub model: Option<Spanned<Vec<Spanned<String>>>>,
    pub title: Option<Spanned<Vec<Spanned<String>>>>,
    pub tags: Option<Spanned<Vec<Spanned<String>>>>,
    pub negative_tags: Option<Spanned<Vec<Spanned<String>>>>,
    pub vocal_gender: Option<Spanned<Vec<Spanned<String>>>>,
    pub style_weight: Option<Spanned<Vec<Spanned<f64>>>>,
    pub weirdness_constraint: Option<Spanned<Vec<Spanned<f64>>>>,
    pub audio_weight: Option<Spanned<Vec<Spanned<f64>>>>,
}
