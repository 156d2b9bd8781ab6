//! [`RedisMutex`]: a distributed mutex on python-redis-lock's protocol. Its builder is in
//! `builder.rs`, its guards in `guard.rs`, one grant (what a guard releases, extends and
//! renews) in `grant.rs`.

mod builder;
mod calls;
mod fair;
mod family;
mod grant;
mod guard;
mod keys;
mod once_per;
mod resume;

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use crate::acquire::{self, Found, Lock, Outcome, Request};
use crate::conn;
use crate::error::{Error, Result, TryLockError};
use crate::held::Held;
use crate::keys::Scheme;
use crate::lease::Holder;
use crate::lease::NewGrant;
use crate::lease::clock_margin;
use crate::local::{Local, Locals};
use crate::metrics::Labels;
use crate::options::{AttemptId, Defaults, LockOptions, LockOptionsBuilder};
use crate::pool::Pool;
use crate::renewal::OnServer;
use crate::scripts::{self, Call, Lua, lua, undo_window};
use crate::time::{Deadline, millis};
use keys::{ELECTIONS, MutexKeys};

pub use builder::RedisMutexBuilder;
use calls::Calls;
use fair::Fair;
pub(crate) use family::{Mutexes, clear_in, list_in};
pub use family::{Released, last_release, lock_info};
use grant::MutexGrant;
use guard::Core;
pub use guard::{ArcRedisMutexGuard, RedisMutexGuard};
pub(crate) use keys::{ELECTIONS as ELECTION_KEYS, Sibling};
pub use once_per::{OncePer, PeriodDone, PeriodWindow};

/// Takes the lock if it is free, with a fencing token and a grant marker.
static ACQUIRE: LazyLock<Lua> = lua!(
    ["scripts/clock.lua", "scripts/fence.lua"],
    "mutex/acquire.lua"
);
/// Compare-and-delete, then wake one waiter (python-redis-lock's), with a note of it.
static RELEASE: LazyLock<Lua> = lua!([], "mutex/release.lua");
/// Releases the grant of one attempt whose reply was lost, and no other.
static UNDO: LazyLock<Lua> = lua!([], "mutex/undo.lua");
/// Fair mode: acquire (or queue), release with direct handoff, leave the queue.
static FAIR: LazyLock<Lua> = lua!(["scripts/clock.lua", "scripts/fence.lua"], "mutex/fair.lua");
/// Compare-and-extend (or check) of any number of locks in one call.
static EXTEND: LazyLock<Lua> = lua!([], "mutex/extend.lua");
/// Takes over a grant named by a lock handle, with a new fencing token.
static RESUME: LazyLock<Lua> = lua!(
    ["scripts/clock.lua", "scripts/fence.lua"],
    "mutex/resume.lua"
);
/// Marks a window of a period done, while the grant still holds the lock.
static ONCE_PER: LazyLock<Lua> = lua!(
    ["scripts/clock.lua", "scripts/now.lua"],
    "mutex/once_per.lua"
);
/// Deletes locks whoever (or a given owner) holds them, and wakes one waiter of each.
static RESET: LazyLock<Lua> = lua!([], "mutex/reset.lua");
/// What the operator tools show of some mutexes.
static LIST: LazyLock<Lua> = lua!(["scripts/clock.lua", "scripts/now.lua"], "mutex/list.lua");

/// The local side of every mutex of this process, by pool and lock key.
static LOCALS: LazyLock<Locals> = LazyLock::new(Locals::new);

/// A mutex's defaults: python-redis-lock's (no expiry, no renewal).
const DEFAULTS: Defaults = Defaults {
    expire: None,
    auto_renewal: false,
};

