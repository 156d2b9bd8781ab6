//! Time as this crate takes it: durations checked to lie between Redis' resolution and ten
//! years, and sent to Redis as whole milliseconds; and [`Deadline`], when a request must be
//! answered by.

use std::time::{Duration, Instant};

use parking_lot::{Condvar, MutexGuard};

use crate::error::{Error, Result};

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

/// Waits on `changed`, with `state` locked, until it is notified or `deadline` passes
/// (`None`: until notified): whether the deadline passed.
pub(crate) fn wait_on<T>(
    changed: &Condvar,
    state: &mut MutexGuard<'_, T>,
    deadline: Option<Instant>,
) -> bool {
    match deadline {
        Some(deadline) => changed.wait_until(state, deadline).timed_out(),
        None => {
            changed.wait(state);
            false
        }
    }
}

/// When a request must be answered by, on this process's monotonic clock.
///
/// A call works out its bound once ([`Deadline::of_request`]: one response timeout, and no
/// later than the call's own end) and passes it down: the checkout, the request, a script
/// reload, a resend after a closed connection and an undo all take what is left of it, so
/// that no hop adds a timeout of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Deadline(Instant);

impl Deadline {
    /// `d` from now; a `d` too long to represent is a deadline a century off, which no
    /// caller reaches.
    pub(crate) fn after(d: Duration) -> Deadline {
        let now = Instant::now();
        Deadline(
            now.checked_add(d)
                .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600)),
        )
    }

    /// The deadline of a request sent now by a call that must return by `end` (`None`: a
    /// call without a bound of its own): one `response_timeout`, or what is left until
    /// `end` if that is less.
    pub(crate) fn of_request(response_timeout: Duration, end: Option<Instant>) -> Deadline {
        let deadline = Deadline::after(response_timeout);
        match end {
            Some(end) if end < deadline.0 => Deadline(end),
            _ => deadline,
        }
    }

    /// What is left of it: zero once it has passed.
    pub(crate) fn left(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// Whether it has passed.
    pub(crate) fn passed(self) -> bool {
        Instant::now() >= self.0
    }
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
    fn a_request_gets_a_response_timeout_and_never_past_its_calls_end() {
        let rt = Duration::from_millis(300);
        let alone = Deadline::of_request(rt, None);
        assert!(alone.left() > Duration::from_millis(290) && alone.left() <= rt);
        let soon = Instant::now() + Duration::from_millis(50);
        assert!(Deadline::of_request(rt, Some(soon)).left() <= Duration::from_millis(50));
        let past = Instant::now() - Duration::from_millis(1);
        assert!(Deadline::of_request(rt, Some(past)).passed());
        assert!(Deadline::after(Duration::MAX).left() > Duration::from_secs(3600));
    }

    #[test]
    fn the_longest_duration_is_ten_years_of_365_days() {
        let ten_years = Duration::from_secs(315_360_000);
        assert_eq!(MAX_DURATION, ten_years);
        assert_eq!(check_duration("x", ten_years).unwrap(), ten_years);
        assert!(check_duration("x", ten_years + Duration::from_nanos(1)).is_err());
    }
}
