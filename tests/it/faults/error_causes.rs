//! Errors that fit what happened, tested from the outside (the issue "Errors that fit what
//! happened"), for every kind that has the error: mutex (default and fair), read-write lock
//! (read and write), semaphore, and Redlock where it takes a name.
//!
//! - A release that finds the grant gone names the likely cause (`LostReason`), and its
//!   message fits it: a lease that ran out (`Expired`, advising a longer expiry or
//!   auto-renewal), a lock deleted while its lease ran (`Reset`: `reset`, `reset_all`, a plain
//!   `DEL`, a server restarted without persistence), a grant missing on the primary a
//!   Sentinel failover (led by a sentinel picked at random) moved the lock to (`Failover`).
//!   The advice about a longer expiry never comes with a reset or a failover.
//! - A release that cannot be sent (the connection stalled then cut, new connections refused,
//!   the server stopped with SIGSTOP) returns `ReleaseDeferred` within about one response
//!   timeout, and no part of its report (message, Debug form, chain of sources) says "may be
//!   tried again"; the release is sent again in the background, so another process's
//!   `try_lock_for` gets the lock soon after the server is reachable again, long before the
//!   old lease would have ended; a guard dropped meanwhile gets the same retry; and a
//!   deferred release whose lease runs out leaves the lock free at the lease's end, without
//!   touching the next holder's grant.
//! - `resume` of a stale handle (released, expired, taken again, resumed already) is
//!   `HandleStale`, whose message says the handle no longer names the current grant.
//! - `TryLockError::WouldBlock` never says "elsewhere".
//! - Names longer than `MAX_NAME_LEN` bytes are refused at once, without a request, with a
//!   message that states the limit; a name of exactly `MAX_NAME_LEN` bytes works.
//! - A handle's string form with whitespace around it parses to the same handle.
//!
//! `ERROR_CAUSES_SEED=<n>` repeats a run's random choices (each test that makes some prints
//! its seed).

use std::thread;
use std::time::{Duration, Instant};

use crate::support::history::{nanos, now};
use crate::support::proxy::FaultProxy;
use crate::support::sentinel::Sentinels;
use crate::support::{ChildTest, HANG, Lines, RedisServer, child_env, pool_at, spawn, spawn_child};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis_mutex::{
    Error, LockHandle, LostReason, MAX_NAME_LEN, Pool, RedisMutex, RedisMutexGuard, RedisRwLock,
    RedisRwLockReadGuard, RedisRwLockWriteGuard, RedisSemaphore, RedisSemaphorePermit, Redlock,
    TryLockError, reset_all,
};

/// The response timeout of the pools whose server becomes unreachable.
const RT: Duration = Duration::from_millis(300);

/// A deferred release must come back within about one response timeout; this allows for a
/// renewal on the wire that the release waits for (a second response timeout) and for
/// scheduling on a loaded 2-core machine.
const DEFER_BOUND: Duration = Duration::from_millis(1300);

/// The lease of the locks whose release is deferred: long enough that a lock freed by a
/// background retry is freed long before it would have expired.
const LEASE: Duration = Duration::from_secs(10);

/// How soon after the server is reachable again another process must get the lock: the
/// background retries come every few hundred milliseconds, and a retry's request may first
/// wait out one connect timeout of its own.
const RETRY_BOUND: Duration = Duration::from_millis(2500);

/// The advice that fits an expired lease and nothing else.
const EXPIRY_ADVICE: &str = "longer expiry";

/// The lock kinds that have guards with `unlock`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Mutex,
    Fair,
    Read,
    Write,
    Semaphore,
}

const KINDS: [Kind; 5] = [
    Kind::Mutex,
    Kind::Fair,
    Kind::Read,
    Kind::Write,
    Kind::Semaphore,
];

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Mutex => "mutex",
            Kind::Fair => "fair",
            Kind::Read => "read",
            Kind::Write => "write",
            Kind::Semaphore => "semaphore",
        }
    }

    fn parse(label: &str) -> Kind {
        KINDS
            .into_iter()
            .find(|k| k.label() == label)
            .unwrap_or_else(|| panic!("no kind {label:?}"))
    }

    /// What another holder takes to be kept out by this kind's grant: a writer for a read
    /// lease, the same kind otherwise.
    fn rival(self) -> Kind {
        match self {
            Kind::Read => Kind::Write,
            other => other,
        }
    }

    /// Whether this kind's locks are auto-renewed in the tests that vary it.
    fn renewed(self) -> bool {
        matches!(self, Kind::Fair | Kind::Read | Kind::Semaphore)
    }
}

/// A lock of one of the kinds; a semaphore has one permit.
enum Lock {
    Mutex(RedisMutex),
    Rw(RedisRwLock, bool),
    Sem(RedisSemaphore),
}

/// A guard of a [`Lock`].
enum Guard<'a> {
    Mutex(RedisMutexGuard<'a>),
    Read(RedisRwLockReadGuard<'a>),
    Write(RedisRwLockWriteGuard<'a>),
    Permit(RedisSemaphorePermit<'a>),
}

fn build(kind: Kind, pool: Pool, name: &str, expire: Duration, renewed: bool) -> Lock {
    match kind {
        Kind::Mutex | Kind::Fair => Lock::Mutex(
            RedisMutex::builder(pool, name)
                .fair(kind == Kind::Fair)
                .expire(expire)
                .auto_renewal(renewed)
                .build()
                .unwrap(),
        ),
        Kind::Read | Kind::Write => Lock::Rw(
            RedisRwLock::builder(pool, name)
                .expire(expire)
                .auto_renewal(renewed)
                .build()
                .unwrap(),
            kind == Kind::Write,
        ),
        Kind::Semaphore => Lock::Sem(
            RedisSemaphore::builder(pool, name)
                .permits(1)
                .expire(expire)
                .auto_renewal(renewed)
                .build()
                .unwrap(),
        ),
    }
}

impl Lock {
    fn take(&self) -> redis_mutex::Result<Guard<'_>> {
        Ok(match self {
            Lock::Mutex(m) => Guard::Mutex(m.lock()?),
            Lock::Rw(l, true) => Guard::Write(l.write()?),
            Lock::Rw(l, false) => Guard::Read(l.read()?),
            Lock::Sem(s) => Guard::Permit(s.acquire()?),
        })
    }

    fn try_take_for(&self, wait: Duration) -> Result<Guard<'_>, TryLockError> {
        Ok(match self {
            Lock::Mutex(m) => Guard::Mutex(m.try_lock_for(wait)?),
            Lock::Rw(l, true) => Guard::Write(l.try_write_for(wait)?),
            Lock::Rw(l, false) => Guard::Read(l.try_read_for(wait)?),
            Lock::Sem(s) => Guard::Permit(s.try_acquire_for(wait)?),
        })
    }

    /// An operator's reset of the lock; whether there was something to delete.
    fn reset(&self) -> bool {
        match self {
            Lock::Mutex(m) => m.reset().unwrap(),
            Lock::Rw(l, _) => l.reset().unwrap(),
            Lock::Sem(s) => s.reset().unwrap() > 0,
        }
    }
}

impl Guard<'_> {
    /// `unlock`, or a permit's `release`.
    fn unlock(self) -> redis_mutex::Result<()> {
        match self {
            Guard::Mutex(g) => g.unlock(),
            Guard::Read(g) => g.unlock(),
            Guard::Write(g) => g.unlock(),
            Guard::Permit(g) => g.release(),
        }
    }

    fn is_held(&self) -> redis_mutex::Result<bool> {
        match self {
            Guard::Mutex(g) => g.is_held(),
            Guard::Read(g) => g.is_held(),
            Guard::Write(g) => g.is_held(),
            Guard::Permit(g) => g.is_held(),
        }
    }
}

