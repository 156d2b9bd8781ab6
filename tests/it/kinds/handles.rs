//! Lock handles: a held lock handed from one process to another (`into_handle`, `resume`),
//! held there through several expiries with auto-renewal while nobody else gets it; a stale
//! handle refused whatever made it stale; two processes resuming one handle never both told
//! they hold it; the same for read and write leases of a `RedisRwLock`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::history::{self, Claim, Log, now};
use crate::support::{HANG, RedisServer, child_env, eventually, spawn, spawn_child};
use redis_mutex::{Error, HandleKind, LockHandle, Pool, RedisMutex, RedisRwLock, TryLockError};

/// The lease of the hand-off tests: the receiver holds the lock three times as long.
const LEASE: Duration = Duration::from_secs(1);

/// The lock kinds a handle can carry, as the child processes name them.
const KINDS: [&str; 3] = ["mutex", "fair", "write"];

fn mutex(pool: Pool, name: &str, fair: bool) -> RedisMutex {
    RedisMutex::builder(pool, name)
        .fair(fair)
        .expire(LEASE)
        .auto_renewal(true)
        .build()
        .unwrap()
}

fn rwlock(pool: Pool, path: &str) -> RedisRwLock {
    RedisRwLock::builder(pool, path)
        .expire(LEASE)
        .build()
        .unwrap()
}

/// The giver: takes the lock with a 1 s lease and auto-renewal, prints its handle, and
/// exits without releasing it.
#[test]
#[ignore = "a child process of a_lock_handed_to_another_process_is_held_there_through_three_expiries"]
fn handoff_giver() {
    let pool = crate::support::pool_at(&child_env("REDIS_URL"));
    let name = child_env("NAME");
    let handle = match child_env("KIND").as_str() {
        "write" => rwlock(pool, &name).write().unwrap().into_handle(),
        kind => mutex(pool, &name, kind == "fair")
            .lock()
            .unwrap()
            .into_handle(),
    };
    println!("handle: {handle}");
}

/// The receiver: resumes the handle with auto-renewal, holds the lock for three leases,
/// checking it still holds it, and releases it, printing when (on the shared monotonic
/// clock).
#[test]
#[ignore = "a child process of a_lock_handed_to_another_process_is_held_there_through_three_expiries"]
fn handoff_receiver() {
    let pool = crate::support::pool_at(&child_env("REDIS_URL"));
    let handle: LockHandle = child_env("HANDLE").parse().unwrap();
    let hold = |ensure_held: &dyn Fn() -> redis_mutex::Result<()>| {
        let until = Instant::now() + LEASE * 3;
        while Instant::now() < until {
            ensure_held().unwrap();
            thread::sleep(LEASE / 4);
        }
        println!("releasing at {}", now());
    };
    match child_env("KIND").as_str() {
        "write" => {
            let lock = rwlock(pool, handle.name());
            let guard = lock.resume_write(&handle).unwrap();
            println!("resumed with token {}", guard.fencing_token());
            hold(&|| guard.ensure_held());
            guard.unlock().unwrap();
        }
        kind => {
            let lock = mutex(pool, handle.name(), kind == "fair");
            let guard = lock.resume(&handle).unwrap();
            println!("resumed with token {}", guard.fencing_token());
            hold(&|| guard.ensure_held());
            guard.unlock().unwrap();
        }
    }
    println!("released");
}

/// A third party's attempt: `Ok(true)` when it got the lock (and let it go at once).
fn third_party_attempt(pool: &Pool, kind: &str, name: &str) -> bool {
    match kind {
        "write" => match rwlock(pool.clone(), name).try_write() {
            Ok(guard) => guard.unlock().is_ok(),
            Err(TryLockError::WouldBlock) => false,
            Err(e) => panic!("a third party's try_write: {e}"),
        },
        kind => match mutex(pool.clone(), name, kind == "fair").try_lock() {
            Ok(guard) => guard.unlock().is_ok(),
            Err(TryLockError::WouldBlock) => false,
            Err(e) => panic!("a third party's try_lock: {e}"),
        },
    }
}

