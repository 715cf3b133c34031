//! Downloading one result file: gather the body in memory (a buffer at a time for a
//! large file), count it, check the length and (for tracks) that it is audio, then write,
//! hash and fsync it in a temporary file beside its destination and rename it into place,
//! in one blocking call for a file that fits one buffer (a track, usually). A file at the
//! destination is always complete; a failed download leaves nothing behind (the temporary
//! file is removed on drop). A different file already at the destination is never
//! overwritten in place: it moves aside first, or the download takes a free name beside
//! it ([`Place`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::api::client::{error_chain, CONNECT_TIMEOUT};
use crate::audio_format::{sniff, SNIFF_LEN};

pub mod error;
pub use error::DownloadError;

/// The longest silence tolerated mid-download before the connection counts as dead.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest one download may take in all: a trickling server must not hold a slot all
/// night.
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The largest file accepted: a generated track is a few MiB, so anything near this is a
/// server gone wrong, not music.
pub const MAX_BYTES: u64 = 1 << 30;

/// The most of a body held in memory before it is written out. A track (a few hundred KB
/// to a few MiB) is then written, hashed, synced and renamed in one blocking call, instead
/// of a hand-off to the blocking pool per network chunk. A download slot holds less than
/// twice this (the buffer's capacity doubles as it fills) while a large file spills.
const WRITE_BUFFER: usize = 4 << 20;

/// A completed download.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Downloaded {
    /// Bytes on disk.
    pub bytes: u64,
    /// Hex sha256 of the bytes on disk.
    pub sha256: String,
    /// The file's modification time once in place, in nanoseconds since the Unix epoch.
    pub modified_ns: Option<u64>,
    /// Where it landed: the destination, or with [`Place::Beside`] a free name beside it.
    pub path: PathBuf,
    /// The bytes on disk, of a track that fitted one write buffer: quality control
    /// decodes them rather than reading back the file just written. `None` for a larger
    /// file and for other files than audio.
    pub body: Option<bytes::Bytes>,
}

/// What becomes of a different file already at a download's destination (a track edited
/// or damaged on disk, an earlier task's track): paid audio is never overwritten in place.
/// A file with the very bytes downloaded is simply replaced: nothing is lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// It moves to this path first (or to the first free numbered name of it:
    /// `name.1.ext`, `name.2.ext`, …), and the download takes its place.
    MoveAside(PathBuf),
    /// It stays; the download takes the first free numbered name beside it.
    Beside,
}

/// `path`, or the first of `name.1.ext`, `name.2.ext`, … that is free: the number goes
/// before the extension, so that players still know the file.
pub fn free_name(path: &Path) -> PathBuf {
    if std::fs::symlink_metadata(path).is_err() {
        return path.to_owned();
    }
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    let stem = stem.unwrap_or_default();
    let ext = path.extension().map(|e| e.to_string_lossy().into_owned());
    (1u32..)
        .map(|n| match &ext {
            Some(ext) => path.with_file_name(format!("{stem}.{n}.{ext}")),
            None => path.with_file_name(format!("{stem}.{n}")),
        })
        .find(|candidate| std::fs::symlink_metadata(candidate).is_err())
        .expect("some name is free")
}

/// Makes room at `dest` for a file whose sha256 is `sha256`, as `place` says; returns
/// where it goes. Blocking.
fn make_room(dest: &Path, sha256: &str, place: &Place) -> std::io::Result<PathBuf> {
    match std::fs::symlink_metadata(dest) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(dest.to_owned()),
        Err(err) => return Err(err),
        Ok(_) => {}
    }
    let mut existing = std::fs::File::open(dest)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut existing, &mut hasher)?;
    if hex::encode(hasher.finalize()) == sha256 {
        return Ok(dest.to_owned());
    }
    match place {
        Place::MoveAside(aside) => {
            if let Some(parent) = aside.parent() {
                crate::output_files::create_dir_all_durably(parent)?;
            }
            let aside = free_name(aside);
            std::fs::rename(dest, &aside)?;
            // The paid file's new name must survive a power loss before the new download
            // takes its old one (whose folder is synced after that rename).
            crate::output_files::sync_parent(&aside)?;
            tracing::warn!(
                file = %dest.display(),
                to = %aside.display(),
                "a track file changed on disk: moved aside, never overwritten"
            );
            Ok(dest.to_owned())
        }
        Place::Beside => Ok(free_name(dest)),
    }
}

