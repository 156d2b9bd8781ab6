//! The local queue orders waiters, never holders: a thread that holds a lock holds no local
//! turn, so its own process's threads wait in Redis as another process's do, and the lock
//! comes back to them at the same moment it comes back to everyone: when the holder's lease
//! ends, when an operator resets it, when a server restart without persistence frees it.
//! `try_lock` of a thread whose sibling holds asks Redis; `resume` never waits without a
//! bound; a small semaphore request is not held up by a bigger one of its own process; fair
//! order across processes still holds.
//!
//! Each thread builds its own lock object on the same pool and name, as a worker pool does;
//! "another process" is a child process (this binary, run again) or, where only the local
//! queue matters, a pool of its own. Every wait is bounded: what would hang is joined with a
//! deadline and fails saying what it expected.
//!
//! `LOCAL_TURN_CONTROL=1` is a control run: the siblings get a pool of their own (another
//! process, as far as the local queue can tell), and every test passes on code with the bug,
//! which shows that the tests themselves ask for what another process already gets.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::history::now;
use crate::support::{
    HANG, RedisServer, Task, blocked_clients, child_env, eventually, info_field, spawn, spawn_child,
};
use redis::Commands;
use redis_mutex::{Error, LockHandle, Pool, RedisMutex, RedisRwLock, RedisSemaphore, TryLockError};

/// The stuck holder's lease: never renewed, never released while the others wait.
const LEASE: Duration = Duration::from_millis(500);

/// How long a waiter waits (`try_lock_for`, `try_write_for`, ...), as in the issue.
const WAIT: Duration = Duration::from_secs(3);

/// How soon after the stuck holder's grant a waiter must have the lock: the lease, and a
/// second of slack for a busy machine. A hang guard, not a benchmark.
const SOON: Duration = Duration::from_millis(1500);

/// How soon after a release, a reset or a restart a waiter must have the lock.
const WAKE: Duration = Duration::from_millis(1500);

/// The bound on a step that hangs on today's code (a `lock()` never woken, a `resume` that
/// waits for a turn its own thread holds): joined with this, it fails instead of hanging.
const BOUND: Duration = Duration::from_secs(5);

/// How long a waiter holds the lock before it lets it go.
const HOLD: Duration = Duration::from_millis(30);

/// The response timeout of the resume tests' pools: `resume` must take over or refuse
/// within two of them, plus slack.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);

/// The lock kinds, as the tests and the child processes name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A `RedisMutex`.
    Mutex,
    /// A `RedisMutex` in fair mode.
    Fair,
    /// The write lock of a `RedisRwLock`.
    Write,
    /// A read lock of a `RedisRwLock`.
    Read,
    /// A `RedisSemaphore` of one permit.
    Semaphore,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Mutex => "mutex",
            Kind::Fair => "fair",
            Kind::Write => "write",
            Kind::Read => "read",
            Kind::Semaphore => "semaphore",
        }
    }

    fn parse(name: &str) -> Kind {
        [
            Kind::Mutex,
            Kind::Fair,
            Kind::Write,
            Kind::Read,
            Kind::Semaphore,
        ]
        .into_iter()
        .find(|k| k.name() == name)
        .unwrap_or_else(|| panic!("no lock kind {name:?}"))
    }
}

/// Anything a lock hands out while it is held (a guard, a permit): dropping it lets go.
trait Held: Send {}
impl<T: Send> Held for T {}

/// One lock object of a kind, built by one thread for itself.
enum Object {
    Mutex(RedisMutex),
    RwLock(RedisRwLock, Kind),
    Semaphore(RedisSemaphore),
}

impl Object {
    /// A new object of `kind` for `name` on `pool`: with `lease` (never renewed), or with
    /// its kind's defaults (a mutex without expiry; a read-write lock's or a semaphore's
    /// lease of 30 s renewed while held). It is leaked so that what it hands out is
    /// `'static` and can be kept in a box: a few objects per test, until the process ends.
    fn new(kind: Kind, pool: &Pool, name: &str, lease: Option<Duration>) -> &'static Object {
        let object = match kind {
            Kind::Mutex | Kind::Fair => {
                let mut builder = RedisMutex::builder(pool.clone(), name).fair(kind == Kind::Fair);
                if let Some(lease) = lease {
                    builder = builder.expire(lease).auto_renewal(false);
                }
                Object::Mutex(builder.build().unwrap())
            }
            Kind::Write | Kind::Read => {
                let mut builder = RedisRwLock::builder(pool.clone(), name);
                if let Some(lease) = lease {
                    builder = builder.expire(lease).auto_renewal(false);
                }
                Object::RwLock(builder.build().unwrap(), kind)
            }
            Kind::Semaphore => {
                let mut builder = RedisSemaphore::builder(pool.clone(), name).permits(1);
                if let Some(lease) = lease {
                    builder = builder.expire(lease).auto_renewal(false);
                }
                Object::Semaphore(builder.build().unwrap())
            }
        };
        Box::leak(Box::new(object))
    }

    /// `lock()`, `write()`, `read()` or `acquire()`.
    fn take(&'static self) -> Result<Box<dyn Held>, Error> {
        Ok(match self {
            Object::Mutex(m) => Box::new(m.lock()?),
            Object::RwLock(l, Kind::Write) => Box::new(l.write()?),
            Object::RwLock(l, _) => Box::new(l.read()?),
            Object::Semaphore(s) => Box::new(s.acquire()?),
        })
    }

    /// `try_lock()`, `try_write()`, `try_read()` or `try_acquire()`.
    fn try_take(&'static self) -> Result<Box<dyn Held>, TryLockError> {
        Ok(match self {
            Object::Mutex(m) => Box::new(m.try_lock()?),
            Object::RwLock(l, Kind::Write) => Box::new(l.try_write()?),
            Object::RwLock(l, _) => Box::new(l.try_read()?),
            Object::Semaphore(s) => Box::new(s.try_acquire()?),
        })
    }

    /// `try_lock_for()`, `try_write_for()`, `try_read_for()` or `try_acquire_for()`.
    fn take_for(&'static self, timeout: Duration) -> Result<Box<dyn Held>, TryLockError> {
        Ok(match self {
            Object::Mutex(m) => Box::new(m.try_lock_for(timeout)?),
            Object::RwLock(l, Kind::Write) => Box::new(l.try_write_for(timeout)?),
            Object::RwLock(l, _) => Box::new(l.try_read_for(timeout)?),
            Object::Semaphore(s) => Box::new(s.try_acquire_for(timeout)?),
        })
    }

    /// The operator's `reset()`: whether there was something to remove.
    fn reset(&self) -> bool {
        match self {
            Object::Mutex(m) => m.reset().unwrap(),
            Object::RwLock(l, _) => l.reset().unwrap(),
            Object::Semaphore(s) => s.reset().unwrap() > 0,
        }
    }
}

