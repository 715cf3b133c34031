//! Synthesised backing tracks for the simulator: a chord progression whose instruments,
//! tempo and colour follow words in the tags, rendered to a 16-bit mono WAV.
//!
//! Deterministic: the same tags, seed and length give the same bytes, so tests can compare
//! a downloaded file with what the simulator serves.

use std::f64::consts::TAU;
use std::io::Cursor;

/// Samples per second of the generated tracks: plenty for a preview, small files.
pub const SAMPLE_RATE: u32 = 22_050;

/// What the tags ask for.
#[derive(Clone, Debug, PartialEq)]
pub struct Style {
    /// Beats per minute.
    pub tempo_bpm: f64,
    /// Struck chords with a decaying tone.
    pub piano: bool,
    /// Sustained, bowed chords.
    pub strings: bool,
    /// A bass line on the chord roots.
    pub bass: bool,
    /// Kick, snare and hats.
    pub drums: bool,
    /// Muffled, with vinyl crackle.
    pub lofi: bool,
    /// Seventh chords on a ii-V-I.
    pub jazz: bool,
}

impl Style {
    /// Reads the style words of a tag list; piano and bass when it names no instrument.
    pub fn from_tags(tags: &str) -> Style {
        let tags = tags.to_lowercase();
        let has = |words: &[&str]| words.iter().any(|w| tags.contains(w));
        let tempo_bpm = if has(&["fast", "upbeat", "dance", "energetic"]) {
            140.0
        } else if has(&["slow", "ballad", "ambient", "calm", "relax"]) {
            70.0
        } else {
            100.0
        };
        let mut style = Style {
            tempo_bpm,
            piano: has(&["piano", "keys"]),
            strings: has(&["string", "orchestra", "cinematic", "violin"]),
            bass: has(&["bass", "funk"]),
            drums: has(&["drum", "beat", "rock", "hip", "dance"]),
            lofi: has(&["lofi", "lo-fi", "vinyl", "chill"]),
            jazz: has(&["jazz", "swing"]),
        };
        if !(style.piano || style.strings || style.bass || style.drums) {
            style.piano = true;
            style.bass = true;
        }
        style
    }
}

impl Style {
    /// The style in one byte: two bits of tempo, one per instrument or colour.
    pub fn to_bits(&self) -> u8 {
        let tempo = match self.tempo_bpm as u32 {
            70 => 0,
            140 => 2,
            _ => 1,
        };
        let flags = [
            self.piano,
            self.strings,
            self.bass,
            self.drums,
            self.lofi,
            self.jazz,
        ];
        flags
            .iter()
            .enumerate()
            .fold(tempo, |bits, (i, &on)| bits | (u8::from(on) << (i + 2)))
    }

    /// The style [`Style::to_bits`] encoded.
    pub fn from_bits(bits: u8) -> Style {
        let flag = |i: u8| bits & (1 << (i + 2)) != 0;
        Style {
            tempo_bpm: [70.0, 100.0, 140.0][usize::from(bits & 3).min(2)],
            piano: flag(0),
            strings: flag(1),
            bass: flag(2),
            drums: flag(3),
            lofi: flag(4),
            jazz: flag(5),
        }
    }
}

/// A WAV file of `seconds` seconds in `style`; `seed` varies key and progression.
pub fn render_wav(style: &Style, seed: u64, seconds: f64) -> Vec<u8> {
    let samples = synthesize(style, seed, seconds, SAMPLE_RATE);
    encode_wav(&samples, SAMPLE_RATE)
}

/// 16-bit mono PCM in a WAV container.
pub fn encode_wav(samples: &[f32], sample_rate: u32) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut out = Cursor::new(Vec::with_capacity(44 + samples.len() * 2));
    {
        let mut writer = hound::WavWriter::new(&mut out, spec).expect("writing to memory");
        for &sample in samples {
            let value = (sample.clamp(-1.0, 1.0) * f32::from(i16::MAX)) as i16;
            writer.write_sample(value).expect("writing to memory");
        }
        writer.finalize().expect("writing to memory");
    }
    out.into_inner()
}

/// Semitones above the key's root of each chord of a progression.
const POP: [&[i32]; 4] = [&[0, 4, 7], &[7, 11, 14], &[9, 12, 16], &[5, 9, 12]];
const POP_ALT: [&[i32]; 4] = [&[9, 12, 16], &[5, 9, 12], &[0, 4, 7], &[7, 11, 14]];
const JAZZ: [&[i32]; 4] = [
    &[2, 5, 9, 12],
    &[7, 11, 14, 17],
    &[0, 4, 7, 11],
    &[9, 12, 16, 19],
];

/// A small xorshift generator: the simulator needs repeatable noise, not good randomness.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