/// A distributed mutex held in Redis, compatible with python-redis-lock.
///
/// `lock()` blocks until the lock is ours, `try_lock()` makes one attempt, and
/// `try_lock_for()` waits up to a deadline; each gives a [`RedisMutexGuard`] that releases the
/// lock when dropped. [`with_lock`](Self::with_lock) runs a closure under the lock, and
/// [`lock_arc`](Self::lock_arc) gives an owned guard for an `Arc<RedisMutex>`.
///
/// Threads of one process that wait take turns locally first, whether they share a
/// `RedisMutex` (through an [`Arc`]) or each builds its own for the same [`Pool`] and name
/// (as a worker pool builds one per job): however many of them wait, one of them waits in
/// Redis for this lock at a time. The local turns order waiters, never holders: a thread of
/// this process that holds the lock keeps nobody waiting in the process, and the waiter is
/// woken by its release, a reset or its expiry at the same moment as a waiter of any other
/// process. Waiters do not poll: they sleep in `BLPOP` on the lock's signal list and a
/// release wakes one of them. See the [crate docs](crate) for the protocol and its
/// guarantees.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use redis_mutex::{Pool, RedisMutex};
///
/// let pool = Pool::new("redis://127.0.0.1/")?;
/// let mutex = RedisMutex::builder(pool, "nightly-report")
///     .expire(Duration::from_secs(60))
///     .auto_renewal(true)
///     .build()?;
/// let guard = mutex.lock()?;
/// // ... only one process in the fleet runs this at a time ...
/// guard.unlock()?;
/// # Ok::<(), redis_mutex::Error>(())
/// ```
pub struct RedisMutex {
    pool: Pool,
    name: Arc<str>,
    /// Its script calls (keys, owner id, expiry, fair mode), shared with its grants.
    calls: Arc<Calls>,
    options: LockOptions,
    labels: Labels,
    /// The local side, shared by every mutex of this pool and name in the process: which
    /// of its waiting threads waits in Redis, and the grants its threads hold.
    local: Arc<Local>,
}

impl fmt::Debug for RedisMutex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisMutex")
            .field("name", &self.name)
            .field("options", &self.options)
            .field("fair", &self.calls.fair)
            .finish_non_exhaustive()
    }
}

/// Refuses a name no lock can have.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(
            "name",
            "the lock name is empty; give every lock a non-empty name",
        ));
    }
    crate::keys::check_name_len("name", name)
}

impl RedisMutex {
    /// A mutex named `name` on `pool`, without expiry and with a random owner id.
    ///
    /// Any non-empty string of at most [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) bytes is a name
    /// (spaces, braces, newlines, non-ASCII); the keys are
    /// `lock:<name>` and `lock-signal:<name>` (on a cluster, `lock:{<name>}` and so on).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] for an empty name, or one longer than
    /// [`MAX_NAME_LEN`](crate::MAX_NAME_LEN).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::{Pool, RedisMutex};
    ///
    /// let mutex = RedisMutex::new(Pool::new("redis://127.0.0.1/")?, "migrations")?;
    /// let _guard = mutex.lock()?;
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn new(pool: Pool, name: impl Into<String>) -> Result<RedisMutex> {
        RedisMutex::builder(pool, name).build()
    }

    /// A builder for a mutex named `name` on `pool`, to set its options.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use redis_mutex::{Pool, RedisMutex};
    ///
    /// let pool = Pool::new("redis://127.0.0.1/")?;
    /// let mutex = RedisMutex::builder(pool, "cache-rebuild")
    ///     .expire(Duration::from_secs(30))
    ///     .owner_id(format!("worker-{}", std::process::id()))
    ///     .build()?;
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn builder(pool: Pool, name: impl Into<String>) -> RedisMutexBuilder {
        RedisMutexBuilder {
            pool,
            name: name.into(),
            options: LockOptionsBuilder::default(),
            fair: false,
        }
    }

    fn with_options(pool: Pool, name: String, options: LockOptions, fair: bool) -> RedisMutex {
        let keys = MutexKeys::new(&name, Scheme::of(&pool));
        RedisMutex::on_keys(pool, name, options, fair, keys, "mutex")
    }

    /// The mutex an election's leader holds: its keys are `election:<name>` and so on (no
    /// python-redis-lock client takes them), `kept` (the proclaimed value) lives as long as
    /// its lease, and its metrics say `kind="election"`.
    pub(crate) fn of_election(
        pool: Pool,
        name: String,
        options: LockOptions,
        fair: bool,
        kept: String,
    ) -> RedisMutex {
        let mut keys = MutexKeys::of(&ELECTIONS, &name, Scheme::of(&pool));
        keys.kept = Some(kept);
        RedisMutex::on_keys(pool, name, options, fair, keys, "election")
    }

