//! The simulator's tracks: which ones exist, how each is rendered (bad on purpose for the
//! shares of [`super::Faults`] that ask for it), and a small bounded cache of recent
//! renders, so a re-download (after a cut one) costs no second render.
//!
//! Rendering keeps a CPU busy for a noticeable time (a sizeable fraction of a second for a
//! 20 s track), so callers on the async runtime run [`TrackSpec::render`] on a blocking
//! thread. The cache itself is a plain structure: its owner guards it with a std mutex,
//! held only to look up or insert, never across an await and never while rendering.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use super::audio::{self, Params};
use super::ticket::Ticket;
use super::{Faults, SimConfig};

/// Renders the cache keeps at most.
pub(super) const CACHE_ENTRIES: usize = 64;
/// Bytes the cache keeps at most: tracks follow the stem's length, so a few long ones
/// must not pin gigabytes.
pub(super) const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Everything needed to render one track of a simulator task.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct TrackSpec {
    params: Params,
    seed: u64,
    seconds: f64,
    defect: Option<Defect>,
    /// The submitted vocal ([`super::vocal`]), when the simulator holds it.
    vocal: Option<Arc<Vec<f32>>>,
}

/// What is wrong with a bad track.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Defect {
    /// A faint hiss, 2 steps of 16 bits at most (near -84 dBFS).
    Silent,
    /// The render four times too loud, flattened at full scale.
    Clipped,
    /// A quarter of the length the task's detail reports.
    Short,
    /// A RIFF/WAVE header, then noise.
    Undecodable,
}

/// The share of the reported length a short track has.
const SHORT_SHARE: f64 = 0.25;
/// How much louder than its render a clipped track is.
const CLIP_GAIN: f32 = 4.0;

impl Defect {
    /// The lot of the track whose take seed is `seed` under `faults`: one draw from the
    /// seed, against the shares laid end to end.
    fn draw(faults: &Faults, seed: u64) -> Option<Defect> {
        let draw = (splitmix64(seed ^ 0x0bad_7ac4) >> 11) as f64 / (1u64 << 53) as f64;
        let shares = [
            (faults.silent_tracks, Defect::Silent),
            (faults.clipped_tracks, Defect::Clipped),
            (faults.short_tracks, Defect::Short),
            (faults.undecodable_tracks, Defect::Undecodable),
        ];
        let mut bound = 0.0;
        for (share, defect) in shares {
            bound += share.max(0.0);
            if draw < bound {
                return Some(defect);
            }
        }
        None
    }
}

/// A well-mixed 64-bit hash of a seed.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl TrackSpec {
    /// Track `track` (1-based) of `task_id`, if the simulator issued that task and the task
    /// has that track. Cheap: nothing is rendered.
    pub(super) fn of(config: &SimConfig, task_id: &str, track: u32) -> Option<TrackSpec> {
        let ticket = Ticket::parse(task_id)?;
        // Each track its own take of the task.
        let seed = ticket.seed.wrapping_add(u64::from(track));
        (1..=config.tracks_per_task)
            .contains(&track)
            .then(|| TrackSpec {
                params: ticket.params,
                seed,
                seconds: ticket.track_ms as f64 / 1000.0,
                defect: Defect::draw(&config.faults, seed),
                vocal: None,
            })
    }

    /// The same track with `vocal` mixed in.
    pub(super) fn with_vocal(self, vocal: Option<Arc<Vec<f32>>>) -> Self {
        TrackSpec { vocal, ..self }
    }

    /// The WAV bytes. CPU-bound: not on an async worker thread.
    pub(super) fn render(&self) -> Vec<u8> {
        let samples = |seconds| {
            let backing = audio::render_samples(&self.params, self.seed, seconds);
            match &self.vocal {
                Some(vocal) => super::vocal::mix(&backing, vocal, self.params.audio_weight()),
                None => backing,
            }
        };
        let wav = |samples: &[f32]| audio::encode_wav(samples, audio::SAMPLE_RATE);
        match self.defect {
            None => wav(&samples(self.seconds)),
            Some(Defect::Short) => wav(&samples(self.seconds * SHORT_SHARE)),
            Some(Defect::Clipped) => {
                let loud: Vec<f32> = samples(self.seconds)
                    .iter()
                    .map(|s| (s * CLIP_GAIN).clamp(-1.0, 1.0))
                    .collect();
                wav(&loud)
            }
            Some(Defect::Silent) => {
                let step = 1.0 / f32::from(i16::MAX);
                let hiss: Vec<f32> = (0..self.frames())
                    .map(|i| (splitmix64(self.seed ^ i as u64) % 5) as f32 * step - 2.0 * step)
                    .collect();
                wav(&hiss)
            }
            Some(Defect::Undecodable) => self.undecodable(),
        }
    }

    fn frames(&self) -> usize {
        (self.seconds * f64::from(audio::SAMPLE_RATE)) as usize
    }

    /// `RIFF`, its length, `WAVE`, and then noise of the length the samples would have
    /// had: no format chunk, so no decoder reads it.
    fn undecodable(&self) -> Vec<u8> {
        let len = 12 + self.frames() * 2;
        let mut bytes = Vec::with_capacity(len);
        bytes.extend_from_slice(b"RIFF");
        bytes.extend_from_slice(&((len - 8) as u32).to_le_bytes());
        bytes.extend_from_slice(b"WAVE");
        let mut state = self.seed;
        while bytes.len() < len {
            state = splitmix64(state);
            let take = (len - bytes.len()).min(8);
            bytes.extend_from_slice(&state.to_le_bytes()[..take]);
        }
        bytes
    }
}

