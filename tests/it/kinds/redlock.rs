//! Redlock over five private redis-server processes: mutual exclusion across processes,
//! killed, stalled and refusing instances, extend, auto-extension, is_locked, and redlock-py
//! interop.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{HANG, Lines, RedisServer, command_calls, connect, eventually, spawn};
use redis::Commands;
use redis_mutex::{Error, LostLock, LostReason, Pool, Redlock, TryLockError};

/// Long enough that no key in these tests disappears by expiring: a key found gone was
/// deleted.
const TTL: Duration = Duration::from_secs(30);

/// The instance timeout of tests that check behaviour, not speed.
const RELAXED_INSTANCE_TIMEOUT: Duration = Duration::from_millis(500);

/// Five servers and nothing else: every key on them was set by the test.
struct Cluster {
    servers: Vec<RedisServer>,
}

impl Cluster {
    fn start() -> Cluster {
        Cluster {
            servers: start_servers(5),
        }
    }

    fn pools(&self) -> Vec<Pool> {
        self.servers.iter().map(RedisServer::pool).collect()
    }

    /// A Redlock for tests of what it does rather than how fast: its instance timeout is
    /// generous, since a busy 2-core CI machine can take longer than the 50 ms default to
    /// answer, which would turn a healthy instance into a failed one.
    fn redlock(&self) -> Redlock {
        Redlock::builder(self.pools())
            .instance_timeout(RELAXED_INSTANCE_TIMEOUT)
            .build()
            .unwrap()
    }

    fn ports(&self) -> String {
        let ports: Vec<String> = self.servers.iter().map(|s| s.port().to_string()).collect();
        ports.join(",")
    }

    /// The value of `key` on each server in `which`.
    fn values(&self, key: &str, which: &[usize]) -> Vec<Option<String>> {
        which
            .iter()
            .map(|&i| self.servers[i].connection().get(key).unwrap())
            .collect()
    }

    fn dbsize(&self, i: usize) -> u64 {
        redis::cmd("DBSIZE")
            .query(&mut self.servers[i].connection())
            .unwrap()
    }

    fn calls(&self, i: usize, command: &str) -> u64 {
        command_calls(&mut self.servers[i].connection(), command)
    }

    /// How many extend or release scripts instance `i` ran (`EVALSHA`, or `EVAL` on a
    /// connection with a reply pending).
    fn scripts(&self, i: usize) -> u64 {
        self.calls(i, "evalsha") + self.calls(i, "eval")
    }

    /// An auto-extended Redlock over all five servers whose `on_lost` callback sends what
    /// it was told on the returned channel.
    fn auto_extended(&self, instance_timeout: Duration) -> (Redlock, mpsc::Receiver<LostLock>) {
        auto_extended(self.pools(), instance_timeout)
    }
}

/// `n` servers, started at once.
fn start_servers(n: usize) -> Vec<RedisServer> {
    let starts: Vec<_> = (0..n)
        .map(|i| spawn(&format!("start server {i}"), RedisServer::start))
        .collect();
    starts.into_iter().map(|s| s.join(HANG)).collect()
}

/// An auto-extended Redlock over `pools` whose `on_lost` callback sends what it was told on
/// the returned channel.
fn auto_extended(
    pools: Vec<Pool>,
    instance_timeout: Duration,
) -> (Redlock, mpsc::Receiver<LostLock>) {
    let (lost_tx, lost_rx) = mpsc::channel();
    let redlock = Redlock::builder(pools)
        .auto_extend(true)
        .instance_timeout(instance_timeout)
        .on_lost(move |lost| {
            lost_tx.send(lost.clone()).ok();
        })
        .build()
        .unwrap();
    (redlock, lost_rx)
}

/// The parts of a [`Error::NoQuorum`]; panics, saying what it got, on any other result.
fn no_quorum<T: std::fmt::Debug>(result: Result<T, Error>) -> (usize, usize, Vec<(usize, Error)>) {
    match result {
        Err(Error::NoQuorum {
            granted,
            needed,
            failures,
        }) => (granted, needed, failures),
        other => panic!("expected NoQuorum, got {other:?}"),
    }
}

/// The same for a `try_lock`, whose [`Error::NoQuorum`] comes inside
/// [`TryLockError::Error`] (when failing instances decided it).
fn try_no_quorum<T: std::fmt::Debug>(
    result: Result<T, TryLockError>,
) -> (usize, usize, Vec<(usize, Error)>) {
    match result {
        Err(TryLockError::Error(e)) => no_quorum::<()>(Err(e)),
        other => panic!("expected NoQuorum, got {other:?}"),
    }
}

/// Panics, saying what it got, unless a `try_lock` found the resource held elsewhere.
fn would_block<T: std::fmt::Debug>(result: Result<T, TryLockError>) {
    assert!(
        matches!(result, Err(TryLockError::WouldBlock)),
        "expected WouldBlock, got {result:?}"
    );
}

/// The least validity a lock of `ttl` taken by a call that started at `called` can show
/// now: the ttl from before the first request, less the default drift margin.
fn least_validity(ttl: Duration, called: Instant) -> Duration {
    let margin = ttl.mul_f64(0.01) + Duration::from_millis(2);
    ttl.saturating_sub(margin).saturating_sub(called.elapsed())
}

