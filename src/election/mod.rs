//! [`RedisElection`]: leader election on a Redis lease. Its builder is in `builder.rs`, the
//! leader's guard in `guard.rs`, followers' [`Observer`] in `observe.rs`, what the operator
//! tools see in `family.rs`.
//!
//! A term is a grant of a mutex under the election's own keys (`election:<name>`: no
//! python-redis-lock client takes them), so leading is holding that mutex: its lease,
//! renewal, lost-lease notice, fair mode, local turns and fencing tokens are the mutex's.
//! What the election adds is the value its leader proclaims, beside the lock and living as
//! long as its lease, and observers woken by every change of it.

mod builder;
mod family;
mod guard;
mod keys;
mod observe;

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use crate::conn;
use crate::error::{Error, Result, TryLockError};
use crate::keys::Scheme;
use crate::metrics::Labels;
use crate::mutex::{AttemptExtra, RedisMutex};
use crate::options::{Defaults, LockOptions, LockOptionsBuilder};
use crate::pool::Pool;
use crate::scripts::{Call, Lua, lua};
use crate::time::{Deadline, millis};
use keys::ElectionKeys;

pub use builder::RedisElectionBuilder;
pub(crate) use family::Elections;
pub use guard::{ArcLeadership, Leadership};
use guard::{Of, Term};
pub use observe::Observer;

/// Proclaims a leader's value, withdraws it, or clears it; wakes the observers.
static PROCLAIM: LazyLock<Lua> = lua!(
    ["scripts/clock.lua", "scripts/now.lua", "election/value.lua"],
    "election/proclaim.lua"
);
/// The mutex's acquire and, with a grant, the proclaim of its term's value, in one call
/// (the default mode): the acquire's script is wrapped whole as the function `take_lock`.
static CAMPAIGN: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        "election/campaign.lua",
        concat!(
            include_str!("../scripts/clock.lua"),
            include_str!("../scripts/now.lua"),
            include_str!("../scripts/fence.lua"),
            "local function take_lock()\n",
            include_str!("../mutex/acquire.lua"),
            "end\n",
            include_str!("value.lua"),
            include_str!("campaign.lua"),
        ),
    )
});
/// Reads who leads (and keeps an observer registered).
static LEADER: LazyLock<Lua> = lua!(
    ["scripts/clock.lua", "scripts/now.lua", "scripts/touch.lua"],
    "election/leader.lua"
);

/// An election's defaults: a leader that crashed keeps the role 10 s at most; a live one
/// is renewed.
const DEFAULTS: Defaults = Defaults {
    expire: Some(Duration::from_secs(10)),
    auto_renewal: true,
};

/// How long an observer's registration lives unless it reads again (it reads at least
/// every third of it), and how long a wake-up waits for it.
const OBSERVER_TTL: Duration = Duration::from_secs(30);

/// Who leads an election: what [`RedisElection::leader`] and an [`Observer`] report.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Leader {
    /// The leader's owner id ([`RedisElectionBuilder::owner_id`]).
    pub owner_id: String,
    /// What it proclaimed ([`RedisElection::campaign`], [`Leadership::proclaim`]).
    pub value: String,
    /// Its term: its grant's fencing token, higher than every earlier term's.
    pub term: u64,
    /// How long its lease has left, on the server's clock when it was read; `None` for a
    /// lease without expiry.
    pub expires_in: Option<Duration>,
}

/// Leader election: candidates [`campaign`](Self::campaign), one at a time leads, and
/// everyone can ask [who leads](Self::leader) or [observe](Self::observe) every change.
///
/// The leader holds a lease in Redis, renewed while its [`Leadership`] lives and freed when
/// it is dropped or [resigned](Leadership::resign); a leader that crashes keeps the role
/// until its lease ends ([`expire`](RedisElectionBuilder::expire), 10 s by default). Each
/// term has a [term number](Leadership::term): a fencing token, higher than every earlier
/// term's, across restarts and failovers. A Redis lease is not consensus: a leader that
/// pauses past its lease, or a failover that loses the latest writes, can leave two
/// processes that each believe they lead for a moment. Check
/// [`ensure_held`](Leadership::ensure_held) before each step that must not run twice, or
/// better, have the storage it writes to refuse a term lower than one it has seen
/// (`docs/election.md`).
///
/// Candidates of one process take turns locally, as the mutex's waiters do: one of them
/// waits in Redis, asleep in `BLPOP` until a resign wakes it or the leader's lease ends.
///
/// # Examples
///
/// ```no_run
/// use redis_mutex::{Pool, RedisElection};
///
/// let pool = Pool::new("redis://127.0.0.1/")?;
/// let election = RedisElection::new(pool, "scheduler")?;
/// let leadership = election.campaign("10.0.0.7:8080")?; // blocks until we lead
/// println!("leading, term {}", leadership.term());
/// while leadership.ensure_held().is_ok() {
///     // ... one step of the leader's work, fenced with leadership.term() ...
/// #   break;
/// }
/// leadership.resign()?;
/// # Ok::<(), redis_mutex::Error>(())
/// ```
#[derive(Debug)]
pub struct RedisElection {
    pool: Pool,
    /// The leader's lock: a mutex under the election's keys.
    mutex: Arc<RedisMutex>,
    name: Arc<str>,
    keys: ElectionKeys,
    options: LockOptions,
}

