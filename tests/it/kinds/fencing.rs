//! Fencing tokens: strictly increasing across grants, processes, expiry and resets.

use std::time::{Duration, Instant};

use crate::support::{RedisServer, child_env, spawn_child};
use redis::Commands;
use redis_mutex::{RedisMutex, reset_all};

/// How long a child that takes 100 grants may take.
const RUN: Duration = Duration::from_secs(60);

/// Child side of [`tokens_increase_in_grant_order_across_processes`]: prints, per grant,
/// the grant's position (a counter incremented under the lock) and its token.
#[test]
#[ignore = "run as a child process by tokens_increase_in_grant_order_across_processes"]
fn child_reports_tokens() {
    let url = child_env("REDIS_URL");
    let mut conn = crate::support::connect(&url);
    let mutex = RedisMutex::builder(crate::support::pool_at(&url), "fenced")
        .expire(Duration::from_secs(10))
        .build()
        .unwrap();
    for _ in 0..100 {
        let guard = mutex.lock().unwrap();
        let position: u64 = conn.get::<_, Option<u64>>("position").unwrap().unwrap_or(0) + 1;
        let _: () = conn.set("position", position).unwrap();
        println!("@grant {position} {}", guard.fencing_token());
        guard.unlock().unwrap();
    }
}

#[test]
fn tokens_increase_in_grant_order_across_processes() {
    let server = RedisServer::start();
    let children: Vec<_> = (0..3)
        .map(|_| {
            spawn_child(
                module_path!(),
                "child_reports_tokens",
                &[("REDIS_URL", server.url())],
            )
        })
        .collect();
    let mut grants: Vec<(u64, u64)> = Vec::new();
    for child in children {
        let output = child.finish(RUN);
        for line in output.lines() {
            if let Some(at) = line.find("@grant ") {
                let mut fields = line[at + 7..].split_whitespace();
                let position = fields.next().unwrap().parse().unwrap();
                let token = fields.next().unwrap().parse().unwrap();
                grants.push((position, token));
            }
        }
    }
    assert_eq!(grants.len(), 300);
    grants.sort();
    for pair in grants.windows(2) {
        assert_eq!(
            pair[1].0,
            pair[0].0 + 1,
            "grant positions are exact: {pair:?}"
        );
        assert!(
            pair[1].1 > pair[0].1,
            "tokens rise with every grant: {pair:?}"
        );
    }
}

#[test]
fn expiry_reset_and_reset_all_never_lower_the_token() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = server.pool();
    let mutex = RedisMutex::builder(pool.clone(), "fenced")
        .expire(Duration::from_millis(50))
        .build()
        .unwrap();
    // Another process: another pool.
    let other = RedisMutex::new(server.pool(), "fenced").unwrap();

    let expired = mutex.lock().unwrap();
    let first = expired.fencing_token();
    // The lease runs out; someone else gets the lock.
    let after_expiry = other.try_lock_for(Duration::from_secs(10)).unwrap();
    assert!(after_expiry.fencing_token() > first);
    let second = after_expiry.fencing_token();
    drop(expired);

    assert!(other.reset().unwrap());
    drop(after_expiry);
    let after_reset = mutex.lock().unwrap();
    assert!(after_reset.fencing_token() > second);
    let third = after_reset.fencing_token();

    assert_eq!(reset_all(&pool).unwrap(), 1);
    drop(after_reset);
    // The counter lives 100 ms after it started; while it lives, it is where it was.
    let counter: Option<u64> = conn.get("lock-fencing-counter").unwrap();
    assert!(
        counter.is_none_or(|c| c == third),
        "reset_all moved the counter: {counter:?}, last token {third}"
    );
    let after_reset_all = other.lock().unwrap();
    assert!(after_reset_all.fencing_token() > third);

    // Other names draw from the same counter: still strictly above every earlier grant.
    let elsewhere = RedisMutex::new(pool, "another-name")
        .unwrap()
        .lock()
        .unwrap()
        .fencing_token();
    assert!(elsewhere > after_reset_all.fencing_token());
}

/// A storage stand-in: a hash that accepts a write only with a token above every token it
/// has seen. Returns whether the write was accepted.
fn fenced_write(conn: &mut redis::Connection, token: u64, value: &str) -> bool {
    let script = redis::Script::new(
        r"local seen = tonumber(redis.call('HGET', KEYS[1], 'token') or '0')
          if tonumber(ARGV[1]) <= seen then return 0 end
          redis.call('HSET', KEYS[1], 'token', ARGV[1], 'value', ARGV[2])
          return 1",
    );
    let accepted: i64 = script
        .key("storage")
        .arg(token)
        .arg(value)
        .invoke(conn)
        .unwrap();
    accepted == 1
}

