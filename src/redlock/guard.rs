//! [`RedlockGuard`]: a held Redlock, its validity, extend, lost-lock checks and release.

use std::fmt;
use std::time::Duration;

use super::Redlock;
use super::grant::RedlockGrant;
use crate::error::Result;
use crate::held::Held;

/// Holds a [`Redlock`] on one resource until dropped or [unlocked](Self::unlock).
///
/// The lock is certainly ours for [`valid_for`](Self::valid_for), counted on this
/// process's monotonic clock; after that, the keys may have expired and someone else may
/// hold the lock. Check it before steps that must finish while the lock is held, and
/// [`extend`](Self::extend) in time for longer work, or build the Redlock with
/// [`auto_extend`](crate::RedlockBuilder::auto_extend) and check
/// [`ensure_held`](Self::ensure_held) instead.
///
/// Dropping the guard releases the lock on every instance, waiting at most the
/// [instance timeout](crate::RedlockBuilder::instance_timeout) (a failure is logged at WARN,
/// since `drop` cannot return it). To see whether the release worked, call
/// [`unlock`](Self::unlock) instead.
#[must_use = "dropping the guard releases the lock at once"]
pub struct RedlockGuard<'a> {
    redlock: &'a Redlock,
    held: Held<RedlockGrant>,
}

impl fmt::Debug for RedlockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedlockGuard")
            .field("resource", &self.resource())
            .field("owner_id", &self.owner_id())
            .field("lease", self.held.lease())
            .finish_non_exhaustive()
    }
}

impl<'a> RedlockGuard<'a> {
    pub(super) fn new(redlock: &'a Redlock, held: Held<RedlockGrant>) -> Self {
        RedlockGuard { redlock, held }
    }

    /// The Redlock this guard holds.
    pub fn redlock(&self) -> &Redlock {
        self.redlock
    }

    /// The resource this guard holds: the name of its key on every instance.
    pub fn resource(&self) -> &str {
        &self.held.grant().claim.resource
    }

    /// The random value (32 hex digits, 128 bits from a CSPRNG) stored in the key on every
    /// instance that granted the lock: the owner's identity there, made anew for each
    /// attempt. It is no fencing token: values are not ordered (see `docs/redlock.md`).
    pub fn owner_id(&self) -> &str {
        &self.held.grant().claim.token
    }

    /// The random value stored in the key.
    #[deprecated(since = "0.2.0", note = "renamed `owner_id`: it is no fencing token")]
    pub fn token(&self) -> &str {
        self.owner_id()
    }

    /// How long the lock is certainly still ours, by this process's monotonic clock: the
    /// ttl, counted from before the first request of the acquiring (or last extending)
    /// round, less the drift margin (`ttl × drift_factor + 2 ms`). Auto-extension moves it
    /// forward. Always `Some` (a Redlock always expires); zero once run out or
    /// [lost](Self::is_lost).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use redis_mutex::{Pool, Redlock};
    /// # let pools: Vec<Pool> = Vec::new();
    /// let redlock = Redlock::new(pools)?;
    /// let guard = redlock.lock("job", Duration::from_secs(5))?;
    /// assert!(guard.valid_for().unwrap() < Duration::from_secs(5));
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn valid_for(&self) -> Option<Duration> {
        self.held.valid_for()
    }

    /// How long the lock is certainly still ours.
    #[deprecated(since = "0.2.0", note = "renamed `valid_for`, as on the other guards")]
    pub fn validity(&self) -> Duration {
        self.valid_for().unwrap_or_default()
    }

    /// Whether the lock is known to be lost: auto-extension found a majority of its keys
    /// gone or taken over, or could not extend it on a majority before the validity ran out,
    /// or a call on this guard found it no longer held by a majority. No round trip. Once
    /// lost, always lost.
    ///
    /// A guard without [auto-extension](crate::RedlockBuilder::auto_extend) is only found
    /// lost by its own calls ([`extend`](Self::extend), [`ensure_held`](Self::ensure_held));
    /// its [`valid_for`](Self::valid_for) running out does not make it lost.
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
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn is_lost(&self) -> bool {
        self.held.is_lost()
    }

