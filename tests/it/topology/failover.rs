//! What a failover costs, measured: worker processes (default and fair mode, auto-renewal on
//! and off) loop on a few locks behind Sentinel or on a Redis Cluster while the primary is
//! failed over again and again; then the history checker (`crate::support::history`) reads every
//! call and grant. Behind Sentinel each failover is led by a sentinel chosen at random, or
//! is a real election (the primary paused past `down-after-milliseconds`), as production
//! sees them. For each run it reports, per failover, who led it, the double grants that
//! followed it and the gap between grants around it, and for the run the token regressions
//! and calls past their bound.
//!
//! A grant made on the old primary in the moments before the switch is announced, and not
//! replicated, is lost with it: its holder goes on believing it holds the lock while another
//! process is granted it on the new primary. That is a double grant, inherent to Redis's
//! asynchronous replication; `wait_replicas(1, ..)` narrows it to the grants whose lease is
//! renewed on the old primary in that moment. The runs count it; they do not assert it
//! away. What they assert: tokens never go back, every call keeps its bound, and grants come
//! again after every failover.
//!
//! `FAILOVERS` sets the failovers per run (2 by default; `docs/deployments.md` has 30 per
//! run), `FAILOVER_SEED` the workers' seed.

use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use crate::support::cluster::Cluster;
use crate::support::history::{self, Checked, Claim, Log, now};
use crate::support::sentinel::{SERVICE, Sentinels};
use crate::support::{ChildTest, HANG, child_env, spawn_child};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis_mutex::{Leadership, Pool, RedisElection, RedisMutex, RedisMutexGuard, TryLockError};

const WORKERS: usize = 4;
const THREADS: usize = 3;
const NAMES: [(&str, bool); 6] = [
    ("fo-plain-a", false),
    ("fo-plain-b", false),
    ("fo-fair-a", true),
    ("fo-fair-b", true),
    // Elections: a term is exclusive as a mutex's grant is.
    ("fo-election", false),
    ("fo-election-fair", true),
];

/// A mutex's guard or an election's term, as a worker holds it.
trait Held {
    fn ensure_held(&self) -> redis_mutex::Result<()>;
    fn end(self: Box<Self>) -> redis_mutex::Result<()>;
}

impl Held for RedisMutexGuard<'_> {
    fn ensure_held(&self) -> redis_mutex::Result<()> {
        RedisMutexGuard::ensure_held(self)
    }
    fn end(self: Box<Self>) -> redis_mutex::Result<()> {
        self.unlock()
    }
}

impl Held for Leadership<'_> {
    fn ensure_held(&self) -> redis_mutex::Result<()> {
        Leadership::ensure_held(self)
    }
    fn end(self: Box<Self>) -> redis_mutex::Result<()> {
        self.resign()
    }
}
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
const SLACK: Duration = Duration::from_millis(500);
const RENEWED_LEASE: Duration = Duration::from_millis(1500);
const PLAIN_LEASE: Duration = Duration::from_secs(2);

