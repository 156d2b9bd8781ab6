//! A mutex's keys: python-redis-lock's `lock:<name>` and `lock-signal:<name>`, and this
//! crate's own beside them (the grant marker, the note of a release, fair mode's queue), all
//! under one hash tag on a cluster.

use crate::keys::{Scheme, fencing_counter, tagged, untagged};

/// The prefix of a mutex's key, for every scheme (python-redis-lock's).
pub(super) const LOCK_PREFIX: &str = "lock:";

/// The prefix of a mutex's signal list.
pub(super) const SIGNAL_PREFIX: &str = "lock-signal:";

/// Every key of one mutex.
#[derive(Debug, Clone)]
pub(super) struct MutexKeys {
    /// `lock:<name>`: the owner id of the holder (python-redis-lock's).
    pub(super) lock: String,
    /// `lock-signal:<name>`: one element per release, for one waiter to pop
    /// (python-redis-lock's).
    pub(super) signal: String,
    /// The fencing counter every grant increments.
    pub(super) fencing: String,
    /// `lock-grant:<name>`: the id of the attempt that made the latest grant, so that an
    /// undo after a lost reply removes that grant and no other (this crate's own).
    pub(super) grant: String,
    /// `lock-released:<name>`: the token of the grant released last, for a moment, for
    /// [`last_release`](super::last_release) (this crate's own).
    pub(super) released: String,
    /// `lock-done:<name>:`: followed by a request's id, the note that the request is done,
    /// released or undone, for a moment: a release sent twice (its first reply lost with
    /// its connection) is told it happened, and a grant a late copy of the request made is
    /// taken back (this crate's own).
    pub(super) done_prefix: String,
    /// `lock-queue:<name>`: fair mode's waiters, in order of arrival (this crate's own).
    pub(super) queue: String,
    /// `lock-waiters:<name>`: each fair waiter's deadline, lease and owner id (this
    /// crate's own).
    pub(super) waiters: String,
    /// `lock-wake:<name>:`: followed by a waiter's id, the list fair mode hands the lock
    /// to that waiter on (this crate's own).
    pub(super) wake_prefix: String,
}

impl MutexKeys {
    pub(super) fn new(name: &str, scheme: Scheme) -> MutexKeys {
        let tagged = tagged(name, scheme);
        let lock = format!("{LOCK_PREFIX}{tagged}");
        MutexKeys {
            fencing: fencing_counter(&lock, scheme),
            signal: format!("{SIGNAL_PREFIX}{tagged}"),
            grant: format!("{GRANT_PREFIX}{tagged}"),
            released: format!("{RELEASED_PREFIX}{tagged}"),
            done_prefix: format!("lock-done:{tagged}:"),
            queue: format!("lock-queue:{tagged}"),
            waiters: format!("{WAITERS_PREFIX}{tagged}"),
            wake_prefix: format!("lock-wake:{tagged}:"),
            lock,
        }
    }

    /// The list fair mode hands the lock to the waiter `waiter` on.
    pub(super) fn wake(&self, waiter: &str) -> String {
        format!("{}{waiter}", self.wake_prefix)
    }

    /// The note that the request `id` is done.
    pub(super) fn done(&self, id: &str) -> String {
        format!("{}{id}", self.done_prefix)
    }
}

/// The prefix of a mutex's grant marker.
pub(super) const GRANT_PREFIX: &str = "lock-grant:";

/// The fencing token a grant marker names: its value is `"<attempt>|<token>|<owner id>"`
/// (the owner id may itself contain `|`). `None` for a value of another shape.
pub(super) fn marker_token(marker: &str) -> Option<u64> {
    marker.split('|').nth(1)?.parse().ok()
}

/// The owner id a grant marker names.
pub(super) fn marker_owner(marker: &str) -> Option<&str> {
    marker.splitn(3, '|').nth(2)
}

/// The prefix of a fair mutex's waiters.
pub(super) const WAITERS_PREFIX: &str = "lock-waiters:";

/// The prefix of a release's tombstone.
pub(super) const RELEASED_PREFIX: &str = "lock-released:";

/// The lock name a mutex's key stands for, as a person would give it: on a cluster, without
/// the braces this crate added.
pub(super) fn name_of(lock_key: &str, scheme: Scheme) -> &str {
    untagged(
        lock_key.strip_prefix(LOCK_PREFIX).unwrap_or(lock_key),
        scheme,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::hash_tag;
    use redis::cluster_routing::Slot;

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
                &keys.done("a"),
            ] {
                assert_eq!(hash_tag(key), tag, "{name:?}: {key}");
            }
        }
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
