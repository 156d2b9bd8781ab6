//! Auto-renewal: one thread for every guard, compare-and-extend only, lost-lock detection.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use redis::Commands;
use redis_mutex::{Error, Pool, RedisMutex, TryLockError};
use support::{RedisServer, child_env, command_calls, finish_child, spawn_child};

const HANG: Duration = Duration::from_secs(20);

/// A mutex with auto-renewal whose `on_lost` callback reports on the returned channel.
fn renewed(
    pool: Pool,
    name: &str,
    expire: Duration,
) -> (RedisMutex, mpsc::Receiver<String>, Arc<AtomicUsize>) {
    let (lost_tx, lost_rx) = mpsc::channel();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let lost_tx = std::sync::Mutex::new(lost_tx);
    let mutex = RedisMutex::builder(pool, name)
        .expire(expire)
        .auto_renewal(true)
        .on_lost(move |name| {
            counter.fetch_add(1, Ordering::SeqCst);
            lost_tx.lock().unwrap().send(name.to_string()).ok();
        })
        .build()
        .unwrap();
    (mutex, lost_rx, calls)
}

/// Child side of [`a_renewed_lease_outlives_its_expiry_many_times`].
#[test]
#[ignore = "run as a child process by a_renewed_lease_outlives_its_expiry_many_times"]
fn child_tries_for_the_renewed_lock() {
    let pool = support::server::pool_at(&child_env("REDIS_URL"));
    let mutex = RedisMutex::new(pool, "renewed");
    let result = mutex.try_lock_for(Duration::from_millis(2500));
    assert!(
        matches!(result, Err(TryLockError::WouldBlock)),
        "{result:?}"
    );
}

#[test]
fn a_renewed_lease_outlives_its_expiry_many_times() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let (mutex, lost, _) = renewed(server.pool(), "renewed", Duration::from_millis(500));
    let guard = mutex.lock().unwrap();
    let waiter = spawn_child(
        "child_tries_for_the_renewed_lock",
        &[("REDIS_URL", server.url())],
    );
    // Six expiries' worth of holding.
    thread::sleep(Duration::from_secs(3));
    finish_child(waiter, HANG);
    assert!(!guard.is_lost());
    assert!(lost.try_recv().is_err(), "on_lost was not called");
    guard.ensure_held().unwrap();
    let owner: String = conn.get("lock:renewed").unwrap();
    assert_eq!(owner, mutex.owner_id());
    let left = guard.valid_for().unwrap();
    assert!(
        left > Duration::ZERO && left <= Duration::from_millis(500),
        "{left:?}"
    );
    guard.unlock().unwrap();
}

#[test]
fn a_reset_is_noticed_within_one_renewal_interval_and_touches_no_one_else() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = server.pool();
    let expire = Duration::from_millis(600);
    let (mutex, lost, calls) = renewed(pool.clone(), "reset-me", expire);
    let guard = mutex.lock().unwrap();
    let other = RedisMutex::builder(pool.clone(), "reset-me")
        .owner_id("the-next-holder")
        .expire(Duration::from_secs(60))
        .build()
        .unwrap();

    assert!(RedisMutex::new(pool, "reset-me").reset().unwrap());
    let reset_at = Instant::now();
    let taken = other.try_lock().unwrap();
    let name = lost.recv_timeout(HANG).expect("on_lost is called");
    let noticed_after = reset_at.elapsed();
    assert_eq!(name, "reset-me");
    // One renewal interval is a third of the expiry; allow scheduling slack.
    assert!(
        noticed_after <= expire / 3 + Duration::from_millis(150),
        "{noticed_after:?}"
    );
    assert!(guard.is_lost());
    assert_eq!(guard.valid_for(), Some(Duration::ZERO));
    assert!(matches!(guard.ensure_held(), Err(Error::LockLost { .. })));

    let owner: String = conn.get("lock:reset-me").unwrap();
    assert_eq!(owner, "the-next-holder");
    let pttl: i64 = conn.pttl("lock:reset-me").unwrap();
    assert!(
        pttl > 55_000,
        "the other holder's lease was not shortened: {pttl}"
    );
    assert!(matches!(guard.unlock(), Err(Error::LockLost { .. })));
    let owner: String = conn.get("lock:reset-me").unwrap();
    assert_eq!(
        owner, "the-next-holder",
        "unlocking the lost guard touched nothing"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "on_lost ran once");
    drop(taken);
}

