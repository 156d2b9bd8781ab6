//! [`RedisRwLock`]: read-write locks on the paths of a tree. The builder is in
//! `builder.rs`, the guards in `guard.rs`, one lease (what a guard releases, extends and
//! renews) in `grant.rs`; paths and keys in `keys`; the protocol in `docs/rwlock.md`.

mod builder;
mod family;
mod grant;
mod guard;
mod keys;
mod resume;

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use crate::acquire::{self, ENTRY_TTL, Found, Lock, Outcome, Request};
use crate::conn::{self, Conn};
use crate::error::{Error, Result, TryLockError};
use crate::held::Held;
use crate::keys::Scheme;
use crate::lease::Holder;
use crate::lease::NewGrant;
use crate::local::{Local, Locals};
use crate::metrics::Labels;
use crate::options::{Defaults, LockOptions, LockOptionsBuilder};
use crate::pool::Pool;
use crate::renewal::OnServer;
use crate::scripts::{self, Call, Lua, lua, undo_window};
use crate::time::{Deadline, millis};
use keys::{Mode, RwKeys};

pub use builder::RedisRwLockBuilder;
pub(crate) use family::RwLocks;
use grant::RwGrant;
pub use guard::{RedisRwLockReadGuard, RedisRwLockWriteGuard};

/// Takes a read or write lease on a path, or registers a waiter.
static ACQUIRE: LazyLock<Lua> = lua!(
    [
        "scripts/clock.lua",
        "scripts/now.lua",
        "scripts/touch.lua",
        "scripts/fence.lua",
        "scripts/notes.lua"
    ],
    "rwlock/acquire.lua"
);
/// Removes a lease or a waiter's registration, then wakes whom it held back.
static RELEASE: LazyLock<Lua> = lua!(
    [
        "scripts/clock.lua",
        "scripts/now.lua",
        "scripts/notes.lua",
        "rwlock/wake.lua"
    ],
    "rwlock/release.lua"
);
/// Removes every lease (or one owner's) from whole levels, for the operator tools.
static CLEAR: LazyLock<Lua> = lua!(
    [
        "scripts/clock.lua",
        "scripts/now.lua",
        "scripts/touch.lua",
        "rwlock/wake.lua"
    ],
    "rwlock/clear.lua"
);
/// Takes over a lease named by a lock handle, under a new lease id.
static RESUME: LazyLock<Lua> = lua!(
    ["scripts/clock.lua", "scripts/now.lua", "scripts/fence.lua"],
    "rwlock/resume.lua"
);
/// What the operator tools show of some holder sets.
static LIST: LazyLock<Lua> = lua!(["scripts/clock.lua", "scripts/now.lua"], "rwlock/list.lua");

/// The local side of every read-write lock of this process, by pool and path.
static LOCALS: LazyLock<Locals> = LazyLock::new(Locals::new);

/// The default separator of path segments.
const DEFAULT_SEPARATOR: char = '/';

