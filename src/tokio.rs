//! Async forms of the blocking calls, for tokio (the `tokio` feature).
//!
//! Each runs its blocking call on tokio's blocking pool ([`spawn_blocking`]), so a task that
//! waits for a lock holds no runtime thread, and returns an [`AsyncGuard`]: an owned guard
//! that may live across `.await`s, and whose drop hands the release to the crate's release
//! thread (one per process, which no wait ever holds).
//! Together they keep every wait and every release off the runtime's threads, which is the
//! pattern "From async code" in the [crate docs](crate) describes, in one call:
//!
//! | blocking | async (on an `Arc` of the lock) | gives |
//! |---|---|---|
//! | [`lock_arc`](RedisMutex::lock_arc) | [`lock_async`](RedisMutex::lock_async) | [`AsyncRedisMutexGuard`] |
//! | [`try_lock_arc`](RedisMutex::try_lock_arc) | [`try_lock_async`](RedisMutex::try_lock_async) | the same |
//! | [`try_lock_arc_for`](RedisMutex::try_lock_arc_for) | [`try_lock_for_async`](RedisMutex::try_lock_for_async) | the same |
//! | [`acquire_arc`](RedisSemaphore::acquire_arc) | [`acquire_async`](RedisSemaphore::acquire_async) | [`AsyncRedisSemaphorePermit`] |
//! | [`acquire_many_arc`](RedisSemaphore::acquire_many_arc) | [`acquire_many_async`](RedisSemaphore::acquire_many_async) | the same |
//! | [`try_acquire_many_arc_for`](RedisSemaphore::try_acquire_many_arc_for) | [`try_acquire_async`](RedisSemaphore::try_acquire_async), [`try_acquire_for_async`](RedisSemaphore::try_acquire_for_async), [`try_acquire_many_for_async`](RedisSemaphore::try_acquire_many_for_async) | the same |
//! | the guard's `unlock` / `release` | [`AsyncRedisMutexGuard::unlock`], [`AsyncRedisSemaphorePermit::release`] (on a thread of their own) | the release's result |
//!
//! [`RedisRwLock`](crate::RedisRwLock) has no async forms: its guards borrow the lock, so
//! they cannot be handed from one thread to another; see the crate docs.
//!
//! What the blocking pool costs:
//!
//! - **A thread per wait.** A call that waits holds one of the blocking pool's threads
//!   until it returns (tokio allows 512 by default,
//!   [`max_blocking_threads`](::tokio::runtime::Builder::max_blocking_threads)); calls
//!   beyond that queue for a thread before they even ask Redis. Releases never queue
//!   there: a dropped guard releases on the crate's release thread, an `unlock().await` on
//!   a thread of its own.
//!   To keep waits from queueing, keep fewer calls waiting at once than that: put a
//!   [`tokio::sync::Semaphore`](https://docs.rs/tokio/latest/tokio/sync/struct.Semaphore.html)
//!   in front of them, or wait with a deadline (`try_lock_for_async`).
//! - **Cancelling does not stop a wait.** Dropping the future of `lock_async` (in
//!   `tokio::time::timeout`, `select!`, or with its task) leaves the blocking call running
//!   to its end; a lock it then takes is released at once. A runtime that is dropped waits
//!   for its blocking pool, so such a wait also holds up the program's exit until it
//!   returns. To bound a wait, give it a deadline: `try_lock_for_async`.
//! - **A release after drop.** Dropping an [`AsyncGuard`] returns at once: the lock is
//!   released a round trip later, on the crate's release thread. To know that it was, and whether
//!   it was still ours, `unlock().await` instead.
//!
//! # Examples
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use redis_mutex::{Pool, RedisMutex};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//!     // Pool::new connects once: at start-up, before any task waits on it.
//!     let pool = Pool::new("redis://127.0.0.1/")?;
//!     let mutex = Arc::new(
//!         RedisMutex::builder(pool, "nightly-report")
//!             .expire(Duration::from_secs(30))
//!             .auto_renewal(true)
//!             .build()?,
//!     );
//!     let tasks: Vec<_> = (0..32)
//!         .map(|_| {
//!             let mutex = mutex.clone();
//!             tokio::spawn(async move {
//!                 let guard = mutex.lock_async().await?;
//!                 tokio::time::sleep(Duration::from_millis(10)).await; // held across it
//!                 guard.unlock().await
//!             })
//!         })
//!         .collect();
//!     for task in tasks {
//!         task.await??;
//!     }
//!     Ok(())
//! }
//! ```
//!
//! [`spawn_blocking`]: ::tokio::task::spawn_blocking

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result, TryLockError};
use crate::mutex::{ArcRedisMutexGuard, RedisMutex};
use crate::semaphore::{ArcRedisSemaphorePermit, RedisSemaphore};