/// What a timed attempt came to: when it got the lock (on the machine's monotonic clock,
/// shared by every process), having held it a moment and let it go; `None` when it timed
/// out.
fn held_briefly(who: &str, attempt: Result<Box<dyn Held>, TryLockError>) -> Option<u64> {
    match attempt {
        Ok(held) => {
            let at = now();
            thread::sleep(HOLD);
            drop(held);
            Some(at)
        }
        Err(TryLockError::WouldBlock) => None,
        Err(e) => panic!("{who}: the attempt failed: {e}"),
    }
}

/// `at - since` on the shared clock.
fn after(at: u64, since: u64) -> Duration {
    Duration::from_nanos(at.saturating_sub(since))
}

fn small_pool(server: &RedisServer) -> Pool {
    server.pool_with(Pool::builder().max_size(4))
}

/// The environment variable of a control run: `LOCAL_TURN_CONTROL=1` puts the holder's
/// siblings (its waiters, its resumer) on a pool of their own, built like `pool`: another
/// process, as far as the local queue can tell. Every test then passes on code that has the
/// bug, which checks the tests themselves; without it they test the siblings.
const CONTROL_ENV: &str = "LOCAL_TURN_CONTROL";

/// The pool the holder's siblings use: `pool` itself, or in a [control run](CONTROL_ENV)
/// another one to the same server, built by `other`.
fn siblings_pool(pool: &Pool, other: impl FnOnce() -> Pool) -> Pool {
    match control_pool(other) {
        Some(other) => other,
        None => pool.clone(),
    }
}

/// In a [control run](CONTROL_ENV), the pool `other` builds for the siblings.
fn control_pool(other: impl FnOnce() -> Pool) -> Option<Pool> {
    let control = std::env::var_os(CONTROL_ENV).is_some_and(|v| v == "1");
    control.then(|| {
        println!("control run: the siblings are on a pool of their own");
        other()
    })
}

/// How many commands the server has run, this `INFO` excluded.
fn commands_processed(conn: &mut redis::Connection) -> u64 {
    info_field(conn, "stats", "total_commands_processed")
        .expect("INFO stats has total_commands_processed")
        .parse()
        .unwrap()
}

fn queued(conn: &mut redis::Connection, name: &str) -> usize {
    conn.llen(format!("lock-queue:{name}")).unwrap()
}

/// The key a parent sets when the child may start waiting.
fn go_key(name: &str) -> String {
    format!("local-turn-go:{name}")
}

// ---------------------------------------------------------------------------------------
// Child processes.

/// Another process: builds a lock of `KIND` for `NAME` (with the stuck holder's lease),
/// says `ready`, waits for the parent's go (a key), then waits `WAIT` for the lock and says
/// when it got it (`@outcome got <ns>`) or that it timed out (`@outcome timeout`).
#[test]
#[ignore = "a child process of the expiry tests of local_turn.rs"]
fn child_waits_then_holds_briefly() {
    let url = child_env("REDIS_URL");
    let kind = Kind::parse(&child_env("KIND"));
    let name = child_env("NAME");
    let pool = crate::support::pool_at(&url);
    let object = Object::new(kind, &pool, &name, Some(LEASE));
    let mut conn = crate::support::connect(&url);
    println!("ready");
    let go = go_key(&name);
    assert!(
        eventually(HANG, || conn.exists::<_, bool>(&go).unwrap()),
        "the parent never said go"
    );
    match held_briefly("the other process", object.take_for(WAIT)) {
        Some(at) => println!("@outcome got {at}"),
        None => println!("@outcome timeout"),
    }
}

/// A fair waiter in its own process: takes the lock, says so with its fencing token, holds
/// it a moment, releases.
#[test]
#[ignore = "a child process of fair_order_across_processes_counts_a_holders_sibling_in_its_place"]
fn child_fair_waiter() {
    let pool = crate::support::pool_at(&child_env("REDIS_URL"));
    let mutex = RedisMutex::builder(pool, child_env("NAME"))
        .fair(true)
        .expire(Duration::from_secs(10))
        .build()
        .unwrap();
    let guard = mutex.lock().unwrap();
    println!("@granted {}", guard.fencing_token());
    thread::sleep(HOLD);
    guard.unlock().unwrap();
}

// ---------------------------------------------------------------------------------------
// 1, 2. Expiry.

