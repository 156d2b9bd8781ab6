//! [`RedisRwLock`] and its waiting loop. The builder is in `builder.rs`, the guards in
//! `guard.rs`, the lease behind each guard in `held.rs`, paths and keys in `keys.rs`; the
//! protocol in `docs/rwlock.md`.

mod builder;
mod guard;
mod held;
mod keys;

use std::fmt;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::conn::{self, Conn};
use crate::lease::millis;
use crate::mutex::{FENCING_COUNTER_KEY, unexpected_reply};
use crate::options::{LockOptions, LockOptionsBuilder};
use crate::scripts::{self, RWLOCK_ACQUIRE, RWLOCK_RELEASE};
use crate::{Error, Pool, Result, TryLockError};

pub use builder::RedisRwLockBuilder;
pub use guard::{RedisRwLockReadGuard, RedisRwLockWriteGuard};
use keys::{Keys, Mode};

/// Outcomes of `rwlock_acquire.lua`.
const GRANTED: i64 = 1;
const BLOCKED: i64 = 0;
const WRONG_TYPE: i64 = -1;

/// The longest a waiter sleeps in `BLPOP` before trying again: what a lost wake-up costs.
const MAX_WAIT: Duration = Duration::from_millis(1000);

/// How long a waiter's registration lasts unless the waiter renews it, which it does with
/// every attempt (at most [`MAX_WAIT`] apart). A waiting writer that crashed holds new
/// readers back for at most this long.
const WAITING_TTL: Duration = Duration::from_millis(2000);

/// The default separator of path segments.
const DEFAULT_SEPARATOR: char = '/';

/// A distributed read-write lock on a path in a hierarchy, held in Redis, that feels like
/// [`std::sync::RwLock`]: many readers at once, or one writer.
///
/// Paths are segments joined by a separator (`/` unless
/// [set](RedisRwLockBuilder::separator)): `a/b/c` has the ancestors `a` and `a/b`, and
/// `a/b/c/d` is one of its descendants. A lock covers its path's whole subtree and stands
/// in the way of its ancestors:
///
/// - a **write** lock on a path excludes every lock, read or write, on the path, on its
///   ancestors and on its descendants;
/// - a **read** lock on a path excludes writers on the path, on its ancestors and on its
///   descendants; readers anywhere coexist.
///
/// Writers do not starve: once a writer waits, new readers of the paths it conflicts with
/// wait behind it, so a steady stream of readers cannot keep it out.
///
/// [`read`](Self::read) and [`write`](Self::write) block, the `try_` forms don't or wait up
/// to a timeout; each gives a guard that releases the lock when dropped. Waiters sleep in
/// `BLPOP` and are woken by the releases that concern them; every acquire and release is
/// one Lua script. Holders' entries expire with the [expiry](RedisRwLockBuilder::expire),
/// so a crashed holder stops blocking others once its lease runs out. The keys, scripts
/// and waking are described in `docs/rwlock.md`.
///
/// # Threads of one process
///
/// Threads sharing a `RedisRwLock` (through an [`Arc`](std::sync::Arc)) also exclude each
/// other locally, through a [`parking_lot::RwLock`]: local readers share, a local writer
/// waits for them, and a waiting local writer keeps new local readers out. Each read guard
/// is its own lease in Redis. Readers that have to wait in Redis do so one at a time, so
/// however many local threads wait, one connection blocks in `BLPOP`.
///
/// # Differences from `std::sync::RwLock`
///
/// The same as for [`RedisMutex`](crate::RedisMutex): acquiring can fail, a held lock can
/// be lost (check [`ensure_held`](RedisRwLockWriteGuard::ensure_held)), there is no
/// poisoning and no data inside, and guards cannot be sent to other threads. Taking a read
/// lock again on a thread that holds one can deadlock once a writer waits, as std warns;
/// with paths, so can waiting for a read lock on `a/c` while holding one on `a/b`, once a
/// writer waits for `a`.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use redis_mutex::{Pool, RedisRwLock};
///
/// let client = redis::Client::open("redis://127.0.0.1/")?;
/// let pool = Pool::builder().test_on_check_out(false).build(client)?;
/// let tenant = RedisRwLock::builder(pool.clone(), "tenants/42")
///     .expire(Duration::from_secs(30))
///     .auto_renewal(true)
///     .build()?;
/// let whole_tree = RedisRwLock::new(pool, "tenants");
///
/// let reading = tenant.read()?; // other readers of tenants/42 may join
/// assert!(whole_tree.try_write().is_err()); // a write lock on an ancestor must wait
/// drop(reading);
/// let writing = whole_tree.write()?; // excludes every lock under tenants/
/// println!("fencing token {}", writing.fencing_token());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RedisRwLock {
    pool: Pool,
    path: String,
    separator: char,
    keys: Keys,
    options: LockOptions,
    /// Set when `new` was given a path `build` would refuse: every call reports it.
    invalid_path: Option<String>,
    /// The local lock: held, shared or exclusive, for as long as a guard lives.
    local: RwLock<()>,
    /// Local readers wait in Redis one at a time.
    read_turn: Mutex<()>,
}

