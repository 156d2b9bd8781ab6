//! Measures the lock against the physical limit (round trips), on loopback and at real
//! network latency, in one run: a table, and with `--json` one JSON object as the last line.
//!
//! ```text
//! cargo run --release --example bench                          # its own servers; profiles: 1 ms
//! cargo run --release --example bench -- --json
//! cargo run --release --example bench -- --latency-ms 1,2      # more latency profiles
//! cargo run --release --example bench -- --latency-ms none     # loopback only
//! cargo run --release --example bench -- --server-time          # server time per cycle only
//! ```
//!
//! Every figure is a ratio or a median from this one run; `docs/performance.md` explains
//! each and shows results. A latency profile puts a userspace proxy that delays every chunk
//! by the given time, each way, between the clients and the servers (the kernel here has no
//! `netem`); its own overhead at 0 ms is measured and reported.

#[path = "../tests/support/mod.rs"]
#[allow(dead_code)] // each example uses a part
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;
use redis::Commands;
use redis_mutex::{Pool, RedisElection, RedisMutex, RedisRwLock, RedisSemaphore, Redlock};
use support::server::RedisServer;
use support::{proxy, python, server};

/// How long each contended process runs its cycles.
const CONTENDED_RUN: Duration = Duration::from_secs(3);
const CONTENDED_PROCESSES: usize = 4;
const THREADS_PER_PROCESS: usize = 2;
/// Uncontended cycles are measured in alternating blocks (on loopback: this many blocks of
/// this many cycles; fewer at latency).
const UNCONTENDED_BLOCKS: usize = 20;
const UNCONTENDED_BLOCK_CYCLES: usize = 200;
const REDLOCK_CYCLES: usize = 1_000;
const RENEWED_LOCKS: usize = 10_000;
const RENEWAL_EXPIRE: Duration = Duration::from_secs(3);
const RENEWAL_WINDOW: Duration = Duration::from_secs(6);
const MANY_NAMES: usize = 1_000;
const MANY_NAMES_THREADS: usize = 8;
const MANY_NAMES_RUN: Duration = Duration::from_secs(3);
const LATE_WAITS: usize = 20;
/// The crowd: this many threads on one name, in blocks of this long, alternating between
/// threads that build their own mutex for every cycle and threads that share one.
const CROWD_THREADS: usize = 64;
const CROWD_BLOCK: Duration = Duration::from_millis(800);
const CROWD_BLOCKS: usize = 3;
/// Semaphore handoffs measured, each a waiter woken by a release.
const SEMAPHORE_HANDOFFS: usize = 40;
/// Rounds of the election's figures: a term won, a proclaim, a resign to a waiting
/// candidate.
const ELECTION_ROUNDS: usize = 30;

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

/// The figures of one run: key → JSON value, in order; profiles nest.
#[derive(Default)]
struct Figures {
    json: Vec<(String, String)>,
    table: Vec<(String, String)>,
}

impl Figures {
    fn num(&mut self, key: &str, value: f64, decimals: usize) {
        self.json
            .push((key.to_owned(), format!("{value:.decimals$}")));
    }

    fn raw(&mut self, key: &str, value: impl ToString) {
        self.json.push((key.to_owned(), value.to_string()));
    }

    fn row(&mut self, what: impl Into<String>, value: impl Into<String>) {
        self.table.push((what.into(), value.into()));
    }

    fn object(&self) -> String {
        let body: Vec<String> = self
            .json
            .iter()
            .map(|(k, v)| format!("\"{k}\": {v}"))
            .collect();
        format!("{{{}}}", body.join(", "))
    }
}

fn main() -> BoxResult<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--contended-worker") {
        return contended_worker(&args[1], &args[2], &args[3], &args[4] == "fair");
    }
    let json = args.iter().any(|a| a == "--json");
    let profiles: Vec<u64> = match args.iter().position(|a| a == "--latency-ms") {
        Some(i) => match args.get(i + 1).map(String::as_str) {
            Some("none") => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|ms| {
                    ms.parse()
                        .map_err(|_| format!("--latency-ms {list}: not a list of milliseconds"))
                })
                .collect::<Result<_, _>>()?,
            None => return Err("--latency-ms needs a value: 1, 1,2 or none".into()),
        },
        None => vec![1],
    };

    let (url, _server) = server::example_server();
    if args.iter().any(|a| a == "--server-time") {
        let server = server_time(&url)?;
        for (kind, us) in &server {
            println!("{kind:<14} {us:6.2} µs = {:.2} × bare", us / server[0].1);
        }
        return Ok(());
    }
    let mut figures = Figures::default();
    loopback(&url, &mut figures)?;
    for ms in profiles {
        let mut profile = Figures::default();
        at_latency(&url, Duration::from_millis(ms), &mut profile)?;
        figures.raw(&format!("at_{ms}ms"), profile.object());
        for (what, value) in profile.table {
            figures.row(format!("[{ms} ms] {what}"), value);
        }
    }

    let width = figures
        .table
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    for (k, v) in &figures.table {
        println!("{k:<width$}  {v}");
    }
    if json {
        println!("{}", figures.object());
    }
    Ok(())
}

