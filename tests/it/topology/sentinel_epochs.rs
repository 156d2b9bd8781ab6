//! Where Sentinel's configuration epochs could mislead a `Pool::sentinel` pool, and what the
//! pool must do all the same.
//!
//! While the sentinel that leads a failover reconfigures the other replicas, its `SENTINEL
//! MASTER` still names the old primary, at the new configuration epoch, whereas its
//! `GET-MASTER-ADDR-BY-NAME` and the other sentinels already name the promoted replica. The
//! old primary keeps taking writes until a sentinel demotes it, and a grant made there is
//! lost then. When that phase drags (a replica that cannot sync from the new primary keeps
//! the leader in it until its `failover-timeout`), no pool may grant on the old primary:
//! neither a pool built meanwhile, nor one that asks the sentinels again after a timeout.
//!
//! Sentinels restarted without their saved state count epochs from 0 again, so their next
//! failover has a lower epoch than the configuration a running pool last followed. Once the
//! server it followed is no longer a primary, the pool follows the sentinels all the same,
//! as a pool built afterwards does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::sentinel::{RoleWatch, SERVICE, Sentinels};
use crate::support::{HANG, RedisServer, connect, eventually, info_field, spawn};
use redis_mutex::{Pool, RedisMutex, TryLockError};

/// Server arguments for a replica that, once promoted, refuses to feed a replica of its own
/// (`PSYNC` and `SYNC` renamed away): the failover's other replica never syncs, and the
/// leader stays in its reconfiguration phase until its `failover-timeout`.
const REFUSES_REPLICAS: [&str; 6] = [
    "--rename-command",
    "PSYNC",
    "",
    "--rename-command",
    "SYNC",
    "",
];

/// The sentinels' `failover-timeout` in the dragging failover: the leader reconfigures the
/// other replica that long after the promotion, twice the [`LOAD`]. Nothing waits for it to
/// run out.
const DRAG: Duration = Duration::from_secs(10);

/// How long after the promotion the pools take locks: well inside the window, which closes
/// about ten seconds after the promotion (the leader's [`DRAG`] runs out; the other
/// sentinels demote the old primary, 8 s after they first see it still reporting itself
/// one).
const LOAD: Duration = Duration::from_secs(5);

/// The pools' reply timeout in the dragging failover: shorter than [`PAUSE`], so that a call
/// to the paused new primary times out and the pool asks the sentinels again.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(100);

/// How long the new primary is paused (`CLIENT PAUSE`) each time: longer than
/// [`RESPONSE_TIMEOUT`], well under the sentinels' `down-after-milliseconds` (1 s).
const PAUSE: Duration = Duration::from_millis(250);

/// From one pause to the next: the pool asks the sentinels again within a tick (500 ms) of
/// a timeout.
const PAUSE_EVERY: Duration = Duration::from_millis(700);

/// The pace of the lock loops.
const PACE: Duration = Duration::from_millis(10);

/// How many locks each pool built during the window takes before it is dropped.
const LOCKS_PER_NEW_POOL: usize = 10;

/// How soon after a failover by sentinels restarted without their state the pool that
/// followed the old primary takes a lock: a few of its listeners' ticks and reconnections,
/// with room for a loaded machine.
const FOLLOW_BOUND: Duration = Duration::from_secs(10);

/// A lock a loop took and kept.
struct Grant {
    /// Which pool took it: `existing`, or `new <n>`.
    pool: String,
    name: String,
    owner: String,
    /// How long after the promotion it was asked.
    asked: Duration,
}

/// What the lock loops saw.
#[derive(Default)]
struct Seen {
    grants: Vec<Grant>,
    /// Failed calls, each prefixed with its pool.
    errors: Vec<String>,
}

/// Takes the lock `name` (60 s expiry) through `pool` and keeps it; its owner id.
fn take(pool: &Pool, name: &str) -> Result<String, String> {
    let mutex = RedisMutex::builder(pool.clone(), name)
        .expire(Duration::from_secs(60))
        .build()
        .unwrap();
    match mutex.try_lock() {
        Ok(guard) => {
            // Kept, not released: the grant stays on its server for the check.
            guard.into_handle();
            Ok(mutex.owner_id().to_owned())
        }
        Err(TryLockError::WouldBlock) => Err(format!("a new name, {name}, was held")),
        Err(e) => Err(e.to_string()),
    }
}