impl fmt::Debug for RedisRwLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRwLock")
            .field("path", &self.path)
            .field("separator", &self.separator)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl RedisRwLock {
    /// A read-write lock on `path` (segments separated by `/`) on `pool`, without expiry
    /// and with a random owner id.
    ///
    /// A path [`builder`](Self::builder)'s `build()` would refuse (empty, or with an empty
    /// segment) is reported by every call instead.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::{Pool, RedisRwLock};
    ///
    /// let pool = Pool::builder()
    ///     .test_on_check_out(false)
    ///     .build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let config = RedisRwLock::new(pool, "config/billing");
    /// let _reading = config.read()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(pool: Pool, path: impl Into<String>) -> RedisRwLock {
        let options = LockOptions::default();
        RedisRwLock::with_options(pool, path.into(), DEFAULT_SEPARATOR, options)
    }

    /// A builder for a read-write lock on `path` on `pool`, to set its options.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use redis_mutex::{Pool, RedisRwLock};
    ///
    /// # let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let lock = RedisRwLock::builder(pool, "eu.shop.orders")
    ///     .separator('.')
    ///     .expire(Duration::from_secs(30))
    ///     .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder(pool: Pool, path: impl Into<String>) -> RedisRwLockBuilder {
        RedisRwLockBuilder {
            pool,
            path: path.into(),
            separator: DEFAULT_SEPARATOR,
            options: LockOptionsBuilder::default(),
        }
    }

    fn with_options(
        pool: Pool,
        path: String,
        separator: char,
        options: LockOptions,
    ) -> RedisRwLock {
        let invalid_path = keys::check_path(&path, separator);
        let keys = match invalid_path {
            None => Keys::new(&path, separator),
            Some(_) => Keys::default(),
        };
        RedisRwLock {
            pool,
            path,
            separator,
            keys,
            options,
            invalid_path,
            local: RwLock::new(()),
            read_turn: Mutex::new(()),
        }
    }

    /// The lock's path, as given.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The separator of the path's segments.
    pub fn separator(&self) -> char {
        self.separator
    }

    /// The id this lock's leases carry in Redis (each as `<owner_id>#<16 hex digits>`).
    pub fn owner_id(&self) -> &str {
        &self.options.owner_id
    }

    /// The expiry set with [`RedisRwLockBuilder::expire`], if any.
    pub fn expire(&self) -> Option<Duration> {
        self.options.expire
    }

    /// Blocks until a read lock on the path is ours, then returns a guard that releases it
    /// when dropped.
    ///
    /// Waits while a writer holds or waits for the path, one of its ancestors or one of
    /// its descendants, woken by their releases (or by their expiry).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] for a path `new` was given and `build` would refuse;
    /// [`Error::Redis`] or [`Error::Pool`] when Redis cannot be reached or answers with an
    /// error (also when a key of the lock holds another type); [`Error::RenewalThread`]
    /// with auto-renewal. The lock is not held then.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use std::thread;
    /// use redis_mutex::{Pool, RedisRwLock};
    ///
    /// # let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let catalog = Arc::new(RedisRwLock::new(pool, "catalog"));
    /// let readers: Vec<_> = (0..4)
    ///     .map(|_| {
    ///         let catalog = catalog.clone();
    ///         thread::spawn(move || -> redis_mutex::Result<()> {
    ///             let _reading = catalog.read()?; // all four read at once
    ///             Ok(())
    ///         })
    ///     })
    ///     .collect();
    /// for reader in readers {
    ///     reader.join().unwrap()?;
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read(&self) -> Result<RedisRwLockReadGuard<'_>> {
        self.check_path()?;
        let local = self.local.read();
        let turn = self.read_turn.lock();
        let grant = self.acquire(Mode::Read, None)?;
        drop(turn);
        // Without a deadline, acquire waits until it succeeds: `None` cannot come back.
        let grant = grant.ok_or_else(|| unexpected_reply("acquire"))?;
        RedisRwLockReadGuard::new(self, local, grant)
    }

    /// Blocks until the write lock on the path is ours, then returns a guard that releases
    /// it when dropped.
    ///
    /// Waits while anyone holds the path, one of its ancestors or one of its descendants;
    /// while it waits, new readers of those paths wait behind it.
    ///
    /// # Errors
    ///
    /// As for [`read`](Self::read).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::{Pool, RedisRwLock};
    ///
    /// # let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let lock = RedisRwLock::new(pool, "catalog/books");
    /// let guard = lock.write()?;
    /// // nobody reads or writes catalog, catalog/books or anything below it now
    /// guard.unlock()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write(&self) -> Result<RedisRwLockWriteGuard<'_>> {
        self.check_path()?;
        let local = self.local.write();
        // Without a deadline, acquire waits until it succeeds: `None` cannot come back.
        let grant = self
            .acquire(Mode::Write, None)?
            .ok_or_else(|| unexpected_reply("acquire"))?;
        RedisRwLockWriteGuard::new(self, local, grant)
    }

    /// Makes one attempt at a read lock, without waiting.
    ///
    /// # Errors
    ///
    /// [`TryLockError::WouldBlock`] when a writer holds or waits for a conflicting path, or
    /// a thread of this process writes through this lock; [`TryLockError::Error`] for the
    /// failures listed under [`read`](Self::read).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::{Pool, RedisRwLock, TryLockError};
    ///
    /// # let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let lock = RedisRwLock::new(pool, "reports/2024");
    /// match lock.try_read() {
    ///     Ok(_guard) => { /* read the reports */ }
    ///     Err(TryLockError::WouldBlock) => println!("being rewritten; try later"),
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_read(&self) -> Result<RedisRwLockReadGuard<'_>, TryLockError> {
        self.check_path()?;
        let local = self.local.try_read().ok_or(TryLockError::WouldBlock)?;
        // One attempt needs no turn: it does not wait in Redis.
        let grant = self
            .acquire(Mode::Read, Some(Instant::now()))?
            .ok_or(TryLockError::WouldBlock)?;
        Ok(RedisRwLockReadGuard::new(self, local, grant)?)
    }

    /// Makes one attempt at the write lock, without waiting (and without holding readers
    /// back).
    ///
    /// # Errors
    ///
    /// [`TryLockError::WouldBlock`] when anyone holds a conflicting path, or a thread of
    /// this process holds this lock; [`TryLockError::Error`] for the failures listed under
    /// [`read`](Self::read).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::{Pool, RedisRwLock};
    ///
    /// # let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let lock = RedisRwLock::new(pool, "cache");
    /// if let Ok(_guard) = lock.try_write() {
    ///     // rebuild the cache; nobody reads it meanwhile
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_write(&self) -> Result<RedisRwLockWriteGuard<'_>, TryLockError> {
        self.check_path()?;
        let local = self.local.try_write().ok_or(TryLockError::WouldBlock)?;
        let grant = self
            .acquire(Mode::Write, Some(Instant::now()))?
            .ok_or(TryLockError::WouldBlock)?;
        Ok(RedisRwLockWriteGuard::new(self, local, grant)?)
    }

    /// Waits up to `timeout` for a read lock.
    ///
    /// The deadline is kept on this process's monotonic clock, as for
    /// [`RedisMutex::try_lock_for`](crate::RedisMutex::try_lock_for); `Duration::MAX`
    /// waits forever.
    ///
    /// # Errors
    ///
    /// [`TryLockError::WouldBlock`] when the path stayed blocked until the deadline;
    /// [`TryLockError::Error`] for the failures listed under [`read`](Self::read).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use redis_mutex::{Pool, RedisRwLock};
    ///
    /// # let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let lock = RedisRwLock::new(pool, "prices");
    /// if let Ok(_guard) = lock.try_read_for(Duration::from_millis(300)) {
    ///     // read within 300 ms
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_read_for(
        &self,
        timeout: Duration,
    ) -> Result<RedisRwLockReadGuard<'_>, TryLockError> {
        self.check_path()?;
        let Some(deadline) = Instant::now().checked_add(timeout) else {
            return Ok(self.read()?);
        };
        let local = self
            .local
            .try_read_until(deadline)
            .ok_or(TryLockError::WouldBlock)?;
        let turn = self
            .read_turn
            .try_lock_until(deadline)
            .ok_or(TryLockError::WouldBlock)?;
        let grant = self.acquire(Mode::Read, Some(deadline))?;
        drop(turn);
        let grant = grant.ok_or(TryLockError::WouldBlock)?;
        Ok(RedisRwLockReadGuard::new(self, local, grant)?)
    }

    /// Waits up to `timeout` for the write lock. While it waits, new readers of
    /// conflicting paths wait behind it; when it gives up, they are woken.
    ///
    /// The deadline is kept on this process's monotonic clock, as for
    /// [`RedisMutex::try_lock_for`](crate::RedisMutex::try_lock_for); `Duration::MAX`
    /// waits forever.
    ///
    /// # Errors
    ///
    /// [`TryLockError::WouldBlock`] when the path stayed blocked until the deadline;
    /// [`TryLockError::Error`] for the failures listed under [`read`](Self::read).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use redis_mutex::{Pool, RedisRwLock};
    ///
    /// # let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
    /// let lock = RedisRwLock::new(pool, "prices");
    /// match lock.try_write_for(Duration::from_secs(2)) {
    ///     Ok(guard) => println!("writing with token {}", guard.fencing_token()),
    ///     Err(e) if e.is_would_block() => println!("still read after 2 s"),
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_write_for(
        &self,
        timeout: Duration,
    ) -> Result<RedisRwLockWriteGuard<'_>, TryLockError> {
        self.check_path()?;
        let Some(deadline) = Instant::now().checked_add(timeout) else {
            return Ok(self.write()?);
        };
        let local = self
            .local
            .try_write_until(deadline)
            .ok_or(TryLockError::WouldBlock)?;
        let grant = self
            .acquire(Mode::Write, Some(deadline))?
            .ok_or(TryLockError::WouldBlock)?;
        Ok(RedisRwLockWriteGuard::new(self, local, grant)?)
    }

    fn check_path(&self) -> Result<()> {
        match &self.invalid_path {
            Some(reason) => Err(Error::invalid("path", reason.clone())),
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

    fn wrong_type(&self, index: i64) -> Error {
        let key = usize::try_from(index - 1)
            .ok()
            .and_then(|i| self.keys.all().get(i))
            .map_or("?", String::as_str);
        Error::Redis(redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "a key of a read-write lock holds another type than a sorted set; delete it or use another path",
            format!("path `{}`, key `{key}`", self.path),
        )))
    }

    /// Takes a lock of `mode` in Redis, waiting until `deadline` (`None`: forever).
    /// `Ok(None)` when the deadline passed with the path blocked.
    fn acquire(&self, mode: Mode, deadline: Option<Instant>) -> Result<Option<Grant>> {
        let mut conn =
            conn::checkout_for_lock(&self.pool, deadline, self.options.response_timeout)?;
        let lease_id = format!("{}#{:016x}", self.options.owner_id, rand::random::<u64>());
        let expire_ms = self.options.expire.map_or(0, millis);
        let wake_lists = self.keys.wake_lists(mode);
        let wake_lists: Vec<&str> = wake_lists.iter().map(String::as_str).collect();
        let mut registered = false;
        loop {
            let sent_at = Instant::now();
            // Only a caller that will wait holds writers' places (or counts for wake-ups).
            let will_wait = deadline.is_none_or(|deadline| sent_at < deadline);
            let (outcome, detail): (i64, i64) = RWLOCK_ACQUIRE
                .prepare_invoke()
                .key(self.keys.all())
                .key(FENCING_COUNTER_KEY)
                .arg(mode.held())
                .arg(&lease_id)
                .arg(expire_ms)
                .arg(if will_wait { millis(WAITING_TTL) } else { 0 })
                .invoke(&mut *conn)
                .inspect_err(|e| self.undo_lost_acquire(&mut conn, mode, &lease_id, e))?;
            let mut wait = MAX_WAIT;
            match outcome {
                GRANTED => {
                    log::debug!("acquired {} lock `{}`", mode.name(), self.path);
                    let token = u64::try_from(detail).map_err(|_| unexpected_reply("acquire"))?;
                    return Ok(Some(Grant {
                        mode,
                        lease_id,
                        sent_at,
                        token,
                    }));
                }
                BLOCKED => {
                    registered |= will_wait;
                    if let Ok(left) = u64::try_from(detail) {
                        // Wake just after the earliest blocker's lease runs out, in case it
                        // crashed.
                        wait = wait.min(Duration::from_millis(left.saturating_add(1)));
                    }
                }
                WRONG_TYPE => return Err(self.wrong_type(detail)),
                _ => return Err(unexpected_reply("acquire")),
            }
            if let Some(deadline) = deadline {
                let now = Instant::now();
                if now >= deadline {
                    if registered {
                        self.cancel_wait(&mut conn, mode, &lease_id);
                    }
                    return Ok(None);
                }
                wait = wait.min(deadline - now);
            }
            log::trace!(
                "{} lock `{}` is blocked; waiting up to {wait:?}",
                mode.name(),
                self.path
            );
            conn = conn::wait_for_signal(
                conn,
                &self.pool,
                &wake_lists,
                wait,
                deadline,
                self.options.response_timeout,
            )?;
        }
    }

    /// Withdraws a waiter's registration, so that a writer that gave up stops holding
    /// readers back at once. Best effort: a registration left behind expires by itself.
    fn cancel_wait(&self, conn: &mut Conn, mode: Mode, lease_id: &str) {
        if let Err(e) = self.release_entry(conn, mode.waiting(), lease_id) {
            log::debug!(
                "withdrawing a {} waiter of `{}` failed; it expires within {WAITING_TTL:?}: {e}",
                mode.name(),
                self.path
            );
        }
    }

    /// After an acquire whose reply never came (a timeout, a broken connection), Redis may
    /// have granted it or registered us anyway, or may still: an entry held by nobody,
    /// forever without expiry. Removes both, right behind the acquire (see
    /// [`conn::undo_after_lost_reply`]), as plain `EVAL`s.
    fn undo_lost_acquire(
        &self,
        conn: &mut Conn,
        mode: Mode,
        lease_id: &str,
        error: &redis::RedisError,
    ) {
        if !conn::reply_lost(error) {
            return;
        }
        let keys: Vec<&str> = self.keys.all().iter().map(String::as_str).collect();
        let releases = [mode.held(), mode.waiting()].map(|entry| {
            let mut release = scripts::eval(scripts::RWLOCK_RELEASE_SOURCE, &keys);
            release
                .arg(entry)
                .arg(lease_id)
                .arg(millis(self.options.signal_expire));
            release
        });
        if let Err(e) =
            conn::undo_after_lost_reply(conn, &self.pool, self.options.response_timeout, &releases)
        {
            log::warn!(
                "{} lock `{}`: an acquire's reply was lost ({error}) and undoing it failed ({e}); \
                 if Redis granted it, it is held by nobody until it expires",
                mode.name(),
                self.path
            );
        }
    }

    /// Runs the release script on one entry (`r`, `w`, `qr`, `qw`); whether it was ours.
    fn release_entry(&self, conn: &mut Conn, entry: &str, lease_id: &str) -> Result<bool> {
        let released: i64 = RWLOCK_RELEASE
            .prepare_invoke()
            .key(self.keys.all())
            .arg(entry)
            .arg(lease_id)
            .arg(millis(self.options.signal_expire))
            .invoke(&mut **conn)?;
        Ok(released == 1)
    }
}

/// A lease the acquire script granted.
#[derive(Debug)]
struct Grant {
    mode: Mode,
    lease_id: String,
    /// Taken before the granting request was sent.
    sent_at: Instant,
    /// The fencing token for a writer, 0 for a reader.
    token: u64,
}
