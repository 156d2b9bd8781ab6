//! Redlock when instances fail: one stalled, one cut off and refusing, three healthy.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::proxy::FaultProxy;
use crate::support::{HANG, RedisServer, command_calls, eventually, spawn};
use redis::Commands;
use redis_mutex::Redlock;

/// How long a server's command counts must stay unchanged to count as quiet: far longer
/// than a healed proxy takes to hand over what it held, and the server to run it.
const QUIET: Duration = Duration::from_millis(300);

/// Scenario 7: a Redlock over five instances, one stalled behind a proxy, one cut off and
/// refusing, three healthy.
#[test]
fn redlock_with_a_stalled_and_a_cut_instance_stays_exclusive_and_leaves_no_key() {
    const THREADS: usize = 3;
    const CYCLES: usize = 8;
    // No key in this test disappears by expiring: a key found gone was deleted.
    let ttl = Duration::from_secs(30);
    let starts: Vec<_> = (0..5)
        .map(|i| spawn(&format!("start server {i}"), RedisServer::start))
        .collect();
    let servers: Arc<Vec<RedisServer>> =
        Arc::new(starts.into_iter().map(|s| s.join(HANG)).collect());
    let storage = RedisServer::start();
    let stalled = FaultProxy::start(servers[0].port());
    let cut = FaultProxy::start(servers[1].port());
    let mut pools = vec![stalled.pool(), cut.pool()];
    pools.extend(servers[2..].iter().map(RedisServer::pool));
    let redlock = Arc::new(
        Redlock::builder(pools)
            .retry_count(100)
            .retry_delay(Duration::from_millis(50))
            .build()
            .unwrap(),
    );
    // A round trip to every instance first, so that the stall meets open connections.
    drop(redlock.lock("resource", ttl).unwrap());

    stalled.stall();
    cut.refuse(true);
    cut.cut();

    let inside = Arc::new(AtomicUsize::new(0));
    let acquired = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (redlock, inside, acquired) = (redlock.clone(), inside.clone(), acquired.clone());
            let mut counter = storage.connection();
            let mut healthy: Vec<redis::Connection> =
                servers[2..].iter().map(RedisServer::connection).collect();
            spawn(&format!("locker-{t}"), move || {
                for _ in 0..CYCLES {
                    let guard = redlock
                        .lock("resource", ttl)
                        .expect("a healthy majority locks");
                    assert_eq!(
                        inside.fetch_add(1, Ordering::SeqCst),
                        0,
                        "two holders at once"
                    );
                    assert!(guard.valid_for().unwrap() > Duration::ZERO);
                    for conn in &mut healthy {
                        let value: Option<String> = conn.get("resource").unwrap();
                        assert_eq!(
                            value.as_deref(),
                            Some(guard.owner_id()),
                            "a healthy instance"
                        );
                    }
                    let value: i64 = counter
                        .get::<_, Option<i64>>("counter")
                        .unwrap()
                        .unwrap_or(0);
                    let _: () = counter.set("counter", value + 1).unwrap();
                    acquired.fetch_add(1, Ordering::SeqCst);
                    inside.fetch_sub(1, Ordering::SeqCst);
                    guard.unlock().expect("a healthy majority releases");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join(Duration::from_secs(60));
    }
    let total: i64 = storage.connection().get("counter").unwrap();
    assert_eq!(acquired.load(Ordering::SeqCst), THREADS * CYCLES);
    assert_eq!(total, (THREADS * CYCLES) as i64, "an update was lost");
    // The first lock sets the resource's key and its marker; nothing came after the cut.
    let calls_while_cut = command_calls(&mut servers[1].connection(), "set");
    assert_eq!(
        calls_while_cut, 2,
        "the cut instance saw only the first lock"
    );

    // Heal: the stalled instance now runs every SET it was sent, and the releases queued
    // behind them on the same connections.
    let mut conns: Vec<redis::Connection> = servers.iter().map(RedisServer::connection).collect();
    let set_calls = command_calls(&mut conns[0], "set");
    stalled.heal();
    cut.heal();
    // Nothing announces the end of what the proxy held: wait until the stalled instance
    // has run some of it and then stays quiet, with no key left.
    let mut seen = (0, 0, 0);
    let mut changed = Instant::now();
    let settled = eventually(HANG, || {
        let conn = &mut conns[0];
        let now = (
            command_calls(conn, "set"),
            command_calls(conn, "evalsha"),
            command_calls(conn, "eval"),
        );
        if now != seen {
            seen = now;
            changed = Instant::now();
        }
        let keys: u64 = redis::cmd("DBSIZE").query(conn).unwrap();
        now.0 > set_calls && keys == 0 && changed.elapsed() >= QUIET
    });
    let held_sets = command_calls(&mut conns[0], "set") - set_calls;
    assert!(
        held_sets > 0,
        "the stalled instance was sent SETs during the stall"
    );
    assert!(
        settled,
        "the stalled instance never settled with no key left after healing"
    );
    let left: Vec<u64> = conns
        .iter_mut()
        .map(|c| redis::cmd("DBSIZE").query(c).unwrap())
        .collect();
    assert_eq!(left, [0; 5], "keys left on the instances after healing");
    println!("the stalled instance ran {held_sets} held SETs after healing, and no key is left");
}
