//! Checking a connection out: for a key (on a cluster, from the primary of its slot, asking
//! for the slot map again when that primary cannot be reached), with a connection that sat
//! idle checked before use.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Conn, reply_lost, reply_pending};
use crate::error::Result;
use crate::pool::Node;
use crate::pool::Pool;
use crate::time::Deadline;

/// How long a pooled connection may sit idle before it is checked (`PING`) on checkout: a
/// connection the server or the network closed meanwhile fails its first use, and a lock
/// request sent on it would end in doubt for nothing. Connections in steady use skip it.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Checks a connection out of `pool` for the key `route`, for a request due by `deadline`:
/// waiting for a free one until then at most (and the pool's connection timeout), and
/// bounding its replies by it. On a cluster, a primary that cannot be reached makes the
/// slot map be asked for again (a failover may have promoted another).
pub(crate) fn checkout(pool: &Pool, route: &str, deadline: Deadline) -> Result<Conn> {
    let Some(cluster) = pool.as_cluster() else {
        let node = pool
            .single()
            .expect("a pool is a cluster or a single server");
        return checkout_node(pool, node, deadline);
    };
    let key = route;
    let node = cluster.node_for(key)?;
    match checkout_node(pool, &node, deadline) {
        Err(e) if e.is_unreachable() => {
            cluster.refresh().ok();
            let other = cluster.node_for(key)?;
            if Arc::ptr_eq(&other, &node) {
                return Err(e);
            }
            checkout_node(pool, &other, deadline)
        }
        result => result,
    }
}

/// Checks a connection out of `node` (of `pool`) for a request due by `deadline`, waiting
/// for a free one until then at most (and the pool's connection timeout). A connection that
/// sat idle for more than [`IDLE_CHECK`] is checked first; one found closed is dropped for
/// another.
///
/// A server whose last connection attempt failed is reported at once (when no connection
/// is idle), and one that fails while we wait is reported within about the connect
/// timeout, rather than after the whole `wait`: r2d2 keeps trying in the background, and
/// the next call gets a connection as soon as one is made.
pub(crate) fn checkout_node(pool: &Pool, node: &Arc<Node>, deadline: Deadline) -> Result<Conn> {
    let config = pool.config();
    let started = Instant::now();
    loop {
        let wait = config
            .connection_timeout
            .saturating_sub(started.elapsed())
            .min(deadline.left());
        let link = node.get(wait, config.connect_timeout.min(deadline.left()))?;
        let mut conn = Conn::new(link, node.clone(), deadline)?;
        let idle = conn.parts().1.idle_since.take();
        conn.reused = idle.is_some();
        if idle.is_none_or(|since| since.elapsed() < IDLE_CHECK) {
            return Ok(conn);
        }
        match redis::cmd("PING").query::<String>(&mut *conn) {
            Ok(_) => return Ok(conn),
            // A stalled server is not a closed connection: no other will do better.
            Err(e) if reply_pending(&e) || !reply_lost(&e) => {
                return Err(conn.fail(e, "", "PING"));
            }
            Err(e) => {
                log::debug!(
                    "a pooled connection to {} was closed ({e}); taking another",
                    conn.server()
                );
                conn.mark_broken();
            }
        }
    }
}
