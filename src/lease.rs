//! The local lease clock and lost-lock flag that every guard carries.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A callback run once when a held lock is found lost.
pub(crate) type OnLost = Arc<dyn Fn(&str) + Send + Sync>;

/// The part of a lease we do not count on: clocks drift, and Redis rounds expiries to the
/// millisecond. The Redlock page's rule, with its default factor: 1% of the lease plus 2 ms.
pub(crate) fn clock_margin(ttl: Duration, drift_factor: f64) -> Duration {
    ttl.mul_f64(drift_factor) + Duration::from_millis(2)
}

const DRIFT_FACTOR: f64 = 0.01;

/// A duration as whole milliseconds for Redis, at least 1 (`PX 0` is refused, and would
/// mean "now"). Callers validate durations first, so the saturation never shows.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// What a guard knows, without asking Redis, about how long its lock is still ours.
pub(crate) struct Lease {
    name: String,
    /// `None` for a lock that never expires.
    valid_until: Mutex<Option<Instant>>,
    lost: AtomicBool,
    on_lost: Option<OnLost>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("name", &self.name)
            .field("valid_for", &self.valid_for())
            .field("lost", &self.is_lost())
            .finish()
    }
}

impl Lease {
    /// A lease granted by a request sent at `sent_at` with expiry `ttl` (`None`: never
    /// expires). `sent_at` must be taken before the request left, so that the server's
    /// clock started no earlier than ours.
    pub(crate) fn new(
        name: &str,
        sent_at: Instant,
        ttl: Option<Duration>,
        on_lost: Option<OnLost>,
    ) -> Self {
        Lease {
            name: name.to_owned(),
            valid_until: Mutex::new(ttl.map(|ttl| lease_end(sent_at, ttl))),
            lost: AtomicBool::new(false),
            on_lost,
        }
    }

