//! A capacity set with `set_permits` lives as long as anyone holds a permit or waits for
//! one (docs/semaphore.md, "The capacity, and changing it in use"): lowered below the
//! builders' `permits`, it must not lapse under a holder whose permit is renewed for longer
//! than the capacity key's own life with no acquire meanwhile, or the builders' capacity
//! comes back and lets a second holder in. The key (`semaphore-capacity:<name>`) lives an
//! hour after an acquire; these tests stand for that hour passing by shortening its life
//! with `PEXPIRE` in Redis, then let renewals, refreshes and releases happen.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{HANG, RedisServer, blocked_clients, eventually, spawn};
use redis::Commands;
use redis_mutex::{Pool, RedisSemaphore, TryLockError};

/// The builders' capacity, above the one set in use.
const BUILT: u32 = 5;

/// What is left of the capacity key's life once "the hour" has passed.
const LEFT: Duration = Duration::from_millis(600);

/// How long after the shortening the semaphore is asked again: past `LEFT`, with time for
/// a few renewals of a 900 ms lease (every 300 ms) and refreshes of a waiter's entry (every
/// 500 ms at most).
const LATER: Duration = Duration::from_millis(1500);

/// The holder's lease: renewed every 300 ms.
const LEASE: Duration = Duration::from_millis(900);

fn semaphore(pool: Pool, name: &str) -> RedisSemaphore {
    RedisSemaphore::builder(pool, name)
        .permits(BUILT)
        .expire(LEASE)
        .auto_renewal(true)
        .build()
        .unwrap()
}

/// Shortens the capacity key's life to `LEFT` (the hour since the last acquire is up),
/// then lets `LATER` pass, watching the key; says what became of it.
fn an_hour_passes(conn: &mut redis::Connection, name: &str) -> String {
    let key = format!("semaphore-capacity:{name}");
    let pttl: i64 = conn.pttl(&key).unwrap();
    let shortened: bool = conn.pexpire(&key, LEFT.as_millis() as i64).unwrap();
    assert!(
        shortened,
        "no capacity key `{key}` to shorten (PTTL {pttl}): docs/semaphore.md names it"
    );
    let from = Instant::now();
    let mut gone_at = None;
    // Simulated time passing, watched in steps: no event to await.
    while from.elapsed() < LATER {
        if gone_at.is_none() && !conn.exists::<_, bool>(&key).unwrap() {
            gone_at = Some(from.elapsed());
        }
        thread::sleep(Duration::from_millis(20));
    }
    let now: i64 = conn.pttl(&key).unwrap();
    format!(
        "capacity key PTTL {pttl} ms before, shortened to {LEFT:?}; gone after {gone_at:?}; \
         PTTL {now} ms {LATER:?} later"
    )
}

/// `set_permits(1)` on a semaphore built with 5; a permit held and renewed past the
/// capacity key's life with no acquire meanwhile: the next acquire, from another pool,
/// still sees a capacity of 1 (refused, `available_permits` 0), never a second holder.
/// Once the permit is released, one holder again, and only one.
#[test]
fn a_lowered_capacity_does_not_lapse_while_a_permit_is_held() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let name = "capacity-held";
    let holder = semaphore(server.pool(), name);
    holder.set_permits(1).unwrap();
    let permit = holder.acquire().unwrap();
    let other = semaphore(server.pool(), name);
    assert!(
        matches!(other.try_acquire(), Err(TryLockError::WouldBlock)),
        "a second holder under a capacity of 1, before any time passed"
    );
    // `other`'s refused attempt is the last acquire: the hour runs from it.
    let what = an_hour_passes(&mut conn, name);
    println!("held: {what}");
    permit
        .ensure_held()
        .expect("the permit was renewed throughout");
    // A newcomer from another pool (another process, as far as anyone can tell).
    let newcomer = semaphore(server.pool(), name);
    let available = newcomer.available_permits().unwrap();
    let attempt = newcomer.try_acquire();
    let two_holders = attempt.is_ok();
    drop(attempt);
    assert!(
        !two_holders && available == 0,
        "the capacity of 1 lapsed while its permit was held ({what}): {available} permits \
         available, and a second holder got in: {two_holders}"
    );
    permit.release().unwrap();
    let next = newcomer
        .try_acquire()
        .expect("the permit was released: one holder may come in");
    assert!(
        matches!(other.try_acquire(), Err(TryLockError::WouldBlock)),
        "two holders under a capacity of 1 after the release"
    );
    next.release().unwrap();
}

/// `set_permits(2)` on a semaphore built with 5; one permit held (a long lease, not
/// renewed) and a waiter for two waiting, refreshing its place, past the capacity key's life
/// with no grant meanwhile: the waiter must still wait (a capacity of 5 would let it in,
/// three permits held under a capacity of 2). Once the one permit is released, the waiter
/// gets its two, and nobody else gets in.
#[test]
fn a_lowered_capacity_does_not_lapse_while_a_waiter_waits() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let name = "capacity-waited";
    let unrenewed = RedisSemaphore::builder(server.pool(), name)
        .permits(BUILT)
        .expire(HANG)
        .auto_renewal(false)
        .build()
        .unwrap();
    unrenewed.set_permits(2).unwrap();
    let permit = unrenewed.acquire().unwrap();
    let (got_tx, got_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let waiter = {
        let sem = std::sync::Arc::new(semaphore(server.pool(), name));
        spawn("waiter", move || {
            let started = Instant::now();
            let permits = sem.try_acquire_many_arc_for(2, HANG / 2);
            let got = permits
                .as_ref()
                .map(|p| p.permits())
                .map_err(|e| e.to_string());
            got_tx.send((started.elapsed(), got)).unwrap();
            if permits.is_ok() {
                release_rx.recv_timeout(HANG).ok();
            }
            drop(permits);
        })
    };
    let mut returned = None;
    let waiting = eventually(HANG, || {
        returned = got_rx.try_recv().ok();
        returned.is_some() || blocked_clients(&mut conn) >= 1
    });
    assert!(
        waiting && returned.is_none(),
        "with one of two permits held, a waiter for two did not wait: it returned {returned:?}"
    );
    let what = an_hour_passes(&mut conn, name);
    println!("waited: {what}");
    let early = got_rx.try_recv().ok();
    let available = semaphore(server.pool(), name).available_permits().unwrap();
    assert!(
        early.is_none() && available == 1,
        "the capacity of 2 lapsed while a waiter waited ({what}): the waiter got in: \
         {early:?}; {available} permits available"
    );
    permit.release().unwrap();
    let (waited, got) = got_rx
        .recv_timeout(HANG)
        .expect("the waiter returned once the permit was released");
    assert_eq!(got, Ok(2), "the waiter was not let in by the release");
    println!("the waiter got its two permits after {waited:?}");
    let newcomer = semaphore(server.pool(), name);
    assert!(
        matches!(newcomer.try_acquire(), Err(TryLockError::WouldBlock)),
        "three permits held under a capacity of 2"
    );
    release_tx.send(()).unwrap();
    waiter.join(HANG);
}
