//! Review experiment: a lock without expiry handed "kept" to a waiter of the releasing
//! process stays held by nobody forever when that waiter's wake-up is lost with its
//! connection and it cannot reconnect at once (it returns an error without leaving).

use std::thread;
use std::time::Duration;

use crate::support::proxy::FaultProxy;
use crate::support::{RedisServer, blocked_clients, eventually};
use redis_mutex::{Pool, RedisMutex};

#[test]
fn kept_handover_lost_with_the_waiters_connection() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let pool: Pool = proxy.pool_with(
        Pool::builder()
            .connection_timeout(Duration::from_millis(500))
            .response_timeout(Duration::from_millis(2000)),
    );
    let name = "kept";
    let holder = std::sync::Arc::new(
        RedisMutex::builder(pool.clone(), name)
            .fair(true)
            .build()
            .unwrap(),
    );
    let guard = holder.lock_arc().unwrap();
    let waiter = {
        let pool = pool.clone();
        thread::spawn(move || {
            let m = RedisMutex::builder(pool, name).fair(true).build().unwrap();
            m.lock()
                .map(|g| drop(g.into_handle()))
                .map_err(|e| e.to_string())
        })
    };
    let mut admin = server.connection();
    assert!(eventually(Duration::from_secs(5), || blocked_clients(
        &mut admin
    ) == 1));
    // The network gets slow, then partitions right after the release reached the server.
    proxy.set_latency(Duration::from_millis(300));
    let releaser = thread::spawn(move || guard.unlock().map_err(|e| e.to_string()));
    thread::sleep(Duration::from_millis(450));
    proxy.refuse(true);
    proxy.cut();
    let released = releaser.join().unwrap();
    let waited = waiter.join().unwrap();
    eprintln!("holder's unlock: {released:?}\nwaiter's lock: {waited:?}");
    proxy.heal();
    let value: Option<String> = redis::cmd("GET")
        .arg("lock:kept")
        .query(&mut admin)
        .unwrap();
    let pttl: i64 = redis::cmd("PTTL")
        .arg("lock:kept")
        .query(&mut admin)
        .unwrap();
    eprintln!("right after: lock:kept = {value:?}, PTTL {pttl}");
    thread::sleep(Duration::from_secs(5));
    let value: Option<String> = redis::cmd("GET")
        .arg("lock:kept")
        .query(&mut admin)
        .unwrap();
    let pttl: i64 = redis::cmd("PTTL")
        .arg("lock:kept")
        .query(&mut admin)
        .unwrap();
    eprintln!("5 s later (CLAIM_WINDOW is 3 s): lock:kept = {value:?}, PTTL {pttl}");
    let other = RedisMutex::builder(server.pool(), name)
        .fair(true)
        .build()
        .unwrap();
    eprintln!(
        "another client's try_lock_for(2s): {:?}",
        other
            .try_lock_for(Duration::from_secs(2))
            .map(|_| ())
            .map_err(|e| e.to_string())
    );
    assert!(value.is_none(), "held by nobody, without expiry");
}

#[test]
fn control_waiter_of_another_pool_gets_the_provisional_expiry() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let pool: Pool = proxy.pool_with(
        Pool::builder()
            .connection_timeout(Duration::from_millis(500))
            .response_timeout(Duration::from_millis(2000)),
    );
    let name = "kept";
    let holder = std::sync::Arc::new(
        RedisMutex::builder(server.pool(), name)
            .fair(true)
            .build()
            .unwrap(),
    );
    let guard = holder.lock_arc().unwrap();
    let waiter = {
        let pool = pool.clone();
        thread::spawn(move || {
            let m = RedisMutex::builder(pool, name).fair(true).build().unwrap();
            m.lock()
                .map(|g| drop(g.into_handle()))
                .map_err(|e| e.to_string())
        })
    };
    let mut admin = server.connection();
    assert!(eventually(Duration::from_secs(5), || blocked_clients(
        &mut admin
    ) == 1));
    proxy.set_latency(Duration::from_millis(300));
    thread::sleep(Duration::from_millis(50));
    let released = guard.unlock().map_err(|e| e.to_string());
    thread::sleep(Duration::from_millis(150));
    proxy.refuse(true);
    proxy.cut();
    let waited = waiter.join().unwrap();
    eprintln!("control: holder's unlock: {released:?}\ncontrol: waiter's lock: {waited:?}");
    proxy.heal();
    let pttl: i64 = redis::cmd("PTTL")
        .arg("lock:kept")
        .query(&mut admin)
        .unwrap();
    eprintln!("control: right after PTTL {pttl}");
    thread::sleep(Duration::from_secs(5));
    let value: Option<String> = redis::cmd("GET")
        .arg("lock:kept")
        .query(&mut admin)
        .unwrap();
    eprintln!("control: 5 s later lock:kept = {value:?}");
    assert!(value.is_none());
}
