//! What the operator tools know of Redlocks: beside each key a grant of ours holds on an
//! instance (the resource name itself, as redlock-py's), a marker, `redlock:<resource>`,
//! which they find by `SCAN` (grants of redlock-py, which sets no marker, stay unseen).

use super::{CLEAR, LIST};
use crate::conn::Conn;
use crate::error::Result;
use crate::family::{Family, FoundKeys, LockInfo, LockKind, each_key, expires_in, per_slot};
use crate::keys::{Scheme, tagged, untagged};
use crate::pool::Pool;

/// The prefix of a Redlock's marker.
const PREFIX: &str = "redlock:";

/// The marker of `resource` on `pool`: under the resource's hash tag (its own, or the
/// whole name), so that on a cluster it shares the key's slot.
pub(super) fn marker(resource: &str, pool: &Pool) -> String {
    format!("{PREFIX}{}", tagged(resource, Scheme::of(pool)))
}

/// The resource a marker found by `SCAN` stands for.
fn resource_of(marker: &[u8], scheme: Scheme) -> Vec<u8> {
    let tagged = marker.strip_prefix(PREFIX.as_bytes()).unwrap_or(marker);
    match std::str::from_utf8(tagged) {
        Ok(tagged) => untagged(tagged, scheme).as_bytes().to_vec(),
        Err(_) => tagged.to_vec(),
    }
}

/// Each marker with its resource's key, as the scripts take them.
fn pairs(call: &mut crate::scripts::Call, markers: &[Vec<u8>], scheme: Scheme) {
    for marker in markers {
        call.key(marker).key(resource_of(marker, scheme));
    }
}

/// The family of Redlock keys on one instance, for the operator tools.
pub(crate) struct Redlocks;

impl Family for Redlocks {
    fn pattern(&self) -> &'static str {
        "redlock:*"
    }

    fn list(&self, conn: &mut Conn, found: FoundKeys) -> Result<Vec<LockInfo>> {
        let FoundKeys { keys, scheme } = found;
        let replies = per_slot(conn, keys, scheme, "list", |markers| {
            let mut call = LIST.call();
            pairs(&mut call, markers, scheme);
            call
        })?;
        let mut found = Vec::new();
        for (marker, (token, pttl)) in each_key::<(Option<String>, i64)>(replies, "list")? {
            let Some(token) = token else { continue };
            let resource = String::from_utf8_lossy(&resource_of(&marker, scheme)).into_owned();
            found.push(LockInfo::held(
                &resource,
                LockKind::Redlock,
                token,
                expires_in(pttl),
                &resource,
            ));
        }
        Ok(found)
    }

    /// A Redlock's grant has no owner id: an owner's reset leaves them all.
    fn clear(&self, conn: &mut Conn, found: FoundKeys, owner: Option<&str>) -> Result<usize> {
        if owner.is_some() {
            return Ok(0);
        }
        let FoundKeys { keys, scheme } = found;
        let replies = per_slot(conn, keys, scheme, "reset", |markers| {
            let mut call = CLEAR.call();
            pairs(&mut call, markers, scheme);
            call
        })?;
        Ok(replies.iter().map(|(_, n): &(_, usize)| n).sum())
    }

    #[cfg(test)]
    fn scripts(&self) -> Vec<&'static std::sync::LazyLock<crate::scripts::Lua>> {
        use super::{ACQUIRE, EXTEND, RELEASE};
        vec![&ACQUIRE, &RELEASE, &EXTEND, &CLEAR, &LIST]
    }
}
