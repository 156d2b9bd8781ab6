//! [`RedisSemaphore`]: a counting semaphore whose permits are leases. The builder is in
//! `builder.rs`, the permits (guards) in `guard.rs`, one grant of permits (what a guard
//! releases, extends and renews) in `grant.rs`; the keys in `keys`; the protocol in
//! `docs/semaphore.md`.

mod builder;
mod family;
mod grant;
mod guard;
mod keys;

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
use crate::local::{Local, Locals, Turn};
use crate::metrics::Labels;
use crate::options::{AttemptId, Defaults, LockOptions, LockOptionsBuilder};
use crate::pool::Pool;
use crate::renewal::OnServer;
use crate::scripts::{self, Call, Lua, lua, undo_window};
use crate::time::{Deadline, millis};
use keys::{SemaphoreKeys, member, parse_member};

pub use builder::RedisSemaphoreBuilder;
pub(crate) use family::Semaphores;
use grant::SemaphoreGrant;
pub use guard::{ArcRedisSemaphorePermit, RedisSemaphorePermit};

/// Every operation of a semaphore: acquire (or queue), release and wake, leave the queue,
/// set the capacity, reset, read the state.
static SEMAPHORE: LazyLock<Lua> = lua!(
    [
        "scripts/clock.lua",
        "scripts/now.lua",
        "scripts/fence.lua",
        "scripts/touch.lua",
        "scripts/notes.lua"
    ],
    "semaphore/semaphore.lua"
);

/// The local side of every semaphore of this process, by pool and name.
static LOCALS: LazyLock<Locals> = LazyLock::new(Locals::new);

/// A semaphore's defaults: permits whose leases expire, renewed while a permit lives, so
/// that a crashed holder's permits come back when its last renewal runs out, up to one
/// lease after it died.
const DEFAULTS: Defaults = Defaults {
    expire: Some(Duration::from_secs(30)),
    auto_renewal: true,
};

/// How long a capacity set by [`RedisSemaphore::set_permits`] is kept after the last
/// acquire; after that the builders' `permits` apply again.
const CAPACITY_LIFE: Duration = Duration::from_secs(3600);

/// A counting semaphore held in Redis: at most [`permits`](RedisSemaphoreBuilder::permits)
/// permits are held at once, across every thread and process that uses its name ("at most
/// 5 workers call the payment API at once").
///
/// Each grant of permits is a lease, as a lock is: it expires (30 s unless
/// [set](RedisSemaphoreBuilder::expire)) and is renewed while its guard, a
/// [`RedisSemaphorePermit`], lives; dropping the guard gives the permits back. A holder that
/// crashes gives its permits back when its last renewal runs out (up to one lease after it
/// died), never "forever" as a plain counter would.
///
/// [`acquire`](Self::acquire) blocks, [`try_acquire`](Self::try_acquire) does not, and
/// [`try_acquire_for`](Self::try_acquire_for) waits up to a timeout;
/// [`acquire_many`](Self::acquire_many) takes several permits at once, all or none. Waiters
/// sleep in `BLPOP` on a wake list of their own and are woken by the releases that free
/// enough permits for them (a release of two permits wakes two waiters of one), or try again
/// when the earliest holder's lease runs out. With [`fair`](RedisSemaphoreBuilder::fair),
/// permits go to waiters in the order they came, and nobody overtakes a waiter that needs
/// more than is free.
///
/// Threads of one process that use the semaphore (through this object, or any other of the
/// same pool and name) ask Redis one at a time: however many threads wait, one of them waits
/// in Redis, the others in the process.
///
/// The capacity can be changed while in use, with [`set_permits`](Self::set_permits):
/// holders above a lowered capacity keep their permits, and nobody new gets one until fewer
/// are held than the capacity.
///
/// The keys, scripts and waking are described in `docs/semaphore.md`. On a Redis Cluster
/// every key of one semaphore carries its name as a hash tag.
///
/// # Examples
///
/// ```no_run
/// use redis_mutex::{Pool, RedisSemaphore};
///
/// let payments = RedisSemaphore::new(Pool::new("redis://127.0.0.1/")?, "payment-api", 5)?;
/// let permit = payments.acquire()?; // one of at most five, fleet-wide
/// // ... call the payment API ...
/// drop(permit);
/// # Ok::<(), redis_mutex::Error>(())
/// ```
pub struct RedisSemaphore {
    pool: Pool,
    name: Arc<str>,
    keys: Arc<SemaphoreKeys>,
    /// The capacity it was built with (a capacity set in Redis takes precedence).
    permits: u32,
    fair: bool,
    options: LockOptions,
    local: Arc<Local>,
    labels: Labels,
}

