//! The `metrics` feature: what a contended run reports through the `metrics` facade, read
//! back with `metrics-util`'s debugging recorder.

#[allow(dead_code)] // this binary uses a part
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use metrics_util::CompositeKey;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use redis_mutex::{Error, RedisElection, RedisMutex};
use support::{HANG, RedisServer, eventually, spawn};

/// Every metric recorded so far, by name and labels (`name{k=v,..}`, labels sorted).
fn snapshot(snapshotter: &metrics_util::debugging::Snapshotter) -> HashMap<String, DebugValue> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value): (CompositeKey, _, _, DebugValue)| {
            let (_, key) = key.into_parts();
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            (name, value)
        })
        .collect()
}

fn counter(values: &HashMap<String, DebugValue>, key: &str) -> u64 {
    match values.get(key) {
        Some(DebugValue::Counter(n)) => *n,
        None => 0,
        other => panic!("{key}: {other:?}"),
    }
}

fn histogram_count(values: &HashMap<String, DebugValue>, key: &str) -> usize {
    match values.get(key) {
        Some(DebugValue::Histogram(samples)) => samples.len(),
        None => 0,
        other => panic!("{key}: {other:?}"),
    }
}

#[test]
fn a_contended_run_reports_its_counts_and_histograms() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");
    let server = RedisServer::start();
    const CYCLES: u64 = 50;

    // Two lock objects (as two processes would) contend on one name.
    let make = || {
        Arc::new(
            RedisMutex::builder(server.pool(), "jobs")
                .expire(Duration::from_secs(5))
                .auto_renewal(true)
                .metrics_label("jobs")
                .build()
                .unwrap(),
        )
    };
    let workers: Vec<_> = (0..2)
        .map(|i| {
            let mutex = make();
            spawn(&format!("worker {i}"), move || {
                for _ in 0..CYCLES {
                    let guard = mutex.lock().unwrap();
                    std::thread::sleep(Duration::from_millis(2));
                    guard.unlock().unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join(HANG);
    }
    // A timed wait that gives up.
    let holder = make();
    let held = holder.lock().unwrap();
    assert!(make().try_lock_for(Duration::from_millis(50)).is_err());
    // A lock lost to an operator's reset, found by its renewal.
    assert!(make().reset().unwrap());
    assert!(eventually(HANG, || held.is_lost()));
    drop(held);
    // A release that found the lock gone: a plain lease that ran out.
    let short = RedisMutex::builder(server.pool(), "short")
        .expire(Duration::from_millis(50))
        .metrics_label("short")
        .build()
        .unwrap();
    let guard = short.lock().unwrap();
    std::thread::sleep(Duration::from_millis(120));
    assert!(matches!(guard.unlock(), Err(Error::NotAcquired { .. })));

    let values = snapshot(&snapshotter);
    let jobs = "kind=mutex,lock=jobs";
    let acquired = counter(&values, &format!("redis_mutex_acquired_total{{{jobs}}}"));
    assert_eq!(acquired, 2 * CYCLES + 1, "{values:#?}");
    assert!(counter(&values, &format!("redis_mutex_contended_total{{{jobs}}}")) >= 1);
    assert_eq!(
        counter(&values, &format!("redis_mutex_timeouts_total{{{jobs}}}")),
        1
    );
    assert_eq!(
        histogram_count(&values, &format!("redis_mutex_wait_seconds{{{jobs}}}")) as u64,
        acquired
    );
    assert_eq!(
        histogram_count(&values, &format!("redis_mutex_hold_seconds{{{jobs}}}")) as u64,
        acquired
    );
    let lost_reset = counter(
        &values,
        &format!("redis_mutex_lost_total{{{jobs},reason=reset}}"),
    );
    let lost_taken = counter(
        &values,
        &format!("redis_mutex_lost_total{{{jobs},reason=taken_over}}"),
    );
    assert_eq!(lost_reset + lost_taken, 1, "{values:#?}");
    assert_eq!(
        counter(
            &values,
            "redis_mutex_release_not_held_total{kind=mutex,lock=short}"
        ),
        1
    );
    assert!(histogram_count(&values, "redis_mutex_renewal_batch_seconds{}") >= 1);
    match values.get("redis_mutex_renewed_leases{}") {
        Some(DebugValue::Gauge(g)) => assert_eq!(g.into_inner(), 0.0, "leases left renewed"),
        other => panic!("no gauge: {other:?}"),
    }

    // An election: terms won, and the time without a leader as an observer saw it.
    let election = RedisElection::builder(server.pool(), "leader")
        .metrics_label("leader")
        .build()
        .unwrap();
    let mut observer = election.observe().unwrap();
    assert_eq!(observer.next().unwrap().unwrap(), None);
    for _ in 0..2 {
        let leadership = election.campaign("v").unwrap();
        assert!(observer.next_timeout(HANG).unwrap().unwrap().is_some());
        leadership.resign().unwrap();
        assert_eq!(observer.next_timeout(HANG).unwrap().unwrap(), None);
    }
    let leadership = election.campaign("v").unwrap();
    assert!(observer.next_timeout(HANG).unwrap().unwrap().is_some());
    drop(leadership);
    let values = snapshot(&snapshotter);
    let leader = "kind=election,lock=leader";
    assert_eq!(
        counter(&values, &format!("redis_mutex_acquired_total{{{leader}}}")),
        3,
        "{values:#?}"
    );
    assert_eq!(
        histogram_count(
            &values,
            &format!("redis_mutex_leaderless_seconds{{{leader}}}")
        ),
        2,
        "the two times without a leader the observer saw end: {values:#?}"
    );
}
