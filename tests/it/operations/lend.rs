//! Connections lent by a `Pool` for the caller's own commands (`Pool::connection`,
//! `Pool::connection_for`), on a real server and a real cluster: commands run on them, they
//! count against `max_size` (a borrow past it fails in time, not hangs), they go back to
//! the pool only as they came, and on a cluster a connection for a key reaches the primary
//! serving it, through a slot migration too.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support::cluster::Cluster;
use crate::support::{HANG, RedisServer, eventually};
use redis::Commands;
use redis_mutex::{Error, Pool, RedisMutex};

/// How long a borrow waits for a free connection in these tests.
const WAIT: Duration = Duration::from_millis(300);

/// A bound far above any loopback round trip, below which a borrow that may not wait past
/// [`WAIT`] must come back.
const SLACK: Duration = Duration::from_secs(2);

fn client_id(conn: &mut impl redis::ConnectionLike) -> i64 {
    redis::cmd("CLIENT").arg("ID").query(conn).unwrap()
}

/// Whether the server has a client of that id.
fn connected(server: &RedisServer, id: i64) -> bool {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut server.connection())
        .unwrap();
    list.lines().any(|l| l.starts_with(&format!("id={id} ")))
}

#[test]
fn a_lent_connection_runs_commands_and_goes_back_to_the_pool() {
    let server = RedisServer::start();
    let pool = server.pool_with(Pool::builder().max_size(4).min_idle(0));
    assert_eq!(pool.max_size(), 4);
    let mutex = RedisMutex::new(pool.clone(), "report").unwrap();
    let guard = mutex.lock().unwrap();

    let mut conn = pool.connection().unwrap();
    println!("{conn:?}");
    // A counter, a pipeline, a script: what a fencing check or a tally needs.
    let runs: u64 = conn.incr("report:runs", 1).unwrap();
    assert_eq!(runs, 1);
    let (a, b): (u64, u64) = redis::pipe()
        .atomic()
        .incr("report:runs", 1)
        .incr("report:runs", 1)
        .query(&mut conn)
        .unwrap();
    assert_eq!((a, b), (2, 3));
    let fence = redis::Script::new(
        "if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[1]) then return 0 end \
         redis.call('SET', KEYS[1], ARGV[1]) return 1",
    );
    let token = guard.fencing_token();
    let written: bool = fence
        .key("report:token")
        .arg(token)
        .invoke(&mut conn)
        .unwrap();
    assert!(written);
    let late: bool = fence
        .key("report:token")
        .arg(token - 1)
        .invoke(&mut conn)
        .unwrap();
    assert!(!late, "a lower token was let through");
    // The lock's own key is there to read, on the same server.
    let owner: String = conn.get("lock:report").unwrap();
    assert_eq!(owner, mutex.owner_id());
    let id = client_id(&mut conn);
    drop(conn);

    // Back in the pool, unchanged: the next borrow gets the same connection, and the locks
    // go on using it.
    let mut again = pool.connection().unwrap();
    assert_eq!(
        client_id(&mut again),
        id,
        "the connection was not given back"
    );
    drop(again);
    guard.unlock().unwrap();
    assert!(!mutex.is_locked().unwrap());
    let total: u64 = server.connection().get("report:runs").unwrap();
    assert_eq!(total, 3);
}