#[test]
fn a_lock_handed_to_another_process_is_held_there_through_three_expiries() {
    let server = RedisServer::start();
    for kind in KINDS {
        let name = format!("handoff-{kind}");
        let env = vec![
            ("REDIS_URL", server.url()),
            ("KIND", kind.to_owned()),
            ("NAME", name.clone()),
        ];
        let mut giver = spawn_child(module_path!(), "handoff_giver", &env);
        let giver_lines = giver.lines();
        let handle = giver_lines.expect("handle: ", HANG);
        giver.finish_with(&giver_lines, HANG);
        let parsed: LockHandle = handle.parse().unwrap();
        assert_eq!(parsed.name(), name);

        // A waiter in another process, from before the hand-over.
        let waiter_pool = server.pool();
        let (waiter_kind, waiter_name) = (kind.to_owned(), name.clone());
        let waiter = spawn("waiter", move || match waiter_kind.as_str() {
            "write" => {
                let lock = rwlock(waiter_pool, &waiter_name);
                let guard = lock.try_write_for(HANG * 2).unwrap();
                let at = now();
                guard.unlock().unwrap();
                at
            }
            kind => {
                let lock = mutex(waiter_pool, &waiter_name, kind == "fair");
                let guard = lock.try_lock_for(HANG * 2).unwrap();
                let at = now();
                guard.unlock().unwrap();
                at
            }
        });

        let mut env = env;
        env.push(("HANDLE", handle));
        let mut receiver = spawn_child(module_path!(), "handoff_receiver", &env);
        let lines = receiver.lines();
        let resumed = lines.expect("resumed with token ", HANG);
        if let Some(token) = parsed.fencing_token() {
            let resumed: u64 = resumed.trim().parse().unwrap();
            assert!(resumed > token, "{kind}: the resumed grant has a new token");
        }

        // A third process tries all along; none of its attempts that ended before the
        // receiver began to release may get the lock.
        let stop = Arc::new(AtomicBool::new(false));
        let third_pool = server.pool();
        let (third_kind, third_name, third_stop) = (kind.to_owned(), name.clone(), stop.clone());
        let third = spawn("third party", move || {
            let mut attempts = Vec::new();
            for _ in 0..1000 {
                if third_stop.load(Ordering::Acquire) {
                    break;
                }
                let got = third_party_attempt(&third_pool, &third_kind, &third_name);
                attempts.push((now(), got));
                thread::sleep(Duration::from_millis(50));
            }
            attempts
        });
        let releasing: u64 = lines.expect("releasing at ", HANG).trim().parse().unwrap();
        stop.store(true, Ordering::Release);
        lines.expect("released", HANG);
        receiver.finish_with(&lines, HANG);
        let attempts = third.join(HANG);
        let before: Vec<_> = attempts.iter().filter(|(at, _)| *at < releasing).collect();
        assert!(
            before.len() >= 20,
            "{kind}: {} attempts while the receiver held the lock",
            before.len()
        );
        assert!(
            before.iter().all(|(_, got)| !got),
            "{kind}: a third party got the lock while the receiver held it"
        );
        let waiter_took = waiter.join(HANG * 3);
        assert!(
            waiter_took >= releasing,
            "{kind}: the waiter got the lock before the receiver released it"
        );
    }
}

