//! [`list_locks`] and [`lock_info`]: who holds what, for the people who run the services.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{by_slot, node_conn, scan_step, semaphore_call};
use crate::conn::{self, Conn};
use crate::keys::{
    Family, GRANT_PREFIX, MutexKeys, Scheme, WAITERS_PREFIX, marker_owner, marker_token, name_of,
    parse_key, parse_member, path_of, semaphore_name_of, sibling_of,
};
use crate::pool::Node;
use crate::scripts::LIST;
use crate::time::Deadline;
use crate::{Error, Pool, Result};

/// A lock held now, as [`list_locks`] and [`lock_info`] report it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockInfo {
    /// The lock's name (a read-write lock's path), as it was given to the lock.
    pub name: String,
    /// What kind of lock it is.
    pub kind: LockKind,
    /// Who holds it: the owner id stored in the lock (python-redis-lock's `id`); for a read
    /// or write lease, `<owner id>#<16 hex digits>`. A read lock has one entry per reader.
    pub owner_id: String,
    /// How long until the lease runs out, unless renewed; `None` for a lock without expiry.
    pub expires_in: Option<Duration>,
    /// The grant's fencing token, where it is known: grants of this crate's mutexes (not
    /// python-redis-lock's, nor read or write leases).
    pub fencing_token: Option<u64>,
    /// How many waiters are queued, where the protocol knows it: a fair mutex's queue.
    pub waiters: Option<usize>,
    /// The Redis key that holds it: `lock:<name>` (on a cluster `lock:{<name>}`) for a
    /// mutex, a holder set (`rwlock:w:<path>`, `rwlock:r:<path>`) for a read or write
    /// lease, `semaphore:<name>` for a semaphore's permits.
    pub key: String,
    /// For a grant of semaphore permits: how many it holds, and how many are held of how
    /// many in all.
    pub permits: Option<PermitsInfo>,
}

/// The permits of one grant of a semaphore, as [`LockInfo::permits`] reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PermitsInfo {
    /// How many permits this grant holds.
    pub held: u32,
    /// How many permits of the semaphore are held now, by every grant.
    pub in_use: u32,
    /// The semaphore's capacity: the one set with `set_permits`, else the one the latest
    /// grant was made under.
    pub capacity: u32,
}

/// The kinds of lock [`LockInfo`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockKind {
    /// A [`RedisMutex`](crate::RedisMutex), or a python-redis-lock lock.
    Mutex,
    /// A read lease of a [`RedisRwLock`](crate::RedisRwLock).
    Read,
    /// A write lease of a [`RedisRwLock`](crate::RedisRwLock).
    Write,
    /// A grant of permits of a [`RedisSemaphore`](crate::RedisSemaphore) (see
    /// [`LockInfo::permits`]).
    Semaphore,
    /// Not a lock: the key where a lock of that name would be ([`LockInfo::key`]) holds
    /// another type (a list, a hash, ...), so no lock can be taken under the name until
    /// it is deleted, and every locking call fails with [`Error::WrongType`]. Its
    /// `owner_id` is empty.
    NotALock,
}

impl fmt::Display for LockKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockKind::Mutex => "mutex",
            LockKind::Read => "read",
            LockKind::Write => "write",
            LockKind::Semaphore => "semaphore",
            LockKind::NotALock => "not a lock",
        })
    }
}

