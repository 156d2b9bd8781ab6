//! `redis-mutex`: who holds which lock, for how long, and how to free one safely, from a
//! shell. Built with the `cli` feature: `cargo install --path . --features cli` in a clone
//! of the repository (`cargo install redis-mutex --features cli` once it is on crates.io).
//!
//! Exit codes: 0 done; 1 `owner` found nothing held under the name; 2 a usage error (a bad
//! argument, or `reset-all` without `--yes`); 3 Redis could not be reached or answered with
//! an error; 4 the name's key holds something that is not a lock (no lock can be taken under
//! it). `run` gives its command's status, or one of its own (see `run --help` and "Cron
//! jobs across a fleet" in docs/operations.md).

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use redis_mutex::{
    Error, Leader, LockInfo, LockKind, Pool, RedisElection, RedisMutex, RedisRwLock,
    RedisSemaphore, Released, last_release, list_locks, lock_info, reset_all, reset_owned_by,
};
use serde_json::json;

#[path = "redis-mutex/run.rs"]
mod run;

#[derive(Parser)]
#[command(
    name = "redis-mutex",
    version,
    about = "Who holds which redis-mutex (and python-redis-lock) lock, and how to free one",
    after_help = "Examples:\n  \
        redis-mutex list\n  \
        REDIS_URL=redis://10.0.0.5:6379/ redis-mutex owner nightly-report\n  \
        redis-mutex --cluster redis://10.0.0.1:7000/ list --match 'report*'\n  \
        redis-mutex run --no-wait nightly-report -- ./report.sh"
)]
struct Cli {
    #[command(flatten)]
    server: Server,
    #[command(subcommand)]
    command: Commands,
}

/// Where the locks are.
#[derive(Args)]
struct Server {
    /// The Redis server.
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379/",
        global = true
    )]
    url: String,
    /// A node of a Redis Cluster (repeat for more); used instead of --url.
    #[arg(long, value_name = "URL", global = true)]
    cluster: Vec<String>,
    /// A sentinel (repeat for more); used instead of --url, with --service.
    #[arg(long, value_name = "URL", global = true, requires = "service")]
    sentinel: Vec<String>,
    /// The name the sentinels monitor the primary under.
    #[arg(long, global = true)]
    service: Option<String>,
    /// How long to wait for any one reply, in milliseconds.
    #[arg(long, default_value_t = 2000, global = true)]
    timeout_ms: u64,
}

