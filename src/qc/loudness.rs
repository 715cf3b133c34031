//! Integrated loudness after ITU-R BS.1770-4 / EBU R128, measured while the track is
//! decoded, from planar `f32` samples. Pure: no I/O.
//!
//! The `ebur128` crate measured it before; it stays the reference of the tests. It is
//! written for live meters (momentary and short-term loudness, any channel map): it keeps
//! the last 400 ms of filtered audio and adds up each 400 ms gating block anew every
//! 100 ms, so every sample is squared and summed four times, through a 4th-order filter
//! whose every step waits for the one before. Quality control needs one number per
//! track, so this meter keeps one sum of squares per 100 ms stretch (a gating block is
//! the sum of four of them), and filters with two cascaded biquads (the K-weighting's
//! two stages, as the standard gives them) written so that the step that waits on the
//! previous output is a single multiply-subtract. Each chunk is filtered as four
//! stretches side by side, the later ones corrected by the filters' zero-input response
//! (`filter_and_square` says how): four independent chains instead of one.
//!
//! Channel weights are BS.1770's for the usual layouts, as `ebur128` maps them: L, R, C at
//! 1.0, the surrounds at 1.41, the LFE (the 4th of six or more channels) and channels past
//! the 6th left out.

/// Below this (LUFS) a gating block is not programme (BS.1770's absolute gate).
const ABSOLUTE_GATE_LUFS: f64 = -70.0;
/// Blocks more than this below the ungated mean are left out (the relative gate, LU).
const RELATIVE_GATE_LU: f64 = -10.0;
/// Filter states this close to zero are set to zero between chunks: a decaying state
/// would otherwise reach the denormal range, where every operation is far slower.
const DENORMAL_GUARD: f64 = 1e-25;

/// Loudness of a mean square `energy` (BS.1770's -0.691 dB offset).
fn to_lufs(energy: f64) -> f64 {
    -0.691 + 10.0 * energy.log10()
}

/// One second-order section in direct form I. The terms that do not depend on the last
/// output are summed first, so that the chain from one output to the next is one
/// multiply and one subtract.
#[derive(Clone, Copy, Debug, Default)]
struct Biquad {
    b: [f64; 3],
    /// a1, a2 (a0 is 1).
    a: [f64; 2],
    x1: f64,
    x2: f64,
    y1: f64,
    y2: f64,
}

impl Biquad {
    #[inline(always)]
    fn step(&mut self, x: f64) -> f64 {
        let ahead = self.b[0] * x + self.b[1] * self.x1 + self.b[2] * self.x2 - self.a[1] * self.y2;
        let y = ahead - self.a[0] * self.y1;
        self.x2 = self.x1;
        self.x1 = x;
        self.y2 = self.y1;
        self.y1 = y;
        y
    }

    fn flush_denormals(&mut self) {
        for v in [&mut self.x1, &mut self.x2, &mut self.y1, &mut self.y2] {
            if v.abs() < DENORMAL_GUARD {
                *v = 0.0;
            }
        }
    }
}

/// The K-weighting of BS.1770 at `rate`: the high shelf ("stage 1", the head's
/// acoustics) then the high pass ("stage 2", RLB), with the constants `ebur128` (and
/// libebur128) use for any sample rate.
fn k_weighting(rate: f64) -> [Biquad; 2] {
    let shelf = {
        let (f0, gain_db, q) = (1681.974450955533, 3.999843853973347, 0.7071752369554196);
        let k = (std::f64::consts::PI * f0 / rate).tan();
        let vh = 10f64.powf(gain_db / 20.0);
        let vb = vh.powf(0.4996667741545416);
        let a0 = 1.0 + k / q + k * k;
        Biquad {
            b: [
                (vh + vb * k / q + k * k) / a0,
                2.0 * (k * k - vh) / a0,
                (vh - vb * k / q + k * k) / a0,
            ],
            a: [2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0],
            ..Biquad::default()
        }
    };
    let high_pass = {
        let (f0, q) = (38.13547087602444, 0.5003270373238773);
        let k = (std::f64::consts::PI * f0 / rate).tan();
        let a0 = 1.0 + k / q + k * k;
        Biquad {
            b: [1.0, -2.0, 1.0],
            a: [2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0],
            ..Biquad::default()
        }
    };
    [shelf, high_pass]
}

/// The weight of channel `index` of `channels` (0 when it does not count).
fn channel_weight(index: usize, channels: usize) -> f64 {
    const SURROUND: f64 = 1.41;
    match (channels, index) {
        (4, 0 | 1) => 1.0,
        (4, _) => SURROUND,
        (5, 0..=2) => 1.0,
        (5, _) => SURROUND,
        (_, 0..=2) => 1.0,
        (_, 4 | 5) => SURROUND,
        _ => 0.0,
    }
}

