//! A release sent twice is told it happened, in every kind, also when another grant was
//! made and released in between: A releases its grant, the reply is lost with its
//! connection (the fault proxy closes it just before the reply), meanwhile B acquires and
//! releases, and A's release, sent again on another connection, reaches the server after
//! B's: it must answer "released" (`Ok`), not "not acquired" or "lock lost". A mutex
//! remembered only the last release (`lock-released:<name>` holds one token), so B's
//! release made it forget A's; the read-write lock and the semaphore remember releases as a
//! set (docs/rwlock.md and docs/semaphore.md, `released` keys).

use std::time::{Duration, Instant};

use crate::support::proxy::FaultProxy;
use crate::support::{HANG, RedisServer, eventually, script_calls, spawn};
use redis::Commands;
use redis_mutex::{Pool, RedisMutex, RedisRwLock, RedisSemaphore};

/// Added each way while A releases: the window in which B acquires and releases, between A's
/// first release reaching the server and its second copy doing so (at least two of these
/// after A's call began).
const LATENCY: Duration = Duration::from_millis(250);

/// A's response timeout: room for the release, the cut, and the release sent again, each
/// way delayed by `LATENCY`.
const RT: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Mutex,
    FairMutex,
    Read,
    Write,
    Semaphore,
}

/// A's pool: through the proxy, connections opened on demand.
fn pool_a(proxy: &FaultProxy) -> Pool {
    proxy.pool_with(Pool::builder().max_size(4).min_idle(0).response_timeout(RT))
}

/// B's whole cycle, on its own pool, straight to the server: once A's first release has
/// run (`held_key` is gone), acquire (one attempt) and release. Returns when B was done.
fn b_cycle(
    server: &RedisServer,
    kind: Kind,
    name: &'static str,
    held_key: String,
) -> crate::support::Task<Result<Instant, String>> {
    let url = server.url();
    let pool = server.pool();
    spawn("B", move || {
        let mut conn = crate::support::connect(&url);
        let released = eventually(HANG, || !conn.exists::<_, bool>(&held_key).unwrap());
        if !released {
            return Err(format!("A's first release never ran ({held_key} stayed)"));
        }
        let cycle = match kind {
            Kind::Mutex | Kind::FairMutex => {
                let b = RedisMutex::builder(pool, name)
                    .fair(kind == Kind::FairMutex)
                    .build()
                    .unwrap();
                b.try_lock()
                    .map_err(|e| e.to_string())
                    .and_then(|g| g.unlock().map_err(|e| e.to_string()))
            }
            Kind::Read | Kind::Write => {
                let b = RedisRwLock::new(pool, name).unwrap();
                b.try_write()
                    .map_err(|e| e.to_string())
                    .and_then(|g| g.unlock().map_err(|e| e.to_string()))
            }
            Kind::Semaphore => {
                let b = RedisSemaphore::new(pool, name, 1).unwrap();
                b.try_acquire()
                    .map_err(|e| e.to_string())
                    .and_then(|p| p.release().map_err(|e| e.to_string()))
            }
        };
        cycle
            .map(|()| Instant::now())
            .map_err(|e| format!("B's acquire and release: {e}"))
    })
}

/// A's grant is held; A releases through a proxy that delays each way by `LATENCY` and
/// cuts the release's reply; B acquires and releases meanwhile; A's release, sent again,
/// must be told it happened.
fn a_release_sent_twice(kind: Kind) {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let pool = pool_a(&proxy);
    let name = "twice";
    let held_key = match kind {
        Kind::Mutex | Kind::FairMutex => format!("lock:{name}"),
        Kind::Read => format!("rwlock:r:{name}"),
        Kind::Write => format!("rwlock:w:{name}"),
        Kind::Semaphore => format!("semaphore:{name}"),
    };
    // Each kind takes and releases once first, so that its scripts are loaded: the reply
    // cut off is the release's own, not a `NOSCRIPT`. Then A holds its grant.
    let mutex = RedisMutex::builder(pool.clone(), name)
        .fair(kind == Kind::FairMutex)
        .build()
        .unwrap();
    let tree = RedisRwLock::builder(pool.clone(), name)
        .auto_renewal(false)
        .build()
        .unwrap();
    let semaphore = RedisSemaphore::builder(pool, name)
        .permits(1)
        .auto_renewal(false)
        .build()
        .unwrap();
    type Release<'a> = Box<dyn FnOnce() -> redis_mutex::Result<()> + 'a>;
    let release: Release = match kind {
        Kind::Mutex | Kind::FairMutex => {
            mutex.lock().unwrap().unlock().unwrap();
            let guard = mutex.lock().unwrap();
            Box::new(move || guard.unlock())
        }
        Kind::Read => {
            tree.read().unwrap().unlock().unwrap();
            let guard = tree.read().unwrap();
            Box::new(move || guard.unlock())
        }
        Kind::Write => {
            tree.write().unwrap().unlock().unwrap();
            let guard = tree.write().unwrap();
            Box::new(move || guard.unlock())
        }
        Kind::Semaphore => {
            semaphore.acquire().unwrap().release().unwrap();
            let permit = semaphore.acquire().unwrap();
            Box::new(move || permit.release())
        }
    };
    let mut conn = server.connection();
    let scripts = script_calls(&mut conn);
    proxy.set_latency(LATENCY);
    proxy.cut_before_next_reply();
    let b = b_cycle(&server, kind, name, held_key);
    let called = Instant::now();
    let released = release();
    let took = called.elapsed();
    proxy.heal();
    let b_done = b.join(HANG).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
    println!(
        "{kind:?}: A's release, its reply cut off and sent again after B's cycle (done {:?} \
         into A's call), returned after {took:?}: {released:?}",
        b_done - called
    );
    // The setup held: A's release was sent again (the first went up, the second up and
    // down: three latencies at least), and its second copy (at least two latencies into
    // A's call) reached the server after B had released.
    // A's release twice and B's acquire and release: four script calls.
    let scripts = script_calls(&mut conn) - scripts;
    assert!(
        scripts >= 4 && took >= LATENCY * 3,
        "{kind:?}: A's release was not sent again ({scripts} script calls; the call took \
         {took:?})"
    );
    assert!(
        b_done - called < LATENCY * 2,
        "{kind:?}: B's cycle ended {:?} into A's call, perhaps after A's second copy: the \
         machine was too slow for this test's window",
        b_done - called
    );
    released.unwrap_or_else(|e| {
        panic!(
            "{kind:?}: A's release happened, was sent again after another grant was made and \
             released, and was not told it happened: {e}"
        )
    });
}

/// A plain mutex's release sent twice, with B's grant and release in between, is `Ok`.
#[test]
fn a_mutex_release_sent_twice_around_another_grant_is_told_it_happened() {
    a_release_sent_twice(Kind::Mutex);
}

/// The same for a fair mutex.
#[test]
fn a_fair_mutex_release_sent_twice_around_another_grant_is_told_it_happened() {
    a_release_sent_twice(Kind::FairMutex);
}

/// The same for a read lock (B takes and releases a write lock on the path).
#[test]
fn a_read_release_sent_twice_around_another_grant_is_told_it_happened() {
    a_release_sent_twice(Kind::Read);
}

/// The same for a write lock.
#[test]
fn a_write_release_sent_twice_around_another_grant_is_told_it_happened() {
    a_release_sent_twice(Kind::Write);
}

/// The same for a semaphore permit (capacity 1: B takes the permit A gave back).
#[test]
fn a_semaphore_release_sent_twice_around_another_grant_is_told_it_happened() {
    a_release_sent_twice(Kind::Semaphore);
}