fn indexes(failures: &[(usize, Error)]) -> Vec<usize> {
    failures.iter().map(|(i, _)| *i).collect()
}

#[test]
fn lock_extend_and_unlock_on_five_healthy_instances() {
    let cluster = Cluster::start();
    let redlock = cluster.redlock();
    let all = [0, 1, 2, 3, 4];

    let called = Instant::now();
    let guard = redlock.lock("report", TTL).unwrap();
    // Read before the least is worked out: both shrink as time passes.
    let valid = guard.valid_for().unwrap();
    let least = least_validity(TTL, called);
    assert!(valid >= least, "{guard:?}, expected at least {least:?}");
    assert_eq!(guard.resource(), "report");
    assert_eq!(
        guard.owner_id().len(),
        32,
        "a 128-bit token in hex: {}",
        guard.owner_id()
    );
    let token = Some(guard.owner_id().to_owned());
    assert_eq!(cluster.values("report", &all), vec![token.clone(); 5]);
    assert!(guard.valid_for().unwrap() < TTL, "{guard:?}");
    assert!(redlock.is_locked("report").unwrap());

    let called = Instant::now();
    guard.extend(Duration::from_secs(60)).unwrap();
    // Read before the least is worked out: both shrink as time passes.
    let valid = guard.valid_for().unwrap();
    let least = least_validity(Duration::from_secs(60), called);
    assert!(valid >= least, "{guard:?}, expected at least {least:?}");
    for i in all {
        let pttl: i64 = cluster.servers[i].connection().pttl("report").unwrap();
        assert!(pttl > 58_000, "instance {i}: PTTL {pttl}");
    }

    guard.unlock().unwrap();
    assert_eq!(cluster.values("report", &all), vec![None; 5]);
    assert!(!redlock.is_locked("report").unwrap());

    // Dropping releases as well, on every instance.
    let guard = redlock.lock("report", TTL).unwrap();
    drop(guard);
    assert!(all.iter().all(|&i| cluster.dbsize(i) == 0));
}

#[test]
fn a_held_resource_would_block_or_gives_no_quorum_and_its_holder_is_left_alone() {
    let cluster = Cluster::start();
    let holder = cluster.redlock();
    let other = Redlock::builder(cluster.pools())
        .retry_count(2)
        .retry_delay(Duration::from_millis(20))
        .build()
        .unwrap();
    let guard = holder.lock("shared", TTL).unwrap();
    let token = Some(guard.owner_id().to_owned());

    // One attempt that no instance failed: the resource is held elsewhere.
    would_block(other.try_lock("shared", TTL));
    // Three attempts: the first and two retries, each one SET per instance.
    let sets_before = cluster.calls(0, "set");
    no_quorum(other.lock("shared", TTL));
    assert_eq!(cluster.calls(0, "set") - sets_before, 3);
    assert_eq!(cluster.values("shared", &[0, 1, 2, 3, 4]), vec![token; 5]);

    guard.unlock().unwrap();
    other.try_lock("shared", TTL).unwrap().unlock().unwrap();
}

#[test]
fn lock_retries_until_the_holder_releases() {
    let cluster = Cluster::start();
    let holder = cluster.redlock();
    let waiter = Redlock::builder(cluster.pools())
        .retry_count(1_000)
        .retry_delay(Duration::from_millis(20))
        .build()
        .unwrap();
    let guard = holder.lock("queue", TTL).unwrap();
    let sets_before = cluster.calls(0, "set");
    let waiting = spawn("waiter", move || {
        waiter.lock("queue", TTL).map(|g| g.owner_id().to_owned())
    });
    // Release only once the waiter has been refused at least once.
    assert!(
        eventually(HANG, || cluster.calls(0, "set") > sets_before),
        "the waiter never tried"
    );
    assert!(waiting.try_join().is_none(), "the waiter got a held lock");
    guard.unlock().unwrap();
    waiting
        .join(HANG)
        .expect("the waiter gets the lock after the release");
    // The waiter's guard was dropped inside the thread, releasing it.
    assert!(!holder.is_locked("queue").unwrap());
}

#[test]
fn two_of_five_killed_still_lock() {
    let mut cluster = Cluster::start();
    let redlock = cluster.redlock();
    cluster.servers[1].kill();
    cluster.servers[3].kill();
    let alive = [0, 2, 4];

    let started = Instant::now();
    let guard = redlock.lock("two-down", TTL).unwrap();
    assert!(started.elapsed() < HANG);
    let token = Some(guard.owner_id().to_owned());
    assert_eq!(cluster.values("two-down", &alive), vec![token; 3]);
    assert!(
        guard.valid_for().unwrap() > TTL - Duration::from_secs(1),
        "{guard:?}"
    );
    assert!(redlock.is_locked("two-down").unwrap());

    guard.unlock().unwrap();
    assert_eq!(cluster.values("two-down", &alive), vec![None; 3]);
}

