//! [`RedisMutexGuard`]: a held lock, released on drop.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::MutexGuard;

use super::{LocalState, RedisMutex};
use crate::lease::{Lease, millis};
use crate::renewal::Registration;
use crate::scripts::{EXTEND, RELEASE};
use crate::{Error, Result};

/// Holds a [`RedisMutex`] until dropped or [unlocked](Self::unlock).
///
/// Dropping the guard releases the lock in Redis (a failure then is logged at WARN, since
/// `drop` cannot return it) and hands the mutex to the next local waiter. To see whether the
/// release worked, call [`unlock`](Self::unlock) instead.
///
/// The guard cannot be sent to another thread, like [`std::sync::MutexGuard`].
#[must_use = "dropping the guard releases the lock at once"]
pub struct RedisMutexGuard<'a> {
    pub(super) mutex: &'a RedisMutex,
    /// `None` once released.
    pub(super) local: Option<MutexGuard<'a, LocalState>>,
    pub(super) lease: Arc<Lease>,
    pub(super) renewal: Option<Registration>,
    pub(super) fencing_token: u64,
}

impl fmt::Debug for RedisMutexGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisMutexGuard")
            .field("name", &self.mutex.name)
            .field("fencing_token", &self.fencing_token)
            .field("lease", &self.lease)
            .finish()
    }
}