/// A read-write lock's defaults: leases that expire, renewed while a guard lives (as
/// Redisson's watchdog does), so that a crashed holder cannot block its subtree forever.
const DEFAULTS: Defaults = Defaults {
    expire: Some(Duration::from_secs(30)),
    auto_renewal: true,
};

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
/// one Lua script. Every lease expires (30 s unless [set](RedisRwLockBuilder::expire)) and
/// is renewed while its guard lives, so a crashed holder stops blocking others once its
/// lease runs out; [`reset`](Self::reset) frees a path at once. The keys, scripts and
/// waking are described in `docs/rwlock.md`.
///
/// On a Redis Cluster every key of one tree carries the root segment as its hash tag, so
/// one tree lives on one node (see `docs/deployments.md`).
///
/// # Threads of one process
///
/// Threads that wait for a path through one `RedisRwLock` (shared through an [`Arc`]) or
/// through their own (of the same [`Pool`], path and separator) take turns, first come
/// first served, to be the one that waits in Redis, so however many local threads wait, one
/// connection blocks in `BLPOP`. Redis alone decides who holds what: a thread of this
/// process that holds the path keeps nobody waiting in the process, and when its lease is
/// released, reset or runs out, the waiter of its process is woken as any other is. Each
/// read guard is its own lease in Redis; `try_` calls ask Redis once, without a turn.
///
/// # Differences from `std::sync::RwLock`
///
/// The same as for [`RedisMutex`](crate::RedisMutex): acquiring can fail, a held lock can
/// be lost (check [`ensure_held`](RedisRwLockWriteGuard::ensure_held)), there is no
/// poisoning and no data inside. Taking a read lock again on a thread that holds one can
/// deadlock once a writer waits, as std warns; with paths, so can waiting for a read lock
/// on `a/c` while holding one on `a/b`, once a writer waits for `a`.
///
/// # Examples
///
/// ```no_run
/// use redis_mutex::{Pool, RedisRwLock};
///
/// let pool = Pool::new("redis://127.0.0.1/")?;
/// let tenant = RedisRwLock::new(pool.clone(), "tenants/42")?;
/// let whole_tree = RedisRwLock::new(pool, "tenants")?;
///
/// let reading = tenant.read()?; // other readers of tenants/42 may join
/// assert!(whole_tree.try_write().is_err()); // a write lock on an ancestor must wait
/// drop(reading);
/// let writing = whole_tree.write()?; // excludes every lock under tenants/
/// println!("fencing token {}", writing.fencing_token());
/// # Ok::<(), redis_mutex::Error>(())
/// ```
pub struct RedisRwLock {
    pool: Pool,
    path: Arc<str>,
    separator: char,
    keys: Arc<RwKeys>,
    options: LockOptions,
    /// Shared by every read-write lock of this pool and path in the process.
    local: Arc<Local>,
    /// The labels of its metrics (the kind is the lease's).
    labels: Labels,
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

/// The docs' example setup: a pool.
macro_rules! doc_pool {
    () => {
        "# use redis_mutex::{Pool, RedisRwLock, TryLockError};\nlet pool = Pool::new(\"redis://127.0.0.1/\")?;"
    };
}

impl RedisRwLock {
    /// A read-write lock on `path` (segments separated by `/`) on `pool`, with a 30 s lease
    /// renewed while a guard lives, and a random owner id.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] for a path longer than [`MAX_NAME_LEN`](crate::MAX_NAME_LEN),
    /// or one that is empty or has an empty segment (`/a`,
    /// `a/`, `a//b`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::{Pool, RedisRwLock};
    ///
    /// let config = RedisRwLock::new(Pool::new("redis://127.0.0.1/")?, "config/billing")?;
    /// let _reading = config.read()?;
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn new(pool: Pool, path: impl Into<String>) -> Result<RedisRwLock> {
        RedisRwLock::builder(pool, path).build()
    }

