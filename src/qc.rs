//! Quality control of a downloaded track: decode it, measure it, give a verdict. Providers
//! sometimes answer "success" with audio that is silent, cut short or unplayable; this
//! module says so in four CSV columns (`decoded_s`, `peak_dbfs`, `lufs`, `qc`). It never
//! deletes, moves or rewrites a track: paid audio is kept whatever its verdict.
//!
//! [`check`] (and [`analyze`], its verdict alone) is the one function with I/O: it reads
//! and decodes one file with `symphonia` (WAV, MP3, FLAC, Ogg/Vorbis, AAC/M4A), once, and
//! measures the levels, the loudness ([`loudness`]) and the listening page's waveform
//! ([`crate::waveform::Peaks`]) from the same samples, as they are decoded. It is CPU work
//! on a blocking thread, never on an async worker. [`verdict`] turns the measurements into
//! a word and is pure.
//!
//! # Measurements
//!
//! - `decoded_s`: decoded frames ÷ sample rate, to the millisecond.
//! - `peak_dbfs`: the highest absolute sample over all channels, in dB relative to full
//!   scale (1.0 after conversion to floating point), to 0.01 dB; `-inf` for digital silence.
//! - `lufs`: integrated loudness after ITU-R BS.1770 / EBU R128 ([`loudness`]:
//!   K-weighting, 400 ms blocks, absolute gate at −70 LUFS, relative gate at −10 LU), to
//!   0.01 LU; `-inf` when no block passes the absolute gate (silence, or a track shorter
//!   than one 400 ms block).
//!
//! # Verdicts and their thresholds
//!
//! The first that applies, in this order:
//!
//! | verdict | when |
//! |---|---|
//! | `undecodable` | the file cannot be opened as audio, or not one frame of it decodes |
//! | `short` | the provider reported a `duration`, and the decoded length is below 90 % of it *and* more than 1 s below it (a cut file; a few hundred ms of encoder padding or rounding is not) |
//! | `silent` | the sample peak is below −60 dBFS, or the integrated loudness is below −70 LUFS (EBU R128's absolute gate: nothing in it counts as programme) for a track of at least one 400 ms block |
//! | `clipped` | a run of at least 3 consecutive samples of one channel at or above −0.01 dBFS (the usual clip-detection rule of mastering meters: one full-scale sample may be a legitimate peak, three in a row are a flattened wave), or at least 0.1 % of all samples at or above −0.01 dBFS |
//! | `ok` | none of these |
//!
//! `short` comes before `silent` so that a file cut to nothing reads as cut, and both
//! before `clipped`, which is the least severe (the track still plays).

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::waveform::Peaks;
use loudness::LoudnessMeter;

mod counts;
pub mod loudness;

pub use counts::QcCounts;

/// Below this integrated loudness a track is silent (EBU R128's absolute gate).
pub const SILENT_LUFS: f64 = -70.0;
/// Below this sample peak a track is silent: at most 1/1000 of full scale.
pub const SILENT_PEAK_DBFS: f64 = -60.0;
/// A sample at or above this level counts as at full scale.
pub const CLIP_LEVEL_DBFS: f64 = -0.01;
/// This many consecutive samples of one channel at full scale make a track clipped.
pub const CLIP_RUN: u64 = 3;
/// This share of all samples at full scale makes a track clipped, even in shorter runs.
pub const CLIP_SHARE: f64 = 0.001;
/// A track decoded to less than this share of the provider's duration ...
pub const SHORT_RATIO: f64 = 0.9;
/// ... and more than this many seconds below it is short.
pub const SHORT_MARGIN_S: f64 = 1.0;
/// EBU R128's gating block: a shorter track has no integrated loudness.
pub const GATING_BLOCK_S: f64 = 0.4;

/// The `qc` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Nothing wrong found.
    Ok,
    /// No audible signal.
    Silent,
    /// Flattened at full scale.
    Clipped,
    /// Far shorter than the provider said.
    Short,
    /// Not playable audio.
    Undecodable,
}

impl Verdict {
    /// The CSV word.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Silent => "silent",
            Verdict::Clipped => "clipped",
            Verdict::Short => "short",
            Verdict::Undecodable => "undecodable",
        }
    }
}

