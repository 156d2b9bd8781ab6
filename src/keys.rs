//! Every key name a lock uses, computed in one place.
//!
//! On a single server (or behind Sentinel) the keys are python-redis-lock's: `lock:<name>`
//! and `lock-signal:<name>`, with one fencing counter, `lock-fencing-counter`, for every
//! lock. On a Redis Cluster every key of one lock must share a slot, so the name is wrapped
//! in a hash tag, `lock:{<name>}` (a name that carries a tag of its own keeps it), and the
//! fencing counter is one per tag, `lock-fencing-counter:{<tag>}`. Those are the keys
//! python-redis-lock uses for a lock named `{<name>}`, so Python clients on a cluster
//! share locks with this crate by writing the braces themselves.

mod rwlock;
mod semaphore;

pub(crate) use rwlock::{Mode, RwKeys, check_path, level_keys, parse_key, path_of};
pub(crate) use semaphore::{
    CAPACITY_PREFIX, QUEUE_PREFIX, RELEASED_PREFIX as SEMAPHORE_RELEASED_PREFIX, SemaphoreKeys,
    WAITERS_PREFIX as SEMAPHORE_WAITERS_PREFIX, WAKE_PREFIX, member, parse_member,
    semaphore_name_of, semaphore_sibling,
};

use std::collections::HashMap;
use std::sync::LazyLock;

use redis::cluster_routing::Slot;

use crate::Pool;

/// The key families of this crate's locks, as the operator tools (`list_locks`,
/// `reset_all`, `reset_owned_by`) walk them: each family's keys match one `SCAN` pattern.
/// A new lock kind adds its family here; the tools match on every family, so a kind they do
/// not handle does not compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// Mutexes (python-redis-lock's too): `lock:<name>`.
    Mutex,
    /// Read-write locks: `rwlock:<kind>:<path>`, a dozen sets and lists per level.
    RwLock,
    /// Semaphores: `semaphore:<name>`, the holders (and keys beside it).
    Semaphore,
}

impl Family {
    /// Every family, in the order the tools walk them.
    pub(crate) const ALL: [Family; 3] = [Family::Mutex, Family::RwLock, Family::Semaphore];

    /// The `SCAN` pattern that finds the family's keys.
    pub(crate) fn pattern(self) -> &'static str {
        match self {
            Family::Mutex => "lock:*",
            Family::RwLock => "rwlock:*",
            Family::Semaphore => "semaphore:*",
        }
    }
}

/// How a pool lays keys out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// One server: python-redis-lock's keys, as they are.
    Single,
    /// A Redis Cluster: every key of a lock carries the same hash tag.
    Cluster,
}

impl Scheme {
    pub(crate) fn of(pool: &Pool) -> Scheme {
        if pool.is_cluster() {
            Scheme::Cluster
        } else {
            Scheme::Single
        }
    }
}

/// The prefix of a mutex's key, for every scheme (python-redis-lock's).
pub(crate) const LOCK_PREFIX: &str = "lock:";

/// The prefix of a mutex's signal list.
pub(crate) const SIGNAL_PREFIX: &str = "lock-signal:";

/// The fencing counter of a single server.
const FENCING_COUNTER: &str = "lock-fencing-counter";

/// The hash tag of `key` as Redis Cluster reads it: what lies between the first `{` and
/// the first `}` after it, if that is not empty.
pub(crate) fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let close = key[open + 1..].find('}')?;
    let tag = &key[open + 1..open + 1 + close];
    (!tag.is_empty()).then_some(tag)
}

/// `name` as it goes into a key: on a cluster, wrapped in braces unless it has a hash tag
/// of its own.
fn tagged(name: &str, scheme: Scheme) -> String {
    match scheme {
        Scheme::Cluster if hash_tag(name).is_none() => format!("{{{name}}}"),
        _ => name.to_owned(),
    }
}

/// The fencing counter for the lock whose key is `key`: on a single server, the one counter;
/// on a cluster, the counter of `key`'s slot, `lock-fencing-counter:{<n>}` with the number
/// `n` whose hash tag falls in that slot. So a cluster has at most one counter per slot
/// (16,384), however many names are locked, and every key of a lock shares its slot.
fn fencing_counter(key: &str, scheme: Scheme) -> String {
    match scheme {
        Scheme::Cluster => format!("{FENCING_COUNTER}:{{{}}}", SLOT_TAGS[&Slot::for_key(key)]),
        Scheme::Single => FENCING_COUNTER.to_owned(),
    }
}

