//! [`RedisMutex`], its builder, and [`RedisMutexGuard`].

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

use crate::conn::{self, Conn};
use crate::lease::{Lease, millis};
use crate::options::{LockOptions, LockOptionsBuilder};
use crate::renewal;
use crate::scripts::{self, ACQUIRE, RESET};
use crate::{Error, Pool, Result, TryLockError};

mod builder;
mod guard;

pub use builder::RedisMutexBuilder;
pub use guard::RedisMutexGuard;

/// The counter every grant increments for its fencing token. Not a `lock:*` key, so
/// `reset_all` leaves it alone.
pub(crate) const FENCING_COUNTER_KEY: &str = "lock-fencing-counter";

/// Outcomes of `acquire.lua`.
const GRANTED: i64 = 1;
const LEFT_TO_WOKEN_WAITER: i64 = 2;
const WRONG_TYPE: i64 = -1;

/// The longest a waiter sleeps in `BLPOP` before trying again. Only a signal that was
/// lost (a waiter that died holding it) ever makes a waiter wait this long on a free lock.
const MAX_WAIT: Duration = Duration::from_millis(1000);

/// A distributed mutex held in Redis, compatible with python-redis-lock.
///
/// `lock()` blocks until the lock is ours, `try_lock()` makes one attempt, and
/// `try_lock_for()` waits up to a deadline; each gives a [`RedisMutexGuard`] that releases the
/// lock when dropped. Threads of one process that share a `RedisMutex` (through an [`Arc`])
/// queue locally first, so however many of them wait, at most one of them talks to Redis
/// about this lock at a time.
///
/// Waiters do not poll: they sleep in `BLPOP` on the lock's signal list and a release wakes
/// one of them. See the [crate docs](crate) for the protocol and its guarantees.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use redis_mutex::{Pool, RedisMutex};
///
/// let client = redis::Client::open("redis://127.0.0.1/")?;
/// let pool = Pool::builder().test_on_check_out(false).build(client)?;
/// let mutex = RedisMutex::builder(pool, "nightly-report")
///     .expire(Duration::from_secs(60))
///     .auto_renewal(true)
///     .build()?;
/// let guard = mutex.lock()?;
/// // ... only one process in the fleet runs this at a time ...
/// guard.unlock()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RedisMutex {
    pool: Pool,
    name: String,
    lock_key: String,
    signal_key: String,
    options: LockOptions,
    /// Set when `new` was given a name `build` would refuse: every call reports it.
    invalid_name: Option<&'static str>,
    /// The local queue: held for as long as a guard of this mutex lives.
    local: Mutex<LocalState>,
}

impl fmt::Debug for RedisMutex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisMutex")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// What the threads of this process that share a mutex pass on to each other.
#[derive(Debug, Default)]
struct LocalState {
    /// When this mutex last released the lock in Redis, if it did so successfully.
    released_at: Option<Instant>,
}

/// Why `name` cannot name a lock, if it cannot.
fn check_name(name: &str) -> Option<&'static str> {
    name.is_empty()
        .then_some("the lock name is empty; give every lock a non-empty name")
}

