//! Auto-renewal: one thread per server renewing every guard on it, compare-and-extend only,
//! lost-lock detection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{HANG, RedisServer, child_env, command_calls, connect, pool_at, spawn_child};
use redis::Commands;
use redis_mutex::{Error, LostLock, LostReason, Pool, RedisMutex, TryLockError};

/// A mutex with auto-renewal whose `on_lost` callback reports on the returned channel.
fn renewed(
    pool: Pool,
    name: &str,
    expire: Duration,
) -> (RedisMutex, mpsc::Receiver<LostLock>, Arc<AtomicUsize>) {
    let (lost_tx, lost_rx) = mpsc::channel();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let lost_tx = std::sync::Mutex::new(lost_tx);
    let mutex = RedisMutex::builder(pool, name)
        .expire(expire)
        .auto_renewal(true)
        .on_lost(move |lost| {
            counter.fetch_add(1, Ordering::SeqCst);
            lost_tx.lock().unwrap().send(lost.clone()).ok();
        })
        .build()
        .unwrap();
    (mutex, lost_rx, calls)
}

/// Child side of [`a_renewed_lease_outlives_its_expiry_many_times`].
#[test]
#[ignore = "run as a child process by a_renewed_lease_outlives_its_expiry_many_times"]
fn child_tries_for_the_renewed_lock() {
    let pool = pool_at(&child_env("REDIS_URL"));
    let mutex = RedisMutex::new(pool, "renewed").unwrap();
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
        module_path!(),
        "child_tries_for_the_renewed_lock",
        &[("REDIS_URL", server.url())],
    );
    // Six expiries' worth of holding.
    thread::sleep(Duration::from_secs(3));
    waiter.finish(HANG);
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

/// How much later than a third of the lease the first renewal may find a reset lock gone on
/// a loaded 2-core machine: a round trip, the callback, scheduling. Well under the sixth of
/// the lease that separates a third from a half.
const RENEWAL_SLACK: Duration = Duration::from_millis(300);

#[test]
fn a_reset_is_noticed_within_one_renewal_interval_and_touches_no_one_else() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = server.pool();
    // A third of it (1 s) and a half (1.5 s) are far apart next to the slack.
    let expire = Duration::from_secs(3);
    let (mutex, lost, calls) = renewed(pool.clone(), "reset-me", expire);
    // Another process: another pool.
    let other = RedisMutex::builder(server.pool(), "reset-me")
        .owner_id("the-next-holder")
        .expire(Duration::from_secs(60))
        .build()
        .unwrap();

    let asked = Instant::now();
    let guard = mutex.lock().unwrap();
    // Reset at once, and taken by another: the first renewal, due a third of the lease
    // after the grant, finds the lock no longer ours.
    assert!(RedisMutex::new(pool, "reset-me").unwrap().reset().unwrap());
    let taken = other.try_lock().unwrap();
    let report = lost.recv_timeout(HANG).expect("on_lost is called");
    let noticed_after = asked.elapsed();
    assert_eq!(report.name, "reset-me");
    assert_eq!(report.owner_id, mutex.owner_id());
    assert_eq!(report.fencing_token, Some(guard.fencing_token()));
    assert_eq!(report.reason, LostReason::TakenOver, "{report:?}");
    assert!(
        noticed_after <= expire / 3 + RENEWAL_SLACK,
        "noticed {noticed_after:?} after the grant; renewals come a third of the \
         {expire:?} lease apart"
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
    let report = lost.recv_timeout(HANG).expect("the guard is marked lost");
    assert_eq!(report.name, "stalled");
    assert_eq!(report.reason, LostReason::Unreachable, "{report:?}");
    assert!(guard.is_lost());
    // Stay stopped well past the lease, so Redis' own clock expires the key.
    thread::sleep(Duration::from_millis(600));
    server.resume();
    // The renewals sent during the stall run now; count from after them.
    crate::support::settle(&server);
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
    // A renewal already on the wire at the drop may still land (it finds the lock gone);
    // four more intervals without one is what stopping means.
    let late = command_calls(&mut conn, "evalsha") - after_drop;
    assert!(
        late <= 1,
        "{late} renewals reached the server after the drop"
    );
    let key_left: bool = conn.exists("lock:short").unwrap();
    assert!(!key_left, "a renewal after the release re-created the lock");
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

/// Child side of [`ten_thousand_guards_on_one_server_share_one_thread_and_few_round_trips`],
/// alone in its process so that the thread count is its own.
#[test]
#[ignore = "run as a child process by ten_thousand_guards_on_one_server_share_one_thread_and_few_round_trips"]
fn child_holds_ten_thousand_renewed_guards() {
    const LOCKS: usize = 10_000;
    let expire = Duration::from_secs(2);
    let url = child_env("REDIS_URL");
    let pool = Pool::builder().max_size(4).build(&url).unwrap();
    let mut conn = connect(&url);
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

/// Renewal runs on one thread per server: every lease on one server, however many, shares
/// one thread and a few batched calls.
#[test]
fn ten_thousand_guards_on_one_server_share_one_thread_and_few_round_trips() {
    let server = RedisServer::start();
    let child = spawn_child(
        module_path!(),
        "child_holds_ten_thousand_renewed_guards",
        &[("REDIS_URL", server.url())],
    );
    let stdout = child.finish(Duration::from_secs(120));
    assert!(stdout.contains("@held"), "the child reported: {stdout}");
    let mut conn = server.connection();
    let left: usize = redis::cmd("DBSIZE").query(&mut conn).unwrap();
    // Only signal lists and grant markers remain, and they expire by themselves.
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
    let pool = pool_at(&child_env("REDIS_URL"));
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
        module_path!(),
        "child_exits_holding_a_renewed_guard",
        &[("REDIS_URL", server.url())],
    );
    let stdout = child.finish(HANG);
    assert!(stdout.contains("@holding"), "the child reported: {stdout}");
    // Its renewals died with it: the lease runs out.
    let expired = crate::support::eventually(Duration::from_secs(5), || {
        !conn.exists::<_, bool>("lock:held-at-exit").unwrap()
    });
    assert!(expired, "the lock outlived its process's renewals");
}

/// Child side of [`a_manual_extend_racing_renewals_never_lets_valid_for_overstate`]: alone
/// in its process, so the renewal thread renews only this lease, and only when it is due.
#[test]
#[ignore = "run as a child process by a_manual_extend_racing_renewals_never_lets_valid_for_overstate"]
fn child_extends_while_renewals_run() {
    let url = child_env("REDIS_URL");
    let pool = pool_at(&url);
    let mut conn = connect(&url);
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
        module_path!(),
        "child_extends_while_renewals_run",
        &[("REDIS_URL", server.url())],
    );
    child.finish(HANG);
}