/// The loopback figures: against this machine's own round trip.
fn loopback(url: &str, f: &mut Figures) -> BoxResult<()> {
    let server = server_time(url)?;
    let bare = server[0].1;
    let body: Vec<String> = server
        .iter()
        .map(|(kind, us)| format!("\"{kind}\": {us:.2}"))
        .collect();
    f.raw("server_us_per_cycle", format!("{{{}}}", body.join(", ")));
    for (kind, us) in &server {
        f.row(
            format!("server time per cycle: {kind}"),
            format!("{us:.2} µs = {:.2} × bare", us / bare),
        );
    }
    let pool = Pool::new(url)?;
    let uncontended = uncontended(
        url,
        &pool,
        UNCONTENDED_BLOCKS,
        UNCONTENDED_BLOCK_CYCLES,
        true,
    )?;
    let rtt = uncontended.rtt;
    let limit = 1.0 / (2.0 * rtt.as_secs_f64());
    let [library, foreign, floor] = uncontended.cycles_per_s;
    f.num("rtt_us", micros(rtt), 1);
    f.row("PING round trip (median)", format!("{:.1} µs", micros(rtt)));
    f.num("uncontended_cycles_per_s", library, 0);
    f.num("uncontended_vs_limit", library / limit, 3);
    f.num("uncontended_vs_limit_default_pool", foreign / limit, 3);
    f.row(
        "uncontended lock+unlock",
        format!(
            "{library:.0}/s = {:.2} of the 2-RTT limit ({limit:.0}/s)",
            library / limit
        ),
    );
    f.num("script_floor_cycles_per_s", floor, 0);
    f.num("uncontended_vs_script_floor", library / floor, 3);
    f.row(
        "  the protocol's floor: its 2 scripts",
        format!(
            "{floor:.0}/s = {:.2} of the limit; the library reaches {:.2} of it",
            floor / limit,
            library / floor
        ),
    );
    f.row(
        "  through a foreign r2d2 pool (Pool::try_from)",
        format!("{foreign:.0}/s = {:.2} of the limit", foreign / limit),
    );

    for fair in [false, true] {
        let c = contended(url, rtt, fair)?;
        let prefix = if fair { "fair_" } else { "" };
        f.num(
            &format!("{prefix}contended_cycles_per_s"),
            c.cycles_per_s,
            0,
        );
        f.raw(&format!("{prefix}counter_exact"), c.counter_exact);
        f.num(&format!("{prefix}handoff_p50_rtt"), c.handoff_p50_rtt, 2);
        f.num(&format!("{prefix}handoff_p99_rtt"), c.handoff_p99_rtt, 2);
        f.num(&format!("{prefix}fairness_min_max"), c.fairness, 3);
        let mode = if fair { "fair" } else { "default" };
        f.row(
            format!("contended ({mode}), {CONTENDED_PROCESSES} processes x {THREADS_PER_PROCESS} threads"),
            format!("{:.0} cycles/s, counter exact: {}", c.cycles_per_s, c.counter_exact),
        );
        f.row(
            "  handoff release -> next holder",
            format!(
                "p50 {:.2} RTT, p99 {:.2} RTT",
                c.handoff_p50_rtt, c.handoff_p99_rtt
            ),
        );
        f.row(
            "  fairness (fewest / most grants)",
            format!("{:.3} ({:?})", c.fairness, c.grants),
        );
    }

    for fair in [false, true] {
        let c = crowd(url, fair)?;
        let prefix = if fair { "fair_" } else { "" };
        f.num(
            &format!("{prefix}crowd_calls_per_grant"),
            c.calls_per_grant,
            2,
        );
        f.num(&format!("{prefix}crowd_cycles_per_s"), c.own, 0);
        f.num(&format!("{prefix}crowd_vs_shared"), c.own / c.shared, 3);
        let mode = if fair { "fair" } else { "default" };
        f.row(
            format!("crowd ({mode}): {CROWD_THREADS} threads, one name, a mutex each"),
            format!(
                "{:.0} cycles/s = {:.3} of {CROWD_THREADS} threads sharing one mutex; {:.2} \
                 script calls per grant",
                c.own,
                c.own / c.shared,
                c.calls_per_grant
            ),
        );
    }

    election_rows(url, rtt, f)?;

    let sem = semaphore_figures(url, rtt)?;
    f.num("semaphore_cycle_vs_mutex", sem.vs_mutex, 3);
    f.num("semaphore_handoff_p50_rtt", sem.handoff_p50_rtt, 2);
    f.num("semaphore_handoff_max_rtt", sem.handoff_max_rtt, 2);
    f.row(
        "semaphore acquire+release vs mutex lock+unlock",
        format!("{:.3} of the time (target: within 1.2)", sem.vs_mutex),
    );
    f.row(
        "  semaphore handoff release -> woken waiter",
        format!(
            "p50 {:.2} RTT, max {:.2} RTT ({SEMAPHORE_HANDOFFS} handoffs)",
            sem.handoff_p50_rtt, sem.handoff_max_rtt
        ),
    );

    let servers: Vec<RedisServer> = (0..5).map(|_| RedisServer::start()).collect();
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let ratio = redlock5_vs_1(&urls, REDLOCK_CYCLES)?;
    f.num("redlock5_vs_1", ratio.ratio, 3);
    f.row(
        "Redlock acquire+release, 5 vs 1",
        format!(
            "{:.1} µs vs {:.1} µs = {:.2}",
            micros(ratio.five),
            micros(ratio.one),
            ratio.ratio
        ),
    );

    let renewal = renewal_cmds_per_s(url)?;
    f.num("renewal_10k_cmds_per_s", renewal, 1);
    f.row(
        format!("renewal of {RENEWED_LOCKS} leases"),
        format!(
            "{renewal:.1} round trips/s ({:.0} unbatched)",
            RENEWED_LOCKS as f64 / (RENEWAL_EXPIRE.as_secs_f64() / 3.0)
        ),
    );

    let (many, ceiling) = many_names(url)?;
    f.num("many_names_cycles_per_s", many, 0);
    f.num("many_names_server_ceiling_per_s", ceiling, 0);
    f.num("many_names_vs_server_ceiling", many / ceiling, 3);
    f.row(
        format!("{MANY_NAMES_THREADS} threads over {MANY_NAMES} names"),
        format!(
            "{many:.0}/s = {:.2} of the server's ceiling for the 2 scripts ({ceiling:.0}/s)",
            many / ceiling
        ),
    );

    let (p50, worst) = try_lock_for_lateness(url)?;
    f.num("try_lock_for_late_p50_ms", p50, 2);
    f.num("try_lock_for_late_max_ms", worst, 2);
    f.row(
        format!("try_lock_for lateness over {LATE_WAITS} waits"),
        format!("median {p50:.2} ms, worst {worst:.2} ms"),
    );

    let (plain, replicated) = wait_replicas_cost()?;
    f.num("lock_unlock_us", micros(plain), 1);
    f.num("wait_replicas_lock_unlock_us", micros(replicated), 1);
    f.num(
        "wait_replicas_vs_plain",
        replicated.as_secs_f64() / plain.as_secs_f64(),
        3,
    );
    f.row(
        "lock+unlock with wait_replicas(1, 100 ms)",
        format!(
            "{:.1} µs vs {:.1} µs without = {:.2}",
            micros(replicated),
            micros(plain),
            replicated.as_secs_f64() / plain.as_secs_f64()
        ),
    );
    let (standalone, cluster) = cluster_cost()?;
    f.num("cluster_lock_unlock_us", micros(cluster), 1);
    f.num(
        "cluster_vs_standalone",
        cluster.as_secs_f64() / standalone.as_secs_f64(),
        3,
    );
    f.row(
        "lock+unlock on a 3-primary cluster",
        format!(
            "{:.1} µs vs {:.1} µs standalone = {:.2}",
            micros(cluster),
            micros(standalone),
            cluster.as_secs_f64() / standalone.as_secs_f64()
        ),
    );

    let overhead = proxy_overhead(url)?;
    f.num("proxy_overhead_us", micros(overhead), 1);
    f.row(
        "the latency proxy's own overhead at 0 ms",
        format!("{:.1} µs per round trip", micros(overhead)),
    );

    match python_peers(url, library, rtt)? {
        Some(peers) => {
            f.num("python_uncontended_cycles_per_s", peers.uncontended, 0);
            f.num("python_contended_cycles_per_s", peers.contended, 0);
            f.num("vs_python_uncontended", peers.vs_uncontended, 2);
            f.num("vs_python_contended", peers.vs_contended, 2);
            f.row(
                "python-redis-lock, uncontended",
                format!(
                    "{:.0}/s; this crate {:.2}x",
                    peers.uncontended, peers.vs_uncontended
                ),
            );
            f.row(
                format!("python-redis-lock, {CONTENDED_PROCESSES} processes contended"),
                format!(
                    "{:.0}/s; this crate {:.2}x",
                    peers.contended, peers.vs_contended
                ),
            );
        }
        None => f.row(
            "python-redis-lock",
            "skipped: no Python with the packages (see tests/requirements.txt)",
        ),
    }
    Ok(())
}

