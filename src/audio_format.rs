//! Recognising audio by its leading bytes, so an HTML error page or an empty body served
//! with status 200 is never taken for a track. Pure.

/// The container formats stembatch accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AudioFormat {
    /// RIFF/WAVE
    Wav,
    /// MPEG audio, with or without an ID3 tag
    Mp3,
    /// FLAC
    Flac,
    /// Ogg (Vorbis, Opus)
    Ogg,
    /// MPEG-4 audio (M4A)
    M4a,
    /// Raw AAC in ADTS frames
    Aac,
}

/// How many leading bytes [`sniff`] needs to decide.
pub const SNIFF_LEN: usize = 12;

/// The format of a file starting with `head`, if it is audio.
pub fn sniff(head: &[u8]) -> Option<AudioFormat> {
    match head {
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'A', b'V', b'E', ..] => Some(AudioFormat::Wav),
        [b'I', b'D', b'3', ..] => Some(AudioFormat::Mp3),
        [b'f', b'L', b'a', b'C', ..] => Some(AudioFormat::Flac),
        [b'O', b'g', b'g', b'S', ..] => Some(AudioFormat::Ogg),
        [_, _, _, _, b'f', b't', b'y', b'p', ..] => Some(AudioFormat::M4a),
        // ADTS: 12 sync bits, then layer 00.
        [0xFF, second, ..] if second & 0xF6 == 0xF0 => Some(AudioFormat::Aac),
        // MPEG frame sync: 11 set bits, a valid version and layer.
        [0xFF, second, ..] if second & 0xE0 == 0xE0 && second & 0x06 != 0 => Some(AudioFormat::Mp3),
        _ => None,
    }
}

/// The file name extensions of the formats stembatch accepts, lowercase: what a glob's
/// match must end with to be taken for a stem at all (`readme.txt` beside the stems is
/// not one).
pub const AUDIO_EXTENSIONS: [&str; 10] = [
    "wav", "wave", "mp3", "flac", "ogg", "oga", "opus", "m4a", "mp4", "aac",
];

/// Whether `path`'s extension, in any case, is one of [`AUDIO_EXTENSIONS`].
pub fn has_audio_extension(path: &std::path::Path) -> bool {
    path.extension()
        .and_then(|ext| ext.to_str())
        .is_some_and(|ext| AUDIO_EXTENSIONS.iter().any(|a| ext.eq_ignore_ascii_case(a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_names_are_known_by_their_extension_in_any_case() {
        use std::path::Path;
        for name in [
            "a.wav", "B.WAV", "c.Mp3", "d.flac", "e.ogg", "f.m4a", "g.aac", "h.opus",
        ] {
            assert!(has_audio_extension(Path::new(name)), "{name}");
        }
        for name in [
            "readme.txt",
            "notes",
            "cover.jpg",
            "wav",
            "a.wav.txt",
            ".wav",
        ] {
            assert!(!has_audio_extension(Path::new(name)), "{name}");
        }
    }

    #[test]
    fn recognises_audio_and_refuses_error_pages() {
        assert_eq!(sniff(b"RIFF\x24\x08\0\0WAVEfmt "), Some(AudioFormat::Wav));
        assert_eq!(sniff(b"ID3\x04\0\0\0\0\0\0\0\0"), Some(AudioFormat::Mp3));
        assert_eq!(sniff(&[0xFF, 0xFB, 0x90, 0x64]), Some(AudioFormat::Mp3));
        assert_eq!(sniff(&[0xFF, 0xF1, 0x50, 0x80]), Some(AudioFormat::Aac));
        assert_eq!(sniff(b"fLaC\0\0\0\x22"), Some(AudioFormat::Flac));
        assert_eq!(sniff(b"OggS\0\x02"), Some(AudioFormat::Ogg));
        assert_eq!(sniff(b"\0\0\0\x20ftypM4A "), Some(AudioFormat::M4a));
        assert_eq!(sniff(b"<!DOCTYPE html>"), None);
        assert_eq!(sniff(b"{\"code\":404}"), None);
        assert_eq!(sniff(b""), None);
        assert_eq!(sniff(b"RIFF"), None);
    }
}
