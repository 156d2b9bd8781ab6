//! The guards of a [`RedisMutex`]: [`RedisMutexGuard`], which borrows the mutex, and
//! [`ArcRedisMutexGuard`], which owns an `Arc` of it. Both are a [`Core`]: the held grant and
//! the place in the local queue.

use std::fmt;
use std::ops::DerefMut;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{ArcMutexGuard, MutexGuard, RawMutex};

use super::grant::MutexGrant;
use super::{LocalState, RedisMutex};
use crate::held::{Held, guard_methods};
use crate::{HandleKind, LockHandle, Result};

/// A place in a mutex's local queue: released, in FIFO order, when the guard goes.
pub(super) trait LocalGuard: DerefMut<Target = LocalState> {
    fn unlock_fair(self);
}

impl LocalGuard for MutexGuard<'_, LocalState> {
    fn unlock_fair(self) {
        MutexGuard::unlock_fair(self);
    }
}

impl LocalGuard for ArcMutexGuard<RawMutex, LocalState> {
    fn unlock_fair(self) {
        ArcMutexGuard::unlock_fair(self);
    }
}

/// What both guards hold.
pub(super) struct Core<L: LocalGuard> {
    held: Held<MutexGrant>,
    /// `None` once released.
    local: Option<L>,
    fencing_token: u64,
}

impl<L: LocalGuard> Core<L> {
    pub(super) fn new(held: Held<MutexGrant>, local: L, fencing_token: u64) -> Core<L> {
        Core {
            held,
            local: Some(local),
            fencing_token,
        }
    }

    /// Hands the local queue on, noting a successful release for the polite re-acquire.
    fn pass_on(&mut self) {
        if let Some(mut local) = self.local.take() {
            if self.held.released_ours() {
                local.released_at = Some(Instant::now());
            }
            // Hand over in FIFO order: an unfair unlock would let this thread, locking
            // again at once, keep the lock from local waiters.
            local.unlock_fair();
        }
    }

    fn unlock(&mut self) -> Result<()> {
        let result = self.held.unlock();
        self.pass_on();
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

    /// Lets the grant go without releasing it, and hands the local queue on.
    fn keep(&mut self) {
        self.held.keep();
        if let Some(local) = self.local.take() {
            local.unlock_fair();
        }
    }
}

impl<L: LocalGuard> Drop for Core<L> {
    fn drop(&mut self) {
        self.held.release_on_drop();
        self.pass_on();
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
/// `drop` cannot return it) and hands the mutex to the next local waiter. To see whether
/// the release worked, call [`unlock`](Self::unlock) instead.
///
/// Unlike [`std::sync::MutexGuard`], the guard may be sent to another thread, which can
/// then unlock it.
#[must_use = "dropping the guard releases the lock at once"]
pub struct RedisMutexGuard<'a> {
    mutex: &'a RedisMutex,
    core: Core<MutexGuard<'a, LocalState>>,
}

/// Holds a [`RedisMutex`] shared through an [`Arc`] until dropped or
/// [unlocked](Self::unlock): the guard of [`RedisMutex::lock_arc`], as
/// [`RedisMutexGuard`] but `'static`, so it can be returned from the function that made
/// the mutex, or handed to another thread with the lock.
#[must_use = "dropping the guard releases the lock at once"]
pub struct ArcRedisMutexGuard {
    mutex: Arc<RedisMutex>,
    core: Core<ArcMutexGuard<RawMutex, LocalState>>,
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
            /// clients take no token. See `docs/protocol.md`.
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
            /// ours (expired, reset, taken over), in which case nothing was changed; the
            /// errors of a request when Redis could not be reached, in which case the lock
            /// stays until its expiry.
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
            /// [resume](RedisMutex::resume): renewal stops, nothing is sent to Redis, the
            /// mutex's local queue moves on, and the grant's [`LockHandle`] is returned.
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
    pub(super) fn new(mutex: &'a RedisMutex, core: Core<MutexGuard<'a, LocalState>>) -> Self {
        RedisMutexGuard { mutex, core }
    }
}

impl ArcRedisMutexGuard {
    pub(super) fn new(
        mutex: Arc<RedisMutex>,
        core: Core<ArcMutexGuard<RawMutex, LocalState>>,
    ) -> Self {
        ArcRedisMutexGuard { mutex, core }
    }
}
