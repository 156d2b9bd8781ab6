//! A connection in use: [`Conn`], checked out of a pool for a key (on a cluster, from the
//! primary serving the key's slot), with replies bounded by a timeout. `checkout` gets one
//! (routing, the idle check), `run` sends a command through redirections, `errors` reads
//! what a failed call means, `undo` sends what a call whose reply was lost owes, `lend`
//! lends a connection for the caller's own commands (`Pool::connection`).
//!
//! Nothing here sends a command twice unless the server said it did not run it (`MOVED`,
//! `ASK`, `TRYAGAIN`, `READONLY`, ...): a command whose reply was lost is the caller's to
//! undo, on the same connection (see [`undo_after_lost_reply`]).
//!
//! Every request is bounded by a [`Deadline`] that its caller passes down: the checkout,
//! the request's reads (a script reload's included), a resend and an undo all wait at most
//! until then.

mod checkout;
mod errors;
mod lend;
mod run;
mod undo;

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

pub(crate) use checkout::{checkout, checkout_node};
pub(crate) use errors::{classify, reply_lost, reply_pending};
pub use lend::PooledConnection;
pub(crate) use run::{Failed, run, run_grant, run_repeatable};
pub(crate) use undo::{Undone, send_unwaited, undo_after_lost_reply};

/// Whether `conn`'s server is the one to send a request about the key `route` to: not
/// stale, and on a cluster the primary of the key's slot, as far as the slot map knows.
pub(crate) fn serves(conn: &Conn, pool: &Pool, route: &str) -> bool {
    !conn.is_stale()
        && pool
            .as_cluster()
            .is_none_or(|cluster| cluster.serves(conn.node(), route))
}

use crate::error::{Error, Result};
use crate::pool::Pool;
use crate::pool::{LinkState, MIN_TIMEOUT, Node, Pooled};
use crate::time::Deadline;

/// A connection checked out of a pool, returned to it when dropped.
pub(crate) struct Conn {
    link: Pooled,
    node: Arc<Node>,
    /// It was used before it went back to the pool (not made for this checkout): the server
    /// or the network may have closed it meanwhile.
    reused: bool,
    /// When the request on it must be answered by: its reads wait until then at most.
    deadline: Deadline,
}

impl Conn {
    /// A connection of `node`'s pool, its replies due by `deadline`.
    fn new(link: Pooled, node: Arc<Node>, deadline: Deadline) -> Result<Conn> {
        let mut conn = Conn {
            link,
            node,
            reused: false,
            deadline,
        };
        conn.answer_by(deadline)?;
        Ok(conn)
    }

    /// Bounds the reads of the next request by `deadline` (at least 1 ms from now); writes
    /// keep the pool's response timeout, so that no command is ever cut half-written.
    pub(crate) fn answer_by(&mut self, deadline: Deadline) -> Result<()> {
        self.deadline = deadline;
        self.set_read_timeout(deadline.left())
    }

    /// When the request on it must be answered by.
    pub(crate) fn deadline(&self) -> Deadline {
        self.deadline
    }

    /// Bounds the next read by what is left of the request's deadline: before each step of
    /// a request made of several (a script that has to be loaded first).
    pub(crate) fn keep_deadline(&mut self) -> Result<()> {
        self.set_read_timeout(self.deadline.left())
    }

    fn parts(&mut self) -> (&mut redis::Connection, &mut LinkState) {
        self.link.parts()
    }

    fn connection(&self) -> &redis::Connection {
        self.link.connection()
    }

    /// The server this connection is to, as errors name it.
    pub(super) fn server(&self) -> &str {
        self.link.server(&self.node)
    }

    /// The node (server) the connection belongs to.
    pub(super) fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// The read timeout now in force.
    pub(crate) fn read_timeout(&mut self) -> Duration {
        self.parts().1.read_timeout.unwrap_or(Duration::ZERO)
    }

