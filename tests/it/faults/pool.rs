//! An exhausted pool: the smallest pool (two connections) shared by threads that hold, wait
//! and lock. A waiter in Redis never takes the connection a holder releases on; waiters
//! beyond the pool's turns wait in the process, calling nothing; every call gives a clear
//! error or waits no longer than its bound, and nothing deadlocks.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::{HANG, RedisServer, blocked_clients, command_calls, eventually, spawn};
use redis::Commands;
use redis_mutex::{Error, Pool, RedisMutex, TryLockError};

/// Scheduling slack on a loaded 2-core CI machine.
const ROUND_TRIPS: Duration = Duration::from_millis(250);

/// The smallest pool, opened on demand, whose checkouts wait `connection_timeout`.
fn two_connections(connection_timeout: Duration) -> redis_mutex::PoolBuilder {
    Pool::builder()
        .max_size(2)
        .min_idle(0)
        .connection_timeout(connection_timeout)
}

/// Holds `name` the way another process (a python-redis-lock client, say) would: no expiry.
fn hold_elsewhere(conn: &mut redis::Connection, name: &str) {
    let _: () = conn.set(format!("lock:{name}"), "elsewhere").unwrap();
}

/// Releases `name` as python-redis-lock does: delete the lock, push one wake-up.
fn release_elsewhere(conn: &mut redis::Connection, name: &str) {
    let _: () = redis::pipe()
        .del(format!("lock:{name}"))
        .lpush(format!("lock-signal:{name}"), 1)
        .query(conn)
        .unwrap();
}

/// Scenario 4: a pool of two connections, a guard held in this process, and a waiter in
/// Redis for a lock held elsewhere: the waiter's `BLPOP` takes one connection, never the
/// other, so the holder releases at once.
#[test]
fn a_waiter_in_redis_does_not_keep_the_holder_from_releasing() {
    let server = RedisServer::start();
    let connection_timeout = Duration::from_secs(1);
    let pool = server.pool_with(two_connections(connection_timeout));
    let mut conn = server.connection();
    // No expiry (the default): only the holder's release frees the lock.
    let holder = RedisMutex::new(pool.clone(), "ours").unwrap();
    let guard = holder.lock().unwrap();
    hold_elsewhere(&mut conn, "theirs");
    let waiter = RedisMutex::new(pool.clone(), "theirs").unwrap();
    let waiting = spawn("waiter", move || {
        let guard = waiter.try_lock_for(Duration::from_secs(8))?;
        guard.unlock().map_err(TryLockError::Error)
    });
    assert!(
        eventually(HANG, || blocked_clients(&mut conn) == 1),
        "the waiter never blocked in Redis"
    );
    // A second waiter, for a third name: the pool has no turn left to wait in Redis, so
    // it waits in the process, without a connection.
    hold_elsewhere(&mut conn, "third");
    let third = RedisMutex::new(pool.clone(), "third").unwrap();
    let queued = spawn("queued waiter", move || {
        third.try_lock_for(Duration::from_secs(8)).map(drop)
    });

    let started = Instant::now();
    let unlocked = guard.unlock();
    let took = started.elapsed();
    assert!(
        unlocked.is_ok(),
        "the holder could not release while waiters wait: {unlocked:?}"
    );
    assert!(
        took <= ROUND_TRIPS,
        "the release took {took:?}: it waited for a connection"
    );
    release_elsewhere(&mut conn, "theirs");
    waiting
        .join(HANG)
        .expect("the waiter gets the lock once it is released");
    release_elsewhere(&mut conn, "third");
    queued
        .join(HANG)
        .expect("the queued waiter gets its turn, then the lock");
}