    /// A builder for a read-write lock on `path` on `pool`, to set its options.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use redis_mutex::{Pool, RedisRwLock};
    ///
    /// let lock = RedisRwLock::builder(Pool::new("redis://127.0.0.1/")?, "eu.shop.orders")
    ///     .separator('.')
    ///     .expire(Duration::from_secs(10))
    ///     .build()?;
    /// # Ok::<(), redis_mutex::Error>(())
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
        let keys = RwKeys::new(&path, separator, Scheme::of(&pool));
        // A lock is its path, read with its separator (which decides its ancestors).
        let local = LOCALS.get(&pool, &format!("{separator}{path}"));
        RedisRwLock {
            pool,
            path: path.into(),
            separator,
            keys: Arc::new(keys),
            labels: Labels::new("read", options.metrics_label.clone()),
            options,
            local,
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

    /// The lease each read or write lock is taken with.
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
    /// [`Error::Unreachable`], [`Error::Timeout`], [`Error::PoolTimeout`] or
    /// [`Error::Redis`] when Redis cannot be reached or answers with an error;
    /// [`Error::WrongType`] when a key of the lock holds another type;
    /// [`Error::NotReplicated`] with `wait_replicas`; [`Error::RenewalThread`] with
    /// auto-renewal. The lock is not held then.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use std::thread;
    /// use redis_mutex::{Pool, RedisRwLock};
    ///
    /// let catalog = Arc::new(RedisRwLock::new(Pool::new("redis://127.0.0.1/")?, "catalog")?);
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
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn read(&self) -> Result<RedisRwLockReadGuard<'_>> {
        let held = self.acquire(Mode::Read, None)?.ok_or(Error::Protocol {
            what: "a wait without deadline that ended",
        })?;
        Ok(RedisRwLockReadGuard::new(self, held))
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
    #[doc = doc_pool!()]
    /// let lock = RedisRwLock::new(pool, "catalog/books")?;
    /// let guard = lock.write()?;
    /// // nobody reads or writes catalog, catalog/books or anything below it now
    /// guard.unlock()?;
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn write(&self) -> Result<RedisRwLockWriteGuard<'_>> {
        let held = self.acquire(Mode::Write, None)?.ok_or(Error::Protocol {
            what: "a wait without deadline that ended",
        })?;
        Ok(RedisRwLockWriteGuard::new(self, held))
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
    #[doc = doc_pool!()]
    /// let lock = RedisRwLock::new(pool, "reports/2024")?;
    /// match lock.try_read() {
    ///     Ok(_guard) => { /* read the reports */ }
    ///     Err(TryLockError::WouldBlock) => println!("being rewritten; try later"),
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_read(&self) -> Result<RedisRwLockReadGuard<'_>, TryLockError> {
        let held = self
            .acquire(Mode::Read, Some(Instant::now()))?
            .ok_or(TryLockError::WouldBlock)?;
        Ok(RedisRwLockReadGuard::new(self, held))
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
    #[doc = doc_pool!()]
    /// let lock = RedisRwLock::new(pool, "cache")?;
    /// if let Ok(_guard) = lock.try_write() {
    ///     // rebuild the cache; nobody reads it meanwhile
    /// }
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn try_write(&self) -> Result<RedisRwLockWriteGuard<'_>, TryLockError> {
        let held = self
            .acquire(Mode::Write, Some(Instant::now()))?
            .ok_or(TryLockError::WouldBlock)?;
        Ok(RedisRwLockWriteGuard::new(self, held))
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
    #[doc = doc_pool!()]
    /// let lock = RedisRwLock::new(pool, "prices")?;
    /// if let Ok(_guard) = lock.try_read_for(std::time::Duration::from_millis(300)) {
    ///     // read within 300 ms
    /// }
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn try_read_for(
        &self,
        timeout: Duration,
    ) -> Result<RedisRwLockReadGuard<'_>, TryLockError> {
        let Some(deadline) = Instant::now().checked_add(timeout) else {
            return Ok(self.read()?);
        };
        let held = self
            .acquire(Mode::Read, Some(deadline))?
            .ok_or(TryLockError::WouldBlock)?;
        Ok(RedisRwLockReadGuard::new(self, held))
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
    #[doc = doc_pool!()]
    /// let lock = RedisRwLock::new(pool, "prices")?;
    /// match lock.try_write_for(std::time::Duration::from_secs(2)) {
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
        let Some(deadline) = Instant::now().checked_add(timeout) else {
            return Ok(self.write()?);
        };
        let held = self
            .acquire(Mode::Write, Some(deadline))?
            .ok_or(TryLockError::WouldBlock)?;
        Ok(RedisRwLockWriteGuard::new(self, held))
    }

