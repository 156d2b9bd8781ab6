//! Failovers behind Sentinel started the way production starts them: led by whichever
//! sentinel, not only the first one (the one a client happens to reach first), and decided by
//! a real election with the primary stopped.
//!
//! Only the sentinel that leads a failover announces `+failover-state-send-slaveof-noone`,
//! the earliest moment writes to the old primary are lost; the others announce
//! `+switch-master` up to a few seconds later. A grant made on the old primary after the
//! replica was promoted is lost when the old primary is demoted: its holder goes on while
//! the lock is free on the new primary.
//!
//! Each test runs a thread that takes a lock of a NEW name every 2 ms through one
//! `Pool::sentinel` pool (each lock kept, with a 60 s expiry), while the harness fails the
//! primary over and times the moment the replica first answers `ROLE` as a primary. Once the
//! failover is done (the old primary demoted by a sentinel), every grant asked from
//! [`MARGIN`] after that moment on must be on the new primary. Errors while the pool
//! switches are expected and counted, not failed. A failover that aborts after
//! `+failover-state-send-slaveof-noone` (the replica never promoted) must not strand the
//! pool: calls fail in time and grants come again by themselves.
//!
//! `SENTINEL_SEED` sets the seed that picks the leaders; `SENTINEL_LEADERS=2,1,0` names them
//! instead (`SENTINEL_LEADERS=0` is the control: the case the project's tests always ran);
//! `SENTINEL_ELECTIONS` sets the least number of elections (2 by default).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::sentinel::{
    ABORT_SLAVE_TIMEOUT, Announcements, Promotion, SEND_SLAVEOF_NOONE, SERVICE, Sentinels,
};
use crate::support::{HANG, RedisServer, Task, eventually, spawn};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use redis_mutex::{Pool, RedisMutex, TryLockError};

/// How long after the promotion a grant must be on the new primary.
const MARGIN: Duration = Duration::from_millis(100);
/// The pool's reply, connect and checkout timeouts: calls fail in time while it switches.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(300);
/// The pace of the lock loop: one new lock every 2 ms.
const PACE: Duration = Duration::from_millis(2);
/// The longest any one `try_lock` may take: a checkout, a connect and a few replies, each
/// bounded by [`RESPONSE_TIMEOUT`], with room for a loaded machine.
const CALL_BOUND: Duration = Duration::from_secs(5);
/// The most elections [`grants_after_an_election_are_on_the_new_primary`] holds while waiting
/// for one led by a sentinel other than the first.
const MAX_ELECTIONS: usize = 4;
/// How soon after a promotion (or an aborted one) grants must come again.
const RESUME_BOUND: Duration = Duration::from_secs(5);

/// A grant the lock loop made and kept.
#[derive(Clone)]
struct Grant {
    name: String,
    owner: String,
    asked: Instant,
}

/// What the lock loop did, call by call.
#[derive(Default)]
struct Calls {
    grants: Vec<Grant>,
    /// When each failed call was asked, and its error.
    errors: Vec<(Instant, String)>,
    /// When the last call that has returned was asked.
    last_asked: Option<Instant>,
    /// The longest call, and when it was asked.
    longest: (Duration, Option<Instant>),
}

/// The lock loop: a thread taking a lock of a new name every [`PACE`] through `pool`.
struct Load {
    calls: Arc<Mutex<Calls>>,
    stop: Arc<AtomicBool>,
    task: Task<()>,
}