/// A worker: `THREADS` threads lock random names with new mutexes until told to stop (the
/// file `STOP` appears), through Sentinel (`MODE=sentinel`) or a cluster.
#[test]
#[ignore = "a child process of the failover tests"]
fn failover_worker() {
    let urls: Vec<String> = child_env("URLS").split(' ').map(str::to_owned).collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let seed: u64 = child_env("SEED").parse().unwrap();
    let replicas = child_env("WAIT_REPLICAS") == "1";
    let stop = PathBuf::from(child_env("STOP"));
    let log = Log::open(&PathBuf::from(child_env("LOG")));
    let builder = Pool::builder()
        .response_timeout(RESPONSE_TIMEOUT)
        .connect_timeout(RESPONSE_TIMEOUT)
        .connection_timeout(RESPONSE_TIMEOUT)
        .max_size(4)
        .connect_lazy(true);
    let pool = match child_env("MODE").as_str() {
        "sentinel" => builder.build_sentinel(&urls, SERVICE),
        _ => builder.build_cluster(&urls),
    }
    .unwrap();
    let worker = std::process::id();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (log, pool, stop) = (log.clone(), pool.clone(), stop.clone());
            let mut rng = StdRng::seed_from_u64(seed ^ (t as u64 + 1).wrapping_mul(0x9e37));
            thread::spawn(move || {
                let mut jobs = 0u64;
                while !stop.exists() {
                    jobs += 1;
                    let (name, fair) = NAMES[rng.random_range(0..NAMES.len())];
                    let renewed = rng.random_bool(0.5);
                    let owner = format!("w{worker}-{name}-{renewed}");
                    let lease = if renewed { RENEWED_LEASE } else { PLAIN_LEASE };
                    let replicated = replicas.then_some((1, Duration::from_millis(200)));
                    let election = name.starts_with("fo-election");
                    let mut builder = RedisMutex::builder(pool.clone(), name)
                        .owner_id(owner.as_str())
                        .fair(fair)
                        .expire(lease)
                        .auto_renewal(renewed);
                    let mut candidate = RedisElection::builder(pool.clone(), name)
                        .owner_id(owner.as_str())
                        .fair(fair)
                        .expire(lease)
                        .auto_renewal(renewed);
                    if let Some((n, timeout)) = replicated {
                        builder = builder.wait_replicas(n, timeout);
                        candidate = candidate.wait_replicas(n, timeout);
                    }
                    let mutex = builder.build().unwrap();
                    let candidate = candidate.build().unwrap();
                    let wait = Duration::from_millis(rng.random_range(0..300));
                    let bound = wait
                        + RESPONSE_TIMEOUT * 2
                        + SLACK
                        + if replicas {
                            Duration::from_millis(200)
                        } else {
                            Duration::ZERO
                        };
                    let id = format!("{worker}-{t}-{jobs}");
                    let (asked, got) = if election {
                        log.call("TryCampaignFor", Some(bound), || {
                            candidate.try_campaign_for(id.as_str(), wait).map(|l| {
                                let term = l.term();
                                (Box::new(l) as Box<dyn Held + '_>, term)
                            })
                        })
                    } else {
                        log.call("TryLockFor", Some(bound), || {
                            mutex.try_lock_for(wait).map(|g| {
                                let token = g.fencing_token();
                                (Box::new(g) as Box<dyn Held + '_>, token)
                            })
                        })
                    };
                    let (guard, token) = match got {
                        Ok(held) => held,
                        Err(TryLockError::WouldBlock) => continue,
                        Err(_) => {
                            thread::sleep(Duration::from_millis(rng.random_range(0..50)));
                            continue;
                        }
                    };
                    let resource = if election {
                        format!("election:{name}")
                    } else {
                        name.to_owned()
                    };
                    log.grant(&id, &resource, (&Claim::Exclusive, token), &owner, asked);
                    let step_bound = Some(RESPONSE_TIMEOUT * 2 + SLACK);
                    for _ in 0..rng.random_range(0..4) {
                        thread::sleep(Duration::from_millis(rng.random_range(0..60)));
                        let (c0, held) =
                            log.call("ensure_held", step_bound, || guard.ensure_held());
                        match held {
                            Ok(()) => log.held(&id, c0),
                            Err(_) => break,
                        }
                    }
                    let (u0, released) = log.call("unlock", step_bound, || guard.end());
                    if released.is_ok() {
                        log.held(&id, u0);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a worker thread panicked");
    }
}

/// One failover as the driver saw it, on the monotonic clock.
struct Failover {
    started: u64,
    done: u64,
    /// Who led it: "sentinel 2", "election (sentinel 0)", "CLUSTER FAILOVER", ...
    how: String,
}

/// What a run came to.
struct Run {
    checked: Checked,
    failovers: Vec<Failover>,
    /// For each failover, the longest gap between two grants around it: the last grant
    /// before it ended (or began) and the next one.
    unavailable: Vec<Duration>,
    /// Double grants, by the failover they followed.
    per_failover: Vec<usize>,
    /// For each failover, the most grants in a row that one worker took in the five
    /// seconds after it began (the others got none meanwhile), and the most in any five
    /// seconds before the first failover.
    streaks: Vec<usize>,
    steady_streak: usize,
    /// What the callers were told when a call failed: `(call, message with names cut,
    /// how many)`, most first.
    errors: Vec<(String, String, usize)>,
}

/// Runs the workers, fails over `count` times with `fail_over`, and checks the history.
fn run(
    what: &str,
    mode: &str,
    urls: Vec<String>,
    replicas: bool,
    count: usize,
    mut fail_over: impl FnMut(usize) -> String,
) -> Run {
    let seed: u64 = std::env::var("FAILOVER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    let dir = std::env::temp_dir().join(format!(
        "redis-mutex-failover-{mode}-{replicas}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let stop = dir.join("STOP");
    let logs: Vec<PathBuf> = (0..WORKERS)
        .map(|i| dir.join(format!("w{i}.log")))
        .collect();
    let workers: Vec<ChildTest> = logs
        .iter()
        .enumerate()
        .map(|(i, log)| {
            spawn_child(
                module_path!(),
                "failover_worker",
                &[
                    ("URLS", urls.join(" ")),
                    ("MODE", mode.to_owned()),
                    ("SEED", (seed + i as u64).to_string()),
                    ("WAIT_REPLICAS", u8::from(replicas).to_string()),
                    ("STOP", stop.display().to_string()),
                    ("LOG", log.display().to_string()),
                ],
            )
        })
        .collect();
    // Let the workers get going.
    thread::sleep(Duration::from_secs(2));
    let mut failovers = Vec::new();
    for i in 0..count {
        let started = now();
        let how = fail_over(i);
        failovers.push(Failover {
            started,
            done: now(),
            how,
        });
        // Grants come again, then a while of normal work before the next failover.
        let resumed = crate::support::eventually(Duration::from_secs(30), || {
            grant_times(&logs).last().is_some_and(|&t| t > started)
        });
        assert!(resumed, "no grant within 30 s of failover {i}");
        thread::sleep(Duration::from_secs(1));
    }
    std::fs::write(&stop, "").unwrap();
    for worker in workers {
        worker.finish(HANG * 2);
    }
    let checked = history::check(&logs, &[]);
    let grants = grant_times(&logs);
    let unavailable = failovers
        .iter()
        .map(|f| {
            let gap = grants
                .windows(2)
                .filter(|pair| pair[1] >= f.started && pair[0] <= f.done)
                .map(|pair| pair[1] - pair[0])
                .max()
                .unwrap_or(0);
            Duration::from_nanos(gap)
        })
        .collect();
    // Each double grant counts for the last failover that began before it.
    let mut per_failover = vec![0; failovers.len()];
    for &at in &checked.double_grant_starts {
        if let Some(i) = failovers.iter().rposition(|f| f.started <= at) {
            per_failover[i] += 1;
        }
    }
    let by_worker = grants_by_worker(&logs);
    let streaks = failovers
        .iter()
        .map(|f| longest_streak(&by_worker, f.started, f.started + 5_000_000_000))
        .collect();
    let first = failovers.first().map_or(u64::MAX, |f| f.started);
    let steady_streak = longest_streak(&by_worker, 0, first);
    let errors = call_errors(&logs);
    std::fs::remove_dir_all(&dir).ok();
    let run = Run {
        checked,
        failovers,
        unavailable,
        per_failover,
        streaks,
        steady_streak,
        errors,
    };
    report(what, seed, &run);
    run
}

/// Each grant's time and the worker process that took it (its id's first part), by time.
fn grants_by_worker(logs: &[PathBuf]) -> Vec<(u64, String)> {
    let mut grants: Vec<(u64, String)> = logs
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| l.strip_prefix("grant "))
                .filter_map(|g| {
                    let fields: Vec<&str> = g.split(' ').collect();
                    let worker = fields.first()?.split('-').next()?.to_owned();
                    Some((fields.get(4)?.parse().ok()?, worker))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    grants.sort_unstable();
    grants
}

/// The most grants in a row one worker took between `from` and `to`.
fn longest_streak(grants: &[(u64, String)], from: u64, to: u64) -> usize {
    let mut best = 0;
    let mut run: Option<(&str, usize)> = None;
    for (_, worker) in grants.iter().filter(|(t, _)| (from..to).contains(t)) {
        run = match run {
            Some((w, n)) if w == worker => Some((w, n + 1)),
            _ => Some((worker, 1)),
        };
        best = best.max(run.map_or(0, |(_, n)| n));
    }
    best
}

/// The failed calls in the logs, by call and message (lock names cut), most first.
fn call_errors(logs: &[PathBuf]) -> Vec<(String, String, usize)> {
    let mut counts: std::collections::BTreeMap<(String, String), usize> = Default::default();
    for text in logs.iter().filter_map(|p| std::fs::read_to_string(p).ok()) {
        for fields in text.lines().filter_map(|l| l.strip_prefix("call ")) {
            let fields: Vec<&str> = fields.split(' ').collect();
            let (Some(what), Some(outcome)) = (fields.first(), fields.get(4)) else {
                continue;
            };
            let Some(message) = outcome.strip_prefix("err:") else {
                continue;
            };
            let message = message.replace('_', " ");
            // Names and addresses vary: keep the message's first clause, names cut.
            let mut parts = message.split('`');
            let mut cut = parts.next().unwrap_or_default().to_owned();
            for (i, part) in parts.enumerate() {
                cut.push_str(if i % 2 == 0 { "`*`" } else { part });
            }
            // Addresses vary too: each becomes `*`.
            let cut: String = cut
                .split(' ')
                .map(|w| if w.contains("127.0.0.1:") { "*" } else { w })
                .collect::<Vec<_>>()
                .join(" ");
            let cut: String = cut.chars().take(110).collect();
            *counts.entry((what.to_string(), cut)).or_default() += 1;
        }
    }
    let mut errors: Vec<(String, String, usize)> =
        counts.into_iter().map(|((w, m), n)| (w, m, n)).collect();
    errors.sort_by_key(|e| std::cmp::Reverse(e.2));
    errors
}

/// When each grant was made, sorted, from the logs.
fn grant_times(logs: &[PathBuf]) -> Vec<u64> {
    let mut times: Vec<u64> = logs
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| l.strip_prefix("grant "))
                .filter_map(|g| g.split(' ').nth(4)?.parse().ok())
                .collect::<Vec<u64>>()
        })
        .collect();
    times.sort_unstable();
    times
}

fn report(what: &str, seed: u64, run: &Run) {
    let longest = run.unavailable.iter().max().copied().unwrap_or_default();
    let failover_times: Vec<Duration> = run
        .failovers
        .iter()
        .map(|f| Duration::from_nanos(f.done - f.started))
        .collect();
    let hit = run.per_failover.iter().filter(|&&n| n > 0).count();
    println!(
        "failover ({what}, seed {seed}): {} failovers (each took {:?} at most); {}; double \
         grants in {hit} of {} failovers ({:?}); the longest gap between grants {longest:?}",
        run.failovers.len(),
        failover_times.iter().max().copied().unwrap_or_default(),
        run.checked.summary(),
        run.failovers.len(),
        run.per_failover,
    );
    for (i, f) in run.failovers.iter().enumerate() {
        println!(
            "  failover {i}: {}; gap between grants {:?}; {} double grants after it; one \
             worker took {} grants in a row in the 5 s after it",
            f.how, run.unavailable[i], run.per_failover[i], run.streaks[i]
        );
    }
    println!(
        "  before the first failover, one worker took at most {} grants in a row",
        run.steady_streak
    );
    for (what, message, n) in run.errors.iter().take(12) {
        println!("  {n} x {what}: {message}");
    }
}

/// What every run asserts: tokens never go back, every call keeps its bound (and `run`, that
/// grants came within 30 s of every failover).
fn assert_sound(run: &Run) {
    assert!(
        run.checked.token_regressions.is_empty(),
        "fencing tokens went back: {:#?}",
        run.checked.token_regressions
    );
    assert!(
        run.checked.late_calls.is_empty(),
        "calls past their bound: {:#?}",
        run.checked.late_calls
    );
    assert!(
        run.checked.grants > 20,
        "too few grants: {}",
        run.checked.grants
    );
}

fn failovers() -> usize {
    std::env::var("FAILOVERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
}

#[test]
fn sentinel_failovers_under_contention() {
    let _turn = crate::support::failover_turn();
    let seed: u64 = std::env::var("FAILOVER_LEADER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("failover leaders: seed {seed} (FAILOVER_LEADER_SEED={seed} repeats them)");
    let mut leaders = StdRng::seed_from_u64(seed);
    for replicas in [false, true] {
        let mut set = Sentinels::start();
        let what = if replicas {
            "Sentinel, wait_replicas(1)"
        } else {
            "Sentinel"
        };
        // A quarter are real elections; the rest are led by a sentinel chosen at random.
        let run = run(what, "sentinel", set.urls(), replicas, failovers(), |_| {
            if leaders.random_bool(0.25) {
                let promotion = set.elect();
                let leader = promotion.leader.map_or("?".to_owned(), |l| l.to_string());
                format!("election, led by sentinel {leader}")
            } else {
                let k = leaders.random_range(0..set.sentinels.len());
                set.failover_led_by(k);
                format!("SENTINEL FAILOVER led by sentinel {k}")
            }
        });
        assert_sound(&run);
    }
}

#[test]
fn cluster_failovers_under_contention() {
    let _turn = crate::support::failover_turn();
    for replicas in [false, true] {
        let cluster = Cluster::start(3);
        let urls = cluster.urls();
        let what = if replicas {
            "Cluster, wait_replicas(1)"
        } else {
            "Cluster"
        };
        // Every other failover is forced, with the primary stopped.
        let slot = cluster.slot_of("lock:{fo-plain-a}");
        let run = run(what, "cluster", urls, replicas, failovers(), |i| {
            let primary = cluster.primary_of_slot(slot);
            if i % 2 == 0 {
                cluster.failover(primary);
                "CLUSTER FAILOVER".to_owned()
            } else {
                cluster.force_failover(primary);
                "forced (primary paused)".to_owned()
            }
        });
        assert_sound(&run);
    }
}