impl Verdict {
    /// The verdict a CSV word names; `None` for any other.
    pub fn from_word(word: &str) -> Option<Verdict> {
        [
            Verdict::Ok,
            Verdict::Silent,
            Verdict::Clipped,
            Verdict::Short,
            Verdict::Undecodable,
        ]
        .into_iter()
        .find(|v| v.as_str() == word)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What quality control found for one track: the four last columns of `results.csv`.
/// The three measurements are `None` for an undecodable track.
#[derive(Clone, Debug, PartialEq)]
pub struct TrackQc {
    /// Decoded length in seconds.
    pub decoded_s: Option<f64>,
    /// Sample peak in dBFS (`-inf` for digital silence).
    pub peak_dbfs: Option<f64>,
    /// Integrated loudness in LUFS (`-inf` when nothing passes the absolute gate).
    pub lufs: Option<f64>,
    /// The verdict.
    pub verdict: Verdict,
}

impl TrackQc {
    /// A track that could not be decoded.
    pub fn undecodable() -> Self {
        TrackQc {
            decoded_s: None,
            peak_dbfs: None,
            lufs: None,
            verdict: Verdict::Undecodable,
        }
    }

    /// The measurements of a decoded track and their verdict against the provider's
    /// `expected` duration.
    pub fn of(measured: &Measurements, expected: Option<f64>) -> Self {
        TrackQc {
            decoded_s: Some(round_to(measured.decoded_s, 1000.0)),
            peak_dbfs: Some(round_to(measured.peak_dbfs, 100.0)),
            lufs: measured.lufs.map(|lufs| round_to(lufs, 100.0)),
            verdict: verdict(measured, expected),
        }
    }
}

/// Rounds to `1 / per_unit`; infinities stay as they are.
fn round_to(value: f64, per_unit: f64) -> f64 {
    if value.is_finite() {
        (value * per_unit).round() / per_unit
    } else {
        value
    }
}

/// What decoding a track measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurements {
    /// Decoded length in seconds.
    pub decoded_s: f64,
    /// Sample peak in dBFS (`-inf` for digital silence).
    pub peak_dbfs: f64,
    /// Integrated loudness in LUFS; `None` when the decoder's output could not be measured
    /// (a channel count or sample rate the meter refuses).
    pub lufs: Option<f64>,
    /// The longest run of consecutive samples of one channel at or above
    /// [`CLIP_LEVEL_DBFS`].
    pub longest_clip_run: u64,
    /// The share of all samples at or above [`CLIP_LEVEL_DBFS`].
    pub clipped_share: f64,
}

/// The verdict on a decoded track (see the module doc for the thresholds).
pub fn verdict(m: &Measurements, expected: Option<f64>) -> Verdict {
    let short = expected.is_some_and(|expected| {
        m.decoded_s < expected * SHORT_RATIO && expected - m.decoded_s > SHORT_MARGIN_S
    });
    let inaudible = m
        .lufs
        .is_some_and(|lufs| lufs < SILENT_LUFS && m.decoded_s >= GATING_BLOCK_S);
    if short {
        Verdict::Short
    } else if m.peak_dbfs < SILENT_PEAK_DBFS || inaudible {
        Verdict::Silent
    } else if m.longest_clip_run >= CLIP_RUN || m.clipped_share >= CLIP_SHARE {
        Verdict::Clipped
    } else {
        Verdict::Ok
    }
}

/// Why a file could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum QcError {
    /// The file could not be opened.
    #[error("cannot open {path}: {cause}")]
    Open {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        cause: std::io::Error,
    },
    /// The decoder refused it.
    #[error("{path} is not decodable audio: {cause}")]
    Decode {
        /// The file.
        path: std::path::PathBuf,
        /// What the decoder said.
        #[source]
        cause: symphonia::core::errors::Error,
    },
    /// It holds no audio track.
    #[error("{path} holds no audio track")]
    NoAudio {
        /// The file.
        path: std::path::PathBuf,
    },
}

/// What one decode of a track gives: the verdict and its measurements, and the
/// waveform of the listening page (`None` when nothing decodes).
#[derive(Clone, Debug, PartialEq)]
pub struct Checked {
    /// The CSV's four columns.
    pub qc: TrackQc,
    /// [`crate::waveform::WAVE_POINTS`] characters of [`crate::waveform::WAVE_ALPHABET`].
    pub wave: Option<String>,
}

