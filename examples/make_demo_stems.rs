//! Writes the demo's vocal stems to `examples/stems/`: short, mono, sung-like melodies
//! (a voice-like tone with vibrato and vowel formants, note by note).
//!
//! `cargo run --example make_demo_stems` regenerates them; the files are committed so
//! the demo needs no build step beyond stembatch itself.

use std::f64::consts::TAU;
use std::path::Path;

use stembatch::sim::audio::encode_wav;

/// Low enough to keep the stems small, high enough for a voice's formants.
const SAMPLE_RATE: u32 = 11_025;

/// Formant centres and widths (Hz) of the vowels "ah", "oh" and "ee".
const VOWELS: [[(f64, f64); 3]; 3] = [
    [(730.0, 90.0), (1090.0, 110.0), (2440.0, 170.0)],
    [(570.0, 80.0), (840.0, 100.0), (2410.0, 170.0)],
    [(270.0, 60.0), (2290.0, 150.0), (3010.0, 200.0)],
];

/// One sung note: a MIDI pitch (0 for a rest) and its length in beats.
type Note = (u8, f64);

fn sing(melody: &[Note], bpm: f64) -> Vec<f32> {
    let beat = 60.0 / bpm;
    let total: f64 = melody.iter().map(|(_, beats)| beats * beat).sum();
    let len = (total * f64::from(SAMPLE_RATE)) as usize;
    let mut out = Vec::with_capacity(len);
    let mut phase = 0.0f64;
    let mut noise = 0x2545_f491_4f6c_dd1du64;
    let (mut start, mut index) = (0.0, 0);
    for i in 0..len {
        let t = i as f64 / f64::from(SAMPLE_RATE);
        while index + 1 < melody.len() && t >= start + melody[index].1 * beat {
            start += melody[index].1 * beat;
            index += 1;
        }
        let (pitch, beats) = melody[index];
        let length = beats * beat;
        let since = t - start;
        if pitch == 0 {
            out.push(0.0);
            continue;
        }
        // Vibrato grows in after the attack, as a singer's does.
        let vibrato = 0.35 * (since / 0.3).min(1.0) * (TAU * 5.5 * t).sin();
        let freq = 440.0 * 2f64.powf((f64::from(pitch) + vibrato - 69.0) / 12.0);
        phase += TAU * freq / f64::from(SAMPLE_RATE);
        let vowel = VOWELS[index % VOWELS.len()];
        let mut sample = 0.0;
        let mut harmonic = 1.0;
        while harmonic * freq < f64::from(SAMPLE_RATE) / 2.0 {
            let h = harmonic * freq;
            let resonance: f64 = vowel
                .iter()
                .map(|(centre, width)| (-((h - centre) / width).powi(2) / 2.0).exp())
                .sum();
            sample += (0.15 + resonance) / harmonic * (phase * harmonic).sin();
            harmonic += 1.0;
        }
        noise ^= noise << 13;
        noise ^= noise >> 7;
        noise ^= noise << 17;
        let breath = ((noise >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.02;
        let envelope = (since / 0.04).min(1.0) * ((length - since) / 0.08).clamp(0.0, 1.0);
        out.push(((sample * 0.18 + breath) * envelope) as f32);
    }
    let peak = out
        .iter()
        .fold(0.0f32, |m, s| m.max(s.abs()))
        .max(f32::EPSILON);
    out.iter().map(|s| s * 0.7 / peak).collect()
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/stems");
    std::fs::create_dir_all(&dir).expect("the stems folder can be created");
    let stems: [(&str, f64, &[Note]); 3] = [
        (
            "ballad",
            72.0,
            &[
                (69, 1.0),
                (71, 0.5),
                (72, 1.5),
                (71, 0.5),
                (69, 0.5),
                (67, 1.0),
                (69, 2.0),
                (0, 0.5),
                (64, 1.0),
                (67, 1.0),
            ],
        ),
        (
            "hook",
            112.0,
            &[
                (57, 0.5),
                (57, 0.5),
                (60, 1.0),
                (62, 0.5),
                (60, 0.5),
                (57, 1.0),
                (0, 0.5),
                (55, 0.5),
                (57, 1.0),
                (60, 1.0),
                (62, 1.5),
                (60, 1.5),
            ],
        ),
        (
            "verse",
            96.0,
            &[
                (64, 1.0),
                (64, 0.5),
                (62, 0.5),
                (60, 1.0),
                (62, 1.0),
                (64, 1.5),
                (0, 0.5),
                (67, 1.0),
                (65, 0.5),
                (64, 0.5),
                (62, 2.0),
            ],
        ),
    ];
    for (name, bpm, melody) in stems {
        let samples = sing(melody, bpm);
        let path = dir.join(format!("{name}.wav"));
        std::fs::write(&path, encode_wav(&samples, SAMPLE_RATE)).expect("the stem can be written");
        println!(
            "{} ({:.1} s)",
            path.display(),
            samples.len() as f64 / f64::from(SAMPLE_RATE)
        );
    }
}
