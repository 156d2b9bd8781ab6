//! [`RedlockBuilder`]: the options of a [`Redlock`], their defaults and their validation.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::Redlock;
use crate::error::{Error, Result};
use crate::options::MIN_RENEWED_EXPIRE;
use crate::pool::Pool;
use crate::time::MAX_DURATION;

pub(super) const DEFAULT_RETRY_COUNT: u32 = 3;
pub(super) const DEFAULT_RETRY_DELAY: Duration = Duration::from_millis(200);
pub(super) const DEFAULT_DRIFT_FACTOR: f64 = 0.01;
/// Small next to any useful ttl (the Redlock page suggests 5–50 ms for a 10 s lock), yet
/// fifty times a LAN round trip, so that a busy but healthy instance still answers in time.
pub(super) const DEFAULT_INSTANCE_TIMEOUT: Duration = Duration::from_millis(50);

/// Builds a [`Redlock`] with options; made by [`Redlock::builder`].
///
/// Options are checked by [`build`](Self::build).
#[must_use = "a builder does nothing until `build()` is called"]
pub struct RedlockBuilder {
    pub(super) redlock: Redlock,
}

impl fmt::Debug for RedlockBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RedlockBuilder")
            .field(&self.redlock)
            .finish()
    }
}

impl RedlockBuilder {
    /// Sets how many times [`Redlock::lock`] tries again after an attempt without a
    /// majority, so that it makes at most `retry_count + 1` attempts. Zero makes `lock` the
    /// same as [`try_lock`](Redlock::try_lock).
    ///
    /// Defaults to 3.
    pub fn retry_count(mut self, retry_count: u32) -> Self {
        self.redlock.retry_count = retry_count;
        self
    }

    /// Sets the longest wait between two attempts of [`Redlock::lock`]. Each wait is drawn
    /// at random between zero and this, so that clients that split the votes of one round do
    /// not meet again in the next.
    ///
    /// Must be at most 10 years, and more than zero unless
    /// [`retry_count`](Self::retry_count) is zero.
    ///
    /// Defaults to 200 ms.
    pub fn retry_delay(mut self, retry_delay: Duration) -> Self {
        self.redlock.retry_delay = retry_delay;
        self
    }

    /// Sets the part of the ttl not counted on, for clocks that run at different rates:
    /// a lock is valid for `ttl − elapsed − (ttl × drift_factor + 2 ms)`, the 2 ms covering
    /// Redis' millisecond expiry precision.
    ///
    /// Must be at least 0 and below 1.
    ///
    /// Defaults to 0.01 (as on the Redlock page and in redlock-py).
    pub fn drift_factor(mut self, drift_factor: f64) -> Self {
        self.redlock.drift_factor = drift_factor;
        self
    }

    /// Sets how long one request to one instance may take, pool checkout and reply together,
    /// before that instance counts as failed for the round. A down, refusing or stalled
    /// minority thus delays a round by this much at most. Keep it small next to the ttl:
    /// the time a round takes is lost from the lock's validity. A round never waits for an
    /// instance longer than the ttl it asks for.
    ///
    /// Must be between 1 ms and 10 years.
    ///
    /// Defaults to 50 ms: the top of the 5–50 ms the Redlock page suggests for a 10 s lock,
    /// and some fifty LAN round trips, so a busy but healthy server still answers in time.
    pub fn instance_timeout(mut self, instance_timeout: Duration) -> Self {
        self.redlock.instance_timeout = instance_timeout;
        self
    }

    /// Keeps the lock alive while a guard lives: the process's renewal thread extends it on
    /// every instance each time a third of the ttl has passed, with the ttl given to
    /// [`lock`](Redlock::lock), and marks the guard [lost](crate::RedlockGuard::is_lost) if a
    /// majority says the lock is no longer ours, or no extension gets a majority before the
    /// [validity](crate::RedlockGuard::valid_for) runs out.
    ///
    /// Each extension counts as an acquisition does: only with a majority, within the
    /// current validity, which it then sets to `ttl − elapsed − drift margin`. The ttl must
    /// leave time for that: `lock` and `try_lock` refuse one under 30 ms or under six
    /// [instance timeouts](Self::instance_timeout) (300 ms with the default 50 ms).
    ///
    /// Defaults to `false`.
    pub fn auto_extend(mut self, auto_extend: bool) -> Self {
        self.redlock.auto_extend = auto_extend;
        self
    }

    /// Sets a callback run once, on the renewal thread, when an
    /// [auto-extended](Self::auto_extend) guard of this Redlock is found
    /// [lost](crate::RedlockGuard::is_lost). It gets a [`LostLock`](crate::LostLock) (the
    /// resource, the token, why). Keep it short: it
    /// delays the renewal of other locks while it runs. A panic in it is logged and goes no
    /// further. Losses found by the guard's own calls are reported by their result instead.
    ///
    /// Defaults to none (the loss is logged at WARN either way).
    pub fn on_lost(
        mut self,
        callback: impl Fn(&crate::lease::LostLock) + Send + Sync + 'static,
    ) -> Self {
        self.redlock.on_lost = Some(Arc::new(callback));
        self
    }

    /// Sets the `lock` label of this Redlock's metrics (with the `metrics` feature; see
    /// `docs/operations.md`). Each distinct label is a time series of its own.
    ///
    /// Defaults to none: the metrics carry only the kind, `redlock`.
    pub fn metrics_label(mut self, label: impl Into<String>) -> Self {
        let label: String = label.into();
        self.redlock.labels = crate::metrics::Labels::new("redlock", Some(label.into()));
        self
    }