    /// Bounds the next reads and writes by `timeout` (at least 1 ms): for a connection of
    /// its own (a Redlock instance's), whose writes share the bound.
    pub(crate) fn set_timeout(&mut self, timeout: Duration) -> Result<()> {
        self.set_read_timeout(timeout)?;
        self.set_socket_timeout(
            timeout,
            |state| &mut state.write_timeout,
            |conn, t| conn.set_write_timeout(t),
        )
    }

    /// Bounds the next reads by `timeout` (at least 1 ms); writes keep theirs.
    pub(crate) fn set_read_timeout(&mut self, timeout: Duration) -> Result<()> {
        self.set_socket_timeout(
            timeout,
            |state| &mut state.read_timeout,
            |conn, t| conn.set_read_timeout(t),
        )
    }

    /// Sets one of the socket's timeouts with `set`, unless `cached` says it has it
    /// already: a syscall saved on most calls.
    fn set_socket_timeout(
        &mut self,
        timeout: Duration,
        cached: impl FnOnce(&mut LinkState) -> &mut Option<Duration>,
        set: impl FnOnce(&redis::Connection, Option<Duration>) -> redis::RedisResult<()>,
    ) -> Result<()> {
        let timeout = Some(timeout.max(MIN_TIMEOUT));
        let (conn, state) = self.parts();
        let cached = cached(state);
        if *cached != timeout {
            let result = set(conn, timeout);
            *cached = result.is_ok().then_some(timeout).flatten();
            result.map_err(|e| self.fail(e, "", "setting a socket timeout"))?;
        }
        Ok(())
    }

    /// The server-side id of this connection, for `CLIENT UNBLOCK`; asked once.
    pub(super) fn client_id(&mut self) -> Result<i64> {
        if let Some(id) = self.parts().1.client_id {
            return Ok(id);
        }
        let id: i64 = redis::cmd("CLIENT")
            .arg("ID")
            .query(self)
            .map_err(|e| self.fail(e, "", "CLIENT ID"))?;
        self.parts().1.client_id = Some(id);
        Ok(id)
    }

    /// Keeps the pool from handing the connection out again: its server is no longer what
    /// it was (demoted, say).
    pub(super) fn mark_broken(&mut self) {
        self.parts().1.broken = true;
    }

    /// Whether the connection is still open, as far as the client knows.
    pub(super) fn is_open(&self) -> bool {
        redis::ConnectionLike::is_open(self.connection())
    }

    /// Another idle connection to the same server, if one is free now, its replies due by
    /// `deadline`.
    pub(crate) fn spare(&self, deadline: Deadline) -> Option<Conn> {
        Conn::new(self.node.try_get()?, self.node.clone(), deadline).ok()
    }

    /// This crate's error for `e`, a failure of `what` on this connection, about the lock
    /// `lock` (for a key of the wrong type).
    ///
    /// A connection whose reply did not come in time is not reused: its next user would
    /// first wait for that late reply, one more response timeout on top of its own. (An
    /// undo owed for the call is sent on it before this.)
    pub(super) fn fail(&mut self, e: redis::RedisError, lock: &str, what: &'static str) -> Error {
        if reply_pending(&e) {
            self.mark_broken();
        }
        let after = self.read_timeout();
        let error = classify(e, self.server(), after, lock, what);
        if error.is_timeout() || error.is_unreachable() {
            self.node.doubt();
        }
        error
    }

    /// Whether the connection is to a server that is no longer the one to talk to (behind
    /// Sentinel, a demoted primary; on a cluster, a node that serves no slot any more):
    /// nothing more is sent on it.
    pub(crate) fn is_stale(&self) -> bool {
        self.node.is_stale(self.server())
    }
}

impl Deref for Conn {
    type Target = redis::Connection;

    fn deref(&self) -> &redis::Connection {
        self.connection()
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut redis::Connection {
        self.parts().0
    }
}

#[cfg(test)]
pub(crate) mod tests {
    /// The error a server's `-text` reply becomes.
    pub(crate) fn server_error(text: &str) -> redis::RedisError {
        redis::parse_redis_value(format!("-{text}\r\n").as_bytes())
            .unwrap()
            .extract_error()
            .unwrap_err()
    }
}