/// This run's seed: `ERROR_CAUSES_SEED`, or a fresh one; printed by the caller.
fn seed() -> u64 {
    std::env::var("ERROR_CAUSES_SEED")
        .ok()
        .map(|s| s.parse().expect("ERROR_CAUSES_SEED is a u64"))
        .unwrap_or_else(|| rand::rng().random())
}

fn name_of(kind: Kind, what: &str) -> String {
    format!("ec-{what}-{}", kind.label())
}

/// What is wrong with `outcome`, an `unlock` that should say the grant was gone for `want`:
/// `NotAcquired` (or, when `lost_ok`, `LockLost`: a renewal found it first) naming the lock
/// and the cause, with a message that fits the cause.
fn check_cause(
    what: &str,
    name: &str,
    outcome: &redis_mutex::Result<()>,
    want: LostReason,
    lost_ok: bool,
) -> Option<String> {
    let e = match outcome {
        Ok(()) => return Some(format!("{what}: unlock said Ok; expected {want:?}")),
        Err(e) => e,
    };
    let msg = e.to_string();
    println!("{what}: {e:?}");
    let (variant, got_name, reason) = match e {
        Error::NotAcquired { name, reason } => ("NotAcquired", name, *reason),
        Error::LockLost { name, reason } => ("LockLost", name, *reason),
        _ => {
            return Some(format!(
                "{what}: expected NotAcquired with {want:?}, got {e:?}"
            ));
        }
    };
    let mut wrong = Vec::new();
    if variant == "LockLost" && !lost_ok {
        wrong.push("LockLost, where no renewal ran: NotAcquired expected".to_owned());
    }
    if got_name != name {
        wrong.push(format!("names {got_name:?}, not {name:?}"));
    }
    if reason != want {
        wrong.push(format!("reason {reason:?}, not {want:?}"));
    }
    let lower = msg.to_lowercase();
    // What the message must say for the cause: an expired lease, the expiry and the advice;
    // a reset, the deletion while the lease ran and what deletes; a failover, the move to a
    // server that never had the grant.
    let fits = match want {
        LostReason::Expired => {
            (lower.contains("ran out") || lower.contains("expired"))
                && lower.contains(EXPIRY_ADVICE)
                && lower.contains("auto-renewal")
        }
        LostReason::Reset => {
            lower.contains("deleted") && lower.contains("reset") && lower.contains("restart")
        }
        LostReason::Failover => lower.contains("failover") && lower.contains("never had"),
        _ => true,
    };
    if !fits {
        wrong.push(format!("the message does not fit {want:?}"));
    }
    if want != LostReason::Expired && lower.contains(EXPIRY_ADVICE) {
        wrong.push(format!(
            "the message advises a longer expiry ({EXPIRY_ADVICE:?}) for {want:?}"
        ));
    }
    (!wrong.is_empty()).then(|| format!("{what}: {variant}: {msg:?}: {}", wrong.join("; ")))
}

