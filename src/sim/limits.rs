//! Sliding-window rate limits, as a provider enforces them: at most `count` accepted calls
//! in any window of `window`. Pure: the caller passes the time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// At most `count` calls in any `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowLimit {
    /// Calls allowed per window.
    pub count: u32,
    /// The window's length.
    pub window: Duration,
}

impl WindowLimit {
    /// Parses `N/DURATION`, e.g. `120/60s` or `3/1s`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (count, window) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not a limit (expected e.g. \"120/60s\")"))?;
        let count = count
            .trim()
            .parse()
            .map_err(|_| format!("{text:?}: {count:?} is not a count"))?;
        let window =
            humantime::parse_duration(window.trim()).map_err(|e| format!("{text:?}: {e}"))?;
        Ok(WindowLimit { count, window })
    }

    /// Parses a comma-separated list; empty means unlimited.
    pub fn parse_list(text: &str) -> Result<Vec<Self>, String> {
        text.split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty() && *part != "none")
            .map(Self::parse)
            .collect()
    }
}

/// The accepted calls of one endpoint, checked against all of its limits.
#[derive(Debug, Default)]
pub struct SlidingWindows {
    limits: Vec<WindowLimit>,
    accepted: VecDeque<Instant>,
}

impl SlidingWindows {
    /// Windows enforcing every limit in `limits`.
    pub fn new(limits: Vec<WindowLimit>) -> Self {
        SlidingWindows {
            limits,
            accepted: VecDeque::new(),
        }
    }

    /// Records a call at `now` if every limit allows it; otherwise how long until one would.
    pub fn try_accept(&mut self, now: Instant) -> Result<(), Duration> {
        let longest = self
            .limits
            .iter()
            .map(|l| l.window)
            .max()
            .unwrap_or_default();
        while self
            .accepted
            .front()
            .is_some_and(|&t| now.duration_since(t) >= longest)
        {
            self.accepted.pop_front();
        }
        let mut wait = Duration::ZERO;
        for limit in &self.limits {
            let in_window = self
                .accepted
                .iter()
                .rev()
                .take_while(|&&t| now.duration_since(t) < limit.window)
                .count();
            if in_window >= limit.count as usize {
                // The call that must leave the window before another fits.
                let oldest = self.accepted[self.accepted.len() - limit.count as usize];
                wait = wait.max(limit.window - now.duration_since(oldest));
            }
        }
        if wait > Duration::ZERO || self.limits.iter().any(|l| l.count == 0) {
            return Err(wait.max(Duration::from_millis(1)));
        }
        self.accepted.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enforces_every_window() {
        let mut windows = SlidingWindows::new(WindowLimit::parse_list("5/10s, 2/1s").unwrap());
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        assert!(windows.try_accept(at(0)).is_ok());
        assert!(windows.try_accept(at(100)).is_ok());
        assert_eq!(windows.try_accept(at(500)), Err(Duration::from_millis(500)));
        assert!(windows.try_accept(at(1000)).is_ok());
        assert!(windows.try_accept(at(2000)).is_ok());
        assert!(windows.try_accept(at(3000)).is_ok());
        // Five accepted in the last 10 s: the next fits when the first leaves.
        assert_eq!(
            windows.try_accept(at(4000)),
            Err(Duration::from_millis(6000))
        );
        assert!(windows.try_accept(at(10_000)).is_ok());
    }

    #[test]
    fn evenly_spaced_calls_at_the_limit_pass() {
        let mut windows = SlidingWindows::new(WindowLimit::parse_list("120/60s,3/1s").unwrap());
        let start = Instant::now();
        for i in 0..300u64 {
            assert!(
                windows
                    .try_accept(start + Duration::from_millis(500 * i))
                    .is_ok(),
                "call {i}"
            );
        }
    }

    #[test]
    fn parses_limit_lists() {
        assert_eq!(WindowLimit::parse_list("").unwrap(), vec![]);
        assert_eq!(WindowLimit::parse_list("none").unwrap(), vec![]);
        assert!(WindowLimit::parse("fast").is_err());
    }
}
