//! Synthesised backing tracks for the simulator, rendered to 16-bit mono WAV: a chord
//! progression with instruments, a neutral pad and a sung-like line, shaped by every
//! parameter of the submit and varied by the task, so that a manifest's variants (and the
//! takes of one variant) sound different and are worth comparing.
//!
//! How the submit shapes the sound ([`Params::from_input`]):
//!
//! - `tags` pick the [`Style`]: tempo (fast/slow words), instruments (piano, strings, bass,
//!   drums) and colour (lofi: muffled with crackle and tape wobble; jazz: seventh chords).
//! - `negative_tags` remove what they name from the style: `drums` there means no drums,
//!   `lofi` no lofi colour, `fast` no fast tempo.
//! - `style_weight` (absent: 0.5) is how strongly the style shapes the arrangement: the
//!   level of the style's instruments (and the depth of its colour) against a neutral sine
//!   pad on root, fifth and octave, which fades out as the weight nears 1.
//! - `weirdness_constraint` (absent: 0) detunes the chord tones (up to ±35 cents), adds odd
//!   intervals (minor second, tritone, minor sixth, flat ninth) to chords and melody, gives
//!   bars of 3 or 5 beats and pushes piano and drum hits off the grid, with ghost hits.
//! - `audio_weight` (absent: 0.5) is the level of the vocal-like line: a sawtooth source
//!   through vowel formants, with vibrato, singing a melody on the scale; and, where the
//!   simulator holds the submitted stem, the level of that vocal over the backing
//!   ([`super::vocal`], mixed by the track's render, not here).
//! - `vocal_gender` is the register of that line: `m` an octave below `f` with lower
//!   formants; absent, both sing, an octave apart.
//! - `model` `V5` is brighter and wider: more piano and bass overtones, a second detuned
//!   oscillator on piano, strings and pad (chorus), and no master low-pass; `V4_5PLUS` (or
//!   none) is the plainer, darker sound.
//! - The task's seed (the take; track 2 has its own) picks the key, the chord progression,
//!   the piano's rhythm, a tempo nudge of ±5 % and the melody.
//!
//! Deterministic: the same parameters, seed and length give the same bytes, so tests can
//! compare a downloaded file with what the simulator serves. Pure: no I/O.

use std::f64::consts::TAU;
use std::io::Cursor;

use super::score::{Hit, Score};
use super::voice::{saw, Sine, Singer};
use crate::api::types::SubmitInput;

/// Samples per second of the generated tracks: plenty for a preview, small files.
pub const SAMPLE_RATE: u32 = 22_050;

const FAST: &[&str] = &["fast", "upbeat", "dance", "energetic"];
const SLOW: &[&str] = &["slow", "ballad", "ambient", "calm", "relax"];
const PIANO: &[&str] = &["piano", "keys"];
const STRINGS: &[&str] = &["string", "orchestra", "cinematic", "violin"];
const BASS: &[&str] = &["bass", "funk"];
const DRUMS: &[&str] = &["drum", "beat", "rock", "hip", "dance"];
const LOFI: &[&str] = &["lofi", "lo-fi", "vinyl", "chill"];
const JAZZ: &[&str] = &["jazz", "swing"];

/// Whether the lower-cased `text` names any of `words`.
fn names(text: &str, words: &[&str]) -> bool {
    words.iter().any(|w| text.contains(w))
}

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
        let has = |words: &[&str]| names(&tags, words);
        let tempo_bpm = if has(FAST) {
            140.0
        } else if has(SLOW) {
            70.0
        } else {
            100.0
        };
        let mut style = Style {
            tempo_bpm,
            piano: has(PIANO),
            strings: has(STRINGS),
            bass: has(BASS),
            drums: has(DRUMS),
            lofi: has(LOFI),
            jazz: has(JAZZ),
        };
        if !(style.piano || style.strings || style.bass || style.drums) {
            style.piano = true;
            style.bass = true;
        }
        style
    }

    /// The style without what `negative_tags` names: its instruments, its colours, and a
    /// fast or slow tempo (back to the middle one).
    pub fn without(mut self, negative_tags: &str) -> Style {
        let negative = negative_tags.to_lowercase();
        let has = |words: &[&str]| names(&negative, words);
        let flags = [
            (&mut self.piano, PIANO),
            (&mut self.strings, STRINGS),
            (&mut self.bass, BASS),
            (&mut self.drums, DRUMS),
            (&mut self.lofi, LOFI),
            (&mut self.jazz, JAZZ),
        ];
        for (flag, words) in flags {
            *flag &= !has(words);
        }
        if (self.tempo_bpm > 100.0 && has(FAST)) || (self.tempo_bpm < 100.0 && has(SLOW)) {
            self.tempo_bpm = 100.0;
        }
        self
    }

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