impl fmt::Debug for RedisSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSemaphore")
            .field("name", &self.name)
            .field("permits", &self.permits)
            .field("fair", &self.fair)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Who holds permits of a semaphore, as [`RedisSemaphore::holders`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SemaphoreHolder {
    /// The grant's lease id: `<owner id>#<16 hex digits>`.
    pub lease_id: String,
    /// The owner id of the semaphore object that was granted the permits.
    pub owner_id: String,
    /// How many permits it holds.
    pub permits: u32,
    /// How long until its lease runs out, unless renewed; `None` for permits without
    /// expiry.
    pub expires_in: Option<Duration>,
    /// The grant's fencing token (what its permit's
    /// [`fencing_token`](RedisSemaphorePermit::fencing_token) gives its holder).
    pub fencing_token: Option<u64>,
}

/// A semaphore's state, as `semaphore.lua`'s `state` reads it.
struct State {
    /// The capacity set by `set_permits`, if any.
    set: Option<u32>,
    in_use: u32,
    holders: Vec<SemaphoreHolder>,
}

/// A call of `semaphore.lua` for the operation `op`, with the arguments every operation
/// takes.
fn script(keys: &SemaphoreKeys, op: &str, capacity: u32, signal_expire: Duration) -> Call {
    let mut call = SEMAPHORE.call();
    for key in keys.script_keys() {
        call.key(key);
    }
    call.arg(op)
        .arg(capacity)
        .arg(&keys.wake_prefix)
        .arg(millis(signal_expire));
    call
}

/// The docs' example setup: a semaphore of three permits.
macro_rules! doc_setup {
    () => {
        "# use std::time::Duration;\n# use redis_mutex::{Pool, RedisSemaphore, TryLockError};\nlet pool = Pool::new(\"redis://127.0.0.1/\")?;\nlet exports = RedisSemaphore::new(pool, \"exports\", 3)?;"
    };
}

impl RedisSemaphore {
    /// A semaphore named `name` on `pool` with `permits` permits, each a 30 s lease renewed
    /// while its guard lives, and a random owner id.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] for an empty name, one longer than
    /// [`MAX_NAME_LEN`](crate::MAX_NAME_LEN), or 0 permits.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::{Pool, RedisSemaphore};
    ///
    /// let exports = RedisSemaphore::new(Pool::new("redis://127.0.0.1/")?, "exports", 3)?;
    /// let _permit = exports.acquire()?;
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn new(pool: Pool, name: impl Into<String>, permits: u32) -> Result<RedisSemaphore> {
        RedisSemaphore::builder(pool, name).permits(permits).build()
    }

    /// A builder for a semaphore named `name` on `pool`, to set its options;
    /// [`permits`](RedisSemaphoreBuilder::permits) must be set.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use redis_mutex::{Pool, RedisSemaphore};
    ///
    /// let calls = RedisSemaphore::builder(Pool::new("redis://127.0.0.1/")?, "partner-api")
    ///     .permits(5)
    ///     .expire(Duration::from_secs(10))
    ///     .fair(true)
    ///     .build()?;
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn builder(pool: Pool, name: impl Into<String>) -> RedisSemaphoreBuilder {
        RedisSemaphoreBuilder {
            pool,
            name: name.into(),
            permits: None,
            fair: false,
            options: LockOptionsBuilder::default(),
        }
    }

    fn with_options(
        pool: Pool,
        name: String,
        permits: u32,
        fair: bool,
        options: LockOptions,
    ) -> RedisSemaphore {
        let keys = SemaphoreKeys::new(&name, Scheme::of(&pool));
        let local = LOCALS.get(&pool, &keys.holders);
        RedisSemaphore {
            pool,
            name: name.into(),
            keys: Arc::new(keys),
            permits,
            fair,
            labels: Labels::new("semaphore", options.metrics_label.clone()),
            options,
            local,
        }
    }

    /// The semaphore's name, as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The capacity it was built with. The capacity in force is
    /// [`set_permits`](Self::set_permits)'s, when one was set.
    pub fn permits(&self) -> u32 {
        self.permits
    }

    /// Whether it is in [fair mode](RedisSemaphoreBuilder::fair).
    pub fn is_fair(&self) -> bool {
        self.fair
    }

    /// The id this semaphore's grants carry in Redis (each as `<owner_id>#<16 hex digits>`).
    pub fn owner_id(&self) -> &str {
        &self.options.owner_id
    }

    /// The lease each grant of permits is taken with.
    pub fn expire(&self) -> Option<Duration> {
        self.options.expire
    }

    /// Blocks until a permit is ours, then returns a guard that gives it back when dropped.
    ///
    /// Threads of this process that wait for the semaphore take turns to be the one that
    /// waits in Redis: the one that wants fewest permits (in fair mode, the first that
    /// came), woken by a release that frees enough permits for it, or by the earliest
    /// holder's expiry. Holding permits takes no turn. Each request is bounded by the
    /// response timeout: a server that stops answering makes `acquire` fail, not hang.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Timeout`], [`Error::PoolTimeout`] or
    /// [`Error::Redis`] when Redis cannot be reached or answers with an error;
    /// [`Error::WrongType`] when a key of the semaphore holds something else;
    /// [`Error::InvalidOptions`] (`permits`) when the capacity in force is 0, so that no
    /// permit can ever be granted; [`Error::NotReplicated`] with `wait_replicas`;
    /// [`Error::RenewalThread`] with auto-renewal. No permit is held then.
    ///
    /// # Examples
    ///
    /// ```no_run
    #[doc = doc_setup!()]
    /// let permit = exports.acquire()?;
    /// // at most three exports run at once, fleet-wide
    /// permit.release()?;
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn acquire(&self) -> Result<RedisSemaphorePermit<'_>> {
        self.acquire_many(1)
    }

    /// Takes a permit if one is free now, without waiting.
    ///
    /// # Errors
    ///
    /// [`TryLockError::WouldBlock`] when none is free (or, in fair mode, a waiter that came
    /// first is waiting); [`TryLockError::Error`] for the failures listed under
    /// [`acquire`](Self::acquire).
    ///
    /// # Examples
    ///
    /// ```no_run
    #[doc = doc_setup!()]
    /// match exports.try_acquire() {
    ///     Ok(_permit) => println!("exporting"),
    ///     Err(TryLockError::WouldBlock) => println!("three exports run already; later"),
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_acquire(&self) -> Result<RedisSemaphorePermit<'_>, TryLockError> {
        self.try_acquire_many(1)
    }

    /// Waits up to `timeout` for a permit. `Duration::MAX` waits forever.
    ///
    /// # Errors
    ///
    /// [`TryLockError::WouldBlock`] when no permit came free in time; [`TryLockError::Error`]
    /// for the failures listed under [`acquire`](Self::acquire).
    ///
    /// # Examples
    ///
    /// ```no_run
    #[doc = doc_setup!()]
    /// let permit = exports.try_acquire_for(Duration::from_secs(5))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_acquire_for(
        &self,
        timeout: Duration,
    ) -> Result<RedisSemaphorePermit<'_>, TryLockError> {
        self.try_acquire_many_for(1, timeout)
    }

    /// Blocks until `n` permits are ours, all at once: it never holds part of them while it
    /// waits for the rest, so two callers that each want most of the permits cannot hold
    /// each other up.
    ///
    /// # Errors
    ///
    /// As for [`acquire`](Self::acquire); [`Error::InvalidOptions`] (`permits`) for `n` = 0,
    /// or more than the capacity in force.
    ///
    /// # Examples
    ///
    /// ```no_run
    #[doc = doc_setup!()]
    /// let big_export = exports.acquire_many(2)?; // leaves one for the others
    /// assert_eq!(big_export.permits(), 2);
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn acquire_many(&self, n: u32) -> Result<RedisSemaphorePermit<'_>> {
        let (held, n) = self.take(n, None)?.ok_or(Error::Protocol {
            what: "a wait without deadline that ended",
        })?;
        Ok(RedisSemaphorePermit::new(self, held, n))
    }

    /// Takes `n` permits if they are free now, all or none, without waiting.
    ///
    /// # Errors
    ///
    /// As for [`try_acquire`](Self::try_acquire) and [`acquire_many`](Self::acquire_many).
    ///
    /// # Examples
    ///
    /// ```no_run
    #[doc = doc_setup!()]
    /// if let Ok(permits) = exports.try_acquire_many(3) {
    ///     // the whole semaphore: nobody else exports now
    /// }
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn try_acquire_many(&self, n: u32) -> Result<RedisSemaphorePermit<'_>, TryLockError> {
        let (held, n) = self
            .take(n, Some(Instant::now()))?
            .ok_or(TryLockError::WouldBlock)?;
        Ok(RedisSemaphorePermit::new(self, held, n))
    }

    /// Waits up to `timeout` for `n` permits, all or none.
    ///
    /// # Errors
    ///
    /// As for [`try_acquire_for`](Self::try_acquire_for) and
    /// [`acquire_many`](Self::acquire_many).
    ///
    /// # Examples
    ///
    /// ```no_run
    #[doc = doc_setup!()]
    /// let permits = exports.try_acquire_many_for(2, Duration::from_secs(5))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_acquire_many_for(
        &self,
        n: u32,
        timeout: Duration,
    ) -> Result<RedisSemaphorePermit<'_>, TryLockError> {
        let deadline = Instant::now().checked_add(timeout);
        if deadline.is_none() {
            return Ok(self.acquire_many(n)?);
        }
        let (held, n) = self.take(n, deadline)?.ok_or(TryLockError::WouldBlock)?;
        Ok(RedisSemaphorePermit::new(self, held, n))
    }

    /// Like [`acquire_many`](Self::acquire_many), for an `Arc<RedisSemaphore>`: the permit
    /// owns a reference to the semaphore, so it is `'static` and can move to another thread
    /// or task with the permits it holds (as tokio's `acquire_many_owned`, or the mutex's
    /// [`lock_arc`](crate::RedisMutex::lock_arc)). `acquire_arc()` is
    /// `acquire_many_arc(1)`.
    ///
    /// # Errors
    ///
    /// As for [`acquire_many`](Self::acquire_many).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use redis_mutex::{Pool, RedisSemaphore};
    ///
    /// let exports = Arc::new(RedisSemaphore::new(Pool::new("redis://127.0.0.1/")?, "exports", 3)?);
    /// let permit = exports.acquire_many_arc(1)?;
    /// std::thread::spawn(move || {
    ///     // ... the export, under the permit ...
    ///     drop(permit);
    /// });
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn acquire_many_arc(self: &Arc<Self>, n: u32) -> Result<ArcRedisSemaphorePermit> {
        let (held, n) = self.take(n, None)?.ok_or(Error::Protocol {
            what: "a wait without deadline that ended",
        })?;
        Ok(ArcRedisSemaphorePermit::new(self.clone(), held, n))
    }

    /// [`acquire_many_arc(1)`](Self::acquire_many_arc).
    ///
    /// # Errors
    ///
    /// As for [`acquire`](Self::acquire).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use redis_mutex::{Pool, RedisSemaphore};
    ///
    /// let exports = Arc::new(RedisSemaphore::new(Pool::new("redis://127.0.0.1/")?, "exports", 3)?);
    /// let permit = exports.acquire_arc()?;
    /// std::thread::spawn(move || drop(permit)).join().unwrap();
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn acquire_arc(self: &Arc<Self>) -> Result<ArcRedisSemaphorePermit> {
        self.acquire_many_arc(1)
    }

    /// Like [`try_acquire_many_for`](Self::try_acquire_many_for), for an
    /// `Arc<RedisSemaphore>` (see [`acquire_many_arc`](Self::acquire_many_arc)); a
    /// `timeout` of zero makes one attempt without waiting.
    ///
    /// # Errors
    ///
    /// As for [`try_acquire_many_for`](Self::try_acquire_many_for).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use redis_mutex::{Pool, RedisSemaphore};
    ///
    /// let exports = Arc::new(RedisSemaphore::new(Pool::new("redis://127.0.0.1/")?, "exports", 3)?);
    /// let now = exports.try_acquire_many_arc_for(1, Duration::ZERO);
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn try_acquire_many_arc_for(
        self: &Arc<Self>,
        n: u32,
        timeout: Duration,
    ) -> Result<ArcRedisSemaphorePermit, TryLockError> {
        let Some(deadline) = Instant::now().checked_add(timeout) else {
            return Ok(self.acquire_many_arc(n)?);
        };
        let (held, n) = self
            .take(n, Some(deadline))?
            .ok_or(TryLockError::WouldBlock)?;
        Ok(ArcRedisSemaphorePermit::new(self.clone(), held, n))
    }

    /// How many permits are free now: the capacity in force less those held (0 when a
    /// lowered capacity is still exceeded). A moment later it may differ.
    ///
    /// # Errors
    ///
    /// The errors of a request when Redis cannot be reached; [`Error::WrongType`].
    ///
    /// # Examples
    ///
    /// ```no_run
    #[doc = doc_setup!()]
    /// let _permit = exports.acquire()?;
    /// println!("{} of 3 free", exports.available_permits()?);
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn available_permits(&self) -> Result<u32> {
        let state = self.state()?;
        Ok(state
            .set
            .unwrap_or(self.permits)
            .saturating_sub(state.in_use))
    }

    /// Who holds permits now, with how many and for how long, in the order their leases end.
    ///
    /// # Errors
    ///
    /// The errors of a request when Redis cannot be reached; [`Error::WrongType`].
    ///
    /// # Examples
    ///
    /// ```no_run
    #[doc = doc_setup!()]
    /// for holder in exports.holders()? {
    ///     println!("{} holds {} for {:?} more", holder.owner_id, holder.permits, holder.expires_in);
    /// }
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn holders(&self) -> Result<Vec<SemaphoreHolder>> {
        Ok(self.state()?.holders)
    }

    /// Sets the capacity in force to `permits`, for every user of the semaphore, while it is
    /// in use and for an hour after the last acquire (after that, the builders' `permits`
    /// apply again). Raised, it wakes the waiters the new permits are enough for; lowered,
    /// holders above it keep their permits, and nobody new gets one until fewer are held
    /// than the capacity. 0 lets nobody new in.
    ///
    /// # Errors
    ///
    /// The errors of a request when Redis cannot be reached; [`Error::WrongType`].
    ///
    /// # Examples
    ///
    /// ```no_run
    #[doc = doc_setup!()]
    /// exports.set_permits(1)?; // the export service is struggling: one at a time
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn set_permits(&self, permits: u32) -> Result<()> {
        let mut call = self.script("set");
        call.arg(permits)
            .arg(millis(CAPACITY_LIFE))
            .arg(if self.fair { "1" } else { "0" });
        self.run("set_permits", |c| call.invoke::<redis::Value>(c))?;
        log::debug!("semaphore `{}`: capacity set to {permits}", self.name);
        Ok(())
    }

    /// Takes back every permit, whoever holds it, and wakes the waiters the freed permits
    /// are enough for. The holders are not told until their next renewal or release: reset
    /// only a semaphore whose holders are gone. Returns how many grants were removed.
    ///
    /// # Errors
    ///
    /// The errors of a request when Redis cannot be reached; [`Error::WrongType`].
    ///
    /// # Examples
    ///
    /// ```no_run
    #[doc = doc_setup!()]
    /// let removed = exports.reset()?;
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn reset(&self) -> Result<usize> {
        // One bound for the whole call: both requests share it.
        let deadline = Deadline::after(self.options.response_timeout);
        // The grants held now, by name: a copy of the removal that comes late (sent again
        // after a lost reply) leaves a grant made since.
        let holders = &self.keys.holders;
        let mut members: Vec<String> = self.run_by(deadline, "reset", |c| {
            redis::cmd("ZRANGE").arg(holders).arg(0).arg(-1).query(c)
        })?;
        if members.is_empty() {
            // A name no member has: the call removes nothing, but still finds a key of
            // another type.
            members.push(String::new());
        }
        let mut call = self.script("reset");
        call.arg("").arg(members);
        let removed = self.run_by(deadline, "reset", |c| call.invoke::<usize>(c))?;
        log::debug!(
            "semaphore `{}`: reset, {removed} grant(s) removed",
            self.name
        );
        Ok(removed)
    }

    fn script(&self, op: &str) -> Call {
        script(&self.keys, op, self.permits, self.options.signal_expire)
    }

    /// A lease id of this semaphore's owner, new.
    fn new_lease_id(&self) -> String {
        format!("{}#{:016x}", self.options.owner_id, rand::random::<u64>())
    }

    /// Runs an operation that may be sent twice (a read, a set, a reset).
    fn run<T>(
        &self,
        what: &'static str,
        op: impl FnMut(&mut Conn) -> redis::RedisResult<T>,
    ) -> Result<T> {
        self.run_by(Deadline::after(self.options.response_timeout), what, op)
    }

    /// [`run`](Self::run), answered by `deadline`: one request of a call of several.
    fn run_by<T>(
        &self,
        deadline: Deadline,
        what: &'static str,
        op: impl FnMut(&mut Conn) -> redis::RedisResult<T>,
    ) -> Result<T> {
        let ran = conn::run_repeatable(&self.pool, &self.keys.holders, deadline, op)?;
        // A key of another type is `Error::WrongType`, as `fail` maps it.
        ran.reply(&self.name, what)
    }

    fn state(&self) -> Result<State> {
        let call = self.script("state");
        let reply: Vec<redis::Value> = self.run("state", |c| call.invoke(c))?;
        let bad = || Error::Protocol { what: "state" };
        let number = |v: &redis::Value| match v {
            redis::Value::Int(n) => Ok(*n),
            _ => Err(bad()),
        };
        let [set, in_use, _waiters, rest @ ..] = &reply[..] else {
            return Err(bad());
        };
        let mut holders = Vec::new();
        for pair in rest.chunks(2) {
            let [redis::Value::BulkString(member), left] = pair else {
                return Err(bad());
            };
            let member = String::from_utf8_lossy(member);
            let member = parse_member(&member).ok_or_else(bad)?;
            let lease_id = member.lease_id;
            holders.push(SemaphoreHolder {
                owner_id: lease_id
                    .rsplit_once('#')
                    .map_or(lease_id, |(owner, _)| owner)
                    .to_owned(),
                lease_id: lease_id.to_owned(),
                permits: member.permits,
                expires_in: u64::try_from(number(left)?).ok().map(Duration::from_millis),
                fencing_token: member.token,
            });
        }
        Ok(State {
            set: u32::try_from(number(set)?).ok(),
            in_use: u32::try_from(number(in_use)?).map_err(|_| bad())?,
            holders,
        })
    }

    /// Takes `n` permits, waiting until `deadline` (`None`: forever). `Ok(None)` when the
    /// deadline passed first.
    ///
    /// One attempt first, at once and without a turn: permits free now are taken whatever
    /// other threads of this process wait for (one that wants more than is free does not
    /// hold up one that wants less, outside fair mode). Then, to wait, the thread takes its
    /// turn in the process: one thread at a time waits in Redis, the one that wants fewest
    /// permits (in fair mode, the first that came); a thread that wants fewer than the one
    /// waiting has it give way.
    fn take(
        &self,
        n: u32,
        deadline: Option<Instant>,
    ) -> Result<Option<(Held<SemaphoreGrant>, u32)>> {
        if n == 0 {
            return Err(Error::invalid(
                "permits",
                "asked for 0 permits; ask for 1 or more",
            ));
        }
        let now = Instant::now();
        if let Outcome::Granted(granted, taken) = self.take_in_redis(n, Some(now), None)? {
            return self.held(granted, taken).map(Some);
        }
        if deadline.is_some_and(|deadline| deadline <= now) {
            return Ok(None);
        }
        let need = if self.fair { 1 } else { n };
        loop {
            let Some(turn) = self.local.turn(need, deadline, |waiter| self.nudge(waiter)) else {
                return Ok(None);
            };
            match self.take_in_redis(n, deadline, Some(&turn))? {
                Outcome::Granted(granted, taken) => return self.held(granted, taken).map(Some),
                Outcome::TimedOut => return Ok(None),
                // A thread that wants fewer goes first; queue again behind it.
                Outcome::GaveWay => {}
            }
        }
    }

    /// Takes `n` permits in Redis, waiting there until `deadline` (`None`: forever), by the
    /// thread whose `turn` it is to wait in Redis, if it has one.
    fn take_in_redis(
        &self,
        n: u32,
        deadline: Option<Instant>,
        turn: Option<&Turn>,
    ) -> Result<Outcome<Taken>> {
        let request = &mut TakeRequest {
            semaphore: self,
            n,
            lease_id: self.new_lease_id(),
            waiter: AttemptId::new(),
            turn,
        };
        if let Some(turn) = turn {
            turn.waits_as(request.waiter.as_str());
        }
        let lock = Lock {
            pool: &self.pool,
            route: &self.keys.holders,
            name: &self.name,
            kind: "semaphore",
            options: &self.options,
            labels: &self.labels,
        };
        acquire::acquire(&lock, request, deadline)
    }

    /// The lease core of a grant of permits.
    fn held(&self, granted: NewGrant, taken: Taken) -> Result<(Held<SemaphoreGrant>, u32)> {
        let grant = SemaphoreGrant {
            on: OnServer::of(&self.pool, &self.name, &granted, &self.options),
            keys: self.keys.clone(),
            member: member(taken.n, taken.capacity, granted.token, &taken.lease_id),
            capacity: self.permits,
            fair: self.fair,
            signal_expire: self.options.signal_expire,
        };
        let holder = Holder {
            name: self.name.clone(),
            owner_id: taken.lease_id.as_str().into(),
            fencing_token: Some(granted.token),
            labels: self.labels.clone(),
        };
        let held = Held::granted(grant, holder, &granted, &self.options)?;
        Ok((held, taken.n))
    }

    /// Ends the wait in Redis of the thread whose turn it is (it waits as `waiter`), so
    /// that it gives way to one that wants fewer permits. Best effort: it looks again
    /// within [`HEARTBEAT`](acquire::HEARTBEAT) anyway.
    fn nudge(&self, waiter: &str) {
        let list = self.keys.wake(waiter);
        let list = list.as_str();
        let ms = millis(self.options.signal_expire);
        let pushed = self.run("nudge", |c| {
            redis::pipe()
                .cmd("LPUSH")
                .arg(list)
                .arg(0)
                .ignore()
                .cmd("PEXPIRE")
                .arg(list)
                .arg(ms)
                .ignore()
                .query::<()>(&mut **c)
        });
        if let Err(e) = pushed {
            log::debug!(
                "semaphore `{}`: waking a waiter to give way failed: {e}",
                self.name
            );
        }
    }

    fn fair_arg(&self) -> &'static str {
        if self.fair { "1" } else { "0" }
    }

    /// The script call that takes `waiter` out of the queue.
    fn leave_call(&self, waiter: &str) -> Call {
        let mut call = self.script("leave");
        call.arg(waiter).arg(self.fair_arg());
        call
    }
}

