//! The guards of a [`RedisRwLock`]: thin typed wrappers around a [`Held`] lease and a
//! local lock guard.

use std::fmt;
use std::time::Duration;

use parking_lot::{RwLockReadGuard, RwLockWriteGuard};

use super::held::Held;
use super::{Grant, RedisRwLock};
#[cfg(doc)]
use crate::Error; // linked from the docs
use crate::Result;

/// Holds a read lock on a [`RedisRwLock`]'s path until dropped or
/// [unlocked](Self::unlock).
///
/// Dropping the guard releases the lease in Redis (a failure then is logged at WARN, since
/// `drop` cannot return it), wakes the writers it held back, and lets local writers in. To
/// see whether the release worked, call [`unlock`](Self::unlock) instead.
///
/// The guard cannot be sent to another thread, like [`std::sync::RwLockReadGuard`].
#[must_use = "dropping the guard releases the lock at once"]
pub struct RedisRwLockReadGuard<'a> {
    held: Held<'a>,
    /// `None` once released.
    local: Option<RwLockReadGuard<'a, ()>>,
}

impl fmt::Debug for RedisRwLockReadGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRwLockReadGuard")
            .field("path", &self.held.lock.path)
            .field("lease", &self.held.lease)
            .finish()
    }
}

impl<'a> RedisRwLockReadGuard<'a> {
    pub(super) fn new(
        lock: &'a RedisRwLock,
        local: RwLockReadGuard<'a, ()>,
        grant: Grant,
    ) -> Result<Self> {
        let mut guard = RedisRwLockReadGuard {
            held: Held::new(lock, &grant),
            local: Some(local),
        };
        // On failure the guard is dropped here, which releases the lock again.
        guard.held.start_renewal(grant.sent_at)?;
        Ok(guard)
    }

    /// The lock this guard holds.
    pub fn rwlock(&self) -> &RedisRwLock {
        self.held.lock
    }

    /// Releases the read lock and wakes the writers waiting for it, and says whether it was
    /// still ours.
    ///
    /// Auto-renewal stops first, so no renewal reaches Redis after this returns.
    ///
    /// # Errors
    ///
    /// [`Error::LockLost`] when the guard was [lost](Self::is_lost) (its release was still
    /// attempted); [`Error::NotAcquired`] when the lease was no longer ours (it expired or
    /// was deleted), in which case nothing was changed; [`Error::Redis`] or
    /// [`Error::Pool`] when Redis could not be reached, in which case the lease stays until
    /// its expiry.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use redis_mutex::{Pool, RedisRwLock};
    /// # let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let lock = RedisRwLock::new(pool, "catalog");
    /// let guard = lock.read()?;
    /// guard.unlock()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unlock(mut self) -> Result<()> {
        let result = self.held.unlock();
        if let Some(local) = self.local.take() {
            RwLockReadGuard::unlock_fair(local);
        }
        result
    }

    /// Sets the lease's remaining time to `lease` (it does not add to it), if it is still
    /// ours. [`valid_for`](Self::valid_for) moves with it.
    ///
    /// # Errors
    ///
    /// [`Error::NotExpirable`] when the lock has no expiry; [`Error::InvalidOptions`] for a
    /// `lease` under 1 ms or over 10 years; [`Error::LockLost`] when the guard was lost;
    /// [`Error::NotAcquired`] when the lease is no longer ours (the guard is then marked
    /// lost); [`Error::Redis`] or [`Error::Pool`] when Redis cannot be reached.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use redis_mutex::{Pool, RedisRwLock};
    /// # let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let lock = RedisRwLock::builder(pool, "exports").expire(Duration::from_secs(10)).build()?;
    /// let guard = lock.read()?;
    /// guard.extend(Duration::from_secs(60))?; // the export turns out to be large
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn extend(&self, lease: Duration) -> Result<()> {
        self.held.extend(lease)
    }

    /// Asks Redis whether the lease is still ours. When it is not, the guard is marked
    /// [lost](Self::is_lost).
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] or [`Error::Pool`] when Redis cannot be asked.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use redis_mutex::{Pool, RedisRwLock};
    /// # let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let lock = RedisRwLock::new(pool, "catalog");
    /// let guard = lock.read()?;
    /// assert!(guard.is_held()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_held(&self) -> Result<bool> {
        self.held.is_held()
    }

    /// Whether the lease is known to be lost: a renewal found it gone, Redis could not be
    /// reached before it ran out, or a call on this guard found it no longer ours. No round
    /// trip. Once lost, always lost.
    pub fn is_lost(&self) -> bool {
        self.held.lease.is_lost()
    }

    /// Returns `Ok` if the lease is still ours, cheaply: no round trip while the local
    /// lease has more than a third of the expiry left, else one script call. Call it before
    /// each step of long work that must not overlap a writer.
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
    /// # use redis_mutex::{Pool, RedisRwLock};
    /// # let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let lock = RedisRwLock::builder(pool, "catalog")
    ///     .expire(Duration::from_secs(30))
    ///     .auto_renewal(true)
    ///     .build()?;
    /// let guard = lock.read()?;
    /// for page in 0..100 {
    ///     guard.ensure_held()?; // stop if a writer may have got in
    /// #   let _ = page;
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ensure_held(&self) -> Result<()> {
        self.held.ensure_held()
    }

    /// How long the lease is certainly still ours, by this process's monotonic clock, less
    /// a margin for clock drift (1% plus 2 ms). `None` for a lock without expiry; zero once
    /// lost or run out.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use redis_mutex::{Pool, RedisRwLock};
    /// # let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let lock = RedisRwLock::builder(pool, "catalog").expire(Duration::from_secs(5)).build()?;
    /// let guard = lock.read()?;
    /// assert!(guard.valid_for().unwrap() <= Duration::from_secs(5));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn valid_for(&self) -> Option<Duration> {
        self.held.lease.valid_for()
    }
}

