//! A reset's first copy that reaches the server after the reset returned. A reset is an
//! operator's tool that ends the grants held when it is called; its request, like any
//! other, is sent again when its connection closes before the reply, and its first copy may
//! still sit in a proxy or a socket buffer and reach the server later. Whenever it comes, it
//! must not end a grant made after the reset returned: that grant's holder would go on
//! believing it holds the lock while another client takes it. Every kind that has a reset:
//! `RedisMutex::reset` (both modes, a new grant by the same owner id and by another),
//! `RedisRwLock::reset` (a path's write lease, its read leases; new readers, a new writer,
//! a new writer below) and `RedisSemaphore::reset` (every permit; new grants of one and
//! of several permits, a waiter woken by the reset).
//!
//! Each test: holders (straight to the server) take the lock; the operator's object goes
//! through a `HoldingProxy` (tests/support/proxy.rs), which holds the reset's first script
//! call and hangs up on it at once, so that the library sends the reset again; the reset
//! returns and the holders' grants are gone. Then other clients (straight to the server)
//! take new grants; then the held first copy reaches the server. The new grants must still
//! be held, a third client must still be kept out, and the new holders release cleanly.
//!
//! Also: a reset of a lock nobody holds (it ends no grant, so its late copy must end none),
//! and a mutex whose owner id is stable (a host's name, as `reset_owned_by` suggests) where
//! a grant has no grant marker: python-redis-lock's (simulated by its `SET .. NX` on the
//! wire), or this crate's own once the marker of a lock without expiry ran out after a week.

use std::fmt::Debug;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::proxy::HoldingProxy;
use crate::support::{HANG, RedisServer};
use redis_mutex::{
    ArcRedisMutexGuard, ArcRedisSemaphorePermit, LockInfo, LockKind, Pool, RedisMutex,
    RedisMutexGuard, RedisRwLock, RedisRwLockReadGuard, RedisRwLockWriteGuard, RedisSemaphore,
    RedisSemaphorePermit, TryLockError, list_locks, lock_info,
};

/// The operator's response timeout. The proxy hangs up at once, so no test waits for it.
const RT: Duration = Duration::from_secs(2);

/// The operator's pool: through the holding proxy.
fn operator_pool(proxy: &HoldingProxy) -> Pool {
    proxy.pool_with(Pool::builder().max_size(4).min_idle(0).response_timeout(RT))
}

/// What every guard and permit answers about its grant.
trait Grant {
    fn held(&self) -> redis_mutex::Result<bool>;
    fn ensure(&self) -> redis_mutex::Result<()>;
    fn lost(&self) -> bool;
}

macro_rules! grant {
    ($($guard:ty),* $(,)?) => {
        $(
            impl Grant for $guard {
                fn held(&self) -> redis_mutex::Result<bool> {
                    self.is_held()
                }
                fn ensure(&self) -> redis_mutex::Result<()> {
                    self.ensure_held()
                }
                fn lost(&self) -> bool {
                    self.is_lost()
                }
            }
        )*
    };
}

grant!(
    RedisMutexGuard<'_>,
    ArcRedisMutexGuard,
    RedisRwLockReadGuard<'_>,
    RedisRwLockWriteGuard<'_>,
    RedisSemaphorePermit<'_>,
    ArcRedisSemaphorePermit,
);

/// A grant held when the reset was called: once the reset returned, its guard, asked,
/// says it is no longer held.
fn assert_ended(what: &str, grant: &impl Grant) {
    let held = grant.held();
    println!(
        "{what}: after the reset returned, is_held() = {held:?}, is_lost() = {}",
        grant.lost()
    );
    assert!(
        matches!(held, Ok(false)),
        "{what}: the reset returned, yet the grant held when it was called answers is_held() \
         = {held:?}"
    );
}

/// A grant made after the reset returned: still held once the reset's first copy ran.
fn assert_still_held(what: &str, grant: &impl Grant) {
    let held = grant.held();
    let ensured = grant.ensure();
    let lost = grant.lost();
    println!(
        "{what}: after the late first copy of the reset, is_held() = {held:?}, ensure_held() \
         = {ensured:?}, is_lost() = {lost}"
    );
    assert!(
        matches!(held, Ok(true)),
        "{what}: the late first copy of the reset ended a grant made after the reset returned \
         (is_held() = {held:?}): its holder would believe it holds the lock while another \
         client takes it"
    );
    assert!(
        ensured.is_ok() && !lost,
        "{what}: after the late first copy of the reset, ensure_held() = {ensured:?}, \
         is_lost() = {lost}"
    );
}

/// A third client's attempt while the new grants hold the lock: it must be kept out.
fn assert_would_block<T>(what: &str, attempt: Result<T, TryLockError>) {
    match attempt {
        Err(TryLockError::WouldBlock) => println!("{what}: would block, as it must"),
        Ok(_) => {
            panic!("{what}: got the lock while a grant made after the reset holds it: let in twice")
        }
        Err(e) => panic!("{what}: failed instead of would-block: {e}"),
    }
}

/// A request or reply as text, on one line, cut short.
fn printable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes).replace("\r\n", " ");
    match text.char_indices().nth(300) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text,
    }
}

