//! Bad input: zero and huge durations, and names with glob characters, braces, control
//! characters, invalid-looking escapes, or a mebibyte of them, taken literally.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{HANG, RedisServer};
use redis::Commands;
use redis_mutex::{Error, RedisMutex, Redlock, TryLockError, reset_all};

/// The longest duration this crate accepts: 10 years.
const TEN_YEARS: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// The option an `InvalidOptions` names; panics, saying what it got, on anything else.
fn invalid_field<T: std::fmt::Debug>(what: &str, result: Result<T, Error>) -> &'static str {
    match result {
        Err(Error::InvalidOptions { field, reason }) => {
            assert!(!reason.is_empty(), "{what}: no reason given");
            field
        }
        other => panic!("{what}: expected InvalidOptions, got {other:?}"),
    }
}

/// The error of a `try_` call that must fail with one, not find the lock held.
fn try_error<T: std::fmt::Debug>(what: &str, result: Result<T, TryLockError>) -> Result<T, Error> {
    match result {
        Err(TryLockError::Error(e)) => Err(e),
        other => panic!("{what}: expected an error, got {other:?}"),
    }
}

#[test]
fn zero_and_huge_durations_are_refused_or_work_and_never_overflow() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = server.pool();
    let builder = || RedisMutex::builder(pool.clone(), "durations");
    let over = TEN_YEARS + Duration::from_secs(1);
    type Setter = fn(redis_mutex::RedisMutexBuilder, Duration) -> redis_mutex::RedisMutexBuilder;
    let setters: [(&str, Setter); 3] = [
        ("expire", |b, d| b.expire(d)),
        ("signal_expire", |b, d| b.signal_expire(d)),
        ("response_timeout", |b, d| b.response_timeout(d)),
    ];
    for (field, set) in setters {
        for bad in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_micros(999),
            over,
            Duration::MAX,
        ] {
            let what = format!("{field}({bad:?})");
            assert_eq!(
                invalid_field(&what, set(builder(), bad).build()),
                field,
                "{what}"
            );
        }
        for good in [
            Duration::from_millis(1),
            Duration::from_nanos(1_500_001),
            TEN_YEARS,
        ] {
            set(builder(), good)
                .build()
                .unwrap_or_else(|e| panic!("{field}({good:?}): {e}"));
        }
    }
    let renewed = builder().auto_renewal(true);
    assert_eq!(
        invalid_field("auto_renewal without expiry", renewed.build()),
        "auto_renewal"
    );

    // A ten-year lease is stored as such, and counted without overflow.
    let mutex = builder()
        .expire(TEN_YEARS)
        .auto_renewal(true)
        .build()
        .unwrap();
    let guard = mutex.lock().unwrap();
    let pttl: i64 = conn.pttl("lock:durations").unwrap();
    assert!(
        pttl > 315_000_000_000 && pttl <= 315_360_000_000,
        "PTTL {pttl}"
    );
    assert!(guard.valid_for().unwrap() > TEN_YEARS - Duration::from_secs(365 * 24 * 3600));
    // extend: zero and past ten years are refused and change nothing; ten years works.
    for bad in [
        Duration::ZERO,
        Duration::from_nanos(999_999),
        over,
        Duration::MAX,
    ] {
        assert_eq!(
            invalid_field("extend", guard.extend(bad)),
            "lease",
            "extend({bad:?})"
        );
    }
    assert!(!guard.is_lost());
    guard.extend(Duration::from_millis(1500)).unwrap();
    let pttl: i64 = conn.pttl("lock:durations").unwrap();
    assert!(pttl > 1000 && pttl <= 1500, "PTTL {pttl}");
    guard.extend(TEN_YEARS).unwrap();

    // Timeouts: zero is one attempt; Duration::MAX and anything past the clock's range wait
    // for as long as it takes, without overflowing.
    let other = Arc::new(RedisMutex::new(pool.clone(), "durations").unwrap());
    for timeout in [Duration::ZERO, Duration::from_nanos(1)] {
        let started = Instant::now();
        let result = other.try_lock_for(timeout);
        assert!(
            matches!(result, Err(TryLockError::WouldBlock)),
            "{timeout:?}: {result:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{timeout:?}: {:?}",
            started.elapsed()
        );
    }
    guard.unlock().unwrap();
    for timeout in [Duration::ZERO, Duration::from_secs(u64::MAX), Duration::MAX] {
        drop(
            other
                .try_lock_for(timeout)
                .unwrap_or_else(|e| panic!("{timeout:?}: {e}")),
        );
    }
    // Another process holds it: another pool.
    let holder = RedisMutex::new(server.pool(), "durations").unwrap();
    let guard = holder.lock().unwrap();
    let waiter = other.clone();
    let waiting = crate::support::spawn("the Duration::MAX waiter", move || {
        waiter
            .try_lock_for(Duration::MAX)
            .map(drop)
            .map_err(|e| e.to_string())
    });
    assert!(
        crate::support::eventually(HANG, || crate::support::blocked_clients(&mut conn) == 1),
        "the Duration::MAX waiter never blocked"
    );
    guard.unlock().unwrap();
    waiting
        .join(HANG)
        .expect("the Duration::MAX waiter got the lock once it was free");

    // Redlock: the same bounds on its ttl and options.
    let redlock = Redlock::new(vec![pool.clone()]).unwrap();
    for bad in [
        Duration::ZERO,
        Duration::from_micros(999),
        over,
        Duration::MAX,
    ] {
        assert_eq!(
            invalid_field("redlock ttl", redlock.lock("rl", bad)),
            "ttl",
            "{bad:?}"
        );
        let tried = try_error("redlock try_lock", redlock.try_lock("rl", bad));
        assert_eq!(invalid_field("redlock ttl", tried), "ttl", "{bad:?}");
    }
    for bad in [Duration::ZERO, over, Duration::MAX] {
        let built = Redlock::builder(vec![pool.clone()])
            .instance_timeout(bad)
            .build();
        assert_eq!(invalid_field("instance_timeout", built), "instance_timeout");
    }
    for bad in [over, Duration::MAX] {
        let built = Redlock::builder(vec![pool.clone()])
            .retry_delay(bad)
            .build();
        assert_eq!(invalid_field("retry_delay", built), "retry_delay");
    }
    let guard = redlock.lock("rl", TEN_YEARS).unwrap();
    let pttl: i64 = conn.pttl("rl").unwrap();
    assert!(pttl > 315_000_000_000, "PTTL {pttl}");
    assert!(guard.valid_for().unwrap() > Duration::from_secs(9 * 365 * 24 * 3600));
    for bad in [Duration::ZERO, over, Duration::MAX] {
        assert_eq!(
            invalid_field("redlock extend", guard.extend(bad)),
            "ttl",
            "{bad:?}"
        );
    }
    guard.extend(Duration::from_secs(5)).unwrap();
    guard.unlock().unwrap();
}