/// What `semaphore.lua` answers to an acquire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Take {
    /// Granted, with the fencing token, under this capacity.
    Granted { token: u64, capacity: u32 },
    /// Not enough permits free (or, in fair mode, a waiter goes first): how long until the
    /// earliest holder's lease runs out (`None`: no holder's will).
    Blocked { left: Option<Duration> },
    /// More permits asked for than the capacity.
    OverCapacity { capacity: u32 },
    /// This request was undone: a copy of it that came late (a live call never sends an
    /// id again once it is undone).
    Undone,
}

impl redis::FromRedisValue for Take {
    fn from_redis_value(v: redis::Value) -> std::result::Result<Self, redis::ParsingError> {
        let (outcome, detail, capacity) =
            <(i64, i64, i64) as redis::FromRedisValue>::from_redis_value(v)?;
        let number = |n: i64| u32::try_from(n).map_err(|_| scripts::bad("semaphore", outcome, n));
        Ok(match outcome {
            1 => Take::Granted {
                token: u64::try_from(detail)
                    .map_err(|_| scripts::bad("semaphore", outcome, detail))?,
                capacity: number(capacity)?,
            },
            0 => Take::Blocked {
                left: u64::try_from(detail).ok().map(Duration::from_millis),
            },
            -2 => Take::OverCapacity {
                capacity: number(detail)?,
            },
            3 => Take::Undone,
            _ => return Err(scripts::bad("semaphore", outcome, detail)),
        })
    }
}

