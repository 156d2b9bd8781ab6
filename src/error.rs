//! The crate's errors.

use std::fmt;

/// A `Result` whose error is this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when taking, keeping or releasing a lock.
///
/// Messages are lowercase, carry no trailing period, and say what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// We are not (or no longer) the owner of the lock: it expired, was reset, or was taken
    /// by someone else after it expired.
    ///
    /// Returned by [`RedisMutexGuard::unlock`](crate::RedisMutexGuard::unlock),
    /// [`RedisMutexGuard::extend`](crate::RedisMutexGuard::extend) and, for a Redlock,
    /// [`RedlockGuard::extend`](crate::RedlockGuard::extend) and
    /// [`RedlockGuard::unlock`](crate::RedlockGuard::unlock); and by `unlock` and `extend` of
    /// the [`RedisRwLock`](crate::RedisRwLock) guards.
    #[error(
        "lock `{name}` is not held by this owner (it expired, was reset or was taken over); \
         use a longer expiry or auto-renewal if the work outlives the lease"
    )]
    NotAcquired {
        /// The lock's name.
        name: String,
    },

    /// The lock has no expiry, so it cannot be extended.
    ///
    /// Returned by [`RedisMutexGuard::extend`](crate::RedisMutexGuard::extend) on a mutex
    /// built without [`expire`](crate::RedisMutexBuilder::expire), and by `extend` of the
    /// [`RedisRwLock`](crate::RedisRwLock) guards likewise.
    #[error("lock `{name}` has no expiry and cannot be extended; build it with `.expire(..)`")]
    NotExpirable {
        /// The lock's name.
        name: String,
    },

    /// The lease was lost while the guard was held: a renewal found another owner or none,
    /// or Redis could not be reached before the lease ran out. Whatever the guard protected
    /// may have been entered by someone else since.
    ///
    /// Returned by [`RedisMutexGuard::ensure_held`](crate::RedisMutexGuard::ensure_held)
    /// and [`RedisMutexGuard::unlock`](crate::RedisMutexGuard::unlock) once
    /// [`RedisMutexGuard::is_lost`](crate::RedisMutexGuard::is_lost) is true; likewise by
    /// the [`RedisRwLock`](crate::RedisRwLock) guards and by
    /// [`RedlockGuard::ensure_held`](crate::RedlockGuard::ensure_held),
    /// [`RedlockGuard::extend`](crate::RedlockGuard::extend) and
    /// [`RedlockGuard::unlock`](crate::RedlockGuard::unlock).
    #[error(
        "lock `{name}` was lost while held: its lease ran out or it was taken over; \
         stop the work it protected and lock again"
    )]
    LockLost {
        /// The lock's name.
        name: String,
    },

    /// A builder was given options that cannot work together.
    ///
    /// Returned by the `build()` methods of [`RedisMutexBuilder`](crate::RedisMutexBuilder),
    /// [`RedlockBuilder`](crate::RedlockBuilder) and
    /// [`RedisRwLockBuilder`](crate::RedisRwLockBuilder).
    #[error("invalid option `{field}`: {reason}")]
    InvalidOptions {
        /// The builder method (option) at fault.
        field: &'static str,
        /// What is wrong with it and what would be accepted.
        reason: String,
    },

    /// A Redlock attempt was not granted by a majority of instances within the lease, or
    /// too many instances failed for the answer to be known.
    ///
    /// Returned by [`Redlock::lock`](crate::Redlock::lock),
    /// [`Redlock::try_lock`](crate::Redlock::try_lock) and
    /// [`RedlockGuard::extend`](crate::RedlockGuard::extend); by
    /// [`Redlock::is_locked`](crate::Redlock::is_locked) and
    /// [`RedlockGuard::unlock`](crate::RedlockGuard::unlock) when the failing instances
    /// decide the answer.
    #[error("{}", NoQuorumDisplay { granted: *granted, needed: *needed, failures })]
    NoQuorum {
        /// How many instances granted the request in the last attempt (for `is_locked`,
        /// how many hold the key; for `unlock`, how many released it).
        granted: usize,
        /// How many grants make a majority.
        needed: usize,
        /// The instances that failed with an error (not those that were merely held by
        /// someone else), as `(index into the pool list, error)`.
        failures: Vec<(usize, Error)>,
    },

    /// The lock's key holds a hash, list or other type, not a lock string: some other
    /// program uses the name. Nothing was changed.
    ///
    /// Returned by [`RedisMutex::lock`](crate::RedisMutex::lock) and its `try_` forms, and by
    /// [`RedisMutex::reset`](crate::RedisMutex::reset).
    #[error(
        "the key of lock `{name}` holds another type than a string, so it is not a lock; \
         delete the key or use another lock name"
    )]
    WrongType {
        /// The lock's name.
        name: String,
    },

    /// A Redis command failed: the server could not be reached, timed out, or answered
    /// with an error. The message is the Redis client's.
    ///
    /// Returned by every method that talks to Redis.
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),

    /// No connection could be checked out of the pool in time.
    ///
    /// Returned by every method that talks to Redis. Raise the pool's `max_size` or
    /// `connection_timeout`, or check that Redis is reachable.
    #[error("no redis connection could be checked out of the pool: {0}")]
    Pool(#[from] r2d2::Error),

    /// The process could not start the background thread that renews leases.
    ///
    /// Returned by the locking methods of a mutex or read-write lock built with
    /// [`auto_renewal(true)`](crate::RedisMutexBuilder::auto_renewal), and of a Redlock
    /// built with [`auto_extend(true)`](crate::RedlockBuilder::auto_extend); a later call
    /// tries again.
    #[error("could not start the lease renewal thread: {0}")]
    RenewalThread(#[source] std::io::Error),
}

impl Error {
    /// True for [`Error::LockLost`].
    pub fn is_lock_lost(&self) -> bool {
        matches!(self, Error::LockLost { .. })
    }

    /// True for [`Error::NotAcquired`].
    pub fn is_not_acquired(&self) -> bool {
        matches!(self, Error::NotAcquired { .. })
    }

    /// True for [`Error::NoQuorum`].
    pub fn is_no_quorum(&self) -> bool {
        matches!(self, Error::NoQuorum { .. })
    }

    /// True when the error is a timeout talking to Redis (a stalled or unreachable server).
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::Redis(e) => e.is_timeout(),
            _ => false,
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidOptions {
            field,
            reason: reason.into(),
        }
    }
}

