//! [`list_locks`]: who holds what, for the people who run the services.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use super::{FAMILIES, node_conn, scan_step};
use crate::conn::{self, Conn};
use crate::error::{Error, Result};
use crate::family::{FoundKeys, LockInfo};
use crate::keys::Scheme;
use crate::pool::Node;
use crate::pool::Pool;
use crate::time::Deadline;

/// Every lock held now in the pool's database: mutexes (python-redis-lock's too), read and
/// write leases, grants of semaphore permits and this server's keys of Redlock grants, on
/// every primary of a cluster; and the
/// keys where a lock would be that hold another type ([`LockKind::NotALock`](crate::LockKind::NotALock)), since no
/// lock can be taken there. Walks the keyspace with `SCAN` (never
/// `KEYS`), a step at a time as the iterator is consumed, with one script call per step and
/// slot, so it is safe on a big keyspace. A lock taken or released during the walk may or
/// may not be listed; a step that fails ends the walk with its error.
/// [`named`](ListLocks::named) reads the locks under one name instead, without `SCAN`.
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
        name: None,
        nodes: None,
        walk: None,
        found: VecDeque::new(),
        ended: false,
    }
}

/// The walk of [`list_locks`]: an iterator of the locks held now (of the whole keyspace,
/// or, [`named`](ListLocks::named), under one name).
pub struct ListLocks {
    pool: Pool,
    scheme: Scheme,
    /// The one name to read the locks of, without `SCAN`, if [`named`](ListLocks::named).
    name: Option<String>,
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
            .field("name", &self.name)
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
    /// Narrows the walk to the locks held under one name, of every kind: the mutex `name`
    /// (python-redis-lock's too), the grants of permits of the semaphore `name`, the read
    /// and write leases on the path `name` itself (of a read-write lock with the default
    /// `/` separator; not those on its ancestors or descendants, which block it too), and
    /// this server's key of a [`Redlock`](crate::Redlock) grant on the resource `name`;
    /// and, as [`LockKind::NotALock`](crate::LockKind::NotALock), a key where one of those
    /// would be that holds another type. It reads those keys alone, without `SCAN`: one
    /// script call per kind, however big the keyspace. What `redis-mutex owner NAME`
    /// shows.
    ///
    /// Unlike [`lock_info`](crate::lock_info), which reads a mutex, it finds a name
    /// whatever kind of lock holds it.
    ///
    /// # Errors
    ///
    /// The first item is [`Error::InvalidOptions`](crate::Error::InvalidOptions) for an
    /// empty name; otherwise as for [`list_locks`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::{list_locks, LockKind, Pool};
    ///
    /// let pool = Pool::new("redis://127.0.0.1/")?;
    /// for lock in list_locks(&pool).named("exports") {
    ///     let lock = lock?;
    ///     if lock.kind == LockKind::Semaphore {
    ///         println!("{} holds permits of `exports`, token {:?}", lock.owner_id, lock.fencing_token);
    ///     }
    /// }
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn named(self, name: &str) -> ListLocks {
        ListLocks {
            name: Some(name.to_owned()),
            ..list_locks(&self.pool)
        }
    }

    /// Reads every family's keys for `name`, one call each on the primary of its key, and
    /// ends the walk.
    fn read_named(&mut self, name: &str) -> Result<()> {
        self.ended = true;
        if name.is_empty() {
            return Err(Error::invalid("name", "the lock name is empty"));
        }
        for family in FAMILIES {
            for key in family.keys_named(name, self.scheme) {
                let deadline = Deadline::after(self.pool.response_timeout());
                let mut conn = conn::checkout(&self.pool, &key, deadline)?;
                let found = FoundKeys {
                    keys: vec![key.into_bytes()],
                    scheme: self.scheme,
                };
                self.found.extend(family.list(&mut conn, found)?);
            }
        }
        Ok(())
    }

    /// One `SCAN` step, or the move to the next family or primary; ends the walk after the
    /// last.
    fn step(&mut self) -> Result<()> {
        if let Some(name) = self.name.take() {
            return self.read_named(&name);
        }
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
            let scheme = self.scheme;
            self.found
                .extend(kind.list(conn, FoundKeys { keys, scheme })?);
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