    fn on_keys(
        pool: Pool,
        name: String,
        options: LockOptions,
        fair: bool,
        keys: MutexKeys,
        kind: &'static str,
    ) -> RedisMutex {
        let local = LOCALS.get(&pool, &keys.lock);
        let calls = Calls::new(
            keys,
            &options.owner_id,
            options.expire,
            options.signal_expire,
            options.response_timeout,
            fair,
        );
        RedisMutex {
            pool,
            name: name.into(),
            calls: Arc::new(calls),
            labels: Labels::new(kind, options.metrics_label.clone()),
            options,
            local,
        }
    }

    fn keys(&self) -> &MutexKeys {
        &self.calls.keys
    }

    /// Whether the mutex is in [fair mode](RedisMutexBuilder::fair).
    pub fn is_fair(&self) -> bool {
        self.calls.fair
    }

    /// The lock's name, as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This mutex's own id: what it stores in Redis while it holds the lock, whether it
    /// holds it or not. To ask who holds the lock now, use
    /// [`get_owner_id`](Self::get_owner_id), which asks Redis.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use redis_mutex::{Pool, RedisMutex};
    /// let pool = Pool::new("redis://127.0.0.1/")?;
    /// let mutex = RedisMutex::builder(pool, "deploy").owner_id("ci-runner-3").build()?;
    /// assert_eq!(mutex.owner_id(), "ci-runner-3"); // ours, held or not
    /// let holder = mutex.get_owner_id()?; // whoever holds it now, if anyone
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn owner_id(&self) -> &str {
        &self.options.owner_id
    }

    /// The expiry set with [`RedisMutexBuilder::expire`], if any.
    pub fn expire(&self) -> Option<Duration> {
        self.options.expire
    }

