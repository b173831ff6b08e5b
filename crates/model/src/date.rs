//! Dates as real dates. The contract carries them as text (`yyyy-mm-dd`
//! for calendar dates, RFC 3339 for instants); the runtime parses them at
//! the boundary, so the engine compares dates, never strings, and a
//! malformed date is an error naming the field, not a wrong decision.
//! Both serialise as the same text they were parsed from.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;

const DAY: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]");

/// Text that is not a date of the expected form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not {expected}")]
pub struct DateError {
    /// What was given (cut to 40 characters).
    pub text: String,
    /// What was expected.
    pub expected: &'static str,
}

fn error(text: &str, expected: &'static str) -> DateError {
    DateError {
        text: text.chars().take(40).collect(),
        expected,
    }
}

/// A calendar date (`yyyy-mm-dd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Date(time::Date);

impl Date {
    /// The date.
    pub fn new(date: time::Date) -> Date {
        Date(date)
    }

    /// The `time` value, for arithmetic.
    pub fn get(self) -> time::Date {
        self.0
    }

    /// `days` later (earlier when negative); saturates at the calendar's
    /// ends.
    pub fn plus_days(self, days: i64) -> Date {
        Date(
            self.0
                .checked_add(time::Duration::days(days))
                .unwrap_or(if days < 0 {
                    time::Date::MIN
                } else {
                    time::Date::MAX
                }),
        )
    }

    /// Today in UTC.
    pub fn today() -> Date {
        Date(time::OffsetDateTime::now_utc().date())
    }
}

impl FromStr for Date {
    type Err = DateError;

    fn from_str(text: &str) -> Result<Date, DateError> {
        time::Date::parse(text, DAY)
            .map(Date)
            .map_err(|_| error(text, "a date (yyyy-mm-dd)"))
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.format(DAY) {
            Ok(text) => f.write_str(&text),
            Err(_) => write!(f, "{}", self.0),
        }
    }
}

impl From<time::Date> for Date {
    fn from(date: time::Date) -> Date {
        Date(date)
    }
}

/// An instant with the offset it was written with (RFC 3339).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp(time::OffsetDateTime);

impl Timestamp {
    /// The instant.
    pub fn new(at: time::OffsetDateTime) -> Timestamp {
        Timestamp(at)
    }

    /// The `time` value, for arithmetic.
    pub fn get(self) -> time::OffsetDateTime {
        self.0
    }

    /// Now, in UTC.
    pub fn now() -> Timestamp {
        Timestamp(time::OffsetDateTime::now_utc())
    }

    /// The instant `ms` milliseconds after the Unix epoch, in UTC.
    pub fn from_unix_ms(ms: u64) -> Timestamp {
        Timestamp(
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
        )
    }

    /// The calendar date in the timestamp's own offset.
    pub fn date(self) -> Date {
        Date(self.0.date())
    }

    /// `days` later (earlier when negative); saturates at the calendar's
    /// ends.
    pub fn plus_days(self, days: i64) -> Timestamp {
        Timestamp(
            self.0
                .checked_add(time::Duration::days(days))
                .unwrap_or(self.0),
        )
    }
}

impl FromStr for Timestamp {
    type Err = DateError;

    fn from_str(text: &str) -> Result<Timestamp, DateError> {
        time::OffsetDateTime::parse(text, &Rfc3339)
            .map(Timestamp)
            .map_err(|_| error(text, "an RFC 3339 date-time"))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.format(&Rfc3339) {
            Ok(text) => f.write_str(&text),
            Err(_) => write!(f, "{}", self.0),
        }
    }
}

macro_rules! serde_as_text {
    ($name:ident) => {
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

serde_as_text!(Date);
serde_as_text!(Timestamp);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_through_text_and_compare_as_dates() {
        let a: Date = "2026-01-31".parse().unwrap();
        assert_eq!(a.to_string(), "2026-01-31");
        assert_eq!(a.plus_days(1).to_string(), "2026-02-01");
        assert!("2026-02-01".parse::<Date>().unwrap() > a);
        assert!("2026-13-01".parse::<Date>().is_err());
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            "\"2026-01-31\"".to_owned()
        );
    }

    #[test]
    fn timestamps_compare_as_instants_not_as_text() {
        let utc: Timestamp = "2026-01-05T10:00:00Z".parse().unwrap();
        let paris: Timestamp = "2026-01-05T10:30:00+01:00".parse().unwrap();
        // As text "…10:30…" sorts after "…10:00…"; as instants it is earlier.
        assert!(paris < utc);
        assert_eq!(paris.to_string(), "2026-01-05T10:30:00+01:00");
        assert_eq!(paris.date().to_string(), "2026-01-05");
        let back: Timestamp = serde_json::from_str("\"2026-01-05T10:00:00Z\"").unwrap();
        assert_eq!(back, utc);
        assert!("yesterday".parse::<Timestamp>().is_err());
    }
}
