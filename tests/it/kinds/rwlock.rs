//! RedisRwLock behaviour against real redis-server processes: sharing, exclusion along the
//! hierarchy, writer preference, waking, expiry, renewal and fencing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{
    HANG, RedisServer, blocked_clients, child_env, connect, eventually, pool_at, spawn, spawn_child,
};
use redis::Commands;
use redis_mutex::{Error, LostReason, Pool, RedisMutex, RedisRwLock, TryLockError};

/// Far below the 1 s a waiter sleeps when nothing wakes it: a wake-up came in time.
const WOKEN: Duration = Duration::from_millis(500);

/// How late after an expiry a waiter may get in on a loaded 2-core machine: a round trip or
/// two, plus scheduling; far below the 1 s a waiter naps when nothing wakes it.
const ROUND_TRIPS: Duration = Duration::from_millis(250);

/// How far past its deadline a timed attempt may return on a loaded 2-core machine: far
/// below the 1 s a waiter naps when nothing wakes it, so a wait that oversleeps its
/// deadline by a nap fails, and a hang does.
const DEADLINE_SLACK: Duration = Duration::from_millis(250);

/// For child tests: a pool to the parent's server.
fn child_pool() -> Pool {
    pool_at(&child_env("REDIS_URL"))
}

/// For child tests: a direct connection to the parent's server whose replies may take as
/// long as a step of the test.
fn child_connection() -> redis::Connection {
    let conn = connect(&child_env("REDIS_URL"));
    conn.set_read_timeout(Some(HANG + Duration::from_secs(5)))
        .unwrap();
    conn
}

/// When a key that expires is due to go, by our clock: between the two instants returned
/// (the first read before the server answered, the second after).
fn expiry_of(conn: &mut redis::Connection, key: &str) -> (Instant, Instant) {
    let before = Instant::now();
    let pttl: i64 = conn.pttl(key).unwrap();
    let after = Instant::now();
    assert!(pttl > 0, "{key} has no expiry to wait for: PTTL {pttl}");
    let left = Duration::from_millis(pttl as u64);
    (before + left, after + left)
}

/// The server's clock in microseconds: intervals from many processes on one clock.
fn server_micros(conn: &mut redis::Connection) -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query(conn).unwrap();
    secs * 1_000_000 + micros
}

/// Whether `a` and `b` are the same path or one is an ancestor of the other.
fn on_one_line(a: &str, b: &str) -> bool {
    a == b || b.starts_with(&format!("{a}/")) || a.starts_with(&format!("{b}/"))
}

/// Every key of the read-write locks, with its type; but the notes of releases a moment
/// ago (`rwlock:released:<path>`), which must expire within 10 s.
fn rwlock_keys(conn: &mut redis::Connection) -> Vec<(String, String)> {
    let mut keys: Vec<String> = conn.keys("rwlock:*").unwrap();
    keys.sort();
    keys.retain(|k| {
        if !k.starts_with("rwlock:released:") {
            return true;
        }
        let ttl: i64 = conn.pttl(k).unwrap();
        assert!(ttl > 0 && ttl <= 10_000, "{k} lives on: PTTL {ttl}");
        false
    });
    keys.into_iter()
        .map(|k| {
            let kind: String = redis::cmd("TYPE").arg(&k).query(conn).unwrap();
            (k, kind)
        })
        .collect()
}

