//! One bucket through `object_store`: HEAD, upload (multipart when large), presign.

use std::path::Path as FsPath;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{ClientOptions, ObjectStore, PutPayload, RetryConfig};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::error::{StorageError, StorageFailure};
use crate::manifest::S3Settings;

/// The access key id's variable.
pub const ACCESS_KEY_ENV: &str = "AWS_ACCESS_KEY_ID";
/// The secret's variable.
pub const SECRET_KEY_ENV: &str = "AWS_SECRET_ACCESS_KEY";
/// The session token's variable (temporary credentials; optional).
pub const SESSION_TOKEN_ENV: &str = "AWS_SESSION_TOKEN";
/// When temporary credentials expire (RFC 3339; optional): no presigned URL outlives them.
pub const EXPIRATION_ENV: &str = "AWS_CREDENTIAL_EXPIRATION";

/// Files up to this size go up in one PUT; larger ones as multipart, in parts of this
/// size (S3 wants parts of 5 MiB at least, but the last).
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// A request to the bucket taking longer than this has failed (a part is at most
/// [`PART_SIZE`]: minutes on a slow uplink).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// A HEAD (no body either way) taking longer than this has failed: a bucket that
/// accepts and never answers costs this per try, not [`REQUEST_TIMEOUT`].
const HEAD_TIMEOUT: Duration = Duration::from_secs(20);

/// Connecting to the bucket taking longer than this has failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The `Content-Type` of a stored object, by its key's extension (the keys keep the
/// file's, lowercased): a provider may look at the type its GET answers.
const CONTENT_TYPES: [(&str, &str); 7] = [
    ("wav", "audio/wav"),
    ("mp3", "audio/mpeg"),
    ("flac", "audio/flac"),
    ("ogg", "audio/ogg"),
    ("m4a", "audio/mp4"),
    ("aac", "audio/aac"),
    ("aiff", "audio/aiff"),
];

/// The standard AWS credentials, from the environment. Never shown: no `Display`, and a
/// `Debug` that says nothing of them.
#[derive(Clone)]
pub struct Credentials {
    key_id: String,
    secret: String,
    token: Option<String>,
    /// When they expire (temporary credentials), if said.
    expiration: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials([redacted])")
    }
}

impl Credentials {
    /// Credentials given directly (tests, embedders).
    pub fn new(key_id: String, secret: String, token: Option<String>) -> Self {
        Credentials {
            key_id,
            secret,
            token,
            expiration: None,
        }
    }

    /// The same credentials, expiring at `expiration`.
    pub fn expiring(self, expiration: DateTime<Utc>) -> Self {
        Credentials {
            expiration: Some(expiration),
            ..self
        }
    }

    /// Reads `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and (when set)
    /// `AWS_SESSION_TOKEN`; the error names what is missing.
    pub fn from_env() -> Result<Self, String> {
        let read = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let missing: Vec<&str> = [ACCESS_KEY_ENV, SECRET_KEY_ENV]
            .into_iter()
            .filter(|name| read(name).is_none())
            .collect();
        let expiration = match read(EXPIRATION_ENV) {
            Some(text) => Some(
                DateTime::parse_from_rfc3339(text.trim())
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|err| {
                        format!("{EXPIRATION_ENV} ({text:?}) is not an RFC 3339 time ({err}): nothing was sent")
                    })?,
            ),
            None => None,
        };
        match (read(ACCESS_KEY_ENV), read(SECRET_KEY_ENV)) {
            (Some(key_id), Some(secret)) => Ok(Credentials {
                key_id,
                secret,
                token: read(SESSION_TOKEN_ENV),
                expiration,
            }),
            _ => Err(format!(
                "upload.mode = \"s3\" needs credentials, and {} not set: nothing was sent (hint: export {ACCESS_KEY_ENV} and {SECRET_KEY_ENV}, and {SESSION_TOKEN_ENV} for temporary credentials)",
                match missing.as_slice() {
                    [one] => format!("{one} is"),
                    _ => format!("{} are", missing.join(" and ")),
                }
            )),
        }
    }

    /// Replaces every credential in `text` by `[redacted]`.
    fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in [Some(&self.key_id), Some(&self.secret), self.token.as_ref()]
            .into_iter()
            .flatten()
        {
            text = text.replace(secret.as_str(), "[redacted]");
        }
        text
    }
}