/// The most recently used renders, keyed by task id and track number, within
/// [`CACHE_ENTRIES`] and [`CACHE_BYTES`].
#[derive(Debug, Default)]
pub(super) struct RenderCache {
    /// Least recently used first.
    entries: VecDeque<(String, u32, Bytes)>,
    bytes: usize,
}

impl RenderCache {
    /// The cached bytes of a track, marking it as just used.
    pub(super) fn get(&mut self, task_id: &str, track: u32) -> Option<Bytes> {
        let index = self
            .entries
            .iter()
            .position(|(id, n, _)| id == task_id && *n == track)?;
        let entry = self.entries.remove(index)?;
        let bytes = entry.2.clone();
        self.entries.push_back(entry);
        Some(bytes)
    }

    /// Keeps a render, dropping the least recently used ones beyond the bounds. A render
    /// larger than the whole byte budget is not kept.
    pub(super) fn insert(&mut self, task_id: &str, track: u32, bytes: Bytes) {
        if bytes.len() > CACHE_BYTES {
            return;
        }
        if let Some(index) = self
            .entries
            .iter()
            .position(|(id, n, _)| id == task_id && *n == track)
        {
            // Two downloads raced to render the same track: keep one copy.
            if let Some((_, _, old)) = self.entries.remove(index) {
                self.bytes -= old.len();
            }
        }
        self.bytes += bytes.len();
        self.entries.push_back((task_id.to_owned(), track, bytes));
        while self.entries.len() > CACHE_ENTRIES || self.bytes > CACHE_BYTES {
            match self.entries.pop_front() {
                Some((_, _, old)) => self.bytes -= old.len(),
                None => break,
            }
        }
    }

    /// How many renders it holds.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_most_recently_used_renders_within_its_bounds() {
        let mut cache = RenderCache::default();
        for n in 0..CACHE_ENTRIES as u32 {
            cache.insert("task", n, Bytes::from(vec![n as u8; 4]));
        }
        // Using track 0 makes track 1 the oldest: the next insert evicts it.
        assert_eq!(cache.get("task", 0), Some(Bytes::from(vec![0; 4])));
        cache.insert("other", 1, Bytes::from_static(b"new"));
        assert_eq!(cache.len(), CACHE_ENTRIES);
        assert!(cache.get("task", 1).is_none());
        assert!(cache.get("task", 0).is_some() && cache.get("other", 1).is_some());

