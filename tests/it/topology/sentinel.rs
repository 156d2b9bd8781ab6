//! Locks behind Sentinel (a primary, a replica, three sentinels, started by the tests): found
//! through the sentinels, found again after a failover without a new pool, and grants that
//! wait for the replica (`wait_replicas`).

use std::time::{Duration, Instant};

use crate::support::sentinel::Sentinels;
use crate::support::{HANG, RedisServer, eventually, spawn};
use redis::Commands;
use redis_mutex::{Error, Pool, RedisMutex, RedisRwLock};

#[test]
fn a_lock_works_through_the_sentinels() {
    let set = Sentinels::start();
    let pool = set.pool();
    let mutex = RedisMutex::new(pool.clone(), "jobs").unwrap();
    let guard = mutex.lock().unwrap();
    let mut primary = set.servers[0].connection();
    let owner: String = primary.get("lock:jobs").unwrap();
    assert_eq!(owner, mutex.owner_id());
    guard.unlock().unwrap();
    let tree = RedisRwLock::new(pool, "reports").unwrap();
    drop(tree.write().unwrap());
}

/// Issue 24: connections made before a failover went on writing to the old primary, which
/// still takes writes for a while: a grant made there is lost when it is demoted. Once the
/// sentinels name the new primary, the next grant is made there.
#[test]
fn a_grant_after_a_failover_is_made_on_the_new_primary() {
    let set = Sentinels::start();
    let pool = set.pool();
    let mutex = RedisMutex::new(pool.clone(), "jobs").unwrap();
    // Connections to the old primary, made and pooled.
    for _ in 0..3 {
        mutex.lock().unwrap().unlock().unwrap();
    }
    let new = set.failover();
    let guard = mutex.try_lock_for(Duration::from_secs(1)).unwrap();
    let mut primary = set.servers[new].connection();
    let owner: Option<String> = primary.get("lock:jobs").unwrap();
    assert_eq!(
        owner.as_deref(),
        Some(mutex.owner_id()),
        "the grant is not on the new primary (port {})",
        set.servers[new].port()
    );
    guard.unlock().unwrap();
    let left: Option<String> = primary.get("lock:jobs").unwrap();
    assert_eq!(left, None, "the release went to the new primary too");
}