#[test]
fn lent_connections_count_against_max_size_and_a_borrow_past_it_fails_in_time() {
    let server = RedisServer::start();
    let pool = server.pool_with(
        Pool::builder()
            .max_size(3)
            .min_idle(0)
            .connection_timeout(WAIT),
    );
    let mut lent: Vec<_> = (0..pool.max_size())
        .map(|_| pool.connection().unwrap())
        .collect();
    let ids: Vec<i64> = lent.iter_mut().map(client_id).collect();
    assert_eq!(ids.len(), 3);

    // One more: every connection is lent, so it waits the connection timeout, then fails.
    let started = Instant::now();
    let refused = pool.connection().unwrap_err();
    let waited = started.elapsed();
    assert!(
        matches!(refused, Error::PoolTimeout { .. }),
        "expected PoolTimeout, got {refused:?}"
    );
    assert!(
        refused.to_string().contains("max_size"),
        "the error does not say what to do: {refused}"
    );
    assert!(
        waited >= WAIT && waited < WAIT + SLACK,
        "a borrow past max_size took {waited:?}, bound {WAIT:?}"
    );
    // The locks of the pool meet the same limit, within their own bound.
    let mutex = RedisMutex::new(pool.clone(), "crowded").unwrap();
    let started = Instant::now();
    let lock_refused = mutex.try_lock().unwrap_err();
    assert!(started.elapsed() < WAIT + SLACK, "{:?}", started.elapsed());
    assert!(
        lock_refused.to_string().contains("no connection"),
        "{lock_refused}"
    );

    // One given back: the next borrow gets it at once.
    lent.pop();
    let started = Instant::now();
    let mut next = pool.connection().unwrap();
    assert!(started.elapsed() < WAIT, "{:?}", started.elapsed());
    assert!(ids.contains(&client_id(&mut next)), "a fourth connection");
    drop((next, lent));
    drop(mutex.try_lock().unwrap());
}

/// Something done to a lent connection.
type Change = fn(&mut dyn redis::ConnectionLike);

#[test]
fn a_lent_connection_left_changed_is_closed_not_given_back() {
    let server = RedisServer::start();
    let pool = server.pool_with(
        Pool::builder()
            .max_size(2)
            .min_idle(0)
            .response_timeout(Duration::from_millis(200)),
    );
    // Each change a lock request must not meet: another database, a transaction left
    // open, a reply that did not come in time.
    let changes: [(&str, Change); 4] = [
        ("SELECT 1", |conn| {
            let _: () = redis::cmd("SELECT").arg(1).query(conn).unwrap();
        }),
        ("MULTI without EXEC", |conn| {
            let _: () = redis::cmd("MULTI").query(conn).unwrap();
        }),
        ("WATCH without EXEC", |conn| {
            let _: () = redis::cmd("WATCH").arg("k").query(conn).unwrap();
        }),
        ("a reply later than the response timeout", |conn| {
            let late = redis::cmd("BLPOP")
                .arg("nothing-yet")
                .arg(2)
                .query::<Option<(String, String)>>(conn);
            assert!(late.is_err(), "{late:?}");
        }),
    ];
    for (what, change) in changes {
        let mut conn = pool.connection().unwrap();
        let id = client_id(&mut conn);
        change(&mut conn);
        drop(conn);
        assert!(
            eventually(HANG, || !connected(&server, id)),
            "{what}: the connection was not closed"
        );
        // The next borrow gets a connection as the pool makes them: database 0, nothing
        // queued, nothing owed.
        let mut fresh = pool.connection().unwrap();
        assert_ne!(client_id(&mut fresh), id, "{what}");
        let _: () = fresh.set("seen", what).unwrap();
        let seen: String = server.connection().get("seen").unwrap();
        assert_eq!(seen, what);
        drop(fresh);
        // The late reply's list gets a value now: nobody may read it as their reply.
        let _: () = server.connection().lpush("nothing-yet", "late").unwrap();
        let mutex = RedisMutex::new(pool.clone(), "after").unwrap();
        drop(mutex.lock().unwrap());
        let _: () = server.connection().del("nothing-yet").unwrap();
    }
    // A transaction closed, a watch ended: given back.
    let mut conn = pool.connection().unwrap();
    let id = client_id(&mut conn);
    let _: () = redis::cmd("WATCH").arg("k").query(&mut conn).unwrap();
    let _: () = redis::cmd("UNWATCH").query(&mut conn).unwrap();
    let _: (u64,) = redis::pipe()
        .atomic()
        .incr("n", 1)
        .query(&mut conn)
        .unwrap();
    drop(conn);
    let mut again = pool.connection().unwrap();
    assert_eq!(client_id(&mut again), id);
}