/// Runs `call` on tokio's blocking pool and returns what it returned. A panic in `call`
/// goes on in the caller, as it would have had the call run there.
///
/// # Errors
///
/// [`Error::RuntimeShutDown`] when the runtime shut down before `call` could run (it did
/// not run: nothing was taken).
async fn off_runtime<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    match ::tokio::task::spawn_blocking(call).await {
        Ok(value) => Ok(value),
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Only when the runtime whose pool it was queued on shut down first.
            Err(_) => Err(Error::RuntimeShutDown),
        },
    }
}

/// The docs' example setup: an `Arc` of a mutex with a 10 s expiry, in an async fn.
macro_rules! doc_mutex {
    () => {
        concat!(
            "# async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {\n",
            "# use std::sync::Arc;\n",
            "# use std::time::Duration;\n",
            "# use redis_mutex::{Pool, RedisMutex};\n",
            "# let pool = Pool::new(\"redis://127.0.0.1/\")?;\n",
            "let mutex = Arc::new(RedisMutex::builder(pool, \"job\").expire(Duration::from_secs(10)).build()?);\n",
        )
    };
}

/// The docs' example setup: an `Arc` of a semaphore of three permits, in an async fn.
macro_rules! doc_semaphore {
    () => {
        concat!(
            "# async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {\n",
            "# use std::sync::Arc;\n",
            "# use std::time::Duration;\n",
            "# use redis_mutex::{Pool, RedisSemaphore};\n",
            "# let pool = Pool::new(\"redis://127.0.0.1/\")?;\n",
            "let exports = Arc::new(RedisSemaphore::builder(pool, \"exports\").permits(3).expire(Duration::from_secs(10)).build()?);\n",
        )
    };
}

/// The end of the docs' examples, after `doc_mutex!` or `doc_semaphore!`.
macro_rules! doc_end {
    () => {
        "# Ok(())\n# }"
    };
}

