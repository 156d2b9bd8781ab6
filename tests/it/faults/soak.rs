//! A soak: 8 workers in 4 processes contend for one lock for 60 s while its server is
//! killed with SIGKILL and restarted twice.
//!
//! The lock's server keeps an append-only file synced on every write, so a restarted server
//! has the locks it had when it was killed: without persistence a restart frees every lock
//! at once, and two holders overlapping then would be Redis' doing, not this crate's (see
//! `docs/reliability.md`). The counter the workers increment lives on a second server that
//! is never killed.

use std::thread;
use std::time::{Duration, Instant};

use crate::support::{HANG, RedisServer, child_env, connect, spawn, spawn_child};
use redis::Commands;
use redis_mutex::{Pool, RedisMutex, TryLockError};

const SOAK: Duration = Duration::from_secs(60);
const PROCESSES: usize = 4;
const WORKERS_PER_PROCESS: usize = 2;
/// A lease long next to a critical section, short next to the soak: a holder whose release
/// was lost to a kill holds everyone up this long at most.
const EXPIRE: Duration = Duration::from_secs(3);
/// How long each outage lasts.
const OUTAGE: Duration = Duration::from_secs(1);

/// What one worker did, as it reports it.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    /// Cycles that held the lock and wrote the counter.
    increments: u64,
    /// Of those, cycles whose release then succeeded: the cycles that reported success.
    successes: u64,
    /// Cycles that held the lock and found another holder inside the critical section.
    overlaps: u64,
    /// Attempts that timed out on a held lock, and calls that failed with an error.
    timeouts: u64,
    errors: u64,
}

impl Tally {
    fn line(&self) -> String {
        format!(
            "{} {} {} {} {}",
            self.increments, self.successes, self.overlaps, self.timeouts, self.errors
        )
    }

    fn parse(line: &str) -> Tally {
        let n: Vec<u64> = line
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        Tally {
            increments: n[0],
            successes: n[1],
            overlaps: n[2],
            timeouts: n[3],
            errors: n[4],
        }
    }

    fn add(&mut self, other: Tally) {
        self.increments += other.increments;
        self.successes += other.successes;
        self.overlaps += other.overlaps;
        self.timeouts += other.timeouts;
        self.errors += other.errors;
    }
}

/// One worker: lock, read-increment-write the counter, unlock, until `until`.
fn work(lock_pool: Pool, storage: &mut redis::Connection, owner: String, until: Instant) -> Tally {
    let mutex = RedisMutex::builder(lock_pool, "soak")
        .owner_id(owner)
        .expire(EXPIRE)
        .response_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let mut tally = Tally::default();
    // Bounded by time, and by count should the clock misbehave.
    for _ in 0..10_000_000 {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match mutex.try_lock_for(left.min(Duration::from_secs(2))) {
            Ok(guard) => {
                let inside: i64 = storage.incr("inside", 1).unwrap();
                if inside != 1 {
                    tally.overlaps += 1;
                }
                let value: i64 = storage
                    .get::<_, Option<i64>>("counter")
                    .unwrap()
                    .unwrap_or(0);
                let _: () = storage.set("counter", value + 1).unwrap();
                tally.increments += 1;
                let _: i64 = storage.decr("inside", 1).unwrap();
                if guard.unlock().is_ok() {
                    tally.successes += 1;
                }
            }
            Err(TryLockError::WouldBlock) => tally.timeouts += 1,
            Err(TryLockError::Error(_)) => tally.errors += 1,
            Err(e) => panic!("an unknown error: {e}"),
        }
    }
    tally
}

/// Child side of [`a_minute_of_contention_with_two_server_kills_loses_no_update`].
#[test]
#[ignore = "run as a child process by a_minute_of_contention_with_two_server_kills_loses_no_update"]
fn child_soaks() {
    // Built without connecting: the server may be down at this moment.
    let lock_pool = Pool::builder()
        .max_size(4)
        .connection_timeout(Duration::from_secs(1))
        .connect_lazy(true)
        .build(&child_env("REDIS_URL"))
        .unwrap();
    let storage = child_env("STORAGE_URL");
    let process = child_env("PROCESS");
    let soak = Duration::from_millis(child_env("SOAK_MS").parse().unwrap());
    let until = Instant::now() + soak;
    let workers: Vec<_> = (0..WORKERS_PER_PROCESS)
        .map(|w| {
            let lock_pool = lock_pool.clone();
            let mut storage = connect(&storage);
            let owner = format!("worker-{process}-{w}");
            spawn(&owner.clone(), move || {
                work(lock_pool, &mut storage, owner, until)
            })
        })
        .collect();
    for worker in workers {
        // Past the soak's end by more than a lease and a few timeouts: stuck.
        println!("@done {}", worker.join(soak + HANG).line());
    }
}

#[test]
fn a_minute_of_contention_with_two_server_kills_loses_no_update() {
    let storage = RedisServer::start();
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let started = Instant::now();
    let children: Vec<_> = (0..PROCESSES)
        .map(|p| {
            spawn_child(
                module_path!(),
                "child_soaks",
                &[
                    ("REDIS_URL", server.url()),
                    ("STORAGE_URL", storage.url()),
                    ("PROCESS", p.to_string()),
                    ("SOAK_MS", SOAK.as_millis().to_string()),
                ],
            )
        })
        .collect();

    // Two outages, at a third and at two thirds of the soak.
    for at in [SOAK / 3, SOAK * 2 / 3] {
        thread::sleep(at.saturating_sub(started.elapsed()));
        server.kill();
        thread::sleep(OUTAGE);
        server.restart();
    }

    let mut total = Tally::default();
    for child in children {
        // A worker stuck past the soak's end by more than a lease and a few timeouts fails
        // the test here.
        let stdout = child.finish(SOAK + Duration::from_secs(30));
        let tallies: Vec<Tally> = stdout
            .lines()
            .filter_map(|l| l.split_once("@done ").map(|(_, t)| Tally::parse(t)))
            .collect();
        assert_eq!(
            tallies.len(),
            WORKERS_PER_PROCESS,
            "a child's report: {stdout}"
        );
        tallies.into_iter().for_each(|t| total.add(t));
    }
    let took = started.elapsed();
    println!("soak of {took:?}: {total:?}");
    assert!(
        took < SOAK + EXPIRE + Duration::from_secs(10),
        "the workers ran {took:?}, past the soak's end"
    );
    let mut storage = storage.connection();
    let counter: u64 = storage.get("counter").unwrap();
    assert_eq!(
        total.overlaps, 0,
        "two workers were inside the lock at once"
    );
    assert_eq!(
        counter, total.increments,
        "the counter lost updates: {counter} for {} increments",
        total.increments
    );
    assert!(total.successes <= total.increments);
    assert!(
        total.successes >= 1_000,
        "too few cycles for a soak: {total:?}"
    );
    assert!(total.errors > 0, "the kills were never noticed: {total:?}");

    // Nobody is left holding the lock beyond its lease.
    let after = RedisMutex::new(server.pool(), "soak").unwrap();
    drop(after.try_lock_for(EXPIRE + Duration::from_secs(1)).unwrap());
}
