//! [`RedlockGuard`]: a held Redlock, its validity, extend and release.

use std::fmt;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::builder::check_ttl;
use super::fanout::{fan_out, request};
use super::quorum::{Majority, majority, quorum, validity};
use super::{EXTEND_SOURCE, Redlock, eval, failures};
use crate::conn::Conn;
use crate::lease::millis;
use crate::scripts::REDLOCK_EXTEND;
use crate::{Error, Result};

/// Holds a [`Redlock`] on one resource until dropped or [unlocked](Self::unlock).
///
/// The lock is certainly ours for [`validity`](Self::validity), counted on this process's
/// monotonic clock; after that, the keys may have expired and someone else may hold the
/// lock. Check it before steps that must finish while the lock is held, and
/// [`extend`](Self::extend) in time for longer work.
///
/// Dropping the guard releases the lock on every instance, waiting at most the
/// [instance timeout](crate::RedlockBuilder::instance_timeout) (a failure is logged at WARN, since
/// `drop` cannot return it). To see whether the release worked, call
/// [`unlock`](Self::unlock) instead.
#[must_use = "dropping the guard releases the lock at once"]
pub struct RedlockGuard<'a> {
    pub(super) redlock: &'a Redlock,
    pub(super) resource: String,
    pub(super) token: String,
    pub(super) valid_until: Mutex<Instant>,
    /// Per instance, the connection with a request on our key still pending, if any: the
    /// next request to that instance goes on it, so that the server runs them in order.
    pub(super) held: Mutex<Vec<Option<Conn>>>,
    pub(super) released: bool,
}

impl fmt::Debug for RedlockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedlockGuard")
            .field("resource", &self.resource)
            .field("token", &self.token)
            .field("validity", &self.validity())
            .finish_non_exhaustive()
    }
}