/// The first copy of a reset, held by the proxy after the reset returned.
struct HeldReset<'p> {
    proxy: &'p HoldingProxy,
    what: String,
}

/// Calls the operator's `reset` with its first script call held by the proxy, whose
/// client is hung up on at once: the reset must send itself again and return.
fn reset_with_first_copy_held<'p, T: Debug>(
    proxy: &'p HoldingProxy,
    what: &str,
    reset: impl FnOnce() -> redis_mutex::Result<T>,
) -> (T, HeldReset<'p>) {
    let accepted = proxy.accepted();
    proxy.hold_next_containing(b"EVAL");
    let called = Instant::now();
    let result = reset();
    let took = called.elapsed();
    println!(
        "{what}: the reset, its first script call held, returned after {took:?} ({} new \
         connections through the proxy): {result:?}",
        proxy.accepted() - accepted
    );
    let held = proxy
        .held(Duration::ZERO)
        .unwrap_or_else(|| panic!("{what}: the proxy held no script call of the reset"));
    println!("{what}: the first copy, held: {}", printable(&held));
    let result = result.unwrap_or_else(|e| {
        panic!("{what}: the reset failed ({e}) instead of sending itself again")
    });
    let held_reset = HeldReset {
        proxy,
        what: what.to_owned(),
    };
    (result, held_reset)
}

impl HeldReset<'_> {
    /// The held first copy reaches the server now; returns once the server ran it.
    fn deliver(self) {
        let what = &self.what;
        let reply = self
            .proxy
            .deliver_held(HANG)
            .unwrap_or_else(|| panic!("{what}: the late first copy of the reset got no reply"));
        println!(
            "{what}: the late first copy of the reset ran; its reply: {}",
            printable(&reply)
        );
        assert!(
            !reply.starts_with(b"-NOSCRIPT"),
            "{what}: the late first copy never ran (the script was not loaded), so this test \
             tested nothing"
        );
    }
}