/// A file's modification time in nanoseconds since the Unix epoch, when the file system
/// tells.
pub fn modified_ns(metadata: &std::fs::Metadata) -> Option<u64> {
    let since_epoch = metadata
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    u64::try_from(since_epoch.as_nanos()).ok()
}

/// What a download must contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Audio, checked by its leading bytes.
    Audio,
    /// Anything (cover images).
    Any,
}

/// Downloads result files. Sends no credentials: result URLs are public and may live on
/// another host.
#[derive(Clone, Debug)]
pub struct Downloader {
    http: reqwest::Client,
}

impl Downloader {
    /// A downloader with a connect timeout and a stall timeout, but no limit on the total
    /// time, since tracks can be large.
    pub fn new() -> Result<Self, DownloadError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("stembatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DownloadError::Transport(error_chain(&e)))?;
        Ok(Downloader { http })
    }

    /// Downloads `url` to `dest` (its folder made if need be), in place only when complete,
    /// a different file there dealt with as `place` says; within [`TOTAL_TIMEOUT`] and
    /// [`MAX_BYTES`].
    pub async fn fetch(
        &self,
        url: &str,
        dest: &Path,
        expect: Expect,
        place: &Place,
    ) -> Result<Downloaded, DownloadError> {
        tokio::time::timeout(TOTAL_TIMEOUT, self.fetch_untimed(url, dest, expect, place))
            .await
            .unwrap_or(Err(DownloadError::TooSlow {
                limit: TOTAL_TIMEOUT,
            }))
    }

    async fn fetch_untimed(
        &self,
        url: &str,
        dest: &Path,
        expect: Expect,
        place: &Place,
    ) -> Result<Downloaded, DownloadError> {
        let transport = |e: reqwest::Error| DownloadError::Transport(error_chain(&e));
        let mut response = self.http.get(url).send().await.map_err(transport)?;
        if !response.status().is_success() {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(DownloadError::Status {
                status: response.status().as_u16(),
                retry_after,
            });
        }
        let expected = response.content_length();
        if expected.is_some_and(|length| length > MAX_BYTES) {
            return Err(DownloadError::TooLarge { limit: MAX_BYTES });
        }
        let io = |cause| DownloadError::Io {
            path: dest.to_owned(),
            cause,
        };
        let blocking_failed = |e: tokio::task::JoinError| io(std::io::Error::other(e));
        let name = TempName::default();
        let _abandon = Abandon(name.clone());
        let mut landing = Landing::new(dest.parent().unwrap_or(Path::new(".")), name);
        let mut buffer: Vec<u8> = Vec::with_capacity(
            expected.map_or(0, |length| length.min(WRITE_BUFFER as u64) as usize),
        );
        let mut spilled = false;
        let mut received: u64 = 0;
        let mut head: Vec<u8> = Vec::with_capacity(SNIFF_LEN);
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            received += chunk.len() as u64;
            if received > MAX_BYTES {
                return Err(DownloadError::TooLarge { limit: MAX_BYTES });
            }
            if head.len() < SNIFF_LEN {
                let take = (SNIFF_LEN - head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..take]);
            }
            buffer.extend_from_slice(&chunk);
            if buffer.len() >= WRITE_BUFFER {
                spilled = true;
                (landing, buffer) = tokio::task::spawn_blocking(move || {
                    landing.write(&buffer)?;
                    buffer.clear();
                    Ok::<_, std::io::Error>((landing, buffer))
                })
                .await
                .map_err(blocking_failed)?
                .map_err(io)?;
            }
        }
        if let Some(expected) = expected.filter(|&e| e != received) {
            return Err(DownloadError::Short { expected, received });
        }
        if expect == Expect::Audio && sniff(&head).is_none() {
            return Err(DownloadError::NotAudio {
                head: String::from_utf8_lossy(&head).into_owned(),
            });
        }
        let (target, place) = (dest.to_owned(), place.clone());
        let (landed, buffer) = tokio::task::spawn_blocking(move || {
            let landed = landing.finish(&buffer, &target, &place)?;
            Ok::<_, std::io::Error>((landed, buffer))
        })
        .await
        .map_err(blocking_failed)?
        .map_err(io)?;
        let Landed {
            sha256,
            path,
            modified_ns,
        } = landed;
        // Only a body held whole is handed on: quality control decodes it from memory
        // rather than reading back the file just written.
        let body = (!spilled && expect == Expect::Audio).then(|| bytes::Bytes::from(buffer));
        Ok(Downloaded {
            bytes: received,
            sha256,
            modified_ns,
            path,
            body,
        })
    }
}

