//! A track's waveform for the listening page: the peak of each of [`WAVE_POINTS`]
//! stretches of a WAV file, as characters of [`WAVE_ALPHABET`]. Drawn by the run as each
//! track lands (off the async threads), and by `stembatch report` for the others.

use std::path::Path;

/// Points of a track's waveform: enough to see silence, clipping and the shape of a take.
pub const WAVE_POINTS: usize = 200;

/// Levels of one waveform point, as one character each of [`WAVE_ALPHABET`]; the top level
/// is kept for points that reach full scale (clipping).
pub const WAVE_ALPHABET: &[u8; 64] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_";

/// A sample at or above this share of full scale counts as clipped.
const CLIP_LEVEL: f32 = 0.999;

/// Frames decoded per waveform point at most: a long track is sampled in evenly spaced
/// windows instead of decoded whole, so that a folder of long WAVs is drawn in seconds.
const WINDOW_FRAMES: u32 = 4096;

/// The waveform of a WAV file: the peak of each of [`WAVE_POINTS`] stretches, as
/// characters of [`WAVE_ALPHABET`]; `None` when the file is not a WAV hound can read.
pub fn waveform(path: &Path) -> Option<String> {
    // A generated track is a few MiB: one read, then seeks in memory, instead of a
    // buffered file whose buffer every one of the seeks below throws away.
    const READ_WHOLE: u64 = 64 << 20;
    if std::fs::metadata(path).ok()?.len() <= READ_WHOLE {
        let bytes = std::fs::read(path).ok()?;
        return peaks_of(hound::WavReader::new(std::io::Cursor::new(bytes)).ok()?);
    }
    peaks_of(hound::WavReader::open(path).ok()?)
}

/// The waveform of an open WAV.
fn peaks_of<R: std::io::Read + std::io::Seek>(mut reader: hound::WavReader<R>) -> Option<String> {
    let spec = reader.spec();
    let frames = reader.duration();
    let channels = u32::from(spec.channels.max(1));
    let mut peaks = vec![0f32; WAVE_POINTS];
    if frames > 0 {
        for (point, peak) in peaks.iter_mut().enumerate() {
            let start = (u64::from(frames) * point as u64 / WAVE_POINTS as u64) as u32;
            let end = (u64::from(frames) * (point as u64 + 1) / WAVE_POINTS as u64) as u32;
            let count = end.saturating_sub(start).min(WINDOW_FRAMES) * channels;
            reader.seek(start).ok()?;
            *peak = window_peak(&mut reader, spec, count as usize)?;
        }
    }
    Some(encode_wave(&peaks))
}

/// The largest absolute sample of the next `count` samples, as a share of full scale.
fn window_peak<R: std::io::Read>(
    reader: &mut hound::WavReader<R>,
    spec: hound::WavSpec,
    count: usize,
) -> Option<f32> {
    let mut peak = 0f32;
    match spec.sample_format {
        hound::SampleFormat::Float => {
            for sample in reader.samples::<f32>().take(count) {
                peak = peak.max(sample.ok()?.abs());
            }
        }
        hound::SampleFormat::Int => {
            let full = (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            for sample in reader.samples::<i32>().take(count) {
                peak = peak.max((sample.ok()? as f32).abs() / full);
            }
        }
    }
    Some(peak)
}

/// Peaks (0..=1) as waveform characters; the top character only for clipping.
fn encode_wave(peaks: &[f32]) -> String {
    let top = WAVE_ALPHABET.len() - 1;
    peaks
        .iter()
        .map(|&peak| {
            let level = match peak >= CLIP_LEVEL {
                true => top,
                false => ((peak.clamp(0.0, 1.0) * top as f32).round() as usize).min(top - 1),
            };
            char::from(WAVE_ALPHABET[level])
        })
        .collect()
}
