//! The arrangement of a simulator track before any sample is computed: its bars with their
//! chords, the hits of piano, bass and drums, and the notes of the vocal-like line, planned
//! from the submit's [`Params`] and the take's seed. [`super::audio`] renders it.
//!
//! Pure and deterministic: one seed, one plan. Dice are drawn whatever a weight says, so
//! turning `weirdness_constraint` up bends a take rather than replacing it.

use super::audio::Params;

/// splitmix64: repeatable and well mixed even for neighbouring seeds (track 1 and 2 of a
/// task); the simulator needs that, not cryptographic randomness.
pub(super) struct Dice(u64);

impl Dice {
    pub(super) fn new(seed: u64) -> Self {
        Dice(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..1.
    pub(super) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in -1..1.
    pub(super) fn signed(&mut self) -> f64 {
        self.unit() * 2.0 - 1.0
    }

    /// Uniform in 0..n.
    fn below(&mut self, n: usize) -> usize {
        ((self.unit() * n as f64) as usize).min(n - 1)
    }

    fn chance(&mut self, share: f64) -> bool {
        self.unit() < share
    }
}

/// One bar: where it lies in samples and what it plays.
pub(super) struct Bar {
    pub(super) start: usize,
    /// One past its last sample.
    pub(super) end: usize,
    /// The chord's tones in Hz, detuned by the weirdness.
    pub(super) chord: Vec<f64>,
    /// The neutral pad: root, fifth and octave, below the chord.
    pub(super) pad: [f64; 3],
    /// The bass note.
    pub(super) bass: f64,
}

/// What starts at an [`Event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Hit {
    /// The piano strikes the bar's chord.
    Strike,
    /// The bass plucks the bar's root.
    Pluck,
    Kick,
    Snare,
    Hat,
}

/// A hit at a sample.
pub(super) struct Event {
    pub(super) at: usize,
    pub(super) hit: Hit,
}

/// A note of the vocal-like line, in the female register (the renderer transposes it).
pub(super) struct Note {
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) freq: f64,
    /// Index into the renderer's vowels.
    pub(super) vowel: usize,
}

/// A whole track's plan, each list in time order.
pub(super) struct Score {
    pub(super) bars: Vec<Bar>,
    pub(super) events: Vec<Event>,
    pub(super) notes: Vec<Note>,
}

/// Chords as semitones above the key's root.
const I: &[i32] = &[0, 4, 7];
const II: &[i32] = &[2, 5, 9];
const IV: &[i32] = &[5, 9, 12];
const V: &[i32] = &[7, 11, 14];
const VI: &[i32] = &[9, 12, 16];
const POP: [[&[i32]; 4]; 5] = [
    [I, V, VI, IV],
    [VI, IV, I, V],
    [I, VI, IV, V],
    [I, IV, VI, V],
    [II, V, I, VI],
];
const II7: &[i32] = &[2, 5, 9, 12];
const III7: &[i32] = &[4, 7, 11, 14];
const V7: &[i32] = &[7, 11, 14, 17];
const I7: &[i32] = &[0, 4, 7, 11];
const VI7: &[i32] = &[9, 12, 16, 19];
const JAZZ: [[&[i32]; 4]; 3] = [[II7, V7, I7, VI7], [III7, VI7, II7, V7], [I7, VI7, II7, V7]];
/// Where the piano strikes, in beats of a bar.
const PIANO_RHYTHMS: [&[f64]; 4] = [
    &[0.0, 2.0],
    &[0.0, 1.0, 2.0, 3.0],
    &[0.0, 1.5, 3.0],
    &[0.0, 0.5, 2.0, 2.5],
];
/// The major scale over two octaves, for the melody.
const SCALE: [i32; 10] = [0, 2, 4, 5, 7, 9, 11, 12, 14, 16];
/// The odd intervals weirdness adds: minor second, tritone, minor sixth, flat ninth.
const ODD: [i32; 4] = [1, 6, 8, 13];
/// How many vowels the renderer knows.
pub(super) const VOWELS: usize = 5;

fn semitones(root: f64, semis: f64) -> f64 {
    root * 2f64.powf(semis / 12.0)
}

