//! A track's waveform for the listening page: the peak of each of [`WAVE_POINTS`] equal
//! stretches of the track, as characters of [`WAVE_ALPHABET`]. Pure: [`Peaks`] is fed the
//! samples that quality control decodes ([`crate::qc::check`]), so a track is read and
//! decoded once for both; [`waveform`] is that decode, for a track the run did not draw.
//!
//! The length of a track is not always known before its end (a stream without a frame
//! count), so the peaks are kept per block of frames, at most 4,096 of them:
//! when they fill up, neighbours merge and the block doubles. At the end the blocks are
//! shared out among the points; a point's edges are then right to within one block, a
//! tenth of a point at worst.

use std::path::Path;

/// Points of a track's waveform: enough to see silence, clipping and the shape of a take.
pub const WAVE_POINTS: usize = 200;

/// Levels of one waveform point, as one character each of [`WAVE_ALPHABET`]; the top level
/// is kept for points that reach full scale (clipping).
pub const WAVE_ALPHABET: &[u8; 64] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_";

/// A sample at or above this share of full scale counts as clipped.
const CLIP_LEVEL: f32 = 0.999;

/// Frames per block to begin with: a short track still has a few blocks per point.
const FIRST_BLOCK: usize = 16;
/// Blocks kept at most before neighbours merge: at least ten per point after a merge.
const MAX_BLOCKS: usize = 4096;

/// The waveform of the audio file at `path` (any format quality control decodes): `None`
/// when it cannot be decoded (which its `qc` column says already: nothing is logged).
pub fn waveform(path: &Path) -> Option<String> {
    crate::qc::measure(path).ok().map(|(_, wave)| wave)
}

/// The running peaks of a track, fed frame by frame in planar chunks.
#[derive(Clone, Debug)]
pub struct Peaks {
    /// Frames per block.
    block: usize,
    /// Frames in the current block so far.
    filled: usize,
    /// The peak of the current block so far.
    current: f32,
    /// The peaks of the complete blocks.
    blocks: Vec<f32>,
}

impl Default for Peaks {
    fn default() -> Self {
        Peaks {
            block: FIRST_BLOCK,
            filled: 0,
            current: 0.0,
            blocks: Vec::with_capacity(MAX_BLOCKS),
        }
    }
}

impl Peaks {
    /// Adds frames given as one slice per channel, all of one length; a frame's level is
    /// its loudest channel's.
    pub fn add_planar(&mut self, planes: &[&[f32]]) {
        self.add_planar_with_peaks(planes, &mut Vec::new());
    }

    /// As [`Peaks::add_planar`], and sets `channel_peaks` to each channel's largest
    /// absolute value in these frames: quality control's sample peak, from the same pass
    /// over the samples rather than a second one.
    pub fn add_planar_with_peaks(&mut self, planes: &[&[f32]], channel_peaks: &mut Vec<f32>) {
        channel_peaks.clear();
        channel_peaks.resize(planes.len(), 0.0);
        let frames = planes.iter().map(|p| p.len()).min().unwrap_or(0);
        let mut at = 0;
        while at < frames {
            let take = (self.block - self.filled).min(frames - at);
            for (plane, channel_peak) in planes.iter().zip(channel_peaks.iter_mut()) {
                let peak = max_abs(&plane[at..at + take]);
                *channel_peak = channel_peak.max(peak);
                self.current = self.current.max(peak);
            }
            at += take;
            self.filled += take;
            if self.filled == self.block {
                self.blocks.push(self.current);
                self.current = 0.0;
                self.filled = 0;
                if self.blocks.len() == MAX_BLOCKS {
                    self.merge();
                }
            }
        }
    }

    /// Halves the blocks: each pair becomes one of twice the frames.
    fn merge(&mut self) {
        let merged: Vec<f32> = self
            .blocks
            .chunks(2)
            .map(|pair| pair.iter().fold(0f32, |m, p| m.max(*p)))
            .collect();
        self.blocks.clear();
        self.blocks.extend(merged);
        self.block *= 2;
    }

    /// The waveform: [`WAVE_POINTS`] characters of [`WAVE_ALPHABET`]; all at the bottom
    /// for a track without a frame.
    pub fn finish(mut self) -> String {
        if self.filled > 0 {
            self.blocks.push(self.current);
        }
        let n = self.blocks.len();
        let peaks: Vec<f32> = (0..WAVE_POINTS)
            .map(|point| {
                if n == 0 {
                    return 0.0;
                }
                let start = point * n / WAVE_POINTS;
                let end = ((point + 1) * n / WAVE_POINTS).max(start + 1);
                self.blocks[start..end.min(n)]
                    .iter()
                    .fold(0f32, |m, p| m.max(*p))
            })
            .collect();
        encode_wave(&peaks)
    }
}