impl RedisElection {
    /// An election named `name` on `pool`, with the default options: a 10 s lease,
    /// renewed while a candidate leads, and a random owner id.
    ///
    /// Any non-empty string of at most [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) bytes is a
    /// name; the keys are `election:<name>` and others beside it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] for an empty name, or one longer than
    /// [`MAX_NAME_LEN`](crate::MAX_NAME_LEN).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::{Pool, RedisElection};
    ///
    /// let election = RedisElection::new(Pool::new("redis://127.0.0.1/")?, "scheduler")?;
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn new(pool: Pool, name: impl Into<String>) -> Result<RedisElection> {
        RedisElection::builder(pool, name).build()
    }

    /// A builder for an election named `name` on `pool`, to set its options.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use redis_mutex::{Pool, RedisElection};
    ///
    /// let election = RedisElection::builder(Pool::new("redis://127.0.0.1/")?, "scheduler")
    ///     .expire(Duration::from_secs(3))
    ///     .owner_id("host-7")
    ///     .build()?;
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn builder(pool: Pool, name: impl Into<String>) -> RedisElectionBuilder {
        RedisElectionBuilder {
            pool,
            name: name.into(),
            options: LockOptionsBuilder::default(),
            fair: false,
        }
    }

    fn with_options(pool: Pool, name: String, options: LockOptions, fair: bool) -> RedisElection {
        let keys = ElectionKeys::new(&name, Scheme::of(&pool));
        let mutex = Arc::new(RedisMutex::of_election(
            pool.clone(),
            name.clone(),
            options.clone(),
            fair,
            keys.value.clone(),
        ));
        RedisElection {
            pool,
            mutex,
            name: name.into(),
            keys,
            options,
        }
    }

    /// The election's name, as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This candidate's owner id: what [`leader`](Self::leader) shows while it leads.
    pub fn owner_id(&self) -> &str {
        &self.options.owner_id
    }

    /// The leader's lease ([`RedisElectionBuilder::expire`]).
    pub fn expire(&self) -> Duration {
        self.options.expire.unwrap_or(Duration::MAX)
    }

    /// Whether candidates are elected in order of arrival ([`RedisElectionBuilder::fair`]).
    pub fn is_fair(&self) -> bool {
        self.mutex.is_fair()
    }

