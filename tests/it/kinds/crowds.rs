//! Crowds: worker pools whose threads each build their own lock object for a job's name, and
//! outnumber the pool's connections, in every mode. Whatever the number of threads and
//! objects, nobody is let in twice, no lock is left held by nobody, nobody polls, and one
//! connection per name and process waits in Redis.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{HANG, RedisServer, blocked_clients, eventually, script_calls, spawn};
use redis::Commands;
use redis_mutex::{Pool, RedisMutex};

/// One guard's time as holder, as its thread was told: from `lock()` returning to the
/// release, clipped to what `valid_for()` promised at the grant.
#[derive(Debug, Clone, Copy)]
struct Held {
    from: Instant,
    to: Instant,
    token: u64,
}

/// `threads` threads, each building its own mutex for `name` per cycle (as a worker builds
/// one per job), lock, work `work`, unlock, `cycles` times; returns every told-held interval.
fn crowd(
    pool: &Pool,
    name: &str,
    fair: bool,
    expire: Option<Duration>,
    (threads, cycles, work): (usize, usize, Duration),
) -> Vec<Held> {
    let start = Arc::new(Barrier::new(threads));
    let tasks: Vec<_> = (0..threads)
        .map(|t| {
            let (pool, name, start) = (pool.clone(), name.to_owned(), start.clone());
            spawn(&format!("crowd-{t}"), move || {
                start.wait();
                let mut held = Vec::new();
                for _ in 0..cycles {
                    let mut builder = RedisMutex::builder(pool.clone(), name.as_str()).fair(fair);
                    if let Some(expire) = expire {
                        builder = builder.expire(expire);
                    }
                    let mutex = builder.build().unwrap();
                    let guard = mutex.lock().unwrap();
                    let from = Instant::now();
                    let valid = guard.valid_for();
                    thread::sleep(work);
                    let to = Instant::now();
                    let to = valid.map_or(to, |v| to.min(from + v));
                    held.push(Held {
                        from,
                        to,
                        token: guard.fencing_token(),
                    });
                    guard.unlock().unwrap();
                }
                held
            })
        })
        .collect();
    tasks
        .into_iter()
        .flat_map(|task| task.join(HANG * 3))
        .collect()
}

/// The pairs of told-held intervals that overlap.
fn overlaps(mut held: Vec<Held>) -> Vec<(Held, Held)> {
    held.sort_by_key(|h| h.from);
    let mut found = Vec::new();
    for (i, a) in held.iter().enumerate() {
        for b in &held[i + 1..] {
            if b.from >= a.to {
                break;
            }
            found.push((*a, *b));
        }
    }
    found
}

/// Issue 23, finding 1: 24 threads with their own fair mutexes on a pool of 16 let two
/// holders in at once (47 overlapping pairs of 240 grants); the default mode must hold too.
#[test]
fn a_crowd_of_own_objects_never_has_two_holders_in_any_mode() {
    let server = RedisServer::start();
    let pool = Pool::new(&server.url()).unwrap();
    for fair in [true, false] {
        let name = format!("crowd-overlap-{fair}");
        let shape = (24, 10, Duration::from_millis(5));
        let held = crowd(&pool, &name, fair, Some(Duration::from_millis(300)), shape);
        assert_eq!(held.len(), 240, "fair: {fair}");
        let double = overlaps(held.clone());
        assert!(
            double.is_empty(),
            "fair: {fair}: {} pairs of guards held `{name}` at overlapping times, of {} \
             grants; the first: {:?}",
            double.len(),
            held.len(),
            double.first()
        );
        let mut tokens: Vec<u64> = held.iter().map(|h| h.token).collect();
        tokens.sort_unstable();
        tokens.dedup();
        assert_eq!(
            tokens.len(),
            240,
            "fair: {fair}: a token was handed out twice"
        );
    }
}