/// Decodes `path` and judges it against the provider's `expected` duration (seconds).
/// Blocking and CPU-bound: call it from a blocking thread. A file that cannot be decoded
/// is a verdict, not an error; why is logged.
pub fn analyze(path: &Path, expected: Option<f64>) -> TrackQc {
    check(path, expected).qc
}

/// As [`analyze`], and the track's waveform from the same decode.
pub fn check(path: &Path, expected: Option<f64>) -> Checked {
    checked(measure(path), expected)
}

/// As [`check`], from the bytes of the file at `path` already in memory (a download
/// that just landed there): the file is not read again. `path` gives the format's hint
/// (its extension) and names the file in errors.
pub fn check_bytes(bytes: bytes::Bytes, path: &Path, expected: Option<f64>) -> Checked {
    let source = Box::new(std::io::Cursor::new(bytes));
    checked(measure_source(source, path), expected)
}

fn checked(measured: Result<(Measurements, String), QcError>, expected: Option<f64>) -> Checked {
    match measured {
        Ok((measured, wave)) => Checked {
            qc: TrackQc::of(&measured, expected),
            wave: Some(wave),
        },
        Err(err) => {
            tracing::warn!(error = %err, "track cannot be decoded");
            Checked {
                qc: TrackQc::undecodable(),
                wave: None,
            }
        }
    }
}

/// The length of the audio file at `path` in seconds, from its header (frames ÷ rate),
/// without decoding it; `None` when the header does not say or the file is not audio.
pub fn header_seconds(path: &Path) -> Option<f64> {
    use symphonia::core::formats::probe::Hint;
    use symphonia::core::formats::{FormatOptions, TrackType};
    use symphonia::core::io::MediaSourceStream;
    use symphonia::core::meta::MetadataOptions;

    let file = std::fs::File::open(path).ok()?;
    let stream = MediaSourceStream::new(Box::new(file), Default::default());
    let mut hint = Hint::new();
    if let Some(extension) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(extension);
    }
    let format = symphonia::default::get_probe()
        .probe(
            &hint,
            stream,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .ok()?;
    let track = format.default_track(TrackType::Audio)?;
    let rate = track.codec_params.as_ref()?.audio()?.sample_rate?;
    let frames = track.num_frames?;
    (rate > 0).then(|| frames as f64 / f64::from(rate))
}

/// Decodes every frame of `path` once and measures it: its levels and its waveform.
/// Packets that fail to decode are skipped, as players do; an error of the container ends
/// the track where it occurs.
pub fn measure(path: &Path) -> Result<(Measurements, String), QcError> {
    let file = std::fs::File::open(path).map_err(|cause| QcError::Open {
        path: path.to_owned(),
        cause,
    })?;
    measure_source(Box::new(file), path)
}

/// As [`measure`], reading `source`, which holds the file at `path`.
fn measure_source(
    source: Box<dyn symphonia::core::io::MediaSource>,
    path: &Path,
) -> Result<(Measurements, String), QcError> {
    use symphonia::core::codecs::audio::AudioDecoderOptions;
    use symphonia::core::errors::Error;
    use symphonia::core::formats::probe::Hint;
    use symphonia::core::formats::{FormatOptions, TrackType};
    use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
    use symphonia::core::meta::MetadataOptions;

    let decode_error = |cause| QcError::Decode {
        path: path.to_owned(),
        cause,
    };
    let no_audio = || QcError::NoAudio {
        path: path.to_owned(),
    };
    // Reads of 64 KiB: a track is read once, front to back, and a larger buffer costs
    // more to allocate and clear (per track) than it saves in reads.
    let options = MediaSourceStreamOptions {
        buffer_len: 1 << 16,
    };
    let stream = MediaSourceStream::new(source, options);
    let mut hint = Hint::new();
    if let Some(extension) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(extension);
    }
    let mut format = symphonia::default::get_probe()
        .probe(
            &hint,
            stream,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(decode_error)?;
    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(no_audio)?;
    let track_id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(no_audio)?;
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(params, &AudioDecoderOptions::default())
        .map_err(decode_error)?;
    let pcm16 = pcm16_layout(params);
    let mut meter = Meter::default();
    let mut planes: Vec<Vec<f32>> = Vec::new();
    let mut first_error = None;
    loop {
        let packet = match format.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            // A cut or damaged container: the track ends here.
            Err(err) => {
                first_error.get_or_insert(err);
                break;
            }
        };
        if packet.track_id != track_id {
            continue;
        }
        if let Some((channels, rate)) = pcm16 {
            pcm16_to_planes(&packet.data, channels, &mut planes);
            let slices: Vec<&[f32]> = planes.iter().map(Vec::as_slice).collect();
            meter.add(&slices, rate);
            continue;
        }
        match decoder.decode(&packet) {
            Ok(buffer) => {
                let rate = buffer.spec().rate();
                buffer.copy_to_vecs_planar(&mut planes);
                let slices: Vec<&[f32]> = planes.iter().map(Vec::as_slice).collect();
                meter.add(&slices, rate);
            }
            Err(Error::DecodeError(_)) | Err(Error::IoError(_)) => {}
            Err(err) => {
                first_error.get_or_insert(err);
                break;
            }
        }
    }
    match first_error {
        Some(err) if meter.frames == 0 => Err(decode_error(err)),
        _ => Ok(meter.finish()),
    }
}

