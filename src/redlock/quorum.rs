//! The arithmetic of a Redlock round, kept free of I/O so it can be tested on its own: how
//! many answers make a majority, and how long a lock granted by a majority is certainly ours.

use std::time::Duration;

use rand::Rng;

use crate::lease::clock_margin;

/// How many of `n` instances make a majority: `n / 2 + 1` (3 of 5, 2 of 3, 3 of 4, 1 of 1).
pub(super) fn quorum(n: usize) -> usize {
    n / 2 + 1
}

/// How long a lock set with `ttl`, in a round that took `elapsed` from before its first
/// request to after its last reply, is certainly ours: `ttl − elapsed − (ttl × drift_factor +
/// 2 ms)`. `None` when that is not positive.
///
/// The subtraction is checked, never wrapping: a round slower than the ttl (less the margin)
/// gives `None`, not a validity of centuries as unsigned arithmetic would.
pub(super) fn validity(ttl: Duration, elapsed: Duration, drift_factor: f64) -> Option<Duration> {
    ttl.checked_sub(elapsed)?
        .checked_sub(clock_margin(ttl, drift_factor))
        .filter(|left| !left.is_zero())
}

/// How long a round that `granted` of `n` instances agreed to gave us the lock for; `None`
/// when it did not: no majority, or no validity left.
pub(super) fn granted_for(
    granted: usize,
    n: usize,
    ttl: Duration,
    elapsed: Duration,
    drift_factor: f64,
) -> Option<Duration> {
    if granted < quorum(n) {
        return None;
    }
    validity(ttl, elapsed, drift_factor)
}

/// What a question put to all `n` instances ("do you hold it?", "did you release it?")
/// comes to when `yes` said yes and `failed` could not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Majority {
    /// A majority said yes.
    Yes,
    /// Too few said yes for a majority, even if every instance that failed had said yes.
    No,
    /// The instances that failed decide it: no answer either way.
    Unknown,
}

pub(super) fn majority(yes: usize, failed: usize, n: usize) -> Majority {
    let needed = quorum(n);
    if yes >= needed {
        Majority::Yes
    } else if yes.saturating_add(failed) >= needed {
        Majority::Unknown
    } else {
        Majority::No
    }
}

/// A wait before the next attempt: uniformly random between zero and `max`, so that clients
/// that split the votes do not meet again at once.
pub(super) fn retry_wait(max: Duration) -> Duration {
    rand::rng().random_range(Duration::ZERO..=max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn quorum_is_a_strict_majority() {
        let expected = [
            (1, 1),
            (2, 2),
            (3, 2),
            (4, 3),
            (5, 3),
            (6, 4),
            (7, 4),
            (9, 5),
        ];
        for (n, q) in expected {
            assert_eq!(quorum(n), q, "quorum of {n}");
            assert!(2 * quorum(n) > n, "two quorums of {n} must overlap");
        }
    }

    #[test]
    fn validity_subtracts_elapsed_time_and_the_drift_margin() {
        // 10 s - 50 ms - (100 ms + 2 ms)
        assert_eq!(
            validity(10_000 * MS, 50 * MS, 0.01),
            Some(Duration::from_millis(9_848))
        );
        // 1 s with no drift factor: only the 2 ms for Redis' expiry precision.
        assert_eq!(validity(1_000 * MS, Duration::ZERO, 0.0), Some(998 * MS));
    }

    #[test]
    fn a_round_slower_than_the_ttl_never_wraps_into_a_huge_validity() {
        assert_eq!(validity(100 * MS, 150 * MS, 0.01), None);
        assert_eq!(validity(100 * MS, Duration::MAX, 0.01), None);
        assert_eq!(validity(100 * MS, 100 * MS, 0.0), None);
        // Elapsed below the ttl, but not by the margin: 100 - 97 - (1 + 2) = 0.
        assert_eq!(validity(100 * MS, 97 * MS, 0.01), None);
        assert_eq!(validity(100 * MS, 96 * MS, 0.01), Some(MS));
        // Tiny ttls are all margin.
        assert_eq!(validity(MS, Duration::ZERO, 0.01), None);
        assert_eq!(validity(2 * MS, Duration::ZERO, 0.0), None);
    }

    #[test]
    fn validity_of_the_longest_ttl_does_not_overflow() {
        let ttl = crate::time::MAX_DURATION;
        let left = validity(ttl, MS, 0.999).unwrap();
        assert!(left < ttl / 100, "{left:?}");
    }

    #[test]
    fn a_lock_needs_both_a_majority_and_validity() {
        let ttl = 1_000 * MS;
        assert_eq!(granted_for(3, 5, ttl, 10 * MS, 0.01), Some(978 * MS));
        assert_eq!(granted_for(2, 5, ttl, 10 * MS, 0.01), None);
        assert_eq!(granted_for(5, 5, ttl, 2_000 * MS, 0.01), None);
        assert_eq!(granted_for(1, 1, ttl, Duration::ZERO, 0.01), Some(988 * MS));
        assert_eq!(granted_for(2, 4, ttl, Duration::ZERO, 0.01), None);
        assert_eq!(granted_for(0, 1, ttl, Duration::ZERO, 0.01), None);
    }

    #[test]
    fn majority_is_unknown_only_when_the_failures_decide_it() {
        assert_eq!(majority(3, 0, 5), Majority::Yes);
        assert_eq!(majority(3, 2, 5), Majority::Yes);
        assert_eq!(majority(2, 1, 5), Majority::Unknown);
        assert_eq!(majority(0, 3, 5), Majority::Unknown);
        assert_eq!(majority(2, 0, 5), Majority::No);
        assert_eq!(majority(0, 2, 5), Majority::No);
        assert_eq!(majority(0, 0, 1), Majority::No);
        assert_eq!(majority(0, 1, 1), Majority::Unknown);
    }

    #[test]
    fn retry_waits_stay_within_the_delay_and_vary() {
        let max = 200 * MS;
        let waits: Vec<Duration> = (0..1_000).map(|_| retry_wait(max)).collect();
        assert!(waits.iter().all(|&w| w <= max));
        let distinct: std::collections::HashSet<_> = waits.iter().collect();
        assert!(distinct.len() > 900, "{} distinct waits", distinct.len());
        assert_eq!(retry_wait(Duration::ZERO), Duration::ZERO);
    }
}