/// Thread A holds `holder`'s lock with a 500 ms lease, never renewed, and keeps its guard
/// for the whole test. Thread B of the same process, with its own object on the same pool
/// and name, waits 3 s for `waiter`'s lock; so does another process when `other_process`.
/// Each must get it soon after A's lease ends.
fn expiry_frees_it_for_a_sibling(holder: Kind, waiter: Kind, other_process: bool) {
    let server = RedisServer::start();
    let pool = server.pool();
    let name = format!("expiry-{}-{}", holder.name(), waiter.name());
    let child = other_process.then(|| {
        let env = [
            ("REDIS_URL", server.url()),
            ("KIND", waiter.name().to_owned()),
            ("NAME", name.clone()),
        ];
        let mut child = spawn_child(module_path!(), "child_waits_then_holds_briefly", &env);
        let lines = child.lines();
        lines.expect("ready", HANG);
        (child, lines)
    });

    // A: stuck with its guard alive.
    let a = Object::new(holder, &pool, &name, Some(LEASE));
    let stuck = a.take().unwrap();
    let granted = now();

    // B: a sibling with its own object.
    let sibling = {
        let (pool, name) = (siblings_pool(&pool, || server.pool()), name.clone());
        spawn("B, A's sibling", move || {
            let b = Object::new(waiter, &pool, &name, Some(LEASE));
            let started = Instant::now();
            let got = held_briefly("B", b.take_for(WAIT));
            (got, started.elapsed())
        })
    };
    let _: () = server.connection().set(go_key(&name), 1).unwrap();

    let (sibling_got, sibling_waited) = sibling.join(HANG);
    let other_got = child.map(|(child, lines)| {
        let outcome = lines.expect("@outcome ", HANG);
        child.finish_with(&lines, HANG);
        outcome
            .trim()
            .strip_prefix("got ")
            .map(|at| at.parse::<u64>().unwrap())
    });
    drop(stuck);

    let what = format!(
        "{} held with a {LEASE:?} lease, never renewed nor dropped; {} waiting {WAIT:?}",
        holder.name(),
        waiter.name()
    );
    let shown = |got: Option<u64>| match got {
        Some(at) => format!("got it {:?} after A's grant", after(at, granted)),
        None => "timed out".to_owned(),
    };
    let other = other_got.map_or_else(String::new, |got| {
        format!("another process {}; ", shown(got))
    });
    println!(
        "{what}: {other}the sibling {} (waited {sibling_waited:?})",
        shown(sibling_got),
    );
    if let Some(other_got) = other_got {
        let at = other_got.unwrap_or_else(|| {
            panic!("{what}: another process timed out; it must get the lock after the lease")
        });
        assert!(
            after(at, granted) <= SOON,
            "{what}: another process got the lock {:?} after A's grant; expected within {SOON:?}",
            after(at, granted)
        );
    }
    let at = sibling_got.unwrap_or_else(|| {
        panic!(
            "{what}: B, a thread of A's own process with its own object, timed out after \
             {sibling_waited:?}; expected the lock within {SOON:?} of A's grant, as another \
             process gets it"
        )
    });
    assert!(
        after(at, granted) <= SOON,
        "{what}: B got the lock {:?} after A's grant; expected within {SOON:?}",
        after(at, granted)
    );
}

#[test]
fn expiry_mutex_frees_it_for_a_sibling_as_for_another_process() {
    expiry_frees_it_for_a_sibling(Kind::Mutex, Kind::Mutex, true);
}

#[test]
fn expiry_fair_mutex_frees_it_for_a_sibling_as_for_another_process() {
    expiry_frees_it_for_a_sibling(Kind::Fair, Kind::Fair, true);
}

#[test]
fn expiry_write_lock_frees_it_for_a_sibling_writer_as_for_another_process() {
    expiry_frees_it_for_a_sibling(Kind::Write, Kind::Write, true);
}

#[test]
fn expiry_write_lock_frees_it_for_a_sibling_reader() {
    expiry_frees_it_for_a_sibling(Kind::Write, Kind::Read, false);
}

#[test]
fn expiry_read_lock_frees_it_for_a_sibling_writer() {
    expiry_frees_it_for_a_sibling(Kind::Read, Kind::Write, false);
}

/// The semaphore gets this right today; kept so that it stays right.
#[test]
fn expiry_semaphore_frees_a_permit_for_a_sibling_as_for_another_process() {
    expiry_frees_it_for_a_sibling(Kind::Semaphore, Kind::Semaphore, true);
}

/// A stuck holder's lease ends; eight siblings, each with its own mutex on a pool of four
/// connections, wait for it: each gets it in turn, holding it a moment, none two at once,
/// all soon after the lease.
fn expiry_lets_many_siblings_in_turn(kind: Kind) {
    const WAITERS: usize = 8;
    let server = RedisServer::start();
    let pool = small_pool(&server);
    let name = format!("expiry-crowd-{}", kind.name());
    let a = Object::new(kind, &pool, &name, Some(LEASE));
    let stuck = a.take().unwrap();
    let granted = now();
    let pool = siblings_pool(&pool, || small_pool(&server));
    let waiters: Vec<Task<Option<(u64, u64)>>> = (0..WAITERS)
        .map(|i| {
            let (pool, name) = (pool.clone(), name.clone());
            spawn(&format!("sibling {i}"), move || {
                let b = Object::new(kind, &pool, &name, Some(LEASE));
                let held = match b.take_for(BOUND) {
                    Ok(held) => held,
                    Err(TryLockError::WouldBlock) => return None,
                    Err(e) => panic!("sibling {i}: {e}"),
                };
                let from = now();
                thread::sleep(HOLD);
                let to = now();
                drop(held);
                Some((from, to))
            })
        })
        .collect();
    let mut held: Vec<(u64, u64)> = Vec::new();
    let mut timed_out = 0;
    for waiter in waiters {
        match waiter.join(HANG) {
            Some(span) => held.push(span),
            None => timed_out += 1,
        }
    }
    drop(stuck);
    held.sort();
    let last = held.last().map(|&(_, to)| after(to, granted));
    println!(
        "{}: {} of {WAITERS} siblings got the lock after the stuck holder's {LEASE:?} lease, \
         the last done {last:?} after its grant; {timed_out} timed out after {BOUND:?}",
        kind.name(),
        held.len()
    );
    assert_eq!(
        held.len(),
        WAITERS,
        "{}: {timed_out} of {WAITERS} siblings of a stuck holder (lease {LEASE:?}) timed out \
         after {BOUND:?}; each must get the lock in turn once the lease ends",
        kind.name()
    );
    for pair in held.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "two siblings held the lock at once: {pair:?}"
        );
    }
    let last = last.unwrap();
    assert!(
        last <= SOON * 2,
        "{}: the last sibling was done {last:?} after the stuck holder's grant; expected \
         within {:?}",
        kind.name(),
        SOON * 2
    );
}

#[test]
fn expiry_lets_eight_siblings_in_turn_on_a_pool_of_four() {
    expiry_lets_many_siblings_in_turn(Kind::Mutex);
}

#[test]
fn expiry_lets_eight_fair_siblings_in_turn_on_a_pool_of_four() {
    expiry_lets_many_siblings_in_turn(Kind::Fair);
}

