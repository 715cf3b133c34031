//! Tracks counted by QC verdict ([`QcCounts`]): the line of the run's closing summary,
//! `status` and `status --json` that shows bad audio without the page. Pure.

use std::fmt;

use serde::Serialize;

use super::Verdict;

/// Tracks by QC verdict, for the run's closing lines, `status` and `status --json`: what
/// a cron mail or a dashboard shows of bad audio without the page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct QcCounts {
    /// `ok`.
    pub ok: usize,
    /// `silent`.
    pub silent: usize,
    /// `clipped`.
    pub clipped: usize,
    /// `short`.
    pub short: usize,
    /// `undecodable`.
    pub undecodable: usize,
    /// Tracks without a verdict: downloaded before quality control existed, or a `qc`
    /// word this version does not know.
    pub unchecked: usize,
}

impl QcCounts {
    /// Counts one track.
    pub fn add(&mut self, verdict: Option<Verdict>) {
        let slot = match verdict {
            Some(Verdict::Ok) => &mut self.ok,
            Some(Verdict::Silent) => &mut self.silent,
            Some(Verdict::Clipped) => &mut self.clipped,
            Some(Verdict::Short) => &mut self.short,
            Some(Verdict::Undecodable) => &mut self.undecodable,
            None => &mut self.unchecked,
        };
        *slot += 1;
    }

    /// Counts one track by its `qc` column; an empty or unknown word is unchecked.
    pub fn add_word(&mut self, word: &str) {
        self.add(Verdict::from_word(word));
    }

    /// Every track counted.
    pub fn total(&self) -> usize {
        self.ok + self.bad() + self.unchecked
    }

    /// The tracks that failed quality control.
    pub fn bad(&self) -> usize {
        self.silent + self.clipped + self.short + self.undecodable
    }
}

impl fmt::Display for QcCounts {
    /// "48 tracks: 41 ok, 3 silent, 2 clipped, 2 short": `ok` always, the others when
    /// some tracks have them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.total();
        write!(f, "{total} track{}", if total == 1 { "" } else { "s" })?;
        if total == 0 {
            return Ok(());
        }
        write!(f, ": {} ok", self.ok)?;
        let others = [
            (self.silent, "silent"),
            (self.clipped, "clipped"),
            (self.short, "short"),
            (self.undecodable, "undecodable"),
            (self.unchecked, "not checked"),
        ];
        for (count, word) in others {
            if count > 0 {
                write!(f, ", {count} {word}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_are_counted_by_verdict_and_said_in_one_line() {
        let mut counts = QcCounts::default();
        assert_eq!(counts.to_string(), "0 tracks");
        for _ in 0..41 {
            counts.add(Some(Verdict::Ok));
        }
        for word in [
            "silent", "silent", "silent", "clipped", "short", "short", "clipped",
        ] {
            counts.add_word(word);
        }
        assert_eq!(
            counts.to_string(),
            "48 tracks: 41 ok, 3 silent, 2 clipped, 2 short"
        );
        assert_eq!((counts.total(), counts.bad()), (48, 7));
        counts.add_word("");
        counts.add_word("garbled");
        counts.add(Some(Verdict::Undecodable));
        assert_eq!(
            counts.to_string(),
            "51 tracks: 41 ok, 3 silent, 2 clipped, 2 short, 1 undecodable, 2 not checked"
        );
        let mut one = QcCounts::default();
        one.add(Some(Verdict::Ok));
        assert_eq!(one.to_string(), "1 track: 1 ok");
        assert_eq!(
            serde_json::to_value(one).unwrap(),
            serde_json::json!({"ok": 1, "silent": 0, "clipped": 0, "short": 0, "undecodable": 0, "unchecked": 0})
        );
    }
}
