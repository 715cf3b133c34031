//! `[api]`, `[run]` and `[upload]`: the run's knobs, validated, with SPEC.md's defaults.

use std::num::NonZeroU32;
use std::time::Duration;

use toml::Spanned;

use super::raw::{RawApi, RawRun, RawUpload};
use super::validate::Problems;

/// `[api]`, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiSettings {
    /// `api.base_url`, if set.
    pub base_url: Option<String>,
    /// The environment variable holding the key.
    pub key_env: String,
}

/// A rate limit: `count` calls per `per`, evenly spaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Calls per period.
    pub count: NonZeroU32,
    /// The period.
    pub per: Duration,
}

impl Rate {
    /// Parses `N/s`, `N/min` or `N/h` (also `sec`, `second`, `m`, `minute`, `hour`).
    pub fn parse(text: &str) -> Result<Rate, String> {
        let expected =
            || format!("{text:?} is not a rate (expected e.g. \"20/min\", \"2/s\", \"100/h\")");
        let (count, unit) = text.split_once('/').ok_or_else(expected)?;
        let count: u32 = count.trim().parse().map_err(|_| expected())?;
        let count = NonZeroU32::new(count)
            .ok_or_else(|| format!("{text:?}: the rate must be above zero"))?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(expected()),
        };
        Ok(Rate { count, per })
    }

    /// The spacing between two calls.
    pub fn period(&self) -> Duration {
        self.per / self.count.get()
    }

    /// Calls per second.
    pub fn per_second(&self) -> f64 {
        f64::from(self.count.get()) / self.per.as_secs_f64()
    }
}

/// `[run]`, validated, defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSettings {
    /// The output folder template (`{date}` allowed), relative to the manifest's folder.
    /// Default `out`: one fixed folder, so each night adds only what is new.
    pub output_dir: String,
    /// Variants submitted and not yet ended, at most.
    pub concurrency: usize,
    /// Submit calls.
    pub submit_rate: Rate,
    /// Detail queries.
    pub poll_rate: Rate,
    /// Upload calls.
    pub upload_rate: Rate,
    /// Calls that may go out back to back before pacing applies.
    pub burst: NonZeroU32,
    /// Downloads at once.
    pub download_concurrency: usize,
    /// Tries of one HTTP call on retryable errors.
    pub max_attempts: u32,
    /// The most new tasks one run may submit (at least 1, default 1000): a run that would
    /// submit more sends nothing and exits 2, naming both numbers. A guard against a typo
    /// that multiplies a matrix.
    pub max_new_submits: u64,
    /// A task not ended by then, from its submit, ends as `timeout`.
    pub task_timeout: Duration,
    /// The first poll comes this long after the submit.
    pub poll_interval: Duration,
    /// Polls are never further apart than this.
    pub poll_interval_max: Duration,
    /// After this, nothing new is submitted.
    pub deadline: Option<Duration>,
    /// Passed to the provider as is.
    pub callback_url: Option<String>,
    /// Also fetch each track's cover image.
    pub download_covers: bool,
}

impl Default for RunSettings {
    fn default() -> Self {
        let rate = |text| Rate::parse(text).expect("built-in rates parse");
        RunSettings {
            output_dir: "out".into(),
            concurrency: 8,
            submit_rate: rate("20/min"),
            poll_rate: rate("120/min"),
            upload_rate: rate("5/min"),
            burst: NonZeroU32::MIN,
            download_concurrency: 4,
            max_attempts: 6,
            max_new_submits: 1000,
            task_timeout: Duration::from_secs(30 * 60),
            poll_interval: Duration::from_secs(15),
            poll_interval_max: Duration::from_secs(60),
            deadline: None,
            callback_url: None,
            download_covers: false,
        }
    }
}

/// How local stems get a URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UploadMode {
    /// Through the provider's upload endpoint.
    Api,
    /// `public_base_url` + the file's path relative to the manifest's folder.
    BaseUrl(String),
    /// The user's own S3-compatible bucket, handed over as presigned GET URLs.
    S3(S3Settings),
}

/// `upload.mode = "s3"`: where the stems go and how long their URLs live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Settings {
    /// The bucket.
    pub bucket: String,
    /// Put before every key (may be empty).
    pub prefix: String,
    /// The service's URL, for anything but AWS.
    pub endpoint: Option<String>,
    /// The region; AWS's default when absent.
    pub region: Option<String>,
    /// How long each presigned URL is valid.
    pub url_expiry: Duration,
    /// Where `url_expiry` was set (or the mode, for the default): a check against
    /// `task_timeout` names this line.
    pub(super) expiry_span: std::ops::Range<usize>,
}

