//! Measures the lock against the physical limit (round trips), in one run: a table, and with
//! `--json` one JSON object as the last line.
//!
//! ```text
//! cargo run --release --example bench              # starts its own redis-server processes
//! cargo run --release --example bench -- --json
//! REDIS_URL=redis://127.0.0.1:6380/ cargo run --release --example bench
//! ```
//!
//! Every figure is a ratio or a median from this one run; `docs/performance.md` explains
//! each and shows a result.

#[path = "../tests/support/server.rs"]
mod server;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::Commands;
use redis_mutex::{Pool, RedisMutex, Redlock};
use server::RedisServer;

/// How long each contended process runs its cycles.
const CONTENDED_RUN: Duration = Duration::from_secs(3);
const CONTENDED_PROCESSES: usize = 4;
const THREADS_PER_PROCESS: usize = 2;
/// Uncontended cycles are measured in this many alternating blocks of this many cycles.
const UNCONTENDED_BLOCKS: usize = 20;
const UNCONTENDED_BLOCK_CYCLES: usize = 200;
const REDLOCK_CYCLES: usize = 1_000;
const RENEWED_LOCKS: usize = 10_000;
const RENEWAL_EXPIRE: Duration = Duration::from_secs(3);
const RENEWAL_WINDOW: Duration = Duration::from_secs(6);

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> BoxResult<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--contended-worker") {
        return contended_worker(&args[1], &args[2]);
    }
    let json = args.iter().any(|a| a == "--json");

    let (url, _server) = server::example_server();
    let pool = recommended_pool(&url)?;
    let mut results: Vec<(&str, String)> = Vec::new();
    let mut table: Vec<(String, String)> = Vec::new();

    let default_pool = r2d2::Pool::builder().build(redis::Client::open(url.as_str())?)?;
    let uncontended = uncontended(&pool, default_pool)?;
    let rtt = uncontended.rtt;
    results.push(("rtt_us", format!("{:.1}", micros(rtt))));
    table.push((
        "PING round trip (median)".into(),
        format!("{:.1} µs", micros(rtt)),
    ));
    let limit = 1.0 / (2.0 * rtt.as_secs_f64());

    let [uncontended, uncontended_default, floor] = uncontended.cycles_per_s;
    results.push(("uncontended_cycles_per_s", format!("{uncontended:.0}")));
    results.push((
        "uncontended_vs_limit",
        format!("{:.3}", uncontended / limit),
    ));
    results.push((
        "uncontended_vs_limit_default_pool",
        format!("{:.3}", uncontended_default / limit),
    ));
    table.push((
        "uncontended lock+unlock".into(),
        format!(
            "{uncontended:.0}/s = {:.2} of the 2-RTT limit ({limit:.0}/s)",
            uncontended / limit
        ),
    ));
    results.push(("script_floor_cycles_per_s", format!("{floor:.0}")));
    results.push((
        "uncontended_vs_script_floor",
        format!("{:.3}", uncontended / floor),
    ));
    table.push((
        "  the protocol's floor: its 2 scripts".into(),
        format!(
            "{floor:.0}/s = {:.2} of the limit; the library reaches {:.2} of it",
            floor / limit,
            uncontended / floor
        ),
    ));
    table.push((
        "  with a default r2d2 pool".into(),
        format!(
            "{uncontended_default:.0}/s = {:.2} of the limit",
            uncontended_default / limit
        ),
    ));

    let contended = contended(&url, rtt)?;
    results.push((
        "contended_cycles_per_s",
        format!("{:.0}", contended.cycles_per_s),
    ));
    results.push(("counter_exact", contended.counter_exact.to_string()));
    results.push((
        "handoff_p50_rtt",
        format!("{:.2}", contended.handoff_p50_rtt),
    ));
    results.push((
        "handoff_p99_rtt",
        format!("{:.2}", contended.handoff_p99_rtt),
    ));
    results.push(("fairness_min_max", format!("{:.3}", contended.fairness)));
    table.push((
        format!("contended, {CONTENDED_PROCESSES} processes x {THREADS_PER_PROCESS} threads"),
        format!(
            "{:.0} cycles/s, counter exact: {}",
            contended.cycles_per_s, contended.counter_exact
        ),
    ));
    table.push((
        "  handoff release -> next holder".into(),
        format!(
            "p50 {:.2} RTT, p99 {:.2} RTT",
            contended.handoff_p50_rtt, contended.handoff_p99_rtt
        ),
    ));
    table.push((
        "  fairness (fewest / most grants)".into(),
        format!("{:.3} ({:?})", contended.fairness, contended.grants),
    ));

    let ratio = redlock5_vs_1()?;
    results.push(("redlock5_vs_1", format!("{:.3}", ratio.ratio)));
    table.push((
        "Redlock acquire+release, 5 vs 1".into(),
        format!(
            "{:.1} µs vs {:.1} µs = {:.2}",
            micros(ratio.five),
            micros(ratio.one),
            ratio.ratio
        ),
    ));

    let renewal = renewal_cmds_per_s(&url)?;
    results.push(("renewal_10k_cmds_per_s", format!("{renewal:.1}")));
    table.push((
        format!("renewal of {RENEWED_LOCKS} leases"),
        format!(
            "{renewal:.1} round trips/s ({:.0} unbatched)",
            RENEWED_LOCKS as f64 / (RENEWAL_EXPIRE.as_secs_f64() / 3.0)
        ),
    ));

    let width = table
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    for (k, v) in &table {
        println!("{k:<width$}  {v}");
    }
    if json {
        let body: Vec<String> = results
            .iter()
            .map(|(k, v)| format!("\"{k}\": {v}"))
            .collect();
        println!("{{{}}}", body.join(", "));
    }
    Ok(())
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn recommended_pool(url: &str) -> BoxResult<Pool> {
    Ok(r2d2::Pool::builder()
        .test_on_check_out(false)
        .build(redis::Client::open(url)?)?)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

struct Uncontended {
    /// The median `PING` round trip through the pool.
    rtt: Duration,
    /// Lock+unlock cycles per second with the recommended pool, with a default r2d2 pool,
    /// and of the protocol's floor.
    cycles_per_s: [f64; 3],
}

/// Measures, in alternating blocks so that all of them see the same machine (on a VM, speed
/// drifts from second to second): `PING` round trips through the pool; lock+unlock with the
/// recommended pool and with a default r2d2 pool; and the protocol's floor, the same two
/// script calls sent raw on one connection, without this library's code, checkouts or
/// local queue.
fn uncontended(pool: &Pool, default_pool: Pool) -> BoxResult<Uncontended> {
    let recommended = RedisMutex::builder(pool.clone(), "bench:uncontended")
        .expire(Duration::from_secs(10))
        .build()?;
    let default = RedisMutex::builder(default_pool, "bench:uncontended-default")
        .expire(Duration::from_secs(10))
        .build()?;
    let acquire = redis::Script::new(include_str!("../src/scripts/acquire.lua"));
    let release = redis::Script::new(include_str!("../src/scripts/release.lua"));
    let mut conn = pool.get()?;
    let mut raw = || -> BoxResult<()> {
        let _: (i64, i64) = acquire
            .key("lock:bench:floor")
            .key("lock-signal:bench:floor")
            .key("lock-fencing-counter")
            .arg("bench")
            .arg(10_000)
            .arg("1")
            .invoke(&mut *conn)?;
        let _: i64 = release
            .key("lock:bench:floor")
            .key("lock-signal:bench:floor")
            .arg("bench")
            .arg(1000)
            .invoke(&mut *conn)?;
        Ok(())
    };
    let mut cycles: [Box<dyn FnMut() -> BoxResult<()> + '_>; 3] = [
        Box::new(|| Ok(recommended.lock()?.unlock()?)),
        Box::new(|| Ok(default.lock()?.unlock()?)),
        Box::new(&mut raw),
    ];
    let mut spent = [Duration::ZERO; 3];
    let mut pings = Vec::with_capacity(UNCONTENDED_BLOCKS * UNCONTENDED_BLOCK_CYCLES);
    for block in 0..=UNCONTENDED_BLOCKS {
        {
            let mut conn = pool.get()?;
            for _ in 0..UNCONTENDED_BLOCK_CYCLES {
                let started = Instant::now();
                let _: String = redis::cmd("PING").query(&mut *conn)?;
                if block > 0 {
                    pings.push(started.elapsed());
                }
            }
        }
        for (cycle, spent) in cycles.iter_mut().zip(&mut spent) {
            let started = Instant::now();
            for _ in 0..UNCONTENDED_BLOCK_CYCLES {
                cycle()?;
            }
            // Block 0 warms up: scripts loaded, connections made.
            if block > 0 {
                *spent += started.elapsed();
            }
        }
    }
    let done = (UNCONTENDED_BLOCKS * UNCONTENDED_BLOCK_CYCLES) as f64;
    Ok(Uncontended {
        rtt: median(pings),
        cycles_per_s: spent.map(|spent| done / spent.as_secs_f64()),
    })
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

fn contended(url: &str, rtt: Duration) -> BoxResult<Contended> {
    let mut conn = redis::Client::open(url)?.get_connection()?;
    let _: () = conn.del(&["bench:counter", "bench:go"])?;
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for p in 0..CONTENDED_PROCESSES {
        children.push(
            Command::new(&exe)
                .args(["--contended-worker", url, &p.to_string()])
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
        assert_eq!(ready, "ready");
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
    let counter: usize = conn.get("bench:counter")?;
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
fn contended_worker(url: &str, process: &str) -> BoxResult<()> {
    let client = redis::Client::open(url)?;
    let pool = recommended_pool(url)?;
    let mutex = Arc::new(
        RedisMutex::builder(pool, "bench:contended")
            .expire(Duration::from_secs(10))
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
            thread::spawn(move || -> redis::RedisResult<Vec<(u128, u128)>> {
                let _: (String, i64) = conn.blpop("bench:go", 30.0)?;
                let started = Instant::now();
                let mut grants = Vec::new();
                while started.elapsed() < CONTENDED_RUN {
                    let guard = mutex.lock().expect("lock");
                    let acquired = wall_nanos();
                    let n: usize = conn.get::<_, Option<usize>>("bench:counter")?.unwrap_or(0);
                    let _: () = conn.set("bench:counter", n + 1)?;
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

struct RedlockRatio {
    five: Duration,
    one: Duration,
    ratio: f64,
}

fn redlock_latency(pools: Vec<Pool>) -> BoxResult<Duration> {
    let redlock = Redlock::new(pools);
    for _ in 0..100 {
        redlock
            .lock("bench:redlock", Duration::from_secs(10))?
            .unlock()?;
    }
    let mut samples = Vec::with_capacity(REDLOCK_CYCLES);
    for _ in 0..REDLOCK_CYCLES {
        let started = Instant::now();
        redlock
            .lock("bench:redlock", Duration::from_secs(10))?
            .unlock()?;
        samples.push(started.elapsed());
    }
    Ok(median(samples))
}

fn redlock5_vs_1() -> BoxResult<RedlockRatio> {
    let servers: Vec<RedisServer> = (0..5).map(|_| RedisServer::start()).collect();
    let pools = servers
        .iter()
        .map(|s| recommended_pool(&s.url()))
        .collect::<BoxResult<Vec<_>>>()?;
    let one = redlock_latency(pools[..1].to_vec())?;
    let five = redlock_latency(pools)?;
    Ok(RedlockRatio {
        five,
        one,
        ratio: five.as_secs_f64() / one.as_secs_f64(),
    })
}

fn renewal_cmds_per_s(url: &str) -> BoxResult<f64> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_connection()?;
    let pool = recommended_pool(url)?;
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
    let calls = |conn: &mut redis::Connection| -> BoxResult<u64> {
        let info: String = redis::cmd("INFO").arg("commandstats").query(conn)?;
        Ok(info
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
            .and_then(|rest| rest.split(',').next())
            .ok_or("no evalsha in INFO commandstats")?
            .parse()?)
    };
    let before = calls(&mut conn)?;
    let started = Instant::now();
    thread::sleep(RENEWAL_WINDOW);
    let renewals = calls(&mut conn)? - before;
    let elapsed = started.elapsed();
    if let Some(lost) = guards.iter().find(|g| g.is_lost()) {
        return Err(format!("{lost:?} was lost during the renewal benchmark").into());
    }
    drop(guards);
    Ok(renewals as f64 / elapsed.as_secs_f64())
}