    /// Blocks until the lock is ours, then returns a guard that releases it when dropped.
    ///
    /// Threads of this process that wait for the lock (through this mutex, or any other of
    /// the same pool and name) take turns, first come first served, to be the one that
    /// waits in Redis, woken by the release of whoever holds it (a thread of this process
    /// or of another), a reset, or the holder's expiry. Each request to Redis is bounded by
    /// the response timeout: a server that stops answering makes `lock` fail, not hang.
    ///
    /// Locking again from the thread that holds the guard waits forever, as with
    /// [`std::sync::Mutex`].
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Timeout`], [`Error::PoolTimeout`] or
    /// [`Error::Redis`] when Redis cannot be reached or answers with an error;
    /// [`Error::WrongType`] when the lock's key holds something other than a lock;
    /// [`Error::NotReplicated`] with `wait_replicas`; [`Error::RenewalThread`] with
    /// auto-renewal. The lock is not held then.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use std::thread;
    /// use redis_mutex::{Pool, RedisMutex};
    ///
    /// let mutex = Arc::new(RedisMutex::new(Pool::new("redis://127.0.0.1/")?, "counter")?);
    /// let workers: Vec<_> = (0..4)
    ///     .map(|_| {
    ///         let mutex = mutex.clone();
    ///         thread::spawn(move || -> redis_mutex::Result<()> {
    ///             let _guard = mutex.lock()?;
    ///             // one thread in the whole fleet at a time here
    ///             Ok(())
    ///         })
    ///     })
    ///     .collect();
    /// for worker in workers {
    ///     worker.join().unwrap()?;
    /// }
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn lock(&self) -> Result<RedisMutexGuard<'_>> {
        let core = self.acquire(None)?.ok_or(Error::Protocol {
            what: "a wait without deadline that ended",
        })?;
        Ok(RedisMutexGuard::new(self, core))
    }

    /// Makes one attempt at the lock, without waiting.
    ///
    /// # Errors
    ///
    /// [`TryLockError::WouldBlock`] when the lock is held, by another process or by
    /// another thread of this one. Either way it asks Redis (one round trip), as a thread
    /// of another process would: a grant of this process's may have expired, or been reset,
    /// or lost with a restart. [`TryLockError::Error`] for the failures listed under
    /// [`lock`](Self::lock).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::{Pool, RedisMutex, TryLockError};
    ///
    /// let mutex = RedisMutex::new(Pool::new("redis://127.0.0.1/")?, "cron:cleanup")?;
    /// match mutex.try_lock() {
    ///     Ok(_guard) => { /* run the job */ }
    ///     Err(TryLockError::WouldBlock) => println!("another node runs it"),
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_lock(&self) -> Result<RedisMutexGuard<'_>, TryLockError> {
        let core = self
            .acquire(Some(Instant::now()))?
            .ok_or(TryLockError::WouldBlock)?;
        Ok(RedisMutexGuard::new(self, core))
    }

    /// Waits up to `timeout` for the lock.
    ///
    /// The deadline is kept on this process's monotonic clock, whatever wakes the wait in
    /// between. A call that gives up returns a few milliseconds after its deadline, most of
    /// it the kernel's socket timer tick (`docs/performance.md` has the figures). A lock that frees up in
    /// the last moment is still taken, so a success can come that long after the deadline.
    /// `Duration::MAX` waits forever.
    ///
    /// # Errors
    ///
    /// [`TryLockError::WouldBlock`] when the lock stayed held until the deadline;
    /// [`TryLockError::Error`] for the failures listed under [`lock`](Self::lock).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use redis_mutex::{Pool, RedisMutex};
    ///
    /// let mutex = RedisMutex::new(Pool::new("redis://127.0.0.1/")?, "report")?;
    /// if let Ok(_guard) = mutex.try_lock_for(Duration::from_millis(300)) {
    ///     // got it within 300 ms
    /// }
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn try_lock_for(&self, timeout: Duration) -> Result<RedisMutexGuard<'_>, TryLockError> {
        let Some(deadline) = Instant::now().checked_add(timeout) else {
            return Ok(self.lock()?);
        };
        let core = self
            .acquire(Some(deadline))?
            .ok_or(TryLockError::WouldBlock)?;
        Ok(RedisMutexGuard::new(self, core))
    }

    /// Like [`lock`](Self::lock), for an `Arc<RedisMutex>`: the guard owns a reference to
    /// the mutex, so it is `'static`, and can be returned from a function or sent to
    /// another thread with the lock it holds (as parking_lot's `lock_arc`).
    ///
    /// # Errors
    ///
    /// As for [`lock`](Self::lock).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use std::thread;
    /// use redis_mutex::{Pool, RedisMutex};
    ///
    /// let mutex = Arc::new(RedisMutex::new(Pool::new("redis://127.0.0.1/")?, "import")?);
    /// let guard = mutex.lock_arc()?;
    /// let worker = thread::spawn(move || {
    ///     // ... the import runs here, under the lock ...
    ///     guard.unlock()
    /// });
    /// worker.join().unwrap()?;
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn lock_arc(self: &Arc<Self>) -> Result<ArcRedisMutexGuard> {
        let core = self.acquire(None)?.ok_or(Error::Protocol {
            what: "a wait without deadline that ended",
        })?;
        Ok(ArcRedisMutexGuard::new(self.clone(), core))
    }

    /// Like [`try_lock`](Self::try_lock), for an `Arc<RedisMutex>`; see
    /// [`lock_arc`](Self::lock_arc).
    ///
    /// # Errors
    ///
    /// As for [`try_lock`](Self::try_lock).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use redis_mutex::{Pool, RedisMutex};
    ///
    /// let mutex = Arc::new(RedisMutex::new(Pool::new("redis://127.0.0.1/")?, "cron")?);
    /// if let Ok(guard) = mutex.try_lock_arc() {
    ///     std::thread::spawn(move || drop(guard)).join().unwrap();
    /// }
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn try_lock_arc(self: &Arc<Self>) -> Result<ArcRedisMutexGuard, TryLockError> {
        let core = self
            .acquire(Some(Instant::now()))?
            .ok_or(TryLockError::WouldBlock)?;
        Ok(ArcRedisMutexGuard::new(self.clone(), core))
    }

