//! Every lock of the crate on a real Redis Cluster (three primaries with a replica each,
//! started by the tests): keys that share a slot, tokens per hash tag, waiters woken by
//! releases, `reset_all` on every primary, and exclusion through a slot migration and a
//! failover.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use crate::support::cluster::Cluster;
use crate::support::{HANG, blocked_clients, child_env, eventually, spawn, spawn_child};
use redis::Commands;
use redis_mutex::{Pool, RedisMutex, RedisRwLock, RedisSemaphore, reset_all};

/// Lock names whose slots fall on every primary of `cluster`, `per_primary` of each.
fn names_on_every_primary(cluster: &Cluster, per_primary: usize) -> Vec<String> {
    let mut by_primary: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for i in 0.. {
        let name = format!("job-{i}");
        let primary = cluster.primary_of(&format!("{{{name}}}"));
        let names = by_primary.entry(primary).or_default();
        if names.len() < per_primary {
            names.push(name);
        }
        if by_primary.len() == cluster.nodes.len() / 2
            && by_primary.values().all(|n| n.len() == per_primary)
        {
            break;
        }
        assert!(i < 10_000, "no names on every primary: {by_primary:?}");
    }
    by_primary.into_values().flatten().collect()
}

#[test]
fn a_lock_works_on_a_cluster_with_its_keys_in_one_slot() {
    let cluster = Cluster::start(3);
    let pool = cluster.pool();
    assert!(pool.is_cluster());
    let mutex = RedisMutex::new(pool.clone(), "jobs").unwrap();
    let node = cluster.primary_of("{jobs}");
    let mut conn = cluster.nodes[node].connection();
    // The counter of the lock's slot, one per slot, not per name: the slot's own counter,
    // set where no clock is (and without the expiry a grant gives it), gives the token.
    let counter = slot_counter(&cluster, "lock:{jobs}");
    let _: () = conn.set(&counter, 4_000_000_000_000_000_u64).unwrap();
    let guard = mutex.lock().unwrap();
    let owner: String = conn.get("lock:{jobs}").unwrap();
    assert_eq!(owner, mutex.owner_id());
    assert_eq!(guard.fencing_token(), 4_000_000_000_000_001);
    assert!(mutex.try_lock().is_err());
    guard.unlock().unwrap();
    assert!(!mutex.is_locked().unwrap());
    // A name with a tag of its own keeps it.
    let tagged = RedisMutex::new(pool, "tenant:{42}:jobs").unwrap();
    drop(tagged.lock().unwrap());
    let mut conn = cluster.nodes[cluster.primary_of("{42}")].connection();
    let counter = slot_counter(&cluster, "{42}");
    let _: () = conn.set(&counter, 4_000_000_000_000_000_u64).unwrap();
    assert_eq!(
        tagged.lock().unwrap().fencing_token(),
        4_000_000_000_000_001
    );
}

/// The fencing counter of `key`'s slot, as the crate names it: `lock-fencing-counter:{N}`,
/// N the smallest number whose digits hash to that slot.
fn slot_counter(cluster: &Cluster, key: &str) -> String {
    let slot = cluster.slot_of(key);
    let n = (0..)
        .find(|n: &u32| cluster.slot_of(&n.to_string()) == slot)
        .unwrap();
    format!("lock-fencing-counter:{{{n}}}")
}

#[test]
fn waiters_on_a_cluster_are_woken_by_the_release() {
    let cluster = Cluster::start(3);
    let pool = cluster.pool();
    let holder = RedisMutex::new(pool, "woken").unwrap();
    let guard = holder.lock().unwrap();
    // Another pool: another process, as far as the lock can tell.
    let waiter = RedisMutex::new(cluster.pool(), "woken").unwrap();
    let waiting = spawn("waiter", move || {
        let got = waiter.try_lock_for(Duration::from_secs(10)).map(drop);
        (got.is_ok(), Instant::now())
    });
    let mut conn = cluster.nodes[cluster.primary_of("{woken}")].connection();
    assert!(
        eventually(HANG, || blocked_clients(&mut conn) == 1),
        "the waiter never blocked in BLPOP on the lock's primary"
    );
    let released = Instant::now();
    guard.unlock().unwrap();
    let (got, at) = waiting.join(HANG);
    assert!(got, "the waiter did not get the lock");
    let woken_after = at - released;
    assert!(
        woken_after < Duration::from_millis(500),
        "the waiter got the lock {woken_after:?} after the release: it was not woken by it"
    );
}