fn assert_no_problems(problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// Expired, Reset, Failover
// ---------------------------------------------------------------------------------------

/// (a) A 300 ms lease without renewal, held past it, then `unlock()`: `NotAcquired` with
/// `Expired`, and a message that names the expiry and advises a longer expiry or
/// auto-renewal, for every kind.
#[test]
fn a_lease_held_past_its_end_unlocks_as_not_acquired_expired() {
    let server = RedisServer::start();
    let short = Duration::from_millis(300);
    let locks: Vec<(Kind, String, Lock)> = KINDS
        .into_iter()
        .map(|k| {
            let name = name_of(k, "expired");
            let lock = build(k, server.pool(), &name, short, false);
            (k, name, lock)
        })
        .collect();
    let guards: Vec<Guard> = locks.iter().map(|(_, _, l)| l.take().unwrap()).collect();
    // Holding past the lease is the scenario.
    thread::sleep(short * 2);
    let mut problems = Vec::new();
    for ((kind, name, _), guard) in locks.iter().zip(guards) {
        let outcome = guard.unlock();
        problems.extend(check_cause(
            kind.label(),
            name,
            &outcome,
            LostReason::Expired,
            false,
        ));
    }
    assert_no_problems(&problems);
}

/// A lease that ran out and was taken by another holder since: the release says so without
/// blaming a reset or a failover (the cause is the expiry, or the takeover that followed
/// it), and keeps the new holder's grant.
#[test]
fn a_lease_run_out_and_taken_by_another_is_not_blamed_on_a_reset_or_a_failover() {
    let server = RedisServer::start();
    let short = Duration::from_millis(300);
    let mut problems = Vec::new();
    for kind in KINDS {
        let name = name_of(kind, "taken");
        let lock = build(kind, server.pool(), &name, short, false);
        let rival = build(kind.rival(), server.pool(), &name, LEASE, false);
        let guard = lock.take().unwrap();
        // The rival waits out the lease (the scenario) and takes the lock.
        let theirs = rival
            .try_take_for(HANG)
            .unwrap_or_else(|e| panic!("{}: the rival never got the lock: {e}", kind.label()));
        let outcome = guard.unlock();
        let what = kind.label();
        match &outcome {
            Err(e @ (Error::NotAcquired { reason, .. } | Error::LockLost { reason, .. })) => {
                let lower = e.to_string().to_lowercase();
                println!("{what}: {e:?}");
                if !matches!(reason, LostReason::Expired | LostReason::TakenOver) {
                    problems.push(format!(
                        "{what}: reason {reason:?}, not Expired or TakenOver"
                    ));
                }
                if lower.contains("failover") || lower.contains("reset") {
                    problems.push(format!(
                        "{what}: the message blames a reset or failover: {e}"
                    ));
                }
            }
            other => problems.push(format!("{what}: expected NotAcquired, got {other:?}")),
        }
        match theirs.is_held() {
            Ok(true) => {}
            other => problems.push(format!(
                "{what}: the new holder's grant did not survive the old holder's release: \
                 is_held = {other:?}"
            )),
        }
        theirs.unlock().unwrap();
    }
    assert_no_problems(&problems);
}

/// (b) A lock held with a 5 s lease, an operator's `reset()` from another object, then
/// `unlock()`: `NotAcquired` with `Reset` (`LockLost` allowed only for an auto-renewed
/// guard whose renewal found it first), a message about the deletion, and no advice about a
/// longer expiry, for every kind.
#[test]
fn a_lock_reset_by_an_operator_unlocks_as_not_acquired_reset() {
    let server = RedisServer::start();
    let lease = Duration::from_secs(5);
    let mut problems = Vec::new();
    for kind in KINDS {
        let name = name_of(kind, "reset");
        let lock = build(kind, server.pool(), &name, lease, kind.renewed());
        let operator = build(kind, server.pool(), &name, lease, false);
        let guard = lock.take().unwrap();
        assert!(
            operator.reset(),
            "{}: the reset found nothing",
            kind.label()
        );
        let outcome = guard.unlock();
        problems.extend(check_cause(
            &format!("{} (renewed: {})", kind.label(), kind.renewed()),
            &name,
            &outcome,
            LostReason::Reset,
            kind.renewed(),
        ));
    }
    assert_no_problems(&problems);
}

/// The other ways a lock is deleted while its lease runs: `reset_all` from another pool (every
/// kind), a plain `DEL` of a mutex's key (default and fair mode), and a server restarted
/// without persistence (every kind): each release says `Reset`, never a longer expiry.
#[test]
fn a_lock_deleted_by_reset_all_del_or_a_restart_unlocks_as_reset() {
    let mut server = RedisServer::start();
    let lease = Duration::from_secs(5);
    let mut problems = Vec::new();

    // reset_all, from another pool.
    let locks: Vec<(Kind, String, Lock)> = KINDS
        .into_iter()
        .map(|k| {
            let name = name_of(k, "reset-all");
            let lock = build(k, server.pool(), &name, lease, k.renewed());
            (k, name, lock)
        })
        .collect();
    let guards: Vec<Guard> = locks.iter().map(|(_, _, l)| l.take().unwrap()).collect();
    let deleted = reset_all(&server.pool()).unwrap();
    println!("reset_all deleted {deleted}");
    for ((kind, name, _), guard) in locks.iter().zip(guards) {
        let outcome = guard.unlock();
        problems.extend(check_cause(
            &format!("reset_all, {}", kind.label()),
            name,
            &outcome,
            LostReason::Reset,
            kind.renewed(),
        ));
    }

    // A plain DEL of a mutex's key.
    for kind in [Kind::Mutex, Kind::Fair] {
        let name = name_of(kind, "del");
        let lock = build(kind, server.pool(), &name, lease, false);
        let guard = lock.take().unwrap();
        let removed: u32 = redis::cmd("DEL")
            .arg(format!("lock:{name}"))
            .query(&mut server.connection())
            .unwrap();
        assert_eq!(removed, 1, "the mutex's key is lock:<name>");
        let outcome = guard.unlock();
        problems.extend(check_cause(
            &format!("DEL, {}", kind.label()),
            &name,
            &outcome,
            LostReason::Reset,
            false,
        ));
    }

    // A restart without persistence.
    let locks: Vec<(Kind, String, Lock)> = KINDS
        .into_iter()
        .map(|k| {
            let name = name_of(k, "restart");
            let lock = build(k, server.pool(), &name, lease, k.renewed());
            (k, name, lock)
        })
        .collect();
    let guards: Vec<Guard> = locks.iter().map(|(_, _, l)| l.take().unwrap()).collect();
    server.restart();
    for ((kind, name, _), guard) in locks.iter().zip(guards) {
        let outcome = guard.unlock();
        problems.extend(check_cause(
            &format!("restart, {}", kind.label()),
            name,
            &outcome,
            LostReason::Reset,
            kind.renewed(),
        ));
    }
    assert_no_problems(&problems);
}

/// (c, d) Behind Sentinel, every kind holds a lock with a 5 s auto-renewed lease, and another
/// with a 60 s lease without renewal; the primary is failed over by a sentinel picked at
/// random; the moment the replica answers as a primary, before any renewal can reach it,
/// the locks' keys are deleted there: grants the new primary never had, as when a grant is
/// not replicated before the switch. Each `unlock()` then says `NotAcquired` (or, for a
/// renewed lease, `LockLost`, when a renewal found it first) with `Failover`, a message that
/// mentions a failover, and no advice about a longer expiry.
#[test]
fn a_grant_missing_on_the_new_primary_after_a_failover_unlocks_as_failover() {
    let seed = seed();
    let leader = StdRng::seed_from_u64(seed).random_range(0..3);
    println!(
        "seed {seed} (ERROR_CAUSES_SEED={seed} repeats it): the failover is led by sentinel \
         {leader}"
    );
    let set = Sentinels::start();
    let pool = set.pool_with(
        Pool::builder()
            .response_timeout(Duration::from_millis(500))
            .connect_timeout(Duration::from_millis(500))
            .connection_timeout(Duration::from_secs(1)),
    );
    // Each kind twice: a 5 s lease renewed (a renewal may find the grant missing first),
    // and a 60 s lease without renewal (only the release can find it missing).
    let locks: Vec<(Kind, String, Lock, bool)> = KINDS
        .into_iter()
        .flat_map(|k| [(k, true), (k, false)])
        .map(|(k, renewed)| {
            let (what, lease) = if renewed {
                ("failover-renewed", Duration::from_secs(5))
            } else {
                ("failover-plain", Duration::from_secs(60))
            };
            let name = name_of(k, what);
            let lock = build(k, pool.clone(), &name, lease, renewed);
            (k, name, lock, renewed)
        })
        .collect();
    let guards: Vec<Guard> = locks.iter().map(|(_, _, l, _)| l.take().unwrap()).collect();
    let old = set.primary_index();
    let new_url = set.servers[1 - old].url();
    // Deletes every key of the locks on the new primary the moment it answers as one.
    // (Sentinel closes the replica's client connections as it promotes it: reconnect.)
    let deleter = spawn("delete the grants on promotion", move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut conn: Option<redis::Connection> = None;
        loop {
            assert!(
                Instant::now() < deadline,
                "the replica was not promoted within 60 s"
            );
            let c = match conn.as_mut() {
                Some(c) => c,
                None => conn.insert(crate::support::connect(&new_url)),
            };
            let role: redis::RedisResult<Vec<redis::Value>> = redis::cmd("ROLE").query(c);
            let master = match role.as_ref().map(|r| r.first()) {
                Ok(Some(redis::Value::BulkString(b))) => b == b"master",
                Ok(Some(redis::Value::SimpleString(s))) => s == "master",
                Ok(_) => false,
                Err(_) => {
                    conn = None;
                    continue;
                }
            };
            if master {
                let promoted = Instant::now();
                let keys: Vec<String> = redis::cmd("KEYS").arg("*ec-failover-*").query(c).unwrap();
                if !keys.is_empty() {
                    let _: u64 = redis::cmd("DEL").arg(&keys).query(c).unwrap();
                }
                return (keys, promoted.elapsed());
            }
            // Observing a role change, which no event announces.
            thread::sleep(Duration::from_millis(1));
        }
    });
    let promotion = set.failover_led_by_timed(leader);
    let (deleted, took) = deleter.join(HANG);
    println!(
        "failover {} -> {} led by sentinel {:?}, done {:?} after it was asked; deleted {deleted:?} \
         on the new primary {took:?} after it answered as one",
        promotion.old,
        promotion.new,
        promotion.leader,
        promotion.demoted.duration_since(promotion.started)
    );
    assert!(
        !deleted.is_empty(),
        "the new primary had none of the locks' keys to delete"
    );
    let mut problems = Vec::new();
    for ((kind, name, _, renewed), guard) in locks.iter().zip(guards) {
        let outcome = guard.unlock();
        problems.extend(check_cause(
            &format!("failover, {} (renewed: {renewed})", kind.label()),
            name,
            &outcome,
            LostReason::Failover,
            *renewed,
        ));
    }
    assert_no_problems(&problems);
}