/// The `model` of a submit's input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Model {
    /// `V4_5PLUS`, or no model given.
    #[default]
    V4_5Plus,
    /// `V5`: brighter and wider.
    V5,
}

/// The `vocal_gender` of a submit's input: the register of the vocal-like line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Vocal {
    /// None given: both registers, an octave apart.
    #[default]
    Unspecified,
    /// `m`.
    Male,
    /// `f`.
    Female,
}

/// Everything of a submit that shapes the sound. Weights are in hundredths (0..=100),
/// `None` when the submit left them out.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// From `tags` without what `negative_tags` names.
    pub style: Style,
    /// `model`.
    pub model: Model,
    /// `vocal_gender`.
    pub vocal: Vocal,
    /// `style_weight`.
    pub style_weight: Option<u8>,
    /// `weirdness_constraint`.
    pub weirdness: Option<u8>,
    /// `audio_weight`.
    pub audio_weight: Option<u8>,
}

/// A weight's value when the submit leaves it out, in hundredths.
const STYLE_WEIGHT_ABSENT: u8 = 50;
const WEIRDNESS_ABSENT: u8 = 0;
const AUDIO_WEIGHT_ABSENT: u8 = 50;
/// How an absent weight is written in [`Params::voice_bits`].
const ABSENT: u32 = 0xff;

impl Params {
    /// The parameters of a submit's input (already checked by the simulator).
    pub fn from_input(input: &SubmitInput) -> Params {
        let hundredths = |w: Option<f64>| w.map(|w| (w.clamp(0.0, 1.0) * 100.0).round() as u8);
        Params {
            style: Style::from_tags(&input.tags).without(&input.negative_tags),
            model: match input.model.as_deref() {
                Some("V5") => Model::V5,
                _ => Model::V4_5Plus,
            },
            vocal: match input.vocal_gender.as_deref() {
                Some("m") => Vocal::Male,
                Some("f") => Vocal::Female,
                _ => Vocal::Unspecified,
            },
            style_weight: hundredths(input.style_weight),
            weirdness: hundredths(input.weirdness_constraint),
            audio_weight: hundredths(input.audio_weight),
        }
    }

    /// The style alone, everything else absent: what a task id of the first format means.
    pub fn of_style(style: Style) -> Params {
        Params {
            style,
            model: Model::default(),
            vocal: Vocal::default(),
            style_weight: None,
            weirdness: None,
            audio_weight: None,
        }
    }

    /// All but the style in 32 bits: model and vocal in the top byte, then style weight,
    /// weirdness and audio weight, a byte each (`ff` when absent).
    pub fn voice_bits(&self) -> u32 {
        let model = match self.model {
            Model::V4_5Plus => 0,
            Model::V5 => 1,
        };
        let vocal = match self.vocal {
            Vocal::Unspecified => 0,
            Vocal::Male => 1,
            Vocal::Female => 2,
        };
        let weight = |w: Option<u8>| w.map_or(ABSENT, u32::from);
        (model << 26 | vocal << 24)
            | weight(self.style_weight) << 16
            | weight(self.weirdness) << 8
            | weight(self.audio_weight)
    }

    /// The parameters of a style byte and [`Params::voice_bits`]; `None` for bits those
    /// never produce.
    pub fn from_bits(style: u8, voice: u32) -> Option<Params> {
        let weight = |shift: u32| match (voice >> shift) & 0xff {
            ABSENT => Some(None),
            w @ 0..=100 => Some(Some(w as u8)),
            _ => None,
        };
        Some(Params {
            style: Style::from_bits(style),
            model: match voice >> 26 {
                0 => Model::V4_5Plus,
                1 => Model::V5,
                _ => return None,
            },
            vocal: match (voice >> 24) & 3 {
                0 => Vocal::Unspecified,
                1 => Vocal::Male,
                2 => Vocal::Female,
                _ => return None,
            },
            style_weight: weight(16)?,
            weirdness: weight(8)?,
            audio_weight: weight(0)?,
        })
    }

    /// `style_weight` as 0..1.
    pub(super) fn style_weight(&self) -> f64 {
        f64::from(self.style_weight.unwrap_or(STYLE_WEIGHT_ABSENT)) / 100.0
    }