/// The run's bucket.
pub struct Bucket {
    store: AmazonS3,
    /// The same bucket with [`HEAD_TIMEOUT`], for HEADs.
    heads: AmazonS3,
    credentials: Credentials,
    id: String,
    bucket: String,
}

impl Bucket {
    /// The bucket of `settings`, reached with `credentials`. Sends nothing.
    pub fn new(settings: &S3Settings, credentials: Credentials) -> Result<Self, StorageError> {
        let region = settings
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .filter(|r| !r.trim().is_empty())
            .unwrap_or_else(|| "us-east-1".to_owned());
        let build = |timeout| {
            store(settings, &region, &credentials, timeout).map_err(|err| StorageError {
                failure: StorageFailure::Rejected,
                message: credentials.scrub(&format!("cannot set up the bucket: {err}")),
            })
        };
        let (store, heads) = (build(REQUEST_TIMEOUT)?, build(HEAD_TIMEOUT)?);
        let place = settings
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("aws:{region}"));
        Ok(Bucket {
            store,
            heads,
            id: format!("s3:{}/{}", place.trim_end_matches('/'), settings.bucket),
            bucket: settings.bucket.clone(),
            credentials,
        })
    }

    /// The bucket as the journal names it: its service and name.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// When the credentials expire, if they are temporary and the environment says so.
    pub fn credentials_expire(&self) -> Option<DateTime<Utc>> {
        self.credentials.expiration
    }

    /// Where `key` is, for a person: `s3://bucket/key`.
    pub fn location(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// Whether the object `key` exists.
    pub async fn contains(&self, key: &str) -> Result<bool, StorageError> {
        match self.heads.head(&path(key)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(err) => Err(self.error("HEAD", key, &err)),
        }
    }

    /// Uploads the file at `file` as `key`: one PUT up to [`PART_SIZE`], else multipart
    /// (aborted when a part fails, so no half object or stray parts stay behind). The
    /// content must still hash to `sha256`, or nothing is stored: a key names its
    /// content, and a file rewritten since it was hashed would break that for every
    /// later run.
    pub async fn upload(&self, key: &str, file: &FsPath, sha256: &str) -> Result<(), StorageError> {
        let location = path(key)?;
        let mut content = Content {
            file,
            reader: tokio::fs::File::open(file)
                .await
                .map_err(|e| unreadable(file, e))?,
            hasher: Sha256::new(),
            sha256,
        };
        let first = content.next_part().await?;
        if first.len() < PART_SIZE {
            content.check()?;
            return self
                .store
                .put(&location, PutPayload::from(first))
                .await
                .map(drop)
                .map_err(|err| self.error("PUT", key, &err));
        }
        self.upload_parts(key, &location, first, content).await
    }

    /// A multipart upload starting with `first`, the rest read from `content`.
    async fn upload_parts(
        &self,
        key: &str,
        location: &Path,
        first: Bytes,
        mut content: Content<'_>,
    ) -> Result<(), StorageError> {
        let failed = |err: object_store::Error| self.error("multipart upload", key, &err);
        let mut upload = self.store.put_multipart(location).await.map_err(failed)?;
        let mut part = first;
        let sent = loop {
            if let Err(err) = upload.put_part(PutPayload::from(part)).await {
                break Err(failed(err));
            }
            part = match content.next_part().await {
                Ok(next) if next.is_empty() => break content.check(),
                Ok(next) => next,
                Err(err) => break Err(err),
            };
        };
        match sent {
            Ok(()) => upload.complete().await.map(drop).map_err(failed),
            Err(err) => {
                // Best effort: the parts of an aborted upload cost storage until removed.
                let _ = upload.abort().await;
                Err(err)
            }
        }
    }

    /// A GET URL for `key`, valid for `expires_in`. Minted locally: nothing is sent.
    pub async fn presign(&self, key: &str, expires_in: Duration) -> Result<String, StorageError> {
        self.store
            .signed_url(reqwest::Method::GET, &path(key)?, expires_in)
            .await
            .map(String::from)
            .map_err(|err| self.error("presign", key, &err))
    }

    /// A storage error in the storage's own words, scrubbed.
    fn error(&self, what: &str, key: &str, err: &object_store::Error) -> StorageError {
        let text = chain(err);
        let failure = match err {
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => StorageFailure::Refused,
            object_store::Error::Generic { .. } => failure_of(what, err, &text),
            _ => StorageFailure::Rejected,
        };
        let mut words = storage_words(&text);
        if refused_setting(what, &text) {
            words.push_str(SETTING_HINT);
        }
        StorageError {
            failure,
            message: self
                .credentials
                .scrub(&format!("{what} of {} failed: {words}", self.location(key))),
        }
    }
}

