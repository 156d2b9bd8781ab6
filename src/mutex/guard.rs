//! The guards of a [`RedisMutex`]: [`RedisMutexGuard`], which borrows the mutex, and
//! [`ArcRedisMutexGuard`], which owns an `Arc` of it. Both are a [`Core`]: the held grant and
//! the note of it in the mutex's local side.

use std::fmt;
use std::sync::Arc;

use super::RedisMutex;
use super::grant::MutexGrant;
use crate::error::Result;
use crate::handle::{HandleKind, LockHandle};
use crate::held::{Held, guard_methods};
use crate::local::{Holding, Local};

/// What both guards hold: the grant, and the note of it in the mutex's local side (which
/// takes no turn from the process's waiters; see `local.rs`).
pub(super) struct Core {
    held: Held<MutexGrant>,
    holding: Holding,
    fencing_token: u64,
}

impl Core {
    pub(super) fn new(held: Held<MutexGrant>, local: &Arc<Local>, fencing_token: u64) -> Core {
        let holding = local.hold(held.lease_arc());
        Core {
            held,
            holding,
            fencing_token,
        }
    }

    /// Notes a release that found the grant ours, for the polite acquire that follows it.
    fn note_release(&self) {
        if self.held.released_ours() {
            self.holding.released();
        }
    }

    fn unlock(&mut self) -> Result<()> {
        let result = self.held.unlock();
        self.note_release();
        result
    }

    fn renew(&self) -> Result<()> {
        self.held.renew()
    }

    fn handle(&self, name: &str) -> LockHandle {
        self.held.lease().hand_out();
        let owner = &self.held.grant().calls.owner;
        LockHandle::new(HandleKind::Mutex, name, owner, self.fencing_token)
    }

    /// Lets the grant go without releasing it.
    fn keep(&mut self) {
        self.held.keep();
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        self.held.release_on_drop();
        self.note_release();
    }
}

/// The docs' example setup for a guard of a mutex with a 10 s expiry.
macro_rules! doc_setup {
    ($take:literal) => {
        concat!(
            "# use std::time::Duration;\n",
            "# use redis_mutex::{Pool, RedisMutex};\n",
            "let pool = Pool::new(\"redis://127.0.0.1/\")?;\n",
            "let mutex = RedisMutex::builder(pool, \"job\").expire(Duration::from_secs(10)).build()?;\n",
            $take
        )
    };
}

/// Holds a [`RedisMutex`] until dropped or [unlocked](Self::unlock).
///
/// Dropping the guard releases the lock in Redis (a failure then is logged at WARN, since
/// `drop` cannot return it), which wakes one waiter. To see whether
/// the release worked, call [`unlock`](Self::unlock) instead.
///
/// Unlike [`std::sync::MutexGuard`], the guard may be sent to another thread, which can
/// then unlock it.
#[must_use = "dropping the guard releases the lock at once"]
pub struct RedisMutexGuard<'a> {
    mutex: &'a RedisMutex,
    core: Core,
}

/// Holds a [`RedisMutex`] shared through an [`Arc`] until dropped or
/// [unlocked](Self::unlock): the guard of [`RedisMutex::lock_arc`], as
/// [`RedisMutexGuard`] but `'static`, so it can be returned from the function that made
/// the mutex, or handed to another thread with the lock.
#[must_use = "dropping the guard releases the lock at once"]
pub struct ArcRedisMutexGuard {
    mutex: Arc<RedisMutex>,
    core: Core,
}