#[test]
fn three_of_five_killed_give_no_quorum_within_the_retry_budget_and_leave_no_key() {
    let mut cluster = Cluster::start();
    let instance_timeout = Duration::from_millis(50);
    let retry_delay = Duration::from_millis(50);
    let redlock = Redlock::builder(cluster.pools())
        .retry_count(2)
        .retry_delay(retry_delay)
        .instance_timeout(instance_timeout)
        .build()
        .unwrap();
    for i in [0, 2, 3] {
        cluster.servers[i].kill();
    }
    let alive = [1, 4];
    let sets_before: Vec<u64> = alive.iter().map(|&i| cluster.calls(i, "set")).collect();

    let started = Instant::now();
    let (granted, needed, failures) = no_quorum(redlock.lock("three-down", TTL));
    let elapsed = started.elapsed();
    assert_eq!((granted, needed), (2, 3));
    assert_eq!(indexes(&failures), vec![0, 2, 3], "{failures:?}");
    // Three attempts, each at most an instance timeout to acquire and one to undo, and two
    // waits of at most the retry delay; plus a generous margin for a loaded machine.
    let budget = 3 * 2 * instance_timeout + 2 * retry_delay;
    assert!(
        elapsed < budget + Duration::from_secs(2),
        "took {elapsed:?}, budget {budget:?}"
    );
    // Exactly the first attempt and two retries reached the live instances (each sets the
    // resource's key and its marker)...
    for (&i, before) in alive.iter().zip(sets_before) {
        assert_eq!(cluster.calls(i, "set") - before, 6, "SETs on instance {i}");
    }
    // ...and each was undone there before the call returned.
    for i in alive {
        assert_eq!(
            cluster.dbsize(i),
            0,
            "instance {i} kept a key of a failed attempt"
        );
    }

    for i in [0, 2, 3] {
        cluster.servers[i].restart();
    }
    for i in 0..5 {
        assert_eq!(
            cluster.dbsize(i),
            0,
            "instance {i} has a key after the restart"
        );
    }
    // The pools get over their connections to the killed servers.
    redlock.lock("three-down", TTL).unwrap().unlock().unwrap();
}

#[test]
fn a_stalled_instance_delays_acquisition_by_the_instance_timeout_at_most() {
    let mut cluster = Cluster::start();
    let instance_timeout = Duration::from_millis(100);
    let redlock = Redlock::builder(cluster.pools())
        .instance_timeout(instance_timeout)
        .build()
        .unwrap();
    let sets_before = cluster.calls(2, "set");
    cluster.servers[2].pause();

    let started = Instant::now();
    let guard = redlock.lock("stall", TTL).unwrap();
    let elapsed = started.elapsed();
    // The round's time counts once, not twice, against the validity.
    // Read before the least is worked out: both shrink as time passes.
    let valid = guard.valid_for().unwrap();
    let least = least_validity(TTL, started);
    assert!(valid >= least, "{guard:?}, expected at least {least:?}");
    // The stalled instance costs one instance timeout; the rest is a few round trips,
    // given a generous margin.
    assert!(
        elapsed < instance_timeout + Duration::from_millis(400),
        "acquiring with one instance stalled took {elapsed:?}"
    );
    let token = Some(guard.owner_id().to_owned());
    assert_eq!(cluster.values("stall", &[0, 1, 3, 4]), vec![token; 4]);

    // Released while the instance is still stalled: four releases are a majority.
    guard.unlock().unwrap();
    cluster.servers[2].resume();
    // The SET queued on the stalled instance runs once it resumes, and the release queued
    // behind it on the same connection deletes the key again.
    assert!(
        eventually(HANG, || cluster.dbsize(2) == 0),
        "the stalled instance kept the key"
    );
    // The key and its marker, or neither: the acquire script, sent before the instance had
    // it loaded, got NOSCRIPT once it resumed.
    let late = cluster.calls(2, "set") - sets_before;
    assert!(late == 2 || late == 0, "{late} late SETs");
    assert_eq!(cluster.dbsize(2), 0);
}

#[test]
fn a_stalled_majority_gives_no_quorum_and_its_late_keys_are_removed() {
    let mut cluster = Cluster::start();
    let instance_timeout = Duration::from_millis(50);
    let redlock = Redlock::builder(cluster.pools())
        .retry_count(1)
        .retry_delay(Duration::from_millis(20))
        .instance_timeout(instance_timeout)
        .build()
        .unwrap();
    let stalled = [0, 1, 3];
    let sets_before: Vec<u64> = stalled.iter().map(|&i| cluster.calls(i, "set")).collect();
    for i in stalled {
        cluster.servers[i].pause();
    }

    let started = Instant::now();
    let (granted, needed, failures) = no_quorum(redlock.lock("stalled-majority", TTL));
    let elapsed = started.elapsed();
    assert_eq!((granted, needed), (2, 3));
    assert_eq!(indexes(&failures), stalled, "{failures:?}");
    assert!(
        failures.iter().all(|(_, e)| e.is_timeout()),
        "stalled instances time out: {failures:?}"
    );
    let budget = 2 * 2 * instance_timeout + Duration::from_millis(20);
    assert!(
        elapsed < budget + Duration::from_secs(2),
        "took {elapsed:?}"
    );
    for i in [2, 4] {
        assert_eq!(
            cluster.dbsize(i),
            0,
            "instance {i} kept a key of a failed attempt"
        );
    }

    for i in stalled {
        cluster.servers[i].resume();
    }
    // The first attempt's SET runs on the resumed instances, followed by its release on
    // the same connection (closed after it: a connection with a reply outstanding is not
    // reused). The second attempt's SET, on a new connection, ran too, unless that
    // connection timed out in its handshake. Either way nothing is left, long before the
    // 30 s ttl.
    for (&i, before) in stalled.iter().zip(sets_before) {
        assert!(
            eventually(HANG, || cluster.dbsize(i) == 0),
            "instance {i} kept a key of a failed attempt"
        );
        // Two per attempt that ran (the key and its marker); none for one sent before the
        // instance had the script loaded (it got NOSCRIPT once the instance resumed).
        let late = cluster.calls(i, "set") - before;
        assert!(
            late <= 4 && late.is_multiple_of(2),
            "{late} late SETs on instance {i}"
        );
    }
}

