//! Fair mode: grants in the order of arrival across processes, direct handoff inside the
//! release, and waiters that crash, pause or give up holding nobody up.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::proxy::FaultProxy;
use crate::support::{HANG, Lines, RedisServer, child_env, eventually, signal, spawn, spawn_child};
use redis::Commands;
use redis_mutex::{Pool, RedisMutex, reset_all};

fn fair(pool: Pool, name: &str) -> RedisMutex {
    RedisMutex::builder(pool, name)
        .fair(true)
        .expire(Duration::from_secs(2))
        .build()
        .unwrap()
}

fn queued(conn: &mut redis::Connection, name: &str) -> usize {
    conn.llen(format!("lock-queue:{name}")).unwrap()
}

/// A fair waiter in its own process: takes the lock, says so with the time, holds it a
/// moment, releases.
#[test]
#[ignore = "a child process of the fair-mode tests"]
fn fair_waiter() {
    let pool = crate::support::pool_at(&child_env("REDIS_URL"));
    let mutex = fair(pool, &child_env("NAME"));
    let guard = mutex.lock().unwrap();
    println!("@granted {}", guard.fencing_token());
    std::thread::sleep(Duration::from_millis(30));
    guard.unlock().unwrap();
}

#[test]
fn grants_follow_the_order_of_arrival_across_processes() {
    const WAITERS: usize = 5;
    let server = RedisServer::start();
    let mut conn = server.connection();
    let holder = fair(server.pool(), "fifo");
    let guard = holder.lock().unwrap();
    let env = [("REDIS_URL", server.url()), ("NAME", "fifo".to_owned())];
    // Each waiter starts once the one before it is queued: the order of arrival is known.
    let mut children = Vec::new();
    for i in 0..WAITERS {
        let mut child = spawn_child(module_path!(), "fair_waiter", &env);
        let lines = child.lines();
        children.push((child, lines));
        assert!(
            eventually(HANG, || queued(&mut conn, "fifo") == i + 1),
            "waiter {i} did not queue"
        );
    }
    let first_token = guard.fencing_token();
    guard.unlock().unwrap();
    let mut tokens = Vec::new();
    for (child, lines) in children {
        let token: u64 = lines.expect("@granted ", HANG).trim().parse().unwrap();
        tokens.push(token);
        child.finish_with(&lines, HANG);
    }
    // Handed over in order: tokens rise with every grant, so the waiters' tokens, read in
    // the order they came, rise too.
    assert!(tokens[0] > first_token, "{first_token} then {tokens:?}");
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "grants out of arrival order: {tokens:?}"
    );
}

#[test]
fn a_release_hands_the_lock_to_the_waiter_inside_the_release() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let holder = fair(server.pool(), "handoff");
    let guard = holder.lock().unwrap();
    let waiter = fair(server.pool(), "handoff");
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let waiting = spawn("waiter", move || {
        let guard = waiter.lock().unwrap();
        let at = Instant::now();
        let owner = waiter.get_owner_id().unwrap();
        release_rx.recv_timeout(HANG).unwrap();
        (
            guard.fencing_token(),
            at,
            owner == Some(waiter.owner_id().to_owned()),
        )
    });
    assert!(eventually(HANG, || queued(&mut conn, "handoff") == 1));
    let token = guard.fencing_token();
    let signals = crate::support::command_calls(&mut conn, "lpush");
    let released = Instant::now();
    guard.unlock().unwrap();
    // The lock went straight to the waiter: it never was free, and no signal went out.
    let owner: Option<String> = conn.get("lock:handoff").unwrap();
    assert!(
        owner.is_some(),
        "the lock was free after a release with a waiter queued"
    );
    assert_eq!(
        crate::support::command_calls(&mut conn, "lpush"),
        signals,
        "the release signalled"
    );
    release_tx.send(()).unwrap();
    let (next, at, ours) = waiting.join(HANG);
    assert!(next > token, "{token} then {next}");
    assert!(ours, "the waiter holds the lock under its own owner id");
    assert!(
        at - released < Duration::from_millis(500),
        "{:?}",
        at - released
    );
}

