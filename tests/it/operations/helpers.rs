//! The helpers users reach for: `with_lock`, `try_with_lock_for`, the owned `lock_arc`
//! guards, and `renew`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::support::{HANG, RedisServer};
use redis::Commands;
use redis_mutex::{
    ArcRedisMutexGuard, Error, LostReason, Pool, RedisMutex, RedisMutexGuard, TryLockError,
};

/// Whether someone other than `mutex` could take its lock now.
fn taken(pool: &Pool, name: &str) -> bool {
    let other = RedisMutex::new(pool.clone(), name).unwrap();
    match other.try_lock() {
        Err(TryLockError::WouldBlock) => true,
        Ok(_) => false,
        Err(e) => panic!("try_lock: {e}"),
    }
}

#[test]
fn with_lock_runs_the_closure_under_the_lock_and_releases_it() {
    let server = RedisServer::start();
    let pool = server.pool();
    let mutex = RedisMutex::builder(pool.clone(), "job")
        .owner_id("worker-1")
        .build()
        .unwrap();
    let seen = mutex
        .with_lock(|| {
            assert!(
                taken(&pool, "job"),
                "the lock is held while the closure runs"
            );
            mutex.get_owner_id().unwrap()
        })
        .unwrap();
    assert_eq!(seen.as_deref(), Some("worker-1"));
    assert!(!mutex.is_locked().unwrap(), "released after the closure");
    let keys: Vec<String> = server.connection().keys("lock:job").unwrap();
    assert!(keys.is_empty(), "the lock key is gone: {keys:?}");
}

#[test]
fn with_lock_reports_a_lock_lost_or_run_out_while_the_closure_ran() {
    let server = RedisServer::start();
    let pool = server.pool();
    let operator = RedisMutex::new(pool.clone(), "job").unwrap();

    // Without renewal nobody notices the reset until the release, which finds the lock no
    // longer ours: the closure's result is replaced by `NotAcquired`.
    let plain = RedisMutex::builder(pool.clone(), "job")
        .expire(Duration::from_secs(10))
        .build()
        .unwrap();
    let ran = AtomicBool::new(false);
    let err = plain
        .with_lock(|| {
            assert!(operator.reset().unwrap());
            ran.store(true, Ordering::SeqCst);
            42
        })
        .unwrap_err();
    assert!(ran.load(Ordering::SeqCst), "the closure ran to its end");
    assert!(matches!(err, Error::NotAcquired { .. }), "{err:?}");

    // With renewal the loss is found while the closure runs, and reported as such.
    let (lost_tx, lost_rx) = mpsc::channel();
    let renewed = RedisMutex::builder(pool, "job")
        .expire(Duration::from_millis(600))
        .auto_renewal(true)
        .on_lost(move |lost| {
            let _ = lost_tx.send(lost.reason);
        })
        .build()
        .unwrap();
    let err = renewed
        .with_lock(|| {
            assert!(operator.reset().unwrap());
            // The renewal thread finds the reset at its next renewal (within a lease).
            lost_rx.recv_timeout(HANG).expect("the loss is noticed")
        })
        .unwrap_err();
    assert!(matches!(err, Error::LockLost { .. }), "{err:?}");
}

#[test]
fn try_with_lock_for_does_not_run_the_closure_when_the_lock_stays_held() {
    let server = RedisServer::start();
    let pool = server.pool();
    let holder = RedisMutex::new(pool.clone(), "rebuild").unwrap();
    let waiter = RedisMutex::new(pool, "rebuild").unwrap();

    let guard = holder.lock().unwrap();
    let ran = AtomicBool::new(false);
    let outcome = waiter.try_with_lock_for(Duration::from_millis(100), || {
        ran.store(true, Ordering::SeqCst)
    });
    assert!(
        matches!(outcome, Err(TryLockError::WouldBlock)),
        "{outcome:?}"
    );
    assert!(!ran.load(Ordering::SeqCst), "the closure did not run");
    drop(guard);

    let value = waiter
        .try_with_lock_for(Duration::from_secs(1), || "rebuilt")
        .unwrap();
    assert_eq!(value, "rebuilt");
    assert!(!waiter.is_locked().unwrap());
}

/// Builds a mutex and returns a guard on it: possible only because the guard owns its
/// mutex (`'static`).
fn lock_for_a_while(pool: Pool, name: &str) -> Result<ArcRedisMutexGuard, Error> {
    let mutex = Arc::new(RedisMutex::new(pool, name)?);
    mutex.lock_arc()
}

