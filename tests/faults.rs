//! Network and server faults: partitions, stalls, cuts, a killed and restarted server, late
//! replies. Clients reach Redis through `support::proxy::FaultProxy`.

mod support;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use redis::Commands;
use redis_mutex::{Error, RedisMutex};
use support::proxy::FaultProxy;
use support::{Call, RedisServer, drain, pool_to, run_call};

/// Generous bound on anything that should take milliseconds: only a hang exceeds it.
const HANG: Duration = Duration::from_secs(20);

/// How late after a lock's expiry a waiter may get it on a loaded 2-core CI machine: a
/// round trip or two, plus scheduling.
const ROUND_TRIPS: Duration = Duration::from_millis(250);

/// Scenario 1: the holder, with auto-renewal, is partitioned from Redis for longer than its
/// lease.
#[test]
fn a_partitioned_holder_loses_its_lease_and_touches_nothing_after_healing() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let mut conn = server.connection();
    let expire = Duration::from_millis(800);
    let (lost_tx, lost_rx) = mpsc::channel();
    let lost_tx = std::sync::Mutex::new(lost_tx);
    let holder_pool = proxy.pool();
    let holder = RedisMutex::builder(holder_pool.clone(), "partitioned")
        .owner_id("holder")
        .expire(expire)
        .auto_renewal(true)
        .on_lost(move |name| {
            lost_tx.lock().unwrap().send(name.to_owned()).ok();
        })
        .build()
        .unwrap();
    let next = RedisMutex::builder(server.pool(), "partitioned")
        .owner_id("next")
        .expire(Duration::from_secs(60))
        .build()
        .unwrap();

    let guard = holder.lock().unwrap();
    // Let a renewal or two go through first: the partition hits a lease kept alive.
    let renewed = support::eventually(HANG, || support::command_calls(&mut conn, "evalsha") >= 3);
    assert!(renewed, "the lease was renewed before the partition");
    assert!(!guard.is_lost());

    proxy.stall();
    // Nothing from the holder reaches Redis from here on, so the key dies at this PTTL.
    let pttl: i64 = conn.pttl("lock:partitioned").unwrap();
    assert!(pttl > 0, "the lock is alive at the partition (PTTL {pttl})");
    let expires_at = Instant::now() + Duration::from_millis(pttl as u64);

    let taken = next.try_lock_for(HANG).expect("the waiter gets the lock");
    let at = Instant::now();
    // The holder's own clock must have given up before anyone else got in.
    let holder_left = guard.valid_for();
    assert!(
        at + Duration::from_millis(2) >= expires_at,
        "the waiter got the lock {:?} before the partitioned holder's lease ran out",
        expires_at - at
    );
    assert!(
        at <= expires_at + ROUND_TRIPS,
        "the waiter got the lock {:?} after the lease ran out",
        at - expires_at
    );
    assert_eq!(
        holder_left,
        Some(Duration::ZERO),
        "the holder still counted on its lease when the waiter got the lock"
    );
    let name = lost_rx.recv_timeout(HANG).expect("on_lost is called");
    assert_eq!(name, "partitioned");
    assert!(guard.is_lost());
    assert!(matches!(guard.ensure_held(), Err(Error::LockLost { .. })));

    // Heal: the renewals held during the partition now reach Redis, late.
    let evalsha_before = support::command_calls(&mut conn, "evalsha");
    proxy.heal();
    let unlocked = guard.unlock();
    assert!(
        matches!(unlocked, Err(Error::LockLost { .. })),
        "the old holder's unlock: {unlocked:?}"
    );
    drain(&holder_pool);
    let delivered = support::command_calls(&mut conn, "evalsha") - evalsha_before;
    assert!(
        delivered >= 2,
        "a held renewal and the release reached Redis after healing ({delivered} calls)"
    );
    println!(
        "the waiter got the lock {:?} after the lease ran out; {delivered} held calls \
         reached Redis after healing",
        at.saturating_duration_since(expires_at)
    );
    let owner: String = conn.get("lock:partitioned").unwrap();
    assert_eq!(owner, "next", "the new holder keeps the lock");
    let pttl: i64 = conn.pttl("lock:partitioned").unwrap();
    assert!(
        pttl > 55_000,
        "the old holder's renewal shortened the new holder's lease to {pttl} ms"
    );
    let signal: bool = conn.exists("lock-signal:partitioned").unwrap();
    assert!(!signal, "the old holder's release woke nobody");
    taken.unlock().unwrap();
}

