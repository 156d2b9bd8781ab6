//! RedisMutex behaviour against real redis-server processes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{
    HANG, RedisServer, Task, blocked_clients, child_env, command_calls, eventually, info_field,
    spawn_child,
};
use redis::Commands;
use redis_mutex::{Error, Pool, RedisMutex, TryLockError, reset_all};

/// How late a timed-out `try_lock_for` may return, at most, on a busy machine: far below
/// the whole second a wait rounded to the server's seconds, or restarted by a wake-up,
/// would take. How close to the deadline it returns is checked by a median instead.
const DEADLINE_SLACK: Duration = Duration::from_millis(250);

/// How long a multi-process run (thousands of lock cycles) may take.
const RUN: Duration = Duration::from_secs(120);

/// The lease of the holder that is killed: far from the 1 s a waiter naps at most, so that
/// a waiter that ignored the holder's remaining lease would come half a second late.
const CRASHED_LEASE: Duration = Duration::from_millis(2500);

/// One cycle of a non-atomic read-increment-write: lost updates show if two overlap.
fn increment(conn: &mut redis::Connection, key: &str) {
    let value: i64 = conn.get::<_, Option<i64>>(key).unwrap().unwrap_or(0);
    let _: () = conn.set(key, value + 1).unwrap();
}

/// A direct connection with a name, which [`pool_connections`] does not count.
fn named_connection(server: &RedisServer) -> redis::Connection {
    let mut conn = server.connection();
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("test")
        .query(&mut conn)
        .unwrap();
    conn
}

/// How many connections the server has that have no name: the pools' connections, when
/// every connection the test opened itself is a [`named_connection`].
fn pool_connections(conn: &mut redis::Connection) -> usize {
    let clients: String = redis::cmd("CLIENT").arg("LIST").query(conn).unwrap();
    clients.lines().filter(|l| l.contains(" name= ")).count()
}

/// How many connections the server has accepted since it started.
fn connections_received(conn: &mut redis::Connection) -> u64 {
    info_field(conn, "stats", "total_connections_received")
        .expect("INFO stats has total_connections_received")
        .parse()
        .unwrap()
}

#[test]
fn lock_and_unlock_leave_the_protocol_keys() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let mutex = RedisMutex::builder(server.pool(), "jobs")
        .owner_id("worker-1")
        .expire(Duration::from_secs(10))
        .signal_expire(Duration::from_millis(700))
        .build()
        .unwrap();
    assert_eq!(mutex.name(), "jobs");
    assert_eq!(mutex.owner_id(), "worker-1");
    assert!(!mutex.is_locked().unwrap());

    let guard = mutex.lock().unwrap();
    let owner: String = conn.get("lock:jobs").unwrap();
    assert_eq!(owner, "worker-1");
    let pttl: i64 = conn.pttl("lock:jobs").unwrap();
    assert!(pttl > 9_000 && pttl <= 10_000, "PTTL {pttl}");
    assert!(mutex.is_locked().unwrap());
    assert_eq!(mutex.get_owner_id().unwrap().as_deref(), Some("worker-1"));
    assert!(guard.is_held().unwrap());

    guard.unlock().unwrap();
    let exists: bool = conn.exists("lock:jobs").unwrap();
    assert!(!exists, "the lock key is deleted on release");
    let signal: Vec<String> = conn.lrange("lock-signal:jobs", 0, -1).unwrap();
    assert_eq!(signal, ["1"], "release leaves one signal");
    let signal_pttl: i64 = conn.pttl("lock-signal:jobs").unwrap();
    assert!(
        signal_pttl > 0 && signal_pttl <= 700,
        "signal PTTL {signal_pttl}"
    );
    assert_eq!(mutex.get_owner_id().unwrap(), None);
}

#[test]
fn default_mutex_has_no_expiry_and_a_random_128_bit_owner() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let a = RedisMutex::new(server.pool(), "plain").unwrap();
    let b = RedisMutex::new(server.pool(), "plain").unwrap();
    assert_ne!(a.owner_id(), b.owner_id());
    assert_eq!(a.owner_id().len(), 32);
    let guard = a.lock().unwrap();
    let pttl: i64 = conn.pttl("lock:plain").unwrap();
    assert_eq!(pttl, -1, "no expiry by default");
    assert_eq!(guard.valid_for(), None);
    assert!(matches!(
        guard.extend(Duration::from_secs(1)),
        Err(Error::NotExpirable { .. })
    ));
}