#[test]
fn a_stale_handle_is_refused() {
    let server = RedisServer::start();
    for fair in [false, true] {
        let name = format!("stale-{fair}");
        let (ours, theirs) = (server.pool(), server.pool());
        let lost = |e: Error, what: &str| {
            assert!(matches!(e, Error::HandleStale { .. }), "{what}: {e:?}");
        };
        let short = RedisMutex::builder(ours.clone(), name.as_str())
            .fair(fair)
            .expire(Duration::from_millis(200))
            .auto_renewal(false)
            .build()
            .unwrap();
        let other = mutex(theirs.clone(), &name, fair);

        // Expired, and taken by someone else.
        let handle = short.lock().unwrap().into_handle();
        let taken = other.try_lock_for(HANG).unwrap();
        lost(
            other_process(&server, &name, fair)
                .resume(&handle)
                .unwrap_err(),
            "expired and taken",
        );
        drop(taken);

        // Reset.
        let handle = short.lock().unwrap().into_handle();
        assert!(other.reset().unwrap());
        lost(
            other_process(&server, &name, fair)
                .resume(&handle)
                .unwrap_err(),
            "reset",
        );

        // Released, and granted again to the same owner id.
        let keeper = RedisMutex::builder(ours.clone(), name.as_str())
            .fair(fair)
            .owner_id("same-owner")
            .build()
            .unwrap();
        let guard = keeper.lock().unwrap();
        let handle = guard.handle();
        guard.unlock().unwrap();
        let again = keeper.lock().unwrap();
        lost(
            other_process(&server, &name, fair)
                .resume(&handle)
                .unwrap_err(),
            "granted again to the same owner id",
        );
        assert!(
            again.is_held().unwrap(),
            "a refused resume touched the grant"
        );
        drop(again);

        // Resumed already: the second resume is refused, the first guard holds on, and the
        // guard the handle came from is no longer told it holds the lock.
        let original = keeper.lock().unwrap();
        let handle = original.handle();
        let resumer = other_process(&server, &name, fair);
        let resumed = resumer.resume(&handle).unwrap();
        assert_eq!(
            resumer.get_owner_id().unwrap().as_deref(),
            Some("same-owner")
        );
        assert!(resumed.fencing_token() > original.fencing_token());
        lost(
            other_process(&server, &name, fair)
                .resume(&handle)
                .unwrap_err(),
            "resumed already",
        );
        assert!(original.ensure_held().is_err(), "the original still holds");
        assert!(original.unlock().is_err());
        resumed.ensure_held().unwrap();
        assert_eq!(resumed.handle().holder(), "same-owner");
        resumed.unlock().unwrap();
        assert!(!other.is_locked().unwrap());

        // Not this lock's handle.
        let guard = keeper.lock().unwrap();
        let wrong_name = mutex(theirs.clone(), "another-name", fair);
        match wrong_name.resume(&guard.handle()) {
            Err(Error::InvalidOptions {
                field: "handle",
                reason,
            }) => {
                assert!(reason.contains("another-name"), "{reason}");
            }
            other => panic!("another name's handle: {other:?}"),
        }
        let as_write = format!("{}", guard.handle()).replacen(":mutex:", ":write:", 1);
        let as_write: LockHandle = as_write.parse().unwrap();
        assert_eq!(as_write.kind(), HandleKind::Write);
        assert!(matches!(
            other.resume(&as_write),
            Err(Error::InvalidOptions { .. })
        ));
        assert!(guard.is_held().unwrap());
    }
}

/// A mutex of `name` in another "process": on a pool of its own, so with its own local
/// queue.
fn other_process(server: &RedisServer, name: &str, fair: bool) -> RedisMutex {
    mutex(server.pool(), name, fair)
}

/// A lock without expiry keeps its grant marker a week; a handle resumed after that (the
/// marker gone) still resumes the grant its owner id holds.
#[test]
fn a_handle_of_a_lock_without_expiry_outlives_its_marker() {
    let server = RedisServer::start();
    let forever = RedisMutex::new(server.pool(), "forever").unwrap();
    let handle = forever.lock().unwrap().into_handle();
    let _: () = redis::cmd("DEL")
        .arg("lock-grant:forever")
        .query(&mut server.connection())
        .unwrap();
    let elsewhere = RedisMutex::new(server.pool(), "forever").unwrap();
    let resumed = elsewhere.resume(&handle).unwrap();
    assert!(matches!(
        RedisMutex::new(server.pool(), "forever")
            .unwrap()
            .resume(&handle),
        Err(Error::HandleStale { .. })
    ));
    resumed.unlock().unwrap();
    assert!(!elsewhere.is_locked().unwrap());
}

#[test]
fn a_resumed_lease_counts_from_what_the_server_has_left() {
    let server = RedisServer::start();
    let lock = RedisMutex::builder(server.pool(), "clock")
        .expire(Duration::from_secs(2))
        .auto_renewal(false)
        .build()
        .unwrap();
    let guard = lock.lock().unwrap();
    let granted = Instant::now();
    assert!(eventually(HANG, || guard
        .valid_for()
        .is_some_and(|left| left < Duration::from_millis(1200))));
    let handle = guard.into_handle();
    let resumer = RedisMutex::builder(server.pool(), "clock")
        .expire(Duration::from_secs(2))
        .auto_renewal(false)
        .build()
        .unwrap();
    let resumed = resumer.resume(&handle).unwrap();
    let left = resumed.valid_for().unwrap();
    // What Redis had left of the 2 s lease granted before `granted`, at most.
    let most = Duration::from_secs(2).saturating_sub(granted.elapsed());
    assert!(
        left <= most && most < Duration::from_millis(1300),
        "the resumed lease counts from the original grant's end, not from now: {left:?}"
    );
    // With auto-renewal, a resumed lease near its end is renewed at once.
    let renewing = RedisMutex::builder(server.pool(), "clock")
        .expire(Duration::from_secs(2))
        .auto_renewal(true)
        .build()
        .unwrap();
    let resumed = renewing.resume(&resumed.into_handle()).unwrap();
    assert!(eventually(HANG, || resumed
        .valid_for()
        .is_some_and(|left| left > Duration::from_millis(1300))));
    thread::sleep(Duration::from_millis(1500));
    resumed.ensure_held().unwrap();
    resumed.unlock().unwrap();
}

