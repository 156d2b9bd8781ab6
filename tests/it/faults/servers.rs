//! Network and server faults: partitions, stalls, cuts, a killed and restarted server, late
//! replies. Clients reach Redis through `crate::support::proxy::FaultProxy`.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::proxy::FaultProxy;
use crate::support::{HANG, RedisServer, Task, blocked_clients, command_calls, eventually, spawn};
use redis::Commands;
use redis_mutex::{Error, LostReason, Pool, RedisMutex, RedisRwLock, RedisSemaphore, TryLockError};

/// How late after a lock's expiry a waiter may get it on a loaded 2-core CI machine: a
/// round trip or two, plus scheduling.
const ROUND_TRIPS: Duration = Duration::from_millis(250);

/// What a call on another thread came to, and when it ended.
type Outcome = (Result<(), TryLockError>, Instant);

/// Runs `call` on a thread of its own (named `what`), noting when it ended.
fn run_call(
    what: &str,
    call: impl FnOnce() -> Result<(), TryLockError> + Send + 'static,
) -> Task<Outcome> {
    spawn(what, move || (call(), Instant::now()))
}

/// The error of a call that was to fail with one; panics, saying what it got, otherwise.
fn failure(what: &str, result: Result<(), TryLockError>) -> Error {
    match result {
        Err(TryLockError::Error(e)) => e,
        other => panic!("{what}: expected an error, got {other:?}"),
    }
}

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
    let holder = RedisMutex::builder(proxy.pool(), "partitioned")
        .owner_id("holder")
        .expire(expire)
        .auto_renewal(true)
        .on_lost(move |lost| {
            lost_tx.lock().unwrap().send(lost.clone()).ok();
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
    let renewed = eventually(HANG, || command_calls(&mut conn, "evalsha") >= 3);
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
    let report = lost_rx.recv_timeout(HANG).expect("on_lost is called");
    assert_eq!(report.name, "partitioned");
    assert_eq!(report.owner_id, "holder");
    assert_eq!(report.reason, LostReason::Unreachable, "{report:?}");
    assert!(guard.is_lost());
    assert!(matches!(guard.ensure_held(), Err(Error::LockLost { .. })));

    // Heal: the renewals held during the partition now reach Redis, late.
    let evalsha_before = command_calls(&mut conn, "evalsha");
    proxy.heal();
    let unlocked = guard.unlock();
    assert!(
        matches!(unlocked, Err(Error::LockLost { .. })),
        "the old holder's unlock: {unlocked:?}"
    );
    let delivered_all = eventually(HANG, || {
        command_calls(&mut conn, "evalsha") - evalsha_before >= 2
    });
    let delivered = command_calls(&mut conn, "evalsha") - evalsha_before;
    assert!(
        delivered_all,
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
    let settings = Pool::builder()
        .max_size(8)
        .connection_timeout(connection_timeout);
    let pool = server.pool_with(settings.clone());
    let mutex_on = |pool: Pool, owner: &str| {
        RedisMutex::builder(pool, "restarted")
            .owner_id(owner)
            .expire(Duration::from_secs(3))
            .response_timeout(response_timeout)
            .build()
            .unwrap()
    };
    let mutex = |owner: &str| mutex_on(pool.clone(), owner);
    // The holder and each waiter on a pool of their own: each its own process, as far as
    // the lock can tell (a process's mutexes of one pool and name wait for each other in
    // the process).
    let elsewhere = |owner: &str| mutex_on(server.pool_with(settings.clone()), owner);
    let (lost_tx, lost_rx) = mpsc::channel();
    let lost_tx = std::sync::Mutex::new(lost_tx);
    let holder = RedisMutex::builder(server.pool_with(settings.clone()), "restarted")
        .owner_id("holder")
        .expire(Duration::from_secs(3))
        .auto_renewal(true)
        .on_lost(move |lost| {
            lost_tx.lock().unwrap().send(lost.reason).ok();
        })
        .build()
        .unwrap();
    let guard = holder.lock().unwrap();

    // Four waiters blocked in Redis: two without a deadline, two with one.
    let deadline = Duration::from_secs(5);
    let waiters: Vec<_> = (0..4)
        .map(|i| {
            let waiter = elsewhere(&format!("waiter-{i}"));
            let label = format!("waiter-{i}");
            let task = run_call(&label, move || {
                if i % 2 == 0 {
                    waiter.lock().map(drop).map_err(TryLockError::Error)
                } else {
                    waiter.try_lock_for(deadline).map(drop)
                }
            });
            (label, task)
        })
        .collect();
    assert!(
        eventually(HANG, || blocked_clients(&mut conn) == 4),
        "the waiters never blocked"
    );

    server.kill();
    let killed_at = Instant::now();
    for (label, task) in waiters {
        let (result, ended) = task.join(HANG);
        let err = failure(&label, result);
        // A connection the server dropped: Redis could not be reached.
        assert!(err.is_unreachable(), "{label}: {err:?}");
        assert!(
            err.to_string().contains(&server.port().to_string()),
            "{label}: {err}"
        );
        // The dead socket is noticed at once: no waiting out the BLPOP or the deadline.
        let after = ended - killed_at;
        assert!(
            after < Duration::from_secs(2),
            "{label} returned {after:?} after the kill"
        );
    }

    // While the server is down, every call fails within its bound, saying the server
    // cannot be reached.
    let short = Duration::from_millis(300);
    let checkout = connection_timeout.max(response_timeout);
    type Call = Box<dyn FnOnce() -> Result<(), TryLockError> + Send>;
    let down: [(&str, Duration, Call); 5] = [
        ("lock", checkout, {
            let m = mutex("down-1");
            Box::new(move || m.lock().map(drop).map_err(TryLockError::Error))
        }),
        ("try_lock", response_timeout, {
            let m = mutex("down-2");
            Box::new(move || m.try_lock().map(drop))
        }),
        ("try_lock_for", short + response_timeout, {
            let m = mutex("down-3");
            Box::new(move || m.try_lock_for(short).map(drop))
        }),
        ("is_locked", checkout, {
            let m = mutex("down-4");
            Box::new(move || m.is_locked().map(drop).map_err(TryLockError::Error))
        }),
        ("reset_all", checkout, {
            let pool = pool.clone();
            Box::new(move || {
                redis_mutex::reset_all(&pool)
                    .map(drop)
                    .map_err(TryLockError::Error)
            })
        }),
    ];
    for (label, bound, call) in down {
        let started = Instant::now();
        let (result, ended) = run_call(label, call).join(HANG);
        let took = ended - started;
        let err = failure(label, result);
        assert!(err.is_unreachable(), "{label}: {err:?}");
        assert!(
            took <= bound + ROUND_TRIPS,
            "{label} took {took:?} to fail, its bound is {bound:?}: {err}"
        );
    }

    server.restart();
    // The restarted server is empty: the holder's renewal finds the lock gone (or, had the
    // outage outlasted the lease, could not renew it in time).
    let reason = lost_rx
        .recv_timeout(HANG)
        .expect("the holder learns that its lock went with the server");
    assert!(
        matches!(reason, LostReason::Reset | LostReason::Unreachable),
        "{reason:?}"
    );
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
}

/// A server restarted while a pool's connections sat idle closed every one of them; a
/// request sent on one never reached the new server. No call fails for it, in any mode or
/// lock kind: a lock request is undone on another connection and sent again, a release or
/// a read is sent again.
#[test]
fn a_restart_between_calls_fails_no_call() {
    let mut server = RedisServer::start();
    let pool = server.pool_with(Pool::builder().max_size(6).min_idle(0));
    let mutex = |name: String, fair: bool| {
        RedisMutex::builder(pool.clone(), name)
            .fair(fair)
            .expire(Duration::from_secs(30))
            .build()
            .unwrap()
    };
    for round in 0..3 {
        // Several connections in the pool, each used, by other names: right after its own
        // release a mutex defers to a waiter its release may have woken, and such a wake-up
        // is gone with the restart.
        let warm: Vec<_> = (0..4)
            .map(|i| mutex(format!("warm-{round}-{i}"), i % 2 == 1))
            .collect();
        let guards: Vec<_> = warm.iter().map(|m| m.lock().unwrap()).collect();
        let tree = RedisRwLock::new(pool.clone(), format!("warm-{round}/leaf")).unwrap();
        let read = tree.read().unwrap();
        drop((guards, read));
        server.restart();
        for i in 0..4 {
            let m = mutex(format!("after-{round}-{i}"), i % 2 == 1);
            let guard = m
                .try_lock()
                .unwrap_or_else(|e| panic!("round {round}: try_lock of mutex {i}: {e}"));
            guard
                .unlock()
                .unwrap_or_else(|e| panic!("round {round}: unlock of mutex {i}: {e}"));
        }
        server.restart();
        let tree = RedisRwLock::new(pool.clone(), format!("tree-{round}/leaf")).unwrap();
        let write = tree
            .try_write()
            .unwrap_or_else(|e| panic!("round {round}: try_write: {e}"));
        write
            .unlock()
            .unwrap_or_else(|e| panic!("round {round}: write unlock: {e}"));
        server.restart();
        let m = mutex(format!("blocking-{round}"), false);
        drop(
            m.lock()
                .unwrap_or_else(|e| panic!("round {round}: lock: {e}")),
        );
    }
}

/// A release that ran, but whose reply was lost with its connection (closed before any
/// reply came), is sent again on another connection: every kind is told it happened, never
/// "not acquired", and the lock is free at once for everyone else.
#[test]
fn a_release_whose_reply_is_cut_off_is_told_it_happened_in_every_kind() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let pool = proxy.pool_with(Pool::builder().max_size(4).min_idle(0));
    // Arms the proxy, releases, and checks that the release was sent again (the server
    // ran two scripts: a pooled connection may take the copy, so the proxy's count of new
    // connections tells nothing) and answered as done. Each kind has released once before,
    // so that its script is loaded: the reply cut off is the release's own, not a
    // `NOSCRIPT`.
    let mut admin = server.connection();
    let mut scripts_run = move || -> u64 {
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut admin)
            .unwrap();
        stats
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    };
    let mut cut_release = |what: &str, release: &mut dyn FnMut() -> redis_mutex::Result<()>| {
        let before = scripts_run();
        proxy.cut_before_next_reply();
        release().unwrap_or_else(|e| panic!("{what}: a release that happened: {e}"));
        let ran = scripts_run() - before;
        assert!(
            ran >= 2,
            "{what}: the release was not sent again ({ran} script run)"
        );
    };
    for fair in [false, true] {
        let name = format!("cut-release-{fair}");
        let mutex = RedisMutex::builder(pool.clone(), &*name)
            .fair(fair)
            .auto_renewal(false)
            .build()
            .unwrap();
        mutex.lock().unwrap().unlock().unwrap();
        let mut guard = Some(mutex.lock().unwrap());
        cut_release(&format!("mutex (fair: {fair})"), &mut || {
            guard.take().unwrap().unlock()
        });
        let other = RedisMutex::new(server.pool(), &*name).unwrap();
        assert!(
            other.try_lock().is_ok(),
            "fair: {fair}: the lock is still held"
        );
    }
    let tree = RedisRwLock::builder(pool.clone(), "cut/release")
        .auto_renewal(false)
        .build()
        .unwrap();
    tree.read().unwrap().unlock().unwrap();
    let mut read = Some(tree.read().unwrap());
    cut_release("read lock", &mut || read.take().unwrap().unlock());
    let mut write = Some(tree.write().unwrap());
    cut_release("write lock", &mut || write.take().unwrap().unlock());
    let other = RedisRwLock::new(server.pool(), "cut/release").unwrap();
    assert!(other.try_write().is_ok(), "the write lock is still held");
    let semaphore = RedisSemaphore::builder(pool.clone(), "cut-release")
        .permits(2)
        .auto_renewal(false)
        .build()
        .unwrap();
    semaphore.acquire().unwrap().release().unwrap();
    let kept = semaphore.acquire().unwrap();
    let mut permit = Some(semaphore.acquire().unwrap());
    cut_release("semaphore permit", &mut || permit.take().unwrap().release());
    kept.release().unwrap();
    assert_eq!(semaphore.available_permits().unwrap(), 2);
}

