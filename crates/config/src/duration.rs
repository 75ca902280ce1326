//! Durations as configuration writes them: `250ms`, `8s`, `1.5s`, `2m`, `1m 30s` (jiff's friendly
//! format, which also reads ISO 8601 such as `PT90S`).

use std::time::Duration;

/// Reads a duration; the error says what would be accepted.
pub fn parse(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let signed: jiff::SignedDuration = trimmed.parse().map_err(|_| {
        format!(
            "`{trimmed}` is not a duration; write a number with a unit, e.g. `750ms`, `8s` or `2m`"
        )
    })?;
    Duration::try_from(signed)
        .map_err(|_| format!("`{trimmed}` is negative; a duration must be zero or more"))
}

/// Writes a duration the way [`parse`] reads it back: `250ms`, `8s`, `1.5s`, `150s`, and whole
/// hours as `1h`, `24h`.
pub fn format(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis >= 3_600_000 && millis.is_multiple_of(3_600_000) {
        format!("{}h", millis / 3_600_000)
    } else if millis < 1000 {
        format!("{millis}ms")
    } else if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        format!("{}s", duration.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_human_durations() {
        assert_eq!(parse("750ms"), Ok(Duration::from_millis(750)));
        assert_eq!(parse("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("2.5s"), Ok(Duration::from_millis(2500)));
        assert!(parse("8").unwrap_err().contains("unit"));
        assert!(parse("-1s").unwrap_err().contains("negative"));
        for text in ["250ms", "8s", "1.5s", "150s", "1h", "24h"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }
}
