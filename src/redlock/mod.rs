//! [`Redlock`], its builder, and [`RedlockGuard`]: one lock held on a majority of independent
//! Redis servers, after the algorithm of the redis.io page "Distributed Locks with Redis".
//!
//! `quorum` holds the quorum and validity arithmetic, `fanout` the parallel per-instance
//! requests, `builder` the options, `guard` a held lock, `grant` what the guard releases,
//! extends and renews, and `extension` its extend round and auto-extension;
//! `docs/redlock.md` explains the algorithm and its limits.

mod builder;
mod extension;
mod family;
mod fanout;
mod grant;
mod guard;
mod quorum;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::conn::Conn;
use crate::error::{Error, Result, TryLockError};
use crate::held::Held;
use crate::lease::{Holder, Lease, OnLost};
use crate::metrics::{self, Labels};
use crate::options::random_id;
use crate::pool::Pool;
use crate::scripts::{Lua, lua};
use crate::time::millis;
use builder::{
    DEFAULT_DRIFT_FACTOR, DEFAULT_INSTANCE_TIMEOUT, DEFAULT_RETRY_COUNT, DEFAULT_RETRY_DELAY,
    check_extendable_ttl, check_resource, check_ttl,
};
use extension::Claim;
use fanout::{Reply, fan_out, request};
use grant::RedlockGrant;
use quorum::{Majority, granted_for, majority, quorum, retry_wait};

pub use builder::RedlockBuilder;
pub(crate) use family::Redlocks;
pub use guard::RedlockGuard;

/// Tells Redlocks apart, for the renewal lanes of their auto-extended guards.
static NEXT_REDLOCK_ID: AtomicU64 = AtomicU64::new(1);

/// `SET NX PX` of one instance's key (redlock-py's), and its marker.
static ACQUIRE: LazyLock<Lua> = lua!([], "redlock/acquire.lua");
/// Compare-and-delete of one instance's key (redlock-py's), and its marker.
static RELEASE: LazyLock<Lua> = lua!([], "redlock/release.lua");
/// Compare-and-extend of one instance's key, and its marker.
static EXTEND: LazyLock<Lua> = lua!([], "redlock/extend.lua");
/// The operator tools: remove the keys that markers name.
static CLEAR: LazyLock<Lua> = lua!([], "redlock/clear.lua");
/// The operator tools: what the keys that markers name hold.
static LIST: LazyLock<Lua> = lua!([], "redlock/list.lua");

/// A lock held on a majority of independent Redis servers, so that it survives the loss of
/// a minority of them: the Redlock algorithm of the redis.io page "Distributed Locks with
/// Redis", compatible with [redlock-py].
///
/// Give it one [`Pool`] per Redis server, five being the usual choice (it then works with
/// two of them down). The servers must be independent primaries, not replicas of each
/// other; each pool may be a single server, a Sentinel-managed primary or a cluster.
///
/// [`lock`](Self::lock) sets the resource's key to a fresh random token, with `SET NX PX`,
/// on every server at once (one thread per server, each bounded by the
/// [instance timeout](RedlockBuilder::instance_timeout)), and holds the lock when a majority
/// granted it with time to spare: the ttl less the time the round took and a margin for
/// clock drift. Otherwise it releases whatever it got, on every server that may have set
/// the key, waits a random delay, and tries again, up to
/// [`retry_count`](RedlockBuilder::retry_count) times.
///
/// # Differences from [`RedisMutex`](crate::RedisMutex)
///
/// - Several servers, not one; a minority of them may be down, stalled or refusing.
/// - The key is the resource name itself (no `lock:` prefix) and the value a token made
///   anew for each attempt, as in redlock-py, so that both exclude each other.
/// - Every lock expires: there is a ttl per call, and the guard's
///   [`valid_for`](RedlockGuard::valid_for) says how much of it is certainly left.
///   [Auto-extension](RedlockBuilder::auto_extend) keeps it alive on a renewal thread, as
///   [auto-renewal](crate::RedisMutexBuilder::auto_renewal) does for a mutex.
/// - Waiting is retrying after random delays (nobody is woken by a release), and threads of
///   one process contend through Redis like separate processes.
///
/// [redlock-py]: https://pypi.org/project/redlock-py/
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use redis_mutex::{Pool, Redlock};
///
/// let mut pools = Vec::new();
/// for url in ["redis://10.0.0.1/", "redis://10.0.0.2/", "redis://10.0.0.3/"] {
///     pools.push(Pool::new(url)?);
/// }
/// let redlock = Redlock::new(pools)?;
/// let guard = redlock.lock("invoice:42", Duration::from_secs(10))?;
/// // ... work that must be done before guard.valid_for() runs out ...
/// guard.unlock()?;
/// # Ok::<(), redis_mutex::Error>(())
/// ```
pub struct Redlock {
    /// Shared with the grants of its guards.
    pools: Arc<[Pool]>,
    /// Tells this Redlock's auto-extensions apart from others'.
    id: u64,
    retry_count: u32,
    retry_delay: Duration,
    drift_factor: f64,
    instance_timeout: Duration,
    auto_extend: bool,
    on_lost: Option<OnLost>,
    labels: Labels,
}