fn assert_send_static<T: Send + 'static>(_: &T) {}
fn assert_send<T: Send>(_: &T) {}

#[test]
fn an_owned_guard_can_be_returned_and_sent_to_another_thread_with_its_lock() {
    let server = RedisServer::start();
    let pool = server.pool();

    let guard = lock_for_a_while(pool.clone(), "import").unwrap();
    assert_send_static(&guard);
    assert!(taken(&pool, "import"));
    let worker = thread::spawn(move || {
        // The lock travels with the guard.
        guard.ensure_held().unwrap();
        guard.unlock()
    });
    worker.join().unwrap().unwrap();
    assert!(!taken(&pool, "import"), "the other thread released it");

    // The try variants behave as their borrowed twins.
    let mutex = Arc::new(RedisMutex::new(pool.clone(), "import").unwrap());
    let first = mutex.try_lock_arc().unwrap();
    assert!(matches!(
        mutex.try_lock_arc(),
        Err(TryLockError::WouldBlock)
    ));
    assert!(matches!(
        mutex.try_lock_arc_for(Duration::from_millis(50)),
        Err(TryLockError::WouldBlock)
    ));
    let waiting = {
        let mutex = mutex.clone();
        crate::support::spawn("a timed waiter", move || {
            mutex.try_lock_arc_for(HANG).map(ArcRedisMutexGuard::unlock)
        })
    };
    drop(first);
    waiting.join(HANG).unwrap().unwrap();

    // A borrowed guard can be sent too, to a scoped thread.
    let borrowed: RedisMutexGuard<'_> = mutex.lock().unwrap();
    assert_send(&borrowed);
    thread::scope(|s| s.spawn(move || borrowed.unlock()).join().unwrap()).unwrap();
    assert!(!mutex.is_locked().unwrap());
}

#[test]
fn renew_extends_to_the_configured_expiry() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let mutex = RedisMutex::builder(server.pool(), "lease")
        .expire(Duration::from_secs(20))
        .build()
        .unwrap();
    let guard = mutex.lock().unwrap();
    guard.extend(Duration::from_secs(2)).unwrap();
    let pttl: i64 = conn.pttl("lock:lease").unwrap();
    assert!((1..=2_000).contains(&pttl), "after extend(2 s): {pttl} ms");
    guard.renew().unwrap();
    let pttl: i64 = conn.pttl("lock:lease").unwrap();
    assert!(pttl > 15_000, "after renew: {pttl} ms, not the 20 s expiry");
    let valid_for = guard.valid_for().unwrap();
    assert!(valid_for > Duration::from_secs(15), "{valid_for:?}");

    // Without an expiry there is nothing to renew to.
    let forever = RedisMutex::new(server.pool(), "forever").unwrap();
    let guard = forever.lock().unwrap();
    let err = guard.renew().unwrap_err();
    assert!(matches!(err, Error::NotExpirable { .. }), "{err:?}");

    // Once the lock is gone, renew fails and changes nothing.
    let mutex = RedisMutex::builder(server.pool(), "lease2")
        .expire(Duration::from_secs(20))
        .build()
        .unwrap();
    let guard = mutex.lock().unwrap();
    assert!(mutex.reset().unwrap());
    let err = guard.renew().unwrap_err();
    assert!(matches!(err, Error::NotAcquired { .. }), "{err:?}");
    let exists: bool = conn.exists("lock:lease2").unwrap();
    assert!(!exists);
}

#[test]
fn the_loss_reason_of_a_reset_is_reset() {
    // with_lock's LockLost above comes from this reason; pin it down on its own.
    let server = RedisServer::start();
    let (tx, rx) = mpsc::channel();
    let mutex = RedisMutex::builder(server.pool(), "reasons")
        .expire(Duration::from_millis(600))
        .auto_renewal(true)
        .on_lost(move |lost| {
            let _ = tx.send(lost.reason);
        })
        .build()
        .unwrap();
    let guard = mutex.lock().unwrap();
    assert!(mutex.reset().unwrap());
    assert_eq!(rx.recv_timeout(HANG).unwrap(), LostReason::Reset);
    assert!(guard.is_lost());
    assert!(matches!(guard.ensure_held(), Err(Error::LockLost { .. })));
}
