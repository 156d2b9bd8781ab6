//! A semaphore's keys: its holders, its capacity, its waiters and their wake lists, under
//! one hash tag on a cluster.

use crate::keys::{Scheme, fencing_counter, tagged, untagged};

/// The prefix of a semaphore's holder set, the key the operator tools find by `SCAN`.
pub(crate) const SEMAPHORE_PREFIX: &str = "semaphore:";

/// The prefixes of the keys beside a semaphore's holder set.
pub(crate) const CAPACITY_PREFIX: &str = "semaphore-capacity:";
pub(crate) const QUEUE_PREFIX: &str = "semaphore-queue:";
pub(crate) const WAITERS_PREFIX: &str = "semaphore-waiters:";
pub(crate) const WAKE_PREFIX: &str = "semaphore-wake:";
pub(crate) const RELEASED_PREFIX: &str = "semaphore-released:";

/// Every key of one semaphore.
#[derive(Debug, Clone)]
pub(crate) struct SemaphoreKeys {
    /// `semaphore:<name>`: a sorted set of the holders,
    /// `<permits>/<capacity>/<fencing token>:<lease id>` → the end of its lease in
    /// milliseconds since 1970 (`inf`: never).
    pub(crate) holders: String,
    /// `semaphore-capacity:<name>`: the capacity set by `set_permits`, if any; else the
    /// builders' `permits` apply.
    pub(crate) capacity: String,
    /// `semaphore-queue:<name>`: the waiters, by when they came (microseconds).
    queue: String,
    /// `semaphore-waiters:<name>`: each waiter's `<permits>|<end of its entry in ms>`.
    waiters: String,
    /// `semaphore-wake:<name>:`: the prefix of each waiter's wake list (the prefix and its
    /// id), to which a release that frees enough permits for it pushes.
    pub(crate) wake_prefix: String,
    /// The fencing counter its grants take their tokens from.
    fencing: String,
    /// `semaphore-released:<name>`: the members released moments ago → until when that is
    /// remembered, so that a release sent twice is told it happened.
    released: String,
}

impl SemaphoreKeys {
    pub(crate) fn new(name: &str, scheme: Scheme) -> SemaphoreKeys {
        let tagged = tagged(name, scheme);
        let holders = format!("{SEMAPHORE_PREFIX}{tagged}");
        SemaphoreKeys {
            fencing: fencing_counter(&holders, scheme),
            capacity: format!("{CAPACITY_PREFIX}{tagged}"),
            queue: format!("{QUEUE_PREFIX}{tagged}"),
            waiters: format!("{WAITERS_PREFIX}{tagged}"),
            wake_prefix: format!("{WAKE_PREFIX}{tagged}:"),
            released: format!("{RELEASED_PREFIX}{tagged}"),
            holders,
        }
    }

    /// The wake list of the waiter `waiter`.
    pub(crate) fn wake(&self, waiter: &str) -> String {
        format!("{}{waiter}", self.wake_prefix)
    }

    /// The keys every call of `semaphore.lua` takes, in its order: the holders, the
    /// capacity, the queue, the waiters, the fencing counter and the releases of a moment
    /// ago.
    pub(crate) fn script_keys(&self) -> [&str; 6] {
        [
            &self.holders,
            &self.capacity,
            &self.queue,
            &self.waiters,
            &self.fencing,
            &self.released,
        ]
    }
}

/// The name a semaphore's holder set stands for, as a person would give it: on a cluster,
/// without the braces this crate added.
pub(crate) fn semaphore_name_of(holders_key: &str, scheme: Scheme) -> &str {
    untagged(
        holders_key
            .strip_prefix(SEMAPHORE_PREFIX)
            .unwrap_or(holders_key),
        scheme,
    )
}

/// A holder set's member read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Member<'a> {
    /// How many permits the grant holds.
    pub(crate) permits: u32,
    /// The capacity it was granted under.
    pub(crate) capacity: u32,
    /// Its fencing token; `None` in a member written before tokens were kept.
    pub(crate) token: Option<u64>,
    /// Its lease id: `<owner id>#<16 hex digits>`.
    pub(crate) lease_id: &'a str,
}

/// A holder set's member, `<permits>/<capacity>/<token>:<lease id>` (or, written before
/// tokens were kept, `<permits>/<capacity>:<lease id>`), read back.
pub(crate) fn parse_member(member: &str) -> Option<Member<'_>> {
    let (counts, lease_id) = member.split_once(':')?;
    let mut counts = counts.split('/');
    let permits = counts.next()?.parse().ok()?;
    let capacity = counts.next()?.parse().ok()?;
    let token = counts.next().map(str::parse).transpose().ok()?;
    if counts.next().is_some() {
        return None;
    }
    Some(Member {
        permits,
        capacity,
        token,
        lease_id,
    })
}

/// The member of a grant of `permits` under `capacity`, with the fencing token `token`, to
/// the lease `lease_id` (as `semaphore.lua` writes it).
pub(crate) fn member(permits: u32, capacity: u32, token: u64, lease_id: &str) -> String {
    format!("{permits}/{capacity}/{token}:{lease_id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::hash_tag;

    #[test]
    fn every_key_of_a_semaphore_shares_its_slot_on_a_cluster() {
        let keys = SemaphoreKeys::new("exports", Scheme::Cluster);
        for key in keys.script_keys().iter().copied().chain([&*keys.wake("w")]) {
            if key.starts_with("lock-fencing-counter") {
                assert_eq!(
                    redis::cluster_routing::Slot::for_key(key),
                    redis::cluster_routing::Slot::for_key(&keys.holders)
                );
                continue;
            }
            assert_eq!(hash_tag(key), Some("exports"), "{key}");
        }
        assert_eq!(semaphore_name_of(&keys.holders, Scheme::Cluster), "exports");
        let single = SemaphoreKeys::new("exports", Scheme::Single);
        assert_eq!(single.holders, "semaphore:exports");
        assert_eq!(single.fencing, "lock-fencing-counter");
        assert_eq!(
            semaphore_name_of(&single.holders, Scheme::Single),
            "exports"
        );
    }

    #[test]
    fn members_name_their_permits_capacity_token_and_lease() {
        fn parts(m: Option<Member<'_>>) -> Option<(u32, u32, Option<u64>, &str)> {
            m.map(|m| (m.permits, m.capacity, m.token, m.lease_id))
        }
        assert_eq!(member(2, 5, 17, "w#00ff"), "2/5/17:w#00ff");
        assert_eq!(
            parts(parse_member("2/5/17:w#00ff")),
            Some((2, 5, Some(17), "w#00ff"))
        );
        assert_eq!(
            parts(parse_member("2/5/17:a:b/9#1")),
            Some((2, 5, Some(17), "a:b/9#1"))
        );
        // Written before tokens were kept.
        assert_eq!(
            parts(parse_member("2/5:w#00ff")),
            Some((2, 5, None, "w#00ff"))
        );
        assert_eq!(parse_member("x/5:w#1"), None);
        assert_eq!(parse_member("2:w#1"), None);
        assert_eq!(parse_member("2/5/x:w#1"), None);
        assert_eq!(parse_member("2/5/1/1:w#1"), None);
    }
}
