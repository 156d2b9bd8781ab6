//! A mutex's keys: python-redis-lock's `lock:<name>` and `lock-signal:<name>`, and this
//! crate's own beside them (the grant marker, the note of a release, fair mode's queue), all
//! under one hash tag on a cluster. An election's leader holds a mutex of its own
//! [`Namespace`], `election:<name>` and so on, which no python-redis-lock client takes.

use crate::keys::{Scheme, fencing_counter, tagged, untagged};

/// The prefixes of a mutex's keys: the locks' (python-redis-lock's) or the elections'.
#[derive(Debug)]
pub(crate) struct Namespace {
    pub(crate) lock: &'static str,
    signal: &'static str,
    grant: &'static str,
    released: &'static str,
    done: &'static str,
    queue: &'static str,
    waiters: &'static str,
    wake: &'static str,
}

/// The locks' keys: `lock:<name>`, python-redis-lock's.
pub(crate) static LOCKS: Namespace = Namespace {
    lock: "lock:",
    signal: "lock-signal:",
    grant: "lock-grant:",
    released: "lock-released:",
    done: "lock-done:",
    queue: "lock-queue:",
    waiters: "lock-waiters:",
    wake: "lock-wake:",
};

/// An election's leader's keys: `election:<name>`, never a python-redis-lock key.
pub(crate) static ELECTIONS: Namespace = Namespace {
    lock: "election:",
    signal: "election-signal:",
    grant: "election-grant:",
    released: "election-released:",
    done: "election-done:",
    queue: "election-queue:",
    waiters: "election-waiters:",
    wake: "election-wake:",
};

impl Namespace {
    /// The key of this namespace's `to` keys beside the lock key `key`.
    pub(crate) fn beside(&self, key: &[u8], to: Sibling) -> Vec<u8> {
        let to = match to {
            Sibling::Signal => self.signal,
            Sibling::Grant => self.grant,
            Sibling::Released => self.released,
            Sibling::Waiters => self.waiters,
        };
        crate::keys::sibling(key, self.lock, to)
    }

    /// The lock name a key of this namespace stands for, as a person would give it: on a
    /// cluster, without the braces this crate added.
    pub(crate) fn name_of<'k>(&self, lock_key: &'k str, scheme: Scheme) -> &'k str {
        untagged(lock_key.strip_prefix(self.lock).unwrap_or(lock_key), scheme)
    }
}

/// The keys beside a lock key that the operator tools read or clear.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Sibling {
    Signal,
    Grant,
    Released,
    Waiters,
}

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
    /// A key that lives as long as the lock, extended with it (an election's proclaimed
    /// value), if any.
    pub(super) kept: Option<String>,
}

impl MutexKeys {
    /// The keys of the mutex `name` (python-redis-lock's).
    pub(super) fn new(name: &str, scheme: Scheme) -> MutexKeys {
        MutexKeys::of(&LOCKS, name, scheme)
    }

    /// The keys of the mutex `name` in `space`.
    pub(super) fn of(space: &Namespace, name: &str, scheme: Scheme) -> MutexKeys {
        let tagged = tagged(name, scheme);
        let lock = format!("{}{tagged}", space.lock);
        MutexKeys {
            fencing: fencing_counter(&lock, scheme),
            signal: format!("{}{tagged}", space.signal),
            grant: format!("{}{tagged}", space.grant),
            released: format!("{}{tagged}", space.released),
            done_prefix: format!("{}{tagged}:", space.done),
            queue: format!("{}{tagged}", space.queue),
            waiters: format!("{}{tagged}", space.waiters),
            wake_prefix: format!("{}{tagged}:", space.wake),
            kept: None,
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

/// The fencing token a grant marker names: its value is `"<attempt>|<token>|<owner id>"`
/// (the owner id may itself contain `|`). `None` for a value of another shape.
pub(super) fn marker_token(marker: &str) -> Option<u64> {
    marker.split('|').nth(1)?.parse().ok()
}

/// The owner id a grant marker names.
pub(super) fn marker_owner(marker: &str) -> Option<&str> {
    marker.splitn(3, '|').nth(2)
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
        assert_eq!(LOCKS.name_of("lock:jobs", Scheme::Single), "jobs");
        assert_eq!(LOCKS.name_of("lock:{jobs}", Scheme::Cluster), "jobs");
        assert_eq!(LOCKS.name_of("lock:{jobs}", Scheme::Single), "{jobs}");
        assert_eq!(
            LOCKS.name_of("lock:tenant:{42}:jobs", Scheme::Cluster),
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