// ---------------------------------------------------------------------------------------
// Deferred releases
// ---------------------------------------------------------------------------------------

/// A child process: takes the lock `NAME` (as a rival of `KIND`: a writer for a read lease)
/// on `REDIS_URL` with `try_lock_for(WAIT_MS)`, prints when it got it (or gave up) on the
/// shared monotonic clock, holds it `HOLD_MS`, says whether it still holds it then, and
/// releases it.
#[test]
#[ignore = "a child process of the deferred-release tests of faults::error_causes"]
fn child_takes_the_lock() {
    let pool = pool_at(&child_env("REDIS_URL"));
    let kind = Kind::parse(&child_env("KIND")).rival();
    let name = child_env("NAME");
    let wait = Duration::from_millis(child_env("WAIT_MS").parse().unwrap());
    let hold = Duration::from_millis(child_env("HOLD_MS").parse().unwrap());
    let lock = build(kind, pool, &name, Duration::from_secs(30), false);
    println!("waiting at {}", now());
    match lock.try_take_for(wait) {
        Ok(guard) => {
            println!("outcome: granted {}", now());
            if !hold.is_zero() {
                // Holding the lock a while is the scenario.
                thread::sleep(hold);
                let held = guard.is_held().map_err(|e| e.to_string());
                println!("still held: {held:?}");
            }
            guard.unlock().unwrap();
            println!("released");
        }
        Err(TryLockError::WouldBlock) => println!("outcome: would-block {}", now()),
        Err(e) => panic!("try_lock_for failed: {e}"),
    }
}

/// A child waiting for a lock.
struct Rival {
    kind: Kind,
    child: ChildTest,
    lines: Lines,
}

fn start_rival(url: &str, kind: Kind, name: &str, wait: Duration, hold: Duration) -> Rival {
    let mut child = spawn_child(
        module_path!(),
        "child_takes_the_lock",
        &[
            ("REDIS_URL", url.to_owned()),
            ("KIND", kind.label().to_owned()),
            ("NAME", name.to_owned()),
            ("WAIT_MS", wait.as_millis().to_string()),
            ("HOLD_MS", hold.as_millis().to_string()),
        ],
    );
    let lines = child.lines();
    lines.expect("waiting at ", HANG);
    Rival { kind, child, lines }
}

impl Rival {
    /// When the child got the lock (on the shared clock), or `None` if it gave up.
    fn granted(&self) -> Option<u64> {
        let outcome = self.lines.expect("outcome: ", HANG + LEASE);
        let (what, at) = outcome.split_once(' ').expect("outcome: <what> <when>");
        let at: u64 = at.trim().parse().unwrap();
        (what == "granted").then_some(at)
    }

    fn finish(self) -> String {
        let rest = self.lines.rest(HANG);
        self.child.finish_with(&self.lines, HANG);
        rest
    }
}

/// How the server becomes unreachable for the holder.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outage {
    /// The proxy stalls (the release is taken in and held), then cuts every connection
    /// (the held release is dropped): only a retry can free the lock.
    StallThenCut,
    /// The proxy cuts every connection and refuses new ones: the release cannot be sent.
    Refuse,
    /// The server is stopped with SIGSTOP.
    Stop,
}

/// How the holder lets go during the outage.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ending {
    Unlock,
    Drop,
}

/// What is wrong with a release that should have been deferred.
fn check_deferred(
    what: &str,
    name: &str,
    outcome: &redis_mutex::Result<()>,
    took: Duration,
    lease: Duration,
) -> Vec<String> {
    let mut wrong = Vec::new();
    if took > DEFER_BOUND {
        wrong.push(format!(
            "took {took:?}, past {DEFER_BOUND:?} (about one {RT:?} response timeout)"
        ));
    }
    match outcome {
        Err(
            e @ Error::ReleaseDeferred {
                name: got,
                retry_for,
                cause: source,
            },
        ) => {
            let msg = e.to_string();
            println!("{what}: took {took:?}: {msg:?} (source {source:?}, retry_for {retry_for:?})");
            if got != name {
                wrong.push(format!("names {got:?}, not {name:?}"));
            }
            if retry_for.is_zero() || *retry_for > lease {
                wrong.push(format!(
                    "retry_for {retry_for:?} is not within what was left of the {lease:?} lease"
                ));
            }
            if !(source.is_timeout() || source.is_unreachable()) {
                wrong.push(format!(
                    "its source is neither a timeout nor unreachable: {source:?}"
                ));
            }
            if !(e.is_timeout() || e.is_unreachable()) {
                wrong.push("is_timeout() and is_unreachable() are both false".into());
            }
            // The guard is gone: the call cannot be tried again.
            for said in [msg.clone(), format!("{e:?}")] {
                if said.contains("may be tried again") {
                    wrong.push(format!(
                        "the error says the call may be tried again: {said:?}"
                    ));
                }
            }
        }
        other => wrong.push(format!("expected ReleaseDeferred, got {other:?}")),
    }
    wrong.into_iter().map(|w| format!("{what}: {w}")).collect()
}