/// Keys whose slots fall on every primary of `cluster`, two of each, by primary.
fn keys_by_primary(cluster: &Cluster) -> BTreeMap<usize, Vec<String>> {
    let mut by_primary: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for i in 0..10_000 {
        let key = format!("counter-{i}");
        let keys = by_primary.entry(cluster.primary_of(&key)).or_default();
        if keys.len() < 2 {
            keys.push(key);
        }
        if by_primary.len() == cluster.nodes.len() / 2 && by_primary.values().all(|k| k.len() == 2)
        {
            return by_primary;
        }
    }
    panic!("no keys on every primary: {by_primary:?}");
}

#[test]
fn on_a_cluster_a_connection_for_a_key_reaches_the_primary_that_serves_it() {
    let cluster = Cluster::start(3);
    let pool = cluster.pool_with(
        Pool::builder()
            .max_size(2)
            .min_idle(0)
            .connection_timeout(WAIT),
    );
    match pool.connection() {
        Err(Error::InvalidOptions {
            field: "key",
            reason,
        }) => {
            assert!(reason.contains("connection_for"), "{reason}");
        }
        other => panic!("a cluster pool lent a connection for no key: {other:?}"),
    }

    let by_primary = keys_by_primary(&cluster);
    for (primary, keys) in &by_primary {
        for key in keys {
            let mut conn = pool.connection_for(key).unwrap();
            let id: String = redis::cmd("CLUSTER").arg("MYID").query(&mut conn).unwrap();
            assert_eq!(id, cluster.id_of(*primary), "{key}");
            // No MOVED: the node serves the key.
            let _: () = conn.set(key, "here").unwrap();
            let there: String = cluster.nodes[*primary].connection().get(key).unwrap();
            assert_eq!(there, "here");
        }
    }

    // A key with a lock's hash tag is on the lock's node.
    let mutex = RedisMutex::new(pool.clone(), "job").unwrap();
    let guard = mutex.lock().unwrap();
    let mut conn = pool.connection_for("{job}:done").unwrap();
    let owner: String = conn.get("lock:{job}").unwrap();
    assert_eq!(owner, mutex.owner_id());
    let _: () = conn.set("{job}:done", guard.fencing_token()).unwrap();
    drop(conn);
    guard.unlock().unwrap();

    // max_size is per primary: a full node refuses within its bound, the others lend.
    let mut primaries = by_primary.iter();
    let (_, full) = primaries.next().unwrap();
    let (_, other) = primaries.next().unwrap();
    let lent: Vec<_> = (0..pool.max_size())
        .map(|_| pool.connection_for(&full[0]).unwrap())
        .collect();
    let started = Instant::now();
    let refused = pool.connection_for(&full[1]).unwrap_err();
    assert!(
        matches!(refused, Error::PoolTimeout { .. }),
        "expected PoolTimeout, got {refused:?}"
    );
    assert!(started.elapsed() < WAIT + SLACK, "{:?}", started.elapsed());
    let _: () = pool
        .connection_for(&other[0])
        .unwrap()
        .set(&other[0], "free")
        .unwrap();
    drop(lent);

    // A slot moves while a connection for it is lent: its command is told `MOVED`, and
    // the next connection for the key goes to the new primary.
    let key = &full[0];
    let slot = cluster.slot_of(key);
    let from = cluster.primary_of(key);
    let to = *by_primary.keys().find(|&&p| p != from).unwrap();
    let mut before = pool.connection_for(key).unwrap();
    cluster.migrate_slot(slot, to);
    let moved = before.set::<_, _, ()>(key, "late").unwrap_err();
    assert_eq!(moved.code(), Some("MOVED"), "{moved:?}");
    drop(before);
    let mut after = pool.connection_for(key).unwrap();
    let _: () = after.set(key, "moved").unwrap();
    let there: String = cluster.nodes[to].connection().get(key).unwrap();
    assert_eq!(there, "moved");
}