/// The default lifetime of a presigned URL.
pub const DEFAULT_URL_EXPIRY: Duration = Duration::from_secs(24 * 3600);
/// The longest a SigV4 presigned URL may live (AWS refuses more).
pub const MAX_URL_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// The `[upload]` keys that only mean something to `mode = "s3"`.
const S3_KEYS: [&str; 5] = ["bucket", "prefix", "endpoint", "region", "url_expiry"];

/// `[upload]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadSettings {
    /// The mode.
    pub mode: UploadMode,
}

pub(super) fn api(raw: Option<&RawApi>, problems: &mut Problems) -> ApiSettings {
    let raw = raw.cloned_default();
    let base_url = raw.base_url.as_ref().and_then(|url| {
        check_http_url(url, "api.base_url", false, problems).then(|| url.get_ref().clone())
    });
    let key_env = match &raw.key_env {
        Some(name) if name.get_ref().trim().is_empty() => {
            problems.push(
                name.span(),
                "api.key_env",
                "must name an environment variable",
            );
            "VIDGO_API_KEY".into()
        }
        Some(name) => name.get_ref().clone(),
        None => "VIDGO_API_KEY".into(),
    };
    ApiSettings { base_url, key_env }
}

pub(super) fn run(raw: Option<&RawRun>, problems: &mut Problems) -> RunSettings {
    let raw = raw.cloned_default();
    let mut run = RunSettings::default();
    if let Some(dir) = &raw.output_dir {
        if dir.get_ref().trim().is_empty() {
            problems.push(dir.span(), "run.output_dir", "must not be empty");
        } else {
            run.output_dir = dir.get_ref().clone();
        }
    }
    let mut count = |value: &Option<Spanned<i64>>, key: &str, max: i64, target: &mut usize| {
        if let Some(value) = value {
            match *value.get_ref() {
                n if (1..=max).contains(&n) => *target = n as usize,
                n => problems.push(value.span(), key, format!("{n} is outside 1..{max}")),
            }
        }
    };
    count(
        &raw.concurrency,
        "run.concurrency",
        100_000,
        &mut run.concurrency,
    );
    count(
        &raw.download_concurrency,
        "run.download_concurrency",
        1_000,
        &mut run.download_concurrency,
    );
    let mut attempts = run.max_attempts as usize;
    count(&raw.max_attempts, "run.max_attempts", 100, &mut attempts);
    run.max_attempts = attempts as u32;
    let mut burst = run.burst.get() as usize;
    count(&raw.burst, "run.burst", 1_000, &mut burst);
    run.burst = NonZeroU32::new(burst as u32).unwrap_or(NonZeroU32::MIN);
    if let Some(value) = &raw.max_new_submits {
        match u64::try_from(*value.get_ref()) {
            Ok(n) if n >= 1 => run.max_new_submits = n,
            _ => problems.push(
                value.span(),
                "run.max_new_submits",
                format!("must be at least 1, not {}", value.get_ref()),
            ),
        }
    }

    for (value, key, target) in [
        (&raw.submit_rate, "run.submit_rate", &mut run.submit_rate),
        (&raw.poll_rate, "run.poll_rate", &mut run.poll_rate),
        (&raw.upload_rate, "run.upload_rate", &mut run.upload_rate),
    ] {
        if let Some(value) = value {
            match Rate::parse(value.get_ref()) {
                Ok(rate) => *target = rate,
                Err(message) => problems.push(value.span(), key, message),
            }
        }
    }
    for (value, key, target) in [
        (&raw.task_timeout, "run.task_timeout", &mut run.task_timeout),
        (
            &raw.poll_interval,
            "run.poll_interval",
            &mut run.poll_interval,
        ),
        (
            &raw.poll_interval_max,
            "run.poll_interval_max",
            &mut run.poll_interval_max,
        ),
    ] {
        if let Some(parsed) = value.as_ref().and_then(|v| duration(v, key, problems)) {
            *target = parsed;
        }
    }
    run.deadline = raw
        .deadline
        .as_ref()
        .and_then(|v| duration(v, "run.deadline", problems));
    if run.poll_interval > run.poll_interval_max {
        let span = raw
            .poll_interval_max
            .as_ref()
            .or(raw.poll_interval.as_ref())
            .map(|v| v.span());
        problems.push(
            span.unwrap_or(0..0),
            "run.poll_interval_max",
            format!(
                "poll_interval_max ({}) is shorter than poll_interval ({})",
                humantime::format_duration(run.poll_interval_max),
                humantime::format_duration(run.poll_interval)
            ),
        );
    }
    if let Some(url) = &raw.callback_url {
        if check_http_url(url, "run.callback_url", true, problems) {
            run.callback_url = Some(url.get_ref().clone());
        }
    }
    run.download_covers = raw.download_covers.as_ref().is_some_and(|v| *v.get_ref());
    run
}

