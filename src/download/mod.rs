//! Downloading one result file: stream to a temporary file beside its destination, count
//! and hash while streaming, check the length and (for tracks) that it is audio, fsync,
//! then rename into place. A file at the destination is always complete; a failed
//! download leaves nothing behind (the temporary file is removed on drop). A different
//! file already at the destination is never overwritten in place: it moves aside first,
//! or the download takes a free name beside it ([`Place`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

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

    /// Downloads `url` to `dest` (whose folder must exist), in place only when complete,
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
        let dir = dest.parent().unwrap_or(Path::new("."));
        let io = |cause| DownloadError::Io {
            path: dest.to_owned(),
            cause,
        };
        let folder = dir.to_owned();
        let temp = tokio::task::spawn_blocking(move || {
            tempfile::Builder::new()
                .prefix(crate::output_files::DOWNLOAD_TEMP.0)
                .suffix(crate::output_files::DOWNLOAD_TEMP.1)
                .permissions(crate::output_files::permissions())
                .tempfile_in(folder)
        })
        .await
        .map_err(|e| io(std::io::Error::other(e)))?
        .map_err(io)?;
        let (file, temp_path) = temp.into_parts();
        let mut file = tokio::fs::File::from_std(file);
        let mut hasher = Sha256::new();
        let mut received: u64 = 0;
        let mut head: Vec<u8> = Vec::with_capacity(SNIFF_LEN);
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if head.len() < SNIFF_LEN {
                let take = (SNIFF_LEN - head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..take]);
            }
            received += chunk.len() as u64;
            if received > MAX_BYTES {
                return Err(DownloadError::TooLarge { limit: MAX_BYTES });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io)?;
        }
        if let Some(expected) = expected.filter(|&e| e != received) {
            return Err(DownloadError::Short { expected, received });
        }
        if expect == Expect::Audio && sniff(&head).is_none() {
            return Err(DownloadError::NotAudio {
                head: String::from_utf8_lossy(&head).into_owned(),
            });
        }
        file.flush().await.map_err(io)?;
        file.sync_all().await.map_err(io)?;
        drop(file);
        let sha256 = hex::encode(hasher.finalize());
        let (target, digest, place) = (dest.to_owned(), sha256.clone(), place.clone());
        // The folder is synced after the rename: the journal records the track only once
        // this returns, and its record must never outlive the file's name.
        let path = tokio::task::spawn_blocking(move || {
            let path = make_room(&target, &digest, &place)?;
            temp_path.persist(&path).map_err(|e| e.error)?;
            crate::output_files::sync_parent(&path)?;
            Ok(path)
        })
        .await
        .map_err(|e| io(std::io::Error::other(e)))?
        .map_err(io)?;
        let modified_ns = tokio::fs::metadata(&path)
            .await
            .ok()
            .as_ref()
            .and_then(modified_ns);
        Ok(Downloaded {
            bytes: received,
            sha256,
            modified_ns,
            path,
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
}
