//! What the operator tools know of elections: the family of `election:<name>` keys (the
//! leaders' locks), each shown with its term and proclaimed value, and cleared (a new
//! election forced) with its observers woken.

use super::keys::ElectionKeys;
use super::{Leader, ValueOp, leader_call, parse_leader, proclaim_call};
use crate::conn::Conn;
use crate::error::Result;
use crate::family::{Family, FoundKeys, LockInfo, LockKind};
use crate::mutex::{ELECTION_KEYS, clear_in, list_in};

/// The family of elections, for the operator tools.
pub(crate) struct Elections;

impl Family for Elections {
    fn pattern(&self) -> &'static str {
        "election:*"
    }

    /// Each leader's lock as a mutex's, with the value it proclaimed for its term.
    fn list(&self, conn: &mut Conn, found: FoundKeys) -> Result<Vec<LockInfo>> {
        let scheme = found.scheme;
        let mut locks = list_in(&ELECTION_KEYS, conn, found)?;
        for info in &mut locks {
            if info.kind != LockKind::Mutex {
                continue;
            }
            info.kind = LockKind::Election;
            let keys = ElectionKeys::new(&info.name, scheme);
            // Read apart from the lock: only a value of the same owner and term is this
            // one's (a key of another type beside it: no value).
            if let Ok(Some(leader)) = leader_on(conn, &info.name, &keys, "list")?
                && leader.owner_id == info.owner_id
                && Some(leader.term) == info.fencing_token
            {
                info.value = Some(leader.value);
            }
        }
        Ok(locks)
    }

    /// Withdraws each election's proclaimed value (waking its observers), then ends its
    /// term and wakes one candidate.
    fn clear(&self, conn: &mut Conn, found: FoundKeys, owner: Option<&str>) -> Result<usize> {
        let scheme = found.scheme;
        for key in &found.keys {
            let name = ELECTION_KEYS
                .name_of(&String::from_utf8_lossy(key), scheme)
                .to_owned();
            let keys = ElectionKeys::new(&name, scheme);
            // The value of the term being ended, only (and only the owner's, if given).
            let Ok(Some(leader)) = leader_on(conn, &name, &keys, "reset")? else {
                continue;
            };
            let owner = owner.unwrap_or("");
            let call = proclaim_call(&keys, ValueOp::Clear, owner, leader.term, "", 0);
            call.invoke::<i64>(conn)
                .map_err(|e| conn.fail(e, &name, "reset"))?;
        }
        clear_in(&ELECTION_KEYS, conn, found, owner)
    }

    #[cfg(test)]
    fn scripts(&self) -> Vec<&'static std::sync::LazyLock<crate::scripts::Lua>> {
        vec![&super::PROCLAIM, &super::LEADER, &super::CAMPAIGN]
    }
}

/// Who leads the election `name` (`keys`), read on `conn`: the request's failure outside,
/// what the reply says (a leader, nobody, or a key of another type) inside.
fn leader_on(
    conn: &mut Conn,
    name: &str,
    keys: &ElectionKeys,
    what: &'static str,
) -> Result<Result<Option<Leader>>> {
    let reply = leader_call(keys, None)
        .invoke::<redis::Value>(conn)
        .map_err(|e| conn.fail(e, name, what))?;
    Ok(parse_leader(name, reply))
}
