//! A holder process killed with SIGKILL in the middle of its critical section, with waiters
//! in several other processes.

mod support;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use redis::Commands;
use redis_mutex::{RedisMutex, TryLockError};
use support::{Lines, RedisServer, child_env, eventually, finish_child, spawn_child};

const HANG: Duration = Duration::from_secs(20);

/// The holder's lease.
const EXPIRE: Duration = Duration::from_millis(1500);

/// How late after the lease ran out a waiter may get the lock on a loaded 2-core CI
/// machine: a round trip or two, plus scheduling.
const ROUND_TRIPS: Duration = Duration::from_millis(250);

const PROCESSES: usize = 4;
const WAITERS_PER_PROCESS: usize = 2;

/// Child side of [`exactly_one_waiter_gets_a_killed_holders_lock_right_after_it_expires`]:
/// takes the lock and works under it until killed.
#[test]
#[ignore = "run as a child process by exactly_one_waiter_gets_a_killed_holders_lock_right_after_it_expires"]
fn child_holds_the_lock_until_killed() {
    let mutex = RedisMutex::builder(support::server::pool_at(&child_env("REDIS_URL")), "crash")
        .owner_id("the-holder")
        .expire(EXPIRE)
        .build()
        .unwrap();
    let guard = mutex.lock().unwrap();
    println!("@locked");
    // The critical section: work, step by step, until SIGKILL (bounded all the same).
    for _ in 0..600 {
        guard.ensure_held().ok();
        thread::sleep(Duration::from_millis(100));
    }
}

/// Child side of [`exactly_one_waiter_gets_a_killed_holders_lock_right_after_it_expires`]:
/// two waiters, each with a mutex of its own (so each waits in Redis). The one that gets
/// the lock keeps it until the process ends.
#[test]
#[ignore = "run as a child process by exactly_one_waiter_gets_a_killed_holders_lock_right_after_it_expires"]
fn child_waits_for_the_lock() {
    let pool = support::server::pool_at(&child_env("REDIS_URL"));
    let process = child_env("PROCESS");
    let wait: u64 = child_env("WAIT_MS").parse().unwrap();
    let guards: Vec<_> = (0..WAITERS_PER_PROCESS)
        .map(|i| {
            let mutex = Arc::new(
                RedisMutex::builder(pool.clone(), "crash")
                    .owner_id(format!("waiter-{process}-{i}"))
                    .expire(Duration::from_secs(60))
                    .build()
                    .unwrap(),
            );
            thread::spawn(
                move || match mutex.try_lock_for(Duration::from_millis(wait)) {
                    Ok(guard) => {
                        println!("@acquired {}", mutex.owner_id());
                        // Hold it: nobody else may get it while this test runs.
                        std::mem::forget(guard);
                        true
                    }
                    Err(TryLockError::WouldBlock) => {
                        println!("@timed-out {}", mutex.owner_id());
                        false
                    }
                    Err(e) => panic!("waiter {}: {e}", mutex.owner_id()),
                },
            )
        })
        .collect();
    for guard in guards {
        guard.join().unwrap();
    }
}

#[test]
fn exactly_one_waiter_gets_a_killed_holders_lock_right_after_it_expires() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let mut holder = spawn_child(
        "child_holds_the_lock_until_killed",
        &[("REDIS_URL", server.url())],
    );
    Lines::new(holder.stdout.take().unwrap()).expect("@locked", HANG);

    // Every waiter waits well past the lease, so that all of them see the lock free up.
    let wait = EXPIRE + Duration::from_secs(3);
    let mut waiters: Vec<_> = (0..PROCESSES)
        .map(|p| {
            spawn_child(
                "child_waits_for_the_lock",
                &[
                    ("REDIS_URL", server.url()),
                    ("PROCESS", p.to_string()),
                    ("WAIT_MS", wait.as_millis().to_string()),
                ],
            )
        })
        .collect();
    let lines: Vec<Lines> = waiters
        .iter_mut()
        .map(|w| Lines::new(w.stdout.take().unwrap()))
        .collect();
    let all = (PROCESSES * WAITERS_PER_PROCESS) as u64;
    assert!(
        eventually(HANG, || support::blocked_clients(&mut conn) == all),
        "the waiters never all blocked"
    );

    // Kill the holder mid-section; the server's clock now decides when the lock is free.
    let pttl: i64 = conn.pttl("lock:crash").unwrap();
    let expires_at = Instant::now() + Duration::from_millis(pttl.try_into().unwrap());
    holder.kill().unwrap();
    holder.wait().unwrap();

    // The first line from any waiter process is the winner's.
    let (tx, rx) = std::sync::mpsc::channel();
    for (p, lines) in lines.into_iter().enumerate() {
        let tx = tx.clone();
        thread::spawn(move || {
            while let Some(owner) = lines.find("@acquired ", HANG) {
                tx.send((p, owner, Instant::now())).ok();
            }
        });
    }
    drop(tx);
    let (_, winner, at) = rx.recv_timeout(HANG).expect("a waiter gets the lock");
    assert!(
        at + Duration::from_millis(2) >= expires_at,
        "{winner} got the lock {:?} before the killed holder's lease ran out",
        expires_at - at
    );
    assert!(
        at <= expires_at + ROUND_TRIPS,
        "{winner} got the lock {:?} after the lease ran out",
        at - expires_at
    );
    println!(
        "{winner} got the lock {:?} after the killed holder's lease ran out",
        at.saturating_duration_since(expires_at)
    );
    let owner: String = conn.get("lock:crash").unwrap();
    assert_eq!(owner, winner, "Redis agrees on the winner");

    // Everybody else times out: nobody got in after, or beside, the winner.
    for waiter in waiters {
        finish_child(waiter, HANG);
    }
    let others: Vec<_> = rx.try_iter().map(|(_, owner, _)| owner).collect();
    assert!(
        others.is_empty(),
        "more waiters got the lock: {winner} and {others:?}"
    );
    let owner: String = conn.get("lock:crash").unwrap();
    assert_eq!(owner, winner);
}
