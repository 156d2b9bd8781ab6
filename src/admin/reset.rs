//! [`reset_all`] and [`reset_owned_by`]: clear every lock of a pool, or one owner's.

use super::{by_slot, node_conn, scan, semaphore_call};
use crate::conn::Conn;
use crate::keys::{
    Family, GRANT_PREFIX, LOCK_PREFIX, RELEASED_PREFIX, SIGNAL_PREFIX, level_keys, parse_key,
    sibling_of,
};
use crate::options::DEFAULT_SIGNAL_EXPIRE;
use crate::scripts::{RESET, RWLOCK_CLEAR, undo_window};
use crate::time::millis;
use crate::{Error, Pool, Result};

/// Whose locks to clear.
#[derive(Clone, Copy)]
enum Whose<'a> {
    Anyone,
    Owner(&'a str),
}

/// Deletes every lock of this crate's key families in the pool's database, whoever holds
/// it, wakes their waiters, and returns how many locks it deleted: mutexes (`lock:*`
/// strings, python-redis-lock's too), read-write leases (`rwlock:*`) and grants of
/// semaphore permits (`semaphore:*`; a capacity set with `set_permits` stays). Fencing
/// counters stay, so tokens keep rising. On a cluster, every primary is walked.
///
/// **Only from a deploy step, when no process can hold a lock** (all workers stopped). A
/// holder is not told, and a lock taken while it runs may be deleted too: called by each
/// worker at start-up, it deletes the lock another worker just took, and two run at once.
/// A starting worker that wants to free what its crashed predecessor held calls
/// [`reset_owned_by`] with its own stable owner id instead.
///
/// Keys outside the families stay, including `lock:*` keys that are not strings.
///
/// # Errors
///
/// The errors of a request ([`Error::Unreachable`], [`Error::Timeout`], ...) when a server
/// cannot be reached; locks deleted before the failure stay deleted.
///
/// # Examples
///
/// ```no_run
/// use redis_mutex::{reset_all, Pool};
///
/// // In the deploy pipeline, after the old workers stopped and before new ones start:
/// let removed = reset_all(&Pool::new("redis://127.0.0.1/")?)?;
/// println!("removed {removed} stale locks");
/// # Ok::<(), redis_mutex::Error>(())
/// ```
pub fn reset_all(pool: &Pool) -> Result<usize> {
    let cleared = clear(pool, Whose::Anyone)?;
    log::debug!("reset_all deleted {cleared} lock(s)");
    Ok(cleared)
}

/// Deletes the locks held by `owner_id` (mutexes, read and write leases of read-write
/// locks, and grants of semaphore permits, built with that owner id), wakes their waiters,
/// and returns how many it deleted.
/// Nobody else's lock is touched.
///
/// Meant for a worker's start-up: a process with a stable owner id (for example
/// `"host-7/report-worker"`, set with `owner_id(..)` on every lock it builds) frees what its
/// crashed predecessor held, at once rather than when the leases run out. Two processes
/// must never share the id.
///
/// # Errors
///
/// [`Error::InvalidOptions`] for an empty owner id; otherwise as for [`reset_all`].
///
/// # Examples
///
/// ```no_run
/// use redis_mutex::{reset_owned_by, Pool, RedisMutex};
///
/// let pool = Pool::new("redis://127.0.0.1/")?;
/// let me = "host-7/report-worker";
/// let freed = reset_owned_by(&pool, me)?;
/// println!("freed {freed} locks my predecessor held");
/// let mutex = RedisMutex::builder(pool, "nightly-report").owner_id(me).build()?;
/// # Ok::<(), redis_mutex::Error>(())
/// ```
pub fn reset_owned_by(pool: &Pool, owner_id: &str) -> Result<usize> {
    if owner_id.is_empty() {
        return Err(Error::invalid(
            "owner_id",
            "the owner id is empty; give the id the locks were built with",
        ));
    }
    let cleared = clear(pool, Whose::Owner(owner_id))?;
    log::debug!("reset_owned_by({owner_id:?}) deleted {cleared} lock(s)");
    Ok(cleared)
}