#[test]
fn locks_keep_their_entries_in_sorted_sets_that_expire_with_them() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = server.pool();
    let reader = RedisRwLock::builder(pool.clone(), "shop/orders")
        .expire(Duration::from_secs(10))
        .owner_id("reader-1")
        .build()
        .unwrap();
    assert_eq!(reader.path(), "shop/orders");
    assert_eq!(reader.separator(), '/');
    assert_eq!(reader.owner_id(), "reader-1");
    assert_eq!(reader.expire(), Some(Duration::from_secs(10)));

    let guard = reader.read().unwrap();
    let members: Vec<String> = conn.zrange("rwlock:r:shop/orders", 0, -1).unwrap();
    assert_eq!(members.len(), 1);
    assert!(members[0].starts_with("reader-1#"), "{members:?}");
    let below: Vec<String> = conn.zrange("rwlock:rb:shop", 0, -1).unwrap();
    assert_eq!(below, members, "the ancestor knows of the reader below it");
    for key in ["rwlock:r:shop/orders", "rwlock:rb:shop"] {
        let pttl: i64 = conn.pttl(key).unwrap();
        assert!(pttl > 9_000 && pttl <= 10_000, "{key} PTTL {pttl}");
    }
    assert!(guard.is_held().unwrap());
    assert!(guard.valid_for().unwrap() <= Duration::from_secs(10));
    guard.unlock().unwrap();
    assert_eq!(rwlock_keys(&mut conn), [], "nothing is left behind");

    // By default every lease expires, after 30 s (and is renewed while its guard lives):
    // a crashed holder cannot block its subtree forever. The entries' scores are their
    // expiry times, and the sets expire with them.
    let by_default = RedisRwLock::new(pool.clone(), "shop").unwrap();
    assert_eq!(by_default.expire(), Some(Duration::from_secs(30)));
    let guard = by_default.write().unwrap();
    let (now_secs, _): (u64, u64) = redis::cmd("TIME").query(&mut conn).unwrap();
    let score: f64 = redis::cmd("ZSCORE")
        .arg("rwlock:w:shop")
        .arg(
            conn.zrange::<_, Vec<String>>("rwlock:w:shop", 0, -1)
                .unwrap()
                .first()
                .unwrap(),
        )
        .query(&mut conn)
        .unwrap();
    let expires_in = score / 1000.0 - now_secs as f64;
    assert!(
        (28.0..=31.0).contains(&expires_in),
        "the entry expires in {expires_in} s"
    );
    let pttl: i64 = conn.pttl("rwlock:w:shop").unwrap();
    assert!(pttl > 29_000 && pttl <= 30_000, "PTTL {pttl}");
    let left = guard.valid_for().unwrap();
    assert!(
        left > Duration::from_secs(29) && left <= Duration::from_secs(30),
        "{left:?}"
    );
    guard.extend(Duration::from_secs(40)).unwrap();
    let pttl: i64 = conn.pttl("rwlock:w:shop").unwrap();
    assert!(pttl > 39_000 && pttl <= 40_000, "PTTL {pttl}");
    drop(guard);
    assert_eq!(rwlock_keys(&mut conn), []);
    // Without renewal the lease still expires: there is no lock that never does.
    let unrenewed = RedisRwLock::builder(pool, "shop")
        .auto_renewal(false)
        .build()
        .unwrap();
    assert_eq!(unrenewed.expire(), Some(Duration::from_secs(30)));
    let guard = unrenewed.read().unwrap();
    let pttl: i64 = conn.pttl("rwlock:r:shop").unwrap();
    assert!(pttl > 29_000 && pttl <= 30_000, "PTTL {pttl}");
    drop(guard);
    assert_eq!(rwlock_keys(&mut conn), []);
}

/// One row of the hierarchy table: with `held` held, is `wanted` granted?
struct Case {
    held: (&'static str, &'static str),
    wanted: (&'static str, &'static str),
    granted: bool,
}

const fn case(
    held: (&'static str, &'static str),
    wanted: (&'static str, &'static str),
    granted: bool,
) -> Case {
    Case {
        held,
        wanted,
        granted,
    }
}

const HIERARCHY: &[Case] = &[
    // The same path: readers share, a writer excludes.
    case(("r", "a"), ("r", "a"), true),
    case(("r", "a"), ("w", "a"), false),
    case(("w", "a"), ("r", "a"), false),
    case(("w", "a"), ("w", "a"), false),
    // Ancestors and descendants, at any depth.
    case(("w", "a"), ("r", "a/b"), false),
    case(("w", "a"), ("w", "a/b/c"), false),
    case(("w", "a/b/c"), ("r", "a"), false),
    case(("w", "a/b/c"), ("w", "a/b"), false),
    case(("r", "a"), ("w", "a/b"), false),
    case(("r", "a/b/c"), ("w", "a"), false),
    case(("r", "a/b"), ("w", "a/b/c"), false),
    // Readers anywhere coexist.
    case(("r", "a"), ("r", "a/b/c"), true),
    case(("r", "a/b/c"), ("r", "a"), true),
    // Siblings, cousins and other trees are independent.
    case(("w", "a/b"), ("w", "a/c"), true),
    case(("w", "a/b"), ("r", "a/c"), true),
    case(("r", "a/b"), ("w", "a/c/d"), true),
    case(("w", "a"), ("w", "b"), true),
    // A prefix of the string is not an ancestor: `a/bc` is no child of `a/b`, `ab` of `a`.
    case(("w", "a/b"), ("w", "a/bc"), true),
    case(("w", "a"), ("r", "ab"), true),
    case(("w", "ab/c"), ("w", "a"), true),
];