    /// `weirdness_constraint` as 0..1.
    pub(super) fn weirdness(&self) -> f64 {
        f64::from(self.weirdness.unwrap_or(WEIRDNESS_ABSENT)) / 100.0
    }

    /// `audio_weight` as 0..1.
    pub(super) fn audio_weight(&self) -> f64 {
        f64::from(self.audio_weight.unwrap_or(AUDIO_WEIGHT_ABSENT)) / 100.0
    }
}

/// A WAV file of `seconds` seconds shaped by `params`; `seed` is the take's.
pub fn render_wav(params: &Params, seed: u64, seconds: f64) -> Vec<u8> {
    encode_wav(&render_samples(params, seed, seconds), SAMPLE_RATE)
}

/// The samples of [`render_wav`], at [`SAMPLE_RATE`], peaking at 0.8.
pub fn render_samples(params: &Params, seed: u64, seconds: f64) -> Vec<f32> {
    synthesize(params, seed, seconds, SAMPLE_RATE)
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

/// Envelopes of the struck and plucked voices, restarted by the score's hits and decaying
/// by a constant factor per sample (no `exp` per sample).
#[derive(Default)]
struct Hits {
    piano: f64,
    piano_age: f64,
    pluck: f64,
    kick: f64,
    kick_sweep: f64,
    kick_phase: f64,
    snare: f64,
    snare_phase: f64,
    hat: f64,
}

impl Hits {
    fn start(&mut self, hit: Hit) {
        match hit {
            Hit::Strike => (self.piano, self.piano_age) = (1.0, 0.0),
            Hit::Pluck => self.pluck = 1.0,
            Hit::Kick => (self.kick, self.kick_sweep) = (1.0, 1.0),
            Hit::Snare => (self.snare, self.snare_phase) = (1.0, 0.0),
            Hit::Hat => self.hat = 1.0,
        }
    }
}

/// Per-sample decay factors of [`Hits`].
struct Decays {
    piano: f64,
    pluck: f64,
    kick: f64,
    sweep: f64,
    snare: f64,
    hat: f64,
}

impl Decays {
    fn new(rate: f64) -> Self {
        let per_sample = |per_second: f64| (-per_second / rate).exp();
        Decays {
            piano: per_sample(3.0),
            pluck: per_sample(4.0),
            kick: per_sample(8.0),
            sweep: per_sample(30.0),
            snare: per_sample(18.0),
            hat: per_sample(60.0),
        }
    }
}

/// Levels of the mix, from the weights.
struct Levels {
    /// The style's instruments.
    style: f64,
    /// The neutral pad.
    pad: f64,
    /// The vocal-like line.
    vocal: f64,
    /// Depth of the lofi colour (0 without lofi).
    lofi: f64,
}

impl Levels {
    fn of(params: &Params) -> Self {
        let weight = params.style_weight();
        Levels {
            style: 0.15 + 0.85 * weight,
            pad: 1.0 - weight,
            vocal: 1.6 * params.audio_weight(),
            lofi: if params.style.lofi { weight } else { 0.0 },
        }
    }
}

/// The time of a tone whose pitch wavers by `depth` at `rate` Hz: warping time instead of
/// scaling frequency keeps the deviation constant however late in the track.
fn warp(sine: &Sine, t: f64, depth: f64, rate: f64) -> f64 {
    t + depth / (TAU * rate) * sine.at(rate * t)
}

fn synthesize(params: &Params, seed: u64, seconds: f64, sample_rate: u32) -> Vec<f32> {
    let rate = f64::from(sample_rate);
    let len = (seconds.max(0.0) * rate) as usize;
    let score = Score::plan(params, seed, len, rate);
    let style = &params.style;
    let levels = Levels::of(params);
    let v5 = params.model == Model::V5;
    let sine = Sine::new();
    let decays = Decays::new(rate);
    let mut singers = Singer::of(params.vocal);
    let mut hits = Hits::default();
    let mut noise = Noise(seed | 1);
    let (mut bar, mut event, mut note, mut tuned) = (0, 0, 0, usize::MAX);
    let (mut strings_lp, mut lofi_lp, mut master_lp) = (0.0, 0.0, 0.0);
    let (mut crackle, mut previous_noise) = (0.0, 0.0);
    let fade = 0.05 * rate;
    let mut out: Vec<f64> = Vec::with_capacity(len);
    for i in 0..len {
        let t = i as f64 / rate;
        while bar + 1 < score.bars.len() && i >= score.bars[bar + 1].start {
            bar += 1;
        }
        let b = &score.bars[bar];
        while event < score.events.len() && score.events[event].at <= i {
            hits.start(score.events[event].hit);
            event += 1;
        }
        let into_bar = (i - b.start) as f64;
        // Soft edges at chord changes keep the sustained voices free of clicks.
        let edge = (into_bar / fade).min(1.0) * ((b.end - i) as f64 / fade).min(1.0);
        let tape = warp(&sine, t, 0.006 * levels.lofi, 0.5);
        let bowed = if style.strings {
            warp(&sine, tape, 0.003, 5.0)
        } else {
            tape
        };
        let (mut piano, mut strings) = (0.0, 0.0);
        for &f in &b.chord {
            if style.piano {
                let c = f * tape;
                piano += sine.at(c) + 0.4 * sine.at(2.0 * c) + 0.15 * sine.at(3.0 * c);
                if v5 {
                    piano += 0.25 * sine.at(4.0 * c) + 0.6 * sine.at(1.0045 * c);
                }
            }
            if style.strings {
                let c = f * bowed;
                strings += saw(c) + if v5 { saw(0.9955 * c) } else { 0.0 };
            }
        }
        let attack = (hits.piano_age / 0.005 / rate).min(1.0);
        let mut sample = 0.16 * levels.style * hits.piano * attack * edge * piano;
        strings_lp += if v5 { 0.45 } else { 0.25 } * (strings - strings_lp);
        let swell = (into_bar / (0.3 * rate)).min(1.0) * edge;
        sample += 0.09 * levels.style * swell * strings_lp;
        let [p1, p2, p3] = b.pad.map(|f| f * tape);
        let mut pad = sine.at(p1) + sine.at(p2) + sine.at(p3);
        if v5 {
            pad += 0.7 * sine.at(1.006 * p1) + 0.7 * sine.at(1.006 * p3);
        }
        sample += 0.14 * levels.pad * (into_bar / (0.2 * rate)).min(1.0) * edge * pad;
        if style.bass {
            let c = b.bass * tape;
            let env = (0.35 + 0.65 * hits.pluck) * edge;
            let mut bass = sine.at(c) + 0.3 * sine.at(2.0 * c);
            if v5 {
                bass += 0.25 * sine.at(3.0 * c) + 0.15 * sine.at(4.0 * c);
            }
            sample += 0.35 * levels.style * env * bass;
        }
        let white = noise.next();
        if style.drums {
            hits.kick_phase += (50.0 + 70.0 * hits.kick_sweep) / rate;
            hits.snare_phase += 180.0 / rate;
            let kick = 0.6 * hits.kick * sine.at(hits.kick_phase);
            let snare = hits.snare * (0.3 * white + 0.2 * sine.at(hits.snare_phase));
            let hat = 0.12 * hits.hat * (white - previous_noise);
            sample += levels.style * (kick + snare + hat);
        }
        previous_noise = white;
        while note < score.notes.len() && score.notes[note].end <= i {
            note += 1;
        }
        if let Some(n) = score.notes.get(note).filter(|n| n.start <= i) {
            if tuned != note {
                singers.iter_mut().for_each(|s| s.start(n.vowel, rate));
                tuned = note;
            }
            let vibrato = 0.012 * sine.at(5.5 * t);
            for singer in &mut singers {
                sample += levels.vocal * singer.sing(n, i, vibrato, rate);
            }
        }
        if levels.lofi > 0.0 {
            lofi_lp += (0.5 - 0.32 * levels.lofi) * (sample - lofi_lp);
            sample = lofi_lp;
            if noise.next() > 0.9993 {
                crackle = 0.25 * levels.lofi * noise.next();
            }
            crackle *= 0.92;
            sample += crackle + 0.004 * noise.next();
        }
        if !v5 {
            // The older model is darker: a gentle low-pass on the whole mix.
            master_lp += 0.55 * (sample - master_lp);
            sample = master_lp;
        }
        out.push(sample);
        hits.piano *= decays.piano;
        hits.piano_age += 1.0;
        hits.pluck *= decays.pluck;
        hits.kick *= decays.kick;
        hits.kick_sweep *= decays.sweep;
        hits.snare *= decays.snare;
        hits.hat *= decays.hat;
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
    fn tags_choose_the_style_and_negative_tags_take_from_it() {
        let style = Style::from_tags("Fast, drums, LOFI");
        assert_eq!(style.tempo_bpm, 140.0);
        assert!(style.drums && style.lofi && !style.piano);
        assert_eq!(Style::from_bits(style.to_bits()), style);
        let plain = Style::from_tags("something");
        assert_eq!(Style::from_bits(plain.to_bits()), plain);
        assert!(plain.piano && plain.bass && !plain.drums);
        assert_eq!(plain.tempo_bpm, 100.0);
        let without = style.clone().without("Drums, fast");
        assert!(!without.drums && without.lofi);
        assert_eq!(without.tempo_bpm, 100.0);
        assert_eq!(style.clone().without("heavy metal"), style);
    }

    fn input() -> SubmitInput {
        SubmitInput {
            upload_url: "https://example.com/vocals.wav".into(),
            title: "t".into(),
            tags: "piano, bass, drums".into(),
            negative_tags: String::new(),
            model: None,
            vocal_gender: None,
            style_weight: None,
            weirdness_constraint: None,
            audio_weight: None,
        }
    }

    #[test]
    fn params_survive_their_bits() {
        let mut all = input();
        all.model = Some("V5".into());
        all.vocal_gender = Some("m".into());
        all.style_weight = Some(0.35);
        all.weirdness_constraint = Some(0.0);
        all.audio_weight = Some(1.0);
        for input in [input(), all] {
            let params = Params::from_input(&input);
            let back = Params::from_bits(params.style.to_bits(), params.voice_bits());
            assert_eq!(back, Some(params));
        }
        assert_eq!(Params::from_bits(0, 0x00ff_ff65), None, "a weight of 1.01");
        assert_eq!(Params::from_bits(0, 0x0bff_ffff), None, "a fourth vocal");
    }

    /// How different two renders sound: the level of their difference against the first's.
    fn difference(a: &[f32], b: &[f32]) -> f64 {
        let energy = |s: &mut dyn Iterator<Item = f64>| s.map(|x| x * x).sum::<f64>().sqrt();
        let diff = energy(&mut a.iter().zip(b).map(|(x, y)| f64::from(x - y)));
        diff / energy(&mut a.iter().map(|&x| f64::from(x)))
    }

    /// Changes one parameter of a submit.
    type Change = fn(&mut SubmitInput);

    #[test]
    fn every_parameter_and_the_seed_change_the_sound_audibly() {
        let seconds = 4.0;
        let render = |input: &SubmitInput, seed| {
            synthesize(&Params::from_input(input), seed, seconds, SAMPLE_RATE)
        };
        let base = render(&input(), 7);
        let changes: [(&str, Change); 7] = [
            ("tags", |i| i.tags = "jazz, strings, bass, drums".into()),
            ("negative_tags", |i| i.negative_tags = "drums".into()),
            ("model", |i| i.model = Some("V5".into())),
            ("vocal_gender", |i| i.vocal_gender = Some("f".into())),
            ("style_weight", |i| i.style_weight = Some(0.9)),
            ("weirdness_constraint", |i| {
                i.weirdness_constraint = Some(0.7)
            }),
            ("audio_weight", |i| i.audio_weight = Some(0.1)),
        ];
        for (name, change) in changes {
            let mut changed = input();
            change(&mut changed);
            let d = difference(&base, &render(&changed, 7));
            assert!(d > 0.2, "{name} changes the sound by {d:.3} only");
        }
        let d = difference(&base, &render(&input(), 8));
        assert!(d > 0.2, "another seed changes the sound by {d:.3} only");
        assert_eq!(base, render(&input(), 7));
    }

    #[test]
    fn renders_a_valid_wav_of_the_asked_length_deterministically() {
        let params = Params::from_input(&SubmitInput {
            tags: "piano, strings".into(),
            ..input()
        });
        let bytes = render_wav(&params, 3, 1.5);
        assert_eq!(bytes, render_wav(&params, 3, 1.5));
        assert_ne!(bytes, render_wav(&params, 4, 1.5));
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

    /// Not a check: prints how long a 20 s track takes to render (`--nocapture`).
    #[test]
    fn a_20_s_render_takes() {
        let mut input = input();
        let demo = [
            "lofi, chill, drums, piano",
            "fast, drums, bass",
            "jazz, piano, bass",
        ];
        for tags in ["piano, bass", "slow, piano, strings"]
            .into_iter()
            .chain(demo)
        {
            input.tags = tags.into();
            input.model = Some("V5".into());
            let started = std::time::Instant::now();
            render_wav(&Params::from_input(&input), 7, 20.0);
            eprintln!("render of 20 s {tags} V5: {:?}", started.elapsed());
        }
    }
}