/// Issue 23, finding 2: 20 threads with their own fair mutexes and a 1 h expiry hung, the
/// lock owned by a thread that never returned from `lock()`, and the same with no expiry on
/// a pool of two connections. Every thread finishes, and nothing is left held.
#[test]
fn a_crowd_of_own_objects_finishes_and_leaves_no_lock_in_any_mode() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pools = [
        ("default pool", Pool::new(&server.url()).unwrap()),
        (
            "two connections",
            server.pool_with(Pool::builder().max_size(2)),
        ),
    ];
    for (what, pool) in &pools {
        for (fair, expire) in [
            (true, Some(Duration::from_secs(3600))),
            (true, None),
            (false, None),
        ] {
            let name = format!(
                "crowd-finish-{}-{fair}-{}",
                pool_tag(what),
                expire.is_some()
            );
            let started = Instant::now();
            let held = crowd(pool, &name, fair, expire, (20, 5, Duration::from_millis(2)));
            assert_eq!(held.len(), 100, "{what}, fair: {fair}, expire {expire:?}");
            assert!(
                overlaps(held).is_empty(),
                "{what}, fair: {fair}: two holders at once"
            );
            let left: Option<String> = conn.get(format!("lock:{name}")).unwrap();
            assert_eq!(
                left,
                None,
                "{what}, fair: {fair}, expire {expire:?}: `{name}` is still held after \
                 every thread unlocked ({:?} after the start)",
                started.elapsed()
            );
        }
    }
}

fn pool_tag(what: &str) -> &'static str {
    if what.starts_with("two") {
        "two"
    } else {
        "default"
    }
}

/// Issue 23, finding 5: 64 threads with their own mutexes in the default mode made 33.5
/// script calls per grant, the waiters without a connection retrying every 20 ms. One
/// waiter per name and process waits in Redis, woken by the release: about two calls per
/// grant (the acquire and the release), as for threads that share one mutex.
#[test]
fn a_crowd_of_own_objects_does_not_poll() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = Pool::new(&server.url()).unwrap();
    // Two per grant (three in fair mode without expiry: a handover's provisional expiry is
    // claimed), and the odd refresh of a waiter woken by its wait's end.
    for (fair, expire, most) in [
        (false, None, 3.0),
        (true, Some(Duration::from_secs(10)), 3.0),
        (true, None, 4.0),
    ] {
        let name = format!("crowd-calls-{fair}-{expire:?}");
        let before = script_calls(&mut conn);
        let held = crowd(
            &pool,
            &name,
            fair,
            expire,
            (64, 2, Duration::from_millis(20)),
        );
        let calls = script_calls(&mut conn) - before;
        let per_grant = calls as f64 / held.len() as f64;
        assert!(
            per_grant < most,
            "fair: {fair}, expire {expire:?}: {calls} script calls for {} grants, \
             {per_grant:.1} per grant",
            held.len()
        );
    }
}

/// One connection per name and process waits in Redis, however many objects and threads
/// wait for it; a waiter that finds every spare connection waiting waits in the process.
#[test]
fn one_connection_per_name_and_process_waits_in_redis() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = Pool::new(&server.url()).unwrap();
    // Held elsewhere, without expiry.
    let _: () = conn.set("lock:one-waiter", "someone-else").unwrap();
    let waiters: Vec<_> = (0..12)
        .map(|t| {
            let pool = pool.clone();
            spawn(&format!("waiter-{t}"), move || {
                let mutex = RedisMutex::builder(pool, "one-waiter")
                    .fair(t % 2 == 0)
                    .build()
                    .unwrap();
                mutex
                    .try_lock_for(Duration::from_millis(1500))
                    .map(drop)
                    .unwrap_err()
                    .is_would_block()
            })
        })
        .collect();
    assert!(
        eventually(HANG, || blocked_clients(&mut conn) >= 1),
        "nobody waits in Redis"
    );
    // A while later, still one.
    let mut most = 0;
    for _ in 0..20 {
        most = most.max(blocked_clients(&mut conn));
        thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(most, 1, "{most} connections blocked for one name");
    for waiter in waiters {
        assert!(waiter.join(HANG), "a waiter did not time out");
    }
    let _: () = conn.del("lock:one-waiter").unwrap();
}