#[test]
fn try_lock_would_block_while_held_elsewhere_or_by_another_local_thread() {
    let server = RedisServer::start();
    let pool = server.pool();
    let holder = RedisMutex::new(pool.clone(), "busy").unwrap();
    let other = Arc::new(RedisMutex::new(pool, "busy").unwrap());

    let guard = holder.lock().unwrap();
    assert!(matches!(other.try_lock(), Err(TryLockError::WouldBlock)));
    drop(guard);
    let mine = other.try_lock().unwrap();

    // Another thread sharing the same mutex is turned away locally.
    let shared = other.clone();
    let turned_away = crate::support::spawn("a second local thread", move || {
        shared.try_lock().map(drop).unwrap_err().is_would_block()
    })
    .join(HANG);
    assert!(turned_away);
    drop(mine);
}

/// Waits with `try_lock_for(timeout)` on a lock held elsewhere; returns how late it was.
fn lateness_of_a_timed_out_wait(waiter: &RedisMutex, timeout: Duration) -> Duration {
    let started = Instant::now();
    let result = waiter.try_lock_for(timeout);
    let elapsed = started.elapsed();
    assert!(
        matches!(result, Err(TryLockError::WouldBlock)),
        "{result:?}"
    );
    assert!(
        elapsed >= timeout,
        "returned after {elapsed:?}, before its {timeout:?}"
    );
    // Never rounded to a whole second or restarted by a wake-up, even on a busy machine.
    assert!(
        elapsed < timeout + DEADLINE_SLACK,
        "a {timeout:?} timeout returned after {elapsed:?}"
    );
    elapsed - timeout
}

#[test]
fn try_lock_for_returns_a_few_milliseconds_after_its_deadline() {
    let server = RedisServer::start();
    let pool = server.pool();
    let holder = RedisMutex::new(pool.clone(), "slow").unwrap();
    let waiter = RedisMutex::new(pool, "slow").unwrap();
    let _guard = holder.lock().unwrap();
    // On an idle server, Redis answers a timed-out BLPOP on its timer tick (every 100 ms by
    // default), 50 ms late on average; the deadline is kept on our clock instead.
    let mut lateness: Vec<Duration> = [300u64, 50, 50, 50, 50, 50, 50, 50, 1, 1, 1]
        .into_iter()
        .map(|ms| lateness_of_a_timed_out_wait(&waiter, Duration::from_millis(ms)))
        .collect();
    lateness.sort();
    let median = lateness[lateness.len() / 2];
    // A few round trips and the 1 ms grace; far from the timer tick.
    assert!(
        median < Duration::from_millis(30),
        "median lateness {median:?}: {lateness:?}"
    );
}