#[derive(Subcommand)]
enum Commands {
    /// Lists the locks held now: mutexes (python-redis-lock's too), read and write leases,
    /// semaphore permits.
    #[command(
        after_help = "Examples:\n  redis-mutex list\n  redis-mutex list --match 'report*' --json"
    )]
    List {
        /// Only locks whose name matches this pattern (`*`, `?`, `[abc]`).
        #[arg(long = "match", value_name = "PATTERN")]
        pattern: Option<String>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Shows who holds what under a name, and for how long: a mutex, a semaphore's
    /// grants of permits, a read-write lock's leases on that path; exits with 1 when
    /// nothing is held.
    #[command(
        after_help = "Examples:\n  redis-mutex owner nightly-report\n  redis-mutex owner exports --json"
    )]
    Owner {
        /// The lock's name (a semaphore's, a read-write lock's path).
        name: String,
        /// One JSON object per holder (a line each) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Deletes a lock whoever holds it and wakes its waiters: the mutex NAME, else
    /// whatever is held under NAME (a semaphore's permits, a read-write lock's leases on
    /// that path), or only the kind given. The holder is not told until its next renewal
    /// or release; free only a lock whose holder is gone.
    #[command(
        after_help = "Examples:\n  redis-mutex reset migrations\n  redis-mutex reset --rwlock tenants/42\n  redis-mutex reset --semaphore exports"
    )]
    Reset {
        /// The lock's name (a semaphore's, a read-write lock's path).
        name: String,
        /// NAME is a read-write lock's path: remove every read and write lease on it.
        #[arg(long, conflicts_with = "semaphore")]
        rwlock: bool,
        /// NAME is an election's: end the leader's term and wake a candidate (a new
        /// election).
        #[arg(long, conflicts_with_all = ["rwlock", "semaphore"])]
        election: bool,
        /// NAME is a semaphore's: take back every permit, and wake its waiters.
        #[arg(long)]
        semaphore: bool,
    },
    /// Deletes the locks held by one owner id (what a crashed worker with a stable id
    /// left); nobody else's.
    #[command(
        name = "reset-owned-by",
        after_help = "Example:\n  redis-mutex reset-owned-by host-7/report-worker"
    )]
    ResetOwnedBy {
        /// The owner id the locks were built with.
        owner_id: String,
    },
    /// Deletes every lock, held or not. Only when no process can hold one (a deploy step
    /// with every worker stopped); refuses without --yes.
    #[command(
        name = "reset-all",
        after_help = "Example:\n  redis-mutex reset-all --yes"
    )]
    ResetAll {
        /// Yes, delete every lock.
        #[arg(long)]
        yes: bool,
    },
    /// Prints a line each time a mutex changes hands (owner, token, how long the last
    /// holder held it), until Ctrl-C. It looks every --interval-ms: a hold shorter than
    /// that may go unseen. With --election, follows an election instead: a line per change
    /// of leader or proclaimed value, woken by the change (no --interval-ms).
    #[command(
        after_help = "Examples:\n  redis-mutex watch nightly-report\n  redis-mutex watch --election scheduler"
    )]
    Watch {
        /// The lock's name (the election's, with --election).
        name: String,
        /// How often to look, in milliseconds.
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
        /// NAME is an election's: print each change of who leads and what it proclaimed.
        #[arg(long)]
        election: bool,
    },
    /// Shows who leads the election NAME: owner id, term, proclaimed value and lease left;
    /// exits with 1 when nobody leads.
    #[command(after_help = "Example:\n  redis-mutex leader scheduler")]
    Leader {
        /// The election's name.
        name: String,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Runs a command while holding a lock across the fleet: takes it (waits for it, or
    /// gives up with --no-wait or --wait), runs COMMAND with it renewed, releases it once
    /// COMMAND is gone, and exits with COMMAND's status. A lost lock stops COMMAND (SIGTERM,
    /// then SIGKILL after --kill-after). Durations: `500ms`, `20s`, `5m`, `24h`.
    #[command(after_help = RUN_HELP)]
    Run(run::RunArgs),
}

const RUN_HELP: &str = "\
Statuses (each settable; every other status is COMMAND's, 128+N when signal N killed it):
  75   the lock could not be had (--no-wait, or --wait ran out)    --conflict-exit-code
  76   the lock was lost while COMMAND ran                         --lost-exit-code
  77   COMMAND was done already in this window (--once-per)        --done-exit-code
  125  run's own error (Redis could not be reached, ...)           --error-exit-code
  126  COMMAND could not be run; 127 COMMAND was not found
  2    a usage error

COMMAND gets REDIS_MUTEX_NAME, REDIS_MUTEX_TOKEN (the fencing token) and REDIS_MUTEX_OWNER_ID
in its environment. SIGINT, SIGTERM, SIGHUP and SIGQUIT are passed on to COMMAND's process
group. The --*-ms options of the other subcommands take milliseconds, not durations.

Examples (a crontab line each):
  0 2 * * *  redis-mutex run --no-wait nightly-report -- /opt/report.sh
  */5 * * * * redis-mutex run --wait 4m --expire 1m sync -- /opt/sync.sh
  * * * * *  redis-mutex run --no-wait --permits 3 exports -- /opt/export.sh
  0 2 * * *  redis-mutex run --once-per 24h nightly-report -- /opt/report.sh";

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Commands::Run(args) = cli.command {
        return match pool(&cli.server) {
            Ok(pool) => run::run(pool, args),
            Err(e) => {
                eprintln!("redis-mutex run: {e}");
                ExitCode::from(args.error_exit_code())
            }
        };
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("redis-mutex: {e}");
            ExitCode::from(match e {
                Error::InvalidOptions { .. } => 2,
                Error::WrongType { .. } => 4,
                _ => 3,
            })
        }
    }
}

fn pool(server: &Server) -> redis_mutex::Result<Pool> {
    let builder = Pool::builder().response_timeout(Duration::from_millis(server.timeout_ms));
    if !server.cluster.is_empty() {
        let nodes: Vec<&str> = server.cluster.iter().map(String::as_str).collect();
        return builder.build_cluster(&nodes);
    }
    if !server.sentinel.is_empty() {
        let sentinels: Vec<&str> = server.sentinel.iter().map(String::as_str).collect();
        let service = server.service.as_deref().unwrap_or_default();
        return builder.build_sentinel(&sentinels, service);
    }
    builder.build(&server.url)
}