/// S3's codes for credentials or settings that every later call would meet again: an
/// expired or invalid session token, a request signed for another region, a bucket in
/// another region.
const REFUSED_CODES: [&str; 6] = [
    "<Code>ExpiredToken</Code>",
    "<Code>InvalidToken</Code>",
    "<Code>TokenRefreshRequired</Code>",
    "<Code>AuthorizationHeaderMalformed</Code>",
    "<Code>PermanentRedirect</Code>",
    "<Code>IllegalLocationConstraintException</Code>",
];

/// What to check when the bucket refuses a token or a region.
const SETTING_HINT: &str = " (hint: temporary credentials may have expired: export a fresh AWS_SESSION_TOKEN with its key and secret; or the bucket is in another region: set upload.region, or AWS_REGION)";

/// How a `Generic` failure of `what` (its words `text`) fails.
fn failure_of(what: &str, err: &object_store::Error, text: &str) -> StorageFailure {
    if refused_setting(what, text) {
        StorageFailure::Refused
    } else if matches!(status_of(text), Some(503 | 429)) || text.contains("<Code>SlowDown</Code>") {
        StorageFailure::Throttled
    } else if transient(err, text) {
        StorageFailure::Transient
    } else {
        StorageFailure::Rejected
    }
}

/// Whether the bucket refused the token or the region: one of [`REFUSED_CODES`], a
/// redirect object_store reads as a wrong region, or a 400 to a HEAD (which carries no
/// error document, so its code is unknown, but a HEAD has no body to be wrong about).
fn refused_setting(what: &str, text: &str) -> bool {
    REFUSED_CODES.iter().any(|code| text.contains(code))
        || text.contains("Received redirect without LOCATION")
        || (what == "HEAD" && status_of(text) == Some(400))
}

/// The client of the bucket, its requests failing after `timeout`.
fn store(
    settings: &S3Settings,
    region: &str,
    credentials: &Credentials,
    timeout: Duration,
) -> object_store::Result<AmazonS3> {
    let options = CONTENT_TYPES.into_iter().fold(
        ClientOptions::new()
            .with_timeout(timeout)
            .with_connect_timeout(CONNECT_TIMEOUT),
        |options, (suffix, mime)| options.with_content_type_for_suffix(suffix, mime),
    );
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&settings.bucket)
        .with_region(region)
        .with_access_key_id(&credentials.key_id)
        .with_secret_access_key(&credentials.secret)
        // Retries are the run's: one policy, paced, stopped with the submits.
        .with_retry(RetryConfig {
            max_retries: 0,
            ..RetryConfig::default()
        })
        .with_client_options(options);
    if let Some(token) = &credentials.token {
        builder = builder.with_token(token);
    }
    if let Some(endpoint) = &settings.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"));
    }
    builder.build()
}

/// A file being read for an upload, hashed as it goes.
struct Content<'a> {
    file: &'a FsPath,
    reader: tokio::fs::File,
    hasher: Sha256,
    /// What the content must hash to.
    sha256: &'a str,
}