#[test]
fn try_lock_for_is_not_restarted_by_spurious_wake_ups() {
    let server = RedisServer::start();
    let pool = server.pool();
    let holder = RedisMutex::new(pool.clone(), "woken").unwrap();
    let waiter = RedisMutex::new(pool, "woken").unwrap();
    let _guard = holder.lock().unwrap();
    // Someone keeps pushing signals without releasing.
    let stop = Arc::new(AtomicBool::new(false));
    let pusher = {
        let stop = stop.clone();
        let mut conn = server.connection();
        crate::support::spawn("signal pusher", move || {
            for _ in 0..200 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let _: () = conn.lpush("lock-signal:woken", 1).unwrap();
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    for ms in [300u64, 100, 45] {
        lateness_of_a_timed_out_wait(&waiter, Duration::from_millis(ms));
    }
    stop.store(true, Ordering::Relaxed);
    pusher.join(HANG);
}

/// A thread that locks a mutex, says so, and holds the guard until told to release it.
struct Holding {
    acquired: mpsc::Receiver<()>,
    release: mpsc::Sender<()>,
    task: Task<()>,
}

/// Locks `mutex` on a new thread; see [`Holding`].
fn lock_in_thread(mutex: Arc<RedisMutex>) -> Holding {
    let (acquired_tx, acquired) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let task = crate::support::spawn("a thread that locks and holds", move || {
        let _guard = mutex.lock().unwrap();
        acquired_tx.send(()).unwrap();
        // Until the test releases it (bounded all the same).
        release_rx.recv_timeout(HANG).ok();
    });
    Holding {
        acquired,
        release,
        task,
    }
}

impl Holding {
    /// Waits until the thread has the lock; fails with the thread's own panic if it failed.
    fn until_acquired(self, what: &str) -> Holding {
        if self.acquired.recv_timeout(HANG).is_ok() {
            return self;
        }
        let Holding { release, task, .. } = self;
        drop(release);
        task.join(HANG);
        panic!("{what}: the thread never got the lock");
    }

    /// Tells the thread to drop its guard, and waits until it has.
    fn release(self) {
        drop(self.release);
        self.task.join(HANG);
    }
}

#[test]
fn a_release_wakes_a_waiter_who_gets_the_lock() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    // Two pools: two processes, as far as the lock can tell (a process's mutexes of one
    // pool and name wait for each other in the process).
    let holder = RedisMutex::new(server.pool(), "handoff").unwrap();
    let waiter = Arc::new(RedisMutex::new(server.pool(), "handoff").unwrap());
    let guard = holder.lock().unwrap();
    let waiting = lock_in_thread(waiter.clone());
    assert!(
        eventually(HANG, || blocked_clients(&mut conn) == 1),
        "the waiter never blocked"
    );
    guard.unlock().unwrap();
    let holding = waiting.until_acquired("the woken waiter");
    // The waiter took the signal: it was woken by the release, not by a timeout.
    let signal: bool = conn.exists("lock-signal:handoff").unwrap();
    assert!(!signal, "the release's signal was consumed by the waiter");
    let owner: String = conn.get("lock:handoff").unwrap();
    assert_eq!(owner, waiter.owner_id());
    holding.release();
}

#[test]
fn threads_sharing_a_mutex_exclude_each_other_and_wait_on_one_connection() {
    let server = RedisServer::start();
    let mut conn = named_connection(&server);
    // No idle connections kept in advance: the pool opens one only when a thread needs one,
    // so the server's count of the pool's connections is how many were ever needed at once.
    let pool = server.pool_with(Pool::builder().min_idle(0));
    let mutex = Arc::new(RedisMutex::new(pool.clone(), "shared").unwrap());

    // Eight local waiters behind a lock held elsewhere (by a python-redis-lock client, say)
    // use one connection, not eight.
    let _: () = conn.set("lock:shared", "elsewhere").unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let mutex = mutex.clone();
            let done = done.clone();
            let mut counter = named_connection(&server);
            crate::support::spawn(&format!("local thread {t}"), move || {
                for _ in 0..50 {
                    let _g = mutex.lock().unwrap();
                    increment(&mut counter, "shared-counter");
                }
                done.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    assert!(eventually(HANG, || blocked_clients(&mut conn) == 1));
    assert_eq!(
        pool_connections(&mut conn),
        1,
        "waiting threads hold one pooled connection"
    );
    assert_eq!(blocked_clients(&mut conn), 1);
    assert_eq!(done.load(Ordering::SeqCst), 0);
    // The holder's release, as python-redis-lock makes it.
    let _: () = redis::pipe()
        .del("lock:shared")
        .lpush("lock-signal:shared", 1)
        .query(&mut conn)
        .unwrap();
    for t in threads {
        t.join(HANG);
    }
    assert_eq!(done.load(Ordering::SeqCst), 8);
    let total: i64 = conn.get("shared-counter").unwrap();
    assert_eq!(total, 8 * 50);
}

/// Child side of [`processes_exclude_each_other_and_the_count_is_exact`].
#[test]
#[ignore = "run as a child process by processes_exclude_each_other_and_the_count_is_exact"]
fn child_increments_under_the_lock() {
    let url = child_env("REDIS_URL");
    let cycles: usize = child_env("CYCLES").parse().unwrap();
    let mutex = Arc::new(
        RedisMutex::builder(crate::support::pool_at(&url), "counter")
            .expire(Duration::from_secs(10))
            .build()
            .unwrap(),
    );
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let mutex = mutex.clone();
            let mut conn = crate::support::connect(&url);
            crate::support::spawn(&format!("incrementing thread {t}"), move || {
                for _ in 0..cycles {
                    let guard = mutex.lock().unwrap();
                    increment(&mut conn, "counter");
                    guard.unlock().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join(RUN);
    }
}

#[test]
fn processes_exclude_each_other_and_the_count_is_exact() {
    let server = RedisServer::start();
    const PROCESSES: usize = 4;
    const CYCLES_PER_THREAD: usize = 300; // 2 threads each: 2,400 cycles in all
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            spawn_child(
                module_path!(),
                "child_increments_under_the_lock",
                &[
                    ("REDIS_URL", server.url()),
                    ("CYCLES", CYCLES_PER_THREAD.to_string()),
                ],
            )
        })
        .collect();
    for child in children {
        child.finish(RUN);
    }
    let total: i64 = server.connection().get("counter").unwrap();
    assert_eq!(total, (PROCESSES * 2 * CYCLES_PER_THREAD) as i64);
}

/// Child side of [`a_killed_holders_lock_is_taken_soon_after_it_expires`].
#[test]
#[ignore = "run as a child process by a_killed_holders_lock_is_taken_soon_after_it_expires"]
fn child_holds_the_lock_until_killed() {
    let pool = crate::support::pool_at(&child_env("REDIS_URL"));
    let mutex = RedisMutex::builder(pool, "crash")
        .expire(CRASHED_LEASE)
        .build()
        .unwrap();
    let _guard = mutex.lock().unwrap();
    println!("locked");
    // Hold the lock until the parent kills this process (bounded all the same).
    thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_killed_holders_lock_is_taken_soon_after_it_expires() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let waiter = RedisMutex::new(server.pool(), "crash").unwrap();
    let mut child = spawn_child(
        module_path!(),
        "child_holds_the_lock_until_killed",
        &[("REDIS_URL", server.url())],
    );
    let lines = child.lines();
    lines.expect("locked", HANG);
    child.kill(); // SIGKILL: no release
    // The lease ends `left` after the server answered the PTTL (to the millisecond).
    let left: i64 = conn.pttl("lock:crash").unwrap();
    let answered = Instant::now();
    // A waiter that ignored the lease would try again every second (its longest nap) and
    // get the lock 3 s after it started: more than half a second late with over 2 s left.
    assert!(
        left > 2_000 && left <= 2_500,
        "the killed holder's lease has {left} ms left: the test cannot tell a waiter that \
         ignores it from one that waits for it"
    );
    let expired_at = answered + Duration::from_millis(left as u64 + 1);

    let _guard = waiter.lock().unwrap();
    let late = expired_at.elapsed();
    assert!(
        late <= Duration::from_millis(250),
        "got the lock {late:?} after the killed holder's lease of {CRASHED_LEASE:?} ended"
    );
}

#[test]
fn release_by_a_non_owner_deletes_nothing() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    // Two pools: two processes (in one process, the second would wait for the first's
    // guard to go, whatever its lease).
    let first = RedisMutex::builder(server.pool(), "lease")
        .expire(Duration::from_millis(100))
        .build()
        .unwrap();
    let second = RedisMutex::builder(server.pool(), "lease")
        .owner_id("second")
        .build()
        .unwrap();
    let stale = first.lock().unwrap();
    // The first lease runs out; the second holder takes the lock.
    let taken = second.try_lock_for(HANG).unwrap();
    let err = stale.unlock().unwrap_err();
    assert!(
        matches!(err, Error::LockLost { .. } | Error::NotAcquired { .. }),
        "{err}"
    );
    let owner: String = conn.get("lock:lease").unwrap();
    assert_eq!(owner, "second", "the stale release deleted nothing");
    let signalled: bool = conn.exists("lock-signal:lease").unwrap();
    assert!(!signalled, "the stale release woke nobody");
    drop(taken);
}

#[test]
fn extend_sets_the_remaining_lease_and_fails_once_the_lock_is_gone() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let mutex = RedisMutex::builder(server.pool(), "ext")
        .expire(Duration::from_secs(2))
        .build()
        .unwrap();
    let guard = mutex.lock().unwrap();
    guard.extend(Duration::from_secs(30)).unwrap();
    let pttl: i64 = conn.pttl("lock:ext").unwrap();
    assert!(pttl > 29_000 && pttl <= 30_000, "PTTL {pttl}");
    assert!(guard.valid_for().unwrap() > Duration::from_secs(29));
    guard.extend(Duration::from_millis(500)).unwrap();
    let pttl: i64 = conn.pttl("lock:ext").unwrap();
    assert!(
        pttl <= 500,
        "extend resets the lease, it does not add: PTTL {pttl}"
    );
    assert!(matches!(
        guard.extend(Duration::ZERO),
        Err(Error::InvalidOptions { .. })
    ));

    let _: () = conn.del("lock:ext").unwrap();
    assert!(matches!(
        guard.extend(Duration::from_secs(1)),
        Err(Error::NotAcquired { .. })
    ));
    assert!(guard.is_lost());
    assert!(matches!(guard.ensure_held(), Err(Error::LockLost { .. })));
    let exists: bool = conn.exists("lock:ext").unwrap();
    assert!(!exists, "extend never re-creates a lock");
}

#[test]
fn reset_wakes_a_waiter_and_reset_all_leaves_other_keys() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = server.pool();
    let holder = RedisMutex::new(server.pool(), "stuck").unwrap();
    let waiter = Arc::new(RedisMutex::new(pool.clone(), "stuck").unwrap());
    let guard = holder.lock().unwrap();
    let waiting = lock_in_thread(waiter.clone());
    assert!(eventually(HANG, || blocked_clients(&mut conn) == 1));
    assert!(
        RedisMutex::new(pool.clone(), "stuck")
            .unwrap()
            .reset()
            .unwrap()
    );
    let holding = waiting.until_acquired("the waiter woken by reset");
    let signal: bool = conn.exists("lock-signal:stuck").unwrap();
    assert!(!signal, "the waiter was woken by reset's signal");
    holding.release();
    assert!(matches!(guard.unlock(), Err(Error::NotAcquired { .. })));

    // reset_all: locks go, everything else stays.
    let a = RedisMutex::new(pool.clone(), "a").unwrap();
    let b = RedisMutex::new(pool.clone(), "b with spaces").unwrap();
    let ga = a.lock().unwrap();
    let gb = b.lock().unwrap();
    for i in 0..1_200 {
        let _: () = conn.set(format!("lock:bulk-{i}"), "someone").unwrap();
    }
    let _: () = conn.set("unrelated", "1").unwrap();
    let _: () = conn.set("locks:not-ours", "1").unwrap();
    let _: () = conn.hset("lock:a-hash", "f", "v").unwrap();
    assert_eq!(reset_all(&pool).unwrap(), 1_202);
    for key in ["unrelated", "locks:not-ours", "lock:a-hash"] {
        let exists: bool = conn.exists(key).unwrap();
        assert!(exists, "{key} was left alone");
    }
    let left: Vec<String> = conn.keys("lock:*").unwrap();
    assert_eq!(left, ["lock:a-hash"]);
    assert!(matches!(ga.unlock(), Err(Error::NotAcquired { .. })));
    drop(gb);
}

#[test]
fn odd_names_work() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = server.pool();
    for name in [
        "with spaces",
        "{braces}",
        "new\nline",
        "ünïcødé 鎖",
        "*?[glob]",
        "lock:nested",
    ] {
        let mutex = RedisMutex::new(pool.clone(), name).unwrap();
        let other = RedisMutex::new(pool.clone(), name).unwrap();
        let guard = mutex.lock().unwrap();
        let owner: String = conn.get(format!("lock:{name}")).unwrap();
        assert_eq!(owner, mutex.owner_id(), "{name:?}");
        assert!(other.try_lock().unwrap_err().is_would_block(), "{name:?}");
        guard.unlock().unwrap();
        drop(other.try_lock().unwrap());
    }
}