/// Scenario 2: `redis-server` is killed with SIGKILL and restarted while a guard is held
/// and others wait.
#[test]
fn a_killed_and_restarted_server_fails_calls_in_time_and_the_pool_recovers() {
    let mut server = RedisServer::start();
    let mut conn = server.connection();
    // A call's bound: its own deadline, plus one pool checkout or one reply, whichever
    // the call waits for.
    let connection_timeout = Duration::from_millis(1000);
    let response_timeout = Duration::from_millis(500);
    let pool = pool_to(&server.url(), 8, connection_timeout);
    let mutex = |owner: &str| {
        RedisMutex::builder(pool.clone(), "restarted")
            .owner_id(owner)
            .expire(Duration::from_secs(3))
            .response_timeout(response_timeout)
            .build()
            .unwrap()
    };
    let (lost_tx, lost_rx) = mpsc::channel();
    let lost_tx = std::sync::Mutex::new(lost_tx);
    let holder = RedisMutex::builder(pool.clone(), "restarted")
        .owner_id("holder")
        .expire(Duration::from_secs(3))
        .auto_renewal(true)
        .on_lost(move |_| {
            lost_tx.lock().unwrap().send(()).ok();
        })
        .build()
        .unwrap();
    let guard = holder.lock().unwrap();

    // Four waiters blocked in Redis: two without a deadline, two with one.
    let (tx, rx) = mpsc::channel();
    let deadline = Duration::from_secs(5);
    let mut threads = Vec::new();
    for i in 0..4 {
        let waiter = mutex(&format!("waiter-{i}"));
        let call = move || {
            if i % 2 == 0 {
                waiter.lock().map(drop).map_err(|e| e.to_string())
            } else {
                waiter
                    .try_lock_for(deadline)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        };
        threads.push(run_call(&tx, &format!("waiter-{i}"), call));
    }
    assert!(
        support::eventually(HANG, || support::blocked_clients(&mut conn) == 4),
        "the waiters never blocked"
    );

    server.kill();
    let killed_at = Instant::now();
    for _ in 0..4 {
        let (label, result, _) = rx.recv_timeout(HANG).expect("a waiter hung after the kill");
        let after = killed_at.elapsed();
        let err = result.expect_err(&format!("{label} got a lock from a dead server"));
        assert!(err.starts_with("redis error"), "{label}: {err}");
        // The dead socket is noticed at once: no waiting out the BLPOP or the deadline.
        assert!(
            after < Duration::from_secs(2),
            "{label} returned {after:?} after the kill"
        );
    }

    // While the server is down, every call fails within its bound.
    let short = Duration::from_millis(300);
    let checkout = connection_timeout.max(response_timeout);
    let down: [(&str, Duration, Call); 5] = [
        ("lock", checkout, {
            let m = mutex("down-1");
            Box::new(move || m.lock().map(drop).map_err(|e| e.to_string()))
        }),
        ("try_lock", response_timeout, {
            let m = mutex("down-2");
            Box::new(move || m.try_lock().map(drop).map_err(|e| e.to_string()))
        }),
        ("try_lock_for", short + response_timeout, {
            let m = mutex("down-3");
            Box::new(move || m.try_lock_for(short).map(drop).map_err(|e| e.to_string()))
        }),
        ("is_locked", checkout, {
            let m = mutex("down-4");
            Box::new(move || m.is_locked().map(drop).map_err(|e| e.to_string()))
        }),
        ("reset_all", checkout, {
            let pool = pool.clone();
            Box::new(move || {
                redis_mutex::reset_all(&pool)
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
        }),
    ];
    for (label, bound, call) in down {
        let handle = run_call(&tx, label, call);
        let (_, result, took) = rx
            .recv_timeout(HANG)
            .expect("a call hung while Redis was down");
        handle.join().unwrap();
        assert!(result.is_err(), "{label} succeeded against a dead server");
        assert!(
            took <= bound + ROUND_TRIPS,
            "{label} took {took:?} to fail, its bound is {bound:?}: {result:?}"
        );
    }

    server.restart();
    // The restarted server is empty: the holder's renewal finds the lock gone.
    lost_rx
        .recv_timeout(HANG)
        .expect("the holder learns that its lock went with the server");
    assert!(guard.is_lost());
    assert!(matches!(guard.unlock(), Err(Error::LockLost { .. })));

    // The same pool recovers: each connection that died with the server fails once at
    // most, then every call works.
    let next = mutex("after-restart");
    let mut failures = Vec::new();
    let recovered = (0..=8).any(|_| match next.try_lock_for(Duration::from_secs(2)) {
        Ok(guard) => guard.unlock().is_ok(),
        Err(e) => {
            failures.push(e.to_string());
            false
        }
    });
    assert!(recovered, "the pool never recovered: {failures:?}");
    for cycle in 0..20 {
        let guard = next.try_lock_for(Duration::from_secs(2));
        let guard = guard.unwrap_or_else(|e| panic!("cycle {cycle} after recovery: {e}"));
        guard.unlock().unwrap();
    }
    println!("calls that failed after the restart: {}", failures.len());
    for t in threads {
        t.join().unwrap();
    }
}

/// Scenario 3: waiters blocked in `BLPOP` have their connections cut.
#[test]
fn waiters_whose_connections_are_cut_return_in_time_and_leave_no_broken_connection() {
    const WAITERS: usize = 3;
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let mut conn = server.connection();
    let holder = RedisMutex::new(server.pool(), "cut");
    // Room for one more connection than the waiters use, so that none of them waits
    // without one (a BLPOP never takes a pool's last connection); opened on demand only,
    // so every connection the pool has is cut below.
    let pool = pool_to(&proxy.url(), WAITERS as u32 + 1, Duration::from_secs(2));
    let guard = holder.lock().unwrap();

    let deadline = Duration::from_secs(5);
    let (tx, rx) = mpsc::channel();
    let threads: Vec<_> = (0..WAITERS)
        .map(|i| {
            let waiter = RedisMutex::new(pool.clone(), "cut");
            run_call(&tx, &format!("waiter-{i}"), move || {
                match waiter.try_lock_for(deadline) {
                    Ok(_) => Err("got a lock that is held".to_owned()),
                    Err(e) if e.is_would_block() => Ok(()),
                    Err(e) => Err(e.to_string()),
                }
            })
        })
        .collect();
    assert!(
        support::eventually(HANG, || support::blocked_clients(&mut conn)
            == WAITERS as u64),
        "the waiters never blocked"
    );
    assert_eq!(proxy.open_connections(), WAITERS);

    proxy.cut();
    let cut_at = Instant::now();
    for _ in 0..WAITERS {
        let (label, result, took) = rx.recv_timeout(HANG).expect("a waiter hung after the cut");
        match result {
            // Retried until its deadline, which the lock outlived.
            Ok(()) => assert!(
                took <= deadline + ROUND_TRIPS,
                "{label} returned after {took:?}, its deadline is {deadline:?}"
            ),
            Err(e) => {
                assert!(e.starts_with("redis error"), "{label}: {e}");
                let after = cut_at.elapsed();
                assert!(
                    after < Duration::from_secs(1),
                    "{label} failed {after:?} after the cut"
                );
            }
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    let state = pool.state();
    assert_eq!(
        state.connections, 0,
        "the pool kept {} cut connection(s) for its next users",
        state.connections
    );

    // The next users, all at once, each on a connection of its own: nobody gets a cut one.
    guard.unlock().unwrap();
    thread::scope(|s| {
        let users: Vec<_> = (0..WAITERS)
            .map(|i| {
                let pool = pool.clone();
                s.spawn(move || {
                    let mutex = RedisMutex::new(pool, format!("after-cut-{i}"));
                    for _ in 0..5 {
                        mutex.lock()?.unlock()?;
                    }
                    Ok::<_, Error>(())
                })
            })
            .collect();
        for user in users {
            user.join()
                .unwrap()
                .expect("a user after the cut got a broken connection");
        }
    });
}

/// A stalled server, then one that refuses connections: every call returns within its
/// bound, and the same pool works again once the network heals.
#[test]
fn a_stalled_or_refusing_server_fails_calls_in_time_and_the_pool_works_after_healing() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let mut conn = server.connection();
    let connection_timeout = Duration::from_millis(800);
    let response_timeout = Duration::from_millis(300);
    let pool = pool_to(&proxy.url(), 4, connection_timeout);
    let build = |name: &str| {
        RedisMutex::builder(pool.clone(), name)
            .expire(Duration::from_secs(30))
            .response_timeout(response_timeout)
            .build()
            .unwrap()
    };
    let holder = build("stalled");
    let waiter = build("stalled");
    let guard = holder.lock().unwrap();
    let (tx, rx) = mpsc::channel();
    let waiting = run_call(&tx, "waiter", {
        let waiter = build("stalled");
        move || waiter.lock().map(drop).map_err(|e| e.to_string())
    });
    assert!(
        support::eventually(HANG, || support::blocked_clients(&mut conn) == 1),
        "the waiter never blocked"
    );

    for fault in ["stall", "refuse"] {
        match fault {
            "stall" => proxy.stall(),
            _ => {
                proxy.heal();
                proxy.refuse(true);
                proxy.cut();
            }
        }
        let started = Instant::now();
        let timed = waiter.try_lock_for(Duration::from_millis(500));
        let took = started.elapsed();
        assert!(timed.is_err(), "{fault}: {timed:?}");
        // The deadline, then one more checkout or reply.
        let bound = Duration::from_millis(500) + connection_timeout.max(response_timeout);
        assert!(
            took <= bound + ROUND_TRIPS,
            "{fault}: try_lock_for took {took:?}: {timed:?}"
        );
        let started = Instant::now();
        let checked = build("stalled").is_locked();
        let took = started.elapsed();
        assert!(checked.is_err(), "{fault}: is_locked: {checked:?}");
        let bound = connection_timeout.max(response_timeout);
        assert!(
            took <= bound + ROUND_TRIPS,
            "{fault}: is_locked took {took:?}"
        );
    }
    // The waiter without a deadline comes back too: its wait is bounded by a second, then
    // its next round trip by the reply timeout.
    let (_, result, _) = rx.recv_timeout(HANG).expect("the waiter hung");
    waiting.join().unwrap();
    assert!(result.is_err(), "the waiter got a held lock: {result:?}");

    proxy.heal();
    guard.unlock().unwrap();
    let recovered = (0..8).any(|_| waiter.try_lock_for(Duration::from_secs(1)).is_ok());
    assert!(recovered, "the pool never worked again after healing");
    for cycle in 0..10 {
        let guard = waiter.try_lock_for(Duration::from_secs(1));
        let guard = guard.unwrap_or_else(|e| panic!("cycle {cycle} after healing: {e}"));
        guard.unlock().unwrap();
    }
}

/// A lock request that reaches Redis but whose reply comes too late: the caller gets an
/// error, and must not be left the unknowing holder of the lock.
#[test]
fn an_acquire_whose_reply_timed_out_leaves_no_lock_held_by_nobody() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let mut conn = server.connection();
    let pool = pool_to(&proxy.url(), 2, Duration::from_secs(2));
    // No expiry (the default): a lock nobody knows it holds would stay forever.
    let slow = RedisMutex::builder(pool.clone(), "late-reply")
        .owner_id("slow")
        .response_timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    // Connections made while the network is fast.
    drop(slow.lock().unwrap());

    proxy.set_latency(Duration::from_millis(250));
    let attempt = slow.try_lock();
    match &attempt {
        Err(redis_mutex::TryLockError::Error(e)) => assert!(e.is_timeout(), "{e}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    drop(attempt);
    proxy.heal();
    // Until Redis has run everything sent so far (the late request included).
    drain(&pool);

    let owner: Option<String> = conn.get("lock:late-reply").unwrap();
    let other = RedisMutex::new(server.pool(), "late-reply");
    let taken = other.try_lock_for(Duration::from_secs(2));
    assert!(
        taken.is_ok(),
        "the lock is held by {owner:?}, whose lock call failed, and nobody else can take it: \
         {taken:?}"
    );
}

/// The same for a read-write lock: a write lock (and a waiter's registration) granted behind
/// a lost reply is removed again.
#[test]
fn a_write_lock_whose_reply_timed_out_leaves_nothing_behind() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let mut conn = server.connection();
    let pool = pool_to(&proxy.url(), 2, Duration::from_secs(2));
    let slow = redis_mutex::RedisRwLock::builder(pool.clone(), "tree/late")
        .response_timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    drop(slow.write().unwrap());

    proxy.set_latency(Duration::from_millis(250));
    let attempt = slow.try_write();
    match &attempt {
        Err(redis_mutex::TryLockError::Error(e)) => assert!(e.is_timeout(), "{e}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    drop(attempt);
    proxy.heal();
    drain(&pool);

    let left: Vec<String> = conn.keys("rwlock:*").unwrap();
    let other = redis_mutex::RedisRwLock::new(server.pool(), "tree");
    let taken = other.try_read_for(Duration::from_secs(2));
    assert!(
        taken.is_ok(),
        "a write lock nobody holds blocks the tree ({left:?}): {taken:?}"
    );
}

/// An extend whose reply is lost may still set the lease: the guard must not count on more
/// than that request could leave, or it would believe it holds a lock someone else took.
#[test]
fn an_extend_whose_reply_is_lost_never_leaves_the_guard_believing_too_long() {
    let mut server = RedisServer::start();
    let pool = server.pool();
    let mutex = RedisMutex::builder(pool.clone(), "lost-extend")
        .expire(Duration::from_secs(60))
        .response_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let guard = mutex.lock().unwrap();
    guard.extend(Duration::from_secs(60)).unwrap();
    server.pause();
    let shortened = guard.extend(Duration::from_millis(500));
    assert!(shortened.unwrap_err().is_timeout());
    server.resume();
    // Redis runs the queued extend: the lock now ends 500 ms after it, not in 60 s.
    let left = guard.valid_for().unwrap();
    assert!(
        left <= Duration::from_millis(500),
        "the guard still counts on {left:?}"
    );
    let other = RedisMutex::new(pool, "lost-extend");
    let taken = other.try_lock_for(Duration::from_secs(5)).unwrap();
    assert!(
        guard.ensure_held().is_err(),
        "two holders: the guard believes it holds a lock {} took",
        other.owner_id()
    );
    drop(taken);
}
