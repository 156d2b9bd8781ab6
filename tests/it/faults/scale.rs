//! At scale: `reset_all` over 100,000 locks works in short steps and leaves other keys
//! alone, and 100,000 locks taken and released leave no key behind.

use std::thread;
use std::time::{Duration, Instant};

use crate::support::{RedisServer, command_calls, command_stats, eventually, spawn};
use redis::Commands;
use redis_mutex::{Pool, RedisMutex, reset_all};

/// Held by the tests that load the machine or time the server, so that they do not run at
/// the same time.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Keys as `SCAN` sees them now (expired keys are not returned, and are reclaimed).
fn live_keys(conn: &mut redis::Connection) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    for _ in 0..100_000 {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(conn)
            .unwrap();
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            return keys;
        }
    }
    panic!("SCAN did not finish");
}

#[test]
fn reset_all_over_100_000_locks_works_in_short_steps_and_leaves_other_keys() {
    const LOCKS: usize = 100_000;
    // Commands slower than this are logged by the server.
    const SLOW: Duration = Duration::from_millis(2);
    let _heavy = heavy();
    let server = RedisServer::start_with(&[
        "--slowlog-log-slower-than",
        &SLOW.as_micros().to_string(),
        "--slowlog-max-len",
        "10000",
    ]);
    let mut conn = server.connection();
    let pool = server.pool();
    for chunk in (0..LOCKS).collect::<Vec<_>>().chunks(5_000) {
        let pairs: Vec<(String, String)> = chunk
            .iter()
            .map(|i| (format!("lock:bulk-{i}"), format!("owner-{i}")))
            .collect();
        let _: () = conn.mset(&pairs).unwrap();
    }
    // Keys that are not locks, some of them close: all must stay.
    let others = [
        "locks:bulk-1",
        "lock",
        "lock-signal:not-a-lock",
        "Lock:bulk-1",
        "other",
        "xlock:bulk-1",
    ];
    for key in others {
        let _: () = conn.set(key, "not a lock").unwrap();
    }
    let _: () = conn.hset("lock:a-hash", "field", "value").unwrap();
    let _: () = conn.rpush("lock:a-list", "x").unwrap();
    let _: () = redis::cmd("SLOWLOG").arg("RESET").query(&mut conn).unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut conn)
        .unwrap();

    let started = Instant::now();
    assert_eq!(reset_all(&pool).unwrap(), LOCKS);
    let took = started.elapsed();

    // The commands that took longer than SLOW, with their durations in microseconds.
    let slow: Vec<(String, i64)> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query::<Vec<redis::Value>>(&mut conn)
        .unwrap()
        .into_iter()
        .map(|entry| {
            let redis::Value::Array(fields) = entry else {
                panic!("a SLOWLOG entry: {entry:?}")
            };
            let micros: i64 = redis::from_redis_value_ref(&fields[2]).unwrap();
            let args: Vec<Vec<u8>> = redis::from_redis_value_ref(&fields[3]).unwrap();
            (String::from_utf8_lossy(&args[0]).to_uppercase(), micros)
        })
        .filter(|(command, _)| command != "SLOWLOG" && command != "CONFIG")
        .collect();
    let longest = slow.iter().map(|(_, micros)| *micros).max().unwrap_or(0);
    let (scripts, script_micros) = command_stats(&mut conn, "evalsha");
    let (scans, scan_micros) = command_stats(&mut conn, "scan");
    println!(
        "reset_all of {LOCKS} locks: {took:?} in {scans} SCAN calls of {scan_micros} µs and \
         {scripts} script calls of {script_micros} µs on average; {} command(s) over {SLOW:?}, \
         the longest {longest} µs",
        slow.len()
    );
    assert_eq!(command_calls(&mut conn, "keys"), 0, "reset_all used KEYS");
    // SCAN steps of about 500 keys, each reset by one script call.
    assert!(
        scripts >= (LOCKS / 1000) as u64,
        "{scripts} script calls for {LOCKS} locks: too few steps"
    );
    // A few milliseconds per step (2-4 ms here; one call over all locks would take
    // hundreds). The average, since the scheduler can stretch any single step on a loaded
    // 2-core machine.
    assert!(
        script_micros < 10_000.0 && scan_micros < 10_000.0,
        "a step of reset_all keeps Redis busy for {script_micros} µs (script) and {scan_micros} µs (SCAN)"
    );

    for key in others.iter().chain(&["lock:a-hash", "lock:a-list"]) {
        let exists: bool = conn.exists(key).unwrap();
        assert!(exists, "{key} was deleted");
    }
    let locks_left: Vec<String> = conn.keys("lock:bulk-*").unwrap();
    assert!(locks_left.is_empty(), "{} locks left", locks_left.len());
}