/// Every kind holds a lock with a 10 s lease through a pool whose server then becomes
/// unreachable (`outage`); each guard is unlocked (deferred within about one response
/// timeout) or dropped; after an outage of random length the server is reachable again,
/// and another process that waits for each lock (directly on the server) must get it
/// within [`RETRY_BOUND`], long before the old lease would have ended.
fn deferred_release_is_sent_again(outage: Outage, ending: Ending) {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let outage_for = Duration::from_millis(rng.random_range(300..1500));
    println!(
        "seed {seed} (ERROR_CAUSES_SEED={seed} repeats it): {outage:?}, {ending:?}, the server \
         unreachable for {outage_for:?} after the releases"
    );
    let mut server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let builder = Pool::builder()
        .response_timeout(RT)
        .connect_timeout(RT)
        .connection_timeout(Duration::from_secs(1));
    let pool = match outage {
        Outage::Stop => server.pool_with(builder),
        _ => proxy.pool_with(builder),
    };
    let what = format!("{outage:?}-{ending:?}").to_lowercase();
    let locks: Vec<(Kind, String, Lock)> = KINDS
        .into_iter()
        .map(|k| {
            let name = name_of(k, &what);
            let lock = build(k, pool.clone(), &name, LEASE, k.renewed());
            (k, name, lock)
        })
        .collect();
    let mut held = Vec::new();
    for (_, _, lock) in &locks {
        let asked = now();
        held.push((asked, lock.take().unwrap()));
    }
    match outage {
        Outage::StallThenCut => proxy.stall(),
        Outage::Refuse => {
            proxy.refuse(true);
            proxy.cut();
        }
        Outage::Stop => server.pause(),
    }
    let mut problems = Vec::new();
    let mut asked_at = Vec::new();
    for ((kind, name, _), (asked, guard)) in locks.iter().zip(held) {
        let started = Instant::now();
        let label = format!("{}, {what}", kind.label());
        match ending {
            Ending::Unlock => {
                let outcome = guard.unlock();
                let took = started.elapsed();
                problems.extend(check_deferred(&label, name, &outcome, took, LEASE));
            }
            Ending::Drop => {
                drop(guard);
                let took = started.elapsed();
                println!("{label}: the drop took {took:?}");
                if took > DEFER_BOUND {
                    problems.push(format!(
                        "{label}: the drop took {took:?}, past {DEFER_BOUND:?}"
                    ));
                }
            }
        }
        asked_at.push(asked);
    }
    if outage == Outage::StallThenCut {
        // The held releases are dropped: only a release sent again can free the locks.
        proxy.cut();
    }
    let wait = LEASE * 2;
    let url = server.url();
    let start_rivals = || -> Vec<Rival> {
        locks
            .iter()
            .map(|(kind, name, _)| start_rival(&url, *kind, name, wait, Duration::ZERO))
            .collect()
    };
    let early = if outage == Outage::Stop {
        Vec::new()
    } else {
        start_rivals()
    };
    // The outage lasts: its length is the scenario.
    thread::sleep(outage_for);
    let reachable = now();
    match outage {
        Outage::Stop => server.resume(),
        _ => proxy.heal(),
    }
    let rivals = if outage == Outage::Stop {
        start_rivals()
    } else {
        early
    };
    for ((rival, asked), (_, name, _)) in rivals.into_iter().zip(asked_at).zip(&locks) {
        let label = format!("{}, {what}", rival.kind.label());
        match rival.granted() {
            None => problems.push(format!("{label}: the other process never got {name}")),
            Some(at) => {
                let after_reachable = at as i64 - reachable as i64;
                let after_grant = Duration::from_nanos(at.saturating_sub(asked));
                println!(
                    "{label}: the other process got the lock {:.0} ms after the server was \
                     reachable again, {after_grant:?} after the old grant was asked for",
                    after_reachable as f64 / 1e6
                );
                if after_reachable < 0 {
                    problems.push(format!(
                        "{label}: another process got the lock while the holder could not \
                         reach the server ({} ms before it could)",
                        -after_reachable / 1_000_000
                    ));
                }
                if after_reachable > nanos(RETRY_BOUND) as i64 {
                    problems.push(format!(
                        "{label}: another process got the lock only {} ms after the server \
                         was reachable again, past {RETRY_BOUND:?}: the release was not sent \
                         again in time",
                        after_reachable / 1_000_000
                    ));
                }
                if after_grant + Duration::from_secs(4) > LEASE {
                    problems.push(format!(
                        "{label}: another process got the lock {after_grant:?} after the old \
                         grant, not long before the {LEASE:?} lease's end"
                    ));
                }
            }
        }
        rival.finish();
    }
    assert_no_problems(&problems);
}

/// `unlock()` on a stalled connection, whose held request is then cut: `ReleaseDeferred`
/// within about one response timeout, and the release, sent again once the proxy heals,
/// frees every lock for another process long before its lease's end.
#[test]
fn an_unlock_on_a_stalled_connection_is_deferred_and_sent_again_once_healed() {
    deferred_release_is_sent_again(Outage::StallThenCut, Ending::Unlock);
}

/// The same with every connection cut and new ones refused: the release cannot be sent at
/// all until the proxy takes connections again.
#[test]
fn an_unlock_while_connections_are_refused_is_deferred_and_sent_again() {
    deferred_release_is_sent_again(Outage::Refuse, Ending::Unlock);
}

/// The same with the server stopped (SIGSTOP) until it is resumed.
#[test]
fn an_unlock_on_a_stopped_server_is_deferred_and_the_lock_freed_after_it_resumes() {
    deferred_release_is_sent_again(Outage::Stop, Ending::Unlock);
}

/// A guard dropped while the server is unreachable (stall then cut, or refused: picked at
/// random) returns within about one response timeout, and its release is sent again in
/// the background: another process gets the lock soon after the server is reachable.
#[test]
fn a_guard_dropped_while_the_server_is_unreachable_is_released_in_the_background() {
    let seed = seed();
    let outage = if StdRng::seed_from_u64(seed ^ 0xd50).random_bool(0.5) {
        Outage::StallThenCut
    } else {
        Outage::Refuse
    };
    println!("seed {seed}: outage {outage:?}");
    deferred_release_is_sent_again(outage, Ending::Drop);
}

/// What a report of a deferred release shows, whole: its message, its Debug form, and the
/// chain of its sources (as `anyhow` or any error reporter prints it), for every kind whose
/// release could not be sent (every connection cut, new ones refused). None of it may say
/// "the call may be tried again": the guard was consumed.
#[test]
fn no_part_of_a_deferred_release_report_says_the_call_may_be_tried_again() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let pool = proxy.pool_with(
        Pool::builder()
            .response_timeout(RT)
            .connect_timeout(RT)
            .connection_timeout(Duration::from_secs(1)),
    );
    let locks: Vec<(Kind, String, Lock)> = KINDS
        .into_iter()
        .map(|k| {
            let name = name_of(k, "report");
            let lock = build(k, pool.clone(), &name, LEASE, k.renewed());
            (k, name, lock)
        })
        .collect();
    let guards: Vec<Guard> = locks.iter().map(|(_, _, l)| l.take().unwrap()).collect();
    proxy.refuse(true);
    proxy.cut();
    let mut problems = Vec::new();
    for ((kind, _, _), guard) in locks.iter().zip(guards) {
        let what = kind.label();
        let e = match guard.unlock() {
            Err(e @ Error::ReleaseDeferred { .. }) => e,
            other => {
                problems.push(format!("{what}: expected ReleaseDeferred, got {other:?}"));
                continue;
            }
        };
        let mut report = vec![e.to_string(), format!("{e:?}")];
        let mut next = std::error::Error::source(&e);
        while let Some(cause) = next {
            report.push(cause.to_string());
            next = cause.source();
        }
        println!("{what}: {report:#?}");
        for said in report {
            if said.contains("may be tried again") {
                problems.push(format!(
                    "{what}: the report of the deferred release says the call may be tried \
                     again: {said:?}"
                ));
            }
        }
    }
    proxy.heal();
    assert_no_problems(&problems);
}