    /// Like [`try_lock_for`](Self::try_lock_for), for an `Arc<RedisMutex>`; see
    /// [`lock_arc`](Self::lock_arc).
    ///
    /// # Errors
    ///
    /// As for [`try_lock_for`](Self::try_lock_for).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use redis_mutex::{Pool, RedisMutex};
    ///
    /// let mutex = Arc::new(RedisMutex::new(Pool::new("redis://127.0.0.1/")?, "cron")?);
    /// let guard = mutex.try_lock_arc_for(Duration::from_secs(1))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_lock_arc_for(
        self: &Arc<Self>,
        timeout: Duration,
    ) -> Result<ArcRedisMutexGuard, TryLockError> {
        let Some(deadline) = Instant::now().checked_add(timeout) else {
            return Ok(self.lock_arc()?);
        };
        let core = self
            .acquire(Some(deadline))?
            .ok_or(TryLockError::WouldBlock)?;
        Ok(ArcRedisMutexGuard::new(self.clone(), core))
    }

    /// Locks, runs `f`, unlocks, and returns what `f` returned.
    ///
    /// `f` runs to its end even if the lock is lost meanwhile (nothing can stop it from
    /// outside); the loss is then reported instead of `f`'s result, so that the caller
    /// knows the work ran unprotected at some point. For work that must stop when the lock
    /// is lost, hold a guard and call [`RedisMutexGuard::ensure_held`] between its steps.
    ///
    /// # Errors
    ///
    /// As for [`lock`](Self::lock), before `f` runs. After it: [`Error::LockLost`] when
    /// the lock was found lost while `f` ran, [`Error::NotAcquired`] when it was no longer
    /// ours at the release (it ran out: use auto-renewal or a longer expiry), or the
    /// release's own error (the lock then stays until it expires); `f`'s result is dropped
    /// in each case.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::{Pool, RedisMutex};
    ///
    /// let mutex = RedisMutex::new(Pool::new("redis://127.0.0.1/")?, "migrations")?;
    /// let applied = mutex.with_lock(|| {
    ///     // run the migrations; one process of the fleet at a time
    ///     3
    /// })?;
    /// println!("{applied} migrations applied");
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn with_lock<R>(&self, f: impl FnOnce() -> R) -> Result<R> {
        let guard = self.lock()?;
        let result = f();
        guard.unlock()?;
        Ok(result)
    }

    /// Like [`with_lock`](Self::with_lock), waiting at most `timeout` for the lock; `f`
    /// does not run when the lock stayed held.
    ///
    /// # Errors
    ///
    /// [`TryLockError::WouldBlock`] when the lock stayed held until the deadline (`f` did
    /// not run); otherwise as for [`with_lock`](Self::with_lock).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use redis_mutex::{Pool, RedisMutex, TryLockError};
    ///
    /// let mutex = RedisMutex::new(Pool::new("redis://127.0.0.1/")?, "cache-rebuild")?;
    /// match mutex.try_with_lock_for(Duration::from_secs(5), || { /* rebuild */ }) {
    ///     Ok(()) => println!("rebuilt"),
    ///     Err(TryLockError::WouldBlock) => println!("someone else is rebuilding"),
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_with_lock_for<R>(
        &self,
        timeout: Duration,
        f: impl FnOnce() -> R,
    ) -> Result<R, TryLockError> {
        let guard = self.try_lock_for(timeout)?;
        let result = f();
        guard.unlock()?;
        Ok(result)
    }

    /// Whether anyone (any process, any protocol client) holds the lock now.
    ///
    /// # Errors
    ///
    /// As for [`get_owner_id`](Self::get_owner_id).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use redis_mutex::{Pool, RedisMutex};
    /// let mutex = RedisMutex::new(Pool::new("redis://127.0.0.1/")?, "deploy")?;
    /// let guard = mutex.lock()?;
    /// assert!(mutex.is_locked()?);
    /// drop(guard);
    /// assert!(!mutex.is_locked()?);
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn is_locked(&self) -> Result<bool> {
        Ok(self.get_owner_id()?.is_some())
    }

    /// The owner id of whoever holds the lock now (asked of Redis), or `None` when it is
    /// free. Not to be confused with [`owner_id`](Self::owner_id), this mutex's own id.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Timeout`], [`Error::PoolTimeout`] or
    /// [`Error::Redis`] when Redis cannot be asked; [`Error::WrongType`] when the key holds
    /// something other than a lock.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use redis_mutex::{Pool, RedisMutex};
    /// let pool = Pool::new("redis://127.0.0.1/")?;
    /// let mutex = RedisMutex::builder(pool, "deploy").owner_id("ci-runner-3").build()?;
    /// let _guard = mutex.lock()?;
    /// assert_eq!(mutex.get_owner_id()?.as_deref(), Some("ci-runner-3"));
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn get_owner_id(&self) -> Result<Option<String>> {
        let key = &self.keys().lock;
        let ran = conn::run_repeatable(&self.pool, key, self.deadline(), |c| {
            redis::cmd("GET").arg(key).query(c)
        })?;
        ran.reply(&self.name, "GET")
    }

    /// Deletes the lock whoever holds it, and wakes one waiter. An operator's tool: the
    /// holder is not told until its next renewal, extend or release fails.
    ///
    /// Returns whether there was a lock to delete.
    ///
    /// # Errors
    ///
    /// As for [`get_owner_id`](Self::get_owner_id); with [`Error::WrongType`] the key is
    /// left as it is.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use redis_mutex::{Pool, RedisMutex};
    /// // A lock left behind by a job that was killed, with no expiry:
    /// let stuck = RedisMutex::new(Pool::new("redis://127.0.0.1/")?, "migrations")?;
    /// if stuck.reset()? {
    ///     println!("a stale lock was removed");
    /// }
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn reset(&self) -> Result<bool> {
        let keys = self.keys();
        // One bound for the whole call: both requests share it.
        let deadline = self.deadline();
        // The grant to end, named by its owner id and token: a copy of the reset that comes
        // late (sent again after a timeout while the server was paused) then never deletes
        // a grant made since.
        let ran = conn::run_repeatable(&self.pool, &keys.lock, deadline, |c| {
            redis::cmd("MGET")
                .arg(&keys.lock)
                .arg(&keys.grant)
                .query::<(Option<String>, Option<String>)>(&mut **c)
        })?;
        let (owner, marker) = ran.reply(&self.name, "reset")?;
        let token = marker
            .filter(|marker| keys::marker_owner(marker) == owner.as_deref())
            .and_then(|marker| keys::marker_token(&marker));
        // And the reset itself, by an id of its own: a copy of it that comes after it,
        // late or sent again, changes nothing, even where no marker tells grants apart.
        let mut call = RESET.call();
        call.arg(millis(self.options.signal_expire))
            .arg(millis(undo_window(self.options.response_timeout)))
            .arg(owner.as_deref().unwrap_or(""))
            .arg(token.map(|t| t.to_string()).unwrap_or_default())
            .arg(keys.done(AttemptId::new().as_str()));
        call.key(&keys.lock)
            .key(&keys.signal)
            .key(&keys.grant)
            .key(&keys.released);
        let ran = conn::run_repeatable(&self.pool, &keys.lock, deadline, |c| {
            call.invoke::<Vec<i64>>(c)
        })?;
        let reset = ran.reply(&self.name, "reset")?;
        // `reset.lua`: 1 deleted, 0 none, -1 a key of another type (left alone).
        match reset[..] {
            [-1] => Err(self.wrong_type()),
            [deleted @ (0 | 1)] => {
                log::debug!("reset lock `{}`", self.name);
                Ok(deleted == 1)
            }
            _ => Err(Error::Protocol { what: "reset" }),
        }
    }

    /// Takes the lock, waiting until `deadline` (`None`: forever); `Ok(None)` when the
    /// deadline passed with the lock held elsewhere. A call that may wait first takes its
    /// turn in the process: one thread of this process at a time waits in Redis. A `try_`
    /// call with nothing to wait for makes its one attempt without a turn, as a thread of
    /// another process would.
    fn acquire(&self, deadline: Option<Instant>) -> Result<Option<Core>> {
        self.acquire_with(deadline, None)
    }

    /// [`acquire`](Self::acquire), each attempt with `extra`'s part (in the default mode;
    /// fair mode's grants are made by releases, which know nothing of it).
    fn acquire_with(
        &self,
        deadline: Option<Instant>,
        extra: Option<&dyn AttemptExtra>,
    ) -> Result<Option<Core>> {
        let turn = match deadline {
            Some(deadline) if deadline <= Instant::now() => None,
            _ => match self.local.turn(1, deadline, |_| {}) {
                Some(turn) => Some(turn),
                None => return Ok(None),
            },
        };
        let lock = self.lock_ref();
        let outcome = if self.calls.fair {
            acquire::acquire(&lock, &mut Fair::new(self), deadline)?
        } else {
            let mut plain = Plain::new(self, turn.is_some());
            plain.extra = extra;
            acquire::acquire(&lock, &mut plain, deadline)?
        };
        // The grant is noted as held before the turn goes to the next waiter of this
        // process: that waiter then naps until the grant ends instead of sending an attempt
        // bound to fail.
        let held = match outcome {
            Outcome::Granted(granted, id) => self.core(granted, id).map(Some),
            Outcome::TimedOut | Outcome::GaveWay => Ok(None),
        };
        drop(turn);
        held
    }

    /// The deadline of a request sent now: one response timeout.
    fn deadline(&self) -> Deadline {
        Deadline::after(self.options.response_timeout)
    }

    /// What the acquire driver needs of this lock.
    fn lock_ref(&self) -> Lock<'_> {
        Lock {
            pool: &self.pool,
            route: &self.keys().lock,
            name: &self.name,
            kind: if self.calls.fair {
                "lock (fair)"
            } else {
                "lock"
            },
            options: &self.options,
            labels: &self.labels,
        }
    }

    /// The error for a lock key that holds another type.
    fn wrong_type(&self) -> Error {
        Error::WrongType {
            name: self.name.to_string(),
            key: Some(self.keys().lock.clone()),
        }
    }

    /// The guard's core for a grant made for the request `id`.
    fn core(&self, granted: NewGrant, id: String) -> Result<Core> {
        let (grant, holder) = self.grant_of(self.calls.clone(), &granted, id);
        // On failure the grant is released again.
        let held = Held::granted(grant, holder, &granted, &self.options)?;
        Ok(Core::new(held, &self.local, granted.token))
    }

    /// A grant made on these `calls` (this mutex's, or a resumed grant's, under the owner id
    /// of its handle) for the request `id`, and its holder, as the lease core takes them.
    fn grant_of(&self, calls: Arc<Calls>, granted: &NewGrant, id: String) -> (MutexGrant, Holder) {
        let holder = Holder {
            name: self.name.clone(),
            owner_id: calls.owner.clone(),
            fencing_token: Some(granted.token),
            labels: self.labels.clone(),
        };
        let grant = MutexGrant {
            on: OnServer::of(&self.pool, &self.name, granted, &self.options),
            calls,
            token: granted.token,
            id,
        };
        (grant, holder)
    }
}