/// For every cluster slot, the smallest number whose decimal digits, as a hash tag, fall in
/// it: found once, by trying numbers in turn (about 160,000 hashes).
static SLOT_TAGS: LazyLock<HashMap<Slot, u32>> = LazyLock::new(|| {
    const SLOTS: usize = 16_384;
    let mut tags = HashMap::with_capacity(SLOTS);
    let mut n: u32 = 0;
    while tags.len() < SLOTS {
        tags.entry(Slot::for_key(n.to_string())).or_insert(n);
        n += 1;
    }
    tags
});

/// Every key of one mutex.
#[derive(Debug, Clone)]
pub(crate) struct MutexKeys {
    /// `lock:<name>`: the owner id of the holder (python-redis-lock's).
    pub(crate) lock: String,
    /// `lock-signal:<name>`: one element per release, for one waiter to pop
    /// (python-redis-lock's).
    pub(crate) signal: String,
    /// The fencing counter every grant increments.
    pub(crate) fencing: String,
    /// `lock-grant:<name>`: the id of the attempt that made the latest grant, so that an
    /// undo after a lost reply removes that grant and no other (this crate's own).
    pub(crate) grant: String,
    /// `lock-released:<name>`: the token of the grant released last, for a moment, so that
    /// a release sent twice (its first reply lost with its connection) is told it happened
    /// (this crate's own).
    pub(crate) released: String,
    /// `lock-queue:<name>`: fair mode's waiters, in order of arrival (this crate's own).
    pub(crate) queue: String,
    /// `lock-waiters:<name>`: each fair waiter's deadline, lease and owner id (this
    /// crate's own).
    pub(crate) waiters: String,
    /// `lock-wake:<name>:`: followed by a waiter's id, the list fair mode hands the lock
    /// to that waiter on (this crate's own).
    pub(crate) wake_prefix: String,
}

impl MutexKeys {
    pub(crate) fn new(name: &str, scheme: Scheme) -> MutexKeys {
        let tagged = tagged(name, scheme);
        let lock = format!("{LOCK_PREFIX}{tagged}");
        MutexKeys {
            fencing: fencing_counter(&lock, scheme),
            signal: format!("{SIGNAL_PREFIX}{tagged}"),
            grant: format!("{GRANT_PREFIX}{tagged}"),
            released: format!("{RELEASED_PREFIX}{tagged}"),
            queue: format!("lock-queue:{tagged}"),
            waiters: format!("{WAITERS_PREFIX}{tagged}"),
            wake_prefix: format!("lock-wake:{tagged}:"),
            lock,
        }
    }

    /// The list fair mode hands the lock to the waiter `waiter` on.
    pub(crate) fn wake(&self, waiter: &str) -> String {
        format!("{}{waiter}", self.wake_prefix)
    }
}

/// The prefix of a mutex's grant marker.
pub(crate) const GRANT_PREFIX: &str = "lock-grant:";

/// The fencing token a grant marker names: its value is `"<attempt>|<token>|<owner id>"`
/// (the owner id may itself contain `|`). `None` for a value of another shape.
pub(crate) fn marker_token(marker: &str) -> Option<u64> {
    marker.split('|').nth(1)?.parse().ok()
}

/// The owner id a grant marker names.
pub(crate) fn marker_owner(marker: &str) -> Option<&str> {
    marker.splitn(3, '|').nth(2)
}

/// The prefix of a fair mutex's waiters.
pub(crate) const WAITERS_PREFIX: &str = "lock-waiters:";

/// The prefix of a release's tombstone.
pub(crate) const RELEASED_PREFIX: &str = "lock-released:";

/// The key with `prefix` of the mutex whose lock key is `lock_key` (its signal list, its
/// grant marker, ...), for tools that found the lock key by `SCAN`.
pub(crate) fn sibling_of(lock_key: &[u8], prefix: &str) -> Vec<u8> {
    let mut key = prefix.as_bytes().to_vec();
    key.extend_from_slice(&lock_key[LOCK_PREFIX.len().min(lock_key.len())..]);
    key
}

/// The lock name a mutex's key stands for, as a person would give it: on a cluster, without
/// the braces this crate added.
pub(crate) fn name_of(lock_key: &str, scheme: Scheme) -> &str {
    untagged(
        lock_key.strip_prefix(LOCK_PREFIX).unwrap_or(lock_key),
        scheme,
    )
}

