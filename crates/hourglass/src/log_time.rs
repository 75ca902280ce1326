//! The log's timestamps, text and JSON: what `tracing_subscriber`'s default timer writes (RFC
//! 3339 in UTC, to the microsecond), with the date and time to the second formatted once a second
//! per thread instead of once a line through `fmt`.

use std::cell::RefCell;
use std::fmt;
use std::time::UNIX_EPOCH;

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// Past jiff's last second (9999-12-30T22:00:00Z) the default timer writes the time.
const CACHED_UNTIL: u64 = 253_402_207_200;

/// The timer for `fmt::layer().with_timer(SecondsCached)`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SecondsCached;

impl FormatTime for SecondsCached {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        match hourglass_engine::clock::wall().duration_since(UNIX_EPOCH) {
            Ok(since) if since.as_secs() <= CACHED_UNTIL => {
                write_at(w, since.as_secs(), since.subsec_micros())
            }
            // A clock before 1970 or in the last day of 9999: the default timer's rare forms.
            _ => tracing_subscriber::fmt::time::SystemTime.format_time(w),
        }
    }
}

thread_local! {
    /// The last second formatted on this thread, and its text up to the `.`.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Writes `unix_s` (at most [`CACHED_UNTIL`]) and `micros` (below a million) as
/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn write_at(w: &mut impl fmt::Write, unix_s: u64, micros: u32) -> fmt::Result {
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != unix_s {
            let at = jiff::Timestamp::from_second(unix_s as i64).map_err(|_| fmt::Error)?;
            text.clear();
            fmt::Write::write_fmt(text, format_args!("{}.", at.strftime("%Y-%m-%dT%H:%M:%S")))?;
            *second = unix_s;
        }
        w.write_str(text)
    })?;
    let mut digits = *b"000000Z";
    let mut rest = micros;
    for digit in digits[..6].iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    w.write_str(std::str::from_utf8(&digits).map_err(|_| fmt::Error)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unix_s: u64, micros: u32) -> String {
        let mut text = String::new();
        write_at(&mut text, unix_s, micros).unwrap();
        text
    }

    #[test]
    fn each_time_is_written_as_rfc_3339_to_the_microsecond() {
        // Seconds in any order, so the cached second is replaced both ways; leap days, the
        // epoch, the last second cached.
        let seconds = [
            0,
            1_764_600_730,
            1_764_600_731,
            1_764_600_730,
            951_782_400, // 2000-02-29
            4_107_542_399,
            CACHED_UNTIL,
        ];
        for (i, second) in seconds.into_iter().enumerate() {
            for micros in [0, 7, 999_999, 123_456 + i as u32] {
                let expected = jiff::Timestamp::new(second as i64, micros as i32 * 1000)
                    .unwrap()
                    .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
                    .to_string();
                assert_eq!(at(second, micros), expected);
            }
        }
    }

    #[test]
    fn lines_carry_what_the_default_timer_writes() {
        // The two timers read the clock apart: ours must fall between two readings of the
        // default one, in the same fixed-width form (so text order is time order).
        for _ in 0..1000 {
            let mut before = String::new();
            let mut ours = String::new();
            let mut after = String::new();
            let default = tracing_subscriber::fmt::time::SystemTime;
            default.format_time(&mut Writer::new(&mut before)).unwrap();
            SecondsCached
                .format_time(&mut Writer::new(&mut ours))
                .unwrap();
            default.format_time(&mut Writer::new(&mut after)).unwrap();
            assert_eq!(ours.len(), before.len(), "{ours} against {before}");
            assert!(
                before <= ours && ours <= after,
                "{before} ≤ {ours} ≤ {after}"
            );
        }
    }
}