/// The channel count and rate of a 16-bit little-endian PCM track (what the provider's
/// WAVs are), which [`measure`] converts itself; `None` for any other coding, which
/// symphonia's decoder handles. Symphonia's PCM decoder renders into its own buffer
/// sample by sample and is then copied to planes: a third of the QC's CPU for such a
/// track, where this is one pass straight from the packet's bytes to the planes, with
/// the same values (`i16 as f32 / 32768`).
fn pcm16_layout(
    params: &symphonia::core::codecs::audio::AudioCodecParameters,
) -> Option<(usize, u32)> {
    use symphonia::core::codecs::audio::well_known::CODEC_ID_PCM_S16LE;
    let width_is_16 = |bits: Option<u32>| bits.is_none_or(|bits| bits == 16);
    let channels = params.channels.as_ref()?.count();
    let rate = params.sample_rate?;
    (params.codec == CODEC_ID_PCM_S16LE
        && width_is_16(params.bits_per_sample)
        && width_is_16(params.bits_per_coded_sample)
        && channels > 0
        && rate > 0)
        .then_some((channels, rate))
}

/// Converts interleaved 16-bit little-endian frames to one `f32` plane per channel, as
/// symphonia's PCM decoder does (a trailing partial frame is dropped, as there).
fn pcm16_to_planes(data: &[u8], channels: usize, planes: &mut Vec<Vec<f32>>) {
    let frames = data.len() / (2 * channels);
    planes.resize_with(channels, Vec::new);
    if channels == 1 {
        // The provider's tracks: a straight loop the compiler vectorises.
        let plane = &mut planes[0];
        plane.clear();
        plane.extend(
            data.chunks_exact(2)
                .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32_768.0),
        );
        return;
    }
    for (channel, plane) in planes.iter_mut().enumerate() {
        plane.clear();
        plane.extend(
            data[..frames * 2 * channels]
                .chunks_exact(2 * channels)
                .map(|frame| {
                    let at = 2 * channel;
                    f32::from(i16::from_le_bytes([frame[at], frame[at + 1]])) / 32_768.0
                }),
        );
    }
}

/// The running measurements of a decode.
#[derive(Default)]
struct Meter {
    /// The format (rate, channels) of the first decoded buffer, and its loudness meter;
    /// buffers of another format (a stream that changes mid-way) count for length, peak
    /// and waveform only.
    loudness: Option<(u32, usize, Option<LoudnessMeter>)>,
    peaks: Peaks,
    /// Each channel's peak in the buffer being added (reused from buffer to buffer).
    channel_peaks: Vec<f32>,
    frames: u64,
    seconds: f64,
    peak: f32,
    samples: u64,
    at_full_scale: u64,
    /// The current run at full scale, per channel.
    runs: Vec<u64>,
    longest_run: u64,
}

