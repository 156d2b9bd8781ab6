//! [`RedisMutexBuilder`]: the options of a [`RedisMutex`], checked by `build()`.

use std::fmt;

use super::{DEFAULTS, RedisMutex, check_name};
use crate::error::Result;
use crate::options::{LockOptionsBuilder, lock_option_setters};
use crate::pool::Pool;

/// Builds a [`RedisMutex`] with options; made by [`RedisMutex::builder`].
///
/// Options are checked by [`build`](Self::build).
#[must_use = "a builder does nothing until `build()` is called"]
pub struct RedisMutexBuilder {
    pub(super) pool: Pool,
    pub(super) name: String,
    pub(super) options: LockOptionsBuilder,
    pub(super) fair: bool,
}

impl fmt::Debug for RedisMutexBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisMutexBuilder")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl RedisMutexBuilder {
    lock_option_setters!(
        "lock",
        super::RedisMutexGuard,
        "no expiry: the lock is held until released or [reset](RedisMutex::reset), as in python-redis-lock",
        "`false`"
    );

    /// Makes the lock fair: waiters are granted it in the order they came, across every
    /// process, and a release hands the lock to the first waiter inside the release, so the
    /// next holder has it one round trip after the release began (the default mode needs
    /// two, and lets a newcomer win the race).
    ///
    /// Each waiter holds a place in a queue (`lock-queue:<name>`, `lock-waiters:<name>`),
    /// refreshed every 500 ms while it waits; a waiter that crashed, was paused or gave up
    /// is skipped within a second, and one that gives up while the lock is being handed to
    /// it passes it on. Clients that are not fair (python-redis-lock, a mutex without
    /// `fair`) still exclude fair ones, and may take the lock when it is free between a
    /// release of theirs and the next grant; a fair release never leaves it free while
    /// someone waits. Every client of one name should use the same mode. See
    /// `docs/mutex.md` and `docs/performance.md` for what it costs.
    ///
    /// Defaults to `false`.
    pub fn fair(mut self, fair: bool) -> Self {
        self.fair = fair;
        self
    }

    /// Checks the options and builds the mutex. Talks to no server.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`](crate::Error::InvalidOptions), naming the option, for an
    /// empty name or owner id, a zero or over-long duration, or auto-renewal without an
    /// expiry.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use redis_mutex::{Error, Pool, RedisMutex};
    /// let pool = Pool::new("redis://127.0.0.1/")?;
    /// let err = RedisMutex::builder(pool, "jobs").auto_renewal(true).build().unwrap_err();
    /// assert!(matches!(err, Error::InvalidOptions { field: "auto_renewal", .. }));
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn build(self) -> Result<RedisMutex> {
        check_name(&self.name)?;
        let options = self.options.build(DEFAULTS, &self.pool)?;
        Ok(RedisMutex::with_options(
            self.pool, self.name, options, self.fair,
        ))
    }
}
