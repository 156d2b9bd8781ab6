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
pub(crate) static RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/release.lua")));

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