/// A release deferred on a stalled connection that stays stalled: the retries never land,
/// and the lock is free anyway when its 5 s lease runs out (not before: it was held), for
/// another process that waits for it; the retries, delivered once the proxy heals after
/// that, leave the new holder's grant alone.
#[test]
fn a_deferred_release_whose_lease_runs_out_leaves_the_lock_free_at_the_lease_end() {
    let lease = Duration::from_secs(5);
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let pool = proxy.pool_with(
        Pool::builder()
            .response_timeout(RT)
            .connect_timeout(RT)
            .connection_timeout(Duration::from_secs(1)),
    );
    let locks: Vec<(Kind, String, Lock)> = KINDS
        .into_iter()
        .map(|k| {
            let name = name_of(k, "run-out");
            let lock = build(k, pool.clone(), &name, lease, false);
            (k, name, lock)
        })
        .collect();
    let mut held = Vec::new();
    for (_, _, lock) in &locks {
        let asked = now();
        held.push((asked, lock.take().unwrap()));
    }
    proxy.stall();
    let mut problems = Vec::new();
    let mut asked_at = Vec::new();
    for ((kind, name, _), (asked, guard)) in locks.iter().zip(held) {
        let started = Instant::now();
        let outcome = guard.unlock();
        let took = started.elapsed();
        problems.extend(check_deferred(kind.label(), name, &outcome, took, lease));
        asked_at.push(asked);
    }
    proxy.cut();
    let hold = Duration::from_millis(1500);
    let rivals: Vec<Rival> = locks
        .iter()
        .map(|(kind, name, _)| start_rival(&server.url(), *kind, name, lease * 3, hold))
        .collect();
    let mut granted = Vec::new();
    for (rival, asked) in rivals.iter().zip(&asked_at) {
        granted.push(rival.granted().map(|at| at as i64 - *asked as i64));
    }
    // Every lock is held by the other processes now: let the retries through.
    proxy.heal();
    for ((rival, after), (_, name, _)) in rivals.into_iter().zip(granted).zip(&locks) {
        let label = rival.kind.label();
        match after {
            None => problems.push(format!("{label}: the other process never got {name}")),
            Some(after) => {
                println!(
                    "{label}: the other process got the lock {:.0} ms after the old grant was \
                     asked for ({lease:?} lease)",
                    after as f64 / 1e6
                );
                if after < nanos(lease) as i64 - 20_000_000 {
                    problems.push(format!(
                        "{label}: another process got the lock {} ms after the old grant, \
                         before its {lease:?} lease ran out, though no release could land",
                        after / 1_000_000
                    ));
                }
                if after > nanos(lease + Duration::from_secs(2)) as i64 {
                    problems.push(format!(
                        "{label}: another process got the lock only {} ms after the old \
                         grant, long past its {lease:?} lease",
                        after / 1_000_000
                    ));
                }
            }
        }
        let rest = rival.finish();
        if !rest.contains("still held: Ok(true)") {
            problems.push(format!(
                "{label}: the new holder did not keep its grant once the old holder's \
                 retries could land: {rest:?}"
            ));
        }
    }
    assert_no_problems(&problems);
}

// ---------------------------------------------------------------------------------------
// Stale handles
// ---------------------------------------------------------------------------------------

/// What is wrong with `outcome`, a `resume` of a stale handle of `name`.
fn check_stale<T>(what: &str, name: &str, outcome: redis_mutex::Result<T>) -> Option<String> {
    let e = match outcome {
        Ok(_) => return Some(format!("{what}: the stale handle was resumed")),
        Err(e) => e,
    };
    let msg = e.to_string();
    println!("{what}: {e:?}");
    let mut wrong = Vec::new();
    match &e {
        Error::HandleStale { name: got } if got == name => {}
        Error::HandleStale { name: got } => wrong.push(format!("names {got:?}, not {name:?}")),
        other => wrong.push(format!("not HandleStale: {other:?}")),
    }
    let lower = msg.to_lowercase();
    if !(lower.contains("handle") && lower.contains("no longer")) {
        wrong.push("the message does not say the handle no longer names the grant".into());
    }
    if lower.contains("lost while held") {
        wrong.push("the message says the lock was lost while held".into());
    }
    (!wrong.is_empty()).then(|| format!("{what}: {msg:?}: {}", wrong.join("; ")))
}

/// `resume` of a mutex's handle (default and fair mode) that no longer names the current
/// grant: released, expired, taken again by another owner, taken again by the same owner id,
/// resumed already. Each is `HandleStale`, naming the lock, and leaves the current holder's
/// grant alone.
#[test]
fn resuming_a_stale_mutex_handle_is_handle_stale() {
    let server = RedisServer::start();
    let lease = Duration::from_secs(5);
    let short = Duration::from_millis(300);
    let mut problems = Vec::new();
    for fair in [false, true] {
        let mutex = |name: &str, expire: Duration, owner: Option<&str>| {
            let mut b = RedisMutex::builder(server.pool(), name)
                .fair(fair)
                .expire(expire);
            if let Some(owner) = owner {
                b = b.owner_id(owner);
            }
            b.build().unwrap()
        };
        let mode = if fair { "fair" } else { "default" };

        let name = format!("stale-released-{mode}");
        let m = mutex(&name, lease, None);
        let guard = m.lock().unwrap();
        let handle = guard.handle();
        guard.unlock().unwrap();
        problems.extend(check_stale(
            &format!("{mode}: released"),
            &name,
            mutex(&name, lease, None).resume(&handle),
        ));

        let name = format!("stale-expired-{mode}");
        let handle = mutex(&name, short, None).lock().unwrap().into_handle();
        // The lease running out is the scenario.
        thread::sleep(short * 2);
        problems.extend(check_stale(
            &format!("{mode}: expired"),
            &name,
            mutex(&name, lease, None).resume(&handle),
        ));

        for same_owner in [false, true] {
            let name = format!("stale-taken-{mode}-{same_owner}");
            let owner = same_owner.then_some("the-same-owner");
            let handle = mutex(&name, lease, owner).lock().unwrap().into_handle();
            assert!(mutex(&name, lease, None).reset().unwrap());
            let again = mutex(&name, lease, owner);
            let current = again.lock().unwrap();
            problems.extend(check_stale(
                &format!("{mode}: taken again (same owner id: {same_owner})"),
                &name,
                mutex(&name, lease, None).resume(&handle),
            ));
            if !current.is_held().unwrap() {
                problems.push(format!(
                    "{mode}: taken again (same owner id: {same_owner}): the refused resume \
                     changed the current grant"
                ));
            }
            current.unlock().unwrap();
        }

        let name = format!("stale-resumed-{mode}");
        let handle = mutex(&name, lease, None).lock().unwrap().into_handle();
        let first = mutex(&name, lease, None);
        let resumed = first.resume(&handle).unwrap();
        problems.extend(check_stale(
            &format!("{mode}: resumed already"),
            &name,
            mutex(&name, lease, None).resume(&handle),
        ));
        if !resumed.is_held().unwrap() {
            problems.push(format!(
                "{mode}: resumed already: the refused resume changed the resumed grant"
            ));
        }
        resumed.unlock().unwrap();
    }
    assert_no_problems(&problems);
}