#[test]
fn a_killed_waiter_holds_the_lock_up_for_one_lease_at_most() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let holder = fair(server.pool(), "killed");
    let guard = holder.lock().unwrap();
    let env = [("REDIS_URL", server.url()), ("NAME", "killed".to_owned())];
    let doomed = spawn_child(module_path!(), "fair_waiter", &env);
    assert!(eventually(HANG, || queued(&mut conn, "killed") == 1));
    let next = fair(server.pool(), "killed");
    let waiting = spawn("next waiter", move || {
        let got = next.try_lock_for(Duration::from_secs(10)).map(drop).is_ok();
        (got, Instant::now())
    });
    assert!(eventually(HANG, || queued(&mut conn, "killed") == 2));
    doomed.kill();
    // Released at once, the dead waiter's entry is still fresh: the lock may go to it, and
    // then stays with it for its 2 s lease at most.
    let released = Instant::now();
    guard.unlock().unwrap();
    let (got, at) = waiting.join(HANG);
    assert!(got, "the live waiter never got the lock");
    assert!(
        at - released < Duration::from_secs(2) + Duration::from_millis(1500),
        "the dead waiter held the lock up for {:?}",
        at - released
    );
}

#[test]
fn a_paused_waiter_at_the_head_is_skipped() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let holder = fair(server.pool(), "paused");
    let guard = holder.lock().unwrap();
    let env = [("REDIS_URL", server.url()), ("NAME", "paused".to_owned())];
    let mut head = spawn_child(module_path!(), "fair_waiter", &env);
    let head_lines = head.lines();
    assert!(eventually(HANG, || queued(&mut conn, "paused") == 1));
    let next = fair(server.pool(), "paused");
    let waiting = spawn("second waiter", move || {
        let guard = next.try_lock_for(Duration::from_secs(10)).unwrap();
        let at = Instant::now();
        drop(guard);
        at
    });
    assert!(eventually(HANG, || queued(&mut conn, "paused") == 2));
    signal(head.id(), "STOP");
    // Once its entry went stale (1 s without a refresh), the release skips it.
    std::thread::sleep(Duration::from_millis(1500));
    let released = Instant::now();
    guard.unlock().unwrap();
    let at = waiting.join(HANG);
    assert!(
        at - released < Duration::from_millis(300),
        "the second waiter got the lock {:?} after the release",
        at - released
    );
    // The paused one, resumed, waits its turn again and gets the lock.
    signal(head.id(), "CONT");
    head_lines.expect("@granted", HANG);
    head.finish_with(&head_lines, HANG);
}

#[test]
fn a_waiter_that_gives_up_while_the_lock_is_handed_to_it_passes_it_on() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let mut conn = server.connection();
    let holder = fair(server.pool(), "given-up");
    let guard = holder.lock().unwrap();
    // The one that gives up talks through the proxy, which will hold its wake-up back.
    let slow = RedisMutex::builder(
        proxy.pool_with(Pool::builder().response_timeout(Duration::from_millis(200))),
        "given-up",
    )
    .fair(true)
    .expire(Duration::from_secs(30))
    .build()
    .unwrap();
    let giving_up = spawn("slow waiter", move || {
        slow.try_lock_for(Duration::from_millis(800))
            .map(drop)
            .is_ok()
    });
    assert!(eventually(HANG, || queued(&mut conn, "given-up") == 1));
    let patient = fair(server.pool(), "given-up");
    let waiting = spawn("patient waiter", move || {
        patient.try_lock_for(HANG).map(drop).is_ok()
    });
    assert!(eventually(HANG, || queued(&mut conn, "given-up") == 2));
    // The release hands the lock to the slow waiter, whose wake-up the proxy holds until
    // its deadline has passed.
    proxy.stall();
    guard.unlock().unwrap();
    let owner: Option<String> = conn.get("lock:given-up").unwrap();
    assert!(owner.is_some(), "handed over");
    assert!(!giving_up.join(HANG), "the slow waiter cannot have got it");
    proxy.heal();
    // Its leave passes the grant on: the patient waiter gets it, well within the 30 s
    // lease the slow waiter would otherwise have held it for.
    assert!(waiting.join(HANG), "the lock was left held by nobody");
}

#[test]
fn fencing_renewal_and_reset_work_in_fair_mode() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let renewed = RedisMutex::builder(server.pool(), "fair-renewed")
        .fair(true)
        .expire(Duration::from_millis(300))
        .auto_renewal(true)
        .build()
        .unwrap();
    let guard = renewed.lock().unwrap();
    let first = guard.fencing_token();
    std::thread::sleep(Duration::from_millis(1000));
    guard.ensure_held().unwrap();
    assert!(!guard.is_lost());
    let waiter = fair(server.pool(), "fair-renewed");
    let waiting = spawn("waiter", move || waiter.lock().unwrap().fencing_token());
    assert!(eventually(HANG, || queued(&mut conn, "fair-renewed") == 1));
    // A reset frees the lock and wakes the queue: the waiter gets it.
    assert!(renewed.reset().unwrap());
    let second = waiting.join(HANG);
    assert!(second > first);
    // The holder is told by its next renewal, a third of the lease later.
    assert!(
        eventually(HANG, || guard.is_lost()),
        "the reset lock was never found lost"
    );
    drop(guard);
    // reset_all leaves no lock behind in fair mode either.
    let held = fair(server.pool(), "fair-reset-all");
    let kept = held.lock().unwrap();
    assert!(reset_all(&server.pool()).unwrap() >= 1);
    assert!(!held.is_locked().unwrap());
    drop(kept);
}