/// Waits until the server has `n` clients blocked (waiters in `BLPOP`): a waiter has
/// queued and sleeps until a release or reset wakes it.
fn wait_for_blocked_clients(server: &RedisServer, n: usize, what: &str) {
    let mut conn = server.connection();
    let deadline = Instant::now() + HANG;
    loop {
        let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut conn).unwrap();
        let blocked = list
            .lines()
            .filter(|line| {
                line.split(' ')
                    .find_map(|kv| kv.strip_prefix("flags="))
                    .is_some_and(|flags| flags.contains('b'))
            })
            .count();
        if blocked >= n {
            println!("{what}: {blocked} client(s) blocked in the server, waiting");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {n} waiter(s) never blocked in the server within {HANG:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// What the locks under `name` look like now (`list_locks(..).named(name)`).
fn named(server: &RedisServer, name: &str) -> Vec<LockInfo> {
    list_locks(&server.pool())
        .named(name)
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn count(locks: &[LockInfo], kind: LockKind) -> usize {
    locks.iter().filter(|l| l.kind == kind).count()
}

// ---------------------------------------------------------------------------------------
// Mutex
// ---------------------------------------------------------------------------------------

const MUTEX: &str = "nightly-report";

fn mutex(pool: Pool, fair: bool, owner: &str) -> RedisMutex {
    RedisMutex::builder(pool, MUTEX)
        .fair(fair)
        .owner_id(owner)
        .build()
        .unwrap()
}

/// A mutex held, reset through the proxy, granted again (to the holder's own object, or
/// to another owner's) before the reset's first copy arrives.
fn mutex_regranted(fair: bool, same_owner: bool) {
    let server = RedisServer::start();
    let proxy = HoldingProxy::start(server.port());
    let what = format!(
        "mutex (fair: {fair}; new grant by {} owner id)",
        if same_owner { "the same" } else { "another" }
    );
    let holder = mutex(server.pool(), fair, "host-1/report");
    let other = mutex(server.pool(), fair, "host-2/report");
    let third = mutex(server.pool(), fair, "host-3/report");
    let operator = mutex(operator_pool(&proxy), fair, "operator");

    let old = holder.lock().unwrap();
    let old_token = old.fencing_token();
    println!("{what}: host-1/report holds the lock, token {old_token}");

    let (removed, late) = reset_with_first_copy_held(&proxy, &what, || operator.reset());
    assert!(removed, "{what}: the reset found no lock to delete");
    assert_ended(&format!("{what}: the holder's grant"), &old);
    let info = lock_info(&server.pool(), MUTEX).unwrap();
    println!("{what}: lock_info after the reset: {info:?}");
    assert!(
        info.is_none(),
        "{what}: the lock is still held after the reset: {info:?}"
    );
    println!("{what}: the old guard's unlock: {:?}", old.unlock());

    let next = if same_owner { &holder } else { &other };
    let new = next
        .try_lock_for(HANG)
        .unwrap_or_else(|e| panic!("{what}: no new grant after the reset: {e}"));
    let new_token = new.fencing_token();
    println!(
        "{what}: {} holds the lock again, token {new_token}",
        next.owner_id()
    );
    assert!(
        new_token > old_token,
        "{what}: the new token is not greater"
    );

    late.deliver();

    assert_still_held(&format!("{what}: the grant made after the reset"), &new);
    let info = lock_info(&server.pool(), MUTEX).unwrap();
    println!("{what}: lock_info after the late copy: {info:?}");
    let info = info.unwrap_or_else(|| panic!("{what}: the late copy deleted the grant made since"));
    assert_eq!(
        info.owner_id,
        next.owner_id(),
        "{what}: another owner holds it"
    );
    assert_eq!(
        info.fencing_token,
        Some(new_token),
        "{what}: another grant holds it"
    );
    assert_would_block(
        &format!("{what}: a third client's try_lock"),
        third.try_lock(),
    );

    new.unlock()
        .unwrap_or_else(|e| panic!("{what}: the new holder's unlock failed: {e}"));
    assert!(lock_info(&server.pool(), MUTEX).unwrap().is_none());
    third
        .try_lock()
        .unwrap_or_else(|e| panic!("{what}: the lock is not free once released: {e}"))
        .unlock()
        .unwrap();
}

/// A mutex held, a waiter queued behind it; the reset wakes the waiter, which takes the
/// lock, before the reset's first copy arrives.
fn mutex_waiter_woken_by_reset(fair: bool) {
    let server = RedisServer::start();
    let proxy = HoldingProxy::start(server.port());
    let what = format!("mutex (fair: {fair}; the new grant goes to a waiter the reset woke)");
    let holder = mutex(server.pool(), fair, "host-1/report");
    let waiter = Arc::new(mutex(server.pool(), fair, "host-2/report"));
    let third = mutex(server.pool(), fair, "host-3/report");
    let operator = mutex(operator_pool(&proxy), fair, "operator");

    let old = holder.lock().unwrap();
    let waiting = {
        let waiter = waiter.clone();
        thread::spawn(move || waiter.try_lock_arc_for(HANG))
    };
    wait_for_blocked_clients(&server, 1, &what);

    let (removed, late) = reset_with_first_copy_held(&proxy, &what, || operator.reset());
    assert!(removed, "{what}: the reset found no lock to delete");
    assert_ended(&format!("{what}: the holder's grant"), &old);
    println!("{what}: the old guard's unlock: {:?}", old.unlock());

    let new = waiting
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("{what}: the waiter got no grant after the reset: {e}"));
    println!(
        "{what}: the waiter holds the lock, token {}",
        new.fencing_token()
    );

    late.deliver();

    assert_still_held(&format!("{what}: the waiter's grant"), &new);
    let info = lock_info(&server.pool(), MUTEX).unwrap();
    println!("{what}: lock_info after the late copy: {info:?}");
    assert_eq!(
        info.map(|i| i.owner_id),
        Some(waiter.owner_id().to_owned()),
        "{what}: the waiter does not hold the lock"
    );
    assert_would_block(
        &format!("{what}: a third client's try_lock"),
        third.try_lock(),
    );
    new.unlock()
        .unwrap_or_else(|e| panic!("{what}: the waiter's unlock failed: {e}"));
    assert!(lock_info(&server.pool(), MUTEX).unwrap().is_none());
}

/// Default mode; the lock granted again to another owner.
#[test]
fn a_late_mutex_reset_leaves_a_grant_to_another_owner() {
    mutex_regranted(false, false);
}

/// Default mode; the lock granted again to the holder it was reset under (same owner id).
#[test]
fn a_late_mutex_reset_leaves_a_new_grant_to_the_same_owner() {
    mutex_regranted(false, true);
}

/// Fair mode; the lock granted again to another owner.
#[test]
fn a_late_fair_mutex_reset_leaves_a_grant_to_another_owner() {
    mutex_regranted(true, false);
}

/// Fair mode; the lock granted again to the same owner id.
#[test]
fn a_late_fair_mutex_reset_leaves_a_new_grant_to_the_same_owner() {
    mutex_regranted(true, true);
}

/// Default mode; the reset wakes a waiter, which takes the lock.
#[test]
fn a_late_mutex_reset_leaves_the_grant_of_the_waiter_it_woke() {
    mutex_waiter_woken_by_reset(false);
}

/// Fair mode; the reset wakes the queued waiter, which takes the lock.
#[test]
fn a_late_fair_mutex_reset_leaves_the_grant_of_the_waiter_it_woke() {
    mutex_waiter_woken_by_reset(true);
}

// ---------------------------------------------------------------------------------------
// Read-write lock
// ---------------------------------------------------------------------------------------

const PATH: &str = "tenants/42";

fn rwlock(pool: Pool, path: &str, owner: &str) -> RedisRwLock {
    RedisRwLock::builder(pool, path)
        .owner_id(owner)
        .build()
        .unwrap()
}

/// A write lease reset; a new write lease (by the same owner id, or another) granted
/// before the reset's first copy arrives.
fn write_regranted(same_owner: bool) {
    let server = RedisServer::start();
    let proxy = HoldingProxy::start(server.port());
    let what = format!(
        "rwlock write lease (new write lease by {} owner id)",
        if same_owner { "the same" } else { "another" }
    );
    let holder = rwlock(server.pool(), PATH, "writer-1");
    let other = rwlock(server.pool(), PATH, "writer-2");
    let third = rwlock(server.pool(), PATH, "third");
    let operator = rwlock(operator_pool(&proxy), PATH, "operator");

    let old = holder.write().unwrap();
    println!("{what}: writer-1 holds {PATH}: {:?}", named(&server, PATH));

    let (removed, late) = reset_with_first_copy_held(&proxy, &what, || operator.reset());
    assert!(removed, "{what}: the reset found no lease to remove");
    assert_ended(&format!("{what}: the writer's lease"), &old);
    let left = named(&server, PATH);
    println!("{what}: after the reset: {left:?}");
    assert!(
        left.is_empty(),
        "{what}: leases left after the reset: {left:?}"
    );
    println!("{what}: the old guard's unlock: {:?}", old.unlock());

    let next = if same_owner { &holder } else { &other };
    let new = next
        .try_write_for(HANG)
        .unwrap_or_else(|e| panic!("{what}: no new write lease after the reset: {e}"));
    println!("{what}: {} holds the write lease again", next.owner_id());

    late.deliver();

    assert_still_held(
        &format!("{what}: the write lease made after the reset"),
        &new,
    );
    let now = named(&server, PATH);
    println!("{what}: after the late copy: {now:?}");
    assert_eq!(count(&now, LockKind::Write), 1, "{what}: {now:?}");
    assert!(
        now[0]
            .owner_id
            .starts_with(&format!("{}#", next.owner_id())),
        "{what}: {now:?}"
    );
    assert_would_block(
        &format!("{what}: a third client's try_write"),
        third.try_write(),
    );
    assert_would_block(
        &format!("{what}: a third client's try_read"),
        third.try_read(),
    );

    new.unlock()
        .unwrap_or_else(|e| panic!("{what}: the new writer's unlock failed: {e}"));
    assert!(named(&server, PATH).is_empty());
    third.try_write().unwrap().unlock().unwrap();
}

/// What is granted after two read leases were reset.
#[derive(Clone, Copy, Debug)]
enum AfterReaders {
    /// Two read leases: one by an owner whose read lease was reset, one by a new owner.
    Readers,
    /// A write lease on the same path.
    Writer,
    /// A write lease on a path below (`tenants/42/users`), which the readers kept out.
    WriterBelow,
}

fn readers_reset(after: AfterReaders) {
    let server = RedisServer::start();
    let proxy = HoldingProxy::start(server.port());
    let what = format!("rwlock read leases (then {after:?})");
    let reader_1 = rwlock(server.pool(), PATH, "reader-1");
    let reader_2 = rwlock(server.pool(), PATH, "reader-2");
    let reader_3 = rwlock(server.pool(), PATH, "reader-3");
    let writer = rwlock(server.pool(), PATH, "writer");
    let below = format!("{PATH}/users");
    let writer_below = rwlock(server.pool(), &below, "writer-below");
    let third = rwlock(server.pool(), PATH, "third");
    let operator = rwlock(operator_pool(&proxy), PATH, "operator");

    let old_1 = reader_1.read().unwrap();
    let old_2 = reader_2.read().unwrap();
    assert_would_block(
        &format!("{what}: a writer below, while the readers hold {PATH}"),
        writer_below.try_write(),
    );
    println!(
        "{what}: two readers hold {PATH}: {:?}",
        named(&server, PATH)
    );

    let (removed, late) = reset_with_first_copy_held(&proxy, &what, || operator.reset());
    assert!(removed, "{what}: the reset found no lease to remove");
    assert_ended(&format!("{what}: reader-1's lease"), &old_1);
    assert_ended(&format!("{what}: reader-2's lease"), &old_2);
    let left = named(&server, PATH);
    println!("{what}: after the reset: {left:?}");
    assert!(
        left.is_empty(),
        "{what}: leases left after the reset: {left:?}"
    );
    println!(
        "{what}: the old guards' unlocks: {:?}, {:?}",
        old_1.unlock(),
        old_2.unlock()
    );

    match after {
        AfterReaders::Readers => {
            let new_1 = reader_1
                .try_read_for(HANG)
                .unwrap_or_else(|e| panic!("{what}: reader-1 got no read lease again: {e}"));
            let new_3 = reader_3
                .try_read_for(HANG)
                .unwrap_or_else(|e| panic!("{what}: reader-3 got no read lease: {e}"));
            println!("{what}: reader-1 and reader-3 hold read leases");

            late.deliver();

            assert_still_held(&format!("{what}: reader-1's new lease"), &new_1);
            assert_still_held(&format!("{what}: reader-3's lease"), &new_3);
            let now = named(&server, PATH);
            println!("{what}: after the late copy: {now:?}");
            assert_eq!(count(&now, LockKind::Read), 2, "{what}: {now:?}");
            assert_would_block(
                &format!("{what}: a third client's try_write"),
                third.try_write(),
            );
            new_1
                .unlock()
                .unwrap_or_else(|e| panic!("{what}: reader-1's unlock failed: {e}"));
            new_3
                .unlock()
                .unwrap_or_else(|e| panic!("{what}: reader-3's unlock failed: {e}"));
        }
        AfterReaders::Writer => {
            let new = writer
                .try_write_for(HANG)
                .unwrap_or_else(|e| panic!("{what}: the writer got no lease: {e}"));
            println!("{what}: the writer holds {PATH}");

            late.deliver();

            assert_still_held(&format!("{what}: the writer's lease"), &new);
            let now = named(&server, PATH);
            println!("{what}: after the late copy: {now:?}");
            assert_eq!(count(&now, LockKind::Write), 1, "{what}: {now:?}");
            assert_would_block(
                &format!("{what}: a third client's try_read"),
                third.try_read(),
            );
            assert_would_block(
                &format!("{what}: a third client's try_write"),
                third.try_write(),
            );
            new.unlock()
                .unwrap_or_else(|e| panic!("{what}: the writer's unlock failed: {e}"));
        }
        AfterReaders::WriterBelow => {
            let new = writer_below
                .try_write_for(HANG)
                .unwrap_or_else(|e| panic!("{what}: the writer below got no lease: {e}"));
            println!("{what}: the writer holds {below}");

            late.deliver();

            assert_still_held(&format!("{what}: the writer's lease below"), &new);
            let now = named(&server, &below);
            println!("{what}: after the late copy, on {below}: {now:?}");
            assert_eq!(count(&now, LockKind::Write), 1, "{what}: {now:?}");
            assert_would_block(
                &format!("{what}: a third client's try_write of {PATH}"),
                third.try_write(),
            );
            let third_below = rwlock(server.pool(), &below, "third");
            assert_would_block(
                &format!("{what}: a third client's try_read of {below}"),
                third_below.try_read(),
            );
            new.unlock()
                .unwrap_or_else(|e| panic!("{what}: the writer's unlock failed: {e}"));
        }
    }
    assert!(named(&server, PATH).is_empty());
    third.try_write().unwrap().unlock().unwrap();
}

/// A write lease reset; a new write lease by another owner.
#[test]
fn a_late_rwlock_reset_leaves_a_write_lease_to_another_owner() {
    write_regranted(false);
}

/// A write lease reset; a new write lease by the same owner id.
#[test]
fn a_late_rwlock_reset_leaves_a_new_write_lease_to_the_same_owner() {
    write_regranted(true);
}

/// Two read leases reset; two new read leases, one by an owner reset before.
#[test]
fn a_late_rwlock_reset_of_readers_leaves_new_read_leases() {
    readers_reset(AfterReaders::Readers);
}

/// Two read leases reset; a write lease on the path.
#[test]
fn a_late_rwlock_reset_of_readers_leaves_a_new_write_lease() {
    readers_reset(AfterReaders::Writer);
}

/// Two read leases reset; a write lease on a path below, which the readers kept out.
#[test]
fn a_late_rwlock_reset_of_readers_leaves_a_new_write_lease_below() {
    readers_reset(AfterReaders::WriterBelow);
}

// ---------------------------------------------------------------------------------------
// Semaphore
// ---------------------------------------------------------------------------------------

const SEMAPHORE: &str = "exports";

fn semaphore(pool: Pool, permits: u32, fair: bool, owner: &str) -> RedisSemaphore {
    RedisSemaphore::builder(pool, SEMAPHORE)
        .permits(permits)
        .fair(fair)
        .owner_id(owner)
        .build()
        .unwrap()
}

/// Capacity 3: one grant of two permits and one of one, reset; then a grant of one permit
/// by an owner reset before and one of two by a new owner, before the reset's first copy.
#[test]
fn a_late_semaphore_reset_leaves_the_permits_granted_since() {
    let server = RedisServer::start();
    let proxy = HoldingProxy::start(server.port());
    let what = "semaphore (capacity 3)";
    let a = semaphore(server.pool(), 3, false, "worker-a");
    let b = semaphore(server.pool(), 3, false, "worker-b");
    let c = semaphore(server.pool(), 3, false, "worker-c");
    let third = semaphore(server.pool(), 3, false, "worker-d");
    let operator = semaphore(operator_pool(&proxy), 3, false, "operator");

    let old_a = a.acquire_many(2).unwrap();
    let old_b = b.acquire().unwrap();
    assert_eq!(third.available_permits().unwrap(), 0);
    println!("{what}: full: {:?}", named(&server, SEMAPHORE));

    let (removed, late) = reset_with_first_copy_held(&proxy, what, || operator.reset());
    assert_eq!(removed, 2, "{what}: the reset did not remove both grants");
    assert_ended(&format!("{what}: worker-a's two permits"), &old_a);
    assert_ended(&format!("{what}: worker-b's permit"), &old_b);
    let available = third.available_permits().unwrap();
    println!("{what}: available after the reset: {available}");
    assert_eq!(available, 3, "{what}: permits still held after the reset");
    println!(
        "{what}: the old permits' releases: {:?}, {:?}",
        old_a.release(),
        old_b.release()
    );

    let new_a = a
        .try_acquire_for(HANG)
        .unwrap_or_else(|e| panic!("{what}: worker-a got no permit again: {e}"));
    let new_c = c
        .try_acquire_many_for(2, HANG)
        .unwrap_or_else(|e| panic!("{what}: worker-c got no two permits: {e}"));
    println!(
        "{what}: worker-a holds 1 (token {}), worker-c holds 2 (token {})",
        new_a.fencing_token(),
        new_c.fencing_token()
    );

    late.deliver();

    assert_still_held(&format!("{what}: worker-a's new permit"), &new_a);
    assert_still_held(&format!("{what}: worker-c's two permits"), &new_c);
    let now = named(&server, SEMAPHORE);
    println!("{what}: after the late copy: {now:?}");
    assert_eq!(count(&now, LockKind::Semaphore), 2, "{what}: {now:?}");
    let available = third.available_permits().unwrap();
    assert_eq!(
        available, 0,
        "{what}: {available} permits free after the late copy"
    );
    assert_would_block(
        &format!("{what}: a third client's try_acquire"),
        third.try_acquire(),
    );

    new_a
        .release()
        .unwrap_or_else(|e| panic!("{what}: worker-a's release failed: {e}"));
    new_c
        .release()
        .unwrap_or_else(|e| panic!("{what}: worker-c's release failed: {e}"));
    assert_eq!(third.available_permits().unwrap(), 3);
}

/// Capacity 2, fair: two permits held and a waiter for both queued; the reset wakes the
/// waiter, which takes both, before the reset's first copy arrives.
#[test]
fn a_late_fair_semaphore_reset_leaves_the_permits_of_the_waiter_it_woke() {
    let server = RedisServer::start();
    let proxy = HoldingProxy::start(server.port());
    let what = "fair semaphore (capacity 2, a waiter for both permits)";
    let a = semaphore(server.pool(), 2, true, "worker-a");
    let b = semaphore(server.pool(), 2, true, "worker-b");
    let waiter = Arc::new(semaphore(server.pool(), 2, true, "worker-w"));
    let third = semaphore(server.pool(), 2, true, "worker-d");
    let operator = semaphore(operator_pool(&proxy), 2, true, "operator");

    let old_a = a.acquire().unwrap();
    let old_b = b.acquire().unwrap();
    let waiting = {
        let waiter = waiter.clone();
        thread::spawn(move || waiter.try_acquire_many_arc_for(2, HANG))
    };
    wait_for_blocked_clients(&server, 1, what);

    let (removed, late) = reset_with_first_copy_held(&proxy, what, || operator.reset());
    assert_eq!(removed, 2, "{what}: the reset did not remove both grants");
    assert_ended(&format!("{what}: worker-a's permit"), &old_a);
    assert_ended(&format!("{what}: worker-b's permit"), &old_b);
    println!(
        "{what}: the old permits' releases: {:?}, {:?}",
        old_a.release(),
        old_b.release()
    );

    let new = waiting
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("{what}: the waiter got no permits after the reset: {e}"));
    println!(
        "{what}: the waiter holds {} permits (token {})",
        new.permits(),
        new.fencing_token()
    );

    late.deliver();

    assert_still_held(&format!("{what}: the waiter's permits"), &new);
    let now = named(&server, SEMAPHORE);
    println!("{what}: after the late copy: {now:?}");
    assert_eq!(count(&now, LockKind::Semaphore), 1, "{what}: {now:?}");
    assert_eq!(third.available_permits().unwrap(), 0, "{what}: {now:?}");
    assert_would_block(
        &format!("{what}: a third client's try_acquire"),
        third.try_acquire(),
    );
    new.release()
        .unwrap_or_else(|e| panic!("{what}: the waiter's release failed: {e}"));
    assert_eq!(third.available_permits().unwrap(), 2);
}

// ---------------------------------------------------------------------------------------
// A reset that finds nothing held
// ---------------------------------------------------------------------------------------

/// Calls the operator's `reset` of a lock that nobody holds, with its first script call (if
/// it sends one) held by the proxy. `None`: it sent no script call, so no copy can come late.
fn reset_of_free_lock<'p, T: Debug>(
    proxy: &'p HoldingProxy,
    what: &str,
    reset: impl FnOnce() -> redis_mutex::Result<T>,
) -> (T, Option<HeldReset<'p>>) {
    let accepted = proxy.accepted();
    proxy.hold_next_containing(b"EVAL");
    let result = reset();
    println!(
        "{what}: the reset of a free lock returned ({} new connections through the proxy): \
         {result:?}",
        proxy.accepted() - accepted
    );
    let result = result.unwrap_or_else(|e| panic!("{what}: the reset failed: {e}"));
    match proxy.held(Duration::ZERO) {
        Some(held) => {
            println!("{what}: the first copy, held: {}", printable(&held));
            let held_reset = HeldReset {
                proxy,
                what: what.to_owned(),
            };
            (result, Some(held_reset))
        }
        None => {
            println!("{what}: the reset sent no script call: no copy of it can come late");
            (result, None)
        }
    }
}

/// The operator resets a mutex nobody holds (it ends no grant); a client takes the lock
/// after the reset returned; a late copy of that reset must not end it.
#[test]
fn a_late_reset_of_a_free_mutex_leaves_the_grant_made_since() {
    let server = RedisServer::start();
    let proxy = HoldingProxy::start(server.port());
    let what = "mutex free at the reset";
    let holder = mutex(server.pool(), false, "host-1/report");
    let third = mutex(server.pool(), false, "host-3/report");
    let operator = mutex(operator_pool(&proxy), false, "operator");

    let (removed, late) = reset_of_free_lock(&proxy, what, || operator.reset());
    assert!(!removed, "{what}: the reset found a lock to delete");
    let new = holder.try_lock_for(HANG).unwrap();
    println!(
        "{what}: host-1/report holds the lock, token {}",
        new.fencing_token()
    );
    if let Some(late) = late {
        late.deliver();
    }
    assert_still_held(&format!("{what}: the grant made after the reset"), &new);
    assert_would_block(
        &format!("{what}: a third client's try_lock"),
        third.try_lock(),
    );
    new.unlock().unwrap();
}

/// The same for a read-write lock's path: a write lease and a read lease below.
#[test]
fn a_late_reset_of_a_free_rwlock_path_leaves_the_leases_made_since() {
    let server = RedisServer::start();
    let proxy = HoldingProxy::start(server.port());
    let what = "rwlock path free at the reset";
    let writer = rwlock(server.pool(), PATH, "writer");
    let third = rwlock(server.pool(), PATH, "third");
    let operator = rwlock(operator_pool(&proxy), PATH, "operator");

    let (removed, late) = reset_of_free_lock(&proxy, what, || operator.reset());
    assert!(!removed, "{what}: the reset found a lease to remove");
    let new = writer.try_write_for(HANG).unwrap();
    println!("{what}: the writer holds {PATH}");
    if let Some(late) = late {
        late.deliver();
    }
    assert_still_held(
        &format!("{what}: the write lease made after the reset"),
        &new,
    );
    assert_would_block(
        &format!("{what}: a third client's try_read"),
        third.try_read(),
    );
    new.unlock().unwrap();
}

/// The same for a semaphore's permits.
#[test]
fn a_late_reset_of_a_free_semaphore_leaves_the_permits_granted_since() {
    let server = RedisServer::start();
    let proxy = HoldingProxy::start(server.port());
    let what = "semaphore free at the reset (capacity 2)";
    let a = semaphore(server.pool(), 2, false, "worker-a");
    let third = semaphore(server.pool(), 2, false, "worker-d");
    let operator = semaphore(operator_pool(&proxy), 2, false, "operator");

    let (removed, late) = reset_of_free_lock(&proxy, what, || operator.reset());
    assert_eq!(removed, 0, "{what}: the reset found grants to remove");
    let new = a.try_acquire_many_for(2, HANG).unwrap();
    println!("{what}: worker-a holds both permits");
    if let Some(late) = late {
        late.deliver();
    }
    assert_still_held(
        &format!("{what}: the permits granted after the reset"),
        &new,
    );
    assert_would_block(
        &format!("{what}: a third client's try_acquire"),
        third.try_acquire(),
    );
    new.release().unwrap();
}

// ---------------------------------------------------------------------------------------
// Grants without this crate's marker: python-redis-lock's, with a stable id
// ---------------------------------------------------------------------------------------

/// Who takes the mutex: this crate, or python-redis-lock, simulated by what it sends on
/// the wire (`SET lock:<name> <id> NX`, no expiry), with an id of its own choosing
/// (`Lock(redis, name, id="host-7")`, a host's name), as the crate's own owner ids can be.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Taker {
    Rust,
    Python,
}

