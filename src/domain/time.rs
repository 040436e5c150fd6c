//! Time as the store keeps it: UTC, epoch milliseconds, set by the application.

use std::fmt;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// An instant in UTC, shown to API clients as RFC 3339.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 date-time (e.g. 2026-11-23T09:30:00Z)")]
pub struct TimestampError;

impl Timestamp {
    /// The date and time as a resident in England reads them ("Tuesday 14 July
    /// 2026", "3:00pm"), in Europe/London whatever the season.
    pub fn in_london(self) -> (String, String) {
        use chrono::TimeZone;
        match chrono_tz::Europe::London.timestamp_millis_opt(self.0) {
            chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => (
                t.format("%A %-d %B %Y").to_string(),
                t.format("%-I:%M%P").to_string(),
            ),
            chrono::LocalResult::None => (self.to_string(), String::new()),
        }
    }

    pub fn now() -> Self {
        Timestamp((OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64)
    }

    pub fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub fn from_system_time(t: std::time::SystemTime) -> Self {
        let ms = t
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Timestamp(ms)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    /// The UTC calendar day this instant falls on.
    pub fn utc_date(self) -> CalendarDate {
        CalendarDate(
            time::OffsetDateTime::from_unix_timestamp(self.0.div_euclid(1000))
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
                .date(),
        )
    }

    pub fn plus_days(self, days: i64) -> Self {
        Timestamp(self.0 + days * 86_400_000)
    }

    pub fn parse(s: &str) -> Result<Self, TimestampError> {
        let t = OffsetDateTime::parse(s.trim(), &Rfc3339).map_err(|_| TimestampError)?;
        Ok(Timestamp((t.unix_timestamp_nanos() / 1_000_000) as i64))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1_000_000)
            .map_err(|_| fmt::Error)?;
        f.write_str(&t.format(&Rfc3339).map_err(|_| fmt::Error)?)
    }
}

super::string_domain_type!(
    Timestamp,
    "An RFC 3339 UTC date-time",
    "2026-11-23T09:30:00Z"
);

/// A calendar date such as a date of birth (no time zone: it is the same day everywhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CalendarDate(time::Date);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a date in YYYY-MM-DD form")]
pub struct CalendarDateError;

const DATE_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]");

impl CalendarDate {
    pub fn parse(s: &str) -> Result<Self, CalendarDateError> {
        time::Date::parse(s.trim(), DATE_FORMAT)
            .map(CalendarDate)
            .map_err(|_| CalendarDateError)
    }
}

impl fmt::Display for CalendarDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.format(DATE_FORMAT).map_err(|_| fmt::Error)?)
    }
}

super::string_domain_type!(CalendarDate, "A calendar date", "1970-01-31");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_as_rfc3339() {
        let t = Timestamp::parse("2026-11-23T09:30:00.123Z").unwrap();
        assert_eq!(t.to_string(), "2026-11-23T09:30:00.123Z");
        assert_eq!(
            Timestamp::parse("2026-11-23T10:30:00+01:00")
                .unwrap()
                .to_string(),
            "2026-11-23T09:30:00Z"
        );
        assert!(Timestamp::parse("yesterday").is_err());
    }

    #[test]
    fn dates() {
        assert_eq!(
            CalendarDate::parse("1970-01-31").unwrap().to_string(),
            "1970-01-31"
        );
        assert!(CalendarDate::parse("1970-02-31").is_err());
    }
}

/// A daily window, in Europe/London wall-clock time, in which residents are not
/// sent unprompted messages (e.g. no texts from 21:00 to 08:00). Parsed from
/// `"HH:MM-HH:MM"`; a window may wrap past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    /// Minutes after local midnight.
    start: u32,
    end: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quiet hours are written HH:MM-HH:MM (e.g. 21:00-08:00), start and end different")]
pub struct QuietHoursError;

impl QuietHours {
    pub fn parse(s: &str) -> Result<Self, QuietHoursError> {
        let (a, b) = s.split_once('-').ok_or(QuietHoursError)?;
        let minutes = |t: &str| minute_of_day(t).ok_or(QuietHoursError);
        let (start, end) = (minutes(a)?, minutes(b)?);
        if start == end {
            return Err(QuietHoursError);
        }
        Ok(QuietHours { start, end })
    }

    /// When the window that `now` falls in ends (the first instant messages may go
    /// again); `None` when `now` is not in quiet hours.
    pub fn ends_after(&self, now: Timestamp) -> Option<Timestamp> {
        use chrono::{Duration, Timelike};
        let local = in_london(now)?;
        let minute = local.hour() * 60 + local.minute();
        let quiet = if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        };
        if !quiet {
            return None;
        }
        let end_time = chrono::NaiveTime::from_hms_opt(self.end / 60, self.end % 60, 0)?;
        let mut end = local.date().and_time(end_time);
        if end <= local {
            end += Duration::days(1);
        }
        Some(crate::scheduler::calendar::place_in_london(end))
    }
}

/// `"HH:MM"` as minutes after midnight.
fn minute_of_day(t: &str) -> Option<u32> {
    let (h, m) = t.trim().split_once(':')?;
    if !(1..=2).contains(&h.len()) || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 23 && m <= 59).then_some(h * 60 + m)
}

/// An instant as Europe/London wall-clock time.
fn in_london(now: Timestamp) -> Option<chrono::NaiveDateTime> {
    use chrono::TimeZone;
    Some(
        chrono_tz::Europe::London
            .timestamp_millis_opt(now.0)
            .single()?
            .naive_local(),
    )
}

