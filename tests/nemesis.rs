//! A Jepsen-style nemesis test: worker processes loop on a few locks while a seeded nemesis
//! adds latency, stalls and cuts connections, stops and restarts the server, and pauses or
//! kills workers; then a checker reads the whole history.
//!
//! Every worker logs, on the machine's monotonic clock (`CLOCK_MONOTONIC`, shared by every
//! process), each call with its duration and bound, each grant with its fencing token, and
//! each moment a holder was told it held its lock (`ensure_held` returning `Ok`, an `unlock`
//! that found the lock still ours). The checker then proves, for the whole history:
//! - no two holders of one name were told they held it at overlapping times;
//! - fencing tokens rise with every grant of a name;
//! - every call returned within its bound (calls of a worker the nemesis paused excepted);
//! - no lock key is left once every worker is done.
//!
//! `NEMESIS_SECONDS` sets the length of the run (40 s by default; the long run in
//! `docs/reliability.md` is `NEMESIS_SECONDS=600`), `NEMESIS_SEED` the seed.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::Commands;
use redis_mutex::{Pool, RedisMutex, RedisMutexGuard, TryLockError};
use support::proxy::FaultProxy;
use support::{ChildTest, HANG, RedisServer, child_env, eventually, signal, spawn_child};

/// The worker processes running at any time.
const WORKERS: usize = 6;

/// Threads per worker, sharing its lock objects (so that a late undo of one thread's
/// acquire could only hurt another thread of the same owner id: the case it must not).
const THREADS: usize = 2;

const NAMES: [&str; 3] = ["alpha", "beta", "gamma"];

/// The workers' response timeout, and so the unit of every bound.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(300);

/// Scheduling slack on a busy two-core machine, added to every bound.
const SLACK: Duration = Duration::from_millis(500);

/// The lease of an auto-renewed lock, and of a plain one.
const RENEWED_LEASE: Duration = Duration::from_millis(600);
const PLAIN_LEASE: Duration = Duration::from_millis(800);

/// Now on `CLOCK_MONOTONIC`, in nanoseconds: the same clock in every process.
fn now() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(t.tv_sec).unwrap() * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap()
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap()
}

/// A worker's log: one line per event, written at once (a killed worker loses nothing it
/// logged).
#[derive(Clone)]
struct Log(Arc<Mutex<File>>);

impl Log {
    fn line(&self, line: std::fmt::Arguments<'_>) {
        let mut file = self.0.lock().unwrap();
        writeln!(file, "{line}").unwrap();
    }
}

/// The calls a worker makes.
#[derive(Clone, Copy, Debug)]
enum Op {
    Lock,
    TryLock,
    TryLockFor(Duration),
}

impl Op {
    /// How long the call may take: its own wait, plus two response timeouts (a request and
    /// the undo after it), plus slack. `lock()` waits for the lock itself: no bound but the
    /// test's.
    fn bound(self) -> Option<Duration> {
        match self {
            Op::Lock => None,
            Op::TryLock => Some(RESPONSE_TIMEOUT * 2 + SLACK),
            Op::TryLockFor(wait) => Some(wait + RESPONSE_TIMEOUT * 2 + SLACK),
        }
    }
}

/// Logs a call that started at `t0`: `call <what> <t0> <t1> <bound or 0> <outcome>`.
fn call<T, E: std::fmt::Display>(
    log: &Log,
    what: &str,
    bound: Option<Duration>,
    f: impl FnOnce() -> Result<T, E>,
) -> (u64, Result<T, E>) {
    let t0 = now();
    let result = f();
    let t1 = now();
    let outcome = match &result {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("err:{}", e.to_string().replace(' ', "_")),
    };
    log.line(format_args!(
        "call {what} {t0} {t1} {} {outcome}",
        bound.map_or(0, nanos)
    ));
    (t0, result)
}

/// One holder's work under the lock: a few steps, each behind `ensure_held`, an extend for
/// the plain lock, then the release; every moment it is told it holds the lock is logged.
fn hold(log: &Log, rng: &mut StdRng, name: &str, renewed: bool, guard: RedisMutexGuard<'_>) {
    let token = guard.fencing_token();
    let bound = Some(RESPONSE_TIMEOUT * 2 + SLACK);
    for _ in 0..rng.random_range(0..4) {
        thread::sleep(Duration::from_millis(rng.random_range(0..40)));
        let (c0, held) = call(log, "ensure_held", bound, || guard.ensure_held());
        match held {
            Ok(()) => log.line(format_args!("held {name} {token} {c0}")),
            Err(_) => {
                log.line(format_args!("lost {name} {token} {}", now()));
                break;
            }
        }
    }
    if !renewed && rng.random_bool(0.3) {
        let (e0, extended) = call(log, "extend", bound, || guard.extend(PLAIN_LEASE));
        if extended.is_ok() {
            log.line(format_args!("held {name} {token} {e0}"));
        }
    }
    let (u0, released) = call(log, "unlock", bound, || guard.unlock());
    if released.is_ok() {
        // The release found the lock still ours, so we held it at least until then.
        log.line(format_args!("held {name} {token} {u0}"));
    }
}