    /// Frees the path: removes every read and write lease held on it, whoever holds them,
    /// and wakes the waiters they held back. An operator's tool, for a holder that is gone
    /// or stuck: the holders are not told until their next renewal, extend or release
    /// fails. Locks on other paths (ancestors, descendants) stay.
    ///
    /// Returns whether there was a lease to remove.
    ///
    /// # Errors
    ///
    /// The errors of a request when Redis cannot be reached; [`Error::WrongType`] when a
    /// key of the lock holds another type.
    ///
    /// # Examples
    ///
    /// ```no_run
    #[doc = doc_pool!()]
    /// let stuck = RedisRwLock::new(pool, "tenants/42")?;
    /// if stuck.reset()? {
    ///     println!("freed tenants/42");
    /// }
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn reset(&self) -> Result<bool> {
        // One bound for the whole call: every request shares it.
        let deadline = Deadline::after(self.options.response_timeout);
        // The leases held now, by name, in one request: a copy of a removal that comes late
        // (sent again after a lost reply) leaves a lease granted since.
        let modes = [Mode::Write, Mode::Read];
        let mut read = redis::pipe();
        for mode in modes {
            read.cmd("ZRANGE")
                .arg(&self.keys.lease_sets(mode)[0])
                .arg(0)
                .arg(-1);
        }
        let held: Vec<Vec<String>> = self.run_reset(deadline, |c| read.query(c))?;
        let mut removed = false;
        for (mode, leases) in modes.into_iter().zip(held) {
            if leases.is_empty() {
                continue;
            }
            let mut call = RELEASE.call();
            call.key(self.keys.all())
                .arg(mode.held())
                .arg("*")
                .arg(millis(self.options.signal_expire))
                .arg(0)
                .arg("")
                .arg(leases);
            removed |= self.run_reset(deadline, |c| call.invoke::<i64>(c))? > 0;
        }
        log::debug!("reset read-write lock `{}`", self.path);
        Ok(removed)
    }

    fn route(&self) -> &str {
        &self.keys.all()[0]
    }

    /// One request of a reset, which may be sent twice, answered by `deadline`.
    fn run_reset<T>(
        &self,
        deadline: Deadline,
        op: impl FnMut(&mut Conn) -> redis::RedisResult<T>,
    ) -> Result<T> {
        let ran = conn::run_repeatable(&self.pool, self.route(), deadline, op)?;
        ran.reply(&self.path, "reset")
    }

    /// The labels of a lease of `mode`'s metrics.
    fn labels_of(&self, mode: Mode) -> Labels {
        self.labels.of_kind(mode.name())
    }

    /// Takes a lock of `mode`, waiting until `deadline` (`None`: forever). `Ok(None)` when
    /// the deadline passed with the path blocked. A call that may wait first takes its turn
    /// in the process: one thread of this process at a time waits in Redis for the path. A
    /// `try_` call with nothing to wait for makes its one attempt without a turn.
    fn acquire(&self, mode: Mode, deadline: Option<Instant>) -> Result<Option<Held<RwGrant>>> {
        let turn = match deadline {
            Some(deadline) if deadline <= Instant::now() => None,
            _ => match self.local.turn(1, deadline, |_| {}) {
                Some(turn) => Some(turn),
                None => return Ok(None),
            },
        };
        let labels = self.labels_of(mode);
        let lock = self.lock_ref(mode, &labels);
        let mut request = RwRequest {
            lock: self,
            mode,
            lease_id: self.new_lease_id(),
        };
        let outcome = acquire::acquire(&lock, &mut request, deadline)?;
        // Noted as held before the turn goes on (see the mutex's acquire).
        let held = match outcome {
            Outcome::Granted(granted, ()) => self.held(mode, request.lease_id, granted).map(Some),
            Outcome::TimedOut | Outcome::GaveWay => Ok(None),
        };
        drop(turn);
        held
    }

    /// What the acquire driver needs of this lock, for a lease of `mode`.
    fn lock_ref<'a>(&'a self, mode: Mode, labels: &'a Labels) -> Lock<'a> {
        Lock {
            pool: &self.pool,
            route: self.route(),
            name: &self.path,
            kind: match mode {
                Mode::Read => "read lock",
                Mode::Write => "write lock",
            },
            options: &self.options,
            labels,
        }
    }

