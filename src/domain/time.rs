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