fn clear(pool: &Pool, whose: Whose<'_>) -> Result<usize> {
    let mut cleared = 0;
    for node in pool.primaries()? {
        let mut conn = node_conn(pool, &node)?;
        let cluster = pool.is_cluster();
        for family in Family::ALL {
            cleared += scan(&mut conn, family.pattern(), |conn, keys| match family {
                Family::Mutex => clear_mutexes(conn, keys, whose, cluster),
                Family::RwLock => clear_rwlocks(conn, keys, whose, cluster),
                Family::Semaphore => clear_semaphores(conn, keys, whose),
            })?;
        }
    }
    Ok(cleared)
}

fn clear_mutexes(
    conn: &mut Conn,
    keys: Vec<Vec<u8>>,
    whose: Whose<'_>,
    cluster: bool,
) -> Result<usize> {
    let signal_ms = millis(DEFAULT_SIGNAL_EXPIRE);
    let tombstone_ms = millis(undo_window(conn.read_timeout()));
    let mut deleted = 0;
    let keyed = keys.into_iter().map(|k| (k.clone(), k)).collect();
    for group in by_slot(keyed, cluster) {
        let mut call = RESET.call();
        call.arg(signal_ms).arg(tombstone_ms);
        if let Whose::Owner(owner) = whose {
            call.arg(owner);
        }
        for key in &group {
            call.key(key)
                .key(sibling_of(key, SIGNAL_PREFIX))
                .key(sibling_of(key, GRANT_PREFIX))
                .key(sibling_of(key, RELEASED_PREFIX));
        }
        let results: Vec<i64> = call
            .invoke(conn)
            .map_err(|e| conn.fail(e, LOCK_PREFIX, "reset"))?;
        if results.len() != group.len() {
            return Err(Error::Protocol { what: "reset" });
        }
        deleted += results.iter().filter(|&&r| r == 1).count();
    }
    Ok(deleted)
}

/// Takes back the permits of the semaphores whose holder sets are `keys` (all of them, or
/// one owner's), one call per semaphore; returns how many grants it removed.
fn clear_semaphores(conn: &mut Conn, keys: Vec<Vec<u8>>, whose: Whose<'_>) -> Result<usize> {
    let mut removed = 0;
    for key in keys {
        let mut call = semaphore_call(&key, "reset");
        if let Whose::Owner(owner) = whose {
            call.arg(owner);
        }
        let n: usize = call
            .invoke(conn)
            .map_err(|e| conn.fail(e, "semaphore:*", "reset"))?;
        removed += n;
    }
    Ok(removed)
}

fn clear_rwlocks(
    conn: &mut Conn,
    keys: Vec<Vec<u8>>,
    whose: Whose<'_>,
    cluster: bool,
) -> Result<usize> {
    // Every level seen, once, whatever kind of key showed it.
    let mut levels: Vec<String> = keys
        .iter()
        .filter_map(|k| std::str::from_utf8(k).ok())
        .filter_map(parse_key)
        .map(|(_, level)| level.to_owned())
        .collect();
    levels.sort_unstable();
    levels.dedup();
    let keyed = levels
        .into_iter()
        .map(|level| (level_keys(&level)[0].clone().into_bytes(), level))
        .collect();
    let mut removed = 0;
    for group in by_slot(keyed, cluster) {
        let mut call = RWLOCK_CLEAR.call();
        call.arg(millis(DEFAULT_SIGNAL_EXPIRE));
        if let Whose::Owner(owner) = whose {
            call.arg(owner);
        }
        for level in &group {
            call.key(level_keys(level));
        }
        let n: i64 = call
            .invoke(conn)
            .map_err(|e| conn.fail(e, "rwlock:*", "reset"))?;
        removed += usize::try_from(n).unwrap_or(0);
    }
    Ok(removed)
}