fn synthesize(style: &Style, seed: u64, seconds: f64, sample_rate: u32) -> Vec<f32> {
    let len = (seconds.max(0.0) * f64::from(sample_rate)) as usize;
    let progression = if style.jazz {
        JAZZ
    } else if seed.is_multiple_of(2) {
        POP
    } else {
        POP_ALT
    };
    let root = 196.0 * 2f64.powf((seed % 6) as f64 / 12.0);
    let beat_seconds = 60.0 / style.tempo_bpm;
    let mut noise = Noise(seed | 1);
    let mut crackle = 0.0;
    let mut lowpassed = 0.0;
    let mut previous_noise = 0.0;
    let mut out: Vec<f64> = Vec::with_capacity(len);
    for i in 0..len {
        let t = i as f64 / f64::from(sample_rate);
        let beat = t / beat_seconds;
        let bar = (beat / 4.0) as usize;
        let in_bar = (beat % 4.0) * beat_seconds;
        let bar_seconds = 4.0 * beat_seconds;
        let chord = progression[bar % progression.len()];
        let freq = |semitones: i32| root * 2f64.powf(f64::from(semitones) / 12.0);
        // Soft edges at chord changes keep the sustained voices free of clicks.
        let edge = (in_bar / 0.05).min(1.0) * ((bar_seconds - in_bar) / 0.05).min(1.0);
        let wobble = if style.lofi {
            1.0 + 0.004 * (TAU * 0.5 * t).sin()
        } else {
            1.0
        };
        let mut sample = 0.0;
        for &tone in chord {
            let f = freq(tone) * wobble;
            if style.piano {
                let since = in_bar % (2.0 * beat_seconds);
                let env = (-3.0 * since).exp() * (since / 0.005).min(1.0) * edge;
                sample += 0.16
                    * env
                    * ((TAU * f * t).sin()
                        + 0.4 * (TAU * 2.0 * f * t).sin()
                        + 0.15 * (TAU * 3.0 * f * t).sin());
            }
            if style.strings {
                let env = (in_bar / 0.3).min(1.0) * edge;
                let vibrato = 1.0 + 0.003 * (TAU * 5.0 * t).sin();
                let saw: f64 = (1..=5)
                    .map(|h| (TAU * f64::from(h) * f * vibrato * t).sin() / f64::from(h))
                    .sum();
                sample += 0.07 * env * saw;
            }
        }
        let since_beat = in_bar % beat_seconds;
        if style.bass {
            let f = freq(chord[0]) / 4.0;
            let env = (0.35 + 0.65 * (-4.0 * since_beat).exp()) * edge;
            sample += 0.35 * env * ((TAU * f * t).sin() + 0.3 * (TAU * 2.0 * f * t).sin());
        }
        let white = noise.next();
        if style.drums {
            let beat_in_bar = (in_bar / beat_seconds) as usize;
            if beat_in_bar.is_multiple_of(2) {
                let phase =
                    TAU * (50.0 * since_beat + 70.0 / 30.0 * (1.0 - (-30.0 * since_beat).exp()));
                sample += 0.6 * (-8.0 * since_beat).exp() * phase.sin();
            } else {
                sample += (-18.0 * since_beat).exp()
                    * (0.3 * white + 0.2 * (TAU * 180.0 * since_beat).sin());
            }
            let since_half = since_beat % (beat_seconds / 2.0);
            sample += 0.12 * (-60.0 * since_half).exp() * (white - previous_noise);
        }
        previous_noise = white;
        if style.lofi {
            lowpassed += 0.18 * (sample - lowpassed);
            sample = lowpassed;
            if noise.next() > 0.9993 {
                crackle = 0.25 * noise.next();
            }
            crackle *= 0.92;
            sample += crackle + 0.004 * noise.next();
        }
        out.push(sample);
    }
    normalize_with_fades(&out, sample_rate)
}

/// Peak to 0.8 and 50 ms fades, so every track starts and ends in silence.
fn normalize_with_fades(samples: &[f64], sample_rate: u32) -> Vec<f32> {
    let peak = samples.iter().fold(0.0f64, |m, s| m.max(s.abs()));
    let gain = if peak > 0.0 { 0.8 / peak } else { 0.0 };
    let fade = (f64::from(sample_rate) * 0.05) as usize;
    let len = samples.len();
    samples
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let edge = i.min(len - 1 - i);
            let envelope = if edge < fade {
                edge as f64 / fade as f64
            } else {
                1.0
            };
            (s * gain * envelope) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_choose_the_style() {
        let style = Style::from_tags("Fast, drums, LOFI");
        assert_eq!(style.tempo_bpm, 140.0);
        assert!(style.drums && style.lofi && !style.piano);
        assert_eq!(Style::from_bits(style.to_bits()), style);
        let plain = Style::from_tags("something");
        assert_eq!(Style::from_bits(plain.to_bits()), plain);
        assert!(plain.piano && plain.bass && !plain.drums);
        assert_eq!(plain.tempo_bpm, 100.0);
    }

    #[test]
    fn renders_a_valid_wav_of_the_asked_length_deterministically() {
        let style = Style::from_tags("piano, strings");
        let bytes = render_wav(&style, 3, 1.5);
        assert_eq!(bytes, render_wav(&style, 3, 1.5));
        assert_ne!(bytes, render_wav(&style, 4, 1.5));
        let reader = hound::WavReader::new(std::io::Cursor::new(&bytes)).unwrap();
        assert_eq!(reader.spec().sample_rate, SAMPLE_RATE);
        assert_eq!(reader.duration(), (1.5 * f64::from(SAMPLE_RATE)) as u32);
        let peak = reader
            .into_samples::<i16>()
            .map(|s| s.unwrap().unsigned_abs())
            .max()
            .unwrap();
        assert!(peak > 20_000, "the track is audible (peak {peak})");
    }
}