#[test]
fn bad_options_and_names_are_refused_with_the_field() {
    let server = RedisServer::start();
    let pool = server.pool();
    let field = |r: redis_mutex::Result<RedisMutex>| match r {
        Err(Error::InvalidOptions { field, .. }) => field,
        other => panic!("expected InvalidOptions, got {other:?}"),
    };
    assert_eq!(field(RedisMutex::builder(pool.clone(), "").build()), "name");
    assert_eq!(
        field(
            RedisMutex::builder(pool.clone(), "x")
                .expire(Duration::ZERO)
                .build()
        ),
        "expire"
    );
    assert_eq!(
        field(
            RedisMutex::builder(pool.clone(), "x")
                .expire(Duration::MAX)
                .build()
        ),
        "expire"
    );
    assert_eq!(
        field(
            RedisMutex::builder(pool.clone(), "x")
                .signal_expire(Duration::ZERO)
                .build()
        ),
        "signal_expire"
    );
    assert_eq!(
        field(RedisMutex::builder(pool.clone(), "x").owner_id("").build()),
        "owner_id"
    );
    assert_eq!(
        field(
            RedisMutex::builder(pool.clone(), "x")
                .auto_renewal(true)
                .build()
        ),
        "auto_renewal"
    );
    // `new` refuses an empty name too, at construction.
    assert_eq!(field(RedisMutex::new(pool, "")), "name");
    // Duration::MAX as a timeout means "forever", not an overflow.
    let free = RedisMutex::new(server.pool(), "free").unwrap();
    drop(free.try_lock_for(Duration::MAX).unwrap());
}