#[test]
fn a_refusing_minority_is_reported_and_a_refusing_majority_is_no_quorum() {
    let cluster = Cluster::start();
    let redlock = cluster.redlock();
    let refuse = |i: usize| {
        // No memory left for writes: every SET is answered with an OOM error.
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(1)
            .query(&mut cluster.servers[i].connection())
            .unwrap();
    };
    refuse(4);
    let guard = redlock.try_lock("oom", TTL).unwrap();
    guard.unlock().unwrap();

    refuse(0);
    refuse(2);
    let (granted, needed, failures) = try_no_quorum(redlock.try_lock("oom", TTL));
    assert_eq!((granted, needed), (2, 3));
    assert_eq!(indexes(&failures), vec![0, 2, 4]);
    for (i, e) in &failures {
        assert!(e.to_string().contains("OOM"), "instance {i}: {e}");
    }
    assert_eq!(cluster.values("oom", &[1, 3]), vec![None; 2]);
}

#[test]
fn extend_counts_only_on_a_majority() {
    let mut cluster = Cluster::start();
    let redlock = cluster.redlock();
    let guard = redlock.lock("extend", Duration::from_secs(10)).unwrap();
    cluster.servers[0].kill();
    cluster.servers[4].kill();

    guard.extend(Duration::from_secs(60)).unwrap();
    assert!(
        guard.valid_for().unwrap() > Duration::from_secs(58),
        "{guard:?}"
    );
    for i in [1, 2, 3] {
        let pttl: i64 = cluster.servers[i].connection().pttl("extend").unwrap();
        assert!(pttl > 58_000, "instance {i}: PTTL {pttl}");
    }

    // Taken from us on one more instance: two of five is no majority.
    let _: () = cluster.servers[2]
        .connection()
        .set("extend", "someone else")
        .unwrap();
    let before = guard.valid_for().unwrap();
    let (granted, needed, failures) = no_quorum(guard.extend(Duration::from_secs(120)));
    assert_eq!((granted, needed), (2, 3));
    assert_eq!(indexes(&failures), vec![0, 4], "{failures:?}");
    // A failed extend never adds validity.
    assert!(guard.valid_for().unwrap() <= before, "{guard:?}");
    let value: String = cluster.servers[2].connection().get("extend").unwrap();
    assert_eq!(value, "someone else");

    // A majority of our keys is gone: unlocking says so, and leaves the other owner's key.
    for i in [1, 3] {
        let _: () = cluster.servers[i].connection().del("extend").unwrap();
    }
    assert!(guard.unlock().unwrap_err().is_not_acquired());
    assert_eq!(
        cluster.values("extend", &[2]),
        vec![Some("someone else".into())]
    );
}

#[test]
fn an_extend_that_finds_a_majority_taken_marks_the_guard_lost() {
    let cluster = Cluster::start();
    let redlock = cluster.redlock();
    let guard = redlock.lock("taken-extend", TTL).unwrap();
    for i in [0, 1, 2] {
        let _: () = cluster.servers[i]
            .connection()
            .set("taken-extend", "someone else")
            .unwrap();
    }
    // Every instance answered, and a majority said the key is not ours: not a question of
    // quorum, but of ownership.
    let err = guard.extend(Duration::from_secs(60)).unwrap_err();
    assert!(err.is_not_acquired(), "{err:?}");
    assert!(guard.is_lost(), "{guard:?}");
    assert_eq!(guard.valid_for(), Some(Duration::ZERO));
    assert!(guard.ensure_held().unwrap_err().is_lock_lost());
    assert!(guard.unlock().unwrap_err().is_lock_lost());
    assert_eq!(
        cluster.values("taken-extend", &[0, 1, 2]),
        vec![Some("someone else".into()); 3],
        "another owner's keys are left alone"
    );
}

#[test]
fn extend_after_the_validity_ran_out_fails() {
    let cluster = Cluster::start();
    let redlock = cluster.redlock();
    let ttl = Duration::from_millis(200);
    let guard = redlock.lock("short", ttl).unwrap();
    assert!(guard.valid_for().unwrap() < ttl);
    // Waiting for time itself to pass: nothing else could be awaited.
    thread::sleep(guard.valid_for().unwrap() + Duration::from_millis(5));
    assert_eq!(guard.valid_for().unwrap(), Duration::ZERO);

    let err = guard.extend(Duration::from_secs(30)).unwrap_err();
    assert!(err.is_not_acquired(), "{err}");
    assert_eq!(guard.valid_for().unwrap(), Duration::ZERO);
    // Nothing was extended: every key still expires within the original ttl.
    for i in 0..5 {
        let pttl: i64 = cluster.servers[i].connection().pttl("short").unwrap();
        assert!(pttl < 200, "instance {i}: PTTL {pttl}");
    }
}