impl fmt::Debug for Redlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redlock")
            .field("instances", &self.pools.len())
            .field("retry_count", &self.retry_count)
            .field("retry_delay", &self.retry_delay)
            .field("drift_factor", &self.drift_factor)
            .field("instance_timeout", &self.instance_timeout)
            .field("auto_extend", &self.auto_extend)
            .field("on_lost", &self.on_lost.as_ref().map(|_| "Fn(&LostLock)"))
            .finish()
    }
}

impl Redlock {
    /// A Redlock over `pools`, one per independent Redis server, with the default options.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] for an empty list.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::{Pool, Redlock};
    ///
    /// let pools = [7001, 7002, 7003, 7004, 7005]
    ///     .map(|port| Pool::new(&format!("redis://127.0.0.1:{port}/")));
    /// let redlock = Redlock::new(pools.into_iter().collect::<Result<Vec<_>, _>>()?)?;
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn new(pools: Vec<Pool>) -> Result<Redlock> {
        Redlock::builder(pools).build()
    }

    /// A builder for a Redlock over `pools`, to set its options.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use redis_mutex::{Pool, Redlock};
    ///
    /// # let pools: Vec<Pool> = Vec::new();
    /// let redlock = Redlock::builder(pools)
    ///     .retry_count(10)
    ///     .retry_delay(Duration::from_millis(100))
    ///     .instance_timeout(Duration::from_millis(20))
    ///     .build()?;
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn builder(pools: Vec<Pool>) -> RedlockBuilder {
        RedlockBuilder {
            redlock: Redlock {
                pools: pools.into(),
                id: NEXT_REDLOCK_ID.fetch_add(1, Ordering::Relaxed),
                retry_count: DEFAULT_RETRY_COUNT,
                retry_delay: DEFAULT_RETRY_DELAY,
                drift_factor: DEFAULT_DRIFT_FACTOR,
                instance_timeout: DEFAULT_INSTANCE_TIMEOUT,
                auto_extend: false,
                on_lost: None,
                labels: Labels::new("redlock", None),
            },
        }
    }