/// The running measurement of one track's integrated loudness.
#[derive(Clone, Debug)]
pub struct LoudnessMeter {
    /// Per channel: its weight and its filter.
    channels: Vec<(f64, [Biquad; 2])>,
    /// Frames in 100 ms (rounded as libebur128 does).
    frames_per_100ms: usize,
    /// Frames of the current 100 ms stretch so far.
    in_stretch: usize,
    /// The weighted sum of squares of the current stretch.
    sum: f64,
    /// The weighted sums of squares of every complete 100 ms stretch.
    stretches: Vec<f64>,
    /// The filters' zero-input responses, for the split into lanes ([`filter_and_square`]).
    responses: Responses,
    /// The lanes' outputs before their correction, reused from chunk to chunk.
    scratch: Vec<f64>,
}

impl LoudnessMeter {
    /// A meter for `channels` channels at `rate` Hz; `None` for zero of either.
    pub fn new(channels: usize, rate: u32) -> Option<Self> {
        if channels == 0 || rate == 0 {
            return None;
        }
        let filters = k_weighting(f64::from(rate));
        let frames_per_100ms = ((rate as usize + 5) / 10).max(1);
        Some(LoudnessMeter {
            responses: Responses::of(&filters, frames_per_100ms / LANES + 1),
            scratch: Vec::new(),
            channels: (0..channels)
                .map(|c| (channel_weight(c, channels), filters))
                .collect(),
            frames_per_100ms,
            in_stretch: 0,
            sum: 0.0,
            stretches: Vec::new(),
        })
    }

    /// The number of channels it measures.
    pub fn channels(&self) -> usize {
        self.channels.len()
    }

    /// Adds frames given as one slice per channel, all of one length. Large chunks are
    /// cheaper: the loop runs per channel within each 100 ms stretch.
    pub fn add_planar(&mut self, planes: &[&[f32]]) {
        debug_assert_eq!(planes.len(), self.channels.len());
        let frames = planes.iter().map(|p| p.len()).min().unwrap_or(0);
        let mut at = 0;
        while at < frames {
            let take = (self.frames_per_100ms - self.in_stretch).min(frames - at);
            for ((weight, filters), plane) in self.channels.iter_mut().zip(planes) {
                if *weight == 0.0 {
                    continue;
                }
                let sum = filter_and_square(
                    filters,
                    &plane[at..at + take],
                    &self.responses,
                    &mut self.scratch,
                );
                self.sum += *weight * sum;
            }
            at += take;
            self.in_stretch += take;
            if self.in_stretch == self.frames_per_100ms {
                self.stretches.push(self.sum);
                self.sum = 0.0;
                self.in_stretch = 0;
            }
        }
        for (_, filters) in &mut self.channels {
            filters.iter_mut().for_each(Biquad::flush_denormals);
        }
    }

    /// The integrated loudness in LUFS; `-inf` when no 400 ms block passes the absolute
    /// gate (silence, or less than 400 ms of audio).
    pub fn integrated(&self) -> f64 {
        let block_frames = (4 * self.frames_per_100ms) as f64;
        let blocks: Vec<f64> = self
            .stretches
            .windows(4)
            .map(|four| four.iter().sum::<f64>() / block_frames)
            .collect();
        let absolute = 10f64.powf((ABSOLUTE_GATE_LUFS + 0.691) / 10.0);
        let audible: Vec<f64> = blocks.into_iter().filter(|e| *e >= absolute).collect();
        if audible.is_empty() {
            return f64::NEG_INFINITY;
        }
        let mean = audible.iter().sum::<f64>() / audible.len() as f64;
        let relative = mean * 10f64.powf(RELATIVE_GATE_LU / 10.0);
        let (sum, count) = audible
            .iter()
            .filter(|e| **e >= relative)
            .fold((0.0, 0usize), |(s, n), e| (s + e, n + 1));
        if count == 0 {
            return f64::NEG_INFINITY;
        }
        to_lufs(sum / count as f64)
    }
}

/// Independent stretches of a chunk filtered side by side (see [`filter_and_square`]).
const LANES: usize = 4;
/// Lanes shorter than this are not worth their correction: the chunk is filtered in one
/// chain.
const MIN_LANE: usize = 16;

