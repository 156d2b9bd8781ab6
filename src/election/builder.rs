//! [`RedisElectionBuilder`]: the options of a [`RedisElection`], checked by `build()`.

use std::fmt;

use super::{DEFAULTS, RedisElection};
use crate::error::{Error, Result};
use crate::options::{LockOptionsBuilder, lock_option_setters};
use crate::pool::Pool;

/// Sets the options of a [`RedisElection`]; made by [`RedisElection::builder`].
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use redis_mutex::{Pool, RedisElection};
///
/// let pool = Pool::new("redis://127.0.0.1/")?;
/// let election = RedisElection::builder(pool, "scheduler")
///     .expire(Duration::from_secs(5))
///     .owner_id("host-7")
///     .build()?;
/// # Ok::<(), redis_mutex::Error>(())
/// ```
#[must_use = "a builder does nothing until `build()` is called"]
pub struct RedisElectionBuilder {
    pub(super) pool: Pool,
    pub(super) name: String,
    pub(super) options: LockOptionsBuilder,
    pub(super) fair: bool,
}

impl fmt::Debug for RedisElectionBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisElectionBuilder")
            .field("name", &self.name)
            .field("fair", &self.fair)
            .finish_non_exhaustive()
    }
}

impl RedisElectionBuilder {
    lock_option_setters!(
        "leader's role",
        super::Leadership,
        "10 s: a leader that crashed keeps the role up to 10 s; while it runs, the role is renewed every third of it",
        "`true`: turn it off only to renew by hand with [`Leadership::extend`](crate::Leadership::extend)",
        "Sets who campaigns: the id stored in Redis while this candidate leads, which \
         [`leader`](crate::RedisElection::leader), observers, [`list_locks`](crate::list_locks) \
         and `redis-mutex leader` show. Give each candidate its own, stable id (`\"host-42\"`): \
         two candidates with the same id can resign each other's term."
    );

    /// Elects candidates in order of arrival: a leader that resigns hands the role to the
    /// candidate that has campaigned longest (the mutex's
    /// [fair mode](crate::RedisMutexBuilder::fair), under the election's keys).
    ///
    /// Defaults to `false`: whoever asks first once the role is free.
    pub fn fair(mut self, fair: bool) -> Self {
        self.fair = fair;
        self
    }

    /// Builds the election.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] for an empty name or one longer than
    /// [`MAX_NAME_LEN`](crate::MAX_NAME_LEN), or an option out of its range.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::{Pool, RedisElection};
    ///
    /// let election = RedisElection::builder(Pool::new("redis://127.0.0.1/")?, "leader")
    ///     .fair(true)
    ///     .build()?;
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn build(self) -> Result<RedisElection> {
        if self.name.is_empty() {
            return Err(Error::invalid(
                "name",
                "the election's name is empty; give every election a non-empty name",
            ));
        }
        crate::keys::check_name_len("name", &self.name)?;
        let options = self.options.build(DEFAULTS, &self.pool)?;
        Ok(RedisElection::with_options(
            self.pool, self.name, options, self.fair,
        ))
    }
}