const STABLE_ID: &str = "host-7";

/// A grant taken by `taker` with the owner id `STABLE_ID`: for this crate a guard, for
/// python-redis-lock none (its holder reads `GET lock:<name>` to know it holds the lock).
fn take_mutex<'m>(
    server: &RedisServer,
    rust: &'m RedisMutex,
    taker: Taker,
) -> Option<RedisMutexGuard<'m>> {
    match taker {
        Taker::Rust => Some(rust.try_lock_for(HANG).unwrap()),
        Taker::Python => {
            let mut conn = server.connection();
            let set: Option<String> = redis::cmd("SET")
                .arg(format!("lock:{MUTEX}"))
                .arg(STABLE_ID)
                .arg("NX")
                .query(&mut conn)
                .unwrap();
            assert_eq!(set.as_deref(), Some("OK"), "python's SET NX was refused");
            None
        }
    }
}

fn python_owner(server: &RedisServer) -> Option<String> {
    redis::cmd("GET")
        .arg(format!("lock:{MUTEX}"))
        .query(&mut server.connection())
        .unwrap()
}

/// How the grant reset was made.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Earlier {
    /// By python-redis-lock (no marker).
    Python,
    /// By this crate, a lock without expiry held for over a week: its grant marker
    /// (`lock-grant:<name>`, which lives a week for a lock without expiry, docs/mutex.md)
    /// has run out while the lock is still held. The week is simulated by running the
    /// marker's expiry out now.
    RustAfterAWeek,
    /// By this crate, with its marker.
    Rust,
}

