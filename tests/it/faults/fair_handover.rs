//! A fair handover whose wake-up is lost. In fair mode a release hands the lock to the first
//! live waiter inside the release script, and the waiter's wake-up is its grant. A lock
//! without expiry is handed over with a provisional expiry, the claim window, which only the
//! waiter's claim lifts: a waiter that never takes its grant holds the lock up for that
//! window at most, not forever.
//!
//! These tests lose the wake-up with the waiter's connection, the network refusing new
//! connections until the waiter's `lock()` has failed, with the holder and the waiter in one
//! pool: the case where a release used to hand its own process's waiter the lock without
//! that expiry, leaving it held by nobody for good.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::proxy::FaultProxy;
use crate::support::{HANG, RedisServer, blocked_clients, eventually, spawn};
use redis_mutex::{Pool, RedisMutex};

/// How long a lock without expiry handed to a fair waiter lives until the waiter claims it
/// (`CLAIM_WINDOW` in `src/mutex/calls.rs`).
const CLAIM_WINDOW: Duration = Duration::from_secs(3);

/// The delay the proxy adds to every chunk, both ways, while the lock is handed over: the
/// time between the handover and its wake-up reaching the waiter, in which the test cuts
/// the network. Short enough that the waiter's queue entry (refreshed at least every
/// 500 ms while it waits, live 1.5 s) is still live when the release arrives.
const LATENCY: Duration = Duration::from_millis(400);

/// How much longer than the claim window another client may take to get the lock: a few
/// of its polls and replies.
const SLACK: Duration = Duration::from_secs(2);

/// One GET on `server`, read directly.
fn get(conn: &mut redis::Connection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(conn).unwrap()
}

/// The holder and a waiter of a fair mutex without expiry share one pool through the fault
/// proxy. The holder's release reaches the server and hands the lock to the waiter; the
/// network then cuts every connection and refuses new ones before the waiter reads its
/// wake-up, so the waiter's `lock()` fails without taking its grant. Once the network heals,
/// the lock expires within its claim window, and another client gets it.
#[test]
fn a_fair_handover_lost_with_the_waiters_connection_frees_the_lock_within_its_claim_window() {
    let name = "handed-over";
    let (lock_key, grant_key) = (format!("lock:{name}"), format!("lock-grant:{name}"));
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let pool: Pool = proxy.pool_with(
        Pool::builder()
            .connection_timeout(Duration::from_millis(500))
            .response_timeout(Duration::from_millis(2000)),
    );
    let fair = |pool: &Pool| {
        Arc::new(
            RedisMutex::builder(pool.clone(), name)
                .fair(true)
                .build()
                .unwrap(),
        )
    };
    let guard = fair(&pool).lock_arc().expect("the holder takes the lock");
    let mut admin = server.connection();
    let holders_grant = get(&mut admin, &grant_key).expect("a grant leaves its marker");
    let waiter = {
        let mutex = fair(&pool);
        spawn("the waiter", move || {
            mutex
                .lock()
                .map(|guard| drop(guard.into_handle()))
                .map_err(|e| e.to_string())
        })
    };

    // The proxy delays every chunk while the waiter sits in `BLPOP`. Seen blocked once the
    // delay is on, the waiter sends nothing more until a reply the proxy delays reaches it:
    // its next request arrives well after the release, which the cut below drops. (Its
    // `BLPOP` ends every 500 ms to refresh its entry; when it ended just as the delay went on,
    // the delay is taken off and the waiter awaited again.)
    let mut armed = false;
    for _ in 0..10 {
        let blocked = eventually(HANG, || blocked_clients(&mut admin) == 1);
        assert!(blocked, "the waiter should block in BLPOP within {HANG:?}");
        proxy.set_latency(LATENCY);
        if blocked_clients(&mut admin) == 1 {
            armed = true;
            break;
        }
        proxy.set_latency(Duration::ZERO);
    }
    assert!(
        armed,
        "the waiter should stay blocked in BLPOP while the proxy's delay goes on, in one of \
         10 tries"
    );
    let releaser = spawn("the holder's unlock", move || {
        guard.unlock().map_err(|e| e.to_string())
    });
    // The release reaches the server and hands the lock to the waiter: the grant marker
    // names the waiter's grant. The wake-up is on its way back, LATENCY behind; cut it.
    let mut marker = None;
    let handed_over = eventually(HANG, || {
        marker = get(&mut admin, &grant_key);
        marker.as_ref().is_some_and(|m| *m != holders_grant)
    });
    proxy.refuse(true);
    proxy.cut();
    assert!(
        handed_over,
        "the release should hand the lock to the waiter within {HANG:?}: the grant marker was \
         {holders_grant:?} and is {marker:?}"
    );
    let waited = waiter.join(HANG);
    let released = releaser.join(HANG);
    println!("the holder's unlock: {released:?}; the waiter's lock: {waited:?}");
    assert!(
        waited.is_err(),
        "the waiter's wake-up is lost with its connection and it cannot connect again, so its \
         lock() fails; it returned {waited:?}"
    );
    proxy.heal();

    let pttl: i64 = redis::cmd("PTTL").arg(&lock_key).query(&mut admin).unwrap();
    let window = CLAIM_WINDOW.as_millis() as i64;
    assert!(
        pttl == -2 || (1..=window).contains(&pttl),
        "a lock handed to a waiter that never took it lives its claim window ({window} ms) at \
         most, not forever: {lock_key} has PTTL {pttl} ms (held by {:?})",
        get(&mut admin, &lock_key)
    );
    let other = fair(&server.pool());
    let asked = Instant::now();
    let got = other
        .try_lock_for(CLAIM_WINDOW + SLACK)
        .map(|guard| drop(guard.into_handle()));
    let took = asked.elapsed();
    assert!(
        got.is_ok(),
        "another client should get the lock within the claim window and {SLACK:?}; \
         try_lock_for({:?}) returned {got:?} after {took:?}",
        CLAIM_WINDOW + SLACK
    );
    assert_eq!(
        get(&mut admin, &lock_key).as_deref(),
        Some(other.owner_id()),
        "the other client holds the lock"
    );
    println!(
        "PTTL {pttl} ms after the network healed; the other client got the lock after {took:?}"
    );
}
