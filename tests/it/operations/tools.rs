//! The operator's API: `list_locks` and `lock_info` say who holds what (and what is not a
//! lock), `last_release` how the last grant ended, and `reset_owned_by` frees one owner's
//! locks and nobody else's, even when workers start at once.

use std::time::Duration;

use crate::support::{HANG, RedisServer, child_env, eventually, spawn, spawn_child};
use redis_mutex::{
    Error, LockKind, RedisMutex, RedisRwLock, Released, last_release, list_locks, lock_info,
    reset_owned_by,
};

#[test]
fn list_locks_shows_every_kind_of_lock_with_its_owner_lease_token_and_waiters() {
    let server = RedisServer::start();
    let pool = server.pool();
    let plain = RedisMutex::builder(pool.clone(), "report")
        .owner_id("worker-1")
        .expire(Duration::from_secs(60))
        .build()
        .unwrap();
    let report = plain.lock().unwrap();
    let forever = RedisMutex::builder(pool.clone(), "migrations")
        .owner_id("deployer")
        .build()
        .unwrap();
    let migrating = forever.lock().unwrap();
    let fair = RedisMutex::builder(pool.clone(), "queue")
        .fair(true)
        .expire(Duration::from_secs(30))
        .build()
        .unwrap();
    let queue = fair.lock().unwrap();
    // Another process waits: another pool.
    let waiter = RedisMutex::builder(server.pool(), "queue")
        .fair(true)
        .expire(Duration::from_secs(30))
        .build()
        .unwrap();
    let waiting = spawn("fair waiter", move || drop(waiter.try_lock_for(HANG)));
    let tree = RedisRwLock::builder(pool.clone(), "tenants/42")
        .owner_id("reader")
        .build()
        .unwrap();
    let (r1, r2) = (tree.read().unwrap(), tree.read().unwrap());
    let writer = RedisRwLock::builder(pool.clone(), "billing")
        .owner_id("writer")
        .build()
        .unwrap();
    let writing = writer.write().unwrap();
    assert!(eventually(HANG, || lock_info(&pool, "queue")
        .unwrap()
        .unwrap()
        .waiters
        == Some(1)));

    let mut locks: Vec<_> = list_locks(&pool).collect::<Result<_, _>>().unwrap();
    locks.sort_by(|a, b| (&a.name, &a.owner_id).cmp(&(&b.name, &b.owner_id)));
    let names: Vec<(&str, LockKind)> = locks.iter().map(|l| (l.name.as_str(), l.kind)).collect();
    assert_eq!(
        names,
        [
            ("billing", LockKind::Write),
            ("migrations", LockKind::Mutex),
            ("queue", LockKind::Mutex),
            ("report", LockKind::Mutex),
            ("tenants/42", LockKind::Read),
            ("tenants/42", LockKind::Read),
        ]
    );
    let report_info = &locks[3];
    assert_eq!(report_info.owner_id, "worker-1");
    assert_eq!(report_info.fencing_token, Some(report.fencing_token()));
    assert!(report_info.expires_in.unwrap() > Duration::from_secs(55));
    assert_eq!(report_info.waiters, None, "a lock without a fair queue");
    assert_eq!(locks[1].expires_in, None, "a lock without expiry");
    assert_eq!(locks[1].fencing_token, Some(migrating.fencing_token()));
    assert_eq!(locks[2].waiters, Some(1));
    assert!(locks[4].owner_id.starts_with("reader#"));
    assert!(locks[0].owner_id.starts_with("writer#"));
    assert!(locks[0].expires_in.unwrap() <= Duration::from_secs(30));

    assert_eq!(lock_info(&pool, "nothing").unwrap(), None);
    drop((report, migrating, queue, r1, r2, writing));
    waiting.join(HANG);
}