#[test]
fn is_locked_means_held_on_a_majority() {
    let mut cluster = Cluster::start();
    let redlock = cluster.redlock();
    assert!(!redlock.is_locked("flag").unwrap());

    // Keys set by anyone count, on a majority only.
    for i in [0, 1] {
        let _: () = cluster.servers[i].connection().set("flag", "x").unwrap();
    }
    assert!(!redlock.is_locked("flag").unwrap());
    let _: () = cluster.servers[4].connection().set("flag", "x").unwrap();
    assert!(redlock.is_locked("flag").unwrap());

    // Two down and the key on two of the three others: the down ones decide it.
    let _: () = cluster.servers[4].connection().del("flag").unwrap();
    let _: () = cluster.servers[2].connection().set("flag", "x").unwrap();
    cluster.servers[3].kill();
    cluster.servers[4].kill();
    assert!(redlock.is_locked("flag").unwrap(), "three of five hold it");
    let _: () = cluster.servers[2].connection().del("flag").unwrap();
    let (held, needed, failures) = no_quorum(redlock.is_locked("flag"));
    assert_eq!((held, needed), (2, 3));
    assert_eq!(indexes(&failures), vec![3, 4]);
}

// ---- mutual exclusion across processes ----

const COUNTER_RESOURCE: &str = "redlock-counter";
const ROUNDS: usize = 15;
const CHILDREN: usize = 3;
const THREADS: usize = 2;

#[test]
fn mutual_exclusion_across_processes() {
    let cluster = Cluster::start();
    let children: Vec<_> = (0..CHILDREN)
        .map(|_| {
            crate::support::spawn_child(
                module_path!(),
                "child_increments_a_counter_under_redlock",
                &[
                    ("REDLOCK_PORTS", cluster.ports()),
                    ("REDLOCK_ROUNDS", ROUNDS.to_string()),
                ],
            )
        })
        .collect();
    for child in children {
        child.finish(Duration::from_secs(60));
    }
    let counter: u64 = cluster.servers[0].connection().get("counter").unwrap();
    assert_eq!(counter, (CHILDREN * THREADS * ROUNDS) as u64);
    assert_eq!(
        cluster.values(COUNTER_RESOURCE, &[0, 1, 2, 3, 4]),
        vec![None; 5],
        "every lock was released"
    );
}