/// Takes a lock of a new name (`<prefix>-<n>`) through `pool`, trying again until one is
/// granted or `bound` passes: the name and the owner id, and how many tries it took; or the
/// number of tries and the last error.
fn take_within(
    pool: &Pool,
    prefix: &str,
    bound: Duration,
) -> Result<(String, String, usize), (usize, String)> {
    let (mut tries, mut last, mut granted) = (0, String::new(), None);
    eventually(bound, || {
        tries += 1;
        let name = format!("{prefix}-{tries}");
        match take(pool, &name) {
            Ok(owner) => granted = Some((name, owner)),
            Err(e) => last = e,
        }
        granted.is_some()
    });
    granted
        .map(|(name, owner)| (name, owner, tries))
        .ok_or((tries, last))
}

/// The owner in `lock:<name>` on `server`, read directly.
fn holder(server: &RedisServer, name: &str) -> Option<String> {
    holders(server, &[name]).remove(0)
}

/// The owner in `lock:<name>` of each of `names` on `server`, read directly.
fn holders(server: &RedisServer, names: &[&str]) -> Vec<Option<String>> {
    let mut conn = server.connection();
    let mut owners = Vec::with_capacity(names.len());
    for chunk in names.chunks(500) {
        let keys: Vec<String> = chunk.iter().map(|name| format!("lock:{name}")).collect();
        let some: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut conn).unwrap();
        owners.extend(some);
    }
    owners
}

/// What sentinel `k`'s `SENTINEL MASTER` says: the primary's port, and the configuration's
/// epoch.
fn sentinel_master(set: &Sentinels, k: usize) -> (u16, u64) {
    let fields: Vec<String> = redis::cmd("SENTINEL")
        .arg("MASTER")
        .arg(SERVICE)
        .query(&mut connect(&set.sentinel_url(k)))
        .unwrap();
    let field = |name: &str| {
        fields
            .chunks(2)
            .find(|kv| kv[0] == name)
            .unwrap_or_else(|| panic!("SENTINEL MASTER has no {name}: {fields:?}"))[1]
            .clone()
    };
    (
        field("port").parse().unwrap(),
        field("config-epoch").parse().unwrap(),
    )
}

/// Sets `failover-timeout` on every sentinel.
fn set_failover_timeout(set: &Sentinels, timeout: Duration) {
    for k in 0..set.sentinels.len() {
        let _: () = redis::cmd("SENTINEL")
            .arg("SET")
            .arg(SERVICE)
            .arg("failover-timeout")
            .arg(timeout.as_millis() as u64)
            .query(&mut connect(&set.sentinel_url(k)))
            .unwrap();
    }
}

/// Makes the sentinels finish a failover sooner: they look at every server every second
/// (`INFO`) and say hello every half second, so that they demote an old primary still
/// reporting itself one 2 s after they first see it so (four hello periods), not 8 s.
/// Sentinel's `failover-timeout` does not gate that demotion.
fn quicken(set: &Sentinels) {
    for k in 0..set.sentinels.len() {
        let _: () = redis::cmd("SENTINEL")
            .arg("DEBUG")
            .arg("info-period")
            .arg(1000)
            .arg("publish-period")
            .arg(500)
            .query(&mut connect(&set.sentinel_url(k)))
            .unwrap_or_else(|e| panic!("SENTINEL DEBUG (Redis 7.0 on) on sentinel {k}: {e}"));
    }
}