#[test]
fn a_key_of_another_type_is_an_error_not_a_hang() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let _: () = conn.hset("lock:taken-by-a-hash", "f", "v").unwrap();
    let mutex = RedisMutex::new(server.pool(), "taken-by-a-hash").unwrap();
    let err = mutex.lock().unwrap_err();
    assert!(matches!(err, Error::WrongType { .. }), "{err}");
    assert!(
        err.to_string().contains("another type than a lock"),
        "{err}"
    );
    assert!(matches!(mutex.reset(), Err(Error::WrongType { .. })));
    let err = mutex.get_owner_id().unwrap_err();
    assert!(
        matches!(err, Error::WrongType { .. }),
        "get_owner_id: {err:?}"
    );
    let err = mutex.is_locked().unwrap_err();
    assert!(matches!(err, Error::WrongType { .. }), "is_locked: {err:?}");
    match mutex.try_lock() {
        Err(TryLockError::Error(Error::WrongType { .. })) => {}
        other => panic!("try_lock: {other:?}"),
    }
    let kind: String = redis::cmd("TYPE")
        .arg("lock:taken-by-a-hash")
        .query(&mut conn)
        .unwrap();
    assert_eq!(kind, "hash", "the key was left alone");
}

#[test]
fn scripts_survive_script_flush() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let mutex = RedisMutex::builder(server.pool(), "flush")
        .expire(Duration::from_secs(5))
        .build()
        .unwrap();
    let guard = mutex.lock().unwrap();
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut conn).unwrap();
    guard.extend(Duration::from_secs(6)).unwrap();
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut conn).unwrap();
    guard.unlock().unwrap();
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut conn).unwrap();
    drop(mutex.lock().unwrap());
}