#[test]
fn after_a_failover_the_same_pool_finds_the_new_primary() {
    let set = Sentinels::start();
    let response_timeout = Duration::from_millis(500);
    let pool = set.pool_with(Pool::builder().response_timeout(response_timeout));
    let mutex = RedisMutex::builder(pool, "through-failover")
        .expire(Duration::from_secs(5))
        .build()
        .unwrap();
    // A lock loop that runs through the failover, timing every call.
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let failed_over = Arc::new(AtomicBool::new(false));
    let ok_since_failover = Arc::new(AtomicU32::new(0));
    let stopping = stop.clone();
    let (after, ok_after) = (failed_over.clone(), ok_since_failover.clone());
    let looping = spawn("lock loop", move || {
        let (mut ok, mut failed, mut longest) = (0u32, 0u32, Duration::ZERO);
        let mut ok_after_failure = 0u32;
        while !stopping.load(Ordering::SeqCst) {
            let called = Instant::now();
            let outcome = mutex
                .try_lock_for(Duration::from_millis(200))
                .map_err(|e| e.to_string())
                .and_then(|guard| guard.unlock().map_err(|e| e.to_string()));
            longest = longest.max(called.elapsed());
            match outcome {
                Ok(()) => {
                    ok += 1;
                    if failed > 0 {
                        ok_after_failure += 1;
                    }
                    if after.load(Ordering::SeqCst) {
                        ok_after.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Err(_) => failed += 1,
            }
        }
        (ok, failed, ok_after_failure, longest)
    });
    let started = Instant::now();
    let new = set.failover();
    failed_over.store(true, Ordering::SeqCst);
    let took = started.elapsed();
    // Then keep going on the new primary for a while. (A release that reached the old
    // primary before the switch was announced leaves the lock on the new one until its
    // 5 s expiry: grants come again after that at the latest.)
    let mut new_primary = set.servers[new].connection();
    let progressed = eventually(HANG, || {
        let calls = crate::support::command_calls(&mut new_primary, "evalsha")
            + crate::support::command_calls(&mut new_primary, "eval");
        calls >= 20 && ok_since_failover.load(Ordering::SeqCst) >= 10
    });
    stop.store(true, Ordering::SeqCst);
    let (ok, failed, ok_after_failure, longest) = looping.join(HANG);
    println!(
        "failover took {took:?}; {ok} lock calls succeeded, {failed} failed; \
         the longest took {longest:?}"
    );
    assert!(progressed, "no lock call reached the new primary");
    assert!(ok > 0);
    // The wait (200 ms), plus a reply timeout for each of its requests, plus a connect.
    let bound = Duration::from_millis(200) + response_timeout * 3 + Duration::from_secs(2);
    assert!(
        longest < bound,
        "a call took {longest:?}, past its bound {bound:?}"
    );
    if failed > 0 {
        assert!(
            ok_after_failure > 0,
            "calls never succeeded again after failing"
        );
    }
}

#[test]
fn wait_replicas_returns_once_the_replica_has_the_grant() {
    let primary = RedisServer::start();
    let replica =
        RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary.port().to_string()]);
    let mut on_replica = replica.connection();
    assert!(eventually(HANG, || {
        crate::support::info_field(&mut on_replica, "replication", "master_link_status").as_deref()
            == Some("up")
    }));
    let mutex = RedisMutex::builder(primary.pool(), "replicated")
        .wait_replicas(1, Duration::from_millis(100))
        .build()
        .unwrap();
    for _ in 0..20 {
        let guard = mutex.lock().unwrap();
        // No wait here: the replica has the grant when lock() returns.
        let owner: Option<String> = on_replica.get("lock:replicated").unwrap();
        assert_eq!(owner.as_deref(), Some(mutex.owner_id()));
        guard.unlock().unwrap();
    }
}

#[test]
fn wait_replicas_with_the_replica_down_refuses_the_grant_and_leaves_no_key() {
    let primary = RedisServer::start();
    let mut replica =
        RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary.port().to_string()]);
    let mut on_replica = replica.connection();
    assert!(eventually(HANG, || {
        crate::support::info_field(&mut on_replica, "replication", "master_link_status").as_deref()
            == Some("up")
    }));
    replica.pause();
    let mutex = RedisMutex::builder(primary.pool(), "unreplicated")
        .wait_replicas(1, Duration::from_millis(100))
        .build()
        .unwrap();
    let called = Instant::now();
    match mutex.lock() {
        Err(Error::NotReplicated {
            acked: 0,
            wanted: 1,
        }) => {}
        other => panic!("expected NotReplicated, got {other:?}"),
    }
    assert!(
        called.elapsed() < Duration::from_secs(3),
        "{:?}",
        called.elapsed()
    );
    let mut conn = primary.connection();
    let owner: Option<String> = conn.get("lock:unreplicated").unwrap();
    assert_eq!(owner, None, "the unreplicated grant was released");
    assert!(!mutex.is_locked().unwrap());
    replica.resume();
}

/// Issue 24: a failover right after a grant may promote a replica whose counter had not
/// caught up; the next grant's token is still above the last one.
#[test]
fn fencing_tokens_rise_across_a_failover_right_after_a_grant() {
    let set = Sentinels::start();
    let mutex = RedisMutex::new(set.pool(), "fenced").unwrap();
    let guard = mutex.lock().unwrap();
    let before = guard.fencing_token();
    guard.unlock().unwrap();
    let new = set.failover();
    // As if the counter had not reached the replica: set it back on the new primary.
    let mut primary = set.servers[new].connection();
    let _: () = primary.set("lock-fencing-counter", 1).unwrap();
    let after = mutex
        .try_lock_for(Duration::from_secs(5))
        .unwrap()
        .fencing_token();
    assert!(
        after > before,
        "{before} before the failover, {after} after"
    );
}