/// Waits until every sentinel has seen the server on `port` report itself a replica (its
/// `role-reported`). A sentinel that has not, because its last `INFO` of it came before it
/// was demoted, would take its promotion by the next failover for a replica that turned
/// itself into a primary, and demote it again (`+convert-to-slave`).
fn await_reported_replica(set: &Sentinels, port: u16) {
    let mut roles = Vec::new();
    let seen = eventually(HANG, || {
        roles = (0..set.sentinels.len())
            .map(|k| {
                let replicas: Vec<Vec<String>> = redis::cmd("SENTINEL")
                    .arg("REPLICAS")
                    .arg(SERVICE)
                    .query(&mut connect(&set.sentinel_url(k)))
                    .unwrap();
                replicas.iter().find_map(|fields| {
                    let field = |name: &str| {
                        fields
                            .chunks(2)
                            .find(|kv| kv[0] == name)
                            .map(|kv| kv[1].clone())
                    };
                    (field("port")? == port.to_string())
                        .then(|| field("role-reported"))
                        .flatten()
                })
            })
            .collect();
        roles.iter().all(|role| role.as_deref() == Some("slave"))
    });
    assert!(
        seen,
        "every sentinel should see the server on {port} report itself a replica within          {HANG:?}; their role-reported: {roles:?}"
    );
}

/// Asks sentinel `k` to fail the primary over; a sentinel refuses while it sees no healthy
/// replica yet.
fn ask_failover(set: &Sentinels, k: usize) {
    let mut conn = connect(&set.sentinel_url(k));
    let mut refused = String::new();
    let asked = eventually(HANG, || {
        match redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(SERVICE)
            .query::<()>(&mut conn)
        {
            Ok(()) => true,
            Err(e) => {
                refused = e.to_string();
                false
            }
        }
    });
    assert!(
        asked,
        "sentinel {k} should start a failover within {HANG:?}; it refused: {refused}"
    );
}

/// The server's replication role (`master` or `slave`).
fn role(server: &RedisServer) -> String {
    info_field(&mut server.connection(), "replication", "role").expect("INFO has a role")
}

/// Takes a lock of a new name through `pool` every [`PACE`], until `done(locks asked so
/// far)` (and [`HANG`] at most); records what happens in `seen`.
fn lock_loop(
    pool: &Pool,
    label: &str,
    promoted: Instant,
    seen: &Mutex<Seen>,
    done: impl Fn(usize) -> bool,
) {
    let deadline = Instant::now() + HANG;
    let mut n = 0;
    while !done(n) && Instant::now() < deadline {
        n += 1;
        let name = format!("{}-{n}", label.replace(' ', "-"));
        let asked = Instant::now();
        let outcome = take(pool, &name);
        let mut seen = seen.lock().unwrap();
        match outcome {
            Ok(owner) => seen.grants.push(Grant {
                pool: label.to_owned(),
                name,
                owner,
                asked: asked.duration_since(promoted),
            }),
            Err(e) => seen.errors.push(format!("{label}: {e}")),
        }
        drop(seen);
        // Load generation: the next lock PACE after this one was asked.
        thread::sleep(PACE.saturating_sub(asked.elapsed()));
    }
}