/// The original holder and two other "processes" (pools) race to resume one handle, round
/// after round, each logging what it was told; the history checker finds no two of them
/// told they held the lock at overlapping times.
#[test]
fn two_processes_resuming_one_handle_never_both_hold_it() {
    const ROUNDS: usize = 20;
    let server = RedisServer::start();
    let dir = std::env::temp_dir().join(format!("redis-mutex-handles-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("history.log");
    std::fs::remove_file(&path).ok();
    let log = Log::open(&path);
    let claim = Claim::Exclusive;
    for fair in [false, true] {
        for round in 0..ROUNDS {
            let name = format!("race-{fair}");
            let holder = mutex(server.pool(), &name, fair);
            let (asked, original) = log.call("lock", None, || holder.lock());
            let original = original.unwrap();
            let id = format!("{fair}-{round}-original");
            let token = original.fencing_token();
            log.grant(&id, &name, (&claim, token), "original", asked);
            let handle = original.handle();
            let racers: Vec<_> = (0..2)
                .map(|r| {
                    let (pool, handle, log, claim, name) = (
                        server.pool(),
                        handle.clone(),
                        log.clone(),
                        claim.clone(),
                        name.clone(),
                    );
                    spawn("racer", move || {
                        let lock = mutex(pool, &name, fair);
                        let (asked, resumed) = log.call("resume", None, || lock.resume(&handle));
                        let Ok(guard) = resumed else {
                            return false;
                        };
                        let id = format!("{fair}-{round}-racer-{r}");
                        let token = guard.fencing_token();
                        log.grant(&id, &name, (&claim, token), "racer", asked);
                        for _ in 0..3 {
                            let asked = now();
                            if guard.ensure_held().is_ok() {
                                log.held(&id, asked);
                            }
                        }
                        let asked = now();
                        if guard.unlock().is_ok() {
                            log.held(&id, asked);
                        }
                        true
                    })
                })
                .collect();
            // The original holder goes on asking meanwhile.
            for _ in 0..5 {
                let asked = now();
                if original.ensure_held().is_ok() {
                    log.held(&id, asked);
                }
            }
            let won: usize = racers.into_iter().map(|r| r.join(HANG) as usize).sum();
            assert!(won <= 1, "round {round}: {won} racers resumed one handle");
            drop(original);
        }
    }
    let checked = history::check(&[path], &[]);
    println!("{}", checked.summary());
    assert!(
        checked.double_grants.is_empty(),
        "holders told they held one lock at once: {:?}",
        checked.double_grants
    );
    assert!(checked.grants > ROUNDS * 2, "{}", checked.summary());
}

#[test]
fn read_and_write_leases_are_resumed_once() {
    let server = RedisServer::start();
    let tree = RedisRwLock::new(server.pool(), "tree/leaf").unwrap();
    let elsewhere = || RedisRwLock::new(server.pool(), "tree/leaf").unwrap();

    let reading = tree.read().unwrap();
    let handle = reading.into_handle();
    assert_eq!(handle.kind(), HandleKind::Read);
    assert_eq!(handle.fencing_token(), None);
    let other = elsewhere();
    let resumed = other.resume_read(&handle).unwrap();
    assert!(matches!(
        elsewhere().resume_read(&handle),
        Err(Error::HandleStale { .. })
    ));
    // The resumed read lease still keeps writers out of the path and its ancestors.
    let root = RedisRwLock::new(server.pool(), "tree").unwrap();
    assert!(matches!(root.try_write(), Err(TryLockError::WouldBlock)));
    resumed.unlock().unwrap();
    root.try_write().unwrap().unlock().unwrap();

    let writing = tree.write().unwrap();
    let token = writing.fencing_token();
    let handle = writing.into_handle();
    assert_eq!(handle.fencing_token(), Some(token));
    assert!(matches!(
        elsewhere().resume_read(&handle),
        Err(Error::InvalidOptions { .. })
    ));
    let other = elsewhere();
    let resumed = other.resume_write(&handle).unwrap();
    assert!(resumed.fencing_token() > token);
    assert!(matches!(
        elsewhere().resume_write(&handle),
        Err(Error::HandleStale { .. })
    ));
    assert!(matches!(
        RedisRwLock::new(server.pool(), "tree/leaf/below")
            .unwrap()
            .try_read(),
        Err(TryLockError::WouldBlock)
    ));
    resumed.unlock().unwrap();
    tree.try_write().unwrap().unlock().unwrap();
}