/// A lock request whose connection closed before its reply is undone on another
/// connection and sent again; through a proxy, its first copy may still reach the server
/// after the undo. Each kind's script then grants that request once, as the holder it is,
/// never blocks it behind its own grant (which nobody would hold until it expired).
#[test]
fn a_lock_request_that_arrives_twice_is_granted_once_in_every_kind() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    // The mutex: the same attempt id, twice.
    let acquire = crate::support::script("mutex/acquire.lua");
    let mutex = |conn: &mut redis::Connection, attempt: &str| -> (i64, u64) {
        acquire
            .key("lock:twice")
            .key("lock-signal:twice")
            .key("lock-fencing-counter")
            .key("lock-grant:twice")
            .arg("holder")
            .arg(30_000)
            .arg("0")
            .arg(attempt)
            .arg(10_000)
            .arg("lock-done:twice:")
            .invoke(conn)
            .unwrap()
    };
    let first = mutex(&mut conn, "a1");
    assert_eq!(first.0, 1);
    assert_eq!(mutex(&mut conn, "a1"), first, "the same request, again");
    assert_eq!(
        mutex(&mut conn, "a2").0,
        0,
        "another request of the same owner"
    );

    // The read-write lock: the same lease id, twice.
    let acquire = crate::support::script("rwlock/acquire.lua");
    let kinds = [
        "w", "r", "wb", "rb", "qw", "qr", "qwb", "qrb", "wake-w", "wake-r", "wake-wb", "wake-rb",
    ];
    let rwlock = |conn: &mut redis::Connection, mode: &str, lease: &str| -> (i64, u64) {
        let mut call = acquire.prepare_invoke();
        for kind in kinds {
            call.key(format!("rwlock:{kind}:twice"));
        }
        call.key("lock-fencing-counter")
            .key("rwlock:released:twice")
            .arg(mode)
            .arg(lease)
            .arg(30_000)
            .arg(0)
            .invoke(conn)
            .unwrap()
    };
    let (granted, token) = rwlock(&mut conn, "w", "w1");
    assert_eq!(granted, 1);
    let again = rwlock(&mut conn, "w", "w1");
    assert!(
        again.0 == 1 && again.1 > token,
        "the same write request, again: {again:?}"
    );
    assert_eq!(rwlock(&mut conn, "w", "w2").0, 0, "another writer");
    let writers: u64 = conn.zcard("rwlock:w:twice").unwrap();
    assert_eq!(writers, 1);
    let _: () = conn.del("rwlock:w:twice").unwrap();
    assert_eq!(rwlock(&mut conn, "r", "r1").0, 1);
    assert_eq!(
        rwlock(&mut conn, "r", "r1").0,
        1,
        "the same read request, again"
    );
    let readers: u64 = conn.zcard("rwlock:r:twice").unwrap();
    assert_eq!(readers, 1);

    // The semaphore (capacity 3): the same lease id asking for 2 permits, twice.
    let script = crate::support::script("semaphore/semaphore.lua");
    let semaphore = |conn: &mut redis::Connection, lease: &str, waiter: &str| -> (i64, u64, u32) {
        script
            .key("semaphore:twice")
            .key("semaphore-capacity:twice")
            .key("semaphore-queue:twice")
            .key("semaphore-waiters:twice")
            .key("lock-fencing-counter")
            .key("semaphore-released:twice")
            .arg("acquire")
            .arg(3)
            .arg("semaphore-wake:twice:")
            .arg(1000)
            .arg(lease)
            .arg(2)
            .arg(30_000)
            .arg(waiter)
            .arg(0)
            .arg("0")
            .arg(3_600_000)
            .invoke(conn)
            .unwrap()
    };
    let (granted, token, capacity) = semaphore(&mut conn, "s1", "q1");
    assert_eq!((granted, capacity), (1, 3));
    let again = semaphore(&mut conn, "s1", "q1");
    assert!(
        again.0 == 1 && again.1 > token && again.2 == 3,
        "the same request, again: {again:?}"
    );
    let holders: Vec<String> = conn.zrange("semaphore:twice", 0, -1).unwrap();
    assert_eq!(
        holders,
        [format!("2/3/{}:s1", again.1)],
        "two permits held once, with the new token"
    );
    assert_eq!(semaphore(&mut conn, "s2", "q2").0, 0, "two more do not fit");
}

