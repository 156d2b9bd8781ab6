//! RedisMutex behaviour against real redis-server processes.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use redis::Commands;
use redis_mutex::{Error, Pool, RedisMutex, TryLockError, reset_all};
use support::{
    Lines, RedisServer, blocked_clients, child_env, eventually, finish_child, spawn_child,
};

/// Generous bound on anything that should take milliseconds: only a hang exceeds it.
const HANG: Duration = Duration::from_secs(20);

/// One cycle of a non-atomic read-increment-write: lost updates show if two overlap.
fn increment(conn: &mut redis::Connection, key: &str) {
    let value: i64 = conn.get::<_, Option<i64>>(key).unwrap().unwrap_or(0);
    let _: () = conn.set(key, value + 1).unwrap();
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
    let a = RedisMutex::new(server.pool(), "plain");
    let b = RedisMutex::new(server.pool(), "plain");
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
    let holder = RedisMutex::new(pool.clone(), "busy");
    let other = Arc::new(RedisMutex::new(pool, "busy"));

    let guard = holder.lock().unwrap();
    assert!(matches!(other.try_lock(), Err(TryLockError::WouldBlock)));
    drop(guard);
    let mine = other.try_lock().unwrap();

    // Another thread sharing the same mutex is turned away locally.
    let shared = other.clone();
    let result = thread::spawn(move || shared.try_lock().map(|_| ()).unwrap_err().is_would_block())
        .join()
        .unwrap();
    assert!(result);
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
        elapsed < timeout + Duration::from_millis(250),
        "a {timeout:?} timeout returned after {elapsed:?}"
    );
    elapsed - timeout
}

#[test]
fn try_lock_for_keeps_its_deadline_to_the_millisecond() {
    let server = RedisServer::start();
    let pool = server.pool();
    let holder = RedisMutex::new(pool.clone(), "slow");
    let waiter = RedisMutex::new(pool, "slow");
    let _guard = holder.lock().unwrap();
    // On an idle server, Redis answers a timed-out BLPOP on its timer tick (every 100 ms by
    // default), 50 ms late on average; the deadline is kept on our clock instead.
    let mut lateness: Vec<Duration> = [300u64, 50, 50, 50, 50, 50, 50, 50, 1, 1, 1]
        .into_iter()
        .map(|ms| lateness_of_a_timed_out_wait(&waiter, Duration::from_millis(ms)))
        .collect();
    lateness.sort();
    let median = lateness[lateness.len() / 2];
    // A few round trips and the 5 ms grace; far from the timer tick.
    assert!(
        median < Duration::from_millis(30),
        "median lateness {median:?}: {lateness:?}"
    );
}