/// The figures of one latency profile: everything behind proxies that delay each chunk by
/// `latency`, each way.
fn at_latency(url: &str, latency: Duration, f: &mut Figures) -> BoxResult<()> {
    let port: u16 = url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or("the server URL has no port")?;
    let proxy = proxy::FaultProxy::start(port);
    proxy.set_latency(latency);
    let proxied = proxy.url();
    let pool = Pool::new(&proxied)?;
    let uncontended = uncontended(&proxied, &pool, 10, 30, false)?;
    let rtt = uncontended.rtt;
    let limit = 1.0 / (2.0 * rtt.as_secs_f64());
    let library = uncontended.cycles_per_s[0];
    f.num("rtt_us", micros(rtt), 1);
    f.num("uncontended_vs_limit", library / limit, 3);
    f.row("PING round trip (median)", format!("{:.1} µs", micros(rtt)));
    f.row(
        "uncontended lock+unlock",
        format!("{library:.0}/s = {:.2} of the 2-RTT limit", library / limit),
    );
    for fair in [false, true] {
        let c = contended(&proxied, rtt, fair)?;
        let prefix = if fair { "fair_" } else { "" };
        f.num(&format!("{prefix}handoff_p50_rtt"), c.handoff_p50_rtt, 2);
        f.num(&format!("{prefix}handoff_p99_rtt"), c.handoff_p99_rtt, 2);
        f.row(
            format!("handoff ({})", if fair { "fair" } else { "default" }),
            format!(
                "p50 {:.2} RTT, p99 {:.2} RTT, counter exact: {}",
                c.handoff_p50_rtt, c.handoff_p99_rtt, c.counter_exact
            ),
        );
    }
    election_rows(&proxied, rtt, f)?;
    for fair in [false, true] {
        let c = crowd(url, fair)?;
        let prefix = if fair { "fair_" } else { "" };
        f.num(
            &format!("{prefix}crowd_calls_per_grant"),
            c.calls_per_grant,
            2,
        );
        f.num(&format!("{prefix}crowd_cycles_per_s"), c.own, 0);
        f.num(&format!("{prefix}crowd_vs_shared"), c.own / c.shared, 3);
        let mode = if fair { "fair" } else { "default" };
        f.row(
            format!("crowd ({mode}): {CROWD_THREADS} threads, one name, a mutex each"),
            format!(
                "{:.0} cycles/s = {:.3} of {CROWD_THREADS} threads sharing one mutex; {:.2} \
                 script calls per grant",
                c.own,
                c.own / c.shared,
                c.calls_per_grant
            ),
        );
    }

    let servers: Vec<RedisServer> = (0..5).map(|_| RedisServer::start()).collect();
    let proxies: Vec<proxy::FaultProxy> = servers
        .iter()
        .map(|s| {
            let p = proxy::FaultProxy::start(s.port());
            p.set_latency(latency);
            p
        })
        .collect();
    let urls: Vec<String> = proxies.iter().map(proxy::FaultProxy::url).collect();
    let ratio = redlock5_vs_1(&urls, 100)?;
    f.num("redlock5_vs_1", ratio.ratio, 3);
    f.row(
        "Redlock acquire+release, 5 vs 1",
        format!(
            "{:.1} µs vs {:.1} µs = {:.2}",
            micros(ratio.five),
            micros(ratio.one),
            ratio.ratio
        ),
    );
    Ok(())
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

struct Uncontended {
    /// The median `PING` round trip.
    rtt: Duration,
    /// Lock+unlock cycles per second with the given pool, through a foreign r2d2 pool, and
    /// of the protocol's floor.
    cycles_per_s: [f64; 3],
}

/// Measures, in alternating blocks so that all of them see the same machine (on a VM, speed
/// drifts from second to second): `PING` round trips; lock+unlock with `pool` and (when
/// `all`) through a foreign r2d2 pool; and the protocol's floor, the same two script calls
/// sent raw on one connection, without this library's code, checkouts or local queue.
fn uncontended(
    url: &str,
    pool: &Pool,
    blocks: usize,
    per_block: usize,
    all: bool,
) -> BoxResult<Uncontended> {
    let library = RedisMutex::builder(pool.clone(), "bench:uncontended")
        .expire(Duration::from_secs(10))
        .build()?;
    let foreign_pool = Pool::try_from(
        r2d2::Pool::builder()
            .test_on_check_out(false)
            .build(redis::Client::open(url)?)?,
    )?;
    let foreign = RedisMutex::builder(foreign_pool, "bench:uncontended-foreign")
        .expire(Duration::from_secs(10))
        .build()?;
    let scripts = RawScripts::new();
    let client = redis::Client::open(url)?;
    let mut conn = client.get_connection()?;
    let mut ping_conn = client.get_connection()?;
    let mut raw = || scripts.cycle(&mut conn, "bench:floor", "bench", 10_000);
    let mut cycles: Vec<Box<dyn FnMut() -> BoxResult<()> + '_>> = vec![
        Box::new(|| Ok(library.lock()?.unlock()?)),
        Box::new(|| Ok(foreign.lock()?.unlock()?)),
        Box::new(&mut raw),
    ];
    if !all {
        cycles.truncate(1);
    }
    let mut spent = vec![Duration::ZERO; cycles.len()];
    let mut pings = Vec::with_capacity(blocks * per_block);
    for block in 0..=blocks {
        for _ in 0..per_block {
            let started = Instant::now();
            let _: String = redis::cmd("PING").query(&mut ping_conn)?;
            if block > 0 {
                pings.push(started.elapsed());
            }
        }
        for (cycle, spent) in cycles.iter_mut().zip(&mut spent) {
            let started = Instant::now();
            for _ in 0..per_block {
                cycle()?;
            }
            // Block 0 warms up: scripts loaded, connections made.
            if block > 0 {
                *spent += started.elapsed();
            }
        }
    }
    let done = (blocks * per_block) as f64;
    let rate = |i: usize| spent.get(i).map_or(f64::NAN, |s| done / s.as_secs_f64());
    Ok(Uncontended {
        rtt: median(pings),
        cycles_per_s: [rate(0), rate(1), rate(2)],
    })
}

struct SemaphoreFigures {
    /// Uncontended acquire+release time over the mutex's lock+unlock time.
    vs_mutex: f64,
    handoff_p50_rtt: f64,
    handoff_max_rtt: f64,
}

