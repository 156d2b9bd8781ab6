//! What the operator tools know of read-write locks: the family of `rwlock:*` keys, a dozen
//! sets and lists per level of each tree; the holder sets say who holds what.

use super::DEFAULT_SEPARATOR;
use super::keys::{Mode, RwKeys, check_path, level_keys, parse_key, path_of};
use super::{CLEAR, LIST};
use crate::conn::Conn;
use crate::error::{Error, Result};
use crate::family::{Family, FoundKeys, LockInfo, LockKind, each_key, expires_in, per_slot};
use crate::keys::Scheme;
use crate::options::DEFAULT_SIGNAL_EXPIRE;
use crate::time::millis;

/// The family of read-write locks, for the operator tools.
pub(crate) struct RwLocks;

/// A holder set as `list.lua` reads it: the key's type, and `(lease id, milliseconds left
/// or -1)` for each live entry.
type HolderSet = (String, Vec<(String, i64)>);

impl Family for RwLocks {
    fn pattern(&self) -> &'static str {
        "rwlock:*"
    }

    /// The read and write leases in the holder sets among `keys`.
    fn list(&self, conn: &mut Conn, found: FoundKeys) -> Result<Vec<LockInfo>> {
        let FoundKeys { keys, scheme } = found;
        let holders: Vec<Vec<u8>> = keys
            .into_iter()
            .filter(|key| {
                std::str::from_utf8(key)
                    .ok()
                    .and_then(parse_key)
                    .is_some_and(|(kind, _)| kind == "w" || kind == "r")
            })
            .collect();
        if holders.is_empty() {
            return Ok(Vec::new());
        }
        let replies = per_slot(conn, holders, scheme, "list", |keys| {
            let mut call = LIST.call();
            call.key(keys);
            call
        })?;
        let mut found = Vec::new();
        for (key, (kind, entries)) in each_key::<HolderSet>(replies, "list")? {
            let key = String::from_utf8_lossy(&key);
            let Some((set, level)) = parse_key(&key) else {
                continue;
            };
            let path = path_of(level, scheme);
            let kind = match (kind.as_str(), set) {
                ("zset" | "none", "w") => LockKind::Write,
                ("zset" | "none", _) => LockKind::Read,
                _ => {
                    found.push(LockInfo::held(
                        &path,
                        LockKind::NotALock,
                        String::new(),
                        None,
                        &key,
                    ));
                    continue;
                }
            };
            found.extend(
                entries.into_iter().map(|(lease, left)| {
                    LockInfo::held(&path, kind, lease, expires_in(left), &key)
                }),
            );
        }
        Ok(found)
    }

    /// The path's own holder sets (as a lock with the default `/` separator names them on a
    /// cluster); none for a name that is no path.
    fn keys_named(&self, path: &str, scheme: Scheme) -> Vec<String> {
        if check_path(path, DEFAULT_SEPARATOR).is_some() {
            return Vec::new();
        }
        let keys = RwKeys::new(path, DEFAULT_SEPARATOR, scheme);
        [Mode::Write, Mode::Read]
            .into_iter()
            .filter_map(|mode| keys.lease_sets(mode).into_iter().next())
            .collect()
    }

    /// Removes the leases of every level that `keys` show (whatever kind of key showed
    /// it), each level once.
    fn clear(&self, conn: &mut Conn, found: FoundKeys, owner: Option<&str>) -> Result<usize> {
        let FoundKeys { keys, scheme } = found;
        let mut levels: Vec<Vec<u8>> = keys
            .iter()
            .filter_map(|k| std::str::from_utf8(k).ok())
            .filter_map(parse_key)
            .map(|(_, level)| level_keys(level)[0].clone().into_bytes())
            .collect();
        levels.sort_unstable();
        levels.dedup();
        let replies = per_slot(conn, levels, scheme, "reset", |first_keys| {
            let mut call = CLEAR.call();
            call.arg(millis(DEFAULT_SIGNAL_EXPIRE));
            if let Some(owner) = owner {
                call.arg(owner);
            }
            for first in first_keys {
                let (_, level) = std::str::from_utf8(first)
                    .ok()
                    .and_then(parse_key)
                    .unwrap_or_default();
                call.key(level_keys(level));
            }
            call
        })?;
        let removed = replies.iter().map(|(_, n): &(_, i64)| *n).sum::<i64>();
        usize::try_from(removed).map_err(|_| Error::Protocol { what: "reset" })
    }

    #[cfg(test)]
    fn scripts(&self) -> Vec<&'static std::sync::LazyLock<crate::scripts::Lua>> {
        use super::{ACQUIRE, RELEASE, RESUME};
        vec![&ACQUIRE, &RELEASE, &CLEAR, &RESUME, &LIST]
    }
}