#[test]
fn read_write_locks_and_semaphores_keep_their_keys_in_one_slot() {
    let cluster = Cluster::start(3);
    let pool = cluster.pool();
    // A semaphore, with a waiter: holders, queue and waiters under its name's tag.
    let exports = RedisSemaphore::new(pool.clone(), "exports", 2).unwrap();
    let both = exports.acquire_many(2).unwrap();
    let waiter = {
        let other = RedisSemaphore::new(cluster.pool(), "exports", 2).unwrap();
        spawn("semaphore waiter", move || {
            other.try_acquire_for(HANG).unwrap().permits()
        })
    };
    let mut conn = cluster.nodes[cluster.primary_of("{exports}")].connection();
    assert!(eventually(HANG, || conn
        .keys::<_, Vec<String>>("semaphore-queue:*")
        .unwrap()
        .len()
        == 1));
    let keys: Vec<String> = conn.keys("semaphore*").unwrap();
    assert!(keys.iter().all(|k| k.contains("{exports}")), "{keys:?}");
    let listed: Vec<_> = redis_mutex::list_locks(&pool)
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert!(
        listed
            .iter()
            .any(|l| l.name == "exports" && l.permits.is_some()),
        "{listed:?}"
    );
    both.release().unwrap();
    assert_eq!(waiter.join(HANG), 1);
    let tenant = RedisRwLock::new(pool.clone(), "tenants/42").unwrap();
    let tree = RedisRwLock::new(pool, "tenants").unwrap();
    let reading = tenant.read().unwrap();
    assert!(
        tree.try_write().is_err(),
        "a writer on the ancestor must wait"
    );
    drop(reading);
    let writing = tree.write().unwrap();
    assert!(writing.fencing_token() >= 1);
    let mut conn = cluster.nodes[cluster.primary_of("{tenants}")].connection();
    let keys: Vec<String> = conn.keys("rwlock:*").unwrap();
    assert!(keys.iter().all(|k| k.contains("{tenants}")), "{keys:?}");
    assert!(!keys.is_empty());
}

#[test]
fn reset_all_clears_every_primary() {
    let cluster = Cluster::start(3);
    let pool = cluster.pool();
    let names = names_on_every_primary(&cluster, 2);
    let mutexes: Vec<RedisMutex> = names
        .iter()
        .map(|n| RedisMutex::new(pool.clone(), n.as_str()).unwrap())
        .collect();
    let guards: Vec<_> = mutexes.iter().map(|m| m.lock().unwrap()).collect();
    let tree = RedisRwLock::builder(pool.clone(), "reports/2024")
        .auto_renewal(false)
        .build()
        .unwrap();
    let reading = tree.read().unwrap();
    // Every primary's locks are listed, with the names as given.
    let mut listed: Vec<String> = redis_mutex::list_locks(&pool)
        .map(|l| l.unwrap().name)
        .collect();
    listed.sort();
    let mut expected: Vec<String> = names.clone();
    expected.push("reports/2024".to_owned());
    expected.sort();
    assert_eq!(listed, expected);
    let cleared = reset_all(&pool).unwrap();
    assert_eq!(cleared, names.len() + 1, "every mutex and the read lease");
    for node in &cluster.nodes {
        let mut conn = node.connection();
        let left: Vec<String> = conn.keys("lock:*").unwrap();
        assert!(left.is_empty(), "{} still has {left:?}", node.url());
        let leases: Vec<String> = conn.keys("rwlock:[wr]:*").unwrap();
        assert!(leases.is_empty(), "{} still has {leases:?}", node.url());
    }
    for mutex in &mutexes {
        assert!(!mutex.is_locked().unwrap());
    }
    drop(reading);
    drop(guards);
}