#[test]
fn a_server_stalled_past_the_lease_loses_the_guard_for_good() {
    let mut server = RedisServer::start();
    let mut conn = server.connection();
    let (mutex, lost, calls) = renewed(server.pool(), "stalled", Duration::from_millis(400));
    let guard = mutex.lock().unwrap();
    server.pause();
    let name = lost.recv_timeout(HANG).expect("the guard is marked lost");
    assert_eq!(name, "stalled");
    assert!(guard.is_lost());
    // Stay stopped well past the lease, so Redis' own clock expires the key.
    thread::sleep(Duration::from_millis(600));
    server.resume();
    let extends_before = command_calls(&mut conn, "evalsha");
    // Several renewal intervals after the resume: a revived renewal would show by now.
    thread::sleep(Duration::from_millis(600));
    let exists: bool = conn.exists("lock:stalled").unwrap();
    assert!(!exists, "no renewal re-created or kept the lock");
    assert_eq!(
        command_calls(&mut conn, "evalsha"),
        extends_before,
        "no renewal after the loss"
    );
    assert!(matches!(guard.unlock(), Err(Error::LockLost { .. })));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn dropping_the_guard_stops_its_renewal() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let (mutex, _lost, _) = renewed(server.pool(), "short", Duration::from_millis(300));
    let before = command_calls(&mut conn, "evalsha");
    let guard = mutex.lock().unwrap();
    thread::sleep(Duration::from_millis(450)); // four renewal intervals
    let renewals = command_calls(&mut conn, "evalsha") - before - 1;
    assert!(renewals >= 2, "renewal ran while held ({renewals} calls)");
    drop(guard);
    let after_drop = command_calls(&mut conn, "evalsha");
    thread::sleep(Duration::from_millis(450));
    assert_eq!(
        command_calls(&mut conn, "evalsha"),
        after_drop,
        "no renewal reached the server after the drop"
    );
}

#[test]
fn valid_for_never_overstates_the_servers_pttl() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let (mutex, _lost, _) = renewed(server.pool(), "clock", Duration::from_millis(600));
    let guard = mutex.lock().unwrap();
    let started = Instant::now();
    let mut samples = 0;
    // Across several renewals.
    while started.elapsed() < Duration::from_millis(1500) && samples < 2_000 {
        assert_valid_for_within_pttl(&guard, &mut conn, "lock:clock");
        samples += 1;
        thread::sleep(Duration::from_millis(3));
    }
    assert!(samples > 50);
}

/// Checks `valid_for` against the server's `PTTL` at the same moment. Ours is read just
/// before and just after the server's answer: between two renewals it only shrinks, so the
/// later reading bounds it from below; a renewal settling in between makes the earlier one
/// the bound. Either way the smaller reading exceeds the `PTTL` by more than the time
/// between the readings only if `valid_for` overstated.
fn assert_valid_for_within_pttl(
    guard: &redis_mutex::RedisMutexGuard<'_>,
    conn: &mut redis::Connection,
    key: &str,
) {
    let started = Instant::now();
    let before = guard.valid_for().unwrap();
    let pttl: i64 = conn.pttl(key).unwrap();
    let after = guard.valid_for().unwrap();
    let bracket = started.elapsed();
    assert!(pttl > 0, "the lock is alive");
    let ours = before.min(after);
    assert!(
        ours <= Duration::from_millis(pttl as u64) + bracket,
        "valid_for {ours:?} (read {before:?} then {after:?}, {bracket:?} apart) > PTTL {pttl} ms"
    );
}

fn thread_count() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Child side of [`ten_thousand_guards_share_one_thread_and_few_round_trips`], alone in
/// its process so that the thread count is its own.
#[test]
#[ignore = "run as a child process by ten_thousand_guards_share_one_thread_and_few_round_trips"]
fn child_holds_ten_thousand_renewed_guards() {
    const LOCKS: usize = 10_000;
    let expire = Duration::from_secs(2);
    let client = redis::Client::open(child_env("REDIS_URL")).unwrap();
    let pool = Pool::builder()
        .test_on_check_out(false)
        .max_size(4)
        .build(client.clone())
        .unwrap();
    let mut conn = client.get_connection().unwrap();
    let mutexes: Vec<RedisMutex> = (0..LOCKS)
        .map(|i| {
            RedisMutex::builder(pool.clone(), format!("many-{i}"))
                .expire(expire)
                .auto_renewal(true)
                .build()
                .unwrap()
        })
        .collect();
    let threads_before = thread_count();
    let guards: Vec<_> = mutexes.iter().map(|m| m.lock().unwrap()).collect();
    let acquired = Instant::now();
    let calls_before = command_calls(&mut conn, "evalsha");
    // Past three expiries.
    thread::sleep(expire * 3 + Duration::from_millis(500));
    let calls = command_calls(&mut conn, "evalsha") - calls_before;
    let threads_during = thread_count();
    let mut owners: Vec<Option<String>> = Vec::with_capacity(LOCKS);
    for chunk in mutexes.chunks(1000) {
        let keys: Vec<String> = chunk.iter().map(|m| format!("lock:{}", m.name())).collect();
        owners.extend(conn.mget::<_, Vec<Option<String>>>(keys).unwrap());
    }
    for (mutex, owner) in mutexes.iter().zip(&owners) {
        assert_eq!(
            owner.as_deref(),
            Some(mutex.owner_id()),
            "{} is still ours",
            mutex.name()
        );
    }
    assert!(guards.iter().all(|g| !g.is_lost()));
    println!(
        "@held {LOCKS} for {:?}: {calls} renewal calls, threads {threads_before} -> {threads_during}",
        acquired.elapsed()
    );
    assert!(
        threads_during <= threads_before + 2,
        "threads grew from {threads_before} to {threads_during}"
    );
    // Unbatched, 10,000 locks renewed every 667 ms would take 90,000+ calls here.
    assert!(
        calls <= 400,
        "{calls} renewal calls for {LOCKS} locks over 6.5 s"
    );
    drop(guards);
}