fn run(cli: Cli) -> redis_mutex::Result<ExitCode> {
    if let Commands::ResetAll { yes: false } = cli.command {
        eprintln!(
            "redis-mutex: reset-all deletes every lock, held or not, and two processes may \
             then run what the locks kept apart; run it only when no process can hold a \
             lock, with --yes"
        );
        return Ok(ExitCode::from(2));
    }
    let pool = pool(&cli.server)?;
    match cli.command {
        Commands::List { pattern, json } => list(&pool, pattern.as_deref(), json),
        Commands::Owner { name, json } => owner(&pool, &name, json),
        Commands::Reset {
            name,
            rwlock,
            semaphore,
            election,
        } => reset(&pool, &name, rwlock, semaphore, election),
        Commands::ResetOwnedBy { owner_id } => {
            let n = reset_owned_by(&pool, &owner_id)?;
            println!("removed {n} lock(s) held by `{owner_id}`");
            Ok(ExitCode::SUCCESS)
        }
        Commands::ResetAll { .. } => {
            let n = reset_all(&pool)?;
            println!("removed {n} lock(s)");
            Ok(ExitCode::SUCCESS)
        }
        Commands::Watch {
            name,
            election: true,
            ..
        } => watch_election(&pool, &name),
        Commands::Watch {
            name, interval_ms, ..
        } => watch(&pool, &name, Duration::from_millis(interval_ms)),
        Commands::Leader { name, json } => leader(&pool, &name, json),
        Commands::Run(_) => unreachable!("run is handled in main"),
    }
}

/// A lease left, for people: `29.8s`, or `-` for a lock without expiry.
fn left(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| format!("{:.1}s", d.as_secs_f64()))
}

/// A lock's kind as the table shows it: a semaphore's with its permits in use and capacity
/// (`semaphore 3/5`), and how many this grant holds when more than one.
fn kind(lock: &LockInfo) -> String {
    match lock.permits {
        Some(p) if p.held > 1 => format!("{} {}/{} (x{})", lock.kind, p.in_use, p.capacity, p.held),
        Some(p) => format!("{} {}/{}", lock.kind, p.in_use, p.capacity),
        None => lock.kind.to_string(),
    }
}

fn opt(n: Option<impl ToString>) -> String {
    n.map_or_else(|| "-".to_owned(), |n| n.to_string())
}

fn to_json(lock: &LockInfo) -> serde_json::Value {
    json!({
        "name": lock.name,
        "kind": lock.kind.to_string(),
        "owner_id": lock.owner_id,
        "expires_in_ms": lock.expires_in.map(|d| d.as_millis() as u64),
        "fencing_token": lock.fencing_token,
        "waiters": lock.waiters,
        "key": lock.key,
        "permits": lock.permits.map(|p| json!({
            "held": p.held,
            "in_use": p.in_use,
            "capacity": p.capacity,
        })),
        "value": lock.value,
    })
}