/// While a thread holds a mutex (no expiry), its siblings wait in Redis: one of them, on
/// one connection, as the process's one waiter (and in fair mode one queue entry), however
/// many wait, on a pool of fewer connections than waiters; the holder's release wakes them.
fn siblings_wait_in_redis_one_at_a_time(kind: Kind) {
    const WAITERS: usize = 8;
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = small_pool(&server);
    let name = format!("in-redis-{}", kind.name());
    let a = Object::new(kind, &pool, &name, None);
    let holding = a.take().unwrap();
    let pool = siblings_pool(&pool, || small_pool(&server));
    let waiters: Vec<Task<Option<Instant>>> = (0..WAITERS)
        .map(|i| {
            let (pool, name) = (pool.clone(), name.clone());
            spawn(&format!("sibling {i}"), move || {
                let b = Object::new(kind, &pool, &name, None);
                let held = match b.take_for(Duration::from_secs(8)) {
                    Ok(held) => held,
                    Err(TryLockError::WouldBlock) => return None,
                    Err(e) => panic!("sibling {i}: {e}"),
                };
                let at = Instant::now();
                thread::sleep(Duration::from_millis(5));
                drop(held);
                Some(at)
            })
        })
        .collect();
    let in_redis = eventually(Duration::from_secs(3), || blocked_clients(&mut conn) == 1);
    assert!(
        in_redis,
        "{}: with a sibling holding the lock, none of its {WAITERS} waiting siblings waits \
         in Redis (blocked clients: {}); the process's waiter must wait there as another \
         process's does",
        kind.name(),
        blocked_clients(&mut conn)
    );
    let (mut most_blocked, mut most_queued) = (0, 0);
    let sampled = Instant::now();
    while sampled.elapsed() < Duration::from_millis(500) {
        most_blocked = most_blocked.max(blocked_clients(&mut conn));
        most_queued = most_queued.max(queued(&mut conn, &name));
        thread::sleep(Duration::from_millis(10));
    }
    assert!(
        most_blocked <= 1 && most_queued <= 1,
        "{}: one waiter in Redis per pool, name and process: {most_blocked} blocked, \
         {most_queued} queued at most",
        kind.name()
    );
    let released = Instant::now();
    drop(holding);
    let mut late = Duration::ZERO;
    for (i, waiter) in waiters.into_iter().enumerate() {
        let at = waiter
            .join(HANG)
            .unwrap_or_else(|| panic!("{}: sibling {i} timed out", kind.name()));
        late = late.max(at - released);
    }
    println!(
        "{}: at most {most_blocked} blocked and {most_queued} queued while {WAITERS} siblings \
         waited; the last got the lock {late:?} after the release",
        kind.name()
    );
    assert!(
        late <= WAKE + Duration::from_secs(1),
        "the last sibling got the lock {late:?} after the release"
    );
}

#[test]
fn siblings_of_a_holder_wait_in_redis_one_at_a_time() {
    siblings_wait_in_redis_one_at_a_time(Kind::Mutex);
}

#[test]
fn fair_siblings_of_a_holder_wait_in_redis_one_at_a_time() {
    siblings_wait_in_redis_one_at_a_time(Kind::Fair);
}

// ---------------------------------------------------------------------------------------
// 3. Reset.

/// Thread A holds `holder`'s lock (a mutex without expiry; a read-write lock's or a
/// semaphore's renewed lease); thread B, with its own object, waits in `lock()` (`write()`,
/// `read()`, `acquire()`); an operator on a pool of its own resets the lock. B must be woken
/// and get it at once.
fn reset_wakes_a_sibling(holder: Kind, waiter: Kind) {
    let server = RedisServer::start();
    let pool = server.pool();
    let operator_pool = server.pool();
    let name = format!("reset-{}-{}", holder.name(), waiter.name());
    let a = Object::new(holder, &pool, &name, None);
    let stuck = a.take().unwrap();
    let sibling = {
        let (pool, name) = (siblings_pool(&pool, || server.pool()), name.clone());
        spawn(
            &format!(
                "B, a sibling of the holder waiting in {}'s blocking call, which an operator's \
                 reset must wake",
                waiter.name()
            ),
            move || {
                let b = Object::new(waiter, &pool, &name, None);
                let held = b.take().unwrap();
                let at = Instant::now();
                thread::sleep(HOLD);
                drop(held);
                at
            },
        )
    };
    // B waits (in the process today; in Redis, as it should).
    thread::sleep(Duration::from_millis(300));
    assert!(
        sibling.try_join().is_none(),
        "B got the lock while A held it"
    );
    let operator = Object::new(holder, &operator_pool, &name, None);
    let reset_at = Instant::now();
    assert!(operator.reset(), "the operator found nothing to reset");
    let at = sibling.join(BOUND);
    println!(
        "{} held, {} waiting: the sibling got the lock {:?} after the operator's reset",
        holder.name(),
        waiter.name(),
        at - reset_at
    );
    assert!(
        at - reset_at <= WAKE,
        "B got the lock {:?} after the reset; expected within {WAKE:?}",
        at - reset_at
    );
    drop(stuck);
}

#[test]
fn reset_of_a_mutex_wakes_a_sibling_waiting_in_lock() {
    reset_wakes_a_sibling(Kind::Mutex, Kind::Mutex);
}

#[test]
fn reset_of_a_fair_mutex_wakes_a_sibling_waiting_in_lock() {
    reset_wakes_a_sibling(Kind::Fair, Kind::Fair);
}

#[test]
fn reset_of_a_write_lock_wakes_a_sibling_waiting_in_write() {
    reset_wakes_a_sibling(Kind::Write, Kind::Write);
}

#[test]
fn reset_of_a_write_lock_wakes_a_sibling_waiting_in_read() {
    reset_wakes_a_sibling(Kind::Write, Kind::Read);
}

/// The semaphore gets this right today; kept so that it stays right.
#[test]
fn reset_of_a_semaphore_wakes_a_sibling_waiting_in_acquire() {
    reset_wakes_a_sibling(Kind::Semaphore, Kind::Semaphore);
}

// ---------------------------------------------------------------------------------------
// 4. Restart.

