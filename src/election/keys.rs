//! An election's keys. Its leader holds a mutex of the elections' namespace
//! (`election:<name>`, `election-grant:<name>`, ...: no python-redis-lock client takes
//! them); beside it, the proclaimed value and the observers, all under one hash tag on a
//! cluster.

use crate::keys::{Scheme, tagged};
use crate::mutex::{ELECTION_KEYS, Sibling};

/// The prefix of an election's proclaimed value.
const VALUE_PREFIX: &str = "election-value:";

/// Every key of one election the election itself reads or writes (its leader's mutex
/// knows the rest).
#[derive(Debug, Clone)]
pub(super) struct ElectionKeys {
    /// `election:<name>`: the leader's owner id, for its lease.
    pub(super) lock: String,
    /// `election-grant:<name>`: `"<attempt>|<term>|<owner id>"` of the current term.
    pub(super) grant: String,
    /// `election-value:<name>`: a hash of the term, owner and value proclaimed, living as
    /// long as the leader's lease.
    pub(super) value: String,
    /// `election-observers:<name>`: each observer's id, scored with when its registration
    /// ends (ms since 1970).
    pub(super) observers: String,
    /// `election-observe:<name>:`: followed by an observer's id, the list a change wakes it
    /// on.
    pub(super) observe_prefix: String,
}

impl ElectionKeys {
    pub(super) fn new(name: &str, scheme: Scheme) -> ElectionKeys {
        let tagged = tagged(name, scheme);
        let lock = format!("{}{tagged}", ELECTION_KEYS.lock);
        let grant = String::from_utf8_lossy(&ELECTION_KEYS.beside(lock.as_bytes(), Sibling::Grant))
            .into_owned();
        ElectionKeys {
            grant,
            value: format!("{VALUE_PREFIX}{tagged}"),
            observers: format!("election-observers:{tagged}"),
            observe_prefix: format!("election-observe:{tagged}:"),
            lock,
        }
    }

    /// The list that wakes the observer `id`.
    pub(super) fn observe(&self, id: &str) -> String {
        format!("{}{id}", self.observe_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::hash_tag;

    #[test]
    fn keys_are_not_python_redis_locks() {
        let keys = ElectionKeys::new("leader", Scheme::Single);
        assert_eq!(keys.lock, "election:leader");
        assert_eq!(keys.grant, "election-grant:leader");
        assert_eq!(keys.value, "election-value:leader");
        for key in [&keys.lock, &keys.grant, &keys.value, &keys.observers] {
            assert!(!key.starts_with("lock:"), "{key}");
        }
    }

    #[test]
    fn cluster_keys_of_one_election_share_a_hash_tag() {
        let keys = ElectionKeys::new("leader", Scheme::Cluster);
        let tag = hash_tag(&keys.lock);
        assert_eq!(tag, Some("leader"));
        for key in [
            &keys.grant,
            &keys.value,
            &keys.observers,
            &keys.observe("o1"),
        ] {
            assert_eq!(hash_tag(key), tag, "{key}");
        }
    }
}
