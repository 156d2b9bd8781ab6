//! [`RedisSemaphoreBuilder`]: the options of a semaphore and their validation.

use std::fmt;

use super::{DEFAULTS, RedisSemaphore};
use crate::error::{Error, Result};
use crate::options::{LockOptionsBuilder, lock_option_setters};
use crate::pool::Pool;

/// Builds a [`RedisSemaphore`] with options; made by [`RedisSemaphore::builder`].
///
/// Options are checked by [`build`](Self::build); [`permits`](Self::permits) is required.
#[must_use = "a builder does nothing until `build()` is called"]
pub struct RedisSemaphoreBuilder {
    pub(super) pool: Pool,
    pub(super) name: String,
    pub(super) permits: Option<u32>,
    pub(super) fair: bool,
    pub(super) options: LockOptionsBuilder,
}

impl fmt::Debug for RedisSemaphoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSemaphoreBuilder")
            .field("name", &self.name)
            .field("permits", &self.permits)
            .field("fair", &self.fair)
            .finish_non_exhaustive()
    }
}

impl RedisSemaphoreBuilder {
    lock_option_setters!(
        "grant of permits",
        super::RedisSemaphorePermit,
        "30 s, renewed while a permit lives: a crashed holder's permits come back when its last renewal runs out, up to 30 s after it died",
        "`true`",
        "Sets the owner id each grant's lease id starts with (`<owner id>#<16 hex digits>`), \
         which operators see (in [`holders`](crate::RedisSemaphore::holders), \
         [`list_locks`](crate::list_locks), `redis-mutex list` and `redis-mutex owner`) and \
         which [`reset_owned_by`](crate::reset_owned_by) frees. Give each process its own, \
         stable id (`\"host-42/export-worker\"`): every grant has a lease id of its own, so \
         two semaphore objects with the same id never release each other's permits, but \
         `reset_owned_by` takes back the permits of both."
    );

    /// Sets the capacity: how many permits may be held at once. Every user of one semaphore
    /// should build it with the same; [`RedisSemaphore::set_permits`] changes it for all of
    /// them while it is in use.
    ///
    /// Required; at least 1.
    pub fn permits(mut self, permits: u32) -> Self {
        self.permits = Some(permits);
        self
    }

    /// Fair mode: permits go to waiters in the order they came, and a waiter that needs more
    /// permits than are free holds up those behind it rather than be overtaken. Every user
    /// of one semaphore should agree on it.
    ///
    /// Defaults to `false`: a waiter woken for freed permits may be overtaken by a newcomer,
    /// which costs it one more round of waiting, and a small request may go before a big
    /// one that does not fit yet (a steady stream of small requests can keep a big one
    /// waiting as long as it lasts).
    pub fn fair(mut self, fair: bool) -> Self {
        self.fair = fair;
        self
    }

    /// Checks the options and builds the semaphore. Talks to no server.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`], naming the option: `name` for an empty name or one longer than [`MAX_NAME_LEN`](crate::MAX_NAME_LEN); `permits` when
    /// it was not set, or is 0; `owner_id` for an empty owner id; `expire`, `signal_expire`,
    /// `response_timeout` or `wait_replicas` for a duration out of range; `expire` for one
    /// too short to renew.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use redis_mutex::{Error, Pool, RedisSemaphore};
    /// let pool = Pool::new("redis://127.0.0.1/")?;
    /// let err = RedisSemaphore::builder(pool, "exports").build().unwrap_err();
    /// assert!(matches!(err, Error::InvalidOptions { field: "permits", .. }));
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn build(self) -> Result<RedisSemaphore> {
        if self.name.is_empty() {
            return Err(Error::invalid("name", "the semaphore's name is empty"));
        }
        crate::keys::check_name_len("name", &self.name)?;
        let permits = match self.permits {
            None => {
                return Err(Error::invalid(
                    "permits",
                    "a semaphore needs its capacity: call `.permits(n)`",
                ));
            }
            Some(0) => {
                return Err(Error::invalid(
                    "permits",
                    "a semaphore of 0 permits lets nobody in; give 1 or more",
                ));
            }
            Some(n) => n,
        };
        let options = self.options.build(DEFAULTS, &self.pool)?;
        Ok(RedisSemaphore::with_options(
            self.pool, self.name, permits, self.fair, options,
        ))
    }
}