/// Names a lock must take literally: glob characters, braces, control characters, escapes
/// that look like invalid UTF-8, and a 1 MiB one.
fn odd_names() -> Vec<String> {
    let mut names: Vec<String> = [
        "*",
        "?",
        "[",
        "]",
        "[a-z]*",
        "\\*",
        "lock:*",
        "{",
        "}",
        "{braces}",
        "{}",
        "new\nline",
        "\r\n",
        "tab\there",
        "\0",
        "nul\0inside",
        " ",
        "\\xff\\xfe",
        "%ff%fe",
        "\u{FFFD}",
        "\\u{d800}",
        "ünïcødé 鎖",
        "🔒",
        "\u{202E}rtl",
        "'quotes\"",
        "$1 %s {0}",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    names.push("x".repeat(redis_mutex::MAX_NAME_LEN));
    names
}

#[test]
fn odd_and_huge_names_are_taken_literally() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = server.pool();
    let names = odd_names();
    let short = |name: &str| name.chars().take(20).collect::<String>();

    // Each name: its own keys, exclusion, release and its signal.
    let mutexes: Vec<RedisMutex> = names
        .iter()
        .map(|n| RedisMutex::new(pool.clone(), n.as_str()).unwrap())
        .collect();
    let guards: Vec<_> = mutexes.iter().map(|m| m.lock().unwrap()).collect();
    for (name, mutex) in names.iter().zip(&mutexes) {
        let what = short(name);
        let key = [b"lock:".as_slice(), name.as_bytes()].concat();
        let owner: Option<Vec<u8>> = conn.get(&key).unwrap();
        assert_eq!(
            owner.as_deref(),
            Some(mutex.owner_id().as_bytes()),
            "{what:?}"
        );
        let rival = RedisMutex::new(pool.clone(), name.as_str()).unwrap();
        assert!(rival.try_lock().unwrap_err().is_would_block(), "{what:?}");
        assert_eq!(
            rival.get_owner_id().unwrap().as_deref(),
            Some(mutex.owner_id()),
            "{what:?}"
        );
    }
    let count: usize = redis::cmd("DBSIZE").query(&mut conn).unwrap();
    assert!(
        count >= names.len(),
        "one key per name, no name collided with another"
    );
    for (name, guard) in names.iter().zip(guards) {
        guard
            .unlock()
            .unwrap_or_else(|e| panic!("{:?}: {e}", short(name)));
        let signal = [b"lock-signal:".as_slice(), name.as_bytes()].concat();
        let signalled: Vec<Vec<u8>> = conn.lrange(&signal, 0, -1).unwrap();
        assert_eq!(signalled, [b"1".to_vec()], "{:?}", short(name));
    }

    // reset of a glob-like name deletes that one lock only; reset_all deletes every lock,
    // whatever its name.
    let guards: Vec<_> = mutexes.iter().map(|m| m.lock().unwrap()).collect();
    for glob in ["*", "[a-z]*"] {
        let mutex = RedisMutex::new(pool.clone(), glob).unwrap();
        assert!(mutex.reset().unwrap(), "{glob}");
    }
    let left: Vec<Vec<u8>> = conn.keys("lock:*").unwrap();
    assert_eq!(
        left.len(),
        names.len() - 2,
        "reset deleted only its own lock"
    );
    assert_eq!(reset_all(&pool).unwrap(), names.len() - 2);
    let left: Vec<Vec<u8>> = conn.keys("lock:*").unwrap();
    assert!(left.is_empty(), "{} locks left", left.len());
    drop(guards);

    // Redlock takes the name as its key, as it is.
    let redlock = Redlock::new(vec![pool.clone()]).unwrap();
    for name in &names {
        let guard = redlock.lock(name, Duration::from_secs(10)).unwrap();
        let token: Option<String> = conn.get(name.as_bytes()).unwrap();
        assert_eq!(
            token.as_deref(),
            Some(guard.owner_id()),
            "{:?}",
            short(name)
        );
        // Held, and no instance failed: the attempt would block.
        assert!(
            redlock
                .try_lock(name, Duration::from_secs(10))
                .unwrap_err()
                .is_would_block(),
            "{:?}",
            short(name)
        );
        guard.unlock().unwrap();
        let exists: bool = conn.exists(name.as_bytes()).unwrap();
        assert!(!exists, "{:?}", short(name));
    }

    // The empty name is refused by every entry point, before any round trip: a mutex
    // cannot be made with it, and a Redlock refuses it per call.
    assert_eq!(
        invalid_field("builder", RedisMutex::builder(pool.clone(), "").build()),
        "name"
    );
    assert_eq!(
        invalid_field("new", RedisMutex::new(pool.clone(), "")),
        "name"
    );
    assert_eq!(
        invalid_field("redlock", redlock.lock("", Duration::from_secs(1))),
        "resource"
    );
    let tried = try_error(
        "redlock try_lock",
        redlock.try_lock("", Duration::from_secs(1)),
    );
    assert_eq!(invalid_field("redlock try_lock", tried), "resource");
    assert_eq!(
        invalid_field("redlock is_locked", redlock.is_locked("")),
        "resource"
    );
}