struct NoQuorumDisplay<'a> {
    granted: usize,
    needed: usize,
    failures: &'a [(usize, Error)],
}

impl fmt::Display for NoQuorumDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no quorum: {} of the {} grants needed were given in time",
            self.granted, self.needed
        )?;
        for (index, error) in self.failures {
            write!(f, "; instance {index}: {error}")?;
        }
        f.write_str("; the resource is held elsewhere or too many instances are down")
    }
}

/// Why a non-blocking or timed attempt gave no guard.
///
/// Named as in [`std::sync::TryLockError`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TryLockError {
    /// The lock is held by someone else (another process, or another thread of this one),
    /// and did not become free before the timeout.
    #[error("the lock is held elsewhere; try again later, or wait for it with `lock()`")]
    WouldBlock,
    /// The attempt failed.
    #[error(transparent)]
    Error(#[from] Error),
}

impl TryLockError {
    /// True for [`TryLockError::WouldBlock`].
    pub fn is_would_block(&self) -> bool {
        matches!(self, TryLockError::WouldBlock)
    }
}

impl From<redis::RedisError> for TryLockError {
    fn from(e: redis::RedisError) -> Self {
        TryLockError::Error(e.into())
    }
}

impl From<r2d2::Error> for TryLockError {
    fn from(e: r2d2::Error) -> Self {
        TryLockError::Error(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lowercase_and_say_what_to_do() {
        let errors = [
            Error::NotAcquired { name: "a".into() },
            Error::NotExpirable { name: "a".into() },
            Error::LockLost { name: "a".into() },
            Error::invalid("expire", "must be greater than zero"),
            Error::NoQuorum {
                granted: 1,
                needed: 3,
                failures: vec![(2, Error::invalid("x", "y"))],
            },
        ];
        for e in &errors {
            let text = e.to_string();
            assert!(text.chars().next().unwrap().is_lowercase(), "{text}");
            assert!(!text.ends_with('.'), "{text}");
        }
        assert_eq!(
            errors[4].to_string(),
            "no quorum: 1 of the 3 grants needed were given in time; \
             instance 2: invalid option `x`: y; \
             the resource is held elsewhere or too many instances are down"
        );
        assert!(TryLockError::WouldBlock.is_would_block());
        assert!(errors[2].is_lock_lost());
    }
}