/// The semaphore against the mutex, uncontended (acquire+release against lock+unlock, in
/// alternating blocks on one pool), and the time from a release to the waiter it wakes
/// holding its permit (a waiter of another "process": its own pool), in round trips.
fn semaphore_figures(url: &str, rtt: Duration) -> BoxResult<SemaphoreFigures> {
    let pool = Pool::new(url)?;
    let mutex = RedisMutex::builder(pool.clone(), "bench:sem-vs")
        .expire(Duration::from_secs(10))
        .build()?;
    let sem = RedisSemaphore::builder(pool.clone(), "bench:sem")
        .permits(5)
        .expire(Duration::from_secs(10))
        .auto_renewal(false)
        .build()?;
    let (mut mutex_time, mut sem_time) = (Duration::ZERO, Duration::ZERO);
    for block in 0..=UNCONTENDED_BLOCKS {
        let started = Instant::now();
        for _ in 0..UNCONTENDED_BLOCK_CYCLES {
            mutex.lock()?.unlock()?;
        }
        let between = Instant::now();
        for _ in 0..UNCONTENDED_BLOCK_CYCLES {
            sem.acquire()?.release()?;
        }
        if block > 0 {
            mutex_time += between - started;
            sem_time += between.elapsed();
        }
    }
    let one = RedisSemaphore::builder(pool, "bench:sem-handoff")
        .permits(1)
        .expire(Duration::from_secs(10))
        .build()?;
    let waiter_pool = Pool::new(url)?;
    let mut handoffs = Vec::with_capacity(SEMAPHORE_HANDOFFS);
    let mut conn = redis::Client::open(url)?.get_connection()?;
    for _ in 0..SEMAPHORE_HANDOFFS {
        let held = one.acquire()?;
        let waiter = RedisSemaphore::builder(waiter_pool.clone(), "bench:sem-handoff")
            .permits(1)
            .expire(Duration::from_secs(10))
            .build()?;
        let waiting = thread::spawn(move || -> Result<Instant, String> {
            let permit = waiter.acquire().map_err(|e| e.to_string())?;
            let at = Instant::now();
            permit.release().map_err(|e| e.to_string())?;
            Ok(at)
        });
        // Until the waiter sleeps in BLPOP.
        let deadline = Instant::now() + Duration::from_secs(5);
        while support::blocked_clients(&mut conn) == 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        let released = Instant::now();
        held.release()?;
        let woken = waiting.join().map_err(|_| "the waiter panicked")??;
        handoffs.push((woken - released).as_secs_f64() / rtt.as_secs_f64());
    }
    handoffs.sort_by(f64::total_cmp);
    Ok(SemaphoreFigures {
        vs_mutex: sem_time.as_secs_f64() / mutex_time.as_secs_f64(),
        handoff_p50_rtt: handoffs[handoffs.len() / 2],
        handoff_max_rtt: handoffs[handoffs.len() - 1],
    })
}

/// `election_handover_rtt` and `observe_latency_rtt`, with their rows.
fn election_rows(url: &str, rtt: Duration, f: &mut Figures) -> BoxResult<()> {
    let (handover, observe) = election_figures(url, rtt)?;
    f.num("election_handover_rtt", handover, 2);
    f.num("observe_latency_rtt", observe, 2);
    f.row(
        "election: resign -> waiting candidate leads",
        format!("p50 {handover:.2} RTT after resign() returned ({ELECTION_ROUNDS} rounds)"),
    );
    f.row(
        "election: proclaim -> observer sees it",
        format!("p50 {observe:.2} RTT after proclaim() returned"),
    );
    Ok(())
}

/// The medians, in round trips, of: a resign's return to the campaign of a candidate
/// waiting in `BLPOP` returning (its grant and its proclaim); a proclaim's return to an
/// observer (asleep in `BLPOP`) handing out the new value.
fn election_figures(url: &str, rtt: Duration) -> BoxResult<(f64, f64)> {
    const NAME: &str = "bench:election";
    const BOUND: Duration = Duration::from_secs(5);
    let leader = RedisElection::new(Pool::new(url)?, NAME)?;
    let candidates = Pool::new(url)?;
    let follower = RedisElection::new(Pool::new(url)?, NAME)?;
    let mut observer = follower.observe()?;
    observer.next().ok_or("an observer ends")??;
    let mut conn = redis::Client::open(url)?.get_connection()?;
    let (mut handovers, mut observed) = (Vec::new(), Vec::new());
    for round in 0..ELECTION_ROUNDS {
        let leadership = leader.campaign("a")?;
        let term = leadership.term();
        let seen = |observer: &mut redis_mutex::Observer, value: &str| -> BoxResult<Instant> {
            loop {
                match observer
                    .next_timeout(BOUND)
                    .ok_or("the observer saw nothing")??
                {
                    Some(l) if l.term == term && l.value == value => return Ok(Instant::now()),
                    _ => continue,
                }
            }
        };
        seen(&mut observer, "a")?;
        leadership.proclaim(format!("b{round}"))?;
        let proclaimed = Instant::now();
        observed.push((seen(&mut observer, &format!("b{round}"))? - proclaimed).as_secs_f64());
        let candidate = RedisElection::new(candidates.clone(), NAME)?;
        let waiting = thread::spawn(move || -> Result<Instant, String> {
            let leadership = candidate.campaign("c").map_err(|e| e.to_string())?;
            let at = Instant::now();
            leadership.resign().map_err(|e| e.to_string())?;
            Ok(at)
        });
        // Until the candidate sleeps in BLPOP beside the observer.
        let deadline = Instant::now() + BOUND;
        while support::blocked_clients(&mut conn) < 2 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        leadership.resign()?;
        let resigned = Instant::now();
        let leads = waiting.join().map_err(|_| "the candidate panicked")??;
        handovers.push((leads - resigned).as_secs_f64());
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2] / rtt.as_secs_f64()
    };
    Ok((median(handovers), median(observed)))
}

struct Contended {
    cycles_per_s: f64,
    counter_exact: bool,
    handoff_p50_rtt: f64,
    handoff_p99_rtt: f64,
    fairness: f64,
    grants: Vec<usize>,
}

/// One grant, as a contended worker saw it: wall-clock nanoseconds (all processes share the
/// machine's clock).
struct Grant {
    acquired: u128,
    releasing: u128,
}

fn wall_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
}

