//! `RedisMutex::once_per`: work that runs at most once per window of the server's clock,
//! with a done mark written only while the lock is still held.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use crate::support::{HANG, RedisServer, connect, spawn};
use redis_mutex::RedisMutex;

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn runs_once_per_window_whoever_comes_and_when() {
    let server = RedisServer::start();
    let runs = Arc::new(AtomicUsize::new(0));
    // Four workers, each with its own mutex object and owner id, at once.
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let (pool, runs) = (server.pool(), runs.clone());
            spawn("worker", move || {
                let mutex = RedisMutex::builder(pool, "nightly")
                    .owner_id(format!("host-{i}"))
                    .expire(Duration::from_secs(10))
                    .auto_renewal(true)
                    .build()
                    .unwrap();
                let outcome = mutex
                    .once_per(HOUR, || {
                        runs.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(200)); // the work
                        Ok::<_, ()>(i)
                    })
                    .unwrap();
                (i, outcome.done_by().cloned(), outcome.ran())
            })
        })
        .collect();
    let outcomes: Vec<_> = tasks.into_iter().map(|t| t.join(HANG)).collect();
    assert_eq!(runs.load(Ordering::SeqCst), 1, "{outcomes:?}");
    let ran: Vec<_> = outcomes.iter().filter_map(|(_, _, ran)| *ran).collect();
    assert_eq!(ran.len(), 1, "{outcomes:?}");
    let runner = format!("host-{}", ran[0]);
    for (i, done, _) in &outcomes {
        if *i == ran[0] {
            continue;
        }
        let done = done.as_ref().expect("the others are told it was done");
        assert_eq!(done.owner_id, runner, "{outcomes:?}");
        assert!(done.fencing_token > 0);
    }
    // A latecomer too, and it does not wait for a lock.
    let late = RedisMutex::new(server.pool(), "nightly").unwrap();
    let outcome = late.once_per(HOUR, || Ok::<_, ()>(9)).unwrap();
    assert_eq!(outcome.done_by().map(|d| d.owner_id.clone()), Some(runner));
    // Another period is another series of windows.
    assert_eq!(
        late.once_per(2 * HOUR, || Ok::<_, ()>(9)).unwrap().ran(),
        Some(9)
    );
}

#[test]
fn a_failed_run_leaves_the_window_for_the_next() {
    let server = RedisServer::start();
    let mutex = RedisMutex::new(server.pool(), "sync").unwrap();
    let failed = mutex.once_per(HOUR, || Err::<(), _>("disk full")).unwrap();
    assert_eq!(failed.failed(), Some("disk full"));
    assert!(mutex.period_window(HOUR).unwrap().done.is_none());
    assert!(!mutex.is_locked().unwrap(), "released after the failure");
    assert_eq!(
        mutex.once_per(HOUR, || Ok::<_, ()>(1)).unwrap().ran(),
        Some(1)
    );
    let again = mutex.once_per(HOUR, || Ok::<_, ()>(2)).unwrap();
    assert!(again.done_by().is_some(), "ran twice in one window");
}

#[test]
fn windows_are_multiples_of_the_period_on_the_servers_clock() {
    let server = RedisServer::start();
    let mutex = RedisMutex::new(server.pool(), "tick").unwrap();
    let period = Duration::from_millis(1500);
    let window = mutex.period_window(period).unwrap();
    let (secs, micros): (u64, u64) = redis::cmd("TIME")
        .query(&mut connect(&server.url()))
        .unwrap();
    let now = UNIX_EPOCH + Duration::from_micros(secs * 1_000_000 + micros);
    let start_ms = window.start.duration_since(UNIX_EPOCH).unwrap().as_millis();
    assert_eq!(start_ms % 1500, 0, "{window:?}");
    assert!(window.start <= now && now < window.end() + Duration::from_millis(100));
    assert_eq!(
        mutex.once_per(period, || Ok::<_, ()>(())).unwrap().ran(),
        Some(())
    );
    // The next window opens by the server's clock, however recently the last run was.
    // The run may have fallen in the window after `window` (a slow machine): wait for the
    // one after the window it is in now, which the run cannot have marked.
    let next = mutex.period_window(period).unwrap().end();
    let waited =
        crate::support::eventually(HANG, || mutex.period_window(period).unwrap().start >= next);
    assert!(waited, "the next window never came");
    assert!(
        mutex
            .once_per(period, || Ok::<_, ()>(()))
            .unwrap()
            .ran()
            .is_some(),
        "the next window's run was refused"
    );
}

#[test]
fn a_run_whose_lock_was_lost_does_not_mark_the_window() {
    let server = RedisServer::start();
    let mutex = RedisMutex::builder(server.pool(), "report")
        .expire(Duration::from_secs(10))
        .build()
        .unwrap();
    let operator = RedisMutex::new(server.pool(), "report").unwrap();
    let result = mutex.once_per(HOUR, || {
        assert!(
            operator.reset().unwrap(),
            "the lock is held while the closure runs"
        );
        Ok::<_, ()>(())
    });
    let e = result.expect_err("a lost lock is reported");
    assert!(e.is_lock_lost(), "{e:?}");
    assert!(
        mutex.period_window(HOUR).unwrap().done.is_none(),
        "a run whose lock was lost marked the window"
    );
    // And by hand: a guard whose lock is gone cannot mark.
    let guard = mutex.lock().unwrap();
    let window = mutex.period_window(HOUR).unwrap();
    operator.reset().unwrap();
    assert!(
        mutex
            .mark_period_done(&guard, &window)
            .unwrap_err()
            .is_lock_lost()
    );
    assert!(mutex.period_window(HOUR).unwrap().done.is_none());
    drop(guard);
    assert!(
        mutex.period_window(Duration::ZERO).is_err(),
        "a zero period"
    );
}