impl Load {
    fn start(pool: Pool, prefix: &str) -> Load {
        let calls = Arc::new(Mutex::new(Calls::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (record, stopping, prefix) = (calls.clone(), stop.clone(), prefix.to_owned());
        let task = spawn("lock loop", move || {
            // Bounded even if nobody stops it.
            let deadline = Instant::now() + Duration::from_secs(300);
            let mut n = 0u64;
            while !stopping.load(Ordering::SeqCst) && Instant::now() < deadline {
                n += 1;
                let name = format!("{prefix}-{n}");
                let mutex = RedisMutex::builder(pool.clone(), name.as_str())
                    .expire(Duration::from_secs(60))
                    .build()
                    .unwrap();
                let asked = Instant::now();
                let outcome = mutex.try_lock();
                let took = asked.elapsed();
                {
                    let mut calls = record.lock().unwrap();
                    match outcome {
                        Ok(guard) => {
                            // Kept, not released: the grant stays for the check.
                            guard.into_handle();
                            calls.grants.push(Grant {
                                name,
                                owner: mutex.owner_id().to_owned(),
                                asked,
                            });
                        }
                        Err(TryLockError::WouldBlock) => calls
                            .errors
                            .push((asked, format!("a new name {name} was held"))),
                        Err(TryLockError::Error(e)) => calls.errors.push((asked, e.to_string())),
                        Err(e) => calls.errors.push((asked, e.to_string())),
                    }
                    calls.last_asked = Some(asked);
                    if took > calls.longest.0 {
                        calls.longest = (took, Some(asked));
                    }
                }
                // Load generation: the next lock 2 ms after this one was asked.
                thread::sleep(PACE.saturating_sub(took));
            }
        });
        Load { calls, stop, task }
    }

    /// Waits until a call asked after `t` has returned: every call asked before `t` is
    /// recorded then.
    fn await_past(&self, t: Instant) {
        let past = eventually(HANG, || {
            self.calls
                .lock()
                .unwrap()
                .last_asked
                .is_some_and(|asked| asked > t)
        });
        assert!(past, "the lock loop made no call within {HANG:?}");
    }

    /// The grants asked in `[from, to)`.
    fn grants(&self, from: Instant, to: Instant) -> Vec<Grant> {
        let calls = self.calls.lock().unwrap();
        calls
            .grants
            .iter()
            .filter(|g| g.asked >= from && g.asked < to)
            .cloned()
            .collect()
    }

    /// The failed calls asked in `[from, to)`.
    fn errors(&self, from: Instant, to: Instant) -> Vec<(Instant, String)> {
        let calls = self.calls.lock().unwrap();
        calls
            .errors
            .iter()
            .filter(|(asked, _)| *asked >= from && *asked < to)
            .cloned()
            .collect()
    }

    /// The longest call so far, and when it was asked.
    fn longest(&self) -> (Duration, Option<Instant>) {
        self.calls.lock().unwrap().longest
    }

    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.join(HANG);
    }
}

/// The sentinels, a primary and its replica, each server resynchronising a new replica at
/// once (Redis waits 5 s by default for more replicas to share a diskless transfer): a
/// demoted primary is in sync a moment after it is demoted, and the next failover can go.
fn start(replica_args: &[&str]) -> Sentinels {
    let set = Sentinels::start_with_replica_args(replica_args);
    for server in &set.servers {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("repl-diskless-sync-delay")
            .arg(0)
            .query(&mut server.connection())
            .unwrap();
    }
    set
}

/// A pool through the sentinels that fails calls in time while it switches.
fn pool(set: &Sentinels) -> Pool {
    set.pool_with(
        Pool::builder()
            .response_timeout(RESPONSE_TIMEOUT)
            .connect_timeout(RESPONSE_TIMEOUT)
            .connection_timeout(RESPONSE_TIMEOUT)
            .max_size(4),
    )
}

/// Which of `grants` are on `server` (its owner in `lock:<name>`).
fn on_server(server: &RedisServer, grants: &[Grant]) -> Vec<bool> {
    let mut conn = server.connection();
    let mut found = Vec::with_capacity(grants.len());
    for chunk in grants.chunks(500) {
        let keys: Vec<String> = chunk.iter().map(|g| format!("lock:{}", g.name)).collect();
        let owners: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut conn).unwrap();
        found.extend(
            chunk
                .iter()
                .zip(owners)
                .map(|(g, owner)| owner.as_deref() == Some(g.owner.as_str())),
        );
    }
    found
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// What one failover did to the grants.
struct Checked {
    /// Grants asked from the promotion plus [`MARGIN`] to the end of the window.
    after: usize,
    /// Those not on the new primary: name, and how long after the promotion each was asked.
    missing: Vec<(String, Duration)>,
    /// Problems that are not missing grants (grants never came again, a call too long).
    other: Vec<String>,
}

/// Checks the grants of one failover: every grant asked from `promotion.promoted + MARGIN`
/// until now (the failover is done: the old primary demoted) is on the new primary, grants
/// came again on it within [`RESUME_BOUND`], and no call took longer than [`CALL_BOUND`].
fn check(set: &Sentinels, load: &Load, what: &str, promotion: &Promotion) -> Checked {
    let end = Instant::now();
    load.await_past(end);
    let from = promotion.promoted;
    let grants = load.grants(from, end);
    let found = on_server(&set.servers[promotion.new], &grants);
    let since = |g: &Grant| g.asked.duration_since(from);
    let mut after = 0;
    let mut missing = Vec::new();
    let mut missing_in_margin = 0;
    for (g, &there) in grants.iter().zip(&found) {
        if since(g) >= MARGIN {
            after += 1;
            if !there {
                missing.push((g.name.clone(), since(g)));
            }
        } else if !there {
            missing_in_margin += 1;
        }
    }
    let first_on_new = grants
        .iter()
        .zip(&found)
        .find(|(_, there)| **there)
        .map(|(g, _)| since(g));
    let errors = load.errors(promotion.started, end);
    let (longest, longest_at) = load.longest();
    let leader = promotion
        .leader
        .map_or("no sentinel announced it".to_owned(), |k| {
            format!("sentinel {k}")
        });
    println!(
        "{what}: led by {leader}; server {} -> {}; promoted {} after it began; the old primary \
         demoted {} after the promotion; {} grants asked from promotion + {} to the end of the \
         window ({} after the promotion), {} missing on the new primary{}; {} more missing of \
         those asked within the margin; {} failed calls from the start of the failover \
         (first: {:?}); the first grant on the new primary asked {} after the promotion; the \
         longest call so far {}",
        promotion.old,
        promotion.new,
        ms(promotion.promoted.duration_since(promotion.started)),
        ms(promotion
            .demoted
            .saturating_duration_since(promotion.promoted)),
        after,
        ms(MARGIN),
        ms(end.duration_since(from)),
        missing.len(),
        missing
            .last()
            .map(|(_, d)| format!(" (the latest asked {} after the promotion)", ms(*d)))
            .unwrap_or_default(),
        missing_in_margin,
        errors.len(),
        errors.first().map(|(_, e)| e.as_str()).unwrap_or("none"),
        first_on_new.map_or("never".to_owned(), ms),
        ms(longest),
    );
    let mut other = Vec::new();
    match first_on_new {
        Some(d) if d <= RESUME_BOUND => {}
        _ => other.push(format!(
            "{what}: no grant on the new primary within {RESUME_BOUND:?} of the promotion \
             (first: {first_on_new:?}): the pool stayed stranded"
        )),
    }
    if longest > CALL_BOUND {
        other.push(format!(
            "{what}: a call took {longest:?} (asked {:?} after the start of the failover), past \
             its bound {CALL_BOUND:?}",
            longest_at.map(|t| t.saturating_duration_since(promotion.started))
        ));
    }
    Checked {
        after,
        missing,
        other,
    }
}

/// How many missing grants of one failover the failure message names (all are printed).
const NAMED: usize = 30;

/// Fails with the missing grants and every other problem of `checked`, failover by
/// failover; prints every missing grant first.
fn assert_no_missing(checked: &[(String, Checked)]) {
    let after: usize = checked.iter().map(|(_, c)| c.after).sum();
    let missing: usize = checked.iter().map(|(_, c)| c.missing.len()).sum();
    println!(
        "in all: {after} grants asked from promotion + {} on, {missing} missing on the new \
         primary",
        ms(MARGIN)
    );
    let mut report = String::new();
    for (what, c) in checked {
        if !c.missing.is_empty() {
            let list = |missing: &[(String, Duration)]| {
                missing
                    .iter()
                    .map(|(name, d)| format!("\n  {name} {}", ms(*d)))
                    .collect::<String>()
            };
            let head = format!(
                "\n{what}: {} of {} grants asked from promotion + {} on are not on the new \
                 primary; the latest asked {} after the promotion (name, asked after the \
                 promotion):",
                c.missing.len(),
                c.after,
                ms(MARGIN),
                ms(c.missing.last().expect("not empty").1),
            );
            println!("{head}{}", list(&c.missing));
            report.push_str(&head);
            report.push_str(&list(&c.missing[..c.missing.len().min(NAMED)]));
            if c.missing.len() > NAMED {
                report.push_str(&format!(
                    "\n  ... and {} more (all printed above)",
                    c.missing.len() - NAMED
                ));
            }
        }
        for problem in &c.other {
            report.push_str(&format!("\n{problem}"));
        }
    }
    assert!(report.is_empty(), "{report}");
}

/// Runs failovers led by `leaders` in turn under the lock loop, checking each.
fn failovers_led_by(leaders: &[usize]) {
    let set = start(&[]);
    let load = Load::start(pool(&set), "led");
    let mut checked = Vec::new();
    for (i, &k) in leaders.iter().enumerate() {
        let promotion = set.failover_led_by_timed(k);
        let what = format!("failover {i} (asked of sentinel {k})");
        checked.push((what.clone(), check(&set, &load, &what, &promotion)));
    }
    load.stop();
    assert_no_missing(&checked);
}

/// The leaders: `SENTINEL_LEADERS` when set, else the three sentinels in an order drawn
/// from `SENTINEL_SEED` (or the clock): each failover is led by a sentinel chosen at random,
/// and every sentinel leads one, so that no seed leaves the leaders other than the first
/// untested.
fn random_leaders() -> Vec<usize> {
    if let Ok(list) = std::env::var("SENTINEL_LEADERS") {
        let leaders: Vec<usize> = list
            .split(',')
            .map(|k| k.trim().parse().expect("SENTINEL_LEADERS: indexes 0..3"))
            .collect();
        assert!(leaders.iter().all(|&k| k < 3), "SENTINEL_LEADERS: 0..3");
        println!("leaders from SENTINEL_LEADERS: {leaders:?}");
        return leaders;
    }
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut leaders = vec![0, 1, 2];
    leaders.shuffle(&mut rng);
    println!("seed {seed} (SENTINEL_SEED={seed} repeats it): leaders {leaders:?}");
    leaders
}

fn seed() -> u64 {
    std::env::var("SENTINEL_SEED")
        .ok()
        .map(|s| s.parse().expect("SENTINEL_SEED is a u64"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// Failovers led by sentinels chosen at random, the first one included: every grant asked
/// from promotion + 100 ms on is on the new primary, whichever sentinel led. (The failover
/// led by the first sentinel is the case the project's tests always ran, and the control:
/// `SENTINEL_LEADERS=0` runs it alone.)
#[test]
fn grants_after_failovers_led_by_any_sentinel_are_on_the_new_primary() {
    let _turn = crate::support::failover_turn();
    failovers_led_by(&random_leaders());
}

/// Real elections: the primary stopped (SIGSTOP) past `down-after-milliseconds` until the
/// sentinels elect a leader among themselves and it promotes the replica; the old primary
/// woken (SIGCONT) the moment the replica answers as a primary, still believing it is one
/// until a sentinel demotes it. Every grant asked from promotion + 100 ms on is on the new
/// primary. The sentinels pick the leader: after `SENTINEL_ELECTIONS` (2 by default),
/// elections go on while none was led by a sentinel other than the first, up to
/// [`MAX_ELECTIONS`].
#[test]
fn grants_after_an_election_are_on_the_new_primary() {
    let elections: usize = std::env::var("SENTINEL_ELECTIONS")
        .ok()
        .map(|s| s.parse().expect("SENTINEL_ELECTIONS is a count"))
        .unwrap_or(2);
    let mut set = start(&[]);
    let load = Load::start(pool(&set), "elected");
    let mut checked = Vec::new();
    let mut leaders = Vec::new();
    for i in 0..elections.max(MAX_ELECTIONS) {
        let led_by_another = leaders.iter().any(|l| *l != Some(0));
        if i >= elections && led_by_another {
            break;
        }
        let promotion = set.elect();
        leaders.push(promotion.leader);
        let what = format!("election {i}");
        checked.push((what.clone(), check(&set, &load, &what, &promotion)));
    }
    println!("elections led by {leaders:?}");
    load.stop();
    assert_no_missing(&checked);
}

/// A failover that aborts after `+failover-state-send-slaveof-noone`: the replica refuses
/// to be promoted (its `SLAVEOF` and `REPLICAOF` are renamed), so the sentinel gives up after
/// `failover-timeout` (`-failover-abort-slave-timeout`) and the primary stays. Led once by
/// a sentinel other than the first, chosen at random, then once by the first: the pool must
/// not stay on the replica. Every call returns within its bound, grants come again within
/// [`RESUME_BOUND`] of the abort, and every grant is on the primary.
#[test]
fn an_aborted_failover_does_not_strand_the_pool() {
    let set = start(&[
        "--rename-command",
        "SLAVEOF",
        "slaveof-disabled-by-test",
        "--rename-command",
        "REPLICAOF",
        "replicaof-disabled-by-test",
    ]);
    let primary = set.primary_index();
    let load = Load::start(pool(&set), "aborted");
    let seed = seed();
    let other = StdRng::seed_from_u64(seed).random_range(1..3);
    println!("seed {seed} (SENTINEL_SEED={seed} repeats it): aborts led by sentinels [{other}, 0]");
    let mut problems = Vec::new();
    for k in [other, 0] {
        let announced =
            Announcements::start(&set.urls(), &[SEND_SLAVEOF_NOONE, ABORT_SLAVE_TIMEOUT]);
        let started = Instant::now();
        let mut conn = crate::support::connect(&set.sentinel_url(k));
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
                    thread::sleep(Duration::from_millis(100));
                    false
                }
            }
        });
        assert!(asked, "sentinel {k} refused the failover: {refused}");
        let promoting = announced
            .wait_for(SEND_SLAVEOF_NOONE, HANG)
            .expect("the sentinel announced the promotion");
        assert_eq!(promoting.sentinel, k, "the sentinel asked leads");
        let aborted = announced
            .wait_for(ABORT_SLAVE_TIMEOUT, HANG)
            .expect("the failover aborted");
        assert_eq!(
            set.primary_index(),
            primary,
            "the sentinels still name the primary after the abort"
        );
        // Grants come again: a grant asked within the bound returns within its own.
        eventually(RESUME_BOUND + CALL_BOUND, || {
            !load.grants(aborted.at, Instant::now()).is_empty()
        });
        let end = Instant::now();
        load.await_past(end);
        let first = load
            .grants(aborted.at, end)
            .first()
            .map(|g| g.asked.duration_since(aborted.at));
        let errors = load.errors(started, end);
        let grants = load.grants(started, end);
        let on_primary = on_server(&set.servers[primary], &grants);
        let lost = on_primary.iter().filter(|&&there| !there).count();
        let (longest, longest_at) = load.longest();
        println!(
            "abort led by sentinel {k}: announced {} after the command, aborted {} after it; \
             {} grants from the command on, {lost} not on the primary; {} failed calls (first: \
             {:?}); the first grant asked {} after the abort; the longest call so far {}",
            ms(promoting.at.duration_since(started)),
            ms(aborted.at.duration_since(started)),
            grants.len(),
            errors.len(),
            errors.first().map(|(_, e)| e.as_str()).unwrap_or("none"),
            first.map_or("never".to_owned(), ms),
            ms(longest),
        );
        if first.is_none_or(|d| d > RESUME_BOUND) {
            problems.push(format!(
                "abort led by sentinel {k}: no grant within {RESUME_BOUND:?} of the abort \
                 (first: {first:?}): the pool stayed stranded"
            ));
        }
        if lost > 0 {
            problems.push(format!(
                "abort led by sentinel {k}: {lost} grants are not on the primary"
            ));
        }
        if longest > CALL_BOUND {
            problems.push(format!(
                "abort led by sentinel {k}: a call took {longest:?} (asked {:?} after the \
                 command), past its bound {CALL_BOUND:?}",
                longest_at.map(|t| t.saturating_duration_since(started))
            ));
        }
    }
    load.stop();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