/// The zero-input responses of the two cascaded filters: for each of the four values of
/// their state that depend on past outputs (the shelf's last two outputs, which are also
/// the high pass's last two inputs, and the high pass's last two outputs) set to 1 and
/// the rest to 0, the shelf's and the high pass's output at each step after, with no
/// input. The filters are linear: the output from any state is the output from the zero
/// state plus these responses weighted by that state.
#[derive(Clone, Debug)]
struct Responses {
    /// Per step: the shelf's output for each unit state.
    shelf: Vec<[f64; 4]>,
    /// Per step: the high pass's output for each unit state.
    high_pass: Vec<[f64; 4]>,
}

impl Responses {
    fn of(filters: &[Biquad; 2], steps: usize) -> Responses {
        let mut responses = Responses {
            shelf: vec![[0.0; 4]; steps],
            high_pass: vec![[0.0; 4]; steps],
        };
        for unit in 0..4 {
            let mut state = [0.0; 4];
            state[unit] = 1.0;
            let [mut shelf, mut high_pass] = with_state(filters, 0.0, 0.0, state);
            for step in 0..steps {
                let u = shelf.step(0.0);
                responses.shelf[step][unit] = u;
                responses.high_pass[step][unit] = high_pass.step(u);
            }
        }
        responses
    }
}

/// `filters` (for their coefficients) with the shelf's last inputs `x1`, `x2` and the
/// state `[shelf y1, shelf y2, high pass y1, high pass y2]`; the high pass's last inputs
/// are the shelf's last outputs.
fn with_state(filters: &[Biquad; 2], x1: f64, x2: f64, state: [f64; 4]) -> [Biquad; 2] {
    let [mut shelf, mut high_pass] = *filters;
    (shelf.x1, shelf.x2, shelf.y1, shelf.y2) = (x1, x2, state[0], state[1]);
    (high_pass.x1, high_pass.x2) = (state[0], state[1]);
    (high_pass.y1, high_pass.y2) = (state[2], state[3]);
    [shelf, high_pass]
}

fn dot(a: [f64; 4], b: [f64; 4]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2] + a[3] * b[3]
}

/// Runs `samples` through the two filters and returns the sum of the squared output.
///
/// Each filter's next output waits on its previous one, so one chain of samples leaves
/// the processor mostly waiting. The chunk is therefore cut into [`LANES`] equal
/// stretches, filtered side by side in one loop (independent chains, which the compiler
/// also packs into vector instructions): the first from the filters' true state, the
/// others from a zero state (but their true preceding inputs). The filters are linear, so
/// each later stretch's true output is its zero-state output plus the zero-input response
/// ([`Responses`]) to the true state at its start, which the stretch before it gives once
/// corrected. The remainder of the chunk (fewer than [`LANES`] samples) and short chunks
/// go through [`filter_in_one_chain`].
fn filter_and_square(
    filters: &mut [Biquad; 2],
    samples: &[f32],
    responses: &Responses,
    scratch: &mut Vec<f64>,
) -> f64 {
    let lane = samples.len() / LANES;
    if lane < MIN_LANE.max(2) || lane > responses.shelf.len() {
        return filter_in_one_chain(filters, samples);
    }
    let [shelf, high_pass] = *filters;
    debug_assert_eq!(high_pass.b, [1.0, -2.0, 1.0]);
    let (sb, sa, ha) = (shelf.b, shelf.a, high_pass.a);
    // Per lane: the shelf's last inputs and outputs, the high pass's last outputs (its
    // last inputs are the shelf's last outputs).
    let mut x1 = [0.0f64; LANES];
    let mut x2 = [0.0f64; LANES];
    let mut u1 = [0.0f64; LANES];
    let mut u2 = [0.0f64; LANES];
    let mut v1 = [0.0f64; LANES];
    let mut v2 = [0.0f64; LANES];
    (x1[0], x2[0], u1[0], u2[0]) = (shelf.x1, shelf.x2, shelf.y1, shelf.y2);
    (v1[0], v2[0]) = (high_pass.y1, high_pass.y2);
    for k in 1..LANES {
        x1[k] = f64::from(samples[k * lane - 1]);
        x2[k] = f64::from(samples[k * lane - 2]);
    }
    scratch.clear();
    scratch.resize(LANES * lane, 0.0);
    for i in 0..lane {
        let mut x = [0.0f64; LANES];
        for k in 0..LANES {
            x[k] = f64::from(samples[k * lane + i]);
        }
        let mut u = [0.0f64; LANES];
        let mut v = [0.0f64; LANES];
        for k in 0..LANES {
            let ahead = sb[0] * x[k] + sb[1] * x1[k] + sb[2] * x2[k] - sa[1] * u2[k];
            u[k] = ahead - sa[0] * u1[k];
            // The high pass's numerator is [1, -2, 1] ([`k_weighting`]): the same sums
            // as `step`'s, without the multiplications by one.
            let ahead = (u[k] - 2.0 * u1[k]) + u2[k] - ha[1] * v2[k];
            v[k] = ahead - ha[0] * v1[k];
        }
        x2 = x1;
        x1 = x;
        u2 = u1;
        u1 = u;
        v2 = v1;
        v1 = v;
        for k in 0..LANES {
            scratch[k * lane + i] = v[k];
        }
    }
    // The first lane's outputs are true; each later lane's are corrected by the true
    // state at its start, the corrected end of the lane before.
    let mut sum = squares::<false>(&scratch[..lane], &responses.high_pass, [0.0; 4]);
    let mut state = [u1[0], u2[0], v1[0], v2[0]];
    for k in 1..LANES {
        let outputs = &scratch[k * lane..(k + 1) * lane];
        sum += squares::<true>(outputs, &responses.high_pass, state);
        let (last, before) = (lane - 1, lane - 2);
        state = [
            u1[k] + dot(state, responses.shelf[last]),
            u2[k] + dot(state, responses.shelf[before]),
            v1[k] + dot(state, responses.high_pass[last]),
            v2[k] + dot(state, responses.high_pass[before]),
        ];
    }
    let end = LANES - 1;
    *filters = with_state(filters, x1[end], x2[end], state);
    sum + filter_in_one_chain(filters, &samples[LANES * lane..])
}

