//! A Redis that answers with errors: out of memory, a wrong password, scripts disabled or
//! forbidden, a lock key of another type. Each gives an `Error` that says what is wrong,
//! nothing panics, and other locks are not affected.

use std::time::{Duration, Instant};

use crate::support::{HANG, RedisServer};
use redis::Commands;
use redis_mutex::{Error, Pool, RedisMutex, TryLockError, reset_all};

/// Every call a client makes on `mutex` to take it (and, with `pool`, the operator tools),
/// each expected to fail with a message containing one of `expected` (case-insensitive).
fn assert_every_call_fails(mutex: &RedisMutex, pool: Option<&Pool>, expected: &[&str]) {
    let says = |what: &str, text: String| {
        println!("{what}: {text}");
        let lower = text.to_lowercase();
        assert!(
            expected.iter().any(|e| lower.contains(&e.to_lowercase())),
            "{what}: the error does not say {expected:?}: {text}"
        );
    };
    let started = Instant::now();
    says("lock", mutex.lock().unwrap_err().to_string());
    match mutex.try_lock() {
        Err(TryLockError::Error(e)) => says("try_lock", e.to_string()),
        other => panic!("try_lock: expected an error, got {other:?}"),
    }
    match mutex.try_lock_for(Duration::from_millis(300)) {
        Err(TryLockError::Error(e)) => says("try_lock_for", e.to_string()),
        other => panic!("try_lock_for: expected an error, got {other:?}"),
    }
    if let Some(pool) = pool {
        says("reset", mutex.reset().unwrap_err().to_string());
        says("reset_all", reset_all(pool).unwrap_err().to_string());
    }
    assert!(
        started.elapsed() < HANG,
        "the calls took {:?}",
        started.elapsed()
    );
}

/// An error's message, for a result that must be one.
fn message<T: std::fmt::Debug>(result: Result<T, Error>) -> String {
    result.expect_err("expected an error").to_string()
}

#[test]
fn a_server_out_of_memory_refuses_locks_with_an_oom_error_and_keeps_held_ones() {
    let server = RedisServer::start_with(&["--maxmemory-policy", "noeviction"]);
    let mut conn = server.connection();
    let pool = server.pool();
    let other = RedisMutex::builder(pool.clone(), "other")
        .expire(Duration::from_secs(60))
        .build()
        .unwrap();
    let other_guard = other.lock().unwrap();
    let held = RedisMutex::builder(pool.clone(), "held")
        .expire(Duration::from_secs(60))
        .build()
        .unwrap();
    let held_guard = held.lock().unwrap();

    // A megabyte of data, then a limit below what is used: every write is refused.
    let value = vec![b'x'; 64 * 1024];
    for i in 0..16 {
        let _: () = conn.set(format!("filler:{i}"), &value[..]).unwrap();
    }
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("512kb")
        .query(&mut conn)
        .unwrap();
    let refused = conn.set::<_, _, ()>("probe", 1).unwrap_err();
    assert!(
        refused.to_string().contains("OOM"),
        "the server is out of memory: {refused}"
    );

    // Taking a lock is a write that needs memory, and is refused.
    let mutex = RedisMutex::new(pool.clone(), "during-oom").unwrap();
    assert_every_call_fails(&mutex, None, &["OOM", "maxmemory"]);
    // Keeping and releasing one needs no new memory, and must keep working: a full Redis
    // must not pin every lock until it expires.
    held_guard.extend(Duration::from_secs(90)).unwrap();
    let pttl: i64 = conn.pttl("lock:held").unwrap();
    assert!(pttl > 80_000, "extended under OOM: PTTL {pttl}");
    assert!(held.is_locked().unwrap());
    held_guard.unlock().unwrap();
    assert!(!held.is_locked().unwrap());
    assert_eq!(
        other.get_owner_id().unwrap().as_deref(),
        Some(other.owner_id())
    );

    // Memory back: everything works again, and the other lock was never touched.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .query(&mut conn)
        .unwrap();
    drop(mutex.lock().unwrap());
    let pttl: i64 = conn.pttl("lock:other").unwrap();
    assert!(pttl > 50_000, "the other lock's lease: {pttl} ms");
    other_guard.unlock().unwrap();
}