/// Runs out the grant marker of the mutex's lock now, as a week of holding would.
fn run_out_marker(server: &RedisServer, what: &str) {
    let mut conn = server.connection();
    let marker = format!("lock-grant:{MUTEX}");
    let pttl: i64 = redis::cmd("PTTL").arg(&marker).query(&mut conn).unwrap();
    let week_ms = 7 * 24 * 3600 * 1000;
    println!("{what}: the grant marker `{marker}` lives {pttl} ms more (a week: {week_ms} ms)");
    assert!(
        pttl > 0 && pttl <= week_ms,
        "{what}: the marker of a lock without expiry does not live a week (PTTL {pttl})"
    );
    let _: i64 = redis::cmd("PEXPIRE")
        .arg(&marker)
        .arg(1)
        .query(&mut conn)
        .unwrap();
    let deadline = Instant::now() + HANG;
    while redis::cmd("EXISTS")
        .arg(&marker)
        .query::<i64>(&mut conn)
        .unwrap()
        == 1
    {
        assert!(
            Instant::now() < deadline,
            "{what}: the marker never ran out"
        );
        thread::sleep(Duration::from_millis(2));
    }
}

/// The mutex taken by `old` with a stable id, reset through the proxy, taken again with
/// the same id by `new` before the reset's first copy arrives.
fn stable_id_regranted(old: Earlier, new: Taker) {
    let server = RedisServer::start();
    let proxy = HoldingProxy::start(server.port());
    let what = format!("mutex with a stable owner id ({old:?} grant reset, then a {new:?} grant)");
    let rust = mutex(server.pool(), false, STABLE_ID);
    let third = mutex(server.pool(), false, "host-3/report");
    let operator = mutex(operator_pool(&proxy), false, "operator");

    let old_guard = match old {
        Earlier::Python => take_mutex(&server, &rust, Taker::Python),
        Earlier::Rust => take_mutex(&server, &rust, Taker::Rust),
        Earlier::RustAfterAWeek => {
            let guard = take_mutex(&server, &rust, Taker::Rust);
            run_out_marker(&server, &what);
            guard
        }
    };
    println!(
        "{what}: {old:?} holds it: {:?}",
        lock_info(&server.pool(), MUTEX).unwrap()
    );
    let (removed, late) = reset_with_first_copy_held(&proxy, &what, || operator.reset());
    assert!(removed, "{what}: the reset found no lock to delete");
    let info = lock_info(&server.pool(), MUTEX).unwrap();
    assert!(
        info.is_none(),
        "{what}: still held after the reset: {info:?}"
    );
    if let Some(guard) = old_guard {
        assert_ended(&format!("{what}: the old grant"), &guard);
        println!("{what}: the old guard's unlock: {:?}", guard.unlock());
    }

    let new_guard = take_mutex(&server, &rust, new);
    let before = lock_info(&server.pool(), MUTEX).unwrap();
    println!("{what}: {new:?} holds it again: {before:?}");

    late.deliver();

    let after = lock_info(&server.pool(), MUTEX).unwrap();
    println!("{what}: after the late copy: {after:?}");
    match &new_guard {
        Some(guard) => assert_still_held(&format!("{what}: the new grant"), guard),
        None => {
            let owner = python_owner(&server);
            println!("{what}: python's holder reads GET lock:{MUTEX} = {owner:?}");
            assert_eq!(
                owner.as_deref(),
                Some(STABLE_ID),
                "{what}: the late first copy of the reset ended python-redis-lock's grant \
                 made after the reset returned: its holder would believe it holds the lock \
                 while another client takes it"
            );
        }
    }
    assert_would_block(
        &format!("{what}: a third client's try_lock"),
        third.try_lock(),
    );
    match new_guard {
        Some(guard) => guard.unlock().unwrap(),
        None => {
            let deleted: i64 = redis::cmd("DEL")
                .arg(format!("lock:{MUTEX}"))
                .query(&mut server.connection())
                .unwrap();
            assert_eq!(deleted, 1);
        }
    }
}

/// python-redis-lock's grant reset; python-redis-lock takes the lock again with the same id.
#[test]
fn a_late_mutex_reset_leaves_a_python_grant_with_the_same_id() {
    stable_id_regranted(Earlier::Python, Taker::Python);
}

/// python-redis-lock's grant reset; this crate takes the lock with the same owner id.
#[test]
fn a_late_mutex_reset_of_a_python_grant_leaves_a_rust_grant_with_the_same_id() {
    stable_id_regranted(Earlier::Python, Taker::Rust);
}

/// This crate's grant reset; python-redis-lock takes the lock with the same id.
#[test]
fn a_late_mutex_reset_of_a_rust_grant_leaves_a_python_grant_with_the_same_id() {
    stable_id_regranted(Earlier::Rust, Taker::Python);
}

/// This crate's grant of a lock without expiry, held for over a week (its marker ran out),
/// reset; the same owner id (a worker restarted on the same host) takes the lock again.
/// Only this crate, no python-redis-lock.
#[test]
fn a_late_reset_of_a_week_old_mutex_grant_leaves_a_new_grant_to_the_same_owner() {
    stable_id_regranted(Earlier::RustAfterAWeek, Taker::Rust);
}