#[test]
#[ignore = "a child process of mutual_exclusion_across_processes"]
fn child_increments_a_counter_under_redlock() {
    let ports = crate::support::child_env("REDLOCK_PORTS");
    let rounds: usize = crate::support::child_env("REDLOCK_ROUNDS").parse().unwrap();
    let urls: Vec<String> = ports
        .split(',')
        .map(|p| format!("redis://127.0.0.1:{p}/"))
        .collect();
    let pools = urls
        .iter()
        .map(|url| {
            Pool::builder()
                .max_size(THREADS as u32 + 1)
                .build(url)
                .unwrap()
        })
        .collect();
    let redlock = Arc::new(
        Redlock::builder(pools)
            .retry_count(100_000)
            .retry_delay(Duration::from_millis(10))
            .instance_timeout(RELAXED_INSTANCE_TIMEOUT)
            .build()
            .unwrap(),
    );
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let redlock = redlock.clone();
            let mut counter = connect(&urls[0]);
            spawn(&format!("incrementer-{t}"), move || {
                for _ in 0..rounds {
                    let guard = redlock.lock(COUNTER_RESOURCE, TTL).unwrap();
                    // A read-modify-write that two holders at once would break.
                    let value: Option<u64> = counter.get("counter").unwrap();
                    thread::sleep(Duration::from_millis(1));
                    let _: () = counter.set("counter", value.unwrap_or(0) + 1).unwrap();
                    assert!(guard.valid_for().unwrap() > Duration::ZERO);
                    guard.unlock().unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join(Duration::from_secs(60));
    }
    println!("@done");
}

// ---- interop with redlock-py ----

/// One redlock-py client on the given ports: `hold` takes the lock, says "@locked <token>"
/// and releases it when told on stdin; `try` makes one attempt and says "@granted" (then
/// releases) or "@refused".
const PYTHON: &str = r#"
import sys
from redlock import Redlock
ports, mode, resource = sys.argv[1], sys.argv[2], sys.argv[3]
servers = [{"host": "127.0.0.1", "port": int(p), "socket_timeout": 5} for p in ports.split(",")]
dlm = Redlock(servers, retry_count=1, retry_delay=0.01)
lock = dlm.lock(resource, 30000)
if mode == "hold":
    assert lock, "redlock-py could not take a free lock"
    print("@locked " + lock.key.decode(), flush=True)
    sys.stdin.readline()
    dlm.unlock(lock)
    print("@released", flush=True)
else:
    print("@granted" if lock else "@refused", flush=True)
    if lock:
        dlm.unlock(lock)
"#;

fn redlock_py(cluster: &Cluster, mode: &str, resource: &str) -> Child {
    Command::new(crate::support::python::python())
        .args(["-c", PYTHON, &cluster.ports(), mode, resource])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run python")
}

fn finish_python(mut child: Child) {
    let status = crate::support::wait_or_kill(&mut child, HANG);
    assert!(status.success(), "the Python side failed: {status}");
}

#[test]
fn redlock_py_and_this_crate_exclude_each_other() {
    let cluster = Cluster::start();
    let redlock = cluster.redlock();
    let all = [0, 1, 2, 3, 4];

    // Python holds: Rust is refused everywhere, and sees Python's token as the value.
    let mut py = redlock_py(&cluster, "hold", "shared-resource");
    let lines = Lines::new(py.stdout.take().unwrap());
    let py_token = lines.expect("@locked ", HANG);
    assert_eq!(
        cluster.values("shared-resource", &all),
        vec![Some(py_token.clone()); 5]
    );
    assert!(redlock.is_locked("shared-resource").unwrap());
    would_block(redlock.try_lock("shared-resource", TTL));
    assert_eq!(
        cluster.values("shared-resource", &all),
        vec![Some(py_token); 5]
    );
    writeln!(py.stdin.as_mut().unwrap()).unwrap();
    lines.expect("@released", HANG);
    finish_python(py);

    // Rust holds: Python is refused, and its clean-up leaves our keys alone.
    let guard = redlock.try_lock("shared-resource", TTL).unwrap();
    let token = Some(guard.owner_id().to_owned());
    let mut py = redlock_py(&cluster, "try", "shared-resource");
    Lines::new(py.stdout.take().unwrap()).expect("@refused", HANG);
    finish_python(py);
    assert_eq!(cluster.values("shared-resource", &all), vec![token; 5]);

    // Released by Rust: Python gets it.
    guard.unlock().unwrap();
    let mut py = redlock_py(&cluster, "try", "shared-resource");
    Lines::new(py.stdout.take().unwrap()).expect("@granted", HANG);
    finish_python(py);
    assert!(all.iter().all(|&i| cluster.dbsize(i) == 0));
}

// ---- auto-extension ----

/// The ttl of the auto-extended locks below: an extension every 100 ms.
const SHORT_TTL: Duration = Duration::from_millis(300);
/// How long the auto-extended locks below are held: five ttls.
const HOLD: Duration = Duration::from_millis(1500);

/// Holds `guard` for `hold`, checking at each step that it is neither lost nor run out;
/// returns how many steps it checked.
fn hold_checking(guard: &redis_mutex::RedlockGuard<'_>, hold: Duration) -> usize {
    let until = Instant::now() + hold;
    let mut steps = 0;
    // At most a step per 20 ms, and no longer than `hold`.
    for _ in 0..hold.as_millis() / 20 {
        if Instant::now() >= until {
            break;
        }
        assert!(!guard.is_lost(), "lost after {steps} steps: {guard:?}");
        assert!(
            guard.valid_for().unwrap() > Duration::ZERO,
            "ran out: {guard:?}"
        );
        guard.ensure_held().unwrap();
        steps += 1;
        // Pacing the checks: time passing is what this test is about.
        thread::sleep(Duration::from_millis(20));
    }
    steps
}

#[test]
fn an_auto_extended_guard_outlives_its_ttl_on_every_instance() {
    let cluster = Cluster::start();
    let (redlock, lost) = cluster.auto_extended(Duration::from_millis(50));
    let all = [0, 1, 2, 3, 4];
    let scripts_before: Vec<u64> = all.iter().map(|&i| cluster.scripts(i)).collect();
    let gets_before = cluster.calls(0, "get");

    let guard = redlock.lock("kept", SHORT_TTL).unwrap();
    let token = Some(guard.owner_id().to_owned());
    let steps = hold_checking(&guard, HOLD);
    assert!(steps > 10, "only {steps} checks in {HOLD:?}");
    // A healthy auto-extended guard always has more than a third of its ttl left, so
    // ensure_held never had to ask: every GET was the extend script's own (two: the key
    // and its marker). (Counted first, so that an extension in between only adds to the
    // scripts.)
    let gets = cluster.calls(0, "get") - gets_before;
    let scripts = cluster.scripts(0) - scripts_before[0];
    assert!(gets <= 2 * scripts, "{gets} GETs for {scripts} extensions");

    // Five ttls later every key is still ours, and expires within one ttl.
    assert_eq!(cluster.values("kept", &all), vec![token; 5]);
    for i in all {
        let pttl: i64 = cluster.servers[i].connection().pttl("kept").unwrap();
        assert!(
            (1..=300).contains(&pttl),
            "instance {i}: PTTL {pttl}, expected 1..=300"
        );
        // An extension every 100 ms: about 15 in 1.5 s; fewer on a loaded machine.
        let extensions = cluster.scripts(i) - scripts_before[i];
        assert!(
            extensions >= 5,
            "instance {i}: {extensions} extensions in {HOLD:?}"
        );
    }
    assert!(lost.try_recv().is_err(), "on_lost was called");

    guard.unlock().unwrap();
    assert_eq!(cluster.values("kept", &all), vec![None; 5]);
}

#[test]
fn auto_extension_goes_on_with_a_minority_down() {
    let mut cluster = Cluster::start();
    let (redlock, lost) = cluster.auto_extended(Duration::from_millis(50));
    let guard = redlock.lock("minority", SHORT_TTL).unwrap();
    let token = Some(guard.owner_id().to_owned());
    cluster.servers[1].kill();
    cluster.servers[3].kill();
    let alive = [0, 2, 4];
    let scripts_before: Vec<u64> = alive.iter().map(|&i| cluster.scripts(i)).collect();

    hold_checking(&guard, HOLD);
    assert_eq!(cluster.values("minority", &alive), vec![token; 3]);
    for (&i, before) in alive.iter().zip(scripts_before) {
        let extensions = cluster.scripts(i) - before;
        assert!(
            extensions >= 5,
            "instance {i}: {extensions} extensions in {HOLD:?}"
        );
    }
    assert!(lost.try_recv().is_err(), "on_lost was called");
    guard.unlock().unwrap();
    assert_eq!(cluster.values("minority", &alive), vec![None; 3]);
}

/// Waits for the `on_lost` callback, and checks that it came for `resource`, for `reason`,
/// once, no later than `latest` after `since`, and that the guard says so.
fn expect_lost(
    lost: &mpsc::Receiver<LostLock>,
    guard: redis_mutex::RedlockGuard<'_>,
    reason: LostReason,
    since: Instant,
    latest: Duration,
) {
    let report = lost
        .recv_timeout(HANG)
        .unwrap_or_else(|_| panic!("on_lost not called within {HANG:?}: {guard:?}"));
    let after = since.elapsed();
    assert_eq!(report.name, guard.resource());
    assert_eq!(report.owner_id, guard.owner_id());
    assert_eq!(report.fencing_token, None, "a Redlock has no fencing token");
    assert_eq!(report.reason, reason, "{report:?}");
    assert!(
        after <= latest,
        "lost {after:?} after the failure, expected within {latest:?}"
    );
    assert!(guard.is_lost());
    assert_eq!(guard.valid_for(), Some(Duration::ZERO));
    assert!(guard.ensure_held().unwrap_err().is_lock_lost());
    assert!(guard.extend(SHORT_TTL).unwrap_err().is_lock_lost());
    assert!(guard.unlock().unwrap_err().is_lock_lost());
    // The guard is gone, so its extension is: nothing can call back again.
    assert!(lost.try_recv().is_err(), "on_lost was called twice");
}

/// Slack for the renewal thread's retries and a loaded test machine: the loss is reported
/// at the first failed try after the validity ran out.
const REPORT_SLACK: Duration = Duration::from_millis(400);

#[test]
fn auto_extension_loses_a_lock_whose_majority_was_killed() {
    let mut cluster = Cluster::start();
    let (redlock, lost) = cluster.auto_extended(Duration::from_millis(20));
    let guard = redlock.lock("killed", SHORT_TTL).unwrap();
    let validity = guard.valid_for().unwrap();
    let killed = Instant::now();
    for i in [0, 2, 4] {
        cluster.servers[i].kill();
    }
    expect_lost(
        &lost,
        guard,
        LostReason::Unreachable,
        killed,
        validity + REPORT_SLACK,
    );
}

#[test]
fn auto_extension_loses_a_lock_whose_majority_stalled() {
    let mut cluster = Cluster::start();
    let (redlock, lost) = cluster.auto_extended(Duration::from_millis(20));
    let guard = redlock.lock("stalled", SHORT_TTL).unwrap();
    let validity = guard.valid_for().unwrap();
    let stalled = Instant::now();
    for i in [1, 2, 3] {
        cluster.servers[i].pause();
    }
    expect_lost(
        &lost,
        guard,
        LostReason::Unreachable,
        stalled,
        validity + REPORT_SLACK,
    );
    for i in [1, 2, 3] {
        cluster.servers[i].resume();
    }
    // The extensions and the release queued on the stalled instances run once they
    // resume; the key has expired by then anyway.
    for i in 0..5 {
        let gone = eventually(HANG, || cluster.dbsize(i) == 0);
        if !gone {
            let mut conn = cluster.servers[i].connection();
            let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
            let ttls: Vec<(String, i64)> = keys
                .into_iter()
                .map(|k| {
                    let ttl = redis::cmd("PTTL").arg(&k).query(&mut conn).unwrap();
                    (k, ttl)
                })
                .collect();
            panic!("instance {i} kept keys (name, PTTL): {ttls:?}");
        }
    }
}

#[test]
fn auto_extension_finds_a_lock_taken_over_at_the_next_extension() {
    let cluster = Cluster::start();
    let (redlock, lost) = cluster.auto_extended(Duration::from_millis(50));
    let guard = redlock.lock("taken", SHORT_TTL).unwrap();
    let validity = guard.valid_for().unwrap();
    let taken = Instant::now();
    for i in [0, 1, 4] {
        let _: () = cluster.servers[i]
            .connection()
            .set("taken", "someone else")
            .unwrap();
    }
    // A majority answers "not ours" at the next extension, a third of the ttl later at
    // most: that is long before the validity runs out.
    expect_lost(
        &lost,
        guard,
        LostReason::TakenOver,
        taken,
        validity.min(SHORT_TTL / 3 + REPORT_SLACK),
    );
    assert_eq!(
        cluster.values("taken", &[0, 1, 4]),
        vec![Some("someone else".into()); 3],
        "another owner's keys are left alone"
    );
}

#[test]
fn dropping_an_auto_extended_guard_stops_its_extension() {
    let cluster = Cluster::start();
    let (redlock, _lost) = cluster.auto_extended(Duration::from_millis(50));
    let all = [0, 1, 2, 3, 4];
    let before: Vec<u64> = all.iter().map(|&i| cluster.scripts(i)).collect();
    let guard = redlock.lock("dropped", SHORT_TTL).unwrap();
    // Two extensions reach every instance.
    for i in all {
        assert!(
            eventually(HANG, || cluster.scripts(i) >= before[i] + 2),
            "instance {i} saw no extensions"
        );
    }
    drop(guard);
    let after: Vec<u64> = all.iter().map(|&i| cluster.scripts(i)).collect();
    assert!(all.iter().all(|&i| cluster.dbsize(i) == 0), "not released");
    // Nothing announces that something did not happen: wait for three extensions' worth.
    thread::sleep(SHORT_TTL);
    let later: Vec<u64> = all.iter().map(|&i| cluster.scripts(i)).collect();
    assert_eq!(later, after, "scripts ran after the guard was dropped");
}

#[test]
fn ensure_held_asks_only_when_the_validity_runs_low() {
    let cluster = Cluster::start();
    let redlock = cluster.redlock();
    // Long enough that the keys outlive a late wake-up from the sleep below by a second.
    let ttl = Duration::from_millis(3000);
    let guard = redlock.lock("checked", ttl).unwrap();
    let gets = || cluster.calls(0, "get");
    let before = gets();
    guard.ensure_held().unwrap();
    assert_eq!(gets(), before, "a fresh lease needs no round trip");

    // Waiting for time itself to pass: a third of the ttl or less is left afterwards.
    thread::sleep(guard.valid_for().unwrap().saturating_sub(ttl / 3) + Duration::from_millis(5));
    guard.ensure_held().unwrap();
    assert_eq!(
        gets(),
        before + 1,
        "one GET per instance once the lease runs low"
    );

    // Deleted on a majority: the next check finds the lock lost, for good.
    for i in [0, 2, 3] {
        let _: () = cluster.servers[i].connection().del("checked").unwrap();
    }
    assert!(guard.ensure_held().unwrap_err().is_lock_lost());
    assert!(guard.is_lost());
    assert!(guard.unlock().unwrap_err().is_lock_lost());
}

#[test]
fn auto_extension_refuses_a_ttl_it_cannot_keep_up_with() {
    let cluster = Cluster::start();
    let (redlock, _lost) = cluster.auto_extended(Duration::from_millis(50));
    for ttl in [Duration::from_millis(20), Duration::from_millis(299)] {
        match redlock.try_lock("too-short", ttl) {
            Err(TryLockError::Error(Error::InvalidOptions { field: "ttl", .. })) => {}
            other => panic!("a ttl of {ttl:?}: expected InvalidOptions for `ttl`, got {other:?}"),
        }
    }
    assert!(all_empty(&cluster), "a refused call set a key");
}

fn all_empty(cluster: &Cluster) -> bool {
    (0..5).all(|i| cluster.dbsize(i) == 0)
}

/// Auto-extension runs on one thread per Redlock: a Redlock whose rounds wait out the
/// instance timeout on a stalled majority holds up its own extensions, and no others.
#[test]
fn a_stalled_redlock_does_not_delay_the_auto_extension_of_another() {
    let cluster = Cluster::start();
    let mut others = start_servers(3);
    let (healthy, healthy_lost) = cluster.auto_extended(Duration::from_millis(50));
    // Rounds of half a second on the stalled instances, from the first extension (a third of
    // its 3 s ttl after the grant) until its validity runs out.
    let (stuck, stuck_lost) = auto_extended(
        others.iter().map(RedisServer::pool).collect(),
        Duration::from_millis(500),
    );
    let kept = healthy.lock("kept", SHORT_TTL).unwrap();
    let held = stuck.lock("stuck", Duration::from_secs(3)).unwrap();
    let validity = held.valid_for().unwrap();
    let stalled = Instant::now();
    others[0].pause();
    others[1].pause();

    // Extended every 100 ms: a round held up by half a second loses it.
    let steps = hold_checking(&kept, Duration::from_millis(2500));
    assert!(steps > 20, "only {steps} checks");
    assert!(
        healthy_lost.try_recv().is_err(),
        "on_lost was called for the healthy Redlock"
    );
    // Reported by the first round that ends after the validity ran out.
    expect_lost(
        &stuck_lost,
        held,
        LostReason::Unreachable,
        stalled,
        validity + Duration::from_millis(500) + REPORT_SLACK,
    );
    assert!(!kept.is_lost());
    kept.unlock().unwrap();
    others[0].resume();
    others[1].resume();
}