#[test]
fn the_hierarchy_table_holds() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = server.pool();
    let mut failures = Vec::new();
    for (i, c) in HIERARCHY.iter().enumerate() {
        let holder = RedisRwLock::new(pool.clone(), c.held.1).unwrap();
        let asker = RedisRwLock::new(pool.clone(), c.wanted.1).unwrap();
        let held_read;
        let held_write;
        if c.held.0 == "r" {
            held_read = Some(holder.try_read().unwrap());
            held_write = None;
        } else {
            held_write = Some(holder.try_write().unwrap());
            held_read = None;
        }
        let outcome = if c.wanted.0 == "r" {
            asker.try_read().map(drop)
        } else {
            asker.try_write().map(drop)
        };
        let granted = match outcome {
            Ok(()) => true,
            Err(TryLockError::WouldBlock) => false,
            Err(e) => panic!("case {i}: {e}"),
        };
        if granted != c.granted {
            failures.push(format!(
                "case {i}: with {:?} held, {:?} expected {} but was {}",
                c.held,
                c.wanted,
                if c.granted { "granted" } else { "refused" },
                if granted { "granted" } else { "refused" },
            ));
        }
        drop(held_read);
        drop(held_write);
        assert_eq!(rwlock_keys(&mut conn), [], "case {i} left keys behind");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_custom_separator_defines_the_hierarchy() {
    let server = RedisServer::start();
    let pool = server.pool();
    let dotted = |path: &str| {
        RedisRwLock::builder(pool.clone(), path)
            .separator('.')
            .build()
            .unwrap()
    };
    let root = dotted("eu");
    let shop = dotted("eu.shop");
    let slashed = dotted("eu/shop");
    assert_eq!(shop.separator(), '.');
    let writing = root.write().unwrap();
    assert!(
        shop.try_read().unwrap_err().is_would_block(),
        "eu is an ancestor of eu.shop"
    );
    assert!(
        slashed.try_write().is_ok(),
        "with '.', eu/shop is one segment, not below eu"
    );
    drop(writing);
    let reading = shop.read().unwrap();
    assert!(root.try_write().unwrap_err().is_would_block());
    drop(reading);
    assert!(matches!(
        RedisRwLock::builder(pool, "eu..shop")
            .separator('.')
            .build(),
        Err(Error::InvalidOptions { field: "path", .. })
    ));
}

/// Child side of [`readers_in_many_processes_hold_at_once`]: takes a read lock, then waits
/// under it until every reader has arrived.
#[test]
#[ignore = "run as a child process by readers_in_many_processes_hold_at_once"]
fn child_reads_until_all_readers_are_in() {
    let pool = child_pool();
    let readers: usize = child_env("READERS").parse().unwrap();
    let mut conn = child_connection();
    let lock = RedisRwLock::builder(pool, child_env("LOCK_PATH"))
        .expire(Duration::from_secs(30))
        .build()
        .unwrap();
    let guard = lock.read().unwrap();
    let start = server_micros(&mut conn);
    let arrived: usize = conn.incr("arrived", 1).unwrap();
    if arrived == readers {
        let _: () = conn.rpush("all-in", vec!["1"; readers]).unwrap();
    }
    // Nobody leaves before everyone holds the lock: only overlapping readers get past.
    let go: Option<(String, String)> = conn.blpop("all-in", HANG.as_secs_f64()).unwrap();
    assert!(
        go.is_some(),
        "the other readers never got in alongside this one"
    );
    let end = server_micros(&mut conn);
    let _: () = conn.rpush("intervals", format!("{start} {end}")).unwrap();
    guard.unlock().unwrap();
}

#[test]
fn readers_in_many_processes_hold_at_once() {
    let server = RedisServer::start();
    // Readers at three depths of one tree, and one elsewhere.
    let paths = ["docs", "docs/a", "docs/a/b", "other"];
    let children: Vec<_> = paths
        .iter()
        .map(|path| {
            spawn_child(
                module_path!(),
                "child_reads_until_all_readers_are_in",
                &[
                    ("REDIS_URL", server.url()),
                    ("READERS", paths.len().to_string()),
                    ("LOCK_PATH", path.to_string()),
                ],
            )
        })
        .collect();
    for child in children {
        child.finish(Duration::from_secs(60));
    }
    let intervals: Vec<String> = server.connection().lrange("intervals", 0, -1).unwrap();
    let intervals: Vec<(u64, u64)> = intervals
        .iter()
        .map(|i| {
            let (s, e) = i.split_once(' ').unwrap();
            (s.parse().unwrap(), e.parse().unwrap())
        })
        .collect();
    assert_eq!(intervals.len(), paths.len());
    let latest_start = intervals.iter().map(|i| i.0).max().unwrap();
    let earliest_end = intervals.iter().map(|i| i.1).min().unwrap();
    assert!(
        latest_start <= earliest_end,
        "all readers held at once: {intervals:?}"
    );
}

const TREE: [&str; 5] = ["t", "t/a", "t/a/x", "t/b", "u"];

/// Child side of [`conflicting_holders_never_overlap_across_processes`]: two threads take
/// random read and write locks on [`TREE`] and record each holding on the server's clock.
#[test]
#[ignore = "run as a child process by conflicting_holders_never_overlap_across_processes"]
fn child_records_holdings() {
    let pool = child_pool();
    let cycles: usize = child_env("CYCLES").parse().unwrap();
    let seed: u64 = child_env("SEED").parse().unwrap();
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            let pool = pool.clone();
            let mut conn = child_connection();
            spawn(&format!("holder-{t}"), move || {
                let locks: Vec<RedisRwLock> = TREE
                    .iter()
                    .map(|p| {
                        RedisRwLock::builder(pool.clone(), *p)
                            .expire(Duration::from_secs(30))
                            .build()
                            .unwrap()
                    })
                    .collect();
                let mut state = seed * 7919 + t * 104_729 + 1;
                let mut next = move || {
                    // xorshift: a cheap deterministic mix of modes and paths.
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state
                };
                for _ in 0..cycles {
                    let which = (next() % TREE.len() as u64) as usize;
                    let write = next() % 5 < 2;
                    let lock = &locks[which];
                    let record = |conn: &mut redis::Connection, mode: &str| {
                        let start = server_micros(conn);
                        thread::sleep(Duration::from_millis(1)); // the work
                        let end = server_micros(conn);
                        let _: () = conn
                            .rpush("intervals", format!("{mode} {} {start} {end}", TREE[which]))
                            .unwrap();
                    };
                    if write {
                        let guard = lock.write().unwrap();
                        record(&mut conn, "w");
                        guard.unlock().unwrap();
                    } else {
                        let guard = lock.read().unwrap();
                        record(&mut conn, "r");
                        guard.unlock().unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join(Duration::from_secs(60));
    }
}

#[test]
fn conflicting_holders_never_overlap_across_processes() {
    let server = RedisServer::start();
    const PROCESSES: usize = 4;
    const CYCLES: usize = 40; // per thread, two threads per process
    let children: Vec<_> = (0..PROCESSES)
        .map(|p| {
            spawn_child(
                module_path!(),
                "child_records_holdings",
                &[
                    ("REDIS_URL", server.url()),
                    ("CYCLES", CYCLES.to_string()),
                    ("SEED", p.to_string()),
                ],
            )
        })
        .collect();
    for child in children {
        child.finish(Duration::from_secs(90));
    }
    let mut conn = server.connection();
    let raw: Vec<String> = conn.lrange("intervals", 0, -1).unwrap();
    assert_eq!(raw.len(), PROCESSES * 2 * CYCLES);
    let holdings: Vec<(String, String, u64, u64)> = raw
        .iter()
        .map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            (
                f[0].to_owned(),
                f[1].to_owned(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
            )
        })
        .collect();
    let (mut conflicting_pairs, mut overlapping_reads) = (0, 0);
    for (i, a) in holdings.iter().enumerate() {
        for b in &holdings[i + 1..] {
            let overlap = a.2 < b.3 && b.2 < a.3;
            if !on_one_line(&a.1, &b.1) {
                continue;
            }
            if a.0 == "w" || b.0 == "w" {
                conflicting_pairs += 1;
                assert!(!overlap, "conflicting holdings overlap: {a:?} and {b:?}");
            } else if overlap {
                overlapping_reads += 1;
            }
        }
    }
    assert!(
        conflicting_pairs > 1000,
        "only {conflicting_pairs} conflicting pairs"
    );
    println!(
        "{conflicting_pairs} conflicting pairs, none overlapping; {overlapping_reads} overlapping reads"
    );
    assert_eq!(
        rwlock_keys(&mut conn)
            .iter()
            .filter(|(_, t)| t == "zset")
            .count(),
        0
    );
}

#[test]
fn a_waiting_writer_is_not_starved_by_a_stream_of_readers() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = server.pool();
    const READERS: usize = 4;
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..READERS)
        .map(|r| {
            let stop = stop.clone();
            // Readers of the writer's path and of a path below it.
            let lock = RedisRwLock::new(pool.clone(), if r % 2 == 0 { "lib" } else { "lib/shelf" })
                .unwrap();
            let mut conn = server.connection();
            spawn(&format!("reader-{r}"), move || {
                let started = Instant::now();
                for _ in 0..5_000 {
                    if stop.load(Ordering::SeqCst) || started.elapsed() > HANG {
                        break;
                    }
                    let guard = lock.read().unwrap();
                    let _: u64 = conn.incr("reader-grants", 1).unwrap();
                    thread::sleep(Duration::from_millis(10)); // the work; readers overlap
                    drop(guard);
                }
            })
        })
        .collect();
    // The stream is flowing: readers hold the path back to back.
    assert!(eventually(HANG, || conn
        .get::<_, Option<u64>>("reader-grants")
        .unwrap()
        .unwrap_or(0)
        >= 20));
    let writer = RedisRwLock::new(pool, "lib").unwrap();
    let before: u64 = conn.get("reader-grants").unwrap();
    let asked = Instant::now();
    // Bounded, so that a starved writer fails the test instead of hanging it.
    let guard = writer.try_write_for(HANG).unwrap();
    let waited = asked.elapsed();
    let during: u64 = conn.get::<_, u64>("reader-grants").unwrap() - before;
    drop(guard);
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        r.join(HANG);
    }
    // Only readers granted before the writer's first attempt reached Redis: at most one
    // per reader thread, and one more for a reader whose grant was on the wire.
    assert!(
        during <= 2 * READERS as u64,
        "{during} readers got in while the writer waited {waited:?}"
    );
}