#[test]
fn storage_refuses_a_paused_holders_late_write() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = server.pool();
    let slow = RedisMutex::builder(pool.clone(), "fenced-storage")
        .expire(Duration::from_millis(100))
        .build()
        .unwrap();
    // Another process: another pool.
    let fast = RedisMutex::new(server.pool(), "fenced-storage").unwrap();

    let paused = slow.lock().unwrap();
    // The holder "pauses" past its lease; the next holder writes.
    let next = fast.try_lock_for(Duration::from_secs(10)).unwrap();
    assert!(fenced_write(
        &mut conn,
        next.fencing_token(),
        "from the next holder"
    ));
    // The paused holder wakes up and writes with its older token: refused.
    assert!(!fenced_write(
        &mut conn,
        paused.fencing_token(),
        "from the paused holder"
    ));
    let value: String = conn.hget("storage", "value").unwrap();
    assert_eq!(value, "from the next holder");
}

#[test]
fn a_broken_counter_is_an_error_and_leaves_no_lock_behind() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = server.pool();
    let mutex = RedisMutex::new(pool.clone(), "counted").unwrap();
    let rwlock = redis_mutex::RedisRwLock::new(pool, "counted/tree").unwrap();
    // (A counter below the clock, negative say, is not broken: it is raised to the clock.)
    for broken in [i64::MAX.to_string(), "not a number".to_owned()] {
        let _: () = conn.set("lock-fencing-counter", &broken).unwrap();
        let err = mutex.try_lock().unwrap_err();
        assert!(!err.is_would_block(), "{broken}: {err}");
        let exists: bool = conn.exists("lock:counted").unwrap();
        assert!(
            !exists,
            "{broken}: a failed grant left the lock held by nobody"
        );
        assert!(rwlock.try_write().is_err(), "{broken}");
        let left: Vec<String> = conn.keys("rwlock:*").unwrap();
        assert!(left.is_empty(), "{broken}: a failed grant left {left:?}");
    }
    // Once the counter is sound again, locking works.
    let _: () = conn.set("lock-fencing-counter", -5).unwrap();
    assert!(mutex.try_lock().unwrap().fencing_token() > 41);
}

/// Issue 24: a restart without persistence lost the counter, and the next grant got a token
/// below earlier ones (49, then 4). Tokens never go below the server's clock in
/// microseconds, so a counter that was lost, or set back, starts again above them.
#[test]
fn tokens_rise_across_a_restart_without_persistence_and_a_counter_set_back() {
    let mut server = RedisServer::start();
    let mutex = RedisMutex::new(server.pool(), "fenced-restart").unwrap();
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let guard = mutex.lock().unwrap();
        tokens.push(guard.fencing_token());
        guard.unlock().unwrap();
    }
    server.restart();
    let restarted = RedisMutex::new(server.pool(), "fenced-restart").unwrap();
    let after_restart = restarted.lock().unwrap().fencing_token();
    // A counter behind the tokens handed out, as a promoted replica's may be.
    let mut conn = server.connection();
    let _: () = conn.set("lock-fencing-counter", 4).unwrap();
    let after_setback = restarted.lock().unwrap().fencing_token();
    tokens.extend([after_restart, after_setback]);
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens went back: {tokens:?}"
    );
}

/// The counter lives a millisecond from when it last started: a copy of it that lags
/// behind the tokens handed out (a promoted replica's) is started again at the clock once
/// it expires, so the next token is above every earlier one; and a counter without an
/// expiry (left by an earlier version, or set by hand) is given one by the grant whose
/// token is a multiple of 1,024, without going back.
#[test]
fn a_counter_lives_a_millisecond_and_a_counter_without_expiry_is_given_one() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let mutex = RedisMutex::new(server.pool(), "fenced-life").unwrap();
    let first = mutex.lock().unwrap().fencing_token();
    // A lagging copy: below the last token, with an expiry as the primary's had.
    let _: () = redis::cmd("SET")
        .arg("lock-fencing-counter")
        .arg(first - 10)
        .arg("PX")
        .arg(1)
        .query(&mut conn)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while conn.exists::<_, bool>("lock-fencing-counter").unwrap() {
        assert!(Instant::now() < deadline, "the counter never expired");
        std::thread::yield_now();
    }
    let after_lag = mutex.lock().unwrap().fencing_token();
    assert!(after_lag > first, "{after_lag} after {first}");
    let ttl: i64 = conn.pttl("lock-fencing-counter").unwrap();
    assert!(
        ttl <= 1,
        "a started counter lives a millisecond: PTTL {ttl}"
    );

    // Without an expiry, ahead of the clock, one below a multiple of 1,024.
    let ahead = (after_lag + 60_000_000) / 1024 * 1024 + 1023;
    let _: () = conn.set("lock-fencing-counter", ahead).unwrap();
    let healed = mutex.lock().unwrap().fencing_token();
    assert_eq!(healed, ahead + 1, "the counter went back");
    let ttl: i64 = conn.pttl("lock-fencing-counter").unwrap();
    assert!(ttl != -1, "the counter still has no expiry");
    assert!(mutex.lock().unwrap().fencing_token() > healed);
}
