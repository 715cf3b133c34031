//! Simulator task ids that describe their task: creation time, style, fate, seed and track
//! length. Any simulator instance can then answer for any of its tasks, so a run resumed
//! after a crash (or with a fresh `run --simulate`) finds its tasks again. Pure.

use std::fmt;

/// What becomes of a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Finishes after the task duration.
    Finish,
    /// Fails after the task duration.
    Fail,
    /// Runs forever.
    Hang,
}

impl Fate {
    fn as_str(self) -> &'static str {
        match self {
            Fate::Finish => "ok",
            Fate::Fail => "fail",
            Fate::Hang => "hang",
        }
    }
}

/// Everything the simulator needs to know about a task, carried in its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// The task's number at its simulator.
    pub number: u64,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// The synthesis style ([`super::audio::Style::to_bits`]).
    pub style: u8,
    /// Varies key and progression of the tracks.
    pub seed: u64,
    /// How it ends.
    pub fate: Fate,
    /// Length of each track in milliseconds.
    pub track_ms: u64,
}

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sim-{:06}-{:x}-{:02x}-{:x}-{}-{:x}",
            self.number,
            self.created_ms,
            self.style,
            self.seed,
            self.fate.as_str(),
            self.track_ms
        )
    }
}

impl Ticket {
    /// Reads a task id; `None` for anything the simulator did not issue.
    pub fn parse(id: &str) -> Option<Ticket> {
        let parts: Vec<&str> = id.split('-').collect();
        let [prefix, number, created, style, seed, fate, track] = parts.as_slice() else {
            return None;
        };
        if *prefix != "sim" {
            return None;
        }
        let hex = |text: &str| u64::from_str_radix(text, 16).ok();
        Some(Ticket {
            number: number.parse().ok()?,
            created_ms: hex(created)?,
            style: u8::from_str_radix(style, 16).ok()?,
            seed: hex(seed)?,
            fate: match *fate {
                "ok" => Fate::Finish,
                "fail" => Fate::Fail,
                "hang" => Fate::Hang,
                _ => return None,
            },
            track_ms: hex(track)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_foreign_ids_are_refused() {
        let ticket = Ticket {
            number: 42,
            created_ms: 1_764_000_000_000,
            style: 0x2d,
            seed: 0xdead_beef,
            fate: Fate::Fail,
            track_ms: 1500,
        };
        let id = ticket.to_string();
        assert_eq!(id, "sim-000042-19ab697e800-2d-deadbeef-fail-5dc");
        assert_eq!(Ticket::parse(&id), Some(ticket));
        assert_eq!(Ticket::parse("task-unified-1757165031-uyujaw3d"), None);
        assert_eq!(Ticket::parse("sim-1-2-3-4-maybe-5"), None);
    }
}