impl Score {
    /// The plan of `len` samples at `rate` for `params`, varied by the take's `seed`.
    pub(super) fn plan(params: &Params, seed: u64, len: usize, rate: f64) -> Score {
        let mut dice = Dice::new(seed);
        let weird = params.weirdness();
        let root = semitones(196.0, dice.below(7) as f64 - 3.0);
        let pop = POP[dice.below(POP.len())];
        let jazz = JAZZ[dice.below(JAZZ.len())];
        let progression = if params.style.jazz { jazz } else { pop };
        let rhythm = PIANO_RHYTHMS[dice.below(PIANO_RHYTHMS.len())];
        let tempo = params.style.tempo_bpm * (0.95 + 0.1 * dice.unit());
        let beat = 60.0 / tempo * rate;
        let mut score = Score {
            bars: Vec::new(),
            events: Vec::new(),
            notes: Vec::new(),
        };
        let mut melody = 4;
        let mut start = 0;
        while start < len {
            let odd_length = dice.chance(weird * 0.5);
            let beats = if odd_length { 3 + 2 * dice.below(2) } else { 4 };
            let end = start + (beats as f64 * beat) as usize;
            let chord = progression[score.bars.len() % progression.len()];
            score
                .bars
                .push(bar(&mut dice, chord, root, weird, start, end));
            score.hits(&mut dice, params, rhythm, weird, start, beats, beat);
            score.sing(&mut dice, &mut melody, root, weird, start, end, beat);
            start = end;
        }
        score.events.sort_by_key(|e| e.at);
        score
    }

    /// The piano, bass and drum hits of a bar of `beats` beats from `start`, off the grid
    /// by up to an eighth of a beat at full weirdness, with ghost notes.
    #[expect(clippy::too_many_arguments, reason = "one bar's context, used once")]
    fn hits(
        &mut self,
        dice: &mut Dice,
        params: &Params,
        rhythm: &[f64],
        weird: f64,
        start: usize,
        beats: usize,
        beat: f64,
    ) {
        let style = &params.style;
        let mut at = |dice: &mut Dice, hit: Hit, beats: f64, on: bool| {
            let off = dice.signed() * weird * 0.125;
            if on {
                let at = start + ((beats + off).max(0.0) * beat) as usize;
                self.events.push(Event { at, hit });
            }
        };
        for &strike in rhythm.iter().filter(|&&b| b < beats as f64) {
            at(dice, Hit::Strike, strike, style.piano);
        }
        for b in 0..beats {
            let b_f = b as f64;
            at(dice, Hit::Pluck, b_f, style.bass);
            let accent = if b % 2 == 0 { Hit::Kick } else { Hit::Snare };
            at(dice, accent, b_f, style.drums);
            at(dice, Hit::Hat, b_f, style.drums);
            at(dice, Hit::Hat, b_f + 0.5, style.drums);
            let ghost = dice.chance(weird * 0.35);
            let kind = [Hit::Kick, Hit::Snare][dice.below(2)];
            at(dice, kind, b_f + 0.75, style.drums && ghost);
        }
    }

    /// The vocal-like line over one bar: a random walk on the scale, one- or two-beat notes
    /// and rests, bent to odd intervals by the weirdness.
    #[expect(clippy::too_many_arguments, reason = "one bar's context, used once")]
    fn sing(
        &mut self,
        dice: &mut Dice,
        degree: &mut i32,
        root: f64,
        weird: f64,
        start: usize,
        end: usize,
        beat: f64,
    ) {
        let mut at = start;
        while at < end {
            let beats = [0.5, 1.0, 1.0, 2.0][dice.below(4)];
            let rest = dice.chance(0.2);
            *degree = (*degree + dice.below(5) as i32 - 2).clamp(0, SCALE.len() as i32 - 1);
            let odd = dice.chance(weird * 0.4);
            let odd_step = ODD[dice.below(ODD.len())];
            let vowel = dice.below(VOWELS);
            let note_end = (at + (beats * beat) as usize).min(end);
            if !rest {
                let semis = SCALE[*degree as usize] + if odd { odd_step } else { 0 };
                self.notes.push(Note {
                    start: at,
                    end: note_end,
                    freq: semitones(root, f64::from(semis)),
                    vowel,
                });
            }
            at = note_end;
        }
    }
}

/// A bar of `chord` (semitones above `root`): each tone detuned by up to ±35 cents at full
/// weirdness, which may also add an odd interval.
fn bar(dice: &mut Dice, chord: &[i32], root: f64, weird: f64, start: usize, end: usize) -> Bar {
    let odd = dice.chance(weird * 0.6);
    let odd_step = ODD[dice.below(ODD.len())];
    let mut tones: Vec<i32> = chord.to_vec();
    if odd {
        tones.push(chord[0] + odd_step);
    }
    let chord_root = semitones(root, f64::from(chord[0]));
    Bar {
        start,
        end,
        chord: tones
            .iter()
            .map(|&t| semitones(root, f64::from(t) + dice.signed() * weird * 0.35))
            .collect(),
        pad: [chord_root / 2.0, chord_root * 0.75, chord_root],
        bass: chord_root / 4.0,
    }
}
