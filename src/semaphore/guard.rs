//! The permits of a [`RedisSemaphore`]: [`RedisSemaphorePermit`], which borrows the
//! semaphore, and [`ArcRedisSemaphorePermit`], which owns an `Arc` of it. Both are a held
//! grant of one or more permits; the methods they share are written once, in
//! `permit_methods!`, with their docs.

use std::fmt;
use std::sync::Arc;

use super::RedisSemaphore;
use super::grant::SemaphoreGrant;
use crate::error::Result;
use crate::held::{Held, guard_methods};

/// The docs' example setup for a permit of a semaphore with a 10 s lease.
macro_rules! doc_setup {
    ($take:literal) => {
        concat!(
            "# use std::time::Duration;\n",
            "# use redis_mutex::{Pool, RedisSemaphore};\n",
            "let pool = Pool::new(\"redis://127.0.0.1/\")?;\n",
            "let exports = RedisSemaphore::builder(pool, \"exports\").permits(3).expire(Duration::from_secs(10)).build()?;\n",
            $take
        )
    };
}

/// Holds one or more permits of a [`RedisSemaphore`] until dropped or
/// [released](Self::release).
///
/// Dropping it gives the permits back in Redis (a failure then is logged at WARN, since
/// `drop` cannot return it) and wakes the waiters they are enough for. To see whether the
/// release worked, call [`release`](Self::release) instead.
#[must_use = "dropping the permit gives it back at once"]
pub struct RedisSemaphorePermit<'a> {
    semaphore: &'a RedisSemaphore,
    held: Held<SemaphoreGrant>,
    permits: u32,
}

/// Holds one or more permits of a [`RedisSemaphore`] shared through an [`Arc`]: the permit
/// of [`RedisSemaphore::acquire_arc`], as [`RedisSemaphorePermit`] but `'static`, so it can
/// be returned from the function that made the semaphore, or moved to another thread.
#[must_use = "dropping the permit gives it back at once"]
pub struct ArcRedisSemaphorePermit {
    semaphore: Arc<RedisSemaphore>,
    held: Held<SemaphoreGrant>,
    permits: u32,
}

impl<'a> RedisSemaphorePermit<'a> {
    pub(super) fn new(
        semaphore: &'a RedisSemaphore,
        held: Held<SemaphoreGrant>,
        permits: u32,
    ) -> Self {
        RedisSemaphorePermit {
            semaphore,
            held,
            permits,
        }
    }
}

impl ArcRedisSemaphorePermit {
    pub(super) fn new(
        semaphore: Arc<RedisSemaphore>,
        held: Held<SemaphoreGrant>,
        permits: u32,
    ) -> Self {
        ArcRedisSemaphorePermit {
            semaphore,
            held,
            permits,
        }
    }
}

/// The methods both permits share, each documented once: `$take` binds `guard` in the
/// examples.
macro_rules! permit_methods {
    ($permit:ty, $take:literal) => {
        impl fmt::Debug for $permit {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($permit))
                    .field("name", &self.semaphore.name)
                    .field("permits", &self.permits)
                    .field("lease", self.held.lease())
                    .finish()
            }
        }

        impl $permit {
            fn held(&self) -> &Held<SemaphoreGrant> {
                &self.held
            }

            /// The semaphore these permits are of.
            pub fn semaphore(&self) -> &RedisSemaphore {
                &self.semaphore
            }

            /// How many permits this guard holds.
            ///
            /// # Examples
            ///
            /// ```no_run
            #[doc = doc_setup!($take)]
            /// assert_eq!(guard.permits(), 1);
            /// # Ok::<(), redis_mutex::Error>(())
            /// ```
            pub fn permits(&self) -> u32 {
                self.permits
            }

            /// This grant's fencing token: greater than the token of every earlier grant of
            /// this semaphore (and, on a single server, of every lock: they share the
            /// counter, `lock-fencing-counter`), so storage that remembers the tokens it
            /// has seen can refuse a write from a holder whose lease ran out.
            ///
            /// # Examples
            ///
            /// ```no_run
            #[doc = doc_setup!($take)]
            /// let first = guard.fencing_token();
            /// drop(guard);
            /// assert!(exports.acquire()?.fencing_token() > first);
            /// # Ok::<(), redis_mutex::Error>(())
            /// ```
            pub fn fencing_token(&self) -> u64 {
                self.held.lease_token().unwrap_or_default()
            }

            /// Gives the permits back and wakes the waiters they are enough for, and says
            /// whether they were still ours.
            ///
            /// Auto-renewal stops first, so no renewal reaches Redis after this returns.
            ///
            /// # Errors
            ///
            /// [`Error::LockLost`](crate::Error::LockLost) when the permits were
            /// [lost](Self::is_lost) (the release was still attempted);
            /// [`Error::NotAcquired`](crate::Error::NotAcquired) when they were no longer
            /// ours (its `reason` says why), in which case nothing was changed;
            /// [`Error::ReleaseDeferred`](crate::Error::ReleaseDeferred) when the release
            /// could not be sent or got no answer: it is sent again in the background while
            /// the lease lasts (the permits come back once it lands, or at the lease's end).
            ///
            /// # Examples
            ///
            /// ```no_run
            #[doc = doc_setup!($take)]
            /// guard.release()?;
            /// # Ok::<(), redis_mutex::Error>(())
            /// ```
            pub fn release(mut self) -> Result<()> {
                self.held.unlock()
            }

            /// [`release`](Self::release), named as the locks' guards name it.
            ///
            /// # Errors
            ///
            /// As for [`release`](Self::release).
            ///
            /// # Examples
            ///
            /// ```no_run
            #[doc = doc_setup!($take)]
            /// guard.unlock()?;
            /// # Ok::<(), redis_mutex::Error>(())
            /// ```
            pub fn unlock(self) -> Result<()> {
                self.release()
            }

            /// Renews the lease to the semaphore's full [expiry](crate::RedisSemaphoreBuilder::expire):
            /// [`extend`](Self::extend) with the configured expiry.
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
                self.held.renew()
            }

            guard_methods!("permit", doc_setup!($take));
        }

        impl Drop for $permit {
            fn drop(&mut self) {
                self.held.release_on_drop();
            }
        }
    };
}

permit_methods!(RedisSemaphorePermit<'_>, "let guard = exports.acquire()?;");
permit_methods!(
    ArcRedisSemaphorePermit,
    "let exports = std::sync::Arc::new(exports);\nlet guard = exports.acquire_arc()?;"
);
