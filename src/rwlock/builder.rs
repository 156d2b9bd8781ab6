//! [`RedisRwLockBuilder`]: the options of a read-write lock and their validation.

use std::fmt;
use std::time::Duration;

use super::{RedisRwLock, keys};
use crate::options::LockOptionsBuilder;
use crate::{Error, Pool, Result};

/// Builds a [`RedisRwLock`] with options; made by [`RedisRwLock::builder`].
///
/// Options are checked by [`build`](Self::build).
#[must_use = "a builder does nothing until `build()` is called"]
pub struct RedisRwLockBuilder {
    pub(super) pool: Pool,
    pub(super) path: String,
    pub(super) separator: char,
    pub(super) options: LockOptionsBuilder,
}

impl fmt::Debug for RedisRwLockBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRwLockBuilder")
            .field("path", &self.path)
            .field("separator", &self.separator)
            .finish_non_exhaustive()
    }
}

impl RedisRwLockBuilder {
    /// Sets how long each read or write lock lives in Redis unless released, renewed or
    /// extended first. A holder that crashes stops blocking others after this long.
    ///
    /// Must be between 1 ms and 10 years; with [`auto_renewal`](Self::auto_renewal), at
    /// least 30 ms.
    ///
    /// Defaults to no expiry: a lock is held until released.
    pub fn expire(mut self, expire: Duration) -> Self {
        self.options.expire = Some(expire);
        self
    }

    /// Sets the id that identifies this lock's holders in Redis. Each read or write lease
    /// is stored as `<owner_id>#<16 random hex digits>`, so leases of the same owner never
    /// mix up.
    ///
    /// Must not be empty.
    ///
    /// Defaults to 128 random bits from a CSPRNG, as 32 hex digits, made anew per lock.
    pub fn owner_id(mut self, owner_id: impl Into<String>) -> Self {
        self.options.owner_id = Some(owner_id.into());
        self
    }

    /// Sets how long a wake-up pushed by a release stays in Redis for its waiter to take.
    ///
    /// Must be between 1 ms and 10 years.
    ///
    /// Defaults to 1 s.
    pub fn signal_expire(mut self, signal_expire: Duration) -> Self {
        self.options.signal_expire = Some(signal_expire);
        self
    }

    /// Keeps each lease alive while its guard lives: the process's renewal thread extends
    /// it each time a third of the [expiry](Self::expire) has passed, and marks the guard
    /// [lost](crate::RedisRwLockWriteGuard::is_lost) if it finds the lease gone or cannot reach
    /// Redis before it runs out.
    ///
    /// Needs [`expire`](Self::expire).
    ///
    /// Defaults to `false`.
    pub fn auto_renewal(mut self, auto_renewal: bool) -> Self {
        self.options.auto_renewal = auto_renewal;
        self
    }

    /// Sets a callback run once, on the renewal thread, when an auto-renewed guard of this
    /// lock is found [lost](crate::RedisRwLockWriteGuard::is_lost). It gets the lock's path. Keep
    /// it short: it delays the renewal of other locks while it runs. A panic in it is
    /// logged and goes no further.
    ///
    /// Defaults to none (the loss is logged at WARN either way).
    pub fn on_lost(mut self, callback: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.options.on_lost(callback);
        self
    }

    /// Sets how long any one Redis reply may take before the call fails with a timeout.
    /// Waiting for the lock is not bound by this: a waiter's `BLPOP` gets a read timeout
    /// that covers its wait.
    ///
    /// Defaults to 2 s.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.options.response_timeout = Some(timeout);
        self
    }

    /// Sets the character that separates the segments of the path. Every lock on a tree
    /// must use the same one: the keys hold the path as written, so `a.b` locked with `.`
    /// and with `/` share keys but not ancestors.
    ///
    /// Defaults to `/`.
    pub fn separator(mut self, separator: char) -> Self {
        self.separator = separator;
        self
    }

    /// Checks the options and builds the lock. Talks to no server.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`], naming the option: `path` for an empty path or one with
    /// an empty segment (`/a`, `a/`, `a//b`); `owner_id` for an empty owner id; `expire`,
    /// `signal_expire` or `response_timeout` for a zero or over-long duration;
    /// `auto_renewal` without an expiry.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use redis_mutex::{Error, Pool, RedisRwLock};
    /// # let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let err = RedisRwLock::builder(pool, "a//b").build().unwrap_err();
    /// assert!(matches!(err, Error::InvalidOptions { field: "path", .. }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(self) -> Result<RedisRwLock> {
        if let Some(reason) = keys::check_path(&self.path, self.separator) {
            return Err(Error::invalid("path", reason));
        }
        let options = self.options.build()?;
        Ok(RedisRwLock::with_options(
            self.pool,
            self.path,
            self.separator,
            options,
        ))
    }
}