fn contended(url: &str, rtt: Duration, fair: bool) -> BoxResult<Contended> {
    let name = if fair {
        "bench:contended-fair"
    } else {
        "bench:contended"
    };
    let counter_key = format!("{name}:counter");
    let mut conn = redis::Client::open(url)?.get_connection()?;
    let _: () = conn.del(&[&counter_key, "bench:go"])?;
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for p in 0..CONTENDED_PROCESSES {
        children.push(
            Command::new(&exe)
                .args(["--contended-worker", url, &p.to_string(), name])
                .arg(if fair { "fair" } else { "default" })
                .stdout(Stdio::piped())
                .spawn()?,
        );
    }
    let mut readers: Vec<_> = children
        .iter_mut()
        .map(|c| BufReader::new(c.stdout.take().expect("piped")).lines())
        .collect();
    for lines in &mut readers {
        let ready = lines
            .next()
            .ok_or("a worker exited before it was ready")??;
        if ready != "ready" {
            return Err(format!("a worker said {ready:?}").into());
        }
    }
    // Start every thread at once.
    let tokens: Vec<i64> = vec![1; CONTENDED_PROCESSES * THREADS_PER_PROCESS];
    let _: () = conn.lpush("bench:go", tokens)?;

    let mut grants_per_worker = Vec::new();
    let mut grants = Vec::new();
    for lines in &mut readers {
        for line in lines {
            let line = line?;
            let mut fields = line.split_whitespace();
            match fields.next() {
                Some("grant") => {
                    let acquired = fields.next().ok_or("grant line")?.parse()?;
                    let releasing = fields.next().ok_or("grant line")?.parse()?;
                    grants.push(Grant {
                        acquired,
                        releasing,
                    });
                }
                Some("worker") => {
                    grants_per_worker.push(fields.next().ok_or("worker line")?.parse()?)
                }
                _ => return Err(format!("unexpected worker line {line:?}").into()),
            }
        }
    }
    for mut child in children {
        if !child.wait()?.success() {
            return Err("a contended worker failed".into());
        }
    }
    let counter: usize = conn.get(&counter_key)?;
    let total: usize = grants_per_worker.iter().sum();
    grants.sort_by_key(|g| g.acquired);
    let first = grants.first().ok_or("no grants")?.acquired;
    let last = grants.last().ok_or("no grants")?.releasing;
    let mut handoffs: Vec<f64> = grants
        .windows(2)
        .map(|w| (w[1].acquired as f64 - w[0].releasing as f64) / rtt.as_nanos() as f64)
        .collect();
    let overlaps = handoffs.iter().filter(|h| **h < 0.0).count();
    if overlaps > 0 {
        return Err(format!("{overlaps} grants began before the previous release began").into());
    }
    handoffs.sort_by(f64::total_cmp);
    let pct = |p: f64| handoffs[((handoffs.len() - 1) as f64 * p).round() as usize];
    let min = *grants_per_worker.iter().min().ok_or("no workers")? as f64;
    let max = *grants_per_worker.iter().max().ok_or("no workers")? as f64;
    Ok(Contended {
        cycles_per_s: total as f64 / ((last - first) as f64 / 1e9),
        counter_exact: counter == total,
        handoff_p50_rtt: pct(0.50),
        handoff_p99_rtt: pct(0.99),
        fairness: min / max,
        grants: grants_per_worker,
    })
}

/// A contended worker process: its threads each wait for the start signal, then lock, do a
/// non-atomic read-increment-write on a counter, and unlock, for `CONTENDED_RUN`. Prints one
/// `grant` line per grant and one `worker` line per thread.
fn contended_worker(url: &str, process: &str, name: &str, fair: bool) -> BoxResult<()> {
    let client = redis::Client::open(url)?;
    let pool = Pool::new(url)?;
    let counter_key = format!("{name}:counter");
    let mutex = Arc::new(
        RedisMutex::builder(pool, name)
            .expire(Duration::from_secs(10))
            .fair(fair)
            .owner_id(format!("bench-{process}-{}", std::process::id()))
            .build()?,
    );
    let mut conns = Vec::new();
    for _ in 0..THREADS_PER_PROCESS {
        conns.push(client.get_connection()?);
    }
    println!("ready");
    let threads: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let mutex = mutex.clone();
            let counter_key = counter_key.clone();
            thread::spawn(move || -> redis::RedisResult<Vec<(u128, u128)>> {
                let _: (String, i64) = conn.blpop("bench:go", 30.0)?;
                let started = Instant::now();
                let mut grants = Vec::new();
                while started.elapsed() < CONTENDED_RUN {
                    let guard = mutex.lock().expect("lock");
                    let acquired = wall_nanos();
                    let n: usize = conn.get::<_, Option<usize>>(&counter_key)?.unwrap_or(0);
                    let _: () = conn.set(&counter_key, n + 1)?;
                    let releasing = wall_nanos();
                    guard.unlock().expect("unlock");
                    grants.push((acquired, releasing));
                }
                Ok(grants)
            })
        })
        .collect();
    let mut out = String::new();
    for t in threads {
        let grants = t.join().expect("worker thread")?;
        out.push_str(&format!("worker {}\n", grants.len()));
        for (acquired, releasing) in grants {
            out.push_str(&format!("grant {acquired} {releasing}\n"));
        }
    }
    print!("{out}");
    Ok(())
}

struct Crowd {
    /// Cycles per second of threads that build a mutex of their own for every cycle.
    own: f64,
    /// Cycles per second of threads that share one mutex.
    shared: f64,
    /// Script calls (`EVAL` and `EVALSHA`) per grant of the threads with their own mutexes.
    calls_per_grant: f64,
}

/// `CROWD_THREADS` threads lock and unlock one name through the default pool (16
/// connections), in alternating blocks: each thread building its own mutex for every cycle
/// (as a worker pool builds one per job), or all sharing one.
fn crowd(url: &str, fair: bool) -> BoxResult<Crowd> {
    let pool = Pool::new(url)?;
    let name = format!("bench:crowd-{fair}");
    let build = {
        let (pool, name) = (pool.clone(), name.clone());
        move || {
            RedisMutex::builder(pool.clone(), name.as_str())
                .fair(fair)
                .expire(Duration::from_secs(10))
                .build()
        }
    };
    let shared = Arc::new(build()?);
    let mut conn = redis::Client::open(url)?.get_connection()?;
    let (mut own, mut together) = ((0u64, Duration::ZERO), (0u64, Duration::ZERO));
    let mut own_calls = 0;
    for block in 0..CROWD_BLOCKS * 2 + 1 {
        let alone = block % 2 == 1;
        let calls = script_calls(&mut conn)?;
        let started = Instant::now();
        let threads: Vec<_> = (0..CROWD_THREADS)
            .map(|_| {
                let (build, shared) = (build.clone(), shared.clone());
                thread::spawn(move || -> Result<u64, String> {
                    let mut cycles = 0;
                    while started.elapsed() < CROWD_BLOCK {
                        let cycle = if alone {
                            build().and_then(|mutex| mutex.lock()?.unlock())
                        } else {
                            shared.lock().and_then(|guard| guard.unlock())
                        };
                        cycle.map_err(|e| e.to_string())?;
                        cycles += 1;
                    }
                    Ok(cycles)
                })
            })
            .collect();
        let mut cycles = 0;
        for t in threads {
            cycles += t.join().map_err(|_| "a crowd thread panicked")??;
        }
        let spent = started.elapsed();
        // Block 0 warms up.
        match (block, alone) {
            (0, _) => {}
            (_, true) => {
                own = (own.0 + cycles, own.1 + spent);
                own_calls += script_calls(&mut conn)? - calls;
            }
            (_, false) => together = (together.0 + cycles, together.1 + spent),
        }
    }
    let rate = |(cycles, spent): (u64, Duration)| cycles as f64 / spent.as_secs_f64();
    Ok(Crowd {
        own: rate(own),
        shared: rate(together),
        calls_per_grant: own_calls as f64 / own.0 as f64,
    })
}