/// Thread A holds `holder`'s lock, its guard alive; the server restarts without
/// persistence, which frees every lock; thread B's `try_lock` (`try_write`, `try_read`,
/// `try_acquire`), with its own object, must get it (retried for a few seconds: the pool
/// reconnects, and an error meanwhile is fine).
fn restart_frees_it_for_a_sibling_try(holder: Kind, waiters: &'static [Kind]) {
    let mut server = RedisServer::start();
    let pool = server.pool();
    let name = format!("restart-try-{}", holder.name());
    let a = Object::new(holder, &pool, &name, None);
    let stuck = a.take().unwrap();
    let pool = siblings_pool(&pool, || server.pool());
    let objects: Vec<&'static Object> = waiters
        .iter()
        .map(|&kind| Object::new(kind, &pool, &name, None))
        .collect();
    for (kind, b) in waiters.iter().zip(&objects) {
        assert!(
            matches!(b.try_take().map(drop), Err(TryLockError::WouldBlock)),
            "{}: B got the lock while A held it",
            kind.name()
        );
    }
    server.restart();
    let restarted = Instant::now();
    let sibling = spawn("B, trying after the restart", move || {
        let mut report = Vec::new();
        for (kind, b) in waiters.iter().zip(objects) {
            let started = Instant::now();
            let mut seen = Vec::new();
            let got = loop {
                match b.try_take() {
                    Ok(held) => {
                        drop(held);
                        break true;
                    }
                    Err(TryLockError::WouldBlock) => seen.push("WouldBlock".to_owned()),
                    Err(e) => seen.push(format!("error: {e}")),
                }
                if started.elapsed() > BOUND {
                    break false;
                }
                thread::sleep(Duration::from_millis(100));
            };
            seen.dedup();
            report.push((*kind, got, started.elapsed(), restarted.elapsed(), seen));
        }
        report
    });
    let report = sibling.join(HANG);
    drop(stuck);
    for (kind, got, took, since, seen) in &report {
        println!(
            "{} held across a restart: the sibling's {} attempts {} after {took:?} ({since:?} \
             after the restart); answers before: {seen:?}",
            holder.name(),
            kind.name(),
            if *got { "got it" } else { "gave up" },
        );
    }
    for (kind, got, took, _, seen) in report {
        assert!(
            got,
            "{} held by A, whose guard lives: after a restart without persistence, B's {} \
             attempts never got the lock in {took:?} (answers: {seen:?}); every other \
             process gets it",
            holder.name(),
            kind.name()
        );
    }
}

#[test]
fn restart_frees_a_mutex_for_a_siblings_try_lock() {
    restart_frees_it_for_a_sibling_try(Kind::Mutex, &[Kind::Mutex]);
}

#[test]
fn restart_frees_a_fair_mutex_for_a_siblings_try_lock() {
    restart_frees_it_for_a_sibling_try(Kind::Fair, &[Kind::Fair]);
}

#[test]
fn restart_frees_a_write_lock_for_a_siblings_try_write_and_try_read() {
    restart_frees_it_for_a_sibling_try(Kind::Write, &[Kind::Write, Kind::Read]);
}

/// The semaphore gets this right today; kept so that it stays right.
#[test]
fn restart_frees_a_semaphore_for_a_siblings_try_acquire() {
    restart_frees_it_for_a_sibling_try(Kind::Semaphore, &[Kind::Semaphore]);
}

/// Thread A holds `kind`'s lock, its guard alive; thread B waits for it (8 s, retried on an
/// error) when the server restarts without persistence: B must get it soon after.
fn restart_frees_it_for_a_waiting_sibling(kind: Kind) {
    const PATIENCE: Duration = Duration::from_secs(8);
    let mut server = RedisServer::start();
    let pool = server.pool();
    let name = format!("restart-wait-{}", kind.name());
    let a = Object::new(kind, &pool, &name, None);
    let stuck = a.take().unwrap();
    let sibling = {
        let (pool, name) = (siblings_pool(&pool, || server.pool()), name.clone());
        spawn("B, waiting across the restart", move || {
            let b = Object::new(kind, &pool, &name, None);
            let deadline = Instant::now() + PATIENCE;
            let mut errors = Vec::new();
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match b.take_for(left) {
                    Ok(held) => {
                        let at = Instant::now();
                        drop(held);
                        return (Some(at), errors);
                    }
                    Err(TryLockError::WouldBlock) => return (None, errors),
                    Err(e) => errors.push(e.to_string()),
                }
                if Instant::now() >= deadline {
                    return (None, errors);
                }
                thread::sleep(Duration::from_millis(50));
            }
        })
    };
    thread::sleep(Duration::from_millis(500));
    assert!(
        sibling.try_join().is_none(),
        "B got the lock while A held it"
    );
    server.restart();
    let restarted = Instant::now();
    let (got, errors) = sibling.join(HANG);
    drop(stuck);
    println!(
        "{} held across a restart: the waiting sibling {} (errors on the way: {errors:?})",
        kind.name(),
        match got {
            Some(at) => format!("got it {:?} after the restart", at - restarted),
            None => format!("timed out {:?} after the restart", restarted.elapsed()),
        }
    );
    let at = got.unwrap_or_else(|| {
        panic!(
            "{}: B, waiting while A (guard alive) held the lock, never got it after a restart \
             without persistence freed it; it timed out {:?} after the restart",
            kind.name(),
            restarted.elapsed()
        )
    });
    assert!(
        at - restarted <= WAKE * 2,
        "{}: B got the lock {:?} after the restart",
        kind.name(),
        at - restarted
    );
}

#[test]
fn restart_frees_a_mutex_for_a_sibling_waiting_in_try_lock_for() {
    restart_frees_it_for_a_waiting_sibling(Kind::Mutex);
}

#[test]
fn restart_frees_a_fair_mutex_for_a_sibling_waiting_in_try_lock_for() {
    restart_frees_it_for_a_waiting_sibling(Kind::Fair);
}

#[test]
fn restart_frees_a_write_lock_for_a_sibling_waiting_in_try_write_for() {
    restart_frees_it_for_a_waiting_sibling(Kind::Write);
}

// ---------------------------------------------------------------------------------------
// 5. try_lock while a sibling holds.