/// Scenario 3: waiters blocked in `BLPOP` have their connections cut.
#[test]
fn waiters_whose_connections_are_cut_return_in_time_and_leave_no_broken_connection() {
    const WAITERS: usize = 3;
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let mut conn = server.connection();
    let holder = RedisMutex::new(server.pool(), "cut").unwrap();
    // Each waiter on a pool of its own (its own process, as far as the lock can tell),
    // with room for one more connection than its wait uses; opened on demand only, so that
    // every connection a pool has is cut below.
    let settings = Pool::builder()
        .max_size(2)
        .min_idle(0)
        .connection_timeout(Duration::from_secs(2));
    let pools: Vec<Pool> = (0..WAITERS)
        .map(|_| proxy.pool_with(settings.clone()))
        .collect();
    let guard = holder.lock().unwrap();

    let deadline = Duration::from_secs(5);
    let waiters: Vec<_> = (0..WAITERS)
        .map(|i| {
            let waiter = RedisMutex::new(pools[i].clone(), "cut").unwrap();
            let label = format!("waiter-{i}");
            let started = Instant::now();
            let task = run_call(&label, move || match waiter.try_lock_for(deadline) {
                Ok(_) => panic!("got a lock that is held"),
                Err(e) => Err(e),
            });
            (label, started, task)
        })
        .collect();
    assert!(
        eventually(HANG, || blocked_clients(&mut conn) == WAITERS as u64),
        "the waiters never blocked"
    );
    assert_eq!(proxy.open_connections(), WAITERS);

    proxy.cut();
    let cut_at = Instant::now();
    for (label, started, task) in waiters {
        let (result, ended) = task.join(HANG);
        match result {
            // Retried until its deadline, which the lock outlived.
            Err(TryLockError::WouldBlock) => {
                let took = ended - started;
                assert!(
                    took <= deadline + ROUND_TRIPS,
                    "{label} returned after {took:?}, its deadline is {deadline:?}"
                );
            }
            result => {
                let err = failure(&label, result);
                assert!(err.is_unreachable(), "{label}: {err:?}");
                let after = ended - cut_at;
                assert!(
                    after < Duration::from_secs(1),
                    "{label} failed {after:?} after the cut"
                );
            }
        }
    }

    // The next users, all at once, each on a pool whose connection was cut: nobody gets a
    // cut one (the pools kept none of them for their next users).
    guard.unlock().unwrap();
    let users: Vec<_> = (0..WAITERS)
        .map(|i| {
            let pool = pools[i].clone();
            spawn(&format!("user-{i}"), move || {
                let mutex = RedisMutex::new(pool, format!("after-cut-{i}"))?;
                for _ in 0..5 {
                    mutex.lock()?.unlock()?;
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    for user in users {
        user.join(HANG)
            .expect("a user after the cut got a broken connection");
    }
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
    let pool = proxy.pool_with(
        Pool::builder()
            .max_size(4)
            .connection_timeout(connection_timeout),
    );
    let build = |name: &str| {
        RedisMutex::builder(pool.clone(), name)
            .expire(Duration::from_secs(30))
            .response_timeout(response_timeout)
            .build()
            .unwrap()
    };
    // The holder stands for another process: another pool.
    let holder = RedisMutex::builder(server.pool(), "stalled")
        .expire(Duration::from_secs(30))
        .build()
        .unwrap();
    let waiter = build("stalled");
    let guard = holder.lock().unwrap();
    let waiting = run_call("waiter", {
        let waiter = build("stalled");
        move || waiter.lock().map(drop).map_err(TryLockError::Error)
    });
    assert!(
        eventually(HANG, || blocked_clients(&mut conn) == 1),
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
    let (result, _) = waiting.join(HANG);
    assert!(result.is_err(), "the waiter got a held lock: {result:?}");

    proxy.heal();
    guard.unlock().unwrap();
    // The first lock after healing may come on a connection made on the caller's thread
    // (the pool's own attempts may be a backoff away): its unlock, right after, must not
    // wait for the pool either.
    let recovered = (0..8).any(|_| match waiter.try_lock_for(Duration::from_secs(1)) {
        Ok(guard) => {
            let unlocked = guard.unlock();
            unlocked.unwrap_or_else(|e| panic!("the first unlock after healing: {e}"));
            true
        }
        Err(_) => false,
    });
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
    let pool = proxy.pool_with(Pool::builder().max_size(2));
    // No expiry (the default): a lock nobody knows it holds would stay forever.
    let slow = RedisMutex::builder(pool, "late-reply")
        .owner_id("slow")
        .response_timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    // Connections made while the network is fast.
    drop(slow.lock().unwrap());

    proxy.set_latency(Duration::from_millis(250));
    let undos_before = command_calls(&mut conn, "eval");
    let attempt = slow.try_lock();
    match &attempt {
        Err(TryLockError::Error(e)) => assert!(e.is_timeout(), "{e}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    drop(attempt);
    proxy.heal();
    // Until Redis has run the late request and the undo sent behind it on its connection.
    assert!(
        eventually(HANG, || command_calls(&mut conn, "eval") > undos_before),
        "no undo reached Redis"
    );

    let owner: Option<String> = conn.get("lock:late-reply").unwrap();
    let other = RedisMutex::new(server.pool(), "late-reply").unwrap();
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
    let pool = proxy.pool_with(Pool::builder().max_size(2));
    // Without renewal, as a lease nobody knows it holds would not be renewed either: the
    // lease (30 s) outlives the test.
    let slow = redis_mutex::RedisRwLock::builder(pool, "tree/late")
        .auto_renewal(false)
        .response_timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    drop(slow.write().unwrap());

    proxy.set_latency(Duration::from_millis(250));
    let undos_before = command_calls(&mut conn, "eval");
    let attempt = slow.try_write();
    match &attempt {
        Err(TryLockError::Error(e)) => assert!(e.is_timeout(), "{e}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    drop(attempt);
    proxy.heal();
    // Until Redis has run the late request and the undo sent behind it on its connection.
    assert!(
        eventually(HANG, || command_calls(&mut conn, "eval") > undos_before),
        "no undo reached Redis"
    );

    let left: Vec<String> = conn.keys("rwlock:*").unwrap();
    let other = redis_mutex::RedisRwLock::new(server.pool(), "tree").unwrap();
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
    // Another process: another pool.
    let other = RedisMutex::new(server.pool(), "lost-extend").unwrap();
    let taken = other.try_lock_for(Duration::from_secs(5)).unwrap();
    assert!(
        guard.ensure_held().is_err(),
        "two holders: the guard believes it holds a lock {} took",
        other.owner_id()
    );
    drop(taken);
}