/// Scripts the server ran (`EVAL` and `EVALSHA`).
fn script_calls(conn: &mut redis::Connection) -> BoxResult<u64> {
    Ok(command_calls(conn, "eval")? + command_calls(conn, "evalsha")?)
}

struct RedlockRatio {
    five: Duration,
    one: Duration,
    ratio: f64,
}

fn redlock_latency(pools: Vec<Pool>, cycles: usize) -> BoxResult<Duration> {
    let redlock = Redlock::new(pools)?;
    for _ in 0..cycles / 10 + 1 {
        redlock
            .lock("bench:redlock", Duration::from_secs(10))?
            .unlock()?;
    }
    let mut samples = Vec::with_capacity(cycles);
    for _ in 0..cycles {
        let started = Instant::now();
        redlock
            .lock("bench:redlock", Duration::from_secs(10))?
            .unlock()?;
        samples.push(started.elapsed());
    }
    Ok(median(samples))
}

fn redlock5_vs_1(urls: &[String], cycles: usize) -> BoxResult<RedlockRatio> {
    let pools = urls
        .iter()
        .map(|u| Pool::new(u))
        .collect::<Result<Vec<_>, _>>()?;
    let one = redlock_latency(pools[..1].to_vec(), cycles)?;
    let five = redlock_latency(pools, cycles)?;
    Ok(RedlockRatio {
        five,
        one,
        ratio: five.as_secs_f64() / one.as_secs_f64(),
    })
}

/// Cycles per kind and round in the server-time figures, over this many names, on one
/// connection; the kinds take turns, round after round, and each figure is the median of
/// its rounds, so that a moment of load on the machine moves one round of one kind.
const SERVER_TIME_CYCLES: usize = 4_000;
const SERVER_TIME_ROUNDS: usize = 7;
const SERVER_TIME_NAMES: usize = 64;

/// What one lock cycle costs the server, in µs, per kind (`bare` first): the `usec` of the
/// commands the client sends itself (a script's `usec` already includes what it runs, whose
/// own lines are left out), from `INFO commandstats` after `CONFIG RESETSTAT`, over
/// [`SERVER_TIME_CYCLES`] cycles of one client on [`SERVER_TIME_NAMES`] names.
fn server_time(url: &str) -> BoxResult<Vec<(&'static str, f64)>> {
    let mut conn = redis::Client::open(url)?.get_connection()?;
    let pool = Pool::new(url)?;
    let names: Vec<String> = (0..SERVER_TIME_NAMES)
        .map(|i| format!("bench:st-{i}"))
        .collect();
    let expire = Duration::from_secs(10);
    // A bare `SET NX PX`, and a compare-and-delete script.
    let delete = redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end \
         return 0",
    );
    // python-redis-lock's protocol with a fencing counter, as two scripts: the floor of
    // what this crate promises.
    let take = redis::Script::new(
        "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then \
         return redis.call('INCR', KEYS[2]) end return 0",
    );
    let give = redis::Script::new(
        "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end \
         redis.call('DEL', KEYS[2]) redis.call('LPUSH', KEYS[2], 1) \
         redis.call('PEXPIRE', KEYS[2], ARGV[2]) return redis.call('DEL', KEYS[1])",
    );
    let mutex = |fair: bool| -> BoxResult<Vec<RedisMutex>> {
        let build = |name: &String| {
            RedisMutex::builder(pool.clone(), name.as_str())
                .fair(fair)
                .expire(expire)
                .build()
        };
        Ok(names.iter().map(build).collect::<Result<_, _>>()?)
    };
    let (plain, fair) = (mutex(false)?, mutex(true)?);
    let semaphores: Vec<RedisSemaphore> = names
        .iter()
        .map(|n| {
            RedisSemaphore::builder(pool.clone(), n.as_str())
                .permits(3)
                .auto_renewal(false)
                .build()
        })
        .collect::<Result<_, _>>()?;
    let rwlocks: Vec<RedisRwLock> = names
        .iter()
        .map(|n| {
            RedisRwLock::builder(pool.clone(), n.as_str())
                .auto_renewal(false)
                .build()
        })
        .collect::<Result<_, _>>()?;
    let redlock = Redlock::new(vec![pool.clone()])?;
    type Cycle<'a> = Box<dyn FnMut(usize, &mut redis::Connection) -> BoxResult<()> + 'a>;
    let kinds: Vec<(&'static str, &[&str], Cycle<'_>)> = vec![
        (
            "bare",
            &["set", "evalsha"],
            Box::new(|i, c| {
                let key = &names[i];
                let _: Option<String> = redis::cmd("SET")
                    .arg(key)
                    .arg("me")
                    .arg("NX")
                    .arg("PX")
                    .arg(10_000)
                    .query(c)?;
                let _: i64 = delete.key(key).arg("me").invoke(c)?;
                Ok(())
            }),
        ),
        (
            "floor",
            &["evalsha"],
            Box::new(|i, c| {
                let key = &names[i];
                let _: i64 = take
                    .key(key)
                    .key("bench:st-counter")
                    .arg("me")
                    .arg(10_000)
                    .invoke(c)?;
                let _: i64 = give
                    .key(key)
                    .key(format!("{key}-signal"))
                    .arg("me")
                    .arg(1000)
                    .invoke(c)?;
                Ok(())
            }),
        ),
        (
            "mutex",
            &["evalsha"],
            Box::new(|i, _| Ok(plain[i].lock()?.unlock()?)),
        ),
        (
            "fair",
            &["evalsha"],
            Box::new(|i, _| Ok(fair[i].lock()?.unlock()?)),
        ),
        (
            "semaphore",
            &["evalsha"],
            Box::new(|i, _| Ok(semaphores[i].acquire()?.release()?)),
        ),
        (
            "rwlock_read",
            &["evalsha"],
            Box::new(|i, _| Ok(rwlocks[i].read()?.unlock()?)),
        ),
        (
            "rwlock_write",
            &["evalsha"],
            Box::new(|i, _| Ok(rwlocks[i].write()?.unlock()?)),
        ),
        (
            "redlock",
            &["evalsha"],
            Box::new(|i, _| Ok(redlock.lock(&names[i], expire)?.unlock()?)),
        ),
    ];
    let mut kinds = kinds;
    // Scripts loaded and connections made before the count starts.
    for (_, _, cycle) in &mut kinds {
        for i in 0..SERVER_TIME_NAMES {
            cycle(i, &mut conn)?;
        }
    }
    let mut rounds: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    for _ in 0..SERVER_TIME_ROUNDS {
        for ((_, commands, cycle), round) in kinds.iter_mut().zip(&mut rounds) {
            let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut conn)?;
            for n in 0..SERVER_TIME_CYCLES {
                cycle(n % SERVER_TIME_NAMES, &mut conn)?;
            }
            let info: String = redis::cmd("INFO").arg("commandstats").query(&mut conn)?;
            let usec: f64 = commands
                .iter()
                .map(|command| command_usec(&info, command))
                .sum();
            round.push(usec / SERVER_TIME_CYCLES as f64);
        }
    }
    if std::env::var_os("BENCH_SERVER_TIME_DEBUG").is_some() {
        for ((kind, _, _), round) in kinds.iter().zip(&rounds) {
            eprintln!("{kind}: {round:.2?}");
        }
    }
    let median = |mut xs: Vec<f64>| {
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    };
    // Each kind's median, and its median ratio to `bare` round by round, given as the
    // median bare time that ratio: what the docs quote is the ratio.
    let bare = median(rounds[0].clone());
    Ok(kinds
        .iter()
        .zip(&rounds)
        .map(|((kind, _, _), round)| {
            let ratios = round.iter().zip(&rounds[0]).map(|(k, b)| k / b).collect();
            (*kind, bare * median(ratios))
        })
        .collect())
}