/// `resume_read` and `resume_write` of a read-write lock's stale handle: released,
/// expired, taken again (reset, then another holder of the same kind), resumed already.
#[test]
fn resuming_a_stale_rwlock_handle_is_handle_stale() {
    let server = RedisServer::start();
    let lease = Duration::from_secs(5);
    let short = Duration::from_millis(300);
    let rw = |path: &str, expire: Duration| {
        RedisRwLock::builder(server.pool(), path)
            .expire(expire)
            .auto_renewal(false)
            .build()
            .unwrap()
    };
    fn take(lock: &RedisRwLock, write: bool) -> (LockHandle, Box<dyn FnOnce() + '_>) {
        if write {
            let g = lock.write().unwrap();
            (g.handle(), Box::new(move || g.unlock().unwrap()))
        } else {
            let g = lock.read().unwrap();
            (g.handle(), Box::new(move || g.unlock().unwrap()))
        }
    }
    let resume =
        |lock: &RedisRwLock, write: bool, handle: &LockHandle| -> redis_mutex::Result<()> {
            if write {
                lock.resume_write(handle).map(|g| g.unlock().unwrap())
            } else {
                lock.resume_read(handle).map(|g| g.unlock().unwrap())
            }
        };
    let mut problems = Vec::new();
    for write in [false, true] {
        let mode = if write { "write" } else { "read" };

        let path = format!("stale-released-{mode}");
        let lock = rw(&path, lease);
        let (handle, release) = take(&lock, write);
        release();
        problems.extend(check_stale(
            &format!("{mode}: released"),
            &path,
            resume(&rw(&path, lease), write, &handle),
        ));

        let path = format!("stale-expired-{mode}");
        let lock = rw(&path, short);
        let handle = if write {
            lock.write().unwrap().into_handle()
        } else {
            lock.read().unwrap().into_handle()
        };
        // The lease running out is the scenario.
        thread::sleep(short * 2);
        problems.extend(check_stale(
            &format!("{mode}: expired"),
            &path,
            resume(&rw(&path, lease), write, &handle),
        ));

        let path = format!("stale-taken-{mode}");
        let lock = rw(&path, lease);
        let handle = if write {
            lock.write().unwrap().into_handle()
        } else {
            lock.read().unwrap().into_handle()
        };
        assert!(rw(&path, lease).reset().unwrap());
        let again = rw(&path, lease);
        let (_, release) = take(&again, write);
        problems.extend(check_stale(
            &format!("{mode}: taken again"),
            &path,
            resume(&rw(&path, lease), write, &handle),
        ));
        release();

        let path = format!("stale-resumed-{mode}");
        let lock = rw(&path, lease);
        let handle = if write {
            lock.write().unwrap().into_handle()
        } else {
            lock.read().unwrap().into_handle()
        };
        let first = rw(&path, lease);
        let resumed: Box<dyn FnOnce()> = if write {
            let g = first.resume_write(&handle).unwrap();
            Box::new(move || g.unlock().unwrap())
        } else {
            let g = first.resume_read(&handle).unwrap();
            Box::new(move || g.unlock().unwrap())
        };
        problems.extend(check_stale(
            &format!("{mode}: resumed already"),
            &path,
            resume(&rw(&path, lease), write, &handle),
        ));
        // The resumed guard still holds its lease: its release is Ok.
        resumed();
    }
    assert_no_problems(&problems);
}

// ---------------------------------------------------------------------------------------
// WouldBlock
// ---------------------------------------------------------------------------------------

/// `WouldBlock` never says "elsewhere": a lock held by this very process (another guard of
/// the same pool), and one held through another pool, for every kind and Redlock.
#[test]
fn would_block_never_says_elsewhere() {
    let server = RedisServer::start();
    let lease = Duration::from_secs(5);
    let mut messages = Vec::new();
    for kind in KINDS {
        let name = name_of(kind, "would-block");
        let holder = build(kind.rival(), server.pool(), &name, lease, false);
        let guard = holder.take().unwrap();
        let same_pool = build(kind, server.pool(), &name, lease, false);
        for (how, lock) in [
            ("another object, another pool", &same_pool),
            ("the holder's own object", &holder),
        ] {
            match lock.try_take_for(Duration::ZERO) {
                Err(e @ TryLockError::WouldBlock) => {
                    messages.push((format!("{}, {how}", kind.label()), e.to_string()))
                }
                Err(e) => panic!("{}, {how}: {e:?}", kind.label()),
                Ok(_) => panic!("{}, {how}: granted while held", kind.label()),
            }
        }
        guard.unlock().unwrap();
    }
    let mutex = RedisMutex::new(server.pool(), "ec-would-block-try-lock").unwrap();
    let held = mutex.lock().unwrap();
    match mutex.try_lock() {
        Err(e @ TryLockError::WouldBlock) => {
            messages.push(("mutex try_lock".into(), e.to_string()))
        }
        other => panic!("mutex try_lock while held: {:?}", other.map(|_| ())),
    }
    drop(held);
    let redlock = Redlock::new(vec![server.pool()]).unwrap();
    let held = redlock.lock("ec-would-block-redlock", lease).unwrap();
    match redlock.try_lock("ec-would-block-redlock", lease) {
        Err(e @ TryLockError::WouldBlock) => messages.push(("redlock".into(), e.to_string())),
        other => panic!("redlock try_lock while held: {:?}", other.map(|_| ())),
    }
    held.unlock().unwrap();
    messages.push(("the variant".into(), TryLockError::WouldBlock.to_string()));
    let mut problems = Vec::new();
    for (what, msg) in &messages {
        println!("{what}: {msg:?}");
        if msg.to_lowercase().contains("elsewhere") {
            problems.push(format!("{what}: {msg:?} says \"elsewhere\""));
        }
    }
    assert_no_problems(&problems);
}

// ---------------------------------------------------------------------------------------
// Name lengths
// ---------------------------------------------------------------------------------------

/// A name of exactly `len` bytes: `prefix`, then two-byte characters, then ASCII to fill
/// (so that a limit counted in characters would let a longer name through).
fn name_of_len(prefix: &str, len: usize) -> String {
    let mut name = prefix.to_owned();
    while name.len() + 2 <= len {
        name.push('é');
    }
    while name.len() < len {
        name.push('a');
    }
    assert_eq!(name.len(), len);
    name
}

/// How many commands the server ran other than the connection's own (`HELLO`, `PING`, ...)
/// and this test's `INFO`.
fn lock_commands(conn: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    info.lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter_map(|l| {
            let (cmd, stats) = l.split_once(':')?;
            let calls = stats.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            let skip = [
                "info", "hello", "ping", "client", "select", "auth", "command", "config",
            ];
            (!skip.iter().any(|s| cmd.starts_with(s))).then(|| calls.parse::<u64>().unwrap())
        })
        .sum()
}