/// The temporary file a download is written to, beside its destination, and the hash of
/// what has been written. The file is created by the first write, in a blocking call: a
/// download that fails before any byte is due on disk leaves nothing behind, and one that
/// fails later leaves nothing either. Its name is held by the download itself
/// ([`TempName`]), not only by the blocking call writing it, so that a download dropped
/// mid-write (the run stopped, and the process ends without waiting for the blocking
/// pool) removes it at once.
struct Landing {
    folder: PathBuf,
    file: Option<std::fs::File>,
    name: TempName,
    hasher: Sha256,
}

/// The name of a download's temporary file, shared by the download and the blocking calls
/// that write it; the file is removed when the download drops its [`Abandon`] guard,
/// unless it was renamed into place before.
#[derive(Clone, Default)]
struct TempName(Arc<Mutex<TempState>>);

#[derive(Default)]
struct TempState {
    /// Removes the file when dropped (or is consumed by the rename into place).
    path: Option<tempfile::TempPath>,
    /// The download was dropped: no temporary file may be created or renamed any more.
    abandoned: bool,
}

impl TempName {
    fn lock(&self) -> std::sync::MutexGuard<'_, TempState> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Held by a download while it runs: dropped (the download finished, failed or was
/// dropped), it removes a temporary file not renamed into place.
struct Abandon(TempName);

impl Drop for Abandon {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.abandoned = true;
        state.path = None;
    }
}

fn abandoned() -> std::io::Error {
    std::io::Error::other("the download was abandoned")
}

/// Where a finished download landed, and what it holds.
struct Landed {
    sha256: String,
    path: PathBuf,
    modified_ns: Option<u64>,
}

impl Landing {
    fn new(folder: &Path, name: TempName) -> Self {
        Landing {
            folder: folder.to_owned(),
            file: None,
            name,
            hasher: Sha256::new(),
        }
    }

    /// Appends `bytes` to the temporary file, creating it (and its folder, durably)
    /// first if need be. Blocking.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                let mut state = self.name.lock();
                if state.abandoned {
                    return Err(abandoned());
                }
                crate::output_files::create_dir_all_durably(&self.folder)?;
                let (file, path) = tempfile::Builder::new()
                    .prefix(crate::output_files::DOWNLOAD_TEMP.0)
                    .suffix(crate::output_files::DOWNLOAD_TEMP.1)
                    .permissions(crate::output_files::permissions())
                    .tempfile_in(&self.folder)?
                    .into_parts();
                state.path = Some(path);
                self.file.insert(file)
            }
        };
        self.hasher.update(bytes);
        file.write_all(bytes)
    }

    /// Writes the last `bytes`, makes the file durable and renames it into place at
    /// `dest` (or beside it, as `place` says). Blocking.
    fn finish(mut self, bytes: &[u8], dest: &Path, place: &Place) -> std::io::Result<Landed> {
        self.write(bytes)?;
        let file = self.file.take().expect("written above");
        file.sync_all()?;
        // A rename keeps the modification time: read from the open file, not the path.
        let modified_ns = file.metadata().ok().as_ref().and_then(modified_ns);
        drop(file);
        let sha256 = hex::encode(self.hasher.finalize());
        let path = make_room(dest, &sha256, place)?;
        {
            // Locked through the rename: the file is either renamed or removed, whole.
            let mut state = self.name.lock();
            let temp = state.path.take().ok_or_else(abandoned)?;
            temp.persist(&path).map_err(|e| e.error)?;
        }
        // The folder is synced after the rename: the journal records the track only once
        // this returns, and its record must never outlive the file's name.
        crate::output_files::sync_parent(&path)?;
        Ok(Landed {
            sha256,
            path,
            modified_ns,
        })
    }
}