/// The child's part of the exclusion test: `CYCLES` lock, read, increment, write, unlock
/// cycles on the names it is given, printing each grant.
#[test]
#[ignore = "a child process of four_processes_exclude_each_other_on_names_over_every_primary"]
fn cluster_worker() {
    let urls = child_env("CLUSTER_URLS");
    let urls: Vec<&str> = urls.split(',').collect();
    let names: Vec<String> = child_env("NAMES").split(',').map(str::to_owned).collect();
    let cycles: usize = child_env("CYCLES").parse().unwrap();
    let pool = Pool::cluster(&urls).unwrap();
    let mutexes: Vec<RedisMutex> = names
        .iter()
        .map(|n| RedisMutex::new(pool.clone(), n.as_str()).unwrap())
        .collect();
    // The protected data: counters in the cluster, read and written by redis-rs's own
    // cluster client, as an application would.
    let nodes: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
    let mut data = redis::cluster::ClusterClient::new(nodes)
        .unwrap()
        .get_connection()
        .unwrap();
    for cycle in 0..cycles {
        let mutex = &mutexes[cycle % mutexes.len()];
        let guard = mutex.lock().unwrap();
        let key = format!("counter:{{{}}}", mutex.name());
        // Not atomic: only the lock keeps two holders from reading the same value.
        let value: Option<u64> = data.get(&key).unwrap();
        let value = value.unwrap_or(0);
        let _: () = data.set(&key, value + 1).unwrap();
        println!("@grant {} {} {value}", mutex.name(), guard.fencing_token());
        guard.unlock().unwrap();
    }
}

#[test]
fn four_processes_exclude_each_other_on_names_over_every_primary() {
    const PROCESSES: usize = 4;
    const CYCLES: usize = 500;
    let cluster = Cluster::start(3);
    let names = names_on_every_primary(&cluster, 1);
    let primaries: HashSet<usize> = names
        .iter()
        .map(|n| cluster.primary_of(&format!("{{{n}}}")))
        .collect();
    assert_eq!(primaries.len(), 3, "the names cover every primary");
    let env = [
        ("CLUSTER_URLS", cluster.urls().join(",")),
        ("NAMES", names.join(",")),
        ("CYCLES", CYCLES.to_string()),
    ];
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| spawn_child(module_path!(), "cluster_worker", &env))
        .collect();
    let mut grants: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    for child in children {
        let out = child.finish(Duration::from_secs(120));
        for line in out.lines().filter_map(|l| l.split("@grant ").nth(1)) {
            let mut parts = line.split(' ');
            let (name, token, value) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            grants
                .entry(name.to_owned())
                .or_default()
                .push((value.parse().unwrap(), token.parse().unwrap()));
        }
    }
    let mut total = 0;
    let mut conn = redis::cluster::ClusterClient::new(cluster.urls())
        .unwrap()
        .get_connection()
        .unwrap();
    for (name, mut seen) in grants {
        let counter: u64 = conn.get(format!("counter:{{{name}}}")).unwrap();
        assert_eq!(counter as usize, seen.len(), "`{name}`: lost updates");
        total += counter as usize;
        // Ordered by the value each holder read, the tokens must rise.
        seen.sort_unstable();
        for pair in seen.windows(2) {
            assert_eq!(
                pair[1].0,
                pair[0].0 + 1,
                "`{name}`: two holders read the same value"
            );
            assert!(
                pair[1].1 > pair[0].1,
                "`{name}`: tokens did not rise: {pair:?}"
            );
        }
    }
    assert_eq!(total, PROCESSES * CYCLES);
}

/// The child's part of the migration and failover test: `try_lock_for` cycles on one name
/// until `CYCLES` grants or the deadline, each call timed; failures (while the slot moves
/// or the primary changes) are counted and retried.
#[test]
#[ignore = "a child process of exclusion_holds_through_a_slot_migration_and_a_failover"]
fn cluster_churn_worker() {
    let urls = child_env("CLUSTER_URLS");
    let urls: Vec<&str> = urls.split(',').collect();
    let cycles: usize = child_env("CYCLES").parse().unwrap();
    let pool = Pool::builder()
        .response_timeout(Duration::from_millis(1000))
        .build_cluster(&urls)
        .unwrap();
    let mutex = RedisMutex::builder(pool, "hot")
        .expire(Duration::from_secs(5))
        .build()
        .unwrap();
    let nodes: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
    let mut data = redis::cluster::ClusterClient::new(nodes)
        .unwrap()
        .get_connection()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let (mut grants, mut errors, mut longest) = (0, 0, Duration::ZERO);
    while grants < cycles && Instant::now() < deadline {
        let called = Instant::now();
        let attempt = mutex.try_lock_for(Duration::from_secs(2));
        longest = longest.max(called.elapsed());
        match attempt {
            Ok(guard) => {
                // The data's own client may fail while the slot moves: try again, still
                // under the lock.
                let value: u64 =
                    retried(|| data.get::<_, Option<u64>>("counter:{hot}")).unwrap_or(0);
                retried(|| data.set::<_, _, ()>("counter:{hot}", value + 1));
                let token = guard.fencing_token();
                let released = Instant::now();
                let unlocked = guard.unlock();
                longest = longest.max(released.elapsed());
                grants += 1;
                println!("@grant {value} {token}");
                if let Err(e) = unlocked {
                    errors += 1;
                    println!("@error unlock: {e}");
                }
            }
            Err(e) if e.is_would_block() => {}
            Err(e) => {
                errors += 1;
                println!("@error lock: {e}");
            }
        }
    }
    println!("@done {grants} {errors} {}", longest.as_millis());
}