/// The methods both guards share, documented once for each.
macro_rules! mutex_guard {
    ($guard:ty, $take:literal) => {
        impl fmt::Debug for $guard {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($guard))
                    .field("name", &self.mutex.name)
                    .field("fencing_token", &self.core.fencing_token)
                    .field("lease", self.core.held.lease())
                    .finish()
            }
        }

        impl $guard {
            fn held(&self) -> &Held<MutexGrant> {
                &self.core.held
            }

            /// The mutex this guard holds.
            pub fn mutex(&self) -> &RedisMutex {
                &self.mutex
            }

            /// This grant's fencing token: strictly greater than the token of every earlier
            /// grant of this lock, so storage that remembers the highest token it has seen
            /// can refuse a write from a holder whose lease ran out while it was paused.
            ///
            /// Tokens come from a counter, `lock-fencing-counter` (on a cluster, one per
            /// slot), incremented by the script that grants the lock, and are never below
            /// the server's clock in microseconds: `reset`, `reset_all` and expiry never
            /// lower them, and neither do a restart that lost the counter or a failover to a
            /// replica it had not reached, as long as the servers' clocks agree to within
            /// the outage. They rise, but not one by one. Grants made by python-redis-lock
            /// clients take no token. See `docs/mutex.md`.
            ///
            /// # Examples
            ///
            /// ```no_run
            #[doc = doc_setup!($take)]
            /// let first = guard.fencing_token();
            /// drop(guard);
            /// let second = mutex.lock()?.fencing_token();
            /// assert!(second > first);
            /// # Ok::<(), redis_mutex::Error>(())
            /// ```
            pub fn fencing_token(&self) -> u64 {
                self.core.fencing_token
            }

            /// Releases the lock and wakes one waiter, and says whether it was still ours.
            ///
            /// Auto-renewal stops first, so no renewal reaches Redis after this returns.
            ///
            /// # Errors
            ///
            /// [`Error::LockLost`](crate::Error::LockLost) when the guard was
            /// [lost](Self::is_lost) (its release was still attempted: Redis may have held
            /// the lock a little longer than our clock allowed);
            /// [`Error::NotAcquired`](crate::Error::NotAcquired) when the lock was no longer
            /// ours (its `reason` says why: expired, reset, moved by a failover), in which
            /// case nothing was changed;
            /// [`Error::ReleaseDeferred`](crate::Error::ReleaseDeferred) when the release
            /// could not be sent or got no answer: it is sent again in the background while
            /// the lease lasts (the lock is free once it lands, or at the lease's end).
            ///
            /// # Examples
            ///
            /// ```no_run
            #[doc = doc_setup!($take)]
            /// guard.unlock()?;
            /// # Ok::<(), redis_mutex::Error>(())
            /// ```
            pub fn unlock(mut self) -> Result<()> {
                self.core.unlock()
            }

            /// Renews the lease to the mutex's full [expiry](crate::RedisMutexBuilder::expire),
            /// as python-redis-lock's `extend()` does: [`extend`](Self::extend) with the
            /// configured expiry.
            ///
            /// # Errors
            ///
            /// As for [`extend`](Self::extend).
            ///
            /// # Examples
            ///
            /// ```no_run
            #[doc = doc_setup!($take)]
            /// guard.renew()?; // 10 s from now
            /// # Ok::<(), redis_mutex::Error>(())
            /// ```
            pub fn renew(&self) -> Result<()> {
                self.core.renew()
            }

            /// This grant's [`LockHandle`]: what another process (or this one, later) gives
            /// to [`RedisMutex::resume`] to hold the same grant. The guard keeps the lock;
            /// once the handle is resumed, the grant is taken over and this guard no longer
            /// holds it. From now on [`ensure_held`](Self::ensure_held) asks Redis every
            /// time (it cannot know from its clock whether the handle was resumed), and the
            /// guard learns of a takeover there, or at its next renewal;
            /// [`is_lost`](Self::is_lost), which never asks, may not know before. To hand
            /// the lock over, use [`into_handle`](Self::into_handle).
            ///
            /// # Examples
            ///
            /// ```no_run
            #[doc = doc_setup!($take)]
            /// let handle = guard.handle();
            /// assert_eq!(handle.name(), "job");
            /// assert_eq!(handle.fencing_token(), Some(guard.fencing_token()));
            /// # Ok::<(), redis_mutex::Error>(())
            /// ```
            pub fn handle(&self) -> LockHandle {
                self.core.handle(&self.mutex.name)
            }

            /// Gives the lock up without releasing it, for another process to
            /// [resume](RedisMutex::resume): renewal stops, nothing is sent to Redis,
            /// and the grant's [`LockHandle`] is returned.
            /// The lock stays held until it is resumed and released, or until it expires
            /// (a lock without expiry stays until it is resumed or reset).
            ///
            /// # Examples
            ///
            /// ```no_run
            #[doc = doc_setup!($take)]
            /// let handle = guard.into_handle();
            /// std::process::Command::new("worker")
            ///     .env("REDIS_MUTEX_HANDLE", handle.to_string())
            ///     .spawn()?;
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn into_handle(mut self) -> LockHandle {
                let handle = self.handle();
                self.core.keep();
                handle
            }

            guard_methods!("lock", doc_setup!($take));
        }
    };
}

mutex_guard!(RedisMutexGuard<'_>, "let guard = mutex.lock()?;");
mutex_guard!(
    ArcRedisMutexGuard,
    "let mutex = std::sync::Arc::new(mutex);\nlet guard = mutex.lock_arc()?;"
);

impl<'a> RedisMutexGuard<'a> {
    pub(super) fn new(mutex: &'a RedisMutex, core: Core) -> Self {
        RedisMutexGuard { mutex, core }
    }
}

impl ArcRedisMutexGuard {
    pub(super) fn new(mutex: Arc<RedisMutex>, core: Core) -> Self {
        ArcRedisMutexGuard { mutex, core }
    }
}
