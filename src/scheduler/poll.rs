//! When to ask about a task next. Pure: elapsed time and progress in, a delay out.

use std::time::Duration;

/// The growing interval between detail queries of one task.
///
/// The caller makes the first query `first` after the submit; the interval then grows by
/// half each time up to `max`. When the provider reports progress, the next query aims just past the
/// estimated finish instead (never sooner than a floor, never later than the interval), so
/// a finished task is noticed promptly with few queries.
#[derive(Clone, Debug)]
pub struct PollSchedule {
    current: Duration,
    max: Duration,
    floor: Duration,
}

impl PollSchedule {
    /// A schedule from `poll_interval` growing to `poll_interval_max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        PollSchedule {
            current: first,
            max: max.max(first),
            floor: first.min(Duration::from_secs(1)),
        }
    }

    /// The wait after a query that found the task unfinished, `elapsed` after its submit.
    pub fn after_query(&mut self, elapsed: Duration, progress: Option<f64>) -> Duration {
        self.current = self.current.mul_f64(1.5).min(self.max);
        match progress.filter(|p| *p > 0.0 && *p < 100.0) {
            Some(percent) => {
                let remaining = elapsed.mul_f64((100.0 - percent) / percent);
                let margin = (remaining / 20).max(Duration::from_millis(50));
                (remaining + margin).clamp(self.floor, self.current)
            }
            None => self.current,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn grows_to_the_maximum_without_progress() {
        let mut schedule = PollSchedule::new(S(15), S(60));
        let delays: Vec<_> = (0..5).map(|_| schedule.after_query(S(0), None)).collect();
        assert_eq!(
            delays,
            [
                Duration::from_millis(22_500),
                Duration::from_millis(33_750),
                Duration::from_millis(50_625),
                S(60),
                S(60)
            ]
        );
    }

    #[test]
    fn aims_past_the_estimated_finish_when_progress_is_known() {
        let mut schedule = PollSchedule::new(S(15), S(60));
        // 40% after 20 s: 30 s left, but never later than the grown interval.
        assert_eq!(
            schedule.after_query(S(20), Some(40.0)),
            Duration::from_millis(22_500)
        );
        let mut schedule = PollSchedule::new(S(15), S(60));
        // 95% after 60 s: 3.16 s left, plus a 5% margin.
        assert_eq!(schedule.after_query(S(60), Some(95.0)).as_millis(), 3_315);
        // Never below the floor.
        assert_eq!(schedule.after_query(S(60), Some(99.9)), S(1));
    }
}
