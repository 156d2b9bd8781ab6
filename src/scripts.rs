//! The Lua scripts, one file each under `src/scripts/`, run with `EVALSHA`.
//!
//! `redis::Script` sends `EVALSHA` and, on `NOSCRIPT` (a restarted server, or
//! `SCRIPT FLUSH`), loads the script and retries, so a call stays one round trip.

use std::sync::LazyLock;

use redis::Script;

/// `SET NX` with an optional `PX`, or the holder's remaining lease.
pub(crate) static ACQUIRE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/acquire.lua")));

/// Compare-and-delete, then wake one waiter.
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE_SOURCE));

/// The source of [`RELEASE`], for [`eval`].
pub(crate) const RELEASE_SOURCE: &str = include_str!("scripts/release.lua");

/// Compare-and-extend for any number of locks in one call.
pub(crate) static EXTEND: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/extend.lua")));

/// Delete whoever holds it, then wake one waiter.
pub(crate) static RESET: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/reset.lua")));

/// Redlock: compare-and-delete of one instance's key.
pub(crate) static REDLOCK_RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/redlock_release.lua")));

/// Redlock: compare-and-extend of one instance's key.
pub(crate) static REDLOCK_EXTEND: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/redlock_extend.lua")));

/// Read-write lock: take a read or write lock on a path, or register as a waiter.
pub(crate) static RWLOCK_ACQUIRE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/rwlock_acquire.lua")));

/// Read-write lock: remove a held lock or a waiter's registration, then wake its waiters.
pub(crate) static RWLOCK_RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(RWLOCK_RELEASE_SOURCE));

/// The source of [`RWLOCK_RELEASE`], for [`eval`].
pub(crate) const RWLOCK_RELEASE_SOURCE: &str = include_str!("scripts/rwlock_release.lua");

/// Read-write lock: compare-and-extend of one held lock, or a check that it is still ours.
pub(crate) static RWLOCK_EXTEND: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/rwlock_extend.lua")));

/// A plain `EVAL` of `source`, for a connection that has a reply still unread: there a
/// `NOSCRIPT` answer could come after we stopped waiting, and `EVALSHA` would never be
/// retried with the script.
pub(crate) fn eval(source: &str, keys: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(source).arg(keys.len()).arg(keys);
    cmd
}