#[test]
fn a_short_read_timeout_set_by_the_user_does_not_break_a_long_wait() {
    #[derive(Debug)]
    struct ShortTimeouts;
    impl r2d2::CustomizeConnection<redis::Connection, redis::RedisError> for ShortTimeouts {
        fn on_acquire(&self, conn: &mut redis::Connection) -> Result<(), redis::RedisError> {
            conn.set_read_timeout(Some(Duration::from_millis(50)))
        }
    }
    let server = RedisServer::start();
    // Foreign r2d2 pools whose connections come with a 50 ms read timeout (two of them:
    // the holder stands for another process).
    let theirs = || {
        let pool = r2d2::Pool::builder()
            .test_on_check_out(false)
            .connection_customizer(Box::new(ShortTimeouts))
            .build(redis::Client::open(server.url()).unwrap())
            .unwrap();
        Pool::try_from(pool).unwrap()
    };
    let holder = RedisMutex::builder(theirs(), "long")
        .expire(Duration::from_millis(700))
        .build()
        .unwrap();
    let waiter = RedisMutex::new(theirs(), "long").unwrap();
    let _held = holder.lock().unwrap();
    // The wait (until the holder's 700 ms lease ends) is far longer than 50 ms.
    drop(waiter.try_lock_for(Duration::from_secs(5)).unwrap());
}

