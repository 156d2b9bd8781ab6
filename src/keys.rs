//! What every lock kind's keys share: hash tags on a cluster (every key of one lock under
//! one tag, so in one slot), and the fencing counters (one for a single server, one per
//! slot on a cluster). Each kind's own keys are in its folder (`mutex/keys.rs`, ...).

use std::collections::HashMap;
use std::sync::LazyLock;

use redis::cluster_routing::Slot;

use crate::error::{Error, Result};
use crate::pool::Pool;

/// The longest name a lock may have, in bytes: a mutex's or a semaphore's name, a
/// read-write lock's path, a Redlock's resource. Every request carries the name, some of
/// them several times; a longer one is refused with [`Error::InvalidOptions`].
pub const MAX_NAME_LEN: usize = 1024;

/// Refuses a name longer than [`MAX_NAME_LEN`]; `field` is the option or argument.
pub(crate) fn check_name_len(field: &'static str, name: &str) -> Result<()> {
    if name.len() <= MAX_NAME_LEN {
        return Ok(());
    }
    Err(Error::invalid(
        field,
        format!(
            "it is {} bytes long, more than the {MAX_NAME_LEN} a lock name may have; name \
             the lock by a short key (a digest of the long one, say)",
            name.len()
        ),
    ))
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

/// The hash tag given on a cluster to the names that start with `}`: wrapped as `{}x}`,
/// such a name's tag would be empty, and Redis hashes a key without a tag whole, so each key
/// of the lock would fall in a slot of its own. They share the tag `{~` instead: `}x` goes
/// into keys as `{{~}x}` (the same lock as the name `{{~}x}` given as is, as `jobs` is the
/// same as `{jobs}`).
const CLOSING_BRACE_WRAP: &str = "{{~";

/// `name` as it goes into a key: on a cluster, wrapped in braces unless it has a hash tag
/// of its own (see [`CLOSING_BRACE_WRAP`] for a name that starts with `}`).
pub(crate) fn tagged(name: &str, scheme: Scheme) -> String {
    match scheme {
        Scheme::Cluster if hash_tag(name).is_none() && name.starts_with('}') => {
            format!("{CLOSING_BRACE_WRAP}{name}}}")
        }
        Scheme::Cluster if hash_tag(name).is_none() => format!("{{{name}}}"),
        _ => name.to_owned(),
    }
}

/// The fencing counter for the lock whose key is `key`: on a single server, the one counter;
/// on a cluster, the counter of `key`'s slot, `lock-fencing-counter:{<n>}` with the number
/// `n` whose hash tag falls in that slot. So a cluster has at most one counter per slot
/// (16,384), however many names are locked, and every key of a lock shares its slot.
pub(crate) fn fencing_counter(key: &str, scheme: Scheme) -> String {
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

/// A name as it went into a key ([`tagged`]), as it was given.
pub(crate) fn untagged(tagged: &str, scheme: Scheme) -> &str {
    match scheme {
        Scheme::Cluster => tagged
            .strip_prefix(CLOSING_BRACE_WRAP)
            .and_then(|t| t.strip_suffix('}'))
            .filter(|inner| inner.starts_with('}') && hash_tag(inner).is_none())
            .or_else(|| {
                tagged
                    .strip_prefix('{')
                    .and_then(|t| t.strip_suffix('}'))
                    .filter(|inner| !inner.contains(['{', '}']))
            })
            .unwrap_or(tagged),
        Scheme::Single => tagged,
    }
}

/// `key` with its prefix `from` replaced by `to`: a key beside one that a `SCAN` found (a
/// mutex's marker beside its lock key, a semaphore's capacity beside its holders, ...).
pub(crate) fn sibling(key: &[u8], from: &str, to: &str) -> Vec<u8> {
    let mut sibling = to.as_bytes().to_vec();
    sibling.extend_from_slice(key.strip_prefix(from.as_bytes()).unwrap_or(key));
    sibling
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
    fn a_cluster_has_one_counter_per_slot_whatever_the_names() {
        let counters: std::collections::HashSet<String> = (0..50_000)
            .map(|i| fencing_counter(&format!("lock:{{invoice:{i}}}"), Scheme::Cluster))
            .collect();
        assert!(counters.len() <= 16_384, "{} counters", counters.len());
        assert_eq!(SLOT_TAGS.len(), 16_384);
    }

    #[test]
    fn every_name_gets_a_tag_on_a_cluster_and_comes_back() {
        for name in ["jobs", "}x", "}{", "}", "a}b", "{}x", "{a{b}", "x{", "ünï}"] {
            let tagged = tagged(name, Scheme::Cluster);
            assert!(
                hash_tag(&format!("lock:{tagged}")).is_some(),
                "{name:?}: {tagged}"
            );
            assert_eq!(
                Slot::for_key(format!("lock:{tagged}")),
                Slot::for_key(format!("lock-signal:{tagged}")),
                "{name:?}"
            );
            if !name.contains('{') && name != "a}b" && name != "ünï}" {
                assert_eq!(untagged(&tagged, Scheme::Cluster), name, "{tagged}");
            }
        }
        assert_eq!(tagged("}x", Scheme::Cluster), "{{~}x}");
        assert_eq!(untagged("{{~}x}", Scheme::Cluster), "}x");
        assert_eq!(tagged("}x", Scheme::Single), "}x");
    }

    #[test]
    fn siblings_replace_the_prefix() {
        assert_eq!(
            sibling(b"lock:{jobs}", "lock:", "lock-grant:"),
            b"lock-grant:{jobs}"
        );
        assert_eq!(
            sibling(b"semaphore:x", "semaphore:", "semaphore-queue:"),
            b"semaphore-queue:x"
        );
    }
}