/// What a grant of permits carries besides its token.
struct Taken {
    n: u32,
    lease_id: String,
    /// The capacity it was granted under.
    capacity: u32,
}

/// An acquire of `n` permits: one lease id and one waiter id for the whole call.
struct TakeRequest<'a> {
    semaphore: &'a RedisSemaphore,
    n: u32,
    lease_id: String,
    waiter: AttemptId,
    /// The turn to wait in Redis of the thread that asks, if it has one.
    turn: Option<&'a Turn>,
}

impl Request for TakeRequest<'_> {
    type Reply = Take;
    type Extra = Taken;
    const QUEUES: bool = true;

    fn signals(&self) -> Vec<String> {
        vec![self.semaphore.keys.wake(self.waiter.as_str())]
    }

    fn attempt(&mut self, queue: bool) -> Call {
        let semaphore = self.semaphore;
        let mut call = semaphore.script("acquire");
        call.arg(&self.lease_id)
            .arg(self.n)
            .arg(semaphore.options.expire.map_or(0, millis))
            .arg(self.waiter.as_str())
            .arg(if queue { millis(ENTRY_TTL) } else { 0 })
            .arg(semaphore.fair_arg())
            .arg(millis(CAPACITY_LIFE));
        call
    }

    fn read(&mut self, reply: Take) -> Result<Found<Taken>> {
        Ok(match reply {
            Take::Granted { token, capacity } => Found::Granted {
                token,
                extra: Taken {
                    n: self.n,
                    lease_id: std::mem::take(&mut self.lease_id),
                    capacity,
                },
            },
            Take::Blocked { left } => Found::Blocked(acquire::until_expiry(left)),
            Take::OverCapacity { capacity } => {
                return Err(Error::invalid(
                    "permits",
                    format!(
                        "asked for {} permit(s) of semaphore `{}`, whose capacity is \
                         {capacity}; ask for fewer, or raise it with set_permits",
                        self.n, self.semaphore.name
                    ),
                ));
            }
            Take::Undone => {
                return Err(Error::Protocol {
                    what: "an undone request",
                });
            }
        })
    }

    /// Removes the attempt's grant, if it was made, and its queue entry.
    fn undo(&self) -> Vec<Call> {
        let mut release = self.semaphore.script("release");
        release
            .arg(&self.lease_id)
            .arg(self.semaphore.fair_arg())
            .arg("1")
            .arg(millis(undo_window(self.semaphore.options.response_timeout)))
            .arg(millis(CAPACITY_LIFE));
        vec![release, self.semaphore.leave_call(self.waiter.as_str())]
    }

    fn withdraw(&self) -> Option<Call> {
        Some(self.semaphore.leave_call(self.waiter.as_str()))
    }

    /// A new lease id (the undone one is refused from now on) and a new waiter.
    fn undone(&mut self) {
        self.lease_id = self.semaphore.new_lease_id();
        self.waiter = AttemptId::new();
        if let Some(turn) = self.turn {
            turn.waits_as(self.waiter.as_str());
        }
    }

    fn give_way(&self) -> bool {
        self.turn.is_some_and(Turn::should_give_way)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::{FromRedisValue, Value};

    #[test]
    fn semaphore_replies_decode() {
        let triple = |a, b, c| Value::Array(vec![Value::Int(a), Value::Int(b), Value::Int(c)]);
        assert_eq!(
            Take::from_redis_value(triple(1, 7, 5)).unwrap(),
            Take::Granted {
                token: 7,
                capacity: 5
            }
        );
        assert_eq!(
            Take::from_redis_value(triple(0, 250, 0)).unwrap(),
            Take::Blocked {
                left: Some(Duration::from_millis(250))
            }
        );
        assert_eq!(
            Take::from_redis_value(triple(0, -1, 0)).unwrap(),
            Take::Blocked { left: None }
        );
        assert_eq!(
            Take::from_redis_value(triple(-2, 3, 0)).unwrap(),
            Take::OverCapacity { capacity: 3 }
        );
        assert_eq!(
            Take::from_redis_value(triple(3, 0, 0)).unwrap(),
            Take::Undone
        );
        assert!(Take::from_redis_value(triple(9, 0, 0)).is_err());
    }
}
