//! Cron expressions read as Europe/London wall-clock times.
//!
//! The `cron` crate, given a time zone with daylight saving, skips a time that does
//! not exist (the spring gap) and fires twice at a time that exists twice (the
//! autumn overlap). A council's "every day at 01:30" means neither: here the
//! expression is walked in wall-clock time (naive, as if UTC) and each wall-clock
//! time is then placed in London: a time in the gap fires at the first valid
//! instant after it, an ambiguous time fires once, at the earlier instant.

use std::str::FromStr;

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Europe::London;

use crate::domain::Timestamp;

/// A cron schedule in Europe/London (seconds first: `sec min hour dom month dow`).
#[derive(Debug, Clone)]
pub struct LondonCron {
    schedule: cron::Schedule,
}

impl FromStr for LondonCron {
    type Err = String;

    fn from_str(expression: &str) -> Result<Self, Self::Err> {
        let schedule = cron::Schedule::from_str(expression)
            .map_err(|e| format!("not a cron expression ({e}): {expression}"))?;
        Ok(LondonCron { schedule })
    }
}

impl LondonCron {
    /// The first instant strictly after `now` at which the schedule fires.
    pub fn next_after(&self, now: Timestamp) -> Option<Timestamp> {
        let now_utc = Utc.timestamp_millis_opt(now.millis()).single()?;
        let wall = now_utc.with_timezone(&London).naive_local();
        // Start an hour of wall clock early: in the autumn overlap the wall clock
        // repeats an hour, and a time in it not yet reached (its earlier instant is
        // still ahead) must not be skipped.
        let from = Utc.from_utc_datetime(&(wall - Duration::hours(1)));
        self.schedule
            .after(&from)
            .take(10_000)
            .map(|fire: DateTime<Utc>| place_in_london(fire.naive_utc()))
            .find(|at| at.millis() > now.millis())
    }
}

/// A London wall-clock time as an instant: in a gap, the first valid instant after
/// it; when ambiguous, the earlier instant.
pub(crate) fn place_in_london(wall: NaiveDateTime) -> Timestamp {
    match London.from_local_datetime(&wall) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => {
            Timestamp::from_millis(t.timestamp_millis())
        }
        LocalResult::None => {
            // Clocks change on a whole minute: the first valid minute after the wall
            // time is the instant the clocks went forward.
            let mut minute = wall.with_second(0).and_then(|t| t.with_nanosecond(0));
            for _ in 0..(24 * 60) {
                let Some(m) = minute else { break };
                let next = m + Duration::minutes(1);
                if let LocalResult::Single(t) | LocalResult::Ambiguous(t, _) =
                    London.from_local_datetime(&next)
                {
                    return Timestamp::from_millis(t.timestamp_millis());
                }
                minute = Some(next);
            }
            // Unreachable for London; read the wall time as UTC rather than never.
            Timestamp::from_millis(wall.and_utc().timestamp_millis())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    fn fires(cron: &str, from: &str, n: usize) -> Vec<Timestamp> {
        let cron: LondonCron = cron.parse().unwrap();
        let mut now = at(from);
        (0..n)
            .map(|_| {
                now = cron.next_after(now).unwrap();
                now
            })
            .collect()
    }

    #[test]
    fn ordinary_days_in_winter_and_summer() {
        // 09:00 London is 09:00 UTC in winter and 08:00 UTC in summer.
        assert_eq!(
            fires("0 0 9 * * *", "2026-12-04T12:00:00Z", 1),
            [at("2026-12-05T09:00:00Z")]
        );
        assert_eq!(
            fires("0 0 9 * * *", "2026-07-04T12:00:00Z", 1),
            [at("2026-07-05T08:00:00Z")]
        );
    }

    #[test]
    fn a_time_in_the_spring_gap_fires_at_the_first_valid_instant() {
        // 29 March 2026: clocks go from 01:00 GMT to 02:00 BST; 01:30 does not exist.
        assert_eq!(
            fires("0 30 1 * * *", "2026-03-28T12:00:00Z", 2),
            [
                // 02:00 BST, the instant the clocks changed.
                at("2026-03-29T01:00:00Z"),
                // The next day as usual: 01:30 BST.
                at("2026-03-30T00:30:00Z"),
            ]
        );
    }

    #[test]
    fn an_ambiguous_time_in_the_autumn_overlap_fires_once_at_the_earlier_instant() {
        // 25 October 2026: 01:30 happens at 00:30 UTC (BST) and 01:30 UTC (GMT).
        assert_eq!(
            fires("0 30 1 * * *", "2026-10-24T12:00:00Z", 2),
            [at("2026-10-25T00:30:00Z"), at("2026-10-26T01:30:00Z")]
        );
        // Every quarter hour through the overlap: each wall-clock time once.
        let quarter = fires("0 */15 * * * *", "2026-10-24T23:50:00Z", 8);
        assert_eq!(
            quarter,
            [
                at("2026-10-25T00:00:00Z"), // 01:00 BST
                at("2026-10-25T00:15:00Z"),
                at("2026-10-25T00:30:00Z"),
                at("2026-10-25T00:45:00Z"),
                at("2026-10-25T02:00:00Z"), // 02:00 GMT: the repeated hour is not fired again
                at("2026-10-25T02:15:00Z"),
                at("2026-10-25T02:30:00Z"),
                at("2026-10-25T02:45:00Z"),
            ]
        );
    }

    #[test]
    fn inside_the_repeated_hour_nothing_fires_twice() {
        // Already 01:40 GMT, the second time round: 01:45 fired at 00:45 UTC.
        assert_eq!(
            fires("0 45 1 * * *", "2026-10-25T01:40:00Z", 1),
            [at("2026-10-26T01:45:00Z")]
        );
    }

    #[test]
    fn garbage_is_refused() {
        assert!("every day".parse::<LondonCron>().is_err());
    }
}