impl Meter {
    /// Adds a decoded buffer: one slice per channel, all of one length.
    fn add(&mut self, planes: &[&[f32]], rate: u32) {
        let channels = planes.len();
        let frames = planes.iter().map(|p| p.len()).min().unwrap_or(0);
        if channels == 0 || rate == 0 || frames == 0 {
            return;
        }
        let planes: Vec<&[f32]> = planes.iter().map(|p| &p[..frames]).collect();
        self.frames += frames as u64;
        self.seconds += frames as f64 / f64::from(rate);
        let (first_rate, first_channels, loudness) = self
            .loudness
            .get_or_insert_with(|| (rate, channels, LoudnessMeter::new(channels, rate)));
        if (*first_rate, *first_channels) == (rate, channels) {
            if let Some(loudness) = loudness {
                loudness.add_planar(&planes);
            }
        }
        self.peaks
            .add_planar_with_peaks(&planes, &mut self.channel_peaks);
        if self.runs.len() < channels {
            self.runs.resize(channels, 0);
        }
        let full_scale = 10f32.powf(CLIP_LEVEL_DBFS as f32 / 20.0);
        let channel_peaks = self.channel_peaks.iter();
        for ((run, plane), &peak) in self.runs.iter_mut().zip(&planes).zip(channel_peaks) {
            self.peak = self.peak.max(peak);
            if peak < full_scale {
                // The common case: nothing at full scale, any run ends here.
                *run = 0;
                continue;
            }
            for sample in plane.iter() {
                if sample.abs() >= full_scale {
                    *run += 1;
                    self.at_full_scale += 1;
                    self.longest_run = self.longest_run.max(*run);
                } else {
                    *run = 0;
                }
            }
        }
        self.samples += (frames * channels) as u64;
    }

    fn finish(self) -> (Measurements, String) {
        let lufs = match &self.loudness {
            Some((_, _, Some(meter))) => Some(meter.integrated()),
            Some((_, _, None)) => None,
            // Nothing decoded: no block, as for any track under 400 ms.
            None => Some(f64::NEG_INFINITY),
        };
        let measurements = Measurements {
            decoded_s: self.seconds,
            peak_dbfs: 20.0 * f64::from(self.peak).log10(),
            lufs,
            longest_clip_run: self.longest_run,
            clipped_share: if self.samples == 0 {
                0.0
            } else {
                self.at_full_scale as f64 / self.samples as f64
            },
        };
        (measurements, self.peaks.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(decoded_s: f64, peak_dbfs: f64, lufs: f64) -> Measurements {
        Measurements {
            decoded_s,
            peak_dbfs,
            lufs: Some(lufs),
            longest_clip_run: 0,
            clipped_share: 0.0,
        }
    }

    fn clipping(run: u64, share: f64) -> Measurements {
        Measurements {
            longest_clip_run: run,
            clipped_share: share,
            ..measured(20.0, -0.001, -9.0)
        }
    }

    #[test]
    fn the_verdict_table() {
        let ninf = f64::NEG_INFINITY;
        let table: Vec<(&str, Measurements, Option<f64>, Verdict)> = vec![
            (
                "a normal track",
                measured(20.0, -1.9, -16.0),
                Some(20.0),
                Verdict::Ok,
            ),
            (
                "no duration given",
                measured(20.0, -1.9, -16.0),
                None,
                Verdict::Ok,
            ),
            (
                "digital silence",
                measured(20.0, ninf, ninf),
                Some(20.0),
                Verdict::Silent,
            ),
            (
                "hiss under -60 dBFS",
                measured(20.0, -84.0, ninf),
                Some(20.0),
                Verdict::Silent,
            ),
            (
                "peak just at -60 dBFS, gated out",
                measured(20.0, -60.0, -75.0),
                None,
                Verdict::Silent,
            ),
            (
                "quiet but audible",
                measured(20.0, -40.0, -55.0),
                None,
                Verdict::Ok,
            ),
            (
                "below the absolute gate",
                measured(20.0, -50.0, -70.5),
                None,
                Verdict::Silent,
            ),
            (
                "under one block: loudness unmeasurable",
                measured(0.3, -3.0, ninf),
                None,
                Verdict::Ok,
            ),
            (
                "loudness unknown, peak decides",
                Measurements {
                    lufs: None,
                    ..measured(5.0, -3.0, 0.0)
                },
                None,
                Verdict::Ok,
            ),
            (
                "2 s of 20 s",
                measured(2.0, -1.9, -16.0),
                Some(20.0),
                Verdict::Short,
            ),
            (
                "89 % of 20 s",
                measured(17.8, -1.9, -16.0),
                Some(20.0),
                Verdict::Short,
            ),
            (
                "91 % of 20 s",
                measured(18.2, -1.9, -16.0),
                Some(20.0),
                Verdict::Ok,
            ),
            (
                "under 90 % but within 1 s",
                measured(4.2, -1.9, -16.0),
                Some(5.0),
                Verdict::Ok,
            ),
            (
                "longer than said",
                measured(25.0, -1.9, -16.0),
                Some(20.0),
                Verdict::Ok,
            ),
            (
                "nothing decoded of 20 s",
                measured(0.0, ninf, ninf),
                Some(20.0),
                Verdict::Short,
            ),
            (
                "nothing decoded, no duration",
                measured(0.0, ninf, ninf),
                None,
                Verdict::Silent,
            ),
            (
                "short and silent",
                measured(2.0, ninf, ninf),
                Some(20.0),
                Verdict::Short,
            ),
            (
                "two samples at full scale",
                clipping(2, 0.0001),
                None,
                Verdict::Ok,
            ),
            (
                "three in a row",
                clipping(3, 0.0001),
                None,
                Verdict::Clipped,
            ),
            (
                "0.1 % of samples, in pairs",
                clipping(2, 0.001),
                None,
                Verdict::Clipped,
            ),
            (
                "short wins over clipped",
                Measurements {
                    decoded_s: 2.0,
                    ..clipping(50, 0.2)
                },
                Some(20.0),
                Verdict::Short,
            ),
        ];
        for (what, measurements, expected, want) in table {
            assert_eq!(verdict(&measurements, expected), want, "{what}");
        }
    }

    #[test]
    fn measurements_are_rounded_and_an_undecodable_track_has_none() {
        let qc = TrackQc::of(&measured(19.999_49, -1.938_2, -16.004), Some(20.0));
        assert_eq!(
            (qc.decoded_s, qc.peak_dbfs, qc.lufs, qc.verdict),
            (Some(19.999), Some(-1.94), Some(-16.0), Verdict::Ok)
        );
        let silent = TrackQc::of(&measured(20.0, f64::NEG_INFINITY, f64::NEG_INFINITY), None);
        assert_eq!(silent.peak_dbfs, Some(f64::NEG_INFINITY));
        let none = TrackQc::undecodable();
        assert_eq!(
            (none.decoded_s, none.peak_dbfs, none.lufs),
            (None, None, None)
        );
        assert_eq!(none.verdict.to_string(), "undecodable");
    }

    const RATE: u32 = 44_100;

    fn wav_file(dir: &tempfile::TempDir, name: &str, samples: &[f32]) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, crate::sim::audio::encode_wav(samples, RATE)).unwrap();
        path
    }

