//! Simulator task ids that describe their task: creation time, every parameter that shapes
//! its sound, its seed, fate and track length. Any simulator instance can then answer for
//! any of its tasks and render its tracks, so a run resumed after a crash (or with a fresh
//! `run --simulate`) finds its tasks again. Pure.
//!
//! The id is `sim-NUMBER-CREATED-STYLE-VOICE-SEED-FATE-TRACKMS` (hex but the decimal
//! number; VOICE is [`Params::voice_bits`]). Ids of the first format, without VOICE, still
//! parse: their tasks render with the style alone and every other parameter absent.

use std::fmt;

use super::audio::{Params, Style};

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
#[derive(Clone, Debug, PartialEq)]
pub struct Ticket {
    /// The task's number at its simulator.
    pub number: u64,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// What shapes the sound.
    pub params: Params,
    /// The take: varies key, progression, tempo and melody of the tracks.
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
            "sim-{:06}-{:x}-{:02x}-{:08x}-{:x}-{}-{:x}",
            self.number,
            self.created_ms,
            self.params.style.to_bits(),
            self.params.voice_bits(),
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
        let (prefix, number, created, style, voice, seed, fate, track) = match parts[..] {
            [p, n, c, st, v, se, f, t] => (p, n, c, st, Some(v), se, f, t),
            [p, n, c, st, se, f, t] => (p, n, c, st, None, se, f, t),
            _ => return None,
        };
        if prefix != "sim" {
            return None;
        }
        let hex = |text: &str| u64::from_str_radix(text, 16).ok();
        let style = u8::from_str_radix(style, 16).ok()?;
        let params = match voice {
            Some(voice) => Params::from_bits(style, u32::from_str_radix(voice, 16).ok()?)?,
            None => Params::of_style(Style::from_bits(style)),
        };
        Some(Ticket {
            number: number.parse().ok()?,
            created_ms: hex(created)?,
            params,
            seed: hex(seed)?,
            fate: match fate {
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

    use crate::sim::audio::{Model, Vocal};

    fn ticket() -> Ticket {
        Ticket {
            number: 42,
            created_ms: 1_764_000_000_000,
            params: Params {
                style: Style::from_bits(0x2d),
                model: Model::V5,
                vocal: Vocal::Female,
                style_weight: Some(50),
                weirdness: None,
                audio_weight: Some(0),
            },
            seed: 0xdead_beef,
            fate: Fate::Fail,
            track_ms: 1500,
        }
    }

    #[test]
    fn ids_round_trip_and_foreign_ids_are_refused() {
        let id = ticket().to_string();
        assert_eq!(id, "sim-000042-19ab697e800-2d-0632ff00-deadbeef-fail-5dc");
        assert_eq!(Ticket::parse(&id), Some(ticket()));
        assert_eq!(Ticket::parse("task-unified-1757165031-uyujaw3d"), None);
        assert_eq!(Ticket::parse("sim-1-2-3-4-maybe-5"), None);
        assert_eq!(
            Ticket::parse("sim-1-2-3-0632ff65-4-ok-5"),
            None,
            "a weight of 1.01"
        );
    }

    #[test]
    fn ids_of_the_first_format_still_parse_with_the_style_alone() {
        let old = Ticket::parse("sim-000042-19ab697e800-2d-deadbeef-fail-5dc").unwrap();
        let expected = Ticket {
            params: Params::of_style(Style::from_bits(0x2d)),
            ..ticket()
        };
        assert_eq!(old, expected);
    }
}