#[test]
fn a_release_wakes_every_reader_it_held_back_at_once() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = server.pool();
    // The writer is another process: another pool.
    let writer = RedisRwLock::new(server.pool(), "board").unwrap();
    let guard = writer.write().unwrap();
    let (in_tx, in_rx) = mpsc::channel();
    let (out_tx, out_rx) = mpsc::channel::<()>();
    let out_rx = Arc::new(std::sync::Mutex::new(out_rx));
    let readers: Vec<_> = ["board", "board/x", "board/x/y"]
        .into_iter()
        .map(|path| {
            let lock = RedisRwLock::new(pool.clone(), path).unwrap();
            let in_tx = in_tx.clone();
            let out_rx = out_rx.clone();
            spawn(&format!("reader of {path}"), move || {
                let _guard = lock.read().unwrap();
                in_tx.send(Instant::now()).unwrap();
                // Hold until the test has seen everyone in (bounded all the same).
                out_rx.lock().unwrap().recv_timeout(HANG).ok();
            })
        })
        .collect();
    assert!(
        eventually(HANG, || blocked_clients(&mut conn) == 3),
        "the readers never blocked"
    );
    let released = Instant::now();
    guard.unlock().unwrap();
    for _ in 0..3 {
        let got_in = in_rx.recv_timeout(HANG).expect("a reader got in");
        let after = got_in - released;
        assert!(after < WOKEN, "a reader got in {after:?} after the release");
    }
    drop(out_tx);
    for r in readers {
        r.join(HANG);
    }
}