/// The `usec` of `command` in an `INFO commandstats` reply (0 if it never ran).
fn command_usec(info: &str, command: &str) -> f64 {
    let prefix = format!("cmdstat_{command}:");
    info.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').find_map(|f| f.strip_prefix("usec=")))
        .and_then(|usec| usec.parse().ok())
        .unwrap_or(0.0)
}

/// How many times the server ran `command` (0 if never).
fn command_calls(conn: &mut redis::Connection, command: &str) -> BoxResult<u64> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn)?;
    let prefix = format!("cmdstat_{command}:calls=");
    match info.lines().find_map(|l| l.strip_prefix(prefix.as_str())) {
        Some(rest) => Ok(rest.split(',').next().unwrap_or("0").parse()?),
        None => Ok(0),
    }
}

fn evalsha_calls(conn: &mut redis::Connection) -> BoxResult<u64> {
    command_calls(conn, "evalsha")
}

fn renewal_cmds_per_s(url: &str) -> BoxResult<f64> {
    let mut conn = redis::Client::open(url)?.get_connection()?;
    let pool = Pool::new(url)?;
    let mutexes = (0..RENEWED_LOCKS)
        .map(|i| {
            RedisMutex::builder(pool.clone(), format!("bench:renewed-{i}"))
                .expire(RENEWAL_EXPIRE)
                .auto_renewal(true)
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let guards = mutexes
        .iter()
        .map(RedisMutex::lock)
        .collect::<Result<Vec<_>, _>>()?;
    let before = evalsha_calls(&mut conn)?;
    let started = Instant::now();
    thread::sleep(RENEWAL_WINDOW);
    let renewals = evalsha_calls(&mut conn)? - before;
    let elapsed = started.elapsed();
    if let Some(lost) = guards.iter().find(|g| g.is_lost()) {
        return Err(format!("{lost:?} was lost during the renewal benchmark").into());
    }
    drop(guards);
    Ok(renewals as f64 / elapsed.as_secs_f64())
}

/// `MANY_NAMES_THREADS` threads lock and unlock random names out of `MANY_NAMES`, through
/// one pool; and the server's ceiling for the same two scripts sent raw on as many
/// connections. Both in cycles per second.
fn many_names(url: &str) -> BoxResult<(f64, f64)> {
    let pool = Pool::builder()
        .max_size(MANY_NAMES_THREADS as u32 * 2)
        .build(url)?;
    let mutexes: Arc<Vec<RedisMutex>> = Arc::new(
        (0..MANY_NAMES)
            .map(|i| RedisMutex::new(pool.clone(), format!("bench:many-{i}")))
            .collect::<Result<_, _>>()?,
    );
    let library = run_threads(|| {
        let mutexes = mutexes.clone();
        move || -> BoxResult<()> {
            let i = rand::rng().random_range(0..MANY_NAMES);
            mutexes[i].lock()?.unlock()?;
            Ok(())
        }
    })?;
    let scripts = Arc::new(RawScripts::new());
    let client = redis::Client::open(url)?;
    let ceiling = run_threads(|| {
        let mut conn = client.get_connection().expect("a connection");
        let scripts = scripts.clone();
        move || {
            let i = rand::rng().random_range(0..MANY_NAMES);
            scripts.cycle(&mut conn, &format!("bench:raw-{i}"), "raw", 0)
        }
    })?;
    Ok((library, ceiling))
}

/// The library's two scripts, sent raw: the protocol's floor, none of the crate's code.
struct RawScripts {
    acquire: redis::Script,
    release: redis::Script,
}

impl RawScripts {
    fn new() -> RawScripts {
        RawScripts {
            acquire: redis::Script::new(concat!(
                include_str!("../src/scripts/clock.lua"),
                include_str!("../src/scripts/fence.lua"),
                include_str!("../src/mutex/acquire.lua")
            )),
            release: redis::Script::new(include_str!("../src/mutex/release.lua")),
        }
    }

    /// One lock+unlock of `name` by `owner` (`expire_ms` 0: no expiry), doing the
    /// library's work: the grant marker written, checked against the grant's token and
    /// deleted, and the release's note written.
    fn cycle(
        &self,
        conn: &mut redis::Connection,
        name: &str,
        owner: &str,
        expire_ms: u64,
    ) -> BoxResult<()> {
        let (lock, signal, grant, released, done) = (
            format!("lock:{name}"),
            format!("lock-signal:{name}"),
            format!("lock-grant:{name}"),
            format!("lock-released:{name}"),
            format!("lock-done:{name}:"),
        );
        let (_, token): (i64, i64) = self
            .acquire
            .key(&lock)
            .key(&signal)
            .key("lock-fencing-counter")
            .key(&grant)
            .arg(owner)
            .arg(expire_ms)
            .arg("0")
            .arg("attempt")
            .arg(10_000)
            .arg(&done)
            .invoke(conn)?;
        let _: i64 = self
            .release
            .key(&lock)
            .key(&signal)
            .key(&grant)
            .key(&released)
            .key(format!("{done}attempt"))
            .arg(owner)
            .arg(1000)
            .arg(token)
            .arg(10_000)
            .invoke(conn)?;
        Ok(())
    }
}

/// Runs the cycle each `make()` gives on `MANY_NAMES_THREADS` threads for
/// `MANY_NAMES_RUN`; returns the cycles per second of all of them together.
fn run_threads<F>(mut make: impl FnMut() -> F) -> BoxResult<f64>
where
    F: FnMut() -> BoxResult<()> + Send + 'static,
{
    let started = Instant::now();
    let threads: Vec<_> = (0..MANY_NAMES_THREADS)
        .map(|_| {
            let mut cycle = make();
            thread::spawn(move || -> Result<u64, String> {
                let mut done = 0;
                while started.elapsed() < MANY_NAMES_RUN {
                    cycle().map_err(|e| e.to_string())?;
                    done += 1;
                }
                Ok(done)
            })
        })
        .collect();
    let mut total = 0;
    for t in threads {
        total += t.join().map_err(|_| "a thread panicked")??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// How late `try_lock_for` returns on a lock held throughout: `LATE_WAITS` waits of 50 ms on
/// an otherwise idle server; the median and the worst lateness, in milliseconds.
fn try_lock_for_lateness(url: &str) -> BoxResult<(f64, f64)> {
    // Two pools: the holder stands for another process.
    let holder = RedisMutex::new(Pool::new(url)?, "bench:late")?;
    let waiter = RedisMutex::new(Pool::new(url)?, "bench:late")?;
    let _held = holder.lock()?;
    let wait = Duration::from_millis(50);
    let mut late = Vec::with_capacity(LATE_WAITS);
    for _ in 0..LATE_WAITS {
        let called = Instant::now();
        if waiter.try_lock_for(wait).is_ok() {
            return Err("the waiter got a held lock".into());
        }
        late.push(called.elapsed().saturating_sub(wait));
    }
    let worst = *late.iter().max().ok_or("no waits")?;
    Ok((median(late).as_secs_f64() * 1e3, worst.as_secs_f64() * 1e3))
}

/// The median latency of a lock+unlock cycle of `mutex`, over `cycles` after a warm-up.
fn cycle_latency(mutex: &RedisMutex, cycles: usize) -> BoxResult<Duration> {
    for _ in 0..cycles / 10 + 1 {
        mutex.lock()?.unlock()?;
    }
    let mut samples = Vec::with_capacity(cycles);
    for _ in 0..cycles {
        let started = Instant::now();
        mutex.lock()?.unlock()?;
        samples.push(started.elapsed());
    }
    Ok(median(samples))
}

/// A lock+unlock on a primary with a replica, without and with `wait_replicas(1, 100 ms)`,
/// interleaved in blocks: median latencies.
fn wait_replicas_cost() -> BoxResult<(Duration, Duration)> {
    let primary = RedisServer::start();
    let replica =
        RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary.port().to_string()]);
    let mut on_replica = replica.connection();
    let linked = support::eventually(Duration::from_secs(20), || {
        support::info_field(&mut on_replica, "replication", "master_link_status").as_deref()
            == Some("up")
    });
    if !linked {
        return Err("the replica never linked".into());
    }
    let pool = primary.pool();
    let plain = RedisMutex::new(pool.clone(), "bench:plain")?;
    let replicated = RedisMutex::builder(pool, "bench:replicated")
        .wait_replicas(1, Duration::from_millis(100))
        .build()?;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        a.push(cycle_latency(&plain, 200)?);
        b.push(cycle_latency(&replicated, 200)?);
    }
    Ok((median(a), median(b)))
}

/// A lock+unlock on a standalone server and on a 3-primary cluster (with replicas), both on
/// this machine, interleaved in blocks: median latencies.
fn cluster_cost() -> BoxResult<(Duration, Duration)> {
    let standalone = RedisServer::start();
    let cluster = support::cluster::Cluster::start(3);
    let alone = RedisMutex::new(standalone.pool(), "bench:standalone")?;
    let clustered = RedisMutex::new(cluster.pool(), "bench:cluster")?;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        a.push(cycle_latency(&alone, 200)?);
        b.push(cycle_latency(&clustered, 200)?);
    }
    Ok((median(a), median(b)))
}