impl Drop for RedisRwLockReadGuard<'_> {
    fn drop(&mut self) {
        self.held.release_on_drop();
        if let Some(local) = self.local.take() {
            RwLockReadGuard::unlock_fair(local);
        }
    }
}

/// Holds the write lock on a [`RedisRwLock`]'s path until dropped or
/// [unlocked](Self::unlock).
///
/// Dropping the guard releases the lease in Redis (a failure then is logged at WARN, since
/// `drop` cannot return it), wakes every reader and writer it held back, and lets local
/// threads in. To see whether the release worked, call [`unlock`](Self::unlock) instead.
///
/// The guard cannot be sent to another thread, like [`std::sync::RwLockWriteGuard`].
#[must_use = "dropping the guard releases the lock at once"]
pub struct RedisRwLockWriteGuard<'a> {
    held: Held<'a>,
    /// `None` once released.
    local: Option<RwLockWriteGuard<'a, ()>>,
    fencing_token: u64,
}

impl fmt::Debug for RedisRwLockWriteGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRwLockWriteGuard")
            .field("path", &self.held.lock.path)
            .field("fencing_token", &self.fencing_token)
            .field("lease", &self.held.lease)
            .finish()
    }
}

impl<'a> RedisRwLockWriteGuard<'a> {
    pub(super) fn new(
        lock: &'a RedisRwLock,
        local: RwLockWriteGuard<'a, ()>,
        grant: Grant,
    ) -> Result<Self> {
        let mut guard = RedisRwLockWriteGuard {
            held: Held::new(lock, &grant),
            local: Some(local),
            fencing_token: grant.token,
        };
        // On failure the guard is dropped here, which releases the lock again.
        guard.held.start_renewal(grant.sent_at)?;
        Ok(guard)
    }

    /// The lock this guard holds.
    pub fn rwlock(&self) -> &RedisRwLock {
        self.held.lock
    }

