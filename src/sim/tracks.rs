//! The simulator's tracks: which ones exist, how each is rendered, and a small bounded cache
//! of recent renders, so a re-download (after a cut one) costs no second render.
//!
//! Rendering keeps a CPU busy for a noticeable time (a sizeable fraction of a second for a
//! 20 s track), so callers on the async runtime run [`TrackSpec::render`] on a blocking
//! thread. The cache itself is a plain structure: its owner guards it with a std mutex,
//! held only to look up or insert, never across an await and never while rendering.

use std::collections::VecDeque;

use bytes::Bytes;

use super::audio::{self, Params};
use super::ticket::Ticket;
use super::SimConfig;

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
}

impl TrackSpec {
    /// Track `track` (1-based) of `task_id`, if the simulator issued that task and the task
    /// has that track. Cheap: nothing is rendered.
    pub(super) fn of(config: &SimConfig, task_id: &str, track: u32) -> Option<TrackSpec> {
        let ticket = Ticket::parse(task_id)?;
        (1..=config.tracks_per_task)
            .contains(&track)
            .then(|| TrackSpec {
                params: ticket.params,
                // Each track its own take of the task.
                seed: ticket.seed.wrapping_add(u64::from(track)),
                seconds: ticket.track_ms as f64 / 1000.0,
            })
    }

    /// The WAV bytes. CPU-bound: not on an async worker thread.
    pub(super) fn render(&self) -> Vec<u8> {
        audio::render_wav(&self.params, self.seed, self.seconds)
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