#[test]
fn a_short_manual_extend_is_renewed_before_it_runs_out() {
    let server = RedisServer::start();
    let (mutex, lost, _) = renewed(server.pool(), "short-extend", Duration::from_secs(3));
    let guard = mutex.lock().unwrap();
    guard.extend(Duration::from_millis(150)).unwrap();
    // Well past the 150 ms: the next renewal came within a third of it, not of 3 s.
    thread::sleep(Duration::from_millis(500));
    let other = RedisMutex::new(server.pool(), "short-extend").unwrap();
    assert!(
        other.try_lock().unwrap_err().is_would_block(),
        "the lock ran out under a live auto-renewed guard"
    );
    assert!(!guard.is_lost());
    assert!(lost.try_recv().is_err());
}

/// Renewal runs on one thread per server: a server that stops answering holds up the
/// renewals of its own leases, and no others.
#[test]
fn a_stalled_server_does_not_delay_renewals_of_leases_on_another() {
    let healthy = RedisServer::start();
    let mut stalled = RedisServer::start();
    let mut conn = healthy.connection();
    // Renewed every 100 ms: a renewal held up by a third of a second loses it.
    let short = Duration::from_millis(300);
    let (kept, kept_lost, _) = renewed(healthy.pool(), "kept", short);
    // Its renewal, due half a second after the grant, waits on the stalled server until its
    // lease runs out, a second later.
    let (stuck, stuck_lost, _) = renewed(stalled.pool(), "stuck", Duration::from_millis(1500));
    let kept_guard = kept.lock().unwrap();
    let stuck_guard = stuck.lock().unwrap();
    stalled.pause();

    let renewals_before = command_calls(&mut conn, "evalsha");
    let started = Instant::now();
    let mut samples = 0;
    // Past the stuck lease's end: its renewal hung on the stalled server all along.
    while started.elapsed() < Duration::from_millis(2000) {
        let pttl: i64 = conn.pttl("lock:kept").unwrap();
        assert!(
            pttl > 0,
            "the lease on the healthy server ran out {:?} into the stall (PTTL {pttl})",
            started.elapsed()
        );
        assert!(
            !kept_guard.is_lost(),
            "lost {:?} into the stall",
            started.elapsed()
        );
        samples += 1;
        // Pacing the samples: time passing is what this test is about.
        thread::sleep(Duration::from_millis(20));
    }
    let renewals = command_calls(&mut conn, "evalsha") - renewals_before;
    // About 20 in 2 s; far fewer on a loaded machine, but more than none.
    assert!(
        renewals >= 5,
        "{renewals} renewals of the healthy lease during the stall"
    );
    assert!(samples > 10, "{samples}");
    kept_guard.ensure_held().unwrap();
    assert!(
        kept_lost.try_recv().is_err(),
        "on_lost was called for the healthy lease"
    );

    // The stall did hold up the other lane: its lease ran out unrenewed.
    let report = stuck_lost
        .recv_timeout(HANG)
        .expect("the stalled lease is lost");
    assert_eq!(report.name, "stuck");
    assert_eq!(report.reason, LostReason::Unreachable, "{report:?}");
    assert!(stuck_guard.is_lost());
    stalled.resume();
    assert!(matches!(stuck_guard.unlock(), Err(Error::LockLost { .. })));
    kept_guard.unlock().unwrap();
}
