//! [`reset_all`] and [`reset_owned_by`]: clear every lock of a pool, or one owner's.

use super::{FAMILIES, node_conn, scan};
use crate::error::{Error, Result};
use crate::family::FoundKeys;
use crate::keys::Scheme;
use crate::pool::Pool;

/// Deletes every lock of this crate's key families in the pool's database, whoever holds
/// it, wakes their waiters, and returns how many locks it deleted: mutexes (`lock:*`
/// strings, python-redis-lock's too), read-write leases (`rwlock:*`), grants of semaphore
/// permits (`semaphore:*`; a capacity set with `set_permits` stays) and this server's keys
/// of Redlock grants (found by their markers, `redlock:*`; redlock-py's set none). Fencing
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
    let cleared = clear(pool, None)?;
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
    let cleared = clear(pool, Some(owner_id))?;
    log::debug!("reset_owned_by({owner_id:?}) deleted {cleared} lock(s)");
    Ok(cleared)
}

/// Clears every family's locks (`owner`'s alone, if given) on every primary.
fn clear(pool: &Pool, owner: Option<&str>) -> Result<usize> {
    let scheme = Scheme::of(pool);
    let mut cleared = 0;
    for node in pool.primaries()? {
        let mut conn = node_conn(pool, &node)?;
        for family in FAMILIES {
            cleared += scan(&mut conn, family.pattern(), |conn, keys| {
                family.clear(conn, FoundKeys { keys, scheme }, owner)
            })?;
        }
    }
    Ok(cleared)
}