    /// This grant's fencing token: strictly greater than the token of every earlier write
    /// grant of this path, and of every grant of a [`RedisMutex`](crate::RedisMutex) or
    /// write lock on the same Redis, so storage that remembers the highest token it has
    /// seen can refuse a write from a holder whose lease ran out while it was paused.
    ///
    /// Tokens come from the mutex's counter, `lock-fencing-counter`, incremented by the
    /// same script that grants the write lock. Read locks take none. See
    /// [`RedisMutexGuard::fencing_token`](crate::RedisMutexGuard::fencing_token) for the
    /// limits.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use redis_mutex::{Pool, RedisRwLock};
    /// # let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let lock = RedisRwLock::new(pool, "ledger/eu");
    /// let first = lock.write()?.fencing_token();
    /// let second = lock.write()?.fencing_token();
    /// assert!(second > first);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fencing_token(&self) -> u64 {
        self.fencing_token
    }

    /// Releases the write lock and wakes every waiter it held back, and says whether it was
    /// still ours.
    ///
    /// Auto-renewal stops first, so no renewal reaches Redis after this returns.
    ///
    /// # Errors
    ///
    /// [`Error::LockLost`] when the guard was [lost](Self::is_lost) (its release was still
    /// attempted); [`Error::NotAcquired`] when the lease was no longer ours (it expired or
    /// was deleted), in which case nothing was changed; [`Error::Redis`] or
    /// [`Error::Pool`] when Redis could not be reached, in which case the lease stays until
    /// its expiry.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use redis_mutex::{Pool, RedisRwLock};
    /// # let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let lock = RedisRwLock::new(pool, "catalog");
    /// let guard = lock.write()?;
    /// guard.unlock()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unlock(mut self) -> Result<()> {
        let result = self.held.unlock();
        if let Some(local) = self.local.take() {
            RwLockWriteGuard::unlock_fair(local);
        }
        result
    }

    /// Sets the lease's remaining time to `lease` (it does not add to it), if it is still
    /// ours. [`valid_for`](Self::valid_for) moves with it.
    ///
    /// # Errors
    ///
    /// [`Error::NotExpirable`] when the lock has no expiry; [`Error::InvalidOptions`] for a
    /// `lease` under 1 ms or over 10 years; [`Error::LockLost`] when the guard was lost;
    /// [`Error::NotAcquired`] when the lease is no longer ours (the guard is then marked
    /// lost); [`Error::Redis`] or [`Error::Pool`] when Redis cannot be reached.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use redis_mutex::{Pool, RedisRwLock};
    /// # let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let lock = RedisRwLock::builder(pool, "imports").expire(Duration::from_secs(10)).build()?;
    /// let guard = lock.write()?;
    /// guard.extend(Duration::from_secs(60))?; // the import turns out to be large
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn extend(&self, lease: Duration) -> Result<()> {
        self.held.extend(lease)
    }

    /// Asks Redis whether the lease is still ours. When it is not, the guard is marked
    /// [lost](Self::is_lost).
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] or [`Error::Pool`] when Redis cannot be asked.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use redis_mutex::{Pool, RedisRwLock};
    /// # let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let lock = RedisRwLock::new(pool, "catalog");
    /// let guard = lock.write()?;
    /// assert!(guard.is_held()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_held(&self) -> Result<bool> {
        self.held.is_held()
    }

    /// Whether the lease is known to be lost: a renewal found it gone, Redis could not be
    /// reached before it ran out, or a call on this guard found it no longer ours. No round
    /// trip. Once lost, always lost.
    pub fn is_lost(&self) -> bool {
        self.held.lease.is_lost()
    }

    /// Returns `Ok` if the lease is still ours, cheaply: no round trip while the local
    /// lease has more than a third of the expiry left, else one script call. Call it before
    /// each step of long work that must not run twice.
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
    /// # use redis_mutex::{Pool, RedisRwLock};
    /// # let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let lock = RedisRwLock::builder(pool, "catalog")
    ///     .expire(Duration::from_secs(30))
    ///     .auto_renewal(true)
    ///     .build()?;
    /// let guard = lock.write()?;
    /// for batch in 0..100 {
    ///     guard.ensure_held()?; // stop if another writer may have taken over
    /// #   let _ = batch;
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ensure_held(&self) -> Result<()> {
        self.held.ensure_held()
    }

    /// How long the lease is certainly still ours, by this process's monotonic clock, less
    /// a margin for clock drift (1% plus 2 ms). `None` for a lock without expiry; zero once
    /// lost or run out.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use redis_mutex::{Pool, RedisRwLock};
    /// # let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let lock = RedisRwLock::builder(pool, "catalog").expire(Duration::from_secs(5)).build()?;
    /// let guard = lock.write()?;
    /// assert!(guard.valid_for().unwrap() <= Duration::from_secs(5));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn valid_for(&self) -> Option<Duration> {
        self.held.lease.valid_for()
    }
}

impl Drop for RedisRwLockWriteGuard<'_> {
    fn drop(&mut self) {
        self.held.release_on_drop();
        if let Some(local) = self.local.take() {
            RwLockWriteGuard::unlock_fair(local);
        }
    }
}
