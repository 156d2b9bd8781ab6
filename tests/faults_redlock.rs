//! Redlock when instances fail: one stalled, one cut off and refusing, three healthy.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use redis::Commands;
use redis_mutex::Redlock;
use support::proxy::FaultProxy;
use support::{RedisServer, drain};

/// Scenario 7: a Redlock over five instances, one stalled behind a proxy, one cut off and
/// refusing, three healthy.
#[test]
fn redlock_with_a_stalled_and_a_cut_instance_stays_exclusive_and_leaves_no_key() {
    const THREADS: usize = 3;
    const CYCLES: usize = 8;
    // No key in this test disappears by expiring: a key found gone was deleted.
    let ttl = Duration::from_secs(30);
    let servers: Vec<RedisServer> = thread::scope(|s| {
        let starts: Vec<_> = (0..5).map(|_| s.spawn(RedisServer::start)).collect();
        starts.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let storage = RedisServer::start();
    let stalled = FaultProxy::start(servers[0].port());
    let cut = FaultProxy::start(servers[1].port());
    let stalled_pool = stalled.pool();
    let mut pools = vec![stalled_pool.clone(), cut.pool()];
    pools.extend(servers[2..].iter().map(RedisServer::pool));
    let redlock = Redlock::builder(pools)
        .retry_count(100)
        .retry_delay(Duration::from_millis(50))
        .build()
        .unwrap();
    // A round trip to every instance first, so that the stall meets open connections.
    drop(redlock.lock("resource", ttl).unwrap());

    stalled.stall();
    cut.refuse(true);
    cut.cut();

    let inside = AtomicUsize::new(0);
    let acquired = AtomicUsize::new(0);
    thread::scope(|s| {
        for _ in 0..THREADS {
            let (redlock, inside, acquired) = (&redlock, &inside, &acquired);
            let mut counter = storage.connection();
            let mut healthy: Vec<redis::Connection> =
                servers[2..].iter().map(RedisServer::connection).collect();
            s.spawn(move || {
                for _ in 0..CYCLES {
                    let guard = redlock
                        .lock("resource", ttl)
                        .expect("a healthy majority locks");
                    assert_eq!(
                        inside.fetch_add(1, Ordering::SeqCst),
                        0,
                        "two holders at once"
                    );
                    assert!(guard.validity() > Duration::ZERO);
                    for conn in &mut healthy {
                        let value: Option<String> = conn.get("resource").unwrap();
                        assert_eq!(value.as_deref(), Some(guard.token()), "a healthy instance");
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
            });
        }
    });
    let total: i64 = storage.connection().get("counter").unwrap();
    assert_eq!(acquired.load(Ordering::SeqCst), THREADS * CYCLES);
    assert_eq!(total, (THREADS * CYCLES) as i64, "an update was lost");
    let calls_while_cut = support::command_calls(&mut servers[1].connection(), "set");
    assert_eq!(
        calls_while_cut, 1,
        "the cut instance saw only the first lock"
    );

    // Heal: the stalled instance now runs every SET it was sent, and the releases queued
    // behind them on the same connections.
    let mut conns: Vec<redis::Connection> = servers.iter().map(RedisServer::connection).collect();
    let set_calls = support::command_calls(&mut conns[0], "set");
    stalled.heal();
    cut.heal();
    drain(&stalled_pool);
    let held_sets = support::command_calls(&mut conns[0], "set") - set_calls;
    assert!(
        held_sets > 0,
        "the stalled instance was sent SETs during the stall"
    );
    let left: Vec<u64> = conns
        .iter_mut()
        .map(|c| redis::cmd("DBSIZE").query(c).unwrap())
        .collect();
    assert_eq!(left, [0; 5], "keys left on the instances after healing");
    println!("the stalled instance ran {held_sets} held SETs after healing, and no key is left");
}