    /// A lease that is certainly ours until `valid_until`, for locks that work out their
    /// validity themselves (a Redlock: the ttl less the time its round took and a margin).
    pub(crate) fn until(name: &str, valid_until: Instant, on_lost: Option<OnLost>) -> Self {
        Lease {
            name: name.to_owned(),
            valid_until: Mutex::new(Some(valid_until)),
            lost: AtomicBool::new(false),
            on_lost,
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// How long the lock is certainly still ours; `None` without expiry, zero once lost.
    pub(crate) fn valid_for(&self) -> Option<Duration> {
        let until = (*self.valid_until.lock())?;
        if self.is_lost() {
            return Some(Duration::ZERO);
        }
        Some(until.saturating_duration_since(Instant::now()))
    }

    /// Whether more than a third of a `lease` is certainly left: then `ensure_held` needs no
    /// round trip (a renewed lease never has less, and the lock cannot run out before the
    /// caller's next step). False for a lock without expiry.
    pub(crate) fn comfortably_valid(&self, lease: Option<Duration>) -> bool {
        matches!((self.valid_for(), lease), (Some(left), Some(lease)) if left > lease / 3)
    }

    /// Whether the lock is still ours, for `ensure_held`: false once lost; true without a
    /// round trip while the lease is [comfortably valid](Self::comfortably_valid) for a
    /// lease of `lease`; else what `ask` (a question to Redis) answers.
    pub(crate) fn still_held(
        &self,
        lease: Option<Duration>,
        ask: impl FnOnce() -> crate::Result<bool>,
    ) -> crate::Result<bool> {
        if self.is_lost() {
            return Ok(false);
        }
        if self.comfortably_valid(lease) {
            return Ok(true);
        }
        ask()
    }

    /// Records that a request sent at `sent_at` set the remaining lease to `ttl`.
    pub(crate) fn extended(&self, sent_at: Instant, ttl: Duration) {
        self.extend_to(lease_end(sent_at, ttl));
    }

    /// Records that the lock is certainly ours until `valid_until`.
    pub(crate) fn extend_to(&self, valid_until: Instant) {
        *self.valid_until.lock() = Some(valid_until);
    }

    /// Records that the lock may be ours no longer than `until`: the lease ends then at
    /// the latest (a lease without expiry gets one).
    pub(crate) fn shorten_to(&self, until: Instant) {
        let mut valid_until = self.valid_until.lock();
        *valid_until = Some(valid_until.map_or(until, |current| current.min(until)));
    }

    /// For a call that set the lease to `lease` and failed with `error`: when its reply was
    /// lost, Redis may have run it (or may still), so the lease may end as early as the
    /// call's `sent_at` + `lease`, even if that is sooner than we counted on. Returns
    /// `error`, for `map_err`.
    pub(crate) fn after_lost_reply(
        &self,
        error: crate::Error,
        sent_at: Instant,
        lease: Duration,
    ) -> crate::Error {
        if crate::conn::may_have_run(&error) {
            self.shorten_to(lease_end(sent_at, lease));
        }
        error
    }

    pub(crate) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// Marks the lease lost, once: logs why and runs the `on_lost` callback. Later calls
    /// do nothing. A panicking callback is logged, not propagated: it runs on the renewal
    /// thread, which serves other guards too.
    pub(crate) fn mark_lost(&self, why: &str) {
        if self.lost.swap(true, Ordering::AcqRel) {
            return;
        }
        log::warn!("lock `{}` lost: {why}", self.name);
        if let Some(callback) = &self.on_lost
            && catch_unwind(AssertUnwindSafe(|| callback(&self.name))).is_err()
        {
            log::error!("the on_lost callback of lock `{}` panicked", self.name);
        }
    }
}

impl Lease {
    /// Marks the lease lost without the `on_lost` callback: for losses found by the
    /// holder's own calls, which report them through their result.
    pub(crate) fn mark_lost_quietly(&self, why: &str) {
        if !self.lost.swap(true, Ordering::AcqRel) {
            log::debug!("lock `{}` lost: {why}", self.name);
        }
    }
}

/// Until when a lease of `ttl`, granted by a request sent at `sent_at`, is certainly ours.
pub(crate) fn lease_end(sent_at: Instant, ttl: Duration) -> Instant {
    let certain = ttl.saturating_sub(clock_margin(ttl, DRIFT_FACTOR));
    // An expiry too far off to represent is, for any caller, forever.
    sent_at
        .checked_add(certain)
        .unwrap_or(sent_at + Duration::from_secs(u32::MAX.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_never_claims_more_than_the_ttl_minus_the_margin() {
        let sent_at = Instant::now();
        let lease = Lease::new("a", sent_at, Some(Duration::from_secs(10)), None);
        let left = lease.valid_for().unwrap();
        assert!(left <= Duration::from_millis(10_000 - 100 - 2), "{left:?}");
        assert!(left > Duration::from_secs(9), "{left:?}");
    }

    #[test]
    fn tiny_and_huge_ttls_do_not_overflow() {
        let now = Instant::now();
        let tiny = Lease::new("a", now, Some(Duration::from_millis(1)), None);
        assert_eq!(tiny.valid_for(), Some(Duration::ZERO));
        let huge = Lease::new("a", now, Some(Duration::MAX), None);
        assert!(huge.valid_for().unwrap() > Duration::from_secs(1 << 30));
        assert_eq!(Lease::new("a", now, None, None).valid_for(), None);
    }

    #[test]
    fn an_explicit_end_is_kept_and_only_shortened() {
        let now = Instant::now();
        let lease = Lease::until("a", now + Duration::from_secs(10), None);
        assert!(lease.valid_for().unwrap() > Duration::from_secs(9));
        lease.shorten_to(now + Duration::from_secs(20));
        assert!(lease.valid_for().unwrap() <= Duration::from_secs(10));
        lease.shorten_to(now + Duration::from_secs(1));
        assert!(lease.valid_for().unwrap() <= Duration::from_secs(1));
        let forever = Lease::new("b", now, None, None);
        forever.shorten_to(now);
        assert_eq!(forever.valid_for(), Some(Duration::ZERO));
    }

    #[test]
    fn lost_is_sticky_and_reported_once() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = calls.clone();
        let lease = Lease::new(
            "a",
            Instant::now(),
            Some(Duration::from_secs(5)),
            Some(Arc::new(move |_: &str| {
                counter.fetch_add(1, Ordering::SeqCst);
            })),
        );
        lease.mark_lost("test");
        lease.mark_lost("again");
        lease.extended(Instant::now(), Duration::from_secs(5));
        assert!(lease.is_lost());
        assert_eq!(lease.valid_for(), Some(Duration::ZERO));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