    /// Returns `Ok` if the lock is still ours, cheaply: no round trip while more than a
    /// third of the ttl is left of the [validity](Self::valid_for) (always the case for a
    /// healthy auto-extended guard), else one `GET` on every instance at once, which must
    /// find our value on a majority. Call it before each step of long work that must not
    /// run twice.
    ///
    /// # Errors
    ///
    /// [`Error::LockLost`](crate::Error::LockLost) once the guard is
    /// [lost](Self::is_lost), and when the `GET`s find our value on less than a majority
    /// (the guard is then marked lost); [`Error::NoQuorum`](crate::Error::NoQuorum) when
    /// too many instances fail to answer for that to be known.
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
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn ensure_held(&self) -> Result<()> {
        self.held.ensure_held()
    }

    /// Sets the lock's remaining lease to `ttl` (it does not add to it) on every instance
    /// where the key still holds our value, all at once. It counts only when a majority
    /// did so and the round ended within the current [validity](Self::valid_for); the
    /// validity is then counted anew from `ttl`, as for an acquisition.
    ///
    /// After a failed extend the validity does not grow; it shrinks to what `ttl` would
    /// give, should that be less, since some instances may have taken the new ttl. On an
    /// auto-extended guard, the next automatic extension sets the lease back to the ttl
    /// given to [`lock`](Redlock::lock).
    ///
    /// # Errors
    ///
    /// [`Error::LockLost`](crate::Error::LockLost) when the guard was
    /// [lost](Self::is_lost); [`Error::NotAcquired`](crate::Error::NotAcquired) when the
    /// validity had run out, before or during the round, or a majority no longer holds our
    /// value (the guard is then marked lost); [`Error::NoQuorum`](crate::Error::NoQuorum)
    /// when fewer than a majority extended the key in time because instances failed (see
    /// `failures`); [`Error::InvalidOptions`](crate::Error::InvalidOptions) for a `ttl`
    /// under 1 ms or over 10 years.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use redis_mutex::{Pool, Redlock};
    /// # let pools: Vec<Pool> = Vec::new();
    /// let redlock = Redlock::new(pools)?;
    /// let guard = redlock.lock("import", Duration::from_secs(10))?;
    /// // the import turns out to be large
    /// guard.extend(Duration::from_secs(60))?;
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn extend(&self, ttl: Duration) -> Result<()> {
        super::builder::check_ttl(ttl)?;
        self.held.extend(ttl)
    }

    /// Releases the lock on every instance at once (compare-and-delete: a key that holds
    /// another value is left alone), and says whether it was still ours.
    ///
    /// Auto-extension stops first, so no extension reaches an instance after the release.
    ///
    /// # Errors
    ///
    /// [`Error::LockLost`](crate::Error::LockLost) when the guard was
    /// [lost](Self::is_lost) (the release was still sent: some instances may have held our
    /// key a little longer than our clock allowed);
    /// [`Error::NotAcquired`](crate::Error::NotAcquired) when a majority no longer held our
    /// value (the lock had expired, and may have been taken by someone else);
    /// [`Error::NoQuorum`](crate::Error::NoQuorum) when too many instances failed to say
    /// (`granted` counts the releases): the keys on them expire after the ttl. Failures on
    /// a minority are not an error, only logged at DEBUG.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use redis_mutex::{Pool, Redlock};
    /// # let pools: Vec<Pool> = Vec::new();
    /// let redlock = Redlock::new(pools)?;
    /// let guard = redlock.lock("jobs", Duration::from_secs(10))?;
    /// guard.unlock()?;
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn unlock(mut self) -> Result<()> {
        self.held.unlock()
    }
}

impl Drop for RedlockGuard<'_> {
    fn drop(&mut self) {
        self.held.release_on_drop();
    }
}