impl RedlockGuard<'_> {
    /// The resource this guard holds: the name of its key on every instance.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The random token (32 hex digits, 128 bits from a CSPRNG) stored as the key's value
    /// on every instance that granted the lock. It is no fencing token: tokens are not
    /// ordered, see `docs/redlock.md`.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// How long the lock is certainly still ours, by this process's monotonic clock: the
    /// ttl, counted from before the first request of the acquiring (or last extending)
    /// round, less the drift margin (`ttl × drift_factor + 2 ms`). Zero once run out.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use redis_mutex::{Pool, Redlock};
    /// # let pools: Vec<Pool> = Vec::new();
    /// let redlock = Redlock::new(pools);
    /// let guard = redlock.lock("job", Duration::from_secs(5))?;
    /// assert!(guard.validity() < Duration::from_secs(5));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn validity(&self) -> Duration {
        self.valid_until
            .lock()
            .saturating_duration_since(Instant::now())
    }

    /// Sets the lock's remaining lease to `ttl` (it does not add to it) on every instance
    /// where the key still holds our token, all at once. It counts only when a majority
    /// did so and the round ended within the current [validity](Self::validity); the
    /// validity is then counted anew from `ttl`, as for an acquisition.
    ///
    /// After a failed extend the validity does not grow; it shrinks to what `ttl` would
    /// give, should that be less, since some instances may have taken the new ttl.
    ///
    /// # Errors
    ///
    /// [`Error::NotAcquired`] when the validity had run out, before or during the round;
    /// [`Error::NoQuorum`] when fewer than a majority extended the key in time (the others
    /// no longer hold our token, or failed: see `failures`); [`Error::InvalidOptions`] for
    /// a `ttl` under 1 ms or over 10 years.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use redis_mutex::{Pool, Redlock};
    /// # let pools: Vec<Pool> = Vec::new();
    /// let redlock = Redlock::new(pools);
    /// let guard = redlock.lock("import", Duration::from_secs(10))?;
    /// // the import turns out to be large
    /// guard.extend(Duration::from_secs(60))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn extend(&self, ttl: Duration) -> Result<()> {
        check_ttl(ttl)?;
        let redlock = self.redlock;
        let n = redlock.pools.len();
        let ttl_ms = millis(ttl);
        let ttl = Duration::from_millis(ttl_ms);
        // Held for the round: extends and the release of one guard do not overlap.
        let mut held = self.held.lock();
        let old_until = *self.valid_until.lock();
        let started = Instant::now();
        let left = old_until.saturating_duration_since(started);
        if left.is_zero() {
            return Err(self.not_acquired());
        }
        // A reply after the validity ran out is of no use.
        let timeout = redlock.instance_timeout.min(ttl).min(left);
        let targets: Vec<_> = held.drain(..).enumerate().collect();
        let replies = fan_out(targets, |(i, conn)| {
            request(&redlock.pools[i], conn, timeout, |conn, pending| {
                eval(
                    conn,
                    pending,
                    &REDLOCK_EXTEND,
                    EXTEND_SOURCE,
                    &self.resource,
                    &self.token,
                    Some(ttl_ms),
                )
            })
        });
        let finished = Instant::now();
        let mut results = Vec::with_capacity(n);
        for reply in replies {
            held.push(reply.conn);
            results.push(reply.result);
        }
        drop(held);
        let extended = results.iter().filter(|r| matches!(r, Ok(1))).count();
        let elapsed = finished - started;
        let mut valid_until = self.valid_until.lock();
        if extended >= quorum(n)
            && finished < old_until
            && let Some(valid) = validity(ttl, elapsed, redlock.drift_factor)
        {
            *valid_until = finished + valid;
            log::debug!(
                "extended redlock `{}` on {extended} of {n} instances; valid for {valid:?}",
                self.resource
            );
            return Ok(());
        }
        // Some instances may now expire the key sooner than before.
        let shortest = finished + validity(ttl, elapsed, redlock.drift_factor).unwrap_or_default();
        *valid_until = (*valid_until).min(shortest);
        if finished >= old_until {
            return Err(self.not_acquired());
        }
        Err(Error::NoQuorum {
            granted: extended,
            needed: quorum(n),
            failures: failures(results),
        })
    }

    /// Releases the lock on every instance at once (compare-and-delete: a key that holds
    /// another token is left alone), and says whether it was still ours.
    ///
    /// # Errors
    ///
    /// [`Error::NotAcquired`] when a majority no longer held our token (the lock had
    /// expired, and may have been taken by someone else); [`Error::NoQuorum`] when too
    /// many instances failed to say (`granted` counts the releases): the keys on them
    /// expire after the ttl. Failures on a minority are not an error, only logged at DEBUG.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use redis_mutex::{Pool, Redlock};
    /// # let pools: Vec<Pool> = Vec::new();
    /// let redlock = Redlock::new(pools);
    /// let guard = redlock.lock("jobs", Duration::from_secs(10))?;
    /// guard.unlock()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unlock(mut self) -> Result<()> {
        self.release()
    }

    fn not_acquired(&self) -> Error {
        Error::NotAcquired {
            name: self.resource.clone(),
        }
    }

    /// Runs the release on every instance; does nothing the second time.
    fn release(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.released, true) {
            return Ok(());
        }
        let redlock = self.redlock;
        let n = redlock.pools.len();
        let targets = std::mem::take(&mut *self.held.lock())
            .into_iter()
            .enumerate()
            .collect();
        let results: Vec<Result<i64>> = redlock
            .release_on(&self.resource, &self.token, targets)
            .into_iter()
            .map(|(_, reply)| reply.result)
            .collect();
        let released = results.iter().filter(|r| matches!(r, Ok(1))).count();
        let failures = failures(results);
        match majority(released, failures.len(), n) {
            Majority::Yes => {
                log::debug!(
                    "released redlock `{}` on {released} of {n} instances",
                    self.resource
                );
                for (i, e) in &failures {
                    log::debug!(
                        "releasing redlock `{}` failed on instance {i}; the key expires by \
                         itself: {e}",
                        self.resource
                    );
                }
                Ok(())
            }
            Majority::No => Err(self.not_acquired()),
            Majority::Unknown => Err(Error::NoQuorum {
                granted: released,
                needed: quorum(n),
                failures,
            }),
        }
    }
}

impl Drop for RedlockGuard<'_> {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        match self.release() {
            Ok(()) => {}
            Err(Error::NotAcquired { .. }) => log::warn!(
                "redlock `{}` was no longer held on a majority when its guard was dropped",
                self.resource
            ),
            Err(e) => log::warn!(
                "releasing redlock `{}` on drop failed; what is left expires by itself: {e}",
                self.resource
            ),
        }
    }
}