pub(super) fn upload(raw: Option<&RawUpload>, problems: &mut Problems) -> UploadSettings {
    let raw = raw.cloned_default();
    let mode = match raw.mode.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
        None | Some(("api", _)) => UploadMode::Api,
        Some(("base_url", span)) => match &raw.public_base_url {
            Some(url) if check_http_url(url, "upload.public_base_url", false, problems) => {
                UploadMode::BaseUrl(url.get_ref().clone())
            }
            Some(_) => UploadMode::Api,
            None => {
                problems.push(
                    span,
                    "upload.public_base_url",
                    "mode \"base_url\" needs public_base_url",
                );
                UploadMode::Api
            }
        },
        Some(("s3", span)) => s3(&raw, span, problems).map_or(UploadMode::Api, UploadMode::S3),
        Some((other, span)) => {
            problems.push(
                span,
                "upload.mode",
                format!("unknown mode {other:?} (expected \"api\", \"base_url\" or \"s3\")"),
            );
            UploadMode::Api
        }
    };
    if !matches!(mode, UploadMode::S3(_)) && raw.mode.as_ref().is_none_or(|m| m.get_ref() != "s3") {
        for (key, value) in S3_KEYS.iter().zip(s3_values(&raw)) {
            if let Some(value) = value {
                problems.push(
                    value.span(),
                    &format!("upload.{key}"),
                    "only applies to mode = \"s3\"",
                );
            }
        }
    }
    UploadSettings { mode }
}

fn s3_values(raw: &RawUpload) -> [Option<&Spanned<String>>; 5] {
    [
        raw.bucket.as_ref(),
        raw.prefix.as_ref(),
        raw.endpoint.as_ref(),
        raw.region.as_ref(),
        raw.url_expiry.as_ref(),
    ]
}

/// `mode = "s3"` and its keys; `None` (with the problems recorded) when they do not hold.
fn s3(
    raw: &RawUpload,
    mode_span: std::ops::Range<usize>,
    problems: &mut Problems,
) -> Option<S3Settings> {
    let before = problems.len();
    let bucket = s3_bucket(raw.bucket.as_ref(), mode_span.clone(), problems);
    let prefix = raw.prefix.as_ref().map_or(String::new(), |prefix| {
        if let Err(message) = check_prefix(prefix.get_ref()) {
            problems.push(prefix.span(), "upload.prefix", message);
        }
        prefix.get_ref().clone()
    });
    let endpoint = raw.endpoint.as_ref().and_then(|url| {
        check_http_url(url, "upload.endpoint", false, problems).then(|| url.get_ref().clone())
    });
    let region = raw.region.as_ref().and_then(|region| {
        let text = region.get_ref();
        if text.trim().is_empty() || text.contains(char::is_whitespace) {
            problems.push(
                region.span(),
                "upload.region",
                format!("{text:?} is not a region"),
            );
            return None;
        }
        Some(text.clone())
    });
    let (url_expiry, expiry_span) = s3_url_expiry(raw.url_expiry.as_ref(), mode_span, problems);
    (problems.len() == before).then_some(S3Settings {
        bucket,
        prefix,
        endpoint,
        region,
        url_expiry,
        expiry_span,
    })
}

/// `upload.bucket`, required in the s3 mode (the mode's span names where it is missing).
fn s3_bucket(
    raw: Option<&Spanned<String>>,
    mode_span: std::ops::Range<usize>,
    problems: &mut Problems,
) -> String {
    match raw {
        Some(bucket) if bucket.get_ref().trim().is_empty() || bucket.get_ref().contains('/') => {
            problems.push(
                bucket.span(),
                "upload.bucket",
                format!("{:?} is not a bucket name", bucket.get_ref()),
            );
            String::new()
        }
        Some(bucket) => bucket.get_ref().clone(),
        None => {
            problems.push(mode_span, "upload.bucket", "mode \"s3\" needs bucket");
            String::new()
        }
    }
}

/// `upload.url_expiry` (default a day, at most 7 days) and where it was set: its value,
/// or the mode for the default.
fn s3_url_expiry(
    raw: Option<&Spanned<String>>,
    mode_span: std::ops::Range<usize>,
    problems: &mut Problems,
) -> (Duration, std::ops::Range<usize>) {
    let Some(value) = raw else {
        return (DEFAULT_URL_EXPIRY, mode_span);
    };
    match duration(value, "upload.url_expiry", problems) {
        Some(expiry) if expiry > MAX_URL_EXPIRY => {
            problems.push(
                value.span(),
                "upload.url_expiry",
                format!(
                    "{} is longer than the 7 days a presigned URL may live",
                    humantime::format_duration(expiry)
                ),
            );
            (DEFAULT_URL_EXPIRY, value.span())
        }
        Some(expiry) => (expiry, value.span()),
        None => (DEFAULT_URL_EXPIRY, value.span()),
    }
}

