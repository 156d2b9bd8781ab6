//! [`RedisMutexBuilder`]: the options of a [`RedisMutex`], checked by `build()`.

use std::fmt;
use std::time::Duration;

use super::{RedisMutex, check_name};
use crate::options::LockOptionsBuilder;
use crate::{Error, Pool, Result};

/// Builds a [`RedisMutex`] with options; made by [`RedisMutex::builder`].
///
/// Options are checked by [`build`](Self::build).
#[must_use = "a builder does nothing until `build()` is called"]
pub struct RedisMutexBuilder {
    pub(super) pool: Pool,
    pub(super) name: String,
    pub(super) options: LockOptionsBuilder,
}

impl fmt::Debug for RedisMutexBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisMutexBuilder")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl RedisMutexBuilder {
    /// Sets how long the lock lives in Redis unless released, renewed or extended first.
    /// A holder that crashes frees the lock after this long.
    ///
    /// Must be between 1 ms and 10 years; with [`auto_renewal`](Self::auto_renewal), at
    /// least 30 ms. Redis keeps it to the millisecond (python-redis-lock uses whole seconds).
    ///
    /// Defaults to no expiry: the lock is held until released or [reset](RedisMutex::reset).
    pub fn expire(mut self, expire: Duration) -> Self {
        self.options.expire = Some(expire);
        self
    }

    /// Sets the value stored in the lock key while we hold it, which
    /// [`RedisMutex::get_owner_id`] shows to anyone. Give each holder its own id
    /// (`"host-42/pid-7"`): two mutexes with the same id on the same name cannot take the
    /// lock from each other, but each can release the other's.
    ///
    /// Must not be empty.
    ///
    /// Defaults to 128 random bits from a CSPRNG, as 32 hex digits, made anew per mutex.
    pub fn owner_id(mut self, owner_id: impl Into<String>) -> Self {
        self.options.owner_id = Some(owner_id.into());
        self
    }

    /// Sets how long a release signal stays in Redis for a waiter to take. Raise it for
    /// waiters that can be slower than this between two attempts.
    ///
    /// Must be between 1 ms and 10 years.
    ///
    /// Defaults to 1 s (as in python-redis-lock).
    pub fn signal_expire(mut self, signal_expire: Duration) -> Self {
        self.options.signal_expire = Some(signal_expire);
        self
    }

    /// Keeps the lease alive while a guard lives: the process's renewal thread extends it
    /// each time a third of the [expiry](Self::expire) has passed, and marks the guard
    /// [lost](crate::RedisMutexGuard::is_lost) if it finds the lock gone or cannot reach Redis
    /// before the lease runs out.
    ///
    /// Needs [`expire`](Self::expire).
    ///
    /// Defaults to `false`.
    pub fn auto_renewal(mut self, auto_renewal: bool) -> Self {
        self.options.auto_renewal = auto_renewal;
        self
    }

    /// Sets a callback run once, on the renewal thread, when an auto-renewed guard of this
    /// mutex is found [lost](crate::RedisMutexGuard::is_lost). It gets the lock's name. Keep it
    /// short: it delays the renewal of other locks while it runs. A panic in it is logged
    /// and goes no further.
    ///
    /// Defaults to none (the loss is logged at WARN either way).
    pub fn on_lost(mut self, callback: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.options.on_lost(callback);
        self
    }

    /// Sets how long any one Redis reply may take before the call fails with a timeout,
    /// so that a stalled server cannot hang a caller. Waiting for the lock is not bound by
    /// this: a waiter's `BLPOP` gets a read timeout that covers its wait.
    ///
    /// Connections this crate checks out keep the read and write timeouts it sets.
    ///
    /// Defaults to 2 s.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.options.response_timeout = Some(timeout);
        self
    }

    /// Checks the options and builds the mutex. Talks to no server.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`], naming the option, for an empty name or owner id, a zero
    /// or over-long duration, or auto-renewal without an expiry.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use redis_mutex::{Error, Pool, RedisMutex};
    /// # let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let err = RedisMutex::builder(pool, "jobs").auto_renewal(true).build().unwrap_err();
    /// assert!(matches!(err, Error::InvalidOptions { field: "auto_renewal", .. }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(self) -> Result<RedisMutex> {
        if let Some(reason) = check_name(&self.name) {
            return Err(Error::invalid("name", reason));
        }
        let options = self.options.build()?;
        Ok(RedisMutex::with_options(self.pool, self.name, options))
    }
}