#[test]
fn an_unreachable_redis_is_an_error_not_a_hang() {
    // A port that was free a moment ago: nothing listens there.
    let server = format!("127.0.0.1:{}", crate::support::free_port());
    let url = format!("redis://{server}/");
    let started = Instant::now();
    // Building a pool connects once, and says which server it could not reach: at once
    // when the connection is refused.
    let err = Pool::new(&url).unwrap_err();
    assert!(err.is_unreachable(), "{err:?}");
    assert!(err.to_string().contains(&server), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let err = Pool::builder()
        .connect_timeout(Duration::from_millis(500))
        .build(&url)
        .unwrap_err();
    assert!(err.is_unreachable(), "{err:?}");
    assert!(err.to_string().contains(&server), "{err}");
    // A lazy pool is built, and every call fails the same way.
    let pool = Pool::builder()
        .connection_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500))
        .connect_lazy(true)
        .build(&url)
        .unwrap();
    let mutex = RedisMutex::new(pool.clone(), "nowhere").unwrap();
    let unreachable = |what: &str, e: Error| {
        assert!(
            matches!(&e, Error::Unreachable { server: s, .. } if *s == server),
            "{what}: {e:?}"
        );
    };
    unreachable("lock", mutex.lock().unwrap_err());
    match mutex.try_lock() {
        Err(TryLockError::Error(e)) => unreachable("try_lock", e),
        other => panic!("try_lock: expected an error, got {other:?}"),
    }
    unreachable("is_locked", mutex.is_locked().unwrap_err());
    unreachable("reset_all", reset_all(&pool).unwrap_err());
    assert!(started.elapsed() < HANG);
}

#[test]
fn a_server_that_accepts_but_never_answers_fails_pool_new_within_its_bounds() {
    // A listener nobody accepts on: the kernel completes the handshake, and nothing
    // ever answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = silent.local_addr().unwrap().to_string();
    let started = Instant::now();
    let err = Pool::builder()
        .connect_timeout(Duration::from_millis(300))
        .response_timeout(Duration::from_millis(300))
        .build(&format!("redis://{server}/"))
        .unwrap_err();
    let took = started.elapsed();
    assert!(err.is_timeout() || err.is_unreachable(), "{err:?}");
    assert!(err.to_string().contains(&server), "{err}");
    // One connect and one PING, each bounded by 300 ms, plus slack for a busy machine.
    assert!(took < Duration::from_secs(3), "took {took:?}: {err}");
    drop(silent);
}

#[test]
fn a_timed_wait_on_a_pool_without_a_spare_connection_ends_cleanly() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    // A pool of two connections that keeps none idle: a waiter blocks in a BLPOP on its one
    // connection and, with no other to unblock it from, waits for the server's late reply
    // to the timed-out BLPOP with a PING queued behind it. (A pool of one is refused: a
    // waiter blocks on one connection while a holder releases on another.)
    for (max_size, min_idle) in [(2, 0)] {
        let name = format!("tiny-pool-{max_size}");
        let key = format!("lock:{name}");
        let single = server.pool_with(Pool::builder().max_size(max_size).min_idle(min_idle));
        let waiter = RedisMutex::new(single, name.as_str()).unwrap();
        // Held elsewhere, without expiry (as a python-redis-lock client would hold it).
        let _: () = conn.set(&key, "someone-else").unwrap();
        assert!(waiter.is_locked().unwrap(), "{name}"); // the pool's connection is open now
        let connections = connections_received(&mut conn);
        let blpops = command_calls(&mut conn, "blpop");
        let pings = command_calls(&mut conn, "ping");
        let unblocks = command_calls(&mut conn, "client|unblock");
        for _ in 0..5 {
            let started = Instant::now();
            assert!(
                waiter
                    .try_lock_for(Duration::from_millis(30))
                    .unwrap_err()
                    .is_would_block(),
                "{name}"
            );
            assert!(started.elapsed() < HANG);
        }
        let blpops = command_calls(&mut conn, "blpop") - blpops;
        let pings = command_calls(&mut conn, "ping") - pings;
        let unblocks = command_calls(&mut conn, "client|unblock") - unblocks;
        assert!(blpops > 0, "{name}: the waiter never blocked in a BLPOP");
        assert!(
            pings > 0,
            "{name}: no timed-out BLPOP was waited out behind a PING"
        );
        assert_eq!(unblocks, 0, "{name}: a CLIENT UNBLOCK came from nowhere");
        let _: () = conn.del(&key).unwrap();
        // The one connection is in step: late replies were skipped, not taken as answers.
        let mine = waiter.try_lock().unwrap();
        assert_eq!(
            waiter.get_owner_id().unwrap().as_deref(),
            Some(waiter.owner_id()),
            "{name}"
        );
        mine.unlock().unwrap();
        assert_eq!(
            connections_received(&mut conn),
            connections,
            "{name}: the pool replaced its connection"
        );
    }
}

