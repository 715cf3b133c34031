//! A typed client for the endpoints of API.md over reqwest.
//!
//! It makes exactly one HTTP call per method call: pacing and retries belong to the
//! caller (see [`super::retry`]), so every attempt can be paced and journaled.

use std::fmt;
use std::time::Duration;

use std::path::Path;

use reqwest::header::RETRY_AFTER;
use reqwest::multipart::{Form, Part};
use reqwest::{RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;

pub use super::error::ApiError;
use super::error::{one_line, EXCERPT_CHARS};
use super::redact;
use super::types::{Balance, Envelope, SubmitData, SubmitRequest, TaskDetail, UploadData};

/// How long a connection may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one API call may take in all.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an upload may take in all: a stem can be large and a link slow.
pub const UPLOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// The API key. Its `Debug` hides it, and it has no `Display`: it cannot reach a log.
#[derive(Clone)]
pub struct ApiKey(String);

/// Mixed into the account's hash so that it matches no other use of a sha256 of the key.
const ACCOUNT_DOMAIN: &str = "stembatch shared rate limit\0";

/// The account as the shared limit's Redis keys name it: 128 bits of a sha256 of the API
/// key, in hex. Every process on one key gets the same name, whatever its manifest, host
/// or base URL; the key itself is never in it.
pub fn account_id(api_key: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(ACCOUNT_DOMAIN)
        .chain_update(api_key.trim())
        .finalize();
    hex::encode(&digest[..16])
}

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    /// Reads the key from the environment variable `name`, or else from the file named by
    /// the variable `name` + [`KEY_FILE_SUFFIX`] (`VIDGO_API_KEY_FILE`), the way systemd
    /// credentials and container secrets hand keys over. A key file readable by others
    /// than its owner draws a warning. The error never holds the key.
    pub fn from_env(name: &str) -> Result<Self, String> {
        if let Some(key) = std::env::var(name).ok().filter(|k| !k.trim().is_empty()) {
            return Ok(ApiKey(key.trim().to_owned()));
        }
        let file_var = format!("{name}{KEY_FILE_SUFFIX}");
        match std::env::var_os(&file_var) {
            Some(path) if !path.is_empty() => Self::from_file(Path::new(&path), &file_var),
            _ => Err(format!(
                "the API key is missing: set the environment variable {name}, or {file_var} to a file that holds it (or api.key_env in the manifest)"
            )),
        }
    }

    /// Reads the key from the file at `path`, which the variable `var` names.
    fn from_file(path: &Path, var: &str) -> Result<Self, String> {
        let named = || format!("the API key file {} (named by {var})", path.display());
        // A value that names no file and does not look like a path may be the key itself,
        // pasted into the wrong variable: that is never printed.
        if !path.exists() {
            let looks_like_a_path = path.to_string_lossy().contains('/');
            return Err(match looks_like_a_path {
                true => format!("{} does not exist", named()),
                false => format!("the API key file named by {var} does not exist (hint: {var} holds the path of a file that holds the key, not the key)"),
            });
        }
        let bytes =
            std::fs::read(path).map_err(|err| format!("{} cannot be read: {err}", named()))?;
        if let Some(mode) = mode_of(path).filter(|mode| readable_by_others(*mode)) {
            tracing::warn!(
                file = %path.display(),
                "the API key file {} is readable by group or others (mode {:03o}) (hint: chmod 600 {})",
                path.display(),
                mode & 0o777,
                path.display()
            );
        }
        parse_key_file(&bytes)
            .map(ApiKey)
            .map_err(|problem| format!("{} {problem}", named()))
    }

    /// The account as the shared limit's Redis keys name it: a hash of the key, never
    /// the key.
    pub fn account_id(&self) -> String {
        account_id(&self.0)
    }

    /// Whether `header` is `Bearer <this key>`; for the simulator's check.
    pub fn matches_bearer(&self, header: &str) -> bool {
        header.strip_prefix("Bearer ") == Some(self.0.as_str())
    }
}

/// What follows `api.key_env` in the name of the variable that names a key file.
pub const KEY_FILE_SUFFIX: &str = "_FILE";

/// The key in a key file: one line, whitespace around it (the trailing newline) ignored.
/// The error says what is wrong with the file without quoting it.
fn parse_key_file(bytes: &[u8]) -> Result<String, &'static str> {
    let text = std::str::from_utf8(bytes).map_err(|_| "is not text (UTF-8)")?;
    let key = text.trim();
    if key.is_empty() {
        return Err("is empty (hint: write the key into it, on one line)");
    }
    if key.contains(['\n', '\r']) {
        return Err("holds more than one line (hint: it must hold the key alone, on one line)");
    }
    Ok(key.to_owned())
}