#[test]
fn a_reader_release_wakes_a_waiting_writer_on_an_ancestor() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = server.pool();
    let reader = RedisRwLock::builder(pool.clone(), "zone/a/b")
        .expire(Duration::from_secs(30))
        .build()
        .unwrap();
    let writer = RedisRwLock::new(pool, "zone").unwrap();
    let guard = reader.read().unwrap();
    let waiting = spawn("writer", move || {
        let guard = writer.try_write_for(HANG).unwrap();
        let at = Instant::now();
        guard.unlock().unwrap();
        at
    });
    assert!(eventually(HANG, || blocked_clients(&mut conn) == 1));
    let released = Instant::now();
    guard.unlock().unwrap();
    let got_in = waiting.join(HANG);
    assert!(got_in - released < WOKEN, "{:?}", got_in - released);
    let wake: bool = conn.exists("rwlock:wake-w:zone").unwrap();
    assert!(!wake, "the writer took its wake-up");
}

#[test]
fn a_writer_that_gives_up_lets_the_readers_behind_it_in_at_once() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = server.pool();
    let first = RedisRwLock::new(pool.clone(), "feed").unwrap();
    // The writer is another process: another pool.
    let writer = RedisRwLock::new(server.pool(), "feed").unwrap();
    let late = RedisRwLock::new(pool, "feed/item").unwrap();
    let reading = first.read().unwrap();
    let giving_up = spawn("writer", move || {
        let result = writer.try_write_for(Duration::from_millis(400));
        assert!(result.unwrap_err().is_would_block());
        (writer, Instant::now())
    });
    assert!(eventually(HANG, || blocked_clients(&mut conn) == 1));
    // The writer waits: a new reader of a path below waits behind it.
    let started = Instant::now();
    let guard = late.try_read_for(HANG).unwrap();
    let (writer, gave_up) = giving_up.join(HANG);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(200),
        "the reader did not wait: {waited:?}"
    );
    let after = Instant::now() - gave_up;
    assert!(
        after < WOKEN,
        "the reader got in {after:?} after the writer gave up"
    );
    drop(guard);
    drop(reading);
    // A writer that makes one attempt holds nobody back.
    let _held = first.read().unwrap();
    assert!(writer.try_write().unwrap_err().is_would_block());
    let members: i64 = conn.zcard("rwlock:qw:feed").unwrap();
    assert_eq!(members, 0);
}

/// Child side of [`a_crashed_waiting_writer_holds_readers_back_briefly`]: waits to write
/// until killed.
#[test]
#[ignore = "run as a child process by a_crashed_waiting_writer_holds_readers_back_briefly"]
fn child_waits_to_write_until_killed() {
    let lock = RedisRwLock::new(child_pool(), "queue").unwrap();
    // Blocked by the parent's reader until the parent kills this process.
    let _guard = lock.try_write_for(Duration::from_secs(60));
}

