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

#[cfg(test)]
mod tests {
    use super::*;

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