#[test]
fn relocking_right_after_a_release_lets_the_woken_waiter_go_first() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    // Two pools: two processes.
    let looper = Arc::new(RedisMutex::new(server.pool(), "turn").unwrap());
    let waiter = Arc::new(RedisMutex::new(server.pool(), "turn").unwrap());
    for round in 0..20 {
        let guard = looper.lock().unwrap();
        let waiting = lock_in_thread(waiter.clone());
        assert!(
            eventually(HANG, || blocked_clients(&mut conn) == 1),
            "round {round}"
        );
        // Release and lock again at once: the waiter woken by the release must win.
        guard.unlock().unwrap();
        let relock = {
            let looper = looper.clone();
            let url = server.url();
            crate::support::spawn("relock", move || {
                let _guard = looper.lock().unwrap();
                let mut conn = crate::support::connect(&url);
                let owner: String = conn.get("lock:turn").unwrap();
                assert_eq!(owner, looper.owner_id());
                // The re-lock took the waiter's release signal with it.
                conn.exists::<_, bool>("lock-signal:turn").unwrap()
            })
        };
        let holding = waiting.until_acquired("the woken waiter");
        let owner: String = conn.get("lock:turn").unwrap();
        assert_eq!(
            owner,
            waiter.owner_id(),
            "round {round}: the waiter holds it"
        );
        holding.release();
        let signal_left_at_relock = relock.join(HANG);
        assert!(!signal_left_at_relock, "round {round}");
    }
}

#[test]
fn relocking_with_nobody_waiting_takes_the_lock_and_its_own_signal() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let mutex = RedisMutex::new(server.pool(), "alone").unwrap();
    for _ in 0..10 {
        let started = Instant::now();
        mutex.lock().unwrap().unlock().unwrap();
        let relocked = mutex.lock().unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "no wait on a free lock"
        );
        let signal: bool = conn.exists("lock-signal:alone").unwrap();
        assert!(!signal, "the re-lock consumed its own release's signal");
        relocked.unlock().unwrap();
    }
}

/// Found by the nemesis (a double grant in fair mode, seed 10565085626457406216): an
/// operator's reset sent again after a timeout while the server was paused ran twice once
/// the server resumed, and its second copy deleted the grant a waiter had just been given.
/// A reset names the grant it ends (owner id and token), so that a copy of it that comes
/// late leaves a grant made since alone, whoever's it is.
#[test]
fn a_late_copy_of_a_reset_leaves_a_grant_made_since() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let a = RedisMutex::builder(server.pool(), "late-reset")
        .owner_id("a")
        .build()
        .unwrap();
    let first = a.lock().unwrap();
    let token = first.fencing_token();
    // The reset an operator sends for that grant, as `reset()` sends it.
    let reset = crate::support::script("mutex/reset.lua");
    let send = |conn: &mut redis::Connection| -> Vec<i64> {
        reset
            .key("lock:late-reset")
            .key("lock-signal:late-reset")
            .key("lock-grant:late-reset")
            .key("lock-released:late-reset")
            .arg(1000)
            .arg(3000)
            .arg("a")
            .arg(token)
            .invoke(conn)
            .unwrap()
    };
    assert_eq!(
        send(&mut conn),
        vec![1],
        "the reset ends the grant it names"
    );
    std::mem::forget(first);
    // A grant made since, to the same owner id, then to another: the late copy leaves both.
    let again = a.try_lock().unwrap();
    assert_eq!(
        send(&mut conn),
        vec![0],
        "a later grant to the same owner id"
    );
    assert!(again.is_held().unwrap());
    again.unlock().unwrap();
    let b = RedisMutex::builder(server.pool(), "late-reset")
        .owner_id("b")
        .build()
        .unwrap();
    let theirs = b.try_lock().unwrap();
    assert_eq!(send(&mut conn), vec![0], "a later grant to another owner");
    assert!(theirs.is_held().unwrap());
    // `reset()` itself still ends whatever grant holds the lock now.
    assert!(a.reset().unwrap());
    assert!(!theirs.is_held().unwrap());
    assert!(!a.reset().unwrap(), "nothing left to reset");
}