#[test]
fn a_crashed_waiting_writer_holds_readers_back_briefly() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = server.pool();
    let first = RedisRwLock::new(pool.clone(), "queue").unwrap();
    let _reading = first.read().unwrap();
    let child = spawn_child(
        module_path!(),
        "child_waits_to_write_until_killed",
        &[("REDIS_URL", server.url())],
    );
    assert!(eventually(HANG, || blocked_clients(&mut conn) == 1));
    let waiters: i64 = conn.zcard("rwlock:qw:queue").unwrap();
    assert_eq!(waiters, 1, "the writer is registered as waiting");
    child.kill(); // SIGKILL: no withdrawal
    // The dead writer's registration runs out on its own (2 s after its last attempt, at
    // most a second before the kill): until then it holds new readers back, and no longer.
    let (earliest, latest) = expiry_of(&mut conn, "rwlock:qw:queue");
    let left = latest.saturating_duration_since(Instant::now());
    assert!(
        left <= Duration::from_secs(2),
        "a crashed writer's registration holds readers back for {left:?} more"
    );
    let reader = RedisRwLock::new(pool, "queue/item").unwrap();
    let guard = reader.try_read_for(HANG).unwrap();
    let at = Instant::now();
    assert!(
        at + Duration::from_millis(2) >= earliest,
        "a reader got in {:?} before the crashed writer's registration ran out",
        earliest.saturating_duration_since(at)
    );
    assert!(
        at <= latest + ROUND_TRIPS,
        "a reader got in {:?} after the crashed writer's registration ran out",
        at - latest
    );
    drop(guard);
}

/// The lease of the reader that [`a_crashed_readers_lease_stops_blocking_once_it_expires`]
/// kills: far from the 1 s a waiter naps when nothing wakes it, so that a waiter that
/// napped a whole second regardless of the lease would be late.
const CRASHED_LEASE: Duration = Duration::from_millis(2500);

/// Child side of [`a_crashed_readers_lease_stops_blocking_once_it_expires`].
#[test]
#[ignore = "run as a child process by a_crashed_readers_lease_stops_blocking_once_it_expires"]
fn child_reads_until_killed() {
    // Without renewal: the lease ends CRASHED_LEASE after the grant, however the kill falls.
    let lock = RedisRwLock::builder(child_pool(), "crash/deep/path")
        .expire(CRASHED_LEASE)
        .auto_renewal(false)
        .build()
        .unwrap();
    let _guard = lock.read().unwrap();
    println!("@locked");
    // Hold the lock until the parent kills this process (bounded all the same).
    thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_crashed_readers_lease_stops_blocking_once_it_expires() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let mut child = spawn_child(
        module_path!(),
        "child_reads_until_killed",
        &[("REDIS_URL", server.url())],
    );
    let lines = child.lines();
    lines.expect("@locked", HANG);
    child.kill(); // SIGKILL: no release
    let (earliest, latest) = expiry_of(&mut conn, "rwlock:r:crash/deep/path");
    // The writer's first attempt comes when the lease has n + 1/2 s left: a waiter that
    // napped its whole second instead of waking when the lease runs out would then get in
    // half a second late, whatever the time the kill took. (Waiting for a point in time:
    // nothing announces it.)
    let left = earliest.saturating_duration_since(Instant::now());
    let fraction = Duration::from_millis((left.as_millis() % 1000) as u64);
    let half = Duration::from_millis(500);
    thread::sleep(if fraction >= half {
        fraction - half
    } else {
        fraction + half
    });
    let writer = RedisRwLock::new(server.pool(), "crash").unwrap();
    let guard = writer.try_write_for(HANG).unwrap();
    let at = Instant::now();
    assert!(
        at + Duration::from_millis(2) >= earliest,
        "the writer got in {:?} before the crashed reader's lease ran out",
        earliest.saturating_duration_since(at)
    );
    assert!(
        at <= latest + ROUND_TRIPS,
        "the writer got in {:?} after the crashed reader's {CRASHED_LEASE:?} lease ran out",
        at - latest
    );
    drop(guard);
    // The dead reader's entries went with their expiry.
    let left: Vec<String> = conn.keys("rwlock:*r*:crash*").unwrap();
    assert!(
        left.iter()
            .all(|k| k.starts_with("rwlock:wake") || k.starts_with("rwlock:released:")),
        "{left:?}"
    );
}

#[test]
fn write_guards_carry_fencing_tokens_from_the_mutex_counter() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = server.pool();
    let lock = RedisRwLock::new(pool.clone(), "ledger/eu").unwrap();
    let mutex = RedisMutex::new(pool.clone(), "ledger").unwrap();
    let first = lock.write().unwrap().fencing_token();
    let from_mutex = mutex.lock().unwrap().fencing_token();
    let second = lock.write().unwrap().fencing_token();
    assert!(
        first < from_mutex && from_mutex < second,
        "{first} {from_mutex} {second}"
    );
    drop(lock.read().unwrap());
    // The counter lives 100 ms after it started; while it lives, it is where it was.
    let counter: Option<u64> = conn.get("lock-fencing-counter").unwrap();
    assert!(
        counter.is_none_or(|c| c == second),
        "a read grant took a token: counter {counter:?}, last token {second}"
    );
}

