//! What the operator tools know of mutexes (python-redis-lock's too): the family of
//! `lock:<name>` keys, and [`lock_info`] and [`last_release`] for one name.

use super::keys::{LOCKS, MutexKeys, Namespace, Sibling, marker_owner, marker_token};
use super::{LIST, RESET};
use crate::conn::{self, Conn};
use crate::error::{Error, Result};
use crate::family::{Family, FoundKeys, LockInfo, LockKind, each_key, expires_in, per_slot};
use crate::keys::Scheme;
use crate::options::DEFAULT_SIGNAL_EXPIRE;
use crate::pool::Pool;
use crate::scripts::undo_window;
use crate::time::{Deadline, millis};

/// The family of mutexes, for the operator tools.
pub(crate) struct Mutexes;

impl Family for Mutexes {
    fn pattern(&self) -> &'static str {
        "lock:*"
    }

    fn list(&self, conn: &mut Conn, found: FoundKeys) -> Result<Vec<LockInfo>> {
        list_in(&LOCKS, conn, found)
    }

    fn clear(&self, conn: &mut Conn, found: FoundKeys, owner: Option<&str>) -> Result<usize> {
        clear_in(&LOCKS, conn, found, owner)
    }

    #[cfg(test)]
    fn scripts(&self) -> Vec<&'static std::sync::LazyLock<crate::scripts::Lua>> {
        use super::{ACQUIRE, EXTEND, FAIR, RELEASE, RESUME, UNDO};
        vec![
            &ACQUIRE, &RELEASE, &UNDO, &FAIR, &EXTEND, &RESUME, &RESET, &LIST,
        ]
    }
}

/// What the operator tools show of the mutexes of `space` whose lock keys were `found`.
///
/// # Errors
///
/// A request's failure, or a reply of another shape ([`Error::Protocol`]).
pub(crate) fn list_in(
    space: &Namespace,
    conn: &mut Conn,
    found: FoundKeys,
) -> Result<Vec<LockInfo>> {
    let FoundKeys { keys, scheme } = found;
    let replies = per_slot(conn, keys, scheme, "list", |keys| {
        let mut call = LIST.call();
        for key in keys {
            call.key(key)
                .key(space.beside(key, Sibling::Grant))
                .key(space.beside(key, Sibling::Waiters));
        }
        call
    })?;
    let mut found = Vec::new();
    for (key, info) in each_key(replies, "list")? {
        let key = String::from_utf8_lossy(&key);
        found.extend(mutex_info(space.name_of(&key, scheme), &key, info)?);
    }
    Ok(found)
}

/// Deletes the mutexes of `space` whose lock keys were `found` (only those `owner` holds,
/// if given), waking one waiter of each; how many were deleted.
///
/// # Errors
///
/// A request's failure, or a reply of another shape ([`Error::Protocol`]).
pub(crate) fn clear_in(
    space: &Namespace,
    conn: &mut Conn,
    found: FoundKeys,
    owner: Option<&str>,
) -> Result<usize> {
    let FoundKeys { keys, scheme } = found;
    let tombstone_ms = millis(undo_window(conn.read_timeout()));
    let replies = per_slot(conn, keys, scheme, "reset", |keys| {
        let mut call = RESET.call();
        call.arg(millis(DEFAULT_SIGNAL_EXPIRE)).arg(tombstone_ms);
        if let Some(owner) = owner {
            call.arg(owner);
        }
        for key in keys {
            call.key(key)
                .key(space.beside(key, Sibling::Signal))
                .key(space.beside(key, Sibling::Grant))
                .key(space.beside(key, Sibling::Released));
        }
        call
    })?;
    let deleted = each_key::<i64>(replies, "reset")?;
    Ok(deleted.iter().filter(|(_, r)| *r == 1).count())
}

/// The mutex named `name`, if it is held now: its owner id, remaining lease, fencing token
/// and fair waiters. What `redis-mutex owner NAME` shows.
///
/// # Errors
///
/// The errors of a request when Redis cannot be reached; [`Error::InvalidOptions`] for an
/// empty name; [`Error::WrongType`] when the lock's key holds another type (no lock can be
/// taken under the name).
///
/// # Examples
///
/// ```no_run
/// use redis_mutex::{lock_info, Pool};
///
/// let pool = Pool::new("redis://127.0.0.1/")?;
/// match lock_info(&pool, "nightly-report")? {
///     Some(held) => println!("held by {} for {:?} more", held.owner_id, held.expires_in),
///     None => println!("free"),
/// }
/// # Ok::<(), redis_mutex::Error>(())
/// ```
pub fn lock_info(pool: &Pool, name: &str) -> Result<Option<LockInfo>> {
    if name.is_empty() {
        return Err(Error::invalid("name", "the lock name is empty"));
    }
    let keys = MutexKeys::new(name, Scheme::of(pool));
    let mut call = LIST.call();
    call.key(&keys.lock).key(&keys.grant).key(&keys.waiters);
    let deadline = Deadline::after(pool.response_timeout());
    let ran = conn::run_repeatable(pool, &keys.lock, deadline, |c| {
        call.invoke::<Vec<redis::Value>>(c)
    })?;
    let reply = ran.reply(name, "lock_info")?;
    let info = reply
        .into_iter()
        .next()
        .ok_or(Error::Protocol { what: "lock_info" })?;
    match mutex_info(name, &keys.lock, info)? {
        Some(info) if info.kind == LockKind::NotALock => Err(Error::WrongType {
            name: name.to_owned(),
            key: Some(info.key),
        }),
        info => Ok(info),
    }
}

