//! The fallback schedule: what a process paces itself by when the shared store is away.
//! Pure arithmetic over wall-clock nanoseconds.
//!
//! N processes that lose Redis together each pace at 1/N of the limit. Were each to start
//! its own schedule from the moment it noticed, they would send in lock-step, a few
//! milliseconds apart, and a one-second window would see N calls at once. So every
//! process takes its slots from one grid laid on the wall clock, which the hosts share
//! (NTP keeps them within milliseconds): process I of N sends only at
//! `epoch + k·(N·period) + I·period`. Slots of two processes then differ by a non-zero
//! multiple of `period` modulo `N·period`: never closer than one `period`, which is the
//! account's spacing, and together they fill the grid evenly.

use crate::manifest::ShardPosition;

/// One endpoint's fallback schedule of one process.
#[derive(Clone, Debug)]
pub struct FallbackGrid {
    /// The account's spacing, in ns.
    period: u128,
    position: ShardPosition,
    /// No slot before this (the last slot + the interval, or a hold-off), in ns.
    next_free: u128,
}

impl FallbackGrid {
    /// The grid of `position` for a limit spaced `period_ns` apart.
    pub fn new(period_ns: u128, position: ShardPosition) -> Self {
        FallbackGrid {
            period: period_ns.max(1),
            position,
            next_free: 0,
        }
    }

    /// The spacing of this process's own slots: `count × period`.
    pub fn interval(&self) -> u128 {
        self.period * u128::from(self.position.count.get())
    }

    /// The first grid point of this process at or after `t`.
    pub fn point_at_or_after(&self, t: u128) -> u128 {
        let phase = self.period * u128::from(self.position.index);
        if t <= phase {
            return phase;
        }
        let steps = (t - phase).div_ceil(self.interval());
        phase + steps * self.interval()
    }

    /// Reserves the next slot at or after `earliest` (ns since the epoch).
    pub fn reserve(&mut self, earliest: u128) -> u128 {
        let slot = self.point_at_or_after(earliest.max(self.next_free));
        self.next_free = slot + self.interval();
        slot
    }

    /// No slot before `until`.
    pub fn hold_until(&mut self, until: u128) {
        self.next_free = self.next_free.max(until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    const MS: u128 = 1_000_000;

    fn at(index: u32, count: u32) -> ShardPosition {
        ShardPosition::new(index, count).unwrap()
    }

    #[test]
    fn slots_sit_on_the_process_own_phase() {
        let mut grid = FallbackGrid::new(50 * MS, at(1, 3));
        assert_eq!(grid.interval(), 150 * MS);
        // Its points are 50 ms past every multiple of 150 ms: from 900 ms, the next is 950.
        let t0 = 900 * MS;
        let slots: Vec<u128> = (0..4).map(|_| (grid.reserve(t0) - t0) / MS).collect();
        assert_eq!(slots, [50, 200, 350, 500]);
        grid.hold_until(t0 + 900 * MS);
        assert_eq!((grid.reserve(t0) - t0) / MS, 950);
        let mut sole = FallbackGrid::new(50 * MS, ShardPosition::SOLE);
        assert_eq!(
            sole.reserve(t0 + 1),
            t0 + 50 * MS,
            "the next point, not sooner"
        );
    }

    /// However N processes ask, and whatever holds they see, their slots together are
    /// never closer than the account's period, and each process's own are `N × period`
    /// apart: what any sliding window of the provider checks.
    #[test]
    fn processes_falling_back_together_never_send_closer_than_the_period() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        for count in [1u32, 2, 3, 5] {
            let period = 50 * MS;
            let mut grids: Vec<FallbackGrid> = (0..count)
                .map(|index| FallbackGrid::new(period, at(index, count)))
                .collect();
            // All notice at about the same instant, a few ms apart.
            let start = 1_732_000_000_000 * MS + rng.random_range(0..1_000) * MS;
            let mut slots = Vec::new();
            for (index, grid) in grids.iter_mut().enumerate() {
                let mut now = start + rng.random_range(0..5) * MS;
                let mut own = Vec::new();
                for _ in 0..300 {
                    now += rng.random_range(0..120) * MS;
                    if rng.random_range(0..30) == 0 {
                        grid.hold_until(now + rng.random_range(0..700) * MS);
                    }
                    own.push(grid.reserve(now));
                }
                for pair in own.windows(2) {
                    assert!(pair[1] - pair[0] >= period * u128::from(count), "{index}");
                }
                slots.extend(own);
            }
            slots.sort();
            for pair in slots.windows(2) {
                assert!(pair[1] - pair[0] >= period, "{count}: {pair:?}");
            }
        }
    }

    #[test]
    fn saturated_processes_fill_the_grid_evenly() {
        let period = 50 * MS;
        let t0 = 1_000_000 * MS + 7 * MS;
        let mut slots: Vec<u128> = (0..3)
            .flat_map(|index| {
                let mut grid = FallbackGrid::new(period, at(index, 3));
                (0..20).map(move |_| grid.reserve(t0)).collect::<Vec<_>>()
            })
            .collect();
        slots.sort();
        // The first slot is the first grid point of any phase; then one every period.
        let gaps: Vec<u128> = slots.windows(2).map(|p| p[1] - p[0]).collect();
        assert!(gaps.iter().all(|gap| *gap == period), "{gaps:?}");
        assert!(slots[0] >= t0 && slots[0] < t0 + period);
    }
}
