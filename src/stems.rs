//! Local stem files: finding them (glob), checking that they are audio of a sane size, and
//! hashing their content. The manifest reaches the disk only through [`LocalFiles`], so
//! its validation stays pure and tests can hand it fakes.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::audio_format::{sniff, AudioFormat, SNIFF_LEN};

/// The largest stem accepted: far above any vocal stem, far below what an upload could
/// carry in one go.
pub const MAX_STEM_BYTES: u64 = 100 * 1024 * 1024;

/// What checking a stem file found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedFile {
    /// Hex sha256 of its content.
    pub sha256: String,
    /// Its size.
    pub bytes: u64,
    /// Its container format.
    pub format: AudioFormat,
}

/// The file system as the manifest sees it.
pub trait LocalFiles {
    /// The files matching `pattern` (relative patterns are relative to `base`), sorted.
    fn glob(&self, base: &Path, pattern: &str) -> Result<Vec<PathBuf>, String>;

    /// Checks that `path` is a non-empty audio file within [`MAX_STEM_BYTES`] and hashes it;
    /// the error names the file and says what is wrong.
    fn check(&self, path: &Path) -> Result<CheckedFile, String>;
}

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct DiskFiles;

impl LocalFiles for DiskFiles {
    fn glob(&self, base: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
        let full = base.join(pattern);
        let full = full
            .to_str()
            .ok_or_else(|| format!("{pattern:?} is not valid UTF-8"))?;
        let entries =
            glob::glob(full).map_err(|e| format!("{pattern:?} is not a glob pattern ({e})"))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        Ok(files)
    }

    fn check(&self, path: &Path) -> Result<CheckedFile, String> {
        let name = path.display();
        let mut file = std::fs::File::open(path).map_err(|e| format!("{name}: {e}"))?;
        let bytes = file.metadata().map_err(|e| format!("{name}: {e}"))?.len();
        if bytes == 0 {
            return Err(format!("{name} is empty"));
        }
        if bytes > MAX_STEM_BYTES {
            return Err(format!(
                "{name} is {bytes} bytes, more than the {} MiB a stem may have",
                MAX_STEM_BYTES / 1024 / 1024
            ));
        }
        let mut head = [0u8; SNIFF_LEN];
        let read = file.read(&mut head).map_err(|e| format!("{name}: {e}"))?;
        let format = sniff(&head[..read]).ok_or_else(|| {
            format!("{name} is not audio (expected WAV, MP3, FLAC, OGG or M4A/AAC)")
        })?;
        let mut hasher = Sha256::new();
        hasher.update(&head[..read]);
        std::io::copy(&mut file, &mut hasher).map_err(|e| format!("{name}: {e}"))?;
        Ok(CheckedFile {
            sha256: hex::encode(hasher.finalize()),
            bytes,
            format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_and_hashes_audio_and_refuses_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let wav = dir.path().join("a.wav");
        std::fs::write(&wav, b"RIFF\x04\0\0\0WAVEdata").unwrap();
        let checked = DiskFiles.check(&wav).unwrap();
        assert_eq!((checked.bytes, checked.format), (16, AudioFormat::Wav));
        assert_eq!(
            checked.sha256,
            hex::encode(Sha256::digest(b"RIFF\x04\0\0\0WAVEdata"))
        );

        let text = dir.path().join("notes.wav");
        std::fs::write(&text, b"these are lyrics, not audio").unwrap();
        assert!(DiskFiles
            .check(&text)
            .unwrap_err()
            .ends_with("notes.wav is not audio (expected WAV, MP3, FLAC, OGG or M4A/AAC)"));
        let empty = dir.path().join("empty.wav");
        std::fs::write(&empty, b"").unwrap();
        assert!(DiskFiles
            .check(&empty)
            .unwrap_err()
            .ends_with("empty.wav is empty"));
        assert!(DiskFiles.check(&dir.path().join("missing.wav")).is_err());
    }

    #[test]
    fn globs_are_relative_to_the_base_and_sorted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("in")).unwrap();
        for name in ["b.wav", "a.wav", "c.txt"] {
            std::fs::write(dir.path().join("in").join(name), b"x").unwrap();
        }
        let found = DiskFiles.glob(dir.path(), "in/*.wav").unwrap();
        let names: Vec<_> = found
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["a.wav", "b.wav"]);
        assert!(DiskFiles.glob(dir.path(), "in/*.flac").unwrap().is_empty());
    }
}