#[test]
fn threads_sharing_a_lock_read_together_and_write_alone() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = server.pool();
    let lock = Arc::new(RedisRwLock::new(pool.clone(), "local").unwrap());
    let first = lock.read().unwrap();
    let shared = lock.clone();
    let second_read =
        spawn("second reader", move || shared.try_read().map(drop).is_ok()).join(HANG);
    assert!(second_read, "a second local reader shares");
    let readers: i64 = conn.zcard("rwlock:r:local").unwrap();
    assert_eq!(readers, 1, "the second reader has let go");
    let shared = lock.clone();
    let local_write = spawn("local writer", move || {
        shared.try_write().map(drop).unwrap_err().is_would_block()
    })
    .join(HANG);
    assert!(local_write, "a local writer waits for local readers");
    drop(first);

    // Eight local readers behind a remote writer wait on one connection.
    let outsider = RedisRwLock::new(server.pool(), "local").unwrap();
    let writing = outsider.write().unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let lock = lock.clone();
            let done = done.clone();
            spawn(&format!("local reader {i}"), move || {
                let _g = lock.read().unwrap();
                done.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    assert!(eventually(HANG, || blocked_clients(&mut conn) == 1));
    assert_eq!(done.load(Ordering::SeqCst), 0);
    drop(writing);
    for t in threads {
        t.join(HANG);
    }
    assert_eq!(done.load(Ordering::SeqCst), 8);
}

#[test]
fn renewal_keeps_leases_and_losses_are_reported() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = server.pool();
    let (lost_tx, lost_rx) = mpsc::channel();
    let lost_tx = std::sync::Mutex::new(lost_tx);
    let renewed = RedisRwLock::builder(pool.clone(), "long/job")
        .expire(Duration::from_millis(300))
        .auto_renewal(true)
        .on_lost(move |lost| {
            lost_tx.lock().unwrap().send(lost.clone()).ok();
        })
        .build()
        .unwrap();
    let writing = renewed.write().unwrap();
    let reader = RedisRwLock::new(pool.clone(), "long").unwrap();
    // Four expiries' worth of holding: a reader of the ancestor stays out throughout.
    assert!(
        reader
            .try_read_for(Duration::from_millis(1200))
            .unwrap_err()
            .is_would_block()
    );
    writing.ensure_held().unwrap();
    assert!(!writing.is_lost());
    writing.unlock().unwrap();

    let reading = renewed.read().unwrap();
    // Behind its back, the entries go: the renewal thread finds out.
    let _: () = conn.del(&["rwlock:r:long/job", "rwlock:rb:long"]).unwrap();
    let lost = lost_rx.recv_timeout(HANG).expect("on_lost was called");
    assert_eq!(lost.name, "long/job");
    assert_eq!(lost.reason, LostReason::Reset, "{lost:?}");
    assert!(
        lost.owner_id
            .starts_with(&format!("{}#", renewed.owner_id())),
        "the lease's own id: {lost:?}"
    );
    assert_eq!(
        lost.fencing_token, None,
        "read leases take no token: {lost:?}"
    );
    assert!(reading.is_lost());
    assert_eq!(reading.valid_for(), Some(Duration::ZERO));
    assert!(matches!(reading.ensure_held(), Err(Error::LockLost { .. })));
    assert!(matches!(reading.unlock(), Err(Error::LockLost { .. })));

    // Extend without renewal, then a lease that is gone.
    let plain = RedisRwLock::builder(pool, "plain")
        .expire(Duration::from_secs(2))
        .auto_renewal(false)
        .build()
        .unwrap();
    let guard = plain.read().unwrap();
    guard.extend(Duration::from_secs(30)).unwrap();
    let pttl: i64 = conn.pttl("rwlock:r:plain").unwrap();
    assert!(pttl > 29_000 && pttl <= 30_000, "PTTL {pttl}");
    assert!(guard.valid_for().unwrap() > Duration::from_secs(29));
    assert!(matches!(
        guard.extend(Duration::ZERO),
        Err(Error::InvalidOptions { field: "lease", .. })
    ));
    let _: () = conn.del("rwlock:r:plain").unwrap();
    assert!(matches!(
        guard.extend(Duration::from_secs(1)),
        Err(Error::NotAcquired { .. })
    ));
    assert!(guard.is_lost());
    let exists: bool = conn.exists("rwlock:r:plain").unwrap();
    assert!(!exists, "extend never re-creates an entry");
}