        let big = Bytes::from(vec![0; CACHE_BYTES / 2 + 1]);
        cache.insert("big", 1, big.clone());
        cache.insert("big", 2, big.clone());
        assert!(cache.get("big", 1).is_none(), "over the byte budget");
        assert!(cache.get("big", 2).is_some());
        cache.insert("huge", 1, Bytes::from(vec![0; CACHE_BYTES + 1]));
        assert!(cache.get("huge", 1).is_none(), "larger than the budget");
        assert!(cache.get("big", 2).is_some());
    }

    #[test]
    fn a_second_insert_of_one_track_keeps_one_copy() {
        let mut cache = RenderCache::default();
        cache.insert("task", 1, Bytes::from_static(b"abc"));
        cache.insert("task", 1, Bytes::from_static(b"abc"));
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.bytes, 3);
    }

    #[test]
    fn bad_tracks_are_drawn_from_the_seed_by_their_shares() {
        let draw = |faults: &Faults| -> Vec<Option<Defect>> {
            (0..2000).map(|seed| Defect::draw(faults, seed)).collect()
        };
        assert!(draw(&Faults::default()).iter().all(Option::is_none));
        let every = Faults {
            short_tracks: 1.0,
            ..Faults::default()
        };
        assert!(draw(&every).iter().all(|d| *d == Some(Defect::Short)));
        let mixed = Faults {
            silent_tracks: 0.1,
            clipped_tracks: 0.2,
            undecodable_tracks: 0.3,
            ..Faults::default()
        };
        let drawn = draw(&mixed);
        assert_eq!(drawn, draw(&mixed), "the same seeds, the same lots");
        let share =
            |defect| drawn.iter().filter(|d| **d == defect).count() as f64 / drawn.len() as f64;
        assert!((share(Some(Defect::Silent)) - 0.1).abs() < 0.03);
        assert!((share(Some(Defect::Clipped)) - 0.2).abs() < 0.03);
        assert!((share(Some(Defect::Undecodable)) - 0.3).abs() < 0.03);
        assert!((share(None) - 0.4).abs() < 0.03);
    }

    /// Each bad track is what quality control calls it; the detail's duration is the
    /// full one, so a short track is short against it.
    #[test]
    fn bad_tracks_get_their_verdicts() {
        use crate::qc::{analyze, Verdict};
        let id = "sim-000001-19ab697e800-2d-0632ff00-deadbeef-ok-1388";
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (Faults::default(), Verdict::Ok),
            (
                Faults {
                    silent_tracks: 1.0,
                    ..Faults::default()
                },
                Verdict::Silent,
            ),
            (
                Faults {
                    clipped_tracks: 1.0,
                    ..Faults::default()
                },
                Verdict::Clipped,
            ),
            (
                Faults {
                    short_tracks: 1.0,
                    ..Faults::default()
                },
                Verdict::Short,
            ),
            (
                Faults {
                    undecodable_tracks: 1.0,
                    ..Faults::default()
                },
                Verdict::Undecodable,
            ),
        ];
        for (faults, verdict) in cases {
            let config = SimConfig {
                faults,
                ..SimConfig::default()
            };
            let spec = TrackSpec::of(&config, id, 1).unwrap();
            assert_eq!(spec.seconds, 5.0);
            let bytes = spec.render();
            assert_eq!(bytes, spec.render(), "deterministic");
            assert!(crate::audio_format::sniff(&bytes).is_some(), "{verdict}");
            let path = dir.path().join(format!("{verdict}.wav"));
            std::fs::write(&path, &bytes).unwrap();
            let qc = analyze(&path, Some(spec.seconds));
            assert_eq!(qc.verdict, verdict, "{qc:?}");
        }
    }

    #[test]
    fn only_issued_tasks_and_their_tracks_exist() {
        let config = SimConfig::default();
        let id = "sim-000001-19ab697e800-2d-0632ff00-deadbeef-ok-5dc";
        let spec = TrackSpec::of(&config, id, 2).expect("track 2 of 2");
        assert_eq!(spec.seconds, 1.5);
        assert!(TrackSpec::of(&config, id, 0).is_none());
        assert!(TrackSpec::of(&config, id, 3).is_none());
        assert!(TrackSpec::of(&config, "task-unified-1757165031-uyujaw3d", 1).is_none());
    }
}
