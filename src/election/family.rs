//! What the operator tools know of elections: the family of `election:<name>` keys (the
//! leaders' locks), each shown with its term and proclaimed value, and cleared (a new
//! election forced) with its observers woken.

use super::keys::ElectionKeys;
use super::{LEADER, OBSERVER_TTL, PROCLAIM};
use crate::conn::Conn;
use crate::error::Result;
use crate::family::{Family, LockInfo, LockKind};
use crate::keys::Scheme;
use crate::mutex::{ELECTION_KEYS, clear_in, list_in};
use crate::time::millis;

/// The family of elections, for the operator tools.
pub(crate) struct Elections;

impl Family for Elections {
    fn pattern(&self) -> &'static str {
        "election:*"
    }

    /// Each leader's lock as a mutex's, with the value it proclaimed for its term.
    fn list(&self, conn: &mut Conn, keys: Vec<Vec<u8>>, scheme: Scheme) -> Result<Vec<LockInfo>> {
        let mut found = list_in(&ELECTION_KEYS, conn, keys, scheme)?;
        for info in &mut found {
            if info.kind != LockKind::Mutex {
                continue;
            }
            info.kind = LockKind::Election;
            let keys = ElectionKeys::new(&info.name, scheme);
            let mut call = LEADER.call();
            call.key(&keys.lock).key(&keys.grant).key(&keys.value);
            let reply = call
                .invoke::<redis::Value>(conn)
                .map_err(|e| conn.fail(e, &info.name, "list"))?;
            if let Some(leader) = super::parse_leader(&info.name, reply)? {
                info.value = Some(leader.value);
            }
        }
        Ok(found)
    }

    /// Withdraws each election's proclaimed value (waking its observers), then ends its
    /// term and wakes one candidate.
    fn clear(
        &self,
        conn: &mut Conn,
        keys: Vec<Vec<u8>>,
        owner: Option<&str>,
        scheme: Scheme,
    ) -> Result<usize> {
        for key in &keys {
            let name = ELECTION_KEYS
                .name_of(&String::from_utf8_lossy(key), scheme)
                .to_owned();
            let keys = ElectionKeys::new(&name, scheme);
            let mut call = PROCLAIM.call();
            call.key(&keys.lock)
                .key(&keys.grant)
                .key(&keys.value)
                .key(&keys.observers)
                .arg("clear")
                .arg(owner.unwrap_or(""))
                .arg(0)
                .arg("")
                .arg(&keys.observe_prefix)
                .arg(millis(OBSERVER_TTL));
            call.invoke::<i64>(conn)
                .map_err(|e| conn.fail(e, &name, "reset"))?;
        }
        clear_in(&ELECTION_KEYS, conn, keys, owner, scheme)
    }

    #[cfg(test)]
    fn scripts(&self) -> Vec<&'static crate::scripts::Lua> {
        vec![&*PROCLAIM, &*LEADER]
    }
}