/// Every lock held now in the pool's database: mutexes (python-redis-lock's too), read and
/// write leases, and grants of semaphore permits, on every primary of a cluster; and the
/// keys where a lock would be that hold another type ([`LockKind::NotALock`]), since no
/// lock can be taken there. Walks the keyspace with `SCAN` (never
/// `KEYS`), a step at a time as the iterator is consumed, with one script call per step and
/// slot, so it is safe on a big keyspace. A lock taken or released during the walk may or
/// may not be listed; a step that fails ends the walk with its error.
///
/// # Errors
///
/// Each item is an error when a server cannot be reached or answers with an error
/// ([`Error::Unreachable`], [`Error::Timeout`], ...); no item follows it.
///
/// # Examples
///
/// ```no_run
/// use redis_mutex::{list_locks, Pool};
///
/// let pool = Pool::new("redis://127.0.0.1/")?;
/// for lock in list_locks(&pool) {
///     let lock = lock?;
///     println!("{} ({}) held by {}, expires in {:?}", lock.name, lock.kind, lock.owner_id, lock.expires_in);
/// }
/// # Ok::<(), redis_mutex::Error>(())
/// ```
pub fn list_locks(pool: &Pool) -> ListLocks {
    ListLocks {
        pool: pool.clone(),
        scheme: Scheme::of(pool),
        nodes: None,
        walk: None,
        found: VecDeque::new(),
        ended: false,
    }
}

/// The mutex named `name`, if it is held now: its owner id, remaining lease, fencing token
/// and fair waiters. What `redis-mutex owner NAME` shows.
///
/// # Errors
///
/// The errors of a request when Redis cannot be reached; [`Error::InvalidOptions`] for an
/// empty name; [`Error::WrongType`] when the lock's key holds another type (no lock can be
/// taken under the name).
///
/// # Examples
///
/// ```no_run
/// use redis_mutex::{lock_info, Pool};
///
/// let pool = Pool::new("redis://127.0.0.1/")?;
/// match lock_info(&pool, "nightly-report")? {
///     Some(held) => println!("held by {} for {:?} more", held.owner_id, held.expires_in),
///     None => println!("free"),
/// }
/// # Ok::<(), redis_mutex::Error>(())
/// ```
pub fn lock_info(pool: &Pool, name: &str) -> Result<Option<LockInfo>> {
    if name.is_empty() {
        return Err(Error::invalid("name", "the lock name is empty"));
    }
    let keys = MutexKeys::new(name, Scheme::of(pool));
    let mut call = LIST.call();
    call.arg("mutex")
        .key(&keys.lock)
        .key(&keys.grant)
        .key(&keys.waiters);
    let mut ran = conn::run_repeatable(
        pool,
        &keys.lock,
        Deadline::after(pool.response_timeout()),
        |c| call.invoke::<Vec<redis::Value>>(c),
    )?;
    let reply = ran
        .result
        .map_err(|e| ran.conn.fail(e, name, "lock_info"))?;
    let info = reply
        .into_iter()
        .next()
        .ok_or(Error::Protocol { what: "lock_info" })?;
    match mutex_info(name, &keys.lock, info)? {
        Some(info) if info.kind == LockKind::NotALock => Err(Error::WrongType {
            name: name.to_owned(),
            key: Some(info.key),
        }),
        info => Ok(info),
    }
}

/// How the last grant of a mutex ended, as [`last_release`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Released {
    /// Its holder released it: `unlock`, or a guard dropped.
    ByHolder {
        /// The fencing token of the grant released.
        fencing_token: u64,
    },
    /// It was reset: [`RedisMutex::reset`](crate::RedisMutex::reset), [`reset_owned_by`],
    /// [`reset_all`] or the CLI's `reset`, whoever held it.
    ///
    /// [`reset_owned_by`]: crate::reset_owned_by
    /// [`reset_all`]: crate::reset_all
    ByReset {
        /// The fencing token of the grant reset, when it was one of this crate's grants.
        fencing_token: Option<u64>,
    },
}

