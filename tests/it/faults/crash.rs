//! A holder process killed with SIGKILL in the middle of its critical section, with waiters
//! in several other processes.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::support::{
    HANG, RedisServer, blocked_clients, child_env, connect, eventually, pool_at, spawn, spawn_child,
};
use redis::Commands;
use redis_mutex::{RedisMutex, TryLockError};

/// The holder's lease.
const EXPIRE: Duration = Duration::from_millis(1500);

/// How late after the lease ran out a waiter may get the lock on a loaded 2-core CI
/// machine: a round trip or two, plus scheduling.
const ROUND_TRIPS: Duration = Duration::from_millis(250);

const PROCESSES: usize = 4;
const WAITERS_PER_PROCESS: usize = 2;

/// The server's clock, in microseconds: one clock for the parent and every child.
fn server_micros(conn: &mut redis::Connection) -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query(conn).unwrap();
    secs * 1_000_000 + micros
}

/// Child side of [`exactly_one_waiter_gets_a_killed_holders_lock_right_after_it_expires`]:
/// takes the lock and works under it until killed.
#[test]
#[ignore = "run as a child process by exactly_one_waiter_gets_a_killed_holders_lock_right_after_it_expires"]
fn child_holds_the_lock_until_killed() {
    let mutex = RedisMutex::builder(pool_at(&child_env("REDIS_URL")), "crash")
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
/// two waiters, each with a mutex and a pool of its own (so each waits in Redis: mutexes of
/// one pool and name wait for each other in the process). The one that gets the lock says
/// when, on the server's clock, and keeps it until the process ends.
#[test]
#[ignore = "run as a child process by exactly_one_waiter_gets_a_killed_holders_lock_right_after_it_expires"]
fn child_waits_for_the_lock() {
    let url = child_env("REDIS_URL");
    let process = child_env("PROCESS");
    let wait = Duration::from_millis(child_env("WAIT_MS").parse().unwrap());
    let waiters: Vec<_> = (0..WAITERS_PER_PROCESS)
        .map(|i| {
            let mutex = Arc::new(
                RedisMutex::builder(pool_at(&url), "crash")
                    .owner_id(format!("waiter-{process}-{i}"))
                    .expire(Duration::from_secs(60))
                    .build()
                    .unwrap(),
            );
            let mut clock = connect(&url);
            spawn(&format!("waiter-{i}"), move || {
                match mutex.try_lock_for(wait) {
                    Ok(guard) => {
                        let at = server_micros(&mut clock);
                        println!("@acquired {} {at}", mutex.owner_id());
                        // Hold it: nobody else may get it while this test runs.
                        std::mem::forget(guard);
                    }
                    Err(TryLockError::WouldBlock) => {
                        println!("@timed-out {}", mutex.owner_id());
                    }
                    Err(e) => panic!("waiter {}: {e}", mutex.owner_id()),
                }
            })
        })
        .collect();
    for waiter in waiters {
        waiter.join(wait + HANG);
    }
}

#[test]
fn exactly_one_waiter_gets_a_killed_holders_lock_right_after_it_expires() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let mut holder = spawn_child(
        module_path!(),
        "child_holds_the_lock_until_killed",
        &[("REDIS_URL", server.url())],
    );
    holder.lines().expect("@locked", HANG);

    // Every waiter waits well past the lease, so that all of them see the lock free up.
    let wait = EXPIRE + Duration::from_secs(3);
    let waiters: Vec<_> = (0..PROCESSES)
        .map(|p| {
            spawn_child(
                module_path!(),
                "child_waits_for_the_lock",
                &[
                    ("REDIS_URL", server.url()),
                    ("PROCESS", p.to_string()),
                    ("WAIT_MS", wait.as_millis().to_string()),
                ],
            )
        })
        .collect();
    let all = (PROCESSES * WAITERS_PER_PROCESS) as u64;
    assert!(
        eventually(HANG, || blocked_clients(&mut conn) == all),
        "the waiters never all blocked"
    );

    // Kill the holder mid-section; the server's clock now decides when the lock is free.
    let (now, pttl): ((u64, u64), i64) = redis::pipe()
        .atomic()
        .cmd("TIME")
        .pttl("lock:crash")
        .query(&mut conn)
        .unwrap();
    assert!(pttl > 0, "the holder's lock has a lease: PTTL {pttl}");
    let expires_at = now.0 * 1_000_000 + now.1 + pttl as u64 * 1000;
    holder.kill();

    // Each waiter says whether it got the lock (and when, on the server's clock) or timed
    // out: every one of them but one times out.
    let mut acquired = Vec::new();
    for waiter in waiters {
        let stdout = waiter.finish(wait + HANG);
        let reports = stdout.matches("@acquired ").count() + stdout.matches("@timed-out ").count();
        assert_eq!(reports, WAITERS_PER_PROCESS, "a child's report: {stdout}");
        acquired.extend(stdout.split("@acquired ").skip(1).map(|rest| {
            let line = rest.lines().next().unwrap();
            let (owner, at) = line.split_once(' ').unwrap();
            (owner.to_owned(), at.trim().parse::<u64>().unwrap())
        }));
    }
    assert_eq!(
        acquired.len(),
        1,
        "exactly one waiter gets the lock, nobody after or beside it: {acquired:?}"
    );
    let (winner, at) = acquired.pop().unwrap();
    // Read on the server's clock right after the grant: no earlier than the lease's end
    // (Redis keeps it to the millisecond), and no later than a round trip or two after it.
    assert!(
        at + 1_000 >= expires_at,
        "{winner} got the lock {} µs before the killed holder's lease ran out",
        expires_at - at
    );
    let late = Duration::from_micros(at.saturating_sub(expires_at));
    assert!(
        late <= ROUND_TRIPS,
        "{winner} got the lock {late:?} after the lease ran out"
    );
    println!("{winner} got the lock {late:?} after the killed holder's lease ran out");
    let owner: String = conn.get("lock:crash").unwrap();
    assert_eq!(owner, winner, "Redis agrees on the winner");
}
