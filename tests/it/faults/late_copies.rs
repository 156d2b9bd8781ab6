//! A lock request's first copy that reaches the server after its own undo. A request whose
//! connection closed before its reply is undone on another connection and sent again
//! (docs/mutex.md, "Replies that never come"); its first copy may still sit in a proxy or a
//! socket buffer. Here the resend finds the lock held, waits and gives up at its deadline;
//! the holder releases; only then does the first copy reach the server. Whatever it does
//! there, it must not leave a grant that nobody holds until its lease ends (forever for a
//! mutex without expiry): either it is refused, or its grant is given back or reclaimable,
//! so that another client gets the lock promptly, and once everyone released no key is left
//! without an expiry. Every kind: mutex in both modes, read lock, write lock, semaphore.
//!
//! The proxy (`HoldingProxy`, tests/support/proxy.rs) holds the first copy and hangs up on
//! the client at once, keeping its connection to the server open to deliver the copy late.

use std::time::{Duration, Instant};

use crate::support::proxy::HoldingProxy;
use crate::support::{HANG, RedisServer};
use redis::Commands;
use redis_mutex::{Pool, RedisMutex, RedisRwLock, RedisSemaphore, TryLockError};

/// The requester's response timeout.
const RT: Duration = Duration::from_secs(1);

/// The requester's wait: its resend finds the lock held and gives up after this.
const WAIT: Duration = Duration::from_millis(800);

/// How long another client may take to get the lock once the late copy has run: about a
/// second for a grant that is given back, plus slack for a loaded 2-core machine. A grant
/// held by nobody would keep it out for its whole lease (30 s, or forever).
const PROMPT: Duration = Duration::from_secs(2);

/// How long the other client tries: well past `PROMPT`, so that a late success is measured.
const PATIENCE: Duration = Duration::from_secs(4);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Mutex,
    FairMutex,
    Read,
    Write,
    Semaphore,
}

/// What a call returned, reduced to whether it granted.
type Outcome = Result<(), TryLockError>;

/// One kind: `hold` takes the lock for another client (straight to the server) and returns
/// its release; `request` is the requester's timed call through the proxy; `take` another
/// client's timed call, which must get the lock promptly and release it.
struct Scenario<'a> {
    kind: Kind,
    /// The keys that hold grants; none may be left once everyone released.
    holder_keys: Vec<String>,
    hold: Box<dyn FnOnce() -> Box<dyn FnOnce() + 'a> + 'a>,
    request: Box<dyn FnOnce() -> Outcome + 'a>,
    take: Box<dyn FnOnce(Duration) -> Outcome + 'a>,
}

fn late_first_copy(server: &RedisServer, proxy: &HoldingProxy, name: &str, scenario: Scenario) {
    let kind = scenario.kind;
    let release_hold = (scenario.hold)();
    // Now the requester's next script call (its first attempt) is held and its connection
    // closed: it undoes on another connection, sends again, waits and gives up.
    proxy.hold_next_containing(b"EVAL");
    let accepted = proxy.accepted();
    let called = Instant::now();
    let requested = (scenario.request)();
    let took = called.elapsed();
    println!(
        "{kind:?}: the request, its first copy held, returned after {took:?} ({} new \
         connections): {requested:?}",
        proxy.accepted() - accepted
    );
    assert!(
        !matches!(requested, Ok(())),
        "{kind:?}: the requester got a lock another client held"
    );
    let held = proxy
        .held(Duration::ZERO)
        .unwrap_or_else(|| panic!("{kind:?}: the proxy held no request"));
    let held_text = String::from_utf8_lossy(&held).to_uppercase();
    assert!(
        held_text.contains("EVAL"),
        "{kind:?}: the request held is not a script call (the lock request): {held_text:?}"
    );
    // The holder lets go; then the first copy reaches the server.
    release_hold();
    let reply = proxy
        .deliver_held(HANG)
        .unwrap_or_else(|| panic!("{kind:?}: the late first copy got no reply"));
    println!(
        "{kind:?}: the late first copy's reply: {:?}",
        String::from_utf8_lossy(&reply)
    );
    // Another client gets the lock promptly.
    let started = Instant::now();
    let taken = (scenario.take)(PATIENCE);
    let waited = started.elapsed();
    println!("{kind:?}: another client's attempt returned after {waited:?}: {taken:?}");
    assert!(
        taken.is_ok() && waited <= PROMPT,
        "{kind:?}: after the requester's first copy ran late, another client waited \
         {waited:?} for the lock (allowed: {PROMPT:?}) and got: {taken:?}; a grant held by \
         nobody keeps it out until its lease ends"
    );
    // Everyone released: no grant left, and every key of the lock expires.
    let mut conn = server.connection();
    for key in &scenario.holder_keys {
        let left: bool = conn.exists(key).unwrap();
        assert!(!left, "{kind:?}: `{key}` is left once everyone released");
    }
    let keys: Vec<String> = conn.keys(format!("*{name}*")).unwrap();
    for key in keys {
        let pttl: i64 = conn.pttl(&key).unwrap();
        assert!(
            pttl > 0 || pttl == -2,
            "{kind:?}: `{key}` is left without an expiry (PTTL {pttl}) once everyone released"
        );
    }
}

