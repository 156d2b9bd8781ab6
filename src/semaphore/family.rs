//! What the operator tools know of semaphores: the family of `semaphore:*` keys (the holder
//! sets), each read and cleared by one call of `semaphore.lua`.

use super::SEMAPHORE;
use super::keys::{
    CAPACITY_PREFIX, QUEUE_PREFIX, RELEASED_PREFIX, SEMAPHORE_PREFIX, WAITERS_PREFIX, WAKE_PREFIX,
    parse_member, semaphore_name_of,
};
use crate::conn::Conn;
use crate::error::{Error, Result};
use crate::family::{Family, FoundKeys, LockInfo, LockKind, PermitsInfo, expires_in};
use crate::keys::sibling;
use crate::options::DEFAULT_SIGNAL_EXPIRE;
use crate::scripts::Call;
use crate::time::millis;

/// The family of semaphores, for the operator tools.
pub(crate) struct Semaphores;

/// A call of `semaphore.lua`'s `op` on the semaphore whose holder set is `holders` (a key a
/// `SCAN` found). The tools do not know the capacity its users were built with: they pass
/// the largest, so that a reset wakes every waiter (each tries again, and those the freed
/// permits are not enough for wait on), and read the capacity from the grants.
fn call(holders: &[u8], op: &str) -> Call {
    let beside = |prefix| sibling(holders, SEMAPHORE_PREFIX, prefix);
    let mut wake_prefix = beside(WAKE_PREFIX);
    wake_prefix.push(b':');
    let mut call = SEMAPHORE.call();
    call.key(holders)
        .key(beside(CAPACITY_PREFIX))
        .key(beside(QUEUE_PREFIX))
        .key(beside(WAITERS_PREFIX))
        // The fencing counter: neither `reset` nor `state` takes a token.
        .key(holders)
        .key(beside(RELEASED_PREFIX))
        .arg(op)
        .arg(u32::MAX)
        .arg(wake_prefix)
        .arg(millis(DEFAULT_SIGNAL_EXPIRE));
    call
}

impl Family for Semaphores {
    fn pattern(&self) -> &'static str {
        "semaphore:*"
    }

    /// The grants of each semaphore, one call of `state` per semaphore.
    fn list(&self, conn: &mut Conn, found: FoundKeys) -> Result<Vec<LockInfo>> {
        let FoundKeys { keys, scheme } = found;
        let bad = || Error::Protocol { what: "list" };
        let mut found = Vec::new();
        for key in keys {
            let text = String::from_utf8_lossy(&key).into_owned();
            let name = semaphore_name_of(&text, scheme);
            let reply: Vec<redis::Value> = match call(&key, "state").invoke(conn) {
                Ok(reply) => reply,
                Err(e) if e.code() == Some("WRONGTYPE") => {
                    found.push(LockInfo::held(
                        name,
                        LockKind::NotALock,
                        String::new(),
                        None,
                        &text,
                    ));
                    continue;
                }
                Err(e) => return Err(conn.fail(e, "semaphore:*", "list")),
            };
            let [set, in_use, waiters, rest @ ..] = &reply[..] else {
                return Err(bad());
            };
            let number = |v: &redis::Value| redis::from_redis_value::<i64>(v.clone());
            let (set, in_use, waiters) = (
                number(set).map_err(|_| bad())?,
                number(in_use).map_err(|_| bad())?,
                number(waiters).map_err(|_| bad())?,
            );
            let rest: Vec<(String, i64)> =
                redis::from_redis_value(redis::Value::Array(rest.to_vec())).map_err(|_| bad())?;
            let grants: Vec<_> = rest
                .iter()
                .filter_map(|(member, left)| Some((parse_member(member)?, *left)))
                .collect();
            // The capacity in force: set_permits', else the latest grant's.
            let capacity = u32::try_from(set)
                .ok()
                .or_else(|| grants.last().map(|(member, _)| member.capacity))
                .unwrap_or_default();
            for (member, left) in grants {
                let mut info = LockInfo::held(
                    name,
                    LockKind::Semaphore,
                    member.lease_id.to_owned(),
                    expires_in(left),
                    &text,
                );
                info.fencing_token = member.token;
                info.waiters = usize::try_from(waiters).ok();
                info.permits = Some(PermitsInfo {
                    held: member.permits,
                    in_use: u32::try_from(in_use).unwrap_or_default(),
                    capacity,
                });
                found.push(info);
            }
        }
        Ok(found)
    }

    fn clear(&self, conn: &mut Conn, found: FoundKeys, owner: Option<&str>) -> Result<usize> {
        let mut removed = 0;
        for key in found.keys {
            let mut call = call(&key, "reset");
            if let Some(owner) = owner {
                call.arg(owner);
            }
            let n: usize = call
                .invoke(conn)
                .map_err(|e| conn.fail(e, "semaphore:*", "reset"))?;
            removed += n;
        }
        Ok(removed)
    }

    #[cfg(test)]
    fn scripts(&self) -> Vec<&'static std::sync::LazyLock<crate::scripts::Lua>> {
        vec![&SEMAPHORE]
    }
}
