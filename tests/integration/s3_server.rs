//! A real S3 server for the tests of `upload.mode = "s3"`: `s3s-fs` (the `s3s` project's
//! file-system server), started on a free loopback port over a temporary folder and killed
//! when dropped. It checks SigV4 for real: a request signed with the wrong secret or an
//! unknown key id is refused (403), and so is a presigned URL that is wrongly signed or
//! expired. (moto, the first candidate, serves presigned URLs only with its signature
//! checks off, and never checks their expiry.)
//!
//! `.ci/run` builds it into `target/s3s-fs`; `STEMBATCH_TEST_S3S` names another binary.
//! Without it a test skips loudly, except under CI (`CI` set), where it fails.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the server may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running S3 server with one bucket and the one key allowed into it.
pub struct S3Server {
    child: Child,
    program: PathBuf,
    port: u16,
    root: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket.
    pub bucket: String,
    /// The access key id.
    pub key_id: String,
    /// The secret.
    pub secret: String,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server's program, or why there is none.
fn program() -> Result<PathBuf, String> {
    let program = std::env::var_os("STEMBATCH_TEST_S3S")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/s3s-fs/bin/s3s-fs")
        });
    match program.is_file() {
        true => Ok(program),
        false => Err(format!(
            "{} is missing (hint: run .ci/run once, or `cargo install s3s-fs@0.14.1 --features binary --locked --root target/s3s-fs`, or set STEMBATCH_TEST_S3S)",
            program.display()
        )),
    }
}

/// Starts the server with a bucket, or `None` (said loudly) when it is not installed and
/// this is not CI. Under CI a missing server fails the test.
pub async fn start() -> Option<S3Server> {
    let program = match program() {
        Ok(program) => program,
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("the S3 tests need an S3 server: {why}")
        }
        Err(why) => {
            eprintln!("\n!!! SKIPPED: this S3 test needs an S3 server: {why}\n");
            return None;
        }
    };
    let root = tempfile::tempdir().unwrap();
    let bucket = "stems".to_owned();
    std::fs::create_dir(root.path().join(&bucket)).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nonce = format!("{:016x}", rand::random::<u64>());
    let key_id = format!("AKIATEST{}", nonce.to_uppercase());
    let secret = format!("secret/{nonce}/{nonce}");
    let child = spawn(&program, port, &key_id, &secret, root.path());
    let mut server = S3Server {
        child,
        program,
        port,
        root,
        endpoint: format!("http://127.0.0.1:{port}"),
        bucket,
        key_id,
        secret,
    };
    server.wait_ready().await;
    Some(server)
}

fn spawn(program: &Path, port: u16, key_id: &str, secret: &str, root: &Path) -> Child {
    Command::new(program)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", key_id, "--secret-key", secret])
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("s3s-fs starts")
}

impl S3Server {
    /// Stops the server (its objects stay): the bucket is unreachable until
    /// [`S3Server::restart`].
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again, on the same port, over the same objects.
    pub async fn restart(&mut self) {
        self.stop();
        self.child = spawn(
            &self.program,
            self.port,
            &self.key_id,
            &self.secret,
            self.root.path(),
        );
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let started = Instant::now();
        let address = self.endpoint.trim_start_matches("http://").to_owned();
        while tokio::net::TcpStream::connect(&address).await.is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("s3s-fs exited at start: {status}");
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "s3s-fs did not start in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Removes an object behind the bucket's back (as a lifecycle rule would).
    pub fn remove(&self, key: &str) {
        std::fs::remove_file(self.root.path().join(&self.bucket).join(key)).unwrap();
    }

    /// The manifest's `[upload]` for this bucket.
    pub fn upload_section(&self, prefix: &str) -> String {
        format!(
            "[upload]\nmode = \"s3\"\nbucket = \"{}\"\nprefix = \"{prefix}\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\n",
            self.bucket, self.endpoint
        )
    }

    /// The `[upload]` settings, as the library reads them.
    pub fn settings(&self) -> stembatch::manifest::S3Settings {
        let text = format!(
            "[[stem]]\nurl = \"https://x.com/a.wav\"\ntags = \"t\"\nnegative_tags = \"\"\ntitle = \"t\"\n{}",
            self.upload_section("")
        );
        let path = std::path::Path::new("m.toml");
        match stembatch::manifest::parse(path, &text).unwrap().upload.mode {
            stembatch::manifest::UploadMode::S3(settings) => settings,
            other => panic!("not s3: {other:?}"),
        }
    }

    /// The library's bucket, reached with `secret` (the right one, or not).
    pub fn bucket_with(&self, secret: &str) -> stembatch::storage::Bucket {
        let credentials =
            stembatch::storage::Credentials::new(self.key_id.clone(), secret.to_owned(), None);
        stembatch::storage::Bucket::new(&self.settings(), credentials).unwrap()
    }

    /// The library's bucket, with the right key.
    pub fn bucket(&self) -> stembatch::storage::Bucket {
        self.bucket_with(&self.secret)
    }
}

/// A bucket that answers every request with `status` and no body (as S3 answers a HEAD
/// it refuses), counting the requests: its endpoint and the count.
pub async fn answering(status: u16) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = std::sync::Arc::clone(&count);
    let app = axum::Router::new().fallback(move || {
        seen.fetch_add(1, Ordering::SeqCst);
        async move { axum::http::StatusCode::from_u16(status).unwrap() }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (endpoint, count)
}