impl RedisMutex {
    /// [`lock_arc`](Self::lock_arc) for async code (the `tokio` feature): waits for the
    /// lock on tokio's blocking pool, so the task holds no runtime thread while it waits,
    /// and gives an [`AsyncGuard`] that may be held across `.await`s and releases on the
    /// crate's release thread when dropped.
    ///
    /// The future owns what it needs (`'static`), so it can be spawned. Dropping it does
    /// not stop the wait: the call runs to its end on the blocking pool, and a lock it then
    /// takes is released at once. See the [module docs](crate::tokio) for what the
    /// blocking pool costs.
    ///
    /// # Errors
    ///
    /// As for [`lock`](Self::lock).
    ///
    /// # Panics
    ///
    /// When awaited outside a tokio runtime; when the call itself panics.
    ///
    /// # Examples
    ///
    /// ```no_run
    #[doc = doc_mutex!()]
    /// let guard = mutex.lock_async().await?;
    /// tokio::time::sleep(Duration::from_millis(10)).await; // the lock held across it
    /// guard.unlock().await?;
    #[doc = doc_end!()]
    /// ```
    pub fn lock_async(
        self: &Arc<Self>,
    ) -> impl Future<Output = Result<AsyncRedisMutexGuard>> + Send + 'static {
        let mutex = self.clone();
        async move {
            off_runtime(move || mutex.lock_arc())
                .await?
                .map(AsyncGuard::new)
        }
    }

    /// [`try_lock_arc`](Self::try_lock_arc) for async code (the `tokio` feature): one
    /// attempt, without waiting, sent from tokio's blocking pool; see
    /// [`lock_async`](Self::lock_async).
    ///
    /// # Errors
    ///
    /// As for [`try_lock`](Self::try_lock).
    ///
    /// # Panics
    ///
    /// As for [`lock_async`](Self::lock_async).
    ///
    /// # Examples
    ///
    /// ```no_run
    #[doc = doc_mutex!()]
    /// use redis_mutex::TryLockError;
    ///
    /// match mutex.try_lock_async().await {
    ///     Ok(guard) => guard.unlock().await?,
    ///     Err(TryLockError::WouldBlock) => println!("another node runs it"),
    ///     Err(e) => return Err(e.into()),
    /// }
    #[doc = doc_end!()]
    /// ```
    pub fn try_lock_async(
        self: &Arc<Self>,
    ) -> impl Future<Output = Result<AsyncRedisMutexGuard, TryLockError>> + Send + 'static {
        let mutex = self.clone();
        async move {
            off_runtime(move || mutex.try_lock_arc())
                .await?
                .map(AsyncGuard::new)
        }
    }

    /// [`try_lock_arc_for`](Self::try_lock_arc_for) for async code (the `tokio` feature):
    /// waits up to `timeout` on tokio's blocking pool; see [`lock_async`](Self::lock_async).
    /// The way to bound a wait from async code: dropping the future does not end it.
    ///
    /// # Errors
    ///
    /// As for [`try_lock_for`](Self::try_lock_for).
    ///
    /// # Panics
    ///
    /// As for [`lock_async`](Self::lock_async).
    ///
    /// # Examples
    ///
    /// ```no_run
    #[doc = doc_mutex!()]
    /// if let Ok(guard) = mutex.try_lock_for_async(Duration::from_millis(300)).await {
    ///     // got it within 300 ms
    ///     guard.unlock().await?;
    /// }
    #[doc = doc_end!()]
    /// ```
    pub fn try_lock_for_async(
        self: &Arc<Self>,
        timeout: Duration,
    ) -> impl Future<Output = Result<AsyncRedisMutexGuard, TryLockError>> + Send + 'static {
        let mutex = self.clone();
        async move {
            off_runtime(move || mutex.try_lock_arc_for(timeout))
                .await?
                .map(AsyncGuard::new)
        }
    }
}