/// The latency proxy's own cost: the median `PING` through it at 0 ms, less the median
/// direct.
fn proxy_overhead(url: &str) -> BoxResult<Duration> {
    let port: u16 = url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or("the server URL has no port")?;
    let proxy = proxy::FaultProxy::start(port);
    let mut direct = redis::Client::open(url)?.get_connection()?;
    let mut proxied = redis::Client::open(proxy.url())?.get_connection()?;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..2000 {
        for (conn, samples) in [(&mut direct, &mut a), (&mut proxied, &mut b)] {
            let started = Instant::now();
            let _: String = redis::cmd("PING").query(conn)?;
            samples.push(started.elapsed());
        }
    }
    Ok(median(b).saturating_sub(median(a)))
}

struct Peers {
    uncontended: f64,
    contended: f64,
    vs_uncontended: f64,
    vs_contended: f64,
}

/// python-redis-lock 4.x: uncontended acquire+release cycles per second on one process,
/// with python's own client; and `CONTENDED_PROCESSES` processes x `THREADS_PER_PROCESS`
/// threads contending on one name with the same counter work under the lock. Compared with
/// this crate's uncontended figure and with its own contended run of the same shape.
const PYTHON_PEER: &str = r#"
import sys, time, threading, redis, redis_lock
port, mode, seconds, threads = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
conn = redis.StrictRedis(host="127.0.0.1", port=port)
done = [0] * threads
def run(t):
    c = redis.StrictRedis(host="127.0.0.1", port=port)
    lock = redis_lock.Lock(c, "bench:python-" + mode, expire=10)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        lock.acquire(blocking=True)
        if mode == "contended":
            n = int(c.get("bench:python-counter") or 0)
            c.set("bench:python-counter", n + 1)
        lock.release()
        done[t] += 1
ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
for t in ts: t.start()
for t in ts: t.join()
print(sum(done))
"#;

fn python_peers(url: &str, uncontended_ours: f64, rtt: Duration) -> BoxResult<Option<Peers>> {
    let Ok(python) = python::try_python() else {
        return Ok(None);
    };
    let port = url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .ok_or("the server URL has no port")?
        .to_owned();
    let run = |mode: &str, seconds: f64, threads: usize| -> BoxResult<u64> {
        let out = Command::new(python)
            .args([
                "-c",
                PYTHON_PEER,
                &port,
                mode,
                &seconds.to_string(),
                &threads.to_string(),
            ])
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "python-redis-lock run failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(String::from_utf8(out.stdout)?.trim().parse()?)
    };
    let seconds = 3.0;
    let uncontended = run("uncontended", seconds, 1)? as f64 / seconds;
    // The contended runs, python's and ours, side by side at the same moment's speed.
    let mut conn = redis::Client::open(url)?.get_connection()?;
    let _: () = conn.del("bench:python-counter")?;
    let started = Instant::now();
    let handles: Vec<_> = (0..CONTENDED_PROCESSES)
        .map(|_| {
            let port = port.clone();
            let python = python.to_path_buf();
            thread::spawn(move || -> Result<u64, String> {
                let out = Command::new(python)
                    .args([
                        "-c",
                        PYTHON_PEER,
                        &port,
                        "contended",
                        "3",
                        &THREADS_PER_PROCESS.to_string(),
                    ])
                    .output()
                    .map_err(|e| e.to_string())?;
                String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse()
                    .map_err(|e| format!("{e}"))
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h.join().map_err(|_| "a python run panicked")??;
    }
    let python_contended = total as f64 / started.elapsed().as_secs_f64();
    let ours = contended(url, rtt, false)?.cycles_per_s;
    Ok(Some(Peers {
        uncontended,
        contended: python_contended,
        vs_uncontended: uncontended_ours / uncontended,
        vs_contended: ours / python_contended,
    }))
}