    /// Takes the lock on `resource` for `ttl`, trying again after a random delay when an
    /// attempt gets no majority: the first attempt plus up to
    /// [`retry_count`](RedlockBuilder::retry_count) retries.
    ///
    /// An attempt sets the key `resource` to a fresh 128-bit token with `SET NX PX` on
    /// every instance at once. It succeeds when a majority granted it and the lock's
    /// validity, `ttl − elapsed − (ttl × drift_factor + 2 ms)` from the end of the round,
    /// is positive: `elapsed` counts from before the first request, so no key can expire
    /// before the validity does. A failed attempt is undone at once on every instance
    /// that granted it or may have (one whose reply timed out), before the next attempt.
    ///
    /// The ttl is kept to the millisecond (sub-millisecond parts are dropped). It should be
    /// much longer than the [instance timeout](RedlockBuilder::instance_timeout): a round
    /// slowed by a stalled instance loses that much validity.
    ///
    /// # Errors
    ///
    /// [`Error::NoQuorum`] when the last attempt got no majority in time: the resource is
    /// held elsewhere, or too many instances failed (their errors are in `failures`), or
    /// the round took longer than the ttl allows (then `granted` may reach `needed`).
    /// [`Error::InvalidOptions`] for an empty resource name, a ttl under 1 ms or over 10
    /// years (with [auto-extension](RedlockBuilder::auto_extend), under 30 ms or six
    /// instance timeouts). [`Error::RenewalThread`] with auto-extension, when the renewal
    /// thread could not be started (the lock is released again).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use redis_mutex::{Pool, Redlock};
    ///
    /// # let pools: Vec<Pool> = Vec::new();
    /// let redlock = Redlock::new(pools)?;
    /// match redlock.lock("report", Duration::from_secs(30)) {
    ///     Ok(guard) => println!("held for {:?} at least", guard.valid_for()),
    ///     Err(e) if e.is_no_quorum() => println!("busy or too many servers down: {e}"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn lock(&self, resource: &str, ttl: Duration) -> Result<RedlockGuard<'_>> {
        self.check_request(resource, ttl)?;
        let called = Instant::now();
        let mut retries_left = self.retry_count;
        loop {
            match self.attempt(resource, ttl) {
                Ok(guard) => {
                    let contended = retries_left < self.retry_count;
                    metrics::acquired(&self.labels, called.elapsed(), contended);
                    return Ok(guard);
                }
                Err(e) if e.is_no_quorum() && retries_left > 0 => {
                    retries_left -= 1;
                    let wait = retry_wait(self.retry_delay);
                    log::trace!("redlock `{resource}`: {e}; trying again in {wait:?}");
                    thread::sleep(wait);
                }
                outcome => return outcome,
            }
        }
    }

    /// Makes one attempt at the lock on `resource` for `ttl`, without retries: one round
    /// of requests to all instances, as described under [`lock`](Self::lock).
    ///
    /// # Errors
    ///
    /// [`TryLockError::WouldBlock`] when no instance failed and too few granted: the
    /// resource is held elsewhere. [`TryLockError::Error`] with [`Error::NoQuorum`] when
    /// failing instances (or a round slower than the ttl allows) decided it, and with the
    /// other errors listed under [`lock`](Self::lock).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use redis_mutex::{Pool, Redlock, TryLockError};
    ///
    /// # let pools: Vec<Pool> = Vec::new();
    /// let redlock = Redlock::new(pools)?;
    /// match redlock.try_lock("cron:cleanup", Duration::from_secs(60)) {
    ///     Ok(guard) => { /* this node runs the job this time */ }
    ///     Err(TryLockError::WouldBlock) => println!("another node runs it"),
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_lock(
        &self,
        resource: &str,
        ttl: Duration,
    ) -> Result<RedlockGuard<'_>, TryLockError> {
        self.check_request(resource, ttl)?;
        match self.attempt(resource, ttl) {
            Err(Error::NoQuorum {
                granted,
                needed,
                failures,
            }) if failures.is_empty() && granted < needed => Err(TryLockError::WouldBlock),
            outcome => Ok(outcome?),
        }
    }

    fn check_request(&self, resource: &str, ttl: Duration) -> Result<()> {
        check_resource(resource)?;
        check_ttl(ttl)?;
        if self.auto_extend {
            check_extendable_ttl(ttl, self.instance_timeout)?;
        }
        Ok(())
    }

    /// Whether the key `resource` exists on a majority of instances: whether anyone (this
    /// process, another one, redlock-py) holds the lock now.
    ///
    /// # Errors
    ///
    /// [`Error::NoQuorum`] when too many instances failed to tell: `granted` is then the
    /// number of instances that hold the key. [`Error::InvalidOptions`] for an empty
    /// resource name.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use redis_mutex::{Pool, Redlock};
    ///
    /// # let pools: Vec<Pool> = Vec::new();
    /// let redlock = Redlock::new(pools)?;
    /// let guard = redlock.lock("deploy", Duration::from_secs(10))?;
    /// assert!(redlock.is_locked("deploy")?);
    /// guard.unlock()?;
    /// assert!(!redlock.is_locked("deploy")?);
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn is_locked(&self, resource: &str) -> Result<bool> {
        check_resource(resource)?;
        let timeout = self.instance_timeout;
        let replies = fan_out(self.pools.iter().collect(), |pool| {
            request(pool, resource, None, timeout, |conn, _| {
                redis::cmd("EXISTS").arg(resource).query::<i64>(conn)
            })
        });
        let results: Vec<_> = replies.into_iter().map(|r| r.result).collect();
        let held = results.iter().filter(|r| matches!(r, Ok(1..))).count();
        let failures = failures(results);
        match majority(held, failures.len(), self.pools.len()) {
            Majority::Yes => Ok(true),
            Majority::No => Ok(false),
            Majority::Unknown => Err(Error::NoQuorum {
                granted: held,
                needed: quorum(self.pools.len()),
                failures,
            }),
        }
    }

    /// One round: `SET NX PX` everywhere, then either a guard or a release everywhere the
    /// key may have been set.
    fn attempt(&self, resource: &str, ttl: Duration) -> Result<RedlockGuard<'_>> {
        let token = random_id();
        let ttl_ms = millis(ttl);
        let ttl = Duration::from_millis(ttl_ms);
        let timeout = self.instance_timeout.min(ttl);
        let n = self.pools.len();
        let started = Instant::now();
        let replies = fan_out(self.pools.iter().collect(), |pool| {
            let mut call = ACQUIRE.call();
            call.key(resource)
                .key(family::marker(resource, pool))
                .arg(&token)
                .arg(ttl_ms);
            request(pool, resource, None, timeout, |conn, _| {
                Ok(call.invoke::<i64>(conn)? == 1)
            })
        });
        let finished = Instant::now();
        let elapsed = finished - started;
        let granted = replies
            .iter()
            .filter(|r| matches!(r.result, Ok(true)))
            .count();

        if let Some(valid) = granted_for(granted, n, ttl, elapsed, self.drift_factor) {
            log::debug!(
                "acquired redlock `{resource}` on {granted} of {n} instances in {elapsed:?}; \
                 valid for {valid:?}"
            );
            // Connections with the SET still pending stay with the guard, so that its
            // extend and release reach those instances after the SET, never before it.
            let pending = replies.into_iter().map(|r| r.conn).collect();
            return self.guard(resource, token, pending, ttl, started, finished + valid);
        }

        // Undo the attempt wherever the key may be ours: where it was granted, and where
        // the SET went out without an answer (on that same connection).
        let mut undo = Vec::new();
        let mut failures = Vec::new();
        for (i, reply) in replies.into_iter().enumerate() {
            if matches!(reply.result, Ok(true)) || reply.in_doubt {
                undo.push((i, reply.conn));
            }
            if let Err(e) = reply.result {
                failures.push((i, e));
            }
        }
        log::trace!(
            "redlock `{resource}`: {granted} of {n} granted in {elapsed:?}; undoing on {} \
             instances",
            undo.len()
        );
        for (i, reply) in release_on(&self.pools, self.instance_timeout, resource, &token, undo) {
            if let Err(e) = reply.result {
                log::debug!(
                    "undoing a failed redlock attempt on `{resource}` failed on instance {i}; \
                     the key expires by itself: {e}"
                );
            }
        }
        Err(Error::NoQuorum {
            granted,
            needed: quorum(n),
            failures,
        })
    }

    /// A guard for a lock granted by a round that started at `started`, valid until
    /// `valid_until`; registered for auto-extension if that is on.
    fn guard(
        &self,
        resource: &str,
        token: String,
        pending: Vec<Option<Conn>>,
        ttl: Duration,
        started: Instant,
        valid_until: Instant,
    ) -> Result<RedlockGuard<'_>> {
        let grant = RedlockGrant {
            pools: self.pools.clone(),
            claim: Arc::new(Claim {
                resource: resource.to_owned(),
                token: token.clone(),
                pending: Mutex::new(pending),
            }),
            ttl,
            instance_timeout: self.instance_timeout,
            drift_factor: self.drift_factor,
            redlock_id: self.id,
        };
        let lease = Lease::until(
            Holder {
                name: resource.into(),
                owner_id: token.into(),
                fencing_token: None,
                labels: self.labels.clone(),
            },
            valid_until,
            self.on_lost.clone(),
        );
        // On failure the lock is released again.
        let held = Held::new(grant, lease, Some(ttl), self.auto_extend, started)?;
        Ok(RedlockGuard::new(self, held))
    }
}

