//! The simulator's sound sources: a sine table, a sawtooth, and the singer of the
//! vocal-like line (a sawtooth through three vowel formants). Pure; [`super::audio`] mixes
//! them.

use std::f64::consts::{PI, TAU};

use super::audio::Vocal;
use super::score::Note;

/// A sine table: one lookup instead of a libm call per oscillator and sample keeps a render
/// as cheap as it was with fewer voices. 4096 points: the error is below -70 dB.
pub(super) struct Sine(Vec<f64>);

const SINE_POINTS: usize = 4096;

impl Sine {
    pub(super) fn new() -> Self {
        let points = (0..SINE_POINTS).map(|i| (TAU * i as f64 / SINE_POINTS as f64).sin());
        Sine(points.collect())
    }

    /// The sine of `cycles` turns (non-negative).
    pub(super) fn at(&self, cycles: f64) -> f64 {
        self.0[(frac(cycles) * SINE_POINTS as f64) as usize % SINE_POINTS]
    }
}

/// The fractional part of a non-negative number.
pub(super) fn frac(x: f64) -> f64 {
    x - (x as u64) as f64
}

/// A naive sawtooth of `cycles` turns: the strings' bow, the singer's glottis.
pub(super) fn saw(cycles: f64) -> f64 {
    2.0 * frac(cycles) - 1.0
}

/// Formants (Hz) of the vowels a, e, i, o, u of a low voice.
const VOWELS: [[f64; 3]; super::score::VOWELS] = [
    [730.0, 1090.0, 2440.0],
    [530.0, 1840.0, 2480.0],
    [270.0, 2290.0, 3010.0],
    [570.0, 840.0, 2410.0],
    [300.0, 870.0, 2240.0],
];
const FORMANT_LEVELS: [f64; 3] = [1.0, 0.6, 0.3];
const FORMANT_WIDTHS: [f64; 3] = [80.0, 100.0, 120.0];

/// A two-pole resonator with unity gain at its centre: one formant.
#[derive(Clone, Copy, Default)]
struct Resonator {
    b0: f64,
    a1: f64,
    a2: f64,
    y1: f64,
    y2: f64,
}

impl Resonator {
    /// Moves the centre; the state carries on, so a vowel change does not click.
    fn tune(&mut self, freq: f64, width: f64, rate: f64) {
        let r = (-PI * width / rate).exp();
        let theta = TAU * freq.min(0.45 * rate) / rate;
        self.a1 = 2.0 * r * theta.cos();
        self.a2 = -r * r;
        self.b0 = (1.0 - r) * (1.0 - 2.0 * r * (2.0 * theta).cos() + r * r).sqrt();
    }

    fn run(&mut self, x: f64) -> f64 {
        let y = self.b0 * x + self.a1 * self.y1 + self.a2 * self.y2;
        self.y2 = self.y1;
        self.y1 = y;
        y
    }
}

/// One voice of the vocal-like line: a sawtooth through three vowel formants.
pub(super) struct Singer {
    /// The melody's transposition: 1 for `f`, an octave down for `m`.
    register: f64,
    /// The formants' scale: a higher voice has higher formants.
    formants: f64,
    level: f64,
    phase: f64,
    soft: f64,
    resonators: [Resonator; 3],
}

impl Singer {
    fn new(register: f64, formants: f64, level: f64) -> Self {
        Singer {
            register,
            formants,
            level,
            phase: 0.0,
            soft: 0.0,
            resonators: [Resonator::default(); 3],
        }
    }

    /// The singers of a vocal gender.
    pub(super) fn of(vocal: Vocal) -> Vec<Singer> {
        let male = |level| Singer::new(0.5, 1.0, level);
        let female = |level| Singer::new(1.0, 1.17, level);
        match vocal {
            Vocal::Male => vec![male(1.0)],
            Vocal::Female => vec![female(1.0)],
            Vocal::Unspecified => vec![male(0.65), female(0.65)],
        }
    }

    pub(super) fn start(&mut self, vowel: usize, rate: f64) {
        for (k, resonator) in self.resonators.iter_mut().enumerate() {
            resonator.tune(VOWELS[vowel][k] * self.formants, FORMANT_WIDTHS[k], rate);
        }
    }

    /// Sample `i` of `note`, `vibrato` being the shared vibrato's deviation now.
    pub(super) fn sing(&mut self, note: &Note, i: usize, vibrato: f64, rate: f64) -> f64 {
        let age = (i - note.start) as f64 / rate;
        let left = (note.end - i) as f64 / rate;
        let envelope = (age / 0.04).min(1.0) * (left / 0.08).min(1.0);
        let bend = 1.0 + vibrato * (age / 0.3).min(1.0);
        self.phase = frac(self.phase + note.freq * self.register * bend / rate);
        self.soft += 0.5 * (2.0 * self.phase - 1.0 - self.soft);
        let [f1, f2, f3] = &mut self.resonators;
        let [l1, l2, l3] = FORMANT_LEVELS;
        let voiced = l1 * f1.run(self.soft) + l2 * f2.run(self.soft) + l3 * f3.run(self.soft);
        self.level * envelope * voiced
    }
}
