//! The guards of a [`RedisRwLock`]: [`RedisRwLockReadGuard`] and [`RedisRwLockWriteGuard`],
//! each a held lease ([`Held`]). The methods
//! they share are written once, in `rw_guard_methods!`, with their docs.

use std::fmt;

use super::RedisRwLock;
use super::grant::RwGrant;
use super::keys::Mode;
use crate::error::Result;
use crate::handle::{HandleKind, LockHandle};
use crate::held::{Held, guard_methods};

/// The docs' example setup for a guard of a read-write lock with a 10 s lease.
macro_rules! doc_setup {
    ($take:literal) => {
        concat!(
            "# use std::time::Duration;\n",
            "# use redis_mutex::{Pool, RedisRwLock};\n",
            "let pool = Pool::new(\"redis://127.0.0.1/\")?;\n",
            "let lock = RedisRwLock::builder(pool, \"catalog\").expire(Duration::from_secs(10)).build()?;\n",
            $take
        )
    };
}

/// Holds a read lock on a [`RedisRwLock`]'s path until dropped or
/// [unlocked](Self::unlock).
///
/// Dropping the guard releases the lease in Redis (a failure then is logged at WARN, since
/// `drop` cannot return it), wakes the writers it held back. To see whether the release worked, call [`unlock`](Self::unlock) instead.
#[must_use = "dropping the guard releases the lock at once"]
pub struct RedisRwLockReadGuard<'a> {
    lock: &'a RedisRwLock,
    held: Held<RwGrant>,
}

/// Holds the write lock on a [`RedisRwLock`]'s path until dropped or
/// [unlocked](Self::unlock).
///
/// Dropping the guard releases the lease in Redis (a failure then is logged at WARN, since
/// `drop` cannot return it), wakes the readers and writers it held back. To see whether the release worked, call [`unlock`](Self::unlock) instead.
#[must_use = "dropping the guard releases the lock at once"]
pub struct RedisRwLockWriteGuard<'a> {
    lock: &'a RedisRwLock,
    held: Held<RwGrant>,
}

impl<'a> RedisRwLockReadGuard<'a> {
    pub(super) fn new(lock: &'a RedisRwLock, held: Held<RwGrant>) -> Self {
        RedisRwLockReadGuard { lock, held }
    }
}

impl<'a> RedisRwLockWriteGuard<'a> {
    pub(super) fn new(lock: &'a RedisRwLock, held: Held<RwGrant>) -> Self {
        RedisRwLockWriteGuard { lock, held }
    }

    /// This grant's fencing token: strictly greater than the token of every earlier write
    /// lock on this path (and, on a single server, of every other lock: mutexes and write
    /// locks share the counter, `lock-fencing-counter`), so storage that remembers the
    /// highest token it has seen can refuse a write from a holder whose lease ran out.
    ///
    /// # Examples
    ///
    /// ```no_run
    #[doc = doc_setup!("let guard = lock.write()?;")]
    /// let first = guard.fencing_token();
    /// drop(guard);
    /// assert!(lock.write()?.fencing_token() > first);
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn fencing_token(&self) -> u64 {
        self.held.lease_token().unwrap_or_default()
    }
}

/// The methods both guards share, each documented once: `$what` names the lock in the
/// docs, `$take` binds `guard` in the examples, `$wakes` says whom a release wakes,
/// `$resume` names the method that resumes its handle.
macro_rules! rw_guard_methods {
    ($guard:ident, $what:literal, $take:literal, $wakes:literal, $resume:literal) => {
        impl fmt::Debug for $guard<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($guard))
                    .field("path", &self.lock.path)
                    .field("lease", self.held.lease())
                    .finish()
            }
        }

        impl $guard<'_> {
            fn held(&self) -> &Held<RwGrant> {
                &self.held
            }

            /// The lock this guard holds.
            pub fn rwlock(&self) -> &RedisRwLock {
                self.lock
            }

            #[doc = concat!("Releases the ", $what, " and wakes ", $wakes, ", and says whether it was")]
            /// still ours.
            ///
            /// Auto-renewal stops first, so no renewal reaches Redis after this returns.
            ///
            /// # Errors
            ///
            /// [`Error::LockLost`](crate::Error::LockLost) when the guard was
            /// [lost](Self::is_lost) (its release was still attempted);
            /// [`Error::NotAcquired`](crate::Error::NotAcquired) when the lease was no
            /// longer ours (its `reason` says why), in which case nothing was changed;
            /// [`Error::ReleaseDeferred`](crate::Error::ReleaseDeferred) when the release
            /// could not be sent or got no answer: it is sent again in the background while
            /// the lease lasts.
            ///
            /// # Examples
            ///
            /// ```no_run
            #[doc = doc_setup!($take)]
            /// guard.unlock()?;
            /// # Ok::<(), redis_mutex::Error>(())
            /// ```
            pub fn unlock(mut self) -> Result<()> {
                let result = self.held.unlock();
                result
            }

            #[doc = concat!("This lease's [`LockHandle`]: what another process (or this one, later) gives to")]
            #[doc = concat!("[`RedisRwLock::", $resume, "`] to hold the same lease. The guard keeps it; once the")]
            /// handle is resumed, the lease is taken over and this guard no longer holds it.
            /// From now on [`ensure_held`](Self::ensure_held) asks Redis every time, and the
            /// guard learns of a takeover there, or at its next renewal. To hand the lease
            /// over, use [`into_handle`](Self::into_handle).
            ///
            /// # Examples
            ///
            /// ```no_run
            #[doc = doc_setup!($take)]
            /// let handle = guard.handle();
            /// assert_eq!(handle.name(), "catalog");
            /// # Ok::<(), redis_mutex::Error>(())
            /// ```
            pub fn handle(&self) -> LockHandle {
                self.held.lease().hand_out();
                let grant = self.held.grant();
                let kind = match grant.mode {
                    Mode::Read => HandleKind::Read,
                    Mode::Write => HandleKind::Write,
                };
                let token = self.held.lease_token().unwrap_or_default();
                LockHandle::new(kind, &self.lock.path, &grant.lease_id, token)
            }

            #[doc = concat!("Gives the ", $what, " up without releasing it, for another process to")]
            #[doc = concat!("[resume](RedisRwLock::", $resume, "): renewal stops, nothing is sent to Redis,")]
            /// and the lease's [`LockHandle`] is returned. The lease
            /// stays until it is resumed and released, or until it expires.
            ///
            /// # Examples
            ///
            /// ```no_run
            #[doc = doc_setup!($take)]
            /// let handle = guard.into_handle();
            /// println!("REDIS_MUTEX_HANDLE={handle}");
            /// # Ok::<(), redis_mutex::Error>(())
            /// ```
            pub fn into_handle(mut self) -> LockHandle {
                let handle = self.handle();
                self.held.keep();
                handle
            }

            guard_methods!($what, doc_setup!($take));
        }

        impl Drop for $guard<'_> {
            fn drop(&mut self) {
                self.held.release_on_drop();
            }
        }
    };
}

rw_guard_methods!(
    RedisRwLockReadGuard,
    "read lock",
    "let guard = lock.read()?;",
    "the writers waiting for it",
    "resume_read"
);

rw_guard_methods!(
    RedisRwLockWriteGuard,
    "write lock",
    "let guard = lock.write()?;",
    "every waiter it held back",
    "resume_write"
);