/// Runs the compare-and-delete script on the given instances at once, each on the
/// connection with a reply still pending, if one is given.
fn release_on(
    pools: &[Pool],
    timeout: Duration,
    resource: &str,
    token: &str,
    targets: Vec<(usize, Option<Conn>)>,
) -> Vec<(usize, Reply<i64>)> {
    fan_out(targets, |(i, conn)| {
        let mut call = RELEASE.call();
        call.key(resource)
            .key(family::marker(resource, &pools[i]))
            .arg(token);
        let reply = request(&pools[i], resource, conn, timeout, |conn, pending| {
            call.run(conn, pending)
        });
        (i, reply)
    })
}

/// The errors of a round, with the index of their instance.
fn failures<T>(results: Vec<Result<T>>) -> Vec<(usize, Error)> {
    results
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| r.err().map(|e| (i, e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::tests::unconnected as pool;

    #[test]
    fn bad_requests_are_refused_before_any_round_trip() {
        let redlock = Redlock::new(vec![pool(), pool(), pool()]).unwrap();
        let field = |e: Error| match e {
            Error::InvalidOptions { field, .. } => field,
            e => panic!("expected InvalidOptions, got {e}"),
        };
        let try_field = |e: TryLockError| match e {
            TryLockError::Error(e) => field(e),
            e => panic!("expected InvalidOptions, got {e}"),
        };
        let ttl = Duration::from_secs(1);
        assert_eq!(field(redlock.lock("", ttl).unwrap_err()), "resource");
        assert_eq!(
            try_field(redlock.try_lock("r", Duration::ZERO).unwrap_err()),
            "ttl"
        );
        assert_eq!(field(redlock.lock("r", Duration::MAX).unwrap_err()), "ttl");
        assert_eq!(field(redlock.is_locked("").unwrap_err()), "resource");
        assert_eq!(field(Redlock::new(Vec::new()).unwrap_err()), "pools");
        let extended = Redlock::builder(vec![pool()])
            .auto_extend(true)
            .build()
            .unwrap();
        let short = Duration::from_millis(200);
        assert_eq!(field(extended.lock("r", short).unwrap_err()), "ttl");
        assert_eq!(try_field(extended.try_lock("r", short).unwrap_err()), "ttl");
    }
}