    /// Blocks until this candidate leads, proclaims `value` for its term, and returns the
    /// [`Leadership`] guard; dropping it (or [`resign`](Leadership::resign)) ends the term.
    ///
    /// `value` is what observers and [`leader`](Self::leader) read: an address, a shard map
    /// as JSON. Candidates of this process take turns to wait in Redis, as a mutex's
    /// waiters do; campaigning again from a thread that leads waits for ever, as locking a
    /// held mutex does.
    ///
    /// # Errors
    ///
    /// The errors of [`RedisMutex::lock`]: [`Error::Unreachable`], [`Error::Timeout`],
    /// [`Error::PoolTimeout`], [`Error::Redis`], [`Error::WrongType`] (a key of the election
    /// holds something else), [`Error::NotReplicated`] with `wait_replicas`. This candidate
    /// does not lead then.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::{Pool, RedisElection};
    ///
    /// let election = RedisElection::new(Pool::new("redis://127.0.0.1/")?, "scheduler")?;
    /// let leadership = election.campaign("10.0.0.7:8080")?;
    /// assert_eq!(election.leader()?.unwrap().term, leadership.term());
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn campaign(&self, value: impl Into<String>) -> Result<Leadership<'_>> {
        forever(self.campaign_until(value.into(), None))
    }

    /// Leads now if nobody does, without waiting.
    ///
    /// # Errors
    ///
    /// [`TryLockError::WouldBlock`] when another candidate leads (asked of Redis, one round
    /// trip); [`TryLockError::Error`] for the failures listed under
    /// [`campaign`](Self::campaign).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::{Pool, RedisElection, TryLockError};
    ///
    /// let election = RedisElection::new(Pool::new("redis://127.0.0.1/")?, "scheduler")?;
    /// match election.try_campaign("host-7") {
    ///     Ok(leadership) => println!("leading, term {}", leadership.term()),
    ///     Err(TryLockError::WouldBlock) => println!("another candidate leads"),
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_campaign(&self, value: impl Into<String>) -> Result<Leadership<'_>, TryLockError> {
        self.campaign_until(value.into(), Some(Instant::now()))
    }

    /// Campaigns for up to `timeout`.
    ///
    /// Returns by `timeout` plus one response timeout (as a mutex's `try_lock_for`), in
    /// fair mode plus two: a term handed over by a resign is proclaimed with a request of
    /// its own.
    ///
    /// # Errors
    ///
    /// [`TryLockError::WouldBlock`] when another candidate led until the deadline;
    /// [`TryLockError::Error`] for the failures listed under [`campaign`](Self::campaign).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use redis_mutex::{Pool, RedisElection};
    ///
    /// let election = RedisElection::new(Pool::new("redis://127.0.0.1/")?, "scheduler")?;
    /// if let Ok(leadership) = election.try_campaign_for("host-7", Duration::from_secs(30)) {
    ///     // leading
    /// }
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn try_campaign_for(
        &self,
        value: impl Into<String>,
        timeout: Duration,
    ) -> Result<Leadership<'_>, TryLockError> {
        self.campaign_until(value.into(), Instant::now().checked_add(timeout))
    }

    /// Like [`campaign`](Self::campaign), for an `Arc<RedisElection>`: the [`Leadership`]
    /// owns a reference to the election, so it is `'static` ([`ArcLeadership`]) and can be
    /// kept in a struct, returned, or sent to another thread (as the mutex's
    /// [`lock_arc`](crate::RedisMutex::lock_arc)).
    ///
    /// # Errors
    ///
    /// As for [`campaign`](Self::campaign).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use redis_mutex::{ArcLeadership, Pool, RedisElection};
    ///
    /// struct Scheduler {
    ///     leadership: ArcLeadership,
    /// }
    ///
    /// let election = Arc::new(RedisElection::new(Pool::new("redis://127.0.0.1/")?, "scheduler")?);
    /// let scheduler = Scheduler { leadership: election.campaign_arc("10.0.0.7:8080")? };
    /// std::thread::spawn(move || scheduler.leadership.resign()).join().unwrap()?;
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn campaign_arc(self: &Arc<Self>, value: impl Into<String>) -> Result<ArcLeadership> {
        forever(self.campaign_arc_until(value.into(), None))
    }

    /// Like [`try_campaign_for`](Self::try_campaign_for), for an `Arc<RedisElection>`; see
    /// [`campaign_arc`](Self::campaign_arc). A zero `timeout` makes one attempt, as
    /// [`try_campaign`](Self::try_campaign).
    ///
    /// # Errors
    ///
    /// As for [`try_campaign_for`](Self::try_campaign_for).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use redis_mutex::{Pool, RedisElection};
    ///
    /// let election = Arc::new(RedisElection::new(Pool::new("redis://127.0.0.1/")?, "scheduler")?);
    /// if let Ok(leadership) = election.try_campaign_arc_for("host-7", Duration::ZERO) {
    ///     std::thread::spawn(move || drop(leadership));
    /// }
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn try_campaign_arc_for(
        self: &Arc<Self>,
        value: impl Into<String>,
        timeout: Duration,
    ) -> Result<ArcLeadership, TryLockError> {
        self.campaign_arc_until(value.into(), Instant::now().checked_add(timeout))
    }

    /// Campaigns until `until` (`None`: for ever), borrowing the election.
    fn campaign_until(
        &self,
        value: String,
        until: Option<Instant>,
    ) -> Result<Leadership<'_>, TryLockError> {
        let campaign = Campaign::new(self, &value);
        campaign_loop(&value, until, |until| {
            // In fair mode a handed-over grant knows nothing of the campaign's part: its
            // value is proclaimed after.
            let guard = self.mutex.lock_with(until, &campaign)?;
            let (guard, proclaimed) = (guard.ok_or(TryLockError::WouldBlock)?, !self.is_fair());
            Ok((Of::Borrowed(self), Term::Borrowed(guard), proclaimed))
        })
    }

    /// Campaigns until `until` (`None`: for ever), owning a reference to the election.
    fn campaign_arc_until(
        self: &Arc<Self>,
        value: String,
        until: Option<Instant>,
    ) -> Result<ArcLeadership, TryLockError> {
        let campaign = Campaign::new(self, &value);
        campaign_loop(&value, until, |until| {
            // In fair mode a handed-over grant knows nothing of the campaign's part: its
            // value is proclaimed after.
            let guard = self.mutex.lock_arc_with(until, &campaign)?;
            let (guard, proclaimed) = (guard.ok_or(TryLockError::WouldBlock)?, !self.is_fair());
            Ok((Of::Owned(self.clone()), Term::Owned(guard), proclaimed))
        })
    }

    /// Who leads now, asked of Redis: the holder of the election's lease that proclaimed
    /// its value for its term. `None` when nobody does (between terms; in fair mode, also
    /// for the round trip between a term handed over and its value proclaimed).
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Timeout`], [`Error::PoolTimeout`] or
    /// [`Error::Redis`] when Redis cannot be asked; [`Error::WrongType`] when a key of the
    /// election holds something else.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::{Pool, RedisElection};
    ///
    /// let election = RedisElection::new(Pool::new("redis://127.0.0.1/")?, "scheduler")?;
    /// match election.leader()? {
    ///     Some(leader) => println!("{} leads at {} (term {})", leader.owner_id, leader.value, leader.term),
    ///     None => println!("nobody leads"),
    /// }
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn leader(&self) -> Result<Option<Leader>> {
        read_leader(&self.pool, &self.name, &self.keys, None, self.deadline())
    }

    /// Follows the election: an [`Observer`] whose first item is who leads now, then one
    /// item per change (a new leader, a new value, nobody leading).
    ///
    /// # Errors
    ///
    /// As for [`leader`](Self::leader), which it reads first.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::{Pool, RedisElection};
    ///
    /// let election = RedisElection::new(Pool::new("redis://127.0.0.1/")?, "scheduler")?;
    /// for change in election.observe()? {
    ///     match change? {
    ///         Some(leader) => println!("{} leads (term {}): {}", leader.owner_id, leader.term, leader.value),
    ///         None => println!("nobody leads"),
    ///     }
    /// #   break;
    /// }
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn observe(&self) -> Result<Observer> {
        Observer::start(
            self.pool.clone(),
            self.name.clone(),
            self.keys.clone(),
            self.options.response_timeout,
            Labels::new("election", self.options.metrics_label.clone()),
        )
    }

    /// Forces a new election: ends the current term whoever holds it (an operator's tool,
    /// for a leader that is stuck), wakes observers and one waiting candidate. The leader
    /// is not told until its next renewal or check finds the term gone.
    ///
    /// Returns whether a term was ended.
    ///
    /// # Errors
    ///
    /// As for [`leader`](Self::leader).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::{Pool, RedisElection};
    ///
    /// let election = RedisElection::new(Pool::new("redis://127.0.0.1/")?, "scheduler")?;
    /// if election.reset()? {
    ///     println!("the stuck leader's term was ended");
    /// }
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn reset(&self) -> Result<bool> {
        // The value of the term being ended (only that term's: a copy of this call that
        // comes late must not clear a later one's), then the term.
        match self.leader() {
            Ok(Some(leader)) => {
                if let Err(e) = self.send_proclaim(ValueOp::Clear, "", leader.term, "", 0) {
                    log::warn!(
                        "election `{}`: its value could not be cleared: {e}",
                        self.name
                    );
                }
            }
            Ok(None) => {}
            Err(e @ Error::WrongType { .. }) => {
                log::warn!(
                    "election `{}`: {e}; ending its term all the same",
                    self.name
                );
            }
            Err(e) => return Err(e),
        }
        self.mutex.reset()
    }

    /// Sends `proclaim.lua`'s `op` (`seq`: a proclaim's number in its term); whether it was
    /// done (`false`: the term leads no more).
    fn send_proclaim(
        &self,
        op: ValueOp,
        owner: &str,
        term: u64,
        value: &str,
        seq: u64,
    ) -> Result<bool> {
        let call = proclaim_call(&self.keys, op, owner, term, value, seq);
        send_value_op(
            &self.pool,
            &self.name,
            &self.keys.lock,
            &call,
            op,
            self.deadline(),
        )
    }

    /// Withdraws the value of `term` on the release thread, which sends it again while the
    /// lease lasts: a proclaim whose reply was lost may have told observers of a term that
    /// is given up now.
    fn withdraw_later(&self, term: u64) {
        let (pool, name, lock) = (self.pool.clone(), self.name.clone(), self.keys.lock.clone());
        let call = proclaim_call(&self.keys, ValueOp::Withdraw, self.owner_id(), term, "", 0);
        let rt = self.options.response_timeout;
        let release = crate::release::Release {
            kind: "election value",
            name: self.name.to_string(),
            send: Box::new(move || {
                send_value_op(
                    &pool,
                    &name,
                    &lock,
                    &call,
                    ValueOp::Withdraw,
                    Deadline::after(rt),
                )
            }),
        };
        if let Err(e) = crate::release::retry(release, self.expire()) {
            log::debug!("election `{}`: term {term}'s value stays: {e}", self.name);
        }
    }

    fn deadline(&self) -> Deadline {
        Deadline::after(self.options.response_timeout)
    }
}

/// Sends a call of `proclaim.lua` (`op`) to the election `name` (`lock`: its lock key, which
/// routes it), due by `deadline`; whether it was done.
fn send_value_op(
    pool: &Pool,
    name: &str,
    lock: &str,
    call: &Call,
    op: ValueOp,
    deadline: Deadline,
) -> Result<bool> {
    let ran = conn::run_repeatable(pool, lock, deadline, |c| call.invoke::<i64>(c))?;
    match ran.reply(name, op.word())? {
        1 => Ok(true),
        0 => Ok(false),
        -1 => Err(wrong_type(name)),
        _ => Err(Error::Protocol { what: "proclaim" }),
    }
}

/// A campaign's part of each attempt of the default mode (`campaign.lua`): the value its
/// grant proclaims; undone, after the mutex's undo, by withdrawing a value whose term is
/// not held.
struct Campaign<'a> {
    keys: &'a ElectionKeys,
    owner: &'a str,
    value: &'a str,
}

impl<'a> Campaign<'a> {
    fn new(election: &'a RedisElection, value: &'a str) -> Campaign<'a> {
        Campaign {
            keys: &election.keys,
            owner: election.owner_id(),
            value,
        }
    }
}

impl AttemptExtra for Campaign<'_> {
    fn script(&self) -> &'static Lua {
        &CAMPAIGN
    }

    fn add(&self, call: &mut Call) {
        call.key(&self.keys.value)
            .key(&self.keys.observers)
            .arg(self.value)
            .arg(&self.keys.observe_prefix)
            .arg(millis(OBSERVER_TTL));
    }

    fn undo(&self) -> Call {
        proclaim_call(self.keys, ValueOp::Orphan, self.owner, 0, "", 0)
    }
}

/// What `proclaim.lua` is asked to do.
#[derive(Debug, Clone, Copy)]
enum ValueOp {
    /// Proclaim a value for a term, by its leader.
    Proclaim,
    /// Withdraw a term's value, by its leader resigning.
    Withdraw,
    /// Clear a term's value, by a reset.
    Clear,
    /// Withdraw an owner's value whose term it does not hold (after an undone campaign).
    Orphan,
}

impl ValueOp {
    fn word(self) -> &'static str {
        match self {
            ValueOp::Proclaim => "proclaim",
            ValueOp::Withdraw => "withdraw",
            ValueOp::Clear => "clear",
            ValueOp::Orphan => "orphan",
        }
    }
}

/// A call of `proclaim.lua` on the election of `keys`.
fn proclaim_call(
    keys: &ElectionKeys,
    op: ValueOp,
    owner: &str,
    term: u64,
    value: &str,
    seq: u64,
) -> Call {
    let mut call = PROCLAIM.call();
    call.key(&keys.lock)
        .key(&keys.grant)
        .key(&keys.value)
        .key(&keys.observers)
        .arg(op.word())
        .arg(owner)
        .arg(term)
        .arg(value)
        .arg(&keys.observe_prefix)
        .arg(millis(OBSERVER_TTL))
        .arg(seq);
    call
}

/// Wins a term (`take`, until `until`) and proclaims `value` for it; a term lost before
/// its value was proclaimed (reset in between) is campaigned for again, until `until`.
fn campaign_loop<'a>(
    value: &str,
    until: Option<Instant>,
    mut take: impl FnMut(Option<Instant>) -> Result<(Of<'a>, Term<'a>, bool), TryLockError>,
) -> Result<Leadership<'a>, TryLockError> {
    loop {
        // `proclaimed`: by the grant's own call (the default mode).
        let (election, guard, proclaimed) = take(until)?;
        if proclaimed {
            return Ok(Leadership::new(election, guard, value.to_owned()));
        }
        let term = guard.fencing_token();
        let owner = election.get().owner_id();
        match election
            .get()
            .send_proclaim(ValueOp::Proclaim, owner, term, value, 1)
        {
            Ok(true) => return Ok(Leadership::new(election, guard, value.to_owned())),
            Ok(false) => {}
            Err(e) => {
                // It may have been proclaimed (a lost reply), and observers told: withdrawn
                // in the background, so that this call keeps its bound.
                election.get().withdraw_later(term);
                return Err(e.into());
            }
        }
        log::debug!(
            "election `{}`: term {term} ended before it was proclaimed",
            election.get().name
        );
        drop(guard);
        if until.is_some_and(|until| Instant::now() >= until) {
            return Err(TryLockError::WouldBlock);
        }
    }
}

/// The result of a campaign without deadline, which never would block.
fn forever<T>(campaign: Result<T, TryLockError>) -> Result<T> {
    campaign.map_err(|e| match e {
        TryLockError::Error(e) => e,
        TryLockError::WouldBlock => Error::Protocol {
            what: "a campaign without deadline that ended",
        },
    })
}

/// The error for an election whose keys hold another type.
fn wrong_type(name: &str) -> Error {
    Error::WrongType {
        name: name.to_owned(),
        key: None,
    }
}

/// Reads who leads the election `name` (`observer`: an observer's id, kept registered).
fn read_leader(
    pool: &Pool,
    name: &str,
    keys: &ElectionKeys,
    observer: Option<&str>,
    deadline: Deadline,
) -> Result<Option<Leader>> {
    let call = leader_call(keys, observer);
    let ran = conn::run_repeatable(pool, &keys.lock, deadline, |c| {
        call.invoke::<redis::Value>(c)
    })?;
    let reply = ran.reply(name, "leader")?;
    parse_leader(name, reply)
}

/// A call of `leader.lua` on the election of `keys` (`observer`: an observer's id, kept
/// registered).
fn leader_call(keys: &ElectionKeys, observer: Option<&str>) -> Call {
    let mut call = LEADER.call();
    call.key(&keys.lock).key(&keys.grant).key(&keys.value);
    if let Some(id) = observer {
        call.key(&keys.observers)
            .key(keys.observe(id))
            .arg(id)
            .arg(millis(OBSERVER_TTL));
    }
    call
}

/// `leader.lua`'s reply.
fn parse_leader(name: &str, reply: redis::Value) -> Result<Option<Leader>> {
    if let redis::Value::Int(-1) = reply {
        return Err(wrong_type(name));
    }
    let fields: Vec<redis::Value> =
        redis::from_redis_value(reply).map_err(|_| Error::Protocol { what: "leader" })?;
    if fields.is_empty() {
        return Ok(None);
    }
    let (owner_id, term, value, pttl): (String, String, String, i64) =
        redis::from_redis_value(redis::Value::Array(fields))
            .map_err(|_| Error::Protocol { what: "leader" })?;
    Ok(Some(Leader {
        owner_id,
        value,
        term: term
            .parse()
            .map_err(|_| Error::Protocol { what: "leader" })?,
        expires_in: crate::family::expires_in(pttl),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn a_leader_is_read_back() {
        let reply = Value::Array(vec![
            bulk("host-7"),
            bulk("1796684141756204"),
            bulk("10.0.0.7:8080"),
            Value::Int(1500),
        ]);
        let leader = parse_leader("e", reply).unwrap().unwrap();
        assert_eq!(leader.owner_id, "host-7");
        assert_eq!(leader.term, 1_796_684_141_756_204);
        assert_eq!(leader.value, "10.0.0.7:8080");
        assert_eq!(leader.expires_in, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn nobody_and_wrong_types_are_told_apart() {
        assert_eq!(parse_leader("e", Value::Array(vec![])).unwrap(), None);
        assert!(matches!(
            parse_leader("e", Value::Int(-1)),
            Err(Error::WrongType { .. })
        ));
        assert!(matches!(
            parse_leader("e", Value::Array(vec![bulk("x")])),
            Err(Error::Protocol { .. })
        ));
    }
}
