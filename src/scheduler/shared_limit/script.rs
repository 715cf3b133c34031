//! The one Lua script that reserves a slot of a shared limit, after go-redis'
//! `redis_rate`: GCRA over one key per limit holding its theoretical arrival time (TAT),
//! with Redis' own `TIME` as the clock, so that the hosts' clocks never matter. A
//! reservation is one round trip and atomic however many processes ask.
//!
//! Unlike `redis_rate`, a slot is *reserved*: the answer is the delay until it, which the
//! caller maps onto its own clock. A slot is handed out at most [`super::HORIZON`] ahead
//! of Redis' now; an asker further back is told when to ask again and reserves nothing.
//! That bound is what makes falling back safe: when Redis goes away, no slot it handed out
//! lies more than the horizon past the moment it went.

use std::time::Duration;

/// The script. `KEYS[1]`: the limit's TAT in µs of Redis' clock. ARGV: mode (`reserve`,
/// `hold` or `check`), period µs, tolerance µs (`(burst − 1) × period`), then for
/// `reserve` the lead (no slot sooner than now + lead) and the horizon, for `hold` the
/// wait. Answers µs: `reserve` ≥ 0 is the delay until the slot reserved, < 0 minus the
/// wait before asking again; `hold` and `check` answer 0. `check` leaves the limit's key
/// as it is but does what a reservation does (`GET`, `TIME`, a `SET` with `PX`, to the
/// scratch key `KEYS[2]`), so that a key of the wrong type, a read-only replica, a user
/// without the rights or a Redis out of memory is found before anything is sent.
/// `redis.replicate_commands()` lets Redis before 5 write after `TIME`.
pub const LUA: &str = r#"
redis.replicate_commands()
local stored = redis.call('GET', KEYS[1])
if stored and not tonumber(stored) then
  return redis.error_reply('STEMBATCH ' .. KEYS[1] .. ' holds something else than a time')
end
local time = redis.call('TIME')
if ARGV[1] == 'check' then
  redis.call('SET', KEYS[2], time[1], 'PX', 1000)
  return 0
end
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local period = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local tat = now
if stored then
  tat = math.max(tonumber(stored), now)
end
local function store(value)
  local ttl_ms = math.ceil((value - now) / 1000) + 1000
  redis.call('SET', KEYS[1], string.format('%.0f', value), 'PX', string.format('%.0f', ttl_ms))
end
if ARGV[1] == 'hold' then
  store(math.max(tat, now + tonumber(ARGV[4]) + tolerance))
  return 0
end
local earliest = now + tonumber(ARGV[4])
tat = math.max(tat, earliest)
local slot = math.max(tat - tolerance, earliest)
local beyond = slot - now - tonumber(ARGV[5])
if beyond > 0 then
  return -beyond
end
store(tat + period)
return slot - now
"#;

/// What one call of the script asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    /// Leave the key as it is, but read and write as a reservation does (to a scratch
    /// key): is Redis usable?
    Check,
    /// A slot no sooner than `lead` from now, at most `horizon` ahead.
    Reserve {
        /// No slot sooner than this from Redis' now.
        lead: Duration,
        /// No slot further ahead than this.
        horizon: Duration,
    },
    /// No slot before `wait` from Redis' now.
    Hold {
        /// How long.
        wait: Duration,
    },
}

/// What a reservation got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A slot, this long after Redis ran the script.
    Slot(Duration),
    /// Nothing reserved: ask again after this long.
    AskAgainIn(Duration),
}

impl Ask {
    /// The script's ARGV for a limit spaced `period` apart with `tolerance`.
    pub fn args(self, period: Duration, tolerance: Duration) -> Vec<String> {
        let us = |d: Duration| d.as_micros().to_string();
        // Rounded up: the spacing, and a hold the provider asked for, are never shorter
        // than asked.
        let us_up = |d: Duration| d.as_nanos().div_ceil(1_000).to_string();
        let mut args = vec![
            match self {
                Ask::Check => "check",
                Ask::Reserve { .. } => "reserve",
                Ask::Hold { .. } => "hold",
            }
            .to_owned(),
            // At least 1 µs: a period of zero would make no spacing at all.
            us_up(period.max(Duration::from_micros(1))),
            us(tolerance),
        ];
        match self {
            Ask::Check => {}
            Ask::Reserve { lead, horizon } => args.extend([us(lead), us(horizon)]),
            Ask::Hold { wait } => args.push(us_up(wait)),
        }
        args
    }
}

impl Answer {
    /// Reads the script's answer to a reservation.
    pub fn of(micros: i64) -> Answer {
        match micros {
            0.. => Answer::Slot(Duration::from_micros(micros as u64)),
            _ => Answer::AskAgainIn(Duration::from_micros(micros.unsigned_abs())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_and_answers_are_microseconds_the_period_rounded_up() {
        let ms = Duration::from_millis;
        let reserve = Ask::Reserve {
            lead: ms(50),
            horizon: ms(250),
        };
        assert_eq!(
            reserve.args(ms(50), Duration::ZERO),
            ["reserve", "50000", "0", "50000", "250000"]
        );
        assert_eq!(
            Ask::Hold { wait: ms(2) }.args(ms(3), ms(6)),
            ["hold", "3000", "6000", "2000"]
        );
        assert_eq!(
            Ask::Check.args(Duration::from_nanos(10), Duration::ZERO),
            ["check", "1", "0"]
        );
        // 1200/7s: 5833.33… µs, rounded up so the shared spacing is never shorter.
        let period = Duration::from_nanos(5_833_334);
        assert_eq!(
            Ask::Hold {
                wait: Duration::from_nanos(1_000_001)
            }
            .args(period, Duration::ZERO),
            ["hold", "5834", "0", "1001"]
        );
        assert_eq!(Answer::of(0), Answer::Slot(Duration::ZERO));
        assert_eq!(
            Answer::of(1_500),
            Answer::Slot(Duration::from_micros(1_500))
        );
        assert_eq!(Answer::of(-20_000), Answer::AskAgainIn(ms(20)));
    }
}