#[test]
fn ten_thousand_guards_share_one_thread_and_few_round_trips() {
    let server = RedisServer::start();
    let child = spawn_child(
        "child_holds_ten_thousand_renewed_guards",
        &[("REDIS_URL", server.url())],
    );
    let output = finish_child(child, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("@held"), "the child reported: {stdout}");
    let mut conn = server.connection();
    let left: usize = redis::cmd("DBSIZE").query(&mut conn).unwrap();
    // Only signal lists remain, and they expire in a second.
    let locks: Vec<String> = conn.keys("lock:*").unwrap();
    assert!(
        locks.is_empty(),
        "{} locks left of {left} keys",
        locks.len()
    );
}

/// Child side of [`a_process_that_exits_holding_renewed_guards_does_not_hang`]: returns
/// from its test with an auto-renewed guard still held, so the process exits while the
/// renewal thread serves it.
#[test]
#[ignore = "run as a child process by a_process_that_exits_holding_renewed_guards_does_not_hang"]
fn child_exits_holding_a_renewed_guard() {
    let pool = support::server::pool_at(&child_env("REDIS_URL"));
    let mutex = Box::leak(Box::new(
        RedisMutex::builder(pool, "held-at-exit")
            .expire(Duration::from_millis(300))
            .auto_renewal(true)
            .build()
            .unwrap(),
    ));
    std::mem::forget(mutex.lock().unwrap());
    println!("@holding");
}

#[test]
fn a_process_that_exits_holding_renewed_guards_does_not_hang() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let child = spawn_child(
        "child_exits_holding_a_renewed_guard",
        &[("REDIS_URL", server.url())],
    );
    let output = finish_child(child, HANG);
    assert!(String::from_utf8_lossy(&output.stdout).contains("@holding"));
    // Its renewals died with it: the lease runs out.
    let expired = support::eventually(Duration::from_secs(5), || {
        !conn.exists::<_, bool>("lock:held-at-exit").unwrap()
    });
    assert!(expired, "the lock outlived its process's renewals");
}

/// Child side of [`a_manual_extend_racing_renewals_never_lets_valid_for_overstate`]: alone
/// in its process, so the renewal thread renews only this lease, and only when it is due.
#[test]
#[ignore = "run as a child process by a_manual_extend_racing_renewals_never_lets_valid_for_overstate"]
fn child_extends_while_renewals_run() {
    let client = redis::Client::open(child_env("REDIS_URL")).unwrap();
    let pool = support::server::pool_at(&child_env("REDIS_URL"));
    let mut conn = client.get_connection().unwrap();
    let (mutex, _lost, _) = renewed(pool, "racing", Duration::from_millis(300));
    let guard = mutex.lock().unwrap();
    let started = Instant::now();
    let mut extends = 0;
    // Renewals (every 100 ms, back to a 300 ms lease) keep landing among these extends.
    while started.elapsed() < Duration::from_millis(1500) && extends < 20_000 {
        guard.extend(Duration::from_millis(120)).unwrap();
        let pttl: i64 = conn.pttl("lock:racing").unwrap();
        // Read after the server's answer, so ours can only have shrunk since: no renewal
        // settles this soon after an extend (the next is at least a third of 120 ms away,
        // and no other lease in this process makes the renewal thread take it early).
        let ours = guard.valid_for().unwrap();
        assert!(
            ours <= Duration::from_millis(pttl.max(0) as u64),
            "after {extends} extends: valid_for {ours:?} > PTTL {pttl} ms"
        );
        extends += 1;
    }
    assert!(extends > 100, "{extends}");
    assert!(!guard.is_lost());
}

#[test]
fn a_manual_extend_racing_renewals_never_lets_valid_for_overstate() {
    let server = RedisServer::start();
    let child = spawn_child(
        "child_extends_while_renewals_run",
        &[("REDIS_URL", server.url())],
    );
    finish_child(child, HANG);
}

#[test]
fn a_short_manual_extend_is_renewed_before_it_runs_out() {
    let server = RedisServer::start();
    let (mutex, lost, _) = renewed(server.pool(), "short-extend", Duration::from_secs(3));
    let guard = mutex.lock().unwrap();
    guard.extend(Duration::from_millis(150)).unwrap();
    // Well past the 150 ms: the next renewal came within a third of it, not of 3 s.
    thread::sleep(Duration::from_millis(500));
    let other = RedisMutex::new(server.pool(), "short-extend");
    assert!(
        other.try_lock().unwrap_err().is_would_block(),
        "the lock ran out under a live auto-renewed guard"
    );
    assert!(!guard.is_lost());
    assert!(lost.try_recv().is_err());
}