/// When a service's advisors take calls, in Europe/London wall-clock time (a queue
/// outside them offers voicemail at once). Parsed from windows separated by commas,
/// each a day or a range of days and a time range within the day:
/// `"Mon-Fri 08:30-17:00, Sat 09:00-12:30"`. A window ends at its end time
/// (17:00 is closed); it may not run past midnight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpeningHours {
    /// (day of the week, Monday = 0; first minute open; first minute closed).
    windows: Vec<(u32, u32, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "opening hours are windows like \"Mon-Fri 08:30-17:00, Sat 09:00-12:30\" \
     (days Mon Tue Wed Thu Fri Sat Sun, each window within one day)"
)]
pub struct OpeningHoursError;

impl OpeningHours {
    pub fn parse(s: &str) -> Result<Self, OpeningHoursError> {
        const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        let day = |d: &str| {
            DAYS.iter()
                .position(|x| x.eq_ignore_ascii_case(d.trim()))
                .map(|i| i as u32)
                .ok_or(OpeningHoursError)
        };
        let mut windows = Vec::new();
        for part in s.split(',') {
            let (days, times) = part.trim().split_once(' ').ok_or(OpeningHoursError)?;
            let (first, last) = match days.split_once('-') {
                Some((a, b)) => (day(a)?, day(b)?),
                None => (day(days)?, day(days)?),
            };
            let (open, close) = times.split_once('-').ok_or(OpeningHoursError)?;
            let open = minute_of_day(open).ok_or(OpeningHoursError)?;
            let close = minute_of_day(close).ok_or(OpeningHoursError)?;
            if first > last || open >= close {
                return Err(OpeningHoursError);
            }
            windows.extend((first..=last).map(|d| (d, open, close)));
        }
        Ok(OpeningHours { windows })
    }

    pub fn is_open(&self, now: Timestamp) -> bool {
        use chrono::{Datelike, Timelike};
        let Some(local) = in_london(now) else {
            return false;
        };
        let day = local.weekday().num_days_from_monday();
        let minute = local.hour() * 60 + local.minute();
        self.windows
            .iter()
            .any(|&(d, open, close)| d == day && (open..close).contains(&minute))
    }
}

#[cfg(test)]
mod opening_hours_tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    #[test]
    fn weekdays_and_saturday_mornings_in_london_time() {
        let h = OpeningHours::parse("Mon-Fri 08:30-17:00, sat 09:00-12:30").unwrap();
        // Friday 4 December 2026, GMT.
        assert!(!h.is_open(at("2026-12-04T08:29:00Z")));
        assert!(h.is_open(at("2026-12-04T08:30:00Z")));
        assert!(h.is_open(at("2026-12-04T16:59:00Z")));
        assert!(!h.is_open(at("2026-12-04T17:00:00Z")));
        assert!(h.is_open(at("2026-12-05T12:00:00Z")));
        assert!(!h.is_open(at("2026-12-05T12:30:00Z")));
        assert!(!h.is_open(at("2026-12-06T10:00:00Z")), "closed on Sunday");
        // Friday 3 July 2026: 16:30 UTC is 17:30 BST, closed; 07:45 UTC is 08:45 BST.
        assert!(!h.is_open(at("2026-07-03T16:30:00Z")));
        assert!(h.is_open(at("2026-07-03T07:45:00Z")));
    }

    #[test]
    fn nonsense_is_refused() {
        for bad in [
            "",
            "Mon-Fri",
            "Fri-Mon 08:00-17:00",
            "Mon 17:00-08:00",
            "Mon 08:00-08:00",
            "Funday 08:00-17:00",
            "Mon 24:00-25:00",
            "Mon 8-17",
        ] {
            assert!(OpeningHours::parse(bad).is_err(), "{bad:?}");
        }
    }
}

#[cfg(test)]
mod quiet_hours_tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    #[test]
    fn a_window_past_midnight_in_winter_and_summer() {
        let q = QuietHours::parse("21:00-08:00").unwrap();
        // 22:30 GMT: quiet until 08:00 GMT the next morning.
        assert_eq!(
            q.ends_after(at("2026-12-04T22:30:00Z")),
            Some(at("2026-12-05T08:00:00Z"))
        );
        // 06:00 GMT: quiet until 08:00 that morning.
        assert_eq!(
            q.ends_after(at("2026-12-05T06:00:00Z")),
            Some(at("2026-12-05T08:00:00Z"))
        );
        // 20:30 UTC in July is 21:30 BST: quiet until 08:00 BST (07:00 UTC).
        assert_eq!(
            q.ends_after(at("2026-07-04T20:30:00Z")),
            Some(at("2026-07-05T07:00:00Z"))
        );
        assert_eq!(q.ends_after(at("2026-12-04T12:00:00Z")), None);
        assert_eq!(q.ends_after(at("2026-12-04T08:00:00Z")), None);
    }

    #[test]
    fn a_window_within_a_day_and_bad_ones() {
        let q = QuietHours::parse("12:00-13:30").unwrap();
        assert_eq!(
            q.ends_after(at("2026-12-04T12:10:00Z")),
            Some(at("2026-12-04T13:30:00Z"))
        );
        for bad in ["21:00", "25:00-08:00", "21:00-21:00", "9-8", "21:000-08:00"] {
            assert!(QuietHours::parse(bad).is_err(), "{bad}");
        }
    }
}