/// How long a grant marker (`lock-grant:<name>`) outlives a release: it lives
/// max(2 x the response timeout, 10 s) from the grant, for an undo after a lost reply.
const GRANT_MARKER_LIFE: Duration = Duration::from_secs(10);

#[test]
fn a_hundred_thousand_locks_leave_no_key_behind() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 12_500;
    let _heavy = heavy();
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = server.pool_with(Pool::builder().max_size(THREADS as u32));
    let signal_expire = Duration::from_millis(200);
    let started = Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let pool = pool.clone();
            spawn(&format!("locker-{t}"), move || {
                for i in 0..PER_THREAD {
                    let name = format!("hygiene-{t}-{i}");
                    let mut builder =
                        RedisMutex::builder(pool.clone(), name).signal_expire(signal_expire);
                    // Half with an expiry, half without; half unlocked, half dropped.
                    if i % 2 == 0 {
                        builder = builder.expire(Duration::from_secs(30));
                    }
                    let mutex = builder.build().unwrap();
                    let guard = mutex.lock().unwrap();
                    if i % 4 < 2 {
                        guard.unlock().unwrap();
                    } else {
                        drop(guard);
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        // A few minutes of work on a loaded 2-core machine, at most.
        thread.join(Duration::from_secs(600));
    }
    let released = Instant::now();
    println!(
        "{} locks taken and released in {:?}",
        THREADS * PER_THREAD,
        released - started
    );
    // Until every release's signal has expired.
    thread::sleep(signal_expire + Duration::from_millis(50));
    let left = live_keys(&mut conn);
    // No lock and no signal is left; only the grant markers and the releases' notes, which
    // expire by themselves.
    let lingering = |k: &str| {
        k.starts_with("lock-grant:")
            || k.starts_with("lock-released:")
            || k.starts_with("lock-done:")
    };
    let ours: Vec<&String> = left
        .iter()
        .filter(|k| k.contains("hygiene-") && !lingering(k))
        .collect();
    assert!(
        ours.is_empty(),
        "{} keys of the locks are left, such as {:?}",
        ours.len(),
        ours.iter().take(5).collect::<Vec<_>>()
    );
    let markers: Vec<&String> = left.iter().filter(|k| lingering(k)).collect();
    let mut longest = 0;
    for key in markers.iter().step_by(97) {
        let pttl: i64 = conn.pttl(key.as_str()).unwrap();
        assert!(
            pttl <= GRANT_MARKER_LIFE.as_millis() as i64 && pttl != -1,
            "the grant marker {key} lives on: PTTL {pttl}"
        );
        longest = longest.max(pttl);
    }
    // Waiting for their expiry: nothing announces it, and the sample's longest life is not
    // every key's. Within a marker's life from now, nothing per lock is left at all.
    println!("the longest life left of the sampled markers and notes: {longest} ms");
    eventually(GRANT_MARKER_LIFE + Duration::from_secs(1), || {
        !live_keys(&mut conn).iter().any(|k| k.contains("hygiene-"))
    });
    let left = live_keys(&mut conn);
    let ours: Vec<&String> = left.iter().filter(|k| k.contains("hygiene-")).collect();
    assert!(
        ours.is_empty(),
        "{} keys of the locks are left after the markers' life, such as {:?}",
        ours.len(),
        ours.iter().take(5).collect::<Vec<_>>()
    );
    // Nothing per lock either: at most a key or two the protocol shares between all locks.
    assert!(left.len() <= 2, "keys left: {left:?}");
    println!("keys left after the markers' life: {left:?}");
    let dbsize: usize = redis::cmd("DBSIZE").query(&mut conn).unwrap();
    assert_eq!(dbsize, left.len(), "expired keys were reclaimed");
}