#[test]
fn a_wrong_or_missing_password_is_an_error_that_says_so() {
    let server = RedisServer::start_with(&["--requirepass", "right-password"]);
    let right = server.pool_with(Pool::builder().password("right-password"));
    let other = RedisMutex::new(right, "other").unwrap();
    let other_guard = other.lock().unwrap();

    // A pool that connects when built is refused there, and says so.
    let refused = Pool::builder()
        .password("wrong-password")
        .build(&server.url())
        .unwrap_err();
    assert!(
        matches!(refused, Error::AuthFailed { .. }),
        "a wrong password at build: {refused:?}"
    );

    // Built without connecting, every call is refused.
    let wrong = server.pool_with(
        Pool::builder()
            .password("wrong-password")
            .connect_lazy(true),
    );
    let mutex = RedisMutex::new(wrong.clone(), "other").unwrap();
    assert_every_call_fails(&mutex, Some(&wrong), &["WRONGPASS", "password"]);
    // Its own case, told at once, even by the first call of a new pool: not a checkout
    // that waits out a timeout and then reports one.
    let fresh = server.pool_with(
        Pool::builder()
            .password("wrong-password")
            .connect_lazy(true),
    );
    let mutex = RedisMutex::new(fresh, "other").unwrap();
    let started = Instant::now();
    let err = mutex.lock().unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, Error::AuthFailed { .. }) && !err.is_timeout(),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&server.port().to_string()),
        "{err}"
    );
    assert!(took < Duration::from_secs(1), "refused after {took:?}");

    let missing = server.pool_with(Pool::builder().connect_lazy(true));
    let mutex = RedisMutex::new(missing.clone(), "other").unwrap();
    assert_every_call_fails(
        &mutex,
        Some(&missing),
        &["wants a password and none was given"],
    );

    assert_eq!(
        other.get_owner_id().unwrap().as_deref(),
        Some(other.owner_id())
    );
    other_guard.unlock().unwrap();
}

#[test]
fn scripts_renamed_away_or_forbidden_give_errors_that_name_the_command() {
    let cases: [(&[&str], &[&str]); 3] = [
        // EVALSHA gone.
        (
            &["--rename-command", "EVALSHA", ""],
            &["unknown command", "evalsha"],
        ),
        // EVALSHA there, but no way to load a script into the cache.
        (
            &[
                "--rename-command",
                "SCRIPT",
                "",
                "--rename-command",
                "EVAL",
                "",
            ],
            &["unknown command"],
        ),
        // An ACL that forbids EVALSHA to the default user.
        (
            &[
                "--user", "default", "on", "nopass", "~*", "&*", "+@all", "-evalsha",
            ],
            &["NOPERM", "evalsha"],
        ),
    ];
    for (args, expected) in cases {
        let server = RedisServer::start_with(args);
        let pool = server.pool();
        let mut conn = server.connection();
        let _: () = conn.set("lock:someone-elses", "a-python-client").unwrap();
        let mutex = RedisMutex::new(pool.clone(), "scriptless").unwrap();
        assert_every_call_fails(&mutex, Some(&pool), expected);
        // Plain reads still work, and nothing was changed.
        assert!(!mutex.is_locked().unwrap(), "{args:?}");
        let owner: String = conn.get("lock:someone-elses").unwrap();
        assert_eq!(owner, "a-python-client", "{args:?}");
    }
}

