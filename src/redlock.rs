//! [`Redlock`], its builder, and [`RedlockGuard`]: one lock held on a majority of independent
//! Redis servers, after the algorithm of the redis.io page "Distributed Locks with Redis".
//!
//! `quorum` holds the quorum and validity arithmetic, `fanout` the parallel per-instance
//! requests, `builder` the options, `guard` a held lock and `extension` its extend round and
//! auto-extension; `docs/redlock.md` explains the algorithm and its limits.

mod builder;
mod extension;
mod fanout;
mod guard;
mod quorum;

use std::fmt;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::Script;

use crate::conn::Conn;
use crate::lease::{Lease, OnLost, millis};
use crate::options::random_id;
use crate::renewal::{self, Target};
use crate::scripts::REDLOCK_RELEASE;
use crate::{Error, Pool, Result};
use builder::{
    DEFAULT_DRIFT_FACTOR, DEFAULT_INSTANCE_TIMEOUT, DEFAULT_RETRY_COUNT, DEFAULT_RETRY_DELAY,
    check_extendable_ttl, check_pools, check_resource, check_ttl,
};
use extension::{AutoExtend, Claim};
use fanout::{Reply, fan_out, request};
use quorum::{Majority, granted_for, majority, quorum, retry_wait};

pub use builder::RedlockBuilder;
pub use guard::RedlockGuard;

/// The scripts' sources, for `EVAL` on a connection with a request still pending (see
/// [`eval`]).
const RELEASE_SOURCE: &str = include_str!("scripts/redlock_release.lua");
const EXTEND_SOURCE: &str = include_str!("scripts/redlock_extend.lua");

/// A lock held on a majority of independent Redis servers, so that it survives the loss of
/// a minority of them: the Redlock algorithm of the redis.io page "Distributed Locks with
/// Redis", compatible with [redlock-py].
///
/// Give it one [`Pool`] per Redis server, five being the usual choice (it then works with
/// two of them down). The servers must be independent primaries, not replicas of each
/// other.
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
///   [`validity`](RedlockGuard::validity) says how much of it is certainly left.
///   [Auto-extension](RedlockBuilder::auto_extend) keeps it alive on the process's renewal
///   thread, as [auto-renewal](crate::RedisMutexBuilder::auto_renewal) does for a mutex.
/// - Waiting is retrying after random delays (nobody is woken by a release), and threads of
///   one process contend through Redis like separate processes.
///
/// # Pools
///
/// Build each pool with `test_on_check_out(false)`: r2d2 otherwise sends a `PING` on
/// checkout, which on a fresh connection to a stalled server has no timeout and would hang
/// the call.
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
///     let client = redis::Client::open(url)?;
///     pools.push(Pool::builder().test_on_check_out(false).build(client)?);
/// }
/// let redlock = Redlock::new(pools);
/// let guard = redlock.lock("invoice:42", Duration::from_secs(10))?;
/// // ... work that must be done before guard.validity() runs out ...
/// guard.unlock()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Redlock {
    /// Shared with the auto-extension of its guards.
    pools: Arc<[Pool]>,
    retry_count: u32,
    retry_delay: Duration,
    drift_factor: f64,
    instance_timeout: Duration,
    auto_extend: bool,
    on_lost: Option<OnLost>,
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
            .field("on_lost", &self.on_lost.as_ref().map(|_| "Fn(&str)"))
            .finish()
    }
}