/// The sum of the squares of `outputs`, each first `CORRECTED` by the zero-input
/// `responses` to `state`. Four partial sums in registers, so that the additions do not
/// wait on each other.
fn squares<const CORRECTED: bool>(outputs: &[f64], responses: &[[f64; 4]], state: [f64; 4]) -> f64 {
    let at = |i: usize| match CORRECTED {
        true => outputs[i] + dot(state, responses[i]),
        false => outputs[i],
    };
    let mut sums = [0.0f64; 4];
    let whole = outputs.len() / 4 * 4;
    for i in (0..whole).step_by(4) {
        let y = [at(i), at(i + 1), at(i + 2), at(i + 3)];
        for (sum, y) in sums.iter_mut().zip(y) {
            *sum += y * y;
        }
    }
    for i in whole..outputs.len() {
        let y = at(i);
        sums[0] += y * y;
    }
    (sums[0] + sums[1]) + (sums[2] + sums[3])
}

/// As [`filter_and_square`], one sample after the other. Two partial sums, so that the
/// additions do not wait on each other.
fn filter_in_one_chain(filters: &mut [Biquad; 2], samples: &[f32]) -> f64 {
    let [mut shelf, mut high_pass] = *filters;
    let (mut even, mut odd) = (0.0f64, 0.0f64);
    let mut pairs = samples.chunks_exact(2);
    for pair in &mut pairs {
        let y0 = high_pass.step(shelf.step(f64::from(pair[0])));
        let y1 = high_pass.step(shelf.step(f64::from(pair[1])));
        even += y0 * y0;
        odd += y1 * y1;
    }
    for &x in pairs.remainder() {
        let y = high_pass.step(shelf.step(f64::from(x)));
        even += y * y;
    }
    *filters = [shelf, high_pass];
    even + odd
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the `ebur128` crate says of the same interleaved samples.
    fn reference(interleaved: &[f32], channels: usize, rate: u32) -> f64 {
        let mut meter = ebur128::EbuR128::new(channels as u32, rate, ebur128::Mode::I).unwrap();
        meter.add_frames_f32(interleaved).unwrap();
        meter.loudness_global().unwrap()
    }

    fn ours(interleaved: &[f32], channels: usize, rate: u32, chunk: usize) -> f64 {
        let mut meter = LoudnessMeter::new(channels, rate).unwrap();
        let frames = interleaved.len() / channels;
        let planes: Vec<Vec<f32>> = (0..channels)
            .map(|c| (0..frames).map(|f| interleaved[f * channels + c]).collect())
            .collect();
        let mut at = 0;
        while at < frames {
            let end = (at + chunk).min(frames);
            let slices: Vec<&[f32]> = planes.iter().map(|p| &p[at..end]).collect();
            meter.add_planar(&slices);
            at = end;
        }
        meter.integrated()
    }

    /// A deterministic signal: tones, noise and a loud and a quiet stretch, so that
    /// both gates have something to do.
    fn signal(seconds: f64, channels: usize, rate: u32, seed: u64) -> Vec<f32> {
        let frames = (seconds * f64::from(rate)) as usize;
        let mut state = seed | 1;
        let mut noise = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        };
        let mut out = Vec::with_capacity(frames * channels);
        for f in 0..frames {
            let t = f as f64 / f64::from(rate);
            // Loud for the first third, near-silent in the middle, moderate after.
            let level = match (3.0 * t / seconds) as u32 {
                0 => 0.7,
                1 => 0.002,
                _ => 0.2,
            };
            for c in 0..channels {
                let tone = (std::f64::consts::TAU * (110.0 * (c + 1) as f64) * t).sin();
                let high = (std::f64::consts::TAU * 3_000.0 * t).sin();
                out.push((level * (0.5 * tone + 0.2 * high + 0.3 * noise())) as f32);
            }
        }
        out
    }

    #[test]
    fn agrees_with_the_ebur128_crate_at_every_rate_and_layout() {
        for (rate, channels, seconds) in [
            (22_050, 1, 4.5),
            (44_100, 1, 3.0),
            (44_100, 2, 3.0),
            (48_000, 2, 2.5),
            (32_000, 5, 2.0),
            (48_000, 6, 2.0),
            (8_000, 1, 1.7),
            (96_000, 2, 1.0),
        ] {
            let samples = signal(seconds, channels, rate, u64::from(rate) + channels as u64);
            let want = reference(&samples, channels, rate);
            for chunk in [1, 777, 1152, 1 << 20] {
                let got = ours(&samples, channels, rate, chunk);
                assert!(
                    (got - want).abs() < 0.001,
                    "{rate} Hz, {channels} channels, chunks of {chunk}: {got} against {want}"
                );
            }
        }
    }

    #[test]
    fn a_full_scale_sine_reads_minus_3_lufs_and_silence_or_a_short_track_none() {
        let rate = 48_000;
        let sine: Vec<f32> = (0..rate * 5)
            .map(|i| (std::f64::consts::TAU * 997.0 * f64::from(i) / f64::from(rate)).sin() as f32)
            .collect();
        let lufs = ours(&sine, 1, rate, 4096);
        assert!((lufs - -3.01).abs() < 0.02, "{lufs}");
        assert_eq!(
            ours(&vec![0.0; 48_000 * 3], 1, rate, 4096),
            f64::NEG_INFINITY
        );
        assert_eq!(ours(&sine[..19_000], 1, rate, 4096), f64::NEG_INFINITY);
        assert!(LoudnessMeter::new(0, rate).is_none() && LoudnessMeter::new(1, 0).is_none());
    }

    #[test]
    fn lanes_corrected_by_the_zero_input_response_equal_one_chain() {
        let rate = 44_100;
        let samples = signal(0.5, 1, rate, 3);
        let meter = LoudnessMeter::new(1, rate).unwrap();
        let mut scratch = Vec::new();
        for (start, len) in [(0, 4410), (100, 4409), (7, 64), (5, 67), (2_000, 1_153)] {
            let chunk = &samples[start..start + len];
            // A true state that is not zero: the filters after the samples before.
            let mut warm = meter.channels[0].1;
            filter_in_one_chain(&mut warm, &samples[..start]);
            let (mut chain, mut lanes) = (warm, warm);
            let want = filter_in_one_chain(&mut chain, chunk);
            let got = filter_and_square(&mut lanes, chunk, &meter.responses, &mut scratch);
            assert!(
                (got - want).abs() <= 1e-9 * want,
                "{len} samples from {start}: {got} against {want}"
            );
            for (a, b) in chain.iter().zip(&lanes) {
                for (x, y) in [(a.x1, b.x1), (a.x2, b.x2), (a.y1, b.y1), (a.y2, b.y2)] {
                    assert!((x - y).abs() <= 1e-9 * x.abs().max(1e-6), "{x} against {y}");
                }
            }
        }
    }

    #[test]
    fn silence_after_sound_does_not_leave_denormal_filter_states() {
        let rate = 22_050;
        let mut meter = LoudnessMeter::new(1, rate).unwrap();
        meter.add_planar(&[&signal(1.0, 1, rate, 7)]);
        let zeros = vec![0f32; rate as usize];
        for _ in 0..20 {
            meter.add_planar(&[&zeros]);
        }
        for filter in &meter.channels[0].1 {
            for v in [filter.x1, filter.x2, filter.y1, filter.y2] {
                assert!(v == 0.0 || v.abs() >= DENORMAL_GUARD, "{v}");
            }
        }
    }
}