#[test]
fn try_read_for_keeps_its_deadline() {
    let server = RedisServer::start();
    let pool = server.pool();
    let writer = RedisRwLock::new(pool.clone(), "slow").unwrap();
    let reader = RedisRwLock::new(pool, "slow/part").unwrap();
    let _guard = writer.write().unwrap();
    for timeout_ms in [300u64, 50, 1] {
        let timeout = Duration::from_millis(timeout_ms);
        let started = Instant::now();
        let result = reader.try_read_for(timeout);
        let elapsed = started.elapsed();
        assert!(result.unwrap_err().is_would_block());
        assert!(
            elapsed >= timeout,
            "returned after {elapsed:?}, before {timeout:?}"
        );
        assert!(
            elapsed < timeout + DEADLINE_SLACK,
            "a {timeout:?} timeout returned after {elapsed:?}"
        );
    }
    // Duration::MAX means "forever", not an overflow.
    let free = RedisRwLock::new(server.pool(), "free").unwrap();
    drop(free.try_write_for(Duration::MAX).unwrap());
    drop(free.try_read_for(Duration::MAX).unwrap());
}

#[test]
fn bad_paths_and_options_are_refused_with_the_field() {
    let server = RedisServer::start();
    let pool = server.pool();
    let field = |r: redis_mutex::Result<RedisRwLock>| match r {
        Err(Error::InvalidOptions { field, .. }) => field,
        other => panic!("expected InvalidOptions, got {other:?}"),
    };
    for path in ["", "/", "/a", "a/", "a//b"] {
        assert_eq!(
            field(RedisRwLock::builder(pool.clone(), path).build()),
            "path",
            "{path:?}"
        );
    }
    let builder = || RedisRwLock::builder(pool.clone(), "x");
    assert_eq!(field(builder().expire(Duration::ZERO).build()), "expire");
    assert_eq!(
        field(builder().signal_expire(Duration::ZERO).build()),
        "signal_expire"
    );
    assert_eq!(field(builder().owner_id("").build()), "owner_id");
    assert_eq!(
        field(builder().response_timeout(Duration::ZERO).build()),
        "response_timeout"
    );
    assert_eq!(
        field(builder().wait_replicas(0, Duration::from_secs(1)).build()),
        "wait_replicas"
    );
    // Leases are renewed by default, so one too short to renew in time is refused...
    assert_eq!(
        field(builder().expire(Duration::from_millis(10)).build()),
        "expire"
    );
    // ...unless renewal is off.
    let unrenewed = builder()
        .expire(Duration::from_millis(10))
        .auto_renewal(false)
        .build()
        .unwrap();
    assert_eq!(unrenewed.expire(), Some(Duration::from_millis(10)));
    // `new` checks the path at construction, as the builder does.
    for path in ["", "a//b"] {
        assert_eq!(
            field(RedisRwLock::new(pool.clone(), path)),
            "path",
            "{path:?}"
        );
    }
    // A key of another type that a lock would use is an error naming the lock, and nothing
    // is half-written: a reader of `typed/x` counts itself among the readers below `typed`.
    let mut conn = server.connection();
    let _: () = conn.set("rwlock:rb:typed", "not a set").unwrap();
    let typed = RedisRwLock::new(pool, "typed/x").unwrap();
    let err = typed.read().unwrap_err();
    assert!(err.is_wrong_type(), "{err:?}");
    assert!(err.to_string().contains("typed/x"), "{err}");
    assert!(matches!(
        typed.try_read(),
        Err(TryLockError::Error(Error::WrongType { .. }))
    ));
    let exists: bool = conn.exists("rwlock:r:typed/x").unwrap();
    assert!(!exists);
    // A writer of `typed/x` never reads or writes the readers below `typed` (a reader of a
    // sibling path does not hold it back): it is granted, and leaves that key alone.
    drop(typed.try_write().unwrap());
    let kind: String = redis::cmd("TYPE")
        .arg("rwlock:rb:typed")
        .query(&mut conn)
        .unwrap();
    assert_eq!(kind, "string");
}

#[test]
fn scripts_survive_script_flush() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let lock = RedisRwLock::builder(server.pool(), "flush/me")
        .expire(Duration::from_secs(5))
        .build()
        .unwrap();
    let guard = lock.write().unwrap();
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut conn).unwrap();
    guard.extend(Duration::from_secs(6)).unwrap();
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut conn).unwrap();
    guard.unlock().unwrap();
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut conn).unwrap();
    drop(lock.read().unwrap());
    let mut counts: HashMap<String, usize> = HashMap::new();
    for (_, kind) in rwlock_keys(&mut conn) {
        *counts.entry(kind).or_default() += 1;
    }
    assert_eq!(counts.get("zset"), None, "no sets left: {counts:?}");
}