/// How the last grant of a mutex ended, as [`last_release`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Released {
    /// Its holder released it: `unlock`, or a guard dropped.
    ByHolder {
        /// The fencing token of the grant released.
        fencing_token: u64,
    },
    /// It was reset: [`RedisMutex::reset`](crate::RedisMutex::reset), [`reset_owned_by`],
    /// [`reset_all`] or the CLI's `reset`, whoever held it.
    ///
    /// [`reset_owned_by`]: crate::reset_owned_by
    /// [`reset_all`]: crate::reset_all
    ByReset {
        /// The fencing token of the grant reset, when it was one of this crate's grants.
        fencing_token: Option<u64>,
    },
}

/// How the last grant of the mutex `name` ended, while Redis remembers it: a release or a
/// reset by this crate leaves a note for twice the response timeout, at least 10 s
/// (`lock-released:<name>`). `None` when there is no note: the lock was never released in
/// that time, it expired, or a client that leaves no note (python-redis-lock, an
/// operator's `DEL`) removed it. What `redis-mutex watch` tells apart with it.
///
/// # Errors
///
/// The errors of a request when Redis cannot be reached; [`Error::InvalidOptions`] for an
/// empty name.
///
/// # Examples
///
/// ```no_run
/// use redis_mutex::{last_release, lock_info, Pool, Released};
///
/// let pool = Pool::new("redis://127.0.0.1/")?;
/// if lock_info(&pool, "nightly-report")?.is_none() {
///     match last_release(&pool, "nightly-report")? {
///         Some(Released::ByReset { .. }) => println!("an operator reset it"),
///         Some(_) => println!("its holder let go"),
///         None => println!("it expired, or was never held"),
///     }
/// }
/// # Ok::<(), redis_mutex::Error>(())
/// ```
pub fn last_release(pool: &Pool, name: &str) -> Result<Option<Released>> {
    if name.is_empty() {
        return Err(Error::invalid("name", "the lock name is empty"));
    }
    let keys = MutexKeys::new(name, Scheme::of(pool));
    let ran = conn::run_repeatable(
        pool,
        &keys.lock,
        Deadline::after(pool.response_timeout()),
        |c| {
            redis::cmd("GET")
                .arg(&keys.released)
                .query::<Option<String>>(&mut **c)
        },
    )?;
    let note = ran.reply(name, "last_release")?;
    Ok(note.and_then(|note| parse_release_note(&note)))
}

/// A release's note (`lock-released:<name>`): `<token>` for a release, `reset|<token>` (or
/// `reset|`) for a reset.
fn parse_release_note(note: &str) -> Option<Released> {
    match note.strip_prefix("reset|") {
        Some(token) => Some(Released::ByReset {
            fencing_token: token.parse().ok(),
        }),
        None => note
            .parse()
            .ok()
            .map(|fencing_token| Released::ByHolder { fencing_token }),
    }
}

/// One mutex (its lock key `key`) from `list.lua`'s `{owner, pttl, marker, waiters, type}`;
/// `None` when it is not held, [`LockKind::NotALock`] when its key holds another type.
fn mutex_info(name: &str, key: &str, reply: redis::Value) -> Result<Option<LockInfo>> {
    let (owner, pttl, marker, waiters, kind): (Option<String>, i64, Option<String>, i64, String) =
        redis::from_redis_value(reply).map_err(|_| Error::Protocol { what: "list" })?;
    if kind != "string" && kind != "none" {
        let info = LockInfo::held(
            name,
            LockKind::NotALock,
            String::new(),
            expires_in(pttl),
            key,
        );
        return Ok(Some(info));
    }
    let Some(owner_id) = owner else {
        return Ok(None);
    };
    // The marker's token is this grant's only if the marker names the same owner.
    let fencing_token = marker
        .filter(|marker| marker_owner(marker) == Some(&*owner_id))
        .and_then(|marker| marker_token(&marker));
    let mut info = LockInfo::held(name, LockKind::Mutex, owner_id, expires_in(pttl), key);
    info.fencing_token = fencing_token;
    info.waiters = usize::try_from(waiters).ok();
    Ok(Some(info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_notes_tell_a_release_from_a_reset() {
        assert_eq!(
            parse_release_note("42"),
            Some(Released::ByHolder { fencing_token: 42 })
        );
        assert_eq!(
            parse_release_note("reset|42"),
            Some(Released::ByReset {
                fencing_token: Some(42)
            })
        );
        assert_eq!(
            parse_release_note("reset|"),
            Some(Released::ByReset {
                fencing_token: None
            })
        );
        assert_eq!(parse_release_note("junk"), None);
    }
}