/// `op`, tried again (for up to 10 s) while it fails.
fn retried<T>(mut op: impl FnMut() -> redis::RedisResult<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match op() {
            Ok(value) => return value,
            Err(e) if Instant::now() < deadline => {
                println!("@data-error {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("the data's client kept failing: {e}"),
        }
    }
}

#[test]
fn exclusion_holds_through_a_slot_migration_and_a_failover() {
    const PROCESSES: usize = 3;
    const CYCLES: usize = 1500;
    let cluster = Cluster::start(3);
    let env = [
        ("CLUSTER_URLS", cluster.urls().join(",")),
        ("CYCLES", CYCLES.to_string()),
    ];
    let mut children: Vec<_> = (0..PROCESSES)
        .map(|_| spawn_child(module_path!(), "cluster_churn_worker", &env))
        .collect();
    let lines: Vec<_> = children.iter_mut().map(|c| c.lines()).collect();
    let mut data = redis::cluster::ClusterClient::new(cluster.urls())
        .unwrap()
        .get_connection()
        .unwrap();
    let counter = |at_least: u64| {
        let mut data = redis::cluster::ClusterClient::new(cluster.urls())
            .unwrap()
            .get_connection()
            .unwrap();
        let reached = eventually(Duration::from_secs(60), || {
            let value: Option<u64> = data.get("counter:{hot}").unwrap_or(None);
            value.unwrap_or(0) >= at_least
        });
        assert!(
            reached,
            "the workers stopped making progress before {at_least} grants"
        );
    };
    // Under contention, move the lock's slot to another primary...
    counter(100);
    let slot = cluster.slot_of("{hot}");
    let from = cluster.primary_of_slot(slot);
    let to = (0..16384u16)
        .step_by(512)
        .map(|s| cluster.primary_of_slot(s))
        .find(|&p| p != from)
        .expect("another primary");
    let migrating = cluster.migrate_slot(slot, to);
    assert_eq!(cluster.primary_of_slot(slot), to);
    // ... then promote that primary's replica, and see the work go on after it.
    counter(300);
    let promoted = cluster.failover(to);
    assert_eq!(cluster.primary_of_slot(slot), promoted);
    let after: u64 = data.get("counter:{hot}").unwrap();
    assert!(
        after < (PROCESSES * CYCLES) as u64 - 100,
        "the workers were done before the failover ended: the test proves nothing"
    );
    counter(after + 100);

    let mut seen: Vec<(u64, u64)> = Vec::new();
    let mut errors = 0;
    let mut longest = 0;
    for (child, lines) in children.into_iter().zip(&lines) {
        let (before, done) = lines.until("@done ", Duration::from_secs(120));
        for grant in before.iter().filter_map(|l| l.split("@grant ").nth(1)) {
            let (value, token) = grant.split_once(' ').unwrap();
            seen.push((value.parse().unwrap(), token.parse().unwrap()));
        }
        let mut parts = done.split(' ').map(|p| p.parse::<u64>().unwrap());
        let (_, e, l) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        errors += e;
        longest = longest.max(l);
        child.finish_with(lines, HANG);
    }
    // Ordered by the value each holder read, the values are consecutive (nobody read the
    // same value twice: no two holders at once) and the tokens rise.
    seen.sort_unstable();
    for (i, pair) in seen.windows(2).enumerate() {
        assert_eq!(
            pair[1].0,
            pair[0].0 + 1,
            "grant {i}: two holders read the same value"
        );
        assert!(
            pair[1].1 > pair[0].1,
            "grant {i}: tokens did not rise: {pair:?}"
        );
    }
    let value: u64 = data.get("counter:{hot}").unwrap();
    println!(
        "{value} grants; the slot migrated in {migrating:?}; {errors} calls failed during the \
         moves; the longest call took {longest} ms"
    );
    // try_lock_for(2 s) plus a reply timeout (1 s) for each of its two requests, and slack.
    assert!(longest < 5_000, "a call took {longest} ms");
    assert_eq!(
        value as usize,
        PROCESSES * CYCLES,
        "lost or doubled updates"
    );
}

/// python-redis-lock on redis-py's cluster client: `Lock(RedisCluster(..), "{jobs}",
/// strict=False)` holds, says "locked", and releases when told on stdin.
const PYTHON_CLUSTER_HOLDER: &str = r#"
import sys, redis_lock
from redis.cluster import RedisCluster
port, name = int(sys.argv[1]), sys.argv[2]
lock = redis_lock.Lock(RedisCluster(host="127.0.0.1", port=port), name, id="python-cluster", strict=False)
assert lock.acquire(blocking=True)
print("@locked", flush=True)
sys.stdin.readline()
lock.release()
print("@released", flush=True)
"#;

#[test]
fn python_redis_lock_on_the_cluster_shares_the_lock_when_it_writes_the_braces() {
    let cluster = Cluster::start(3);
    let mut python = std::process::Command::new(crate::support::python::python())
        .args([
            "-c",
            PYTHON_CLUSTER_HOLDER,
            &cluster.nodes[0].port().to_string(),
            "{jobs}",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run python");
    let lines = crate::support::Lines::new(python.stdout.take().unwrap());
    lines.expect("@locked", HANG);

    let mutex = RedisMutex::new(cluster.pool(), "jobs").unwrap();
    assert_eq!(
        mutex.get_owner_id().unwrap().as_deref(),
        Some("python-cluster")
    );
    assert!(mutex.try_lock().is_err(), "Python holds it");
    let waiting = spawn("rust waiter", move || {
        let guard = mutex.try_lock_for(Duration::from_secs(10));
        (guard.map(drop).is_ok(), Instant::now())
    });
    let mut conn = cluster.nodes[cluster.primary_of("{jobs}")].connection();
    assert!(eventually(HANG, || blocked_clients(&mut conn) == 1));
    use std::io::Write;
    let released = Instant::now();
    writeln!(python.stdin.as_mut().unwrap()).unwrap();
    lines.expect("@released", HANG);
    let (got, at) = waiting.join(HANG);
    assert!(got, "the Rust waiter did not get the lock Python released");
    assert!(
        at - released < Duration::from_millis(500),
        "woken {:?} after Python's release: not by its signal",
        at - released
    );
    assert!(crate::support::wait_or_kill(&mut python, HANG).success());
}

/// Issue 25, finding 4: a cluster kept one fencing counter per lock name, forever, so a
/// service that locks a name per entity grew a key per entity. Counters are one per slot:
/// 20,000 names locked and released leave at most 16,384 keys.
#[test]
fn twenty_thousand_names_leave_at_most_one_counter_per_slot() {
    const NAMES: usize = 20_000;
    const THREADS: usize = 8;
    let cluster = Cluster::start(3);
    let pool = cluster.pool_with(Pool::builder().max_size(THREADS as u32 * 2));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let pool = pool.clone();
            spawn(&format!("locker-{t}"), move || {
                for i in (t..NAMES).step_by(THREADS) {
                    let mutex = RedisMutex::new(pool.clone(), format!("invoice:{i}")).unwrap();
                    mutex.lock().unwrap().unlock().unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join(HANG * 6);
    }
    let mut primaries: Vec<redis::Connection> =
        cluster.nodes.iter().map(|n| n.connection()).collect();
    let keys = |conns: &mut Vec<redis::Connection>| -> Vec<u64> {
        conns
            .iter_mut()
            .filter_map(|c| {
                let role = crate::support::info_field(c, "replication", "role");
                (role.as_deref() == Some("master"))
                    .then(|| redis::cmd("DBSIZE").query::<u64>(c).unwrap())
            })
            .collect()
    };
    // The release signals expire within a second; the counters stay.
    let settled = eventually(HANG, || keys(&mut primaries).iter().sum::<u64>() <= 16_384);
    let left = keys(&mut primaries);
    assert!(
        settled,
        "{} keys left on the primaries ({left:?}) for {NAMES} names",
        left.iter().sum::<u64>()
    );
}