/// The largest absolute value of `samples`, 0 for none. Eight running maxima side by side,
/// which the compiler turns into vector instructions.
pub fn max_abs(samples: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let mut chunks = samples.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, sample) in lanes.iter_mut().zip(chunk) {
            *lane = lane.max(sample.abs());
        }
    }
    let tail = chunks.remainder().iter().fold(0f32, |m, s| m.max(s.abs()));
    lanes.iter().fold(tail, |m, l| m.max(*l))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn wave_of(samples: &[f32], chunk: usize) -> String {
        let mut peaks = Peaks::default();
        for part in samples.chunks(chunk) {
            peaks.add_planar(&[part]);
        }
        peaks.finish()
    }

    #[test]
    fn each_point_is_the_peak_of_its_share_of_the_track_whatever_the_chunks() {
        // A ramp of 200 steps: point p holds step p.
        for frames_per_point in [1usize, 7, 100, 2_000] {
            let samples: Vec<f32> = (0..WAVE_POINTS * frames_per_point)
                .map(|i| (i / frames_per_point) as f32 / WAVE_POINTS as f32 * 0.9)
                .collect();
            let want = wave_of(&samples, samples.len());
            for chunk in [1, 333, 4096] {
                assert_eq!(wave_of(&samples, chunk), want, "chunks of {chunk}");
            }
            let first = want.as_bytes()[0];
            let last = *want.as_bytes().last().unwrap();
            assert!(first < last, "{want}");
            // Rising everywhere but where a point holds a block of its neighbour.
            let falls = want.as_bytes().windows(2).filter(|w| w[1] < w[0]).count();
            assert_eq!(falls, 0, "{frames_per_point}: {want}");
        }
    }

    #[test]
    fn a_single_loud_stretch_lands_at_its_place() {
        // 400,000 frames (several merges); full scale in the 10th twentieth only, which
        // is points 90 to 99; a block across an edge may spill into the next point.
        let frames = 400_000;
        let samples: Vec<f32> = (0..frames)
            .map(|i| if i * 20 / frames == 9 { 1.0 } else { 0.1 })
            .collect();
        let wave = wave_of(&samples, 1_152);
        let top: Vec<usize> = wave.match_indices('_').map(|(i, _)| i).collect();
        assert!(matches!(top.first(), Some(89 | 90)), "{wave}");
        assert!(matches!(top.last(), Some(99 | 100)), "{wave}");
        assert!((10..=12).contains(&top.len()), "{wave}");
        assert!(wave[..89].chars().all(|c| c == '6'), "{wave}");
    }

    #[test]
    fn a_frame_counts_its_loudest_channel_and_no_frame_is_flat() {
        let mut peaks = Peaks::default();
        peaks.add_planar(&[&[0.0; 400], &[0.5; 400]]);
        assert!(peaks.finish().chars().all(|c| c == 'W' || c == 'V'));
        assert_eq!(Peaks::default().finish(), "0".repeat(WAVE_POINTS));
    }

    #[test]
    fn the_channel_peaks_of_a_chunk_are_its_own_whatever_the_blocks() {
        // Three channels of different levels, in chunks that straddle blocks and merges.
        let frames = 300_000;
        let plane = |scale: f32| -> Vec<f32> {
            (0..frames)
                .map(|i| scale * ((i * 7_919 % 1_000) as f32 / 1_000.0 - 0.6))
                .collect()
        };
        let planes = [plane(0.2), plane(1.0), plane(0.5)];
        let (mut with, mut without) = (Peaks::default(), Peaks::default());
        let mut channel_peaks = vec![9.0; 1];
        for chunk in [1, 1_152, 4_097, 60_000].iter().cycle().scan(0, |at, len| {
            let range = *at..(*at + len).min(frames);
            *at = range.end;
            (!range.is_empty()).then_some(range)
        }) {
            let parts: Vec<&[f32]> = planes.iter().map(|p| &p[chunk.clone()]).collect();
            with.add_planar_with_peaks(&parts, &mut channel_peaks);
            without.add_planar(&parts);
            let own: Vec<f32> = parts.iter().map(|p| max_abs(p)).collect();
            assert_eq!(channel_peaks, own, "frames {chunk:?}");
        }
        assert_eq!(with.finish(), without.finish());
    }

    #[test]
    fn max_abs_of_any_length() {
        assert_eq!(max_abs(&[]), 0.0);
        for n in 1..40 {
            let samples: Vec<f32> = (0..n).map(|i| -(i as f32)).collect();
            assert_eq!(max_abs(&samples), (n - 1) as f32);
        }
    }
}