/// What a kind that stands on the mutex (an election) adds to each attempt of the default
/// mode: its script runs the mutex's acquire and more, with the acquire's keys and
/// arguments first, and answers as the acquire does.
pub(crate) trait AttemptExtra: Sync {
    /// The script, in place of the mutex's acquire.
    fn script(&self) -> &'static Lua;
    /// Adds its keys and arguments after the acquire's own.
    fn add(&self, call: &mut Call);
    /// Undoes its part of an attempt whose reply was lost, after the mutex's undo.
    fn undo(&self) -> Call;
}

impl RedisMutex {
    /// Like [`lock`](Self::lock) (`deadline`: `None`) or [`try_lock_for`](Self::try_lock_for),
    /// each attempt with `extra`'s part; `None` when the deadline passed.
    pub(crate) fn lock_with(
        &self,
        deadline: Option<Instant>,
        extra: &dyn AttemptExtra,
    ) -> Result<Option<RedisMutexGuard<'_>>> {
        let core = self.acquire_with(deadline, Some(extra))?;
        Ok(core.map(|core| RedisMutexGuard::new(self, core)))
    }

    /// Like [`lock_with`](Self::lock_with), for an `Arc<RedisMutex>`.
    pub(crate) fn lock_arc_with(
        self: &Arc<Self>,
        deadline: Option<Instant>,
        extra: &dyn AttemptExtra,
    ) -> Result<Option<ArcRedisMutexGuard>> {
        let core = self.acquire_with(deadline, Some(extra))?;
        Ok(core.map(|core| ArcRedisMutexGuard::new(self.clone(), core)))
    }
}

