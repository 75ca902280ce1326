//! Human durations as users write them in headers and files: `250ms`, `2s`, `1.5s`, `1m 30s`,
//! `2h` (jiff's friendly format, which also takes ISO 8601 such as `PT1M30S`).

use std::time::Duration;

/// A duration text that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The text is not a duration at all.
    #[error(
        "`{text}` is not a duration; write a number with a unit, e.g. `250ms`, `2s` or `1m 30s`"
    )]
    Unreadable {
        /// The text as given.
        text: String,
    },
    /// The text is a negative duration.
    #[error("`{text}` is negative; a duration must be zero or more")]
    Negative {
        /// The text as given.
        text: String,
    },
}

/// Reads a human duration such as `750ms` or `1m 30s`.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    let signed: jiff::SignedDuration = trimmed.parse().map_err(|_| DurationError::Unreadable {
        text: trimmed.to_owned(),
    })?;
    Duration::try_from(signed).map_err(|_| DurationError::Negative {
        text: trimmed.to_owned(),
    })
}

/// Writes a duration the way [`parse`] reads it back: `0s`, `250ms`, `1.5s`, `90s`.
pub fn format(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 && !duration.is_zero() {
        format!("{}us", duration.as_micros())
    } else if millis < 1000 {
        format!("{millis}ms")
    } else if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        format!("{}s", duration.as_secs_f64())
    }
}

/// Serde adapter for a required duration field written as text.
pub mod serde_text {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    /// Deserializes a duration from text such as `2s`.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_units_fractions_and_compound_forms() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse(" 2h "), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_bare_numbers_and_negative_values_with_the_fix() {
        let bare = parse("30").unwrap_err().to_string();
        assert!(bare.contains("`30`") && bare.contains("unit"), "{bare}");
        let negative = parse("-2s").unwrap_err();
        assert!(
            matches!(negative, DurationError::Negative { .. }),
            "{negative}"
        );
        assert!(parse("soon").is_err());
    }

    #[test]
    fn format_round_trips() {
        for text in ["0s", "250ms", "2s", "1.5s", "90s"] {
            let duration = parse(text).unwrap();
            assert_eq!(parse(&format(duration)), Ok(duration), "{text}");
        }
        assert_eq!(format(Duration::from_millis(1500)), "1.5s");
    }
}