/// How the last grant of the mutex `name` ended, while Redis remembers it: a release or a
/// reset by this crate leaves a note for twice the response timeout, at least 10 s
/// (`lock-released:<name>`). `None` when there is no note: the lock was never released in
/// that time, it expired, or a client that leaves no note (python-redis-lock, an
/// operator's `DEL`) removed it. What `redis-mutex watch` tells apart with it.
///
/// # Errors
///
/// The errors of a request when Redis cannot be reached; [`Error::InvalidOptions`] for an
/// empty name.
///
/// # Examples
///
/// ```no_run
/// use redis_mutex::{last_release, lock_info, Pool, Released};
///
/// let pool = Pool::new("redis://127.0.0.1/")?;
/// if lock_info(&pool, "nightly-report")?.is_none() {
///     match last_release(&pool, "nightly-report")? {
///         Some(Released::ByReset { .. }) => println!("an operator reset it"),
///         Some(_) => println!("its holder let go"),
///         None => println!("it expired, or was never held"),
///     }
/// }
/// # Ok::<(), redis_mutex::Error>(())
/// ```
pub fn last_release(pool: &Pool, name: &str) -> Result<Option<Released>> {
    if name.is_empty() {
        return Err(Error::invalid("name", "the lock name is empty"));
    }
    let keys = MutexKeys::new(name, Scheme::of(pool));
    let mut ran = conn::run_repeatable(
        pool,
        &keys.lock,
        Deadline::after(pool.response_timeout()),
        |c| {
            redis::cmd("GET")
                .arg(&keys.released)
                .query::<Option<String>>(&mut **c)
        },
    )?;
    let note = ran
        .result
        .map_err(|e| ran.conn.fail(e, name, "last_release"))?;
    Ok(note.and_then(|note| parse_release_note(&note)))
}

/// A release's note (`lock-released:<name>`): `<token>` for a release, `reset|<token>` (or
/// `reset|`) for a reset.
fn parse_release_note(note: &str) -> Option<Released> {
    match note.strip_prefix("reset|") {
        Some(token) => Some(Released::ByReset {
            fencing_token: token.parse().ok(),
        }),
        None => note
            .parse()
            .ok()
            .map(|fencing_token| Released::ByHolder { fencing_token }),
    }
}

/// The walk of [`list_locks`]: an iterator of the locks held now.
pub struct ListLocks {
    pool: Pool,
    scheme: Scheme,
    /// The primaries still to walk; `None` before the first step.
    nodes: Option<VecDeque<Arc<Node>>>,
    /// The primary being walked: its connection, the index of the key family in
    /// [`Family::ALL`], the cursor.
    walk: Option<(Conn, usize, u64)>,
    found: VecDeque<LockInfo>,
    ended: bool,
}

impl fmt::Debug for ListLocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListLocks")
            .field("pool", &self.pool)
            .field("found", &self.found.len())
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl Iterator for ListLocks {
    type Item = Result<LockInfo>;

    fn next(&mut self) -> Option<Result<LockInfo>> {
        loop {
            if let Some(info) = self.found.pop_front() {
                return Some(Ok(info));
            }
            if self.ended {
                return None;
            }
            if let Err(e) = self.step() {
                self.ended = true;
                return Some(Err(e));
            }
        }
    }
}

impl ListLocks {
    /// One `SCAN` step, or the move to the next family or primary; ends the walk after the
    /// last.
    fn step(&mut self) -> Result<()> {
        if self.nodes.is_none() {
            self.nodes = Some(self.pool.primaries()?.into());
        }
        let Some((conn, family, cursor)) = &mut self.walk else {
            match self.nodes.as_mut().and_then(VecDeque::pop_front) {
                Some(node) => self.walk = Some((node_conn(&self.pool, &node)?, 0, 0)),
                None => self.ended = true,
            }
            return Ok(());
        };
        let kind = Family::ALL[*family];
        let (next, keys) = scan_step(conn, kind.pattern(), *cursor)?;
        let cluster = self.scheme == Scheme::Cluster;
        let found = match kind {
            Family::Mutex => mutexes(conn, keys, self.scheme, cluster)?,
            Family::RwLock => leases(conn, keys, self.scheme, cluster)?,
            Family::Semaphore => semaphores(conn, keys, self.scheme)?,
        };
        self.found.extend(found);
        *cursor = next;
        if next == 0 {
            *family += 1;
            if *family == Family::ALL.len() {
                self.walk = None;
            }
        }
        Ok(())
    }
}