impl RedisSemaphore {
    /// [`acquire_arc`](Self::acquire_arc) for async code (the `tokio` feature): waits for
    /// a permit on tokio's blocking pool; see [`RedisMutex::lock_async`].
    ///
    /// # Errors
    ///
    /// As for [`acquire`](Self::acquire).
    ///
    /// # Panics
    ///
    /// As for [`RedisMutex::lock_async`].
    ///
    /// # Examples
    ///
    /// ```no_run
    #[doc = doc_semaphore!()]
    /// let permit = exports.acquire_async().await?;
    /// // at most three exports run at once, fleet-wide
    /// permit.release().await?;
    #[doc = doc_end!()]
    /// ```
    pub fn acquire_async(
        self: &Arc<Self>,
    ) -> impl Future<Output = Result<AsyncRedisSemaphorePermit>> + Send + 'static {
        self.acquire_many_async(1)
    }

    /// [`acquire_many_arc`](Self::acquire_many_arc) for async code (the `tokio` feature):
    /// waits for `n` permits, all at once, on tokio's blocking pool; see
    /// [`RedisMutex::lock_async`].
    ///
    /// # Errors
    ///
    /// As for [`acquire_many`](Self::acquire_many).
    ///
    /// # Panics
    ///
    /// As for [`RedisMutex::lock_async`].
    ///
    /// # Examples
    ///
    /// ```no_run
    #[doc = doc_semaphore!()]
    /// let big_export = exports.acquire_many_async(2).await?;
    /// assert_eq!(big_export.permits(), 2);
    #[doc = doc_end!()]
    /// ```
    pub fn acquire_many_async(
        self: &Arc<Self>,
        n: u32,
    ) -> impl Future<Output = Result<AsyncRedisSemaphorePermit>> + Send + 'static {
        let semaphore = self.clone();
        async move {
            off_runtime(move || semaphore.acquire_many_arc(n))
                .await?
                .map(AsyncGuard::new)
        }
    }

    /// One attempt at a permit, for async code (the `tokio` feature), sent from tokio's
    /// blocking pool: [`try_acquire_many_for_async(1, Duration::ZERO)`](Self::try_acquire_many_for_async).
    ///
    /// # Errors
    ///
    /// As for [`try_acquire`](Self::try_acquire).
    ///
    /// # Panics
    ///
    /// As for [`RedisMutex::lock_async`].
    ///
    /// # Examples
    ///
    /// ```no_run
    #[doc = doc_semaphore!()]
    /// use redis_mutex::TryLockError;
    ///
    /// match exports.try_acquire_async().await {
    ///     Ok(permit) => permit.release().await?,
    ///     Err(TryLockError::WouldBlock) => println!("three exports run already; later"),
    ///     Err(e) => return Err(e.into()),
    /// }
    #[doc = doc_end!()]
    /// ```
    pub fn try_acquire_async(
        self: &Arc<Self>,
    ) -> impl Future<Output = Result<AsyncRedisSemaphorePermit, TryLockError>> + Send + 'static
    {
        self.try_acquire_many_for_async(1, Duration::ZERO)
    }

    /// Waits up to `timeout` for a permit, for async code (the `tokio` feature):
    /// [`try_acquire_many_for_async(1, timeout)`](Self::try_acquire_many_for_async).
    ///
    /// # Errors
    ///
    /// As for [`try_acquire_for`](Self::try_acquire_for).
    ///
    /// # Panics
    ///
    /// As for [`RedisMutex::lock_async`].
    ///
    /// # Examples
    ///
    /// ```no_run
    #[doc = doc_semaphore!()]
    /// let permit = exports.try_acquire_for_async(Duration::from_secs(5)).await?;
    #[doc = doc_end!()]
    /// ```
    pub fn try_acquire_for_async(
        self: &Arc<Self>,
        timeout: Duration,
    ) -> impl Future<Output = Result<AsyncRedisSemaphorePermit, TryLockError>> + Send + 'static
    {
        self.try_acquire_many_for_async(1, timeout)
    }

    /// [`try_acquire_many_arc_for`](Self::try_acquire_many_arc_for) for async code (the
    /// `tokio` feature): waits up to `timeout` for `n` permits on tokio's blocking pool (a
    /// `timeout` of zero makes one attempt); see [`RedisMutex::lock_async`].
    ///
    /// # Errors
    ///
    /// As for [`try_acquire_many_for`](Self::try_acquire_many_for).
    ///
    /// # Panics
    ///
    /// As for [`RedisMutex::lock_async`].
    ///
    /// # Examples
    ///
    /// ```no_run
    #[doc = doc_semaphore!()]
    /// let permits = exports.try_acquire_many_for_async(2, Duration::from_secs(5)).await?;
    #[doc = doc_end!()]
    /// ```
    pub fn try_acquire_many_for_async(
        self: &Arc<Self>,
        n: u32,
        timeout: Duration,
    ) -> impl Future<Output = Result<AsyncRedisSemaphorePermit, TryLockError>> + Send + 'static
    {
        let semaphore = self.clone();
        async move {
            off_runtime(move || semaphore.try_acquire_many_arc_for(n, timeout))
                .await?
                .map(AsyncGuard::new)
        }
    }
}

/// The guard of [`RedisMutex::lock_async`] and its `try_` forms: an [`ArcRedisMutexGuard`]
/// whose drop releases on the crate's release thread.
pub type AsyncRedisMutexGuard = AsyncGuard<ArcRedisMutexGuard>;

/// The permit of [`RedisSemaphore::acquire_async`] and its kin: an
/// [`ArcRedisSemaphorePermit`] whose drop gives it back on the crate's release thread.
pub type AsyncRedisSemaphorePermit = AsyncGuard<ArcRedisSemaphorePermit>;