/// Whether permission bits `mode` let group or others read the file.
fn readable_by_others(mode: u32) -> bool {
    mode & 0o044 != 0
}

/// The permission bits of the file at `path`, where the platform has them.
fn mode_of(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).ok().map(|m| m.permissions().mode())
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl ApiError {
    /// Converts a reqwest failure, keeping whether the request could have been sent.
    pub fn from_reqwest(err: &reqwest::Error) -> Self {
        if err.is_connect() {
            ApiError::Connect(error_chain(err))
        } else if err.is_timeout() {
            ApiError::Timeout
        } else {
            ApiError::Transport(error_chain(err))
        }
    }
}

/// The error and its sources on one line; reqwest's own message alone says too little.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The provider's API at one base URL with one key.
#[derive(Clone, Debug)]
pub struct ApiClient {
    http: reqwest::Client,
    base_url: String,
    key: ApiKey,
}

impl ApiClient {
    /// A client with the standard timeouts.
    pub fn new(base_url: &str, key: ApiKey) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("stembatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Transport(error_chain(&e)))?;
        Ok(ApiClient {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            key,
        })
    }

    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The account of its key, as the shared limit's Redis keys name it.
    pub fn account_id(&self) -> String {
        self.key.account_id()
    }

    /// `POST /api/generate/submit`: creates (and bills) a task.
    pub async fn submit(&self, request: &SubmitRequest) -> Result<SubmitData, ApiError> {
        let url = format!("{}/api/generate/submit", self.base_url);
        self.call(self.http.post(url).json(request)).await
    }

    /// `GET /api/generate/detail/music?task_id=…`
    pub async fn detail(&self, task_id: &str) -> Result<TaskDetail, ApiError> {
        let url = format!("{}/api/generate/detail/music", self.base_url);
        let mut detail: TaskDetail = self
            .call(self.http.get(url).query(&[("task_id", task_id)]))
            .await?;
        detail.error_message = detail
            .error_message
            .map(|said| redact::provider_text(&said));
        Ok(detail)
    }

    /// `POST /api/common/upload/stream`: uploads a local file, streamed from disk, as the
    /// multipart `file` part named `file_name`.
    pub async fn upload(&self, path: &Path, file_name: &str) -> Result<UploadData, ApiError> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| ApiError::Local(format!("{}: {e}", path.display())))?;
        let length = file
            .metadata()
            .await
            .map_err(|e| ApiError::Local(format!("{}: {e}", path.display())))?
            .len();
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let part = Part::stream_with_length(body, length).file_name(file_name.to_owned());
        let form = Form::new().part("file", part);
        let url = format!("{}/api/common/upload/stream", self.base_url);
        let request = self.http.post(url).multipart(form).timeout(UPLOAD_TIMEOUT);
        self.call(request).await
    }

    /// `GET /api/user/balance`
    pub async fn balance(&self) -> Result<Balance, ApiError> {
        let url = format!("{}/api/user/balance", self.base_url);
        self.call(self.http.get(url)).await
    }

    async fn call<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, ApiError> {
        let response = request
            .bearer_auth(&self.key.0)
            .send()
            .await
            .map_err(|e| ApiError::from_reqwest(&e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|secs| secs.is_finite() && *secs >= 0.0)
            .map(Duration::from_secs_f64);
        let body = response
            .bytes()
            .await
            .map_err(|e| ApiError::from_reqwest(&e))?;
        decode_answer(status, retry_after, &body)
    }
}