impl RedisMutexGuard<'_> {
    /// The mutex this guard holds.
    pub fn mutex(&self) -> &RedisMutex {
        self.mutex
    }

    /// This grant's fencing token: strictly greater than the token of every earlier grant
    /// of this lock (and of every other lock on the same Redis), so storage that remembers
    /// the highest token it has seen can refuse a write from a holder whose lease ran out
    /// while it was paused.
    ///
    /// Tokens come from one counter, `lock-fencing-counter`, incremented by the same script
    /// that grants the lock; `reset`, `reset_all` and expiry never lower it. Grants made by
    /// python-redis-lock clients take no token. The counter lives in Redis: a failover that
    /// loses recent writes can hand out a token twice. See `docs/protocol.md`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use redis_mutex::{Pool, RedisMutex};
    /// # let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let mutex = RedisMutex::new(pool, "ledger");
    /// let first = mutex.lock()?.fencing_token();
    /// let second = mutex.lock()?.fencing_token();
    /// assert!(second > first);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fencing_token(&self) -> u64 {
        self.fencing_token
    }

    /// Releases the lock and wakes one waiter, and says whether it was still ours.
    ///
    /// Auto-renewal stops first, so no renewal reaches Redis after this returns.
    ///
    /// # Errors
    ///
    /// [`Error::LockLost`] when the guard was [lost](Self::is_lost) (its release was still
    /// attempted: Redis may have held the lock a little longer than our clock allowed);
    /// [`Error::NotAcquired`] when the lock was no longer ours (expired, reset, taken over),
    /// in which case nothing was changed; [`Error::Redis`] or [`Error::Pool`] when Redis
    /// could not be reached, in which case the lock stays until its expiry.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use redis_mutex::{Pool, RedisMutex};
    /// # let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let mutex = RedisMutex::new(pool, "jobs");
    /// let guard = mutex.lock()?;
    /// guard.unlock()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unlock(mut self) -> Result<()> {
        let known_lost = self.lease.is_lost();
        let released = self.release();
        if known_lost {
            return Err(Error::LockLost {
                name: self.mutex.name.clone(),
            });
        }
        match released? {
            true => Ok(()),
            false => Err(Error::NotAcquired {
                name: self.mutex.name.clone(),
            }),
        }
    }

    /// Sets the lock's remaining lease to `lease` (it does not add to it), if the lock is
    /// still ours. [`valid_for`](Self::valid_for) moves with it.
    ///
    /// # Errors
    ///
    /// [`Error::NotExpirable`] when the mutex has no expiry; [`Error::InvalidOptions`] for a
    /// `lease` under 1 ms or over 10 years; [`Error::LockLost`] when the guard was lost;
    /// [`Error::NotAcquired`] when the lock is no longer ours (the guard is then marked
    /// lost); [`Error::Redis`] or [`Error::Pool`] when Redis cannot be reached.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use redis_mutex::{Pool, RedisMutex};
    /// # let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let mutex = RedisMutex::builder(pool, "import").expire(Duration::from_secs(10)).build()?;
    /// let guard = mutex.lock()?;
    /// // the import turns out to be large
    /// guard.extend(Duration::from_secs(60))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn extend(&self, lease: Duration) -> Result<()> {
        crate::options::check_extend(&self.mutex.name, self.mutex.options.expire, lease)?;
        self.ensure_not_lost()?;
        // Ordered with the renewals: see `Registration::hold`.
        let _hold = self.renewal.as_ref().map(Registration::hold);
        let mut conn = self.mutex.checkout()?;
        let sent_at = Instant::now();
        let extended: Vec<i64> = EXTEND
            .key(&self.mutex.lock_key)
            .arg(&self.mutex.options.owner_id)
            .arg(millis(lease))
            .invoke(&mut *conn)
            .map_err(|e| self.lease.after_lost_reply(e.into(), sent_at, lease))?;
        if extended.first() == Some(&1) {
            self.lease.extended(sent_at, lease);
            Ok(())
        } else {
            self.lease
                .mark_lost_quietly("an extend found it no longer ours");
            Err(Error::NotAcquired {
                name: self.mutex.name.clone(),
            })
        }
    }

    /// Asks Redis whether the lock is still ours. When it is not, the guard is marked
    /// [lost](Self::is_lost).
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] or [`Error::Pool`] when Redis cannot be asked.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use redis_mutex::{Pool, RedisMutex};
    /// # let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let mutex = RedisMutex::new(pool, "jobs");
    /// let guard = mutex.lock()?;
    /// assert!(guard.is_held()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_held(&self) -> Result<bool> {
        let owner = self.mutex.get_owner_id()?;
        let held = owner.as_deref() == Some(self.mutex.owner_id());
        if !held {
            self.lease.mark_lost_quietly("it is no longer ours");
        }
        Ok(held && !self.lease.is_lost())
    }

    /// Whether the lock is known to be lost: a renewal found it gone or taken over, Redis
    /// could not be reached before the lease ran out, or a call on this guard found it no
    /// longer ours. No round trip. Once lost, always lost.
    ///
    /// A guard without auto-renewal is only found lost by its own calls
    /// ([`extend`](Self::extend), [`is_held`](Self::is_held),
    /// [`ensure_held`](Self::ensure_held)).
    pub fn is_lost(&self) -> bool {
        self.lease.is_lost()
    }

    /// Returns `Ok` if the lock is still ours, cheaply: no round trip while the local lease
    /// has more than a third of the expiry left, else one `GET`. Call it before each step of
    /// long work that must not run twice.
    ///
    /// # Errors
    ///
    /// [`Error::LockLost`] once the guard is lost (and the call that finds it so marks it);
    /// [`Error::Redis`] or [`Error::Pool`] when Redis has to be asked and cannot be.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use redis_mutex::{Pool, RedisMutex};
    /// # let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let mutex = RedisMutex::builder(pool, "backfill")
    ///     .expire(Duration::from_secs(30))
    ///     .auto_renewal(true)
    ///     .build()?;
    /// let guard = mutex.lock()?;
    /// for batch in 0..100 {
    ///     guard.ensure_held()?; // stop if another worker may have taken over
    ///     // process(batch)
    /// #   let _ = batch;
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ensure_held(&self) -> Result<()> {
        if self
            .lease
            .still_held(self.mutex.options.expire, || self.is_held())?
        {
            Ok(())
        } else {
            Err(self.lost_error())
        }
    }

    /// How long the lock is certainly still ours, by this process's monotonic clock: from
    /// an instant taken before the acquiring request was sent, less a margin for clock drift
    /// (1% plus 2 ms). Renewals and [`extend`](Self::extend) move it forward. `None` for a
    /// lock without expiry; zero once lost or run out.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use redis_mutex::{Pool, RedisMutex};
    /// # let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let mutex = RedisMutex::builder(pool, "job").expire(Duration::from_secs(5)).build()?;
    /// let guard = mutex.lock()?;
    /// assert!(guard.valid_for().unwrap() <= Duration::from_secs(5));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn valid_for(&self) -> Option<Duration> {
        self.lease.valid_for()
    }

    fn ensure_not_lost(&self) -> Result<()> {
        if self.lease.is_lost() {
            return Err(self.lost_error());
        }
        Ok(())
    }

    fn lost_error(&self) -> Error {
        Error::LockLost {
            name: self.mutex.name.clone(),
        }
    }

    /// Stops renewal, runs the release script, and hands the local mutex on. Returns
    /// whether the lock was still ours. Does nothing the second time.
    fn release(&mut self) -> Result<bool> {
        let Some(mut local) = self.local.take() else {
            return Ok(false);
        };
        if let Some(renewal) = self.renewal.take() {
            renewal.cancel();
        }
        let mutex = self.mutex;
        let released = mutex.checkout().and_then(|mut conn| {
            let released: i64 = RELEASE
                .key(&mutex.lock_key)
                .key(&mutex.signal_key)
                .arg(&mutex.options.owner_id)
                .arg(millis(mutex.options.signal_expire))
                .invoke(&mut *conn)?;
            Ok(released == 1)
        });
        if matches!(released, Ok(true)) {
            local.released_at = Some(Instant::now());
        }
        // Hand over in FIFO order: an unfair unlock would let this thread, locking again
        // at once, keep the lock from local waiters.
        MutexGuard::unlock_fair(local);
        match &released {
            Ok(true) => log::debug!("released lock `{}`", mutex.name),
            Ok(false) => {
                self.lease
                    .mark_lost_quietly("its release found it no longer ours");
            }
            Err(_) => {}
        }
        released
    }
}

impl Drop for RedisMutexGuard<'_> {
    fn drop(&mut self) {
        if self.local.is_none() {
            return; // unlocked already
        }
        match self.release() {
            Ok(_) if !self.lease.is_lost() => {}
            Ok(_) => log::warn!(
                "lock `{}` was no longer ours when its guard was dropped",
                self.mutex.name
            ),
            Err(e) => log::warn!(
                "releasing lock `{}` failed; it stays until it expires: {e}",
                self.mutex.name
            ),
        }
    }
}