/// A key where a lock would be that holds a list: every locking call fails with
/// `WrongType`, so the tools must not call it free.
#[test]
fn a_key_of_another_type_is_named_by_the_tools_never_called_free() {
    let server = RedisServer::start();
    let pool = server.pool();
    let mut conn = server.connection();
    let _: () = redis::cmd("LPUSH")
        .arg("lock:jobs")
        .arg("a")
        .query(&mut conn)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("rwlock:w:tree")
        .arg("x")
        .query(&mut conn)
        .unwrap();
    match lock_info(&pool, "jobs") {
        Err(Error::WrongType { name, key }) => {
            assert_eq!((name.as_str(), key.as_deref()), ("jobs", Some("lock:jobs")));
        }
        other => panic!("lock_info of a list: {other:?}"),
    }
    let mutex = RedisMutex::new(pool.clone(), "jobs").unwrap();
    let e = mutex.try_lock().unwrap_err().to_string();
    assert!(e.contains("`lock:jobs`"), "the message names the key: {e}");
    let e = RedisRwLock::new(pool.clone(), "tree")
        .unwrap()
        .try_write()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`rwlock:w:tree`"),
        "the message names the key: {e}"
    );

    let mut listed: Vec<_> = list_locks(&pool).collect::<Result<_, _>>().unwrap();
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    let seen: Vec<(&str, LockKind, &str)> = listed
        .iter()
        .map(|l| (l.name.as_str(), l.kind, l.key.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("jobs", LockKind::NotALock, "lock:jobs"),
            ("tree", LockKind::NotALock, "rwlock:w:tree"),
        ]
    );
}

/// `last_release` tells a release from a reset, and says nothing of a lock that expired.
#[test]
fn last_release_tells_a_release_from_a_reset() {
    let server = RedisServer::start();
    let pool = server.pool();
    let mutex = RedisMutex::builder(pool.clone(), "report")
        .expire(Duration::from_millis(200))
        .build()
        .unwrap();
    assert_eq!(last_release(&pool, "report").unwrap(), None);
    let guard = mutex.lock().unwrap();
    let token = guard.fencing_token();
    guard.unlock().unwrap();
    assert_eq!(
        last_release(&pool, "report").unwrap(),
        Some(Released::ByHolder {
            fencing_token: token
        })
    );
    let guard = mutex.lock().unwrap();
    let token = guard.fencing_token();
    assert!(
        RedisMutex::new(pool.clone(), "report")
            .unwrap()
            .reset()
            .unwrap()
    );
    assert_eq!(
        last_release(&pool, "report").unwrap(),
        Some(Released::ByReset {
            fencing_token: Some(token)
        })
    );
    assert!(guard.unlock().unwrap_err().is_not_acquired());
    let other = RedisMutex::builder(pool.clone(), "expiring")
        .expire(Duration::from_millis(100))
        .build()
        .unwrap();
    std::mem::forget(other.lock().unwrap());
    assert!(eventually(HANG, || !other.is_locked().unwrap()));
    assert_eq!(last_release(&pool, "expiring").unwrap(), None);
}

/// A worker's start-up: free what a predecessor with our owner id held, then loop on the
/// lock, counting under it with a non-atomic read-increment-write.
#[test]
#[ignore = "a child process of reset_owned_by_at_start_up_never_breaks_exclusion"]
fn starting_worker() {
    use redis::Commands;
    let url = child_env("REDIS_URL");
    let me = child_env("OWNER");
    let pool = crate::support::pool_at(&url);
    reset_owned_by(&pool, &me).unwrap();
    let mutex = RedisMutex::builder(pool, "start-up")
        .owner_id(&me)
        .build()
        .unwrap();
    let mut conn = crate::support::connect(&url);
    for _ in 0..100 {
        let guard = mutex.lock().unwrap();
        let n: Option<u64> = conn.get("start-up:counter").unwrap();
        let _: () = conn.set("start-up:counter", n.unwrap_or(0) + 1).unwrap();
        guard.unlock().unwrap();
    }
}

#[test]
fn reset_owned_by_at_start_up_never_breaks_exclusion() {
    use redis::Commands;
    let server = RedisServer::start();
    let mut conn = server.connection();
    // A crashed predecessor of worker-0 left its lock behind, without expiry.
    let dead = RedisMutex::builder(server.pool(), "start-up")
        .owner_id("worker-0")
        .build()
        .unwrap();
    std::mem::forget(dead.lock().unwrap());
    for run in 0..5 {
        let _: () = conn.del("start-up:counter").unwrap();
        // Three workers start at once, each freeing only what its own id held.
        let workers: Vec<_> = (0..3)
            .map(|i| {
                spawn_child(
                    module_path!(),
                    "starting_worker",
                    &[
                        ("REDIS_URL", server.url()),
                        ("OWNER", format!("worker-{i}")),
                    ],
                )
            })
            .collect();
        for worker in workers {
            worker.finish(HANG * 3);
        }
        let counter: u64 = conn.get("start-up:counter").unwrap();
        assert_eq!(counter, 300, "run {run}: exclusion broke at start-up");
    }
}