impl Content<'_> {
    /// The next [`PART_SIZE`] bytes at most; fewer only at the end of the file.
    async fn next_part(&mut self) -> Result<Bytes, StorageError> {
        let mut buffer = Vec::with_capacity(PART_SIZE);
        let mut limited = (&mut self.reader).take(PART_SIZE as u64);
        limited
            .read_to_end(&mut buffer)
            .await
            .map_err(|err| unreadable(self.file, err))?;
        self.hasher.update(&buffer);
        Ok(Bytes::from(buffer))
    }

    /// Whether what was read still hashes to what the key names.
    fn check(&self) -> Result<(), StorageError> {
        match hex::encode(self.hasher.clone().finalize()) == self.sha256 {
            true => Ok(()),
            false => Err(StorageError {
                failure: StorageFailure::Rejected,
                message: format!(
                    "{} changed since it was read; nothing was stored (the next run sends the new content)",
                    self.file.display()
                ),
            }),
        }
    }
}

/// A local file that cannot be read.
fn unreadable(file: &FsPath, err: std::io::Error) -> StorageError {
    StorageError {
        failure: StorageFailure::Rejected,
        message: format!("cannot read {}: {err}", file.display()),
    }
}

fn path(key: &str) -> Result<Path, StorageError> {
    Path::parse(key).map_err(|err| StorageError {
        failure: StorageFailure::Rejected,
        message: format!("{key:?} is not a valid key: {err}"),
    })
}

/// The error and its causes, one text; a cause whose words are already in the text (an
/// error that quotes its source) is not repeated.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let words = cause.to_string();
        if !text.contains(&words) {
            text.push_str(": ");
            text.push_str(&words);
        }
        source = cause.source();
    }
    text
}

/// Whether a failure is worth another try: no answer at all (a network failure, a
/// timeout: the client's own error among the causes, or no HTTP status in the words), a
/// 5xx, a 429 or S3's `SlowDown`.
fn transient(err: &object_store::Error, text: &str) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = source {
        // object_store wraps its `HttpError` transparently: the client's error is what
        // shows in the chain.
        if cause.downcast_ref::<reqwest::Error>().is_some() {
            return true;
        }
        source = cause.source();
    }
    matches!(status_of(text), Some(500..=599 | 429))
        || text.contains("<Code>SlowDown</Code>")
        || text.contains("<Code>InternalError</Code>")
}

/// The HTTP status in object_store's words, when the storage answered.
fn status_of(text: &str) -> Option<u16> {
    text.split("status code: ")
        .nth(1)
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
}