/// A name as it went into a key ([`tagged`]), as it was given.
fn untagged(tagged: &str, scheme: Scheme) -> &str {
    match scheme {
        Scheme::Cluster => tagged
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .filter(|inner| !inner.contains(['{', '}']))
            .unwrap_or(tagged),
        Scheme::Single => tagged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_tags_follow_the_cluster_spec() {
        assert_eq!(hash_tag("lock:{jobs}"), Some("jobs"));
        assert_eq!(hash_tag("{user1000}.following"), Some("user1000"));
        assert_eq!(hash_tag("foo{}{bar}"), None);
        assert_eq!(hash_tag("foo{{bar}}zap"), Some("{bar"));
        assert_eq!(hash_tag("foo{bar}{zap}"), Some("bar"));
        assert_eq!(hash_tag("plain"), None);
        assert_eq!(hash_tag("open{only"), None);
    }

    #[test]
    fn single_server_keys_are_python_redis_locks() {
        let keys = MutexKeys::new("jobs", Scheme::Single);
        assert_eq!(keys.lock, "lock:jobs");
        assert_eq!(keys.signal, "lock-signal:jobs");
        assert_eq!(keys.fencing, "lock-fencing-counter");
        assert_eq!(keys.grant, "lock-grant:jobs");
        let braces = MutexKeys::new("{jobs}", Scheme::Single);
        assert_eq!(braces.lock, "lock:{jobs}");
        assert_eq!(braces.fencing, "lock-fencing-counter");
    }

    #[test]
    fn cluster_keys_of_one_lock_share_a_hash_tag() {
        let keys = MutexKeys::new("jobs", Scheme::Cluster);
        assert_eq!(keys.lock, "lock:{jobs}");
        assert_eq!(keys.signal, "lock-signal:{jobs}");
        // The counter of the slot, not of the name.
        assert_eq!(Slot::for_key(&keys.fencing), Slot::for_key(&keys.lock));
        assert!(keys.fencing.starts_with("lock-fencing-counter:{"));
        assert_eq!(keys.wake("w1"), "lock-wake:{jobs}:w1");
        // A name with a tag of its own keeps it: python's `Lock(conn, "{jobs}")` keys.
        assert_eq!(
            MutexKeys::new("{jobs}", Scheme::Cluster).lock,
            "lock:{jobs}"
        );
        let own = MutexKeys::new("tenant:{42}:jobs", Scheme::Cluster);
        assert_eq!(own.lock, "lock:tenant:{42}:jobs");
        assert_eq!(Slot::for_key(&own.fencing), Slot::for_key("{42}"));
        // Odd names still give keys of one tag.
        for name in ["{}x", "a}b", "{a{b}", "", "{", "}"] {
            let keys = MutexKeys::new(name, Scheme::Cluster);
            let tag = hash_tag(&keys.lock);
            assert_eq!(
                Slot::for_key(&keys.fencing),
                Slot::for_key(&keys.lock),
                "{name:?}"
            );
            for key in [
                &keys.signal,
                &keys.grant,
                &keys.released,
                &keys.queue,
                &keys.waiters,
                &keys.wake("w"),
            ] {
                assert_eq!(hash_tag(key), tag, "{name:?}: {key}");
            }
        }
    }

    #[test]
    fn a_cluster_has_one_counter_per_slot_whatever_the_names() {
        let counters: std::collections::HashSet<String> = (0..50_000)
            .map(|i| MutexKeys::new(&format!("invoice:{i}"), Scheme::Cluster).fencing)
            .collect();
        assert!(counters.len() <= 16_384, "{} counters", counters.len());
        assert_eq!(SLOT_TAGS.len(), 16_384);
    }

    #[test]
    fn names_come_back_from_keys() {
        assert_eq!(name_of("lock:jobs", Scheme::Single), "jobs");
        assert_eq!(name_of("lock:{jobs}", Scheme::Cluster), "jobs");
        assert_eq!(name_of("lock:{jobs}", Scheme::Single), "{jobs}");
        assert_eq!(
            name_of("lock:tenant:{42}:jobs", Scheme::Cluster),
            "tenant:{42}:jobs"
        );
        assert_eq!(
            sibling_of(b"lock:{jobs}", SIGNAL_PREFIX),
            b"lock-signal:{jobs}"
        );
        assert_eq!(
            sibling_of(b"lock:{jobs}", GRANT_PREFIX),
            b"lock-grant:{jobs}"
        );
    }

    #[test]
    fn a_marker_names_its_token_and_owner() {
        assert_eq!(marker_token("0a1b|42|w1"), Some(42));
        assert_eq!(marker_owner("0a1b|42|w1"), Some("w1"));
        assert_eq!(marker_token("0a1b|42|owner|with|bars"), Some(42));
        assert_eq!(
            marker_owner("0a1b|42|owner|with|bars"),
            Some("owner|with|bars")
        );
        assert_eq!(marker_token("garbage"), None);
        assert_eq!(marker_token("a|x|w"), None);
        assert_eq!(marker_owner("a|1"), None);
    }
}
