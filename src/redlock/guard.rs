//! [`RedlockGuard`]: a held Redlock, its validity, extend, lost-lock checks and release.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::builder::check_ttl;
use super::extension::{Claim, extend_round};
use super::fanout::{fan_out, request};
use super::quorum::{Majority, majority, quorum};
use super::{Redlock, failures};
use crate::lease::{Lease, millis};
use crate::renewal::Registration;
use crate::{Error, Result};

/// Holds a [`Redlock`] on one resource until dropped or [unlocked](Self::unlock).
///
/// The lock is certainly ours for [`validity`](Self::validity), counted on this process's
/// monotonic clock; after that, the keys may have expired and someone else may hold the
/// lock. Check it before steps that must finish while the lock is held, and
/// [`extend`](Self::extend) in time for longer work, or build the Redlock with
/// [`auto_extend`](crate::RedlockBuilder::auto_extend) and check
/// [`ensure_held`](Self::ensure_held) instead.
///
/// Dropping the guard releases the lock on every instance, waiting at most the
/// [instance timeout](crate::RedlockBuilder::instance_timeout) (a failure is logged at WARN, since
/// `drop` cannot return it). To see whether the release worked, call
/// [`unlock`](Self::unlock) instead.
#[must_use = "dropping the guard releases the lock at once"]
pub struct RedlockGuard<'a> {
    pub(super) redlock: &'a Redlock,
    /// The key, the token and the pending connections, shared with auto-extension.
    pub(super) claim: Arc<Claim>,
    /// The validity clock and lost flag, shared with the renewal thread.
    pub(super) lease: Arc<Lease>,
    /// The ttl the lock was taken with.
    pub(super) ttl: Duration,
    /// Auto-extension, when on; taken (and so stopped) before the release.
    pub(super) renewal: Option<Registration>,
    pub(super) released: bool,
}

impl fmt::Debug for RedlockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedlockGuard")
            .field("resource", &self.claim.resource)
            .field("token", &self.claim.token)
            .field("validity", &self.validity())
            .field("lost", &self.is_lost())
            .field("auto_extended", &self.renewal.is_some())
            .finish_non_exhaustive()
    }
}

