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
//! previous output is a single multiply-subtract.
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
}

impl LoudnessMeter {
    /// A meter for `channels` channels at `rate` Hz; `None` for zero of either.
    pub fn new(channels: usize, rate: u32) -> Option<Self> {
        if channels == 0 || rate == 0 {
            return None;
        }
        let filters = k_weighting(f64::from(rate));
        Some(LoudnessMeter {
            channels: (0..channels)
                .map(|c| (channel_weight(c, channels), filters))
                .collect(),
            frames_per_100ms: ((rate as usize + 5) / 10).max(1),
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
                let sum = filter_and_square(filters, &plane[at..at + take]);
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

/// Runs `samples` through the two filters and returns the sum of the squared output.
/// Two partial sums, so that the additions do not wait on each other.
fn filter_and_square(filters: &mut [Biquad; 2], samples: &[f32]) -> f64 {
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