/// Thread A holds `holder`'s lock with a live 10 s lease. Thread B (own objects) tries each
/// of `waiters`: `WouldBlock`, having asked Redis; an operator resets the lock; B's next
/// try gets it at once.
fn try_after_reset_asks_redis(holder: Kind, waiters: &'static [Kind]) {
    let server = RedisServer::start();
    let pool = server.pool();
    let name = format!("try-{}", holder.name());
    let a = Object::new(holder, &pool, &name, Some(Duration::from_secs(10)));
    let held = a.take().unwrap();
    let operator = Object::new(holder, &server.pool(), &name, None);
    let url = server.url();
    let sibling = {
        let (pool, name) = (siblings_pool(&pool, || server.pool()), name.clone());
        spawn("B, trying while its sibling holds", move || {
            let mut conn = crate::support::connect(&url);
            let objects: Vec<(Kind, &'static Object)> = waiters
                .iter()
                .map(|&kind| (kind, Object::new(kind, &pool, &name, None)))
                .collect();
            let mut sent = Vec::new();
            for &(kind, b) in &objects {
                let before = commands_processed(&mut conn);
                let result = b.try_take().map(drop);
                // The second INFO counts the first.
                let after = commands_processed(&mut conn) - 1;
                assert!(
                    matches!(result, Err(TryLockError::WouldBlock)),
                    "{}: B's try while A holds: {result:?}",
                    kind.name()
                );
                sent.push((kind, after - before));
            }
            assert!(operator.reset(), "the operator found nothing to reset");
            let mut after_reset = Vec::new();
            for &(kind, b) in &objects {
                let started = Instant::now();
                let result = b.try_take().map(drop);
                after_reset.push((kind, result, started.elapsed()));
            }
            (sent, after_reset)
        })
    };
    let (sent, after_reset) = sibling.join(HANG);
    drop(held);
    for (kind, result, took) in &after_reset {
        println!(
            "{} held: B's {} try after the operator's reset: {result:?} in {took:?}",
            holder.name(),
            kind.name()
        );
    }
    for (kind, commands) in &sent {
        println!(
            "{} held: B's {} try sent {commands} command(s) to Redis",
            holder.name(),
            kind.name()
        );
    }
    for (kind, result, took) in after_reset {
        assert!(
            result.is_ok(),
            "{} held by A; after an operator's reset, B's {} try (a sibling of A, own \
             object) must get the lock at once, as another process's would; it answered \
             {result:?} in {took:?}",
            holder.name(),
            kind.name()
        );
        assert!(took <= WAKE, "{}: the try took {took:?}", kind.name());
    }
    for (kind, commands) in sent {
        assert!(
            commands >= 1,
            "{} held by A: B's {} try answered WouldBlock without asking Redis",
            holder.name(),
            kind.name()
        );
    }
}

#[test]
fn try_lock_while_a_sibling_holds_asks_redis_and_sees_a_reset() {
    try_after_reset_asks_redis(Kind::Mutex, &[Kind::Mutex]);
}

#[test]
fn try_lock_of_a_fair_mutex_while_a_sibling_holds_asks_redis_and_sees_a_reset() {
    try_after_reset_asks_redis(Kind::Fair, &[Kind::Fair]);
}

#[test]
fn try_write_and_try_read_while_a_sibling_writes_ask_redis_and_see_a_reset() {
    try_after_reset_asks_redis(Kind::Write, &[Kind::Write, Kind::Read]);
}

/// The semaphore gets this right today; kept so that it stays right.
#[test]
fn try_acquire_while_a_sibling_holds_asks_redis_and_sees_a_reset() {
    try_after_reset_asks_redis(Kind::Semaphore, &[Kind::Semaphore]);
}

// ---------------------------------------------------------------------------------------
// 6. Resume.

fn resume_pool(server: &RedisServer) -> Pool {
    server.pool_with(Pool::builder().response_timeout(RESPONSE_TIMEOUT))
}

/// Within two response timeouts, and a second of slack.
fn resume_bound() -> Duration {
    RESPONSE_TIMEOUT * 2 + Duration::from_secs(1)
}

fn resumable(pool: &Pool, name: &str) -> RedisMutex {
    RedisMutex::builder(pool.clone(), name)
        .expire(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A thread holds a mutex (10 s lease) and resumes, on the same thread, the handle of an
/// earlier grant that it released: refused (`HandleStale`) within its bound, the grant it
/// holds untouched.
#[test]
fn resume_of_a_stale_handle_on_the_holding_thread_is_refused_in_bounds() {
    let server = RedisServer::start();
    let pool = resume_pool(&server);
    let control = control_pool(|| resume_pool(&server));
    let holder = spawn(
        "A, holding and resuming a stale handle on the same thread (must be refused in bounds)",
        move || {
            let mutex = resumable(&pool, "resume-stale");
            let first = mutex.lock().unwrap();
            let stale = first.handle();
            first.unlock().unwrap();
            let holding = mutex.lock().unwrap();
            let elsewhere = control.map(|pool| resumable(&pool, "resume-stale"));
            let resumer = elsewhere.as_ref().unwrap_or(&mutex);
            let started = Instant::now();
            let resumed = resumer.resume(&stale).map(drop);
            let took = started.elapsed();
            let still_held = holding.is_held().unwrap();
            (resumed, took, still_held)
        },
    );
    let (resumed, took, still_held) = holder.join(BOUND);
    println!("resume of a stale handle on the holding thread: {resumed:?} after {took:?}");
    assert!(
        matches!(resumed, Err(Error::HandleStale { .. })),
        "a stale handle must be refused with HandleStale: {resumed:?}"
    );
    assert!(
        took <= resume_bound(),
        "refused after {took:?}; the bound is {:?}",
        resume_bound()
    );
    assert!(still_held, "a refused resume touched the grant held");
}

/// A thread holds a mutex and resumes its own guard's handle on the same thread: it takes
/// the grant over within its bound; the guard it came from no longer holds it.
#[test]
fn resume_of_its_own_handle_on_the_holding_thread_takes_over_in_bounds() {
    let server = RedisServer::start();
    let pool = resume_pool(&server);
    let control = control_pool(|| resume_pool(&server));
    let holder = spawn(
        "A, resuming its own live handle on the holding thread (must take over in bounds)",
        move || {
            let mutex = resumable(&pool, "resume-own");
            let original = mutex.lock().unwrap();
            let handle = original.handle();
            let elsewhere = control.map(|pool| resumable(&pool, "resume-own"));
            let resumer = elsewhere.as_ref().unwrap_or(&mutex);
            let started = Instant::now();
            let resumed = resumer.resume(&handle);
            let took = started.elapsed();
            let outcome = match resumed {
                Ok(resumed) => {
                    let original_held = original.ensure_held().is_ok();
                    let resumed_held = resumed.ensure_held().is_ok();
                    resumed.unlock().unwrap();
                    Ok((original_held, resumed_held))
                }
                Err(e) => Err(e),
            };
            drop(original);
            (outcome, took)
        },
    );
    let (outcome, took) = holder.join(BOUND);
    println!("resume of its own handle on the holding thread: {outcome:?} after {took:?}");
    let (original_held, resumed_held) =
        outcome.unwrap_or_else(|e| panic!("a live handle must be taken over: {e}"));
    assert!(
        took <= resume_bound(),
        "took over after {took:?}; the bound is {:?}",
        resume_bound()
    );
    assert!(resumed_held, "the resumed guard does not hold the lock");
    assert!(
        !original_held,
        "the guard the handle came from still holds it"
    );
}

/// A thread holds a mutex (10 s lease) and gives its handle out, keeping its guard; another
/// thread waits in `lock()`; a third resumes the handle: it takes over within its bound,
/// and the waiter gets the lock once the resumed guard lets go.
#[test]
fn resume_while_a_sibling_waits_in_lock_takes_over_in_bounds() {
    let server = RedisServer::start();
    let pool = resume_pool(&server);
    let name = "resume-crowd";
    let (handle_tx, handle_rx) = mpsc::channel::<LockHandle>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let holder = {
        let pool = pool.clone();
        spawn("A, holding", move || {
            let mutex = resumable(&pool, name);
            let guard = mutex.lock().unwrap();
            handle_tx.send(guard.handle()).unwrap();
            done_rx.recv_timeout(HANG).ok();
            drop(guard);
        })
    };
    let handle = handle_rx.recv_timeout(HANG).expect("A never locked");
    let pool = siblings_pool(&pool, || resume_pool(&server));
    let waiter = {
        let pool = pool.clone();
        spawn("W, waiting in lock()", move || {
            let mutex = resumable(&pool, name);
            let guard = mutex.lock().unwrap();
            let at = Instant::now();
            drop(guard);
            at
        })
    };
    thread::sleep(Duration::from_millis(300));
    let resumer = {
        // In a control run, a third process: not behind W either.
        let pool = siblings_pool(&pool, || resume_pool(&server));
        spawn(
            "R, resuming A's live handle while W waits (must take over in bounds)",
            move || {
                let mutex = resumable(&pool, name);
                let started = Instant::now();
                let resumed = mutex.resume(&handle);
                let took = started.elapsed();
                let held = resumed.map(|guard| {
                    let held = guard.ensure_held().is_ok();
                    thread::sleep(HOLD);
                    guard.unlock().unwrap();
                    held
                });
                (held, took, Instant::now())
            },
        )
    };
    let (held, took, released) = resumer.join(BOUND);
    println!("resume while a sibling waits in lock(): {held:?} after {took:?}");
    let held = held.unwrap_or_else(|e| panic!("A's live handle must be taken over: {e}"));
    assert!(held, "the resumed guard does not hold the lock");
    assert!(
        took <= resume_bound(),
        "took over after {took:?}; the bound is {:?}",
        resume_bound()
    );
    // The grant released, W (waiting all along) gets it, though A's stale guard lives on.
    let at = waiter.join(BOUND);
    assert!(
        at.saturating_duration_since(released) <= WAKE,
        "W got the lock {:?} after the resumed guard let go",
        at.saturating_duration_since(released)
    );
    done_tx.send(()).ok();
    holder.join(HANG);
}

/// The same for a write lock: a thread holding the write lock resumes a stale write
/// handle (refused in bounds), then its own live one (taken over in bounds).
#[test]
fn resume_write_on_the_holding_thread_answers_in_bounds() {
    let server = RedisServer::start();
    let pool = resume_pool(&server);
    let control = control_pool(|| resume_pool(&server));
    let holder = spawn(
        "A, holding a write lock and resuming write handles on the same thread (must answer \
         in bounds)",
        move || {
            let build = |pool: Pool| {
                RedisRwLock::builder(pool, "resume/write")
                    .expire(Duration::from_secs(10))
                    .build()
                    .unwrap()
            };
            let lock = build(pool);
            let elsewhere = control.map(build);
            let resumer = elsewhere.as_ref().unwrap_or(&lock);
            let first = lock.write().unwrap();
            let stale = first.handle();
            first.unlock().unwrap();
            let holding = lock.write().unwrap();
            let started = Instant::now();
            let refused = resumer.resume_write(&stale).map(drop);
            let refused_after = started.elapsed();
            let started = Instant::now();
            let resumed = resumer.resume_write(&holding.handle()).map(|guard| {
                let held = guard.ensure_held().is_ok();
                guard.unlock().unwrap();
                held
            });
            let resumed_after = started.elapsed();
            drop(holding);
            (refused, refused_after, resumed, resumed_after)
        },
    );
    let (refused, refused_after, resumed, resumed_after) = holder.join(BOUND * 2);
    println!(
        "resume_write on the holding thread: stale {refused:?} after {refused_after:?}; \
         live {resumed:?} after {resumed_after:?}"
    );
    assert!(
        matches!(refused, Err(Error::HandleStale { .. })),
        "a stale write handle must be refused with HandleStale: {refused:?}"
    );
    assert!(refused_after <= resume_bound(), "{refused_after:?}");
    assert!(
        matches!(resumed, Ok(true)),
        "a live write handle must be taken over: {resumed:?}"
    );
    assert!(resumed_after <= resume_bound(), "{resumed_after:?}");
}

// ---------------------------------------------------------------------------------------
// 7. A small semaphore request is not held up by a bigger one of its own process.

/// Capacity 3, all three permits held (by another process's pool, or this one's); thread A
/// waits for all three (6 s), thread B for one (3 s), each with its own object; one permit
/// is released: B must get it soon, while A still waits; A gets its three once the others
/// are released.
fn small_request_goes_before_a_big_one(holders_elsewhere: bool) {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = small_pool(&server);
    let holders_pool = if holders_elsewhere {
        server.pool()
    } else {
        pool.clone()
    };
    let name = "small-behind-big";
    let sem = move |pool: &Pool| RedisSemaphore::new(pool.clone(), name, 3).unwrap();
    let holders = sem(&holders_pool);
    let mut permits: Vec<_> = (0..3).map(|_| holders.acquire().unwrap()).collect();
    let big = {
        let pool = pool.clone();
        spawn("A, waiting for three permits", move || {
            let a = sem(&pool);
            let got = a.try_acquire_many_for(3, Duration::from_secs(6));
            let at = Instant::now();
            got.map(|p| {
                let n = p.permits();
                drop(p);
                (n, at)
            })
        })
    };
    assert!(
        eventually(HANG, || blocked_clients(&mut conn) >= 1),
        "A never waited in Redis"
    );
    let small = {
        let pool = siblings_pool(&pool, || small_pool(&server));
        spawn("B, waiting for one permit", move || {
            let b = sem(&pool);
            let started = Instant::now();
            match b.try_acquire_for(WAIT) {
                Ok(permit) => {
                    let at = Instant::now();
                    thread::sleep(HOLD);
                    drop(permit);
                    (Some(at), started.elapsed())
                }
                Err(TryLockError::WouldBlock) => (None, started.elapsed()),
                Err(e) => panic!("B: {e}"),
            }
        })
    };
    thread::sleep(Duration::from_millis(300));
    let released = Instant::now();
    permits.pop().unwrap().release().unwrap();
    let (got, waited) = small.join(HANG);
    let available = holders.available_permits().unwrap();
    let a_done = big.try_join().is_some();
    println!(
        "holders {}: B (one permit) {} after the release of one; A (three) done meanwhile: \
         {a_done}; available permits now {available}",
        if holders_elsewhere {
            "in another process"
        } else {
            "in this process"
        },
        match got {
            Some(at) => format!("got it {:?}", at - released),
            None => format!("timed out after {waited:?}"),
        }
    );
    let at = got.unwrap_or_else(|| {
        panic!(
            "B, waiting for one permit behind A's request for three in the same process, \
             timed out after {waited:?} with {available} permit(s) available; a small request \
             may go before a big one that does not fit"
        )
    });
    assert!(
        at - released <= WAKE,
        "B got its permit {:?} after the release",
        at - released
    );
    assert!(!a_done, "A finished before the others released theirs");
    drop(permits);
    let (n, _) = big
        .join(HANG)
        .unwrap_or_else(|e| panic!("A never got its three permits: {e:?}"));
    assert_eq!(n, 3);
}

#[test]
fn a_small_semaphore_request_goes_before_a_big_one_of_its_process() {
    small_request_goes_before_a_big_one(true);
}

#[test]
fn a_small_semaphore_request_goes_before_a_big_one_when_this_process_holds_the_rest() {
    small_request_goes_before_a_big_one(false);
}

// ---------------------------------------------------------------------------------------
// 8. Fair order across processes.

/// A fair mutex is held here; a waiter of another process queues; then a sibling of the
/// holder (its own object, the holder's pool); then a waiter of a third process. Released,
/// the lock goes to them in that order: the sibling queues in Redis in its place, not
/// after the holder lets go.
#[test]
fn fair_order_across_processes_counts_a_holders_sibling_in_its_place() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = server.pool();
    let name = "fair-order";
    let fair = move |pool: &Pool| {
        RedisMutex::builder(pool.clone(), name)
            .fair(true)
            .expire(Duration::from_secs(10))
            .build()
            .unwrap()
    };
    let holder = fair(&pool);
    let guard = holder.lock().unwrap();
    let env = [("REDIS_URL", server.url()), ("NAME", name.to_owned())];

    let mut first = spawn_child(module_path!(), "child_fair_waiter", &env);
    let first_lines = first.lines();
    assert!(
        eventually(HANG, || queued(&mut conn, name) == 1),
        "the first process's waiter never queued"
    );
    let sibling = {
        let pool = siblings_pool(&pool, || server.pool());
        spawn("the holder's sibling", move || {
            let mutex = fair(&pool);
            let guard = mutex.lock().unwrap();
            let token = guard.fencing_token();
            thread::sleep(HOLD);
            guard.unlock().unwrap();
            token
        })
    };
    let sibling_queued = eventually(BOUND, || queued(&mut conn, name) == 2);
    if !sibling_queued {
        drop(guard);
        first.finish_with(&first_lines, HANG);
        sibling.join(HANG);
        panic!(
            "the holder's sibling, waiting in lock(), never queued in Redis within {BOUND:?} \
             (queue length {}): it waits for its process's turn instead, and would come \
             after every process that queued meanwhile",
            queued(&mut conn, name)
        );
    }
    let mut third = spawn_child(module_path!(), "child_fair_waiter", &env);
    let third_lines = third.lines();
    assert!(
        eventually(HANG, || queued(&mut conn, name) == 3),
        "the third process's waiter never queued"
    );
    let held_token = guard.fencing_token();
    guard.unlock().unwrap();
    let token = |lines: &crate::support::Lines| -> u64 {
        lines.expect("@granted ", HANG).trim().parse().unwrap()
    };
    let first_token = token(&first_lines);
    first.finish_with(&first_lines, HANG);
    let sibling_token = sibling.join(HANG);
    let third_token = token(&third_lines);
    third.finish_with(&third_lines, HANG);
    let tokens = [held_token, first_token, sibling_token, third_token];
    println!("fencing tokens: holder, first process, sibling, third process: {tokens:?}");
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "grants out of the order of arrival (holder, first process, sibling, third \
         process): {tokens:?}"
    );
}