#[test]
fn a_lock_key_of_another_type_is_an_error_and_other_locks_are_untouched() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = server.pool();
    let _: () = conn.hset("lock:hashed", "field", "value").unwrap();
    let neighbour = RedisMutex::builder(pool.clone(), "neighbour")
        .expire(Duration::from_secs(60))
        .build()
        .unwrap();
    let neighbour_guard = neighbour.lock().unwrap();

    let mutex = RedisMutex::new(pool.clone(), "hashed").unwrap();
    let wrong_type = |what: &str, e: Error| {
        assert!(matches!(e, Error::WrongType { .. }), "{what}: {e}");
        assert!(
            e.to_string().contains("another type than a lock"),
            "{what}: {e}"
        );
    };
    wrong_type("lock", mutex.lock().unwrap_err());
    match mutex.try_lock() {
        Err(TryLockError::Error(e)) => wrong_type("try_lock", e),
        other => panic!("try_lock: {other:?}"),
    }
    let started = Instant::now();
    match mutex.try_lock_for(Duration::from_secs(5)) {
        Err(TryLockError::Error(e)) => wrong_type("try_lock_for", e),
        other => panic!("try_lock_for: {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "try_lock_for waited for a hash"
    );
    wrong_type("reset", mutex.reset().unwrap_err());
    wrong_type("get_owner_id", mutex.get_owner_id().unwrap_err());
    wrong_type("is_locked", mutex.is_locked().unwrap_err());
    // reset_all skips it, and deletes the real lock.
    assert_eq!(reset_all(&pool).unwrap(), 1);
    let kind: String = redis::cmd("TYPE")
        .arg("lock:hashed")
        .query(&mut conn)
        .unwrap();
    assert_eq!(kind, "hash", "the key was left alone");
    assert!(matches!(
        neighbour_guard.unlock(),
        Err(Error::NotAcquired { .. })
    ));

    // A held lock whose key is replaced behind its back by another type.
    let guard = neighbour.lock().unwrap();
    let _: () = conn.del("lock:neighbour").unwrap();
    let _: () = conn.rpush("lock:neighbour", "x").unwrap();
    // Either the server's WRONGTYPE or ours: the key is not a lock, or not ours.
    let says_so = |text: &str| {
        [
            "WRONGTYPE",
            "another type than a lock",
            "not held by this owner",
            "was lost",
        ]
        .iter()
        .any(|s| text.contains(s))
    };
    let extended = message(guard.extend(Duration::from_secs(30)));
    assert!(says_so(&extended), "extend: {extended}");
    let unlocked = message(guard.unlock());
    assert!(says_so(&unlocked), "unlock: {unlocked}");
    let kind: String = redis::cmd("TYPE")
        .arg("lock:neighbour")
        .query(&mut conn)
        .unwrap();
    assert_eq!(kind, "list", "the key was left alone");
}

#[test]
fn a_key_of_another_type_does_not_stop_the_renewal_of_other_locks() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    // One connection: every lease below is renewed in the same batch.
    let pool = server.pool_with(Pool::builder().max_size(2));
    let expire = Duration::from_millis(600);
    let renewed = |name: &str| {
        RedisMutex::builder(pool.clone(), name)
            .expire(expire)
            .auto_renewal(true)
            .build()
            .unwrap()
    };
    let (tampered, kept) = (renewed("tampered"), renewed("kept"));
    let locked_at = Instant::now();
    let kept_guard = kept.lock().unwrap();
    let tampered_guard = tampered.lock().unwrap();
    // Someone else's program takes over the key with a list.
    let _: () = conn.del("lock:tampered").unwrap();
    let _: () = conn.rpush("lock:tampered", "x").unwrap();

    // Several renewal intervals, past the lease: a renewal failing for all would lose it.
    let lost = crate::support::eventually(expire * 3, || tampered_guard.is_lost());
    assert!(lost, "the tampered lock's guard is marked lost");
    // Hold on past two leases: a lease whose renewals fail would be lost by then.
    std::thread::sleep((locked_at + expire * 2).saturating_duration_since(Instant::now()));
    assert!(
        !kept_guard.is_lost(),
        "the other lock of the same renewal batch was lost with it"
    );
    let owner: Option<String> = conn.get("lock:kept").unwrap();
    assert_eq!(
        owner.as_deref(),
        Some(kept.owner_id()),
        "the other lock is still held"
    );
    kept_guard.unlock().unwrap();
}