    /// Checks the options and builds the Redlock. Talks to no server.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`], naming the option, for an empty pool list, a drift factor
    /// outside [0, 1), an instance timeout or retry delay out of range, or a zero retry
    /// delay with retries.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use redis_mutex::{Error, Pool, Redlock};
    /// let pool = Pool::new("redis://127.0.0.1/")?;
    /// let err = Redlock::builder(vec![pool]).drift_factor(1.5).build().unwrap_err();
    /// assert!(matches!(err, Error::InvalidOptions { field: "drift_factor", .. }));
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn build(self) -> Result<Redlock> {
        let r = self.redlock;
        check_pools(&r.pools)?;
        if !(0.0..1.0).contains(&r.drift_factor) {
            return Err(Error::invalid(
                "drift_factor",
                format!(
                    "{} is outside [0, 1); the Redlock page suggests 0.01",
                    r.drift_factor
                ),
            ));
        }
        check_duration(
            "instance_timeout",
            r.instance_timeout,
            Duration::from_millis(1),
        )?;
        check_duration("retry_delay", r.retry_delay, Duration::ZERO)?;
        if r.retry_delay.is_zero() && r.retry_count > 0 {
            return Err(Error::invalid(
                "retry_delay",
                "a zero delay makes clients that split the votes retry in lockstep and split \
                 them again; give a delay, or set `retry_count(0)`",
            ));
        }
        Ok(r)
    }
}

fn check_pools(pools: &[Pool]) -> Result<()> {
    if pools.is_empty() {
        return Err(Error::invalid(
            "pools",
            "the pool list is empty; give one pool per independent redis server, \
             ideally 5 (or 3)",
        ));
    }
    Ok(())
}

fn check_duration(field: &'static str, d: Duration, min: Duration) -> Result<()> {
    if d < min {
        return Err(Error::invalid(
            field,
            format!("{d:?} is too short; give at least {min:?}"),
        ));
    }
    if d > MAX_DURATION {
        return Err(Error::invalid(
            field,
            format!("{d:?} is longer than the 10 years this crate accepts"),
        ));
    }
    Ok(())
}

pub(super) fn check_resource(resource: &str) -> Result<()> {
    if resource.is_empty() {
        return Err(Error::invalid(
            "resource",
            "the resource name is empty; give every lock a non-empty name",
        ));
    }
    crate::keys::check_name_len("resource", resource)
}

pub(super) fn check_ttl(ttl: Duration) -> Result<()> {
    check_duration("ttl", ttl, Duration::from_millis(1))
}

/// With auto-extension, an extension is due a third of the ttl after the last one and may
/// take an instance timeout; the rule leaves room for a second try before the validity runs
/// out: a third of the ttl is at least two instance timeouts.
pub(super) fn check_extendable_ttl(ttl: Duration, instance_timeout: Duration) -> Result<()> {
    let least = MIN_RENEWED_EXPIRE.max(instance_timeout.saturating_mul(6));
    if ttl < least {
        return Err(Error::invalid(
            "ttl",
            format!(
                "{ttl:?} is too short to extend in time; auto-extension needs at least \
                 {least:?} (30 ms, and six instance timeouts), or a shorter instance timeout"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::tests::unconnected as pool;

    fn field_of(result: Result<Redlock>) -> &'static str {
        match result {
            Err(Error::InvalidOptions { field, .. }) => field,
            Err(e) => panic!("expected InvalidOptions, got {e}"),
            Ok(r) => panic!("expected InvalidOptions, got {r:?}"),
        }
    }

    #[test]
    fn defaults() {
        let r = Redlock::builder(vec![pool()]).build().unwrap();
        assert_eq!(r.retry_count, 3);
        assert_eq!(r.retry_delay, Duration::from_millis(200));
        assert_eq!(r.drift_factor, 0.01);
        assert_eq!(r.instance_timeout, Duration::from_millis(50));
        assert!(!r.auto_extend);
        assert!(r.on_lost.is_none());
    }

    #[test]
    fn auto_extension_needs_a_ttl_it_can_renew_in_time() {
        let ms = Duration::from_millis;
        check_extendable_ttl(ms(300), ms(50)).unwrap();
        check_extendable_ttl(ms(30), ms(5)).unwrap();
        for (ttl, instance_timeout) in [(ms(299), ms(50)), (ms(29), ms(1)), (ms(1), ms(50))] {
            match check_extendable_ttl(ttl, instance_timeout) {
                Err(Error::InvalidOptions { field: "ttl", .. }) => {}
                other => {
                    panic!("{ttl:?} with {instance_timeout:?}: expected a ttl error, got {other:?}")
                }
            }
        }
        // Overflowing products saturate instead of panicking.
        assert!(check_extendable_ttl(MAX_DURATION, Duration::MAX).is_err());
    }

    #[test]
    fn bad_options_name_their_field() {
        let b = || Redlock::builder(vec![pool()]);
        assert_eq!(field_of(Redlock::builder(vec![]).build()), "pools");
        assert_eq!(field_of(b().drift_factor(1.0).build()), "drift_factor");
        assert_eq!(field_of(b().drift_factor(-0.1).build()), "drift_factor");
        assert_eq!(field_of(b().drift_factor(f64::NAN).build()), "drift_factor");
        assert_eq!(
            field_of(b().instance_timeout(Duration::ZERO).build()),
            "instance_timeout"
        );
        assert_eq!(
            field_of(b().instance_timeout(Duration::MAX).build()),
            "instance_timeout"
        );
        assert_eq!(
            field_of(b().retry_delay(Duration::ZERO).build()),
            "retry_delay"
        );
        assert_eq!(
            field_of(b().retry_delay(Duration::MAX).build()),
            "retry_delay"
        );
        b().retry_delay(Duration::ZERO)
            .retry_count(0)
            .build()
            .unwrap();
        b().drift_factor(0.0).build().unwrap();
    }
}
