//! What the operator tools need of a lock kind ([`Family`]: where its locks are, what they
//! hold, how to clear them), and what they report ([`LockInfo`]). Each kind implements it in
//! its folder (`mutex/family.rs`, ...); the tools in `admin/` walk the list of kinds and
//! know none of them.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use redis::FromRedisValue;
use redis::cluster_routing::Slot;

use crate::conn::Conn;
use crate::error::Result;
use crate::keys::{Scheme, tagged};
use crate::scripts::Call;

/// A lock kind, as the operator tools (`list_locks`, `reset_all`, `reset_owned_by`, the
/// `redis-mutex` command) see it. A kind's keys are found by one `SCAN` pattern, one key
/// per lock; the rest of its keys are derived from that one.
pub(crate) trait Family: Sync {
    /// The `SCAN` pattern that finds one key per lock of the kind (and no other of its
    /// keys).
    fn pattern(&self) -> &'static str;

    /// What the locks `found` by a `SCAN` step on `conn` hold now.
    fn list(&self, conn: &mut Conn, found: FoundKeys) -> Result<Vec<LockInfo>>;

    /// The keys a `SCAN` with [`pattern`](Family::pattern) would find for the lock named
    /// `name` (what [`list`](Family::list) reads for it), all of one slot on a cluster:
    /// by default the pattern with the name, tagged on a cluster, in place of its `*`. A
    /// kind whose keys are named otherwise says so; one that has none for `name` returns
    /// none.
    fn keys_named(&self, name: &str, scheme: Scheme) -> Vec<String> {
        vec![self.pattern().replacen('*', &tagged(name, scheme), 1)]
    }

    /// Removes the locks `found` (the grants of `owner` alone, if given) and wakes their
    /// waiters: how many grants it removed.
    fn clear(&self, conn: &mut Conn, found: FoundKeys, owner: Option<&str>) -> Result<usize>;

    /// Its scripts, which the registry's interface test reads.
    #[cfg(test)]
    fn scripts(&self) -> Vec<&'static std::sync::LazyLock<crate::scripts::Lua>>;
}

/// Keys of one kind that a walk found on one server (by its [`pattern`](Family::pattern),
/// or [`keys_named`](Family::keys_named)), and how that server names keys.
pub(crate) struct FoundKeys {
    pub(crate) keys: Vec<Vec<u8>>,
    pub(crate) scheme: Scheme,
}

/// A lock held now, as [`list_locks`](crate::list_locks) and [`lock_info`](crate::lock_info)
/// report it.
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
    /// The grant's fencing token, where it is known: grants of this crate's mutexes and of
    /// semaphore permits (not python-redis-lock's, nor read or write leases).
    pub fencing_token: Option<u64>,
    /// How many waiters are queued, where the protocol knows it: a fair mutex's queue, a
    /// semaphore's waiters.
    pub waiters: Option<usize>,
    /// The Redis key that holds it: `lock:<name>` (on a cluster `lock:{<name>}`) for a
    /// mutex, a holder set (`rwlock:w:<path>`, `rwlock:r:<path>`) for a read or write
    /// lease, `semaphore:<name>` for a semaphore's permits.
    pub key: String,
    /// For a grant of semaphore permits: how many it holds, and how many are held of how
    /// many in all.
    pub permits: Option<PermitsInfo>,
    /// For an election's leader: the value it proclaimed for its term (the term is the
    /// [`fencing_token`](Self::fencing_token)); `None` when its term has not proclaimed one.
    pub value: Option<String>,
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
    /// A [`Redlock`](crate::Redlock)'s key on this server (one of its instances): its
    /// `owner_id` is the grant's token.
    Redlock,
    /// The leader of a [`RedisElection`](crate::RedisElection): its term and proclaimed
    /// value are in [`LockInfo::fencing_token`] and [`LockInfo::value`].
    Election,
    /// Not a lock: the key where a lock of that name would be ([`LockInfo::key`]) holds
    /// another type (a list, a hash, ...), so no lock can be taken under the name until
    /// it is deleted, and every locking call fails with [`Error::WrongType`](crate::Error::WrongType). Its
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
            LockKind::Redlock => "redlock",
            LockKind::Election => "election",
            LockKind::NotALock => "not a lock",
        })
    }
}

impl LockInfo {
    /// A lock named `name` of `kind` at `key`, held by `owner_id` for `expires_in` more,
    /// without permits, token or waiters (the caller sets those it knows).
    pub(crate) fn held(
        name: &str,
        kind: LockKind,
        owner_id: String,
        expires_in: Option<Duration>,
        key: &str,
    ) -> LockInfo {
        LockInfo {
            name: name.to_owned(),
            kind,
            owner_id,
            expires_in,
            fencing_token: None,
            waiters: None,
            key: key.to_owned(),
            permits: None,
            value: None,
        }
    }
}

/// Milliseconds left as a script answers them (negative: no expiry) as a duration.
pub(crate) fn expires_in(ms: i64) -> Option<Duration> {
    u64::try_from(ms).ok().map(Duration::from_millis)
}

/// Calls a script once per slot among `keys` (a script may only touch keys of one slot on
/// a cluster; one call on a single server), built by `call` from that slot's keys: each
/// group of keys with its reply.
pub(crate) fn per_slot<T: FromRedisValue>(
    conn: &mut Conn,
    keys: Vec<Vec<u8>>,
    scheme: Scheme,
    what: &'static str,
    call: impl Fn(&[Vec<u8>]) -> Call,
) -> Result<Vec<(Vec<Vec<u8>>, T)>> {
    let groups: Vec<Vec<Vec<u8>>> = match scheme {
        Scheme::Single => vec![keys],
        Scheme::Cluster => {
            let mut groups: HashMap<Slot, Vec<Vec<u8>>> = HashMap::new();
            for key in keys {
                groups.entry(Slot::for_key(&key)).or_default().push(key);
            }
            groups.into_values().collect()
        }
    };
    let mut replies = Vec::with_capacity(groups.len());
    for group in groups {
        let reply = call(&group)
            .invoke(conn)
            .map_err(|e| conn.fail(e, "", what))?;
        replies.push((group, reply));
    }
    Ok(replies)
}

/// Each key of `per_slot`'s groups with its own part of its group's reply (a list, one per
/// key, in order).
pub(crate) fn each_key<T>(
    replies: Vec<(Vec<Vec<u8>>, Vec<T>)>,
    what: &'static str,
) -> Result<Vec<(Vec<u8>, T)>> {
    let mut each = Vec::new();
    for (keys, reply) in replies {
        if keys.len() != reply.len() {
            return Err(crate::error::Error::Protocol { what });
        }
        each.extend(keys.into_iter().zip(reply));
    }
    Ok(each)
}
