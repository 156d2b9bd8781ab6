//! [`RedisRwLockBuilder`]: the options of a read-write lock and their validation.

use std::fmt;

use super::keys::check_path;
use super::{DEFAULTS, RedisRwLock};
use crate::error::{Error, Result};
use crate::options::{LockOptionsBuilder, lock_option_setters};
use crate::pool::Pool;

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
    lock_option_setters!(
        "read or write lock",
        super::RedisRwLockWriteGuard,
        "30 s, renewed while a guard lives: a crashed holder stops blocking others when its last renewal runs out, up to 30 s after it died",
        "`true`",
        "Sets the owner id each lease's id starts with (`<owner id>#<16 hex digits>`), which \
         operators see (in [`list_locks`](crate::list_locks), `redis-mutex list` and \
         `redis-mutex owner`) and which [`reset_owned_by`](crate::reset_owned_by) frees. \
         Give each process its own, stable id (`\"host-42/report-worker\"`): every lease has \
         an id of its own, so two lock objects with the same id never release each other's \
         leases, but `reset_owned_by` frees the leases of both."
    );

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
    /// `signal_expire`, `response_timeout` or `wait_replicas` for a duration out of range;
    /// `expire` for one too short to renew.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use redis_mutex::{Error, Pool, RedisRwLock};
    /// let pool = Pool::new("redis://127.0.0.1/")?;
    /// let err = RedisRwLock::builder(pool, "a//b").build().unwrap_err();
    /// assert!(matches!(err, Error::InvalidOptions { field: "path", .. }));
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn build(self) -> Result<RedisRwLock> {
        crate::keys::check_name_len("path", &self.path)?;
        if let Some(reason) = check_path(&self.path, self.separator) {
            return Err(Error::invalid("path", reason));
        }
        let options = self.options.build(DEFAULTS, &self.pool)?;
        Ok(RedisRwLock::with_options(
            self.pool,
            self.path,
            self.separator,
            options,
        ))
    }
}
