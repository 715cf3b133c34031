//! Local stem files: finding them (glob), checking that they are audio of a sane size, and
//! hashing their content. The manifest reaches the disk only through [`LocalFiles`], so
//! its validation stays pure and tests can hand it fakes.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::audio_format::{sniff, AudioFormat, SNIFF_LEN};

/// The largest stem accepted: far above any vocal stem, far below what an upload could
/// carry in one go.
pub const MAX_STEM_BYTES: u64 = 100 * 1024 * 1024;

/// What checking a stem file found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedFile {
    /// Hex sha256 of its content, whatever that content is: a file that cannot be sent
    /// still gives its variants their ids.
    pub sha256: String,
    /// Its size.
    pub bytes: u64,
    /// Its container format, or why it cannot be sent as a stem (empty, not audio, too
    /// large), naming the file.
    pub format: Result<AudioFormat, String>,
}

/// The file system as the manifest sees it.
pub trait LocalFiles {
    /// The files matching `pattern` (relative patterns are relative to `base`), sorted.
    /// A wildcard never matches a name starting with "." (`._ballad.wav`, `.DS_Store`,
    /// a `.cache/` folder), in any segment of the path.
    fn glob(&self, base: &Path, pattern: &str) -> Result<Vec<PathBuf>, String>;

    /// Hashes `path` and checks that it is a non-empty audio file within
    /// [`MAX_STEM_BYTES`] (the verdict is [`CheckedFile::format`]); an error only when the
    /// file cannot be read, naming it.
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
        // A leading dot must be written to be matched: the glob crate then also skips
        // hidden folders when it walks `*` and `**` segments.
        let options = glob::MatchOptions {
            require_literal_leading_dot: true,
            ..glob::MatchOptions::new()
        };
        let entries = glob::glob_with(full, options)
            .map_err(|e| format!("{pattern:?} is not a glob pattern ({e})"))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        Ok(files)
    }

    fn check(&self, path: &Path) -> Result<CheckedFile, String> {
        let name = normalized(path);
        let name = name.display();
        let mut file = std::fs::File::open(path).map_err(|e| format!("{name}: {e}"))?;
        let bytes = file.metadata().map_err(|e| format!("{name}: {e}"))?.len();
        let mut head = [0u8; SNIFF_LEN];
        let read = file.read(&mut head).map_err(|e| format!("{name}: {e}"))?;
        let mut hasher = Sha256::new();
        hasher.update(&head[..read]);
        std::io::copy(&mut file, &mut hasher).map_err(|e| format!("{name}: {e}"))?;
        let format = if bytes == 0 {
            Err(format!("{name} is empty"))
        } else if bytes > MAX_STEM_BYTES {
            Err(format!(
                "{name} is {bytes} bytes, more than the {} MiB a stem may have",
                MAX_STEM_BYTES / 1024 / 1024
            ))
        } else {
            sniff(&head[..read]).ok_or_else(|| {
                format!("{name} is not audio (expected WAV, MP3, FLAC, OGG or M4A/AAC)")
            })
        };
        Ok(CheckedFile {
            sha256: hex::encode(hasher.finalize()),
            bytes,
            format,
        })
    }
}

/// `path` as messages print it: `.` segments dropped and each `..` taking back the segment
/// before it, lexically (symlinks are not resolved: this is for reading, not for opening).
pub fn normalized(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                // Above the root is the root.
                Some(Component::RootDir | Component::Prefix(_)) => {}
                Some(Component::ParentDir | Component::CurDir) | None => out.push(".."),
            },
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_and_hashes_audio_and_names_what_cannot_be_sent() {
        let dir = tempfile::tempdir().unwrap();
        let wav = dir.path().join("a.wav");
        std::fs::write(&wav, b"RIFF\x04\0\0\0WAVEdata").unwrap();
        let checked = DiskFiles.check(&wav).unwrap();
        assert_eq!((checked.bytes, checked.format), (16, Ok(AudioFormat::Wav)));
        assert_eq!(
            checked.sha256,
            hex::encode(Sha256::digest(b"RIFF\x04\0\0\0WAVEdata"))
        );

        // A file that is not audio, or empty, is still hashed: its variants keep their ids.
        let lyrics = b"these are lyrics, not audio";
        let text = dir.path().join("notes.wav");
        std::fs::write(&text, lyrics).unwrap();
        let checked = DiskFiles.check(&text).unwrap();
        assert_eq!(
            (checked.sha256, checked.bytes),
            (hex::encode(Sha256::digest(lyrics)), lyrics.len() as u64)
        );
        assert!(checked
            .format
            .unwrap_err()
            .ends_with("notes.wav is not audio (expected WAV, MP3, FLAC, OGG or M4A/AAC)"));
        let empty = dir.path().join("empty.wav");
        std::fs::write(&empty, b"").unwrap();
        let checked = DiskFiles.check(&empty).unwrap();
        assert_eq!(
            (checked.sha256, checked.bytes),
            (hex::encode(Sha256::digest(b"")), 0)
        );
        assert!(checked.format.unwrap_err().ends_with("empty.wav is empty"));

        // A file that cannot be read at all cannot be hashed: that stays an error.
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

    #[test]
    fn globs_never_match_names_starting_with_a_dot() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "in/a.wav",
            "in/._a.wav",
            "in/.DS_Store",
            "in/.sub/b.wav",
            "in/sub/c.wav",
            ".hidden/d.wav",
        ] {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"x").unwrap();
        }
        let found = |pattern: &str| -> Vec<String> {
            DiskFiles
                .glob(dir.path(), pattern)
                .unwrap()
                .iter()
                .map(|p| {
                    let relative = p.strip_prefix(dir.path()).unwrap();
                    relative.to_str().unwrap().replace('\\', "/")
                })
                .collect()
        };
        assert_eq!(found("in/*"), ["in/a.wav"]);
        assert_eq!(found("in/?*.wav"), ["in/a.wav"]);
        assert_eq!(found("*/*.wav"), ["in/a.wav"]);
        assert_eq!(found("in/*/*.wav"), ["in/sub/c.wav"]);
        assert_eq!(found("**/*.wav"), ["in/a.wav", "in/sub/c.wav"]);
        // A dot the manifest writes itself is a name, not a match.
        assert_eq!(found(".hidden/*.wav"), [".hidden/d.wav"]);
    }

    #[test]
    fn paths_print_lexically_normalised() {
        for (path, expected) in [
            ("manifests/../stems/x.wav", "stems/x.wav"),
            ("./stems/./x.wav", "stems/x.wav"),
            ("/m/manifests/../stems/x.wav", "/m/stems/x.wav"),
            ("../stems/x.wav", "../stems/x.wav"),
            ("a/../../x.wav", "../x.wav"),
            ("/../x.wav", "/x.wav"),
            ("a/..", "."),
            ("./", "."),
            ("stems/x.wav", "stems/x.wav"),
        ] {
            assert_eq!(normalized(Path::new(path)), Path::new(expected), "{path}");
        }
    }
}
