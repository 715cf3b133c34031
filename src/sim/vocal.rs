//! The submitted vocal in the simulator's tracks, as the real "add-instrumental" puts the
//! singer over the backing it makes for them: the stem's bytes (uploaded to the
//! simulator, or fetched from a URL on this machine) become mono samples at
//! [`SAMPLE_RATE`], mixed over the rendered backing. Pure: no I/O.
//!
//! Only WAV stems are read (16/24/32-bit integer or float, any rate and channel count,
//! resampled linearly: a simulator's preview, not a mastering tool); a stem in another
//! format, or one the simulator no longer holds (a task of a simulator since restarted),
//! leaves the backing alone.

use super::audio::SAMPLE_RATE;

/// The vocal's peak before mixing; the mix is brought back to the backing's peak.
const VOCAL_PEAK: f32 = 0.8;

/// The vocal of a WAV stem: mono, at [`SAMPLE_RATE`], peaking at 0.8; `None`
/// when the bytes are not a WAV this reads, or hold no sound.
pub fn vocal_samples(bytes: &[u8]) -> Option<Vec<f32>> {
    let mut reader = hound::WavReader::new(std::io::Cursor::new(bytes)).ok()?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels.max(1));
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader.samples::<f32>().map_while(Result::ok).collect(),
        hound::SampleFormat::Int => {
            let full = (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            reader
                .samples::<i32>()
                .map_while(Result::ok)
                .map(|s| s as f32 / full)
                .collect()
        }
    };
    let mono: Vec<f32> = interleaved
        .chunks_exact(channels)
        .map(|frame| frame.iter().sum::<f32>() / channels as f32)
        .collect();
    let mut vocal = resample(&mono, spec.sample_rate, SAMPLE_RATE);
    let peak = vocal.iter().fold(0f32, |m, s| m.max(s.abs()));
    if peak <= 0.0 {
        return None;
    }
    vocal.iter_mut().for_each(|s| *s *= VOCAL_PEAK / peak);
    Some(vocal)
}

/// `samples` at `from` Hz as samples at `to` Hz, by linear interpolation.
fn resample(samples: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || from == 0 || samples.is_empty() {
        return samples.to_vec();
    }
    let len = (samples.len() as u64 * u64::from(to) / u64::from(from)) as usize;
    let step = f64::from(from) / f64::from(to);
    (0..len)
        .map(|i| {
            let at = i as f64 * step;
            let (index, frac) = (at as usize, (at.fract()) as f32);
            let a = samples[index.min(samples.len() - 1)];
            let b = samples[(index + 1).min(samples.len() - 1)];
            a + (b - a) * frac
        })
        .collect()
}

/// The backing with the vocal over it, at `level` (0..1, from the submit's
/// `audio_weight`: absent, 0.5) against the backing, brought back to the backing's peak
/// so that the track's levels stay those of a finished mix.
pub fn mix(backing: &[f32], vocal: &[f32], level: f64) -> Vec<f32> {
    let gain = (0.35 + 0.65 * level.clamp(0.0, 1.0)) as f32;
    let backing_peak = backing.iter().fold(0f32, |m, s| m.max(s.abs()));
    let mut mixed: Vec<f32> = backing
        .iter()
        .enumerate()
        .map(|(i, b)| b + vocal.get(i).map_or(0.0, |v| v * gain))
        .collect();
    let peak = mixed.iter().fold(0f32, |m, s| m.max(s.abs()));
    if peak > 0.0 && backing_peak > 0.0 {
        mixed.iter_mut().for_each(|s| *s *= backing_peak / peak);
    }
    mixed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(seconds: f64, hz: f64, rate: u32) -> Vec<f32> {
        (0..(seconds * f64::from(rate)) as usize)
            .map(|i| (0.5 * (std::f64::consts::TAU * hz * i as f64 / f64::from(rate)).sin()) as f32)
            .collect()
    }

    #[test]
    fn a_wav_stem_becomes_mono_at_the_track_rate_and_other_bytes_nothing() {
        let stem = super::super::audio::encode_wav(&sine(1.0, 440.0, 8_000), 8_000);
        let vocal = vocal_samples(&stem).unwrap();
        assert_eq!(vocal.len(), SAMPLE_RATE as usize);
        let peak = vocal.iter().fold(0f32, |m, s| m.max(s.abs()));
        assert!((peak - VOCAL_PEAK).abs() < 0.01, "{peak}");
        assert_eq!(vocal_samples(b"ID3 not a wav"), None);
        let silence = super::super::audio::encode_wav(&[0.0; 800], 8_000);
        assert_eq!(vocal_samples(&silence), None);
    }

    #[test]
    fn the_mix_holds_the_vocal_at_the_backing_peak() {
        let backing = sine(1.0, 110.0, SAMPLE_RATE);
        let vocal = sine(0.5, 880.0, SAMPLE_RATE);
        let mixed = mix(&backing, &vocal, 0.5);
        assert_eq!(mixed.len(), backing.len());
        let peak = |s: &[f32]| s.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!((peak(&mixed) - peak(&backing)).abs() < 1e-4);
        // Where the vocal sings the mix differs from the backing; after it, only the
        // level differs.
        let half = backing.len() / 2;
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let ratio = dot(&mixed[half..], &backing[half..]) / dot(&backing[half..], &backing[half..]);
        let differs = (0..half)
            .filter(|&i| (mixed[i] - backing[i] * ratio).abs() > 0.01)
            .count();
        assert!(differs > half / 4, "{differs}");
        assert!((half..backing.len()).all(|i| (mixed[i] - backing[i] * ratio).abs() < 1e-4));
        assert!(peak(&mix(&backing, &vocal, 1.0)) > 0.0);
    }
}