fn list(pool: &Pool, pattern: Option<&str>, json: bool) -> redis_mutex::Result<ExitCode> {
    let pattern = match pattern.map(glob::Pattern::new).transpose() {
        Ok(pattern) => pattern,
        Err(e) => {
            eprintln!("redis-mutex: --match: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let mut locks = Vec::new();
    for lock in list_locks(pool) {
        let lock = lock?;
        if pattern.as_ref().is_none_or(|p| p.matches(&lock.name)) {
            locks.push(lock);
        }
    }
    locks.sort_by(|a, b| (&a.name, &a.owner_id).cmp(&(&b.name, &b.owner_id)));
    let mut out = std::io::stdout().lock();
    if json {
        for lock in &locks {
            writeln!(out, "{}", to_json(lock)).ok();
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 7]> = locks
        .iter()
        .map(|l| {
            [
                l.name.clone(),
                kind(l),
                l.owner_id.clone(),
                left(l.expires_in),
                opt(l.fencing_token),
                opt(l.waiters),
                l.value.clone().unwrap_or_default(),
            ]
        })
        .collect();
    // An election's leader's proclaimed value, when any is listed.
    let header = [
        "NAME",
        "KIND",
        "OWNER",
        "EXPIRES IN",
        "TOKEN",
        "WAITERS",
        "VALUE",
    ]
    .map(str::to_owned);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        writeln!(out, "{}", cells.join("  ").trim_end()).ok();
    }
    if rows.is_empty() {
        writeln!(out, "(no lock is held)").ok();
    }
    for lock in locks.iter().filter(|l| l.kind == LockKind::NotALock) {
        writeln!(
            out,
            "note: key `{}` holds another type than a lock: no lock can be taken under `{}` \
             until it is deleted (if nothing else uses it)",
            lock.key, lock.name
        )
        .ok();
    }
    Ok(ExitCode::SUCCESS)
}

/// Every lock held under `name`, of every kind; a key there that holds another type is
/// [`Error::WrongType`], naming it.
fn held_under(pool: &Pool, name: &str) -> redis_mutex::Result<Vec<LockInfo>> {
    let mut held = Vec::new();
    for lock in list_locks(pool).named(name) {
        let lock = lock?;
        if lock.kind == LockKind::NotALock {
            return Err(Error::WrongType {
                name: name.to_owned(),
                key: Some(lock.key),
            });
        }
        held.push(lock);
    }
    Ok(held)
}

fn owner(pool: &Pool, name: &str, json: bool) -> redis_mutex::Result<ExitCode> {
    let held = held_under(pool, name)?;
    if held.is_empty() {
        let released = last_release(pool, name)?;
        if json {
            println!("{}", json!({ "name": name, "held": false }));
        } else {
            println!(
                "`{name}` is free{}",
                released.map_or_else(String::new, |r| { format!(" ({})", how_it_ended(r)) })
            );
        }
        return Ok(ExitCode::from(1));
    }
    for lock in &held {
        if json {
            println!("{}", to_json(lock));
            continue;
        }
        // A mutex is what a name means unless said otherwise; other kinds are named.
        let what = match lock.kind {
            LockKind::Mutex => String::new(),
            _ => format!(" ({})", kind(lock)),
        };
        println!(
            "`{name}`{what} is held by {} for {} more (token {}, {} waiting)",
            lock.owner_id,
            left(lock.expires_in),
            opt(lock.fencing_token),
            opt(lock.waiters)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `reset NAME`: the mutex `name`, or with a flag the semaphore or the read-write lock;
/// without one, when no mutex was held, whatever else is held under the name.
fn reset(
    pool: &Pool,
    name: &str,
    rwlock: bool,
    semaphore: bool,
    election: bool,
) -> redis_mutex::Result<ExitCode> {
    // The capacity in force is unknown here: the largest wakes every waiter (each asks
    // again; those the freed permits are not enough for wait on).
    let reset_semaphore = || {
        let removed = RedisSemaphore::new(pool.clone(), name, u32::MAX)?.reset()?;
        if removed > 0 {
            println!(
                "reset semaphore `{name}`: {removed} grant(s) of permits taken back and its \
                 waiters woken"
            );
        }
        Ok::<_, Error>(removed > 0)
    };
    let reset_rwlock = || {
        let removed = RedisRwLock::new(pool.clone(), name)?.reset()?;
        if removed {
            println!(
                "reset read-write lock `{name}`: its read and write leases were removed and \
                 its waiters woken"
            );
        }
        Ok::<_, Error>(removed)
    };
    let reset_election = || {
        let removed = RedisElection::new(pool.clone(), name)?.reset()?;
        if removed {
            println!("reset election `{name}`: its leader's term was ended and a candidate woken");
        }
        Ok::<_, Error>(removed)
    };
    let removed = if election {
        reset_election()?
    } else if rwlock {
        reset_rwlock()?
    } else if semaphore {
        reset_semaphore()?
    } else if RedisMutex::new(pool.clone(), name)?.reset()? {
        println!("reset `{name}`: the lock was removed and a waiter woken");
        true
    } else {
        // No mutex was held: what else is held under the name, of the kinds `reset` frees.
        let held = held_under(pool, name)?;
        let mut removed = false;
        if held.iter().any(|l| l.kind == LockKind::Semaphore) {
            removed |= reset_semaphore()?;
        }
        if held
            .iter()
            .any(|l| matches!(l.kind, LockKind::Read | LockKind::Write))
        {
            removed |= reset_rwlock()?;
        }
        if held.iter().any(|l| l.kind == LockKind::Election) {
            removed |= reset_election()?;
        }
        if held.iter().any(|l| l.kind == LockKind::Redlock) {
            println!(
                "`{name}` is held by a Redlock grant: `reset` leaves it (freeing one instance \
                 frees no Redlock); its lease ends it"
            );
            removed = true;
        }
        removed
    };
    if !removed {
        println!("reset `{name}`: it was not held");
    }
    Ok(ExitCode::SUCCESS)
}

/// How a grant ended, in words, from its release note.
fn how_it_ended(released: Released) -> String {
    match released {
        Released::ByHolder { fencing_token } => {
            format!("released by its holder moments ago, token {fencing_token}")
        }
        Released::ByReset { fencing_token } => {
            format!("reset moments ago, token {}", opt(fencing_token))
        }
        _ => "released moments ago".to_owned(),
    }
}

fn watch(pool: &Pool, name: &str, interval: Duration) -> redis_mutex::Result<ExitCode> {
    let started = Instant::now();
    // The holder seen last (owner, token, lease left), if any, and when it was seen.
    type Holder = Option<(String, Option<u64>, Option<Duration>)>;
    let mut last: Option<(Holder, Instant, Instant)> = None;
    loop {
        let looked_at = Instant::now();
        let now_held = lock_info(pool, name)?.map(|l| (l.owner_id, l.fencing_token, l.expires_in));
        let same = |a: &Holder, b: &Holder| {
            a.as_ref().map(|(o, t, _)| (o, t)) == b.as_ref().map(|(o, t, _)| (o, t))
        };
        let changed = last
            .as_ref()
            .is_none_or(|(held, _, _)| !same(held, &now_held));
        if changed {
            let at = Instant::now();
            let line = match &now_held {
                Some((owner, token, _)) => format!("held by {owner} (token {})", opt(*token)),
                None => "free".to_owned(),
            };
            let previous = match &last {
                Some((Some((owner, token, left)), since, seen)) => {
                    let held_for = (at - *since).as_secs_f64();
                    let how = match last_release(pool, name)? {
                        Some(Released::ByHolder { fencing_token })
                            if Some(fencing_token) == *token =>
                        {
                            "let go".to_owned()
                        }
                        Some(Released::ByReset { fencing_token })
                            if fencing_token.is_none() || fencing_token == *token =>
                        {
                            "was reset".to_owned()
                        }
                        // Its lease ran out by the time we looked again.
                        _ if left.is_some_and(|left| *seen + left <= looked_at) => {
                            "expired".to_owned()
                        }
                        _ => "is gone (released by a client that leaves no note, such as \
                              python-redis-lock, or deleted)"
                            .to_owned(),
                    };
                    format!("; {owner} {how} after {held_for:.1}s")
                }
                _ => String::new(),
            };
            println!(
                "+{:.3}s `{name}` {line}{previous}",
                (at - started).as_secs_f64()
            );
            std::io::stdout().flush().ok();
            last = Some((now_held, at, looked_at));
        } else if let Some((held, _, seen)) = &mut last {
            // The same grant: its lease as seen now (renewed, maybe).
            *held = now_held;
            *seen = looked_at;
        }
        std::thread::sleep(interval);
    }
}

/// A leader in words: `host-7 leads (term 17, 9.8s left): 10.0.0.7:8080`.
fn leader_line(leader: &Leader) -> String {
    format!(
        "{} leads (term {}, {} left): {}",
        leader.owner_id,
        leader.term,
        left(leader.expires_in),
        leader.value
    )
}

fn leader(pool: &Pool, name: &str, json: bool) -> redis_mutex::Result<ExitCode> {
    let leader = RedisElection::new(pool.clone(), name)?.leader()?;
    match (&leader, json) {
        (Some(l), true) => println!(
            "{}",
            json!({
                "name": name,
                "owner_id": l.owner_id,
                "term": l.term,
                "value": l.value,
                "expires_in_ms": l.expires_in.map(|d| d.as_millis() as u64),
            })
        ),
        (None, true) => println!("{}", json!({ "name": name, "leader": null })),
        (Some(l), false) => println!("`{name}`: {}", leader_line(l)),
        (None, false) => println!("`{name}`: nobody leads"),
    }
    Ok(if leader.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `watch --election`: a line per change, woken by the change itself.
fn watch_election(pool: &Pool, name: &str) -> redis_mutex::Result<ExitCode> {
    let started = Instant::now();
    for change in RedisElection::new(pool.clone(), name)?.observe()? {
        let line = match change {
            Ok(Some(leader)) => leader_line(&leader),
            Ok(None) => "nobody leads".to_owned(),
            // A failover's blip, a restart: say so, and go on (the observer pauses).
            Err(e) => {
                eprintln!("redis-mutex watch: {e}");
                continue;
            }
        };
        println!("+{:.3}s `{name}`: {line}", started.elapsed().as_secs_f64());
        std::io::stdout().flush().ok();
    }
    Ok(ExitCode::SUCCESS)
}