/// `list.lua` of `kind` (`mutex` or `rwlock`) over `keys`, one call per slot, each key
/// passed with its `siblings` (prefixes of the keys read beside it): each key with its
/// reply.
fn list_script<T: redis::FromRedisValue>(
    conn: &mut Conn,
    keys: Vec<Vec<u8>>,
    cluster: bool,
    (kind, siblings): (&str, &[&str]),
) -> Result<Vec<(Vec<u8>, T)>> {
    let keyed = keys.into_iter().map(|k| (k.clone(), k)).collect();
    let mut listed = Vec::new();
    for group in by_slot(keyed, cluster) {
        let mut call = LIST.call();
        call.arg(kind);
        for key in &group {
            call.key(key);
            for prefix in siblings {
                call.key(sibling_of(key, prefix));
            }
        }
        let reply: Vec<T> = call.invoke(conn).map_err(|e| conn.fail(e, "", "list"))?;
        if reply.len() != group.len() {
            return Err(Error::Protocol { what: "list" });
        }
        listed.extend(group.into_iter().zip(reply));
    }
    Ok(listed)
}

/// The mutexes among `keys` (lock keys a `SCAN` found), with what they hold.
fn mutexes(
    conn: &mut Conn,
    keys: Vec<Vec<u8>>,
    scheme: Scheme,
    cluster: bool,
) -> Result<Vec<LockInfo>> {
    let listed = list_script(
        conn,
        keys,
        cluster,
        ("mutex", &[GRANT_PREFIX, WAITERS_PREFIX]),
    )?;
    let mut found = Vec::new();
    for (key, info) in listed {
        let key = String::from_utf8_lossy(&key);
        if let Some(info) = mutex_info(name_of(&key, scheme), &key, info)? {
            found.push(info);
        }
    }
    Ok(found)
}

/// One mutex (its lock key `key`) from `list.lua`'s `{owner, pttl, marker, waiters, type}`;
/// `None` when it is not held, [`LockKind::NotALock`] when its key holds another type.
fn mutex_info(name: &str, key: &str, reply: redis::Value) -> Result<Option<LockInfo>> {
    let bad = || Error::Protocol { what: "list" };
    let (owner, pttl, marker, waiters, kind): (Option<String>, i64, Option<String>, i64, String) =
        redis::from_redis_value(reply).map_err(|_| bad())?;
    let expires_in = u64::try_from(pttl).ok().map(Duration::from_millis);
    if kind != "string" && kind != "none" {
        return Ok(Some(not_a_lock(name, key, expires_in)));
    }
    let Some(owner_id) = owner else {
        return Ok(None);
    };
    // The marker's token is this grant's only if the marker names the same owner.
    let fencing_token = marker
        .filter(|marker| marker_owner(marker) == Some(&*owner_id))
        .and_then(|marker| marker_token(&marker));
    Ok(Some(LockInfo {
        name: name.to_owned(),
        kind: LockKind::Mutex,
        owner_id,
        expires_in,
        fencing_token,
        waiters: usize::try_from(waiters).ok(),
        key: key.to_owned(),
        permits: None,
    }))
}

/// What is listed for `key`, where a lock named `name` would be, holding another type.
fn not_a_lock(name: &str, key: &str, expires_in: Option<Duration>) -> LockInfo {
    LockInfo {
        name: name.to_owned(),
        kind: LockKind::NotALock,
        owner_id: String::new(),
        expires_in,
        fencing_token: None,
        waiters: None,
        key: key.to_owned(),
        permits: None,
    }
}