/// The requester's pool: through the holding proxy.
fn requester_pool(proxy: &HoldingProxy) -> Pool {
    proxy.pool_with(Pool::builder().max_size(4).min_idle(0).response_timeout(RT))
}

fn mutex_scenario(kind: Kind) {
    let server = RedisServer::start();
    let proxy = HoldingProxy::start(server.port());
    let name = "late-copy";
    let fair = kind == Kind::FairMutex;
    // No expiry anywhere: a grant held by nobody would stay forever.
    let build = |pool: Pool| RedisMutex::builder(pool, name).fair(fair).build().unwrap();
    let holder = build(server.pool());
    let requester = build(requester_pool(&proxy));
    let other = build(server.pool());
    let scenario = Scenario {
        kind,
        holder_keys: vec![format!("lock:{name}")],
        hold: Box::new(|| {
            let guard = holder.lock().unwrap();
            // The requester's connection, opened and used just now (a connection idle for a
            // second is checked first, and that check would be the request held).
            assert!(requester.try_lock().is_err(), "{kind:?}: not held");
            Box::new(move || guard.unlock().unwrap())
        }),
        request: Box::new(|| requester.try_lock_for(WAIT).map(drop)),
        take: Box::new(|patience| {
            other
                .try_lock_for(patience)
                .map(|g| g.unlock().expect("the other client's unlock"))
        }),
    };
    late_first_copy(&server, &proxy, name, scenario);
}

fn rwlock_scenario(kind: Kind) {
    let server = RedisServer::start();
    let proxy = HoldingProxy::start(server.port());
    let name = "late/copy";
    let holder = RedisRwLock::new(server.pool(), name).unwrap();
    let requester = RedisRwLock::new(requester_pool(&proxy), name).unwrap();
    let other = RedisRwLock::new(server.pool(), name).unwrap();
    let scenario = Scenario {
        kind,
        holder_keys: ["w", "r", "wb", "rb"]
            .iter()
            .flat_map(|set| {
                [
                    format!("rwlock:{set}:late/copy"),
                    format!("rwlock:{set}:late"),
                ]
            })
            .collect(),
        hold: Box::new(|| {
            let guard = holder.write().unwrap();
            assert!(requester.try_write().is_err(), "{kind:?}: not held");
            Box::new(move || guard.unlock().unwrap())
        }),
        request: Box::new(|| match kind {
            Kind::Read => requester.try_read_for(WAIT).map(drop),
            _ => requester.try_write_for(WAIT).map(drop),
        }),
        // A writer: a read grant left behind keeps it out as a write grant does.
        take: Box::new(|patience| {
            other
                .try_write_for(patience)
                .map(|g| g.unlock().expect("the other client's unlock"))
        }),
    };
    late_first_copy(&server, &proxy, "late", scenario);
}

fn semaphore_scenario() {
    let server = RedisServer::start();
    let proxy = HoldingProxy::start(server.port());
    let name = "late-copy";
    let holder = RedisSemaphore::new(server.pool(), name, 1).unwrap();
    let requester = RedisSemaphore::new(requester_pool(&proxy), name, 1).unwrap();
    let other = RedisSemaphore::new(server.pool(), name, 1).unwrap();
    let scenario = Scenario {
        kind: Kind::Semaphore,
        holder_keys: vec![format!("semaphore:{name}")],
        hold: Box::new(|| {
            let permit = holder.acquire().unwrap();
            assert!(requester.try_acquire().is_err(), "not held");
            Box::new(move || permit.release().unwrap())
        }),
        request: Box::new(|| requester.try_acquire_for(WAIT).map(drop)),
        take: Box::new(|patience| {
            other
                .try_acquire_for(patience)
                .map(|p| p.release().expect("the other client's release"))
        }),
    };
    late_first_copy(&server, &proxy, name, scenario);
}

/// A mutex without expiry: the late first copy of a request undone and given up must not
/// leave the lock held by nobody, forever.
#[test]
fn a_late_first_copy_of_a_mutex_request_leaves_no_grant_held_by_nobody() {
    mutex_scenario(Kind::Mutex);
}

/// The same in fair mode (without expiry).
#[test]
fn a_late_first_copy_of_a_fair_mutex_request_leaves_no_grant_held_by_nobody() {
    mutex_scenario(Kind::FairMutex);
}

/// The same for a read lock (its lease, 30 s by default, would keep a writer out).
#[test]
fn a_late_first_copy_of_a_read_request_leaves_no_grant_held_by_nobody() {
    rwlock_scenario(Kind::Read);
}

/// The same for a write lock.
#[test]
fn a_late_first_copy_of_a_write_request_leaves_no_grant_held_by_nobody() {
    rwlock_scenario(Kind::Write);
}

/// The same for a semaphore permit (capacity 1, 30 s lease by default).
#[test]
fn a_late_first_copy_of_a_semaphore_request_leaves_no_grant_held_by_nobody() {
    semaphore_scenario();
}
