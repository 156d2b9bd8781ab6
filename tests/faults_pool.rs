//! An exhausted pool: one connection shared by threads that hold, wait and lock. Every call
//! gives a clear error or waits no longer than the pool's timeout, and nothing deadlocks.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis_mutex::{Error, Pool, RedisMutex, TryLockError};
use support::{HANG, RedisServer, blocked_clients, command_calls, eventually, spawn};

/// Scheduling slack on a loaded 2-core CI machine.
const ROUND_TRIPS: Duration = Duration::from_millis(250);

/// A pool of one connection, opened on demand, whose checkouts wait `connection_timeout`.
fn one_connection(connection_timeout: Duration) -> redis_mutex::PoolBuilder {
    Pool::builder()
        .max_size(1)
        .min_idle(0)
        .connection_timeout(connection_timeout)
}

/// Scenario 4: one connection in the pool, a guard held, and a waiter for it.
#[test]
fn a_waiter_on_a_one_connection_pool_does_not_keep_the_holder_from_releasing() {
    let server = RedisServer::start();
    let connection_timeout = Duration::from_secs(1);
    let pool = server.pool_with(one_connection(connection_timeout));
    let mut conn = server.connection();
    // No expiry (the default): only the holder's release frees the lock.
    let holder = RedisMutex::new(pool.clone(), "one-connection").unwrap();
    let guard = holder.lock().unwrap();

    let waiter = RedisMutex::new(pool.clone(), "one-connection").unwrap();
    let attempts = command_calls(&mut conn, "evalsha");
    let waiting = spawn("waiter", move || {
        let guard = waiter.try_lock_for(Duration::from_secs(8))?;
        guard.unlock().map_err(TryLockError::Error)
    });
    // Two attempts: the waiter is in its wait loop. With the pool's only connection, it
    // must not sleep in BLPOP on it, or the holder could never release.
    assert!(
        eventually(HANG, || command_calls(&mut conn, "evalsha") >= attempts + 2),
        "the waiter never tried"
    );
    assert_eq!(
        blocked_clients(&mut conn),
        0,
        "no BLPOP pins the only connection"
    );

    let started = Instant::now();
    let unlocked = guard.unlock();
    let took = started.elapsed();
    assert!(
        took <= connection_timeout + ROUND_TRIPS,
        "the release took {took:?}, more than the pool's {connection_timeout:?} timeout"
    );
    assert!(
        unlocked.is_ok(),
        "the holder could not release while the waiter kept the only connection: {unlocked:?}"
    );
    waiting
        .join(HANG)
        .expect("the waiter gets the lock once the holder released it");
}

/// Scenario 4: a pool of one connection shared by threads that lock, wait and hold.
#[test]
fn an_exhausted_pool_gives_a_clear_error_or_a_bounded_wait() {
    const THREADS: usize = 4;
    const CYCLES: usize = 3;
    let server = RedisServer::start();
    let mut conn = server.connection();
    let connection_timeout = Duration::from_millis(500);
    let response_timeout = Duration::from_millis(500);
    let pool = server.pool_with(one_connection(connection_timeout));
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
    let waiter = build("held");
    let attempts = command_calls(&mut conn, "evalsha");
    // And one waits for the held lock, on the pool's only connection, for a while.
    let waiting = spawn("waiter", move || {
        let started = Instant::now();
        let outcome = waiter.try_lock_for(Duration::from_millis(1500)).map(drop);
        (outcome, started.elapsed())
    });
    assert!(
        eventually(HANG, || command_calls(&mut conn, "evalsha") >= attempts + 2),
        "the waiter never tried"
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
        "no cycle got through a one-connection pool: {outcomes:?}"
    );
    println!("{ok} of {} cycles got through", outcomes.len());
    guard.unlock().unwrap();
}

/// A waiter that gives its connection back while the pool is exhausted checks one out again
/// within its own deadline, not the pool's (long) connection timeout.
#[test]
fn a_timed_wait_on_an_exhausted_pool_keeps_its_deadline() {
    let server = RedisServer::start();
    let holder = RedisMutex::new(server.pool(), "busy-pool").unwrap();
    let _held = holder.lock().unwrap();
    let pool = server.pool_with(one_connection(Duration::from_secs(10)));
    let waiter = RedisMutex::builder(pool.clone(), "busy-pool")
        .response_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    // Takes the pool's only connection as soon as it is free and keeps it for 2 s: after its
    // grant it waits for a replica that this server does not have.
    let grabber = RedisMutex::builder(pool, "grabber")
        .wait_replicas(1, Duration::from_secs(2))
        .build()
        .unwrap();
    let mut conn = server.connection();
    let attempts = command_calls(&mut conn, "evalsha");
    let waiting = spawn("waiter", move || {
        let started = Instant::now();
        let outcome = waiter.try_lock_for(Duration::from_millis(300)).map(drop);
        (outcome, started.elapsed())
    });
    // Once the waiter is in its wait loop, someone else takes the pool's only connection
    // while the waiter naps without it, and keeps it until the waiter is done.
    assert!(eventually(HANG, || {
        command_calls(&mut conn, "evalsha") > attempts
    }));
    let grabbing = spawn("grabber", move || grabber.lock().map(drop));
    let (outcome, took) = waiting.join(HANG);
    let grabbed = grabbing.join(HANG);
    assert!(
        matches!(
            grabbed,
            Err(Error::NotReplicated {
                acked: 0,
                wanted: 1
            })
        ),
        "the grabber held the connection through a WAIT: {grabbed:?}"
    );
    assert!(outcome.is_err(), "the lock is held throughout");
    assert!(
        took < Duration::from_secs(1),
        "a 300 ms wait took {took:?}: {outcome:?}"
    );
}