/// The leader of a failover stays in its reconfiguration phase (the other replica cannot
/// sync from the promoted one), naming the old primary at the new epoch in `SENTINEL
/// MASTER`, while the old primary still takes writes. Meanwhile a pool that existed before
/// the failover takes locks, asking the sentinels again after each timeout on the new
/// primary (paused now and then), and new pools are built one after the other, each taking
/// a few locks. The loops start once the window is seen, after the promotion: every grant
/// must be on the new primary, and the old primary must hold none of them.
#[test]
fn a_failover_whose_reconfiguration_drags_never_sends_a_grant_back_to_the_old_primary() {
    // servers[0]: the primary; [1]: the replica to promote; [2]: a replica never promoted,
    // which cannot sync from [1] once [1] is promoted.
    let set = Sentinels::start_with_second_replica(&REFUSES_REPLICAS);
    let (old, new) = (&set.servers[0], &set.servers[1]);
    set_failover_timeout(&set, DRAG);
    let existing: Pool = set.pool_with(Pool::builder().response_timeout(RESPONSE_TIMEOUT));
    let before = take(&existing, "before").expect("a lock before the failover");
    assert_eq!(
        holder(old, "before"),
        Some(before),
        "before the failover, a grant is on the primary"
    );
    let (_, epoch) = sentinel_master(&set, 0);

    let promotion = RoleWatch::start(&new.url(), "master");
    ask_failover(&set, 0);
    let promoted = promotion
        .wait(HANG)
        .unwrap_or_else(|| panic!("the replica should be promoted within {HANG:?}"));
    let mut views = Vec::new();
    let window = eventually(HANG, || {
        views = (0..3).map(|k| sentinel_master(&set, k)).collect();
        views[0].0 == old.port()
            && views[0].1 > epoch
            && views[1..].iter().all(|v| v.0 == new.port() && v.1 > epoch)
    });
    assert!(
        window,
        "the leader should name the old primary {} at a new epoch (above {epoch}) while the \
         others name the new one {}; SENTINEL MASTER (port, epoch) of each: {views:?}",
        old.port(),
        new.port()
    );
    println!(
        "the window seen {:?} after the promotion: SENTINEL MASTER (port, epoch) {views:?}",
        promoted.elapsed()
    );

    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let existing_loop = {
        let (seen, stop) = (seen.clone(), stop.clone());
        spawn("the existing pool's lock loop", move || {
            lock_loop(&existing, "existing", promoted, &seen, |_| {
                stop.load(Ordering::SeqCst)
            })
        })
    };
    let new_pools_loop = {
        let (seen, stop, urls) = (seen.clone(), stop.clone(), set.urls());
        spawn("the new pools' lock loops", move || {
            let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
            let mut pools = 0;
            while !stop.load(Ordering::SeqCst) && pools < 1000 {
                pools += 1;
                let pool = Pool::builder()
                    .response_timeout(RESPONSE_TIMEOUT)
                    .connect_lazy(true)
                    .build_sentinel(&urls, SERVICE)
                    .expect("a pool through the sentinels");
                lock_loop(&pool, &format!("new {pools}"), promoted, &seen, |n| {
                    n >= LOCKS_PER_NEW_POOL || stop.load(Ordering::SeqCst)
                });
            }
            pools
        })
    };
    let mut pauses = 0;
    while promoted.elapsed() < LOAD {
        let _: () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(PAUSE.as_millis() as u64)
            .arg("ALL")
            .query(&mut new.connection())
            .unwrap();
        pauses += 1;
        // Pacing: pauses spaced so that the existing pool asks the sentinels between them.
        thread::sleep(PAUSE_EVERY);
    }
    stop.store(true, Ordering::SeqCst);
    existing_loop.join(HANG);
    let pools = new_pools_loop.join(HANG);
    let loaded = promoted.elapsed();

    // The whole load ran inside the window: the old primary would have taken a grant.
    let leader = sentinel_master(&set, 0);
    let old_role = role(old);
    assert!(
        leader.0 == old.port() && leader.1 > epoch && old_role == "master",
        "the window should last the whole load ({loaded:?} after the promotion): the leader \
         naming the old primary {} at a new epoch (it says {leader:?}), and the old primary \
         still one (its role: {old_role})",
        old.port(),
    );

    let seen = seen.lock().unwrap();
    let names: Vec<&str> = seen.grants.iter().map(|g| g.name.as_str()).collect();
    let (on_old, on_new) = (holders(old, &names), holders(new, &names));
    let mut granted_on_old = Vec::new();
    let mut granted_nowhere = Vec::new();
    for ((grant, on_old), on_new) in seen.grants.iter().zip(&on_old).zip(&on_new) {
        if on_old.is_some() {
            granted_on_old.push(grant);
        } else if on_new.as_deref() != Some(grant.owner.as_str()) {
            granted_nowhere.push(grant);
        }
    }
    let by_existing = seen.grants.iter().filter(|g| g.pool == "existing").count();
    let existing_failures = seen
        .errors
        .iter()
        .filter(|e| e.starts_with("existing:"))
        .count();
    println!(
        "{} grants until {loaded:?} after the promotion ({by_existing} by the existing pool, \
         the others by {pools} new pools); {} failed calls ({existing_failures} of the \
         existing pool, over {pauses} pauses of the new primary), the first: {:?}",
        seen.grants.len(),
        seen.errors.len(),
        seen.errors.first()
    );
    let list = |grants: &[&Grant]| {
        grants
            .iter()
            .take(20)
            .map(|g| format!("\n  {} (asked {:?} after the promotion)", g.name, g.asked))
            .collect::<String>()
    };
    assert!(
        granted_on_old.is_empty() && granted_nowhere.is_empty(),
        "every grant after the promotion should be on the new primary {} and none on the old \
         one {}; of {} grants, {} are on the old primary (the first 20):{}\nand {} are on \
         neither (the first 20):{}",
        new.port(),
        old.port(),
        seen.grants.len(),
        granted_on_old.len(),
        list(&granted_on_old),
        granted_nowhere.len(),
        list(&granted_nowhere)
    );
    // Both pools were put to the test: each made grants, and the existing one timed out on
    // the paused primary, which makes it ask the sentinels again.
    assert!(
        by_existing > 0 && seen.grants.len() > by_existing && existing_failures > 0,
        "both the existing pool and the new ones should have made grants, and the existing \
         pool should have timed out on the paused primary: {by_existing} grants by the \
         existing pool, {} by new pools, {existing_failures} failed calls of the existing pool",
        seen.grants.len() - by_existing
    );
}