/// An acquire with python-redis-lock's protocol (and a grant marker): each attempt is a
/// `SET NX` of its own, undone by its own id when its reply is lost; nothing is queued.
struct Plain<'a> {
    mutex: &'a RedisMutex,
    /// The id of the last attempt: its undo removes its grant and no other.
    attempt: AttemptId,
    /// Right after a release of this process, a waiter it woke may be on its way: the first
    /// attempt lets it go first rather than win a race that sends it to the back of the
    /// queue. Past half the signal's life an absent signal may have expired instead, so be
    /// plain again. Never after a wake-up: the signal that woke us is ours, popped.
    polite: bool,
    /// A grant of this process stands until then at least: the first attempt would fail.
    /// Woken by its release or a reset, or once it runs out, the waiter tries then, as a
    /// waiter of any other process would.
    first_nap: Option<Duration>,
    /// What a kind that stands on the mutex adds to each attempt (an election's value).
    extra: Option<&'a dyn AttemptExtra>,
}

impl<'a> Plain<'a> {
    /// An acquire of `mutex`; `waiting`: by the thread whose turn it is to wait in Redis.
    fn new(mutex: &'a RedisMutex, waiting: bool) -> Plain<'a> {
        let first_nap = waiting
            .then(|| mutex.local.held_for())
            .flatten()
            .map(|held| held.map_or(acquire::MAX_WAIT, |left| left + clock_margin(left, 0.01)));
        let polite = first_nap.is_none()
            && mutex
                .local
                .take_released_at()
                .is_some_and(|at| at.elapsed() < mutex.options.signal_expire / 2);
        Plain {
            mutex,
            attempt: AttemptId::new(),
            polite,
            first_nap,
            extra: None,
        }
    }
}

impl Request for Plain<'_> {
    type Reply = scripts::Acquire;
    /// The id of the attempt that made the grant: its release notes it as done.
    type Extra = String;
    const QUEUES: bool = false;

