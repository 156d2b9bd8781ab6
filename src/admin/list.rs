//! [`list_locks`]: who holds what, for the people who run the services.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use super::{FAMILIES, node_conn, scan_step};
use crate::conn::Conn;
use crate::error::Result;
use crate::family::LockInfo;
use crate::keys::Scheme;
use crate::pool::Node;
use crate::pool::Pool;

/// Every lock held now in the pool's database: mutexes (python-redis-lock's too), read and
/// write leases, grants of semaphore permits and this server's keys of Redlock grants, on
/// every primary of a cluster; and the
/// keys where a lock would be that hold another type ([`LockKind::NotALock`](crate::LockKind::NotALock)), since no
/// lock can be taken there. Walks the keyspace with `SCAN` (never
/// `KEYS`), a step at a time as the iterator is consumed, with one script call per step and
/// slot, so it is safe on a big keyspace. A lock taken or released during the walk may or
/// may not be listed; a step that fails ends the walk with its error.
///
/// # Errors
///
/// Each item is an error when a server cannot be reached or answers with an error
/// ([`Error::Unreachable`](crate::Error::Unreachable), [`Error::Timeout`](crate::Error::Timeout), ...); no item follows it.
///
/// # Examples
///
/// ```no_run
/// use redis_mutex::{list_locks, Pool};
///
/// let pool = Pool::new("redis://127.0.0.1/")?;
/// for lock in list_locks(&pool) {
///     let lock = lock?;
///     println!("{} ({}) held by {}, expires in {:?}", lock.name, lock.kind, lock.owner_id, lock.expires_in);
/// }
/// # Ok::<(), redis_mutex::Error>(())
/// ```
pub fn list_locks(pool: &Pool) -> ListLocks {
    ListLocks {
        pool: pool.clone(),
        scheme: Scheme::of(pool),
        nodes: None,
        walk: None,
        found: VecDeque::new(),
        ended: false,
    }
}

/// The walk of [`list_locks`]: an iterator of the locks held now.
pub struct ListLocks {
    pool: Pool,
    scheme: Scheme,
    /// The primaries still to walk; `None` before the first step.
    nodes: Option<VecDeque<Arc<Node>>>,
    /// The primary being walked: its connection, the index of the family in [`FAMILIES`],
    /// the cursor.
    walk: Option<(Conn, usize, u64)>,
    found: VecDeque<LockInfo>,
    ended: bool,
}

impl fmt::Debug for ListLocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListLocks")
            .field("pool", &self.pool)
            .field("found", &self.found.len())
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl Iterator for ListLocks {
    type Item = Result<LockInfo>;

    fn next(&mut self) -> Option<Result<LockInfo>> {
        loop {
            if let Some(info) = self.found.pop_front() {
                return Some(Ok(info));
            }
            if self.ended {
                return None;
            }
            if let Err(e) = self.step() {
                self.ended = true;
                return Some(Err(e));
            }
        }
    }
}

impl ListLocks {
    /// One `SCAN` step, or the move to the next family or primary; ends the walk after the
    /// last.
    fn step(&mut self) -> Result<()> {
        if self.nodes.is_none() {
            self.nodes = Some(self.pool.primaries()?.into());
        }
        let Some((conn, family, cursor)) = &mut self.walk else {
            match self.nodes.as_mut().and_then(VecDeque::pop_front) {
                Some(node) => self.walk = Some((node_conn(&self.pool, &node)?, 0, 0)),
                None => self.ended = true,
            }
            return Ok(());
        };
        let kind = FAMILIES[*family];
        let (next, keys) = scan_step(conn, kind.pattern(), *cursor)?;
        if !keys.is_empty() {
            self.found.extend(kind.list(conn, keys, self.scheme)?);
        }
        *cursor = next;
        if next == 0 {
            *family += 1;
            if *family == FAMILIES.len() {
                self.walk = None;
            }
        }
        Ok(())
    }
}