/// A worker process: `THREADS` threads loop on random calls on the names, through the
/// fault proxy, until the deadline.
#[test]
#[ignore = "a child process of the nemesis test"]
fn nemesis_worker() {
    let url = child_env("PROXY_URL");
    let until = now() + child_env("RUN_NANOS").parse::<u64>().unwrap();
    let seed: u64 = child_env("SEED").parse().unwrap();
    let path = PathBuf::from(child_env("LOG"));
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let log = Log(Arc::new(Mutex::new(file)));
    let pool = Pool::builder()
        .response_timeout(RESPONSE_TIMEOUT)
        .connect_timeout(RESPONSE_TIMEOUT)
        .connection_timeout(RESPONSE_TIMEOUT)
        .max_size(8)
        .connect_lazy(true)
        .build(&url)
        .unwrap();
    let worker = std::process::id();
    // For each name, an auto-renewed lock and a plain one, shared by the threads.
    let locks: Arc<Vec<(String, bool, RedisMutex)>> = Arc::new(
        NAMES
            .iter()
            .flat_map(|&name| {
                let pool = pool.clone();
                [true, false].map(move |renewed| {
                    let builder = RedisMutex::builder(pool.clone(), name)
                        .owner_id(format!("w{worker}-{name}-{renewed}"));
                    let mutex = if renewed {
                        builder.expire(RENEWED_LEASE).auto_renewal(true)
                    } else {
                        builder.expire(PLAIN_LEASE)
                    };
                    (name.to_owned(), renewed, mutex.build().unwrap())
                })
            })
            .collect(),
    );
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (log, locks) = (log.clone(), locks.clone());
            let mut rng = StdRng::seed_from_u64(seed ^ (t as u64 + 1).wrapping_mul(0x9e37));
            thread::spawn(move || {
                while now() < until {
                    let (name, renewed, mutex) = &locks[rng.random_range(0..locks.len())];
                    let op = match rng.random_range(0..3) {
                        0 => Op::Lock,
                        1 => Op::TryLock,
                        _ => Op::TryLockFor(Duration::from_millis(rng.random_range(0..300))),
                    };
                    let what = format!("{op:?}").replace(' ', "");
                    let (_, got) = call(&log, &what, op.bound(), || match op {
                        Op::Lock => mutex.lock().map_err(TryLockError::from),
                        Op::TryLock => mutex.try_lock(),
                        Op::TryLockFor(wait) => mutex.try_lock_for(wait),
                    });
                    match got {
                        Ok(guard) => {
                            let t1 = now();
                            log.line(format_args!(
                                "grant {name} {} {t1} {}",
                                guard.fencing_token(),
                                guard.mutex().owner_id()
                            ));
                            hold(&log, &mut rng, name, *renewed, guard);
                        }
                        Err(TryLockError::WouldBlock) => {}
                        Err(TryLockError::Error(_)) => {
                            // The nemesis is at work: breathe, then go on.
                            thread::sleep(Duration::from_millis(rng.random_range(0..50)));
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a worker thread panicked");
    }
}

/// What the nemesis does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    Latency,
    Stall,
    Cut,
    ServerStop,
    ServerRestart,
    WorkerStop,
    WorkerKill,
}

/// A worker's pause by the nemesis: no call of that worker overlapping it is held to its
/// bound, nor any grant it got while paused.
struct Pause {
    worker: u32,
    from: u64,
    to: u64,
}

/// The running workers, and the paths of every worker's log.
struct Workers {
    running: Vec<ChildTest>,
    logs: Vec<PathBuf>,
    dir: PathBuf,
    url: String,
    until: u64,
    seed: u64,
    spawned: u64,
}

impl Workers {
    fn spawn(&mut self) {
        self.spawned += 1;
        let log = self.dir.join(format!("worker-{}.log", self.spawned));
        let env = [
            ("PROXY_URL", self.url.clone()),
            ("RUN_NANOS", self.until.saturating_sub(now()).to_string()),
            ("SEED", (self.seed + self.spawned).to_string()),
            ("LOG", log.display().to_string()),
        ];
        self.running.push(spawn_child("nemesis_worker", &env));
        self.logs.push(log);
    }
}

/// One grant as the logs tell it.
#[derive(Debug)]
struct Grant {
    name: String,
    token: u64,
    worker: String,
    /// When `lock` returned (the first moment the holder was told).
    start: u64,
    /// The last moment the holder was told it held the lock.
    end: u64,
}

/// What the history came to.
#[derive(Default, Debug)]
struct Checked {
    operations: usize,
    grants: usize,
    double_grants: Vec<String>,
    token_regressions: Vec<String>,
    late_calls: Vec<String>,
    /// The longest call, as a share of its bound.
    worst_call: (f64, String),
}

fn check(logs: &[PathBuf], pauses: &[Pause]) -> Checked {
    let mut checked = Checked::default();
    let mut grants: HashMap<(String, u64), Grant> = HashMap::new();
    for path in logs {
        let worker = path.file_name().unwrap().to_string_lossy().into_owned();
        let Ok(text) = std::fs::read_to_string(path) else {
            continue; // a worker killed before it wrote anything
        };
        // A worker's pid, for its pauses: from its first grant's owner id, `w<pid>-…`.
        let pid: Option<u32> = text
            .lines()
            .find_map(|l| l.strip_prefix("grant "))
            .and_then(|g| g.split(' ').nth(3))
            .and_then(|owner| owner.strip_prefix('w')?.split('-').next()?.parse().ok());
        let paused = |from: u64, to: u64| {
            pid.is_some_and(|pid| {
                pauses
                    .iter()
                    .any(|p| p.worker == pid && p.from <= to && from <= p.to)
            })
        };
        // The call before a grant line is the one that returned it.
        let mut last_call: Option<(u64, u64)> = None;
        for line in text.lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts[0] {
                "call" if parts.len() >= 6 => {
                    checked.operations += 1;
                    let (t0, t1): (u64, u64) =
                        (parts[2].parse().unwrap(), parts[3].parse().unwrap());
                    let bound: u64 = parts[4].parse().unwrap();
                    last_call = Some((t0, t1));
                    if bound > 0 && !paused(t0, t1) {
                        let took = t1 - t0;
                        let share = took as f64 / bound as f64;
                        if share > checked.worst_call.0 {
                            checked.worst_call = (
                                share,
                                format!(
                                    "{} took {} ms of {} ms",
                                    parts[1],
                                    took / 1_000_000,
                                    bound / 1_000_000
                                ),
                            );
                        }
                        if took > bound {
                            checked.late_calls.push(format!("{worker}: {line}"));
                        }
                    }
                }
                "grant" => {
                    let (name, token, start) = (
                        parts[1].to_owned(),
                        parts[2].parse().unwrap(),
                        parts[3].parse().unwrap(),
                    );
                    // A pause between the return and the clock read would date the grant
                    // late: such a grant counts only through its later confirmations.
                    let uncertain = last_call.is_some_and(|(t0, _)| paused(t0, start));
                    checked.grants += 1;
                    grants.insert(
                        (name.clone(), token),
                        Grant {
                            name,
                            token,
                            worker: worker.clone(),
                            start: if uncertain { u64::MAX } else { start },
                            end: if uncertain { 0 } else { start },
                        },
                    );
                }
                "held" => {
                    let key = (parts[1].to_owned(), parts[2].parse::<u64>().unwrap());
                    let at: u64 = parts[3].parse().unwrap();
                    if let Some(grant) = grants.get_mut(&key) {
                        grant.start = grant.start.min(at);
                        grant.end = grant.end.max(at);
                    }
                }
                _ => {}
            }
        }
    }
    let mut by_name: BTreeMap<String, Vec<Grant>> = BTreeMap::new();
    for (_, grant) in grants {
        by_name.entry(grant.name.clone()).or_default().push(grant);
    }
    for (name, mut list) in by_name {
        // Tokens in the order of the grants: grants of one name never overlap, so the
        // order of their starts is the order Redis granted them in.
        list.retain(|g| g.start <= g.end);
        list.sort_by_key(|g| g.start);
        for pair in list.windows(2) {
            if pair[1].token <= pair[0].token {
                checked
                    .token_regressions
                    .push(format!("`{name}`: {:?} then {:?}", pair[0], pair[1]));
            }
        }
        // Any two told-held intervals of one name that overlap are a double grant.
        let mut latest: Option<&Grant> = None;
        for grant in &list {
            if let Some(before) = latest
                && grant.start <= before.end
            {
                checked.double_grants.push(format!(
                    "`{name}`: {} ({before:?}) and {} ({grant:?})",
                    before.worker, grant.worker
                ));
            }
            if latest.is_none_or(|l| grant.end > l.end) {
                latest = Some(grant);
            }
        }
    }
    checked
}

#[test]
fn nobody_is_let_in_twice_and_every_call_keeps_its_bound_under_a_nemesis() {
    let seconds: u64 = std::env::var("NEMESIS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let seed: u64 = std::env::var("NEMESIS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("nemesis: {seconds} s, seed {seed} (NEMESIS_SEED={seed} repeats it)");
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let proxy = FaultProxy::start(server.port());
    let dir = std::env::temp_dir().join(format!("redis-mutex-nemesis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = nanos(Duration::from_secs(seconds));
    let mut workers = Workers {
        running: Vec::new(),
        logs: Vec::new(),
        dir: dir.clone(),
        url: proxy.url(),
        until: now() + run,
        seed,
        spawned: 0,
    };
    for _ in 0..WORKERS {
        workers.spawn();
    }

    // The nemesis, on this thread: a fault, a healthy spell, another fault, until two
    // seconds before the workers stop, so that the run ends on a healthy system.
    let mut rng = StdRng::seed_from_u64(seed);
    let mut faults: BTreeMap<Fault, usize> = BTreeMap::new();
    let mut pauses = Vec::new();
    let nemesis_until = workers.until - nanos(Duration::from_secs(2));
    let ms = |rng: &mut StdRng, lo: u64, hi: u64| Duration::from_millis(rng.random_range(lo..hi));
    while now() < nemesis_until {
        thread::sleep(ms(&mut rng, 200, 1200));
        let fault = match rng.random_range(0..100) {
            0..20 => Fault::Latency,
            20..35 => Fault::Stall,
            35..50 => Fault::Cut,
            50..62 => Fault::ServerStop,
            62..70 => Fault::ServerRestart,
            70..88 => Fault::WorkerStop,
            _ => Fault::WorkerKill,
        };
        *faults.entry(fault).or_default() += 1;
        match fault {
            Fault::Latency => {
                proxy.set_latency(ms(&mut rng, 50, 450));
                thread::sleep(ms(&mut rng, 300, 2000));
                proxy.heal();
            }
            Fault::Stall => {
                proxy.stall();
                thread::sleep(ms(&mut rng, 100, 1500));
                proxy.heal();
            }
            Fault::Cut => proxy.cut(),
            Fault::ServerStop => {
                server.pause();
                thread::sleep(ms(&mut rng, 100, 1500));
                server.resume();
            }
            Fault::ServerRestart => server.restart(),
            Fault::WorkerStop => {
                let i = rng.random_range(0..workers.running.len());
                let pid = workers.running[i].id();
                let from = now();
                signal(pid, "STOP");
                thread::sleep(ms(&mut rng, 100, 2500));
                signal(pid, "CONT");
                pauses.push(Pause {
                    worker: pid,
                    from,
                    to: now(),
                });
            }
            Fault::WorkerKill => {
                let i = rng.random_range(0..workers.running.len());
                workers.running.swap_remove(i).kill();
                workers.spawn();
            }
        }
    }
    proxy.heal();
    let deadline = Duration::from_nanos(workers.until.saturating_sub(now())) + HANG;
    for worker in std::mem::take(&mut workers.running) {
        worker.finish(deadline);
    }

    // Locks of killed workers expire with their leases; nothing else may be left.
    let mut conn = server.connection();
    let clean = eventually(HANG, || {
        let left: Vec<String> = conn.keys("lock:*").unwrap();
        left.is_empty()
    });
    let left: Vec<String> = conn.keys("lock:*").unwrap();

    let checked = check(&workers.logs, &pauses);
    println!(
        "nemesis: {} operations, {} grants, faults {faults:?}, {} double grants, {} token \
         regressions, {} late calls; the longest call took {:.0}% of its bound ({})",
        checked.operations,
        checked.grants,
        checked.double_grants.len(),
        checked.token_regressions.len(),
        checked.late_calls.len(),
        checked.worst_call.0 * 100.0,
        checked.worst_call.1,
    );
    assert!(
        checked.grants > 100,
        "too few grants to prove anything: {checked:?}"
    );
    assert!(
        checked.double_grants.is_empty(),
        "two holders at once (seed {seed}): {:#?}",
        checked.double_grants
    );
    assert!(
        checked.token_regressions.is_empty(),
        "fencing tokens went back (seed {seed}): {:#?}",
        checked.token_regressions
    );
    assert!(
        checked.late_calls.is_empty(),
        "calls past their bound (seed {seed}): {:#?}",
        checked.late_calls
    );
    assert!(
        clean,
        "lock keys left after every worker was done: {left:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