/// Reads an answer: an HTTP error, a body-level error code, or the data.
fn decode_answer<T: DeserializeOwned>(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<T, ApiError> {
    let envelope = serde_json::from_slice::<Envelope<serde_json::Value>>(body);
    // Not the API's JSON: a web page, a server's own error. Quoted on one line, since it
    // ends up in the log, results.csv and the page. A gateway's rate limit or outage page
    // (429, 502, 503, 504) stands in front of the API: it keeps its status and meaning.
    let gateway = matches!(status.as_u16(), 429 | 502 | 503 | 504);
    if envelope.is_err() && !gateway && serde_json::from_slice::<serde_json::Value>(body).is_err() {
        let text = String::from_utf8_lossy(body);
        let excerpt = match one_line(&text, EXCERPT_CHARS) {
            empty if empty.is_empty() => "an empty body".to_owned(),
            excerpt => redact::provider_text(&excerpt),
        };
        return Err(ApiError::NotApi {
            status: status.as_u16(),
            excerpt,
        });
    }
    let message = |fallback: &str| {
        let text = envelope
            .as_ref()
            .ok()
            .and_then(|e| e.text())
            .map(str::to_owned)
            .unwrap_or_else(|| {
                let text = one_line(&String::from_utf8_lossy(body), 200);
                if text.is_empty() {
                    fallback.to_owned()
                } else {
                    text
                }
            });
        redact::provider_text(&text)
    };
    if !status.is_success() {
        return Err(ApiError::Status {
            status: status.as_u16(),
            message: message(status.canonical_reason().unwrap_or("error")),
            retry_after,
        });
    }
    let code = envelope.as_ref().map(|e| e.code).unwrap_or(None);
    if let Some(code) = code.filter(|&code| code != 200) {
        return Err(ApiError::Status {
            status: u16::try_from(code).unwrap_or(500),
            message: message("error"),
            retry_after,
        });
    }
    let decode = |e: serde_json::Error| ApiError::Decode(redact::provider_text(&e.to_string()));
    let envelope = envelope.map_err(decode)?;
    let data = envelope
        .data
        .ok_or_else(|| ApiError::Decode("the answer has no data".into()))?;
    serde_json::from_value(data).map_err(decode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::TaskStatus;

    #[test]
    fn a_200_with_an_error_code_is_that_error() {
        let body = br#"{"code":402,"msg":"insufficient credits"}"#;
        let err = decode_answer::<SubmitData>(StatusCode::OK, None, body).unwrap_err();
        assert!(
            matches!(err, ApiError::Status { status: 402, ref message, .. } if message == "insufficient credits"),
            "{err:?}"
        );
    }

    #[test]
    fn http_errors_carry_the_body_message_and_retry_after() {
        let body = br#"{"code":429,"message":"slow down"}"#;
        let err = decode_answer::<SubmitData>(
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(3)),
            body,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "HTTP 429: slow down");
        assert!(
            matches!(err, ApiError::Status { retry_after: Some(d), .. } if d == Duration::from_secs(3))
        );
        let err =
            decode_answer::<SubmitData>(StatusCode::BAD_GATEWAY, None, b"<html>bad gateway</html>")
                .unwrap_err();
        assert_eq!(err.to_string(), "HTTP 502: <html>bad gateway</html>");
    }

    #[test]
    fn a_provider_quoting_a_presigned_url_is_recorded_without_its_query() {
        let body = br#"{"code":400,"msg":"cannot fetch https://b.s3.amazonaws.com/k.wav?X-Amz-Credential=AKIAEXAMPLE%2Fx&X-Amz-Security-Token=TOKEN&X-Amz-Signature=f00"}"#;
        let err = decode_answer::<SubmitData>(StatusCode::BAD_REQUEST, None, body).unwrap_err();
        assert_eq!(
            err.to_string(),
            "HTTP 400: cannot fetch https://b.s3.amazonaws.com/k.wav?[redacted]"
        );
    }

    #[test]
    fn a_nested_error_message_is_read() {
        let body = br#"{"code":400,"error":{"message":"upload_url is not reachable","type":"invalid_request_error"}}"#;
        let err = decode_answer::<SubmitData>(StatusCode::BAD_REQUEST, None, body).unwrap_err();
        assert_eq!(err.to_string(), "HTTP 400: upload_url is not reachable");
    }

    #[test]
    fn success_decodes_the_data() {
        let body =
            br#"{"code":200,"data":{"task_id":"t1","status":"running","files":[],"progress":12}}"#;
        let detail: TaskDetail = decode_answer(StatusCode::OK, None, body).unwrap();
        assert_eq!(
            (detail.task_id.as_str(), detail.status),
            ("t1", TaskStatus::Running)
        );
        let err = decode_answer::<TaskDetail>(StatusCode::OK, None, b"not json").unwrap_err();
        assert!(
            matches!(err, ApiError::NotApi { status: 200, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn a_web_page_is_not_the_api_and_is_quoted_on_one_line() {
        let page = b"<!DOCTYPE html>\n<html>\n<head><title>404 Not Found</title></head>\n<body><h1>Not Found</h1></body>\n</html>\n";
        let err = decode_answer::<SubmitData>(StatusCode::NOT_FOUND, None, page).unwrap_err();
        assert!(err.base_url_unusable() && !err.reached_api(), "{err:?}");
        let text = err.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(
            text.starts_with(
                "HTTP 404 from something that is not the API: <!DOCTYPE html> <html> <head>"
            ),
            "{text}"
        );
        // The API's own 404, a gateway's 503 page and a rate limit are the API's answers.
        let api = decode_answer::<SubmitData>(
            StatusCode::NOT_FOUND,
            None,
            br#"{"code":404,"msg":"no such task"}"#,
        )
        .unwrap_err();
        assert!(api.reached_api(), "{api:?}");
        let gateway =
            decode_answer::<SubmitData>(StatusCode::SERVICE_UNAVAILABLE, None, page).unwrap_err();
        assert!(
            matches!(gateway, ApiError::Status { status: 503, .. }),
            "{gateway:?}"
        );
        assert!(!gateway.to_string().contains('\n'));
    }

    #[test]
    fn a_200_without_a_task_id_is_unreadable() {
        // The API changed shape: the code says success but the task id is renamed.
        let body = br#"{"code":200,"msg":"success","data":{"taskId":"t1","state":"queued"}}"#;
        let err = decode_answer::<SubmitData>(StatusCode::OK, None, body).unwrap_err();
        assert!(
            matches!(err, ApiError::Decode(ref m) if m.contains("task_id")),
            "{err:?}"
        );
        let err =
            decode_answer::<SubmitData>(StatusCode::OK, None, br#"{"code":200}"#).unwrap_err();
        assert!(matches!(err, ApiError::Decode(_)), "{err:?}");
    }

    #[test]
    fn a_key_file_holds_one_line_and_whitespace_around_it_is_ignored() {
        assert_eq!(parse_key_file(b"sk-123\n").unwrap(), "sk-123");
        assert_eq!(parse_key_file(b"  sk-123 \r\n\n").unwrap(), "sk-123");
        assert_eq!(parse_key_file(b"sk-123").unwrap(), "sk-123");
        for (content, problem) in [
            (&b""[..], "is empty"),
            (b"\n \t\n", "is empty"),
            (b"sk-123\nsk-456\n", "holds more than one line"),
            (b"\xff\xfe", "is not text"),
        ] {
            let err = parse_key_file(content).unwrap_err();
            assert!(err.starts_with(problem), "{content:?}: {err}");
            assert!(
                !err.contains("sk-"),
                "the error never quotes the file: {err}"
            );
        }
    }

    #[test]
    fn a_key_file_readable_by_group_or_others_is_flagged() {
        for mode in [0o100600, 0o400, 0o600, 0o700, 0o620, 0o602] {
            assert!(!readable_by_others(mode), "{mode:o}");
        }
        for mode in [0o100644, 0o640, 0o604, 0o666, 0o444] {
            assert!(readable_by_others(mode), "{mode:o}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn the_mode_of_a_key_file_is_read_from_the_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "sk-1\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(mode_of(&path).is_some_and(readable_by_others));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(mode_of(&path).is_some_and(|m| !readable_by_others(m)));
        assert_eq!(mode_of(&dir.path().join("absent")), None);
    }

    #[test]
    fn a_missing_or_empty_key_file_is_named_and_its_content_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent");
        let err = ApiKey::from_file(&missing, "K_FILE").unwrap_err();
        assert_eq!(
            err,
            format!(
                "the API key file {} (named by K_FILE) does not exist",
                missing.display()
            )
        );
        // The key itself, pasted where its file's path belongs, is never shown.
        let pasted = Path::new("sk-live-0123456789abcdef");
        let err = ApiKey::from_file(pasted, "K_FILE").unwrap_err();
        assert!(!err.contains("sk-live"), "{err}");
        assert!(err.contains("holds the path of a file"), "{err}");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let err = ApiKey::from_file(&empty, "K_FILE").unwrap_err();
        assert!(err.contains("(named by K_FILE) is empty"), "{err}");
        let good = dir.path().join("good");
        std::fs::write(&good, "sk-secret-1\n").unwrap();
        let key = ApiKey::from_file(&good, "K_FILE").unwrap();
        assert!(key.matches_bearer("Bearer sk-secret-1"));
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let key = ApiKey::new("sk-very-secret");
        let client = ApiClient::new("http://127.0.0.1:1", key.clone()).unwrap();
        assert!(!format!("{key:?} {client:?}").contains("sk-very-secret"));
        assert!(key.matches_bearer("Bearer sk-very-secret"));
        assert!(!key.matches_bearer("Bearer other"));
    }
}
