//! Operator tools that act on every lock of a pool: [`reset_all`], [`reset_owned_by`]
//! (`reset.rs`), [`list_locks`] and [`lock_info`] (`list.rs`). They walk the keyspace with
//! `SCAN` (never `KEYS`), on every primary of a cluster, and handle what each step found
//! with one script call per slot, so Redis is never busy for more than a millisecond or two
//! at a time.

mod list;
mod reset;

use std::collections::HashMap;
use std::sync::Arc;

use redis::cluster_routing::Slot;

pub use list::{
    ListLocks, LockInfo, LockKind, PermitsInfo, Released, last_release, list_locks, lock_info,
};
pub use reset::{reset_all, reset_owned_by};

use crate::conn::{self, Conn};
use crate::keys::{
    CAPACITY_PREFIX, QUEUE_PREFIX, SEMAPHORE_RELEASED_PREFIX, SEMAPHORE_WAITERS_PREFIX,
    WAKE_PREFIX, semaphore_sibling,
};
use crate::options::DEFAULT_SIGNAL_EXPIRE;
use crate::pool::Node;
use crate::scripts::{Call, SEMAPHORE};
use crate::time::{Deadline, millis};
use crate::{Pool, Result};

/// How many keys one `SCAN` step asks for, and so about how many locks one script call
/// handles.
const SCAN_COUNT: usize = 500;

/// A connection to one primary, for walking its keys.
fn node_conn(pool: &Pool, node: &Arc<Node>) -> Result<Conn> {
    conn::checkout_node(pool, node, Deadline::after(pool.response_timeout()))
}

/// One `SCAN` step on `conn` from `cursor`: the next cursor (0: done) and the keys found.
fn scan_step(conn: &mut Conn, pattern: &str, cursor: u64) -> Result<(u64, Vec<Vec<u8>>)> {
    redis::cmd("SCAN")
        .arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(SCAN_COUNT)
        .query(&mut **conn)
        .map_err(|e| conn.fail(e, pattern, "SCAN"))
}

/// Walks the keys matching `pattern` with `SCAN`, handing each step's keys to `step`;
/// returns the sum of what `step` returned.
fn scan(
    conn: &mut Conn,
    pattern: &str,
    mut step: impl FnMut(&mut Conn, Vec<Vec<u8>>) -> Result<usize>,
) -> Result<usize> {
    let mut cursor: u64 = 0;
    let mut total = 0;
    loop {
        let (next, keys) = scan_step(conn, pattern, cursor)?;
        if !keys.is_empty() {
            total += step(conn, keys)?;
        }
        if next == 0 {
            return Ok(total);
        }
        cursor = next;
    }
}

/// A call of `semaphore.lua`'s `op` on the semaphore whose holder set is `holders` (a key a
/// `SCAN` found). The tools do not know the capacity its users were built with: they pass
/// the largest, so that a reset wakes every waiter (each tries again, and those the freed
/// permits are not enough for wait on), and read the capacity from the grants.
fn semaphore_call(holders: &[u8], op: &str) -> Call {
    let mut call = SEMAPHORE.call();
    let mut wake_prefix = semaphore_sibling(holders, WAKE_PREFIX);
    wake_prefix.push(b':');
    call.key(holders)
        .key(semaphore_sibling(holders, CAPACITY_PREFIX))
        .key(semaphore_sibling(holders, QUEUE_PREFIX))
        .key(semaphore_sibling(holders, SEMAPHORE_WAITERS_PREFIX))
        // The fencing counter: neither `reset` nor `state` takes a token.
        .key(holders)
        .key(semaphore_sibling(holders, SEMAPHORE_RELEASED_PREFIX))
        .arg(op)
        .arg(u32::MAX)
        .arg(wake_prefix)
        .arg(millis(DEFAULT_SIGNAL_EXPIRE));
    call
}

/// Splits items by the slot of their key (on a cluster; one group otherwise), since a
/// script may only touch keys of one slot there.
fn by_slot<T>(items: Vec<(Vec<u8>, T)>, cluster: bool) -> Vec<Vec<T>> {
    if !cluster {
        return vec![items.into_iter().map(|(_, item)| item).collect()];
    }
    let mut groups: HashMap<Slot, Vec<T>> = HashMap::new();
    for (key, item) in items {
        groups.entry(Slot::for_key(&key)).or_default().push(item);
    }
    groups.into_values().collect()
}