impl RedisMutex {
    /// A mutex named `name` on `pool`, without expiry and with a random owner id.
    ///
    /// Any string is a name (spaces, braces, newlines, non-ASCII); the keys are
    /// `lock:<name>` and `lock-signal:<name>`. An empty name is refused by
    /// [`builder`](Self::builder)'s `build()`; given here, every call returns that error.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::{Pool, RedisMutex};
    ///
    /// let pool = Pool::builder()
    ///     .test_on_check_out(false)
    ///     .build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let mutex = RedisMutex::new(pool, "migrations");
    /// let _guard = mutex.lock()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(pool: Pool, name: impl Into<String>) -> RedisMutex {
        let options = LockOptions::default();
        RedisMutex::with_options(pool, name.into(), options)
    }

    /// A builder for a mutex named `name` on `pool`, to set its options.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use redis_mutex::{Pool, RedisMutex};
    ///
    /// # let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let mutex = RedisMutex::builder(pool, "cache-rebuild")
    ///     .expire(Duration::from_secs(30))
    ///     .owner_id(format!("worker-{}", std::process::id()))
    ///     .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder(pool: Pool, name: impl Into<String>) -> RedisMutexBuilder {
        RedisMutexBuilder {
            pool,
            name: name.into(),
            options: LockOptionsBuilder::default(),
        }
    }

    fn with_options(pool: Pool, name: String, options: LockOptions) -> RedisMutex {
        RedisMutex {
            pool,
            lock_key: format!("lock:{name}"),
            signal_key: format!("lock-signal:{name}"),
            invalid_name: check_name(&name),
            name,
            options,
            local: Mutex::new(LocalState::default()),
        }
    }

    /// The lock's name, as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The id this mutex stores in Redis while it holds the lock.
    pub fn owner_id(&self) -> &str {
        &self.options.owner_id
    }

    /// The expiry set with [`RedisMutexBuilder::expire`], if any.
    pub fn expire(&self) -> Option<Duration> {
        self.options.expire
    }

    /// Blocks until the lock is ours, then returns a guard that releases it when dropped.
    ///
    /// Threads of this process that share the mutex wait their turn locally, first come
    /// first served; the thread at the head of that queue waits in Redis, woken by the
    /// release of whoever holds it, or by the holder's expiry.
    ///
    /// Locking again from the thread that holds the guard waits forever, as with
    /// [`std::sync::Mutex`].
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] or [`Error::Pool`] when Redis cannot be reached or answers with an
    /// error, [`Error::WrongType`] when the lock's key holds something other than a lock,
    /// and [`Error::RenewalThread`] with auto-renewal. The lock is not held then.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use std::thread;
    /// use redis_mutex::{Pool, RedisMutex};
    ///
    /// # let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let mutex = Arc::new(RedisMutex::new(pool, "counter"));
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
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock(&self) -> Result<RedisMutexGuard<'_>> {
        self.check_name()?;
        let local = self.local.lock();
        // Without a deadline, acquire waits until it succeeds: `None` cannot come back.
        self.acquire(local, None)?
            .ok_or_else(|| unexpected_reply("acquire"))
    }

    /// Makes one attempt at the lock, without waiting.
    ///
    /// # Errors
    ///
    /// [`TryLockError::WouldBlock`] when the lock is held, by another process or by
    /// another thread of this one; [`TryLockError::Error`] for the failures listed under
    /// [`lock`](Self::lock).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::{Pool, RedisMutex, TryLockError};
    ///
    /// # let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let mutex = RedisMutex::new(pool, "cron:cleanup");
    /// match mutex.try_lock() {
    ///     Ok(_guard) => { /* run the job */ }
    ///     Err(TryLockError::WouldBlock) => println!("another node runs it"),
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_lock(&self) -> Result<RedisMutexGuard<'_>, TryLockError> {
        self.check_name()?;
        let local = self.local.try_lock().ok_or(TryLockError::WouldBlock)?;
        self.acquire(local, Some(Instant::now()))?
            .ok_or(TryLockError::WouldBlock)
    }

    /// Waits up to `timeout` for the lock.
    ///
    /// The deadline is kept to the millisecond on this process's monotonic clock, whatever
    /// wakes the wait in between: a call with 300 ms returns after 300 ms plus at most a
    /// few round trips. A lock that frees up in the last moment is still taken, so a
    /// success can come those few round trips after the deadline. `Duration::MAX` waits
    /// forever.
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
    /// # let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let mutex = RedisMutex::new(pool, "report");
    /// if let Ok(_guard) = mutex.try_lock_for(Duration::from_millis(300)) {
    ///     // got it within 300 ms
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_lock_for(&self, timeout: Duration) -> Result<RedisMutexGuard<'_>, TryLockError> {
        self.check_name()?;
        let Some(deadline) = Instant::now().checked_add(timeout) else {
            return Ok(self.lock()?);
        };
        let local = self
            .local
            .try_lock_until(deadline)
            .ok_or(TryLockError::WouldBlock)?;
        self.acquire(local, Some(deadline))?
            .ok_or(TryLockError::WouldBlock)
    }

    /// Whether anyone (any process, any protocol client) holds the lock now.
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] or [`Error::Pool`] when Redis cannot be asked.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use redis_mutex::{Pool, RedisMutex};
    /// # let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let mutex = RedisMutex::new(pool, "deploy");
    /// let guard = mutex.lock()?;
    /// assert!(mutex.is_locked()?);
    /// drop(guard);
    /// assert!(!mutex.is_locked()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_locked(&self) -> Result<bool> {
        Ok(self.get_owner_id()?.is_some())
    }

    /// The owner id of whoever holds the lock now, or `None` when it is free.
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] or [`Error::Pool`] when Redis cannot be asked, and
    /// [`Error::Redis`] with `WRONGTYPE` when the key holds something other than a lock.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use redis_mutex::{Pool, RedisMutex};
    /// # let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let mutex = RedisMutex::builder(pool, "deploy").owner_id("ci-runner-3").build()?;
    /// let _guard = mutex.lock()?;
    /// assert_eq!(mutex.get_owner_id()?.as_deref(), Some("ci-runner-3"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_owner_id(&self) -> Result<Option<String>> {
        self.check_name()?;
        let mut conn = self.checkout()?;
        let owner: Option<String> = redis::cmd("GET").arg(&self.lock_key).query(&mut *conn)?;
        Ok(owner)
    }

    /// Deletes the lock whoever holds it, and wakes one waiter. An operator's tool: the
    /// holder is not told until its next renewal, extend or release fails.
    ///
    /// Returns whether there was a lock to delete.
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] or [`Error::Pool`] when Redis cannot be reached;
    /// [`Error::WrongType`] when the key holds something other than a lock (it is left as
    /// it is).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use redis_mutex::{Pool, RedisMutex};
    /// # let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// // A lock left behind by a job that was killed, with no expiry:
    /// let stuck = RedisMutex::new(pool, "migrations");
    /// if stuck.reset()? {
    ///     println!("a stale lock was removed");
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reset(&self) -> Result<bool> {
        self.check_name()?;
        let mut conn = self.checkout()?;
        let deleted: Vec<i64> = RESET
            .arg(millis(self.options.signal_expire))
            .key(&self.lock_key)
            .key(&self.signal_key)
            .invoke(&mut *conn)?;
        match deleted.first() {
            Some(&-1) => Err(Error::WrongType {
                name: self.name.clone(),
            }),
            Some(&n) => {
                log::debug!("reset lock `{}`", self.name);
                Ok(n > 0)
            }
            None => Err(unexpected_reply("reset")),
        }
    }

    fn check_name(&self) -> Result<()> {
        match self.invalid_name {
            Some(reason) => Err(Error::invalid("name", reason)),
            None => Ok(()),
        }
    }

    fn checkout(&self) -> Result<Conn> {
        conn::checkout(
            &self.pool,
            self.pool.connection_timeout(),
            self.options.response_timeout,
        )
    }

    /// Takes the lock in Redis for the thread holding `local`, waiting until `deadline`
    /// (`None`: forever). `Ok(None)` when the deadline passed with the lock held elsewhere.
    fn acquire<'a>(
        &'a self,
        mut local: MutexGuard<'a, LocalState>,
        deadline: Option<Instant>,
    ) -> Result<Option<RedisMutexGuard<'a>>> {
        let mut conn =
            conn::checkout_for_lock(&self.pool, deadline, self.options.response_timeout)?;
        let expire_ms = self.options.expire.map_or(0, millis);
        // Right after our own release, a waiter it woke may be on its way: let it go first
        // rather than win a race that sends it to the back of the queue. Past half the
        // signal's life an absent signal may have expired instead, so be plain again.
        let mut polite = local
            .released_at
            .take()
            .is_some_and(|at| at.elapsed() < self.options.signal_expire / 2);
        loop {
            let sent_at = Instant::now();
            let (outcome, detail): (i64, i64) = ACQUIRE
                .key(&self.lock_key)
                .key(&self.signal_key)
                .key(FENCING_COUNTER_KEY)
                .arg(&self.options.owner_id)
                .arg(expire_ms)
                .arg(if polite { "1" } else { "0" })
                .invoke(&mut *conn)
                .inspect_err(|e| self.undo_lost_acquire(&mut conn, e))?;
            let mut wait = MAX_WAIT;
            match outcome {
                GRANTED => {
                    log::debug!("acquired lock `{}`", self.name);
                    let token = u64::try_from(detail).map_err(|_| unexpected_reply("acquire"))?;
                    return self.guard(local, &mut conn, sent_at, token).map(Some);
                }
                WRONG_TYPE => {
                    return Err(Error::WrongType {
                        name: self.name.clone(),
                    });
                }
                LEFT_TO_WOKEN_WAITER => {
                    // Its acquire is a round trip away; if it died on the way, this bounds
                    // how long the lock stays free.
                    wait = wait.min(self.options.signal_expire / 2);
                }
                _ => {
                    if let Ok(left) = u64::try_from(detail) {
                        // Wake just after the holder's lease runs out, in case it crashed.
                        wait = wait.min(Duration::from_millis(left + 1));
                    }
                }
            }
            polite = false;
            if let Some(deadline) = deadline {
                let now = Instant::now();
                if now >= deadline {
                    return Ok(None);
                }
                wait = wait.min(deadline - now);
            }
            log::trace!("lock `{}` is held; waiting up to {wait:?}", self.name);
            conn = conn::wait_for_signal(
                conn,
                &self.pool,
                &[&self.signal_key],
                wait,
                deadline,
                self.options.response_timeout,
            )?;
        }
    }

    /// After an acquire whose reply never came (a timeout, a broken connection), Redis may
    /// have granted it anyway, or may still: a lock held by nobody, forever without expiry.
    /// Releases it in that case, right behind the acquire (see
    /// [`conn::undo_after_lost_reply`]), as a plain `EVAL`.
    fn undo_lost_acquire(&self, conn: &mut Conn, error: &redis::RedisError) {
        if !conn::reply_lost(error) {
            return;
        }
        let mut release =
            scripts::eval(scripts::RELEASE_SOURCE, &[&self.lock_key, &self.signal_key]);
        release
            .arg(&self.options.owner_id)
            .arg(millis(self.options.signal_expire));
        if let Err(e) =
            conn::undo_after_lost_reply(conn, &self.pool, self.options.response_timeout, &[release])
        {
            log::warn!(
                "lock `{}`: an acquire's reply was lost ({error}) and undoing it failed ({e}); \
                 if Redis granted it, the lock is held by nobody until it expires",
                self.name
            );
        }
    }

    fn guard<'a>(
        &'a self,
        local: MutexGuard<'a, LocalState>,
        conn: &mut Conn,
        sent_at: Instant,
        fencing_token: u64,
    ) -> Result<RedisMutexGuard<'a>> {
        let lease = Arc::new(Lease::new(
            &self.name,
            sent_at,
            self.options.expire,
            self.options.on_lost.clone(),
        ));
        let mut guard = RedisMutexGuard {
            mutex: self,
            local: Some(local),
            lease,
            renewal: None,
            fencing_token,
        };
        if let (true, Some(ttl)) = (self.options.auto_renewal, self.options.expire) {
            // On failure the guard is dropped here, which releases the lock again.
            guard.renewal = Some(renewal::register(
                guard.lease.clone(),
                renewal::Target::Key(renewal::KeyTarget {
                    pool: self.pool.clone(),
                    group: conn::pool_tag(conn),
                    key: self.lock_key.clone(),
                    owner: self.options.owner_id.clone(),
                    ttl,
                    response_timeout: self.options.response_timeout,
                }),
                sent_at,
            )?);
        }
        Ok(guard)
    }
}

/// The error for a script reply of the wrong shape (a server that is not Redis, or a
/// script of another version under our script's hash).
pub(crate) fn unexpected_reply(script: &'static str) -> Error {
    Error::Redis(redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected reply from a lock script",
        script.to_owned(),
    )))
}