    fn tone(seconds: f64, amplitude: f64) -> Vec<f32> {
        (0..(seconds * f64::from(RATE)) as usize)
            .map(|i| {
                let t = i as f64 / f64::from(RATE);
                (amplitude * (std::f64::consts::TAU * 997.0 * t).sin()) as f32
            })
            .collect()
    }

    #[test]
    fn a_normal_tone_is_ok_with_plausible_levels() {
        let dir = tempfile::tempdir().unwrap();
        let path = wav_file(&dir, "tone.wav", &tone(20.0, 0.5));
        let qc = analyze(&path, Some(20.0));
        assert_eq!(qc.verdict, Verdict::Ok, "{qc:?}");
        assert_eq!(qc.decoded_s, Some(20.0));
        // A sine at half scale peaks at -6.02 dBFS. BS.1770 is calibrated so that a
        // full-scale 1 kHz sine in one channel reads -3.01 LUFS: half scale, 6.02 LU less.
        let peak = qc.peak_dbfs.unwrap();
        assert!((peak - -6.02).abs() < 0.05, "{peak}");
        let lufs = qc.lufs.unwrap();
        assert!((lufs - -9.03).abs() < 0.1, "{lufs}");
    }

    #[test]
    fn all_zeros_are_silent() {
        let dir = tempfile::tempdir().unwrap();
        let path = wav_file(&dir, "zeros.wav", &vec![0.0; RATE as usize * 5]);
        let qc = analyze(&path, Some(5.0));
        assert_eq!(qc.verdict, Verdict::Silent, "{qc:?}");
        assert_eq!(qc.decoded_s, Some(5.0));
        assert_eq!(qc.peak_dbfs, Some(f64::NEG_INFINITY));
        assert_eq!(qc.lufs, Some(f64::NEG_INFINITY));
    }