/// An owned guard for async code (the `tokio` feature): it holds a lock (an
/// [`ArcRedisMutexGuard`], an [`ArcRedisSemaphorePermit`]) and, when dropped, hands its
/// release to the crate's release thread, so that dropping it never blocks a runtime
/// thread.
///
/// The async calls ([`RedisMutex::lock_async`], ...) return one; [`new`](Self::new) wraps a
/// guard taken otherwise. It derefs to the guard it holds, for what needs no round trip
/// ([`fencing_token`](ArcRedisMutexGuard::fencing_token),
/// [`is_lost`](ArcRedisMutexGuard::is_lost), [`valid_for`](ArcRedisMutexGuard::valid_for),
/// [`handle`](ArcRedisMutexGuard::handle), ...). The guard's calls that ask Redis
/// ([`is_held`](ArcRedisMutexGuard::is_held), [`extend`](ArcRedisMutexGuard::extend),
/// [`renew`](ArcRedisMutexGuard::renew), and [`ensure_held`](ArcRedisMutexGuard::ensure_held)
/// when its clock cannot tell) make one request on the calling thread,
/// within the response timeout: they wait for no other task, so they cannot deadlock, but
/// they hold the runtime thread for a round trip.
///
/// Dropped outside a tokio runtime, it releases on the spot, as the guard it holds would.
///
/// # Examples
///
/// ```no_run
#[doc = doc_mutex!()]
/// let guard = mutex.lock_async().await?;
/// let token = guard.fencing_token(); // the guard's own methods, through `Deref`
/// // ... write to storage that checks `token`, awaiting as it goes ...
/// drop(guard); // released on the crate's release thread, a round trip later
#[doc = doc_end!()]
/// ```
#[must_use = "dropping the guard releases the lock at once"]
pub struct AsyncGuard<G: Send + 'static> {
    /// `Some` until taken by `into_inner` or `drop`.
    guard: Option<G>,
}

impl<G: Send + 'static> AsyncGuard<G> {
    /// Wraps a guard taken otherwise (with [`RedisMutex::lock_arc`] in
    /// [`spawn_blocking`](::tokio::task::spawn_blocking), or resumed from a handle), so
    /// that its drop releases on the crate's release thread.
    ///
    /// # Examples
    ///
    /// ```no_run
    #[doc = doc_mutex!()]
    /// use redis_mutex::tokio::AsyncGuard;
    ///
    /// let taken = mutex.clone();
    /// let guard = tokio::task::spawn_blocking(move || taken.lock_arc()).await??;
    /// let guard = AsyncGuard::new(guard);
    #[doc = doc_end!()]
    /// ```
    pub fn new(guard: G) -> AsyncGuard<G> {
        AsyncGuard { guard: Some(guard) }
    }

    /// The guard it holds, to be used (and dropped) on a thread that may block: the
    /// blocking pool, or a thread of its own.
    ///
    /// # Examples
    ///
    /// ```no_run
    #[doc = doc_mutex!()]
    /// let guard = mutex.lock_async().await?.into_inner();
    /// tokio::task::spawn_blocking(move || -> redis_mutex::Result<()> {
    ///     guard.ensure_held()?;
    ///     // ... blocking work under the lock ...
    ///     guard.unlock()
    /// })
    /// .await??;
    #[doc = doc_end!()]
    /// ```
    pub fn into_inner(mut self) -> G {
        self.guard
            .take()
            .expect("an AsyncGuard holds its guard until dropped")
    }
}

/// What an unlock off the runtime sends back: its result, or its panic.
type Unlocked = std::thread::Result<Result<()>>;

/// Runs `unlock` on `guard` on a thread of its own and hands its result back (a panic in it
/// goes on in the caller): neither a runtime thread nor one of tokio's blocking pool (which
/// waiting calls may all hold) waits for it, nor does it wait behind other releases. When
/// no thread can be started, it goes to the crate's release thread, as a dropped
/// [`AsyncGuard`] does.
async fn unlock_off_runtime<G: Send + 'static>(
    guard: G,
    unlock: fn(G) -> Result<()>,
) -> Result<()> {
    let (reply, replied) = ::tokio::sync::oneshot::channel::<Unlocked>();
    let job = UnlockOnDrop {
        guard: Some(guard),
        unlock,
        reply: Some(reply),
    };
    let job = Arc::new(parking_lot::Mutex::new(Some(job)));
    let on_thread = job.clone();
    let spawned = std::thread::Builder::new()
        .name("redis-mutex-unlock".into())
        .spawn(move || drop(on_thread.lock().take()));
    if spawned.is_err()
        && let Some(job) = job.lock().take()
    {
        crate::release::drop_later(Box::new(job));
    }
    match replied.await {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        // The job was dropped unsent: only when the process is going down.
        Err(_) => Err(Error::RuntimeShutDown),
    }
}