    /// The lease core of a grant.
    fn held(&self, mode: Mode, lease_id: String, granted: NewGrant) -> Result<Held<RwGrant>> {
        let (grant, holder) = self.grant_of(mode, lease_id, &granted);
        Held::granted(grant, holder, &granted, &self.options)
    }

    /// A lease of `mode` with the id `lease_id`, and its holder, as the lease core takes
    /// them.
    fn grant_of(&self, mode: Mode, lease_id: String, granted: &NewGrant) -> (RwGrant, Holder) {
        let holder = Holder {
            name: self.path.clone(),
            owner_id: lease_id.as_str().into(),
            fencing_token: (mode == Mode::Write).then_some(granted.token),
            labels: self.labels_of(mode),
        };
        let grant = RwGrant {
            on: OnServer::of(&self.pool, &self.path, granted, &self.options),
            keys: self.keys.clone(),
            mode,
            lease_id,
            signal_expire: self.options.signal_expire,
        };
        (grant, holder)
    }

    /// A lease id of this lock's owner, new.
    fn new_lease_id(&self) -> String {
        format!("{}#{:016x}", self.options.owner_id, rand::random::<u64>())
    }

    /// A call that removes the entry `entry` of `lease_id` and wakes whom it held back.
    fn release_call(&self, entry: &str, lease_id: &str) -> Call {
        let mut call = RELEASE.call();
        call.key(self.keys.all())
            .arg(entry)
            .arg(lease_id)
            .arg(millis(self.options.signal_expire));
        call
    }
}

/// An acquire of a read or write lease: one lease id for the whole call, which the grant,
/// the waiter's registration and their undo all name.
struct RwRequest<'a> {
    lock: &'a RedisRwLock,
    mode: Mode,
    lease_id: String,
}

impl Request for RwRequest<'_> {
    type Reply = scripts::Acquire;
    type Extra = ();
    const QUEUES: bool = true;

    fn signals(&self) -> Vec<String> {
        self.lock.keys.wake_lists(self.mode)
    }

    /// Takes the lease, or, refused, registers as a waiter (`queue`): a waiting writer
    /// holds new readers back, and a release wakes only registered waiters.
    fn attempt(&mut self, queue: bool) -> Call {
        let keys = &self.lock.keys;
        let mut call = ACQUIRE.call();
        call.key(keys.all())
            .key(&keys.fencing)
            .key(&keys.released)
            .arg(self.mode.held())
            .arg(&self.lease_id)
            .arg(self.lock.options.expire.map_or(0, millis))
            .arg(if queue { millis(ENTRY_TTL) } else { 0 });
        call
    }

    fn read(&mut self, reply: scripts::Acquire) -> Result<Found<()>> {
        Ok(match reply {
            scripts::Acquire::Granted { token } => Found::Granted { token, extra: () },
            scripts::Acquire::Held { left } => Found::Blocked(acquire::until_expiry(left)),
            scripts::Acquire::WrongType { key } => {
                return Err(Error::WrongType {
                    name: self.lock.path.to_string(),
                    key: key
                        .checked_sub(1)
                        .and_then(|at| self.lock.keys.all().get(at))
                        .cloned(),
                });
            }
            scripts::Acquire::LeftToWaiter | scripts::Acquire::Undone => {
                return Err(Error::Protocol { what: "acquire" });
            }
        })
    }

    /// Removes the lease and the registration this request's id may have left, and notes
    /// the id as undone.
    fn undo(&self) -> Vec<Call> {
        let mut undo = self.lock.release_call(self.mode.held(), &self.lease_id);
        undo.key(&self.lock.keys.released)
            .arg(millis(undo_window(self.lock.options.response_timeout)))
            .arg("undo");
        vec![
            undo,
            self.lock.release_call(self.mode.waiting(), &self.lease_id),
        ]
    }

    /// A new lease id: the undone one is refused from now on.
    fn undone(&mut self) {
        self.lease_id = self.lock.new_lease_id();
    }

    fn withdraw(&self) -> Option<Call> {
        Some(self.lock.release_call(self.mode.waiting(), &self.lease_id))
    }
}