    #[test]
    fn a_full_scale_square_wave_is_clipped() {
        let dir = tempfile::tempdir().unwrap();
        let square: Vec<f32> = tone(3.0, 1.0)
            .iter()
            .map(|s| if *s >= 0.0 { 1.0 } else { -1.0 })
            .collect();
        let path = wav_file(&dir, "square.wav", &square);
        let qc = analyze(&path, Some(3.0));
        assert_eq!(qc.verdict, Verdict::Clipped, "{qc:?}");
        assert!(qc.peak_dbfs.unwrap() > CLIP_LEVEL_DBFS, "{qc:?}");
        // The same wave 1 dB down is loud but not clipped.
        let quieter: Vec<f32> = square.iter().map(|s| s * 0.89).collect();
        let qc = analyze(&wav_file(&dir, "quieter.wav", &quieter), Some(3.0));
        assert_eq!(qc.verdict, Verdict::Ok, "{qc:?}");
    }

    #[test]
    fn a_two_second_file_declared_twenty_is_short() {
        let dir = tempfile::tempdir().unwrap();
        let path = wav_file(&dir, "cut.wav", &tone(2.0, 0.5));
        let qc = analyze(&path, Some(20.0));
        assert_eq!(qc.verdict, Verdict::Short, "{qc:?}");
        assert_eq!(qc.decoded_s, Some(2.0));
        assert_eq!(analyze(&path, Some(2.0)).verdict, Verdict::Ok);
    }

    #[test]
    fn garbage_after_a_wav_header_is_undecodable() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = b"RIFF\0\0\0\0WAVE".to_vec();
        bytes.extend((0..50_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
        let size = (bytes.len() - 8) as u32;
        bytes[4..8].copy_from_slice(&size.to_le_bytes());
        assert!(
            crate::audio_format::sniff(&bytes).is_some(),
            "passes the sniff"
        );
        let path = dir.path().join("garbage.wav");
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(analyze(&path, Some(20.0)), TrackQc::undecodable());
        assert!(matches!(measure(&path), Err(QcError::Decode { .. })));
        let missing = dir.path().join("missing.wav");
        assert!(matches!(measure(&missing), Err(QcError::Open { .. })));
    }

    #[test]
    fn a_wav_cut_mid_data_decodes_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let whole = crate::sim::audio::encode_wav(&tone(10.0, 0.5), RATE);
        let path = dir.path().join("cut.wav");
        std::fs::write(&path, &whole[..whole.len() / 4]).unwrap();
        let qc = analyze(&path, Some(10.0));
        assert_eq!(qc.verdict, Verdict::Short, "{qc:?}");
        let decoded = qc.decoded_s.unwrap();
        assert!((2.4..=2.6).contains(&decoded), "{decoded}");
    }