/// A guard that `unlock`s itself when dropped, and replies with the result (or the panic).
struct UnlockOnDrop<G> {
    guard: Option<G>,
    unlock: fn(G) -> Result<()>,
    reply: Option<::tokio::sync::oneshot::Sender<Unlocked>>,
}

impl<G> Drop for UnlockOnDrop<G> {
    fn drop(&mut self) {
        if let (Some(guard), Some(reply)) = (self.guard.take(), self.reply.take()) {
            let unlock = self.unlock;
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || unlock(guard)));
            // The caller may have stopped waiting: the release happened all the same.
            let _ = reply.send(result);
        }
    }
}

impl AsyncRedisMutexGuard {
    /// [`ArcRedisMutexGuard::unlock`] on a thread of its own: releases the lock, wakes one
    /// waiter, and says whether it was still ours. No thread of tokio's blocking pool waits
    /// for it, so it never queues behind the calls that wait for this very lock.
    ///
    /// Once called, the release happens even if the future is dropped before it is done.
    ///
    /// # Errors
    ///
    /// As for [`ArcRedisMutexGuard::unlock`].
    ///
    /// # Examples
    ///
    /// ```no_run
    #[doc = doc_mutex!()]
    /// let guard = mutex.lock_async().await?;
    /// guard.unlock().await?;
    #[doc = doc_end!()]
    /// ```
    pub async fn unlock(self) -> Result<()> {
        unlock_off_runtime(self.into_inner(), ArcRedisMutexGuard::unlock).await
    }
}

impl AsyncRedisSemaphorePermit {
    /// [`ArcRedisSemaphorePermit::release`] on a thread of its own: gives the permits back,
    /// wakes the waiters they are enough for, and says whether they were still ours. No
    /// thread of tokio's blocking pool waits for it.
    ///
    /// Once called, the release happens even if the future is dropped before it is done.
    ///
    /// # Errors
    ///
    /// As for [`ArcRedisSemaphorePermit::release`].
    ///
    /// # Examples
    ///
    /// ```no_run
    #[doc = doc_semaphore!()]
    /// let permit = exports.acquire_async().await?;
    /// permit.release().await?;
    #[doc = doc_end!()]
    /// ```
    pub async fn release(self) -> Result<()> {
        unlock_off_runtime(self.into_inner(), ArcRedisSemaphorePermit::release).await
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
    #[doc = doc_semaphore!()]
    /// let permit = exports.acquire_async().await?;
    /// permit.unlock().await?;
    #[doc = doc_end!()]
    /// ```
    pub async fn unlock(self) -> Result<()> {
        self.release().await
    }
}

impl<G: Send + 'static> Deref for AsyncGuard<G> {
    type Target = G;

    fn deref(&self) -> &G {
        self.guard
            .as_ref()
            .expect("an AsyncGuard holds its guard until dropped")
    }
}

impl<G: Send + fmt::Debug + 'static> fmt::Debug for AsyncGuard<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AsyncGuard").field(&self.guard).finish()
    }
}

impl<G: Send + 'static> Drop for AsyncGuard<G> {
    /// In a runtime, hands the guard to the crate's release thread (the one that sends
    /// releases again when they could not be sent), which releases it there: neither a
    /// runtime thread nor a thread of the blocking pool (which waiting calls may all hold)
    /// waits for it. Outside a runtime, or if that thread cannot be started, releases it
    /// here, as a guard's drop does.
    fn drop(&mut self) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        match ::tokio::runtime::Handle::try_current() {
            Ok(_) => crate::release::drop_later(Box::new(guard)),
            Err(_) => drop(guard),
        }
    }
}
