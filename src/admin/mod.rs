//! Operator tools that act on every lock of a pool: [`reset_all`], [`reset_owned_by`]
//! (`reset.rs`) and [`list_locks`] (`list.rs`). They walk the keyspace with `SCAN` (never
//! `KEYS`), on every primary of a cluster, family by family ([`FAMILIES`]: each lock kind's
//! own part, in its folder), so Redis is never busy for more than a millisecond or two at a
//! time.

mod list;
mod reset;

use std::sync::Arc;

pub use list::{ListLocks, list_locks};
pub use reset::{reset_all, reset_owned_by};

use crate::conn::{self, Conn};
use crate::error::Result;
use crate::family::Family;
use crate::pool::Node;
use crate::pool::Pool;
use crate::time::Deadline;

/// Every lock kind, as the operator tools walk them: a new kind adds its family here.
static FAMILIES: [&dyn Family; 5] = [
    &crate::mutex::Mutexes,
    &crate::rwlock::RwLocks,
    &crate::semaphore::Semaphores,
    &crate::redlock::Redlocks,
    &crate::election::Elections,
];

/// A connection to one primary, for walking its keys.
fn node_conn(pool: &Pool, node: &Arc<Node>) -> Result<Conn> {
    conn::checkout_node(pool, node, Deadline::after(pool.response_timeout()))
}

/// How many keys one `SCAN` step asks for, and so about how many locks one script call
/// handles.
const SCAN_COUNT: usize = 500;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_states_its_interface() {
        let shared = [&crate::scripts::LEASE_EXTEND];
        for lua in FAMILIES.iter().flat_map(|f| f.scripts()).chain(shared) {
            let source = lua.source();
            assert!(
                source.contains("\n-- KEYS") || source.starts_with("-- "),
                "{source}"
            );
            assert!(source.contains("KEYS"), "{source}");
            assert!(source.contains("Returns"), "{source}");
        }
    }
}