/// A key prefix: empty, or path segments each ending in `/` or not; no empty, `.` or
/// `..` segment, no leading `/` (S3 keys have none; the object would be another one).
fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.starts_with('/') {
        return Err(format!(
            "{prefix:?} must not start with \"/\" (keys have no leading slash)"
        ));
    }
    let inner = prefix.strip_suffix('/').unwrap_or(prefix);
    if prefix.is_empty() {
        return Ok(());
    }
    for segment in inner.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(format!("{prefix:?} has an empty, \".\" or \"..\" segment"));
        }
        if segment.chars().any(|c| c.is_control() || c == '\\') {
            return Err(format!(
                "{prefix:?} holds a control character or a backslash"
            ));
        }
    }
    Ok(())
}

/// How much longer than `task_timeout` a presigned URL must live: a minute, or half the
/// timeout when that is shorter (clocks that disagree, the submit call's own time).
pub fn url_expiry_margin(task_timeout: Duration) -> Duration {
    (task_timeout / 2).min(Duration::from_secs(60))
}

/// The s3 mode's `url_expiry` must outlive `task_timeout` with a margin
/// ([`url_expiry_margin`]): the provider fetches the stem at some point while the task
/// runs, and a URL that expired by then fails the task. It is whole seconds: a presigned
/// URL's lifetime is counted in seconds.
pub(super) fn check_url_expiry(
    upload: &UploadSettings,
    run: &RunSettings,
    problems: &mut Problems,
) {
    let UploadMode::S3(s3) = &upload.mode else {
        return;
    };
    let needed = run.task_timeout + url_expiry_margin(run.task_timeout);
    let problem = if s3.url_expiry.subsec_nanos() != 0 {
        format!(
            "url_expiry ({}) must be whole seconds: a presigned URL's lifetime is counted in seconds",
            humantime::format_duration(s3.url_expiry)
        )
    } else if s3.url_expiry < needed {
        format!(
            "url_expiry ({}) must be at least run.task_timeout ({}) and {} more ({}): the provider may fetch the stem until the task times out",
            humantime::format_duration(s3.url_expiry),
            humantime::format_duration(run.task_timeout),
            humantime::format_duration(url_expiry_margin(run.task_timeout)),
            humantime::format_duration(needed),
        )
    } else {
        return;
    };
    problems.push(s3.expiry_span.clone(), "upload.url_expiry", problem);
}

fn duration(value: &Spanned<String>, key: &str, problems: &mut Problems) -> Option<Duration> {
    match humantime::parse_duration(value.get_ref()) {
        Ok(parsed) if !parsed.is_zero() => Some(parsed),
        Ok(_) => {
            problems.push(value.span(), key, "must be longer than zero");
            None
        }
        Err(err) => {
            problems.push(
                value.span(),
                key,
                format!(
                    "{:?} is not a duration ({err}; e.g. \"30m\", \"15s\", \"6h\")",
                    value.get_ref()
                ),
            );
            None
        }
    }
}

/// Checks that a URL is absolute http(s) (https only when `https_only`); records a problem
/// and returns false otherwise.
pub(super) fn check_http_url(
    value: &Spanned<String>,
    key: &str,
    https_only: bool,
    problems: &mut Problems,
) -> bool {
    let text = value.get_ref();
    let problem = match url::Url::parse(text) {
        Ok(url) if url.scheme() == "https" => None,
        Ok(url) if url.scheme() == "http" && !https_only => None,
        Ok(_) if https_only => Some(format!("{text:?} must be an https:// URL")),
        Ok(_) => Some(format!("{text:?} must be an http:// or https:// URL")),
        Err(err) => Some(format!("{text:?} is not a URL ({err})")),
    };
    match problem {
        Some(message) => {
            problems.push(value.span(), key, message);
            false
        }
        None => true,
    }
}

/// `Option<&T>` to an owned `T`, default when absent: the sections are all optional.
trait ClonedDefault<T> {
    fn cloned_default(self) -> T;
}

impl<T: Clone + Default> ClonedDefault<T> for Option<&T> {
    fn cloned_default(self) -> T {
        self.cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_space_evenly() {
        let rate = Rate::parse("20/min").unwrap();
        assert_eq!(rate.period(), Duration::from_secs(3));
        assert_eq!(
            Rate::parse("2/s").unwrap().period(),
            Duration::from_millis(500)
        );
        assert_eq!(
            Rate::parse("100/h").unwrap().period(),
            Duration::from_secs(36)
        );
        assert!(Rate::parse("0/min").unwrap_err().contains("above zero"));
        assert!(Rate::parse("20 per minute")
            .unwrap_err()
            .contains("not a rate"));
        assert!(Rate::parse("20/fortnight").is_err());
    }
}