impl RedlockGuard<'_> {
    /// The resource this guard holds: the name of its key on every instance.
    pub fn resource(&self) -> &str {
        &self.claim.resource
    }

    /// The random token (32 hex digits, 128 bits from a CSPRNG) stored as the key's value
    /// on every instance that granted the lock. It is no fencing token: tokens are not
    /// ordered, see `docs/redlock.md`.
    pub fn token(&self) -> &str {
        &self.claim.token
    }

    /// How long the lock is certainly still ours, by this process's monotonic clock: the
    /// ttl, counted from before the first request of the acquiring (or last extending)
    /// round, less the drift margin (`ttl × drift_factor + 2 ms`). Auto-extension moves it
    /// forward. Zero once run out or [lost](Self::is_lost).
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
        self.lease.valid_for().unwrap_or_default()
    }

    /// Whether the lock is known to be lost: auto-extension found a majority of its keys
    /// gone or taken over, or could not extend it on a majority before the validity ran out,
    /// or a call on this guard found it no longer held by a majority. No round trip. Once
    /// lost, always lost.
    ///
    /// A guard without [auto-extension](crate::RedlockBuilder::auto_extend) is only found
    /// lost by its own calls ([`extend`](Self::extend), [`ensure_held`](Self::ensure_held));
    /// its [`validity`](Self::validity) running out does not make it lost.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use redis_mutex::{Pool, Redlock};
    /// # let pools: Vec<Pool> = Vec::new();
    /// let redlock = Redlock::builder(pools).auto_extend(true).build()?;
    /// let guard = redlock.lock("index-rebuild", Duration::from_secs(10))?;
    /// while !guard.is_lost() {
    ///     // one more step of the work
    /// #   break;
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_lost(&self) -> bool {
        self.lease.is_lost()
    }

    /// Returns `Ok` if the lock is still ours, cheaply: no round trip while more than a
    /// third of the ttl is left of the [validity](Self::validity) (always the case for a
    /// healthy auto-extended guard), else one `GET` on every instance at once, which must
    /// find our token on a majority. Call it before each step of long work that must not
    /// run twice.
    ///
    /// # Errors
    ///
    /// [`Error::LockLost`] once the guard is [lost](Self::is_lost), and when the `GET`s
    /// find our token on less than a majority (the guard is then marked lost);
    /// [`Error::NoQuorum`] when too many instances fail to answer for that to be known.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use redis_mutex::{Pool, Redlock};
    /// # let pools: Vec<Pool> = Vec::new();
    /// let redlock = Redlock::builder(pools).auto_extend(true).build()?;
    /// let guard = redlock.lock("backfill", Duration::from_secs(30))?;
    /// for batch in 0..100 {
    ///     guard.ensure_held()?; // stop if another worker may have taken over
    ///     // process(batch)
    /// #   let _ = batch;
    /// }
    /// guard.unlock()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ensure_held(&self) -> Result<()> {
        if self
            .lease
            .still_held(Some(self.ttl), || self.held_on_majority())?
        {
            return Ok(());
        }
        self.lease
            .mark_lost_quietly("our token is no longer on a majority of instances");
        Err(self.lost_error())
    }

    /// Sets the lock's remaining lease to `ttl` (it does not add to it) on every instance
    /// where the key still holds our token, all at once. It counts only when a majority
    /// did so and the round ended within the current [validity](Self::validity); the
    /// validity is then counted anew from `ttl`, as for an acquisition.
    ///
    /// After a failed extend the validity does not grow; it shrinks to what `ttl` would
    /// give, should that be less, since some instances may have taken the new ttl. On an
    /// auto-extended guard, the next automatic extension sets the lease back to the ttl
    /// given to [`lock`](Redlock::lock).
    ///
    /// # Errors
    ///
    /// [`Error::LockLost`] when the guard was [lost](Self::is_lost);
    /// [`Error::NotAcquired`] when the validity had run out, before or during the round;
    /// [`Error::NoQuorum`] when fewer than a majority extended the key in time (the others
    /// no longer hold our token, or failed: see `failures`), and the guard is marked lost
    /// when a majority no longer holds our token; [`Error::InvalidOptions`] for a `ttl`
    /// under 1 ms or over 10 years.
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
        self.ensure_not_lost()?;
        let redlock = self.redlock;
        let n = redlock.pools.len();
        let ttl_ms = millis(ttl);
        let ttl = Duration::from_millis(ttl_ms);
        // Ordered with the renewals: see `Registration::hold`.
        let _hold = self.renewal.as_ref().map(Registration::hold);
        // Held for the round: the guard's rounds and auto-extension's do not overlap.
        let mut pending = self.claim.pending.lock();
        let left = self.validity();
        if left.is_zero() {
            return Err(self.not_acquired());
        }
        let old_until = Instant::now() + left;
        // A reply after the validity ran out is of no use.
        let timeout = redlock.instance_timeout.min(ttl).min(left);
        let round = extend_round(&redlock.pools, &self.claim, &mut pending, ttl_ms, timeout);
        drop(pending);
        if let Some(valid_until) = round.valid_until(ttl, redlock.drift_factor, old_until) {
            self.lease.extend_to(valid_until);
            log::debug!(
                "extended redlock `{}` on {} of {n} instances; valid for {:?}",
                self.claim.resource,
                round.extended(),
                self.validity()
            );
            return Ok(());
        }
        // Some instances may now expire the key sooner than before.
        self.lease
            .shorten_to(round.shortest_end(ttl, redlock.drift_factor));
        if round.finished >= old_until {
            return Err(self.not_acquired());
        }
        if round.not_ours() >= quorum(n) {
            self.lease
                .mark_lost_quietly("an extend found it no longer ours on a majority");
        }
        Err(Error::NoQuorum {
            granted: round.extended(),
            needed: quorum(n),
            failures: failures(round.results),
        })
    }

    /// Releases the lock on every instance at once (compare-and-delete: a key that holds
    /// another token is left alone), and says whether it was still ours.
    ///
    /// Auto-extension stops first, so no extension reaches an instance after the release.
    ///
    /// # Errors
    ///
    /// [`Error::LockLost`] when the guard was [lost](Self::is_lost) (the release was still
    /// sent: some instances may have held our key a little longer than our clock allowed);
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
        let known_lost = self.lease.is_lost();
        let released = self.release();
        if known_lost {
            return Err(self.lost_error());
        }
        released
    }

    fn not_acquired(&self) -> Error {
        Error::NotAcquired {
            name: self.claim.resource.clone(),
        }
    }

    fn lost_error(&self) -> Error {
        Error::LockLost {
            name: self.claim.resource.clone(),
        }
    }

    fn ensure_not_lost(&self) -> Result<()> {
        if self.lease.is_lost() {
            return Err(self.lost_error());
        }
        Ok(())
    }

    /// Asks every instance at once, on the pending connections, whether its key holds our
    /// token: `true` on a majority, `false` when even the failed ones would make none.
    fn held_on_majority(&self) -> Result<bool> {
        let redlock = self.redlock;
        let n = redlock.pools.len();
        let timeout = redlock.instance_timeout;
        let resource = self.claim.resource.as_str();
        let mut pending = self.claim.pending.lock();
        let targets: Vec<_> = pending.drain(..).enumerate().collect();
        let replies = fan_out(targets, |(i, conn)| {
            request(&redlock.pools[i], conn, timeout, |conn, _| {
                redis::cmd("GET")
                    .arg(resource)
                    .query::<Option<String>>(&mut **conn)
            })
        });
        let mut results = Vec::with_capacity(n);
        for reply in replies {
            pending.push(reply.conn);
            results.push(reply.result);
        }
        drop(pending);
        let ours = results
            .iter()
            .filter(|r| matches!(r, Ok(Some(value)) if *value == self.claim.token))
            .count();
        let failures = failures(results);
        match majority(ours, failures.len(), n) {
            Majority::Yes => Ok(true),
            Majority::No => Ok(false),
            Majority::Unknown => Err(Error::NoQuorum {
                granted: ours,
                needed: quorum(n),
                failures,
            }),
        }
    }

    /// Stops auto-extension, then runs the release on every instance; does nothing the
    /// second time.
    fn release(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.released, true) {
            return Ok(());
        }
        if let Some(renewal) = self.renewal.take() {
            renewal.cancel();
        }
        let redlock = self.redlock;
        let n = redlock.pools.len();
        let targets = std::mem::take(&mut *self.claim.pending.lock())
            .into_iter()
            .enumerate()
            .collect();
        let results: Vec<Result<i64>> = redlock
            .release_on(&self.claim.resource, &self.claim.token, targets)
            .into_iter()
            .map(|(_, reply)| reply.result)
            .collect();
        let released = results.iter().filter(|r| matches!(r, Ok(1))).count();
        let failures = failures(results);
        match majority(released, failures.len(), n) {
            Majority::Yes => {
                log::debug!(
                    "released redlock `{}` on {released} of {n} instances",
                    self.claim.resource
                );
                for (i, e) in &failures {
                    log::debug!(
                        "releasing redlock `{}` failed on instance {i}; the key expires by \
                         itself: {e}",
                        self.claim.resource
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
                self.claim.resource
            ),
            Err(e) => log::warn!(
                "releasing redlock `{}` on drop failed; what is left expires by itself: {e}",
                self.claim.resource
            ),
        }
    }
}
