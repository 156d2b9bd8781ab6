//! Durations as this crate takes them: checked to lie between Redis' resolution and ten
//! years, and sent to Redis as whole milliseconds.

use std::time::Duration;

use crate::{Error, Result};

/// Durations past this are refused: Redis stores expiry times as milliseconds since 1970
/// in a signed 64-bit number, and a lease of decades is a lock that never expires.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// Checks a duration option: at least 1 ms (Redis' resolution), at most 10 years.
pub(crate) fn check_duration(field: &'static str, d: Duration) -> Result<Duration> {
    if d < Duration::from_millis(1) {
        return Err(Error::invalid(
            field,
            format!("{d:?} is shorter than Redis' resolution; give at least 1 ms"),
        ));
    }
    if d > MAX_DURATION {
        return Err(Error::invalid(
            field,
            format!("{d:?} is longer than the 10 years this crate accepts"),
        ));
    }
    Ok(d)
}

/// A duration as whole milliseconds for Redis, at least 1 (`PX 0` is refused, and would
/// mean "now"). Callers validate durations first, so the saturation never shows.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_checked_and_sent_as_whole_milliseconds() {
        let ms = Duration::from_millis;
        assert!(check_duration("x", ms(1)).is_ok());
        assert!(check_duration("x", MAX_DURATION).is_ok());
        for bad in [
            Duration::ZERO,
            Duration::from_micros(999),
            MAX_DURATION + ms(1),
        ] {
            match check_duration("x", bad) {
                Err(Error::InvalidOptions { field: "x", .. }) => {}
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_micros(1500)), 1);
        assert_eq!(millis(ms(2500)), 2500);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }

    #[test]
    fn the_longest_duration_is_ten_years_of_365_days() {
        let ten_years = Duration::from_secs(315_360_000);
        assert_eq!(MAX_DURATION, ten_years);
        assert_eq!(check_duration("x", ten_years).unwrap(), ten_years);
        assert!(check_duration("x", ten_years + Duration::from_nanos(1)).is_err());
    }
}