/// What the storage said: its `<Code>` and `<Message>` when it sent an error document,
/// else the HTTP status; never the rest of the document (S3 echoes the access key id
/// and the string it signed there).
pub(crate) fn storage_words(text: &str) -> String {
    let element = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&format!("</{name}>"))? + start;
        Some(text[start..end].trim().to_owned())
    };
    if let Some(code) = element("Code") {
        return match element("Message") {
            Some(message) => format!("{code}: {message}"),
            None => code,
        };
    }
    if let Some(rest) = text.split("status code: ").nth(1) {
        let status: String = rest.chars().take_while(|c| *c != ':').collect();
        return format!("HTTP {}", status.trim());
    }
    // No answer from the storage: the local cause (a connection, a timeout), which
    // object_store words without credentials; the caller scrubs it anyway.
    text.split(" - ").last().unwrap_or(text).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_storage_is_quoted_by_code_and_message_only() {
        let body = "Error performing PUT http://h/b/k in 3ms - Server returned non-2xx status code: 403 Forbidden: <?xml version=\"1.0\"?><Error><Code>InvalidAccessKeyId</Code><Message>The AWS Access Key Id you provided does not exist in our records.</Message><AWSAccessKeyId>AKIAEXAMPLE</AWSAccessKeyId></Error>";
        assert_eq!(
            storage_words(body),
            "InvalidAccessKeyId: The AWS Access Key Id you provided does not exist in our records."
        );
        assert_eq!(
            storage_words("Error performing HEAD http://h/b/k in 1ms - Server returned non-2xx status code: 403 Forbidden: "),
            "HTTP 403 Forbidden"
        );
    }

    /// An `object_store` failure with these words.
    fn generic(text: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: text.into(),
        }
    }

    #[test]
    fn an_expired_token_or_a_wrong_region_is_refused_with_a_hint() {
        let cases = [
            ("HEAD", "Error performing HEAD http://h/b/k in 2ms - Server returned non-2xx status code: 400 Bad Request: "),
            ("PUT", "Error performing PUT http://h/b/k in 2ms - Server returned non-2xx status code: 400 Bad Request: <Error><Code>ExpiredToken</Code><Message>The provided token has expired.</Message></Error>"),
            ("PUT", "Error performing PUT http://h/b/k in 2ms - Server returned non-2xx status code: 400 Bad Request: <Error><Code>InvalidToken</Code><Message>The provided token is malformed or otherwise invalid.</Message></Error>"),
            ("PUT", "Error performing PUT http://h/b/k in 2ms - Server returned non-2xx status code: 400 Bad Request: <Error><Code>AuthorizationHeaderMalformed</Code><Message>the region 'us-east-1' is wrong; expecting 'eu-west-1'</Message></Error>"),
            ("HEAD", "Error performing HEAD http://h/b/k in 2ms - Received redirect without LOCATION, this normally indicates an incorrectly configured region"),
        ];
        for (what, text) in cases {
            let err = generic(text);
            assert_eq!(
                failure_of(what, &err, text),
                StorageFailure::Refused,
                "{text}"
            );
            assert!(refused_setting(what, text), "{text}");
        }
        // A 400 to a PUT without such a code is the request's own fault.
        let text = "Error performing PUT http://h/b/k in 2ms - Server returned non-2xx status code: 400 Bad Request: <Error><Code>EntityTooLarge</Code></Error>";
        assert_eq!(
            failure_of("PUT", &generic(text), text),
            StorageFailure::Rejected
        );
        assert!(SETTING_HINT.contains("AWS_SESSION_TOKEN") && SETTING_HINT.contains("region"));
    }

    #[test]
    fn a_503_is_the_bucket_asking_for_fewer_requests() {
        // S3's SlowDown comes as a 503 whose body object_store does not read.
        let text = "Error performing PUT http://h/b/k in 2ms - Server returned non-2xx status code: 503 Service Unavailable: ";
        assert_eq!(
            failure_of("PUT", &generic(text), text),
            StorageFailure::Throttled
        );
        let text = "Error performing PUT http://h/b/k in 2ms - Server returned non-2xx status code: 500 Internal Server Error: ";
        assert_eq!(
            failure_of("PUT", &generic(text), text),
            StorageFailure::Transient
        );
    }

    /// An error that quotes its source, as object_store's and reqwest's do.
    #[derive(Debug)]
    struct Quoting(&'static str, Option<Box<Quoting>>);

    impl std::fmt::Display for Quoting {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Quoting {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn a_chain_says_each_cause_once() {
        let refused = Quoting("tcp connect error: Connection refused", None);
        let sending = Quoting("error sending request", Some(Box::new(refused)));
        let http = Quoting("HTTP error: error sending request", Some(Box::new(sending)));
        assert_eq!(
            chain(&http),
            "HTTP error: error sending request: tcp connect error: Connection refused"
        );
    }

    #[test]
    fn credentials_never_show() {
        let credentials = Credentials {
            key_id: "AKIDSECRETID".into(),
            secret: "s3cr3t/value".into(),
            token: Some("SESSIONTOKEN".into()),
            expiration: None,
        };
        assert_eq!(format!("{credentials:?}"), "Credentials([redacted])");
        assert_eq!(
            credentials.scrub("id AKIDSECRETID key s3cr3t/value token SESSIONTOKEN"),
            "id [redacted] key [redacted] token [redacted]"
        );
    }
}