/// The grants of the semaphores whose holder sets are `keys`, one call of `semaphore.lua`'s
/// `state` per semaphore.
fn semaphores(conn: &mut Conn, keys: Vec<Vec<u8>>, scheme: Scheme) -> Result<Vec<LockInfo>> {
    let bad = || Error::Protocol { what: "list" };
    let mut found = Vec::new();
    for key in keys {
        let text = String::from_utf8_lossy(&key).into_owned();
        let reply: Vec<redis::Value> = match semaphore_call(&key, "state").invoke(conn) {
            Ok(reply) => reply,
            Err(e) if e.code() == Some("WRONGTYPE") => {
                found.push(not_a_lock(semaphore_name_of(&text, scheme), &text, None));
                continue;
            }
            Err(e) => return Err(conn.fail(e, "semaphore:*", "list")),
        };
        let (set, in_use, waiters, rest): (i64, i64, i64, Vec<(String, i64)>) = match &reply[..] {
            [set, in_use, waiters, rest @ ..] => (
                redis::from_redis_value(set.clone()).map_err(|_| bad())?,
                redis::from_redis_value(in_use.clone()).map_err(|_| bad())?,
                redis::from_redis_value(waiters.clone()).map_err(|_| bad())?,
                redis::from_redis_value(redis::Value::Array(rest.to_vec())).map_err(|_| bad())?,
            ),
            _ => return Err(bad()),
        };
        let grants: Vec<_> = rest
            .iter()
            .filter_map(|(member, left)| Some((parse_member(member)?, *left)))
            .collect();
        // The capacity in force: set_permits', else the latest grant's.
        let capacity = u32::try_from(set)
            .ok()
            .or_else(|| grants.last().map(|((_, capacity, _), _)| *capacity))
            .unwrap_or_default();
        let name = semaphore_name_of(&text, scheme);
        for ((held, _, lease), left) in grants {
            found.push(LockInfo {
                name: name.to_owned(),
                kind: LockKind::Semaphore,
                owner_id: lease.to_owned(),
                expires_in: u64::try_from(left).ok().map(Duration::from_millis),
                fencing_token: None,
                waiters: usize::try_from(waiters).ok(),
                key: text.clone(),
                permits: Some(PermitsInfo {
                    held,
                    in_use: u32::try_from(in_use).unwrap_or_default(),
                    capacity,
                }),
            });
        }
    }
    Ok(found)
}

/// A holder set as `list.lua` reads it: the key's type, and `(lease id, milliseconds left
/// or -1)` for each live entry.
type HolderSet = (String, Vec<(String, i64)>);

/// The read and write leases in the holder sets among `keys` (read-write lock keys a `SCAN`
/// found).
fn leases(
    conn: &mut Conn,
    keys: Vec<Vec<u8>>,
    scheme: Scheme,
    cluster: bool,
) -> Result<Vec<LockInfo>> {
    let holders: Vec<Vec<u8>> = keys
        .into_iter()
        .filter(|key| {
            std::str::from_utf8(key)
                .ok()
                .and_then(parse_key)
                .is_some_and(|(kind, _)| kind == "w" || kind == "r")
        })
        .collect();
    if holders.is_empty() {
        return Ok(Vec::new());
    }
    let listed: Vec<(_, HolderSet)> = list_script(conn, holders, cluster, ("rwlock", &[]))?;
    let mut found = Vec::new();
    for (key, (kind, entries)) in listed {
        let key = String::from_utf8_lossy(&key);
        let Some((set, level)) = parse_key(&key) else {
            continue;
        };
        let path = path_of(level, scheme);
        if kind != "zset" && kind != "none" {
            found.push(not_a_lock(&path, &key, None));
            continue;
        }
        let kind = if set == "w" {
            LockKind::Write
        } else {
            LockKind::Read
        };
        found.extend(entries.into_iter().map(|(lease, left)| LockInfo {
            name: path.clone(),
            kind,
            owner_id: lease,
            expires_in: u64::try_from(left).ok().map(Duration::from_millis),
            fencing_token: None,
            waiters: None,
            key: key.to_string(),
            permits: None,
        }));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_notes_tell_a_release_from_a_reset() {
        assert_eq!(
            parse_release_note("42"),
            Some(Released::ByHolder { fencing_token: 42 })
        );
        assert_eq!(
            parse_release_note("reset|42"),
            Some(Released::ByReset {
                fencing_token: Some(42)
            })
        );
        assert_eq!(
            parse_release_note("reset|"),
            Some(Released::ByReset {
                fencing_token: None
            })
        );
        assert_eq!(parse_release_note("junk"), None);
    }
}