/// Scenario 4: a pool of two connections shared by threads that lock, wait and hold.
#[test]
fn an_exhausted_pool_gives_a_clear_error_or_a_bounded_wait() {
    const THREADS: usize = 4;
    const CYCLES: usize = 3;
    let server = RedisServer::start();
    let mut conn = server.connection();
    let connection_timeout = Duration::from_millis(500);
    let response_timeout = Duration::from_millis(500);
    let pool = server.pool_with(two_connections(connection_timeout));
    let build = |name: &str| {
        RedisMutex::builder(pool.clone(), name)
            .expire(Duration::from_secs(2))
            .response_timeout(response_timeout)
            .build()
            .unwrap()
    };
    // One thread holds a guard throughout; the others lock locks of their own.
    let held = build("held");
    let guard = held.lock().unwrap();
    let outcomes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let finished = Arc::new(AtomicUsize::new(0));
    // And one waits for a lock held elsewhere, on one of the pool's two connections, for a
    // while.
    hold_elsewhere(&mut conn, "theirs");
    let waiter = build("theirs");
    let waiting = spawn("waiter", move || {
        let started = Instant::now();
        let outcome = waiter.try_lock_for(Duration::from_millis(1500)).map(drop);
        (outcome, started.elapsed())
    });
    assert!(
        eventually(HANG, || blocked_clients(&mut conn) == 1),
        "the waiter never blocked"
    );
    let lockers: Vec<_> = (0..THREADS)
        .map(|i| {
            let mutex = build(&format!("own-{i}"));
            let (outcomes, finished) = (outcomes.clone(), finished.clone());
            spawn(&format!("locker-{i}"), move || {
                for _ in 0..CYCLES {
                    let started = Instant::now();
                    let outcome = match mutex.try_lock_for(Duration::from_millis(200)) {
                        Ok(guard) => guard.unlock().map_err(TryLockError::Error),
                        Err(e) => Err(e),
                    };
                    outcomes.lock().unwrap().push((outcome, started.elapsed()));
                }
                finished.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    let (waited, took) = waiting.join(HANG);
    for locker in lockers {
        locker.join(HANG);
    }
    assert!(
        took <= Duration::from_millis(1500) + response_timeout + ROUND_TRIPS,
        "the waiter took {took:?}: {waited:?}"
    );
    match waited {
        // The lock stayed held, or the pool ran dry: said as such.
        Err(TryLockError::WouldBlock | TryLockError::Error(Error::PoolTimeout { .. })) => {}
        Err(e) => panic!("the waiter: {e:?}"),
        Ok(()) => panic!("the waiter got a lock that was held throughout"),
    }
    assert_eq!(
        finished.load(Ordering::SeqCst),
        THREADS,
        "a thread is stuck"
    );
    let outcomes = outcomes.lock().unwrap();
    // A cycle checks out twice (lock and release), each wait bounded by the pool's timeout
    // (or the reply's), plus its own 200 ms deadline.
    let bound = Duration::from_millis(200) + 2 * (connection_timeout + response_timeout);
    let mut ok = 0;
    for (outcome, took) in outcomes.iter() {
        assert!(
            took <= &(bound + ROUND_TRIPS),
            "a cycle took {took:?}: {outcome:?}"
        );
        match outcome {
            Ok(()) => ok += 1,
            Err(TryLockError::Error(e @ Error::PoolTimeout { .. })) => {
                let message = e.to_string();
                assert!(
                    message.contains(&server.port().to_string()) && message.contains("max_size"),
                    "an error that does not say the pool ran dry, and what to do: {message}"
                );
            }
            Err(e) => panic!("an error that does not say the pool ran dry: {e:?}"),
        }
    }
    assert!(
        ok > 0,
        "no cycle got through a two-connection pool: {outcomes:?}"
    );
    println!("{ok} of {} cycles got through", outcomes.len());
    guard.unlock().unwrap();
}

/// Waiters beyond the pool's turns wait in the process for one, calling nothing; a timed
/// one keeps its deadline; the turns go round, so every name waited on is served.
#[test]
fn waiters_beyond_the_turns_wait_in_the_process_and_keep_their_deadlines() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = server.pool_with(two_connections(Duration::from_secs(10)));
    hold_elsewhere(&mut conn, "first");
    hold_elsewhere(&mut conn, "second");
    // The first takes the pool's one turn and waits in Redis, as long as it takes.
    let first = RedisMutex::new(pool.clone(), "first").unwrap();
    let first_waiting = spawn("first", move || first.lock().map(drop));
    assert!(eventually(HANG, || blocked_clients(&mut conn) == 1));

    // The second makes one attempt, finds no turn, and waits in the process until its
    // deadline: no script call of its own meanwhile.
    let second = Arc::new(
        RedisMutex::builder(pool.clone(), "second")
            .response_timeout(Duration::from_millis(100))
            .build()
            .unwrap(),
    );
    let calls = command_calls(&mut conn, "evalsha");
    let started = Instant::now();
    let outcome = second.try_lock_for(Duration::from_millis(300)).map(drop);
    let took = started.elapsed();
    let calls = command_calls(&mut conn, "evalsha") - calls;
    assert!(
        matches!(outcome, Err(TryLockError::WouldBlock)),
        "{outcome:?}"
    );
    assert!(
        took < Duration::from_millis(300) + ROUND_TRIPS,
        "a 300 ms wait took {took:?}"
    );
    // Its own attempt, and at most one attempt of the first waiter after a wait of 1 s.
    assert!(
        calls <= 2,
        "{calls} script calls in a 300 ms wait for a turn"
    );

    // Without a deadline it gets the turn when the first gives it up after its wait; then
    // the first waits in the process. Each is served when its lock is released.
    let waiting = {
        let second = second.clone();
        spawn("second", move || second.lock().map(drop))
    };
    release_elsewhere(&mut conn, "second");
    waiting.join(HANG).expect("the second waiter got its turn");
    release_elsewhere(&mut conn, "first");
    first_waiting
        .join(HANG)
        .expect("the first waiter got its turn back");
}