/// The extension of a result URL's file name (lowercase), or `fallback`.
pub fn extension_of(url: &str, fallback: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| {
            let name = u.path_segments()?.next_back()?.to_owned();
            let (_, ext) = name.rsplit_once('.')?;
            (!ext.is_empty() && ext.len() <= 5 && ext.chars().all(|c| c.is_ascii_alphanumeric()))
                .then(|| ext.to_ascii_lowercase())
        })
        .unwrap_or_else(|| fallback.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_come_from_the_url_path() {
        assert_eq!(extension_of("https://x/a/b_audio.MP3?sig=1", "mp3"), "mp3");
        assert_eq!(
            extension_of("http://127.0.0.1:1/files/t/1.wav", "mp3"),
            "wav"
        );
        assert_eq!(extension_of("https://x/a/noext", "mp3"), "mp3");
        assert_eq!(extension_of("https://x/a/b.tar-gz-long", "mp3"), "mp3");
    }

    #[test]
    fn only_transient_failures_are_retried() {
        let status = |status| DownloadError::Status {
            status,
            retry_after: None,
        };
        assert!(status(503).is_retryable());
        assert!(status(429).is_retryable());
        assert!(!status(404).is_retryable());
        assert!(!status(403).is_retryable());
        assert!(!DownloadError::TooLarge { limit: 1 }.is_retryable());
        assert!(DownloadError::Short {
            expected: 10,
            received: 5
        }
        .is_retryable());
    }

    #[test]
    fn a_different_file_moves_aside_or_the_download_goes_beside_it_never_over_it() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a/v-1.wav");
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        let sha = |bytes: &[u8]| hex::encode(Sha256::digest(bytes));
        // Nothing there, or the same bytes: the destination itself.
        assert_eq!(
            make_room(&dest, &sha(b"new"), &Place::Beside).unwrap(),
            dest
        );
        std::fs::write(&dest, b"new").unwrap();
        let aside = dir.path().join("superseded/a/v-1.changed.wav");
        let moving = Place::MoveAside(aside.clone());
        assert_eq!(make_room(&dest, &sha(b"new"), &moving).unwrap(), dest);
        assert!(!aside.exists());
        // Different bytes: kept beside, or moved aside to a free name.
        assert_eq!(
            make_room(&dest, &sha(b"other"), &Place::Beside).unwrap(),
            dir.path().join("a/v-1.1.wav")
        );
        std::fs::create_dir_all(aside.parent().unwrap()).unwrap();
        std::fs::write(&aside, b"taken").unwrap();
        assert_eq!(make_room(&dest, &sha(b"other"), &moving).unwrap(), dest);
        assert!(!dest.exists(), "moved away");
        assert_eq!(
            std::fs::read(dir.path().join("superseded/a/v-1.changed.1.wav")).unwrap(),
            b"new"
        );
        assert_eq!(std::fs::read(&aside).unwrap(), b"taken", "nothing replaced");
        assert_eq!(
            free_name(&dir.path().join("noext")),
            dir.path().join("noext")
        );
    }

    #[test]
    fn a_full_disk_is_recognised() {
        let full = DownloadError::Io {
            path: "x".into(),
            cause: std::io::Error::from_raw_os_error(28),
        };
        assert!(full.is_disk_full());
        assert!(!full.is_retryable());
        let denied = DownloadError::Io {
            path: "x".into(),
            cause: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert!(!denied.is_disk_full());
    }

    #[tokio::test]
    async fn a_track_renamed_into_place_syncs_its_folder() {
        const WAV: &[u8] = b"RIFF\x04\0\0\0WAVEdata";
        let app = axum::Router::new().route("/t.wav", axum::routing::get(|| async { WAV }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("ballad-1.wav");
        let before = crate::output_files::synced::count(dir.path());
        let got = Downloader::new()
            .unwrap()
            .fetch(
                &format!("http://{addr}/t.wav"),
                &dest,
                Expect::Audio,
                &Place::Beside,
            )
            .await
            .unwrap();
        assert_eq!(got.bytes, WAV.len() as u64);
        assert_eq!(std::fs::read(&dest).unwrap(), WAV);
        assert_eq!(crate::output_files::synced::count(dir.path()), before + 1);
    }

    #[tokio::test]
    async fn a_download_dropped_after_its_first_write_leaves_nothing_behind() {
        // More than one buffer, then silence: the first buffer is on disk, the rest never
        // comes.
        let first = bytes::Bytes::from(vec![7u8; WRITE_BUFFER + 1]);
        let app = axum::Router::new().route(
            "/stalls.wav",
            axum::routing::get(move || async move {
                let head = futures::stream::iter([Ok::<_, std::io::Error>(first)]);
                axum::body::Body::from_stream(futures::StreamExt::chain(
                    head,
                    futures::stream::pending(),
                ))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("stalls.wav");
        let download = tokio::spawn(async move {
            let url = format!("http://{addr}/stalls.wav");
            let downloader = Downloader::new().unwrap();
            downloader
                .fetch(&url, &dest, Expect::Any, &Place::Beside)
                .await
        });
        let names = || -> Vec<String> {
            std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        };
        let started = std::time::Instant::now();
        while names().is_empty() {
            assert!(started.elapsed() < Duration::from_secs(20), "never written");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(names()[0].starts_with(crate::output_files::DOWNLOAD_TEMP.0));
        download.abort();
        assert!(download.await.unwrap_err().is_cancelled());
        assert_eq!(names(), Vec::<String>::new());
    }

    #[tokio::test]
    async fn a_body_larger_than_the_buffer_is_written_in_parts_and_only_a_small_one_is_kept() {
        let large: Vec<u8> = b"RIFF\0\0\0\0WAVEdata"
            .iter()
            .copied()
            .chain((0..2 * WRITE_BUFFER as u32 + 12_345).map(|i| (i % 251) as u8))
            .collect();
        let small = large[..70_000].to_vec();
        let page: Vec<u8> = b"<html>".repeat(WRITE_BUFFER / 3);
        let app = axum::Router::new()
            .route(
                "/large.wav",
                axum::routing::get(move || async move { large }),
            )
            .route(
                "/small.wav",
                axum::routing::get(move || async move { small }),
            )
            .route("/page.wav", axum::routing::get(move || async move { page }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let dir = tempfile::tempdir().unwrap();
        let downloader = Downloader::new().unwrap();
        let fetch = |name: &'static str, expect| {
            let (downloader, dest) = (downloader.clone(), dir.path().join(name));
            async move {
                let url = format!("http://{addr}/{name}");
                downloader.fetch(&url, &dest, expect, &Place::Beside).await
            }
        };
        let sha = |bytes: &[u8]| hex::encode(Sha256::digest(bytes));
        for (name, expect) in [("large.wav", Expect::Audio), ("small.wav", Expect::Audio)] {
            let got = fetch(name, expect).await.unwrap();
            let on_disk = std::fs::read(dir.path().join(name)).unwrap();
            assert_eq!(got.bytes, on_disk.len() as u64, "{name}");
            assert_eq!(got.sha256, sha(&on_disk), "{name}");
            let kept = got.body.as_deref();
            match name {
                "small.wav" => assert_eq!(kept, Some(&on_disk[..])),
                _ => assert_eq!(kept, None, "larger than {WRITE_BUFFER} bytes"),
            }
        }
        // A missing folder is made, durably (each new folder's parent synced).
        let deep = dir.path().join("a/b/small.wav");
        let url = format!("http://{addr}/small.wav");
        let got = downloader
            .fetch(&url, &deep, Expect::Audio, &Place::Beside)
            .await
            .unwrap();
        assert_eq!(Some(std::fs::read(&deep).unwrap().into()), got.body);
        let synced = |folder: &str| crate::output_files::synced::count(&dir.path().join(folder));
        assert_eq!(
            (synced("a"), synced("a/b")),
            (1, 1),
            "a's new b, b's rename"
        );
        std::fs::remove_dir_all(dir.path().join("a")).unwrap();
        // A cover (anything) is never kept; a page where audio was due never lands.
        let cover = fetch("small.wav", Expect::Any).await.unwrap();
        assert_eq!(cover.body, None);
        let page = fetch("page.wav", Expect::Audio).await;
        assert!(
            matches!(page, Err(DownloadError::NotAudio { .. })),
            "{page:?}"
        );
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["large.wav", "small.wav"],
            "nothing else left behind"
        );
    }
}