#[test]
fn try_lock_for_is_not_restarted_by_spurious_wake_ups() {
    let server = RedisServer::start();
    let pool = server.pool();
    let holder = RedisMutex::new(pool.clone(), "woken");
    let waiter = RedisMutex::new(pool, "woken");
    let _guard = holder.lock().unwrap();
    // Someone keeps pushing signals without releasing.
    let stop = Arc::new(AtomicBool::new(false));
    let pusher = {
        let stop = stop.clone();
        let mut conn = server.connection();
        thread::spawn(move || {
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
    pusher.join().unwrap();
}

#[test]
fn a_release_wakes_a_waiter_who_gets_the_lock() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = server.pool();
    let holder = RedisMutex::new(pool.clone(), "handoff");
    let waiter = Arc::new(RedisMutex::new(pool, "handoff"));
    let guard = holder.lock().unwrap();
    let (acquired, handle) = lock_in_thread(waiter.clone());
    assert!(
        eventually(HANG, || blocked_clients(&mut conn) == 1),
        "the waiter never blocked"
    );
    guard.unlock().unwrap();
    acquired
        .recv_timeout(HANG)
        .expect("the waiter got the lock");
    // The waiter took the signal: it was woken by the release, not by a timeout.
    let signal: bool = conn.exists("lock-signal:handoff").unwrap();
    assert!(!signal, "the release's signal was consumed by the waiter");
    let owner: String = conn.get("lock:handoff").unwrap();
    assert_eq!(owner, waiter.owner_id());
    drop(handle);
}

/// Locks `mutex` on a new thread, says so on the returned channel, and holds the guard
/// until the returned sender is dropped.
fn lock_in_thread(
    mutex: Arc<RedisMutex>,
) -> (std::sync::mpsc::Receiver<()>, std::sync::mpsc::Sender<()>) {
    let (acquired_tx, acquired_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    thread::spawn(move || {
        let _guard = mutex.lock().unwrap();
        acquired_tx.send(()).unwrap();
        // Until the test drops its sender (bounded all the same).
        release_rx.recv_timeout(HANG).ok();
    });
    (acquired_rx, release_tx)
}

#[test]
fn threads_sharing_a_mutex_exclude_each_other_and_wait_on_one_connection() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = server.pool();
    let outsider = RedisMutex::new(pool.clone(), "shared");
    let mutex = Arc::new(RedisMutex::new(pool.clone(), "shared"));

    // Eight local waiters behind a lock held elsewhere use one connection, not eight.
    let guard = outsider.lock().unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let mutex = mutex.clone();
            let done = done.clone();
            let mut counter = server.connection();
            thread::spawn(move || {
                for _ in 0..50 {
                    let _g = mutex.lock().unwrap();
                    increment(&mut counter, "shared-counter");
                }
                done.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    assert!(eventually(HANG, || blocked_clients(&mut conn) == 1));
    let state = pool.state();
    assert_eq!(
        state.connections - state.idle_connections,
        1,
        "waiting threads hold one pooled connection"
    );
    assert_eq!(blocked_clients(&mut conn), 1);
    drop(guard);
    for t in threads {
        t.join().unwrap();
    }
    let total: i64 = conn.get("shared-counter").unwrap();
    assert_eq!(total, 8 * 50);
}

/// Child side of [`processes_exclude_each_other_and_the_count_is_exact`].
#[test]
#[ignore = "run as a child process by processes_exclude_each_other_and_the_count_is_exact"]
fn child_increments_under_the_lock() {
    let url = child_env("REDIS_URL");
    let cycles: usize = child_env("CYCLES").parse().unwrap();
    let client = redis::Client::open(url.as_str()).unwrap();
    let pool = support::server::pool_at(&url);
    let mutex = Arc::new(
        RedisMutex::builder(pool, "counter")
            .expire(Duration::from_secs(10))
            .build()
            .unwrap(),
    );
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let mutex = mutex.clone();
            let mut conn = client.get_connection().unwrap();
            thread::spawn(move || {
                for _ in 0..cycles {
                    let guard = mutex.lock().unwrap();
                    increment(&mut conn, "counter");
                    guard.unlock().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
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
                "child_increments_under_the_lock",
                &[
                    ("REDIS_URL", server.url()),
                    ("CYCLES", CYCLES_PER_THREAD.to_string()),
                ],
            )
        })
        .collect();
    for child in children {
        finish_child(child, Duration::from_secs(120));
    }
    let total: i64 = server.connection().get("counter").unwrap();
    assert_eq!(total, (PROCESSES * 2 * CYCLES_PER_THREAD) as i64);
}

/// Child side of [`a_killed_holders_lock_is_taken_soon_after_it_expires`].
#[test]
#[ignore = "run as a child process by a_killed_holders_lock_is_taken_soon_after_it_expires"]
fn child_holds_the_lock_until_killed() {
    let pool = support::server::pool_at(&child_env("REDIS_URL"));
    let mutex = RedisMutex::builder(pool, "crash")
        .expire(Duration::from_secs(1))
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
    let mut child = spawn_child(
        "child_holds_the_lock_until_killed",
        &[("REDIS_URL", server.url())],
    );
    let lines = Lines::new(child.stdout.take().unwrap());
    lines.expect("locked", HANG);
    // The child's SET happened before it printed, so its lease ends by now + 1 s.
    let locked_by = Instant::now();
    child.kill().unwrap(); // SIGKILL: no release
    child.wait().unwrap();
    let waiter = RedisMutex::new(server.pool(), "crash");
    let _guard = waiter.lock().unwrap();
    let waited = locked_by.elapsed();
    assert!(
        waited <= Duration::from_millis(1250),
        "got the lock {waited:?} after the holder locked with a 1 s expiry"
    );
}

#[test]
fn release_by_a_non_owner_deletes_nothing() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = server.pool();
    let first = RedisMutex::builder(pool.clone(), "lease")
        .expire(Duration::from_millis(100))
        .build()
        .unwrap();
    let second = RedisMutex::builder(pool, "lease")
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
    let holder = RedisMutex::new(pool.clone(), "stuck");
    let waiter = Arc::new(RedisMutex::new(pool.clone(), "stuck"));
    let guard = holder.lock().unwrap();
    let (acquired, handle) = lock_in_thread(waiter.clone());
    assert!(eventually(HANG, || blocked_clients(&mut conn) == 1));
    assert!(RedisMutex::new(pool.clone(), "stuck").reset().unwrap());
    acquired
        .recv_timeout(HANG)
        .expect("the waiter got the lock");
    let signal: bool = conn.exists("lock-signal:stuck").unwrap();
    assert!(!signal, "the waiter was woken by reset's signal");
    drop(handle);
    assert!(matches!(guard.unlock(), Err(Error::NotAcquired { .. })));

    // reset_all: locks go, everything else stays.
    let a = RedisMutex::new(pool.clone(), "a");
    let b = RedisMutex::new(pool.clone(), "b with spaces");
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
        let mutex = RedisMutex::new(pool.clone(), name);
        let other = RedisMutex::new(pool.clone(), name);
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
    // `new` cannot fail, so an empty name fails every call instead.
    let unnamed = RedisMutex::new(pool, "");
    assert!(matches!(
        unnamed.lock(),
        Err(Error::InvalidOptions { field: "name", .. })
    ));
    assert!(matches!(
        unnamed.try_lock_for(Duration::MAX),
        Err(TryLockError::Error(Error::InvalidOptions {
            field: "name",
            ..
        }))
    ));
    // Duration::MAX as a timeout means "forever", not an overflow.
    let free = RedisMutex::new(server.pool(), "free");
    drop(free.try_lock_for(Duration::MAX).unwrap());
}

#[test]
fn a_key_of_another_type_is_an_error_not_a_hang() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let _: () = conn.hset("lock:taken-by-a-hash", "f", "v").unwrap();
    let mutex = RedisMutex::new(server.pool(), "taken-by-a-hash");
    let err = mutex.lock().unwrap_err();
    assert!(matches!(err, Error::WrongType { .. }), "{err}");
    assert!(err.to_string().contains("not a lock"), "{err}");
    assert!(matches!(mutex.reset(), Err(Error::WrongType { .. })));
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
    let pool = server.pool_with(
        r2d2::Pool::builder()
            .test_on_check_out(false)
            .connection_customizer(Box::new(ShortTimeouts)),
    );
    let holder = RedisMutex::builder(pool.clone(), "long")
        .expire(Duration::from_millis(700))
        .build()
        .unwrap();
    let waiter = RedisMutex::new(pool, "long");
    let _held = holder.lock().unwrap();
    // The wait (until the holder's 700 ms lease ends) is far longer than 50 ms.
    drop(waiter.try_lock_for(Duration::from_secs(5)).unwrap());
}

#[test]
fn an_unreachable_redis_is_an_error_not_a_hang() {
    // A port that was free a moment ago: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let pool = Pool::builder()
        .connection_timeout(Duration::from_millis(500))
        .build_unchecked(client);
    let mutex = RedisMutex::new(pool.clone(), "nowhere");
    let started = Instant::now();
    assert!(matches!(mutex.lock(), Err(Error::Pool(_))));
    assert!(matches!(
        mutex.try_lock(),
        Err(TryLockError::Error(Error::Pool(_)))
    ));
    assert!(mutex.is_locked().is_err());
    assert!(reset_all(&pool).is_err());
    assert!(started.elapsed() < HANG);
}

#[test]
fn a_timed_wait_on_a_pool_of_one_connection_ends_cleanly() {
    let server = RedisServer::start();
    let holder = RedisMutex::new(server.pool(), "tiny-pool");
    let single = server.pool_with(r2d2::Pool::builder().test_on_check_out(false).max_size(1));
    let waiter = RedisMutex::new(single.clone(), "tiny-pool");
    let guard = holder.lock().unwrap();
    for _ in 0..5 {
        // No spare connection to unblock with: the wait ends on the server's clock instead.
        let started = Instant::now();
        assert!(
            waiter
                .try_lock_for(Duration::from_millis(30))
                .unwrap_err()
                .is_would_block()
        );
        assert!(started.elapsed() < HANG);
    }
    drop(guard);
    // The single connection is in step: its late replies were skipped, not taken as answers.
    let mine = waiter.try_lock().unwrap();
    assert_eq!(
        waiter.get_owner_id().unwrap().as_deref(),
        Some(waiter.owner_id())
    );
    mine.unlock().unwrap();
    assert_eq!(single.state().connections, 1);
}

#[test]
fn relocking_right_after_a_release_lets_the_woken_waiter_go_first() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = server.pool();
    let looper = RedisMutex::new(pool.clone(), "turn");
    let waiter = Arc::new(RedisMutex::new(pool, "turn"));
    for round in 0..20 {
        let guard = looper.lock().unwrap();
        let (acquired, release_waiter) = lock_in_thread(waiter.clone());
        assert!(
            eventually(HANG, || blocked_clients(&mut conn) == 1),
            "round {round}"
        );
        // Release and lock again at once: the waiter woken by the release must win.
        guard.unlock().unwrap();
        let signal_left_at_relock = thread::scope(|s| {
            let relock = s.spawn(|| {
                let _guard = looper.lock().unwrap();
                let mut conn = server.connection();
                let owner: String = conn.get("lock:turn").unwrap();
                assert_eq!(owner, looper.owner_id());
                // The re-lock took the waiter's release signal with it.
                conn.exists::<_, bool>("lock-signal:turn").unwrap()
            });
            acquired
                .recv_timeout(HANG)
                .expect("the woken waiter got the lock");
            let owner: String = conn.get("lock:turn").unwrap();
            assert_eq!(
                owner,
                waiter.owner_id(),
                "round {round}: the waiter holds it"
            );
            drop(release_waiter);
            relock.join().unwrap()
        });
        assert!(!signal_left_at_relock, "round {round}");
    }
}

#[test]
fn relocking_with_nobody_waiting_takes_the_lock_and_its_own_signal() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let mutex = RedisMutex::new(server.pool(), "alone");
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