impl Redlock {
    /// A Redlock over `pools`, one per independent Redis server, with the default options.
    ///
    /// An empty list is refused by [`builder`](Self::builder)'s `build()`; given here, every
    /// call returns that error.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::{Pool, Redlock};
    ///
    /// let mut pools = Vec::new();
    /// for port in [7001, 7002, 7003, 7004, 7005] {
    ///     let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    ///     pools.push(Pool::builder().test_on_check_out(false).build(client)?);
    /// }
    /// let redlock = Redlock::new(pools);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(pools: Vec<Pool>) -> Redlock {
        Redlock {
            pools: pools.into(),
            retry_count: DEFAULT_RETRY_COUNT,
            retry_delay: DEFAULT_RETRY_DELAY,
            drift_factor: DEFAULT_DRIFT_FACTOR,
            instance_timeout: DEFAULT_INSTANCE_TIMEOUT,
            auto_extend: false,
            on_lost: None,
        }
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
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder(pools: Vec<Pool>) -> RedlockBuilder {
        RedlockBuilder {
            redlock: Redlock::new(pools),
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
    /// instance timeouts), or a Redlock made by [`new`](Self::new) with no pools.
    /// [`Error::RenewalThread`] with auto-extension, when the renewal thread could not be
    /// started (the lock is released again).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use redis_mutex::{Pool, Redlock};
    ///
    /// # let pools: Vec<Pool> = Vec::new();
    /// let redlock = Redlock::new(pools);
    /// match redlock.lock("report", Duration::from_secs(30)) {
    ///     Ok(guard) => println!("held for {:?} at least", guard.validity()),
    ///     Err(e) if e.is_no_quorum() => println!("busy or too many servers down: {e}"),
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock(&self, resource: &str, ttl: Duration) -> Result<RedlockGuard<'_>> {
        self.check_request(resource, ttl)?;
        let mut retries_left = self.retry_count;
        loop {
            match self.attempt(resource, ttl) {
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
    /// As for [`lock`](Self::lock).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use redis_mutex::{Pool, Redlock};
    ///
    /// # let pools: Vec<Pool> = Vec::new();
    /// let redlock = Redlock::new(pools);
    /// if let Ok(guard) = redlock.try_lock("cron:cleanup", Duration::from_secs(60)) {
    ///     // this node runs the job this time
    /// #   drop(guard);
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_lock(&self, resource: &str, ttl: Duration) -> Result<RedlockGuard<'_>> {
        self.check_request(resource, ttl)?;
        self.attempt(resource, ttl)
    }

    fn check_request(&self, resource: &str, ttl: Duration) -> Result<()> {
        check_resource(resource)?;
        check_ttl(ttl)?;
        if self.auto_extend {
            check_extendable_ttl(ttl, self.instance_timeout)?;
        }
        check_pools(&self.pools)
    }

    /// Whether the key `resource` exists on a majority of instances: whether anyone (this
    /// process, another one, redlock-py) holds the lock now.
    ///
    /// # Errors
    ///
    /// [`Error::NoQuorum`] when too many instances failed to tell: `granted` is then the
    /// number of instances that hold the key. [`Error::InvalidOptions`] for an empty
    /// resource name or a Redlock with no pools.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use redis_mutex::{Pool, Redlock};
    ///
    /// # let pools: Vec<Pool> = Vec::new();
    /// let redlock = Redlock::new(pools);
    /// let guard = redlock.lock("deploy", Duration::from_secs(10))?;
    /// assert!(redlock.is_locked("deploy")?);
    /// guard.unlock()?;
    /// assert!(!redlock.is_locked("deploy")?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_locked(&self, resource: &str) -> Result<bool> {
        check_resource(resource)?;
        check_pools(&self.pools)?;
        let timeout = self.instance_timeout;
        let replies = fan_out(self.pools.iter().collect(), |pool| {
            request(pool, None, timeout, |conn, _| {
                redis::cmd("EXISTS").arg(resource).query::<i64>(&mut **conn)
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
            request(pool, None, timeout, |conn, _| {
                let set: Option<String> = redis::cmd("SET")
                    .arg(resource)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .query(&mut **conn)?;
                Ok(set.is_some())
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
        let undone = self.release_on(resource, &token, undo);
        for (i, reply) in undone {
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
        let claim = Arc::new(Claim {
            resource: resource.to_owned(),
            token,
            pending: Mutex::new(pending),
        });
        let lease = Arc::new(Lease::until(resource, valid_until, self.on_lost.clone()));
        let mut guard = RedlockGuard {
            redlock: self,
            claim,
            lease,
            ttl,
            renewal: None,
            released: false,
        };
        if self.auto_extend {
            let target = AutoExtend {
                claim: guard.claim.clone(),
                lease: guard.lease.clone(),
                pools: self.pools.clone(),
                ttl,
                instance_timeout: self.instance_timeout,
                drift_factor: self.drift_factor,
            };
            // On failure the guard is dropped here, which releases the lock again.
            guard.renewal = Some(renewal::register(
                guard.lease.clone(),
                Target::Own(Arc::new(target)),
                started,
            )?);
        }
        Ok(guard)
    }

    /// Runs the compare-and-delete script on the given instances at once, each on the
    /// connection with a reply still pending, if one is given.
    fn release_on(
        &self,
        resource: &str,
        token: &str,
        targets: Vec<(usize, Option<Conn>)>,
    ) -> Vec<(usize, Reply<i64>)> {
        let timeout = self.instance_timeout;
        fan_out(targets, |(i, conn)| {
            let reply = request(&self.pools[i], conn, timeout, |conn, pending| {
                eval(
                    conn,
                    pending,
                    &REDLOCK_RELEASE,
                    RELEASE_SOURCE,
                    resource,
                    token,
                    None,
                )
            });
            (i, reply)
        })
    }
}

/// Runs `script` on one key with our token (and `ms`, if given). On a connection whose
/// replies have all been read this is `EVALSHA` (loading the script on `NOSCRIPT`); on one
/// with a request pending it is a single `EVAL` with the script's source, because nobody
/// will be there to load the script if the server only runs the command after the caller
/// gave up waiting.
fn eval(
    conn: &mut Conn,
    pending: bool,
    script: &Script,
    source: &str,
    key: &str,
    token: &str,
    ms: Option<u64>,
) -> redis::RedisResult<i64> {
    if pending {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(source).arg(1).arg(key).arg(token);
        if let Some(ms) = ms {
            cmd.arg(ms);
        }
        cmd.query(&mut **conn)
    } else {
        let mut invocation = script.key(key);
        invocation.arg(token);
        if let Some(ms) = ms {
            invocation.arg(ms);
        }
        invocation.invoke(&mut **conn)
    }
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
pub(crate) mod tests {
    use super::*;

    pub(crate) fn pool() -> Pool {
        // Never connected: these tests stop at validation.
        let client = redis::Client::open("redis://127.0.0.1:1/").unwrap();
        Pool::builder().min_idle(Some(0)).build_unchecked(client)
    }

    #[test]
    fn bad_requests_are_refused_before_any_round_trip() {
        let redlock = Redlock::new(vec![pool(), pool(), pool()]);
        let field = |e: Error| match e {
            Error::InvalidOptions { field, .. } => field,
            e => panic!("expected InvalidOptions, got {e}"),
        };
        let ttl = Duration::from_secs(1);
        assert_eq!(field(redlock.lock("", ttl).unwrap_err()), "resource");
        assert_eq!(
            field(redlock.try_lock("r", Duration::ZERO).unwrap_err()),
            "ttl"
        );
        assert_eq!(field(redlock.lock("r", Duration::MAX).unwrap_err()), "ttl");
        assert_eq!(field(redlock.is_locked("").unwrap_err()), "resource");
        let empty = Redlock::new(Vec::new());
        assert_eq!(field(empty.lock("r", ttl).unwrap_err()), "pools");
        assert_eq!(field(empty.is_locked("r").unwrap_err()), "pools");
        let extended = Redlock::builder(vec![pool()])
            .auto_extend(true)
            .build()
            .unwrap();
        let short = Duration::from_millis(200);
        assert_eq!(field(extended.lock("r", short).unwrap_err()), "ttl");
        assert_eq!(field(extended.try_lock("r", short).unwrap_err()), "ttl");
    }
}