    fn signals(&self) -> Vec<String> {
        vec![self.mutex.keys().signal.clone()]
    }

    /// Each attempt under an id of its own; only the first may be polite (sent again after
    /// a closed connection, our release's signal may be gone with a restart rather than
    /// taken by a waiter).
    fn attempt(&mut self, _queue: bool) -> Call {
        self.attempt = AttemptId::new();
        let polite = std::mem::take(&mut self.polite);
        let mut call = self.mutex.calls.acquire(self.attempt.as_str(), polite);
        if let Some(extra) = self.extra {
            call = call.with_script(extra.script());
            extra.add(&mut call);
        }
        call
    }

    fn read(&mut self, reply: scripts::Acquire) -> Result<Found<String>> {
        Ok(match reply {
            scripts::Acquire::Granted { token } => Found::Granted {
                token,
                extra: self.attempt.as_str().to_owned(),
            },
            scripts::Acquire::Held { left } => Found::Blocked(acquire::until_expiry(left)),
            // A woken waiter's acquire is a round trip away; if it died on the way, half
            // the signal's life bounds how long the lock stays free.
            scripts::Acquire::LeftToWaiter => Found::Blocked(self.mutex.options.signal_expire / 2),
            scripts::Acquire::WrongType { .. } => return Err(self.mutex.wrong_type()),
            scripts::Acquire::Undone => return Err(Error::Protocol { what: "acquire" }),
        })
    }

    /// Releases the attempt's grant, only if the grant marker still names the attempt:
    /// never a grant made since.
    fn undo(&self) -> Vec<Call> {
        let mut undo = vec![self.mutex.calls.undo(self.attempt.as_str())];
        undo.extend(self.extra.map(|extra| extra.undo()));
        undo
    }

    /// Every attempt has a new id already.
    fn undone(&mut self) {}

    fn withdraw(&self) -> Option<Call> {
        None
    }

    fn first_nap(&self) -> Option<Duration> {
        self.first_nap
    }
}