/// Names longer than `MAX_NAME_LEN` bytes (one byte over, as two-byte characters that are
/// fewer than `MAX_NAME_LEN` characters; and 64 MiB) are refused at once, with no request
/// sent, by `InvalidOptions` whose message states the limit: `RedisMutex::new` and its
/// builder, `RedisSemaphore::new` and its builder, `RedisRwLock::new` and its builder, and
/// a Redlock's `lock` and `try_lock`.
#[test]
fn a_name_longer_than_max_name_len_is_refused_at_once() {
    let server = RedisServer::start();
    let pool = server.pool();
    let redlock = Redlock::new(vec![pool.clone()]).unwrap();
    let mut conn = server.connection();
    let before = lock_commands(&mut conn);
    let one_over = name_of_len("ec-long-", MAX_NAME_LEN + 1);
    assert!(one_over.chars().count() <= MAX_NAME_LEN);
    let huge = "n".repeat(64 << 20);
    let lease = Duration::from_secs(5);
    let mut problems = Vec::new();
    for (size, name) in [("MAX_NAME_LEN + 1", &one_over), ("64 MiB", &huge)] {
        type Call<'a> = Box<dyn FnOnce(String) -> Result<(), Error> + 'a>;
        let calls: Vec<(&str, Call)> = vec![
            (
                "RedisMutex::new",
                Box::new(|n| RedisMutex::new(pool.clone(), n).map(drop)),
            ),
            (
                "RedisMutex::builder",
                Box::new(|n| RedisMutex::builder(pool.clone(), n).build().map(drop)),
            ),
            (
                "RedisMutex::builder (fair, expire)",
                Box::new(|n| {
                    RedisMutex::builder(pool.clone(), n)
                        .fair(true)
                        .expire(lease)
                        .build()
                        .map(drop)
                }),
            ),
            (
                "RedisSemaphore::new",
                Box::new(|n| RedisSemaphore::new(pool.clone(), n, 2).map(drop)),
            ),
            (
                "RedisSemaphore::builder",
                Box::new(|n| {
                    RedisSemaphore::builder(pool.clone(), n)
                        .permits(2)
                        .build()
                        .map(drop)
                }),
            ),
            (
                "RedisRwLock::new",
                Box::new(|n| RedisRwLock::new(pool.clone(), n).map(drop)),
            ),
            (
                "RedisRwLock::builder",
                Box::new(|n| RedisRwLock::builder(pool.clone(), n).build().map(drop)),
            ),
            (
                "Redlock::lock",
                Box::new(|n| redlock.lock(&n, lease).map(drop)),
            ),
            (
                "Redlock::try_lock",
                Box::new(|n| match redlock.try_lock(&n, lease) {
                    Ok(_) => Ok(()),
                    Err(TryLockError::Error(e)) => Err(e),
                    Err(TryLockError::WouldBlock) => panic!("try_lock: WouldBlock"),
                    Err(e) => panic!("try_lock: {e:?}"),
                }),
            ),
        ];
        for (what, call) in calls {
            let what = format!("{what}, {size}");
            let arg = name.clone();
            let started = Instant::now();
            let outcome = call(arg);
            let took = started.elapsed();
            match outcome {
                Err(e @ Error::InvalidOptions { .. }) => {
                    let msg = e.to_string();
                    let shown = if msg.len() > 300 { &msg[..300] } else { &msg };
                    println!(
                        "{what}: refused in {took:?}: {shown:?} ({} bytes)",
                        msg.len()
                    );
                    if !msg.contains(&MAX_NAME_LEN.to_string()) {
                        problems.push(format!(
                            "{what}: the message does not state the limit: {shown:?}"
                        ));
                    }
                    if msg.len() > 4096 {
                        problems.push(format!(
                            "{what}: the message is {} bytes long (it carries the name?)",
                            msg.len()
                        ));
                    }
                }
                Err(e) => problems.push(format!("{what}: not InvalidOptions: {e}")),
                Ok(()) => problems.push(format!("{what}: accepted")),
            }
            if took > Duration::from_millis(300) {
                problems.push(format!("{what}: took {took:?} to refuse"));
            }
        }
    }
    let after = lock_commands(&mut conn);
    if after != before {
        problems.push(format!(
            "{} commands reached the server for names that were refused",
            after - before
        ));
    }
    assert_no_problems(&problems);
}

/// A name of exactly `MAX_NAME_LEN` bytes (mostly two-byte characters) works on a real
/// server: lock and unlock for a mutex (default and fair), a read-write lock (read and
/// write, a path of several segments), a semaphore and a Redlock.
#[test]
fn a_name_of_exactly_max_name_len_bytes_works() {
    let server = RedisServer::start();
    let lease = Duration::from_secs(5);
    for kind in KINDS {
        let name = match kind {
            Kind::Read | Kind::Write => name_of_len(&format!("ec/{}/", kind.label()), MAX_NAME_LEN),
            _ => name_of_len(&format!("ec-{}-", kind.label()), MAX_NAME_LEN),
        };
        let lock = build(kind, server.pool(), &name, lease, kind.renewed());
        let guard = lock
            .take()
            .unwrap_or_else(|e| panic!("{}: {MAX_NAME_LEN} bytes: {e}", kind.label()));
        assert!(guard.is_held().unwrap(), "{}", kind.label());
        guard.unlock().unwrap();
        // Free again: another object takes it at once.
        let again = build(kind, server.pool(), &name, lease, false);
        again
            .try_take_for(Duration::ZERO)
            .unwrap()
            .unlock()
            .unwrap();
    }
    let name = name_of_len("ec-redlock-", MAX_NAME_LEN);
    let redlock = Redlock::new(vec![server.pool()]).unwrap();
    let guard = redlock.lock(&name, lease).unwrap();
    assert!(redlock.is_locked(&name).unwrap());
    guard.unlock().unwrap();
    assert!(!redlock.is_locked(&name).unwrap());
    // The unchecked constructors take it too.
    RedisMutex::new(server.pool(), name_of_len("m", MAX_NAME_LEN)).unwrap();
    RedisSemaphore::new(server.pool(), name_of_len("s", MAX_NAME_LEN), 1).unwrap();
    RedisRwLock::new(server.pool(), name_of_len("r", MAX_NAME_LEN)).unwrap();
}

// ---------------------------------------------------------------------------------------
// Handles with whitespace around them
// ---------------------------------------------------------------------------------------

/// A handle's string form with a trailing newline, spaces around it, or a CRLF and a tab,
/// parses to the same handle, and the parsed handle resumes the grant: a mutex's (default
/// and fair mode), a read lease's and a write lease's.
#[test]
fn a_handle_with_whitespace_around_it_parses_to_the_same_handle() {
    let server = RedisServer::start();
    let lease = Duration::from_secs(5);
    let forms = |h: &LockHandle| {
        vec![
            format!("{h}\n"),
            format!("  {h}  "),
            format!("\t{h}\r\n"),
            format!("{h}   "),
        ]
    };
    let check = |what: &str, handle: &LockHandle| -> LockHandle {
        let mut last = None;
        for form in forms(handle) {
            let parsed: LockHandle = form
                .parse()
                .unwrap_or_else(|e| panic!("{what}: {form:?} did not parse: {e}"));
            assert_eq!(&parsed, handle, "{what}: {form:?}");
            last = Some(parsed);
        }
        last.unwrap()
    };
    for fair in [false, true] {
        let name = format!("ec-handle-ws-{fair}");
        let mutex = RedisMutex::builder(server.pool(), name.as_str())
            .fair(fair)
            .expire(lease)
            .build()
            .unwrap();
        let handle = mutex.lock().unwrap().into_handle();
        let parsed = check(&name, &handle);
        let other = RedisMutex::builder(server.pool(), name.as_str())
            .fair(fair)
            .expire(lease)
            .build()
            .unwrap();
        other.resume(&parsed).unwrap().unlock().unwrap();
    }
    let lock = |path: &str| {
        RedisRwLock::builder(server.pool(), path)
            .expire(lease)
            .build()
            .unwrap()
    };
    let handle = lock("ec/handle/read").read().unwrap().into_handle();
    let parsed = check("read", &handle);
    lock("ec/handle/read")
        .resume_read(&parsed)
        .unwrap()
        .unlock()
        .unwrap();
    let handle = lock("ec/handle/write").write().unwrap().into_handle();
    let parsed = check("write", &handle);
    lock("ec/handle/write")
        .resume_write(&parsed)
        .unwrap()
        .unlock()
        .unwrap();
}