/// python-redis-lock holds, a fair waiter waits; python's release (which knows nothing of
/// the queue) wakes the fair waiter through the signal list.
const PYTHON_HOLDER: &str = r#"
import sys, redis, redis_lock
port, name = int(sys.argv[1]), sys.argv[2]
lock = redis_lock.Lock(redis.StrictRedis(host="127.0.0.1", port=port), name, id="python")
assert lock.acquire(blocking=True)
print("@locked", flush=True)
sys.stdin.readline()
lock.release()
"#;

#[test]
fn a_client_that_is_not_fair_still_excludes_and_wakes_fair_waiters() {
    let server = RedisServer::start();
    let mut python = Command::new(crate::support::python::python())
        .args(["-c", PYTHON_HOLDER, &server.port().to_string(), "mixed"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run python");
    let lines = Lines::new(python.stdout.take().unwrap());
    lines.expect("@locked", HANG);
    let waiter = fair(server.pool(), "mixed");
    assert!(waiter.try_lock().is_err(), "python holds it");
    let waiting = spawn("fair waiter", move || {
        let got = waiter
            .try_lock_for(Duration::from_secs(10))
            .map(drop)
            .is_ok();
        (got, Instant::now())
    });
    let mut conn = server.connection();
    assert!(eventually(HANG, || queued(&mut conn, "mixed") == 1));
    let released = Instant::now();
    writeln!(python.stdin.as_mut().unwrap()).unwrap();
    let (got, at) = waiting.join(HANG);
    assert!(got);
    assert!(
        at - released < Duration::from_millis(500),
        "woken {:?} after python's release",
        at - released
    );
    assert!(crate::support::wait_or_kill(&mut python, HANG).success());

    // A fair and a plain mutex exclude each other.
    let plain = RedisMutex::new(server.pool(), "mixed").unwrap();
    let fair_one = fair(server.pool(), "mixed");
    let held = fair_one.lock().unwrap();
    assert!(plain.try_lock().is_err());
    drop(held);
    let held = plain.lock().unwrap();
    assert!(fair_one.try_lock().is_err());
    drop(held);
}

/// `fair.lua` driven by hand, as the crate sends it: the protocol's own replays of what a
/// waiter's connection may do between its calls (a wait that ended, a wake-up whose reply
/// was lost). See the script's header for its keys and arguments.
struct FairScript {
    conn: redis::Connection,
    name: String,
    script: redis::Script,
}

impl FairScript {
    fn new(server: &RedisServer, name: &str) -> FairScript {
        FairScript {
            conn: server.connection(),
            name: name.to_owned(),
            script: crate::support::script("mutex/fair.lua"),
        }
    }

    fn wake(&self, waiter: &str) -> String {
        format!("lock-wake:{}:{waiter}", self.name)
    }

    /// One call: `op` for the client `owner` waiting as `waiter`, with a grant's expiry of
    /// `expire_ms` (0: none) and a queue entry living 1 s.
    fn call(&mut self, op: &str, owner: &str, waiter: &str, expire_ms: u64, token: i64) -> Value {
        let n = &self.name;
        self.script
            .key(format!("lock:{n}"))
            .key(format!("lock-signal:{n}"))
            .key("lock-fencing-counter")
            .key(format!("lock-grant:{n}"))
            .key(format!("lock-queue:{n}"))
            .key(format!("lock-waiters:{n}"))
            .key(self.wake(waiter))
            .key(format!("lock-released:{n}"))
            .arg(op)
            .arg(owner)
            .arg(waiter)
            .arg(expire_ms)
            .arg(1000)
            .arg(10_000)
            .arg(format!("lock-wake:{n}:"))
            .arg(1000)
            .arg(token)
            .arg(3000)
            .arg(10_000)
            .arg(format!("lock-done:{n}:"))
            .invoke(&mut self.conn)
            .unwrap()
    }

    /// An acquire: `(outcome, detail)`.
    fn acquire(&mut self, owner: &str, waiter: &str, expire_ms: u64) -> (i64, i64) {
        let reply = self.call("acquire", owner, waiter, expire_ms, 0);
        redis::from_redis_value(reply).unwrap()
    }

    /// A release by `owner` of the grant with `token`, made for the waiter `waiter`.
    fn release(&mut self, owner: &str, waiter: &str, token: i64) -> i64 {
        redis::from_redis_value(self.call("release", owner, waiter, 0, token)).unwrap()
    }
}

use redis::Value;

/// Issue 23, finding 3: a release that lands between a waiter's wait and its next attempt
/// hands the lock to the waiter; that attempt must claim the grant, not queue the waiter
/// again, or the waiter's own release hands the lock to its own stale entry, to be held by
/// nobody for the whole expiry (forever without one).
#[test]
fn an_attempt_after_a_missed_handoff_claims_it_and_the_release_frees_the_lock() {
    let server = RedisServer::start();
    let mut fair = FairScript::new(&server, "missed");
    let mut conn = server.connection();
    let (granted, first) = fair.acquire("holder", "h1", 0);
    assert_eq!(granted, 1);
    assert_eq!(fair.acquire("waiter", "w1", 0), (0, -1), "queued");
    // The waiter's BLPOP has ended; the release hands the lock to it meanwhile.
    assert_eq!(fair.release("holder", "h1", first), 2, "handed over");
    let (outcome, token) = fair.acquire("waiter", "w1", 0);
    assert_eq!(
        outcome, 1,
        "the waiter's next attempt claims the grant handed to it"
    );
    assert!(token > first);
    let wake_left: bool = conn.exists(fair.wake("w1")).unwrap();
    assert!(!wake_left, "the claimed grant's wake-up is gone");
    assert_eq!(
        queued(&mut conn, "missed"),
        0,
        "the waiter is not queued again"
    );
    assert_eq!(
        fair.release("waiter", "w1", token),
        1,
        "released, nobody queued"
    );
    let owner: Option<String> = conn.get("lock:missed").unwrap();
    assert_eq!(owner, None, "the lock is free, not handed to a stale entry");
}

/// Issue 23, finding 4: a `BLPOP` that popped its grant but whose reply was lost (a `PING`
/// sent behind it, a `CLIENT UNBLOCK` racing it): the next attempt claims the grant from the
/// lock and its marker, so the lock is not left held by nobody.
#[test]
fn a_grant_whose_wake_up_was_lost_is_claimed_by_the_next_attempt() {
    let server = RedisServer::start();
    let mut fair = FairScript::new(&server, "lost-wake");
    let mut conn = server.connection();
    let (_, first) = fair.acquire("holder", "h1", 0);
    assert_eq!(fair.acquire("waiter", "w1", 0), (0, -1));
    assert_eq!(fair.release("holder", "h1", first), 2);
    // The waiter's BLPOP pops the wake-up; its reply never reaches the waiter.
    let popped: Option<String> = conn.lpop(fair.wake("w1"), None).unwrap();
    assert!(popped.is_some());
    let (outcome, token) = fair.acquire("waiter", "w1", 30_000);
    assert_eq!(outcome, 1, "claimed from the lock and its marker");
    assert_eq!(
        Some(token.to_string()),
        popped,
        "the grant the wake-up carried"
    );
    let pttl: i64 = conn.pttl("lock:lost-wake").unwrap();
    assert!(
        pttl > 29_000,
        "a claimed grant's expiry is set anew: PTTL {pttl}"
    );
    // Someone else's attempt claims nothing.
    assert_eq!(fair.acquire("other", "o1", 0).0, 0);
}

/// Issue 23, finding 1 (the third cause): a wake-up left in a waiter's list after its grant
/// expired and went to someone else must never be taken for a grant. An attempt that does
/// not grant empties the waiter's wake list, so that the `BLPOP` after it only sees grants
/// made since.
#[test]
fn a_stale_wake_up_is_dropped_by_the_next_attempt() {
    let server = RedisServer::start();
    let mut fair = FairScript::new(&server, "stale");
    let mut conn = server.connection();
    let (_, first) = fair.acquire("holder", "h1", 0);
    assert_eq!(fair.acquire("waiter", "w1", 50).0, 0);
    assert_eq!(
        fair.release("holder", "h1", first),
        2,
        "handed to the waiter, 50 ms"
    );
    assert!(
        eventually(HANG, || !conn.exists::<_, bool>("lock:stale").unwrap()),
        "the waiter's 50 ms grant never ran out"
    );
    assert_eq!(
        fair.acquire("newcomer", "n1", 0).0,
        1,
        "the newcomer takes it"
    );
    let stale: bool = conn.exists(fair.wake("w1")).unwrap();
    assert!(stale, "the expired grant's wake-up is still there");
    assert_eq!(
        fair.acquire("waiter", "w1", 50).0,
        0,
        "held by the newcomer"
    );
    let stale: bool = conn.exists(fair.wake("w1")).unwrap();
    assert!(
        !stale,
        "the attempt left a stale wake-up for its BLPOP to take"
    );
}

/// A lock without expiry handed to a waiter that died before it took it: the handoff's
/// provisional expiry frees it a few seconds later, instead of never.
#[test]
fn a_killed_waiter_of_a_lock_without_expiry_holds_it_up_for_seconds_not_forever() {
    let server = RedisServer::start();
    let mut fair = FairScript::new(&server, "forever");
    let mut conn = server.connection();
    let (_, first) = fair.acquire("holder", "h1", 0);
    assert_eq!(fair.acquire("doomed", "d1", 0).0, 0, "queued");
    // The waiter dies; its entry is still fresh when the release comes.
    assert_eq!(
        fair.release("holder", "h1", first),
        2,
        "handed to the dead waiter"
    );
    let pttl: i64 = conn.pttl("lock:forever").unwrap();
    assert!(
        (1..=3000).contains(&pttl),
        "a handoff of a lock without expiry lives until claimed, 3 s at most: PTTL {pttl}"
    );
    // A live waiter that claims it lifts the provisional expiry.
    assert_eq!(fair.acquire("doomed", "d1", 0).0, 1, "claimed");
    let pttl: i64 = conn.pttl("lock:forever").unwrap();
    assert_eq!(pttl, -1, "claimed, the lock has no expiry again");
}

/// Issue 25, finding 6: a release sent again after its connection dropped (its first reply
/// lost) found the lock gone and reported `NotAcquired` for a release that happened. The
/// release leaves a tombstone naming its grant's token for a moment: sent twice, it is told
/// it happened; a release of a grant that expired or was reset still is not.
#[test]
fn a_release_sent_twice_is_told_it_happened_in_either_mode() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    // Fair mode, by hand.
    let mut fair = FairScript::new(&server, "twice-fair");
    let (_, token) = fair.acquire("holder", "h1", 0);
    assert_eq!(fair.release("holder", "h1", token), 1);
    assert_eq!(
        fair.release("holder", "h1", token),
        1,
        "the same release, sent again"
    );
    // Another grant is acquired and released; the first release, sent again, still
    // happened.
    let (_, other) = fair.acquire("holder", "h2", 0);
    assert_eq!(fair.release("holder", "h2", other), 1);
    assert_eq!(
        fair.release("holder", "h1", token),
        1,
        "the first release, sent again after another grant's"
    );
    assert_eq!(
        fair.release("holder", "h3", token + 1),
        0,
        "a grant never made"
    );
    // The default mode, by hand, as the crate sends it.
    let release = crate::support::script("mutex/release.lua");
    let grant = |conn: &mut redis::Connection, attempt: &str, token: u64| {
        let _: () = conn.set("lock:twice", "holder").unwrap();
        let _: () = conn
            .set("lock-grant:twice", format!("{attempt}|{token}|holder"))
            .unwrap();
    };
    let send = |conn: &mut redis::Connection, attempt: &str, token: u64| -> i64 {
        release
            .key("lock:twice")
            .key("lock-signal:twice")
            .key("lock-grant:twice")
            .key("lock-released:twice")
            .key(format!("lock-done:twice:{attempt}"))
            .arg("holder")
            .arg(1000)
            .arg(token)
            .arg(10_000)
            .invoke(conn)
            .unwrap()
    };
    grant(&mut conn, "a1", 7);
    assert_eq!(send(&mut conn, "a1", 7), 1);
    assert_eq!(send(&mut conn, "a1", 7), 1, "the same release, sent again");
    grant(&mut conn, "a2", 8);
    assert_eq!(send(&mut conn, "a2", 8), 1);
    assert_eq!(
        send(&mut conn, "a1", 7),
        1,
        "the first release, sent again after another grant's"
    );
    assert_eq!(send(&mut conn, "a3", 9), 0, "a grant never made");
    let ttl: i64 = conn.pttl("lock-released:twice").unwrap();
    assert!(
        ttl > 0 && ttl <= 10_000,
        "the tombstone expires: PTTL {ttl}"
    );
}