    #[test]
    fn bytes_in_memory_are_judged_as_the_same_file_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let whole = crate::sim::audio::encode_wav(&tone(3.0, 0.5), RATE);
        let square: Vec<f32> = tone(3.0, 1.0).iter().map(|s| s.signum()).collect();
        let files: [(&str, Vec<u8>); 4] = [
            ("tone.wav", whole.clone()),
            ("cut.wav", whole[..whole.len() / 3].to_vec()),
            ("square.wav", crate::sim::audio::encode_wav(&square, RATE)),
            (
                "garbage.wav",
                b"RIFF\x10\0\0\0WAVEnot audio at all".to_vec(),
            ),
        ];
        let mut verdicts = Vec::new();
        for (name, bytes) in files {
            let path = dir.path().join(name);
            std::fs::write(&path, &bytes).unwrap();
            let from_disk = check(&path, Some(3.0));
            let from_memory = check_bytes(bytes.into(), &path, Some(3.0));
            assert_eq!(from_memory, from_disk, "{name}");
            verdicts.push(from_memory.qc.verdict);
        }
        let expected = [Verdict::Ok, Verdict::Short, Verdict::Clipped];
        assert_eq!(verdicts, [&expected[..], &[Verdict::Undecodable]].concat());
    }

    /// A 16-bit PCM WAV file of `channels` channels at 22.05 kHz, of interleaved samples.
    fn wav16(interleaved: &[i16], channels: u16) -> Vec<u8> {
        let rate = 22_050u32;
        let data_len = (interleaved.len() * 2) as u32;
        let mut bytes = b"RIFF".to_vec();
        bytes.extend((36 + data_len).to_le_bytes());
        bytes.extend(b"WAVEfmt ");
        bytes.extend(16u32.to_le_bytes());
        bytes.extend(1u16.to_le_bytes());
        bytes.extend(channels.to_le_bytes());
        bytes.extend(rate.to_le_bytes());
        bytes.extend((rate * 2 * u32::from(channels)).to_le_bytes());
        bytes.extend((2 * channels).to_le_bytes());
        bytes.extend(16u16.to_le_bytes());
        bytes.extend(b"data");
        bytes.extend(data_len.to_le_bytes());
        bytes.extend(interleaved.iter().flat_map(|s| s.to_le_bytes()));
        bytes
    }

    #[test]
    fn sixteen_bit_pcm_is_converted_exactly_as_symphonia_decodes_it() {
        use symphonia::core::codecs::audio::AudioDecoderOptions;
        use symphonia::core::formats::probe::Hint;
        use symphonia::core::formats::{FormatOptions, TrackType};
        use symphonia::core::io::MediaSourceStream;
        use symphonia::core::meta::MetadataOptions;

        for channels in [1u16, 2, 3] {
            // Both extremes, zero, and a spread of every magnitude.
            let mut interleaved = vec![i16::MIN, i16::MAX, 0, -1, 1, i16::MIN + 1];
            interleaved.extend((0..30_000i32).map(|i| ((i * 7_919) % 65_536 - 32_768) as i16));
            interleaved.truncate(interleaved.len() / usize::from(channels) * usize::from(channels));
            let bytes = wav16(&interleaved, channels);
            let stream =
                MediaSourceStream::new(Box::new(std::io::Cursor::new(bytes)), Default::default());
            let mut format = symphonia::default::get_probe()
                .probe(
                    Hint::new().with_extension("wav"),
                    stream,
                    FormatOptions::default(),
                    MetadataOptions::default(),
                )
                .unwrap();
            let track = format.default_track(TrackType::Audio).unwrap();
            let params = track
                .codec_params
                .as_ref()
                .unwrap()
                .audio()
                .unwrap()
                .clone();
            assert_eq!(
                pcm16_layout(&params),
                Some((usize::from(channels), 22_050)),
                "{channels} channels"
            );
            let mut decoder = symphonia::default::get_codecs()
                .make_audio_decoder(&params, &AudioDecoderOptions::default())
                .unwrap();
            let (mut want, mut got) = (Vec::<Vec<f32>>::new(), Vec::new());
            let mut frames = 0;
            while let Some(packet) = format.next_packet().unwrap() {
                decoder
                    .decode(&packet)
                    .unwrap()
                    .copy_to_vecs_planar(&mut want);
                pcm16_to_planes(&packet.data, usize::from(channels), &mut got);
                assert_eq!(got, want, "{channels} channels");
                frames += got[0].len();
            }
            assert_eq!(frames * usize::from(channels), interleaved.len());
        }
    }

    /// How long `analyze` takes on a 20 s track; printed with `--nocapture`. Run it in
    /// release for the figure that matters: `cargo test --release --lib qc::tests::timing
    /// -- --ignored --nocapture`.
    #[test]
    #[ignore = "a timing, not a check"]
    fn timing() {
        let dir = tempfile::tempdir().unwrap();
        for (name, rate) in [("sim 22.05 kHz mono", 22_050u32), ("44.1 kHz mono", RATE)] {
            let samples = tone(20.0 * f64::from(rate) / f64::from(RATE), 0.5);
            let path = dir.path().join("t.wav");
            std::fs::write(&path, crate::sim::audio::encode_wav(&samples, rate)).unwrap();
            let runs = 5;
            let started = std::time::Instant::now();
            for _ in 0..runs {
                assert_eq!(analyze(&path, Some(20.0)).verdict, Verdict::Ok);
            }
            let each = started.elapsed() / runs;
            println!("analyze, 20 s {name}: {each:?} per track");
        }
    }
}