/// Sentinels restarted without their saved state count epochs from 0 again: their first
/// failover, at epoch 1, is older than the configuration (epoch 2) a running pool followed.
/// Once the server that pool followed is demoted, the pool follows the sentinels all the
/// same and takes a lock on the new primary within [`FOLLOW_BOUND`], as a pool built then
/// does at once.
#[test]
fn a_pool_follows_sentinels_restarted_without_their_state() {
    let started = Instant::now();
    let mut set = Sentinels::start();
    // A demoted primary resynchronises at once instead of waiting 5 s for more replicas to
    // share the transfer: each failover is done sooner.
    for server in &set.servers {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("repl-diskless-sync-delay")
            .arg(0)
            .query(&mut server.connection())
            .unwrap();
    }
    quicken(&set);
    let pool: Pool = set.pool_with(Pool::builder().response_timeout(Duration::from_millis(300)));
    let first = set.failover_led_by(0);
    await_reported_replica(&set, set.servers[1 - first].port());
    set.failover_led_by(1);
    let (_, followed_epoch) = sentinel_master(&set, 0);
    assert_eq!(followed_epoch, 2, "two failovers, two epochs");
    let primary = set.primary_index();
    let (name, owner, _) = take_within(&pool, "before", HANG).unwrap_or_else(|(tries, last)| {
        panic!(
            "the pool should take a lock within {HANG:?} of two failovers; {tries} tries \
             failed, the last with: {last}"
        )
    });
    assert_eq!(
        holder(&set.servers[primary], &name),
        Some(owner),
        "after two failovers, the pool's grant is on the primary the sentinels name"
    );
    println!("two failovers done {:?} after the start", started.elapsed());

    set.restart_fresh(set.servers[primary].port());
    quicken(&set);
    let (_, fresh_epoch) = sentinel_master(&set, 0);
    assert_eq!(
        fresh_epoch, 0,
        "sentinels restarted without their state start from epoch 0"
    );
    let new = set.failover_led_by(0);
    let (_, epoch) = sentinel_master(&set, 0);
    assert!(
        epoch < followed_epoch,
        "the restarted sentinels' failover has a lower epoch ({epoch}) than the pool's \
         configuration ({followed_epoch})"
    );

    let done = Instant::now();
    let (name, owner, tries) =
        take_within(&pool, "after", FOLLOW_BOUND).unwrap_or_else(|(tries, last)| {
            panic!(
                "the pool should take a lock within {FOLLOW_BOUND:?} of the failover by the \
                 restarted sentinels; {tries} tries failed, the last with: {last}"
            )
        });
    let followed = done.elapsed();
    assert_eq!(
        holder(&set.servers[new], &name),
        Some(owner),
        "the pool's grant after the failover is on the new primary"
    );
    let built_now = set.pool();
    let owner = take(&built_now, "built-now").expect("a pool built now takes a lock at once");
    assert_eq!(
        holder(&set.servers[new], "built-now"),
        Some(owner),
        "a new pool's grant is on the new primary"
    );
    println!(
        "the restarted sentinels failed over at epoch {epoch}; the pool took a lock {followed:?} \
         after that failover was done ({tries} tries); {:?} in all",
        started.elapsed()
    );
}
